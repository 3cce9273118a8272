/* The node's identities: issue, rotate at half life, drop when unused.
 * See identity.h for the threading contract and docs/identity.md. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <openssl/err.h>
#include "identity.h"
#include "log.h"

/* A node runs workloads of tens of service accounts, not thousands: a flat
 * array searched linearly is the cheapest structure for the handshake path. */
struct bm_identity_ent {
	struct bm_svid *svid; /* current; swapped under m->lock on rotation */
	int keep;             /* sync's mark, touched by the writer thread only */
};

static int ca_issue(void *arg, const char *spiffe_id, EVP_PKEY *key, long ttl, time_t now, X509 **cert,
		    STACK_OF(X509) **chain)
{
	(void)chain; /* the root signs directly: nothing between leaf and root */
	return bm_ca_issue(arg, spiffe_id, key, ttl, now, cert);
}

void bm_svid_put(struct bm_svid *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL))
		return;
	EVP_PKEY_free(s->key);
	X509_free(s->cert);
	sk_X509_pop_free(s->chain, X509_free);
	free(s);
}

static int svid_new(struct bm_identity_mgr *m, const char *id, time_t now, struct bm_svid **out)
{
	struct bm_svid *s = calloc(1, sizeof(*s));
	int err = -ENOMEM;

	if (!s)
		return -ENOMEM;
	s->refs = 1;
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->key = EVP_EC_gen("P-256");
	if (!s->key)
		goto err_free;
	err = m->issue(m->issue_arg, id, s->key, m->ttl, now, &s->cert, &s->chain);
	if (err)
		goto err_free;
	err = -EINVAL;
	/* An external issuer's answer is checked, not trusted: right key, right ID. */
	{
		char san[BM_SPIFFE_ID_MAX + 1];

		if (X509_check_private_key(s->cert, s->key) != 1 || bm_x509_uri_san(s->cert, san, sizeof(san)) ||
		    strcmp(san, id))
			goto err_free;
	}
	if (!s->chain && !(s->chain = sk_X509_new_null())) {
		err = -ENOMEM;
		goto err_free;
	}
	if (bm_x509_serial_hex(s->cert, s->serial, sizeof(s->serial)) ||
	    bm_x509_time(X509_get0_notBefore(s->cert), &s->not_before) ||
	    bm_x509_time(X509_get0_notAfter(s->cert), &s->not_after) || s->not_after <= now)
		goto err_free;
	s->issued = now;
	/* Half of the lifetime counted from issuance, not from the backdated
	 * NotBefore: with a 10 s test TTL, NotBefore + lifetime/2 would already
	 * be in the past. For 24 h this is Istio's and ztunnel's ~12 h. The
	 * actual NotAfter is used because the CA may clamp it to its own. */
	s->refresh_at = now + (s->not_after - now) / 2;
	*out = s;
	return 0;
err_free:
	/* -EAGAIN: a remote issuer backing off after a failure it reported. */
	if (err != -EAGAIN)
		bm_log("identity: cannot issue an SVID for %s: %s", id, strerror(-err));
	ERR_clear_error();
	bm_svid_put(s);
	return err;
}

int bm_identity_init(struct bm_identity_mgr *m, const struct bm_identity_opts *o)
{
	const char *td = o->trust_domain;
	int err = -EINVAL;

	memset(m, 0, sizeof(*m));
	if (!td)
		td = o->ca ? o->ca->trust_domain : BM_TRUST_DOMAIN_DEFAULT;
	if (bm_spiffe_td_valid(td) || (o->ca && strcmp(td, o->ca->trust_domain)) || (!o->ca && !o->issue)) {
		bm_log("identity: bad trust domain '%s' or no issuer", td);
		return -EINVAL;
	}
	m->ttl = o->ttl ? o->ttl : BM_SVID_TTL_DEFAULT;
	if (m->ttl < 2 || m->ttl > BM_SVID_TTL_MAX) {
		bm_log("identity: certificate TTL %lds out of range [2, %ld]", m->ttl, BM_SVID_TTL_MAX);
		return -EINVAL;
	}
	snprintf(m->trust_domain, sizeof(m->trust_domain), "%s", td);
	m->issue = o->ca ? ca_issue : o->issue;
	m->issue_arg = o->ca ? o->ca : o->issue_arg;
	if (pthread_mutex_init(&m->lock, NULL))
		return -ENOMEM;
	err = -ENOMEM;
	m->trust = X509_STORE_new();
	if (!m->trust)
		goto err_mutex;
	if (o->ca && !X509_STORE_add_cert(m->trust, o->ca->cert))
		goto err_store;
	if (o->n_td_aliases) {
		m->td_aliases = calloc(o->n_td_aliases, sizeof(char *));
		if (!m->td_aliases)
			goto err_store;
		for (size_t i = 0; i < o->n_td_aliases; i++) {
			err = bm_spiffe_td_valid(o->td_aliases[i]);
			if (err) {
				bm_log("identity: trust domain alias '%s' is not a valid trust domain",
				       o->td_aliases[i]);
				goto err_aliases;
			}
			m->td_aliases[i] = strdup(o->td_aliases[i]);
			m->n_td_aliases = i + 1;
			err = -ENOMEM;
			if (!m->td_aliases[i])
				goto err_aliases;
		}
	}
	return 0;
err_aliases:
	for (size_t i = 0; i < m->n_td_aliases; i++)
		free(m->td_aliases[i]);
	free(m->td_aliases);
err_store:
	X509_STORE_free(m->trust);
err_mutex:
	pthread_mutex_destroy(&m->lock);
	memset(m, 0, sizeof(*m));
	return err;
}

