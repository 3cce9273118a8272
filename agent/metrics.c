/*
 * Metrics: what GET /metrics on :15020 serves (and the admin "metrics" call).
 *
 * istio_tcp_* come from stats_v1, one per-CPU row per (service, backend,
 * client cgroup), summed over CPUs when scraped. Rows are turned into Istio's
 * label set (reference §7.2) from the workload table: the client pod by its
 * cgroup id, its WorkloadEntry by the pod's IP in the pod's namespace, the
 * backend's WorkloadEntry by its IP, the service from the model. Rows that
 * end up with the same labels are merged, so cardinality is bounded by
 * (source workload x destination workload x service), never by connections.
 *
 * istio_requests_total and the request histograms come from the HTTP
 * proxy's per-worker tables (agent/reqmetrics.h), labelled the same way.
 *
 * bpfmesh_* are meshd's own: config generations, map fill, per-backend and
 * per-cluster state, and what connect4 refused.
 *
 * HTTP is prom.c's: this file decides what is exported.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "agent.h"
#include "store.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "relay.h"
#include "reqmetrics.h"
#include "l7.h"
#include "l7proxy.h"
#include <openssl/x509.h>

#define TRUST_DOMAIN     "cluster.local"   /* meshConfig.trustDomain default */
#define UNKNOWN          "unknown"

#ifndef BPFMESH_VERSION
#define BPFMESH_VERSION "dev"
#endif

const char *const bm_istio_label_names[BM_L_COUNT] = {
	"reporter",
	"source_workload",
	"source_workload_namespace",
	"source_principal",
	"source_app",
	"source_version",
	"source_canonical_service",
	"source_canonical_revision",
	"source_cluster",
	"destination_workload",
	"destination_workload_namespace",
	"destination_principal",
	"destination_app",
	"destination_version",
	"destination_service",
	"destination_service_name",
	"destination_service_namespace",
	"destination_canonical_service",
	"destination_canonical_revision",
	"destination_cluster",
	"request_protocol",
	"response_flags",
	"connection_security_policy",
};

/* ------------------------------------------------------------ labels */

/* Label precedence of reference §7.2: app / canonical service, version /
 * canonical revision. */
static const char *const app_keys[] = { "service.istio.io/canonical-name",
					"app.kubernetes.io/name", "app", NULL };
static const char *const version_keys[] = { "service.istio.io/canonical-revision",
					    "app.kubernetes.io/version", "version", NULL };

static const char *first_label(const json_t *labels, const char *const *keys)
{
	for (; *keys; keys++) {
		const char *v = json_string_value(json_object_get(labels, *keys));

		if (v && *v)
			return v;
	}
	return NULL;
}

static const char *or_unknown(const char *v)
{
	return v && *v ? v : UNKNOWN;
}

void bm_peer_from_workload_entry(const json_t *we, struct bm_peer *p)
{
	const json_t *meta = json_object_get(we, "metadata");
	const json_t *spec = json_object_get(we, "spec");
	const char *wl;

	memset(p, 0, sizeof(*p));
	p->labels = json_object_get(spec, "labels");
	/* Istio names a WorkloadEntry's workload by this label, else the entry. */
	wl = json_string_value(json_object_get(p->labels, "service.istio.io/workload-name"));
	p->workload = wl && *wl ? wl : json_string_value(json_object_get(meta, "name"));
	p->ns = json_string_value(json_object_get(meta, "namespace"));
	p->sa = json_string_value(json_object_get(spec, "serviceAccount"));
}

/* "reviews.bookinfo.svc.cluster.local" in namespace bookinfo -> "reviews";
 * a host that is not NAME.NS.svc.* is its own name, as Istio does for
 * ServiceEntry hosts. */
static void short_service_name(const char *host, const char *ns, char *out, size_t len)
{
	const char *dot = strchr(host, '.');
	size_t nl = ns ? strlen(ns) : 0;

	if (dot && nl && !strncmp(dot + 1, ns, nl) && !strncmp(dot + 1 + nl, ".svc.", 5) &&
	    (size_t)(dot - host) < len) {
		memcpy(out, host, (size_t)(dot - host));
		out[dot - host] = 0;
		return;
	}
	snprintf(out, len, "%s", host);
}

static void principal(const struct bm_peer *p, char *out, size_t len)
{
	if (p && p->sa && *p->sa && p->ns && *p->ns)
		snprintf(out, len, "spiffe://%s/ns/%s/sa/%s", TRUST_DOMAIN, p->ns, p->sa);
	else
		snprintf(out, len, UNKNOWN);
}

