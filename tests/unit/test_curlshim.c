/* libcurl through lib/curlshim.c: loaded on first use (the binary links no
 * curl symbol), the typed setopt/getinfo wrappers, real exchanges with an
 * HTTP server made here (easy and multi interfaces), and a process without a
 * usable libcurl: the wrappers and their three users (etcd store, Zipkin
 * exporter, JWKS fetch) return the load error instead of crashing. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "curlshim.h"
#include "store_etcd.h"
#include "unit.h"
#include "../../agent/http1.h"
#include "../../agent/l7proxy.h"
#include "../../agent/reqauthn.h"
#include "../../agent/tracing.h"

/* One HTTP/1.1 exchange on 127.0.0.1: keeps the request, answers "hello". */
struct server {
	int lfd;
	unsigned port;
	pthread_t th;
	char req[4096];
};

static size_t request_size(const char *req)
{
	const char *end = strstr(req, "\r\n\r\n"), *cl = strcasestr(req, "\ncontent-length:");

	if (!end)
		return SIZE_MAX;
	return (size_t)(end + 4 - req) + (cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0);
}

static void *server_main(void *arg)
{
	static const char reply[] =
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
	struct server *s = arg;
	int fd = accept(s->lfd, NULL, NULL);
	size_t len = 0;

	while (fd >= 0 && len + 1 < sizeof(s->req) && len < request_size(s->req)) {
		ssize_t r = read(fd, s->req + len, sizeof(s->req) - 1 - len);

		if (r <= 0)
			break;
		len += (size_t)r;
		s->req[len] = '\0';
	}
	if (fd >= 0) {
		(void)!write(fd, reply, sizeof(reply) - 1);
		close(fd);
	}
	return NULL;
}

static void server_start(struct server *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);

	memset(s, 0, sizeof(*s));
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CU_ASSERT_FATAL(s->lfd >= 0 && !bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) &&
			!listen(s->lfd, 1) && !getsockname(s->lfd, (struct sockaddr *)&sa, &sl));
	s->port = ntohs(sa.sin_port);
	CU_ASSERT_FATAL(!pthread_create(&s->th, NULL, server_main, s));
}

static void server_stop(struct server *s)
{
	shutdown(s->lfd, SHUT_RDWR);   /* an accept() nobody connected to returns */
	pthread_join(s->th, NULL);
	close(s->lfd);
}

struct body {
	char b[64];
	size_t len;
};

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
	struct body *out = arg;
	size_t add = size * n;

	if (out->len + add >= sizeof(out->b))
		return 0;
	memcpy(out->b + out->len, data, add);
	out->len += add;
	out->b[out->len] = '\0';
	return add;
}

static CURL *easy_get(const struct server *s, struct body *out)
{
	CURL *h = bm_curl_easy_init();
	char url[64];

	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", s->port);
	CU_ASSERT_EQUAL(bm_curl_setopt_ptr(h, CURLOPT_URL, url), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_setopt_ptr(h, CURLOPT_PROXY, ""), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1L), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, 5000L), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_setopt_write(h, CURLOPT_WRITEFUNCTION, collect), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_setopt_ptr(h, CURLOPT_WRITEDATA, out), CURLE_OK);
	return h;
}

static void test_curl_loads_on_use(void)
{
	void *dl;

	CU_ASSERT_EQUAL_FATAL(bm_curl_load(), 0);
	CU_ASSERT_STRING_EQUAL(bm_curl_error(), "");
	CU_ASSERT_EQUAL(bm_curl_load(), 0);   /* once: the same answer */
	dl = dlopen("libcurl.so.4", RTLD_NOW | RTLD_NOLOAD);
	CU_ASSERT_PTR_NOT_NULL(dl);
	if (dl)
		dlclose(dl);
	CU_ASSERT_STRING_EQUAL(bm_curl_easy_strerror(CURLE_OK), "No error");
}

