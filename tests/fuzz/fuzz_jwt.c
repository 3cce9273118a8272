/* libFuzzer entry for JWT and JWKS handling (agent/jwt.c).
 *
 * An input starting with '{' is a JWKS document for bm_jwks_parse, and also
 * a claims set that the fuzzer signs with a key of its own (generated at
 * start, RSA or EC by the input's length) and verifies: a correctly signed
 * token must never be refused for its signature or key, and when it is
 * accepted the claims come back unchanged. Any other input is a token for
 * bm_jwt_peek and bm_jwt_verify against a fixed JWKS (one RSA and one EC
 * key; the seed tokens in corpus_jwt/ are signed with their private halves
 * by build/tools/bm-jwt) plus the generated keys. Tokens are handed over in
 * exact-size heap copies without a NUL, so ASan sees any overread. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include "jwt.h"

#define FAIL(...)                                       \
	do {                                            \
		fprintf(stderr, "fuzz_jwt: " __VA_ARGS__); \
		fputc('\n', stderr);                    \
		abort();                                \
	} while (0)

/* Keys made with `bm-jwt keygen --alg RS256` and `--alg ES256`. */
static const char fixed_jwks[] =
	"{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"kid\":\"QIYfUsRxBXpPD7hh\",\"n\":\"t2Hz0oujFU_T"
	"7EcNoGZhG2-PRrMagU4N5lvbHJW0udUxsxqvZOle9U30_2w5ZLokaid_oEwkC04dSZnDd-JkdgiWbu-LzCgfDwL06e"
	"6-PAfcTo2jjlUiWRKqsQG3jCJ2wc8FYATimUpz5Jj9tMn8Pv5bNAf4pdpsWkLTp5pdYvrR1Dvxgoh_SS0JcBV1NkjI"
	"daPGTD4rHIxERX8M9yqV6zktjSG71cexokMrexWYGYPGnkY-l1qCm8LYxx44BEB1Ujgv5jrXC7i42hIJ5ftKB8lAhv"
	"F_y_jZ9c2BiEx94OMKOUsHW0rzaBOHnVCyufTnDdBHF_iTxslyPFwu8oSKlQ\",\"e\":\"AQAB\"},{\"kty\":\"EC\",\"crv"
	"\":\"P-256\",\"alg\":\"ES256\",\"use\":\"sig\",\"kid\":\"8yzJjN-ML4IIGDyG\",\"x\":\"LVTS9qOofMnQiQ5APzxdZznw"
	"9PrAxjf5hP7EAjmf96Q\",\"y\":\"yH9HugtK__hh7QEYxRC47U-Hvefs_Kjp0jax-U0s9tY\"}]}";

#define NOW 1700000000 /* fixed, so a run replays the same way */

static EVP_PKEY *own_rsa, *own_ec;
static struct bm_jwks *keys;

static char *b64(const unsigned char *in, size_t n)
{
	size_t cap = n * 4 / 3 + 4;
	char *out = malloc(cap);

	if (!out || bm_b64url_encode(in, n, out, cap))
		FAIL("base64url encode of %zu bytes", n);
	return out;
}

static char *bn_b64(const EVP_PKEY *k, const char *name, size_t pad)
{
	BIGNUM *bn = NULL;
	unsigned char buf[512];
	int n;

	if (!EVP_PKEY_get_bn_param(k, name, &bn))
		FAIL("EVP_PKEY_get_bn_param %s", name);
	n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
	BN_free(bn);
	if (n <= 0)
		FAIL("BN_bn2bin %s", name);
	return b64(buf, (size_t)n);
}

static json_t *jwk_of(EVP_PKEY *k, int rsa)
{
	char *a = bn_b64(k, rsa ? OSSL_PKEY_PARAM_RSA_N : OSSL_PKEY_PARAM_EC_PUB_X, rsa ? 0 : 32);
	char *b = bn_b64(k, rsa ? OSSL_PKEY_PARAM_RSA_E : OSSL_PKEY_PARAM_EC_PUB_Y, rsa ? 0 : 32);
	json_t *j = rsa ? json_pack("{ss ss ss ss}", "kty", "RSA", "kid", "fz-rsa", "n", a, "e", b) :
			  json_pack("{ss ss ss ss ss}", "kty", "EC", "crv", "P-256", "kid", "fz-ec",
				    "x", a, "y", b);

	free(a);
	free(b);
	return j;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	json_t *doc = json_loads(fixed_jwks, 0, NULL);
	char *text;

	/* 1024 bits: the smallest the JWKS parser takes, and quick to sign with */
	own_rsa = EVP_RSA_gen(1024);
	own_ec = EVP_EC_gen("P-256");
	if (!doc || !own_rsa || !own_ec)
		FAIL("key generation");
	json_array_append_new(json_object_get(doc, "keys"), jwk_of(own_rsa, 1));
	json_array_append_new(json_object_get(doc, "keys"), jwk_of(own_ec, 0));
	text = json_dumps(doc, JSON_COMPACT);
	if (!text || bm_jwks_parse(text, &keys) || keys->n != 4)
		FAIL("the fuzzer's own JWKS does not parse (%zu keys)", keys ? keys->n : 0);
	free(text);
	json_decref(doc);
	return 0;
}

static void check_b64(const char *s, size_t n)
{
	unsigned char *d, *d2;
	size_t dl, dl2;
	char *e;

	if (bm_b64url_decode(s, n, &d, &dl))
		return;
	if (dl > n * 3 / 4 || d[dl])
		FAIL("decoded %zu bytes from %zu characters", dl, n);
	e = b64(d, dl);
	if (bm_b64url_decode(e, strlen(e), &d2, &dl2) || dl2 != dl || memcmp(d, d2, dl))
		FAIL("base64url round trip changed the bytes");
	free(d2);
	free(e);
	free(d);
}

