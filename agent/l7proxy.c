/*
 * The HTTP/1.1 engine's downstream half: connections from clients (or, on
 * the server side, from peers), one request at a time in arrival order,
 * and the per-request flow of Envoy's router as Istio configures it
 * (istio-api.md §1.2-§1.9): route, directResponse / redirect, fault, the
 * weighted destination, circuit breakers, attempts with retries and
 * timeouts, streaming the response back, mirrors; on the server side the
 * per-request authorization. The client socket, sniffing and the engine
 * object are l7conn.c's; the upstream half is l7upstream.c.
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
#include "l7upstream.h"
#include "tracing.h"

static const char BODY_CONNECT_FAILURE[] =
	"upstream connect error or disconnect/reset before headers. reset reason: connection failure";
static const char BODY_TERMINATION[] =
	"upstream connect error or disconnect/reset before headers. reset reason: connection termination";
static const char BODY_OVERFLOW[] =
	"upstream connect error or disconnect/reset before headers. reset reason: overflow";

enum { STEP_NONE, STEP_AFTER_DELAY, STEP_RETRY };

static void rq_attempt(struct l7_dconn *d);
static void outbound_route(struct l7_dconn *d);

void l7_add_flag(struct l7_req *rq, const char *f)
{
	size_t n = strlen(rq->flags);

	if (strstr(rq->flags, f))
		return;
	snprintf(rq->flags + n, sizeof(rq->flags) - n, "%s%s", n ? "," : "", f);
}

/* ---- request completion --------------------------------------------------------- */

static void attempt_end(struct l7_dconn *d, int reuse)
{
	struct l7_req *rq = &d->rq;

	l7_timer_cancel(d->e, &rq->t_try);
	if (!rq->x_live)
		return;
	l7_x_end(&rq->x, reuse);
	if (rq->x.active_counted)
		l7_backend_active(d->e, &rq->x.b, -1);
	rq->x.active_counted = 0;
	rq->x_live = rq->x_ready = 0;
	if (rq->retry_held) {
		l7_cb_give(&rq->c->rt->retries);
		rq->retry_held = 0;
	}
}

static void rq_record(struct l7_dconn *d)
{
	struct bm_l7_engine *e = d->e;
	struct l7_req *rq = &d->rq;
	const struct bm_h1_head *h = &d->qp.head;
	const struct bm_http_hdr *host = bm_h1_find(h->hdr, h->n_hdr, "host");
	const struct bm_http_hdr *ua = bm_h1_find(h->hdr, h->n_hdr, "user-agent");
	struct bm_l7_record r = { 0 };

	e->st.requests++;
	e->st.status_class[rq->status >= 100 && rq->status < 600 ? rq->status / 100 : 0]++;
	if (!e->ops.complete)
		return;
	r.reporter = d->peer.inbound ? BM_MESH_DESTINATION : BM_MESH_SOURCE;
	r.mtls = d->peer.mtls;
	r.src_ns = d->peer.src_ns;
	r.src_name = d->peer.src_name;
	r.src_principal = d->peer.src_principal;
	r.dst_ns = d->peer.inbound ? d->peer.dst_ns : "";
	r.dst_name = d->peer.inbound ? d->peer.dst_name : "";
	r.dst_service = rq->c && !d->peer.inbound ? rq->c->host : "";
	r.dst_service_ns = rq->c && !d->peer.inbound ? rq->c->ns : "";
	r.cluster = rq->c ? rq->c->name : "";
	r.subset = rq->c ? rq->c->subset : "";
	r.upstream_ip = rq->n_tried ? rq->tried[rq->n_tried - 1][0] : 0;
	r.upstream_port = rq->n_tried ? (uint16_t)rq->tried[rq->n_tried - 1][1] : 0;
	r.dst_port = d->peer.inbound ? d->peer.dst_port : d->peer.port;
	r.method = h->method ? h->method : "";
	r.authority = host ? host->value : "";
	r.path = h->target ? h->target : "";
	r.status = rq->status;
	r.flags = rq->flags[0] ? rq->flags : "-";
	r.req_body_bytes = rq->body_total;
	r.resp_body_bytes = rq->resp_bytes;
	r.start_ms = rq->start_wall;
	r.duration_ms = l7_now_ms() - rq->start_mono;
	r.attempts = rq->attempts;
	r.route_name = rq->route_name;
	r.request_id = rq->reqid;
	r.user_agent = ua ? ua->value : "";
	r.svc_id = d->peer.inbound ? 0 : d->peer.svc_id;
	r.src_ip = d->peer.src_ip;
	if (d->peer.trace.active && d->peer.trace.report) {
		struct bm_trace_span *s = &d->peer.trace;
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		s->duration_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000 -
				 s->start_mono_us;
		r.span = s;
	}
	e->ops.complete(e->ops.ctx, &r);
}

