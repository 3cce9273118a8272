/*
 * bm-jwt: keys, JWKS and signed JWTs for RequestAuthentication tests.
 *
 *   bm-jwt keygen --alg RS256|ES256 --out DIR
 *       writes DIR/key.pem (PKCS#8 private key, mode 0600) and DIR/jwks.json
 *   bm-jwt sign --key DIR/key.pem --iss ISS --sub SUB [--aud AUD]...
 *               [--exp SECONDS_FROM_NOW] [--nbf SECONDS_FROM_NOW]
 *               [--claims JSON_OBJECT] [--kid KID | --no-kid]
 *       prints the compact token. --exp may be negative (an expired token);
 *       without it the token has no exp. The kid defaults to the one keygen
 *       put in the JWKS (derived from the public key).
 *
 * Self-contained (one file, OpenSSL 3 and jansson) like the other tools.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static void b64url(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t acc = 0;
	int bits = 0;

	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			*out++ = tab[(acc >> bits) & 63];
		}
	}
	if (bits)
		*out++ = tab[(acc << (6 - bits)) & 63];
	*out = 0;
}

static char *b64url_dup(const unsigned char *in, size_t len)
{
	char *out = malloc(len * 4 / 3 + 4);

	if (out)
		b64url(in, len, out);
	return out;
}

static char *bn_param(const EVP_PKEY *k, const char *name, int pad)
{
	unsigned char buf[1024];
	BIGNUM *bn = NULL;
	int n;

	if (!EVP_PKEY_get_bn_param(k, name, &bn))
		return NULL;
	n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
	BN_free(bn);
	return n > 0 ? b64url_dup(buf, (size_t)n) : NULL;
}

/* kid: the first 12 bytes of SHA-256 over the public key's DER, base64url. */
static void key_id(EVP_PKEY *k, char *out)
{
	unsigned char *der = NULL, md[32];
	int n = i2d_PUBKEY(k, &der);
	unsigned int ml = 0;

	EVP_Digest(der, (size_t)(n > 0 ? n : 0), md, &ml, EVP_sha256(), NULL);
	OPENSSL_free(der);
	b64url(md, 12, out);
}

static int mkdir_p(const char *dir)
{
	char buf[4096];

	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

static int is_ec(const EVP_PKEY *k)
{
	return EVP_PKEY_is_a(k, "EC");
}

static int keygen(const char *alg, const char *dir)
{
	EVP_PKEY *k;
	char path[4096], kid[32], *a, *b;
	json_t *jwk, *doc;
	FILE *f;
	int fd, rc = 1;

	if (!strcmp(alg, "RS256"))
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	else if (!strcmp(alg, "ES256"))
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else {
		fprintf(stderr, "bm-jwt: --alg must be RS256 or ES256\n");
		return 2;
	}
	if (!k) {
		fprintf(stderr, "bm-jwt: key generation failed\n");
		return 1;
	}
	if (mkdir_p(dir)) {
		fprintf(stderr, "bm-jwt: mkdir %s: %s\n", dir, strerror(errno));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f || !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)) {
		fprintf(stderr, "bm-jwt: write %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		goto out;
	}
	fclose(f);
	key_id(k, kid);
	if (is_ec(k)) {
		a = bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, 32);
		b = bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
		jwk = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "kty", "EC", "crv", "P-256", "alg", "ES256",
				"use", "sig", "kid", kid, "x", a ? a : "", "y", b ? b : "");
	} else {
		a = bn_param(k, OSSL_PKEY_PARAM_RSA_N, 0);
		b = bn_param(k, OSSL_PKEY_PARAM_RSA_E, 0);
		jwk = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "kty", "RSA", "alg", "RS256", "use", "sig",
				"kid", kid, "n", a ? a : "", "e", b ? b : "");
	}
	free(a);
	free(b);
	doc = json_pack("{s:[o]}", "keys", jwk);
	snprintf(path, sizeof(path), "%s/jwks.json", dir);
	if (!doc || json_dump_file(doc, path, JSON_COMPACT)) {
		fprintf(stderr, "bm-jwt: write %s failed\n", path);
	} else {
		printf("%s/key.pem %s/jwks.json kid %s\n", dir, dir, kid);
		rc = 0;
	}
	json_decref(doc);
out:
	EVP_PKEY_free(k);
	return rc;
}

