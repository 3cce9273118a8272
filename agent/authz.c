/*
 * L4 AuthorizationPolicy and PeerAuthentication evaluation, as the
 * destination's meshd does it for every mesh connection. Semantics:
 * docs/reference/istio-api.md §3 and §4 (ztunnel's L4 subset):
 *  - applicable policies: the workload's namespace (selector matching or
 *    none) and the root namespace (mesh-wide, or selector matching anywhere);
 *  - DENY first (any match denies), then allow when no ALLOW policy applies,
 *    allow when one matches, otherwise deny; AUDIT never decides;
 *  - a rule matches when (no from or one matches) and (no to or one matches)
 *    and every when holds; HTTP-only attributes make an ALLOW rule unmatchable
 *    and are ignored in a DENY rule (§4.3).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "authz.h"
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
int bm_authz_str_match(const char *pattern, const char *value)
{
	size_t lp = strlen(pattern), lv;

	if (!value)
		return 0;
	lv = strlen(value);
	if (!strcmp(pattern, "*"))
		return lv > 0;
	if (lp && pattern[lp - 1] == '*')
		return !strncmp(pattern, value, lp - 1);
	if (pattern[0] == '*')
		return lv >= lp - 1 && !strcmp(value + lv - (lp - 1), pattern + 1);
	return !strcmp(pattern, value);
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
	return bm_authz_str_match(p, v);
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

/* -1: the rule uses HTTP-only attributes (caller decides per action). */
static int source_match(const json_t *src, const struct bm_authz_req *r, const char *policy_ns,
			int deny)
{
	struct { const char *principal, *policy_ns; } sa = { r->principal, policy_ns };

	if (has_any(src, http_source_fields) && !deny)
		return -1;
	return field_ok(src, "principals", "notPrincipals", m_str, r->principal) &&
	       field_ok(src, "namespaces", "notNamespaces", m_str, r->ns) &&
	       field_ok(src, "serviceAccounts", "notServiceAccounts", m_sa, &sa) &&
	       field_ok(src, "ipBlocks", "notIpBlocks", m_ip, &r->src_ip);
}

static int op_match(const json_t *op, const struct bm_authz_req *r, int deny)
{
	if (has_any(op, http_op_fields) && !deny)
		return -1;
	return field_ok(op, "ports", "notPorts", m_port, &r->dst_port);
}

static int when_match(const json_t *w, const struct bm_authz_req *r, int deny)
{
	const char *key = js(w, "key");
	const json_t *vals = json_object_get(w, "values"), *nvals = json_object_get(w, "notValues");
	char buf[64];
	const void *v = NULL;
	match_fn fn = m_str;

	if (!when_is_l4(key))
		return deny ? 1 : -1;
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

static int rule_match(const json_t *rule, const struct bm_authz_req *r, const char *policy_ns,
		      int deny)
{
	const json_t *from = json_object_get(rule, "from"), *to = json_object_get(rule, "to");
	const json_t *when = json_object_get(rule, "when"), *e;
	size_t i;
	int ok;

	if (json_array_size(from)) {
		ok = 0;
		json_array_foreach(from, i, e) {
			int m = source_match(json_object_get(e, "source"), r, policy_ns, deny);

			if (m < 0)
				return 0; /* ALLOW rule with HTTP-only source: never matches */
			ok |= m;
		}
		if (!ok)
			return 0;
	}
	if (json_array_size(to)) {
		ok = 0;
		json_array_foreach(to, i, e) {
			int m = op_match(json_object_get(e, "operation"), r, deny);

			if (m < 0)
				return 0;
			ok |= m;
		}
		if (!ok)
			return 0;
	}
	json_array_foreach(when, i, e) {
		int m = when_match(e, r, deny);

		if (m <= 0)
			return 0;
	}
	return 1;
}

static int policy_matches(const json_t *spec, const struct bm_authz_req *r, const char *ns, int deny)
{
	size_t i;
	json_t *rule;

	json_array_foreach(json_object_get(spec, "rules"), i, rule)
		if (rule_match(rule, r, ns, deny))
			return 1;
	return 0; /* no rules: matches nothing */
}

static int applies(const json_t *res, const char *root_ns, const char *wl_ns, const json_t *wl_labels)
{
	const char *ns = res_ns(res);
	const json_t *sel = json_object_get(json_object_get(res, "spec"), "selector");

	if (strcmp(ns, wl_ns) && strcmp(ns, root_ns))
		return 0;
	return !sel || bm_labels_match(json_object_get(sel, "matchLabels"), wl_labels);
}

int bm_authz_eval(const json_t *resources, const char *root_ns, const char *wl_ns,
		  const json_t *wl_labels, const struct bm_authz_req *r, char *reason, size_t len)
{
	const json_t *allow_hit = NULL;
	int n_allow = 0;
	size_t i;
	json_t *res;

	if (len)
		reason[0] = 0;
	for (int pass = 0; pass < 2; pass++) {
		json_array_foreach(resources, i, res) {
			const json_t *spec = json_object_get(res, "spec");
			const char *action = js(spec, "action");
			int deny = !strcmp(action, "DENY");

			if (strcmp(js(res, "kind"), "AuthorizationPolicy") ||
			    !applies(res, root_ns, wl_ns, wl_labels))
				continue;
			if (pass == 0 && deny && policy_matches(spec, r, res_ns(res), 1)) {
				snprintf(reason, len, "authorization_policy_deny:%s/%s", res_ns(res),
					 js(json_object_get(res, "metadata"), "name"));
				return -EACCES;
			}
			if (pass == 1 && (!*action || !strcmp(action, "ALLOW"))) {
				n_allow++;
				if (!allow_hit && policy_matches(spec, r, res_ns(res), 0))
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
