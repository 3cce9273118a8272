/* Istio request metrics (agent/reqmetrics.c, agent/metrics_req.c): per-worker
 * tables keyed by bounded labels, merged on collect; Envoy's default
 * buckets (a value lands in the first bucket whose bound is >= it,
 * cumulative in the output, +Inf == _count); the full §7.2 label set with
 * its fallbacks; an exposition that promtool accepts. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "unit.h"
#include "../../agent/agent.h"
#include "../../agent/l7proxy.h"
#include "../../agent/metrics.h"
#include "../../agent/relay.h"
#include "../../agent/reqmetrics.h"

static struct bm_l7_record rec(int reporter, uint16_t status, uint64_t ms)
{
	struct bm_l7_record r;

	memset(&r, 0, sizeof(r));
	r.reporter = (uint8_t)reporter;
	r.src_ns = r.src_name = r.src_principal = r.dst_ns = r.dst_name = "";
	r.dst_service = r.dst_service_ns = r.cluster = r.subset = "";
	r.method = "GET";
	r.authority = "server.default.svc.cluster.local";
	r.path = "/";
	r.flags = "-";
	r.route_name = r.request_id = r.user_agent = "";
	r.status = status;
	r.duration_ms = ms;
	if (reporter == BM_MESH_SOURCE) {
		r.src_ns = "default";
		r.src_name = "client-0";
		inet_pton(AF_INET, "10.0.2.5", &r.upstream_ip);
		r.upstream_port = htons(8080);
	} else {
		r.mtls = 1;
		r.src_principal = "cluster.local/ns/default/sa/client";
		r.dst_ns = "default";
		r.dst_name = "server-0";
	}
	r.dst_service = "server.default.svc.cluster.local";
	r.dst_service_ns = "default";
	r.dst_port = 8080;
	return r;
}

static const struct bm_req_row *find_row(const struct bm_req_row *rows, size_t n, int reporter,
					 uint16_t code)
{
	for (size_t i = 0; i < n; i++)
		if (rows[i].k.reporter == reporter && rows[i].k.code == code)
			return &rows[i];
	return NULL;
}

static void test_bucket_bounds(void)
{
	static const struct { uint64_t v; unsigned b; } cases[] = {
		{ 0, 0 }, { 1, 1 }, { 2, 2 }, { 5, 2 }, { 6, 3 }, { 10, 3 }, { 11, 4 },
		{ 1000, 9 }, { 1001, 10 }, { 3600000, 18 }, { 3600001, 19 },
		{ UINT64_MAX, 19 },
	};

	CU_ASSERT_EQUAL(bm_req_bounds[0], 0.5);
	CU_ASSERT_EQUAL(bm_req_bounds[BM_REQ_BOUNDS - 1], 3600000);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (bm_req_bucket(cases[i].v) != cases[i].b)
			fprintf(stderr, "\nbucket(%llu) = %u, want %u\n",
				(unsigned long long)cases[i].v, bm_req_bucket(cases[i].v), cases[i].b);
		CU_ASSERT_EQUAL(bm_req_bucket(cases[i].v), cases[i].b);
	}
}

static void test_record_collect_merge(void)
{
	/* Two workers: identical keys merge on collect, a different code or
	 * reporter is its own row; the request's own details (path, client
	 * port, request id) never make a row. */
	struct bm_req_table *t1 = bm_req_table_new(), *t2 = bm_req_table_new();
	struct bm_req_row *out = NULL;
	const struct bm_req_row *r;
	size_t n = 0, cap = 0;
	struct bm_l7_record x;

	CU_ASSERT_PTR_NOT_NULL_FATAL(t1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t2);
	for (int i = 0; i < 3; i++) {
		x = rec(BM_MESH_SOURCE, 200, 7);
		x.req_body_bytes = 100;
		x.resp_body_bytes = 1000;
		x.path = i ? "/a" : "/b";
		x.request_id = i ? "r1" : "r2";
		bm_req_record(t1, &x);
	}
	x = rec(BM_MESH_SOURCE, 200, 30);
	bm_req_record(t2, &x);
	x = rec(BM_MESH_SOURCE, 503, 1);
	x.flags = "UF,URX";
	bm_req_record(t2, &x);
	x = rec(BM_MESH_DESTINATION, 200, 2);
	x.upstream_ip = 0x01020304;   /* not part of a destination key */
	bm_req_record(t2, &x);
	x.upstream_ip = 0x05060708;
	bm_req_record(t2, &x);
	CU_ASSERT_EQUAL(bm_req_collect(t1, &out, &n, &cap), 0);
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_EQUAL(bm_req_collect(t2, &out, &n, &cap), 0);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	r = find_row(out, n, BM_MESH_SOURCE, 200);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->k.src, "default/client-0");
	CU_ASSERT_STRING_EQUAL(r->k.dst, "");
	CU_ASSERT_STRING_EQUAL(r->k.flags, "-");
	CU_ASSERT_EQUAL(r->k.dst_port, 8080);
	CU_ASSERT_EQUAL(bm_req_hist_count(&r->h[BM_REQ_DURATION]), 4);
	CU_ASSERT_EQUAL(r->h[BM_REQ_DURATION].sum, 3 * 7 + 30);
	CU_ASSERT_EQUAL(r->h[BM_REQ_DURATION].bucket[bm_req_bucket(7)], 3);
	CU_ASSERT_EQUAL(r->h[BM_REQ_DURATION].bucket[bm_req_bucket(30)], 1);
	CU_ASSERT_EQUAL(r->h[BM_REQ_REQUEST_BYTES].sum, 300);
	CU_ASSERT_EQUAL(r->h[BM_REQ_RESPONSE_BYTES].sum, 3000);
	CU_ASSERT_EQUAL(r->h[BM_REQ_RESPONSE_BYTES].bucket[bm_req_bucket(1000)], 3);
	CU_ASSERT_EQUAL(r->h[BM_REQ_RESPONSE_BYTES].bucket[bm_req_bucket(0)], 1);
	r = find_row(out, n, BM_MESH_SOURCE, 503);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->k.flags, "UF,URX");
	r = find_row(out, n, BM_MESH_DESTINATION, 200);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(r->k.upstream_ip, 0);
	CU_ASSERT_STRING_EQUAL(r->k.src, "cluster.local/ns/default/sa/client");
	CU_ASSERT_STRING_EQUAL(r->k.dst, "default/server-0");
	CU_ASSERT_EQUAL(bm_req_hist_count(&r->h[BM_REQ_DURATION]), 2);
	/* Collecting the same table again adds to what is there (another scrape
	 * starts from an empty array). */
	CU_ASSERT_EQUAL(bm_req_collect(t1, &out, &n, &cap), 0);
	CU_ASSERT_EQUAL(n, 3);
	CU_ASSERT_EQUAL(bm_req_hist_count(&find_row(out, n, BM_MESH_SOURCE, 200)->h[0]), 7);
	free(out);
	bm_req_table_free(t1);
	bm_req_table_free(t2);
}

