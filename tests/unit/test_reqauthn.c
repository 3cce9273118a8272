/* RequestAuthentication (reference §5): where the token is, which rule
 * validates it, 401 versus pass; the JWKS cache's background fetch; and the
 * per-request policy entry point with its connection-level counterpart. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include "unit.h"
#include "../../agent/agent.h"
#include "../../agent/policy.h"
#include "../../agent/reqauthn.h"

/* test_jwt.c */
EVP_PKEY *bmt_key(int which);
char *bmt_sign(EVP_PKEY *k, const char *kid, const char *payload);
char *bmt_jwks_default(void);

#define NOW 1800000000L

#define RA(ns, name, body) \
	"{\"kind\":\"RequestAuthentication\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns "\"},\"spec\":" body "}"
/* "jwks":"@" is replaced by the JWKS of test_jwt.c's keys */
#define IDP_RULE "{\"issuer\":\"https://idp\",\"jwks\":\"@\""
#define OTHER_RULE "{\"issuer\":\"https://other\",\"jwks\":\"@\""

/* Token placeholders in headers and query: $GOOD (RS256, https://idp/alice),
 * $EC (ES256, same), $EXP (expired), $OTHER (https://other/bob), $AUD (aud
 * "web"), $STRANGER (an issuer no rule names). */
struct ra_case {
	const char *what;
	const char *res;        /* resources (JSON array body) */
	const char *method;
	const char *headers;    /* "name: value\n" */
	const char *query;
	int rc;
	const char *principal;  /* expected, "" none */
	const char *strip_header, *strip_param;
};

static const struct ra_case ra_cases[] = {
	{ "no RequestAuthentication: token ignored", "", "GET", "authorization: Bearer junk\n", NULL, 0, "", NULL, NULL },
	{ "default header", RA("istio-system", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", "authorization: Bearer $GOOD\n", NULL, 0,
	  "https://idp/alice", "authorization", NULL },
	{ "ES256 token", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", "authorization: Bearer $EC\n", NULL, 0,
	  "https://idp/alice", "authorization", NULL },
	{ "no token passes without principal", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", "x-other: 1\n", "a=b", 0, "", NULL, NULL },
	{ "default access_token param", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", NULL, "x=1&access_token=$GOOD&y=2", 0,
	  "https://idp/alice", NULL, "access_token" },
	{ "default location skips Basic", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", "authorization: Basic dTpw\n", NULL, 0, "", NULL, NULL },
	{ "expired token: 401", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", "authorization: Bearer $EXP\n", NULL, -EPERM, "", NULL, NULL },
	{ "malformed token: 401", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", "authorization: Bearer abc.def\n", NULL, -EPERM, "", NULL, NULL },
	{ "bad token in the param: 401", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", NULL, "access_token=$EXP", -EPERM, "", NULL, NULL },
	{ "unconfigured issuer: 401", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "GET", "authorization: Bearer $STRANGER\n", NULL, -EPERM, "", NULL, NULL },
	{ "fromHeaders with prefix", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE ",\"fromHeaders\":[{\"name\":\"x-jwt\",\"prefix\":\"Token \"}]}]}"),
	  "GET", "x-jwt: Token $GOOD\n", NULL, 0, "https://idp/alice", "x-jwt", NULL },
	{ "fromHeaders prefix missing: 401", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE ",\"fromHeaders\":[{\"name\":\"x-jwt\",\"prefix\":\"Token \"}]}]}"),
	  "GET", "x-jwt: $GOOD\n", NULL, -EPERM, "", NULL, NULL },
	{ "fromHeaders without prefix", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE ",\"fromHeaders\":[{\"name\":\"X-Jwt\"}]}]}"),
	  "GET", "x-jwt: $GOOD\n", NULL, 0, "https://idp/alice", "x-jwt", NULL },
	{ "explicit locations replace the defaults", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE ",\"fromHeaders\":[{\"name\":\"x-jwt\"}]}]}"),
	  "GET", "authorization: Bearer $EXP\n", NULL, 0, "", NULL, NULL },
	{ "fromParams", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE ",\"fromParams\":[\"tok\"]}]}"), "GET", NULL, "tok=$GOOD", 0,
	  "https://idp/alice", NULL, "tok" },
	{ "forwardOriginalToken keeps the header", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE ",\"forwardOriginalToken\":true}]}"),
	  "GET", "authorization: Bearer $GOOD\n", NULL, 0, "https://idp/alice", NULL, NULL },
	{ "second rule's issuer", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}," OTHER_RULE "}]}"), "GET", "authorization: Bearer $OTHER\n", NULL, 0,
	  "https://other/bob", "authorization", NULL },
	{ "rules of two resources", RA("istio-system", "m", "{\"jwtRules\":[" IDP_RULE "}]}") "," RA("prod", "r", "{\"jwtRules\":[" OTHER_RULE "}]}"),
	  "GET", "authorization: Bearer $OTHER\n", NULL, 0, "https://other/bob", "authorization", NULL },
	{ "audience required and present", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE ",\"audiences\":[\"web\"]}]}"), "GET", "authorization: Bearer $AUD\n", NULL, 0,
	  "https://idp/alice", "authorization", NULL },
	{ "audience required, token without: 401", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE ",\"audiences\":[\"web\"]}]}"), "GET", "authorization: Bearer $GOOD\n", NULL,
	  -EPERM, "", NULL, NULL },
	{ "selector of another app: not applied", RA("prod", "r", "{\"selector\":{\"matchLabels\":{\"app\":\"db\"}},\"jwtRules\":[" IDP_RULE "}]}"),
	  "GET", "authorization: Bearer $EXP\n", NULL, 0, "", NULL, NULL },
	{ "CORS preflight bypasses JWT", RA("prod", "r", "{\"jwtRules\":[" IDP_RULE "}]}"), "OPTIONS",
	  "origin: https://app\naccess-control-request-method: GET\nauthorization: Bearer $EXP\n", NULL, 0, "", NULL, NULL },
	{ "jwksUri never fetched: 401", RA("prod", "r", "{\"jwtRules\":[{\"issuer\":\"https://idp\",\"jwksUri\":\"http://127.0.0.1:1/jwks\"}]}"),
	  "GET", "authorization: Bearer $GOOD\n", NULL, -EPERM, "", NULL, NULL },
	{ "no JWKS source: 401", RA("prod", "r", "{\"jwtRules\":[{\"issuer\":\"https://idp\"}]}"), "GET", "authorization: Bearer $GOOD\n", NULL, -EPERM, "", NULL, NULL },
	{ "bad inline JWKS: 401", RA("prod", "r", "{\"jwtRules\":[{\"issuer\":\"https://idp\",\"jwks\":\"{}\"}]}"), "GET", "authorization: Bearer $GOOD\n", NULL, -EPERM, "", NULL, NULL },
};

