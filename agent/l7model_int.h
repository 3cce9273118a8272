/* What the files of the L7 compiler share; internal to agent/l7model*.c,
 * not an API (that is l7.h). One bm_l7_build:
 *
 *   agent/l7model.c           the arena, circuit-breaker counters, the build
 *                             context, services and the bm_l7_* entry points
 *   agent/l7model_clusters.c  destinations -> struct bm_l7_cluster
 *   agent/l7model_routes.c    VirtualService http rules -> struct bm_l7_route */
#ifndef BM_L7MODEL_INT_H
#define BM_L7MODEL_INT_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>
#include "l7.h"
#include "model.h"
#include "strmap.h"

struct arena;

/* ---- build context ---- */

struct fixup {
	struct bm_l7_cluster **slot;    /* in the arena */
	size_t idx;                     /* into ctx.clusters */
};

struct ctx {
	struct bm_m_registry ses, wes, drs, vss;
	struct arena *a;
	FILE *log;
	struct bm_l7_cluster *clusters; /* growing; copied into the arena at the end */
	uint8_t *per_request;           /* per cluster: its policy needs the HTTP path */
	size_t n_clusters, cap_clusters;
	struct bm_strmap by_name;       /* cluster name -> index + 1 */
	struct fixup *fix;
	size_t n_fix, cap_fix;
	struct bm_l7_service *svc;
	size_t n_svc, cap_svc;
};

/* ---- agent/l7model.c ---- */

void *l7m_arena_alloc(struct arena *a, size_t size);
void *l7m_arena_array(struct arena *a, size_t n, size_t size);
char *l7m_arena_strndup(struct arena *a, const char *s, size_t len);
char *l7m_arena_strdup(struct arena *a, const char *s);
char *l7m_arena_strdup_lower(struct arena *a, const char *s);
int l7m_arena_track(struct arena *a, struct bm_strmatch *m);
const char *l7m_jstr(const json_t *o, const char *k);
void l7m_warn(struct ctx *x, const struct bm_m_res *r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
uint32_t l7m_duration_ms(struct ctx *x, const struct bm_m_res *r, const json_t *o,
			 const char *field, uint32_t dflt);

/* ---- agent/l7model_clusters.c ---- */

int l7m_resolve_cluster(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *self,
			const json_t *self_port, const json_t *dest,
			struct bm_l7_cluster **slot);

/* ---- agent/l7model_routes.c ---- */

int l7m_rule_is_l7(const json_t *rule);
int l7m_compile_rule(struct ctx *x, const struct bm_m_res *vs, const struct bm_m_res *se,
		     const json_t *port, const json_t *rule, struct bm_l7_route *rt);

#endif
