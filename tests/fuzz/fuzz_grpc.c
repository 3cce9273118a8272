/* libFuzzer entry for the gRPC pieces of agent/l7reply.c: the grpc-status
 * of a header or trailer list (l7_grpc_status_of), whose values come from
 * upstreams and are not NUL-terminated when they are HTTP/1.1 trailers,
 * and the trailers-only local reply (l7_grpc_local_headers: grpc-status
 * from the HTTP status, grpc-message percent-encoded).
 *
 * Input: byte 0 the grpc_abort of the request (fault.abort.grpcStatus + 1),
 * bytes 1-2 the HTTP status of the local reply, then the grpc-status value
 * and, after the first NUL, the message. The value is handed over in a
 * heap block of exactly its length, so ASan sees any read past it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "l7upstream.h"

#define FAIL(...)                                             \
	do {                                                  \
		fprintf(stderr, "fuzz_grpc: " __VA_ARGS__);   \
		fputc('\n', stderr);                          \
		abort();                                      \
	} while (0)

static void check_status(const uint8_t *v, size_t vl)
{
	char *val = malloc(vl ? vl : 1);
	struct bm_http_hdr h[2] = {
		{ .name = "x-other", .value = "7", .name_len = 7, .value_len = 1 },
		{ .name = "grpc-status", .name_len = 11 },
	};
	int gs;

	if (!val)
		abort();
	memcpy(val, v, vl);
	h[1].value = val;
	h[1].value_len = vl;
	gs = l7_grpc_status_of(h, 2);
	if (gs < -1 || gs > 999)
		FAIL("grpc-status %d out of range", gs);
	if (gs >= 0) {
		/* a status is the whole value, decimal digits */
		int x = 0;

		for (size_t i = 0; i < vl; i++) {
			if (v[i] < '0' || v[i] > '9')
				FAIL("status %d from a value with '%c'", gs, v[i]);
			x = x * 10 + (v[i] - '0');
		}
		if (x != gs)
			FAIL("status %d, value says %d", gs, x);
	}
	free(val);
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void check_local(int abort_code, int status, const char *msg)
{
	struct l7_req *rq = calloc(1, sizeof(*rq));
	struct bm_h1_hlist *hl = calloc(1, sizeof(*hl));
	const struct bm_http_hdr *m, *g;
	size_t k = 0;

	if (!rq || !hl)
		abort();
	rq->grpc_abort = (uint8_t)abort_code;
	if (l7_grpc_local_headers(rq, hl, status, msg))
		FAIL("local headers failed");
	m = bm_h1_hlist_get(hl, "grpc-message");
	g = bm_h1_hlist_get(hl, "grpc-status");
	if (!m || !g || !bm_h1_hlist_get(hl, "content-type"))
		FAIL("a gRPC header is missing");
	if (!g->value_len || atoi(g->value) < 0 || atoi(g->value) > 255)
		FAIL("grpc-status '%s'", g->value);
	/* printable ASCII, escapes well formed, and it decodes to a prefix of msg */
	for (size_t i = 0; i < m->value_len; i++) {
		unsigned char c = (unsigned char)m->value[i];
		int ch = c;

		if (c < 0x20 || c > 0x7e)
			FAIL("byte 0x%02x in grpc-message", c);
		if (c == '%') {
			if (i + 2 >= m->value_len || hexval(m->value[i + 1]) < 0 ||
			    hexval(m->value[i + 2]) < 0)
				FAIL("bad escape in grpc-message");
			ch = hexval(m->value[i + 1]) * 16 + hexval(m->value[i + 2]);
			i += 2;
		}
		if (*msg && (unsigned char)msg[k] != ch)
			FAIL("grpc-message does not decode to the message at %zu", k);
		k++;
	}
	free(rq);
	free(hl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul;
	size_t vl;
	char *msg;

	if (size < 3)
		return 0;
	nul = memchr(data + 3, 0, size - 3);
	vl = nul ? (size_t)(nul - (data + 3)) : size - 3;
	check_status(data + 3, vl);
	msg = strndup(nul ? (const char *)nul + 1 : "", nul ? size - 3 - vl - 1 : 0);
	if (!msg)
		abort();
	check_local(data[0], data[1] << 8 | data[2], msg);
	free(msg);
	return 0;
}
