/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-h2: HTTP/2 (h2c, prior knowledge) and gRPC-style traffic for the L7
 * tests, server and client in one tool (nghttp2).
 *
 *   bm-h2 serve --id ID --port P [--fail-pct P --fail-grpc S] [--fail-status S]
 *     h2c server: each stream is answered 200 with x-backend-id: ID, a
 *     body "ID\n" and a trailer x-trailer-id: ID. A request with
 *     content-type application/grpc* is answered the gRPC way: a
 *     length-prefixed message "ID", trailers grpc-status: 0 and
 *     grpc-message; --fail-pct of them instead get a trailers-only answer
 *     with grpc-status --fail-grpc (default 14, UNAVAILABLE). Plain
 *     requests fail with --fail-status (default 503) at the same rate.
 *     The same port answers HTTP/1.1 too: GET /__stats ({"id","requests",
 *     "failed","h2_connections"}), POST /__reset, and Upgrade requests
 *     (101, then every byte echoed back until the client closes).
 *   bm-h2 get URL [-n N] [-c C] [-H 'name: value']... [--grpc] [--timeout-ms T]
 *     N requests (default 100) over ONE h2c connection, C streams at a time
 *     (default 10); prints {"requests","ok","errors","connections",
 *     "status":{code:n},"grpc_status":{code:n},"backend":{id:n},
 *     "trailers":{name:n}}. ok: status 200 and, for --grpc, grpc-status 0.
 *   bm-h2 ws URL [--messages N]
 *     HTTP/1.1 Upgrade: websocket, then N messages each expected back;
 *     prints {"status","greeting" (1: the server's first bytes came),"echoed"}.
 *
 * A thread per server connection with blocking sockets; everything is
 * bounded by socket timeouts so a test never hangs.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <nghttp2/nghttp2.h>

static void die(const char *m)
{
	fprintf(stderr, "bm-h2: %s\n", m);
	exit(2);
}

static int send_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return -1;
		p = (const char *)p + w;
		n -= (size_t)w;
	}
	return 0;
}

static void set_timeout(int fd, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int pump_out(nghttp2_session *s, int fd)
{
	for (;;) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(s, &p);

		if (n < 0)
			return -1;
		if (!n)
			return 0;
		if (send_all(fd, p, (size_t)n))
			return -1;
	}
}

/* ---- server ------------------------------------------------------------------ */

static struct {
	const char *id;
	double fail_pct;
	int fail_grpc, fail_status;
	unsigned long requests, failed, h2_conns;  /* atomics */
} S = { .fail_grpc = 14, .fail_status = 503 };

struct sstream {
	int grpc;
	uint8_t body[256];
	size_t blen, off;
	char st[8], idbuf[64];
	nghttp2_nv tr[3];
	size_t ntr;
};

/* xorshift64*: rand_r's LCG has correlated successive draws, which skews
 * "fails N times in a row" (what retries are measured by) */
static __thread uint64_t rnd_state;

static int draw_fail(void)
{
	uint64_t x = rnd_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rnd_state = x;
	return S.fail_pct > 0 && (x * 0x2545F4914F6CDD1Dull >> 32) % 1000000 < (uint64_t)(S.fail_pct * 10000);
}

#define NV(n, v, vl) { (uint8_t *)(n), (uint8_t *)(v), strlen(n), (vl), NGHTTP2_NV_FLAG_NONE }

static ssize_t s_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
		      nghttp2_data_source *src, void *u)
{
	struct sstream *st = src->ptr;
	size_t n = st->blen - st->off < len ? st->blen - st->off : len;

	memcpy(buf, st->body + st->off, n);
	st->off += n;
	if (st->off == st->blen) {
		*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		nghttp2_submit_trailer(s, id, st->tr, st->ntr);
	}
	return (ssize_t)n;
}

