/* The mesh CA: root creation/loading, X.509-SVID issuance, the CSR flow and
 * SPIFFE ID validation. The SVID profile follows istio-api.md §8.2/§8.3. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "ca.h"
#include "log.h"

/* A CSR is a few hundred bytes; anything this large is not one of ours. */
#define CSR_PEM_MAX (64 * 1024)

/* ---- SPIFFE IDs (istio-api.md §8.1, SPIFFE-ID.md) ---- */

static int td_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static int path_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '-' || c == '_';
}

/* Name the URI component a stray character starts, so the error points at
 * the rule the input broke rather than at "bad character". */
static const char *why_char(char c, int in_td)
{
	switch (c) {
	case ':': return in_td ? "port not allowed" : "bad character ':' in path";
	case '@': return "userinfo not allowed";
	case '?': return "query not allowed";
	case '#': return "fragment not allowed";
	case '%': return "percent-encoding not allowed";
	}
	if (in_td && c >= 'A' && c <= 'Z')
		return "trust domain must be lowercase";
	return in_td ? "bad character in trust domain" : "bad character in path";
}

const char *bm_spiffe_id_check(const char *id)
{
	static const char scheme[] = "spiffe://";
	const char *td, *p;
	size_t tdlen;

	if (!id || !*id)
		return "empty";
	if (strnlen(id, BM_SPIFFE_ID_MAX + 1) > BM_SPIFFE_ID_MAX)
		return "longer than 2048 bytes";
	/* The scheme is compared case-sensitively, as go-spiffe and ztunnel do. */
	if (strncmp(id, scheme, sizeof(scheme) - 1))
		return "scheme is not spiffe://";
	td = id + sizeof(scheme) - 1;
	tdlen = strcspn(td, "/");
	if (!tdlen)
		return "empty trust domain";
	if (tdlen > BM_TRUST_DOMAIN_MAX)
		return "trust domain longer than 255 bytes";
	for (size_t i = 0; i < tdlen; i++)
		if (!td_char(td[i]))
			return why_char(td[i], 1);
	p = td + tdlen;
	while (*p == '/') {
		const char *seg = ++p;

		while (*p && *p != '/') {
			if (!path_char(*p))
				return why_char(*p, 0);
			p++;
		}
		if (p == seg)
			return *p ? "empty path segment" : "trailing slash";
		if ((p - seg == 1 && seg[0] == '.') || (p - seg == 2 && seg[0] == '.' && seg[1] == '.'))
			return "dot segment in path";
	}
	return NULL;
}

int bm_spiffe_id_parse(const char *id, struct bm_spiffe_id *out)
{
	const char *td;
	size_t tdlen;

	if (bm_spiffe_id_check(id))
		return -EINVAL;
	if (!out)
		return 0;
	td = id + strlen("spiffe://");
	tdlen = strcspn(td, "/");
	memcpy(out->td, td, tdlen);
	out->td[tdlen] = '\0';
	snprintf(out->path, sizeof(out->path), "%s", td + tdlen);
	return 0;
}

int bm_spiffe_td_valid(const char *td)
{
	size_t n = td ? strnlen(td, BM_TRUST_DOMAIN_MAX + 1) : 0;

	if (!n || n > BM_TRUST_DOMAIN_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!td_char(td[i]))
			return -EINVAL;
	return 0;
}

int bm_spiffe_id_build(const char *td, const char *ns, const char *sa, char *buf, size_t len)
{
	int n;

	if (bm_spiffe_td_valid(td) || !ns || !sa)
		return -EINVAL;
	n = snprintf(buf, len, "spiffe://%s/ns/%s/sa/%s", td, ns, sa);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	/* ns or sa with '/', '.', '..' or odd characters would change the path. */
	if (bm_spiffe_id_check(buf) || strchr(ns, '/') || strchr(sa, '/')) {
		buf[0] = '\0';
		return -EINVAL;
	}
	return 0;
}

