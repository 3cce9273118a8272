/*
 * The clusters of the L7 compiler (agent/l7model.c): a route or mirror
 * destination into a struct bm_l7_cluster. Endpoints, lb and tls come from
 * model.c, as for the kernel's cluster of the same name; the
 * DestinationRule's connection pool, upstream protocol and outlier
 * detection are added here (docs/reference/istio-api.md §2.2, §2.4, §2.5).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "duration.h"
#include "l7.h"
#include "l7model_int.h"
#include "model.h"
#include "strmap.h"

/* A UInt32Value-like limit: unset or 0 means Istio's default 2^32-1. */
static uint32_t limit(const json_t *o, const char *field)
{
	json_int_t v = json_integer_value(json_object_get(o, field));

	return v > 0 && v < BM_L7_UNLIMITED ? (uint32_t)v : BM_L7_UNLIMITED;
}

/* portLevelSettings entry of policy tp for port, or NULL. */
static const json_t *port_level(const json_t *tp, json_int_t port)
{
	size_t i;
	json_t *pls;

	json_array_foreach(json_object_get(tp, "portLevelSettings"), i, pls)
		if (json_integer_value(json_object_get(json_object_get(pls, "port"), "number")) == port)
			return pls;
	return NULL;
}

/* §2.2: the (base, subset) pair whose components make the cluster policy:
 * each component from sub when it sets it, else from base. */
static void effective_policy(const json_t *top, const json_t *sub, json_int_t port,
			     const json_t **base_out, const json_t **sub_out)
{
	const json_t *pls = port_level(top, port);
	const json_t *sub_pls = port_level(sub, port);

	if (sub_pls) {
		*base_out = sub_pls;
		*sub_out = NULL;
		return;
	}
	*base_out = pls ? pls : top;
	*sub_out = sub;
}

static const json_t *component(const json_t *base, const json_t *sub, const char *name)
{
	const json_t *c = sub ? json_object_get(sub, name) : NULL;

	return c ? c : json_object_get(base, name);
}

static void apply_pool(struct ctx *x, const struct bm_m_res *dr, struct bm_l7_cluster *c,
		       const json_t *cp)
{
	const json_t *tcp = json_object_get(cp, "tcp"), *http = json_object_get(cp, "http");
	const char *idle = json_string_value(json_object_get(http, "idleTimeout"));
	json_int_t per_conn = json_integer_value(json_object_get(http, "maxRequestsPerConnection"));

	c->max_connections = limit(tcp, "maxConnections");
	c->max_pending = limit(http, "http1MaxPendingRequests");
	c->max_requests = limit(http, "http2MaxRequests");
	c->max_retries = limit(http, "maxRetries");
	c->max_requests_per_conn = per_conn > 0 && per_conn < UINT32_MAX ? (uint32_t)per_conn : 0;
	c->connect_timeout_ms = l7m_duration_ms(x, dr, tcp, "connectTimeout", 10000);
	c->idle_timeout_ms = 3600000;
	if (idle) {
		uint64_t ns;

		/* "0s" disables the idle timeout (Envoy: 0 = none). */
		if (bm_duration_parse_ns(idle, &ns) || ns / 1000000 > UINT32_MAX)
			l7m_warn(x, dr, "connectionPool.http.idleTimeout \"%s\" is not a valid duration; "
					"using 1h", idle);
		else
			c->idle_timeout_ms = (uint32_t)(ns / 1000000);
	}
}

