/* L7 (HTTP) traffic management: the compiled configuration the HTTP proxy
 * path works from, and the pure-logic pieces around it.
 *
 *   agent/l7model.c  Istio resources -> struct bm_l7_config (services; the
 *                    clusters in l7model_clusters.c, the routes in l7model_routes.c)
 *   agent/l7match.c  string matchers, route selection, rewrite/redirect, header ops,
 *                    path normalization
 *   agent/retry.c    retry decision table and backoff
 *   agent/outlier.c  the outlier-detection state machine (explicit clock)
 *   agent/l7proxy.c  the HTTP/1.1 proxy engine on the workers' event loops
 *
 * A configuration is immutable once published and reference counted: the
 * main thread builds a new one on every store change and swaps it in;
 * workers hold a reference per downstream connection. Semantics:
 * ../shared/docs/reference/istio-api.md §1, §2. */
#ifndef BM_L7_H
#define BM_L7_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

/* ---- string matching (Istio StringMatch) --------------------------------- */

enum bm_sm_kind {
	BM_SM_NONE = 0,   /* no matcher: matches anything (also absent values) */
	BM_SM_EXACT,
	BM_SM_PREFIX,
	BM_SM_REGEX,      /* RE2 syntax compiled with PCRE2, full match */
	BM_SM_PRESENT,    /* {} or regex "*": the value exists (may be empty) */
};

struct bm_strmatch {
	uint8_t kind;     /* enum bm_sm_kind */
	uint8_t icase;    /* exact/prefix compared case-insensitively */
	char *s;          /* exact/prefix text, regex source */
	void *re;         /* pcre2_code * for BM_SM_REGEX */
};

struct bm_l7_kvmatch {
	char *name;       /* header names lower case; query parameter names as given */
	struct bm_strmatch m;
};

struct bm_l7_label {
	char *key, *value;
};

/* One HTTPMatchRequest: every field present must match (AND). */
struct bm_l7_match {
	char *name;
	struct bm_strmatch uri, scheme, method, authority;
	struct bm_l7_kvmatch *headers;          size_t n_headers;
	struct bm_l7_kvmatch *without_headers;  size_t n_without_headers;
	struct bm_l7_kvmatch *query;            size_t n_query;
	struct bm_l7_label *source_labels;      size_t n_source_labels;
	char *source_namespace;                 /* NULL = any */
	uint16_t port;                          /* service port, host order; 0 = any */
};

/* headers.request / headers.response: set, add, remove. */
struct bm_l7_hdr {
	char *name;       /* lower case */
	char *value;
};
struct bm_l7_hdr_ops {
	struct bm_l7_hdr *set;  size_t n_set;
	struct bm_l7_hdr *add;  size_t n_add;
	char **remove;          size_t n_remove;
};

/* ---- upstream clusters ---------------------------------------------------- */

struct bm_l7_backend {
	uint32_t ip;      /* network order */
	uint16_t port;    /* network order */
	uint16_t mesh;    /* a mesh workload: reach it over HBONE (or same-node delivery) */
	uint32_t id;      /* node-wide backend id (ejection map index); 0 = unknown */
};

/* Outlier detection of a cluster (§2.5), durations in ms. */
struct bm_outlier_cfg {
	uint8_t enabled;            /* the outlierDetection block is present */
	uint32_t consecutive_5xx;   /* 0 = disabled; default 5 */
	uint32_t consecutive_gw;    /* 0 = disabled (default) */
	uint32_t interval_ms;       /* default 10000 */
	uint32_t base_ejection_ms;  /* default 30000 */
	uint32_t max_ejection_ms;   /* 300000, or base if larger */
	uint8_t max_ejection_pct;   /* default 10; at least one host is always ejectable */
};

/* Circuit-breaker counters shared by all workers for one cluster. They
 * outlive configurations (looked up by cluster name), so a config swap
 * does not reset what is in flight. Atomics (__atomic builtins). */