static void s_answer(nghttp2_session *s, int32_t id, struct sstream *st)
{
	nghttp2_data_provider prd = { .source.ptr = st, .read_callback = s_read };
	size_t il = strlen(S.id);
	int fail = draw_fail();

	__atomic_add_fetch(&S.requests, 1, __ATOMIC_RELAXED);
	if (fail)
		__atomic_add_fetch(&S.failed, 1, __ATOMIC_RELAXED);
	snprintf(st->idbuf, sizeof(st->idbuf), "%s", S.id);
	if (st->grpc && fail) {
		snprintf(st->st, sizeof(st->st), "%d", S.fail_grpc);
		nghttp2_nv nv[] = { NV(":status", "200", 3), NV("content-type", "application/grpc", 16),
				    NV("grpc-status", st->st, strlen(st->st)),
				    NV("grpc-message", "injected", 8), NV("x-backend-id", S.id, il) };

		nghttp2_submit_response(s, id, nv, 5, NULL);
		return;
	}
	st->tr[st->ntr++] = (nghttp2_nv)NV("x-trailer-id", st->idbuf, strlen(st->idbuf));
	if (st->grpc) {
		nghttp2_nv nv[] = { NV(":status", "200", 3), NV("content-type", "application/grpc", 16),
				    NV("x-backend-id", S.id, il) };

		st->body[0] = 0;
		st->body[1] = st->body[2] = st->body[3] = 0;
		st->body[4] = (uint8_t)(il > 200 ? 200 : il);
		memcpy(st->body + 5, S.id, st->body[4]);
		st->blen = 5u + st->body[4];
		st->tr[st->ntr++] = (nghttp2_nv)NV("grpc-status", "0", 1);
		st->tr[st->ntr++] = (nghttp2_nv)NV("grpc-message", "OK", 2);
		nghttp2_submit_response(s, id, nv, 3, &prd);
		return;
	}
	st->blen = (size_t)snprintf((char *)st->body, sizeof(st->body), "%s\n", S.id);
	snprintf(st->st, sizeof(st->st), "%d", fail ? S.fail_status : 200);
	{
		nghttp2_nv nv[] = { NV(":status", st->st, strlen(st->st)),
				    NV("content-type", "text/plain", 10), NV("x-backend-id", S.id, il) };

		nghttp2_submit_response(s, id, nv, 3, &prd);
	}
}

static int s_begin(nghttp2_session *s, const nghttp2_frame *f, void *u)
{
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
		nghttp2_session_set_stream_user_data(s, f->hd.stream_id,
						     calloc(1, sizeof(struct sstream)));
	return 0;
}

static int s_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n, size_t nl,
		    const uint8_t *v, size_t vl, uint8_t flags, void *u)
{
	struct sstream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	if (st && nl == 12 && !memcmp(n, "content-type", 12) && vl >= 16 &&
	    !strncasecmp((const char *)v, "application/grpc", 16))
		st->grpc = 1;
	return 0;
}

static int s_frame(nghttp2_session *s, const nghttp2_frame *f, void *u)
{
	struct sstream *st = f->hd.stream_id ?
		nghttp2_session_get_stream_user_data(s, f->hd.stream_id) : NULL;

	if (st && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA))
		s_answer(s, f->hd.stream_id, st);
	return 0;
}

static int s_close(nghttp2_session *s, int32_t id, uint32_t code, void *u)
{
	free(nghttp2_session_get_stream_user_data(s, id));
	return 0;
}

static void serve_h2(int fd)
{
	nghttp2_session_callbacks *cb;
	nghttp2_session *s;
	uint8_t buf[16384];

	__atomic_add_fetch(&S.h2_conns, 1, __ATOMIC_RELAXED);
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, s_begin);
	nghttp2_session_callbacks_set_on_header_callback(cb, s_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, s_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, s_close);
	nghttp2_session_server_new(&s, cb, NULL);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
	while (!pump_out(s, fd)) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n <= 0 || nghttp2_session_mem_recv(s, buf, (size_t)n) < 0)
			break;
	}
	nghttp2_session_del(s);
}

