/* Istio resources: parsing + validation into canonical JSON. The one
 * implementation used by meshctl (apply, delete -f) and meshd (store reads).
 *
 * Canonical form of a resource:
 *   {"apiVersion": "...", "kind": "VirtualService",
 *    "metadata": {"name": ..., "namespace": ... (default "default"),
 *                 "labels": {...}, "annotations": {...}},
 *    "spec": {...}}
 * with fields in schema order and scalars typed by the schema. */
#ifndef BM_RESOURCE_H
#define BM_RESOURCE_H
#include <jansson.h>
#include <stddef.h>
#include "diag.h"
#include "schema.h"

/* Keep metadata.generation and metadata.creationTimestamp (the store's own
 * bookkeeping) instead of dropping them like other server-set fields. */
#define BM_PARSE_STORED 0x1u
/* Check only apiVersion, kind and metadata; drop spec unchecked. For
 * `delete -f`, which needs names, not a resource that would still apply. */
#define BM_PARSE_IDENTITY 0x2u

#define BM_DEFAULT_NAMESPACE "default"

/* Parses every YAML/JSON document in buf (a `kind: List` expands to its
 * items) and validates it. file names the input in messages.
 * Returns 0 with *out = a new array of canonical objects (possibly empty);
 * -EINVAL when anything is wrong: every problem is in errs, *out = NULL;
 * -ENOMEM. */
int bm_resources_parse(const char *buf, size_t len, const char *file, unsigned flags,
		       json_t **out, struct bm_errlist *errs);

/* Accessors for canonical objects (NULL when absent). */
const char *bm_res_kind(const json_t *res);
const char *bm_res_name(const json_t *res);
const char *bm_res_namespace(const json_t *res);

#endif
