/*
 * HTTP/2 upstream connections of the L7 engine (h2c with prior
 * knowledge): for clusters whose port speaks HTTP2/GRPC, inbound requests
 * that came as HTTP/2, and ports of unset protocol when the client spoke
 * HTTP/2 (Envoy's USE_DOWNSTREAM_PROTOCOL).
 *
 * Pools are per (pool key, cluster, backend) like the HTTP/1.1 ones, but a
 * connection multiplexes: a new exchange takes a stream slot of an existing
 * connection while it has one by the peer's SETTINGS_MAX_CONCURRENT_STREAMS,
 * maxRequestsPerConnection drains a connection, idleTimeout closes one
 * without streams, tcp.maxConnections bounds them.
 *
 * An exchange that finds no free slot (the pool connects, or every
 * connection is at the peer's limit) is pending, as in Envoy, and bounded by
 * http1MaxPendingRequests (istio-api §2.5: it applies to HTTP/2 too): over
 * it, -EBUSY (503 UO). Pending exchanges wait in the engine's queue
 * (e->h2waiters), never in nghttp2's, oldest first, and take slots as
 * streams close and connections come up (uc_admit).
 *
 * The owner of an exchange writes HTTP/1.1 bytes (l7_x_wq), the same it
 * writes to an HTTP/1.1 upstream; a per-stream request parser turns them
 * into HEADERS, DATA and trailers. The response comes back as a
 * synthesized struct bm_h1_head, body pieces and trailers, so the pipeline
 * (l7proxy.c) does not know which protocol carried its attempt.
 *
 * nghttp2 is never re-entered: sending waits while the session is inside
 * mem_recv, and connections are freed at the end of the loop's batch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <nghttp2/nghttp2.h>
#include "fmt.h"
#include "h2common.h"

#define H2U_TRAILERS 16
#define H2U_WQ_MAX (256 * 1024)   /* frames queued to the socket before we stop producing */

struct l7_h2us;

struct l7_h2uc {
	struct bm_ev ev;
	struct bm_l7_engine *e;
	struct l7_h2uc *next, *prev;
	nghttp2_session *s;
	struct l7_upool pool;
	uint32_t n_reqs;
	unsigned n_streams;
	uint8_t connecting, readable, writable, closed, draining, in_recv, in_send, again;
	struct bm_chunkq wq;
	struct l7_h2us *streams;
	struct l7_timer t;            /* connect timeout, idle timeout, deferred close */
	uint8_t close_pending, failing;
	uint8_t settled;              /* the peer's first SETTINGS came: its stream limit is known */
	uint8_t in_admit, kick;       /* uc_admit running / to run once outside nghttp2 */
};

/* One exchange's stream. */
struct l7_h2us {
	struct l7_x *x;               /* NULL once the owner let go */
	struct l7_h2uc *uc;
	struct l7_h2us *next, *prev;
	int32_t id;                   /* 0 until submitted */
	struct bm_chunkq in;          /* HTTP/1.1 request bytes from the owner */
	struct bm_h1_parser qp;
	struct l7_h2data req;         /* decoded request body, trailers; eof: the request ended */
	uint8_t closed, got_head, done, resp_end, unlinked;
	size_t unconsumed;
	struct bm_http_hdr qtr[L7_H2_TRAILERS];
	/* response head and trailers: strings in hb (never moved once a view
	 * was made: the head's are made at END_HEADERS, trailers' at the end) */
	char hb[16384];
	size_t hlen;
	struct bm_h1_head head;
	struct bm_http_hdr tr[H2U_TRAILERS];
	size_t n_tr;
	uint8_t in_trailers;
};

static void uc_send(struct l7_h2uc *uc);
static void uc_close(struct l7_h2uc *uc);
static void uc_on_event(struct bm_ev *ev, uint32_t events);
static void uc_admit(struct l7_h2uc *uc);

/* ---- streams -------------------------------------------------------------------------- */

static void hs_free_mem(void *obj)
{
	struct l7_h2us *hs = obj;

	bm_h1_fini(&hs->qp);
	l7_obj_put(L7_OBJ_H2US, hs);
}

