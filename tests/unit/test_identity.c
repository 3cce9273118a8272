/* Identity: the mesh CA, X.509-SVID profile (istio-api.md §8), the CSR flow,
 * SPIFFE ID validation, rotation at half life, and real TLS 1.3 handshakes
 * between contexts from tlsctx.c (in memory, over a BIO pair). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "unit.h"
#include "../../agent/ca.h"
#include "../../agent/identity.h"
#include "../../agent/tlsctx.h"

#define TD "cluster.local"
#define ID_A "spiffe://cluster.local/ns/default/sa/alice"
#define ID_B "spiffe://cluster.local/ns/default/sa/bob"

/* ---- fixtures ---- */

struct ca_dir {
	char dir[64];
	struct bm_ca *ca;
};

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	if (!d)
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			unlink(p);
		}
	closedir(d);
	rmdir(dir);
}

static int ca_open(struct ca_dir *c)
{
	snprintf(c->dir, sizeof(c->dir), "/tmp/bm-ca-XXXXXX");
	if (!mkdtemp(c->dir))
		return -errno;
	return bm_ca_load_or_create(c->dir, TD, &c->ca);
}

static void ca_close(struct ca_dir *c)
{
	bm_ca_free(c->ca);
	c->ca = NULL;
	rm_dir(c->dir);
}

static int file_count(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, ".lock");
	closedir(d);
	return n;
}

/* A certificate signed by ca's key with arbitrary (possibly wrong)
 * extensions: what a buggy or hostile issuer could hand a peer. */
static X509 *forge(const struct bm_ca *ca, EVP_PKEY *key, const char *san, time_t nb, time_t na,
		   const char *ku, const char *cn)
{
	static const struct {
		int nid;
		const char *v;
	} fixed[] = { { NID_basic_constraints, "critical,CA:FALSE" },
		      { NID_ext_key_usage, "serverAuth,clientAuth" },
		      { NID_authority_key_identifier, "keyid:always" } };
	X509 *x = X509_new();
	X509V3_CTX v3;
	int ok = 1;

	ok &= X509_set_version(x, X509_VERSION_3);
	ok &= ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
	ok &= X509_set_issuer_name(x, X509_get_subject_name(ca->cert));
	ok &= ASN1_TIME_set(X509_getm_notBefore(x), nb) != NULL;
	ok &= ASN1_TIME_set(X509_getm_notAfter(x), na) != NULL;
	ok &= X509_set_pubkey(x, key);
	if (cn)
		ok &= X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
						 (const unsigned char *)cn, -1, -1, 0);
	X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, fixed[i].nid, fixed[i].v);

		ok &= e && X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	if (san) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);

		ok &= e && X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	if (ku) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, ku);

		ok &= e && X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	ok &= X509_sign(x, ca->key, EVP_sha256()) > 0;
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* ---- SPIFFE IDs ---- */

static void test_spiffe_id_table(void)
{
	static char long_ok[BM_SPIFFE_ID_MAX + 1], too_long[BM_SPIFFE_ID_MAX + 2], long_td[300];
	static const char *good[] = {
		"spiffe://cluster.local/ns/default/sa/foo",
		"spiffe://cluster.local",
		"spiffe://example.org/a/b.c/d-e/f_g/HIJ",
		"spiffe://a_b-c.0/x",
		"spiffe://td/...",            /* three dots is a name, not a dot segment */
		long_ok,
	};
	static const struct {
		const char *id;
		const char *why; /* substring of the reason */
	} bad[] = {
		{ "", "empty" },
		{ "http://cluster.local/ns/a/sa/b", "scheme" },
		{ "SPIFFE://cluster.local/ns/a/sa/b", "scheme" },
		{ "spiffe:/cluster.local/x", "scheme" },
		{ "spiffe://", "empty trust domain" },
		{ "spiffe:///ns/a", "empty trust domain" },
		{ "spiffe://Cluster.local/ns/a", "lowercase" },
		{ "spiffe://cluster.local:8080/ns/a", "port" },
		{ "spiffe://user@cluster.local/ns/a", "userinfo" },
		{ "spiffe://cluster.local/ns/a?x=1", "query" },
		{ "spiffe://cluster.local/ns/a#frag", "fragment" },
		{ "spiffe://cluster.local/ns/%61", "percent" },
		{ "spiffe://clu%73ter.local/ns/a", "percent" },
		{ "spiffe://cluster.local/ns//a", "empty path segment" },
		{ "spiffe://cluster.local/", "trailing slash" },
		{ "spiffe://cluster.local/ns/a/", "trailing slash" },
		{ "spiffe://cluster.local/ns/./a", "dot segment" },
		{ "spiffe://cluster.local/ns/../a", "dot segment" },
		{ "spiffe://cluster.local/ns/..", "dot segment" },
		{ "spiffe://cluster.local/ns/a b", "bad character" },
		{ "spiffe://cluster.local/ns/é", "bad character" },
		{ "spiffe://clus ter/ns", "bad character" },
		{ long_td, "longer than 255" },
		{ too_long, "longer than 2048" },
	};
	struct bm_spiffe_id p;

	strcpy(long_ok, "spiffe://td/");
	memset(long_ok + 12, 'x', BM_SPIFFE_ID_MAX - 12);
	long_ok[BM_SPIFFE_ID_MAX] = '\0';
	strcpy(too_long, long_ok);
	strcat(too_long, "x");
	strcpy(long_td, "spiffe://");
	memset(long_td + 9, 'a', 256);
	strcpy(long_td + 9 + 256, "/x");

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const char *why = bm_spiffe_id_check(good[i]);

		if (why)
			fprintf(stderr, "\n  should be valid: %.60s (%s)\n", good[i], why);
		CU_ASSERT_PTR_NULL(why);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = bm_spiffe_id_check(bad[i].id);

		if (!why || !strstr(why, bad[i].why))
			fprintf(stderr, "\n  %.60s: got '%s', want '%s'\n", bad[i].id, why ? why : "(valid)",
				bad[i].why);
		CU_ASSERT(why && strstr(why, bad[i].why));
		CU_ASSERT_EQUAL(bm_spiffe_id_parse(bad[i].id, &p), -EINVAL);
	}
	CU_ASSERT_EQUAL(bm_spiffe_id_parse("spiffe://cluster.local/ns/default/sa/foo", &p), 0);
	CU_ASSERT_STRING_EQUAL(p.td, "cluster.local");
	CU_ASSERT_STRING_EQUAL(p.path, "/ns/default/sa/foo");
	CU_ASSERT_EQUAL(bm_spiffe_id_parse("spiffe://cluster.local", &p), 0);
	CU_ASSERT_STRING_EQUAL(p.path, "");
}

