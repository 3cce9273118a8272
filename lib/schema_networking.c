/* networking.istio.io schemas: VirtualService, DestinationRule, ServiceEntry,
 * WorkloadEntry. Field names and rules follow istio/api's v1alpha3 protos and
 * istio/istio's validation (docs/reference/istio-api.md §1, §2). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "schema.h"

/* An Istio field that we refuse until it is implemented. */
#define LATER(n) { .name = (n), .type = BM_T_NONE, .flags = BM_F_UNSUPPORTED }
#define LABELS(n) { .name = (n), .type = BM_T_MAP, .elem = &bm_label_value, \
		    .key_check = bm_check_label_key }
#define PORT_RANGE .flags = BM_F_RANGE, .min = 1, .max = 65535

static const struct bm_field host_elem = { .type = BM_T_STRING, .check = bm_check_host };
static const struct bm_field export_to_elem = { .type = BM_T_STRING,
						.check = bm_check_export_to };
static const struct bm_field port_number_elem = { .type = BM_T_INT, PORT_RANGE };

/* ---- addresses ---- */

static void check_workload_address(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val);

	if (bm_parse_ipv4(s, NULL, NULL, false))
		return;
	if (bm_looks_ipv6(s))
		bm_verr(v, n->line, "IPv6 addresses are not supported yet");
	else if (!strncmp(s, "unix://", 7))
		bm_verr(v, n->line, "unix socket addresses are not supported yet");
	else if (strspn(s, "0123456789.") != strlen(s) && bm_is_dns1123_subdomain(s))
		bm_verr(v, n->line, "host name addresses are not supported yet "
			"(use an IPv4 address)");
	else
		bm_verr(v, n->line, "\"%.64s\" is not an IPv4 address", s);
}

static const struct bm_field ipv4_or_cidr_elem = { .type = BM_T_STRING,
						   .check = bm_check_ipv4_or_cidr };

/* ---- VirtualService ---- */

static void check_gateway(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	/* Only the mesh (every node agent) is a place routes can apply for
	 * now; ingress/egress gateways come later. */
	if (strcmp(json_string_value(val), "mesh"))
		bm_verr(v, n->line, "gateway \"%.64s\" is not supported yet (only \"mesh\")",
			json_string_value(val));
}

static const struct bm_field gateway_elem = { .type = BM_T_STRING, .check = check_gateway };

/* istio-api §1.4: a lone destination takes all traffic whatever its weight;
 * with several, zero-weight ones are dropped, and all zero is an error. */
static void check_weights(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	long long total = 0;
	size_t i;
	json_t *d;

	if (json_array_size(val) < 2)
		return;
	json_array_foreach(val, i, d)
		total += json_integer_value(json_object_get(d, "weight"));
	if (total == 0)
		bm_verr(v, n->line, "total destination weight = 0");
	else if (total > UINT32_MAX)
		bm_verr(v, n->line, "total destination weight exceeds %u", UINT32_MAX);
}

static const struct bm_field port_selector[] = {
	{ .name = "number", .type = BM_T_INT, PORT_RANGE },
	{ .name = NULL },
};

static const struct bm_field destination[] = {
	{ .name = "host", .type = BM_T_STRING, .flags = BM_F_REQUIRED, .check = bm_check_host },
	{ .name = "subset", .type = BM_T_STRING, .check = bm_check_dns1123_label },
	{ .name = "port", .type = BM_T_OBJECT, .fields = port_selector },
	{ .name = NULL },
};

#define DESTINATION { .name = "destination", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED, \
		      .fields = destination }
#define WEIGHT { .name = "weight", .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0, \
		 .max = INT32_MAX }

/* ---- HTTP headers (istio-api §1.3, §1.9) ---- */

/* Header names in matches must be lower case (Istio validateHeaderMatch);
 * the "@request.auth.claims" pseudo-headers are gateway-only in Istio. */
static void check_match_header_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	(void)val;
	if (!strncmp(n->str, "@request.auth.claims", 20))
		bm_verr(v, n->line, "JWT claim matching (@request.auth.claims) is not supported yet");
	else if (!bm_is_http_header_name(n->str, false))
		bm_verr(v, n->line, "\"%.64s\" is not a valid header name", n->str);
	else if (!bm_is_http_header_name(n->str, true))
		bm_verr(v, n->line, "header name \"%.64s\" must be lower case", n->str);
}

