/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kernel/user contract: every map key, value and flag shared by bpf/ and
 * agent/. Fixed-width types, explicit padding. Addresses and ports are in
 * network byte order wherever they are compared with socket fields.
 *
 * Map names carry a version. A layout change makes a new name (_v2), never
 * mutates a pinned map in place: meshd adopts pinned maps by name on restart.
 */
#ifndef BPFMESH_ABI_H
#define BPFMESH_ABI_H

#ifdef __BPF__
/* vmlinux.h provides __u8.. */
#else
#include <linux/types.h>
#endif

#define BM_MAX_SERVICES      65536   /* svc_v1 entries (VIP:port) */
#define BM_MAX_DESTS         16      /* weighted destinations per service route */
#define BM_MAX_BACKENDS      64      /* backends per cluster (service x subset) */
#define BM_MAX_BACKEND_IDS   262144  /* stable backend id space (array index) */
#define BM_MAX_CLUSTER_IDS   65536   /* stable cluster id space (array index) */
#define BM_MAX_STATS         262144  /* (service, backend) stat rows */

#define BM_PROTO_TCP 6

/* Load-balancing algorithms (DestinationRule trafficPolicy.loadBalancer.simple). */
enum bm_lb {
	BM_LB_LEAST_REQUEST = 0, /* Istio's default; LEAST_CONN is an alias */
	BM_LB_ROUND_ROBIN   = 1,
	BM_LB_RANDOM        = 2,
	BM_LB_PASSTHROUGH   = 3, /* keep the caller's original destination */
};

/* svc_v1: written by meshd (reconcile), read by connect4. The value carries
 * the weighted route itself, so one lookup gives the service's destinations.
 * A change is made by writing the new rev's clusters first and then replacing
 * this one entry: a reader sees the old or the new backend set, never a mix. */
struct bm_svc_key {
	__u32 vip;      /* network order */
	__u16 port;     /* network order */
	__u8  proto;    /* BM_PROTO_TCP */
	__u8  pad;
};

struct bm_svc {
	__u32 svc_id;                    /* stable id of (VIP, port): stats index */
	__u32 rev;                       /* which cluster_v1 generation is live */
	__u32 n_dests;                   /* 1..BM_MAX_DESTS weighted destinations */
	__u32 total_weight;              /* sum of weights, > 0 */
	__u32 cum_weight[BM_MAX_DESTS];  /* running sums: dest i when r < cum_weight[i] */
};

/* cluster_v1: one weighted destination's backend set, keyed by (svc, rev, dest
 * index). Backends are inline so a reader never follows a stale reference. */
struct bm_cluster_key {
	__u32 svc_id;
	__u32 rev;
	__u32 dest;
};

#define BM_BACKEND_MESH 0x1  /* a mesh workload: capture into meshd (mTLS/HBONE) */
struct bm_backend {
	__u32 id;       /* stable backend id: index into backend_active/eject */
	__u32 ip;       /* network order */
	__u16 port;     /* network order */
	__u16 flags;    /* BM_BACKEND_* */
};

/* The service has L7 policy: connect4 picks no backend and sends the
 * connection to meshd's 15001 in the client's netns, which routes each
 * HTTP request itself (orig_dst_v1 then carries bip == 0). */
#define BM_CLUSTER_L7 0x1
/* One of several entries holding a cluster of more than BM_MAX_BACKENDS
 * backends (same cluster_id, backends spread evenly): when this chunk has
 * no backend to offer short of panic, connect4 tries the cluster's other
 * chunks first. Unknown to older programs, which balance inside the chunk. */
#define BM_CLUSTER_CHUNK 0x2
/* A chunk's place: index in bits 8-15, number of chunks in bits 16-23; the
 * chunks of a cluster are contiguous destinations. */
#define BM_CLUSTER_CHUNK_IDX(f) (((f) >> 8) & 0xff)
#define BM_CLUSTER_CHUNK_N(f)   (((f) >> 16) & 0xff)
#define BM_CLUSTER_CHUNK_AT(j, n) (BM_CLUSTER_CHUNK | ((__u32)(j) << 8) | ((__u32)(n) << 16))
struct bm_cluster {
	__u32 cluster_id;    /* stable id of (service, port, subset): maxConnections, RR */
	__u32 max_conns;     /* connectionPool.tcp.maxConnections; 0 = unlimited */
	__u8  lb;            /* enum bm_lb */
	__u8  min_health;    /* panic threshold percent (minHealthPercent) */
	__u16 n_backends;    /* 0..BM_MAX_BACKENDS */
	__u32 flags;         /* BM_CLUSTER_* (was padding: zero in older meshd) */
	struct bm_backend backends[BM_MAX_BACKENDS];
};

/* cluster_state_v1 (ARRAY by cluster_id): written by connect4/sockops atomically. */
struct bm_cluster_state {
	__u32 active;   /* connections counted against maxConnections */
	__u32 rr;       /* round-robin cursor */
};

/* backend_active_v1 (ARRAY by backend id, __u32): written by connect4/sockops,
 * read by connect4 (LEAST_REQUEST) and meshd. */
/* backend_eject_v1 (ARRAY by backend id, __u32 0/1): written by meshd
 * (outlier detector, `meshctl backend eject`), read by connect4. */

