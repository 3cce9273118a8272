/*
 * Compiles the resource store into the L7 configuration the HTTP proxy
 * works from (agent/l7.h). Host, namespace, subset, DestinationRule and
 * endpoint resolution are model.c's, so a cluster here has the backends and
 * mesh flags the kernel's cluster of the same name has. What L7 adds follows
 * docs/reference/istio-api.md:
 *  - http rules in order, stopping after the first rule without match
 *    (§1.2: nothing after a catch-all is reachable);
 *  - retries: no `retries` block = Istio's default policy; a block starts
 *    from the default and attempts <= 0 disables (§1.6);
 *  - fault and mirror percentages (§1.7, §1.8): unset fault percentage = 0,
 *    unset mirror percentage = 100 %, explicit 0 = no mirroring;
 *  - cluster policy (§2.2): top level, replaced wholesale by a matching
 *    portLevelSettings entry, then subset components replace whole
 *    components, then a subset portLevelSettings entry replaces all four;
 *  - connection pool (§2.4) and outlier detection (§2.5) defaults.
 * A service gets L7 handling only when something needs per-request work;
 * the rest stays with the kernel's per-connection balancing.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "duration.h"
#include "l7.h"
#include "model.h"
#include "strmap.h"

/* ---- arena: everything of one configuration, freed at refs 0 ----------- */

