/*
 * Access logs: the Telemetry decision per workload, the files behind the
 * providers, and the JSON line (see accesslog.h for the rules).
 *
 * The decision is made when the configuration changes, never per request:
 * the proxy keeps a struct bm_accesslog_sinks per pod, and a request costs
 * one format into a stack buffer and one write() per sink.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "accesslog.h"
#include "l7proxy.h"
#include "log.h"
#include "resutil.h"

#define MAX_PROVIDERS 8     /* per workload; more is a configuration nobody writes */

/* ------------------------------------------------------------ the decision */

static const char *str_of(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

/* The Telemetry whose accessLogging applies to the workload, or NULL. */
static const json_t *winner(const json_t *resources, const char *ns, const json_t *labels)
{
	const json_t *best = NULL, *r;
	int best_level = -1;
	size_t i;

	json_array_foreach(resources, i, r) {
		int level;

		if (strcmp(str_of(r, "kind"), "Telemetry") ||
		    !json_array_size(json_object_get(json_object_get(r, "spec"), "accessLogging")))
			continue;
		level = bm_res_level(r, ns, labels, BM_ACCESSLOG_ROOT_NS);
		if (level < 0 || level < best_level)
			continue;
		/* Istio takes the oldest of two at one level; without creation
		 * times, the first by name keeps the choice stable. */
		if (level == best_level &&
		    strcmp(str_of(json_object_get(r, "metadata"), "name"),
			   str_of(json_object_get(best, "metadata"), "name")) >= 0)
			continue;
		best = r;
		best_level = level;
	}
	return best;
}

static void set_add(const char **set, size_t *n, const char *name)
{
	for (size_t i = 0; i < *n; i++)
		if (!strcmp(set[i], name))
			return;
	if (*n < MAX_PROVIDERS)
		set[(*n)++] = name;
}

static void set_del(const char **set, size_t *n, const char *name)
{
	for (size_t i = 0; i < *n; i++)
		if (!strcmp(set[i], name)) {
			set[i] = set[--*n];
			return;
		}
}

/* The provider names enabled for the workload (pointers into resources).
 * Returns -1 when no Telemetry sets accessLogging for it, else the count. */
static int providers(const json_t *resources, const char *ns, const json_t *labels,
		     const char **set)
{
	const json_t *t = winner(resources, ns, labels), *rule;
	size_t n = 0, i;

	if (!t)
		return -1;
	json_array_foreach(json_object_get(json_object_get(t, "spec"), "accessLogging"), i, rule) {
		const json_t *ps = json_object_get(rule, "providers"), *p;
		int off = json_is_true(json_object_get(rule, "disabled"));
		size_t j;

		if (!json_array_size(ps)) {
			/* No providers: meshConfig.defaultProviders.accessLogging,
			 * which for meshd is the built-in "envoy". */
			if (off)
				n = 0;
			else
				set_add(set, &n, "envoy");
			continue;
		}
		json_array_foreach(ps, j, p) {
			const char *name = str_of(p, "name");

			if (!*name)
				continue;
			if (off)
				set_del(set, &n, name);
			else
				set_add(set, &n, name);
		}
	}
	return (int)n;
}

static int writable(const char *name)
{
	return !strcmp(name, "envoy") || !strncmp(name, "file:/", 6);
}

int bm_accesslog_wanted(const json_t *resources, const char *ns, const json_t *labels)
{
	const char *set[MAX_PROVIDERS];
	int n = providers(resources, ns ? ns : "", labels, set);

	for (int i = 0; i < n; i++)
		if (writable(set[i]))
			return 1;
	return 0;
}

/* ------------------------------------------------------------ files */

/* Files are never closed while meshd runs: workers hold copies of the
 * descriptors, and the set of paths is small (MAX_FILES). */
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char path[PATH_MAX];
	int fd;          /* -errno when opening failed (logged once) */
} files[BM_ACCESSLOG_MAX_FILES];
static size_t n_files;
static int legacy_fd = -1;       /* --access-log-file */

