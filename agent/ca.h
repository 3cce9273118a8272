/* The mesh CA: a root that issues SPIFFE X.509-SVIDs, and SPIFFE ID helpers.
 * Design and the multi-node CSR flow: docs/identity.md. */
#ifndef BM_CA_H
#define BM_CA_H
#include <stddef.h>
#include <sys/types.h>
#include <time.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#define BM_TRUST_DOMAIN_DEFAULT "cluster.local"
#define BM_TRUST_DOMAIN_MAX 255   /* SPIFFE-ID.md: trust domain <= 255 bytes */
#define BM_SPIFFE_ID_MAX 2048     /* SPIFFE-ID.md: accept up to 2048 bytes; we reject longer */
#define BM_SVID_TTL_DEFAULT (24 * 3600)     /* Istio SECRET_TTL */
#define BM_SVID_TTL_MAX (90L * 24 * 3600)   /* Istio MAX_WORKLOAD_CERT_TTL */
#define BM_SVID_BACKDATE 120                /* Istio: NotBefore = now - 2 min (clock skew) */
#define BM_CA_ROOT_TTL (10L * 365 * 24 * 3600)
#define BM_CA_CERT_FILE "root-cert.pem"
#define BM_CA_KEY_FILE "root-key.pem"

/* A parsed SPIFFE ID: spiffe://<td><path>; path is "" or "/seg/seg...". */
struct bm_spiffe_id {
	char td[BM_TRUST_DOMAIN_MAX + 1];
	char path[BM_SPIFFE_ID_MAX + 1];
};

/* NULL when id is a valid SPIFFE ID, else why not (a static string). */
const char *bm_spiffe_id_check(const char *id);
/* 0 or -EINVAL; out may be NULL (validation only). */
int bm_spiffe_id_parse(const char *id, struct bm_spiffe_id *out);
/* 0 or -EINVAL (bad trust domain charset / length). */
int bm_spiffe_td_valid(const char *td);
/* Istio workload identity spiffe://<td>/ns/<ns>/sa/<sa>: 0, -EINVAL, -ENAMETOOLONG. */
int bm_spiffe_id_build(const char *td, const char *ns, const char *sa, char *buf, size_t len);

struct bm_ca {
	X509 *cert;          /* self-signed root; also the trust bundle */
	EVP_PKEY *key;
	char trust_domain[BM_TRUST_DOMAIN_MAX + 1];
};

/* Load DIR/root-cert.pem + DIR/root-key.pem, or create them (ECDSA P-256,
 * 10 years) when there is no certificate. The key file must be mode 0600.
 * Serialised by flock(DIR/.lock), so meshds sharing DIR agree on one root. */
int bm_ca_load_or_create(const char *dir, const char *trust_domain, struct bm_ca **out);
/* A CA given by the operator: a self-signed CA certificate and its key. */
int bm_ca_load_external(const char *cert_path, const char *key_path, const char *trust_domain,
			struct bm_ca **out);
void bm_ca_free(struct bm_ca *ca);

/* Issue an X.509-SVID for spiffe_id (an Istio workload ID in the CA's trust
 * domain) over pubkey's public half, valid [now - 2 min, now + ttl]; ttl is
 * clamped to the root's NotAfter. now is passed so tests can use a fake clock. */
int bm_ca_issue(const struct bm_ca *ca, const char *spiffe_id, EVP_PKEY *pubkey, long ttl,
		time_t now, X509 **out);
/* The CSR flow: verify csr_pem's signature, require that its only SAN is
 * exactly expected_id (the caller decides which IDs a node may ask for),
 * ignore the rest of the request, issue as bm_ca_issue(). *cert_pem is
 * malloc'd (the leaf alone; the root travels as the trust bundle).
 * -EBADMSG unparsable or bad signature, -EPERM identity refused. */
int bm_ca_sign_csr(const struct bm_ca *ca, const char *csr_pem, const char *expected_id, long ttl,
		   time_t now, char **cert_pem);
/* A fresh P-256 key and a CSR for spiffe_id (empty subject, one URI SAN). */
int bm_csr_create(const char *spiffe_id, EVP_PKEY **key, char **csr_pem);
/* The same over a key the caller has (the identity manager makes the key
 * before it asks its issuer). */
int bm_csr_create_for(const char *spiffe_id, EVP_PKEY *key, char **csr_pem);

/* For `meshctl ca show`: subject, trust_domain, serial, not_before,
 * not_after, sha256_fingerprint. NULL on allocation failure. */
json_t *bm_ca_show_json(const struct bm_ca *ca);

/* Small X.509 helpers shared with identity.c and tlsctx.c. */
/* The single URI SAN of cert into buf: 0, -ENOENT none, -E2BIG more than one
 * URI SAN, -EINVAL an empty/odd one, -ENAMETOOLONG buf too small. */
int bm_x509_uri_san(X509 *cert, char *buf, size_t len);
/* Serial as lowercase hex: 0 or -errno. */
int bm_x509_serial_hex(X509 *cert, char *buf, size_t len);
/* An ASN1 time as a time_t (UTC). */
int bm_x509_time(const ASN1_TIME *t, time_t *out);
/* dir/name written as temp file (O_EXCL, mode from the first byte) + fsync +
 * rename + directory fsync: after a crash the file is old or new, never torn. */
int bm_write_file_atomic(const char *dir, const char *name, mode_t mode, const char *data, size_t len);
/* time_t as RFC 3339 UTC, e.g. 2026-08-01T12:00:00Z. */
void bm_time_rfc3339(time_t t, char *buf, size_t len);

#endif
