/* security.istio.io schemas: PeerAuthentication, AuthorizationPolicy and
 * RequestAuthentication.
 * Field names follow istio/api's security/v1beta1 protos; the rules are
 * istio/istio's ValidatePeerAuthentication, ValidateAuthorizationPolicy,
 * ValidateRequestAuthentication and pkg/config/security
 * (docs/reference/istio-api.md §3, §4, §5). */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "schema.h"

/* An Istio field that we refuse until it is implemented. */
#define LATER(n) { .name = (n), .type = BM_T_NONE, .flags = BM_F_UNSUPPORTED }

/* Istio: at most 512 rules per policy (CRD maxItems) and 16 service
 * accounts per source (keeps the per-source match cheap). */
#define MAX_RULES 512
#define MAX_SERVICE_ACCOUNTS 16

/* ---- shared pieces ---- */

static const struct bm_field selector[] = {
	{ .name = "matchLabels", .type = BM_T_MAP, .elem = &bm_label_value,
	  .key_check = bm_check_label_key },
	{ .name = NULL },
};

/* A selector without labels selects every workload, exactly like no
 * selector: Istio treats both as a namespace-wide policy. */
static bool has_selector_labels(const json_t *spec)
{
	return json_object_size(json_object_get(json_object_get(spec, "selector"),
						"matchLabels")) > 0;
}

/* Decimal 1-65535 without sign or leading zero: "80" and "080" must not be
 * two different keys of portLevelMtls. */
static bool is_port_string(const char *s)
{
	size_t len = strlen(s);
	unsigned long port = 0;

	if (!len || len > 5 || s[0] == '0')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		port = port * 10 + (unsigned long)(s[i] - '0');
	}
	return port <= 65535;
}

/* Operation ports and destination.port values: Istio's proto says string,
 * users write numbers; both arrive here as text and are kept as a string. */
static void check_port(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!is_port_string(json_string_value(val)))
		bm_verr(v, n->line, "\"%.64s\" is not a port number (1-65535)",
			json_string_value(val));
}

/* Istio string match (pilot/pkg/security/authz/matcher/string.go): exact,
 * "abc*" prefix, "*abc" suffix, "*" presence. A '*' anywhere else would be
 * matched literally, which is never what the author meant. */
static void check_match_string(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val), *star = strchr(s, '*');
	size_t len = strlen(s);

	if (!star || !strcmp(s, "*"))
		return;
	if (!strchr(star + 1, '*') && (star == s || star == s + len - 1))
		return;
	bm_verr(v, n->line, "\"%.64s\": '*' is only allowed alone, at the start (suffix "
		"match) or at the end (prefix match)", s);
}

/* Paths: plain match strings, or URI templates (istio-api §4.1) as soon as
 * they hold a brace. Istio's CheckValidPathTemplate: {*} (one segment) and
 * {**} (the rest) are whole segments, no named variables, nothing after
 * {**} but literal segments, and no bare '*' in a template. */
static void check_path(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val);
	bool seen_any = false;

	if (!strpbrk(s, "{}")) {
		check_match_string(v, n, val);
		return;
	}
	for (const char *seg = s; *seg;) {
		size_t len = strcspn(seg, "/");

		if ((len == 3 && !strncmp(seg, "{*}", 3)) || (len == 4 && !strncmp(seg, "{**}", 4))) {
			if (seen_any) {
				bm_verr(v, n->line, "\"%.64s\": {**} must be the last operator of "
					"a path template", s);
				return;
			}
			seen_any = len == 4;
		} else if (memchr(seg, '{', len) || memchr(seg, '}', len)) {
			bm_verr(v, n->line, "\"%.64s\": path templates only support {*} and {**}, "
				"each as a whole path segment", s);
			return;
		} else if (memchr(seg, '*', len)) {
			bm_verr(v, n->line, "\"%.64s\": '*' is not allowed outside {*} and {**} "
				"in a path template", s);
			return;
		}
		seg += len;
		if (*seg == '/')
			seg++;
	}
}

