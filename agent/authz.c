/*
 * AuthorizationPolicy and PeerAuthentication evaluation, as the destination's
 * meshd does it for every mesh connection and, for workloads that need it,
 * every HTTP request. Semantics: docs/reference/istio-api.md §3 and §4:
 *  - applicable policies: the workload's namespace (selector matching or
 *    none) and the root namespace (mesh-wide, or selector matching anywhere);
 *  - CUSTOM is not supported (ignored, logged once); DENY first (any match
 *    denies), then allow when no ALLOW policy applies, allow when one
 *    matches, otherwise deny; AUDIT never decides;
 *  - a rule matches when (no from or one matches) and (no to or one matches)
 *    and every when holds;
 *  - on a connection not seen as HTTP, HTTP-only attributes make an ALLOW
 *    rule unmatchable and are ignored in a DENY rule (§4.3); on an HTTP
 *    request they are evaluated.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "authz.h"
#include "log.h"
#include "resutil.h"

static const char *js(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static const char *res_ns(const json_t *r)
{
	const char *ns = js(json_object_get(r, "metadata"), "namespace");

	return *ns ? ns : "default";
}

/* Istio string match: exact, "abc*" prefix, "*abc" suffix, "*" non-empty. */
static int str_match(const char *pattern, const char *value, int icase)
{
	int (*cmp)(const char *, const char *) = icase ? strcasecmp : strcmp;
	int (*ncmp)(const char *, const char *, size_t) = icase ? strncasecmp : strncmp;
	size_t lp = strlen(pattern), lv;

	if (!value)
		return 0;
	lv = strlen(value);
	if (!strcmp(pattern, "*"))
		return lv > 0;
	if (lp && pattern[lp - 1] == '*')
		return !ncmp(pattern, value, lp - 1);
	if (pattern[0] == '*')
		return lv >= lp - 1 && !cmp(value + lv - (lp - 1), pattern + 1);
	return !cmp(pattern, value);
}

int bm_authz_str_match(const char *pattern, const char *value)
{
	return str_match(pattern, value, 0);
}

/* URI template (Envoy uri_template as Istio emits it): literal text,
 * "{*}" = one or more characters of one segment, "{**}" = anything to the
 * end (must be last). Backtracks over "{*}" lengths, so a segment like
 * "v{*}.json" works too. */
static int template_match(const char *t, const char *p)
{
	while (*t) {
		if (!strncmp(t, "{**}", 4)) {
			/* zero or more characters, slashes included; only literal
			 * segments may follow (the validator's rule) */
			size_t n = strlen(p);

			for (size_t k = 0; k <= n; k++)
				if (template_match(t + 4, p + k))
					return 1;
			return 0;
		}
		if (!strncmp(t, "{*}", 3)) {
			size_t seg = strcspn(p, "/");

			for (size_t k = seg; k >= 1; k--)
				if (template_match(t + 3, p + k))
					return 1;
			return 0;
		}
		if (*t != *p)
			return 0;
		t++;
		p++;
	}
	return !*p;
}

int bm_authz_path_match(const char *pattern, const char *path)
{
	if (!path)
		return 0;
	if (strchr(pattern, '{'))
		return template_match(pattern, path);
	return str_match(pattern, path, 0);
}

/* A values list matched against one value by fn; an absent list is "no
 * constraint" (1) and an empty one matches nothing. */
typedef int (*match_fn)(const char *pattern, const void *value);

static int any_of(const json_t *list, match_fn fn, const void *value)
{
	size_t i;
	json_t *p;

	json_array_foreach(list, i, p)
		if (json_string_value(p) && fn(json_string_value(p), value))
			return 1;
	return 0;
}

static int m_str(const char *p, const void *v)
{
	return str_match(p, v, 0);
}

/* hosts: case-insensitive (§4.1); the port is part of the value. */
static int m_host(const char *p, const void *v)
{
	return str_match(p, v, 1);
}

static int m_path(const char *p, const void *v)
{
	return bm_authz_path_match(p, v);
}

static int m_ip(const char *p, const void *v)
{
	return bm_cidr_contains(p, *(const uint32_t *)v);
}

static int m_port(const char *p, const void *v)
{
	return atoi(p) == *(const uint16_t *)v;
}

/* serviceAccounts: "ns/sa", or "sa" meaning the policy's namespace. */
static int m_sa(const char *p, const void *v)
{
	const struct { const char *principal, *policy_ns; } *x = v;
	char want[512];
	const char *ns_sa;

	if (!x->principal || !(ns_sa = strstr(x->principal, "/ns/")))
		return 0;
	if (strchr(p, '/'))
		snprintf(want, sizeof(want), "/ns/%.*s/sa/%s", (int)(strchr(p, '/') - p), p,
			 strchr(p, '/') + 1);
	else
		snprintf(want, sizeof(want), "/ns/%s/sa/%s", x->policy_ns, p);
	return !strcmp(ns_sa, want);
}