static void test_table_bounded(void)
{
	/* A full table refuses new keys (counted), old keys go on counting. */
	struct bm_req_table *t = bm_req_table_new();
	struct bm_req_row *out = NULL;
	size_t n = 0, cap = 0;
	struct bm_l7_record x = rec(BM_MESH_SOURCE, 200, 1);

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	for (int i = 0; i < BM_REQ_ROWS; i++) {
		x.dst_port = (uint16_t)(i + 1);
		bm_req_record(t, &x);
	}
	CU_ASSERT_EQUAL(bm_req_table_overflow(t), 0);
	x.dst_port = 9999;
	bm_req_record(t, &x);
	bm_req_record(t, &x);
	CU_ASSERT_EQUAL(bm_req_table_overflow(t), 2);
	x.dst_port = 5;
	bm_req_record(t, &x);
	CU_ASSERT_EQUAL(bm_req_table_overflow(t), 2);
	CU_ASSERT_EQUAL(bm_req_collect(t, &out, &n, &cap), 0);
	CU_ASSERT_EQUAL(n, BM_REQ_ROWS);
	for (size_t i = 0; i < n; i++)
		if (out[i].k.dst_port == 5)
			CU_ASSERT_EQUAL(bm_req_hist_count(&out[i].h[BM_REQ_DURATION]), 2);
	free(out);
	bm_req_table_free(t);
}

