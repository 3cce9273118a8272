/* Internal to the store: the etcd v3 backend (store_etcd*.c) and the helpers
 * it shares with the file store (store*.c), so both stamp, compare and
 * re-validate resources the same way. Users include store.h only.
 *
 * Arguments reach bm_etcd_* already checked by store*.c: kinds resolved,
 * namespaces and names valid DNS names. */
#ifndef BM_STORE_ETCD_H
#define BM_STORE_ETCD_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include "diag.h"
#include "schema.h"

struct bm_etcd;

/* url: "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]" (PREFIX default /bpfmesh).
 * Parses only: nothing is contacted until the first request, so meshd starts
 * (and serves its pinned maps) while etcd is down. */
int bm_etcd_open(const char *url, struct bm_etcd **out);
void bm_etcd_close(struct bm_etcd *e);
int bm_etcd_apply(struct bm_etcd *e, json_t *resources, json_t **results, bool dry);
int bm_etcd_delete(struct bm_etcd *e, const struct bm_kind *k, const char *ns, const char *name);
/* only/ns/name NULL = any. */
int bm_etcd_list(struct bm_etcd *e, const struct bm_kind *only, const char *ns,
		 const char *name, json_t **out_array, uint64_t *generation);
int bm_etcd_generation(struct bm_etcd *e, uint64_t *gen);
int bm_etcd_watch_fd(struct bm_etcd *e);
int bm_etcd_watch_ack(struct bm_etcd *e);
int bm_etcd_health(struct bm_etcd *e, int *connected, time_t *last_ok);

/* Tests only: called in bm_etcd_apply after the store was read and before
 * the transaction is sent, to provoke a conflicting write. */
extern void (*bm_etcd_test_before_commit)(void *arg);
extern void *bm_etcd_test_arg;

/* ---- shared with the file store (implemented in store_apply.c and store_list.c) ---- */

/* Kind, namespace and name of a canonical resource, checked to be usable as
 * key or path components. -EINVAL otherwise. */
int bm_store_res_identity(const json_t *res, const struct bm_kind **k, const char **ns,
			  const char **name);
/* Equal spec, labels and annotations: apply reports "unchanged". */
bool bm_store_same_content(const json_t *a, const json_t *b);
/* A copy of res with the store's bookkeeping: metadata.generation = gen,
 * creationTimestamp kept from old (now when old is NULL). NULL on ENOMEM. */
json_t *bm_store_stamp(const json_t *res, const json_t *old, uint64_t gen);
/* Parses and re-validates one stored value found at `where` that should hold
 * kind ns/name. Problems go to skipped and NULL is returned. */
json_t *bm_store_load_text(const char *buf, size_t len, const char *where, const char *kind,
			   const char *ns, const char *name, struct bm_errlist *skipped);

#endif