static void check_query_param_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	(void)val;
	if (strpbrk(n->str, "&=# \t"))
		bm_verr(v, n->line, "\"%.64s\" is not a valid query parameter name", n->str);
}

/* Header operations: any valid name; of the pseudo-headers only :authority
 * may be set (it rewrites the authority, §1.9), none removed. */
static bool check_op_header_name(struct bm_vctx *v, unsigned line, const char *name,
				 bool allow_authority)
{
	if (name[0] == ':' && allow_authority && !strcasecmp(name, ":authority"))
		return true;
	if (name[0] == ':') {
		bm_verr(v, line, "pseudo-header \"%.64s\" cannot be changed", name);
		return false;
	}
	if (!bm_is_http_header_name(name, false)) {
		bm_verr(v, line, "\"%.64s\" is not a valid header name", name);
		return false;
	}
	return true;
}

static void check_set_header_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	(void)val;
	check_op_header_name(v, n->line, n->str, true);
}

static void check_add_header_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	(void)val;
	check_op_header_name(v, n->line, n->str, false);
}

static void check_remove_header(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *name = json_string_value(val);

	if (check_op_header_name(v, n->line, name, false) && !strcasecmp(name, "host"))
		bm_verr(v, n->line, "header \"host\" cannot be removed");
}

static const struct bm_field header_value = { .type = BM_T_STRING };
static const struct bm_field remove_header_elem = { .type = BM_T_STRING,
						    .check = check_remove_header };

static const struct bm_field header_ops[] = {
	{ .name = "set", .type = BM_T_MAP, .elem = &header_value,
	  .key_check = check_set_header_key },
	{ .name = "add", .type = BM_T_MAP, .elem = &header_value,
	  .key_check = check_add_header_key },
	{ .name = "remove", .type = BM_T_LIST, .elem = &remove_header_elem },
	{ .name = NULL },
};

static const struct bm_field headers[] = {
	{ .name = "request", .type = BM_T_OBJECT, .fields = header_ops },
	{ .name = "response", .type = BM_T_OBJECT, .fields = header_ops },
	{ .name = NULL },
};

#define HEADERS { .name = "headers", .type = BM_T_OBJECT, .fields = headers }

static const struct bm_field http_route_destination[] = {
	DESTINATION,
	WEIGHT,
	HEADERS,
	{ .name = NULL },
};

static const struct bm_field route_destination[] = {
	DESTINATION,
	WEIGHT,
	{ .name = NULL },
};

static const struct bm_field http_route_destination_elem = {
	.type = BM_T_OBJECT, .fields = http_route_destination };
static const struct bm_field route_destination_elem = {
	.type = BM_T_OBJECT, .fields = route_destination };

/* ---- StringMatch (istio-api §0) ---- */

static const struct bm_field string_match[] = {
	{ .name = "exact", .type = BM_T_STRING },
	{ .name = "prefix", .type = BM_T_STRING, .flags = BM_F_NONEMPTY },
	{ .name = "regex", .type = BM_T_STRING, .flags = BM_F_NONEMPTY, .check = bm_check_regex },
	{ .name = NULL },
};

/* Headers and query parameters: regex "*" means "present" (Istio), which
 * is not a regex, so it skips the compile check. */
static void check_value_regex(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (strcmp(json_string_value(val), "*"))
		bm_check_regex(v, n, val);
}

static const struct bm_field value_match[] = {
	{ .name = "exact", .type = BM_T_STRING },
	{ .name = "prefix", .type = BM_T_STRING, .flags = BM_F_NONEMPTY },
	{ .name = "regex", .type = BM_T_STRING, .flags = BM_F_NONEMPTY,
	  .check = check_value_regex },
	{ .name = NULL },
};

/* StringMatch is a oneof: exactly one of exact, prefix, regex; headers
 * and query parameters may also be {} (presence). */
static void check_oneof_match(struct bm_vctx *v, const struct bm_ynode *n, json_t *val,
			      bool allow_empty)
{
	size_t k = json_object_size(val);

	if (k > 1)
		bm_verr(v, n->line, "only one of exact, prefix or regex is allowed");
	else if (!k && !allow_empty)
		bm_verr(v, n->line, "one of exact, prefix or regex is required");
}

static void check_string_match(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	check_oneof_match(v, n, val, false);
}

static void check_value_match(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	check_oneof_match(v, n, val, true);
}

