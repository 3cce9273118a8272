#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include "log.h"
#include "reconcile.h"

static void svc_name(uint32_t vip, uint16_t port, char *buf, size_t len)
{
	char ip[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &vip, ip, sizeof(ip));
	snprintf(buf, len, "%s:%u", ip, ntohs(port));
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	while (n--)
		h = (h ^ *b++) * 1099511628211ULL;
	return h;
}

int bm_reconcile_init(struct bm_reconciler *r, const struct bm_maps *fd, const char *ids_path)
{
	struct bm_svc_key key, next;
	struct bm_svc val;
	int err;

	memset(r, 0, sizeof(*r));
	r->fd = fd;
	err = bm_ids_init(&r->ids, ids_path);
	if (err)
		return err;
	for (int k = 0; k < BM_ID_POD; k++) {
		r->mark[k] = calloc(r->ids.limit[k], sizeof(*r->mark[k]));
		if (!r->mark[k]) {
			bm_reconcile_free(r);
			return -ENOMEM;
		}
	}
	r->uses = calloc(r->ids.limit[BM_ID_SVC], sizeof(*r->uses));
	if (!r->uses) {
		bm_reconcile_free(r);
		return -ENOMEM;
	}
	/* Adopt what a previous meshd left live: its revisions are the base for
	 * ours, and its services are removed if the store no longer has them. */
	for (int e = bpf_map_get_next_key(fd->svc, NULL, &next); !e;
	     e = bpf_map_get_next_key(fd->svc, &key, &next)) {
		char name[64];

		key = next;
		if (bpf_map_lookup_elem(fd->svc, &key, &val))
			continue;
		svc_name(key.vip, key.port, name, sizeof(name));
		bm_strmap_set(&r->live, name, val.rev | ((uint64_t)val.n_dests << 32));
	}
	r->sweep_due_ms = 1; /* sweep stray revisions once, after the first apply */
	return 0;
}

void bm_reconcile_free(struct bm_reconciler *r)
{
	for (int k = 0; k < BM_ID_POD; k++)
		free(r->mark[k]);
	for (uint32_t i = 0; r->uses && i < r->ids.limit[BM_ID_SVC]; i++)
		free(r->uses[i].ids);
	free(r->uses);
	bm_ids_free(&r->ids);
	bm_strmap_free(&r->applied);
	bm_strmap_free(&r->live);
	free(r->gc);
	memset(r, 0, sizeof(*r));
}

static int retire(struct bm_reconciler *r, uint32_t svc_id, uint32_t rev, uint32_t n, uint64_t due)
{
	if (r->n_gc == r->cap_gc) {
		size_t nc = r->cap_gc ? r->cap_gc * 2 : 64;
		struct bm_gc_entry *g = realloc(r->gc, nc * sizeof(*g));

		if (!g)
			return -ENOMEM;
		r->gc = g;
		r->cap_gc = nc;
	}
	r->gc[r->n_gc++] = (struct bm_gc_entry){ svc_id, rev, n, due };
	return 0;
}

/* This apply uses id (of kind k): it is not released. */
static void mark_used(struct bm_reconciler *r, int k, uint32_t id)
{
	if (id < r->ids.limit[k] && r->mark[k][id] != r->epoch) {
		r->mark[k][id] = r->epoch;
		r->n_mark[k]++;
	}
}

/*
 * A cluster_v1 entry holds BM_MAX_BACKENDS backends. A larger cluster is
 * spread over several entries (chunks) of the service's BM_MAX_DESTS
 * destinations: backend i goes to chunk i % n_chunks, so ejections and
 * zones spread evenly; every chunk carries the cluster's id (one
 * maxConnections budget, one round-robin cursor) and its place among the
 * chunks (BM_CLUSTER_CHUNK_AT), which makes connect4 try the other chunks
 * rather than panic in one whose backends happen to be ejected. The svc
 * value weighs each chunk by its share of the destination's backends.
 */
struct chunk_plan {
	uint32_t n_k;                   /* kernel destinations */
	uint8_t n_chunks[BM_MAX_DESTS]; /* per model destination */
	uint8_t d_of[BM_MAX_DESTS];     /* kernel destination -> model destination */
	uint8_t j_of[BM_MAX_DESTS];     /* kernel destination -> chunk index */
};

static uint32_t div_up(uint32_t a, uint32_t b)
{
	return (a + b - 1) / b;
}

/* Chunks per destination; when they do not all fit, the largest give up
 * chunks first (their extra backends are left out, with a log line). */
