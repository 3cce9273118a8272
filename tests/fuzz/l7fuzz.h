/* Shared by fuzz_h2down.c and fuzz_h2up.c: the L7 engine (agent/l7conn.c
 * and the rest) on one bm_loop in this thread, a downstream connection
 * over a socketpair, upstream "servers" that are socketpairs too (ops.connect
 * hands out one end, the harness holds the other), a hand-built
 * configuration, and a builder of HTTP/2 frames from fuzzer bytes.
 *
 * Frame program (l7f_frames): a sequence of ops, each
 *   op byte: type = op % 8, bit 3: run the engine after this op;
 *   0 HEADERS   stream, flags, n fields (% 12), fields (name, value picks);
 *               flags bit 6: split the block into HEADERS + CONTINUATION
 *   1 DATA      stream, flags, len, bytes
 *   2 RST       stream, code
 *   3 GOAWAY    last stream, code
 *   4 SETTINGS  n (% 4) x (id, value byte), or an ACK (flags bit 0)
 *   5 WINDOW    stream (or 0), increment byte
 *   6 PING      flags (ACK bit)
 *   7 raw       len, bytes; len 0: shut the connection down (EOF)
 * stream: top bit set: id = low 7 bits as given (0, even ids); else the
 * client stream 1 + 2 * (s % 16). A pick is a table entry (b < 0xe0), a
 * literal (b in 0xe0..0xfe: len byte, bytes) or a long run (0xff: len byte
 * x 256 'a's). Everything is bounded by the input. */
#ifndef L7FUZZ_H
#define L7FUZZ_H
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <nghttp2/nghttp2.h>
#include "l7proxy.h"
#include "bpfmesh/abi.h"

/* ---- input cursor ----------------------------------------------------------------------- */

struct l7f_in {
	const uint8_t *p;
	size_t n;
};

static uint8_t in_byte(struct l7f_in *in)
{
	uint8_t b;

	if (!in->n)
		return 0;
	b = *in->p++;
	in->n--;
	return b;
}

static const uint8_t *in_bytes(struct l7f_in *in, size_t *len)
{
	const uint8_t *p = in->p;

	if (*len > in->n)
		*len = in->n;
	in->p += *len;
	in->n -= *len;
	return p;
}

/* ---- the engine ------------------------------------------------------------------------- */

#define L7F_MAX_UP 32

static struct {
	struct bm_loop l;
	struct bm_wstats st;
	struct bm_l7_engine *e;
	int client;                 /* our end of the downstream connection */
	int up[L7F_MAX_UP];         /* our ends of the upstream connections, -1 closed */
	int n_up;
	int up_h1;                  /* answer HTTP/1.1 requests on upstreams */
	unsigned resp;              /* which answer (l7f_resps) */
	int sink;                   /* /dev/null-ish counter of bytes read */
} F;

static int l7f_connect(void *user, const struct bm_l7_backend *b, int *fd)
{
	int sv[2];

	if (F.n_up == L7F_MAX_UP || (b->port == htons(1) /* the refusing host */))
		return -ECONNREFUSED;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		return -errno;
	F.up[F.n_up++] = sv[1];
	*fd = sv[0];
	return 0;
}

/* Configuration: service 10.9.9.9:80;
 *   /d...  directResponse 200
 *   /g...  fault abort grpcStatus 14
 *   /r...  to a host that refuses (503 UF, gRPC 14)
 *   /u...  cluster 1 over HTTP/2 (h2up)
 *   else   cluster 0 over HTTP/1.1, retries on 5xx/reset, one attempt more */
static struct {
	struct bm_l7_config cfg;
	struct bm_l7_service svc;
	struct bm_l7_route rt[5];
	struct bm_l7_match m[4];
	struct bm_l7_cluster cl[3];
	struct bm_l7_cluster_rt crt[3];
	struct bm_l7_backend b[3];
	struct bm_l7_dest dest[3];
	struct bm_l7_hdr set[1];
} C;

