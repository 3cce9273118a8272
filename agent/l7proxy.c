/*
 * The L7 engine's per-request pipeline, shared by the HTTP/1.1 front
 * (l7h1.c) and the HTTP/2 front (h2down.c): every request, whatever its
 * protocol, is a struct l7_req run through the per-request flow of Envoy's router as Istio configures it
 * (istio-api.md §1.2-§1.9): route, directResponse / redirect, fault, the
 * weighted destination, circuit breakers, attempts with retries and
 * timeouts, streaming the response back, mirrors; on the server side the
 * per-request authorization. The front reads the request into it and
 * writes the response through struct l7_front; the client socket, sniffing
 * and the engine object are l7conn.c's; the upstream half is l7upstream.c
 * (HTTP/1.1) and h2up.c (HTTP/2). gRPC-shaped local replies and the
 * request records are l7reply.c's.
 *
 * Request bodies: up to BM_L7_REPLAY_MAX bytes are kept until the request
 * ends, so an attempt can be replayed and mirrors get a copy; beyond that
 * the body is streamed to the one attempt in progress and the request is
 * neither retried nor mirrored (Envoy's retry buffer limit does the same).
 * Responses are streamed, never buffered whole: reading the upstream stops
 * while the client's queue is above L7_HIGH_WATER.
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
#include <sys/uio.h>
#include <time.h>
#include "fmt.h"
#include "l7upstream.h"
#include "tracing.h"

static const char BODY_CONNECT_FAILURE[] =
	"upstream connect error or disconnect/reset before headers. reset reason: connection failure";
static const char BODY_TERMINATION[] =
	"upstream connect error or disconnect/reset before headers. reset reason: connection termination";
static const char BODY_OVERFLOW[] =
	"upstream connect error or disconnect/reset before headers. reset reason: overflow";


enum { STEP_NONE, STEP_AFTER_DELAY, STEP_RETRY };

static void rq_attempt(struct l7_req *rq);
static void outbound_route(struct l7_req *rq);

void l7_add_flag(struct l7_req *rq, const char *f)
{
	size_t n = strlen(rq->flags);

	if (strstr(rq->flags, f))
		return;
	snprintf(rq->flags + n, sizeof(rq->flags) - n, "%s%s", n ? "," : "", f);
}

/* ---- request completion --------------------------------------------------------- */

static void attempt_end(struct l7_req *rq, int reuse)
{
	l7_timer_cancel(rq->d->e, &rq->t_try);
	if (!rq->x_live)
		return;
	l7_x_end(&rq->x, reuse);
	if (rq->x.active_counted)
		l7_backend_active(rq->d->e, &rq->x.b, -1);
	rq->x.active_counted = 0;
	rq->x_live = rq->x_ready = 0;
	if (rq->retry_held) {
		l7_cb_give(&rq->c->rt->retries);
		rq->retry_held = 0;
	}
}

/* The request is over (answered, or the client went away): account,
 * release what it held, and hand it back to its front. */
void l7_rq_end(struct l7_req *rq, int from_close)
{
	struct bm_l7_engine *e = rq->d->e;

	attempt_end(rq, 0);
	l7_timer_cancel(e, &rq->t_route);
	l7_timer_cancel(e, &rq->t_step);
	if (rq->retry_held) { /* a retry was scheduled and never ran */
		l7_cb_give(&rq->c->rt->retries);
		rq->retry_held = 0;
	}
	l7_rq_record(rq);
	rq->trace.active = 0;
	if (rq->req_counted)
		l7_cb_give(&rq->c->rt->requests);
	rq->req_counted = 0;
	bm_chunkq_clear(e->l, &rq->uhead);
	bm_chunkq_clear(e->l, &rq->body);
	rq->active = 0;
	rq->fr->ended(rq, from_close);
}

void l7_rq_maybe_finish(struct l7_req *rq)
{
	if (!rq->active || !rq->resp_done || !rq->fr->req_complete(rq))
		return;
	l7_rq_end(rq, 0);
}

/* Cut the request (the response may be half sent): the front resets. */
static void rq_abort(struct l7_req *rq)
{
	if (rq->active)
		rq->fr->abort(rq);
}

/* ---- local responses ------------------------------------------------------------ */