static void test_spiffe_id_build(void)
{
	char buf[BM_SPIFFE_ID_MAX + 1], small[16];

	CU_ASSERT_EQUAL(bm_spiffe_id_build(TD, "default", "alice", buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, ID_A);
	CU_ASSERT_EQUAL(bm_spiffe_id_build(TD, "a/b", "c", buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(bm_spiffe_id_build(TD, "ns", "x/y", buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(bm_spiffe_id_build(TD, "..", "sa", buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(bm_spiffe_id_build(TD, "", "sa", buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(bm_spiffe_id_build(TD, "ns", "s?a", buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(bm_spiffe_id_build("Bad.TD", "ns", "sa", buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(bm_spiffe_id_build(TD, "ns", "sa", small, sizeof(small)), -ENAMETOOLONG);
}

/* ---- the root ---- */

static void test_ca_root(void)
{
	struct ca_dir c;
	struct bm_ca *again = NULL;
	char path[512], buf[256];
	ASN1_BIT_STRING *ku;
	BASIC_CONSTRAINTS *bc;
	struct stat st;
	time_t nb, na, now = time(NULL);
	mode_t old = umask(022);
	int crit;

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	umask(old);
	/* Files: key 0600, cert 0644, and no temporaries left behind. */
	snprintf(path, sizeof(path), "%s/%s", c.dir, BM_CA_KEY_FILE);
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/%s", c.dir, BM_CA_CERT_FILE);
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0644);
	CU_ASSERT_EQUAL(file_count(c.dir), 2);

	/* Profile: ECDSA P-256, self-signed ECDSA-SHA256, 10 years, critical
	 * CA:TRUE, critical keyCertSign+cRLSign, SKI, O=<td> CN=bpfmesh root CA. */
	CU_ASSERT(EVP_PKEY_is_a(c.ca->key, "EC"));
	CU_ASSERT_EQUAL(EVP_PKEY_get_group_name(c.ca->key, buf, sizeof(buf), NULL), 1);
	CU_ASSERT_STRING_EQUAL(buf, "prime256v1");
	CU_ASSERT_EQUAL(X509_get_signature_nid(c.ca->cert), NID_ecdsa_with_SHA256);
	CU_ASSERT_EQUAL(X509_self_signed(c.ca->cert, 1), 1);
	CU_ASSERT_EQUAL(bm_x509_time(X509_get0_notBefore(c.ca->cert), &nb), 0);
	CU_ASSERT_EQUAL(bm_x509_time(X509_get0_notAfter(c.ca->cert), &na), 0);
	CU_ASSERT(na - nb >= BM_CA_ROOT_TTL && na - nb <= BM_CA_ROOT_TTL + 200);
	CU_ASSERT(nb <= now && nb >= now - 200);
	bc = X509_get_ext_d2i(c.ca->cert, NID_basic_constraints, &crit, NULL);
	CU_ASSERT(bc && bc->ca && crit == 1);
	BASIC_CONSTRAINTS_free(bc);
	ku = X509_get_ext_d2i(c.ca->cert, NID_key_usage, &crit, NULL);
	CU_ASSERT(ku && crit == 1);
	CU_ASSERT_EQUAL(X509_get_key_usage(c.ca->cert), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	ASN1_BIT_STRING_free(ku);
	CU_ASSERT_PTR_NOT_NULL(X509_get0_subject_key_id(c.ca->cert));
	CU_ASSERT(X509_NAME_get_text_by_NID(X509_get_subject_name(c.ca->cert), NID_organizationName, buf,
					    sizeof(buf)) > 0);
	CU_ASSERT_STRING_EQUAL(buf, TD);
	CU_ASSERT(X509_NAME_get_text_by_NID(X509_get_subject_name(c.ca->cert), NID_commonName, buf,
					    sizeof(buf)) > 0);
	CU_ASSERT_STRING_EQUAL(buf, "bpfmesh root CA");

	/* Reload gives the same root. */
	CU_ASSERT_EQUAL_FATAL(bm_ca_load_or_create(c.dir, TD, &again), 0);
	CU_ASSERT_EQUAL(X509_cmp(again->cert, c.ca->cert), 0);
	CU_ASSERT_EQUAL(EVP_PKEY_eq(again->key, c.ca->key), 1);
	bm_ca_free(again);
	again = NULL;

	/* A key readable by others is refused, not silently used. */
	snprintf(path, sizeof(path), "%s/%s", c.dir, BM_CA_KEY_FILE);
	CU_ASSERT_EQUAL(chmod(path, 0644), 0);
	CU_ASSERT_EQUAL(bm_ca_load_or_create(c.dir, TD, &again), -EACCES);
	CU_ASSERT_EQUAL(chmod(path, 0600), 0);
	/* A published root whose key is gone is an error: never replaced. */
	snprintf(buf, sizeof(buf), "%s/keep", c.dir);
	CU_ASSERT_EQUAL(rename(path, buf), 0);
	CU_ASSERT_EQUAL(bm_ca_load_or_create(c.dir, TD, &again), -ENOENT);
	CU_ASSERT_EQUAL(rename(buf, path), 0);
	/* The same files given as an external CA work too. */
	snprintf(buf, sizeof(buf), "%s/%s", c.dir, BM_CA_CERT_FILE);
	CU_ASSERT_EQUAL(bm_ca_load_external(buf, path, TD, &again), 0);
	CU_ASSERT(again && X509_cmp(again->cert, c.ca->cert) == 0);
	bm_ca_free(again);
	again = NULL;
	/* A key without a certificate (crash between the two renames) is
	 * replaced by a new root. */
	CU_ASSERT_EQUAL(unlink(buf), 0);
	CU_ASSERT_EQUAL(bm_ca_load_or_create(c.dir, TD, &again), 0);
	CU_ASSERT(again && X509_cmp(again->cert, c.ca->cert) != 0);
	bm_ca_free(again);
	CU_ASSERT_EQUAL(bm_ca_load_or_create(c.dir, "Not A TD", &again), -EINVAL);
	ca_close(&c);
}

/* meshds of one host starting together agree on a single root. */
static void test_ca_concurrent_create(void)
{
	enum { N = 4 };
	unsigned char md[N][32];
	char dir[] = "/tmp/bm-ca-XXXXXX";
	int fds[2];
	pid_t pids[N];

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	CU_ASSERT_FATAL(pipe(fds) == 0);
	for (int i = 0; i < N; i++) {
		pids[i] = fork();
		CU_ASSERT_FATAL(pids[i] >= 0);
		if (pids[i] == 0) {
			struct bm_ca *ca = NULL;
			unsigned char out[32] = { 0 };
			unsigned int n;

			if (!bm_ca_load_or_create(dir, TD, &ca))
				X509_digest(ca->cert, EVP_sha256(), out, &n);
			if (write(fds[1], out, sizeof(out)) != sizeof(out))
				_exit(2);
			bm_ca_free(ca);
			_exit(0);
		}
	}
	close(fds[1]);
	for (int i = 0; i < N; i++)
		CU_ASSERT_EQUAL(read(fds[0], md[i], 32), 32);
	close(fds[0]);
	for (int i = 0; i < N; i++) {
		int status = -1;

		waitpid(pids[i], &status, 0);
		CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	for (int i = 1; i < N; i++)
		CU_ASSERT_EQUAL(memcmp(md[0], md[i], 32), 0);
	CU_ASSERT_EQUAL(file_count(dir), 2);
	rm_dir(dir);
}

static void test_ca_external_must_be_ca(void)
{
	struct ca_dir c;
	struct bm_ca *ext = NULL;
	char cert_path[512], key_path[512];
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *leaf = NULL;
	FILE *f;
	int fd;

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(c.ca, ID_A, key, 3600, time(NULL), &leaf), 0);
	/* A leaf SVID and its key are not a CA. */
	snprintf(cert_path, sizeof(cert_path), "%s/leaf.pem", c.dir);
	snprintf(key_path, sizeof(key_path), "%s/leaf-key.pem", c.dir);
	f = fopen(cert_path, "w");
	CU_ASSERT_FATAL(f != NULL);
	PEM_write_X509(f, leaf);
	fclose(f);
	fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	CU_ASSERT_FATAL(f != NULL);
	PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	CU_ASSERT_EQUAL(bm_ca_load_external(cert_path, key_path, TD, &ext), -EINVAL);
	/* The root with the wrong key. */
	snprintf(cert_path, sizeof(cert_path), "%s/%s", c.dir, BM_CA_CERT_FILE);
	CU_ASSERT_EQUAL(bm_ca_load_external(cert_path, key_path, TD, &ext), -EINVAL);
	CU_ASSERT_PTR_NULL(ext);
	X509_free(leaf);
	EVP_PKEY_free(key);
	ca_close(&c);
}

/* ---- the SVID profile ---- */

/* Every X.509-SVID rule of istio-api.md §8.2/§8.3 on one certificate. */
static void check_svid(const struct bm_ca *ca, X509 *x, EVP_PKEY *key, const char *id, time_t now, long ttl)
{
	GENERAL_NAMES *gens;
	BASIC_CONSTRAINTS *bc;
	ASN1_BIT_STRING *ku;
	EXTENDED_KEY_USAGE *eku;
	AUTHORITY_KEYID *akid;
	BIGNUM *serial;
	time_t nb, na;
	int crit, at, server = 0, client = 0;

	CU_ASSERT_EQUAL(X509_get_version(x), X509_VERSION_3);
	/* Exactly one SAN extension, critical (empty subject), exactly one
	 * name in it: the URI, byte for byte. */
	at = X509_get_ext_by_NID(x, NID_subject_alt_name, -1);
	CU_ASSERT(at >= 0);
	CU_ASSERT_EQUAL(X509_get_ext_by_NID(x, NID_subject_alt_name, at), -1);
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	CU_ASSERT_FATAL(gens != NULL);
	CU_ASSERT_EQUAL(crit, 1);
	CU_ASSERT_EQUAL(sk_GENERAL_NAME_num(gens), 1);
	{
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, 0);

		CU_ASSERT_EQUAL(gn->type, GEN_URI);
		CU_ASSERT_EQUAL(ASN1_STRING_length(gn->d.uniformResourceIdentifier), (int)strlen(id));
		CU_ASSERT(!memcmp(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier), id, strlen(id)));
	}
	GENERAL_NAMES_free(gens);
	CU_ASSERT_EQUAL(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
	CU_ASSERT_EQUAL(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(ca->cert)), 0);
	/* basicConstraints CA:FALSE, critical. */
	bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	CU_ASSERT(bc && !bc->ca && crit == 1);
	BASIC_CONSTRAINTS_free(bc);
	/* keyUsage: critical, digitalSignature and nothing else (no
	 * keyEncipherment for an EC key, never keyCertSign/cRLSign). */
	ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
	CU_ASSERT(ku && crit == 1);
	CU_ASSERT(ku && ASN1_BIT_STRING_get_bit(ku, 0));
	for (int bit = 1; ku && bit < 9; bit++)
		CU_ASSERT_FALSE(ASN1_BIT_STRING_get_bit(ku, bit));
	ASN1_BIT_STRING_free(ku);
	/* EKU serverAuth + clientAuth, nothing else. */
	eku = X509_get_ext_d2i(x, NID_ext_key_usage, &crit, NULL);
	CU_ASSERT_FATAL(eku != NULL);
	CU_ASSERT_EQUAL(sk_ASN1_OBJECT_num(eku), 2);
	for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
		int nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));

		server |= nid == NID_server_auth;
		client |= nid == NID_client_auth;
	}
	CU_ASSERT(server && client);
	EXTENDED_KEY_USAGE_free(eku);
	/* authorityKeyIdentifier = the root's subjectKeyIdentifier. */
	akid = X509_get_ext_d2i(x, NID_authority_key_identifier, &crit, NULL);
	CU_ASSERT(akid && akid->keyid && !ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(ca->cert)));
	AUTHORITY_KEYID_free(akid);
	/* Those five extensions and no other. */
	CU_ASSERT_EQUAL(X509_get_ext_count(x), 5);
	/* Serial: positive, non-zero, at most 128 bits. */
	serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	CU_ASSERT(serial && !BN_is_negative(serial) && !BN_is_zero(serial) && BN_num_bits(serial) <= 128);
	BN_free(serial);
	/* NotBefore backdated 2 minutes, NotAfter = now + TTL. */
	CU_ASSERT_EQUAL(bm_x509_time(X509_get0_notBefore(x), &nb), 0);
	CU_ASSERT_EQUAL(bm_x509_time(X509_get0_notAfter(x), &na), 0);
	CU_ASSERT_EQUAL(nb, now - 120);
	CU_ASSERT_EQUAL(na, now + ttl);
	/* Our key, ECDSA-SHA256 by the root, and verifiable against it. */
	CU_ASSERT_EQUAL(EVP_PKEY_eq(X509_get0_pubkey(x), key), 1);
	CU_ASSERT_EQUAL(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
	CU_ASSERT_EQUAL(X509_verify(x, X509_get0_pubkey(ca->cert)), 1);
}

/* RFC 5280 path validation, strict, for both TLS purposes. */
static int path_ok(const struct bm_ca *ca, X509 *x, int purpose)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int ok = 0;

	if (st && ctx && X509_STORE_add_cert(st, ca->cert) && X509_STORE_CTX_init(ctx, st, x, NULL)) {
		X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT);
		X509_STORE_CTX_set_purpose(ctx, purpose);
		ok = X509_verify_cert(ctx) == 1;
		if (!ok)
			fprintf(stderr, "\n  verify: %s\n",
				X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	}
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	return ok;
}

static void test_svid_profile(void)
{
	struct ca_dir c;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	time_t now = time(NULL);
	X509 *x = NULL;

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(c.ca, ID_A, key, BM_SVID_TTL_DEFAULT, now, &x), 0);
	check_svid(c.ca, x, key, ID_A, now, BM_SVID_TTL_DEFAULT);
	CU_ASSERT(path_ok(c.ca, x, X509_PURPOSE_SSL_SERVER));
	CU_ASSERT(path_ok(c.ca, x, X509_PURPOSE_SSL_CLIENT));
	X509_free(x);
	x = NULL;
	/* Short test TTLs are honoured exactly. */
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(c.ca, ID_B, key, 10, now, &x), 0);
	check_svid(c.ca, x, key, ID_B, now, 10);
	X509_free(x);
	EVP_PKEY_free(key);
	ca_close(&c);
}

static void test_svid_serials_unique(void)
{
	enum { N = 64 };
	struct ca_dir c;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	char serials[N][64];
	time_t now = time(NULL);

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	for (int i = 0; i < N; i++) {
		X509 *x = NULL;

		CU_ASSERT_EQUAL_FATAL(bm_ca_issue(c.ca, ID_A, key, 3600, now, &x), 0);
		CU_ASSERT_EQUAL(bm_x509_serial_hex(x, serials[i], sizeof(serials[i])), 0);
		for (int j = 0; j < i; j++)
			CU_ASSERT_STRING_NOT_EQUAL(serials[i], serials[j]);
		X509_free(x);
	}
	EVP_PKEY_free(key);
	ca_close(&c);
}

static void test_issue_refuses(void)
{
	struct ca_dir c;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	time_t now = time(NULL), ca_na, na;
	X509 *x = NULL;

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	CU_ASSERT_EQUAL(bm_ca_issue(c.ca, "spiffe://other.domain/ns/a/sa/b", key, 3600, now, &x), -EINVAL);
	CU_ASSERT_EQUAL(bm_ca_issue(c.ca, "spiffe://cluster.local", key, 3600, now, &x), -EINVAL);
	CU_ASSERT_EQUAL(bm_ca_issue(c.ca, "spiffe://cluster.local/ns/../sa/b", key, 3600, now, &x), -EINVAL);
	CU_ASSERT_EQUAL(bm_ca_issue(c.ca, ID_A, key, 0, now, &x), -EINVAL);
	CU_ASSERT_EQUAL(bm_ca_issue(c.ca, ID_A, key, BM_SVID_TTL_MAX + 1, now, &x), -EINVAL);
	CU_ASSERT_EQUAL(bm_ca_issue(c.ca, ID_A, NULL, 3600, now, &x), -EINVAL);
	CU_ASSERT_PTR_NULL(x);
	/* Never beyond the root's own NotAfter. */
	CU_ASSERT_EQUAL(bm_x509_time(X509_get0_notAfter(c.ca->cert), &ca_na), 0);
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(c.ca, ID_A, key, 3600, ca_na - 100, &x), 0);
	CU_ASSERT_EQUAL(bm_x509_time(X509_get0_notAfter(x), &na), 0);
	CU_ASSERT_EQUAL(na, ca_na);
	X509_free(x);
	EVP_PKEY_free(key);
	ca_close(&c);
}

/* ---- the CSR flow ---- */

static X509 *pem_cert(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	return x;
}

/* A CSR built by hand, for requests bm_csr_create would never make. */
static char *csr_with(EVP_PKEY *key, const char *san, const char *bc)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_REQ *req = X509_REQ_new();
	X509V3_CTX v3;
	BIO *out = BIO_new(BIO_s_mem());
	char *data, *pem = NULL;
	long n;

	X509V3_set_ctx(&v3, NULL, NULL, req, NULL, 0);
	if (san)
		sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san));
	if (bc)
		sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, bc));
	X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_ASC,
				   (const unsigned char *)"please", -1, -1, 0);
	X509_REQ_set_pubkey(req, key);
	if (sk_X509_EXTENSION_num(exts))
		X509_REQ_add_extensions(req, exts);
	if (X509_REQ_sign(req, key, EVP_sha256()) && PEM_write_bio_X509_REQ(out, req)) {
		n = BIO_get_mem_data(out, &data);
		pem = strndup(data, (size_t)n);
	}
	BIO_free(out);
	X509_REQ_free(req);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return pem;
}