static void l7f_cluster(int i, uint16_t port, uint8_t proto)
{
	struct bm_l7_cluster *c = &C.cl[i];

	snprintf(c->name, sizeof(c->name), "outbound|80|c%d|svc.default.svc.cluster.local", i);
	snprintf(c->host, sizeof(c->host), "svc.default.svc.cluster.local");
	c->lb = BM_LB_ROUND_ROBIN;
	c->proto = proto;
	c->max_connections = c->max_pending = c->max_requests = c->max_retries = BM_L7_UNLIMITED;
	c->idle_timeout_ms = 60000;
	c->connect_timeout_ms = 1000;
	c->rt = &C.crt[i];
	c->b = &C.b[i];
	c->n = 1;
	C.b[i].ip = htonl(INADDR_LOOPBACK);
	C.b[i].port = htons(port);
	C.b[i].id = (uint32_t)i + 1;
	C.dest[i].c = c;
	C.dest[i].weight = 1;
}

static void l7f_route(int i, const char *prefix, int dest)
{
	struct bm_l7_route *r = &C.rt[i];

	r->name = "r";
	bm_retry_default(&r->retry);
	r->retry.attempts = 1;
	r->retry.backoff_base_ms = 1;
	r->retry.on |= BM_RETRY_5XX | BM_RETRY_RESET | BM_RETRY_GRPC_UNAVAILABLE;
	if (prefix) {
		C.m[i].uri.kind = BM_SM_PREFIX;
		C.m[i].uri.s = (char *)prefix;
		r->match = &C.m[i];
		r->n_match = 1;
	}
	if (dest >= 0) {
		r->dest = &C.dest[dest];
		r->n_dest = 1;
		r->total_weight = 1;
	}
}

static void l7f_config(void)
{
	C.cfg.refs = 1 << 30; /* static: never freed */
	C.cfg.svc = &C.svc;
	C.cfg.n_svc = 1;
	C.cfg.cluster = C.cl;
	C.cfg.n_cluster = 3;
	C.svc.vip = inet_addr("10.9.9.9");
	C.svc.port = 80;
	snprintf(C.svc.host, sizeof(C.svc.host), "svc.default.svc.cluster.local");
	C.svc.route = C.rt;
	C.svc.n_route = 5;
	l7f_cluster(0, 8080, BM_L7_UP_H1);
	l7f_cluster(1, 8081, BM_L7_UP_H2);
	l7f_cluster(2, 1, BM_L7_UP_H1);
	l7f_route(0, "/d", -1);
	C.rt[0].direct.status = 200;
	C.rt[0].direct.body = "direct";
	C.rt[0].direct.body_len = 6;
	l7f_route(1, "/g", 0);
	C.rt[1].fault.abort_grpc = 15;
	C.rt[1].fault.abort_ppm = 1000000;
	l7f_route(2, "/r", 2);
	l7f_route(3, "/u", 1);
	l7f_route(4, NULL, 0);
	C.set[0].name = "x-fuzz";
	C.set[0].value = "1";
	C.rt[4].req.set = C.set;
	C.rt[4].req.n_set = 1;
}

static void l7f_init_once(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	signal(SIGPIPE, SIG_IGN); /* as meshd: writes to a closed peer fail with EPIPE */
	l7f_config();
}

static void l7f_start(int up_h1)
{
	struct bm_l7_ops ops = { .connect = l7f_connect };
	struct bm_l7_peer peer = { 0 };
	int sv[2];

	l7f_init_once();
	memset(&F, 0, sizeof(F));
	F.up_h1 = up_h1;
	if (bm_loop_init(&F.l, &F.st))
		abort();
	F.e = bm_l7_engine_new(&F.l, &ops, NULL);
	if (!F.e)
		abort();
	bm_l7_engine_set_config(F.e, &C.cfg);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		abort();
	F.client = sv[1];
	peer.vip = C.svc.vip;
	peer.port = 80;
	peer.pool_key = 7;
	peer.l4_dir = BM_PDIR_OUT_LOCAL;
	snprintf(peer.src_ns, sizeof(peer.src_ns), "default");
	if (bm_l7_engine_accept(F.e, sv[0], &peer))
		abort();
}