static void hs_unlink(struct l7_h2us *hs)
{
	struct l7_h2uc *uc = hs->uc;
	struct bm_l7_engine *e = uc->e;

	if (hs->unlinked)
		return;
	hs->unlinked = 1;
	if (hs->prev)
		hs->prev->next = hs->next;
	else
		uc->streams = hs->next;
	if (hs->next)
		hs->next->prev = hs->prev;
	uc->n_streams--;
	bm_chunkq_clear(e->l, &hs->in);
	bm_chunkq_clear(e->l, &hs->req.q);
	bm_loop_defer_free(e->l, hs, hs_free_mem);
	if (uc->closed || uc->connecting) /* the connect timeout stays */
		return;
	if (!uc->n_streams && uc->draining) {
		uc->close_pending = 1;
		l7_timer_arm(e, &uc->t, 0);
	} else if (!uc->n_streams) {
		l7_timer_arm(e, &uc->t, uc->pool.idle_ms);
	}
	if (!uc->failing)
		uc_admit(uc); /* the slot goes to a pending exchange */
}

/* The stream failed before its response ended: tell the owner. */
static void hs_fail(struct l7_h2us *hs, enum bm_attempt_result r)
{
	struct l7_x *x = hs->x;

	if (!x || hs->done)
		return;
	hs->done = 1;
	x->ops->fail(x, r);
}

static int h1_only(const struct bm_http_hdr *h)
{
	if (l7_h2_conn_hdr(h))
		return 1;
	if (h->name_len == 14 && !strncasecmp(h->name, "content-length", 14))
		return 1;
	/* TE: only "trailers" may cross into HTTP/2 (RFC 9113 §8.2.2) */
	if (h->name_len == 2 && !strncasecmp(h->name, "te", 2))
		return !(h->value_len == 8 && !strncasecmp(h->value, "trailers", 8));
	return 0;
}

/* The request head parsed from the owner's bytes: HEADERS. */
static int hs_submit(struct l7_h2us *hs)
{
	const struct bm_h1_head *h = &hs->qp.head;
	const struct bm_http_hdr *host = bm_h1_find(h->hdr, h->n_hdr, "host");
	nghttp2_data_provider prd = { .source.ptr = &hs->req, .read_callback = l7_h2_data_read };
	nghttp2_nv snv[48], *nv = snv;  /* on the stack for usual heads */
	char clen[24];
	size_t n = 0;
	int32_t id;

	if (h->n_hdr + 5 > sizeof(snv) / sizeof(snv[0]) &&
	    !(nv = malloc((h->n_hdr + 5) * sizeof(*nv))))
		return -ENOMEM;
	l7_h2_nv(nv, &n, ":method", 7, h->method, strlen(h->method));
	l7_h2_nv(nv, &n, ":scheme", 7, "http", 4);
	if (host)
		l7_h2_nv(nv, &n, ":authority", 10, host->value, host->value_len);
	l7_h2_nv(nv, &n, ":path", 5, h->target, h->target_len);
	for (size_t i = 0; i < h->n_hdr; i++)
		if (!h1_only(&h->hdr[i]))
			l7_h2_nv(nv, &n, h->hdr[i].name, h->hdr[i].name_len, h->hdr[i].value,
				 h->hdr[i].value_len);
	if (h->content_length > 0) {
		l7_h2_nv(nv, &n, "content-length", 14, clen,
			 bm_utoa(clen, (uint64_t)h->content_length));
	}
	id = nghttp2_submit_request(hs->uc->s, NULL, nv, n, h->has_body ? &prd : NULL, hs);
	if (nv != snv)
		free(nv);
	if (id < 0)
		return -EPROTO;
	hs->id = id;
	if (!h->has_body)
		hs->req.eof = 1;
	return 0;
}

static int hs_body_piece(void *u, const uint8_t *p, size_t n)
{
	struct l7_h2us *hs = u;

	return bm_chunkq_append(hs->uc->e->l, &hs->req.q, p, n);
}

