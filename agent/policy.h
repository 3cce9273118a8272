/* Inbound policy decisions made by the destination's meshd for each mesh
 * connection: PeerAuthentication (may plaintext come in?) and L4
 * AuthorizationPolicy (may this source reach this port?). */
#ifndef BM_POLICY_H
#define BM_POLICY_H
#include <stddef.h>
#include <stdint.h>

struct bm_agent;

struct bm_conn_attrs {
	const char *src_principal;   /* "cluster.local/ns/NS/sa/SA" (no spiffe://), NULL = plaintext */
	const char *src_namespace;   /* from the principal; NULL = unknown */
	uint32_t src_ip;             /* network order */
	uint32_t dst_ip;             /* network order: the pod */
	uint16_t dst_port;           /* host order */
	const char *dst_pod_ns;      /* the destination pod's namespace and name */
	const char *dst_pod_name;
};

/* 0 = allow; -EACCES = deny, reason gets a short text for logs and metrics
 * ("peer_authentication_strict", "authorization_policy:<ns>/<name>", ...). */
int bm_policy_check(struct bm_agent *a, const struct bm_conn_attrs *c, char *reason, size_t len);

#endif