/* HTTP/1.1: control endpoints and Upgrade (echo). */
static void serve_h1(int fd)
{
	char b[16384], out[512];
	size_t len = 0;
	char *end = NULL;

	b[0] = 0;
	while (len < sizeof(b) - 1 && !(end = strstr(b, "\r\n\r\n"))) {
		ssize_t n = recv(fd, b + len, sizeof(b) - 1 - len, 0);

		if (n <= 0)
			return;
		len += (size_t)n;
		b[len] = 0;
	}
	if (!end)
		return;
	end += 4;
	if (strcasestr(b, "\nupgrade:")) {
		static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
					   "Connection: Upgrade\r\n\r\nhello";
		ssize_t n;

		__atomic_add_fetch(&S.requests, 1, __ATOMIC_RELAXED);
		if (send_all(fd, resp, sizeof(resp) - 1))
			return;
		if (b + len > end && send_all(fd, end, (size_t)(b + len - end)))
			return;
		while ((n = recv(fd, b, sizeof(b), 0)) > 0)
			if (send_all(fd, b, (size_t)n))
				return;
		return;
	}
	if (!strncmp(b, "POST /__reset", 13)) {
		__atomic_store_n(&S.requests, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&S.failed, 0, __ATOMIC_RELAXED);
	}
	{
		char body[256];
		int bl = snprintf(body, sizeof(body),
				  "{\"id\":\"%s\",\"requests\":%lu,\"failed\":%lu,\"h2_connections\":%lu}\n",
				  S.id, __atomic_load_n(&S.requests, __ATOMIC_RELAXED),
				  __atomic_load_n(&S.failed, __ATOMIC_RELAXED),
				  __atomic_load_n(&S.h2_conns, __ATOMIC_RELAXED));
		int k = snprintf(out, sizeof(out),
				 "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
				 "content-length: %d\r\nconnection: close\r\n\r\n%s", bl, body);

		send_all(fd, out, (size_t)k);
	}
}

static void *conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char pk[3];

	if (getrandom(&rnd_state, sizeof(rnd_state), 0) != sizeof(rnd_state) || !rnd_state)
		rnd_state = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)fd ^ 0x9e3779b97f4a7c15ull;
	set_timeout(fd, 30000);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	if (recv(fd, pk, 3, MSG_PEEK) == 3 && !memcmp(pk, "PRI", 3))
		serve_h2(fd);
	else
		serve_h1(fd);
	close(fd);
	return NULL;
}

static __attribute__((noreturn)) void do_serve(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int port = 0, lfd, one = 1;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--id") && i + 1 < argc)
			S.id = argv[++i];
		else if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--fail-pct") && i + 1 < argc)
			S.fail_pct = atof(argv[++i]);
		else if (!strcmp(argv[i], "--fail-grpc") && i + 1 < argc)
			S.fail_grpc = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--fail-status") && i + 1 < argc)
			S.fail_status = atoi(argv[++i]);
		else
			die("serve: unknown option");
	}
	if (!S.id || !port)
		die("serve: --id and --port are required");
	sa.sin_port = htons((uint16_t)port);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 512))
		die("serve: cannot listen");
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		pthread_t th;

		if (fd < 0)
			continue;
		if (pthread_create(&th, NULL, conn_main, (void *)(intptr_t)fd)) {
			close(fd);
			continue;
		}
		pthread_detach(th);
	}
}

/* ---- client ---------------------------------------------------------------------- */

#define MAX_KEYS 32
struct counter {
	char k[MAX_KEYS][64];
	unsigned long v[MAX_KEYS];
	int n;
};

static void count(struct counter *c, const char *k, size_t kl)
{
	for (int i = 0; i < c->n; i++)
		if (strlen(c->k[i]) == kl && !memcmp(c->k[i], k, kl)) {
			c->v[i]++;
			return;
		}
	if (c->n == MAX_KEYS)
		return;
	snprintf(c->k[c->n], sizeof(c->k[0]), "%.*s", (int)kl, k);
	c->v[c->n++] = 1;
}

static void print_counter(const char *name, const struct counter *c)
{
	printf(",\"%s\":{", name);
	for (int i = 0; i < c->n; i++)
		printf("%s\"%s\":%lu", i ? "," : "", c->k[i], c->v[i]);
	printf("}");
}

struct creq {
	int status, grpc_status;
	char backend[64];
};