static void plan_chunks(const struct bm_m_service *s, struct chunk_plan *p)
{
	uint32_t total = 0, n = s->n_dests < BM_MAX_DESTS ? s->n_dests : BM_MAX_DESTS;

	memset(p, 0, sizeof(*p));
	for (uint32_t d = 0; d < n; d++) {
		uint32_t k = div_up(s->d[d].c->n, BM_MAX_BACKENDS);

		p->n_chunks[d] = (uint8_t)(k ? (k < BM_MAX_DESTS ? k : BM_MAX_DESTS) : 1);
		total += p->n_chunks[d];
	}
	while (total > BM_MAX_DESTS) {
		uint32_t big = 0;

		for (uint32_t d = 1; d < n; d++)
			if (p->n_chunks[d] > p->n_chunks[big])
				big = d;
		p->n_chunks[big]--;
		total--;
	}
	for (uint32_t d = 0; d < n; d++) {
		uint32_t kept = p->n_chunks[d] * BM_MAX_BACKENDS;

		if (s->d[d].c->n > kept)
			bm_log("reconcile: %s: %u backends, the kernel path uses %u (at most %u per "
			       "service port over all its destinations)", s->d[d].c->name, s->d[d].c->n,
			       kept, BM_MAX_DESTS * BM_MAX_BACKENDS);
		for (uint32_t j = 0; j < p->n_chunks[d]; j++) {
			p->d_of[p->n_k] = (uint8_t)d;
			p->j_of[p->n_k] = (uint8_t)j;
			p->n_k++;
		}
	}
}

/* Fill the cluster value of chunk j of n_chunks; ids are allocated for the
 * cluster and the chunk's backends. */
static int cluster_value(struct bm_reconciler *r, const struct bm_m_cluster *mc, int l7,
			 uint32_t j, uint32_t n_chunks, struct bm_cluster *out)
{
	uint32_t cid, n = 0;
	int err;

	memset(out, 0, sizeof(*out));
	err = bm_ids_get(&r->ids, BM_ID_CLUSTER, mc->name, &cid);
	if (err)
		return err;
	mark_used(r, BM_ID_CLUSTER, cid);
	out->cluster_id = cid;
	out->max_conns = mc->max_conns;
	out->lb = mc->lb;
	out->min_health = mc->min_health;
	out->flags = (r->mesh && l7 ? BM_CLUSTER_L7 : 0) | (n_chunks > 1 ? BM_CLUSTER_CHUNK_AT(j, n_chunks) : 0);
	for (uint32_t i = j; i < mc->n && n < BM_MAX_BACKENDS; i += n_chunks) {
		char name[64];
		uint32_t bid;

		svc_name(mc->b[i].ip, mc->b[i].port, name, sizeof(name));
		err = bm_ids_get(&r->ids, BM_ID_BACKEND, name, &bid);
		if (err)
			return err;
		mark_used(r, BM_ID_BACKEND, bid);
		out->backends[n].id = bid;
		out->backends[n].ip = mc->b[i].ip;
		out->backends[n].port = mc->b[i].port;
		out->backends[n].flags = r->mesh && mc->b[i].mesh ? BM_BACKEND_MESH : 0;
		n++;
	}
	out->n_backends = (uint16_t)n;
	return 0;
}

/* The svc value of a chunked service: chunk k of destination d weighs
 * weight(d) x (its backends / d's backends in the kernel), in units of 2^-16
 * of the total. Without chunks it is the model's own value. */
static void chunked_svc_value(const struct bm_m_service *s, const struct chunk_plan *p,
			      const struct bm_cluster *cl, uint32_t svc_id, struct bm_svc *out)
{
	uint32_t used[BM_MAX_DESTS] = { 0 }, sum = 0;
	uint64_t wsum;

	bm_model_svc_value(s, svc_id, 0, out);
	if (p->n_k == s->n_dests)
		return;
	wsum = out->total_weight;
	for (uint32_t k = 0; k < p->n_k; k++)
		used[p->d_of[k]] += cl[k].n_backends;
	out->n_dests = p->n_k;
	for (uint32_t k = 0; k < p->n_k; k++) {
		uint32_t d = p->d_of[k];
		uint64_t w = 0;

		if (wsum && used[d])
			w = ((uint64_t)s->d[d].weight * cl[k].n_backends * 65536 + wsum * used[d] / 2) /
			    (wsum * used[d]);
		if (!w && s->d[d].weight && cl[k].n_backends)
			w = 1;
		sum += (uint32_t)w;
		out->cum_weight[k] = sum;
	}
	out->total_weight = sum;
}

