/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-httpsrv: the HTTP/1.1 backend of the L7 tests, with behaviour a test can
 * steer per run, per request and at runtime.
 *
 *   --id ID            identity reported in x-backend-id and bodies (default: hostname)
 *   --port P           listen port (repeatable, at least one)
 *   --bind ADDR        IPv4 listen address (default 0.0.0.0)
 *   --status S         status of normal answers (default 200)
 *   --fail-pct P       share of requests (0-100, decimals allowed) answered with
 *   --fail-status S    S instead (default 503)
 *   --delay-ms N       wait N ms before answering ...
 *   --delay-pct P      ... a share P of the requests (default 100)
 *   --body-bytes N     add "filler":"xxx..." (N bytes of x) to every JSON body
 *   --log              one line per request on stderr
 *
 * Request headers override per request:
 *   x-test-status: S      answer S (final: no fail-pct draw)
 *   x-test-fail-pct: P    fail-pct for this request
 *   x-test-delay-ms: N    delay this request by N ms (always)
 *   x-test-body-bytes: N  filler for this request
 *   x-test-reset: 1       read the request, then reset the connection (RST), no answer
 *
 * Control endpoints (matched on the path whatever the method; never delayed,
 * failed or counted):
 *   GET  /__stats   {"id","requests","by_method","by_path","by_status","resets",
 *                    "bad_requests","connections"}; by_path counts paths without
 *                    the query, the first 200 distinct, the rest under "other"
 *   POST /__reset   zero the counters
 *   GET  /__set?status=S&fail_pct=P&fail_status=S&delay_ms=D&delay_pct=P&body_bytes=N
 *                   change the given defaults (others stay), answer the new config
 *
 * Normal answer: "HTTP/1.1 S Reason", x-backend-id, content-type: application/json,
 * content-length and {"id","method","path","host","headers":{lower-case name: value},
 * "body_bytes"[,"filler"]}. Repeated request headers are joined with ", ".
 *
 * A thread per connection with blocking sockets: the tests are bounded, and a
 * delayed answer must not hold up other connections. Requests on one connection
 * are answered one at a time, so pipelining is safe. Bodies (Content-Length or
 * chunked) are read fully and counted, never kept. Headers over 64 KiB get 431,
 * malformed requests 400; both close the connection. SIGTERM/SIGINT exit cleanly.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTEN      16
#define HDR_MAX         (64 * 1024)           /* request head cap, answered with 431 */
#define BUF_SIZE        (HDR_MAX + 8192)
#define MAX_HEADERS     512
#define LINE_MAX_CHUNK  4096                  /* chunk-size and trailer lines */
#define MAX_PATHS       200                   /* distinct paths counted, then "other" */
#define MAX_METHODS     32
#define MAX_DELAY_MS    600000
#define MAX_BODY_BYTES  (64u * 1024 * 1024)
#define IDLE_TIMEOUT_S  300                   /* an idle keep-alive connection ends its thread */

struct behaviour {
	int status, fail_status;
	double fail_pct, delay_pct;
	long delay_ms;
	size_t body_bytes;
};

static struct {
	const char *id;
	bool log;
	pthread_mutex_t lock;      /* guards cfg and the counters below */
	struct behaviour cfg;
	unsigned long requests, resets, bad_requests, connections;
	json_t *by_method, *by_path, *by_status;
} srv = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cfg = { .status = 200, .fail_status = 503, .delay_pct = 100 },
};

struct conn {
	int fd;
	char peer[48];
	uint64_t rng;
	size_t off, len;           /* unconsumed bytes are buf[off, len) */
	size_t scan;               /* header-end search resumes here */
	char buf[BUF_SIZE];
};

struct hdr {
	const char *name, *value;
	size_t name_len, value_len;
};

struct request {
	const char *method, *target, *host;
	size_t method_len, target_len, host_len;
	bool http11, keep_alive, chunked, expect_continue;
	uint64_t content_length;
	bool has_length;
	struct hdr hdrs[MAX_HEADERS];
	int n_hdrs;
	uint64_t body_bytes;
};

