/* Tracing (agent/tracing.c): W3C traceparent and B3 (multi and single)
 * parsing, which context a request carries, the sampling decision (0 %,
 * 100 %, an incoming decision honoured), the headers forwarded upstream,
 * the Telemetry settings per workload, the Zipkin v2 span (checked with
 * jansson) and the exporter against a collector made here. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "unit.h"
#include "../../agent/http1.h"
#include "../../agent/l7proxy.h"
#include "../../agent/tracing.h"

#define TP_OK "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void test_traceparent_table(void)
{
	static const struct {
		const char *v;
		int ok;
		int sampled;
	} cases[] = {
		{ TP_OK, 1, 1 },
		{ "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 1, 0 },
		{ "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", 1, 1 }, /* mask bit 0 */
		{ "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02", 1, 0 },
		/* a later version: the first fields, more after a dash */
		{ "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever", 1, 1 },
		{ "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 1, 1 },
		{ "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", 0, 0 },
		{ "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0, 0 },
		{ "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", 0, 0 }, /* v00: 55 */
		{ "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", 0, 0 },   /* short id */
		{ "00-00000000000000000000000000000000-00f067aa0ba902b7-01", 0, 0 },
		{ "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", 0, 0 },
		{ "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", 0, 0 }, /* upper case */
		{ "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0, 0 },
		{ "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0, 0 },
		{ "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", 0, 0 },
		{ "", 0, 0 },
		{ "garbage", 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_trace_ctx c;
		int rc = bm_trace_parse_traceparent(cases[i].v, strlen(cases[i].v), &c);

		if ((rc == 0) != cases[i].ok)
			fprintf(stderr, "\ntraceparent %s: rc %d\n", cases[i].v, rc);
		CU_ASSERT_EQUAL(rc == 0, cases[i].ok);
		if (rc || !cases[i].ok)
			continue;
		CU_ASSERT_EQUAL(c.trace_hi, 0x4bf92f3577b34da6ull);
		CU_ASSERT_EQUAL(c.trace_lo, 0xa3ce929d0e0e4736ull);
		CU_ASSERT_EQUAL(c.span_id, 0x00f067aa0ba902b7ull);
		CU_ASSERT_EQUAL(c.sampled, cases[i].sampled);
		CU_ASSERT_EQUAL(c.from, BM_TRACE_FROM_W3C);
		CU_ASSERT_EQUAL(c.trace128, 1);
	}
}

static void test_b3_single_table(void)
{
	static const struct {
		const char *v;
		int ok, from, sampled, debug, trace128;
		uint64_t parent;
	} cases[] = {
		{ "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90", 1,
		  BM_TRACE_FROM_B3_SINGLE, 1, 0, 1, 0x05e3ac9a4f6e3b90ull },
		{ "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0", 1, BM_TRACE_FROM_B3_SINGLE, 0,
		  0, 1, 0 },
		{ "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d", 1, BM_TRACE_FROM_B3_SINGLE, 1,
		  1, 1, 0 },
		{ "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1", 1, BM_TRACE_FROM_B3_SINGLE, -1, 0,
		  1, 0 },
		{ "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1", 1, BM_TRACE_FROM_B3_SINGLE, 1, 0, 0, 0 },
		{ "0", 1, BM_TRACE_FROM_NONE, 0, 0, 0, 0 },   /* deny only */
		{ "1", 1, BM_TRACE_FROM_NONE, 1, 0, 0, 0 },
		{ "d", 1, BM_TRACE_FROM_NONE, 1, 1, 0, 0 },
		{ "2", 0, 0, 0, 0, 0, 0 },
		{ "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x", 0, 0, 0, 0, 0, 0 },
		{ "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3", 0, 0, 0, 0, 0, 0 },
		{ "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x", 0, 0, 0, 0,
		  0, 0 },
		{ "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1-1", 0, 0, 0, 0, 0, 0 },
		{ "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1", 0, 0, 0, 0, 0, 0 },
		{ "80f198ee56343ba864fe8b2a57d3eff7", 0, 0, 0, 0, 0, 0 },
		{ "", 0, 0, 0, 0, 0, 0 },
		{ "not-a-b3-header", 0, 0, 0, 0, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_trace_ctx c;
		int rc = bm_trace_parse_b3(cases[i].v, strlen(cases[i].v), &c);

		if ((rc == 0) != cases[i].ok)
			fprintf(stderr, "\nb3 %s: rc %d\n", cases[i].v, rc);
		CU_ASSERT_EQUAL(rc == 0, cases[i].ok);
		if (rc || !cases[i].ok)
			continue;
		CU_ASSERT_EQUAL(c.from, cases[i].from);
		CU_ASSERT_EQUAL(c.sampled, cases[i].sampled);
		CU_ASSERT_EQUAL(c.debug, cases[i].debug);
		CU_ASSERT_EQUAL(c.parent_id, cases[i].parent);
		if (cases[i].from) {
			CU_ASSERT_EQUAL(c.trace128, cases[i].trace128);
			CU_ASSERT_EQUAL(c.span_id, 0xe457b5a2e4d86bd1ull);
			CU_ASSERT_EQUAL(c.trace_lo, 0x64fe8b2a57d3eff7ull);
			CU_ASSERT_EQUAL(c.trace_hi, cases[i].trace128 ? 0x80f198ee56343ba8ull : 0);
		}
	}
}

static struct bm_http_hdr H(const char *name, const char *value)
{
	struct bm_http_hdr h = { name, value, strlen(name), strlen(value) };

	return h;
}

static const struct bm_http_hdr *opt(const char *name, const char *v, struct bm_http_hdr *h)
{
	if (!v)
		return NULL;
	*h = H(name, v);
	return h;
}

static void test_b3_multi_table(void)
{
	static const struct {
		const char *tid, *sid, *pid, *sampled, *flags;
		int ok, from, decision, debug;
	} cases[] = {
		{ "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312", "0020000000000001", "1", NULL,
		  1, BM_TRACE_FROM_B3, 1, 0 },
		{ "48485a3953bb6124", "a2fb4a1d1a96d312", NULL, "0", NULL, 1, BM_TRACE_FROM_B3, 0, 0 },
		{ "48485A3953BB6124", "A2FB4A1D1A96D312", NULL, NULL, NULL, 1, BM_TRACE_FROM_B3, -1, 0 },
		{ "48485a3953bb6124", "a2fb4a1d1a96d312", NULL, "true", NULL, 1, BM_TRACE_FROM_B3, 1, 0 },
		{ "48485a3953bb6124", "a2fb4a1d1a96d312", NULL, "false", NULL, 1, BM_TRACE_FROM_B3, 0, 0 },
		{ "48485a3953bb6124", "a2fb4a1d1a96d312", NULL, "0", "1", 1, BM_TRACE_FROM_B3, 1, 1 },
		{ "48485a3953bb6124", "a2fb4a1d1a96d312", NULL, "maybe", NULL, 1, BM_TRACE_FROM_B3, -1,
		  0 },
		{ NULL, NULL, NULL, "1", NULL, 1, BM_TRACE_FROM_NONE, 1, 0 },    /* decision only */
		{ NULL, NULL, NULL, "0", NULL, 1, BM_TRACE_FROM_NONE, 0, 0 },
		{ NULL, NULL, NULL, NULL, "1", 1, BM_TRACE_FROM_NONE, 1, 1 },
		{ NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0 },
		{ "48485a3953bb6124", NULL, NULL, "1", NULL, 0, 0, 0, 0 },
		{ "48485a3953bb612", "a2fb4a1d1a96d312", NULL, "1", NULL, 0, 0, 0, 0 },
		{ "0000000000000000", "a2fb4a1d1a96d312", NULL, "1", NULL, 0, 0, 0, 0 },
		{ "48485a3953bb6124", "a2fb4a1d1a96d31", NULL, "1", NULL, 0, 0, 0, 0 },
		{ "48485a3953bb6124", "a2fb4a1d1a96d312", "xyz", "1", NULL, 0, 0, 0, 0 },
		{ "garbage-garbage!", "a2fb4a1d1a96d312", NULL, NULL, NULL, 0, 0, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_http_hdr h[5];
		struct bm_trace_ctx c;
		int rc = bm_trace_parse_b3_multi(opt("x-b3-traceid", cases[i].tid, &h[0]),
						 opt("x-b3-spanid", cases[i].sid, &h[1]),
						 opt("x-b3-parentspanid", cases[i].pid, &h[2]),
						 opt("x-b3-sampled", cases[i].sampled, &h[3]),
						 opt("x-b3-flags", cases[i].flags, &h[4]), &c);

		if ((rc == 0) != cases[i].ok)
			fprintf(stderr, "\nb3 multi case %zu: rc %d\n", i, rc);
		CU_ASSERT_EQUAL(rc == 0, cases[i].ok);
		if (rc || !cases[i].ok)
			continue;
		CU_ASSERT_EQUAL(c.from, cases[i].from);
		CU_ASSERT_EQUAL(c.sampled, cases[i].decision);
		CU_ASSERT_EQUAL(c.debug, cases[i].debug);
		if (c.from) {
			CU_ASSERT_EQUAL(c.trace_lo, 0x48485a3953bb6124ull);
			CU_ASSERT_EQUAL(c.span_id, 0xa2fb4a1d1a96d312ull);
			CU_ASSERT_EQUAL(c.trace128, strlen(cases[i].tid) == 32);
		}
		if (i == 0) {
			CU_ASSERT_EQUAL(c.trace_hi, 0x463ac35c9f6413adull);
			CU_ASSERT_EQUAL(c.parent_id, 0x0020000000000001ull);
		}
	}
}

/* Which context a request carries when formats meet. */
static void test_extract_precedence(void)
{
	static const char *const B3S = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
	struct {
		const char *why;
		struct bm_http_hdr h[4];
		size_t n;
		int from, sampled;
		uint64_t span;
	} cases[] = {
		{ "nothing", { H("host", "a") }, 1, BM_TRACE_FROM_NONE, -1, 0 },
		{ "single b3 over multi and traceparent",
		  { H("x-b3-traceid", "48485a3953bb6124"), H("x-b3-spanid", "a2fb4a1d1a96d312"),
		    H("b3", B3S), H("traceparent", TP_OK) }, 4, BM_TRACE_FROM_B3_SINGLE, 1,
		  0xe457b5a2e4d86bd1ull },
		{ "multi over traceparent",
		  { H("traceparent", TP_OK), H("x-b3-traceid", "48485a3953bb6124"),
		    H("x-b3-spanid", "a2fb4a1d1a96d312"), H("x-b3-sampled", "0") }, 4,
		  BM_TRACE_FROM_B3, 0, 0xa2fb4a1d1a96d312ull },
		{ "garbage b3 falls back to traceparent",
		  { H("b3", "garbage"), H("x-b3-traceid", "nothex"), H("x-b3-spanid", "a2fb4a1d1a96d312"),
		    H("traceparent", TP_OK) }, 4, BM_TRACE_FROM_W3C, 1, 0x00f067aa0ba902b7ull },
		{ "b3: 0 denies the traceparent's trace",
		  { H("b3", "0"), H("traceparent", TP_OK) }, 2, BM_TRACE_FROM_W3C, 0,
		  0x00f067aa0ba902b7ull },
		{ "x-b3-sampled alone: a decision, no ids",
		  { H("x-b3-sampled", "1") }, 1, BM_TRACE_FROM_NONE, 1, 0 },
		{ "invalid traceparent: nothing",
		  { H("traceparent", "00-zz-00f067aa0ba902b7-01"), H("tracestate", "a=b") }, 2,
		  BM_TRACE_FROM_NONE, -1, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_trace_ctx c;

		bm_trace_extract(cases[i].h, cases[i].n, &c);
		if (c.from != cases[i].from || c.sampled != cases[i].sampled)
			fprintf(stderr, "\n%s: from %d sampled %d\n", cases[i].why, c.from, c.sampled);
		CU_ASSERT_EQUAL(c.from, cases[i].from);
		CU_ASSERT_EQUAL(c.sampled, cases[i].sampled);
		CU_ASSERT_EQUAL(c.span_id, cases[i].span);
	}
}

static struct bm_l7_podtrace pod_at(uint32_t ppm, int report)
{
	struct bm_l7_podtrace p = { .ns = "shop", .name = "web-1", .service = "web",
				    .sample_ppm = ppm, .report = (uint8_t)report };

	p.ip = htonl(0xc6120105);   /* 198.18.1.5 */
	return p;
}

static const struct bm_trace_rand RND = { 0x1111111111111111ull, 0x2222222222222222ull,
					  0x3333333333333333ull, 0x80000000u };

static void test_sampling(void)
{
	struct bm_l7_podtrace none = pod_at(0, 1), all = pod_at(BM_TRACE_PPM, 1),
			      half = pod_at(500000, 1);
	struct bm_http_hdr yes[] = { H("x-b3-sampled", "1") }, no[] = { H("x-b3-sampled", "0") },
			   tp0[] = { H("traceparent",
				       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00") };
	struct bm_trace_span s;
	struct bm_trace_rand r = RND;
	unsigned hits = 0;

	CU_ASSERT_FALSE(bm_trace_sample(0, 0));
	CU_ASSERT_FALSE(bm_trace_sample(0, 0xffffffffu));
	CU_ASSERT_TRUE(bm_trace_sample(BM_TRACE_PPM, 0xffffffffu));
	CU_ASSERT_TRUE(bm_trace_sample(10000, 0));            /* 1 %: the lowest draws */
	CU_ASSERT_FALSE(bm_trace_sample(10000, 0x0300000u * 16));
	for (uint64_t d = 0; d < 1ull << 32; d += 1ull << 20)
		hits += (unsigned)bm_trace_sample(10000, (uint32_t)d);
	CU_ASSERT(hits >= 40 && hits <= 42);                  /* 1 % of 4096 draws */

	bm_trace_start(&s, NULL, 0, BM_TRACE_CLIENT, &none, &r);
	CU_ASSERT_EQUAL(s.sampled, 0);
	CU_ASSERT_EQUAL(s.report, 0);
	CU_ASSERT_EQUAL(s.parent, 0);
	CU_ASSERT_EQUAL(s.trace_hi, RND.trace_hi);
	CU_ASSERT_EQUAL(s.trace_lo, RND.trace_lo);
	CU_ASSERT_EQUAL(s.id, RND.span);
	bm_trace_start(&s, NULL, 0, BM_TRACE_CLIENT, &all, &r);
	CU_ASSERT_EQUAL(s.sampled, 1);
	CU_ASSERT_EQUAL(s.report, 0);     /* no exporter in this test: nothing to report to */
	r.sample = 0x7fffffffu;
	bm_trace_start(&s, NULL, 0, BM_TRACE_CLIENT, &half, &r);
	CU_ASSERT_EQUAL(s.sampled, 1);
	r.sample = 0x80000001u;
	bm_trace_start(&s, NULL, 0, BM_TRACE_CLIENT, &half, &r);
	CU_ASSERT_EQUAL(s.sampled, 0);
	/* an incoming decision wins over the pod's percentage, both ways */
	bm_trace_start(&s, yes, 1, BM_TRACE_CLIENT, &none, &r);
	CU_ASSERT_EQUAL(s.sampled, 1);
	bm_trace_start(&s, no, 1, BM_TRACE_SERVER, &all, &r);
	CU_ASSERT_EQUAL(s.sampled, 0);
	bm_trace_start(&s, tp0, 1, BM_TRACE_SERVER, &all, &r);
	CU_ASSERT_EQUAL(s.sampled, 0);
	CU_ASSERT_EQUAL(s.parent, 0x00f067aa0ba902b7ull);
	CU_ASSERT_EQUAL(s.trace_lo, 0xa3ce929d0e0e4736ull);
	/* no pod known: the default (1 %, or --trace-sampling) */
	bm_trace_set_default_sampling(100);
	bm_trace_start(&s, NULL, 0, BM_TRACE_CLIENT, NULL, &r);
	CU_ASSERT_EQUAL(s.sampled, 1);
	bm_trace_set_default_sampling(0);
	bm_trace_start(&s, NULL, 0, BM_TRACE_CLIENT, NULL, &r);
	CU_ASSERT_EQUAL(s.sampled, 0);
	bm_trace_set_default_sampling(1);
	CU_ASSERT_EQUAL(bm_trace_default_ppm(), BM_TRACE_DEFAULT_PPM);
}

static const char *hl_get(const struct bm_h1_hlist *hl, const char *name, char *buf)
{
	const struct bm_http_hdr *h = bm_h1_hlist_get(hl, name);
	size_t n = 0;

	if (!h)
		return NULL;
	for (size_t i = 0; i < hl->n; i++)
		if (!strcmp(hl->h[i].name, name) || (hl->h[i].name_len == strlen(name) &&
						       !strncmp(hl->h[i].name, name, strlen(name))))
			n++;
	CU_ASSERT_EQUAL(n, 1);   /* never two values */
	memcpy(buf, h->value, h->value_len);
	buf[h->value_len] = 0;
	return buf;
}

/* What goes upstream: this span as the parent, in B3 and W3C. */
static void test_inject(void)
{
	struct bm_l7_podtrace all = pod_at(BM_TRACE_PPM, 1);
	struct bm_http_hdr in[] = {
		H("host", "web"), H("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
		H("x-b3-spanid", "a2fb4a1d1a96d312"), H("x-b3-parentspanid", "0020000000000001"),
		H("x-b3-sampled", "1"), H("traceparent", "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01"),
		H("tracestate", "congo=t61rcWkgMzE"),
	};
	struct bm_http_hdr in64[] = { H("b3", "48485a3953bb6124-a2fb4a1d1a96d312-d"),
				      H("traceparent", TP_OK), H("tracestate", "other=1") };
	struct bm_h1_hlist *hl = malloc(sizeof(*hl));
	struct bm_trace_span s;
	char v[128];

	CU_ASSERT_PTR_NOT_NULL_FATAL(hl);
	bm_trace_start(&s, in, sizeof(in) / sizeof(in[0]), BM_TRACE_CLIENT, &all, &RND);
	bm_h1_hlist_from(hl, in, sizeof(in) / sizeof(in[0]));
	CU_ASSERT_EQUAL(bm_trace_inject(&s, hl), 0);
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "x-b3-traceid", v), "463ac35c9f6413ad48485a3953bb6124");
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "x-b3-spanid", v), "3333333333333333");
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "x-b3-parentspanid", v), "a2fb4a1d1a96d312");
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "x-b3-sampled", v), "1");
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "traceparent", v),
			       "00-463ac35c9f6413ad48485a3953bb6124-3333333333333333-01");
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "tracestate", v), "congo=t61rcWkgMzE");
	CU_ASSERT_PTR_NULL(bm_h1_hlist_get(hl, "b3"));
	CU_ASSERT_PTR_NULL(bm_h1_hlist_get(hl, "x-b3-flags"));

	/* 64-bit B3 id kept as is in B3, padded in traceparent; b3 rewritten;
	 * the traceparent of another trace takes its tracestate away; debug
	 * goes as flags alone */
	bm_trace_start(&s, in64, 3, BM_TRACE_SERVER, &all, &RND);
	bm_h1_hlist_from(hl, in64, 3);
	CU_ASSERT_EQUAL(bm_trace_inject(&s, hl), 0);
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "x-b3-traceid", v), "48485a3953bb6124");
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "x-b3-flags", v), "1");
	CU_ASSERT_PTR_NULL(bm_h1_hlist_get(hl, "x-b3-sampled"));
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "traceparent", v),
			       "00-000000000000000048485a3953bb6124-3333333333333333-01");
	CU_ASSERT_STRING_EQUAL(hl_get(hl, "b3", v),
			       "48485a3953bb6124-3333333333333333-d-a2fb4a1d1a96d312");
	CU_ASSERT_PTR_NULL(bm_h1_hlist_get(hl, "tracestate"));

	/* a new trace: a root span, unsampled, propagated all the same */
	{
		struct bm_l7_podtrace none = pod_at(0, 1);

		bm_trace_start(&s, NULL, 0, BM_TRACE_CLIENT, &none, &RND);
		bm_h1_hlist_from(hl, in, 1);
		CU_ASSERT_EQUAL(bm_trace_inject(&s, hl), 0);
		CU_ASSERT_STRING_EQUAL(hl_get(hl, "x-b3-traceid", v), "11111111111111112222222222222222");
		CU_ASSERT_PTR_NULL(bm_h1_hlist_get(hl, "x-b3-parentspanid"));
		CU_ASSERT_STRING_EQUAL(hl_get(hl, "x-b3-sampled", v), "0");
		CU_ASSERT_STRING_EQUAL(hl_get(hl, "traceparent", v),
				       "00-11111111111111112222222222222222-3333333333333333-00");
	}
	/* no request in progress: nothing touched */
	s.active = 0;
	bm_h1_hlist_from(hl, in, 1);
	CU_ASSERT_EQUAL(bm_trace_inject(&s, hl), 0);
	CU_ASSERT_EQUAL(hl->n, 1);
	free(hl);
}