/* A JWT claim: a string, or an array whose string elements are tried in
 * turn; space-delimited claims (scope, permission) also match per word. */
struct claim_val {
	const json_t *v;
	int split;
};

static int m_claim(const char *p, const void *v)
{
	const struct claim_val *c = v;
	const char *s = json_string_value(c->v);
	size_t i;
	json_t *e;

	if (s) {
		char word[512];

		if (str_match(p, s, 0))
			return 1;
		while (c->split && *s) {
			size_t n = strcspn(s, " ");

			if (n && n < sizeof(word)) {
				memcpy(word, s, n);
				word[n] = 0;
				if (str_match(p, word, 0))
					return 1;
			}
			s += n + (s[n] == ' ');
		}
		return 0;
	}
	json_array_foreach(c->v, i, e)
		if (json_is_string(e) && str_match(p, json_string_value(e), 0))
			return 1;
	return 0;
}

/* Field pair check: positive list (if present) must match, negative list
 * (if present) must not. */
static int field_ok(const json_t *obj, const char *pos, const char *neg, match_fn fn, const void *v)
{
	const json_t *p = json_object_get(obj, pos), *n = json_object_get(obj, neg);

	if (p && !any_of(p, fn, v))
		return 0;
	if (n && any_of(n, fn, v))
		return 0;
	return 1;
}

static const char *const http_source_fields[] = { "requestPrincipals", "notRequestPrincipals",
						   "remoteIpBlocks", "notRemoteIpBlocks", NULL };
static const char *const http_op_fields[] = { "hosts", "notHosts", "methods", "notMethods",
					       "paths", "notPaths", NULL };

static int has_any(const json_t *o, const char *const *fields)
{
	for (int i = 0; fields[i]; i++)
		if (json_object_get(o, fields[i]))
			return 1;
	return 0;
}

static const char *const l4_when_keys[] = { "source.ip", "source.namespace", "source.principal",
					     "destination.ip", "destination.port", NULL };

static int when_is_l4(const char *key)
{
	for (int i = 0; l4_when_keys[i]; i++)
		if (!strcmp(key, l4_when_keys[i]))
			return 1;
	return 0;
}

/* Any attribute that a plain TCP connection cannot answer (§4.3 table). */
static int rule_has_http(const json_t *rule)
{
	size_t i;
	json_t *e;

	json_array_foreach(json_object_get(rule, "from"), i, e)
		if (has_any(json_object_get(e, "source"), http_source_fields))
			return 1;
	json_array_foreach(json_object_get(rule, "to"), i, e)
		if (has_any(json_object_get(e, "operation"), http_op_fields))
			return 1;
	json_array_foreach(json_object_get(rule, "when"), i, e)
		if (!when_is_l4(js(e, "key")))
			return 1;
	return 0;
}

enum eval_mode {
	EV_L4,        /* a connection not seen as HTTP: §4.3 degradation */
	EV_HTTP,      /* one HTTP request: everything applies */
	EV_PRECHECK,  /* connection whose requests are checked later: pure-L4 DENY only */
};

struct ev {
	const struct bm_authz_req *r;
	const struct bm_authz_http *h;  /* EV_HTTP only */
	enum eval_mode mode;
	const char *policy_ns;
};

static uint32_t remote_ip(const struct ev *e)
{
	return e->h->remote_ip ? e->h->remote_ip : e->r->src_ip;
}

static int source_match(const json_t *src, const struct ev *e)
{
	const struct bm_authz_req *r = e->r;
	struct { const char *principal, *policy_ns; } sa = { r->principal, e->policy_ns };
	uint32_t rip;

	if (!(field_ok(src, "principals", "notPrincipals", m_str, r->principal) &&
	      field_ok(src, "namespaces", "notNamespaces", m_str, r->ns) &&
	      field_ok(src, "serviceAccounts", "notServiceAccounts", m_sa, &sa) &&
	      field_ok(src, "ipBlocks", "notIpBlocks", m_ip, &r->src_ip)))
		return 0;
	if (!e->h)
		return 1; /* L4 DENY: HTTP-only fields ignored */
	rip = remote_ip(e);
	return field_ok(src, "requestPrincipals", "notRequestPrincipals", m_str, e->h->req_principal) &&
	       field_ok(src, "remoteIpBlocks", "notRemoteIpBlocks", m_ip, &rip);
}

