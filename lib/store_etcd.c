/* etcd v3 store: the resources, generation and validation of the file store
 * (store.h), kept in etcd and reached through its JSON gateway (POST /v3/...)
 * with libcurl.
 *
 * Keys: <prefix>/resources/<Kind>/<ns>/<name> -> the canonical resource as
 * compact JSON; <prefix>/generation -> the decimal store generation. Keys and
 * values travel base64-encoded, int64 fields as JSON strings (proto3 JSON).
 *
 * Writes are one transaction each, guarded by the mod_revision of the
 * generation key and of every resource key they read: a concurrent writer
 * makes the compare fail, nothing of ours is written, and the operation is
 * redone on fresh data a bounded number of times. Reads are one read-only
 * transaction, so the generation and the resources come from one revision.
 *
 * Watching runs in a thread with its own connections: a /v3/watch stream on
 * the prefix from the revision after the last list, resumed from the last
 * revision seen after a disconnect, restarted from the present with a re-list
 * requested when that revision was compacted. An idle stream is checked with
 * a small read every few seconds, so a hung etcd (stopped, partitioned) is
 * noticed, not only a closed connection. Each change writes a byte to a pipe.
 *
 * Several endpoints are tried in order, starting with the last that answered;
 * a write moves on only when it was not sent, so it is never applied twice. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "curlshim.h"
#include "resource.h"
#include "store.h"
#include "store_etcd.h"

#define MAX_ENDPOINTS 16
#define CONNECT_TIMEOUT_MS 1000
#define REQUEST_TIMEOUT_MS 3000
/* Conflicting writers are other meshctl runs: a handful of retries is plenty. */
#define APPLY_ATTEMPTS 8
/* etcd's --max-txn-ops default; every apply reads and compares one key per
 * resource plus the generation key in one transaction. */
#define MAX_TXN_OPS 128
#define MAX_RESPONSE (256u << 20)
#define ERROR_REPEAT_S 30     /* "still unreachable" at most this often */
#define WATCH_IDLE_PROBE_MS 3000
#define WATCH_BACKOFF_MAX_MS 2000
#define COMPARE_FAILED 1      /* internal: the transaction lost a race */

