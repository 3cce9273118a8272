/* Resources -> the L7 configuration: which services are L7, routes, clusters,
 * policies and defaults (istio-api §1, §2), runtime counters, lifetime.
 * Resources are written as JSON with ' for " to stay readable. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "bpfmesh/abi.h"
#include "../../agent/l7.h"
#include "../../agent/model.h"

static json_t *load(const char *fmt, ...)
{
	static char buf[65536];
	va_list ap;
	json_error_t e;
	json_t *j;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	for (char *p = buf; *p; p++)
		if (*p == '\'')
			*p = '"';
	j = json_loads(buf, 0, &e);
	if (!j)
		fprintf(stderr, "test JSON: %s at %d:%d\n", e.text, e.line, e.column);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	return j;
}

/* Builds from res (consumed); the log text in *log_out if asked (free it). */
static struct bm_l7_config *build(json_t *res, char **log_out)
{
	struct bm_l7_config *cfg = NULL;
	char *text = NULL;
	size_t len = 0;
	FILE *log = open_memstream(&text, &len);

	CU_ASSERT_PTR_NOT_NULL_FATAL(log);
	CU_ASSERT_EQUAL_FATAL(bm_l7_build(res, &cfg, log), 0);
	fclose(log);
	json_decref(res);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_EQUAL(cfg->refs, 1);
	if (log_out)
		*log_out = text;
	else
		free(text);
	return cfg;
}

static const struct bm_l7_service *svc(const struct bm_l7_config *c, const char *vip, uint16_t port)
{
	return bm_l7_find(c, inet_addr(vip), port);
}

static const struct bm_l7_cluster *cluster(const struct bm_l7_config *c, const char *name)
{
	for (size_t i = 0; i < c->n_cluster; i++)
		if (!strcmp(c->cluster[i].name, name))
			return &c->cluster[i];
	return NULL;
}

