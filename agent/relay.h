/* The proxy workers' building blocks: a per-thread event loop (epoll, edge
 * triggered for connection sockets), pooled buffers and pipes, per-worker
 * counters, and the plaintext relay (splice through a pipe, both ways, with
 * half-close). Everything here belongs to one worker thread: nothing is
 * locked, and counters are plain integers that readers sum when asked. */
#ifndef BM_RELAY_H
#define BM_RELAY_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Directions a proxied connection can take, for counters. */
enum bm_pdir {
	BM_PDIR_OUT_HBONE,   /* pod's 15001 -> HBONE to a peer node */
	BM_PDIR_OUT_LOCAL,   /* pod's 15001 -> a pod of this node, no TLS */
	BM_PDIR_IN_HBONE,    /* CONNECT stream on a pod's 15008 -> the app */
	BM_PDIR_IN_PLAIN,    /* plaintext steered to a pod's 15006 -> the app */
	BM_PDIR_MAX,
};

enum bm_pres {
	BM_PRES_OK,            /* relayed */
	BM_PRES_DENIED,        /* policy said no (401 / closed) */
	BM_PRES_UPSTREAM,      /* could not reach the upstream (503 / reset) */
	BM_PRES_ERROR,         /* no original destination, no identity, bad request... */
	BM_PRES_MAX,
};

#define BM_DENY_REASONS 32
#define BM_DENY_REASON_LEN 96

struct bm_wstats {
	uint64_t conns[BM_PDIR_MAX][BM_PRES_MAX];
	uint64_t active[BM_PDIR_MAX];
	uint64_t bytes_up[BM_PDIR_MAX];    /* client -> upstream payload */
	uint64_t bytes_down[BM_PDIR_MAX];  /* upstream -> client payload */
	uint64_t accepted;                 /* connections this worker took on (listeners, handovers) */
	uint64_t tls_client, tls_server, tls_resumed, tls_failed;
	uint64_t h2_client, h2_server, h2_closed, h2_pings, h2_ping_timeouts;
	uint64_t h2_connect_failed;        /* TCP connect to a peer's 15008 failed */
	uint64_t streams_opened, streams_reset;
	uint64_t status_200, status_400, status_401, status_503, status_other;
	/* Denials by reason: written by the owning worker only; n published
	 * with a release store after the slot is filled, so a reader on
	 * another thread sees whole entries. */
	struct { char reason[BM_DENY_REASON_LEN]; uint64_t n; } deny[BM_DENY_REASONS];
	uint32_t n_deny;
	uint64_t deny_other;   /* reasons beyond the table */
};

void bm_wstats_deny(struct bm_wstats *st, const char *reason);

/* Istio TCP metrics of mesh traffic (istio_tcp_*), per worker, keyed by
 * workloads so the table stays bounded: never by connection or client port.
 *
 * Reporter source (client side, 15001): src = the client pod "ns/name",
 * ip/port/svc_id = the backend and service connect4 picked, dst = "".
 * Reporter destination (server side): src = the peer principal (without
 * spiffe://) or "unknown" for plaintext (the source IP is not a label),
 * dst = the server pod "ns/name", port = its port, ip = svc_id = 0.
 *
 * Concurrency: one writer (the owning worker), readers on the metrics
 * thread. A slot's key is written once and then published with a release
 * store of `used`; counters are only ever written by the owner with
 * relaxed atomic stores (plain movs, no locked read-modify-write) and read
 * with relaxed loads, so the per-byte path takes no lock and does no atomic
 * RMW: bytes are tallied per connection and folded in once, at close. A
 * reader may see a row whose opened already counts a connection whose
 * close is not in yet; every counter is monotonic, which is all Prometheus
 * needs. (A seqlock or a snapshot through the command queue would give
 * whole-row consistency at the cost of retries or of waking every worker
 * per scrape; counters do not need it.) Slots are never freed or moved, so
 * a connection keeps a pointer to its row. */
#define BM_MESH_NAME 256
#define BM_MESH_SLOTS 1024

enum { BM_MESH_SOURCE = 0, BM_MESH_DESTINATION = 1 };

struct bm_mesh_key {
	uint8_t reporter;           /* BM_MESH_SOURCE / BM_MESH_DESTINATION */
	uint8_t mtls;               /* 1: HBONE (mutual TLS); 0: plaintext / same node */
	uint16_t port;              /* destination port, host order */
	uint32_t ip;                /* source reporter: backend IP (network order) */
	uint32_t svc_id;            /* source reporter: the service's id (0 = none) */
	char src[BM_MESH_NAME];
	char dst[BM_MESH_NAME];
};

struct bm_mesh_row {
	struct bm_mesh_key k;
	uint64_t opened, closed;
	uint64_t bytes_up;          /* client -> server (Istio: received by the proxy) */
	uint64_t bytes_down;        /* server -> client (Istio: sent) */
	uint8_t used;
};

struct bm_mesh_table {
	struct bm_mesh_row row[BM_MESH_SLOTS];
	uint64_t overflow;          /* connections that found the table full */
};

/* The row of key (created if needed) with opened counted; NULL when the
 * table is full (overflow counted). Owner thread only. */