/* HTTP/1.1 upstream answers, one per request head seen (F.resp picks). */
static const char *const l7f_resps[] = {
	"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n"
	"2\r\nok\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
	"HTTP/1.1 204 No Content\r\nx-a: b\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
	"", /* a big body: l7f_big */
	"HTTP/1.1 503 Unavailable\r\ngrpc-status: 14\r\ncontent-length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nuntil close", /* and the upstream closes */
	"XYZ\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n"
	"grpc-status: 1\r\n2x: y\r\nconnection: close\r\ncontent-length: 9\r\nTE: x\r\n"
	"t1: 1\r\nt2: 2\r\nt3: 3\r\nt4: 4\r\nt5: 5\r\nt6: 6\r\nt7: 7\r\nt8: 8\r\nt9: 9\r\n"
	"t10: 10\r\nt11: 11\r\nt12: 12\r\nt13: 13\r\nt14: 14\r\nt15: 15\r\nt16: 16\r\n"
	"grpc-message: \x01\x80%\r\n\r\n",
	NULL, /* close without an answer */
	"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", /* and the upstream closes */
};
#define L7F_N_RESP (sizeof(l7f_resps) / sizeof(l7f_resps[0]))
#define L7F_BIG (300 * 1024)

static struct {
	char *p;
	size_t len, off;
} l7f_pend[L7F_MAX_UP];

static void l7f_queue(int i, const char *p, size_t n)
{
	char *np = realloc(l7f_pend[i].p, l7f_pend[i].len + n);

	if (!np)
		abort();
	memcpy(np + l7f_pend[i].len, p, n);
	l7f_pend[i].p = np;
	l7f_pend[i].len += n;
}

static void l7f_answer(int i)
{
	const char *r = l7f_resps[F.resp % L7F_N_RESP];

	if (!r) {
		close(F.up[i]);
		F.up[i] = -1;
		return;
	}
	if (!*r) {
		static char big[L7F_BIG];
		char h[96];

		memset(big, 'b', sizeof(big));
		snprintf(h, sizeof(h), "HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n", L7F_BIG);
		l7f_queue(i, h, strlen(h));
		l7f_queue(i, big, sizeof(big));
		return;
	}
	l7f_queue(i, r, strlen(r));
}

/* What an upstream said; HTTP/1.1 upstreams get an answer for every
 * request head they see, written as the socket takes it. */
static void l7f_drain_up(void)
{
	char b[16384];

	for (int i = 0; i < F.n_up; i++) {
		ssize_t n;

		if (F.up[i] < 0)
			continue;
		while ((n = read(F.up[i], b, sizeof(b))) > 0) {
			F.sink += (int)n;
			if (getenv("L7F_DEBUG") && getenv("L7F_DEBUG")[0] == '2')
				fprintf(stderr, "up %d: %.*s\n", i, (int)n, b);
			if (F.up_h1 && memmem(b, (size_t)n, "\r\n\r\n", 4))
				l7f_answer(i);
			if (F.up[i] < 0)
				break;
		}
		if (F.up[i] >= 0 && !n) {
			close(F.up[i]);
			F.up[i] = -1;
		}
		while (F.up[i] >= 0 && l7f_pend[i].off < l7f_pend[i].len) {
			ssize_t w = write(F.up[i], l7f_pend[i].p + l7f_pend[i].off,
					  l7f_pend[i].len - l7f_pend[i].off);

			if (w <= 0)
				break;
			l7f_pend[i].off += (size_t)w;
		}
		if (F.up[i] >= 0 && l7f_pend[i].len && l7f_pend[i].off == l7f_pend[i].len &&
		    (F.resp % L7F_N_RESP == 6 || F.resp % L7F_N_RESP == 11)) {
			close(F.up[i]); /* the body ends with the connection */
			F.up[i] = -1;
		}
	}
}

