/* meshctl stat [KIND/NAME]: golden signals per service or workload, like
 * `linkerd viz stat`, from the Istio metrics every meshd exports.
 *
 * Rates need two samples: every node's exposition is fetched (the admin
 * "metrics" call `meshctl metrics` uses), then again --window seconds later,
 * and each series' increase is divided by that node's own interval. A
 * counter that went backwards (meshd restarted) counts from zero, as
 * Prometheus' rate() does. Latency percentiles are histogram_quantile() over
 * the increase of istio_request_duration_milliseconds_bucket.
 *
 * Both ends may report one request or connection (reporter="source" from
 * the client's node, "destination" from the server's): a row uses the
 * server's view when it has one for that family, HTTP or TCP, like
 * Linkerd's inbound stats, else the client's, never the sum. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "admin.h"
#include "cli.h"
#include "stat.h"

/* ------------------------------------------------------------ parser */

struct sbuf {
	char *b;
	size_t n, cap;
};

static int sb_put(struct sbuf *s, const char *p, size_t n)
{
	if (s->n + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 256;
		char *nb;

		while (cap < s->n + n + 1)
			cap *= 2;
		nb = realloc(s->b, cap);
		if (!nb)
			return -ENOMEM;
		s->b = nb;
		s->cap = cap;
	}
	memcpy(s->b + s->n, p, n);
	s->n += n;
	return 0;
}

static int sb_putc(struct sbuf *s, char c)
{
	return sb_put(s, &c, 1);
}

static int name_start(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static int name_char(int c)
{
	return name_start(c) || (c >= '0' && c <= '9');
}

static const char *skip_blank(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

/* Offsets into the line's string buffer, turned into pointers at the end. */
struct loff {
	size_t name, value;
};

static int cmp_label(const void *x, const void *y)
{
	return strcmp(((const struct stat_label *)x)->name, ((const struct stat_label *)y)->name);
}

/* Label values as the exposition writes them, so the key is unambiguous. */
static size_t escaped_len(const char *v)
{
	size_t n = 0;

	for (; *v; v++)
		n += (*v == '\\' || *v == '"' || *v == '\n') ? 2 : 1;
	return n;
}

static char *put_escaped(char *w, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"' || *v == '\n') {
			*w++ = '\\';
			*w++ = *v == '\n' ? 'n' : *v;
		} else {
			*w++ = *v;
		}
	}
	return w;
}

/* The sample in sb (name, then label name/value pairs at offs), as one
 * allocation with its canonical key: name{a="x",b="y"} with labels sorted. */
static int add_sample(struct stat_expo *e, const struct sbuf *sb, const struct loff *offs,
		      size_t nl, double value)
{
	struct stat_sample *s;
	size_t keylen;
	char *w;

	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 256;
		struct stat_sample *ns = realloc(e->s, cap * sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		e->s = ns;
		e->cap = cap;
	}
	s = &e->s[e->n];
	memset(s, 0, sizeof(*s));
	s->l = calloc(nl ? nl : 1, sizeof(*s->l));
	if (!s->l)
		return -ENOMEM;
	for (size_t i = 0; i < nl; i++)
		s->l[i] = (struct stat_label){ sb->b + offs[i].name, sb->b + offs[i].value };
	qsort(s->l, nl, sizeof(*s->l), cmp_label);
	keylen = strlen(sb->b) + 2;
	for (size_t i = 0; i < nl; i++)
		keylen += strlen(s->l[i].name) + 4 + escaped_len(s->l[i].value);
	s->buf = malloc(sb->n + keylen + 1);
	if (!s->buf) {
		free(s->l);
		return -ENOMEM;
	}
	memcpy(s->buf, sb->b, sb->n);
	for (size_t i = 0; i < nl; i++) {
		s->l[i].name = s->buf + (s->l[i].name - sb->b);
		s->l[i].value = s->buf + (s->l[i].value - sb->b);
	}
	s->name = s->buf;
	s->nl = nl;
	s->value = value;
	w = s->buf + sb->n;
	s->key = w;
	w = stpcpy(w, s->name);
	*w++ = '{';
	for (size_t i = 0; i < nl; i++) {
		w += sprintf(w, "%s%s=\"", i ? "," : "", s->l[i].name);
		w = put_escaped(w, s->l[i].value);
		*w++ = '"';
	}
	*w++ = '}';
	*w = 0;
	e->n++;
	return 0;
}

/* One line; *why says what is wrong with it (-EINVAL). */
static int parse_line(const char *p, const char *end, struct stat_expo *e, struct sbuf *sb,
		      struct loff **offs, size_t *offcap, const char **why)
{
	char num[64], *nend;
	const char *t;
	size_t nl = 0;
	double v;