static void test_csr_flow(void)
{
	struct ca_dir c;
	EVP_PKEY *key = NULL, *k2 = EVP_EC_gen("P-256"), *rsa = EVP_RSA_gen(2048);
	char *csr = NULL, *cert = NULL, *hand;
	time_t now = time(NULL);
	X509 *x;

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	CU_ASSERT_EQUAL_FATAL(bm_csr_create(ID_A, &key, &csr), 0);
	CU_ASSERT(strstr(csr, "BEGIN CERTIFICATE REQUEST") != NULL);
	/* Good: signed, with the full profile, over the requester's key. */
	CU_ASSERT_EQUAL_FATAL(bm_ca_sign_csr(c.ca, csr, ID_A, 3600, now, &cert), 0);
	x = pem_cert(cert);
	CU_ASSERT_FATAL(x != NULL);
	check_svid(c.ca, x, key, ID_A, now, 3600);
	X509_free(x);
	free(cert);
	cert = NULL;
	/* Another identity than the caller allows for this node: refused. */
	CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, csr, ID_B, 3600, now, &cert), -EPERM);
	CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, csr, ID_A "x", 3600, now, &cert), -EPERM);

	/* Extra SANs: a DNS name, or a second URI, next to the right one. */
	hand = csr_with(k2, "URI:" ID_A ",DNS:evil.example", NULL);
	CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, hand, ID_A, 3600, now, &cert), -EPERM);
	free(hand);
	hand = csr_with(k2, "URI:" ID_A ",URI:" ID_B, NULL);
	CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, hand, ID_A, 3600, now, &cert), -EPERM);
	free(hand);
	hand = csr_with(k2, NULL, NULL);
	CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, hand, ID_A, 3600, now, &cert), -EPERM);
	free(hand);
	/* Asking to be a CA (and a subject) is ignored, not honoured. */
	hand = csr_with(k2, "URI:" ID_A, "critical,CA:TRUE");
	CU_ASSERT_EQUAL_FATAL(bm_ca_sign_csr(c.ca, hand, ID_A, 3600, now, &cert), 0);
	x = pem_cert(cert);
	CU_ASSERT_FATAL(x != NULL);
	check_svid(c.ca, x, k2, ID_A, now, 3600);
	X509_free(x);
	free(cert);
	cert = NULL;
	free(hand);
	/* Only P-256 keys: our TLS offers nothing else. */
	hand = csr_with(rsa, "URI:" ID_A, NULL);
	CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, hand, ID_A, 3600, now, &cert), -EINVAL);
	free(hand);

	/* Tampered: the identity changed after signing (same length, so the
	 * DER stays well-formed and only the signature can tell). */
	{
		BIO *in = BIO_new_mem_buf(csr, -1), *out = BIO_new(BIO_s_mem());
		char *name = NULL, *header = NULL, *tampered, *data;
		unsigned char *der = NULL, *p;
		long len = 0, n;

		CU_ASSERT_FATAL(PEM_read_bio(in, &name, &header, &der, &len) == 1);
		p = memmem(der, (size_t)len, "sa/alice", 8);
		CU_ASSERT_FATAL(p != NULL);
		memcpy(p, "sa/mallo", 8);
		PEM_write_bio(out, name, header, der, len);
		n = BIO_get_mem_data(out, &data);
		tampered = strndup(data, (size_t)n);
		CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, tampered, "spiffe://cluster.local/ns/default/sa/mallo", 3600,
					       now, &cert), -EBADMSG);
		free(tampered);
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(der);
		BIO_free(in);
		BIO_free(out);
	}
	CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
					     "-----END CERTIFICATE REQUEST-----\n",
				       ID_A, 3600, now, &cert), -EBADMSG);
	CU_ASSERT_EQUAL(bm_ca_sign_csr(c.ca, "not pem", ID_A, 3600, now, &cert), -EBADMSG);
	CU_ASSERT_PTR_NULL(cert);
	CU_ASSERT_EQUAL(bm_csr_create("spiffe://cluster.local/ns/a/", &k2, &csr), -EINVAL);
	free(csr);
	EVP_PKEY_free(key);
	EVP_PKEY_free(k2);
	EVP_PKEY_free(rsa);
	ERR_clear_error();
	ca_close(&c);
}

