/* networking.istio.io schemas: VirtualService, DestinationRule, ServiceEntry,
 * WorkloadEntry. Field names and rules follow istio/api's v1alpha3 protos and
 * istio/istio's validation (docs/reference/istio-api.md §1, §2). */
#include <stdint.h>
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

static const struct bm_field http_route_destination[] = {
	DESTINATION,
	WEIGHT,
	LATER("headers"),
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

/* HTTPRoute: L7 features are listed so they are refused by name now and
 * enabled one by one later by giving each a sub-table. */
static const struct bm_field http_route[] = {
	{ .name = "name", .type = BM_T_STRING },
	LATER("match"),
	{ .name = "route", .type = BM_T_LIST, .flags = BM_F_NONEMPTY,
	  .elem = &http_route_destination_elem, .check = check_weights },
	LATER("redirect"),
	LATER("directResponse"),
	LATER("delegate"),
	LATER("rewrite"),
	LATER("timeout"),
	LATER("retries"),
	LATER("fault"),
	LATER("mirror"),
	LATER("mirrors"),
	LATER("mirrorPercentage"),
	LATER("mirrorPercent"),
	LATER("corsPolicy"),
	LATER("headers"),
	{ .name = NULL },
};

/* istio-api §1.9: one of route, redirect, directResponse (or delegate);
 * the other three are refused above, so a rule here needs a route. */
static void check_http_route(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_get(val, "route"))
		bm_verr_at(v, n->line, ".route", "required");
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

static const struct bm_field tcp_settings[] = {
	{ .name = "maxConnections", .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0,
	  .max = INT32_MAX },
	LATER("connectTimeout"),
	LATER("tcpKeepalive"),
	LATER("maxConnectionDuration"),
	LATER("idleTimeout"),
	{ .name = NULL },
};

static const struct bm_field http_settings[] = {
	LATER("http1MaxPendingRequests"),
	LATER("http2MaxRequests"),
	LATER("maxRequestsPerConnection"),
	LATER("maxRetries"),
	LATER("idleTimeout"),
	LATER("h2UpgradePolicy"),
	LATER("useClientProtocol"),
	LATER("maxConcurrentStreams"),
	LATER("http2KeepAlive"),
	{ .name = NULL },
};

static const struct bm_field connection_pool[] = {
	{ .name = "tcp", .type = BM_T_OBJECT, .fields = tcp_settings },
	{ .name = "http", .type = BM_T_OBJECT, .fields = http_settings },
	{ .name = NULL },
};

/* istio-api §2.4: "at least one of tcp/http present if connectionPool". */
static void check_connection_pool(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_get(val, "tcp") && !json_object_get(val, "http"))
		bm_verr(v, n->line, "at least one of tcp or http is required");
}

static const struct bm_field outlier_detection[] = {
	{ .name = "minHealthPercent", .type = BM_T_INT, .flags = BM_F_RANGE, .min = 0,
	  .max = 100 },
	LATER("consecutiveErrors"),
	LATER("consecutive5xxErrors"),
	LATER("consecutiveGatewayErrors"),
	LATER("consecutiveLocalOriginFailures"),
	LATER("splitExternalLocalOriginErrors"),
	LATER("interval"),
	LATER("baseEjectionTime"),
	LATER("maxEjectionPercent"),
	LATER("outlierDetectionHttpErrorCodes"),
	{ .name = NULL },
};

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
	{ .name = "outlierDetection", .type = BM_T_OBJECT, .fields = outlier_detection },
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
