/* Resources -> per-VIP services, clusters and selection tables. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "unit.h"
#include "../../agent/model.h"

#define SE_REVIEWS                                                                          \
	"{\"kind\":\"ServiceEntry\",\"metadata\":{\"name\":\"reviews\",\"namespace\":\"prod\"," \
	"\"creationTimestamp\":\"2026-01-01T00:00:00Z\"},\"spec\":{\"hosts\":[\"reviews\"],"   \
	"\"addresses\":[\"198.19.0.10\"],\"ports\":[{\"number\":9080,\"name\":\"tcp\","         \
	"\"protocol\":\"TCP\",\"targetPort\":8080}],\"workloadSelector\":{\"labels\":"          \
	"{\"app\":\"reviews\"}}}}"

#define WE(name, ns, ip, version, extra)                                                     \
	"{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns \
	"\"},\"spec\":{\"address\":\"" ip "\",\"labels\":{\"app\":\"reviews\",\"version\":\"" \
	version "\"}" extra "}}"

static const char *const WES =
	"{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"r1\",\"namespace\":\"prod\"},"
	"\"spec\":{\"address\":\"198.18.1.2\",\"labels\":{\"app\":\"reviews\",\"version\":\"v1\","
	"\"istio.io/dataplane-mode\":\"ambient\"}}}," WE("r2", "prod", "198.18.1.3", "v1", "") ","
	WE("r3", "prod", "198.18.2.2", "v2", ",\"ports\":{\"tcp\":9999}") ","
	WE("other-ns", "dev", "198.18.2.9", "v1", "");

static json_t *load(const char *fmt, ...)
{
	char buf[8192];
	va_list ap;
	json_t *j;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	j = json_loads(buf, 0, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	return j;
}

static struct bm_model build(json_t *res, unsigned *warnings)
{
	struct bm_model m;
	FILE *devnull = fopen("/dev/null", "w");

	CU_ASSERT_EQUAL_FATAL(bm_model_build(res, &m, devnull), 0);
	fclose(devnull);
	if (warnings)
		*warnings = m.warnings;
	json_decref(res);
	return m;
}

static void test_no_route_uses_whole_service(void)
{
	struct bm_model m = build(load("[%s,%s]", SE_REVIEWS, WES), NULL);
	struct bm_m_cluster *c;

	CU_ASSERT_EQUAL_FATAL(m.n_svc, 1);
	CU_ASSERT_EQUAL(m.svc[0].vip, inet_addr("198.19.0.10"));
	CU_ASSERT_EQUAL(m.svc[0].port, htons(9080));
	CU_ASSERT_STRING_EQUAL(m.svc[0].host, "reviews.prod.svc.cluster.local");
	CU_ASSERT_EQUAL_FATAL(m.svc[0].n_dests, 1);
	c = m.svc[0].d[0].c;
	/* Only the entry's namespace; targetPort, or the WorkloadEntry's named port. */
	CU_ASSERT_EQUAL(c->n, 3);
	CU_ASSERT_EQUAL(c->b[0].port, htons(8080));
	CU_ASSERT_EQUAL(c->b[2].port, htons(9999));
	CU_ASSERT_EQUAL(c->lb, BM_LB_LEAST_REQUEST); /* Istio's default */
	CU_ASSERT_EQUAL(c->min_health, 50);          /* Envoy's default without outlierDetection */
	CU_ASSERT_EQUAL(c->max_conns, 0);
	CU_ASSERT_STRING_EQUAL(c->name, "outbound|9080||reviews.prod.svc.cluster.local");
	bm_model_free(&m);
}

#define DR_REVIEWS(top, v2policy)                                                            \
	"{\"kind\":\"DestinationRule\",\"metadata\":{\"name\":\"reviews\",\"namespace\":\"prod\"}," \
	"\"spec\":{\"host\":\"reviews\",\"trafficPolicy\":" top ",\"subsets\":["                  \
	"{\"name\":\"v1\",\"labels\":{\"version\":\"v1\"}},"                                      \
	"{\"name\":\"v2\",\"labels\":{\"version\":\"v2\"}" v2policy "}]}}"

#define VS_SPLIT(w1, w2)                                                                     \
	"{\"kind\":\"VirtualService\",\"metadata\":{\"name\":\"reviews\",\"namespace\":\"prod\"}," \
	"\"spec\":{\"hosts\":[\"reviews\"],\"tcp\":[{\"route\":["                                 \
	"{\"destination\":{\"host\":\"reviews\",\"subset\":\"v1\"},\"weight\":" #w1 "},"         \
	"{\"destination\":{\"host\":\"reviews\",\"subset\":\"v2\"},\"weight\":" #w2 "}]}]}}"