/* ---- the identity manager ---- */

static void test_identity_rotation(void)
{
	static const char *pairs[] = { "default/alice", "default/bob" };
	static const char *only_a[] = { "default/alice", "bad-pair" };
	struct bm_identity_mgr m;
	struct bm_identity_opts o = { .ttl = 10 };
	struct ca_dir c;
	struct bm_svid *a0, *a1, *b;
	time_t t0 = time(NULL);
	json_t *j;

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	o.ca = c.ca;
	CU_ASSERT_EQUAL_FATAL(bm_identity_init(&m, &o), 0);
	CU_ASSERT_EQUAL(bm_identity_sync(&m, pairs, 2, t0), 2);
	CU_ASSERT_EQUAL(bm_identity_sync(&m, pairs, 2, t0), 0); /* nothing missing */
	CU_ASSERT_EQUAL(m.n, 2);
	a0 = bm_identity_get(&m, ID_A);
	CU_ASSERT_FATAL(a0 != NULL);
	CU_ASSERT_EQUAL(a0->not_after, t0 + 10);
	CU_ASSERT_EQUAL(a0->not_before, t0 - 120);
	CU_ASSERT_EQUAL(a0->refresh_at, t0 + 5);
	CU_ASSERT_EQUAL(bm_identity_next_refresh(&m), t0 + 5);

	/* Before half life: nothing; at half life: both re-issued. */
	CU_ASSERT_EQUAL(bm_identity_rotate_due(&m, t0 + 4), 0);
	CU_ASSERT_EQUAL(bm_identity_rotate_due(&m, t0 + 5), 2);
	a1 = bm_identity_get(&m, ID_A);
	CU_ASSERT_FATAL(a1 != NULL);
	CU_ASSERT_PTR_NOT_EQUAL(a0, a1);
	CU_ASSERT_STRING_NOT_EQUAL(a0->serial, a1->serial);
	CU_ASSERT_EQUAL(a1->not_after, t0 + 15);
	CU_ASSERT_EQUAL(a1->refresh_at, t0 + 10);
	/* The old SVID stays whole for whoever still holds it. */
	CU_ASSERT_EQUAL(X509_check_private_key(a0->cert, a0->key), 1);
	bm_svid_put(a0);
	bm_svid_put(a1);
	CU_ASSERT_EQUAL(bm_identity_rotate_due(&m, t0 + 9), 0);
	CU_ASSERT_EQUAL(bm_identity_rotate_due(&m, t0 + 10), 2);

	j = bm_identity_list_json(&m);
	CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "identities")), 2);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(
				       json_array_get(json_object_get(j, "identities"), 0), "spiffe_id")),
			       ID_A);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "rotated_total")), 4);
	json_decref(j);

	/* What the metrics export: every SVID held, its own copy of the id. */
	{
		size_t n = 99;
		struct bm_svid_expiry *e = bm_identity_expiries(&m, &n);

		CU_ASSERT_EQUAL_FATAL(n, 2);
		CU_ASSERT_FATAL(e != NULL);
		CU_ASSERT_STRING_EQUAL(e[0].id, ID_A);
		CU_ASSERT_STRING_EQUAL(e[1].id, ID_B);
		CU_ASSERT_EQUAL(e[0].not_after, t0 + 20);
		CU_ASSERT_EQUAL(e[1].not_after, t0 + 20);
		a1 = bm_identity_get(&m, ID_A);
		CU_ASSERT_FATAL(a1 != NULL);
		CU_ASSERT_PTR_NOT_EQUAL(e[0].id, a1->id);
		bm_svid_put(a1);
		free(e);
	}

	/* bob's workloads left the node: his identity goes; a bad pair is
	 * reported but does not stop the rest. */
	CU_ASSERT_EQUAL(bm_identity_sync(&m, only_a, 2, t0 + 10), -EINVAL);
	CU_ASSERT_EQUAL(m.n, 1);
	b = bm_identity_get(&m, ID_B);
	CU_ASSERT_PTR_NULL(b);
	CU_ASSERT_PTR_NOT_NULL((a1 = bm_identity_get(&m, ID_A)));
	bm_svid_put(a1);
	CU_ASSERT_EQUAL(bm_identity_sync(&m, NULL, 0, t0 + 10), 0);
	CU_ASSERT_EQUAL(m.n, 0);
	CU_ASSERT_EQUAL(bm_identity_next_refresh(&m), 0);
	{
		size_t n = 99;

		CU_ASSERT_PTR_NULL(bm_identity_expiries(&m, &n));
		CU_ASSERT_EQUAL(n, 0);
	}
	bm_identity_free(&m);

	/* Configuration errors. */
	o.ttl = 1;
	CU_ASSERT_EQUAL(bm_identity_init(&m, &o), -EINVAL);
	o.ttl = 0;
	o.trust_domain = "other.domain";
	CU_ASSERT_EQUAL(bm_identity_init(&m, &o), -EINVAL);
	ca_close(&c);
}

