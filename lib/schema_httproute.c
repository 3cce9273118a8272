/* networking.istio.io VirtualService HTTP routes (schema_virtualservice.c
 * has the rest of the kind): rewrite, redirect and directResponse, retries,
 * fault injection, mirroring, and the HTTPRoute rule that combines them with
 * the matches and destinations (docs/reference/istio-api.md §1.6-§1.11). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "schema.h"
#include "schema_networking_int.h"

/* ---- rewrite, redirect, directResponse (istio-api §1.9) ---- */

static const struct bm_field rewrite[] = {
	{ .name = "uri", .type = BM_T_STRING },
	{ .name = "authority", .type = BM_T_STRING },
	LATER("uriRegexRewrite"),
	{ .name = NULL },
};

static void check_rewrite(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_size(val))
		bm_verr(v, n->line, "at least one of uri or authority is required");
}

static const char *const derive_ports[] = { "FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT",
					    NULL };
static const char *const redirect_schemes[] = { "http", "https", NULL };

/* What Envoy's RedirectAction takes; Istio drops a route with another code. */
static void check_redirect_code(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	json_int_t c = json_integer_value(val);

	if (c != 301 && c != 302 && c != 303 && c != 307 && c != 308)
		bm_verr(v, n->line, "must be one of 301, 302, 303, 307, 308 (got %lld)",
			(long long)c);
}

static const struct bm_field redirect[] = {
	{ .name = "uri", .type = BM_T_STRING },
	{ .name = "authority", .type = BM_T_STRING },
	{ .name = "port", .type = BM_T_INT, PORT_RANGE },
	{ .name = "derivePort", .type = BM_T_STRING, .enums = derive_ports },
	{ .name = "scheme", .type = BM_T_STRING, .enums = redirect_schemes },
	{ .name = "redirectCode", .type = BM_T_INT, .check = check_redirect_code },
	{ .name = NULL },
};

static void check_redirect(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (json_object_get(val, "port") && json_object_get(val, "derivePort"))
		bm_verr_at(v, bm_ynode_key_line(n, "derivePort"), ".derivePort",
			   "cannot be used with port");
	if (!json_object_get(val, "uri") && !json_object_get(val, "authority") &&
	    !json_object_get(val, "port") && !json_object_get(val, "derivePort") &&
	    !json_object_get(val, "scheme"))
		bm_verr(v, n->line, "at least one of uri, authority, scheme, port or derivePort "
			"is required");
}

/* Istio validateHTTPDirectResponse: bodies over 1 MB are refused, over
 * 100 KB only warned about (they are held in memory per route). */
#define DIRECT_BODY_MAX (1024 * 1024)
#define DIRECT_BODY_WARN (100 * 1024)

static void check_body_size(struct bm_vctx *v, const struct bm_ynode *n, size_t len)
{
	if (len > DIRECT_BODY_MAX)
		bm_verr(v, n->line, "body is %zu bytes, at most %d are allowed", len,
			DIRECT_BODY_MAX);
	else if (len > DIRECT_BODY_WARN)
		bm_vwarn(v, n->line, "body is %zu bytes; large bodies are kept in memory for "
			 "every route", len);
}

static void check_body_string(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	check_body_size(v, n, json_string_length(val));
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* protobuf JSON "bytes": standard base64 with padding. */
static void check_body_bytes(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val);
	size_t len = json_string_length(val), pad = 0;

	if (len % 4)
		goto bad;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '=' && i + 2 >= len && (i + 1 == len || s[i + 1] == '=')) {
			pad++;
			continue;
		}
		if (pad || b64_value(s[i]) < 0)
			goto bad;
	}
	check_body_size(v, n, len / 4 * 3 - pad);
	return;
bad:
	bm_verr(v, n->line, "must be base64 (standard alphabet, padded with '=')");
}

static const struct bm_field http_body[] = {
	{ .name = "string", .type = BM_T_STRING, .check = check_body_string },
	{ .name = "bytes", .type = BM_T_STRING, .check = check_body_bytes },
	{ .name = NULL },
};

static void check_http_body(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (json_object_size(val) > 1)
		bm_verr(v, n->line, "only one of string or bytes is allowed");
}

static const struct bm_field direct_response[] = {
	{ .name = "status", .type = BM_T_INT, .flags = BM_F_REQUIRED | BM_F_RANGE, .min = 200,
	  .max = 599 },
	{ .name = "body", .type = BM_T_OBJECT, .fields = http_body, .check = check_http_body },
	{ .name = NULL },
};

/* ---- retries (istio-api §1.6) ---- */

/* Istio's supportedRetryOnPolicies (pkg/config/validation/agent). */
static const char *const retry_on_tokens[] = {
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
	"refused-stream", "retriable-4xx", "retriable-status-codes", "retriable-headers",
	"envoy-ratelimited", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
	"internal", "resource-exhausted", "unavailable", NULL };

