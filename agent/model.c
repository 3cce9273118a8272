/*
 * Compiles the resource store into per-VIP:port services for the kernel
 * load balancer. Semantics follow docs/reference/istio-api.md:
 *  - short hosts expand with the namespace of the resource that names them;
 *  - one destination gets 100 % whatever its weight; with several, weight-0
 *    destinations are dropped and the rest are relative;
 *  - DestinationRule policy: subset trafficPolicy components replace the
 *    top-level component whole (no field merge);
 *  - panic threshold: minHealthPercent when outlierDetection is present
 *    (default 0), Envoy's 50 % when it is absent.
 * Precedence among several resources naming the same host: oldest first
 * (creationTimestamp, then namespace/name), as Istio does.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "duration.h"
#include "model.h"
#include "modelix.h"
#include "resutil.h"
#include "strmap.h"

static const char *jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

/* Appends src to out (at *at, truncating at len - 1). */
static void append(char *out, size_t len, size_t *at, const char *src)
{
	size_t n = strlen(src);

	if (*at + n >= len)
		n = len - 1 - *at;
	memcpy(out + *at, src, n);
	*at += n;
}

/* snprintf(out, len, "%s", src) without the printf machinery. */
static void copy_str(char *out, size_t len, const char *src)
{
	size_t at = 0;

	append(out, len, &at, src);
	out[at] = 0;
}

/* On every lookup of every build: no printf machinery. */
void bm_fqdn(const char *host, const char *ns, char *out, size_t len)
{
	size_t i, at = 0;

	if (!len)
		return;
	append(out, len, &at, host);
	if (!strchr(host, '.') && strcmp(host, "*")) {
		append(out, len, &at, ".");
		append(out, len, &at, ns && *ns ? ns : "default");
		append(out, len, &at, ".svc.cluster.local");
	}
	out[at] = 0;
	for (i = 0; out[i]; i++)
		if (out[i] >= 'A' && out[i] <= 'Z')
			out[i] += 'a' - 'A';
}

int bm_host_matches(const char *pattern, const char *host)
{
	size_t lp, lh;

	if (!strcmp(pattern, "*"))
		return 1;
	if (pattern[0] == '*' && pattern[1] == '.') {
		lp = strlen(pattern) - 1; /* ".suffix" */
		lh = strlen(host);
		return lh > lp && !strcmp(host + lh - lp, pattern + 1);
	}
	return !strcmp(pattern, host);
}

static int res_cmp(const void *a, const void *b)
{
	const struct bm_m_res *x = a, *y = b;
	int c = strcmp(x->created, y->created);

	if (c)
		return c;
	c = strcmp(x->ns, y->ns);
	return c ? c : strcmp(x->name, y->name);
}

static const char *const model_kinds[] = { "ServiceEntry", "WorkloadEntry", "DestinationRule",
					    "VirtualService" };

/* What a build reads of each resource, kept per object for the next build:
 * the store's parse cache hands out the same objects for unchanged files,
 * so only changed resources are read through jansson and their hosts
 * expanded again. */
struct rinfo {
	const json_t *obj;
	int kind;                /* index in model_kinds, -1 another kind */
	const char *name, *ns, *created;
	const json_t *spec;
	char **fq;               /* see bm_m_res; one block, refcounted */
	size_t n_fq;
};

struct bm_m_rcache {
	struct rinfo *e;
	size_t n;
	size_t *slot;            /* open addressing on obj: 1 + index, 0 empty */
	size_t cap;              /* power of two */
};

static size_t ptr_hash(const void *p, size_t cap)
{
	return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL) & (cap - 1);
}

static const struct rinfo *rc_find(const struct bm_m_rcache *rc, const json_t *o)
{
	if (!rc || !rc->cap)
		return NULL;
	for (size_t h = ptr_hash(o, rc->cap);; h = (h + 1) & (rc->cap - 1)) {
		if (!rc->slot[h])
			return NULL;
		if (rc->e[rc->slot[h] - 1].obj == o)
			return &rc->e[rc->slot[h] - 1];
	}
}

/* The block: a reference count, then n pointers, then the strings. */
static void fq_unref(char **fq)
{
	if (fq && !--((size_t *)fq)[-1])
		free((size_t *)fq - 1);
}

