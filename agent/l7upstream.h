/* Internals of the L7 engine shared by agent/l7conn.c (client sockets,
 * sniffing, the engine object), agent/l7proxy.c (per-request flow), the
 * fronts agent/l7h1.c and agent/h2down.c, agent/l7reply.c (local replies,
 * records), agent/h2up.c (HTTP/2 upstreams), agent/l7upstream_pool.c
 * (what the pools of both upstream protocols share: circuit breakers,
 * pending requests, sockets, queues) and agent/l7upstream.c (timers,
 * HTTP/1.1 upstream connections and their pools, load balancing, outlier
 * reports, mirrors). Not an API: see l7proxy.h. */
#ifndef BM_L7UPSTREAM_H
#define BM_L7UPSTREAM_H
#include <stdint.h>
#include "bpfmesh/abi.h"
#include "http1.h"
#include "l7proxy.h"
#include "tracing.h"

/* ---- timers: a min-heap per engine on one timerfd -------------------------- */

struct l7_timer {
	uint64_t at;                 /* CLOCK_MONOTONIC ms */
	int idx;                     /* heap slot; -1 when not armed */
	void (*fn)(struct l7_timer *t);
};

void l7_timer_init(struct l7_timer *t, void (*fn)(struct l7_timer *t));
void l7_timer_arm(struct bm_l7_engine *e, struct l7_timer *t, uint64_t after_ms);
void l7_timer_cancel(struct bm_l7_engine *e, struct l7_timer *t);
uint64_t l7_now_ms(void);
uint64_t l7_wall_ms(void);

/* Drops q's head chunk, which is empty: the parsers that walk q a chunk at
 * a time (l7h1.c, h2down.c, h2up.c) step over it. */
static inline void l7_q_drop_empty(struct bm_loop *l, struct bm_chunkq *q)
{
	struct bm_chunk *c = q->head;

	q->head = c->next;
	if (!q->head)
		q->tail = NULL;
	bm_chunk_put(l, c);
}

/* ---- upstream exchanges ------------------------------------------------------ */

struct l7_uconn;
struct l7_x;

/* What the owner of an exchange hears from its upstream connection. A
 * callback may end the exchange (l7_x_end); the caller copes. */
struct l7_x_ops {
	void (*ready)(struct l7_x *x);      /* a connection: write the request */
	void (*writable)(struct l7_x *x);   /* the upstream queue drained below the mark */
	void (*head)(struct l7_x *x, const struct bm_h1_head *h);
	void (*body)(struct l7_x *x, const uint8_t *d, size_t n);
	void (*done)(struct l7_x *x);       /* the response ended (x->trailers set) */
	void (*fail)(struct l7_x *x, enum bm_attempt_result r);
	/* 101 Switching Protocols was relayed (head): the connection's socket
	 * is the owner's now, with the bytes that followed the head (may be
	 * NULL: then the socket is closed). */
	void (*upgraded)(struct l7_x *x, int fd, const uint8_t *rest, size_t n);
};

/* One request's use of one upstream connection (an attempt or a mirror). */
struct l7_x {
	struct bm_l7_engine *e;
	const struct l7_x_ops *ops;
	struct l7_uconn *uc;
	struct bm_l7_cluster *c;
	struct bm_l7_backend b;
	uint64_t pool_key;
	void *user;
	uint8_t head_request;       /* HEAD: the response has no body */
	uint8_t waiting;            /* queued for a connection (max_connections) */
	uint8_t pending;            /* counted in c->rt->pending */
	uint8_t h2_waiting;         /* HTTP/2: queued for a stream slot (e->h2waiters) */
	uint8_t h2_purge;           /* HTTP/2: queued, and about to fail (h2up.c pool_purge) */
	uint8_t got_bytes;          /* some response byte arrived */
	uint8_t body_in_hand;       /* at ops->head: the whole body is in the same read */
	uint8_t req_done;           /* the whole request was queued */
	uint8_t resp_done;
	uint8_t paused;             /* stop reading the response (client back-pressure) */
	uint8_t active_counted;     /* in the backend's in-flight count */
	uint8_t h2;                 /* speak HTTP/2 upstream (x->c->proto, or the downstream's) */
	struct l7_x *wnext, *wprev; /* engine's waiters (e->waiters, or HTTP/2 e->h2waiters) */
	/* HTTP/2 upstream (agent/h2up.c): the stream, and the HTTP/1.1 bytes
	 * the owner writes (l7_x_wq), translated into frames as they come. */
	struct l7_h2us *hs;
	/* the response's trailers, valid during ops->done */
	const struct bm_http_hdr *trailers;
	size_t n_trailers;
};

