/*
 * Inbound decisions for mesh traffic, called by proxy workers once per
 * connection (never per byte) and, for pods that need HTTP, once per request.
 * Each store change compiles a policy view (bm_policy_store_changed): only
 * the PeerAuthentications, AuthorizationPolicies and RequestAuthentications
 * (the evaluators' inputs, in store order) and an index of WorkloadEntries by
 * namespace and address, so a decision costs the number of policies, not the
 * size of the store (12,000 resources at the scale bench). Each thread keeps
 * a reference to the view it last used and a generation number; a decision
 * on an unchanged configuration takes no lock (an atomic load of the
 * generation and a reference count), and only a thread that sees a new
 * generation takes view_lock, for a pointer copy, never across a reload (the
 * agent lock is held for whole reloads and scrapes). Evaluation needs no lock:
 * the view is immutable, jansson's reference counts are atomic and evaluation
 * only reads. The JWKS cache has its own lock (see reqauthn.c). The
 * connection/request split is described in policy.h.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "agent.h"
#include "authz.h"
#include "log.h"
#include "policy.h"
#include "reqauthn.h"
#include "resutil.h"
#include "strmap.h"

struct view {
	atomic_int refs;
	json_t *policies;          /* PeerAuthentication, AuthorizationPolicy, RequestAuthentication */
	json_t *wes;               /* the WorkloadEntries, in store order */
	struct bm_strmap we_at;    /* "ns/address" -> index in wes of the first one */
	struct bm_strmap we_any;   /* "address" -> index in wes of the first in any namespace */
	int n_http;                /* AuthorizationPolicies and RequestAuthentications */
};

static pthread_mutex_t view_lock = PTHREAD_MUTEX_INITIALIZER;
static struct view *current;
static atomic_ulong view_gen = 1;          /* moves with current */
static atomic_ulong view_refreshes;        /* threads that took view_lock (tests) */
static __thread struct view *thread_view;  /* with a reference; freed at thread exit */
static __thread unsigned long thread_gen;
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
/* AuthorizationPolicies + RequestAuthentications in the current view: 0
 * lets a request skip bm_policy_check_http's lock and walk. */
static atomic_int http_policies;

static void view_put(struct view *v)
{
	if (!v || atomic_fetch_sub(&v->refs, 1) != 1)
		return;
	json_decref(v->policies);
	json_decref(v->wes);
	bm_strmap_free(&v->we_at);
	bm_strmap_free(&v->we_any);
	free(v);
}

static void thread_view_drop(void *v)
{
	view_put(v);
}

static void thread_key_init(void)
{
	if (pthread_key_create(&thread_key, thread_view_drop))
		bm_log("policy: no thread key: a thread's last policy view stays when it ends");
}

/* The current view with a reference for the caller (view_put it). */
static struct view *view_get(void)
{
	unsigned long g = atomic_load_explicit(&view_gen, memory_order_acquire);
	struct view *v, *old;

	if (thread_gen != g) {
		pthread_once(&thread_key_once, thread_key_init);
		pthread_mutex_lock(&view_lock);
		v = current;
		if (v)
			atomic_fetch_add(&v->refs, 1);
		g = atomic_load_explicit(&view_gen, memory_order_relaxed);
		pthread_mutex_unlock(&view_lock);
		old = thread_view;
		thread_view = v;
		thread_gen = g;
		pthread_setspecific(thread_key, v);
		view_put(old);
		atomic_fetch_add_explicit(&view_refreshes, 1, memory_order_relaxed);
	}
	/* The thread's own reference keeps it alive meanwhile. */
	v = thread_view;
	if (v)
		atomic_fetch_add(&v->refs, 1);
	return v;
}

unsigned long bm_policy_view_refreshes(void)
{
	return atomic_load(&view_refreshes);
}

static int is_policy_kind(const char *kind)
{
	return !strcmp(kind, "PeerAuthentication") || !strcmp(kind, "AuthorizationPolicy") ||
	       !strcmp(kind, "RequestAuthentication");
}

static struct view *view_build(const json_t *resources)
{
	struct view *v = calloc(1, sizeof(*v));
	char key[384];
	uint64_t dummy;
	json_t *r;
	size_t i;

	if (!v)
		return NULL;
	atomic_init(&v->refs, 1);
	v->policies = json_array();
	v->wes = json_array();
	if (!v->policies || !v->wes)
		goto fail;
	json_array_foreach(resources, i, r) {
		const char *kind = json_string_value(json_object_get(r, "kind"));
		const char *ns, *addr;

		if (!kind)
			continue;
		if (is_policy_kind(kind)) {
			if (json_array_append(v->policies, r))
				goto fail;
			v->n_http += strcmp(kind, "PeerAuthentication") != 0;
			continue;
		}
		if (strcmp(kind, "WorkloadEntry"))
			continue;
		addr = json_string_value(json_object_get(json_object_get(r, "spec"), "address"));
		ns = json_string_value(json_object_get(json_object_get(r, "metadata"), "namespace"));
		if (!addr)
			continue;
		/* bm_find_workload_entry's answer: the first in store order. */
		snprintf(key, sizeof(key), "%s/%s", ns ? ns : "default", addr);
		if (!bm_strmap_get(&v->we_at, key, &dummy))
			continue;
		/* The first in any namespace is also the first in its own. */
		if (bm_strmap_get(&v->we_any, addr, &dummy) &&
		    bm_strmap_set(&v->we_any, addr, json_array_size(v->wes)))
			goto fail;
		if (bm_strmap_set(&v->we_at, key, json_array_size(v->wes)) ||
		    json_array_append(v->wes, r))
			goto fail;
	}
	return v;
fail:
	view_put(v);
	return NULL;
}

