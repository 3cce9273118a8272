/*
 * Tracing on the L7 path: header formats (W3C Trace Context, B3 multi and
 * single), the sampling decision, the Telemetry settings per workload, the
 * Zipkin v2 span, and the exporter thread (see tracing.h for the flow).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include "curlshim.h"
#include "fmt.h"
#include "http1.h"
#include "l7proxy.h"
#include "log.h"
#include "resutil.h"
#include "tracing.h"

#define ROOT_NS "istio-system"   /* meshConfig.rootNamespace default */

/* ------------------------------------------------------------ hex */

static int hexval(char c, int upper_ok)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (upper_ok && c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* n (<= 16) hex digits at s into *out; -EINVAL on a non-hex byte. */
static int hex64(const char *s, size_t n, int upper_ok, uint64_t *out)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		int h = hexval(s[i], upper_ok);

		if (h < 0)
			return -EINVAL;
		v = v << 4 | (uint64_t)h;
	}
	*out = v;
	return 0;
}

/* A B3 trace id: 16 or 32 hex digits, not all zero. */
static int b3_trace_id(const char *s, size_t n, struct bm_trace_ctx *c)
{
	if (n == 32) {
		if (hex64(s, 16, 1, &c->trace_hi) || hex64(s + 16, 16, 1, &c->trace_lo))
			return -EINVAL;
		c->trace128 = 1;
	} else if (n == 16) {
		c->trace_hi = 0;
		if (hex64(s, 16, 1, &c->trace_lo))
			return -EINVAL;
		c->trace128 = 0;
	} else {
		return -EINVAL;
	}
	return c->trace_hi | c->trace_lo ? 0 : -EINVAL;
}

/* A span id: 16 hex digits, not zero. */
static int span_id(const char *s, size_t n, int upper_ok, uint64_t *out)
{
	return n == 16 && !hex64(s, 16, upper_ok, out) && *out ? 0 : -EINVAL;
}

static void ctx_init(struct bm_trace_ctx *c)
{
	memset(c, 0, sizeof(*c));
	c->sampled = -1;
}

/* ------------------------------------------------------------ parsers */

