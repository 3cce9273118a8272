/* The HTTP proxy engine (agent/l7proxy.c, agent/l7upstream.c, the fronts
 * agent/l7h1.c and agent/h2down.c, HTTP/2 upstreams agent/h2up.c): one
 * engine per worker loop, carrying HTTP/1.1 requests one at a time per
 * downstream connection and HTTP/2 (h2c prior knowledge, gRPC) streams
 * concurrently, following Envoy's router as Istio configures it
 * (../shared/docs/reference/istio-api.md §1, §2.4, §2.5, §7.3).
 *
 *   outbound (client side): a connection captured for an L7 service
 *     (orig_dst bip == 0): per request route selection, directResponse,
 *     redirect, fault injection, weighted destination, circuit breakers,
 *     load balancing with outlier ejection, keep-alive upstream pools per
 *     (source, cluster, backend), rewrites and header operations, route
 *     and per-try timeouts, retries with jittered backoff, mirroring;
 *   inbound (server side): a connection to a pod whose authorization needs
 *     HTTP attributes: per request path normalization and the policy check
 *     (403 / 401), then the request goes to the app over one upstream
 *     connection per downstream connection.
 *
 * The engine knows nothing about network namespaces, HBONE or the kernel:
 * proxy_l7.c gives it upstream sockets (ops.connect), decisions (ops.authorize,
 * ops.l4_allowed), and takes its results (ops.complete, ops.ejected).
 * Everything runs on the loop's thread; nothing is locked except the
 * clusters' circuit-breaker counters (atomics shared with other workers). */
#ifndef BM_L7PROXY_H
#define BM_L7PROXY_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "l7.h"
#include "relay.h"
#include "tracing.h"

struct bm_l7_engine;

/* Bounds (why: memory per worker and Envoy's equivalents). */
#define BM_L7_REPLAY_MAX   (64 * 1024)   /* request body kept for retries and mirrors */
#define BM_L7_MIRRORS_MAX  256           /* mirror requests in flight per engine */
#define BM_L7_SNIFF_BYTES  24            /* the HTTP/2 client preface's length */

/* bm_l7_record.protocol: Istio's request_protocol label ("http" / "grpc"). */
enum { BM_L7_PROTO_HTTP = 0, BM_L7_PROTO_GRPC = 1 };

/* One finished request, for metrics and access logs (ops.complete). Every
 * pointer is valid only during the call; strings are never NULL ("" when
 * unknown). */
struct bm_l7_record {
	uint8_t reporter;           /* BM_MESH_SOURCE (client side) / BM_MESH_DESTINATION */
	uint8_t mtls;               /* the request travelled (or arrived) in mutual TLS */
	const char *src_ns, *src_name;  /* client pod (outbound); inbound: from the peer if known */
	const char *src_principal;  /* inbound: peer principal without spiffe://, "" plaintext */
	const char *dst_ns, *dst_name;  /* inbound: the server pod; outbound: "" */
	const char *dst_service;    /* service FQDN (outbound: the cluster's host) */
	const char *dst_service_ns; /* the service's namespace */
	const char *cluster;        /* outbound|PORT|SUBSET|HOST, "" when none */
	const char *subset;
	uint32_t upstream_ip;       /* the last attempt's backend, network order; 0 none */
	uint16_t upstream_port;     /* network order */
	uint16_t dst_port;          /* service port (outbound) / pod port (inbound), host order */
	const char *method, *authority, *path;   /* as received */
	uint16_t status;            /* sent to the client; 0: none (client went away) */
	const char *flags;          /* Envoy response flags, comma-separated, "-" for none:
				     * NR UO UT URX UF UC UH NC DI FI DC DPE DENY UAEX */
	uint64_t req_body_bytes;    /* decoded request body bytes received */
	uint64_t resp_body_bytes;   /* decoded response body bytes sent */
	uint64_t start_ms;          /* wall clock (ms since the epoch) at the request's head */
	uint64_t duration_ms;       /* head received -> response finished */
	uint32_t attempts;          /* upstream attempts made (0: answered locally) */
	const char *route_name;     /* http.name[.match.name] */
	const char *request_id;     /* x-request-id (generated when absent) */
	const char *user_agent;
	uint32_t svc_id;            /* the kernel's service id from orig_dst (outbound); 0 */
	uint32_t src_ip;            /* the client's address (network order); 0 unknown */
	uint8_t protocol;           /* BM_L7_PROTO_HTTP / BM_L7_PROTO_GRPC (Istio request_protocol) */
	uint8_t downstream_h2;      /* the client spoke HTTP/2 (access log %PROTOCOL%) */
	int16_t grpc_status;        /* gRPC status from response headers or trailers; -1 none */
	/* Tracing (agent/tracing.h): this hop's span when the request was
	 * sampled and its span is to be reported (bm_trace_report), else NULL. */
	const struct bm_trace_span *span;
};

/* The downstream side of a connection, given at accept (copied; strings
 * up to their field sizes). */
