/* Validation rules of lib/ (schema tables + checks), one failing case each,
 * asserting the exact "file:line: field.path: message" users see. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "resource.h"
#include "unit.h"

#define VS "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n"
#define DR "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n"
#define SE "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata:\n  name: r\nspec:\n"
#define WE "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: r\nspec:\n"
/* Spec bodies start on line 6 of these documents. */
#define ROUTE "  http:\n  - route:\n    - destination:\n        host: a\n"
#define SE_OK "  hosts: [a.example.com]\n  ports:\n  - {number: 80, name: http}\n"

struct bad_case {
	const char *yaml;
	const char *want; /* "LINE: path: message" (prefix of the message) */
};

static const struct bad_case bad_cases[] = {
	/* apiVersion / kind */
	{ "apiVersion: security.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {}\n",
	  "1: apiVersion: \"security.istio.io/v1\" is not a valid apiVersion for VirtualService "
	  "(want networking.istio.io/v1, v1beta1, v1alpha3)" },
	{ "apiVersion: networking.istio.io/v2\nkind: DestinationRule\nmetadata: {name: r}\n",
	  "1: apiVersion: \"networking.istio.io/v2\" is not a valid apiVersion" },
	{ "kind: VirtualService\nmetadata: {name: r}\n", "1: apiVersion: required" },
	{ "apiVersion: v1\nmetadata: {name: r}\n", "1: kind: required" },
	{ "apiVersion: v1\nkind: [VirtualService]\n", "2: kind: must be a string" },
	{ "apiVersion: {a: 1}\nkind: VirtualService\n", "1: apiVersion: must be a string" },
	{ "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: r}\n",
	  "2: kind Gateway (apiVersion networking.istio.io/v1beta1) is not supported yet" },
	{ "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: r}\n",
	  "2: kind Sidecar (apiVersion networking.istio.io/v1) is not supported yet" },
	{ "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: r}\n",
	  "2: kind WasmPlugin (apiVersion extensions.istio.io/v1alpha1) is not supported yet" },
	{ "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: r}\n",
	  "2: kind ConfigMap (apiVersion v1) is not supported yet" },
	{ "apiVersion: networking.istio.io/v1\nkind: virtualservice\nmetadata: {name: r}\n",
	  "2: kind: unknown kind \"virtualservice\" (did you mean \"VirtualService\"?)" },
	{ "- a\n- b\n", "1: a resource must be a mapping" },
	{ "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\nextra: 1\n",
	  "5: extra: unknown field" },
	/* metadata */
	{ VS "  hosts: [a]\n" ROUTE, NULL },
	{ "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  namespace: x\nspec: {}\n",
	  "3: metadata.name: required" },
	{ "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: Bad_Name\n",
	  "4: metadata.name: \"Bad_Name\" is not a valid DNS-1123 subdomain" },
	{ "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: a.b\n",
	  "5: metadata.namespace: \"a.b\" is not a valid DNS-1123 label" },
	{ "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  owner: me\n",
	  "5: metadata.owner: unknown field" },
	{ "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  labels:\n    app: -x\n",
	  "6: metadata.labels.app: invalid label value" },
	{ "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  labels:\n    a: x\n    a: y\n",
	  "7: metadata.labels.a: duplicate key" },
	{ "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  name: s\n",
	  "5: metadata.name: duplicate field" },
	/* VirtualService */
	{ VS "  http:\n  - route:\n    - destination: {host: a}\n", "5: spec.hosts: required" },
	{ VS "  hosts: []\n" ROUTE, "6: spec.hosts: must not be empty" },
	{ VS "  hosts: ['*']\n" ROUTE, "6: spec.hosts[0]: \"*\" alone is not allowed" },
	{ VS "  hosts: [a]\n  hostz: [b]\n" ROUTE, "7: spec.hostz: unknown field" },
	{ VS "  Hosts: [a]\n" ROUTE, "6: spec.Hosts: unknown field (did you mean \"hosts\"?)" },
	{ VS "  hosts: [a..b]\n" ROUTE, "6: spec.hosts[0]: \"a..b\" is not a valid host name" },
	{ VS "  hosts: [a]\n  gateways: [mesh, my-gw]\n" ROUTE,
	  "7: spec.gateways[1]: gateway \"my-gw\" is not supported yet (only \"mesh\")" },
	{ VS "  hosts: [a]\n  tls: []\n" ROUTE, "7: spec.tls: not supported yet" },
	{ VS "  hosts: [a]\n", "5: spec: at least one of http or tcp is required" },
	{ VS "  hosts: [a]\n  http:\n  - name: x\n",
	  "8: spec.http[0]: one of route, redirect or directResponse is required" },
	{ VS "  hosts: [a]\n  http:\n  - route: []\n", "8: spec.http[0].route: must not be empty" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {subset: v1}\n",
	  "9: spec.http[0].route[0].destination.host: required" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - weight: 1\n",
	  "9: spec.http[0].route[0].destination: required" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: '*'}\n",
	  "9: spec.http[0].route[0].destination.host: \"*\" alone is not allowed" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, subset: V1}\n",
	  "9: spec.http[0].route[0].destination.subset: \"V1\" is not a valid DNS-1123 label" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, port: {number: 0}}\n",
	  "9: spec.http[0].route[0].destination.port.number: must be between 1 and 65535" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, port: {number: 65536}}\n",
	  "9: spec.http[0].route[0].destination.port.number: must be between 1 and 65535" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination:\n        host: a\n      weight: 90\n"
	     "    - destination:\n        host: b\n      weight: -10\n",
	  "14: spec.http[0].route[1].weight: must be >= 0" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: 0\n"
	     "    - destination: {host: b}\n",
	  "8: spec.http[0].route: total destination weight = 0" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: \"50\"\n",
	  "10: spec.http[0].route[0].weight: must be an integer (not a quoted string)" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: 1.5\n",
	  "10: spec.http[0].route[0].weight: must be an integer (got \"1.5\")" },
	{ VS "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      headers: {request: {remove: [':path']}}\n",
	  "10: spec.http[0].route[0].headers.request.remove[0]: pseudo-header \":path\" cannot be changed" },
	{ VS "  hosts: [a]\n  tcp:\n  - match:\n    - port: 0\n    route:\n    - destination: {host: a}\n",
	  "9: spec.tcp[0].match[0].port: must be between 1 and 65535" },
	{ VS "  hosts: [a]\n  tcp:\n  - match:\n    - destinationSubnets: [10.0.0.0/33]\n    route:\n    - destination: {host: a}\n",
	  "9: spec.tcp[0].match[0].destinationSubnets[0]: \"10.0.0.0/33\" is not an IPv4 address or CIDR" },
	{ VS "  hosts: [a]\n  tcp:\n  - match:\n    - sourceLabels: {app: x}\n    route:\n    - destination: {host: a}\n",
	  "9: spec.tcp[0].match[0].sourceLabels: not supported yet" },
	{ VS "  hosts: [a]\n  tcp:\n  - match:\n    - sourceNamespace: x\n    route:\n    - destination: {host: a}\n",
	  "9: spec.tcp[0].match[0].sourceNamespace: not supported yet" },
	{ VS "  hosts: [a]\n  tcp:\n  - match:\n    - port: 80\n", "8: spec.tcp[0].route: required" },
	{ VS "  hosts: [a]\n  tcp:\n  - route:\n    - destination: {host: a}\n      weight: -1\n",
	  "10: spec.tcp[0].route[0].weight: must be >= 0" },
	{ VS "  hosts: [a]\n  tcp:\n  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n",
	  "8: spec.tcp[0].route: total destination weight = 0" },
	/* DestinationRule */
	{ DR "  subsets: []\n", "5: spec.host: required" },
	{ DR "  host: '*'\n", "6: spec.host: host \"*\" is not supported yet" },
	{ DR "  host: a\n  subsets:\n  - name: v1\n  - name: v1\n",
	  "9: spec.subsets[1].name: duplicate name \"v1\"" },
	{ DR "  host: a\n  subsets:\n  - name: V_1\n",
	  "8: spec.subsets[0].name: \"V_1\" is not a valid DNS-1123 label" },
	{ DR "  host: a\n  subsets:\n  - labels: {version: v1}\n", "8: spec.subsets[0].name: required" },
	{ DR "  host: a\n  trafficPolicy:\n    loadBalancer:\n      simple: FASTEST\n",
	  "9: spec.trafficPolicy.loadBalancer.simple: must be one of UNSPECIFIED, LEAST_CONN, "
	  "LEAST_REQUEST, ROUND_ROBIN, RANDOM, PASSTHROUGH (got \"FASTEST\")" },
	{ DR "  host: a\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true}\n",
	  "9: spec.trafficPolicy.loadBalancer.consistentHash: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting: {}\n",
	  "9: spec.trafficPolicy.loadBalancer.localityLbSetting: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    loadBalancer:\n      warmup: {}\n",
	  "9: spec.trafficPolicy.loadBalancer.warmup: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    connectionPool: {}\n",
	  "8: spec.trafficPolicy.connectionPool: at least one of tcp or http is required" },
	{ DR "  host: a\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: -1\n",
	  "10: spec.trafficPolicy.connectionPool.tcp.maxConnections: must be >= 0" },
	{ DR "  host: a\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        connectTimeout: 0s\n",
	  "10: spec.trafficPolicy.connectionPool.tcp.connectTimeout: must be at least 1ms" },
	{ DR "  host: a\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRetries: -3\n",
	  "10: spec.trafficPolicy.connectionPool.http.maxRetries: must be >= 0" },
	{ DR "  host: a\n  trafficPolicy:\n    outlierDetection:\n      minHealthPercent: 101\n",
	  "9: spec.trafficPolicy.outlierDetection.minHealthPercent: must be between 0 and 100" },
	{ DR "  host: a\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: -5\n",
	  "9: spec.trafficPolicy.outlierDetection.consecutive5xxErrors: must be >= 0" },
	{ DR "  host: a\n  trafficPolicy:\n    tls: {mode: SIMPLE}\n",
	  "8: spec.trafficPolicy.tls.mode: SIMPLE is not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    portLevelSettings: []\n",
	  "8: spec.trafficPolicy.portLevelSettings: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    tunnel: {}\n", "8: spec.trafficPolicy.tunnel: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    proxyProtocol: {}\n",
	  "8: spec.trafficPolicy.proxyProtocol: not supported yet" },
	{ DR "  host: a\n  trafficPolicy:\n    retryBudget: {}\n",
	  "8: spec.trafficPolicy.retryBudget: not supported yet" },
	{ DR "  host: a\n  subsets:\n  - name: v1\n    trafficPolicy:\n      tls: {sni: a}\n",
	  "10: spec.subsets[0].trafficPolicy.tls.sni: not supported yet" },
	{ DR "  host: a\n  workloadSelector: {matchLabels: {a: b}}\n",
	  "7: spec.workloadSelector: not supported yet" },
	/* ServiceEntry */
	{ SE "  ports: []\n", "5: spec.hosts: required" },
	{ SE "  hosts: ['*']\n", "6: spec.hosts[0]: \"*\" alone is not allowed" },
	{ SE SE_OK "  addresses: [10.0.0.300]\n",
	  "9: spec.addresses[0]: \"10.0.0.300\" is not an IPv4 address or CIDR" },
	{ SE SE_OK "  addresses: ['fd00::1']\n",
	  "9: spec.addresses[0]: IPv6 addresses are not supported yet" },
	{ SE "  hosts: [a]\n  ports:\n  - name: http\n", "8: spec.ports[0].number: required" },
	{ SE "  hosts: [a]\n  ports:\n  - number: 80\n", "8: spec.ports[0].name: required" },
	{ SE "  hosts: [a]\n  ports:\n  - {number: 80, name: http}\n  - {number: 81, name: http}\n",
	  "9: spec.ports[1].name: duplicate name \"http\"" },
	{ SE "  hosts: [a]\n  ports:\n  - {number: 80, name: a}\n  - {number: 80, name: b}\n",
	  "9: spec.ports[1].number: duplicate port number 80" },
	{ SE "  hosts: [a]\n  ports:\n  - {number: 80, name: a, protocol: QUIC}\n",
	  "8: spec.ports[0].protocol: must be one of HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS" },
	{ SE "  hosts: [a]\n  ports:\n  - {number: 80, name: a, targetPort: 0}\n",
	  "8: spec.ports[0].targetPort: must be between 1 and 65535" },
	{ SE SE_OK "  location: MESH_ELSEWHERE\n", "9: spec.location: must be one of MESH_INTERNAL" },
	{ SE SE_OK "  resolution: DNS\n", "9: spec.resolution: DNS is not supported yet" },
	{ SE SE_OK "  resolution: DNS_ROUND_ROBIN\n",
	  "9: spec.resolution: DNS_ROUND_ROBIN is not supported yet" },
	{ SE SE_OK "  exportTo: ['.']\n", "9: spec.exportTo: not supported yet" },
	{ SE SE_OK "  subjectAltNames: [x]\n", "9: spec.subjectAltNames: not supported yet" },
	{ SE SE_OK "  endpoints:\n  - address: 10.0.0.1\n",
	  "9: spec.endpoints: no endpoints should be provided for resolution NONE" },
	{ SE SE_OK "  resolution: STATIC\n  endpoints:\n  - address: 10.0.0.1\n    ports: {grpc: 9000}\n",
	  "12: spec.endpoints[0].ports: port \"grpc\" is not defined in the service entry's ports" },
	{ SE SE_OK "  resolution: STATIC\n  workloadSelector: {labels: {app: a}}\n  endpoints:\n  - address: 10.0.0.1\n",
	  "5: spec: only one of workloadSelector or endpoints is allowed" },
	{ SE SE_OK "  resolution: STATIC\n  endpoints:\n  - address: db.example.com\n",
	  "11: spec.endpoints[0].address: host name addresses are not supported yet" },
	{ SE SE_OK "  resolution: STATIC\n  endpoints:\n  - address: 10.0.0.1\n    network: n1\n",
	  "12: spec.endpoints[0].network: not supported yet" },
	/* WorkloadEntry */
	{ WE "  labels: {app: a}\n", "5: spec.address: required" },
	{ WE "  address: reviews.example.com\n",
	  "6: spec.address: host name addresses are not supported yet" },
	{ WE "  address: 'fd00::1'\n", "6: spec.address: IPv6 addresses are not supported yet" },
	{ WE "  address: 300.1.1.1\n", "6: spec.address: \"300.1.1.1\" is not an IPv4 address" },
	{ WE "  address: 10.0.0.1/24\n", "6: spec.address: \"10.0.0.1/24\" is not an IPv4 address" },
	{ WE "  address: 10.0.0.1\n  ports:\n    http: 70000\n",
	  "8: spec.ports.http: must be between 1 and 65535" },
	{ WE "  address: 10.0.0.1\n  ports:\n    HTTP_1: 80\n",
	  "8: spec.ports.HTTP_1: port name \"HTTP_1\" is not a valid DNS-1123 label" },
	{ WE "  address: 10.0.0.1\n  network: n1\n", "7: spec.network: not supported yet" },
	{ WE "  address: 10.0.0.1\n  locality: r/z\n", "7: spec.locality: not supported yet" },
	{ WE "  address: 10.0.0.1\n  weight: 3\n", "7: spec.weight: not supported yet" },
	{ WE "  address: 10.0.0.1\n  serviceAccount: Bad_SA\n",
	  "7: spec.serviceAccount: \"Bad_SA\" is not a valid DNS-1123 subdomain" },
	/* YAML itself */
	{ VS "  hosts: [a\n", "7: YAML syntax error" },
	{ VS "  hosts: !custom [a]\n" ROUTE, "6: YAML: unsupported tag !custom" },
	{ VS "  hosts: *nope\n", "6: YAML: unknown anchor \"nope\"" },
	{ VS "  <<: {hosts: [a]}\n", "6: YAML: merge keys (<<) are not supported" },
	{ VS "  hosts: [\"a\\0b\"]\n" ROUTE, "6: spec.hosts[0]: must not contain NUL characters" },
};