void (*bm_etcd_test_before_commit)(void *arg);
void *bm_etcd_test_arg;

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

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- encoding */

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const void *data, size_t len)
{
	const unsigned char *in = data;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		*o++ = b64chars[v >> 18 & 63];
		*o++ = b64chars[v >> 12 & 63];
		*o++ = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
		*o++ = i + 2 < len ? b64chars[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *p = c ? strchr(b64chars, c) : NULL;

	return p ? (int)(p - b64chars) : -1;
}

/* NUL-terminated for convenience; NULL when s is not base64. */
static char *b64_decode(const char *s, size_t *len)
{
	size_t n = s ? strlen(s) : 0;
	char *out, *o;

	if (n % 4)
		return NULL;
	out = o = malloc(n / 4 * 3 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		int pad = (s[i + 3] == '=') + (s[i + 2] == '=' && s[i + 3] == '=');

		if (pad && i + 4 != n)
			goto bad;
		for (int j = 0; j < 4 - pad; j++)
			if ((v[j] = b64_value(s[i + j])) < 0)
				goto bad;
		*o++ = (char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			*o++ = (char)((v[1] & 15) << 4 | v[2] >> 2);
		if (pad < 1)
			*o++ = (char)((v[2] & 3) << 6 | v[3]);
	}
	*o = '\0';
	*len = (size_t)(o - out);
	return out;
bad:
	free(out);
	return NULL;
}

/* proto3 JSON: int64 as a string, absent when zero. */
static int64_t jint(const json_t *v)
{
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

static json_t *jkey(const char *key)
{
	char *b = b64_encode(key, strlen(key));
	json_t *j = b ? json_string(b) : NULL;

	free(b);
	return j;
}

static json_t *jrev(int64_t rev)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRId64, rev);
	return json_string(buf);
}

/* The smallest key above every key starting with prefix. */
static char *prefix_end(const char *prefix)
{
	char *end = strdup(prefix);

	if (end)
		end[strlen(end) - 1]++;
	return end;
}

static json_t *op_range(const char *key, const char *end)
{
	json_t *r = json_pack("{s:o}", "key", jkey(key));

	if (r && end)
		json_object_set_new(r, "range_end", jkey(end));
	return json_pack("{s:o}", "request_range", r);
}

static json_t *op_put(const char *key, const char *value)
{
	char *b = b64_encode(value, strlen(value));
	json_t *op = b ? json_pack("{s:{s:o,s:s}}", "request_put", "key", jkey(key), "value", b)
		       : NULL;

	free(b);
	return op;
}

static json_t *cmp_mod(const char *key, int64_t rev)
{
	return json_pack("{s:s,s:o,s:o,s:s}", "target", "MOD", "key", jkey(key), "mod_revision",
			 jrev(rev), "result", "EQUAL");
}

/* ---------------------------------------------------------------- open */

static int parse_url(struct bm_etcd *e, const char *url)
{
	const char *p = url + strlen("etcd://"), *slash = strchr(p, '/');
	size_t hosts_len = slash ? (size_t)(slash - p) : strlen(p);
	char *hosts = strndup(p, hosts_len), *save = NULL;

	if (!hosts)
		return -ENOMEM;
	for (char *h = strtok_r(hosts, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
		const char *colon = strrchr(h, ':');

		if (e->n_endpoints == MAX_ENDPOINTS || strpbrk(h, " \t/@?#")) {
			e->n_endpoints = 0;
			break;
		}
		/* No port (or a bracketed IPv6 address without one): etcd's 2379. */
		if (!colon || (h[0] == '[' && colon < strrchr(h, ']'))) {
			if (asprintf(&e->endpoints[e->n_endpoints], "%s:2379", h) < 0)
				e->endpoints[e->n_endpoints] = NULL;
		} else {
			e->endpoints[e->n_endpoints] = strdup(h);
		}
		if (!e->endpoints[e->n_endpoints++]) {
			free(hosts);
			return -ENOMEM;
		}
	}
	free(hosts);
	if (!e->n_endpoints) {
		fprintf(stderr, "bpfmesh store: %s: want etcd://HOST:PORT[,HOST:PORT...][/PREFIX] "
			"(at most %d endpoints)\n", url, MAX_ENDPOINTS);
		return -EINVAL;
	}
	e->prefix = strdup(slash && slash[1] ? slash : "/bpfmesh");
	if (!e->prefix)
		return -ENOMEM;
	while (strlen(e->prefix) > 1 && e->prefix[strlen(e->prefix) - 1] == '/')
		e->prefix[strlen(e->prefix) - 1] = '\0';
	if (asprintf(&e->res_prefix, "%s/resources/", e->prefix) < 0) {
		e->res_prefix = NULL;
		return -ENOMEM;
	}
	if (asprintf(&e->gen_key, "%s/generation", e->prefix) < 0) {
		e->gen_key = NULL;
		return -ENOMEM;
	}
	return 0;
}

int bm_etcd_open(const char *url, struct bm_etcd **out)
{
	struct bm_etcd *e = calloc(1, sizeof(*e));
	int r;

	*out = NULL;
	if (!e)
		return -ENOMEM;
	pthread_mutex_init(&e->lock, NULL);
	e->connected = -1;
	e->pipe[0] = e->pipe[1] = -1;
	r = -ENOMEM;
	e->url = strdup(url);
	if (!e->url)
		goto err;
	r = parse_url(e, url);
	if (r)
		goto err;
	r = bm_curl_load();
	if (r) {
		fprintf(stderr, "bpfmesh store: etcd %s: %s\n", url, bm_curl_error());
		goto err;
	}
	r = -ENOMEM;
	e->h = bm_curl_easy_init();
	e->headers = bm_curl_slist_append(NULL, "Content-Type: application/json");
	if (!e->h || !e->headers)
		goto err;
	*out = e;
	return 0;
err:
	bm_etcd_close(e);
	return r;
}

void bm_etcd_close(struct bm_etcd *e)
{
	if (!e)
		return;
	if (e->thread_started) {
		atomic_store(&e->stop, true);
		bm_curl_multi_wakeup(e->wm);
		pthread_join(e->thread, NULL);
	}
	if (e->wm)
		bm_curl_multi_cleanup(e->wm);
	for (int i = 0; i < 2; i++)
		if (e->pipe[i] >= 0)
			close(e->pipe[i]);
	if (e->h)
		bm_curl_easy_cleanup(e->h);
	bm_curl_slist_free_all(e->headers);
	for (int i = 0; i < e->n_endpoints; i++)
		free(e->endpoints[i]);
	free(e->url);
	free(e->prefix);
	free(e->res_prefix);
	free(e->gen_key);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

/* ---------------------------------------------------------------- health */

static void note_ok(struct bm_etcd *e)
{
	pthread_mutex_lock(&e->lock);
	if (e->connected == 0)
		fprintf(stderr, "bpfmesh store: etcd %s reachable again\n", e->url);
	e->connected = 1;
	e->last_ok = time(NULL);
	pthread_mutex_unlock(&e->lock);
}

/* Logged when the store becomes unreachable, then every ERROR_REPEAT_S: an
 * agent polling a dead etcd must not flood its log. */
static void note_unreachable(struct bm_etcd *e, const char *what, const char *detail)
{
	time_t now = time(NULL);

	pthread_mutex_lock(&e->lock);
	if (e->connected != 0 || now - e->err_logged >= ERROR_REPEAT_S) {
		fprintf(stderr, "bpfmesh store: etcd %s unreachable (%s): %s%s\n", e->url, what,
			detail, e->connected == 0 ? " (still)" :
			"; is etcd running and listening on that address?");
		e->err_logged = now;
	}
	e->connected = 0;
	e->watching = false;
	pthread_mutex_unlock(&e->lock);
}

int bm_etcd_health(struct bm_etcd *e, int *connected, time_t *last_ok)
{
	pthread_mutex_lock(&e->lock);
	*connected = e->connected > 0;
	/* An open watch stream is a live link even when nothing changes. */
	*last_ok = e->connected > 0 && e->watching ? time(NULL) : e->last_ok;
	pthread_mutex_unlock(&e->lock);
	return 0;
}

/* ---------------------------------------------------------------- requests */

static size_t buf_write(char *data, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;
	size_t add = size * n;

	if (b->len + add + 1 > MAX_RESPONSE)
		return 0; /* CURLE_WRITE_ERROR */
	if (b->len + add + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + add + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return 0;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, add);
	b->len += add;
	b->p[b->len] = '\0';
	return add;
}

static void set_common(struct bm_etcd *e, CURL *h, char *errbuf)
{
	bm_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1L);
	bm_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
	/* etcd is cluster-internal: an http_proxy in the environment is not for it. */
	bm_curl_setopt_ptr(h, CURLOPT_PROXY, "");
	bm_curl_setopt_ptr(h, CURLOPT_HTTPHEADER, e->headers);
	bm_curl_setopt_ptr(h, CURLOPT_ERRORBUFFER, errbuf);
	bm_curl_setopt_write(h, CURLOPT_WRITEFUNCTION, buf_write);
}

static int curl_to_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT: return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT: return -ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST: return -EHOSTUNREACH;
	case CURLE_WRITE_ERROR: return -EFBIG;
	case CURLE_OUT_OF_MEMORY: return -ENOMEM;
	default: return -EIO;
	}
}