struct bm_l7_peer {
	uint8_t inbound;            /* 0: outbound routing; 1: inbound authorization */
	uint8_t mtls;               /* inbound: arrived over HBONE */
	uint64_t pool_key;          /* upstream pools are per pool_key (the source pod) */
	void *user;                 /* passed to ops.connect/l4_allowed, released by ops.release */
	enum bm_pdir l4_dir;        /* relay counters when the connection is not HTTP */
	/* outbound */
	uint32_t vip;               /* network order */
	uint16_t port;              /* service port, host order */
	uint32_t svc_id;
	char src_ns[64], src_name[128];
	const json_t *src_labels;   /* the client pod's labels (object, a reference is taken) */
	/* inbound (and outbound: the source's identity) */
	char src_principal[256];    /* without spiffe://, "" = plaintext */
	uint32_t src_ip, dst_ip;    /* network order */
	uint16_t dst_port;          /* host order: the pod's port */
	char dst_ns[64], dst_name[128];
	/* Unused (requests keep their own span now); callers leave it zeroed. */
	struct bm_trace_span trace;
};

/* Inbound per-request authorization input/output (ops.authorize). */
struct bm_l7_authz_req {
	const struct bm_l7_peer *peer;
	const char *method, *host;
	const char *path;           /* normalized, without query */
	const char *query;          /* "" when none */
	const struct bm_http_hdr *hdr; size_t n_hdr;
};
#define BM_L7_MAX_STRIP 4
struct bm_l7_authz_res {
	/* allowed: remove these headers / query parameters before forwarding
	 * (RequestAuthentication forwardOriginalToken false) */
	char strip_header[BM_L7_MAX_STRIP][128];
	size_t n_strip_header;
	char strip_param[BM_L7_MAX_STRIP][128];
	size_t n_strip_param;
	char www_authenticate[512]; /* 401: the challenge */
	char body[160];             /* 401: the body ("" = "Jwt verification fails") */
	char reason[128];           /* deny reason for counters and logs */
};

struct bm_l7_ops {
	/* A non-blocking socket to backend b (connected or connecting), or
	 * -errno (a connect failure for the attempt). */
	int (*connect)(void *user, const struct bm_l7_backend *b, int *fd_out);
	/* The downstream connection that carried user is gone (may be NULL). */
	void (*release)(void *user);
	/* A request finished (may be NULL). */
	void (*complete)(void *ctx, const struct bm_l7_record *r);
	/* Inbound: 0 allow, -EACCES deny (403), -EPERM invalid credentials
	 * (401); may be NULL (allow all). */
	int (*authorize)(void *ctx, const struct bm_l7_authz_req *rq, struct bm_l7_authz_res *res);
	/* Inbound connection that is not HTTP (relayed as L4): 0 = allowed
	 * (L4 policy), else refused; may be NULL (allowed). */
	int (*l4_allowed)(void *user);
	/* The outlier detector ejected backend b of cluster c (write the
	 * kernel's ejection map); may be NULL. */
	void (*ejected)(void *ctx, const struct bm_l7_cluster *c, const struct bm_l7_backend *b);
	void *ctx;
};

struct bm_l7_engine_opts {
	struct bm_outlier *outlier;  /* NULL: no outlier reporting */
	uint32_t sniff_timeout_ms;   /* inbound: no first byte in time -> L4 (0: 5000) */
};

struct bm_l7_engine *bm_l7_engine_new(struct bm_loop *l, const struct bm_l7_ops *ops,
				      const struct bm_l7_engine_opts *o);
/* Closes every connection (in-flight requests end with status 0). */
void bm_l7_engine_free(struct bm_l7_engine *e);
/* New downstream connections use cfg (a reference is taken; the previous
 * one is put; connections keep the config they started with). NULL ok. */
void bm_l7_engine_set_config(struct bm_l7_engine *e, struct bm_l7_config *cfg);
void bm_l7_engine_set_outlier(struct bm_l7_engine *e, struct bm_outlier *o);
/* Carry fd (non-blocking, connected; owned by the engine from now on, also
 * on failure). peer->user is released through ops.release when the
 * connection ends (also on failure). 0 or -errno. */
int bm_l7_engine_accept(struct bm_l7_engine *e, int fd, const struct bm_l7_peer *peer);

/* Per-engine counters (read by other threads with relaxed loads). */
struct bm_l7_stats {
	uint64_t requests, status_class[6];   /* [0] = no response, [1..5] = 1xx..5xx */
	uint64_t retries, timeouts, overflows, mirrors, mirrors_dropped, ejections;
	uint64_t l4_fallbacks;
	uint64_t upstream_cx, upstream_cx_reused;  /* connections made / requests on a pooled one */
	uint64_t downstream_cx;                     /* open now */
	uint64_t h2_downstream_cx, h2_upstream_cx;  /* HTTP/2 connections made */
	uint64_t upgrades;                          /* 101 relayed (WebSocket) */
};
const struct bm_l7_stats *bm_l7_engine_stats(const struct bm_l7_engine *e);

#endif
