/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Load-balancing decisions shared by connect4 and the unit tests: the same
 * code runs in the kernel and in user space.
 *
 * The includer defines, before including this file:
 *   static __always_inline __u32 bm_lb_ejected(void *env, __u32 backend_id);
 *   static __always_inline __u32 bm_lb_active(void *env, __u32 backend_id);
 *   static __always_inline const struct bm_cluster *bm_lb_chunk(void *cenv, __u32 dest);
 *     (the cluster entry of destination dest of the service being balanced)
 */
#ifndef BM_LB_H
#define BM_LB_H

#include "bpfmesh/abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Weighted pick among a service's destinations. rnd is uniform 32-bit. */
static __always_inline int bm_pick_dest(const struct bm_svc *svc, __u32 rnd)
{
	__u32 x;

	if (svc->total_weight == 0 || svc->n_dests == 0)
		return -1;
	x = rnd % svc->total_weight;
	for (int i = 0; i < BM_MAX_DESTS; i++) {
		if ((__u32)i >= svc->n_dests)
			break;
		if (x < svc->cum_weight[i])
			return i;
	}
	return -1;
}

/*
 * Scans over a cluster's backends run as bpf_loop() callbacks in the kernel:
 * the verifier checks a callback once instead of walking every iteration's
 * branches (an open-coded 64-way scan with per-backend lookups exceeds its
 * budget). In user space the same callbacks run in a plain loop.
 */
#ifdef __BPF__
#define BM_LOOP(n, fn, ctx) bpf_loop((n), (fn), (ctx), 0)
#else
#define BM_LOOP(n, fn, ctx)                                                    \
	do {                                                                   \
		for (__u32 _i = 0; _i < (__u32)(n); _i++)                      \
			if ((fn)(_i, (ctx)))                                   \
				break;                                         \
	} while (0)
#endif

struct bm_pick {
	const struct bm_cluster *c;
	void *env;
	__u64 skip;          /* bit i: backend i is not eligible */
	__u32 n, healthy;
	__u32 nth;           /* bm_scan_nth: which eligible backend */
	__u32 start;         /* bm_scan_least: random starting offset */
	__u32 best_active;
	int best;            /* result index, -1 = none */
};

static long bm_scan_health(__u32 i, void *ctx)
{
	struct bm_pick *p = ctx;

	if (i >= BM_MAX_BACKENDS)
		return 1;
	if (bm_lb_ejected(p->env, p->c->backends[i].id))
		p->skip |= 1ULL << i;
	else
		p->healthy++;
	return 0;
}

static long bm_scan_nth(__u32 i, void *ctx)
{
	struct bm_pick *p = ctx;

	if (i >= BM_MAX_BACKENDS)
		return 1;
	if (p->skip & (1ULL << i))
		return 0;
	if (p->nth == 0) {
		p->best = (int)i;
		return 1;
	}
	p->nth--;
	return 0;
}

/* LEAST_REQUEST: fewest active connections; the scan starts at a random
 * offset so ties spread instead of piling onto the first backend. */
static long bm_scan_least(__u32 k, void *ctx)
{
	struct bm_pick *p = ctx;
	__u32 i = p->start + k, a;

	if (i >= p->n)
		i -= p->n;
	if (i >= BM_MAX_BACKENDS)
		return 1;
	if (p->skip & (1ULL << i))
		return 0;
	a = bm_lb_active(p->env, p->c->backends[i].id);
	if (p->best < 0 || a < p->best_active) {
		p->best = (int)i;
		p->best_active = a;
	}
	return 0;
}

/*
 * Pick a backend index in the cluster, or -1 when none may be used.
 * Ejected backends are skipped unless the healthy share is below the panic
 * threshold (min_health, Envoy's healthy_panic_threshold): then every backend
 * is eligible, as Envoy does. *panic reports that case.
 */
static __always_inline int bm_pick_backend(const struct bm_cluster *c, void *env,
					   __u32 rnd, __u32 rr, int *panic)
{
	struct bm_pick p = { .c = c, .env = env, .best = -1 };

	*panic = 0;
	p.n = c->n_backends;
	if (p.n == 0)
		return -1;
	if (p.n > BM_MAX_BACKENDS)
		p.n = BM_MAX_BACKENDS;
	BM_LOOP(p.n, bm_scan_health, &p);
	if (p.healthy * 100 < (__u32)c->min_health * p.n) {
		*panic = 1;
		p.skip = 0;
		p.healthy = p.n;
	}
	if (p.healthy == 0)
		return -1;

	switch (c->lb) {
	case BM_LB_ROUND_ROBIN:
		p.nth = rr % p.healthy;
		BM_LOOP(p.n, bm_scan_nth, &p);
		return p.best;
	case BM_LB_RANDOM:
		p.nth = rnd % p.healthy;
		BM_LOOP(p.n, bm_scan_nth, &p);
		return p.best;
	default:
		p.start = rnd % p.n;
		BM_LOOP(p.n, bm_scan_least, &p);
		return p.best;
	}
}

/*
 * bm_pick_backend for destination dest's entry *cp. An entry that is one
 * chunk of a cluster spread over several (BM_CLUSTER_CHUNK: same cluster
 * id, contiguous destinations) and can offer only panic or nothing hands
 * the pick to the cluster's other chunks, tried from a random one on so
 * that they share its load: panic is the whole cluster's state. Only when
 * none has a healthy backend does this chunk's answer stand. *cp is set to
 * the entry picked from.
 */
static __always_inline int bm_pick_backend_chunked(const struct bm_cluster **cp, __u32 dest,
						   void *env, void *cenv, __u32 rnd, __u32 rr,
						   int *panic)
{
	const struct bm_cluster *c = *cp;
	int idx = bm_pick_backend(c, env, rnd, rr, panic);
	__u32 j, n, first, off;

	if (!(c->flags & BM_CLUSTER_CHUNK) || (idx >= 0 && !*panic))
		return idx;
	j = BM_CLUSTER_CHUNK_IDX(c->flags);
	n = BM_CLUSTER_CHUNK_N(c->flags);
	first = dest - j;
	rnd = rnd * 2654435761u + 1; /* fresh bits for the other chunks */
	off = n > 1 ? (rnd >> 8) % (n - 1) : 0;
	for (__u32 step = 0; step + 1 < BM_MAX_DESTS && step + 1 < n; step++) {
		/* the others: j + 1 .. j + n - 1 (mod n), from off on */
		const struct bm_cluster *o = bm_lb_chunk(cenv, first + (j + 1 + (off + step) % (n - 1)) % n);
		int oidx, opanic;

		if (!o || o->cluster_id != c->cluster_id)
			continue;
		oidx = bm_pick_backend(o, env, rnd + step, rr, &opanic);
		if (oidx >= 0 && !opanic) {
			*cp = o;
			*panic = 0;
			return oidx;
		}
	}
	return idx;
}

#endif