	sb->n = 0;
	p = skip_blank(p, end);
	if (p == end || *p == '#')
		return 0;
	if (!name_start((unsigned char)*p)) {
		*why = "metric name expected";
		return -EINVAL;
	}
	for (t = p; p < end && name_char((unsigned char)*p); p++)
		;
	if (sb_put(sb, t, (size_t)(p - t)) || sb_putc(sb, 0))
		return -ENOMEM;
	p = skip_blank(p, end);
	if (p < end && *p == '{') {
		for (p++;;) {
			p = skip_blank(p, end);
			if (p < end && *p == '}') {
				p++;
				break;
			}
			if (p == end || !name_start((unsigned char)*p) || *p == ':') {
				*why = "label name expected";
				return -EINVAL;
			}
			if (nl == *offcap) {
				size_t cap = *offcap ? *offcap * 2 : 32;
				struct loff *no = realloc(*offs, cap * sizeof(*no));

				if (!no)
					return -ENOMEM;
				*offs = no;
				*offcap = cap;
			}
			(*offs)[nl].name = sb->n;
			for (t = p; p < end && name_char((unsigned char)*p) && *p != ':'; p++)
				;
			if (sb_put(sb, t, (size_t)(p - t)) || sb_putc(sb, 0))
				return -ENOMEM;
			p = skip_blank(p, end);
			if (p == end || *p != '=') {
				*why = "'=' expected after the label name";
				return -EINVAL;
			}
			p = skip_blank(p + 1, end);
			if (p == end || *p != '"') {
				*why = "'\"' expected: label values are quoted";
				return -EINVAL;
			}
			(*offs)[nl++].value = sb->n;
			for (p++; p < end && *p != '"'; p++) {
				char c = *p;

				if (c == '\\') {
					if (++p == end)
						break;
					/* The format's escapes are \\, \" and \n; anything
					 * else is kept as written. */
					if (*p == 'n')
						c = '\n';
					else if (*p == '\\' || *p == '"')
						c = *p;
					else if (sb_putc(sb, '\\'))
						return -ENOMEM;
					else
						c = *p;
				}
				if (sb_putc(sb, c))
					return -ENOMEM;
			}
			if (p >= end) {
				*why = "label value not terminated";
				return -EINVAL;
			}
			if (sb_putc(sb, 0))
				return -ENOMEM;
			p = skip_blank(p + 1, end);
			if (p < end && *p == ',')
				p++;
			else if (p == end || *p != '}') {
				*why = "',' or '}' expected after a label";
				return -EINVAL;
			}
		}
	}
	p = skip_blank(p, end);
	for (t = p; p < end && *p != ' ' && *p != '\t'; p++)
		;
	if (p == t || (size_t)(p - t) >= sizeof(num)) {
		*why = "value expected";
		return -EINVAL;
	}
	memcpy(num, t, (size_t)(p - t));
	num[p - t] = 0;
	errno = 0;
	v = strtod(num, &nend);
	if (*nend || (errno && errno != ERANGE)) {
		*why = "value is not a number";
		return -EINVAL;
	}
	/* An optional timestamp (ms), ignored: the interval is our own. */
	p = skip_blank(p, end);
	if (p < end && *p == '-')
		p++;
	for (t = p; p < end && isdigit((unsigned char)*p); p++)
		;
	p = skip_blank(p, end);
	if (p != end) {
		*why = "unexpected text after the value";
		return -EINVAL;
	}
	return add_sample(e, sb, *offs, nl, v);
}

int stat_parse(const char *text, struct stat_expo *e, char *err, size_t errlen)
{
	struct sbuf sb = {};
	struct loff *offs = NULL;
	size_t offcap = 0, line = 1;
	int rc = 0;

	while (*text) {
		const char *eol = strchr(text, '\n'), *why = NULL;

		if (!eol)
			eol = text + strlen(text);
		rc = parse_line(text, eol, e, &sb, &offs, &offcap, &why);
		if (rc) {
			if (err && errlen)
				snprintf(err, errlen, "line %zu: %s", line,
					 why ? why : strerror(-rc));
			break;
		}
		text = *eol ? eol + 1 : eol;
		line++;
	}
	free(sb.b);
	free(offs);
	return rc;
}

void stat_expo_free(struct stat_expo *e)
{
	for (size_t i = 0; i < e->n; i++) {
		free(e->s[i].l);
		free(e->s[i].buf);
	}
	free(e->s);
	memset(e, 0, sizeof(*e));
}