/* ------------------------------------------------------------ rendering */

static char *render_rows(struct bm_agent *a, const struct bm_req_row *rows, size_t n)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(bm_metrics_render_req_rows(a, f, rows, n), 0);
	fclose(f);
	return buf;
}

/* promtool check metrics on text: no output expected except its lint on
 * istio_request_duration_milliseconds's unit, a name Istio fixes (§7.1). */
static void promtool_check(const char *text)
{
	char path[] = "/tmp/bm-reqmetrics-XXXXXX", cmd[128], line[512];
	int fd = mkstemp(path), clean = 1;
	FILE *p;

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL((size_t)write(fd, text, strlen(text)), strlen(text));
	close(fd);
	if (system("command -v promtool >/dev/null 2>&1")) {
		fprintf(stderr, "\npromtool not installed: exposition not checked\n");
		unlink(path);
		return;
	}
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
	p = popen(cmd, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	while (fgets(line, sizeof(line), p)) {
		if (strstr(line, "istio_request_duration_milliseconds use base unit \"seconds\" "
				 "instead of \"milliseconds\""))
			continue;
		fprintf(stderr, "\npromtool: %s", line);
		clean = 0;
	}
	pclose(p);
	CU_ASSERT(clean);
	unlink(path);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* The value of the first sample line starting with prefix, or -1. */
static long long sample_value(const char *text, const char *prefix)
{
	const char *l = strstr(text, prefix), *eol;

	if (!l)
		return -1;
	eol = strchr(l, '\n');
	while (eol > l && eol[-1] != ' ')
		eol--;
	return atoll(eol);
}

static struct bm_agent *agent_with_workloads(struct bm_pod *pods)
{
	struct bm_agent *a = calloc(1, sizeof(*a));
	json_error_t je;

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	memset(&a->loader.fd, 0xff, sizeof(a->loader.fd));
	memset(pods, 0, 2 * sizeof(*pods));
	snprintf(pods[0].name, sizeof(pods[0].name), "client-0");
	snprintf(pods[0].ns, sizeof(pods[0].ns), "default");
	snprintf(pods[0].ip, sizeof(pods[0].ip), "10.0.1.5");
	snprintf(pods[1].name, sizeof(pods[1].name), "server-0");
	snprintf(pods[1].ns, sizeof(pods[1].ns), "default");
	snprintf(pods[1].ip, sizeof(pods[1].ip), "10.0.2.5");
	a->pods.p = pods;
	a->pods.n = 2;
	a->resources = json_loads(
		"[{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"client-0\",\"namespace\":\"default\"},"
		"\"spec\":{\"address\":\"10.0.1.5\",\"serviceAccount\":\"client\","
		"\"labels\":{\"app\":\"client\",\"service.istio.io/workload-name\":\"client\"}}},"
		"{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"server-0\",\"namespace\":\"default\"},"
		"\"spec\":{\"address\":\"10.0.2.5\",\"serviceAccount\":\"server\","
		"\"labels\":{\"app\":\"server\",\"version\":\"v1\"}}}]", 0, &je);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a->resources);
	return a;
}

static void agent_free(struct bm_agent *a)
{
	json_decref(a->resources);
	free(a);
}

static void test_buckets_rendered(void)
{
	/* A sub-millisecond (0 ms) and a 1 ms request: le="0.5" holds the
	 * first, le="1" both (cumulative), +Inf == _count == requests. */
	struct bm_pod pods[2];
	struct bm_agent *a = agent_with_workloads(pods);
	struct bm_req_table *t = bm_req_table_new();
	struct bm_req_row *rows = NULL;
	size_t n = 0, cap = 0;
	struct bm_l7_record x;
	char *out;

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	x = rec(BM_MESH_DESTINATION, 200, 0);
	x.resp_body_bytes = 5000;
	bm_req_record(t, &x);
	x = rec(BM_MESH_DESTINATION, 200, 1);
	x.resp_body_bytes = 5001;
	bm_req_record(t, &x);
	CU_ASSERT_EQUAL(bm_req_collect(t, &rows, &n, &cap), 0);
	out = render_rows(a, rows, n);
	CU_ASSERT_EQUAL(count(out, "\nistio_request_duration_milliseconds_bucket{"), BM_REQ_BOUNDS + 1);
	CU_ASSERT_EQUAL(sample_value(out, "istio_request_duration_milliseconds_bucket{"), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, ",le=\"0.5\"} 1\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, ",le=\"1\"} 2\nistio_request_duration_milliseconds_bucket"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, ",le=\"5\"} 2\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, ",le=\"3600000\"} 2\n"));
	CU_ASSERT_PTR_NULL(strstr(out, "e+06"));
	CU_ASSERT_EQUAL(count(out, ",le=\"+Inf\"} 2\n"), 3);
	CU_ASSERT_EQUAL(sample_value(out, "istio_request_duration_milliseconds_count{"), 2);
	CU_ASSERT_EQUAL(sample_value(out, "istio_request_duration_milliseconds_sum{"), 1);
	CU_ASSERT_EQUAL(sample_value(out, "istio_requests_total{"), 2);
	/* 5000 is in le="5000", 5001 only from le="10000" on. */
	{
		const char *h = strstr(out, "\nistio_response_bytes_bucket{");

		CU_ASSERT_PTR_NOT_NULL_FATAL(h);
		CU_ASSERT_PTR_NOT_NULL(strstr(h, ",le=\"2500\"} 0\n"));
		CU_ASSERT_PTR_NOT_NULL(strstr(h, ",le=\"5000\"} 1\n"));
		CU_ASSERT_PTR_NOT_NULL(strstr(h, ",le=\"10000\"} 2\n"));
		CU_ASSERT_EQUAL(sample_value(h, "istio_response_bytes_sum{"), 10001);
	}
	promtool_check(out);
	free(out);
	free(rows);
	bm_req_table_free(t);
	agent_free(a);
}

