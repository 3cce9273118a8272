/* Prometheus endpoint (GET /metrics, text format 0.0.4) served by its own
 * thread, never a data-path worker: Istio-standard TCP metrics summed from
 * the per-CPU maps, and meshd's own metrics. */
#ifndef BM_METRICS_H
#define BM_METRICS_H
#include <stdio.h>

struct bm_agent;

/* Start the metrics thread listening on addr ("IP:PORT"). */
int bm_metrics_start(struct bm_agent *a, const char *addr);
/* Render the whole exposition into f. The caller holds a->lock (the admin
 * "metrics" call already does; the metrics thread takes it itself). */
int bm_metrics_render(struct bm_agent *a, FILE *f);

#endif
