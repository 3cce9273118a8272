/*
 * What the upstream connection pools of both protocols share: HTTP/1.1
 * (l7upstream.c, a connection per exchange at a time) and HTTP/2 (h2up.c,
 * multiplexed). Circuit breakers and pending requests, which pool a
 * connection or an exchange is of, opening a connection's socket, and the
 * engine's queues of exchanges waiting for one.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include "l7upstream.h"

/* ---- circuit breakers ------------------------------------------------------------ */

int l7_cb_take(uint32_t *ctr, uint32_t max)
{
	uint32_t v = __atomic_load_n(ctr, __ATOMIC_RELAXED);

	do {
		if (max != BM_L7_UNLIMITED && v >= max)
			return 0;
	} while (!__atomic_compare_exchange_n(ctr, &v, v + 1, 1, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	return 1;
}

void l7_cb_give(uint32_t *ctr)
{
	__atomic_sub_fetch(ctr, 1, __ATOMIC_RELAXED);
}

int l7_x_pending_take(struct l7_x *x)
{
	struct bm_l7_cluster_rt *rt = x->c->rt;

	if (!l7_cb_take(&rt->pending, x->c->max_pending)) {
		__atomic_add_fetch(&rt->overflow_pending, 1, __ATOMIC_RELAXED);
		return -EBUSY;
	}
	x->pending = 1;
	return 0;
}

void l7_x_pending_give(struct l7_x *x)
{
	if (x->pending) {
		x->pending = 0;
		l7_cb_give(&x->c->rt->pending);
	}
}

/* ---- pools and their sockets ------------------------------------------------------- */

struct l7_upool l7_upool_of(const struct l7_x *x)
{
	const struct bm_l7_cluster *c = x->c;

	return (struct l7_upool){
		.key = x->pool_key,
		.rt = c->rt,
		.ip = x->b.ip,
		.port = x->b.port,
		.max_reqs = c->max_requests_per_conn,
		.idle_ms = c->idle_timeout_ms ? c->idle_timeout_ms : 3600000,
	};
}

int l7_x_connect(struct l7_x *x)
{
	int fd = -1, err = x->e->ops.connect(x->user, &x->b, &fd);

	if (err >= 0 && fd < 0)
		err = -ECONNREFUSED;
	if (err < 0)
		return err;
	/* head and body go out as separate writes: no Nagle wait between them
	 * (fails harmlessly on the socketpairs into HBONE) */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	return fd;
}

int l7_usock_add(struct l7_x *x, struct bm_ev *ev, struct l7_timer *t)
{
	struct bm_l7_engine *e = x->e;

	if (bm_loop_add(e->l, ev, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET))
		return -errno;
	e->st.upstream_cx++;
	l7_timer_arm(e, t, x->c->connect_timeout_ms ? x->c->connect_timeout_ms : 10000);
	return 0;
}

int l7_usock_connected(struct bm_l7_engine *e, struct bm_ev *ev, uint32_t events,
		       struct l7_timer *t)
{
	if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		return 0;
	if (bm_sock_connect_result(ev->fd, events))
		return -1;
	l7_timer_cancel(e, t);
	return 1;
}

/* ---- exchanges waiting ------------------------------------------------------------- */

void l7_xq_add(struct l7_xq *q, struct l7_x *x)
{
	x->wnext = NULL;
	x->wprev = q->tail;
	if (q->tail)
		q->tail->wnext = x;
	else
		q->head = x;
	q->tail = x;
}

void l7_xq_del(struct l7_xq *q, struct l7_x *x)
{
	if (x->wprev)
		x->wprev->wnext = x->wnext;
	else
		q->head = x->wnext;
	if (x->wnext)
		x->wnext->wprev = x->wprev;
	else
		q->tail = x->wprev;
	x->wnext = x->wprev = NULL;
}
