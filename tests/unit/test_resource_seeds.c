/* The seed examples users paste (docs: examples/seeds), verbatim: what this
 * release supports must parse, everything else must be refused by name. Also
 * durations and the YAML printer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "duration.h"
#include "resource.h"
#include "unit.h"
#include "yamlout.h"

static const struct seed {
	const char *file;
	const char *text;
} seeds[] = {
	{ "01-header-routing.yaml",
	"# Route requests carrying \"end-user: jason\" to reviews v2, everything else to v1.\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: reviews\n"
	"  namespace: production\n"
	"spec:\n"
	"  hosts:\n"
	"  - reviews\n"
	"  http:\n"
	"  - match:\n"
	"    - headers:\n"
	"        end-user:\n"
	"          exact: jason\n"
	"    route:\n"
	"    - destination:\n"
	"        host: reviews\n"
	"        subset: v2\n"
	"      weight: 100\n"
	"  - route:\n"
	"    - destination:\n"
	"        host: reviews\n"
	"        subset: v1\n"
	"      weight: 100\n"
	"---\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: DestinationRule\n"
	"metadata:\n"
	"  name: reviews\n"
	"  namespace: production\n"
	"spec:\n"
	"  host: reviews\n"
	"  subsets:\n"
	"  - name: v1\n"
	"    labels:\n"
	"      version: v1\n"
	"  - name: v2\n"
	"    labels:\n"
	"      version: v2\n"
	"  trafficPolicy:\n"
	"    loadBalancer:\n"
	"      simple: LEAST_CONN\n"
	"    connectionPool:\n"
	"      tcp:\n"
	"        maxConnections: 100\n"
	"      http:\n"
	"        http1MaxPendingRequests: 10\n"
	"        http2MaxRequests: 100\n"
	"        maxRequestsPerConnection: 2\n"
	"    outlierDetection:\n"
	"      consecutiveErrors: 3\n"
	"      interval: 30s\n"
	"      baseEjectionTime: 30s\n"
	"      maxEjectionPercent: 50\n" },
	{ "02-canary.yaml",
	"# Canary: requests with header canary=true go to the canary subset, the rest split 90/10.\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: canary-deployment\n"
	"spec:\n"
	"  hosts:\n"
	"  - myapp\n"
	"  http:\n"
	"  - match:\n"
	"    - headers:\n"
	"        canary:\n"
	"          exact: \"true\"\n"
	"    route:\n"
	"    - destination:\n"
	"        host: myapp\n"
	"        subset: canary\n"
	"      weight: 100\n"
	"  - route:\n"
	"    - destination:\n"
	"        host: myapp\n"
	"        subset: stable\n"
	"      weight: 90\n"
	"    - destination:\n"
	"        host: myapp\n"
	"        subset: canary\n"
	"      weight: 10\n"
	"---\n"
	"apiVersion: networking.istio.io/v1alpha3\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: search-service\n"
	"spec:\n"
	"  hosts:\n"
	"  - search-api.prod.svc.cluster.local\n"
	"  http:\n"
	"  - route:\n"
	"    - destination:\n"
	"        host: search-service\n"
	"        subset: v1\n"
	"      weight: 95\n"
	"    - destination:\n"
	"        host: search-service\n"
	"        subset: v2\n"
	"      weight: 5\n" },
	{ "03-resilience.yaml",
	"# Circuit breaking, retries and timeouts.\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: DestinationRule\n"
	"metadata:\n"
	"  name: circuit-breaker\n"
	"spec:\n"
	"  host: myapp\n"
	"  trafficPolicy:\n"
	"    connectionPool:\n"
	"      tcp:\n"
	"        maxConnections: 100\n"
	"      http:\n"
	"        http1MaxPendingRequests: 10\n"
	"        http2MaxRequests: 100\n"
	"        maxRequestsPerConnection: 2\n"
	"        maxRetries: 3\n"
	"    outlierDetection:\n"
	"      consecutiveErrors: 5\n"
	"      interval: 30s\n"
	"      baseEjectionTime: 30s\n"
	"      maxEjectionPercent: 50\n"
	"      minHealthPercent: 50\n"
	"---\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: retry-policy\n"
	"spec:\n"
	"  hosts:\n"
	"  - myapp\n"
	"  http:\n"
	"  - match:\n"
	"    - uri:\n"
	"        prefix: /api\n"
	"    route:\n"
	"    - destination:\n"
	"        host: myapp\n"
	"    retries:\n"
	"      attempts: 3\n"
	"      perTryTimeout: 2s\n"
	"      retryOn: 5xx,reset,connect-failure,refused-stream\n"
	"---\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: timeout-policy\n"
	"spec:\n"
	"  hosts:\n"
	"  - myapp\n"
	"  http:\n"
	"  - timeout: 10s\n"
	"    route:\n"
	"    - destination:\n"
	"        host: myapp\n"
	"---\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: payment-service\n"
	"spec:\n"
	"  hosts:\n"
	"  - payment-service\n"
	"  http:\n"
	"  - route:\n"
	"    - destination:\n"
	"        host: payment-service\n"
	"    retries:\n"
	"      attempts: 3\n"
	"      perTryTimeout: 2s\n"
	"---\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: DestinationRule\n"
	"metadata:\n"
	"  name: user-service\n"
	"spec:\n"
	"  host: user-service\n"
	"  trafficPolicy:\n"
	"    loadBalancer:\n"
	"      simple: ROUND_ROBIN\n" },
	{ "04-fault-and-mirror.yaml",
	"# Fault injection and traffic mirroring.\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: fault-injection\n"
	"spec:\n"
	"  hosts:\n"
	"  - myapp\n"
	"  http:\n"
	"  - fault:\n"
	"      delay:\n"
	"        percentage:\n"
	"          value: 50\n"
	"        fixedDelay: 5s\n"
	"      abort:\n"
	"        percentage:\n"
	"          value: 10\n"
	"        httpStatus: 500\n"
	"    route:\n"
	"    - destination:\n"
	"        host: myapp\n"
	"---\n"
	"apiVersion: networking.istio.io/v1beta1\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: mirror-traffic\n"
	"spec:\n"
	"  hosts:\n"
	"  - myapp\n"
	"  http:\n"
	"  - route:\n"
	"    - destination:\n"
	"        host: myapp\n"
	"        subset: v1\n"
	"      weight: 100\n"
	"    mirror:\n"
	"      host: myapp\n"
	"      subset: v2\n"
	"    mirrorPercentage:\n"
	"      value: 10\n"
	"---\n"
	"apiVersion: networking.istio.io/v1alpha3\n"
	"kind: VirtualService\n"
	"metadata:\n"
	"  name: reviews-uri\n"
	"spec:\n"
	"  hosts:\n"
	"  - reviews\n"
	"  http:\n"
	"  - match:\n"
	"    - uri:\n"
	"        prefix: \"/v2\"\n"
	"    route:\n"
	"    - destination:\n"
	"        host: reviews\n"
	"        subset: v2\n" },
	{ "05-security.yaml",
	"# mTLS, authorization and JWT request authentication.\n"
	"apiVersion: security.istio.io/v1beta1\n"
	"kind: PeerAuthentication\n"
	"metadata:\n"
	"  name: default\n"
	"  namespace: production\n"
	"spec:\n"
	"  mtls:\n"
	"    mode: STRICT\n"
	"---\n"
	"apiVersion: networking.istio.io/v1alpha3\n"
	"kind: DestinationRule\n"
	"metadata:\n"
	"  name: reviews-mtls\n"
	"spec:\n"
	"  host: reviews\n"
	"  trafficPolicy:\n"
	"    tls:\n"
	"      mode: ISTIO_MUTUAL\n"
	"---\n"
	"apiVersion: security.istio.io/v1beta1\n"
	"kind: AuthorizationPolicy\n"
	"metadata:\n"
	"  name: user-service-policy\n"
	"spec:\n"
	"  selector:\n"
	"    matchLabels:\n"
	"      app: user-service\n"
	"  rules:\n"
	"  - from:\n"
	"    - source:\n"
	"        principals: [\"cluster.local/ns/default/sa/order-service\"]\n"
	"    to:\n"
	"    - operation:\n"
	"        methods: [\"GET\", \"POST\"]\n"
	"---\n"
	"apiVersion: security.istio.io/v1beta1\n"
	"kind: AuthorizationPolicy\n"
	"metadata:\n"
	"  name: allow-frontend-to-backend\n"
	"  namespace: production\n"
	"spec:\n"
	"  selector:\n"
	"    matchLabels:\n"
	"      app: backend\n"
	"  action: ALLOW\n"
	"  rules:\n"
	"  - from:\n"
	"    - source:\n"
	"        principals: [\"cluster.local/ns/production/sa/frontend\"]\n"
	"    to:\n"
	"    - operation:\n"
	"        methods: [\"GET\", \"POST\"]\n"
	"        paths: [\"/api/*\"]\n"
	"---\n"
	"apiVersion: security.istio.io/v1beta1\n"
	"kind: RequestAuthentication\n"
	"metadata:\n"
	"  name: jwt-auth\n"
	"  namespace: production\n"
	"spec:\n"
	"  selector:\n"
	"    matchLabels:\n"
	"      app: api\n"
	"  jwtRules:\n"
	"  - issuer: \"https://auth.example.com\"\n"
	"    jwksUri: \"https://auth.example.com/.well-known/jwks.json\"\n" },
	{ "06-telemetry.yaml",
	"# Access logging and tracing.\n"
	"apiVersion: telemetry.istio.io/v1alpha1\n"
	"kind: Telemetry\n"
	"metadata:\n"
	"  name: access-logging\n"
	"  namespace: production\n"
	"spec:\n"
	"  accessLogging:\n"
	"  - providers:\n"
	"    - name: envoy\n"
	"---\n"
	"apiVersion: install.istio.io/v1alpha1\n"
	"kind: IstioOperator\n"
	"metadata:\n"
	"  name: control-plane\n"
	"spec:\n"
	"  meshConfig:\n"
	"    enableTracing: true\n"
	"    defaultConfig:\n"
	"      tracing:\n"
	"        sampling: 100\n"
	"    defaultProviders:\n"
	"      tracing:\n"
	"      - zipkin\n"
	"    extensionProviders:\n"
	"    - name: zipkin\n"
	"      zipkin:\n"
	"        service: zipkin.istio-system.svc.cluster.local\n"
	"        port: 9411\n" },
};

static const char *seed_text(const char *file)
{
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
		if (!strcmp(seeds[i].file, file))
			return seeds[i].text;
	return NULL;
}

/* The YAML documents of a seed, split on "---" lines (index from 0). */
static char *seed_doc(const char *file, int index)
{
	const char *t = seed_text(file), *start = t, *end;

	for (int i = 0; i < index && start; i++) {
		start = strstr(start, "\n---\n");
		if (start)
			start += 5;
	}
	if (!start)
		return NULL;
	end = strstr(start, "\n---\n");
	return strndup(start, end ? (size_t)(end - start + 1) : strlen(start));
}