int bm_tcp_series_init(struct bm_tcp_series *s, const struct bm_peer *src,
		       const struct bm_peer *dst, const struct bm_dest_service *svc,
		       const char *response_flags, const char *security_policy)
{
	static const struct bm_peer nobody;
	const char *val[BM_L_COUNT];
	char src_principal[512], dst_principal[512], svc_name[256];
	const char *app, *ver;
	size_t total = 0;
	char *w;

	memset(s, 0, sizeof(*s));
	if (!src)
		src = &nobody;
	if (!dst)
		dst = &nobody;
	principal(src, src_principal, sizeof(src_principal));
	principal(dst, dst_principal, sizeof(dst_principal));
	if (svc && svc->host && *svc->host)
		short_service_name(svc->host, svc->ns, svc_name, sizeof(svc_name));
	else
		snprintf(svc_name, sizeof(svc_name), UNKNOWN);

	val[BM_L_REPORTER] = "source";
	app = first_label(src->labels, app_keys);
	ver = first_label(src->labels, version_keys);
	val[BM_L_SOURCE_WORKLOAD] = or_unknown(src->workload);
	val[BM_L_SOURCE_WORKLOAD_NAMESPACE] = or_unknown(src->ns);
	val[BM_L_SOURCE_PRINCIPAL] = src_principal;
	val[BM_L_SOURCE_APP] = or_unknown(app);
	val[BM_L_SOURCE_VERSION] = or_unknown(ver);
	val[BM_L_SOURCE_CANONICAL_SERVICE] = or_unknown(app);
	val[BM_L_SOURCE_CANONICAL_REVISION] = ver ? ver : "latest";
	val[BM_L_SOURCE_CLUSTER] = UNKNOWN;   /* no cluster id until multi-cluster */
	app = first_label(dst->labels, app_keys);
	ver = first_label(dst->labels, version_keys);
	val[BM_L_DESTINATION_WORKLOAD] = or_unknown(dst->workload);
	val[BM_L_DESTINATION_WORKLOAD_NAMESPACE] = or_unknown(dst->ns);
	val[BM_L_DESTINATION_PRINCIPAL] = dst_principal;
	val[BM_L_DESTINATION_APP] = or_unknown(app);
	val[BM_L_DESTINATION_VERSION] = or_unknown(ver);
	val[BM_L_DESTINATION_SERVICE] = or_unknown(svc ? svc->host : NULL);
	val[BM_L_DESTINATION_SERVICE_NAME] = svc_name;
	val[BM_L_DESTINATION_SERVICE_NAMESPACE] = or_unknown(svc ? svc->ns : NULL);
	val[BM_L_DESTINATION_CANONICAL_SERVICE] = or_unknown(app);
	val[BM_L_DESTINATION_CANONICAL_REVISION] = ver ? ver : "latest";
	val[BM_L_DESTINATION_CLUSTER] = UNKNOWN;
	val[BM_L_REQUEST_PROTOCOL] = "tcp";
	val[BM_L_RESPONSE_FLAGS] = response_flags && *response_flags ? response_flags : "-";
	val[BM_L_CONNECTION_SECURITY_POLICY] = or_unknown(security_policy);

	for (int i = 0; i < BM_L_COUNT; i++)
		total += strlen(val[i]) + 1;
	s->buf = malloc(total);
	if (!s->buf)
		return -ENOMEM;
	w = s->buf;
	for (int i = 0; i < BM_L_COUNT; i++) {
		size_t n = strlen(val[i]) + 1;

		memcpy(w, val[i], n);
		s->v[i] = w;
		w += n;
	}
	return 0;
}

void bm_tcp_series_free(struct bm_tcp_series *s)
{
	free(s->buf);
	s->buf = NULL;
}

static int cmp_series(const void *x, const void *y)
{
	const struct bm_tcp_series *a = x, *b = y;

	for (int i = 0; i < BM_L_COUNT; i++) {
		int c = strcmp(a->v[i], b->v[i]);

		if (c)
			return c;
	}
	return 0;
}

static const struct {
	const char *name, *help;
} tcp_families[] = {
	{ "istio_tcp_connections_opened_total",
	  "Total TCP connections opened (established, or failed with response_flags UF)." },
	{ "istio_tcp_connections_closed_total", "Total TCP connections closed." },
	{ "istio_tcp_sent_bytes_total",
	  "Total bytes sent to the client (response direction), counted at close." },
	{ "istio_tcp_received_bytes_total",
	  "Total bytes received from the client (request direction), counted at close." },
};

static uint64_t series_value(const struct bm_tcp_series *s, int family)
{
	switch (family) {
	case 0: return s->opened;
	case 1: return s->closed;
	case 2: return s->sent_bytes;
	default: return s->received_bytes;
	}
}

int bm_tcp_render(struct bm_prom *p, struct bm_tcp_series *s, size_t n)
{
	struct bm_prom_label l[BM_L_COUNT];
	size_t u = 0;

	if (n)
		qsort(s, n, sizeof(*s), cmp_series);
	for (size_t i = 1; i < n; i++) {
		if (!cmp_series(&s[u], &s[i])) {
			s[u].opened += s[i].opened;
			s[u].closed += s[i].closed;
			s[u].sent_bytes += s[i].sent_bytes;
			s[u].received_bytes += s[i].received_bytes;
			bm_tcp_series_free(&s[i]);
		} else if (++u != i) {
			s[u] = s[i];
			s[i].buf = NULL;
		}
	}
	if (n)
		u++;
	for (size_t f = 0; f < sizeof(tcp_families) / sizeof(tcp_families[0]); f++) {
		int err = bm_prom_family(p, tcp_families[f].name, BM_PROM_COUNTER, tcp_families[f].help);

		if (err)
			return err;
		for (size_t i = 0; i < u; i++) {
			for (int k = 0; k < BM_L_COUNT; k++)
				l[k] = (struct bm_prom_label){ bm_istio_label_names[k], s[i].v[k] };
			err = bm_prom_sample_u64(p, tcp_families[f].name, l, BM_L_COUNT,
						 series_value(&s[i], (int)f));
			if (err)
				return err;
		}
	}
	/* Entries u..n-1 were merged away (freed or moved). */
	for (size_t i = u; i < n; i++)
		s[i].buf = NULL;
	return 0;
}