const char *stat_label(const struct stat_sample *s, const char *name)
{
	for (size_t i = 0; i < s->nl; i++)
		if (!strcmp(s->l[i].name, name))
			return s->l[i].value;
	return NULL;
}

/* ------------------------------------------------------------ arithmetic */

static int cmp_bucket(const void *x, const void *y)
{
	double a = ((const struct stat_bucket *)x)->le, b = ((const struct stat_bucket *)y)->le;

	return a < b ? -1 : a > b;
}

double stat_histogram_quantile(double q, const struct stat_bucket *in, size_t n)
{
	struct stat_bucket *b;
	double obs, rank, start, count, r;
	size_t m = 0, i;

	if (isnan(q))
		return NAN;
	if (q < 0)
		return -INFINITY;
	if (q > 1)
		return INFINITY;
	if (!n || !(b = malloc(n * sizeof(*b))))
		return NAN;
	memcpy(b, in, n * sizeof(*b));
	qsort(b, n, sizeof(*b), cmp_bucket);
	r = NAN;
	if (!isinf(b[n - 1].le) || b[n - 1].le < 0)
		goto out;
	/* Buckets of one bound (several series summed) are one bucket. */
	for (i = 0; i < n; i++) {
		if (m && b[m - 1].le == b[i].le)
			b[m - 1].count += b[i].count;
		else
			b[m++] = b[i];
	}
	/* Cumulative counts never decrease; two scrapes taken while a bucket
	 * moved can make them, and Prometheus takes the maximum so far. */
	for (i = 1; i < m; i++)
		if (b[i].count < b[i - 1].count)
			b[i].count = b[i - 1].count;
	if (m < 2 || !(b[m - 1].count > 0))
		goto out;
	obs = b[m - 1].count;
	rank = q * obs;
	for (i = 0; i < m - 1 && b[i].count < rank; i++)
		;
	if (i == m - 1) {
		r = b[m - 2].le;    /* in +Inf: the highest finite bound */
	} else if (i == 0 && b[0].le <= 0) {
		r = b[0].le;
	} else {
		start = i ? b[i - 1].le : 0;
		count = b[i].count - (i ? b[i - 1].count : 0);
		rank -= i ? b[i - 1].count : 0;
		r = start + (b[i].le - start) * (rank / count);
	}
out:
	free(b);
	return r;
}

double stat_counter_delta(double before, double after)
{
	if (isnan(before))
		before = 0;
	return after < before ? after : after - before;
}

/* ------------------------------------------------------------ rows */

enum family { F_REQUESTS, F_DURATION, F_OPENED, F_CLOSED, F_SENT, F_RECEIVED, F_OTHER };

static enum family family_of(const char *name)
{
	static const char *const names[] = {
		[F_REQUESTS] = "istio_requests_total",
		[F_DURATION] = "istio_request_duration_milliseconds_bucket",
		[F_OPENED] = "istio_tcp_connections_opened_total",
		[F_CLOSED] = "istio_tcp_connections_closed_total",
		[F_SENT] = "istio_tcp_sent_bytes_total",
		[F_RECEIVED] = "istio_tcp_received_bytes_total",
	};

	if (strncmp(name, "istio_", 6))
		return F_OTHER;
	for (int f = 0; f < F_OTHER; f++)
		if (!strcmp(name, names[f]))
			return (enum family)f;
	return F_OTHER;
}

/* One reporter's view of a group, in per-second rates. */
struct view {
	int http, tcp;                 /* some series of the family */
	double req, ok, count;         /* requests/s, non-5xx/s, requests */
	struct stat_bucket *b;         /* duration buckets, increase/s */
	size_t nb;
	double opened, closed;         /* absolute, second scrape */
	double in, out;                /* bytes/s */
};

struct group {
	char *ns, *name;
	struct view v[2];              /* [0] source, [1] destination */
};

struct groups {
	struct group *g;
	size_t n, cap, last;
};

static struct group *group_get(struct groups *gs, const char *ns, const char *name)
{
	struct group *g;

	/* A family's series come in label order: the last group is the likely one. */
	if (gs->n && !strcmp(gs->g[gs->last].ns, ns) && !strcmp(gs->g[gs->last].name, name))
		return &gs->g[gs->last];
	for (size_t i = 0; i < gs->n; i++)
		if (!strcmp(gs->g[i].ns, ns) && !strcmp(gs->g[i].name, name))
			return &gs->g[gs->last = i];
	if (gs->n == gs->cap) {
		size_t cap = gs->cap ? gs->cap * 2 : 16;
		struct group *ng = realloc(gs->g, cap * sizeof(*ng));

		if (!ng)
			return NULL;
		gs->g = ng;
		gs->cap = cap;
	}
	g = &gs->g[gs->n];
	memset(g, 0, sizeof(*g));
	g->ns = strdup(ns);
	g->name = strdup(name);
	if (!g->ns || !g->name) {
		free(g->ns);
		free(g->name);
		return NULL;
	}
	gs->last = gs->n;
	return &gs->g[gs->n++];
}