static const char *reason(int s)
{
	switch (s) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 418: return "I'm a teapot";
	case 413: return "Content Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default:
		return s < 300 ? "Success" : s < 400 ? "Redirection" : s < 500 ? "Client Error" : "Server Error";
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xorshift64*: a per-connection generator, so the fail/delay draws need no lock. */
static double rand_pct(struct conn *c)
{
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return (double)((c->rng * 0x2545F4914F6CDD1Dull) >> 11) / (double)(1ull << 53) * 100.0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Parses a whole decimal number in [min, max] from s[0, len); -1 if it is not one. */
static int parse_num(const char *s, size_t len, long min, long max, long *out)
{
	long v = 0;

	if (!len || len > 12)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_pct(const char *s, size_t len, double *out)
{
	char tmp[32], *end;
	double v;

	if (!len || len >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, len);
	tmp[len] = 0;
	v = strtod(tmp, &end);
	if (*end || !(v >= 0 && v <= 100))
		return -1;
	*out = v;
	return 0;
}

static bool is_tchar(unsigned char ch)
{
	return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool token_eq(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && !strncasecmp(s, lit, len);
}

/* Does the comma-separated header list s[0, len) hold the token tok? */
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
		if (e > b && token_eq(s + b, e - b, tok))
			return true;
	}
	return false;
}

static const struct hdr *find_hdr(const struct request *r, const char *name)
{
	for (int i = 0; i < r->n_hdrs; i++)
		if (token_eq(r->hdrs[i].name, r->hdrs[i].name_len, name))
			return &r->hdrs[i];
	return NULL;
}

static int send_all(int fd, const char *p, size_t len, int flags)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | flags);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

/* Reads more into the buffer, compacting it first. Returns bytes read, 0 at EOF, <0 on error. */
static ssize_t conn_fill(struct conn *c)
{
	if (c->scan < c->off)
		c->scan = c->off;
	if (c->off == c->len) {
		c->scan -= c->off;
		c->off = c->len = 0;
	} else if (c->len == sizeof(c->buf) && c->off) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->scan -= c->off;
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len == sizeof(c->buf))
		return -ENOBUFS;
	for (;;) {
		ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);

		if (n >= 0) {
			c->len += n;
			return n;
		}
		if (errno != EINTR)
			return -errno;
	}
}

/* Skips n body bytes, buffered first. 0, or -1 when the connection ended early. */
static int conn_discard(struct conn *c, uint64_t n)
{
	while (n) {
		size_t have = c->len - c->off;

		if (!have) {
			c->off = c->len = c->scan = 0;
			if (conn_fill(c) <= 0)
				return -1;
			continue;
		}
		size_t take = have < n ? have : n;

		c->off += take;
		n -= take;
	}
	c->scan = c->off;
	return 0;
}

/* Takes one line (without CR LF) off the buffer. 0, -1 at EOF/error, -2 when too long. */
static int conn_line(struct conn *c, const char **line, size_t *len, size_t max)
{
	for (;;) {
		char *nl = memchr(c->buf + c->off, '\n', c->len - c->off);

		if (nl) {
			*line = c->buf + c->off;
			*len = nl - *line;
			if (*len && (*line)[*len - 1] == '\r')
				(*len)--;
			c->off = nl + 1 - c->buf;
			c->scan = c->off;
			return 0;
		}
		if (c->len - c->off > max)
			return -2;
		if (conn_fill(c) <= 0)
			return -1;
	}
}

/* METHOD SP target SP HTTP/1.x: checked as soon as the first line is in, so
 * garbage gets its 400 without waiting for a blank line that may never come. */
static bool request_line_ok(const char *p, size_t ll)
{
	size_t i = 0, t;

	if (ll && p[ll - 1] == '\r')
		ll--;
	while (i < ll && i <= 32 && is_tchar(p[i]))
		i++;
	if (!i || i > 32 || i == ll || p[i] != ' ')
		return false;
	t = ++i;
	while (i < ll && (unsigned char)p[i] > 0x20 && p[i] != 0x7f)
		i++;
	return i > t && ll - i == 9 && p[i] == ' ' && !memcmp(p + i + 1, "HTTP/1.", 7) &&
	       (p[i + 8] == '0' || p[i + 8] == '1');
}

/*
 * Reads a request head. Returns its length from c->off (the blank line
 * included), 0 at a clean EOF between requests, -1 on error, -431 when it is
 * over HDR_MAX, -400 when the request line is not HTTP/1.x.
 */
static long read_head(struct conn *c)
{
	for (;;) {
		/* Empty lines before a request line are ignored (RFC 9112 2.2). */
		while (c->off < c->len && (c->buf[c->off] == '\r' || c->buf[c->off] == '\n'))
			c->off++;
		if (c->scan < c->off)
			c->scan = c->off;
		while (c->scan < c->len) {
			char *nl = memchr(c->buf + c->scan, '\n', c->len - c->scan);

			if (!nl) {
				c->scan = c->len;
				break;
			}
			size_t ls = c->scan, ll = nl - (c->buf + ls);

			c->scan = nl + 1 - c->buf;
			if (ls == c->off && !request_line_ok(c->buf + ls, ll))
				return -400;
			if (ll == 0 || (ll == 1 && c->buf[ls] == '\r'))
				return c->scan - c->off > HDR_MAX ? -431 : (long)(c->scan - c->off);
		}
		if (c->len - c->off > HDR_MAX)
			return -431;
		ssize_t n = conn_fill(c);

		if (n == 0 && c->off == c->len)
			return 0;
		if (n <= 0)
			return -1;
	}
}

