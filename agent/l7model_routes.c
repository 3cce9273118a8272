/*
 * The routes of the L7 compiler (agent/l7model.c): one VirtualService
 * http rule into a struct bm_l7_route: matches, redirect, direct
 * response, rewrite, timeout, retries, fault, header operations,
 * weighted destinations and mirrors (docs/reference/istio-api.md §1).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "l7.h"
#include "l7model_int.h"
#include "model.h"

/* A Percent ({value: double}, 0..100) in parts per million. */
static uint32_t percent_ppm(const json_t *pct)
{
	double v = json_number_value(json_object_get(pct, "value"));

	if (!(v > 0))
		return 0;
	if (v >= 100)
		return 1000000;
	return (uint32_t)llround(v * 10000.0);
}

/* A deprecated integer percent (0..100) in parts per million. */
static uint32_t int_percent_ppm(const json_t *v)
{
	json_int_t p = json_integer_value(v);

	return p <= 0 ? 0 : p >= 100 ? 1000000 : (uint32_t)p * 10000;
}

/* Istio StringMatch {} or regex "*": presence. */
static int is_presence(const json_t *sm)
{
	const char *re = json_string_value(json_object_get(sm, "regex"));

	return json_object_size(sm) == 0 || (re && !strcmp(re, "*"));
}

static int compile_sm(struct ctx *x, const struct bm_m_res *r, const char *what,
		      const json_t *sm, int icase, struct bm_strmatch *out)
{
	char err[256] = "";
	int rc;

	memset(out, 0, sizeof(*out));
	if (!sm)
		return 0;
	rc = bm_strmatch_compile(sm, icase, out, err, sizeof(err));
	if (rc == -ENOMEM)
		return rc;
	if (rc) {
		l7m_warn(x, r, "%s: %s", what, *err ? err : "invalid string match");
		memset(out, 0, sizeof(*out));
		return -EINVAL;
	}
	return l7m_arena_track(x->a, out);
}

static int compile_kv(struct ctx *x, const struct bm_m_res *r, const char *what,
		      const json_t *map, int lower, int skip_pseudo,
		      struct bm_l7_kvmatch **out, size_t *n_out)
{
	const char *k;
	json_t *v;
	size_t n = 0;
	int err;

	*out = NULL;
	*n_out = 0;
	if (!json_object_size(map))
		return 0;
	*out = l7m_arena_array(x->a, json_object_size(map), sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_object_foreach((json_t *)map, k, v) {
		struct bm_l7_kvmatch *kv = &(*out)[n];
		char label[320];

		/* §1.3: uri, scheme, method, authority are not header matchers. */
		if (skip_pseudo && (!strcasecmp(k, "uri") || !strcasecmp(k, "scheme") ||
				    !strcasecmp(k, "method") || !strcasecmp(k, "authority")))
			continue;
		kv->name = lower ? l7m_arena_strdup_lower(x->a, k) : l7m_arena_strdup(x->a, k);
		if (!kv->name)
			return -ENOMEM;
		if (is_presence(v)) {
			kv->m.kind = BM_SM_PRESENT;
		} else {
			snprintf(label, sizeof(label), "%s[%s]", what, k);
			if ((err = compile_sm(x, r, label, v, 0, &kv->m)))
				return err;
		}
		n++;
	}
	*n_out = n;
	return 0;
}

static int compile_match(struct ctx *x, const struct bm_m_res *r, const json_t *mj,
			 struct bm_l7_match *m)
{
	const json_t *labels = json_object_get(mj, "sourceLabels");
	const char *k;
	json_t *v;
	int err;