static int add_bucket(struct view *v, double le, double rate)
{
	struct stat_bucket *nb;

	for (size_t i = 0; i < v->nb; i++) {
		if (v->b[i].le == le) {
			v->b[i].count += rate;
			return 0;
		}
	}
	nb = realloc(v->b, (v->nb + 1) * sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	v->b = nb;
	v->b[v->nb++] = (struct stat_bucket){ le, rate };
	return 0;
}

static const char *label_or_unknown(const struct stat_sample *s, const char *name)
{
	const char *v = stat_label(s, name);

	return v && *v ? v : "unknown";
}

static int cmp_key(const void *x, const void *y)
{
	return strcmp((*(const struct stat_sample *const *)x)->key,
		      (*(const struct stat_sample *const *)y)->key);
}

/* The first scrape, sorted by series, to find each series' earlier value. */
static const struct stat_sample **index_expo(const struct stat_expo *e)
{
	const struct stat_sample **ix = calloc(e && e->n ? e->n : 1, sizeof(*ix));

	if (!ix || !e)
		return ix;
	for (size_t i = 0; i < e->n; i++)
		ix[i] = &e->s[i];
	qsort(ix, e->n, sizeof(*ix), cmp_key);
	return ix;
}

static double earlier(const struct stat_sample **ix, size_t n, const struct stat_sample *s)
{
	const struct stat_sample *const *hit = n ? bsearch(&s, ix, n, sizeof(*ix), cmp_key) : NULL;

	/* A series born between the scrapes started from zero. */
	return hit ? (*hit)->value : 0;
}

static int add_sample_to(struct groups *gs, const struct stat_filter *f,
			 const struct stat_sample *s, enum family fam, double before, double seconds)
{
	const char *rep = stat_label(s, "reporter"), *ns, *name, *code, *le;
	struct group *g;
	struct view *v;
	double d, rate;
	int dst;

	if (!rep || (strcmp(rep, "source") && strcmp(rep, "destination")))
		return 0;   /* waypoint or unlabelled: not a view we combine */
	dst = !strcmp(rep, "destination");
	if (f->kind == STAT_SERVICE) {
		ns = label_or_unknown(s, "destination_service_namespace");
		name = label_or_unknown(s, "destination_service");
		/* The server's side does not know which service the client
		 * addressed: its series would be a nameless second copy. */
		if (dst && !strcmp(name, "unknown"))
			return 0;
	} else {
		ns = label_or_unknown(s, "destination_workload_namespace");
		name = label_or_unknown(s, "destination_workload");
	}
	if (f->ns && strcmp(f->ns, ns))
		return 0;
	if (f->name && strcmp(f->name, name)) {
		const char *shortname = stat_label(s, "destination_service_name");

		if (f->kind != STAT_SERVICE || !shortname || strcmp(f->name, shortname))
			return 0;
	}
	if (isnan(s->value))
		return 0;
	g = group_get(gs, ns, name);
	if (!g)
		return -ENOMEM;
	v = &g->v[dst];
	d = stat_counter_delta(before, s->value);
	rate = seconds > 0 ? d / seconds : 0;
	switch (fam) {
	case F_REQUESTS:
		code = stat_label(s, "response_code");
		v->http = 1;
		v->req += rate;
		v->count += d;
		/* Istio's dashboards' success rate: response_code !~ "5.*"
		 * (0, the client went away, and 4xx are not server failures). */
		if (!code || code[0] != '5')
			v->ok += rate;
		return 0;
	case F_DURATION:
		v->http = 1;
		le = stat_label(s, "le");
		return le ? add_bucket(v, strtod(le, NULL), rate) : 0;
	case F_OPENED: v->tcp = 1; v->opened += s->value; return 0;
	case F_CLOSED: v->tcp = 1; v->closed += s->value; return 0;
	case F_SENT: v->tcp = 1; v->out += rate; return 0;
	case F_RECEIVED: v->tcp = 1; v->in += rate; return 0;
	default: return 0;
	}
}

static int cmp_row(const void *x, const void *y)
{
	const struct stat_row *a = x, *b = y;
	int c = strcmp(a->ns, b->ns);

	return c ? c : strcmp(a->name, b->name);
}

static void row_of(const struct group *g, struct stat_row *r)
{
	const struct view *h = g->v[1].http ? &g->v[1] : g->v[0].http ? &g->v[0] : NULL;
	const struct view *t = g->v[1].tcp ? &g->v[1] : g->v[0].tcp ? &g->v[0] : NULL;

	r->http_from = h ? (h == &g->v[1] ? STAT_DESTINATION : STAT_SOURCE) : STAT_NONE;
	r->tcp_from = t ? (t == &g->v[1] ? STAT_DESTINATION : STAT_SOURCE) : STAT_NONE;
	r->requests = h ? h->count : 0;
	r->rps = h ? h->req : NAN;
	r->success = h && h->req > 0 ? h->ok / h->req : NAN;
	r->p50 = h ? stat_histogram_quantile(0.50, h->b, h->nb) : NAN;
	r->p95 = h ? stat_histogram_quantile(0.95, h->b, h->nb) : NAN;
	r->p99 = h ? stat_histogram_quantile(0.99, h->b, h->nb) : NAN;
	r->tcp_open = t ? (t->opened > t->closed ? t->opened - t->closed : 0) : NAN;
	r->bytes_in = t ? t->in : NAN;
	r->bytes_out = t ? t->out : NAN;
}

int stat_compute(const struct stat_filter *f, const struct stat_pair *p, size_t np,
		 struct stat_row **rows, size_t *nrows)
{
	struct groups gs = {};
	int err = 0;

	*rows = NULL;
	*nrows = 0;
	for (size_t k = 0; k < np && !err; k++) {
		const struct stat_expo *b = p[k].before, *a = p[k].after;
		const struct stat_sample **ix = index_expo(b);

		if (!ix) {
			err = -ENOMEM;
			break;
		}
		for (size_t i = 0; a && i < a->n && !err; i++) {
			enum family fam = family_of(a->s[i].name);

			if (fam != F_OTHER)
				err = add_sample_to(&gs, f, &a->s[i], fam,
						    earlier(ix, b ? b->n : 0, &a->s[i]), p[k].seconds);
		}
		free(ix);
	}
	if (!err && gs.n && !(*rows = calloc(gs.n, sizeof(**rows))))
		err = -ENOMEM;
	for (size_t i = 0; i < gs.n; i++) {
		if (!err) {
			(*rows)[i].ns = gs.g[i].ns;
			(*rows)[i].name = gs.g[i].name;
			row_of(&gs.g[i], &(*rows)[i]);
		} else {
			free(gs.g[i].ns);
			free(gs.g[i].name);
		}
		free(gs.g[i].v[0].b);
		free(gs.g[i].v[1].b);
	}
	if (!err) {
		*nrows = gs.n;
		if (gs.n)
			qsort(*rows, gs.n, sizeof(**rows), cmp_row);
	}
	free(gs.g);
	return err;
}

void stat_rows_free(struct stat_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rows[i].ns);
		free(rows[i].name);
	}
	free(rows);
}

