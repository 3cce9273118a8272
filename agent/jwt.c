/*
 * JWT validation as Envoy's jwt_authn filter does it for RequestAuthentication
 * (reference §5): compact JWS, RS256/ES256 only, kid selection, exp/nbf with a
 * 60 s skew, issuer and audiences. Keys come from a JWKS turned into EVP_PKEYs
 * with EVP_PKEY_fromdata; no JWT library.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include "jwt.h"

/* ---- base64url ------------------------------------------------------------ */

static int b64url_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int bm_b64url_decode(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
	unsigned char *buf;
	uint32_t acc = 0;
	size_t o = 0;
	int bits = 0;

	if (len % 4 == 1)
		return -EINVAL; /* no encoding ends with a single character */
	buf = malloc(len * 3 / 4 + 1);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_val((unsigned char)in[i]);

		if (v < 0) {
			free(buf);
			return -EINVAL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (unsigned char)(acc >> bits);
		}
	}
	buf[o] = 0;
	*out = buf;
	*outlen = o;
	return 0;
}

int bm_b64url_encode(const unsigned char *in, size_t len, char *out, size_t outlen)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;

	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			if (o + 1 >= outlen)
				return -ENOSPC;
			out[o++] = tab[(acc >> bits) & 63];
		}
	}
	if (bits) {
		if (o + 1 >= outlen)
			return -ENOSPC;
		out[o++] = tab[(acc << (6 - bits)) & 63];
	}
	if (o >= outlen)
		return -ENOSPC;
	out[o] = 0;
	return 0;
}

/* ---- JWKS -------------------------------------------------------------------- */

static BIGNUM *b64url_bn(const char *s)
{
	unsigned char *b;
	size_t n;
	BIGNUM *bn = NULL;

	if (!s || bm_b64url_decode(s, strlen(s), &b, &n))
		return NULL;
	if (n)
		bn = BN_bin2bn(b, (int)n, NULL);
	free(b);
	return bn;
}

static EVP_PKEY *fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pkey = NULL;

	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static EVP_PKEY *rsa_key(const json_t *k)
{
	BIGNUM *n = b64url_bn(json_string_value(json_object_get(k, "n")));
	BIGNUM *e = b64url_bn(json_string_value(json_object_get(k, "e")));
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	EVP_PKEY *pkey = NULL;

	if (n && e && bld && BN_num_bits(n) >= 1024 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
		pkey = fromdata("RSA", bld);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return pkey;
}

/* Coordinates are 32 bytes big-endian; shorter encodings are left-padded. */
static int coord(const char *s, unsigned char out[32])
{
	unsigned char *b;
	size_t n;

	if (!s || bm_b64url_decode(s, strlen(s), &b, &n))
		return -EINVAL;
	if (n == 0 || n > 32) {
		free(b);
		return -EINVAL;
	}
	memset(out, 0, 32);
	memcpy(out + 32 - n, b, n);
	free(b);
	return 0;
}

static EVP_PKEY *ec_key(const json_t *k)
{
	unsigned char pt[65];
	OSSL_PARAM_BLD *bld;
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *chk;

	if (strcmp(json_string_value(json_object_get(k, "crv")) ?: "", "P-256"))
		return NULL;
	pt[0] = 0x04; /* uncompressed point */
	if (coord(json_string_value(json_object_get(k, "x")), pt + 1) ||
	    coord(json_string_value(json_object_get(k, "y")), pt + 33))
		return NULL;
	bld = OSSL_PARAM_BLD_new();
	if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)))
		pkey = fromdata("EC", bld);
	OSSL_PARAM_BLD_free(bld);
	if (!pkey)
		return NULL;
	/* a point off the curve must not become a key */
	chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!chk || EVP_PKEY_public_check(chk) != 1) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
	EVP_PKEY_CTX_free(chk);
	return pkey;
}

