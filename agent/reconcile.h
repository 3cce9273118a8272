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

struct bm_reconciler {
	const struct bm_maps *fd;
	struct bm_ids ids;
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