#define L7_HIGH_WATER (256 * 1024)  /* stop producing into a queue above this */
#define L7_CORK_MAX   (16 * 1024)   /* largest response body held back to leave with its head */

/* ---- what the pools of both upstream protocols share (l7upstream_pool.c) ----- */

/* The pool of an upstream connection (HTTP/1.1 or HTTP/2): pool key,
 * cluster (its circuit breakers) and backend, with the cluster's settings
 * the connection keeps. */
struct l7_upool {
	uint64_t key;
	struct bm_l7_cluster_rt *rt;  /* counted in rt->connections */
	uint32_t ip;
	uint16_t port;
	uint32_t max_reqs;            /* maxRequestsPerConnection, 0: unlimited */
	uint32_t idle_ms;             /* idleTimeout */
};

/* x's pool */
struct l7_upool l7_upool_of(const struct l7_x *x);

/* Is p the pool of (key, rt, ip, port)? Settings aside. Inline: the pools'
 * scans call it per connection or waiting exchange, per request. */
static inline int l7_upool_is(const struct l7_upool *p, uint64_t key,
			      const struct bm_l7_cluster_rt *rt, uint32_t ip, uint16_t port)
{
	return p->key == key && p->rt == rt && p->ip == ip && p->port == port;
}

/* is x one of p's; are a and b the same pool? */
static inline int l7_upool_has(const struct l7_upool *p, const struct l7_x *x)
{
	return l7_upool_is(p, x->pool_key, x->c->rt, x->b.ip, x->b.port);
}

static inline int l7_upool_eq(const struct l7_upool *a, const struct l7_upool *b)
{
	return l7_upool_is(a, b->key, b->rt, b->ip, b->port);
}
/* A socket to x's backend from the engine's connector, connecting: the fd,
 * or -errno. */
int l7_x_connect(struct l7_x *x);
/* A new connection's socket ev (fd and fn set) into the loop, its connect
 * timeout armed on t. 0, or -errno. */
int l7_usock_add(struct l7_x *x, struct bm_ev *ev, struct l7_timer *t);
/* Events on a connecting socket: 1 connected (t, the connect timeout, is
 * cancelled), 0 not yet, -1 the connect failed. */
int l7_usock_connected(struct bm_l7_engine *e, struct bm_ev *ev, uint32_t events,
		       struct l7_timer *t);

/* Exchanges waiting, oldest first, linked through wnext and wprev. */
struct l7_xq {
	struct l7_x *head, *tail;
};
void l7_xq_add(struct l7_xq *q, struct l7_x *x);
void l7_xq_del(struct l7_xq *q, struct l7_x *x);

/* Engine set-up: the queued requests' poll timer. */
void l7_waiters_init(struct bm_l7_engine *e);

/* Get a connection for x (x->c, x->b, pool_key, user set): an idle pooled
 * one (ready is called before this returns), a new one, or a place in the
 * queue. 0, -EBUSY (circuit breaker: pending overflow), or -errno of the
 * connector (a connect failure). */
int l7_x_start(struct l7_x *x);
/* x is about to wait for a connection or (HTTP/2) a stream slot: a pending
 * request (Envoy's http1MaxPendingRequests, which bounds HTTP/2 too). 0, or
 * -EBUSY over c->max_pending (counted in rt->overflow_pending). Given back
 * once, by l7_x_pending_give (a no-op when x holds none). */
int l7_x_pending_take(struct l7_x *x);
void l7_x_pending_give(struct l7_x *x);
/* Detach x from its connection: keep it pooled when reuse and the exchange
 * ended cleanly, else close it. Leaves the waiters' queue. */
void l7_x_end(struct l7_x *x, int reuse);
/* Queue bytes to the upstream and write what the socket takes. */
int l7_x_write(struct l7_x *x, const uint8_t *d, size_t n);
int l7_x_write_q(struct l7_x *x, const struct bm_chunkq *q, size_t from);
struct bm_chunkq *l7_x_wq(struct l7_x *x);
void l7_x_flush(struct l7_x *x);
size_t l7_x_queued(const struct l7_x *x);
/* Reading the response: pause (the client is slow) and resume. */
void l7_x_pause(struct l7_x *x, int paused);
/* Close the idle pooled connections of pool_key (a downstream that owned
 * them went away). */
