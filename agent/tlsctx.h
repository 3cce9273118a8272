/* TLS 1.3 mTLS contexts for HBONE (istio-api.md §10.1), one server and one
 * client context per local SPIFFE identity.
 *
 * Rotation: a context never holds a certificate. Its cert callback takes the
 * identity's current SVID from the manager at each handshake and installs it
 * on that SSL alone (SSL_use_cert_and_key takes its own references), so a
 * rotation is seen by the next handshake and established connections keep
 * the key and certificate they started with. Contexts are never rebuilt or
 * swapped; they are safe to share between worker threads.
 *
 * The manager must outlive every context made from it. */
#ifndef BM_TLSCTX_H
#define BM_TLSCTX_H
#include <stddef.h>
#include <openssl/ssl.h>
#include "identity.h"

#define BM_TLS_ALPN "h2"

/* Server: requires a client certificate, selects ALPN h2 and refuses a
 * ClientHello without it. Client: offers h2. Both: TLS 1.3 only, X25519 and
 * P-256, peer verified against the trust bundle and the SVID rules (exactly
 * one URI SAN, a SPIFFE ID with a path in our trust domain or an alias, leaf
 * not a CA, critical keyUsage with digitalSignature and no cert signing).
 * Session tickets are on; a client resumes by SSL_set_session() with a
 * session kept from SSL_get1_session() per destination (close connections
 * with SSL_shutdown(): OpenSSL discards the session of one freed without).
 * NULL with errno set (EINVAL: bad SPIFFE ID, ENOMEM). Free with SSL_CTX_free. */
SSL_CTX *bm_tls_server_ctx(struct bm_identity_mgr *m, const char *spiffe_id);
SSL_CTX *bm_tls_client_ctx(struct bm_identity_mgr *m, const char *spiffe_id);

/* Before the handshake: accept the peer only if its SPIFFE ID is one of ids
 * (HBONE client: the destination workload's identities). n == 0: any ID of
 * the trust domain. 0 or -errno. */
int bm_tls_expect_peer(SSL *ssl, const char *const *ids, size_t n);

/* After the handshake (full or resumed): the verified peer SPIFFE ID into buf.
 * 0; -ENOKEY no peer certificate; -EPERM verification failed or the ID is
 * not acceptable; -EKEYEXPIRED the peer certificate expired since (resumed
 * session); -EPROTO ALPN is not h2; -ENAMETOOLONG buf too small. */
int bm_tls_peer_id(SSL *ssl, char *buf, size_t len);

/* Why the peer was refused, for logs and counters ("" when it was not). */
const char *bm_tls_peer_error(SSL *ssl);

#endif
