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
 * Linkerd's inbound stats, else the client's, never the sum.
 *
 * This file fetches, prints and parses the command line; the exposition
 * parser is cli/stat_parse.c, the rates and rows cli/stat_compute.c. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "admin.h"
#include "cli.h"
#include "stat.h"

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
