/* What the files of the metrics endpoint share; not an API (that is
 * metrics.h). One scrape, under a->lock:
 *
 *   agent/metrics.c         entry points: the whole exposition, GET /metrics,
 *                           GET /healthz/ready, start and stop
 *   agent/metrics_labels.c  Istio's label set of a series (reference §7.2)
 *   agent/metrics_lookup.c  ids -> names, and who each end of a row is
 *   agent/metrics_tcp.c     istio_tcp_*: stats_v1 rows (the stats-key index)
 *                           and the proxy's mesh rows
 *   agent/metrics_req.c     istio_requests_total and the request histograms
 *   agent/metrics_meshd.c   bpfmesh_*: meshd's own */
#ifndef BM_METRICS_INT_H
#define BM_METRICS_INT_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "metrics.h"
#include "prom.h"
#include "strmap.h"

struct bm_agent;

/* ---- agent/metrics_labels.c ---- */

/* qsort order of struct bm_tcp_series: by label values, in label order. */
int metrics_series_cmp(const void *x, const void *y);

/* ---- agent/metrics_lookup.c ---- */

/* What one render needs to turn ids into names, built once per scrape. */
struct metrics_lookups {
	const char **svc_name;        /* svc id -> "vip:port", n_svc_name long */
	const char **backend_name;    /* backend id -> "ip:port", n_backend_name long */
	uint32_t n_svc_name, n_backend_name;
	struct bm_strmap svc;         /* "vip:port" -> model index */
	struct bm_strmap we_ip;       /* "ip" -> resources index (first entry) */
	struct bm_strmap we_ns_ip;    /* "ns/ip" -> resources index */
	const json_t *resources;
};

int metrics_lookups_build(struct bm_agent *a, struct metrics_lookups *lk);
void metrics_lookups_free(struct metrics_lookups *lk);
/* The client of a kernel row: the enrolled pod with this cgroup. */
void metrics_source_peer(struct bm_agent *a, const struct metrics_lookups *lk, uint64_t cgroup_id,
			 struct bm_peer *p);
/* The backend ("ip:port", NULL = not known) of a row to service svc. */
void metrics_destination_peer(const struct metrics_lookups *lk, const char *backend,
			      const struct bm_dest_service *svc, struct bm_peer *p);
/* The service of a service id (a source reporter's row). */
void metrics_service_of(struct bm_agent *a, const struct metrics_lookups *lk, uint32_t svc_id,
			struct bm_dest_service *svc);
/* The service pod "ns/name" serves on port (a destination reporter's row);
 * leaves svc alone when it already has a host. */
void metrics_service_of_pod(struct bm_agent *a, const char *ns_name, uint16_t port,
			    struct bm_dest_service *svc);
/* Both ends of a proxy row (mesh or request). */
void metrics_proxy_row_peers(struct bm_agent *a, const struct metrics_lookups *lk, int reporter,
			     const char *src, const char *dst, uint32_t ip, uint16_t port,
			     const struct bm_dest_service *svc, struct bm_peer *sp,
			     struct bm_peer *dp, char *ns, size_t nsl, char *sa, size_t sal);

/* ---- agent/metrics_tcp.c ---- */

/* The istio_tcp_* families: kernel rows, then the proxy's mesh rows. *rows
 * is how many stats_v1 rows were read (bpfmesh_bpf_map_entries). */
int metrics_render_istio_tcp(struct bm_agent *a, struct bm_prom *p,
			     const struct metrics_lookups *lk, uint64_t *rows);
/* Every entry of a BPF hash map, in batches (see the definition). */
int metrics_map_each(int fd, size_t ksize, size_t vsize, uint64_t max,
		     int (*fn)(void *arg, const void *key, const void *val), void *arg);
/* Frees the stats-key index (bm_metrics_stop). */
void metrics_tcp_stop(void);

/* ---- agent/metrics_req.c ---- */

/* The istio_request* families from the proxy's request rows. */
int metrics_render_istio_requests(struct bm_agent *a, struct bm_prom *p,
				  const struct metrics_lookups *lk);

/* ---- agent/metrics_meshd.c ---- */

/* The bpfmesh_* families; stats_rows as metrics_render_istio_tcp counted. */
void metrics_render_meshd(struct bm_agent *a, struct bm_prom *p, uint64_t stats_rows);

#endif