/* The request is over (answered, or the client went away): account,
 * release what it held, and get ready for the next one. */
void l7_rq_end(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;
	struct bm_l7_engine *e = d->e;

	attempt_end(d, 0);
	l7_timer_cancel(e, &rq->t_route);
	l7_timer_cancel(e, &rq->t_step);
	if (rq->retry_held) { /* a retry was scheduled and never ran */
		l7_cb_give(&rq->c->rt->retries);
		rq->retry_held = 0;
	}
	rq_record(d);
	d->peer.trace.active = 0;
	if (rq->req_counted)
		l7_cb_give(&rq->c->rt->requests);
	bm_chunkq_clear(e->l, &rq->uhead);
	bm_chunkq_clear(e->l, &rq->body);
	rq->active = 0;
	bm_h1_reset(&d->qp);
}

static void rq_maybe_finish(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;

	if (!rq->active || !rq->resp_done || d->qp.state != BM_H1_DONE)
		return;
	l7_rq_end(d);
	if (d->close_after) {
		d->closing = 1;
		l7_dconn_flush(d);
	}
}

/* ---- local responses ------------------------------------------------------------ */

struct xhdr {
	const char *name, *value;
};

static void rq_local(struct l7_dconn *d, int status, const char *body, const char *flag,
		     const struct xhdr *xh, size_t n_xh)
{
	struct l7_req *rq = &d->rq;
	struct bm_h1_hlist *hl;
	char len[24];
	size_t blen = body ? strlen(body) : 0;
	int head_req = d->qp.head.method && !strcmp(d->qp.head.method, "HEAD");

	attempt_end(d, 0);
	l7_timer_cancel(d->e, &rq->t_route);
	l7_timer_cancel(d->e, &rq->t_step);
	if (flag)
		l7_add_flag(rq, flag);
	if (rq->resp_started) {
		/* part of a response went out already: all we can do is cut it */
		d->close_after = 1;
		l7_dconn_close(d, 1);
		return;
	}
	hl = malloc(sizeof(*hl));
	if (!hl) {
		l7_dconn_close(d, 1);
		return;
	}
	bm_h1_hlist_from(hl, NULL, 0);
	for (size_t i = 0; i < n_xh; i++)
		bm_h1_hlist_add(hl, xh[i].name, xh[i].value, strlen(xh[i].value));
	if (blen)
		bm_h1_hlist_add(hl, "content-type", "text/plain", 10);
	snprintf(len, sizeof(len), "%zu", blen);
	bm_h1_hlist_add(hl, "content-length", len, strlen(len));
	if (rq->rt)
		bm_h1_hlist_apply(hl, &rq->rt->resp);
	if (d->close_after)
		bm_h1_hlist_set(hl, "connection", "close", 5);
	else if (!d->qp.head.minor)
		bm_h1_hlist_set(hl, "connection", "keep-alive", 10);
	if (bm_h1_write_response(d->e->l, &d->out, 1, status, NULL, hl) ||
	    (!head_req && blen && l7_out_write(d, body, blen))) {
		free(hl);
		l7_dconn_close(d, 1);
		return;
	}
	free(hl);
	rq->status = (uint16_t)status;
	rq->resp_started = rq->resp_done = 1;
	rq->resp_bytes = head_req ? 0 : blen;
	rq->discard = 1;
	bm_chunkq_clear(d->e->l, &rq->body);
	l7_dconn_flush(d);
	if (!d->closed)
		rq_maybe_finish(d);
}

