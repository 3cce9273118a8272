/* Authorization (L4 per connection, L7 per HTTP request, the connection
 * precheck of HTTP pods) and PeerAuthentication tables (reference §3, §4). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "unit.h"
#include "../../agent/authz.h"

#define AP(ns, name, body) \
	"{\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns "\"},\"spec\":" body "}"

struct authz_case {
	const char *what;
	const char *policies;   /* JSON array body */
	const char *principal;  /* NULL = plaintext */
	const char *src_ip;
	int port;
	int allowed;
};

static const struct authz_case cases[] = {
	{ "no policy allows", "", "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 1 },
	{ "spec {} denies all", AP("prod", "p", "{}"), "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "rules [{}] allows all", AP("prod", "p", "{\"rules\":[{}]}"), NULL, "198.18.1.2", 80, 1 },
	{ "DENY rules [{}] denies all", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "DENY without rules never matches", AP("prod", "p", "{\"action\":\"DENY\"}"), NULL,
	  "198.18.1.2", 80, 1 },
	{ "principal exact allows", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"cluster.local/ns/a/sa/x\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 1 },
	{ "other principal denied", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"cluster.local/ns/a/sa/x\"]}}]}]}"),
	  "cluster.local/ns/a/sa/y", "198.18.1.2", 80, 0 },
	{ "plaintext has no principal", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"*\"]}}]}]}"),
	  NULL, "198.18.1.2", 80, 0 },
	{ "principal presence", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"*\"]}}]}]}"),
	  "cluster.local/ns/a/sa/y", "198.18.1.2", 80, 1 },
	{ "principal prefix", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"cluster.local/ns/a/*\"]}}]}]}"),
	  "cluster.local/ns/a/sa/y", "198.18.1.2", 80, 1 },
	{ "principal suffix", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"principals\":[\"*/sa/y\"]}}]}]}"),
	  "cluster.local/ns/b/sa/y", "198.18.1.2", 80, 1 },
	{ "notPrincipals", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"notPrincipals\":[\"cluster.local/ns/a/sa/x\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "namespaces", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"namespaces\":[\"a\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 1 },
	{ "notNamespaces", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"notNamespaces\":[\"a\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "serviceAccounts ns/sa", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"serviceAccounts\":[\"a/x\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 1 },
	{ "serviceAccounts bare sa = policy ns", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"serviceAccounts\":[\"x\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "ipBlocks", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"ipBlocks\":[\"198.18.1.0/24\"]}}]}]}"),
	  NULL, "198.18.1.9", 80, 1 },
	{ "notIpBlocks", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"notIpBlocks\":[\"198.18.1.9\"]}}]}]}"),
	  NULL, "198.18.1.9", 80, 0 },
	{ "ports", AP("prod", "p", "{\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"80\"]}}]}]}"), NULL,
	  "198.18.1.2", 80, 1 },
	{ "notPorts", AP("prod", "p", "{\"rules\":[{\"to\":[{\"operation\":{\"notPorts\":[\"80\"]}}]}]}"),
	  NULL, "198.18.1.2", 80, 0 },
	{ "from AND to", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"namespaces\":[\"a\"]}}],\"to\":[{\"operation\":{\"ports\":[\"81\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "ALLOW with methods never matches at L4", AP("prod", "p", "{\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"GET\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "DENY methods+ports denies the port at L4", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"POST\"],\"ports\":[\"80\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "DENY methods+ports spares other ports", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"POST\"],\"ports\":[\"80\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 81, 1 },
	{ "DENY methods only denies all TCP", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"POST\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 81, 0 },
	{ "DENY wins over ALLOW", AP("prod", "a", "{\"rules\":[{}]}") "," AP("prod", "d", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"namespaces\":[\"a\"]}}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "AUDIT never decides", AP("prod", "p", "{\"action\":\"AUDIT\",\"rules\":[{}]}"), NULL, "198.18.1.2", 80, 1 },
	{ "mesh-wide root namespace policy", AP("istio-system", "p", "{}"), NULL, "198.18.1.2", 80, 0 },
	{ "other namespace does not apply", AP("dev", "p", "{}"), NULL, "198.18.1.2", 80, 1 },
	{ "selector not matching", AP("prod", "p", "{\"selector\":{\"matchLabels\":{\"app\":\"other\"}}}"), NULL,
	  "198.18.1.2", 80, 1 },
	{ "selector matching", AP("prod", "p", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}}}"), NULL,
	  "198.18.1.2", 80, 0 },
	{ "when source.namespace", AP("prod", "p", "{\"rules\":[{\"when\":[{\"key\":\"source.namespace\",\"values\":[\"a\"]}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 1 },
	{ "when destination.port notValues", AP("prod", "p", "{\"rules\":[{\"when\":[{\"key\":\"destination.port\",\"notValues\":[\"80\"]}]}]}"),
	  "cluster.local/ns/a/sa/x", "198.18.1.2", 80, 0 },
	{ "when source.ip", AP("prod", "p", "{\"rules\":[{\"when\":[{\"key\":\"source.ip\",\"values\":[\"198.18.0.0/16\"]}]}]}"),
	  NULL, "198.18.1.2", 80, 1 },
	{ "when on a header is L7: ALLOW rule dropped", AP("prod", "p", "{\"rules\":[{\"when\":[{\"key\":\"request.headers[x]\",\"values\":[\"1\"]}]}]}"),
	  NULL, "198.18.1.2", 80, 0 },
};

static void test_authz_table(void)
{
	json_t *labels = json_pack("{s:s}", "app", "web");

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct authz_case *c = &cases[i];
		char buf[4096], reason[256];
		json_t *res;
		struct bm_authz_req r = { .principal = c->principal, .dst_port = (uint16_t)c->port,
					  .dst_ip = inet_addr("198.18.2.2"), .src_ip = inet_addr(c->src_ip) };
		char ns[64] = "";
		int rc;

		if (c->principal && sscanf(c->principal, "%*[^/]/ns/%63[^/]", ns) == 1)
			r.ns = ns;
		snprintf(buf, sizeof(buf), "[%s]", c->policies);
		res = json_loads(buf, 0, NULL);
		CU_ASSERT_PTR_NOT_NULL_FATAL(res);
		rc = bm_authz_eval(res, "istio-system", "prod", labels, &r, reason, sizeof(reason));
		if ((rc == 0) != c->allowed)
			fprintf(stderr, "authz case \"%s\": got %s (%s)\n", c->what, rc ? "deny" : "allow", reason);
		CU_ASSERT_EQUAL(rc == 0, c->allowed);
		json_decref(res);
	}
	json_decref(labels);
}

#define PA(ns, name, created, body) \
	"{\"kind\":\"PeerAuthentication\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns \
	"\",\"creationTimestamp\":\"" created "\"},\"spec\":" body "}"

struct pa_case {
	const char *what, *policies;
	int mode;
	int port, port_mode; /* 0 = no override expected */
};

static const struct pa_case pa_cases[] = {
	{ "nothing: PERMISSIVE", "", BM_MTLS_PERMISSIVE, 0, 0 },
	{ "mesh STRICT", PA("istio-system", "d", "1", "{\"mtls\":{\"mode\":\"STRICT\"}}"), BM_MTLS_STRICT, 0, 0 },
	{ "namespace overrides mesh",
	  PA("istio-system", "d", "1", "{\"mtls\":{\"mode\":\"STRICT\"}}") "," PA("prod", "n", "1", "{\"mtls\":{\"mode\":\"PERMISSIVE\"}}"),
	  BM_MTLS_PERMISSIVE, 0, 0 },
	{ "UNSET inherits", PA("istio-system", "d", "1", "{\"mtls\":{\"mode\":\"STRICT\"}}") "," PA("prod", "n", "1", "{\"mtls\":{\"mode\":\"UNSET\"}}"),
	  BM_MTLS_STRICT, 0, 0 },
	{ "workload overrides namespace",
	  PA("prod", "n", "1", "{\"mtls\":{\"mode\":\"PERMISSIVE\"}}") "," PA("prod", "w", "1", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"mtls\":{\"mode\":\"STRICT\"}}"),
	  BM_MTLS_STRICT, 0, 0 },
	{ "root-namespace selector ignored", PA("istio-system", "w", "1", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"mtls\":{\"mode\":\"STRICT\"}}"),
	  BM_MTLS_PERMISSIVE, 0, 0 },
	{ "oldest namespace policy wins",
	  PA("prod", "b", "2026-02", "{\"mtls\":{\"mode\":\"DISABLE\"}}") "," PA("prod", "a", "2026-01", "{\"mtls\":{\"mode\":\"STRICT\"}}"),
	  BM_MTLS_STRICT, 0, 0 },
	{ "portLevelMtls", PA("prod", "w", "1", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"mtls\":{\"mode\":\"STRICT\"},\"portLevelMtls\":{\"8080\":{\"mode\":\"PERMISSIVE\"}}}"),
	  BM_MTLS_STRICT, 8080, BM_MTLS_PERMISSIVE },
	{ "empty selector is namespace-wide",
	  PA("istio-system", "d", "1", "{\"mtls\":{\"mode\":\"STRICT\"}}") "," PA("prod", "n", "1", "{\"selector\":{},\"mtls\":{\"mode\":\"DISABLE\"}}"),
	  BM_MTLS_DISABLE, 0, 0 },
	{ "port UNSET inherits workload mode", PA("prod", "w", "1", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"mtls\":{\"mode\":\"STRICT\"},\"portLevelMtls\":{\"9090\":{\"mode\":\"UNSET\"}}}"),
	  BM_MTLS_STRICT, 9090, BM_MTLS_STRICT },
};

static void test_peerauth_table(void)
{
	json_t *labels = json_pack("{s:s}", "app", "web");

	for (size_t i = 0; i < sizeof(pa_cases) / sizeof(pa_cases[0]); i++) {
		const struct pa_case *c = &pa_cases[i];
		struct bm_pod_inbound pi;
		char buf[4096];
		json_t *res;

		snprintf(buf, sizeof(buf), "[%s]", c->policies);
		res = json_loads(buf, 0, NULL);
		CU_ASSERT_PTR_NOT_NULL_FATAL(res);
		bm_peerauth_mode(res, "istio-system", "prod", labels, &pi);
		if (pi.mode != c->mode)
			fprintf(stderr, "peerauth case \"%s\": mode %d\n", c->what, pi.mode);
		CU_ASSERT_EQUAL(pi.mode, c->mode);
		if (c->port) {
			CU_ASSERT_EQUAL(pi.n_ports, 1);
			CU_ASSERT_EQUAL(pi.port[0], c->port);
			CU_ASSERT_EQUAL(pi.port_mode[0], c->port_mode);
		} else {
			CU_ASSERT_EQUAL(pi.n_ports, 0);
		}
		json_decref(res);
	}
	json_decref(labels);
}

static void test_string_match(void)
{
	CU_ASSERT_TRUE(bm_authz_str_match("abc", "abc"));
	CU_ASSERT_FALSE(bm_authz_str_match("abc", "abcd"));
	CU_ASSERT_TRUE(bm_authz_str_match("abc*", "abcd"));
	CU_ASSERT_TRUE(bm_authz_str_match("*bcd", "abcd"));
	CU_ASSERT_FALSE(bm_authz_str_match("*bcd", "bc"));
	CU_ASSERT_TRUE(bm_authz_str_match("*", "x"));
	CU_ASSERT_FALSE(bm_authz_str_match("*", ""));
	CU_ASSERT_FALSE(bm_authz_str_match("*", NULL));
}

/* ---- L7: one HTTP request ------------------------------------------------------ */

#define RULE_TO(op) "{\"rules\":[{\"to\":[{\"operation\":" op "}]}]}"
#define RULE_FROM(src) "{\"rules\":[{\"from\":[{\"source\":" src "}]}]}"
#define RULE_WHEN(key, vals) "{\"rules\":[{\"when\":[{\"key\":\"" key "\"," vals "}]}]}"
#define ALICE "https://idp/alice"

struct http_case {
	const char *what;
	const char *policies;
	int http;               /* 1: an HTTP request; 0: the same as a TCP connection */
	const char *method, *host, *path;
	const char *headers;    /* "name: value\n..." names lower case */
	const char *req_principal;
	const char *claims;     /* JSON object or NULL */
	int allowed;
};

static const struct http_case http_cases[] = {
	{ "no policy allows", "", 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "methods GET allows GET", AP("prod", "p", RULE_TO("{\"methods\":[\"GET\"]}")), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "methods GET denies DELETE", AP("prod", "p", RULE_TO("{\"methods\":[\"GET\"]}")), 1, "DELETE", "web", "/", NULL, NULL, NULL, 0 },
	{ "methods GET on TCP: rule dropped", AP("prod", "p", RULE_TO("{\"methods\":[\"GET\"]}")), 0, "GET", "web", "/", NULL, NULL, NULL, 0 },
	{ "notMethods", AP("prod", "p", RULE_TO("{\"notMethods\":[\"DELETE\"]}")), 1, "DELETE", "web", "/", NULL, NULL, NULL, 0 },
	{ "methods + ports", AP("prod", "p", RULE_TO("{\"methods\":[\"GET\"],\"ports\":[\"80\"]}")), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "methods + other port", AP("prod", "p", RULE_TO("{\"methods\":[\"GET\"],\"ports\":[\"81\"]}")), 1, "GET", "web", "/", NULL, NULL, NULL, 0 },
	{ "path prefix", AP("prod", "p", RULE_TO("{\"paths\":[\"/api/*\"]}")), 1, "GET", "web", "/api/v1/x", NULL, NULL, NULL, 1 },
	{ "path prefix miss", AP("prod", "p", RULE_TO("{\"paths\":[\"/api/*\"]}")), 1, "GET", "web", "/apix", NULL, NULL, NULL, 0 },
	{ "path suffix", AP("prod", "p", RULE_TO("{\"paths\":[\"*/info\"]}")), 1, "GET", "web", "/a/b/info", NULL, NULL, NULL, 1 },
	{ "path exact", AP("prod", "p", RULE_TO("{\"paths\":[\"/health\"]}")), 1, "GET", "web", "/health/x", NULL, NULL, NULL, 0 },
	{ "path *", AP("prod", "p", RULE_TO("{\"paths\":[\"*\"]}")), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "template {*} one segment", AP("prod", "p", RULE_TO("{\"paths\":[\"/users/{*}/profile\"]}")), 1, "GET", "web", "/users/42/profile", NULL, NULL, NULL, 1 },
	{ "template {*} not two", AP("prod", "p", RULE_TO("{\"paths\":[\"/users/{*}/profile\"]}")), 1, "GET", "web", "/users/4/2/profile", NULL, NULL, NULL, 0 },
	{ "template {*} not empty", AP("prod", "p", RULE_TO("{\"paths\":[\"/users/{*}/profile\"]}")), 1, "GET", "web", "/users//profile", NULL, NULL, NULL, 0 },
	{ "template {**} many", AP("prod", "p", RULE_TO("{\"paths\":[\"/files/{**}\"]}")), 1, "GET", "web", "/files/a/b/c.txt", NULL, NULL, NULL, 1 },
	{ "template {**} zero", AP("prod", "p", RULE_TO("{\"paths\":[\"/files/{**}\"]}")), 1, "GET", "web", "/files/", NULL, NULL, NULL, 1 },
	{ "template {**} other root", AP("prod", "p", RULE_TO("{\"paths\":[\"/files/{**}\"]}")), 1, "GET", "web", "/filesx/a", NULL, NULL, NULL, 0 },
	{ "template {*} then {**}", AP("prod", "p", RULE_TO("{\"paths\":[\"/{*}/v1/{**}\"]}")), 1, "GET", "web", "/svc/v1/a/b", NULL, NULL, NULL, 1 },
	{ "notPaths", AP("prod", "p", RULE_TO("{\"notPaths\":[\"/admin*\"]}")), 1, "GET", "web", "/admin/users", NULL, NULL, NULL, 0 },
	{ "notPaths others pass", AP("prod", "p", RULE_TO("{\"notPaths\":[\"/admin*\"]}")), 1, "GET", "web", "/shop", NULL, NULL, NULL, 1 },
	{ "hosts case-insensitive", AP("prod", "p", RULE_TO("{\"hosts\":[\"example.com\"]}")), 1, "GET", "EXAMPLE.Com", "/", NULL, NULL, NULL, 1 },
	{ "hosts: a port is part of the host", AP("prod", "p", RULE_TO("{\"hosts\":[\"example.com\"]}")), 1, "GET", "example.com:8080", "/", NULL, NULL, NULL, 0 },
	{ "hosts with port wildcard", AP("prod", "p", RULE_TO("{\"hosts\":[\"example.com\",\"example.com:*\"]}")), 1, "GET", "Example.COM:8080", "/", NULL, NULL, NULL, 1 },
	{ "hosts suffix", AP("prod", "p", RULE_TO("{\"hosts\":[\"*.example.com\"]}")), 1, "GET", "api.EXAMPLE.com", "/", NULL, NULL, NULL, 1 },
	{ "notHosts", AP("prod", "p", RULE_TO("{\"notHosts\":[\"evil.com\"]}")), 1, "GET", "EVIL.com", "/", NULL, NULL, NULL, 0 },
	{ "requestPrincipals * needs a token", AP("prod", "p", RULE_FROM("{\"requestPrincipals\":[\"*\"]}")), 1, "GET", "web", "/", NULL, NULL, NULL, 0 },
	{ "requestPrincipals * with a token", AP("prod", "p", RULE_FROM("{\"requestPrincipals\":[\"*\"]}")), 1, "GET", "web", "/", NULL, ALICE, NULL, 1 },
	{ "requestPrincipals exact other", AP("prod", "p", RULE_FROM("{\"requestPrincipals\":[\"https://idp/bob\"]}")), 1, "GET", "web", "/", NULL, ALICE, NULL, 0 },
	{ "requestPrincipals prefix", AP("prod", "p", RULE_FROM("{\"requestPrincipals\":[\"https://idp/*\"]}")), 1, "GET", "web", "/", NULL, ALICE, NULL, 1 },
	{ "notRequestPrincipals", AP("prod", "p", RULE_FROM("{\"notRequestPrincipals\":[\"*\"]}")), 1, "GET", "web", "/", NULL, ALICE, NULL, 0 },
	{ "requestPrincipals on TCP: rule dropped", AP("prod", "p", RULE_FROM("{\"requestPrincipals\":[\"*\"]}")), 0, "GET", "web", "/", NULL, ALICE, NULL, 0 },
	{ "remoteIpBlocks (no trusted proxies: the peer)", AP("prod", "p", RULE_FROM("{\"remoteIpBlocks\":[\"198.18.1.0/24\"]}")), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "notRemoteIpBlocks", AP("prod", "p", RULE_FROM("{\"notRemoteIpBlocks\":[\"198.18.1.2\"]}")), 1, "GET", "web", "/", NULL, NULL, NULL, 0 },
	{ "from AND to at L7", AP("prod", "p", "{\"rules\":[{\"from\":[{\"source\":{\"requestPrincipals\":[\"*\"]}}],\"to\":[{\"operation\":{\"methods\":[\"GET\"]}}]}]}"),
	  1, "POST", "web", "/", NULL, ALICE, NULL, 0 },
	{ "when header values", AP("prod", "p", RULE_WHEN("request.headers[X-Env]", "\"values\":[\"prod\"]")), 1, "GET", "web", "/", "x-env: prod\n", NULL, NULL, 1 },
	{ "when header other value", AP("prod", "p", RULE_WHEN("request.headers[x-env]", "\"values\":[\"prod\"]")), 1, "GET", "web", "/", "x-env: dev\n", NULL, NULL, 0 },
	{ "when header absent", AP("prod", "p", RULE_WHEN("request.headers[x-env]", "\"values\":[\"*\"]")), 1, "GET", "web", "/", "x-other: 1\n", NULL, NULL, 0 },
	{ "when header notValues, absent", AP("prod", "p", RULE_WHEN("request.headers[x-env]", "\"notValues\":[\"dev\"]")), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "when header repeated: joined", AP("prod", "p", RULE_WHEN("request.headers[x-a]", "\"values\":[\"1,2\"]")), 1, "GET", "web", "/", "x-a: 1\nx-a: 2\n", NULL, NULL, 1 },
	{ "when request.auth.principal", AP("prod", "p", RULE_WHEN("request.auth.principal", "\"values\":[\"" ALICE "\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"iss\":\"https://idp\",\"sub\":\"alice\"}", 1 },
	{ "when claims array: any element", AP("prod", "p", RULE_WHEN("request.auth.claims[groups]", "\"values\":[\"admin\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"groups\":[\"dev\",\"admin\"]}", 1 },
	{ "when claims array: none", AP("prod", "p", RULE_WHEN("request.auth.claims[groups]", "\"values\":[\"admin\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"groups\":[\"dev\"]}", 0 },
	{ "when claims nested", AP("prod", "p", RULE_WHEN("request.auth.claims[realm][role]", "\"values\":[\"op*\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"realm\":{\"role\":\"operator\"}}", 1 },
	{ "when claims nested missing", AP("prod", "p", RULE_WHEN("request.auth.claims[realm][role]", "\"values\":[\"ops\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"realm\":\"ops\"}", 0 },
	{ "when claims without a token", AP("prod", "p", RULE_WHEN("request.auth.claims[groups]", "\"values\":[\"*\"]")), 1, "GET", "web", "/", NULL, NULL, NULL, 0 },
	{ "when claims notValues", AP("prod", "p", RULE_WHEN("request.auth.claims[groups]", "\"notValues\":[\"banned\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"groups\":[\"dev\",\"banned\"]}", 0 },
	{ "when scope is space-delimited", AP("prod", "p", RULE_WHEN("request.auth.claims[scope]", "\"values\":[\"write\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"scope\":\"read write\"}", 1 },
	{ "when audiences", AP("prod", "p", RULE_WHEN("request.auth.audiences", "\"values\":[\"web\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"aud\":[\"x\",\"web\"]}", 1 },
	{ "when presenter", AP("prod", "p", RULE_WHEN("request.auth.presenter", "\"values\":[\"cli\"]")), 1, "GET", "web", "/", NULL, ALICE, "{\"azp\":\"spa\"}", 0 },
	{ "when remote.ip", AP("prod", "p", RULE_WHEN("remote.ip", "\"values\":[\"198.18.0.0/16\"]")), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "when L4 key on HTTP", AP("prod", "p", RULE_WHEN("source.namespace", "\"values\":[\"a\"]")), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "DENY POST: GET passes", AP("prod", "p", "{\"action\":\"DENY\"," "\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"POST\"]}}]}]}"), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "DENY POST: POST denied", AP("prod", "p", "{\"action\":\"DENY\"," "\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"POST\"]}}]}]}"), 1, "POST", "web", "/", NULL, NULL, NULL, 0 },
	{ "DENY POST on a TCP connection denies all", AP("prod", "p", "{\"action\":\"DENY\"," "\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"POST\"]}}]}]}"), 0, "GET", "web", "/", NULL, NULL, NULL, 0 },
	{ "DENY without token", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"notRequestPrincipals\":[\"*\"]}}]}]}"), 1, "GET", "web", "/", NULL, NULL, NULL, 0 },
	{ "DENY without token: token passes", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"notRequestPrincipals\":[\"*\"]}}]}]}"), 1, "GET", "web", "/", NULL, ALICE, NULL, 1 },
	{ "spec {} denies all requests", AP("prod", "p", "{}"), 1, "GET", "web", "/", NULL, ALICE, NULL, 0 },
	{ "rules [{}] allows all requests", AP("prod", "p", "{\"rules\":[{}]}"), 1, "DELETE", "web", "/admin", NULL, NULL, NULL, 1 },
	{ "DENY wins over ALLOW at L7", AP("prod", "a", "{\"rules\":[{}]}") "," AP("prod", "d", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/admin*\"]}}]}]}"),
	  1, "GET", "web", "/admin/x", NULL, NULL, NULL, 0 },
	{ "any ALLOW matching allows", AP("prod", "a", RULE_TO("{\"paths\":[\"/a\"]}")) "," AP("istio-system", "b", RULE_TO("{\"paths\":[\"/b\"]}")),
	  1, "GET", "web", "/b", NULL, NULL, NULL, 1 },
	{ "AUDIT never decides at L7", AP("prod", "p", "{\"action\":\"AUDIT\",\"rules\":[{}]}"), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
	{ "CUSTOM is ignored", AP("prod", "p", "{\"action\":\"CUSTOM\",\"provider\":{\"name\":\"ext\"},\"rules\":[{}]}"), 1, "GET", "web", "/", NULL, NULL, NULL, 1 },
};

/* Headers "a: 1\nb: 2\n" into hdr[] (pointing into buf). */
static size_t parse_headers(const char *text, char *buf, size_t len, struct bm_http_hdr *hdr, size_t max)
{
	size_t n = 0;
	char *save, *line;

	snprintf(buf, len, "%s", text ? text : "");
	for (line = strtok_r(buf, "\n", &save); line && n < max; line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':');

		if (!colon)
			continue;
		*colon = 0;
		hdr[n] = (struct bm_http_hdr){ line, colon + 2, strlen(line), strlen(colon + 2) };
		n++;
	}
	return n;
}

static void test_authz_http_table(void)
{
	json_t *labels = json_pack("{s:s}", "app", "web");

	for (size_t i = 0; i < sizeof(http_cases) / sizeof(http_cases[0]); i++) {
		const struct http_case *c = &http_cases[i];
		char buf[8192], reason[256], hbuf[512];
		struct bm_http_hdr hdr[8];
		json_t *res, *claims = c->claims ? json_loads(c->claims, 0, NULL) : NULL;
		struct bm_authz_req r = { .principal = "cluster.local/ns/a/sa/x", .ns = "a", .dst_port = 80,
					  .dst_ip = inet_addr("198.18.2.2"), .src_ip = inet_addr("198.18.1.2") };
		struct bm_authz_http h = { .method = c->method, .host = c->host, .path = c->path,
					   .req_principal = c->req_principal, .claims = claims };
		int rc;

		h.hdr = hdr;
		h.n_hdr = parse_headers(c->headers, hbuf, sizeof(hbuf), hdr, 8);
		snprintf(buf, sizeof(buf), "[%s]", c->policies);
		res = json_loads(buf, 0, NULL);
		CU_ASSERT_PTR_NOT_NULL_FATAL(res);
		rc = bm_authz_eval_http(res, "istio-system", "prod", labels, &r, c->http ? &h : NULL, reason,
					sizeof(reason));
		if ((rc == 0) != c->allowed)
			fprintf(stderr, "authz http case \"%s\": got %s (%s)\n", c->what, rc ? "deny" : "allow", reason);
		CU_ASSERT_EQUAL(rc == 0, c->allowed);
		CU_ASSERT(rc == 0 || rc == -EACCES);
		json_decref(res);
		json_decref(claims);
	}
	json_decref(labels);
}

static void test_deny_reasons(void)
{
	json_t *res = json_loads("[" AP("prod", "nopost", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"POST\"]}}]}]}")
				 "," AP("prod", "onlyget", RULE_TO("{\"methods\":[\"GET\"]}")) "]", 0, NULL);
	struct bm_authz_req r = { .dst_port = 80 };
	struct bm_authz_http h = { .method = "POST", .host = "web", .path = "/" };
	char reason[128];

	CU_ASSERT_EQUAL(bm_authz_eval_http(res, "istio-system", "prod", NULL, &r, &h, reason, sizeof(reason)), -EACCES);
	CU_ASSERT_STRING_EQUAL(reason, "authorization_policy_deny:prod/nopost");
	h.method = "PUT";
	CU_ASSERT_EQUAL(bm_authz_eval_http(res, "istio-system", "prod", NULL, &r, &h, reason, sizeof(reason)), -EACCES);
	CU_ASSERT_STRING_EQUAL(reason, "authorization_policy_no_allow_match");
	h.method = "GET";
	CU_ASSERT_EQUAL(bm_authz_eval_http(res, "istio-system", "prod", NULL, &r, &h, reason, sizeof(reason)), 0);
	CU_ASSERT_STRING_EQUAL(reason, "");
	json_decref(res);
}

/* The connection check of a pod whose requests are each checked: only pure
 * L4 DENY rules decide; nothing that a request could still satisfy. */
struct pre_case {
	const char *what, *policies;
	int port;
	int allowed;
};

static const struct pre_case pre_cases[] = {
	{ "ALLOW with paths does not refuse the connection", AP("prod", "p", RULE_TO("{\"paths\":[\"/api/*\"]}")), 80, 1 },
	{ "ALLOW spec {} is left to the requests", AP("prod", "p", "{}"), 80, 1 },
	{ "ALLOW on principals is left to the requests", AP("prod", "p", RULE_FROM("{\"principals\":[\"cluster.local/ns/z/sa/z\"]}")), 80, 1 },
	{ "DENY with methods is left to the requests", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"POST\"]}}]}]}"), 80, 1 },
	{ "DENY with a header when is left to the requests", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"when\":[{\"key\":\"request.headers[x]\",\"values\":[\"1\"]}]}]}"), 80, 1 },
	{ "pure L4 DENY on the port refuses", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"80\"]}}]}]}"), 80, 0 },
	{ "pure L4 DENY on another port", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"ports\":[\"81\"]}}]}]}"), 80, 1 },
	{ "pure L4 DENY by namespace refuses", AP("istio-system", "p", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":{\"namespaces\":[\"a\"]}}]}]}"), 80, 0 },
	{ "DENY rules [{}] refuses", AP("prod", "p", "{\"action\":\"DENY\",\"rules\":[{}]}"), 80, 0 },
};

static void test_conn_precheck_table(void)
{
	for (size_t i = 0; i < sizeof(pre_cases) / sizeof(pre_cases[0]); i++) {
		const struct pre_case *c = &pre_cases[i];
		struct bm_authz_req r = { .principal = "cluster.local/ns/a/sa/x", .ns = "a",
					  .dst_port = (uint16_t)c->port, .src_ip = inet_addr("198.18.1.2") };
		char buf[4096], reason[256];
		json_t *res;
		int rc;

		snprintf(buf, sizeof(buf), "[%s]", c->policies);
		res = json_loads(buf, 0, NULL);
		CU_ASSERT_PTR_NOT_NULL_FATAL(res);
		rc = bm_authz_eval_conn_precheck(res, "istio-system", "prod", NULL, &r, reason, sizeof(reason));
		if ((rc == 0) != c->allowed)
			fprintf(stderr, "precheck case \"%s\": got %s (%s)\n", c->what, rc ? "deny" : "allow", reason);
		CU_ASSERT_EQUAL(rc == 0, c->allowed);
		json_decref(res);
	}
}

#define RA(ns, name, body) \
	"{\"kind\":\"RequestAuthentication\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns "\"},\"spec\":" body "}"
#define JWT_RULE "\"jwtRules\":[{\"issuer\":\"https://idp\",\"jwksUri\":\"https://idp/jwks\"}]"

static const struct { const char *what, *res; int need; } need_cases[] = {
	{ "nothing", "", 0 },
	{ "L4-only ALLOW", AP("prod", "p", RULE_FROM("{\"principals\":[\"*\"]}")), 0 },
	{ "ALLOW with paths", AP("prod", "p", RULE_TO("{\"paths\":[\"/a\"]}")), 1 },
	{ "DENY with a header when", AP("istio-system", "p", "{\"action\":\"DENY\",\"rules\":[{\"when\":[{\"key\":\"request.headers[x]\",\"values\":[\"1\"]}]}]}"), 1 },
	{ "AUDIT with methods", AP("prod", "p", "{\"action\":\"AUDIT\",\"rules\":[{\"to\":[{\"operation\":{\"methods\":[\"GET\"]}}]}]}"), 0 },
	{ "HTTP policy of another namespace", AP("dev", "p", RULE_TO("{\"paths\":[\"/a\"]}")), 0 },
	{ "HTTP policy selecting another app", AP("prod", "p", "{\"selector\":{\"matchLabels\":{\"app\":\"db\"}}," "\"rules\":[{\"to\":[{\"operation\":{\"paths\":[\"/a\"]}}]}]}"), 0 },
	{ "RequestAuthentication mesh-wide", RA("istio-system", "r", "{" JWT_RULE "}"), 1 },
	{ "RequestAuthentication namespace-wide", RA("prod", "r", "{" JWT_RULE "}"), 1 },
	{ "RequestAuthentication selecting the app", RA("prod", "r", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}}," JWT_RULE "}"), 1 },
	{ "RequestAuthentication selecting another app", RA("prod", "r", "{\"selector\":{\"matchLabels\":{\"app\":\"db\"}}," JWT_RULE "}"), 0 },
	{ "RequestAuthentication of another namespace", RA("dev", "r", "{" JWT_RULE "}"), 0 },
};

static void test_needs_http_table(void)
{
	json_t *labels = json_pack("{s:s}", "app", "web");

	for (size_t i = 0; i < sizeof(need_cases) / sizeof(need_cases[0]); i++) {
		char buf[4096];
		json_t *res;
		int need;

		snprintf(buf, sizeof(buf), "[%s]", need_cases[i].res);
		res = json_loads(buf, 0, NULL);
		CU_ASSERT_PTR_NOT_NULL_FATAL(res);
		need = bm_authz_needs_http(res, "istio-system", "prod", labels);
		if (need != need_cases[i].need)
			fprintf(stderr, "needs_http case \"%s\": got %d\n", need_cases[i].what, need);
		CU_ASSERT_EQUAL(need, need_cases[i].need);
		json_decref(res);
	}
	json_decref(labels);
}

static void test_path_template(void)
{
	CU_ASSERT_TRUE(bm_authz_path_match("/v{*}.json", "/v12.json"));
	CU_ASSERT_FALSE(bm_authz_path_match("/v{*}.json", "/v.json"));
	CU_ASSERT_TRUE(bm_authz_path_match("/{*}", "/x"));
	CU_ASSERT_FALSE(bm_authz_path_match("/{*}", "/x/"));
	CU_ASSERT_FALSE(bm_authz_path_match("/{*}", "/"));
	CU_ASSERT_TRUE(bm_authz_path_match("/{**}", "/"));
	/* literal segments after {**} (the fuzzer found they never matched) */
	CU_ASSERT_TRUE(bm_authz_path_match("/{**}/admin", "/x/y/admin"));
	CU_ASSERT_TRUE(bm_authz_path_match("/{**}/admin", "/x/admin"));
	CU_ASSERT_FALSE(bm_authz_path_match("/{**}/admin", "/x/admin/y"));
	CU_ASSERT_FALSE(bm_authz_path_match("/{**}/admin", "/xadmin"));
	CU_ASSERT_TRUE(bm_authz_path_match("/api/{**}/v1.json", "/api/a/b/v1.json"));
	CU_ASSERT_FALSE(bm_authz_path_match("/a/{**}", "/a"));
	CU_ASSERT_TRUE(bm_authz_path_match("/{**}/a", "/x/a")); /* last operator; literals may follow */
	CU_ASSERT_FALSE(bm_authz_path_match("/a", NULL));
}

BM_SUITE(authz, BM_CASE(test_authz_table), BM_CASE(test_peerauth_table), BM_CASE(test_string_match),
	 BM_CASE(test_authz_http_table), BM_CASE(test_deny_reasons), BM_CASE(test_conn_precheck_table),
	 BM_CASE(test_needs_http_table), BM_CASE(test_path_template))
