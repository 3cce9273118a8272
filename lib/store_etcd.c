/* etcd v3 store: the resources, generation and validation of the file store
 * (store.h), kept in etcd and reached through its JSON gateway (POST /v3/...)
 * with libcurl. This file: opening, health, requests, reads and key/value
 * records; writes are in store_etcd_apply.c, the watch in store_etcd_watch.c.
 *
 * Keys: <prefix>/resources/<Kind>/<ns>/<name> -> the canonical resource as
 * compact JSON; <prefix>/generation -> the decimal store generation. Keys and
 * values travel base64-encoded, int64 fields as JSON strings (proto3 JSON).
 *
 * Reads are one read-only transaction, so the generation and the resources
 * come from one revision.
 *
 * Several endpoints are tried in order, starting with the last that answered;
 * a write moves on only when it was not sent, so it is never applied twice. */
#include <errno.h>
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
#include "store_etcd_int.h"

#define CONNECT_TIMEOUT_MS 1000
#define MAX_RESPONSE (256u << 20)
#define ERROR_REPEAT_S 30     /* "still unreachable" at most this often */

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
char *etcd_b64_decode(const char *s, size_t *len)
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
int64_t etcd_jint(const json_t *v)
{
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

json_t *etcd_jkey(const char *key)
{
	char *b = b64_encode(key, strlen(key));
	json_t *j = b ? json_string(b) : NULL;

	free(b);
	return j;
}

json_t *etcd_jrev(int64_t rev)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRId64, rev);
	return json_string(buf);
}

/* The smallest key above every key starting with prefix. */
char *etcd_prefix_end(const char *prefix)
{
	char *end = strdup(prefix);

	if (end)
		end[strlen(end) - 1]++;
	return end;
}

json_t *etcd_op_range(const char *key, const char *end)
{
	json_t *r = json_pack("{s:o}", "key", etcd_jkey(key));

	if (r && end)
		json_object_set_new(r, "range_end", etcd_jkey(end));
	return json_pack("{s:o}", "request_range", r);
}

json_t *etcd_op_put(const char *key, const char *value)
{
	char *b = b64_encode(value, strlen(value));
	json_t *op = b ? json_pack("{s:{s:o,s:s}}", "request_put", "key", etcd_jkey(key), "value", b)
		       : NULL;

	free(b);
	return op;
}

