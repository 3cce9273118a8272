/* L7 matching tables: StringMatch, route selection (§1.2, §1.3), weighted
 * destinations (§1.4), rewrite/redirect (§1.9), path normalization, header
 * operations. Routes are built by hand from a small JSON description (the
 * HTTPMatchRequest fields) so the tables read like VirtualServices. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../agent/l7.h"

/* ---- building services by hand -------------------------------------------- */

static struct bm_strmatch sm(const json_t *j, int icase)
{
	struct bm_strmatch m;
	char err[256];

	CU_ASSERT_EQUAL_FATAL(bm_strmatch_compile(j, icase, &m, err, sizeof(err)), 0);
	return m;
}

static void kv_build(const json_t *obj, struct bm_l7_kvmatch **out, size_t *n)
{
	const char *k;
	json_t *v;
	size_t i = 0;

	*n = json_object_size(obj);
	*out = *n ? calloc(*n, sizeof(**out)) : NULL;
	json_object_foreach((json_t *)obj, k, v) {
		(*out)[i].name = strdup(k);
		(*out)[i].m = sm(v, 0);
		i++;
	}
}

static void match_build(const json_t *j, struct bm_l7_match *m)
{
	const json_t *lab = json_object_get(j, "sourceLabels");
	const char *k;
	json_t *v;
	size_t i = 0;

	memset(m, 0, sizeof(*m));
	m->uri = sm(json_object_get(j, "uri"), json_is_true(json_object_get(j, "ignoreUriCase")));
	m->method = sm(json_object_get(j, "method"), 0);
	m->scheme = sm(json_object_get(j, "scheme"), 0);
	m->authority = sm(json_object_get(j, "authority"), 0);
	kv_build(json_object_get(j, "headers"), &m->headers, &m->n_headers);
	kv_build(json_object_get(j, "withoutHeaders"), &m->without_headers, &m->n_without_headers);
	kv_build(json_object_get(j, "queryParams"), &m->query, &m->n_query);
	m->n_source_labels = json_object_size(lab);
	m->source_labels = m->n_source_labels ? calloc(m->n_source_labels, sizeof(*m->source_labels)) : NULL;
	json_object_foreach((json_t *)lab, k, v) {
		m->source_labels[i].key = strdup(k);
		m->source_labels[i].value = strdup(json_string_value(v));
		i++;
	}
	if (json_string_value(json_object_get(j, "sourceNamespace")))
		m->source_namespace = strdup(json_string_value(json_object_get(j, "sourceNamespace")));
	m->port = (uint16_t)json_integer_value(json_object_get(j, "port"));
}

/* routes: [{"name": .., "match": [HTTPMatchRequest...]}, ...] */
static struct bm_l7_service *svc_build(const char *routes_json)
{
	json_error_t e;
	json_t *routes = json_loads(routes_json, 0, &e);
	struct bm_l7_service *svc = calloc(1, sizeof(*svc));
	size_t i;
	json_t *r;

	if (!routes)
		fprintf(stderr, "bad test JSON at %d: %s\n", e.column, e.text);
	CU_ASSERT_PTR_NOT_NULL_FATAL(routes);
	svc->n_route = json_array_size(routes);
	svc->route = calloc(svc->n_route, sizeof(*svc->route));
	json_array_foreach(routes, i, r) {
		struct bm_l7_route *rt = &svc->route[i];
		const json_t *ms = json_object_get(r, "match");
		size_t k;
		json_t *m;

		rt->name = strdup(json_string_value(json_object_get(r, "name")));
		rt->n_match = json_array_size(ms);
		rt->match = rt->n_match ? calloc(rt->n_match, sizeof(*rt->match)) : NULL;
		json_array_foreach(ms, k, m)
			match_build(m, &rt->match[k]);
	}
	json_decref(routes);
	return svc;
}

static void kv_free(struct bm_l7_kvmatch *kv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kv[i].name);
		bm_strmatch_free(&kv[i].m);
	}
	free(kv);
}

static void svc_free(struct bm_l7_service *svc)
{
	for (size_t i = 0; i < svc->n_route; i++) {
		struct bm_l7_route *rt = &svc->route[i];

		for (size_t k = 0; k < rt->n_match; k++) {
			struct bm_l7_match *m = &rt->match[k];

			bm_strmatch_free(&m->uri);
			bm_strmatch_free(&m->method);
			bm_strmatch_free(&m->scheme);
			bm_strmatch_free(&m->authority);
			kv_free(m->headers, m->n_headers);
			kv_free(m->without_headers, m->n_without_headers);
			kv_free(m->query, m->n_query);
			for (size_t l = 0; l < m->n_source_labels; l++) {
				free(m->source_labels[l].key);
				free(m->source_labels[l].value);
			}
			free(m->source_labels);
			free(m->source_namespace);
		}
		free(rt->match);
		free(rt->name);
	}
	free(svc->route);
	free(svc);
}

/* A request from a table row: headers as "name: value\n..." */
#define MAX_HDR 8
struct req_buf {
	struct bm_l7_req r;
	struct bm_http_hdr h[MAX_HDR];
	char hb[512];
	json_t *labels;
};