static json_t *must_parse(const char *file, const char *text)
{
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;
	int r = bm_resources_parse(text, strlen(text), file, 0, &out, &errs);

	if (r)
		bm_errlist_print(&errs, stderr);
	CU_ASSERT_EQUAL(r, 0);
	bm_errlist_free(&errs);
	return out;
}

/* 02-canary's second document: a weighted VS, the core of this release. */
static void test_seed_canary_search_service(void)
{
	char *doc = seed_doc("02-canary.yaml", 1);
	json_t *out = must_parse("02-canary.yaml", doc), *route;

	CU_ASSERT_EQUAL_FATAL(json_array_size(out), 1);
	CU_ASSERT_STRING_EQUAL(bm_res_kind(json_array_get(out, 0)), "VirtualService");
	CU_ASSERT_STRING_EQUAL(bm_res_name(json_array_get(out, 0)), "search-service");
	CU_ASSERT_STRING_EQUAL(bm_res_namespace(json_array_get(out, 0)), "default");
	route = json_object_get(json_array_get(json_object_get(json_object_get(
			json_array_get(out, 0), "spec"), "http"), 0), "route");
	CU_ASSERT_EQUAL(json_array_size(route), 2);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_array_get(route, 0), "weight")), 95);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_array_get(route, 1), "weight")), 5);
	json_decref(out);
	free(doc);
}