#define STRING_MATCH(n) { .name = (n), .type = BM_T_OBJECT, .fields = string_match, \
			  .check = check_string_match }

static const struct bm_field value_match_elem = {
	.type = BM_T_OBJECT, .fields = value_match, .check = check_value_match };

/* ---- HTTPMatchRequest (istio-api §1.3) ---- */

static const struct bm_field http_match[] = {
	{ .name = "name", .type = BM_T_STRING },
	STRING_MATCH("uri"),
	STRING_MATCH("scheme"),
	STRING_MATCH("method"),
	STRING_MATCH("authority"),
	{ .name = "headers", .type = BM_T_MAP, .elem = &value_match_elem,
	  .key_check = check_match_header_key },
	{ .name = "port", .type = BM_T_INT, PORT_RANGE },
	LABELS("sourceLabels"),
	{ .name = "gateways", .type = BM_T_LIST, .elem = &gateway_elem },
	{ .name = "queryParams", .type = BM_T_MAP, .elem = &value_match_elem,
	  .key_check = check_query_param_key },
	{ .name = "ignoreUriCase", .type = BM_T_BOOL },
	{ .name = "withoutHeaders", .type = BM_T_MAP, .elem = &value_match_elem,
	  .key_check = check_match_header_key },
	{ .name = "sourceNamespace", .type = BM_T_STRING, .check = bm_check_dns1123_label },
	{ .name = "statPrefix", .type = BM_T_STRING },
	{ .name = NULL },
};

/* istio-api §1.3: "- {}" is refused; a rule without conditions is written
 * by leaving out match. */
static void check_http_match(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_size(val))
		bm_verr(v, n->line, "an empty match is not allowed (leave out match to match "
			"every request)");
}

static const struct bm_field http_match_elem = {
	.type = BM_T_OBJECT, .fields = http_match, .check = check_http_match };

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
	{ .name = "match", .type = BM_T_LIST, .elem = &http_match_elem },
	{ .name = "route", .type = BM_T_LIST, .flags = BM_F_NONEMPTY,
	  .elem = &http_route_destination_elem, .check = check_weights },
	{ .name = "redirect", .type = BM_T_OBJECT, .fields = redirect, .check = check_redirect },
	{ .name = "directResponse", .type = BM_T_OBJECT, .fields = direct_response },
	LATER("delegate"),
	{ .name = "rewrite", .type = BM_T_OBJECT, .fields = rewrite, .check = check_rewrite },
	{ .name = "timeout", .type = BM_T_DURATION },
	{ .name = "retries", .type = BM_T_OBJECT, .fields = http_retry,
	  .check = check_http_retry },
	{ .name = "fault", .type = BM_T_OBJECT, .fields = fault, .check = check_fault },
	{ .name = "mirror", .type = BM_T_OBJECT, .fields = destination },
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

static const struct bm_field http_route_elem = {
	.type = BM_T_OBJECT, .fields = http_route, .check = check_http_route };

static const struct bm_field l4_match[] = {
	{ .name = "destinationSubnets", .type = BM_T_LIST, .elem = &ipv4_or_cidr_elem },
	{ .name = "port", .type = BM_T_INT, PORT_RANGE },
	LATER("sourceLabels"),
	LATER("sourceNamespace"),
	LATER("gateways"),
	LATER("sourceSubnet"),
	{ .name = NULL },
};

static const struct bm_field l4_match_elem = { .type = BM_T_OBJECT, .fields = l4_match };

static const struct bm_field tcp_route[] = {
	{ .name = "match", .type = BM_T_LIST, .elem = &l4_match_elem },
	{ .name = "route", .type = BM_T_LIST, .flags = BM_F_REQUIRED | BM_F_NONEMPTY,
	  .elem = &route_destination_elem, .check = check_weights },
	{ .name = NULL },
};

static const struct bm_field tcp_route_elem = { .type = BM_T_OBJECT, .fields = tcp_route };

static const struct bm_field virtualservice[] = {
	{ .name = "hosts", .type = BM_T_LIST, .flags = BM_F_REQUIRED | BM_F_NONEMPTY,
	  .elem = &host_elem },
	{ .name = "gateways", .type = BM_T_LIST, .elem = &gateway_elem },
	{ .name = "http", .type = BM_T_LIST, .elem = &http_route_elem },
	LATER("tls"),
	{ .name = "tcp", .type = BM_T_LIST, .elem = &tcp_route_elem },
	{ .name = "exportTo", .type = BM_T_LIST, .elem = &export_to_elem },
	{ .name = NULL },
};