struct chunk {
	struct chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct arena {
	struct chunk *chunks;
	struct bm_strmatch **sm;        /* compiled matchers to bm_strmatch_free */
	size_t n_sm, cap_sm;
	unsigned warnings;
};

#define CHUNK_MIN (64 * 1024)

static void *arena_alloc(struct arena *a, size_t size)
{
	size_t al = sizeof(max_align_t);
	struct chunk *c = a->chunks;
	void *p;

	size = (size + al - 1) / al * al;
	if (!size)
		size = al;
	if (!c || c->cap - c->used < size) {
		size_t cap = size > CHUNK_MIN ? size : CHUNK_MIN;

		c = calloc(1, sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->cap = cap;
		c->next = a->chunks;
		a->chunks = c;
	}
	p = (char *)c->data + c->used;
	c->used += size;
	return p;
}

static void *arena_array(struct arena *a, size_t n, size_t size)
{
	if (n && size > SIZE_MAX / n)
		return NULL;
	return arena_alloc(a, n * size);
}

static char *arena_strndup(struct arena *a, const char *s, size_t len)
{
	char *p = arena_alloc(a, len + 1);

	if (p) {
		memcpy(p, s, len);
		p[len] = 0;
	}
	return p;
}

static char *arena_strdup(struct arena *a, const char *s)
{
	return arena_strndup(a, s, strlen(s));
}

static char *arena_strdup_lower(struct arena *a, const char *s)
{
	char *p = arena_strdup(a, s);

	for (char *q = p; q && *q; q++)
		*q = tolower((unsigned char)*q);
	return p;
}

static int arena_track(struct arena *a, struct bm_strmatch *m)
{
	if (a->n_sm == a->cap_sm) {
		size_t cap = a->cap_sm ? 2 * a->cap_sm : 64;
		struct bm_strmatch **n = realloc(a->sm, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		a->sm = n;
		a->cap_sm = cap;
	}
	a->sm[a->n_sm++] = m;
	return 0;
}

static void arena_free(struct arena *a)
{
	struct chunk *c, *next;

	if (!a)
		return;
	for (size_t i = 0; i < a->n_sm; i++)
		bm_strmatch_free(a->sm[i]);
	free(a->sm);
	for (c = a->chunks; c; c = next) {
		next = c->next;
		free(c);
	}
	free(a);
}

/* ---- circuit-breaker counters that outlive configurations --------------- */

/* One entry per distinct cluster name this process has built, never freed:
 * workers may still hold an old configuration pointing at it, and a rebuild
 * must find the same counters so in-flight requests stay counted. Bounded
 * by the number of cluster names the store ever had. */
struct rt_entry {
	struct rt_entry *next;
	struct bm_l7_cluster_rt rt;
	char name[];
};

static pthread_mutex_t rt_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rt_entry **rt_tab;
static size_t rt_cap, rt_len;

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static int rt_grow(void)
{
	size_t cap = rt_cap ? 2 * rt_cap : 256;
	struct rt_entry **tab = calloc(cap, sizeof(*tab));

	if (!tab)
		return -ENOMEM;
	for (size_t i = 0; i < rt_cap; i++) {
		struct rt_entry *e = rt_tab[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = tab[name_hash(e->name) & (cap - 1)];
			tab[name_hash(e->name) & (cap - 1)] = e;
		}
	}
	free(rt_tab);
	rt_tab = tab;
	rt_cap = cap;
	return 0;
}

/* Called with rt_lock held. */
static struct bm_l7_cluster_rt *rt_lookup(const char *name)
{
	struct rt_entry *e;
	size_t b;

	if (rt_cap) {
		for (e = rt_tab[name_hash(name) & (rt_cap - 1)]; e; e = e->next)
			if (!strcmp(e->name, name))
				return &e->rt;
	}
	if (rt_len + 1 > rt_cap / 2 && rt_grow())
		return NULL;
	e = calloc(1, sizeof(*e) + strlen(name) + 1);
	if (!e)
		return NULL;
	strcpy(e->name, name);
	b = name_hash(name) & (rt_cap - 1);
	e->next = rt_tab[b];
	rt_tab[b] = e;
	rt_len++;
	return &e->rt;
}

/* ---- build context --------------------------------------------------------- */

struct fixup {
	struct bm_l7_cluster **slot;    /* in the arena */
	size_t idx;                     /* into ctx.clusters */
};

struct ctx {
	struct bm_m_registry ses, wes, drs, vss;
	struct arena *a;
	FILE *log;
	struct bm_l7_cluster *clusters; /* growing; copied into the arena at the end */
	uint8_t *per_request;           /* per cluster: its policy needs the HTTP path */
	size_t n_clusters, cap_clusters;
	struct bm_strmap by_name;       /* cluster name -> index + 1 */
	struct fixup *fix;
	size_t n_fix, cap_fix;
	struct bm_l7_service *svc;
	size_t n_svc, cap_svc;
};

static const char *jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static void warn(struct ctx *x, const struct bm_m_res *r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A problem in resource r: logged with its kind and ns/name, counted. */
static void warn(struct ctx *x, const struct bm_m_res *r, const char *fmt, ...)
{
	va_list ap;

	x->a->warnings++;
	if (!x->log)
		return;
	if (r)
		fprintf(x->log, "l7: %s %s/%s: ", r->kind, r->ns, r->name);
	else
		fprintf(x->log, "l7: ");
	va_start(ap, fmt);
	vfprintf(x->log, fmt, ap);
	va_end(ap);
	fputc('\n', x->log);
}

/* A duration field in ms (Istio: >= 1 ms, whole ms). Unset: dflt. */
static uint32_t duration_ms(struct ctx *x, const struct bm_m_res *r, const json_t *o,
			    const char *field, uint32_t dflt)
{
	const char *s = json_string_value(json_object_get(o, field));
	uint64_t ms;

	if (!s)
		return dflt;
	if (bm_duration_ms(s, &ms) || ms > UINT32_MAX) {
		warn(x, r, "%s \"%s\" is not a valid duration; using the default", field, s);
		return dflt;
	}
	return (uint32_t)ms;
}

/* A Percent ({value: double}, 0..100) in parts per million. */
static uint32_t percent_ppm(const json_t *pct)
{
	double v = json_number_value(json_object_get(pct, "value"));

	if (!(v > 0))
		return 0;
	if (v >= 100)
		return 1000000;
	return (uint32_t)llround(v * 10000.0);
}

/* A deprecated integer percent (0..100) in parts per million. */
static uint32_t int_percent_ppm(const json_t *v)
{
	json_int_t p = json_integer_value(v);

	return p <= 0 ? 0 : p >= 100 ? 1000000 : (uint32_t)p * 10000;
}

/* A UInt32Value-like limit: unset or 0 means Istio's default 2^32-1. */
static uint32_t limit(const json_t *o, const char *field)
{
	json_int_t v = json_integer_value(json_object_get(o, field));

	return v > 0 && v < BM_L7_UNLIMITED ? (uint32_t)v : BM_L7_UNLIMITED;
}

/* ---- clusters ---------------------------------------------------------------- */

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
	c->connect_timeout_ms = duration_ms(x, dr, tcp, "connectTimeout", 10000);
	c->idle_timeout_ms = 3600000;
	if (idle) {
		uint64_t ns;

		/* "0s" disables the idle timeout (Envoy: 0 = none). */
		if (bm_duration_parse_ns(idle, &ns) || ns / 1000000 > UINT32_MAX)
			warn(x, dr, "connectionPool.http.idleTimeout \"%s\" is not a valid duration; "
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
		warn(x, dr, "outlierDetection.consecutiveErrors is deprecated; "
			    "used as consecutiveGatewayErrors: %u", c->od.consecutive_gw);
	}
	c->od.interval_ms = duration_ms(x, dr, od, "interval", 10000);
	c->od.base_ejection_ms = duration_ms(x, dr, od, "baseEjectionTime", 30000);
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
	const char *p = jstr(port, "protocol"), *n = jstr(port, "name");
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
static int resolve_cluster(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *self,
			   const json_t *self_port, const json_t *dest,
			   struct bm_l7_cluster **slot)
{
	const char *subset = jstr(dest, "subset");
	json_int_t want = json_integer_value(json_object_get(json_object_get(dest, "port"), "number"));
	char fqdn[256], name[320];
	const struct bm_m_res *target, *dr;
	const json_t *port, *sub = NULL, *sub_labels = NULL, *base, *subp;
	struct bm_m_cluster *mc;
	struct bm_l7_cluster *c;
	json_int_t pnum;
	uint64_t idx;

	*slot = NULL;
	bm_fqdn(jstr(dest, "host"), r->ns, fqdn, sizeof(fqdn));
	target = bm_m_find_se(&x->ses, fqdn);
	port = target ? bm_m_dest_port(target, self, self_port, want) : NULL;
	pnum = port ? json_integer_value(json_object_get(port, "number")) : want;
	snprintf(name, sizeof(name), "outbound|%lld|%s|%s", (long long)pnum, subset, fqdn);
	if (!bm_strmap_get(&x->by_name, name, &idx))
		return add_fixup(x, slot, (size_t)idx - 1);
	if (!target || !port) {
		warn(x, r, "destination %s: no ServiceEntry%s for it; requests get 503", name,
		     target ? " port" : "");
		return 0;
	}
	dr = bm_m_find_dr(&x->drs, fqdn, target->ns);
	if (*subset) {
		sub = bm_m_find_subset(dr, subset);
		if (!sub) {
			warn(x, r, "destination %s: subset \"%s\" is not defined by any "
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
	c->b = arena_array(x->a, mc->n, sizeof(*c->b));
	if (!c->b) {
		free(mc);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < mc->n; i++) {
		c->b[i].ip = mc->b[i].ip;
		c->b[i].port = mc->b[i].port;
		c->b[i].mesh = mc->b[i].mesh;
		c->b[i].id = 0; /* node-wide ids are the agent's */
	}
	free(mc);
	if (bm_strmap_set(&x->by_name, name, x->n_clusters + 1))
		return -ENOMEM;
	x->n_clusters++;
	return add_fixup(x, slot, x->n_clusters - 1);
}

/* ---- routes ------------------------------------------------------------------ */

/* Istio StringMatch {} or regex "*": presence. */
static int is_presence(const json_t *sm)
{
	const char *re = json_string_value(json_object_get(sm, "regex"));

	return json_object_size(sm) == 0 || (re && !strcmp(re, "*"));
}

static int compile_sm(struct ctx *x, const struct bm_m_res *r, const char *what,
		      const json_t *sm, int icase, struct bm_strmatch *out)
{
	char err[256] = "";
	int rc;

	memset(out, 0, sizeof(*out));
	if (!sm)
		return 0;
	rc = bm_strmatch_compile(sm, icase, out, err, sizeof(err));
	if (rc == -ENOMEM)
		return rc;
	if (rc) {
		warn(x, r, "%s: %s", what, *err ? err : "invalid string match");
		memset(out, 0, sizeof(*out));
		return -EINVAL;
	}
	return arena_track(x->a, out);
}

static int compile_kv(struct ctx *x, const struct bm_m_res *r, const char *what,
		      const json_t *map, int lower, int skip_pseudo,
		      struct bm_l7_kvmatch **out, size_t *n_out)
{
	const char *k;
	json_t *v;
	size_t n = 0;
	int err;

	*out = NULL;
	*n_out = 0;
	if (!json_object_size(map))
		return 0;
	*out = arena_array(x->a, json_object_size(map), sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_object_foreach((json_t *)map, k, v) {
		struct bm_l7_kvmatch *kv = &(*out)[n];
		char label[320];

		/* §1.3: uri, scheme, method, authority are not header matchers. */
		if (skip_pseudo && (!strcasecmp(k, "uri") || !strcasecmp(k, "scheme") ||
				    !strcasecmp(k, "method") || !strcasecmp(k, "authority")))
			continue;
		kv->name = lower ? arena_strdup_lower(x->a, k) : arena_strdup(x->a, k);
		if (!kv->name)
			return -ENOMEM;
		if (is_presence(v)) {
			kv->m.kind = BM_SM_PRESENT;
		} else {
			snprintf(label, sizeof(label), "%s[%s]", what, k);
			if ((err = compile_sm(x, r, label, v, 0, &kv->m)))
				return err;
		}
		n++;
	}
	*n_out = n;
	return 0;
}

static int compile_match(struct ctx *x, const struct bm_m_res *r, const json_t *mj,
			 struct bm_l7_match *m)
{
	const json_t *labels = json_object_get(mj, "sourceLabels");
	const char *k;
	json_t *v;
	int err;

	m->name = arena_strdup(x->a, jstr(mj, "name"));
	if (!m->name)
		return -ENOMEM;
	if ((err = compile_sm(x, r, "match.uri", json_object_get(mj, "uri"),
			      json_is_true(json_object_get(mj, "ignoreUriCase")), &m->uri)) ||
	    (err = compile_sm(x, r, "match.scheme", json_object_get(mj, "scheme"), 0, &m->scheme)) ||
	    (err = compile_sm(x, r, "match.method", json_object_get(mj, "method"), 0, &m->method)) ||
	    (err = compile_sm(x, r, "match.authority", json_object_get(mj, "authority"), 0,
			      &m->authority)) ||
	    (err = compile_kv(x, r, "match.headers", json_object_get(mj, "headers"), 1, 1,
			      &m->headers, &m->n_headers)) ||
	    (err = compile_kv(x, r, "match.withoutHeaders", json_object_get(mj, "withoutHeaders"),
			      1, 1, &m->without_headers, &m->n_without_headers)) ||
	    (err = compile_kv(x, r, "match.queryParams", json_object_get(mj, "queryParams"), 0, 0,
			      &m->query, &m->n_query)))
		return err;
	if (json_object_size(labels)) {
		size_t n = 0;

		m->source_labels = arena_array(x->a, json_object_size(labels),
					       sizeof(*m->source_labels));
		if (!m->source_labels)
			return -ENOMEM;
		json_object_foreach((json_t *)labels, k, v) {
			m->source_labels[n].key = arena_strdup(x->a, k);
			m->source_labels[n].value = arena_strdup(x->a, json_string_value(v) ?
								       json_string_value(v) : "");
			if (!m->source_labels[n].key || !m->source_labels[n].value)
				return -ENOMEM;
			n++;
		}
		m->n_source_labels = n;
	}
	if (json_string_value(json_object_get(mj, "sourceNamespace"))) {
		m->source_namespace = arena_strdup(x->a, jstr(mj, "sourceNamespace"));
		if (!m->source_namespace)
			return -ENOMEM;
	}
	m->port = (uint16_t)json_integer_value(json_object_get(mj, "port"));
	return 0;
}

static int compile_hdr_map(struct ctx *x, const json_t *map, struct bm_l7_hdr **out,
			   size_t *n_out)
{
	const char *k;
	json_t *v;
	size_t n = 0;

	if (!json_object_size(map))
		return 0;
	*out = arena_array(x->a, json_object_size(map), sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_object_foreach((json_t *)map, k, v) {
		(*out)[n].name = arena_strdup_lower(x->a, k);
		(*out)[n].value = arena_strdup(x->a, json_string_value(v) ? json_string_value(v) : "");
		if (!(*out)[n].name || !(*out)[n].value)
			return -ENOMEM;
		n++;
	}
	*n_out = n;
	return 0;
}

/* headers.request or headers.response: {set, add, remove}. */
static int compile_hdr_ops(struct ctx *x, const json_t *ops, struct bm_l7_hdr_ops *out)
{
	const json_t *rm = json_object_get(ops, "remove");
	size_t i;
	json_t *v;
	int err;

	memset(out, 0, sizeof(*out));
	if (!ops)
		return 0;
	if ((err = compile_hdr_map(x, json_object_get(ops, "set"), &out->set, &out->n_set)) ||
	    (err = compile_hdr_map(x, json_object_get(ops, "add"), &out->add, &out->n_add)))
		return err;
	if (json_array_size(rm)) {
		out->remove = arena_array(x->a, json_array_size(rm), sizeof(*out->remove));
		if (!out->remove)
			return -ENOMEM;
		json_array_foreach(rm, i, v) {
			out->remove[out->n_remove] = arena_strdup_lower(x->a, json_string_value(v) ?
									    json_string_value(v) : "");
			if (!out->remove[out->n_remove])
				return -ENOMEM;
			out->n_remove++;
		}
	}
	return 0;
}

static int b64_val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+' || ch == '-')
		return 62;
	if (ch == '/' || ch == '_')
		return 63;
	return -1;
}

/* Protobuf JSON bytes: standard or URL-safe base64, padding optional. */
static int b64_decode(struct arena *a, const char *s, char **out, size_t *len)
{
	size_t n = strlen(s), o = 0;
	uint32_t acc = 0;
	int bits = 0;
	char *p = arena_alloc(a, n / 4 * 3 + 4);

	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int v;

		if (s[i] == '=')
			break;
		if (isspace((unsigned char)s[i]))
			continue;
		v = b64_val((unsigned char)s[i]);
		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			p[o++] = (char)(acc >> bits & 0xff);
		}
	}
	p[o] = 0;
	*out = p;
	*len = o;
	return 0;
}

static int compile_retry(struct ctx *x, const struct bm_m_res *r, const json_t *rj,
			 struct bm_l7_retry *rt)
{
	const char *on = jstr(rj, "retryOn");
	const json_t *iph = json_object_get(rj, "retryIgnorePreviousHosts");
	json_int_t attempts = json_integer_value(json_object_get(rj, "attempts"));
	char err[256] = "";

	/* §1.6: a retries block starts from the default policy. */
	bm_retry_default(rt);
	if (!rj)
		return 0;
	if (attempts <= 0) {
		rt->attempts = 0; /* Istio: attempts 0 disables retries */
		return 0;
	}
	rt->attempts = (uint32_t)attempts;
	rt->per_try_ms = duration_ms(x, r, rj, "perTryTimeout", 0);
	if (*on) {
		struct bm_l7_retry parsed = *rt;

		parsed.on = 0;
		parsed.n_codes = 0;
		memset(parsed.codes, 0, sizeof(parsed.codes));
		if (bm_retry_parse_on(on, &parsed, err, sizeof(err)))
			warn(x, r, "retries.retryOn \"%s\": %s; using the default", on, err);
		else
			*rt = parsed;
	}
	if (iph)
		rt->ignore_previous_hosts = json_is_true(iph);
	rt->backoff_base_ms = duration_ms(x, r, rj, "backoff", rt->backoff_base_ms);
	return 0;
}

/* abort.grpcStatus: the code's name (schema-checked), -1 if none. */
static int grpc_code(const char *name)
{
	static const char *const codes[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED" };

	for (int i = 0; name && i < (int)(sizeof(codes) / sizeof(codes[0])); i++)
		if (!strcmp(name, codes[i]))
			return i;
	return -1;
}

static void compile_fault(struct ctx *x, const struct bm_m_res *r, const json_t *fj,
			  struct bm_l7_route *rt)
{
	const json_t *delay = json_object_get(fj, "delay"), *abort_ = json_object_get(fj, "abort");

	if (delay) {
		rt->fault.delay_ms = duration_ms(x, r, delay, "fixedDelay", 0);
		/* §1.7: unset percentage falls back to the deprecated int
		 * percent, default 0: no request delayed. */
		if (json_object_get(delay, "percentage"))
			rt->fault.delay_ppm = percent_ppm(json_object_get(delay, "percentage"));
		else
			rt->fault.delay_ppm = int_percent_ppm(json_object_get(delay, "percent"));
		if (json_object_get(delay, "exponentialDelay"))
			warn(x, r, "fault.delay.exponentialDelay is not supported; ignored");
		if (!rt->fault.delay_ms)
			rt->fault.delay_ppm = 0;
	}
	if (abort_) {
		json_int_t st = json_integer_value(json_object_get(abort_, "httpStatus"));
		int g = grpc_code(json_string_value(json_object_get(abort_, "grpcStatus")));

		if (g >= 0) /* a gRPC reply: 200 with grpc-status (§1.8) */
			st = 200, rt->fault.abort_grpc = (uint8_t)(g + 1);
		if (st >= 200 && st <= 599) {
			rt->fault.abort_status = (uint16_t)st;
			if (json_object_get(abort_, "percentage"))
				rt->fault.abort_ppm = percent_ppm(json_object_get(abort_, "percentage"));
			else
				rt->fault.abort_ppm = int_percent_ppm(json_object_get(abort_, "percent"));
		} else {
			warn(x, r, "fault.abort: httpStatus 200..599 or grpcStatus needed; ignored");
		}
	}
}

static int add_mirror(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *se,
		      const json_t *port, const json_t *dest, uint32_t ppm,
		      struct bm_l7_route *rt)
{
	struct bm_l7_mirror *m = &rt->mirror[rt->n_mirror];
	size_t n_fix = x->n_fix;
	int err;

	if (!ppm)
		return 0; /* explicit 0 %: no mirroring */
	m->ppm = ppm;
	if ((err = resolve_cluster(x, r, se, port, dest, &m->c)))
		return err;
	/* §1.8: nothing is mirrored to a cluster that does not exist. */
	if (x->n_fix > n_fix)
		rt->n_mirror++;
	return 0;
}

static int compile_mirrors(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *se,
			   const json_t *port, const json_t *rule, struct bm_l7_route *rt)
{
	const json_t *mirror = json_object_get(rule, "mirror");
	const json_t *mirrors = json_object_get(rule, "mirrors");
	size_t i, n = (mirror ? 1 : 0) + json_array_size(mirrors);
	json_t *mj;
	int err;

	if (!n)
		return 0;
	rt->mirror = arena_array(x->a, n, sizeof(*rt->mirror));
	if (!rt->mirror)
		return -ENOMEM;
	if (mirror) {
		/* §1.8 (route.go MirrorPercent): mirrorPercentage, else the
		 * deprecated mirrorPercent; neither = 100 %. */
		const json_t *pct = json_object_get(rule, "mirrorPercentage");
		const json_t *old = json_object_get(rule, "mirrorPercent");
		uint32_t ppm = pct ? percent_ppm(pct) : old ? int_percent_ppm(old) : 1000000;

		if ((err = add_mirror(x, r, se, port, mirror, ppm, rt)))
			return err;
	}
	json_array_foreach(mirrors, i, mj) {
		const json_t *pct = json_object_get(mj, "percentage");

		if ((err = add_mirror(x, r, se, port, json_object_get(mj, "destination"),
				      pct ? percent_ppm(pct) : 1000000, rt)))
			return err;
	}
	return 0;
}

/* Does this http rule need per-request handling (anything beyond weighted
 * route destinations)? */
static int rule_is_l7(const json_t *rule)
{
	static const char *const features[] = {
		"match", "rewrite", "redirect", "directResponse", "headers", "timeout",
		"retries", "fault", "mirror", "mirrors", "mirrorPercentage", "mirrorPercent",
		NULL };
	size_t i;
	json_t *d;

	for (const char *const *f = features; *f; f++)
		if (json_object_get(rule, *f))
			return 1;
	json_array_foreach(json_object_get(rule, "route"), i, d)
		if (json_object_get(d, "headers"))
			return 1;
	return 0;
}

static int compile_dests(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *se,
			 const json_t *port, const json_t *route, struct bm_l7_route *rt)
{
	size_t i, n = json_array_size(route), n_nonzero = 0;
	json_t *d;
	int err;

	if (!n)
		return 0;
	rt->dest = arena_array(x->a, n, sizeof(*rt->dest));
	if (!rt->dest)
		return -ENOMEM;
	json_array_foreach(route, i, d)
		if (json_integer_value(json_object_get(d, "weight")) > 0)
			n_nonzero++;
	json_array_foreach(route, i, d) {
		json_int_t w = json_integer_value(json_object_get(d, "weight"));
		struct bm_l7_dest *ds = &rt->dest[rt->n_dest];
		const json_t *h = json_object_get(d, "headers");

		/* §1.4: a lone destination gets everything whatever its
		 * weight; with several, weight 0 is dropped. */
		if (n == 1 || n_nonzero == 0)
			w = w > 0 ? w : 1;
		else if (w <= 0)
			continue;
		ds->weight = w > UINT32_MAX ? UINT32_MAX : (uint32_t)w;
		if ((err = compile_hdr_ops(x, json_object_get(h, "request"), &ds->req)) ||
		    (err = compile_hdr_ops(x, json_object_get(h, "response"), &ds->resp)) ||
		    (err = resolve_cluster(x, r, se, port, json_object_get(d, "destination"),
					   &ds->c)))
			return err;
		rt->total_weight += ds->weight;
		rt->n_dest++;
	}
	return 0;
}

static int compile_redirect(struct ctx *x, const json_t *rd, struct bm_l7_route *rt)
{
	json_int_t code = json_integer_value(json_object_get(rd, "redirectCode"));
	const char *derive = jstr(rd, "derivePort");

	rt->redirect.code = code ? (uint16_t)code : 301;
	if ((json_object_get(rd, "uri") && !(rt->redirect.uri = arena_strdup(x->a, jstr(rd, "uri")))) ||
	    (json_object_get(rd, "authority") &&
	     !(rt->redirect.authority = arena_strdup(x->a, jstr(rd, "authority")))) ||
	    (json_object_get(rd, "scheme") &&
	     !(rt->redirect.scheme = arena_strdup(x->a, jstr(rd, "scheme")))))
		return -ENOMEM;
	rt->redirect.port = (uint16_t)json_integer_value(json_object_get(rd, "port"));
	rt->redirect.derive_port = !strcmp(derive, "FROM_PROTOCOL_DEFAULT") ? 1 :
				   !strcmp(derive, "FROM_REQUEST_PORT") ? 2 : 0;
	return 0;
}

static int compile_direct(struct ctx *x, const struct bm_m_res *r, const json_t *dr,
			  struct bm_l7_route *rt)
{
	const json_t *body = json_object_get(dr, "body");
	const char *str = json_string_value(json_object_get(body, "string"));
	const char *bytes = json_string_value(json_object_get(body, "bytes"));
	int err;

	rt->direct.status = (uint16_t)json_integer_value(json_object_get(dr, "status"));
	if (str) {
		rt->direct.body_len = strlen(str);
		rt->direct.body = arena_strndup(x->a, str, rt->direct.body_len);
		if (!rt->direct.body)
			return -ENOMEM;
	} else if (bytes) {
		err = b64_decode(x->a, bytes, &rt->direct.body, &rt->direct.body_len);
		if (err == -ENOMEM)
			return err;
		if (err) {
			warn(x, r, "directResponse.body.bytes is not base64; empty body sent");
			rt->direct.body = NULL;
			rt->direct.body_len = 0;
		}
	}
	return 0;
}

/* One http rule into rt. -EINVAL: the rule cannot be compiled (logged) and
 * is left out; other errors are fatal. */
static int compile_rule(struct ctx *x, const struct bm_m_res *vs, const struct bm_m_res *se,
			const json_t *port, const json_t *rule, struct bm_l7_route *rt)
{
	const json_t *match = json_object_get(rule, "match");
	const json_t *rw = json_object_get(rule, "rewrite");
	const json_t *hdrs = json_object_get(rule, "headers");
	size_t i;
	json_t *mj;
	int err;

	memset(rt, 0, sizeof(*rt));
	rt->name = arena_strdup(x->a, jstr(rule, "name"));
	if (!rt->name)
		return -ENOMEM;
	if (json_array_size(match)) {
		rt->match = arena_array(x->a, json_array_size(match), sizeof(*rt->match));
		if (!rt->match)
			return -ENOMEM;
		json_array_foreach(match, i, mj) {
			if ((err = compile_match(x, vs, mj, &rt->match[i])))
				return err;
			rt->n_match++;
		}
	}
	if (json_object_get(rule, "redirect") &&
	    (err = compile_redirect(x, json_object_get(rule, "redirect"), rt)))
		return err;
	if (json_object_get(rule, "directResponse") &&
	    (err = compile_direct(x, vs, json_object_get(rule, "directResponse"), rt)))
		return err;
	if (json_string_value(json_object_get(rw, "uri")) &&
	    !(rt->rewrite_uri = arena_strdup(x->a, jstr(rw, "uri"))))
		return -ENOMEM;
	if (json_string_value(json_object_get(rw, "authority")) &&
	    !(rt->rewrite_authority = arena_strdup(x->a, jstr(rw, "authority"))))
		return -ENOMEM;
	if (json_object_get(rw, "uriRegexRewrite"))
		warn(x, vs, "rewrite.uriRegexRewrite is not supported; ignored");
	rt->timeout_ms = duration_ms(x, vs, rule, "timeout", 0);
	if ((err = compile_retry(x, vs, json_object_get(rule, "retries"), &rt->retry)))
		return err;
	compile_fault(x, vs, json_object_get(rule, "fault"), rt);
	if ((err = compile_hdr_ops(x, json_object_get(hdrs, "request"), &rt->req)) ||
	    (err = compile_hdr_ops(x, json_object_get(hdrs, "response"), &rt->resp)) ||
	    (err = compile_dests(x, vs, se, port, json_object_get(rule, "route"), rt)) ||
	    (err = compile_mirrors(x, vs, se, port, rule, rt)))
		return err;
	return 0;
}

/* ---- services --------------------------------------------------------------- */

/* §1.1: http rules apply to HTTP, HTTP2 and gRPC ports, and to ports of
 * unset protocol (Istio sniffs them); others are opaque to us. */
static int port_may_be_http(const json_t *port)
{
	const char *p = jstr(port, "protocol");

	return !*p || !strcasecmp(p, "HTTP") || !strcasecmp(p, "HTTP2") ||
	       !strcasecmp(p, "GRPC") || !strcasecmp(p, "GRPC-WEB");
}

/* Declared HTTP: by protocol, or by Istio's port naming convention
 * (<protocol>[-<suffix>]) when the protocol is unset. */
static int port_declared_http(const json_t *port)
{
	static const char *const names[] = { "http", "http2", "grpc", "grpc-web" };
	const char *p = jstr(port, "protocol"), *n = jstr(port, "name");

	if (*p)
		return port_may_be_http(port);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t l = strlen(names[i]);

		if (!strncasecmp(n, names[i], l) && (!n[l] || n[l] == '-'))
			return 1;
	}
	return 0;
}

static struct bm_l7_service *new_service(struct ctx *x)
{
	if (x->n_svc == x->cap_svc) {
		size_t cap = x->cap_svc ? 2 * x->cap_svc : 16;
		struct bm_l7_service *n = realloc(x->svc, cap * sizeof(*n));

		if (!n)
			return NULL;
		x->svc = n;
		x->cap_svc = cap;
	}
	memset(&x->svc[x->n_svc], 0, sizeof(x->svc[0]));
	return &x->svc[x->n_svc];
}

/* The http rules in effect: up to and including the first without match
 * (§1.2: nothing after a catch-all is reachable). */
static size_t reachable_rules(const json_t *http)
{
	size_t i;
	json_t *rule;

	json_array_foreach(http, i, rule)
		if (!json_array_size(json_object_get(rule, "match")))
			return i + 1;
	return json_array_size(http);
}

/* Routes of service s from vs's http rules, or Istio's default route to the
 * whole service (default retry policy, no timeout) without them. */
static int compile_routes(struct ctx *x, const struct bm_m_res *se, const json_t *port,
			  const struct bm_m_res *vs, struct bm_l7_service *s)
{
	const json_t *http = vs ? json_object_get(vs->spec, "http") : NULL;
	size_t i, n_rules = reachable_rules(http);
	json_t *self_route = NULL;
	int err = 0;

	if (!n_rules) {
		self_route = json_pack("{s:[{s:{s:s}}]}", "route", "destination", "host", s->host);
		if (!self_route)
			return -ENOMEM;
		http = NULL;
		n_rules = 1;
	}
	s->route = arena_array(x->a, n_rules, sizeof(*s->route));
	if (!s->route) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n_rules; i++) {
		const json_t *rule = http ? json_array_get(http, i) : self_route;

		err = compile_rule(x, http ? vs : se, se, port, rule, &s->route[s->n_route]);
		if (err == -EINVAL) {
			warn(x, vs, "http[%zu] left out: it cannot be compiled", i);
			err = 0;
			continue;
		}
		if (err)
			goto out;
		s->n_route++;
	}
	if (http && n_rules < json_array_size(http) && x->log)
		fprintf(x->log, "l7: VirtualService %s/%s: http[%zu] has no match; the rules "
			"after it are never reached\n", vs->ns, vs->name, n_rules - 1);
out:
	json_decref(self_route);
	return err;
}

/* Forget the clusters and cluster references made since a mark. */
static void roll_back(struct ctx *x, size_t n_clusters, size_t n_fix)
{
	for (size_t i = n_clusters; i < x->n_clusters; i++)
		bm_strmap_del(&x->by_name, x->clusters[i].name);
	x->n_clusters = n_clusters;
	x->n_fix = n_fix;
}

/* Compile se's port at vip; keeps the service only if it needs L7. */
static int build_service(struct ctx *x, const struct bm_m_res *se, const json_t *port,
			 uint32_t vip)
{
	json_int_t pnum = json_integer_value(json_object_get(port, "number"));
	const struct bm_m_res *vs = bm_m_find_vs(&x->vss, se);
	const json_t *http = vs ? json_object_get(vs->spec, "http") : NULL;
	const char *h0 = json_string_value(json_array_get(json_object_get(se->spec, "hosts"), 0));
	size_t clusters0 = x->n_clusters, fix0 = x->n_fix, i, n_rules = reachable_rules(http);
	struct bm_l7_service *s;
	int l7 = 0, err;

	if (!port_may_be_http(port))
		return 0;
	/* Unset protocol and a tcp rule for this port: routed as TCP, as the
	 * kernel model does. */
	if (vs && !*jstr(port, "protocol") &&
	    bm_m_pick_tcp_rule(json_object_get(vs->spec, "tcp"), vip, pnum))
		return 0;
	s = new_service(x);
	if (!s)
		return -ENOMEM;
	s->vip = vip;
	s->port = (uint16_t)pnum;
	bm_fqdn(h0 ? h0 : "", se->ns, s->host, sizeof(s->host));
	snprintf(s->ns, sizeof(s->ns), "%s", se->ns);

	for (i = 0; i < n_rules && !l7; i++)
		l7 = rule_is_l7(json_array_get(http, i));
	if (!l7 && !port_declared_http(port)) {
		/* A port of unset protocol becomes L7 only when its VirtualService
		 * asks for HTTP features: a DestinationRule alone (outlier
		 * detection, http pool limits) must not turn an opaque TCP
		 * protocol, maybe server-speaks-first, into parsed HTTP. */
		roll_back(x, clusters0, fix0);
		return 0;
	}
	if (!l7) {
		/* Weighted routes only: L7 iff a cluster they reach has a
		 * per-request policy. Compiled quietly (the kernel model
		 * reports the same problems), then undone. */
		FILE *log = x->log;
		unsigned warnings = x->a->warnings;

		x->log = NULL;
		err = compile_routes(x, se, port, vs, s);
		x->log = log;
		x->a->warnings = warnings;
		for (i = fix0; i < x->n_fix && !err && !l7; i++)
			l7 = x->per_request[x->fix[i].idx];
		roll_back(x, clusters0, fix0);
		if (err || !l7)
			return err; /* the route memory stays in the arena, unused */
		s->route = NULL;
		s->n_route = 0;
	}
	if ((err = compile_routes(x, se, port, vs, s)))
		return err;
	x->n_svc++;
	return 0;
}

static int svc_cmp(const void *a, const void *b)
{
	const struct bm_l7_service *x = a, *y = b;

	if (x->vip != y->vip)
		return x->vip < y->vip ? -1 : 1;
	return x->port < y->port ? -1 : x->port > y->port;
}

static int build_all(struct ctx *x)
{
	struct bm_strmap taken = {};
	int err = 0;

	for (size_t i = 0; i < x->ses.n; i++) {
		const struct bm_m_res *se = &x->ses.r[i];
		size_t j, k;
		json_t *addr, *port;

		json_array_foreach(json_object_get(se->spec, "addresses"), j, addr) {
			uint32_t vip;

			if (bm_m_parse_ip(json_string_value(addr) ? json_string_value(addr) : "", &vip))
				continue;
			json_array_foreach(json_object_get(se->spec, "ports"), k, port) {
				json_int_t pn = json_integer_value(json_object_get(port, "number"));
				char key[32];
				uint64_t dummy;

				/* The oldest ServiceEntry owns a VIP:port (model.c). */
				snprintf(key, sizeof(key), "%08x:%lld", vip, (long long)pn);
				if (!bm_strmap_get(&taken, key, &dummy))
					continue;
				if (bm_strmap_set(&taken, key, 1) ||
				    (err = build_service(x, se, port, vip))) {
					err = err ? err : -ENOMEM;
					goto out;
				}
			}
		}
	}
out:
	bm_strmap_free(&taken);
	return err;
}

/* Copy the growing arrays into the arena and point routes at clusters. */
static int lay_out(struct ctx *x, struct bm_l7_config *cfg)
{
	cfg->cluster = arena_array(x->a, x->n_clusters, sizeof(*cfg->cluster));
	cfg->svc = arena_array(x->a, x->n_svc, sizeof(*cfg->svc));
	if (!cfg->cluster || !cfg->svc)
		return -ENOMEM;
	if (x->n_clusters)
		memcpy(cfg->cluster, x->clusters, x->n_clusters * sizeof(*cfg->cluster));
	cfg->n_cluster = x->n_clusters;
	if (x->n_svc)
		memcpy(cfg->svc, x->svc, x->n_svc * sizeof(*cfg->svc));
	cfg->n_svc = x->n_svc;
	qsort(cfg->svc, cfg->n_svc, sizeof(*cfg->svc), svc_cmp);
	for (size_t i = 0; i < x->n_fix; i++)
		*x->fix[i].slot = &cfg->cluster[x->fix[i].idx];

	pthread_mutex_lock(&rt_lock);
	for (size_t i = 0; i < cfg->n_cluster; i++) {
		cfg->cluster[i].rt = rt_lookup(cfg->cluster[i].name);
		if (!cfg->cluster[i].rt) {
			pthread_mutex_unlock(&rt_lock);
			return -ENOMEM;
		}
	}
	pthread_mutex_unlock(&rt_lock);
	return 0;
}

int bm_l7_build(const json_t *resources, struct bm_l7_config **out, FILE *log)
{
	struct ctx x = { .log = log };
	struct bm_l7_config *cfg;
	int err;

	*out = NULL;
	cfg = calloc(1, sizeof(*cfg));
	x.a = calloc(1, sizeof(*x.a));
	if (!cfg || !x.a) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = bm_m_collect(resources, "ServiceEntry", &x.ses)) ||
	    (err = bm_m_collect(resources, "WorkloadEntry", &x.wes)) ||
	    (err = bm_m_collect(resources, "DestinationRule", &x.drs)) ||
	    (err = bm_m_collect(resources, "VirtualService", &x.vss)) ||
	    (err = build_all(&x)) ||
	    (err = lay_out(&x, cfg)))
		goto out;
	if (x.a->warnings && log)
		fprintf(log, "l7: %u problem(s) above; everything else is built\n", x.a->warnings);
	cfg->refs = 1;
	cfg->arena = x.a;
	*out = cfg;
	x.a = NULL;
	cfg = NULL;
out:
	free(x.ses.r);
	free(x.wes.r);
	free(x.drs.r);
	free(x.vss.r);
	free(x.clusters);
	free(x.per_request);
	free(x.fix);
	free(x.svc);
	bm_strmap_free(&x.by_name);
	arena_free(x.a);
	free(cfg);
	return err;
}

void bm_l7_get(struct bm_l7_config *c)
{
	if (c)
		__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void bm_l7_put(struct bm_l7_config *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL))
		return;
	arena_free(c->arena);
	free(c->podlog);
	free(c->podtrace);
	free(c);
}

static int podlog_cmp(const char *ns, const char *name, const struct bm_l7_podlog *p)
{
	int r = strcmp(ns, p->ns);

	return r ? r : strcmp(name, p->name);
}

const struct bm_l7_podlog *bm_l7_podlog_find(const struct bm_l7_config *c, const char *ns,
					     const char *name)
{
	size_t lo = 0, hi = c && ns && name ? c->n_podlog : 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = podlog_cmp(ns, name, &c->podlog[mid]);

		if (!r)
			return c->podlog[mid].n ? &c->podlog[mid] : NULL;
		if (r > 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct bm_l7_service *bm_l7_find(const struct bm_l7_config *c, uint32_t vip, uint16_t port)
{
	size_t lo = 0, hi;

	if (!c)
		return NULL;
	hi = c->n_svc;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct bm_l7_service *s = &c->svc[mid];

		if (s->vip == vip && s->port == port)
			return s;
		if (s->vip < vip || (s->vip == vip && s->port < port))
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int bm_l7_is_l7(const struct bm_l7_config *c, uint32_t vip, uint16_t port)
{
	return bm_l7_find(c, vip, port) != NULL;
}
