/* Small lookups over canonical resources shared by the model, the policy
 * evaluators and the mesh: label selectors, CIDRs, a workload by address. */
#ifndef BM_RESUTIL_H
#define BM_RESUTIL_H
#include <stdint.h>
#include <jansson.h>

/* Every label of selector present with the same value in labels (an empty
 * or absent selector matches everything). */
int bm_labels_match(const json_t *selector, const json_t *labels);
/* How specific a namespaced policy resource (Telemetry, ...) is for a
 * workload in ns with labels (Istio's hierarchy): 2 its selector matches
 * (same namespace), 1 selector-less in the workload's namespace, 0
 * selector-less in root_ns, -1 it does not apply. An empty matchLabels
 * selects like no selector; a resource without a namespace is in "default". */
int bm_res_level(const json_t *r, const char *ns, const json_t *labels, const char *root_ns);
/* ip (network order) inside "a.b.c.d[/n]". */
int bm_cidr_contains(const char *cidr, uint32_t ip);
/* The WorkloadEntry with spec.address == ip (dotted quad) in namespace ns
 * (NULL = any namespace), or NULL. */
const json_t *bm_find_workload_entry(const json_t *resources, const char *ns, const char *ip);

#endif