/* ---- small X.509 helpers ---- */

int bm_x509_uri_san(X509 *cert, char *buf, size_t len)
{
	GENERAL_NAMES *gens;
	const unsigned char *val = NULL;
	int crit = -1, nuri = 0, vlen = 0, err = 0;

	gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	if (!gens)
		return crit == -2 ? -E2BIG : -ENOENT; /* -2: the extension appears twice */
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);

		if (gn->type != GEN_URI)
			continue; /* SPIFFE allows DNS SANs beside the one URI SAN */
		nuri++;
		val = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
		vlen = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
	}
	if (nuri == 0)
		err = -ENOENT;
	else if (nuri > 1)
		err = -E2BIG; /* X509-SVID.md: validators MUST reject more than one */
	else if (vlen <= 0 || memchr(val, '\0', vlen))
		err = -EINVAL; /* an embedded NUL would truncate the ID we compare */
	else if ((size_t)vlen >= len)
		err = -ENAMETOOLONG;
	else {
		memcpy(buf, val, vlen);
		buf[vlen] = '\0';
	}
	GENERAL_NAMES_free(gens);
	return err;
}

int bm_x509_serial_hex(X509 *cert, char *buf, size_t len)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	int err = 0;

	if (!hex) {
		err = -ENOMEM;
		goto out;
	}
	if (strlen(hex) >= len) {
		err = -ENAMETOOLONG;
		goto out;
	}
	for (size_t i = 0; hex[i]; i++)
		buf[i] = (hex[i] >= 'A' && hex[i] <= 'F') ? hex[i] - 'A' + 'a' : hex[i];
	buf[strlen(hex)] = '\0';
out:
	OPENSSL_free(hex);
	BN_free(bn);
	return err;
}

int bm_x509_time(const ASN1_TIME *t, time_t *out)
{
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return -EINVAL;
	*out = timegm(&tm);
	return 0;
}

void bm_time_rfc3339(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A 128-bit random serial (CA/B and RFC 5280 ask for unpredictable serials;
 * 16 bytes stays within the 20-octet limit). BN_rand never yields a negative
 * number; zero is not a valid serial, so draw again. */
static int set_random_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	int err = -ENOMEM;

	if (!bn)
		return -ENOMEM;
	do {
		if (!BN_rand(bn, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
			goto out;
	} while (BN_is_zero(bn));
	if (BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		err = 0;
out:
	BN_free(bn);
	return err;
}

/* A constant extension ("critical,CA:FALSE"...) from OpenSSL's config syntax.
 * Only for fixed strings: nothing caller-supplied goes through this parser. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -ENOMEM;
}

/* subjectAltName with the single URI; critical because the SVID subject is
 * empty (X509-SVID.md; RFC 5280 §4.2.1.6). Built as a structure, not parsed
 * from a string, so no character in the ID can add another name. */
static X509_EXTENSION *uri_san_ext(const char *uri)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	X509_EXTENSION *ext = NULL;

	if (!gens || !gn || !s || !ASN1_STRING_set(s, uri, (int)strlen(uri)))
		goto out;
	GENERAL_NAME_set0_value(gn, GEN_URI, s);
	s = NULL;
	if (!sk_GENERAL_NAME_push(gens, gn))
		goto out;
	gn = NULL;
	ext = X509V3_EXT_i2d(NID_subject_alt_name, 1, gens);
out:
	ASN1_IA5STRING_free(s);
	GENERAL_NAME_free(gn);
	GENERAL_NAMES_free(gens);
	return ext;
}

/* authorityKeyIdentifier = the issuer's subjectKeyIdentifier, or the SHA-1 of
 * its public key (RFC 5280 §4.2.1.2 method 1) for a given CA without one. */
static int add_akid(X509 *x, X509 *issuer)
{
	const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(issuer);
	AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int err = -ENOMEM;

	if (!akid)
		return -ENOMEM;
	if (ski) {
		akid->keyid = ASN1_OCTET_STRING_dup(ski);
	} else if (X509_pubkey_digest(issuer, EVP_sha1(), md, &mdlen)) {
		akid->keyid = ASN1_OCTET_STRING_new();
		if (akid->keyid && !ASN1_OCTET_STRING_set(akid->keyid, md, (int)mdlen))
			goto out;
	}
	if (akid->keyid && X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) == 1)
		err = 0;
out:
	AUTHORITY_KEYID_free(akid);
	return err;
}

static int set_validity(X509 *x, time_t not_before, time_t not_after)
{
	if (!ASN1_TIME_set(X509_getm_notBefore(x), not_before) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), not_after))
		return -ENOMEM;
	return 0;
}