static void check_virtualservice(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_array_size(json_object_get(val, "http")) &&
	    !json_array_size(json_object_get(val, "tcp")))
		bm_verr(v, n->line, "at least one of http or tcp is required");
}

const struct bm_field bm_spec_virtualservice = {
	.name = "spec", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED,
	.fields = virtualservice, .check = check_virtualservice };

/* ---- DestinationRule ---- */

static const char *const lb_simple[] = {
	"UNSPECIFIED", "LEAST_CONN", "LEAST_REQUEST", "ROUND_ROBIN", "RANDOM", "PASSTHROUGH",
	NULL };

static const struct bm_field load_balancer[] = {
	{ .name = "simple", .type = BM_T_STRING, .enums = lb_simple },
	LATER("consistentHash"),
	LATER("localityLbSetting"),
	LATER("warmupDurationSecs"),
	LATER("warmup"),
	{ .name = NULL },
};

#define COUNT(n) { .name = (n), .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0, \
		   .max = INT32_MAX }
#define UCOUNT(n) { .name = (n), .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0, \
		    .max = UINT32_MAX }

static const struct bm_field tcp_settings[] = {
	COUNT("maxConnections"),
	{ .name = "connectTimeout", .type = BM_T_DURATION },
	LATER("tcpKeepalive"),
	LATER("maxConnectionDuration"),
	/* istio-api §0: the one duration where 0s is allowed (disabled). */
	{ .name = "idleTimeout", .type = BM_T_STRING, .check = bm_check_duration_or_zero },
	{ .name = NULL },
};

static const char *const h2_upgrade_policies[] = { "DEFAULT", "DO_NOT_UPGRADE", "UPGRADE",
						   NULL };

static const struct bm_field http_settings[] = {
	COUNT("http1MaxPendingRequests"),
	COUNT("http2MaxRequests"),
	COUNT("maxRequestsPerConnection"),
	COUNT("maxRetries"),
	{ .name = "idleTimeout", .type = BM_T_DURATION },
	{ .name = "h2UpgradePolicy", .type = BM_T_STRING, .enums = h2_upgrade_policies },
	{ .name = "useClientProtocol", .type = BM_T_BOOL },
	COUNT("maxConcurrentStreams"),
	LATER("http2KeepAlive"),
	{ .name = NULL },
};

/* istio-api §2.4: the client's protocol and a forced upgrade contradict. */
static void check_http_settings(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *up = json_string_value(json_object_get(val, "h2UpgradePolicy"));

	if (json_is_true(json_object_get(val, "useClientProtocol")) && up &&
	    !strcmp(up, "UPGRADE"))
		bm_verr_at(v, bm_ynode_key_line(n, "useClientProtocol"), ".useClientProtocol",
			   "cannot be true with h2UpgradePolicy UPGRADE");
}

static const struct bm_field connection_pool[] = {
	{ .name = "tcp", .type = BM_T_OBJECT, .fields = tcp_settings },
	{ .name = "http", .type = BM_T_OBJECT, .fields = http_settings,
	  .check = check_http_settings },
	{ .name = NULL },
};

/* istio-api §2.4: "at least one of tcp/http present if connectionPool". */
static void check_connection_pool(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_get(val, "tcp") && !json_object_get(val, "http"))
		bm_verr(v, n->line, "at least one of tcp or http is required");
}

static const struct bm_field http_status_elem = { .type = BM_T_INT, .flags = BM_F_RANGE,
						  .min = 100, .max = 599 };

static const struct bm_field outlier_detection[] = {
	{ .name = "minHealthPercent", .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0,
	  .max = 100 },
	/* Deprecated, int32 in the proto: see check_outlier_detection. */
	COUNT("consecutiveErrors"),
	UCOUNT("consecutive5xxErrors"),
	UCOUNT("consecutiveGatewayErrors"),
	UCOUNT("consecutiveLocalOriginFailures"),
	{ .name = "splitExternalLocalOriginErrors", .type = BM_T_BOOL },
	{ .name = "interval", .type = BM_T_DURATION },
	{ .name = "baseEjectionTime", .type = BM_T_DURATION },
	{ .name = "maxEjectionPercent", .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0,
	  .max = 100 },
	{ .name = "outlierDetectionHttpErrorCodes", .type = BM_T_LIST,
	  .elem = &http_status_elem },
	{ .name = NULL },
};

