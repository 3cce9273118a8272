/* What the two HTTP/2 sides of the L7 engine share: agent/h2down.c (the
 * front, an nghttp2 server per client connection) and agent/h2up.c
 * (upstream connections, nghttp2 clients). Code in agent/h2common.c. Not
 * an API. */
#ifndef BM_H2COMMON_H
#define BM_H2COMMON_H
#include <nghttp2/nghttp2.h>
#include "l7upstream.h"

/* Trailer fields a stream sends: as many as an HTTP/1.1 message keeps. */
#define L7_H2_TRAILERS BM_H1_TRAILERS_MAX

/* A stream's outgoing DATA (h2down.c: the response, h2up.c: the request
 * body). Its data provider is l7_h2_data_read with source.ptr the struct. */
struct l7_h2data {
	struct bm_loop *l;
	struct bm_chunkq q;          /* bytes for DATA frames */
	uint8_t eof;                 /* nothing is added to q any more */
	uint8_t deferred;            /* the provider waits: l7_h2_data_resume */
	nghttp2_nv tnv[L7_H2_TRAILERS]; /* trailers, sent after q at eof */
	size_t n_tnv;
};

ssize_t l7_h2_data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
			uint32_t *flags, nghttp2_data_source *src, void *u);
/* More in q, or eof: a waiting provider of stream id runs again. */
void l7_h2_data_resume(nghttp2_session *s, int32_t id, struct l7_h2data *dd);

/* Fields HTTP/2 forbids (RFC 9113 §8.2.2), and host (:authority carries it). */
int l7_h2_conn_hdr(const struct bm_http_hdr *h);

/* Appends a header field (name, value not copied) to nv[*n]. */
static inline void l7_h2_nv(nghttp2_nv *nv, size_t *n, const char *name, size_t nl,
			    const char *v, size_t vl)
{
	nv[*n].name = (uint8_t *)(uintptr_t)name;
	nv[*n].namelen = nl;
	nv[*n].value = (uint8_t *)(uintptr_t)v;
	nv[*n].valuelen = vl;
	nv[*n].flags = NGHTTP2_NV_FLAG_NONE;
	(*n)++;
}

/* Session callbacks and options of one side, for its pthread_once: *cbs is
 * NULL when out of memory. */
void l7_h2_cbs_new(nghttp2_session_callbacks **cbs, nghttp2_option **opt,
		   nghttp2_on_begin_headers_callback begin_headers,
		   nghttp2_on_header_callback header,
		   nghttp2_on_frame_recv_callback frame_recv,
		   nghttp2_on_data_chunk_recv_callback data_chunk,
		   nghttp2_on_stream_close_callback stream_close);

/* Stream memory: zeroed objects from a per-thread cache, given back through
 * the loop's deferred free; kind: an L7_OBJ_*. */
enum { L7_OBJ_H2S, L7_OBJ_H2US, L7_OBJ_KINDS };
void *l7_obj_get(int kind, size_t size);
void l7_obj_put(int kind, void *obj);

#endif
