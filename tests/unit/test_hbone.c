/* HBONE client and server halves talking over a socketpair, in one thread:
 * the CONNECT exchange (200 / 401 / 503 / 400), bytes both ways with
 * half-close, flow control with a payload far larger than the windows, and
 * the same over TLS 1.3 with mutual auth, peer SPIFFE ID and session
 * resumption (certificates made here, so this does not depend on the
 * identity module). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <netinet/tcp.h>
#include "unit.h"
#include "tcpinfo.h"
#include "../../agent/hbone.h"

enum { UP_OK, UP_DENY, UP_UNREACHABLE };

struct tb {
	struct bm_loop cl, sl;           /* client and server workers */
	struct bm_wstats cst, sst;
	struct bm_hbone_conn *cli, *srv;
	int mode;
	int up_fd;                       /* the test's end of the upstream */
	int older_up[8], n_older_up;     /* earlier streams' ends still open (tb_fini closes) */
	char authority[64], baggage[256], forwarded[128], method[16];
	char peer[BM_HBONE_PEER_MAX];
	int closed_cli, closed_srv;
};

static int t_on_request(struct bm_hbone_conn *c, const struct bm_hbone_req *r, int *fd)
{
	struct tb *t = c->user;
	int sv[2];

	snprintf(t->method, sizeof(t->method), "%s", r->method);
	snprintf(t->authority, sizeof(t->authority), "%s", r->authority);
	snprintf(t->baggage, sizeof(t->baggage), "%s", r->baggage);
	snprintf(t->forwarded, sizeof(t->forwarded), "%s", r->forwarded);
	if (t->mode == UP_DENY)
		return 401;
	if (t->mode == UP_UNREACHABLE) {
		/* A port that was just free: the connect is refused. */
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(sa);
		int l = socket(AF_INET, SOCK_STREAM, 0), s;

		bind(l, (struct sockaddr *)&sa, sizeof(sa));
		getsockname(l, (struct sockaddr *)&sa, &len);
		close(l);
		s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS) {
			close(s);
			return 503;
		}
		*fd = s;
		return 0;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv))
		return 503;
	if (t->up_fd >= 0 && t->n_older_up < 8)
		t->older_up[t->n_older_up++] = t->up_fd;
	t->up_fd = sv[0];
	*fd = sv[1];
	return 0;
}

static int t_on_handshake(struct bm_hbone_conn *c)
{
	struct tb *t = c->user;

	if (bm_hbone_peer_uri(c->ssl, c->peer, sizeof(c->peer)))
		return -1;
	if (c->server)
		snprintf(t->peer, sizeof(t->peer), "%s", c->peer);
	return 0;
}

static void t_on_close(struct bm_hbone_conn *c)
{
	struct tb *t = c->user;

	if (c == t->cli) {
		t->closed_cli = 1;
		t->cli = NULL;
	} else if (c == t->srv) {
		t->closed_srv = 1;
		t->srv = NULL;
	}
}

static const struct bm_hbone_ops t_ops = {
	.on_request = t_on_request,
	.on_handshake = t_on_handshake,
	.on_close = t_on_close,
};

static void pump(struct tb *t, int rounds)
{
	for (int i = 0; i < rounds; i++) {
		bm_loop_run_once(&t->cl, 0);
		bm_loop_run_once(&t->sl, 1);
	}
}

/* The two halves on sfd (server) and cfd (client), both non-blocking. */
static void tb_init_fds(struct tb *t, SSL *cssl, SSL *sssl, int cfd, int sfd)
{
	signal(SIGPIPE, SIG_IGN); /* meshd ignores it too; EPIPE is handled */
	memset(t, 0, sizeof(*t));
	t->up_fd = -1;
	CU_ASSERT_EQUAL_FATAL(bm_loop_init(&t->cl, &t->cst), 0);
	CU_ASSERT_EQUAL_FATAL(bm_loop_init(&t->sl, &t->sst), 0);
	t->srv = bm_hbone_conn_new(&t->sl, sfd, sssl, 1, &t_ops, t);
	t->cli = bm_hbone_conn_new(&t->cl, cfd, cssl, 0, &t_ops, t);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t->srv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t->cli);
}

