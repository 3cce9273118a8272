/*
 * The upstream half of the L7 engine: timers, upstream HTTP/1.1
 * connections and their keep-alive pools, load balancing over a cluster's
 * hosts and outlier reports (mirrors: l7mirror.c; what the HTTP/2 pools
 * share with these: l7upstream_pool.c).
 *
 * Pools are per (pool key = source pod, cluster, backend ip:port), like
 * Envoy's per-cluster connection pools, so connectionPool limits and
 * keep-alive settings of one cluster never leak into another. A connection
 * serves one exchange at a time (HTTP/1.1 without pipelining upstream).
 *
 * An exchange with x->h2 set goes to agent/h2up.c instead (multiplexed
 * HTTP/2 connections); the l7_x_* calls below dispatch on it, so owners
 * never know which protocol carries them.
 *
 * Callbacks into the exchange's owner never come from inside a write: a
 * write error is noticed later (a zero-delay timer), so an owner writing
 * in its own callbacks is never re-entered.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include "l7upstream.h"

struct l7_uconn {
	struct bm_ev ev;
	struct bm_l7_engine *e;
	struct l7_uconn *next, *prev;
	struct l7_upool pool;
	uint32_t n_reqs;
	uint8_t connecting, idle, readable, writable, closed, keep, werr, wrote;
	uint8_t read_to_end;          /* the peer hung up: read to EOF, no short-read shortcut */
	uint64_t idle_since_ms;       /* when it last went idle */
	struct bm_chunkq wq;
	struct bm_h1_parser rp;
	struct bm_http_hdr tr[BM_H1_TRAILERS_MAX]; /* the response's trailers (views into rp) */
	struct l7_x *x;
	struct l7_timer t;           /* connect timeout, idle timeout, write error */
};

/* ---- clocks and timers ------------------------------------------------------- */

uint64_t l7_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t l7_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void l7_timer_init(struct l7_timer *t, void (*fn)(struct l7_timer *t))
{
	t->idx = -1;
	t->at = 0;
	t->fn = fn;
}

static void heap_swap(struct bm_l7_engine *e, size_t a, size_t b)
{
	struct l7_timer *t = e->heap[a];

	e->heap[a] = e->heap[b];
	e->heap[b] = t;
	e->heap[a]->idx = (int)a;
	e->heap[b]->idx = (int)b;
}

static void heap_up(struct bm_l7_engine *e, size_t i)
{
	while (i && e->heap[(i - 1) / 2]->at > e->heap[i]->at) {
		heap_swap(e, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct bm_l7_engine *e, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < e->n_heap && e->heap[l]->at < e->heap[m]->at)
			m = l;
		if (r < e->n_heap && e->heap[r]->at < e->heap[m]->at)
			m = r;
		if (m == i)
			return;
		heap_swap(e, i, m);
		i = m;
	}
}

/* The timerfd is armed at or before the earliest timer, never after it, and
 * is only ever moved earlier: a cancelled timer, or a new one later than the
 * armed time, leaves it where it is, and it then fires once for nothing
 * (engine_on_timer re-arms it for what is left). A request arms and cancels
 * its timeout; with the timerfd following the heap exactly that was two
 * timerfd_settime calls per request, now about none. */
static void timer_rearm(struct bm_l7_engine *e)
{
	uint64_t at = e->n_heap ? e->heap[0]->at : 0;
	struct itimerspec its = { 0 };

	if (!at || (e->armed_at && e->armed_at <= at))
		return;
	its.it_value.tv_sec = (time_t)(at / 1000);
	its.it_value.tv_nsec = (long)(at % 1000) * 1000000;
	timerfd_settime(e->tev.fd, TFD_TIMER_ABSTIME, &its, NULL);
	e->armed_at = at;
}