/* Remembers the ids service svc_id's clusters (cl[0..n)) use. */
static void record_uses(struct bm_reconciler *r, uint32_t svc_id, const struct bm_cluster *cl,
			uint32_t n, int l7)
{
	struct bm_svc_uses *u = &r->uses[svc_id];
	uint32_t total = n;
	uint32_t *ids;

	for (uint32_t d = 0; d < n; d++)
		total += cl[d].n_backends;
	ids = realloc(u->ids, (total ? total : 1) * sizeof(*ids));
	if (!ids) {
		u->synced = 0; /* hashed again next time */
		return;
	}
	u->ids = ids;
	u->n_cl = n;
	u->n = total;
	for (uint32_t d = 0; d < n; d++)
		*ids++ = cl[d].cluster_id;
	for (uint32_t d = 0; d < n; d++)
		for (uint32_t i = 0; i < cl[d].n_backends; i++)
			*ids++ = cl[d].backends[i].id;
	u->l7 = (uint8_t)l7;
	u->synced = r->epoch;
}

/* Unchanged in the model since the previous apply, which left it in sync:
 * nothing to compare, only its ids to keep. */
static int still_synced(struct bm_reconciler *r, const struct bm_m_service *s, uint32_t svc_id)
{
	struct bm_svc_uses *u = &r->uses[svc_id];

	if (!s->same || !u->synced || u->synced != r->epoch - 1 || u->l7 != s->l7)
		return 0;
	for (uint32_t i = 0; i < u->n; i++)
		mark_used(r, i < u->n_cl ? BM_ID_CLUSTER : BM_ID_BACKEND, u->ids[i]);
	u->synced = r->epoch;
	r->skipped++;
	return 1;
}

static int apply_service(struct bm_reconciler *r, const struct bm_m_service *s, uint64_t now_ms)
{
	struct bm_cluster *cl;
	struct chunk_plan plan;
	struct bm_svc_key key = { .vip = s->vip, .port = s->port, .proto = BM_PROTO_TCP };
	uint64_t h = 1469598103934665603ULL, old_h, old_live = 0;
	uint32_t svc_id, rev;
	struct bm_svc val;
	char name[64];
	int err, had_live;

	svc_name(s->vip, s->port, name, sizeof(name));
	err = bm_ids_get(&r->ids, BM_ID_SVC, name, &svc_id);
	if (err)
		return err;
	mark_used(r, BM_ID_SVC, svc_id);
	if (still_synced(r, s, svc_id))
		return 0;
	r->uses[svc_id].synced = 0;
	cl = calloc(BM_MAX_DESTS, sizeof(*cl));
	if (!cl)
		return -ENOMEM;
	plan_chunks(s, &plan);
	for (uint32_t k = 0; k < plan.n_k; k++) {
		uint32_t d = plan.d_of[k];

		err = cluster_value(r, s->d[d].c, s->l7, plan.j_of[k], plan.n_chunks[d], &cl[k]);
		if (err)
			goto out;
		h = fnv(h, &cl[k], sizeof(cl[k]));
	}
	chunked_svc_value(s, &plan, cl, svc_id, &val);
	h = fnv(h, &val, sizeof(val));

	had_live = !bm_strmap_get(&r->live, name, &old_live);
	if (had_live && !bm_strmap_get(&r->applied, name, &old_h) && old_h == h) {
		record_uses(r, svc_id, cl, plan.n_k, s->l7);
		goto out; /* unchanged */
	}

	rev = had_live ? (uint32_t)old_live + 1 : 1;
	for (uint32_t k = 0; k < plan.n_k; k++) {
		struct bm_cluster_key ck = { svc_id, rev, k };

		if (bpf_map_update_elem(r->fd->cluster, &ck, &cl[k], BPF_ANY)) {
			err = -errno;
			bm_log("write cluster %s rev %u: %s", s->d[plan.d_of[k]].c->name, rev, strerror(errno));
			goto out;
		}
	}
	val.rev = rev;
	if (bpf_map_update_elem(r->fd->svc, &key, &val, BPF_ANY)) {
		err = -errno;
		bm_log("write service %s: %s", name, strerror(errno));
		goto out;
	}
	if (had_live)
		retire(r, svc_id, (uint32_t)old_live, (uint32_t)(old_live >> 32), now_ms + BM_GC_GRACE_MS);
	bm_strmap_set(&r->live, name, rev | ((uint64_t)plan.n_k << 32));
	bm_strmap_set(&r->applied, name, h);
	record_uses(r, svc_id, cl, plan.n_k, s->l7);
	r->writes++;
out:
	free(cl);
	return err;
}

