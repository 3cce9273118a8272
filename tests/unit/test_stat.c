/* meshctl stat (cli/stat.c): the Prometheus text parser, histogram_quantile
 * as Prometheus computes it, rates from two scrapes (counter resets count
 * from zero), grouping by service and by workload, the reporter choice,
 * success as the non-5xx share; meshd's own rendering read back; the fetch
 * path against a fake node agent, and with none. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <jansson.h>
#include "unit.h"
#include "../../cli/stat.h"
#include "../../agent/agent.h"
#include "../../agent/l7proxy.h"
#include "../../agent/metrics.h"
#include "../../agent/relay.h"
#include "../../agent/reqmetrics.h"

#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

/* ------------------------------------------------------------ parser */

static void test_parse_samples(void)
{
	static const char text[] =
		"# HELP istio_requests_total Total requests.\n"
		"# TYPE istio_requests_total counter\n"
		"istio_requests_total{reporter=\"source\",destination_service=\"a\\\"b\\\\c\\nd\",response_code=\"200\"} 42\n"
		"\n"
		"  bpfmesh_ready 1\n"
		"x_bucket{le=\"+Inf\",} 7 1700000000000\n"
		"x_bucket { le = \"0.5\" } +Inf\n"
		"nan_gauge{a=\"\"} NaN\n"
		"neg{path=\"C:\\\\dir\",odd=\"\\t\"} -1.5e3";
	struct stat_expo e = {};
	char err[128] = "";

	CU_ASSERT_EQUAL_FATAL(stat_parse(text, &e, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL_FATAL(e.n, 6);
	CU_ASSERT_STRING_EQUAL(e.s[0].name, "istio_requests_total");
	CU_ASSERT_EQUAL(e.s[0].nl, 3);
	CU_ASSERT_EQUAL(e.s[0].value, 42);
	/* \" \\ \n unescaped; labels sorted by name */
	CU_ASSERT_STRING_EQUAL(stat_label(&e.s[0], "destination_service"), "a\"b\\c\nd");
	CU_ASSERT_STRING_EQUAL(e.s[0].l[0].name, "destination_service");
	CU_ASSERT_STRING_EQUAL(e.s[0].l[2].name, "response_code");
	CU_ASSERT_STRING_EQUAL(stat_label(&e.s[0], "reporter"), "source");
	CU_ASSERT_PTR_NULL(stat_label(&e.s[0], "le"));
	/* the key escapes again, so it is unambiguous */
	CU_ASSERT_STRING_EQUAL(e.s[0].key,
		"istio_requests_total{destination_service=\"a\\\"b\\\\c\\nd\",reporter=\"source\",response_code=\"200\"}");
	CU_ASSERT_STRING_EQUAL(e.s[1].name, "bpfmesh_ready");
	CU_ASSERT_EQUAL(e.s[1].nl, 0);
	CU_ASSERT_STRING_EQUAL(e.s[1].key, "bpfmesh_ready{}");
	CU_ASSERT_STRING_EQUAL(stat_label(&e.s[2], "le"), "+Inf");   /* trailing comma, timestamp */
	CU_ASSERT_EQUAL(e.s[2].value, 7);
	CU_ASSERT_STRING_EQUAL(stat_label(&e.s[3], "le"), "0.5");    /* blanks around */
	CU_ASSERT(isinf(e.s[3].value) && e.s[3].value > 0);
	CU_ASSERT(isnan(e.s[4].value));
	CU_ASSERT_STRING_EQUAL(stat_label(&e.s[4], "a"), "");
	CU_ASSERT_STRING_EQUAL(stat_label(&e.s[5], "path"), "C:\\dir");
	CU_ASSERT_STRING_EQUAL(stat_label(&e.s[5], "odd"), "\\t");   /* not an escape: kept */
	CU_ASSERT_EQUAL(e.s[5].value, -1500);
	stat_expo_free(&e);
}

static void test_parse_same_series_key(void)
{
	/* Label order does not make another series. */
	struct stat_expo e = {};

	CU_ASSERT_EQUAL_FATAL(stat_parse("m{b=\"2\",a=\"1\"} 1\nm{a=\"1\",b=\"2\"} 2\n"
					 "m{a=\"1\",b=\"2\",c=\"\"} 3\n", &e, NULL, 0), 0);
	CU_ASSERT_EQUAL_FATAL(e.n, 3);
	CU_ASSERT_STRING_EQUAL(e.s[0].key, e.s[1].key);
	CU_ASSERT_STRING_NOT_EQUAL(e.s[1].key, e.s[2].key);
	stat_expo_free(&e);
}

static void test_parse_errors(void)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ "ok 1\nm{a=\"x} 1\n", "line 2: label value not terminated" },
		{ "m{a=x} 1", "line 1: '\"' expected: label values are quoted" },
		{ "m{a=\"x\" b=\"y\"} 1", "line 1: ',' or '}' expected after a label" },
		{ "m{=\"x\"} 1", "line 1: label name expected" },
		{ "m{a \"x\"} 1", "line 1: '=' expected after the label name" },
		{ "m", "line 1: value expected" },
		{ "m{a=\"1\"}", "line 1: value expected" },
		{ "m one", "line 1: value is not a number" },
		{ "m 1 2 3", "line 1: unexpected text after the value" },
		{ "\n\n9m 1", "line 3: metric name expected" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct stat_expo e = {};
		char err[128] = "";

		CU_ASSERT_EQUAL(stat_parse(cases[i].text, &e, err, sizeof(err)), -EINVAL);
		if (strcmp(err, cases[i].want))
			fprintf(stderr, "\n%s: got \"%s\", want \"%s\"\n", cases[i].text, err,
				cases[i].want);
		CU_ASSERT_STRING_EQUAL(err, cases[i].want);
		stat_expo_free(&e);
	}
}

