/*
 * Inbound decisions for mesh traffic, called by proxy workers once per
 * connection (never per byte) and, for pods that need HTTP, once per request.
 * Workers take a reference to the current store snapshot under the agent lock
 * (a pointer copy) and evaluate without it: jansson's reference counts are
 * atomic and evaluation only reads. The JWKS cache has its own lock (see
 * reqauthn.c). The connection/request split is described in policy.h.
 */
#include <arpa/inet.h>
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

/* Labels of the workload at ip in namespace ns (its WorkloadEntry). */
static const json_t *workload_labels(const json_t *res, const char *ns, uint32_t ip)
{
	char addr[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &ip, addr, sizeof(addr));
	return json_object_get(json_object_get(bm_find_workload_entry(res, ns, addr), "spec"), "labels");
}

static uint8_t port_mode(const struct bm_pod_inbound *pi, uint16_t port)
{
	for (int i = 0; i < pi->n_ports && i < BM_POD_PORT_OVERRIDES; i++)
		if (pi->port[i] == port)
			return pi->port_mode[i];
	return pi->mode;
}

static json_t *snapshot(struct bm_agent *a)
{
	json_t *res;

	pthread_mutex_lock(&a->lock);
	res = json_incref(a->resources);
	pthread_mutex_unlock(&a->lock);
	return res;
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
	const json_t *labels;
	char peer_ns[64] = "";
	json_t *res;
	int err = 0;

	if (len)
		reason[0] = 0;
	res = snapshot(a);
	if (!res)
		return 0; /* no configuration yet: nothing to enforce */

	labels = workload_labels(res, ns, c->dst_ip);
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
	json_decref(res);
	return err;
}

/* ---- per request ---------------------------------------------------------------- */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bm_jwks_cache *jwks_cache;

/* The node's JWKS cache, created on first use. */
static struct bm_jwks_cache *cache_get(void)
{
	struct bm_jwks_cache *c;

	pthread_mutex_lock(&cache_lock);
	if (!jwks_cache)
		jwks_cache = bm_jwks_cache_new(300, 5); /* Envoy: 5 min cache, 5 s fetch timeout */
	c = jwks_cache;
	pthread_mutex_unlock(&cache_lock);
	return c;
}

void bm_policy_store_changed(const json_t *resources)
{
	struct bm_jwks_cache *c = cache_get();

	if (c && bm_jwks_cache_sync(c, resources))
		bm_log("request authentication: JWKS cache sync: out of memory");
}

void bm_policy_shutdown(void)
{
	struct bm_jwks_cache *c;

	pthread_mutex_lock(&cache_lock);
	c = jwks_cache;
	jwks_cache = NULL;
	pthread_mutex_unlock(&cache_lock);
	bm_jwks_cache_free(c);
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
	const json_t *labels;
	char peer_ns[64] = "";
	json_t *res;
	int err;

	memset(out, 0, sizeof(*out));
	res = snapshot(a);
	if (!res)
		return 0;
	cache = cache_get();
	if (!cache) {
		json_decref(res);
		snprintf(out->reason, sizeof(out->reason), "jwt_invalid: out of memory");
		return -ENOMEM;
	}
	labels = workload_labels(res, ns, c->dst_ip);
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
	json_decref(res);
	return err;
}

int bm_policy_pod_needs_http(struct bm_agent *a, const char *ns, const char *name)
{
	char ip[sizeof(a->pods.p[0].ip)] = "";
	const json_t *we;
	json_t *res;
	int need = 0;

	pthread_mutex_lock(&a->lock);
	res = json_incref(a->resources);
	for (size_t i = 0; i < a->pods.n; i++)
		if (!strcmp(a->pods.p[i].ns, ns) && !strcmp(a->pods.p[i].name, name))
			snprintf(ip, sizeof(ip), "%s", a->pods.p[i].ip);
	pthread_mutex_unlock(&a->lock);
	if (res && ip[0]) {
		we = bm_find_workload_entry(res, ns, ip);
		need = bm_authz_needs_http(res, BM_ROOT_NAMESPACE, ns,
					   json_object_get(json_object_get(we, "spec"), "labels"));
	}
	json_decref(res);
	return need;
}