void l7_pool_drop(struct bm_l7_engine *e, uint64_t pool_key);
/* Engine teardown: end every exchange left (mirrors) and close every
 * upstream connection. */
void l7_upstream_shutdown(struct bm_l7_engine *e);
void l7_timers_run(struct bm_l7_engine *e);

/* ---- load balancing, circuit breakers, outlier ----------------------------------- */

/* A backend of c for one request (§2.3): skips ejected hosts unless the
 * healthy share is under min_health (panic); avoids the tried ones when
 * another exists. NULL: no host at all (503 UH). */
const struct bm_l7_backend *l7_lb_pick(struct bm_l7_engine *e, const struct bm_l7_cluster *c,
				       const uint32_t (*tried)[2], unsigned n_tried,
				       int avoid_tried);
void l7_backend_active(struct bm_l7_engine *e, const struct bm_l7_backend *b, int delta);
/* Report an attempt's outcome to the outlier detector. */
void l7_outlier(struct bm_l7_engine *e, const struct bm_l7_cluster *c,
		const struct bm_l7_backend *b, enum bm_outlier_ev ev);
enum bm_outlier_ev l7_outlier_ev(enum bm_attempt_result r, int status);
/* Atomic "take one if below max" on a circuit-breaker counter
 * (l7upstream_pool.c). */
int l7_cb_take(uint32_t *ctr, uint32_t max);
void l7_cb_give(uint32_t *ctr);
uint32_t l7_rand(struct bm_l7_engine *e);

/* ---- mirrors ------------------------------------------------------------------ */

/* Send a copy of a complete request (head bytes + the whole body) to a host
 * of c and forget it. Dropped when too many are in flight. */
void l7_mirror_send(struct bm_l7_engine *e, struct bm_l7_cluster *c, uint64_t pool_key,
		    void *user, const struct bm_chunkq *head, const struct bm_chunkq *body,
		    int chunked, int head_request, uint32_t timeout_ms);

/* ---- the engine ---------------------------------------------------------------- */

struct l7_dconn;

struct l7_bact {                /* per-backend requests in flight (LEAST_REQUEST) */
	uint32_t ip;
	uint16_t port;
	uint16_t used;
	uint32_t active;
};
#define L7_BACT_SLOTS 4096

struct bm_l7_engine {
	struct bm_loop *l;
	struct bm_l7_ops ops;
	struct bm_l7_engine_opts o;
	struct bm_l7_config *cfg;
	struct bm_outlier *outlier;
	struct bm_ev tev;            /* timerfd */
	uint64_t armed_at;           /* 0: disarmed */
	struct l7_timer **heap;
	size_t n_heap, cap_heap;
	struct l7_dconn *dconns;
	struct l7_uconn *uconns;     /* every upstream connection (idle and busy) */
	struct l7_h2uc *h2uconns;    /* HTTP/2 upstream connections (h2up.c) */
	struct l7_xq h2waiters;      /* pending for an HTTP/2 stream slot */
	struct l7_xq waiters;        /* queued for a connection slot (max_connections) */
	struct l7_timer t_waiters;   /* re-try queued requests: slots free up on other workers */
	struct l7_bact *bact;        /* L7_BACT_SLOTS */
	unsigned n_mirrors;
	uint64_t rng[2];
	uint64_t serial;             /* for per-downstream pool keys */
	uint32_t *scratch_ids;
	size_t cap_ids;
	struct bm_l7_stats st;
	int freeing;
};

/* ---- downstream connections (l7conn.c) and their requests (l7proxy.c) ---------- */

#define IN_MAX (64 * 1024)          /* unparsed client bytes kept */
#define MAX_TRIED 8
#define MAX_MIRRORS 4
#define OUT_LOW (64 * 1024)

struct l7_front;

/* One request, whatever the downstream protocol: l7proxy.c runs it,
 * its front (HTTP/1.1 in l7h1.c, HTTP/2 in h2down.c) reads it and writes
 * the response. Everything before t_route is reset per request. */