int bm_jwks_parse(const char *json, struct bm_jwks **out)
{
	json_t *doc = json_loads(json ? json : "", 0, NULL);
	const json_t *keys = json_object_get(doc, "keys");
	struct bm_jwks *j;
	size_t i;
	json_t *k;

	*out = NULL;
	if (!json_is_array(keys)) {
		json_decref(doc);
		return -EINVAL;
	}
	j = calloc(1, sizeof(*j));
	if (j)
		j->k = calloc(json_array_size(keys) + 1, sizeof(*j->k));
	if (!j || !j->k) {
		free(j);
		json_decref(doc);
		return -ENOMEM;
	}
	j->refs = 1;
	json_array_foreach(keys, i, k) {
		const char *kty = json_string_value(json_object_get(k, "kty"));
		const char *use = json_string_value(json_object_get(k, "use"));
		const char *alg = json_string_value(json_object_get(k, "alg"));
		const char *kid = json_string_value(json_object_get(k, "kid"));
		struct bm_jwk *d = &j->k[j->n];

		if (!kty || (use && strcmp(use, "sig")))
			continue;
		if (!strcmp(kty, "RSA") && (!alg || !strcmp(alg, "RS256"))) {
			d->pkey = rsa_key(k);
			d->type = BM_JWK_RSA;
		} else if (!strcmp(kty, "EC") && (!alg || !strcmp(alg, "ES256"))) {
			d->pkey = ec_key(k);
			d->type = BM_JWK_EC_P256;
		}
		if (!d->pkey)
			continue;
		snprintf(d->kid, sizeof(d->kid), "%s", kid ? kid : "");
		j->n++;
	}
	json_decref(doc);
	if (!j->n) {
		bm_jwks_put(j);
		return -ENOKEY;
	}
	*out = j;
	return 0;
}

void bm_jwks_get(struct bm_jwks *j)
{
	if (j)
		__atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
}