/* Translate what the owner wrote so far. */
static int hs_translate(struct l7_h2us *hs)
{
	struct bm_l7_engine *e = hs->uc->e;

	while (hs->in.bytes && hs->qp.state != BM_H1_DONE) {
		struct bm_chunk *c = hs->in.head;
		ssize_t r;

		if (!c->len) {
			l7_q_drop_empty(e->l, &hs->in);
			continue;
		}
		if (hs->qp.state == BM_H1_HEAD) {
			r = bm_h1_parse_head(&hs->qp, c->data + c->off, c->len);
			if (r < 0)
				return -EPROTO;
			bm_chunkq_consume(e->l, &hs->in, (size_t)r);
			if (hs->qp.state == BM_H1_BODY && hs_submit(hs))
				return -EPROTO;
			continue;
		}
		r = bm_h1_parse_body(&hs->qp, c->data + c->off, c->len, hs_body_piece, hs);
		if (r < 0)
			return -EPROTO;
		bm_chunkq_consume(e->l, &hs->in, (size_t)r);
		if (hs->qp.state == BM_H1_DONE && !hs->req.eof) {
			size_t nt = bm_h1_trailers(&hs->qp, hs->qtr, L7_H2_TRAILERS);

			hs->req.n_tnv = 0;
			for (size_t i = 0; i < nt; i++)
				if (!h1_only(&hs->qtr[i]))
					l7_h2_nv(hs->req.tnv, &hs->req.n_tnv, hs->qtr[i].name,
						 hs->qtr[i].name_len, hs->qtr[i].value,
						 hs->qtr[i].value_len);
			hs->req.eof = 1;
		}
	}
	if (hs->id && (hs->req.q.bytes || hs->req.eof))
		l7_h2_data_resume(hs->uc->s, hs->id, &hs->req);
	return 0;
}

/* ---- nghttp2 callbacks (client) ------------------------------------------------------------ */

static int hb_put(struct l7_h2us *hs, const uint8_t *p, size_t n, const char **out)
{
	if (hs->hlen + n + 1 > sizeof(hs->hb))
		return -E2BIG;
	memcpy(hs->hb + hs->hlen, p, n);
	hs->hb[hs->hlen + n] = 0;
	*out = hs->hb + hs->hlen;
	hs->hlen += n + 1;
	return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *u)
{
	struct l7_h2us *hs = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	if (hs && hs->got_head)
		hs->in_trailers = 1;
	return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *u)
{
	struct l7_h2us *hs = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	struct bm_http_hdr *x;
	const char *n, *v;

	if (!hs || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (nl == 7 && !memcmp(name, ":status", 7)) {
		/* a new head: what an interim (1xx) one left goes */
		hs->head.status = atoi((const char *)value);
		hs->head.n_hdr = 0;
		hs->hlen = 0;
		return 0;
	}
	if (nl && name[0] == ':')
		return 0;
	if (hb_put(hs, name, nl, &n) || hb_put(hs, value, vl, &v))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
	if (hs->in_trailers) {
		if (hs->n_tr == H2U_TRAILERS)
			return 0;
		x = &hs->tr[hs->n_tr++];
	} else {
		if (hs->head.n_hdr == BM_H1_MAX_HDRS)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		x = &hs->head.hdr[hs->head.n_hdr++];
	}
	x->name = n;
	x->name_len = nl;
	x->value = v;
	x->value_len = vl;
	return 0;
}

static void hs_done(struct l7_h2us *hs)
{
	struct l7_x *x = hs->x;

	if (!x || hs->done)
		return;
	hs->done = 1;
	x->resp_done = 1;
	x->trailers = hs->tr;
	x->n_trailers = hs->n_tr;
	x->ops->done(x);
}

static void hs_head(struct l7_h2us *hs, int end)
{
	struct bm_h1_head *h = &hs->head;
	const struct bm_http_hdr *cl = bm_h1_find(h->hdr, h->n_hdr, "content-length");

	hs->got_head = 1;
	h->major = 2;
	h->minor = 0;
	h->reason = "";
	h->keep_alive = 1;
	h->content_length = cl ? strtoll(cl->value, NULL, 10) : -1;
	h->has_body = !end && !hs->x->head_request;
	if (h->has_body && h->content_length == 0)
		h->content_length = -1; /* trailers may still come: not "no body" */
	hs->x->ops->head(hs->x, h);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *u)
{
	struct l7_h2uc *uc = u;
	struct l7_h2us *hs;
	int end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;

	/* The peer's stream limit is known (or changed), or it sent GOAWAY:
	 * the pending exchanges are looked at once out of nghttp2. */
	if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
		uc->settled = 1;
		uc->kick = 1;
	} else if (f->hd.type == NGHTTP2_GOAWAY) {
		uc->kick = 1;
	}
	if (!f->hd.stream_id)
		return 0;
	hs = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (!hs || !hs->x || hs->done)
		return 0;
	if (end)
		hs->resp_end = 1;
	if (f->hd.type == NGHTTP2_HEADERS && !hs->got_head) {
		if (hs->head.status / 100 == 1)
			return 0; /* interim */
		hs->x->got_bytes = 1;
		hs_head(hs, end);
		if (!hs->x || hs->done)
			return 0;
	}
	if (end && (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA))
		hs_done(hs);
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *u)
{
	struct l7_h2us *hs = nghttp2_session_get_stream_user_data(s, id);

	if (!hs || !hs->x || hs->done) {
		nghttp2_session_consume(s, id, len);
		return 0;
	}
	hs->x->got_bytes = 1;
	hs->x->ops->body(hs->x, data, len);
	/* back-pressure: a paused owner gets its credit back on resume */
	if (hs->x && hs->x->paused)
		hs->unconsumed += len;
	else
		nghttp2_session_consume(s, id, len);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *u)
{
	struct l7_h2us *hs = nghttp2_session_get_stream_user_data(s, id);

	if (!hs)
		return 0;
	hs->closed = 1;
	if (hs->x && !hs->done)
		hs_fail(hs, code == NGHTTP2_REFUSED_STREAM ? BM_AR_REFUSED_STREAM : BM_AR_RESET);
	if (!hs->x)
		hs_unlink(hs);
	return 0;
}