void l7_rq_local_x(struct l7_req *rq, int status, const char *body, const char *flag,
		   const struct l7_xhdr *xh, size_t n_xh)
{
	struct bm_h1_hlist *hl;
	size_t blen = body ? strlen(body) : 0;
	int head_req = rq->h && rq->h->method && !strcmp(rq->h->method, "HEAD");
	int grpc = (rq->grpc && status >= 300 && !rq->upgrade) || rq->grpc_abort, err;

	attempt_end(rq, 0);
	l7_timer_cancel(rq->d->e, &rq->t_route);
	l7_timer_cancel(rq->d->e, &rq->t_step);
	if (flag)
		l7_add_flag(rq, flag);
	if (rq->resp_started) {
		/* part of a response went out already: all we can do is cut it */
		rq_abort(rq);
		return;
	}
	hl = malloc(sizeof(*hl));
	if (!hl) {
		rq_abort(rq);
		return;
	}
	bm_h1_hlist_from(hl, NULL, 0);
	for (size_t i = 0; i < n_xh; i++)
		bm_h1_hlist_add(hl, xh[i].name, xh[i].value, strlen(xh[i].value));
	if (grpc) {
		/* Envoy's local reply to a gRPC request: 200, trailers-only */
		err = l7_grpc_local_headers(rq, hl, status, body);
		rq->grpc_status = (int16_t)(rq->grpc_abort ? rq->grpc_abort - 1 :
					     l7_grpc_from_http(status));
		status = 200;
		blen = 0;
	} else {
		err = blen ? bm_h1_hlist_add(hl, "content-type", "text/plain", 10) : 0;
	}
	if (!err && rq->rt)
		err = bm_h1_hlist_apply(hl, &rq->rt->resp);
	rq->status = (uint16_t)status;
	rq->resp_started = 1;
	rq->cork = 1; /* head and body leave in one write, at the end */
	if (!err)
		err = rq->fr->head(rq, status, NULL, hl, grpc ? -1 : (int64_t)blen,
				   !grpc && !head_req && blen);
	free(hl);
	if (!err && !head_req && blen)
		err = rq->fr->body(rq, (const uint8_t *)body, blen);
	rq->cork = 0;
	if (!err && rq->active)
		err = rq->fr->end(rq, NULL, 0);
	if (err) {
		rq_abort(rq);
		return;
	}
	rq->resp_done = 1;
	rq->resp_bytes = head_req ? 0 : blen;
	rq->discard = 1;
	bm_chunkq_clear(rq->d->e->l, &rq->body);
	l7_rq_maybe_finish(rq);
}

void l7_rq_local(struct l7_req *rq, int status, const char *body, const char *flag)
{
	l7_rq_local_x(rq, status, body, flag, NULL, 0);
}

/* ---- the upstream request ---------------------------------------------------------- */

static void gen_request_id(struct bm_l7_engine *e, char *out)
{
	uint32_t a = l7_rand(e), b = l7_rand(e), c = l7_rand(e), x = l7_rand(e);

	/* UUID v4: version nibble 4, variant 10xx */
	bm_hex(out, a, 8);
	out[8] = '-';
	bm_hex(out + 9, b >> 16, 4);
	out[13] = '-';
	out[14] = '4';
	bm_hex(out + 15, b & 0xfff, 3);
	out[18] = '-';
	bm_hex(out + 19, (c >> 16 & 0x3fff) | 0x8000, 4);
	out[23] = '-';
	bm_hex(out + 24, c & 0xffff, 4);
	bm_hex(out + 28, x, 8);
	out[36] = 0;
}

/* "<route>.<match>", or "<route>" when the match has no name; truncated to
 * cap - 1 characters. */
static void route_name(char *out, size_t cap, const char *route, const char *match)
{
	size_t n = route ? strnlen(route, cap - 1) : 0;

	memcpy(out, route ? route : "", n);
	if (match && match[0] && n < cap - 1) {
		size_t m = strnlen(match, cap - 2 - n);

		out[n++] = '.';
		memcpy(out + n, match, m);
		n += m;
	}
	out[n] = 0;
}

static uint64_t rand64(struct bm_l7_engine *e)
{
	return (uint64_t)l7_rand(e) << 32 | l7_rand(e);
}

/* This hop's span (agent/tracing.h): the client pod's settings on the
 * client's side, the server pod's on the server's. */
static void trace_begin(struct l7_req *rq)
{
	struct l7_dconn *d = rq->d;
	struct bm_l7_engine *e = d->e;
	const struct bm_l7_podtrace *pt = d->peer.inbound ?
		bm_trace_pod_find(d->cfg, d->peer.dst_ns, d->peer.dst_name) :
		bm_trace_pod_find(d->cfg, d->peer.src_ns, d->peer.src_name);
	struct bm_trace_rand rnd;

	rnd.trace_hi = rand64(e);
	rnd.trace_lo = rand64(e);
	rnd.span = rand64(e);
	rnd.sample = l7_rand(e);
	bm_trace_start(&rq->trace, rq->h->hdr, rq->h->n_hdr,
		       d->peer.inbound ? BM_TRACE_SERVER : BM_TRACE_CLIENT, pt, &rnd);
}

/* Serialize the request head for upstream into rq->uhead (HTTP/1.1 bytes;
 * an HTTP/2 upstream translates them, h2up.c). */