void l7_timer_cancel(struct bm_l7_engine *e, struct l7_timer *t)
{
	size_t i;

	if (t->idx < 0)
		return;
	i = (size_t)t->idx;
	t->idx = -1;
	e->n_heap--;
	if (i != e->n_heap) {
		e->heap[i] = e->heap[e->n_heap];
		e->heap[i]->idx = (int)i;
		heap_up(e, i);
		heap_down(e, (size_t)e->heap[i]->idx);
	}
	timer_rearm(e);
}

void l7_timer_arm(struct bm_l7_engine *e, struct l7_timer *t, uint64_t after_ms)
{
	l7_timer_cancel(e, t);
	if (e->n_heap == e->cap_heap) {
		size_t cap = e->cap_heap ? e->cap_heap * 2 : 256;
		struct l7_timer **h = realloc(e->heap, cap * sizeof(*h));

		if (!h)
			return; /* the timer never fires: bounded by the others */
		e->heap = h;
		e->cap_heap = cap;
	}
	/* +1: never 0 (0 disarms the timerfd), and a 0 ms delay still waits
	 * for the next loop turn. */
	t->at = l7_now_ms() + after_ms + 1;
	t->idx = (int)e->n_heap;
	e->heap[e->n_heap++] = t;
	heap_up(e, (size_t)t->idx);
	timer_rearm(e);
}

void l7_timers_run(struct bm_l7_engine *e)
{
	uint64_t now = l7_now_ms();

	while (e->n_heap && e->heap[0]->at <= now) {
		struct l7_timer *t = e->heap[0];

		l7_timer_cancel(e, t);
		t->fn(t);
	}
	timer_rearm(e);
}

/* ---- random numbers (xorshift128+, seeded from getrandom) ---------------------- */