/* Parses the head in buf[0, len): 0, -1 when it is not a valid HTTP/1.x request,
 * -2 when it has more than MAX_HEADERS fields. */
static int parse_head(char *buf, size_t len, struct request *r)
{
	char *p = buf, *end = buf + len, *nl, *sp1, *sp2;
	size_t ll;

	memset(r, 0, offsetof(struct request, hdrs));
	r->n_hdrs = 0;
	r->body_bytes = 0;
	nl = memchr(p, '\n', end - p);
	ll = nl - p;
	if (ll && p[ll - 1] == '\r')
		ll--;
	sp1 = memchr(p, ' ', ll);
	if (!sp1)
		return -1;
	sp2 = memchr(sp1 + 1, ' ', p + ll - sp1 - 1);
	if (!sp2)
		return -1;
	r->method = p;
	r->method_len = sp1 - p;
	r->target = sp1 + 1;
	r->target_len = sp2 - sp1 - 1;
	if (!r->method_len || r->method_len > 32 || !r->target_len)
		return -1;
	for (size_t i = 0; i < r->method_len; i++)
		if (!is_tchar(r->method[i]))
			return -1;
	for (size_t i = 0; i < r->target_len; i++)
		if ((unsigned char)r->target[i] <= 0x20 || r->target[i] == 0x7f)
			return -1;
	if (p + ll - sp2 - 1 != 8)
		return -1;
	if (!memcmp(sp2 + 1, "HTTP/1.1", 8))
		r->http11 = true;
	else if (memcmp(sp2 + 1, "HTTP/1.0", 8))
		return -1;
	r->keep_alive = r->http11;

	for (p = nl + 1; p < end; p = nl + 1) {
		char *colon, *v, *ve;

		nl = memchr(p, '\n', end - p);
		ll = nl - p;
		if (ll && p[ll - 1] == '\r')
			ll--;
		if (!ll)
			break;                     /* the blank line ending the head */
		colon = memchr(p, ':', ll);
		if (!colon || colon == p)
			return -1;                 /* also refuses obs-fold continuation lines */
		for (char *q = p; q < colon; q++)
			if (!is_tchar(*q))
				return -1;
		v = colon + 1;
		ve = p + ll;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (char *q = v; q < ve; q++)
			if ((unsigned char)*q < 0x20 && *q != '\t')
				return -1;
		if (r->n_hdrs == MAX_HEADERS)
			return -2;
		struct hdr *h = &r->hdrs[r->n_hdrs++];

		h->name = p;
		h->name_len = colon - p;
		h->value = v;
		h->value_len = ve - v;

		if (token_eq(h->name, h->name_len, "content-length")) {
			long cl;

			if (parse_num(v, ve - v, 0, 999999999999L, &cl) < 0 ||
			    (r->has_length && r->content_length != (uint64_t)cl))
				return -1;
			r->has_length = true;
			r->content_length = cl;
		} else if (token_eq(h->name, h->name_len, "transfer-encoding")) {
			/* Only chunked as the final coding frames a request body (RFC 9112 6.3). */
			size_t n = ve - v;

			if (n < 7 || strncasecmp(ve - 7, "chunked", 7) ||
			    (n > 7 && ve[-8] != ',' && ve[-8] != ' ' && ve[-8] != '\t'))
				return -1;
			r->chunked = true;
		} else if (token_eq(h->name, h->name_len, "connection")) {
			if (list_has(v, ve - v, "close"))
				r->keep_alive = false;
			else if (list_has(v, ve - v, "keep-alive"))
				r->keep_alive = true;
		} else if (token_eq(h->name, h->name_len, "host") && !r->host) {
			r->host = v;
			r->host_len = ve - v;
		} else if (token_eq(h->name, h->name_len, "expect")) {
			r->expect_continue = r->http11 && token_eq(v, ve - v, "100-continue");
		}
	}
	/* Both framings: chunked wins and the connection must not be reused (RFC 9112 6.1). */
	if (r->chunked && r->has_length)
		r->keep_alive = false;
	return 0;
}

