/* Access logs (Telemetry API accessLogging, reference §6): which requests
 * are logged, where, and the line written for each.
 *
 * Which workloads: the Telemetry resources that apply to the workload
 * (selector-less in the root namespace istio-system = mesh-wide;
 * selector-less in the workload's namespace; with a selector, the
 * workloads it matches in its own namespace). The most specific level
 * whose Telemetry sets accessLogging wins (workload > namespace > mesh;
 * two at one level: the first by name). Its accessLogging[] rules are
 * applied in order: a rule adds its providers (none listed: the default
 * provider, "envoy"); `disabled: true` removes them (none listed: all).
 * No Telemetry setting accessLogging: meshd's --access-log-file, when
 * given, logs every request there (Istio's legacy meshConfig.accessLogFile);
 * otherwise nothing is logged.
 *
 * Where: provider "envoy" (Istio's built-in) = meshd's stdout;
 * "file:/PATH" = that file. Other provider names write nothing (the
 * validator warns about them).
 *
 * What: one JSON object per line with the keys of Istio's default JSON
 * access-log format (start_time ... route_name), values from struct
 * bm_l7_record, null where meshd does not know them. A line is at most
 * BM_ACCESSLOG_LINE_MAX bytes (long fields are cut) and is written with
 * one write(), so lines never interleave: files are opened O_APPEND, and a
 * pipe (stdout) writes up to PIPE_BUF bytes atomically.
 *
 * ---- What the proxy calls --------------------------------------------------
 *
 *  1. At configuration time, per pod it serves (under a->lock, with the
 *     resources the configuration was built from and the pod's workload
 *     labels, e.g. its WorkloadEntry's spec.labels):
 *
 *         struct bm_accesslog_sinks sinks;
 *         bm_accesslog_sinks(a->resources, pod_ns, pod_labels, &sinks);
 *
 *     and keep `sinks` (a few ints, copied by value) with the pod's
 *     per-connection configuration. The files behind it stay open for the
 *     life of meshd, so a worker may use a copy made under an older
 *     configuration.
 *
 *  2. In ops.complete, for each finished request, with the sinks of the
 *     pod that reports it (reporter source: the client pod; reporter
 *     destination: the server pod):
 *
 *         if (sinks.n)
 *                 bm_accesslog_emit(&sinks, r);
 *
 *     Nothing is allocated and no lock is taken; when sinks.n == 0 the
 *     cost is that one test.
 */
#ifndef BM_ACCESSLOG_H
#define BM_ACCESSLOG_H
#include <stddef.h>
#include <jansson.h>

struct bm_l7_record;

#define BM_ACCESSLOG_ROOT_NS   "istio-system"   /* meshConfig.rootNamespace default */
#define BM_ACCESSLOG_LINE_MAX  4096             /* PIPE_BUF: atomic on a pipe too */
#define BM_ACCESSLOG_MAX_SINKS 4
#define BM_ACCESSLOG_MAX_FILES 16               /* distinct files meshd keeps open */

/* Where one workload's access log lines go: file descriptors that stay
 * valid while meshd runs. n == 0: not logged. */
struct bm_accesslog_sinks {
	unsigned n;
	int fd[BM_ACCESSLOG_MAX_SINKS];
};

/* Does the Telemetry configuration in resources (canonical resources, an
 * array) turn access logging on for a workload in namespace ns with these
 * labels (object, NULL = none), to a provider meshd writes? 1 yes, 0 no.
 * Pure: --access-log-file plays no part. */
int bm_accesslog_wanted(const json_t *resources, const char *ns, const json_t *labels);

/* The sinks of that workload (see the rules above; files are opened on
 * first use, O_APPEND, and kept open). 0, or -errno when a file could not
 * be opened (logged once per path; the other sinks are still filled). */
int bm_accesslog_sinks(const json_t *resources, const char *ns, const json_t *labels,
		       struct bm_accesslog_sinks *out);

/* --access-log-file PATH: opened now (an error here is an error at start).
 * NULL forgets it. Call before workers start. */
int bm_accesslog_set_file(const char *path);

/* Format r as one line (JSON + "\n") into buf; returns its length, which
 * is < size. size >= BM_ACCESSLOG_LINE_MAX never cuts the closing brace. */
size_t bm_accesslog_format(const struct bm_l7_record *r, char *buf, size_t size);
/* Format r and write it to fd with one write(). */
void bm_accesslog_write(const struct bm_l7_record *r, int fd);
/* Format r once and write it to every sink. */
void bm_accesslog_emit(const struct bm_accesslog_sinks *s, const struct bm_l7_record *r);

#endif