/* The unsupported HTTPRoute fields, each refused by name (the rest of
 * HTTPRoute: tests/unit/test_resource_l7.c). */
static const char *const http_later[] = { "corsPolicy", "delegate" };

static int parse(const char *yaml, json_t **out, struct bm_errlist *errs)
{
	return bm_resources_parse(yaml, strlen(yaml), "t.yaml", 0, out, errs);
}

static void check_bad(const char *yaml, const char *want)
{
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;
	char prefix[512];
	int r = parse(yaml, &out, &errs);
	bool found = false;

	if (!want) {
		if (r) {
			fprintf(stderr, "\nunexpected errors for:\n%s", yaml);
			bm_errlist_print(&errs, stderr);
		}
		CU_ASSERT_EQUAL(r, 0);
		goto out;
	}
	snprintf(prefix, sizeof(prefix), "t.yaml:%s", want);
	for (size_t i = 0; i < errs.n; i++)
		if (!strncmp(errs.msg[i], prefix, strlen(prefix)))
			found = true;
	if (!found || r != -EINVAL || out) {
		fprintf(stderr, "\nwanted \"%s\" (r=%d) for:\n%s--- got:\n", prefix, r, yaml);
		bm_errlist_print(&errs, stderr);
	}
	CU_ASSERT_EQUAL(r, -EINVAL);
	CU_ASSERT_PTR_NULL(out);
	CU_ASSERT(found);
out:
	json_decref(out);
	bm_errlist_free(&errs);
}