/* Reads a chunked body, counting its bytes. 0, -1 on EOF, -400 when malformed. */
static int read_chunked(struct conn *c, uint64_t *total)
{
	const char *line;
	size_t len;
	int rc;

	for (;;) {
		uint64_t size = 0;
		size_t i = 0;

		rc = conn_line(c, &line, &len, LINE_MAX_CHUNK);
		if (rc)
			return rc == -2 ? -400 : -1;
		for (; i < len && isxdigit((unsigned char)line[i]); i++) {
			if (size >> 56)
				return -400;
			size = size * 16 + (isdigit((unsigned char)line[i]) ? line[i] - '0' :
					    (tolower((unsigned char)line[i]) - 'a' + 10));
		}
		if (!i || (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
			return -400;
		if (!size)
			break;
		if (conn_discard(c, size) < 0)
			return -1;
		*total += size;
		rc = conn_line(c, &line, &len, 2);
		if (rc == -1)
			return -1;
		if (rc || len)
			return -400;
	}
	/* Trailer section, up to the blank line; bounded like the head. */
	for (size_t trailer = 0;; trailer += len + 2) {
		if (trailer > HDR_MAX)
			return -400;
		rc = conn_line(c, &line, &len, LINE_MAX_CHUNK);
		if (rc)
			return rc == -2 ? -400 : -1;
		if (!len)
			return 0;
	}
}

/* An error answer; msg is a fixed string and the ID is checked printable in main(). */
static void reply_simple(struct conn *c, int status, const char *msg, bool close_conn)
{
	char body[384], out[512];
	int bl = snprintf(body, sizeof(body), "{\"id\":\"%s\",\"error\":\"%s\"}", srv.id, msg);
	int n = snprintf(out, sizeof(out),
			 "HTTP/1.1 %d %s\r\nx-backend-id: %s\r\ncontent-type: application/json\r\n"
			 "content-length: %d\r\n%s\r\n",
			 status, reason(status), srv.id, bl, close_conn ? "connection: close\r\n" : "");

	if (send_all(c->fd, out, n, MSG_MORE) == 0)
		send_all(c->fd, body, bl, 0);
}

/* Send a JSON document as a 200 (control endpoints). */
static int reply_json(struct conn *c, json_t *doc, bool keep_alive)
{
	char *js = json_dumps(doc, JSON_COMPACT);
	char hdr[512];
	int n, rc;

	json_decref(doc);
	if (!js)
		return -ENOMEM;
	n = snprintf(hdr, sizeof(hdr),
		     "HTTP/1.1 200 OK\r\nx-backend-id: %s\r\ncontent-type: application/json\r\n"
		     "content-length: %zu\r\n%s\r\n",
		     srv.id, strlen(js), keep_alive ? "" : "connection: close\r\n");
	rc = send_all(c->fd, hdr, n, MSG_MORE);
	if (!rc)
		rc = send_all(c->fd, js, strlen(js), 0);
	free(js);
	return rc;
}

/* json_stringn refuses bytes that are not UTF-8; those become '?'. */
static json_t *json_bytes(const char *s, size_t len)
{
	json_t *v = json_stringn(s, len);
	char *copy;

	if (v)
		return v;
	copy = malloc(len + 1);
	if (!copy)
		return json_string("");
	for (size_t i = 0; i < len; i++)
		copy[i] = (unsigned char)s[i] < 0x80 && s[i] ? s[i] : '?';
	copy[len] = 0;
	v = json_string(copy);
	free(copy);
	return v;
}

static void count_in(json_t *obj, const char *key, size_t max_keys)
{
	json_t *v = json_object_get(obj, key);

	if (!v && json_object_size(obj) >= max_keys)
		key = "other";
	v = json_object_get(obj, key);
	json_object_set_new(obj, key, json_integer((v ? json_integer_value(v) : 0) + 1));
}

static void count_request(const struct request *r, int status, bool reset)
{
	char method[40], path[1024], st[8];
	size_t pl = r->target_len;
	const char *q = memchr(r->target, '?', r->target_len);

	if (q)
		pl = q - r->target;
	if (pl >= sizeof(path))
		pl = sizeof(path) - 1;
	memcpy(method, r->method, r->method_len);
	method[r->method_len] = 0;
	memcpy(path, r->target, pl);
	path[pl] = 0;
	snprintf(st, sizeof(st), "%d", status);

	pthread_mutex_lock(&srv.lock);
	srv.requests++;
	count_in(srv.by_method, method, MAX_METHODS);
	if (!json_object_get(srv.by_path, path)) {
		/* json keys must be UTF-8: count odd paths as "other" rather than lose them */
		json_t *probe = json_string(path);

		if (!probe)
			snprintf(path, sizeof(path), "other");
		json_decref(probe);
	}
	count_in(srv.by_path, path, MAX_PATHS);
	if (reset)
		srv.resets++;
	else
		count_in(srv.by_status, st, 1000);
	pthread_mutex_unlock(&srv.lock);
}

static json_t *stats_json(void)
{
	json_t *o;

	pthread_mutex_lock(&srv.lock);
	/* copies: the live objects change once the lock is released */
	o = json_pack("{s:s,s:I,s:o,s:o,s:o,s:I,s:I,s:I}", "id", srv.id,
		      "requests", (json_int_t)srv.requests, "by_method", json_deep_copy(srv.by_method),
		      "by_path", json_deep_copy(srv.by_path), "by_status", json_deep_copy(srv.by_status),
		      "resets", (json_int_t)srv.resets, "bad_requests", (json_int_t)srv.bad_requests,
		      "connections", (json_int_t)srv.connections);
	pthread_mutex_unlock(&srv.lock);
	return o;
}

static json_t *cfg_json(const struct behaviour *b)
{
	return json_pack("{s:s,s:i,s:f,s:i,s:I,s:f,s:I}", "id", srv.id, "status", b->status,
			 "fail_pct", b->fail_pct, "fail_status", b->fail_status,
			 "delay_ms", (json_int_t)b->delay_ms, "delay_pct", b->delay_pct,
			 "body_bytes", (json_int_t)b->body_bytes);
}

/* GET /__set?k=v&...: validates every pair first, then applies all at once. */
static int handle_set(struct conn *c, const char *q, size_t qlen, bool keep_alive)
{
	struct behaviour b;

	pthread_mutex_lock(&srv.lock);
	b = srv.cfg;
	pthread_mutex_unlock(&srv.lock);
	for (size_t i = 0; i < qlen; i++) {
		size_t e = i, eq;
		long v = 0;
		int rc = 0;

		while (e < qlen && q[e] != '&')
			e++;
		for (eq = i; eq < e && q[eq] != '='; eq++)
			;
		const char *k = q + i, *val = q + eq + 1;
		size_t kl = eq - i, vl = eq < e ? e - eq - 1 : 0;

		if (!kl) {
			rc = 0;
		} else if (token_eq(k, kl, "status")) {
			rc = parse_num(val, vl, 200, 599, &v);
			b.status = v;
		} else if (token_eq(k, kl, "fail_status")) {
			rc = parse_num(val, vl, 200, 599, &v);
			b.fail_status = v;
		} else if (token_eq(k, kl, "delay_ms")) {
			rc = parse_num(val, vl, 0, MAX_DELAY_MS, &v);
			b.delay_ms = v;
		} else if (token_eq(k, kl, "body_bytes")) {
			rc = parse_num(val, vl, 0, MAX_BODY_BYTES, &v);
			b.body_bytes = v;
		} else if (token_eq(k, kl, "fail_pct")) {
			rc = parse_pct(val, vl, &b.fail_pct);
		} else if (token_eq(k, kl, "delay_pct")) {
			rc = parse_pct(val, vl, &b.delay_pct);
		} else {
			rc = -1;
		}
		i = e;
		if (rc < 0) {
			reply_simple(c, 400, "bad /__set parameter (status, fail_pct, fail_status, "
				     "delay_ms, delay_pct, body_bytes)", !keep_alive);
			return keep_alive ? 0 : -1;
		}
	}
	pthread_mutex_lock(&srv.lock);
	srv.cfg = b;
	pthread_mutex_unlock(&srv.lock);
	if (srv.log)
		fprintf(stderr, "bm-httpsrv: id=%s set status=%d fail_pct=%g fail_status=%d "
			"delay_ms=%ld delay_pct=%g body_bytes=%zu\n", srv.id, b.status, b.fail_pct,
			b.fail_status, b.delay_ms, b.delay_pct, b.body_bytes);
	return reply_json(c, cfg_json(&b), keep_alive);
}

/* Control endpoints. Returns 1 when the request was not one, else 0 or -1 (close). */
static int handle_control(struct conn *c, const struct request *r)
{
	size_t pl = r->target_len;
	const char *q = memchr(r->target, '?', r->target_len);
	int rc;

	if (q)
		pl = q - r->target;
	if (token_eq(r->target, pl, "/__stats")) {
		rc = reply_json(c, stats_json(), r->keep_alive);
	} else if (token_eq(r->target, pl, "/__reset")) {
		pthread_mutex_lock(&srv.lock);
		srv.requests = srv.resets = srv.bad_requests = 0;
		json_object_clear(srv.by_method);
		json_object_clear(srv.by_path);
		json_object_clear(srv.by_status);
		pthread_mutex_unlock(&srv.lock);
		rc = reply_json(c, json_pack("{s:s,s:b}", "id", srv.id, "reset", 1), r->keep_alive);
	} else if (token_eq(r->target, pl, "/__set")) {
		rc = q ? handle_set(c, q + 1, r->target + r->target_len - q - 1, r->keep_alive)
		       : handle_set(c, "", 0, r->keep_alive);
	} else {
		return 1;
	}
	return rc < 0 || !r->keep_alive ? -1 : 0;
}

static void reset_conn(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	/* linger 0: close() sends RST, the way a crashed upstream looks to a proxy */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* {"id","method","path","host","headers","body_bytes"[,"filler"]}, malloc'd; NULL on ENOMEM. */
static char *echo_body(const struct request *r, size_t filler, size_t *len)
{
	json_t *hdrs = json_object(), *doc;

	for (int i = 0; i < r->n_hdrs; i++) {
		char name[256];
		size_t nl = r->hdrs[i].name_len < sizeof(name) - 1 ? r->hdrs[i].name_len : sizeof(name) - 1;
		json_t *val = json_bytes(r->hdrs[i].value, r->hdrs[i].value_len), *old;

		for (size_t j = 0; j < nl; j++)
			name[j] = tolower((unsigned char)r->hdrs[i].name[j]);
		name[nl] = 0;
		old = json_object_get(hdrs, name);
		if (old) {
			/* repeated field lines combine into one list value (RFC 9110 5.3) */
			json_t *j = json_sprintf("%s, %s", json_string_value(old), json_string_value(val));

			json_decref(val);
			val = j ? j : json_string("");
		}
		json_object_set_new(hdrs, name, val);
	}
	doc = json_pack("{s:s,s:o,s:o,s:o,s:o,s:I}", "id", srv.id,
			"method", json_bytes(r->method, r->method_len),
			"path", json_bytes(r->target, r->target_len),
			"host", json_bytes(r->host ? r->host : "", r->host_len),
			"headers", hdrs, "body_bytes", (json_int_t)r->body_bytes);
	char *js = doc ? json_dumps(doc, JSON_COMPACT) : NULL, *body;
	size_t jl, o;

	json_decref(doc);
	if (!js)
		return NULL;
	jl = strlen(js);
	*len = jl;
	if (!filler)
		return js;
	/* the filler goes inside the JSON, so the body stays parseable for the tests */
	*len = jl - 1 + strlen(",\"filler\":\"\"}") + filler;
	body = malloc(*len);
	if (body) {
		o = jl - 1;
		memcpy(body, js, o);
		memcpy(body + o, ",\"filler\":\"", 11);
		o += 11;
		memset(body + o, 'x', filler);
		o += filler;
		memcpy(body + o, "\"}", 2);
	}
	free(js);
	return body;
}

/* Answers one normal request. 0 to go on with the connection, -1 to close it. */
static int handle_request(struct conn *c, const struct request *r)
{
	struct behaviour b;
	const struct hdr *h;
	long v, delay = 0;
	double fail_pct;
	int status;
	bool explicit_status = false;

	pthread_mutex_lock(&srv.lock);
	b = srv.cfg;
	pthread_mutex_unlock(&srv.lock);

	if ((h = find_hdr(r, "x-test-reset")) && !token_eq(h->value, h->value_len, "0")) {
		count_request(r, 0, true);
		if (srv.log)
			fprintf(stderr, "bm-httpsrv: id=%s %s %.*s %.*s reset\n", srv.id, c->peer,
				(int)r->method_len, r->method, (int)r->target_len, r->target);
		reset_conn(c->fd);
		return -1;
	}
	status = b.status;
	fail_pct = b.fail_pct;
	if ((h = find_hdr(r, "x-test-status"))) {
		if (parse_num(h->value, h->value_len, 200, 599, &v) < 0)
			goto bad_header;
		status = v;
		explicit_status = true;
	}
	if ((h = find_hdr(r, "x-test-fail-pct")) && parse_pct(h->value, h->value_len, &fail_pct) < 0)
		goto bad_header;
	if ((h = find_hdr(r, "x-test-body-bytes"))) {
		if (parse_num(h->value, h->value_len, 0, MAX_BODY_BYTES, &v) < 0)
			goto bad_header;
		b.body_bytes = v;
	}
	if ((h = find_hdr(r, "x-test-delay-ms"))) {
		if (parse_num(h->value, h->value_len, 0, MAX_DELAY_MS, &delay) < 0)
			goto bad_header;
	} else if (b.delay_ms && rand_pct(c) < b.delay_pct) {
		delay = b.delay_ms;
	}
	if (!explicit_status && fail_pct > 0 && rand_pct(c) < fail_pct)
		status = b.fail_status;
	count_request(r, status, false);
	if (delay)
		sleep_ms(delay);

	size_t blen;
	char *body = echo_body(r, b.body_bytes, &blen);

	if (!body)
		return -1;
	bool head = token_eq(r->method, r->method_len, "HEAD");
	bool no_body = head || status == 204 || status == 304;
	char hdr[512];
	int n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\nx-backend-id: %s\r\n"
			 "content-type: application/json\r\n", status, reason(status), srv.id);

	if (status != 204)
		n += snprintf(hdr + n, sizeof(hdr) - n, "content-length: %zu\r\n",
			      status == 304 ? 0 : blen);
	if (!r->keep_alive)
		n += snprintf(hdr + n, sizeof(hdr) - n, "connection: close\r\n");
	else if (!r->http11)
		n += snprintf(hdr + n, sizeof(hdr) - n, "connection: keep-alive\r\n");
	n += snprintf(hdr + n, sizeof(hdr) - n, "\r\n");

	int rc = send_all(c->fd, hdr, n, no_body ? 0 : MSG_MORE);

	if (!rc && !no_body)
		rc = send_all(c->fd, body, blen, 0);
	free(body);
	if (srv.log)
		fprintf(stderr, "bm-httpsrv: id=%s %s %.*s %.*s %d req_body=%" PRIu64 " delay_ms=%ld%s\n",
			srv.id, c->peer, (int)r->method_len, r->method, (int)r->target_len, r->target,
			status, r->body_bytes, delay, rc ? " (send failed)" : "");
	return rc || !r->keep_alive ? -1 : 0;

bad_header:
	reply_simple(c, 400, "bad x-test-* header value", !r->keep_alive);
	return r->keep_alive ? 0 : -1;
}

static void bad_request(struct conn *c, int status, const char *msg)
{
	pthread_mutex_lock(&srv.lock);
	srv.bad_requests++;
	pthread_mutex_unlock(&srv.lock);
	if (srv.log)
		fprintf(stderr, "bm-httpsrv: id=%s %s %d %s\n", srv.id, c->peer, status, msg);
	reply_simple(c, status, msg, true);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct request *r = malloc(sizeof(*r));

	if (!r)
		goto out;
	for (;;) {
		long hl = read_head(c);

		if (hl == 0 || hl == -1)
			break;
		if (hl == -431 || hl == -400) {
			bad_request(c, -hl, hl == -431 ? "request head over 64 KiB" : "malformed request");
			break;
		}
		/* Reading the body reuses the buffer: r points into a copy of the head. */
		char *head = malloc(hl);

		if (!head)
			break;
		memcpy(head, c->buf + c->off, hl);
		c->off += hl;
		c->scan = c->off;
		int prc = parse_head(head, hl, r);

		if (prc < 0) {
			bad_request(c, prc == -2 ? 431 : 400,
				    prc == -2 ? "too many header fields" : "malformed request");
			free(head);
			break;
		}

		if (r->expect_continue && (r->chunked || r->content_length) &&
		    send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, 0) < 0) {
			free(head);
			break;
		}
		int rc = 0;

		if (r->chunked) {
			rc = read_chunked(c, &r->body_bytes);
			if (rc == -400)
				bad_request(c, 400, "malformed chunked body");
		} else if (r->content_length) {
			rc = conn_discard(c, r->content_length);
			r->body_bytes = r->content_length;
		}
		if (!rc) {
			rc = handle_control(c, r);
			if (rc == 1)
				rc = handle_request(c, r);
		}
		free(head);
		if (rc)
			break;
	}
out:
	free(r);
	close(c->fd);
	free(c);
	return NULL;
}

static int add_listener(const char *bind_addr, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd;

	if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "bm-httpsrv: bad --bind address %s (an IPv4 address)\n", bind_addr);
		exit(2);
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("bm-httpsrv: socket");
		exit(1);
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0) {
		fprintf(stderr, "bm-httpsrv: bind/listen %s:%d: %s\n", bind_addr, port, strerror(errno));
		exit(1);
	}
	return fd;
}