static void test_ca_show_json(void)
{
	struct ca_dir c;
	json_t *j;
	const char *fp;

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	j = bm_ca_show_json(c.ca);
	CU_ASSERT_FATAL(j != NULL);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "trust_domain")), TD);
	CU_ASSERT(strstr(json_string_value(json_object_get(j, "subject")), "CN=bpfmesh root CA") != NULL);
	CU_ASSERT(strstr(json_string_value(json_object_get(j, "subject")), "O=" TD) != NULL);
	fp = json_string_value(json_object_get(j, "sha256_fingerprint"));
	CU_ASSERT(fp && strlen(fp) == 32 * 3 - 1);
	CU_ASSERT(strlen(json_string_value(json_object_get(j, "serial"))) > 0);
	CU_ASSERT_EQUAL(strlen(json_string_value(json_object_get(j, "not_after"))), 20);
	json_decref(j);
	ca_close(&c);
}

/* ---- TLS ---- */

/* Run both handshakes over an in-memory BIO pair. 0 when both finished. The
 * client finishes first in TLS 1.3, so a refusal by the server shows only on
 * the server side: both must succeed. */
static int handshake(SSL *c, SSL *s)
{
	BIO *bc = NULL, *bs = NULL;
	int cdone = 0, sdone = 0;

	if (!BIO_new_bio_pair(&bc, 0, &bs, 0))
		return -1;
	SSL_set_bio(c, bc, bc);
	SSL_set_bio(s, bs, bs);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	for (int i = 0; i < 64 && !(cdone && sdone); i++) {
		SSL *ssl[2] = { c, s };
		int *done[2] = { &cdone, &sdone };

		for (int k = 0; k < 2; k++) {
			int r, e;

			if (*done[k])
				continue;
			r = SSL_do_handshake(ssl[k]);
			if (r == 1) {
				*done[k] = 1;
				continue;
			}
			e = SSL_get_error(ssl[k], r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				ERR_clear_error();
				return -1;
			}
		}
	}
	return cdone && sdone ? 0 : -1;
}