static struct {
	int grpc;
	const char *authority, *path;
	const char *hdr[16][2];
	int n_hdr;
	unsigned long sent, done, ok, errors;
	struct counter status, grpc_st, backend, trailers;
} C;

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n, size_t nl,
		    const uint8_t *v, size_t vl, uint8_t flags, void *u)
{
	struct creq *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	if (!r)
		return 0;
	if (nl == 7 && !memcmp(n, ":status", 7))
		r->status = atoi((const char *)v);
	else if (nl == 11 && !memcmp(n, "grpc-status", 11))
		r->grpc_status = atoi((const char *)v);
	else if (nl == 12 && !memcmp(n, "x-backend-id", 12))
		snprintf(r->backend, sizeof(r->backend), "%.*s", (int)vl, (const char *)v);
	if (f->headers.cat == NGHTTP2_HCAT_HEADERS)
		count(&C.trailers, (const char *)n, nl);
	return 0;
}

static int c_close(nghttp2_session *s, int32_t id, uint32_t code, void *u)
{
	struct creq *r = nghttp2_session_get_stream_user_data(s, id);
	char k[16];

	if (!r)
		return 0;
	C.done++;
	if (code != NGHTTP2_NO_ERROR || !r->status) {
		C.errors++;
	} else {
		snprintf(k, sizeof(k), "%d", r->status);
		count(&C.status, k, strlen(k));
		if (r->grpc_status >= 0) {
			snprintf(k, sizeof(k), "%d", r->grpc_status);
			count(&C.grpc_st, k, strlen(k));
		}
		if (r->backend[0])
			count(&C.backend, r->backend, strlen(r->backend));
		if (r->status == 200 && (!C.grpc || r->grpc_status == 0))
			C.ok++;
	}
	free(r);
	return 0;
}

static ssize_t c_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
		      nghttp2_data_source *src, void *u)
{
	static const uint8_t msg[] = { 0, 0, 0, 0, 2, 'h', 'i' };  /* one gRPC message */

	memcpy(buf, msg, sizeof(msg) < len ? sizeof(msg) : len);
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)(sizeof(msg) < len ? sizeof(msg) : len);
}

static void c_submit(nghttp2_session *s)
{
	nghttp2_nv nv[24];
	size_t n = 0;
	nghttp2_data_provider prd = { .read_callback = c_read };
	struct creq *r = calloc(1, sizeof(*r));

	r->grpc_status = -1;
#define ADD(a, b) nv[n++] = (nghttp2_nv){ (uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), 0 }
	ADD(":method", C.grpc ? "POST" : "GET");
	ADD(":scheme", "http");
	ADD(":authority", C.authority);
	ADD(":path", C.path);
	if (C.grpc) {
		ADD("content-type", "application/grpc");
		ADD("te", "trailers");
	}
	for (int i = 0; i < C.n_hdr; i++)
		ADD(C.hdr[i][0], C.hdr[i][1]);
#undef ADD
	if (nghttp2_submit_request(s, NULL, nv, n, C.grpc ? &prd : NULL, r) < 0) {
		free(r);
		C.errors++;
		C.done++;
	}
	C.sent++;
}

/* http://HOST:PORT/PATH into a connected socket. */
static int dial_url(const char *url, char *host, size_t hl, const char **path)
{
	const char *p = strncmp(url, "http://", 7) ? url : url + 7, *slash = strchr(p, '/');
	char hp[256], *colon;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(80) };
	int fd;

	snprintf(hp, sizeof(hp), "%.*s", slash ? (int)(slash - p) : (int)strlen(p), p);
	snprintf(host, hl, "%s", hp);
	*path = slash ? slash : "/";
	colon = strchr(hp, ':');
	if (colon) {
		*colon = 0;
		sa.sin_port = htons((uint16_t)atoi(colon + 1));
	}
	if (inet_pton(AF_INET, hp, &sa.sin_addr) != 1)
		die("only numeric IPv4 hosts");
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	return fd;
}