/* gRPC status codes (the gateway's "code") to errno. */
static int grpc_to_errno(int64_t code)
{
	switch (code) {
	case 3: return -EINVAL;       /* InvalidArgument: too many ops, duplicate key */
	case 4: return -ETIMEDOUT;    /* DeadlineExceeded */
	case 5: return -ENOENT;
	case 7: case 16: return -EACCES;
	case 8: return -E2BIG;        /* ResourceExhausted: request too large */
	case 11: return -ERANGE;      /* OutOfRange: revision compacted */
	case 14: return -EAGAIN;      /* Unavailable: no leader */
	default: return -EPROTO;
	}
}

/* POST /v3/<path> with a JSON body; *resp the decoded answer. A request that
 * may have reached etcd moves to the next endpoint only when `resend` (reads):
 * a transaction must not risk being applied twice. */
static int etcd_post(struct bm_etcd *e, const char *path, json_t *req, json_t **resp,
		     bool resend)
{
	char *body = json_dumps(req, JSON_COMPACT), url[512];
	struct buf b = { 0 };
	CURLcode cc = CURLE_OK;
	int ep = e->cur, r = 0;
	long code = 0;
	json_t *j = NULL;

	*resp = NULL;
	if (!body)
		return -ENOMEM;
	set_common(e, e->h, e->errbuf);
	bm_curl_setopt_ptr(e->h, CURLOPT_POSTFIELDS, body);
	bm_curl_setopt_long(e->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	bm_curl_setopt_long(e->h, CURLOPT_TIMEOUT_MS, (long)REQUEST_TIMEOUT_MS);
	bm_curl_setopt_ptr(e->h, CURLOPT_WRITEDATA, &b);
	for (int i = 0; i < e->n_endpoints; i++) {
		long sent = 0;

		ep = (e->cur + i) % e->n_endpoints;
		snprintf(url, sizeof(url), "http://%s/v3/%s", e->endpoints[ep], path);
		bm_curl_setopt_ptr(e->h, CURLOPT_URL, url);
		b.len = 0;
		e->errbuf[0] = '\0';
		cc = bm_curl_easy_perform(e->h);
		if (cc == CURLE_OK) {
			bm_curl_getinfo_long(e->h, CURLINFO_RESPONSE_CODE, &code);
			j = json_loadb(b.p ? b.p : "", b.len, JSON_DISABLE_EOF_CHECK, NULL);
			/* A member without quorum: another member may have it. */
			if (!(code == 503 || jint(json_object_get(j, "code")) == 14) ||
			    i + 1 == e->n_endpoints)
				break;
			json_decref(j);
			j = NULL;
			continue;
		}
		bm_curl_getinfo_long(e->h, CURLINFO_REQUEST_SIZE, &sent);
		if (!resend && sent > 0 && cc != CURLE_COULDNT_CONNECT)
			break;
	}
	free(body);
	if (cc != CURLE_OK) {
		note_unreachable(e, path, e->errbuf[0] ? e->errbuf : bm_curl_easy_strerror(cc));
		r = curl_to_errno(cc);
		goto out;
	}
	e->cur = ep;
	note_ok(e);
	if (!json_is_object(j)) {
		fprintf(stderr, "bpfmesh store: etcd %s: POST /v3/%s: HTTP %ld, answer is not JSON%s\n",
			e->endpoints[ep], path, code, code == 404 ?
			" (etcd 3.4 or newer, with its gRPC gateway, is needed)" : "");
		r = -EPROTO;
	} else if (code != 200 || json_object_get(j, "error")) {
		const char *msg = json_string_value(json_object_get(j, "message"));
		int64_t gcode = jint(json_object_get(j, "code"));

		r = grpc_to_errno(gcode);
		fprintf(stderr, "bpfmesh store: etcd %s: POST /v3/%s: %s (HTTP %ld)%s\n",
			e->endpoints[ep], path, msg ? msg : "error", code,
			msg && strstr(msg, "too many operations") ?
			"; apply fewer resources at once or raise etcd --max-txn-ops" :
			r == -E2BIG ? "; raise etcd --max-request-bytes" : "");
	} else {
		*resp = json_incref(j);
	}
out:
	json_decref(j);
	free(b.p);
	return r;
}

/* A read-only transaction: every range in ops at one revision. *rev (may be
 * NULL) gets that revision. */
static int read_txn(struct bm_etcd *e, json_t *ops, json_t **responses, int64_t *rev)
{
	json_t *req = json_pack("{s:o}", "success", ops), *resp = NULL;
	int r;

	*responses = NULL;
	if (!req)
		return -ENOMEM;
	r = etcd_post(e, "kv/txn", req, &resp, true);
	json_decref(req);
	if (r)
		return r;
	*responses = json_incref(json_object_get(resp, "responses"));
	if (rev)
		*rev = jint(json_object_get(json_object_get(resp, "header"), "revision"));
	json_decref(resp);
	if (!json_is_array(*responses)) {
		fprintf(stderr, "bpfmesh store: etcd %s: transaction answer without responses\n",
			e->url);
		json_decref(*responses);
		*responses = NULL;
		return -EPROTO;
	}
	return 0;
}

/* The kvs of the i-th response of a read transaction (empty when none). */
static json_t *range_kvs(json_t *responses, size_t i)
{
	return json_object_get(json_object_get(json_array_get(responses, i), "response_range"),
			       "kvs");
}

/* The generation key's value (0 when absent) and mod_revision. */
static int parse_generation(struct bm_etcd *e, json_t *kvs, uint64_t *gen, int64_t *mod)
{
	json_t *kv = json_array_get(kvs, 0);
	size_t len = 0;
	char *v, *end;
	int r = 0;

	*gen = 0;
	*mod = 0;
	if (!kv)
		return 0;
	*mod = jint(json_object_get(kv, "mod_revision"));
	v = b64_decode(json_string_value(json_object_get(kv, "value")), &len);
	errno = 0;
	*gen = v ? strtoull(v, &end, 10) : 0;
	if (!v || !len || errno || (*end && strcmp(end, "\n"))) {
		fprintf(stderr, "bpfmesh store: etcd %s: key %s is not a decimal generation\n",
			e->url, e->gen_key);
		r = -EBADMSG;
	}
	free(v);
	return r;
}

/* ---------------------------------------------------------------- apply */

/* Transaction outcome: 0, COMPARE_FAILED, or a negative errno. */
static int commit(struct bm_etcd *e, json_t *compare, json_t *success)
{
	json_t *req = json_pack("{s:o,s:o}", "compare", compare, "success", success), *resp = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	if (bm_etcd_test_before_commit)
		bm_etcd_test_before_commit(bm_etcd_test_arg);
	r = etcd_post(e, "kv/txn", req, &resp, false);
	json_decref(req);
	if (!r && !json_is_true(json_object_get(resp, "succeeded")))
		r = COMPARE_FAILED;
	json_decref(resp);
	return r;
}

static char *resource_key(struct bm_etcd *e, const char *kind, const char *ns, const char *name)
{
	char *k;

	return asprintf(&k, "%s%s/%s/%s", e->res_prefix, kind, ns, name) < 0 ? NULL : k;
}

/* One read-compute-commit round. keys[i] is resources[i]'s key; ukeys the
 * distinct keys (a document set may name one resource twice: the later
 * document then sees the earlier one, as with the file store). */
static int apply_once(struct bm_etcd *e, json_t *resources, char **keys, char **ukeys,
		      size_t nu, json_t *out, bool dry)
{
	json_t *ops = json_array(), *responses = NULL, *current = json_object(), *dirty = json_object();
	json_t *compare = json_array(), *puts = json_array(), *res;
	uint64_t gen;
	int64_t gen_mod;
	bool changed = false;
	size_t i;
	int r = -ENOMEM;

	if (!ops || !current || !dirty || !compare || !puts)
		goto out;
	json_array_append_new(ops, op_range(e->gen_key, NULL));
	for (i = 0; i < nu; i++)
		json_array_append_new(ops, op_range(ukeys[i], NULL));
	r = read_txn(e, json_incref(ops), &responses, NULL);
	if (r)
		goto out;
	r = parse_generation(e, range_kvs(responses, 0), &gen, &gen_mod);
	if (r)
		goto out;
	r = -ENOMEM;
	if (json_array_append_new(compare, cmp_mod(e->gen_key, gen_mod)))
		goto out;
	for (i = 0; i < nu; i++) {
		json_t *kv = json_array_get(range_kvs(responses, i + 1), 0);
		size_t len;
		char *v = kv ? b64_decode(json_string_value(json_object_get(kv, "value")), &len)
			     : NULL;

		/* Absent keys compare as mod_revision 0: created by nobody else. */
		if (json_array_append_new(compare, cmp_mod(ukeys[i], jint(json_object_get(
							   kv, "mod_revision"))))) {
			free(v);
			goto out;
		}
		/* A stored value that no longer reads is replaced, not trusted. */
		if (v)
			json_object_set_new(current, ukeys[i], json_loadb(v, len, 0, NULL));
		free(v);
	}
	json_array_clear(out);
	json_array_foreach(resources, i, res) {
		json_t *old = json_object_get(current, keys[i]), *stamped;
		const char *action = !json_is_object(old) ? "created" :
				     bm_store_same_content(old, res) ? "unchanged" : "configured";

		if (strcmp(action, "unchanged")) {
			stamped = bm_store_stamp(res, old, gen + 1);
			if (!stamped || json_object_set_new(current, keys[i], stamped) ||
			    json_object_set_new(dirty, keys[i], json_true()))
				goto out;
			changed = true;
		}
		if (json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "kind",
							 bm_res_kind(res), "namespace",
							 bm_res_namespace(res), "name",
							 bm_res_name(res), "action", action)))
			goto out;
	}
	r = 0;
	if (dry || !changed)
		goto out;
	/* Final content per key, each put once: etcd refuses a key twice. */
	for (i = 0; i < nu; i++) {
		json_t *obj = json_object_get(current, ukeys[i]);
		char *text;

		if (!json_object_get(dirty, ukeys[i]))
			continue; /* unchanged */
		text = json_dumps(obj, JSON_COMPACT);
		r = text ? json_array_append_new(puts, op_put(ukeys[i], text)) : -1;
		free(text);
		if (r) {
			r = -ENOMEM;
			goto out;
		}
	}
	{
		char g[24];

		snprintf(g, sizeof(g), "%" PRIu64, gen + 1);
		/* In the same transaction: the bump and the resources land together. */
		if (json_array_append_new(puts, op_put(e->gen_key, g))) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = commit(e, json_incref(compare), json_incref(puts));
out:
	json_decref(ops);
	json_decref(responses);
	json_decref(current);
	json_decref(dirty);
	json_decref(compare);
	json_decref(puts);
	return r;
}

