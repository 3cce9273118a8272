// SPDX-License-Identifier: GPL-2.0
/*
 * Connection accounting for sockets that connect4 balanced: opened, closed,
 * failed connects, bytes, and the release of active-connection slots when a
 * connection ends. Per-CPU counters; bytes are added once, at close, so there
 * is no per-packet work.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "lib/maps.h"

/* enum tcp states (BPF_TCP_*) */
#define ST_ESTABLISHED 1
#define ST_FIN_WAIT1   4
#define ST_FIN_WAIT2   5
#define ST_CLOSE       7
#define ST_CLOSE_WAIT  8
#define ST_LAST_ACK    9
#define ST_CLOSING     11

/*
 * bytes_acked and bytes_received count sequence space, so the SYN and FINs
 * are in them. Payload bytes are what users compare with their app's
 * counters: take the SYN out always (an active open's SYN is acked when it
 * establishes) and each FIN when the state it closes from implies it:
 * LAST_ACK, CLOSING and the TIME_WAIT paths (FIN_WAIT1/2 -> CLOSE) saw both
 * FINs; CLOSE_WAIT saw the peer's only; ESTABLISHED is an abort (no FIN).
 */
static __always_inline void add_bytes(struct bm_stats *st, struct bpf_sock_ops *skops, __u32 old)
{
	__u64 acked = skops->bytes_acked, recv = skops->bytes_received;
	int fin_in = old == ST_LAST_ACK || old == ST_CLOSING || old == ST_FIN_WAIT1 ||
		     old == ST_FIN_WAIT2 || old == ST_CLOSE_WAIT;
	int fin_out = old == ST_LAST_ACK || old == ST_CLOSING || old == ST_FIN_WAIT1 ||
		      old == ST_FIN_WAIT2;

	acked -= acked > 0;                 /* SYN */
	acked -= fin_out && acked > 0;
	recv -= fin_in && recv > 0;
	st->bytes_sent += acked;
	st->bytes_recv += recv;
}

static __always_inline struct bm_stats *stats_row(const struct bm_sock *s)
{
	struct bm_stats_key k = { .svc_id = s->svc_id, .backend_id = s->backend_id,
				  .src_cgroup = s->src_cgroup };
	struct bm_stats *st = bpf_map_lookup_elem(&stats_v1, &k);

	if (!st) {
		struct bm_stats zero = {};

		/* Only the program that created the row announces it. */
		if (!bpf_map_update_elem(&stats_v1, &k, &zero, BPF_NOEXIST) &&
		    bpf_ringbuf_output(&stats_keys_v1, &k, sizeof(k), 0)) {
			__u32 zero_idx = 0;
			__u64 *lost = bpf_map_lookup_elem(&stats_keys_lost_v1, &zero_idx);

			if (lost)
				__sync_fetch_and_add(lost, 1);
		}
		st = bpf_map_lookup_elem(&stats_v1, &k);
	}
	return st;
}

/* Kernel-path connect outcome of a balanced backend, for meshd's outlier
 * detector. */
static __always_inline void backend_outcome(const struct bm_sock *s, int ok)
{
	__u32 id = s->backend_id;
	struct bm_backend_health *h;

	if (!id)
		return;
	h = bpf_map_lookup_elem(&backend_health_v1, &id);
	if (!h)
		return;
	if (ok) {
		__sync_fetch_and_add(&h->connected, 1);
		h->consecutive_failed = 0;
	} else {
		__sync_fetch_and_add(&h->failed, 1);
		__sync_fetch_and_add(&h->consecutive_failed, 1);
	}
}

SEC("sockops")
int bm_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct bm_stats *st;
	struct bm_sock *s;

	if (!sk)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		s = bpf_sk_storage_get(&sock_v1, sk, 0, 0);
		if (s)
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		s = bpf_sk_storage_get(&sock_v1, sk, 0, 0);
		if (!s)
			break;
		__sync_fetch_and_or(&s->flags, BM_SOCK_ESTABLISHED);
		if (s->flags & BM_SOCK_CAPTURED) {
			/* meshd's proxy accounts for it; tell it where to go. */
			struct bm_orig_key ok = { .netns_cookie = bpf_get_netns_cookie(skops),
						  .sport = (__u16)skops->local_port };
			struct bm_orig_dst od = { .vip = s->vip, .vport = s->vport, .bip = s->bip,
						  .bport = s->bport, .svc_id = s->svc_id,
						  .backend_id = s->backend_id, .src_cgroup = s->src_cgroup };

			bpf_map_update_elem(&orig_dst_v1, &ok, &od, BPF_ANY);
			break;
		}
		st = stats_row(s);
		if (st)
			st->opened++;
		backend_outcome(s, 1);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != ST_CLOSE)
			break;
		s = bpf_sk_storage_get(&sock_v1, sk, 0, 0);
		if (!s)
			break;
		st = (s->flags & BM_SOCK_CAPTURED) ? NULL : stats_row(s);
		if (st) {
			if (s->flags & BM_SOCK_ESTABLISHED) {
				st->closed++;
				add_bytes(st, skops, skops->args[0]);
			} else {
				st->failed++;
			}
		}
		if (!(s->flags & (BM_SOCK_CAPTURED | BM_SOCK_ESTABLISHED)) && (s->flags & BM_SOCK_RESERVED))
			backend_outcome(s, 0);
		__sync_fetch_and_and(&s->flags, ~(__u32)BM_SOCK_ESTABLISHED);
		bm_sock_release_slots(s);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
