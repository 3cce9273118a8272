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
#include "resutil.h"
#include "strmap.h"

#define ROOT_NS "istio-system"

static const char *jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

void bm_fqdn(const char *host, const char *ns, char *out, size_t len)
{
	size_t i;

	if (strchr(host, '.') || !strcmp(host, "*"))
		snprintf(out, len, "%s", host);
	else
		snprintf(out, len, "%s.%s.svc.cluster.local", host, ns && *ns ? ns : "default");
	for (i = 0; out[i]; i++)
		out[i] = tolower((unsigned char)out[i]);
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

/* Does service entry se (namespace ns) have fqdn among its hosts? */
static int se_has_host(const struct bm_m_res *se, const char *fqdn)
{
	size_t i;
	json_t *h;
	char buf[256];

	json_array_foreach(json_object_get(se->spec, "hosts"), i, h) {
		bm_fqdn(json_string_value(h) ? json_string_value(h) : "", se->ns, buf, sizeof(buf));
		if (!strcmp(buf, fqdn))
			return 1;
	}
	return 0;
}

static const struct bm_m_res *find_se(const struct bm_m_registry *ses, const char *fqdn)
{
	for (size_t i = 0; i < ses->n; i++)
		if (se_has_host(&ses->r[i], fqdn))
			return &ses->r[i];
	return NULL;
}

/* DestinationRule lookup for a service host: the service's namespace first,
 * then the root namespace, then any other; an exact host beats a wildcard. */
static const struct bm_m_res *find_dr(const struct bm_m_registry *drs, const char *fqdn, const char *svc_ns)
{
	const struct bm_m_res *best = NULL;
	int best_rank = 1000;

	for (size_t i = 0; i < drs->n; i++) {
		const struct bm_m_res *d = &drs->r[i];
		char h[256];
		int rank;

		bm_fqdn(jstr(d->spec, "host"), d->ns, h, sizeof(h));
		if (!bm_host_matches(h, fqdn))
			continue;
		rank = !strcmp(d->ns, svc_ns) ? 0 : !strcmp(d->ns, ROOT_NS) ? 2 : 4;
		if (strcmp(h, fqdn))
			rank++; /* wildcard */
		if (rank < best_rank) {
			best = d;
			best_rank = rank;
		}
	}
	return best;
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

/* Host indexes for one bm_model_build(). Resolving every destination by
 * scanning all ServiceEntries, DestinationRules and VirtualServices (and
 * expanding each of their hosts again) made a rebuild O(services^2): 10,000
 * services took seconds per change. The indexes give the same answers as
 * find_se(), find_dr() and find_vs() above: exact hosts through a hash,
 * wildcard hosts (few) by scan, and the oldest resource (lowest index) wins. */
struct hix_entry {
	size_t res;      /* index in the registry */
	size_t next;     /* 1 + next entry of the same host, 0 = end */
};

struct hix_wild {
	size_t res;
	char host[256];  /* FQDN pattern, "*" or "*.suffix" */
};

struct host_index {
	struct bm_strmap head;   /* FQDN -> 1 + first entry */
	struct hix_entry *e;
	size_t n_e, cap_e;
	struct hix_wild *w;
	size_t n_w, cap_w;
};

static int hix_add(struct host_index *x, const char *fqdn, size_t res, int wild_apart)
{
	uint64_t head = 0;

	if (wild_apart && fqdn[0] == '*') {
		if (x->n_w == x->cap_w) {
			size_t cap = x->cap_w ? 2 * x->cap_w : 16;
			struct hix_wild *w = realloc(x->w, cap * sizeof(*w));

			if (!w)
				return -ENOMEM;
			x->w = w;
			x->cap_w = cap;
		}
		x->w[x->n_w].res = res;
		snprintf(x->w[x->n_w].host, sizeof(x->w[0].host), "%s", fqdn);
		x->n_w++;
		return 0;
	}
	if (x->n_e == x->cap_e) {
		size_t cap = x->cap_e ? 2 * x->cap_e : 256;
		struct hix_entry *e = realloc(x->e, cap * sizeof(*e));

		if (!e)
			return -ENOMEM;
		x->e = e;
		x->cap_e = cap;
	}
	bm_strmap_get(&x->head, fqdn, &head);
	x->e[x->n_e] = (struct hix_entry){ res, (size_t)head };
	x->n_e++;
	return bm_strmap_set(&x->head, fqdn, x->n_e);
}

static void hix_free(struct host_index *x)
{
	bm_strmap_free(&x->head);
	free(x->e);
	free(x->w);
	memset(x, 0, sizeof(*x));
}

/* Index the hosts of reg: field "hosts" (array) or "host" (string). */
static int hix_build(struct host_index *x, const struct bm_m_registry *reg, const char *field,
		     int wild_apart)
{
	char fq[256];
	size_t j;
	json_t *h;
	int err = 0;

	for (size_t i = 0; i < reg->n && !err; i++) {
		const json_t *v = json_object_get(reg->r[i].spec, field);

		if (json_is_array(v)) {
			json_array_foreach(v, j, h) {
				bm_fqdn(json_string_value(h) ? json_string_value(h) : "", reg->r[i].ns,
					fq, sizeof(fq));
				if ((err = hix_add(x, fq, i, wild_apart)))
					break;
			}
		} else {
			bm_fqdn(json_string_value(v) ? json_string_value(v) : "", reg->r[i].ns, fq, sizeof(fq));
			err = hix_add(x, fq, i, wild_apart);
		}
	}
	return err;
}

/* The lowest index among the exact entries of fqdn; SIZE_MAX if none. */
static size_t hix_first(const struct host_index *x, const char *fqdn)
{
	uint64_t e = 0;
	size_t best = SIZE_MAX;

	bm_strmap_get(&x->head, fqdn, &e);
	for (; e; e = x->e[e - 1].next)
		if (x->e[e - 1].res < best)
			best = x->e[e - 1].res;
	return best;
}

struct model_index {
	struct host_index se, dr, vs;
};

static const struct bm_m_res *ix_find_se(const struct model_index *ix,
					 const struct bm_m_registry *ses, const char *fqdn)
{
	size_t i = hix_first(&ix->se, fqdn);

	return i == SIZE_MAX ? NULL : &ses->r[i];
}

/* find_dr(): rank by namespace and exactness, then the oldest. */
static const struct bm_m_res *ix_find_dr(const struct model_index *ix,
					 const struct bm_m_registry *drs, const char *fqdn,
					 const char *svc_ns)
{
	size_t best = SIZE_MAX;
	int best_rank = 1000;
	uint64_t e = 0;

#define CONSIDER(idx, exact) do {							\
		const struct bm_m_res *d_ = &drs->r[(idx)];				\
		int r_ = !strcmp(d_->ns, svc_ns) ? 0 : !strcmp(d_->ns, ROOT_NS) ? 2 : 4;	\
											\
		r_ += !(exact);								\
		if (r_ < best_rank || (r_ == best_rank && (idx) < best)) {		\
			best = (idx);							\
			best_rank = r_;							\
		}									\
	} while (0)
	bm_strmap_get(&ix->dr.head, fqdn, &e);
	for (; e; e = ix->dr.e[e - 1].next)
		CONSIDER(ix->dr.e[e - 1].res, 1);
	for (size_t w = 0; w < ix->dr.n_w; w++)
		if (bm_host_matches(ix->dr.w[w].host, fqdn))
			CONSIDER(ix->dr.w[w].res, !strcmp(ix->dr.w[w].host, fqdn));
#undef CONSIDER
	return best == SIZE_MAX ? NULL : &drs->r[best];
}

static const struct bm_m_res *ix_find_vs(const struct model_index *ix,
					 const struct bm_m_registry *vss, const struct bm_m_res *se)
{
	size_t best = SIZE_MAX, k;
	json_t *sh;

	json_array_foreach(json_object_get(se->spec, "hosts"), k, sh) {
		char sfq[256];
		size_t i;

		bm_fqdn(json_string_value(sh) ? json_string_value(sh) : "", se->ns, sfq, sizeof(sfq));
		i = hix_first(&ix->vs, sfq);
		if (i < best)
			best = i;
		for (size_t w = 0; w < ix->vs.n_w; w++)
			if (ix->vs.w[w].res < best && bm_host_matches(ix->vs.w[w].host, sfq))
				best = ix->vs.w[w].res;
	}
	return best == SIZE_MAX ? NULL : &vss->r[best];
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
	if (c->n >= BM_MAX_BACKENDS) {
		if (c->n == BM_MAX_BACKENDS && log)
			fprintf(log, "model: %s: more than %d backends, extra ones ignored\n",
				c->name, BM_MAX_BACKENDS);
		return;
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

static struct bm_m_cluster *build_cluster(const struct model_index *ix,
					  const struct bm_m_registry *ses, const struct bm_m_registry *wes,
					  const struct bm_m_registry *drs, const struct bm_m_res *self,
					  const json_t *self_port, const json_t *dest,
					  const char *rule_ns, struct bm_model *m, FILE *log)
{
	char fqdn[256];
	const char *subset = jstr(dest, "subset");
	json_int_t want = json_integer_value(json_object_get(json_object_get(dest, "port"), "number"));
	const struct bm_m_res *target, *dr;
	const json_t *port, *sub = NULL, *sub_labels = NULL;
	struct bm_m_cluster *c = calloc(1, sizeof(*c));
	size_t i;
	json_t *ep;

	if (!c)
		return NULL;
	bm_fqdn(jstr(dest, "host"), rule_ns, fqdn, sizeof(fqdn));
	target = ix_find_se(ix, ses, fqdn);
	port = target ? dest_port(target, self, self_port, want) : NULL;
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
	dr = ix_find_dr(ix, drs, fqdn, target->ns);
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
	return c;
}

/* The first VirtualService (oldest) whose hosts include one of se's hosts. */
static const struct bm_m_res *find_vs(const struct bm_m_registry *vss, const struct bm_m_res *se)
{
	for (size_t i = 0; i < vss->n; i++) {
		size_t j;
		json_t *h;

		json_array_foreach(json_object_get(vss->r[i].spec, "hosts"), j, h) {
			char fq[256];
			size_t k;
			json_t *sh;

			bm_fqdn(json_string_value(h) ? json_string_value(h) : "", vss->r[i].ns, fq, sizeof(fq));
			json_array_foreach(json_object_get(se->spec, "hosts"), k, sh) {
				char sfq[256];

				bm_fqdn(json_string_value(sh) ? json_string_value(sh) : "", se->ns, sfq, sizeof(sfq));
				if (bm_host_matches(fq, sfq))
					return &vss->r[i];
			}
		}
	}
	return NULL;
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

static int build_service(struct bm_m_service *s, const struct model_index *ix,
			 const struct bm_m_registry *ses,
			 const struct bm_m_registry *wes, const struct bm_m_registry *drs,
			 const struct bm_m_registry *vss, const struct bm_m_res *se,
			 const json_t *port, uint32_t vip, struct bm_model *m, FILE *log)
{
	json_int_t pnum = json_integer_value(json_object_get(port, "number"));
	const struct bm_m_res *vs = ix_find_vs(ix, vss, se);
	const json_t *rule = NULL, *route = NULL;
	json_t *self_dest = NULL;
	const char *rule_ns = se->ns, *h0;
	size_t i, n_nonzero = 0;
	json_t *d;

	memset(s, 0, sizeof(*s));
	s->vip = vip;
	s->port = htons((uint16_t)pnum);
	h0 = json_string_value(json_array_get(json_object_get(se->spec, "hosts"), 0));
	bm_fqdn(h0 ? h0 : "", se->ns, s->host, sizeof(s->host));
	snprintf(s->ns, sizeof(s->ns), "%s", se->ns);

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
		/* No route: the whole service, default policy of its DR. */
		self_dest = json_pack("[{s:{s:s}}]", "destination", "host", s->host);
		if (!self_dest)
			return -ENOMEM;
		route = self_dest;
		rule_ns = se->ns;
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
				  rule_ns, m, log);
		if (!c) {
			json_decref(self_dest);
			return -ENOMEM;
		}
		s->d[s->n_dests].weight = w;
		s->d[s->n_dests].c = c;
		s->n_dests++;
	}
	json_decref(self_dest);
	return 0;
}

static int add_names(struct bm_model *m, const struct bm_m_res *se, uint32_t vip)
{
	size_t i;
	json_t *h;

	json_array_foreach(json_object_get(se->spec, "hosts"), i, h) {
		char fq[256];
		struct bm_m_name *nn;

		bm_fqdn(json_string_value(h) ? json_string_value(h) : "", se->ns, fq, sizeof(fq));
		nn = realloc(m->names, (m->n_names + 1) * sizeof(*nn));
		if (!nn)
			return -ENOMEM;
		m->names = nn;
		nn = &m->names[m->n_names++];
		nn->vip = vip;
		snprintf(nn->ns, sizeof(nn->ns), "%s", se->ns);
		snprintf(nn->name, sizeof(nn->name), "%s", fq);
	}
	return 0;
}

int bm_model_build(const json_t *resources, struct bm_model *m, FILE *log)
{
	struct bm_m_registry ses = {}, wes = {}, drs = {}, vss = {};
	struct model_index ix = {};
	struct bm_strmap taken = {}; /* VIP:port already built: O(1) duplicate check */
	int err;

	memset(m, 0, sizeof(*m));
	if ((err = collect(resources, "ServiceEntry", &ses)) ||
	    (err = collect(resources, "WorkloadEntry", &wes)) ||
	    (err = collect(resources, "DestinationRule", &drs)) ||
	    (err = collect(resources, "VirtualService", &vss)) ||
	    (err = hix_build(&ix.se, &ses, "hosts", 0)) ||
	    (err = hix_build(&ix.dr, &drs, "host", 1)) ||
	    (err = hix_build(&ix.vs, &vss, "hosts", 1)))
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
				if (!bm_strmap_get(&taken, key, NULL)) {
					fprintf(log, "model: ServiceEntry %s/%s: %s:%u is already taken by an older ServiceEntry; ignored\n",
						se->ns, se->name, json_string_value(addr), ntohs(pn));
					m->warnings++;
					continue;
				}
				if ((err = bm_strmap_set(&taken, key, 1)))
					goto out;
				ns = realloc(m->svc, (m->n_svc + 1) * sizeof(*ns));
				if (!ns) {
					err = -ENOMEM;
					goto out;
				}
				m->svc = ns;
				err = build_service(&m->svc[m->n_svc], &ix, &ses, &wes, &drs, &vss, se, port,
						    vip, m, log);
				m->n_svc++;
				if (err)
					goto out;
			}
		}
	}