/* ------------------------------------------------------------ output */

static const char *reporter_name(enum stat_reporter r)
{
	return r == STAT_DESTINATION ? "destination" : r == STAT_SOURCE ? "source" : NULL;
}

static const char *kind_name(enum stat_kind k)
{
	return k == STAT_SERVICE ? "service" : "workload";
}

static json_t *num_or_null(double v)
{
	return isnan(v) || isinf(v) ? json_null() : json_real(v);
}

static json_t *row_json(const struct stat_row *r)
{
	const char *hf = reporter_name(r->http_from), *tf = reporter_name(r->tcp_from);

	return json_pack("{s:s,s:s,s:f,s:o,s:o,s:{s:o,s:o,s:o},s:{s:o,s:o,s:o},s:{s:s?,s:s?}}",
			 "namespace", r->ns, "name", r->name, "requests", r->requests,
			 "requests_per_second", num_or_null(r->rps),
			 "success_rate", num_or_null(r->success),
			 "latency_ms", "p50", num_or_null(r->p50), "p95", num_or_null(r->p95),
			 "p99", num_or_null(r->p99),
			 "tcp", "open_connections", num_or_null(r->tcp_open),
			 "bytes_in_per_second", num_or_null(r->bytes_in),
			 "bytes_out_per_second", num_or_null(r->bytes_out),
			 "reporter", "http", hf, "tcp", tf);
}

static void fmt_latency(double v, char *buf, size_t len)
{
	if (isnan(v))
		snprintf(buf, len, "-");
	else if (v < 10)
		snprintf(buf, len, "%.3gms", v);
	else
		snprintf(buf, len, "%.0fms", v);
}