/* ------------------------------------------------------------ quantiles */

static void test_quantile_known_buckets(void)
{
	/* 10 observations in (1,5], 10 in (5,10]; given out of order. */
	static const struct stat_bucket b[] = {
		{ 10, 20 }, { 0.5, 0 }, { INFINITY, 20 }, { 1, 0 }, { 5, 10 },
	};
	static const struct { double q, want; } cases[] = {
		{ 0.50, 5.0 },          /* rank 10: the top of (1,5] */
		{ 0.25, 3.0 },          /* rank 5: half way through (1,5] */
		{ 0.95, 9.5 },          /* rank 19: 9 of 10 into (5,10] */
		{ 0.99, 9.9 },
		{ 1.00, 10.0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CU_ASSERT(NEAR(stat_histogram_quantile(cases[i].q, b, 5), cases[i].want));
	CU_ASSERT(isinf(stat_histogram_quantile(1.5, b, 5)));
	CU_ASSERT(isinf(stat_histogram_quantile(-0.5, b, 5)) &&
		  stat_histogram_quantile(-0.5, b, 5) < 0);
}

static void test_quantile_first_bucket_and_inf(void)
{
	/* The first bucket starts at 0. */
	static const struct stat_bucket first[] = { { 0.5, 4 }, { 1, 4 }, { INFINITY, 4 } };
	/* A rank in +Inf answers the highest finite bound, as Prometheus does. */
	static const struct stat_bucket tail[] = { { 10, 99 }, { 100, 99 }, { INFINITY, 100 } };
	static const struct stat_bucket all_inf[] = { { 1, 0 }, { 5, 0 }, { INFINITY, 4 } };
	/* Several series' buckets of one bound are summed. */
	static const struct stat_bucket twice[] = { { 1, 1 }, { INFINITY, 1 }, { 1, 1 },
						    { INFINITY, 3 } };
	/* A cumulative count that dips (a bucket read mid-update) is lifted. */
	static const struct stat_bucket dip[] = { { 1, 5 }, { 2, 4 }, { INFINITY, 10 } };

	CU_ASSERT(NEAR(stat_histogram_quantile(0.5, first, 3), 0.25));
	CU_ASSERT(NEAR(stat_histogram_quantile(0.99, tail, 3), 10 * 99 / 99.0));
	CU_ASSERT(NEAR(stat_histogram_quantile(0.995, tail, 3), 100));
	CU_ASSERT(NEAR(stat_histogram_quantile(0.5, all_inf, 3), 5));
	CU_ASSERT(NEAR(stat_histogram_quantile(0.5, twice, 4), 1));   /* 2 of 4 in (0,1] */
	CU_ASSERT(NEAR(stat_histogram_quantile(0.5, dip, 3), 1));
}

static void test_quantile_no_answer(void)
{
	static const struct stat_bucket empty[] = { { 0.5, 0 }, { 1, 0 }, { INFINITY, 0 } };
	static const struct stat_bucket no_inf[] = { { 0.5, 1 }, { 1, 2 } };
	static const struct stat_bucket only_inf[] = { { INFINITY, 3 } };

	CU_ASSERT(isnan(stat_histogram_quantile(0.5, empty, 3)));
	CU_ASSERT(isnan(stat_histogram_quantile(0.5, no_inf, 2)));
	CU_ASSERT(isnan(stat_histogram_quantile(0.5, only_inf, 1)));
	CU_ASSERT(isnan(stat_histogram_quantile(0.5, NULL, 0)));
	CU_ASSERT(isnan(stat_histogram_quantile(NAN, empty, 3)));
}

static void test_counter_delta(void)
{
	CU_ASSERT_EQUAL(stat_counter_delta(10, 15), 5);
	CU_ASSERT_EQUAL(stat_counter_delta(15, 15), 0);
	CU_ASSERT_EQUAL(stat_counter_delta(100, 7), 7);   /* reset: from zero */
	CU_ASSERT_EQUAL(stat_counter_delta(100, 0), 0);
	CU_ASSERT_EQUAL(stat_counter_delta(NAN, 4), 4);
}

/* ------------------------------------------------------------ rows */

#define REV "destination_service=\"reviews.bookinfo.svc.cluster.local\",destination_service_name=\"reviews\",destination_service_namespace=\"bookinfo\""
#define RAT "destination_service=\"ratings.bookinfo.svc.cluster.local\",destination_service_name=\"ratings\",destination_service_namespace=\"bookinfo\""
#define V1 "destination_workload=\"reviews-v1\",destination_workload_namespace=\"bookinfo\""
#define V2 "destination_workload=\"reviews-v2\",destination_workload_namespace=\"bookinfo\""
#define RV1 "destination_workload=\"ratings-v1\",destination_workload_namespace=\"bookinfo\""
#define SRC "reporter=\"source\",source_workload=\"productpage\","
#define DUR "istio_request_duration_milliseconds_bucket{" SRC V1 "," REV ",response_code=\"200\","

/* Two scrapes of one node, 2 s apart: reviews-v1 answered 16 x 200,
 * 2 x 404, 2 x 503; reviews-v2 was restarted (its counter went from 50 to
 * 3); ratings is TCP only: 4 connections opened, 3 closed, 8000 bytes in
 * and 10000 out. */
static const char before_text[] =
	"# TYPE istio_requests_total counter\n"
	"istio_requests_total{" SRC V1 "," REV ",response_code=\"200\"} 100\n"
	"istio_requests_total{" SRC V1 "," REV ",response_code=\"404\"} 10\n"
	"istio_requests_total{" SRC V1 "," REV ",response_code=\"503\"} 5\n"
	"istio_requests_total{" SRC V2 "," REV ",response_code=\"200\"} 50\n"
	"# TYPE istio_request_duration_milliseconds histogram\n"
	DUR "le=\"1\"} 10\n" DUR "le=\"5\"} 50\n" DUR "le=\"10\"} 100\n" DUR "le=\"+Inf\"} 100\n"
	"istio_request_duration_milliseconds_sum{" SRC V1 "," REV ",response_code=\"200\"} 700\n"
	"istio_request_duration_milliseconds_count{" SRC V1 "," REV ",response_code=\"200\"} 100\n"
	"istio_tcp_connections_opened_total{" SRC RV1 "," RAT "} 10\n"
	"istio_tcp_connections_closed_total{" SRC RV1 "," RAT "} 8\n"
	"istio_tcp_received_bytes_total{" SRC RV1 "," RAT "} 1000\n"
	"istio_tcp_sent_bytes_total{" SRC RV1 "," RAT "} 0\n"
	"bpfmesh_ready 1\n";
static const char after_text[] =
	"istio_requests_total{" SRC V1 "," REV ",response_code=\"200\"} 116\n"
	"istio_requests_total{" SRC V1 "," REV ",response_code=\"404\"} 12\n"
	"istio_requests_total{" SRC V1 "," REV ",response_code=\"503\"} 7\n"
	"istio_requests_total{" SRC V2 "," REV ",response_code=\"200\"} 3\n"
	DUR "le=\"1\"} 10\n" DUR "le=\"5\"} 60\n" DUR "le=\"10\"} 120\n" DUR "le=\"+Inf\"} 120\n"
	"istio_tcp_connections_opened_total{" SRC RV1 "," RAT "} 14\n"
	"istio_tcp_connections_closed_total{" SRC RV1 "," RAT "} 11\n"
	"istio_tcp_received_bytes_total{" SRC RV1 "," RAT "} 9000\n"
	"istio_tcp_sent_bytes_total{" SRC RV1 "," RAT "} 10000\n"
	"bpfmesh_ready 1\n";

struct two {
	struct stat_expo b, a;
	struct stat_pair p;
};

static void two_load(struct two *t, const char *before, const char *after, double seconds)
{
	memset(t, 0, sizeof(*t));
	CU_ASSERT_EQUAL_FATAL(stat_parse(before, &t->b, NULL, 0), 0);
	CU_ASSERT_EQUAL_FATAL(stat_parse(after, &t->a, NULL, 0), 0);
	t->p = (struct stat_pair){ &t->b, &t->a, seconds };
}

static void two_free(struct two *t)
{
	stat_expo_free(&t->b);
	stat_expo_free(&t->a);
}

static const struct stat_row *row(const struct stat_row *r, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(r[i].name, name))
			return &r[i];
	return NULL;
}

static void test_rows_by_service(void)
{
	struct stat_filter f = { STAT_SERVICE, "bookinfo", NULL };
	struct stat_row *rows;
	const struct stat_row *r;
	struct two t;
	size_t n;

	two_load(&t, before_text, after_text, 2.0);
	CU_ASSERT_EQUAL_FATAL(stat_compute(&f, &t.p, 1, &rows, &n), 0);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	/* sorted by name */
	CU_ASSERT_STRING_EQUAL(rows[0].name, "ratings.bookinfo.svc.cluster.local");
	CU_ASSERT_STRING_EQUAL(rows[1].name, "reviews.bookinfo.svc.cluster.local");
	r = &rows[1];
	CU_ASSERT_STRING_EQUAL(r->ns, "bookinfo");
	/* 16 + 2 + 2 from v1, 3 from v2 after its reset */
	CU_ASSERT(NEAR(r->requests, 23));
	CU_ASSERT(NEAR(r->rps, 11.5));
	/* 404 is not a failure, 503 is */
	CU_ASSERT(NEAR(r->success, 21.0 / 23));
	CU_ASSERT(NEAR(r->p50, 5));
	CU_ASSERT(NEAR(r->p95, 9.5));
	CU_ASSERT(NEAR(r->p99, 9.9));
	CU_ASSERT_EQUAL(r->http_from, STAT_SOURCE);
	CU_ASSERT_EQUAL(r->tcp_from, STAT_NONE);
	CU_ASSERT(isnan(r->tcp_open) && isnan(r->bytes_in) && isnan(r->bytes_out));
	r = &rows[0];
	CU_ASSERT(isnan(r->rps) && isnan(r->success) && isnan(r->p50));
	CU_ASSERT_EQUAL(r->http_from, STAT_NONE);
	CU_ASSERT_EQUAL(r->tcp_from, STAT_SOURCE);
	CU_ASSERT(NEAR(r->tcp_open, 3));       /* opened 14 - closed 11 */
	CU_ASSERT(NEAR(r->bytes_in, 4000));    /* (9000 - 1000) / 2 */
	CU_ASSERT(NEAR(r->bytes_out, 5000));
	stat_rows_free(rows, n);
	two_free(&t);
}

static void test_rows_by_workload(void)
{
	struct stat_filter f = { STAT_WORKLOAD, NULL, NULL };
	struct stat_row *rows;
	const struct stat_row *r;
	struct two t;
	size_t n;

	two_load(&t, before_text, after_text, 2.0);
	CU_ASSERT_EQUAL_FATAL(stat_compute(&f, &t.p, 1, &rows, &n), 0);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	r = row(rows, n, "reviews-v1");
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT(NEAR(r->rps, 10));
	CU_ASSERT(NEAR(r->success, 0.9));
	CU_ASSERT(NEAR(r->p50, 5));
	r = row(rows, n, "reviews-v2");
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT(NEAR(r->rps, 1.5));          /* reset: 3 since the restart */
	CU_ASSERT(NEAR(r->success, 1));
	CU_ASSERT(isnan(r->p50));              /* no histogram: "-" */
	r = row(rows, n, "ratings-v1");
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT(NEAR(r->tcp_open, 3));
	stat_rows_free(rows, n);
	two_free(&t);
}

static void test_rows_filters(void)
{
	static const struct {
		struct stat_filter f;
		size_t want;
	} cases[] = {
		{ { STAT_SERVICE, "bookinfo", "reviews" }, 1 },   /* short name */
		{ { STAT_SERVICE, NULL, "reviews.bookinfo.svc.cluster.local" }, 1 },
		{ { STAT_SERVICE, "default", NULL }, 0 },
		{ { STAT_SERVICE, "bookinfo", "details" }, 0 },
		{ { STAT_WORKLOAD, "bookinfo", "reviews-v2" }, 1 },
		{ { STAT_WORKLOAD, "bookinfo", "reviews" }, 0 },  /* no short form for workloads */
		{ { STAT_WORKLOAD, "bookinfo", NULL }, 3 },
	};
	struct two t;

	two_load(&t, before_text, after_text, 2.0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct stat_row *rows;
		size_t n;

		CU_ASSERT_EQUAL(stat_compute(&cases[i].f, &t.p, 1, &rows, &n), 0);
		CU_ASSERT_EQUAL(n, cases[i].want);
		stat_rows_free(rows, n);
	}
	two_free(&t);
}

static void test_rows_reporter_choice(void)
{
	/* reviews-v1 has both ends' series: the server's (destination) view
	 * wins for HTTP; its TCP series are the client's only. The server side
	 * does not know the service, so by service its series are left out
	 * rather than shown as a second, "unknown" copy. */
	static const char before[] =
		"istio_requests_total{" SRC V1 "," REV ",response_code=\"200\"} 10\n"
		"istio_requests_total{reporter=\"destination\"," V1 ",destination_service=\"unknown\",destination_service_namespace=\"unknown\",response_code=\"200\"} 10\n"
		"istio_tcp_connections_opened_total{" SRC V1 "," REV "} 1\n";
	static const char after[] =
		"istio_requests_total{" SRC V1 "," REV ",response_code=\"200\"} 20\n"
		"istio_requests_total{reporter=\"destination\"," V1 ",destination_service=\"unknown\",destination_service_namespace=\"unknown\",response_code=\"200\"} 14\n"
		"istio_requests_total{reporter=\"destination\"," V1 ",destination_service=\"unknown\",destination_service_namespace=\"unknown\",response_code=\"500\"} 4\n"
		"istio_requests_total{reporter=\"waypoint\"," V1 "," REV ",response_code=\"200\"} 1000\n"
		"istio_tcp_connections_opened_total{" SRC V1 "," REV "} 2\n";
	struct stat_filter byw = { STAT_WORKLOAD, NULL, NULL }, bys = { STAT_SERVICE, NULL, NULL };
	struct stat_row *rows;
	struct two t;
	size_t n;

	two_load(&t, before, after, 1.0);
	CU_ASSERT_EQUAL_FATAL(stat_compute(&byw, &t.p, 1, &rows, &n), 0);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_EQUAL(rows[0].http_from, STAT_DESTINATION);
	CU_ASSERT_EQUAL(rows[0].tcp_from, STAT_SOURCE);
	CU_ASSERT(NEAR(rows[0].rps, 8));       /* 4 x 200 + 4 x 500 (new series) */
	CU_ASSERT(NEAR(rows[0].success, 0.5));
	CU_ASSERT(NEAR(rows[0].tcp_open, 2));
	stat_rows_free(rows, n);
	CU_ASSERT_EQUAL_FATAL(stat_compute(&bys, &t.p, 1, &rows, &n), 0);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_STRING_EQUAL(rows[0].name, "reviews.bookinfo.svc.cluster.local");
	CU_ASSERT_EQUAL(rows[0].http_from, STAT_SOURCE);
	CU_ASSERT(NEAR(rows[0].rps, 10));
	CU_ASSERT(NEAR(rows[0].success, 1));
	stat_rows_free(rows, n);
	two_free(&t);
}

static void test_rows_two_nodes(void)
{
	/* Two nodes, each with its own interval; a series on both is summed. */
	static const char b1[] = "istio_requests_total{" SRC V1 "," REV ",response_code=\"200\"} 0\n";
	static const char a1[] = "istio_requests_total{" SRC V1 "," REV ",response_code=\"200\"} 4\n";
	static const char a2[] = "istio_requests_total{" SRC V1 "," REV ",response_code=\"503\"} 6\n";
	struct stat_filter f = { STAT_WORKLOAD, "bookinfo", NULL };
	struct stat_expo e[3] = {};
	struct stat_pair p[2];
	struct stat_row *rows;
	size_t n;

	CU_ASSERT_EQUAL_FATAL(stat_parse(b1, &e[0], NULL, 0), 0);
	CU_ASSERT_EQUAL_FATAL(stat_parse(a1, &e[1], NULL, 0), 0);
	CU_ASSERT_EQUAL_FATAL(stat_parse(a2, &e[2], NULL, 0), 0);
	p[0] = (struct stat_pair){ &e[0], &e[1], 2.0 };
	p[1] = (struct stat_pair){ NULL, &e[2], 3.0 };   /* no first scrape: from zero */
	CU_ASSERT_EQUAL_FATAL(stat_compute(&f, p, 2, &rows, &n), 0);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT(NEAR(rows[0].rps, 2 + 2));
	CU_ASSERT(NEAR(rows[0].requests, 10));
	CU_ASSERT(NEAR(rows[0].success, 0.5));
	stat_rows_free(rows, n);
	for (int i = 0; i < 3; i++)
		stat_expo_free(&e[i]);
}

/* ------------------------------------------------------------ meshd's output */

static struct bm_l7_record rec(uint16_t status, uint64_t ms)
{
	struct bm_l7_record r;

	memset(&r, 0, sizeof(r));
	r.reporter = BM_MESH_SOURCE;
	r.src_ns = "default";
	r.src_name = "client-0";
	r.src_principal = r.dst_ns = r.dst_name = r.cluster = r.subset = "";
	r.route_name = r.request_id = r.user_agent = "";
	r.method = "GET";
	r.authority = r.dst_service = "server.default.svc.cluster.local";
	r.dst_service_ns = "default";
	r.path = "/";
	r.flags = "-";
	r.status = status;
	r.duration_ms = ms;
	inet_pton(AF_INET, "10.0.2.5", &r.upstream_ip);
	r.upstream_port = htons(8080);
	r.dst_port = 8080;
	return r;
}

static char *render(struct bm_agent *a, struct bm_req_table *t)
{
	struct bm_req_row *rows = NULL;
	size_t n = 0, cap = 0, len = 0;
	char *buf = NULL;
	FILE *f = open_memstream(&buf, &len);

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(bm_req_collect(t, &rows, &n, &cap), 0);
	CU_ASSERT_EQUAL(bm_metrics_render_req_rows(a, f, rows, n), 0);
	fclose(f);
	free(rows);
	return buf;
}

static void test_meshd_exposition(void)
{
	/* What meshd renders (agent/metrics_req.c) reads back: labels, Envoy's
	 * bucket bounds, the histogram; 2 requests of 3 ms and 1 of 700 ms
	 * between the scrapes, one a 503. */
	struct bm_agent *a = calloc(1, sizeof(*a));
	struct bm_req_table *t = bm_req_table_new();
	struct stat_filter f = { STAT_SERVICE, "default", "server" };
	struct stat_expo e[2] = {};
	struct stat_pair p;
	struct stat_row *rows;
	struct bm_l7_record x;
	char *text[2], err[128];
	size_t n;

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	memset(&a->loader.fd, 0xff, sizeof(a->loader.fd));
	x = rec(200, 3);
	bm_req_record(t, &x);
	text[0] = render(a, t);
	bm_req_record(t, &x);
	bm_req_record(t, &x);
	x = rec(503, 700);
	bm_req_record(t, &x);
	text[1] = render(a, t);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(stat_parse(text[i], &e[i], err, sizeof(err)), 0);
		if (e[i].n == 0)
			fprintf(stderr, "\n%s\n", err);
	}
	p = (struct stat_pair){ &e[0], &e[1], 1.0 };
	CU_ASSERT_EQUAL_FATAL(stat_compute(&f, &p, 1, &rows, &n), 0);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_STRING_EQUAL(rows[0].name, "server.default.svc.cluster.local");
	CU_ASSERT(NEAR(rows[0].rps, 3));
	CU_ASSERT(NEAR(rows[0].success, 2.0 / 3));
	/* ranks 1.5 of 3: in (1,5], 2 there: 1 + 4 * 1.5 / 2 */
	CU_ASSERT(NEAR(rows[0].p50, 4));
	/* rank 2.85: 0.85 into (500,1000] */
	CU_ASSERT(NEAR(rows[0].p95, 500 + 500 * 0.85));
	for (int i = 0; i < 2; i++) {
		stat_expo_free(&e[i]);
		free(text[i]);
	}
	stat_rows_free(rows, n);
	bm_req_table_free(t);
	free(a);
}

