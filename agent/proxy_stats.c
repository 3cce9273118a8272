/*
 * Proxy counters (proxy.h, reqmetrics.h): every worker's summed into
 * bm_proxy_stats_json(), and the istio_tcp_* and istio_request* rows
 * collected from the workers' tables. Workers write their own counters and
 * are neither stopped nor locked: readers load them relaxed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <jansson.h>
#include "l7proxy.h"
#include "proxy.h"
#include "proxy_int.h"
#include "reqmetrics.h"
#include "relay.h"
#include "tracing.h"

/* ---- counters ------------------------------------------------------------ */

static const char *const dir_names[BM_PDIR_MAX] = {
	[BM_PDIR_OUT_HBONE] = "outbound_hbone", [BM_PDIR_OUT_LOCAL] = "outbound_local",
	[BM_PDIR_IN_HBONE] = "inbound_hbone", [BM_PDIR_IN_PLAIN] = "inbound_plaintext",
};

#define RD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

json_t *bm_proxy_stats_json(struct bm_proxy *p)
{
	struct bm_wstats sum = { 0 };
	json_t *conns = json_object(), *denials = json_object(), *per_worker = json_array(), *r;
	uint64_t hs[6] = { 0 };
	struct bm_l7_stats ls = { 0 };

	for (int i = 0; i < p->n; i++) {
		struct bm_wstats *s = &p->w[i].st;
		uint32_t nd = __atomic_load_n(&s->n_deny, __ATOMIC_ACQUIRE);

		json_array_append_new(per_worker, json_integer((json_int_t)RD(s->accepted)));
		for (int d = 0; d < BM_PDIR_MAX; d++) {
			for (int k = 0; k < BM_PRES_MAX; k++)
				sum.conns[d][k] += RD(s->conns[d][k]);
			sum.active[d] += RD(s->active[d]);
			sum.bytes_up[d] += RD(s->bytes_up[d]);
			sum.bytes_down[d] += RD(s->bytes_down[d]);
		}
#define ADD(f) sum.f += RD(s->f)
		ADD(tls_client); ADD(tls_server); ADD(tls_resumed); ADD(tls_failed);
		ADD(h2_client); ADD(h2_server); ADD(h2_closed); ADD(h2_pings); ADD(h2_ping_timeouts);
		ADD(h2_connect_failed); ADD(streams_opened); ADD(streams_reset);
		ADD(status_200); ADD(status_400); ADD(status_401); ADD(status_503); ADD(status_other);
		ADD(deny_other);
#undef ADD
		for (int k = 0; k < 6; k++)
			hs[k] += RD(p->w[i].http_status[k]);
		if (p->w[i].l7) {
			const struct bm_l7_stats *e = bm_l7_engine_stats(p->w[i].l7);
#define ADD(f) ls.f += RD(e->f)
			ADD(retries); ADD(timeouts); ADD(overflows); ADD(mirrors); ADD(mirrors_dropped);
			ADD(ejections); ADD(l4_fallbacks); ADD(upstream_cx); ADD(upstream_cx_reused);
			ADD(downstream_cx);
#undef ADD
		}
		for (uint32_t k = 0; k < nd; k++) {
			json_t *v = json_object_get(denials, s->deny[k].reason);

			json_object_set_new(denials, s->deny[k].reason,
					    json_integer((json_int_t)(RD(s->deny[k].n) +
								      (v ? json_integer_value(v) : 0))));
		}
	}
	if (sum.deny_other)
		json_object_set_new(denials, "other", json_integer((json_int_t)sum.deny_other));
	for (int d = 0; d < BM_PDIR_MAX; d++)
		json_object_set_new(conns, dir_names[d],
			json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
				  "ok", (json_int_t)sum.conns[d][BM_PRES_OK],
				  "denied", (json_int_t)sum.conns[d][BM_PRES_DENIED],
				  "upstream_failed", (json_int_t)sum.conns[d][BM_PRES_UPSTREAM],
				  "error", (json_int_t)sum.conns[d][BM_PRES_ERROR],
				  "active", (json_int_t)sum.active[d],
				  "bytes_up", (json_int_t)sum.bytes_up[d],
				  "bytes_down", (json_int_t)sum.bytes_down[d]));
	pthread_mutex_lock(&p->lock);
	r = json_pack("{s:i,s:i,s:o,s:{s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I}},s:o}",
		      "workers", p->n, "pods", (int)p->n_pods, "connections", conns,
		      "tls", "client_handshakes", (json_int_t)sum.tls_client,
		      "server_handshakes", (json_int_t)sum.tls_server,
		      "resumed", (json_int_t)sum.tls_resumed, "failed", (json_int_t)sum.tls_failed,
		      "hbone", "client_connections", (json_int_t)sum.h2_client,
		      "server_connections", (json_int_t)sum.h2_server,
		      "closed_connections", (json_int_t)sum.h2_closed,
		      "connect_failed", (json_int_t)sum.h2_connect_failed,
		      "pings", (json_int_t)sum.h2_pings, "ping_timeouts", (json_int_t)sum.h2_ping_timeouts,
		      "streams", (json_int_t)sum.streams_opened, "streams_reset", (json_int_t)sum.streams_reset,
		      "status", "200", (json_int_t)sum.status_200, "400", (json_int_t)sum.status_400,
		      "401", (json_int_t)sum.status_401, "503", (json_int_t)sum.status_503,
		      "other", (json_int_t)sum.status_other,
		      "denials", denials);
	pthread_mutex_unlock(&p->lock);
	if (r)
		json_object_set_new(r, "accepted_per_worker", per_worker);
	else
		json_decref(per_worker);
	if (r) {
		json_t *h = json_object();
		static const char *const cls[6] = { "no_response", "1xx", "2xx", "3xx", "4xx", "5xx" };
		uint64_t total = 0;

		for (int k = 0; k < 6; k++) {
			json_object_set_new(h, cls[k], json_integer((json_int_t)hs[k]));
			total += hs[k];
		}
		json_object_set_new(h, "requests", json_integer((json_int_t)total));
#define PUT(n, f) json_object_set_new(h, n, json_integer((json_int_t)ls.f))
		PUT("retries", retries); PUT("timeouts", timeouts); PUT("overflows", overflows);
		PUT("mirrors", mirrors); PUT("mirrors_dropped", mirrors_dropped);
		PUT("ejections", ejections); PUT("l4_fallbacks", l4_fallbacks);
		PUT("upstream_connections", upstream_cx); PUT("upstream_reused", upstream_cx_reused);
		PUT("downstream_open", downstream_cx);
#undef PUT
		{
			struct bm_trace_stats ts;

			bm_trace_get_stats(&ts);
			json_object_set_new(h, "spans_reported", json_integer((json_int_t)ts.spans_reported));
			json_object_set_new(h, "spans_exported", json_integer((json_int_t)ts.spans_exported));
			json_object_set_new(h, "spans_dropped", json_integer((json_int_t)ts.spans_dropped));
			json_object_set_new(h, "spans_failed", json_integer((json_int_t)ts.spans_failed));
		}
		json_object_set_new(r, "http", h);
	}
	return r;
}

int bm_proxy_mesh_rows(struct bm_proxy *p, struct bm_mesh_row **out, size_t *n)
{
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	for (int i = 0; p && i < p->n; i++) {
		int err = p->w[i].mt ? bm_mesh_collect(p->w[i].mt, out, n, &cap) : 0;

		if (err) {
			free(*out);
			*out = NULL;
			*n = 0;
			return err;
		}
	}
	return 0;
}

int bm_proxy_req_rows(struct bm_proxy *p, struct bm_req_row **out, size_t *n)
{
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	for (int i = 0; p && i < p->n; i++) {
		int err = p->w[i].rq ? bm_req_collect(p->w[i].rq, out, n, &cap) : 0;

		if (err) {
			free(*out);
			*out = NULL;
			*n = 0;
			return err;
		}
	}
	return 0;
}

uint64_t bm_proxy_req_overflow(struct bm_proxy *p)
{
	uint64_t n = 0;

	for (int i = 0; p && i < p->n; i++)
		if (p->w[i].rq)
			n += bm_req_table_overflow(p->w[i].rq);
	return n;
}