static void tb_init(struct tb *t, SSL *cssl, SSL *sssl)
{
	int sv[2];

	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	tb_init_fds(t, cssl, sssl, sv[1], sv[0]);
}

static void tb_fini(struct tb *t)
{
	if (t->cli)
		bm_hbone_conn_close(t->cli);
	if (t->srv)
		bm_hbone_conn_close(t->srv);
	pump(t, 2);
	if (t->up_fd >= 0)
		close(t->up_fd);
	for (int i = 0; i < t->n_older_up; i++)
		close(t->older_up[i]);
	bm_loop_fini(&t->cl);
	bm_loop_fini(&t->sl);
}

/* Open a stream; returns the test's end of the app socket. */
static int open_stream(struct tb *t)
{
	int ap[2];

	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, ap), 0);
	CU_ASSERT_EQUAL(bm_hbone_stream_open(t->cli, ap[1], "198.18.1.5:8080",
					     "k8s.namespace.name=default,k8s.workload.name=sleep",
					     "for=\"198.18.1.4:40000\""), 0);
	return ap[0];
}

/* Read until n bytes or EOF/error within the pump budget. */
static ssize_t read_some(struct tb *t, int fd, char *buf, size_t n, int rounds)
{
	size_t got = 0;

	for (int i = 0; i < rounds && got < n; i++) {
		ssize_t r = read(fd, buf + got, n - got);

		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r == 0 || (r < 0 && errno != EAGAIN))
			return got ? (ssize_t)got : r;
		pump(t, 1);
	}
	return (ssize_t)got;
}

static void exchange_ok(struct tb *t)
{
	struct bm_wstats c0 = t->cst, s0 = t->sst;
	char buf[64];
	int app = open_stream(t);

	pump(t, 20);
	CU_ASSERT_STRING_EQUAL(t->method, "CONNECT");
	CU_ASSERT_STRING_EQUAL(t->authority, "198.18.1.5:8080");
	CU_ASSERT_STRING_EQUAL(t->baggage, "k8s.namespace.name=default,k8s.workload.name=sleep");
	CU_ASSERT_STRING_EQUAL(t->forwarded, "for=\"198.18.1.4:40000\"");
	CU_ASSERT_EQUAL(t->cst.status_200 - c0.status_200, 1);
	CU_ASSERT_EQUAL(t->sst.status_200 - s0.status_200, 1);
	CU_ASSERT_FATAL(t->up_fd >= 0);

	CU_ASSERT_EQUAL(write(app, "ping", 4), 4);
	CU_ASSERT_EQUAL(read_some(t, t->up_fd, buf, 4, 50), 4);
	CU_ASSERT_NSTRING_EQUAL(buf, "ping", 4);
	CU_ASSERT_EQUAL(write(t->up_fd, "pong!", 5), 5);
	CU_ASSERT_EQUAL(read_some(t, app, buf, 5, 50), 5);
	CU_ASSERT_NSTRING_EQUAL(buf, "pong!", 5);

	/* Half-close: the client's FIN reaches the upstream as EOF, and the
	 * upstream can still answer. */
	shutdown(app, SHUT_WR);
	CU_ASSERT_EQUAL(read_some(t, t->up_fd, buf, 1, 50), 0);
	CU_ASSERT_EQUAL(write(t->up_fd, "late", 4), 4);
	CU_ASSERT_EQUAL(read_some(t, app, buf, 4, 50), 4);
	CU_ASSERT_NSTRING_EQUAL(buf, "late", 4);
	close(t->up_fd);
	t->up_fd = -1;
	CU_ASSERT_EQUAL(read_some(t, app, buf, 1, 50), 0);
	pump(t, 10);
	CU_ASSERT_EQUAL(t->cst.conns[BM_PDIR_OUT_HBONE][BM_PRES_OK] - c0.conns[BM_PDIR_OUT_HBONE][BM_PRES_OK], 1);
	CU_ASSERT_EQUAL(t->sst.conns[BM_PDIR_IN_HBONE][BM_PRES_OK] - s0.conns[BM_PDIR_IN_HBONE][BM_PRES_OK], 1);
	CU_ASSERT_EQUAL(t->cst.active[BM_PDIR_OUT_HBONE], 0);
	CU_ASSERT_EQUAL(t->sst.active[BM_PDIR_IN_HBONE], 0);
	CU_ASSERT_EQUAL(t->cst.bytes_up[BM_PDIR_OUT_HBONE] - c0.bytes_up[BM_PDIR_OUT_HBONE], 4);
	CU_ASSERT_EQUAL(t->cst.bytes_down[BM_PDIR_OUT_HBONE] - c0.bytes_down[BM_PDIR_OUT_HBONE], 9);
	CU_ASSERT_EQUAL(t->sst.streams_reset + t->cst.streams_reset, 0);
	/* The pooled connection outlives the stream. */
	CU_ASSERT_PTR_NOT_NULL(t->cli);
	CU_ASSERT(bm_hbone_conn_usable(t->cli));
	close(app);
}

