// SPDX-License-Identifier: GPL-2.0
/*
 * Socket-level service load balancing for a node's pods: cgroup/connect4
 * picks a backend for a service VIP:port (weighted destinations, then the
 * cluster's LB algorithm, skipping ejected backends, enforcing
 * maxConnections) and rewrites the destination; getpeername4 shows the app
 * the VIP again; sock_release gives back the slots a socket held.
 * No per-packet work: one decision per connect().
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"

#define ECONNREFUSED 111
#define LOOPBACK 0x0100007f /* 127.0.0.1, network order on little endian */

/* meshd's outbound listener inside every pod netns. */
const volatile __u16 bm_capture_port = 15001;

static __always_inline __u32 bm_lb_ejected(void *env, __u32 id)
{
	__u32 *e = bpf_map_lookup_elem(&backend_eject_v1, &id);

	return e ? *e : 0;
}

static __always_inline __u32 bm_lb_active(void *env, __u32 id)
{
	__u32 *a = bpf_map_lookup_elem(&backend_active_v1, &id);

	return a ? *a : 0;
}

/* cenv: the cluster_v1 key of the service's live revision. */
static __always_inline const struct bm_cluster *bm_lb_chunk(void *cenv, __u32 dest)
{
	struct bm_cluster_key *k = cenv;

	k->dest = dest;
	return bpf_map_lookup_elem(&cluster_v1, k);
}

#include "lib/lb.h"

static __always_inline void count_refusal(__u32 cluster_id, int max_conns)
{
	struct bm_cluster_stats *st = bpf_map_lookup_elem(&cluster_stats_v1, &cluster_id);

	if (!st)
		return;
	if (max_conns)
		st->refused_max_conns++;
	else
		st->refused_no_backend++;
}

/* Fail the connect() with ECONNREFUSED, as a full upstream would. */
static __always_inline int refuse(void)
{
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

/* A service with L7 policy: meshd balances each request, so no backend is
 * chosen or reserved here; the socket only remembers what the app dialled
 * (getpeername4 and meshd's orig_dst_v1 lookup need it). */
static __always_inline int capture_l7(struct bpf_sock_addr *ctx, const struct bm_svc *svc,
				      const struct bm_svc_key *key)
{
	struct bm_sock *s = bpf_sk_storage_get(&sock_v1, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!s)
		return refuse();
	bm_sock_release_slots(s); /* a reconnect of the same socket */
	s->vip = key->vip;
	s->vport = key->port;
	s->bip = 0;
	s->bport = 0;
	s->svc_id = svc->svc_id;
	s->backend_id = 0;
	s->cluster_id = 0;
	s->flags = BM_SOCK_CAPTURED;
	s->src_cgroup = bpf_get_current_cgroup_id();
	ctx->user_ip4 = LOOPBACK;
	ctx->user_port = bpf_htons(bm_capture_port);
	return 1;
}

SEC("cgroup/connect4")
int bm_connect4(struct bpf_sock_addr *ctx)
{
	struct bm_svc_key key = {};
	struct bm_cluster_key ckey;
	struct bm_cluster_state *cs;
	struct bm_cluster_stats *st;
	const struct bm_cluster *c;
	const struct bm_backend *b;
	const struct bm_svc *svc;
	struct bm_sock *s;
	__u32 *active, rr = 0, cid;
	int dest, idx, panic;

	if (ctx->protocol != IPPROTO_TCP)
		return 1;
	key.vip = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	key.proto = BM_PROTO_TCP;
	svc = bpf_map_lookup_elem(&svc_v1, &key);
	if (!svc)
		return 1;

	dest = bm_pick_dest(svc, bpf_get_prandom_u32());
	if (dest < 0)
		return 1;
	ckey.svc_id = svc->svc_id;
	ckey.rev = svc->rev;
	ckey.dest = dest;
	c = bpf_map_lookup_elem(&cluster_v1, &ckey);
	if (!c)
		return refuse();
	if (c->flags & BM_CLUSTER_L7)
		return capture_l7(ctx, svc, &key);
	if (c->lb == BM_LB_PASSTHROUGH)
		return 1;
	cid = c->cluster_id;
	cs = bpf_map_lookup_elem(&cluster_state_v1, &cid);
	if (!cs)
		return refuse();
	if (c->lb == BM_LB_ROUND_ROBIN)
		rr = __sync_fetch_and_add(&cs->rr, 1);

	idx = bm_pick_backend_chunked(&c, dest, NULL, &ckey, bpf_get_prandom_u32(), rr, &panic);
	if (idx < 0 || idx >= BM_MAX_BACKENDS) {
		count_refusal(cid, 0);
		return refuse();
	}
	b = &c->backends[idx];

	/* maxConnections: reserve first, then check, so concurrent connects on
	 * other CPUs can never all slip under the limit together. */
	if (__sync_fetch_and_add(&cs->active, 1) >= c->max_conns && c->max_conns) {
		__sync_fetch_and_sub(&cs->active, 1);
		count_refusal(cid, 1);
		return refuse();
	}

	s = bpf_sk_storage_get(&sock_v1, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		/* Without storage nothing would give the slot back. */
		__sync_fetch_and_sub(&cs->active, 1);
		return refuse();
	}
	bm_sock_release_slots(s); /* a reconnect of the same socket */
	s->vip = key.vip;
	s->vport = key.port;
	s->bip = b->ip;
	s->bport = b->port;
	s->svc_id = svc->svc_id;
	s->backend_id = b->id;
	s->cluster_id = cid;
	s->flags = BM_SOCK_RESERVED;
	s->src_cgroup = bpf_get_current_cgroup_id();

	active = bpf_map_lookup_elem(&backend_active_v1, &s->backend_id);
	if (active)
		__sync_fetch_and_add(active, 1);
	st = bpf_map_lookup_elem(&cluster_stats_v1, &cid);
	if (st) {
		st->picks++;
		if (panic)
			st->panics++;
	}

	if (b->flags & BM_BACKEND_MESH) {
		/* Mesh destination: meshd carries it (mTLS); it learns the
		 * backend chosen here from orig_dst_v1 (written by sockops). */
		s->flags |= BM_SOCK_CAPTURED;
		ctx->user_ip4 = LOOPBACK;
		ctx->user_port = bpf_htons(bm_capture_port);
		return 1;
	}
	ctx->user_ip4 = b->ip;
	ctx->user_port = b->port;
	return 1;
}

/* The app connected to the VIP, so getpeername() must say the VIP. */
SEC("cgroup/getpeername4")
int bm_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bm_sock *s = bpf_sk_storage_get(&sock_v1, ctx->sk, 0, 0);

	if (!s || !s->vip)
		return 1;
	if ((s->flags & BM_SOCK_CAPTURED) ?
		    ctx->user_ip4 == LOOPBACK && (__u16)ctx->user_port == bpf_htons(bm_capture_port) :
		    ctx->user_ip4 == s->bip && (__u16)ctx->user_port == s->bport) {
		ctx->user_ip4 = s->vip;
		ctx->user_port = s->vport;
	}
	return 1;
}

/* close() of a socket whose connect never reached TCP (or never closed in
 * TCP terms yet): give its slots back now. */
SEC("cgroup/sock_release")
int bm_sock_release(struct bpf_sock *sk)
{
	struct bm_sock *s;

	if (sk->protocol != IPPROTO_TCP)
		return 1;
	s = bpf_sk_storage_get(&sock_v1, sk, 0, 0);
	if (s)
		bm_sock_release_slots(s);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