int bm_trace_parse_traceparent(const char *v, size_t len, struct bm_trace_ctx *out)
{
	uint64_t ver, flags;

	ctx_init(out);
	/* version-traceid-parentid-flags: 2-32-16-2 lower-case hex (§9.2) */
	if (len < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-')
		return -EINVAL;
	if (hex64(v, 2, 0, &ver) || ver == 0xff)
		return -EINVAL;
	/* v00 is exactly 55; a later version may append "-..." fields. */
	if ((ver == 0 && len != 55) || (ver && len > 55 && v[55] != '-'))
		return -EINVAL;
	if (hex64(v + 3, 16, 0, &out->trace_hi) || hex64(v + 19, 16, 0, &out->trace_lo) ||
	    !(out->trace_hi | out->trace_lo))
		return -EINVAL;
	if (span_id(v + 36, 16, 0, &out->span_id) || hex64(v + 53, 2, 0, &flags))
		return -EINVAL;
	out->sampled = flags & 1;   /* mask: other bits are reserved */
	out->trace128 = 1;
	out->from = BM_TRACE_FROM_W3C;
	return 0;
}

static int b3_sampling(const char *s, size_t n, struct bm_trace_ctx *c)
{
	if (n != 1)
		return -EINVAL;
	if (s[0] == '1' || s[0] == '0')
		c->sampled = s[0] == '1';
	else if (s[0] == 'd')
		c->sampled = 1, c->debug = 1;
	else
		return -EINVAL;
	return 0;
}

int bm_trace_parse_b3(const char *v, size_t len, struct bm_trace_ctx *out)
{
	const char *end = v + len, *f[4];
	size_t fl[4], n = 0;

	ctx_init(out);
	/* b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]], or a
	 * decision alone ("0" deny, "1", "d"). */
	if (len == 1)
		return b3_sampling(v, 1, out);
	for (const char *p = v; n < 4;) {
		const char *dash = memchr(p, '-', (size_t)(end - p));

		f[n] = p;
		fl[n++] = (size_t)((dash ? dash : end) - p);
		if (!dash)
			break;
		p = dash + 1;
		if (n == 4)
			return -EINVAL;   /* a fifth field */
	}
	if (n < 2 || b3_trace_id(f[0], fl[0], out) || span_id(f[1], fl[1], 1, &out->span_id))
		return -EINVAL;
	if (n >= 3 && b3_sampling(f[2], fl[2], out))
		return -EINVAL;
	if (n == 4 && span_id(f[3], fl[3], 1, &out->parent_id))
		return -EINVAL;
	out->from = BM_TRACE_FROM_B3_SINGLE;
	return 0;
}

static int hv_is(const struct bm_http_hdr *h, const char *s)
{
	size_t n = strlen(s);

	return h->value_len == n && !strncasecmp(h->value, s, n);
}

int bm_trace_parse_b3_multi(const struct bm_http_hdr *traceid, const struct bm_http_hdr *spanid,
			    const struct bm_http_hdr *parent, const struct bm_http_hdr *sampled,
			    const struct bm_http_hdr *flags, struct bm_trace_ctx *out)
{
	ctx_init(out);
	/* Debug implies accept; a sampled value we cannot read is no decision
	 * (lenient readers take true/false too). */
	if (flags && hv_is(flags, "1"))
		out->debug = 1, out->sampled = 1;
	else if (sampled && (hv_is(sampled, "1") || hv_is(sampled, "true")))
		out->sampled = 1;
	else if (sampled && (hv_is(sampled, "0") || hv_is(sampled, "false")))
		out->sampled = 0;
	if (!traceid && !spanid)
		return out->sampled >= 0 ? 0 : -EINVAL;
	if (!traceid || !spanid || b3_trace_id(traceid->value, traceid->value_len, out) ||
	    span_id(spanid->value, spanid->value_len, 1, &out->span_id))
		return -EINVAL;
	if (parent && span_id(parent->value, parent->value_len, 1, &out->parent_id))
		return -EINVAL;
	out->from = BM_TRACE_FROM_B3;
	return 0;
}

void bm_trace_extract(const struct bm_http_hdr *hdr, size_t n, struct bm_trace_ctx *out)
{
	const struct bm_http_hdr *single = bm_h1_find(hdr, n, "b3");
	const struct bm_http_hdr *tp = bm_h1_find(hdr, n, "traceparent");
	struct bm_trace_ctx c;
	int8_t decision = -1;
	uint8_t debug = 0;

	ctx_init(out);
	/* The single header first (it takes precedence over the multi ones),
	 * then the multi headers, then traceparent. A decision-only header
	 * (b3: 0, x-b3-sampled alone) gives its decision to whatever trace
	 * comes next. */
	if (single && !bm_trace_parse_b3(single->value, single->value_len, &c)) {
		if (c.from) {
			*out = c;
			return;
		}
		decision = c.sampled;
		debug = c.debug;
	}
	if (!bm_trace_parse_b3_multi(bm_h1_find(hdr, n, "x-b3-traceid"),
				     bm_h1_find(hdr, n, "x-b3-spanid"),
				     bm_h1_find(hdr, n, "x-b3-parentspanid"),
				     bm_h1_find(hdr, n, "x-b3-sampled"), bm_h1_find(hdr, n, "x-b3-flags"),
				     &c)) {
		if (c.from) {
			if (decision >= 0) /* the single header's decision wins */
				c.sampled = decision, c.debug = debug;
			*out = c;
			return;
		}
		if (decision < 0)
			decision = c.sampled, debug = c.debug;
	}
	if (tp && !bm_trace_parse_traceparent(tp->value, tp->value_len, &c)) {
		if (decision >= 0)
			c.sampled = decision, c.debug = debug;
		*out = c;
		return;
	}
	out->sampled = decision;
	out->debug = debug;
}

/* ------------------------------------------------------------ the span */

static uint32_t default_ppm = BM_TRACE_DEFAULT_PPM;
static int exporting;

static uint64_t pct_ppm(double pct)
{
	if (!(pct > 0))
		return 0;
	if (pct >= 100)
		return BM_TRACE_PPM;
	return (uint64_t)llround(pct * 10000.0);
}

void bm_trace_set_default_sampling(double pct)
{
	default_ppm = (uint32_t)pct_ppm(pct);
}

uint32_t bm_trace_default_ppm(void)
{
	return default_ppm;
}

int bm_trace_sample(uint32_t ppm, uint32_t draw)
{
	if (!ppm)
		return 0;
	if (ppm >= BM_TRACE_PPM)
		return 1;
	/* draw scaled onto [0, 1000000) */
	return (uint32_t)(((uint64_t)draw * BM_TRACE_PPM) >> 32) < ppm;
}

static uint64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

void bm_trace_start(struct bm_trace_span *s, const struct bm_http_hdr *hdr, size_t n,
		    enum bm_trace_kind kind, const struct bm_l7_podtrace *pt,
		    const struct bm_trace_rand *rnd)
{
	struct bm_trace_ctx in;
	const struct bm_http_hdr *tp;

	bm_trace_extract(hdr, n, &in);
	memset(s, 0, sizeof(*s));
	s->active = 1;
	s->kind = (uint8_t)kind;
	s->pod = pt;
	if (in.from) {
		s->trace_hi = in.trace_hi;
		s->trace_lo = in.trace_lo;
		s->trace128 = in.trace128;
		s->parent = in.span_id;
	} else {
		s->trace_hi = rnd->trace_hi;
		s->trace_lo = rnd->trace_lo ? rnd->trace_lo : 1;
		s->trace128 = 1;
	}
	s->id = rnd->span ? rnd->span : 1;
	s->debug = in.debug;
	s->sampled = in.sampled >= 0 ? (uint8_t)in.sampled
				      : (uint8_t)bm_trace_sample(pt ? pt->sample_ppm : default_ppm,
								 rnd->sample);
	s->report = s->sampled && (!pt || pt->report) && exporting;
	s->had_b3_single = bm_h1_find(hdr, n, "b3") != NULL;
	/* tracestate goes with the traceparent it came with (§9.2) */
	tp = bm_h1_find(hdr, n, "traceparent");
	if (tp && in.from) {
		struct bm_trace_ctx w;

		s->keep_tracestate = !bm_trace_parse_traceparent(tp->value, tp->value_len, &w) &&
				     w.trace_hi == s->trace_hi && w.trace_lo == s->trace_lo;
	}
	if (s->report) {
		s->start_us = wall_us();
		s->start_mono_us = mono_us();
	}
}

/* The trace id in hex, NUL-terminated; returns its length (16 or 32). */
static size_t trace_id_hex(const struct bm_trace_span *s, int force128, char *out)
{
	size_t n = 0;

	if (s->trace128 || force128) {
		bm_hex(out, s->trace_hi, 16);
		n = 16;
	}
	bm_hex(out + n, s->trace_lo, 16);
	out[n + 16] = 0;
	return n + 16;
}

void bm_trace_traceparent(const struct bm_trace_span *s, char *out)
{
	/* a 64-bit B3 id is left-padded with zeros */
	memcpy(out, "00-", 3);
	trace_id_hex(s, 1, out + 3);
	out[35] = '-';
	bm_hex(out + 36, s->id, 16);
	memcpy(out + 52, s->sampled ? "-01" : "-00", 4);
}

void bm_trace_b3_single(const struct bm_trace_span *s, char *out)
{
	size_t n = trace_id_hex(s, 0, out);

	out[n++] = '-';
	bm_hex(out + n, s->id, 16);
	n += 16;
	out[n++] = '-';
	out[n++] = s->debug ? 'd' : s->sampled ? '1' : '0';
	if (s->parent) {
		out[n++] = '-';
		bm_hex(out + n, s->parent, 16);
		n += 16;
	}
	out[n] = 0;
}

int bm_trace_inject(const struct bm_trace_span *s, struct bm_h1_hlist *hl)
{
	static const char *const drop[] = { "traceparent", "x-b3-traceid", "x-b3-spanid",
					    "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3" };
	char v[96], tid[33];
	int err = 0;

	if (!s->active)
		return 0;
	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		bm_h1_hlist_remove(hl, drop[i]);
	if (!s->keep_tracestate)
		bm_h1_hlist_remove(hl, "tracestate");
	err = bm_h1_hlist_add(hl, "x-b3-traceid", tid, trace_id_hex(s, 0, tid));
	bm_hex(v, s->id, 16);
	if (!err)
		err = bm_h1_hlist_add(hl, "x-b3-spanid", v, 16);
	if (!err && s->parent) {
		bm_hex(v, s->parent, 16);
		err = bm_h1_hlist_add(hl, "x-b3-parentspanid", v, 16);
	}
	/* Debug is sent as flags alone (B3: it implies sampled). */
	if (!err && s->debug)
		err = bm_h1_hlist_add(hl, "x-b3-flags", "1", 1);
	else if (!err)
		err = bm_h1_hlist_add(hl, "x-b3-sampled", s->sampled ? "1" : "0", 1);
	if (!err) {
		bm_trace_traceparent(s, v);
		err = bm_h1_hlist_add(hl, "traceparent", v, strlen(v));
	}
	if (!err && s->had_b3_single) {
		bm_trace_b3_single(s, v);
		err = bm_h1_hlist_add(hl, "b3", v, strlen(v));
	}
	return err;
}

/* ------------------------------------------------------------ settings */

static const char *str_of(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

void bm_trace_settings(const json_t *resources, const char *ns, const json_t *labels,
		       struct bm_trace_settings *out)
{
	const json_t *best[3] = { NULL, NULL, NULL }, *r;
	size_t i;

	out->sample_ppm = default_ppm;
	out->report = 1;
	ns = ns ? ns : "";
	json_array_foreach(resources, i, r) {
		int level;

		if (strcmp(str_of(r, "kind"), "Telemetry") ||
		    !json_array_size(json_object_get(json_object_get(r, "spec"), "tracing")))
			continue;
		level = bm_res_level(r, ns, labels, ROOT_NS);
		if (level < 0)
			continue;
		/* Istio takes the oldest of two at one level; meshd has no
		 * creation times: the first by name. */
		if (best[level] && strcmp(str_of(json_object_get(r, "metadata"), "name"),
					  str_of(json_object_get(best[level], "metadata"), "name")) >= 0)
			continue;
		best[level] = r;
	}
	/* mesh, then namespace, then workload: each field a level sets
	 * overrides the one above (fields are inherited individually). */
	for (int l = 0; l < 3; l++) {
		const json_t *rule;

		if (!best[l])
			continue;
		json_array_foreach(json_object_get(json_object_get(best[l], "spec"), "tracing"), i,
				   rule) {
			const json_t *pct = json_object_get(rule, "randomSamplingPercentage");
			const json_t *off = json_object_get(rule, "disableSpanReporting");

			if (json_is_number(pct))
				out->sample_ppm = (uint32_t)pct_ppm(json_number_value(pct));
			if (json_is_boolean(off))
				out->report = !json_is_true(off);
		}
	}
}

const char *bm_trace_canonical_service(const json_t *labels, const char *fallback)
{
	static const char *const keys[] = { "service.istio.io/canonical-name",
					    "app.kubernetes.io/name", "app" };

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = json_string_value(json_object_get(labels, keys[i]));

		if (v && *v)
			return v;
	}
	return fallback ? fallback : "";
}

const struct bm_l7_podtrace *bm_trace_pod_find(const struct bm_l7_config *c, const char *ns,
					       const char *name)
{
	size_t lo = 0, hi = c && ns && name ? c->n_podtrace : 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = strcmp(ns, c->podtrace[mid].ns);

		if (!r)
			r = strcmp(name, c->podtrace[mid].name);
		if (!r)
			return &c->podtrace[mid];
		if (r > 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* ------------------------------------------------------------ Zipkin JSON */

struct sbuf {
	char *p;
	size_t len, cap;   /* cap keeps room for the closing "}" and NUL */
	int cut;
};

static void put(struct sbuf *b, const char *s, size_t n)
{
	if (n > b->cap - b->len) {
		n = b->cap - b->len;
		b->cut = 1;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void puts_(struct sbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* A JSON string of at most max bytes of s (escaped; bytes that are not
 * ASCII printable become \u00XX so the output is always valid JSON, and
 * lower-cased when lower). Always closes the quote. */
static void put_str(struct sbuf *b, const char *s, size_t max, int lower)
{
	size_t used = 0;

	if (b->cap - b->len < 2) {
		b->cut = 1;
		return;
	}
	b->cap -= 1;                /* the closing quote always fits */
	put(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[8];
		size_t n;

		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			n = 2;
		} else if (*p < 0x20 || *p >= 0x7f) {
			n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
		} else {
			esc[0] = lower && *p >= 'A' && *p <= 'Z' ? (char)(*p + 32) : (char)*p;
			n = 1;
		}
		if (used + n > max)
			break;              /* cut on purpose: still valid JSON */
		if (n > b->cap - b->len) {
			b->cut = 1;
			break;
		}
		put(b, esc, n);
		used += n;
	}
	b->cap += 1;
	put(b, "\"", 1);
}

static void put_kv(struct sbuf *b, int *first, const char *k, const char *v, size_t max)
{
	if (!*first)
		put(b, ",", 1);
	*first = 0;
	put_str(b, k, 64, 0);
	put(b, ":", 1);
	put_str(b, v, max, 0);
}

static void put_endpoint(struct sbuf *b, const char *key, const char *service, uint32_t ip,
			 uint16_t port)
{
	char tmp[64];
	int first = 1;

	puts_(b, ",\"");
	puts_(b, key);
	puts_(b, "\":{");
	if (service && *service) {
		puts_(b, "\"serviceName\":");
		put_str(b, service, 256, 1);
		first = 0;
	}
	if (ip) {
		inet_ntop(AF_INET, &ip, tmp, sizeof(tmp));
		puts_(b, first ? "\"ipv4\":\"" : ",\"ipv4\":\"");
		puts_(b, tmp);
		puts_(b, "\"");
		first = 0;
	}
	if (port) {
		snprintf(tmp, sizeof(tmp), "%s\"port\":%u", first ? "" : ",", port);
		puts_(b, tmp);
	}
	puts_(b, "}");
}

size_t bm_trace_span_format(const struct bm_l7_record *r, const char *node, char *buf,
			    size_t size)
{
	const struct bm_trace_span *s = r->span;
	const struct bm_l7_podtrace *pt = s ? s->pod : NULL;
	struct sbuf b = { buf, 0, size > 3 ? size - 3 : 0, 0 };
	char tmp[384], tid[33];
	int first = 1, server = s && s->kind == BM_TRACE_SERVER;

	if (!s || size < 512)
		return 0;
	trace_id_hex(s, 0, tid);
	snprintf(tmp, sizeof(tmp), "{\"traceId\":\"%s\",\"id\":\"%016" PRIx64 "\"", tid, s->id);
	puts_(&b, tmp);
	if (s->parent) {
		snprintf(tmp, sizeof(tmp), ",\"parentId\":\"%016" PRIx64 "\"", s->parent);
		puts_(&b, tmp);
	}
	/* Istio's operation name: HOST:PORT and the default route's path
	 * (slash, star); the server side names its inbound cluster. */
	if (server)
		snprintf(tmp, sizeof(tmp), "inbound|%u||", r->dst_port);
	else
		snprintf(tmp, sizeof(tmp), "%.255s:%u/*", *r->dst_service ? r->dst_service : r->authority,
			 r->dst_port);
	puts_(&b, ",\"name\":");
	put_str(&b, tmp, 300, 1);
	snprintf(tmp, sizeof(tmp),
		 ",\"kind\":\"%s\",\"timestamp\":%" PRIu64 ",\"duration\":%" PRIu64 "%s",
		 server ? "SERVER" : "CLIENT", s->start_us, s->duration_us ? s->duration_us : 1,
		 s->debug ? ",\"debug\":true" : "");
	puts_(&b, tmp);
	put_endpoint(&b, "localEndpoint", pt ? pt->service : "", pt ? pt->ip : 0,
		     server ? r->dst_port : 0);
	if (server)
		put_endpoint(&b, "remoteEndpoint", NULL, r->src_ip, 0);
	else
		put_endpoint(&b, "remoteEndpoint", r->dst_service, r->upstream_ip,
			     ntohs(r->upstream_port));
	puts_(&b, ",\"tags\":{");
	put_kv(&b, &first, "component", "proxy", 16);
	put_kv(&b, &first, "node_id", node ? node : "", 128);
	put_kv(&b, &first, "http.method", r->method, 32);
	{
		/* http.url: scheme, authority and path (cut to fit) */
		char url[1800];
		int n = snprintf(url, sizeof(url), "http://%.256s", r->authority);

		snprintf(url + n, sizeof(url) - (size_t)n, "%.1500s", r->path);
		put_kv(&b, &first, "http.url", url, 1536);
	}
	put_kv(&b, &first, "http.protocol", r->downstream_h2 ? "HTTP/2" : "HTTP/1.1", 16);
	snprintf(tmp, sizeof(tmp), "%u", r->status);
	put_kv(&b, &first, "http.status_code", tmp, 8);
	put_kv(&b, &first, "response_flags", r->flags && *r->flags ? r->flags : "-", 64);
	put_kv(&b, &first, "upstream_cluster", r->cluster, 320);
	if (r->upstream_ip) {
		char ip[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &r->upstream_ip, ip, sizeof(ip));
		snprintf(tmp, sizeof(tmp), "%s:%u", ip, ntohs(r->upstream_port));
		put_kv(&b, &first, "upstream_address", tmp, 32);
	}
	put_kv(&b, &first, "istio.canonical_service", pt ? pt->service : "", 64);
	put_kv(&b, &first, "istio.namespace", pt ? pt->ns : "", 64);
	put_kv(&b, &first, "request_id", r->request_id, 128);
	put_kv(&b, &first, "guid:x-request-id", r->request_id, 128);
	if (r->user_agent && *r->user_agent)
		put_kv(&b, &first, "user_agent", r->user_agent, 256);
	snprintf(tmp, sizeof(tmp), "%" PRIu64, r->req_body_bytes);
	put_kv(&b, &first, "request_size", tmp, 24);
	snprintf(tmp, sizeof(tmp), "%" PRIu64, r->resp_body_bytes);
	put_kv(&b, &first, "response_size", tmp, 24);
	/* Envoy: error=true on 5xx and on a reset (no response sent) */
	if (r->status >= 500 || !r->status)
		put_kv(&b, &first, "error", "true", 8);
	b.cap += 2;                 /* kept for these two */
	puts_(&b, "}}");
	buf[b.len] = 0;
	return b.cut ? 0 : b.len;   /* never a span cut in the middle of its JSON */
}

/* ------------------------------------------------------------ export */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t th;
	int running, stop;
	char **q;                 /* ring of formatted spans */
	size_t head, n;
	char url[1024];
	char node[128];
	struct bm_trace_stats st;
} ex = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

#define STAT_ADD(f, v) __atomic_add_fetch(&ex.st.f, (v), __ATOMIC_RELAXED)

int bm_trace_exporting(void)
{
	return exporting;
}

void bm_trace_report(const struct bm_l7_record *r)
{
	char line[BM_TRACE_SPAN_MAX];
	size_t n = bm_trace_span_format(r, ex.node, line, sizeof(line));
	char *copy;

	if (!n || !ex.running)
		return;
	STAT_ADD(spans_reported, 1);
	copy = malloc(n + 1);
	if (!copy) {
		STAT_ADD(spans_dropped, 1);
		return;
	}
	memcpy(copy, line, n + 1);
	pthread_mutex_lock(&ex.lock);
	if (ex.n == BM_TRACE_QUEUE_MAX) {
		pthread_mutex_unlock(&ex.lock);
		free(copy);
		STAT_ADD(spans_dropped, 1);
		return;
	}
	ex.q[(ex.head + ex.n++) % BM_TRACE_QUEUE_MAX] = copy;
	if (ex.n == BM_TRACE_BATCH)
		pthread_cond_signal(&ex.cond);
	pthread_mutex_unlock(&ex.lock);
}

static size_t discard_body(char *p, size_t size, size_t n, void *u)
{
	return size * n;
}

/* POST spans[0..n) as one JSON array; frees them. */
static void post_batch(CURL *h, char **spans, size_t n)
{
	size_t len = 2, off = 0;
	char *body;
	long code = 0;
	CURLcode rc;

	for (size_t i = 0; i < n; i++)
		len += strlen(spans[i]) + 1;
	body = malloc(len + 1);
	if (body) {
		body[off++] = '[';
		for (size_t i = 0; i < n; i++) {
			size_t l = strlen(spans[i]);

			if (i)
				body[off++] = ',';
			memcpy(body + off, spans[i], l);
			off += l;
		}
		body[off++] = ']';
		body[off] = 0;
	}
	for (size_t i = 0; i < n; i++)
		free(spans[i]);
	if (!body) {
		STAT_ADD(spans_failed, n);
		return;
	}
	bm_curl_setopt_ptr(h, CURLOPT_POSTFIELDS, body);
	bm_curl_setopt_long(h, CURLOPT_POSTFIELDSIZE, (long)off);
	rc = bm_curl_easy_perform(h);
	if (rc == CURLE_OK)
		bm_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &code);
	STAT_ADD(posts, 1);
	if (rc != CURLE_OK || code < 200 || code >= 300) {
		static uint64_t last_told;
		uint64_t now = (uint64_t)time(NULL);

		STAT_ADD(post_errors, 1);
		STAT_ADD(spans_failed, n);
		if (now - last_told >= 60) {   /* a down collector is said once a minute */
			last_told = now;
			if (rc != CURLE_OK)
				bm_log("tracing: POST %s: %s (%zu spans dropped)", ex.url,
				       bm_curl_easy_strerror(rc), n);
			else
				bm_log("tracing: POST %s: HTTP %ld (%zu spans dropped)", ex.url, code, n);
		}
	} else {
		STAT_ADD(spans_exported, n);
	}
	free(body);
}

static void *exporter_main(void *arg)
{
	CURL *h = bm_curl_easy_init();
	struct curl_slist *hdrs = bm_curl_slist_append(NULL, "Content-Type: application/json");
	char *batch[BM_TRACE_BATCH];

	if (h) {
		bm_curl_setopt_ptr(h, CURLOPT_URL, ex.url);
		bm_curl_setopt_ptr(h, CURLOPT_HTTPHEADER, hdrs);
		bm_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1L);
		bm_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
		bm_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, 3000L);
		bm_curl_setopt_write(h, CURLOPT_WRITEFUNCTION, discard_body);
		bm_curl_setopt_ptr(h, CURLOPT_PROXY, "");   /* never an http_proxy from the environment */
	}
	pthread_mutex_lock(&ex.lock);
	for (;;) {
		size_t n = 0;

		if (!ex.stop && ex.n < BM_TRACE_BATCH) {
			struct timespec until;

			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += BM_TRACE_FLUSH_MS / 1000;
			pthread_cond_timedwait(&ex.cond, &ex.lock, &until);
		}
		while (n < BM_TRACE_BATCH && ex.n) {
			batch[n++] = ex.q[ex.head];
			ex.head = (ex.head + 1) % BM_TRACE_QUEUE_MAX;
			ex.n--;
		}
		if (!n && ex.stop)
			break;
		pthread_mutex_unlock(&ex.lock);
		if (n && h) {
			post_batch(h, batch, n);
		} else {
			for (size_t i = 0; i < n; i++)
				free(batch[i]);
			STAT_ADD(spans_failed, n);
		}
		pthread_mutex_lock(&ex.lock);
	}
	pthread_mutex_unlock(&ex.lock);
	bm_curl_slist_free_all(hdrs);
	if (h)
		bm_curl_easy_cleanup(h);
	return arg;
}

int bm_trace_start_exporter(const char *url, const char *node)
{
	int err;

	if (ex.running)
		return -EALREADY;
	if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
		bm_log("tracing: collector URL %s: not http://HOST:PORT/api/v2/spans", url);
		return -EINVAL;
	}
	if (strlen(url) >= sizeof(ex.url))
		return -ENAMETOOLONG;
	err = bm_curl_load();
	if (err) {
		bm_log("tracing: cannot export spans to %s: %s", url, bm_curl_error());
		return err;
	}
	ex.q = calloc(BM_TRACE_QUEUE_MAX, sizeof(*ex.q));
	if (!ex.q)
		return -ENOMEM;
	snprintf(ex.url, sizeof(ex.url), "%s", url);
	snprintf(ex.node, sizeof(ex.node), "%s", node ? node : "");
	ex.stop = 0;
	ex.head = ex.n = 0;
	err = pthread_create(&ex.th, NULL, exporter_main, NULL);
	if (err) {
		free(ex.q);
		ex.q = NULL;
		return -err;
	}
	ex.running = 1;
	exporting = 1;
	return 0;
}

void bm_trace_stop_exporter(void)
{
	if (!ex.running)
		return;
	exporting = 0;
	pthread_mutex_lock(&ex.lock);
	ex.stop = 1;
	pthread_cond_signal(&ex.cond);
	pthread_mutex_unlock(&ex.lock);
	pthread_join(ex.th, NULL);
	ex.running = 0;
	free(ex.q);
	ex.q = NULL;
}

void bm_trace_get_stats(struct bm_trace_stats *st)
{
	st->spans_reported = __atomic_load_n(&ex.st.spans_reported, __ATOMIC_RELAXED);
	st->spans_exported = __atomic_load_n(&ex.st.spans_exported, __ATOMIC_RELAXED);
	st->spans_dropped = __atomic_load_n(&ex.st.spans_dropped, __ATOMIC_RELAXED);
	st->spans_failed = __atomic_load_n(&ex.st.spans_failed, __ATOMIC_RELAXED);
	st->posts = __atomic_load_n(&ex.st.posts, __ATOMIC_RELAXED);
	st->post_errors = __atomic_load_n(&ex.st.post_errors, __ATOMIC_RELAXED);
}
