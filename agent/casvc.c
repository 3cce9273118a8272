/* The mesh CA as a service and its node-side client; the protocol and the
 * threading rules are in casvc.h, the design in docs/identity.md §6. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "casvc.h"
#include "log.h"
#include "store.h"

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
#define HELD_MAX 32          /* refused identities remembered for back-off */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *jstr(const json_t *o, const char *key)
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
	const char *pem = jstr(ans, "cert"), *e = jstr(ans, "error");
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

/* ---------------------------------------------------------------- authorization */

int bm_casvc_peer_node(const struct bm_ca *ca, X509 *peer, time_t now, char *node, size_t len,
		       const char **why)
{
	static const char node_path[] = "/bpfmesh/node/";
	char id[BM_SPIFFE_ID_MAX + 1];
	struct bm_spiffe_id p;
	time_t na;

	if (!peer) {
		*why = "no client certificate (a node joins with a token first)";
		return -EPERM;
	}
	/* TLS verified the chain already; checked again because the handler is
	 * also reached without TLS (tests) and must never trust its caller. */
	if (X509_verify(peer, X509_get0_pubkey(ca->cert)) != 1) {
		ERR_clear_error();
		*why = "client certificate not signed by this CA";
		return -EPERM;
	}
	if (bm_x509_time(X509_get0_notAfter(peer), &na) || na <= now) {
		*why = "node certificate expired";
		return -EPERM;
	}
	if (bm_x509_uri_san(peer, id, sizeof(id)) || bm_spiffe_id_parse(id, &p) ||
	    strcmp(p.td, ca->trust_domain) || strncmp(p.path, node_path, sizeof(node_path) - 1) ||
	    !p.path[sizeof(node_path) - 1] || strchr(p.path + sizeof(node_path) - 1, '/')) {
		*why = "client certificate is not a node certificate (spiffe://<td>/bpfmesh/node/<name>)";
		return -EPERM;
	}
	if (strlen(p.path + sizeof(node_path) - 1) >= len) {
		*why = "node name too long";
		return -EPERM;
	}
	snprintf(node, len, "%s", p.path + sizeof(node_path) - 1);
	return 0;
}

const char *bm_casvc_workload_on_node(const json_t *wes, const char *node, const char *ns, const char *sa)
{
	const json_t *we;
	int same_sa = 0;
	size_t i;

	json_array_foreach(wes, i, we) {
		const json_t *spec = json_object_get(we, "spec");
		const char *k = jstr(we, "kind"), *wns = jstr(json_object_get(we, "metadata"), "namespace");
		const char *wsa = jstr(spec, "serviceAccount");
		const char *wnode = jstr(json_object_get(spec, "labels"), BM_CASVC_NODE_LABEL);

		if (!k || strcmp(k, "WorkloadEntry") || !wns || strcmp(wns, ns))
			continue;
		if (strcmp(wsa && *wsa ? wsa : "default", sa))
			continue;
		same_sa = 1;
		if (wnode && !strcmp(wnode, node))
			return NULL;
	}
	return same_sa ? "no workload of this service account is on the requesting node (label " BM_CASVC_NODE_LABEL ")"
		       : "no workload has this namespace and service account";
}

/* ---------------------------------------------------------------- TLS I/O with a deadline */

static int wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = mono_ms();
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
	case SSL_ERROR_WANT_READ: return wait_fd(fd, POLLIN, deadline);
	case SSL_ERROR_WANT_WRITE: return wait_fd(fd, POLLOUT, deadline);
	case SSL_ERROR_ZERO_RETURN: return -ECONNRESET;
	case SSL_ERROR_SYSCALL: return -ECONNRESET;
	default: return -EPROTO;
	}
}

static int tls_handshake(SSL *ssl, int fd, int server, uint64_t deadline)
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

static int tls_send(SSL *ssl, int fd, const json_t *msg, uint64_t deadline)
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
static int tls_recv(SSL *ssl, int fd, json_t **msg, uint64_t deadline)
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

static SSL_CTX *ctx_new(int server, X509_STORE *trust)
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

static int x509_from_pem(const char *pem, X509 **out)
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

/* ---------------------------------------------------------------- server */

struct bm_casvc {
	struct bm_ca *ca;
	struct bm_store *store;    /* the service thread's own handle */
	long node_ttl;
	char listen[128];
	SSL_CTX *ctx;
	X509_STORE *trust;
	X509 *srv_cert;            /* spiffe://<td>/bpfmesh/ca, re-issued at half life */
	EVP_PKEY *srv_key;
	time_t srv_refresh;
	int lfd, stop[2];
	pthread_t thread;
	int running;
	pthread_mutex_t lock;      /* last_refusal */
	char last_refusal[256];
	unsigned long joined, renewed, signed_, refused, tls_failed;
};

