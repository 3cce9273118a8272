/* The resource store: where validated resources live between `meshctl apply`
 * and the node agents that enforce them.
 *
 * URL: "file:///path" or a plain path (default /var/lib/bpfmesh). etcd://
 * comes later and is refused with "not supported yet".
 *
 * Layout of a file store:
 *   <dir>/resources/<Kind>/<namespace>/<name>.json  one canonical resource
 *   <dir>/generation                                decimal store generation
 *   <dir>/.lock                                     flock()ed by writers
 *
 * Every resource's metadata carries "generation" (the store generation at
 * which it last changed) and "creationTimestamp" (RFC 3339, UTC).
 *
 * Writers (apply, delete) hold an exclusive flock on .lock for the whole
 * operation, write each resource as temp file + fsync + rename + fsync of its
 * directory, and replace <dir>/generation last (same atomic rename), at most
 * once per operation and only when something changed.
 *
 * Readers take no lock. A snapshot is consistent when the generation read
 * before and after listing is the same and no resource carries a generation
 * newer than it (that would be a write in progress). Otherwise they retry,
 * for a bounded time. Files left by an interrupted writer (newer generation,
 * nobody holding the lock) are accepted as they are.
 *
 * Watching for changes (meshd): <dir>/generation is replaced by rename, so
 * watch its directory for IN_MOVED_TO / IN_CLOSE_WRITE of "generation"
 * rather than the file's inode.
 *
 * Functions returning int return 0 or a negative errno. Failing system calls
 * are reported on stderr with the path involved. */
#ifndef BM_STORE_H
#define BM_STORE_H
#include <jansson.h>
#include <stdint.h>

#define BM_STORE_DEFAULT_URL "file:///var/lib/bpfmesh"

struct bm_store;

/* Opens (creating the directory tree if missing) the store at url.
 * -EPROTONOSUPPORT for an unknown or not yet supported scheme. */
int bm_store_open(const char *url, struct bm_store **out);
/* Opens without creating anything: for readers and dry runs. A missing
 * directory reads as an empty store at generation 0. */
int bm_store_open_ro(const char *url, struct bm_store **out);
void bm_store_close(struct bm_store *s);

/* Stores an array of canonical resources (from bm_resources_parse) in one
 * operation. *results (may be NULL) gets one object per input, in order:
 * {"kind","namespace","name","action": "created"|"configured"|"unchanged"}.
 * A resource whose spec, labels and annotations equal the stored ones is
 * "unchanged" and not rewritten; the generation is bumped once if anything
 * was created or configured. */
int bm_store_apply(struct bm_store *s, json_t *resources, json_t **results);
/* What bm_store_apply would report, writing nothing (--dry-run). */
int bm_store_plan(struct bm_store *s, json_t *resources, json_t **results);

/* Removes one resource. kind is canonical ("VirtualService") or any alias
 * bm_kind_lookup() knows. -ENOENT when absent. */
int bm_store_delete(struct bm_store *s, const char *kind, const char *ns, const char *name);

/* Lists resources, ordered by kind (table order), namespace, name.
 * kind NULL = every supported kind, ns NULL = every namespace. *out_array is
 * a new array; *generation (may be NULL) the generation it is consistent
 * with. Files that do not parse or validate are reported on stderr and
 * skipped. -EAGAIN when writers kept changing the store. */
int bm_store_list(struct bm_store *s, const char *kind, const char *ns, json_t **out_array,
		  uint64_t *generation);
/* One resource (*out a new reference); -ENOENT when absent or unreadable. */
int bm_store_get(struct bm_store *s, const char *kind, const char *ns, const char *name,
		 json_t **out);

/* The generation file (see "Watching" above). */
const char *bm_store_watch_path(const struct bm_store *s);
/* Current store generation; 0 for a store never written. */
int bm_store_generation(struct bm_store *s, uint64_t *gen);

#endif
