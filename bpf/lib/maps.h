/* SPDX-License-Identifier: Apache-2.0 */
/* Maps shared by every bpfmesh program. Pinned by name under the node's
 * bpffs directory, so each .bpf.o reuses the same instances and a restarted
 * meshd adopts them. Each says who writes it and who reads it. */
#ifndef BM_MAPS_H
#define BM_MAPS_H

#include "bpfmesh/abi.h"

/* meshd writes; connect4 reads. VIP:port -> weighted route + live rev. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BM_MAX_SERVICES);
	__type(key, struct bm_svc_key);
	__type(value, struct bm_svc);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_v1 SEC(".maps");

/* meshd writes; connect4 reads. (svc, rev, dest) -> backend set + policy. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * BM_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bm_cluster_key);
	__type(value, struct bm_cluster);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cluster_v1 SEC(".maps");

/* connect4/sockops/sock_release write atomically; meshd reads. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BM_MAX_CLUSTER_IDS);
	__type(key, __u32);
	__type(value, struct bm_cluster_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cluster_state_v1 SEC(".maps");

/* connect4/sockops/sock_release write atomically; connect4 (LEAST_REQUEST)
 * and meshd read. Active connections per backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BM_MAX_BACKEND_IDS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_active_v1 SEC(".maps");

/* meshd writes (outlier detector, manual eject); connect4 reads. 1 = ejected. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BM_MAX_BACKEND_IDS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_eject_v1 SEC(".maps");

/* sockops writes (kernel-path connect outcomes per backend); meshd reads. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BM_MAX_BACKEND_IDS);
	__type(key, __u32);
	__type(value, struct bm_backend_health);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_health_v1 SEC(".maps");

/* connect4 writes; getpeername4, sockops, sock_release and meshd read. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct bm_sock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_v1 SEC(".maps");

/* sockops writes; meshd sums per CPU when exporting. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, BM_MAX_STATS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bm_stats_key);
	__type(value, struct bm_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats_v1 SEC(".maps");

/* The key of every stats_v1 row sockops creates, for meshd's scrape: reading
 * the rows it knows by key costs the rows, while walking the hash costs its
 * BM_MAX_STATS buckets in a syscall the scheduler cannot cut short. A key
 * the ring has no room for is counted in stats_keys_lost_v1[0]; meshd then
 * walks the map once. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats_keys_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats_keys_lost_v1 SEC(".maps");

/* connect4 writes; meshd sums per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BM_MAX_CLUSTER_IDS);
	__type(key, __u32);
	__type(value, struct bm_cluster_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cluster_stats_v1 SEC(".maps");

/* sockops writes for captured connections; meshd reads and deletes. LRU so
 * entries nobody collected (meshd down) cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct bm_orig_key);
	__type(value, struct bm_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} orig_dst_v1 SEC(".maps");

/* meshd writes; sk_lookup reads. Pod IP -> listener slot + mTLS mode. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BM_MAX_PODS);
	__type(key, __u32);
	__type(value, struct bm_pod_inbound);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_inbound_v1 SEC(".maps");

/* meshd inserts its per-pod 15006 listeners; sk_lookup assigns to them. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, BM_MAX_PODS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} inbound_socks_v1 SEC(".maps");

/* Give back the maxConnections and least-request slots a socket holds.
 * Called from sockops (TCP_CLOSE) and sock_release, whichever comes first;
 * the atomic flag clear makes the second a no-op. */
static __always_inline void bm_sock_release_slots(struct bm_sock *s)
{
	__u32 old = __sync_fetch_and_and(&s->flags, ~(__u32)BM_SOCK_RESERVED);
	struct bm_cluster_state *cs;
	__u32 *active;
	__u32 key;

	if (!(old & BM_SOCK_RESERVED))
		return;
	key = s->cluster_id;
	cs = bpf_map_lookup_elem(&cluster_state_v1, &key);
	if (cs)
		__sync_fetch_and_sub(&cs->active, 1);
	key = s->backend_id;
	active = bpf_map_lookup_elem(&backend_active_v1, &key);
	if (active)
		__sync_fetch_and_sub(active, 1);
}

#endif