/* ------------------------------------------------------------ lookups */

/* What one render needs to turn ids into names, built once per scrape. */
struct lookups {
	const char **svc_name;        /* svc id -> "vip:port", n_svc_name long */
	const char **backend_name;    /* backend id -> "ip:port", n_backend_name long */
	uint32_t n_svc_name, n_backend_name;
	struct bm_strmap svc;         /* "vip:port" -> model index */
	struct bm_strmap we_ip;       /* "ip" -> resources index (first entry) */
	struct bm_strmap we_ns_ip;    /* "ns/ip" -> resources index */
	const json_t *resources;
};

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

static void lookups_free(struct lookups *lk)
{
	free(lk->svc_name);
	free(lk->backend_name);
	bm_strmap_free(&lk->svc);
	bm_strmap_free(&lk->we_ip);
	bm_strmap_free(&lk->we_ns_ip);
}

static int lookups_build(struct bm_agent *a, struct lookups *lk)
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

static const json_t *we_at(const struct lookups *lk, const struct bm_strmap *m, const char *key)
{
	uint64_t idx;

	if (!lk->resources || bm_strmap_get(m, key, &idx))
		return NULL;
	return json_array_get(lk->resources, idx);
}

/* The client: the enrolled pod with this cgroup, labelled by its
 * WorkloadEntry (same IP, same namespace); a pod without one is its own
 * workload. */
/* How an enrolled pod is labelled: its WorkloadEntry, else itself. */
static void label_pod(const struct lookups *lk, const struct bm_pod *pod, struct bm_peer *p)
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

static void source_peer(struct bm_agent *a, const struct lookups *lk, uint64_t cgroup_id,
			struct bm_peer *p)
{
	const struct bm_pod *pod = bm_pods_by_cgroup(&a->pods, cgroup_id);

	memset(p, 0, sizeof(*p));
	if (pod)
		label_pod(lk, pod, p);
}

/* An inline endpoint of the ServiceEntry behind host, with this address. */
static const json_t *inline_endpoint(const struct lookups *lk, const char *host, const char *ns,
				     const char *ip)
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
static void destination_peer(const struct lookups *lk, const char *backend,
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

/* ------------------------------------------------------------ istio_tcp_* */

struct series_vec {
	struct bm_tcp_series *s;
	size_t n, cap;
};

static struct bm_tcp_series *series_add(struct series_vec *v)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		struct bm_tcp_series *ns = realloc(v->s, cap * sizeof(*ns));

		if (!ns)
			return NULL;
		v->s = ns;
		v->cap = cap;
	}
	return &v->s[v->n++];
}

