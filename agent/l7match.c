/*
 * L7 request matching and the request rewrites that follow from a match:
 * Istio StringMatch, HTTPMatchRequest evaluation and first-match route
 * selection (§1.2, §1.3), weighted destination choice (§1.4), rewrite.uri
 * and redirect (§1.9), header operations, and RFC 3986 path normalization.
 * Semantics: ../shared/docs/reference/istio-api.md.
 *
 * Everything here runs on the workers concurrently against one published
 * configuration: compiled regexes are shared read-only, and PCRE2 match data
 * (the only mutable matching state) is per thread.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "l7.h"

/* Istio rejects longer regexes (validateStringMatch). */
#define SM_REGEX_MAX 1024
/* RE2 runs in linear time; PCRE2 backtracks. Bound the work one header can
 * cost a worker instead of trusting every pasted regex. */
#define SM_MATCH_LIMIT 200000
#define SM_DEPTH_LIMIT 10000

static pthread_once_t sm_once = PTHREAD_ONCE_INIT;
static pthread_key_t sm_md_key;
static pcre2_match_context *sm_mctx;
static int sm_key_ok;

static void sm_md_free(void *md)
{
	pcre2_match_data_free(md);
}

static void sm_init(void)
{
	sm_key_ok = pthread_key_create(&sm_md_key, sm_md_free) == 0;
	sm_mctx = pcre2_match_context_create(NULL);
	if (sm_mctx) {
		pcre2_set_match_limit(sm_mctx, SM_MATCH_LIMIT);
		pcre2_set_depth_limit(sm_mctx, SM_DEPTH_LIMIT);
	}
}

/* This thread's match data: one ovector pair is enough to learn whether the
 * whole subject matched, whatever the pattern's capture count. Freed by the
 * key destructor when the thread exits. */
static pcre2_match_data *sm_match_data(void)
{
	pcre2_match_data *md;

	pthread_once(&sm_once, sm_init);
	if (!sm_key_ok)
		return NULL;
	md = pthread_getspecific(sm_md_key);
	if (!md) {
		md = pcre2_match_data_create(1, NULL);
		if (md && pthread_setspecific(sm_md_key, md)) {
			pcre2_match_data_free(md);
			md = NULL;
		}
	}
	return md;
}

static int sm_regex_match(const pcre2_code *re, const char *v, size_t len)
{
	pcre2_match_data *md = sm_match_data();
	pcre2_match_data *own = NULL;
	int rc;

	if (!md) {
		own = md = pcre2_match_data_create(1, NULL);
		if (!md)
			return 0;
	}
	rc = pcre2_match(re, (PCRE2_SPTR)v, len, 0, 0, md, sm_mctx);
	pcre2_match_data_free(own);
	/* 0 = matched but the ovector was too small for the captures */
	return rc >= 0;
}

