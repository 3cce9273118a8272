/*
 * The HTTP/2 front of the L7 engine: a downstream connection that opened
 * with the h2 client preface (prior knowledge h2c, as gRPC clients and
 * `curl --http2-prior-knowledge` do) is served by an nghttp2 server
 * session, and every stream is one request through the same pipeline as
 * HTTP/1.1 (l7proxy.c): streams are routed, retried and timed out
 * independently, so a weighted split applies per request on one
 * connection.
 *
 * The request head is synthesized as a struct bm_h1_head (":method",
 * ":path", ":authority" as host, the other fields as they came), which is
 * what the pipeline, the matchers and the authorization read.
 *
 * Flow control: automatic WINDOW_UPDATEs are off; request DATA is given
 * back to the session (nghttp2_session_consume) when the pipeline took it,
 * and held while its upstream is full, so a stream buffers at most its
 * window. Response DATA waits in the stream's queue for the session's data
 * provider; above L7_HIGH_WATER the upstream stops being read.
 *
 * nghttp2 must not be re-entered: the session is only driven (mem_recv,
 * mem_send) from here, never inside its own callbacks, and it is freed at
 * the end of the loop's batch, so a callback never sees it go.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <nghttp2/nghttp2.h>
#include "fmt.h"
#include "h2common.h"

#define H2_MAX_STREAMS   256           /* SETTINGS_MAX_CONCURRENT_STREAMS we announce */
#define H2_STREAM_BUF    (64 * 1024)   /* request body, and response, buffered per stream */
#define H2_CONN_WINDOW   (1 << 20)     /* connection receive window: many streams at once */
#define H2_OUT_MAX       (256 * 1024)  /* frames queued for the client before we stop */
#define H2_TRAILERS      16

struct h2s;

struct l7_h2conn {
	struct l7_dconn *d;
	nghttp2_session *s;
	struct h2s *streams;
	unsigned n_streams;
	uint8_t in_recv, in_send, again, dead;
};

/* One stream: one request. Lives until both the request ended (the
 * pipeline is done with it) and nghttp2 closed the stream. */
struct h2s {
	struct l7_req rq;
	struct h2s *next, *prev;
	struct l7_h2conn *hc;
	int32_t id;
	uint8_t req_end;        /* END_STREAM received (or the stream closed) */
	uint8_t begun;          /* the head went to the pipeline */
	uint8_t closed;         /* nghttp2 closed the stream */
	uint8_t rq_over;        /* the pipeline ended the request */
	uint8_t has_prd;        /* the response has a data provider */
	uint8_t trailers_phase, too_big, unlinked;
	uint8_t resp_complete;  /* the whole response was handed to the session */
	size_t unconsumed;      /* request DATA not yet given back to flow control */
	struct l7_h2data resp;  /* response DATA and trailers for the data provider */
	/* the head: strings in hb, views in head */
	char *hb;
	size_t hlen, hcap;
	struct { uint32_t no, nl, vo, vl; } off[BM_H1_MAX_HDRS];
	size_t n_off;
	int32_t method, path, authority;   /* offsets of the pseudo headers' values, -1 */
	struct bm_h1_head head;
	/* request trailers (in rtb: hb may not move once the head is built)
	 * and response trailers (copied into tb) */
	char rtb[2048];
	size_t rtlen;
	struct bm_http_hdr rtr[H2_TRAILERS];
	size_t n_rtr;
	char *tb;
};

static const struct l7_front h2_front;
static void h2_send(struct l7_h2conn *hc);

#define ST(rq_) ((struct h2s *)(rq_))

/* ---- streams ------------------------------------------------------------------ */

static void st_free_mem(void *obj)
{
	struct h2s *st = obj;

	free(st->hb);
	free(st->tb);
	l7_obj_put(L7_OBJ_H2S, st);
}

static void st_unlink(struct h2s *st)
{
	struct l7_h2conn *hc = st->hc;

	if (st->unlinked)
		return;
	st->unlinked = 1;
	if (st->prev)
		st->prev->next = st->next;
	else
		hc->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	hc->n_streams--;
	bm_chunkq_clear(hc->d->e->l, &st->resp.q);
	bm_loop_defer_free(hc->d->e->l, st, st_free_mem);
}