static void accept_one(int lfd, pthread_attr_t *attr)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
	struct timeval idle = { .tv_sec = IDLE_TIMEOUT_S }, snd = { .tv_sec = 60 };
	struct conn *c;
	pthread_t t;
	int one = 1;

	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE)
			fprintf(stderr, "bm-httpsrv: accept: %s\n", strerror(errno));
		return;
	}
	c = malloc(sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->off = c->len = c->scan = 0;
	snprintf(c->peer, sizeof(c->peer), "%s:%u", inet_ntoa(sa.sin_addr), ntohs(sa.sin_port));
	if (getrandom(&c->rng, sizeof(c->rng), 0) != sizeof(c->rng) || !c->rng)
		c->rng = now_ms() * 0x9E3779B97F4A7C15ull + fd + 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));
	pthread_mutex_lock(&srv.lock);
	srv.connections++;
	pthread_mutex_unlock(&srv.lock);
	if (pthread_create(&t, attr, conn_main, c)) {
		fprintf(stderr, "bm-httpsrv: pthread_create failed, dropping a connection\n");
		close(fd);
		free(c);
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bm-httpsrv --port P [--port P]... [--id ID] [--bind ADDR] [--status S]\n"
		"                  [--fail-pct P] [--fail-status S] [--delay-ms N] [--delay-pct P]\n"
		"                  [--body-bytes N] [--log]\n");
	exit(2);
}