int bm_strmatch_compile(const json_t *sm, int icase, struct bm_strmatch *out, char *err, size_t len)
{
	const char *key, *s = NULL;
	const json_t *v;
	int kind = BM_SM_PRESENT, n = 0;

	memset(out, 0, sizeof(*out));
	if (!sm)
		return 0;   /* no matcher */
	if (!json_is_object(sm)) {
		snprintf(err, len, "StringMatch must be an object");
		return -EINVAL;
	}
	json_object_foreach((json_t *)sm, key, v) {
		if (!strcmp(key, "exact"))
			kind = BM_SM_EXACT;
		else if (!strcmp(key, "prefix"))
			kind = BM_SM_PREFIX;
		else if (!strcmp(key, "regex"))
			kind = BM_SM_REGEX;
		else {
			snprintf(err, len, "StringMatch: unknown field '%s'", key);
			return -EINVAL;
		}
		if (++n > 1) {
			snprintf(err, len, "StringMatch: only one of exact, prefix, regex");
			return -EINVAL;
		}
		s = json_string_value(v);
		if (!s) {
			snprintf(err, len, "StringMatch.%s must be a string", key);
			return -EINVAL;
		}
	}
	if (kind == BM_SM_PREFIX && !*s) {
		snprintf(err, len, "StringMatch.prefix must not be empty");
		return -EINVAL;
	}
	if (kind == BM_SM_REGEX) {
		if (!*s) {
			snprintf(err, len, "StringMatch.regex must not be empty");
			return -EINVAL;
		}
		if (strlen(s) > SM_REGEX_MAX) {
			snprintf(err, len, "StringMatch.regex longer than %d characters", SM_REGEX_MAX);
			return -EINVAL;
		}
		if (!strcmp(s, "*"))   /* Istio's presence form */
			kind = BM_SM_PRESENT;
	}
	out->kind = (uint8_t)kind;
	out->icase = !!icase;
	if (kind == BM_SM_PRESENT)
		return 0;
	out->s = strdup(s);
	if (!out->s) {
		snprintf(err, len, "out of memory");
		return -ENOMEM;
	}
	if (kind == BM_SM_REGEX) {
		/* RE2 semantics as Envoy applies them: a full match (anchored at
		 * both ends, with backtracking into alternatives), UTF-8 aware
		 * without trusting the subject to be valid UTF-8, and `$` only at
		 * the very end. */
		uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF |
				PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY |
				PCRE2_NEVER_BACKSLASH_C;
		PCRE2_SIZE off;
		int ec;
		pcre2_code *re = pcre2_compile((PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, opts, &ec, &off, NULL);

		if (!re) {
			PCRE2_UCHAR msg[160];

			pcre2_get_error_message(ec, msg, sizeof(msg));
			snprintf(err, len, "StringMatch.regex '%s': %s at offset %zu", s, (char *)msg,
				 (size_t)off);
			bm_strmatch_free(out);
			return -EINVAL;
		}
		/* JIT is an optimisation only: the interpreter runs if it fails. */
		pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
		out->re = re;
	}
	return 0;
}

void bm_strmatch_free(struct bm_strmatch *m)
{
	if (!m)
		return;
	pcre2_code_free(m->re);
	free(m->s);
	memset(m, 0, sizeof(*m));
}

int bm_strmatch_eval(const struct bm_strmatch *m, const char *v, size_t len)
{
	size_t sl;

	switch (m->kind) {
	case BM_SM_NONE:
		return 1;
	case BM_SM_PRESENT:
		return v != NULL;
	case BM_SM_EXACT:
		if (!v || !m->s)
			return 0;
		sl = strlen(m->s);
		return len == sl && (m->icase ? !strncasecmp(v, m->s, sl) : !memcmp(v, m->s, sl));
	case BM_SM_PREFIX:
		if (!v || !m->s)
			return 0;
		sl = strlen(m->s);
		return len >= sl && (m->icase ? !strncasecmp(v, m->s, sl) : !memcmp(v, m->s, sl));
	case BM_SM_REGEX:
		return v && m->re && sm_regex_match(m->re, v, len);
	}
	return 0;
}

static int sm_eval_str(const struct bm_strmatch *m, const char *v)
{
	return bm_strmatch_eval(m, v, v ? strlen(v) : 0);
}

/* ---- HTTPMatchRequest ----------------------------------------------------- */

static size_t req_path_len(const struct bm_l7_req *r)
{
	if (!r->path)
		return 0;
	return r->path_len ? r->path_len : strlen(r->path);
}

/* The :path without its query string: what Envoy's path matchers see. */
static size_t path_only_len(const char *path, size_t len)
{
	const char *q = path ? memchr(path, '?', len) : NULL;

	return q ? (size_t)(q - path) : len;
}

/* The value of header name, NULL when absent. Several occurrences are
 * joined with "," as Envoy does before matching; *alloc then owns it. */
static const char *hdr_value(const struct bm_l7_req *r, const char *name, size_t *len, char **alloc)
{
	size_t nl = strlen(name), n = 0, total = 0, first = 0;
	char *buf, *p;

	*alloc = NULL;
	for (size_t i = 0; i < r->n_hdr; i++) {
		const struct bm_http_hdr *h = &r->hdr[i];

		if (h->name_len == nl && !strncasecmp(h->name, name, nl)) {
			if (!n++)
				first = i;
			total += h->value_len + 1;
		}
	}
	if (!n)
		return NULL;
	if (n == 1) {
		*len = r->hdr[first].value_len;
		return r->hdr[first].value ? r->hdr[first].value : "";
	}
	buf = p = malloc(total);
	if (!buf) {
		/* matching on the first value beats failing the request */
		*len = r->hdr[first].value_len;
		return r->hdr[first].value ? r->hdr[first].value : "";
	}
	for (size_t i = first; i < r->n_hdr; i++) {
		const struct bm_http_hdr *h = &r->hdr[i];

		if (h->name_len == nl && !strncasecmp(h->name, name, nl)) {
			if (p != buf)
				*p++ = ',';
			if (h->value_len)
				memcpy(p, h->value, h->value_len);
			p += h->value_len;
		}
	}
	*alloc = buf;
	*len = (size_t)(p - buf);
	return buf;
}

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Query component decoding: %XX and '+' as space (form encoding, as Envoy's
 * urlDecodeQueryParameter); a malformed escape stays as it is. */
static size_t query_decode(const char *s, size_t len, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		int hi, lo;

		if (s[i] == '%' && i + 2 < len && (hi = hex_val(s[i + 1])) >= 0 &&
		    (lo = hex_val(s[i + 2])) >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = s[i] == '+' ? ' ' : s[i];
		}
	}
	return o;
}