int bm_casvc_new(struct bm_ca *ca, const char *store_url, long node_ttl, struct bm_casvc **out)
{
	struct bm_casvc *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	s->ca = ca;
	s->lfd = s->stop[0] = s->stop[1] = -1;
	s->node_ttl = node_ttl > 0 ? node_ttl : BM_NODE_CERT_TTL;
	pthread_mutex_init(&s->lock, NULL);
	err = bm_store_open(store_url, &s->store);
	if (err) {
		bm_log("ca service: open store %s: %s", store_url, strerror(-err));
		goto err_free;
	}
	err = -ENOMEM;
	s->trust = X509_STORE_new();
	if (!s->trust || !X509_STORE_add_cert(s->trust, ca->cert))
		goto err_free;
	s->ctx = ctx_new(1, s->trust);
	if (!s->ctx)
		goto err_free;
	*out = s;
	return 0;
err_free:
	ERR_clear_error();
	bm_casvc_free(s);
	return err;
}

static void refuse_note(struct bm_casvc *s, const char *op, const char *who, const char *what, const char *why)
{
	__atomic_add_fetch(&s->refused, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&s->lock);
	snprintf(s->last_refusal, sizeof(s->last_refusal), "%s from %s%s%s: %s", op, who, what[0] ? " for " : "",
		 what, why);
	pthread_mutex_unlock(&s->lock);
	bm_log("ca service: refused %s from %s%s%s: %s", op, who, what[0] ? " for " : "", what, why);
}

static json_t *refuse(struct bm_casvc *s, int err, const char *op, const char *who, const char *what,
		      const char *why)
{
	refuse_note(s, op, who, what, why);
	return bm_casvc_answer_err(err, why);
}

static const char *csr_error(int err)
{
	switch (err) {
	case -EPERM: return "the CSR's only SAN must be exactly the requested SPIFFE ID";
	case -EBADMSG: return "the CSR does not parse or its signature is wrong";
	case -EINVAL: return "the CSR's key is not ECDSA P-256";
	case -EMSGSIZE: return "the CSR is too large";
	default: return "cannot sign";
	}
}

static void serial_of(const char *pem, char *buf, size_t len)
{
	X509 *x;

	buf[0] = '\0';
	if (!x509_from_pem(pem, &x)) {
		bm_x509_serial_hex(x, buf, len);
		X509_free(x);
	}
}

json_t *bm_casvc_handle(struct bm_casvc *s, X509 *peer, const json_t *req, time_t now)
{
	const char *op = jstr(req, "op"), *csr = jstr(req, "csr"), *why = NULL;
	char node[BM_NODE_NAME_MAX + 1] = "", who[BM_NODE_NAME_MAX + 16] = "an unauthenticated client";
	char id[BM_SPIFFE_ID_MAX + 1], key[BM_NODE_NAME_MAX + 32], serial[64], what[600] = "";
	char *pem = NULL, *rec = NULL;
	long ttl = s->node_ttl;
	json_t *ans;
	int err;

	if (json_integer_value(json_object_get(req, "v")) != BM_CASVC_VERSION)
		return refuse(s, -EPROTO, "request", who, "", "unsupported protocol version");
	if (!op || !csr)
		return refuse(s, -EINVAL, "request", who, "", "a request needs \"op\" and \"csr\"");
	if (!strcmp(op, "join")) {
		const char *n = jstr(req, "node");

		if (!n || bm_casvc_node_id(s->ca->trust_domain, n, id, sizeof(id)))
			return refuse(s, -EINVAL, op, who, "", "bad node name (lowercase [a-z0-9.-], at most 253)");
		snprintf(node, sizeof(node), "%s", n);
		snprintf(who, sizeof(who), "node %s (token)", node);
	} else if (!strcmp(op, "renew") || !strcmp(op, "sign")) {
		err = bm_casvc_peer_node(s->ca, peer, now, node, sizeof(node), &why);
		if (err)
			return refuse(s, err, op, who, "", why);
		snprintf(who, sizeof(who), "node %s", node);
		/* A node removed with `meshctl node remove` gets nothing more. */
		bm_casvc_record_key(node, key, sizeof(key));
		err = bm_store_kv_get(s->store, key, &rec);
		free(rec);
		if (err == -ENOENT)
			return refuse(s, -EPERM, op, who, "", "node is not joined (removed?)");
		if (err)
			return refuse(s, -EAGAIN, op, who, "", "store unavailable; try again");
		if (!strcmp(op, "renew")) {
			bm_casvc_node_id(s->ca->trust_domain, node, id, sizeof(id));
		} else {
			const char *ns = jstr(req, "namespace"), *sa = jstr(req, "service_account");
			json_int_t want = json_integer_value(json_object_get(req, "ttl"));
			json_t *wes = NULL;

			if (!ns || !sa || bm_spiffe_id_build(s->ca->trust_domain, ns, sa, id, sizeof(id)))
				return refuse(s, -EINVAL, op, who, "", "bad namespace or service account");
			snprintf(what, sizeof(what), "%s/%s", ns, sa);
			err = bm_store_list(s->store, "WorkloadEntry", ns, &wes, NULL);
			if (err)
				return refuse(s, -EAGAIN, op, who, what, "store unavailable; try again");
			why = bm_casvc_workload_on_node(wes, node, ns, sa);
			json_decref(wes);
			if (why)
				return refuse(s, -EPERM, op, who, what, why);
			ttl = want > 0 && want <= BM_SVID_TTL_MAX ? (long)want : BM_SVID_TTL_DEFAULT;
		}
	} else {
		return refuse(s, -EINVAL, "request", who, "", "unknown op");
	}
	err = bm_ca_sign_csr(s->ca, csr, id, ttl, now, &pem);
	if (err)
		return refuse(s, err, op, who, what[0] ? what : id, csr_error(err));
	if (!strcmp(op, "join")) {
		/* Only once the CSR proved good: a bad request does not burn the token. */
		bm_casvc_token_key(node, key, sizeof(key));
		err = bm_store_token_redeem(s->store, key, jstr(req, "token"), now);
		if (err) {
			free(pem);
			why = err == -ENOENT ? "no join token for this node (never created, or already used)"
			    : err == -EPERM ? "wrong join token"
			    : err == -EKEYEXPIRED ? "join token expired"
			    : "store unavailable; try again";
			return refuse(s, err == -ENOENT || err == -EKEYEXPIRED ? -EPERM : err, op, who, "", why);
		}
	}
	serial_of(pem, serial, sizeof(serial));
	if (strcmp(op, "sign")) {
		json_t *r = json_pack("{s:I,s:s}", "joined", (json_int_t)now, "serial", serial);
		char *text = r ? json_dumps(r, JSON_COMPACT) : NULL;

		json_decref(r);
		bm_casvc_record_key(node, key, sizeof(key));
		if (!text || bm_store_kv_put(s->store, key, text))
			bm_log("ca service: cannot record node %s in the store; its renewals will be refused", node);
		free(text);
		__atomic_add_fetch(strcmp(op, "join") ? &s->renewed : &s->joined, 1, __ATOMIC_RELAXED);
	} else {
		__atomic_add_fetch(&s->signed_, 1, __ATOMIC_RELAXED);
	}
	bm_log("ca service: %s: signed %s for node %s (serial %s, ttl %lds)", op, id, node, serial, ttl);
	ans = bm_casvc_answer_ok(pem);
	free(pem);
	return ans;
}