/* A POST with a header list, answered by the server above. */
static void test_curl_easy_post(void)
{
	struct body out = { .len = 0 };
	struct curl_slist *hdrs;
	struct server s;
	long code = 0;
	CURL *h;

	server_start(&s);
	h = easy_get(&s, &out);
	hdrs = bm_curl_slist_append(NULL, "X-Bpfmesh: unit");
	CU_ASSERT_PTR_NOT_NULL_FATAL(hdrs);
	CU_ASSERT_EQUAL(bm_curl_setopt_ptr(h, CURLOPT_HTTPHEADER, hdrs), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_setopt_ptr(h, CURLOPT_POSTFIELDS, "ping"), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_setopt_long(h, CURLOPT_POSTFIELDSIZE, 4L), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_easy_perform(h), CURLE_OK);
	CU_ASSERT_EQUAL(bm_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &code), CURLE_OK);
	server_stop(&s);
	CU_ASSERT_EQUAL(code, 200);
	CU_ASSERT_STRING_EQUAL(out.b, "hello");
	CU_ASSERT(!strncmp(s.req, "POST / HTTP/1.1\r\n", 17));
	CU_ASSERT_PTR_NOT_NULL(strstr(s.req, "\r\nX-Bpfmesh: unit\r\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(s.req, "\r\n\r\nping"));
	bm_curl_slist_free_all(hdrs);
	bm_curl_easy_cleanup(h);
}

/* The etcd watcher's way: a multi handle driven by perform/poll. */
static void test_curl_multi_get(void)
{
	struct body out = { .len = 0 };
	CURLcode result = CURLE_FAILED_INIT;
	struct server s;
	bool done = false;
	CURLM *m;
	CURL *h;

	server_start(&s);
	h = easy_get(&s, &out);
	m = bm_curl_multi_init();
	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	CU_ASSERT_EQUAL(bm_curl_multi_add_handle(m, h), CURLM_OK);
	for (int i = 0; i < 100 && !done; i++) {
		int running, queued;
		CURLMsg *msg;

		CU_ASSERT_EQUAL(bm_curl_multi_perform(m, &running), CURLM_OK);
		while ((msg = bm_curl_multi_info_read(m, &queued))) {
			if (msg->msg == CURLMSG_DONE && msg->easy_handle == h) {
				result = msg->data.result;
				done = true;
			}
		}
		if (!done)
			CU_ASSERT_EQUAL(bm_curl_multi_poll(m, NULL, 0, 50, NULL), CURLM_OK);
	}
	server_stop(&s);
	CU_ASSERT_TRUE(done);
	CU_ASSERT_EQUAL(result, CURLE_OK);
	CU_ASSERT_STRING_EQUAL(out.b, "hello");
	CU_ASSERT_EQUAL(bm_curl_multi_wakeup(m), CURLM_OK);
	CU_ASSERT_EQUAL(bm_curl_multi_remove_handle(m, h), CURLM_OK);
	CU_ASSERT_EQUAL(bm_curl_multi_cleanup(m), CURLM_OK);
	bm_curl_easy_cleanup(h);
}

/* curl_easy_setopt() takes a long, a pointer or a function pointer by
 * option: a wrapper given another kind of option refuses it. */
static void test_curl_setopt_types(void)
{
	enum { LONG, PTR, WRITE };
	static const struct {
		int wrapper;
		CURLoption opt;
		CURLcode want;
	} cases[] = {
		{ LONG, CURLOPT_TIMEOUT_MS, CURLE_OK },
		{ LONG, CURLOPT_URL, CURLE_BAD_FUNCTION_ARGUMENT },
		{ LONG, CURLOPT_WRITEFUNCTION, CURLE_BAD_FUNCTION_ARGUMENT },
		{ PTR, CURLOPT_URL, CURLE_OK },
		{ PTR, CURLOPT_HTTPHEADER, CURLE_OK },
		{ PTR, CURLOPT_TIMEOUT_MS, CURLE_BAD_FUNCTION_ARGUMENT },
		{ PTR, CURLOPT_POSTFIELDSIZE_LARGE, CURLE_BAD_FUNCTION_ARGUMENT },
		{ WRITE, CURLOPT_WRITEFUNCTION, CURLE_OK },
		{ WRITE, CURLOPT_READFUNCTION, CURLE_BAD_FUNCTION_ARGUMENT },
		{ WRITE, CURLOPT_URL, CURLE_BAD_FUNCTION_ARGUMENT },
	};
	CURL *h = bm_curl_easy_init();
	long v = -1;

	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CURLcode got = cases[i].wrapper == LONG ? bm_curl_setopt_long(h, cases[i].opt, 100L) :
			       cases[i].wrapper == PTR  ? bm_curl_setopt_ptr(h, cases[i].opt, NULL) :
			       bm_curl_setopt_write(h, cases[i].opt, collect);

		if (got != cases[i].want)
			fprintf(stderr, "setopt case %zu: %d, want %d\n", i, got, cases[i].want);
		CU_ASSERT_EQUAL(got, cases[i].want);
	}
	CU_ASSERT_EQUAL(bm_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &v), CURLE_OK);
	CU_ASSERT_EQUAL(v, 0);
	CU_ASSERT_EQUAL(bm_curl_getinfo_long(h, CURLINFO_EFFECTIVE_URL, &v),
			CURLE_BAD_FUNCTION_ARGUMENT);
	bm_curl_easy_cleanup(h);
}