static void test_rules_table(void)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
		check_bad(bad_cases[i].yaml, bad_cases[i].want);
}

static void test_http_fields_not_supported(void)
{
	for (size_t i = 0; i < sizeof(http_later) / sizeof(http_later[0]); i++) {
		char yaml[512], want[128];

		snprintf(yaml, sizeof(yaml), VS "  hosts: [a]\n  http:\n  - %s: {}\n    route:\n"
			 "    - destination: {host: a}\n", http_later[i]);
		snprintf(want, sizeof(want), "8: spec.http[0].%s: not supported yet", http_later[i]);
		check_bad(yaml, want);
	}
}

/* One document with several problems: every one is reported. */
static void test_all_errors_reported(void)
{
	const char *yaml = VS "  hosts: ['*']\n  http:\n  - route:\n    - destination: {host: a}\n"
			      "      weight: -1\n    timeout: 5\n---\n" DR "  host: a\n  bogus: 1\n";
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;

	CU_ASSERT_EQUAL(parse(yaml, &out, &errs), -EINVAL);
	CU_ASSERT_EQUAL(errs.n, 4);
	if (errs.n == 4) {
		CU_ASSERT_STRING_EQUAL(errs.msg[0], "t.yaml:6: spec.hosts[0]: \"*\" alone is not "
				       "allowed; name the host (a wildcard prefix like "
				       "\"*.example.com\" is fine)");
		CU_ASSERT_STRING_EQUAL(errs.msg[1], "t.yaml:10: spec.http[0].route[0].weight: "
				       "must be >= 0");
		CU_ASSERT_STRING_EQUAL(errs.msg[2], "t.yaml:11: spec.http[0].timeout: invalid "
				       "duration \"5\" (e.g. \"10s\", \"1.5s\", \"100ms\")");
		CU_ASSERT_STRING_EQUAL(errs.msg[3], "t.yaml:19: spec.bogus: unknown field");
	}
	bm_errlist_free(&errs);
}