uint32_t l7_rand(struct bm_l7_engine *e)
{
	uint64_t s1 = e->rng[0];
	const uint64_t s0 = e->rng[1];

	e->rng[0] = s0;
	s1 ^= s1 << 23;
	e->rng[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
	return (uint32_t)((e->rng[1] + s0) >> 32);
}

/* ---- upstream connections ----------------------------------------------------------- */

static void uconn_free(void *obj)
{
	free(obj);
}

static void kick_waiters(struct bm_l7_engine *e, struct bm_l7_cluster_rt *rt);
static void uconn_timer(struct l7_timer *t);
static void uconn_on_event(struct bm_ev *ev, uint32_t events);

static void waiters_remove(struct bm_l7_engine *e, struct l7_x *x)
{
	if (!x->waiting)
		return;
	__atomic_sub_fetch(&x->c->rt->waiting, 1, __ATOMIC_RELAXED);
	l7_xq_del(&e->waiters, x);
	x->waiting = 0;
}

static void uconn_close(struct l7_uconn *uc)
{
	struct bm_l7_engine *e = uc->e;
	struct bm_l7_cluster_rt *rt = uc->pool.rt;

	if (uc->closed)
		return;
	uc->closed = 1;
	uc->ev.dead = 1;
	if (uc->x) {
		uc->x->uc = NULL;
		uc->x = NULL;
	}
	l7_timer_cancel(e, &uc->t);
	if (uc->prev)
		uc->prev->next = uc->next;
	else
		e->uconns = uc->next;
	if (uc->next)
		uc->next->prev = uc->prev;
	if (uc->ev.fd >= 0)
		close(uc->ev.fd);
	bm_chunkq_clear(e->l, &uc->wq);
	bm_h1_fini(&uc->rp);
	if (rt)
		l7_cb_give(&rt->connections);
	bm_loop_defer_free(e->l, uc, uconn_free);
	if (rt && !e->freeing)
		kick_waiters(e, rt);
}

static void attach(struct l7_uconn *uc, struct l7_x *x)
{
	uc->x = x;
	x->uc = uc;
	uc->n_reqs++;
	uc->wrote = 0;
	bm_h1_reset(&uc->rp);
	bm_h1_expect_head_response(&uc->rp, x->head_request);
}

static int dial(struct l7_x *x)
{
	struct bm_l7_engine *e = x->e;
	struct l7_uconn *uc;
	int fd, err;

	fd = err = l7_x_connect(x);
	if (err < 0)
		goto err_give;
	uc = calloc(1, sizeof(*uc));
	if (!uc) {
		close(fd);
		err = -ENOMEM;
		goto err_give;
	}
	uc->e = e;
	uc->ev.fn = uconn_on_event;
	uc->ev.fd = fd;
	uc->pool = l7_upool_of(x);
	uc->connecting = 1;
	uc->keep = 1;
	bm_h1_init(&uc->rp, 1);
	l7_timer_init(&uc->t, uconn_timer);
	err = l7_usock_add(x, &uc->ev, &uc->t);
	if (err) {
		close(fd);
		free(uc);
		goto err_give;
	}
	uc->next = e->uconns;
	if (e->uconns)
		e->uconns->prev = uc;
	e->uconns = uc;
	attach(uc, x);
	return 0;
err_give:
	l7_cb_give(&x->c->rt->connections);
	return err;
}

/* An idle connection is usable if the peer has not closed it or sent
 * anything meanwhile (edge-triggered: check, do not trust the last event). */
#define IDLE_PEEK_AFTER_MS 100

static int idle_usable(struct l7_uconn *uc)
{
	char b;
	ssize_t n = recv(uc->ev.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static struct l7_uconn *pool_take(struct bm_l7_engine *e, const struct l7_x *x)
{
	for (struct l7_uconn *uc = e->uconns, *next; uc; uc = next) {
		next = uc->next;
		if (!uc->idle || !l7_upool_has(&uc->pool, x))
			continue;
		/* Idle for a moment with no event seen: the peek (one syscall per
		 * request) is for connections the upstream may have closed on an
		 * idle timeout, which takes longer than this. */
		if ((uc->readable || l7_now_ms() - uc->idle_since_ms > IDLE_PEEK_AFTER_MS) &&
		    !idle_usable(uc)) {
			uconn_close(uc);
			continue;
		}
		uc->idle = 0;
		l7_timer_cancel(e, &uc->t);
		return uc;
	}
	return NULL;
}

#define WAITERS_POLL_MS 5

int l7_x_start(struct l7_x *x)
{
	struct bm_l7_engine *e = x->e;
	struct bm_l7_cluster *c = x->c;
	struct l7_uconn *uc;
	int err;

	x->got_bytes = x->req_done = x->resp_done = x->paused = 0;
	x->trailers = NULL;
	x->n_trailers = 0;
	if (x->h2)
		return l7_h2u_start(x);
	uc = pool_take(e, x);
	if (uc) {
		attach(uc, x);
		e->st.upstream_cx_reused++;
		x->ops->ready(x);
		return 0;
	}
	/* Waiting for a connection, also while it is being made, is a pending
	 * request (Envoy's http1MaxPendingRequests). */
	err = l7_x_pending_take(x);
	if (err)
		return err;
	if (!l7_cb_take(&c->rt->connections, c->max_connections)) {
		/* maxConnections: queue until one is released or closed */
		x->waiting = 1;
		__atomic_add_fetch(&c->rt->waiting, 1, __ATOMIC_RELAXED);
		l7_xq_add(&e->waiters, x);
		/* The slot it waits for may be freed by another worker, which
		 * cannot wake this one: look again shortly. */
		if (e->t_waiters.fn && e->t_waiters.idx < 0)
			l7_timer_arm(e, &e->t_waiters, WAITERS_POLL_MS);
		return 0;
	}
	err = dial(x);
	if (err)
		l7_x_pending_give(x);
	return err;
}

/* Serve queued x if a connection or a slot is there: 1 when it left the
 * queue, 0 when it still waits. */
static int serve_waiter(struct bm_l7_engine *e, struct l7_x *x)
{
	struct bm_l7_cluster_rt *rt = x->c->rt;
	struct l7_uconn *uc = pool_take(e, x);

	if (uc) {
		waiters_remove(e, x);
		l7_x_pending_give(x);
		attach(uc, x);
		e->st.upstream_cx_reused++;
		x->ops->ready(x);
		return 1;
	}
	if (!l7_cb_take(&rt->connections, x->c->max_connections)) {
		/* At the limit: an idle connection to another host of the
		 * cluster makes room for this one. */
		for (uc = e->uconns; uc; uc = uc->next)
			if (uc->idle && uc->pool.rt == rt)
				break;
		if (uc)
			uconn_close(uc); /* kicks again */
		return 0;
	}
	waiters_remove(e, x);
	if (dial(x)) {
		l7_x_pending_give(x);
		x->ops->fail(x, BM_AR_CONNECT_FAILURE);
	}
	return 1;
}

/* A connection slot of rt became free, or an idle one appeared. */
static void kick_waiters(struct bm_l7_engine *e, struct bm_l7_cluster_rt *rt)
{
	for (struct l7_x *x = e->waiters.head; x; x = x->wnext)
		if (x->c->rt == rt) {
			serve_waiter(e, x);
			return;
		}
}

static int local_waiter(const struct bm_l7_engine *e, const struct bm_l7_cluster_rt *rt)
{
	for (const struct l7_x *x = e->waiters.head; x; x = x->wnext)
		if (x->c->rt == rt)
			return 1;
	return 0;
}

/* Queued requests, polled: connection slots are counted across workers but
 * a worker only hears of its own connections closing. */
static void waiters_poll(struct l7_timer *t)
{
	struct bm_l7_engine *e = (struct bm_l7_engine *)((char *)t - offsetof(struct bm_l7_engine, t_waiters));
	struct l7_x *x = e->waiters.head;
	unsigned budget = 1024;

	/* Serving one may end or queue others: restart from the head after
	 * each one served; bounded per poll. */
	while (x && budget--) {
		struct l7_x *next = x->wnext;

		x = serve_waiter(e, x) ? e->waiters.head : next;
	}
	if (e->waiters.head)
		l7_timer_arm(e, &e->t_waiters, WAITERS_POLL_MS);
}

void l7_waiters_init(struct bm_l7_engine *e)
{
	l7_timer_init(&e->t_waiters, waiters_poll);
}

void l7_x_end(struct l7_x *x, int reuse)
{
	struct bm_l7_engine *e = x->e;
	struct l7_uconn *uc = x->uc;

	if (x->h2) {
		l7_h2u_end(x, reuse);
		return;
	}
	waiters_remove(e, x);
	l7_x_pending_give(x);
	if (!uc)
		return;
	uc->x = NULL;
	x->uc = NULL;
	if (!reuse || !x->req_done || !x->resp_done || !uc->keep || uc->connecting ||
	    uc->wq.bytes || uc->werr || e->freeing ||
	    (uc->pool.max_reqs && uc->n_reqs >= uc->pool.max_reqs)) {
		uconn_close(uc);
		return;
	}
	/* Requests of other workers wait for a slot of this cluster: give it
	 * back rather than keep it idle here (it cannot be handed over). */
	if (uc->pool.rt && __atomic_load_n(&uc->pool.rt->waiting, __ATOMIC_RELAXED) &&
	    !local_waiter(e, uc->pool.rt)) {
		uconn_close(uc);
		return;
	}
	uc->idle = 1;
	uc->idle_since_ms = l7_now_ms();
	l7_timer_arm(e, &uc->t, uc->pool.idle_ms);
	if (uc->pool.rt)
		kick_waiters(e, uc->pool.rt);
}

void l7_pool_drop(struct bm_l7_engine *e, uint64_t pool_key)
{
	l7_h2u_pool_drop(e, pool_key);
	for (struct l7_uconn *uc = e->uconns, *next; uc; uc = next) {
		next = uc->next;
		if (uc->idle && uc->pool.key == pool_key)
			uconn_close(uc);
	}
}

void l7_upstream_shutdown(struct bm_l7_engine *e)
{
	l7_h2u_shutdown(e);
	while (e->waiters.head) {
		struct l7_x *x = e->waiters.head;

		x->ops->fail(x, BM_AR_RESET);
		if (e->waiters.head == x)
			l7_x_end(x, 0);
	}
	while (e->uconns) {
		struct l7_uconn *uc = e->uconns;

		if (uc->x)
			uc->x->ops->fail(uc->x, BM_AR_RESET);
		if (e->uconns == uc)
			uconn_close(uc);
	}
}

static void uconn_flush(struct l7_uconn *uc)
{
	while (uc->wq.bytes && uc->writable && !uc->connecting && !uc->werr) {
		if (bm_chunkq_send(uc->e->l, &uc->wq, uc->ev.fd) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				uc->writable = 0;
				return;
			}
			/* Noticed on the next loop turn, never inside a write. */
			uc->werr = 1;
			l7_timer_arm(uc->e, &uc->t, 0);
			return;
		}
		uc->wrote = 1;
	}
}

int l7_x_write(struct l7_x *x, const uint8_t *d, size_t n)
{
	struct l7_uconn *uc = x->uc;
	int err;

	if (x->h2) {
		err = bm_chunkq_append(x->e->l, l7_h2u_wq(x), d, n);
		if (!err)
			l7_h2u_flush(x);
		return err;
	}
	if (!uc)
		return -ENOTCONN;
	err = bm_chunkq_append(x->e->l, &uc->wq, d, n);
	if (!err)
		uconn_flush(uc);
	return err;
}

int l7_x_write_q(struct l7_x *x, const struct bm_chunkq *q, size_t from)
{
	struct bm_chunkq *wq = l7_x_wq(x);
	int err = 0;

	if (!wq)
		return -ENOTCONN;
	for (const struct bm_chunk *c = q->head; c && !err; c = c->next) {
		if (from >= c->len) {
			from -= c->len;
			continue;
		}
		err = bm_chunkq_append(x->e->l, wq, c->data + c->off + from, c->len - from);
		from = 0;
	}
	if (!err)
		l7_x_flush(x);
	return err;
}

struct bm_chunkq *l7_x_wq(struct l7_x *x)
{
	if (x->h2)
		return l7_h2u_wq(x);
	return x->uc ? &x->uc->wq : NULL;
}

void l7_x_flush(struct l7_x *x)
{
	if (x->h2)
		l7_h2u_flush(x);
	else if (x->uc)
		uconn_flush(x->uc);
}

size_t l7_x_queued(const struct l7_x *x)
{
	if (x->h2)
		return l7_h2u_queued(x);
	return x->uc ? x->uc->wq.bytes : 0;
}

static void uconn_read(struct l7_uconn *uc);

void l7_x_pause(struct l7_x *x, int paused)
{
	x->paused = paused ? 1 : 0;
	if (x->h2) {
		l7_h2u_pause(x, paused);
		return;
	}
	if (!paused && x->uc && x->uc->readable && !x->uc->connecting)
		uconn_read(x->uc);
}

/* The exchange lost its connection before the response ended. */
static void uconn_fail(struct l7_uconn *uc, enum bm_attempt_result r)
{
	struct l7_x *x = uc->x;

	uc->keep = 0;
	if (!x) {
		uconn_close(uc);
		return;
	}
	l7_x_pending_give(x);
	x->ops->fail(x, r); /* ends x: closes uc */
	if (uc->x == x)
		l7_x_end(x, 0);
}

static void uconn_timer(struct l7_timer *t)
{
	struct l7_uconn *uc = (struct l7_uconn *)((char *)t - offsetof(struct l7_uconn, t));

	if (uc->connecting)
		uconn_fail(uc, BM_AR_CONNECT_FAILURE);
	else if (uc->idle || !uc->x)
		uconn_close(uc);
	else if (uc->werr)
		uconn_fail(uc, uc->x->got_bytes || uc->wrote ? BM_AR_RESET : BM_AR_RESET_BEFORE_REQ);
}

static int feed_body(void *u, const uint8_t *d, size_t n)
{
	struct l7_uconn *uc = u;
	struct l7_x *x = uc->x;

	x->ops->body(x, d, n);
	return uc->x == x ? 0 : -ECANCELED;
}

/* 101 Switching Protocols: the socket leaves the pool for the owner's
 * relay, with whatever followed the head. */
static void uconn_upgraded(struct l7_uconn *uc, const uint8_t *rest, size_t n)
{
	struct l7_x *x = uc->x;
	int fd = uc->ev.fd;

	if (!x->ops->upgraded) {
		uconn_fail(uc, BM_AR_RESET);
		return;
	}
	bm_loop_del(uc->e->l, &uc->ev);
	uc->ev.fd = -1;
	uc->x = NULL;
	x->uc = NULL;
	x->resp_done = 1;
	uconn_close(uc);
	x->ops->upgraded(x, fd, rest, n);
}

/* Response bytes for the current exchange. */
static void uconn_feed(struct l7_uconn *uc, const uint8_t *d, size_t n)
{
	struct l7_x *x = uc->x;

	while (n && uc->x == x) {
		ssize_t r;

		if (uc->rp.state == BM_H1_HEAD) {
			r = bm_h1_parse_head(&uc->rp, d, n);
			if (r < 0) {
				uconn_fail(uc, BM_AR_RESET); /* upstream protocol error */
				return;
			}
			d += r;
			n -= (size_t)r;
			if (uc->rp.state != BM_H1_BODY)
				continue;
			if (uc->rp.head.status / 100 == 1 && uc->rp.head.status != 101) {
				/* 1xx interim response: skip it (its body is empty) */
				r = bm_h1_parse_body(&uc->rp, d, n, NULL, NULL);
				if (r < 0) {
					uconn_fail(uc, BM_AR_RESET);
					return;
				}
				d += r;
				n -= (size_t)r;
				bm_h1_reset(&uc->rp);
				continue;
			}
			if (!uc->rp.head.keep_alive || uc->rp.head.status == 101)
				uc->keep = 0;
			/* A small response usually comes in one read: then its
			 * head and body can leave in one write (ops->head). Small:
			 * well under every front's high water, so the front never
			 * asks for a pause while the write waits for the end. */
			x->body_in_hand = uc->rp.head.status != 101 && uc->rp.head.content_length >= 0 &&
					  uc->rp.head.content_length <= L7_CORK_MAX &&
					  n >= (size_t)uc->rp.head.content_length;
			x->ops->head(x, &uc->rp.head);
			if (uc->rp.head.status == 101 && uc->x == x) {
				uconn_upgraded(uc, d, n);
				return;
			}
			continue;
		}
		if (uc->rp.state == BM_H1_BODY) {
			r = bm_h1_parse_body(&uc->rp, d, n, feed_body, uc);
			if (r == -ECANCELED || uc->x != x)
				return;
			if (r < 0) {
				uconn_fail(uc, BM_AR_RESET);
				return;
			}
			d += r;
			n -= (size_t)r;
			if (uc->rp.state == BM_H1_DONE) {
				if (n)
					uc->keep = 0; /* bytes after the response: not reusable */
				x->resp_done = 1;
				x->n_trailers = bm_h1_trailers(&uc->rp, uc->tr, BM_H1_TRAILERS_MAX);
				x->trailers = uc->tr;
				x->ops->done(x);
				return;
			}
		} else {
			uc->keep = 0;
			return;
		}
	}
}

static void uconn_eof(struct l7_uconn *uc)
{
	struct l7_x *x = uc->x;

	uc->keep = 0;
	if (uc->rp.state == BM_H1_BODY && uc->rp.head.until_close) {
		if (bm_h1_parse_body(&uc->rp, NULL, 0, feed_body, uc) >= 0 && uc->x == x &&
		    uc->rp.state == BM_H1_DONE) {
			x->resp_done = 1;
			x->ops->done(x);
			return;
		}
	}
	if (uc->x == x)
		uconn_fail(uc, x->got_bytes || uc->wrote ? BM_AR_RESET : BM_AR_RESET_BEFORE_REQ);
}

static void uconn_read(struct l7_uconn *uc)
{
	struct bm_l7_engine *e = uc->e;
	struct l7_x *x = uc->x;

	while (x && uc->x == x && !x->paused && uc->readable && !uc->closed) {
		ssize_t n = recv(uc->ev.fd, e->l->scratch, BM_SCRATCH, 0);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				uc->readable = 0;
				return;
			}
			uconn_fail(uc, x->got_bytes || uc->wrote ? BM_AR_RESET :
								    BM_AR_RESET_BEFORE_REQ);
			return;
		}
		if (!n) {
			uconn_eof(uc);
			return;
		}
		x->got_bytes = 1;
		/* a short read emptied the socket (edge-triggered: more bytes
		 * raise a new edge) */
		if ((size_t)n < BM_SCRATCH && !uc->read_to_end)
			uc->readable = 0;
		uconn_feed(uc, e->l->scratch, (size_t)n);
	}
}