static void fmt_bytes(double v, char *buf, size_t len)
{
	static const char *const unit[] = { "B/s", "kB/s", "MB/s", "GB/s" };
	int u = 0;

	if (isnan(v)) {
		snprintf(buf, len, "-");
		return;
	}
	while (v >= 1000 && u < 3) {
		v /= 1000;
		u++;
	}
	snprintf(buf, len, u ? "%.1f%s" : "%.0f%s", v, unit[u]);
}

#define NCOLS 12
#define CELL  272   /* a DNS name is at most 253 bytes */

/* kubectl's table: left-aligned columns three spaces apart, widths from
 * the widest cell. */
static void print_table(FILE *out, const struct stat_opts *o, const struct stat_row *rows,
			size_t n)
{
	static const char *const titles[NCOLS] = { "NAMESPACE", "NAME", "SUCCESS", "RPS",
		"LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN", "BYTES_IN/S",
		"BYTES_OUT/S", "HTTP_REPORTER", "TCP_REPORTER" };
	char (*cell)[NCOLS][CELL] = calloc(n + 1, sizeof(*cell));
	size_t width[NCOLS] = { 0 };
	int first = o->f.ns ? 1 : 0, last = o->wide ? NCOLS : NCOLS - 2;

	if (!cell)
		return;
	for (int c = 0; c < NCOLS; c++)
		snprintf(cell[0][c], sizeof(cell[0][c]), "%s", titles[c]);
	for (size_t i = 0; i < n; i++) {
		const struct stat_row *r = &rows[i];
		char (*w)[CELL] = cell[i + 1];
		const char *hf = reporter_name(r->http_from), *tf = reporter_name(r->tcp_from);

		snprintf(w[0], CELL, "%s", r->ns);
		snprintf(w[1], CELL, "%s", r->name);
		if (isnan(r->success))
			snprintf(w[2], CELL, "-");
		else
			snprintf(w[2], CELL, "%.2f%%", 100 * r->success);
		if (isnan(r->rps))
			snprintf(w[3], CELL, "-");
		else
			snprintf(w[3], CELL, "%.1frps", r->rps);
		fmt_latency(r->p50, w[4], 128);
		fmt_latency(r->p95, w[5], 128);
		fmt_latency(r->p99, w[6], 128);
		if (isnan(r->tcp_open))
			snprintf(w[7], CELL, "-");
		else
			snprintf(w[7], CELL, "%.0f", r->tcp_open);
		fmt_bytes(r->bytes_in, w[8], 128);
		fmt_bytes(r->bytes_out, w[9], 128);
		snprintf(w[10], CELL, "%s", hf ? hf : "-");
		snprintf(w[11], CELL, "%s", tf ? tf : "-");
	}
	for (size_t i = 0; i <= n; i++)
		for (int c = first; c < last; c++)
			if (strlen(cell[i][c]) > width[c])
				width[c] = strlen(cell[i][c]);
	for (size_t i = 0; i <= n; i++)
		for (int c = first; c < last; c++)
			fprintf(out, c + 1 < last ? "%-*s   " : "%-*s\n",
				c + 1 < last ? (int)width[c] : 0, cell[i][c]);
	free(cell);
}

/* ------------------------------------------------------------ fetching */

