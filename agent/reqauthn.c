/*
 * RequestAuthentication for the HTTP path: token location, issuer choice and
 * JWT validation per request, and the JWKS cache behind it (reference §5).
 *
 * The cache holds immutable parsed JWKS objects (struct bm_jwks, reference
 * counted). Worker threads take a reference under the cache mutex and verify
 * without it; the fetch thread swaps a new object in under the mutex, so a
 * verification in progress keeps the keys it started with.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "authz.h"
#include "curlshim.h"
#include "log.h"
#include "reqauthn.h"

/* ---- JWKS cache ------------------------------------------------------------ */

#define JWKS_MAX_BYTES   (1u << 20)
#define JWKS_RETRY_MAX_S 60

struct jwks_entry {
	char *key;              /* the jwksUri, or the inline jwks text itself */
	int is_uri;
	int used;               /* named by the configuration at the last sync */
	struct bm_jwks *keys;   /* NULL until fetched / when invalid */
	time_t fetched;         /* monotonic seconds of the last good fetch */
	time_t next;            /* monotonic seconds the next fetch is due */
	unsigned failures;
	char err[192];
};

struct bm_jwks_cache {
	pthread_mutex_t lock;
	pthread_cond_t cond;    /* CLOCK_MONOTONIC: a new uri or stop */
	pthread_t thread;
	int thread_on, stop;
	unsigned refresh_s, timeout_s;
	struct jwks_entry *e;
	size_t n, cap;
};

static time_t mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

struct bm_jwks_cache *bm_jwks_cache_new(unsigned refresh_s, unsigned timeout_s)
{
	struct bm_jwks_cache *c = calloc(1, sizeof(*c));
	pthread_condattr_t ca;

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	c->refresh_s = refresh_s ? refresh_s : 300;
	c->timeout_s = timeout_s ? timeout_s : 5;
	return c;
}

static void entry_drop(struct jwks_entry *e)
{
	bm_jwks_put(e->keys);
	free(e->key);
}

void bm_jwks_cache_free(struct bm_jwks_cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (c->thread_on)
		pthread_join(c->thread, NULL);
	for (size_t i = 0; i < c->n; i++)
		entry_drop(&c->e[i]);
	free(c->e);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Under c->lock. */
static struct jwks_entry *entry_find(struct bm_jwks_cache *c, const char *key, int is_uri)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->e[i].is_uri == is_uri && !strcmp(c->e[i].key, key))
			return &c->e[i];
	return NULL;
}

/* Under c->lock. */
static struct jwks_entry *entry_add(struct bm_jwks_cache *c, const char *key, int is_uri)
{
	struct jwks_entry *e;

	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 8;
		struct jwks_entry *ne = realloc(c->e, cap * sizeof(*ne));

		if (!ne)
			return NULL;
		c->e = ne;
		c->cap = cap;
	}
	e = &c->e[c->n];
	memset(e, 0, sizeof(*e));
	e->key = strdup(key);
	if (!e->key)
		return NULL;
	e->is_uri = is_uri;
	c->n++;
	return e;
}

/* Under c->lock: inline jwks are parsed once, here. */
static void entry_parse_inline(struct jwks_entry *e)
{
	int err = bm_jwks_parse(e->key, &e->keys);

	if (err)
		snprintf(e->err, sizeof(e->err), "inline jwks: %s",
			 err == -ENOKEY ? "no usable RS256/ES256 key" : "not a JWKS document");
}

struct fetch_buf {
	char *p;
	size_t n;
};

static size_t fetch_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct fetch_buf *b = arg;
	size_t n = size * nmemb;
	char *np;

	if (b->n + n > JWKS_MAX_BYTES)
		return 0; /* curl reports a write error */
	np = realloc(b->p, b->n + n + 1);
	if (!np)
		return 0;
	memcpy(np + b->n, data, n);
	b->p = np;
	b->n += n;
	b->p[b->n] = 0;
	return n;
}

