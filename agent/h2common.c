/*
 * What the HTTP/2 front (h2down.c) and HTTP/2 upstreams (h2up.c) share:
 * the streams' memory, their outgoing DATA, header fields HTTP/2 does not
 * carry, and how a session is set up.
 */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include "h2common.h"

/* ---- stream memory --------------------------------------------------------------------- */

/* A stream is one request: its 10-30 KiB come from a cache of the loop's
 * thread (which is also where the deferred frees run) rather than from
 * malloc per request. Bounded; emptied when the thread exits. */
#define OBJ_CACHE_MAX 64

static __thread struct {
	void *head;
	unsigned n;
} obj_cache[L7_OBJ_KINDS];
static pthread_key_t obj_key;
static pthread_once_t obj_once = PTHREAD_ONCE_INIT;

static void obj_drain(void *unused)
{
	for (int k = 0; k < L7_OBJ_KINDS; k++) {
		while (obj_cache[k].head) {
			void *o = obj_cache[k].head;

			obj_cache[k].head = *(void **)o;
			free(o);
		}
		obj_cache[k].n = 0;
	}
}

static void obj_key_init(void)
{
	pthread_key_create(&obj_key, obj_drain);
}

void *l7_obj_get(int kind, size_t size)
{
	void *o = obj_cache[kind].head;

	if (!o)
		return calloc(1, size);
	obj_cache[kind].head = *(void **)o;
	obj_cache[kind].n--;
	memset(o, 0, size);
	return o;
}

void l7_obj_put(int kind, void *o)
{
	if (obj_cache[kind].n >= OBJ_CACHE_MAX) {
		free(o);
		return;
	}
	pthread_once(&obj_once, obj_key_init);
	pthread_setspecific(obj_key, obj_cache); /* non-NULL: obj_drain runs at exit */
	*(void **)o = obj_cache[kind].head;
	obj_cache[kind].head = o;
	obj_cache[kind].n++;
}

/* ---- outgoing DATA --------------------------------------------------------------------- */

/* What q holds; at eof the stream's end, or its trailers when it has some.
 * An empty q before eof defers the stream until l7_h2_data_resume. */
ssize_t l7_h2_data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
			uint32_t *flags, nghttp2_data_source *src, void *u)
{
	struct l7_h2data *dd = src->ptr;
	size_t n = bm_chunkq_take(dd->l, &dd->q, buf, len);

	if (!dd->q.bytes && dd->eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (dd->n_tnv) {
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			if (nghttp2_submit_trailer(s, id, dd->tnv, dd->n_tnv))
				return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		return (ssize_t)n;
	}
	if (!n) {
		dd->deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

void l7_h2_data_resume(nghttp2_session *s, int32_t id, struct l7_h2data *dd)
{
	if (!dd->deferred)
		return;
	dd->deferred = 0;
	nghttp2_session_resume_data(s, id);
}

/* ---- header fields and sessions -------------------------------------------------------- */

int l7_h2_conn_hdr(const struct bm_http_hdr *h)
{
	static const char *const no[] = { "connection", "keep-alive", "proxy-connection",
					  "transfer-encoding", "upgrade", "host" };

	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		if (h->name_len == strlen(no[i]) && !strncasecmp(h->name, no[i], h->name_len))
			return 1;
	return 0;
}

/* No automatic WINDOW_UPDATE: either side gives DATA back to flow control
 * (nghttp2_session_consume) once it has taken it, which bounds what a
 * stream buffers. */
void l7_h2_cbs_new(nghttp2_session_callbacks **cbs, nghttp2_option **opt,
		   nghttp2_on_begin_headers_callback begin_headers,
		   nghttp2_on_header_callback header,
		   nghttp2_on_frame_recv_callback frame_recv,
		   nghttp2_on_data_chunk_recv_callback data_chunk,
		   nghttp2_on_stream_close_callback stream_close)
{
	if (nghttp2_session_callbacks_new(cbs) || nghttp2_option_new(opt)) {
		*cbs = NULL;
		return;
	}
	nghttp2_session_callbacks_set_on_begin_headers_callback(*cbs, begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(*cbs, header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(*cbs, frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(*cbs, data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(*cbs, stream_close);
	nghttp2_option_set_no_auto_window_update(*opt, 1);
}