json_t *etcd_cmp_mod(const char *key, int64_t rev)
{
	return json_pack("{s:s,s:o,s:o,s:s}", "target", "MOD", "key", etcd_jkey(key), "mod_revision",
			 etcd_jrev(rev), "result", "EQUAL");
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

void etcd_note_ok(struct bm_etcd *e)
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
void etcd_note_unreachable(struct bm_etcd *e, const char *what, const char *detail)
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

size_t etcd_buf_write(char *data, size_t size, size_t n, void *arg)
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

void etcd_set_common(struct bm_etcd *e, CURL *h, char *errbuf)
{
	bm_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1L);
	bm_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
	/* etcd is cluster-internal: an http_proxy in the environment is not for it. */
	bm_curl_setopt_ptr(h, CURLOPT_PROXY, "");
	bm_curl_setopt_ptr(h, CURLOPT_HTTPHEADER, e->headers);
	bm_curl_setopt_ptr(h, CURLOPT_ERRORBUFFER, errbuf);
	bm_curl_setopt_write(h, CURLOPT_WRITEFUNCTION, etcd_buf_write);
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
int etcd_post(struct bm_etcd *e, const char *path, json_t *req, json_t **resp,
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
	etcd_set_common(e, e->h, e->errbuf);
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
			if (!(code == 503 || etcd_jint(json_object_get(j, "code")) == 14) ||
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
		etcd_note_unreachable(e, path, e->errbuf[0] ? e->errbuf : bm_curl_easy_strerror(cc));
		r = curl_to_errno(cc);
		goto out;
	}
	e->cur = ep;
	etcd_note_ok(e);
	if (!json_is_object(j)) {
		fprintf(stderr, "bpfmesh store: etcd %s: POST /v3/%s: HTTP %ld, answer is not JSON%s\n",
			e->endpoints[ep], path, code, code == 404 ?
			" (etcd 3.4 or newer, with its gRPC gateway, is needed)" : "");
		r = -EPROTO;
	} else if (code != 200 || json_object_get(j, "error")) {
		const char *msg = json_string_value(json_object_get(j, "message"));
		int64_t gcode = etcd_jint(json_object_get(j, "code"));

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
int etcd_read_txn(struct bm_etcd *e, json_t *ops, json_t **responses, int64_t *rev)
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
		*rev = etcd_jint(json_object_get(json_object_get(resp, "header"), "revision"));
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
json_t *etcd_range_kvs(json_t *responses, size_t i)
{
	return json_object_get(json_object_get(json_array_get(responses, i), "response_range"),
			       "kvs");
}

/* The generation key's value (0 when absent) and mod_revision. */
int etcd_parse_generation(struct bm_etcd *e, json_t *kvs, uint64_t *gen, int64_t *mod)
{
	json_t *kv = json_array_get(kvs, 0);
	size_t len = 0;
	char *v, *end;
	int r = 0;

	*gen = 0;
	*mod = 0;
	if (!kv)
		return 0;
	*mod = etcd_jint(json_object_get(kv, "mod_revision"));
	v = etcd_b64_decode(json_string_value(json_object_get(kv, "value")), &len);
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
	char *key = etcd_b64_decode(json_string_value(json_object_get(kv, "key")), &klen);
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
	val = etcd_b64_decode(json_string_value(json_object_get(kv, "value")), &vlen);
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
		from = etcd_resource_key(e, only->kind, ns, name);
	else if (only && ns)
		r = asprintf(&from, "%s%s/%s/", e->res_prefix, only->kind, ns);
	else if (only)
		r = asprintf(&from, "%s%s/", e->res_prefix, only->kind);
	else
		from = strdup(e->res_prefix);
	if (r < 0)
		from = NULL;
	if (!from || (!exact && !(to = etcd_prefix_end(from)))) {
		r = -ENOMEM;
		goto out;
	}
	r = etcd_read_txn(e, json_pack("[o,o]", etcd_op_range(e->gen_key, NULL), etcd_op_range(from, to)),
			  &responses, &rev);
	if (!r)
		r = etcd_parse_generation(e, etcd_range_kvs(responses, 0), &gen, &gen_mod);
	if (r)
		goto out;
	kvs = etcd_range_kvs(responses, 1);
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
	req = json_pack("{s:o}", "key", etcd_jkey(e->gen_key));
	if (!req)
		return -ENOMEM;
	r = etcd_post(e, "kv/range", req, &resp, true);
	json_decref(req);
	if (!r)
		r = etcd_parse_generation(e, json_object_get(resp, "kvs"), gen, &mod);
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
bool etcd_kv_key_of(struct bm_etcd *e, const char *full_key)
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
	req = json_pack("{s:o}", "key", etcd_jkey(k));
	if (req)
		r = etcd_post(e, "kv/range", req, &resp, true);
	json_decref(req);
	if (!r) {
		kv = json_array_get(json_object_get(resp, "kvs"), 0);
		if (!kv)
			r = -ENOENT;
		else if (!(*value = etcd_b64_decode(json_string_value(json_object_get(kv, "value")), &len)))
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
	req = json_pack("{s:o}", "key", etcd_jkey(k));
	if (req)
		r = etcd_post(e, "kv/deleterange", req, &resp, false);
	json_decref(req);
	/* etcd serialises deletes: only one caller sees deleted = 1. */
	if (!r && etcd_jint(json_object_get(resp, "deleted")) != 1)
		r = -ENOENT;
	json_decref(resp);
	free(k);
	return r;
}