struct tokens {
	char *good, *ec, *exp, *other, *aud, *stranger;
};

static void tokens_make(struct tokens *t, time_t now)
{
	char p[256];

	snprintf(p, sizeof(p), "{\"iss\":\"https://idp\",\"sub\":\"alice\",\"exp\":%ld}", (long)now + 3600);
	t->good = bmt_sign(bmt_key(0), "r1", p);
	t->ec = bmt_sign(bmt_key(1), "e1", p);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp\",\"sub\":\"alice\",\"exp\":%ld}", (long)now - 3600);
	t->exp = bmt_sign(bmt_key(0), "r1", p);
	t->other = bmt_sign(bmt_key(0), "r1", "{\"iss\":\"https://other\",\"sub\":\"bob\"}");
	t->aud = bmt_sign(bmt_key(0), "r1", "{\"iss\":\"https://idp\",\"sub\":\"alice\",\"aud\":\"web\"}");
	t->stranger = bmt_sign(bmt_key(0), "r1", "{\"iss\":\"https://stranger\",\"sub\":\"eve\"}");
}

static void tokens_free(struct tokens *t)
{
	free(t->good);
	free(t->ec);
	free(t->exp);
	free(t->other);
	free(t->aud);
	free(t->stranger);
}

/* text with $NAME replaced by tokens into out. */
static void expand(const char *text, const struct tokens *t, char *out, size_t len)
{
	static const char *const names[] = { "$GOOD", "$EC", "$EXP", "$OTHER", "$AUD", "$STRANGER" };
	const char *vals[] = { t->good, t->ec, t->exp, t->other, t->aud, t->stranger };
	size_t o = 0;

	while (text && *text && o + 1 < len) {
		size_t k;

		for (k = 0; k < 6; k++)
			if (!strncmp(text, names[k], strlen(names[k])))
				break;
		if (k < 6) {
			o += (size_t)snprintf(out + o, len - o, "%s", vals[k]);
			text += strlen(names[k]);
		} else {
			out[o++] = *text++;
		}
	}
	out[o < len ? o : len - 1] = 0;
}