static nghttp2_session_callbacks *cbs;
static nghttp2_option *opt;
static pthread_once_t cbs_once = PTHREAD_ONCE_INIT;

static void cbs_init(void)
{
	l7_h2_cbs_new(&cbs, &opt, on_begin_headers, on_header, on_frame_recv, on_data_chunk,
		      on_stream_close);
}

/* ---- connections ------------------------------------------------------------------------------- */

static void pool_rescue(struct l7_h2uc *uc, int connect_failed);

static void uc_free_mem(void *obj)
{
	struct l7_h2uc *uc = obj;

	if (uc->s)
		nghttp2_session_del(uc->s);
	free(uc);
}

/* Every stream fails with r, then the connection goes. */
static void uc_fail(struct l7_h2uc *uc, enum bm_attempt_result r)
{
	uc->draining = 1;
	uc->failing = 1;
	for (struct l7_h2us *hs = uc->streams; hs; hs = hs->next)
		if (hs->x && !hs->done) {
			enum bm_attempt_result rr = r;

			if (r == BM_AR_RESET && !hs->got_head && !hs->x->got_bytes && !hs->id)
				rr = BM_AR_RESET_BEFORE_REQ;
			hs_fail(hs, rr);
		}
	uc_close(uc);
}

static void uc_close(struct l7_h2uc *uc)
{
	struct bm_l7_engine *e = uc->e;

	if (uc->closed)
		return;
	uc->closed = 1;
	uc->ev.dead = 1;
	l7_timer_cancel(e, &uc->t);
	while (uc->streams) {
		struct l7_h2us *hs = uc->streams;

		if (hs->x) {
			hs->x->hs = NULL;
			hs->x->uc = NULL;
			hs->x = NULL;
		}
		hs_unlink(hs);
	}
	if (uc->prev)
		uc->prev->next = uc->next;
	else
		e->h2uconns = uc->next;
	if (uc->next)
		uc->next->prev = uc->prev;
	close(uc->ev.fd);
	bm_chunkq_clear(e->l, &uc->wq);
	if (uc->pool.rt)
		l7_cb_give(&uc->pool.rt->connections);
	pool_rescue(uc, uc->connecting);
	bm_loop_defer_free(e->l, uc, uc_free_mem);
}