static int is_p256(EVP_PKEY *pk)
{
	char group[64];

	return EVP_PKEY_is_a(pk, "EC") && EVP_PKEY_get_group_name(pk, group, sizeof(group), NULL) &&
	       !strcmp(group, "prime256v1");
}

/* ---- the root ---- */

static int make_root(const char *td, time_t now, X509 **cert_out, EVP_PKEY **key_out)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name = X509_get_subject_name(x);
	int err = -ENOMEM;

	if (!key || !x)
		goto err_free;
	if (!X509_set_version(x, X509_VERSION_3) || set_random_serial(x) ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)td, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"bpfmesh root CA",
					-1, -1, 0) ||
	    !X509_set_issuer_name(x, name) || set_validity(x, now - BM_SVID_BACKDATE, now + BM_CA_ROOT_TTL) ||
	    !X509_set_pubkey(x, key))
		goto err_free;
	err = -EINVAL;
	if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
	    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(x, x, NID_subject_key_identifier, "hash"))
		goto err_free;
	if (!X509_sign(x, key, EVP_sha256()))
		goto err_free;
	*cert_out = x;
	*key_out = key;
	return 0;
err_free:
	X509_free(x);
	EVP_PKEY_free(key);
	return err;
}

/* Write dir/name via a temporary file and rename(), so a reader (or a crash)
 * never sees half a PEM. The temporary is created with its final mode and
 * O_EXCL: a key is never readable by others, not even for an instant. */
int bm_write_file_atomic(const char *dir, const char *name, mode_t mode, const char *data, size_t len)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	int fd, dfd, err = 0;
	size_t off = 0;

	if (snprintf(tmp, sizeof(tmp), "%s/.%s.%d.tmp", dir, name, (int)getpid()) >= (int)sizeof(tmp) ||
	    snprintf(dst, sizeof(dst), "%s/%s", dir, name) >= (int)sizeof(dst))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0 && errno == EEXIST) {
		/* Left by an earlier run that crashed with our pid: ours to remove. */
		unlink(tmp);
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	}
	if (fd < 0) {
		err = -errno;
		bm_log("ca: create %s: %s", tmp, strerror(errno));
		return err;
	}
	while (off < len) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = -errno;
			goto err_unlink;
		}
		off += (size_t)n;
	}
	if (fsync(fd) < 0) {
		err = -errno;
		goto err_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		err = -errno;
		goto err_unlink;
	}
	fd = -1;
	if (rename(tmp, dst) < 0) {
		err = -errno;
		goto err_unlink;
	}
	/* Make the rename itself durable. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
err_unlink:
	bm_log("ca: write %s: %s", dst, strerror(-err));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return err;
}

static char *bio_to_string(BIO *bio)
{
	char *data, *s;
	long n = BIO_get_mem_data(bio, &data);

	if (n < 0 || !(s = malloc((size_t)n + 1)))
		return NULL;
	memcpy(s, data, (size_t)n);
	s[n] = '\0';
	return s;
}

static int save_root(const char *dir, X509 *cert, EVP_PKEY *key)
{
	BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
	char *kp, *cp;
	long kn, cn;
	int err = -ENOMEM;

	if (!kb || !cb || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cb, cert))
		goto out;
	kn = BIO_get_mem_data(kb, &kp);
	cn = BIO_get_mem_data(cb, &cp);
	/* Key first: the certificate's presence is what marks the pair complete
	 * (see bm_ca_load_or_create), so a crash in between is recoverable. */
	err = bm_write_file_atomic(dir, BM_CA_KEY_FILE, 0600, kp, (size_t)kn);
	if (!err)
		err = bm_write_file_atomic(dir, BM_CA_CERT_FILE, 0644, cp, (size_t)cn);