static int build_uhead(struct l7_req *rq, const char *target, size_t tlen,
		       const char *orig_path, const struct bm_l7_authz_res *strip)
{
	const struct bm_h1_head *h = rq->h;
	struct bm_h1_hlist *hl = malloc(sizeof(*hl));
	const struct bm_http_hdr *rid, *up = bm_h1_find(h->hdr, h->n_hdr, "upgrade");
	char len[24];
	int err = 0;

	if (!hl)
		return -ENOMEM;
	bm_h1_hlist_from(hl, h->hdr, h->n_hdr);
	bm_h1_hlist_strip_hop(hl);
	bm_h1_hlist_remove(hl, "expect");   /* 100-continue was answered here */
	for (size_t i = 0; strip && i < strip->n_strip_header && i < BM_L7_MAX_STRIP; i++)
		bm_h1_hlist_remove(hl, strip->strip_header[i]);
	if (orig_path)
		err = bm_h1_hlist_set(hl, "x-envoy-original-path", orig_path, strlen(orig_path));
	if (!err && rq->rt && rq->rt->rewrite_authority)
		err = bm_h1_hlist_set(hl, "host", rq->rt->rewrite_authority,
				      strlen(rq->rt->rewrite_authority));
	/* route-level, then destination-level: its set wins (§1.4) */
	if (!err && rq->rt)
		err = bm_h1_hlist_apply(hl, &rq->rt->req);
	if (!err && rq->dest)
		err = bm_h1_hlist_apply(hl, &rq->dest->req);
	rid = bm_h1_hlist_get(hl, "x-request-id");
	if (!err && (!rid || !rid->value_len))
		err = bm_h1_hlist_set(hl, "x-request-id", rq->reqid, strlen(rq->reqid));
	/* after the route's header operations: the trace context is ours */
	if (!err)
		err = bm_trace_inject(&rq->trace, hl);
	if (!err)
		err = bm_h1_hlist_set(hl, "x-forwarded-proto", "http", 4);
	/* WebSocket: the upgrade is end to end here (Istio allows it) */
	if (!err && rq->upgrade && up) {
		err = bm_h1_hlist_set(hl, "upgrade", up->value, up->value_len);
		if (!err)
			err = bm_h1_hlist_set(hl, "connection", "upgrade", 7);
	}
	if (!err && rq->grpc)
		err = bm_h1_hlist_set(hl, "te", "trailers", 8);
	if (!err && h->chunked)
		err = bm_h1_hlist_add(hl, "transfer-encoding", "chunked", 7);
	else if (!err && h->content_length >= 0)
		err = bm_h1_hlist_add(hl, "content-length", len,
				      bm_utoa(len, (uint64_t)h->content_length));
	if (!err)
		err = bm_h1_write_request(rq->d->e->l, &rq->uhead, h->method, target, tlen, hl);
	free(hl);
	return err;
}

/* Queue what the current attempt has not had of the body yet. */
static void rq_push_body(struct l7_req *rq)
{
	struct bm_l7_engine *e = rq->d->e;
	struct bm_chunkq *wq;
	int chunked = rq->h->chunked, err = 0;
	size_t skip;

	if (!rq->x_live || !rq->x_ready || !(wq = l7_x_wq(&rq->x)))
		return;
	skip = rq->replayable ? rq->body_sent : 0;
	for (struct bm_chunk *c = rq->body.head; c && !err; c = c->next) {
		if (skip >= c->len) {
			skip -= c->len;
			continue;
		}
		err = bm_h1_write_body(e->l, wq, chunked, c->data + c->off + skip, c->len - skip);
		skip = 0;
	}
	if (rq->replayable)
		rq->body_sent = rq->body.bytes;
	else
		bm_chunkq_consume(e->l, &rq->body, rq->body.bytes);
	if (!err && rq->body_done && !rq->body_end_sent) {
		if (chunked)
			err = bm_h1_write_end_trailers(e->l, wq, rq->req_trailers, rq->n_req_trailers);
		rq->body_end_sent = 1;
		rq->x.req_done = 1;
	}
	if (err) {
		rq_abort(rq);
		return;
	}
	l7_x_flush(&rq->x);
}

static void route_timeout(struct l7_timer *t)
{
	struct l7_req *rq = (struct l7_req *)((char *)t - offsetof(struct l7_req, t_route));

	rq->d->e->st.timeouts++;
	if (rq->x_live && rq->x_ready)
		l7_outlier(rq->d->e, rq->c, &rq->x.b, BM_OE_LOCAL_FAILURE);
	/* §1.5: 504 "upstream request timeout", UT, never retried; after the
	 * response started, the stream is cut. */
	l7_rq_local(rq, 504, "upstream request timeout", "UT");
}

/* A gRPC client's deadline (grpc-timeout: 1-8 digits and a unit H, M, S,
 * m, u, n) in ms, rounded up; 0 when absent or malformed. */
