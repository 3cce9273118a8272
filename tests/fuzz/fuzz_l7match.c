/* libFuzzer entry for L7 matching (agent/l7match.c) and AuthorizationPolicy
 * path templates (agent/authz.c bm_authz_path_match).
 *
 * Input: up to four fields separated by '\n': f0 f1 f2 f3.
 *   - the whole input, and f0, through bm_l7_normalize_path: the result
 *     starts with '/', has no "." or ".." segment, is not longer than the
 *     input's path, and normalizing it again changes nothing;
 *   - pattern f0 against path f1 through bm_authz_path_match (templates
 *     only in the form the validator lets through, as in production);
 *   - f0 compiled as an Istio StringMatch regex (PCRE2 with the match
 *     limit) and as exact/prefix, evaluated on f1 and f2: no evaluation
 *     may take seconds;
 *   - a request (path f1, header x-user f2, authority f3) through route
 *     selection on a small fixed service, then rewrite and redirect into
 *     buffers of every size up to the one that fits.
 * Values are handed over in exact-size heap copies so ASan sees overreads. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "authz.h"
#include "l7.h"

#define FAIL(...)                                          \
	do {                                               \
		fprintf(stderr, "fuzz_l7match: " __VA_ARGS__); \
		fputc('\n', stderr);                       \
		abort();                                   \
	} while (0)

/* A regex evaluation bounded by the match limit takes milliseconds; the
 * bound is loose for ASan and a busy machine. */
