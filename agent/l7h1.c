/*
 * The HTTP/1.1 front of the L7 engine: parses requests off a downstream
 * connection one at a time in arrival order (pipelined ones wait their
 * turn), runs each through the shared pipeline (l7proxy.c) as the
 * connection's d->rq, and frames the responses: content-length, chunked
 * (with the upstream's trailers), or the connection's end for HTTP/1.0.
 * An Upgrade (WebSocket) request answered 101 turns the connection into a
 * byte relay to the upstream's socket.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "fmt.h"
#include "l7upstream.h"

static struct l7_dconn *RQD(struct l7_req *rq)
{
	return rq->d;
}

static int h1_head(struct l7_req *rq, int status, const char *reason, struct bm_h1_hlist *hl,
		   int64_t clen, int has_body)
{
	struct l7_dconn *d = RQD(rq);
	const struct bm_h1_head *qh = rq->h;
	char len[24];
	int err = 0;

	rq->resp_chunked = 0;
	if (status == 101) {
		/* the relay takes over: no framing */
	} else if (clen >= 0) {
		err = bm_h1_hlist_add(hl, "content-length", len, bm_utoa(len, (uint64_t)clen));
	} else if (has_body) {
		if (qh->minor >= 1)
			err = bm_h1_hlist_add(hl, "transfer-encoding", "chunked", 7),
			rq->resp_chunked = 1;
		else
			d->close_after = 1; /* HTTP/1.0: the end of the connection delimits */
	} else if (status >= 200 && status != 204 && status != 304) {
		err = bm_h1_hlist_add(hl, "content-length", "0", 1);
	}
	if (!qh->keep_alive)
		d->close_after = 1;
	if (status == 101)
		;
	else if (d->close_after)
		bm_h1_hlist_set(hl, "connection", "close", 5);
	else if (!qh->minor)
		bm_h1_hlist_set(hl, "connection", "keep-alive", 10);
	if (!err)
		err = bm_h1_write_response(d->e->l, &d->out, 1, status, reason, hl);
	if (!err && !rq->cork)
		l7_dconn_flush(d);
	return err;
}

static int h1_body(struct l7_req *rq, const uint8_t *p, size_t n)
{
	struct l7_dconn *d = RQD(rq);
	int err = bm_h1_write_body(d->e->l, &d->out, rq->resp_chunked, p, n);

	if (!err && !rq->cork)
		l7_dconn_flush(d);
	return err;
}

static int h1_end(struct l7_req *rq, const struct bm_http_hdr *t, size_t n)
{
	struct l7_dconn *d = RQD(rq);
	int err = 0;

	if (rq->resp_chunked)
		err = bm_h1_write_end_trailers(d->e->l, &d->out, t, n);
	if (!err)
		l7_dconn_flush(d);
	return err;
}

static size_t h1_queued(struct l7_req *rq)
{
	return RQD(rq)->out.bytes;
}

static void h1_abort(struct l7_req *rq)
{
	struct l7_dconn *d = RQD(rq);

	d->close_after = 1;
	l7_dconn_close(d, 1);
}

static void h1_more(struct l7_req *rq)
{
	struct l7_dconn *d = RQD(rq);

	if (!d->closed)
		l7_dconn_pump(d);
}

static int h1_req_complete(struct l7_req *rq)
{
	return RQD(rq)->qp.state == BM_H1_DONE;
}

static void h1_ended(struct l7_req *rq, int from_close)
{
	struct l7_dconn *d = RQD(rq);

	bm_h1_reset(&d->qp);
	if (!from_close && d->close_after) {
		d->closing = 1;
		l7_dconn_flush(d);
	}
}

/* Write all of p to a non-blocking socket, waiting a little when it is
 * full (only the few bytes around a 101 go this way). */
static int send_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };

			if (poll(&pf, 1, 1000) <= 0)
				return -ETIMEDOUT;
			continue;
		}
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int send_q(int fd, struct bm_chunkq *q)
{
	for (struct bm_chunk *c = q->head; c; c = c->next)
		if (c->len && send_all(fd, c->data + c->off, c->len))
			return -EIO;
	return 0;
}

/* 101 relayed: the client's and the upstream's sockets carry bytes both
 * ways until either side closes (bm_relay). What is buffered on either
 * side goes first. */
static void h1_upgraded(struct l7_req *rq, int ufd, const uint8_t *rest, size_t n)
{
	struct l7_dconn *d = RQD(rq);
	struct bm_l7_engine *e = d->e;
	int fd = d->ev.fd;

	rq->resp_done = 1;
	if (send_q(fd, &d->out) || send_q(ufd, &d->in) || (n && send_all(fd, rest, n))) {
		close(ufd);
		l7_add_flag(rq, "UC");
		l7_dconn_close(d, 1);
		return;
	}
	bm_chunkq_clear(e->l, &d->out);
	bm_chunkq_clear(e->l, &d->in);
	d->qp.state = BM_H1_DONE;
	l7_rq_end(rq, 1);
	bm_loop_del(e->l, &d->ev);
	d->fd_given = 1;
	l7_dconn_close(d, 0);
	if (bm_relay_start(e->l, fd, ufd, d->peer.l4_dir)) {
		close(fd);
		close(ufd);
	}
}