static uint64_t grpc_timeout_ms(const struct bm_h1_head *h)
{
	const struct bm_http_hdr *g = bm_h1_find(h->hdr, h->n_hdr, "grpc-timeout");
	uint64_t v = 0;
	size_t i;

	if (!g || g->value_len < 2 || g->value_len > 9)
		return 0;
	for (i = 0; i + 1 < g->value_len; i++) {
		if (!isdigit((unsigned char)g->value[i]))
			return 0;
		v = v * 10 + (uint64_t)(g->value[i] - '0');
	}
	switch (g->value[i]) {
	case 'H': return v * 3600000;
	case 'M': return v * 60000;
	case 'S': return v * 1000;
	case 'm': return v;
	case 'u': return (v + 999) / 1000;
	case 'n': return (v + 999999) / 1000000;
	default:  return 0;
	}
}

/* The route timeout runs from the end of the downstream request (§1.5).
 * gRPC: Istio sets max_grpc_timeout to the route's timeout, so a client's
 * grpc-timeout is honoured, capped by the route timeout when there is one. */
static void rq_arm_route(struct l7_req *rq)
{
	uint64_t ms = rq->rt ? rq->rt->timeout_ms : 0, g;

	if (rq->route_armed || !rq->forwarding || !rq->body_done || rq->resp_done)
		return;
	if (rq->grpc && (g = grpc_timeout_ms(rq->h)))
		ms = ms && ms < g ? ms : g;
	if (!ms)
		return;
	rq->route_armed = 1;
	l7_timer_arm(rq->d->e, &rq->t_route, ms);
}

static void rq_send_mirrors(struct l7_req *rq)
{
	struct l7_dconn *d = rq->d;
	uint32_t tmo = rq->rt && rq->rt->timeout_ms ? rq->rt->timeout_ms : 0;

	if (rq->mirrors_sent || !rq->n_mirror || !rq->forwarding || !rq->body_done)
		return;
	rq->mirrors_sent = 1;
	if (!rq->replayable) /* the body was streamed: nothing whole to copy */
		return;
	for (unsigned i = 0; i < rq->n_mirror; i++)
		l7_mirror_send(d->e, rq->mirror[i], d->pool_key, d->peer.user, &rq->uhead, &rq->body,
			       rq->h->chunked, !strcmp(rq->h->method, "HEAD"), tmo);
}

/* ---- attempts -------------------------------------------------------------------------- */

static int rq_retry_want(struct l7_req *rq, enum bm_attempt_result r, int status, int grpc)
{
	struct bm_l7_retry exhausted;

	if (!rq->replayable || r == BM_AR_OVERFLOW || rq->upgrade)
		return 0;
	if (bm_retry_should(&rq->retry, r, status, grpc, rq->attempts)) {
		if (l7_cb_take(&rq->c->rt->retries, rq->c->max_retries))
			return 1;
		__atomic_add_fetch(&rq->c->rt->overflow_retries, 1, __ATOMIC_RELAXED);
		return 0;
	}
	/* URX: the policy would retry this outcome, the limit said no. */
	exhausted = rq->retry;
	exhausted.attempts = rq->attempts;
	if (rq->attempts > 1 && bm_retry_should(&exhausted, r, status, grpc, rq->attempts))
		rq->urx = 1;
	return 0;
}

static void rq_retry(struct l7_req *rq)
{
	uint32_t ms = bm_retry_backoff_ms(&rq->retry, rq->attempts, l7_rand(rq->d->e));

	attempt_end(rq, 0);
	rq->retry_held = 1; /* the retry is in flight until its attempt ends */
	rq->d->e->st.retries++;
	rq->step = STEP_RETRY;
	l7_timer_arm(rq->d->e, &rq->t_step, ms);
}

static void rq_attempt_failed(struct l7_req *rq, enum bm_attempt_result r)
{
	struct bm_l7_engine *e = rq->d->e;

	if (rq->resp_started) {
		/* the upstream went away in the middle of the response */
		l7_add_flag(rq, "UC");
		attempt_end(rq, 0);
		rq_abort(rq);
		return;
	}
	l7_timer_cancel(e, &rq->t_try);
	l7_outlier(e, rq->c, &rq->x.b, l7_outlier_ev(r, 0));
	if (rq_retry_want(rq, r, 0, -1)) {
		rq_retry(rq);
		return;
	}
	attempt_end(rq, 0);
	if (rq->urx)
		l7_add_flag(rq, "URX");
	switch (r) {
	case BM_AR_CONNECT_FAILURE:
		l7_rq_local(rq, 503, BODY_CONNECT_FAILURE, "UF");
		break;
	case BM_AR_PER_TRY_TIMEOUT:
		e->st.timeouts++;
		l7_rq_local(rq, 504, "upstream request timeout", "UT");
		break;
	default:
		l7_rq_local(rq, 503, BODY_TERMINATION, "UC");
		break;
	}
}

static void att_ready(struct l7_x *x)
{
	struct l7_req *rq = X_RQ(x);

	rq->x_ready = 1;
	rq->body_sent = 0;
	rq->body_end_sent = 0;
	if (l7_x_write_q(x, &rq->uhead, 0)) {
		rq_attempt_failed(rq, BM_AR_RESET_BEFORE_REQ);
		return;
	}
	rq_push_body(rq);
}

