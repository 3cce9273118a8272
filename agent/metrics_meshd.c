/*
 * bpfmesh_* are meshd's own: build and readiness, config generations and
 * the store, map fill, per-backend and per-cluster state, what connect4
 * refused, certificates, and the proxy's connections, denials and refusals.
 */
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <openssl/x509.h>
#include "agent.h"
#include "store.h"
#include "metrics.h"
#include "metrics_int.h"
#include "proxy.h"
#include "reqmetrics.h"
#include "l7.h"

#ifndef BPFMESH_VERSION
#define BPFMESH_VERSION "dev"
#endif

struct named_id {
	const char *name;
	uint32_t id;
};

static int cmp_named(const void *x, const void *y)
{
	return strcmp(((const struct named_id *)x)->name, ((const struct named_id *)y)->name);
}

/* The ids of one kind, sorted by name, so the output order is stable. */
static struct named_id *sorted_ids(const struct bm_ids *ids, enum bm_id_kind k, uint32_t limit,
				   size_t *n)
{
	struct named_id *v = calloc(ids->map[k].len + 1, sizeof(*v));
	const char *key;
	uint64_t id;

	*n = 0;
	if (!v)
		return NULL;
	for (size_t it = 0; bm_strmap_next(&ids->map[k], &it, &key, &id);)
		if (id && id < limit && *n < ids->map[k].len)
			v[(*n)++] = (struct named_id){ key, (uint32_t)id };
	qsort(v, *n, sizeof(*v), cmp_named);
	return v;
}

static int count_entry(void *arg, const void *key, const void *val)
{
	(*(uint64_t *)arg)++;
	return 0;
}

/* Entries and capacity of a map, counted by walking it in batches (off the
 * data path; bounded by max_entries). */
static int map_fill(int fd, uint64_t *entries, uint64_t *max)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	size_t vsize;

	*entries = *max = 0;
	if (fd <= 0 || bpf_obj_get_info_by_fd(fd, &info, &len))
		return -1;
	*max = info.max_entries;
	vsize = info.value_size;
	if (info.type == BPF_MAP_TYPE_PERCPU_HASH || info.type == BPF_MAP_TYPE_LRU_PERCPU_HASH)
		vsize = ((vsize + 7) & ~(size_t)7) * (size_t)libbpf_num_possible_cpus();
	return metrics_map_each(fd, info.key_size, vsize, info.max_entries, count_entry,
				entries) ? -1 : 0;
}

static void gauge(struct bm_prom *p, const char *name, const char *help, double v)
{
	bm_prom_family(p, name, BM_PROM_GAUGE, help);
	bm_prom_sample(p, name, NULL, 0, v);
}

static void counter(struct bm_prom *p, const char *name, const char *help, uint64_t v)
{
	bm_prom_family(p, name, BM_PROM_COUNTER, help);
	bm_prom_sample_u64(p, name, NULL, 0, v);
}

