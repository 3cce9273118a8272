/*
 * Who the ends of a metrics row are. Rows are turned into Istio's label set
 * (reference §7.2) from the workload table: the client pod by its cgroup id,
 * its WorkloadEntry by the pod's IP in the pod's namespace, the backend's
 * WorkloadEntry by its IP, the service from the model. The tables that turn
 * ids into names (struct metrics_lookups) are built once per scrape.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "agent.h"
#include "metrics.h"
#include "metrics_int.h"
#include "relay.h"

/* id -> key for the ids in use, sized by the highest id handed out rather
 * than the id space (2 MB of zeroes per scrape for backends otherwise).
 * *n is the array's length; ids at or above it have no name. */
static const char **names_of(const struct bm_ids *ids, enum bm_id_kind k, uint32_t limit,
			     uint32_t *n)
{
	const char **names, *key;
	uint64_t id, top = 0;

	for (size_t it = 0; bm_strmap_next(&ids->map[k], &it, &key, &id);)
		if (id < limit && id > top)
			top = id;
	*n = (uint32_t)top + 1;
	names = calloc(*n, sizeof(*names));
	if (!names)
		return NULL;
	for (size_t it = 0; bm_strmap_next(&ids->map[k], &it, &key, &id);)
		if (id < *n)
			names[id] = key;
	return names;
}

static void addr_key(uint32_t ip, uint16_t port, char *out, size_t len)
{
	char s[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &ip, s, sizeof(s));
	if (port)
		snprintf(out, len, "%s:%u", s, ntohs(port));
	else
		snprintf(out, len, "%s", s);
}

/* A WorkloadEntry-shaped address as a dotted quad ("198.18.1.2/32" -> "198.18.1.2"). */
static int endpoint_ip(const json_t *spec, char *out, size_t len)
{
	const char *addr = json_string_value(json_object_get(spec, "address"));
	char buf[64];
	struct in_addr in;

	if (!addr)
		return -1;
	snprintf(buf, sizeof(buf), "%s", addr);
	buf[strcspn(buf, "/")] = 0;
	if (inet_pton(AF_INET, buf, &in) != 1)
		return -1;
	addr_key(in.s_addr, 0, out, len);
	return 0;
}

void metrics_lookups_free(struct metrics_lookups *lk)
{
	free(lk->svc_name);
	free(lk->backend_name);
	bm_strmap_free(&lk->svc);
	bm_strmap_free(&lk->we_ip);
	bm_strmap_free(&lk->we_ns_ip);
}

int metrics_lookups_build(struct bm_agent *a, struct metrics_lookups *lk)
{
	const json_t *r;
	char key[320];
	uint64_t dummy;
	size_t i;

	memset(lk, 0, sizeof(*lk));
	lk->resources = json_is_array(a->resources) ? a->resources : NULL;
	lk->svc_name = names_of(&a->rec.ids, BM_ID_SVC, BM_MAX_SERVICES, &lk->n_svc_name);
	lk->backend_name = names_of(&a->rec.ids, BM_ID_BACKEND, BM_MAX_BACKEND_IDS,
				    &lk->n_backend_name);
	if (!lk->svc_name || !lk->backend_name)
		return -ENOMEM;
	for (i = 0; i < a->model.n_svc; i++) {
		addr_key(a->model.svc[i].vip, a->model.svc[i].port, key, sizeof(key));
		if (bm_strmap_set(&lk->svc, key, i))
			return -ENOMEM;
	}
	json_array_foreach(lk->resources, i, r) {
		const char *kind = json_string_value(json_object_get(r, "kind"));
		const char *ns = json_string_value(json_object_get(json_object_get(r, "metadata"),
								   "namespace"));
		char ip[INET_ADDRSTRLEN];

		if (!kind || strcmp(kind, "WorkloadEntry") || endpoint_ip(json_object_get(r, "spec"), ip, sizeof(ip)))
			continue;
		if (bm_strmap_get(&lk->we_ip, ip, &dummy) && bm_strmap_set(&lk->we_ip, ip, i))
			return -ENOMEM;
		snprintf(key, sizeof(key), "%s/%s", ns ? ns : "", ip);
		if (bm_strmap_get(&lk->we_ns_ip, key, &dummy) && bm_strmap_set(&lk->we_ns_ip, key, i))
			return -ENOMEM;
	}
	return 0;
}

