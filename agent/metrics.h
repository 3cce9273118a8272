/* Prometheus endpoint (GET /metrics, text format 0.0.4) served by its own
 * thread, never a data-path worker: Istio-standard TCP metrics summed from
 * the per-CPU maps and the proxy workers' tables, Istio request metrics
 * from the HTTP proxy's tables (agent/reqmetrics.h), and meshd's own. */
#ifndef BM_METRICS_H
#define BM_METRICS_H
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <jansson.h>
#include "prom.h"

struct bm_agent;

/* Start the metrics thread listening on addr ("IP:PORT", "[IPv6]:PORT").
 * The socket is bound before it returns, so a bad or busy address is an
 * error here, not a log line later. */
int bm_metrics_start(struct bm_agent *a, const char *addr);
/* Render the whole exposition into f. The caller holds a->lock (the admin
 * "metrics" call already does; the metrics thread takes it itself). */
int bm_metrics_render(struct bm_agent *a, FILE *f);
/* Stop the thread and close the socket (before freeing what it reads).
 * Returns within the per-connection timeouts. No-op when not started. */
void bm_metrics_stop(void);

/* ---- The Istio TCP label set (reference §7.2), exposed for unit tests. ---- */

enum bm_istio_label {
	BM_L_REPORTER,
	BM_L_SOURCE_WORKLOAD,
	BM_L_SOURCE_WORKLOAD_NAMESPACE,
	BM_L_SOURCE_PRINCIPAL,
	BM_L_SOURCE_APP,
	BM_L_SOURCE_VERSION,
	BM_L_SOURCE_CANONICAL_SERVICE,
	BM_L_SOURCE_CANONICAL_REVISION,
	BM_L_SOURCE_CLUSTER,
	BM_L_DESTINATION_WORKLOAD,
	BM_L_DESTINATION_WORKLOAD_NAMESPACE,
	BM_L_DESTINATION_PRINCIPAL,
	BM_L_DESTINATION_APP,
	BM_L_DESTINATION_VERSION,
	BM_L_DESTINATION_SERVICE,
	BM_L_DESTINATION_SERVICE_NAME,
	BM_L_DESTINATION_SERVICE_NAMESPACE,
	BM_L_DESTINATION_CANONICAL_SERVICE,
	BM_L_DESTINATION_CANONICAL_REVISION,
	BM_L_DESTINATION_CLUSTER,
	BM_L_REQUEST_PROTOCOL,
	BM_L_RESPONSE_FLAGS,
	BM_L_CONNECTION_SECURITY_POLICY,
	BM_L_COUNT
};

extern const char *const bm_istio_label_names[BM_L_COUNT];

/* One end of a connection as the workload table knows it. NULL = not known. */
struct bm_peer {
	const char *workload;     /* workload name */
	const char *ns;           /* workload namespace */
	const char *sa;           /* service account: principal spiffe://TD/ns/NS/sa/SA */
	const json_t *labels;     /* the workload's labels (object) */
};

/* A WorkloadEntry (canonical resource) as a peer: the workload name is the
 * label service.istio.io/workload-name, else the entry's name. */
void bm_peer_from_workload_entry(const json_t *we, struct bm_peer *p);

/* The service a connection was made to. NULL host = not known. */
struct bm_dest_service {
	const char *host;         /* FQDN, e.g. reviews.bookinfo.svc.cluster.local */
	const char *ns;           /* namespace of the ServiceEntry */
};

/* One series of the four istio_tcp_* families: label values and counters. */
struct bm_tcp_series {
	const char *v[BM_L_COUNT];   /* point into buf */
	char *buf;
	uint64_t opened, closed, sent_bytes, received_bytes;
};

/* Fill the label values of s for reporter="source", with the reference's
 * fallbacks (`unknown`; `latest` for canonical revisions). */
int bm_tcp_series_init(struct bm_tcp_series *s, const struct bm_peer *src,
		       const struct bm_peer *dst, const struct bm_dest_service *svc,
		       const char *response_flags, const char *security_policy);
void bm_tcp_series_free(struct bm_tcp_series *s);
/* Sort, merge series with identical label sets, and write the four
 * istio_tcp_* families. Reorders and merges s in place. */
int bm_tcp_render(struct bm_prom *p, struct bm_tcp_series *s, size_t n);

struct bm_mesh_row;
/* The istio_tcp_* families for proxy (mesh-path) rows alone: unit tests. */
int bm_metrics_render_mesh_rows(struct bm_agent *a, FILE *f, const struct bm_mesh_row *rows,
				size_t n);

struct bm_req_row;
/* The istio_requests_total and istio_request_duration_milliseconds /
 * istio_request_bytes / istio_response_bytes families for request rows
 * (agent/reqmetrics.h) alone: unit tests. Caller holds a->lock. */
int bm_metrics_render_req_rows(struct bm_agent *a, FILE *f, const struct bm_req_row *rows,
			       size_t n);

/* Readiness on addr (15021): GET /healthz/ready. Stopped by bm_metrics_stop. */
int bm_ready_start(struct bm_agent *a, const char *addr);

#endif