/* ------------------------------------------------------------ fetching */

struct fake_meshd {
	int fd;
	const char *text[2];
	int served;
};

/* Answers the admin "metrics" call, one exposition per connection. */
static void *fake_serve(void *arg)
{
	struct fake_meshd *m = arg;

	for (; m->served < 2; m->served++) {
		int c = accept(m->fd, NULL, NULL);
		char req[256], *reply;
		size_t got = 0;
		json_t *j;

		if (c < 0)
			break;
		while (got < sizeof(req) - 1) {
			ssize_t r = read(c, req + got, sizeof(req) - 1 - got);

			if (r <= 0)
				break;
			got += (size_t)r;
			if (memchr(req, '\n', got))
				break;
		}
		req[got] = 0;
		j = strstr(req, "\"metrics\"")
			    ? json_pack("{s:b,s:s}", "ok", 1, "text", m->text[m->served])
			    : json_pack("{s:b,s:s}", "ok", 0, "error", "unknown command");
		reply = json_dumps(j, JSON_COMPACT);
		if (write(c, reply, strlen(reply)) < 0 || write(c, "\n", 1) < 0)
			perror("fake meshd");
		free(reply);
		json_decref(j);
		close(c);
	}
	return NULL;
}

/* A run directory with node1's admin socket; listening unless stale. */
static int fake_socket(char *dir, int listening)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[128];
	int fd;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/node1", dir);
	CU_ASSERT_EQUAL_FATAL(mkdir(path, 0700), 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/node1/admin.sock", dir);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (listening)
		CU_ASSERT_EQUAL_FATAL(listen(fd, 4), 0);
	return fd;
}