/* ---- the upstream request ---------------------------------------------------------- */

static void gen_request_id(struct bm_l7_engine *e, char *out)
{
	uint32_t a = l7_rand(e), b = l7_rand(e), c = l7_rand(e), x = l7_rand(e);

	/* UUID v4: version nibble 4, variant 10xx */
	snprintf(out, 37, "%08x-%04x-4%03x-%04x-%04x%08x", a, b >> 16, b & 0xfff,
		 (c >> 16 & 0x3fff) | 0x8000, c & 0xffff, x);
}

static uint64_t rand64(struct bm_l7_engine *e)
{
	return (uint64_t)l7_rand(e) << 32 | l7_rand(e);
}

/* This hop's span (agent/tracing.h): the client pod's settings on the
 * client's side, the server pod's on the server's. */
static void trace_begin(struct l7_dconn *d)
{
	struct bm_l7_engine *e = d->e;
	const struct bm_h1_head *h = &d->qp.head;
	const struct bm_l7_podtrace *pt = d->peer.inbound ?
		bm_trace_pod_find(d->cfg, d->peer.dst_ns, d->peer.dst_name) :
		bm_trace_pod_find(d->cfg, d->peer.src_ns, d->peer.src_name);
	struct bm_trace_rand rnd;

	rnd.trace_hi = rand64(e);
	rnd.trace_lo = rand64(e);
	rnd.span = rand64(e);
	rnd.sample = l7_rand(e);
	bm_trace_start(&d->peer.trace, h->hdr, h->n_hdr,
		       d->peer.inbound ? BM_TRACE_SERVER : BM_TRACE_CLIENT, pt, &rnd);
}

/* Serialize the request head for upstream into rq->uhead. */
static int build_uhead(struct l7_dconn *d, const char *target, size_t tlen,
		       const char *orig_path, const struct bm_l7_authz_res *strip)
{
	struct l7_req *rq = &d->rq;
	const struct bm_h1_head *h = &d->qp.head;
	struct bm_h1_hlist *hl = malloc(sizeof(*hl));
	const struct bm_http_hdr *rid;
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
		err = bm_trace_inject(&d->peer.trace, hl);
	if (!err)
		err = bm_h1_hlist_set(hl, "x-forwarded-proto", "http", 4);
	if (!err && h->chunked)
		err = bm_h1_hlist_add(hl, "transfer-encoding", "chunked", 7);
	else if (!err && h->content_length >= 0) {
		snprintf(len, sizeof(len), "%lld", (long long)h->content_length);
		err = bm_h1_hlist_add(hl, "content-length", len, strlen(len));
	}
	if (!err)
		err = bm_h1_write_request(d->e->l, &rq->uhead, h->method, target, tlen, hl);
	free(hl);
	return err;
}

/* Queue what the current attempt has not had of the body yet. */
static void rq_push_body(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;
	struct bm_chunkq *wq;
	int chunked = d->qp.head.chunked, err = 0;
	size_t skip;

	if (!rq->x_live || !rq->x_ready || !(wq = l7_x_wq(&rq->x)))
		return;
	skip = rq->replayable ? rq->body_sent : 0;
	for (struct bm_chunk *c = rq->body.head; c && !err; c = c->next) {
		if (skip >= c->len) {
			skip -= c->len;
			continue;
		}
		err = bm_h1_write_body(d->e->l, wq, chunked, c->data + c->off + skip, c->len - skip);
		skip = 0;
	}
	if (rq->replayable)
		rq->body_sent = rq->body.bytes;
	else
		bm_chunkq_consume(d->e->l, &rq->body, rq->body.bytes);
	if (!err && rq->body_done && !rq->body_end_sent) {
		if (chunked)
			err = bm_h1_write_end(d->e->l, wq);
		rq->body_end_sent = 1;
		rq->x.req_done = 1;
	}
	if (err) {
		l7_dconn_close(d, 1);
		return;
	}
	l7_x_flush(&rq->x);
}