static size_t parse_headers(char *buf, struct bm_http_hdr *hdr, size_t max)
{
	size_t n = 0;
	char *save, *line;

	for (line = strtok_r(buf, "\n", &save); line && n < max; line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':');

		if (!colon)
			continue;
		*colon = 0;
		hdr[n++] = (struct bm_http_hdr){ line, colon + 2, strlen(line), strlen(colon + 2) };
	}
	return n;
}

/* Resources from text, every "jwks":"@" replaced by jwks. */
static json_t *load_res(const char *body, const char *jwks)
{
	char buf[8192];
	json_t *res, *r, *rule;
	size_t i, j;

	snprintf(buf, sizeof(buf), "[%s]", body);
	res = json_loads(buf, 0, NULL);
	json_array_foreach(res, i, r)
		json_array_foreach(json_object_get(json_object_get(r, "spec"), "jwtRules"), j, rule)
			if (!strcmp(json_string_value(json_object_get(rule, "jwks")) ?: "", "@"))
				json_object_set_new(rule, "jwks", json_string(jwks));
	return res;
}

static void test_reqauthn_table(void)
{
	struct bm_jwks_cache *cache = bm_jwks_cache_new(300, 1);
	json_t *labels = json_pack("{s:s}", "app", "web");
	char *jwks = bmt_jwks_default();
	struct tokens t;

	tokens_make(&t, NOW);
	for (size_t i = 0; i < sizeof(ra_cases) / sizeof(ra_cases[0]); i++) {
		const struct ra_case *c = &ra_cases[i];
		char hbuf[8192], qbuf[4096];
		struct bm_http_hdr hdr[8];
		struct bm_reqauthn_req r = { .method = c->method, .host = "web.prod:8080", .path = "/api" };
		struct bm_reqauthn_result out;
		json_t *res = load_res(c->res, jwks);
		int rc;

		CU_ASSERT_PTR_NOT_NULL_FATAL(res);
		expand(c->headers, &t, hbuf, sizeof(hbuf));
		r.hdr = hdr;
		r.n_hdr = parse_headers(hbuf, hdr, 8);
		if (c->query) {
			expand(c->query, &t, qbuf, sizeof(qbuf));
			r.query = qbuf;
		}
		rc = bm_reqauthn_check(cache, res, "istio-system", "prod", labels, &r, NOW, &out);
		if (rc != c->rc || strcmp(out.principal, c->principal))
			fprintf(stderr, "reqauthn case \"%s\": rc %d principal \"%s\" (%s)\n", c->what, rc,
				out.principal, out.err);
		CU_ASSERT_EQUAL(rc, c->rc);
		CU_ASSERT_STRING_EQUAL(out.principal, c->principal);
		CU_ASSERT_EQUAL(out.n_strip_header, c->strip_header ? 1u : 0u);
		if (c->strip_header && out.n_strip_header)
			CU_ASSERT_STRING_EQUAL(out.strip_header[0], c->strip_header);
		CU_ASSERT_EQUAL(out.n_strip_param, c->strip_param ? 1u : 0u);
		if (c->strip_param && out.n_strip_param)
			CU_ASSERT_STRING_EQUAL(out.strip_param[0], c->strip_param);
		if (rc) {
			CU_ASSERT(out.err[0] != 0);
			CU_ASSERT_STRING_EQUAL(out.www_authenticate,
					       "Bearer realm=\"http://web.prod:8080/api\", error=\"invalid_token\"");
			CU_ASSERT_PTR_NULL(out.claims);
		} else {
			CU_ASSERT_EQUAL(out.claims != NULL, c->principal[0] != 0);
		}
		bm_reqauthn_result_free(&out);
		json_decref(res);
	}
	tokens_free(&t);
	free(jwks);
	json_decref(labels);
	bm_jwks_cache_free(cache);
}

/* jwksUri: fetched on the background thread (file:// stands in for https),
 * tokens are refused until then and accepted after. */