static void apply_outlier(struct ctx *x, const struct bm_m_res *dr, struct bm_l7_cluster *c,
			  const json_t *od)
{
	const json_t *v5 = json_object_get(od, "consecutive5xxErrors");
	const json_t *vgw = json_object_get(od, "consecutiveGatewayErrors");
	const json_t *vold = json_object_get(od, "consecutiveErrors");
	const json_t *vpct = json_object_get(od, "maxEjectionPercent");

	memset(&c->od, 0, sizeof(c->od));
	if (!od)
		return;
	c->od.enabled = 1;
	c->od.consecutive_5xx = v5 ? (uint32_t)json_integer_value(v5) : 5;
	if (vgw) {
		c->od.consecutive_gw = (uint32_t)json_integer_value(vgw);
	} else if (vold) {
		/* Older Istio counted consecutiveErrors as gateway errors
		 * (502/503/504); current pilot ignores the field. */
		c->od.consecutive_gw = (uint32_t)json_integer_value(vold);
		l7m_warn(x, dr, "outlierDetection.consecutiveErrors is deprecated; "
				"used as consecutiveGatewayErrors: %u", c->od.consecutive_gw);
	}
	c->od.interval_ms = l7m_duration_ms(x, dr, od, "interval", 10000);
	c->od.base_ejection_ms = l7m_duration_ms(x, dr, od, "baseEjectionTime", 30000);
	/* Envoy's max_ejection_time: 300 s, or the base if that is larger. */
	c->od.max_ejection_ms = c->od.base_ejection_ms > 300000 ? c->od.base_ejection_ms : 300000;
	if (vpct) {
		json_int_t p = json_integer_value(vpct);

		c->od.max_ejection_pct = p < 0 ? 0 : p > 100 ? 100 : (uint8_t)p;
	} else {
		c->od.max_ejection_pct = 10;
	}
}