static void render_maps(struct bm_agent *a, struct bm_prom *p, uint64_t stats_rows)
{
	static const char *const names[] = { "svc_v1", "cluster_v1", "stats_v1" };
	/* svc_v1 and cluster_v1 change only when the reconciler writes them:
	 * at a reload, and when it deletes an old revision after the grace
	 * period. Walk them again only then (a walk costs their buckets). */
	static struct {
		uint64_t gen;
		size_t n_gc;
		int fd[2], valid;
		uint64_t entries[2], max[2];
		int ok[2];
	} fill;
	const int fds[] = { a->loader.fd.svc, a->loader.fd.cluster };
	uint64_t entries[3], max[3];
	int ok[3];
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	if (!fill.valid || fill.gen != a->applied_generation || fill.n_gc != a->rec.n_gc ||
	    fill.fd[0] != fds[0] || fill.fd[1] != fds[1]) {
		for (int i = 0; i < 2; i++) {
			fill.ok[i] = !map_fill(fds[i], &fill.entries[i], &fill.max[i]);
			fill.fd[i] = fds[i];
		}
		fill.gen = a->applied_generation;
		fill.n_gc = a->rec.n_gc;
		fill.valid = 1;
	}
	for (int i = 0; i < 2; i++) {
		ok[i] = fill.ok[i];
		entries[i] = fill.entries[i];
		max[i] = fill.max[i];
	}
	/* stats_v1: its rows were just read for istio_tcp_*. */
	ok[2] = a->loader.fd.stats > 0 && !bpf_obj_get_info_by_fd(a->loader.fd.stats, &info, &len);
	entries[2] = stats_rows;
	max[2] = info.max_entries;
	bm_prom_family(p, "bpfmesh_bpf_map_entries", BM_PROM_GAUGE,
		       "Entries in a BPF map (fill level is entries / max_entries).");
	for (int i = 0; i < 3; i++)
		if (ok[i])
			bm_prom_sample_u64(p, "bpfmesh_bpf_map_entries",
					   &(struct bm_prom_label){ "map", names[i] }, 1, entries[i]);
	bm_prom_family(p, "bpfmesh_bpf_map_max_entries", BM_PROM_GAUGE,
		       "Capacity of a BPF map.");
	for (int i = 0; i < 3; i++)
		if (ok[i])
			bm_prom_sample_u64(p, "bpfmesh_bpf_map_max_entries",
					   &(struct bm_prom_label){ "map", names[i] }, 1, max[i]);
}

static void render_backends(struct bm_agent *a, struct bm_prom *p)
{
	size_t n;
	struct named_id *b = sorted_ids(&a->rec.ids, BM_ID_BACKEND, BM_MAX_BACKEND_IDS, &n);
	uint32_t *active = calloc(n + 1, sizeof(*active)), *ejected = calloc(n + 1, sizeof(*ejected));

	if (!b || !active || !ejected)
		goto out;
	for (size_t i = 0; i < n; i++) {
		bpf_map_lookup_elem(a->loader.fd.backend_active, &b[i].id, &active[i]);
		bpf_map_lookup_elem(a->loader.fd.backend_eject, &b[i].id, &ejected[i]);
	}
	bm_prom_family(p, "bpfmesh_backend_active_connections", BM_PROM_GAUGE,
		       "Connections open to a backend through the kernel path.");
	for (size_t i = 0; i < n; i++)
		bm_prom_sample_u64(p, "bpfmesh_backend_active_connections",
				   &(struct bm_prom_label){ "backend", b[i].name }, 1, active[i]);
	bm_prom_family(p, "bpfmesh_backend_ejected", BM_PROM_GAUGE,
		       "1 when a backend is ejected from load balancing (outlier detection or admin), else 0.");
	for (size_t i = 0; i < n; i++)
		bm_prom_sample_u64(p, "bpfmesh_backend_ejected",
				   &(struct bm_prom_label){ "backend", b[i].name }, 1, ejected[i] != 0);
out:
	free(b);
	free(active);
	free(ejected);
}

