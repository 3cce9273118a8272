/*
 * istio_tcp_*: the four Istio TCP families.
 *
 * Kernel-path rows come from stats_v1, one per-CPU row per (service,
 * backend, client cgroup), summed over CPUs when scraped; the scrape reads
 * the rows of the stats-key index (sidx below) by key. Mesh-path rows are
 * what the proxy workers carried (struct bm_mesh_row). Rows that end up with
 * the same labels are merged, so cardinality is bounded by (source workload
 * x destination workload x service), never by connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "agent.h"
#include "metrics.h"
#include "metrics_int.h"
#include "proxy.h"
#include "relay.h"

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
		qsort(s, n, sizeof(*s), metrics_series_cmp);
	for (size_t i = 1; i < n; i++) {
		if (!metrics_series_cmp(&s[u], &s[i])) {
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

/* ------------------------------------------------------------ proxy rows */

/* One proxy row (struct bm_mesh_row) as a series. connection_security_policy
 * is what happened: mutual_tls for HBONE, none for plaintext and same-node
 * delivery (identity known, no TLS). Kernel rows never include these
 * connections: sockops skips captured sockets, so nothing counts twice. */
static int mesh_row_series(struct bm_agent *a, const struct metrics_lookups *lk,
		       const struct bm_mesh_row *r, struct bm_tcp_series *s)
{
	struct bm_dest_service svc = {};
	struct bm_peer src, dst;
	char ns[64], sa[64];
	int err;

	if (r->k.reporter == BM_MESH_SOURCE)
		metrics_service_of(a, lk, r->k.svc_id, &svc);
	else
		metrics_service_of_pod(a, r->k.dst, r->k.port, &svc);
	metrics_proxy_row_peers(a, lk, r->k.reporter, r->k.src, r->k.dst, r->k.ip, htons(r->k.port),
				&svc, &src, &dst, ns, sizeof(ns), sa, sizeof(sa));
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

static int add_mesh_series(struct bm_agent *a, const struct metrics_lookups *lk,
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
	struct metrics_lookups lk;
	struct series_vec v = {};
	int err;

	bm_prom_init(&p, f);
	err = metrics_lookups_build(a, &lk);
	if (!err)
		err = add_mesh_series(a, &lk, rows, n, &v);
	if (!err)
		err = bm_tcp_render(&p, v.s, v.n);
	for (size_t i = 0; i < v.n; i++)
		bm_tcp_series_free(&v.s[i]);
	free(v.s);
	metrics_lookups_free(&lk);
	return err ? err : bm_prom_finish(&p);
}

/* ------------------------------------------------------------ stats_v1 rows */

/* Visits every entry of a hash map with BPF_MAP_LOOKUP_BATCH, BATCH_N at a
 * time: one syscall per chunk, and the kernel scans its buckets once. The
 * per-key walk (get_next_key, then lookup) costs two syscalls per entry and,
 * on a sparse map, a scan of the empty buckets after each key: 3-4 ms of a
 * scrape at 262,144 buckets with a handful of entries. vsize is one entry's
 * value as the kernel copies it (per-CPU maps: round_up(size, 8) x possible
 * CPUs). At most max entries; falls back to the per-key walk when the kernel
 * refuses batches. fn returning non-zero stops the walk with that value. */
#define BATCH_N 256
int metrics_map_each(int fd, size_t ksize, size_t vsize, uint64_t max,
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
	const struct metrics_lookups *lk;
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
	metrics_source_peer(w->a, w->lk, k.src_cgroup, &src);
	metrics_destination_peer(w->lk, backend, &svc, &dst);
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
	return metrics_map_each(a->loader.fd.stats, sizeof(struct bm_stats_key),
				(size_t)libbpf_num_possible_cpus() * sizeof(struct bm_stats),
				BM_MAX_STATS, walk_key, NULL);
}

int metrics_render_istio_tcp(struct bm_agent *a, struct bm_prom *p,
			     const struct metrics_lookups *lk, uint64_t *rows)
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

/* The index outlives scrapes: freed when the endpoint stops. */
void metrics_tcp_stop(void)
{
	ring_buffer__free(sidx.rb);
	sidx.rb = NULL;
	bm_strmap_free(&sidx.keys);
	memset(&sidx, 0, sizeof(sidx));
}