static void st_maybe_free(struct h2s *st)
{
	if (st->closed && (st->rq_over || !st->begun))
		st_unlink(st);
}

static struct h2s *st_new(struct l7_h2conn *hc, int32_t id)
{
	struct h2s *st = l7_obj_get(L7_OBJ_H2S, sizeof(*st));

	if (!st)
		return NULL;
	st->hc = hc;
	st->id = id;
	st->resp.l = hc->d->e->l;
	st->method = st->path = st->authority = -1;
	l7_rq_init(&st->rq, hc->d, &h2_front);
	st->next = hc->streams;
	if (hc->streams)
		hc->streams->prev = st;
	hc->streams = st;
	hc->n_streams++;
	return st;
}

static int hb_put(struct h2s *st, const uint8_t *p, size_t n, uint32_t *off)
{
	if (st->hlen + n + 1 > BM_H1_HEAD_MAX)
		return -E2BIG;
	if (st->hlen + n + 1 > st->hcap) {
		size_t cap = st->hcap ? st->hcap : 1024;
		char *nb;

		while (cap < st->hlen + n + 1)
			cap *= 2;
		nb = realloc(st->hb, cap);
		if (!nb)
			return -ENOMEM;
		st->hb = nb;
		st->hcap = cap;
	}
	memcpy(st->hb + st->hlen, p, n);
	st->hb[st->hlen + n] = 0;
	*off = (uint32_t)st->hlen;
	st->hlen += n + 1;
	return 0;
}

/* HTTP/2 may split the cookie header into crumbs; HTTP/1.1 and the
 * matchers want one, joined with "; " (RFC 9113 §8.2.3). Returns the
 * joined value's offset in hb, or -1 when there is at most one crumb. */
static int64_t st_join_cookies(struct h2s *st)
{
	size_t n = 0, len = 0, k = 0;
	char *j;
	uint32_t off;
	int rc;

	for (size_t i = 0; i < st->n_off; i++)
		if (st->off[i].nl == 6 && !memcmp(st->hb + st->off[i].no, "cookie", 6))
			n++, len += st->off[i].vl + 2;
	if (n < 2 || !(j = malloc(len)))
		return -1;
	for (size_t i = 0; i < st->n_off; i++)
		if (st->off[i].nl == 6 && !memcmp(st->hb + st->off[i].no, "cookie", 6)) {
			if (k)
				memcpy(j + k, "; ", 2), k += 2;
			memcpy(j + k, st->hb + st->off[i].vo, st->off[i].vl);
			k += st->off[i].vl;
		}
	rc = hb_put(st, (const uint8_t *)j, k, &off);
	free(j);
	return rc ? -1 : (int64_t)off;
}

/* The request head as the pipeline reads it. */
static void st_build_head(struct h2s *st)
{
	struct bm_h1_head *h = &st->head;
	int64_t cookie = st_join_cookies(st);   /* before any view: hb may move */

	memset(h, 0, offsetof(struct bm_h1_head, hdr));
	h->n_hdr = 0;
	h->content_length = -1;
	h->major = 2;
	h->minor = 0;
	h->keep_alive = 1;
	h->method = st->method >= 0 ? st->hb + st->method : "GET";
	h->target = st->path >= 0 ? st->hb + st->path : "/";
	h->target_len = strlen(h->target);
	if (st->authority >= 0) {
		h->hdr[0].name = "host";
		h->hdr[0].name_len = 4;
		h->hdr[0].value = st->hb + st->authority;
		h->hdr[0].value_len = strlen(h->hdr[0].value);
		h->n_hdr = 1;
	}
	for (size_t i = 0; i < st->n_off && h->n_hdr < BM_H1_MAX_HDRS; i++) {
		struct bm_http_hdr *x = &h->hdr[h->n_hdr];

		x->name = st->hb + st->off[i].no;
		x->name_len = st->off[i].nl;
		x->value = st->hb + st->off[i].vo;
		x->value_len = st->off[i].vl;
		if (!strcmp(x->name, "content-length")) {
			char *end;
			long long v = strtoll(x->value, &end, 10);

			if (x->value_len && !*end && v >= 0)
				h->content_length = v;
			continue; /* re-added by the framing code */
		}
		if (st->authority >= 0 && !strcmp(x->name, "host"))
			continue; /* :authority wins */
		if (cookie >= 0 && !strcmp(x->name, "cookie"))
			continue; /* joined below */
		h->n_hdr++;
	}
	if (cookie >= 0 && h->n_hdr < BM_H1_MAX_HDRS) {
		struct bm_http_hdr *x = &h->hdr[h->n_hdr++];

		x->name = "cookie";
		x->name_len = 6;
		x->value = st->hb + cookie;
		x->value_len = strlen(x->value);
	}
	/* An HTTP/1.1 upstream needs framing: chunked when the length is not
	 * known and a body follows. */
	h->has_body = !st->req_end && h->content_length != 0;
	h->chunked = h->has_body && h->content_length < 0;
	if (st->req_end)
		h->content_length = h->content_length > 0 ? h->content_length : -1;
}