static void test_labels_rendered(void)
{
	/* The full §7.2 label set in Istio's order, from WorkloadEntries; the
	 * server side knows its client by principal only; a request nobody can
	 * be found for falls back to unknown / latest; rows that differ only in
	 * the upstream port merge into one series. */
	static const char *const order[] = {
		"reporter", "source_workload", "source_workload_namespace", "source_principal",
		"source_app", "source_version", "source_canonical_service",
		"source_canonical_revision", "source_cluster", "destination_workload",
		"destination_workload_namespace", "destination_principal", "destination_app",
		"destination_version", "destination_service", "destination_service_name",
		"destination_service_namespace", "destination_canonical_service",
		"destination_canonical_revision", "destination_cluster", "request_protocol",
		"response_code", "grpc_response_status", "response_flags",
		"connection_security_policy",
	};
	struct bm_pod pods[2];
	struct bm_agent *a = agent_with_workloads(pods);
	struct bm_req_table *t = bm_req_table_new();
	struct bm_req_row *rows = NULL;
	size_t n = 0, cap = 0;
	struct bm_l7_record x;
	char *out;

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	x = rec(BM_MESH_SOURCE, 200, 3);
	bm_req_record(t, &x);
	x.upstream_port = htons(8081);   /* another port of the same backend workload */
	bm_req_record(t, &x);
	x = rec(BM_MESH_DESTINATION, 200, 3);
	bm_req_record(t, &x);
	x = rec(BM_MESH_DESTINATION, 404, 3);
	x.mtls = 0;
	x.src_principal = "";
	x.dst_service = x.dst_service_ns = "";
	x.dst_ns = "other";
	x.dst_name = "gone";
	x.flags = "NR";
	bm_req_record(t, &x);
	CU_ASSERT_EQUAL(bm_req_collect(t, &rows, &n, &cap), 0);
	CU_ASSERT_EQUAL(n, 4);
	out = render_rows(a, rows, n);
	CU_ASSERT_EQUAL(count(out, "# TYPE "), 4);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "# TYPE istio_requests_total counter\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "# TYPE istio_request_duration_milliseconds histogram\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "# TYPE istio_request_bytes histogram\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "# TYPE istio_response_bytes histogram\n"));
	CU_ASSERT_EQUAL(count(out, "\nistio_requests_total{"), 3);
	CU_ASSERT_PTR_NOT_NULL(strstr(out,
		"istio_requests_total{reporter=\"source\",source_workload=\"client\","
		"source_workload_namespace=\"default\","
		"source_principal=\"spiffe://cluster.local/ns/default/sa/client\","
		"source_app=\"client\",source_version=\"unknown\",source_canonical_service=\"client\","
		"source_canonical_revision=\"latest\",source_cluster=\"unknown\","
		"destination_workload=\"server-0\",destination_workload_namespace=\"default\","
		"destination_principal=\"spiffe://cluster.local/ns/default/sa/server\","
		"destination_app=\"server\",destination_version=\"v1\","
		"destination_service=\"server.default.svc.cluster.local\","
		"destination_service_name=\"server\",destination_service_namespace=\"default\","
		"destination_canonical_service=\"server\",destination_canonical_revision=\"v1\","
		"destination_cluster=\"unknown\",request_protocol=\"http\",response_code=\"200\","
		"grpc_response_status=\"\",response_flags=\"-\","
		"connection_security_policy=\"unknown\"} 2\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out,
		"istio_requests_total{reporter=\"destination\",source_workload=\"unknown\","
		"source_workload_namespace=\"default\","
		"source_principal=\"spiffe://cluster.local/ns/default/sa/client\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "response_code=\"200\",grpc_response_status=\"\","
					   "response_flags=\"-\",connection_security_policy=\"mutual_tls\"} 1\n"));
	/* plaintext, unknown everything, the server pod not enrolled here */
	CU_ASSERT_PTR_NOT_NULL(strstr(out,
		"istio_requests_total{reporter=\"destination\",source_workload=\"unknown\","
		"source_workload_namespace=\"unknown\",source_principal=\"unknown\","
		"source_app=\"unknown\",source_version=\"unknown\",source_canonical_service=\"unknown\","
		"source_canonical_revision=\"latest\",source_cluster=\"unknown\","
		"destination_workload=\"unknown\",destination_workload_namespace=\"unknown\","
		"destination_principal=\"unknown\",destination_app=\"unknown\","
		"destination_version=\"unknown\",destination_service=\"unknown\","
		"destination_service_name=\"unknown\",destination_service_namespace=\"unknown\","
		"destination_canonical_service=\"unknown\",destination_canonical_revision=\"latest\","
		"destination_cluster=\"unknown\",request_protocol=\"http\",response_code=\"404\","
		"grpc_response_status=\"\",response_flags=\"NR\","
		"connection_security_policy=\"none\"} 1\n"));
	/* Every sample line of every family has the labels in this order. */
	for (const char *l = out; *l; l = strchr(l, '\n') + 1) {
		const char *prev = l;

		if (*l == '#')
			continue;
		for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
			char needle[64];
			const char *at;

			snprintf(needle, sizeof(needle), "%s%s=\"", k ? "," : "{", order[k]);
			at = strstr(prev, needle);
			CU_ASSERT_PTR_NOT_NULL_FATAL(at);
			CU_ASSERT(at < strchr(l, '\n'));
			prev = at;
		}
	}
	promtool_check(out);
	free(out);
	free(rows);
	bm_req_table_free(t);
	agent_free(a);
}

