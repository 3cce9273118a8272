/* What the files of the CA service share; not an API (that is casvc.h).
 *
 *   agent/casvc_proto.c   names, frames and messages; TLS I/O with a deadline
 *   agent/casvc.c         authorization and the server thread
 *   agent/casvc_client.c  the node-side client */
#ifndef BM_CASVC_INT_H
#define BM_CASVC_INT_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include "casvc.h"

/* ---- agent/casvc_proto.c ---- */

/* CLOCK_MONOTONIC in ms: what every deadline is measured in. */
uint64_t casvc_mono_ms(void);
/* The string member key of o, NULL when absent or not a string. */
const char *casvc_jstr(const json_t *o, const char *key);

/* Each of these is 0 or -errno (-ETIMEDOUT once the deadline, in
 * casvc_mono_ms() time, has passed). */
int casvc_wait_fd(int fd, short events, uint64_t deadline);
int casvc_tls_handshake(SSL *ssl, int fd, int server, uint64_t deadline);
/* One frame out, one frame in (bm_casvc_frame_encode/decode). */
int casvc_tls_send(SSL *ssl, int fd, const json_t *msg, uint64_t deadline);
int casvc_tls_recv(SSL *ssl, int fd, json_t **msg, uint64_t deadline);
/* TLS 1.3 only, peers verified against trust, no session resumption. */
SSL_CTX *casvc_ctx_new(int server, X509_STORE *trust);
/* 0, or -EBADMSG when pem is not a certificate. */
int casvc_x509_from_pem(const char *pem, X509 **out);
/* "HOST:PORT" split at the last colon; -EINVAL when either part is empty
 * or too long. */
int casvc_parse_hostport(const char *addr, char *host, size_t hlen, char *port, size_t plen);

#endif