void bm_jwks_put(struct bm_jwks *j)
{
	if (!j || __atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (size_t i = 0; i < j->n; i++)
		EVP_PKEY_free(j->k[i].pkey);
	free(j->k);
	free(j);
}

/* ---- tokens ------------------------------------------------------------------ */

struct parts {
	const char *seg[3];
	size_t len[3];
};

static int split(const char *t, size_t len, struct parts *p)
{
	const char *end = t + len, *s = t;

	if (!t || !len || len > BM_JWT_MAX_LEN)
		return -EINVAL;
	for (int i = 0; i < 3; i++) {
		const char *dot = memchr(s, '.', (size_t)(end - s));

		if (i < 2 && !dot)
			return -EINVAL;
		if (i == 2 && dot)
			return -EINVAL; /* JWE (5 parts) and garbage */
		p->seg[i] = s;
		p->len[i] = (size_t)((i < 2 ? dot : end) - s);
		if (i < 2)
			s = dot + 1; /* the last segment has no dot: NULL + 1 is UB */
	}
	return p->len[0] && p->len[1] ? 0 : -EINVAL;
}

static json_t *decode_obj(const char *s, size_t len)
{
	unsigned char *b;
	size_t n;
	json_t *o;

	if (bm_b64url_decode(s, len, &b, &n))
		return NULL;
	o = json_loadb((const char *)b, n, JSON_REJECT_DUPLICATES, NULL);
	free(b);
	if (o && !json_is_object(o)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int bm_jwt_peek(const char *token, size_t len, json_t **header, json_t **payload)
{
	struct parts p;

	*header = *payload = NULL;
	if (split(token, len, &p))
		return -EINVAL;
	*header = decode_obj(p.seg[0], p.len[0]);
	*payload = decode_obj(p.seg[1], p.len[1]);
	if (*header && *payload)
		return 0;
	json_decref(*header);
	json_decref(*payload);
	*header = *payload = NULL;
	return -EINVAL;
}

/* ES256 signatures are r||s (RFC 7518 §3.4); EVP wants DER. */
static int es256_der(const unsigned char *sig, size_t len, unsigned char **der, size_t *dlen)
{
	ECDSA_SIG *es;
	BIGNUM *r, *s;
	int n;

	*der = NULL;
	if (len != 64)
		return -EINVAL;
	es = ECDSA_SIG_new();
	r = BN_bin2bn(sig, 32, NULL);
	s = BN_bin2bn(sig + 32, 32, NULL);
	if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
		ECDSA_SIG_free(es);
		BN_free(r);
		BN_free(s);
		return -EINVAL;
	}
	n = i2d_ECDSA_SIG(es, der);
	ECDSA_SIG_free(es);
	if (n <= 0)
		return -EINVAL;
	*dlen = (size_t)n;
	return 0;
}

static int verify_with(EVP_PKEY *pkey, const char *input, size_t ilen, const unsigned char *sig,
		       size_t slen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
	     EVP_DigestVerify(md, sig, slen, (const unsigned char *)input, ilen) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

/* Envoy compares audiences without scheme and trailing slash. */
static int aud_eq(const char *a, const char *b)
{
	size_t la, lb;

	for (int i = 0; i < 2; i++) {
		const char **x = i ? &b : &a;

		if (!strncmp(*x, "https://", 8))
			*x += 8;
		else if (!strncmp(*x, "http://", 7))
			*x += 7;
	}
	la = strlen(a);
	lb = strlen(b);
	if (la && a[la - 1] == '/')
		la--;
	if (lb && b[lb - 1] == '/')
		lb--;
	return la == lb && !memcmp(a, b, la);
}

static int aud_ok(const json_t *tok_aud, const char *const *aud, size_t n_aud)
{
	size_t i;
	json_t *v;

	if (!n_aud)
		return 1;
	for (size_t k = 0; k < n_aud; k++) {
		if (json_is_string(tok_aud) && aud_eq(json_string_value(tok_aud), aud[k]))
			return 1;
		json_array_foreach(tok_aud, i, v)
			if (json_is_string(v) && aud_eq(json_string_value(v), aud[k]))
				return 1;
	}
	return 0;
}

#define FAIL(code, ...)                                      \
	do {                                                 \
		snprintf(err, errlen, __VA_ARGS__);          \
		rc = code;                                   \
		goto out;                                    \
	} while (0)

int bm_jwt_verify(const char *token, size_t len, const struct bm_jwks *keys, const char *issuer,
		  const char *const *aud, size_t n_aud, time_t now, json_t **payload, char *err,
		  size_t errlen)
{
	json_t *hdr = NULL, *pl = NULL;
	unsigned char *sig = NULL, *der = NULL;
	size_t slen = 0, dlen = 0;
	const char *alg, *kid, *iss;
	const json_t *exp, *nbf;
	struct parts p;
	int rc = 0, type, tried = 0, good = 0;

	if (payload)
		*payload = NULL;
	if (errlen)
		err[0] = 0;
	if (split(token, len, &p) || !(hdr = decode_obj(p.seg[0], p.len[0])) ||
	    !(pl = decode_obj(p.seg[1], p.len[1])) || bm_b64url_decode(p.seg[2], p.len[2], &sig, &slen))
		FAIL(-EINVAL, "Jwt is not in the form of Header.Payload.Signature");
	alg = json_string_value(json_object_get(hdr, "alg"));
	if (!alg)
		FAIL(-EINVAL, "Jwt header has no alg");
	if (!strcmp(alg, "RS256"))
		type = BM_JWK_RSA;
	else if (!strcmp(alg, "ES256"))
		type = BM_JWK_EC_P256;
	else
		FAIL(-ENOTSUP, "Jwt alg %.32s is not supported", alg); /* none, HS256, ... */
	if (type == BM_JWK_EC_P256) {
		if (es256_der(sig, slen, &der, &dlen))
			FAIL(-EKEYREJECTED, "Jwt verification fails");
	}
	kid = json_string_value(json_object_get(hdr, "kid"));
	for (size_t i = 0; keys && i < keys->n && !good; i++) {
		const struct bm_jwk *k = &keys->k[i];

		if (k->type != type || (kid && k->kid[0] && strcmp(kid, k->kid)))
			continue;
		tried++;
		good = verify_with(k->pkey, p.seg[0], p.len[0] + 1 + p.len[1], der ? der : sig,
				   der ? dlen : slen);
	}
	if (!tried)
		FAIL(-ENOKEY, "Jwks doesn't have key to match kid or alg from Jwt");
	if (!good)
		FAIL(-EKEYREJECTED, "Jwt verification fails");
	/* claims: only now that they are authentic */
	exp = json_object_get(pl, "exp");
	nbf = json_object_get(pl, "nbf");
	if ((exp && !json_is_number(exp)) || (nbf && !json_is_number(nbf)))
		FAIL(-EINVAL, "Jwt exp or nbf is not a number");
	if (exp && (double)now > json_number_value(exp) + BM_JWT_CLOCK_SKEW)
		FAIL(-EKEYEXPIRED, "Jwt is expired");
	if (nbf && (double)now + BM_JWT_CLOCK_SKEW < json_number_value(nbf))
		FAIL(-EKEYEXPIRED, "Jwt not yet valid");
	iss = json_string_value(json_object_get(pl, "iss"));
	if (issuer && (!iss || strcmp(iss, issuer)))
		FAIL(-EACCES, "Jwt issuer is not configured");
	if (!aud_ok(json_object_get(pl, "aud"), aud, n_aud))
		FAIL(-EACCES, "Audiences in Jwt are not allowed");
	if (payload)
		*payload = json_incref(pl);
out:
	free(sig);
	OPENSSL_free(der);
	json_decref(hdr);
	json_decref(pl);
	return rc;
}