static const json_t *we_at(const struct metrics_lookups *lk, const struct bm_strmap *m,
			   const char *key)
{
	uint64_t idx;

	if (!lk->resources || bm_strmap_get(m, key, &idx))
		return NULL;
	return json_array_get(lk->resources, idx);
}

/* How an enrolled pod is labelled: its WorkloadEntry, else itself. */
static void label_pod(const struct metrics_lookups *lk, const struct bm_pod *pod,
		      struct bm_peer *p)
{
	const json_t *we;
	char key[256];

	snprintf(key, sizeof(key), "%s/%s", pod->ns, pod->ip);
	we = we_at(lk, &lk->we_ns_ip, key);
	if (we) {
		bm_peer_from_workload_entry(we, p);
		return;
	}
	p->workload = pod->name;
	p->ns = pod->ns;
}

/* The client: the enrolled pod with this cgroup, labelled by its
 * WorkloadEntry (same IP, same namespace); a pod without one is its own
 * workload. */
void metrics_source_peer(struct bm_agent *a, const struct metrics_lookups *lk, uint64_t cgroup_id,
			 struct bm_peer *p)
{
	const struct bm_pod *pod = bm_pods_by_cgroup(&a->pods, cgroup_id);

	memset(p, 0, sizeof(*p));
	if (pod)
		label_pod(lk, pod, p);
}

/* An inline endpoint of the ServiceEntry behind host, with this address. */
static const json_t *inline_endpoint(const struct metrics_lookups *lk, const char *host,
				     const char *ns, const char *ip)
{
	const json_t *r, *h, *ep;
	size_t i, j, k;

	json_array_foreach(lk->resources, i, r) {
		const json_t *meta = json_object_get(r, "metadata");
		const json_t *spec = json_object_get(r, "spec");
		const char *kind = json_string_value(json_object_get(r, "kind"));
		const char *rns = json_string_value(json_object_get(meta, "namespace"));
		int hit = 0;

		if (!kind || strcmp(kind, "ServiceEntry") || !rns || strcmp(rns, ns))
			continue;
		json_array_foreach(json_object_get(spec, "hosts"), j, h)
			hit |= json_string_value(h) && !strcmp(json_string_value(h), host);
		if (!hit)
			continue;
		json_array_foreach(json_object_get(spec, "endpoints"), k, ep) {
			char epip[INET_ADDRSTRLEN];

			if (!endpoint_ip(ep, epip, sizeof(epip)) && !strcmp(epip, ip))
				return ep;
		}
	}
	return NULL;
}

/* The backend: its WorkloadEntry by address (one in the service's namespace
 * first), else an inline ServiceEntry endpoint (labels and service account,
 * no workload name). */
void metrics_destination_peer(const struct metrics_lookups *lk, const char *backend,
			      const struct bm_dest_service *svc, struct bm_peer *p)
{
	char ip[INET_ADDRSTRLEN + 8], key[320];
	const json_t *we = NULL, *ep;

	memset(p, 0, sizeof(*p));
	if (!backend)
		return;
	snprintf(ip, sizeof(ip), "%s", backend);
	ip[strcspn(ip, ":")] = 0;
	if (svc->ns) {
		snprintf(key, sizeof(key), "%s/%s", svc->ns, ip);
		we = we_at(lk, &lk->we_ns_ip, key);
	}
	if (!we)
		we = we_at(lk, &lk->we_ip, ip);
	if (we) {
		bm_peer_from_workload_entry(we, p);
		return;
	}
	if (svc->host && svc->ns && (ep = inline_endpoint(lk, svc->host, svc->ns, ip))) {
		p->labels = json_object_get(ep, "labels");
		p->sa = json_string_value(json_object_get(ep, "serviceAccount"));
		p->ns = svc->ns;
	}
}

/* An enrolled pod by "ns/name", labelled like metrics_source_peer() does. */
static void pod_peer(struct bm_agent *a, const struct metrics_lookups *lk, const char *ns_name,
		     struct bm_peer *p)
{
	const char *slash = strchr(ns_name, '/');