static void test_weighted_subsets(void)
{
	struct bm_model m = build(load("[%s,%s,%s,%s]", SE_REVIEWS, WES,
				       DR_REVIEWS("{\"loadBalancer\":{\"simple\":\"ROUND_ROBIN\"}}", ""),
				       VS_SPLIT(90, 10)), NULL);
	struct bm_svc v;

	CU_ASSERT_EQUAL_FATAL(m.n_svc, 1);
	CU_ASSERT_EQUAL_FATAL(m.svc[0].n_dests, 2);
	CU_ASSERT_EQUAL(m.svc[0].d[0].weight, 90);
	CU_ASSERT_EQUAL(m.svc[0].d[1].weight, 10);
	CU_ASSERT_EQUAL(m.svc[0].d[0].c->n, 2);
	CU_ASSERT_EQUAL(m.svc[0].d[1].c->n, 1);
	CU_ASSERT_EQUAL(m.svc[0].d[0].c->lb, BM_LB_ROUND_ROBIN);
	CU_ASSERT_STRING_EQUAL(m.svc[0].d[1].c->name, "outbound|9080|v2|reviews.prod.svc.cluster.local");
	bm_model_svc_value(&m.svc[0], 7, 3, &v);
	CU_ASSERT_EQUAL(v.svc_id, 7);
	CU_ASSERT_EQUAL(v.rev, 3);
	CU_ASSERT_EQUAL(v.n_dests, 2);
	CU_ASSERT_EQUAL(v.total_weight, 100);
	CU_ASSERT_EQUAL(v.cum_weight[0], 90);
	CU_ASSERT_EQUAL(v.cum_weight[1], 100);
	bm_model_free(&m);
}

static void test_zero_weight_dropped(void)
{
	struct bm_model m = build(load("[%s,%s,%s,%s]", SE_REVIEWS, WES, DR_REVIEWS("{}", ""),
				       VS_SPLIT(0, 5)), NULL);

	CU_ASSERT_EQUAL_FATAL(m.svc[0].n_dests, 1);
	CU_ASSERT_STRING_EQUAL(m.svc[0].d[0].c->name, "outbound|9080|v2|reviews.prod.svc.cluster.local");
	bm_model_free(&m);
}

static void test_single_destination_weight_ignored(void)
{
	struct bm_model m = build(load("[%s,%s,%s,{\"kind\":\"VirtualService\",\"metadata\":{\"name\":\"r\","
				       "\"namespace\":\"prod\"},\"spec\":{\"hosts\":[\"reviews\"],\"http\":[{"
				       "\"route\":[{\"destination\":{\"host\":\"reviews\",\"subset\":\"v1\"},"
				       "\"weight\":0}]}]}}]",
				       SE_REVIEWS, WES, DR_REVIEWS("{}", "")), NULL);
	struct bm_svc v;

	CU_ASSERT_EQUAL_FATAL(m.svc[0].n_dests, 1);
	bm_model_svc_value(&m.svc[0], 1, 1, &v);
	CU_ASSERT(v.total_weight > 0);
	bm_model_free(&m);
}

static void test_subset_policy_replaces_component(void)
{
	struct bm_model m = build(
		load("[%s,%s,%s,%s]", SE_REVIEWS, WES,
		     DR_REVIEWS("{\"loadBalancer\":{\"simple\":\"ROUND_ROBIN\"},\"connectionPool\":{\"tcp\":"
				"{\"maxConnections\":7}},\"outlierDetection\":{\"minHealthPercent\":30}}",
				",\"trafficPolicy\":{\"loadBalancer\":{\"simple\":\"RANDOM\"},"
				"\"outlierDetection\":{}}"),
		     VS_SPLIT(50, 50)), NULL);
	struct bm_m_cluster *v1 = m.svc[0].d[0].c, *v2 = m.svc[0].d[1].c;

	CU_ASSERT_EQUAL(v1->lb, BM_LB_ROUND_ROBIN);
	CU_ASSERT_EQUAL(v1->max_conns, 7);
	CU_ASSERT_EQUAL(v1->min_health, 30);
	CU_ASSERT_EQUAL(v2->lb, BM_LB_RANDOM);  /* subset's component */
	CU_ASSERT_EQUAL(v2->max_conns, 7);      /* inherited: subset did not set it */
	CU_ASSERT_EQUAL(v2->min_health, 0);     /* whole component replaced: default 0 */
	bm_model_free(&m);
}

