/* networking.istio.io schemas: VirtualService, DestinationRule, ServiceEntry,
 * WorkloadEntry. Field names and rules follow istio/api's v1alpha3 protos and
 * istio/istio's validation (docs/reference/istio-api.md §1, §2).
 * This file: the pieces the kinds share (schema_networking_int.h),
 * DestinationRule, WorkloadEntry and ServiceEntry; VirtualService is in
 * schema_virtualservice.c, its HTTP routes in schema_httproute.c. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "schema.h"
#include "schema_networking_int.h"

const struct bm_field net_host_elem = { .type = BM_T_STRING, .check = bm_check_host };
const struct bm_field net_export_to_elem = { .type = BM_T_STRING,
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

const struct bm_field net_ipv4_or_cidr_elem = { .type = BM_T_STRING,
					       .check = bm_check_ipv4_or_cidr };

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
	{ .name = "exportTo", .type = BM_T_LIST, .elem = &net_export_to_elem },
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
	  .elem = &net_host_elem },
	{ .name = "addresses", .type = BM_T_LIST, .elem = &net_ipv4_or_cidr_elem },
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