static void test_hbone_connect_200(void)
{
	struct tb t;

	tb_init(&t, NULL, NULL);
	exchange_ok(&t);
	/* A second stream reuses the connection. */
	t.mode = UP_OK;
	exchange_ok(&t);
	CU_ASSERT_EQUAL(t.cst.h2_client, 1);
	tb_fini(&t);
}

/* A new connection's first bytes go with the CONNECT: the server has them
 * at its upstream before the client has seen the 200. */
static void test_hbone_data_before_200(void)
{
	struct tb t;
	char buf[16];
	ssize_t got = 0;
	int ap[2];

	tb_init(&t, NULL, NULL);
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, ap), 0);
	CU_ASSERT_EQUAL(write(ap[0], "GET / HTTP/1.1", 14), 14); /* there before the accept */
	CU_ASSERT_EQUAL(bm_hbone_stream_open(t.cli, ap[1], "198.18.1.5:8080", NULL, NULL), 0);
	/* The client's loop runs once (its write goes after the batch), then
	 * only the server: whatever it delivers came in that first write. */
	bm_loop_run_once(&t.cl, 0);
	for (int i = 0; i < 20 && got < 14; i++) {
		bm_loop_run_once(&t.sl, 1);
		if (t.up_fd >= 0) {
			ssize_t r = read(t.up_fd, buf + got, sizeof(buf) - (size_t)got);

			if (r > 0)
				got += r;
		}
	}
	CU_ASSERT_EQUAL(got, 14);
	CU_ASSERT_NSTRING_EQUAL(buf, "GET / HTTP/1.1", 14);
	CU_ASSERT_EQUAL(t.sst.status_200, 1);
	CU_ASSERT_EQUAL(t.cst.status_200, 0);
	/* The server holds its 200 until the app answers, and sends both in
	 * one write. */
	pump(&t, 10);
	CU_ASSERT_EQUAL(t.cst.status_200, 0);
	CU_ASSERT_EQUAL(write(t.up_fd, "200 OK", 6), 6);
	CU_ASSERT_EQUAL(read_some(&t, ap[0], buf, 6, 50), 6);
	CU_ASSERT_NSTRING_EQUAL(buf, "200 OK", 6);
	CU_ASSERT_EQUAL(t.cst.status_200, 1);
	close(ap[0]);
	close(t.up_fd);
	t.up_fd = -1;
	pump(&t, 10);
	CU_ASSERT_EQUAL(t.cst.active[BM_PDIR_OUT_HBONE], 0);
	CU_ASSERT_EQUAL(t.sst.active[BM_PDIR_IN_HBONE], 0);
	CU_ASSERT_EQUAL(t.cst.conns[BM_PDIR_OUT_HBONE][BM_PRES_OK], 1);

	/* An app that says nothing: the tick sends the held 200. */
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, ap), 0);
	CU_ASSERT_EQUAL(write(ap[0], "x", 1), 1);
	CU_ASSERT_EQUAL(bm_hbone_stream_open(t.cli, ap[1], "198.18.1.5:8080", NULL, NULL), 0);
	for (int i = 0; i < 20 && t.up_fd < 0; i++)
		pump(&t, 1);
	CU_ASSERT_FATAL(t.up_fd >= 0);
	CU_ASSERT_EQUAL(read_some(&t, t.up_fd, buf, 1, 50), 1);
	pump(&t, 10);
	CU_ASSERT_EQUAL(t.cst.status_200, 1);
	bm_hbone_conn_tick(t.srv, t.sl.now_ms, 1000000, 1000000, 0);
	pump(&t, 10);
	CU_ASSERT_EQUAL(t.cst.status_200, 2);
	CU_ASSERT_EQUAL(t.cst.active[BM_PDIR_OUT_HBONE], 1);
	close(ap[0]);
	tb_fini(&t);
}