out:
	BIO_free(cb);
	BIO_free(kb); /* BUF_MEM_free clears the key PEM before freeing it */
	return err;
}

static int load_key(const char *path, EVP_PKEY **out)
{
	struct stat st;
	BIO *bio;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	/* Like ssh: a CA key others can read is a compromised CA; refuse it. */
	if (st.st_mode & 077) {
		bm_log("ca: %s has mode %03o; the CA key must be 0600 (chmod 600 %s)", path,
		       (unsigned)(st.st_mode & 0777), path);
		close(fd);
		return -EACCES;
	}
	bio = BIO_new_fd(fd, BIO_CLOSE);
	if (!bio) {
		close(fd);
		return -ENOMEM;
	}
	*out = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	if (!*out) {
		bm_log("ca: %s: not a PEM private key", path);
		err = -EBADMSG;
	}
	BIO_free(bio);
	return err;
}

static int load_cert(const char *path, X509 **out)
{
	BIO *bio = BIO_new_file(path, "r");

	if (!bio)
		return errno ? -errno : -ENOENT;
	*out = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!*out) {
		bm_log("ca: %s: not a PEM certificate", path);
		return -EBADMSG;
	}
	return 0;
}

/* A CA we are handed must really be one: self-signed CA with keyCertSign,
 * the key matching, not expired. Intermediates would need the chain sent
 * with every SVID; not supported yet (docs/identity.md). */
static int check_ca(const char *what, X509 *cert, EVP_PKEY *key)
{
	uint32_t ku = X509_get_key_usage(cert);

	if (X509_check_private_key(cert, key) != 1) {
		bm_log("ca: %s: the key does not match the certificate", what);
		return -EINVAL;
	}
	if (!X509_check_ca(cert) || !(ku & KU_KEY_CERT_SIGN)) {
		bm_log("ca: %s: not a CA certificate (basicConstraints CA:TRUE and keyCertSign needed)", what);
		return -EINVAL;
	}
	if (X509_self_signed(cert, 1) != 1) {
		bm_log("ca: %s: not self-signed; intermediate CAs are not supported yet", what);
		return -EINVAL;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
		bm_log("ca: %s: the CA certificate has expired", what);
		return -EKEYEXPIRED;
	}
	ERR_clear_error();
	return 0;
}

static int ca_new(X509 *cert, EVP_PKEY *key, const char *td, struct bm_ca **out)
{
	struct bm_ca *ca = calloc(1, sizeof(*ca));

	if (!ca)
		return -ENOMEM;
	ca->cert = cert;
	ca->key = key;
	snprintf(ca->trust_domain, sizeof(ca->trust_domain), "%s", td);
	*out = ca;
	return 0;
}

int bm_ca_load_external(const char *cert_path, const char *key_path, const char *trust_domain,
			struct bm_ca **out)
{
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	int err;

	if (!trust_domain)
		trust_domain = BM_TRUST_DOMAIN_DEFAULT;
	if (bm_spiffe_td_valid(trust_domain)) {
		bm_log("ca: trust domain '%s': lowercase [a-z0-9.-_], 1-255 bytes", trust_domain);
		return -EINVAL;
	}
	err = load_cert(cert_path, &cert);
	if (err) {
		if (err != -EBADMSG)
			bm_log("ca: open %s: %s", cert_path, strerror(-err));
		goto err_free;
	}
	err = load_key(key_path, &key);
	if (err) {
		if (err != -EBADMSG && err != -EACCES)
			bm_log("ca: open %s: %s", key_path, strerror(-err));
		goto err_free;
	}
	err = check_ca(cert_path, cert, key);
	if (err)
		goto err_free;
	err = ca_new(cert, key, trust_domain, out);
	if (err)
		goto err_free;
	return 0;
err_free:
	EVP_PKEY_free(key);
	X509_free(cert);
	ERR_clear_error();
	return err;
}

