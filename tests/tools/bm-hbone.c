/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-hbone: a minimal HBONE client (istio-api.md §10.1) for the sandbox tests:
 * TCP to a pod's 15008, TLS 1.3 with a client certificate and ALPN h2, one
 * HTTP/2 CONNECT stream, optionally a payload and its echo. Independent of
 * agent/ (OpenSSL + nghttp2 only), so it checks meshd from the outside.
 *
 *   --connect IP:PORT     the HBONE listener (podIP:15008)
 *   --authority A         :authority of the CONNECT (podIP:targetPort)
 *   --cert F --key F      client certificate and key (PEM); both optional
 *                         (without them no client certificate is sent)
 *   --ca F                trust bundle to verify the server with; without it
 *                         the server certificate is not verified
 *   --expect-peer ID      also require this SPIFFE ID as the server's URI SAN
 *   --method M            :method (default CONNECT; any other is sent as an
 *                         ordinary request with :scheme https, :path /)
 *   --send STRING         after 200, send STRING on the stream
 *   --expect-echo         the data read back must contain STRING
 *   --expect-status N     success iff TLS worked and the CONNECT got N
 *   --expect-tls-failure  success iff TLS failed (handshake refused, or the
 *                         server alerted / closed before its first HTTP/2 frame)
 *   --timeout-ms MS       overall deadline (default 5000)
 *
 * Prints one JSON line:
 *   {"tls":"ok"|"failed: REASON","alpn":"h2","peer_id":"spiffe://...",
 *    "status":200,"echo":"banner\nSTRING","error":"..."}
 * status is 0 when no response came; echo is what the stream carried back
 * (bm-testsrv sends "ID\n" first, then echoes). Exit 0 iff the outcome is the
 * expected one (default: TLS ok, status 200, and the echo if asked), else 1;
 * 2 for usage errors.
 *
 * "tls":"ok" means the server's first HTTP/2 bytes arrived: with TLS 1.3 a
 * server that refuses the client certificate does so after the client's
 * handshake has completed, so the refusal shows up on the first read.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define ECHO_MAX 65536

static struct {
	const char *connect, *authority, *cert, *key, *ca, *expect_peer, *method, *send;
	bool expect_echo, expect_tls_failure;
	int expect_status, timeout_ms;
	/* state */
	int fd;
	SSL *ssl;
	nghttp2_session *h2;
	int32_t stream_id;
	bool got_app_data;      /* any decrypted byte from the server: TLS is up */
	bool stream_closed, goaway, want_eof, eof_sent;
	size_t send_off;
	int status;
	char echo[ECHO_MAX + 1];
	size_t echo_len;
	char tls[1200], error[400], peer_id[300], alpn[32];
	long long deadline_ms;
} g = { .method = "CONNECT", .expect_status = -1, .timeout_ms = 5000, .fd = -1, .stream_id = -1 };

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int remaining_ms(void)
{
	long long r = g.deadline_ms - now_ms();

	return r < 0 ? 0 : (int)r;
}

static void json_str(const char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = s[i];

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch == '\n')
			printf("\\n");
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

/* The OpenSSL error queue (and errno) as one short reason. */
static void ssl_reason(char *buf, size_t len, const char *what, int ret)
{
	int e = SSL_get_error(g.ssl, ret);
	unsigned long code = ERR_peek_last_error();
	char ebuf[256] = "";

	if (code)
		ERR_error_string_n(code, ebuf, sizeof(ebuf));
	if (e == SSL_ERROR_ZERO_RETURN)
		snprintf(buf, len, "%s: peer sent close_notify", what);
	else if (e == SSL_ERROR_SYSCALL && !code)
		snprintf(buf, len, "%s: %s", what, ret == 0 || !errno ? "connection closed by peer" : strerror(errno));
	else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		snprintf(buf, len, "%s: timed out", what);
	else
		snprintf(buf, len, "%s: %s", what, code ? ebuf : "ssl error");
	ERR_clear_error();
}

/* Wait for the socket to be readable/writable as SSL wants; false on timeout. */
static bool ssl_wait(int ret)
{
	int e = SSL_get_error(g.ssl, ret);
	struct pollfd pfd = { .fd = g.fd };

	if (e == SSL_ERROR_WANT_READ)
		pfd.events = POLLIN;
	else if (e == SSL_ERROR_WANT_WRITE)
		pfd.events = POLLOUT;
	else
		return false;
	return poll(&pfd, 1, remaining_ms()) == 1;
}

