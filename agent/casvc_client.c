/* The node-side client of the mesh CA service: keeps the node key and
 * certificate (join once, renew at half life), and issues workload SVIDs
 * for the identity manager, backing off when the CA is down or refuses.
 * The protocol and the threading rules are in casvc.h, the design in
 * docs/identity.md §6. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
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
#include "casvc_int.h"
#include "log.h"

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
#define HELD_MAX 32          /* refused identities remembered for back-off */

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
	if (casvc_parse_hostport(o->addr, host, sizeof(host), port, sizeof(port)) ||
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
	c->ctx = casvc_ctx_new(0, c->trust);
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
	err = casvc_wait_fd(fd, POLLOUT, deadline);
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
	uint64_t now = casvc_mono_ms(), deadline = now + BM_CASVC_TIMEOUT_MS;
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
	err = casvc_tls_handshake(ssl, fd, 0, deadline);
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
	err = casvc_tls_send(ssl, fd, req, deadline);
	if (!err)
		err = casvc_tls_recv(ssl, fd, ans, deadline);
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
	c->retry_at = casvc_mono_ms() + c->backoff;
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
	err = casvc_x509_from_pem(pem, x);
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
	if (casvc_mono_ms() < c->node_retry_at)
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
		c->node_retry_at = casvc_mono_ms() + c->node_backoff;
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
	if (h && casvc_mono_ms() < h->until)
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
		h->until = casvc_mono_ms() + h->backoff;
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