static void uc_timer(struct l7_timer *t)
{
	struct l7_h2uc *uc = (struct l7_h2uc *)((char *)t - offsetof(struct l7_h2uc, t));

	if (uc->connecting)
		uc_fail(uc, BM_AR_CONNECT_FAILURE);
	else if (uc->close_pending && uc->n_streams)
		uc_fail(uc, BM_AR_RESET);
	else if (!uc->n_streams)
		uc_close(uc);
}

static void uc_flush(struct l7_h2uc *uc)
{
	while (uc->wq.bytes && uc->writable && !uc->connecting && !uc->closed) {
		if (bm_chunkq_send(uc->e->l, &uc->wq, uc->ev.fd) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				uc->writable = 0;
			else /* noticed on the next loop turn, never inside a write */
				uc->close_pending = 1, l7_timer_arm(uc->e, &uc->t, 0);
			return;
		}
	}
}

/* Frames out while the socket keeps up; owners whose request body drained
 * may write more. */
static void uc_send(struct l7_h2uc *uc)
{
	if (uc->closed || uc->connecting)
		return;
	if (uc->in_recv || uc->in_send) {
		uc->again = 1;
		return;
	}
	uc->in_send = 1;
	do {
		uc->again = 0;
		while (uc->wq.bytes < H2U_WQ_MAX) {
			const uint8_t *p;
			ssize_t n = nghttp2_session_mem_send(uc->s, &p);

			if (n < 0 || (n > 0 && bm_chunkq_append(uc->e->l, &uc->wq, p, (size_t)n))) {
				uc->in_send = 0;
				uc_fail(uc, BM_AR_RESET);
				return;
			}
			if (!n)
				break;
		}
		uc_flush(uc);
		for (struct l7_h2us *hs = uc->streams; hs && !uc->closed; hs = hs->next)
			if (hs->x && !hs->done && hs->req.q.bytes + hs->in.bytes < L7_HIGH_WATER &&
			    !hs->req.eof && hs->x->ops->writable)
				hs->x->ops->writable(hs->x);
	} while (uc->again && !uc->closed);
	uc->in_send = 0;
	if (!uc->closed && !nghttp2_session_want_read(uc->s) &&
	    !nghttp2_session_want_write(uc->s) && !uc->wq.bytes)
		uc_fail(uc, BM_AR_RESET); /* GOAWAY: nothing more on this one */
	else if (uc->kick && !uc->closed)
		uc_admit(uc); /* slots freed or the limit learnt inside nghttp2 */
}

static void uc_read(struct l7_h2uc *uc)
{
	struct bm_l7_engine *e = uc->e;

	while (uc->readable && !uc->closed) {
		ssize_t n = recv(uc->ev.fd, e->l->scratch, BM_SCRATCH, 0), r;

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				uc->readable = 0;
				break;
			}
			uc_fail(uc, BM_AR_RESET);
			return;
		}
		if (!n) {
			uc_fail(uc, BM_AR_RESET);
			return;
		}
		uc->in_recv = 1;
		r = nghttp2_session_mem_recv(uc->s, e->l->scratch, (size_t)n);
		uc->in_recv = 0;
		if (uc->closed)
			return;
		if (r < 0) {
			uc_fail(uc, BM_AR_RESET);
			return;
		}
	}
	uc_send(uc);
}