/* An enrolled pod by "ns/name", labelled like source_peer() does. */
static void pod_peer(struct bm_agent *a, const struct lookups *lk, const char *ns_name,
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

static void service_of(struct bm_agent *a, const struct lookups *lk, uint32_t svc_id,
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

/* Both ends of a proxy row (mesh or request): reporter source knows the
 * client pod ("ns/name") and the backend it reached (ip, port in network
 * order) of service svc; reporter destination knows the server pod and
 * the peer's principal only. ns and sa hold what principal_peer parsed. */
/* Server side: the service a pod serves on port (host order): the first
 * service of the model with a backend at the pod's IP and that port. Istio's
 * server proxies know it from the inbound cluster; meshd looks it up. */
static void service_of_pod(struct bm_agent *a, const char *ns_name, uint16_t port,
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

static void proxy_row_peers(struct bm_agent *a, const struct lookups *lk, int reporter,
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
			destination_peer(lk, backend, svc, dp);
		}
	} else {
		principal_peer(src, ns, nsl, sa, sal, sp);
		pod_peer(a, lk, dst, dp);
	}
}

/* One proxy row (struct bm_mesh_row) as a series. connection_security_policy
 * is what happened: mutual_tls for HBONE, none for plaintext and same-node
 * delivery (identity known, no TLS). Kernel rows never include these
 * connections: sockops skips captured sockets, so nothing counts twice. */
static int mesh_row_series(struct bm_agent *a, const struct lookups *lk,
		       const struct bm_mesh_row *r, struct bm_tcp_series *s)
{
	struct bm_dest_service svc = {};
	struct bm_peer src, dst;
	char ns[64], sa[64];
	int err;

	if (r->k.reporter == BM_MESH_SOURCE)
		service_of(a, lk, r->k.svc_id, &svc);
	else
		service_of_pod(a, r->k.dst, r->k.port, &svc);
	proxy_row_peers(a, lk, r->k.reporter, r->k.src, r->k.dst, r->k.ip, htons(r->k.port), &svc,
			&src, &dst, ns, sizeof(ns), sa, sizeof(sa));
	err = bm_tcp_series_init(s, &src, &dst, &svc, "-", r->k.mtls ? "mutual_tls" : "none");
	if (err)
		return err;
	if (r->k.reporter != BM_MESH_SOURCE)
		s->v[BM_L_REPORTER] = "destination";
	s->opened = r->opened;
	s->closed = r->closed;
	/* The proxy's view towards its downstream, as for kernel rows. */
	s->sent_bytes = r->bytes_down;
	s->received_bytes = r->bytes_up;
	return 0;
}

static int add_mesh_series(struct bm_agent *a, const struct lookups *lk,
			   const struct bm_mesh_row *mr, size_t mn, struct series_vec *v)
{
	for (size_t i = 0; i < mn; i++) {
		struct bm_tcp_series *s = series_add(v);

		if (!s)
			return -ENOMEM;
		if (mesh_row_series(a, lk, &mr[i], s)) {
			v->n--;
			return -ENOMEM;
		}
	}
	return 0;
}

/* The istio_tcp_* families of these mesh rows alone (unit tests: the
 * labelling and merging without running workers). Caller holds a->lock. */
int bm_metrics_render_mesh_rows(struct bm_agent *a, FILE *f, const struct bm_mesh_row *rows,
				size_t n)
{
	struct bm_prom p;
	struct lookups lk;
	struct series_vec v = {};
	int err;

	bm_prom_init(&p, f);
	err = lookups_build(a, &lk);
	if (!err)
		err = add_mesh_series(a, &lk, rows, n, &v);
	if (!err)
		err = bm_tcp_render(&p, v.s, v.n);
	for (size_t i = 0; i < v.n; i++)
		bm_tcp_series_free(&v.s[i]);
	free(v.s);
	lookups_free(&lk);
	return err ? err : bm_prom_finish(&p);
}

/* ------------------------------------------------------------ istio_request* */

/* One series of the four request families: the istio_tcp_* label set with
 * request_protocol "http" or "grpc", plus response_code and
 * grpc_response_status ("" for a request that is not gRPC, or a gRPC one
 * that ended without a status), and the three histograms. */
struct req_series {
	struct bm_tcp_series l;
	char code[8];
	char grpc[8];
	struct bm_req_hist h[BM_REQ_HISTS];
};

static const struct {
	const char *name, *bucket, *sum, *count, *help;
} req_families[BM_REQ_HISTS] = {
	[BM_REQ_DURATION] = { "istio_request_duration_milliseconds",
			      "istio_request_duration_milliseconds_bucket",
			      "istio_request_duration_milliseconds_sum",
			      "istio_request_duration_milliseconds_count",
			      "Request duration in milliseconds, request head received to response finished." },
	[BM_REQ_REQUEST_BYTES] = { "istio_request_bytes", "istio_request_bytes_bucket",
				   "istio_request_bytes_sum", "istio_request_bytes_count",
				   "Request body bytes received from the client." },
	[BM_REQ_RESPONSE_BYTES] = { "istio_response_bytes", "istio_response_bytes_bucket",
				    "istio_response_bytes_sum", "istio_response_bytes_count",
				    "Response body bytes sent to the client." },
};

/* One request row as a series. connection_security_policy follows §7.2:
 * the destination reporter says whether the request came in mutual TLS,
 * the source reporter says "unknown" (as Istio's client proxies do). */
static int req_row_series(struct bm_agent *a, const struct lookups *lk,
			  const struct bm_req_row *r, struct req_series *s)
{
	struct bm_dest_service svc = { r->k.svc[0] ? r->k.svc : NULL,
				       r->k.svc_ns[0] ? r->k.svc_ns : NULL };
	struct bm_peer src, dst;
	char ns[64], sa[64];
	const char *policy;
	int err;

	if (r->k.reporter != BM_MESH_SOURCE)
		service_of_pod(a, r->k.dst, r->k.dst_port, &svc);
	proxy_row_peers(a, lk, r->k.reporter, r->k.src, r->k.dst, r->k.upstream_ip,
			r->k.upstream_port, &svc, &src, &dst, ns, sizeof(ns), sa, sizeof(sa));
	if (r->k.reporter == BM_MESH_SOURCE)
		policy = "unknown";
	else
		policy = r->k.mtls ? "mutual_tls" : "none";
	memset(s, 0, sizeof(*s));
	err = bm_tcp_series_init(&s->l, &src, &dst, &svc, r->k.flags, policy);
	if (err)
		return err;
	if (r->k.reporter != BM_MESH_SOURCE)
		s->l.v[BM_L_REPORTER] = "destination";
	s->l.v[BM_L_REQUEST_PROTOCOL] = r->k.protocol == BM_L7_PROTO_GRPC ? "grpc" : "http";
	snprintf(s->code, sizeof(s->code), "%u", r->k.code);
	if (r->k.grpc_status >= 0)
		snprintf(s->grpc, sizeof(s->grpc), "%d", r->k.grpc_status);
	memcpy(s->h, r->h, sizeof(s->h));
	return 0;
}

static int cmp_req_series(const void *x, const void *y)
{
	const struct req_series *a = x, *b = y;
	int c = cmp_series(&a->l, &b->l);

	if (!c)
		c = strcmp(a->code, b->code);
	return c ? c : strcmp(a->grpc, b->grpc);
}

static void hist_merge(struct bm_req_hist *into, const struct bm_req_hist *h)
{
	for (unsigned b = 0; b <= BM_REQ_BOUNDS; b++)
		into->bucket[b] += h->bucket[b];
	into->sum += h->sum;
}

/* Label order: Istio's, response_code and grpc_response_status after
 * request_protocol; room for le at the end. Returns the count without le. */
static size_t req_labels(const struct req_series *s, struct bm_prom_label *l)
{
	size_t n = 0;

	for (int k = 0; k < BM_L_COUNT; k++) {
		l[n++] = (struct bm_prom_label){ bm_istio_label_names[k], s->l.v[k] };
		if (k == BM_L_REQUEST_PROTOCOL) {
			l[n++] = (struct bm_prom_label){ "response_code", s->code };
			l[n++] = (struct bm_prom_label){ "grpc_response_status", s->grpc };
		}
	}
	return n;
}

/* Sort, merge identical label sets, write istio_requests_total and the
 * three histograms. Reorders and merges s in place (merged entries freed). */
static int req_render(struct bm_prom *p, struct req_series *s, size_t n)
{
	struct bm_prom_label l[BM_L_COUNT + 3];
	struct bm_prom_labelset *ls;
	char le[BM_REQ_BOUNDS][48];
	size_t u = 0;
	int err = 0;

	if (n)
		qsort(s, n, sizeof(*s), cmp_req_series);
	for (size_t i = 1; i < n; i++) {
		if (!cmp_req_series(&s[u], &s[i])) {
			for (int h = 0; h < BM_REQ_HISTS; h++)
				hist_merge(&s[u].h[h], &s[i].h[h]);
			bm_tcp_series_free(&s[i].l);
		} else if (++u != i) {
			s[u] = s[i];
			s[i].l.buf = NULL;
		}
	}
	if (n)
		u++;
	for (size_t i = u; i < n; i++)
		s[i].l.buf = NULL;
	/* Envoy prints bounds with %.32g: "0.5", "1", "3600000", never 3.6e+06. */
	for (unsigned b = 0; b < BM_REQ_BOUNDS; b++)
		snprintf(le[b], sizeof(le[b]), "%.32g", bm_req_bounds[b]);

	/* Each series' label set is written 3 x (BM_REQ_BOUNDS + 3) + 1 times:
	 * render it once. */
	ls = calloc(u ? u : 1, sizeof(*ls));
	if (!ls)
		return -ENOMEM;
	for (size_t i = 0; !err && i < u; i++)
		err = bm_prom_labelset_init(&ls[i], l, req_labels(&s[i], l));
	if (!err)
		err = bm_prom_family(p, "istio_requests_total", BM_PROM_COUNTER,
				     "Total HTTP requests completed (counted when the response finished).");
	for (size_t i = 0; !err && i < u; i++)
		err = bm_prom_sample_set_u64(p, "istio_requests_total", &ls[i], NULL,
					     bm_req_hist_count(&s[i].h[BM_REQ_DURATION]));
	for (int h = 0; !err && h < BM_REQ_HISTS; h++) {
		err = bm_prom_family(p, req_families[h].name, BM_PROM_HISTOGRAM, req_families[h].help);
		for (size_t i = 0; !err && i < u; i++) {
			const struct bm_req_hist *hist = &s[i].h[h];
			struct bm_prom_label le_l = { "le", NULL };
			uint64_t cum = 0;

			for (unsigned b = 0; !err && b <= BM_REQ_BOUNDS; b++) {
				cum += hist->bucket[b];
				le_l.value = b < BM_REQ_BOUNDS ? le[b] : "+Inf";
				err = bm_prom_sample_set_u64(p, req_families[h].bucket, &ls[i], &le_l, cum);
			}
			if (!err)
				err = bm_prom_sample_set_u64(p, req_families[h].sum, &ls[i], NULL, hist->sum);
			if (!err)
				err = bm_prom_sample_set_u64(p, req_families[h].count, &ls[i], NULL, cum);
		}
	}
	for (size_t i = 0; i < u; i++)
		bm_prom_labelset_free(&ls[i]);
	free(ls);
	return err;
}

/* The request families for rows (the proxy's, or a test's). */
static int render_req_rows(struct bm_agent *a, struct bm_prom *p, const struct lookups *lk,
			   const struct bm_req_row *rows, size_t n)
{
	struct req_series *s = calloc(n ? n : 1, sizeof(*s));
	size_t ns = 0;
	int err = 0;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < n && !err; i++) {
		/* A row with nothing in it yet (published before its first count). */
		if (!bm_req_hist_count(&rows[i].h[BM_REQ_DURATION]))
			continue;
		err = req_row_series(a, lk, &rows[i], &s[ns]);
		if (!err)
			ns++;
	}
	if (!err)
		err = req_render(p, s, ns);
	for (size_t i = 0; i < ns; i++)
		bm_tcp_series_free(&s[i].l);
	free(s);
	return err;
}