struct l7_req {
	uint8_t active;             /* a head was parsed; the request is not finished */
	uint8_t forwarding;         /* routed to a cluster: attempts may run */
	uint8_t body_done;          /* the whole request body was read */
	uint8_t resp_started, resp_done, resp_chunked;
	uint8_t discard;            /* drop the rest of the request body */
	uint8_t replayable;         /* the whole body so far is kept */
	uint8_t x_live, x_ready, body_end_sent;
	uint8_t req_counted, retry_held, route_armed, mirrors_sent;
	uint8_t step;
	uint8_t urx;
	uint8_t grpc;               /* content-type application/grpc*: gRPC-shaped local replies */
	uint8_t upgrade;            /* HTTP/1.1 Upgrade (WebSocket) request */
	uint8_t grpc_abort;         /* fault abort with grpcStatus: the code + 1 */
	uint8_t cork;               /* a local reply is being written: fronts flush at its end */
	int16_t grpc_status;        /* from response headers or trailers; -1 none */
	const struct bm_l7_route *rt;
	int which;
	const struct bm_l7_dest *dest;
	struct bm_l7_cluster *c;
	struct bm_l7_retry retry;
	uint32_t attempts;
	uint32_t tried[MAX_TRIED][2];
	unsigned n_tried;
	struct l7_x x;
	struct bm_chunkq uhead;     /* the request head as sent upstream (HTTP/1.1 bytes) */
	struct bm_chunkq body;      /* see l7proxy.c */
	uint64_t body_total;        /* decoded body bytes read */
	size_t body_sent;           /* replayable: bytes of body queued to this attempt */
	uint64_t start_mono, start_wall;
	uint16_t status;
	uint64_t resp_bytes;
	char flags[64];
	char reqid[40];
	char route_name[160];
	struct bm_l7_cluster *mirror[MAX_MIRRORS];
	unsigned n_mirror;
	struct bm_trace_span trace; /* this hop's span (tracing.h) */
	struct l7_timer t_route, t_try, t_step;
	/* set once by the front */
	struct l7_dconn *d;
	const struct l7_front *fr;
	const struct bm_h1_head *h; /* the request head (HTTP/2: synthesized by h2down.c) */
	/* request trailers (HTTP/2 front), forwarded at the body's end */
	const struct bm_http_hdr *req_trailers;
	size_t n_req_trailers;
};

/* What the pipeline asks of a downstream protocol. Writers return 0 or
 * -errno (then the pipeline aborts the request). */
struct l7_front {
	/* Response head; hl has hop-by-hop headers stripped and header
	 * operations applied; clen -1 unknown; has_body 0: nothing follows
	 * (not even trailers). */
	int (*head)(struct l7_req *rq, int status, const char *reason, struct bm_h1_hlist *hl,
		    int64_t clen, int has_body);
	int (*body)(struct l7_req *rq, const uint8_t *p, size_t n);
	/* The response's end, with trailers (n may be 0). */
	int (*end)(struct l7_req *rq, const struct bm_http_hdr *t, size_t n);
	/* Response bytes waiting for the client (back-pressure). */
	size_t (*queued)(struct l7_req *rq);
	/* Cut the request short (reset); the request ends (l7_rq_end) here. */
	void (*abort)(struct l7_req *rq);
	/* More request body may be taken now. */
	void (*more)(struct l7_req *rq);
	/* Has the whole request (head, body) been read? */
	int (*req_complete)(struct l7_req *rq);
	/* After l7_rq_end: the front's bookkeeping (h1: next request; h2:
	 * the stream's memory). from_close: the connection is closing. */
	void (*ended)(struct l7_req *rq, int from_close);
	/* HTTP/1.1 only: the upstream socket after a 101 (NULL elsewhere). */
	void (*upgraded)(struct l7_req *rq, int ufd, const uint8_t *rest, size_t n);
	/* Response bytes queued for the client above which the upstream is
	 * no longer read (HTTP/2: per stream, many streams share a client). */
	size_t high_water;
};

struct l7_h2conn;

struct l7_dconn {
	struct bm_ev ev;
	struct bm_l7_engine *e;
	struct l7_dconn *next, *prev;
	struct bm_l7_peer peer;
	struct bm_l7_config *cfg;
	uint64_t pool_key;
	struct bm_chunkq in, out;
	uint8_t readable, writable, eof, closed, sniffing, close_after, closing, in_pump, again;
	uint8_t read_to_end;          /* the peer hung up: read to EOF, no short-read shortcut */
	uint8_t fd_given;
	struct bm_h1_parser qp;
	struct l7_req rq;             /* HTTP/1.1: the request in progress */
	struct l7_h2conn *h2;         /* HTTP/2 (h2down.c), NULL for HTTP/1.1 */
	struct l7_timer t_sniff;
	/* inbound: the app as a one-host cluster of this connection */
	struct bm_l7_cluster icl;
	struct bm_l7_cluster_rt irt;
	struct bm_l7_backend ib;
};