static void req_make(struct req_buf *b, const char *method, const char *path, const char *hdrs,
		     const char *authority, const char *scheme, const char *src_ns,
		     const char *labels, uint16_t port)
{
	char *save = NULL, *line;

	memset(b, 0, sizeof(*b));
	b->r.method = method;
	b->r.path = path;
	b->r.path_len = strlen(path);
	b->r.authority = authority;
	b->r.scheme = scheme;
	b->r.src_ns = src_ns;
	b->r.port = port;
	if (labels) {
		b->labels = json_loads(labels, 0, NULL);
		b->r.src_labels = b->labels;
	}
	snprintf(b->hb, sizeof(b->hb), "%s", hdrs ? hdrs : "");
	for (line = strtok_r(b->hb, "\n", &save); line && b->r.n_hdr < MAX_HDR;
	     line = strtok_r(NULL, "\n", &save)) {
		struct bm_http_hdr *h = &b->h[b->r.n_hdr++];
		char *c = strchr(line, ':');

		h->name = line;
		h->name_len = c ? (size_t)(c - line) : strlen(line);
		h->value = c ? c + 1 + strspn(c + 1, " ") : "";
		h->value_len = strlen(h->value);
	}
	b->r.hdr = b->h;
}

static void req_done(struct req_buf *b)
{
	json_decref(b->labels);
}

/* ---- StringMatch ------------------------------------------------------------ */

static void test_strmatch_compile(void)
{
	static const struct {
		const char *json;
		int rc, kind;
	} cases[] = {
		{ "{\"exact\":\"a\"}", 0, BM_SM_EXACT },
		{ "{\"exact\":\"\"}", 0, BM_SM_EXACT },
		{ "{\"prefix\":\"/a\"}", 0, BM_SM_PREFIX },
		{ "{\"regex\":\"a.*\"}", 0, BM_SM_REGEX },
		{ "{}", 0, BM_SM_PRESENT },
		{ "{\"regex\":\"*\"}", 0, BM_SM_PRESENT },
		{ "{\"prefix\":\"\"}", -EINVAL, 0 },
		{ "{\"regex\":\"\"}", -EINVAL, 0 },
		{ "{\"regex\":\"(unclosed\"}", -EINVAL, 0 },
		{ "{\"exact\":\"a\",\"prefix\":\"a\"}", -EINVAL, 0 },
		{ "{\"exact\":1}", -EINVAL, 0 },
		{ "{\"suffix\":\"a\"}", -EINVAL, 0 },
		{ "\"a\"", -EINVAL, 0 },
	};
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *j = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
		struct bm_strmatch m;
		int rc = bm_strmatch_compile(j, 0, &m, err, sizeof(err));

		if (rc != cases[i].rc || (!rc && m.kind != cases[i].kind))
			fprintf(stderr, "\n  strmatch %s: rc %d kind %d\n", cases[i].json, rc, m.kind);
		CU_ASSERT_EQUAL(rc, cases[i].rc);
		if (!rc)
			CU_ASSERT_EQUAL(m.kind, cases[i].kind);
		bm_strmatch_free(&m);
		json_decref(j);
	}
	/* no StringMatch at all: matches anything, absent values too */
	{
		struct bm_strmatch m;

		CU_ASSERT_EQUAL(bm_strmatch_compile(NULL, 0, &m, err, sizeof(err)), 0);
		CU_ASSERT_EQUAL(m.kind, BM_SM_NONE);
		CU_ASSERT_TRUE(bm_strmatch_eval(&m, NULL, 0));
	}
	/* an oversized regex is rejected like Istio does */
	{
		char big[1100 + 20];
		json_t *j;
		struct bm_strmatch m;

		memset(big, 'a', 1100);
		big[1100] = 0;
		j = json_pack("{s:s}", "regex", big);
		CU_ASSERT_EQUAL(bm_strmatch_compile(j, 0, &m, err, sizeof(err)), -EINVAL);
		json_decref(j);
	}
}