static void test_lb_names(void)
{
	static const struct { const char *simple; int lb; } cases[] = {
		{ "LEAST_CONN", BM_LB_LEAST_REQUEST }, { "LEAST_REQUEST", BM_LB_LEAST_REQUEST },
		{ "UNSPECIFIED", BM_LB_LEAST_REQUEST }, { "RANDOM", BM_LB_RANDOM },
		{ "ROUND_ROBIN", BM_LB_ROUND_ROBIN }, { "PASSTHROUGH", BM_LB_PASSTHROUGH },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char top[128];
		struct bm_model m;

		snprintf(top, sizeof(top), "{\"loadBalancer\":{\"simple\":\"%s\"}}", cases[i].simple);
		m = build(load("[%s,%s,{\"kind\":\"DestinationRule\",\"metadata\":{\"name\":\"d\","
			       "\"namespace\":\"prod\"},\"spec\":{\"host\":\"reviews.prod.svc.cluster.local\","
			       "\"trafficPolicy\":%s}}]", SE_REVIEWS, WES, top), NULL);
		CU_ASSERT_EQUAL(m.svc[0].d[0].c->lb, cases[i].lb);
		bm_model_free(&m);
	}
}

static void test_missing_subset_refuses(void)
{
	unsigned warnings;
	struct bm_model m = build(load("[%s,%s,%s]", SE_REVIEWS, WES, VS_SPLIT(50, 50)), &warnings);

	CU_ASSERT_EQUAL_FATAL(m.svc[0].n_dests, 2);
	CU_ASSERT_EQUAL(m.svc[0].d[0].c->n, 0);
	CU_ASSERT_EQUAL(m.svc[0].d[1].c->n, 0);
	CU_ASSERT_EQUAL(warnings, 2);
	bm_model_free(&m);
}

static void test_route_to_other_service(void)
{
	/* A VS on the VIP's host may send traffic to another ServiceEntry. */
	struct bm_model m = build(
		load("[{\"kind\":\"ServiceEntry\",\"metadata\":{\"name\":\"api\",\"namespace\":\"prod\"},"
		     "\"spec\":{\"hosts\":[\"api.example.com\"],\"addresses\":[\"198.19.0.20\"],"
		     "\"ports\":[{\"number\":80,\"name\":\"tcp\"}]}},%s,%s,"
		     "{\"kind\":\"VirtualService\",\"metadata\":{\"name\":\"api\",\"namespace\":\"prod\"},"
		     "\"spec\":{\"hosts\":[\"api.example.com\"],\"tcp\":[{\"route\":[{\"destination\":"
		     "{\"host\":\"reviews\"}}]}]}}]", SE_REVIEWS, WES), NULL);

	CU_ASSERT_EQUAL_FATAL(m.n_svc, 2);
	for (size_t i = 0; i < m.n_svc; i++) {
		if (m.svc[i].vip != inet_addr("198.19.0.20"))
			continue;
		CU_ASSERT_EQUAL(m.svc[i].d[0].c->n, 3); /* the only port of reviews */
		CU_ASSERT_EQUAL(m.svc[i].d[0].c->b[0].port, htons(8080));
	}
	bm_model_free(&m);
}

static void test_tcp_match_port(void)
{
	struct bm_model m = build(
		load("[%s,%s,%s,{\"kind\":\"VirtualService\",\"metadata\":{\"name\":\"r\",\"namespace\":\"prod\"},"
		     "\"spec\":{\"hosts\":[\"reviews\"],\"tcp\":[{\"match\":[{\"port\":1234}],\"route\":["
		     "{\"destination\":{\"host\":\"reviews\",\"subset\":\"v2\"}}]},{\"route\":["
		     "{\"destination\":{\"host\":\"reviews\",\"subset\":\"v1\"}}]}]}}]",
		     SE_REVIEWS, WES, DR_REVIEWS("{}", "")), NULL);

	CU_ASSERT_STRING_EQUAL(m.svc[0].d[0].c->name, "outbound|9080|v1|reviews.prod.svc.cluster.local");
	bm_model_free(&m);
}

static void test_duplicate_vip_oldest_wins(void)
{
	unsigned warnings;
	struct bm_model m = build(
		load("[{\"kind\":\"ServiceEntry\",\"metadata\":{\"name\":\"newer\",\"namespace\":\"prod\","
		     "\"creationTimestamp\":\"2026-02-01T00:00:00Z\"},\"spec\":{\"hosts\":[\"x\"],"
		     "\"addresses\":[\"198.19.0.10\"],\"ports\":[{\"number\":9080,\"name\":\"tcp\"}]}},%s]",
		     SE_REVIEWS), &warnings);

	CU_ASSERT_EQUAL(m.n_svc, 1);
	CU_ASSERT_STRING_EQUAL(m.svc[0].host, "reviews.prod.svc.cluster.local");
	CU_ASSERT_EQUAL(warnings, 1);
	bm_model_free(&m);
}

