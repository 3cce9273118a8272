/* JWT validation (reference §5): tokens signed here with freshly generated
 * RSA and P-256 keys; every refusal Envoy makes has a row. The helpers
 * (bmt_*) are shared with test_reqauthn.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "unit.h"
#include "../../agent/jwt.h"

#define NOW 1800000000L

/* Keys are generated once per run: 0 RSA, 1 EC, 2 a second RSA, 3 a second EC. */
EVP_PKEY *bmt_key(int which)
{
	static EVP_PKEY *keys[4];

	if (!keys[which])
		keys[which] = which % 2 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")
					: EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	return keys[which];
}

static void bn_b64(EVP_PKEY *k, const char *param, size_t pad, char *out, size_t len)
{
	unsigned char buf[512];
	BIGNUM *bn = NULL;
	int n;

	EVP_PKEY_get_bn_param(k, param, &bn);
	n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
	BN_free(bn);
	bm_b64url_encode(buf, (size_t)n, out, len);
}

/* One JWK object for k (JSON text into out). */
void bmt_jwk(EVP_PKEY *k, const char *kid, char *out, size_t len)
{
	char a[1024], b[1024], kidf[160] = "";

	if (kid)
		snprintf(kidf, sizeof(kidf), "\"kid\":\"%s\",", kid);
	if (EVP_PKEY_is_a(k, "RSA")) {
		bn_b64(k, OSSL_PKEY_PARAM_RSA_N, 0, a, sizeof(a));
		bn_b64(k, OSSL_PKEY_PARAM_RSA_E, 0, b, sizeof(b));
		snprintf(out, len, "{%s\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}",
			 kidf, a, b);
	} else {
		bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, 32, a, sizeof(a));
		bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b, sizeof(b));
		snprintf(out, len, "{%s\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", kidf, a, b);
	}
}

/* A compact JWS over header/payload JSON with k (RS256 or ES256 by key type). */
char *bmt_sign_raw(EVP_PKEY *k, const char *header, const char *payload)
{
	size_t cap = strlen(header) * 2 + strlen(payload) * 2 + 1024, slen = 0;
	char *tok = malloc(cap);
	unsigned char sig[512], *der;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t o;

	bm_b64url_encode((const unsigned char *)header, strlen(header), tok, cap);
	o = strlen(tok);
	tok[o++] = '.';
	bm_b64url_encode((const unsigned char *)payload, strlen(payload), tok + o, cap - o);
	o = strlen(tok);
	EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k);
	EVP_DigestSign(md, NULL, &slen, (unsigned char *)tok, o);
	der = malloc(slen);
	EVP_DigestSign(md, der, &slen, (unsigned char *)tok, o);
	EVP_MD_CTX_free(md);
	if (EVP_PKEY_is_a(k, "EC")) {
		const unsigned char *p = der;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)slen);

		BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
		BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
		ECDSA_SIG_free(es);
		slen = 64;
	} else {
		memcpy(sig, der, slen);
	}
	free(der);
	tok[o++] = '.';
	bm_b64url_encode(sig, slen, tok + o, cap - o);
	return tok;
}

char *bmt_sign(EVP_PKEY *k, const char *kid, const char *payload)
{
	char hdr[256];

	snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"%s%s%s}",
		 EVP_PKEY_is_a(k, "EC") ? "ES256" : "RS256", kid ? ",\"kid\":\"" : "", kid ? kid : "",
		 kid ? "\"" : "");
	return bmt_sign_raw(k, hdr, payload);
}

/* {"keys":[rsa "r1", ec "e1"]}: the JWKS most tests verify against. */
char *bmt_jwks_default(void)
{
	char a[2048], b[1024];
	char *out = malloc(4096);

	bmt_jwk(bmt_key(0), "r1", a, sizeof(a));
	bmt_jwk(bmt_key(1), "e1", b, sizeof(b));
	snprintf(out, 4096, "{\"keys\":[%s,%s]}", a, b);
	return out;
}