int bm_etcd_apply(struct bm_etcd *e, json_t *resources, json_t **results, bool dry)
{
	size_t n = json_array_size(resources), nu = 0, i;
	char **keys = calloc(n + 1, sizeof(*keys)), **ukeys = calloc(n + 1, sizeof(*ukeys));
	json_t *out = json_array(), *res;
	int r = -ENOMEM;

	if (!keys || !ukeys || !out)
		goto out;
	json_array_foreach(resources, i, res) {
		const struct bm_kind *k;
		const char *ns, *name;
		bool seen = false;

		r = bm_store_res_identity(res, &k, &ns, &name);
		if (r)
			goto out;
		keys[i] = resource_key(e, k->kind, ns, name);
		if (!keys[i]) {
			r = -ENOMEM;
			goto out;
		}
		for (size_t j = 0; j < nu && !seen; j++)
			seen = !strcmp(ukeys[j], keys[i]);
		if (!seen)
			ukeys[nu++] = keys[i];
	}
	if (nu + 1 > MAX_TXN_OPS) {
		fprintf(stderr, "bpfmesh store: etcd %s: %zu resources in one apply; one etcd "
			"transaction holds at most %d (etcd --max-txn-ops): apply them in parts\n",
			e->url, nu, MAX_TXN_OPS - 1);
		r = -E2BIG;
		goto out;
	}
	for (int attempt = 0; attempt < APPLY_ATTEMPTS; attempt++) {
		r = apply_once(e, resources, keys, ukeys, nu, out, dry);
		if (r != COMPARE_FAILED)
			break;
		usleep(1000u << attempt); /* 1 ms doubling: let the other writer finish */
	}
	if (r == COMPARE_FAILED) {
		fprintf(stderr, "bpfmesh store: etcd %s: other writers kept changing the store; "
			"gave up after %d attempts, nothing applied\n", e->url, APPLY_ATTEMPTS);
		r = -EBUSY;
	}
	if (!r && results)
		*results = json_incref(out);
out:
	for (i = 0; keys && i < n; i++)
		free(keys[i]);
	free(keys);
	free(ukeys);
	json_decref(out);
	return r;
}