/* Under an exclusive lock on dir/.lock: meshds of one host (the sandbox's
 * nodes) share a CA directory and may start together; without the lock two
 * of them could each create a root and each trust only its own. */
static int lock_dir(const char *dir, int *fd_out)
{
	char path[PATH_MAX];
	int fd, err;

	if (snprintf(path, sizeof(path), "%s/.lock", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		bm_log("ca: open %s: %s", path, strerror(errno));
		return err;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		err = -errno;
		bm_log("ca: flock %s: %s", path, strerror(errno));
		close(fd);
		return err;
	}
	*fd_out = fd;
	return 0;
}

int bm_ca_load_or_create(const char *dir, const char *trust_domain, struct bm_ca **out)
{
	char cert_path[PATH_MAX], key_path[PATH_MAX];
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	int err, lock_fd = -1;

	if (!trust_domain)
		trust_domain = BM_TRUST_DOMAIN_DEFAULT;
	if (bm_spiffe_td_valid(trust_domain)) {
		bm_log("ca: trust domain '%s': lowercase [a-z0-9.-_], 1-255 bytes", trust_domain);
		return -EINVAL;
	}
	if (snprintf(cert_path, sizeof(cert_path), "%s/%s", dir, BM_CA_CERT_FILE) >= (int)sizeof(cert_path) ||
	    snprintf(key_path, sizeof(key_path), "%s/%s", dir, BM_CA_KEY_FILE) >= (int)sizeof(key_path))
		return -ENAMETOOLONG;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		err = -errno;
		bm_log("ca: mkdir %s: %s", dir, strerror(errno));
		return err;
	}
	err = lock_dir(dir, &lock_fd);
	if (err)
		return err;
	if (access(cert_path, F_OK) == 0) {
		err = bm_ca_load_external(cert_path, key_path, trust_domain, out);
		goto out_unlock;
	}
	/* No certificate: create a root. A key without a certificate is what a
	 * crash between the two renames leaves (save_root writes the key first);
	 * nothing can trust a root whose certificate was never published, so it
	 * is replaced. A certificate without its key is the case to refuse, and
	 * load_external does. */
	err = make_root(trust_domain, time(NULL), &cert, &key);
	if (err) {
		bm_log("ca: cannot create the root key/certificate");
		goto err_free;
	}
	err = save_root(dir, cert, key);
	if (err)
		goto err_free;
	err = ca_new(cert, key, trust_domain, out);
	if (err)
		goto err_free;
	bm_log("ca: created root CA for trust domain %s in %s", trust_domain, dir);
	goto out_unlock;
err_free:
	EVP_PKEY_free(key);
	X509_free(cert);
	ERR_clear_error();
out_unlock:
	close(lock_fd); /* releases the flock */
	return err;
}

void bm_ca_free(struct bm_ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca);
}

/* ---- issuing ---- */

