/*
 * Host lookups for the model and the L7 compiler: see modelix.h. The scans
 * (find_se, find_dr, find_vs) define the answers; the indexes give the same
 * ones in O(1) per exact host (tests/unit/test_reload.c compares them).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "modelix.h"

#define ROOT_NS "istio-system"

static const char *jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
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

/* Host indexes for one bm_model_build(). Resolving every destination by
 * scanning all ServiceEntries, DestinationRules and VirtualServices (and
 * expanding each of their hosts again) made a rebuild O(services^2): 10,000
 * services took seconds per change. The indexes give the same answers as
 * find_se(), find_dr() and find_vs() above: exact hosts through a hash,
 * wildcard hosts (few) by scan, and the oldest resource (lowest index) wins. */
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

void bm_hix_free(struct host_index *x)
{
	bm_strmap_free(&x->head);
	free(x->e);
	free(x->w);
	memset(x, 0, sizeof(*x));
}

/* Index the hosts of reg: field "hosts" (array) or "host" (string). */
int bm_hix_build(struct host_index *x, const struct bm_m_registry *reg, const char *field,
		     int wild_apart)
{
	char fq[256];
	size_t j;
	json_t *h;
	int err = 0;

	for (size_t i = 0; i < reg->n && !err; i++) {
		const json_t *v;

		if (reg->r[i].fq) { /* expanded already (model.c) */
			for (j = 0; j < reg->r[i].n_fq && !err; j++)
				err = hix_add(x, reg->r[i].fq[j], i, wild_apart);
			continue;
		}
		v = json_object_get(reg->r[i].spec, field);
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

/* Identity hash of each namespace's WorkloadEntries, in registry order: a
 * cluster that selects WorkloadEntries is reusable only while the set of its
 * namespace is the same objects. */
int bm_we_hash_build(struct bm_strmap *x, const struct bm_m_registry *wes)
{
	for (size_t i = 0; i < wes->n; i++) {
		uint64_t h = 1469598103934665603ULL;
		uintptr_t p = (uintptr_t)wes->r[i].obj;
		int err;

		bm_strmap_get(x, wes->r[i].ns, &h);
		for (size_t b = 0; b < sizeof(p); b++, p >>= 8)
			h = (h ^ (p & 0xff)) * 1099511628211ULL;
		if ((err = bm_strmap_set(x, wes->r[i].ns, h)))
			return err;
	}
	return 0;
}

const struct bm_m_res *bm_ix_find_se(const struct model_index *ix,
					 const struct bm_m_registry *ses, const char *fqdn)
{
	size_t i = hix_first(&ix->se, fqdn);

	return i == SIZE_MAX ? NULL : &ses->r[i];
}

/* find_dr(): rank by namespace and exactness, then the oldest. */
const struct bm_m_res *bm_ix_find_dr(const struct model_index *ix,
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

const struct bm_m_res *bm_ix_find_vs(const struct model_index *ix,
					 const struct bm_m_registry *vss, const struct bm_m_res *se)
{
	size_t best = SIZE_MAX, k;
	json_t *sh;

	json_array_foreach(json_object_get(se->spec, "hosts"), k, sh) {
		char buf[256];
		const char *sfq = buf;
		size_t i;

		if (se->fq && k < se->n_fq)
			sfq = se->fq[k];
		else
			bm_fqdn(json_string_value(sh) ? json_string_value(sh) : "", se->ns, buf, sizeof(buf));
		i = hix_first(&ix->vs, sfq);
		if (i < best)
			best = i;
		for (size_t w = 0; w < ix->vs.n_w; w++)
			if (ix->vs.w[w].res < best && bm_host_matches(ix->vs.w[w].host, sfq))
				best = ix->vs.w[w].res;
	}
	return best == SIZE_MAX ? NULL : &vss->r[best];
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


/* The L7 compiler's lookups (agent/l7model.c) scanned every resource: at
 * 10,000 services one compile took seconds. Each finder keeps an index of
 * the last registry it was asked about, rebuilt when a newer one comes. */
enum { LIX_SE, LIX_DR, LIX_VS, LIX_N };
static struct {
	uint64_t stamp;
	struct host_index ix;
} lix[LIX_N];

static const struct host_index *lazy_index(int which, const struct bm_m_registry *reg,
					   const char *field, int wild_apart)
{
	if (!reg->stamp)
		return NULL; /* not from bm_m_collect(): scan */
	if (lix[which].stamp != reg->stamp) {
		bm_hix_free(&lix[which].ix);
		lix[which].stamp = 0;
		if (bm_hix_build(&lix[which].ix, reg, field, wild_apart)) {
			bm_hix_free(&lix[which].ix);
			return NULL;
		}
		lix[which].stamp = reg->stamp;
	}
	return &lix[which].ix;
}

const struct bm_m_res *bm_m_find_se(const struct bm_m_registry *ses, const char *fqdn)
{
	const struct host_index *hx = lazy_index(LIX_SE, ses, "hosts", 0);
	struct model_index ix;

	if (!hx)
		return find_se(ses, fqdn);
	ix.se = *hx;
	return bm_ix_find_se(&ix, ses, fqdn);
}

const struct bm_m_res *bm_m_find_dr(const struct bm_m_registry *drs, const char *fqdn,
				    const char *svc_ns)
{
	const struct host_index *hx = lazy_index(LIX_DR, drs, "host", 1);
	struct model_index ix;

	if (!hx)
		return find_dr(drs, fqdn, svc_ns);
	ix.dr = *hx;
	return bm_ix_find_dr(&ix, drs, fqdn, svc_ns);
}

const struct bm_m_res *bm_m_find_vs(const struct bm_m_registry *vss, const struct bm_m_res *se)
{
	const struct host_index *hx = lazy_index(LIX_VS, vss, "hosts", 1);
	struct model_index ix;

	if (!hx)
		return find_vs(vss, se);
	ix.vs = *hx;
	return bm_ix_find_vs(&ix, vss, se);
}