struct bm_l7_cluster_rt {
	uint32_t pending;           /* requests waiting for an upstream connection */
	uint32_t requests;          /* requests in flight */
	uint32_t retries;           /* retries in flight */
	uint32_t connections;       /* upstream connections open */
	uint32_t rr;                /* round-robin cursor */
	uint32_t waiting;           /* requests queued for a connection slot, all workers */
	uint64_t overflow_pending, overflow_requests, overflow_retries;
};

#define BM_L7_UNLIMITED 0xffffffffu

/* Upstream protocol of a cluster (§2.4 h2UpgradePolicy, the port's protocol). */
enum bm_l7_upstream_proto {
	BM_L7_UP_H1 = 0,          /* HTTP/1.1 (protocol HTTP) */
	BM_L7_UP_H2,              /* h2c prior knowledge (HTTP2, GRPC, h2UpgradePolicy UPGRADE) */
	BM_L7_UP_DOWNSTREAM,      /* the client's protocol (unset protocol: Istio sniffs) */
};

struct bm_l7_cluster {
	char name[320];             /* outbound|PORT|SUBSET|HOST */
	char host[256];             /* FQDN of the service */
	char ns[64];                /* the service's namespace */
	char subset[64];
	uint16_t port;              /* service port, host order */
	uint8_t lb;                 /* enum bm_lb */
	uint8_t min_health;         /* panic threshold percent */
	int8_t tls;                 /* DR tls.mode: 1 ISTIO_MUTUAL, 0 DISABLE, -1 unset */
	uint8_t proto;              /* enum bm_l7_upstream_proto: how to speak to the hosts */
	/* connectionPool (§2.4); BM_L7_UNLIMITED when unset or 0 */
	uint32_t max_connections;
	uint32_t max_pending;       /* http1MaxPendingRequests */
	uint32_t max_requests;      /* http2MaxRequests */
	uint32_t max_retries;
	uint32_t max_requests_per_conn; /* 0 = unlimited */
	uint32_t idle_timeout_ms;   /* http.idleTimeout, default 3600000 */
	uint32_t connect_timeout_ms;/* tcp.connectTimeout, default 10000 */
	struct bm_outlier_cfg od;
	struct bm_l7_cluster_rt *rt;/* never NULL in a built config */
	uint32_t n;
	struct bm_l7_backend *b;
};

/* ---- routes ---------------------------------------------------------------- */

/* retryOn bits (§1.6). */
#define BM_RETRY_5XX             0x001u
#define BM_RETRY_GATEWAY_ERROR   0x002u
#define BM_RETRY_RESET           0x004u
#define BM_RETRY_CONNECT_FAILURE 0x008u
#define BM_RETRY_REFUSED_STREAM  0x010u
#define BM_RETRY_RETRIABLE_4XX   0x020u
#define BM_RETRY_STATUS_CODES    0x040u
#define BM_RETRY_RESET_BEFORE_REQ 0x080u
#define BM_RETRY_GRPC_CANCELLED  0x100u
#define BM_RETRY_GRPC_DEADLINE   0x200u
#define BM_RETRY_GRPC_INTERNAL   0x400u
#define BM_RETRY_GRPC_RESOURCE   0x800u
#define BM_RETRY_GRPC_UNAVAILABLE 0x1000u
#define BM_RETRY_MAX_CODES 16

struct bm_l7_retry {
	uint32_t attempts;          /* retries (requests = 1 + attempts); default 2 */
	uint32_t per_try_ms;        /* 0 = none */
	uint32_t on;                /* BM_RETRY_* */
	uint16_t codes[BM_RETRY_MAX_CODES];
	uint8_t n_codes;
	uint8_t ignore_previous_hosts; /* default 1: retry on another host */
	uint32_t backoff_base_ms;   /* default 25; max = 10 x base (250 for the default) */
};