static void route_timeout(struct l7_timer *t)
{
	struct l7_req *rq = (struct l7_req *)((char *)t - offsetof(struct l7_req, t_route));
	struct l7_dconn *d = RQ_D(rq);

	d->e->st.timeouts++;
	if (rq->x_live && rq->x_ready)
		l7_outlier(d->e, rq->c, &rq->x.b, BM_OE_LOCAL_FAILURE);
	/* §1.5: 504 "upstream request timeout", UT, never retried; after the
	 * response started, the stream is cut. */
	rq_local(d, 504, "upstream request timeout", "UT", NULL, 0);
}

/* The route timeout runs from the end of the downstream request (§1.5). */
static void rq_arm_route(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;

	if (rq->route_armed || !rq->forwarding || !rq->body_done || rq->resp_done || !rq->rt ||
	    !rq->rt->timeout_ms)
		return;
	rq->route_armed = 1;
	l7_timer_arm(d->e, &rq->t_route, rq->rt->timeout_ms);
}

static void rq_send_mirrors(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;
	uint32_t tmo = rq->rt && rq->rt->timeout_ms ? rq->rt->timeout_ms : 0;

	if (rq->mirrors_sent || !rq->n_mirror || !rq->forwarding || !rq->body_done)
		return;
	rq->mirrors_sent = 1;
	if (!rq->replayable) /* the body was streamed: nothing whole to copy */
		return;
	for (unsigned i = 0; i < rq->n_mirror; i++)
		l7_mirror_send(d->e, rq->mirror[i], d->pool_key, d->peer.user, &rq->uhead, &rq->body,
			       d->qp.head.chunked, !strcmp(d->qp.head.method, "HEAD"), tmo);
}

/* ---- attempts -------------------------------------------------------------------------- */