static void render_clusters(struct bm_agent *a, struct bm_prom *p)
{
	int ncpu = libbpf_num_possible_cpus();
	size_t n;
	struct named_id *c = sorted_ids(&a->rec.ids, BM_ID_CLUSTER, BM_MAX_CLUSTER_IDS, &n);
	struct bm_cluster_stats *pc = calloc(ncpu > 0 ? (size_t)ncpu : 1, sizeof(*pc));
	struct bm_cluster_stats *sum = calloc(n + 1, sizeof(*sum));
	struct bm_cluster_state *st = calloc(n + 1, sizeof(*st));
	struct bm_prom_label l[2];

	if (!c || !pc || !sum || !st || ncpu <= 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		bpf_map_lookup_elem(a->loader.fd.cluster_state, &c[i].id, &st[i]);
		if (bpf_map_lookup_elem(a->loader.fd.cluster_stats, &c[i].id, pc))
			continue;
		for (int k = 0; k < ncpu; k++) {
			sum[i].refused_max_conns += pc[k].refused_max_conns;
			sum[i].refused_no_backend += pc[k].refused_no_backend;
			sum[i].picks += pc[k].picks;
			sum[i].panics += pc[k].panics;
		}
	}
	bm_prom_family(p, "bpfmesh_cluster_active_connections", BM_PROM_GAUGE,
		       "Connections counted against a cluster's connectionPool.tcp.maxConnections.");
	for (size_t i = 0; i < n; i++)
		bm_prom_sample_u64(p, "bpfmesh_cluster_active_connections",
				   &(struct bm_prom_label){ "cluster", c[i].name }, 1, st[i].active);
	bm_prom_family(p, "bpfmesh_connections_refused_total", BM_PROM_COUNTER,
		       "Connections connect4 refused: over maxConnections, or no healthy backend outside panic mode.");
	for (size_t i = 0; i < n; i++) {
		l[0] = (struct bm_prom_label){ "reason", "max_connections" };
		l[1] = (struct bm_prom_label){ "cluster", c[i].name };
		bm_prom_sample_u64(p, "bpfmesh_connections_refused_total", l, 2,
				   sum[i].refused_max_conns);
		l[0].value = "no_healthy_backend";
		bm_prom_sample_u64(p, "bpfmesh_connections_refused_total", l, 2,
				   sum[i].refused_no_backend);
	}
	bm_prom_family(p, "bpfmesh_lb_picks_total", BM_PROM_COUNTER,
		       "Connections connect4 balanced to a backend of the cluster.");
	for (size_t i = 0; i < n; i++)
		bm_prom_sample_u64(p, "bpfmesh_lb_picks_total",
				   &(struct bm_prom_label){ "cluster", c[i].name }, 1, sum[i].picks);
	bm_prom_family(p, "bpfmesh_lb_panic_picks_total", BM_PROM_COUNTER,
		       "Picks made in panic mode (healthy backends below minHealthPercent: all backends used).");
	for (size_t i = 0; i < n; i++)
		bm_prom_sample_u64(p, "bpfmesh_lb_panic_picks_total",
				   &(struct bm_prom_label){ "cluster", c[i].name }, 1, sum[i].panics);
out:
	free(c);
	free(pc);
	free(sum);
	free(st);
}

/* The HTTP path's circuit breakers (DestinationRule connectionPool.http),
 * per cluster: what overflowed (503 UO) and what is in use now. */
static void render_breakers(struct bm_prom *p)
{
	size_t n = bm_l7_breaker_stats(NULL, 0), k;
	struct bm_l7_breaker_stat *s = n ? calloc(n, sizeof(*s)) : NULL;
	static const char *const gauges[][2] = {
		{ "bpfmesh_l7_pending_requests", "HTTP requests waiting for an upstream connection or stream (http1MaxPendingRequests)." },
		{ "bpfmesh_l7_active_requests", "HTTP requests in flight to the cluster (http2MaxRequests)." },
		{ "bpfmesh_l7_active_retries", "Retries in flight to the cluster (maxRetries)." },
	};
	struct bm_prom_label l[2];

	bm_prom_family(p, "bpfmesh_l7_circuit_breaker_overflow_total", BM_PROM_COUNTER,
		       "HTTP requests refused (503, UO) or retries not made because a connectionPool.http limit was reached.");
	k = s ? bm_l7_breaker_stats(s, n) : 0;
	n = k < n ? k : n;
	for (size_t i = 0; i < n; i++) {
		static const char *const lim[] = { "pending", "requests", "retries" };
		const uint64_t v[] = { s[i].overflow_pending, s[i].overflow_requests, s[i].overflow_retries };

		l[0] = (struct bm_prom_label){ "cluster", s[i].cluster };
		for (int j = 0; j < 3; j++) {
			l[1] = (struct bm_prom_label){ "limit", lim[j] };
			bm_prom_sample_u64(p, "bpfmesh_l7_circuit_breaker_overflow_total", l, 2, v[j]);
		}
	}
	for (int g = 0; g < 3; g++) {
		bm_prom_family(p, gauges[g][0], BM_PROM_GAUGE, gauges[g][1]);
		for (size_t i = 0; i < n; i++) {
			const uint32_t v[] = { s[i].pending, s[i].requests, s[i].retries };

			bm_prom_sample_u64(p, gauges[g][0], &(struct bm_prom_label){ "cluster", s[i].cluster },
					   1, v[g]);
		}
	}
	free(s);
}