struct bm_l7_dest {
	struct bm_l7_cluster *c;    /* NULL: host/subset unknown -> 503 NC */
	uint32_t weight;
	struct bm_l7_hdr_ops req, resp;
};

struct bm_l7_mirror {
	struct bm_l7_cluster *c;
	uint32_t ppm;               /* percentage in parts per million; 1000000 = 100 % */
};

struct bm_l7_route {
	char *name;                 /* http.name ("" if none) */
	struct bm_l7_match *match;  size_t n_match;   /* 0 = catch-all */
	struct bm_l7_dest *dest;    size_t n_dest;    /* weights relative; 0-weight dropped */
	uint64_t total_weight;
	/* redirect (code 0 = none) */
	struct {
		uint16_t code;          /* 301 default */
		char *uri, *authority, *scheme;
		uint16_t port;          /* 0 = keep */
		uint8_t derive_port;    /* 1 FROM_PROTOCOL_DEFAULT, 2 FROM_REQUEST_PORT */
	} redirect;
	/* directResponse (status 0 = none) */
	struct {
		uint16_t status;
		char *body;
		size_t body_len;
	} direct;
	char *rewrite_uri;          /* NULL = none */
	char *rewrite_authority;
	uint32_t timeout_ms;        /* 0 = none */
	struct bm_l7_retry retry;
	struct {
		uint32_t delay_ms, delay_ppm;
		uint16_t abort_status;
		uint8_t abort_grpc;     /* abort.grpcStatus code + 1; 0: httpStatus */
		uint32_t abort_ppm;
	} fault;
	struct bm_l7_mirror *mirror; size_t n_mirror;
	struct bm_l7_hdr_ops req, resp;
};

/* A service (VIP:port) whose HTTP traffic meshd routes. */
struct bm_l7_service {
	uint32_t vip;               /* network order */
	uint16_t port;              /* host order */
	char host[256];             /* FQDN */
	char ns[64];
	struct bm_l7_route *route;  size_t n_route;
};

/* Where a pod's access log lines go (agent/accesslog.h), resolved by the
 * agent when it publishes a configuration; sorted by (ns, name). */
struct bm_l7_podlog {
	char ns[64], name[128];
	unsigned n;               /* struct bm_accesslog_sinks, kept opaque here */
	int fd[4];
};

/* Tracing settings of a pod (agent/tracing.h), resolved by the agent when it
 * publishes a configuration; sorted by (ns, name). */
struct bm_l7_podtrace {
	char ns[64], name[128];
	char service[64];         /* istio.canonical_service, the span's localEndpoint */
	uint32_t ip;              /* the pod's address, network order */
	uint32_t sample_ppm;      /* randomSamplingPercentage in parts per million */
	uint8_t report;           /* 0: disableSpanReporting */
};

struct bm_l7_config {
	int refs;
	uint64_t generation;
	struct bm_l7_podlog *podlog;    size_t n_podlog;   /* malloc'ed; freed with the config */
	struct bm_l7_podtrace *podtrace; size_t n_podtrace; /* malloc'ed; freed with the config */
	struct bm_l7_service *svc;      size_t n_svc;
	struct bm_l7_cluster *cluster;  size_t n_cluster;
	void *arena;                    /* l7model.c's allocations */
};

/* ---- l7model.c ------------------------------------------------------------- */

/* Build from canonical resources (the store snapshot). Services get L7
 * handling when a VirtualService http rule uses anything beyond weighted
 * destinations (match, rewrite, redirect, directResponse, headers, timeout,
 * retries, fault, mirror) or the service's DestinationRule sets
 * connectionPool.http or outlierDetection. Problems are logged and the rest
 * builds. *out has refs = 1. */
int bm_l7_build(const json_t *resources, struct bm_l7_config **out, FILE *log);
void bm_l7_get(struct bm_l7_config *c);
void bm_l7_put(struct bm_l7_config *c);