int bm_ca_issue(const struct bm_ca *ca, const char *spiffe_id, EVP_PKEY *pubkey, long ttl, time_t now,
		X509 **out)
{
	struct bm_spiffe_id id;
	X509_EXTENSION *san = NULL;
	time_t not_after, ca_not_after;
	X509 *x = NULL;
	int err;

	if (!ca || !pubkey || ttl <= 0 || ttl > BM_SVID_TTL_MAX)
		return -EINVAL;
	/* X509-SVID.md: a leaf SVID has a non-root path; and we only vouch for
	 * our own trust domain. */
	if (bm_spiffe_id_parse(spiffe_id, &id) || !id.path[0] || strcmp(id.td, ca->trust_domain))
		return -EINVAL;
	err = bm_x509_time(X509_get0_notAfter(ca->cert), &ca_not_after);
	if (err)
		return err;
	/* A leaf outliving its issuer would fail path validation anyway. */
	not_after = now + ttl < ca_not_after ? now + ttl : ca_not_after;
	err = -ENOMEM;
	x = X509_new();
	san = uri_san_ext(spiffe_id);
	if (!x || !san)
		goto err_free;
	/* Subject stays empty: the identity is the URI SAN alone, as Istio's
	 * workload certificates do (X509-SVID.md allows an empty subject when
	 * the SAN is critical, which uri_san_ext makes it). */
	if (!X509_set_version(x, X509_VERSION_3) || set_random_serial(x) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
	    set_validity(x, now - BM_SVID_BACKDATE, not_after) || !X509_set_pubkey(x, pubkey) ||
	    !X509_add_ext(x, san, -1))
		goto err_free;
	/* keyUsage: digitalSignature only. Istio adds keyEncipherment because its
	 * default key is RSA; for an EC key it means nothing and RFC 5480 §3
	 * does not allow it, and X509-SVID.md makes it optional. */
	err = -EINVAL;
	if (add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") ||
	    add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth,clientAuth") || add_akid(x, ca->cert))
		goto err_free;
	if (!X509_sign(x, ca->key, EVP_sha256()))
		goto err_free;
	X509_EXTENSION_free(san);
	*out = x;
	return 0;
err_free:
	X509_EXTENSION_free(san);
	X509_free(x);
	ERR_clear_error();
	return err;
}

/* The CSR's subjectAltName must be one extension holding one URI equal to
 * expected: not a prefix, not among others. */
static int csr_san_is(X509_REQ *req, const char *expected)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	GENERAL_NAMES *gens = NULL;
	const GENERAL_NAME *gn;
	int nsan = 0, err = -EPERM;
	X509_EXTENSION *san = NULL;

	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

		if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name) {
			san = e;
			nsan++;
		}
	}
	if (nsan != 1)
		goto out;
	gens = X509V3_EXT_d2i(san);
	if (!gens || sk_GENERAL_NAME_num(gens) != 1)
		goto out;
	gn = sk_GENERAL_NAME_value(gens, 0);
	if (gn->type == GEN_URI &&
	    (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier) == strlen(expected) &&
	    !memcmp(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier), expected, strlen(expected)))
		err = 0;
out:
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return err;
}

int bm_ca_sign_csr(const struct bm_ca *ca, const char *csr_pem, const char *expected_id, long ttl,
		   time_t now, char **cert_pem)
{
	X509_REQ *req = NULL;
	EVP_PKEY *pk;
	BIO *in = NULL, *out = NULL;
	X509 *x = NULL;
	int err;

	if (!ca || !csr_pem || !expected_id || !cert_pem)
		return -EINVAL;
	if (strnlen(csr_pem, CSR_PEM_MAX + 1) > CSR_PEM_MAX)
		return -EMSGSIZE;
	err = -ENOMEM;
	in = BIO_new_mem_buf(csr_pem, -1);
	if (!in)
		goto out;
	err = -EBADMSG;
	req = PEM_read_bio_X509_REQ(in, NULL, NULL, NULL);
	if (!req || !(pk = X509_REQ_get0_pubkey(req)))
		goto out;
	/* Proof of possession: the requester holds the key it wants certified. */
	if (X509_REQ_verify(req, pk) != 1)
		goto out;
	/* Our TLS offers only ECDSA P-256 signatures (tlsctx.c). */
	err = -EINVAL;
	if (!is_p256(pk))
		goto out;
	err = csr_san_is(req, expected_id);
	if (err)
		goto out;
	/* Everything else the CSR asks for (subject, CA:TRUE, other usages) is
	 * ignored: the profile comes from bm_ca_issue alone. */
	err = bm_ca_issue(ca, expected_id, pk, ttl, now, &x);
	if (err)
		goto out;
	err = -ENOMEM;
	out = BIO_new(BIO_s_mem());
	if (!out || !PEM_write_bio_X509(out, x) || !(*cert_pem = bio_to_string(out)))
		goto out;
	err = 0;
out:
	BIO_free(out);
	X509_free(x);
	X509_REQ_free(req);
	BIO_free(in);
	ERR_clear_error();
	return err;
}