/* The service's own certificate, re-issued at half life by its thread. */
static int server_cert_refresh(struct bm_casvc *s, time_t now)
{
	char id[BM_SPIFFE_ID_MAX + 1];
	EVP_PKEY *key;
	X509 *x = NULL;
	int err;

	if (s->srv_cert && now < s->srv_refresh)
		return 0;
	bm_casvc_server_id(s->ca->trust_domain, id, sizeof(id));
	key = EVP_EC_gen("P-256");
	if (!key)
		return -ENOMEM;
	err = bm_ca_issue(s->ca, id, key, BM_CASVC_SERVER_TTL, now, &x);
	if (err) {
		EVP_PKEY_free(key);
		return err;
	}
	X509_free(s->srv_cert);
	EVP_PKEY_free(s->srv_key);
	s->srv_cert = x;
	s->srv_key = key;
	s->srv_refresh = now + BM_CASVC_SERVER_TTL / 2;
	return 0;
}

static void serve_conn(struct bm_casvc *s, int fd, const char *from)
{
	uint64_t deadline = mono_ms() + BM_CASVC_TIMEOUT_MS;
	json_t *req = NULL, *ans = NULL;
	SSL *ssl;
	int err;

	if (server_cert_refresh(s, time(NULL))) {
		bm_log("ca service: cannot issue its own certificate");
		return;
	}
	ssl = SSL_new(s->ctx);
	if (!ssl || !SSL_set_fd(ssl, fd) || SSL_use_certificate(ssl, s->srv_cert) != 1 ||
	    SSL_use_PrivateKey(ssl, s->srv_key) != 1)
		goto out;
	err = tls_handshake(ssl, fd, 1, deadline);
	if (err) {
		long v = SSL_get_verify_result(ssl);

		__atomic_add_fetch(&s->tls_failed, 1, __ATOMIC_RELAXED);
		bm_log("ca service: TLS from %s failed: %s", from,
		       v != X509_V_OK ? X509_verify_cert_error_string(v) : strerror(-err));
		goto out;
	}
	err = tls_recv(ssl, fd, &req, deadline);
	if (err) {
		bm_log("ca service: request from %s: %s", from,
		       err == -EMSGSIZE ? "larger than 64 KiB" : err == -EBADMSG ? "not a JSON object" : strerror(-err));
		goto out;
	}
	ans = bm_casvc_handle(s, SSL_get0_peer_certificate(ssl), req, time(NULL));
	if (ans && !tls_send(ssl, fd, ans, deadline))
		SSL_shutdown(ssl); /* close_notify; not waiting for the peer's */
out:
	json_decref(ans);
	json_decref(req);
	SSL_free(ssl);
	ERR_clear_error();
}