static void test_mesh_flag(void)
{
	/* r1 is an ambient workload; r2, r3 are not. DR tls overrides. */
	static const struct { const char *tls; int r1, r2; } cases[] = {
		{ "", 1, 0 },                                   /* auto mTLS */
		{ ",\"tls\":{\"mode\":\"DISABLE\"}", 0, 0 },
		{ ",\"tls\":{\"mode\":\"ISTIO_MUTUAL\"}", 1, 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_model m = build(
			load("[%s,%s,%s,{\"kind\":\"DestinationRule\",\"metadata\":{\"name\":\"d\","
			     "\"namespace\":\"prod\"},\"spec\":{\"host\":\"reviews\",\"trafficPolicy\":"
			     "{\"loadBalancer\":{\"simple\":\"RANDOM\"}%s}}}]",
			     SE_REVIEWS, WES,
			     WE("r9", "prod", "198.18.1.9", "v1", ""), cases[i].tls), NULL);
		struct bm_m_cluster *c = m.svc[0].d[0].c;

		for (uint32_t b = 0; b < c->n; b++) {
			if (c->b[b].ip == inet_addr("198.18.1.2"))
				CU_ASSERT_EQUAL(c->b[b].mesh, cases[i].r1);
			if (c->b[b].ip == inet_addr("198.18.1.3"))
				CU_ASSERT_EQUAL(c->b[b].mesh, cases[i].r2);
		}
		bm_model_free(&m);
	}
}

/* An entry with n inline endpoints 198.18.(i / 250).(i % 250 + 1):8080. */
static json_t *many_endpoints(unsigned n)
{
	json_t *se = load("[%s]", SE_REVIEWS), *eps = json_array();
	json_t *spec = json_object_get(json_array_get(se, 0), "spec");
	char ip[32];

	json_object_del(spec, "workloadSelector");
	for (unsigned i = 0; i < n; i++) {
		snprintf(ip, sizeof(ip), "198.18.%u.%u", i / 250, i % 250 + 1);
		json_array_append_new(eps, json_pack("{s:s}", "address", ip));
	}
	json_object_set_new(spec, "endpoints", eps);
	return se;
}

/* More endpoints than one kernel cluster entry holds are all kept (the
 * reconciler spreads them over several entries), up to BM_M_MAX_BACKENDS. */
static void test_many_endpoints(void)
{
	struct bm_model m = build(many_endpoints(200), NULL);
	struct bm_m_cluster *c;

	CU_ASSERT_EQUAL_FATAL(m.n_svc, 1);
	c = m.svc[0].d[0].c;
	CU_ASSERT_EQUAL(c->n, 200);
	CU_ASSERT_EQUAL(c->b[199].ip, inet_addr("198.18.0.200"));
	CU_ASSERT_EQUAL(c->b[199].port, htons(8080));
	CU_ASSERT_TRUE(c->key.ok);
	bm_model_free(&m);

	m = build(many_endpoints(BM_M_MAX_BACKENDS + 10), NULL);
	CU_ASSERT_EQUAL_FATAL(m.n_svc, 1);
	CU_ASSERT_EQUAL(m.svc[0].d[0].c->n, BM_M_MAX_BACKENDS);
	CU_ASSERT_FALSE(m.svc[0].d[0].c->key.ok); /* built anew, so the log line comes back */
	bm_model_free(&m);
}

static void test_hosts(void)
{
	char out[256];

	bm_fqdn("reviews", "prod", out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "reviews.prod.svc.cluster.local");
	bm_fqdn("Search-API.example.com", "prod", out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "search-api.example.com");
	CU_ASSERT_TRUE(bm_host_matches("*.example.com", "a.example.com"));
	CU_ASSERT_FALSE(bm_host_matches("*.example.com", "example.com"));
	CU_ASSERT_TRUE(bm_host_matches("*", "anything"));
	CU_ASSERT_FALSE(bm_host_matches("a.example.com", "b.example.com"));
}

BM_SUITE(model, BM_CASE(test_no_route_uses_whole_service), BM_CASE(test_weighted_subsets),
	 BM_CASE(test_zero_weight_dropped), BM_CASE(test_single_destination_weight_ignored),
	 BM_CASE(test_subset_policy_replaces_component), BM_CASE(test_lb_names),
	 BM_CASE(test_missing_subset_refuses), BM_CASE(test_route_to_other_service),
	 BM_CASE(test_tcp_match_port), BM_CASE(test_duplicate_vip_oldest_wins), BM_CASE(test_mesh_flag),
	 BM_CASE(test_many_endpoints), BM_CASE(test_hosts))
