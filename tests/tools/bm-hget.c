/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-hget: the HTTP/1.1 client of the L7 tests, a probe and a small load
 * generator that reports what it saw as one JSON object.
 *
 *   bm-hget [options] http://HOST[:PORT]/path?query
 *
 *   -n N               requests (default 1)
 *   -c C               concurrent connections, one thread each (default 1)
 *   -H 'Name: value'   request header (repeatable; replaces the default Host,
 *                      User-Agent, Content-Length of the same name)
 *   -X METHOD          method (default GET, POST with -d)
 *   -d BODY            request body, sent with content-length
 *   --close            a new connection for every request (connection: close)
 *   --timeout-ms T     per request, connect to last body byte (default 10000)
 *   --slow-ms T        also report "slow": responses that took at least T ms
 *   --rate R           at most R requests/s over all connections
 *   --count-header N   count the values of response header N (repeatable)
 *   -v                 the last response's status line, headers and body on stderr
 *
 * HOST is an IPv4 literal or a name resolved with getaddrinfo (IPv4 preferred).
 * Output, printed whatever happened:
 *   {"requests":N,"ok":n2xx,"status":{"200":n},"errors":{"connect":n,"reset":n,
 *    "timeout":n,"parse":n},"backend":{"<x-backend-id>":n},"headers":{"<N>":{"<value>":n}},
 *    "latency_ms":{"p50":x,"p90":x,"p99":x,"max":x},"elapsed_ms":x,"last_body":"..."}
 * latency_ms covers requests that got a response; last_body is the first 4 KiB
 * of the body of the response that completed last. Exit status 0 when every
 * request got a response (any status), else 1.
 *
 * Errors: connect = the connection could not be made (refused, unreachable,
 * name not resolved); reset = the connection was reset or closed before the
 * response was complete; timeout = --timeout-ms passed; parse = the response
 * is not HTTP/1.x. A kept-alive connection is checked before reuse and
 * replaced when the server closed it; a request is never sent twice.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX        (64 * 1024)    /* response head cap; more is a parse error */
#define BUF_SIZE        (HEAD_MAX + 16384)
#define LAST_BODY_JSON  4096
#define LAST_BODY_KEEP  65536          /* kept for -v */
#define MAX_COUNT_HDRS  16
#define MAX_KEYS        1024           /* distinct backends / header values, then "other" */
#define VALUE_MAX       256
#define MAX_REQUESTS    10000000L
#define MAX_CONC        4096

enum err { E_NONE, E_CONNECT, E_RESET, E_TIMEOUT, E_PARSE, E_COUNT };
static const char *const err_names[E_COUNT] = { "", "connect", "reset", "timeout", "parse" };

struct counter {
	char key[VALUE_MAX + 1];
	long n;
};

struct counter_set {
	struct counter *v;
	int n;
};

/* One connection and what its last response looked like. */
struct worker {
	pthread_t thread;
	int fd;
	size_t off, len;               /* unconsumed response bytes are buf[off, len) */
	char buf[BUF_SIZE];
	/* the response being read */
	int status;
	bool keep_alive;
	char backend[VALUE_MAX + 1];
	bool has_backend;
	char cvals[MAX_COUNT_HDRS][VALUE_MAX + 1];
	bool has_cval[MAX_COUNT_HDRS];
	char *head;                    /* copy of the head, for -v and after the buffer moves */
	size_t head_len;
	char *body;                    /* first LAST_BODY_KEEP bytes */
	size_t body_len;
	/* the last complete response of this worker */
	long last_seq;
	char *last_head, *last_body;
	size_t last_head_len, last_body_len;
};