/* The first value of query parameter name (decoded into buf, which holds
 * at least qlen bytes), or NULL. "?key" has the empty value. */
static const char *query_value(const char *q, size_t qlen, const char *name, char *buf, size_t *vlen)
{
	size_t nl = strlen(name), i = 0;

	while (i < qlen) {
		const char *seg = q + i, *amp = memchr(seg, '&', qlen - i), *eq;
		size_t sl = amp ? (size_t)(amp - seg) : qlen - i, kl, dl;

		i += sl + 1;
		if (!sl)
			continue;
		eq = memchr(seg, '=', sl);
		kl = eq ? (size_t)(eq - seg) : sl;
		dl = query_decode(seg, kl, buf);
		if (dl != nl || memcmp(buf, name, nl))
			continue;
		if (!eq) {
			*vlen = 0;
			return "";
		}
		*vlen = query_decode(eq + 1, sl - kl - 1, buf);
		return buf;
	}
	return NULL;
}

static int match_query(const struct bm_l7_match *m, const struct bm_l7_req *r)
{
	size_t plen = req_path_len(r), po = path_only_len(r->path, plen), qlen;
	const char *q;
	char stackbuf[1024], *buf = stackbuf;
	int ok = 1;

	if (!m->n_query)
		return 1;
	if (po >= plen)
		return 0;   /* no query string: every queryParams matcher fails */
	q = r->path + po + 1;
	qlen = plen - po - 1;
	if (qlen >= sizeof(stackbuf)) {
		buf = malloc(qlen + 1);
		if (!buf)
			return 0;
	}
	for (size_t i = 0; ok && i < m->n_query; i++) {
		size_t vl = 0;
		const char *v = query_value(q, qlen, m->query[i].name, buf, &vl);

		/* Envoy: an absent parameter fails every matcher */
		ok = v && bm_strmatch_eval(&m->query[i].m, v, vl);
	}
	if (buf != stackbuf)
		free(buf);
	return ok;
}

static int match_headers(const struct bm_l7_kvmatch *kv, size_t n, const struct bm_l7_req *r,
			 int without)
{
	for (size_t i = 0; i < n; i++) {
		char *alloc;
		size_t vl = 0;
		const char *v = hdr_value(r, kv[i].name, &vl, &alloc);
		int hit;

		if (!without) {
			hit = bm_strmatch_eval(&kv[i].m, v, vl);
		} else if (kv[i].m.kind == BM_SM_PRESENT) {
			hit = !v;   /* presence inverted: the header is absent */
		} else {
			/* §1.3: a missing header is the empty string here */
			hit = !bm_strmatch_eval(&kv[i].m, v ? v : "", v ? vl : 0);
		}
		free(alloc);
		if (!hit)
			return 0;
	}
	return 1;
}