/* Certificates this node holds: every workload SVID's notAfter and, when
 * this node holds the CA, the root's; issue and rotation counters. */
static void render_identity(struct bm_agent *a, struct bm_prom *p)
{
	size_t n;
	struct bm_svid_expiry *e = bm_identity_expiries(&a->idm, &n);
	struct bm_prom_label l[2];
	time_t root_na;

	bm_prom_family(p, "bpfmesh_certificate_expiry_timestamp_seconds", BM_PROM_GAUGE,
		       "When a certificate this node holds expires (notAfter), seconds since the Unix epoch: "
		       "workload SVIDs (kind=\"svid\") and the mesh root when this node holds the CA (kind=\"root\").");
	for (size_t i = 0; i < n; i++) {
		l[0] = (struct bm_prom_label){ "kind", "svid" };
		l[1] = (struct bm_prom_label){ "identity", e[i].id };
		bm_prom_sample(p, "bpfmesh_certificate_expiry_timestamp_seconds", l, 2,
			       (double)e[i].not_after);
	}
	if (a->ca && a->ca->cert && !bm_x509_time(X509_get0_notAfter(a->ca->cert), &root_na)) {
		char td[BM_TRUST_DOMAIN_MAX + 16];

		snprintf(td, sizeof(td), "spiffe://%s", a->ca->trust_domain);
		l[0] = (struct bm_prom_label){ "kind", "root" };
		l[1] = (struct bm_prom_label){ "identity", td };
		bm_prom_sample(p, "bpfmesh_certificate_expiry_timestamp_seconds", l, 2, (double)root_na);
	}
	free(e);
	counter(p, "bpfmesh_certificates_issued_total", "Workload certificates (SVIDs) this node obtained.",
		__atomic_load_n(&a->idm.issued_total, __ATOMIC_RELAXED));
	counter(p, "bpfmesh_certificates_rotated_total", "SVIDs replaced at half-life.",
		__atomic_load_n(&a->idm.rotated_total, __ATOMIC_RELAXED));
	counter(p, "bpfmesh_certificate_issue_errors_total",
		"Failed attempts to obtain an SVID (the old one stays in use while valid).",
		__atomic_load_n(&a->idm.issue_errors, __ATOMIC_RELAXED));
}

static int is_authz_reason(const char *r)
{
	return !strncmp(r, "authorization_policy", 20) || !strncmp(r, "peer_authentication", 19) ||
	       !strncmp(r, "jwt_invalid", 11) || !strcmp(r, "denied");
}

/* The proxy's connection outcomes per direction (result="error" are failed
 * captures: a connection meshd got but could not serve, e.g. no original
 * destination recorded by the kernel, no identity for its pod, a malformed
 * HBONE request), and its refusals by reason (bounded: BM_DENY_REASONS
 * reasons per worker, the rest as "other"). */
static void render_proxy(struct bm_agent *a, struct bm_prom *p)
{
	static const char *const results[] = { "ok", "denied", "upstream_failed", "error" };
	json_t *st = a->proxy ? bm_proxy_stats_json(a->proxy) : NULL;
	json_t *conns = json_object_get(st, "connections"), *den = json_object_get(st, "denials");
	struct bm_prom_label l[2];
	const char *k;
	json_t *v;

	bm_prom_family(p, "bpfmesh_proxy_connections_total", BM_PROM_COUNTER,
		       "Connections meshd's proxy handled, by direction and result; result=\"error\" counts "
		       "failed captures (no original destination, no identity, malformed HBONE request).");
	json_object_foreach(conns, k, v) {
		for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++) {
			l[0] = (struct bm_prom_label){ "direction", k };
			l[1] = (struct bm_prom_label){ "result", results[i] };
			bm_prom_sample_u64(p, "bpfmesh_proxy_connections_total", l, 2,
					   (uint64_t)json_integer_value(json_object_get(v, results[i])));
		}
	}
	bm_prom_family(p, "bpfmesh_proxy_connections_active", BM_PROM_GAUGE,
		       "Connections open in meshd's proxy, by direction.");
	json_object_foreach(conns, k, v)
		bm_prom_sample_u64(p, "bpfmesh_proxy_connections_active",
				   &(struct bm_prom_label){ "direction", k }, 1,
				   (uint64_t)json_integer_value(json_object_get(v, "active")));
	bm_prom_family(p, "bpfmesh_authorization_denials_total", BM_PROM_COUNTER,
		       "Connections and requests refused by policy, by reason: authorization_policy_deny:NS/NAME, "
		       "authorization_policy_no_allow_match, peer_authentication_strict, jwt_invalid: WHY.");
	json_object_foreach(den, k, v)
		if (is_authz_reason(k))
			bm_prom_sample_u64(p, "bpfmesh_authorization_denials_total",
					   &(struct bm_prom_label){ "reason", k }, 1,
					   (uint64_t)json_integer_value(v));
	bm_prom_family(p, "bpfmesh_proxy_refused_total", BM_PROM_COUNTER,
		       "Connections meshd's proxy refused for other reasons than policy: tls_peer_refused, "
		       "peer_certificate_expired, out_of_file_descriptors, other.");
	json_object_foreach(den, k, v)
		if (!is_authz_reason(k))
			bm_prom_sample_u64(p, "bpfmesh_proxy_refused_total",
					   &(struct bm_prom_label){ "reason", k }, 1,
					   (uint64_t)json_integer_value(v));
	json_decref(st);
}