static int tcp_connect(void)
{
	char host[64];
	const char *colon = strrchr(g.connect, ':');
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int fd, err = 0, one = 1;
	socklen_t el = sizeof(err);
	struct pollfd pfd;

	if (!colon || (size_t)(colon - g.connect) >= sizeof(host))
		return -EINVAL;
	memcpy(host, g.connect, colon - g.connect);
	host[colon - g.connect] = 0;
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	sa.sin_port = htons(atoi(colon + 1));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		err = -errno;
		close(fd);
		return err;
	}
	pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
	if (poll(&pfd, 1, remaining_ms()) != 1) {
		close(fd);
		return -ETIMEDOUT;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
	if (err) {
		close(fd);
		return -err;
	}
	g.fd = fd;
	return 0;
}

/* ---- nghttp2 callbacks ---- */

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
			 nghttp2_data_source *src, void *user)
{
	size_t total = g.send ? strlen(g.send) : 0;

	if (g.status == 200 && g.send_off < total) {
		size_t n = total - g.send_off < len ? total - g.send_off : len;

		memcpy(buf, g.send + g.send_off, n);
		g.send_off += n;
		return (ssize_t)n;
	}
	if (g.want_eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		g.eof_sent = true;
		return 0;
	}
	return NGHTTP2_ERR_DEFERRED;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		     const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	if (f->hd.type == NGHTTP2_HEADERS && f->hd.stream_id == g.stream_id && nlen == 7 &&
	    !memcmp(name, ":status", 7)) {
		char v[8] = "";

		memcpy(v, value, vlen < sizeof(v) - 1 ? vlen : sizeof(v) - 1);
		g.status = atoi(v);
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	if (f->hd.type == NGHTTP2_HEADERS && f->hd.stream_id == g.stream_id && g.status == 200 && g.send)
		nghttp2_session_resume_data(s, g.stream_id);
	if (f->hd.type == NGHTTP2_GOAWAY)
		g.goaway = true;
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		   void *user)
{
	size_t room = ECHO_MAX - g.echo_len;

	if (id != g.stream_id)
		return 0;
	if (len > room)
		len = room;
	memcpy(g.echo + g.echo_len, data, len);
	g.echo_len += len;
	g.echo[g.echo_len] = 0;
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *user)
{
	if (id == g.stream_id) {
		g.stream_closed = true;
		if (code && !g.error[0])
			snprintf(g.error, sizeof(g.error), "stream reset: %s", nghttp2_http2_strerror(code));
	}
	return 0;
}

/* Everything nghttp2 wants to send, through TLS. */
static int flush_h2(void)
{
	const uint8_t *data;
	ssize_t n;

	while ((n = nghttp2_session_mem_send(g.h2, &data)) > 0) {
		while (n > 0) {
			int w = SSL_write(g.ssl, data, (int)n);

			if (w > 0) {
				data += w;
				n -= w;
				continue;
			}
			if (!ssl_wait(w)) {
				ssl_reason(g.error, sizeof(g.error), "write", w);
				return -1;
			}
		}
	}
	return n < 0 ? -1 : 0;
}

static bool done(void)
{
	size_t want = g.send ? strlen(g.send) : 0;

	if (g.stream_closed || g.goaway)
		return true;
	if (g.status && g.status != 200)
		return true;
	if (g.status == 200) {
		if (g.send)
			return g.send_off == want && strstr(g.echo, g.send) != NULL;
		return g.echo_len > 0 && memchr(g.echo, '\n', g.echo_len); /* the banner */
	}
	return false;
}

/* Read one TLS record's worth and feed nghttp2. 1 progress, 0 EOF, -1 error. */
static int read_some(void)
{
	uint8_t buf[16384];

	for (;;) {
		int r = SSL_read(g.ssl, buf, sizeof(buf));

		if (r > 0) {
			if (!g.got_app_data) {
				g.got_app_data = true;
				snprintf(g.tls, sizeof(g.tls), "ok");
			}
			if (nghttp2_session_mem_recv(g.h2, buf, r) < 0) {
				snprintf(g.error, sizeof(g.error), "bad HTTP/2 from server");
				return -1;
			}
			return 1;
		}
		if (SSL_get_error(g.ssl, r) == SSL_ERROR_WANT_READ ||
		    SSL_get_error(g.ssl, r) == SSL_ERROR_WANT_WRITE) {
			if (ssl_wait(r))
				continue;
			snprintf(g.error, sizeof(g.error), "timed out waiting for the server");
			if (!g.got_app_data)
				snprintf(g.tls, sizeof(g.tls), "failed: timed out before the server's first frame");
			return -1;
		}
		if (!g.got_app_data) {
			char why[400];

			ssl_reason(why, sizeof(why), "after handshake", r);
			snprintf(g.tls, sizeof(g.tls), "failed: %s", why);
		} else {
			ssl_reason(g.error, sizeof(g.error), "read", r);
		}
		return SSL_get_error(g.ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	}
}

static void peer_identity(void)
{
	X509 *peer = SSL_get1_peer_certificate(g.ssl);
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;

	SSL_get0_alpn_selected(g.ssl, &alpn, &alpn_len);
	snprintf(g.alpn, sizeof(g.alpn), "%.*s", (int)alpn_len, alpn ? (const char *)alpn : "");
	if (!peer)
		return;
	GENERAL_NAMES *names = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);

	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);

		if (gn->type == GEN_URI) {
			snprintf(g.peer_id, sizeof(g.peer_id), "%.*s",
				 ASN1_STRING_length(gn->d.uniformResourceIdentifier),
				 (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier));
			break;
		}
	}
	GENERAL_NAMES_free(names);
	X509_free(peer);
}