static int rq_retry_want(struct l7_dconn *d, enum bm_attempt_result r, int status, int grpc)
{
	struct l7_req *rq = &d->rq;
	struct bm_l7_retry exhausted;

	if (!rq->replayable || r == BM_AR_OVERFLOW)
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

static void rq_retry(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;
	uint32_t ms = bm_retry_backoff_ms(&rq->retry, rq->attempts, l7_rand(d->e));

	attempt_end(d, 0);
	rq->retry_held = 1; /* the retry is in flight until its attempt ends */
	d->e->st.retries++;
	rq->step = STEP_RETRY;
	l7_timer_arm(d->e, &rq->t_step, ms);
}

static void rq_attempt_failed(struct l7_dconn *d, enum bm_attempt_result r)
{
	struct l7_req *rq = &d->rq;

	if (rq->resp_started) {
		/* the upstream went away in the middle of the response */
		l7_add_flag(rq, "UC");
		attempt_end(d, 0);
		l7_dconn_close(d, 1);
		return;
	}
	l7_timer_cancel(d->e, &rq->t_try);
	l7_outlier(d->e, rq->c, &rq->x.b, l7_outlier_ev(r, 0));
	if (rq_retry_want(d, r, 0, -1)) {
		rq_retry(d);
		return;
	}
	attempt_end(d, 0);
	if (rq->urx)
		l7_add_flag(rq, "URX");
	switch (r) {
	case BM_AR_CONNECT_FAILURE:
		rq_local(d, 503, BODY_CONNECT_FAILURE, "UF", NULL, 0);
		break;
	case BM_AR_PER_TRY_TIMEOUT:
		d->e->st.timeouts++;
		rq_local(d, 504, "upstream request timeout", "UT", NULL, 0);
		break;
	default:
		rq_local(d, 503, BODY_TERMINATION, "UC", NULL, 0);
		break;
	}
}

static void att_ready(struct l7_x *x)
{
	struct l7_dconn *d = X_D(x);
	struct l7_req *rq = &d->rq;

	rq->x_ready = 1;
	rq->body_sent = 0;
	rq->body_end_sent = 0;
	if (l7_x_write_q(x, &rq->uhead, 0)) {
		rq_attempt_failed(d, BM_AR_RESET_BEFORE_REQ);
		return;
	}
	rq_push_body(d);
}

static void att_writable(struct l7_x *x)
{
	l7_dconn_pump(X_D(x)); /* more request body may go now */
}

static int grpc_status(const struct bm_h1_head *h)
{
	const struct bm_http_hdr *g = bm_h1_find(h->hdr, h->n_hdr, "grpc-status");

	return g && g->value_len && isdigit((unsigned char)g->value[0]) ? atoi(g->value) : -1;
}

static void att_head(struct l7_x *x, const struct bm_h1_head *h)
{
	struct l7_dconn *d = X_D(x);
	struct l7_req *rq = &d->rq;
	const struct bm_h1_head *qh = &d->qp.head;
	struct bm_h1_hlist *hl;
	char len[24];
	int err;

	l7_timer_cancel(d->e, &rq->t_try);
	l7_outlier(d->e, rq->c, &x->b, l7_outlier_ev(BM_AR_RESPONSE, h->status));
	if (rq_retry_want(d, BM_AR_RESPONSE, h->status, grpc_status(h))) {
		rq_retry(d);
		return;
	}
	if (rq->urx)
		l7_add_flag(rq, "URX");
	hl = malloc(sizeof(*hl));
	if (!hl) {
		l7_dconn_close(d, 1);
		return;
	}
	bm_h1_hlist_from(hl, h->hdr, h->n_hdr);
	bm_h1_hlist_strip_hop(hl);
	if (rq->rt)
		bm_h1_hlist_apply(hl, &rq->rt->resp);
	if (rq->dest)
		bm_h1_hlist_apply(hl, &rq->dest->resp);
	rq->resp_chunked = 0;
	if (h->content_length >= 0) {
		snprintf(len, sizeof(len), "%lld", (long long)h->content_length);
		bm_h1_hlist_add(hl, "content-length", len, strlen(len));
	} else if (h->has_body) {
		if (qh->minor >= 1)
			bm_h1_hlist_add(hl, "transfer-encoding", "chunked", 7), rq->resp_chunked = 1;
		else
			d->close_after = 1; /* HTTP/1.0: the end of the connection delimits */
	}
	if (!qh->keep_alive)
		d->close_after = 1;
	if (d->close_after)
		bm_h1_hlist_set(hl, "connection", "close", 5);
	else if (!qh->minor)
		bm_h1_hlist_set(hl, "connection", "keep-alive", 10);
	err = bm_h1_write_response(d->e->l, &d->out, 1, h->status, h->reason, hl);
	free(hl);
	if (err) {
		l7_dconn_close(d, 1);
		return;
	}
	rq->status = (uint16_t)h->status;
	rq->resp_started = 1;
	l7_dconn_flush(d);
}

static void att_body(struct l7_x *x, const uint8_t *p, size_t n)
{
	struct l7_dconn *d = X_D(x);
	struct l7_req *rq = &d->rq;

	if (bm_h1_write_body(d->e->l, &d->out, rq->resp_chunked, p, n)) {
		l7_dconn_close(d, 1);
		return;
	}
	rq->resp_bytes += n;
	if (d->out.bytes > L7_HIGH_WATER)
		l7_x_pause(x, 1);
	l7_dconn_flush(d);
}

static void att_done(struct l7_x *x)
{
	struct l7_dconn *d = X_D(x);
	struct l7_req *rq = &d->rq;

	if (rq->resp_chunked && bm_h1_write_end(d->e->l, &d->out)) {
		l7_dconn_close(d, 1);
		return;
	}
	rq->resp_done = 1;
	l7_timer_cancel(d->e, &rq->t_route);
	attempt_end(d, 1);
	if (d->qp.state != BM_H1_DONE) {
		/* answered before the request ended: drop the rest of its body */
		rq->discard = 1;
		bm_chunkq_clear(d->e->l, &rq->body);
	}
	l7_dconn_flush(d);
	if (d->closed)
		return;
	rq_maybe_finish(d);
	l7_dconn_pump(d);
}

static void att_fail(struct l7_x *x, enum bm_attempt_result r)
{
	rq_attempt_failed(X_D(x), r);
}

static const struct l7_x_ops att_ops = {
	.ready = att_ready,
	.writable = att_writable,
	.head = att_head,
	.body = att_body,
	.done = att_done,
	.fail = att_fail,
};

static void per_try_timeout(struct l7_timer *t)
{
	struct l7_req *rq = (struct l7_req *)((char *)t - offsetof(struct l7_req, t_try));

	if (rq->x_live && !rq->resp_started)
		rq_attempt_failed(RQ_D(rq), BM_AR_PER_TRY_TIMEOUT);
}

static void rq_attempt(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;
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
		rq_local(d, 503, "no healthy upstream", "UH", NULL, 0);
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
	rq->x.head_request = !strcmp(d->qp.head.method, "HEAD");
	rq->x_live = 1;
	rq->x_ready = 0;
	l7_backend_active(d->e, b, 1);
	rq->x.active_counted = 1;
	if (rq->retry.per_try_ms)
		l7_timer_arm(d->e, &rq->t_try, rq->retry.per_try_ms);
	err = l7_x_start(&rq->x);
	if (err == -EBUSY) {
		attempt_end(d, 0);
		d->e->st.overflows++;
		rq_local(d, 503, BODY_OVERFLOW, "UO",
			 (const struct xhdr[]){ { "x-envoy-overloaded", "true" } }, 1);
	} else if (err) {
		rq_attempt_failed(d, BM_AR_CONNECT_FAILURE);
	}
}

static void step_timer(struct l7_timer *t)
{
	struct l7_req *rq = (struct l7_req *)((char *)t - offsetof(struct l7_req, t_step));
	struct l7_dconn *d = RQ_D(rq);
	int step = rq->step;

	rq->step = STEP_NONE;
	if (step == STEP_RETRY)
		rq_attempt(d);
	else if (step == STEP_AFTER_DELAY)
		outbound_route(d);
}

/* ---- outbound: routing -------------------------------------------------------------------- */

static int chance(struct bm_l7_engine *e, uint32_t ppm)
{
	return ppm && (ppm >= 1000000 || l7_rand(e) % 1000000 < ppm);
}

/* Forward to the routed cluster: circuit breaker, head, attempt 1. */
static void rq_forward(struct l7_dconn *d, const char *target, size_t tlen, const char *orig,
		       const struct bm_l7_authz_res *strip)
{
	struct l7_req *rq = &d->rq;
	struct bm_l7_cluster *c = rq->c;

	if (!l7_cb_take(&c->rt->requests, c->max_requests)) {
		__atomic_add_fetch(&c->rt->overflow_requests, 1, __ATOMIC_RELAXED);
		d->e->st.overflows++;
		rq_local(d, 503, BODY_OVERFLOW, "UO",
			 (const struct xhdr[]){ { "x-envoy-overloaded", "true" } }, 1);
		return;
	}
	rq->req_counted = 1;
	if (build_uhead(d, target, tlen, orig, strip)) {
		rq_local(d, 500, "internal error", NULL, NULL, 0);
		return;
	}
	rq->forwarding = 1;
	rq_arm_route(d);
	rq_send_mirrors(d);
	rq_attempt(d);
}

static void outbound_route(struct l7_dconn *d)
{
	struct bm_l7_engine *e = d->e;
	struct l7_req *rq = &d->rq;
	const struct bm_l7_route *rt = rq->rt;
	const struct bm_h1_head *h = &d->qp.head;
	char *target = NULL;
	const char *orig = NULL;

	/* fault: the abort happens after the delay, both before routing */
	if (chance(e, rt->fault.abort_ppm)) {
		rq_local(d, rt->fault.abort_status, "fault filter abort", "FI", NULL, 0);
		return;
	}
	rq->dest = bm_l7_dest_pick(rt, l7_rand(e));
	if (!rq->dest || !rq->dest->c) {
		rq_local(d, 503, "no cluster", "NC", NULL, 0);
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
			rq_local(d, 500, "path rewrite failed", NULL, NULL, 0);
			return;
		}
		orig = h->target;
	}
	rq_forward(d, target ? target : h->target, target ? strlen(target) : h->target_len, orig,
		   NULL);
	free(target);
}