static void att_writable(struct l7_x *x)
{
	struct l7_req *rq = X_RQ(x);

	rq->fr->more(rq); /* more request body may go now */
}

static void att_head(struct l7_x *x, const struct bm_h1_head *h)
{
	struct l7_req *rq = X_RQ(x);
	struct bm_l7_engine *e = rq->d->e;
	const struct bm_http_hdr *up = bm_h1_find(h->hdr, h->n_hdr, "upgrade");
	int gs = l7_grpc_status_of(h->hdr, h->n_hdr);
	struct bm_h1_hlist *hl;
	int err;

	l7_timer_cancel(e, &rq->t_try);
	l7_outlier(e, rq->c, &x->b, l7_outlier_ev(BM_AR_RESPONSE, h->status));
	/* §1.6: the gRPC tokens look at the status in the response headers */
	if (rq_retry_want(rq, BM_AR_RESPONSE, h->status, gs)) {
		rq_retry(rq);
		return;
	}
	if (rq->urx)
		l7_add_flag(rq, "URX");
	rq->grpc_status = (int16_t)gs;
	hl = malloc(sizeof(*hl));
	if (!hl) {
		rq_abort(rq);
		return;
	}
	bm_h1_hlist_from(hl, h->hdr, h->n_hdr);
	bm_h1_hlist_strip_hop(hl);
	err = rq->rt ? bm_h1_hlist_apply(hl, &rq->rt->resp) : 0;
	if (!err && rq->dest)
		err = bm_h1_hlist_apply(hl, &rq->dest->resp);
	if (!err && h->status == 101 && rq->upgrade && up) {
		err = bm_h1_hlist_set(hl, "upgrade", up->value, up->value_len);
		if (!err)
			err = bm_h1_hlist_set(hl, "connection", "upgrade", 7);
	}
	rq->status = (uint16_t)h->status;
	rq->resp_started = 1;
	/* The whole body is in the upstream's last read: head and body leave
	 * in one write, when the response ends (att_done uncorks). */
	rq->cork = x->body_in_hand;
	if (!err)
		err = rq->fr->head(rq, h->status, h->reason, hl, h->content_length,
				   h->has_body || h->status == 101);
	free(hl);
	if (err)
		rq_abort(rq);
}

static void att_body(struct l7_x *x, const uint8_t *p, size_t n)
{
	struct l7_req *rq = X_RQ(x);

	if (rq->fr->body(rq, p, n)) {
		rq_abort(rq);
		return;
	}
	rq->resp_bytes += n;
	if (rq->active && rq->x_live && rq->fr->queued(rq) > rq->fr->high_water)
		l7_x_pause(x, 1);
}

static void att_done(struct l7_x *x)
{
	struct l7_req *rq = X_RQ(x);
	struct bm_l7_engine *e = rq->d->e;

	if (rq->grpc_status < 0)
		rq->grpc_status = (int16_t)l7_grpc_status_of(x->trailers, x->n_trailers);
	rq->cork = 0; /* end writes what att_head corked */
	if (rq->fr->end(rq, x->trailers, x->n_trailers)) {
		rq_abort(rq);
		return;
	}
	rq->resp_done = 1;
	l7_timer_cancel(e, &rq->t_route);
	attempt_end(rq, 1);
	if (!rq->active)
		return;
	if (!rq->fr->req_complete(rq)) {
		/* answered before the request ended: drop the rest of its body */
		rq->discard = 1;
		bm_chunkq_clear(e->l, &rq->body);
	}
	l7_rq_maybe_finish(rq);
	rq->fr->more(rq);
}

static void att_fail(struct l7_x *x, enum bm_attempt_result r)
{
	rq_attempt_failed(X_RQ(x), r);
}

static void att_upgraded(struct l7_x *x, int fd, const uint8_t *rest, size_t n)
{
	struct l7_req *rq = X_RQ(x);

	attempt_end(rq, 0);
	if (!rq->fr->upgraded || !rq->active) {
		if (fd >= 0)
			close(fd);
		rq_abort(rq);
		return;
	}
	rq->d->e->st.upgrades++;
	rq->fr->upgraded(rq, fd, rest, n);
}

static const struct l7_x_ops att_ops = {
	.ready = att_ready,
	.writable = att_writable,
	.head = att_head,
	.body = att_body,
	.done = att_done,
	.fail = att_fail,
	.upgraded = att_upgraded,
};

static void per_try_timeout(struct l7_timer *t)
{
	struct l7_req *rq = (struct l7_req *)((char *)t - offsetof(struct l7_req, t_try));

	if (rq->x_live && !rq->resp_started)
		rq_attempt_failed(rq, BM_AR_PER_TRY_TIMEOUT);
}

/* HTTP/2 upstream: the port says HTTP2/GRPC (or h2UpgradePolicy UPGRADE);
 * inbound, and ports of unset protocol, use the client's protocol (Envoy's
 * USE_DOWNSTREAM_PROTOCOL). Upgrades are HTTP/1.1 only. */
