/* The Prometheus exposition writer (agent/prom.c) and the Istio TCP series
 * (agent/metrics*.c): escaping, one HELP/TYPE per family, stable label and
 * series order, merging of identical label sets, `unknown` fallbacks. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <zlib.h>
#include "unit.h"
#include "../../agent/agent.h"
#include "../../agent/metrics.h"
#include "../../agent/prom.h"
#include "../../agent/relay.h"

/* Runs fn against a memstream and returns what it wrote (caller frees). */
struct capture {
	char *buf;
	size_t len;
	FILE *f;
};

static void cap_open(struct capture *c)
{
	c->buf = NULL;
	c->len = 0;
	c->f = open_memstream(&c->buf, &c->len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c->f);
}

static char *cap_close(struct capture *c)
{
	fclose(c->f);
	return c->buf;
}

/* ------------------------------------------------------------ escaping */

static void test_label_value_escaping(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "plain", "plain" },
		{ "", "" },
		{ "back\\slash", "back\\\\slash" },
		{ "say \"hi\"", "say \\\"hi\\\"" },
		{ "two\nlines", "two\\nlines" },
		{ "\\\"\n", "\\\\\\\"\\n" },
		{ "tab\tstays", "tab\tstays" },              /* only \\, \" and \n are escaped */
		{ "outbound|9080|v1|r.ns.svc.cluster.local", "outbound|9080|v1|r.ns.svc.cluster.local" },
		{ "utf-8 é", "utf-8 é" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct capture c;
		char *out;

		cap_open(&c);
		bm_prom_write_label_value(c.f, cases[i].in);
		out = cap_close(&c);
		CU_ASSERT_STRING_EQUAL(out, cases[i].want);
		free(out);
	}
}

static void test_help_escaping(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "Total connections.", "Total connections." },
		{ "a\\b", "a\\\\b" },
		{ "line1\nline2", "line1\\nline2" },
		{ "quotes \"stay\"", "quotes \"stay\"" },   /* HELP does not escape quotes */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct capture c;
		char *out;

		cap_open(&c);
		bm_prom_write_help(c.f, cases[i].in);
		out = cap_close(&c);
		CU_ASSERT_STRING_EQUAL(out, cases[i].want);
		free(out);
	}
}

static void test_value_format(void)
{
	static const struct {
		double in;
		const char *want;
	} cases[] = {
		{ 0, "0" },
		{ 1, "1" },
		{ 137, "137" },
		{ 0.5, "0.5" },
		{ 3600000, "3600000" },
		{ 1700000000, "1700000000" },
		{ -2, "-2" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct capture c;
		char *out;

		cap_open(&c);
		bm_prom_write_value(c.f, cases[i].in);
		out = cap_close(&c);
		CU_ASSERT_STRING_EQUAL(out, cases[i].want);
		free(out);
	}
	{
		static const struct {
			double in;
			const char *want;
		} special[] = { { NAN, "NaN" }, { INFINITY, "+Inf" }, { -INFINITY, "-Inf" } };

		for (size_t i = 0; i < 3; i++) {
			struct capture c;
			char *out;

			cap_open(&c);
			bm_prom_write_value(c.f, special[i].in);
			out = cap_close(&c);
			CU_ASSERT_STRING_EQUAL(out, special[i].want);
			free(out);
		}
	}
}

/* ------------------------------------------------------------ family rules */

static void test_family_and_sample_format(void)
{
	struct bm_prom_label l[] = { { "reason", "max_connections" }, { "cluster", "a\"b" } };
	struct bm_prom p;
	struct capture c;
	char *out;

	cap_open(&c);
	bm_prom_init(&p, c.f);
	CU_ASSERT_EQUAL(bm_prom_family(&p, "x_total", BM_PROM_COUNTER, "Help\ntext."), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_u64(&p, "x_total", l, 2, 18446744073709551615ULL), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_u64(&p, "x_total", NULL, 0, 0), 0);
	CU_ASSERT_EQUAL(bm_prom_finish(&p), 0);
	out = cap_close(&c);
	CU_ASSERT_STRING_EQUAL(out,
			       "# HELP x_total Help\\ntext.\n"
			       "# TYPE x_total counter\n"
			       "x_total{reason=\"max_connections\",cluster=\"a\\\"b\"} 18446744073709551615\n"
			       "x_total 0\n");
	free(out);
}

static void test_family_rules(void)
{
	/* Each step runs on one writer in order; want = the call's result. */
	enum op { FAMILY, SAMPLE };
	static const struct {
		enum op op;
		const char *name;
		enum bm_prom_type type;
		const char *label;
		int want;
	} steps[] = {
		{ SAMPLE, "a_total", 0, NULL, -EINVAL },          /* no family open */
		{ FAMILY, "a_total", BM_PROM_COUNTER, NULL, 0 },
		{ SAMPLE, "a_total", 0, "ok", 0 },
		{ SAMPLE, "b_total", 0, NULL, -EINVAL },          /* not this family */
		{ SAMPLE, "a_total", 0, "bad-name", -EINVAL },    /* label name */
		{ SAMPLE, "a_total", 0, "__reserved", -EINVAL },
		{ FAMILY, "h", BM_PROM_HISTOGRAM, NULL, 0 },
		{ SAMPLE, "h_bucket", 0, "le", 0 },
		{ SAMPLE, "h_sum", 0, NULL, 0 },
		{ SAMPLE, "h_count", 0, NULL, 0 },
		{ SAMPLE, "h", 0, NULL, -EINVAL },                /* bare histogram name */
		{ SAMPLE, "h_other", 0, NULL, -EINVAL },
		{ SAMPLE, "a_total", 0, NULL, -EINVAL },          /* a's family is closed */
		{ FAMILY, "a_total", BM_PROM_COUNTER, NULL, -EEXIST }, /* HELP/TYPE once */
		{ FAMILY, "9bad", BM_PROM_GAUGE, NULL, -EINVAL },
		{ FAMILY, "has space", BM_PROM_GAUGE, NULL, -EINVAL },
		{ FAMILY, "ns:ok_metric", BM_PROM_GAUGE, NULL, 0 },
	};
	struct bm_prom p;
	struct capture c;
	char *out;

	cap_open(&c);
	bm_prom_init(&p, c.f);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		int got;

		if (steps[i].op == FAMILY) {
			got = bm_prom_family(&p, steps[i].name, steps[i].type, "help");
		} else {
			struct bm_prom_label l = { steps[i].label, "v" };

			got = bm_prom_sample(&p, steps[i].name, &l, steps[i].label ? 1 : 0, 1);
		}
		if (got != steps[i].want)
			fprintf(stderr, "step %zu (%s): got %d want %d\n", i, steps[i].name, got,
				steps[i].want);
		CU_ASSERT_EQUAL(got, steps[i].want);
	}
	/* Errors are sticky: finish reports the first one. */
	CU_ASSERT_EQUAL(bm_prom_finish(&p), -EINVAL);
	out = cap_close(&c);
	/* Refused calls wrote nothing: a_total's HELP appears once. */
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "# HELP a_total"));
	CU_ASSERT_PTR_NULL(strstr(strstr(out, "# HELP a_total") + 1, "# HELP a_total"));
	CU_ASSERT_PTR_NULL(strstr(out, "b_total"));
	CU_ASSERT_PTR_NULL(strstr(out, "bad-name"));
	free(out);
}