/* One message each way over an established pair (also makes the client
 * read the server's session ticket). */
static int exchange(SSL *c, SSL *s)
{
	char buf[16];

	if (SSL_write(s, "ping", 4) != 4 || SSL_read(c, buf, sizeof(buf)) != 4 || memcmp(buf, "ping", 4))
		return -1;
	if (SSL_write(c, "pong", 4) != 4 || SSL_read(s, buf, sizeof(buf)) != 4 || memcmp(buf, "pong", 4))
		return -1;
	return 0;
}

struct tls_env {
	struct ca_dir ca;
	struct bm_identity_mgr m;
	SSL_CTX *server, *client; /* server = alice, client = bob */
};

static int env_open(struct tls_env *e, long ttl, const char *const *aliases, size_t n_aliases)
{
	static const char *pairs[] = { "default/alice", "default/bob" };
	struct bm_identity_opts o = { .ttl = ttl, .td_aliases = aliases, .n_td_aliases = n_aliases };
	int err;

	memset(e, 0, sizeof(*e));
	err = ca_open(&e->ca);
	if (err)
		return err;
	o.ca = e->ca.ca;
	err = bm_identity_init(&e->m, &o);
	if (err)
		return err;
	if (bm_identity_sync(&e->m, pairs, 2, time(NULL)) != 2)
		return -EIO;
	e->server = bm_tls_server_ctx(&e->m, ID_A);
	e->client = bm_tls_client_ctx(&e->m, ID_B);
	return e->server && e->client ? 0 : -ENOMEM;
}

static void env_close(struct tls_env *e)
{
	SSL_CTX_free(e->server);
	SSL_CTX_free(e->client);
	bm_identity_free(&e->m);
	ca_close(&e->ca);
}

/* A plain OpenSSL peer that does not play by our rules. */
static SSL_CTX *raw_ctx(int server, X509 *cert, EVP_PKEY *key, const unsigned char *alpn, unsigned alpn_len,
			int max_version)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!ctx)
		return NULL;
	SSL_CTX_set_max_proto_version(ctx, max_version);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (cert && (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (!server && alpn)
		SSL_CTX_set_alpn_protos(ctx, alpn, alpn_len);
	return ctx;
}

/* Handshake our server context against a raw client; 0 when accepted. */
static int try_client(struct tls_env *e, SSL_CTX *raw, const char **why)
{
	SSL *c = SSL_new(raw), *s = SSL_new(e->server);
	int r = c && s ? handshake(c, s) : -1;

	*why = s ? bm_tls_peer_error(s) : "";
	SSL_free(c);
	SSL_free(s);
	return r;
}

static void test_tls_handshake(void)
{
	struct tls_env e;
	SSL *c, *s;
	char id[BM_SPIFFE_ID_MAX + 1];
	const unsigned char *alpn;
	unsigned int alpn_len;
	SSL_SESSION *sess;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, 3600, NULL, 0), 0);
	c = SSL_new(e.client);
	s = SSL_new(e.server);
	CU_ASSERT_EQUAL_FATAL(handshake(c, s), 0);
	CU_ASSERT_EQUAL(SSL_version(c), TLS1_3_VERSION);
	/* Both sides see the other's SPIFFE ID; ALPN is h2 on both. */
	CU_ASSERT_EQUAL(bm_tls_peer_id(s, id, sizeof(id)), 0);
	CU_ASSERT_STRING_EQUAL(id, ID_B);
	CU_ASSERT_EQUAL(bm_tls_peer_id(c, id, sizeof(id)), 0);
	CU_ASSERT_STRING_EQUAL(id, ID_A);
	SSL_get0_alpn_selected(c, &alpn, &alpn_len);
	CU_ASSERT(alpn_len == 2 && !memcmp(alpn, "h2", 2));
	SSL_get0_alpn_selected(s, &alpn, &alpn_len);
	CU_ASSERT(alpn_len == 2 && !memcmp(alpn, "h2", 2));
	CU_ASSERT_EQUAL(bm_tls_peer_id(s, id, 8), -ENAMETOOLONG);
	CU_ASSERT_EQUAL(exchange(c, s), 0);
	sess = SSL_get1_session(c);
	CU_ASSERT_FATAL(sess != NULL);
	/* Closed cleanly: OpenSSL discards the session of a connection freed
	 * without close_notify. */
	SSL_shutdown(c);
	SSL_free(c);
	SSL_free(s);

	/* Resumption with the ticket; the identities survive it. */
	c = SSL_new(e.client);
	s = SSL_new(e.server);
	CU_ASSERT_EQUAL(SSL_set_session(c, sess), 1);
	CU_ASSERT_EQUAL_FATAL(handshake(c, s), 0);
	CU_ASSERT_EQUAL(SSL_session_reused(c), 1);
	CU_ASSERT_EQUAL(bm_tls_peer_id(s, id, sizeof(id)), 0);
	CU_ASSERT_STRING_EQUAL(id, ID_B);
	CU_ASSERT_EQUAL(bm_tls_peer_id(c, id, sizeof(id)), 0);
	CU_ASSERT_STRING_EQUAL(id, ID_A);
	SSL_free(c);
	SSL_free(s);
	SSL_SESSION_free(sess);

	/* The client can require a particular server identity. */
	{
		const char *want_other[] = { "spiffe://cluster.local/ns/default/sa/carol" };
		const char *want_a[] = { "spiffe://cluster.local/ns/default/sa/carol", ID_A };

		c = SSL_new(e.client);
		s = SSL_new(e.server);
		CU_ASSERT_EQUAL(bm_tls_expect_peer(c, want_a, 1), 0); /* replaced below */
		CU_ASSERT_EQUAL(bm_tls_expect_peer(c, want_other, 1), 0);
		CU_ASSERT_NOT_EQUAL(handshake(c, s), 0);
		CU_ASSERT(strstr(bm_tls_peer_error(c), "expected") != NULL);
		SSL_free(c);
		SSL_free(s);
		c = SSL_new(e.client);
		s = SSL_new(e.server);
		CU_ASSERT_EQUAL(bm_tls_expect_peer(c, want_a, 2), 0);
		CU_ASSERT_EQUAL(handshake(c, s), 0);
		CU_ASSERT_EQUAL(bm_tls_peer_id(c, id, sizeof(id)), 0);
		SSL_free(c);
		SSL_free(s);
	}
	env_close(&e);
}

/* Rotation: established connections go on with the old certificate, new
 * handshakes get the new one, from the same contexts. */
