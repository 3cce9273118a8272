/* Host lookups of the service model (agent/model.c) and of the L7 compiler
 * (bm_m_find_*, agent/l7model.c): which ServiceEntry, DestinationRule or
 * VirtualService names a host. Internal to the model; see model.h for the
 * semantics (oldest first, namespace ranks, wildcards). */
#ifndef BM_MODELIX_H
#define BM_MODELIX_H
#include <stddef.h>
#include "model.h"
#include "strmap.h"

/* Host indexes, built once per model build: exact hosts through a hash,
 * wildcard hosts (few) by scan, the oldest resource (lowest index) wins. */
struct hix_entry {
	size_t res;      /* index in the registry */
	size_t next;     /* 1 + next entry of the same host, 0 = end */
};

struct hix_wild {
	size_t res;
	char host[256];  /* FQDN pattern, "*" or "*.suffix" */
};

struct host_index {
	struct bm_strmap head;   /* FQDN -> 1 + first entry */
	struct hix_entry *e;
	size_t n_e, cap_e;
	struct hix_wild *w;
	size_t n_w, cap_w;
};

struct model_index {
	struct host_index se, dr, vs;
	struct bm_strmap we;     /* namespace -> hash of its WorkloadEntries (identities) */
};


/* Index the hosts of reg: field "hosts" (array) or "host" (string); with
 * wild_apart, "*" patterns go to the scanned list. */
int bm_hix_build(struct host_index *x, const struct bm_m_registry *reg, const char *field,
		 int wild_apart);
void bm_hix_free(struct host_index *x);
/* namespace -> identity hash of its WorkloadEntries, in registry order. */
int bm_we_hash_build(struct bm_strmap *x, const struct bm_m_registry *wes);
const struct bm_m_res *bm_ix_find_se(const struct model_index *ix,
				     const struct bm_m_registry *ses, const char *fqdn);
const struct bm_m_res *bm_ix_find_dr(const struct model_index *ix,
				     const struct bm_m_registry *drs, const char *fqdn,
				     const char *svc_ns);
const struct bm_m_res *bm_ix_find_vs(const struct model_index *ix,
				     const struct bm_m_registry *vss, const struct bm_m_res *se);

#endif
