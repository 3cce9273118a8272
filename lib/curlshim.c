/* libcurl through dlopen (see curlshim.h for why). */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "curlshim.h"

#define CURL_SONAME "libcurl.so.4"

/* Every libcurl function bpfmesh calls. curl_multi_wakeup is the newest
 * (7.68.0). */
#define CURL_FUNCS(X)                                                          \
	X(global_init) X(global_cleanup)                                       \
	X(easy_init) X(easy_cleanup) X(easy_reset) X(easy_perform)             \
	X(easy_strerror) X(easy_setopt) X(easy_getinfo)                        \
	X(slist_append) X(slist_free_all)                                      \
	X(multi_init) X(multi_cleanup) X(multi_add_handle)                     \
	X(multi_remove_handle) X(multi_perform) X(multi_info_read)             \
	X(multi_poll) X(multi_wakeup)

struct curl_api {
	void *dl;
	int rc;          /* bm_curl_load()'s answer */
	char err[256];
#define X(name) __typeof__(&curl_##name) name;
	CURL_FUNCS(X)
#undef X
};

static struct curl_api api_process, api_test;
/* What the wrappers use: api_process, or api_test while a test says so. */
static struct curl_api *api = &api_process;
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void api_load(struct curl_api *a, const char *soname)
{
	const char *missing = NULL;
	CURLcode cc;

	memset(a, 0, sizeof(*a));
	a->dl = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (!a->dl) {
		snprintf(a->err, sizeof(a->err), "%s not found: %s", soname, dlerror());
		a->rc = -ELIBACC;
		return;
	}
#define X(name)                                                    \
	if (!missing && !(a->name = dlsym(a->dl, "curl_" #name)))  \
		missing = "curl_" #name;
	CURL_FUNCS(X)
#undef X
	if (missing) {
		snprintf(a->err, sizeof(a->err), "%s has no %s (libcurl 7.68 or newer is needed)",
			 soname, missing);
		a->rc = -ELIBBAD;
		goto err_close;
	}
	cc = a->global_init(CURL_GLOBAL_DEFAULT);
	if (cc != CURLE_OK) {
		snprintf(a->err, sizeof(a->err), "%s: curl_global_init: %s", soname,
			 a->easy_strerror(cc));
		a->rc = -EIO;
		goto err_close;
	}
	return;
err_close:
	dlclose(a->dl);
	a->dl = NULL;
}

static void api_unload(struct curl_api *a)
{
	if (a->dl) {
		a->global_cleanup();
		dlclose(a->dl);
	}
	memset(a, 0, sizeof(*a));
}

static void api_load_process(void)
{
	api_load(&api_process, CURL_SONAME);
}

/* The table to call through, loading libcurl on first use; NULL without it. */
static const struct curl_api *curl_api(void)
{
	pthread_once(&api_once, api_load_process);
	return api->rc ? NULL : api;
}

int bm_curl_load(void)
{
	pthread_once(&api_once, api_load_process);
	return api->rc;
}

const char *bm_curl_error(void)
{
	pthread_once(&api_once, api_load_process);
	return api->err;
}

int bm_curl_test_use(const char *soname)
{
	pthread_once(&api_once, api_load_process);
	api = &api_process;
	api_unload(&api_test);
	if (soname) {
		api_load(&api_test, soname);
		api = &api_test;
	}
	return api->rc;
}

/* ---------------------------------------------------------------- easy */

CURL *bm_curl_easy_init(void)
{
	const struct curl_api *a = curl_api();

	if (!a) {
		errno = ELIBACC;
		return NULL;
	}
	return a->easy_init();
}

void bm_curl_easy_cleanup(CURL *h)
{
	const struct curl_api *a = curl_api();

	if (a && h)
		a->easy_cleanup(h);
}

void bm_curl_easy_reset(CURL *h)
{
	const struct curl_api *a = curl_api();

	if (a && h)
		a->easy_reset(h);
}

CURLcode bm_curl_easy_perform(CURL *h)
{
	const struct curl_api *a = curl_api();

	return a ? a->easy_perform(h) : CURLE_FAILED_INIT;
}

const char *bm_curl_easy_strerror(CURLcode cc)
{
	const struct curl_api *a = curl_api();

	/* Without libcurl every failure is that one. */
	return a ? a->easy_strerror(cc) : api->err;
}

/* Option numbers carry their argument type in steps of 10000 (curl.h's
 * CURLOPTTYPE_*): what makes a typed wrapper safe to pass on as varargs. */
static bool opt_is(CURLoption opt, long type)
{
	return (long)opt - (long)opt % 10000 == type;
}

CURLcode bm_curl_setopt_long(CURL *h, CURLoption opt, long v)
{
	const struct curl_api *a = curl_api();

	if (!a)
		return CURLE_FAILED_INIT;
	if (!opt_is(opt, CURLOPTTYPE_LONG))
		return CURLE_BAD_FUNCTION_ARGUMENT;
	return a->easy_setopt(h, opt, v);
}

CURLcode bm_curl_setopt_ptr(CURL *h, CURLoption opt, const void *p)
{
	const struct curl_api *a = curl_api();

	if (!a)
		return CURLE_FAILED_INIT;
	if (!opt_is(opt, CURLOPTTYPE_OBJECTPOINT))
		return CURLE_BAD_FUNCTION_ARGUMENT;
	return a->easy_setopt(h, opt, p);
}

CURLcode bm_curl_setopt_write(CURL *h, CURLoption opt, curl_write_callback fn)
{
	const struct curl_api *a = curl_api();

	if (!a)
		return CURLE_FAILED_INIT;
	/* Other callbacks have other signatures. */
	if (opt != CURLOPT_WRITEFUNCTION)
		return CURLE_BAD_FUNCTION_ARGUMENT;
	return a->easy_setopt(h, opt, fn);
}

CURLcode bm_curl_getinfo_long(CURL *h, CURLINFO info, long *v)
{
	const struct curl_api *a = curl_api();

	if (!a)
		return CURLE_FAILED_INIT;
	if ((info & CURLINFO_TYPEMASK) != CURLINFO_LONG)
		return CURLE_BAD_FUNCTION_ARGUMENT;
	return a->easy_getinfo(h, info, v);
}

/* ---------------------------------------------------------------- slist */

struct curl_slist *bm_curl_slist_append(struct curl_slist *l, const char *s)
{
	const struct curl_api *a = curl_api();

	return a ? a->slist_append(l, s) : NULL;
}

void bm_curl_slist_free_all(struct curl_slist *l)
{
	const struct curl_api *a = curl_api();

	if (a && l)
		a->slist_free_all(l);
}

/* ---------------------------------------------------------------- multi */

CURLM *bm_curl_multi_init(void)
{
	const struct curl_api *a = curl_api();

	if (!a) {
		errno = ELIBACC;
		return NULL;
	}
	return a->multi_init();
}

CURLMcode bm_curl_multi_cleanup(CURLM *m)
{
	const struct curl_api *a = curl_api();

	return a ? a->multi_cleanup(m) : CURLM_INTERNAL_ERROR;
}

CURLMcode bm_curl_multi_add_handle(CURLM *m, CURL *h)
{
	const struct curl_api *a = curl_api();

	return a ? a->multi_add_handle(m, h) : CURLM_INTERNAL_ERROR;
}

CURLMcode bm_curl_multi_remove_handle(CURLM *m, CURL *h)
{
	const struct curl_api *a = curl_api();

	return a ? a->multi_remove_handle(m, h) : CURLM_INTERNAL_ERROR;
}

CURLMcode bm_curl_multi_perform(CURLM *m, int *running)
{
	const struct curl_api *a = curl_api();

	if (!a) {
		*running = 0;
		return CURLM_INTERNAL_ERROR;
	}
	return a->multi_perform(m, running);
}

CURLMsg *bm_curl_multi_info_read(CURLM *m, int *queued)
{
	const struct curl_api *a = curl_api();

	if (!a) {
		*queued = 0;
		return NULL;
	}
	return a->multi_info_read(m, queued);
}

CURLMcode bm_curl_multi_poll(CURLM *m, struct curl_waitfd *extra, unsigned n_extra,
			     int timeout_ms, int *ret)
{
	const struct curl_api *a = curl_api();

	return a ? a->multi_poll(m, extra, n_extra, timeout_ms, ret) : CURLM_INTERNAL_ERROR;
}

CURLMcode bm_curl_multi_wakeup(CURLM *m)
{
	const struct curl_api *a = curl_api();

	return a ? a->multi_wakeup(m) : CURLM_INTERNAL_ERROR;
}