static void test_jwks_fetch(void)
{
	char path[] = "/tmp/bm-jwks-XXXXXX", uri[128], body[2048], err[160], hb[4096];
	struct bm_jwks_cache *cache = bm_jwks_cache_new(300, 2);
	char *jwks = bmt_jwks_default();
	struct bm_jwks *keys = NULL;
	struct bm_http_hdr hdr[1];
	struct bm_reqauthn_result out;
	struct bm_reqauthn_req r = { .method = "GET", .host = "web", .path = "/" };
	struct tokens t;
	json_t *res, *rule;
	int fd = mkstemp(path);

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, jwks, strlen(jwks)), (ssize_t)strlen(jwks));
	close(fd);
	snprintf(uri, sizeof(uri), "file://%s", path);
	snprintf(body, sizeof(body), "[" RA("prod", "r", "{\"jwtRules\":[{\"issuer\":\"https://idp\",\"jwksUri\":\"%s\"},"
					     "{\"issuer\":\"https://gone\",\"jwksUri\":\"file:///nonexistent/jwks\"}]}") "]", uri);
	res = json_loads(body, 0, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(res);
	CU_ASSERT_EQUAL(bm_jwks_cache_sync(cache, res), 0);
	rule = json_array_get(json_object_get(json_object_get(json_array_get(res, 0), "spec"), "jwtRules"), 0);
	for (int i = 0; i < 300 && !keys; i++) {
		keys = bm_jwks_cache_keys(cache, rule, err, sizeof(err));
		if (!keys)
			usleep(10000);
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(keys);
	CU_ASSERT_EQUAL(keys->n, 2);
	bm_jwks_put(keys);

	tokens_make(&t, NOW);
	snprintf(hb, sizeof(hb), "Bearer %s", t.good);
	hdr[0] = (struct bm_http_hdr){ "authorization", hb, 13, strlen(hb) };
	r.hdr = hdr;
	r.n_hdr = 1;
	CU_ASSERT_EQUAL(bm_reqauthn_check(cache, res, "istio-system", "prod", NULL, &r, NOW, &out), 0);
	CU_ASSERT_STRING_EQUAL(out.principal, "https://idp/alice");
	bm_reqauthn_result_free(&out);

	/* the unreachable one: an error, no keys */
	rule = json_array_get(json_object_get(json_object_get(json_array_get(res, 0), "spec"), "jwtRules"), 1);
	for (int i = 0; i < 300; i++) {
		keys = bm_jwks_cache_keys(cache, rule, err, sizeof(err));
		CU_ASSERT_PTR_NULL(keys);
		if (strstr(err, "fetch"))
			break;
		usleep(10000);
	}
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "jwksUri"));

	/* a configuration without the rules forgets them */
	json_decref(res);
	res = json_array();
	CU_ASSERT_EQUAL(bm_jwks_cache_sync(cache, res), 0);
	json_decref(res);
	tokens_free(&t);
	unlink(path);
	free(jwks);
	bm_jwks_cache_free(cache);
}

/* bm_policy_check (connection) and bm_policy_check_http (request) for a pod
 * that needs HTTP: ALLOW requestPrincipals + paths, mesh-wide JWT. */
