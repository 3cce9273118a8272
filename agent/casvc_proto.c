/* The CA service's protocol, shared by the server (agent/casvc.c) and the
 * client (agent/casvc_client.c): names, frames and messages as casvc.h
 * describes them, and TLS 1.3 I/O with a deadline over one connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include "casvc_int.h"

uint64_t casvc_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *casvc_jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* ---------------------------------------------------------------- names */

int bm_casvc_node_id(const char *td, const char *node, char *buf, size_t len)
{
	size_t n = node ? strnlen(node, BM_NODE_NAME_MAX + 1) : 0;
	int w;

	if (!n || n > BM_NODE_NAME_MAX || !strcmp(node, ".") || !strcmp(node, ".."))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!((node[i] >= 'a' && node[i] <= 'z') || (node[i] >= '0' && node[i] <= '9') ||
		      node[i] == '-' || node[i] == '.'))
			return -EINVAL;
	w = snprintf(buf, len, "spiffe://%s/bpfmesh/node/%s", td, node);
	if (w < 0 || (size_t)w >= len)
		return -ENAMETOOLONG;
	return bm_spiffe_id_check(buf) ? -EINVAL : 0;
}

int bm_casvc_server_id(const char *td, char *buf, size_t len)
{
	int w = snprintf(buf, len, "spiffe://%s/bpfmesh/ca", td);

	return w < 0 || (size_t)w >= len ? -ENAMETOOLONG : 0;
}

int bm_casvc_token_key(const char *node, char *buf, size_t len)
{
	int w = snprintf(buf, len, "nodes/%s/join-token", node);

	return w < 0 || (size_t)w >= len ? -ENAMETOOLONG : 0;
}

int bm_casvc_record_key(const char *node, char *buf, size_t len)
{
	int w = snprintf(buf, len, "nodes/%s/record", node);

	return w < 0 || (size_t)w >= len ? -ENAMETOOLONG : 0;
}

/* ---------------------------------------------------------------- wire format */

int bm_casvc_frame_encode(const json_t *msg, char **buf, size_t *len)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t n;
	uint32_t be;

	if (!text)
		return -ENOMEM;
	n = strlen(text);
	if (n > BM_CASVC_MSG_MAX) {
		free(text);
		return -EMSGSIZE;
	}
	*buf = malloc(4 + n);
	if (!*buf) {
		free(text);
		return -ENOMEM;
	}
	be = htonl((uint32_t)n);
	memcpy(*buf, &be, 4);
	memcpy(*buf + 4, text, n);
	*len = 4 + n;
	free(text);
	return 0;
}

int bm_casvc_frame_decode(const char *buf, size_t len, json_t **msg, size_t *used)
{
	uint32_t be, n;

	*msg = NULL;
	if (len < 4) {
		*used = 4;
		return -EAGAIN;
	}
	memcpy(&be, buf, 4);
	n = ntohl(be);
	if (n > BM_CASVC_MSG_MAX)
		return -EMSGSIZE;
	if (len < 4 + (size_t)n) {
		*used = 4 + (size_t)n;
		return -EAGAIN;
	}
	*msg = json_loadb(buf + 4, n, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(*msg)) {
		json_decref(*msg);
		*msg = NULL;
		return -EBADMSG;
	}
	*used = 4 + (size_t)n;
	return 0;
}

json_t *bm_casvc_req_join(const char *node, const char *token, const char *csr)
{
	return json_pack("{s:i,s:s,s:s,s:s,s:s}", "v", BM_CASVC_VERSION, "op", "join", "node", node, "token",
			 token, "csr", csr);
}

json_t *bm_casvc_req_renew(const char *csr)
{
	return json_pack("{s:i,s:s,s:s}", "v", BM_CASVC_VERSION, "op", "renew", "csr", csr);
}

json_t *bm_casvc_req_sign(const char *ns, const char *sa, long ttl, const char *csr)
{
	return json_pack("{s:i,s:s,s:s,s:s,s:I,s:s}", "v", BM_CASVC_VERSION, "op", "sign", "namespace", ns,
			 "service_account", sa, "ttl", (json_int_t)ttl, "csr", csr);
}

json_t *bm_casvc_answer_ok(const char *cert_pem)
{
	return json_pack("{s:i,s:b,s:s}", "v", BM_CASVC_VERSION, "ok", 1, "cert", cert_pem);
}

json_t *bm_casvc_answer_err(int err, const char *why)
{
	return json_pack("{s:i,s:b,s:i,s:s}", "v", BM_CASVC_VERSION, "ok", 0, "code", err < 0 ? -err : err,
			 "error", why);
}