static int op_match(const json_t *op, const struct ev *e)
{
	if (!field_ok(op, "ports", "notPorts", m_port, &e->r->dst_port))
		return 0;
	if (!e->h)
		return 1;
	return field_ok(op, "hosts", "notHosts", m_host, e->h->host) &&
	       field_ok(op, "methods", "notMethods", m_str, e->h->method) &&
	       field_ok(op, "paths", "notPaths", m_path, e->h->path);
}

/* The value of request.headers[name]: repeated headers joined with ","
 * as Envoy's header matcher sees them. NULL when absent. */
static const char *header_value(const struct bm_authz_http *h, const char *name, size_t nlen,
				char *buf, size_t len)
{
	size_t o = 0;
	int found = 0;

	for (size_t i = 0; i < h->n_hdr; i++) {
		const struct bm_http_hdr *x = &h->hdr[i];
		size_t xl = x->name_len ? x->name_len : strlen(x->name);
		size_t vl = x->value_len ? x->value_len : strlen(x->value);

		if (xl != nlen || strncasecmp(x->name, name, nlen))
			continue;
		if (found && o + 1 < len)
			buf[o++] = ',';
		if (o + vl >= len)
			vl = len - 1 - o;
		memcpy(buf + o, x->value, vl);
		o += vl;
		found = 1;
	}
	if (!found)
		return NULL;
	buf[o] = 0;
	return buf;
}

/* request.auth.claims[a][b]...: the nested claim, or NULL. */
static const json_t *claim_at(const json_t *claims, const char *path, int *top_level)
{
	const json_t *v = claims;
	char name[256];
	int depth = 0;

	while (*path == '[') {
		const char *end = strchr(path, ']');
		size_t n;

		if (!end || (n = (size_t)(end - path - 1)) == 0 || n >= sizeof(name))
			return NULL;
		memcpy(name, path + 1, n);
		name[n] = 0;
		v = json_object_get(v, name);
		path = end + 1;
		depth++;
	}
	*top_level = depth == 1 && (!strcmp(name, "scope") || !strcmp(name, "permission"));
	return *path || !depth ? NULL : v;
}

static int when_http(const json_t *w, const char *key, const struct ev *e)
{
	const json_t *vals = json_object_get(w, "values"), *nvals = json_object_get(w, "notValues");
	const struct bm_authz_http *h = e->h;
	struct claim_val cv = { NULL, 0 };
	char buf[4096];
	const void *v = NULL;
	match_fn fn = m_str;
	uint32_t rip;

	if (!strncmp(key, "request.headers[", 16) && key[strlen(key) - 1] == ']') {
		v = header_value(h, key + 16, strlen(key) - 17, buf, sizeof(buf));
	} else if (!strcmp(key, "remote.ip")) {
		rip = remote_ip(e);
		v = &rip;
		fn = m_ip;
	} else if (!strcmp(key, "request.auth.principal")) {
		v = h->req_principal;
	} else if (!strcmp(key, "request.auth.audiences") || !strcmp(key, "request.auth.presenter") ||
		   !strncmp(key, "request.auth.claims[", 20)) {
		if (!strcmp(key, "request.auth.audiences"))
			cv.v = json_object_get(h->claims, "aud");
		else if (!strcmp(key, "request.auth.presenter"))
			cv.v = json_object_get(h->claims, "azp");
		else
			cv.v = claim_at(h->claims, key + 19, &cv.split);
		fn = m_claim;
		v = cv.v ? &cv : NULL;
	}
	/* Unknown here (connection.sni, experimental.*, ...): an absent value,
	 * so values never match and notValues always hold. */
	if (!v)
		return !vals;
	if (vals && !any_of(vals, fn, v))
		return 0;
	if (nvals && any_of(nvals, fn, v))
		return 0;
	return 1;
}

static int when_match(const json_t *w, const struct ev *e)
{
	const struct bm_authz_req *r = e->r;
	const char *key = js(w, "key");
	const json_t *vals = json_object_get(w, "values"), *nvals = json_object_get(w, "notValues");
	char buf[64];
	const void *v = NULL;
	match_fn fn = m_str;

	if (!when_is_l4(key))
		return e->h ? when_http(w, key, e) : 1; /* L4 DENY: ignored */
	if (!strcmp(key, "source.ip") || !strcmp(key, "destination.ip")) {
		v = !strcmp(key, "source.ip") ? &r->src_ip : &r->dst_ip;
		fn = m_ip;
	} else if (!strcmp(key, "destination.port")) {
		snprintf(buf, sizeof(buf), "%u", r->dst_port);
		v = buf;
	} else if (!strcmp(key, "source.namespace")) {
		v = r->ns;
	} else {
		v = r->principal;
	}
	if (fn == m_str && !v)
		return 0;
	if (vals && !any_of(vals, fn, v))
		return 0;
	if (nvals && any_of(nvals, fn, v))
		return 0;
	return 1;
}