/* Requests are served one at a time: signing takes about a millisecond,
 * and each connection has BM_CASVC_TIMEOUT_MS in all. */
static void *serve_main(void *arg)
{
	struct bm_casvc *s = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = s->lfd, .events = POLLIN }, { .fd = s->stop[0], .events = POLLIN } };
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char from[INET6_ADDRSTRLEN + 8] = "?";
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		/* Small writes in a row (handshake, then the answer): without
		 * this, Nagle waits for the peer's delayed ACK, 40 ms a request. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, from, sizeof(from));
		serve_conn(s, fd, from);
		close(fd);
	}
	return NULL;
}

static int parse_hostport(const char *addr, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon = addr ? strrchr(addr, ':') : NULL;

	if (!colon || colon == addr || !colon[1] || (size_t)(colon - addr) >= hlen || strlen(colon + 1) >= plen)
		return -EINVAL;
	memcpy(host, addr, colon - addr);
	host[colon - addr] = '\0';
	snprintf(port, plen, "%s", colon + 1);
	return 0;
}

int bm_casvc_listen(struct bm_casvc *s, const char *addr)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
	struct addrinfo *ai = NULL;
	char host[64], port[16];
	int one = 1, err;

	if (parse_hostport(addr, host, sizeof(host), port, sizeof(port)) ||
	    getaddrinfo(host, port, &hints, &ai)) {
		bm_log("ca service: --ca-serve %s: want IPv4:PORT", addr ? addr : "");
		return -EINVAL;
	}
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->lfd < 0 || setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(s->lfd, ai->ai_addr, ai->ai_addrlen) || listen(s->lfd, 128)) {
		err = -errno;
		bm_log("ca service: listen on %s: %s", addr, strerror(errno));
		freeaddrinfo(ai);
		return err;
	}
	freeaddrinfo(ai);
	if (pipe2(s->stop, O_CLOEXEC))
		return -errno;
	snprintf(s->listen, sizeof(s->listen), "%s", addr);
	err = -pthread_create(&s->thread, NULL, serve_main, s);
	if (err)
		return err;
	s->running = 1;
	bm_log("ca service: signing CSRs on %s (TLS 1.3; trust domain %s)", addr, s->ca->trust_domain);
	return 0;
}

void bm_casvc_free(struct bm_casvc *s)
{
	if (!s)
		return;
	if (s->running) {
		if (write(s->stop[1], "x", 1) < 0)
			bm_log("ca service: stop: %s", strerror(errno));
		pthread_join(s->thread, NULL);
	}
	for (int i = 0; i < 2; i++)
		if (s->stop[i] >= 0)
			close(s->stop[i]);
	if (s->lfd >= 0)
		close(s->lfd);
	SSL_CTX_free(s->ctx);
	X509_STORE_free(s->trust);
	X509_free(s->srv_cert);
	EVP_PKEY_free(s->srv_key);
	bm_store_close(s->store);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

json_t *bm_casvc_stats_json(struct bm_casvc *s)
{
	json_t *j;

	pthread_mutex_lock(&s->lock);
	j = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:s}", "listen", s->listen, "joined",
		      (json_int_t)__atomic_load_n(&s->joined, __ATOMIC_RELAXED), "renewed",
		      (json_int_t)__atomic_load_n(&s->renewed, __ATOMIC_RELAXED), "signed",
		      (json_int_t)__atomic_load_n(&s->signed_, __ATOMIC_RELAXED), "refused",
		      (json_int_t)__atomic_load_n(&s->refused, __ATOMIC_RELAXED), "tls_failed",
		      (json_int_t)__atomic_load_n(&s->tls_failed, __ATOMIC_RELAXED), "last_refusal",
		      s->last_refusal);
	pthread_mutex_unlock(&s->lock);
	return j;
}

/* ---------------------------------------------------------------- client */

struct held {
	char id[BM_SPIFFE_ID_MAX + 1];
	uint64_t until;
	unsigned backoff;
};

struct bm_caclient {
	char addr[256], node[BM_NODE_NAME_MAX + 1], td[BM_TRUST_DOMAIN_MAX + 1], dir[PATH_MAX];
	char node_id[BM_SPIFFE_ID_MAX + 1], server_id[BM_SPIFFE_ID_MAX + 1];
	struct sockaddr_storage sa;
	socklen_t salen;
	char *token;                  /* until used */
	X509 *root;
	X509_STORE *trust;
	SSL_CTX *ctx;
	EVP_PKEY *node_key;
	X509 *node_cert;
	time_t node_not_after, node_refresh_at;
	uint64_t retry_at;            /* network back-off (monotonic ms) */
	unsigned backoff;
	uint64_t node_retry_at;       /* join / renew back-off */
	unsigned node_backoff;
	int warned_no_token;
	struct held held[HELD_MAX];   /* identities the CA refused: asked again later */
	unsigned long requests, failures, refused;
	char last_error[256];
};