/* istio-api §2.5: consecutiveErrors counted 502/503/504 in the Istio
 * releases that translated it, which is consecutiveGatewayErrors now. The
 * canonical form carries only the new field (in schema order) so the
 * agent has one field to read; an explicit consecutiveGatewayErrors wins. */
static void map_consecutive_errors(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	json_t *old = json_object_get(val, "consecutiveErrors"), *ordered;
	unsigned line = bm_ynode_key_line(n, "consecutiveErrors");

	if (!old)
		return;
	if (json_object_get(val, "consecutiveGatewayErrors")) {
		bm_vwarn_at(v, line, ".consecutiveErrors", "deprecated and ignored: "
			    "consecutiveGatewayErrors is set");
		json_object_del(val, "consecutiveErrors");
		return;
	}
	bm_vwarn_at(v, line, ".consecutiveErrors", "deprecated; mapped to "
		    "consecutiveGatewayErrors (use consecutiveGatewayErrors or "
		    "consecutive5xxErrors)");
	ordered = json_object();
	if (!ordered) {
		v->oom = true;
		return;
	}
	for (const struct bm_field *f = outlier_detection; f->name; f++) {
		const char *from = strcmp(f->name, "consecutiveGatewayErrors") ? f->name
									: "consecutiveErrors";
		json_t *x = json_object_get(val, from);

		if (x && strcmp(f->name, "consecutiveErrors") &&
		    json_object_set(ordered, f->name, x))
			v->oom = true;
	}
	json_object_clear(val);
	if (json_object_update(val, ordered))
		v->oom = true;
	json_decref(ordered);
}

static void check_outlier_detection(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	/* Istio ValidateOutlierDetection: local-origin failures are only
	 * counted apart when the split is on. */
	if (json_object_get(val, "consecutiveLocalOriginFailures") &&
	    !json_is_true(json_object_get(val, "splitExternalLocalOriginErrors")))
		bm_verr_at(v, bm_ynode_key_line(n, "consecutiveLocalOriginFailures"),
			   ".consecutiveLocalOriginFailures",
			   "requires splitExternalLocalOriginErrors: true");
	map_consecutive_errors(v, n, val);
}

/* istio-api §2.6: client TLS toward the upstream. The mesh's own mTLS
 * (ISTIO_MUTUAL) and plaintext (DISABLE) are what the data plane does; TLS
 * origination with user certificates (SIMPLE, MUTUAL) comes later. */
static const char *const tls_modes[] = { "DISABLE", "ISTIO_MUTUAL", NULL };
static const char *const tls_modes_later[] = { "SIMPLE", "MUTUAL", NULL };
static const struct bm_field san_elem = { .type = BM_T_STRING };

/* Everything but mode is typed rather than LATER so that check_client_tls
 * can say which rule a field breaks: Istio's "must be empty with
 * ISTIO_MUTUAL", or ours, "not supported yet". */
static const struct bm_field client_tls[] = {
	{ .name = "mode", .type = BM_T_STRING, .enums = tls_modes, .enums_later = tls_modes_later },
	{ .name = "clientCertificate", .type = BM_T_STRING },
	{ .name = "privateKey", .type = BM_T_STRING },
	{ .name = "caCertificates", .type = BM_T_STRING },
	{ .name = "credentialName", .type = BM_T_STRING },
	{ .name = "subjectAltNames", .type = BM_T_LIST, .elem = &san_elem },
	{ .name = "sni", .type = BM_T_STRING },
	{ .name = "insecureSkipVerify", .type = BM_T_BOOL },
	{ .name = "caCrl", .type = BM_T_STRING },
	{ .name = NULL },
};

/* A field holding its default ("", [], false) is as good as absent. */
static bool tls_value_set(const json_t *j)
{
	if (json_is_string(j))
		return json_string_length(j) > 0;
	if (json_is_array(j))
		return json_array_size(j) > 0;
	return json_is_true(j);
}