struct scrape {
	struct stat_expo e[2];
	double t[2];
	int ok;              /* rounds that succeeded */
	char err[512];
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* One node's exposition, the way `meshctl metrics --node` gets it. */
static int scrape_node(const struct cli_node *n, struct stat_expo *e, double *t, char *err,
		       size_t errlen)
{
	json_t *req = json_pack("{s:s}", "cmd", "metrics"), *r;
	const char *text, *why;
	char perr[CELL];
	int rc = -1;

	r = req ? cli_admin_call(n->sock, req) : NULL;
	*t = now_s();
	if (!r) {
		int e = errno;

		snprintf(err, errlen, "%s%s", strerror(e),
			 e == ECONNREFUSED || e == ENOENT ? " (is meshd running?)" : "");
		goto out;
	}
	text = json_string_value(json_object_get(r, "text"));
	if (!json_is_true(json_object_get(r, "ok")) || !text) {
		why = json_string_value(json_object_get(r, "error"));
		snprintf(err, errlen, "%s", why ? why : "reply has no metrics text");
		goto out;
	}
	if (stat_parse(text, e, perr, sizeof(perr))) {
		snprintf(err, errlen, "metrics: %s", perr);
		goto out;
	}
	rc = 0;
out:
	json_decref(r);
	json_decref(req);
	return rc;
}

static const char *run_dir(void)
{
	const char *r = getenv("BPFMESH_RUN");

	return r && *r ? r : "/run/bpfmesh";
}

/* The error on stderr (unless already said there), and as JSON on out when
 * asked for JSON. */
static void print_failure(const struct stat_opts *o, FILE *out, json_t *nodes, const char *msg,
			  int said)
{
	if (!said)
		fprintf(stderr, "meshctl stat: %s\n", msg);
	if (o->json) {
		json_t *j = json_pack("{s:b,s:s,s:o}", "ok", 0, "error", msg, "nodes",
				      nodes ? json_incref(nodes) : json_array());

		if (j) {
			json_dumpf(j, out, JSON_INDENT(2));
			fputc('\n', out);
		}
		json_decref(j);
	}
}

static void print_result(const struct stat_opts *o, FILE *out, json_t *nodes, int ok,
			 const struct stat_row *rows, size_t n)
{
	if (o->json) {
		json_t *j = json_pack("{s:b,s:s,s:s?,s:s?,s:f,s:O,s:[]}", "ok", ok, "kind",
				      kind_name(o->f.kind), "namespace", o->f.ns, "name", o->f.name,
				      "window_seconds", o->window_ms / 1000.0, "nodes", nodes, "rows");

		for (size_t i = 0; j && i < n; i++)
			json_array_append_new(json_object_get(j, "rows"), row_json(&rows[i]));
		if (j) {
			json_dumpf(j, out, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
			fputc('\n', out);
		}
		json_decref(j);
		return;
	}
	if (n) {
		print_table(out, o, rows, n);
	} else if (o->f.name) {
		fprintf(stderr, "No traffic for %s/%s%s%s in the window.\n", kind_name(o->f.kind),
			o->f.name, o->f.ns ? " in namespace " : "", o->f.ns ? o->f.ns : "");
	} else if (o->f.ns) {
		fprintf(stderr, "No traffic found in %s namespace.\n", o->f.ns);
	} else {
		fprintf(stderr, "No traffic found.\n");
	}
}

int stat_run(const struct stat_opts *o, FILE *out)
{
	struct cli_node *nodes = NULL;
	struct scrape *sc = NULL;
	struct stat_pair *pairs = NULL;
	struct stat_row *rows = NULL;
	json_t *nj = NULL;
	size_t nrows = 0, np = 0;
	char msg[768];
	int n, good = 0, failed = 0, rc = 1;

	n = cli_nodes(o->node, &nodes);   /* says why on stderr when none */
	if (!n) {
		if (o->node)
			snprintf(msg, sizeof(msg), "node %s has no agent socket under %s", o->node,
				 run_dir());
		else
			snprintf(msg, sizeof(msg), "no node agents under %s (is meshd running?)",
				 run_dir());
		print_failure(o, out, NULL, msg, 1);
		goto out;
	}
	sc = calloc((size_t)n, sizeof(*sc));
	pairs = calloc((size_t)n, sizeof(*pairs));
	nj = json_array();
	if (!sc || !pairs || !nj)
		goto out;
	for (int round = 0; round < 2; round++) {
		if (round) {
			if (!good)
				break;
			sleep_ms(o->window_ms);
		}
		for (int i = 0; i < n; i++)
			if (sc[i].ok == round &&
			    !scrape_node(&nodes[i], &sc[i].e[round], &sc[i].t[round], sc[i].err,
					 sizeof(sc[i].err)))
				sc[i].ok++, good += !round;
	}
	for (int i = 0; i < n; i++) {
		if (sc[i].ok == 2) {
			pairs[np++] = (struct stat_pair){ &sc[i].e[0], &sc[i].e[1],
							  sc[i].t[1] - sc[i].t[0] };
			json_array_append_new(nj, json_pack("{s:s,s:b}", "node", nodes[i].name, "ok", 1));
		} else {
			failed++;
			fprintf(stderr, "meshctl stat: node %s: %s\n", nodes[i].name, sc[i].err);
			json_array_append_new(nj, json_pack("{s:s,s:b,s:s}", "node", nodes[i].name,
							    "ok", 0, "error", sc[i].err));
		}
	}
	if (!np) {
		snprintf(msg, sizeof(msg), "no node agent answered (%d tried)", n);
		print_failure(o, out, nj, msg, 0);
		goto out;
	}
	if (stat_compute(&o->f, pairs, np, &rows, &nrows)) {
		print_failure(o, out, nj, "out of memory", 0);
		goto out;
	}
	print_result(o, out, nj, !failed, rows, nrows);
	rc = failed ? 1 : 0;
out:
	stat_rows_free(rows, nrows);
	for (int i = 0; sc && i < n; i++) {
		stat_expo_free(&sc[i].e[0]);
		stat_expo_free(&sc[i].e[1]);
	}
	json_decref(nj);
	free(pairs);
	free(sc);
	free(nodes);
	return rc;
}

/* ------------------------------------------------------------ the verb */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: meshctl stat [KIND[/NAME] | KIND NAME] [-n NS | -A] [--from-node NODE]\n"
		"                    [--window SECONDS] [-o json|wide]\n"
		"  golden signals per destination from the nodes' Istio metrics: success rate\n"
		"  (non-5xx), requests/s, p50/p95/p99 latency, open TCP connections, bytes/s\n"
		"  KIND: service (default; NAME is the host or its short name) or workload\n"
		"  -n NS            namespace (default \"default\"; a host NAME with dots needs none)\n"
		"  -A               every namespace\n"
		"  --from-node NODE only this node's metrics (default: every node agent here)\n"
		"  --window SECONDS between the two scrapes rates come from (default 2, min 1)\n"
		"  -o wide          also which reporter's series were used (destination/source)\n");
}