static unsigned next_backoff(unsigned b)
{
	return !b ? BACKOFF_MIN_MS : b >= BACKOFF_MAX_MS / 2 ? BACKOFF_MAX_MS : 2 * b;
}

static int read_key_file(const char *path, EVP_PKEY **out)
{
	struct stat st;
	BIO *b;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || (st.st_mode & 077)) {
		bm_log("ca client: %s must be mode 0600; ignored", path);
		close(fd);
		return -EACCES;
	}
	b = BIO_new_fd(fd, BIO_CLOSE);
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	*out = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	ERR_clear_error();
	return *out ? 0 : -EBADMSG;
}

static int read_cert_file(const char *path, X509 **out)
{
	BIO *b = BIO_new_file(path, "r");

	if (!b) {
		ERR_clear_error();
		return -ENOENT;
	}
	*out = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	ERR_clear_error();
	return *out ? 0 : -EBADMSG;
}

/* A certificate from the CA for key: signed by our root, exactly id, and
 * still valid. NULL when acceptable, else why not. */
static const char *check_issued(struct bm_caclient *c, X509 *x, EVP_PKEY *key, const char *id, time_t now,
				time_t *not_after)
{
	char san[BM_SPIFFE_ID_MAX + 1];

	if (X509_verify(x, X509_get0_pubkey(c->root)) != 1)
		return "not signed by the bundle's root";
	if (X509_check_private_key(x, key) != 1)
		return "not for our key";
	if (bm_x509_uri_san(x, san, sizeof(san)) || strcmp(san, id))
		return "not for our identity";
	if (bm_x509_time(X509_get0_notAfter(x), not_after) || *not_after <= now)
		return "expired";
	return NULL;
}

static void node_cert_install(struct bm_caclient *c, EVP_PKEY *key, X509 *x, time_t na, time_t now)
{
	EVP_PKEY_free(c->node_key);
	X509_free(c->node_cert);
	c->node_key = key;
	c->node_cert = x;
	c->node_not_after = na;
	/* Half the remaining lifetime, like the workload SVIDs. */
	c->node_refresh_at = now + (na - now) / 2;
}

static void load_node_cert(struct bm_caclient *c, time_t now)
{
	char kp[PATH_MAX + 32], cp[PATH_MAX + 32];
	const char *why = NULL;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	time_t na;

	snprintf(kp, sizeof(kp), "%s/%s", c->dir, BM_NODE_KEY_FILE);
	snprintf(cp, sizeof(cp), "%s/%s", c->dir, BM_NODE_CERT_FILE);
	if (read_cert_file(cp, &x))
		return; /* not joined yet */
	if (read_key_file(kp, &key))
		why = "no usable key beside it";
	else
		why = check_issued(c, x, key, c->node_id, now, &na);
	if (why) {
		bm_log("ca client: node certificate %s: %s; a new join token is needed (meshctl node join %s)", cp,
		       why, c->node);
		EVP_PKEY_free(key);
		X509_free(x);
		ERR_clear_error();
		return;
	}
	node_cert_install(c, key, x, na, now);
	bm_log("ca client: node certificate %s loaded (not after %ld s from now)", c->node_id, (long)(na - now));
}

int bm_caclient_new(const struct bm_caclient_opts *o, struct bm_caclient **out)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct bm_caclient *c = calloc(1, sizeof(*c));
	struct addrinfo *ai = NULL;
	char host[200], port[16];
	int err = -EINVAL;

	if (!c)
		return -ENOMEM;
	snprintf(c->td, sizeof(c->td), "%s", o->trust_domain ? o->trust_domain : BM_TRUST_DOMAIN_DEFAULT);
	snprintf(c->addr, sizeof(c->addr), "%s", o->addr ? o->addr : "");
	snprintf(c->node, sizeof(c->node), "%s", o->node ? o->node : "");
	snprintf(c->dir, sizeof(c->dir), "%s", o->state_dir ? o->state_dir : ".");
	if (bm_casvc_node_id(c->td, c->node, c->node_id, sizeof(c->node_id))) {
		bm_log("ca client: node name '%s' cannot be a SPIFFE ID path segment ([a-z0-9.-])", c->node);
		goto err_free;
	}
	bm_casvc_server_id(c->td, c->server_id, sizeof(c->server_id));
	/* Resolved once: a name lookup must not stall every later request. */
	if (parse_hostport(o->addr, host, sizeof(host), port, sizeof(port)) ||
	    getaddrinfo(host, port, &hints, &ai)) {
		bm_log("ca client: --ca-addr '%s': want HOST:PORT (IPv4)", c->addr);
		goto err_free;
	}
	memcpy(&c->sa, ai->ai_addr, ai->ai_addrlen);
	c->salen = ai->ai_addrlen;
	freeaddrinfo(ai);
	err = read_cert_file(o->bundle, &c->root);
	if (err) {
		bm_log("ca client: --ca-bundle %s: %s", o->bundle ? o->bundle : "",
		       err == -ENOENT ? "cannot open" : "not a PEM certificate");
		goto err_free;
	}
	err = -EINVAL;
	if (!X509_check_ca(c->root) || X509_self_signed(c->root, 1) != 1) {
		bm_log("ca client: --ca-bundle %s: not a self-signed CA certificate", o->bundle);
		goto err_free;
	}
	err = -ENOMEM;
	c->trust = X509_STORE_new();
	if (!c->trust || !X509_STORE_add_cert(c->trust, c->root))
		goto err_free;
	c->ctx = ctx_new(0, c->trust);
	if (!c->ctx)
		goto err_free;
	if (o->join_token && *o->join_token && !(c->token = strdup(o->join_token)))
		goto err_free;
	load_node_cert(c, time(NULL));
	*out = c;
	return 0;
