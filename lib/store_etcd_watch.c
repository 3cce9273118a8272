/* etcd v3 store, watching: the thread behind bm_etcd_watch_fd and
 * bm_etcd_watch_ack (store_etcd.c has the requests and reads).
 *
 * Watching runs in a thread with its own connections: a /v3/watch stream on
 * the prefix from the revision after the last list, resumed from the last
 * revision seen after a disconnect, restarted from the present with a re-list
 * requested when that revision was compacted. An idle stream is checked with
 * a small read every few seconds, so a hung etcd (stopped, partitioned) is
 * noticed, not only a closed connection. Each change writes a byte to a pipe. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "curlshim.h"
#include "store.h"
#include "store_etcd_int.h"

#define WATCH_IDLE_PROBE_MS 3000
#define WATCH_BACKOFF_MAX_MS 2000

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
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
	int64_t compacted = etcd_jint(json_object_get(res, "compact_revision"));
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
			e->watch_rev = e->watch_from = etcd_jint(json_object_get(
				json_object_get(res, "header"), "revision")) + 1;
		e->watching = true;
		pthread_mutex_unlock(&e->lock);
		etcd_note_ok(e);
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
		int64_t mod = etcd_jint(json_object_get(kv, "mod_revision"));
		size_t klen, vlen;
		char *key = etcd_b64_decode(json_string_value(json_object_get(kv, "key")), &klen);

		if (mod >= e->watch_rev)
			e->watch_rev = mod + 1;
		/* Key/value records (join tokens) are not configuration: a
		 * token used by the CA must not make every agent re-list. */
		if (!key || !etcd_kv_key_of(e, key))
			relevant = true;
		if (key && !strcmp(key, e->gen_key)) {
			char *v = etcd_b64_decode(json_string_value(json_object_get(kv, "value")), &vlen);

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

	if (etcd_buf_write(data, size, n, &st->b) != add)
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

	if (asprintf(&wkey, "%s/", e->prefix) < 0 || !(wend = etcd_prefix_end(wkey)))
		goto out;
	pthread_mutex_lock(&e->lock);
	req = json_pack("{s:{s:o,s:o}}", "create_request", "key", etcd_jkey(wkey), "range_end",
			etcd_jkey(wend));
	if (req && e->watch_rev)
		json_object_set_new(json_object_get(req, "create_request"), "start_revision",
				    etcd_jrev(e->watch_rev));
	pthread_mutex_unlock(&e->lock);
	body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	req = json_pack("{s:o,s:b}", "key", etcd_jkey(e->gen_key), "count_only", 1);
	pbody = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!body || !pbody)
		goto out;
	snprintf(url, sizeof(url), "http://%s/v3/watch", e->endpoints[ep]);
	snprintf(purl, sizeof(purl), "http://%s/v3/kv/range", e->endpoints[ep]);
	bm_curl_easy_reset(h);
	etcd_set_common(e, h, errbuf);
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
			etcd_set_common(e, probe, perr);
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
		etcd_note_unreachable(e, "watch", why ? why : "stream failed");
	else if (why == perr)
		etcd_note_unreachable(e, "watch liveness check", perr);
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