	m->name = l7m_arena_strdup(x->a, l7m_jstr(mj, "name"));
	if (!m->name)
		return -ENOMEM;
	if ((err = compile_sm(x, r, "match.uri", json_object_get(mj, "uri"),
			      json_is_true(json_object_get(mj, "ignoreUriCase")), &m->uri)) ||
	    (err = compile_sm(x, r, "match.scheme", json_object_get(mj, "scheme"), 0, &m->scheme)) ||
	    (err = compile_sm(x, r, "match.method", json_object_get(mj, "method"), 0, &m->method)) ||
	    (err = compile_sm(x, r, "match.authority", json_object_get(mj, "authority"), 0,
			      &m->authority)) ||
	    (err = compile_kv(x, r, "match.headers", json_object_get(mj, "headers"), 1, 1,
			      &m->headers, &m->n_headers)) ||
	    (err = compile_kv(x, r, "match.withoutHeaders", json_object_get(mj, "withoutHeaders"),
			      1, 1, &m->without_headers, &m->n_without_headers)) ||
	    (err = compile_kv(x, r, "match.queryParams", json_object_get(mj, "queryParams"), 0, 0,
			      &m->query, &m->n_query)))
		return err;
	if (json_object_size(labels)) {
		size_t n = 0;

		m->source_labels = l7m_arena_array(x->a, json_object_size(labels),
						   sizeof(*m->source_labels));
		if (!m->source_labels)
			return -ENOMEM;
		json_object_foreach((json_t *)labels, k, v) {
			m->source_labels[n].key = l7m_arena_strdup(x->a, k);
			m->source_labels[n].value = l7m_arena_strdup(x->a, json_string_value(v) ?
									   json_string_value(v) : "");
			if (!m->source_labels[n].key || !m->source_labels[n].value)
				return -ENOMEM;
			n++;
		}
		m->n_source_labels = n;
	}
	if (json_string_value(json_object_get(mj, "sourceNamespace"))) {
		m->source_namespace = l7m_arena_strdup(x->a, l7m_jstr(mj, "sourceNamespace"));
		if (!m->source_namespace)
			return -ENOMEM;
	}
	m->port = (uint16_t)json_integer_value(json_object_get(mj, "port"));
	return 0;
}

static int compile_hdr_map(struct ctx *x, const json_t *map, struct bm_l7_hdr **out,
			   size_t *n_out)
{
	const char *k;
	json_t *v;
	size_t n = 0;

	if (!json_object_size(map))
		return 0;
	*out = l7m_arena_array(x->a, json_object_size(map), sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_object_foreach((json_t *)map, k, v) {
		(*out)[n].name = l7m_arena_strdup_lower(x->a, k);
		(*out)[n].value = l7m_arena_strdup(x->a, json_string_value(v) ? json_string_value(v) : "");
		if (!(*out)[n].name || !(*out)[n].value)
			return -ENOMEM;
		n++;
	}
	*n_out = n;
	return 0;
}

/* headers.request or headers.response: {set, add, remove}. */
static int compile_hdr_ops(struct ctx *x, const json_t *ops, struct bm_l7_hdr_ops *out)
{
	const json_t *rm = json_object_get(ops, "remove");
	size_t i;
	json_t *v;
	int err;

	memset(out, 0, sizeof(*out));
	if (!ops)
		return 0;
	if ((err = compile_hdr_map(x, json_object_get(ops, "set"), &out->set, &out->n_set)) ||
	    (err = compile_hdr_map(x, json_object_get(ops, "add"), &out->add, &out->n_add)))
		return err;
	if (json_array_size(rm)) {
		out->remove = l7m_arena_array(x->a, json_array_size(rm), sizeof(*out->remove));
		if (!out->remove)
			return -ENOMEM;
		json_array_foreach(rm, i, v) {
			out->remove[out->n_remove] = l7m_arena_strdup_lower(x->a, json_string_value(v) ?
										json_string_value(v) : "");
			if (!out->remove[out->n_remove])
				return -ENOMEM;
			out->n_remove++;
		}
	}
	return 0;
}

static int b64_val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+' || ch == '-')
		return 62;
	if (ch == '/' || ch == '_')
		return 63;
	return -1;
}

/* Protobuf JSON bytes: standard or URL-safe base64, padding optional. */
static int b64_decode(struct arena *a, const char *s, char **out, size_t *len)
{
	size_t n = strlen(s), o = 0;
	uint32_t acc = 0;
	int bits = 0;
	char *p = l7m_arena_alloc(a, n / 4 * 3 + 4);

	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int v;

		if (s[i] == '=')
			break;
		if (isspace((unsigned char)s[i]))
			continue;
		v = b64_val((unsigned char)s[i]);
		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			p[o++] = (char)(acc >> bits & 0xff);
		}
	}
	p[o] = 0;
	*out = p;
	*len = o;
	return 0;
}