static void uc_on_event(struct bm_ev *ev, uint32_t events)
{
	struct l7_h2uc *uc = (struct l7_h2uc *)ev;

	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		uc->writable = 1;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		uc->readable = 1;
	if (uc->connecting) {
		int r = l7_usock_connected(uc->e, ev, events, &uc->t);

		if (r < 0)
			uc_fail(uc, BM_AR_CONNECT_FAILURE);
		if (r <= 0)
			return;
		uc->connecting = 0;
		/* the exchanges pending for the pool: the first head goes
		 * with the preface, the rest once the peer's limit is known */
		uc_admit(uc);
		if (uc->closed)
			return;
		if (!uc->n_streams) /* its requests gave up while it connected */
			l7_timer_arm(uc->e, &uc->t, uc->draining ? 0 : uc->pool.idle_ms);
	}
	uc_send(uc);
	if (!uc->closed)
		uc_read(uc);
}

static struct l7_h2uc *uc_dial(struct l7_x *x)
{
	struct bm_l7_engine *e = x->e;
	struct l7_h2uc *uc;
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 } };
	int fd, err;

	if (!l7_cb_take(&x->c->rt->connections, x->c->max_connections)) {
		errno = EBUSY;
		return NULL;
	}
	fd = err = l7_x_connect(x);
	if (err < 0)
		goto err_give;
	uc = calloc(1, sizeof(*uc));
	if (!uc || nghttp2_session_client_new2(&uc->s, cbs, uc, opt)) {
		free(uc);
		close(fd);
		err = -ENOMEM;
		goto err_give;
	}
	uc->e = e;
	uc->ev.fn = uc_on_event;
	uc->ev.fd = fd;
	uc->pool = l7_upool_of(x);
	uc->connecting = 1;
	l7_timer_init(&uc->t, uc_timer);
	nghttp2_submit_settings(uc->s, NGHTTP2_FLAG_NONE, iv, 1);
	nghttp2_session_set_local_window_size(uc->s, NGHTTP2_FLAG_NONE, 0, 1 << 20);
	err = l7_usock_add(x, &uc->ev, &uc->t);
	if (err) {
		nghttp2_session_del(uc->s);
		close(fd);
		free(uc);
		goto err_give;
	}
	uc->next = e->h2uconns;
	if (e->h2uconns)
		e->h2uconns->prev = uc;
	e->h2uconns = uc;
	e->st.h2_upstream_cx++;
	return uc;
err_give:
	l7_cb_give(&x->c->rt->connections);
	errno = -err;
	return NULL;
}

/* ---- the pool: stream slots and the exchanges pending for one ---------------------------- */

/* Takes new streams, now or once connected: not closing, not draining
 * (maxRequestsPerConnection, pool drop), no GOAWAY from the peer. */
static int uc_usable(const struct l7_h2uc *uc)
{
	return !uc->closed && !uc->failing && !uc->draining && !uc->close_pending &&
	       nghttp2_session_check_request_allowed(uc->s);
}

/* Streams uc may carry at once: the peer's SETTINGS_MAX_CONCURRENT_STREAMS
 * once its SETTINGS came. Before, one: the request that waited for the
 * connection leaves with the preface, and a burst cannot overrun a lower
 * limit than nghttp2's assumed 100 only to come back REFUSED_STREAM. */