/* One cluster's circuit-breaker state, for /metrics. */
struct bm_l7_breaker_stat {
	const char *cluster;   /* the process keeps it (struct bm_l7_cluster_rt outlives configs) */
	uint32_t pending, requests, retries;
	uint64_t overflow_pending, overflow_requests, overflow_retries;
};
/* Every cluster any L7 configuration of this process has had, sorted by
 * name, into out; returns how many there are (out may be NULL with max 0 to
 * count). A buffer shorter than that gets max of them (not the first max by
 * name), sorted. Any thread. */
size_t bm_l7_breaker_stats(struct bm_l7_breaker_stat *out, size_t max);
/* The service at vip:port (port host order) or NULL. */
const struct bm_l7_service *bm_l7_find(const struct bm_l7_config *c, uint32_t vip, uint16_t port);
/* The access-log sinks of pod ns/name, or NULL when it logs nothing. */
const struct bm_l7_podlog *bm_l7_podlog_find(const struct bm_l7_config *c, const char *ns,
					     const char *name);
/* Does this service (VIP, host-order port) need the HTTP path? */
int bm_l7_is_l7(const struct bm_l7_config *c, uint32_t vip, uint16_t port);

/* ---- l7match.c ------------------------------------------------------------- */

/* An HTTP request as the matchers see it. Header names lower case. */
struct bm_http_hdr {
	const char *name, *value;
	size_t name_len, value_len;
};
struct bm_l7_req {
	const char *method, *scheme, *authority;
	const char *path;           /* :path with the query string */
	size_t path_len;
	const struct bm_http_hdr *hdr; size_t n_hdr;
	/* the client workload (sourceLabels, sourceNamespace) */
	const json_t *src_labels;   /* object or NULL */
	const char *src_ns;         /* NULL unknown */
	uint16_t port;              /* service port, host order */
};

/* Compile a StringMatch object ({exact|prefix|regex: s}, {} = presence). 0 or -EINVAL (err says why). */
int bm_strmatch_compile(const json_t *sm, int icase, struct bm_strmatch *out, char *err, size_t len);
void bm_strmatch_free(struct bm_strmatch *m);
/* v NULL = absent. */
int bm_strmatch_eval(const struct bm_strmatch *m, const char *v, size_t len);
/* The first matching route of svc (and which match entry in *which, -1 for
 * catch-all), or NULL: 404 NR. */
const struct bm_l7_route *bm_l7_route_select(const struct bm_l7_service *svc,
					     const struct bm_l7_req *r, int *which);
/* Weighted destination for a uniform random r. NULL if the route has none. */
const struct bm_l7_dest *bm_l7_dest_pick(const struct bm_l7_route *rt, uint32_t r);
/* rewrite.uri applied to path given the matched entry (§1.9 rules). Writes
 * into out (NUL-terminated); -ENOSPC if it does not fit. */
int bm_l7_rewrite_path(const struct bm_l7_route *rt, int which, const char *path,
		       char *out, size_t len);
/* The redirect Location for request r. -ENOSPC if it does not fit. */
int bm_l7_redirect_location(const struct bm_l7_route *rt, int which, const struct bm_l7_req *r,
			    char *out, size_t len);
/* Path normalization (BASE: RFC 3986 dot segments; query kept apart).
 * Writes the normalized path without query into out; -EINVAL if invalid. */
int bm_l7_normalize_path(const char *path, size_t len, char *out, size_t outlen);
/* Header operations (headers.request/response, §1.9) applied while a header
 * block is re-serialized. ops[0..n_ops) in order of application: route-level
 * first, then the chosen destination's (NULL entries skipped); each removes,
 * then sets (overwrite), then adds, so a later set wins.
 * bm_l7_hdr_keep: does an incoming header name[0..len) survive (1), or is it
 * removed or overwritten (0)? Names compared case-insensitively. */