static void check_token(const char *tok, size_t len, const char *issuer, const char *const *aud,
			size_t n_aud)
{
	json_t *payload = (json_t *)1, *h = NULL, *pl = NULL;
	char err[160];
	int rc = bm_jwt_verify(tok, len, keys, issuer, aud, n_aud, NOW, &payload, err, sizeof(err));

	switch (rc) {
	case 0:
		if (!payload)
			FAIL("accepted without a payload");
		if (bm_jwt_peek(tok, len, &h, &pl) || !json_equal(pl, payload))
			FAIL("accepted token that peek reads differently");
		json_decref(h);
		json_decref(pl);
		json_decref(payload);
		break;
	case -EINVAL: case -ENOTSUP: case -ENOKEY: case -EKEYREJECTED: case -EKEYEXPIRED:
	case -EACCES:
		if (payload)
			FAIL("rejected (%d) with a payload", rc);
		if (!err[0] || strlen(err) >= sizeof(err))
			FAIL("rejected (%d) without a reason", rc);
		break;
	default:
		FAIL("verify returned %d", rc);
	}
}

/* Sign claims[0..n) as they are (any bytes) with one of the fuzzer's keys. */
static char *sign(const uint8_t *claims, size_t n, int rsa, size_t *tlen)
{
	static const char h_rsa[] = "{\"alg\":\"RS256\",\"kid\":\"fz-rsa\"}";
	static const char h_ec[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"; /* no kid: every EC key */
	char *h = b64((const unsigned char *)(rsa ? h_rsa : h_ec), strlen(rsa ? h_rsa : h_ec));
	char *p = b64(claims, n), *input, *s, *tok;
	unsigned char sig[512], raw[64];
	size_t slen = sizeof(sig), il;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	il = strlen(h) + 1 + strlen(p);
	input = malloc(il + 1);
	if (!input || !md)
		abort();
	snprintf(input, il + 1, "%s.%s", h, p);
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, rsa ? own_rsa : own_ec) != 1 ||
	    EVP_DigestSign(md, sig, &slen, (unsigned char *)input, il) != 1)
		FAIL("signing");
	EVP_MD_CTX_free(md);
	if (!rsa) { /* DER to r||s */
		const unsigned char *q = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)slen);

		if (!es || BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32) != 32 ||
		    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32) != 32)
			FAIL("ECDSA signature");
		ECDSA_SIG_free(es);
		memcpy(sig, raw, 64);
		slen = 64;
	}
	s = b64(sig, slen);
	*tlen = il + 1 + strlen(s);
	tok = malloc(*tlen + 1);
	if (!tok)
		abort();
	snprintf(tok, *tlen + 1, "%s.%s", input, s);
	free(s);
	free(input);
	free(p);
	free(h);
	return tok;
}

static void check_signed(const uint8_t *data, size_t size)
{
	json_t *claims = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL), *got;
	size_t tlen;
	char *tok = sign(data, size, size & 1, &tlen), err[160];
	int rc = bm_jwt_verify(tok, tlen, keys, NULL, NULL, 0, NOW, &got, err, sizeof(err));

	if (tlen > BM_JWT_MAX_LEN) {
		if (rc != -EINVAL)
			FAIL("over-long token: %d", rc);
	} else if (rc == -EKEYREJECTED || rc == -ENOKEY || rc == -ENOTSUP) {
		FAIL("correctly signed token refused: %d %s", rc, err);
	} else if (!rc && (!json_is_object(claims) || !json_equal(claims, got))) {
		FAIL("accepted claims differ from the signed ones");
	} else if (rc == -EINVAL && json_is_object(claims) &&
		   !(json_object_get(claims, "exp") && !json_is_number(json_object_get(claims, "exp"))) &&
		   !(json_object_get(claims, "nbf") && !json_is_number(json_object_get(claims, "nbf")))) {
		FAIL("signed claims object refused as malformed: %s", err);
	}
	json_decref(got);
	json_decref(claims);
	free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const aud[] = { "api.example", "https://other.example/" };
	char *tok, *z;

	if (size && data[0] == '{') {
		struct bm_jwks *j = NULL;

		z = malloc(size + 1);
		if (!z)
			abort();
		memcpy(z, data, size);
		z[size] = 0;
		switch (bm_jwks_parse(z, &j)) {
		case 0:
			if (!j || !j->n || j->refs != 1)
				FAIL("JWKS parsed into nothing");
			for (size_t i = 0; i < j->n; i++)
				if (!j->k[i].pkey || (j->k[i].type != BM_JWK_RSA &&
						      j->k[i].type != BM_JWK_EC_P256))
					FAIL("key %zu unusable", i);
			bm_jwks_get(j);
			bm_jwks_put(j);
			bm_jwks_put(j);
			break;
		case -EINVAL: case -ENOKEY:
			if (j)
				FAIL("failed parse returned keys");
			break;
		default:
			FAIL("bm_jwks_parse failed oddly");
		}
		free(z);
		check_signed(data, size);
		return 0;
	}
	tok = malloc(size ? size : 1);
	if (!tok)
		abort();
	memcpy(tok, data, size);
	check_b64(tok, size);
	check_token(tok, size, NULL, NULL, 0);
	check_token(tok, size, "https://issuer.example", aud, 2);
	{
		json_t *h, *p;

		if (!bm_jwt_peek(tok, size, &h, &p)) {
			json_decref(h);
			json_decref(p);
		}
	}
	free(tok);
	return 0;
}