static struct {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char *request;                 /* the serialized request, the same every time */
	size_t request_len;
	bool head_method;              /* HEAD: responses carry no body */
	long n;
	int conc;
	bool close_each;
	int timeout_ms;
	int slow_ms;                   /* --slow-ms: count responses at least this slow */
	double rate;
	bool verbose;
	const char *count_hdrs[MAX_COUNT_HDRS];
	int n_count;
	uint64_t t0_ns;
	atomic_long next;
	/* results, under lock */
	pthread_mutex_t lock;
	long responses, ok, seq;
	long status[1000];
	long errors[E_COUNT];
	struct counter_set backends, hvals[MAX_COUNT_HDRS];
	float *lat_ms;
	long n_lat;
} g = { .n = 1, .conc = 1, .timeout_ms = 10000, .lock = PTHREAD_MUTEX_INITIALIZER };

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Milliseconds left before deadline for poll(), at least 0. */
static int ms_left(uint64_t deadline)
{
	uint64_t now = now_ns();

	if (now >= deadline)
		return 0;
	return (int)((deadline - now + 999999) / 1000000);
}

static void counter_add(struct counter_set *s, const char *key)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].key, key)) {
			s->v[i].n++;
			return;
		}
	if (s->n >= MAX_KEYS) {
		key = "other";
		for (int i = 0; i < s->n; i++)
			if (!strcmp(s->v[i].key, key)) {
				s->v[i].n++;
				return;
			}
	}
	struct counter *v = realloc(s->v, (s->n + 1) * sizeof(*v));

	if (!v)
		return;
	s->v = v;
	snprintf(v[s->n].key, sizeof(v[0].key), "%s", key);
	v[s->n++].n = 1;
}

/* Writes s as a JSON string: escapes, and bytes that are not UTF-8 become U+FFFD. */
static void json_str(FILE *f, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;

	fputc('"', f);
	while (p < end) {
		unsigned char ch = *p;
		int n = ch < 0x80 ? 0 : (ch & 0xe0) == 0xc0 ? 1 : (ch & 0xf0) == 0xe0 ? 2 :
			(ch & 0xf8) == 0xf0 ? 3 : -1;
		bool valid = n >= 0 && end - p > n && !(n == 1 && ch < 0xc2) &&
			     !(n == 3 && ch > 0xf4);

		for (int i = 1; valid && i <= n; i++)
			valid = (p[i] & 0xc0) == 0x80;
		/* overlong three/four byte forms and surrogates */
		if (valid && n == 2)
			valid = !(ch == 0xe0 && p[1] < 0xa0) && !(ch == 0xed && p[1] >= 0xa0);
		if (valid && n == 3)
			valid = !(ch == 0xf0 && p[1] < 0x90) && !(ch == 0xf4 && p[1] >= 0x90);
		if (!valid) {
			fputs("\\ufffd", f);
			p++;
		} else if (n > 0) {
			fwrite(p, 1, n + 1, f);
			p += n + 1;
		} else {
			if (ch == '"' || ch == '\\')
				fprintf(f, "\\%c", ch);
			else if (ch == '\n')
				fputs("\\n", f);
			else if (ch == '\r')
				fputs("\\r", f);
			else if (ch == '\t')
				fputs("\\t", f);
			else if (ch < 0x20 || ch == 0x7f)
				fprintf(f, "\\u%04x", ch);
			else
				fputc(ch, f);
			p++;
		}
	}
	fputc('"', f);
}

static void json_counters(FILE *f, const struct counter_set *s)
{
	fputc('{', f);
	for (int i = 0; i < s->n; i++) {
		if (i)
			fputc(',', f);
		json_str(f, s->v[i].key, strlen(s->v[i].key));
		fprintf(f, ":%ld", s->v[i].n);
	}
	fputc('}', f);
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the sorted v[0, n). */
static double pctl(const float *v, long n, double p)
{
	long i;

	if (!n)
		return 0;
	i = (long)(p / 100.0 * n + 0.999999) - 1;
	return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static void conn_close(struct worker *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	w->off = w->len = 0;
}

/* Non-blocking connect bounded by the deadline. */
static enum err conn_open(struct worker *w, uint64_t deadline)
{
	int one = 1, soerr = 0;
	socklen_t sl = sizeof(soerr);
	struct pollfd pfd;

	w->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (w->fd < 0)
		return E_CONNECT;
	setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(w->fd, (struct sockaddr *)&g.addr, g.addr_len) == 0)
		return E_NONE;
	if (errno != EINPROGRESS)
		goto fail;
	pfd = (struct pollfd){ .fd = w->fd, .events = POLLOUT };
	for (;;) {
		int rc = poll(&pfd, 1, ms_left(deadline));

		if (rc > 0)
			break;
		if (rc == 0) {
			conn_close(w);
			return E_TIMEOUT;
		}
		if (errno != EINTR)
			goto fail;
	}
	if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr)
		goto fail;
	return E_NONE;
fail:
	conn_close(w);
	return E_CONNECT;
}