/* The JWKS fetch thread's error for a jwksUri, once it has one. */
static void jwks_fetch_error(char *err, size_t len)
{
	static const char rules[] =
		"[{\"kind\":\"RequestAuthentication\",\"metadata\":{\"name\":\"r\",\"namespace\":\"prod\"},"
		"\"spec\":{\"jwtRules\":[{\"issuer\":\"https://idp\",\"jwksUri\":\"http://127.0.0.1:1/jwks\"}]}}]";
	struct bm_jwks_cache *cache = bm_jwks_cache_new(300, 1);
	json_t *res = json_loads(rules, 0, NULL), *rule;
	struct bm_jwks *keys = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	CU_ASSERT_PTR_NOT_NULL_FATAL(res);
	CU_ASSERT_EQUAL(bm_jwks_cache_sync(cache, res), 0);
	rule = json_array_get(json_object_get(json_object_get(json_array_get(res, 0), "spec"),
					      "jwtRules"), 0);
	for (int i = 0; i < 300; i++) {
		keys = bm_jwks_cache_keys(cache, rule, err, len);
		if (keys || strstr(err, "jwksUri"))
			break;
		usleep(10000);
	}
	CU_ASSERT_PTR_NULL(keys);
	bm_jwks_put(keys);
	json_decref(res);
	bm_jwks_cache_free(cache);
}

/* No usable libcurl: every wrapper fails cleanly, and so do its users, each
 * through its usual error path and with the load error in its message. */
static void test_curl_missing_library(void)
{
	static const struct {
		const char *soname;
		int rc;
		const char *err;
	} cases[] = {
		{ "libbpfmesh-no-such-curl.so.4", -ELIBACC, "libbpfmesh-no-such-curl.so.4 not found: " },
		{ "libc.so.6", -ELIBBAD, "libc.so.6 has no curl_global_init " },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *want = cases[i].err;
		struct bm_etcd *etcd = (void *)1;
		int running = 1, queued = 1;
		char err[192] = "";
		long v = 0;

		CU_ASSERT_EQUAL(bm_curl_test_use(cases[i].soname), cases[i].rc);
		CU_ASSERT_EQUAL(bm_curl_load(), cases[i].rc);
		CU_ASSERT(!strncmp(bm_curl_error(), want, strlen(want)));
		fprintf(stderr, "(expected) %s\n", bm_curl_error());

		errno = 0;
		CU_ASSERT_PTR_NULL(bm_curl_easy_init());
		CU_ASSERT_EQUAL(errno, ELIBACC);
		CU_ASSERT_EQUAL(bm_curl_setopt_long(NULL, CURLOPT_TIMEOUT_MS, 1L), CURLE_FAILED_INIT);
		CU_ASSERT_EQUAL(bm_curl_setopt_ptr(NULL, CURLOPT_URL, "http://x/"), CURLE_FAILED_INIT);
		CU_ASSERT_EQUAL(bm_curl_setopt_write(NULL, CURLOPT_WRITEFUNCTION, collect),
				CURLE_FAILED_INIT);
		CU_ASSERT_EQUAL(bm_curl_easy_perform(NULL), CURLE_FAILED_INIT);
		CU_ASSERT_EQUAL(bm_curl_getinfo_long(NULL, CURLINFO_RESPONSE_CODE, &v), CURLE_FAILED_INIT);
		CU_ASSERT_STRING_EQUAL(bm_curl_easy_strerror(CURLE_FAILED_INIT), bm_curl_error());
		CU_ASSERT_PTR_NULL(bm_curl_slist_append(NULL, "X: y"));
		bm_curl_slist_free_all(NULL);
		bm_curl_easy_reset(NULL);
		bm_curl_easy_cleanup(NULL);
		CU_ASSERT_PTR_NULL(bm_curl_multi_init());
		CU_ASSERT_EQUAL(bm_curl_multi_perform(NULL, &running), CURLM_INTERNAL_ERROR);
		CU_ASSERT_EQUAL(running, 0);
		CU_ASSERT_PTR_NULL(bm_curl_multi_info_read(NULL, &queued));
		CU_ASSERT_EQUAL(queued, 0);
		CU_ASSERT_EQUAL(bm_curl_multi_poll(NULL, NULL, 0, 0, NULL), CURLM_INTERNAL_ERROR);
		CU_ASSERT_EQUAL(bm_curl_multi_wakeup(NULL), CURLM_INTERNAL_ERROR);

		CU_ASSERT_EQUAL(bm_etcd_open("etcd://127.0.0.1:1", &etcd), cases[i].rc);
		CU_ASSERT_PTR_NULL(etcd);
		CU_ASSERT_EQUAL(bm_trace_start_exporter("http://127.0.0.1:1/api/v2/spans", "unit"),
				cases[i].rc);
		CU_ASSERT_FALSE(bm_trace_exporting());
		jwks_fetch_error(err, sizeof(err));
		if (!strstr(err, want))
			fprintf(stderr, "JWKS error \"%s\" does not say \"%s\"\n", err, want);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
	}
	CU_ASSERT_EQUAL(bm_curl_test_use(NULL), 0);
	CU_ASSERT_EQUAL(bm_curl_load(), 0);
	CU_ASSERT_STRING_EQUAL(bm_curl_error(), "");
}

BM_SUITE(curlshim, BM_CASE(test_curl_loads_on_use), BM_CASE(test_curl_easy_post),
	 BM_CASE(test_curl_multi_get), BM_CASE(test_curl_setopt_types),
	 BM_CASE(test_curl_missing_library))
