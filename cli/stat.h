/* meshctl stat: golden signals (requests/s, success rate, latency
 * percentiles, TCP connections and bytes/s) per service or workload,
 * computed from two scrapes of every node's Istio metrics.
 *
 * The parser of the Prometheus text format, histogram_quantile and the
 * rate/grouping step are pure functions, declared here for the unit tests
 * (tests/unit/test_stat.c); do_stat() in cli/stat.c only fetches and prints. */
#ifndef BM_CLI_STAT_H
#define BM_CLI_STAT_H
#include <stddef.h>
#include <stdio.h>

/* ------------------------------------------------------------ parsing */

struct stat_label {
	const char *name, *value;   /* unescaped */
};

/* One sample line of a text exposition (format 0.0.4). */
struct stat_sample {
	const char *name;
	struct stat_label *l;       /* sorted by name */
	size_t nl;
	double value;
	const char *key;            /* name and labels, canonical: the series' identity */
	char *buf;                  /* owns the strings above */
};

struct stat_expo {
	struct stat_sample *s;
	size_t n, cap;
};

/* Parses a whole exposition into *e (appending). Comments, HELP and TYPE
 * lines are skipped; label values are unescaped (\\, \", \n); values take
 * Go float syntax (NaN, +Inf); a timestamp is ignored. 0, or -EINVAL with
 * "line N: what" in err; -ENOMEM. */
int stat_parse(const char *text, struct stat_expo *e, char *err, size_t errlen);
void stat_expo_free(struct stat_expo *e);
/* The value of label name, NULL when the sample has none. */
const char *stat_label(const struct stat_sample *s, const char *name);

/* ------------------------------------------------------------ arithmetic */

struct stat_bucket {
	double le;      /* upper bound, INFINITY for +Inf */
	double count;   /* cumulative */
};

/* Prometheus' histogram_quantile (promql/quantile.go bucketQuantile):
 * buckets in any order, must include +Inf; linear interpolation inside the
 * bucket that holds the rank, the first bucket starting at 0, a rank in the
 * +Inf bucket answering the highest finite bound. NaN when there is no
 * answer (no +Inf bucket, fewer than two buckets, no observations). */
double stat_histogram_quantile(double q, const struct stat_bucket *b, size_t n);

/* The increase of a counter between two scrapes; a counter that went
 * backwards was reset (meshd restarted) and counts from zero. */
double stat_counter_delta(double before, double after);

/* ------------------------------------------------------------ rows */

enum stat_kind { STAT_SERVICE, STAT_WORKLOAD };
enum stat_reporter { STAT_NONE, STAT_SOURCE, STAT_DESTINATION };

struct stat_filter {
	enum stat_kind kind;
	const char *ns;     /* NULL: every namespace */
	const char *name;   /* NULL: every service / workload */
};

/* One node's two scrapes, seconds apart. before may be NULL (every series
 * counts from zero). */
struct stat_pair {
	const struct stat_expo *before, *after;
	double seconds;
};

/* One row; NaN where there is nothing to show (no requests: success and
 * latencies; no HTTP series: rps too). */
struct stat_row {
	char *ns, *name;
	double requests;               /* finished in the window (summed over nodes) */
	double rps, success;           /* success: non-5xx share, 0..1 */
	double p50, p95, p99;          /* ms */
	double tcp_open;               /* opened - closed, at the second scrape */
	double bytes_in, bytes_out;    /* per second: from clients, to clients */
	enum stat_reporter http_from, tcp_from;   /* whose series were used */
};

/* Groups the nodes' series by destination service (destination_service,
 * destination_service_namespace) or workload (destination_workload,
 * destination_workload_namespace), keeps those f selects and computes each
 * group's row from the reporter="destination" series when the group has
 * some of that family (HTTP or TCP), else from reporter="source". Rows are
 * sorted by namespace and name. 0 or -ENOMEM. */
int stat_compute(const struct stat_filter *f, const struct stat_pair *p, size_t np,
		 struct stat_row **rows, size_t *nrows);
void stat_rows_free(struct stat_row *rows, size_t n);

/* ------------------------------------------------------------ the verb */

struct stat_opts {
	struct stat_filter f;
	const char *node;      /* --from-node: only this node's metrics */
	unsigned window_ms;
	int json, wide;
};

/* Fetches every selected node's metrics twice, window_ms apart, and prints
 * the rows to out (a table, or JSON that stays valid on errors). Returns
 * the exit code: 0, or 1 when a node or everything failed. */
int stat_run(const struct stat_opts *o, FILE *out);

#endif