static void test_tls_rotation(void)
{
	struct tls_env e;
	SSL *c0, *s0, *c1, *s1;
	char serial_old[64], serial_new[64];
	time_t now;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, 10, NULL, 0), 0);
	now = time(NULL); /* not before: the SVIDs' refresh_at must be <= now + 5 */
	c0 = SSL_new(e.client);
	s0 = SSL_new(e.server);
	CU_ASSERT_EQUAL_FATAL(handshake(c0, s0), 0);
	CU_ASSERT_EQUAL(bm_x509_serial_hex(SSL_get0_peer_certificate(c0), serial_old, sizeof(serial_old)), 0);

	CU_ASSERT_EQUAL(bm_identity_rotate_due(&e.m, now + 5), 2);

	c1 = SSL_new(e.client);
	s1 = SSL_new(e.server);
	CU_ASSERT_EQUAL_FATAL(handshake(c1, s1), 0);
	CU_ASSERT_EQUAL(bm_x509_serial_hex(SSL_get0_peer_certificate(c1), serial_new, sizeof(serial_new)), 0);
	CU_ASSERT_STRING_NOT_EQUAL(serial_old, serial_new);
	{
		struct bm_svid *a = bm_identity_get(&e.m, ID_A);

		CU_ASSERT(a && !strcmp(a->serial, serial_new));
		bm_svid_put(a);
	}
	/* The old connection still works, with its old certificate. */
	CU_ASSERT_EQUAL(exchange(c0, s0), 0);
	CU_ASSERT_EQUAL(exchange(c1, s1), 0);
	CU_ASSERT_EQUAL(bm_x509_serial_hex(SSL_get_certificate(s0), serial_new, sizeof(serial_new)), 0);
	CU_ASSERT_STRING_EQUAL(serial_old, serial_new);
	SSL_free(c0);
	SSL_free(s0);
	SSL_free(c1);
	SSL_free(s1);

	/* An identity dropped from the node can no longer handshake. */
	{
		static const char *only_b[] = { "default/bob" };

		CU_ASSERT_EQUAL(bm_identity_sync(&e.m, only_b, 1, now), 0);
		c0 = SSL_new(e.client);
		s0 = SSL_new(e.server);
		CU_ASSERT_NOT_EQUAL(handshake(c0, s0), 0);
		SSL_free(c0);
		SSL_free(s0);
	}
	env_close(&e);
}

static void test_tls_refuses_bad_clients(void)
{
	static const unsigned char h2[] = "\x02h2", http11[] = "\x08http/1.1",
				   both[] = "\x08http/1.1\x02h2";
	const char *aliases[] = { "old.local" };
	struct tls_env e;
	struct ca_dir other;
	struct bm_identity_mgr om;
	struct bm_identity_opts oo = { .ttl = 3600 };
	EVP_PKEY *key = EVP_EC_gen("P-256");
	time_t now = time(NULL);
	const char *why;
	SSL_CTX *raw;
	X509 *x;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, 3600, aliases, 1), 0);

	/* Control: a raw client with a proper SVID from our CA is accepted, and
	 * h2 is picked out of a list. */
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(e.ca.ca, ID_B, key, 3600, now, &x), 0);
	raw = raw_ctx(0, x, key, both, sizeof(both) - 1, TLS1_3_VERSION);
	CU_ASSERT_EQUAL(try_client(&e, raw, &why), 0);
	SSL_CTX_free(raw);
	/* ALPN other than h2, or none: refused. */
	raw = raw_ctx(0, x, key, http11, sizeof(http11) - 1, TLS1_3_VERSION);
	CU_ASSERT_NOT_EQUAL(try_client(&e, raw, &why), 0);
	SSL_CTX_free(raw);
	raw = raw_ctx(0, x, key, NULL, 0, TLS1_3_VERSION);
	CU_ASSERT_NOT_EQUAL(try_client(&e, raw, &why), 0);
	SSL_CTX_free(raw);
	/* TLS 1.2: refused. */
	raw = raw_ctx(0, x, key, h2, sizeof(h2) - 1, TLS1_2_VERSION);
	CU_ASSERT_NOT_EQUAL(try_client(&e, raw, &why), 0);
	SSL_CTX_free(raw);
	X509_free(x);

	/* No client certificate. */
	raw = raw_ctx(0, NULL, NULL, h2, sizeof(h2) - 1, TLS1_3_VERSION);
	CU_ASSERT_NOT_EQUAL(try_client(&e, raw, &why), 0);
	SSL_CTX_free(raw);

	/* Expired (issued two days ago for an hour), from our own CA. */
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(e.ca.ca, ID_B, key, 3600, now - 2 * 86400, &x), 0);
	raw = raw_ctx(0, x, key, h2, sizeof(h2) - 1, TLS1_3_VERSION);
	CU_ASSERT_NOT_EQUAL(try_client(&e, raw, &why), 0);
	CU_ASSERT(strstr(why, "expired") != NULL);
	SSL_CTX_free(raw);
	X509_free(x);

	/* From another CA (same trust domain, same ID). */
	CU_ASSERT_EQUAL_FATAL(ca_open(&other), 0);
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(other.ca, ID_B, key, 3600, now, &x), 0);
	raw = raw_ctx(0, x, key, h2, sizeof(h2) - 1, TLS1_3_VERSION);
	CU_ASSERT_NOT_EQUAL(try_client(&e, raw, &why), 0);
	CU_ASSERT(strstr(why, "issuer") != NULL);
	SSL_CTX_free(raw);
	X509_free(x);
	/* ... also through our own client context backed by that CA. */
	oo.ca = other.ca;
	CU_ASSERT_EQUAL_FATAL(bm_identity_init(&om, &oo), 0);
	{
		static const char *pairs[] = { "default/bob" };
		SSL_CTX *cctx;
		SSL *c, *s;

		CU_ASSERT_EQUAL(bm_identity_sync(&om, pairs, 1, now), 1);
		cctx = bm_tls_client_ctx(&om, ID_B);
		c = SSL_new(cctx);
		s = SSL_new(e.server);
		CU_ASSERT_NOT_EQUAL(handshake(c, s), 0);
		SSL_free(c);
		SSL_free(s);
		SSL_CTX_free(cctx);
	}
	bm_identity_free(&om);
	ca_close(&other);

	/* Forged by a key-holder that ignores the profile: two URI SANs, a
	 * non-SPIFFE URI, no URI, a foreign trust domain, a CA-capable leaf. */
	{
		static const struct {
			const char *san, *ku, *why, *cn;
		} cases[] = {
			{ "critical,URI:" ID_B ",URI:" ID_A, "critical,digitalSignature", "more than one URI", NULL },
			{ "critical,URI:https://example.com/ns/default/sa/bob", "critical,digitalSignature",
			  "not a SPIFFE ID", NULL },
			{ "critical,DNS:bob.default.svc", "critical,digitalSignature", "no URI SAN", NULL },
			/* strict RFC 5280 catches it first: empty subject, no SAN */
			{ NULL, "critical,digitalSignature", "Subject name empty", NULL },
			{ "critical,URI:spiffe://evil.local/ns/default/sa/bob", "critical,digitalSignature",
			  "foreign trust domain", NULL },
			{ "critical,URI:spiffe://cluster.local", "critical,digitalSignature", "without a path", NULL },
			/* OpenSSL's own check: keyCertSign on a non-CA */
			{ "critical,URI:" ID_B, "critical,digitalSignature,keyCertSign", "keyCertSign", NULL },
			/* strict wants a subject on a CRL signer; with one, our rule */
			{ "critical,URI:" ID_B, "critical,digitalSignature,cRLSign", "Subject name empty", NULL },
			{ "critical,URI:" ID_B, "critical,digitalSignature,cRLSign", "certificate signing", "bob" },
			{ "critical,URI:" ID_B, "digitalSignature", "not critical", NULL },
			/* same root, but a node's or the CA's certificate is no HBONE peer */
			{ "critical,URI:spiffe://cluster.local/bpfmesh/node/node2", "critical,digitalSignature",
			  "not a workload identity", NULL },
			{ "critical,URI:spiffe://cluster.local/ns/default/bob", "critical,digitalSignature",
			  "not a workload identity", NULL },
			{ "critical,URI:spiffe://cluster.local/ns/default/sa/bob/x", "critical,digitalSignature",
			  "not a workload identity", NULL },
		};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			x = forge(e.ca.ca, key, cases[i].san, now - 60, now + 3600, cases[i].ku, cases[i].cn);
			CU_ASSERT_FATAL(x != NULL);
			raw = raw_ctx(0, x, key, h2, sizeof(h2) - 1, TLS1_3_VERSION);
			CU_ASSERT_FATAL(raw != NULL);
			CU_ASSERT_NOT_EQUAL(try_client(&e, raw, &why), 0);
			if (!strstr(why, cases[i].why))
				fprintf(stderr, "\n  forged case %zu: got '%s', want '%s'\n", i, why, cases[i].why);
			CU_ASSERT(strstr(why, cases[i].why) != NULL);
			SSL_CTX_free(raw);
			X509_free(x);
		}
		/* Control for the forger: the same path with a proper profile and
		 * a trust-domain alias is accepted. */
		x = forge(e.ca.ca, key, "critical,URI:spiffe://old.local/ns/default/sa/bob", now - 60, now + 3600,
			  "critical,digitalSignature", NULL);
		raw = raw_ctx(0, x, key, h2, sizeof(h2) - 1, TLS1_3_VERSION);
		CU_ASSERT_EQUAL(try_client(&e, raw, &why), 0);
		SSL_CTX_free(raw);
		X509_free(x);
	}
	EVP_PKEY_free(key);
	env_close(&e);
}