int bm_csr_create_for(const char *spiffe_id, EVP_PKEY *key, char **csr_pem)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_EXTENSION *san = NULL;
	X509_REQ *req = NULL;
	BIO *out = NULL;
	int err;

	if (!key || bm_spiffe_id_parse(spiffe_id, NULL))
		return -EINVAL;
	err = -ENOMEM;
	req = X509_REQ_new();
	exts = sk_X509_EXTENSION_new_null();
	san = uri_san_ext(spiffe_id);
	if (!req || !exts || !san || !sk_X509_EXTENSION_push(exts, san))
		goto err_free;
	san = NULL; /* owned by exts now */
	if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) || !X509_REQ_set_pubkey(req, key) ||
	    !X509_REQ_add_extensions(req, exts) || !X509_REQ_sign(req, key, EVP_sha256()))
		goto err_free;
	out = BIO_new(BIO_s_mem());
	if (!out || !PEM_write_bio_X509_REQ(out, req) || !(*csr_pem = bio_to_string(out)))
		goto err_free;
	err = 0;
err_free:
	BIO_free(out);
	X509_EXTENSION_free(san);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	ERR_clear_error();
	return err;
}

int bm_csr_create(const char *spiffe_id, EVP_PKEY **key_out, char **csr_pem)
{
	EVP_PKEY *key;
	int err;

	if (bm_spiffe_id_parse(spiffe_id, NULL))
		return -EINVAL;
	key = EVP_EC_gen("P-256");
	if (!key) {
		ERR_clear_error();
		return -ENOMEM;
	}
	err = bm_csr_create_for(spiffe_id, key, csr_pem);
	if (err) {
		EVP_PKEY_free(key);
		return err;
	}
	*key_out = key;
	return 0;
}

/* ---- meshctl ca show ---- */

json_t *bm_ca_show_json(const struct bm_ca *ca)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	char subject[512] = "", serial[64] = "", nb[32] = "", na[32] = "", fp[3 * EVP_MAX_MD_SIZE] = "";
	unsigned int mdlen = 0;
	BIO *bio = BIO_new(BIO_s_mem());
	time_t t;

	if (!bio)
		return NULL;
	if (X509_NAME_print_ex(bio, X509_get_subject_name(ca->cert), 0, XN_FLAG_RFC2253 & ~XN_FLAG_DN_REV) >= 0) {
		int n = BIO_read(bio, subject, sizeof(subject) - 1);

		subject[n > 0 ? n : 0] = '\0';
	}
	BIO_free(bio);
	bm_x509_serial_hex(ca->cert, serial, sizeof(serial));
	if (!bm_x509_time(X509_get0_notBefore(ca->cert), &t))
		bm_time_rfc3339(t, nb, sizeof(nb));
	if (!bm_x509_time(X509_get0_notAfter(ca->cert), &t))
		bm_time_rfc3339(t, na, sizeof(na));
	if (X509_digest(ca->cert, EVP_sha256(), md, &mdlen))
		for (unsigned int i = 0; i < mdlen; i++)
			snprintf(fp + 3 * i, sizeof(fp) - 3 * i, i + 1 < mdlen ? "%02X:" : "%02X", md[i]);
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "subject", subject, "trust_domain", ca->trust_domain,
			 "serial", serial, "not_before", nb, "not_after", na, "sha256_fingerprint", fp);
}
