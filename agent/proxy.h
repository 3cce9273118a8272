/* The user-space mesh data path: worker threads (one epoll loop each, one
 * per core by default) that accept on every enrolled pod's listeners and
 * carry the connection (docs/architecture.md §1, §5):
 *
 *   15001 outbound capture: the backend connect4 picked (orig_dst_v1) is a
 *         pod of this node -> policy check, plaintext delivery, splice;
 *         else -> HBONE: an HTTP/2 CONNECT stream on a pooled TLS 1.3
 *         connection per (source identity, source IP, destination IP).
 *   15008 HBONE server: mTLS with the pod's SVID, policy on the peer's
 *         principal (401), delivery to the app (503 if it fails, else 200).
 *   15006 plaintext that sk_lookup steered here: policy with no principal
 *         (STRICT refuses), delivery, splice.
 *
 * Threads: bm_proxy_* are called from meshd's main thread; workers get pod
 * changes as messages and keep their own view, so the data path takes no
 * lock. bm_policy_check() and the TLS contexts are called from workers. */
#ifndef BM_PROXY_H
#define BM_PROXY_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct bm_agent;
struct bm_identity_mgr;
struct bm_proxy;

struct bm_proxy_pod {
	char name[128], ns[64], sa[64];
	char spiffe_id[256];     /* spiffe://TD/ns/NS/sa/SA: its SVID is the pod's TLS identity */
	uint32_t ip;             /* network order */
	char netns[128];         /* name under /run/netns */
	/* Source metadata for HBONE baggage (istio-api.md §10.1); "" = unknown. */
	char workload[128];      /* k8s.workload.name; "" = the pod name */
	char app[64], version[64]; /* service.name / service.version */
	/* The pod's labels as a JSON object ("" = none): VirtualService
	 * sourceLabels matches of the requests it sends (L7 path). */
	char labels[1024];
	/* Listeners meshd created in the pod's netns with bm_netns_listen();
	 * -1 = none. Owned by the proxy once bm_proxy_pod_add() returns 0. */
	int fd_outbound;         /* 127.0.0.1:15001 */
	int fd_inbound;          /* 0.0.0.0:15006 (also in inbound_socks_v1) */
	int fd_hbone;            /* podIP:15008 */
};

struct bm_proxy_opts {
	int workers;                    /* 0: bm_proxy_default_workers() */
	struct bm_identity_mgr *ids;    /* SVIDs for TLS; NULL: no HBONE (same-node only) */
	/* Timers, ms; 0 = defaults. */
	unsigned ping_idle_ms;          /* PING an HBONE connection idle this long (10 s) */
	unsigned ping_timeout_ms;       /* and drop it if unanswered / handshake slower (5 s) */
	unsigned pool_idle_ms;          /* close a pooled connection without streams (120 s) */
};

int bm_proxy_start(struct bm_agent *a, const struct bm_proxy_opts *o, struct bm_proxy **out);
/* The worker count when none is given: one per two online CPUs, rounded up
 * (proxy.c says why). */
int bm_proxy_default_workers(long ncpu);

/* Stops the workers, closes every connection and listener. */
void bm_proxy_stop(struct bm_proxy *p);

/* Enrol a pod (or replace one with the same ns/name, e.g. its service
 * account changed: pass fd_* = -1 to keep the enrolled pod's listeners;
 * its open connections continue). On success the listeners belong to the
 * proxy; on failure the caller still owns the ones it passed.
 * -EINVAL bad pod, -ENOMEM, or the TLS context error. */
int bm_proxy_pod_add(struct bm_proxy *p, const struct bm_proxy_pod *pod);
/* Stop accepting for the pod and close its listeners; its open connections
 * continue until they end. -ENOENT if unknown. */
int bm_proxy_pod_remove(struct bm_proxy *p, const char *ns, const char *name);

/* The L7 (HTTP) configuration for new downstream connections (main
 * thread). Takes a reference; every worker gets its own through its
 * command queue, each downstream connection holds one for its life, so a
 * swap never frees what is in use. NULL: no L7 services. The outlier
 * detector the workers report into is a->outlier (struct bm_agent), read
 * when a configuration is published: create it before the first call. */
struct bm_l7_config;
void bm_proxy_set_l7(struct bm_proxy *p, struct bm_l7_config *cfg);

/* Counters summed over workers: {"workers", "pods", "connections": {dir:
 * {ok, denied, upstream_failed, error, active, bytes_up, bytes_down}},
 * "tls": {...}, "hbone": {...}, "denials": {reason: n}, "http": {"requests",
 * "1xx".."5xx", "no_response", "retries", "timeouts", "overflows",
 * "mirrors", "mirrors_dropped", "ejections", "l4_fallbacks",
 * "upstream_connections", "upstream_reused", "downstream_open"}}. */
json_t *bm_proxy_stats_json(struct bm_proxy *p);

/* The istio_tcp_* rows of mesh traffic (struct bm_mesh_row, relay.h),
 * summed over workers with identical keys merged; *out is malloc'ed (free
 * it). Any thread; workers are not stopped or locked. 0 or -ENOMEM. */
struct bm_mesh_row;
int bm_proxy_mesh_rows(struct bm_proxy *p, struct bm_mesh_row **out, size_t *n);

#endif