/* A kept-alive connection that is readable between requests was closed by the
 * server (or sent garbage): not worth sending a request on. */
static bool conn_stale(struct worker *w)
{
	struct pollfd pfd = { .fd = w->fd, .events = POLLIN | POLLRDHUP };

	return w->off != w->len || poll(&pfd, 1, 0) != 0;
}

static enum err send_request(struct worker *w, uint64_t deadline)
{
	size_t done = 0;

	while (done < g.request_len) {
		ssize_t n = send(w->fd, g.request + done, g.request_len - done, MSG_NOSIGNAL);

		if (n >= 0) {
			done += n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return E_RESET;
		struct pollfd pfd = { .fd = w->fd, .events = POLLOUT };
		int rc = poll(&pfd, 1, ms_left(deadline));

		if (rc == 0)
			return E_TIMEOUT;
		if (rc < 0 && errno != EINTR)
			return E_RESET;
	}
	return E_NONE;
}

/* Reads more response bytes. E_NONE with *eof set at EOF. */
static enum err conn_fill(struct worker *w, uint64_t deadline, bool *eof)
{
	*eof = false;
	if (w->off == w->len) {
		w->off = w->len = 0;
	} else if (w->len == sizeof(w->buf) && w->off) {
		memmove(w->buf, w->buf + w->off, w->len - w->off);
		w->len -= w->off;
		w->off = 0;
	}
	if (w->len == sizeof(w->buf))
		return E_PARSE;
	for (;;) {
		ssize_t n = recv(w->fd, w->buf + w->len, sizeof(w->buf) - w->len, 0);

		if (n > 0) {
			w->len += n;
			return E_NONE;
		}
		if (n == 0) {
			*eof = true;
			return E_NONE;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return E_RESET;
		struct pollfd pfd = { .fd = w->fd, .events = POLLIN };
		int rc = poll(&pfd, 1, ms_left(deadline));

		if (rc == 0)
			return E_TIMEOUT;
		if (rc < 0 && errno != EINTR)
			return E_RESET;
	}
}

/* Consumes n body bytes, keeping the first LAST_BODY_KEEP. A premature EOF is a reset. */
static enum err read_body_n(struct worker *w, uint64_t n, uint64_t deadline)
{
	bool eof;
	enum err e;

	while (n) {
		size_t have = w->len - w->off, take;

		if (!have) {
			e = conn_fill(w, deadline, &eof);
			if (e)
				return e;
			if (eof)
				return E_RESET;
			continue;
		}
		take = have < n ? have : n;
		if (w->body_len < LAST_BODY_KEEP) {
			size_t k = LAST_BODY_KEEP - w->body_len < take ? LAST_BODY_KEEP - w->body_len : take;

			memcpy(w->body + w->body_len, w->buf + w->off, k);
			w->body_len += k;
		}
		w->off += take;
		n -= take;
	}
	return E_NONE;
}

static enum err read_until_close(struct worker *w, uint64_t deadline)
{
	for (;;) {
		bool eof;
		enum err e = read_body_n(w, w->len - w->off, deadline);

		if (e)
			return e;
		e = conn_fill(w, deadline, &eof);
		if (e)
			return e;
		if (eof)
			return E_NONE;
	}
}

/* One line (CR LF stripped) of at most max bytes. */
static enum err read_line(struct worker *w, uint64_t deadline, char *out, size_t max, size_t *len)
{
	for (;;) {
		char *nl = memchr(w->buf + w->off, '\n', w->len - w->off);
		bool eof;
		enum err e;

		if (nl) {
			size_t l = nl - (w->buf + w->off);

			if (l && nl[-1] == '\r')
				l--;
			if (l >= max)
				return E_PARSE;
			memcpy(out, w->buf + w->off, l);
			out[l] = 0;
			*len = l;
			w->off = nl + 1 - w->buf;
			return E_NONE;
		}
		if (w->len - w->off > max)
			return E_PARSE;
		e = conn_fill(w, deadline, &eof);
		if (e)
			return e;
		if (eof)
			return E_RESET;
	}
}

static enum err read_chunked(struct worker *w, uint64_t deadline)
{
	char line[4096];
	size_t len;
	enum err e;