static void test_b64url(void)
{
	unsigned char *d;
	size_t n;
	char enc[16];

	CU_ASSERT_EQUAL(bm_b64url_decode("aGk", 3, &d, &n), 0);
	CU_ASSERT_EQUAL(n, 2);
	CU_ASSERT_EQUAL(memcmp(d, "hi", 2), 0);
	free(d);
	CU_ASSERT_EQUAL(bm_b64url_decode("-_8", 3, &d, &n), 0);
	CU_ASSERT_EQUAL(d[0], 0xfb);
	CU_ASSERT_EQUAL(d[1], 0xff);
	free(d);
	CU_ASSERT_EQUAL(bm_b64url_decode("aGk=", 4, &d, &n), -EINVAL); /* no padding in JWS */
	CU_ASSERT_EQUAL(bm_b64url_decode("a+/k", 4, &d, &n), -EINVAL); /* not the url alphabet */
	CU_ASSERT_EQUAL(bm_b64url_decode("a", 1, &d, &n), -EINVAL);
	CU_ASSERT_EQUAL(bm_b64url_encode((const unsigned char *)"\xfb\xff", 2, enc, sizeof(enc)), 0);
	CU_ASSERT_STRING_EQUAL(enc, "-_8");
	CU_ASSERT_EQUAL(bm_b64url_encode((const unsigned char *)"hello", 5, enc, 4), -ENOSPC);
}

static void test_jwks_parse(void)
{
	struct bm_jwks *j;
	char *doc = bmt_jwks_default();

	CU_ASSERT_EQUAL_FATAL(bm_jwks_parse(doc, &j), 0);
	CU_ASSERT_EQUAL(j->n, 2);
	CU_ASSERT_STRING_EQUAL(j->k[0].kid, "r1");
	CU_ASSERT_EQUAL(j->k[0].type, BM_JWK_RSA);
	CU_ASSERT_EQUAL(j->k[1].type, BM_JWK_EC_P256);
	bm_jwks_put(j);
	free(doc);
	CU_ASSERT_EQUAL(bm_jwks_parse("{}", &j), -EINVAL);
	CU_ASSERT_EQUAL(bm_jwks_parse("not json", &j), -EINVAL);
	CU_ASSERT_EQUAL(bm_jwks_parse(NULL, &j), -EINVAL);
	CU_ASSERT_EQUAL(bm_jwks_parse("{\"keys\":[]}", &j), -ENOKEY);
	/* symmetric, other curve, encryption keys and junk are skipped */
	CU_ASSERT_EQUAL(bm_jwks_parse("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
				      "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"},"
				      "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
				      "{\"kty\":\"RSA\",\"n\":\"!!\",\"e\":\"AQAB\"}]}", &j), -ENOKEY);
	/* a P-256 point that is not on the curve */
	CU_ASSERT_EQUAL(bm_jwks_parse("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
				      "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
				      "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}", &j), -ENOKEY);
}

enum { K_RSA, K_EC, K_RSA2, K_EC2 };

struct jwt_case {
	const char *what;
	int key;                /* which key signs */
	const char *kid;        /* header kid, NULL none */
	const char *payload;    /* %ld = NOW-relative fields filled by the row */
	const char *issuer;
	const char *aud;        /* one configured audience, NULL = none */
	int rc;
};

#define P(extra) "{\"iss\":\"https://idp\",\"sub\":\"alice\"" extra "}"

