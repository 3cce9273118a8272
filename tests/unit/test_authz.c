/* L4 authorization and PeerAuthentication tables (reference §3, §4). */
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

BM_SUITE(authz, BM_CASE(test_authz_table), BM_CASE(test_peerauth_table), BM_CASE(test_string_match))
