/* The mesh side of meshd: the CA and workload identities for the pods
 * enrolled on this node (and, with the proxy, their capture listeners). */
#ifndef BM_MESH_H
#define BM_MESH_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <jansson.h>

struct bm_agent;

struct bm_mesh_opts {
	const char *trust_domain;   /* default cluster.local */
	const char *ca_dir;         /* embedded CA: root created or loaded here */
	const char *ca_cert, *ca_key; /* or a CA that is given */
	long cert_ttl;              /* seconds; 0 = 24 h */
	/* The CA as a service (docs/identity.md §6, casvc.h). */
	const char *ca_serve;       /* IP:PORT: this meshd signs other nodes' CSRs */
	const char *ca_addr;        /* HOST:PORT: no CA key here, SVIDs by CSR... */
	const char *ca_bundle;      /* ...trusting this root (PEM) */
	const char *join_token;     /* one-time, from `meshctl node join` */
};

int bm_mesh_init(struct bm_agent *a, const struct bm_mesh_opts *o);
void bm_mesh_free(struct bm_agent *a);
/* Bring identities in line with the enrolled pods and their service
 * accounts (from their WorkloadEntries). Called with a->lock held. */
void bm_mesh_sync(struct bm_agent *a);
/* The SPIFFE ID the workload at ip (network order) must present: its
 * WorkloadEntry's namespace and service account. -ENOENT when unknown.
 * From the policy view (bm_policy_workload_account): no agent lock. */
int bm_mesh_expected_identity(struct bm_agent *a, uint32_t ip, char *buf, size_t len);
/* Rotation at half-life; called from the main loop's tick. */
void bm_mesh_tick(struct bm_agent *a, time_t now);
/* For `meshctl ca show`: the root, the mode (embedded, serve, client) and
 * the CA service's or client's counters. NULL on allocation failure. */
json_t *bm_mesh_ca_json(struct bm_agent *a);
/* For `meshctl cert request`: ask the CA for ns/sa as this node, install
 * nothing. Only on a node that has no CA key. */
json_t *bm_mesh_ca_request_json(struct bm_agent *a, const char *ns, const char *sa);
/* `meshd --join-only`: get (or check) the node certificate in state_dir and
 * return: 0 when a valid one is held afterwards. */
int bm_mesh_join(const struct bm_mesh_opts *o, const char *node, const char *state_dir);

#endif
