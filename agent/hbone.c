/*
 * HBONE connections: TLS (or plaintext in tests) + nghttp2, both sides.
 *
 * I/O: the outer socket and every app socket are registered edge triggered.
 * Inbound h2 bytes go straight from SSL_read into nghttp2; a DATA chunk is
 * written to its app socket at once, and only what the app cannot take yet
 * is queued (bounded by the stream window, which we reopen with
 * nghttp2_session_consume() only as the app takes bytes). Outbound, nghttp2
 * asks the stream's data source for bytes only while the peer's window has
 * room, and the source reads the app socket directly into the frame.
 *
 * nghttp2 callbacks never free the connection: they set c->fatal, and the
 * event handler that called into nghttp2 closes it on the way out.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include "hbone.h"

#define STREAM_POOL_MAX 256

struct hb_stream {
	struct bm_ev ev;              /* the app (client side) / upstream (server side) socket */
	struct bm_loop *l;
	struct bm_hbone_conn *c;      /* NULL once the h2 stream is gone */
	enum bm_pdir dir;
	struct hb_stream *next, *prev;
	int32_t id;
	int status;                   /* client: response status seen */
	struct bm_chunkq backlog;     /* h2 -> socket bytes the socket has not taken */
	uint8_t connecting;           /* server: upstream connect in progress */
	uint8_t established;          /* 200 sent (server) / received (client) */
	uint8_t deferred;             /* data source waits for the socket to be readable */
	uint8_t sock_eof;             /* socket read 0: END_STREAM sent or queued */
	uint8_t remote_end;           /* END_STREAM received */
	uint8_t shut_wr;              /* shutdown(SHUT_WR) done on the socket */
	uint8_t counted;              /* BM_PRES_* counted for this stream */
	uint8_t dead;
	uint8_t drained;              /* a short read emptied the socket: no read until its next event */
	uint8_t rdhup;                /* the peer's FIN was seen: read to EOF, never stop on short */
	uint8_t hold_200;             /* server: connected, the 200 waits for the app's first bytes */
	uint64_t up, down;            /* payload bytes: read from / written to the socket */
	struct bm_mesh_row *row;      /* istio_tcp_* row of this stream, or NULL */
};

static enum bm_pdir conn_dir(const struct bm_hbone_conn *c)
{
	return c->server ? BM_PDIR_IN_HBONE : BM_PDIR_OUT_HBONE;
}

/* ---- streams ------------------------------------------------------------ */

static ssize_t read_source(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
			   uint32_t *flags, nghttp2_data_source *src, void *user);

/* Stream objects are recycled per worker (bm_loop's object pool). */
static struct hb_stream *stream_alloc(struct bm_loop *l, enum bm_pdir dir)
{
	struct hb_stream *s = bm_loop_obj_get(l);

	if (s)
		memset(s, 0, sizeof(*s));
	else
		s = calloc(1, sizeof(*s));
	if (s) {
		s->ev.fd = -1;
		s->l = l;
		s->dir = dir;
	}
	return s;
}

static void stream_release(void *obj)
{
	struct hb_stream *s = obj;

	bm_loop_obj_put(s->l, s, sizeof(*s));
}

static void stream_link(struct bm_hbone_conn *c, struct hb_stream *s)
{
	/* A busy tunnel keeps its TLS buffers (about 34 KB): allocating and
	 * freeing them for every record cost about 1 us per request. An idle
	 * pooled one gives them back (stream_unlink). */
	if (!c->n_streams && c->ssl)
		SSL_clear_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
	s->c = c;
	s->next = c->streams;
	if (c->streams)
		c->streams->prev = s;
	c->streams = s;
	c->n_streams++;
}

static void stream_unlink(struct hb_stream *s)
{
	struct bm_hbone_conn *c = s->c;

	if (!c)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
	s->c = NULL;
	if (!--c->n_streams) {
		c->idle_since_ms = c->l->now_ms;
		if (c->ssl)
			SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
	}
}