/* Our client refuses a server with an expired or foreign certificate. */
static void test_tls_client_refuses_bad_server(void)
{
	struct tls_env e;
	struct ca_dir other;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	time_t now = time(NULL);
	X509 *bad[2] = { NULL, NULL };

	CU_ASSERT_EQUAL_FATAL(env_open(&e, 3600, NULL, 0), 0);
	CU_ASSERT_EQUAL_FATAL(ca_open(&other), 0);
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(e.ca.ca, ID_A, key, 3600, now - 2 * 86400, &bad[0]), 0);
	CU_ASSERT_EQUAL_FATAL(bm_ca_issue(other.ca, ID_A, key, 3600, now, &bad[1]), 0);
	for (int i = 0; i < 2; i++) {
		SSL_CTX *raw = raw_ctx(1, bad[i], key, NULL, 0, TLS1_3_VERSION);
		SSL *c = SSL_new(e.client), *s = SSL_new(raw);

		CU_ASSERT_NOT_EQUAL(handshake(c, s), 0);
		CU_ASSERT(strlen(bm_tls_peer_error(c)) > 0);
		SSL_free(c);
		SSL_free(s);
		SSL_CTX_free(raw);
		X509_free(bad[i]);
	}
	EVP_PKEY_free(key);
	ca_close(&other);
	env_close(&e);
}

/* A remote issuer (the CA service client) that is backing off answers
 * -EAGAIN: nothing is issued, nothing counted as an issue error, and the
 * next call tries again; a CSR over the manager's own key is signed. */
struct flaky {
	struct bm_ca *ca;
	int fail;
	int calls;
};

static int flaky_issue(void *arg, const char *id, EVP_PKEY *key, long ttl, time_t now, X509 **cert,
		       STACK_OF(X509) **chain)
{
	struct flaky *f = arg;
	char *csr = NULL, *pem = NULL;
	BIO *b;
	int err;

	(void)chain;
	f->calls++;
	if (f->fail)
		return f->fail;
	err = bm_csr_create_for(id, key, &csr);
	if (!err)
		err = bm_ca_sign_csr(f->ca, csr, id, ttl, now, &pem);
	free(csr);
	if (err)
		return err;
	b = BIO_new_mem_buf(pem, -1);
	*cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	free(pem);
	return *cert ? 0 : -EBADMSG;
}

static void test_identity_remote_issuer_backoff(void)
{
	struct ca_dir c;
	struct flaky f = { 0 };
	struct bm_identity_opts o = { .trust_domain = TD, .ttl = 100, .issue = flaky_issue, .issue_arg = &f };
	struct bm_identity_mgr m;
	const char *pairs[] = { "ns1/sa1" };
	time_t now = time(NULL);

	CU_ASSERT_EQUAL_FATAL(ca_open(&c), 0);
	f.ca = c.ca;
	CU_ASSERT_EQUAL_FATAL(bm_identity_init(&m, &o), 0);
	f.fail = -EAGAIN;
	CU_ASSERT_EQUAL(bm_identity_sync(&m, pairs, 1, now), -EAGAIN);
	CU_ASSERT_EQUAL(m.n, 0);
	CU_ASSERT_EQUAL(m.issue_errors, 0);
	f.fail = -ETIMEDOUT;
	CU_ASSERT_EQUAL(bm_identity_sync(&m, pairs, 1, now), -ETIMEDOUT);
	CU_ASSERT_EQUAL(m.issue_errors, 1);
	f.fail = 0;
	CU_ASSERT_EQUAL(bm_identity_sync(&m, pairs, 1, now), 1);
	CU_ASSERT_EQUAL(m.n, 1);
	/* Rotation while the CA backs off keeps the current SVID. */
	f.fail = -EAGAIN;
	CU_ASSERT_EQUAL(bm_identity_rotate_due(&m, now + 60), -EAGAIN);
	CU_ASSERT_EQUAL(m.n, 1);
	CU_ASSERT_EQUAL(m.issue_errors, 1);
	f.fail = 0;
	CU_ASSERT_EQUAL(bm_identity_rotate_due(&m, now + 60), 1);
	CU_ASSERT_EQUAL(f.calls, 5);
	bm_identity_free(&m);
	ca_close(&c);
}

BM_SUITE(identity, BM_CASE(test_spiffe_id_table), BM_CASE(test_spiffe_id_build), BM_CASE(test_ca_root),
	 BM_CASE(test_ca_concurrent_create), BM_CASE(test_ca_external_must_be_ca), BM_CASE(test_svid_profile), BM_CASE(test_svid_serials_unique),
	 BM_CASE(test_issue_refuses), BM_CASE(test_csr_flow), BM_CASE(test_identity_rotation),
	 BM_CASE(test_ca_show_json), BM_CASE(test_tls_handshake), BM_CASE(test_tls_rotation),
	 BM_CASE(test_tls_refuses_bad_clients), BM_CASE(test_tls_client_refuses_bad_server),
	 BM_CASE(test_identity_remote_issuer_backoff))