static int render_istio_requests(struct bm_agent *a, struct bm_prom *p, const struct lookups *lk)
{
	struct bm_req_row *rows = NULL;
	size_t n = 0;
	int err = 0;

	if (a->proxy)
		err = bm_proxy_req_rows(a->proxy, &rows, &n);
	if (err)
		n = 0;   /* the families are still declared, empty */
	{
		int e = render_req_rows(a, p, lk, rows, n);

		err = err ? err : e;
	}
	free(rows);
	return err;
}

/* The request families of these rows alone (unit tests: labels, merging
 * and buckets without running workers). Caller holds a->lock. */
int bm_metrics_render_req_rows(struct bm_agent *a, FILE *f, const struct bm_req_row *rows,
			       size_t n)
{
	struct bm_prom p;
	struct lookups lk;
	int err;

	bm_prom_init(&p, f);
	err = lookups_build(a, &lk);
	if (!err)
		err = render_req_rows(a, &p, &lk, rows, n);
	lookups_free(&lk);
	return err ? err : bm_prom_finish(&p);
}

/* Visits every entry of a hash map with BPF_MAP_LOOKUP_BATCH, BATCH_N at a
 * time: one syscall per chunk, and the kernel scans its buckets once. The
 * per-key walk (get_next_key, then lookup) costs two syscalls per entry and,
 * on a sparse map, a scan of the empty buckets after each key: 3-4 ms of a
 * scrape at 262,144 buckets with a handful of entries. vsize is one entry's
 * value as the kernel copies it (per-CPU maps: round_up(size, 8) x possible
 * CPUs). At most max entries; falls back to the per-key walk when the kernel
 * refuses batches. fn returning non-zero stops the walk with that value. */