static char **fq_block(char (*names)[256], size_t n)
{
	size_t len = sizeof(size_t) + n * sizeof(char *), at;
	size_t *blk;
	char **fq;

	for (size_t i = 0; i < n; i++)
		len += strlen(names[i]) + 1;
	blk = malloc(len);
	if (!blk)
		return NULL;
	blk[0] = 1;
	fq = (char **)(blk + 1);
	at = sizeof(size_t) + n * sizeof(char *);
	for (size_t i = 0; i < n; i++) {
		fq[i] = (char *)blk + at;
		memcpy(fq[i], names[i], strlen(names[i]) + 1);
		at += strlen(names[i]) + 1;
	}
	return fq;
}

/* The hosts as bm_hix_build() would expand them. */
static int rinfo_hosts(struct rinfo *e)
{
	const json_t *v = json_object_get(e->spec, e->kind == 2 ? "host" : "hosts");
	char (*names)[256];
	size_t n = 1, j;
	json_t *h;

	if (e->kind == 1 || (e->kind != 2 && !json_is_array(v)))
		return 0; /* WorkloadEntries have none; odd shapes: computed when needed */
	if (e->kind != 2)
		n = json_array_size(v);
	names = malloc((n ? n : 1) * sizeof(*names));
	if (!names)
		return -ENOMEM;
	if (e->kind == 2)
		bm_fqdn(json_string_value(v) ? json_string_value(v) : "", e->ns, names[0], 256);
	else
		json_array_foreach(v, j, h)
			bm_fqdn(json_string_value(h) ? json_string_value(h) : "", e->ns, names[j], 256);
	e->fq = fq_block(names, n);
	e->n_fq = n;
	free(names);
	return e->fq ? 0 : -ENOMEM;
}

static int rinfo_make(const json_t *o, struct rinfo *e)
{
	const char *kind = jstr(o, "kind");
	const json_t *md;

	memset(e, 0, sizeof(*e));
	e->obj = o;
	for (e->kind = 0; e->kind < 4 && strcmp(kind, model_kinds[e->kind]); e->kind++)
		;
	if (e->kind == 4) {
		e->kind = -1;
		return 0;
	}
	md = json_object_get(o, "metadata");
	e->name = jstr(md, "name");
	e->ns = jstr(md, "namespace");
	if (!*e->ns)
		e->ns = "default";
	e->created = jstr(md, "creationTimestamp");
	e->spec = json_object_get(o, "spec");
	return rinfo_hosts(e);
}

static void rc_free(struct bm_m_rcache *rc)
{
	if (!rc)
		return;
	for (size_t i = 0; i < rc->n; i++)
		fq_unref(rc->e[i].fq);
	free(rc->e);
	free(rc->slot);
	free(rc);
}

/* Every resource's rinfo, taken from prev's cache when the object is the same. */
static int rc_build(const json_t *resources, const struct bm_m_rcache *prev,
		    struct bm_m_rcache **out)
{
	struct bm_m_rcache *rc = calloc(1, sizeof(*rc));
	size_t n = json_array_size(resources), i;
	json_t *o;

	*out = rc;
	if (!rc)
		return -ENOMEM;
	for (rc->cap = 16; rc->cap < 2 * n; rc->cap *= 2)
		;
	rc->e = malloc((n ? n : 1) * sizeof(*rc->e));
	rc->slot = calloc(rc->cap, sizeof(*rc->slot));
	if (!rc->e || !rc->slot)
		return -ENOMEM;
	json_array_foreach(resources, i, o) {
		const struct rinfo *p = rc_find(prev, o);
		struct rinfo *e = &rc->e[rc->n];
		size_t h;

		if (p) {
			*e = *p;
			if (e->fq)
				((size_t *)e->fq)[-1]++;
		} else if (rinfo_make(o, e)) {
			return -ENOMEM;
		}
		rc->n++;
		for (h = ptr_hash(o, rc->cap); rc->slot[h]; h = (h + 1) & (rc->cap - 1))
			;
		rc->slot[h] = rc->n;
	}
	return 0;
}

