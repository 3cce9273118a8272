/* The resource store: where validated resources live between `meshctl apply`
 * and the node agents that enforce them.
 *
 * URL: "file:///path" or a plain path (default /var/lib/bpfmesh), or
 * "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]" for etcd v3 (>= 3.4, through its
 * JSON gateway; PREFIX default /bpfmesh). Both backends keep the same
 * resources, generations and validation; only the mechanics differ.
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
 * rather than the file's inode. bm_store_watch_fd() does that for you.
 *
 * Layout of an etcd store:
 *   <prefix>/resources/<Kind>/<namespace>/<name>  one canonical resource (JSON)
 *   <prefix>/generation                          decimal store generation
 * apply and delete are one etcd transaction each: they compare the
 * mod_revision of the generation key and of every resource key they read,
 * and put (or delete) the resources and the new generation together; a lost
 * race is retried on fresh data a bounded number of times (then -EBUSY,
 * nothing written). One transaction holds at most 127 resources (etcd's
 * --max-txn-ops 128): -E2BIG beyond. list reads the generation and the
 * resources in one read-only transaction, i.e. at one revision. Values that
 * do not parse or validate are reported and skipped, as files are.
 * Opening contacts nothing. Every request has a 1 s connect and 3 s total
 * timeout and tries the endpoints in order (starting with the last that
 * answered); a write moves to the next endpoint only if it was not sent.
 * While etcd is unreachable requests fail with -ECONNREFUSED, -ETIMEDOUT or
 * -EHOSTUNREACH; the message is printed when it becomes unreachable and then
 * at most every 30 s.
 *
 * Threads: a struct bm_store is used by one thread at a time, except
 * bm_store_health(), which any thread may call. An etcd store runs a watcher
 * thread of its own once bm_store_watch_fd() was called.
 *
 * Functions returning int return 0 or a negative errno. Failing system calls
 * are reported on stderr with the path involved. */
#ifndef BM_STORE_H
#define BM_STORE_H
#include <jansson.h>
#include <stdint.h>
#include <time.h>

#define BM_STORE_DEFAULT_URL "file:///var/lib/bpfmesh"

struct bm_store;

/* Opens (creating the directory tree if missing) the store at url.
 * -EPROTONOSUPPORT for an unknown or not yet supported scheme (etcds://),
 * -EINVAL for a malformed URL. An etcd store is not contacted here. */
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
/* Whole-store listings (kind and ns NULL) of a file store parse only the
 * files that changed since the previous one (same inode, size and times:
 * the parse is reused); see store_cache.h. This says how many files the
 * last such listing parsed (0 for etcd). */
size_t bm_store_list_parsed(const struct bm_store *s);
/* One resource (*out a new reference); -ENOENT when absent or unreadable. */
int bm_store_get(struct bm_store *s, const char *kind, const char *ns, const char *name,
		 json_t **out);

/* The generation file (see "Watching" above); NULL for etcd, which has
 * none: use bm_store_watch_fd(). */
const char *bm_store_watch_path(const struct bm_store *s);
/* Current store generation; 0 for a store never written. For an etcd store
 * being watched this is the watcher's copy (no request) while the watch is
 * up, else one read. */
int bm_store_generation(struct bm_store *s, uint64_t *gen);

/* A descriptor that becomes readable when the store may have changed: poll
 * it (EPOLLIN), then call bm_store_watch_ack() and re-list when it says so.
 * Owned by the store (closed by bm_store_close). Negative errno on failure.
 *   file: inotify on the generation file's directory.
 *   etcd: a pipe fed by a watcher thread streaming /v3/watch on the prefix
 *         from the revision after the last bm_store_list(), resuming from the
 *         last revision seen after a disconnect. It also fires when the
 *         stream is re-established after a failure (so a reader whose last
 *         list failed tries again) and when the revision to resume from was
 *         compacted (events were lost: BM_STORE_RELIST).
 * Call it after the first bm_store_list() so no change in between is lost
 * (called before, an etcd store watches from the present and fires once the
 * stream is up). */
int bm_store_watch_fd(struct bm_store *s);
#define BM_STORE_CHANGED 1 /* re-list */
#define BM_STORE_RELIST 2  /* events were lost (etcd compaction): re-list everything */
/* Drains the watch descriptor: 0 nothing relevant (e.g. another file in the
 * store directory), BM_STORE_CHANGED, BM_STORE_RELIST, or a negative errno. */
int bm_store_watch_ack(struct bm_store *s);

/* Staleness, for status and metrics. *connected: the last exchange with the
 * store worked (always 1 for a file store). *last_ok: when the store was last
 * known reachable (now while an etcd watch stream is up; 0 never). A reader
 * that cannot list keeps its last good configuration and reports these. */
int bm_store_health(struct bm_store *s, int *connected, time_t *last_ok);

/* ---- key/value records and one-time tokens (not resources) ----
 *
 * Small state that meshctl and the agents share beside the resources: the CA
 * service's join tokens and node records (docs/identity.md §6). A key is
 * 1-255 bytes of '/'-separated segments of [A-Za-z0-9._-], none empty, "."
 * or ".."; a value is text of at most BM_STORE_KV_MAX bytes.
 *   file: <dir>/kv/<key>, written like a resource (temp file, fsync, rename);
 *   etcd: <prefix>/kv/<key>.
 * Records never change the store generation and never wake a watcher:
 * agents do not reload for them. -EINVAL for a bad key, -ENOENT when absent. */
#define BM_STORE_KV_MAX (64 * 1024)
int bm_store_kv_put(struct bm_store *s, const char *key, const char *value);
/* *value is malloc'd. */
int bm_store_kv_get(struct bm_store *s, const char *key, char **value);
/* Deleting is the one-use primitive: of concurrent deleters of one key
 * exactly one gets 0 (unlink; etcd's deleted count), the others -ENOENT. */
int bm_store_kv_del(struct bm_store *s, const char *key);

/* One-time tokens (join tokens): 256 random bits shown once as 64 hex digits;
 * the store keeps only {"sha256": hex of SHA-256(token text), "expires": unix
 * seconds} under key. Creating again replaces an unused token. */
#define BM_STORE_TOKEN_HEX 64
int bm_store_token_create(struct bm_store *s, const char *key, long ttl, time_t now,
			  char token[BM_STORE_TOKEN_HEX + 1]);
/* 0 and the record is gone (used); -ENOENT no token (never made, or already
 * used); -EPERM wrong token (the record stays: 256 bits are not guessed);
 * -EKEYEXPIRED expired (the record is deleted). Hashes are compared in
 * constant time. */
int bm_store_token_redeem(struct bm_store *s, const char *key, const char *token, time_t now);

#endif
