/* L4 authorization (AuthorizationPolicy) and PeerAuthentication resolution:
 * pure functions over the store snapshot, unit-tested with tables. */
#ifndef BM_AUTHZ_H
#define BM_AUTHZ_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "bpfmesh/abi.h"

#define BM_ROOT_NAMESPACE "istio-system"

struct bm_authz_req {
	const char *principal;   /* peer identity "td/ns/NS/sa/SA" (no spiffe://), NULL = plaintext */
	const char *ns;          /* peer namespace (from the principal), NULL = unknown */
	uint32_t src_ip;         /* network order */
	uint32_t dst_ip;         /* network order */
	uint16_t dst_port;       /* the workload's port, host order */
};

/* 0 allow, -EACCES deny (reason says which policy or why). */
int bm_authz_eval(const json_t *resources, const char *root_ns, const char *wl_ns,
		  const json_t *wl_labels, const struct bm_authz_req *r, char *reason, size_t len);
/* The workload's resolved mTLS mode and port-level overrides. */
int bm_peerauth_mode(const json_t *resources, const char *root_ns, const char *wl_ns,
		     const json_t *wl_labels, struct bm_pod_inbound *out);
/* Istio's string matching: exact, prefix*, *suffix, * (non-empty). */
int bm_authz_str_match(const char *pattern, const char *value);

#endif