/* The descriptor for path, opened on first use. Caller holds files_lock. */
static int file_fd(const char *path)
{
	size_t i;
	int fd;

	for (i = 0; i < n_files; i++)
		if (!strcmp(files[i].path, path))
			return files[i].fd;
	if (n_files == BM_ACCESSLOG_MAX_FILES) {
		static int told;

		if (!told++)
			bm_log("access log %s: more than %d access-log files; not opened", path,
			       BM_ACCESSLOG_MAX_FILES);
		return -EMFILE;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		fd = -errno;
		bm_log("access log %s: open: %s (does the directory exist?)", path, strerror(-fd));
	}
	snprintf(files[n_files].path, sizeof(files[n_files].path), "%s", path);
	files[n_files++].fd = fd;
	return fd;
}

int bm_accesslog_set_file(const char *path)
{
	int fd = -1;

	pthread_mutex_lock(&files_lock);
	if (path)
		fd = file_fd(path);
	legacy_fd = fd >= 0 ? fd : -1;
	pthread_mutex_unlock(&files_lock);
	return fd < 0 && path ? fd : 0;
}

static void sink_add(struct bm_accesslog_sinks *s, int fd)
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->fd[i] == fd)
			return;
	if (s->n < BM_ACCESSLOG_MAX_SINKS)
		s->fd[s->n++] = fd;
}

int bm_accesslog_sinks(const json_t *resources, const char *ns, const json_t *labels,
		       struct bm_accesslog_sinks *out)
{
	const char *set[MAX_PROVIDERS];
	int n = providers(resources, ns ? ns : "", labels, set), err = 0;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&files_lock);
	if (n < 0 && legacy_fd >= 0)
		sink_add(out, legacy_fd);
	for (int i = 0; i < n; i++) {
		if (!strcmp(set[i], "envoy")) {
			sink_add(out, STDOUT_FILENO);
		} else if (!strncmp(set[i], "file:/", 6)) {
			int fd = file_fd(set[i] + 5);

			if (fd >= 0)
				sink_add(out, fd);
			else
				err = fd;
		}
	}
	pthread_mutex_unlock(&files_lock);
	return err;
}

/* ------------------------------------------------------------ the line */

struct jbuf {
	char *p;
	size_t len, cap;   /* cap excludes room for the closing "}\n" */
};