#define X_RQ(p_) ((struct l7_req *)((char *)(p_) - offsetof(struct l7_req, x)))

/* l7conn.c: the client socket */
void l7_dconn_flush(struct l7_dconn *d);
void l7_dconn_close(struct l7_dconn *d, int reset);
/* Read and parse what can be, then handle the client's end. */
void l7_dconn_pump(struct l7_dconn *d);
int l7_out_write(struct l7_dconn *d, const void *p, size_t n);

/* l7proxy.c: the per-request pipeline, shared by both fronts */
void l7_rq_init(struct l7_req *rq, struct l7_dconn *d, const struct l7_front *fr);
/* A new request whose head is rq->h: reset, request id, span, gRPC-ness. */
void l7_rq_reset(struct l7_req *rq);
/* Route it (outbound) or authorize it (inbound), then forward. */
void l7_rq_route(struct l7_req *rq);
/* Request body pieces and end; 0 or -ENOMEM. */
int l7_rq_body(struct l7_req *rq, const uint8_t *p, size_t n);
void l7_rq_body_done(struct l7_req *rq);
/* May more body be taken now? Streams wait for the upstream to drain. */
int l7_rq_body_room(struct l7_req *rq);
/* A local response (status, body text, response flag or NULL). */
void l7_rq_local(struct l7_req *rq, int status, const char *body, const char *flag);
/* The client's side is gone or broke the protocol: end the request. */
void l7_rq_end(struct l7_req *rq, int from_close);
/* Response and request both done: end it. */
void l7_rq_maybe_finish(struct l7_req *rq);
/* The response queue drained: resume reading the upstream. */
void l7_rq_drained(struct l7_req *rq);
void l7_add_flag(struct l7_req *rq, const char *f);

/* l7reply.c: local replies, gRPC shapes, the request's record */
struct l7_xhdr {
	const char *name, *value;
};
/* A local response with extra headers (xh). gRPC requests get Envoy's
 * gRPC-shaped reply: 200, trailers-only, grpc-status from the HTTP status. */
void l7_rq_local_x(struct l7_req *rq, int status, const char *body, const char *flag,
		   const struct l7_xhdr *xh, size_t n_xh);
void l7_rq_fault_abort(struct l7_req *rq);
int l7_grpc_from_http(int status);
/* grpc-status of a header block, -1 when none. */
int l7_grpc_status_of(const struct bm_http_hdr *h, size_t n);
int l7_grpc_local_headers(struct l7_req *rq, struct bm_h1_hlist *hl, int status, const char *msg);
void l7_rq_record(struct l7_req *rq);

/* l7h1.c: the HTTP/1.1 front */
extern const struct l7_front l7_h1_front;
int l7_dconn_process(struct l7_dconn *d);

/* h2down.c: the HTTP/2 front. Start serving d (its first bytes, the
 * preface, are still in the socket); 0 or -errno. */
int l7_h2_start(struct l7_dconn *d);
/* Feed d->in to the session, write what it has to say. */
int l7_h2_process(struct l7_dconn *d);
/* d->out drained below the mark: more DATA may go. */
void l7_h2_drained(struct l7_dconn *d);
/* The connection is closing: end every stream. */
void l7_h2_close(struct l7_dconn *d);
/* Peer went away (EOF): 1 if it may close now. */
int l7_h2_idle(const struct l7_dconn *d);

/* h2up.c: HTTP/2 upstream connections (prior knowledge h2c) */
int l7_h2u_start(struct l7_x *x);
void l7_h2u_end(struct l7_x *x, int reuse);
struct bm_chunkq *l7_h2u_wq(struct l7_x *x);
void l7_h2u_flush(struct l7_x *x);
size_t l7_h2u_queued(const struct l7_x *x);
void l7_h2u_pause(struct l7_x *x, int paused);
void l7_h2u_pool_drop(struct bm_l7_engine *e, uint64_t pool_key);
void l7_h2u_shutdown(struct bm_l7_engine *e);

#endif