/* Room for more request body: like l7_rq_body_room, with a per-stream
 * bound (H2_STREAM_BUF) as many streams share one connection. Bounds a
 * connection's buffering to H2_MAX_STREAMS x (window + H2_STREAM_BUF). */
static int st_room(struct h2s *st)
{
	struct l7_req *rq = &st->rq;

	if (!st->begun || st->rq_over || rq->discard || rq->replayable)
		return 1;
	return rq->body.bytes + (rq->x_live ? l7_x_queued(&rq->x) : 0) < H2_STREAM_BUF;
}

/* Give request DATA back to flow control when the pipeline has room. */
static void st_consume(struct h2s *st)
{
	if (!st->unconsumed || st->hc->dead)
		return;
	if (!st_room(st))
		return;
	nghttp2_session_consume(st->hc->s, st->id, st->unconsumed);
	st->unconsumed = 0;
}

static void st_begin(struct h2s *st)
{
	struct l7_req *rq = &st->rq;

	st_build_head(st);
	st->begun = 1;
	rq->h = &st->head;
	l7_rq_reset(rq);
	if (st->too_big) {
		l7_rq_local(rq, 431, "Request Header Fields Too Large", "DPE");
		return;
	}
	l7_rq_route(rq);
	if (st->req_end && rq->active)
		l7_rq_body_done(rq);
}

/* The client left the stream (a reset, or the connection went): its
 * request ends, flagged DC unless the response was done or a flag says why. */
static void st_gone(struct h2s *st)
{
	struct l7_req *rq = &st->rq;

	if (!st->begun || st->rq_over || !rq->active)
		return;
	if (!rq->resp_done && !rq->flags[0])
		l7_add_flag(rq, "DC");
	if (!rq->resp_started)
		rq->status = 0;
	l7_rq_end(rq, 1);
}

static void st_req_end(struct h2s *st)
{
	if (st->req_end)
		return;
	st->req_end = 1;
	if (st->begun && !st->rq_over && st->rq.active) {
		st->rq.req_trailers = st->rtr;
		st->rq.n_req_trailers = st->n_rtr;
		l7_rq_body_done(&st->rq);
	}
}