/* serviceAccounts: "ns/sa", or "sa" in the policy's namespace; Istio has
 * no wildcards here. */
static void check_service_account(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val), *slash = strchr(s, '/');
	char ns[64];
	bool ok;

	if (strchr(s, '*')) {
		bm_verr(v, n->line, "\"%.64s\": wildcards are not allowed in serviceAccounts", s);
		return;
	}
	if (slash) {
		size_t nl = (size_t)(slash - s);

		ok = nl < sizeof(ns);
		if (ok) {
			memcpy(ns, s, nl);
			ns[nl] = '\0';
			ok = bm_is_dns1123_label(ns) && bm_is_dns1123_subdomain(slash + 1);
		}
	} else {
		ok = bm_is_dns1123_subdomain(s);
	}
	if (!ok)
		bm_verr(v, n->line, "\"%.64s\" is not a service account (\"namespace/name\" or "
			"\"name\")", s);
}

static void check_max_rules(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (json_array_size(val) > MAX_RULES)
		bm_verr(v, n->line, "at most %d rules are allowed (got %zu)", MAX_RULES,
			json_array_size(val));
}

static void check_max_service_accounts(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (json_array_size(val) > MAX_SERVICE_ACCOUNTS)
		bm_verr(v, n->line, "at most %d service accounts are allowed (got %zu)",
			MAX_SERVICE_ACCOUNTS, json_array_size(val));
}

/* Value lists: Istio's CheckEmptyValues refuses "" in every one of them. */
static const struct bm_field match_elem = { .type = BM_T_STRING, .flags = BM_F_NONEMPTY,
					    .check = check_match_string };
static const struct bm_field path_elem = { .type = BM_T_STRING, .flags = BM_F_NONEMPTY,
					   .check = check_path };
static const struct bm_field ip_elem = { .type = BM_T_STRING, .flags = BM_F_NONEMPTY,
					 .check = bm_check_ipv4_or_cidr };
static const struct bm_field port_elem = { .type = BM_T_STRING, .flags = BM_F_NONEMPTY,
					   .check = check_port };
static const struct bm_field service_account_elem = {
	.type = BM_T_STRING, .flags = BM_F_NONEMPTY, .check = check_service_account };
static const struct bm_field value_elem = { .type = BM_T_STRING, .flags = BM_F_NONEMPTY };

/* An empty list means "unset" to Istio but "matches nothing" to a reader
 * of our canonical JSON: refuse it rather than let the two disagree. */
#define VALUES(n, e) { .name = (n), .type = BM_T_LIST, .flags = BM_F_NONEMPTY, .elem = (e) }

/* ---- PeerAuthentication ---- */

static const char *const mtls_modes[] = { "UNSET", "DISABLE", "PERMISSIVE", "STRICT", NULL };

static const struct bm_field mtls[] = {
	{ .name = "mode", .type = BM_T_STRING, .enums = mtls_modes },
	{ .name = NULL },
};

static const struct bm_field port_mtls_elem = { .type = BM_T_OBJECT, .fields = mtls };

/* portLevelMtls keys are workload ports (istio-api §3). */
static void check_port_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	(void)val;
	if (!is_port_string(n->str))
		bm_verr(v, n->line, "port \"%.64s\" is not a number between 1 and 65535", n->str);
}

static const struct bm_field peerauthentication[] = {
	{ .name = "selector", .type = BM_T_OBJECT, .fields = selector },
	{ .name = "mtls", .type = BM_T_OBJECT, .fields = mtls },
	{ .name = "portLevelMtls", .type = BM_T_MAP, .flags = BM_F_NONEMPTY,
	  .elem = &port_mtls_elem, .key_check = check_port_key },
	{ .name = NULL },
};