/* backend_health_v1 (ARRAY by backend id): written by sockops for every
 * connection connect4 balanced (not captured ones: meshd sees those), read
 * by meshd, whose outlier detector counts kernel-path connect failures
 * (istio-api.md §2.5: for TCP, consecutive5xxErrors counts connection
 * failures). Updated with atomic adds; consecutive_failed is reset by a
 * plain store when a connect succeeds. */
struct bm_backend_health {
	__u64 connected;          /* connects that reached ESTABLISHED */
	__u64 failed;             /* connects that never established */
	__u32 consecutive_failed; /* failures since the last success */
	__u32 pad;
};

/* sock_v1 (SK_STORAGE): written by connect4, read by getpeername4/sockops and
 * by meshd (lookup by socket fd) to learn the original destination. */
#define BM_SOCK_RESERVED    0x1  /* holds a cluster + backend active slot */
#define BM_SOCK_ESTABLISHED 0x2  /* sockops saw ESTABLISHED */
#define BM_SOCK_CAPTURED    0x4  /* sent to meshd's outbound listener (15001) */
struct bm_sock {
	__u32 vip;          /* what the app connected to, network order */
	__u16 vport;
	__u16 bport;        /* chosen backend port, network order */
	__u32 bip;          /* chosen backend ip, network order */
	__u32 svc_id;
	__u32 backend_id;
	__u32 cluster_id;
	__u32 flags;        /* BM_SOCK_* */
	__u64 src_cgroup;   /* cgroup id of the connecting pod (metrics' source) */
};

/* stats_v1 (PERCPU_HASH): written by sockops, summed by meshd on scrape. */
struct bm_stats_key {
	__u32 svc_id;
	__u32 backend_id;
	__u64 src_cgroup;   /* the client pod's cgroup id; meshd maps it to the pod */
};

struct bm_stats {
	__u64 opened;       /* connects that reached ESTABLISHED */
	__u64 closed;       /* established connections that closed */
	__u64 failed;       /* connects that never established */
	__u64 bytes_sent;   /* bytes acked by the peer, added at close */
	__u64 bytes_recv;   /* bytes received, added at close */
};

/* cluster_stats_v1 (PERCPU_ARRAY by cluster_id): written by connect4. */
struct bm_cluster_stats {
	__u64 refused_max_conns;  /* over connectionPool.tcp.maxConnections */
	__u64 refused_no_backend; /* no healthy backend and no panic */
	__u64 picks;              /* connections balanced */
	__u64 panics;             /* picks made in panic mode */
};

/* orig_dst_v1 (LRU_HASH): written by sockops when a captured connection
 * establishes; read (and deleted) by meshd after accept() on 15001. The key
 * is what meshd sees: the listener's netns and the client's port. */
struct bm_orig_key {
	__u64 netns_cookie;
	__u16 sport;        /* client's local port, host order */
	__u16 pad;
	__u32 pad2;
};

struct bm_orig_dst {
	__u32 vip;          /* what the app connected to, network order */
	__u16 vport;
	__u16 bport;        /* the backend connect4 chose, network order */
	__u32 bip;
	__u32 svc_id;
	__u32 backend_id;
	__u32 pad;
	__u64 src_cgroup;
};

/* Inbound capture (sk_lookup, one program per pod netns). */
#define BM_MAX_PODS 4096
enum bm_mtls_mode {
	BM_MTLS_PERMISSIVE = 0, /* UNSET resolves to PERMISSIVE */
	BM_MTLS_STRICT     = 1,
	BM_MTLS_DISABLE    = 2,
};
#define BM_POD_PORT_OVERRIDES 8
/* pod_inbound_v1 (HASH, key pod IPv4 network order): written by meshd. */
struct bm_pod_inbound {
	__u32 slot;                               /* index into inbound_socks_v1 */
	__u8  mode;                               /* enum bm_mtls_mode */
	__u8  n_ports;
	__u16 pad;
	__u16 port[BM_POD_PORT_OVERRIDES];        /* portLevelMtls, host order */
	__u8  port_mode[BM_POD_PORT_OVERRIDES];
};
/* inbound_socks_v1 (SOCKMAP, by slot): meshd's 15006 listener in each pod
 * netns. A listener that goes away (meshd died) leaves the slot empty: STRICT
 * pods then drop instead of falling back to plaintext. */
#define BM_DELIVERY_SRC 0x0600007f /* 127.0.0.6: meshd's own deliveries to apps */

#ifndef __BPF__
_Static_assert(sizeof(struct bm_svc_key) == 8, "svc key");
_Static_assert(sizeof(struct bm_backend_health) == 24, "backend health");
_Static_assert(sizeof(struct bm_svc) == 16 + 4 * BM_MAX_DESTS, "svc");
_Static_assert(sizeof(struct bm_backend) == 12, "backend");
_Static_assert(sizeof(struct bm_cluster) == 16 + 12 * BM_MAX_BACKENDS, "cluster");
_Static_assert(sizeof(struct bm_sock) == 40, "sock");
_Static_assert(sizeof(struct bm_stats_key) == 16, "stats key");
_Static_assert(sizeof(struct bm_stats) == 40, "stats");
_Static_assert(sizeof(struct bm_orig_key) == 16, "orig key");
_Static_assert(sizeof(struct bm_orig_dst) == 32, "orig dst");
_Static_assert(sizeof(struct bm_pod_inbound) == 32, "pod inbound");
#endif

#endif
