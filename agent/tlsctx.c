/* TLS 1.3 mTLS contexts for HBONE; see tlsctx.h for the rotation design. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "log.h"
#include "tlsctx.h"

/* What a context knows: its manager and the local identity it presents. */
struct tls_conf {
	struct bm_identity_mgr *mgr;
	char id[BM_SPIFFE_ID_MAX + 1];
};

/* Per SSL: the peer identities the caller accepts (empty: any). */
struct tls_expect {
	size_t n;
	char *ids[];
};

static int ctx_idx = -1, expect_idx = -1, why_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static void free_conf(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	free(ptr);
}

static void free_expect(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct tls_expect *e = ptr;

	if (!e)
		return;
	for (size_t i = 0; i < e->n; i++)
		free(e->ids[i]);
	free(e);
}

static void idx_init(void)
{
	ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_conf);
	expect_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_expect);
	/* Holds a static string: nothing to free. */
	why_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int indices(void)
{
	pthread_once(&idx_once, idx_init);
	return ctx_idx >= 0 && expect_idx >= 0 && why_idx >= 0 ? 0 : -ENOMEM;
}

/* The X509-SVID.md validation rules beyond RFC 5280 path validation. NULL
 * when leaf is an acceptable peer SVID (its ID in id), else why not. */
static const char *svid_leaf_check(const struct bm_identity_mgr *m, X509 *leaf, char *id, size_t len)
{
	struct bm_spiffe_id p;
	X509_EXTENSION *ku_ext;
	uint32_t ku;
	int at;

	switch (bm_x509_uri_san(leaf, id, len)) {
	case 0: break;
	case -ENOENT: return "no URI SAN";
	case -E2BIG: return "more than one URI SAN";
	default: return "unusable URI SAN";
	}
	if (bm_spiffe_id_parse(id, &p))
		return "URI SAN is not a SPIFFE ID";
	if (!p.path[0])
		return "SPIFFE ID without a path";
	/* Workload identities only: a node's or the CA's own certificate
	 * (spiffe://TD/bpfmesh/...) chains to the same root but is no HBONE
	 * peer. */
	{
		const char *sa = strstr(p.path, "/sa/");

		if (strncmp(p.path, "/ns/", 4) || !sa || sa == p.path + 4 || !sa[4] ||
		    strchr(sa + 4, '/') || memchr(p.path + 4, '/', (size_t)(sa - p.path - 4)))
			return "SPIFFE ID is not a workload identity (/ns/NS/sa/SA)";
	}
	if (!bm_identity_td_trusted(m, p.td))
		return "SPIFFE ID of a foreign trust domain";
	if (X509_check_ca(leaf))
		return "leaf certificate is a CA";
	ku = X509_get_key_usage(leaf);
	at = X509_get_ext_by_NID(leaf, NID_key_usage, -1);
	ku_ext = at >= 0 ? X509_get_ext(leaf, at) : NULL;
	if (ku == UINT32_MAX || !ku_ext || !X509_EXTENSION_get_critical(ku_ext))
		return "keyUsage missing or not critical";
	if (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN))
		return "leaf keyUsage allows certificate signing";
	if (!(ku & KU_DIGITAL_SIGNATURE))
		return "leaf keyUsage lacks digitalSignature";
	return NULL;
}

static const char *expect_check(SSL *ssl, const char *id)
{
	const struct tls_expect *e = SSL_get_ex_data(ssl, expect_idx);

	if (!e || !e->n)
		return NULL;
	for (size_t i = 0; i < e->n; i++)
		if (!strcmp(e->ids[i], id))
			return NULL;
	return "peer SPIFFE ID is not the expected one";
}