	for (;;) {
		uint64_t size = 0;
		size_t i = 0;

		e = read_line(w, deadline, line, sizeof(line), &len);
		if (e)
			return e;
		for (; i < len && isxdigit((unsigned char)line[i]); i++) {
			if (size >> 56)
				return E_PARSE;
			size = size * 16 + (isdigit((unsigned char)line[i]) ? line[i] - '0' :
					    tolower((unsigned char)line[i]) - 'a' + 10);
		}
		if (!i || (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
			return E_PARSE;
		if (!size)
			break;
		e = read_body_n(w, size, deadline);
		if (e)
			return e;
		e = read_line(w, deadline, line, sizeof(line), &len);
		if (e)
			return e;
		if (len)
			return E_PARSE;
	}
	for (size_t total = 0; total <= HEAD_MAX; total += len + 2) {
		e = read_line(w, deadline, line, sizeof(line), &len);
		if (e)
			return e;
		if (!len)
			return E_NONE;
	}
	return E_PARSE;
}

static bool name_is(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && !strncasecmp(s, lit, len);
}

/* Does the comma-separated list s[0, len) hold the token tok? */
static bool list_has(const char *s, size_t len, const char *tok)
{
	size_t i = 0;

	while (i < len) {
		size_t b, e;

		while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
			i++;
		b = i;
		while (i < len && s[i] != ',')
			i++;
		e = i;
		while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
			e--;
		if (e > b && name_is(s + b, e - b, tok))
			return true;
	}
	return false;
}

static void copy_value(char *dst, const char *v, size_t len)
{
	if (len > VALUE_MAX)
		len = VALUE_MAX;
	memcpy(dst, v, len);
	dst[len] = 0;
}

/*
 * Reads a response head from the buffer. Sets *framing: 'c' chunked, 'l' with
 * *length, 'e' until EOF, 'n' no body. Interim 1xx responses are skipped.
 */
static enum err read_head(struct worker *w, uint64_t deadline, char *framing, uint64_t *length)
{
	for (;;) {
		size_t hl = 0;

		/* find the blank line ending the head */
		for (size_t scan = w->off;;) {
			char *nl = memchr(w->buf + scan, '\n', w->len - scan);
			bool eof;
			enum err e;

			if (nl) {
				size_t ls = scan, ll = nl - (w->buf + ls);

				scan = nl + 1 - w->buf;
				if (ll == 0 || (ll == 1 && w->buf[ls] == '\r')) {
					hl = scan - w->off;
					break;
				}
				continue;
			}
			if (w->len - w->off > HEAD_MAX)
				return E_PARSE;
			size_t rel = scan - w->off;

			e = conn_fill(w, deadline, &eof);
			if (e)
				return e;
			if (eof)
				return E_RESET;
			scan = w->off + rel;
		}
		if (hl > HEAD_MAX)
			return E_PARSE;
		char *p = w->buf + w->off, *end = p + hl, *nl;
		bool http11, chunked = false, has_len = false, conn_close_hdr = false, conn_keep = false;
		uint64_t clen = 0;

		memcpy(w->head, p, hl);
		w->head_len = hl;
		w->off += hl;
		p = w->head;
		end = p + hl;
		/* status line: HTTP/1.x SSS[ reason] */
		nl = memchr(p, '\n', end - p);
		if (nl - p < 12 || memcmp(p, "HTTP/1.", 7) || (p[7] != '0' && p[7] != '1') ||
		    p[8] != ' ' || !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
		    !isdigit((unsigned char)p[11]) || (nl - p > 12 && p[12] != ' ' && p[12] != '\r'))
			return E_PARSE;
		http11 = p[7] == '1';
		w->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
		if (w->status < 100)
			return E_PARSE;
		w->has_backend = false;
		memset(w->has_cval, 0, sizeof(w->has_cval));
		for (p = nl + 1; p < end; p = nl + 1) {
			char *colon, *v, *ve;
			size_t ll;

			nl = memchr(p, '\n', end - p);
			ll = nl - p;
			if (ll && p[ll - 1] == '\r')
				ll--;
			if (!ll)
				break;
			colon = memchr(p, ':', ll);
			if (!colon || colon == p || *p == ' ' || *p == '\t')
				return E_PARSE;
			v = colon + 1;
			ve = p + ll;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			size_t nlen = colon - p, vlen = ve - v;

			if (name_is(p, nlen, "content-length")) {
				char *e;
				unsigned long long x;

				if (!vlen || !isdigit((unsigned char)*v))
					return E_PARSE;
				errno = 0;
				x = strtoull(v, &e, 10);
				if (e != ve || errno || (has_len && x != clen))
					return E_PARSE;
				has_len = true;
				clen = x;
			} else if (name_is(p, nlen, "transfer-encoding")) {
				chunked = vlen >= 7 && !strncasecmp(ve - 7, "chunked", 7);
			} else if (name_is(p, nlen, "connection")) {
				conn_close_hdr |= list_has(v, vlen, "close");
				conn_keep |= list_has(v, vlen, "keep-alive");
			} else if (name_is(p, nlen, "x-backend-id") && !w->has_backend) {
				copy_value(w->backend, v, vlen);
				w->has_backend = true;
			}
			for (int i = 0; i < g.n_count; i++)
				if (!w->has_cval[i] && name_is(p, nlen, g.count_hdrs[i])) {
					copy_value(w->cvals[i], v, vlen);
					w->has_cval[i] = true;
				}
		}
		/* 1xx other than 101 are interim: the final response follows (RFC 9110 15.2) */
		if (w->status < 200 && w->status != 101)
			continue;
		w->keep_alive = http11 ? !conn_close_hdr : conn_keep && !conn_close_hdr;
		if (g.head_method || w->status == 204 || w->status == 304 || w->status == 101) {
			*framing = 'n';
			if (w->status == 101)
				w->keep_alive = false;
		} else if (chunked) {
			*framing = 'c';
		} else if (has_len) {
			*framing = 'l';
			*length = clen;
		} else {
			*framing = 'e';
			w->keep_alive = false;
		}
		return E_NONE;
	}
}

static enum err do_request(struct worker *w, uint64_t deadline)
{
	enum err e;
	char framing;
	uint64_t length = 0;

	if (w->fd >= 0 && conn_stale(w))
		conn_close(w);
	if (w->fd < 0) {
		e = conn_open(w, deadline);
		if (e)
			return e;
	}
	e = send_request(w, deadline);
	if (e)
		return e;
	w->body_len = 0;
	e = read_head(w, deadline, &framing, &length);
	if (e)
		return e;
	switch (framing) {
	case 'c':
		return read_chunked(w, deadline);
	case 'l':
		return read_body_n(w, length, deadline);
	case 'e':
		return read_until_close(w, deadline);
	default:
		return E_NONE;
	}
}

static void record(struct worker *w, enum err e, uint64_t start)
{
	float ms = (now_ns() - start) / 1e6;

	pthread_mutex_lock(&g.lock);
	if (e) {
		g.errors[e]++;
		pthread_mutex_unlock(&g.lock);
		return;
	}
	g.responses++;
	g.status[w->status]++;
	if (w->status >= 200 && w->status < 300)
		g.ok++;
	if (w->has_backend)
		counter_add(&g.backends, w->backend);
	for (int i = 0; i < g.n_count; i++)
		if (w->has_cval[i])
			counter_add(&g.hvals[i], w->cvals[i]);
	g.lat_ms[g.n_lat++] = ms;
	w->last_seq = ++g.seq;
	pthread_mutex_unlock(&g.lock);

	/* this worker's latest response; main picks the worker with the highest seq */
	memcpy(w->last_head, w->head, w->head_len);
	w->last_head_len = w->head_len;
	memcpy(w->last_body, w->body, w->body_len);
	w->last_body_len = w->body_len;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (;;) {
		long i = atomic_fetch_add(&g.next, 1);
		uint64_t start;
		enum err e;

		if (i >= g.n)
			break;
		if (g.rate > 0) {
			/* request i starts no earlier than i/R seconds into the run */
			uint64_t at = g.t0_ns + (uint64_t)(i * 1e9 / g.rate), now = now_ns();

			if (at > now) {
				struct timespec ts = { .tv_sec = (at - now) / 1000000000ull,
						       .tv_nsec = (at - now) % 1000000000ull };

				while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
					;
			}
		}
		start = now_ns();
		e = do_request(w, start + (uint64_t)g.timeout_ms * 1000000ull);
		record(w, e, start);
		if (e || !w->keep_alive || g.close_each)
			conn_close(w);
	}
	conn_close(w);
	return NULL;
}

static void print_json(double elapsed_ms, const struct worker *last)
{
	FILE *f = stdout;

	qsort(g.lat_ms, g.n_lat, sizeof(g.lat_ms[0]), cmp_float);
	fprintf(f, "{\"requests\":%ld,\"ok\":%ld,\"status\":{", g.n, g.ok);
	for (int s = 0, first = 1; s < 1000; s++)
		if (g.status[s]) {
			fprintf(f, "%s\"%d\":%ld", first ? "" : ",", s, g.status[s]);
			first = 0;
		}
	fprintf(f, "},\"errors\":{");
	for (int e = 1; e < E_COUNT; e++)
		fprintf(f, "%s\"%s\":%ld", e > 1 ? "," : "", err_names[e], g.errors[e]);
	fprintf(f, "},\"backend\":");
	json_counters(f, &g.backends);
	fprintf(f, ",\"headers\":{");
	for (int i = 0; i < g.n_count; i++) {
		if (i)
			fputc(',', f);
		json_str(f, g.count_hdrs[i], strlen(g.count_hdrs[i]));
		fputc(':', f);
		json_counters(f, &g.hvals[i]);
	}
	fputc('}', f);
	if (g.slow_ms) {
		long slow = 0;

		for (long i = 0; i < g.n_lat; i++)
			slow += g.lat_ms[i] >= (float)g.slow_ms;
		fprintf(f, ",\"slow\":%ld", slow);
	}
	fprintf(f, ",\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
		"\"elapsed_ms\":%.3f,\"last_body\":",
		pctl(g.lat_ms, g.n_lat, 50), pctl(g.lat_ms, g.n_lat, 90), pctl(g.lat_ms, g.n_lat, 99),
		g.n_lat ? g.lat_ms[g.n_lat - 1] : 0.0, elapsed_ms);
	if (last)
		json_str(f, last->last_body,
			 last->last_body_len < LAST_BODY_JSON ? last->last_body_len : LAST_BODY_JSON);
	else
		fputs("\"\"", f);
	fputs("}\n", f);
	fflush(f);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bm-hget [-n N] [-c C] [-H 'Name: value']... [-X METHOD] [-d BODY] [--close]\n"
		"               [--timeout-ms T] [--slow-ms T] [--rate R] [--count-header NAME]... [-v]\n"
		"               http://HOST[:PORT]/path?query\n");
	exit(2);
}

static long num_arg(const char *opt, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "bm-hget: %s wants a number in [%ld, %ld], not '%s'\n", opt, min, max, s);
		exit(2);
	}
	return v;
}

/* Splits http://HOST[:PORT]/rest and resolves HOST, IPv4 first. */
static int parse_url(const char *url, char *host, size_t host_size, char *port, const char **path)
{
	const char *h, *slash, *colon;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	size_t hlen;
	int rc;

	if (strncmp(url, "http://", 7)) {
		fprintf(stderr, "bm-hget: URL must start with http:// (got '%s')\n", url);
		exit(2);
	}
	h = url + 7;
	slash = strchr(h, '/');
	if (!slash)
		slash = h + strlen(h);
	colon = memchr(h, ':', slash - h);
	hlen = (colon ? colon : slash) - h;
	if (!hlen || hlen >= host_size) {
		fprintf(stderr, "bm-hget: no host in URL '%s'\n", url);
		exit(2);
	}
	memcpy(host, h, hlen);
	host[hlen] = 0;
	if (colon) {
		size_t pl = slash - colon - 1;

		if (!pl || pl > 5 || strspn(colon + 1, "0123456789") < pl) {
			fprintf(stderr, "bm-hget: bad port in URL '%s'\n", url);
			exit(2);
		}
		memcpy(port, colon + 1, pl);
		port[pl] = 0;
	} else {
		strcpy(port, "80");
	}
	*path = *slash ? slash : "/";
	for (const char *q = *path; *q; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f) {
			fprintf(stderr, "bm-hget: the URL path must not hold spaces or control bytes\n");
			exit(2);
		}
	hints.ai_family = AF_INET;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		hints.ai_family = AF_UNSPEC;
		rc = getaddrinfo(host, port, &hints, &res);
	}
	if (rc) {
		fprintf(stderr, "bm-hget: cannot resolve %s: %s\n", host, gai_strerror(rc));
		return -1;
	}
	memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
	g.addr_len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static bool user_has(char **hdrs, int n, const char *name)
{
	size_t l = strlen(name);

	for (int i = 0; i < n; i++)
		if (!strncasecmp(hdrs[i], name, l) && hdrs[i][l] == ':')
			return true;
	return false;
}

int main(int argc, char **argv)
{
	char **hdrs = calloc(argc, sizeof(char *));
	int n_hdrs = 0;
	const char *url = NULL, *method = NULL, *body = NULL, *path;
	char host[256], port[8];
	struct worker **ws;
	struct rlimit rl;
	int rc;

	if (!hdrs)
		return 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--close")) {
			g.close_each = true;
			continue;
		}
		if (!strcmp(a, "-v")) {
			g.verbose = true;
			continue;
		}
		if (a[0] != '-') {
			if (url)
				usage();
			url = a;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];