#define BATCH_N 256
static int map_each(int fd, size_t ksize, size_t vsize, uint64_t max,
		    int (*fn)(void *arg, const void *key, const void *val), void *arg)
{
	unsigned char *keys = calloc(BATCH_N, ksize), *vals = calloc(BATCH_N, vsize);
	unsigned char *k = calloc(1, ksize), *next = calloc(1, ksize);
	__u32 token = 0, count;
	uint64_t seen = 0;
	int err = 0, e, first = 1;

	if (!keys || !vals || !k || !next) {
		err = -ENOMEM;
		goto out;
	}
	do {
		count = BATCH_N;
		e = bpf_map_lookup_batch(fd, first ? NULL : &token, &token, keys, vals, &count, NULL);
		if (e && errno != ENOENT) {
			if (first && (errno == EINVAL || errno == ENOTSUP || errno == EOPNOTSUPP))
				goto per_key;
			err = -errno;
			goto out;
		}
		first = 0;
		for (__u32 i = 0; i < count && seen < max && !err; i++, seen++)
			err = fn(arg, keys + i * ksize, vals + i * vsize);
	} while (!e && !err && seen < max);
	goto out;
per_key:
	for (e = bpf_map_get_next_key(fd, NULL, next); !e && seen < max && !err;
	     e = bpf_map_get_next_key(fd, k, next)) {
		memcpy(k, next, ksize);
		if (bpf_map_lookup_elem(fd, k, vals))
			continue;
		seen++;
		err = fn(arg, k, vals);
	}
out:
	free(keys);
	free(vals);
	free(k);
	free(next);
	return err;
}

struct tcp_walk {
	struct bm_agent *a;
	const struct lookups *lk;
	struct series_vec *v;
	int ncpu;
	uint64_t rows;
};

/* One stats_v1 row: per-CPU counters summed, as up to two series. */
static int tcp_row(void *arg, const void *key, const void *val)
{
	struct tcp_walk *w = arg;
	const struct bm_stats_key *kp = key;
	const struct bm_stats *pc = val;
	struct bm_stats_key k = *kp;
	struct bm_stats sum = {};
	struct bm_dest_service svc = {};
	struct bm_peer src, dst;
	const char *svc_addr, *backend;
	uint64_t idx;

	w->rows++;
	for (int c = 0; c < w->ncpu; c++) {
		sum.opened += pc[c].opened;
		sum.closed += pc[c].closed;
		sum.failed += pc[c].failed;
		sum.bytes_sent += pc[c].bytes_sent;
		sum.bytes_recv += pc[c].bytes_recv;
	}
	svc_addr = k.svc_id < w->lk->n_svc_name ? w->lk->svc_name[k.svc_id] : NULL;
	if (svc_addr && !bm_strmap_get(&w->lk->svc, svc_addr, &idx)) {
		svc.host = w->a->model.svc[idx].host;
		svc.ns = w->a->model.svc[idx].ns;
	}
	backend = k.backend_id < w->lk->n_backend_name ? w->lk->backend_name[k.backend_id] : NULL;
	source_peer(w->a, w->lk, k.src_cgroup, &src);
	destination_peer(w->lk, backend, &svc, &dst);
	/* The kernel path is plaintext: no mTLS happened, so "none" (the
	 * reference's value for a connection without mutual TLS). */
	if (sum.opened || sum.closed || sum.bytes_sent || sum.bytes_recv) {
		struct bm_tcp_series *s = series_add(w->v);

		if (!s || bm_tcp_series_init(s, &src, &dst, &svc, "-", "none")) {
			if (s)
				w->v->n--;
			return -ENOMEM;
		}
		s->opened = sum.opened;
		s->closed = sum.closed;
		/* Istio's directions are the proxy's towards its downstream
		 * (the client app): "sent" is the response, what the client
		 * received; "received" is the request, what it sent. */
		s->sent_bytes = sum.bytes_recv;
		s->received_bytes = sum.bytes_sent;
	}
	/* A connect that never established is, as in Envoy, a connection
	 * opened and closed with UF (upstream connection failure). */
	if (sum.failed) {
		struct bm_tcp_series *s = series_add(w->v);

		if (!s || bm_tcp_series_init(s, &src, &dst, &svc, "UF", "none")) {
			if (s)
				w->v->n--;
			return -ENOMEM;
		}
		s->opened = s->closed = sum.failed;
	}
	return 0;
}