struct bm_mesh_row *bm_mesh_open(struct bm_mesh_table *t, const struct bm_mesh_key *k);
/* A connection of row ended having moved up/down bytes. Owner only; row may be NULL. */
void bm_mesh_close(struct bm_mesh_row *row, uint64_t up, uint64_t down);
/* Add the published rows of t into the array *out (n entries, cap *cap),
 * merging identical keys. Any thread. 0 or -ENOMEM. */
int bm_mesh_collect(const struct bm_mesh_table *t, struct bm_mesh_row **out, size_t *n,
		    size_t *cap);

/* An fd registered with a loop: ev.fn runs with the epoll events. An object
 * that dies while a batch of events is being dispatched marks its evs dead
 * and is freed after the batch (bm_loop_defer_free). */
struct bm_ev {
	void (*fn)(struct bm_ev *ev, uint32_t events);
	int fd;
	int dead;
};

/* TLS records carry at most 16 KiB: one chunk is one record's payload. */
#define BM_CHUNK_DATA 16384
struct bm_chunk {
	struct bm_chunk *next;
	uint32_t off, len;
	uint8_t data[BM_CHUNK_DATA];
};

/* A byte queue of pooled chunks; empty queues hold no memory. */
struct bm_chunkq {
	struct bm_chunk *head, *tail;
	size_t bytes;
};

struct bm_zombie {
	void *obj;
	void (*free_fn)(void *obj);
};

/* Work a handler wants done once, after the current batch of events (an
 * HBONE connection writes what all its streams queued in one go). */
struct bm_after {
	struct bm_after *next;
	void (*fn)(struct bm_after *a);
	uint8_t queued;
};

struct bm_loop {
	int ep;
	uint64_t now_ms;
	struct bm_wstats *st;
	struct bm_chunk *free_chunks;
	unsigned n_free_chunks;
	int (*free_pipes)[2];
	unsigned n_free_pipes;
	struct bm_zombie *zombies;
	unsigned n_zombies, cap_zombies;
	uint8_t *scratch;          /* BM_SCRATCH bytes for one read at a time */
	void *obj_pool;            /* recycled fixed-size objects (hbone streams) */
	unsigned n_obj_pool;
	struct bm_after *after;    /* queued by bm_loop_after */
};
#define BM_SCRATCH 65536

int bm_loop_init(struct bm_loop *l, struct bm_wstats *st);
void bm_loop_fini(struct bm_loop *l);
/* Wait up to timeout_ms, dispatch, free what died. Returns events seen or -errno. */
int bm_loop_run_once(struct bm_loop *l, int timeout_ms);
int bm_loop_add(struct bm_loop *l, struct bm_ev *ev, uint32_t events);
int bm_loop_mod(struct bm_loop *l, struct bm_ev *ev, uint32_t events);
void bm_loop_del(struct bm_loop *l, struct bm_ev *ev);
void bm_loop_defer_free(struct bm_loop *l, void *obj, void (*free_fn)(void *obj));
/* Run a->fn once after the events of this batch were dispatched (before
 * deferred frees); queuing twice is queuing once. Called outside
 * bm_loop_run_once, it runs after the next batch. */
void bm_loop_after(struct bm_loop *l, struct bm_after *a);

/* A recycled object (contents undefined) or NULL; put keeps at most a few
 * hundred. One object size per loop (hbone's streams). */
void *bm_loop_obj_get(struct bm_loop *l);
void bm_loop_obj_put(struct bm_loop *l, void *obj, size_t size);

struct bm_chunk *bm_chunk_get(struct bm_loop *l);
void bm_chunk_put(struct bm_loop *l, struct bm_chunk *c);
int bm_chunkq_append(struct bm_loop *l, struct bm_chunkq *q, const uint8_t *data, size_t len);
void bm_chunkq_consume(struct bm_loop *l, struct bm_chunkq *q, size_t n);
void bm_chunkq_clear(struct bm_loop *l, struct bm_chunkq *q);
/* One sendmsg of up to 16 of q's chunks to fd; what was sent is consumed.
 * Returns the bytes sent, or -1 with errno (EAGAIN: the socket is full). */
ssize_t bm_chunkq_send(struct bm_loop *l, struct bm_chunkq *q, int fd);
/* Copies up to len bytes from the head of q into buf and consumes them;
 * returns how many. */
size_t bm_chunkq_take(struct bm_loop *l, struct bm_chunkq *q, uint8_t *buf, size_t len);

/* Close so that the peer sees a reset, not an orderly end. */
void bm_close_reset(int fd);
/* 0 when the non-blocking connect on fd that epoll reported with events
 * (EPOLLOUT, EPOLLERR or EPOLLHUP) completed, else -errno. A failed connect
 * always reports EPOLLERR or EPOLLHUP: EPOLLOUT alone needs no SO_ERROR. */
int bm_sock_connect_result(int fd, uint32_t events);

/* Relay bytes between a and b (both non-blocking, owned by the relay from
 * now on) until both directions ended. b may still be connecting: a failed
 * connect resets a and counts BM_PRES_UPSTREAM. dir picks the counters. */
int bm_relay_start(struct bm_loop *l, int a, int b, enum bm_pdir dir);
/* The same, folding the connection's bytes into up to two mesh rows at its
 * end (NULL = none). The rows' opened must already be counted. */
int bm_relay_start_rows(struct bm_loop *l, int a, int b, enum bm_pdir dir,
			struct bm_mesh_row *r0, struct bm_mesh_row *r1);

#endif