/* Istio's CRD rule "portLevelMtls requires selector": a namespace- or
 * mesh-wide policy has no single workload whose ports the keys name. */
static void check_peerauthentication(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (json_object_get(val, "portLevelMtls") && !has_selector_labels(val))
		bm_verr_at(v, bm_ynode_key_line(n, "portLevelMtls"), ".portLevelMtls",
			   "portLevelMtls requires selector (with matchLabels)");
}

const struct bm_field bm_spec_peerauthentication = {
	.name = "spec", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED,
	.fields = peerauthentication, .check = check_peerauthentication };

/* ---- AuthorizationPolicy ---- */

static const struct bm_field source[] = {
	VALUES("principals", &match_elem),
	VALUES("notPrincipals", &match_elem),
	VALUES("requestPrincipals", &match_elem),
	VALUES("notRequestPrincipals", &match_elem),
	VALUES("namespaces", &match_elem),
	VALUES("notNamespaces", &match_elem),
	VALUES("ipBlocks", &ip_elem),
	VALUES("notIpBlocks", &ip_elem),
	VALUES("remoteIpBlocks", &ip_elem),
	VALUES("notRemoteIpBlocks", &ip_elem),
	{ .name = "serviceAccounts", .type = BM_T_LIST, .flags = BM_F_NONEMPTY,
	  .elem = &service_account_elem, .check = check_max_service_accounts },
	{ .name = "notServiceAccounts", .type = BM_T_LIST, .flags = BM_F_NONEMPTY,
	  .elem = &service_account_elem, .check = check_max_service_accounts },
	LATER("trustDomains"),
	LATER("notTrustDomains"),
	{ .name = NULL },
};

static void check_source(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	static const char *const sa_fields[] = { "serviceAccounts", "notServiceAccounts" };

	if (!json_object_size(val)) {
		bm_verr(v, n->line, "must not be empty (an empty source would match any peer)");
		return;
	}
	if (!json_object_get(val, "principals") && !json_object_get(val, "notPrincipals") &&
	    !json_object_get(val, "namespaces") && !json_object_get(val, "notNamespaces"))
		return;
	/* Istio ValidateAuthorizationPolicy: a service account already names
	 * a namespace and a principal; mixing them is refused. */
	for (size_t i = 0; i < 2; i++)
		if (json_object_get(val, sa_fields[i])) {
			char suffix[32];

			snprintf(suffix, sizeof(suffix), ".%s", sa_fields[i]);
			bm_verr_at(v, bm_ynode_key_line(n, sa_fields[i]), suffix,
				   "cannot be combined with principals or namespaces");
		}
}

static const struct bm_field operation[] = {
	VALUES("hosts", &match_elem),
	VALUES("notHosts", &match_elem),
	VALUES("ports", &port_elem),
	VALUES("notPorts", &port_elem),
	VALUES("methods", &match_elem),
	VALUES("notMethods", &match_elem),
	VALUES("paths", &path_elem),
	VALUES("notPaths", &path_elem),
	{ .name = NULL },
};

static void check_operation(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!json_object_size(val))
		bm_verr(v, n->line, "must not be empty (an empty operation would match any "
			"request)");
}

static const struct bm_field from[] = {
	{ .name = "source", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED, .fields = source,
	  .check = check_source },
	{ .name = NULL },
};

static const struct bm_field to[] = {
	{ .name = "operation", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED, .fields = operation,
	  .check = check_operation },
	{ .name = NULL },
};

/* "when" keys (istio-api §4.1, pkg/config/security ValidateAttribute). */
enum when_value { WHEN_STRING, WHEN_IP, WHEN_PORT };

