/* Turns a built model into kernel map entries, atomically per service:
 * a new revision's clusters are written first, then the service entry is
 * switched to it in one update; the old revision is deleted after a grace
 * period, so no connect() ever reads a half-written backend set. */
#ifndef BM_RECONCILE_H
#define BM_RECONCILE_H
#include <stdint.h>
#include <stdio.h>
#include "ids.h"
#include "loader.h"
#include "model.h"
#include "strmap.h"

struct bm_gc_entry {
	uint32_t svc_id, rev, n_dests;
	uint64_t due_ms;
};

/* The ids one service's clusters and backends use, as last applied. */
struct bm_svc_uses {
	uint32_t *ids;              /* n_cl cluster ids, then backend ids */
	uint32_t n_cl, n;
	uint32_t synced;            /* apply (epoch) that found it in the maps as modelled */
	uint8_t l7;
};

struct bm_reconciler {
	const struct bm_maps *fd;
	struct bm_ids ids;
	/* Incremental apply: a service the model marks unchanged (svc.same) and
	 * that the previous apply left in sync is not hashed again; its ids are
	 * marked in use from uses[] instead of by name. */
	uint32_t epoch;
	uint32_t *mark[BM_ID_POD];  /* id -> epoch of the last apply that used it */
	unsigned n_mark[BM_ID_POD];
	struct bm_svc_uses *uses;   /* by service id */
	unsigned skipped;           /* services the last apply did not hash */
	struct bm_strmap applied;   /* "vip:port" -> content hash of what is live */
	struct bm_strmap live;      /* "vip:port" -> rev | n_dests << 32 */
	struct bm_gc_entry *gc;
	size_t n_gc, cap_gc;
	uint64_t sweep_due_ms;      /* startup sweep of revisions nobody owns */
	unsigned n_services, n_clusters, n_backends;
	unsigned writes;            /* services rewritten by the last apply */
	int mesh;                   /* capture mesh backends into meshd (proxy running) */
};

int bm_reconcile_init(struct bm_reconciler *r, const struct bm_maps *fd, const char *ids_path);
void bm_reconcile_free(struct bm_reconciler *r);
int bm_reconcile_apply(struct bm_reconciler *r, const struct bm_model *m, uint64_t now_ms);
/* Delete retired revisions whose grace period has passed. */
void bm_reconcile_gc(struct bm_reconciler *r, uint64_t now_ms);
/* Backend id of "ip:port" (dotted quad), for manual ejection. */
int bm_reconcile_backend_id(const struct bm_reconciler *r, const char *addr, uint32_t *id);

#define BM_GC_GRACE_MS 1000

#endif