/* A prepared label set writes exactly what the per-sample labels write
 * (escaping included), with le appended, and follows the same family and
 * label-name rules. */
static void test_labelset_same_as_labels(void)
{
	struct bm_prom_label l[] = { { "a", "x\"y\\z\nw" }, { "b", NULL }, { "c", "plain" } };
	struct bm_prom_label le = { "le", "0.5" };
	struct bm_prom_label with_le[4] = { l[0], l[1], l[2], le };
	struct bm_prom_labelset ls, empty, bad;
	struct bm_prom p1, p2;
	struct capture c1, c2;
	char *o1, *o2;

	CU_ASSERT_EQUAL_FATAL(bm_prom_labelset_init(&ls, l, 3), 0);
	CU_ASSERT_EQUAL_FATAL(bm_prom_labelset_init(&empty, NULL, 0), 0);
	cap_open(&c1);
	cap_open(&c2);
	bm_prom_init(&p1, c1.f);
	bm_prom_init(&p2, c2.f);
	CU_ASSERT_EQUAL(bm_prom_family(&p1, "h", BM_PROM_HISTOGRAM, "help"), 0);
	CU_ASSERT_EQUAL(bm_prom_family(&p2, "h", BM_PROM_HISTOGRAM, "help"), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_u64(&p1, "h_bucket", with_le, 4, 7), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_set_u64(&p2, "h_bucket", &ls, &le, 7), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_u64(&p1, "h_sum", l, 3, 18446744073709551615ULL), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_set_u64(&p2, "h_sum", &ls, NULL, 18446744073709551615ULL), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_u64(&p1, "h_count", &le, 1, 0), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_set_u64(&p2, "h_count", &empty, &le, 0), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_u64(&p1, "h_count", NULL, 0, 10), 0);
	CU_ASSERT_EQUAL(bm_prom_sample_set_u64(&p2, "h_count", &empty, NULL, 10), 0);
	/* Outside the family, or a bad extra label: refused, nothing written. */
	CU_ASSERT_EQUAL(bm_prom_sample_set_u64(&p2, "other", &ls, NULL, 1), -EINVAL);
	CU_ASSERT_EQUAL(bm_prom_sample_set_u64(&p2, "h_sum", &ls,
					       &(struct bm_prom_label){ "__x", "1" }, 1), -EINVAL);
	CU_ASSERT_EQUAL(bm_prom_finish(&p1), 0);
	CU_ASSERT_EQUAL(bm_prom_finish(&p2), -EINVAL);
	o1 = cap_close(&c1);
	o2 = cap_close(&c2);
	CU_ASSERT_STRING_EQUAL(o1, o2);
	CU_ASSERT_PTR_NOT_NULL(strstr(o2, "h_bucket{a=\"x\\\"y\\\\z\\nw\",b=\"\",c=\"plain\",le=\"0.5\"} 7\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o2, "h_count 10\n"));
	free(o1);
	free(o2);
	bm_prom_labelset_free(&ls);
	bm_prom_labelset_free(&empty);
	/* Bad label names are refused when the set is prepared. */
	CU_ASSERT_EQUAL(bm_prom_labelset_init(&bad, &(struct bm_prom_label){ "bad-name", "v" }, 1),
			-EINVAL);
	CU_ASSERT_PTR_NULL(bad.text);
}

/* ------------------------------------------------------------ Istio labels */

static json_t *labels_of(const char *json)
{
	return json ? json_loads(json, 0, NULL) : NULL;
}

static void test_istio_label_fallbacks(void)
{
	static const struct {
		const char *what;
		struct {
			const char *workload, *ns, *sa, *labels;
		} src, dst;
		const char *host, *svc_ns;
		/* expected: label -> value; NULL ends */
		struct {
			enum bm_istio_label l;
			const char *v;
		} want[12];
	} cases[] = {
		{ "nothing known",
		  { NULL, NULL, NULL, NULL }, { NULL, NULL, NULL, NULL }, NULL, NULL,
		  { { BM_L_REPORTER, "source" }, { BM_L_SOURCE_WORKLOAD, "unknown" },
		    { BM_L_SOURCE_WORKLOAD_NAMESPACE, "unknown" }, { BM_L_SOURCE_PRINCIPAL, "unknown" },
		    { BM_L_SOURCE_APP, "unknown" }, { BM_L_SOURCE_CANONICAL_REVISION, "latest" },
		    { BM_L_DESTINATION_SERVICE, "unknown" }, { BM_L_DESTINATION_SERVICE_NAME, "unknown" },
		    { BM_L_DESTINATION_CANONICAL_REVISION, "latest" }, { BM_L_SOURCE_CLUSTER, "unknown" },
		    { BM_L_REQUEST_PROTOCOL, "tcp" }, { BM_L_RESPONSE_FLAGS, "-" } } },
		{ "plain app/version labels, service account",
		  { "client", "default", "sleep", "{\"app\":\"sleep\"}" },
		  { "reviews-v2", "bookinfo", "reviews", "{\"app\":\"reviews\",\"version\":\"v2\"}" },
		  "reviews.bookinfo.svc.cluster.local", "bookinfo",
		  { { BM_L_SOURCE_PRINCIPAL, "spiffe://cluster.local/ns/default/sa/sleep" },
		    { BM_L_SOURCE_APP, "sleep" }, { BM_L_SOURCE_VERSION, "unknown" },
		    { BM_L_SOURCE_CANONICAL_SERVICE, "sleep" }, { BM_L_SOURCE_CANONICAL_REVISION, "latest" },
		    { BM_L_DESTINATION_PRINCIPAL, "spiffe://cluster.local/ns/bookinfo/sa/reviews" },
		    { BM_L_DESTINATION_VERSION, "v2" }, { BM_L_DESTINATION_CANONICAL_REVISION, "v2" },
		    { BM_L_DESTINATION_SERVICE, "reviews.bookinfo.svc.cluster.local" },
		    { BM_L_DESTINATION_SERVICE_NAME, "reviews" },
		    { BM_L_DESTINATION_SERVICE_NAMESPACE, "bookinfo" },
		    { BM_L_DESTINATION_WORKLOAD, "reviews-v2" } } },
		{ "canonical labels win over app/version",
		  { "c", "default", "", "{\"app\":\"a\",\"service.istio.io/canonical-name\":\"canon\","
					"\"app.kubernetes.io/name\":\"k8s\",\"version\":\"v1\","
					"\"app.kubernetes.io/version\":\"k1\"}" },
		  { "d", "ns2", NULL, "{\"app.kubernetes.io/name\":\"k8s\",\"app\":\"a\","
				      "\"service.istio.io/canonical-revision\":\"r7\",\"version\":\"v1\"}" },
		  "db.example.com", "ns2",
		  { { BM_L_SOURCE_APP, "canon" }, { BM_L_SOURCE_CANONICAL_SERVICE, "canon" },
		    { BM_L_SOURCE_VERSION, "k1" }, { BM_L_SOURCE_PRINCIPAL, "unknown" },
		    { BM_L_DESTINATION_APP, "k8s" }, { BM_L_DESTINATION_VERSION, "r7" },
		    { BM_L_DESTINATION_PRINCIPAL, "unknown" },
		    /* a ServiceEntry host that is not NAME.NS.svc.* is its own name */
		    { BM_L_DESTINATION_SERVICE_NAME, "db.example.com" },
		    { BM_L_DESTINATION_SERVICE, "db.example.com" } } },
		{ "FQDN of another namespace keeps the whole host",
		  { NULL, NULL, NULL, NULL }, { NULL, NULL, NULL, NULL },
		  "reviews.other.svc.cluster.local", "bookinfo",
		  { { BM_L_DESTINATION_SERVICE_NAME, "reviews.other.svc.cluster.local" },
		    { BM_L_DESTINATION_SERVICE_NAMESPACE, "bookinfo" } } },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *sl = labels_of(cases[i].src.labels), *dl = labels_of(cases[i].dst.labels);
		struct bm_peer src = { cases[i].src.workload, cases[i].src.ns, cases[i].src.sa, sl };
		struct bm_peer dst = { cases[i].dst.workload, cases[i].dst.ns, cases[i].dst.sa, dl };
		struct bm_dest_service svc = { cases[i].host, cases[i].svc_ns };
		struct bm_tcp_series s;

		CU_ASSERT_EQUAL_FATAL(bm_tcp_series_init(&s, &src, &dst, &svc, NULL, "none"), 0);
		for (int k = 0; k < BM_L_COUNT; k++)
			CU_ASSERT(s.v[k] && *s.v[k]);   /* no label is ever empty */
		CU_ASSERT_STRING_EQUAL(s.v[BM_L_CONNECTION_SECURITY_POLICY], "none");
		for (size_t w = 0; w < 12 && cases[i].want[w].v; w++) {
			const char *got = s.v[cases[i].want[w].l];

			if (strcmp(got, cases[i].want[w].v))
				fprintf(stderr, "%s: %s = %s, want %s\n", cases[i].what,
					bm_istio_label_names[cases[i].want[w].l], got,
					cases[i].want[w].v);
			CU_ASSERT_STRING_EQUAL(got, cases[i].want[w].v);
		}
		bm_tcp_series_free(&s);
		json_decref(sl);
		json_decref(dl);
	}
}

static void test_peer_from_workload_entry(void)
{
	static const struct {
		const char *we, *workload, *ns, *sa;
	} cases[] = {
		{ "{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"reviews-v1\",\"namespace\":\"bookinfo\"},"
		  "\"spec\":{\"address\":\"198.18.1.2\",\"serviceAccount\":\"reviews\"}}",
		  "reviews-v1", "bookinfo", "reviews" },
		{ "{\"kind\":\"WorkloadEntry\",\"metadata\":{\"name\":\"vm-7\",\"namespace\":\"ns\"},"
		  "\"spec\":{\"address\":\"198.18.1.3\",\"labels\":"
		  "{\"service.istio.io/workload-name\":\"ratings\"}}}",
		  "ratings", "ns", NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *we = json_loads(cases[i].we, 0, NULL);
		struct bm_peer p;

		CU_ASSERT_PTR_NOT_NULL_FATAL(we);
		bm_peer_from_workload_entry(we, &p);
		CU_ASSERT_STRING_EQUAL(p.workload, cases[i].workload);
		CU_ASSERT_STRING_EQUAL(p.ns, cases[i].ns);
		if (cases[i].sa) {
			CU_ASSERT_STRING_EQUAL(p.sa, cases[i].sa);
		} else {
			CU_ASSERT_PTR_NULL(p.sa);
		}
		json_decref(we);
	}
}

/* ------------------------------------------------------------ series order, merging */

static char *render_series(const int *order, size_t n)
{
	static const struct {
		const char *src, *dst, *flags;
		uint64_t opened, closed, sent, recv;
	} rows[] = {
		{ "client", "reviews-v1", "-", 10, 9, 1000, 2000 },
		{ "client", "reviews-v2", "-", 5, 5, 500, 700 },
		{ "client", "reviews-v1", "-", 1, 1, 10, 20 },    /* same labels as row 0 */
		{ "client", "reviews-v1", "UF", 3, 3, 0, 0 },
		{ "alpha", "reviews-v1", "-", 2, 2, 1, 1 },
	};
	struct bm_tcp_series s[8];
	struct bm_prom p;
	struct capture c;

	for (size_t i = 0; i < n; i++) {
		int r = order[i];
		struct bm_peer src = { rows[r].src, "default", "sa", NULL };
		struct bm_peer dst = { rows[r].dst, "bookinfo", "reviews", NULL };
		struct bm_dest_service svc = { "reviews.bookinfo.svc.cluster.local", "bookinfo" };

		CU_ASSERT_EQUAL_FATAL(bm_tcp_series_init(&s[i], &src, &dst, &svc, rows[r].flags, "none"), 0);
		s[i].opened = rows[r].opened;
		s[i].closed = rows[r].closed;
		s[i].sent_bytes = rows[r].sent;
		s[i].received_bytes = rows[r].recv;
	}
	cap_open(&c);
	bm_prom_init(&p, c.f);
	CU_ASSERT_EQUAL(bm_tcp_render(&p, s, n), 0);
	CU_ASSERT_EQUAL(bm_prom_finish(&p), 0);
	for (size_t i = 0; i < n; i++)
		bm_tcp_series_free(&s[i]);
	return cap_close(&c);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static void test_series_stable_and_merged(void)
{
	static const int orders[][5] = {
		{ 0, 1, 2, 3, 4 }, { 4, 3, 2, 1, 0 }, { 2, 4, 0, 3, 1 }, { 3, 0, 4, 1, 2 },
	};
	char *first = NULL;

	for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
		char *out = render_series(orders[o], 5);

		if (!first) {
			first = out;
			continue;
		}
		/* Output does not depend on the order rows came from the map. */
		CU_ASSERT_STRING_EQUAL(out, first);
		free(out);
	}
	/* Four families, each HELP and TYPE once; 4 distinct series (rows 0 and
	 * 2 merged) in each. */
	CU_ASSERT_EQUAL(count(first, "# HELP "), 4);
	CU_ASSERT_EQUAL(count(first, "# TYPE "), 4);
	CU_ASSERT_EQUAL(count(first, "# TYPE istio_tcp_connections_opened_total counter\n"), 1);
	CU_ASSERT_EQUAL(count(first, "\nistio_tcp_connections_opened_total{"), 4);
	CU_ASSERT_EQUAL(count(first, "\nistio_tcp_received_bytes_total{"), 4);
	/* the merged row: 10+1 opened, 1000+10 sent, 2000+20 received */
	CU_ASSERT_PTR_NOT_NULL(strstr(first, "source_workload=\"client\"") );
	{
		const char *line = strstr(first, "istio_tcp_connections_opened_total{reporter=\"source\","
						 "source_workload=\"client\"");
		const char *eol;

		CU_ASSERT_PTR_NOT_NULL_FATAL(line);
		/* sorted: destination reviews-v1 "-" before "UF", then reviews-v2 */
		eol = strchr(line, '\n');
		CU_ASSERT_PTR_NOT_NULL_FATAL(eol);
		CU_ASSERT(eol - line > 3 && !strncmp(eol - 3, " 11", 3));
		CU_ASSERT_PTR_NOT_NULL(strstr(line, "destination_workload=\"reviews-v1\""));
		CU_ASSERT(strstr(line, "response_flags=\"-\"") < eol);
	}
	CU_ASSERT_PTR_NOT_NULL(strstr(first, "response_flags=\"-\",connection_security_policy=\"none\"} 1010\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(first, "response_flags=\"-\",connection_security_policy=\"none\"} 2020\n"));
	/* Labels come in one fixed order: reporter first, the reference's order after. */
	{
		const char *p = strstr(first, "istio_tcp_sent_bytes_total{");
		const char *prev = p;

		CU_ASSERT_PTR_NOT_NULL_FATAL(p);
		for (int k = 0; k < BM_L_COUNT; k++) {
			char needle[64];
			const char *at;

			snprintf(needle, sizeof(needle), "%s%s=\"", k ? "," : "{", bm_istio_label_names[k]);
			at = strstr(prev, needle);
			CU_ASSERT_PTR_NOT_NULL_FATAL(at);
			CU_ASSERT(at >= prev && at < strchr(p, '\n'));
			prev = at;
		}
	}
	free(first);
}

/* ------------------------------------------------------------ whole exposition */

/* A minimal text-format checker: every sample belongs to the family whose
 * TYPE came last; no family is declared twice; every line ends in \n. */
static void check_exposition(const char *text)
{
	char family[256] = "", declared[64][256];
	int n_declared = 0;
	const char *line = text;

	CU_ASSERT(*text && text[strlen(text) - 1] == '\n');
	while (*line) {
		const char *eol = strchr(line, '\n');
		char name[256];
		size_t len;

		CU_ASSERT_PTR_NOT_NULL_FATAL(eol);
		if (!strncmp(line, "# TYPE ", 7)) {
			sscanf(line + 7, "%255s", family);
			for (int i = 0; i < n_declared; i++)
				CU_ASSERT(strcmp(declared[i], family) != 0);
			if (n_declared < 64)
				snprintf(declared[n_declared++], sizeof(declared[0]), "%s", family);
		} else if (line[0] != '#') {
			len = strcspn(line, "{ ");
			CU_ASSERT(len < sizeof(name));
			snprintf(name, sizeof(name), "%.*s", (int)len, line);
			CU_ASSERT_STRING_EQUAL(name, family);
		}
		line = eol + 1;
	}
}

static void test_render_without_maps(void)
{
	/* An agent with nothing loaded (fds -1): meshd's own families still
	 * render, the TCP families are present and empty, the text is valid. */
	struct bm_agent *a = calloc(1, sizeof(*a));
	struct capture c;
	char *out;

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	memset(&a->loader.fd, 0xff, sizeof(a->loader.fd));
	a->applied_generation = 7;
	a->store_generation = 9;
	cap_open(&c);
	CU_ASSERT_EQUAL(bm_metrics_render(a, c.f), 0);
	out = cap_close(&c);
	check_exposition(out);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "# TYPE istio_tcp_connections_opened_total counter\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nbpfmesh_config_applied_generation 7\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nbpfmesh_config_store_generation 9\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nbpfmesh_build_info{version=\""));
	free(out);
	free(a);
}

/* ------------------------------------------------------------ mesh rows */

static struct bm_mesh_key mkey(int reporter, int mtls, const char *src, const char *dst,
			       const char *ip, uint16_t port)
{
	struct bm_mesh_key k;

	memset(&k, 0, sizeof(k));
	k.reporter = (uint8_t)reporter;
	k.mtls = (uint8_t)mtls;
	k.port = port;
	if (ip)
		inet_pton(AF_INET, ip, &k.ip);
	snprintf(k.src, sizeof(k.src), "%s", src);
	snprintf(k.dst, sizeof(k.dst), "%s", dst);
	return k;
}

static void test_mesh_table_fold(void)
{
	/* Two workers' tables: rows are per workload key, connections fold in
	 * at close, collect merges identical keys across workers. */
	struct bm_mesh_table *t1 = calloc(1, sizeof(*t1)), *t2 = calloc(1, sizeof(*t2));
	struct bm_mesh_key a = mkey(BM_MESH_SOURCE, 1, "default/client", "", "10.0.2.5", 8080);
	struct bm_mesh_key b = mkey(BM_MESH_DESTINATION, 1, "cluster.local/ns/default/sa/client",
				    "default/server", NULL, 8080);
	struct bm_mesh_row *r, *out = NULL;
	size_t n = 0, cap = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(t1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t2);
	for (int i = 0; i < 3; i++) {
		r = bm_mesh_open(t1, &a);
		CU_ASSERT_PTR_NOT_NULL_FATAL(r);
		bm_mesh_close(r, 100, 1000);
	}
	r = bm_mesh_open(t1, &a);   /* still open: counted opened, not closed */
	CU_ASSERT_PTR_NOT_NULL(r);
	r = bm_mesh_open(t2, &a);
	bm_mesh_close(r, 7, 9);
	r = bm_mesh_open(t2, &b);
	bm_mesh_close(r, 1, 2);
	bm_mesh_close(NULL, 5, 5);   /* a connection without a row: no-op */
	CU_ASSERT_EQUAL(bm_mesh_collect(t1, &out, &n, &cap), 0);
	CU_ASSERT_EQUAL(bm_mesh_collect(t2, &out, &n, &cap), 0);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	for (size_t i = 0; i < n; i++) {
		if (out[i].k.reporter == BM_MESH_SOURCE) {
			CU_ASSERT_EQUAL(out[i].opened, 5);
			CU_ASSERT_EQUAL(out[i].closed, 4);
			CU_ASSERT_EQUAL(out[i].bytes_up, 307);
			CU_ASSERT_EQUAL(out[i].bytes_down, 3009);
		} else {
			CU_ASSERT_EQUAL(out[i].opened, 1);
			CU_ASSERT_EQUAL(out[i].closed, 1);
			CU_ASSERT_EQUAL(out[i].bytes_up, 1);
			CU_ASSERT_EQUAL(out[i].bytes_down, 2);
			CU_ASSERT_STRING_EQUAL(out[i].k.dst, "default/server");
		}
	}
	/* Bounded: a full table refuses new keys (counted), old keys go on. */
	memset(t2, 0, sizeof(*t2));
	for (int i = 0; i < BM_MESH_SLOTS; i++) {
		struct bm_mesh_key k = a;

		k.port = (uint16_t)(i + 1);
		CU_ASSERT_PTR_NOT_NULL(bm_mesh_open(t2, &k));
	}
	CU_ASSERT_PTR_NULL(bm_mesh_open(t2, &b));
	CU_ASSERT_EQUAL(t2->overflow, 1);
	a.port = 5;
	CU_ASSERT_PTR_NOT_NULL(bm_mesh_open(t2, &a));
	free(out);
	free(t1);
	free(t2);
}

static void test_mesh_rows_render(void)
{
	/* Proxy rows get the kernel rows' labels from WorkloadEntries, the
	 * reporter of their side and the security that really applied; rows
	 * that end up with identical labels merge. */
	struct bm_agent *a = calloc(1, sizeof(*a));
	struct bm_pod pods[2];
	struct bm_mesh_row rows[5];
	struct capture c;
	char *out;
	json_error_t je;

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	memset(&a->loader.fd, 0xff, sizeof(a->loader.fd));
	memset(pods, 0, sizeof(pods));
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
	memset(rows, 0, sizeof(rows));
	rows[0].k = mkey(BM_MESH_SOURCE, 1, "default/client-0", "", "10.0.2.5", 8080);
	rows[0].opened = 30; rows[0].closed = 30; rows[0].bytes_up = 3000; rows[0].bytes_down = 6000;
	/* the same workloads from another backend port of the same pod: same labels */
	rows[1].k = mkey(BM_MESH_SOURCE, 1, "default/client-0", "", "10.0.2.5", 8081);
	rows[1].opened = 7; rows[1].closed = 7; rows[1].bytes_up = 700; rows[1].bytes_down = 1400;
	rows[2].k = mkey(BM_MESH_DESTINATION, 1, "cluster.local/ns/default/sa/client",
			 "default/server-0", NULL, 8080);
	rows[2].opened = 37; rows[2].closed = 37; rows[2].bytes_up = 3700; rows[2].bytes_down = 7400;
	/* plaintext to the same server: its own series, policy none */
	rows[3].k = mkey(BM_MESH_DESTINATION, 0, "unknown", "default/server-0", NULL, 8080);
	rows[3].opened = 2; rows[3].closed = 1; rows[3].bytes_up = 5; rows[3].bytes_down = 6;
	/* same-node delivery, source side: identity but no TLS */
	rows[4].k = mkey(BM_MESH_SOURCE, 0, "default/client-0", "", "10.0.2.5", 8080);
	rows[4].opened = 1; rows[4].closed = 1; rows[4].bytes_up = 1; rows[4].bytes_down = 1;
	cap_open(&c);
	CU_ASSERT_EQUAL(bm_metrics_render_mesh_rows(a, c.f, rows, 5), 0);
	out = cap_close(&c);
	check_exposition(out);
	CU_ASSERT_EQUAL(count(out, "# TYPE istio_tcp_"), 4);
	CU_ASSERT_EQUAL(count(out, "\nistio_tcp_connections_opened_total{"), 4);
	CU_ASSERT_PTR_NOT_NULL(strstr(out,
		"istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"client\","
		"source_workload_namespace=\"default\",source_principal=\"spiffe://cluster.local/ns/default/sa/client\","
		"source_app=\"client\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(out,
		"destination_workload=\"server-0\",destination_workload_namespace=\"default\","
		"destination_principal=\"spiffe://cluster.local/ns/default/sa/server\",destination_app=\"server\","
		"destination_version=\"v1\""));
	{
		const char *l = strstr(out, "istio_tcp_connections_opened_total{reporter=\"source\"");
		const char *eol = l ? strchr(l, '\n') : NULL;

		CU_ASSERT_PTR_NOT_NULL_FATAL(eol);
		/* sorted: "mutual_tls" < "none"; the two mutual_tls rows merged */
		CU_ASSERT(eol - l > 20 && !strncmp(eol - 3, " 37", 3));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "connection_security_policy=\"mutual_tls\"} 37\n"));
	}
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "istio_tcp_sent_bytes_total{reporter=\"source\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "connection_security_policy=\"mutual_tls\"} 7400\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "connection_security_policy=\"mutual_tls\"} 3700\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "connection_security_policy=\"none\"} 2\n"));
	CU_ASSERT_EQUAL(count(out, "{reporter=\"destination\""), 8);
	CU_ASSERT_EQUAL(count(out, "{reporter=\"source\""), 8);
	/* server side: the source is known by its principal only */
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "{reporter=\"destination\",source_workload=\"unknown\","
					   "source_workload_namespace=\"default\","
					   "source_principal=\"spiffe://cluster.local/ns/default/sa/client\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "{reporter=\"destination\",source_workload=\"unknown\","
					   "source_workload_namespace=\"unknown\",source_principal=\"unknown\""));
	free(out);
	json_decref(a->resources);
	free(a);
}