		if (!strcmp(a, "-n"))
			g.n = num_arg(a, v, 1, MAX_REQUESTS);
		else if (!strcmp(a, "-c"))
			g.conc = num_arg(a, v, 1, MAX_CONC);
		else if (!strcmp(a, "-H")) {
			const char *colon = strchr(v, ':');

			if (!colon || colon == v || strpbrk(v, "\r\n")) {
				fprintf(stderr, "bm-hget: -H wants 'Name: value', not '%s'\n", v);
				return 2;
			}
			hdrs[n_hdrs++] = (char *)v;
		} else if (!strcmp(a, "-X"))
			method = v;
		else if (!strcmp(a, "-d"))
			body = v;
		else if (!strcmp(a, "--timeout-ms"))
			g.timeout_ms = num_arg(a, v, 1, 3600000);
		else if (!strcmp(a, "--slow-ms"))
			g.slow_ms = num_arg(a, v, 1, 3600000);
		else if (!strcmp(a, "--rate")) {
			char *end;

			g.rate = strtod(v, &end);
			if (*end || !(g.rate > 0)) {
				fprintf(stderr, "bm-hget: --rate wants a positive number, not '%s'\n", v);
				return 2;
			}
		} else if (!strcmp(a, "--count-header")) {
			if (g.n_count == MAX_COUNT_HDRS) {
				fprintf(stderr, "bm-hget: at most %d --count-header\n", MAX_COUNT_HDRS);
				return 2;
			}
			g.count_hdrs[g.n_count++] = v;
		} else
			usage();
	}
	if (!url)
		usage();
	if (!method)
		method = body ? "POST" : "GET";
	if (!*method || strpbrk(method, " \t\r\n")) {
		fprintf(stderr, "bm-hget: bad -X method '%s'\n", method);
		return 2;
	}
	g.head_method = !strcasecmp(method, "HEAD");
	if (g.conc > g.n)
		g.conc = g.n;
	g.lat_ms = calloc(g.n, sizeof(g.lat_ms[0]));
	if (!g.lat_ms) {
		fprintf(stderr, "bm-hget: out of memory for %ld latencies\n", g.n);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	g.t0_ns = now_ns();
	if (parse_url(url, host, sizeof(host), port, &path) < 0) {
		g.errors[E_CONNECT] = g.n;
		print_json((now_ns() - g.t0_ns) / 1e6, NULL);
		return 1;
	}

	/* The request is the same every time: build it once. */
	FILE *req = open_memstream(&g.request, &g.request_len);
	if (!req)
		return 1;
	fprintf(req, "%s %s HTTP/1.1\r\n", method, path);
	if (!user_has(hdrs, n_hdrs, "host")) {
		if (!strcmp(port, "80"))
			fprintf(req, "Host: %s\r\n", host);
		else
			fprintf(req, "Host: %s:%s\r\n", host, port);
	}
	if (!user_has(hdrs, n_hdrs, "user-agent"))
		fprintf(req, "User-Agent: bm-hget\r\n");
	if (g.close_each && !user_has(hdrs, n_hdrs, "connection"))
		fprintf(req, "Connection: close\r\n");
	for (int i = 0; i < n_hdrs; i++)
		fprintf(req, "%s\r\n", hdrs[i]);
	if (body && !user_has(hdrs, n_hdrs, "content-length") &&
	    !user_has(hdrs, n_hdrs, "transfer-encoding"))
		fprintf(req, "Content-Length: %zu\r\n", strlen(body));
	fprintf(req, "\r\n%s", body ? body : "");
	if (fclose(req))
		return 1;

	ws = calloc(g.conc, sizeof(*ws));
	if (!ws)
		return 1;
	g.t0_ns = now_ns();
	rc = 0;
	for (int i = 0; i < g.conc; i++) {
		pthread_attr_t attr;
		struct worker *w = calloc(1, sizeof(*w));

		if (!w || !(w->head = malloc(HEAD_MAX + 1)) || !(w->last_head = malloc(HEAD_MAX + 1)) ||
		    !(w->body = malloc(LAST_BODY_KEEP)) || !(w->last_body = malloc(LAST_BODY_KEEP))) {
			fprintf(stderr, "bm-hget: out of memory for connection %d\n", i);
			return 1;
		}
		w->fd = -1;
		ws[i] = w;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&w->thread, &attr, worker_main, w)) {
			fprintf(stderr, "bm-hget: pthread_create failed after %d connections\n", i);
			g.conc = i;
			pthread_attr_destroy(&attr);
			free(w->head);
			free(w->last_head);
			free(w->body);
			free(w->last_body);
			free(w);
			break;
		}
		pthread_attr_destroy(&attr);
	}
	if (!g.conc) {
		/* no worker: nothing was sent */
		g.errors[E_CONNECT] = g.n;
	}
	for (int i = 0; i < g.conc; i++)
		pthread_join(ws[i]->thread, NULL);

	double elapsed_ms = (now_ns() - g.t0_ns) / 1e6;
	const struct worker *last = NULL;

	for (int i = 0; i < g.conc; i++)
		if (ws[i]->last_seq && (!last || ws[i]->last_seq > last->last_seq))
			last = ws[i];
	print_json(elapsed_ms, last);
	if (g.verbose && last) {
		fwrite(last->last_head, 1, last->last_head_len, stderr);
		fwrite(last->last_body, 1, last->last_body_len, stderr);
		if (last->last_body_len && last->last_body[last->last_body_len - 1] != '\n')
			fputc('\n', stderr);
	}
	rc = g.responses == g.n ? 0 : 1;

	for (int i = 0; i < g.conc; i++) {
		free(ws[i]->head);
		free(ws[i]->last_head);
		free(ws[i]->body);
		free(ws[i]->last_body);
		free(ws[i]);
	}
	free(ws);
	for (int i = 0; i < g.n_count; i++)
		free(g.hvals[i].v);
	free(g.backends.v);
	free(g.lat_ms);
	free(g.request);
	free(hdrs);
	return rc;
}