static void outbound_begin(struct l7_dconn *d)
{
	struct bm_l7_engine *e = d->e;
	struct l7_req *rq = &d->rq;
	const struct bm_h1_head *h = &d->qp.head;
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
		rq_local(d, 404, NULL, "NR", NULL, 0);
		return;
	}
	rq->rt = rt;
	if (rq->which >= 0 && (size_t)rq->which < rt->n_match && rt->match[rq->which].name &&
	    rt->match[rq->which].name[0])
		snprintf(rq->route_name, sizeof(rq->route_name), "%s.%s", rt->name ? rt->name : "",
			 rt->match[rq->which].name);
	else
		snprintf(rq->route_name, sizeof(rq->route_name), "%s", rt->name ? rt->name : "");
	if (rt->direct.status) {
		char *body = NULL;

		if (rt->direct.body && rt->direct.body_len) {
			body = strndup(rt->direct.body, rt->direct.body_len);
			if (!body) {
				l7_dconn_close(d, 1);
				return;
			}
		}
		rq_local(d, rt->direct.status, body, NULL, NULL, 0);
		free(body);
		return;
	}
	if (rt->redirect.code) {
		char loc[4096];

		if (bm_l7_redirect_location(rt, rq->which, &r, loc, sizeof(loc))) {
			rq_local(d, 500, "redirect too long", NULL, NULL, 0);
			return;
		}
		rq_local(d, rt->redirect.code, NULL, NULL,
			 (const struct xhdr[]){ { "location", loc } }, 1);
		return;
	}
	if (chance(e, rt->fault.delay_ppm) && rt->fault.delay_ms) {
		l7_add_flag(rq, "DI");
		rq->step = STEP_AFTER_DELAY;
		l7_timer_arm(e, &rq->t_step, rt->fault.delay_ms);
		return;
	}
	outbound_route(d);
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