const struct l7_front l7_h1_front = {
	.head = h1_head,
	.body = h1_body,
	.end = h1_end,
	.queued = h1_queued,
	.abort = h1_abort,
	.more = h1_more,
	.req_complete = h1_req_complete,
	.ended = h1_ended,
	.upgraded = h1_upgraded,
	.high_water = L7_HIGH_WATER,
};

/* ---- reading requests ------------------------------------------------------------ */

static void rq_begin(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;
	const struct bm_h1_head *h = &d->qp.head;
	const struct bm_http_hdr *ex;

	rq->h = h;
	l7_rq_reset(rq);
	if (!h->keep_alive)
		d->close_after = 1;
	if (h->upgrade) {
		const struct bm_http_hdr *up = bm_h1_find(h->hdr, h->n_hdr, "upgrade");

		/* CONNECT is not proxied; Upgrade: h2c is ignored (the request
		 * goes as plain HTTP/1.1, as Envoy does); other upgrades
		 * (WebSocket) go end to end and the connection ends with them */
		d->close_after = 1;
		if (!strcmp(h->method, "CONNECT")) {
			l7_rq_local(rq, 501, "upgrade not supported", NULL);
			return;
		}
		rq->upgrade = !up || !bm_h1_has_token(up->value, up->value_len, "h2c");
	}
	/* Envoy answers 100-continue itself and does not forward Expect. */
	ex = bm_h1_find(h->hdr, h->n_hdr, "expect");
	if (ex && h->has_body && bm_h1_has_token(ex->value, ex->value_len, "100-continue"))
		l7_out_write(d, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	l7_rq_route(rq);
}

static int rq_body_piece(void *u, const uint8_t *p, size_t n)
{
	return l7_rq_body(u, p, n);
}

/* A head that does not parse: answer and close. */
static void bad_head(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;
	int st = d->qp.err == BM_H1_ETOOBIG ? 431 : 400;

	bm_chunkq_clear(d->e->l, &d->in);
	memset(rq, 0, offsetof(struct l7_req, t_route));
	rq->h = &d->qp.head;
	rq->active = 1;
	rq->grpc_status = -1;
	rq->start_mono = l7_now_ms();
	rq->start_wall = l7_wall_ms();
	d->close_after = 1;
	d->qp.state = BM_H1_DONE; /* nothing more is read */
	l7_rq_local(rq, st, st == 431 ? "Request Header Fields Too Large" : "Bad Request", "DPE");
}

/* Parse what was read. Returns nonzero when something was consumed. */
int l7_dconn_process(struct l7_dconn *d)
{
	int progress = 0;

	if (d->h2)
		return l7_h2_process(d);
	while (d->in.bytes && !d->closed && !d->closing) {
		struct bm_chunk *c = d->in.head;
		const uint8_t *p = c->data + c->off;
		ssize_t r;

		if (!c->len) {
			l7_q_drop_empty(d->e->l, &d->in);
			continue;
		}
		if (!d->rq.active) {
			r = bm_h1_parse_head(&d->qp, p, c->len);
			if (r < 0) {
				bad_head(d);
				return 1;
			}
			if (!r && d->qp.state == BM_H1_HEAD)
				break; /* nothing taken: wait for more */
			bm_chunkq_consume(d->e->l, &d->in, (size_t)r);
			progress = 1;
			if (d->qp.state == BM_H1_BODY)
				rq_begin(d);
			continue;
		}
		if (d->qp.state != BM_H1_BODY || !l7_rq_body_room(&d->rq))
			break;
		r = bm_h1_parse_body(&d->qp, p, c->len, rq_body_piece, &d->rq);
		if (r < 0) {
			bm_chunkq_clear(d->e->l, &d->in);
			d->close_after = 1;
			l7_add_flag(&d->rq, "DPE");
			if (!d->rq.resp_started) {
				d->qp.state = BM_H1_DONE;
				l7_rq_local(&d->rq, 400, "Bad Request", NULL);
			} else {
				l7_dconn_close(d, 1);
			}
			return 1;
		}
		if (!r && d->qp.state == BM_H1_BODY)
			break;
		bm_chunkq_consume(d->e->l, &d->in, (size_t)r);
		progress = 1;
		if (d->qp.state == BM_H1_DONE)
			l7_rq_body_done(&d->rq);
	}
	return progress;
}
