/* The kernel's selection logic (bpf/lib/lb.h), run in user space. */
#include <string.h>
#include "unit.h"
#include "bpfmesh/abi.h"

struct fake_env {
	__u32 ejected[BM_MAX_BACKENDS + 1];
	__u32 active[BM_MAX_BACKENDS + 1];
};

/* Backend ids in these tests are index + 1. */
static inline __u32 bm_lb_ejected(void *env, __u32 id)
{
	return ((struct fake_env *)env)->ejected[id];
}

static inline __u32 bm_lb_active(void *env, __u32 id)
{
	return ((struct fake_env *)env)->active[id];
}

/* The destinations of the service being balanced, for chunked clusters. */
struct fake_dests {
	struct bm_cluster c[4];
	__u32 n;
};

static inline const struct bm_cluster *bm_lb_chunk(void *cenv, __u32 dest)
{
	struct fake_dests *d = cenv;

	return dest < d->n ? &d->c[dest] : NULL;
}

#include "../../bpf/lib/lb.h"

static void make_cluster(struct bm_cluster *c, int n, int lb, int min_health)
{
	memset(c, 0, sizeof(*c));
	c->n_backends = (__u16)n;
	c->lb = (__u8)lb;
	c->min_health = (__u8)min_health;
	for (int i = 0; i < n; i++)
		c->backends[i].id = (__u32)i + 1;
}

static void test_dest_weights_exact(void)
{
	struct bm_svc s = { .n_dests = 2, .total_weight = 100, .cum_weight = { 90, 100 } };
	int count[2] = { 0, 0 };

	/* Over every residue the split is exactly the weights. */
	for (__u32 r = 0; r < 1000; r++)
		count[bm_pick_dest(&s, r)]++;
	CU_ASSERT_EQUAL(count[0], 900);
	CU_ASSERT_EQUAL(count[1], 100);
}

static void test_dest_relative_weights(void)
{
	/* weights 1:3 need not sum to 100 */
	struct bm_svc s = { .n_dests = 2, .total_weight = 4, .cum_weight = { 1, 4 } };
	int count[2] = { 0, 0 };

	for (__u32 r = 0; r < 400; r++)
		count[bm_pick_dest(&s, r)]++;
	CU_ASSERT_EQUAL(count[0], 100);
	CU_ASSERT_EQUAL(count[1], 300);
}

static void test_dest_empty(void)
{
	struct bm_svc s = { 0 };

	CU_ASSERT_EQUAL(bm_pick_dest(&s, 7), -1);
}

static void test_round_robin_exact(void)
{
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int count[3] = { 0 }, panic;

	make_cluster(&c, 3, BM_LB_ROUND_ROBIN, 0);
	for (__u32 rr = 0; rr < 300; rr++)
		count[bm_pick_backend(&c, &env, 12345, rr, &panic)]++;
	CU_ASSERT_EQUAL(count[0], 100);
	CU_ASSERT_EQUAL(count[1], 100);
	CU_ASSERT_EQUAL(count[2], 100);
	CU_ASSERT_EQUAL(panic, 0);
}

static void test_round_robin_skips_ejected(void)
{
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int count[3] = { 0 }, panic;

	make_cluster(&c, 3, BM_LB_ROUND_ROBIN, 0);
	env.ejected[2] = 1; /* backend index 1 */
	for (__u32 rr = 0; rr < 100; rr++)
		count[bm_pick_backend(&c, &env, 0, rr, &panic)]++;
	CU_ASSERT_EQUAL(count[0], 50);
	CU_ASSERT_EQUAL(count[1], 0);
	CU_ASSERT_EQUAL(count[2], 50);
}

