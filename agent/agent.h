/* meshd's state, shared by its jobs (main loop, admin, reload). */
#ifndef BM_AGENT_H
#define BM_AGENT_H
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include "loader.h"
#include "model.h"
#include "pods.h"
#include "reconcile.h"
#include "identity.h"

struct bm_store;

struct bm_l7_config;
struct bm_outlier;

struct bm_agent {
	char node[128];
	char run_dir[PATH_MAX];
	char store_url[PATH_MAX];
	struct bm_loader loader;
	struct bm_reconciler rec;
	struct bm_pods pods;
	struct bm_model model;          /* last applied */
	json_t *resources;              /* the store snapshot it was built from */
	struct bm_store *store;
	uint64_t store_generation;      /* last seen in the store */
	uint64_t applied_generation;    /* last fully applied */
	uint64_t reloads, reload_errors;
	unsigned model_warnings;
	char last_error[512];
	time_t started;
	int ready;
	/* Held by the main loop while it changes model, ids or pods, and by the
	 * metrics thread while it reads them. Maps are read without it. */
	pthread_mutex_t lock;
	char metrics_addr[64];          /* ADDR:PORT of the Prometheus endpoint */
	char ready_addr[64];            /* ADDR:PORT of /healthz/ready */
	/* Mesh identity (agent/mesh.c): the CA and this node's workload SVIDs. */
	struct bm_ca *ca;
	struct bm_identity_mgr idm;
	int mesh_on;
	/* The user-space proxy (agent/proxy.c) and the pods it serves. */
	struct bm_proxy *proxy;
	struct bm_mesh_pod *mpods;
	size_t n_mpods;
	/* The L7 path (agent/l7agent.c): the published configuration and the
	 * node-wide outlier state the workers report into. */
	struct bm_l7_config *l7;
	struct bm_outlier *outlier;
};

/* A pod whose traffic meshd carries: listeners, sk_lookup, proxy entry. */
struct bm_mesh_pod {
	char name[128], ns[64];
	uint32_t ip;       /* network order */
	uint32_t slot;     /* inbound_socks_v1 index */
	int inbound;       /* in the mesh: inbound capture too (else outbound listener only) */
	uint64_t sig;      /* of the identity and labels the proxy was given */
	int live;          /* seen in this sync */
};

uint64_t bm_now_ms(void);
/* Read the store and apply it; keeps the last good config on failure. */
int bm_agent_reload(struct bm_agent *a);

/* Admin socket (mode 0600): one JSON request line, one JSON reply line. */
int bm_admin_listen(const char *path);
void bm_admin_serve(struct bm_agent *a, int listen_fd);

/* Counters and state read back from the kernel maps. */
json_t *bm_agent_stats_json(struct bm_agent *a);
json_t *bm_agent_status_json(struct bm_agent *a);

#endif
