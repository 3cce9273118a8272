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

#define TCP_CLOSE_STATE 7 /* BPF_TCP_CLOSE */

static __always_inline struct bm_stats *stats_row(const struct bm_sock *s)
{
	struct bm_stats_key k = { .svc_id = s->svc_id, .backend_id = s->backend_id };
	struct bm_stats *st = bpf_map_lookup_elem(&stats_v1, &k);

	if (!st) {
		struct bm_stats zero = {};

		bpf_map_update_elem(&stats_v1, &k, &zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&stats_v1, &k);
	}
	return st;
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
		st = stats_row(s);
		if (st)
			st->opened++;
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != TCP_CLOSE_STATE)
			break;
		s = bpf_sk_storage_get(&sock_v1, sk, 0, 0);
		if (!s)
			break;
		st = stats_row(s);
		if (st) {
			if (s->flags & BM_SOCK_ESTABLISHED) {
				st->closed++;
				st->bytes_sent += skops->bytes_acked;
				st->bytes_recv += skops->bytes_received;
			} else {
				st->failed++;
			}
		}
		__sync_fetch_and_and(&s->flags, ~(__u32)BM_SOCK_ESTABLISHED);
		bm_sock_release_slots(s);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