static void check_client_tls(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *mode = json_string_value(json_object_get(val, "mode"));
	bool istio_mutual = mode && !strcmp(mode, "ISTIO_MUTUAL");

	/* client_tls[0] is mode; every other field is a certificate setting. */
	for (const struct bm_field *f = client_tls + 1; f->name; f++) {
		char suffix[40];

		if (!tls_value_set(json_object_get(val, f->name)))
			continue;
		snprintf(suffix, sizeof(suffix), ".%s", f->name);
		/* Istio ValidateDestinationRule: ISTIO_MUTUAL takes everything
		 * from the mesh's workload certificates. */
		if (istio_mutual)
			bm_verr_at(v, bm_ynode_key_line(n, f->name), suffix,
				   "must be empty with mode ISTIO_MUTUAL (the mesh's workload "
				   "certificates are used)");
		else
			bm_verr_at(v, bm_ynode_key_line(n, f->name), suffix, "not supported yet");
	}
}

static const struct bm_field traffic_policy[] = {
	{ .name = "loadBalancer", .type = BM_T_OBJECT, .fields = load_balancer },
	{ .name = "connectionPool", .type = BM_T_OBJECT, .fields = connection_pool,
	  .check = check_connection_pool },
	{ .name = "outlierDetection", .type = BM_T_OBJECT, .fields = outlier_detection,
	  .check = check_outlier_detection },
	{ .name = "tls", .type = BM_T_OBJECT, .fields = client_tls, .check = check_client_tls },
	LATER("portLevelSettings"),
	LATER("tunnel"),
	LATER("proxyProtocol"),
	LATER("retryBudget"),
	{ .name = NULL },
};

static const struct bm_field subset[] = {
	{ .name = "name", .type = BM_T_STRING, .flags = BM_F_REQUIRED,
	  .check = bm_check_dns1123_label },
	LABELS("labels"),
	{ .name = "trafficPolicy", .type = BM_T_OBJECT, .fields = traffic_policy },
	{ .name = NULL },
};

static const struct bm_field subset_elem = { .type = BM_T_OBJECT, .fields = subset };

/* A DR for "*" would be a mesh-wide default policy: not implemented, so
 * refuse it rather than apply it to nothing. */
static void check_dr_host(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!strcmp(json_string_value(val), "*"))
		bm_verr(v, n->line, "host \"*\" is not supported yet");
	else
		bm_check_host(v, n, val);
}

static const struct bm_field destinationrule[] = {
	{ .name = "host", .type = BM_T_STRING, .flags = BM_F_REQUIRED, .check = check_dr_host },
	{ .name = "trafficPolicy", .type = BM_T_OBJECT, .fields = traffic_policy },
	{ .name = "subsets", .type = BM_T_LIST, .elem = &subset_elem,
	  .check = bm_check_unique_names },
	{ .name = "exportTo", .type = BM_T_LIST, .elem = &export_to_elem },
	LATER("workloadSelector"),
	{ .name = NULL },
};

const struct bm_field bm_spec_destinationrule = {
	.name = "spec", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED, .fields = destinationrule };

/* ---- WorkloadEntry (also the shape of ServiceEntry endpoints) ---- */

/* Keys of "ports" are port names, as in ServiceEntry ports[].name. */
static void check_port_name_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	(void)val;
	if (!bm_is_dns1123_label(n->str))
		bm_verr(v, n->line, "port name \"%.64s\" is not a valid DNS-1123 label", n->str);
}

static const struct bm_field workload_entry[] = {
	{ .name = "address", .type = BM_T_STRING, .flags = BM_F_REQUIRED,
	  .check = check_workload_address },
	{ .name = "ports", .type = BM_T_MAP, .elem = &port_number_elem,
	  .key_check = check_port_name_key },
	LABELS("labels"),
	{ .name = "serviceAccount", .type = BM_T_STRING, .check = bm_check_dns1123_subdomain },
	LATER("network"),
	LATER("locality"),
	LATER("weight"),
	{ .name = NULL },
};

const struct bm_field bm_spec_workloadentry = {
	.name = "spec", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED, .fields = workload_entry };

/* ---- ServiceEntry ---- */

static const char *const protocols[] = {
	"HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS", NULL };
static const char *const locations[] = { "MESH_INTERNAL", "MESH_EXTERNAL", NULL };
static const char *const resolutions[] = { "NONE", "STATIC", NULL };
static const char *const resolutions_later[] = { "DNS", "DNS_ROUND_ROBIN", NULL };

