/* Internal to store_etcd*.c, the etcd v3 store: its state and the helpers
 * its files share. store_etcd.c has encoding, requests, reads and key/value
 * records, store_etcd_apply.c the writes, store_etcd_watch.c the watch.
 * Nothing else includes this; the store's users have store.h. */
#ifndef BM_STORE_ETCD_INT_H
#define BM_STORE_ETCD_INT_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "curlshim.h"
#include "store_etcd.h"

#define MAX_ENDPOINTS 16
#define REQUEST_TIMEOUT_MS 3000

struct buf {
	char *p;
	size_t len, cap;
};

struct bm_etcd {
	char *endpoints[MAX_ENDPOINTS];
	int n_endpoints;
	char *url;
	char *prefix;         /* "/bpfmesh" */
	char *res_prefix;     /* "/bpfmesh/resources/" */
	char *gen_key;        /* "/bpfmesh/generation" */
	CURL *h;              /* the caller's requests */
	struct curl_slist *headers;
	char errbuf[CURL_ERROR_SIZE];
	int cur;              /* endpoint that answered last */
	int64_t list_rev;     /* revision of the last successful list */

	/* Shared with the watcher thread and health readers. */
	pthread_mutex_t lock;
	int connected;        /* -1: never tried */
	time_t last_ok, err_logged;
	bool watching;        /* a watch stream is established */
	bool relist;          /* compaction: tell the reader to list everything */
	uint64_t gen;         /* the generation as of revision gen_rev */
	int64_t gen_rev;
	int64_t watch_from;   /* every event since this revision was seen */

	/* Watcher. */
	pthread_t thread;
	bool thread_started;
	atomic_bool stop;
	CURLM *wm;
	int pipe[2];
	int64_t watch_rev;    /* next revision to watch from; 0 = from now */
	int watch_ep;         /* endpoint the watcher starts with */
	bool signal_created;  /* a (re)created stream is news for the reader */
};

/* store_etcd.c: encoding */
char *etcd_b64_decode(const char *s, size_t *len);
int64_t etcd_jint(const json_t *v);
json_t *etcd_jkey(const char *key);
json_t *etcd_jrev(int64_t rev);
char *etcd_prefix_end(const char *prefix);
json_t *etcd_op_range(const char *key, const char *end);
json_t *etcd_op_put(const char *key, const char *value);
json_t *etcd_cmp_mod(const char *key, int64_t rev);

/* store_etcd.c: health */
void etcd_note_ok(struct bm_etcd *e);
void etcd_note_unreachable(struct bm_etcd *e, const char *what, const char *detail);

/* store_etcd.c: requests */
size_t etcd_buf_write(char *data, size_t size, size_t n, void *arg);
void etcd_set_common(struct bm_etcd *e, CURL *h, char *errbuf);
int etcd_post(struct bm_etcd *e, const char *path, json_t *req, json_t **resp, bool resend);
int etcd_read_txn(struct bm_etcd *e, json_t *ops, json_t **responses, int64_t *rev);
json_t *etcd_range_kvs(json_t *responses, size_t i);
int etcd_parse_generation(struct bm_etcd *e, json_t *kvs, uint64_t *gen, int64_t *mod);

/* store_etcd.c: key/value */
bool etcd_kv_key_of(struct bm_etcd *e, const char *full_key);

/* store_etcd_apply.c */
char *etcd_resource_key(struct bm_etcd *e, const char *kind, const char *ns, const char *name);

#endif
