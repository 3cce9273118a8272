/* The service model: Istio resources (ServiceEntry, WorkloadEntry,
 * DestinationRule, VirtualService) compiled into what the kernel load
 * balancer needs per VIP:port. Pure logic, no maps: unit-tested. */
#ifndef BM_MODEL_H
#define BM_MODEL_H
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>
#include "bpfmesh/abi.h"

struct bm_m_backend {
	uint32_t ip;     /* network order */
	uint16_t port;   /* network order */
	uint16_t mesh;   /* a mesh workload: traffic to it goes through meshd (mTLS) */
};

/* The label that puts a workload in the mesh, as in Istio ambient. */
#define BM_DATAPLANE_LABEL "istio.io/dataplane-mode"
#define BM_DATAPLANE_MESH  "ambient"

/* One upstream cluster: service x port x subset, with its merged policy. */
struct bm_m_cluster {
	char name[320];          /* outbound|PORT|SUBSET|HOST, Envoy's naming */
	uint8_t lb;              /* enum bm_lb */
	uint8_t min_health;      /* panic threshold percent */
	uint32_t max_conns;      /* 0 = unlimited */
	int8_t tls;              /* DR tls.mode: 1 ISTIO_MUTUAL, 0 DISABLE, -1 unset (auto mTLS) */
	uint32_t n;
	struct bm_m_backend b[BM_MAX_BACKENDS];
};

struct bm_m_dest {
	uint32_t weight;
	struct bm_m_cluster *c;
};

struct bm_m_service {
	uint32_t vip;            /* network order */
	uint16_t port;           /* network order */
	char host[256];          /* the ServiceEntry's first host, as FQDN */
	char ns[64];
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
};

/* Build the model from an array of canonical resources. Problems that make a
 * service unusable (missing subset, unknown destination) are logged to log,
 * counted in m->warnings, and the rest still builds. */
int bm_model_build(const json_t *resources, struct bm_model *m, FILE *log);
void bm_model_free(struct bm_model *m);

/* "reviews" in namespace ns -> "reviews.ns.svc.cluster.local"; FQDNs unchanged. */
void bm_fqdn(const char *host, const char *ns, char *out, size_t len);
/* Istio host matching: exact, or "*.suffix" / "*" wildcard in pattern. */
int bm_host_matches(const char *pattern, const char *host);

/* The connect4 selection table for a service (weights -> running sums). */
void bm_model_svc_value(const struct bm_m_service *s, uint32_t svc_id, uint32_t rev,
			struct bm_svc *out);

#endif