/* Streams opened in one event batch leave in one write: three CONNECTs with
 * their first bytes arrive at the server as one TCP segment. */
static void test_hbone_one_write_per_batch(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM, 0), cfd, sfd, one = 1, ap[3][2];
	struct tb t;
	long segs;

	CU_ASSERT_FATAL(l >= 0);
	CU_ASSERT_EQUAL_FATAL(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	CU_ASSERT_EQUAL_FATAL(listen(l, 1), 0);
	CU_ASSERT_EQUAL_FATAL(getsockname(l, (struct sockaddr *)&sa, &len), 0);
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	CU_ASSERT_EQUAL_FATAL(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	sfd = accept4(l, NULL, NULL, SOCK_NONBLOCK);
	close(l);
	CU_ASSERT_FATAL(sfd >= 0);
	fcntl(cfd, F_SETFL, O_NONBLOCK);
	/* Each write its own segment, as meshd's sockets. */
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	tb_init_fds(&t, NULL, NULL, cfd, sfd);
	pump(&t, 5); /* SETTINGS both ways */
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, ap[i]), 0);
		CU_ASSERT_EQUAL(write(ap[i][0], "hello", 5), 5);
	}
	segs = t_data_segs_in(sfd);
	CU_ASSERT_FATAL(segs >= 0);
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(bm_hbone_stream_open(t.cli, ap[i][1], "198.18.1.5:8080", NULL, NULL), 0);
	bm_loop_run_once(&t.cl, 0);
	CU_ASSERT_EQUAL(t_data_segs_in(sfd) - segs, 1);
	pump(&t, 20);
	CU_ASSERT_EQUAL(t.sst.conns[BM_PDIR_IN_HBONE][BM_PRES_OK], 3);
	for (int i = 0; i < 3; i++)
		close(ap[i][0]);
	if (t.up_fd >= 0)
		close(t.up_fd);
	t.up_fd = -1;
	tb_fini(&t);
}