static int do_get(int argc, char **argv)
{
	unsigned long total = 100, conc = 10;
	int timeout = 10000, fd;
	char host[256];
	nghttp2_session_callbacks *cb;
	nghttp2_session *s;
	uint8_t buf[16384];

	if (argc < 3)
		die("get URL");
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			total = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "-c") && i + 1 < argc)
			conc = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--grpc"))
			C.grpc = 1;
		else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc)
			timeout = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-H") && i + 1 < argc && C.n_hdr < 16) {
			char *h = strdup(argv[++i]), *c = strchr(h, ':');

			if (!c)
				die("-H 'name: value'");
			*c++ = 0;
			while (*c == ' ')
				c++;
			for (char *q = h; *q; q++)
				*q = (char)tolower((unsigned char)*q);
			C.hdr[C.n_hdr][0] = h;
			C.hdr[C.n_hdr][1] = c;
			C.n_hdr++;
		} else {
			die("get: unknown option");
		}
	}
	fd = dial_url(argv[2], host, sizeof(host), &C.path);
	if (fd < 0) {
		printf("{\"requests\":%lu,\"ok\":0,\"errors\":%lu,\"connections\":0}\n", total, total);
		return 1;
	}
	C.authority = host;
	set_timeout(fd, timeout);
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
	nghttp2_session_client_new(&s, cb, NULL);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
	while (C.done < total) {
		ssize_t k;

		while (C.sent < total && C.sent - C.done < conc)
			c_submit(s);
		if (pump_out(s, fd))
			break;
		k = recv(fd, buf, sizeof(buf), 0);
		if (k <= 0 || nghttp2_session_mem_recv(s, buf, (size_t)k) < 0)
			break;
	}
	C.errors += total - C.done;
	printf("{\"requests\":%lu,\"ok\":%lu,\"errors\":%lu,\"connections\":1", total, C.ok,
	       C.errors);
	print_counter("status", &C.status);
	print_counter("grpc_status", &C.grpc_st);
	print_counter("backend", &C.backend);
	print_counter("trailers", &C.trailers);
	printf("}\n");
	nghttp2_session_del(s);
	close(fd);
	return C.errors ? 1 : 0;
}

/* ---- websocket-style upgrade -------------------------------------------------------- */

static int do_ws(int argc, char **argv)
{
	int n = 3, fd, status = 0, echoed = 0, greeting = 0;
	char host[256], req[512], b[4096];
	const char *path;
	size_t len = 0;
	char *end = NULL;

	if (argc < 3)
		die("ws URL");
	for (int i = 3; i < argc; i++)
		if (!strcmp(argv[i], "--messages") && i + 1 < argc)
			n = atoi(argv[++i]);
	fd = dial_url(argv[2], host, sizeof(host), &path);
	if (fd < 0)
		die("ws: connect");
	set_timeout(fd, 5000);
	snprintf(req, sizeof(req),
		 "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		 path, host);
	send_all(fd, req, strlen(req));
	while (len < sizeof(b) - 1) {
		ssize_t k = recv(fd, b + len, sizeof(b) - 1 - len, 0);

		if (k <= 0)
			break;
		len += (size_t)k;
		b[len] = 0;
		if ((end = strstr(b, "\r\n\r\n")) && strstr(end, "hello"))
			break;
	}
	if (len > 12 && !strncmp(b, "HTTP/1.1 ", 9))
		status = atoi(b + 9);
	greeting = end && strstr(end, "hello") != NULL;
	for (int i = 0; status == 101 && i < n; i++) {
		char msg[64], back[64] = { 0 };
		size_t k = 0, ml = (size_t)snprintf(msg, sizeof(msg), "message-%d", i);

		send_all(fd, msg, ml);
		while (k < ml) {
			ssize_t r = recv(fd, back + k, ml - k, 0);

			if (r <= 0)
				break;
			k += (size_t)r;
		}
		echoed += k == ml && !memcmp(back, msg, ml);
	}
	printf("{\"status\":%d,\"greeting\":%d,\"echoed\":%d}\n", status, greeting, echoed);
	close(fd);
	return status == 101 && echoed == n ? 0 : 1;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		die("usage: bm-h2 serve|get|ws ...");
	if (!strcmp(argv[1], "serve"))
		do_serve(argc, argv);
	if (!strcmp(argv[1], "get"))
		return do_get(argc, argv);
	if (!strcmp(argv[1], "ws"))
		return do_ws(argc, argv);
	die("usage: bm-h2 serve|get|ws ...");
	return 2;
}