static void test_random_uniform_over_residues(void)
{
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int count[4] = { 0 }, panic;

	make_cluster(&c, 4, BM_LB_RANDOM, 0);
	for (__u32 r = 0; r < 400; r++)
		count[bm_pick_backend(&c, &env, r, 0, &panic)]++;
	for (int i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(count[i], 100);
}

static void test_least_request_avoids_loaded(void)
{
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int panic;

	make_cluster(&c, 3, BM_LB_LEAST_REQUEST, 0);
	env.active[1] = 50; /* backend 0 holds 50 connections */
	for (__u32 r = 0; r < 300; r++)
		CU_ASSERT_NOT_EQUAL(bm_pick_backend(&c, &env, r, 0, &panic), 0);
	env.active[2] = 3;
	env.active[3] = 1;
	for (__u32 r = 0; r < 30; r++)
		CU_ASSERT_EQUAL(bm_pick_backend(&c, &env, r, 0, &panic), 2);
}

static void test_least_request_ties_spread(void)
{
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int count[3] = { 0 }, panic;

	make_cluster(&c, 3, BM_LB_LEAST_REQUEST, 0);
	for (__u32 r = 0; r < 300; r++)
		count[bm_pick_backend(&c, &env, r, 0, &panic)]++;
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(count[i], 100);
}

static void test_ejected_never_picked(void)
{
	static const int algs[] = { BM_LB_ROUND_ROBIN, BM_LB_RANDOM, BM_LB_LEAST_REQUEST };
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int panic;

	for (size_t a = 0; a < sizeof(algs) / sizeof(algs[0]); a++) {
		make_cluster(&c, 4, algs[a], 0);
		memset(&env, 0, sizeof(env));
		env.ejected[3] = 1; /* index 2 */
		for (__u32 r = 0; r < 200; r++)
			CU_ASSERT_NOT_EQUAL(bm_pick_backend(&c, &env, r * 7919, r, &panic), 2);
	}
}

static void test_panic_threshold(void)
{
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int count[3] = { 0 }, panic;

	/* 1 of 3 healthy = 33 % < 50 %: panic, every backend eligible. */
	make_cluster(&c, 3, BM_LB_ROUND_ROBIN, 50);
	env.ejected[1] = env.ejected[2] = 1;
	for (__u32 rr = 0; rr < 30; rr++)
		count[bm_pick_backend(&c, &env, 0, rr, &panic)]++;
	CU_ASSERT_EQUAL(panic, 1);
	CU_ASSERT_EQUAL(count[0], 10);
	CU_ASSERT_EQUAL(count[1], 10);
	CU_ASSERT_EQUAL(count[2], 10);

	/* 2 of 3 healthy = 66 % >= 50 %: no panic. */
	env.ejected[2] = 0;
	CU_ASSERT_EQUAL(bm_pick_backend(&c, &env, 0, 0, &panic), 1);
	CU_ASSERT_EQUAL(panic, 0);

	/* Threshold 0 disables panic: all ejected means no backend. */
	make_cluster(&c, 2, BM_LB_RANDOM, 0);
	memset(&env, 0, sizeof(env));
	env.ejected[1] = env.ejected[2] = 1;
	CU_ASSERT_EQUAL(bm_pick_backend(&c, &env, 5, 0, &panic), -1);
}

/* Cluster 7 spread over 3 chunks of 4 backends (ids 1..12, chunk k holds
 * 4k+1..4k+4), destinations 0..2; destination 3 is another cluster. */
static void make_chunks(struct fake_dests *d, int min_health)
{
	memset(d, 0, sizeof(*d));
	d->n = 4;
	for (__u32 k = 0; k < 4; k++) {
		make_cluster(&d->c[k], 4, BM_LB_RANDOM, min_health);
		d->c[k].cluster_id = k < 3 ? 7 : 8;
		d->c[k].flags = k < 3 ? BM_CLUSTER_CHUNK_AT(k, 3) : 0;
		for (int i = 0; i < 4; i++)
			d->c[k].backends[i].id = 4 * k + (__u32)i + 1;
	}
}

static void test_chunk_hands_over(void)
{
	struct fake_env env = { 0 };
	struct fake_dests d;
	const struct bm_cluster *c;
	int to[4] = { 0 }, panic, idx;

	/* Chunk 0 all ejected, 8 of 12 healthy (66 % >= 50 %): its picks go to
	 * chunks 1 and 2 alike, never to an ejected backend, never panic. */
	make_chunks(&d, 50);
	for (__u32 id = 1; id <= 4; id++)
		env.ejected[id] = 1;
	for (__u32 rnd = 0; rnd < 600; rnd++) {
		c = &d.c[0];
		idx = bm_pick_backend_chunked(&c, 0, &env, &d, rnd, 0, &panic);
		CU_ASSERT_FATAL(idx >= 0 && idx < 4);
		CU_ASSERT_EQUAL(panic, 0);
		CU_ASSERT_FALSE(env.ejected[c->backends[idx].id]);
		to[c - d.c]++;
	}
	CU_ASSERT_EQUAL(to[0], 0);
	CU_ASSERT_EQUAL(to[3], 0); /* another cluster's entry is never used */
	CU_ASSERT(to[1] >= 250 && to[1] <= 350);
	CU_ASSERT_EQUAL(to[1] + to[2], 600);

	/* Without a panic threshold an empty chunk hands over too. */
	make_chunks(&d, 0);
	c = &d.c[2];
	env.ejected[1] = env.ejected[2] = env.ejected[3] = env.ejected[4] = 0;
	for (__u32 id = 9; id <= 12; id++)
		env.ejected[id] = 1;
	idx = bm_pick_backend_chunked(&c, 2, &env, &d, 3, 0, &panic);
	CU_ASSERT(idx >= 0 && c != &d.c[2] && c != &d.c[3]);

	/* A healthy chunk answers itself. */
	c = &d.c[1];
	idx = bm_pick_backend_chunked(&c, 1, &env, &d, 3, 0, &panic);
	CU_ASSERT(idx >= 0 && c == &d.c[1]);
}

static void test_chunk_panic_when_all_are(void)
{
	struct fake_env env = { 0 };
	struct fake_dests d;
	const struct bm_cluster *c;
	int panic, idx;

	/* Every chunk below 50 % (1 of 4 healthy each): the cluster panics, in
	 * the chunk first chosen. */
	make_chunks(&d, 50);
	for (__u32 id = 1; id <= 12; id++)
		env.ejected[id] = id % 4 != 0;
	c = &d.c[1];
	idx = bm_pick_backend_chunked(&c, 1, &env, &d, 2, 0, &panic);
	CU_ASSERT(idx >= 0);
	CU_ASSERT_EQUAL(panic, 1);
	CU_ASSERT_PTR_EQUAL(c, &d.c[1]);

	/* An entry that is not a chunk never looks elsewhere. */
	d.c[1].flags = 0;
	for (__u32 id = 5; id <= 8; id++)
		env.ejected[id] = 1;
	idx = bm_pick_backend_chunked(&c, 1, &env, &d, 2, 0, &panic);
	CU_ASSERT_EQUAL(panic, 1);
	CU_ASSERT_PTR_EQUAL(c, &d.c[1]);
}

static void test_empty_cluster(void)
{
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int panic;

	make_cluster(&c, 0, BM_LB_RANDOM, 50);
	CU_ASSERT_EQUAL(bm_pick_backend(&c, &env, 1, 1, &panic), -1);
}

static void test_full_cluster(void)
{
	struct fake_env env = { 0 };
	struct bm_cluster c;
	int seen[BM_MAX_BACKENDS] = { 0 }, panic;

	make_cluster(&c, BM_MAX_BACKENDS, BM_LB_ROUND_ROBIN, 0);
	for (__u32 rr = 0; rr < BM_MAX_BACKENDS; rr++)
		seen[bm_pick_backend(&c, &env, 0, rr, &panic)]++;
	for (int i = 0; i < BM_MAX_BACKENDS; i++)
		CU_ASSERT_EQUAL(seen[i], 1);
}

BM_SUITE(lb, BM_CASE(test_dest_weights_exact), BM_CASE(test_dest_relative_weights),
	 BM_CASE(test_dest_empty), BM_CASE(test_round_robin_exact),
	 BM_CASE(test_round_robin_skips_ejected), BM_CASE(test_random_uniform_over_residues),
	 BM_CASE(test_least_request_avoids_loaded), BM_CASE(test_least_request_ties_spread),
	 BM_CASE(test_ejected_never_picked), BM_CASE(test_panic_threshold),
	 BM_CASE(test_chunk_hands_over), BM_CASE(test_chunk_panic_when_all_are),
	 BM_CASE(test_empty_cluster), BM_CASE(test_full_cluster))