/* The four registries the model needs, from the resource cache. */
static int collect4(const struct bm_m_rcache *rc, struct bm_m_registry reg[4])
{
	for (int k = 0; k < 4; k++) {
		reg[k].n = 0;
		reg[k].r = malloc((rc->n + 1) * sizeof(*reg[k].r));
		if (!reg[k].r)
			return -ENOMEM;
	}
	for (size_t i = 0; i < rc->n; i++) {
		const struct rinfo *e = &rc->e[i];
		struct bm_m_res *r;

		if (e->kind < 0)
			continue;
		r = &reg[e->kind].r[reg[e->kind].n++];
		r->obj = e->obj;
		r->kind = model_kinds[e->kind];
		r->name = e->name;
		r->ns = e->ns;
		r->created = e->created;
		r->spec = e->spec;
		r->fq = e->fq;
		r->n_fq = e->n_fq;
	}
	for (int k = 0; k < 4; k++)
		qsort(reg[k].r, reg[k].n, sizeof(*reg[k].r), res_cmp);
	return 0;
}

static int collect(const json_t *resources, const char *kind, struct bm_m_registry *reg)
{
	size_t i;
	json_t *o;

	reg->n = 0;
	reg->r = calloc(json_array_size(resources) + 1, sizeof(*reg->r));
	if (!reg->r)
		return -ENOMEM;
	json_array_foreach(resources, i, o) {
		const json_t *md = json_object_get(o, "metadata");
		struct bm_m_res *r;

		if (strcmp(jstr(o, "kind"), kind))
			continue;
		r = &reg->r[reg->n++];
		r->obj = o;
		r->kind = kind;
		r->name = jstr(md, "name");
		r->ns = *jstr(md, "namespace") ? jstr(md, "namespace") : "default";
		r->created = jstr(md, "creationTimestamp");
		r->spec = json_object_get(o, "spec");
	}
	qsort(reg->r, reg->n, sizeof(*reg->r), res_cmp);
	return 0;
}


static int parse_ip(const char *s, uint32_t *ip)
{
	char buf[64];
	char *slash;
	struct in_addr a;

	snprintf(buf, sizeof(buf), "%s", s);
	slash = strchr(buf, '/');
	if (slash) {
		if (strcmp(slash, "/32"))
			return -EINVAL; /* a CIDR range is not a VIP */
		*slash = 0;
	}
	if (inet_pton(AF_INET, buf, &a) != 1)
		return -EINVAL;
	*ip = a.s_addr;
	return 0;
}

static const json_t *find_subset(const struct bm_m_res *dr, const char *subset)
{
	size_t i;
	json_t *s;

	if (!dr)
		return NULL;
	json_array_foreach(json_object_get(dr->spec, "subsets"), i, s)
		if (!strcmp(jstr(s, "name"), subset))
			return s;
	return NULL;
}

static uint8_t lb_from(const char *simple)
{
	if (!strcmp(simple, "ROUND_ROBIN"))
		return BM_LB_ROUND_ROBIN;
	if (!strcmp(simple, "RANDOM"))
		return BM_LB_RANDOM;
	if (!strcmp(simple, "PASSTHROUGH"))
		return BM_LB_PASSTHROUGH;
	return BM_LB_LEAST_REQUEST; /* unset, UNSPECIFIED, LEAST_REQUEST, LEAST_CONN */
}

/* Merge policy: each component the subset sets replaces the top-level one. */
static uint32_t od_ms(const json_t *od, const char *field, uint32_t dflt)
{
	const char *v = json_string_value(json_object_get(od, field));
	uint64_t ns;

	if (!v || bm_duration_parse_ns(v, &ns) || ns / 1000000 > UINT32_MAX)
		return dflt;
	return (uint32_t)(ns / 1000000);
}

/* outlierDetection with Envoy's defaults (istio-api.md §2.5); l7model.c
 * compiles the same block for the HTTP path and is where problems are
 * reported. */
static void outlier_cfg(const json_t *od, struct bm_outlier_cfg *o)
{
	const json_t *v5 = json_object_get(od, "consecutive5xxErrors");
	const json_t *vgw = json_object_get(od, "consecutiveGatewayErrors");
	const json_t *vold = json_object_get(od, "consecutiveErrors");
	const json_t *vpct = json_object_get(od, "maxEjectionPercent");

	memset(o, 0, sizeof(*o));
	if (!od)
		return;
	o->enabled = 1;
	o->consecutive_5xx = v5 ? (uint32_t)json_integer_value(v5) : 5;
	o->consecutive_gw = (uint32_t)json_integer_value(vgw ? vgw : vold);
	o->interval_ms = od_ms(od, "interval", 10000);
	o->base_ejection_ms = od_ms(od, "baseEjectionTime", 30000);
	o->max_ejection_ms = o->base_ejection_ms > 300000 ? o->base_ejection_ms : 300000;
	o->max_ejection_pct = vpct ? (uint8_t)(json_integer_value(vpct) > 100 ? 100 :
					       json_integer_value(vpct) < 0 ? 0 : json_integer_value(vpct))
				   : 10;
}