#define TEL(ns, name, spec) \
	"{\"kind\":\"Telemetry\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns "\"}," \
	"\"spec\":" spec "}"

static void test_settings_table(void)
{
	static const struct {
		const char *why, *resources, *ns, *labels;
		uint32_t ppm;
		int report;
	} cases[] = {
		{ "no Telemetry: the default", "[]", "shop", NULL, BM_TRACE_DEFAULT_PPM, 1 },
		{ "mesh-wide", "[" TEL("istio-system", "m", "{\"tracing\":[{\"randomSamplingPercentage\":100}]}") "]",
		  "shop", NULL, BM_TRACE_PPM, 1 },
		{ "namespace over mesh",
		  "[" TEL("istio-system", "m", "{\"tracing\":[{\"randomSamplingPercentage\":100}]}") ","
		  TEL("shop", "n", "{\"tracing\":[{\"randomSamplingPercentage\":0.01}]}") "]",
		  "shop", NULL, 100, 1 },
		{ "another namespace's does not apply",
		  "[" TEL("other", "n", "{\"tracing\":[{\"randomSamplingPercentage\":50}]}") "]",
		  "shop", NULL, BM_TRACE_DEFAULT_PPM, 1 },
		{ "workload inherits the sampling, sets disableSpanReporting",
		  "[" TEL("shop", "n", "{\"tracing\":[{\"randomSamplingPercentage\":25}]}") ","
		  TEL("shop", "w", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
		      "\"tracing\":[{\"disableSpanReporting\":true}]}") "]",
		  "shop", "{\"app\":\"web\"}", 250000, 0 },
		{ "selector not matching",
		  "[" TEL("shop", "w", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
		      "\"tracing\":[{\"randomSamplingPercentage\":0}]}") "]",
		  "shop", "{\"app\":\"db\"}", BM_TRACE_DEFAULT_PPM, 1 },
		{ "two at one level: the first by name",
		  "[" TEL("shop", "b", "{\"tracing\":[{\"randomSamplingPercentage\":2}]}") ","
		  TEL("shop", "a", "{\"tracing\":[{\"randomSamplingPercentage\":3}]}") "]",
		  "shop", NULL, 30000, 1 },
		{ "access logging alone does not count",
		  "[" TEL("istio-system", "m", "{\"tracing\":[{\"randomSamplingPercentage\":100}]}") ","
		  TEL("shop", "n", "{\"accessLogging\":[{}]}") "]",
		  "shop", NULL, BM_TRACE_PPM, 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *res = json_loads(cases[i].resources, 0, NULL);
		json_t *labels = cases[i].labels ? json_loads(cases[i].labels, 0, NULL) : NULL;
		struct bm_trace_settings ts;

		CU_ASSERT_PTR_NOT_NULL_FATAL(res);
		bm_trace_settings(res, cases[i].ns, labels, &ts);
		if (ts.sample_ppm != cases[i].ppm || ts.report != cases[i].report)
			fprintf(stderr, "\n%s: ppm %u report %u\n", cases[i].why, ts.sample_ppm, ts.report);
		CU_ASSERT_EQUAL(ts.sample_ppm, cases[i].ppm);
		CU_ASSERT_EQUAL(ts.report, cases[i].report);
		json_decref(res);
		json_decref(labels);
	}
	{
		json_t *l = json_pack("{s:s,s:s}", "app", "web", "service.istio.io/canonical-name", "shop-web");

		CU_ASSERT_STRING_EQUAL(bm_trace_canonical_service(l, "pod"), "shop-web");
		json_object_del(l, "service.istio.io/canonical-name");
		CU_ASSERT_STRING_EQUAL(bm_trace_canonical_service(l, "pod"), "web");
		CU_ASSERT_STRING_EQUAL(bm_trace_canonical_service(NULL, "pod"), "pod");
		json_decref(l);
	}
}

static void record_of(struct bm_l7_record *r, const struct bm_trace_span *s)
{
	memset(r, 0, sizeof(*r));
	r->reporter = 0;
	r->src_ns = "shop";
	r->src_name = "web-1";
	r->src_principal = "";
	r->dst_ns = r->dst_name = "";
	r->dst_service = "cart.shop.svc.cluster.local";
	r->dst_service_ns = "shop";
	r->cluster = "outbound|8080||cart.shop.svc.cluster.local";
	r->subset = "";
	r->upstream_ip = htonl(0xc6120207);
	r->upstream_port = htons(9080);
	r->dst_port = 8080;
	r->method = "GET";
	r->authority = "cart:8080";
	r->path = "/items?q=\"x\"\x01\xff";
	r->status = 503;
	r->flags = "URX,UF";
	r->route_name = "";
	r->request_id = "0b7e9c1a-1234-4abc-8def-0123456789ab";
	r->user_agent = "curl/8";
	r->span = s;
}

static void test_zipkin_json(void)
{
	struct bm_l7_podtrace pt = pod_at(BM_TRACE_PPM, 1);
	struct bm_trace_span s = { .active = 1, .kind = BM_TRACE_CLIENT, .sampled = 1, .report = 1,
				   .trace128 = 1, .trace_hi = 0x463ac35c9f6413adull,
				   .trace_lo = 0x48485a3953bb6124ull, .id = 0x3333333333333333ull,
				   .parent = 0xa2fb4a1d1a96d312ull, .start_us = 1700000000123456ull,
				   .duration_us = 0, .pod = &pt };
	struct bm_l7_record r;
	char buf[BM_TRACE_SPAN_MAX];
	size_t n;
	json_error_t je;
	json_t *j, *tags;

	record_of(&r, &s);
	n = bm_trace_span_format(&r, "node1", buf, sizeof(buf));
	CU_ASSERT_FATAL(n > 0 && n < sizeof(buf));
	j = json_loads(buf, 0, &je);
	if (!j)
		fprintf(stderr, "\n%s\n%s\n", buf, je.text);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "traceId")),
			       "463ac35c9f6413ad48485a3953bb6124");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "id")), "3333333333333333");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "parentId")), "a2fb4a1d1a96d312");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "kind")), "CLIENT");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "name")),
			       "cart.shop.svc.cluster.local:8080/*");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "timestamp")), 1700000000123456ll);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "duration")), 1);  /* <1 -> 1 */
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(j, "localEndpoint"),
								 "serviceName")), "web");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(j, "localEndpoint"),
								 "ipv4")), "198.18.1.5");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(j, "remoteEndpoint"),
								 "ipv4")), "198.18.2.7");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "remoteEndpoint"), "port")),
			9080);
	CU_ASSERT_PTR_NULL(json_object_get(j, "debug"));
	tags = json_object_get(j, "tags");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "http.method")), "GET");
	/* control and non-ASCII bytes escaped (\u00XX): always valid JSON */
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "http.url")),
			       "http://cart:8080/items?q=\"x\"\x01\xc3\xbf");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "http.status_code")), "503");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "error")), "true");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "response_flags")), "URX,UF");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "upstream_cluster")),
			       "outbound|8080||cart.shop.svc.cluster.local");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "istio.canonical_service")), "web");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "node_id")), "node1");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(tags, "request_id")),
			       "0b7e9c1a-1234-4abc-8def-0123456789ab");
	{
		const char *k;
		json_t *v;

		json_object_foreach(tags, k, v)
			CU_ASSERT_TRUE(json_is_string(v));   /* Zipkin: tags are strings only */
	}
	json_decref(j);

	/* the server's half: a child of the client span, no error tag on 200,
	 * a root span has no parentId, debug flagged; a long path is cut but
	 * the JSON stays whole */
	{
		char *path = malloc(8000);

		memset(path, 'a', 7999);
		path[0] = '/';
		path[7999] = 0;
		s.kind = BM_TRACE_SERVER;
		s.parent = 0;
		s.debug = 1;
		s.duration_us = 1234;
		r.status = 200;
		r.path = path;
		r.src_ip = htonl(0xc6120105);
		n = bm_trace_span_format(&r, "node2", buf, sizeof(buf));
		free(path);
		CU_ASSERT_FATAL(n > 0);
		j = json_loads(buf, 0, &je);
		CU_ASSERT_PTR_NOT_NULL_FATAL(j);
		CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "kind")), "SERVER");
		CU_ASSERT_PTR_NULL(json_object_get(j, "parentId"));
		CU_ASSERT_TRUE(json_is_true(json_object_get(j, "debug")));
		CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "duration")), 1234);
		CU_ASSERT_PTR_NULL(json_object_get(json_object_get(j, "tags"), "error"));
		CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "localEndpoint"),
								   "port")), 8080);
		CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(j,
				"remoteEndpoint"), "ipv4")), "198.18.1.5");
		json_decref(j);
	}
	/* no span, or no room: nothing */
	r.span = NULL;
	CU_ASSERT_EQUAL(bm_trace_span_format(&r, "n", buf, sizeof(buf)), 0);
}