int bm_etcd_delete(struct bm_etcd *e, const struct bm_kind *k, const char *ns, const char *name)
{
	char *key = resource_key(e, k->kind, ns, name), g[24];
	int r = -ENOMEM;

	if (!key)
		return -ENOMEM;
	for (int attempt = 0; attempt < APPLY_ATTEMPTS; attempt++) {
		json_t *responses = NULL, *kv;
		uint64_t gen;
		int64_t gen_mod;

		r = read_txn(e, json_pack("[o,o]", op_range(e->gen_key, NULL), op_range(key, NULL)),
			     &responses, NULL);
		if (!r)
			r = parse_generation(e, range_kvs(responses, 0), &gen, &gen_mod);
		kv = json_array_get(range_kvs(responses, 1), 0);
		if (!r && !kv)
			r = -ENOENT;
		if (!r) {
			snprintf(g, sizeof(g), "%" PRIu64, gen + 1);
			r = commit(e, json_pack("[o,o]", cmp_mod(e->gen_key, gen_mod),
						cmp_mod(key, jint(json_object_get(kv, "mod_revision")))),
				   json_pack("[{s:{s:o}},o]", "request_delete_range", "key",
					     jkey(key), op_put(e->gen_key, g)));
		}
		json_decref(responses);
		if (r != COMPARE_FAILED)
			break;
		usleep(1000u << attempt);
	}
	if (r == COMPARE_FAILED) {
		fprintf(stderr, "bpfmesh store: etcd %s: other writers kept changing the store; "
			"gave up deleting %s\n", e->url, key);
		r = -EBUSY;
	}
	free(key);
	return r;
}

/* ---------------------------------------------------------------- read */

static int res_order(const json_t *a, const json_t *b)
{
	const struct bm_kind *ka = bm_kind_find(bm_res_kind(a)), *kb = bm_kind_find(bm_res_kind(b));
	int c;

	if (ka != kb)
		return ka < kb ? -1 : 1; /* table order, as the file store lists */
	c = strcmp(bm_res_namespace(a), bm_res_namespace(b));
	return c ? c : strcmp(bm_res_name(a), bm_res_name(b));
}

static int cmp_res(const void *a, const void *b)
{
	return res_order(*(json_t *const *)a, *(json_t *const *)b);
}

/* One stored key/value: checked like a file (its key must name what it
 * holds), appended to out, or reported in skipped. */
static int load_kv(struct bm_etcd *e, json_t *kv, const char *ns_filter,
		   const char *name_filter, json_t *out, struct bm_errlist *skipped)
{
	size_t klen, vlen;
	char *key = b64_decode(json_string_value(json_object_get(kv, "key")), &klen);
	char *val = NULL, *where = NULL, *parts[3] = { 0 }, *save = NULL, *rest;
	const struct bm_kind *k;
	json_t *res = NULL;
	int n = 0, r = 0;

	if (!key || asprintf(&where, "etcd:%s", key) < 0) {
		free(key);
		return -ENOMEM;
	}
	rest = key + strlen(e->res_prefix);
	for (char *t = strtok_r(rest, "/", &save); t; t = strtok_r(NULL, "/", &save))
		if (n++ < 3)
			parts[n - 1] = t;
	k = n == 3 ? bm_kind_find(parts[0]) : NULL;
	if (n != 3 || !k || !k->spec || !bm_is_dns1123_label(parts[1]) ||
	    !bm_is_dns1123_subdomain(parts[2])) {
		bm_errlist_add(skipped, where, 0, NULL, "not a key %s<Kind>/<namespace>/<name> of a "
			       "supported kind, skipped", e->res_prefix);
		goto out;
	}
	if ((ns_filter && strcmp(parts[1], ns_filter)) ||
	    (name_filter && strcmp(parts[2], name_filter)))
		goto out;
	val = b64_decode(json_string_value(json_object_get(kv, "value")), &vlen);
	if (!val) {
		bm_errlist_add(skipped, where, 0, NULL, "value is not base64, skipped");
		goto out;
	}
	res = bm_store_load_text(val, vlen, where, k->kind, parts[1], parts[2], skipped);
	if (res && json_array_append_new(out, res))
		r = -ENOMEM;
out:
	free(key);
	free(val);
	free(where);
	return r;
}