/* ---- nghttp2 callbacks ----------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *u)
{
	struct l7_h2conn *hc = u;
	struct h2s *st;

	if (hc->dead)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
		st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
		if (st && st->begun)
			st->trailers_phase = 1;
		return 0;
	}
	st = st_new(hc, f->hd.stream_id);
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
	return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *u)
{
	struct l7_h2conn *hc = u;
	struct h2s *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	uint32_t no, vo;

	if (hc->dead)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (!st || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (st->trailers_phase) {
		if (st->n_rtr < H2_TRAILERS && st->rtlen + nl + vl + 2 <= sizeof(st->rtb)) {
			struct bm_http_hdr *t = &st->rtr[st->n_rtr++];
			char *p = st->rtb + st->rtlen;

			memcpy(p, name, nl);
			p[nl] = 0;
			memcpy(p + nl + 1, value, vl);
			p[nl + 1 + vl] = 0;
			t->name = p;
			t->name_len = nl;
			t->value = p + nl + 1;
			t->value_len = vl;
			st->rtlen += nl + vl + 2;
		}
		return 0;
	}
	if (st->too_big)
		return 0;
	if (hb_put(st, name, nl, &no) || hb_put(st, value, vl, &vo)) {
		st->too_big = 1;
		return 0;
	}
	if (nl && name[0] == ':') {
		if (nl == 7 && !memcmp(name, ":method", 7))
			st->method = (int32_t)vo;
		else if (nl == 5 && !memcmp(name, ":path", 5))
			st->path = (int32_t)vo;
		else if (nl == 10 && !memcmp(name, ":authority", 10))
			st->authority = (int32_t)vo;
		return 0;
	}
	if (st->n_off == BM_H1_MAX_HDRS) {
		st->too_big = 1;
		return 0;
	}
	st->off[st->n_off].no = no;
	st->off[st->n_off].nl = (uint32_t)nl;
	st->off[st->n_off].vo = vo;
	st->off[st->n_off].vl = (uint32_t)vl;
	st->n_off++;
	return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *u)
{
	struct l7_h2conn *hc = u;
	struct h2s *st;

	if (hc->dead)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st = f->hd.stream_id ? nghttp2_session_get_stream_user_data(s, f->hd.stream_id) : NULL;
	if (!st)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS) {
		if (!st->begun) {
			if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
				st->req_end = 1;
			st_begin(st);
			return 0;
		}
	}
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		st_req_end(st);
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *u)
{
	struct l7_h2conn *hc = u;
	struct h2s *st = nghttp2_session_get_stream_user_data(s, id);

	if (hc->dead)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (!st) {
		nghttp2_session_consume_connection(s, len);
		return 0;
	}
	st->unconsumed += len;
	if (st->begun && !st->rq_over && st->rq.active && l7_rq_body(&st->rq, data, len))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	st_consume(st);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *u)
{
	struct l7_h2conn *hc = u;
	struct h2s *st = nghttp2_session_get_stream_user_data(s, id);

	if (!st)
		return 0;
	nghttp2_session_set_stream_user_data(s, id, NULL);
	st->closed = 1;
	/* Closed because our END_STREAM went out after the client's: the
	 * normal end, which the pipeline is about to see for itself. */
	if (code == NGHTTP2_NO_ERROR && st->resp_complete && st->req_end) {
		if (!hc->dead)
			st_maybe_free(st);
		return 0;
	}
	st_gone(st); /* the client reset the stream (or the session gave up on it) */
	if (!hc->dead)
		st_maybe_free(st);
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

/* ---- the front ------------------------------------------------------------------------- */

/* HTTP/2 forbids connection-specific fields (RFC 9113 §8.2.2); pseudo-headers
 * are ours to set. */
static int h2_forbidden(const struct bm_http_hdr *h)
{
	return l7_h2_conn_hdr(h) || (h->name_len && h->name[0] == ':');
}

static int h2_head(struct l7_req *rq, int status, const char *reason, struct bm_h1_hlist *hl,
		   int64_t clen, int has_body)
{
	struct h2s *st = ST(rq);
	struct l7_h2conn *hc = st->hc;
	nghttp2_nv snv[48], *nv = snv;  /* on the stack for usual heads */
	nghttp2_data_provider prd = { .source.ptr = &st->resp, .read_callback = l7_h2_data_read };
	char sbuf[24], lbuf[24];
	size_t n = 0;
	int rv;

	if (hc->dead || st->closed)
		return -EPIPE;
	if (hl->n + 2 > sizeof(snv) / sizeof(snv[0]) && !(nv = malloc((hl->n + 2) * sizeof(*nv))))
		return -ENOMEM;
	l7_h2_nv(nv, &n, ":status", 7, sbuf, bm_utoa(sbuf, status < 0 ? 0 : (uint64_t)status));
	for (size_t i = 0; i < hl->n; i++)
		if (!h2_forbidden(&hl->h[i]))
			l7_h2_nv(nv, &n, hl->h[i].name, hl->h[i].name_len, hl->h[i].value,
				 hl->h[i].value_len);
	if (clen >= 0 && (has_body || clen == 0) && status != 204 && status != 304) {
		l7_h2_nv(nv, &n, "content-length", 14, lbuf, bm_utoa(lbuf, (uint64_t)clen));
	}
	st->has_prd = has_body ? 1 : 0;
	st->resp_complete = !has_body;
	rv = nghttp2_submit_response(hc->s, st->id, nv, n, has_body ? &prd : NULL);
	if (nv != snv)
		free(nv);
	if (rv)
		return -EPROTO;
	if (!rq->cork)
		h2_send(hc);
	return 0;
}