static int match_source(const struct bm_l7_match *m, const struct bm_l7_req *r)
{
	if (m->port && m->port != r->port)
		return 0;
	if (m->source_namespace && (!r->src_ns || strcmp(m->source_namespace, r->src_ns)))
		return 0;
	for (size_t i = 0; i < m->n_source_labels; i++) {
		const char *v = json_string_value(json_object_get(r->src_labels,
								  m->source_labels[i].key));

		if (!v || strcmp(v, m->source_labels[i].value ? m->source_labels[i].value : ""))
			return 0;
	}
	return 1;
}

static int match_one(const struct bm_l7_match *m, const struct bm_l7_req *r)
{
	size_t plen = req_path_len(r);

	/* the route-generation predicates first (§1.2 (4)), then L7 */
	if (!match_source(m, r))
		return 0;
	if (!bm_strmatch_eval(&m->uri, r->path, path_only_len(r->path, plen)))
		return 0;
	if (!sm_eval_str(&m->method, r->method) || !sm_eval_str(&m->scheme, r->scheme) ||
	    !sm_eval_str(&m->authority, r->authority))
		return 0;
	if (!match_headers(m->headers, m->n_headers, r, 0) ||
	    !match_headers(m->without_headers, m->n_without_headers, r, 1))
		return 0;
	return match_query(m, r);
}

const struct bm_l7_route *bm_l7_route_select(const struct bm_l7_service *svc,
					     const struct bm_l7_req *r, int *which)
{
	int dummy;

	if (!which)
		which = &dummy;
	*which = -1;
	if (!svc)
		return NULL;
	for (size_t i = 0; i < svc->n_route; i++) {
		const struct bm_l7_route *rt = &svc->route[i];

		if (!rt->n_match)
			return rt;   /* catch-all */
		for (size_t j = 0; j < rt->n_match; j++) {
			if (match_one(&rt->match[j], r)) {
				*which = (int)j;
				return rt;
			}
		}
	}
	return NULL;
}

const struct bm_l7_dest *bm_l7_dest_pick(const struct bm_l7_route *rt, uint32_t r)
{
	uint64_t total = rt->total_weight, x;

	if (!rt->n_dest)
		return NULL;
	if (rt->n_dest == 1)   /* a single destination gets 100 % whatever its weight */
		return &rt->dest[0];
	if (!total)
		for (size_t i = 0; i < rt->n_dest; i++)
			total += rt->dest[i].weight;
	if (!total)
		return &rt->dest[0];
	x = r % total;
	for (size_t i = 0; i < rt->n_dest; i++) {
		if (x < rt->dest[i].weight)
			return &rt->dest[i];
		x -= rt->dest[i].weight;
	}
	return &rt->dest[rt->n_dest - 1];
}

/* ---- rewrite and redirect -------------------------------------------------- */

/* Appends s[0..n) at *o; -ENOSPC when out (with its NUL) cannot hold it. */
static int put(char *out, size_t len, size_t *o, const char *s, size_t n)
{
	if (*o + n >= len)
		return -ENOSPC;
	if (n)
		memcpy(out + *o, s, n);
	*o += n;
	out[*o] = 0;
	return 0;
}

static const struct bm_strmatch *matched_uri(const struct bm_l7_route *rt, int which)
{
	if (which < 0 || (size_t)which >= rt->n_match)
		return NULL;
	return &rt->match[which].uri;
}

int bm_l7_rewrite_path(const struct bm_l7_route *rt, int which, const char *path,
		       char *out, size_t len)
{
	const struct bm_strmatch *u = matched_uri(rt, which);
	size_t plen = path ? strlen(path) : 0, po = path_only_len(path, plen), o = 0, keep_from;
	int kind = u ? u->kind : BM_SM_NONE;

	if (!len)
		return -ENOSPC;
	out[0] = 0;
	if (!path)
		path = "";
	if (!rt->rewrite_uri)
		return put(out, len, &o, path, plen);
	switch (kind) {
	case BM_SM_PREFIX:
		/* Envoy prefix_rewrite: the matched prefix is replaced */
		keep_from = strlen(u->s);
		if (keep_from > po)
			keep_from = po;
		break;
	case BM_SM_EXACT:
	case BM_SM_REGEX:
		keep_from = po;   /* the whole path; the query stays */
		break;
	default:
		/* no uri match: Istio matches the implicit prefix "/" */
		keep_from = plen && path[0] == '/' ? 1 : 0;
		break;
	}
	if (put(out, len, &o, rt->rewrite_uri, strlen(rt->rewrite_uri)) ||
	    put(out, len, &o, path + keep_from, plen - keep_from))
		return -ENOSPC;
	return 0;
}