/* Labels of the workload at ip in namespace ns (its WorkloadEntry). */
static const json_t *workload_labels(const struct view *v, const char *ns, uint32_t ip)
{
	char addr[INET_ADDRSTRLEN], key[384];
	uint64_t at;

	inet_ntop(AF_INET, &ip, addr, sizeof(addr));
	snprintf(key, sizeof(key), "%s/%s", ns, addr);
	if (bm_strmap_get(&v->we_at, key, &at))
		return NULL;
	return json_object_get(json_object_get(json_array_get(v->wes, at), "spec"), "labels");
}

static uint8_t port_mode(const struct bm_pod_inbound *pi, uint16_t port)
{
	for (int i = 0; i < pi->n_ports && i < BM_POD_PORT_OVERRIDES; i++)
		if (pi->port[i] == port)
			return pi->port_mode[i];
	return pi->mode;
}

/* The authz view of the connection; peer_ns holds the namespace parsed from
 * the principal when the caller did not give it. */
static void conn_req(const struct bm_conn_attrs *c, struct bm_authz_req *r, char *peer_ns,
		     size_t len)
{
	char fmt[32];

	memset(r, 0, sizeof(*r));
	r->principal = c->src_principal;
	r->src_ip = c->src_ip;
	r->dst_ip = c->dst_ip;
	r->dst_port = c->dst_port;
	snprintf(fmt, sizeof(fmt), "%%*[^/]/ns/%%%zu[^/]", len - 1);
	if (c->src_namespace)
		r->ns = c->src_namespace;
	else if (c->src_principal && sscanf(c->src_principal, fmt, peer_ns) == 1)
		r->ns = peer_ns;
}

int bm_policy_check(struct bm_agent *a, const struct bm_conn_attrs *c, char *reason, size_t len)
{
	const char *ns = c->dst_pod_ns ? c->dst_pod_ns : "default";
	struct bm_authz_req r;
	struct bm_pod_inbound pi;
	const json_t *labels, *res;
	char peer_ns[64] = "";
	struct view *v;
	int err = 0;

	if (len)
		reason[0] = 0;
	v = view_get();
	if (!v)
		return 0; /* no configuration yet: nothing to enforce */
	res = v->policies;
	labels = workload_labels(v, ns, c->dst_ip);
	bm_peerauth_mode(res, BM_ROOT_NAMESPACE, ns, labels, &pi);
	if (!c->src_principal && port_mode(&pi, c->dst_port) == BM_MTLS_STRICT) {
		snprintf(reason, len, "peer_authentication_strict");
		err = -EACCES;
		goto out;
	}
	conn_req(c, &r, peer_ns, sizeof(peer_ns));
	if (c->http_per_request)
		err = bm_authz_eval_conn_precheck(res, BM_ROOT_NAMESPACE, ns, labels, &r, reason, len);
	else
		err = bm_authz_eval(res, BM_ROOT_NAMESPACE, ns, labels, &r, reason, len);
out:
	view_put(v);
	return err;
}

/* ---- per request ---------------------------------------------------------------- */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bm_jwks_cache *_Atomic jwks_cache;

/* The node's JWKS cache, created on first use (under cache_lock; after
 * that, an atomic load per request). */
static struct bm_jwks_cache *cache_get(void)
{
	struct bm_jwks_cache *c = atomic_load_explicit(&jwks_cache, memory_order_acquire);

	if (c)
		return c;
	pthread_mutex_lock(&cache_lock);
	c = atomic_load_explicit(&jwks_cache, memory_order_relaxed);
	if (!c) {
		c = bm_jwks_cache_new(300, 5); /* Envoy: 5 min cache, 5 s fetch timeout */
		atomic_store_explicit(&jwks_cache, c, memory_order_release);
	}
	pthread_mutex_unlock(&cache_lock);
	return c;
}

void bm_policy_store_changed(const json_t *resources)
{
	struct bm_jwks_cache *c = cache_get();
	struct view *v = view_build(resources), *old;

	if (v) {
		pthread_mutex_lock(&view_lock);
		old = current;
		current = v;
		atomic_store(&http_policies, v->n_http);
		atomic_fetch_add_explicit(&view_gen, 1, memory_order_release);
		pthread_mutex_unlock(&view_lock);
		view_put(old);
	} else {
		/* Out of memory: the previous view stays, and the log says so. */
		bm_log("policy: out of memory compiling the policy view; decisions still use the previous one");
	}

	if (c && bm_jwks_cache_sync(c, resources))
		bm_log("request authentication: JWKS cache sync: out of memory");
}