out:
	hix_free(&ix.se);
	hix_free(&ix.dr);
	hix_free(&ix.vs);
	bm_strmap_free(&taken);
	free(ses.r);
	free(wes.r);
	free(drs.r);
	free(vss.r);
	if (err)
		bm_model_free(m);
	return err;
}

void bm_model_free(struct bm_model *m)
{
	for (size_t i = 0; i < m->n_svc; i++)
		for (uint32_t j = 0; j < m->svc[i].n_dests; j++)
			free(m->svc[i].d[j].c);
	free(m->svc);
	free(m->names);
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

int bm_m_collect(const json_t *resources, const char *kind, struct bm_m_registry *reg)
{
	return collect(resources, kind, reg);
}

int bm_m_parse_ip(const char *s, uint32_t *ip)
{
	return parse_ip(s, ip);
}

const struct bm_m_res *bm_m_find_se(const struct bm_m_registry *ses, const char *fqdn)
{
	return find_se(ses, fqdn);
}

const struct bm_m_res *bm_m_find_dr(const struct bm_m_registry *drs, const char *fqdn,
				    const char *svc_ns)
{
	return find_dr(drs, fqdn, svc_ns);
}

const json_t *bm_m_find_subset(const struct bm_m_res *dr, const char *subset)
{
	return find_subset(dr, subset);
}

const struct bm_m_res *bm_m_find_vs(const struct bm_m_registry *vss, const struct bm_m_res *se)
{
	return find_vs(vss, se);
}

const json_t *bm_m_dest_port(const struct bm_m_res *target, const struct bm_m_res *self,
			     const json_t *self_port, json_int_t want)
{
	return dest_port(target, self, self_port, want);
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