static void put(struct jbuf *b, const char *s, size_t n)
{
	if (n > b->cap - b->len)
		n = b->cap - b->len;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void put_s(struct jbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates, beyond U+10FFFF */
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* "key":"value" with JSON escaping, bytes that are not UTF-8 as U+FFFD,
 * and at most max bytes of escaped value (cut at a character boundary);
 * null for NULL or "" (Envoy's JSON format prints a missing value so). */
static void put_kv_str(struct jbuf *b, const char *key, const char *v, size_t max)
{
	const unsigned char *s = (const unsigned char *)v;
	size_t n, used = 0;

	put_s(b, ",\"");
	put_s(b, key);
	put_s(b, "\":");
	if (!v || !*v) {
		put_s(b, "null");
		return;
	}
	put_s(b, "\"");
	n = strlen(v);
	for (size_t i = 0; i < n;) {
		char esc[8];
		const char *out = esc;
		size_t olen, step = 1;

		if (s[i] == '"' || s[i] == '\\') {
			esc[0] = '\\';
			esc[1] = (char)s[i];
			olen = 2;
		} else if (s[i] < 0x20 || s[i] == 0x7f) {
			olen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", s[i]);
		} else if (s[i] < 0x80) {
			out = (const char *)&s[i];
			olen = 1;
		} else if ((step = utf8_len(&s[i], n - i))) {
			out = (const char *)&s[i];
			olen = step;
		} else {
			out = "\\ufffd";
			olen = 6;
			step = 1;
		}
		if (used + olen > max)
			break;
		put(b, out, olen);
		used += olen;
		i += step;
	}
	put_s(b, "\"");
}

static void put_kv_u64(struct jbuf *b, const char *key, uint64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRIu64, v);
	put_s(b, ",\"");
	put_s(b, key);
	put_s(b, "\":");
	put_s(b, num);
}

static void put_kv_null(struct jbuf *b, const char *key)
{
	put_kv_str(b, key, NULL, 0);
}

size_t bm_accesslog_format(const struct bm_l7_record *r, char *buf, size_t size)
{
	struct jbuf b = { buf, 0, size > 3 ? size - 3 : 0 };
	char start[40] = "", upstream[32] = "";
	time_t secs = (time_t)(r->start_ms / 1000);
	struct tm tm;

	if (size < 4) {
		if (size)
			buf[0] = 0;
		return 0;
	}
	if (r->start_ms && gmtime_r(&secs, &tm)) {
		size_t l = strftime(start, sizeof(start), "%Y-%m-%dT%H:%M:%S", &tm);

		snprintf(start + l, sizeof(start) - l, ".%03uZ", (unsigned)(r->start_ms % 1000));
	}
	if (r->upstream_ip) {
		char ip[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &r->upstream_ip, ip, sizeof(ip));
		snprintf(upstream, sizeof(upstream), "%s:%u", ip, ntohs(r->upstream_port));
	}
	/* Keys and order of Istio's default JSON format; the per-field limits
	 * keep the line under BM_ACCESSLOG_LINE_MAX whatever the request. */
	put_s(&b, "{\"start_time\":");
	if (*start) {
		put_s(&b, "\"");
		put_s(&b, start);
		put_s(&b, "\"");
	} else {
		put_s(&b, "null");
	}
	put_kv_str(&b, "method", r->method, 32);
	put_kv_str(&b, "path", r->path, 1536);
	put_kv_str(&b, "protocol", r->downstream_h2 ? "HTTP/2" : "HTTP/1.1", 16);
	put_kv_u64(&b, "response_code", r->status);
	put_kv_str(&b, "response_flags", r->flags && *r->flags ? r->flags : "-", 64);
	/* Envoy's detail for a response that came from the upstream as is. */
	put_kv_str(&b, "response_code_details",
		   r->status && r->attempts && (!r->flags || !strcmp(r->flags, "-") || !*r->flags)
			   ? "via_upstream" : NULL, 32);
	put_kv_null(&b, "connection_termination_details");
	put_kv_null(&b, "upstream_transport_failure_reason");
	put_kv_u64(&b, "bytes_received", r->req_body_bytes);
	put_kv_u64(&b, "bytes_sent", r->resp_body_bytes);
	put_kv_u64(&b, "duration", r->duration_ms);
	put_kv_null(&b, "upstream_service_time");
	put_kv_null(&b, "x_forwarded_for");
	put_kv_str(&b, "user_agent", r->user_agent, 512);
	put_kv_str(&b, "request_id", r->request_id, 128);
	put_kv_str(&b, "authority", r->authority, 256);
	put_kv_str(&b, "upstream_host", upstream, 32);
	put_kv_str(&b, "upstream_cluster", r->cluster, 320);
	put_kv_null(&b, "upstream_local_address");
	put_kv_null(&b, "downstream_local_address");
	put_kv_null(&b, "downstream_remote_address");
	put_kv_null(&b, "requested_server_name");
	put_kv_str(&b, "route_name", r->route_name, 256);
	/* cap left room for these three bytes */
	memcpy(buf + b.len, "}\n", 3);
	return b.len + 2;
}

void bm_accesslog_write(const struct bm_l7_record *r, int fd)
{
	char line[BM_ACCESSLOG_LINE_MAX];
	size_t n = bm_accesslog_format(r, line, sizeof(line));

	/* One write per line: never interleaved (O_APPEND; PIPE_BUF on pipes).
	 * A short write (disk full) loses the rest of the line, never more. */
	while (write(fd, line, n) < 0 && errno == EINTR)
		;
}

void bm_accesslog_emit(const struct bm_accesslog_sinks *s, const struct bm_l7_record *r)
{
	char line[BM_ACCESSLOG_LINE_MAX];
	size_t n;

	if (!s->n)
		return;
	n = bm_accesslog_format(r, line, sizeof(line));
	for (unsigned i = 0; i < s->n; i++)
		while (write(s->fd[i], line, n) < 0 && errno == EINTR)
			;
}