static void uconn_on_event(struct bm_ev *ev, uint32_t events)
{
	struct l7_uconn *uc = (struct l7_uconn *)ev;
	struct l7_x *x;

	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		uc->writable = 1;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		uc->readable = 1;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		uc->read_to_end = 1; /* read until EOF/EAGAIN: no later edge announces it */
	if (uc->connecting) {
		int r = l7_usock_connected(uc->e, ev, events, &uc->t);

		if (r < 0)
			uconn_fail(uc, BM_AR_CONNECT_FAILURE);
		if (r <= 0)
			return;
		uc->connecting = 0;
		if (uc->x) {
			l7_x_pending_give(uc->x);
			uc->x->ops->ready(uc->x);
		}
		if (uc->closed)
			return;
	}
	if (uc->idle) {
		if (uc->readable && !idle_usable(uc))
			uconn_close(uc);
		return;
	}
	x = uc->x;
	if (!x)
		return;
	if (uc->writable && uc->wq.bytes) {
		uconn_flush(uc);
		if (uc->x == x && uc->wq.bytes < L7_HIGH_WATER && x->ops->writable)
			x->ops->writable(x);
	}
	if (uc->x == x)
		uconn_read(uc);
}

/* ---- load balancing ----------------------------------------------------------- */

static struct l7_bact *bact_slot(struct bm_l7_engine *e, uint32_t ip, uint16_t port, int create)
{
	uint32_t h = (ip * 2654435761u) ^ ((uint32_t)port * 40503u);

