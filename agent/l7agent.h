/* meshd's main-loop side of the L7 path (agent/l7agent.c): build and
 * publish the L7 configuration per store generation, and return ejected
 * hosts to service. Main thread only. */
#ifndef BM_L7AGENT_H
#define BM_L7AGENT_H
#include <stdint.h>
#include <jansson.h>

struct bm_agent;
struct bm_model;
struct bm_l7_config;

/* Creates the node-wide outlier state (a->outlier). */
int bm_l7_agent_init(struct bm_agent *a);
void bm_l7_agent_free(struct bm_agent *a);
/* Builds the L7 configuration from res and marks m's services that it
 * covers (m->svc[i].l7) so the reconciler tells connect4 to capture them.
 * Without a proxy, *out = NULL and nothing is marked. */
int bm_l7_agent_build(struct bm_agent *a, const json_t *res, struct bm_model *m,
		      struct bm_l7_config **out);
/* After the reconciler applied the same generation: backend ids, then the
 * workers get cfg (ownership of the build's reference passes to a). */
void bm_l7_agent_publish(struct bm_agent *a, struct bm_l7_config *cfg);
/* Ejections whose time is over: clear them in the kernel's map. */
void bm_l7_agent_tick(struct bm_agent *a, uint64_t now_ms);

#endif
