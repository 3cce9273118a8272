/*
 * istio_requests_total and the request histograms
 * (istio_request_duration_milliseconds, istio_request_bytes,
 * istio_response_bytes) come from the HTTP proxy's per-worker tables
 * (agent/reqmetrics.h), labelled as istio_tcp_* are.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "agent.h"
#include "metrics.h"
#include "metrics_int.h"
#include "relay.h"
#include "reqmetrics.h"
#include "l7proxy.h"

/* One series of the four request families: the istio_tcp_* label set with
 * request_protocol "http" or "grpc", plus response_code and
 * grpc_response_status ("" for a request that is not gRPC, or a gRPC one
 * that ended without a status), and the three histograms. */
struct req_series {
	struct bm_tcp_series l;
	char code[8];
	char grpc[8];
	struct bm_req_hist h[BM_REQ_HISTS];
};

static const struct {
	const char *name, *bucket, *sum, *count, *help;
} req_families[BM_REQ_HISTS] = {
	[BM_REQ_DURATION] = { "istio_request_duration_milliseconds",
			      "istio_request_duration_milliseconds_bucket",
			      "istio_request_duration_milliseconds_sum",
			      "istio_request_duration_milliseconds_count",
			      "Request duration in milliseconds, request head received to response finished." },
	[BM_REQ_REQUEST_BYTES] = { "istio_request_bytes", "istio_request_bytes_bucket",
				   "istio_request_bytes_sum", "istio_request_bytes_count",
				   "Request body bytes received from the client." },
	[BM_REQ_RESPONSE_BYTES] = { "istio_response_bytes", "istio_response_bytes_bucket",
				    "istio_response_bytes_sum", "istio_response_bytes_count",
				    "Response body bytes sent to the client." },
};

/* One request row as a series. connection_security_policy follows §7.2:
 * the destination reporter says whether the request came in mutual TLS,
 * the source reporter says "unknown" (as Istio's client proxies do). */
static int req_row_series(struct bm_agent *a, const struct metrics_lookups *lk,
			  const struct bm_req_row *r, struct req_series *s)
{
	struct bm_dest_service svc = { r->k.svc[0] ? r->k.svc : NULL,
				       r->k.svc_ns[0] ? r->k.svc_ns : NULL };
	struct bm_peer src, dst;
	char ns[64], sa[64];
	const char *policy;
	int err;

	if (r->k.reporter != BM_MESH_SOURCE)
		metrics_service_of_pod(a, r->k.dst, r->k.dst_port, &svc);
	metrics_proxy_row_peers(a, lk, r->k.reporter, r->k.src, r->k.dst, r->k.upstream_ip,
				r->k.upstream_port, &svc, &src, &dst, ns, sizeof(ns), sa, sizeof(sa));
	if (r->k.reporter == BM_MESH_SOURCE)
		policy = "unknown";
	else
		policy = r->k.mtls ? "mutual_tls" : "none";
	memset(s, 0, sizeof(*s));
	err = bm_tcp_series_init(&s->l, &src, &dst, &svc, r->k.flags, policy);
	if (err)
		return err;
	if (r->k.reporter != BM_MESH_SOURCE)
		s->l.v[BM_L_REPORTER] = "destination";
	s->l.v[BM_L_REQUEST_PROTOCOL] = r->k.protocol == BM_L7_PROTO_GRPC ? "grpc" : "http";
	snprintf(s->code, sizeof(s->code), "%u", r->k.code);
	if (r->k.grpc_status >= 0)
		snprintf(s->grpc, sizeof(s->grpc), "%d", r->k.grpc_status);
	memcpy(s->h, r->h, sizeof(s->h));
	return 0;
}

static int cmp_req_series(const void *x, const void *y)
{
	const struct req_series *a = x, *b = y;
	int c = metrics_series_cmp(&a->l, &b->l);

	if (!c)
		c = strcmp(a->code, b->code);
	return c ? c : strcmp(a->grpc, b->grpc);
}

static void hist_merge(struct bm_req_hist *into, const struct bm_req_hist *h)
{
	for (unsigned b = 0; b <= BM_REQ_BOUNDS; b++)
		into->bucket[b] += h->bucket[b];
	into->sum += h->sum;
}

/* Label order: Istio's, response_code and grpc_response_status after
 * request_protocol; room for le at the end. Returns the count without le. */
static size_t req_labels(const struct req_series *s, struct bm_prom_label *l)
{
	size_t n = 0;

	for (int k = 0; k < BM_L_COUNT; k++) {
		l[n++] = (struct bm_prom_label){ bm_istio_label_names[k], s->l.v[k] };
		if (k == BM_L_REQUEST_PROTOCOL) {
			l[n++] = (struct bm_prom_label){ "response_code", s->code };
			l[n++] = (struct bm_prom_label){ "grpc_response_status", s->grpc };
		}
	}
	return n;
}

/* Sort, merge identical label sets, write istio_requests_total and the
 * three histograms. Reorders and merges s in place (merged entries freed). */