static json_t *parse_ok(const char *yaml)
{
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;
	int r = parse(yaml, &out, &errs);

	if (r)
		bm_errlist_print(&errs, stderr);
	CU_ASSERT_EQUAL(r, 0);
	bm_errlist_free(&errs);
	return out;
}

/* Scalars are typed by the schema, not by YAML's guesses. */
static void test_scalar_typing(void)
{
	json_t *out = parse_ok(
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n"
		"  name: \"123\"\n  labels:\n    enabled: true\n    version: 2\n    empty: ''\n"
		"spec:\n  address: 10.0.0.1\n  ports: {http: 8080}\n  serviceAccount: yes\n");
	json_t *res = json_array_get(out, 0), *meta = json_object_get(res, "metadata");

	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(meta, "name")), "123");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(meta, "labels"),
								"enabled")), "true");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(meta, "labels"),
								"version")), "2");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(
				json_object_get(json_object_get(res, "spec"), "ports"), "http")), 8080);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(res, "spec"),
								"serviceAccount")), "yes");
	json_decref(out);
}

static void test_canonical_form(void)
{
	json_t *out = parse_ok(
		"# leading comment\n---\n---\n# only a comment\n---\n"
		"apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata:\n"
		"  name: db\n  uid: abc\n  resourceVersion: '7'\n  generation: 3\n"
		"  creationTimestamp: 2020-01-01T00:00:00Z\n"
		"spec:\n  resolution: STATIC\n  ports:\n  - {name: pg, protocol: tcp, number: 5432}\n"
		"  hosts: [db.example.com]\n  endpoints:\n  - address: 10.1.2.3\n    ports: {pg: 5433}\n"
		"---\n");
	json_t *res = json_array_get(out, 0);
	char *s;

	CU_ASSERT_EQUAL(json_array_size(out), 1);
	s = json_dumps(res, JSON_COMPACT);
	CU_ASSERT_STRING_EQUAL(s,
		"{\"apiVersion\":\"networking.istio.io/v1alpha3\",\"kind\":\"ServiceEntry\","
		"\"metadata\":{\"name\":\"db\",\"namespace\":\"default\"},"
		"\"spec\":{\"hosts\":[\"db.example.com\"],\"ports\":[{\"number\":5432,"
		"\"protocol\":\"tcp\",\"name\":\"pg\"}],\"resolution\":\"STATIC\","
		"\"endpoints\":[{\"address\":\"10.1.2.3\",\"ports\":{\"pg\":5433}}]}}");
	free(s);
	json_decref(out);
}