static unsigned count_lines(const char *log, const char *needle)
{
	unsigned n = 0;

	for (const char *p = log; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

#define SE(name, ns, vip, port, proto, app)                                                  \
	"{'kind':'ServiceEntry','metadata':{'name':'" name "','namespace':'" ns "'},"         \
	"'spec':{'hosts':['" name "'],'addresses':['" vip "'],'ports':[{'number':" #port ","  \
	"'name':'http','protocol':'" proto "'}],'workloadSelector':{'labels':{'app':'" app "'}}}}"

#define WE(name, ns, ip, app, version, extra)                                                \
	"{'kind':'WorkloadEntry','metadata':{'name':'" name "','namespace':'" ns "'},"        \
	"'spec':{'address':'" ip "','labels':{'app':'" app "','version':'" version "'" extra "}}}"

#define AMBIENT ",'istio.io/dataplane-mode':'ambient'"

#define R_PROD "reviews.production.svc.cluster.local"

/* ---- seed 01: header routing (reviews, namespace production) ---------------- */

static const char *const SEED01 =
	SE("reviews", "production", "198.19.0.10", 9080, "HTTP", "reviews") ","
	WE("r1", "production", "198.18.1.2", "reviews", "v1", AMBIENT) ","
	WE("r2", "production", "198.18.1.3", "reviews", "v2", "") ","
	"{'kind':'VirtualService','metadata':{'name':'reviews','namespace':'production'},"
	"'spec':{'hosts':['reviews'],'http':["
	"{'match':[{'headers':{'end-user':{'exact':'jason'}}}],"
	" 'route':[{'destination':{'host':'reviews','subset':'v2'},'weight':100}]},"
	"{'route':[{'destination':{'host':'reviews','subset':'v1'},'weight':100}]}]}},"
	"{'kind':'DestinationRule','metadata':{'name':'reviews','namespace':'production'},"
	"'spec':{'host':'reviews','subsets':[{'name':'v1','labels':{'version':'v1'}},"
	"{'name':'v2','labels':{'version':'v2'}}],'trafficPolicy':{"
	"'loadBalancer':{'simple':'LEAST_CONN'},"
	"'connectionPool':{'tcp':{'maxConnections':100},'http':{'http1MaxPendingRequests':10,"
	"'http2MaxRequests':100,'maxRequestsPerConnection':2}},"
	"'outlierDetection':{'consecutiveErrors':3,'interval':'30s','baseEjectionTime':'30s',"
	"'maxEjectionPercent':50}}}}";

static void test_seed01_header_routing(void)
{
	char *log;
	struct bm_l7_config *c = build(load("[%s]", SEED01), &log);
	const struct bm_l7_service *s = svc(c, "198.19.0.10", 9080);
	const struct bm_l7_cluster *v1, *v2;
	struct bm_l7_retry def;

	CU_ASSERT_EQUAL(c->n_svc, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(s->host, R_PROD);
	CU_ASSERT_STRING_EQUAL(s->ns, "production");
	CU_ASSERT_TRUE(bm_l7_is_l7(c, inet_addr("198.19.0.10"), 9080));
	CU_ASSERT_FALSE(bm_l7_is_l7(c, inet_addr("198.19.0.10"), 9081));
	CU_ASSERT_EQUAL_FATAL(s->n_route, 2);
	/* Route order kept; the header match compiled. */
	CU_ASSERT_EQUAL_FATAL(s->route[0].n_match, 1);
	CU_ASSERT_EQUAL_FATAL(s->route[0].match[0].n_headers, 1);
	CU_ASSERT_STRING_EQUAL(s->route[0].match[0].headers[0].name, "end-user");
	CU_ASSERT_EQUAL(s->route[0].match[0].headers[0].m.kind, BM_SM_EXACT);
	CU_ASSERT_STRING_EQUAL(s->route[0].match[0].headers[0].m.s, "jason");
	CU_ASSERT_EQUAL(s->route[0].match[0].uri.kind, BM_SM_NONE);
	CU_ASSERT_EQUAL(s->route[1].n_match, 0);
	CU_ASSERT_EQUAL_FATAL(s->route[0].n_dest, 1);
	CU_ASSERT_EQUAL_FATAL(s->route[1].n_dest, 1);
	v2 = s->route[0].dest[0].c;
	v1 = s->route[1].dest[0].c;
	CU_ASSERT_PTR_NOT_NULL_FATAL(v1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(v2);
	CU_ASSERT_STRING_EQUAL(v2->name, "outbound|9080|v2|" R_PROD);
	CU_ASSERT_STRING_EQUAL(v1->name, "outbound|9080|v1|" R_PROD);
	CU_ASSERT_EQUAL(c->n_cluster, 2);
	CU_ASSERT_PTR_EQUAL(cluster(c, "outbound|9080|v1|" R_PROD), v1);
	/* Backends: subset labels, network order, mesh flag from the label. */
	CU_ASSERT_EQUAL_FATAL(v1->n, 1);
	CU_ASSERT_EQUAL(v1->b[0].ip, inet_addr("198.18.1.2"));
	CU_ASSERT_EQUAL(v1->b[0].port, htons(9080));
	CU_ASSERT_EQUAL(v1->b[0].mesh, 1);
	CU_ASSERT_EQUAL(v1->b[0].id, 0);
	CU_ASSERT_EQUAL_FATAL(v2->n, 1);
	CU_ASSERT_EQUAL(v2->b[0].mesh, 0);
	/* Cluster policy: LEAST_CONN = LEAST_REQUEST, pool, outlier. */
	CU_ASSERT_EQUAL(v1->lb, BM_LB_LEAST_REQUEST);
	CU_ASSERT_EQUAL(v1->port, 9080);
	CU_ASSERT_STRING_EQUAL(v1->subset, "v1");
	CU_ASSERT_STRING_EQUAL(v1->ns, "production");
	CU_ASSERT_EQUAL(v1->tls, -1);
	CU_ASSERT_EQUAL(v1->max_connections, 100);
	CU_ASSERT_EQUAL(v1->max_pending, 10);
	CU_ASSERT_EQUAL(v1->max_requests, 100);
	CU_ASSERT_EQUAL(v1->max_requests_per_conn, 2);
	CU_ASSERT_EQUAL(v1->max_retries, BM_L7_UNLIMITED);
	CU_ASSERT_EQUAL(v1->idle_timeout_ms, 3600000);
	CU_ASSERT_EQUAL(v1->connect_timeout_ms, 10000);
	CU_ASSERT_EQUAL(v1->od.enabled, 1);
	CU_ASSERT_EQUAL(v1->od.consecutive_5xx, 5);
	CU_ASSERT_EQUAL(v1->od.consecutive_gw, 3); /* deprecated consecutiveErrors */
	CU_ASSERT_EQUAL(v1->od.interval_ms, 30000);
	CU_ASSERT_EQUAL(v1->od.base_ejection_ms, 30000);
	CU_ASSERT_EQUAL(v1->od.max_ejection_ms, 300000);
	CU_ASSERT_EQUAL(v1->od.max_ejection_pct, 50);
	CU_ASSERT_EQUAL(v1->min_health, 0); /* block present, minHealthPercent unset */
	CU_ASSERT_PTR_NOT_NULL(v1->rt);
	/* The deprecation is reported once per cluster, naming the DR. */
	CU_ASSERT_EQUAL(count_lines(log, "DestinationRule production/reviews: outlierDetection."
				    "consecutiveErrors is deprecated"), 2);
	/* No retries block: Istio's default policy. */
	bm_retry_default(&def);
	CU_ASSERT_EQUAL(memcmp(&s->route[0].retry, &def, sizeof(def)), 0);
	CU_ASSERT_EQUAL(s->route[0].timeout_ms, 0);
	free(log);
	bm_l7_put(c);
}

/* ---- seed 03: resilience (namespace default) ------------------------------------ */

static const char *const SEED03 =
	SE("myapp", "default", "198.19.1.1", 80, "HTTP", "myapp") ","
	SE("payment-service", "default", "198.19.1.2", 80, "HTTP", "payment") ","
	SE("user-service", "default", "198.19.1.3", 80, "HTTP", "user") ","
	WE("m1", "default", "198.18.3.1", "myapp", "v1", "") ","
	WE("p1", "default", "198.18.3.2", "payment", "v1", "") ","
	WE("u1", "default", "198.18.3.3", "user", "v1", "") ","
	"{'kind':'DestinationRule','metadata':{'name':'circuit-breaker'},'spec':{'host':'myapp',"
	"'trafficPolicy':{'connectionPool':{'tcp':{'maxConnections':100},'http':{"
	"'http1MaxPendingRequests':10,'http2MaxRequests':100,'maxRequestsPerConnection':2,"
	"'maxRetries':3}},'outlierDetection':{'consecutiveErrors':5,'interval':'30s',"
	"'baseEjectionTime':'30s','maxEjectionPercent':50,'minHealthPercent':50}}}},"
	"{'kind':'VirtualService','metadata':{'name':'retry-policy'},'spec':{'hosts':['myapp'],"
	"'http':[{'match':[{'uri':{'prefix':'/api'}}],'route':[{'destination':{'host':'myapp'}}],"
	"'retries':{'attempts':3,'perTryTimeout':'2s','retryOn':'5xx,reset,connect-failure,"
	"refused-stream'}}]}},"
	"{'kind':'VirtualService','metadata':{'name':'timeout-policy'},'spec':{'hosts':['myapp'],"
	"'http':[{'timeout':'10s','route':[{'destination':{'host':'myapp'}}]}]}},"
	"{'kind':'VirtualService','metadata':{'name':'payment-service'},'spec':{"
	"'hosts':['payment-service'],'http':[{'route':[{'destination':{'host':'payment-service'}}],"
	"'retries':{'attempts':3,'perTryTimeout':'2s'}}]}},"
	"{'kind':'DestinationRule','metadata':{'name':'user-service'},'spec':{'host':'user-service',"
	"'trafficPolicy':{'loadBalancer':{'simple':'ROUND_ROBIN'}}}}";

static void test_seed03_resilience(void)
{
	struct bm_l7_config *c = build(load("[%s]", SEED03), NULL);
	const struct bm_l7_service *my = svc(c, "198.19.1.1", 80);
	const struct bm_l7_service *pay = svc(c, "198.19.1.2", 80);
	const struct bm_l7_cluster *mc;
	struct bm_l7_retry def;

	bm_retry_default(&def);
	/* user-service: a DR with only loadBalancer and no VS stays L4. */
	CU_ASSERT_FALSE(bm_l7_is_l7(c, inet_addr("198.19.1.3"), 80));
	CU_ASSERT_EQUAL(c->n_svc, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(my);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pay);
	/* Two VS for myapp: the oldest (then ns/name) applies, as in model.c. */
	CU_ASSERT_EQUAL_FATAL(my->n_route, 1);
	CU_ASSERT_EQUAL(my->route[0].match[0].uri.kind, BM_SM_PREFIX);
	CU_ASSERT_STRING_EQUAL(my->route[0].match[0].uri.s, "/api");
	CU_ASSERT_EQUAL(my->route[0].retry.attempts, 3);
	CU_ASSERT_EQUAL(my->route[0].retry.per_try_ms, 2000);
	CU_ASSERT_EQUAL(my->route[0].retry.on, BM_RETRY_5XX | BM_RETRY_RESET |
					       BM_RETRY_CONNECT_FAILURE | BM_RETRY_REFUSED_STREAM);
	CU_ASSERT_EQUAL(my->route[0].retry.ignore_previous_hosts, 1);
	CU_ASSERT_EQUAL(my->route[0].retry.backoff_base_ms, def.backoff_base_ms);
	/* payment-service: only attempts and perTryTimeout; retryOn default. */
	CU_ASSERT_EQUAL_FATAL(pay->n_route, 1);
	CU_ASSERT_EQUAL(pay->route[0].n_match, 0);
	CU_ASSERT_EQUAL(pay->route[0].retry.attempts, 3);
	CU_ASSERT_EQUAL(pay->route[0].retry.per_try_ms, 2000);
	CU_ASSERT_EQUAL(pay->route[0].retry.on, def.on);
	/* The circuit-breaker DR (destination without subset). */
	mc = my->route[0].dest[0].c;
	CU_ASSERT_PTR_NOT_NULL_FATAL(mc);
	CU_ASSERT_STRING_EQUAL(mc->name, "outbound|80||myapp.default.svc.cluster.local");
	CU_ASSERT_EQUAL(mc->max_retries, 3);
	CU_ASSERT_EQUAL(mc->od.consecutive_gw, 5);
	CU_ASSERT_EQUAL(mc->min_health, 50);
	CU_ASSERT_EQUAL(mc->n, 1);
	/* payment-service has no DR: defaults. */
	mc = pay->route[0].dest[0].c;
	CU_ASSERT_PTR_NOT_NULL_FATAL(mc);
	CU_ASSERT_EQUAL(mc->od.enabled, 0);
	CU_ASSERT_EQUAL(mc->min_health, 50);
	CU_ASSERT_EQUAL(mc->max_connections, BM_L7_UNLIMITED);
	CU_ASSERT_EQUAL(mc->max_pending, BM_L7_UNLIMITED);
	CU_ASSERT_EQUAL(mc->max_requests, BM_L7_UNLIMITED);
	CU_ASSERT_EQUAL(mc->max_requests_per_conn, 0);
	bm_l7_put(c);
}

/* ---- seed 04: fault and mirror ---------------------------------------------------- */

#define MYAPP_SUBSETS                                                                        \
	SE("myapp", "default", "198.19.1.1", 80, "HTTP", "myapp") ","                        \
	WE("m1", "default", "198.18.3.1", "myapp", "v1", "") ","                             \
	WE("m2", "default", "198.18.3.2", "myapp", "v2", "") ","                             \
	"{'kind':'DestinationRule','metadata':{'name':'myapp'},'spec':{'host':'myapp',"       \
	"'subsets':[{'name':'v1','labels':{'version':'v1'}},{'name':'v2','labels':"           \
	"{'version':'v2'}}]}}"

static void test_seed04_fault(void)
{
	struct bm_l7_config *c = build(load(
		"[" MYAPP_SUBSETS ",{'kind':'VirtualService','metadata':{'name':'fault-injection'},"
		"'spec':{'hosts':['myapp'],'http':[{'fault':{'delay':{'percentage':{'value':50},"
		"'fixedDelay':'5s'},'abort':{'percentage':{'value':10},'httpStatus':500}},"
		"'route':[{'destination':{'host':'myapp'}}]}]}}]"), NULL);
	const struct bm_l7_service *s = svc(c, "198.19.1.1", 80);

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(s->n_route, 1);
	CU_ASSERT_EQUAL(s->route[0].fault.delay_ms, 5000);
	CU_ASSERT_EQUAL(s->route[0].fault.delay_ppm, 500000);
	CU_ASSERT_EQUAL(s->route[0].fault.abort_status, 500);
	CU_ASSERT_EQUAL(s->route[0].fault.abort_ppm, 100000);
	CU_ASSERT_EQUAL(s->route[0].n_mirror, 0);
	CU_ASSERT_EQUAL_FATAL(s->route[0].n_dest, 1);
	CU_ASSERT_EQUAL(s->route[0].dest[0].c->n, 2); /* no subset: every endpoint */
	bm_l7_put(c);
}

static void test_fault_percent_forms(void)
{
	struct bm_l7_config *c = build(load(
		"[" MYAPP_SUBSETS ",{'kind':'VirtualService','metadata':{'name':'f'},"
		"'spec':{'hosts':['myapp'],'http':["
		"{'match':[{'uri':{'exact':'/old'}}],'fault':{'delay':{'percent':7,'fixedDelay':'1s'},"
		" 'abort':{'httpStatus':503}},'route':[{'destination':{'host':'myapp'}}]},"
		"{'fault':{'delay':{'percentage':{'value':0.0001},'fixedDelay':'10ms'}},"
		" 'route':[{'destination':{'host':'myapp'}}]}]}}]"), NULL);
	const struct bm_l7_service *s = svc(c, "198.19.1.1", 80);

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(s->n_route, 2);
	CU_ASSERT_EQUAL(s->route[0].fault.delay_ppm, 70000);  /* deprecated int percent */
	CU_ASSERT_EQUAL(s->route[0].fault.abort_status, 503);
	CU_ASSERT_EQUAL(s->route[0].fault.abort_ppm, 0);      /* unset percentage: never */
	CU_ASSERT_EQUAL(s->route[1].fault.delay_ms, 10);
	CU_ASSERT_EQUAL(s->route[1].fault.delay_ppm, 1);
	bm_l7_put(c);
}

static void test_seed04_mirror(void)
{
	struct bm_l7_config *c = build(load(
		"[" MYAPP_SUBSETS ",{'kind':'VirtualService','metadata':{'name':'mirror-traffic'},"
		"'spec':{'hosts':['myapp'],'http':[{'route':[{'destination':{'host':'myapp',"
		"'subset':'v1'},'weight':100}],'mirror':{'host':'myapp','subset':'v2'},"
		"'mirrorPercentage':{'value':10}}]}}]"), NULL);
	const struct bm_l7_service *s = svc(c, "198.19.1.1", 80);

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(s->n_route, 1);
	CU_ASSERT_EQUAL_FATAL(s->route[0].n_mirror, 1);
	CU_ASSERT_EQUAL(s->route[0].mirror[0].ppm, 100000);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s->route[0].mirror[0].c);
	CU_ASSERT_STRING_EQUAL(s->route[0].mirror[0].c->name,
			       "outbound|80|v2|myapp.default.svc.cluster.local");
	CU_ASSERT_EQUAL(s->route[0].mirror[0].c->n, 1);
	CU_ASSERT_EQUAL(s->route[0].mirror[0].c->b[0].ip, inet_addr("198.18.3.2"));
	CU_ASSERT_EQUAL(s->route[0].dest[0].weight, 100);
	CU_ASSERT_EQUAL(s->route[0].total_weight, 100);
	CU_ASSERT_EQUAL(c->n_cluster, 2);
	bm_l7_put(c);
}

static void test_mirror_percentages(void)
{
	static const struct {
		const char *rule;
		size_t n;
		uint32_t ppm[2];
	} cases[] = {
		{ "'mirror':{'host':'myapp','subset':'v2'}", 1, { 1000000 } },          /* absent: 100 % */
		{ "'mirror':{'host':'myapp'},'mirrorPercentage':{'value':0}", 0, { 0 } }, /* explicit 0 */
		{ "'mirror':{'host':'myapp'},'mirrorPercent':5", 1, { 50000 } },         /* deprecated */
		{ "'mirror':{'host':'myapp'},'mirrorPercentage':{'value':25.5}", 1, { 255000 } },
		{ "'mirrors':[{'destination':{'host':'myapp','subset':'v2'}},"
		  "{'destination':{'host':'myapp','subset':'v1'},'percentage':{'value':1}},"
		  "{'destination':{'host':'myapp'},'percentage':{'value':0}}]", 2, { 1000000, 10000 } },
		{ "'mirror':{'host':'nowhere'}", 0, { 0 } }, /* no cluster: nothing mirrored */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_l7_config *c = build(load(
			"[" MYAPP_SUBSETS ",{'kind':'VirtualService','metadata':{'name':'m'},"
			"'spec':{'hosts':['myapp'],'http':[{'route':[{'destination':{'host':'myapp',"
			"'subset':'v1'}}],%s}]}}]", cases[i].rule), NULL);
		const struct bm_l7_service *s = svc(c, "198.19.1.1", 80);

		CU_ASSERT_PTR_NOT_NULL_FATAL(s); /* mirror makes it L7, even at 0 % */
		CU_ASSERT_EQUAL(s->route[0].n_mirror, cases[i].n);
		for (size_t j = 0; j < cases[i].n && j < s->route[0].n_mirror; j++) {
			CU_ASSERT_EQUAL(s->route[0].mirror[j].ppm, cases[i].ppm[j]);
			CU_ASSERT_PTR_NOT_NULL(s->route[0].mirror[j].c);
		}
		bm_l7_put(c);
	}
}

/* seed 04's reviews-uri: subset v2 with no DestinationRule in sight. */
static void test_unknown_subset_null_cluster(void)
{
	char *log;
	struct bm_l7_config *c = build(load(
		"[" SE("reviews", "default", "198.19.0.20", 9080, "HTTP", "reviews") ","
		WE("r1", "default", "198.18.1.2", "reviews", "v1", "") ","
		"{'kind':'VirtualService','metadata':{'name':'reviews-uri'},'spec':{'hosts':['reviews'],"
		"'http':[{'match':[{'uri':{'prefix':'/v2'}}],'route':[{'destination':{'host':'reviews',"
		"'subset':'v2'}}]},{'route':[{'destination':{'host':'nowhere'}}]}]}}]"), &log);
	const struct bm_l7_service *s = svc(c, "198.19.0.20", 9080);

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(s->n_route, 2);
	CU_ASSERT_EQUAL_FATAL(s->route[0].n_dest, 1);
	CU_ASSERT_PTR_NULL(s->route[0].dest[0].c); /* 503 NC at run time */
	CU_ASSERT_PTR_NULL(s->route[1].dest[0].c); /* unknown host too */
	CU_ASSERT_EQUAL(c->n_cluster, 0);
	CU_ASSERT_EQUAL(count_lines(log, "VirtualService default/reviews-uri: destination "
				    "outbound|9080|v2|reviews.default.svc.cluster.local: subset \"v2\""), 1);
	CU_ASSERT_EQUAL(count_lines(log, "VirtualService default/reviews-uri: destination "
				    "outbound|0||nowhere.default.svc.cluster.local: no ServiceEntry"), 1);
	free(log);
	bm_l7_put(c);
}

/* ---- which services are L7 ------------------------------------------------------------ */

#define REVIEWS_BASE                                                                         \
	SE("reviews", "prod", "198.19.0.10", 9080, "HTTP", "reviews") ","                    \
	WE("r1", "prod", "198.18.1.2", "reviews", "v1", "") ","                              \
	WE("r2", "prod", "198.18.2.2", "reviews", "v2", "")

#define DR(policy, v2policy)                                                                 \
	"{'kind':'DestinationRule','metadata':{'name':'reviews','namespace':'prod'},"         \
	"'spec':{'host':'reviews','trafficPolicy':" policy ",'subsets':["                    \
	"{'name':'v1','labels':{'version':'v1'}},"                                           \
	"{'name':'v2','labels':{'version':'v2'}" v2policy "}]}}"

#define VS(body)                                                                             \
	"{'kind':'VirtualService','metadata':{'name':'reviews','namespace':'prod'},"          \
	"'spec':{'hosts':['reviews']," body "}}"

#define SPLIT "'route':[{'destination':{'host':'reviews','subset':'v1'},'weight':90},"    \
	      "{'destination':{'host':'reviews','subset':'v2'},'weight':10}]"

static void test_which_services_are_l7(void)
{
	static const struct {
		const char *name, *res;
		int l7;
	} cases[] = {
		{ "no VS, no DR", REVIEWS_BASE, 0 },
		{ "weighted http routes, plain DR",
		  REVIEWS_BASE "," DR("{'loadBalancer':{'simple':'RANDOM'},'connectionPool':{'tcp':"
				      "{'maxConnections':5}}}", "")
		  "," VS("'http':[{" SPLIT "}]"), 0 },
		{ "tcp routes only", REVIEWS_BASE "," DR("{}", "") "," VS("'tcp':[{" SPLIT "}]"), 0 },
		{ "tcp route with outlier DR, protocol unset",
		  SE("reviews", "prod", "198.19.0.10", 9080, "", "reviews") ","
		  DR("{'outlierDetection':{}}", "") "," VS("'tcp':[{" SPLIT "}]"), 0 },
		{ "header match", REVIEWS_BASE "," DR("{}", "") ","
		  VS("'http':[{'match':[{'headers':{'x':{'exact':'1'}}}]," SPLIT "}]"), 1 },
		{ "timeout", REVIEWS_BASE "," DR("{}", "") "," VS("'http':[{'timeout':'1s'," SPLIT "}]"), 1 },
		{ "retries", REVIEWS_BASE "," DR("{}", "") ","
		  VS("'http':[{'retries':{'attempts':1}," SPLIT "}]"), 1 },
		{ "destination headers", REVIEWS_BASE "," DR("{}", "") ","
		  VS("'http':[{'route':[{'destination':{'host':'reviews'},'headers':{'request':"
		     "{'set':{'a':'b'}}}}]}]"), 1 },
		{ "rewrite", REVIEWS_BASE "," VS("'http':[{'rewrite':{'uri':'/'},'route':"
						 "[{'destination':{'host':'reviews'}}]}]"), 1 },
		{ "directResponse", REVIEWS_BASE "," VS("'http':[{'directResponse':{'status':204}}]"), 1 },
		{ "redirect", REVIEWS_BASE "," VS("'http':[{'redirect':{'uri':'/x'}}]"), 1 },
		{ "DR connectionPool.http, no VS",
		  REVIEWS_BASE "," DR("{'connectionPool':{'http':{'maxRetries':1}}}", ""), 1 },
		{ "DR outlierDetection, no VS", REVIEWS_BASE "," DR("{'outlierDetection':{}}", ""), 1 },
		{ "outlier in a subset the routes reach",
		  REVIEWS_BASE "," DR("{}", ",'trafficPolicy':{'outlierDetection':{}}") ","
		  VS("'http':[{" SPLIT "}]"), 1 },
		{ "outlier in a subset no route reaches",
		  REVIEWS_BASE "," DR("{}", ",'trafficPolicy':{'outlierDetection':{}}"), 0 },
		{ "outlier DR on a TCP port",
		  SE("reviews", "prod", "198.19.0.10", 9080, "TCP", "reviews") ","
		  DR("{'outlierDetection':{}}", "") "," VS("'http':[{'timeout':'1s'," SPLIT "}]"), 0 },
		{ "http rules after a catch-all do not count", REVIEWS_BASE "," DR("{}", "") ","
		  VS("'http':[{" SPLIT "},{'timeout':'1s'," SPLIT "}]"), 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *log;
		struct bm_l7_config *c = build(load("[%s]", cases[i].res), &log);
		int got = bm_l7_is_l7(c, inet_addr("198.19.0.10"), 9080);

		if (got != cases[i].l7)
			fprintf(stderr, "\n  case \"%s\": is_l7 %d, want %d\n", cases[i].name, got,
				cases[i].l7);
		CU_ASSERT_EQUAL(got, cases[i].l7);
		CU_ASSERT_EQUAL(c->n_svc, (size_t)cases[i].l7);
		if (!cases[i].l7) {
			CU_ASSERT_EQUAL(c->n_cluster, 0); /* nothing left of an L4 service */
			CU_ASSERT_EQUAL(count_lines(log, "subset"), 0);
		}
		free(log);
		bm_l7_put(c);
	}
}

/* ---- routes ------------------------------------------------------------------------------- */

static void test_route_matches(void)
{
	char *log;
	struct bm_l7_config *c = build(load(
		"[" REVIEWS_BASE "," DR("{}", "") "," VS(
		"'http':[{'name':'one','match':[{'name':'m0','uri':{'exact':'/A'},'ignoreUriCase':true,"
		"'method':{'exact':'GET'},'headers':{'X-Up':{'prefix':'a'},'x-any':{},"
		"'x-star':{'regex':'*'},'x-re':{'regex':'v[0-9]+'},'uri':{'exact':'/ignored'}},"
		"'withoutHeaders':{'X-Not':{}},'queryParams':{'Q':{'exact':''}},"
		"'sourceLabels':{'app':'productpage'},'sourceNamespace':'web','port':9080},"
		"{'authority':{'prefix':'rev'},'scheme':{'exact':'http'}}],"
		"'route':[{'destination':{'host':'reviews','subset':'v2'}}]},"
		"{'match':[{'headers':{'bad':{'regex':'('}}}],'route':[{'destination':{'host':'reviews'}}]},"
		"{'match':[{'uri':{'regex':'/r/.*'}}],'route':[{'destination':{'host':'reviews'}}]},"
		"{'route':[{'destination':{'host':'reviews','subset':'v1'}}]},"
		"{'match':[{'uri':{'prefix':'/never'}}],'route':[{'destination':{'host':'reviews'}}]}]")
		"]"), &log);
	const struct bm_l7_service *s = svc(c, "198.19.0.10", 9080);
	const struct bm_l7_match *m;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	/* The bad regex rule is left out (warned), the rule after the
	 * catch-all is unreachable: one, regex, catch-all. */
	CU_ASSERT_EQUAL_FATAL(s->n_route, 3);
	CU_ASSERT_EQUAL(count_lines(log, "VirtualService prod/reviews: match.headers[bad]"), 1);
	CU_ASSERT_EQUAL(count_lines(log, "http[1] left out"), 1);
	CU_ASSERT_EQUAL(count_lines(log, "never reached"), 1);
	CU_ASSERT_STRING_EQUAL(s->route[0].name, "one");
	CU_ASSERT_STRING_EQUAL(s->route[1].name, "");
	CU_ASSERT_EQUAL(s->route[1].match[0].uri.kind, BM_SM_REGEX);
	CU_ASSERT_PTR_NOT_NULL(s->route[1].match[0].uri.re);
	CU_ASSERT_EQUAL(s->route[2].n_match, 0);
	CU_ASSERT_STRING_EQUAL(s->route[2].dest[0].c->subset, "v1");

	CU_ASSERT_EQUAL_FATAL(s->route[0].n_match, 2);
	m = &s->route[0].match[0];
	CU_ASSERT_STRING_EQUAL(m->name, "m0");
	CU_ASSERT_EQUAL(m->uri.kind, BM_SM_EXACT);
	CU_ASSERT_EQUAL(m->uri.icase, 1);
	CU_ASSERT_EQUAL(m->method.kind, BM_SM_EXACT);
	CU_ASSERT_EQUAL(m->method.icase, 0);
	CU_ASSERT_EQUAL(m->authority.kind, BM_SM_NONE);
	/* Names lower-cased, {} and regex "*" are presence, "uri" ignored. */
	CU_ASSERT_EQUAL_FATAL(m->n_headers, 4);
	for (size_t i = 0; i < m->n_headers; i++) {
		const struct bm_l7_kvmatch *h = &m->headers[i];

		if (!strcmp(h->name, "x-up")) {
			CU_ASSERT_EQUAL(h->m.kind, BM_SM_PREFIX);
		} else if (!strcmp(h->name, "x-any") || !strcmp(h->name, "x-star")) {
			CU_ASSERT_EQUAL(h->m.kind, BM_SM_PRESENT);
		} else if (!strcmp(h->name, "x-re")) {
			CU_ASSERT_EQUAL(h->m.kind, BM_SM_REGEX);
		} else {
			CU_FAIL("unexpected header matcher");
		}
	}
	CU_ASSERT_EQUAL_FATAL(m->n_without_headers, 1);
	CU_ASSERT_STRING_EQUAL(m->without_headers[0].name, "x-not");
	CU_ASSERT_EQUAL(m->without_headers[0].m.kind, BM_SM_PRESENT);
	CU_ASSERT_EQUAL_FATAL(m->n_query, 1);
	CU_ASSERT_STRING_EQUAL(m->query[0].name, "Q"); /* query names as given */
	CU_ASSERT_EQUAL(m->query[0].m.kind, BM_SM_EXACT);
	CU_ASSERT_EQUAL_FATAL(m->n_source_labels, 1);
	CU_ASSERT_STRING_EQUAL(m->source_labels[0].key, "app");
	CU_ASSERT_STRING_EQUAL(m->source_labels[0].value, "productpage");
	CU_ASSERT_STRING_EQUAL(m->source_namespace, "web");
	CU_ASSERT_EQUAL(m->port, 9080);
	m = &s->route[0].match[1];
	CU_ASSERT_EQUAL(m->authority.kind, BM_SM_PREFIX);
	CU_ASSERT_EQUAL(m->scheme.kind, BM_SM_EXACT);
	CU_ASSERT_PTR_NULL(m->source_namespace);
	CU_ASSERT_EQUAL(m->port, 0);
	free(log);
	bm_l7_put(c);
}

static void test_weights(void)
{
	struct bm_l7_config *c = build(load(
		"[" REVIEWS_BASE "," DR("{}", "") "," VS(
		"'http':[{'match':[{'uri':{'prefix':'/a'}}],'route':["
		"{'destination':{'host':'reviews','subset':'v1'},'weight':0},"
		"{'destination':{'host':'reviews','subset':'v2'},'weight':3},"
		"{'destination':{'host':'reviews'},'weight':1}]},"
		"{'route':[{'destination':{'host':'reviews','subset':'v1'},'weight':0}]}]") "]"), NULL);
	const struct bm_l7_service *s = svc(c, "198.19.0.10", 9080);

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(s->n_route, 2);
	CU_ASSERT_EQUAL_FATAL(s->route[0].n_dest, 2); /* the 0-weight one dropped */
	CU_ASSERT_STRING_EQUAL(s->route[0].dest[0].c->subset, "v2");
	CU_ASSERT_EQUAL(s->route[0].dest[0].weight, 3);
	CU_ASSERT_STRING_EQUAL(s->route[0].dest[1].c->subset, "");
	CU_ASSERT_EQUAL(s->route[0].dest[1].c->n, 2);
	CU_ASSERT_EQUAL(s->route[0].total_weight, 4);
	/* A lone destination gets everything, even at weight 0. */
	CU_ASSERT_EQUAL_FATAL(s->route[1].n_dest, 1);
	CU_ASSERT(s->route[1].dest[0].weight > 0);
	CU_ASSERT_EQUAL(s->route[1].total_weight, s->route[1].dest[0].weight);
	/* v2, the whole service, v1 (from the second route only). */
	CU_ASSERT_EQUAL(c->n_cluster, 3);
	bm_l7_put(c);
}

static void test_route_actions(void)
{
	struct bm_l7_config *c = build(load(
		"[" REVIEWS_BASE "," DR("{}", "") "," VS(
		"'http':["
		"{'match':[{'uri':{'prefix':'/r'}}],'redirect':{'uri':'/new','authority':'b.example',"
		" 'scheme':'https','port':8443,'redirectCode':308}},"
		"{'match':[{'uri':{'prefix':'/d'}}],'redirect':{'uri':'/x','derivePort':"
		" 'FROM_REQUEST_PORT'}},"
		"{'match':[{'uri':{'prefix':'/s'}}],'directResponse':{'status':503,'body':{'string':'down'}}},"
		"{'match':[{'uri':{'prefix':'/b'}}],'directResponse':{'status':200,'body':{'bytes':'aGk='}}},"
		"{'match':[{'uri':{'prefix':'/w'}}],'rewrite':{'uri':'/v2','authority':'new.host'},"
		" 'timeout':'1500ms','headers':{'request':{'set':{'X-A':'1'},'add':{'x-b':'2'},"
		" 'remove':['X-C']},'response':{'remove':['server']}},"
		" 'route':[{'destination':{'host':'reviews','subset':'v1'},'weight':1,"
		"  'headers':{'response':{'set':{'x-d':'3'}}}},"
		"  {'destination':{'host':'reviews','subset':'v2'},'weight':1}]},"
		"{'match':[{'uri':{'prefix':'/z'}}],'retries':{'attempts':0},"
		" 'route':[{'destination':{'host':'reviews'}}]},"
		"{'retries':{'attempts':4,'retryOn':'gateway-error,503,409','retryIgnorePreviousHosts':false,"
		" 'backoff':'100ms'},'route':[{'destination':{'host':'reviews'}}]}]") "]"), NULL);
	const struct bm_l7_service *s = svc(c, "198.19.0.10", 9080);
	const struct bm_l7_route *r;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(s->n_route, 7);
	r = &s->route[0];
	CU_ASSERT_EQUAL(r->redirect.code, 308);
	CU_ASSERT_STRING_EQUAL(r->redirect.uri, "/new");
	CU_ASSERT_STRING_EQUAL(r->redirect.authority, "b.example");
	CU_ASSERT_STRING_EQUAL(r->redirect.scheme, "https");
	CU_ASSERT_EQUAL(r->redirect.port, 8443);
	CU_ASSERT_EQUAL(r->n_dest, 0);
	r = &s->route[1];
	CU_ASSERT_EQUAL(r->redirect.code, 301); /* default */
	CU_ASSERT_PTR_NULL(r->redirect.authority);
	CU_ASSERT_EQUAL(r->redirect.derive_port, 2);
	r = &s->route[2];
	CU_ASSERT_EQUAL(r->redirect.code, 0);
	CU_ASSERT_EQUAL(r->direct.status, 503);
	CU_ASSERT_EQUAL(r->direct.body_len, 4);
	CU_ASSERT_STRING_EQUAL(r->direct.body, "down");
	r = &s->route[3];
	CU_ASSERT_EQUAL(r->direct.body_len, 2); /* base64 bytes decoded */
	CU_ASSERT_EQUAL(memcmp(r->direct.body, "hi", 2), 0);
	r = &s->route[4];
	CU_ASSERT_STRING_EQUAL(r->rewrite_uri, "/v2");
	CU_ASSERT_STRING_EQUAL(r->rewrite_authority, "new.host");
	CU_ASSERT_EQUAL(r->timeout_ms, 1500);
	CU_ASSERT_EQUAL_FATAL(r->req.n_set, 1);
	CU_ASSERT_STRING_EQUAL(r->req.set[0].name, "x-a");
	CU_ASSERT_STRING_EQUAL(r->req.set[0].value, "1");
	CU_ASSERT_EQUAL_FATAL(r->req.n_add, 1);
	CU_ASSERT_STRING_EQUAL(r->req.add[0].name, "x-b");
	CU_ASSERT_EQUAL_FATAL(r->req.n_remove, 1);
	CU_ASSERT_STRING_EQUAL(r->req.remove[0], "x-c");
	CU_ASSERT_EQUAL(r->resp.n_remove, 1);
	CU_ASSERT_EQUAL_FATAL(r->n_dest, 2);
	CU_ASSERT_EQUAL_FATAL(r->dest[0].resp.n_set, 1);
	CU_ASSERT_STRING_EQUAL(r->dest[0].resp.set[0].name, "x-d");
	CU_ASSERT_EQUAL(r->dest[1].resp.n_set, 0);
	r = &s->route[5];
	CU_ASSERT_EQUAL(r->retry.attempts, 0); /* attempts 0 disables */
	r = &s->route[6];
	CU_ASSERT_EQUAL(r->retry.attempts, 4);
	CU_ASSERT_EQUAL(r->retry.per_try_ms, 0);
	CU_ASSERT(r->retry.on & BM_RETRY_GATEWAY_ERROR);
	CU_ASSERT(r->retry.on & BM_RETRY_STATUS_CODES);
	CU_ASSERT_EQUAL(r->retry.n_codes, 2);
	CU_ASSERT_EQUAL(r->retry.ignore_previous_hosts, 0);
	CU_ASSERT_EQUAL(r->retry.backoff_base_ms, 100);
	bm_l7_put(c);
}

/* ---- cluster policy ------------------------------------------------------------------------ */

static void test_subset_policy_replaces_component(void)
{
	struct bm_l7_config *c = build(load(
		"[" REVIEWS_BASE ","
		DR("{'loadBalancer':{'simple':'ROUND_ROBIN'},'connectionPool':{'tcp':{'maxConnections':7,"
		   "'connectTimeout':'250ms'},'http':{'http1MaxPendingRequests':5,'idleTimeout':'30s'}},"
		   "'outlierDetection':{'minHealthPercent':30,'consecutive5xxErrors':2}}",
		   ",'trafficPolicy':{'connectionPool':{'http':{'http2MaxRequests':9}},"
		   "'loadBalancer':{'simple':'RANDOM'},'tls':{'mode':'ISTIO_MUTUAL'}}")
		"," VS("'http':[{'timeout':'1s'," SPLIT "}]") "]"), NULL);
	const struct bm_l7_cluster *v1 = cluster(c, "outbound|9080|v1|reviews.prod.svc.cluster.local");
	const struct bm_l7_cluster *v2 = cluster(c, "outbound|9080|v2|reviews.prod.svc.cluster.local");

	CU_ASSERT_PTR_NOT_NULL_FATAL(v1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(v2);
	/* v1: the top-level policy. */
	CU_ASSERT_EQUAL(v1->lb, BM_LB_ROUND_ROBIN);
	CU_ASSERT_EQUAL(v1->max_connections, 7);
	CU_ASSERT_EQUAL(v1->connect_timeout_ms, 250);
	CU_ASSERT_EQUAL(v1->max_pending, 5);
	CU_ASSERT_EQUAL(v1->max_requests, BM_L7_UNLIMITED);
	CU_ASSERT_EQUAL(v1->idle_timeout_ms, 30000);
	CU_ASSERT_EQUAL(v1->tls, -1);
	CU_ASSERT_EQUAL(v1->od.consecutive_5xx, 2);
	CU_ASSERT_EQUAL(v1->min_health, 30);
	/* v2: its connectionPool replaces the whole component (tcp and
	 * http settings of the top level are gone), lb and tls too;
	 * outlierDetection, which it does not set, is inherited. */
	CU_ASSERT_EQUAL(v2->lb, BM_LB_RANDOM);
	CU_ASSERT_EQUAL(v2->tls, 1);
	CU_ASSERT_EQUAL(v2->max_requests, 9);
	CU_ASSERT_EQUAL(v2->max_connections, BM_L7_UNLIMITED);
	CU_ASSERT_EQUAL(v2->max_pending, BM_L7_UNLIMITED);
	CU_ASSERT_EQUAL(v2->connect_timeout_ms, 10000);
	CU_ASSERT_EQUAL(v2->idle_timeout_ms, 3600000);
	CU_ASSERT_EQUAL(v2->od.enabled, 1);
	CU_ASSERT_EQUAL(v2->od.consecutive_5xx, 2);
	CU_ASSERT_EQUAL(v2->min_health, 30);
	CU_ASSERT_EQUAL_FATAL(v2->n, 1);
	CU_ASSERT_EQUAL(v2->b[0].mesh, 1); /* ISTIO_MUTUAL: reach it over the mesh */
	bm_l7_put(c);
}

static void test_port_level_settings(void)
{
	struct bm_l7_config *c = build(load(
		"[" REVIEWS_BASE ","
		DR("{'loadBalancer':{'simple':'ROUND_ROBIN'},'outlierDetection':{'interval':'1s'},"
		   "'portLevelSettings':[{'port':{'number':9080},'connectionPool':{'http':"
		   "{'maxRetries':4}}},{'port':{'number':1},'outlierDetection':{}}]}",
		   ",'trafficPolicy':{'loadBalancer':{'simple':'RANDOM'},'portLevelSettings':["
		   "{'port':{'number':9080},'outlierDetection':{'maxEjectionPercent':40}}]}")
		"," VS("'http':[{'timeout':'1s'," SPLIT "}]") "]"), NULL);
	const struct bm_l7_cluster *v1 = cluster(c, "outbound|9080|v1|reviews.prod.svc.cluster.local");
	const struct bm_l7_cluster *v2 = cluster(c, "outbound|9080|v2|reviews.prod.svc.cluster.local");

	CU_ASSERT_PTR_NOT_NULL_FATAL(v1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(v2);
	/* The port entry replaces the top level wholesale: its unset
	 * components get defaults, not the top-level values. */
	CU_ASSERT_EQUAL(v1->max_retries, 4);
	CU_ASSERT_EQUAL(v1->lb, BM_LB_LEAST_REQUEST);
	CU_ASSERT_EQUAL(v1->od.enabled, 0);
	CU_ASSERT_EQUAL(v1->min_health, 50);
	/* A subset's own port entry replaces all four components. */
	CU_ASSERT_EQUAL(v2->lb, BM_LB_LEAST_REQUEST);
	CU_ASSERT_EQUAL(v2->od.enabled, 1);
	CU_ASSERT_EQUAL(v2->od.max_ejection_pct, 40);
	CU_ASSERT_EQUAL(v2->max_retries, BM_L7_UNLIMITED);
	bm_l7_put(c);
}

static void test_outlier_defaults(void)
{
	static const struct {
		const char *od;
		uint8_t enabled, min_health, pct;
		uint32_t c5xx, gw, interval, base, max;
		unsigned deprecation;
	} cases[] = {
		{ "{}", 1, 0, 10, 5, 0, 10000, 30000, 300000, 0 },
		{ "{'consecutive5xxErrors':0,'consecutiveGatewayErrors':2}", 1, 0, 10, 0, 2, 10000,
		  30000, 300000, 0 },
		{ "{'consecutiveErrors':4}", 1, 0, 10, 5, 4, 10000, 30000, 300000, 1 },
		{ "{'consecutiveErrors':4,'consecutiveGatewayErrors':6}", 1, 0, 10, 5, 6, 10000, 30000,
		  300000, 0 },
		{ "{'baseEjectionTime':'400s','interval':'2s','maxEjectionPercent':100,"
		  "'minHealthPercent':20}", 1, 20, 100, 5, 0, 2000, 400000, 400000, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *log;
		struct bm_l7_config *c = build(load(
			"[" REVIEWS_BASE "," DR("{'outlierDetection':%s}", "") "]", cases[i].od), &log);
		const struct bm_l7_cluster *cl = cluster(c, "outbound|9080||reviews.prod.svc.cluster.local");

		CU_ASSERT_PTR_NOT_NULL_FATAL(cl);
		CU_ASSERT_EQUAL(cl->od.enabled, cases[i].enabled);
		CU_ASSERT_EQUAL(cl->min_health, cases[i].min_health);
		CU_ASSERT_EQUAL(cl->od.max_ejection_pct, cases[i].pct);
		CU_ASSERT_EQUAL(cl->od.consecutive_5xx, cases[i].c5xx);
		CU_ASSERT_EQUAL(cl->od.consecutive_gw, cases[i].gw);
		CU_ASSERT_EQUAL(cl->od.interval_ms, cases[i].interval);
		CU_ASSERT_EQUAL(cl->od.base_ejection_ms, cases[i].base);
		CU_ASSERT_EQUAL(cl->od.max_ejection_ms, cases[i].max);
		CU_ASSERT_EQUAL(count_lines(log, "DestinationRule prod/reviews: outlierDetection."
					    "consecutiveErrors is deprecated"), cases[i].deprecation);
		free(log);
		bm_l7_put(c);
	}
}

/* ---- lifetime, counters, lookup ---------------------------------------------------------- */

static void test_rt_survives_rebuilds(void)
{
	const char *res = "[" REVIEWS_BASE "," DR("{}", "") "," VS("'http':[{'timeout':'1s'," SPLIT "}]") "]";
	struct bm_l7_config *a = build(load("%s", res), NULL);
	struct bm_l7_config *b = build(load("%s", res), NULL);
	struct bm_l7_config *other = build(load(
		"[" SE("ratings", "prod", "198.19.0.11", 9080, "HTTP", "ratings") ","
		"{'kind':'VirtualService','metadata':{'name':'ratings','namespace':'prod'},"
		"'spec':{'hosts':['ratings'],'http':[{'timeout':'2s','route':[{'destination':"
		"{'host':'ratings'}}]}]}}]"), NULL);
	const struct bm_l7_cluster *a1 = cluster(a, "outbound|9080|v1|reviews.prod.svc.cluster.local");
	const struct bm_l7_cluster *a2 = cluster(a, "outbound|9080|v2|reviews.prod.svc.cluster.local");
	const struct bm_l7_cluster *b1 = cluster(b, "outbound|9080|v1|reviews.prod.svc.cluster.local");
	const struct bm_l7_cluster *o = cluster(other, "outbound|9080||ratings.prod.svc.cluster.local");

	CU_ASSERT_PTR_NOT_NULL_FATAL(a1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(o);
	CU_ASSERT_PTR_NOT_EQUAL(a1, b1);
	CU_ASSERT_PTR_EQUAL(a1->rt, b1->rt);
	CU_ASSERT_PTR_NOT_EQUAL(a1->rt, a2->rt);
	CU_ASSERT_PTR_NOT_EQUAL(a1->rt, o->rt);
	__atomic_add_fetch(&a1->rt->requests, 1, __ATOMIC_RELAXED);
	/* /metrics reads every cluster's breaker state, sorted by name */
	__atomic_add_fetch(&a2->rt->overflow_pending, 3, __ATOMIC_RELAXED);
	{
		size_t n = bm_l7_breaker_stats(NULL, 0), seen = 0;
		struct bm_l7_breaker_stat *st = calloc(n, sizeof(*st));

		CU_ASSERT_FATAL(n >= 3 && st != NULL);
		CU_ASSERT_EQUAL(bm_l7_breaker_stats(st, n), n);
		for (size_t i = 0; i < n; i++) {
			if (i)
				CU_ASSERT(strcmp(st[i - 1].cluster, st[i].cluster) < 0);
			if (!strcmp(st[i].cluster, a1->name)) {
				seen++;
				CU_ASSERT_EQUAL(st[i].requests, 1);
			}
			if (!strcmp(st[i].cluster, a2->name)) {
				seen++;
				CU_ASSERT_EQUAL(st[i].overflow_pending, 3);
			}
			if (!strcmp(st[i].cluster, o->name))
				seen++;
		}
		CU_ASSERT_EQUAL(seen, 3);
		/* a short buffer gets the first ones and the full count */
		CU_ASSERT_EQUAL(bm_l7_breaker_stats(st, 1), n);
		free(st);
	}
	__atomic_sub_fetch(&a2->rt->overflow_pending, 3, __ATOMIC_RELAXED);
	bm_l7_put(a);
	/* The old configuration is gone; its in-flight count is not. */
	CU_ASSERT_EQUAL(b1->rt->requests, 1);
	__atomic_sub_fetch(&b1->rt->requests, 1, __ATOMIC_RELAXED);
	bm_l7_put(b);
	bm_l7_put(other);
}

static void test_refcount(void)
{
	struct bm_l7_config *c = build(load("[%s]", SEED01), NULL);
	const struct bm_l7_service *s;

	bm_l7_get(c);
	bm_l7_get(c);
	CU_ASSERT_EQUAL(c->refs, 3);
	bm_l7_put(c);
	bm_l7_put(c);
	/* Still usable with the last reference (ASan would flag a free). */
	s = svc(c, "198.19.0.10", 9080);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(s->route[0].match[0].headers[0].m.s, "jason");
	bm_l7_put(c); /* frees everything: the leak checker sees the rest */
	bm_l7_put(NULL);
}

static void test_find_many_services(void)
{
	static char buf[60000];
	size_t off = 0;
	struct bm_l7_config *c;

	off += snprintf(buf + off, sizeof(buf) - off, "[");
	for (int i = 0; i < 60; i++)
		off += snprintf(buf + off, sizeof(buf) - off,
				"%s{'kind':'ServiceEntry','metadata':{'name':'s%d','namespace':'n'},"
				"'spec':{'hosts':['s%d'],'addresses':['198.19.%d.%d'],'ports':["
				"{'number':80,'name':'a'},{'number':%d,'name':'b'}]}},"
				"{'kind':'VirtualService','metadata':{'name':'s%d','namespace':'n'},"
				"'spec':{'hosts':['s%d'],'http':[{'timeout':'1s','route':["
				"{'destination':{'host':'s%d','port':{'number':80}}}]}]}}",
				i ? "," : "", i, i, 200 - i, i * 3 % 256, 8000 + i, i, i, i);
	snprintf(buf + off, sizeof(buf) - off, "]");
	c = build(load("%s", buf), NULL);
	CU_ASSERT_EQUAL(c->n_svc, 120);
	for (int i = 0; i < 60; i++) {
		char vip[32];
		const struct bm_l7_service *s;

		snprintf(vip, sizeof(vip), "198.19.%d.%d", 200 - i, i * 3 % 256);
		s = svc(c, vip, 80);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT_EQUAL(s->port, 80);
		CU_ASSERT_EQUAL(s->vip, inet_addr(vip));
		s = svc(c, vip, (uint16_t)(8000 + i));
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT_EQUAL(s->port, 8000 + i);
		CU_ASSERT_PTR_NULL(svc(c, vip, 81));
	}
	CU_ASSERT_PTR_NULL(svc(c, "10.0.0.1", 80));
	CU_ASSERT_PTR_NULL(bm_l7_find(NULL, 0, 0));
	bm_l7_put(c);
}

/* The L7 cluster of a name has the kernel cluster's backends and policy. */
static void test_clusters_agree_with_model(void)
{
	const char *res = "[" REVIEWS_BASE ","
		WE("r3", "prod", "198.18.2.3", "reviews", "v2", AMBIENT ",'x':'y'") ","
		DR("{'loadBalancer':{'simple':'ROUND_ROBIN'},'outlierDetection':{'minHealthPercent':25}}",
		   ",'trafficPolicy':{'tls':{'mode':'DISABLE'}}")
		"," VS("'http':[{'timeout':'1s'," SPLIT "}]") "]";
	struct bm_l7_config *c = build(load("%s", res), NULL);
	struct bm_model m;
	FILE *devnull = fopen("/dev/null", "w");
	json_t *j = load("%s", res);

	CU_ASSERT_EQUAL_FATAL(bm_model_build(j, &m, devnull), 0);
	CU_ASSERT_EQUAL_FATAL(m.n_svc, 1);
	for (uint32_t i = 0; i < m.svc[0].n_dests; i++) {
		const struct bm_m_cluster *k = m.svc[0].d[i].c;
		const struct bm_l7_cluster *l = cluster(c, k->name);

		CU_ASSERT_PTR_NOT_NULL_FATAL(l);
		CU_ASSERT_EQUAL(l->lb, k->lb);
		CU_ASSERT_EQUAL(l->min_health, k->min_health);
		CU_ASSERT_EQUAL(l->tls, k->tls);
		CU_ASSERT_EQUAL_FATAL(l->n, k->n);
		for (uint32_t b = 0; b < k->n; b++) {
			CU_ASSERT_EQUAL(l->b[b].ip, k->b[b].ip);
			CU_ASSERT_EQUAL(l->b[b].port, k->b[b].port);
			CU_ASSERT_EQUAL(l->b[b].mesh, k->b[b].mesh);
		}
	}
	/* v2 under tls DISABLE: the ambient workload is reached in plaintext. */
	CU_ASSERT_EQUAL(cluster(c, "outbound|9080|v2|reviews.prod.svc.cluster.local")->n, 2);
	CU_ASSERT_EQUAL(cluster(c, "outbound|9080|v2|reviews.prod.svc.cluster.local")->b[1].mesh, 0);
	bm_model_free(&m);
	json_decref(j);
	fclose(devnull);
	bm_l7_put(c);
}

BM_SUITE(l7model,
	 BM_CASE(test_seed01_header_routing),
	 BM_CASE(test_seed03_resilience),
	 BM_CASE(test_seed04_fault),
	 BM_CASE(test_fault_percent_forms),
	 BM_CASE(test_seed04_mirror),
	 BM_CASE(test_mirror_percentages),
	 BM_CASE(test_unknown_subset_null_cluster),
	 BM_CASE(test_which_services_are_l7),
	 BM_CASE(test_route_matches),
	 BM_CASE(test_weights),
	 BM_CASE(test_route_actions),
	 BM_CASE(test_subset_policy_replaces_component),
	 BM_CASE(test_port_level_settings),
	 BM_CASE(test_clusters_agree_with_model),
	 BM_CASE(test_outlier_defaults),
	 BM_CASE(test_rt_survives_rebuilds),
	 BM_CASE(test_refcount),
	 BM_CASE(test_find_many_services))