/* The stats_v1 rows the scrape reads by key (see stats_keys_v1 in
 * bpf/lib/maps.h): the keys sockops announced on the ring, and after a
 * start, or when the ring overflowed, those of one full walk. A key whose
 * row is gone (the reconciler deletes the rows of removed backends) leaves
 * the index at the next scrape. Used by the render only, which the agent
 * lock serializes. */
static struct {
	struct ring_buffer *rb;
	int rb_fd;                 /* the map rb reads (a restarted loader has another) */
	struct bm_strmap keys;     /* hex of struct bm_stats_key -> 1 */
	uint64_t lost_seen;
	int walked;                /* a full walk since rb was set up */
} sidx;

static void key_hex(const struct bm_stats_key *k, char *out, size_t len)
{
	const unsigned char *b = (const unsigned char *)k;

	for (size_t i = 0; i < sizeof(*k) && 2 * i + 2 < len; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void key_unhex(const char *hex, struct bm_stats_key *k)
{
	unsigned char *b = (unsigned char *)k;

	for (size_t i = 0; i < sizeof(*k); i++) {
		unsigned v = 0;

		sscanf(hex + 2 * i, "%2x", &v);
		b[i] = (unsigned char)v;
	}
}

static int sidx_add(const struct bm_stats_key *k)
{
	char hex[2 * sizeof(*k) + 1];

	key_hex(k, hex, sizeof(hex));
	return bm_strmap_set(&sidx.keys, hex, 1) ? -ENOMEM : 0;
}

static int on_stats_key(void *ctx, void *data, size_t size)
{
	if (size >= sizeof(struct bm_stats_key))
		return sidx_add(data);
	return 0;
}

static int walk_key(void *arg, const void *key, const void *val)
{
	return sidx_add(key);
}

/* Brings the index up to date: the ring's news, and a full walk when the
 * index cannot be trusted (first use, lost keys, no ring). */
static int sidx_refresh(struct bm_agent *a)
{
	int fd = a->loader.fd.stats_keys, lfd = a->loader.fd.stats_keys_lost;
	__u32 zero = 0;
	uint64_t lost = 0;

	if (sidx.rb && sidx.rb_fd != fd) {
		ring_buffer__free(sidx.rb);
		sidx.rb = NULL;
	}
	if (!sidx.rb && fd > 0) {
		sidx.rb = ring_buffer__new(fd, on_stats_key, NULL, NULL);
		sidx.rb_fd = fd;
		sidx.walked = 0;
	}
	if (sidx.rb && ring_buffer__consume(sidx.rb) < 0)
		sidx.walked = 0;
	if (lfd > 0 && !bpf_map_lookup_elem(lfd, &zero, &lost) && lost != sidx.lost_seen) {
		sidx.lost_seen = lost;
		sidx.walked = 0;
	}
	if (sidx.rb && sidx.walked)
		return 0;
	/* Drained first, walked second: a row created after the walk is on
	 * the ring for the next scrape. */
	sidx.walked = 1;
	return map_each(a->loader.fd.stats, sizeof(struct bm_stats_key),
			(size_t)libbpf_num_possible_cpus() * sizeof(struct bm_stats), BM_MAX_STATS,
			walk_key, NULL);
}

static int render_istio_tcp(struct bm_agent *a, struct bm_prom *p, const struct lookups *lk,
			    uint64_t *rows)
{
	int ncpu = libbpf_num_possible_cpus(), err = 0;
	struct series_vec v = {};
	struct tcp_walk w = { a, lk, &v, ncpu, 0 };
	struct bm_stats *pc = NULL;
	const char *hex;
	uint64_t one;
	char **gone = NULL;
	size_t n_gone = 0;

	*rows = 0;
	if (ncpu <= 0)
		return -ENOMEM;
	if (a->loader.fd.stats > 0) {
		err = sidx_refresh(a);
		pc = calloc((size_t)ncpu, sizeof(*pc));
		gone = calloc(sidx.keys.len + 1, sizeof(*gone));
		if (!err && (!pc || !gone))
			err = -ENOMEM;
		for (size_t it = 0; !err && bm_strmap_next(&sidx.keys, &it, &hex, &one);) {
			struct bm_stats_key k;

			key_unhex(hex, &k);
			if (bpf_map_lookup_elem(a->loader.fd.stats, &k, pc)) {
				if (errno == ENOENT && n_gone < sidx.keys.len)
					gone[n_gone++] = strdup(hex);
				continue;
			}
			err = tcp_row(&w, &k, pc);
		}
		for (size_t i = 0; i < n_gone; i++) {
			if (gone[i])
				bm_strmap_del(&sidx.keys, gone[i]);
			free(gone[i]);
		}
		free(gone);
		free(pc);
	}
	*rows = w.rows;
	if (err)
		goto out;
	/* Mesh traffic: what the proxy workers carried. */
	if (a->proxy) {
		struct bm_mesh_row *mr = NULL;
		size_t mn = 0;

		err = bm_proxy_mesh_rows(a->proxy, &mr, &mn);
		if (!err)
			err = add_mesh_series(a, lk, mr, mn, &v);
		free(mr);
		if (err)
			goto out;
	}
	err = bm_tcp_render(p, v.s, v.n);
out:
	for (size_t i = 0; i < v.n; i++)
		bm_tcp_series_free(&v.s[i]);
	free(v.s);
	return err;
}

/* ------------------------------------------------------------ bpfmesh_* */

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
	return map_each(fd, info.key_size, vsize, info.max_entries, count_entry, entries) ? -1 : 0;
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

/* Certificates this node holds: every workload SVID's notAfter and, when
 * this node holds the CA, the root's; issue and rotation counters. */
#define MAX_SVIDS 1024
static void render_identity(struct bm_agent *a, struct bm_prom *p)
{
	struct bm_svid_expiry *e = calloc(MAX_SVIDS, sizeof(*e));
	size_t n = e ? bm_identity_expiries(&a->idm, e, MAX_SVIDS) : 0;
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

static void render_meshd(struct bm_agent *a, struct bm_prom *p, uint64_t stats_rows)
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
	render_identity(a, p);
	render_proxy(a, p);
}

int bm_metrics_render(struct bm_agent *a, FILE *f)
{
	struct bm_prom p;
	struct lookups lk;
	uint64_t rows = 0;
	int err;

	bm_prom_init(&p, f);
	err = lookups_build(a, &lk);
	if (!err)
		err = render_istio_tcp(a, &p, &lk, &rows);
	if (!err)
		err = render_istio_requests(a, &p, &lk);
	lookups_free(&lk);
	render_meshd(a, &p, rows);
	return err ? err : bm_prom_finish(&p);
}

/* ------------------------------------------------------------ endpoint */

static struct bm_prom_server *server;

/* Render under the lock into memory; the server sends after we return, so a
 * slow scraper never holds up the main loop. */
static int render_locked(void *arg, FILE *f)
{
	struct bm_agent *a = arg;
	int err;

	pthread_mutex_lock(&a->lock);
	err = bm_metrics_render(a, f);
	pthread_mutex_unlock(&a->lock);
	if (err)
		bm_log("metrics: render failed: %s", strerror(-err));
	return err;
}

int bm_metrics_start(struct bm_agent *a, const char *addr)
{
	int err;

	if (server)
		return -EALREADY;
	err = bm_prom_serve(addr, render_locked, a, &server);
	if (err)
		return err;
	bm_log("metrics: serving http://%s/metrics", addr);
	return 0;
}

/* GET /healthz/ready: 200 once meshd has loaded its programs and applied
 * the store's current generation; 503 with the reason otherwise. */
static struct bm_prom_server *ready_server;

static int render_ready(void *arg, FILE *f)
{
	struct bm_agent *a = arg;
	int err = 0;

	pthread_mutex_lock(&a->lock);
	if (!a->ready) {
		fprintf(f, "not ready: starting\n");
		err = -EAGAIN;
	} else if (a->applied_generation != a->store_generation) {
		fprintf(f, "not ready: applied generation %llu, store generation %llu%s%s\n",
			(unsigned long long)a->applied_generation,
			(unsigned long long)a->store_generation, a->last_error[0] ? ": " : "",
			a->last_error);
		err = -EAGAIN;
	} else {
		fprintf(f, "ready: generation %llu\n", (unsigned long long)a->applied_generation);
	}
	pthread_mutex_unlock(&a->lock);
	return err;
}

int bm_ready_start(struct bm_agent *a, const char *addr)
{
	int err;

	if (ready_server)
		return -EALREADY;
	err = bm_http_serve(addr, "/healthz/ready", "text/plain; charset=utf-8", render_ready, a,
			    &ready_server);
	if (!err)
		bm_log("readiness: serving http://%s/healthz/ready", addr);
	return err;
}

void bm_metrics_stop(void)
{
	ring_buffer__free(sidx.rb);
	sidx.rb = NULL;
	bm_strmap_free(&sidx.keys);
	memset(&sidx, 0, sizeof(sidx));
	bm_prom_server_stop(server);
	server = NULL;
	bm_prom_server_stop(ready_server);
	ready_server = NULL;
}
