/*
 * Outlier detection (DestinationRule trafficPolicy.outlierDetection, §2.5):
 * Envoy's consecutive-5xx and consecutive-gateway-error detectors, run inline
 * on every reported response, with time passed in explicitly so the state
 * machine is testable. State is per node-wide backend id; the caller writes
 * ejections and returns to the kernel's ejection map and its own LB.
 *
 * Envoy (source/common/upstream/outlier_detection_impl.cc) in short:
 *  - 5xx responses and (without split mode) local-origin failures count
 *    toward consecutive 5xx; 502/503/504 and local failures toward
 *    consecutive gateway errors; any other 5xx clears the gateway count and
 *    a success clears both;
 *  - reaching a threshold tries an ejection and clears that counter, so a
 *    host the cap spared is tried again after another full run of errors;
 *  - the cap: (ejected + 1) / hosts <= maxEjectionPercent, or nobody ejected;
 *  - ejection lasts base x multiplier, capped at max(max, base); the
 *    multiplier grows per ejection while base x multiplier < max + base and
 *    shrinks by one per interval the host stays healthy.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "l7.h"

#define OD_DEF_INTERVAL_MS 10000u
#define OD_DEF_BASE_MS     30000u
#define OD_DEF_MAX_MS      300000u

struct od_host {
	uint8_t ejected;
	uint32_t times;            /* ejection multiplier */
	uint32_t c5xx, cgw;        /* consecutive counters */
	uint64_t until_ms;         /* ejected until */
	uint64_t healthy_ref_ms;   /* start of the current healthy interval */
	/* the cluster's timing, from its last report */
	uint32_t interval_ms, base_ms, max_ms;
};

struct bm_outlier {
	pthread_mutex_t mu;
	uint32_t n;
	uint32_t hi;               /* ids below hi were ever reported: sweeps stop there */
	uint64_t total;
	struct od_host *h;
};

struct bm_outlier *bm_outlier_new(uint32_t max_backends)
{
	struct bm_outlier *o = calloc(1, sizeof(*o));

	if (!o)
		return NULL;
	o->h = calloc(max_backends ? max_backends : 1, sizeof(*o->h));
	if (!o->h) {
		free(o);
		errno = ENOMEM;
		return NULL;
	}
	o->n = max_backends;
	pthread_mutex_init(&o->mu, NULL);
	return o;
}

void bm_outlier_free(struct bm_outlier *o)
{
	if (!o)
		return;
	pthread_mutex_destroy(&o->mu);
	free(o->h);
	free(o);
}

static void od_timing(struct od_host *h, const struct bm_outlier_cfg *cfg)
{
	h->interval_ms = cfg->interval_ms ? cfg->interval_ms : OD_DEF_INTERVAL_MS;
	h->base_ms = cfg->base_ejection_ms ? cfg->base_ejection_ms : OD_DEF_BASE_MS;
	h->max_ms = cfg->max_ejection_ms ? cfg->max_ejection_ms : OD_DEF_MAX_MS;
	if (h->max_ms < h->base_ms)   /* Envoy: max_ejection_time is at least base */
		h->max_ms = h->base_ms;
}

static int od_cap_allows(const struct bm_outlier *o, const struct bm_outlier_cfg *cfg, uint32_t id,
			 const uint32_t *hosts, uint32_t n_hosts)
{
	uint64_t ejected = 0;

	for (uint32_t i = 0; i < n_hosts; i++)
		if (hosts[i] != id && hosts[i] < o->n && o->h[hosts[i]].ejected)
			ejected++;
	/* Envoy: 100 x (ejected + 1) / hosts <= pct, or none ejected yet */
	return ejected == 0 || 100 * (ejected + 1) <= (uint64_t)n_hosts * cfg->max_ejection_pct;
}

static int od_eject(struct bm_outlier *o, struct od_host *h, uint64_t now_ms)
{
	uint64_t d;

	if (h->ejected)
		return 0;
	if ((uint64_t)h->times * h->base_ms < (uint64_t)h->max_ms + h->base_ms)
		h->times++;
	d = (uint64_t)h->base_ms * h->times;
	if (d > h->max_ms)
		d = h->max_ms;
	h->ejected = 1;
	h->until_ms = now_ms + d;
	o->total++;
	return 1;
}