static int add_fixup(struct ctx *x, struct bm_l7_cluster **slot, size_t idx)
{
	if (x->n_fix == x->cap_fix) {
		size_t cap = x->cap_fix ? 2 * x->cap_fix : 64;
		struct fixup *n = realloc(x->fix, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		x->fix = n;
		x->cap_fix = cap;
	}
	x->fix[x->n_fix].slot = slot;
	x->fix[x->n_fix].idx = idx;
	x->n_fix++;
	return 0;
}

/* The upstream protocol (§2.4): HTTP2/GRPC ports (by protocol or name
 * prefix) and h2UpgradePolicy UPGRADE speak h2c; useClientProtocol and
 * ports of no declared protocol use the client's. */
static uint8_t upstream_proto(const json_t *port, const json_t *cp)
{
	const json_t *http = json_object_get(cp, "http");
	const char *p = l7m_jstr(port, "protocol"), *n = l7m_jstr(port, "name");
	const char *up = json_string_value(json_object_get(http, "h2UpgradePolicy"));
	size_t l = strcspn(n, "-");

	if (!*p)
		p = (l == 5 && !strncasecmp(n, "http2", 5)) ? "HTTP2" :
		    (l == 4 && !strncasecmp(n, "grpc", 4)) ? "GRPC" :
		    (l == 4 && !strncasecmp(n, "http", 4)) ? "HTTP" : "";
	if (!strcasecmp(p, "HTTP2") || !strcasecmp(p, "GRPC") || (up && !strcmp(up, "UPGRADE")))
		return BM_L7_UP_H2;
	if (json_is_true(json_object_get(http, "useClientProtocol")) || !*p)
		return BM_L7_UP_DOWNSTREAM;
	return BM_L7_UP_H1;
}

/* Compile the cluster of destination dest (named in resource r, whose
 * namespace expands short hosts) for service self:self_port, and point
 * *slot at it once the configuration is laid out. An unknown host, port or
 * subset leaves *slot NULL (503 NC) with a warning. */
int l7m_resolve_cluster(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *self,
			const json_t *self_port, const json_t *dest,
			struct bm_l7_cluster **slot)
{
	const char *subset = l7m_jstr(dest, "subset");
	json_int_t want = json_integer_value(json_object_get(json_object_get(dest, "port"), "number"));
	char fqdn[256], name[320];
	const struct bm_m_res *target, *dr;
	const json_t *port, *sub = NULL, *sub_labels = NULL, *base, *subp;
	struct bm_m_cluster *mc;
	struct bm_l7_cluster *c;
	json_int_t pnum;
	uint64_t idx;

	*slot = NULL;
	bm_fqdn(l7m_jstr(dest, "host"), r->ns, fqdn, sizeof(fqdn));
	target = bm_m_find_se(&x->ses, fqdn);
	port = target ? bm_m_dest_port(target, self, self_port, want) : NULL;
	pnum = port ? json_integer_value(json_object_get(port, "number")) : want;
	snprintf(name, sizeof(name), "outbound|%lld|%s|%s", (long long)pnum, subset, fqdn);
	if (!bm_strmap_get(&x->by_name, name, &idx))
		return add_fixup(x, slot, (size_t)idx - 1);
	if (!target || !port) {
		l7m_warn(x, r, "destination %s: no ServiceEntry%s for it; requests get 503", name,
			 target ? " port" : "");
		return 0;
	}
	dr = bm_m_find_dr(&x->drs, fqdn, target->ns);
	if (*subset) {
		sub = bm_m_find_subset(dr, subset);
		if (!sub) {
			l7m_warn(x, r, "destination %s: subset \"%s\" is not defined by any "
				       "DestinationRule; requests get 503", name, subset);
			return 0;
		}
		sub_labels = json_object_get(sub, "labels");
	}

	if (x->n_clusters == x->cap_clusters) {
		size_t cap = x->cap_clusters ? 2 * x->cap_clusters : 16;
		struct bm_l7_cluster *n = realloc(x->clusters, cap * sizeof(*n));
		uint8_t *pr;

		if (!n)
			return -ENOMEM;
		x->clusters = n;
		pr = realloc(x->per_request, cap);
		if (!pr)
			return -ENOMEM;
		x->per_request = pr;
		x->cap_clusters = cap;
	}
	mc = calloc(1, sizeof(*mc));
	if (!mc)
		return -ENOMEM;
	c = &x->clusters[x->n_clusters];
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	snprintf(c->host, sizeof(c->host), "%s", fqdn);
	snprintf(c->ns, sizeof(c->ns), "%s", target->ns);
	snprintf(c->subset, sizeof(c->subset), "%s", subset);
	c->port = (uint16_t)pnum;

	effective_policy(dr ? json_object_get(dr->spec, "trafficPolicy") : NULL,
			 sub ? json_object_get(sub, "trafficPolicy") : NULL, pnum, &base, &subp);
	/* lb, panic threshold, tls and endpoints exactly as the kernel's cluster. */
	snprintf(mc->name, sizeof(mc->name), "%s", name);
	bm_m_apply_policy(mc, base, subp);
	bm_m_add_endpoints(mc, &x->wes, target, port, sub_labels, x->log);
	c->lb = mc->lb;
	c->min_health = mc->min_health;
	c->tls = mc->tls;
	apply_pool(x, dr, c, component(base, subp, "connectionPool"));
	c->proto = upstream_proto(port, component(base, subp, "connectionPool"));
	apply_outlier(x, dr, c, component(base, subp, "outlierDetection"));
	/* connectionPool.http and outlierDetection act per request. */
	x->per_request[x->n_clusters] =
		c->od.enabled || json_object_get(component(base, subp, "connectionPool"), "http");
	c->n = mc->n;
	c->b = l7m_arena_array(x->a, mc->n, sizeof(*c->b));
	if (!c->b && mc->n) {
		bm_m_cluster_free(mc);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < mc->n; i++) {
		c->b[i].ip = mc->b[i].ip;
		c->b[i].port = mc->b[i].port;
		c->b[i].mesh = mc->b[i].mesh;
		c->b[i].id = 0; /* node-wide ids are the agent's */
	}
	bm_m_cluster_free(mc);
	if (bm_strmap_set(&x->by_name, name, x->n_clusters + 1))
		return -ENOMEM;
	x->n_clusters++;
	return add_fixup(x, slot, x->n_clusters - 1);
}