static void test_json_input(void)
{
	const char *json =
		"{\n  \"apiVersion\": \"networking.istio.io/v1\",\n  \"kind\": \"DestinationRule\",\n"
		"  \"metadata\": {\"name\": \"r\", \"namespace\": \"prod\"},\n"
		"  \"spec\": {\n\t\"host\": \"r\",\n\t\"subsets\": [{\"name\": \"v1\"}, {\"name\": \"v1\"}]\n  }\n}\n";
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;

	CU_ASSERT_EQUAL(parse(json, &out, &errs), -EINVAL);
	CU_ASSERT_EQUAL(errs.n, 1);
	if (errs.n)
		CU_ASSERT_STRING_EQUAL(errs.msg[0],
				       "t.yaml:7: spec.subsets[1].name: duplicate name \"v1\"");
	bm_errlist_free(&errs);
}

static void test_list_wrapper(void)
{
	json_t *out = parse_ok(
		"apiVersion: v1\nkind: List\nitems:\n"
		"- apiVersion: networking.istio.io/v1\n  kind: WorkloadEntry\n  metadata: {name: a}\n"
		"  spec: {address: 10.0.0.1}\n"
		"- apiVersion: networking.istio.io/v1\n  kind: WorkloadEntry\n  metadata: {name: b}\n"
		"  spec: {address: 10.0.0.2}\n");

	CU_ASSERT_EQUAL(json_array_size(out), 2);
	json_decref(out);
	check_bad("apiVersion: v1\nkind: List\nitems:\n"
		  "- apiVersion: networking.istio.io/v1\n  kind: WorkloadEntry\n"
		  "  metadata: {name: a}\n  spec: {address: x..y}\n",
		  "7: items[0].spec.address: \"x..y\" is not an IPv4 address");
}