static void refused(int mode, int status)
{
	struct tb t;
	char buf[8];
	int app;

	tb_init(&t, NULL, NULL);
	t.mode = mode;
	app = open_stream(&t);
	/* Sent before the refusal comes back: the server drops it. */
	CU_ASSERT_EQUAL(write(app, "early", 5), 5);
	pump(&t, 30);
	/* The app sees its connection end without a byte. */
	CU_ASSERT(read_some(&t, app, buf, sizeof(buf), 30) <= 0);
	if (status == 401) {
		CU_ASSERT_EQUAL(t.cst.status_401, 1);
		CU_ASSERT_EQUAL(t.sst.status_401, 1);
		CU_ASSERT_EQUAL(t.sst.conns[BM_PDIR_IN_HBONE][BM_PRES_DENIED], 1);
		CU_ASSERT_EQUAL(t.cst.conns[BM_PDIR_OUT_HBONE][BM_PRES_DENIED], 1);
	} else {
		CU_ASSERT_EQUAL(t.cst.status_503, 1);
		CU_ASSERT_EQUAL(t.sst.status_503, 1);
		CU_ASSERT_EQUAL(t.sst.conns[BM_PDIR_IN_HBONE][BM_PRES_UPSTREAM], 1);
		CU_ASSERT_EQUAL(t.cst.conns[BM_PDIR_OUT_HBONE][BM_PRES_UPSTREAM], 1);
	}
	CU_ASSERT_EQUAL(t.cst.active[BM_PDIR_OUT_HBONE], 0);
	CU_ASSERT_EQUAL(t.sst.active[BM_PDIR_IN_HBONE], 0);
	/* A refused stream does not cost the connection. */
	CU_ASSERT(bm_hbone_conn_usable(t.cli));
	close(app);
	tb_fini(&t);
}

static void test_hbone_deny_401(void)
{
	refused(UP_DENY, 401);
}


static void test_hbone_unreachable_503(void)
{
	refused(UP_UNREACHABLE, 503);
}

