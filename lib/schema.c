/* Kind table, CLI aliases and the metadata schema. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "schema.h"

/* istio-api §0: the networking versions share one schema, as do the
 * security and telemetry ones. */
static const char *const networking_versions[] = { "v1", "v1beta1", "v1alpha3", NULL };
static const char *const security_versions[] = { "v1", "v1beta1", NULL };
static const char *const telemetry_versions[] = { "v1", "v1alpha1", NULL };
static const char *const extensions_versions[] = { "v1alpha1", NULL };
static const char *const install_versions[] = { "v1alpha1", NULL };
static const char *const envoyfilter_versions[] = { "v1alpha3", NULL };
static const char *const proxyconfig_versions[] = { "v1beta1", NULL };

/* Kinds with spec == NULL are refused as "not supported yet" and are here so
 * that later work enables them by filling in a schema. */
const struct bm_kind bm_kinds[] = {
	{ "VirtualService", "networking.istio.io", networking_versions, "virtualservices", "vs",
	  &bm_spec_virtualservice },
	{ "DestinationRule", "networking.istio.io", networking_versions, "destinationrules", "dr",
	  &bm_spec_destinationrule },
	{ "ServiceEntry", "networking.istio.io", networking_versions, "serviceentries", "se",
	  &bm_spec_serviceentry },
	{ "WorkloadEntry", "networking.istio.io", networking_versions, "workloadentries", "we",
	  &bm_spec_workloadentry },
	{ "PeerAuthentication", "security.istio.io", security_versions, "peerauthentications",
	  "pa", &bm_spec_peerauthentication },
	{ "AuthorizationPolicy", "security.istio.io", security_versions, "authorizationpolicies",
	  "ap", &bm_spec_authorizationpolicy },
	{ "RequestAuthentication", "security.istio.io", security_versions,
	  "requestauthentications", "ra", &bm_spec_requestauthentication },
	{ "Telemetry", "telemetry.istio.io", telemetry_versions, "telemetries", NULL,
	  &bm_spec_telemetry },
	{ "Gateway", "networking.istio.io", networking_versions, "gateways", "gw", NULL },
	{ "Sidecar", "networking.istio.io", networking_versions, "sidecars", NULL, NULL },
	{ "WorkloadGroup", "networking.istio.io", networking_versions, "workloadgroups", "wg",
	  NULL },
	{ "EnvoyFilter", "networking.istio.io", envoyfilter_versions, "envoyfilters", NULL, NULL },
	{ "ProxyConfig", "networking.istio.io", proxyconfig_versions, "proxyconfigs", NULL, NULL },
	{ "WasmPlugin", "extensions.istio.io", extensions_versions, "wasmplugins", NULL, NULL },
	{ "IstioOperator", "install.istio.io", install_versions, "istiooperators", "iop", NULL },
	{ NULL, NULL, NULL, NULL, NULL, NULL },
};

const struct bm_kind *bm_kind_find(const char *kind)
{
	for (const struct bm_kind *k = bm_kinds; k->kind; k++)
		if (!strcmp(k->kind, kind))
			return k;
	return NULL;
}

const struct bm_kind *bm_kind_lookup(const char *name)
{
	const char *dot = strchr(name, '.');
	size_t n = dot ? (size_t)(dot - name) : strlen(name);

	for (const struct bm_kind *k = bm_kinds; k->kind; k++) {
		/* "virtualservice.networking.istio.io" names the group too. */
		if (dot && strcasecmp(dot + 1, k->group))
			continue;
		if ((strlen(k->kind) == n && !strncasecmp(k->kind, name, n)) ||
		    (strlen(k->plural) == n && !strncasecmp(k->plural, name, n)) ||
		    (k->shortname && strlen(k->shortname) == n &&
		     !strncasecmp(k->shortname, name, n)))
			return k;
	}
	return NULL;
}

const char *bm_kind_fullname(const struct bm_kind *k, char *buf, size_t size)
{
	size_t i, n = strlen(k->kind);

	for (i = 0; i < n && i + 1 < size; i++)
		buf[i] = (char)(k->kind[i] >= 'A' && k->kind[i] <= 'Z' ? k->kind[i] + 32 : k->kind[i]);
	if (size)
		snprintf(buf + i, size - i, ".%s", k->group);
	return buf;
}

bool bm_kind_accepts_api_version(const struct bm_kind *k, const char *api_version)
{
	size_t glen = strlen(k->group);

	if (strncmp(api_version, k->group, glen) || api_version[glen] != '/')
		return false;
	for (const char *const *v = k->versions; *v; v++)
		if (!strcmp(api_version + glen + 1, *v))
			return true;
	return false;
}

/* ServiceEntry addresses, AuthorizationPolicy ipBlocks and IP "when"
 * values: IPv4 only until the data plane handles IPv6. */
void bm_check_ipv4_or_cidr(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val);

	if (bm_parse_ipv4(s, NULL, NULL, true))
		return;
	if (bm_looks_ipv6(s))
		bm_verr(v, n->line, "IPv6 addresses are not supported yet");
	else
		bm_verr(v, n->line, "\"%.64s\" is not an IPv4 address or CIDR", s);
}

/* Label values: empty, or up to 63 of [A-Za-z0-9._-], alphanumeric ends. */
static void check_label_value(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val);
	size_t len = strlen(s);
	bool ok = len <= 63;

	for (size_t i = 0; ok && i < len; i++) {
		bool alnum = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
			     (s[i] >= '0' && s[i] <= '9');

		ok = alnum || ((i > 0 && i + 1 < len) && strchr("-_.", s[i]));
	}
	if (!ok)
		bm_verr(v, n->line, "invalid label value (up to 63 of [A-Za-z0-9._-], "
			"alphanumeric at both ends)");
}

const struct bm_field bm_label_value = { .type = BM_T_STRING, .check = check_label_value };
static const struct bm_field annotation_value = { .type = BM_T_STRING };

const struct bm_field bm_metadata_fields[] = {
	{ .name = "name", .type = BM_T_STRING, .flags = BM_F_REQUIRED,
	  .check = bm_check_dns1123_subdomain },
	{ .name = "namespace", .type = BM_T_STRING, .check = bm_check_dns1123_label },
	{ .name = "labels", .type = BM_T_MAP, .elem = &bm_label_value,
	  .key_check = bm_check_label_key },
	{ .name = "annotations", .type = BM_T_MAP, .elem = &annotation_value,
	  .key_check = bm_check_label_key },
	/* Written by stores and API servers; output of `get -o yaml` (ours or
	 * kubectl's) must apply again, so accept them and let the store set
	 * its own. */
	{ .name = "uid", .type = BM_T_ANY, .flags = BM_F_IGNORED },
	{ .name = "resourceVersion", .type = BM_T_ANY, .flags = BM_F_IGNORED },
	{ .name = "creationTimestamp", .type = BM_T_ANY, .flags = BM_F_IGNORED },
	{ .name = "generation", .type = BM_T_ANY, .flags = BM_F_IGNORED },
	{ .name = "managedFields", .type = BM_T_ANY, .flags = BM_F_IGNORED },
	{ .name = NULL },
};