int bm_etcd_list(struct bm_etcd *e, const struct bm_kind *only, const char *ns,
		 const char *name, json_t **out_array, uint64_t *generation)
{
	struct bm_errlist skipped = { 0 };
	json_t *responses = NULL, *kvs, *kv, *arr = json_array();
	char *from = NULL, *to = NULL;
	bool exact = only && ns && name;
	uint64_t gen;
	int64_t gen_mod, rev = 0;
	size_t i, n;
	int r = 0;

	*out_array = NULL;
	if (!arr)
		return -ENOMEM;
	/* The narrowest prefix the filters allow; ns alone is filtered below. */
	if (exact)
		from = resource_key(e, only->kind, ns, name);
	else if (only && ns)
		r = asprintf(&from, "%s%s/%s/", e->res_prefix, only->kind, ns);
	else if (only)
		r = asprintf(&from, "%s%s/", e->res_prefix, only->kind);
	else
		from = strdup(e->res_prefix);
	if (r < 0)
		from = NULL;
	if (!from || (!exact && !(to = prefix_end(from)))) {
		r = -ENOMEM;
		goto out;
	}
	r = read_txn(e, json_pack("[o,o]", op_range(e->gen_key, NULL), op_range(from, to)),
		     &responses, &rev);
	if (!r)
		r = parse_generation(e, range_kvs(responses, 0), &gen, &gen_mod);
	if (r)
		goto out;
	kvs = range_kvs(responses, 1);
	json_array_foreach(kvs, i, kv) {
		r = load_kv(e, kv, only ? NULL : ns, name, arr, &skipped);
		if (r)
			goto out;
	}
	/* Keys sort by kind name; the file store (and meshctl get) list in kind
	 * table order. */
	n = json_array_size(arr);
	if (n > 1) {
		json_t **v = malloc(n * sizeof(*v));

		if (!v) {
			r = -ENOMEM;
			goto out;
		}
		for (i = 0; i < n; i++)
			v[i] = json_incref(json_array_get(arr, i));
		qsort(v, n, sizeof(*v), cmp_res);
		json_array_clear(arr);
		for (i = 0; i < n; i++)
			json_array_append_new(arr, v[i]);
		free(v);
	}
	bm_errlist_print(&skipped, stderr);
	e->list_rev = rev;
	pthread_mutex_lock(&e->lock);
	if (rev >= e->gen_rev) {
		e->gen = gen;
		e->gen_rev = rev;
	}
	pthread_mutex_unlock(&e->lock);
	*out_array = json_incref(arr);
	if (generation)
		*generation = gen;
out:
	bm_errlist_free(&skipped);
	json_decref(responses);
	json_decref(arr);
	free(from);
	free(to);
	return r;
}

int bm_etcd_generation(struct bm_etcd *e, uint64_t *gen)
{
	json_t *resp = NULL, *req;
	int64_t mod;
	int r;

	/* Kept current by the watch: an agent polling this costs etcd nothing. */
	pthread_mutex_lock(&e->lock);
	if (e->watching && e->connected > 0 && e->gen_rev && e->gen_rev + 1 >= e->watch_from) {
		*gen = e->gen;
		pthread_mutex_unlock(&e->lock);
		return 0;
	}
	pthread_mutex_unlock(&e->lock);
	req = json_pack("{s:o}", "key", jkey(e->gen_key));
	if (!req)
		return -ENOMEM;
	r = etcd_post(e, "kv/range", req, &resp, true);
	json_decref(req);
	if (!r)
		r = parse_generation(e, json_object_get(resp, "kvs"), gen, &mod);
	json_decref(resp);
	return r;
}

/* ---------------------------------------------------------------- key/value */

/* Records live under <prefix>/kv/, beside resources/ and generation. */
static char *kv_key(struct bm_etcd *e, const char *key)
{
	char *k;

	return asprintf(&k, "%s/kv/%s", e->prefix, key) < 0 ? NULL : k;
}

/* Is full_key a key/value record (not a resource or the generation)? */
static bool kv_key_of(struct bm_etcd *e, const char *full_key)
{
	size_t n = strlen(e->prefix);

	return !strncmp(full_key, e->prefix, n) && !strncmp(full_key + n, "/kv/", 4);
}

int bm_etcd_kv_put(struct bm_etcd *e, const char *key, const char *value)
{
	char *k = kv_key(e, key);
	json_t *req, *resp = NULL;
	char *kb, *vb;
	int r = -ENOMEM;

	if (!k)
		return -ENOMEM;
	kb = b64_encode(k, strlen(k));
	vb = b64_encode(value, strlen(value));
	req = kb && vb ? json_pack("{s:s,s:s}", "key", kb, "value", vb) : NULL;
	if (req)
		r = etcd_post(e, "kv/put", req, &resp, false);
	json_decref(req);
	json_decref(resp);
	free(kb);
	free(vb);
	free(k);
	return r;
}

int bm_etcd_kv_get(struct bm_etcd *e, const char *key, char **value)
{
	char *k = kv_key(e, key);
	json_t *req, *resp = NULL, *kv;
	size_t len = 0;
	int r = -ENOMEM;

	*value = NULL;
	if (!k)
		return -ENOMEM;
	req = json_pack("{s:o}", "key", jkey(k));
	if (req)
		r = etcd_post(e, "kv/range", req, &resp, true);
	json_decref(req);
	if (!r) {
		kv = json_array_get(json_object_get(resp, "kvs"), 0);
		if (!kv)
			r = -ENOENT;
		else if (!(*value = b64_decode(json_string_value(json_object_get(kv, "value")), &len)))
			r = -EBADMSG;
	}
	json_decref(resp);
	free(k);
	return r;
}

int bm_etcd_kv_del(struct bm_etcd *e, const char *key)
{
	char *k = kv_key(e, key);
	json_t *req, *resp = NULL;
	int r = -ENOMEM;

	if (!k)
		return -ENOMEM;
	req = json_pack("{s:o}", "key", jkey(k));
	if (req)
		r = etcd_post(e, "kv/deleterange", req, &resp, false);
	json_decref(req);
	/* etcd serialises deletes: only one caller sees deleted = 1. */
	if (!r && jint(json_object_get(resp, "deleted")) != 1)
		r = -ENOENT;
	json_decref(resp);
	free(k);
	return r;
}

/* ---------------------------------------------------------------- watch */

struct stream {
	struct bm_etcd *e;
	struct buf b;
	bool created, failed;
	uint64_t last_data;
};

static void wake_reader(struct bm_etcd *e)
{
	/* A full pipe already says "changed". */
	if (write(e->pipe[1], "c", 1) < 0 && errno != EAGAIN)
		fprintf(stderr, "bpfmesh store: etcd watch: write to pipe: %s\n", strerror(errno));
}