static void check_retry_on(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *p = json_string_value(val);

	for (;;) {
		const char *end = strchr(p, ','), *a = p, *b = end ? end : p + strlen(p);
		size_t len;
		bool ok = false;

		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
			b--;
		len = (size_t)(b - a);
		if (len && strspn(a, "0123456789") >= len) {
			long code = len <= 3 ? strtol(a, NULL, 10) : 0;

			if (code < 100 || code > 599) {
				bm_verr(v, n->line, "\"%.*s\" is not an HTTP status code (100-599)",
					(int)(len > 64 ? 64 : len), a);
				return;
			}
			ok = true;
		}
		for (const char *const *t = retry_on_tokens; !ok && *t; t++)
			ok = strlen(*t) == len && !strncmp(*t, a, len);
		if (!len) {
			bm_verr(v, n->line, "empty retryOn policy (stray comma?)");
			return;
		}
		if (!ok) {
			bm_verr(v, n->line, "unknown retryOn policy \"%.*s\" (want 5xx, gateway-error, "
				"reset, reset-before-request, connect-failure, refused-stream, "
				"retriable-4xx, retriable-status-codes, retriable-headers, "
				"envoy-ratelimited, http3-post-connect-failure, cancelled, "
				"deadline-exceeded, internal, resource-exhausted, unavailable or an "
				"HTTP status code)", (int)(len > 64 ? 64 : len), a);
			return;
		}
		if (!end)
			return;
		p = end + 1;
	}
}

static const struct bm_field http_retry[] = {
	{ .name = "attempts", .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0,
	  .max = INT32_MAX },
	{ .name = "perTryTimeout", .type = BM_T_DURATION },
	{ .name = "retryOn", .type = BM_T_STRING, .check = check_retry_on },
	{ .name = "retryRemoteLocalities", .type = BM_T_BOOL },
	{ .name = "retryIgnorePreviousHosts", .type = BM_T_BOOL },
	{ .name = "backoff", .type = BM_T_DURATION },
	{ .name = NULL },
};

/* Istio validateHTTPRetry: attempts 0 (also when left out: proto3) turns
 * retries off, so any other setting is a contradiction. */
static void check_http_retry(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	json_t *attempts = json_object_get(val, "attempts");
	const char *key;
	json_t *f;

	if (json_integer_value(attempts) > 0)
		return;
	json_object_foreach(val, key, f) {
		if (!strcmp(key, "attempts"))
			continue;
		if (attempts)
			bm_verr_at(v, bm_ynode_key_line(n, "attempts"), ".attempts",
				   "0 disables retries; %s must not be set with it", key);
		else
			bm_verr_at(v, n->line, ".attempts", "required when %s is set (left out it "
				   "is 0, which disables retries)", key);
		return;
	}
}

/* ---- fault injection (istio-api §1.7) ---- */

/* istio-api §0 Percent: 0, or between 0.0001 and 100. */
static void check_percent_value(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	double d = json_number_value(val);

	if (d < 0 || d > 100)
		bm_verr(v, n->line, "must be between 0 and 100");
	else if (d > 0 && d < 0.0001)
		bm_verr(v, n->line, "must be 0 or at least 0.0001");
}

static const struct bm_field percent[] = {
	{ .name = "value", .type = BM_T_NUMBER, .check = check_percent_value },
	{ .name = NULL },
};

#define PERCENTAGE(n) { .name = (n), .type = BM_T_OBJECT, .fields = percent }
#define INT_PERCENT(n) { .name = (n), .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0, \
			 .max = 100 }

static const struct bm_field fault_delay[] = {
	{ .name = "fixedDelay", .type = BM_T_DURATION },
	LATER("exponentialDelay"),
	PERCENTAGE("percentage"),
	INT_PERCENT("percent"),
	{ .name = NULL },
};

static void check_fault_delay(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_get(val, "fixedDelay"))
		bm_verr_at(v, n->line, ".fixedDelay", "required");
}

static const char *const grpc_codes[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED", NULL };

static const struct bm_field fault_abort[] = {
	{ .name = "httpStatus", .type = BM_T_INT, .flags = BM_F_RANGE, .min = 200, .max = 599 },
	{ .name = "grpcStatus", .type = BM_T_STRING, .enums = grpc_codes },
	LATER("http2Error"),
	PERCENTAGE("percentage"),
	{ .name = NULL },
};

static void check_fault_abort(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	bool http = json_object_get(val, "httpStatus"), grpc = json_object_get(val, "grpcStatus");

	if (http && grpc)
		bm_verr_at(v, bm_ynode_key_line(n, "grpcStatus"), ".grpcStatus",
			   "cannot be used with httpStatus");
	else if (!http && !grpc)
		bm_verr(v, n->line, "one of httpStatus or grpcStatus is required");
}

static const struct bm_field fault[] = {
	{ .name = "delay", .type = BM_T_OBJECT, .fields = fault_delay,
	  .check = check_fault_delay },
	{ .name = "abort", .type = BM_T_OBJECT, .fields = fault_abort,
	  .check = check_fault_abort },
	{ .name = NULL },
};

static void check_fault(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_size(val))
		bm_verr(v, n->line, "at least one of delay or abort is required");
}