static const struct {
	const char *key;
	bool bracketed; /* key is a prefix followed by "[name]" */
	enum when_value type;
} when_keys[] = {
	{ "request.headers", true, WHEN_STRING },
	{ "source.ip", false, WHEN_IP },
	{ "remote.ip", false, WHEN_IP },
	{ "source.namespace", false, WHEN_STRING },
	{ "source.serviceAccount", false, WHEN_STRING },
	{ "source.principal", false, WHEN_STRING },
	{ "request.auth.principal", false, WHEN_STRING },
	{ "request.auth.audiences", false, WHEN_STRING },
	{ "request.auth.presenter", false, WHEN_STRING },
	{ "request.auth.claims", true, WHEN_STRING },
	{ "destination.ip", false, WHEN_IP },
	{ "destination.port", false, WHEN_PORT },
	{ "connection.sni", false, WHEN_STRING },
};

/* "prefix[name]" and, for claims, "prefix[a][b]": Istio's validateMapKey
 * wants a non-empty name and the closing bracket last. */
static bool bracketed_key_ok(const char *rest)
{
	if (*rest != '[')
		return false;
	while (*rest == '[') {
		const char *close = strchr(rest, ']');

		if (!close || close == rest + 1 || memchr(rest + 1, '[', (size_t)(close - rest - 1)))
			return false;
		rest = close + 1;
	}
	return !*rest;
}

static int when_key_index(const char *key)
{
	for (size_t i = 0; i < sizeof(when_keys) / sizeof(when_keys[0]); i++) {
		size_t kl = strlen(when_keys[i].key);

		if (strncmp(key, when_keys[i].key, kl))
			continue;
		if (!when_keys[i].bracketed ? !key[kl] : bracketed_key_ok(key + kl))
			return (int)i;
	}
	return -1;
}

static void check_when_key(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *key = json_string_value(val);

	if (when_key_index(key) >= 0)
		return;
	if (!strncmp(key, "request.headers", 15))
		bm_verr(v, n->line, "\"%.64s\": want the form request.headers[name]", key);
	else if (!strncmp(key, "request.auth.claims", 19))
		bm_verr(v, n->line, "\"%.64s\": want the form request.auth.claims[name]", key);
	else if (!strcmp(key, "source.trustDomain") ||
		 !strncmp(key, "experimental.envoy.filters.", 27))
		bm_verr(v, n->line, "key \"%.64s\" is not supported yet", key);
	else
		bm_verr(v, n->line, "unknown key \"%.64s\" (want request.headers[name], source.ip, "
			"remote.ip, source.namespace, source.serviceAccount, source.principal, "
			"request.auth.principal, request.auth.audiences, request.auth.presenter, "
			"request.auth.claims[name], destination.ip, destination.port or "
			"connection.sni)", key);
}

static const struct bm_field condition[] = {
	{ .name = "key", .type = BM_T_STRING, .flags = BM_F_REQUIRED | BM_F_NONEMPTY,
	  .check = check_when_key },
	VALUES("values", &value_elem),
	VALUES("notValues", &value_elem),
	{ .name = NULL },
};

/* Values are typed by the key: addresses for the .ip keys, a port for
 * destination.port, match strings for the rest. */
static void check_condition(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	static const char *const lists[] = { "values", "notValues" };
	int k = when_key_index(json_string_value(json_object_get(val, "key")));
	bm_check_fn fn;

	if (!json_object_get(val, "values") && !json_object_get(val, "notValues")) {
		bm_verr(v, n->line, "at least one of values or notValues is required");
		return;
	}
	if (k < 0)
		return;
	fn = when_keys[k].type == WHEN_IP     ? bm_check_ipv4_or_cidr
	     : when_keys[k].type == WHEN_PORT ? check_port
					      : check_match_string;
	for (size_t l = 0; l < 2; l++) {
		const struct bm_ynode *yl = bm_ynode_get(n, lists[l]);
		json_t *jl = json_object_get(val, lists[l]);
		size_t mark;

		if (!jl || !yl)
			continue;
		mark = bm_vpath_push_key(v, lists[l]);
		/* Items and values line up: a null item would have been an
		 * error, and checks only run when there was none. */
		for (size_t i = 0; i < json_array_size(jl) && i < yl->len; i++) {
			size_t m = bm_vpath_push_index(v, i);

			fn(v, yl->items[i], json_array_get(jl, i));
			bm_vpath_pop(v, m);
		}
		bm_vpath_pop(v, mark);
	}
}