static void test_strmatch_eval(void)
{
	static const struct {
		const char *json;
		int icase;
		const char *v;   /* NULL = absent */
		int want;
	} cases[] = {
		{ "{\"exact\":\"abc\"}", 0, "abc", 1 },
		{ "{\"exact\":\"abc\"}", 0, "ABC", 0 },
		{ "{\"exact\":\"abc\"}", 1, "ABC", 1 },
		{ "{\"exact\":\"abc\"}", 0, "abcd", 0 },
		{ "{\"exact\":\"abc\"}", 0, NULL, 0 },
		{ "{\"exact\":\"\"}", 0, "", 1 },
		{ "{\"prefix\":\"/foo\"}", 0, "/foobar", 1 },   /* not segment-aware */
		{ "{\"prefix\":\"/foo\"}", 0, "/fo", 0 },
		{ "{\"prefix\":\"/foo\"}", 1, "/FOO/x", 1 },
		{ "{\"regex\":\"\\\\d+$\"}", 0, "a123", 0 },    /* full match */
		{ "{\"regex\":\"\\\\d+$\"}", 0, "123", 1 },
		{ "{\"regex\":\"a|ab\"}", 0, "ab", 1 },        /* anchoring backtracks */
		{ "{\"regex\":\"abc$\"}", 0, "abc\n", 0 },     /* $ only at the very end */
		{ "{\"regex\":\"abc\"}", 0, "xabcx", 0 },
		{ "{\"regex\":\"abc\"}", 1, "ABC", 0 },        /* icase never affects regex */
		{ "{\"regex\":\"(?i)abc\"}", 0, "ABC", 1 },
		{ "{\"regex\":\"v[12]\\\\..*\"}", 0, "v2.7", 1 },
		{ "{\"regex\":\"a.c\"}", 0, "a\xc3\xa9" "c", 1 },   /* . is one UTF-8 character */
		/* invalid UTF-8 is no error, but '.' never matches a bad byte
		 * (RE2 reads it as U+FFFD), so such a value fails a full match */
		{ "{\"regex\":\"a.*\"}", 0, "a\xff\xfe", 0 },
		{ "{\"regex\":\"a.*\"}", 0, "\xff" "abc", 0 },
		{ "{\"regex\":\".*\"}", 0, NULL, 0 },
		{ "{}", 0, "", 1 },
		{ "{}", 0, NULL, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *j = json_loads(cases[i].json, 0, NULL);
		struct bm_strmatch m = sm(j, cases[i].icase);
		const char *v = cases[i].v;
		int got = bm_strmatch_eval(&m, v, v ? strlen(v) : 0);

		if (got != cases[i].want)
			fprintf(stderr, "\n  eval %s on '%s': %d\n", cases[i].json, v ? v : "(absent)", got);
		CU_ASSERT_EQUAL(got, cases[i].want);
		bm_strmatch_free(&m);
		json_decref(j);
	}
}

/* Workers evaluate the same compiled regex concurrently. */
static void *regex_worker(void *arg)
{
	const struct bm_strmatch *m = arg;
	long ok = 0;

	for (int i = 0; i < 2000; i++) {
		char v[32];
		int n = snprintf(v, sizeof(v), "/items/%d", i);

		ok += bm_strmatch_eval(m, v, (size_t)n);
		ok += !bm_strmatch_eval(m, "/items/x", 8);
	}
	return (void *)ok;
}

static void test_strmatch_threads(void)
{
	json_t *j = json_loads("{\"regex\":\"/items/[0-9]+\"}", 0, NULL);
	struct bm_strmatch m = sm(j, 0);
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, regex_worker, &m), 0);
	for (int i = 0; i < 4; i++) {
		void *ret;

		pthread_join(t[i], &ret);
		CU_ASSERT_EQUAL((long)ret, 4000);
	}
	bm_strmatch_free(&m);
	json_decref(j);
}

/* ---- route selection ------------------------------------------------------------ */

static const char *routes_main =
	"["
	"{\"name\":\"exact\",\"match\":[{\"uri\":{\"exact\":\"/exact\"}}]},"
	"{\"name\":\"prefix\",\"match\":[{\"uri\":{\"prefix\":\"/api/\"}}]},"
	"{\"name\":\"regex\",\"match\":[{\"uri\":{\"regex\":\"/items/[0-9]+\"}}]},"
	"{\"name\":\"icase\",\"match\":[{\"uri\":{\"exact\":\"/Case\"},\"ignoreUriCase\":true},"
	"                            {\"uri\":{\"prefix\":\"/CI/\"},\"ignoreUriCase\":true}]},"
	"{\"name\":\"user\",\"match\":[{\"headers\":{\"x-user\":{\"exact\":\"jason\"}}}]},"
	"{\"name\":\"debug\",\"match\":[{\"headers\":{\"x-debug\":{}}}]},"
	"{\"name\":\"ver\",\"match\":[{\"headers\":{\"x-ver\":{\"regex\":\"v[12]\"}}}]},"
	"{\"name\":\"hdr-none\",\"match\":[{\"uri\":{\"prefix\":\"/hn\"},\"headers\":{\"x-any\":{\"regex\":\".*\"}}}]},"
	"{\"name\":\"without\",\"match\":[{\"uri\":{\"prefix\":\"/w\"},\"withoutHeaders\":{\"x-skip\":{\"exact\":\"yes\"}}}]},"
	"{\"name\":\"without-empty\",\"match\":[{\"uri\":{\"prefix\":\"/e\"},\"withoutHeaders\":{\"x-e\":{\"exact\":\"\"}}}]},"
	"{\"name\":\"absent\",\"match\":[{\"uri\":{\"prefix\":\"/np\"},\"withoutHeaders\":{\"x-flag\":{}}}]},"
	"{\"name\":\"query\",\"match\":[{\"uri\":{\"prefix\":\"/q\"},\"queryParams\":{\"id\":{\"regex\":\"\\\\d+\"}}}]},"
	"{\"name\":\"flag\",\"match\":[{\"uri\":{\"prefix\":\"/flag\"},\"queryParams\":{\"debug\":{\"exact\":\"\"}}}]},"
	"{\"name\":\"qpresent\",\"match\":[{\"uri\":{\"prefix\":\"/qp\"},\"queryParams\":{\"a b\":{}}}]},"
	"{\"name\":\"post\",\"match\":[{\"uri\":{\"prefix\":\"/m\"},\"method\":{\"exact\":\"POST\"}}]},"
	"{\"name\":\"either\",\"match\":[{\"authority\":{\"exact\":\"a.example\"}},{\"scheme\":{\"exact\":\"https\"}}]},"
	"{\"name\":\"src\",\"match\":[{\"uri\":{\"prefix\":\"/src\"},\"sourceNamespace\":\"prod\","
	"                          \"sourceLabels\":{\"app\":\"web\",\"version\":\"v1\"}}]},"
	"{\"name\":\"port\",\"match\":[{\"uri\":{\"prefix\":\"/port\"},\"port\":8080}]},"
	"{\"name\":\"and\",\"match\":[{\"uri\":{\"prefix\":\"/and\"},\"method\":{\"exact\":\"GET\"},"
	"                          \"headers\":{\"x-a\":{\"exact\":\"1\"},\"x-b\":{\"prefix\":\"2\"}}}]},"
	"{\"name\":\"multi\",\"match\":[{\"headers\":{\"x-multi\":{\"exact\":\"a,b\"}}}]}"
	"]";