static void fake_cleanup(const char *dir, int fd)
{
	char path[128];

	close(fd);
	snprintf(path, sizeof(path), "%s/node1/admin.sock", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/node1", dir);
	rmdir(path);
	rmdir(dir);
}

static json_t *run_json(const struct stat_opts *o, int *rc)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	json_t *j;

	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	*rc = stat_run(o, out);
	fclose(out);
	j = json_loads(buf ? buf : "", 0, NULL);
	if (!j)
		fprintf(stderr, "\nnot JSON: %s\n", buf ? buf : "(nothing)");
	free(buf);
	return j;
}

static void test_fetch_fake_node(void)
{
	/* The whole path: cli_nodes, the admin call, two scrapes, JSON out. */
	char dir[] = "/tmp/bm-stat-XXXXXX";
	struct fake_meshd m = { .text = { before_text, after_text } };
	struct stat_opts o = { .f = { STAT_SERVICE, "bookinfo", "reviews" }, .window_ms = 50,
			       .json = 1 };
	const char *old = getenv("BPFMESH_RUN");
	char *saved = old ? strdup(old) : NULL;
	json_t *j, *r;
	pthread_t th;
	int rc;

	m.fd = fake_socket(dir, 1);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, fake_serve, &m), 0);
	setenv("BPFMESH_RUN", dir, 1);
	j = run_json(&o, &rc);
	pthread_join(th, NULL);
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT_EQUAL(m.served, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT(json_is_true(json_object_get(j, "ok")));
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "kind")), "service");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(
		json_array_get(json_object_get(j, "nodes"), 0), "node")), "node1");
	CU_ASSERT_EQUAL_FATAL(json_array_size(json_object_get(j, "rows")), 1);
	r = json_array_get(json_object_get(j, "rows"), 0);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "name")),
			       "reviews.bookinfo.svc.cluster.local");
	CU_ASSERT(NEAR(json_real_value(json_object_get(r, "requests")), 23));
	CU_ASSERT(fabs(json_real_value(json_object_get(r, "success_rate")) - 21.0 / 23) < 1e-5);
	CU_ASSERT(NEAR(json_real_value(json_object_get(json_object_get(r, "latency_ms"), "p50")), 5));
	CU_ASSERT(json_is_null(json_object_get(json_object_get(r, "tcp"), "open_connections")));
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(r, "reporter"),
								  "http")), "source");
	json_decref(j);
	fake_cleanup(dir, m.fd);
	if (saved)
		setenv("BPFMESH_RUN", saved, 1);
	else
		unsetenv("BPFMESH_RUN");
	free(saved);
}

