/* networking.istio.io VirtualService schema (schema_networking.c has the
 * other kinds): destinations and weights, header operations, StringMatch and
 * HTTPMatchRequest, TCP routes and the spec. The HTTP route rules and their
 * actions are in schema_httproute.c (docs/reference/istio-api.md §1). */
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include "schema.h"
#include "schema_networking_int.h"

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
void net_check_weights(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
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

const struct bm_field net_destination[] = {
	{ .name = "host", .type = BM_T_STRING, .flags = BM_F_REQUIRED, .check = bm_check_host },
	{ .name = "subset", .type = BM_T_STRING, .check = bm_check_dns1123_label },
	{ .name = "port", .type = BM_T_OBJECT, .fields = port_selector },
	{ .name = NULL },
};

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

const struct bm_field net_headers[] = {
	{ .name = "request", .type = BM_T_OBJECT, .fields = header_ops },
	{ .name = "response", .type = BM_T_OBJECT, .fields = header_ops },
	{ .name = NULL },
};

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

const struct bm_field net_http_route_destination_elem = {
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

const struct bm_field net_http_match_elem = {
	.type = BM_T_OBJECT, .fields = http_match, .check = check_http_match };

/* ---- TCPRoute, VirtualService ---- */

static const struct bm_field l4_match[] = {
	{ .name = "destinationSubnets", .type = BM_T_LIST, .elem = &net_ipv4_or_cidr_elem },
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
	  .elem = &route_destination_elem, .check = net_check_weights },
	{ .name = NULL },
};

static const struct bm_field tcp_route_elem = { .type = BM_T_OBJECT, .fields = tcp_route };

static const struct bm_field virtualservice[] = {
	{ .name = "hosts", .type = BM_T_LIST, .flags = BM_F_REQUIRED | BM_F_NONEMPTY,
	  .elem = &net_host_elem },
	{ .name = "gateways", .type = BM_T_LIST, .elem = &gateway_elem },
	{ .name = "http", .type = BM_T_LIST, .elem = &net_http_route_elem },
	LATER("tls"),
	{ .name = "tcp", .type = BM_T_LIST, .elem = &tcp_route_elem },
	{ .name = "exportTo", .type = BM_T_LIST, .elem = &net_export_to_elem },
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