static const struct jwt_case token_cases[] = {
	{ "RS256 good", K_RSA, "r1", P(",\"exp\":1800000100"), "https://idp", NULL, 0 },
	{ "ES256 good", K_EC, "e1", P(",\"exp\":1800000100"), "https://idp", NULL, 0 },
	{ "no kid: every key of the type is tried", K_EC, NULL, P(""), "https://idp", NULL, 0 },
	{ "no exp is accepted", K_RSA, "r1", P(""), "https://idp", NULL, 0 },
	{ "expired", K_RSA, "r1", P(",\"exp\":1799999900"), "https://idp", NULL, -EKEYEXPIRED },
	{ "expired within the 60 s skew", K_RSA, "r1", P(",\"exp\":1799999950"), "https://idp", NULL, 0 },
	{ "nbf in the future", K_EC, "e1", P(",\"nbf\":1800000100"), "https://idp", NULL, -EKEYEXPIRED },
	{ "nbf within the skew", K_EC, "e1", P(",\"nbf\":1800000030"), "https://idp", NULL, 0 },
	{ "wrong issuer", K_RSA, "r1", P(""), "https://other", NULL, -EACCES },
	{ "audience string", K_RSA, "r1", P(",\"aud\":\"web\""), "https://idp", "web", 0 },
	{ "audience in array", K_RSA, "r1", P(",\"aud\":[\"x\",\"web\"]"), "https://idp", "web", 0 },
	{ "audience scheme and slash ignored", K_RSA, "r1", P(",\"aud\":\"https://web/\""), "https://idp", "web", 0 },
	{ "wrong audience", K_RSA, "r1", P(",\"aud\":[\"x\"]"), "https://idp", "web", -EACCES },
	{ "no aud but one required", K_RSA, "r1", P(""), "https://idp", "web", -EACCES },
	{ "signed by another RSA key", K_RSA2, "r1", P(""), "https://idp", NULL, -EKEYREJECTED },
	{ "signed by another EC key, no kid", K_EC2, NULL, P(""), "https://idp", NULL, -EKEYREJECTED },
	{ "kid mismatch", K_RSA, "nope", P(""), "https://idp", NULL, -ENOKEY },
	{ "non-numeric exp", K_RSA, "r1", P(",\"exp\":\"soon\""), "https://idp", NULL, -EINVAL },
};

static void test_jwt_table(void)
{
	struct bm_jwks *keys;
	char *doc = bmt_jwks_default();

	CU_ASSERT_EQUAL_FATAL(bm_jwks_parse(doc, &keys), 0);
	for (size_t i = 0; i < sizeof(token_cases) / sizeof(token_cases[0]); i++) {
		const struct jwt_case *c = &token_cases[i];
		char *tok = bmt_sign(bmt_key(c->key), c->kid, c->payload), err[160];
		const char *aud[1] = { c->aud };
		json_t *pl = NULL;
		int rc = bm_jwt_verify(tok, strlen(tok), keys, c->issuer, aud, c->aud ? 1 : 0, NOW, &pl,
				       err, sizeof(err));

		if (rc != c->rc)
			fprintf(stderr, "jwt case \"%s\": rc %d (%s)\n", c->what, rc, err);
		CU_ASSERT_EQUAL(rc, c->rc);
		if (!rc) {
			CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(pl, "sub")), "alice");
		} else {
			CU_ASSERT_PTR_NULL(pl);
			CU_ASSERT(err[0] != 0);
		}
		json_decref(pl);
		free(tok);
	}
	bm_jwks_put(keys);
	free(doc);
}