/* 03-resilience's last document: the user-service DestinationRule. */
static void test_seed_resilience_user_service(void)
{
	char *doc = seed_doc("03-resilience.yaml", 4);
	json_t *out = must_parse("03-resilience.yaml", doc);

	CU_ASSERT_EQUAL_FATAL(json_array_size(out), 1);
	CU_ASSERT_STRING_EQUAL(bm_res_name(json_array_get(out, 0)), "user-service");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(json_object_get(
		json_object_get(json_array_get(out, 0), "spec"), "trafficPolicy"), "loadBalancer"),
		"simple")), "ROUND_ROBIN");
	json_decref(out);
	free(doc);
}

/* Whole seed files: 01-05 parse completely (with the documents counted);
 * in 06 only IstioOperator is refused, by name, on its line. */
static const struct {
	const char *file;
	size_t docs;
	const char *const want[4];
	const char *const warn[4];
} seed_results[] = {
	{ "01-header-routing.yaml", 2, { NULL },
	  { "01-header-routing.yaml:51: spec.trafficPolicy.outlierDetection.consecutiveErrors: "
	    "warning: deprecated; mapped to consecutiveGatewayErrors (use "
	    "consecutiveGatewayErrors or consecutive5xxErrors)" } },
	{ "02-canary.yaml", 2, { NULL }, { NULL } },
	{ "03-resilience.yaml", 5, { NULL },
	  { "03-resilience.yaml:18: spec.trafficPolicy.outlierDetection.consecutiveErrors: "
	    "warning: deprecated; mapped to consecutiveGatewayErrors (use "
	    "consecutiveGatewayErrors or consecutive5xxErrors)" } },
	{ "04-fault-and-mirror.yaml", 3, { NULL }, { NULL } },
	{ "05-security.yaml", 5, { NULL }, { NULL } },
	/* The Telemetry document validates (access logging, docs/observability.md);
	 * IstioOperator installs Istio itself and is not a mesh resource at all,
	 * so the file as a whole is still refused. */
	{ "06-telemetry.yaml", 0,
	  { "06-telemetry.yaml:13: kind IstioOperator (apiVersion install.istio.io/v1alpha1) is not supported yet" },
	  { NULL } },
};

