/* The arithmetic of meshctl stat (cli/stat.c): counter increases,
 * histogram_quantile, and the grouping of the nodes' two scrapes into one
 * row per service or workload, with the reporter chosen per family as the
 * comment at the top of cli/stat.c explains. Pure: no I/O. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "stat.h"

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