/* Blocking fetch and parse (fetch thread, no lock held). */
static int fetch_jwks(const char *uri, unsigned timeout_s, struct bm_jwks **out, char *err,
		      size_t len)
{
	struct fetch_buf b = { 0 };
	CURL *h;
	CURLcode cc;
	int rc;

	rc = bm_curl_load();
	if (rc) {
		snprintf(err, len, "%s", bm_curl_error());
		return rc;
	}
	h = bm_curl_easy_init();
	if (!h) {
		snprintf(err, len, "curl_easy_init failed");
		return -ENOMEM;
	}
	bm_curl_setopt_ptr(h, CURLOPT_URL, uri);
	bm_curl_setopt_ptr(h, CURLOPT_PROTOCOLS_STR, "http,https,file");
	bm_curl_setopt_long(h, CURLOPT_TIMEOUT, (long)timeout_s);
	bm_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1L);
	bm_curl_setopt_long(h, CURLOPT_FAILONERROR, 1L);
	bm_curl_setopt_write(h, CURLOPT_WRITEFUNCTION, fetch_write);
	bm_curl_setopt_ptr(h, CURLOPT_WRITEDATA, &b);
	cc = bm_curl_easy_perform(h);
	bm_curl_easy_cleanup(h);
	if (cc != CURLE_OK) {
		snprintf(err, len, "fetch: %s", bm_curl_easy_strerror(cc));
		free(b.p);
		return -EIO;
	}
	rc = bm_jwks_parse(b.p ? b.p : "", out);
	if (rc)
		snprintf(err, len, "%s", rc == -ENOKEY ? "no usable RS256/ES256 key" : "not a JWKS document");
	free(b.p);
	return rc;
}