/* Anchors resolve; alias bombs are refused quickly instead of expanding. */
static void test_aliases(void)
{
	json_t *out = parse_ok(VS "  hosts: [&x a.example.com]\n  tcp:\n  - route:\n"
			       "    - destination: {host: *x}\n");
	struct bm_errlist errs = { 0 };
	char bomb[4096];
	size_t off;

	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(json_array_get(
		json_object_get(json_array_get(json_object_get(json_object_get(json_array_get(out, 0),
		"spec"), "tcp"), 0), "route"), 0), "destination"), "host")), "a.example.com");
	json_decref(out);
	check_bad(VS "  hosts: &h [a.b]\n  exportTo: *h\n" ROUTE,
		  "6: spec.exportTo[0]: \"a.b\" must be");
	off = (size_t)snprintf(bomb, sizeof(bomb), "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
	for (int i = 1; i < 12; i++)
		off += (size_t)snprintf(bomb + off, sizeof(bomb) - off,
					"a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n",
					i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1,
					i - 1, i - 1);
	out = NULL;
	CU_ASSERT_EQUAL(bm_resources_parse(bomb, off, "t.yaml", 0, &out, &errs), -EINVAL);
	CU_ASSERT(errs.n >= 1);
	if (errs.n)
		CU_ASSERT_PTR_NOT_NULL(strstr(errs.msg[0], "aliases expand to too many nodes"));
	bm_errlist_free(&errs);
}