static void count_result(struct bm_loop *l, struct hb_stream *s, enum bm_pdir dir, enum bm_pres res)
{
	if (s->counted)
		return;
	s->counted = 1;
	l->st->conns[dir][res]++;
}

/* Release the socket and the stream object. reset: the socket's peer sees
 * a reset (the tunnel failed) rather than an orderly end. */
static void stream_finish(struct hb_stream *s, int reset)
{
	struct bm_loop *l = s->l;
	enum bm_pdir dir = s->dir;

	if (s->dead)
		return;
	s->dead = 1;
	stream_unlink(s);
	if (s->ev.fd >= 0) {
		s->ev.dead = 1;
		if (reset)
			bm_close_reset(s->ev.fd);
		else
			close(s->ev.fd);
		s->ev.fd = -1;
	}
	bm_chunkq_clear(l, &s->backlog);
	l->st->active[dir]--;
	l->st->bytes_up[dir] += s->up;
	l->st->bytes_down[dir] += s->down;
	/* Client side the socket is the app (read = request bytes); server
	 * side it is the upstream app (written = request bytes). */
	if (s->row)
		bm_mesh_close(s->row, dir == BM_PDIR_OUT_HBONE ? s->up : s->down,
			      dir == BM_PDIR_OUT_HBONE ? s->down : s->up);
	s->row = NULL;
	/* The same epoll batch may still hold an event for this stream. */
	bm_loop_defer_free(l, s, stream_release);
}

/* Write queued h2 bytes to the socket. 0, or -errno when the socket failed. */
static int stream_drain(struct hb_stream *s)
{
	struct bm_hbone_conn *c = s->c;

	while (s->backlog.head && !s->connecting) {
		struct bm_chunk *ch = s->backlog.head;
		ssize_t n = send(s->ev.fd, ch->data + ch->off, ch->len, MSG_NOSIGNAL);

		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		bm_chunkq_consume(s->l, &s->backlog, (size_t)n);
		if (c && c->h2 && s->id > 0)
			nghttp2_session_consume(c->h2, s->id, (size_t)n);
		s->down += (uint64_t)n;
	}
	if (!s->backlog.bytes && s->remote_end && !s->shut_wr && !s->connecting) {
		s->shut_wr = 1;
		shutdown(s->ev.fd, SHUT_WR);
	}
	return 0;
}

static void conn_flush(struct bm_hbone_conn *c);
static void conn_after(struct bm_hbone_conn *c);
static void conn_kick(struct bm_hbone_conn *c);

