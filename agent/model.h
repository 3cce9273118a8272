/* The service model: Istio resources (ServiceEntry, WorkloadEntry,
 * DestinationRule, VirtualService) compiled into what the kernel load
 * balancer needs per VIP:port. Pure logic, no maps: unit-tested. */
#ifndef BM_MODEL_H
#define BM_MODEL_H
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>
#include "bpfmesh/abi.h"
#include "l7.h"
#include "strmap.h"

struct bm_m_backend {
	uint32_t ip;     /* network order */
	uint16_t port;   /* network order */
	uint16_t mesh;   /* a mesh workload: traffic to it goes through meshd (mTLS) */
};

/* The label that puts a workload in the mesh, as in Istio ambient. */
#define BM_DATAPLANE_LABEL "istio.io/dataplane-mode"
#define BM_DATAPLANE_MESH  "ambient"

/* What a cluster was built from, for reuse by the next build: the resources
 * (json objects, by identity) its lookups found. Equal keys give equal
 * clusters while those objects are alive and unchanged: the store's parse
 * cache hands out the same object for an unchanged file. */
struct bm_m_ckey {
	const void *dest, *self, *self_port, *target, *dr;
	uint64_t we;             /* WorkloadEntries of target's namespace (hash), if selected */
	char rule_ns[64];
	uint8_t ok;              /* reusable: built without a warning */
};

/* One upstream cluster: service x port x subset, with its merged policy. */
struct bm_m_cluster {
	char name[320];          /* outbound|PORT|SUBSET|HOST, Envoy's naming */
	uint8_t lb;              /* enum bm_lb */
	uint8_t min_health;      /* panic threshold percent */
	uint32_t max_conns;      /* 0 = unlimited */
	int8_t tls;              /* DR tls.mode: 1 ISTIO_MUTUAL, 0 DISABLE, -1 unset (auto mTLS) */
	struct bm_outlier_cfg od;/* outlierDetection: meshd also ejects on kernel-path connect failures */
	uint32_t refs;           /* models holding it (a cluster can outlive its first model) */
	struct bm_m_ckey key;
	uint32_t n, cap;
	struct bm_m_backend *b;  /* n of them, at most BM_M_MAX_BACKENDS */
};

/* Endpoints per cluster the model keeps. The kernel holds BM_MAX_BACKENDS per
 * cluster_v1 entry; the reconciler spreads a larger cluster over several
 * entries (chunks) of the service's BM_MAX_DESTS destinations. */
#define BM_M_MAX_BACKENDS (BM_MAX_DESTS * BM_MAX_BACKENDS)
void bm_m_cluster_free(struct bm_m_cluster *c);

struct bm_m_dest {
	uint32_t weight;
	struct bm_m_cluster *c;
};

struct bm_m_rcache;

struct bm_m_service {
	uint32_t vip;            /* network order */
	uint16_t port;           /* network order */
	char host[256];          /* the ServiceEntry's first host, as FQDN */
	char ns[64];
	uint8_t l7;              /* meshd routes its HTTP requests (set by the agent) */
	uint8_t same;            /* equal to the previous model's entry for vip:port */
	uint32_t n_dests;
	struct bm_m_dest d[BM_MAX_DESTS];
};

/* Name resolution inside pods: a VIP and the names it answers to. */
struct bm_m_name {
	uint32_t vip;
	char ns[64];
	char name[256];
};

struct bm_model {
	struct bm_m_service *svc;
	size_t n_svc;
	struct bm_m_name *names;
	size_t n_names;
	unsigned warnings;
	struct bm_strmap by_key;     /* "vip:port" (hex) -> 1 + index in svc */
	struct bm_m_rcache *rc;      /* what the build read of each resource (model.c) */
};

/* Build the model from an array of canonical resources. Problems that make a
 * service unusable (missing subset, unknown destination) are logged to log,
 * counted in m->warnings, and the rest still builds. */
int bm_model_build(const json_t *resources, struct bm_model *m, FILE *log);
/* The same, reusing prev's clusters whose inputs are unchanged (prev NULL:
 * a full build) and setting svc[].same. The result equals a full build's.
 * prev's resources must still be alive: reuse compares object identities. */
int bm_model_build_inc(const json_t *resources, const struct bm_model *prev,
		       struct bm_model *m, FILE *log);
void bm_model_free(struct bm_model *m);

/* "reviews" in namespace ns -> "reviews.ns.svc.cluster.local"; FQDNs unchanged. */
void bm_fqdn(const char *host, const char *ns, char *out, size_t len);
/* Istio host matching: exact, or "*.suffix" / "*" wildcard in pattern. */
int bm_host_matches(const char *pattern, const char *host);

/* The connect4 selection table for a service (weights -> running sums). */
void bm_model_svc_value(const struct bm_m_service *s, uint32_t svc_id, uint32_t rev,
			struct bm_svc *out);

/* ---- building blocks shared with the L7 compiler (agent/l7model.c) ---- */

/* One resource of the store, as the compilers see it. */
struct bm_m_res {
	const json_t *obj;
	const char *kind, *name, *ns, *created; /* ns "default" when unset */
	const json_t *spec;
	/* Its hosts as FQDNs, when the model computed them (bm_m_collect does
	 * not): "hosts" of a ServiceEntry or VirtualService (set only when an
	 * array), "host" of a DestinationRule. */
	char *const *fq;
	size_t n_fq;
};

/* The resources of one kind, oldest first (creationTimestamp, ns, name). */
struct bm_m_registry {
	struct bm_m_res *r;      /* free() it */
	size_t n;
	uint64_t stamp;          /* which bm_m_collect() filled it (0: none) */
};

int bm_m_collect(const json_t *resources, const char *kind, struct bm_m_registry *reg);
/* The finders below index a collected registry's hosts on first use (one
 * index per finder, kept until a newer registry is searched): lookups in
 * O(1) rather than a scan of every resource. Main thread only. */
/* "a.b.c.d" or "a.b.c.d/32" -> network order. */
int bm_m_parse_ip(const char *s, uint32_t *ip);
/* The (oldest) ServiceEntry with fqdn among its hosts. */
const struct bm_m_res *bm_m_find_se(const struct bm_m_registry *ses, const char *fqdn);
/* The DestinationRule for a host: service namespace, root, others; exact before wildcard. */
const struct bm_m_res *bm_m_find_dr(const struct bm_m_registry *drs, const char *fqdn,
				    const char *svc_ns);
const json_t *bm_m_find_subset(const struct bm_m_res *dr, const char *subset);
/* The (oldest) VirtualService naming one of se's hosts. */
const struct bm_m_res *bm_m_find_vs(const struct bm_m_registry *vss, const struct bm_m_res *se);
/* The port of target a destination means (want = destination.port.number, 0 unset). */
const json_t *bm_m_dest_port(const struct bm_m_res *target, const struct bm_m_res *self,
			     const json_t *self_port, json_int_t want);
/* The first tcp rule whose match fits vip:port, or NULL. */
const json_t *bm_m_pick_tcp_rule(const json_t *tcp, uint32_t vip, json_int_t port);
/* lb, min_health, max_conns, tls of c from a DR trafficPolicy and a subset's. */
void bm_m_apply_policy(struct bm_m_cluster *c, const json_t *top, const json_t *sub);
/* Add target's endpoints on port (filtered by subset_labels) to c; c->tls
 * and c->name set first (mesh flag, log). */
void bm_m_add_endpoints(struct bm_m_cluster *c, const struct bm_m_registry *wes,
			const struct bm_m_res *target, const json_t *port,
			const json_t *subset_labels, FILE *log);

#endif