static void l7f_drain_client(void)
{
	char b[16384];
	ssize_t n;

	while ((n = read(F.client, b, sizeof(b))) > 0)
		F.sink += (int)n;
}

static void l7f_run(int rounds)
{
	for (int i = 0; i < rounds; i++) {
		bm_loop_run_once(&F.l, 0);
		l7f_drain_client();
		l7f_drain_up();
	}
}

/* Write all of p to fd, running the engine when the socket is full. */
static void l7f_write(int fd, const void *p, size_t n)
{
	for (int spins = 0; n && spins < 64;) {
		ssize_t w = write(fd, p, n);

		if (w > 0) {
			p = (const char *)p + w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN)
			return;
		l7f_run(1);
		spins++;
	}
}

static void l7f_stop(void)
{
	const struct bm_l7_stats *st = bm_l7_engine_stats(F.e);

	close(F.client);
	l7f_run(4);
	if (getenv("L7F_DEBUG"))
		fprintf(stderr, "l7f: %d upstreams, %d bytes read, %llu requests, %llu h2 up\n",
			F.n_up, F.sink, (unsigned long long)st->requests,
			(unsigned long long)st->h2_upstream_cx);
	bm_l7_engine_free(F.e);
	bm_loop_run_once(&F.l, 0); /* deferred frees */
	bm_loop_fini(&F.l);
	for (int i = 0; i < F.n_up; i++) {
		if (F.up[i] >= 0)
			close(F.up[i]);
		free(l7f_pend[i].p);
	}
	memset(l7f_pend, 0, sizeof(l7f_pend));
}

/* ---- HTTP/2 frames ---------------------------------------------------------------------- */

static const char *const l7f_names[] = {
	":method", ":path", ":authority", ":scheme", ":status", ":protocol", "host",
	"content-type", "te", "grpc-status", "grpc-message", "grpc-timeout", "content-length",
	"cookie", "connection", "keep-alive", "transfer-encoding", "upgrade", "x-request-id",
	"user-agent", "authorization", "Upper-Case", "x-fuzz", "trailer", "proxy-connection",
	"", ":", "x\x01y", "x-forwarded-for", "accept", "x a", "set-cookie", "location",
	"grpc-encoding", ":unknown",
};
static const char *const l7f_values[] = {
	"GET", "POST", "HEAD", "CONNECT", "OPTIONS", "/", "/d", "/g", "/r", "/u", "/u/x?y=1",
	"*", "", "http", "https", "svc", "svc:80", "application/grpc", "application/grpc+proto",
	"trailers", "0", "1", "2", "5", "14", "200", "204", "304", "101", "100", "404", "503",
	"999", "-1", "14x", "1000", "99999999999999999999", "1S", "10m", "a=b", "c=d",
	"close", "chunked", "h2c", " lead", "trail ", "a\r\nb", "%41%zz", "\x80\xff",
	"/d/../../x", "//x", "/%2e%2e/", "H", "100-continue", "1m", "0S", "1n", "99999999H",
	"application/grpc-web", "gzip", "deflate",
};

#define L7F_N(a) (sizeof(a) / sizeof((a)[0]))

struct l7f_buf {
	uint8_t *p;
	size_t len, cap;
};