static int run(void)
{
	static const unsigned char alpn[] = "\x02h2";
	SSL_CTX *ctx;
	nghttp2_session_callbacks *cb;
	nghttp2_settings_entry settings[] = { { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100 } };
	nghttp2_data_provider prd = { .read_callback = data_read };
	nghttp2_nv nv[4];
	size_t nnv = 2;
	int err, r;

	err = tcp_connect();
	if (err) {
		snprintf(g.tls, sizeof(g.tls), "failed: tcp connect: %s", strerror(-err));
		return -1;
	}
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return -1;
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
	if (g.cert && (SSL_CTX_use_certificate_chain_file(ctx, g.cert) != 1 ||
		       SSL_CTX_use_PrivateKey_file(ctx, g.key, SSL_FILETYPE_PEM) != 1 ||
		       SSL_CTX_check_private_key(ctx) != 1)) {
		fprintf(stderr, "bm-hbone: cannot load %s / %s\n", g.cert, g.key);
		exit(2);
	}
	if (g.ca) {
		if (SSL_CTX_load_verify_locations(ctx, g.ca, NULL) != 1) {
			fprintf(stderr, "bm-hbone: cannot load %s\n", g.ca);
			exit(2);
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	g.ssl = SSL_new(ctx);
	SSL_set_fd(g.ssl, g.fd);
	/* A URI SAN check on the server: OpenSSL has no URI host check, so it is
	 * done after the handshake (below). */
	while ((r = SSL_connect(g.ssl)) != 1) {
		if (!ssl_wait(r)) {
			char why[400];

			ssl_reason(why, sizeof(why), "handshake", r);
			snprintf(g.tls, sizeof(g.tls), "failed: %s", why);
			return -1;
		}
	}
	peer_identity();
	if (g.expect_peer && strcmp(g.peer_id, g.expect_peer)) {
		snprintf(g.tls, sizeof(g.tls), "failed: server is %s, not %.256s", g.peer_id, g.expect_peer);
		return -1;
	}
	if (strcmp(g.alpn, "h2")) {
		snprintf(g.tls, sizeof(g.tls), "failed: ALPN '%s', not h2", g.alpn);
		return -1;
	}

	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_client_new(&g.h2, cb, NULL);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(g.h2, NGHTTP2_FLAG_NONE, settings, 1);
	nv[0] = (nghttp2_nv){ (uint8_t *)":method", (uint8_t *)g.method, 7, strlen(g.method),
			      NGHTTP2_NV_FLAG_NONE };
	nv[1] = (nghttp2_nv){ (uint8_t *)":authority", (uint8_t *)g.authority, 10, strlen(g.authority),
			      NGHTTP2_NV_FLAG_NONE };
	if (strcmp(g.method, "CONNECT")) {
		/* Any other method is a well-formed ordinary request (RFC 9113
		 * 8.3.1 wants :scheme and :path), so the server's HTTP layer, not
		 * nghttp2's header checks, gets to refuse it. */
		nv[nnv++] = (nghttp2_nv){ (uint8_t *)":scheme", (uint8_t *)"https", 7, 5, NGHTTP2_NV_FLAG_NONE };
		nv[nnv++] = (nghttp2_nv){ (uint8_t *)":path", (uint8_t *)"/", 5, 1, NGHTTP2_NV_FLAG_NONE };
	}
	/* A data provider, so the HEADERS do not carry END_STREAM: the tunnel
	 * stays open both ways until we are done. */
	g.stream_id = nghttp2_submit_request(g.h2, NULL, nv, nnv, &prd, NULL);
	if (g.stream_id < 0) {
		snprintf(g.error, sizeof(g.error), "submit: %s", nghttp2_strerror(g.stream_id));
		return -1;
	}
	if (flush_h2())
		goto fail_tls;
	while (!done()) {
		if (!remaining_ms()) {
			snprintf(g.error, sizeof(g.error), "timed out (status %d, %zu bytes back)", g.status,
				 g.echo_len);
			break;
		}
		r = read_some();
		if (r <= 0)
			break;
		if (flush_h2())
			break;
	}
	if (!g.got_app_data && !g.tls[0])
		snprintf(g.tls, sizeof(g.tls), "failed: no HTTP/2 frame from the server");
	if (g.got_app_data && g.status == 200 && !g.stream_closed && !g.goaway) {
		/* Half-close our side, then say goodbye. */
		g.want_eof = true;
		nghttp2_session_resume_data(g.h2, g.stream_id);
		nghttp2_submit_goaway(g.h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
		flush_h2();
	}
	SSL_shutdown(g.ssl);
	return 0;
fail_tls:
	if (!g.got_app_data && !g.tls[0])
		snprintf(g.tls, sizeof(g.tls), "failed: %s", g.error);
	return -1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bm-hbone --connect IP:15008 --authority IP:PORT [--cert F --key F] [--ca F]\n"
		"                [--expect-peer SPIFFE_ID] [--method M] [--send STRING] [--expect-echo]\n"
		"                [--expect-status N | --expect-tls-failure] [--timeout-ms MS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	bool ok;

	/* A server that refuses the handshake may close before our last write:
	 * that is an answer to report (EPIPE), not a reason to die silently. */
	signal(SIGPIPE, SIG_IGN);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--expect-echo")) {
			g.expect_echo = true;
			continue;
		}
		if (!strcmp(a, "--expect-tls-failure")) {
			g.expect_tls_failure = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];

		if (!strcmp(a, "--connect"))
			g.connect = v;
		else if (!strcmp(a, "--authority"))
			g.authority = v;
		else if (!strcmp(a, "--cert"))
			g.cert = v;
		else if (!strcmp(a, "--key"))
			g.key = v;
		else if (!strcmp(a, "--ca"))
			g.ca = v;
		else if (!strcmp(a, "--expect-peer"))
			g.expect_peer = v;
		else if (!strcmp(a, "--method"))
			g.method = v;
		else if (!strcmp(a, "--send"))
			g.send = v;
		else if (!strcmp(a, "--expect-status"))
			g.expect_status = atoi(v);
		else if (!strcmp(a, "--timeout-ms"))
			g.timeout_ms = atoi(v);
		else
			usage();
	}
	if (!g.connect || !g.authority || !!g.cert != !!g.key || g.timeout_ms <= 0 ||
	    (g.expect_echo && !g.send) || (g.expect_tls_failure && g.expect_status >= 0))
		usage();
	g.deadline_ms = now_ms() + g.timeout_ms;
	run();
	if (!g.tls[0])
		snprintf(g.tls, sizeof(g.tls), g.got_app_data ? "ok" : "failed: unknown");

	printf("{\"tls\":");
	json_str(g.tls, strlen(g.tls));
	printf(",\"alpn\":");
	json_str(g.alpn, strlen(g.alpn));
	printf(",\"peer_id\":");
	json_str(g.peer_id, strlen(g.peer_id));
	printf(",\"status\":%d,\"echo\":", g.status);
	json_str(g.echo, g.echo_len);
	printf(",\"error\":");
	json_str(g.error, strlen(g.error));
	printf("}\n");
	fflush(stdout);

	bool tls_ok = g.got_app_data;

	if (g.expect_tls_failure)
		ok = !tls_ok;
	else
		ok = tls_ok && g.status == (g.expect_status >= 0 ? g.expect_status : 200) &&
		     (!g.expect_echo || (g.send && strstr(g.echo, g.send)));
	return ok ? 0 : 1;
}