err_free:
	ERR_clear_error();
	bm_caclient_free(c);
	return err;
}

void bm_caclient_free(struct bm_caclient *c)
{
	if (!c)
		return;
	if (c->token) {
		OPENSSL_cleanse(c->token, strlen(c->token));
		free(c->token);
	}
	SSL_CTX_free(c->ctx);
	X509_STORE_free(c->trust);
	X509_free(c->root);
	X509_free(c->node_cert);
	EVP_PKEY_free(c->node_key);
	free(c);
}

X509 *bm_caclient_root(struct bm_caclient *c)
{
	return c->root;
}

static int connect_deadline(struct bm_caclient *c, uint64_t deadline)
{
	int fd = socket(c->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err = 0;
	socklen_t l = sizeof(err);

	if (fd < 0)
		return -errno;
	/* Finished and the request go out back to back: no Nagle delay. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	if (connect(fd, (struct sockaddr *)&c->sa, c->salen) && errno != EINPROGRESS) {
		err = -errno;
		goto err_close;
	}
	err = wait_fd(fd, POLLOUT, deadline);
	if (err)
		goto err_close;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) || err) {
		err = err ? -err : -errno;
		goto err_close;
	}
	return fd;
err_close:
	close(fd);
	return err;
}

/* One request, one answer. A failure to reach the CA (not a refusal) starts
 * or extends the back-off; -EAGAIN while it lasts. */
static int exchange(struct bm_caclient *c, const json_t *req, int with_cert, json_t **ans)
{
	uint64_t now = mono_ms(), deadline = now + BM_CASVC_TIMEOUT_MS;
	char peer[BM_SPIFFE_ID_MAX + 1];
	const char *stage = "connect", *cause = NULL;
	SSL *ssl = NULL;
	int fd, err;

	*ans = NULL;
	if (now < c->retry_at)
		return -EAGAIN;
	c->requests++;
	fd = connect_deadline(c, deadline);
	if (fd < 0) {
		err = fd;
		goto fail;
	}
	err = -ENOMEM;
	stage = "TLS";
	ssl = SSL_new(c->ctx);
	if (!ssl || !SSL_set_fd(ssl, fd))
		goto fail;
	if (with_cert && (!c->node_cert || SSL_use_certificate(ssl, c->node_cert) != 1 ||
			  SSL_use_PrivateKey(ssl, c->node_key) != 1))
		goto fail;
	err = tls_handshake(ssl, fd, 0, deadline);
	if (err) {
		long v = SSL_get_verify_result(ssl);

		if (v != X509_V_OK)
			cause = X509_verify_cert_error_string(v);
		goto fail;
	}
	/* The chain was verified against the bundle; it must also be the CA
	 * service, not some workload that holds an SVID of the same root. */
	err = -EPERM;
	if (!SSL_get0_peer_certificate(ssl) ||
	    bm_x509_uri_san(SSL_get0_peer_certificate(ssl), peer, sizeof(peer)) || strcmp(peer, c->server_id)) {
		cause = "the server is not the CA service (spiffe://<td>/bpfmesh/ca)";
		goto fail;
	}
	stage = "request";
	err = tls_send(ssl, fd, req, deadline);
	if (!err)
		err = tls_recv(ssl, fd, ans, deadline);
	if (err)
		goto fail;
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	c->backoff = 0;
	c->retry_at = 0;
	return 0;
fail:
	c->failures++;
	c->backoff = next_backoff(c->backoff);
	c->retry_at = mono_ms() + c->backoff;
	snprintf(c->last_error, sizeof(c->last_error), "%s: %s", stage, cause ? cause : strerror(-err));
	bm_log("ca client: CA %s: %s; next attempt in %u s", c->addr, c->last_error, c->backoff / 1000);
	SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	ERR_clear_error();
	return err;
}

/* Send req; on success *x is the certificate the CA answered with. A refusal
 * is -errno with why. */
static int ask(struct bm_caclient *c, json_t *req, int with_cert, X509 **x, char *why, size_t why_len)
{
	json_t *ans = NULL;
	char *pem = NULL;
	int err;

	why[0] = '\0';
	if (!req)
		return -ENOMEM;
	err = exchange(c, req, with_cert, &ans);
	json_decref(req);
	if (err)
		return err;
	err = bm_casvc_answer_parse(ans, &pem, why, why_len);
	json_decref(ans);
	if (err) {
		c->refused++;
		return err == -EAGAIN ? -EIO : err; /* the CA's "try again" is not our back-off */
	}
	err = x509_from_pem(pem, x);
	free(pem);
	if (err)
		snprintf(why, why_len, "the answer is not a PEM certificate");
	return err;
}

static int save_node_cert(struct bm_caclient *c, EVP_PKEY *key, X509 *x)
{
	BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
	char *kp, *cp;
	long kn, cn;
	int err = -ENOMEM;

	if (!kb || !cb || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) || !PEM_write_bio_X509(cb, x))
		goto out;
	kn = BIO_get_mem_data(kb, &kp);
	cn = BIO_get_mem_data(cb, &cp);
	/* Key first: a certificate without its key would be unusable. */
	err = bm_write_file_atomic(c->dir, BM_NODE_KEY_FILE, 0600, kp, (size_t)kn);
	if (!err)
		err = bm_write_file_atomic(c->dir, BM_NODE_CERT_FILE, 0644, cp, (size_t)cn);
out:
	BIO_free(kb);
	BIO_free(cb);
	return err;
}

int bm_caclient_node_cert(struct bm_caclient *c, time_t now)
{
	int renew = c->node_cert && now < c->node_not_after;
	char why[256], *csr = NULL;
	EVP_PKEY *key;
	X509 *x = NULL;
	const char *bad;
	time_t na;
	int err;

	if (c->node_cert && now < c->node_refresh_at)
		return 0;
	if (mono_ms() < c->node_retry_at)
		return renew ? 0 : -EAGAIN;
	if (!renew && !c->token) {
		if (!c->warned_no_token)
			bm_log("ca client: no valid node certificate and no join token: run `meshctl node join %s` "
			       "and start meshd with --join-token TOKEN", c->node);
		c->warned_no_token = 1;
		return -ENOKEY;
	}
	key = EVP_EC_gen("P-256");
	if (!key || bm_csr_create_for(c->node_id, key, &csr)) {
		EVP_PKEY_free(key);
		return -ENOMEM;
	}
	err = ask(c, renew ? bm_casvc_req_renew(csr) : bm_casvc_req_join(c->node, c->token, csr), renew, &x, why,
		  sizeof(why));
	free(csr);
	if (!err && (bad = check_issued(c, x, key, c->node_id, now, &na))) {
		snprintf(why, sizeof(why), "node certificate from the CA is %s", bad);
		err = -EBADMSG;
	}
	if (!err)
		err = save_node_cert(c, key, x);
	if (err) {
		EVP_PKEY_free(key);
		X509_free(x);
		if (err == -EAGAIN)
			return renew ? 0 : -EAGAIN;
		c->node_backoff = c->node_backoff ? (c->node_backoff >= 30000 ? 60000 : 2 * c->node_backoff) : 1000;
		c->node_retry_at = mono_ms() + c->node_backoff;
		if (why[0])
			bm_log("ca client: %s refused: %s", renew ? "renewal" : "join", why);
		if (!renew && why[0] && c->token) {
			/* Refused tokens do not get better: wait for a new one. */
			OPENSSL_cleanse(c->token, strlen(c->token));
			free(c->token);
			c->token = NULL;
		}
		return renew ? 0 : err;
	}
	c->node_backoff = 0;
	c->node_retry_at = 0;
	if (c->token) {
		OPENSSL_cleanse(c->token, strlen(c->token));
		free(c->token);
		c->token = NULL;
	}
	node_cert_install(c, key, x, na, now);
	bm_log("ca client: %s node certificate %s (valid %ld s, renewal at half life)", renew ? "renewed" : "joined: got",
	       c->node_id, (long)(na - now));
	return 0;
}

static struct held *held_find(struct bm_caclient *c, const char *id, int add)
{
	struct held *oldest = &c->held[0];

	for (int i = 0; i < HELD_MAX; i++) {
		if (!strcmp(c->held[i].id, id))
			return &c->held[i];
		if (c->held[i].until < oldest->until)
			oldest = &c->held[i];
	}
	if (!add)
		return NULL;
	memset(oldest, 0, sizeof(*oldest));
	snprintf(oldest->id, sizeof(oldest->id), "%s", id);
	return oldest;
}

/* spiffe://td/ns/NS/sa/SA -> NS, SA */
static int split_workload_id(const char *id, char *ns, size_t nslen, char *sa, size_t salen)
{
	struct bm_spiffe_id p;
	const char *s;
	int n;

	if (bm_spiffe_id_parse(id, &p) || strncmp(p.path, "/ns/", 4))
		return -EINVAL;
	s = strstr(p.path + 4, "/sa/");
	if (!s || strchr(s + 4, '/') || !s[4])
		return -EINVAL;
	n = snprintf(ns, nslen, "%.*s", (int)(s - p.path - 4), p.path + 4);
	if (n <= 0 || (size_t)n >= nslen || strchr(ns, '/') || (size_t)snprintf(sa, salen, "%s", s + 4) >= salen)
		return -EINVAL;
	return 0;
}

int bm_caclient_issue(void *arg, const char *spiffe_id, EVP_PKEY *key, long ttl, time_t now, X509 **cert,
		      STACK_OF(X509) **chain)
{
	struct bm_caclient *c = arg;
	char ns[256], sa[256], why[256], *csr = NULL;
	struct held *h = held_find(c, spiffe_id, 0);
	time_t na;
	const char *bad;
	int err;

	(void)chain; /* the root signs directly */
	if (split_workload_id(spiffe_id, ns, sizeof(ns), sa, sizeof(sa)))
		return -EINVAL;
	if (h && mono_ms() < h->until)
		return -EAGAIN;
	err = bm_caclient_node_cert(c, now);
	if (err)
		return err == -ENOKEY ? -EAGAIN : err; /* reported by the node certificate path */
	err = bm_csr_create_for(spiffe_id, key, &csr);
	if (err)
		return err;
	err = ask(c, bm_casvc_req_sign(ns, sa, ttl, csr), 1, cert, why, sizeof(why));
	free(csr);
	if (!err && (bad = check_issued(c, *cert, key, spiffe_id, now, &na))) {
		snprintf(why, sizeof(why), "certificate from the CA is %s", bad);
		X509_free(*cert);
		*cert = NULL;
		err = -EBADMSG;
	}
	if (err && !why[0])
		return err; /* not reached: the back-off of exchange() applies */
	if (err) {
		/* Refused: ask again later, not at every tick. */
		h = held_find(c, spiffe_id, 1);
		h->backoff = h->backoff ? (h->backoff >= 30000 ? 60000 : 2 * h->backoff) : 1000;
		h->until = mono_ms() + h->backoff;
		if (why[0])
			bm_log("ca client: SVID for %s refused by the CA: %s (asking again in %u s)", spiffe_id, why,
			       h->backoff / 1000);
		return -EAGAIN; /* reported here; sync retries it */
	}
	if (h)
		memset(h, 0, sizeof(*h));
	return 0;
}

json_t *bm_caclient_request_json(struct bm_caclient *c, const char *ns, const char *sa, long ttl)
{
	char id[BM_SPIFFE_ID_MAX + 1], why[256] = "", serial[64] = "", *csr = NULL;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	int err;

	if (bm_spiffe_id_build(c->td, ns, sa, id, sizeof(id)))
		return json_pack("{s:b,s:s}", "ok", 0, "error", "bad namespace or service account");
	err = bm_caclient_node_cert(c, time(NULL));
	if (err)
		return json_pack("{s:b,s:s}", "ok", 0, "error", "this node holds no node certificate");
	key = EVP_EC_gen("P-256");
	err = key ? bm_csr_create_for(id, key, &csr) : -ENOMEM;
	if (!err)
		err = ask(c, bm_casvc_req_sign(ns, sa, ttl, csr), 1, &x, why, sizeof(why));
	free(csr);
	EVP_PKEY_free(key);
	if (err) {
		if (!why[0])
			snprintf(why, sizeof(why), "CA unreachable: %s", err == -EAGAIN ? "backing off" : strerror(-err));
		return json_pack("{s:b,s:s,s:s}", "ok", 0, "spiffe_id", id, "error", why);
	}
	bm_x509_serial_hex(x, serial, sizeof(serial));
	X509_free(x);
	return json_pack("{s:b,s:s,s:s}", "ok", 1, "spiffe_id", id, "serial", serial);
}

json_t *bm_caclient_status_json(struct bm_caclient *c)
{
	char serial[64] = "", na[32] = "", ra[32] = "";

	if (c->node_cert) {
		bm_x509_serial_hex(c->node_cert, serial, sizeof(serial));
		bm_time_rfc3339(c->node_not_after, na, sizeof(na));
		bm_time_rfc3339(c->node_refresh_at, ra, sizeof(ra));
	}
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s}", "ca_addr", c->addr, "node_id", c->node_id,
			 "node_cert_serial", serial, "node_cert_not_after", na, "node_cert_refresh_at", ra,
			 "requests", (json_int_t)c->requests, "failures", (json_int_t)c->failures, "refused",
			 (json_int_t)c->refused, "last_error", c->last_error);
}