void bm_identity_free(struct bm_identity_mgr *m)
{
	for (size_t i = 0; i < m->n; i++)
		bm_svid_put(m->ents[i].svid);
	free(m->ents);
	for (size_t i = 0; i < m->n_td_aliases; i++)
		free(m->td_aliases[i]);
	free(m->td_aliases);
	X509_STORE_free(m->trust);
	pthread_mutex_destroy(&m->lock);
	memset(m, 0, sizeof(*m));
}

int bm_identity_trust_add(struct bm_identity_mgr *m, X509 *root)
{
	/* X509_STORE locks itself; handshakes in flight see the old or new set. */
	if (!X509_STORE_add_cert(m->trust, root)) {
		ERR_clear_error();
		return -EINVAL;
	}
	return 0;
}

int bm_identity_td_trusted(const struct bm_identity_mgr *m, const char *td)
{
	if (!strcmp(td, m->trust_domain))
		return 1;
	for (size_t i = 0; i < m->n_td_aliases; i++)
		if (!strcmp(td, m->td_aliases[i]))
			return 1;
	return 0;
}

static ssize_t find(const struct bm_identity_mgr *m, const char *id)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->ents[i].svid->id, id))
			return (ssize_t)i;
	return -1;
}

/* "NS/SA" -> spiffe://td/ns/NS/sa/SA */
static int pair_to_id(const struct bm_identity_mgr *m, const char *pair, char *id, size_t len)
{
	char ns[256];
	const char *slash = strchr(pair, '/');

	if (!slash || (size_t)(slash - pair) >= sizeof(ns))
		return -EINVAL;
	memcpy(ns, pair, slash - pair);
	ns[slash - pair] = '\0';
	return bm_spiffe_id_build(m->trust_domain, ns, slash + 1, id, len);
}

static int append(struct bm_identity_mgr *m, struct bm_svid *s)
{
	int err = 0;

	pthread_mutex_lock(&m->lock);
	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 8;
		struct bm_identity_ent *e = realloc(m->ents, cap * sizeof(*e));

		if (!e) {
			err = -ENOMEM;
			goto out;
		}
		m->ents = e;
		m->cap = cap;
	}
	m->ents[m->n].svid = s;
	m->ents[m->n].keep = 1;
	m->n++;
out:
	pthread_mutex_unlock(&m->lock);
	return err;
}

int bm_identity_sync(struct bm_identity_mgr *m, const char *const *ns_sa_pairs, size_t n, time_t now)
{
	char id[BM_SPIFFE_ID_MAX + 1];
	int first_err = 0, issued = 0;
	size_t w = 0;

	for (size_t i = 0; i < m->n; i++)
		m->ents[i].keep = 0;
	for (size_t i = 0; i < n; i++) {
		struct bm_svid *s;
		ssize_t at;
		int err;

		err = pair_to_id(m, ns_sa_pairs[i], id, sizeof(id));
		if (err) {
			bm_log("identity: '%s' is not a valid NAMESPACE/SERVICEACCOUNT", ns_sa_pairs[i]);
			first_err = first_err ? first_err : err;
			continue;
		}
		at = find(m, id);
		if (at >= 0) {
			m->ents[at].keep = 1;
			continue;
		}
		/* Issued outside the lock: handshakes on workers do not wait for a
		 * key generation and a signature. */
		err = svid_new(m, id, now, &s);
		if (!err) {
			err = append(m, s);
			if (err)
				bm_svid_put(s);
		}
		if (err) {
			if (err != -EAGAIN)
				__atomic_add_fetch(&m->issue_errors, 1, __ATOMIC_RELAXED);
			first_err = first_err ? first_err : err;
			continue;
		}
		__atomic_add_fetch(&m->issued_total, 1, __ATOMIC_RELAXED);
		issued++;
	}
	/* Drop identities no workload here uses any more. Connections using
	 * them keep their own references (SSL holds the key and cert). */
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n; i++) {
		if (m->ents[i].keep)
			m->ents[w++] = m->ents[i];
		else
			bm_svid_put(m->ents[i].svid);
	}
	m->n = w;
	pthread_mutex_unlock(&m->lock);
	return first_err ? first_err : issued;
}