/* One message of the stream. false: end this stream. */
static bool watch_message(struct stream *st, json_t *msg)
{
	struct bm_etcd *e = st->e;
	json_t *res = json_object_get(msg, "result"), *ev, *evt;
	int64_t compacted = jint(json_object_get(res, "compact_revision"));
	bool relevant = false;
	size_t i;

	if (!res) {
		const char *m = json_string_value(json_object_get(msg, "message"));

		fprintf(stderr, "bpfmesh store: etcd %s watch: %s\n", e->url, m ? m : "bad message");
		st->failed = true;
		return false;
	}
	if (json_is_true(json_object_get(res, "created"))) {
		st->created = true;
		pthread_mutex_lock(&e->lock);
		/* From now: a gap since whatever was seen before. */
		if (!e->watch_rev)
			e->watch_rev = e->watch_from = jint(json_object_get(
				json_object_get(res, "header"), "revision")) + 1;
		e->watching = true;
		pthread_mutex_unlock(&e->lock);
		note_ok(e);
		if (e->signal_created)
			wake_reader(e);
		e->signal_created = true;
	}
	if (compacted > 0) {
		fprintf(stderr, "bpfmesh store: etcd %s watch: revision %" PRId64 " compacted "
			"(oldest now %" PRId64 "); watching from the present, full re-list\n",
			e->url, e->watch_rev, compacted);
		pthread_mutex_lock(&e->lock);
		e->watch_rev = 0;
		e->relist = true;
		pthread_mutex_unlock(&e->lock);
		wake_reader(e);
		return false;
	}
	if (json_is_true(json_object_get(res, "canceled"))) {
		const char *why = json_string_value(json_object_get(res, "cancel_reason"));

		fprintf(stderr, "bpfmesh store: etcd %s watch canceled: %s\n", e->url,
			why ? why : "no reason given");
		st->failed = true;
		return false;
	}
	ev = json_object_get(res, "events");
	if (!json_array_size(ev))
		return true;
	pthread_mutex_lock(&e->lock);
	json_array_foreach(ev, i, evt) {
		json_t *kv = json_object_get(evt, "kv");
		int64_t mod = jint(json_object_get(kv, "mod_revision"));
		size_t klen, vlen;
		char *key = b64_decode(json_string_value(json_object_get(kv, "key")), &klen);

		if (mod >= e->watch_rev)
			e->watch_rev = mod + 1;
		/* Key/value records (join tokens) are not configuration: a
		 * token used by the CA must not make every agent re-list. */
		if (!key || !kv_key_of(e, key))
			relevant = true;
		if (key && !strcmp(key, e->gen_key)) {
			char *v = b64_decode(json_string_value(json_object_get(kv, "value")), &vlen);

			/* A deleted generation key reads as 0, like a fresh store. */
			e->gen = v ? strtoull(v, NULL, 10) : 0;
			e->gen_rev = mod;
			free(v);
		}
		free(key);
	}
	pthread_mutex_unlock(&e->lock);
	if (relevant)
		wake_reader(e);
	return true;
}

/* The gateway ends every message with a newline, and compact JSON has none
 * inside: split on them. */
static size_t stream_write(char *data, size_t size, size_t n, void *arg)
{
	struct stream *st = arg;
	size_t add = size * n, off = 0;
	char *nl;

	if (buf_write(data, size, n, &st->b) != add)
		return 0;
	st->last_data = now_ms();
	while ((nl = memchr(st->b.p + off, '\n', st->b.len - off))) {
		json_t *msg = json_loadb(st->b.p + off, (size_t)(nl - st->b.p - off), 0, NULL);
		bool go_on = msg ? watch_message(st, msg) : false;

		if (!msg)
			fprintf(stderr, "bpfmesh store: etcd %s watch: message is not JSON\n",
				st->e->url);
		json_decref(msg);
		off = (size_t)(nl - st->b.p) + 1;
		if (!go_on)
			return 0; /* abort the transfer */
	}
	memmove(st->b.p, st->b.p + off, st->b.len - off);
	st->b.len -= off;
	return add;
}

/* One watch stream against endpoint ep until it ends, fails or we stop. An
 * idle stream is probed with a range request: silence must mean "nothing
 * changed", not "etcd hangs". 0 after a stream that was established. */