static void *fetch_thread(void *arg)
{
	struct bm_jwks_cache *c = arg;

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		time_t now = mono_s(), wake = now + 60;
		struct jwks_entry *due = NULL;
		struct bm_jwks *keys = NULL;
		struct timespec ts;
		char err[128] = "", *uri;
		int rc;

		for (size_t i = 0; i < c->n; i++) {
			if (!c->e[i].is_uri)
				continue;
			if (c->e[i].next <= now) {
				due = &c->e[i];
				break;
			}
			if (c->e[i].next < wake)
				wake = c->e[i].next;
		}
		if (!due) {
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += wake - now;
			pthread_cond_timedwait(&c->cond, &c->lock, &ts);
			continue;
		}
		uri = strdup(due->key);
		due->next = now + c->timeout_s + 1; /* in flight: not picked again */
		pthread_mutex_unlock(&c->lock);
		rc = uri ? fetch_jwks(uri, c->timeout_s, &keys, err, sizeof(err)) : -ENOMEM;
		pthread_mutex_lock(&c->lock);
		now = mono_s();
		/* the configuration may have dropped it meanwhile */
		due = uri ? entry_find(c, uri, 1) : NULL;
		if (due && !rc) {
			bm_jwks_put(due->keys);
			due->keys = keys;
			keys = NULL;
			due->fetched = now;
			due->next = now + c->refresh_s;
			due->failures = 0;
			due->err[0] = 0;
		} else if (due) {
			unsigned back = 1u << (due->failures < 6 ? due->failures : 6);

			due->failures++;
			due->next = now + (back < JWKS_RETRY_MAX_S ? back : JWKS_RETRY_MAX_S);
			snprintf(due->err, sizeof(due->err), "jwksUri %.60s: %.100s", uri, err);
			if (due->failures == 1)
				bm_log("request authentication: %s (retrying)", due->err);
			if (due->keys && now - due->fetched > 2 * (time_t)c->refresh_s) {
				bm_jwks_put(due->keys); /* too stale to trust any longer */
				due->keys = NULL;
			}
		}
		bm_jwks_put(keys);
		free(uri);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Under c->lock. */
static void thread_kick(struct bm_jwks_cache *c)
{
	if (!c->thread_on && !c->stop) {
		if (pthread_create(&c->thread, NULL, fetch_thread, c)) {
			bm_log("request authentication: cannot start the JWKS fetch thread");
			return;
		}
		c->thread_on = 1;
	}
	pthread_cond_broadcast(&c->cond);
}

int bm_jwks_cache_sync(struct bm_jwks_cache *c, const json_t *resources)
{
	int uris = 0, err = 0;
	size_t i, j, w;
	json_t *res, *rule;

	pthread_mutex_lock(&c->lock);
	for (i = 0; i < c->n; i++)
		c->e[i].used = 0;
	json_array_foreach(resources, i, res) {
		const char *kind = json_string_value(json_object_get(res, "kind"));

		if (!kind || strcmp(kind, "RequestAuthentication"))
			continue;
		json_array_foreach(json_object_get(json_object_get(res, "spec"), "jwtRules"), j, rule) {
			const char *inl = json_string_value(json_object_get(rule, "jwks"));
			const char *uri = json_string_value(json_object_get(rule, "jwksUri"));
			const char *key = inl ? inl : uri;
			struct jwks_entry *e;

			if (!key)
				continue;
			e = entry_find(c, key, !inl);
			if (!e) {
				e = entry_add(c, key, !inl);
				if (!e) {
					err = -ENOMEM;
					continue;
				}
				if (inl)
					entry_parse_inline(e);
			}
			e->used = 1;
			uris += !inl;
		}
	}
	for (i = 0, w = 0; i < c->n; i++) {
		if (c->e[i].used)
			c->e[w++] = c->e[i];
		else
			entry_drop(&c->e[i]);
	}
	c->n = w;
	if (uris)
		thread_kick(c);
	pthread_mutex_unlock(&c->lock);
	return err;
}

struct bm_jwks *bm_jwks_cache_keys(struct bm_jwks_cache *c, const json_t *rule, char *err,
				   size_t len)
{
	const char *inl = json_string_value(json_object_get(rule, "jwks"));
	const char *uri = json_string_value(json_object_get(rule, "jwksUri"));
	struct bm_jwks *keys = NULL;
	struct jwks_entry *e;

	if (!inl && !uri) {
		snprintf(err, len, "issuer %.80s: no jwks or jwksUri (OIDC discovery is not supported)",
			 json_string_value(json_object_get(rule, "issuer")) ?: "");
		return NULL;
	}
	pthread_mutex_lock(&c->lock);
	e = entry_find(c, inl ? inl : uri, !inl);
	if (!e) {
		/* not synced yet (or no sync at all): learn it now */
		e = entry_add(c, inl ? inl : uri, !inl);
		if (e) {
			e->used = 1;
			if (inl)
				entry_parse_inline(e);
			else
				thread_kick(c);
		}
	}
	if (e && e->keys) {
		keys = e->keys;
		bm_jwks_get(keys);
	} else if (e && e->err[0]) {
		snprintf(err, len, "%s", e->err);
	} else {
		snprintf(err, len, "Jwks remote fetch is not done yet");
	}
	pthread_mutex_unlock(&c->lock);
	return keys;
}

/* ---- token location -------------------------------------------------------------- */

enum loc_kind { LOC_HEADER, LOC_PARAM, LOC_COOKIE };

struct loc {
	int kind;               /* enum loc_kind */
	const char *name;
	const char *prefix;     /* headers only; NULL = none */
	int is_default;         /* Authorization: Bearer / access_token */
};

#define MAX_RULES  64
#define MAX_TOKENS 8

struct found {
	struct loc loc;
	const char *tok;
	size_t len;
	uint64_t rules;         /* bit i: rule i names this location */
};

static const char *hdr_get(const struct bm_reqauthn_req *r, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < r->n_hdr; i++) {
		const struct bm_http_hdr *h = &r->hdr[i];
		size_t hl = h->name_len ? h->name_len : strlen(h->name);

		if (hl == nl && !strncasecmp(h->name, name, nl)) {
			*vlen = h->name_len ? h->value_len : strlen(h->value);
			return h->value;
		}
	}
	return NULL;
}

/* name=value in a '&'- (query) or ';'- (cookie) separated list. */
static const char *kv_get(const char *s, size_t slen, char sep, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *end = s + slen;

	while (s && s < end) {
		const char *next = memchr(s, sep, (size_t)(end - s));
		const char *item_end = next ? next : end;

		while (s < item_end && *s == ' ')
			s++;
		if ((size_t)(item_end - s) > nl && !strncmp(s, name, nl) && s[nl] == '=') {
			*vlen = (size_t)(item_end - s - nl - 1);
			return s + nl + 1;
		}
		s = next ? next + 1 : end;
	}
	return NULL;
}

