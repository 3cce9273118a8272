/* Istio request metrics of the HTTP proxy (istio_requests_total and the
 * three istio_request_* / istio_response_* histograms, reference §7.1),
 * per worker, keyed by bounded labels so the table stays bounded: never by
 * request, connection or client port.
 *
 * Key (struct bm_req_key):
 *   reporter source (client side): src = the client pod "ns/name",
 *     upstream ip:port = the backend of the last attempt (to find the
 *     destination workload), dst = "";
 *   reporter destination (server side): src = the peer principal without
 *     spiffe:// ("" for plaintext), dst = the server pod "ns/name",
 *     upstream ip:port = 0 (the client's address is not a label);
 *   both: mtls, response code, response flags, destination service host
 *     and namespace, destination port, request protocol (http / grpc) and
 *     gRPC status (-1: none, rendered "").
 *
 * Concurrency is relay.h's bm_mesh_table discipline: one writer (the owning
 * worker), readers on the metrics thread. A row's key is written once and
 * then published with a release store of the row count; counters are only
 * ever written by the owner with relaxed atomic stores (plain movs, no
 * locked read-modify-write) and read with relaxed loads. A histogram keeps
 * per-bucket counts, not a separate count: the reader derives the
 * cumulative buckets and `+Inf` = _count from the same loads, so a scrape
 * can never see a bucket above _count, whatever the interleaving. Rows are
 * never freed or moved. */
#ifndef BM_REQMETRICS_H
#define BM_REQMETRICS_H
#include <stddef.h>
#include <stdint.h>

struct bm_l7_record;
struct bm_proxy;

/* Envoy's default histogram bounds (reference §7.1), used for all three
 * histograms, durations in ms and sizes in bytes alike. */
#define BM_REQ_BOUNDS 19
extern const double bm_req_bounds[BM_REQ_BOUNDS];

/* Bounds: rows per worker (why: memory, about 1.4 KiB a row) and string
 * lengths (a DNS name is at most 253 bytes). */
#define BM_REQ_ROWS  512
#define BM_REQ_NAME  256

enum { BM_REQ_DURATION, BM_REQ_REQUEST_BYTES, BM_REQ_RESPONSE_BYTES, BM_REQ_HISTS };

struct bm_req_key {
	uint8_t reporter;           /* BM_MESH_SOURCE / BM_MESH_DESTINATION (relay.h) */
	uint8_t mtls;               /* the request travelled in mutual TLS */
	uint16_t code;              /* HTTP status sent to the client; 0: none */
	uint16_t dst_port;          /* service port (source) / pod port (destination), host order */
	uint16_t upstream_port;     /* reporter source: backend port, network order; else 0 */
	uint32_t upstream_ip;       /* reporter source: backend IP, network order; else 0 */
	uint8_t protocol;           /* request_protocol: BM_L7_PROTO_HTTP "http",
				     * BM_L7_PROTO_GRPC "grpc" (l7proxy.h) */
	int16_t grpc_status;        /* grpc_response_status: 0..16 as a number; -1 renders "" */
	char flags[32];             /* Envoy response flags, "-" for none */
	char src[BM_REQ_NAME];
	char dst[BM_REQ_NAME];
	char svc[BM_REQ_NAME];      /* destination service FQDN, "" unknown */
	char svc_ns[64];            /* its namespace */
};

struct bm_req_hist {
	uint64_t bucket[BM_REQ_BOUNDS + 1];   /* per bucket, not cumulative; [BM_REQ_BOUNDS]: above the last bound */
	uint64_t sum;
};

struct bm_req_row {
	struct bm_req_key k;
	uint32_t hash;
	struct bm_req_hist h[BM_REQ_HISTS];
};

/* _count of a histogram (the sum of its buckets); the duration histogram's
 * is the row's request count. */
uint64_t bm_req_hist_count(const struct bm_req_hist *h);
/* The bucket v falls in: the first bound >= v, BM_REQ_BOUNDS above all. */
unsigned bm_req_bucket(uint64_t v);

struct bm_req_table;

/* A zeroed table (NULL, errno set, when out of memory). */
struct bm_req_table *bm_req_table_new(void);
void bm_req_table_free(struct bm_req_table *t);
/* Count one finished request (struct bm_l7_record, l7proxy.h). Owner worker
 * only: no lock, no atomic RMW. A request whose key is new when the table
 * holds BM_REQ_ROWS rows is counted in the overflow counter instead. */
void bm_req_record(struct bm_req_table *t, const struct bm_l7_record *r);
/* Add t's published rows into the array *out (n entries, capacity *cap),
 * merging identical keys (also with rows already in *out, e.g. other
 * workers'). Any thread. 0 or -ENOMEM. */
int bm_req_collect(const struct bm_req_table *t, struct bm_req_row **out, size_t *n, size_t *cap);
/* Requests that found the table full. Any thread. */
uint64_t bm_req_table_overflow(const struct bm_req_table *t);

/* Implemented by the proxy (agent/proxy_stats.c): every worker's rows, merged
 * with bm_req_collect (*out malloc'ed, the caller frees it). 0 or -errno.
 * reqmetrics.c has weak defaults returning no rows / 0 so that meshd and
 * the unit tests link before the proxy provides the real ones. */
int bm_proxy_req_rows(struct bm_proxy *p, struct bm_req_row **out, size_t *n);
/* The sum of every worker's bm_req_table_overflow(). */
uint64_t bm_proxy_req_overflow(struct bm_proxy *p);

#endif