static char *sign(EVP_PKEY *k, const char *hdr, const char *payload)
{
	size_t hl = strlen(hdr), pl = strlen(payload), slen = 0;
	char *tok = malloc(hl * 2 + pl * 2 + 1024);
	unsigned char *sig = NULL, raw[64];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t o;

	if (!tok || !md)
		goto err;
	b64url((const unsigned char *)hdr, hl, tok);
	o = strlen(tok);
	tok[o++] = '.';
	b64url((const unsigned char *)payload, pl, tok + o);
	o = strlen(tok);
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) != 1 ||
	    EVP_DigestSign(md, NULL, &slen, (unsigned char *)tok, o) != 1 || !(sig = malloc(slen)) ||
	    EVP_DigestSign(md, sig, &slen, (unsigned char *)tok, o) != 1)
		goto err;
	tok[o++] = '.';
	if (is_ec(k)) {
		/* JWS wants r||s (RFC 7518 §3.4), EVP gives DER */
		const unsigned char *p = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)slen);

		if (!es)
			goto err;
		BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
		BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
		ECDSA_SIG_free(es);
		b64url(raw, 64, tok + o);
	} else {
		b64url(sig, slen, tok + o);
	}
	free(sig);
	EVP_MD_CTX_free(md);
	return tok;
err:
	free(sig);
	free(tok);
	EVP_MD_CTX_free(md);
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "usage: bm-jwt keygen --alg RS256|ES256 --out DIR\n"
			"       bm-jwt sign --key KEY.pem --iss ISS --sub SUB [--aud AUD]... [--exp SECS]\n"
			"                   [--nbf SECS] [--claims JSON] [--kid KID | --no-kid]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "alg", 1, 0, 'a' }, { "out", 1, 0, 'o' }, { "key", 1, 0, 'k' }, { "iss", 1, 0, 'i' },
		{ "sub", 1, 0, 's' }, { "aud", 1, 0, 'u' }, { "exp", 1, 0, 'e' }, { "nbf", 1, 0, 'n' },
		{ "claims", 1, 0, 'c' }, { "kid", 1, 0, 'd' }, { "no-kid", 0, 0, 'D' }, { 0, 0, 0, 0 }
	};
	const char *alg = NULL, *out = NULL, *keyf = NULL, *iss = NULL, *sub = NULL, *kid = NULL;
	const char *claims = NULL;
	json_t *aud = json_array(), *pl, *hdr;
	int o, no_kid = 0, has_exp = 0, has_nbf = 0, rc = 1;
	long exp = 0, nbf = 0;
	char kidbuf[32], *hs = NULL, *ps = NULL, *tok;
	EVP_PKEY *k;
	FILE *f;

	if (argc < 2)
		return usage();
	optind = 2;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'a': alg = optarg; break;
		case 'o': out = optarg; break;
		case 'k': keyf = optarg; break;
		case 'i': iss = optarg; break;
		case 's': sub = optarg; break;
		case 'u': json_array_append_new(aud, json_string(optarg)); break;
		case 'e': exp = strtol(optarg, NULL, 10); has_exp = 1; break;
		case 'n': nbf = strtol(optarg, NULL, 10); has_nbf = 1; break;
		case 'c': claims = optarg; break;
		case 'd': kid = optarg; break;
		case 'D': no_kid = 1; break;
		default: json_decref(aud); return usage();
		}
	}
	if (!strcmp(argv[1], "keygen")) {
		json_decref(aud);
		return alg && out ? keygen(alg, out) : usage();
	}
	if (strcmp(argv[1], "sign") || !keyf || !iss || !sub) {
		json_decref(aud);
		return usage();
	}
	f = fopen(keyf, "r");
	k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (!k) {
		fprintf(stderr, "bm-jwt: cannot read a private key from %s\n", keyf);
		json_decref(aud);
		return 1;
	}
	pl = claims ? json_loads(claims, 0, NULL) : json_object();
	if (!json_is_object(pl)) {
		fprintf(stderr, "bm-jwt: --claims must be a JSON object\n");
		goto out;
	}
	json_object_set_new(pl, "iss", json_string(iss));
	json_object_set_new(pl, "sub", json_string(sub));
	json_object_set_new(pl, "iat", json_integer((json_int_t)time(NULL)));
	if (json_array_size(aud) == 1)
		json_object_set(pl, "aud", json_array_get(aud, 0));
	else if (json_array_size(aud) > 1)
		json_object_set(pl, "aud", aud);
	if (has_exp)
		json_object_set_new(pl, "exp", json_integer((json_int_t)(time(NULL) + exp)));
	if (has_nbf)
		json_object_set_new(pl, "nbf", json_integer((json_int_t)(time(NULL) + nbf)));
	if (!kid && !no_kid) {
		key_id(k, kidbuf);
		kid = kidbuf;
	}
	hdr = json_pack("{s:s,s:s}", "alg", is_ec(k) ? "ES256" : "RS256", "typ", "JWT");
	if (kid)
		json_object_set_new(hdr, "kid", json_string(kid));
	hs = json_dumps(hdr, JSON_COMPACT);
	ps = json_dumps(pl, JSON_COMPACT);
	json_decref(hdr);
	tok = hs && ps ? sign(k, hs, ps) : NULL;
	if (tok) {
		printf("%s\n", tok);
		free(tok);
		rc = 0;
	} else {
		fprintf(stderr, "bm-jwt: signing failed\n");
	}
out:
	free(hs);
	free(ps);
	json_decref(pl);
	json_decref(aud);
	EVP_PKEY_free(k);
	return rc;
}