static int rq_upstream_h2(const struct l7_req *rq)
{
	if (rq->upgrade)
		return 0;
	if (rq->d->peer.inbound)
		return rq->d->h2 != NULL;
	if (rq->c->proto == BM_L7_UP_H2)
		return 1;
	return rq->c->proto == BM_L7_UP_DOWNSTREAM && rq->d->h2;
}

static void rq_attempt(struct l7_req *rq)
{
	struct l7_dconn *d = rq->d;
	const struct bm_l7_backend *b;
	int err;

	rq->attempts++;
	b = l7_lb_pick(d->e, rq->c, (const uint32_t (*)[2])rq->tried, rq->n_tried,
		       rq->retry.ignore_previous_hosts);
	if (!b) {
		if (rq->retry_held) {
			l7_cb_give(&rq->c->rt->retries);
			rq->retry_held = 0;
		}
		l7_rq_local(rq, 503, "no healthy upstream", "UH");
		return;
	}
	if (rq->n_tried < MAX_TRIED) {
		rq->tried[rq->n_tried][0] = b->ip;
		rq->tried[rq->n_tried][1] = b->port;
		rq->n_tried++;
	} else {
		rq->tried[MAX_TRIED - 1][0] = b->ip;
		rq->tried[MAX_TRIED - 1][1] = b->port;
	}
	memset(&rq->x, 0, sizeof(rq->x));
	rq->x.e = d->e;
	rq->x.ops = &att_ops;
	rq->x.c = rq->c;
	rq->x.b = *b;
	rq->x.pool_key = d->pool_key;
	rq->x.user = d->peer.user;
	rq->x.head_request = !strcmp(rq->h->method, "HEAD");
	rq->x.h2 = (uint8_t)rq_upstream_h2(rq);
	rq->x_live = 1;
	rq->x_ready = 0;
	l7_backend_active(d->e, b, 1);
	rq->x.active_counted = 1;
	if (rq->retry.per_try_ms)
		l7_timer_arm(d->e, &rq->t_try, rq->retry.per_try_ms);
	err = l7_x_start(&rq->x);
	if (err == -EBUSY) {
		attempt_end(rq, 0);
		d->e->st.overflows++;
		l7_rq_local_x(rq, 503, BODY_OVERFLOW, "UO",
			      (const struct l7_xhdr[]){ { "x-envoy-overloaded", "true" } }, 1);
	} else if (err) {
		rq_attempt_failed(rq, BM_AR_CONNECT_FAILURE);
	}
}

static void step_timer(struct l7_timer *t)
{
	struct l7_req *rq = (struct l7_req *)((char *)t - offsetof(struct l7_req, t_step));
	int step = rq->step;

	rq->step = STEP_NONE;
	if (step == STEP_RETRY)
		rq_attempt(rq);
	else if (step == STEP_AFTER_DELAY)
		outbound_route(rq);
}

/* ---- outbound: routing -------------------------------------------------------------------- */

static int chance(struct bm_l7_engine *e, uint32_t ppm)
{
	return ppm && (ppm >= 1000000 || l7_rand(e) % 1000000 < ppm);
}

/* Forward to the routed cluster: circuit breaker, head, attempt 1. */
static void rq_forward(struct l7_req *rq, const char *target, size_t tlen, const char *orig,
		       const struct bm_l7_authz_res *strip)
{
	struct bm_l7_cluster *c = rq->c;

	if (!l7_cb_take(&c->rt->requests, c->max_requests)) {
		__atomic_add_fetch(&c->rt->overflow_requests, 1, __ATOMIC_RELAXED);
		rq->d->e->st.overflows++;
		l7_rq_local_x(rq, 503, BODY_OVERFLOW, "UO",
			      (const struct l7_xhdr[]){ { "x-envoy-overloaded", "true" } }, 1);
		return;
	}
	rq->req_counted = 1;
	if (build_uhead(rq, target, tlen, orig, strip)) {
		l7_rq_local(rq, 500, "internal error", NULL);
		return;
	}
	rq->forwarding = 1;
	rq_arm_route(rq);
	rq_send_mirrors(rq);
	rq_attempt(rq);
}

static void outbound_route(struct l7_req *rq)
{
	struct bm_l7_engine *e = rq->d->e;
	const struct bm_l7_route *rt = rq->rt;
	const struct bm_h1_head *h = rq->h;
	char *target = NULL;
	const char *orig = NULL;

	/* fault: the abort happens after the delay, both before routing */
	if (chance(e, rt->fault.abort_ppm)) {
		l7_rq_fault_abort(rq);
		return;
	}
	rq->dest = bm_l7_dest_pick(rt, l7_rand(e));
	if (!rq->dest || !rq->dest->c) {
		l7_rq_local(rq, 503, "no cluster", "NC");
		return;
	}
	rq->c = rq->dest->c;
	rq->retry = rt->retry;
	for (size_t i = 0; i < rt->n_mirror && rq->n_mirror < MAX_MIRRORS; i++)
		if (rt->mirror[i].c && chance(e, rt->mirror[i].ppm))
			rq->mirror[rq->n_mirror++] = rt->mirror[i].c;
	if (rt->rewrite_uri) {
		target = malloc(8192);
		if (!target || bm_l7_rewrite_path(rt, rq->which, h->target, target, 8192)) {
			free(target);
			l7_rq_local(rq, 500, "path rewrite failed", NULL);
			return;
		}
		orig = h->target;
	}
	rq_forward(rq, target ? target : h->target, target ? strlen(target) : h->target_len, orig,
		   NULL);
	free(target);
}

