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
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include "accesslog.h"
#include "agent.h"
#include "l7.h"
#include "l7agent.h"
#include "log.h"
#include "model.h"
#include "proxy.h"
#include "resutil.h"
#include "tracing.h"

/* What sockops had counted for a backend at the last look. */
struct seen {
	uint32_t id;
	uint64_t connected, failed;
};

static struct {
	struct seen *s;
	size_t n, cap;
	uint64_t last_ms;
	uint32_t *pos;           /* backend id -> 1 + index in s: a scan per backend
				  * made every tick O(backends^2) */
	uint32_t *ids, cap_ids;  /* one cluster's backend ids, reused */
} kseen;

#define KERNEL_HEALTH_EVERY_MS 500
#define MAX_FAILURE_EVENTS 64

int bm_l7_agent_init(struct bm_agent *a)
{
	a->outlier = bm_outlier_new(BM_MAX_BACKEND_IDS);
	return a->outlier ? 0 : -ENOMEM;
}

void bm_l7_agent_free(struct bm_agent *a)
{
	free(kseen.s);
	free(kseen.pos);
	free(kseen.ids);
	memset(&kseen, 0, sizeof(kseen));
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

static int podlog_sort(const void *x, const void *y)
{
	const struct bm_l7_podlog *p = x, *q = y;
	int r = strcmp(p->ns, q->ns);

	return r ? r : strcmp(p->name, q->name);
}

/* Access-log sinks of every enrolled pod, by its WorkloadEntry's labels
 * (Telemetry selectors match workload labels). */
static void fill_podlog(struct bm_agent *a, struct bm_l7_config *cfg)
{
	_Static_assert(BM_ACCESSLOG_MAX_SINKS == sizeof(cfg->podlog[0].fd) / sizeof(int), "sinks");
	cfg->podlog = calloc(a->pods.n ? a->pods.n : 1, sizeof(*cfg->podlog));
	cfg->n_podlog = 0;
	if (!cfg->podlog)
		return;
	for (size_t i = 0; i < a->pods.n; i++) {
		const struct bm_pod *pod = &a->pods.p[i];
		const json_t *we = bm_find_workload_entry(a->resources, pod->ns, pod->ip);
		struct bm_l7_podlog *pl = &cfg->podlog[cfg->n_podlog];
		struct bm_accesslog_sinks sk;

		bm_accesslog_sinks(a->resources, pod->ns,
				   json_object_get(json_object_get(we, "spec"), "labels"), &sk);
		if (!sk.n)
			continue;
		snprintf(pl->ns, sizeof(pl->ns), "%s", pod->ns);
		snprintf(pl->name, sizeof(pl->name), "%s", pod->name);
		pl->n = sk.n;
		memcpy(pl->fd, sk.fd, sizeof(pl->fd));
		cfg->n_podlog++;
	}
	qsort(cfg->podlog, cfg->n_podlog, sizeof(*cfg->podlog), podlog_sort);
}

static int podtrace_sort(const void *x, const void *y)
{
	const struct bm_l7_podtrace *p = x, *q = y;
	int r = strcmp(p->ns, q->ns);

	return r ? r : strcmp(p->name, q->name);
}

/* Tracing settings of every enrolled pod (Telemetry tracing, selectors on
 * its WorkloadEntry's labels), with what its spans say about it: canonical
 * service and address. */
static void fill_podtrace(struct bm_agent *a, struct bm_l7_config *cfg)
{
	cfg->podtrace = calloc(a->pods.n ? a->pods.n : 1, sizeof(*cfg->podtrace));
	cfg->n_podtrace = 0;
	if (!cfg->podtrace)
		return;
	for (size_t i = 0; i < a->pods.n; i++) {
		const struct bm_pod *pod = &a->pods.p[i];
		const json_t *we = bm_find_workload_entry(a->resources, pod->ns, pod->ip);
		const json_t *labels = json_object_get(json_object_get(we, "spec"), "labels");
		struct bm_l7_podtrace *pt = &cfg->podtrace[cfg->n_podtrace++];
		struct bm_trace_settings ts;

		bm_trace_settings(a->resources, pod->ns, labels, &ts);
		snprintf(pt->ns, sizeof(pt->ns), "%s", pod->ns);
		snprintf(pt->name, sizeof(pt->name), "%s", pod->name);
		snprintf(pt->service, sizeof(pt->service), "%s",
			 bm_trace_canonical_service(labels, pod->name));
		if (inet_pton(AF_INET, pod->ip, &pt->ip) != 1)
			pt->ip = 0;
		pt->sample_ppm = ts.sample_ppm;
		pt->report = ts.report;
	}
	qsort(cfg->podtrace, cfg->n_podtrace, sizeof(*cfg->podtrace), podtrace_sort);
}

void bm_l7_agent_publish(struct bm_agent *a, struct bm_l7_config *cfg)
{
	struct bm_l7_config *old = a->l7;

	if (!cfg)
		return;
	fill_backend_ids(a, cfg);
	fill_podlog(a, cfg);
	fill_podtrace(a, cfg);
	bm_proxy_set_l7(a->proxy, cfg);
	a->l7 = cfg; /* our reference from bm_l7_build */
	if (old)
		bm_l7_put(old);
}

static void report(struct bm_agent *a, const struct bm_m_cluster *c, const uint32_t *ids,
		   uint32_t id, enum bm_outlier_ev ev, uint64_t now_ms)
{
	uint32_t one = 1;

	if (bm_outlier_report(a->outlier, &c->od, id, ids, c->n, ev, now_ms) != 1)
		return;
	if (bpf_map_update_elem(a->loader.fd.backend_eject, &id, &one, BPF_ANY))
		bm_log("outlier: eject backend id %u: %s", id, strerror(errno));
	else
		bm_log("outlier: ejected backend id %u of %s (kernel-path connect failures)", id, c->name);
}

static struct seen *seen_of(uint32_t id, int *fresh)
{
	struct seen *n;

	*fresh = 0;
	if (id >= BM_MAX_BACKEND_IDS)
		return NULL;
	if (!kseen.pos && !(kseen.pos = calloc(BM_MAX_BACKEND_IDS, sizeof(*kseen.pos))))
		return NULL;
	if (kseen.pos[id])
		return &kseen.s[kseen.pos[id] - 1];
	if (kseen.n == kseen.cap) {
		size_t cap = kseen.cap ? kseen.cap * 2 : 64;

		n = realloc(kseen.s, cap * sizeof(*n));
		if (!n)
			return NULL;
		kseen.s = n;
		kseen.cap = cap;
	}
	*fresh = 1;
	n = &kseen.s[kseen.n++];
	memset(n, 0, sizeof(*n));
	n->id = id;
	kseen.pos[id] = (uint32_t)kseen.n;
	return n;
}

/* Kernel-path connect outcomes (sockops' backend_health_v1) of the hosts of
 * clusters with outlierDetection, fed to the same detector as the HTTP
 * path's results (istio-api.md §2.5: for TCP, connection failures count
 * as consecutive errors). Order within one look is approximated: the
 * counters say how many of each happened, and consecutive_failed how many
 * failures came last. */
static void kernel_health(struct bm_agent *a, uint64_t now_ms)
{
	for (size_t i = 0; i < a->model.n_svc; i++) {
		const struct bm_m_service *svc = &a->model.svc[i];

		for (uint32_t d = 0; d < svc->n_dests; d++) {
			const struct bm_m_cluster *c = svc->d[d].c;
			uint32_t *ids;

			if (!c->od.enabled || !c->n)
				continue;
			if (c->n > kseen.cap_ids) {
				ids = realloc(kseen.ids, c->n * sizeof(*ids));
				if (!ids)
					return;
				kseen.ids = ids;
				kseen.cap_ids = c->n;
			}
			ids = kseen.ids;
			for (uint32_t j = 0; j < c->n; j++) {
				char addr[INET_ADDRSTRLEN + 8], ip[INET_ADDRSTRLEN];

				inet_ntop(AF_INET, &c->b[j].ip, ip, sizeof(ip));
				snprintf(addr, sizeof(addr), "%s:%u", ip, ntohs(c->b[j].port));
				if (bm_reconcile_backend_id(&a->rec, addr, &ids[j]))
					ids[j] = 0;
			}
			for (uint32_t j = 0; j < c->n; j++) {
				struct bm_backend_health h;
				uint64_t new_ok, new_fail;
				struct seen *sn;
				int fresh;

				if (!ids[j] || bpf_map_lookup_elem(a->loader.fd.backend_health, &ids[j], &h))
					continue;
				sn = seen_of(ids[j], &fresh);
				if (!sn)
					return;
				new_ok = h.connected - sn->connected;
				new_fail = h.failed - sn->failed;
				sn->connected = h.connected;
				sn->failed = h.failed;
				if (fresh || (!new_ok && !new_fail))
					continue;
				if (new_fail > h.consecutive_failed && new_ok) {
					/* failures, then a success, maybe more failures */
					new_fail -= h.consecutive_failed;
					for (uint64_t k = 0; k < new_fail && k < MAX_FAILURE_EVENTS; k++)
						report(a, c, ids, ids[j], BM_OE_LOCAL_FAILURE, now_ms);
					new_fail = h.consecutive_failed;
				}
				if (new_ok)
					report(a, c, ids, ids[j], BM_OE_SUCCESS, now_ms);
				for (uint64_t k = 0; k < new_fail && k < MAX_FAILURE_EVENTS; k++)
					report(a, c, ids, ids[j], BM_OE_LOCAL_FAILURE, now_ms);
			}
		}
	}
}

void bm_l7_agent_tick(struct bm_agent *a, uint64_t now_ms)
{
	uint32_t ids[256];
	size_t n;

	if (!a->outlier)
		return;
	if (now_ms - kseen.last_ms >= KERNEL_HEALTH_EVERY_MS) {
		kseen.last_ms = now_ms;
		kernel_health(a, now_ms);
	}
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