/* ---- mirroring (istio-api §1.8) ---- */

static const struct bm_field mirror_policy[] = {
	DESTINATION,
	PERCENTAGE("percentage"),
	{ .name = NULL },
};

static const struct bm_field mirror_policy_elem = { .type = BM_T_OBJECT,
						    .fields = mirror_policy };

static void warn_mirror_percent(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	(void)val;
	bm_vwarn(v, n->line, "mirrorPercent is deprecated; use mirrorPercentage");
}

/* ---- HTTPRoute ---- */

static const struct bm_field http_route[] = {
	{ .name = "name", .type = BM_T_STRING },
	{ .name = "match", .type = BM_T_LIST, .elem = &net_http_match_elem },
	{ .name = "route", .type = BM_T_LIST, .flags = BM_F_NONEMPTY,
	  .elem = &net_http_route_destination_elem, .check = net_check_weights },
	{ .name = "redirect", .type = BM_T_OBJECT, .fields = redirect, .check = check_redirect },
	{ .name = "directResponse", .type = BM_T_OBJECT, .fields = direct_response },
	LATER("delegate"),
	{ .name = "rewrite", .type = BM_T_OBJECT, .fields = rewrite, .check = check_rewrite },
	{ .name = "timeout", .type = BM_T_DURATION },
	{ .name = "retries", .type = BM_T_OBJECT, .fields = http_retry,
	  .check = check_http_retry },
	{ .name = "fault", .type = BM_T_OBJECT, .fields = fault, .check = check_fault },
	{ .name = "mirror", .type = BM_T_OBJECT, .fields = net_destination },
	{ .name = "mirrors", .type = BM_T_LIST, .elem = &mirror_policy_elem },
	PERCENTAGE("mirrorPercentage"),
	{ .name = "mirrorPercent", .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0, .max = 100,
	  .check = warn_mirror_percent },
	LATER("corsPolicy"),
	HEADERS,
	{ .name = NULL },
};

/* "a: cannot be used with b", reported on a's line. */
static void exclusive(struct bm_vctx *v, const struct bm_ynode *n, const json_t *val,
		      const char *a, const char *b)
{
	char suffix[40];

	if (!json_object_get(val, a) || !json_object_get(val, b))
		return;
	snprintf(suffix, sizeof(suffix), ".%s", a);
	bm_verr_at(v, bm_ynode_key_line(n, a), suffix, "cannot be used with %s", b);
}

/* Setting :authority or host by header operation is an authority rewrite
 * (§1.9); doing both is ambiguous and Istio refuses it. */
static void check_authority_once(struct bm_vctx *v, const struct bm_ynode *n, const json_t *val)
{
	json_t *set = json_object_get(json_object_get(json_object_get(val, "headers"), "request"),
				      "set");
	const char *key;
	json_t *x;

	if (!json_object_get(json_object_get(val, "rewrite"), "authority"))
		return;
	json_object_foreach(set, key, x)
		if (!strcasecmp(key, "host") || !strcasecmp(key, ":authority")) {
			bm_verr_at(v, bm_ynode_key_line(n, "rewrite"), ".rewrite.authority",
				   "cannot be used with headers.request.set[\"%s\"] (the authority "
				   "would be rewritten twice)", key);
			return;
		}
}

/* istio-api §1.11: the mutually exclusive actions of an HTTPRoute. */
static void check_http_route(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_get(val, "route") && !json_object_get(val, "redirect") &&
	    !json_object_get(val, "directResponse")) {
		bm_verr(v, n->line, "one of route, redirect or directResponse is required");
		return;
	}
	exclusive(v, n, val, "redirect", "route");
	exclusive(v, n, val, "redirect", "fault");
	exclusive(v, n, val, "redirect", "rewrite");
	exclusive(v, n, val, "directResponse", "route");
	exclusive(v, n, val, "directResponse", "redirect");
	exclusive(v, n, val, "directResponse", "fault");
	exclusive(v, n, val, "directResponse", "rewrite");
	exclusive(v, n, val, "mirrors", "mirror");
	check_authority_once(v, n, val);
}

const struct bm_field net_http_route_elem = {
	.type = BM_T_OBJECT, .fields = http_route, .check = check_http_route };
