/* AuthorizationPolicy (L4 per connection, full L7 per HTTP request) and
 * PeerAuthentication resolution: pure functions over the store snapshot,
 * unit-tested with tables. */
#ifndef BM_AUTHZ_H
#define BM_AUTHZ_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "bpfmesh/abi.h"
#include "l7.h"

#define BM_ROOT_NAMESPACE "istio-system"

struct bm_authz_req {
	const char *principal;   /* peer identity "td/ns/NS/sa/SA" (no spiffe://), NULL = plaintext */
	const char *ns;          /* peer namespace (from the principal), NULL = unknown */
	uint32_t src_ip;         /* network order */
	uint32_t dst_ip;         /* network order */
	uint16_t dst_port;       /* the workload's port, host order */
};

/* An HTTP request, as AuthorizationPolicy sees it (reference §4.1). */
struct bm_authz_http {
	const char *method;              /* :method */
	const char *host;                /* :authority / Host, port included if sent */
	const char *path;                /* normalized (§4.1), without the query string */
	const struct bm_http_hdr *hdr;   /* request headers, names lower case */
	size_t n_hdr;
	const char *req_principal;       /* verified JWT "<iss>/<sub>", NULL = none */
	const json_t *claims;            /* verified JWT payload, NULL = none */
	uint32_t remote_ip;              /* remoteIpBlocks/remote.ip, network order; 0 = src_ip
					  * (numTrustedProxies 0: the downstream peer) */
};

/* Reasons are "authorization_policy_deny:<ns>/<name>" (a DENY policy
 * matched) and "authorization_policy_no_allow_match". */

/* L4 evaluation of a connection that is not looked at as HTTP: HTTP-only
 * attributes drop ALLOW rules and are ignored in DENY rules (§4.3).
 * 0 allow, -EACCES deny (reason says which policy or why). */
int bm_authz_eval(const json_t *resources, const char *root_ns, const char *wl_ns,
		  const json_t *wl_labels, const struct bm_authz_req *r, char *reason, size_t len);
/* One HTTP request (h != NULL): every attribute with its full semantics.
 * h == NULL is bm_authz_eval(). Order §4.2: CUSTOM ignored (logged once),
 * DENY, then no ALLOW => allow, an ALLOW matches => allow, else deny;
 * AUDIT never decides. */
int bm_authz_eval_http(const json_t *resources, const char *root_ns, const char *wl_ns,
		       const json_t *wl_labels, const struct bm_authz_req *r,
		       const struct bm_authz_http *h, char *reason, size_t len);
/* The connection-time part of an evaluation whose requests will each go
 * through bm_authz_eval_http(): only DENY rules free of HTTP-only
 * attributes (and of when keys not known at L4) are applied, since they
 * would deny every request of the connection anyway; ALLOW policies are
 * left to the requests. 0 or -EACCES. */
int bm_authz_eval_conn_precheck(const json_t *resources, const char *root_ns, const char *wl_ns,
				const json_t *wl_labels, const struct bm_authz_req *r,
				char *reason, size_t len);
/* 1 when the workload must be served through the HTTP path: an ALLOW or
 * DENY AuthorizationPolicy applying to it uses an HTTP-only attribute, or a
 * RequestAuthentication applies to it. */
int bm_authz_needs_http(const json_t *resources, const char *root_ns, const char *wl_ns,
			const json_t *wl_labels);
/* Does policy/RequestAuthentication res apply to the workload? Root
 * namespace: mesh-wide (a selector there matches in every namespace);
 * otherwise the workload's namespace, all of it or by selector. */
int bm_authz_applies(const json_t *res, const char *root_ns, const char *wl_ns,
		     const json_t *wl_labels);
/* The workload's resolved mTLS mode and port-level overrides. */
int bm_peerauth_mode(const json_t *resources, const char *root_ns, const char *wl_ns,
		     const json_t *wl_labels, struct bm_pod_inbound *out);
/* Istio's string matching: exact, prefix*, *suffix, * (non-empty). */
int bm_authz_str_match(const char *pattern, const char *value);
/* paths: the string match above, or a URI template when pattern holds '{':
 * "{*}" one non-empty segment, "{**}" (last) the rest of the path. */
int bm_authz_path_match(const char *pattern, const char *path);

#endif