static int rule_match(const json_t *rule, const struct ev *e, int deny)
{
	const json_t *from = json_object_get(rule, "from"), *to = json_object_get(rule, "to");
	const json_t *when = json_object_get(rule, "when"), *x;
	size_t i;
	int ok;

	if (e->mode != EV_HTTP && rule_has_http(rule)) {
		/* L4 ALLOW: the rule can never match (§4.3); precheck: the
		 * requests will decide. L4 DENY: match on the rest. */
		if (!deny || e->mode == EV_PRECHECK)
			return 0;
	}
	if (json_array_size(from)) {
		ok = 0;
		json_array_foreach(from, i, x)
			ok |= source_match(json_object_get(x, "source"), e);
		if (!ok)
			return 0;
	}
	if (json_array_size(to)) {
		ok = 0;
		json_array_foreach(to, i, x)
			ok |= op_match(json_object_get(x, "operation"), e);
		if (!ok)
			return 0;
	}
	json_array_foreach(when, i, x)
		if (!when_match(x, e))
			return 0;
	return 1;
}

static int policy_matches(const json_t *spec, struct ev *e, const char *ns, int deny)
{
	size_t i;
	json_t *rule;

	e->policy_ns = ns;
	json_array_foreach(json_object_get(spec, "rules"), i, rule)
		if (rule_match(rule, e, deny))
			return 1;
	return 0; /* no rules: matches nothing */
}

int bm_authz_applies(const json_t *res, const char *root_ns, const char *wl_ns,
		     const json_t *wl_labels)
{
	const char *ns = res_ns(res);
	const json_t *sel = json_object_get(json_object_get(res, "spec"), "selector");

	if (strcmp(ns, wl_ns) && strcmp(ns, root_ns))
		return 0;
	return !sel || bm_labels_match(json_object_get(sel, "matchLabels"), wl_labels);
}

static int custom_logged;

static int eval(const json_t *resources, const char *root_ns, const char *wl_ns,
		const json_t *wl_labels, struct ev *e, char *reason, size_t len)
{
	const json_t *allow_hit = NULL;
	int n_allow = 0;
	size_t i;
	json_t *res;

	if (len)
		reason[0] = 0;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1 && e->mode == EV_PRECHECK)
			break;
		json_array_foreach(resources, i, res) {
			const json_t *spec = json_object_get(res, "spec");
			const char *action = js(spec, "action");
			int deny = !strcmp(action, "DENY");

			if (strcmp(js(res, "kind"), "AuthorizationPolicy") ||
			    !bm_authz_applies(res, root_ns, wl_ns, wl_labels))
				continue;
			if (pass == 0 && !strcmp(action, "CUSTOM") &&
			    !__atomic_exchange_n(&custom_logged, 1, __ATOMIC_RELAXED))
				bm_log("authorization policy %s/%s: action CUSTOM is not supported, ignored "
				       "(logged once)", res_ns(res), js(json_object_get(res, "metadata"), "name"));
			if (pass == 0 && deny && policy_matches(spec, e, res_ns(res), 1)) {
				snprintf(reason, len, "authorization_policy_deny:%s/%s", res_ns(res),
					 js(json_object_get(res, "metadata"), "name"));
				return -EACCES;
			}
			if (pass == 1 && (!*action || !strcmp(action, "ALLOW"))) {
				n_allow++;
				if (!allow_hit && policy_matches(spec, e, res_ns(res), 0))
					allow_hit = res;
			}
		}
	}
	if (n_allow && !allow_hit) {
		snprintf(reason, len, "authorization_policy_no_allow_match");
		return -EACCES;
	}
	return 0;
}

int bm_authz_eval(const json_t *resources, const char *root_ns, const char *wl_ns,
		  const json_t *wl_labels, const struct bm_authz_req *r, char *reason, size_t len)
{
	struct ev e = { .r = r, .mode = EV_L4 };

	return eval(resources, root_ns, wl_ns, wl_labels, &e, reason, len);
}

int bm_authz_eval_http(const json_t *resources, const char *root_ns, const char *wl_ns,
		       const json_t *wl_labels, const struct bm_authz_req *r,
		       const struct bm_authz_http *h, char *reason, size_t len)
{
	struct ev e = { .r = r, .h = h, .mode = h ? EV_HTTP : EV_L4 };

	return eval(resources, root_ns, wl_ns, wl_labels, &e, reason, len);
}