static const struct bm_field service_port[] = {
	{ .name = "number", .type = BM_T_INT, .flags = BM_F_REQUIRED | BM_F_RANGE, .min = 1,
	  .max = 65535 },
	{ .name = "protocol", .type = BM_T_STRING, .flags = BM_F_ICASE, .enums = protocols },
	{ .name = "name", .type = BM_T_STRING, .flags = BM_F_REQUIRED,
	  .check = bm_check_dns1123_label },
	{ .name = "targetPort", .type = BM_T_INT, PORT_RANGE },
	{ .name = NULL },
};

static const struct bm_field service_port_elem = { .type = BM_T_OBJECT, .fields = service_port };

/* Istio ValidateServiceEntry: port names and numbers are each unique. */
static void check_service_ports(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	size_t count = json_array_size(val);

	bm_check_unique_names(v, n, val);
	for (size_t i = 1; i < count && i < n->len; i++) {
		json_int_t num = json_integer_value(json_object_get(json_array_get(val, i), "number"));

		for (size_t j = 0; j < i; j++) {
			if (num == json_integer_value(
					   json_object_get(json_array_get(val, j), "number"))) {
				const struct bm_ynode *nn = bm_ynode_get(n->items[i], "number");
				char suffix[40];

				snprintf(suffix, sizeof(suffix), "[%zu].number", i);
				bm_verr_at(v, nn ? nn->line : n->items[i]->line, suffix,
					   "duplicate port number %lld", (long long)num);
				break;
			}
		}
	}
}

static const struct bm_field workload_selector[] = {
	LABELS("labels"),
	{ .name = NULL },
};

static const struct bm_field endpoint_elem = { .type = BM_T_OBJECT, .fields = workload_entry };

static const struct bm_field serviceentry[] = {
	{ .name = "hosts", .type = BM_T_LIST, .flags = BM_F_REQUIRED | BM_F_NONEMPTY,
	  .elem = &host_elem },
	{ .name = "addresses", .type = BM_T_LIST, .elem = &ipv4_or_cidr_elem },
	{ .name = "ports", .type = BM_T_LIST, .elem = &service_port_elem,
	  .check = check_service_ports },
	{ .name = "location", .type = BM_T_STRING, .enums = locations },
	{ .name = "resolution", .type = BM_T_STRING, .enums = resolutions,
	  .enums_later = resolutions_later },
	{ .name = "workloadSelector", .type = BM_T_OBJECT, .fields = workload_selector },
	{ .name = "endpoints", .type = BM_T_LIST, .elem = &endpoint_elem },
	LATER("exportTo"),
	LATER("subjectAltNames"),
	{ .name = NULL },
};

/* Cross-field rules of Istio's ValidateServiceEntry. */
static void check_serviceentry(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	json_t *eps = json_object_get(val, "endpoints"), *ports = json_object_get(val, "ports");
	const char *res = json_string_value(json_object_get(val, "resolution"));
	const struct bm_ynode *yeps = bm_ynode_get(n, "endpoints");
	json_t *ep;
	size_t i;

	if (!json_array_size(eps))
		return;
	if (json_object_get(val, "workloadSelector"))
		bm_verr(v, n->line, "only one of workloadSelector or endpoints is allowed");
	if (!res || !strcmp(res, "NONE"))
		bm_verr_at(v, bm_ynode_key_line(n, "endpoints"), ".endpoints",
			   "no endpoints should be provided for resolution NONE "
			   "(use resolution: STATIC)");
	json_array_foreach(eps, i, ep) {
		unsigned ports_line = yeps && i < yeps->len
					      ? bm_ynode_key_line(yeps->items[i], "ports")
					      : n->line;
		const char *name;
		json_t *num;

		json_object_foreach(json_object_get(ep, "ports"), name, num) {
			bool defined = false;
			char suffix[64];
			size_t k;
			json_t *p;

			json_array_foreach(ports, k, p) {
				const char *pn = json_string_value(json_object_get(p, "name"));

				if (pn && !strcmp(pn, name))
					defined = true;
			}
			if (defined)
				continue;
			snprintf(suffix, sizeof(suffix), ".endpoints[%zu].ports", i);
			bm_verr_at(v, ports_line, suffix,
				   "port \"%.64s\" is not defined in the service entry's ports",
				   name);
		}
	}
}

const struct bm_field bm_spec_serviceentry = {
	.name = "spec", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED,
	.fields = serviceentry, .check = check_serviceentry };
