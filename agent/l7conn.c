/*
 * The L7 engine's downstream connections: reading and writing the client
 * socket, the first-bytes sniffing (HTTP/1.1, the HTTP/2 preface, or
 * anything else for the L4 relay), connection teardown, and the engine
 * object itself. Requests are read by the fronts (l7h1.c, h2down.c) and
 * run by l7proxy.c.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include "l7upstream.h"

static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* ---- client output ---------------------------------------------------------- */

void l7_dconn_flush(struct l7_dconn *d)
{
	while (d->out.bytes && d->writable && !d->closed) {
		if (bm_chunkq_send(d->e->l, &d->out, d->ev.fd) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				d->writable = 0;
				break;
			}
			l7_dconn_close(d, 1);
			return;
		}
	}
	if (d->closed)
		return;
	if (d->h2)
		l7_h2_drained(d);
	else if (d->out.bytes < OUT_LOW)
		l7_rq_drained(&d->rq);
	if (d->closed)
		return;
	if (!d->out.bytes && d->closing)
		l7_dconn_close(d, 0);
}

int l7_out_write(struct l7_dconn *d, const void *p, size_t n)
{
	return bm_chunkq_append(d->e->l, &d->out, p, n);
}

static int dconn_read(struct l7_dconn *d)
{
	int got = 0;

	while (d->readable && !d->eof && d->in.bytes < IN_MAX) {
		struct bm_chunk *c = d->in.tail;
		ssize_t n;

		if (!c || c->off + c->len == BM_CHUNK_DATA) {
			c = bm_chunk_get(d->e->l);
			if (!c)
				return got;
			if (d->in.tail)
				d->in.tail->next = c;
			else
				d->in.head = c;
			d->in.tail = c;
		}
		n = recv(d->ev.fd, c->data + c->off + c->len, BM_CHUNK_DATA - c->off - c->len, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				d->readable = 0;
			else
				d->eof = 1;
			break;
		}
		if (!n) {
			d->eof = 1;
			break;
		}
		c->len += (uint32_t)n;
		d->in.bytes += (size_t)n;
		got = 1;
		/* Edge-triggered: a short read emptied the socket, and bytes
		 * arriving later raise a new edge, so skip the recv that would
		 * only say EAGAIN (one syscall per request saved). */
		if ((size_t)n < BM_CHUNK_DATA - (c->off + c->len - (uint32_t)n) && !d->read_to_end)
			d->readable = 0;
	}
	return got;
}

void l7_dconn_pump(struct l7_dconn *d)
{
	if (d->in_pump) {
		d->again = 1;
		return;
	}
	d->in_pump = 1;
	do {
		d->again = 0;
		while (!d->closed) {
			int p = dconn_read(d);

			p |= l7_dconn_process(d);
			if (!p)
				break;
		}
	} while (d->again && !d->closed);
	d->in_pump = 0;
	if (d->closed || !d->eof || d->in.bytes)
		return;
	/* The client's end. A request in progress dies with it (DC). */
	if (d->h2) {
		l7_dconn_close(d, !l7_h2_idle(d));
		return;
	}
	if (d->rq.active) {
		if (!d->rq.resp_done)
			l7_add_flag(&d->rq, "DC");
		l7_dconn_close(d, 1);
		return;
	}
	d->closing = 1;
	l7_dconn_flush(d);
}

/* ---- L4 fallback ------------------------------------------------------------------------------------ */

/* Not HTTP (no request line, no HTTP/2 preface): relay the bytes as L4 to
 * a host of the service's first destination (outbound) or to the app
 * (inbound). Nothing was consumed: the sniffing only peeked. */
static void dconn_l4(struct l7_dconn *d)
{
	struct bm_l7_engine *e = d->e;
	const struct bm_l7_backend *b = NULL;
	int ufd = -1, fd = d->ev.fd;

	if (d->peer.inbound) {
		if (!e->ops.l4_allowed || !e->ops.l4_allowed(d->peer.user))
			b = &d->ib;
	} else {
		const struct bm_l7_service *svc = d->cfg ? bm_l7_find(d->cfg, d->peer.vip, d->peer.port) :
							   NULL;

		for (size_t i = 0; svc && !b && i < svc->n_route; i++)
			if (svc->route[i].n_dest && svc->route[i].dest[0].c)
				b = l7_lb_pick(e, svc->route[i].dest[0].c, NULL, 0, 0);
	}
	if (!b || e->ops.connect(d->peer.user, b, &ufd) < 0 || ufd < 0) {
		l7_dconn_close(d, 1);
		return;
	}
	e->st.l4_fallbacks++;
	bm_loop_del(e->l, &d->ev);
	d->fd_given = 1;
	l7_dconn_close(d, 0);
	bm_relay_start(e->l, fd, ufd, d->peer.l4_dir);
}

