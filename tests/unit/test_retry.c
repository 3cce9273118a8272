/* Retry policy (§1.6): retryOn parsing, Istio's default, the decision table
 * for every token and attempt outcome, and the jittered backoff. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "unit.h"
#include "../../agent/l7.h"

#define ALL_GRPC (BM_RETRY_GRPC_CANCELLED | BM_RETRY_GRPC_DEADLINE | BM_RETRY_GRPC_INTERNAL | \
		  BM_RETRY_GRPC_RESOURCE | BM_RETRY_GRPC_UNAVAILABLE)
#define DEFAULT_ON (BM_RETRY_CONNECT_FAILURE | BM_RETRY_REFUSED_STREAM | BM_RETRY_GRPC_UNAVAILABLE | \
		    BM_RETRY_GRPC_CANCELLED | BM_RETRY_STATUS_CODES)

static void test_parse_on(void)
{
	static const struct {
		const char *s;
		int rc;
		uint32_t on;
		const char *codes;   /* "503,409" in order */
	} cases[] = {
		{ "5xx", 0, BM_RETRY_5XX, "" },
		{ "gateway-error", 0, BM_RETRY_GATEWAY_ERROR, "" },
		{ "reset", 0, BM_RETRY_RESET, "" },
		{ "reset-before-request", 0, BM_RETRY_RESET_BEFORE_REQ, "" },
		{ "connect-failure", 0, BM_RETRY_CONNECT_FAILURE, "" },
		{ "refused-stream", 0, BM_RETRY_REFUSED_STREAM, "" },
		{ "retriable-4xx", 0, BM_RETRY_RETRIABLE_4XX, "" },
		{ "retriable-status-codes", 0, BM_RETRY_STATUS_CODES, "" },
		{ "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable", 0, ALL_GRPC, "" },
		{ "retriable-headers,envoy-ratelimited,http3-post-connect-failure", 0, 0, "" },
		{ "503", 0, BM_RETRY_STATUS_CODES, "503" },
		{ "gateway-error,503,409,503", 0, BM_RETRY_GATEWAY_ERROR | BM_RETRY_STATUS_CODES, "503,409" },
		{ " 5xx , reset ,,", 0, BM_RETRY_5XX | BM_RETRY_RESET, "" },
		{ "", 0, DEFAULT_ON, "" },     /* empty: Istio's default tokens */
		{ " , ", 0, DEFAULT_ON, "" },
		{ NULL, 0, DEFAULT_ON, "" },
		{ "5XX", -EINVAL, 0, "" },     /* tokens are case-sensitive */
		{ "retry-everything", -EINVAL, 0, "" },
		{ "99", -EINVAL, 0, "" },
		{ "600", -EINVAL, 0, "" },
		{ "5035", -EINVAL, 0, "" },
		{ "-503", -EINVAL, 0, "" },
		{ "500,501,502,503,504,505,506,507,508,509,510,511,512,513,514,515", 0, BM_RETRY_STATUS_CODES,
		  "500,501,502,503,504,505,506,507,508,509,510,511,512,513,514,515" },
		{ "500,501,502,503,504,505,506,507,508,509,510,511,512,513,514,515,516", -EINVAL, 0, "" },
	};
	char err[128];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_l7_retry r;
		char codes[128] = "";
		int rc;

		memset(&r, 0xa5, sizeof(r));
		err[0] = 0;
		rc = bm_retry_parse_on(cases[i].s, &r, err, sizeof(err));
		for (unsigned k = 0; !rc && k < r.n_codes; k++)
			snprintf(codes + strlen(codes), sizeof(codes) - strlen(codes), "%s%u", k ? "," : "",
				 r.codes[k]);
		if (rc != cases[i].rc || (!rc && (r.on != cases[i].on || strcmp(codes, cases[i].codes))))
			fprintf(stderr, "\n  retryOn '%s': rc %d on %#x codes %s (%s)\n",
				cases[i].s ? cases[i].s : "(null)", rc, r.on, codes, err);
		CU_ASSERT_EQUAL(rc, cases[i].rc);
		if (!rc) {
			CU_ASSERT_EQUAL(r.on, cases[i].on);
			CU_ASSERT_STRING_EQUAL(codes, cases[i].codes);
		} else {
			CU_ASSERT_PTR_NOT_NULL(strstr(err, "retryOn"));   /* the error names the token */
		}
	}
	{
		struct bm_l7_retry r;

		CU_ASSERT_EQUAL(bm_retry_parse_on("5xx,bogus", &r, err, sizeof(err)), -EINVAL);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "'bogus'"));
	}
}

