/* A small string -> u64 hash table (open addressing, linear probing).
 * Used for stable id allocation and for what the reconciler last applied. */
#ifndef BM_STRMAP_H
#define BM_STRMAP_H
#include <stddef.h>
#include <stdint.h>

struct bm_strmap_slot {
	char *key;      /* NULL = empty; (char *)1 = deleted */
	uint64_t val;
};

struct bm_strmap {
	struct bm_strmap_slot *slots;
	size_t cap;     /* power of two */
	size_t len;     /* live entries */
	size_t used;    /* live + deleted */
};

int bm_strmap_set(struct bm_strmap *m, const char *key, uint64_t val);
int bm_strmap_get(const struct bm_strmap *m, const char *key, uint64_t *val);
int bm_strmap_del(struct bm_strmap *m, const char *key);
void bm_strmap_free(struct bm_strmap *m);

/* Iterate: for (size_t i = 0; bm_strmap_next(m, &i, &k, &v);) */
int bm_strmap_next(const struct bm_strmap *m, size_t *iter, const char **key, uint64_t *val);

#endif