/* ------------------------------------------------------------ HTTP endpoint */

static int render_fixed(void *arg, FILE *f)
{
	(*(int *)arg)++;
	fputs("# HELP up_total x\n# TYPE up_total counter\nup_total 1\n", f);
	return 0;
}

static size_t resp_len;   /* of http_exchange's last response (bodies may hold NULs) */

/* One request on a fresh connection; returns the whole response. */
static char *http_exchange(int port, const char *req, size_t req_len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 5 };
	static char resp[256 * 1024];
	size_t len = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (req_len && write(fd, req, req_len) != (ssize_t)req_len) {
		close(fd);
		return NULL;
	}
	while (len < sizeof(resp) - 1 && (n = read(fd, resp + len, sizeof(resp) - 1 - len)) > 0)
		len += (size_t)n;
	resp[len] = 0;
	resp_len = len;
	close(fd);
	return resp;
}

static void test_http_endpoint(void)
{
	static const struct {
		const char *req, *status, *has;
		int renders;   /* did it call render */
	} cases[] = {
		{ "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", "HTTP/1.1 200 OK\r\n",
		  "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", 1 },
		{ "GET /metrics?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK\r\n", "\r\n\r\n# HELP up_total", 1 },
		{ "HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n", "Content-Length: 53\r\n", 1 },
		{ "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n", "Connection: close\r\n", 0 },
		{ "GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n", "", 0 },
		{ "POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed\r\n", "Allow: GET, HEAD", 0 },
		{ "garbage\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n", "", 0 },
		{ "GET /metrics SMTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n", "", 0 },
	};
	struct bm_prom_server *srv;
	int renders = 0, port;

	CU_ASSERT_EQUAL(bm_prom_serve("127.0.0.1", render_fixed, &renders, &srv), -EINVAL);
	CU_ASSERT_EQUAL(bm_prom_serve("nowhere:80", render_fixed, &renders, &srv), -EINVAL);
	CU_ASSERT_EQUAL_FATAL(bm_prom_serve("127.0.0.1:0", render_fixed, &renders, &srv), 0);
	port = bm_prom_server_port(srv);
	CU_ASSERT_FATAL(port > 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int before = renders;
		char *r = http_exchange(port, cases[i].req, strlen(cases[i].req));

		CU_ASSERT_PTR_NOT_NULL_FATAL(r);
		if (strncmp(r, cases[i].status, strlen(cases[i].status)) || !strstr(r, cases[i].has))
			fprintf(stderr, "request %zu: got %.80s\n", i, r);
		CU_ASSERT_EQUAL(strncmp(r, cases[i].status, strlen(cases[i].status)), 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(r, cases[i].has));
		CU_ASSERT_EQUAL(renders - before, cases[i].renders);
		if (!strncmp(cases[i].req, "HEAD", 4))
			CU_ASSERT_PTR_NULL(strstr(r, "up_total"));
	}
	/* A client that connects and says nothing is cut off, and the next
	 * request is served. */
	CU_ASSERT_PTR_NOT_NULL(strstr(http_exchange(port, NULL, 0), "400 Bad Request"));
	CU_ASSERT_PTR_NOT_NULL(strstr(http_exchange(port, cases[0].req, strlen(cases[0].req)), "200 OK"));
	bm_prom_server_stop(srv);
}