static long num_arg(const char *opt, const char *s, long min, long max)
{
	long v;

	if (parse_num(s, strlen(s), min, max, &v) < 0) {
		fprintf(stderr, "bm-httpsrv: %s wants a number in [%ld, %ld], not '%s'\n", opt, min, max, s);
		exit(2);
	}
	return v;
}

static double pct_arg(const char *opt, const char *s)
{
	double v;

	if (parse_pct(s, strlen(s), &v) < 0) {
		fprintf(stderr, "bm-httpsrv: %s wants a percentage 0-100, not '%s'\n", opt, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	struct pollfd pfd[MAX_LISTEN + 1];
	int ports[MAX_LISTEN], n_ports = 0;
	const char *bind_addr = "0.0.0.0";
	static char host[256];
	pthread_attr_t attr;
	struct rlimit rl;
	sigset_t mask;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--log")) {
			srv.log = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];

		if (!strcmp(a, "--id"))
			srv.id = v;
		else if (!strcmp(a, "--port")) {
			if (n_ports == MAX_LISTEN) {
				fprintf(stderr, "bm-httpsrv: at most %d ports\n", MAX_LISTEN);
				return 2;
			}
			ports[n_ports++] = num_arg(a, v, 1, 65535);
		} else if (!strcmp(a, "--bind"))
			bind_addr = v;
		else if (!strcmp(a, "--status"))
			srv.cfg.status = num_arg(a, v, 200, 599);
		else if (!strcmp(a, "--fail-status"))
			srv.cfg.fail_status = num_arg(a, v, 200, 599);
		else if (!strcmp(a, "--fail-pct"))
			srv.cfg.fail_pct = pct_arg(a, v);
		else if (!strcmp(a, "--delay-ms"))
			srv.cfg.delay_ms = num_arg(a, v, 0, MAX_DELAY_MS);
		else if (!strcmp(a, "--delay-pct"))
			srv.cfg.delay_pct = pct_arg(a, v);
		else if (!strcmp(a, "--body-bytes"))
			srv.cfg.body_bytes = num_arg(a, v, 0, MAX_BODY_BYTES);
		else
			usage();
	}
	if (!n_ports)
		usage();
	if (!srv.id) {
		gethostname(host, sizeof(host) - 1);
		srv.id = host;
	}
	/* The ID goes into header lines and JSON: keep it printable and short. */
	for (const char *p = srv.id; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == '"' || *p == '\\' || (unsigned char)*p >= 0x7f) {
			fprintf(stderr, "bm-httpsrv: --id must be printable ASCII without spaces or quotes\n");
			return 2;
		}
	if (!*srv.id || strlen(srv.id) > 128) {
		fprintf(stderr, "bm-httpsrv: --id must be 1-128 bytes\n");
		return 2;
	}
	srv.by_method = json_object();
	srv.by_path = json_object();
	srv.by_status = json_object();
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* Block the exit signals before any thread exists, so only the signalfd sees them. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	pfd[0].fd = signalfd(-1, &mask, SFD_CLOEXEC);
	pfd[0].events = POLLIN;
	if (pfd[0].fd < 0) {
		perror("bm-httpsrv: signalfd");
		return 1;
	}
	for (int i = 0; i < n_ports; i++) {
		pfd[i + 1].fd = add_listener(bind_addr, ports[i]);
		pfd[i + 1].events = POLLIN;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);

	fprintf(stderr, "bm-httpsrv: id=%s serving on %s port", srv.id, bind_addr);
	for (int i = 0; i < n_ports; i++)
		fprintf(stderr, "%s%d", i ? "," : " ", ports[i]);
	fprintf(stderr, "\n");
	for (;;) {
		if (poll(pfd, n_ports + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("bm-httpsrv: poll");
			return 1;
		}
		if (pfd[0].revents) {
			pthread_mutex_lock(&srv.lock);
			fprintf(stderr, "bm-httpsrv: id=%s exiting: %lu connections, %lu requests\n",
				srv.id, srv.connections, srv.requests);
			pthread_mutex_unlock(&srv.lock);
			return 0;
		}
		for (int i = 1; i <= n_ports; i++)
			if (pfd[i].revents & POLLIN)
				accept_one(pfd[i].fd, &attr);
	}
}
