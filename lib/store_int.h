/* Internal to store*.c, the file store and the front of every store: its
 * state and the file primitives its files share. store.c has opening,
 * watching, health, the generation, the primitives, key/value records and
 * tokens; store_apply.c the writes, store_list.c listing and reading.
 * Nothing else includes this; the store's users have store.h. */
#ifndef BM_STORE_INT_H
#define BM_STORE_INT_H
#include <stddef.h>

struct bm_etcd;
struct bm_fcache;

struct bm_store {
	struct bm_etcd *etcd; /* set: an etcd store, nothing below is used */
	char *dir;
	char *resdir;
	char *genpath;
	char *lockpath;
	int watch_fd;         /* inotify on dir, -1 until bm_store_watch_fd() */
	struct bm_fcache *cache; /* full listings: parse only changed files */
};

/* store.c: file primitives */
int store_sys_err(const char *what, const char *path);
int store_mkdir_p(const char *path);
int store_read_all(const char *path, char **buf, size_t *len);
int store_fsync_dir(const char *dir);
int store_write_atomic(const char *dir, const char *path, const char *data, size_t len);

#endif