static void test_policy_http(void)
{
	char *jwks = bmt_jwks_default(), hb[4096], reason[128];
	struct bm_agent *a = calloc(1, sizeof(*a));
	struct bm_conn_attrs c = { .src_principal = "cluster.local/ns/a/sa/x", .src_ip = inet_addr("198.18.1.2"),
				   .dst_ip = inet_addr("198.18.2.2"), .dst_port = 8080,
				   .dst_pod_ns = "prod", .dst_pod_name = "web-1" };
	struct bm_http_hdr hdr[1];
	struct bm_policy_http h = { .method = "GET", .host = "web", .path = "/api/items", .hdr = hdr };
	struct bm_policy_http_result res;
	struct tokens t;

	pthread_mutex_init(&a->lock, NULL);
	a->resources = load_res(
		"{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"web-1\",\"namespace\":\"prod\"},"
		"\"spec\":{\"address\":\"198.18.2.2\",\"labels\":{\"app\":\"web\"}}},"
		RA("istio-system", "jwt", "{\"jwtRules\":[" IDP_RULE "}]}") ","
		"{\"kind\":\"PeerAuthentication\",\"metadata\":{\"name\":\"s\",\"namespace\":\"prod\"},\"spec\":{\"mtls\":{\"mode\":\"STRICT\"}}},"
		"{\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"api\",\"namespace\":\"prod\"},\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
		"\"rules\":[{\"from\":[{\"source\":{\"requestPrincipals\":[\"*\"]}}],\"to\":[{\"operation\":{\"paths\":[\"/api/*\"]}}]}]}}",
		jwks);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a->resources);
	bm_policy_store_changed(a->resources);

	CU_ASSERT_EQUAL(bm_policy_workload_needs_http("prod", inet_addr("198.18.2.2")), 1);
	/* a workload without a WorkloadEntry: only the mesh-wide
	 * RequestAuthentication applies to it, and that needs HTTP too */
	CU_ASSERT_EQUAL(bm_policy_workload_needs_http("prod", inet_addr("198.18.2.99")), 1);

	/* connection: the ALLOW rule with paths must not refuse it when its
	 * requests are checked; it does when nothing looks at HTTP */
	c.http_per_request = 1;
	CU_ASSERT_EQUAL(bm_policy_check(a, &c, reason, sizeof(reason)), 0);
	c.http_per_request = 0;
	CU_ASSERT_EQUAL(bm_policy_check(a, &c, reason, sizeof(reason)), -EACCES);
	CU_ASSERT_STRING_EQUAL(reason, "authorization_policy_no_allow_match");
	/* PeerAuthentication STRICT still refuses plaintext */
	c.http_per_request = 1;
	c.src_principal = NULL;
	CU_ASSERT_EQUAL(bm_policy_check(a, &c, reason, sizeof(reason)), -EACCES);
	CU_ASSERT_STRING_EQUAL(reason, "peer_authentication_strict");
	c.src_principal = "cluster.local/ns/a/sa/x";

	tokens_make(&t, time(NULL));
	/* a valid token on an allowed path */
	snprintf(hb, sizeof(hb), "Bearer %s", t.good);
	hdr[0] = (struct bm_http_hdr){ "authorization", hb, 13, strlen(hb) };
	h.n_hdr = 1;
	CU_ASSERT_EQUAL(bm_policy_check_http(a, &c, &h, &res), 0);
	CU_ASSERT_STRING_EQUAL(res.principal, "https://idp/alice");
	CU_ASSERT_EQUAL(res.n_strip_header, 1);
	CU_ASSERT_STRING_EQUAL(res.strip_header[0], "authorization");
	/* the same token elsewhere: 403 */
	h.path = "/admin";
	CU_ASSERT_EQUAL(bm_policy_check_http(a, &c, &h, &res), -EACCES);
	CU_ASSERT_STRING_EQUAL(res.reason, "authorization_policy_no_allow_match");
	/* no token: authentication passes, the policy wants a principal: 403 */
	h.path = "/api/items";
	h.n_hdr = 0;
	CU_ASSERT_EQUAL(bm_policy_check_http(a, &c, &h, &res), -EACCES);
	CU_ASSERT_STRING_EQUAL(res.principal, "");
	/* an expired token: 401 whatever the policy says */
	snprintf(hb, sizeof(hb), "Bearer %s", t.exp);
	hdr[0] = (struct bm_http_hdr){ "authorization", hb, 13, strlen(hb) };
	h.n_hdr = 1;
	CU_ASSERT_EQUAL(bm_policy_check_http(a, &c, &h, &res), -EPERM);
	CU_ASSERT_STRING_EQUAL(res.body, "Jwt is expired");
	CU_ASSERT_PTR_NOT_NULL(strstr(res.www_authenticate, "error=\"invalid_token\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(res.reason, "jwt_invalid"));

	tokens_free(&t);
	bm_policy_shutdown();
	json_decref(a->resources);
	pthread_mutex_destroy(&a->lock);
	free(a);
	free(jwks);
}

/* The compiled policy view: nothing is enforced before the first store
 * change; a change replaces the view (the same connection's decision flips);
 * the workload's labels come from its WorkloadEntry in its own namespace, the
 * first one in store order; decisions never take the agent lock (the test
 * holds it throughout), so a reload or a scrape holding it does not stall
 * workers. */
static void test_policy_view(void)
{
	struct bm_agent *a = calloc(1, sizeof(*a));
	struct bm_conn_attrs c = { .src_principal = "cluster.local/ns/a/sa/x",
				   .src_ip = inet_addr("198.18.1.2"), .dst_ip = inet_addr("198.18.2.2"),
				   .dst_port = 8080, .dst_pod_ns = "prod", .dst_pod_name = "web-1" };
	const char *deny_web = "{\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"d\",\"namespace\":\"prod\"},"
			       "\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"action\":\"DENY\","
			       "\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"cluster.local/ns/a/sa/x\"]}}]}]}}";
	char text[2048], reason[128];
	json_t *res;

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_lock(&a->lock);
	bm_policy_shutdown();   /* no view left by another test */
	CU_ASSERT_EQUAL(bm_policy_check(a, &c, reason, sizeof(reason)), 0);

	/* web-1's WorkloadEntry says app: web in prod; a later one at the same
	 * address in prod (ignored) and one in another namespace (another
	 * workload) say otherwise. */
	snprintf(text, sizeof(text), "[%s,"
		 "{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"web-1\",\"namespace\":\"prod\"},"
		 "\"spec\":{\"address\":\"198.18.2.2\",\"labels\":{\"app\":\"web\"}}},"
		 "{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"dup\",\"namespace\":\"prod\"},"
		 "\"spec\":{\"address\":\"198.18.2.2\",\"labels\":{\"app\":\"other\"}}},"
		 "{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"web-1\",\"namespace\":\"stage\"},"
		 "\"spec\":{\"address\":\"198.18.2.2\",\"labels\":{\"app\":\"api\"}}}]", deny_web);
	res = json_loads(text, 0, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(res);
	bm_policy_store_changed(res);
	json_decref(res);   /* the view keeps what it needs */
	CU_ASSERT_EQUAL(bm_policy_check(a, &c, reason, sizeof(reason)), -EACCES);
	CU_ASSERT_STRING_EQUAL(reason, "authorization_policy_deny:prod/d");
	c.src_principal = "cluster.local/ns/a/sa/y";
	CU_ASSERT_EQUAL(bm_policy_check(a, &c, reason, sizeof(reason)), 0);
	c.src_principal = "cluster.local/ns/a/sa/x";
	/* same address, namespace stage: not app: web, the DENY (in prod) does
	 * not apply */
	c.dst_pod_ns = "stage";
	CU_ASSERT_EQUAL(bm_policy_check(a, &c, reason, sizeof(reason)), 0);
	c.dst_pod_ns = "prod";
	CU_ASSERT_EQUAL(bm_policy_workload_needs_http("prod", inet_addr("198.18.2.2")), 0);

	/* The policy goes: allowed at once. */
	res = json_loads("[{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"web-1\",\"namespace\":\"prod\"},"
			 "\"spec\":{\"address\":\"198.18.2.2\",\"labels\":{\"app\":\"web\"}}},"
			 "{\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"h\",\"namespace\":\"prod\"},"
			 "\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
			 "\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"GET\"]}}]}]}}]", 0, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(res);
	bm_policy_store_changed(res);
	json_decref(res);
	c.http_per_request = 1;
	CU_ASSERT_EQUAL(bm_policy_http_any(), 1);
	CU_ASSERT_EQUAL(bm_policy_check(a, &c, reason, sizeof(reason)), 0);
	CU_ASSERT_EQUAL(bm_policy_workload_needs_http("prod", inet_addr("198.18.2.2")), 1);
	CU_ASSERT_EQUAL(bm_policy_workload_needs_http("stage", inet_addr("198.18.2.2")), 0);

	/* The identity a workload must present (per new tunnel, no agent
	 * lock): its first WorkloadEntry in store order, whatever the
	 * namespace; "default" for an unset service account. */
	res = json_loads("[{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"w\",\"namespace\":\"zeta\"},"
			 "\"spec\":{\"address\":\"198.18.2.5\",\"serviceAccount\":\"first\"}},"
			 "{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"w\",\"namespace\":\"alpha\"},"
			 "\"spec\":{\"address\":\"198.18.2.5\",\"serviceAccount\":\"second\"}},"
			 "{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"v\",\"namespace\":\"alpha\"},"
			 "\"spec\":{\"address\":\"198.18.2.6\"}}]", 0, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(res);
	bm_policy_store_changed(res);
	json_decref(res);
	/* no AuthorizationPolicy or RequestAuthentication left: requests skip
	 * the check */
	CU_ASSERT_EQUAL(bm_policy_http_any(), 0);
	{
		char ns[64], sa[64];

		CU_ASSERT_EQUAL(bm_policy_workload_account(inet_addr("198.18.2.5"), ns, sizeof(ns), sa, sizeof(sa)), 0);
		CU_ASSERT_STRING_EQUAL(ns, "zeta");
		CU_ASSERT_STRING_EQUAL(sa, "first");
		CU_ASSERT_EQUAL(bm_policy_workload_account(inet_addr("198.18.2.6"), ns, sizeof(ns), sa, sizeof(sa)), 0);
		CU_ASSERT_STRING_EQUAL(ns, "alpha");
		CU_ASSERT_STRING_EQUAL(sa, "default");
		CU_ASSERT_EQUAL(bm_policy_workload_account(inet_addr("198.18.2.7"), ns, sizeof(ns), sa, sizeof(sa)), -ENOENT);
		bm_policy_shutdown();
		CU_ASSERT_EQUAL(bm_policy_workload_account(inet_addr("198.18.2.5"), ns, sizeof(ns), sa, sizeof(sa)), -ENOENT);
	}

	bm_policy_shutdown();
	CU_ASSERT_EQUAL(bm_policy_workload_needs_http("prod", inet_addr("198.18.2.2")), 0);
	pthread_mutex_unlock(&a->lock);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

/* Two sets that differ only in the service account of 198.18.3.1. */
static json_t *account_set(const char *sa)
{
	char text[512];

	snprintf(text, sizeof(text),
		 "[{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"w\",\"namespace\":\"t\"},"
		 "\"spec\":{\"address\":\"198.18.3.1\",\"serviceAccount\":\"%s\"}}]", sa);
	return json_loads(text, 0, NULL);
}

static atomic_int reader_stop;

/* Decisions while views come and go: every answer is one of the two sets'
 * (ASan catches a view freed under a reader). Returns the wrong answers. */
static void *view_reader(void *arg)
{
	long bad = 0;

	(void)arg;
	while (!atomic_load(&reader_stop)) {
		char ns[64], sa[64];

		if (bm_policy_workload_account(inet_addr("198.18.3.1"), ns, sizeof(ns), sa, sizeof(sa)) ||
		    strcmp(ns, "t") || (strcmp(sa, "one") && strcmp(sa, "two")))
			bad++;
		bm_policy_workload_needs_http("t", inet_addr("198.18.3.1"));
	}
	return (void *)bad;
}

/* Decisions on an unchanged view take no lock; a reload is picked up by
 * each thread once; readers on other threads are safe across reloads. */
static void test_policy_view_threads(void)
{
	json_t *one = account_set("one"), *two = account_set("two");
	pthread_t th[2];
	unsigned long r0;
	char ns[64], sa[64];
	void *bad;

	CU_ASSERT_PTR_NOT_NULL_FATAL(one);
	CU_ASSERT_PTR_NOT_NULL_FATAL(two);
	bm_policy_store_changed(one);
	r0 = bm_policy_view_refreshes();
	for (int i = 0; i < 1000; i++)
		CU_ASSERT_EQUAL(bm_policy_workload_account(inet_addr("198.18.3.1"), ns, sizeof(ns), sa,
							   sizeof(sa)), 0);
	CU_ASSERT_STRING_EQUAL(sa, "one");
	CU_ASSERT_EQUAL(bm_policy_view_refreshes() - r0, 1);
	bm_policy_store_changed(two);
	CU_ASSERT_EQUAL(bm_policy_workload_account(inet_addr("198.18.3.1"), ns, sizeof(ns), sa, sizeof(sa)), 0);
	CU_ASSERT_STRING_EQUAL(sa, "two");
	CU_ASSERT_EQUAL(bm_policy_view_refreshes() - r0, 2);

	atomic_store(&reader_stop, 0);
	for (int i = 0; i < 2; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, view_reader, NULL), 0);
	for (int i = 0; i < 300; i++)
		bm_policy_store_changed(i % 2 ? two : one);
	atomic_store(&reader_stop, 1);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(pthread_join(th[i], &bad), 0);
		CU_ASSERT_EQUAL((long)bad, 0);
	}
	json_decref(one);
	json_decref(two);
	bm_policy_shutdown();
	CU_ASSERT_EQUAL(bm_policy_workload_account(inet_addr("198.18.3.1"), ns, sizeof(ns), sa, sizeof(sa)), -ENOENT);
}

BM_SUITE(reqauthn, BM_CASE(test_reqauthn_table), BM_CASE(test_jwks_fetch), BM_CASE(test_policy_http),
	 BM_CASE(test_policy_view), BM_CASE(test_policy_view_threads))
