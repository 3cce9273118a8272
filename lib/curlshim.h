/* libcurl, loaded when first needed. The JWKS fetch (agent/reqauthn.c), the
 * Zipkin exporter (agent/tracing.c) and the etcd store (lib/store_etcd.c) are
 * its only users and most nodes run none of them, while linking libcurl maps
 * its whole dependency tree (libssh2, librtmp, libldap, krb5, libidn2, ...)
 * into every meshd and meshctl: about 3.6 MB of RSS for nothing. So the
 * binaries link no curl symbol; libcurl.so.4 is dlopen()ed by the first
 * bm_curl_load() (or wrapper call), once per process, and curl_global_init()
 * runs right after.
 *
 * <curl/curl.h> still gives the types and constants. curl_easy_setopt() and
 * curl_easy_getinfo() are variadic, so they are wrapped per argument type;
 * a wrapper given an option of another type returns
 * CURLE_BAD_FUNCTION_ARGUMENT instead of passing a wrongly typed argument.
 *
 * Without libcurl the wrappers fail like libcurl itself does when out of
 * resources (NULL handles, CURLE_FAILED_INIT) and bm_curl_easy_strerror()
 * gives the load error, so the callers' error paths report it. */
#ifndef BM_CURLSHIM_H
#define BM_CURLSHIM_H
#include <curl/curl.h>

/* 0 once libcurl is loaded and initialised, else -ELIBACC (no
 * libcurl.so.4), -ELIBBAD (a function is missing: libcurl too old) or -EIO
 * (curl_global_init failed), the same on every call; the reason is in
 * bm_curl_error(). Thread-safe. */
int bm_curl_load(void);
/* Why bm_curl_load() failed ("libcurl.so.4 not found: <dlerror>"); "" when
 * it did not. */
const char *bm_curl_error(void);

CURL *bm_curl_easy_init(void);
void bm_curl_easy_cleanup(CURL *h);
void bm_curl_easy_reset(CURL *h);
CURLcode bm_curl_easy_perform(CURL *h);
const char *bm_curl_easy_strerror(CURLcode cc);
/* curl_easy_setopt() for options of type long, of pointer type (strings,
 * slists, buffers, callback data) and for CURLOPT_WRITEFUNCTION. */
CURLcode bm_curl_setopt_long(CURL *h, CURLoption opt, long v);
CURLcode bm_curl_setopt_ptr(CURL *h, CURLoption opt, const void *p);
CURLcode bm_curl_setopt_write(CURL *h, CURLoption opt, curl_write_callback fn);
/* curl_easy_getinfo() for CURLINFO_LONG items. */
CURLcode bm_curl_getinfo_long(CURL *h, CURLINFO info, long *v);

struct curl_slist *bm_curl_slist_append(struct curl_slist *l, const char *s);
void bm_curl_slist_free_all(struct curl_slist *l);

CURLM *bm_curl_multi_init(void);
CURLMcode bm_curl_multi_cleanup(CURLM *m);
CURLMcode bm_curl_multi_add_handle(CURLM *m, CURL *h);
CURLMcode bm_curl_multi_remove_handle(CURLM *m, CURL *h);
CURLMcode bm_curl_multi_perform(CURLM *m, int *running);
CURLMsg *bm_curl_multi_info_read(CURLM *m, int *queued);
CURLMcode bm_curl_multi_poll(CURLM *m, struct curl_waitfd *extra, unsigned n_extra,
			     int timeout_ms, int *ret);
CURLMcode bm_curl_multi_wakeup(CURLM *m);

/* Tests only, with no other thread using curl: makes the wrappers use
 * soname, loaded now and outside the once (a missing library leaves them
 * failing as in a process without libcurl); NULL goes back to the process's
 * libcurl.so.4. Returns what loading soname gave, as bm_curl_load(). */
int bm_curl_test_use(const char *soname);

#endif
