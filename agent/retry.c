/*
 * HTTP retries (VirtualService http[].retries, §1.6): the retryOn grammar
 * Istio accepts, Istio's default policy, Envoy's decision for each attempt
 * outcome (RetryStateImpl: wouldRetryFromHeaders / wouldRetryFromReset) and
 * its fully jittered exponential backoff.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "l7.h"

/* Istio's retryOn when none is given (retry.go DefaultPolicy). */
#define RETRY_DEFAULT_ON "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
#define RETRY_DEFAULT_BACKOFF_MS 25

static const struct {
	const char *token;
	uint32_t bit;   /* 0: accepted by Istio, never true here */
} retry_tokens[] = {
	{ "5xx", BM_RETRY_5XX },
	{ "gateway-error", BM_RETRY_GATEWAY_ERROR },
	{ "reset", BM_RETRY_RESET },
	{ "reset-before-request", BM_RETRY_RESET_BEFORE_REQ },
	{ "connect-failure", BM_RETRY_CONNECT_FAILURE },
	{ "refused-stream", BM_RETRY_REFUSED_STREAM },
	{ "retriable-4xx", BM_RETRY_RETRIABLE_4XX },
	{ "retriable-status-codes", BM_RETRY_STATUS_CODES },
	{ "cancelled", BM_RETRY_GRPC_CANCELLED },
	{ "deadline-exceeded", BM_RETRY_GRPC_DEADLINE },
	{ "internal", BM_RETRY_GRPC_INTERNAL },
	{ "resource-exhausted", BM_RETRY_GRPC_RESOURCE },
	{ "unavailable", BM_RETRY_GRPC_UNAVAILABLE },
	/* Istio accepts these; nothing here sets retriable headers (Istio
	 * exposes none), an x-envoy-ratelimited response or HTTP/3. */
	{ "retriable-headers", 0 },
	{ "envoy-ratelimited", 0 },
	{ "http3-post-connect-failure", 0 },
};

static int parse_code(const char *t, size_t n)
{
	int v = 0;

	if (!n || n > 3)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (t[i] < '0' || t[i] > '9')
			return -1;
		v = v * 10 + (t[i] - '0');
	}
	return v;
}

int bm_retry_parse_on(const char *s, struct bm_l7_retry *r, char *err, size_t len)
{
	const char *p;

	r->on = 0;
	r->n_codes = 0;
	memset(r->codes, 0, sizeof(r->codes));
	if (!s || !s[strspn(s, " \t,")])
		s = RETRY_DEFAULT_ON;   /* §1.6: an empty retryOn keeps the default */
	/* Istio's parseRetryOn: comma list, blanks trimmed, empty parts skipped */
	for (p = s; *p;) {
		size_t n = strcspn(p, ","), k;
		const char *t = p;
		int code, found = 0;

		p += n + (p[n] == ',');
		while (n && (*t == ' ' || *t == '\t'))
			t++, n--;
		while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
			n--;
		if (!n)
			continue;
		for (k = 0; k < sizeof(retry_tokens) / sizeof(retry_tokens[0]); k++) {
			if (strlen(retry_tokens[k].token) == n && !memcmp(retry_tokens[k].token, t, n)) {
				r->on |= retry_tokens[k].bit;
				found = 1;
				break;
			}
		}
		if (found)
			continue;
		code = parse_code(t, n);
		if (code < 100 || code > 599) {
			snprintf(err, len, "retryOn: '%.*s' is neither a retry policy nor an HTTP status code",
				 (int)n, t);
			return -EINVAL;
		}
		/* integer tokens become retriable status codes (Istio appends
		 * retriable-status-codes itself) */
		r->on |= BM_RETRY_STATUS_CODES;
		for (k = 0; k < r->n_codes; k++)
			if (r->codes[k] == code)
				break;
		if (k < r->n_codes)
			continue;
		if (r->n_codes == BM_RETRY_MAX_CODES) {
			snprintf(err, len, "retryOn: more than %d status codes at '%.*s'",
				 BM_RETRY_MAX_CODES, (int)n, t);
			return -EINVAL;
		}
		r->codes[r->n_codes++] = (uint16_t)code;
	}
	return 0;
}