static void trim(const char **s, size_t *len)
{
	while (*len && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

/* 0 and *tok (may be NULL: nothing there), or -EINVAL: a configured prefix
 * is missing (Istio: "considered invalid"). The default Authorization
 * location skips other schemes (Basic, ...) as Envoy does. */
static int extract(const struct bm_reqauthn_req *r, const struct loc *l, const char **tok,
		   size_t *len)
{
	const char *v = NULL;
	size_t vl = 0;

	*tok = NULL;
	if (l->kind == LOC_HEADER) {
		v = hdr_get(r, l->name, &vl);
		if (v && l->prefix && *l->prefix) {
			size_t pl = strlen(l->prefix);

			if (vl < pl || strncmp(v, l->prefix, pl))
				return l->is_default ? 0 : -EINVAL;
			v += pl;
			vl -= pl;
		}
	} else if (l->kind == LOC_PARAM && r->query) {
		v = kv_get(r->query, strlen(r->query), '&', l->name, &vl);
	} else if (l->kind == LOC_COOKIE) {
		const char *ck = hdr_get(r, "cookie", &vl);

		v = ck ? kv_get(ck, vl, ';', l->name, &vl) : NULL;
	}
	if (!v)
		return 0;
	trim(&v, &vl);
	if (vl) {
		*tok = v;
		*len = vl;
	}
	return 0;
}

static size_t rule_locations(const json_t *rule, struct loc *out, size_t max)
{
	size_t n = 0, i;
	json_t *x;

	json_array_foreach(json_object_get(rule, "fromHeaders"), i, x)
		if (n < max && json_string_value(json_object_get(x, "name")))
			out[n++] = (struct loc){ LOC_HEADER, json_string_value(json_object_get(x, "name")),
						 json_string_value(json_object_get(x, "prefix")), 0 };
	json_array_foreach(json_object_get(rule, "fromParams"), i, x)
		if (n < max && json_string_value(x))
			out[n++] = (struct loc){ LOC_PARAM, json_string_value(x), NULL, 0 };
	json_array_foreach(json_object_get(rule, "fromCookies"), i, x)
		if (n < max && json_string_value(x))
			out[n++] = (struct loc){ LOC_COOKIE, json_string_value(x), NULL, 0 };
	if (!n && max >= 2) {
		out[n++] = (struct loc){ LOC_HEADER, "authorization", "Bearer ", 1 };
		out[n++] = (struct loc){ LOC_PARAM, "access_token", NULL, 1 };
	}
	return n;
}

static int loc_eq(const struct loc *a, const struct loc *b)
{
	return a->kind == b->kind &&
	       (a->kind == LOC_HEADER ? !strcasecmp(a->name, b->name) : !strcmp(a->name, b->name));
}

/* ---- the check ---------------------------------------------------------------------- */

static int is_cors_preflight(const struct bm_reqauthn_req *r)
{
	size_t l;

	return r->method && !strcmp(r->method, "OPTIONS") && hdr_get(r, "origin", &l) &&
	       hdr_get(r, "access-control-request-method", &l);
}

static int invalid(const struct bm_reqauthn_req *r, struct bm_reqauthn_result *out, const char *why)
{
	snprintf(out->err, sizeof(out->err), "%s", why);
	snprintf(out->www_authenticate, sizeof(out->www_authenticate),
		 "Bearer realm=\"http://%.200s%.200s\", error=\"invalid_token\"",
		 r->host ? r->host : "", r->path ? r->path : "/");
	return -EPERM;
}

static void add_strip(struct bm_reqauthn_result *out, const struct loc *l)
{
	if (l->kind == LOC_HEADER && out->n_strip_header < BM_REQAUTHN_MAX_STRIP) {
		char *h = out->strip_header[out->n_strip_header++];

		snprintf(h, sizeof(out->strip_header[0]), "%s", l->name);
		for (; *h; h++) /* header names are compared lower case */
			*h = (char)tolower((unsigned char)*h);
	} else if (l->kind == LOC_PARAM && out->n_strip_param < BM_REQAUTHN_MAX_STRIP)
		snprintf(out->strip_param[out->n_strip_param++], sizeof(out->strip_param[0]), "%s",
			 l->name);
	/* cookies are forwarded as they are */
}

/* Validate one found token against the rule of its issuer. */
static int check_token(struct bm_jwks_cache *c, const json_t *const *rules, size_t n_rules,
		       const struct found *f, const struct bm_reqauthn_req *r, time_t now,
		       struct bm_reqauthn_result *out)
{
	json_t *hdr, *pl, *claims = NULL;
	const json_t *rule = NULL;
	const char *aud[32];
	size_t n_aud = 0, i;
	struct bm_jwks *keys;
	char why[160];
	json_t *a;
	int rc;

	if (bm_jwt_peek(f->tok, f->len, &hdr, &pl))
		return invalid(r, out, "Jwt is not in the form of Header.Payload.Signature");
	for (i = 0; i < n_rules && !rule; i++) {
		const char *iss = json_string_value(json_object_get(pl, "iss"));
		const char *want = json_string_value(json_object_get(rules[i], "issuer"));

		if ((f->rules >> i & 1) && iss && want && !strcmp(iss, want))
			rule = rules[i];
	}
	json_decref(hdr);
	json_decref(pl);
	if (!rule)
		return invalid(r, out, "Jwt issuer is not configured");
	keys = bm_jwks_cache_keys(c, rule, why, sizeof(why));
	if (!keys)
		return invalid(r, out, why);
	json_array_foreach(json_object_get(rule, "audiences"), i, a)
		if (json_string_value(a) && n_aud < sizeof(aud) / sizeof(aud[0]))
			aud[n_aud++] = json_string_value(a);
	rc = bm_jwt_verify(f->tok, f->len, keys, json_string_value(json_object_get(rule, "issuer")),
			   aud, n_aud, now, &claims, why, sizeof(why));
	bm_jwks_put(keys);
	if (rc)
		return invalid(r, out, why);
	if (!out->claims) {
		snprintf(out->principal, sizeof(out->principal), "%s/%s",
			 json_string_value(json_object_get(claims, "iss")) ?: "",
			 json_string_value(json_object_get(claims, "sub")) ?: "");
		out->claims = json_incref(claims);
	}
	if (!json_is_true(json_object_get(rule, "forwardOriginalToken")))
		add_strip(out, &f->loc);
	json_decref(claims);
	return 0;
}

int bm_reqauthn_check(struct bm_jwks_cache *c, const json_t *resources, const char *root_ns,
		      const char *wl_ns, const json_t *wl_labels, const struct bm_reqauthn_req *r,
		      time_t now, struct bm_reqauthn_result *out)
{
	const json_t *rules[MAX_RULES];
	struct found f[MAX_TOKENS];
	size_t n_rules = 0, n_found = 0, i, j;
	json_t *res, *rule;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	json_array_foreach(resources, i, res) {
		const char *kind = json_string_value(json_object_get(res, "kind"));

		if (!kind || strcmp(kind, "RequestAuthentication") ||
		    !bm_authz_applies(res, root_ns, wl_ns, wl_labels))
			continue;
		json_array_foreach(json_object_get(json_object_get(res, "spec"), "jwtRules"), j, rule)
			if (n_rules < MAX_RULES)
				rules[n_rules++] = rule;
	}
	if (!n_rules || is_cors_preflight(r))
		return 0;
	for (i = 0; i < n_rules; i++) {
		struct loc locs[16];
		size_t n = rule_locations(rules[i], locs, 16);

		for (size_t k = 0; k < n; k++) {
			const char *tok;
			size_t len = 0, m;

			if (extract(r, &locs[k], &tok, &len))
				return invalid(r, out, locs[k].kind == LOC_HEADER ?
					       "Jwt header prefix is missing" : "Jwt is missing");
			if (!tok)
				continue;
			for (m = 0; m < n_found; m++)
				if (loc_eq(&f[m].loc, &locs[k]))
					break;
			if (m == n_found) {
				if (n_found == MAX_TOKENS)
					continue;
				f[m] = (struct found){ locs[k], tok, len, 0 };
				n_found++;
			}
			f[m].rules |= 1ull << i;
		}
	}
	for (i = 0; i < n_found && !rc; i++)
		rc = check_token(c, rules, n_rules, &f[i], r, now, out);
	if (rc) {
		json_decref(out->claims);
		out->claims = NULL;
		out->principal[0] = 0;
		out->n_strip_header = out->n_strip_param = 0;
	}
	return rc;
}

void bm_reqauthn_result_free(struct bm_reqauthn_result *out)
{
	json_decref(out->claims);
	out->claims = NULL;
}