static int compile_retry(struct ctx *x, const struct bm_m_res *r, const json_t *rj,
			 struct bm_l7_retry *rt)
{
	const char *on = l7m_jstr(rj, "retryOn");
	const json_t *iph = json_object_get(rj, "retryIgnorePreviousHosts");
	json_int_t attempts = json_integer_value(json_object_get(rj, "attempts"));
	char err[256] = "";

	/* §1.6: a retries block starts from the default policy. */
	bm_retry_default(rt);
	if (!rj)
		return 0;
	if (attempts <= 0) {
		rt->attempts = 0; /* Istio: attempts 0 disables retries */
		return 0;
	}
	rt->attempts = (uint32_t)attempts;
	rt->per_try_ms = l7m_duration_ms(x, r, rj, "perTryTimeout", 0);
	if (*on) {
		struct bm_l7_retry parsed = *rt;

		parsed.on = 0;
		parsed.n_codes = 0;
		memset(parsed.codes, 0, sizeof(parsed.codes));
		if (bm_retry_parse_on(on, &parsed, err, sizeof(err)))
			l7m_warn(x, r, "retries.retryOn \"%s\": %s; using the default", on, err);
		else
			*rt = parsed;
	}
	if (iph)
		rt->ignore_previous_hosts = json_is_true(iph);
	rt->backoff_base_ms = l7m_duration_ms(x, r, rj, "backoff", rt->backoff_base_ms);
	return 0;
}

