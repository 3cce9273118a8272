/*
 * Per-worker request metrics tables (see reqmetrics.h for the rules).
 *
 * Rows live in an array filled in order and published by its count; the
 * owner finds a key through a private open-addressing index twice the size
 * of the array, so a lookup stays short even when the table is full.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "l7proxy.h"
#include "relay.h"
#include "reqmetrics.h"

#define INDEX_SLOTS (2 * BM_REQ_ROWS)   /* power of two, load <= 1/2 */

struct bm_req_table {
	struct bm_req_row row[BM_REQ_ROWS];
	uint16_t index[INDEX_SLOTS];        /* owner only: row + 1, 0 = empty */
	uint32_t n_rows;                    /* published with a release store */
	uint64_t overflow;
};

#define WR(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define RDR(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

const double bm_req_bounds[BM_REQ_BOUNDS] = {
	0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
	300000, 600000, 1800000, 3600000,
};

unsigned bm_req_bucket(uint64_t v)
{
	unsigned lo = 0, hi = BM_REQ_BOUNDS;

	/* Envoy's buckets hold values <= their bound. */
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if ((double)v <= bm_req_bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

uint64_t bm_req_hist_count(const struct bm_req_hist *h)
{
	uint64_t n = 0;

	for (unsigned i = 0; i <= BM_REQ_BOUNDS; i++)
		n += h->bucket[i];
	return n;
}

struct bm_req_table *bm_req_table_new(void)
{
	return calloc(1, sizeof(struct bm_req_table));
}

void bm_req_table_free(struct bm_req_table *t)
{
	free(t);
}

static void copy_str(char *dst, size_t size, const char *src)
{
	size_t n = src ? strnlen(src, size - 1) : 0;

	memcpy(dst, src ? src : "", n);
	dst[n] = 0;
}

/* The key is built zeroed, so whole keys compare with memcmp. */
static void key_of(const struct bm_l7_record *r, struct bm_req_key *k)
{
	memset(k, 0, sizeof(*k));
	k->reporter = r->reporter;
	k->mtls = r->mtls ? 1 : 0;
	k->code = r->status;
	k->dst_port = r->dst_port;
	k->protocol = r->protocol;
	k->grpc_status = r->protocol == BM_L7_PROTO_GRPC ? r->grpc_status : -1;
	copy_str(k->flags, sizeof(k->flags), r->flags && *r->flags ? r->flags : "-");
	if (r->reporter == BM_MESH_SOURCE) {
		k->upstream_ip = r->upstream_ip;
		k->upstream_port = r->upstream_ip ? r->upstream_port : 0;
		if (r->src_ns && *r->src_ns && r->src_name && *r->src_name) {
			size_t nl = strnlen(r->src_ns, sizeof(k->src) - 2);

			memcpy(k->src, r->src_ns, nl);
			k->src[nl] = '/';
			copy_str(k->src + nl + 1, sizeof(k->src) - nl - 1, r->src_name);
		}
	} else {
		copy_str(k->src, sizeof(k->src), r->src_principal);
		if (r->dst_ns && *r->dst_ns && r->dst_name && *r->dst_name) {
			size_t nl = strnlen(r->dst_ns, sizeof(k->dst) - 2);

			memcpy(k->dst, r->dst_ns, nl);
			k->dst[nl] = '/';
			copy_str(k->dst + nl + 1, sizeof(k->dst) - nl - 1, r->dst_name);
		}
	}
	copy_str(k->svc, sizeof(k->svc), r->dst_service);
	copy_str(k->svc_ns, sizeof(k->svc_ns), r->dst_service_ns);
}

static uint32_t fnv_str(uint32_t h, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		h = (h ^ *p) * 16777619u;
	return (h ^ 0xff) * 16777619u;
}

static uint32_t key_hash(const struct bm_req_key *k)
{
	uint32_t h = 2166136261u;

	h = (h ^ k->reporter) * 16777619u;
	h = (h ^ k->mtls) * 16777619u;
	h = (h ^ k->code) * 16777619u;
	h = (h ^ k->dst_port) * 16777619u;
	h = (h ^ k->upstream_port) * 16777619u;
	h = (h ^ k->upstream_ip) * 16777619u;
	h = (h ^ k->protocol) * 16777619u;
	h = (h ^ (uint16_t)k->grpc_status) * 16777619u;
	h = fnv_str(h, k->flags);
	h = fnv_str(h, k->src);
	h = fnv_str(h, k->dst);
	h = fnv_str(h, k->svc);
	return fnv_str(h, k->svc_ns);
}

static int key_eq(const struct bm_req_key *a, const struct bm_req_key *b)
{
	return !memcmp(a, b, sizeof(*a));
}

static struct bm_req_row *row_of(struct bm_req_table *t, const struct bm_req_key *k, uint32_t h)
{
	for (uint32_t i = 0; i < INDEX_SLOTS; i++) {
		uint16_t *slot = &t->index[(h + i) & (INDEX_SLOTS - 1)];
		struct bm_req_row *r;

		if (!*slot) {
			uint32_t n = t->n_rows;

			if (n == BM_REQ_ROWS)
				return NULL;
			r = &t->row[n];
			r->k = *k;
			r->hash = h;
			*slot = (uint16_t)(n + 1);
			/* The key is complete before a reader can see the row. */
			__atomic_store_n(&t->n_rows, n + 1, __ATOMIC_RELEASE);
			return r;
		}
		r = &t->row[*slot - 1];
		if (r->hash == h && key_eq(&r->k, k))
			return r;
	}
	return NULL;
}

static void hist_add(struct bm_req_hist *h, uint64_t v)
{
	unsigned b = bm_req_bucket(v);

	WR(h->bucket[b], h->bucket[b] + 1);
	WR(h->sum, h->sum + v);
}

void bm_req_record(struct bm_req_table *t, const struct bm_l7_record *r)
{
	struct bm_req_key k;
	struct bm_req_row *row;

	key_of(r, &k);
	row = row_of(t, &k, key_hash(&k));
	if (!row) {
		WR(t->overflow, t->overflow + 1);
		return;
	}
	hist_add(&row->h[BM_REQ_DURATION], r->duration_ms);
	hist_add(&row->h[BM_REQ_REQUEST_BYTES], r->req_body_bytes);
	hist_add(&row->h[BM_REQ_RESPONSE_BYTES], r->resp_body_bytes);
}

uint64_t bm_req_table_overflow(const struct bm_req_table *t)
{
	return RDR(t->overflow);
}

static int grow(struct bm_req_row **out, size_t *cap, size_t need)
{
	size_t nc = *cap ? *cap : 64;
	struct bm_req_row *nv;

	if (need <= *cap)
		return 0;
	while (nc < need)
		nc *= 2;
	nv = realloc(*out, nc * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	*out = nv;
	*cap = nc;
	return 0;
}

int bm_req_collect(const struct bm_req_table *t, struct bm_req_row **out, size_t *n, size_t *cap)
{
	uint32_t rows = __atomic_load_n(&t->n_rows, __ATOMIC_ACQUIRE);
	size_t slots = 64, mask;
	uint32_t *idx;
	int err;

	if (!rows)
		return 0;
	err = grow(out, cap, *n + rows);
	if (err)
		return err;
	/* A temporary index over *out keeps the merge linear in rows. */
	while (slots < 2 * (*n + rows))
		slots *= 2;
	mask = slots - 1;
	idx = calloc(slots, sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	for (size_t j = 0; j < *n; j++) {
		size_t s = (*out)[j].hash & mask;

		while (idx[s])
			s = (s + 1) & mask;
		idx[s] = (uint32_t)(j + 1);
	}
	for (uint32_t i = 0; i < rows; i++) {
		const struct bm_req_row *r = &t->row[i];
		struct bm_req_row *o = NULL;
		size_t s = r->hash & mask;

		for (; idx[s]; s = (s + 1) & mask) {
			struct bm_req_row *c = &(*out)[idx[s] - 1];

			if (c->hash == r->hash && key_eq(&c->k, &r->k)) {
				o = c;
				break;
			}
		}
		if (!o) {
			o = &(*out)[*n];
			memset(o, 0, sizeof(*o));
			o->k = r->k;
			o->hash = r->hash;
			idx[s] = (uint32_t)++*n;
		}
		for (int hi = 0; hi < BM_REQ_HISTS; hi++) {
			for (unsigned b = 0; b <= BM_REQ_BOUNDS; b++)
				o->h[hi].bucket[b] += RDR(r->h[hi].bucket[b]);
			o->h[hi].sum += RDR(r->h[hi].sum);
		}
	}
	free(idx);
	return 0;
}

/* Defaults until the proxy provides its own (strong) definitions. */
__attribute__((weak)) int bm_proxy_req_rows(struct bm_proxy *p, struct bm_req_row **out, size_t *n)
{
	(void)p;
	*out = NULL;
	*n = 0;
	return 0;
}

__attribute__((weak)) uint64_t bm_proxy_req_overflow(struct bm_proxy *p)
{
	(void)p;
	return 0;
}