int bm_authz_eval_conn_precheck(const json_t *resources, const char *root_ns, const char *wl_ns,
				const json_t *wl_labels, const struct bm_authz_req *r,
				char *reason, size_t len)
{
	struct ev e = { .r = r, .mode = EV_PRECHECK };

	return eval(resources, root_ns, wl_ns, wl_labels, &e, reason, len);
}

int bm_authz_needs_http(const json_t *resources, const char *root_ns, const char *wl_ns,
			const json_t *wl_labels)
{
	size_t i, j;
	json_t *res, *rule;

	json_array_foreach(resources, i, res) {
		const char *kind = js(res, "kind");
		const char *action = js(json_object_get(res, "spec"), "action");

		if (!bm_authz_applies(res, root_ns, wl_ns, wl_labels))
			continue;
		if (!strcmp(kind, "RequestAuthentication"))
			return 1;
		/* AUDIT never decides and CUSTOM is not supported: no need */
		if (strcmp(kind, "AuthorizationPolicy") ||
		    (*action && strcmp(action, "ALLOW") && strcmp(action, "DENY")))
			continue;
		json_array_foreach(json_object_get(json_object_get(res, "spec"), "rules"), j, rule)
			if (rule_has_http(rule))
				return 1;
	}
	return 0;
}

static int mode_of(const char *m)
{
	if (!strcmp(m, "STRICT"))
		return BM_MTLS_STRICT;
	if (!strcmp(m, "DISABLE"))
		return BM_MTLS_DISABLE;
	if (!strcmp(m, "PERMISSIVE"))
		return BM_MTLS_PERMISSIVE;
	return -1; /* UNSET: inherit */
}

static const json_t *oldest(const json_t *a, const json_t *b)
{
	const char *ta, *tb;

	if (!a)
		return b;
	ta = js(json_object_get(a, "metadata"), "creationTimestamp");
	tb = js(json_object_get(b, "metadata"), "creationTimestamp");
	return strcmp(tb, ta) < 0 ? b : a;
}

int bm_peerauth_mode(const json_t *resources, const char *root_ns, const char *wl_ns,
		     const json_t *wl_labels, struct bm_pod_inbound *out)
{
	const json_t *mesh = NULL, *nsp = NULL, *wl = NULL, *ports;
	int mode = BM_MTLS_PERMISSIVE, m;
	size_t i;
	json_t *res;
	const char *port;
	json_t *pm;

	memset(out, 0, sizeof(*out));
	json_array_foreach(resources, i, res) {
		const json_t *spec = json_object_get(res, "spec");
		const json_t *sel = json_object_get(spec, "selector");
		const char *ns = res_ns(res);

		/* selector: {} selects nothing in particular: namespace-wide */
		if (!json_object_size(json_object_get(sel, "matchLabels")))
			sel = NULL;
		if (strcmp(js(res, "kind"), "PeerAuthentication"))
			continue;
		if (!strcmp(ns, root_ns) && !sel)
			mesh = oldest(mesh, res);
		if (!strcmp(ns, wl_ns) && !sel)
			nsp = oldest(nsp, res);
		/* selectors in the root namespace are ignored (§3) */
		if (!strcmp(ns, wl_ns) && strcmp(ns, root_ns) && sel &&
		    bm_labels_match(json_object_get(sel, "matchLabels"), wl_labels))
			wl = oldest(wl, res);
	}
	if (mesh && (m = mode_of(js(json_object_get(json_object_get(mesh, "spec"), "mtls"), "mode"))) >= 0)
		mode = m;
	if (nsp && (m = mode_of(js(json_object_get(json_object_get(nsp, "spec"), "mtls"), "mode"))) >= 0)
		mode = m;
	if (wl && (m = mode_of(js(json_object_get(json_object_get(wl, "spec"), "mtls"), "mode"))) >= 0)
		mode = m;
	out->mode = (uint8_t)mode;
	ports = wl ? json_object_get(json_object_get(wl, "spec"), "portLevelMtls") : NULL;
	json_object_foreach((json_t *)ports, port, pm) {
		m = mode_of(js(pm, "mode"));
		if (out->n_ports >= BM_POD_PORT_OVERRIDES)
			break;
		out->port[out->n_ports] = (uint16_t)atoi(port);
		out->port_mode[out->n_ports] = (uint8_t)(m >= 0 ? m : mode);
		out->n_ports++;
	}
	return 0;
}