static void test_hbone_not_connect_400(void)
{
	static const nghttp2_nv get[] = {
		{ (uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0 },
		{ (uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0 },
		{ (uint8_t *)":authority", (uint8_t *)"198.18.1.5:8080", 10, 15, 0 },
		{ (uint8_t *)":path", (uint8_t *)"/", 5, 1, 0 },
	};
	struct tb t;

	tb_init(&t, NULL, NULL);
	pump(&t, 5);
	/* A plain GET on the tunnel port, straight through the client's h2. */
	CU_ASSERT(nghttp2_submit_request(t.cli->h2, NULL, get, 4, NULL, NULL) > 0);
	/* Kick the client's writer with an idle tick (it flushes). */
	bm_hbone_conn_tick(t.cli, t.cl.now_ms, 1000000, 1000000, 0);
	pump(&t, 20);
	CU_ASSERT_EQUAL(t.sst.status_400, 1);
	CU_ASSERT_STRING_EQUAL(t.method, "");  /* never reached on_request */
	CU_ASSERT_EQUAL(t.sst.conns[BM_PDIR_IN_HBONE][BM_PRES_ERROR], 1);
	CU_ASSERT_EQUAL(t.sst.active[BM_PDIR_IN_HBONE], 0);
	tb_fini(&t);
}

/* 8 MiB each way at once, far beyond the 256 KiB stream window: every byte
 * arrives in order, and nothing buffers beyond a window. */
#define BIG (8u << 20)

static uint8_t pattern(size_t i, unsigned seed)
{
	return (uint8_t)((i * 2654435761u) >> 13) ^ (uint8_t)seed;
}

static void bulk(struct tb *t)
{
	static uint8_t buf[65536];
	size_t sent_c = 0, sent_u = 0, got_c = 0, got_u = 0;
	int app = open_stream(t), bad = 0, rounds = 0;

	pump(t, 20);
	CU_ASSERT_FATAL(t->up_fd >= 0);
	while ((got_c < BIG || got_u < BIG) && rounds++ < 200000) {
		ssize_t n;

		if (sent_c < BIG) {
			size_t k = BIG - sent_c < sizeof(buf) ? BIG - sent_c : sizeof(buf);

			for (size_t i = 0; i < k; i++)
				buf[i] = pattern(sent_c + i, 1);
			n = write(app, buf, k);
			if (n > 0)
				sent_c += (size_t)n;
			if (sent_c == BIG)
				shutdown(app, SHUT_WR);
		}
		if (sent_u < BIG) {
			size_t k = BIG - sent_u < sizeof(buf) ? BIG - sent_u : sizeof(buf);

			for (size_t i = 0; i < k; i++)
				buf[i] = pattern(sent_u + i, 2);
			n = write(t->up_fd, buf, k);
			if (n > 0)
				sent_u += (size_t)n;
			if (sent_u == BIG)
				shutdown(t->up_fd, SHUT_WR);
		}
		while ((n = read(t->up_fd, buf, sizeof(buf))) > 0) {
			for (ssize_t i = 0; i < n; i++)
				bad += buf[i] != pattern(got_u + (size_t)i, 1);
			got_u += (size_t)n;
		}
		while ((n = read(app, buf, sizeof(buf))) > 0) {
			for (ssize_t i = 0; i < n; i++)
				bad += buf[i] != pattern(got_c + (size_t)i, 2);
			got_c += (size_t)n;
		}
		pump(t, 1);
		/* Flow control bounds what each side holds: the connection's
		 * output queue, plus one window per stream. */
		CU_ASSERT(t->cl.n_free_chunks <= 256);
	}
	CU_ASSERT_EQUAL(got_u, BIG);
	CU_ASSERT_EQUAL(got_c, BIG);
	CU_ASSERT_EQUAL(bad, 0);
	/* Both ends saw EOF. */
	CU_ASSERT_EQUAL(read_some(t, app, (char *)buf, 1, 50), 0);
	CU_ASSERT_EQUAL(read_some(t, t->up_fd, (char *)buf, 1, 50), 0);
	pump(t, 10);
	CU_ASSERT_EQUAL(t->cst.active[BM_PDIR_OUT_HBONE], 0);
	CU_ASSERT_EQUAL(t->sst.active[BM_PDIR_IN_HBONE], 0);
	CU_ASSERT_EQUAL(t->cst.bytes_up[BM_PDIR_OUT_HBONE], BIG);
	CU_ASSERT_EQUAL(t->sst.bytes_down[BM_PDIR_IN_HBONE], BIG);
	close(app);
}

static void test_hbone_flow_control_8mib(void)
{
	struct tb t;

	tb_init(&t, NULL, NULL);
	bulk(&t);
	tb_fini(&t);
}

/* ---- TLS ---------------------------------------------------------------- */

static EVP_PKEY *ec_key(void)
{
	return EVP_EC_gen("P-256");
}

static X509 *make_cert(EVP_PKEY *key, EVP_PKEY *signer_key, X509 *issuer, const char *uri, int ca)
{
	X509 *x = X509_new();
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	char san[512];

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(random() & 0x7fffffff));
	X509_gmtime_adj(X509_getm_notBefore(x), -120);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	if (ca)
		X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC,
					   (const unsigned char *)"test mesh", -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	if (ca) {
		ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
		ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		snprintf(san, sizeof(san), "URI:%s", uri);
		ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
		ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
	}
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	X509_sign(x, signer_key, EVP_sha256());
	return x;
}

static const unsigned char alpn_h2[] = { 2, 'h', '2' };

static int alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned inlen, void *arg)
{
	unsigned char *o;

	if (SSL_select_next_proto(&o, outlen, alpn_h2, sizeof(alpn_h2), in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = o;
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_ctx(int server, X509 *root, EVP_PKEY *root_key, const char *id)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	EVP_PKEY *key = ec_key();
	X509 *leaf = make_cert(key, root_key, root, id, 0);

	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_use_certificate(ctx, leaf);
	SSL_CTX_use_PrivateKey(ctx, key);
	X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), root);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	if (server) {
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
		SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"bm", 2);
	} else {
		SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2));
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
	}
	X509_free(leaf);
	EVP_PKEY_free(key);
	return ctx;
}