/* Stats rows of released services or backends would otherwise be inherited
 * by whoever gets the id next. */
static void drop_stats(struct bm_reconciler *r, const uint8_t *dead_svc, const uint8_t *dead_be)
{
	struct bm_stats_key k, next;
	int e = bpf_map_get_next_key(r->fd->stats, NULL, &next);

	while (!e) {
		k = next;
		e = bpf_map_get_next_key(r->fd->stats, &k, &next);
		if ((k.svc_id < BM_MAX_SERVICES && dead_svc[k.svc_id]) ||
		    (k.backend_id < BM_MAX_BACKEND_IDS && dead_be[k.backend_id]))
			bpf_map_delete_elem(r->fd->stats, &k);
	}
}

static int svc_retiring(const struct bm_reconciler *r, uint32_t svc_id)
{
	for (size_t i = 0; i < r->n_gc; i++)
		if (r->gc[i].svc_id == svc_id)
			return 1;
	return 0;
}

/* Release ids the model no longer uses (and that hold no live connection).
 * Pod ids are not the model's: mesh.c takes and releases them. */
static void release_unused(struct bm_reconciler *r)
{
	uint8_t *dead_svc = calloc(BM_MAX_SERVICES, 1), *dead_be = calloc(BM_MAX_BACKEND_IDS, 1);
	int any = 0;

	if (!dead_svc || !dead_be)
		goto out;
	for (int k = 0; k < BM_ID_POD; k++) {
		const char *key;
		uint64_t id;
		size_t it = 0;
		char **drop = NULL;
		size_t n_drop = 0;

		while (bm_strmap_next(&r->ids.map[k], &it, &key, &id)) {
			uint32_t idx = (uint32_t)id, active = 0;
			char **nd;

			if (idx < r->ids.limit[k] && r->mark[k][idx] == r->epoch)
				continue;
			if (k == BM_ID_SVC && svc_retiring(r, idx))
				continue; /* its old clusters are still queued for deletion */
			if (k == BM_ID_BACKEND) {
				bpf_map_lookup_elem(r->fd->backend_active, &idx, &active);
			} else if (k == BM_ID_CLUSTER) {
				struct bm_cluster_state cs = {};

				bpf_map_lookup_elem(r->fd->cluster_state, &idx, &cs);
				active = cs.active;
			}
			if (active)
				continue;
			nd = realloc(drop, (n_drop + 1) * sizeof(*drop));
			if (!nd)
				break;
			drop = nd;
			drop[n_drop++] = strdup(key);
			if (k == BM_ID_SVC)
				dead_svc[idx] = 1;
			if (k == BM_ID_BACKEND) {
				uint32_t zero = 0;

				dead_be[idx] = 1;
				bpf_map_update_elem(r->fd->backend_eject, &idx, &zero, BPF_ANY);
			}
			if (k == BM_ID_CLUSTER) {
				struct bm_cluster_state zero = {};

				bpf_map_update_elem(r->fd->cluster_state, &idx, &zero, BPF_ANY);
			}
			any = 1;
		}
		for (size_t i = 0; i < n_drop; i++) {
			if (drop[i])
				bm_ids_release(&r->ids, k, drop[i]);
			free(drop[i]);
		}
		free(drop);
	}
	if (any)
		drop_stats(r, dead_svc, dead_be);
out:
	free(dead_svc);
	free(dead_be);
}