/* ---- the exporter against a collector made here ---- */

struct collector {
	int lfd;
	unsigned port;
	int posts, spans;
	char first_id[32];          /* "id" of the first span received */
	int not_array;
};

static void *collector_main(void *arg)
{
	struct collector *c = arg;
	int fd = accept(c->lfd, NULL, NULL);
	size_t cap = 4 << 20, len = 0;
	char *buf = malloc(cap);

	/* one connection, keep-alive: read requests until the client closes */
	while (fd >= 0 && buf) {
		char *end, *cl;
		long clen;
		ssize_t r = read(fd, buf + len, cap - 1 - len);

		if (r <= 0)
			break;
		len += (size_t)r;
		buf[len] = 0;
		while ((end = strstr(buf, "\r\n\r\n")) && (cl = strcasestr(buf, "content-length:")) &&
		       cl < end && (clen = strtol(cl + 15, NULL, 10)) >= 0 &&
		       (size_t)(end + 4 - buf) + (size_t)clen <= len) {
			size_t used = (size_t)(end + 4 - buf) + (size_t)clen;
			json_t *a = json_loadb(end + 4, (size_t)clen, 0, NULL);

			if (!json_is_array(a))
				c->not_array++;
			if (!c->posts)
				snprintf(c->first_id, sizeof(c->first_id), "%s",
					 json_string_value(json_object_get(json_array_get(a, 0), "id")) ?: "");
			c->posts++;
			c->spans += (int)json_array_size(a);
			json_decref(a);
			(void)!write(fd, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", 45);
			memmove(buf, buf + used, len - used);
			len -= used;
			buf[len] = 0;
		}
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

static void test_exporter(void)
{
	struct bm_l7_podtrace pt = pod_at(BM_TRACE_PPM, 1);
	struct bm_trace_span s = { .active = 1, .kind = BM_TRACE_CLIENT, .sampled = 1, .report = 1,
				   .trace128 = 1, .trace_lo = 7, .id = 9, .start_us = 1, .pod = &pt };
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	struct collector *c = calloc(1, sizeof(*c));
	struct bm_trace_stats before, after;
	struct bm_l7_record r;
	pthread_t th;
	char url[128];

	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	c->lfd = socket(AF_INET, SOCK_STREAM, 0);
	CU_ASSERT_FATAL(c->lfd >= 0 && !bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa)) &&
			!listen(c->lfd, 4) && !getsockname(c->lfd, (struct sockaddr *)&sa, &sl));
	CU_ASSERT_FATAL(!pthread_create(&th, NULL, collector_main, c));
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/api/v2/spans", ntohs(sa.sin_port));
	bm_trace_get_stats(&before);
	CU_ASSERT_EQUAL(bm_trace_start_exporter("ftp://x", "n"), -EINVAL);
	CU_ASSERT_FALSE(bm_trace_exporting());
	CU_ASSERT_EQUAL_FATAL(bm_trace_start_exporter(url, "unit"), 0);
	CU_ASSERT_TRUE(bm_trace_exporting());
	record_of(&r, &s);
	for (int i = 0; i < 250; i++)   /* 100 + 100 + 50 at the stop */
		bm_trace_report(&r);
	bm_trace_stop_exporter();
	CU_ASSERT_FALSE(bm_trace_exporting());
	shutdown(c->lfd, SHUT_RDWR);
	pthread_join(th, NULL);
	close(c->lfd);
	bm_trace_get_stats(&after);
	CU_ASSERT_EQUAL(after.spans_reported - before.spans_reported, 250);
	CU_ASSERT_EQUAL(after.spans_exported - before.spans_exported, 250);
	CU_ASSERT_EQUAL(after.spans_failed - before.spans_failed, 0);
	CU_ASSERT_EQUAL(c->spans, 250);
	CU_ASSERT(c->posts >= 3);
	CU_ASSERT_EQUAL(c->not_array, 0);
	CU_ASSERT_STRING_EQUAL(c->first_id, "0000000000000009");
	free(c);

	/* a collector that is not there: the spans are counted as failed */
	bm_trace_get_stats(&before);
	CU_ASSERT_EQUAL_FATAL(bm_trace_start_exporter("http://127.0.0.1:1/api/v2/spans", "unit"), 0);
	bm_trace_report(&r);
	bm_trace_stop_exporter();
	bm_trace_get_stats(&after);
	CU_ASSERT_EQUAL(after.spans_failed - before.spans_failed, 1);
	CU_ASSERT_EQUAL(after.post_errors - before.post_errors, 1);
}

BM_SUITE(tracing, BM_CASE(test_traceparent_table), BM_CASE(test_b3_single_table),
	 BM_CASE(test_b3_multi_table), BM_CASE(test_extract_precedence), BM_CASE(test_sampling),
	 BM_CASE(test_inject), BM_CASE(test_settings_table), BM_CASE(test_zipkin_json),
	 BM_CASE(test_exporter))