static void apply_policy(struct bm_m_cluster *c, const json_t *top, const json_t *sub)
{
	const json_t *lb = json_object_get(top, "loadBalancer");
	const json_t *cp = json_object_get(top, "connectionPool");
	const json_t *od = json_object_get(top, "outlierDetection");
	json_int_t maxc;

	if (sub && json_object_get(sub, "loadBalancer"))
		lb = json_object_get(sub, "loadBalancer");
	if (sub && json_object_get(sub, "connectionPool"))
		cp = json_object_get(sub, "connectionPool");
	if (sub && json_object_get(sub, "outlierDetection"))
		od = json_object_get(sub, "outlierDetection");

	{
		const json_t *tls = json_object_get(top, "tls");
		const char *mode;

		if (sub && json_object_get(sub, "tls"))
			tls = json_object_get(sub, "tls");
		mode = jstr(tls, "mode");
		c->tls = !strcmp(mode, "ISTIO_MUTUAL") ? 1 : !strcmp(mode, "DISABLE") ? 0 : -1;
	}
	c->lb = lb_from(jstr(lb, "simple"));
	maxc = json_integer_value(json_object_get(json_object_get(cp, "tcp"), "maxConnections"));
	c->max_conns = maxc > 0 && maxc < UINT32_MAX ? (uint32_t)maxc : 0;
	if (od) {
		json_int_t mh = json_integer_value(json_object_get(od, "minHealthPercent"));

		c->min_health = mh > 0 && mh <= 100 ? (uint8_t)mh : 0;
	} else {
		c->min_health = 50;
	}
	outlier_cfg(od, &c->od);
}

/* The port of a ServiceEntry a destination means (§1.4: required only when
 * the service has several ports). */
static const json_t *dest_port(const struct bm_m_res *target, const struct bm_m_res *self,
			       const json_t *self_port, json_int_t want)
{
	const json_t *ports = json_object_get(target->spec, "ports");
	json_int_t self_num = json_integer_value(json_object_get(self_port, "number"));
	size_t i;
	json_t *p;

	if (!want && target == self)
		return self_port;
	if (!want && json_array_size(ports) == 1)
		return json_array_get(ports, 0);
	if (!want)
		want = self_num;
	json_array_foreach(ports, i, p)
		if (json_integer_value(json_object_get(p, "number")) == want)
			return p;
	return NULL;
}

static void add_endpoint(struct bm_m_cluster *c, const json_t *ep, const json_t *port,
			 const json_t *subset_labels, FILE *log)
{
	const char *pname = jstr(port, "name");
	json_int_t pnum = json_integer_value(json_object_get(port, "targetPort"));
	json_int_t mapped = json_integer_value(json_object_get(json_object_get(ep, "ports"), pname));
	uint32_t ip;

	if (subset_labels && !bm_labels_match(subset_labels, json_object_get(ep, "labels")))
		return;
	if (parse_ip(jstr(ep, "address"), &ip))
		return;
	if (!pnum)
		pnum = json_integer_value(json_object_get(port, "number"));
	if (mapped)
		pnum = mapped;
	for (uint32_t i = 0; i < c->n; i++)
		if (c->b[i].ip == ip && c->b[i].port == htons((uint16_t)pnum))
			return;
	if (c->n >= BM_M_MAX_BACKENDS) {
		if (c->n == BM_M_MAX_BACKENDS && log)
			fprintf(log, "model: %s: more than %d backends, extra ones ignored\n",
				c->name, BM_M_MAX_BACKENDS);
		return;
	}
	if (c->n == c->cap) {
		uint32_t cap = c->cap ? c->cap * 2 : 8;
		struct bm_m_backend *b = realloc(c->b, cap * sizeof(*b));

		if (!b) {
			if (log)
				fprintf(log, "model: %s: out of memory, backend ignored\n", c->name);
			return;
		}
		c->b = b;
		c->cap = cap;
	}
	c->b[c->n].ip = ip;
	c->b[c->n].port = htons((uint16_t)pnum);
	/* Auto mTLS: mesh workloads get mTLS unless the DR says DISABLE; an
	 * explicit ISTIO_MUTUAL wins even for a workload we cannot tell is
	 * in the mesh (the handshake then fails, as in Istio). */
	c->b[c->n].mesh = c->tls == 1 ||
			  (c->tls != 0 && !strcmp(jstr(json_object_get(ep, "labels"), BM_DATAPLANE_LABEL),
						   BM_DATAPLANE_MESH));
	c->n++;
}