int bm_casvc_answer_parse(const json_t *ans, char **cert_pem, char *why, size_t why_len)
{
	const char *pem = casvc_jstr(ans, "cert"), *e = casvc_jstr(ans, "error");
	json_int_t code = json_integer_value(json_object_get(ans, "code"));

	*cert_pem = NULL;
	if (json_integer_value(json_object_get(ans, "v")) != BM_CASVC_VERSION) {
		snprintf(why, why_len, "answer of an unknown protocol version");
		return -EPROTO;
	}
	if (!json_is_true(json_object_get(ans, "ok"))) {
		snprintf(why, why_len, "%s", e ? e : "refused without a reason");
		return code > 0 && code < 4096 ? -(int)code : -EPERM;
	}
	if (!pem || strlen(pem) > BM_CASVC_MSG_MAX) {
		snprintf(why, why_len, "answer without a certificate");
		return -EPROTO;
	}
	*cert_pem = strdup(pem);
	return *cert_pem ? 0 : -ENOMEM;
}

/* ---------------------------------------------------------------- TLS I/O with a deadline */

int casvc_wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = casvc_mono_ms();
		struct pollfd p = { .fd = fd, .events = events };
		int n;

		if (now >= deadline)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)(deadline - now));
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* After an SSL call returned r <= 0: wait for what it needs, or fail. */
static int ssl_wait(SSL *ssl, int fd, int r, uint64_t deadline)
{
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ: return casvc_wait_fd(fd, POLLIN, deadline);
	case SSL_ERROR_WANT_WRITE: return casvc_wait_fd(fd, POLLOUT, deadline);
	case SSL_ERROR_ZERO_RETURN: return -ECONNRESET;
	case SSL_ERROR_SYSCALL: return -ECONNRESET;
	default: return -EPROTO;
	}
}

int casvc_tls_handshake(SSL *ssl, int fd, int server, uint64_t deadline)
{
	for (;;) {
		int r = server ? SSL_accept(ssl) : SSL_connect(ssl), err;

		if (r == 1)
			return 0;
		err = ssl_wait(ssl, fd, r, deadline);
		if (err)
			return err;
	}
}

static int tls_write_all(SSL *ssl, int fd, const char *buf, size_t len, uint64_t deadline)
{
	while (len) {
		int r = SSL_write(ssl, buf, len > INT_MAX ? INT_MAX : (int)len), err;

		if (r > 0) {
			buf += r;
			len -= (size_t)r;
			continue;
		}
		err = ssl_wait(ssl, fd, r, deadline);
		if (err)
			return err;
	}
	return 0;
}

int casvc_tls_send(SSL *ssl, int fd, const json_t *msg, uint64_t deadline)
{
	char *buf;
	size_t len;
	int err = bm_casvc_frame_encode(msg, &buf, &len);

	if (err)
		return err;
	err = tls_write_all(ssl, fd, buf, len, deadline);
	free(buf);
	return err;
}

/* One frame; never more than 4 + BM_CASVC_MSG_MAX bytes buffered. */
int casvc_tls_recv(SSL *ssl, int fd, json_t **msg, uint64_t deadline)
{
	size_t have = 0, need = 4, cap = 4 + BM_CASVC_MSG_MAX;
	char *buf = malloc(cap);
	int err = -ENOMEM;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		int r;

		err = bm_casvc_frame_decode(buf, have, msg, &need);
		if (err != -EAGAIN)
			break;
		r = SSL_read(ssl, buf + have, (int)(need - have));
		if (r > 0) {
			have += (size_t)r;
			continue;
		}
		err = ssl_wait(ssl, fd, r, deadline);
		if (err)
			break;
	}
	free(buf);
	return err;
}

SSL_CTX *casvc_ctx_new(int server, X509_STORE *trust)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!ctx)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) || !SSL_CTX_set1_groups_list(ctx, "X25519:P-256")) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set1_cert_store(ctx, trust);
	X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_X509_STRICT);
	/* Server: a client certificate is optional (join has none) but, when
	 * sent, must chain to the root and be valid now. Client: the service's
	 * certificate must chain to the bundle; its ID is checked after. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_verify_depth(ctx, 3);
	/* One request per connection: nothing to resume. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (server)
		SSL_CTX_set_num_tickets(ctx, 0);
	return ctx;
}

int casvc_x509_from_pem(const char *pem, X509 **out)
{
	BIO *b = BIO_new_mem_buf(pem, -1);

	*out = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!*out) {
		ERR_clear_error();
		return -EBADMSG;
	}
	return 0;
}

int casvc_parse_hostport(const char *addr, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon = addr ? strrchr(addr, ':') : NULL;

	if (!colon || colon == addr || !colon[1] || (size_t)(colon - addr) >= hlen || strlen(colon + 1) >= plen)
		return -EINVAL;
	memcpy(host, addr, colon - addr);
	host[colon - addr] = '\0';
	snprintf(port, plen, "%s", colon + 1);
	return 0;
}