static int req_render(struct bm_prom *p, struct req_series *s, size_t n)
{
	struct bm_prom_label l[BM_L_COUNT + 3];
	struct bm_prom_labelset *ls;
	char le[BM_REQ_BOUNDS][48];
	size_t u = 0;
	int err = 0;

	if (n)
		qsort(s, n, sizeof(*s), cmp_req_series);
	for (size_t i = 1; i < n; i++) {
		if (!cmp_req_series(&s[u], &s[i])) {
			for (int h = 0; h < BM_REQ_HISTS; h++)
				hist_merge(&s[u].h[h], &s[i].h[h]);
			bm_tcp_series_free(&s[i].l);
		} else if (++u != i) {
			s[u] = s[i];
			s[i].l.buf = NULL;
		}
	}
	if (n)
		u++;
	for (size_t i = u; i < n; i++)
		s[i].l.buf = NULL;
	/* Envoy prints bounds with %.32g: "0.5", "1", "3600000", never 3.6e+06. */
	for (unsigned b = 0; b < BM_REQ_BOUNDS; b++)
		snprintf(le[b], sizeof(le[b]), "%.32g", bm_req_bounds[b]);

	/* Each series' label set is written 3 x (BM_REQ_BOUNDS + 3) + 1 times:
	 * render it once. */
	ls = calloc(u ? u : 1, sizeof(*ls));
	if (!ls)
		return -ENOMEM;
	for (size_t i = 0; !err && i < u; i++)
		err = bm_prom_labelset_init(&ls[i], l, req_labels(&s[i], l));
	if (!err)
		err = bm_prom_family(p, "istio_requests_total", BM_PROM_COUNTER,
				     "Total HTTP requests completed (counted when the response finished).");
	for (size_t i = 0; !err && i < u; i++)
		err = bm_prom_sample_set_u64(p, "istio_requests_total", &ls[i], NULL,
					     bm_req_hist_count(&s[i].h[BM_REQ_DURATION]));
	for (int h = 0; !err && h < BM_REQ_HISTS; h++) {
		err = bm_prom_family(p, req_families[h].name, BM_PROM_HISTOGRAM, req_families[h].help);
		for (size_t i = 0; !err && i < u; i++) {
			const struct bm_req_hist *hist = &s[i].h[h];
			struct bm_prom_label le_l = { "le", NULL };
			uint64_t cum = 0;

			for (unsigned b = 0; !err && b <= BM_REQ_BOUNDS; b++) {
				cum += hist->bucket[b];
				le_l.value = b < BM_REQ_BOUNDS ? le[b] : "+Inf";
				err = bm_prom_sample_set_u64(p, req_families[h].bucket, &ls[i], &le_l, cum);
			}
			if (!err)
				err = bm_prom_sample_set_u64(p, req_families[h].sum, &ls[i], NULL, hist->sum);
			if (!err)
				err = bm_prom_sample_set_u64(p, req_families[h].count, &ls[i], NULL, cum);
		}
	}
	for (size_t i = 0; i < u; i++)
		bm_prom_labelset_free(&ls[i]);
	free(ls);
	return err;
}

/* The request families for rows (the proxy's, or a test's). */
static int render_req_rows(struct bm_agent *a, struct bm_prom *p,
			   const struct metrics_lookups *lk, const struct bm_req_row *rows, size_t n)
{
	struct req_series *s = calloc(n ? n : 1, sizeof(*s));
	size_t ns = 0;
	int err = 0;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < n && !err; i++) {
		/* A row with nothing in it yet (published before its first count). */
		if (!bm_req_hist_count(&rows[i].h[BM_REQ_DURATION]))
			continue;
		err = req_row_series(a, lk, &rows[i], &s[ns]);
		if (!err)
			ns++;
	}
	if (!err)
		err = req_render(p, s, ns);
	for (size_t i = 0; i < ns; i++)
		bm_tcp_series_free(&s[i].l);
	free(s);
	return err;
}

int metrics_render_istio_requests(struct bm_agent *a, struct bm_prom *p,
				  const struct metrics_lookups *lk)
{
	struct bm_req_row *rows = NULL;
	size_t n = 0;
	int err = 0;

	if (a->proxy)
		err = bm_proxy_req_rows(a->proxy, &rows, &n);
	if (err)
		n = 0;   /* the families are still declared, empty */
	{
		int e = render_req_rows(a, p, lk, rows, n);

		err = err ? err : e;
	}
	free(rows);
	return err;
}

/* The request families of these rows alone (unit tests: labels, merging
 * and buckets without running workers). Caller holds a->lock. */
int bm_metrics_render_req_rows(struct bm_agent *a, FILE *f, const struct bm_req_row *rows,
			       size_t n)
{
	struct bm_prom p;
	struct metrics_lookups lk;
	int err;

	bm_prom_init(&p, f);
	err = metrics_lookups_build(a, &lk);
	if (!err)
		err = render_req_rows(a, &p, &lk, rows, n);
	metrics_lookups_free(&lk);
	return err ? err : bm_prom_finish(&p);
}
