/* Tracing on the L7 path (reference §6 tracing, §9): trace context
 * propagation, the sampling decision, and Zipkin v2 spans.
 *
 * Per request, the HTTP engine (agent/l7proxy.c):
 *
 *   1. reads the incoming context (bm_trace_start): the single `b3` header,
 *      else the B3 multi headers (x-b3-traceid/spanid/parentspanid/sampled/
 *      flags), else W3C traceparent (Envoy's Zipkin tracer looks at B3
 *      first). Without one a trace starts (128-bit id). A decision that
 *      came with the request (x-b3-sampled, x-b3-flags, the b3 sampling
 *      field, traceparent's sampled flag) is kept; otherwise the local
 *      pod's randomSamplingPercentage decides. x-request-id plays no part
 *      in sampling (Istio's useRequestIdForTraceSampling, off here).
 *   2. makes this hop's span: a CLIENT span on the client's node (the
 *      outbound engine), a SERVER span on the server's node (the inbound
 *      engine), each a child of the span it received (parentId = the
 *      caller's span id): the two halves of one call are two spans, not
 *      B3's shared span, so every span id is reported once.
 *   3. forwards the context with this span as the parent
 *      (bm_trace_inject): B3 multi headers and traceparent, tracestate
 *      when it belongs to the same trace, and `b3` rewritten when the
 *      request carried one.
 *   4. when the request is over and it was sampled (and the pod does not
 *      set disableSpanReporting, and meshd has a collector), hands the
 *      span to the exporter through struct bm_l7_record.span; proxy_l7.c's
 *      completion hook calls bm_trace_report.
 *
 * Unsampled requests cost the header rewrite only: the span state lives in
 * the connection (one request at a time), nothing is allocated.
 *
 * Export: one thread (bm_trace_start_exporter) POSTs JSON arrays of spans
 * to the collector (meshd --zipkin-url http://HOST:PORT/api/v2/spans) with
 * libcurl, every second or at BM_TRACE_BATCH spans. Workers only format a
 * span and push it into a bounded queue (a mutex held for a pointer copy);
 * a full queue drops the span and counts it. */
#ifndef BM_TRACING_H
#define BM_TRACING_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "l7.h"

struct bm_l7_record;
struct bm_h1_hlist;

#define BM_TRACE_BATCH          100    /* spans per POST */
#define BM_TRACE_QUEUE_MAX      8192   /* spans waiting; beyond, dropped */
#define BM_TRACE_FLUSH_MS       1000   /* a partial batch waits at most this */
#define BM_TRACE_SPAN_MAX       4096   /* one span's JSON; long fields are cut */
#define BM_TRACE_DEFAULT_PPM    10000  /* 1 %: Istio's PILOT_TRACE_SAMPLING default */
#define BM_TRACE_PPM            1000000u

enum bm_trace_kind { BM_TRACE_CLIENT = 1, BM_TRACE_SERVER = 2 };
enum bm_trace_from { BM_TRACE_FROM_NONE, BM_TRACE_FROM_B3, BM_TRACE_FROM_B3_SINGLE,
		     BM_TRACE_FROM_W3C };

/* An incoming trace context. */
struct bm_trace_ctx {
	uint64_t trace_hi, trace_lo;  /* trace id; 0/0 = none */
	uint64_t span_id;             /* the caller's span; 0 = none */
	uint64_t parent_id;           /* B3 parent of the caller's span; 0 = none */
	int8_t sampled;               /* -1 no decision, 0 deny, 1 accept */
	uint8_t debug;                /* x-b3-flags: 1, b3 "d" (implies sampled) */
	uint8_t trace128;             /* the trace id was 32 hex digits */
	uint8_t from;                 /* enum bm_trace_from of the ids */
};

/* Header parsers: 0 and *out filled, or -EINVAL (out undefined). */
int bm_trace_parse_traceparent(const char *v, size_t len, struct bm_trace_ctx *out);
/* The single b3 header; "0", "1", "d" alone carry a decision only (ids 0). */
int bm_trace_parse_b3(const char *v, size_t len, struct bm_trace_ctx *out);
/* The multi headers (NULL = absent). Sampled/flags without ids: a decision
 * only. Ids present but malformed: -EINVAL. */
int bm_trace_parse_b3_multi(const struct bm_http_hdr *traceid, const struct bm_http_hdr *spanid,
			    const struct bm_http_hdr *parent, const struct bm_http_hdr *sampled,
			    const struct bm_http_hdr *flags, struct bm_trace_ctx *out);
/* The context of a request (the precedence above); from == NONE and
 * sampled == -1 when there is none. A malformed format is skipped, and a
 * decision-only header still gives its decision. */
void bm_trace_extract(const struct bm_http_hdr *hdr, size_t n, struct bm_trace_ctx *out);