static const struct bm_field from_elem = { .type = BM_T_OBJECT, .fields = from };
static const struct bm_field to_elem = { .type = BM_T_OBJECT, .fields = to };
static const struct bm_field condition_elem = { .type = BM_T_OBJECT, .fields = condition,
						.check = check_condition };

/* Istio: "from"/"to" given as empty lists are errors; a rule `{}` is
 * valid and matches everything. */
static const struct bm_field rule[] = {
	{ .name = "from", .type = BM_T_LIST, .flags = BM_F_NONEMPTY, .elem = &from_elem },
	{ .name = "to", .type = BM_T_LIST, .flags = BM_F_NONEMPTY, .elem = &to_elem },
	{ .name = "when", .type = BM_T_LIST, .elem = &condition_elem },
	{ .name = NULL },
};

static const struct bm_field rule_elem = { .type = BM_T_OBJECT, .fields = rule };

static const char *const actions[] = { "ALLOW", "DENY", "AUDIT", NULL };
static const char *const actions_later[] = { "CUSTOM", NULL };

static const struct bm_field authorizationpolicy[] = {
	{ .name = "selector", .type = BM_T_OBJECT, .fields = selector },
	LATER("targetRef"),
	LATER("targetRefs"),
	{ .name = "rules", .type = BM_T_LIST, .elem = &rule_elem, .check = check_max_rules },
	{ .name = "action", .type = BM_T_STRING, .enums = actions, .enums_later = actions_later },
	LATER("provider"),
	{ .name = NULL },
};

/* istio-api §4.2: `spec: {}` (ALLOW, no rules) denies all and `rules: [{}]`
 * allows all; both are fine. A DENY with no rules can never match, which
 * Istio refuses as a likely mistake. */
static void check_authorizationpolicy(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *action = json_string_value(json_object_get(val, "action"));

	if (action && !strcmp(action, "DENY") && !json_array_size(json_object_get(val, "rules")))
		bm_verr_at(v, bm_ynode_key_line(n, "action"), ".action",
			   "DENY without rules never matches (use rules: [{}] to deny every "
			   "request)");
}

const struct bm_field bm_spec_authorizationpolicy = {
	.name = "spec", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED,
	.fields = authorizationpolicy, .check = check_authorizationpolicy };

/* ---- RequestAuthentication (istio-api §5) ---- */

/* CRD limits: jwtRules maxItems, jwksUri maxLength. */
#define MAX_JWT_RULES 4096
#define MAX_JWKS_URI 2048

static void check_max_jwt_rules(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (json_array_size(val) > MAX_JWT_RULES)
		bm_verr(v, n->line, "at most %d jwtRules are allowed (got %zu)", MAX_JWT_RULES,
			json_array_size(val));
}

/* Istio validateJwksURI: an absolute http or https URL with a host. */
static void check_jwks_uri(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *s = json_string_value(val), *host;
	size_t hl;

	if (json_string_length(val) > MAX_JWKS_URI) {
		bm_verr(v, n->line, "at most %d characters are allowed", MAX_JWKS_URI);
		return;
	}
	if (!strncasecmp(s, "https://", 8))
		host = s + 8;
	else if (!strncasecmp(s, "http://", 7))
		host = s + 7;
	else
		host = NULL;
	hl = host ? strcspn(host, "/?#") : 0;
	if (!hl || memchr(host, '@', hl) || strpbrk(s, " \t\r\n") || host[0] == ':') {
		bm_verr(v, n->line, "\"%.64s\" is not an http:// or https:// URL with a host", s);
		return;
	}
}

