/* The file store's parse cache (lib/store_list.c): what a full listing read from
 * each resource file, keyed by the file's identity (device, inode, size,
 * mtime, ctime), so the next listing parses and validates only the files
 * that changed. Writers replace a file by rename (a new inode), and hand
 * edits change its size or times; a file changed within the last few seconds
 * is never trusted ("racy": the clock's granularity could hide a second
 * edit), it is read again until it has been still for a while.
 *
 * The cache holds references to the parsed resources that the caller's
 * listing holds anyway (meshd keeps its last list), so it costs no second
 * copy. An invalid file's report is kept too and repeated on every listing,
 * as a listing without the cache does.
 *
 * One pass per listing attempt: bm_fcache_begin(), then per file in listing
 * order (kind table order, namespace, file name) bm_fcache_lookup() and, on a
 * miss, bm_fcache_add(); then bm_fcache_commit() when the attempt was
 * consistent, or bm_fcache_abort() when it is retried (what it read is kept:
 * each entry stands for its file's identity, consistent or not). */
#ifndef BM_STORE_CACHE_H
#define BM_STORE_CACHE_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <jansson.h>
#include "diag.h"

struct bm_fcache;

struct bm_fcache *bm_fcache_new(void);
void bm_fcache_free(struct bm_fcache *c);
/* Forgets everything (store reset: the generation went backwards). */
void bm_fcache_clear(struct bm_fcache *c);
void bm_fcache_begin(struct bm_fcache *c);
/* A hit: 1, *res the cached resource (borrowed; NULL for an invalid file,
 * whose report was appended to skipped). A miss: 0. kind is the index in
 * bm_kinds, fname the file name in its namespace directory. */
int bm_fcache_lookup(struct bm_fcache *c, int kind, const char *ns, const char *fname,
		     const struct stat *st, json_t **res, struct bm_errlist *skipped);
/* Records what reading the file gave: res (NULL: invalid, errs its report,
 * which is copied) for the next pass. A file changed recently is not kept. */
int bm_fcache_add(struct bm_fcache *c, int kind, const char *ns, const char *fname,
		  const struct stat *st, json_t *res, const struct bm_errlist *errs);
void bm_fcache_commit(struct bm_fcache *c, uint64_t generation);
void bm_fcache_abort(struct bm_fcache *c);
/* Generation of the last committed pass (0 none). */
uint64_t bm_fcache_generation(const struct bm_fcache *c);
/* Files parsed (misses) in the last committed pass, for tests and logs. */
size_t bm_fcache_parsed(const struct bm_fcache *c);
/* Tests: how recent a change makes a file "racy" (default 2000 ms). */
void bm_fcache_set_racy_ms(long ms);

#endif