static void test_deep_nesting(void)
{
	char buf[1024];
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;

	memset(buf, '[', 500);
	buf[500] = '\0';
	CU_ASSERT_EQUAL(bm_resources_parse(buf, 500, "t.yaml", 0, &out, &errs), -EINVAL);
	CU_ASSERT(errs.n >= 1);
	if (errs.n)
		CU_ASSERT_PTR_NOT_NULL(strstr(errs.msg[0], "nesting deeper than 64"));
	bm_errlist_free(&errs);
}

static void test_identity_only(void)
{
	const char *yaml = VS "  hosts: ['*']\n  bogus: 1\n";
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;

	CU_ASSERT_EQUAL(bm_resources_parse(yaml, strlen(yaml), "t.yaml", BM_PARSE_IDENTITY, &out,
					   &errs), 0);
	CU_ASSERT_EQUAL(json_array_size(out), 1);
	CU_ASSERT_STRING_EQUAL(bm_res_name(json_array_get(out, 0)), "r");
	CU_ASSERT_PTR_NULL(json_object_get(json_array_get(out, 0), "spec"));
	json_decref(out);
	bm_errlist_free(&errs);
}

static void test_kind_lookup(void)
{
	static const struct { const char *alias, *kind; } aliases[] = {
		{ "vs", "VirtualService" }, { "VirtualServices", "VirtualService" },
		{ "virtualservice", "VirtualService" }, { "DR", "DestinationRule" },
		{ "destinationrules", "DestinationRule" }, { "se", "ServiceEntry" },
		{ "serviceentries", "ServiceEntry" }, { "we", "WorkloadEntry" },
		{ "pa", "PeerAuthentication" }, { "ap", "AuthorizationPolicy" },
		{ "ra", "RequestAuthentication" },
		{ "virtualservice.networking.istio.io", "VirtualService" },
	};
	char buf[128];

	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++) {
		const struct bm_kind *k = bm_kind_lookup(aliases[i].alias);

		CU_ASSERT_PTR_NOT_NULL_FATAL(k);
		CU_ASSERT_STRING_EQUAL(k->kind, aliases[i].kind);
	}
	CU_ASSERT_PTR_NULL(bm_kind_lookup("nope"));
	CU_ASSERT_PTR_NULL(bm_kind_lookup("vs.security.istio.io"));
	CU_ASSERT_STRING_EQUAL(bm_kind_fullname(bm_kind_find("DestinationRule"), buf, sizeof(buf)),
			       "destinationrule.networking.istio.io");
	CU_ASSERT_PTR_NOT_NULL(bm_kind_find("RequestAuthentication")->spec);
	CU_ASSERT_PTR_NOT_NULL(bm_kind_find("Telemetry")->spec);
	CU_ASSERT_PTR_NULL(bm_kind_find("IstioOperator")->spec);
}

/* Every field table fits validate.c's fixed "seen" array. */
static size_t count_fields(const struct bm_field *f, int depth)
{
	size_t n = 0, worst = 0;

	if (!f || depth > 16)
		return 0;
	for (; f->name; f++, n++) {
		size_t sub = count_fields(f->fields, depth + 1);

		if (f->elem && f->elem->fields) {
			size_t e = count_fields(f->elem->fields, depth + 1);

			sub = e > sub ? e : sub;
		}
		worst = sub > worst ? sub : worst;
	}
	return n > worst ? n : worst;
}

static void test_schema_bounds(void)
{
	for (const struct bm_kind *k = bm_kinds; k->kind; k++)
		if (k->spec)
			CU_ASSERT(count_fields(k->spec->fields, 0) < BM_SCHEMA_MAX_FIELDS);
	CU_ASSERT(count_fields(bm_metadata_fields, 0) < BM_SCHEMA_MAX_FIELDS);
}

BM_SUITE(resource,
	 BM_CASE(test_rules_table),
	 BM_CASE(test_http_fields_not_supported),
	 BM_CASE(test_all_errors_reported),
	 BM_CASE(test_scalar_typing),
	 BM_CASE(test_canonical_form),
	 BM_CASE(test_json_input),
	 BM_CASE(test_list_wrapper),
	 BM_CASE(test_aliases),
	 BM_CASE(test_deep_nesting),
	 BM_CASE(test_identity_only),
	 BM_CASE(test_kind_lookup),
	 BM_CASE(test_schema_bounds))