static void test_default(void)
{
	struct bm_l7_retry r;

	memset(&r, 0xa5, sizeof(r));
	bm_retry_default(&r);
	CU_ASSERT_EQUAL(r.attempts, 2);
	CU_ASSERT_EQUAL(r.per_try_ms, 0);
	CU_ASSERT_EQUAL(r.on, DEFAULT_ON);
	CU_ASSERT_EQUAL(r.n_codes, 0);   /* 503 no longer retried by default (Istio ≥ 1.24) */
	CU_ASSERT_EQUAL(r.ignore_previous_hosts, 1);
	CU_ASSERT_EQUAL(r.backoff_base_ms, 25);
	/* the default retries a connect failure and gRPC unavailable, not a 503 */
	CU_ASSERT_TRUE(bm_retry_should(&r, BM_AR_CONNECT_FAILURE, 0, -1, 1));
	CU_ASSERT_TRUE(bm_retry_should(&r, BM_AR_RESPONSE, 200, 14, 1));
	CU_ASSERT_FALSE(bm_retry_should(&r, BM_AR_RESPONSE, 503, -1, 1));
	CU_ASSERT_FALSE(bm_retry_should(&r, BM_AR_PER_TRY_TIMEOUT, 0, -1, 1));
}

struct should_case {
	const char *on;
	enum bm_attempt_result res;
	int status, grpc;
	int want;
};

#define R(on, res, st, g, w) { on, BM_AR_##res, st, g, w }

