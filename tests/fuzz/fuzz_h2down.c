/* libFuzzer entry for the HTTP/2 front (agent/h2down.c) through the real
 * engine: bytes from a client connection (a socketpair) into an engine on
 * a bm_loop in this thread, with routes that answer locally, abort with a
 * gRPC status, fail to connect, and go to HTTP/1.1 (chunked answer with
 * trailers) and HTTP/2 upstreams (tests/fuzz/l7fuzz.h).
 *
 * Input: one control byte, then
 *   bit 0 clear: the client preface and SETTINGS, then a frame program
 *                (l7fuzz.h: HEADERS with fuzzer-picked fields, DATA, RST,
 *                GOAWAY, SETTINGS, WINDOW_UPDATE, PING, raw bytes);
 *   bit 0 set:   the preface, then raw bytes (bit 1 clear) or raw bytes
 *                with no preface at all (bit 1 set: the sniffer decides),
 *                written in pieces (bits 2-3: their size) with the engine
 *                run in between;
 *   bits 4-7:    how HTTP/1.1 upstreams answer (l7fuzz.h l7f_resps: chunked
 *                with trailers, 204, 100 then 200, a big body, 503 with a
 *                grpc-status, until close, garbage, 101, many and forbidden
 *                trailers, a close, a short body).
 * The engine's answers are read and dropped; the connection closes at the
 * end and the engine is freed, so leaks show. */
#include "l7fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct l7f_in in = { data, size };
	uint8_t ctl;

	if (!size)
		return 0;
	ctl = in_byte(&in);
	l7f_start(1);
	F.resp = ctl >> 4;
	if (!(ctl & 1)) {
		l7f_write(F.client, l7f_preface, sizeof(l7f_preface) - 1);
		l7f_write(F.client, l7f_settings, sizeof(l7f_settings));
		l7f_frames(1, &in);
	} else {
		if (!(ctl & 2))
			l7f_write(F.client, l7f_preface, sizeof(l7f_preface) - 1);
		while (in.n) {
			size_t k = 1 + ((ctl >> 2) & 3) * 7;
			const uint8_t *p = in_bytes(&in, &k);

			l7f_write(F.client, p, k);
			l7f_run(1);
		}
		l7f_run(8);
	}
	l7f_stop();
	return 0;
}