static void test_seed_files(void)
{
	for (size_t i = 0; i < sizeof(seed_results) / sizeof(seed_results[0]); i++) {
		const char *text = seed_text(seed_results[i].file);
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;
		size_t n = 0, nw = 0;
		int r;

		r = bm_resources_parse(text, strlen(text), seed_results[i].file, 0, &out, &errs);
		while (n < 4 && seed_results[i].want[n])
			n++;
		while (nw < 4 && seed_results[i].warn[nw])
			nw++;
		if (r != (n ? -EINVAL : 0) || errs.n != n || errs.nwarn != nw) {
			fprintf(stderr, "\n%s:\n", seed_results[i].file);
			bm_errlist_print(&errs, stderr);
		}
		CU_ASSERT_EQUAL(r, n ? -EINVAL : 0);
		CU_ASSERT_EQUAL(json_array_size(out), seed_results[i].docs);
		CU_ASSERT_EQUAL(errs.n, n);
		for (size_t j = 0; j < n && j < errs.n; j++)
			CU_ASSERT_STRING_EQUAL(errs.msg[j], seed_results[i].want[j]);
		CU_ASSERT_EQUAL(errs.nwarn, nw);
		for (size_t j = 0; j < nw && j < errs.nwarn; j++)
			CU_ASSERT_STRING_EQUAL(errs.warn[j], seed_results[i].warn[j]);
		json_decref(out);
		bm_errlist_free(&errs);
	}
}

/* The copies above are the files users read: when the shared examples are
 * next to the checkout (../shared/examples/seeds), they must not drift. */
static void test_seed_copies_match_files(void)
{
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		char path[256], *buf = NULL;
		size_t len = 0;
		FILE *f;

		snprintf(path, sizeof(path), "../shared/examples/seeds/%s", seeds[i].file);
		f = fopen(path, "r");
		if (!f)
			continue;
		buf = malloc(1 << 16);
		CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
		len = fread(buf, 1, (1 << 16) - 1, f);
		buf[len] = '\0';
		fclose(f);
		if (strcmp(buf, seeds[i].text))
			fprintf(stderr, "\n%s differs from its copy in test_resource_seeds.c\n", path);
		CU_ASSERT_STRING_EQUAL(buf, seeds[i].text);
		free(buf);
	}
}

/* 01-header-routing: the L7 match and the DR's http pool and outlier
 * detection, in their canonical (Istio camelCase) form. */
static void test_seed_header_routing_canonical(void)
{
	json_t *out = must_parse("01-header-routing.yaml", seed_text("01-header-routing.yaml"));
	json_t *vs = json_object_get(json_array_get(out, 0), "spec");
	json_t *dr = json_object_get(json_array_get(out, 1), "spec");
	char *m = json_dumps(json_object_get(json_array_get(json_object_get(vs, "http"), 0),
					     "match"), JSON_COMPACT);
	char *tp = json_dumps(json_object_get(dr, "trafficPolicy"), JSON_COMPACT);

	CU_ASSERT_STRING_EQUAL(m, "[{\"headers\":{\"end-user\":{\"exact\":\"jason\"}}}]");
	CU_ASSERT_STRING_EQUAL(tp,
		"{\"loadBalancer\":{\"simple\":\"LEAST_CONN\"},\"connectionPool\":{\"tcp\":"
		"{\"maxConnections\":100},\"http\":{\"http1MaxPendingRequests\":10,"
		"\"http2MaxRequests\":100,\"maxRequestsPerConnection\":2}},\"outlierDetection\":"
		"{\"consecutiveGatewayErrors\":3,\"interval\":\"30s\",\"baseEjectionTime\":\"30s\","
		"\"maxEjectionPercent\":50}}");
	free(m);
	free(tp);
	json_decref(out);
}