/* The previous model's cluster built from the same inputs, if any. */
static struct bm_m_cluster *reuse(const struct bm_m_service *prev, const struct bm_m_ckey *k)
{
	for (uint32_t d = 0; prev && d < prev->n_dests; d++) {
		struct bm_m_cluster *c = prev->d[d].c;

		if (c->key.ok && c->key.dest == k->dest && c->key.self == k->self &&
		    c->key.self_port == k->self_port && c->key.target == k->target &&
		    c->key.dr == k->dr && c->key.we == k->we && !strcmp(c->key.rule_ns, k->rule_ns)) {
			c->refs++;
			return c;
		}
	}
	return NULL;
}

/* dest NULL: the service itself (no route), host self_host. */
static struct bm_m_cluster *build_cluster(const struct model_index *ix,
					  const struct bm_m_registry *ses, const struct bm_m_registry *wes,
					  const struct bm_m_registry *drs, const struct bm_m_res *self,
					  const json_t *self_port, const json_t *dest,
					  const char *self_host, const char *rule_ns,
					  const struct bm_m_service *prev, struct bm_model *m, FILE *log)
{
	char fqdn[256];
	const char *subset = jstr(dest, "subset");
	json_int_t want = json_integer_value(json_object_get(json_object_get(dest, "port"), "number"));
	const struct bm_m_res *target, *dr = NULL;
	const json_t *port, *sub = NULL, *sub_labels = NULL;
	struct bm_m_ckey key = { .dest = dest, .self = self->obj, .self_port = self_port };
	struct bm_m_cluster *c;
	unsigned warnings = m->warnings;
	size_t i;
	json_t *ep;

	bm_fqdn(dest ? jstr(dest, "host") : self_host, rule_ns, fqdn, sizeof(fqdn));
	target = bm_ix_find_se(ix, ses, fqdn);
	port = target ? dest_port(target, self, self_port, want) : NULL;
	if (target && port) {
		dr = bm_ix_find_dr(ix, drs, fqdn, target->ns);
		key.target = target->obj;
		key.dr = dr ? dr->obj : NULL;
		if (json_object_get(target->spec, "workloadSelector"))
			bm_strmap_get(&ix->we, target->ns, &key.we);
		snprintf(key.rule_ns, sizeof(key.rule_ns), "%s", rule_ns);
		if ((c = reuse(prev, &key)))
			return c;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->refs = 1;
	snprintf(c->name, sizeof(c->name), "outbound|%lld|%s|%s",
		 (long long)(port ? json_integer_value(json_object_get(port, "number")) : want),
		 subset, fqdn);
	c->min_health = 50;
	c->tls = -1;
	if (!target || !port) {
		fprintf(log, "model: %s: no ServiceEntry%s for this destination; connections to it are refused\n",
			c->name, target ? " port" : "");
		m->warnings++;
		return c;
	}
	if (*subset) {
		sub = find_subset(dr, subset);
		if (!sub) {
			fprintf(log, "model: %s: subset \"%s\" is not defined by any DestinationRule; connections to it are refused\n",
				c->name, subset);
			m->warnings++;
			return c;
		}
		sub_labels = json_object_get(sub, "labels");
	}
	apply_policy(c, dr ? json_object_get(dr->spec, "trafficPolicy") : NULL,
		     sub ? json_object_get(sub, "trafficPolicy") : NULL);

	/* Endpoints: WorkloadEntries of the entry's namespace selected by its
	 * workloadSelector, and inline endpoints. */
	if (json_object_get(target->spec, "workloadSelector")) {
		const json_t *sel = json_object_get(json_object_get(target->spec, "workloadSelector"), "labels");

		for (i = 0; i < wes->n; i++)
			if (!strcmp(wes->r[i].ns, target->ns) &&
			    bm_labels_match(sel, json_object_get(wes->r[i].spec, "labels")))
				add_endpoint(c, wes->r[i].spec, port, sub_labels, log);
	}
	json_array_foreach(json_object_get(target->spec, "endpoints"), i, ep)
		add_endpoint(c, ep, port, sub_labels, log);
	/* A warning (here or in add_endpoint, at the backend limit) is logged
	 * on every build, as it always was: such a cluster is built anew. */
	key.ok = m->warnings == warnings && c->n < BM_M_MAX_BACKENDS;
	c->key = key;
	return c;
}

/* TCP routes: first rule whose match (port, destinationSubnets) fits. */
static const json_t *pick_tcp_rule(const json_t *tcp, uint32_t vip, json_int_t port)
{
	size_t i, j, k;
	json_t *rule, *mt, *sn;

	json_array_foreach(tcp, i, rule) {
		const json_t *matches = json_object_get(rule, "match");

		if (!json_array_size(matches))
			return rule;
		json_array_foreach(matches, j, mt) {
			json_int_t p = json_integer_value(json_object_get(mt, "port"));
			const json_t *subnets = json_object_get(mt, "destinationSubnets");
			int ok = !p || p == port;

			if (ok && json_array_size(subnets)) {
				ok = 0;
				json_array_foreach(subnets, k, sn)
					if (bm_cidr_contains(json_string_value(sn) ? json_string_value(sn) : "", vip))
						ok = 1;
			}
			if (ok)
				return rule;
		}
	}
	return NULL;
}

/* HTTP rules carry only weighted routes at L4: the first rule without a
 * match applies per connection. */
static const json_t *pick_http_rule(const json_t *http)
{
	size_t i;
	json_t *rule;

	json_array_foreach(http, i, rule)
		if (!json_array_size(json_object_get(rule, "match")))
			return rule;
	return NULL;
}

/* Same VIP:port, names, weights and cluster objects as prev. */
static int same_service(const struct bm_m_service *s, const struct bm_m_service *prev)
{
	if (!prev || s->vip != prev->vip || s->port != prev->port || s->n_dests != prev->n_dests ||
	    strcmp(s->host, prev->host) || strcmp(s->ns, prev->ns))
		return 0;
	for (uint32_t d = 0; d < s->n_dests; d++)
		if (s->d[d].weight != prev->d[d].weight || s->d[d].c != prev->d[d].c)
			return 0;
	return 1;
}

static int build_service(struct bm_m_service *s, const struct model_index *ix,
			 const struct bm_m_registry *ses,
			 const struct bm_m_registry *wes, const struct bm_m_registry *drs,
			 const struct bm_m_registry *vss, const struct bm_m_res *se,
			 const json_t *port, uint32_t vip, const struct bm_m_service *prev,
			 struct bm_model *m, FILE *log)
{
	json_int_t pnum = json_integer_value(json_object_get(port, "number"));
	const struct bm_m_res *vs = bm_ix_find_vs(ix, vss, se);
	const json_t *rule = NULL, *route = NULL;
	const char *rule_ns = se->ns, *h0;
	size_t i, n_nonzero = 0;
	json_t *d;

	memset(s, 0, sizeof(*s));
	s->vip = vip;
	s->port = htons((uint16_t)pnum);
	h0 = json_string_value(json_array_get(json_object_get(se->spec, "hosts"), 0));
	bm_fqdn(h0 ? h0 : "", se->ns, s->host, sizeof(s->host));
	copy_str(s->ns, sizeof(s->ns), se->ns);

	if (vs) {
		rule = pick_tcp_rule(json_object_get(vs->spec, "tcp"), vip, pnum);
		if (!rule)
			rule = pick_http_rule(json_object_get(vs->spec, "http"));
		if (rule) {
			route = json_object_get(rule, "route");
			rule_ns = vs->ns;
		}
	}
	if (!json_array_size(route)) {
		/* No route: the whole service, default policy of its DR (a
		 * destination without an object of its own: dest NULL). */
		s->d[0].weight = 1;
		s->d[0].c = build_cluster(ix, ses, wes, drs, se, port, NULL, s->host, se->ns, prev,
					  m, log);
		if (!s->d[0].c)
			return -ENOMEM;
		s->n_dests = 1;
		s->same = (uint8_t)same_service(s, prev);
		return 0;
	}

	json_array_foreach(route, i, d)
		if (json_integer_value(json_object_get(d, "weight")) > 0)
			n_nonzero++;
	json_array_foreach(route, i, d) {
		uint32_t w = (uint32_t)json_integer_value(json_object_get(d, "weight"));
		struct bm_m_cluster *c;

		if (json_array_size(route) == 1)
			w = 1; /* a single destination gets 100 % whatever its weight */
		else if (n_nonzero == 0)
			w = 1; /* defensive: validation refuses all-zero weights */
		else if (w == 0)
			continue;
		if (s->n_dests >= BM_MAX_DESTS) {
			fprintf(log, "model: %s:%lld: more than %d destinations, extra ones ignored\n",
				s->host, (long long)pnum, BM_MAX_DESTS);
			m->warnings++;
			break;
		}
		c = build_cluster(ix, ses, wes, drs, se, port, json_object_get(d, "destination"),
				  s->host, rule_ns, prev, m, log);
		if (!c)
			return -ENOMEM;
		s->d[s->n_dests].weight = w;
		s->d[s->n_dests].c = c;
		s->n_dests++;
	}
	s->same = (uint8_t)same_service(s, prev);
	return 0;
}

static int add_names(struct bm_model *m, const struct bm_m_res *se, uint32_t vip)
{
	size_t i;
	json_t *h;

	json_array_foreach(json_object_get(se->spec, "hosts"), i, h) {
		char buf[256];
		const char *fq = buf;
		struct bm_m_name *nn;

		if (se->fq && i < se->n_fq)
			fq = se->fq[i];
		else
			bm_fqdn(json_string_value(h) ? json_string_value(h) : "", se->ns, buf, sizeof(buf));
		/* Capacity doubles: the array is sized by powers of two. */
		if (!(m->n_names & (m->n_names - 1))) {
			nn = realloc(m->names, (m->n_names ? 2 * m->n_names : 1) * sizeof(*nn));
			if (!nn)
				return -ENOMEM;
			m->names = nn;
		}
		nn = &m->names[m->n_names++];
		nn->vip = vip;
		copy_str(nn->ns, sizeof(nn->ns), se->ns);
		copy_str(nn->name, sizeof(nn->name), fq);
	}
	return 0;
}

int bm_model_build(const json_t *resources, struct bm_model *m, FILE *log)
{
	return bm_model_build_inc(resources, NULL, m, log);
}

/* The previous model's service at vip:port (key), if any. */
static const struct bm_m_service *prev_service(const struct bm_model *prev, const char *key)
{
	uint64_t i;

	if (!prev || bm_strmap_get(&prev->by_key, key, &i) || !i || i > prev->n_svc)
		return NULL;
	return &prev->svc[i - 1];
}

int bm_model_build_inc(const json_t *resources, const struct bm_model *prev,
		       struct bm_model *m, FILE *log)
{
	struct bm_m_registry reg[4] = {}, ses, wes, drs, vss;
	struct model_index ix = {};
	struct bm_strmap *taken = &m->by_key; /* VIP:port already built: O(1) duplicate check */
	size_t cap_svc = 0;
	int err;

	memset(m, 0, sizeof(*m));
	err = rc_build(resources, prev ? prev->rc : NULL, &m->rc);
	if (!err)
		err = collect4(m->rc, reg);
	ses = reg[0];
	wes = reg[1];
	drs = reg[2];
	vss = reg[3];
	if (err ||
	    (err = bm_hix_build(&ix.se, &ses, "hosts", 0)) ||
	    (err = bm_hix_build(&ix.dr, &drs, "host", 1)) ||
	    (err = bm_hix_build(&ix.vs, &vss, "hosts", 1)) ||
	    (err = bm_we_hash_build(&ix.we, &wes)))
		goto out;

	for (size_t i = 0; i < ses.n; i++) {
		const struct bm_m_res *se = &ses.r[i];
		size_t j, k;
		json_t *addr, *port;

		json_array_foreach(json_object_get(se->spec, "addresses"), j, addr) {
			uint32_t vip;

			if (parse_ip(json_string_value(addr) ? json_string_value(addr) : "", &vip))
				continue;
			if ((err = add_names(m, se, vip)))
				goto out;
			json_array_foreach(json_object_get(se->spec, "ports"), k, port) {
				struct bm_m_service *ns;
				uint16_t pn = htons((uint16_t)json_integer_value(json_object_get(port, "number")));
				char key[16];

				snprintf(key, sizeof(key), "%08x:%04x", vip, pn);
				if (!bm_strmap_get(taken, key, NULL)) {
					fprintf(log, "model: ServiceEntry %s/%s: %s:%u is already taken by an older ServiceEntry; ignored\n",
						se->ns, se->name, json_string_value(addr), ntohs(pn));
					m->warnings++;
					continue;
				}
				if ((err = bm_strmap_set(taken, key, m->n_svc + 1)))
					goto out;
				if (m->n_svc == cap_svc) {
					cap_svc = cap_svc ? 2 * cap_svc : 64;
					ns = realloc(m->svc, cap_svc * sizeof(*ns));
					if (!ns) {
						err = -ENOMEM;
						goto out;
					}
					m->svc = ns;
				}
				err = build_service(&m->svc[m->n_svc], &ix, &ses, &wes, &drs, &vss, se, port,
						    vip, prev_service(prev, key), m, log);
				m->n_svc++;
				if (err)
					goto out;
			}
		}
	}
out:
	bm_hix_free(&ix.se);
	bm_hix_free(&ix.dr);
	bm_hix_free(&ix.vs);
	bm_strmap_free(&ix.we);
	for (int k = 0; k < 4; k++)
		free(reg[k].r);
	if (err)
		bm_model_free(m);
	return err;
}

void bm_model_free(struct bm_model *m)
{
	for (size_t i = 0; i < m->n_svc; i++)
		for (uint32_t j = 0; j < m->svc[i].n_dests; j++)
			if (!--m->svc[i].d[j].c->refs)
				bm_m_cluster_free(m->svc[i].d[j].c);
	free(m->svc);
	free(m->names);
	bm_strmap_free(&m->by_key);
	rc_free(m->rc);
	memset(m, 0, sizeof(*m));
}

void bm_model_svc_value(const struct bm_m_service *s, uint32_t svc_id, uint32_t rev,
			struct bm_svc *out)
{
	uint32_t sum = 0;

	memset(out, 0, sizeof(*out));
	out->svc_id = svc_id;
	out->rev = rev;
	out->n_dests = s->n_dests;
	for (uint32_t i = 0; i < s->n_dests && i < BM_MAX_DESTS; i++) {
		sum += s->d[i].weight;
		out->cum_weight[i] = sum;
	}
	out->total_weight = sum;
}

/* ---- shared with the L7 compiler (agent/l7model.c) ---------------------- */

static uint64_t collect_stamp;

int bm_m_collect(const json_t *resources, const char *kind, struct bm_m_registry *reg)
{
	int err = collect(resources, kind, reg);

	reg->stamp = err ? 0 : ++collect_stamp;
	return err;
}

int bm_m_parse_ip(const char *s, uint32_t *ip)
{
	return parse_ip(s, ip);
}

const json_t *bm_m_find_subset(const struct bm_m_res *dr, const char *subset)
{
	return find_subset(dr, subset);
}

const json_t *bm_m_dest_port(const struct bm_m_res *target, const struct bm_m_res *self,
			     const json_t *self_port, json_int_t want)
{
	return dest_port(target, self, self_port, want);
}

void bm_m_cluster_free(struct bm_m_cluster *c)
{
	if (c) {
		free(c->b);
		free(c);
	}
}

const json_t *bm_m_pick_tcp_rule(const json_t *tcp, uint32_t vip, json_int_t port)
{
	return pick_tcp_rule(tcp, vip, port);
}

void bm_m_apply_policy(struct bm_m_cluster *c, const json_t *top, const json_t *sub)
{
	apply_policy(c, top, sub);
}

void bm_m_add_endpoints(struct bm_m_cluster *c, const struct bm_m_registry *wes,
			const struct bm_m_res *target, const json_t *port,
			const json_t *subset_labels, FILE *log)
{
	size_t i;
	json_t *ep;

	/* As build_cluster: WorkloadEntries of the entry's namespace selected
	 * by its workloadSelector, then inline endpoints. */
	if (json_object_get(target->spec, "workloadSelector")) {
		const json_t *sel = json_object_get(json_object_get(target->spec, "workloadSelector"), "labels");

		for (i = 0; i < wes->n; i++)
			if (!strcmp(wes->r[i].ns, target->ns) &&
			    bm_labels_match(sel, json_object_get(wes->r[i].spec, "labels")))
				add_endpoint(c, wes->r[i].spec, port, subset_labels, log);
	}
	json_array_foreach(json_object_get(target->spec, "endpoints"), i, ep)
		add_endpoint(c, ep, port, subset_labels, log);
}