static void dconn_sniff(struct l7_dconn *d)
{
	char b[BM_L7_SNIFF_BYTES];
	ssize_t n = recv(d->ev.fd, b, sizeof(b), MSG_PEEK);
	ssize_t i = 0;

	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			d->readable = 0;
		else
			l7_dconn_close(d, 1);
		return;
	}
	if (!n) {
		l7_dconn_close(d, 0);
		return;
	}
	if (!memcmp(b, H2_PREFACE, (size_t)n)) {
		if (n < BM_L7_SNIFF_BYTES)
			return; /* maybe the preface: wait for more */
		/* HTTP/2 with prior knowledge (h2c, gRPC): every stream is a
		 * request of its own (h2down.c) */
		d->sniffing = 0;
		l7_timer_cancel(d->e, &d->t_sniff);
		if (l7_h2_start(d)) {
			l7_dconn_close(d, 1);
			return;
		}
		l7_dconn_pump(d);
		return;
	}
	while (i < n && (isupper((unsigned char)b[i]) || b[i] == '-' || b[i] == '_'))
		i++;
	if (i == n && n < BM_L7_SNIFF_BYTES)
		return; /* still a method token */
	if (i > 0 && i < n && b[i] == ' ') {
		d->sniffing = 0;
		l7_timer_cancel(d->e, &d->t_sniff);
		l7_dconn_pump(d);
		return;
	}
	dconn_l4(d);
}

static void sniff_timeout(struct l7_timer *t)
{
	struct l7_dconn *d = (struct l7_dconn *)((char *)t - offsetof(struct l7_dconn, t_sniff));

	if (d->sniffing)
		dconn_l4(d); /* a server-first protocol */
}

/* ---- downstream connections ------------------------------------------------------------------------ */

static void dconn_free(void *obj)
{
	free(obj);
}

void l7_dconn_close(struct l7_dconn *d, int reset)
{
	struct bm_l7_engine *e = d->e;

	if (d->closed)
		return;
	if (d->rq.active) {
		if (!d->rq.resp_done && !d->rq.flags[0])
			l7_add_flag(&d->rq, "DC");
		if (!d->rq.resp_done && !d->rq.resp_started)
			d->rq.status = 0;
		l7_rq_end(&d->rq, 1);
	}
	d->closed = 1;
	if (d->h2)
		l7_h2_close(d);
	d->ev.dead = 1;
	l7_timer_cancel(e, &d->rq.t_route);
	l7_timer_cancel(e, &d->rq.t_try);
	l7_timer_cancel(e, &d->rq.t_step);
	l7_timer_cancel(e, &d->t_sniff);
	if (d->prev)
		d->prev->next = d->next;
	else
		e->dconns = d->next;
	if (d->next)
		d->next->prev = d->prev;
	if (!d->fd_given) {
		if (reset) {
			bm_close_reset(d->ev.fd);
		} else {
			shutdown(d->ev.fd, SHUT_WR);
			close(d->ev.fd);
		}
	}
	bm_chunkq_clear(e->l, &d->in);
	bm_chunkq_clear(e->l, &d->out);
	bm_chunkq_clear(e->l, &d->rq.body);
	bm_chunkq_clear(e->l, &d->rq.uhead);
	bm_h1_fini(&d->qp);
	if (d->peer.inbound)
		l7_pool_drop(e, d->pool_key);
	if (d->cfg)
		bm_l7_put(d->cfg);
	d->cfg = NULL;
	if (d->peer.src_labels)
		json_decref((json_t *)d->peer.src_labels);
	if (e->ops.release)
		e->ops.release(d->peer.user);
	e->st.downstream_cx--;
	bm_loop_defer_free(e->l, d, dconn_free);
}

static void dconn_on_event(struct bm_ev *ev, uint32_t events)
{
	struct l7_dconn *d = (struct l7_dconn *)ev;

	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		d->writable = 1;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		d->readable = 1;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		d->read_to_end = 1; /* read until EOF/EAGAIN: no later edge announces it */
	if (d->sniffing) {
		if (d->readable)
			dconn_sniff(d);
		return;
	}
	if (d->writable && d->out.bytes)
		l7_dconn_flush(d);
	if (!d->closed && d->readable)
		l7_dconn_pump(d);
}