#define SLOW_NS (2ull * 1000 * 1000 * 1000)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static char *dupn(const uint8_t *s, size_t n)
{
	char *d = malloc(n + 1);

	if (!d)
		abort();
	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

/* ---- path normalization -------------------------------------------------------- */

static int is_dot_seg(const char *s, size_t n)
{
	return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

static void check_normalize(const uint8_t *data, size_t size)
{
	/* not NUL-terminated: the normalizer must stay within len */
	char *path = malloc(size ? size : 1), *out, *again, small[8];
	size_t end, ol;
	int rc;

	if (!path)
		abort();
	memcpy(path, data, size);
	end = memchr(path, '?', size) ? (size_t)((char *)memchr(path, '?', size) - path) : size;
	out = malloc(end + 1);
	again = malloc(end + 1);
	if (!out || !again)
		abort();
	rc = bm_l7_normalize_path(path, size, out, end + 1);
	if (rc == -EINVAL) {
		if (size && path[0] == '/' && !memchr(path, 0, size) && !memchr(path, '\r', size) &&
		    !memchr(path, '\n', size))
			FAIL("valid path rejected");
		goto out;
	}
	if (rc)
		FAIL("normalize returned %d with room for the whole input", rc);
	ol = strlen(out);
	if (out[0] != '/')
		FAIL("normalized path '%s' does not start with '/'", out);
	if (ol > end)
		FAIL("normalized path longer (%zu) than the input path (%zu)", ol, end);
	for (size_t i = 0; i < ol;) {
		size_t sl = strcspn(out + i + 1, "/");

		if (is_dot_seg(out + i + 1, sl))
			FAIL("dot segment left in '%s'", out);
		i += 1 + sl;
	}
	if (bm_l7_normalize_path(out, ol, again, end + 1) || strcmp(out, again))
		FAIL("normalizing '%s' again gives '%s'", out, again);
	/* a buffer too small: -ENOSPC or the same result, never an overflow */
	for (size_t n = 0; n <= sizeof(small) && n <= ol + 1; n++) {
		char *b = malloc(n ? n : 1);

		if (!b)
			abort();
		rc = bm_l7_normalize_path(path, size, b, n);
		if (rc == 0 && (n <= ol || strcmp(b, out)))
			FAIL("normalize into %zu bytes returned 0", n);
		if (rc && rc != -ENOSPC)
			FAIL("normalize into %zu bytes returned %d", n, rc);
		free(b);
	}
out:
	free(again);
	free(out);
	free(path);
}

/* ---- authz path templates ------------------------------------------------------- */

/* lib/schema_security.c check_path(): {*} and {**} only as whole segments,
 * {**} last, no other brace or '*' in a template. Others never reach the
 * matcher. */
static int template_valid(const char *s)
{
	int seen_any = 0;

	if (!strpbrk(s, "{}"))
		return 1;
	for (const char *seg = s; *seg;) {
		size_t len = strcspn(seg, "/");

		if ((len == 3 && !strncmp(seg, "{*}", 3)) || (len == 4 && !strncmp(seg, "{**}", 4))) {
			if (seen_any)
				return 0;
			seen_any = len == 4;
		} else if (memchr(seg, '{', len) || memchr(seg, '}', len) || memchr(seg, '*', len)) {
			return 0;
		}
		seg += len;
		if (*seg == '/')
			seg++;
	}
	return 1;
}

static void check_authz(const char *pattern, const char *path)
{
	int m;

	if (!template_valid(pattern))
		return;
	m = bm_authz_path_match(pattern, path);
	if (m != 0 && m != 1)
		FAIL("path match returned %d", m);
	if (!strcmp(pattern, path) && !strpbrk(pattern, "{*") && !m)
		FAIL("literal pattern '%s' does not match itself", pattern);
	if (bm_authz_path_match(pattern, NULL))
		FAIL("NULL path matched");
}

/* ---- StringMatch -------------------------------------------------------------------- */

static void eval_timed(const struct bm_strmatch *m, const char *v, size_t n)
{
	char *copy = malloc(n ? n : 1);
	uint64_t t0;

	if (!copy)
		abort();
	memcpy(copy, v, n);
	t0 = now_ns();
	(void)bm_strmatch_eval(m, copy, n);
	if (now_ns() - t0 > SLOW_NS)
		FAIL("one evaluation of '%s' took %llu ms", m->s,
		     (unsigned long long)((now_ns() - t0) / 1000000));
	free(copy);
}

static void check_strmatch(const char *re_text, size_t re_len, const char *s1, size_t l1,
			   const char *s2, size_t l2)
{
	static const char *const kinds[] = { "regex", "exact", "prefix" };
	char err[512];

	for (int k = 0; k < 3; k++) {
		struct bm_strmatch m;
		json_t *sm = json_object();
		int rc;

		/* the resource parser only lets UTF-8 through; the compiler must
		 * cope with whatever bytes anyway */
		json_object_set_new(sm, kinds[k], json_stringn_nocheck(re_text, re_len));
		rc = bm_strmatch_compile(sm, k == 2, &m, err, sizeof(err));
		json_decref(sm);
		if (rc) {
			if (rc != -EINVAL || !err[0])
				FAIL("compile returned %d (%s)", rc, err);
			continue;
		}
		if (m.kind == BM_SM_EXACT && !bm_strmatch_eval(&m, m.s, strlen(m.s)))
			FAIL("exact '%s' does not match itself", m.s);
		eval_timed(&m, s1, l1);
		eval_timed(&m, s2, l2);
		if (bm_strmatch_eval(&m, NULL, 0) && m.kind != BM_SM_NONE)
			FAIL("absent value matched kind %d", m.kind);
		bm_strmatch_free(&m);
	}
}

/* ---- routes, rewrite, redirect ------------------------------------------------------ */

static struct bm_l7_service svc;
static struct bm_l7_route routes[4];
static struct bm_l7_match matches[4];
static struct bm_l7_kvmatch hdrm[2], qm[1];

static void compile(struct bm_strmatch *m, const char *kind, const char *s, int icase)
{
	json_t *sm = json_pack("{ss}", kind, s);
	char err[256];

	if (bm_strmatch_compile(sm, icase, m, err, sizeof(err)))
		FAIL("fixed matcher: %s", err);
	json_decref(sm);
}

static void build_service(void)
{
	/* route 0: prefix /api/ with a header regex, rewrite to /v2/ */
	compile(&matches[0].uri, "prefix", "/api/", 0);
	hdrm[0].name = "x-user";
	compile(&hdrm[0].m, "regex", "(a|aa)+b|[a-z]+@[a-z.]+", 0);
	matches[0].headers = &hdrm[0];
	matches[0].n_headers = 1;
	routes[0].match = &matches[0];
	routes[0].n_match = 1;
	routes[0].rewrite_uri = "/v2/";
	/* route 1: regex uri, query parameter, redirect with port and scheme */
	compile(&matches[1].uri, "regex", "/v[0-9]+/.*", 0);
	qm[0].name = "q";
	compile(&qm[0].m, "exact", "1", 0);
	matches[1].query = qm;
	matches[1].n_query = 1;
	compile(&matches[2].uri, "exact", "/health", 0);
	hdrm[1].name = "x-debug";
	compile(&hdrm[1].m, "prefix", "on", 1);
	matches[2].without_headers = &hdrm[1];
	matches[2].n_without_headers = 1;
	routes[1].match = &matches[1];
	routes[1].n_match = 2;
	routes[1].redirect.code = 301;
	routes[1].redirect.uri = "/moved";
	routes[1].redirect.scheme = "https";
	routes[1].redirect.port = 8443;
	routes[1].rewrite_uri = "/";
	/* route 2: authority match, redirect keeping the path, port from request */
	compile(&matches[3].authority, "regex", "[^:]+\\.example(:[0-9]+)?", 1);
	routes[2].match = &matches[3];
	routes[2].n_match = 1;
	routes[2].redirect.code = 302;
	routes[2].redirect.derive_port = 2;
	/* route 3: catch-all with a rewrite and authority redirect */
	routes[3].rewrite_uri = "/fallback";
	routes[3].redirect.authority = "other.example:80";
	routes[3].redirect.derive_port = 1;
	svc.route = routes;
	svc.n_route = 4;
}

static void check_route(const char *path, size_t plen, const char *user, size_t ulen,
			const char *authority)
{
	char *pcopy = malloc(plen ? plen : 1), *ucopy = malloc(ulen ? ulen : 1);
	struct bm_http_hdr h[3] = {
		{ .name = "x-user", .name_len = 6, .value = ucopy, .value_len = ulen },
		{ .name = "x-user", .name_len = 6, .value = authority, .value_len = strlen(authority) },
		{ .name = "x-debug", .name_len = 7, .value = "off", .value_len = 3 },
	};
	struct bm_l7_req r = {
		.method = "GET", .scheme = "http", .authority = authority,
		/* path_len 0 means NUL-terminated */
		.path = plen ? pcopy : "",
		.path_len = plen, .hdr = h, .n_hdr = (ulen & 1) ? 3 : 1, .port = 8080,
	};
	const struct bm_l7_route *rt;
	char *path_z = dupn((const uint8_t *)path, plen), full[1024];
	int which, rc;

	if (!pcopy || !ucopy)
		abort();
	/* the HTTP parser never hands over a target with a NUL in it */
	if (memchr(path, 0, plen))
		plen = (size_t)((const char *)memchr(path, 0, plen) - path);
	memcpy(pcopy, path, plen);
	memcpy(ucopy, user, ulen);
	rt = bm_l7_route_select(&svc, &r, &which);
	if (!rt)
		FAIL("the catch-all route did not match");
	if (which < -1 || (which >= 0 && (size_t)which >= rt->n_match))
		FAIL("match index %d of %zu", which, rt->n_match);
	for (int redirect = 0; redirect < 2; redirect++) {
		int ok_rc;

		ok_rc = redirect ? bm_l7_redirect_location(rt, which, &r, full, sizeof(full)) :
				   bm_l7_rewrite_path(rt, which, path_z, full, sizeof(full));
		if (ok_rc && ok_rc != -ENOSPC)
			FAIL("rewrite/redirect returned %d", ok_rc);
		if (!ok_rc && strlen(full) >= sizeof(full))
			FAIL("result overflows");
		/* every smaller buffer: -ENOSPC, never a write past it */
		for (size_t n = 0; !ok_rc && n <= strlen(full) + 1; n++) {
			char *b = malloc(n ? n : 1);

			if (!b)
				abort();
			rc = redirect ? bm_l7_redirect_location(rt, which, &r, b, n) :
					bm_l7_rewrite_path(rt, which, path_z, b, n);
			if (n <= strlen(full) ? rc != -ENOSPC : (rc || strcmp(b, full)))
				FAIL("%s into %zu bytes returned %d", redirect ? "redirect" : "rewrite", n,
				     rc);
			free(b);
		}
	}
	free(path_z);
	free(pcopy);
	free(ucopy);
}

/* ---- entry ------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	build_service();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *f[4] = { 0 };
	size_t fl[4] = { 0 }, nf = 0, start = 0;
	char *z[4];

	check_normalize(data, size);
	for (size_t i = 0; i <= size && nf < 4; i++) {
		if (i == size || (data[i] == '\n' && nf < 3)) {
			f[nf] = data + start;
			fl[nf++] = i - start;
			start = i + 1;
		}
	}
	for (size_t i = 0; i < 4; i++) {
		if (!f[i])
			f[i] = (const uint8_t *)"";
		z[i] = dupn(f[i], fl[i]);
	}
	if (nf > 1)
		check_normalize(f[0], fl[0]);
	/* the authz matchers see NUL-terminated strings */
	check_authz(z[0], z[1]);
	check_strmatch((const char *)f[0], fl[0], (const char *)f[1], fl[1], (const char *)f[2],
		       fl[2]);
	check_route((const char *)f[1], fl[1], (const char *)f[2], fl[2], z[3]);
	for (size_t i = 0; i < 4; i++)
		free(z[i]);
	return 0;
}
