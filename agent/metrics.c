/*
 * Metrics: what GET /metrics on :15020 serves (and the admin "metrics" call),
 * and the readiness endpoint GET /healthz/ready on :15021.
 *
 * One scrape renders, under the agent lock:
 *   istio_tcp_*      agent/metrics_tcp.c (kernel rows from stats_v1, proxy mesh rows)
 *   istio_request*   agent/metrics_req.c (the HTTP proxy's request rows)
 *   bpfmesh_*        agent/metrics_meshd.c (meshd's own)
 * with Istio's label set from agent/metrics_labels.c and the names behind
 * ids from agent/metrics_lookup.c (shared: agent/metrics_int.h).
 *
 * HTTP is prom.c's: these files decide what is exported.
 */
#include <errno.h>
#include <string.h>
#include "agent.h"
#include "log.h"
#include "metrics.h"
#include "metrics_int.h"

int bm_metrics_render(struct bm_agent *a, FILE *f)
{
	struct bm_prom p;
	struct metrics_lookups lk;
	uint64_t rows = 0;
	int err;

	bm_prom_init(&p, f);
	err = metrics_lookups_build(a, &lk);
	if (!err)
		err = metrics_render_istio_tcp(a, &p, &lk, &rows);
	if (!err)
		err = metrics_render_istio_requests(a, &p, &lk);
	metrics_lookups_free(&lk);
	metrics_render_meshd(a, &p, rows);
	return err ? err : bm_prom_finish(&p);
}

/* ------------------------------------------------------------ endpoint */

static struct bm_prom_server *server;

/* Render under the lock into memory; the server sends after we return, so a
 * slow scraper never holds up the main loop. */
static int render_locked(void *arg, FILE *f)
{
	struct bm_agent *a = arg;
	int err;

	pthread_mutex_lock(&a->lock);
	err = bm_metrics_render(a, f);
	pthread_mutex_unlock(&a->lock);
	if (err)
		bm_log("metrics: render failed: %s", strerror(-err));
	return err;
}

int bm_metrics_start(struct bm_agent *a, const char *addr)
{
	int err;

	if (server)
		return -EALREADY;
	err = bm_prom_serve(addr, render_locked, a, &server);
	if (err)
		return err;
	bm_log("metrics: serving http://%s/metrics", addr);
	return 0;
}

/* GET /healthz/ready: 200 once meshd has loaded its programs and applied
 * the store's current generation; 503 with the reason otherwise. */
static struct bm_prom_server *ready_server;

static int render_ready(void *arg, FILE *f)
{
	struct bm_agent *a = arg;
	int err = 0;

	pthread_mutex_lock(&a->lock);
	if (!a->ready) {
		fprintf(f, "not ready: starting\n");
		err = -EAGAIN;
	} else if (a->applied_generation != a->store_generation) {
		fprintf(f, "not ready: applied generation %llu, store generation %llu%s%s\n",
			(unsigned long long)a->applied_generation,
			(unsigned long long)a->store_generation, a->last_error[0] ? ": " : "",
			a->last_error);
		err = -EAGAIN;
	} else {
		fprintf(f, "ready: generation %llu\n", (unsigned long long)a->applied_generation);
	}
	pthread_mutex_unlock(&a->lock);
	return err;
}

int bm_ready_start(struct bm_agent *a, const char *addr)
{
	int err;

	if (ready_server)
		return -EALREADY;
	err = bm_http_serve(addr, "/healthz/ready", "text/plain; charset=utf-8", render_ready, a,
			    &ready_server);
	if (!err)
		bm_log("readiness: serving http://%s/healthz/ready", addr);
	return err;
}

void bm_metrics_stop(void)
{
	metrics_tcp_stop();
	bm_prom_server_stop(server);
	server = NULL;
	bm_prom_server_stop(ready_server);
	ready_server = NULL;
}