static void test_hbone_tls(void)
{
	EVP_PKEY *root_key = ec_key();
	X509 *root = make_cert(root_key, root_key, NULL, NULL, 1);
	SSL_CTX *sctx = make_ctx(1, root, root_key, "spiffe://cluster.local/ns/default/sa/reviews");
	SSL_CTX *cctx = make_ctx(0, root, root_key, "spiffe://cluster.local/ns/default/sa/sleep");
	SSL_SESSION *sess;
	struct tb t;
	SSL *c;

	tb_init(&t, SSL_new(cctx), SSL_new(sctx));
	/* Idle tunnels give their TLS buffers back; busy ones keep them. */
	CU_ASSERT(SSL_get_mode(t.cli->ssl) & SSL_MODE_RELEASE_BUFFERS);
	{
		int app = open_stream(&t);

		CU_ASSERT_FALSE(SSL_get_mode(t.cli->ssl) & SSL_MODE_RELEASE_BUFFERS);
		pump(&t, 20);
		CU_ASSERT_FALSE(SSL_get_mode(t.srv->ssl) & SSL_MODE_RELEASE_BUFFERS);
		close(app);
		close(t.up_fd);
		t.up_fd = -1;
		pump(&t, 20);
		CU_ASSERT(SSL_get_mode(t.cli->ssl) & SSL_MODE_RELEASE_BUFFERS);
		CU_ASSERT(SSL_get_mode(t.srv->ssl) & SSL_MODE_RELEASE_BUFFERS);
	}
	exchange_ok(&t);
	CU_ASSERT_STRING_EQUAL(t.peer, "spiffe://cluster.local/ns/default/sa/sleep");
	CU_ASSERT_STRING_EQUAL(t.cli->peer, "spiffe://cluster.local/ns/default/sa/reviews");
	CU_ASSERT_EQUAL(t.cst.tls_client, 1);
	CU_ASSERT_EQUAL(t.sst.tls_server, 1);
	CU_ASSERT_EQUAL(t.cst.tls_resumed, 0);
	sess = SSL_get1_session(t.cli->ssl);
	CU_ASSERT(sess && SSL_SESSION_is_resumable(sess));
	tb_fini(&t);

	/* The replacement connection resumes (no certificate exchange) and
	 * still knows who the client is. */
	c = SSL_new(cctx);
	SSL_set_session(c, sess);
	tb_init(&t, c, SSL_new(sctx));
	t.mode = UP_OK;
	bulk(&t);
	CU_ASSERT_EQUAL(t.cst.tls_resumed, 1);
	CU_ASSERT_EQUAL(t.sst.tls_resumed, 1);
	CU_ASSERT_STRING_EQUAL(t.peer, "spiffe://cluster.local/ns/default/sa/sleep");
	tb_fini(&t);
	SSL_SESSION_free(sess);

	/* A client whose certificate another CA signed is refused. */
	{
		EVP_PKEY *k2 = ec_key();
		X509 *r2 = make_cert(k2, k2, NULL, NULL, 1);
		SSL_CTX *evil = make_ctx(0, root, k2, "spiffe://cluster.local/ns/default/sa/sleep");
		char buf[4];
		int app;

		(void)r2;
		tb_init(&t, SSL_new(evil), SSL_new(sctx));
		app = open_stream(&t);
		pump(&t, 30);
		CU_ASSERT(read_some(&t, app, buf, sizeof(buf), 30) <= 0);
		CU_ASSERT_EQUAL(t.sst.tls_failed, 1);
		CU_ASSERT_EQUAL(t.sst.tls_server, 0);
		CU_ASSERT_STRING_EQUAL(t.method, "");
		CU_ASSERT_EQUAL(t.cst.conns[BM_PDIR_OUT_HBONE][BM_PRES_UPSTREAM], 1);
		close(app);
		tb_fini(&t);
		SSL_CTX_free(evil);
		X509_free(r2);
		EVP_PKEY_free(k2);
	}
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
	X509_free(root);
	EVP_PKEY_free(root_key);
}

BM_SUITE(hbone, BM_CASE(test_hbone_connect_200), BM_CASE(test_hbone_data_before_200),
	 BM_CASE(test_hbone_one_write_per_batch),
	 BM_CASE(test_hbone_deny_401),
	 BM_CASE(test_hbone_unreachable_503), BM_CASE(test_hbone_not_connect_400),
	 BM_CASE(test_hbone_flow_control_8mib), BM_CASE(test_hbone_tls))