static void outbound_begin(struct l7_req *rq)
{
	struct l7_dconn *d = rq->d;
	struct bm_l7_engine *e = d->e;
	const struct bm_h1_head *h = rq->h;
	const struct bm_http_hdr *host = bm_h1_find(h->hdr, h->n_hdr, "host");
	const struct bm_l7_service *svc;
	const struct bm_l7_route *rt;
	struct bm_l7_req r = {
		.method = h->method,
		.scheme = "http",
		.authority = host ? host->value : "",
		.path = h->target,
		.path_len = h->target_len,
		.hdr = h->hdr,
		.n_hdr = h->n_hdr,
		.src_labels = d->peer.src_labels,
		.src_ns = d->peer.src_ns[0] ? d->peer.src_ns : NULL,
		.port = d->peer.port,
	};

	svc = d->cfg ? bm_l7_find(d->cfg, d->peer.vip, d->peer.port) : NULL;
	rt = svc ? bm_l7_route_select(svc, &r, &rq->which) : NULL;
	if (!rt) {
		l7_rq_local(rq, 404, NULL, "NR");
		return;
	}
	rq->rt = rt;
	route_name(rq->route_name, sizeof(rq->route_name), rt->name,
		   rq->which >= 0 && (size_t)rq->which < rt->n_match ? rt->match[rq->which].name : NULL);
	if (rt->direct.status) {
		char *body = NULL;

		if (rt->direct.body && rt->direct.body_len) {
			body = strndup(rt->direct.body, rt->direct.body_len);
			if (!body) {
				rq_abort(rq);
				return;
			}
		}
		l7_rq_local(rq, rt->direct.status, body, NULL);
		free(body);
		return;
	}
	if (rt->redirect.code) {
		char loc[4096];

		if (bm_l7_redirect_location(rt, rq->which, &r, loc, sizeof(loc))) {
			l7_rq_local(rq, 500, "redirect too long", NULL);
			return;
		}
		l7_rq_local_x(rq, rt->redirect.code, NULL, NULL,
			      (const struct l7_xhdr[]){ { "location", loc } }, 1);
		return;
	}
	if (chance(e, rt->fault.delay_ppm) && rt->fault.delay_ms) {
		l7_add_flag(rq, "DI");
		rq->step = STEP_AFTER_DELAY;
		l7_timer_arm(e, &rq->t_step, rt->fault.delay_ms);
		return;
	}
	outbound_route(rq);
}

/* ---- inbound: authorization ---------------------------------------------------------------- */

/* "?query" onto path, without the parameters the policy asked to strip. */
static void append_query(char *path, size_t cap, const char *q, const struct bm_l7_authz_res *res)
{
	size_t n = strlen(path);
	int first = 1;

	while (*q) {
		const char *amp = strchr(q, '&'), *end = amp ? amp : q + strlen(q);
		size_t kl = strcspn(q, "=&");
		int drop = 0;

		for (size_t i = 0; i < res->n_strip_param && i < BM_L7_MAX_STRIP; i++)
			if (strlen(res->strip_param[i]) == kl && !strncmp(q, res->strip_param[i], kl))
				drop = 1;
		if (!drop && n + 1 + (size_t)(end - q) < cap) {
			path[n++] = first ? '?' : '&';
			memcpy(path + n, q, (size_t)(end - q));
			n += (size_t)(end - q);
			first = 0;
		}
		q = amp ? amp + 1 : end;
	}
	path[n] = 0;
}