static void test_whole_exposition(void)
{
	/* Without a proxy the request families are declared and empty, the
	 * new bpfmesh_* counters are 0, and promtool accepts the whole text. */
	struct bm_agent *a = calloc(1, sizeof(*a));
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	memset(&a->loader.fd, 0xff, sizeof(a->loader.fd));
	CU_ASSERT_EQUAL(bm_metrics_render(a, f), 0);
	fclose(f);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "# TYPE istio_requests_total counter\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "# TYPE istio_request_duration_milliseconds histogram\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "# TYPE istio_request_bytes histogram\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "# TYPE istio_response_bytes histogram\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\nbpfmesh_outlier_ejections_total 0\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\nbpfmesh_l7_requests_overflow_total 0\n"));
	promtool_check(buf);
	free(buf);
	free(a);
}

static void test_grpc_rows(void)
{
	/* request_protocol and grpc_response_status are labels: gRPC requests
	 * with different statuses are rows of their own, HTTP ones carry no
	 * gRPC status whatever the record says. */
	struct bm_req_table *t = bm_req_table_new();
	struct bm_req_row *out = NULL;
	size_t n = 0, cap = 0;
	struct bm_l7_record x;
	int seen_http = 0, seen_ok = 0, seen_14 = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	x = rec(BM_MESH_SOURCE, 200, 1);
	x.grpc_status = 3; /* not gRPC: ignored */
	bm_req_record(t, &x);
	for (int i = 0; i < 2; i++) {
		x = rec(BM_MESH_SOURCE, 200, 1);
		x.protocol = BM_L7_PROTO_GRPC;
		x.grpc_status = 0;
		bm_req_record(t, &x);
	}
	x.grpc_status = 14;
	bm_req_record(t, &x);
	CU_ASSERT_EQUAL(bm_req_collect(t, &out, &n, &cap), 0);
	CU_ASSERT_EQUAL(n, 3);
	for (size_t i = 0; i < n; i++) {
		uint64_t c = bm_req_hist_count(&out[i].h[BM_REQ_DURATION]);

		if (out[i].k.protocol == BM_L7_PROTO_HTTP && out[i].k.grpc_status == -1 && c == 1)
			seen_http = 1;
		if (out[i].k.protocol == BM_L7_PROTO_GRPC && out[i].k.grpc_status == 0 && c == 2)
			seen_ok = 1;
		if (out[i].k.protocol == BM_L7_PROTO_GRPC && out[i].k.grpc_status == 14 && c == 1)
			seen_14 = 1;
	}
	CU_ASSERT(seen_http && seen_ok && seen_14);
	/* Rendered: three series, Istio's label values, valid exposition. */
	{
		struct bm_pod pods[2];
		struct bm_agent *a = agent_with_workloads(pods);
		char *text = render_rows(a, out, n);

		CU_ASSERT_EQUAL(count(text, "\nistio_requests_total{"), 3);
		CU_ASSERT_PTR_NOT_NULL(strstr(text, "request_protocol=\"http\",response_code=\"200\","
						    "grpc_response_status=\"\""));
		CU_ASSERT_PTR_NOT_NULL(strstr(text, "request_protocol=\"grpc\",response_code=\"200\","
						    "grpc_response_status=\"0\""));
		CU_ASSERT_PTR_NOT_NULL(strstr(text, "request_protocol=\"grpc\",response_code=\"200\","
						    "grpc_response_status=\"14\""));
		promtool_check(text);
		free(text);
		agent_free(a);
	}
	free(out);
	bm_req_table_free(t);
}

BM_SUITE(reqmetrics,
	 BM_CASE(test_bucket_bounds),
	 BM_CASE(test_record_collect_merge),
	 BM_CASE(test_grpc_rows),
	 BM_CASE(test_table_bounded),
	 BM_CASE(test_buckets_rendered),
	 BM_CASE(test_labels_rendered),
	 BM_CASE(test_whole_exposition))