static const struct should_case should_cases[] = {
	/* 5xx: any 5xx and every no-response case */
	R("5xx", RESPONSE, 500, -1, 1), R("5xx", RESPONSE, 503, -1, 1), R("5xx", RESPONSE, 599, -1, 1),
	R("5xx", RESPONSE, 404, -1, 0), R("5xx", RESPONSE, 409, -1, 0), R("5xx", RESPONSE, 200, -1, 0),
	R("5xx", CONNECT_FAILURE, 0, -1, 1), R("5xx", RESET, 0, -1, 1), R("5xx", RESET_BEFORE_REQ, 0, -1, 1),
	R("5xx", REFUSED_STREAM, 0, -1, 1), R("5xx", PER_TRY_TIMEOUT, 0, -1, 1), R("5xx", OVERFLOW, 0, -1, 0),
	/* gateway-error: 502/503/504 and the no-response cases */
	R("gateway-error", RESPONSE, 502, -1, 1), R("gateway-error", RESPONSE, 503, -1, 1),
	R("gateway-error", RESPONSE, 504, -1, 1), R("gateway-error", RESPONSE, 500, -1, 0),
	R("gateway-error", RESPONSE, 501, -1, 0), R("gateway-error", RESPONSE, 505, -1, 0),
	R("gateway-error", CONNECT_FAILURE, 0, -1, 1), R("gateway-error", RESET, 0, -1, 1),
	R("gateway-error", RESET_BEFORE_REQ, 0, -1, 1), R("gateway-error", REFUSED_STREAM, 0, -1, 1),
	R("gateway-error", PER_TRY_TIMEOUT, 0, -1, 1), R("gateway-error", OVERFLOW, 0, -1, 0),
	/* reset: no response at all; a response or a per-try timeout is not one */
	R("reset", RESET, 0, -1, 1), R("reset", CONNECT_FAILURE, 0, -1, 1), R("reset", RESET_BEFORE_REQ, 0, -1, 1),
	R("reset", REFUSED_STREAM, 0, -1, 1), R("reset", RESPONSE, 503, -1, 0),
	R("reset", PER_TRY_TIMEOUT, 0, -1, 0), R("reset", OVERFLOW, 0, -1, 0),
	/* reset-before-request: only when the request never left */
	R("reset-before-request", RESET_BEFORE_REQ, 0, -1, 1),
	R("reset-before-request", CONNECT_FAILURE, 0, -1, 1), R("reset-before-request", RESET, 0, -1, 0),
	R("reset-before-request", REFUSED_STREAM, 0, -1, 0), R("reset-before-request", RESPONSE, 503, -1, 0),
	R("reset-before-request", PER_TRY_TIMEOUT, 0, -1, 0),
	/* connect-failure */
	R("connect-failure", CONNECT_FAILURE, 0, -1, 1), R("connect-failure", RESET, 0, -1, 0),
	R("connect-failure", RESET_BEFORE_REQ, 0, -1, 0), R("connect-failure", REFUSED_STREAM, 0, -1, 0),
	R("connect-failure", RESPONSE, 503, -1, 0), R("connect-failure", PER_TRY_TIMEOUT, 0, -1, 0),
	/* refused-stream */
	R("refused-stream", REFUSED_STREAM, 0, -1, 1), R("refused-stream", RESET, 0, -1, 0),
	R("refused-stream", CONNECT_FAILURE, 0, -1, 0), R("refused-stream", RESPONSE, 503, -1, 0),
	/* retriable-4xx: 409 only */
	R("retriable-4xx", RESPONSE, 409, -1, 1), R("retriable-4xx", RESPONSE, 404, -1, 0),
	R("retriable-4xx", RESPONSE, 429, -1, 0), R("retriable-4xx", RESET, 0, -1, 0),
	/* status codes */
	R("503", RESPONSE, 503, -1, 1), R("503", RESPONSE, 502, -1, 0),
	R("429,503", RESPONSE, 429, -1, 1), R("retriable-status-codes", RESPONSE, 503, -1, 0),
	R("503", RESET, 0, -1, 0),            /* a local 503 after a reset is not a 503 */
	R("503", CONNECT_FAILURE, 0, -1, 0), R("504", PER_TRY_TIMEOUT, 0, -1, 0),
	/* gRPC status in the response headers */
	R("cancelled", RESPONSE, 200, 1, 1), R("cancelled", RESPONSE, 200, 14, 0),
	R("deadline-exceeded", RESPONSE, 200, 4, 1), R("deadline-exceeded", RESPONSE, 200, 1, 0),
	R("internal", RESPONSE, 200, 13, 1), R("internal", RESPONSE, 200, 2, 0),
	R("resource-exhausted", RESPONSE, 200, 8, 1), R("resource-exhausted", RESPONSE, 200, 14, 0),
	R("unavailable", RESPONSE, 200, 14, 1), R("unavailable", RESPONSE, 200, 0, 0),
	R("unavailable", RESPONSE, 503, -1, 0), R("unavailable", RESET, 0, -1, 0),
	R("cancelled,deadline-exceeded,internal,resource-exhausted,unavailable", RESPONSE, 200, -1, 0),
	/* tokens without an effect here */
	R("retriable-headers,envoy-ratelimited,http3-post-connect-failure", RESPONSE, 503, -1, 0),
	R("retriable-headers,envoy-ratelimited,http3-post-connect-failure", RESET, 0, -1, 0),
	/* a per-try timeout only with 5xx or gateway-error */
	R("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,reset,retriable-4xx",
	  PER_TRY_TIMEOUT, 0, -1, 0),
	/* overflow never, whatever is on */
	R("5xx,gateway-error,reset,reset-before-request,connect-failure,refused-stream,retriable-4xx,503",
	  OVERFLOW, 503, 14, 0),
	/* combinations OR */
	R("connect-failure,503", RESPONSE, 503, -1, 1), R("connect-failure,503", CONNECT_FAILURE, 0, -1, 1),
	R("retriable-4xx,unavailable", RESPONSE, 200, 14, 1),
};