/* Inline JWKS: a JSON object with a "keys" array (RFC 7517 §5). */
static void check_jwks(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	json_error_t jerr;
	json_t *doc = json_loadb(json_string_value(val), json_string_length(val),
				 JSON_REJECT_DUPLICATES, &jerr);

	if (!doc)
		bm_verr(v, n->line, "not valid JSON: %s (line %d of the JWKS)", jerr.text,
			jerr.line);
	else if (!json_is_object(doc) || !json_is_array(json_object_get(doc, "keys")))
		bm_verr(v, n->line, "must be a JSON Web Key Set: an object with a \"keys\" array");
	json_decref(doc);
}

static void check_header_name(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (!bm_is_http_header_name(json_string_value(val), false))
		bm_verr(v, n->line, "\"%.64s\" is not a valid header name", json_string_value(val));
}

static const struct bm_field jwt_header[] = {
	{ .name = "name", .type = BM_T_STRING, .flags = BM_F_REQUIRED | BM_F_NONEMPTY,
	  .check = check_header_name },
	{ .name = "prefix", .type = BM_T_STRING },
	{ .name = NULL },
};

static const struct bm_field claim_to_header[] = {
	{ .name = "header", .type = BM_T_STRING, .flags = BM_F_REQUIRED | BM_F_NONEMPTY,
	  .check = check_header_name },
	{ .name = "claim", .type = BM_T_STRING, .flags = BM_F_REQUIRED | BM_F_NONEMPTY },
	{ .name = NULL },
};

static const struct bm_field jwt_header_elem = { .type = BM_T_OBJECT, .fields = jwt_header };
static const struct bm_field claim_to_header_elem = { .type = BM_T_OBJECT,
						      .fields = claim_to_header };

static const struct bm_field jwt_rule[] = {
	{ .name = "issuer", .type = BM_T_STRING, .flags = BM_F_REQUIRED | BM_F_NONEMPTY },
	{ .name = "audiences", .type = BM_T_LIST, .elem = &value_elem },
	{ .name = "jwksUri", .type = BM_T_STRING, .flags = BM_F_NONEMPTY,
	  .check = check_jwks_uri },
	{ .name = "jwks", .type = BM_T_STRING, .flags = BM_F_NONEMPTY, .check = check_jwks },
	{ .name = "fromHeaders", .type = BM_T_LIST, .elem = &jwt_header_elem },
	{ .name = "fromParams", .type = BM_T_LIST, .elem = &value_elem },
	{ .name = "fromCookies", .type = BM_T_LIST, .elem = &value_elem },
	{ .name = "outputPayloadToHeader", .type = BM_T_STRING, .check = check_header_name },
	{ .name = "forwardOriginalToken", .type = BM_T_BOOL },
	{ .name = "outputClaimToHeaders", .type = BM_T_LIST, .elem = &claim_to_header_elem },
	{ .name = "timeout", .type = BM_T_DURATION },
	{ .name = "spaceDelimitedClaims", .type = BM_T_LIST, .elem = &value_elem },
	{ .name = NULL },
};

static void check_jwt_rule(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	if (json_object_get(val, "jwksUri") && json_object_get(val, "jwks"))
		bm_verr_at(v, bm_ynode_key_line(n, "jwks"), ".jwks", "cannot be used with jwksUri");
}

static const struct bm_field jwt_rule_elem = { .type = BM_T_OBJECT, .fields = jwt_rule,
					       .check = check_jwt_rule };

static const struct bm_field requestauthentication[] = {
	{ .name = "selector", .type = BM_T_OBJECT, .fields = selector },
	LATER("targetRef"),
	LATER("targetRefs"),
	{ .name = "jwtRules", .type = BM_T_LIST, .elem = &jwt_rule_elem,
	  .check = check_max_jwt_rules },
	{ .name = NULL },
};

const struct bm_field bm_spec_requestauthentication = {
	.name = "spec", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED,
	.fields = requestauthentication };
