/*
 * Local replies and request records of the L7 pipeline (l7proxy.c):
 * the gRPC shape of a local reply, fault aborts, and the record each
 * finished request leaves for metrics, access logs and tracing.
 *
 * A local reply to a gRPC request (content-type application/grpc*) is
 * what Envoy's sendLocalReply makes of it: HTTP 200, content-type
 * application/grpc, grpc-status from the HTTP status (Envoy's
 * httpToGrpcStatus table) and grpc-message the body, as a trailers-only
 * response, so gRPC clients see a status, not a transport error.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "l7upstream.h"

/* Envoy's Grpc::Utility::httpToGrpcStatus (grpc's HTTP-to-gRPC status
 * mapping): what a gRPC client of an Envoy sidecar sees for a local reply. */
int l7_grpc_from_http(int status)
{
	switch (status) {
	case 400: return 13;  /* INTERNAL */
	case 401: return 16;  /* UNAUTHENTICATED */
	case 403: return 7;   /* PERMISSION_DENIED */
	case 404: return 12;  /* UNIMPLEMENTED */
	case 429:
	case 502:
	case 503:
	case 504: return 14;  /* UNAVAILABLE, a route timeout (504 UT) included */
	default:  return 2;   /* UNKNOWN */
	}
}

/* The value is parsed within value_len: HTTP/1.1 trailers are views into
 * the parser's buffer, not NUL-terminated (atoi read on into the next
 * trailer's bytes). Anything but 1-3 decimal digits is no status. */
int l7_grpc_status_of(const struct bm_http_hdr *h, size_t n)
{
	const struct bm_http_hdr *g = h ? bm_h1_find(h, n, "grpc-status") : NULL;
	int v = 0;

	if (!g || !g->value_len || g->value_len > 3)
		return -1;
	for (size_t i = 0; i < g->value_len; i++) {
		if (!isdigit((unsigned char)g->value[i]))
			return -1;
		v = v * 10 + (g->value[i] - '0');
	}
	return v;
}

/* grpc-message is percent-encoded (gRPC over HTTP/2 spec): everything
 * outside printable ASCII, and '%'. */
static void pct_encode(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	for (; s && *s && n + 4 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c > 0x7e || c == '%')
			n += (size_t)snprintf(out + n, cap - n, "%%%02X", c);
		else
			out[n++] = (char)c;
	}
	out[n] = 0;
}

int l7_grpc_local_headers(struct l7_req *rq, struct bm_h1_hlist *hl, int status, const char *msg)
{
	int code = rq->grpc_abort ? rq->grpc_abort - 1 : l7_grpc_from_http(status);
	char num[8], m[512];
	int err;

	snprintf(num, sizeof(num), "%d", code);
	pct_encode(m, sizeof(m), msg && *msg ? msg : bm_h1_reason(status));
	err = bm_h1_hlist_set(hl, "content-type", "application/grpc", 16);
	if (!err)
		err = bm_h1_hlist_set(hl, "grpc-status", num, strlen(num));
	if (!err)
		err = bm_h1_hlist_set(hl, "grpc-message", m, strlen(m));
	return err;
}

/* fault.abort (§1.8): httpStatus, or grpcStatus as a gRPC reply. */
void l7_rq_fault_abort(struct l7_req *rq)
{
	const struct bm_l7_route *rt = rq->rt;

	if (rt->fault.abort_grpc) {
		rq->grpc_abort = rt->fault.abort_grpc;
		l7_rq_local(rq, 503, "fault filter abort", "FI");
		return;
	}
	l7_rq_local(rq, rt->fault.abort_status, "fault filter abort", "FI");
}

void l7_rq_record(struct l7_req *rq)
{
	struct l7_dconn *d = rq->d;
	struct bm_l7_engine *e = d->e;
	const struct bm_h1_head *h = rq->h;
	const struct bm_http_hdr *host = h ? bm_h1_find(h->hdr, h->n_hdr, "host") : NULL;
	const struct bm_http_hdr *ua = h ? bm_h1_find(h->hdr, h->n_hdr, "user-agent") : NULL;
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
	r.method = h && h->method ? h->method : "";
	r.authority = host ? host->value : "";
	r.path = h && h->target ? h->target : "";
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
	r.protocol = rq->grpc ? BM_L7_PROTO_GRPC : BM_L7_PROTO_HTTP;
	r.downstream_h2 = d->h2 != NULL;
	r.grpc_status = rq->grpc ? rq->grpc_status : -1;
	if (rq->trace.active && rq->trace.report) {
		struct bm_trace_span *s = &rq->trace;
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		s->duration_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000 -
				 s->start_mono_us;
		r.span = s;
	}
	e->ops.complete(e->ops.ctx, &r);
}