int bm_identity_rotate_due(struct bm_identity_mgr *m, time_t now)
{
	int first_err = 0, rotated = 0;

	/* Only this (writer) thread changes m->ents, so reading it unlocked here
	 * is safe; the lock is taken just to publish. */
	for (size_t i = 0; i < m->n; i++) {
		struct bm_svid *old = m->ents[i].svid, *s;
		int err;

		if (old->refresh_at > now)
			continue;
		err = svid_new(m, old->id, now, &s);
		if (err) {
			if (err != -EAGAIN)
				__atomic_add_fetch(&m->issue_errors, 1, __ATOMIC_RELAXED);
			first_err = first_err ? first_err : err;
			continue;
		}
		pthread_mutex_lock(&m->lock);
		m->ents[i].svid = s;
		pthread_mutex_unlock(&m->lock);
		bm_svid_put(old);
		__atomic_add_fetch(&m->rotated_total, 1, __ATOMIC_RELAXED);
		rotated++;
	}
	return first_err ? first_err : rotated;
}

time_t bm_identity_next_refresh(struct bm_identity_mgr *m)
{
	time_t next = 0;

	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n; i++)
		if (!next || m->ents[i].svid->refresh_at < next)
			next = m->ents[i].svid->refresh_at;
	pthread_mutex_unlock(&m->lock);
	return next;
}

struct bm_svid *bm_identity_get(struct bm_identity_mgr *m, const char *spiffe_id)
{
	struct bm_svid *s = NULL;
	ssize_t at;

	pthread_mutex_lock(&m->lock);
	at = find(m, spiffe_id);
	if (at >= 0) {
		s = m->ents[at].svid;
		__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&m->lock);
	if (!s)
		errno = ENOENT;
	return s;
}

struct bm_svid_expiry *bm_identity_expiries(struct bm_identity_mgr *m, size_t *n)
{
	struct bm_svid_expiry *out = NULL;
	size_t chars = 0;
	char *pool;

	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n; i++)
		chars += strlen(m->ents[i].svid->id) + 1;
	/* One block: the entries, then their ids. */
	if (m->n)
		out = malloc(m->n * sizeof(*out) + chars);
	*n = out ? m->n : 0;
	pool = out ? (char *)(out + m->n) : NULL;
	for (size_t i = 0; i < *n; i++) {
		size_t len = strlen(m->ents[i].svid->id) + 1;

		memcpy(pool, m->ents[i].svid->id, len);
		out[i].id = pool;
		out[i].not_after = m->ents[i].svid->not_after;
		pool += len;
	}
	pthread_mutex_unlock(&m->lock);
	return out;
}

json_t *bm_identity_list_json(struct bm_identity_mgr *m)
{
	json_t *list = json_array(), *out;
	char nb[32], na[32], ra[32];

	if (!list)
		return NULL;
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n; i++) {
		const struct bm_svid *s = m->ents[i].svid;

		bm_time_rfc3339(s->not_before, nb, sizeof(nb));
		bm_time_rfc3339(s->not_after, na, sizeof(na));
		bm_time_rfc3339(s->refresh_at, ra, sizeof(ra));
		json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s,s:s}", "spiffe_id", s->id, "serial",
						      s->serial, "not_before", nb, "not_after", na,
						      "refresh_at", ra));
	}
	pthread_mutex_unlock(&m->lock);
	out = json_pack("{s:s,s:I,s:I,s:I,s:o}", "trust_domain", m->trust_domain, "ttl_seconds",
			(json_int_t)m->ttl, "rotated_total",
			(json_int_t)__atomic_load_n(&m->rotated_total, __ATOMIC_RELAXED), "issue_errors",
			(json_int_t)__atomic_load_n(&m->issue_errors, __ATOMIC_RELAXED), "identities", list);
	return out;
}