void bm_policy_shutdown(void)
{
	struct bm_jwks_cache *c;
	struct view *v;

	pthread_mutex_lock(&view_lock);
	v = current;
	current = NULL;
	atomic_store(&http_policies, 0);
	atomic_fetch_add_explicit(&view_gen, 1, memory_order_release);
	pthread_mutex_unlock(&view_lock);
	view_put(v);
	/* This thread's reference; other threads drop theirs at their next
	 * decision or when they end. */
	view_put(thread_view);
	thread_view = NULL;
	thread_gen = 0;
	pthread_once(&thread_key_once, thread_key_init);
	pthread_setspecific(thread_key, NULL);

	pthread_mutex_lock(&cache_lock);
	c = atomic_exchange(&jwks_cache, NULL);
	pthread_mutex_unlock(&cache_lock);
	bm_jwks_cache_free(c);
}

int bm_policy_http_any(void)
{
	return atomic_load_explicit(&http_policies, memory_order_relaxed) > 0;
}

int bm_policy_check_http(struct bm_agent *a, const struct bm_conn_attrs *c,
			 const struct bm_policy_http *h, struct bm_policy_http_result *out)
{
	const char *ns = c->dst_pod_ns ? c->dst_pod_ns : "default";
	struct bm_reqauthn_req rq = { .method = h->method, .host = h->host, .path = h->path,
				      .query = h->query, .hdr = h->hdr, .n_hdr = h->n_hdr };
	struct bm_reqauthn_result ra;
	struct bm_authz_http ah;
	struct bm_authz_req r;
	struct bm_jwks_cache *cache;
	const json_t *labels, *res;
	char peer_ns[64] = "";
	struct view *v;
	int err;

	memset(out, 0, sizeof(*out));
	if (!bm_policy_http_any())
		return 0;
	v = view_get();
	if (!v)
		return 0;
	res = v->policies;
	cache = cache_get();
	if (!cache) {
		view_put(v);
		snprintf(out->reason, sizeof(out->reason), "jwt_invalid: out of memory");
		return -ENOMEM;
	}
	labels = workload_labels(v, ns, c->dst_ip);
	err = bm_reqauthn_check(cache, res, BM_ROOT_NAMESPACE, ns, labels, &rq, time(NULL), &ra);
	if (err) {
		snprintf(out->reason, sizeof(out->reason), "jwt_invalid: %.100s", ra.err);
		snprintf(out->body, sizeof(out->body), "%s", ra.err);
		snprintf(out->www_authenticate, sizeof(out->www_authenticate), "%s", ra.www_authenticate);
		goto out;
	}
	conn_req(c, &r, peer_ns, sizeof(peer_ns));
	ah = (struct bm_authz_http){ .method = h->method, .host = h->host, .path = h->path,
				     .hdr = h->hdr, .n_hdr = h->n_hdr,
				     .req_principal = ra.principal[0] ? ra.principal : NULL,
				     .claims = ra.claims };
	err = bm_authz_eval_http(res, BM_ROOT_NAMESPACE, ns, labels, &r, &ah, out->reason,
				 sizeof(out->reason));
	snprintf(out->principal, sizeof(out->principal), "%s", ra.principal);
	for (size_t i = 0; i < ra.n_strip_header && i < BM_POLICY_MAX_STRIP; i++)
		snprintf(out->strip_header[out->n_strip_header++], sizeof(out->strip_header[0]), "%s",
			 ra.strip_header[i]);
	for (size_t i = 0; i < ra.n_strip_param && i < BM_POLICY_MAX_STRIP; i++)
		snprintf(out->strip_param[out->n_strip_param++], sizeof(out->strip_param[0]), "%s",
			 ra.strip_param[i]);
out:
	bm_reqauthn_result_free(&ra);
	view_put(v);
	return err;
}

int bm_policy_workload_needs_http(const char *ns, uint32_t ip)
{
	struct view *v = view_get();
	int need;

	if (!v)
		return 0;
	need = bm_authz_needs_http(v->policies, BM_ROOT_NAMESPACE, ns, workload_labels(v, ns, ip));
	view_put(v);
	return need;
}

int bm_policy_workload_account(uint32_t ip, char *ns, size_t ns_len, char *sa, size_t sa_len)
{
	struct view *v = view_get();
	char addr[INET_ADDRSTRLEN];
	const json_t *we;
	const char *n, *a;
	uint64_t at;
	int err = -ENOENT;

	if (!v)
		return -ENOENT;
	inet_ntop(AF_INET, &ip, addr, sizeof(addr));
	if (!bm_strmap_get(&v->we_any, addr, &at)) {
		we = json_array_get(v->wes, at);
		n = json_string_value(json_object_get(json_object_get(we, "metadata"), "namespace"));
		a = json_string_value(json_object_get(json_object_get(we, "spec"), "serviceAccount"));
		snprintf(ns, ns_len, "%s", n && *n ? n : "default");
		snprintf(sa, sa_len, "%s", a && *a ? a : "default");
		err = 0;
	}
	view_put(v);
	return err;
}
