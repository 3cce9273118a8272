/* JWT (compact JWS) validation for RequestAuthentication, on OpenSSL 3's
 * EVP API only. Accepted algorithms: RS256 and ES256 (reference §5); "none",
 * HS* and everything else are refused. A parsed JWKS is immutable and
 * reference counted, so worker threads verify with it while a refresh swaps
 * in a new one. */
#ifndef BM_JWT_H
#define BM_JWT_H
#include <stddef.h>
#include <time.h>
#include <jansson.h>

#define BM_JWT_MAX_LEN    16384 /* longer tokens are refused before decoding */
#define BM_JWT_CLOCK_SKEW 60    /* seconds, Envoy's default for exp and nbf */

enum bm_jwk_type { BM_JWK_RSA = 1, BM_JWK_EC_P256 };

struct bm_jwk {
	char kid[128];          /* "" when the key has none */
	int type;               /* enum bm_jwk_type */
	void *pkey;             /* EVP_PKEY * (public) */
};

struct bm_jwks {
	int refs;               /* atomic */
	size_t n;
	struct bm_jwk *k;
};

/* Parse a JWKS document ({"keys":[...]}). RSA keys (n, e) and EC P-256 keys
 * (x, y) are kept; keys of other types, other curves, "use" other than "sig"
 * or an "alg" other than RS256/ES256 are skipped. -EINVAL when the document
 * is not a JWKS, -ENOKEY when no key is usable. *out has refs = 1. */
int bm_jwks_parse(const char *json, struct bm_jwks **out);
void bm_jwks_get(struct bm_jwks *j);
void bm_jwks_put(struct bm_jwks *j);

/* The token's header and payload without any verification (e.g. to pick the
 * rule by its iss). 0 or -EINVAL; the caller decrefs both. */
int bm_jwt_peek(const char *token, size_t len, json_t **header, json_t **payload);

/* Verify token[0..len) against keys: signature (kid selects the key; without
 * kid every key of the algorithm's type is tried), exp and nbf with
 * BM_JWT_CLOCK_SKEW, iss == issuer, and when n_aud > 0 one of aud[] in the
 * token's aud (string or array). On success *payload (if not NULL) gets the
 * verified claims (caller decrefs). Errors: -EINVAL malformed, -ENOTSUP
 * algorithm refused, -ENOKEY no key for it, -EKEYREJECTED bad signature,
 * -EKEYEXPIRED expired or not yet valid, -EACCES issuer or audience; err
 * gets Envoy-like text ("Jwt is expired", ...). */
int bm_jwt_verify(const char *token, size_t len, const struct bm_jwks *keys, const char *issuer,
		  const char *const *aud, size_t n_aud, time_t now, json_t **payload, char *err,
		  size_t errlen);

/* base64url (RFC 4648 §5) without padding: decoded bytes in *out (malloc'ed,
 * NUL-terminated for convenience), length in *outlen. 0 or -EINVAL. */
int bm_b64url_decode(const char *in, size_t len, unsigned char **out, size_t *outlen);
/* Encode into out (NUL-terminated); -ENOSPC if it does not fit. */
int bm_b64url_encode(const unsigned char *in, size_t len, char *out, size_t outlen);

#endif