	for (uint32_t i = 0; i < 64; i++) {
		struct l7_bact *s = &e->bact[(h + i) % L7_BACT_SLOTS];

		if (s->used && s->ip == ip && s->port == port)
			return s;
		if (!s->used) {
			if (!create)
				return NULL;
			s->used = 1;
			s->ip = ip;
			s->port = port;
			s->active = 0;
			return s;
		}
	}
	return NULL;
}

void l7_backend_active(struct bm_l7_engine *e, const struct bm_l7_backend *b, int delta)
{
	struct l7_bact *s = bact_slot(e, b->ip, b->port, 1);

	if (s && (delta > 0 || s->active))
		s->active = (uint32_t)((int)s->active + delta);
}

static uint32_t active_of(struct bm_l7_engine *e, const struct bm_l7_backend *b)
{
	struct l7_bact *s = bact_slot(e, b->ip, b->port, 0);

	return s ? s->active : 0;
}

static int was_tried(const struct bm_l7_backend *b, const uint32_t (*tried)[2], unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (tried[i][0] == b->ip && tried[i][1] == b->port)
			return 1;
	return 0;
}

const struct bm_l7_backend *l7_lb_pick(struct bm_l7_engine *e, const struct bm_l7_cluster *c,
				       const uint32_t (*tried)[2], unsigned n_tried,
				       int avoid_tried)
{
	uint32_t *cand, n = 0, healthy = 0, fresh = 0;

	if (!c || !c->n)
		return NULL;
	if (e->cap_ids < c->n) {
		uint32_t *ids = realloc(e->scratch_ids, c->n * sizeof(*ids));

		if (!ids)
			return NULL;
		e->scratch_ids = ids;
		e->cap_ids = c->n;
	}
	cand = e->scratch_ids;
	for (uint32_t i = 0; i < c->n; i++)
		if (!e->outlier || !c->b[i].id || !bm_outlier_is_ejected(e->outlier, c->b[i].id))
			cand[n++] = i;
	healthy = n;
	/* Panic (minHealthPercent): too few healthy hosts, use them all. */
	if ((uint64_t)healthy * 100 < (uint64_t)c->min_health * c->n) {
		n = 0;
		for (uint32_t i = 0; i < c->n; i++)
			cand[n++] = i;
	}
	if (!n)
		return NULL;
	/* retryIgnorePreviousHosts: another host when there is one (the
	 * filter writes nothing when every candidate was tried). */
	if (avoid_tried && n_tried) {
		for (uint32_t i = 0; i < n; i++)
			if (!was_tried(&c->b[cand[i]], tried, n_tried))
				cand[fresh++] = cand[i];
		if (fresh)
			n = fresh;
	}
	if (n == 1)
		return &c->b[cand[0]];
	switch (c->lb) {
	case BM_LB_ROUND_ROBIN:
		return &c->b[cand[__atomic_fetch_add(&c->rt->rr, 1, __ATOMIC_RELAXED) % n]];
	case BM_LB_RANDOM:
	case BM_LB_PASSTHROUGH: /* no original destination per request: random */
		return &c->b[cand[l7_rand(e) % n]];
	default: {
		/* LEAST_REQUEST (and unset, LEAST_CONN): power of two choices */
		uint32_t i = l7_rand(e) % n, j = l7_rand(e) % (n - 1);
		const struct bm_l7_backend *a, *b;

		if (j >= i)
			j++;
		a = &c->b[cand[i]];
		b = &c->b[cand[j]];
		return active_of(e, b) < active_of(e, a) ? b : a;
	}
	}
}

