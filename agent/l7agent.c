/*
 * The L7 path's place in meshd's main loop: on every store change the L7
 * configuration is rebuilt beside the kernel model (services it covers are
 * captured by connect4 instead of balanced there), given the node-wide
 * backend ids the reconciler allocated, and published to the proxy
 * workers. Outlier ejections are written by the workers as they happen;
 * returning hosts to service runs here, on the main loop's tick.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <bpf/bpf.h>
#include "agent.h"
#include "l7.h"
#include "l7agent.h"
#include "log.h"
#include "proxy.h"

int bm_l7_agent_init(struct bm_agent *a)
{
	a->outlier = bm_outlier_new(BM_MAX_BACKEND_IDS);
	return a->outlier ? 0 : -ENOMEM;
}

void bm_l7_agent_free(struct bm_agent *a)
{
	if (a->l7)
		bm_l7_put(a->l7);
	a->l7 = NULL;
	bm_outlier_free(a->outlier);
	a->outlier = NULL;
}

int bm_l7_agent_build(struct bm_agent *a, const json_t *res, struct bm_model *m,
		      struct bm_l7_config **out)
{
	struct bm_l7_config *cfg = NULL;
	int err;

	*out = NULL;
	if (!a->proxy) /* no user-space path: everything stays on the kernel's L4 path */
		return 0;
	err = bm_l7_build(res, &cfg, stderr);
	if (err)
		return err;
	for (size_t i = 0; i < m->n_svc; i++)
		m->svc[i].l7 = bm_l7_is_l7(cfg, m->svc[i].vip, ntohs(m->svc[i].port)) ? 1 : 0;
	*out = cfg;
	return 0;
}

/* Backend ids come from the reconciler, which allocated them for the
 * kernel's clusters of the same generation (same "ip:port" keys). */
static void fill_backend_ids(struct bm_agent *a, struct bm_l7_config *cfg)
{
	for (size_t i = 0; i < cfg->n_cluster; i++) {
		struct bm_l7_cluster *c = &cfg->cluster[i];

		for (uint32_t j = 0; j < c->n; j++) {
			char addr[INET_ADDRSTRLEN + 8], ip[INET_ADDRSTRLEN];
			uint32_t id = 0;

			inet_ntop(AF_INET, &c->b[j].ip, ip, sizeof(ip));
			snprintf(addr, sizeof(addr), "%s:%u", ip, ntohs(c->b[j].port));
			if (bm_reconcile_backend_id(&a->rec, addr, &id))
				id = 0;
			c->b[j].id = id;
		}
	}
}

void bm_l7_agent_publish(struct bm_agent *a, struct bm_l7_config *cfg)
{
	struct bm_l7_config *old = a->l7;

	if (!cfg)
		return;
	fill_backend_ids(a, cfg);
	bm_proxy_set_l7(a->proxy, cfg);
	a->l7 = cfg; /* our reference from bm_l7_build */
	if (old)
		bm_l7_put(old);
}

void bm_l7_agent_tick(struct bm_agent *a, uint64_t now_ms)
{
	uint32_t ids[256];
	size_t n;

	if (!a->outlier)
		return;
	do {
		n = bm_outlier_tick(a->outlier, now_ms, ids, 256);
		for (size_t i = 0; i < n; i++) {
			uint32_t zero = 0;

			if (bpf_map_update_elem(a->loader.fd.backend_eject, &ids[i], &zero, BPF_ANY))
				bm_log("outlier: return backend id %u: %s", ids[i], strerror(errno));
			else
				bm_log("outlier: backend id %u returned to load balancing", ids[i]);
		}
	} while (n == 256);
}
