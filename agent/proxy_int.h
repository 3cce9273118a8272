/* Internals of the proxy workers shared by agent/proxy.c (pods, workers,
 * the API), agent/proxy_local.c (outbound capture, same-node and plaintext
 * delivery), agent/proxy_hbone.c (the HBONE client pool and server),
 * agent/proxy_l7.c (the HTTP engine's side) and agent/proxy_stats.c
 * (counters). Not an API: see proxy.h. */
#ifndef BM_PROXY_INT_H
#define BM_PROXY_INT_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <netinet/in.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include "proxy.h"
#include "relay.h"

#define SESS_CACHE 64
#define SPIFFE_PREFIX "spiffe://"

struct bm_conn_attrs;
struct bm_hbone_conn;
struct bm_l7_config;
struct bm_l7_engine;
struct bm_l7_ops;
struct bm_orig_dst;
struct bm_req_table;

enum { L_OUTBOUND, L_INBOUND, L_HBONE, L_KINDS };

struct worker;

struct plistener {
	struct bm_ev ev;
	struct ppod *pod;
	struct worker *w;
	int kind;
	int paused;                 /* out of descriptors: off this worker's epoll until the tick */
};

/* An enrolled pod: immutable once published, freed at the last reference. */
struct ppod {
	int refs;
	struct bm_proxy_pod cfg;
	const char *principal;      /* cfg.spiffe_id without spiffe:// */
	json_t *labels;             /* cfg.labels parsed (sourceLabels), NULL = none */
	char baggage[512];
	SSL_CTX *sctx, *cctx;       /* NULL without an identity manager */
	int lfd[L_KINDS];
	int nsfd;                   /* the pod's netns, for deliveries and tunnels */
	uint64_t netns_cookie;      /* of that netns (captured connections' key) */
	struct plistener *lst;      /* [worker * L_KINDS + kind] */
};

struct cmd {
	struct cmd *next;
	enum { CMD_ADD, CMD_DEL, CMD_STOP, CMD_L7, CMD_CONN } op;
	struct ppod *pod;              /* CMD_CONN: a reference for the connection */
	struct bm_l7_config *l7;       /* CMD_L7: a reference for the worker */
	int fd, kind;                  /* CMD_CONN: an accepted connection, its listener kind */
	struct sockaddr_in peer;       /* CMD_CONN: its client's address */
};

struct sess_ent {
	uint32_t src_ip, dst_ip;
	SSL_SESSION *s;
	time_t valid_until;            /* the certificates it was made with expire */
};

struct worker {
	struct bm_proxy *p;
	int idx;
	int spare_fd;                  /* kept open to accept-and-drop when out of fds */
	unsigned n_paused;             /* listeners taken off the epoll (out of fds) */
	pthread_t th;
	int started;
	struct bm_loop loop;
	struct bm_wstats st;
	struct bm_mesh_table *mt;      /* istio_tcp_* rows of this worker (relay.h) */
	struct bm_ev cmd_ev, tick_ev;
	pthread_mutex_t cmd_lock;
	struct cmd *cmds, *cmds_tail;
	int stop;
	struct ppod **pods;
	size_t n_pods, cap_pods;
	struct bm_hbone_conn *conns;   /* every HBONE connection of this worker */
	struct sess_ent sess[SESS_CACHE];
	unsigned sess_next;
	struct bm_l7_engine *l7;       /* HTTP/1.1 engine (agent/l7proxy.c) */
	/* HTTP requests finished on this worker, by status class ([0] no
	 * response); the owner writes, readers load relaxed. */
	uint64_t http_status[6];
	struct bm_req_table *rq;       /* istio_request* rows of this worker (reqmetrics.h) */
	struct bm_l7_config *cfg;      /* the configuration last published to this worker */
};

/* Per HBONE connection: who owns it and, for clients, the pool key. */
struct conn_owner {
	struct worker *w;
	struct ppod *pod;              /* server: the pod (a reference); client: NULL */
	uint32_t src_ip, dst_ip;       /* client pool key, with src_id */
	char src_id[256];
	time_t valid_until;            /* earliest NotAfter of both certificates */
	time_t sess_valid_until;       /* of the session offered for resumption */
};

struct bm_proxy {
	struct bm_agent *a;
	struct bm_identity_mgr *ids;
	unsigned ping_idle_ms, ping_timeout_ms, pool_idle_ms;
	int n;
	struct worker *w;
	pthread_mutex_t lock;          /* pods[] below: control path only */
	struct ppod **pods;
	size_t n_pods;
	struct bm_l7_config *l7;       /* the last published (a reference) */
	unsigned rr;                   /* round-robin turn of accepted connections (atomic) */
};

/* ---- pods (proxy.c) ------------------------------------------------------ */

void px_pod_put(struct ppod *pod);
void px_pod_get(struct ppod *pod);
struct ppod *px_worker_pod_by_ip(struct worker *w, uint32_t ip);
const char *px_principal_ns(const char *principal, char *buf, size_t len);
void px_ip_str(uint32_t ip, char *buf);

/* ---- the ways a connection comes in, from the worker's dispatch --------- */

/* proxy_local.c: 15001 and 15006 */
/* peer: the client's address as accept4 gave it. */
void px_accept_outbound(struct worker *w, struct ppod *src, int fd, const struct sockaddr_in *peer);
void px_accept_inbound_plain(struct worker *w, struct ppod *pod, int fd,
			     const struct sockaddr_in *peer);
/* proxy_hbone.c: 15008 */
void px_accept_hbone(struct worker *w, struct ppod *pod, int fd, const struct sockaddr_in *peer);

/* ---- between the files ----------------------------------------------------- */

/* proxy_local.c: the connection-level check; a denial is counted in dir. */
int px_policy(struct worker *w, const struct bm_conn_attrs *at, enum bm_pdir dir);

/* proxy_hbone.c: fd (consumed) on a pooled HBONE connection to od's
 * backend; px_l7_hbone_open() the same for the HTTP engine's upstreams. */
void px_outbound_hbone(struct worker *w, struct ppod *src, int fd, const struct bm_orig_dst *od,
		       uint16_t app_port);
int px_l7_hbone_open(struct worker *w, struct ppod *src, int fd, uint32_t bip, uint16_t bport);

/* proxy_l7.c: the engine's ops (worker_init), and the two ways into it. */
extern const struct bm_l7_ops px_l7_ops;
int px_pod_needs_http(struct worker *w, const struct ppod *pod);
int px_inbound_l7_start(struct worker *w, struct ppod *dst, int fd, const char *principal,
			uint32_t src_ip, uint32_t dst_ip, uint16_t dst_port, int mtls,
			enum bm_pdir dir);
void px_outbound_l7(struct worker *w, struct ppod *src, int fd, const struct bm_orig_dst *od);

#endif