static void inbound_begin(struct l7_req *rq)
{
	struct l7_dconn *d = rq->d;
	struct bm_l7_engine *e = d->e;
	const struct bm_h1_head *h = rq->h;
	const struct bm_http_hdr *host = bm_h1_find(h->hdr, h->n_hdr, "host");
	const char *q = memchr(h->target, '?', h->target_len);
	size_t plen = q ? (size_t)(q - h->target) : h->target_len;
	struct bm_l7_authz_res res = { 0 };
	struct bm_l7_authz_req az;
	char *path = malloc(8192 + 2);
	int rc = 0;

	if (!path) {
		rq_abort(rq);
		return;
	}
	/* §4.1: authorization and the app see the normalized path */
	if (bm_l7_normalize_path(h->target, plen, path, 8192)) {
		free(path);
		l7_rq_local(rq, 400, "Bad Request", NULL);
		return;
	}
	az.peer = &d->peer;
	az.method = h->method;
	az.host = host ? host->value : "";
	az.path = path;
	az.query = q ? q + 1 : "";
	az.hdr = h->hdr;
	az.n_hdr = h->n_hdr;
	if (e->ops.authorize)
		rc = e->ops.authorize(e->ops.ctx, &az, &res);
	if (rc == -EPERM) {
		free(path);
		l7_rq_local_x(rq, 401, res.body[0] ? res.body : "Jwt verification fails", NULL,
			      (const struct l7_xhdr[]){ { "www-authenticate",
						  res.www_authenticate[0] ? res.www_authenticate :
									    "Bearer realm=\"mesh\"" } },
			      1);
		return;
	}
	if (rc) {
		free(path);
		l7_rq_local(rq, 403, "RBAC: access denied", "DENY");
		return;
	}
	if (q)
		append_query(path, 8192, q + 1, &res);
	rq->c = &d->icl;
	/* The inbound default: retry only what never reached the app (§1.6). */
	memset(&rq->retry, 0, sizeof(rq->retry));
	rq->retry.attempts = 2;
	rq->retry.on = BM_RETRY_RESET_BEFORE_REQ;
	rq_forward(rq, path, strlen(path), NULL, &res);
	free(path);
}

/* ---- the request's head and body ----------------------------------------------------------------- */

void l7_rq_reset(struct l7_req *rq)
{
	struct bm_l7_engine *e = rq->d->e;
	const struct bm_h1_head *h = rq->h;
	const struct bm_http_hdr *ex, *ct;

	l7_timer_cancel(e, &rq->t_route);
	l7_timer_cancel(e, &rq->t_try);
	l7_timer_cancel(e, &rq->t_step);
	memset(rq, 0, offsetof(struct l7_req, t_route));
	rq->active = 1;
	rq->replayable = 1;
	rq->which = -1;
	rq->grpc_status = -1;
	rq->start_mono = l7_now_ms();
	rq->start_wall = l7_wall_ms();
	rq->req_trailers = NULL;
	rq->n_req_trailers = 0;
	ex = bm_h1_find(h->hdr, h->n_hdr, "x-request-id");
	if (ex && ex->value_len && ex->value_len < sizeof(rq->reqid))
		memcpy(rq->reqid, ex->value, ex->value_len + 1);
	else
		gen_request_id(e, rq->reqid);
	/* Envoy's isGrpcRequestHeaders: application/grpc, +proto, ;params
	 * (not grpc-web, which is plain HTTP to the router) */
	ct = bm_h1_find(h->hdr, h->n_hdr, "content-type");
	rq->grpc = ct && ct->value_len >= 16 && !strncasecmp(ct->value, "application/grpc", 16) &&
		   (ct->value_len == 16 || ct->value[16] == '+' || ct->value[16] == ';');
	trace_begin(rq);
}

void l7_rq_route(struct l7_req *rq)
{
	if (rq->d->peer.inbound)
		inbound_begin(rq);
	else
		outbound_begin(rq);
}

int l7_rq_body(struct l7_req *rq, const uint8_t *p, size_t n)
{
	struct bm_l7_engine *e = rq->d->e;

	rq->body_total += n;
	if (rq->discard)
		return 0;
	if (rq->replayable && rq->body_total > BM_L7_REPLAY_MAX) {
		/* too big to keep: stream it, no retries nor mirrors now */
		rq->replayable = 0;
		if (rq->x_ready)
			bm_chunkq_consume(e->l, &rq->body, rq->body_sent);
		rq->body_sent = 0;
	}
	if (bm_chunkq_append(e->l, &rq->body, p, n))
		return -ENOMEM;
	rq_push_body(rq);
	return 0;
}

void l7_rq_body_done(struct l7_req *rq)
{
	rq->body_done = 1;
	if (rq->discard) {
		l7_rq_maybe_finish(rq);
		return;
	}
	rq_push_body(rq);
	if (!rq->active)
		return;
	rq_arm_route(rq);
	rq_send_mirrors(rq);
	l7_rq_maybe_finish(rq);
}

int l7_rq_body_room(struct l7_req *rq)
{
	if (rq->discard || rq->replayable)
		return 1;
	return rq->body.bytes + (rq->x_live ? l7_x_queued(&rq->x) : 0) < L7_HIGH_WATER;
}

void l7_rq_drained(struct l7_req *rq)
{
	if (rq->active && rq->x_live && rq->x.paused)
		l7_x_pause(&rq->x, 0);
}

void l7_rq_init(struct l7_req *rq, struct l7_dconn *d, const struct l7_front *fr)
{
	rq->d = d;
	rq->fr = fr;
	l7_timer_init(&rq->t_route, route_timeout);
	l7_timer_init(&rq->t_try, per_try_timeout);
	l7_timer_init(&rq->t_step, step_timer);
}
