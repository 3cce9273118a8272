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
 *
 * The clusters are compiled in l7model_clusters.c, the http rules in
 * l7model_routes.c; l7model_int.h is what the three files share.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "duration.h"
#include "l7.h"
#include "l7model_int.h"
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

void *l7m_arena_alloc(struct arena *a, size_t size)
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

void *l7m_arena_array(struct arena *a, size_t n, size_t size)
{
	if (n && size > SIZE_MAX / n)
		return NULL;
	return l7m_arena_alloc(a, n * size);
}

char *l7m_arena_strndup(struct arena *a, const char *s, size_t len)
{
	char *p = l7m_arena_alloc(a, len + 1);

	if (p) {
		memcpy(p, s, len);
		p[len] = 0;
	}
	return p;
}

char *l7m_arena_strdup(struct arena *a, const char *s)
{
	return l7m_arena_strndup(a, s, strlen(s));
}

char *l7m_arena_strdup_lower(struct arena *a, const char *s)
{
	char *p = l7m_arena_strdup(a, s);

	for (char *q = p; q && *q; q++)
		*q = tolower((unsigned char)*q);
	return p;
}

int l7m_arena_track(struct arena *a, struct bm_strmatch *m)
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

static int cmp_breaker(const void *x, const void *y)
{
	return strcmp(((const struct bm_l7_breaker_stat *)x)->cluster,
		      ((const struct bm_l7_breaker_stat *)y)->cluster);
}

size_t bm_l7_breaker_stats(struct bm_l7_breaker_stat *out, size_t max)
{
	size_t n = 0;

	pthread_mutex_lock(&rt_lock);
	for (size_t b = 0; b < rt_cap; b++)
		for (struct rt_entry *e = rt_tab[b]; e; e = e->next, n++) {
			const struct bm_l7_cluster_rt *r = &e->rt;

			if (n >= max)
				continue;
			out[n] = (struct bm_l7_breaker_stat){
				.cluster = e->name,
				.pending = __atomic_load_n(&r->pending, __ATOMIC_RELAXED),
				.requests = __atomic_load_n(&r->requests, __ATOMIC_RELAXED),
				.retries = __atomic_load_n(&r->retries, __ATOMIC_RELAXED),
				.overflow_pending = __atomic_load_n(&r->overflow_pending, __ATOMIC_RELAXED),
				.overflow_requests = __atomic_load_n(&r->overflow_requests, __ATOMIC_RELAXED),
				.overflow_retries = __atomic_load_n(&r->overflow_retries, __ATOMIC_RELAXED),
			};
		}
	pthread_mutex_unlock(&rt_lock);
	if (out && max)
		qsort(out, n < max ? n : max, sizeof(*out), cmp_breaker);
	return n;
}

/* ---- build context --------------------------------------------------------- */

const char *l7m_jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

/* A problem in resource r: logged with its kind and ns/name, counted. */
void l7m_warn(struct ctx *x, const struct bm_m_res *r, const char *fmt, ...)
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
uint32_t l7m_duration_ms(struct ctx *x, const struct bm_m_res *r, const json_t *o,
			 const char *field, uint32_t dflt)
{
	const char *s = json_string_value(json_object_get(o, field));
	uint64_t ms;

	if (!s)
		return dflt;
	if (bm_duration_ms(s, &ms) || ms > UINT32_MAX) {
		l7m_warn(x, r, "%s \"%s\" is not a valid duration; using the default", field, s);
		return dflt;
	}
	return (uint32_t)ms;
}

/* ---- services --------------------------------------------------------------- */

/* §1.1: http rules apply to HTTP, HTTP2 and gRPC ports, and to ports of
 * unset protocol (Istio sniffs them); others are opaque to us. */
static int port_may_be_http(const json_t *port)
{
	const char *p = l7m_jstr(port, "protocol");

	return !*p || !strcasecmp(p, "HTTP") || !strcasecmp(p, "HTTP2") ||
	       !strcasecmp(p, "GRPC") || !strcasecmp(p, "GRPC-WEB");
}

/* Declared HTTP: by protocol, or by Istio's port naming convention
 * (<protocol>[-<suffix>]) when the protocol is unset. */
static int port_declared_http(const json_t *port)
{
	static const char *const names[] = { "http", "http2", "grpc", "grpc-web" };
	const char *p = l7m_jstr(port, "protocol"), *n = l7m_jstr(port, "name");

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
	s->route = l7m_arena_array(x->a, n_rules, sizeof(*s->route));
	if (!s->route) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n_rules; i++) {
		const json_t *rule = http ? json_array_get(http, i) : self_route;

		err = l7m_compile_rule(x, http ? vs : se, se, port, rule, &s->route[s->n_route]);
		if (err == -EINVAL) {
			l7m_warn(x, vs, "http[%zu] left out: it cannot be compiled", i);
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
	if (vs && !*l7m_jstr(port, "protocol") &&
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
		l7 = l7m_rule_is_l7(json_array_get(http, i));
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
	cfg->cluster = l7m_arena_array(x->a, x->n_clusters, sizeof(*cfg->cluster));
	cfg->svc = l7m_arena_array(x->a, x->n_svc, sizeof(*cfg->svc));
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