static void inbound_begin(struct l7_dconn *d)
{
	struct bm_l7_engine *e = d->e;
	struct l7_req *rq = &d->rq;
	const struct bm_h1_head *h = &d->qp.head;
	const struct bm_http_hdr *host = bm_h1_find(h->hdr, h->n_hdr, "host");
	const char *q = memchr(h->target, '?', h->target_len);
	size_t plen = q ? (size_t)(q - h->target) : h->target_len;
	struct bm_l7_authz_res res = { 0 };
	struct bm_l7_authz_req az;
	char *path = malloc(8192 + 2);
	int rc = 0;

	if (!path) {
		l7_dconn_close(d, 1);
		return;
	}
	/* §4.1: authorization and the app see the normalized path */
	if (bm_l7_normalize_path(h->target, plen, path, 8192)) {
		free(path);
		rq_local(d, 400, "Bad Request", NULL, NULL, 0);
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
		rq_local(d, 401, res.body[0] ? res.body : "Jwt verification fails", NULL,
			 (const struct xhdr[]){ { "www-authenticate",
						  res.www_authenticate[0] ? res.www_authenticate :
									    "Bearer realm=\"mesh\"" } },
			 1);
		return;
	}
	if (rc) {
		free(path);
		rq_local(d, 403, "RBAC: access denied", "DENY", NULL, 0);
		return;
	}
	if (q)
		append_query(path, 8192, q + 1, &res);
	rq->c = &d->icl;
	/* The inbound default: retry only what never reached the app (§1.6). */
	memset(&rq->retry, 0, sizeof(rq->retry));
	rq->retry.attempts = 2;
	rq->retry.on = BM_RETRY_RESET_BEFORE_REQ;
	rq_forward(d, path, strlen(path), NULL, &res);
	free(path);
}

/* ---- the request's head and body ----------------------------------------------------------------- */