/* Server: the 200, with the upstream socket as the response's body. */
static void stream_respond_200(struct bm_hbone_conn *c, struct hb_stream *s)
{
	static const nghttp2_nv st200[] = {
		{ (uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE },
	};
	nghttp2_data_provider prd = { .source.ptr = s, .read_callback = read_source };

	s->hold_200 = 0;
	nghttp2_submit_response(c->h2, s->id, st200, 1, &prd);
}

static void stream_on_event(struct bm_ev *ev, uint32_t events)
{
	struct hb_stream *s = (struct hb_stream *)ev;
	struct bm_hbone_conn *c = s->c;
	struct bm_loop *l = s->l;
	int err;

	if (!c) {
		/* The h2 stream ended cleanly; deliver what is left, then end. */
		err = stream_drain(s);
		if (err || !s->backlog.bytes)
			stream_finish(s, err != 0);
		return;
	}
	if (s->connecting) {
		static const nghttp2_nv st503[] = {
			{ (uint8_t *)":status", (uint8_t *)"503", 7, 3, NGHTTP2_NV_FLAG_NONE },
		};

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		s->connecting = 0;
		if (bm_sock_connect_result(ev->fd, events)) {
			l->st->status_503++;
			count_result(l, s, BM_PDIR_IN_HBONE, BM_PRES_UPSTREAM);
			nghttp2_submit_response(c->h2, s->id, st503, 1, NULL);
			/* The stream object stays until nghttp2 closes the stream;
			 * the socket goes now. */
			s->ev.dead = 1;
			close(s->ev.fd);
			s->ev.fd = -1;
			conn_kick(c);
			return;
		}
		s->established = 1;
		l->st->status_200++;
		count_result(l, s, BM_PDIR_IN_HBONE, BM_PRES_OK);
		/* The client sent its first bytes with the CONNECT (they are in
		 * the backlog, going to the app now): the app's answer comes
		 * soon, and the 200 leaves with it, one write and one wake-up
		 * of the client's side fewer. A client that waits for the 200
		 * before sending gets it at once; a held 200 goes at the next
		 * tick at the latest (bm_hbone_conn_tick). */
		if ((s->backlog.bytes || s->remote_end) &&
		    !(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
			s->hold_200 = 1;
		else
			stream_respond_200(c, s);
	}
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		s->drained = 0;
		if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			s->rdhup = 1;
		if (s->hold_200)
			stream_respond_200(c, s);
		else if (s->deferred) {
			s->deferred = 0;
			nghttp2_session_resume_data(c->h2, s->id);
		}
	}
	if (s->backlog.bytes || s->remote_end) {
		err = stream_drain(s);
		if (err) {
			nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
			stream_finish(s, 1);
		}
	}
	conn_kick(c);
}

/* nghttp2 data source: the socket itself. Called only while the peer's
 * window has room, so a slow peer stops our reads (back-pressure). */
static ssize_t read_source(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
			   uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct hb_stream *s = src->ptr;
	ssize_t n;

	if (!s || s->dead || s->ev.fd < 0) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	/* A short read means the socket was empty: with edge-triggered events
	 * more data comes with an event (stream_on_event resumes), so the
	 * read that would only say EAGAIN is skipped, one per request.
	 * A client stream sends what its app wrote without waiting for the
	 * 200: the server keeps it until its connection to the app is up (or
	 * drops it with a 401/503), and a new connection's first request
	 * leaves with the CONNECT, in the same write, a round trip sooner. A
	 * server stream reads its app once it is connected. */
	if ((!s->established && s->dir != BM_PDIR_OUT_HBONE) || s->drained) {
		s->deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	n = read(s->ev.fd, buf, len);
	if (n > 0) {
		s->up += (uint64_t)n;
		if ((size_t)n < len && !s->rdhup)
			s->drained = 1;
		return n;
	}
	if (n == 0) {
		s->sock_eof = 1;
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	if (errno == EAGAIN) {
		s->deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM */
}

/* ---- nghttp2 callbacks -------------------------------------------------- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
	struct bm_hbone_conn *c = user;
	struct hb_stream *s;

	if (!c->server || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	s = stream_alloc(c->l, BM_PDIR_IN_HBONE);
	if (!s)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	s->id = f->hd.stream_id;
	s->ev.fn = stream_on_event;
	memset(&c->req, 0, sizeof(c->req));
	stream_link(c, s);
	c->l->st->active[BM_PDIR_IN_HBONE]++;
	c->l->st->streams_opened++;
	nghttp2_session_set_stream_user_data(h2, s->id, s);
	return 0;
}

static void copy_hdr(char *dst, size_t cap, const uint8_t *v, size_t len)
{
	if (len >= cap)
		len = cap - 1;
	memcpy(dst, v, len);
	dst[len] = 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
		     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
	struct bm_hbone_conn *c = user;
	struct hb_stream *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	struct bm_hbone_hdrs *q = &c->req;

	if (!s || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (c->server && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
		if (namelen == 7 && !memcmp(name, ":method", 7))
			copy_hdr(q->method, sizeof(q->method), value, valuelen);
		else if (namelen == 10 && !memcmp(name, ":authority", 10))
			copy_hdr(q->authority, sizeof(q->authority), value, valuelen);
		else if (namelen == 7 && !memcmp(name, "baggage", 7))
			copy_hdr(q->baggage, sizeof(q->baggage), value, valuelen);
		else if (namelen == 9 && !memcmp(name, "forwarded", 9))
			copy_hdr(q->forwarded, sizeof(q->forwarded), value, valuelen);
	} else if (namelen == 7 && !memcmp(name, ":status", 7) && valuelen == 3)
		s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
	return 0;
}

static void refuse(struct bm_hbone_conn *c, struct hb_stream *s, int status)
{
	char code[8];
	nghttp2_nv nv = { (uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE };
	struct bm_wstats *st = c->l->st;

	if (status < 100 || status > 999)
		status = 500;
	snprintf(code, sizeof(code), "%d", status);
	switch (status) {
	case 400: st->status_400++; count_result(c->l, s, BM_PDIR_IN_HBONE, BM_PRES_ERROR); break;
	case 401: st->status_401++; count_result(c->l, s, BM_PDIR_IN_HBONE, BM_PRES_DENIED); break;
	case 503: st->status_503++; count_result(c->l, s, BM_PDIR_IN_HBONE, BM_PRES_UPSTREAM); break;
	default: st->status_other++; count_result(c->l, s, BM_PDIR_IN_HBONE, BM_PRES_ERROR); break;
	}
	/* The response ends our side. No RST_STREAM here: nghttp2 would send
	 * it ahead of the HEADERS. The client resets the stream when it sees
	 * the status; until then its DATA is consumed and dropped. */
	nghttp2_submit_response(c->h2, s->id, &nv, 1, NULL);
}

static void server_request(struct bm_hbone_conn *c, struct hb_stream *s)
{
	struct bm_mesh_row *row = NULL;
	struct bm_hbone_req r = { c->req.method, c->req.authority, c->req.baggage, c->req.forwarded,
				  &row };
	int fd = -1, status;

	if (strcmp(c->req.method, "CONNECT")) {
		refuse(c, s, 400);
		return;
	}
	status = c->ops->on_request ? c->ops->on_request(c, &r, &fd) : 503;
	if (status || fd < 0) {
		if (row)
			bm_mesh_close(row, 0, 0);
		refuse(c, s, status ? status : 503);
		return;
	}
	s->row = row;
	s->ev.fd = fd;
	s->connecting = 1;
	if (bm_loop_add(c->l, &s->ev, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
		close(fd);
		s->ev.fd = -1;
		s->connecting = 0;
		refuse(c, s, 503);
	}
	/* 200 goes out when the connect completes (stream_on_event). */
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
	struct bm_hbone_conn *c = user;
	struct hb_stream *s = f->hd.stream_id ?
		nghttp2_session_get_stream_user_data(h2, f->hd.stream_id) : NULL;

	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
		if (!s)
			break;
		if (c->server && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
			server_request(c, s);
		} else if (!c->server && f->headers.cat == NGHTTP2_HCAT_RESPONSE) {
			struct bm_wstats *st = c->l->st;

			if (s->status == 200) {
				st->status_200++;
				s->established = 1;
				count_result(c->l, s, BM_PDIR_OUT_HBONE, BM_PRES_OK);
				if (s->deferred) {
					s->deferred = 0;
					nghttp2_session_resume_data(h2, s->id);
				}
			} else {
				if (s->status == 401) {
					st->status_401++;
					count_result(c->l, s, BM_PDIR_OUT_HBONE, BM_PRES_DENIED);
				} else if (s->status == 503) {
					st->status_503++;
					count_result(c->l, s, BM_PDIR_OUT_HBONE, BM_PRES_UPSTREAM);
				} else {
					if (s->status == 400)
						st->status_400++;
					else
						st->status_other++;
					count_result(c->l, s, BM_PDIR_OUT_HBONE, BM_PRES_ERROR);
				}
				nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
			}
		}
		/* HEADERS may carry END_STREAM */
		__attribute__((fallthrough));
	case NGHTTP2_DATA:
		if (s && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->ev.fd >= 0) {
			s->remote_end = 1;
			if (stream_drain(s))
				nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
		}
		break;
	case NGHTTP2_PING:
		if (f->hd.flags & NGHTTP2_FLAG_ACK)
			c->ping_sent_ms = 0;
		break;
	case NGHTTP2_GOAWAY:
		c->draining = 1;
		break;
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *user)
{
	struct bm_hbone_conn *c = user;
	struct hb_stream *s = nghttp2_session_get_stream_user_data(h2, id);
	size_t done = 0;

	if (!s || s->dead || s->ev.fd < 0 || s->shut_wr) {
		nghttp2_session_consume(h2, id, len);
		return 0;
	}
	if (!s->backlog.bytes && !s->connecting) {
		ssize_t n = send(s->ev.fd, data, len, MSG_NOSIGNAL);

		if (n < 0 && errno != EAGAIN) {
			nghttp2_session_consume(h2, id, len);
			nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
			return 0;
		}
		if (n > 0) {
			done = (size_t)n;
			s->down += (uint64_t)n;
			nghttp2_session_consume(h2, id, done);
		}
	}
	/* The window bounds what can pile up here. */
	if (done < len && bm_chunkq_append(c->l, &s->backlog, data + done, len - done))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *user)
{
	struct bm_hbone_conn *c = user;
	struct hb_stream *s = nghttp2_session_get_stream_user_data(h2, id);

	if (!s || s->dead)
		return 0;
	nghttp2_session_set_stream_user_data(h2, id, NULL);
	if (error_code != NGHTTP2_NO_ERROR)
		c->l->st->streams_reset++;
	if (!s->established) {
		count_result(c->l, s, s->dir, BM_PRES_ERROR);
		stream_finish(s, 1);
		return 0;
	}
	if (error_code != NGHTTP2_NO_ERROR) {
		stream_finish(s, 1);
		return 0;
	}
	/* Both ends sent END_STREAM. Bytes the socket has not taken yet are
	 * still ours to deliver: keep the socket until the backlog drains. */
	s->remote_end = 1;
	s->id = -1;
	if (stream_drain(s))
		stream_finish(s, 1);
	else if (!s->backlog.bytes)
		stream_finish(s, 0);
	else
		stream_unlink(s); /* stream_on_event finishes it (s->c is NULL then) */
	return 0;
}

/* ---- connection --------------------------------------------------------- */

static nghttp2_session_callbacks *h2_cbs;
static nghttp2_option *h2_opt;

static void h2_init_once(void)
{
	if (nghttp2_session_callbacks_new(&h2_cbs) || nghttp2_option_new(&h2_opt))
		return;
	nghttp2_session_callbacks_set_on_begin_headers_callback(h2_cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(h2_cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(h2_cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2_cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(h2_cbs, on_stream_close);
	/* We reopen windows as sockets take bytes (nghttp2_session_consume). */
	nghttp2_option_set_no_auto_window_update(h2_opt, 1);
}

static int h2_session_new(struct bm_hbone_conn *c)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, BM_HBONE_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, BM_HBONE_STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
	};
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	int rv;

	pthread_once(&once, h2_init_once);
	cbs = h2_cbs;
	opt = h2_opt;
	if (!cbs || !opt)
		return -ENOMEM;
	rv = c->server ? nghttp2_session_server_new2(&c->h2, cbs, c, opt) :
			 nghttp2_session_client_new2(&c->h2, cbs, c, opt);
	if (rv)
		return -ENOMEM;
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
	nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, BM_HBONE_CONN_WINDOW);
	return 0;
}

static void conn_free(void *obj)
{
	free(obj);
}

static void conn_destroy(struct bm_hbone_conn *c)
{
	enum bm_pdir dir = conn_dir(c);

	if (c->closed)
		return;
	c->closed = 1;
	c->ev.dead = 1;
	while (c->streams) {
		struct hb_stream *s = c->streams;

		count_result(c->l, s, dir, s->established ? BM_PRES_OK : BM_PRES_UPSTREAM);
		stream_finish(s, 1);
	}
	if (c->h2)
		nghttp2_session_del(c->h2);
	c->h2 = NULL;
	bm_chunkq_clear(c->l, &c->out);
	if (c->connect_failed)
		c->l->st->h2_connect_failed++;
	/* The owner may still look at c->ssl (keep its session). */
	if (c->ops->on_close)
		c->ops->on_close(c);
	if (c->ssl) {
		/* close_notify, best effort: OpenSSL marks the session of an
		 * SSL freed without it non-resumable, and the pool resumes
		 * from it. */
		if (c->established)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	c->ssl = NULL;
	close(c->ev.fd);
	c->l->st->h2_closed++;
	bm_loop_defer_free(c->l, c, conn_free);
}

void bm_hbone_conn_close(struct bm_hbone_conn *c)
{
	conn_destroy(c);
}

/* Write c->out; 1 = all written, 0 = the socket is full, <0 fatal. */
static int conn_write(struct bm_hbone_conn *c)
{
	while (c->out.head) {
		struct bm_chunk *ch = c->out.head;
		int n;

		if (c->ssl) {
			ERR_clear_error();
			n = SSL_write(c->ssl, ch->data + ch->off, (int)ch->len);
			if (n <= 0) {
				int e = SSL_get_error(c->ssl, n);

				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					return 0;
				return -EIO;
			}
		} else {
			n = (int)send(c->ev.fd, ch->data + ch->off, ch->len, MSG_NOSIGNAL);
			if (n < 0)
				return errno == EAGAIN ? 0 : -errno;
		}
		bm_chunkq_consume(c->l, &c->out, (size_t)n);
	}
	return 1;
}

/* Produce frames while the outgoing queue is short, write them. */
static void conn_flush(struct bm_hbone_conn *c)
{
	if (c->closed || c->fatal || c->handshaking || !c->h2)
		return;
	for (;;) {
		int w;

		while (c->out.bytes < BM_HBONE_OUT_HIGH) {
			const uint8_t *p;
			ssize_t n = nghttp2_session_mem_send(c->h2, &p);

			if (n < 0) {
				c->fatal = 1;
				return;
			}
			if (!n)
				break;
			if (bm_chunkq_append(c->l, &c->out, p, (size_t)n)) {
				c->fatal = 1;
				return;
			}
		}
		if (!c->out.bytes)
			break;
		w = conn_write(c);
		if (w < 0) {
			c->fatal = 1;
			return;
		}
		if (!w)
			return; /* EPOLLOUT edge resumes */
	}
	if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
		c->fatal = 1; /* GOAWAY exchanged and nothing left */
}

/* What the streams queued goes out once per event batch: frames of several
 * streams (and WINDOW_UPDATEs) share a TLS record and a write. A fatal
 * connection goes at once. */
static void conn_kick(struct bm_hbone_conn *c)
{
	if (c->closed)
		return;
	if (c->fatal) {
		conn_destroy(c);
		return;
	}
	bm_loop_after(c->l, &c->flush);
}

static void conn_flush_cb(struct bm_after *a)
{
	conn_after((struct bm_hbone_conn *)((char *)a - offsetof(struct bm_hbone_conn, flush)));
}

static void conn_after(struct bm_hbone_conn *c)
{
	if (c->closed)
		return;
	conn_flush(c);
	if (c->fatal)
		conn_destroy(c);
}

static int conn_handshake(struct bm_hbone_conn *c)
{
	int rv, e;

	ERR_clear_error();
	rv = SSL_do_handshake(c->ssl);
	if (rv == 1) {
		struct bm_wstats *st = c->l->st;

		c->handshaking = 0;
		if (c->server)
			st->tls_server++;
		else
			st->tls_client++;
		if (SSL_session_reused(c->ssl))
			st->tls_resumed++;
		if (c->ops->on_handshake && c->ops->on_handshake(c)) {
			st->tls_failed++;
			return -EPERM;
		}
		c->established = 1;
		return 0;
	}
	e = SSL_get_error(c->ssl, rv);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	c->l->st->tls_failed++;
	return -EPROTO;
}

/* The socket BIO under SSL_read: notes whether its last read was short
 * (the socket is empty then, see conn_read). */
static long rx_bio_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl,
		      int ret, size_t *processed)
{
	if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
		struct bm_hbone_conn *c = (struct bm_hbone_conn *)BIO_get_callback_arg(b);

		c->rx_drained = ret <= 0 || !processed || *processed < len;
	}
	return ret;
}

/* Reads until the socket is empty. It is empty after a short read (OpenSSL
 * reads ahead into its buffer, so a short read of the socket shows it): then
 * no further read that would only say EAGAIN; the next bytes come with the
 * next edge-triggered event. */
static void conn_read(struct bm_hbone_conn *c)
{
	uint8_t *buf = c->l->scratch;

	for (;;) {
		ssize_t n;

		c->rx_drained = 0;
		if (c->ssl) {
			int r;

			ERR_clear_error();
			r = SSL_read(c->ssl, buf, BM_SCRATCH);
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);

				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					return;
				c->fatal = 1; /* close_notify, EOF or error */
				return;
			}
			n = r;
		} else {
			n = read(c->ev.fd, buf, BM_SCRATCH);
			if (n < 0 && errno == EAGAIN)
				return;
			if (n <= 0) {
				c->fatal = 1;
				return;
			}
			c->rx_drained = n < BM_SCRATCH;
		}
		c->last_rx_ms = c->l->now_ms;
		if (nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0) {
			c->fatal = 1;
			return;
		}
		if (c->closed || c->fatal)
			return;
		if (c->rx_drained && !(c->ssl && SSL_has_pending(c->ssl)) && !c->rx_eof)
			return;
	}
}

static void conn_on_event(struct bm_ev *ev, uint32_t events)
{
	struct bm_hbone_conn *c = (struct bm_hbone_conn *)ev;
	int readable = events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);

	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->rx_eof = 1;

	if (c->tcp_connecting) {
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		if (bm_sock_connect_result(ev->fd, events)) {
			c->connect_failed = 1;
			conn_destroy(c);
			return;
		}
		c->tcp_connecting = 0;
	}
	if (c->handshaking) {
		if (conn_handshake(c)) {
			conn_destroy(c);
			return;
		}
		if (c->handshaking)
			return;
		readable = 1; /* the handshake may have buffered h2 bytes */
	}
	if (readable)
		conn_read(c);
	conn_kick(c);
}

struct bm_hbone_conn *bm_hbone_conn_new(struct bm_loop *l, int fd, SSL *ssl, int server,
					const struct bm_hbone_ops *ops, void *user)
{
	struct bm_hbone_conn *c = calloc(1, sizeof(*c));
	int err = -ENOMEM;

	if (!c)
		goto err;
	c->ev.fd = fd;
	c->ev.fn = conn_on_event;
	c->flush.fn = conn_flush_cb;
	c->l = l;
	c->ops = ops;
	c->user = user;
	c->ssl = ssl;
	c->server = (uint8_t)server;
	c->created_ms = c->last_rx_ms = c->idle_since_ms = l->now_ms;
	c->tcp_connecting = !server;
	if (ssl) {
		c->handshaking = 1;
		if (!SSL_set_fd(ssl, fd))
			goto err;
		SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
		/* One read per batch of records instead of two per record
		 * (header, then body), and short reads visible to conn_read. */
		SSL_set_read_ahead(ssl, 1);
		BIO_set_callback_arg(SSL_get_rbio(ssl), (char *)c);
		BIO_set_callback_ex(SSL_get_rbio(ssl), rx_bio_cb);
		if (server)
			SSL_set_accept_state(ssl);
		else
			SSL_set_connect_state(ssl);
	} else {
		c->established = 1;
	}
	err = h2_session_new(c);
	if (err)
		goto err;
	err = bm_loop_add(l, &c->ev, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
	if (err)
		goto err_h2;
	if (server)
		l->st->h2_server++;
	else
		l->st->h2_client++;
	return c;
err_h2:
	nghttp2_session_del(c->h2);
err:
	if (ssl)
		SSL_free(ssl);
	close(fd);
	free(c);
	errno = -err;
	return NULL;
}

int bm_hbone_conn_usable(const struct bm_hbone_conn *c)
{
	return c && !c->closed && !c->fatal && !c->draining && c->h2 &&
	       nghttp2_session_check_request_allowed(c->h2) &&
	       c->n_streams < BM_HBONE_MAX_STREAMS;
}

int bm_hbone_stream_open(struct bm_hbone_conn *c, int app_fd, const char *authority,
			 const char *baggage, const char *forwarded)
{
	return bm_hbone_stream_open_row(c, app_fd, authority, baggage, forwarded, NULL);
}

int bm_hbone_stream_open_row(struct bm_hbone_conn *c, int app_fd, const char *authority,
			     const char *baggage, const char *forwarded, struct bm_mesh_row *row)
{
	nghttp2_nv nv[4];
	size_t n = 0;
	nghttp2_data_provider prd = { .read_callback = read_source };
	struct hb_stream *s;
	int32_t id;

#define NV(k, v) do { nv[n].name = (uint8_t *)(k); nv[n].value = (uint8_t *)(v); \
	nv[n].namelen = strlen(k); nv[n].valuelen = strlen(v); \
	nv[n].flags = NGHTTP2_NV_FLAG_NONE; n++; } while (0)
	if (!bm_hbone_conn_usable(c))
		return -EAGAIN;
	s = stream_alloc(c->l, BM_PDIR_OUT_HBONE);
	if (!s) {
		bm_close_reset(app_fd);
		if (row)
			bm_mesh_close(row, 0, 0);
		return -ENOMEM;
	}
	NV(":method", "CONNECT");
	NV(":authority", authority);
	if (baggage && *baggage)
		NV("baggage", baggage);
	if (forwarded && *forwarded)
		NV("forwarded", forwarded);
#undef NV
	prd.source.ptr = s;
	id = nghttp2_submit_request(c->h2, NULL, nv, n, &prd, s);
	if (id < 0) {
		bm_loop_obj_put(c->l, s, sizeof(*s));
		c->draining = 1; /* e.g. stream ids exhausted */
		return -EAGAIN;
	}
	s->id = id;
	s->ev.fd = app_fd;
	s->ev.fn = stream_on_event;
	s->row = row; /* closed by stream_finish from here on */
	stream_link(c, s);
	c->l->st->active[BM_PDIR_OUT_HBONE]++;
	c->l->st->streams_opened++;
	if (bm_loop_add(c->l, &s->ev, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
		nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
		count_result(c->l, s, BM_PDIR_OUT_HBONE, BM_PRES_ERROR);
		stream_finish(s, 1);
	}
	conn_kick(c);
	return 0;
}

int bm_hbone_conn_tick(struct bm_hbone_conn *c, uint64_t now_ms, uint64_t ping_ms,
		       uint64_t timeout_ms, uint64_t close_idle_ms)
{
	if (c->closed)
		return 1;
	if (c->handshaking) {
		if (now_ms - c->created_ms > timeout_ms) {
			c->l->st->tls_failed++;
			conn_destroy(c);
			return 1;
		}
		return 0;
	}
	if (c->ping_sent_ms && now_ms - c->ping_sent_ms > timeout_ms) {
		c->l->st->h2_ping_timeouts++;
		conn_destroy(c);
		return 1;
	}
	for (struct hb_stream *s = c->streams; s; s = s->next)
		if (s->hold_200)
			stream_respond_200(c, s);
	if (close_idle_ms && !c->n_streams && now_ms - c->idle_since_ms > close_idle_ms) {
		nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
		c->draining = 1;
	} else if (!c->ping_sent_ms && now_ms - c->last_rx_ms > ping_ms) {
		nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
		c->ping_sent_ms = now_ms;
		c->l->st->h2_pings++;
	}
	conn_after(c);
	return c->closed;
}

int bm_hbone_peer_uri(SSL *ssl, char *buf, size_t len)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	GENERAL_NAMES *sans;
	int err = -ENOENT;

	if (!cert)
		return -ENOENT;
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		const unsigned char *p;
		int n;

		if (g->type != GEN_URI)
			continue;
		p = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
		n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
		if (n <= 0 || (size_t)n >= len || memchr(p, 0, (size_t)n)) {
			err = -EINVAL;
			break;
		}
		memcpy(buf, p, (size_t)n);
		buf[n] = 0;
		err = 0;
		break;
	}
	GENERAL_NAMES_free(sans);
	return err;
}
