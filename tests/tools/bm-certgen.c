/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-certgen: writes an X.509-SVID and its key (PEM) for a SPIFFE ID, for the
 * sandbox tests that present hand-made peers to meshd's HBONE listener.
 *
 *   --ca-dir DIR        sign with the mesh root in DIR (root-cert.pem,
 *                       root-key.pem: the sandbox's <store dir>/ca)
 *   --new-ca DIR        or: create a fresh, unrelated root in DIR (must not
 *                       hold one yet) and sign with it
 *   --id spiffe://TD/ns/NS/sa/SA   the identity (exactly one URI SAN)
 *   --trust-domain TD   the root's trust domain (default: the ID's)
 *   --not-before-offset S  issue as if the clock were now+S (S may be
 *                       negative); NotBefore = now+S-120 (the CA's 2 min
 *                       backdating), NotAfter = now+S+TTL
 *   --ttl S             lifetime from the (shifted) issuance time (default 3600)
 *   --out-cert F --out-key F   where to write (key mode 0600)
 *   --out-ca F          also write the signing root's certificate (the
 *                       trust bundle a client of that CA would use)
 *
 * The certificate has the same profile as meshd's own SVIDs: it is made by
 * agent/ca.c's bm_ca_issue(), compiled into this one translation unit.
 * Example, an SVID that expired an hour ago:
 *   bm-certgen --ca-dir $STORE/ca --id spiffe://cluster.local/ns/a/sa/b \
 *              --not-before-offset -7200 --ttl 3600 --out-cert c.pem --out-key k.pem
 * Prints one JSON line: {"id":..,"serial":..,"not_before":..,"not_after":..}.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../agent/log.c"
#include "../../agent/ca.c"

static void usage(void)
{
	fprintf(stderr,
		"usage: bm-certgen (--ca-dir DIR | --new-ca DIR) --id spiffe://TD/ns/NS/sa/SA\n"
		"                  [--trust-domain TD] [--not-before-offset S] [--ttl S]\n"
		"                  --out-cert FILE --out-key FILE [--out-ca FILE]\n");
	exit(2);
}

static int write_pem(const char *path, mode_t mode, X509 *cert, EVP_PKEY *key)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	FILE *f;
	int ok;

	if (fd < 0) {
		fprintf(stderr, "bm-certgen: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fchmod(fd, mode);
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return -1;
	}
	ok = cert ? PEM_write_X509(f, cert) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	if (fclose(f) != 0 || !ok) {
		fprintf(stderr, "bm-certgen: writing %s failed\n", path);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *ca_dir = NULL, *new_ca = NULL, *id = NULL, *td = NULL;
	const char *out_cert = NULL, *out_key = NULL, *out_ca = NULL;
	long offset = 0, ttl = 3600;
	struct bm_spiffe_id sid;
	struct bm_ca *ca = NULL;
	char tdbuf[BM_TRUST_DOMAIN_MAX + 1], serial[64], nb[40], na[40];
	EVP_PKEY *key;
	X509 *cert = NULL;
	time_t now, t_nb, t_na;
	int err;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];

		if (!strcmp(a, "--ca-dir"))
			ca_dir = v;
		else if (!strcmp(a, "--new-ca"))
			new_ca = v;
		else if (!strcmp(a, "--id"))
			id = v;
		else if (!strcmp(a, "--trust-domain"))
			td = v;
		else if (!strcmp(a, "--not-before-offset"))
			offset = strtol(v, NULL, 10);
		else if (!strcmp(a, "--ttl"))
			ttl = strtol(v, NULL, 10);
		else if (!strcmp(a, "--out-cert"))
			out_cert = v;
		else if (!strcmp(a, "--out-key"))
			out_key = v;
		else if (!strcmp(a, "--out-ca"))
			out_ca = v;
		else
			usage();
	}
	if (!id || !out_cert || !out_key || !!ca_dir == !!new_ca || ttl <= 0)
		usage();
	if (bm_spiffe_id_parse(id, &sid) || !sid.path[0]) {
		fprintf(stderr, "bm-certgen: --id %s: %s\n", id,
			bm_spiffe_id_check(id) ?: "a workload ID needs a path");
		return 2;
	}
	if (!td) {
		snprintf(tdbuf, sizeof(tdbuf), "%s", sid.td);
		td = tdbuf;
	}

	if (ca_dir) {
		char cp[4096], kp[4096];

		snprintf(cp, sizeof(cp), "%s/%s", ca_dir, BM_CA_CERT_FILE);
		snprintf(kp, sizeof(kp), "%s/%s", ca_dir, BM_CA_KEY_FILE);
		err = bm_ca_load_external(cp, kp, td, &ca);
	} else {
		char cp[4096];

		snprintf(cp, sizeof(cp), "%s/%s", new_ca, BM_CA_CERT_FILE);
		if (access(cp, F_OK) == 0) {
			fprintf(stderr, "bm-certgen: --new-ca %s already holds a root\n", new_ca);
			return 1;
		}
		err = bm_ca_load_or_create(new_ca, td, &ca);
	}
	if (err) {
		fprintf(stderr, "bm-certgen: CA %s: %s\n", ca_dir ? ca_dir : new_ca, strerror(-err));
		return 1;
	}

	key = EVP_EC_gen("P-256");
	if (!key) {
		fprintf(stderr, "bm-certgen: key generation failed\n");
		return 1;
	}
	now = time(NULL) + offset;
	err = bm_ca_issue(ca, id, key, ttl, now, &cert);
	if (err) {
		fprintf(stderr, "bm-certgen: issuing %s: %s (the ID must be in trust domain %s)\n", id,
			strerror(-err), ca->trust_domain);
		return 1;
	}
	if (write_pem(out_key, 0600, NULL, key) || write_pem(out_cert, 0644, cert, NULL) ||
	    (out_ca && write_pem(out_ca, 0644, ca->cert, NULL)))
		return 1;

	bm_x509_serial_hex(cert, serial, sizeof(serial));
	bm_x509_time(X509_get0_notBefore(cert), &t_nb);
	bm_x509_time(X509_get0_notAfter(cert), &t_na);
	bm_time_rfc3339(t_nb, nb, sizeof(nb));
	bm_time_rfc3339(t_na, na, sizeof(na));
	printf("{\"id\":\"%s\",\"ca\":\"%s\",\"serial\":\"%s\",\"not_before\":\"%s\",\"not_after\":\"%s\","
	       "\"expired\":%s}\n",
	       id, ca_dir ? ca_dir : new_ca, serial, nb, na, t_na < time(NULL) ? "true" : "false");
	X509_free(cert);
	EVP_PKEY_free(key);
	bm_ca_free(ca);
	return 0;
}
