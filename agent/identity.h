/* The node's workload identities: one X.509-SVID per service account with
 * workloads on this node, issued by the mesh CA and rotated at half life.
 *
 * Threads: bm_identity_sync() and bm_identity_rotate_due() are called from
 * one thread (meshd's main loop); bm_identity_get() and the TLS callbacks
 * (tlsctx.c) from any worker. Published SVIDs are immutable and reference
 * counted; a TLS connection holds its own references to the key and cert it
 * handshook with, so rotation never touches an established connection. */
#ifndef BM_IDENTITY_H
#define BM_IDENTITY_H
#include <pthread.h>
#include <stddef.h>
#include <time.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include "ca.h"

/* One issued SVID: never changed once published. */
struct bm_svid {
	int refs;                      /* atomic; bm_svid_put() frees at 0 */
	char id[BM_SPIFFE_ID_MAX + 1]; /* spiffe://td/ns/NS/sa/SA */
	EVP_PKEY *key;
	X509 *cert;
	STACK_OF(X509) *chain;         /* certs between leaf and root: empty while the root signs */
	char serial[64];               /* lowercase hex */
	time_t issued;                 /* our clock at issuance */
	time_t not_before, not_after;  /* as in the certificate */
	time_t refresh_at;             /* issued + ttl / 2 */
};

/* Where certificates come from. The embedded mode's issuer signs with a
 * local struct bm_ca; a node without the CA key plugs in the CSR client
 * (casvc.h, docs/identity.md §6) here. Returns 0 and a certificate for key's
 * public half (and an optional chain, may stay NULL), or -errno. -EAGAIN
 * means "backing off, already reported": not logged, not counted as an
 * issue error, tried again at the next call. */
typedef int (*bm_issue_fn)(void *arg, const char *spiffe_id, EVP_PKEY *key, long ttl, time_t now,
			   X509 **cert, STACK_OF(X509) **chain);

struct bm_identity_opts {
	const char *trust_domain;       /* NULL: ca's, else cluster.local */
	const char *const *td_aliases;  /* meshConfig.trustDomainAliases: peers accepted too */
	size_t n_td_aliases;
	long ttl;                       /* SVID lifetime in seconds; 0: 24 h */
	struct bm_ca *ca;               /* embedded mode: borrowed, outlives the manager */
	bm_issue_fn issue;              /* else this (with issue_arg) */
	void *issue_arg;
};

struct bm_identity_ent;

struct bm_identity_mgr {
	char trust_domain[BM_TRUST_DOMAIN_MAX + 1];
	char **td_aliases;              /* immutable after creation */
	size_t n_td_aliases;
	long ttl;
	bm_issue_fn issue;
	void *issue_arg;
	X509_STORE *trust;              /* the trust bundle (root), shared with every SSL_CTX */
	pthread_mutex_t lock;           /* guards ents/n/cap against readers on workers */
	struct bm_identity_ent *ents;
	size_t n, cap;
	unsigned long issued_total, rotated_total, issue_errors;
};

/* 0 or -errno. With o->ca, the trust bundle is the CA's root. */
int bm_identity_init(struct bm_identity_mgr *m, const struct bm_identity_opts *o);
void bm_identity_free(struct bm_identity_mgr *m);

/* Make the set of identities exactly { spiffe://td/ns/NS/sa/SA : "NS/SA" in
 * pairs }: issue the missing ones, drop the others. Returns the number issued
 * (>= 0) or the first -errno (the rest is still attempted). */
int bm_identity_sync(struct bm_identity_mgr *m, const char *const *ns_sa_pairs, size_t n, time_t now);
/* Re-issue every SVID whose refresh_at <= now (half its lifetime). Returns
 * how many were rotated, or the first -errno; a failed one keeps its current
 * SVID and is tried again at the next call. */
int bm_identity_rotate_due(struct bm_identity_mgr *m, time_t now);
/* Earliest refresh_at over all identities (0 when there are none): when the
 * main loop should call bm_identity_rotate_due() next. */
time_t bm_identity_next_refresh(struct bm_identity_mgr *m);

/* The current SVID of spiffe_id with a reference taken, or NULL (errno
 * ENOENT). Release with bm_svid_put(). */
struct bm_svid *bm_identity_get(struct bm_identity_mgr *m, const char *spiffe_id);
void bm_svid_put(struct bm_svid *s);
/* Add a root to the trust bundle: the CSR mode's root, or the new root
 * during a root rotation (old and new trusted side by side). 0 or -errno. */
int bm_identity_trust_add(struct bm_identity_mgr *m, X509 *root);
/* Is td our trust domain or one of its aliases? */
int bm_identity_td_trusted(const struct bm_identity_mgr *m, const char *td);

/* The SVIDs held now, for the metrics: every one's SPIFFE ID and notAfter,
 * in issue order, *n of them in one block to free() (the ids included);
 * NULL with *n = 0 when none are held or out of memory. */
struct bm_svid_expiry {
	const char *id;
	time_t not_after;
};
struct bm_svid_expiry *bm_identity_expiries(struct bm_identity_mgr *m, size_t *n);

/* For `meshctl cert ls`: {"trust_domain","ttl_seconds","identities":[{
 * "spiffe_id","serial","not_before","not_after","refresh_at"}]}. */
json_t *bm_identity_list_json(struct bm_identity_mgr *m);

#endif