static int verify_cb(int ok, X509_STORE_CTX *sctx)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	const struct tls_conf *c = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_idx) : NULL;
	char id[BM_SPIFFE_ID_MAX + 1];
	const char *why;

	if (!ok) {
		if (ssl)
			SSL_set_ex_data(ssl, why_idx,
					(void *)X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
		return 0;
	}
	/* The SPIFFE rules are about the leaf; the CA certificates above it were
	 * judged by OpenSSL's path validation (CA:TRUE, keyCertSign, validity). */
	if (X509_STORE_CTX_get_error_depth(sctx) != 0)
		return 1;
	if (!c)
		return 0;
	why = svid_leaf_check(c->mgr, X509_STORE_CTX_get_current_cert(sctx), id, sizeof(id));
	if (!why)
		why = expect_check(ssl, id);
	if (why) {
		SSL_set_ex_data(ssl, why_idx, (void *)why);
		X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return 1;
}

/* Install the identity's current SVID on this SSL: the rotation point. */
static int cert_cb(SSL *ssl, void *arg)
{
	const struct tls_conf *c = arg;
	struct bm_svid *s = bm_identity_get(c->mgr, c->id);
	int ok;

	if (!s) {
		/* The identity was dropped (no workload left): refuse, never
		 * handshake without a certificate. */
		SSL_set_ex_data(ssl, why_idx, (void *)"local identity has no SVID");
		return 0;
	}
	ok = SSL_use_cert_and_key(ssl, s->cert, s->key, s->chain, 1);
	bm_svid_put(s);
	return ok == 1;
}

/* Refuse a ClientHello without ALPN: HBONE is HTTP/2 only, and the ALPN
 * select callback is not called at all when the extension is absent. */
static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
	const unsigned char *p;
	size_t len;

	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &len)) {
		*al = SSL_AD_NO_APPLICATION_PROTOCOL;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
			  unsigned int inlen, void *arg)
{
	unsigned int i = 0;

	while (i < inlen) {
		unsigned int l = in[i];

		if (i + 1 + l > inlen)
			break;
		if (l == 2 && !memcmp(in + i + 1, BM_TLS_ALPN, 2)) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
}

static SSL_CTX *ctx_new(struct bm_identity_mgr *m, const char *spiffe_id, int server)
{
	static const unsigned char alpn[] = "\x02" BM_TLS_ALPN;
	struct tls_conf *c = NULL;
	SSL_CTX *ctx = NULL;
	long session_timeout;
	int err = -EINVAL;

	if (!m || bm_spiffe_id_parse(spiffe_id, NULL))
		goto err_out;
	err = indices();
	if (err)
		goto err_out;
	err = -ENOMEM;
	c = calloc(1, sizeof(*c));
	ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!c || !ctx)
		goto err_free;
	c->mgr = m;
	snprintf(c->id, sizeof(c->id), "%s", spiffe_id);
	if (!SSL_CTX_set_ex_data(ctx, ctx_idx, c))
		goto err_free;
	c = NULL; /* freed with ctx from here on */
	err = -EINVAL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set1_groups_list(ctx, "X25519:P-256"))
		goto err_free;
	SSL_CTX_set1_cert_store(ctx, m->trust);
	/* X509_STRICT adds RFC 5280 checks OpenSSL skips by default, among them
	 * "empty subject needs a critical SAN", which our SVIDs rely on. */
	X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_X509_STRICT);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), verify_cb);
	/* leaf + root today; room for two intermediates. */
	SSL_CTX_set_verify_depth(ctx, 3);
	SSL_CTX_set_cert_cb(ctx, cert_cb, SSL_CTX_get_ex_data(ctx, ctx_idx));
	/* A resumed session keeps the peer identity of its full handshake; keep
	 * it shorter than half an SVID lifetime so it never outlives a rotation
	 * by much, and never beyond OpenSSL's usual two hours. */
	session_timeout = m->ttl / 2 < 7200 ? m->ttl / 2 : 7200;
	SSL_CTX_set_timeout(ctx, session_timeout > 0 ? session_timeout : 1);
	if (server) {
		unsigned char sid[32];
		unsigned int sidlen = 0;

		/* Required for resumption with client certificates, and ties a
		 * ticket to the identity that issued it. */
		if (!EVP_Digest(spiffe_id, strlen(spiffe_id), sid, &sidlen, EVP_sha256(), NULL) ||
		    !SSL_CTX_set_session_id_context(ctx, sid, sidlen))
			goto err_free;
		/* HBONE keeps one long-lived connection per peer: one ticket is enough. */
		SSL_CTX_set_num_tickets(ctx, 1);
		SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
	} else {
		/* Returns 0 on success, unlike most of OpenSSL. */
		if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1))
			goto err_free;
	}
	return ctx;
err_free:
	SSL_CTX_free(ctx);
	free(c);
	ERR_clear_error();
err_out:
	errno = -err;
	return NULL;
}

SSL_CTX *bm_tls_server_ctx(struct bm_identity_mgr *m, const char *spiffe_id)
{
	return ctx_new(m, spiffe_id, 1);
}

SSL_CTX *bm_tls_client_ctx(struct bm_identity_mgr *m, const char *spiffe_id)
{
	return ctx_new(m, spiffe_id, 0);
}

int bm_tls_expect_peer(SSL *ssl, const char *const *ids, size_t n)
{
	struct tls_expect *e, *old;
	int err = indices();

	if (err)
		return err;
	for (size_t i = 0; i < n; i++)
		if (bm_spiffe_id_parse(ids[i], NULL))
			return -EINVAL;
	e = calloc(1, sizeof(*e) + n * sizeof(char *));
	if (!e)
		return -ENOMEM;
	for (; e->n < n; e->n++) {
		e->ids[e->n] = strdup(ids[e->n]);
		if (!e->ids[e->n])
			goto err_free;
	}
	old = SSL_get_ex_data(ssl, expect_idx);
	if (!SSL_set_ex_data(ssl, expect_idx, e))
		goto err_free;
	/* Replacing a previous list: the ex_data free callback only runs at
	 * SSL_free, so release the old one here. */
	free_expect(NULL, old, NULL, 0, 0, NULL);
	return 0;
err_free:
	free_expect(NULL, e, NULL, 0, 0, NULL);
	return -ENOMEM;
}

int bm_tls_peer_id(SSL *ssl, char *buf, size_t len)
{
	const struct tls_conf *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_idx);
	X509 *peer = SSL_get0_peer_certificate(ssl);
	char id[BM_SPIFFE_ID_MAX + 1];
	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;
	const char *why;

	if (!c)
		return -EINVAL;
	if (!peer)
		return -ENOKEY;
	if (SSL_get_verify_result(ssl) != X509_V_OK)
		return -EPERM;
	SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
	if (alpn_len != 2 || memcmp(alpn, BM_TLS_ALPN, 2))
		return -EPROTO;
	/* Checked again here, not only in verify_cb: a resumed session skips
	 * verification, and the expected IDs belong to this SSL, not to the
	 * connection the session came from. */
	why = svid_leaf_check(c->mgr, peer, id, sizeof(id));
	if (!why)
		why = expect_check(ssl, id);
	if (why) {
		SSL_set_ex_data(ssl, why_idx, (void *)why);
		return -EPERM;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(peer)) <= 0) {
		SSL_set_ex_data(ssl, why_idx, (void *)"peer certificate expired");
		return -EKEYEXPIRED;
	}
	if (strlen(id) >= len)
		return -ENAMETOOLONG;
	memcpy(buf, id, strlen(id) + 1);
	return 0;
}

const char *bm_tls_peer_error(SSL *ssl)
{
	const char *why;

	if (indices())
		return "";
	why = SSL_get_ex_data(ssl, why_idx);
	return why ? why : "";
}