/* The random numbers one request may use (the engine's generator). */
struct bm_trace_rand {
	uint64_t trace_hi, trace_lo;  /* a new trace's id */
	uint64_t span;                /* this hop's span id */
	uint32_t sample;              /* uniform 32-bit: the sampling draw */
};

/* Tracing settings of one workload (Telemetry API). */
struct bm_trace_settings {
	uint32_t sample_ppm;          /* randomSamplingPercentage, parts per million */
	uint8_t report;               /* 0: disableSpanReporting */
};

/* One request's span (also when it is not sampled: the ids are
 * propagated all the same). Kept by the engine per connection. */
struct bm_trace_span {
	uint8_t active;               /* a request is in progress */
	uint8_t kind;                 /* enum bm_trace_kind */
	uint8_t sampled, debug, trace128;
	uint8_t report;               /* sampled, reporting on, a collector: a span is sent */
	uint8_t had_b3_single;        /* rewrite `b3` when forwarding */
	uint8_t keep_tracestate;      /* the incoming traceparent is this trace's */
	uint64_t trace_hi, trace_lo;
	uint64_t id;                  /* this hop's span */
	uint64_t parent;              /* the caller's span; 0 = a root span */
	uint64_t start_us;            /* wall clock, µs since the epoch */
	uint64_t start_mono_us;
	uint64_t duration_us;         /* set when the request ends */
	const struct bm_l7_podtrace *pod;  /* the local pod's settings (valid while its config is) */
};

/* Start the span of a request with headers hdr[0..n) (bm_trace_extract),
 * for the local pod pt (NULL = unknown: the default sampling, reported). */
void bm_trace_start(struct bm_trace_span *s, const struct bm_http_hdr *hdr, size_t n,
		    enum bm_trace_kind kind, const struct bm_l7_podtrace *pt,
		    const struct bm_trace_rand *rnd);
/* Does a draw (uniform 32-bit) fall under ppm parts per million? */
int bm_trace_sample(uint32_t ppm, uint32_t draw);
/* Rewrite the trace headers of a request about to be forwarded: this span
 * becomes the parent. 0 or -ENOSPC. */
int bm_trace_inject(const struct bm_trace_span *s, struct bm_h1_hlist *hl);
/* The header values (NUL-terminated; buffers of at least 64 bytes). */
void bm_trace_traceparent(const struct bm_trace_span *s, char *out);
void bm_trace_b3_single(const struct bm_trace_span *s, char *out);

/* ---- configuration (main thread) ------------------------------------------ */

/* The default sampling (meshConfig.defaultConfig.tracing.sampling, meshd
 * --trace-sampling PCT), 0-100; call before workers start. */
void bm_trace_set_default_sampling(double pct);
uint32_t bm_trace_default_ppm(void);
/* The Telemetry tracing settings of a workload in namespace ns with these
 * labels: levels mesh (root namespace istio-system, selector-less) <
 * namespace (selector-less) < workload (selector matching labels), each
 * field inherited individually from the level above (two at one level: the
 * first by name); the rules of one tracing[] apply in order. Fields no
 * Telemetry sets: the default sampling, spans reported. */
void bm_trace_settings(const json_t *resources, const char *ns, const json_t *labels,
		       struct bm_trace_settings *out);
/* istio.canonical_service of a workload: labels service.istio.io/canonical-name,
 * app.kubernetes.io/name, app, else fallback. */
const char *bm_trace_canonical_service(const json_t *labels, const char *fallback);
/* The tracing entry of pod ns/name in c (sorted by ns, name), or NULL. */
const struct bm_l7_podtrace *bm_trace_pod_find(const struct bm_l7_config *c, const char *ns,
					       const char *name);

/* ---- spans and export ------------------------------------------------------ */

/* The Zipkin v2 JSON object of the span of record r (r->span != NULL)
 * reported by node. Returns the length (< size), 0 if size is too small. */
size_t bm_trace_span_format(const struct bm_l7_record *r, const char *node, char *buf,
			    size_t size);
/* The exporter: a thread that POSTs to url (http://HOST:PORT/api/v2/spans).
 * node names this meshd in span tags (node_id). 0 or -errno. */
int bm_trace_start_exporter(const char *url, const char *node);
/* Flush what is queued (bounded by the POST timeouts) and stop. */
void bm_trace_stop_exporter(void);
/* A collector is configured (spans are worth making). */
int bm_trace_exporting(void);
/* Queue the span of r (from a worker; never blocks on the network). */
void bm_trace_report(const struct bm_l7_record *r);

struct bm_trace_stats {
	uint64_t spans_reported;      /* handed to the exporter */
	uint64_t spans_exported;      /* accepted by the collector (2xx) */
	uint64_t spans_dropped;       /* queue full */
	uint64_t spans_failed;        /* the POST failed (collector down, not 2xx) */
	uint64_t posts, post_errors;
};
void bm_trace_get_stats(struct bm_trace_stats *st);

#endif