int bm_outlier_report(struct bm_outlier *o, const struct bm_outlier_cfg *cfg, uint32_t id,
		      const uint32_t *hosts, uint32_t n_hosts, enum bm_outlier_ev ev,
		      uint64_t now_ms)
{
	struct od_host *h;
	int ejected = 0, try_gw = 0, try_5xx = 0;

	if (!o || !cfg)
		return -EINVAL;
	if (id >= o->n)
		return -ERANGE;
	if (id == 0)
		return 0;   /* backend id 0 = unknown: nothing to track */
	pthread_mutex_lock(&o->mu);
	h = &o->h[id];
	if (id >= o->hi)
		o->hi = id + 1;
	od_timing(h, cfg);
	switch (ev) {
	case BM_OE_SUCCESS:
		h->c5xx = h->cgw = 0;
		break;
	case BM_OE_5XX:
		h->cgw = 0;
		h->c5xx++;
		break;
	case BM_OE_GATEWAY:
	case BM_OE_LOCAL_FAILURE:
		h->cgw++;
		h->c5xx++;
		break;
	}
	if (cfg->enabled) {
		try_gw = cfg->consecutive_gw && h->cgw >= cfg->consecutive_gw;
		try_5xx = cfg->consecutive_5xx && h->c5xx >= cfg->consecutive_5xx;
	}
	if ((try_gw || try_5xx) && !h->ejected && od_cap_allows(o, cfg, id, hosts, n_hosts))
		ejected = od_eject(o, h, now_ms);
	/* the counter that fired starts over, ejected or not */
	if (try_gw)
		h->cgw = 0;
	if (try_5xx)
		h->c5xx = 0;
	pthread_mutex_unlock(&o->mu);
	return ejected;
}

size_t bm_outlier_tick(struct bm_outlier *o, uint64_t now_ms, uint32_t *ids, size_t max)
{
	size_t n = 0;

	if (!o)
		return 0;
	pthread_mutex_lock(&o->mu);
	for (uint32_t id = 1; id < o->hi; id++) {
		struct od_host *h = &o->h[id];

		if (h->ejected) {
			if (now_ms < h->until_ms || n >= max)
				continue;   /* over the caller's room: next tick */
			h->ejected = 0;
			h->c5xx = h->cgw = 0;
			h->healthy_ref_ms = now_ms;
			ids[n++] = id;
		} else if (h->times && h->interval_ms && now_ms >= h->healthy_ref_ms + h->interval_ms) {
			/* one step down per whole interval spent healthy */
			uint64_t steps = (now_ms - h->healthy_ref_ms) / h->interval_ms;

			h->times = steps >= h->times ? 0 : h->times - (uint32_t)steps;
			h->healthy_ref_ms += steps * h->interval_ms;
		}
	}
	pthread_mutex_unlock(&o->mu);
	return n;
}

int bm_outlier_is_ejected(const struct bm_outlier *o, uint32_t id)
{
	struct bm_outlier *m = (struct bm_outlier *)o;   /* the lock is not the state */
	int e;

	if (!o || id >= o->n)
		return 0;
	pthread_mutex_lock(&m->mu);
	e = o->h[id].ejected;
	pthread_mutex_unlock(&m->mu);
	return e;
}

json_t *bm_outlier_json(const struct bm_outlier *o)
{
	struct bm_outlier *m = (struct bm_outlier *)o;
	json_t *root = json_object();

	if (!root || !o)
		return root;
	pthread_mutex_lock(&m->mu);
	for (uint32_t id = 1; id < o->hi; id++) {
		const struct od_host *h = &o->h[id];
		char key[16];
		json_t *e;

		if (!h->ejected && !h->times && !h->c5xx && !h->cgw)
			continue;
		snprintf(key, sizeof(key), "%u", id);
		e = json_pack("{s:b,s:I,s:I,s:I,s:I}", "ejected", h->ejected, "times",
			      (json_int_t)h->times, "until_ms", (json_int_t)(h->ejected ? h->until_ms : 0),
			      "consecutive", (json_int_t)h->c5xx, "consecutive_gateway",
			      (json_int_t)h->cgw);
		if (e)
			json_object_set_new(root, key, e);
	}
	pthread_mutex_unlock(&m->mu);
	return root;
}

uint64_t bm_outlier_ejections_total(const struct bm_outlier *o)
{
	struct bm_outlier *m = (struct bm_outlier *)o;
	uint64_t t;

	if (!o)
		return 0;
	pthread_mutex_lock(&m->mu);
	t = o->total;
	pthread_mutex_unlock(&m->mu);
	return t;
}