static int watch_stream(struct bm_etcd *e, CURL *h, CURL *probe, int ep)
{
	char url[512], purl[512], errbuf[CURL_ERROR_SIZE] = "", perr[CURL_ERROR_SIZE] = "";
	char *wkey = NULL, *wend = NULL, *body = NULL, *pbody = NULL;
	struct stream st = { .e = e };
	struct buf pb = { 0 };
	uint64_t started = now_ms(), probe_at = 0;
	bool probing = false;
	const char *why = NULL;
	json_t *req;
	int r = -ENOMEM;

	if (asprintf(&wkey, "%s/", e->prefix) < 0 || !(wend = prefix_end(wkey)))
		goto out;
	pthread_mutex_lock(&e->lock);
	req = json_pack("{s:{s:o,s:o}}", "create_request", "key", jkey(wkey), "range_end",
			jkey(wend));
	if (req && e->watch_rev)
		json_object_set_new(json_object_get(req, "create_request"), "start_revision",
				    jrev(e->watch_rev));
	pthread_mutex_unlock(&e->lock);
	body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	req = json_pack("{s:o,s:b}", "key", jkey(e->gen_key), "count_only", 1);
	pbody = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!body || !pbody)
		goto out;
	snprintf(url, sizeof(url), "http://%s/v3/watch", e->endpoints[ep]);
	snprintf(purl, sizeof(purl), "http://%s/v3/kv/range", e->endpoints[ep]);
	bm_curl_easy_reset(h);
	set_common(e, h, errbuf);
	bm_curl_setopt_ptr(h, CURLOPT_URL, url);
	bm_curl_setopt_ptr(h, CURLOPT_POSTFIELDS, body);
	bm_curl_setopt_write(h, CURLOPT_WRITEFUNCTION, stream_write);
	bm_curl_setopt_ptr(h, CURLOPT_WRITEDATA, &st);
	bm_curl_multi_add_handle(e->wm, h);
	st.last_data = started;
	while (!atomic_load(&e->stop)) {
		CURLMsg *m;
		int running, q;
		uint64_t now;

		bm_curl_multi_perform(e->wm, &running);
		while ((m = bm_curl_multi_info_read(e->wm, &q))) {
			long code = 0;

			if (m->msg != CURLMSG_DONE)
				continue;
			if (m->easy_handle == h) {
				why = m->data.result == CURLE_OK ? "closed by etcd" :
				      errbuf[0] ? errbuf : bm_curl_easy_strerror(m->data.result);
				continue;
			}
			bm_curl_getinfo_long(probe, CURLINFO_RESPONSE_CODE, &code);
			bm_curl_multi_remove_handle(e->wm, probe);
			probing = false;
			if (m->data.result != CURLE_OK || code != 200) {
				snprintf(perr + strlen(perr), sizeof(perr) - strlen(perr),
					 " (HTTP %ld)", code);
				why = perr;
			} else {
				st.last_data = now_ms();
			}
		}
		if (why)
			break;
		now = now_ms();
		if (!st.created && now - started > REQUEST_TIMEOUT_MS) {
			why = "no answer to the watch request";
			break;
		}
		if (st.created && !probing && now - st.last_data >= WATCH_IDLE_PROBE_MS &&
		    now - probe_at >= WATCH_IDLE_PROBE_MS) {
			bm_curl_easy_reset(probe);
			set_common(e, probe, perr);
			perr[0] = '\0';
			pb.len = 0;
			bm_curl_setopt_ptr(probe, CURLOPT_URL, purl);
			bm_curl_setopt_ptr(probe, CURLOPT_POSTFIELDS, pbody);
			bm_curl_setopt_long(probe, CURLOPT_TIMEOUT_MS, (long)REQUEST_TIMEOUT_MS);
			bm_curl_setopt_ptr(probe, CURLOPT_WRITEDATA, &pb);
			bm_curl_multi_add_handle(e->wm, probe);
			probing = true;
			probe_at = now;
		}
		bm_curl_multi_poll(e->wm, NULL, 0, 200, NULL);
	}
	if (probing)
		bm_curl_multi_remove_handle(e->wm, probe);
	bm_curl_multi_remove_handle(e->wm, h);
	r = st.created ? 0 : -ECONNREFUSED;
	if (atomic_load(&e->stop))
		goto out;
	pthread_mutex_lock(&e->lock);
	e->watching = false;
	pthread_mutex_unlock(&e->lock);
	if (!st.created && !st.failed)
		note_unreachable(e, "watch", why ? why : "stream failed");
	else if (why == perr)
		note_unreachable(e, "watch liveness check", perr);
	else if (why && !st.failed && strcmp(why, "closed by etcd"))
		fprintf(stderr, "bpfmesh store: etcd %s watch stream: %s; resuming from "
			"revision %" PRId64 "\n", e->endpoints[ep], why, e->watch_rev);
out:
	free(st.b.p);
	free(pb.p);
	free(wkey);
	free(wend);
	free(body);
	free(pbody);
	return r;
}

static void *watch_main(void *arg)
{
	struct bm_etcd *e = arg;
	CURL *h = bm_curl_easy_init(), *probe = bm_curl_easy_init();
	unsigned backoff = 100;
	int ep = e->watch_ep;

	if (!h || !probe) {
		fprintf(stderr, "bpfmesh store: etcd watch: out of memory; changes are seen "
			"only by polling\n");
		goto out;
	}
	while (!atomic_load(&e->stop)) {
		if (!watch_stream(e, h, probe, ep)) {
			backoff = 100;
		} else {
			/* Next endpoint, slower and slower, up to WATCH_BACKOFF_MAX_MS. */
			ep = (ep + 1) % e->n_endpoints;
			backoff = backoff * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS
								     : backoff * 2;
		}
		if (!atomic_load(&e->stop))
			bm_curl_multi_poll(e->wm, NULL, 0, (int)backoff, NULL);
	}
out:
	if (h)
		bm_curl_easy_cleanup(h);
	if (probe)
		bm_curl_easy_cleanup(probe);
	return NULL;
}

int bm_etcd_watch_fd(struct bm_etcd *e)
{
	int r;

	if (e->thread_started)
		return e->pipe[0];
	if (pipe2(e->pipe, O_NONBLOCK | O_CLOEXEC)) {
		r = -errno;
		fprintf(stderr, "bpfmesh store: pipe2 for the etcd watch: %s\n", strerror(errno));
		return r;
	}
	e->wm = bm_curl_multi_init();
	if (!e->wm)
		return -ENOMEM;
	/* From just after what the reader last listed: nothing in between is
	 * missed. Never listed: from now, and the first stream is news. */
	e->watch_rev = e->watch_from = e->list_rev ? e->list_rev + 1 : 0;
	e->signal_created = !e->list_rev;
	e->watch_ep = e->cur;
	r = -pthread_create(&e->thread, NULL, watch_main, e);
	if (r) {
		fprintf(stderr, "bpfmesh store: etcd watch thread: %s\n", strerror(-r));
		return r;
	}
	e->thread_started = true;
	return e->pipe[0];
}

int bm_etcd_watch_ack(struct bm_etcd *e)
{
	char buf[256];
	ssize_t n;
	int r = 0;

	if (e->pipe[0] < 0)
		return -EBADF;
	while ((n = read(e->pipe[0], buf, sizeof(buf))) > 0)
		r = BM_STORE_CHANGED;
	pthread_mutex_lock(&e->lock);
	if (e->relist) {
		e->relist = false;
		r = BM_STORE_RELIST;
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}