static int h2_body(struct l7_req *rq, const uint8_t *p, size_t n)
{
	struct h2s *st = ST(rq);

	if (st->hc->dead || st->closed)
		return -EPIPE;
	if (!st->has_prd)
		return 0; /* HEAD, 204: nothing goes */
	if (bm_chunkq_append(st->hc->d->e->l, &st->resp.q, p, n))
		return -ENOMEM;
	l7_h2_data_resume(st->hc->s, st->id, &st->resp);
	if (!rq->cork)
		h2_send(st->hc);
	return 0;
}

static int h2_end(struct l7_req *rq, const struct bm_http_hdr *t, size_t n)
{
	struct h2s *st = ST(rq);
	size_t len = 0, k = 0;

	if (!st->has_prd) {
		h2_send(st->hc); /* a corked head */
		return 0;
	}
	if (st->hc->dead || st->closed)
		return -EPIPE;
	for (size_t i = 0; i < n; i++)
		len += t[i].name_len + t[i].value_len + 2;
	if (n && (st->tb = malloc(len + 1))) {
		char *p = st->tb;

		for (size_t i = 0; i < n && k < L7_H2_TRAILERS; i++) {
			if (h2_forbidden(&t[i]) || !strncasecmp(t[i].name, "content-length", 14))
				continue;
			memcpy(p, t[i].name, t[i].name_len);
			memcpy(p + t[i].name_len + 1, t[i].value, t[i].value_len);
			l7_h2_nv(st->resp.tnv, &k, p, t[i].name_len, p + t[i].name_len + 1,
				 t[i].value_len);
			p += t[i].name_len + t[i].value_len + 2;
		}
		st->resp.n_tnv = k;
	}
	st->resp.eof = 1;
	st->resp_complete = 1;
	l7_h2_data_resume(st->hc->s, st->id, &st->resp);
	h2_send(st->hc);
	return 0;
}

static size_t h2_queued(struct l7_req *rq)
{
	return ST(rq)->resp.q.bytes;
}

static void h2_abort(struct l7_req *rq)
{
	struct h2s *st = ST(rq);

	if (!st->hc->dead && !st->closed)
		nghttp2_submit_rst_stream(st->hc->s, NGHTTP2_FLAG_NONE, st->id,
					  NGHTTP2_INTERNAL_ERROR);
	if (rq->active)
		l7_rq_end(rq, 0);
	h2_send(st->hc);
}

static void h2_more(struct l7_req *rq)
{
	struct h2s *st = ST(rq);

	st_consume(st);
	h2_send(st->hc);
}

static int h2_req_complete(struct l7_req *rq)
{
	return ST(rq)->req_end;
}

static void h2_ended(struct l7_req *rq, int from_close)
{
	struct h2s *st = ST(rq);

	st->rq_over = 1;
	/* unread request body: its flow-control credit goes back */
	if (!st->hc->dead && !st->closed) {
		if (!st->req_end && !from_close && rq->resp_done)
			nghttp2_submit_rst_stream(st->hc->s, NGHTTP2_FLAG_NONE, st->id,
						  NGHTTP2_NO_ERROR);
		st_consume(st);
	}
	if (!st->hc->dead)
		st_maybe_free(st);
}

static const struct l7_front h2_front = {
	.head = h2_head,
	.body = h2_body,
	.end = h2_end,
	.queued = h2_queued,
	.abort = h2_abort,
	.more = h2_more,
	.req_complete = h2_req_complete,
	.ended = h2_ended,
	.high_water = H2_STREAM_BUF,
};