/* Tokens not signed with RS256/ES256, or not tokens at all. */
static void test_jwt_refused(void)
{
	static const char *const malformed[] = { "", "abc", "a.b", "a.b.c.d", "a.b.c.d.e", "!!.e30.",
						 "e30.e30.", ".e30.x", "e30..x" };
	struct bm_jwks *keys;
	char *doc = bmt_jwks_default(), *good, *tok, err[160], hdr[128], pay[128];
	unsigned char mac[32];
	unsigned int maclen = 0;
	size_t o;

	CU_ASSERT_EQUAL_FATAL(bm_jwks_parse(doc, &keys), 0);
	/* alg none with an empty signature */
	bm_b64url_encode((const unsigned char *)"{\"alg\":\"none\"}", 14, hdr, sizeof(hdr));
	bm_b64url_encode((const unsigned char *)P(""), strlen(P("")), pay, sizeof(pay));
	tok = malloc(512);
	snprintf(tok, 512, "%s.%s.", hdr, pay);
	CU_ASSERT_EQUAL(bm_jwt_verify(tok, strlen(tok), keys, "https://idp", NULL, 0, NOW, NULL, err,
				      sizeof(err)), -ENOTSUP);
	/* HS256 keyed with the public JWKS text (the classic confusion) */
	bm_b64url_encode((const unsigned char *)"{\"alg\":\"HS256\"}", 15, hdr, sizeof(hdr));
	snprintf(tok, 512, "%s.%s", hdr, pay);
	HMAC(EVP_sha256(), doc, (int)strlen(doc), (unsigned char *)tok, strlen(tok), mac, &maclen);
	o = strlen(tok);
	tok[o++] = '.';
	bm_b64url_encode(mac, maclen, tok + o, 512 - o);
	CU_ASSERT_EQUAL(bm_jwt_verify(tok, strlen(tok), keys, "https://idp", NULL, 0, NOW, NULL, err,
				      sizeof(err)), -ENOTSUP);
	free(tok);
	/* an ES256 header on an RS256 signature: wrong length for r||s */
	good = bmt_sign_raw(bmt_key(K_RSA), "{\"alg\":\"ES256\"}", P(""));
	CU_ASSERT_EQUAL(bm_jwt_verify(good, strlen(good), keys, "https://idp", NULL, 0, NOW, NULL, err,
				      sizeof(err)), -EKEYREJECTED);
	free(good);
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
		CU_ASSERT_EQUAL(bm_jwt_verify(malformed[i], strlen(malformed[i]), keys, "https://idp", NULL,
					      0, NOW, NULL, err, sizeof(err)), -EINVAL);
	/* a flipped signature byte */
	good = bmt_sign(bmt_key(K_RSA), "r1", P(""));
	o = strrchr(good, '.') - good + 5;
	good[o] = good[o] == 'A' ? 'B' : 'A';
	CU_ASSERT_EQUAL(bm_jwt_verify(good, strlen(good), keys, "https://idp", NULL, 0, NOW, NULL, err,
				      sizeof(err)), -EKEYREJECTED);
	free(good);
	/* another payload under the first token's signature */
	{
		char *a = bmt_sign(bmt_key(K_RSA), "r1", P("")), *b = bmt_sign(bmt_key(K_RSA), "r1", P(",\"admin\":true"));
		char mix[4096];

		snprintf(mix, sizeof(mix), "%.*s%s", (int)(strrchr(b, '.') - b), b, strrchr(a, '.'));
		CU_ASSERT_EQUAL(bm_jwt_verify(mix, strlen(mix), keys, "https://idp", NULL, 0, NOW, NULL, err,
					      sizeof(err)), -EKEYREJECTED);
		free(a);
		free(b);
	}
	/* an ES256 token against a JWKS holding only RSA keys */
	{
		char jwk[2048], doc2[2200];
		struct bm_jwks *rsa_only;

		bmt_jwk(bmt_key(K_RSA), NULL, jwk, sizeof(jwk));
		snprintf(doc2, sizeof(doc2), "{\"keys\":[%s]}", jwk);
		CU_ASSERT_EQUAL_FATAL(bm_jwks_parse(doc2, &rsa_only), 0);
		good = bmt_sign(bmt_key(K_EC), NULL, P(""));
		CU_ASSERT_EQUAL(bm_jwt_verify(good, strlen(good), rsa_only, "https://idp", NULL, 0, NOW, NULL,
					      err, sizeof(err)), -ENOKEY);
		free(good);
		bm_jwks_put(rsa_only);
	}
	/* len bounds the token: a good token cut short */
	good = bmt_sign(bmt_key(K_EC), "e1", P(""));
	CU_ASSERT_EQUAL(bm_jwt_verify(good, strlen(good), keys, "https://idp", NULL, 0, NOW, NULL, err,
				      sizeof(err)), 0);
	CU_ASSERT_NOT_EQUAL(bm_jwt_verify(good, strlen(good) - 2, keys, "https://idp", NULL, 0, NOW, NULL,
					  err, sizeof(err)), 0);
	free(good);
	bm_jwks_put(keys);
	free(doc);
}

BM_SUITE(jwt, BM_CASE(test_b64url), BM_CASE(test_jwks_parse), BM_CASE(test_jwt_table),
	 BM_CASE(test_jwt_refused))