	memset(p, 0, sizeof(*p));
	if (!slash)
		return;
	for (size_t i = 0; i < a->pods.n; i++) {
		const struct bm_pod *pod = &a->pods.p[i];

		if (strlen(pod->ns) == (size_t)(slash - ns_name) &&
		    !strncmp(pod->ns, ns_name, (size_t)(slash - ns_name)) && !strcmp(pod->name, slash + 1)) {
			label_pod(lk, pod, p);
			return;
		}
	}
}

/* A peer known only by its principal "td/ns/NS/sa/SA" (the server side of
 * mesh traffic): namespace and service account, no workload. */
static void principal_peer(const char *principal, char *ns, size_t nsl, char *sa, size_t sal,
			   struct bm_peer *p)
{
	const char *n = strstr(principal, "/ns/"), *s = strstr(principal, "/sa/");

	memset(p, 0, sizeof(*p));
	if (!n || !s || s < n + 4 || (size_t)(s - n - 4) >= nsl || strlen(s + 4) >= sal)
		return;
	memcpy(ns, n + 4, (size_t)(s - n - 4));
	ns[s - n - 4] = 0;
	snprintf(sa, sal, "%s", s + 4);
	p->ns = ns;
	p->sa = sa;
}

void metrics_service_of(struct bm_agent *a, const struct metrics_lookups *lk, uint32_t svc_id,
			struct bm_dest_service *svc)
{
	const char *svc_addr = svc_id < lk->n_svc_name ? lk->svc_name[svc_id] : NULL;
	uint64_t idx;

	memset(svc, 0, sizeof(*svc));
	if (svc_addr && !bm_strmap_get(&lk->svc, svc_addr, &idx)) {
		svc->host = a->model.svc[idx].host;
		svc->ns = a->model.svc[idx].ns;
	}
}

/* Server side: the service a pod serves on port (host order): the first
 * service of the model with a backend at the pod's IP and that port. Istio's
 * server proxies know it from the inbound cluster; meshd looks it up. */
void metrics_service_of_pod(struct bm_agent *a, const char *ns_name, uint16_t port,
			    struct bm_dest_service *svc)
{
	const char *slash = ns_name ? strchr(ns_name, '/') : NULL;
	uint32_t ip = 0;

	if (!slash || svc->host)
		return;
	for (size_t i = 0; i < a->pods.n && !ip; i++) {
		const struct bm_pod *pod = &a->pods.p[i];

		if (strlen(pod->ns) == (size_t)(slash - ns_name) &&
		    !strncmp(pod->ns, ns_name, (size_t)(slash - ns_name)) && !strcmp(pod->name, slash + 1))
			inet_pton(AF_INET, pod->ip, &ip);
	}
	if (!ip)
		return;
	for (size_t i = 0; i < a->model.n_svc; i++)
		for (uint32_t d = 0; d < a->model.svc[i].n_dests; d++) {
			const struct bm_m_cluster *c = a->model.svc[i].d[d].c;

			for (uint32_t j = 0; j < c->n; j++)
				if (c->b[j].ip == ip && c->b[j].port == htons(port)) {
					svc->host = a->model.svc[i].host;
					svc->ns = a->model.svc[i].ns;
					return;
				}
		}
}

/* Both ends of a proxy row (mesh or request): reporter source knows the
 * client pod ("ns/name") and the backend it reached (ip, port in network
 * order) of service svc; reporter destination knows the server pod and
 * the peer's principal only. ns and sa hold what principal_peer parsed. */
void metrics_proxy_row_peers(struct bm_agent *a, const struct metrics_lookups *lk, int reporter,
			     const char *src, const char *dst, uint32_t ip, uint16_t port,
			     const struct bm_dest_service *svc, struct bm_peer *sp,
			     struct bm_peer *dp, char *ns, size_t nsl, char *sa, size_t sal)
{
	char backend[32];

	if (reporter == BM_MESH_SOURCE) {
		pod_peer(a, lk, src, sp);
		memset(dp, 0, sizeof(*dp));
		if (ip) {
			addr_key(ip, port, backend, sizeof(backend));
			metrics_destination_peer(lk, backend, svc, dp);
		}
	} else {
		principal_peer(src, ns, nsl, sa, sal, sp);
		pod_peer(a, lk, dst, dp);
	}
}