/* ---- the connection -------------------------------------------------------------------- */

/* Frames out to the client while it keeps up; then resume the streams
 * whose upstream was paused for a full queue. */
static void h2_send(struct l7_h2conn *hc)
{
	struct l7_dconn *d = hc->d;

	if (hc->in_recv || hc->dead || d->closed)
		return;
	if (hc->in_send) {
		hc->again = 1;
		return;
	}
	hc->in_send = 1;
	do {
		hc->again = 0;
		while (d->out.bytes < H2_OUT_MAX && !d->closed) {
			const uint8_t *p;
			ssize_t n = nghttp2_session_mem_send(hc->s, &p);

			if (n < 0 || (n > 0 && l7_out_write(d, p, (size_t)n))) {
				hc->in_send = 0;
				l7_dconn_close(d, 1);
				return;
			}
			if (!n)
				break;
		}
		if (d->closed)
			break;
		l7_dconn_flush(d);
		if (d->closed)
			break;
		for (struct h2s *st = hc->streams; st; st = st->next)
			if (st->begun && !st->rq_over && st->resp.q.bytes < H2_STREAM_BUF / 4)
				l7_rq_drained(&st->rq);
	} while (hc->again && !d->closed && !hc->dead);
	hc->in_send = 0;
	if (!d->closed && !hc->dead && !nghttp2_session_want_read(hc->s) &&
	    !nghttp2_session_want_write(hc->s) && !d->out.bytes)
		l7_dconn_close(d, 0); /* GOAWAY exchanged, nothing left */
}

int l7_h2_start(struct l7_dconn *d)
{
	struct l7_h2conn *hc;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, BM_H1_HEAD_MAX },
	};

	pthread_once(&cbs_once, cbs_init);
	if (!cbs)
		return -ENOMEM;
	hc = calloc(1, sizeof(*hc));
	if (!hc)
		return -ENOMEM;
	hc->d = d;
	if (nghttp2_session_server_new2(&hc->s, cbs, hc, opt)) {
		free(hc);
		return -ENOMEM;
	}
	if (nghttp2_submit_settings(hc->s, NGHTTP2_FLAG_NONE, iv, 2) ||
	    nghttp2_session_set_local_window_size(hc->s, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW)) {
		nghttp2_session_del(hc->s);
		free(hc);
		return -ENOMEM;
	}
	d->h2 = hc;
	d->e->st.h2_downstream_cx++;
	return 0;
}

int l7_h2_process(struct l7_dconn *d)
{
	struct l7_h2conn *hc = d->h2;
	int progress = 0;

	while (d->in.bytes && !d->closed && !hc->dead) {
		struct bm_chunk *c = d->in.head;
		ssize_t r;

		if (!c->len) {
			l7_q_drop_empty(d->e->l, &d->in);
			continue;
		}
		hc->in_recv = 1;
		r = nghttp2_session_mem_recv(hc->s, c->data + c->off, c->len);
		hc->in_recv = 0;
		if (d->closed || hc->dead)
			return 1;
		if (r < 0) {
			l7_dconn_close(d, 1);
			return 1;
		}
		bm_chunkq_consume(d->e->l, &d->in, (size_t)r);
		progress = 1;
	}
	if (!d->closed)
		h2_send(hc);
	return progress;
}

void l7_h2_drained(struct l7_dconn *d)
{
	struct l7_h2conn *hc = d->h2;

	if (!hc->in_send && !hc->in_recv)
		h2_send(hc);
}

int l7_h2_idle(const struct l7_dconn *d)
{
	return !d->h2->n_streams;
}

static void hc_free_mem(void *obj)
{
	struct l7_h2conn *hc = obj;

	nghttp2_session_del(hc->s);
	free(hc);
}

void l7_h2_close(struct l7_dconn *d)
{
	struct l7_h2conn *hc = d->h2;

	hc->dead = 1;
	while (hc->streams) {
		struct h2s *st = hc->streams;

		st_gone(st);
		st_unlink(st);
	}
	d->h2 = NULL;
	bm_loop_defer_free(d->e->l, hc, hc_free_mem);
}