/* ---- outlier detection ------------------------------------------------------------ */

enum bm_outlier_ev l7_outlier_ev(enum bm_attempt_result r, int status)
{
	/* A circuit-breaker overflow says nothing about the host (Envoy does
	 * not count it): report it as no error. */
	if (r == BM_AR_OVERFLOW)
		return BM_OE_SUCCESS;
	if (r != BM_AR_RESPONSE)
		return BM_OE_LOCAL_FAILURE;
	if (status == 502 || status == 503 || status == 504)
		return BM_OE_GATEWAY;
	return status >= 500 ? BM_OE_5XX : BM_OE_SUCCESS;
}

void l7_outlier(struct bm_l7_engine *e, const struct bm_l7_cluster *c,
		const struct bm_l7_backend *b, enum bm_outlier_ev ev)
{
	uint32_t *ids, n = 0;

	if (!e->outlier || !c || !b->id)
		return;
	if (e->cap_ids < c->n) {
		ids = realloc(e->scratch_ids, c->n * sizeof(*ids));
		if (!ids)
			return;
		e->scratch_ids = ids;
		e->cap_ids = c->n;
	}
	ids = e->scratch_ids;
	for (uint32_t i = 0; i < c->n; i++)
		if (c->b[i].id)
			ids[n++] = c->b[i].id;
	if (bm_outlier_report(e->outlier, &c->od, b->id, ids, n, ev, l7_now_ms()) == 1) {
		e->st.ejections++;
		if (e->ops.ejected)
			e->ops.ejected(e->ops.ctx, c, b);
	}
}
