/* The mesh CA as a service: the authorization decisions and the server
 * thread that signs CSRs. The protocol is in agent/casvc_proto.c, the
 * node-side client in agent/casvc_client.c; the threading rules are in
 * casvc.h, the design in docs/identity.md §6. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include "casvc_int.h"
#include "log.h"
#include "store.h"

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
		const char *k = casvc_jstr(we, "kind"), *wns = casvc_jstr(json_object_get(we, "metadata"), "namespace");
		const char *wsa = casvc_jstr(spec, "serviceAccount");
		const char *wnode = casvc_jstr(json_object_get(spec, "labels"), BM_CASVC_NODE_LABEL);

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
	s->ctx = casvc_ctx_new(1, s->trust);
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
	if (!casvc_x509_from_pem(pem, &x)) {
		bm_x509_serial_hex(x, buf, len);
		X509_free(x);
	}
}

json_t *bm_casvc_handle(struct bm_casvc *s, X509 *peer, const json_t *req, time_t now)
{
	const char *op = casvc_jstr(req, "op"), *csr = casvc_jstr(req, "csr"), *why = NULL;
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
		const char *n = casvc_jstr(req, "node");

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
			const char *ns = casvc_jstr(req, "namespace"), *sa = casvc_jstr(req, "service_account");
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
		err = bm_store_token_redeem(s->store, key, casvc_jstr(req, "token"), now);
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
	uint64_t deadline = casvc_mono_ms() + BM_CASVC_TIMEOUT_MS;
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
	err = casvc_tls_handshake(ssl, fd, 1, deadline);
	if (err) {
		long v = SSL_get_verify_result(ssl);

		__atomic_add_fetch(&s->tls_failed, 1, __ATOMIC_RELAXED);
		bm_log("ca service: TLS from %s failed: %s", from,
		       v != X509_V_OK ? X509_verify_cert_error_string(v) : strerror(-err));
		goto out;
	}
	err = casvc_tls_recv(ssl, fd, &req, deadline);
	if (err) {
		bm_log("ca service: request from %s: %s", from,
		       err == -EMSGSIZE ? "larger than 64 KiB" : err == -EBADMSG ? "not a JSON object" : strerror(-err));
		goto out;
	}
	ans = bm_casvc_handle(s, SSL_get0_peer_certificate(ssl), req, time(NULL));
	if (ans && !casvc_tls_send(ssl, fd, ans, deadline))
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

int bm_casvc_listen(struct bm_casvc *s, const char *addr)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
	struct addrinfo *ai = NULL;
	char host[64], port[16];
	int one = 1, err;

	if (casvc_parse_hostport(addr, host, sizeof(host), port, sizeof(port)) ||
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