/* Length of host without its ":port" ("[v6]:port" aware). */
static size_t host_without_port(const char *h)
{
	size_t n = strlen(h);
	const char *c;

	if (h[0] == '[') {
		c = strstr(h, "]:");
		return c ? (size_t)(c - h) + 1 : n;
	}
	c = strrchr(h, ':');
	return c ? (size_t)(c - h) : n;
}

static const char *host_port(const char *h)
{
	size_t hl = host_without_port(h);

	return h[hl] == ':' ? h + hl + 1 : NULL;
}

int bm_l7_redirect_location(const struct bm_l7_route *rt, int which, const struct bm_l7_req *r,
			    char *out, size_t len)
{
	const char *req_scheme = r->scheme && *r->scheme ? r->scheme : "http";
	const char *scheme = rt->redirect.scheme && *rt->redirect.scheme ? rt->redirect.scheme : req_scheme;
	const char *host = rt->redirect.authority && *rt->redirect.authority ? rt->redirect.authority
									    : (r->authority ? r->authority : "");
	size_t plen = req_path_len(r), po = path_only_len(r->path, plen), o = 0, hl = strlen(host);
	unsigned port = 0;
	char pbuf[8];

	if (!len)
		return -ENOSPC;
	out[0] = 0;
	if (rt->redirect.port)
		port = rt->redirect.port;
	else if (rt->redirect.derive_port == 2)
		port = r->port;   /* FROM_REQUEST_PORT: the port the request came to */
	if (port || rt->redirect.derive_port == 1) {
		/* a new port replaces the one in the authority; FROM_PROTOCOL_DEFAULT
		 * leaves the scheme's default, i.e. none written */
		hl = host_without_port(host);
	} else if (host == r->authority && strcmp(scheme, req_scheme)) {
		/* Envoy: a scheme change drops the old scheme's default port */
		const char *p = host_port(host);

		if (p && ((!strcmp(req_scheme, "http") && !strcmp(p, "80")) ||
			  (!strcmp(req_scheme, "https") && !strcmp(p, "443"))))
			hl = host_without_port(host);
	}
	if ((port == 80 && !strcmp(scheme, "http")) || (port == 443 && !strcmp(scheme, "https")))
		port = 0;
	if (put(out, len, &o, scheme, strlen(scheme)) || put(out, len, &o, "://", 3) ||
	    put(out, len, &o, host, hl))
		return -ENOSPC;
	if (port) {
		int n = snprintf(pbuf, sizeof(pbuf), ":%u", port);

		if (put(out, len, &o, pbuf, (size_t)n))
			return -ENOSPC;
	}
	if (rt->redirect.uri && *rt->redirect.uri) {
		/* uri replaces the path; the request's query stays unless the
		 * new uri brings its own (Envoy path_redirect) */
		if (put(out, len, &o, rt->redirect.uri, strlen(rt->redirect.uri)))
			return -ENOSPC;
		if (!strchr(rt->redirect.uri, '?') && plen > po &&
		    put(out, len, &o, r->path + po, plen - po))
			return -ENOSPC;
	} else if (plen) {
		if (put(out, len, &o, r->path, plen))
			return -ENOSPC;
	} else if (put(out, len, &o, "/", 1)) {
		return -ENOSPC;
	}
	return 0;
}

/* ---- path normalization ----------------------------------------------------- */

/* 1 for a "." segment, 2 for "..", else 0. "%2e" counts as a dot, as in the
 * URL canonicalizer Envoy's normalize_path uses: "/a/%2e%2e/b" is "/b" to a
 * backend that decodes, so it must be "/b" to the matchers too. */
