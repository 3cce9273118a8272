/* Inbound policy decisions made by the destination's meshd: per mesh
 * connection PeerAuthentication (may plaintext come in?) and L4
 * AuthorizationPolicy (may this source reach this port?); per HTTP request,
 * for pods that need it, RequestAuthentication (JWT) and the full
 * AuthorizationPolicy.
 *
 * Connection versus request. A pod "needs HTTP" (bm_policy_workload_needs_http)
 * when an AuthorizationPolicy applying to it uses an HTTP-only attribute
 * (methods, paths, hosts, requestPrincipals, remoteIpBlocks, when keys
 * other than source.ip/namespace/principal and destination.ip/port) or a
 * RequestAuthentication applies to it. For such a pod:
 *  - the proxy engine parses the connection as HTTP and sets
 *    bm_conn_attrs.http_per_request = 1 for the connection check; that check
 *    then does PeerAuthentication (STRICT refuses plaintext) and only the
 *    DENY rules free of HTTP-only attributes (they would deny every request
 *    of the connection anyway). No ALLOW policy is applied at that point, so
 *    an ALLOW rule with paths does not refuse the connection before its
 *    requests are seen;
 *  - every request then goes through bm_policy_check_http(): JWT first
 *    (401), then every AuthorizationPolicy with full semantics (403).
 * A connection that will not be parsed as HTTP (http_per_request = 0) gets
 * the L4 evaluation with Istio's degradation (§4.3): ALLOW rules with
 * HTTP-only attributes never match, DENY rules ignore those attributes. */
#ifndef BM_POLICY_H
#define BM_POLICY_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "l7.h"

struct bm_agent;

struct bm_conn_attrs {
	const char *src_principal;   /* "cluster.local/ns/NS/sa/SA" (no spiffe://), NULL = plaintext */
	const char *src_namespace;   /* from the principal; NULL = unknown */
	uint32_t src_ip;             /* network order */
	uint32_t dst_ip;             /* network order: the pod */
	uint16_t dst_port;           /* host order */
	uint8_t http_per_request;    /* every request of this connection will go through
				      * bm_policy_check_http(): connection check = PeerAuthentication
				      * + pure-L4 DENY rules (see above) */
	const char *dst_pod_ns;      /* the destination pod's namespace and name */
	const char *dst_pod_name;
};

/* 0 = allow; -EACCES = deny, reason gets a short text for logs and metrics
 * ("peer_authentication_strict", "authorization_policy_deny:<ns>/<name>",
 * "authorization_policy_no_allow_match"). */
int bm_policy_check(struct bm_agent *a, const struct bm_conn_attrs *c, char *reason, size_t len);

/* One HTTP request arriving at a pod that needs HTTP. */
struct bm_policy_http {
	const char *method;              /* :method */
	const char *host;                /* :authority or Host, port included if sent */
	const char *path;                /* normalized (mesh pathNormalization), no query */
	const char *query;               /* after '?', NULL = none */
	const struct bm_http_hdr *hdr;   /* names lower case; name_len 0 = NUL-terminated */
	size_t n_hdr;
};

#define BM_POLICY_MAX_STRIP 4

struct bm_policy_http_result {
	char reason[128];                /* deny reason (logs, metrics): as bm_policy_check, or
					  * "jwt_invalid: <why>" */
	char principal[512];             /* request principal "<iss>/<sub>", "" = none */
	char www_authenticate[512];      /* the 401's www-authenticate value */
	char body[160];                  /* the 401's body (Envoy's text, e.g. "Jwt is expired") */
	/* forwardOriginalToken false: remove before forwarding upstream (also on allow) */
	char strip_header[BM_POLICY_MAX_STRIP][128];   /* lower case header names */
	size_t n_strip_header;
	char strip_param[BM_POLICY_MAX_STRIP][128];    /* query parameter names */
	size_t n_strip_param;
};

/* 0 when the configuration has no AuthorizationPolicy and no
 * RequestAuthentication: every request passes bm_policy_check_http untouched,
 * and a caller may skip it. No lock (an atomic read), any thread. */
int bm_policy_http_any(void);

/* How many times a thread found a new policy view and took the view lock to
 * pick it up (decisions on an unchanged view take no lock): for tests. */
unsigned long bm_policy_view_refreshes(void);

/* c: the connection the request came on (as given to bm_policy_check).
 * 0 allow; -EPERM invalid JWT: answer 401 with res->www_authenticate and
 * res->body; -EACCES: answer 403 "RBAC: access denied". Thread-safe (proxy
 * workers); takes the agent lock only to copy the snapshot pointer. */
int bm_policy_check_http(struct bm_agent *a, const struct bm_conn_attrs *c,
			 const struct bm_policy_http *h, struct bm_policy_http_result *res);

/* 1 when the workload at ip (network order) in namespace ns (its
 * WorkloadEntry by address) needs the HTTP path (see above), 0 when not or
 * unknown. From the compiled policy view alone: no agent lock, cost ~ the
 * number of policies; fine per connection. */
int bm_policy_workload_needs_http(const char *ns, uint32_t ip);

/* The namespace and service account ("default" when unset) of the first
 * WorkloadEntry, in store order and any namespace, with address ip (network
 * order): the identity its workload must present. -ENOENT when unknown.
 * From the policy view: no agent lock (a data-path worker calls it per new
 * tunnel). */
int bm_policy_workload_account(uint32_t ip, char *ns, size_t ns_len, char *sa, size_t sa_len);

/* After each store change (with or without the agent lock held): compile
 * the policy view the checks above use (until the first call, nothing is
 * enforced: there is no configuration), parse the inline JWKS and (re)arm
 * the background fetches of every jwksUri. Never blocks on the network. */
void bm_policy_store_changed(const json_t *resources);
/* At exit: stop the JWKS fetch thread, free the cache. */
void bm_policy_shutdown(void);

#endif