static void rq_begin(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;
	const struct bm_h1_head *h = &d->qp.head;
	const struct bm_http_hdr *ex;

	l7_timer_cancel(d->e, &rq->t_route);
	l7_timer_cancel(d->e, &rq->t_try);
	l7_timer_cancel(d->e, &rq->t_step);
	memset(rq, 0, offsetof(struct l7_req, t_route));
	rq->active = 1;
	rq->replayable = 1;
	rq->which = -1;
	rq->start_mono = l7_now_ms();
	rq->start_wall = l7_wall_ms();
	ex = bm_h1_find(h->hdr, h->n_hdr, "x-request-id");
	if (ex && ex->value_len && ex->value_len < sizeof(rq->reqid))
		memcpy(rq->reqid, ex->value, ex->value_len + 1);
	else
		gen_request_id(d->e, rq->reqid);
	trace_begin(d);
	if (!h->keep_alive)
		d->close_after = 1;
	if (h->upgrade) {
		/* WebSocket/CONNECT over the L7 path is a later step */
		d->close_after = 1;
		rq_local(d, 501, "upgrade not supported", NULL, NULL, 0);
		return;
	}
	/* Envoy answers 100-continue itself and does not forward Expect. */
	ex = bm_h1_find(h->hdr, h->n_hdr, "expect");
	if (ex && h->has_body && bm_h1_has_token(ex->value, ex->value_len, "100-continue"))
		l7_out_write(d, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	if (d->peer.inbound)
		inbound_begin(d);
	else
		outbound_begin(d);
}

static int rq_body_piece(void *u, const uint8_t *p, size_t n)
{
	struct l7_dconn *d = u;
	struct l7_req *rq = &d->rq;

	rq->body_total += n;
	if (rq->discard)
		return 0;
	if (rq->replayable && rq->body_total > BM_L7_REPLAY_MAX) {
		/* too big to keep: stream it, no retries nor mirrors now */
		rq->replayable = 0;
		if (rq->x_ready)
			bm_chunkq_consume(d->e->l, &rq->body, rq->body_sent);
		rq->body_sent = 0;
	}
	if (bm_chunkq_append(d->e->l, &rq->body, p, n))
		return -ENOMEM;
	rq_push_body(d);
	return 0;
}

static void rq_body_done(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;

	rq->body_done = 1;
	if (rq->discard) {
		rq_maybe_finish(d);
		return;
	}
	rq_push_body(d);
	rq_arm_route(d);
	rq_send_mirrors(d);
	rq_maybe_finish(d);
}

/* May more body be taken now? Streams wait for the upstream to drain. */
static int rq_body_room(struct l7_dconn *d)
{
	struct l7_req *rq = &d->rq;

	if (rq->discard || rq->replayable)
		return 1;
	return rq->body.bytes + (rq->x_live ? l7_x_queued(&rq->x) : 0) < L7_HIGH_WATER;
}

/* Parse what was read. Returns nonzero when something was consumed. */
int l7_dconn_process(struct l7_dconn *d)
{
	int progress = 0;

	while (d->in.bytes && !d->closed && !d->closing) {
		struct bm_chunk *c = d->in.head;
		const uint8_t *p = c->data + c->off;
		ssize_t r;

		if (!c->len) {
			bm_chunkq_consume(d->e->l, &d->in, 0);
			d->in.head = c->next;
			if (!d->in.head)
				d->in.tail = NULL;
			bm_chunk_put(d->e->l, c);
			continue;
		}
		if (!d->rq.active) {
			r = bm_h1_parse_head(&d->qp, p, c->len);
			if (r < 0) {
				int st = d->qp.err == BM_H1_ETOOBIG ? 431 : 400;

				bm_chunkq_clear(d->e->l, &d->in);
				d->rq.active = 1;
				memset(&d->rq, 0, offsetof(struct l7_req, t_route));
				d->rq.active = 1;
				d->rq.start_mono = l7_now_ms();
				d->rq.start_wall = l7_wall_ms();
				d->close_after = 1;
				d->qp.state = BM_H1_DONE; /* nothing more is read */
				rq_local(d, st, st == 431 ? "Request Header Fields Too Large" :
							    "Bad Request", "DPE", NULL, 0);
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
		if (d->qp.state != BM_H1_BODY || !rq_body_room(d))
			break;
		r = bm_h1_parse_body(&d->qp, p, c->len, rq_body_piece, d);
		if (r < 0) {
			bm_chunkq_clear(d->e->l, &d->in);
			d->close_after = 1;
			l7_add_flag(&d->rq, "DPE");
			if (!d->rq.resp_started) {
				d->qp.state = BM_H1_DONE;
				rq_local(d, 400, "Bad Request", NULL, NULL, 0);
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
			rq_body_done(d);
	}
	return progress;
}

void l7_req_timers_init(struct l7_req *rq)
{
	l7_timer_init(&rq->t_route, route_timeout);
	l7_timer_init(&rq->t_try, per_try_timeout);
	l7_timer_init(&rq->t_step, step_timer);
}