static void buf_put(struct l7f_buf *b, const void *p, size_t n)
{
	if (!n)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap < b->len + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (!b->p)
			abort();
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void frame_hd(struct l7f_buf *b, size_t len, uint8_t type, uint8_t flags, uint32_t id)
{
	uint8_t h[9] = { (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, type, flags,
			 (uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8),
			 (uint8_t)id };

	buf_put(b, h, 9);
}

static uint32_t pick_stream(struct l7f_in *in)
{
	uint8_t s = in_byte(in);

	return s & 0x80 ? (uint32_t)(s & 0x7f) : 1u + 2u * (s % 16);
}

/* A name or value: the string and its length; *own set when malloc'ed. */
static const char *pick_str(struct l7f_in *in, const char *const *tab, size_t n_tab,
			    size_t *len, char **own)
{
	uint8_t b = in_byte(in);

	*own = NULL;
	if (b < 0xe0) {
		*len = strlen(tab[b % n_tab]);
		return tab[b % n_tab];
	}
	if (b < 0xff) {
		*len = in_byte(in);
		return (const char *)in_bytes(in, len);
	}
	*len = (size_t)(in_byte(in) + 1) * 256;
	*own = malloc(*len);
	if (!*own)
		abort();
	memset(*own, 'a', *len);
	return *own;
}

static void op_headers(struct l7f_buf *b, struct l7f_in *in, nghttp2_hd_deflater *def)
{
	uint32_t id = pick_stream(in);
	uint8_t fl = in_byte(in);
	size_t n = in_byte(in) % 12, blen, max = 16384, off = 0;
	nghttp2_nv nv[12];
	char *own[24] = { 0 };
	uint8_t *blk;
	ssize_t r;

	for (size_t i = 0; i < n; i++) {
		size_t nl, vl;
		const char *name = pick_str(in, l7f_names, L7F_N(l7f_names), &nl, &own[2 * i]);
		const char *val = pick_str(in, l7f_values, L7F_N(l7f_values), &vl, &own[2 * i + 1]);

		nv[i].name = (uint8_t *)(uintptr_t)name;
		nv[i].namelen = nl;
		nv[i].value = (uint8_t *)(uintptr_t)val;
		nv[i].valuelen = vl;
		nv[i].flags = NGHTTP2_NV_FLAG_NONE;
	}
	blen = nghttp2_hd_deflate_bound(def, nv, n);
	blk = malloc(blen + 1);
	if (!blk)
		abort();
	r = nghttp2_hd_deflate_hd(def, blk, blen, nv, n);
	if (r < 0)
		r = 0;
	if (fl & 0x40)
		max = (size_t)r / 2 + 1; /* at least one CONTINUATION */
	do {
		size_t k = (size_t)r - off < max ? (size_t)r - off : max;
		int last = off + k == (size_t)r;
		uint8_t f = last ? NGHTTP2_FLAG_END_HEADERS : 0;

		if (!off)
			f |= fl & NGHTTP2_FLAG_END_STREAM;
		frame_hd(b, k, off ? NGHTTP2_CONTINUATION : NGHTTP2_HEADERS, f, id);
		buf_put(b, blk + off, k);
		off += k;
	} while (off < (size_t)r);
	free(blk);
	for (size_t i = 0; i < 2 * n; i++)
		free(own[i]);
}

static void op_frame(struct l7f_buf *b, struct l7f_in *in, uint8_t type,
		     nghttp2_hd_deflater *def)
{
	uint8_t p[64];
	size_t len;
	uint32_t id, v;

	switch (type) {
	case 0:
		op_headers(b, in, def);
		break;
	case 1: {
		const uint8_t *d;
		uint8_t fl;

		id = pick_stream(in);
		fl = in_byte(in) & NGHTTP2_FLAG_END_STREAM;
		len = in_byte(in);
		if (len >= 250)
			len = (len - 249) * 4096; /* big DATA: flow control */
		if (len > in->n) {
			static const uint8_t z[16384];

			frame_hd(b, len > 16384 ? 16384 : len, NGHTTP2_DATA, fl, id);
			buf_put(b, z, len > 16384 ? 16384 : len);
			break;
		}
		d = in_bytes(in, &len);
		frame_hd(b, len, NGHTTP2_DATA, fl, id);
		buf_put(b, d, len);
		break;
	}
	case 2:
		id = pick_stream(in);
		v = in_byte(in) % 16;
		frame_hd(b, 4, NGHTTP2_RST_STREAM, 0, id);
		p[0] = p[1] = p[2] = 0;
		p[3] = (uint8_t)v;
		buf_put(b, p, 4);
		break;
	case 3:
		id = pick_stream(in);
		v = in_byte(in) % 16;
		frame_hd(b, 8, NGHTTP2_GOAWAY, 0, 0);
		p[0] = (uint8_t)(id >> 24), p[1] = (uint8_t)(id >> 16);
		p[2] = (uint8_t)(id >> 8), p[3] = (uint8_t)id;
		p[4] = p[5] = p[6] = 0;
		p[7] = (uint8_t)v;
		buf_put(b, p, 8);
		break;
	case 4: {
		uint8_t fl = in_byte(in);
		size_t n = fl & 1 ? 0 : (fl >> 1) % 4;

		frame_hd(b, 6 * n, NGHTTP2_SETTINGS, fl & 1, 0);
		for (size_t i = 0; i < n; i++) {
			uint8_t sid = in_byte(in) % 8, x = in_byte(in);
			uint32_t val = x < 0xf0 ? x : x == 0xff ? 0xffffffffu : (uint32_t)x << 12;

			p[0] = 0, p[1] = sid;
			p[2] = (uint8_t)(val >> 24), p[3] = (uint8_t)(val >> 16);
			p[4] = (uint8_t)(val >> 8), p[5] = (uint8_t)val;
			buf_put(b, p, 6);
		}
		break;
	}
	case 5: {
		uint8_t s = in_byte(in), x = in_byte(in);

		id = s < 16 ? 0 : 1u + 2u * (s % 16);
		v = x ? (uint32_t)x << (x % 20) : 0;
		v &= 0x7fffffffu;
		frame_hd(b, 4, NGHTTP2_WINDOW_UPDATE, 0, id);
		p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16);
		p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
		buf_put(b, p, 4);
		break;
	}
	case 6:
		frame_hd(b, 8, NGHTTP2_PING, in_byte(in) & 1, 0);
		memset(p, 0, 8);
		buf_put(b, p, 8);
		break;
	default: {
		const uint8_t *d;

		len = in_byte(in);
		d = in_bytes(in, &len);
		buf_put(b, d, len);
		break;
	}
	}
}

/* The newest upstream connection still open, or -1. */
static int l7f_cur_up(void)
{
	for (int i = F.n_up - 1; i >= 0; i--)
		if (F.up[i] >= 0)
			return F.up[i];
	return -1;
}

/* Run the frame program in to the client connection (to_client: as the
 * client) or to the newest upstream (as the server); the engine runs
 * between ops that ask for it, and after everything. */
static void l7f_frames(int to_client, struct l7f_in *in)
{
	nghttp2_hd_deflater *def;
	int ops = 0;

	if (nghttp2_hd_deflate_new(&def, 4096))
		abort();
	while (in->n && ops++ < 256) {
		uint8_t op = in_byte(in);
		struct l7f_buf b = { 0 };
		int fd = to_client ? F.client : l7f_cur_up();

		if (op % 8 == 7 && in->n && !in->p[0] && fd >= 0) {
			in_byte(in);
			shutdown(fd, SHUT_WR);
			l7f_run(2);
			continue;
		}
		op_frame(&b, in, op % 8, def);
		if (b.len && fd >= 0)
			l7f_write(fd, b.p, b.len);
		free(b.p);
		if (op & 8)
			l7f_run(2);
	}
	nghttp2_hd_deflate_del(def);
	l7f_run(8);
}

static const uint8_t l7f_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/* An empty SETTINGS frame: what a peer opens with. */
static const uint8_t l7f_settings[9] = { 0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0 };

#endif
