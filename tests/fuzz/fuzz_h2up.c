/* libFuzzer entry for the HTTP/2 upstream client (agent/h2up.c) through the
 * real engine (tests/fuzz/l7fuzz.h): a client sends a few gRPC-shaped
 * requests to a route whose cluster speaks HTTP/2, and the fuzzer is the
 * upstream server: response heads, trailers, grpc-status values ("",
 * "999", "-1", "14x"), long grpc-messages, resets and GOAWAYs at odd times.
 *
 * Input: one control byte, then a frame program played as the server
 * (l7fuzz.h), or raw bytes (bit 0).
 *   bit 1: the client speaks HTTP/2 (three concurrent streams), else
 *          HTTP/1.1 (three pipelined requests, one at a time upstream);
 *   bit 2: no server SETTINGS first (the program must send one);
 *   bit 3: the requests carry a body (and HTTP/2 ones a trailer);
 *   bit 4: HTTP/1.1 requests have a chunked body with trailers;
 *   bit 5: the upstream ends its side of the connection at the end. */
#include "l7fuzz.h"

static const char h1_req[] =
	"POST /u/svc.Echo/Hi HTTP/1.1\r\nhost: svc\r\ncontent-type: application/grpc\r\n"
	"te: trailers\r\ncontent-length: 5\r\n\r\nhello";
static const char h1_get[] = "GET /u/x HTTP/1.1\r\nhost: svc\r\n\r\n";
static const char h1_chunked[] =
	"POST /u/svc.Echo/Hi HTTP/1.1\r\nhost: svc\r\ncontent-type: application/grpc\r\n"
	"te: trailers\r\ntransfer-encoding: chunked\r\ngrpc-timeout: 1m\r\n\r\n"
	"5\r\nhello\r\n0\r\nx-req-trailer: 1\r\nconnection: x\r\ngrpc-status: 0\r\n\r\n";

/* The client's HTTP/2 requests: three streams, with or without a body. */
static void h2_client(int body)
{
	nghttp2_hd_deflater *def;
	struct l7f_buf b = { 0 };
	nghttp2_nv nv[] = {
		{ (uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0 },
		{ (uint8_t *)":path", (uint8_t *)"/u/svc.Echo/Hi", 5, 14, 0 },
		{ (uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0 },
		{ (uint8_t *)":authority", (uint8_t *)"svc", 10, 3, 0 },
		{ (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0 },
		{ (uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0 },
	};
	nghttp2_nv tr[] = { { (uint8_t *)"x-req-trailer", (uint8_t *)"1", 13, 1, 0 } };
	uint8_t blk[512];

	if (nghttp2_hd_deflate_new(&def, 4096))
		abort();
	buf_put(&b, l7f_preface, sizeof(l7f_preface) - 1);
	buf_put(&b, l7f_settings, sizeof(l7f_settings));
	for (uint32_t id = 1; id <= 5; id += 2) {
		ssize_t r = nghttp2_hd_deflate_hd(def, blk, sizeof(blk), nv, 6);

		frame_hd(&b, (size_t)r, NGHTTP2_HEADERS,
			 NGHTTP2_FLAG_END_HEADERS | (body ? 0 : NGHTTP2_FLAG_END_STREAM), id);
		buf_put(&b, blk, (size_t)r);
		if (!body)
			continue;
		frame_hd(&b, 5, NGHTTP2_DATA, 0, id);
		buf_put(&b, "hello", 5);
		r = nghttp2_hd_deflate_hd(def, blk, sizeof(blk), tr, 1);
		frame_hd(&b, (size_t)r, NGHTTP2_HEADERS,
			 NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, id);
		buf_put(&b, blk, (size_t)r);
	}
	l7f_write(F.client, b.p, b.len);
	free(b.p);
	nghttp2_hd_deflate_del(def);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct l7f_in in = { data, size };
	uint8_t ctl;
	int up;

	if (!size)
		return 0;
	ctl = in_byte(&in);
	l7f_start(0);
	if (ctl & 2) {
		h2_client(ctl & 8);
	} else {
		for (int i = 0; i < 3; i++) {
			if (ctl & 16)
				l7f_write(F.client, h1_chunked, sizeof(h1_chunked) - 1);
			else if (ctl & 8)
				l7f_write(F.client, h1_req, sizeof(h1_req) - 1);
			else
				l7f_write(F.client, h1_get, sizeof(h1_get) - 1);
		}
	}
	l7f_run(4);
	up = l7f_cur_up();
	if (up >= 0 && !(ctl & 4))
		l7f_write(up, l7f_settings, sizeof(l7f_settings));
	if (!(ctl & 1)) {
		l7f_frames(0, &in);
	} else {
		while (in.n && (up = l7f_cur_up()) >= 0) {
			size_t k = 1 + (ctl >> 4) * 17;
			const uint8_t *p = in_bytes(&in, &k);

			l7f_write(up, p, k);
			l7f_run(1);
		}
		l7f_run(8);
	}
	if ((ctl & 32) && (up = l7f_cur_up()) >= 0) {
		shutdown(up, SHUT_WR);
		l7f_run(4);
	}
	l7f_stop();
	return 0;
}