int bm_l7_hdr_keep(const struct bm_l7_hdr_ops *const *ops, size_t n_ops, const char *name,
		   size_t len);
/* Calls fn(arg, name, value) for each header the ops write, in order, after
 * the surviving ones; stops at and returns fn's first non-zero return. */
int bm_l7_hdr_each_added(const struct bm_l7_hdr_ops *const *ops, size_t n_ops,
			 int (*fn)(void *arg, const char *name, const char *value), void *arg);

/* ---- retry.c --------------------------------------------------------------- */

/* Parse a retryOn string into r->on / r->codes; -EINVAL naming the token in err. */
int bm_retry_parse_on(const char *s, struct bm_l7_retry *r, char *err, size_t len);
/* Istio's default policy (§1.6). */
void bm_retry_default(struct bm_l7_retry *r);

enum bm_attempt_result {
	BM_AR_RESPONSE,          /* got response headers with status */
	BM_AR_CONNECT_FAILURE,   /* connect refused / timed out */
	BM_AR_RESET_BEFORE_REQ,  /* upstream closed before the request was sent */
	BM_AR_RESET,             /* closed/reset before response headers */
	BM_AR_PER_TRY_TIMEOUT,   /* per-try timeout expired */
	BM_AR_REFUSED_STREAM,
	BM_AR_OVERFLOW,          /* circuit breaker: never retried */
};
/* Should this attempt be retried (given attempts already made, 1 = first)?
 * grpc_status -1 if none in the response headers. */
int bm_retry_should(const struct bm_l7_retry *r, enum bm_attempt_result res, int status,
		    int grpc_status, unsigned attempts_made);
/* Jittered backoff before retry n (1 = first retry): uniform [0, (2^n - 1) x base), capped
 * at 10 x base; rnd is a uniform random 32-bit number. */
uint32_t bm_retry_backoff_ms(const struct bm_l7_retry *r, unsigned n, uint32_t rnd);

/* ---- outlier.c --------------------------------------------------------------- */

/* Node-wide outlier state per backend id (hosts of all clusters), thread-safe
 * (one mutex; reports are per response). The caller applies the returned
 * changes to the kernel's backend_eject_v1 and to its own LB. */
struct bm_outlier;
enum bm_outlier_ev {
	BM_OE_SUCCESS,           /* non-error response */
	BM_OE_5XX,               /* upstream 5xx other than 502/503/504 */
	BM_OE_GATEWAY,           /* 502, 503, 504 from upstream */
	BM_OE_LOCAL_FAILURE,     /* connect failure, reset, timeout (counts as gateway + 5xx) */
};
struct bm_outlier *bm_outlier_new(uint32_t max_backends);
void bm_outlier_free(struct bm_outlier *o);
/* Report one result for backend id, a host of a cluster with cfg whose
 * hosts are hosts[0..n_hosts) (the module counts how many of them are
 * ejected for maxEjectionPercent; at least one host is always ejectable).
 * Returns 1 when this report ejected the host (the caller writes the
 * kernel map), else 0. cfg->enabled == 0: only tracked, never ejects. */
int bm_outlier_report(struct bm_outlier *o, const struct bm_outlier_cfg *cfg, uint32_t id,
		      const uint32_t *hosts, uint32_t n_hosts, enum bm_outlier_ev ev,
		      uint64_t now_ms);
/* Hosts whose ejection time is over, and per-interval decrement of the
 * ejection multiplier. Fills ids (up to max) of hosts returned to service. */
size_t bm_outlier_tick(struct bm_outlier *o, uint64_t now_ms, uint32_t *ids, size_t max);
int bm_outlier_is_ejected(const struct bm_outlier *o, uint32_t id);
/* {"id": {"ejected":b,"times":n,"until_ms":n,"consecutive":n}} for admin/metrics */
json_t *bm_outlier_json(const struct bm_outlier *o);
uint64_t bm_outlier_ejections_total(const struct bm_outlier *o);

#endif