int bm_reconcile_apply(struct bm_reconciler *r, const struct bm_model *m, uint64_t now_ms)
{
	const char *key;
	uint64_t v;
	char **gone = NULL;
	size_t n_gone = 0, it = 0;
	int err = 0;

	r->writes = 0;
	r->skipped = 0;
	if (++r->epoch == 0) { /* wrapped: no mark may look current */
		for (int k = 0; k < BM_ID_POD; k++)
			memset(r->mark[k], 0, r->ids.limit[k] * sizeof(*r->mark[k]));
		for (uint32_t i = 0; i < r->ids.limit[BM_ID_SVC]; i++)
			r->uses[i].synced = 0;
		r->epoch = 2;
	}
	for (int k = 0; k < BM_ID_POD; k++)
		r->n_mark[k] = 0;
	for (size_t i = 0; i < m->n_svc; i++) {
		int e = apply_service(r, &m->svc[i], now_ms);

		if (e && !err)
			err = e; /* keep going: one bad service must not block the rest */
	}
	/* Services that left the model: unpublish, then retire their clusters. */
	while (bm_strmap_next(&r->live, &it, &key, &v)) {
		uint32_t id;
		char **ng;

		if (!bm_ids_lookup(&r->ids, BM_ID_SVC, key, &id) && id < r->ids.limit[BM_ID_SVC] &&
		    r->mark[BM_ID_SVC][id] == r->epoch)
			continue;
		ng = realloc(gone, (n_gone + 1) * sizeof(*gone));
		if (!ng)
			break;
		gone = ng;
		gone[n_gone++] = strdup(key);
	}
	for (size_t i = 0; i < n_gone; i++) {
		struct bm_svc_key k = { .proto = BM_PROTO_TCP };
		char ip[INET_ADDRSTRLEN];
		unsigned port = 0;
		uint32_t svc_id;

		if (!gone[i])
			continue;
		if (sscanf(gone[i], "%15[0-9.]:%u", ip, &port) == 2 && inet_pton(AF_INET, ip, &k.vip) == 1) {
			k.port = htons((uint16_t)port);
			bpf_map_delete_elem(r->fd->svc, &k);
		}
		bm_strmap_get(&r->live, gone[i], &v);
		if (!bm_ids_lookup(&r->ids, BM_ID_SVC, gone[i], &svc_id)) {
			retire(r, svc_id, (uint32_t)v, (uint32_t)(v >> 32), now_ms + BM_GC_GRACE_MS);
			if (svc_id < r->ids.limit[BM_ID_SVC])
				r->uses[svc_id].synced = 0;
		}
		bm_strmap_del(&r->live, gone[i]);
		bm_strmap_del(&r->applied, gone[i]);
		r->writes++;
		free(gone[i]);
	}
	free(gone);

	release_unused(r);
	r->n_services = r->n_mark[BM_ID_SVC];
	r->n_clusters = r->n_mark[BM_ID_CLUSTER];
	r->n_backends = r->n_mark[BM_ID_BACKEND];
	if (r->sweep_due_ms == 1)
		r->sweep_due_ms = now_ms + BM_GC_GRACE_MS;
	bm_ids_save(&r->ids);
	return err;
}

/* After a restart: cluster entries of revisions that are not live and not
 * queued (a previous meshd died between writing and retiring them). */
static void sweep_strays(struct bm_reconciler *r)
{
	struct bm_cluster_key k, next;
	int e = bpf_map_get_next_key(r->fd->cluster, NULL, &next);
	uint32_t *live_rev = calloc(BM_MAX_SERVICES, sizeof(*live_rev));
	const char *key;
	uint64_t v;
	size_t it = 0;

	if (!live_rev)
		return;
	while (bm_strmap_next(&r->live, &it, &key, &v)) {
		uint32_t id;

		if (!bm_ids_lookup(&r->ids, BM_ID_SVC, key, &id) && id < BM_MAX_SERVICES)
			live_rev[id] = (uint32_t)v;
	}
	while (!e) {
		k = next;
		e = bpf_map_get_next_key(r->fd->cluster, &k, &next);
		if (k.svc_id >= BM_MAX_SERVICES || live_rev[k.svc_id] != k.rev)
			bpf_map_delete_elem(r->fd->cluster, &k);
	}
	free(live_rev);
}

void bm_reconcile_gc(struct bm_reconciler *r, uint64_t now_ms)
{
	size_t kept = 0;

	for (size_t i = 0; i < r->n_gc; i++) {
		struct bm_gc_entry *g = &r->gc[i];

		if (g->due_ms > now_ms) {
			r->gc[kept++] = *g;
			continue;
		}
		for (uint32_t d = 0; d < g->n_dests; d++) {
			struct bm_cluster_key k = { g->svc_id, g->rev, d };

			bpf_map_delete_elem(r->fd->cluster, &k);
		}
	}
	r->n_gc = kept;
	if (r->sweep_due_ms > 1 && now_ms >= r->sweep_due_ms && r->n_gc == 0) {
		sweep_strays(r);
		r->sweep_due_ms = 0;
	}
}

int bm_reconcile_backend_id(const struct bm_reconciler *r, const char *addr, uint32_t *id)
{
	return bm_ids_lookup(&r->ids, BM_ID_BACKEND, addr, id);
}
