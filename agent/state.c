/* Status and counters for the admin socket, read back from the maps. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "agent.h"
#include "store.h"
#include "proxy.h"

/* id -> name for one id kind, as a dense array (NULL where unused). */
static const char **names_by_id(const struct bm_ids *ids, enum bm_id_kind k)
{
	const char **names = calloc(ids->limit[k], sizeof(*names));
	const char *key;
	uint64_t id;

	if (!names)
		return NULL;
	for (size_t it = 0; bm_strmap_next(&ids->map[k], &it, &key, &id);)
		if (id < ids->limit[k])
			names[id] = key;
	return names;
}

static const char *host_of(const struct bm_model *m, const char *svc)
{
	for (size_t i = 0; i < m->n_svc; i++) {
		char ip[INET_ADDRSTRLEN], name[64];

		inet_ntop(AF_INET, &m->svc[i].vip, ip, sizeof(ip));
		snprintf(name, sizeof(name), "%s:%u", ip, ntohs(m->svc[i].port));
		if (!strcmp(name, svc))
			return m->svc[i].host;
	}
	return "unknown";
}

json_t *bm_agent_stats_json(struct bm_agent *a)
{
	const struct bm_maps *fd = &a->loader.fd;
	int ncpu = libbpf_num_possible_cpus();
	const char **svcs = names_by_id(&a->rec.ids, BM_ID_SVC);
	const char **bes = names_by_id(&a->rec.ids, BM_ID_BACKEND);
	const char **cls = names_by_id(&a->rec.ids, BM_ID_CLUSTER);
	struct bm_stats *pc = calloc(ncpu > 0 ? ncpu : 1, sizeof(*pc));
	struct bm_cluster_stats *cpc = calloc(ncpu > 0 ? ncpu : 1, sizeof(*cpc));
	json_t *out = json_pack("{s:b,s:s,s:[],s:[],s:[]}", "ok", 1, "node", a->node,
				"connections", "backends", "clusters");
	struct bm_stats_key k, next;

	if (!svcs || !bes || !cls || !pc || !cpc || !out || ncpu <= 0)
		goto out;
	for (int e = bpf_map_get_next_key(fd->stats, NULL, &next); !e;
	     e = bpf_map_get_next_key(fd->stats, &k, &next)) {
		struct bm_stats sum = {};

		k = next;
		if (bpf_map_lookup_elem(fd->stats, &k, pc))
			continue;
		for (int c = 0; c < ncpu; c++) {
			sum.opened += pc[c].opened;
			sum.closed += pc[c].closed;
			sum.failed += pc[c].failed;
			sum.bytes_sent += pc[c].bytes_sent;
			sum.bytes_recv += pc[c].bytes_recv;
		}
		json_array_append_new(json_object_get(out, "connections"),
			json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I}",
				  "service", k.svc_id < BM_MAX_SERVICES && svcs[k.svc_id] ? svcs[k.svc_id] : "unknown",
				  "host", host_of(&a->model, k.svc_id < BM_MAX_SERVICES && svcs[k.svc_id] ? svcs[k.svc_id] : ""),
				  "backend", k.backend_id < BM_MAX_BACKEND_IDS && bes[k.backend_id] ? bes[k.backend_id] : "unknown",
				  "source_pod", bm_pods_by_cgroup(&a->pods, k.src_cgroup) ?
					bm_pods_by_cgroup(&a->pods, k.src_cgroup)->name : "unknown",
				  "opened", (json_int_t)sum.opened, "closed", (json_int_t)sum.closed,
				  "failed", (json_int_t)sum.failed, "bytes_sent", (json_int_t)sum.bytes_sent,
				  "bytes_recv", (json_int_t)sum.bytes_recv));
	}
	for (uint32_t id = 1; id < BM_MAX_BACKEND_IDS; id++) {
		uint32_t active = 0, ej = 0;

		if (!bes[id])
			continue;
		bpf_map_lookup_elem(fd->backend_active, &id, &active);
		bpf_map_lookup_elem(fd->backend_eject, &id, &ej);
		json_array_append_new(json_object_get(out, "backends"),
			json_pack("{s:s,s:i,s:i,s:b}", "backend", bes[id], "id", (int)id,
				  "active", (int)active, "ejected", ej != 0));
	}
	for (uint32_t id = 1; id < BM_MAX_CLUSTER_IDS; id++) {
		struct bm_cluster_state cs = {};
		struct bm_cluster_stats sum = {};

		if (!cls[id])
			continue;
		bpf_map_lookup_elem(fd->cluster_state, &id, &cs);
		if (!bpf_map_lookup_elem(fd->cluster_stats, &id, cpc))
			for (int c = 0; c < ncpu; c++) {
				sum.refused_max_conns += cpc[c].refused_max_conns;
				sum.refused_no_backend += cpc[c].refused_no_backend;
				sum.picks += cpc[c].picks;
				sum.panics += cpc[c].panics;
			}
		json_array_append_new(json_object_get(out, "clusters"),
			json_pack("{s:s,s:i,s:I,s:I,s:I,s:I}", "cluster", cls[id], "active", (int)cs.active,
				  "picks", (json_int_t)sum.picks, "panics", (json_int_t)sum.panics,
				  "refused_max_conns", (json_int_t)sum.refused_max_conns,
				  "refused_no_backend", (json_int_t)sum.refused_no_backend));
	}
	if (a->proxy)
		json_object_set_new(out, "proxy", bm_proxy_stats_json(a->proxy));
out:
	free(svcs);
	free(bes);
	free(cls);
	free(pc);
	free(cpc);
	return out;
}

json_t *bm_agent_status_json(struct bm_agent *a)
{
	json_t *st;
	int connected = 0;
	time_t last_ok = 0;

	bm_store_health(a->store, &connected, &last_ok);
	st = json_pack("{s:b,s:s,s:b,s:i,s:I,s:I,s:I,s:I,s:I,s:s,s:s,s:s,s:{s:i,s:i,s:b},s:i,s:i,s:i,s:o,s:s}",
			 "ok", 1, "node", a->node, "ready", a->ready, "pid", (int)getpid(),
			 "uptime_seconds", (json_int_t)(time(NULL) - a->started),
			 "applied_generation", (json_int_t)a->applied_generation,
			 "store_generation", (json_int_t)a->store_generation,
			 "reloads", (json_int_t)a->reloads, "reload_errors", (json_int_t)a->reload_errors,
			 "store", a->store_url, "bpffs", a->loader.pindir, "cgroup", a->loader.cgroup,
			 "links", "adopted", a->loader.adopted_links, "created", a->loader.created_links,
			 "maps_adopted", a->loader.adopted_maps != 0,
			 "services", (int)a->rec.n_services, "clusters", (int)a->rec.n_clusters,
			 "backends", (int)a->rec.n_backends, "pods", bm_pods_json(&a->pods),
			 "last_error", a->last_error);
	/* Staleness: while the store is unreachable the last good config stays. */
	if (st)
		json_object_update_new(st, json_pack("{s:b,s:I}", "store_connected", connected,
						     "store_last_ok", (json_int_t)last_ok));
	return st;
}