int bm_l7_engine_accept(struct bm_l7_engine *e, int fd, const struct bm_l7_peer *peer)
{
	struct l7_dconn *d = calloc(1, sizeof(*d));

	if (!d) {
		bm_close_reset(fd);
		if (e->ops.release)
			e->ops.release(peer->user);
		return -ENOMEM;
	}
	d->e = e;
	d->ev.fn = dconn_on_event;
	d->ev.fd = fd;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	d->peer = *peer;
	if (d->peer.src_labels)
		json_incref((json_t *)d->peer.src_labels);
	d->peer.src_ns[sizeof(d->peer.src_ns) - 1] = 0;
	d->peer.src_name[sizeof(d->peer.src_name) - 1] = 0;
	d->peer.src_principal[sizeof(d->peer.src_principal) - 1] = 0;
	d->peer.dst_ns[sizeof(d->peer.dst_ns) - 1] = 0;
	d->peer.dst_name[sizeof(d->peer.dst_name) - 1] = 0;
	memset(&d->peer.trace, 0, sizeof(d->peer.trace)); /* the engine's, per request */
	d->cfg = e->cfg;
	if (d->cfg)
		bm_l7_get(d->cfg);
	bm_h1_init(&d->qp, 0);
	l7_rq_init(&d->rq, d, &l7_h1_front);
	l7_timer_init(&d->t_sniff, sniff_timeout);
	d->sniffing = 1;
	if (peer->inbound) {
		/* The app: one host, one connection per downstream connection. */
		d->pool_key = (1ull << 63) | ++e->serial;
		d->ib.ip = peer->dst_ip;
		d->ib.port = htons(peer->dst_port);
		d->icl.rt = &d->irt;
		d->icl.b = &d->ib;
		d->icl.n = 1;
		d->icl.lb = BM_LB_RANDOM;
		d->icl.max_connections = 1;
		d->icl.max_pending = d->icl.max_requests = d->icl.max_retries = BM_L7_UNLIMITED;
		d->icl.idle_timeout_ms = 3600000;
		d->icl.connect_timeout_ms = 10000;
		d->icl.port = peer->dst_port;
		snprintf(d->icl.name, sizeof(d->icl.name), "inbound|%u||", peer->dst_port);
	} else {
		d->pool_key = peer->pool_key;
	}
	d->next = e->dconns;
	if (e->dconns)
		e->dconns->prev = d;
	e->dconns = d;
	e->st.downstream_cx++;
	if (bm_loop_add(e->l, &d->ev, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
		int err = -errno;

		l7_dconn_close(d, 1);
		return err;
	}
	if (peer->inbound)
		l7_timer_arm(e, &d->t_sniff, e->o.sniff_timeout_ms ? e->o.sniff_timeout_ms : 5000);
	return 0;
}

/* ---- the engine ------------------------------------------------------------------------------------------ */

static void engine_on_timer(struct bm_ev *ev, uint32_t events)
{
	struct bm_l7_engine *e = (struct bm_l7_engine *)((char *)ev - offsetof(struct bm_l7_engine, tev));
	uint64_t n;

	if (read(ev->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		return;
	e->armed_at = 0; /* fired: re-armed below for what is left */
	l7_timers_run(e);
}

struct bm_l7_engine *bm_l7_engine_new(struct bm_loop *l, const struct bm_l7_ops *ops,
				      const struct bm_l7_engine_opts *o)
{
	struct bm_l7_engine *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->l = l;
	e->ops = *ops;
	if (o)
		e->o = *o;
	e->outlier = o ? o->outlier : NULL;
	e->bact = calloc(L7_BACT_SLOTS, sizeof(*e->bact));
	l7_waiters_init(e);
	e->tev.fn = engine_on_timer;
	e->tev.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (!e->bact || e->tev.fd < 0 || bm_loop_add(l, &e->tev, EPOLLIN))
		goto err;
	if (getrandom(e->rng, sizeof(e->rng), 0) != sizeof(e->rng) || !(e->rng[0] | e->rng[1])) {
		e->rng[0] = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)e;
		e->rng[1] = l7_now_ms() | 1;
	}
	return e;
err:
	if (e->tev.fd >= 0)
		close(e->tev.fd);
	free(e->bact);
	free(e);
	return NULL;
}

void bm_l7_engine_free(struct bm_l7_engine *e)
{
	if (!e)
		return;
	while (e->dconns)
		l7_dconn_close(e->dconns, 1);
	e->freeing = 1;
	l7_upstream_shutdown(e); /* idle connections and mirrors */
	bm_loop_del(e->l, &e->tev);
	close(e->tev.fd);
	if (e->cfg)
		bm_l7_put(e->cfg);
	free(e->heap);
	free(e->bact);
	free(e->scratch_ids);
	free(e);
}

void bm_l7_engine_set_config(struct bm_l7_engine *e, struct bm_l7_config *cfg)
{
	if (cfg)
		bm_l7_get(cfg);
	if (e->cfg)
		bm_l7_put(e->cfg);
	e->cfg = cfg;
}

void bm_l7_engine_set_outlier(struct bm_l7_engine *e, struct bm_outlier *o)
{
	e->outlier = o;
}

const struct bm_l7_stats *bm_l7_engine_stats(const struct bm_l7_engine *e)
{
	return &e->st;
}