void metrics_render_meshd(struct bm_agent *a, struct bm_prom *p, uint64_t stats_rows)
{
	bm_prom_family(p, "bpfmesh_build_info", BM_PROM_GAUGE, "meshd build; the value is always 1.");
	/* No node label here: scrape configs set `node` on the target, and a
	 * second one would come back as exported_node. */
	bm_prom_sample(p, "bpfmesh_build_info",
		       &(struct bm_prom_label){ "version", BPFMESH_VERSION }, 1, 1);
	gauge(p, "bpfmesh_ready", "1 once meshd has loaded its programs and applied a configuration.",
	      a->ready ? 1 : 0);
	gauge(p, "bpfmesh_start_time_seconds", "When meshd started, seconds since the Unix epoch.",
	      (double)a->started);
	gauge(p, "bpfmesh_config_applied_generation",
	      "Store generation whose configuration is applied to the kernel maps.",
	      (double)a->applied_generation);
	gauge(p, "bpfmesh_config_store_generation",
	      "Latest store generation meshd has seen; above applied_generation while a change is pending or failed.",
	      (double)a->store_generation);
	{
		int connected = 0;
		time_t last_ok = 0;

		bm_store_health(a->store, &connected, &last_ok);
		gauge(p, "bpfmesh_store_connected",
		      "1 while the resource store answers; 0: meshd serves its last good configuration.",
		      connected);
		gauge(p, "bpfmesh_store_last_success_timestamp_seconds",
		      "When the resource store last answered (or its watch was up), seconds since the Unix epoch.",
		      (double)last_ok);
	}
	counter(p, "bpfmesh_config_reloads_total", "Configuration reloads attempted.", a->reloads);
	counter(p, "bpfmesh_config_reload_errors_total",
		"Reloads that failed; the last good configuration stays applied.", a->reload_errors);
	gauge(p, "bpfmesh_config_warnings",
	      "Problems in the applied configuration that made parts of it unusable.",
	      a->model_warnings);
	gauge(p, "bpfmesh_services", "Service ports (VIP:port) applied to the kernel.", a->rec.n_services);
	gauge(p, "bpfmesh_pods_enrolled", "Pods enrolled with this node's meshd.", (double)a->pods.n);
	counter(p, "bpfmesh_l7_requests_overflow_total",
		"HTTP requests not in istio_request* because a worker's table of series was full.",
		a->proxy ? bm_proxy_req_overflow(a->proxy) : 0);
	counter(p, "bpfmesh_outlier_ejections_total",
		"Backends ejected by outlier detection (each ejection counted once).",
		a->outlier ? bm_outlier_ejections_total(a->outlier) : 0);
	render_maps(a, p, stats_rows);
	render_backends(a, p);
	render_clusters(a, p);
	render_breakers(p);
	render_identity(a, p);
	render_proxy(a, p);
}