static void test_should_table(void)
{
	char err[128];

	for (size_t i = 0; i < sizeof(should_cases) / sizeof(should_cases[0]); i++) {
		const struct should_case *c = &should_cases[i];
		struct bm_l7_retry r;
		int got;

		bm_retry_default(&r);
		CU_ASSERT_EQUAL_FATAL(bm_retry_parse_on(c->on, &r, err, sizeof(err)), 0);
		got = bm_retry_should(&r, c->res, c->status, c->grpc, 1);
		if (got != c->want)
			fprintf(stderr, "\n  should '%s' res %d status %d grpc %d: %d\n", c->on, c->res,
				c->status, c->grpc, got);
		CU_ASSERT_EQUAL(got, c->want);
	}
}

static void test_should_attempts(void)
{
	struct bm_l7_retry r;
	char err[128];

	bm_retry_default(&r);
	CU_ASSERT_EQUAL(bm_retry_parse_on("5xx", &r, err, sizeof(err)), 0);
	/* attempts 2: after the 1st and 2nd try, not after the 3rd */
	CU_ASSERT_TRUE(bm_retry_should(&r, BM_AR_RESPONSE, 503, -1, 1));
	CU_ASSERT_TRUE(bm_retry_should(&r, BM_AR_RESPONSE, 503, -1, 2));
	CU_ASSERT_FALSE(bm_retry_should(&r, BM_AR_RESPONSE, 503, -1, 3));
	r.attempts = 0;   /* retries disabled */
	CU_ASSERT_FALSE(bm_retry_should(&r, BM_AR_RESPONSE, 503, -1, 1));
	r.attempts = 5;
	CU_ASSERT_TRUE(bm_retry_should(&r, BM_AR_RESET, 0, -1, 5));
	CU_ASSERT_FALSE(bm_retry_should(&r, BM_AR_RESET, 0, -1, 6));
	CU_ASSERT_FALSE(bm_retry_should(NULL, BM_AR_RESET, 0, -1, 1));
}

static void test_backoff(void)
{
	static const struct {
		uint32_t base;
		unsigned n;
		uint32_t rnd, want;
	} cases[] = {
		/* default base 25 ms: retry n draws from [0, (2^n - 1) x 25) */
		{ 25, 1, 0, 0 }, { 25, 1, 24, 24 }, { 25, 1, 25, 0 }, { 25, 1, 1000003, 1000003 % 25 },
		{ 25, 2, 74, 74 }, { 25, 2, 75, 0 },
		{ 25, 3, 174, 174 }, { 25, 3, 175, 0 },
		/* retry 4: range 375 (the first past 250), clamped to 250 */
		{ 25, 4, 249, 249 }, { 25, 4, 300, 250 }, { 25, 4, 374, 250 }, { 25, 4, 375, 0 },
		/* later retries keep that range */
		{ 25, 9, 374, 250 }, { 25, 9, 375, 0 }, { 25, 100, 0xffffffffu, 45 },   /* 2^32 - 1 = 45 mod 375 */
		{ 0, 1, 30, 5 },     /* unset base: 25 ms */
		{ 25, 0, 30, 5 },    /* n 0 is the first retry */
		{ 100, 2, 299, 299 }, { 100, 3, 699, 699 }, { 100, 4, 1499, 1000 },
		{ 1, 1, 7, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_l7_retry r;
		uint32_t got;

		bm_retry_default(&r);
		r.backoff_base_ms = cases[i].base;
		got = bm_retry_backoff_ms(&r, cases[i].n, cases[i].rnd);
		if (got != cases[i].want)
			fprintf(stderr, "\n  backoff base %u n %u rnd %u: %u\n", cases[i].base, cases[i].n,
				cases[i].rnd, got);
		CU_ASSERT_EQUAL(got, cases[i].want);
	}
	/* never above 10 x base, over many random numbers */
	{
		struct bm_l7_retry r;
		uint32_t x = 1;

		bm_retry_default(&r);
		for (int i = 0; i < 10000; i++) {
			x = x * 1103515245u + 12345u;
			CU_ASSERT_FATAL(bm_retry_backoff_ms(&r, 1 + (unsigned)i % 12, x) <= 250);
		}
	}
}

BM_SUITE(retry, BM_CASE(test_parse_on), BM_CASE(test_default), BM_CASE(test_should_table),
	 BM_CASE(test_should_attempts), BM_CASE(test_backoff))