static void test_duration(void)
{
	static const struct { const char *s; int r; uint64_t ms; } cases[] = {
		{ "10s", 0, 10000 }, { "1.5s", 0, 1500 }, { "100ms", 0, 100 },
		{ "2m", 0, 120000 }, { "1h", 0, 3600000 }, { "0.001s", 0, 1 },
		{ "1h30m", 0, 5400000 }, { "1000us", 0, 1 }, { "+5s", 0, 5000 },
		{ "0s", -ERANGE, 0 }, { "0", -ERANGE, 0 }, { "1.5ms", -ERANGE, 0 },
		{ "100us", -ERANGE, 0 }, { "0.0001s", -ERANGE, 0 },
		{ "", -EINVAL, 0 }, { "10", -EINVAL, 0 }, { "s", -EINVAL, 0 },
		{ "-1s", -EINVAL, 0 }, { "1.s5", -EINVAL, 0 }, { "1d", -EINVAL, 0 },
		{ "10 s", -EINVAL, 0 }, { ".5s", 0, 500 },
		{ "99999999999999999999h", -ERANGE, 0 },
	};
	uint64_t ns;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 0;
		int r = bm_duration_ms(cases[i].s, &ms);

		if (r != cases[i].r || ms != cases[i].ms)
			fprintf(stderr, "\nduration \"%s\": r=%d ms=%llu\n", cases[i].s, r,
				(unsigned long long)ms);
		CU_ASSERT_EQUAL(r, cases[i].r);
		CU_ASSERT_EQUAL(ms, cases[i].ms);
	}
	CU_ASSERT_EQUAL(bm_duration_parse_ns("0s", &ns), 0);
	CU_ASSERT_EQUAL(ns, 0);
	CU_ASSERT_EQUAL(bm_duration_parse_ns("1.000000001s", &ns), 0);
	CU_ASSERT_EQUAL(ns, 1000000001);
}

static void test_yaml_quoting(void)
{
	static const struct { const char *s; int quote; } cases[] = {
		{ "true", 1 }, { "False", 1 }, { "yes", 1 }, { "off", 1 }, { "null", 1 },
		{ "~", 1 }, { "", 1 }, { "10", 1 }, { "1.5", 1 }, { "1e3", 1 }, { "0x1F", 1 },
		{ "-1", 1 }, { ".5", 1 }, { ".inf", 1 }, { "2024-01-01", 1 }, { "10s", 1 },
		{ "reviews", 0 }, { "v1", 0 }, { "ROUND_ROBIN", 0 }, { "-x", 0 },
		{ "networking.istio.io/v1", 0 }, { "<<", 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CU_ASSERT_EQUAL(bm_yaml_needs_quotes(cases[i].s, strlen(cases[i].s)),
				cases[i].quote);
}

/* YAML printed from canonical JSON parses back to the same resources. */
static void test_yaml_round_trip(void)
{
	const char *src =
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n"
		"  name: w\n  namespace: prod\n  labels: {version: \"2\", on: \"true\", e: \"\"}\n"
		"  annotations: {note: \"a: b # c\\nline2\", x.io/y: \"- z\"}\n"
		"spec:\n  address: 10.0.0.1\n  ports: {http: 80}\n  serviceAccount: \"null\"\n";
	json_t *a = must_parse("a.yaml", src), *b;
	char *y = bm_yaml_dumps(json_array_get(a, 0));

	CU_ASSERT_PTR_NOT_NULL_FATAL(y);
	b = must_parse("b.yaml", y);
	CU_ASSERT(json_equal(a, b));
	free(y);
	json_decref(a);
	json_decref(b);
}

BM_SUITE(resource_seeds,
	 BM_CASE(test_seed_canary_search_service),
	 BM_CASE(test_seed_resilience_user_service),
	 BM_CASE(test_seed_files),
	 BM_CASE(test_seed_copies_match_files),
	 BM_CASE(test_seed_header_routing_canonical),
	 BM_CASE(test_duration),
	 BM_CASE(test_yaml_quoting),
	 BM_CASE(test_yaml_round_trip))