static int dot_segment(const char *s, size_t n)
{
	int dots = 0;

	for (size_t i = 0; i < n;) {
		if (s[i] == '.') {
			i++;
		} else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] | 0x20) == 'e') {
			i += 3;
		} else {
			return 0;
		}
		if (++dots > 2)
			return 0;
	}
	return dots;
}

int bm_l7_normalize_path(const char *path, size_t len, char *out, size_t outlen)
{
	size_t end, pos = 0, o = 0;
	char *w;
	int rc = 0;

	if (!path || !len || path[0] != '/')
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if (path[i] == '\0' || path[i] == '\r' || path[i] == '\n')
			return -EINVAL;
	end = path_only_len(path, len);
	/* the output never grows past the input, but may pass through longer
	 * states than it ends with ("/abc/.." is "/"): work where it fits */
	w = outlen > end ? out : malloc(end + 1);
	if (!w)
		return -ENOMEM;
	w[0] = 0;
	/* RFC 3986 5.2.4 remove_dot_segments, one "/segment" of input at a
	 * time (the input always starts with '/' here). */
	while (pos < end) {
		const char *seg = path + pos + 1, *slash = memchr(seg, '/', end - pos - 1);
		size_t sl = slash ? (size_t)(slash - seg) : end - pos - 1;
		size_t next = pos + 1 + sl;
		int dots = dot_segment(seg, sl);

		if (dots == 2) {
			/* remove the last output segment and its '/' */
			while (o > 0 && w[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
			w[o] = 0;
		}
		if (!dots)
			put(w, end + 1, &o, path + pos, 1 + sl);
		else if (next == end)   /* "/." or "/.." at the end leaves "/" */
			put(w, end + 1, &o, "/", 1);
		pos = next;
	}
	if (w != out) {
		o = 0;
		if (!outlen)
			rc = -ENOSPC;
		else
			rc = put(out, outlen, &o, w, strlen(w));
		free(w);
	}
	return rc;
}

/* ---- header operations --------------------------------------------------------- */

static int name_eq(const char *a, const char *b, size_t bl)
{
	return a && strlen(a) == bl && !strncasecmp(a, b, bl);
}

static int ops_touches(const struct bm_l7_hdr_ops *ops, const char *name, size_t len)
{
	for (size_t i = 0; i < ops->n_remove; i++)
		if (name_eq(ops->remove[i], name, len))
			return 1;
	for (size_t i = 0; i < ops->n_set; i++)
		if (name_eq(ops->set[i].name, name, len))
			return 1;
	return 0;
}

int bm_l7_hdr_keep(const struct bm_l7_hdr_ops *const *ops, size_t n_ops, const char *name, size_t len)
{
	for (size_t i = 0; i < n_ops; i++)
		if (ops[i] && ops_touches(ops[i], name, len))
			return 0;
	return 1;
}

int bm_l7_hdr_each_added(const struct bm_l7_hdr_ops *const *ops, size_t n_ops,
			 int (*fn)(void *arg, const char *name, const char *value), void *arg)
{
	for (size_t i = 0; i < n_ops; i++) {
		const struct bm_l7_hdr_ops *op = ops[i];

		if (!op)
			continue;
		for (int pass = 0; pass < 2; pass++) {
			const struct bm_l7_hdr *h = pass ? op->add : op->set;
			size_t n = pass ? op->n_add : op->n_set;

			for (size_t k = 0; k < n; k++) {
				int rc;

				/* a later set of the same name overwrites, a later
				 * remove deletes: only the last word is written */
				if (!bm_l7_hdr_keep(ops + i + 1, n_ops - i - 1, h[k].name,
						    strlen(h[k].name)))
					continue;
				/* within one ops, a later set of the same name wins over an earlier one */
				if (!pass) {
					int later = 0;

					for (size_t j = k + 1; j < n; j++)
						if (!strcasecmp(h[j].name, h[k].name))
							later = 1;
					if (later)
						continue;
				}
				rc = fn(arg, h[k].name, h[k].value ? h[k].value : "");
				if (rc)
					return rc;
			}
		}
	}
	return 0;
}