struct route_case {
	const char *what;
	const char *method, *path, *hdrs;
	const char *authority, *scheme;
	const char *src_ns, *labels;
	uint16_t port;
	const char *want;   /* route name, NULL = no route (404 NR) */
	int which;
};

static const struct route_case route_cases[] = {
	{ "exact", "GET", "/exact", NULL, "svc", "http", NULL, NULL, 80, "exact", 0 },
	{ "exact ignores the query", "GET", "/exact?x=1", NULL, "svc", "http", NULL, NULL, 80, "exact", 0 },
	{ "exact is not a prefix", "GET", "/exactly", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "exact is case-sensitive", "GET", "/EXACT", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "prefix", "GET", "/api/v1/x", NULL, "svc", "http", NULL, NULL, 80, "prefix", 0 },
	{ "prefix on the path only", "GET", "/ap?i/", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "regex", "GET", "/items/42", NULL, "svc", "http", NULL, NULL, 80, "regex", 0 },
	{ "regex ignores the query", "GET", "/items/42?sort=1", NULL, "svc", "http", NULL, NULL, 80, "regex", 0 },
	{ "regex is a full match", "GET", "/items/42/x", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "ignoreUriCase exact", "GET", "/cAsE", NULL, "svc", "http", NULL, NULL, 80, "icase", 0 },
	{ "ignoreUriCase prefix, second entry", "GET", "/ci/x", NULL, "svc", "http", NULL, NULL, 80, "icase", 1 },
	{ "header exact", "GET", "/x", "x-user: jason", "svc", "http", NULL, NULL, 80, "user", 0 },
	{ "header exact other value", "GET", "/x", "x-user: bob", "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "header name case-insensitive", "GET", "/x", "X-User: jason", "svc", "http", NULL, NULL, 80, "user", 0 },
	{ "header presence", "GET", "/x", "x-debug:", "svc", "http", NULL, NULL, 80, "debug", 0 },
	{ "header regex", "GET", "/x", "x-ver: v2", "svc", "http", NULL, NULL, 80, "ver", 0 },
	{ "header regex full match", "GET", "/x", "x-ver: v22", "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "missing header fails even .*", "GET", "/hn", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "empty header matches .*", "GET", "/hn", "x-any:", "svc", "http", NULL, NULL, 80, "hdr-none", 0 },
	{ "withoutHeaders, header absent", "GET", "/w", NULL, "svc", "http", NULL, NULL, 80, "without", 0 },
	{ "withoutHeaders, other value", "GET", "/w", "x-skip: no", "svc", "http", NULL, NULL, 80, "without", 0 },
	{ "withoutHeaders, matching value", "GET", "/w", "x-skip: yes", "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "withoutHeaders exact \"\": absent is empty", "GET", "/e", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "withoutHeaders exact \"\": a value", "GET", "/e", "x-e: 1", "svc", "http", NULL, NULL, 80, "without-empty", 0 },
	{ "withoutHeaders {}: absent", "GET", "/np", NULL, "svc", "http", NULL, NULL, 80, "absent", 0 },
	{ "withoutHeaders {}: present", "GET", "/np", "x-flag: 1", "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "withoutHeaders {}: present empty", "GET", "/np", "x-flag:", "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "query regex", "GET", "/q?id=123", NULL, "svc", "http", NULL, NULL, 80, "query", 0 },
	{ "query among others", "GET", "/q?a=1&id=7&b", NULL, "svc", "http", NULL, NULL, 80, "query", 0 },
	{ "query decoded", "GET", "/q?id=%31%32", NULL, "svc", "http", NULL, NULL, 80, "query", 0 },
	{ "query regex full match", "GET", "/q?id=a123", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "query first value counts", "GET", "/q?id=x&id=1", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "query absent", "GET", "/q?idx=1", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "no query string", "GET", "/q", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "exact \"\" matches ?key", "GET", "/flag?debug", NULL, "svc", "http", NULL, NULL, 80, "flag", 0 },
	{ "exact \"\" matches ?key=", "GET", "/flag?debug=", NULL, "svc", "http", NULL, NULL, 80, "flag", 0 },
	{ "exact \"\" not ?key=1", "GET", "/flag?debug=1", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "query name decoded", "GET", "/qp?a%20b=1", NULL, "svc", "http", NULL, NULL, 80, "qpresent", 0 },
	{ "query '+' is a space", "GET", "/qp?a+b", NULL, "svc", "http", NULL, NULL, 80, "qpresent", 0 },
	{ "method", "POST", "/m", NULL, "svc", "http", NULL, NULL, 80, "post", 0 },
	{ "method mismatch", "GET", "/m", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "match entries ORed: first", "GET", "/z", NULL, "a.example", "http", NULL, NULL, 80, "either", 0 },
	{ "match entries ORed: second", "GET", "/z", NULL, "b.example", "https", NULL, NULL, 80, "either", 1 },
	{ "source namespace and labels", "GET", "/src", NULL, "svc", "http", "prod",
	  "{\"app\":\"web\",\"version\":\"v1\",\"x\":\"y\"}", 80, "src", 0 },
	{ "source label missing", "GET", "/src", NULL, "svc", "http", "prod", "{\"app\":\"web\"}", 80, NULL, -1 },
	{ "source label differs", "GET", "/src", NULL, "svc", "http", "prod",
	  "{\"app\":\"web\",\"version\":\"v2\"}", 80, NULL, -1 },
	{ "source namespace differs", "GET", "/src", NULL, "svc", "http", "dev",
	  "{\"app\":\"web\",\"version\":\"v1\"}", 80, NULL, -1 },
	{ "source unknown", "GET", "/src", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "port", "GET", "/port", NULL, "svc", "http", NULL, NULL, 8080, "port", 0 },
	{ "other port", "GET", "/port", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "fields ANDed: all", "GET", "/and", "x-a: 1\nx-b: 23", "svc", "http", NULL, NULL, 80, "and", 0 },
	{ "fields ANDed: one header missing", "GET", "/and", "x-a: 1", "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "fields ANDed: method", "PUT", "/and", "x-a: 1\nx-b: 2", "svc", "http", NULL, NULL, 80, NULL, -1 },
	{ "repeated header joined with ','", "GET", "/x", "x-multi: a\nx-multi: b", "svc", "http", NULL, NULL,
	  80, "multi", 0 },
	{ "first match wins", "GET", "/api/x", "x-user: jason", "svc", "http", NULL, NULL, 80, "prefix", 0 },
	{ "first match wins, later rule", "GET", "/x", "x-debug: 1\nx-user: jason", "svc", "http", NULL, NULL,
	  80, "user", 0 },
	{ "no match", "GET", "/nothing", NULL, "svc", "http", NULL, NULL, 80, NULL, -1 },
};

static void run_route_cases(const struct bm_l7_service *svc, const struct route_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct route_case *c = &cases[i];
		struct req_buf b;
		const struct bm_l7_route *rt;
		int which = 99;

		req_make(&b, c->method, c->path, c->hdrs, c->authority, c->scheme, c->src_ns, c->labels,
			 c->port);
		rt = bm_l7_route_select(svc, &b.r, &which);
		if ((rt ? rt->name : NULL) != c->want &&
		    (!rt || !c->want || strcmp(rt->name, c->want) || which != c->which))
			fprintf(stderr, "\n  route case '%s': got %s/%d\n", c->what, rt ? rt->name : "NULL", which);
		if (c->want) {
			CU_ASSERT_PTR_NOT_NULL(rt);
			if (rt)
				CU_ASSERT_STRING_EQUAL(rt->name, c->want);
		} else {
			CU_ASSERT_PTR_NULL(rt);
		}
		CU_ASSERT_EQUAL(which, c->which);
		req_done(&b);
	}
}

static void test_route_table(void)
{
	struct bm_l7_service *svc = svc_build(routes_main);

	run_route_cases(svc, route_cases, sizeof(route_cases) / sizeof(route_cases[0]));
	svc_free(svc);
}

static void test_route_catch_all(void)
{
	struct bm_l7_service *svc = svc_build(
		"[{\"name\":\"v2\",\"match\":[{\"headers\":{\"end-user\":{\"exact\":\"jason\"}}}]},"
		" {\"name\":\"default\"},"
		" {\"name\":\"unreachable\",\"match\":[{\"uri\":{\"prefix\":\"/\"}}]}]");
	static const struct route_case cases[] = {
		{ "rule before the catch-all", "GET", "/p", "end-user: jason", "svc", "http", NULL, NULL, 80, "v2", 0 },
		{ "catch-all", "GET", "/p", NULL, "svc", "http", NULL, NULL, 80, "default", -1 },
		{ "catch-all takes anything", "DELETE", "/", "x: y", NULL, NULL, NULL, NULL, 1, "default", -1 },
	};
	struct bm_l7_service empty = { 0 };
	struct req_buf b;
	int which = 5;

	run_route_cases(svc, cases, sizeof(cases) / sizeof(cases[0]));
	svc_free(svc);
	/* a service without routes routes nothing */
	req_make(&b, "GET", "/", NULL, "svc", "http", NULL, NULL, 80);
	CU_ASSERT_PTR_NULL(bm_l7_route_select(&empty, &b.r, &which));
	CU_ASSERT_EQUAL(which, -1);
	req_done(&b);
}

/* ---- weighted destinations ----------------------------------------------------- */

static void test_dest_pick(void)
{
	struct bm_l7_dest d[3] = { { .weight = 90 }, { .weight = 10 }, { .weight = 0 } };
	struct bm_l7_route rt = { .dest = d, .n_dest = 2, .total_weight = 100 };
	int count[3] = { 0 };
	unsigned seed = 12345;

	/* every residue once: exactly the weights */
	for (uint32_t r = 0; r < 1000; r++)
		count[bm_l7_dest_pick(&rt, r) - d]++;
	CU_ASSERT_EQUAL(count[0], 900);
	CU_ASSERT_EQUAL(count[1], 100);

	/* relative weights 1:3 over random numbers, total computed when unset */
	d[0].weight = 1;
	d[1].weight = 3;
	rt.total_weight = 0;
	memset(count, 0, sizeof(count));
	for (int i = 0; i < 40000; i++) {
		uint32_t r = (uint32_t)rand_r(&seed) << 16 ^ (uint32_t)rand_r(&seed);

		count[bm_l7_dest_pick(&rt, r) - d]++;
	}
	CU_ASSERT(count[0] > 9000 && count[0] < 11000);
	CU_ASSERT(count[1] > 29000 && count[1] < 31000);

	/* three ways, large r values */
	d[0].weight = 50;
	d[1].weight = 30;
	d[2].weight = 20;
	rt.n_dest = 3;
	rt.total_weight = 100;
	memset(count, 0, sizeof(count));
	for (uint32_t r = 0xffffff00u - 1000; r < 0xffffff00u + 0; r++)
		count[bm_l7_dest_pick(&rt, r) - d]++;
	CU_ASSERT_EQUAL(count[0], 500);
	CU_ASSERT_EQUAL(count[1], 300);
	CU_ASSERT_EQUAL(count[2], 200);

	/* one destination gets everything, whatever its weight */
	d[0].weight = 0;
	rt.n_dest = 1;
	rt.total_weight = 0;
	for (uint32_t r = 0; r < 10; r++)
		CU_ASSERT_PTR_EQUAL(bm_l7_dest_pick(&rt, r), &d[0]);
	rt.n_dest = 0;
	CU_ASSERT_PTR_NULL(bm_l7_dest_pick(&rt, 1));
}

/* ---- rewrite and redirect -------------------------------------------------------- */

static void test_rewrite_table(void)
{
	static const struct {
		const char *what, *match, *rewrite, *path, *want;
	} cases[] = {
		{ "prefix replaced", "{\"uri\":{\"prefix\":\"/wpcatalog\"}}", "/newcatalog", "/wpcatalog/x",
		  "/newcatalog/x" },
		{ "prefix replaced, query kept", "{\"uri\":{\"prefix\":\"/wpcatalog\"}}", "/newcatalog",
		  "/wpcatalog/x?a=1", "/newcatalog/x?a=1" },
		{ "prefix to /", "{\"uri\":{\"prefix\":\"/api/\"}}", "/", "/api/v1", "/v1" },
		{ "exact: whole path", "{\"uri\":{\"exact\":\"/old\"}}", "/new", "/old", "/new" },
		{ "exact: query kept", "{\"uri\":{\"exact\":\"/old\"}}", "/new", "/old?q=2", "/new?q=2" },
		{ "regex: whole path", "{\"uri\":{\"regex\":\"/items/[0-9]+\"}}", "/item", "/items/42?x",
		  "/item?x" },
		{ "no uri match: implicit prefix /", "{\"headers\":{\"x\":{}}}", "/v2", "/x", "/v2x" },
		{ "no uri match, query kept", "{\"method\":{\"exact\":\"GET\"}}", "/v2/", "/x?y", "/v2/x?y" },
		{ "catch-all (no match entry)", NULL, "/v2", "/x", "/v2x" },
		{ "ignoreUriCase prefix", "{\"uri\":{\"prefix\":\"/API\"},\"ignoreUriCase\":true}", "/b", "/api/c",
		  "/b/c" },
		{ "no rewrite: unchanged", "{\"uri\":{\"prefix\":\"/a\"}}", NULL, "/a/b?c", "/a/b?c" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char rj[512], out[128];
		struct bm_l7_service *svc;
		int rc;

		if (cases[i].match)
			snprintf(rj, sizeof(rj), "[{\"name\":\"r\",\"match\":[%s]}]", cases[i].match);
		else
			snprintf(rj, sizeof(rj), "[{\"name\":\"r\"}]");
		svc = svc_build(rj);
		svc->route[0].rewrite_uri = (char *)cases[i].rewrite;
		rc = bm_l7_rewrite_path(&svc->route[0], cases[i].match ? 0 : -1, cases[i].path, out, sizeof(out));
		if (rc || strcmp(out, cases[i].want))
			fprintf(stderr, "\n  rewrite '%s': rc %d '%s'\n", cases[i].what, rc, out);
		CU_ASSERT_EQUAL(rc, 0);
		CU_ASSERT_STRING_EQUAL(out, cases[i].want);
		/* too small a buffer is an error, not a truncation */
		CU_ASSERT_EQUAL(bm_l7_rewrite_path(&svc->route[0], cases[i].match ? 0 : -1, cases[i].path, out,
						   strlen(cases[i].want)), -ENOSPC);
		svc->route[0].rewrite_uri = NULL;
		svc_free(svc);
	}
}

static void test_redirect_table(void)
{
	static const struct {
		const char *what;
		const char *uri, *authority, *scheme;
		uint16_t port;
		uint8_t derive;
		const char *req_scheme, *req_auth, *req_path;
		uint16_t req_port;
		const char *want;
	} cases[] = {
		{ "uri replaces the path", "/new", NULL, NULL, 0, 0, "http", "svc", "/old/x", 80,
		  "http://svc/new" },
		{ "query kept", "/new", NULL, NULL, 0, 0, "http", "svc", "/old?a=1", 80, "http://svc/new?a=1" },
		{ "uri with its own query", "/new?b=2", NULL, NULL, 0, 0, "http", "svc", "/old?a=1", 80,
		  "http://svc/new?b=2" },
		{ "authority", NULL, "other.example", NULL, 0, 0, "http", "svc:8080", "/p", 8080,
		  "http://other.example/p" },
		{ "request port kept in authority", "/n", NULL, NULL, 0, 0, "http", "svc:8080", "/p", 8080,
		  "http://svc:8080/n" },
		{ "scheme https", NULL, NULL, "https", 0, 0, "http", "svc", "/p", 80, "https://svc/p" },
		{ "scheme change drops :80", NULL, NULL, "https", 0, 0, "http", "svc:80", "/p", 80,
		  "https://svc/p" },
		{ "scheme change keeps other ports", NULL, NULL, "https", 0, 0, "http", "svc:8080", "/p", 8080,
		  "https://svc:8080/p" },
		{ "port replaces the request's", NULL, NULL, NULL, 9090, 0, "http", "svc:8080", "/p", 8080,
		  "http://svc:9090/p" },
		{ ":80 omitted for http", NULL, NULL, NULL, 80, 0, "http", "svc:8080", "/p", 8080, "http://svc/p" },
		{ ":443 omitted for https", NULL, NULL, "https", 443, 0, "http", "svc", "/p", 80, "https://svc/p" },
		{ ":443 kept for http", NULL, NULL, NULL, 443, 0, "http", "svc", "/p", 80, "http://svc:443/p" },
		{ "FROM_PROTOCOL_DEFAULT", NULL, NULL, "https", 0, 1, "http", "svc:8080", "/p", 8080,
		  "https://svc/p" },
		{ "FROM_REQUEST_PORT", NULL, "new.example", NULL, 0, 2, "http", "svc:8080", "/p", 8080,
		  "http://new.example:8080/p" },
		{ "FROM_REQUEST_PORT 80 omitted", NULL, NULL, NULL, 0, 2, "http", "svc", "/p", 80, "http://svc/p" },
		{ "IPv6 authority with a new port", NULL, NULL, NULL, 81, 0, "http", "[::1]:8080", "/p", 8080,
		  "http://[::1]:81/p" },
		{ "everything", "/x", "b.example", "https", 8443, 0, "http", "a.example", "/y?z", 80,
		  "https://b.example:8443/x?z" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_l7_route rt = { .name = "r" };
		struct req_buf b;
		char out[256];
		int rc;

		rt.redirect.code = 301;
		rt.redirect.uri = (char *)cases[i].uri;
		rt.redirect.authority = (char *)cases[i].authority;
		rt.redirect.scheme = (char *)cases[i].scheme;
		rt.redirect.port = cases[i].port;
		rt.redirect.derive_port = cases[i].derive;
		req_make(&b, "GET", cases[i].req_path, NULL, cases[i].req_auth, cases[i].req_scheme, NULL, NULL,
			 cases[i].req_port);
		rc = bm_l7_redirect_location(&rt, -1, &b.r, out, sizeof(out));
		if (rc || strcmp(out, cases[i].want))
			fprintf(stderr, "\n  redirect '%s': rc %d '%s'\n", cases[i].what, rc, out);
		CU_ASSERT_EQUAL(rc, 0);
		CU_ASSERT_STRING_EQUAL(out, cases[i].want);
		CU_ASSERT_EQUAL(bm_l7_redirect_location(&rt, -1, &b.r, out, strlen(cases[i].want)), -ENOSPC);
		req_done(&b);
	}
}

/* ---- normalization ------------------------------------------------------------ */

static void test_normalize_table(void)
{
	static const struct {
		const char *in;
		int rc;
		const char *want;
	} cases[] = {
		{ "/", 0, "/" },
		{ "/a/b", 0, "/a/b" },
		{ "/a/../b", 0, "/b" },
		{ "/./a", 0, "/a" },
		{ "/a/./b/.", 0, "/a/b/" },
		{ "/a/b/../../..", 0, "/" },
		{ "/a/b/..", 0, "/a/" },
		{ "/..", 0, "/" },
		{ "/../../a", 0, "/a" },
		{ "/a/b/../c?x=/../y", 0, "/a/c" },   /* query excluded */
		{ "/a?", 0, "/a" },
		{ "//a//b", 0, "//a//b" },            /* slashes are not merged */
		{ "/a/...", 0, "/a/..." },
		{ "/a/..b/.c", 0, "/a/..b/.c" },
		{ "/a%2fb", 0, "/a%2fb" },            /* nothing decoded */
		{ "/a/%2e%2E/b", 0, "/b" },           /* an encoded dot segment is a dot segment */
		{ "/a/.%2e", 0, "/" },
		{ "/a/%2e/b", 0, "/a/b" },
		{ "/a/%2ex", 0, "/a/%2ex" },
		{ "a/b", -EINVAL, NULL },
		{ "", -EINVAL, NULL },
		{ "*", -EINVAL, NULL },
		{ "/a\r\nb", -EINVAL, NULL },
		{ "/a\nb", -EINVAL, NULL },
		{ "/a?b\rc", -EINVAL, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[64];
		int rc = bm_l7_normalize_path(cases[i].in, strlen(cases[i].in), out, sizeof(out));

		if (rc != cases[i].rc || (!rc && strcmp(out, cases[i].want)))
			fprintf(stderr, "\n  normalize '%s': rc %d '%s'\n", cases[i].in, rc, rc ? "" : out);
		CU_ASSERT_EQUAL(rc, cases[i].rc);
		if (!rc)
			CU_ASSERT_STRING_EQUAL(out, cases[i].want);
	}
	{
		/* an embedded NUL is rejected (the length is what counts) */
		char out[16];

		CU_ASSERT_EQUAL(bm_l7_normalize_path("/a\0b", 4, out, sizeof(out)), -EINVAL);
		CU_ASSERT_EQUAL(bm_l7_normalize_path("/abcdef", 7, out, 4), -ENOSPC);
		CU_ASSERT_EQUAL(bm_l7_normalize_path("/abc/..", 7, out, 2), 0);
		CU_ASSERT_STRING_EQUAL(out, "/");
	}
}

/* ---- header operations -------------------------------------------------------- */

static int collect(void *arg, const char *name, const char *value)
{
	char *s = arg;
	size_t l = strlen(s);

	snprintf(s + l, 256 - l, "%s=%s;", name, value);
	return 0;
}

static int stop_at_first(void *arg, const char *name, const char *value)
{
	(*(int *)arg)++;
	return -7;
}

static void test_hdr_ops(void)
{
	struct bm_l7_hdr rset[] = { { "x-a", "route" }, { "x-b", "route" } };
	struct bm_l7_hdr radd[] = { { "x-c", "route" }, { "x-d", "route" } };
	char *rrem[] = { "x-gone" };
	struct bm_l7_hdr dset[] = { { "x-a", "dest" }, { "x-c", "dest" } };
	struct bm_l7_hdr dadd[] = { { "x-b", "dest" } };
	char *drem[] = { "x-d" };
	struct bm_l7_hdr_ops route = { rset, 2, radd, 2, rrem, 1 };
	struct bm_l7_hdr_ops dest = { dset, 2, dadd, 1, drem, 1 };
	const struct bm_l7_hdr_ops *both[] = { &route, &dest };
	const struct bm_l7_hdr_ops *only_route[] = { &route, NULL };
	char got[256] = "";
	int calls = 0;

	/* incoming headers: removed or overwritten ones go, others stay */
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(both, 2, "x-gone", 6), 0);
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(both, 2, "X-Gone", 6), 0);
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(both, 2, "x-a", 3), 0);
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(both, 2, "x-d", 3), 0);
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(both, 2, "x-b", 3), 0);   /* route set */
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(both, 2, "x-c", 3), 0);   /* dest set */
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(both, 2, "x-e", 3), 1);
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(both, 2, "x-go", 4), 1);
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(only_route, 2, "x-c", 3), 1);
	CU_ASSERT_EQUAL(bm_l7_hdr_keep(NULL, 0, "x-a", 3), 1);

	/* written headers: the destination's set wins, its remove deletes the
	 * route's add, adds append */
	CU_ASSERT_EQUAL(bm_l7_hdr_each_added(both, 2, collect, got), 0);
	CU_ASSERT_STRING_EQUAL(got, "x-b=route;x-a=dest;x-c=dest;x-b=dest;");
	got[0] = 0;
	CU_ASSERT_EQUAL(bm_l7_hdr_each_added(only_route, 2, collect, got), 0);
	CU_ASSERT_STRING_EQUAL(got, "x-a=route;x-b=route;x-c=route;x-d=route;");
	CU_ASSERT_EQUAL(bm_l7_hdr_each_added(both, 2, stop_at_first, &calls), -7);
	CU_ASSERT_EQUAL(calls, 1);
}

BM_SUITE(l7match, BM_CASE(test_strmatch_compile), BM_CASE(test_strmatch_eval),
	 BM_CASE(test_strmatch_threads), BM_CASE(test_route_table), BM_CASE(test_route_catch_all),
	 BM_CASE(test_dest_pick), BM_CASE(test_rewrite_table), BM_CASE(test_redirect_table),
	 BM_CASE(test_normalize_table), BM_CASE(test_hdr_ops))
