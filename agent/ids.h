/* Stable ids for services, clusters and backends. Kernel maps index
 * counters by these ids, so they must survive config changes and meshd
 * restarts: they are persisted in the node's run directory. */
#ifndef BM_IDS_H
#define BM_IDS_H
#include <limits.h>
#include <stdint.h>
#include "strmap.h"

enum bm_id_kind { BM_ID_SVC, BM_ID_CLUSTER, BM_ID_BACKEND, BM_ID_POD, BM_ID_KINDS };

struct bm_ids {
	struct bm_strmap map[BM_ID_KINDS];
	uint8_t *used[BM_ID_KINDS];     /* bitmap; id 0 is never handed out */
	uint32_t limit[BM_ID_KINDS];
	uint32_t cursor[BM_ID_KINDS];
	char path[PATH_MAX];
	int dirty;
};

int bm_ids_init(struct bm_ids *ids, const char *path); /* loads path if present */
void bm_ids_free(struct bm_ids *ids);
/* The id of key, allocated when new. -ENOSPC when the space is full. */
int bm_ids_get(struct bm_ids *ids, enum bm_id_kind k, const char *key, uint32_t *id);
int bm_ids_lookup(const struct bm_ids *ids, enum bm_id_kind k, const char *key, uint32_t *id);
int bm_ids_release(struct bm_ids *ids, enum bm_id_kind k, const char *key);
int bm_ids_save(struct bm_ids *ids);

#endif