static uint32_t uc_limit(const struct l7_h2uc *uc)
{
	if (!uc->settled)
		return 1;
	return nghttp2_session_get_remote_settings(uc->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

static int uc_has_room(const struct l7_h2uc *uc)
{
	return uc_usable(uc) && !uc->connecting && uc->n_streams < uc_limit(uc);
}

static void waiter_add(struct bm_l7_engine *e, struct l7_x *x)
{
	x->h2_waiting = 1;
	x->h2_purge = 0;
	l7_xq_add(&e->h2waiters, x);
}

static void waiter_remove(struct bm_l7_engine *e, struct l7_x *x)
{
	if (!x->h2_waiting)
		return;
	l7_xq_del(&e->h2waiters, x);
	x->h2_waiting = x->h2_purge = 0;
}

/* The oldest exchange pending for pool p. */
static struct l7_x *pool_first(const struct bm_l7_engine *e, const struct l7_upool *p)
{
	for (struct l7_x *x = e->h2waiters.head; x; x = x->wnext)
		if (l7_upool_has(p, x))
			return x;
	return NULL;
}

/* Fail every exchange pending for p (every one: p NULL) with r. They are
 * marked first: an owner told may queue new exchanges (a retry, its next
 * pipelined request), which are not failed with these. */
static void pool_purge(struct bm_l7_engine *e, const struct l7_upool *p,
		       enum bm_attempt_result r)
{
	struct l7_x *x;

	for (x = e->h2waiters.head; x; x = x->wnext)
		if (!p || l7_upool_has(p, x))
			x->h2_purge = 1;
	for (;;) {
		for (x = e->h2waiters.head; x && !x->h2_purge; x = x->wnext)
			;
		if (!x)
			return;
		waiter_remove(e, x);
		l7_x_pending_give(x);
		x->ops->fail(x, r);
	}
}

/* A stream slot of uc for x, which is no longer pending. */
static int stream_attach(struct l7_h2uc *uc, struct l7_x *x)
{
	struct l7_h2us *hs = l7_obj_get(L7_OBJ_H2US, sizeof(*hs));

	if (!hs)
		return -ENOMEM;
	bm_h1_init(&hs->qp, 0);
	hs->req.l = uc->e->l;
	hs->x = x;
	hs->uc = uc;
	hs->next = uc->streams;
	if (uc->streams)
		uc->streams->prev = hs;
	uc->streams = hs;
	uc->n_streams++;
	x->hs = hs;
	x->uc = NULL;
	if (uc->n_reqs++)
		x->e->st.upstream_cx_reused++;
	if (uc->pool.max_reqs && uc->n_reqs >= uc->pool.max_reqs)
		uc->draining = 1; /* maxRequestsPerConnection */
	l7_timer_cancel(x->e, &uc->t); /* the idle timeout */
	return 0;
}

/* uc's free stream slots go to the exchanges pending for its pool, oldest
 * first; their heads go now (ready). Never inside nghttp2 nor nested: it
 * is noted (kick) and uc_send runs it on its way out. */
static void uc_admit(struct l7_h2uc *uc)
{
	struct bm_l7_engine *e = uc->e;
	struct l7_x *x;

	if (uc->in_recv || uc->in_send || uc->in_admit) {
		uc->kick = 1;
		return;
	}
	uc->in_admit = 1;
	do {
		uc->kick = 0;
		while (uc_has_room(uc) && (x = pool_first(e, &uc->pool))) {
			waiter_remove(e, x);
			l7_x_pending_give(x);
			if (stream_attach(uc, x))
				x->ops->fail(x, BM_AR_RESET_BEFORE_REQ);
			else
				x->ops->ready(x); /* may end x, free slots (kick) */
		}
	} while (uc->kick && !uc->closed);
	uc->in_admit = 0;
	if (!uc->closed && !uc_usable(uc))
		pool_rescue(uc, 0); /* draining now, or GOAWAY */
}

/* uc no longer takes streams (closed, draining, GOAWAY): the exchanges
 * pending for its pool need another connection. While one of the pool may
 * still serve them (connecting, or at its limit), they wait for it. Else a
 * new one is opened, unless uc failed to connect: then they fail with a
 * connect failure, as Envoy purges its pending requests (no reconnect
 * loop). */
static void pool_rescue(struct l7_h2uc *uc, int connect_failed)
{
	struct bm_l7_engine *e = uc->e;
	struct l7_x *x = pool_first(e, &uc->pool);

	if (!x || e->freeing) /* the engine goes: l7_h2u_shutdown fails them */
		return;
	for (struct l7_h2uc *o = e->h2uconns; o; o = o->next)
		if (o != uc && l7_upool_eq(&uc->pool, &o->pool) && uc_usable(o))
			return;
	if (!connect_failed && uc_dial(x))
		return; /* uc_admit serves them once it is up */
	pool_purge(e, &uc->pool, BM_AR_CONNECT_FAILURE);
}

int l7_h2u_start(struct l7_x *x)
{
	struct bm_l7_engine *e = x->e;
	struct l7_upool p = l7_upool_of(x);
	struct l7_h2uc *uc, *room = NULL;
	int live = 0, coming = 0, err;

	pthread_once(&cbs_once, cbs_init);
	if (!cbs)
		return -ENOMEM;
	x->hs = NULL;
	x->uc = NULL;
	for (uc = e->h2uconns; uc; uc = uc->next) {
		if (!l7_upool_has(&uc->pool, x) || !uc_usable(uc))
			continue;
		live = 1;
		if (uc->connecting || !uc->settled)
			coming = 1;
		if (!room && uc_has_room(uc))
			room = uc;
	}
	if (room && !pool_first(e, &p)) {
		err = stream_attach(room, x);
		if (err)
			return err;
		x->ops->ready(x);
		return 0;
	}
	/* No free slot: pending until one comes (Envoy: the pool connects, or
	 * every connection is at its concurrent-stream limit). */
	err = l7_x_pending_take(x);
	if (err)
		return err;
	waiter_add(e, x);
	if (room) {
		uc_admit(room); /* older ones of the pool first */
		return 0;
	}
	/* Pool size: a new connection when none of the pool has a free slot
	 * and none is on its way (connecting, or its SETTINGS not in yet), up
	 * to tcp.maxConnections. At that bound the exchange waits for a slot
	 * of one that is up; with no connection at all, -EBUSY (503 UO) as
	 * before, or the connector's error (a connect failure). */
	if (!coming && !uc_dial(x) && !live) {
		err = errno == EBUSY ? -EBUSY : -(errno ? errno : ECONNREFUSED);
		waiter_remove(e, x);
		l7_x_pending_give(x);
		return err;
	}
	return 0;
}

void l7_h2u_end(struct l7_x *x, int reuse)
{
	struct l7_h2us *hs = x->hs;
	struct l7_h2uc *uc;

	/* gave up while pending (client gone, timeout, retry, a local reply) */
	waiter_remove(x->e, x);
	l7_x_pending_give(x);
	if (!hs)
		return;
	uc = hs->uc;
	x->hs = NULL;
	hs->x = NULL;
	if (!hs->id || hs->closed || uc->failing || uc->closed) {
		hs->closed = 1;
		hs_unlink(hs);
		return;
	}
	if (hs->resp_end && hs->req.eof)
		return; /* ends by itself: on_stream_close unlinks it */
	/* the owner gave up before the stream ended: cancel it */
	nghttp2_submit_rst_stream(uc->s, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_CANCEL);
	uc_send(uc);
}

struct bm_chunkq *l7_h2u_wq(struct l7_x *x)
{
	return x->hs ? &x->hs->in : NULL;
}

void l7_h2u_flush(struct l7_x *x)
{
	struct l7_h2us *hs = x->hs;

	if (!hs || hs->uc->connecting)
		return;
	/* our own HTTP/1.1 bytes do not parse: a bug; the stream is reset
	 * and its owner hears of it from on_stream_close */
	if (hs_translate(hs) && hs->id)
		nghttp2_submit_rst_stream(hs->uc->s, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_INTERNAL_ERROR);
	uc_send(hs->uc);
}

size_t l7_h2u_queued(const struct l7_x *x)
{
	return x->hs ? x->hs->in.bytes + x->hs->req.q.bytes : 0;
}

void l7_h2u_pause(struct l7_x *x, int paused)
{
	struct l7_h2us *hs = x->hs;

	if (!hs || paused || !hs->unconsumed || hs->closed)
		return;
	nghttp2_session_consume(hs->uc->s, hs->id, hs->unconsumed);
	hs->unconsumed = 0;
	uc_send(hs->uc);
}

void l7_h2u_pool_drop(struct bm_l7_engine *e, uint64_t pool_key)
{
	for (struct l7_h2uc *uc = e->h2uconns, *next; uc; uc = next) {
		next = uc->next;
		if (uc->pool.key == pool_key && !uc->n_streams)
			uc_close(uc);
		else if (uc->pool.key == pool_key)
			uc->draining = 1;
	}
}

void l7_h2u_shutdown(struct bm_l7_engine *e)
{
	pool_purge(e, NULL, BM_AR_RESET);
	while (e->h2uconns)
		uc_fail(e->h2uconns, BM_AR_RESET);
}