/* Accept-Encoding as RFC 9110 reads it: names are case-insensitive, q=0
 * refuses, an explicit gzip beats "*", several lines add up. */
static void test_accepts_gzip(void)
{
	static const struct {
		const char *req;
		int gzip;
	} cases[] = {
		{ "GET /metrics HTTP/1.1\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n", 1 },
		/* Prometheus 2 and 3 */
		{ "GET /metrics HTTP/1.1\r\nHost: n\r\nUser-Agent: Prometheus/2.42.0\r\n"
		  "Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n"
		  "X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n", 1 },
		{ "GET /metrics HTTP/1.1\r\naccept-encoding:deflate, GZip;q=0.5\r\n\r\n", 1 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: x-gzip\r\n\r\n", 1 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: *\r\n\r\n", 1 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip;q=0\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip; q=0.000\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: *, gzip;q=0\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: *;q=0\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: identity\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: br, deflate\r\n"
		  "Accept-Encoding: gzip\r\n\r\n", 1 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzipx, xgzip\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip;q=2\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip;q=abc\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip;level=1;q=0.8\r\n\r\n", 1 },
		/* another header that mentions gzip is not Accept-Encoding */
		{ "GET /metrics HTTP/1.1\r\nX-Accept-Encoding: gzip\r\nAccept-Encodings: gzip\r\n\r\n", 0 },
		/* nothing after the header block counts */
		{ "GET /metrics HTTP/1.1\r\n\r\nAccept-Encoding: gzip\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.0\nAccept-Encoding: gzip\n\n", 1 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding:\r\n\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nAccept-Encoding: ;;,,;q=\r\n\r\n", 0 },
		{ "", 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = bm_http_accepts_gzip(cases[i].req);

		if (got != cases[i].gzip)
			fprintf(stderr, "case %zu: %d for %s\n", i, got, cases[i].req);
		CU_ASSERT_EQUAL(got, cases[i].gzip);
	}
}

/* An exposition of about 150 KB: long label sets repeated, as Istio's are. */
static int render_big(void *arg, FILE *f)
{
	(*(int *)arg)++;
	fputs("# HELP big_total x\n# TYPE big_total counter\n", f);
	for (int i = 0; i < 1500; i++)
		fprintf(f, "big_total{reporter=\"source\",source_workload=\"client-%d\","
			   "destination_service=\"svc-%d.default.svc.cluster.local\",le=\"%d\"} %d\n",
			i % 7, i % 13, i, i * 37);
	return 0;
}

/* The body after a response's headers, its length in *n (from resp_len). */
static const char *resp_body(const char *r, size_t *n)
{
	const char *b = strstr(r, "\r\n\r\n");

	if (!b)
		return NULL;
	b += 4;
	*n = resp_len - (size_t)(b - r);
	return b;
}

static long content_length(const char *r)
{
	const char *h = strstr(r, "Content-Length: ");

	return h ? strtol(h + 16, NULL, 10) : -1;
}

/* A client that takes gzip gets the same exposition compressed, with its
 * Content-Encoding; one that doesn't gets it plain; HEAD gets the length its
 * GET would; a later scrape reuses the compressor and is still whole. */
static void test_endpoint_gzip(void)
{
	static const char gz_req[] = "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n";
	static const char head_req[] = "HEAD /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n";
	static const char plain_req[] = "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip;q=0\r\n\r\n";
	struct bm_prom_server *srv;
	struct capture c;
	char *want, *r, *got;
	const char *body;
	size_t n = 0;
	int renders = 0, port;
	long gz_len = -1;

	cap_open(&c);
	render_big(&renders, c.f);
	want = cap_close(&c);
	CU_ASSERT_FATAL(c.len > 100000);
	got = malloc(c.len + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(got);
	CU_ASSERT_EQUAL_FATAL(bm_prom_serve("127.0.0.1:0", render_big, &renders, &srv), 0);
	port = bm_prom_server_port(srv);
	for (int round = 0; round < 2; round++) {
		uLongf got_len = c.len + 1;

		r = http_exchange(port, gz_req, strlen(gz_req));
		CU_ASSERT_PTR_NOT_NULL_FATAL(r);
		CU_ASSERT_EQUAL(strncmp(r, "HTTP/1.1 200 OK\r\n", 17), 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(r, "\r\nContent-Encoding: gzip\r\n"));
		CU_ASSERT_PTR_NOT_NULL(strstr(r, "\r\nVary: Accept-Encoding\r\n"));
		body = resp_body(r, &n);
		CU_ASSERT_PTR_NOT_NULL_FATAL(body);
		gz_len = content_length(r);
		CU_ASSERT_EQUAL((long)n, gz_len);
		/* gzip magic, and far smaller than the text */
		CU_ASSERT(n > 10 && (unsigned char)body[0] == 0x1f && (unsigned char)body[1] == 0x8b);
		CU_ASSERT(n < c.len / 5);
		{
			z_stream z = { 0 };

			CU_ASSERT_EQUAL_FATAL(inflateInit2(&z, 15 + 16), Z_OK);
			z.next_in = (Bytef *)(uintptr_t)body;
			z.avail_in = (uInt)n;
			z.next_out = (Bytef *)got;
			z.avail_out = (uInt)got_len;
			CU_ASSERT_EQUAL(inflate(&z, Z_FINISH), Z_STREAM_END);
			got_len = z.total_out;
			inflateEnd(&z);
		}
		CU_ASSERT_EQUAL(got_len, c.len);
		CU_ASSERT(got_len == c.len && !memcmp(got, want, c.len));
	}
	r = http_exchange(port, head_req, strlen(head_req));
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_PTR_NOT_NULL(strstr(r, "\r\nContent-Encoding: gzip\r\n"));
	CU_ASSERT_EQUAL(content_length(r), gz_len);
	CU_ASSERT_PTR_NOT_NULL((body = resp_body(r, &n)));
	CU_ASSERT_EQUAL(n, 0);
	r = http_exchange(port, plain_req, strlen(plain_req));
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_PTR_NULL(strstr(r, "Content-Encoding"));
	CU_ASSERT_PTR_NOT_NULL(strstr(r, "\r\nVary: Accept-Encoding\r\n"));
	body = resp_body(r, &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(body);
	CU_ASSERT(n == c.len && !memcmp(body, want, c.len));
	CU_ASSERT_EQUAL(renders, 1 + 4);
	bm_prom_server_stop(srv);
	free(got);
	free(want);
}

static int render_nice(void *arg, FILE *f)
{
	int *nice_seen = arg;

	errno = 0;
	*nice_seen = getpriority(PRIO_PROCESS, (id_t)gettid());
	fprintf(f, "# nice %d\n", *nice_seen);
	return errno ? -errno : 0;
}

/* Scrapes render at the lowest priority, so the data path's workers run
 * first; the calling thread's own priority is untouched. */
static void test_endpoint_low_priority(void)
{
	struct bm_prom_server *srv;
	int nice_seen = -100, port;
	static const char req[] = "GET /metrics HTTP/1.1\r\n\r\n";
	int mine = getpriority(PRIO_PROCESS, (id_t)gettid());

	CU_ASSERT_EQUAL_FATAL(bm_prom_serve("127.0.0.1:0", render_nice, &nice_seen, &srv), 0);
	port = bm_prom_server_port(srv);
	CU_ASSERT_PTR_NOT_NULL(strstr(http_exchange(port, req, strlen(req)), "200 OK"));
	CU_ASSERT_EQUAL(nice_seen, 19);
	CU_ASSERT_EQUAL(getpriority(PRIO_PROCESS, (id_t)gettid()), mine);
	bm_prom_server_stop(srv);
}

static int render_not_ready(void *arg, FILE *f)
{
	int *ready = arg;

	fprintf(f, *ready ? "ready\n" : "not ready: starting\n");
	return *ready ? 0 : -EAGAIN;
}

/* The readiness endpoint: its own path, 503 with the reason until ready. */
static void test_ready_endpoint(void)
{
	static const char req[] = "GET /healthz/ready HTTP/1.1\r\n\r\n";
	struct bm_prom_server *srv;
	int ready = 0, port;
	char *r;

	CU_ASSERT_EQUAL_FATAL(bm_http_serve("127.0.0.1:0", "/healthz/ready", "text/plain; charset=utf-8",
					    render_not_ready, &ready, &srv), 0);
	port = bm_prom_server_port(srv);
	r = http_exchange(port, req, strlen(req));
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(strncmp(r, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(r, "not ready: starting"));
	ready = 1;
	r = http_exchange(port, req, strlen(req));
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(strncmp(r, "HTTP/1.1 200 OK\r\n", 17), 0);
	r = http_exchange(port, "GET /metrics HTTP/1.1\r\n\r\n", 25);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(strncmp(r, "HTTP/1.1 404 Not Found\r\n", 24), 0);
	bm_prom_server_stop(srv);
}

BM_SUITE(metrics,
	 BM_CASE(test_label_value_escaping),
	 BM_CASE(test_help_escaping),
	 BM_CASE(test_value_format),
	 BM_CASE(test_family_and_sample_format),
	 BM_CASE(test_family_rules),
	 BM_CASE(test_labelset_same_as_labels),
	 BM_CASE(test_istio_label_fallbacks),
	 BM_CASE(test_peer_from_workload_entry),
	 BM_CASE(test_series_stable_and_merged),
	 BM_CASE(test_render_without_maps),
	 BM_CASE(test_mesh_table_fold),
	 BM_CASE(test_mesh_rows_render),
	 BM_CASE(test_http_endpoint),
	 BM_CASE(test_accepts_gzip),
	 BM_CASE(test_endpoint_gzip),
	 BM_CASE(test_endpoint_low_priority),
	 BM_CASE(test_ready_endpoint))