static void test_fetch_no_node(void)
{
	/* Nobody to ask: exit 1, and -o json still prints JSON with the reason;
	 * a stale socket (meshd gone) is named with its node. */
	char dir[] = "/tmp/bm-stat-XXXXXX", none[] = "/tmp/bm-stat-none-XXXXXX";
	struct stat_opts o = { .f = { STAT_SERVICE, NULL, NULL }, .window_ms = 1000, .json = 1 };
	const char *old = getenv("BPFMESH_RUN"), *e;
	char *saved = old ? strdup(old) : NULL;
	json_t *j, *node;
	int rc, fd;

	/* A run directory that does not exist. (With an empty one, cli_nodes()
	 * passes qsort() a NULL array, which UBSan stops on.) */
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(none));
	rmdir(none);
	setenv("BPFMESH_RUN", none, 1);
	j = run_json(&o, &rc);
	CU_ASSERT_EQUAL(rc, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT(json_is_false(json_object_get(j, "ok")));
	e = json_string_value(json_object_get(j, "error"));
	CU_ASSERT(e && strstr(e, "no node agents under ") && strstr(e, "is meshd running?"));
	json_decref(j);

	fd = fake_socket(dir, 0);
	setenv("BPFMESH_RUN", dir, 1);
	j = run_json(&o, &rc);   /* fails at once: no wait for the window */
	CU_ASSERT_EQUAL(rc, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT(json_is_false(json_object_get(j, "ok")));
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "error")),
			       "no node agent answered (1 tried)");
	node = json_array_get(json_object_get(j, "nodes"), 0);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(node, "node")), "node1");
	e = json_string_value(json_object_get(node, "error"));
	CU_ASSERT(e && strstr(e, "Connection refused"));
	json_decref(j);
	fake_cleanup(dir, fd);
	if (saved)
		setenv("BPFMESH_RUN", saved, 1);
	else
		unsetenv("BPFMESH_RUN");
	free(saved);
}

BM_SUITE(stat,
	 BM_CASE(test_parse_samples),
	 BM_CASE(test_parse_same_series_key),
	 BM_CASE(test_parse_errors),
	 BM_CASE(test_quantile_known_buckets),
	 BM_CASE(test_quantile_first_bucket_and_inf),
	 BM_CASE(test_quantile_no_answer),
	 BM_CASE(test_counter_delta),
	 BM_CASE(test_rows_by_service),
	 BM_CASE(test_rows_by_workload),
	 BM_CASE(test_rows_filters),
	 BM_CASE(test_rows_reporter_choice),
	 BM_CASE(test_rows_two_nodes),
	 BM_CASE(test_meshd_exposition),
	 BM_CASE(test_fetch_fake_node),
	 BM_CASE(test_fetch_no_node))