void bm_retry_default(struct bm_l7_retry *r)
{
	memset(r, 0, sizeof(*r));
	r->attempts = 2;
	r->on = BM_RETRY_CONNECT_FAILURE | BM_RETRY_REFUSED_STREAM | BM_RETRY_GRPC_UNAVAILABLE |
		BM_RETRY_GRPC_CANCELLED | BM_RETRY_STATUS_CODES;
	r->ignore_previous_hosts = 1;
	r->backoff_base_ms = RETRY_DEFAULT_BACKOFF_MS;
}

static uint32_t grpc_bit(int grpc_status)
{
	switch (grpc_status) {
	case 1:  return BM_RETRY_GRPC_CANCELLED;
	case 4:  return BM_RETRY_GRPC_DEADLINE;
	case 8:  return BM_RETRY_GRPC_RESOURCE;
	case 13: return BM_RETRY_GRPC_INTERNAL;
	case 14: return BM_RETRY_GRPC_UNAVAILABLE;
	}
	return 0;
}

static int retry_on_response(const struct bm_l7_retry *r, int status, int grpc_status)
{
	if ((r->on & BM_RETRY_5XX) && status >= 500 && status <= 599)
		return 1;
	if ((r->on & BM_RETRY_GATEWAY_ERROR) && status >= 502 && status <= 504)
		return 1;
	if ((r->on & BM_RETRY_RETRIABLE_4XX) && status == 409)
		return 1;
	if (r->on & BM_RETRY_STATUS_CODES)
		for (unsigned i = 0; i < r->n_codes && i < BM_RETRY_MAX_CODES; i++)
			if (r->codes[i] == status)
				return 1;
	/* gRPC status in the response headers (trailers-only responses) */
	return (r->on & grpc_bit(grpc_status)) != 0;
}

int bm_retry_should(const struct bm_l7_retry *r, enum bm_attempt_result res, int status,
		    int grpc_status, unsigned attempts_made)
{
	/* Any reset that is not an overflow counts as a "5xx" (it ends in one)
	 * and as "no response" for gateway-error and reset. */
	const uint32_t no_response = BM_RETRY_5XX | BM_RETRY_GATEWAY_ERROR | BM_RETRY_RESET;

	if (!r || attempts_made > r->attempts)
		return 0;
	switch (res) {
	case BM_AR_RESPONSE:
		return retry_on_response(r, status, grpc_status);
	case BM_AR_CONNECT_FAILURE:
		/* the request never left: reset-before-request is safe too */
		return (r->on & (no_response | BM_RETRY_CONNECT_FAILURE | BM_RETRY_RESET_BEFORE_REQ)) != 0;
	case BM_AR_RESET_BEFORE_REQ:
		return (r->on & (no_response | BM_RETRY_RESET_BEFORE_REQ)) != 0;
	case BM_AR_RESET:
		return (r->on & no_response) != 0;
	case BM_AR_REFUSED_STREAM:
		return (r->on & (no_response | BM_RETRY_REFUSED_STREAM)) != 0;
	case BM_AR_PER_TRY_TIMEOUT:
		/* Envoy retries an expired per-try timeout only for these two */
		return (r->on & (BM_RETRY_5XX | BM_RETRY_GATEWAY_ERROR)) != 0;
	case BM_AR_OVERFLOW:
		return 0;   /* a circuit-breaker overflow is never retried */
	}
	return 0;
}

uint32_t bm_retry_backoff_ms(const struct bm_l7_retry *r, unsigned n, uint32_t rnd)
{
	uint64_t base = r && r->backoff_base_ms ? r->backoff_base_ms : RETRY_DEFAULT_BACKOFF_MS;
	uint64_t max = 10 * base, ceiling = base;

	if (!n)
		n = 1;
	/* Envoy JitteredExponentialBackOffStrategy: the range doubles per retry
	 * until it first exceeds the maximum, then stays; the result is
	 * uniform in the range and clamped to the maximum. */
	for (unsigned i = 1; i < n && ceiling <= max; i++)
		ceiling = ceiling * 2 + base;   /* (2^(i+1) - 1) x base */
	return (uint32_t)(rnd % ceiling < max ? rnd % ceiling : max);
}