static int parse_kind(const char *s, enum stat_kind *k)
{
	static const struct { const char *name; enum stat_kind k; } kinds[] = {
		{ "service", STAT_SERVICE }, { "services", STAT_SERVICE }, { "svc", STAT_SERVICE },
		{ "workload", STAT_WORKLOAD }, { "workloads", STAT_WORKLOAD },
		{ "wl", STAT_WORKLOAD },
	};

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (!strcasecmp(s, kinds[i].name)) {
			*k = kinds[i].k;
			return 0;
		}
	}
	return -EINVAL;
}

int do_stat(int argc, char **argv)
{
	static const struct option lo[] = { { "namespace", required_argument, 0, 'n' },
					    { "all-namespaces", no_argument, 0, 'A' },
					    { "from-node", required_argument, 0, 'F' },
					    { "node", required_argument, 0, 'F' },
					    { "window", required_argument, 0, 'w' },
					    { "output", required_argument, 0, 'o' },
					    { "json", no_argument, 0, 'j' },
					    { "help", no_argument, 0, 'h' },
					    { 0, 0, 0, 0 } };
	struct stat_opts o = { .f = { .ns = "default" }, .window_ms = 2000 };
	char kind[64], *end;
	const char *ns = NULL;
	int c, all = 0, npos;
	double w;

	optind = 1;
	while ((c = getopt_long(argc, argv, "n:Ao:jh", lo, NULL)) != -1) {
		switch (c) {
		case 'n': ns = optarg; break;
		case 'A': all = 1; break;
		case 'F': o.node = optarg; break;
		case 'w':
			w = strtod(optarg, &end);
			if (end == optarg || *end || !(w >= 1 && w <= 3600)) {
				fprintf(stderr, "meshctl stat: --window %s: seconds from 1 to 3600\n", optarg);
				return 2;
			}
			o.window_ms = (unsigned)(w * 1000 + 0.5);
			break;
		case 'o':
			if (!strcmp(optarg, "json"))
				o.json = 1;
			else if (!strcmp(optarg, "wide"))
				o.wide = 1;
			else if (strcmp(optarg, "table")) {
				fprintf(stderr, "meshctl stat: -o %s: use json or wide\n", optarg);
				return 2;
			}
			break;
		case 'j': o.json = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	npos = argc - optind;
	if (npos > 2) {
		usage(stderr);
		return 2;
	}
	snprintf(kind, sizeof(kind), "%s", npos ? argv[optind] : "service");
	if (npos == 2) {
		o.f.name = argv[optind + 1];
	} else if (npos == 1 && strchr(argv[optind], '/')) {   /* kubectl's KIND/NAME */
		o.f.name = strchr(argv[optind], '/') + 1;
		kind[strcspn(kind, "/")] = 0;
	}
	if (parse_kind(kind, &o.f.kind)) {
		fprintf(stderr, "meshctl stat: unknown kind '%s': use service or workload\n", kind);
		return 2;
	}
	if (o.f.name && !*o.f.name) {
		fprintf(stderr, "meshctl stat: %s/: the name is empty\n", kind);
		return 2;
	}
	if (all && ns) {
		fprintf(stderr, "meshctl stat: -n and -A exclude each other\n");
		return 2;
	}
	/* A service host names its namespace (reviews.NS.svc.cluster.local), and a
	 * ServiceEntry host may live anywhere: no default namespace then. */
	if (ns)
		o.f.ns = ns;
	else if (all || (o.f.name && o.f.kind == STAT_SERVICE && strchr(o.f.name, '.')))
		o.f.ns = NULL;
	return stat_run(&o, stdout);
}