/* abort.grpcStatus: the code's name (schema-checked), -1 if none. */
static int grpc_code(const char *name)
{
	static const char *const codes[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED" };

	for (int i = 0; name && i < (int)(sizeof(codes) / sizeof(codes[0])); i++)
		if (!strcmp(name, codes[i]))
			return i;
	return -1;
}

static void compile_fault(struct ctx *x, const struct bm_m_res *r, const json_t *fj,
			  struct bm_l7_route *rt)
{
	const json_t *delay = json_object_get(fj, "delay"), *abort_ = json_object_get(fj, "abort");

	if (delay) {
		rt->fault.delay_ms = l7m_duration_ms(x, r, delay, "fixedDelay", 0);
		/* §1.7: unset percentage falls back to the deprecated int
		 * percent, default 0: no request delayed. */
		if (json_object_get(delay, "percentage"))
			rt->fault.delay_ppm = percent_ppm(json_object_get(delay, "percentage"));
		else
			rt->fault.delay_ppm = int_percent_ppm(json_object_get(delay, "percent"));
		if (json_object_get(delay, "exponentialDelay"))
			l7m_warn(x, r, "fault.delay.exponentialDelay is not supported; ignored");
		if (!rt->fault.delay_ms)
			rt->fault.delay_ppm = 0;
	}
	if (abort_) {
		json_int_t st = json_integer_value(json_object_get(abort_, "httpStatus"));
		int g = grpc_code(json_string_value(json_object_get(abort_, "grpcStatus")));

		if (g >= 0) /* a gRPC reply: 200 with grpc-status (§1.8) */
			st = 200, rt->fault.abort_grpc = (uint8_t)(g + 1);
		if (st >= 200 && st <= 599) {
			rt->fault.abort_status = (uint16_t)st;
			if (json_object_get(abort_, "percentage"))
				rt->fault.abort_ppm = percent_ppm(json_object_get(abort_, "percentage"));
			else
				rt->fault.abort_ppm = int_percent_ppm(json_object_get(abort_, "percent"));
		} else {
			l7m_warn(x, r, "fault.abort: httpStatus 200..599 or grpcStatus needed; ignored");
		}
	}
}

static int add_mirror(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *se,
		      const json_t *port, const json_t *dest, uint32_t ppm,
		      struct bm_l7_route *rt)
{
	struct bm_l7_mirror *m = &rt->mirror[rt->n_mirror];
	size_t n_fix = x->n_fix;
	int err;

	if (!ppm)
		return 0; /* explicit 0 %: no mirroring */
	m->ppm = ppm;
	if ((err = l7m_resolve_cluster(x, r, se, port, dest, &m->c)))
		return err;
	/* §1.8: nothing is mirrored to a cluster that does not exist. */
	if (x->n_fix > n_fix)
		rt->n_mirror++;
	return 0;
}

static int compile_mirrors(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *se,
			   const json_t *port, const json_t *rule, struct bm_l7_route *rt)
{
	const json_t *mirror = json_object_get(rule, "mirror");
	const json_t *mirrors = json_object_get(rule, "mirrors");
	size_t i, n = (mirror ? 1 : 0) + json_array_size(mirrors);
	json_t *mj;
	int err;

	if (!n)
		return 0;
	rt->mirror = l7m_arena_array(x->a, n, sizeof(*rt->mirror));
	if (!rt->mirror)
		return -ENOMEM;
	if (mirror) {
		/* §1.8 (route.go MirrorPercent): mirrorPercentage, else the
		 * deprecated mirrorPercent; neither = 100 %. */
		const json_t *pct = json_object_get(rule, "mirrorPercentage");
		const json_t *old = json_object_get(rule, "mirrorPercent");
		uint32_t ppm = pct ? percent_ppm(pct) : old ? int_percent_ppm(old) : 1000000;

		if ((err = add_mirror(x, r, se, port, mirror, ppm, rt)))
			return err;
	}
	json_array_foreach(mirrors, i, mj) {
		const json_t *pct = json_object_get(mj, "percentage");

		if ((err = add_mirror(x, r, se, port, json_object_get(mj, "destination"),
				      pct ? percent_ppm(pct) : 1000000, rt)))
			return err;
	}
	return 0;
}

/* Does this http rule need per-request handling (anything beyond weighted
 * route destinations)? */
int l7m_rule_is_l7(const json_t *rule)
{
	static const char *const features[] = {
		"match", "rewrite", "redirect", "directResponse", "headers", "timeout",
		"retries", "fault", "mirror", "mirrors", "mirrorPercentage", "mirrorPercent",
		NULL };
	size_t i;
	json_t *d;

	for (const char *const *f = features; *f; f++)
		if (json_object_get(rule, *f))
			return 1;
	json_array_foreach(json_object_get(rule, "route"), i, d)
		if (json_object_get(d, "headers"))
			return 1;
	return 0;
}

static int compile_dests(struct ctx *x, const struct bm_m_res *r, const struct bm_m_res *se,
			 const json_t *port, const json_t *route, struct bm_l7_route *rt)
{
	size_t i, n = json_array_size(route), n_nonzero = 0;
	json_t *d;
	int err;

	if (!n)
		return 0;
	rt->dest = l7m_arena_array(x->a, n, sizeof(*rt->dest));
	if (!rt->dest)
		return -ENOMEM;
	json_array_foreach(route, i, d)
		if (json_integer_value(json_object_get(d, "weight")) > 0)
			n_nonzero++;
	json_array_foreach(route, i, d) {
		json_int_t w = json_integer_value(json_object_get(d, "weight"));
		struct bm_l7_dest *ds = &rt->dest[rt->n_dest];
		const json_t *h = json_object_get(d, "headers");

		/* §1.4: a lone destination gets everything whatever its
		 * weight; with several, weight 0 is dropped. */
		if (n == 1 || n_nonzero == 0)
			w = w > 0 ? w : 1;
		else if (w <= 0)
			continue;
		ds->weight = w > UINT32_MAX ? UINT32_MAX : (uint32_t)w;
		if ((err = compile_hdr_ops(x, json_object_get(h, "request"), &ds->req)) ||
		    (err = compile_hdr_ops(x, json_object_get(h, "response"), &ds->resp)) ||
		    (err = l7m_resolve_cluster(x, r, se, port, json_object_get(d, "destination"),
					       &ds->c)))
			return err;
		rt->total_weight += ds->weight;
		rt->n_dest++;
	}
	return 0;
}

static int compile_redirect(struct ctx *x, const json_t *rd, struct bm_l7_route *rt)
{
	json_int_t code = json_integer_value(json_object_get(rd, "redirectCode"));
	const char *derive = l7m_jstr(rd, "derivePort");

	rt->redirect.code = code ? (uint16_t)code : 301;
	if ((json_object_get(rd, "uri") && !(rt->redirect.uri = l7m_arena_strdup(x->a, l7m_jstr(rd, "uri")))) ||
	    (json_object_get(rd, "authority") &&
	     !(rt->redirect.authority = l7m_arena_strdup(x->a, l7m_jstr(rd, "authority")))) ||
	    (json_object_get(rd, "scheme") &&
	     !(rt->redirect.scheme = l7m_arena_strdup(x->a, l7m_jstr(rd, "scheme")))))
		return -ENOMEM;
	rt->redirect.port = (uint16_t)json_integer_value(json_object_get(rd, "port"));
	rt->redirect.derive_port = !strcmp(derive, "FROM_PROTOCOL_DEFAULT") ? 1 :
				   !strcmp(derive, "FROM_REQUEST_PORT") ? 2 : 0;
	return 0;
}

static int compile_direct(struct ctx *x, const struct bm_m_res *r, const json_t *dr,
			  struct bm_l7_route *rt)
{
	const json_t *body = json_object_get(dr, "body");
	const char *str = json_string_value(json_object_get(body, "string"));
	const char *bytes = json_string_value(json_object_get(body, "bytes"));
	int err;

	rt->direct.status = (uint16_t)json_integer_value(json_object_get(dr, "status"));
	if (str) {
		rt->direct.body_len = strlen(str);
		rt->direct.body = l7m_arena_strndup(x->a, str, rt->direct.body_len);
		if (!rt->direct.body)
			return -ENOMEM;
	} else if (bytes) {
		err = b64_decode(x->a, bytes, &rt->direct.body, &rt->direct.body_len);
		if (err == -ENOMEM)
			return err;
		if (err) {
			l7m_warn(x, r, "directResponse.body.bytes is not base64; empty body sent");
			rt->direct.body = NULL;
			rt->direct.body_len = 0;
		}
	}
	return 0;
}

/* One http rule into rt. -EINVAL: the rule cannot be compiled (logged) and
 * is left out; other errors are fatal. */
int l7m_compile_rule(struct ctx *x, const struct bm_m_res *vs, const struct bm_m_res *se,
		     const json_t *port, const json_t *rule, struct bm_l7_route *rt)
{
	const json_t *match = json_object_get(rule, "match");
	const json_t *rw = json_object_get(rule, "rewrite");
	const json_t *hdrs = json_object_get(rule, "headers");
	size_t i;
	json_t *mj;
	int err;

	memset(rt, 0, sizeof(*rt));
	rt->name = l7m_arena_strdup(x->a, l7m_jstr(rule, "name"));
	if (!rt->name)
		return -ENOMEM;
	if (json_array_size(match)) {
		rt->match = l7m_arena_array(x->a, json_array_size(match), sizeof(*rt->match));
		if (!rt->match)
			return -ENOMEM;
		json_array_foreach(match, i, mj) {
			if ((err = compile_match(x, vs, mj, &rt->match[i])))
				return err;
			rt->n_match++;
		}
	}
	if (json_object_get(rule, "redirect") &&
	    (err = compile_redirect(x, json_object_get(rule, "redirect"), rt)))
		return err;
	if (json_object_get(rule, "directResponse") &&
	    (err = compile_direct(x, vs, json_object_get(rule, "directResponse"), rt)))
		return err;
	if (json_string_value(json_object_get(rw, "uri")) &&
	    !(rt->rewrite_uri = l7m_arena_strdup(x->a, l7m_jstr(rw, "uri"))))
		return -ENOMEM;
	if (json_string_value(json_object_get(rw, "authority")) &&
	    !(rt->rewrite_authority = l7m_arena_strdup(x->a, l7m_jstr(rw, "authority"))))
		return -ENOMEM;
	if (json_object_get(rw, "uriRegexRewrite"))
		l7m_warn(x, vs, "rewrite.uriRegexRewrite is not supported; ignored");
	rt->timeout_ms = l7m_duration_ms(x, vs, rule, "timeout", 0);
	if ((err = compile_retry(x, vs, json_object_get(rule, "retries"), &rt->retry)))
		return err;
	compile_fault(x, vs, json_object_get(rule, "fault"), rt);
	if ((err = compile_hdr_ops(x, json_object_get(hdrs, "request"), &rt->req)) ||
	    (err = compile_hdr_ops(x, json_object_get(hdrs, "response"), &rt->resp)) ||
	    (err = compile_dests(x, vs, se, port, json_object_get(rule, "route"), rt)) ||
	    (err = compile_mirrors(x, vs, se, port, rule, rt)))
		return err;
	return 0;
}
