/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-load: a small HTTP/1.1 load generator for the benchmarks, with a fixed
 * request rate (open loop), which wrk does not have and wrk2 is not in Debian.
 *
 *   --addr IP:PORT     where to connect (IPv4)
 *   --addr2 IP:PORT    every other connection (the odd-numbered ones) goes
 *                      here instead, in the same run: two paths to the same
 *                      server measured side by side, with the same drift
 *                      ("a": --addr, "b": --addr2 in the output)
 *   --path P           request path (default /)
 *   --host H           Host header (default the address)
 *   --conns N          connections (default 4); in --close mode, the number of
 *                      requests that may be in flight at once
 *   --rate R           total requests per second (default 1000); 0 = closed
 *                      loop (each connection sends its next request as soon
 *                      as the previous response is in: saturation, like wrk)
 *   --duration S       seconds of load (default 5, may be fractional)
 *   --warmup S         seconds before the measured part (default 0.5):
 *                      requests scheduled then are sent but not recorded
 *   --close            a new TCP connection per request ("Connection: close")
 *   --timeout-ms MS    per-request timeout (default 2000)
 *   --split-period S   also report the requests scheduled in even and odd
 *                      S-second windows of CLOCK_MONOTONIC apart ("even",
 *                      "odd"): a process that acts only in even windows (the
 *                      benchmark's scraper) is compared with the same run's
 *                      quiet windows, with the machine's drift shared
 *   --hist-out FILE    also write every recorded latency to FILE, one
 *                      "NAME US COUNT" line per distinct microsecond value, so
 *                      that runs can be pooled: NAME "all", or with
 *                      --split-period "even" and "odd", with --addr2 "a" and
 *                      "b"
 *   --windows-out FILE with --split-period, also write one line per window:
 *                      "WINDOW PARITY REQUESTS P50 P90 P99 P999" (WINDOW: the
 *                      window's number since CLOCK_MONOTONIC's zero, latencies
 *                      in us), so that each window can be set against its
 *                      neighbours of the other parity
 *   --trace-out FILE   also write one "DUE_US LATENCY_US" line per recorded
 *                      request (DUE_US: when it was scheduled, CLOCK_MONOTONIC
 *                      in us), so that each request can be set against what
 *                      another process did while it was in flight
 *
 * Open loop: connection c sends its j-th request at t0 + (c + j*N)/R. The
 * latency of a request is counted from the time it was *scheduled*, not sent,
 * so a slow response that delays the next request on its connection shows up
 * in the percentiles (no coordinated omission, as in wrk2). Keep-alive
 * connections are opened before t0.
 *
 * Prints one JSON line: requests (recorded), sent (with the warm-up), errors, rps (recorded requests /
 * measured seconds), p50_us, p90_us, p99_us, p999_us, max_us, mean_us; with
 * --split-period, "even" and "odd" objects of requests and the percentiles.
 * One thread, one epoll loop.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_SAMPLES (50u * 1000 * 1000)

enum cstate { C_IDLE, C_CONNECTING, C_WAITING };

struct conn {
	int idx, fd;
	enum cstate st;
	uint64_t due;        /* scheduled time of the next (or current) request, ns */
	uint64_t deadline;   /* current request's timeout, ns */
	bool record;         /* the current request is in the measured window */
	bool sent;
	size_t wlen, woff, rlen;
	char *rbuf;
};

static struct {
	struct sockaddr_in addr, addr2;
	bool two;            /* --addr2: odd connections go to addr2 */
	const char *path, *host;
	int conns;
	double rate, duration, warmup;
	bool close_mode;
	uint64_t timeout_ns;
	char req[512];
	size_t req_len;
	uint64_t t0, t_meas, t_end;
	uint32_t *lat;
	size_t n_lat, cap_lat;
	uint64_t split_ns;
	const char *hist_out, *windows_out, *trace_out;
	struct tsample { uint64_t due_us; uint32_t us; } *ts;
	size_t n_ts, cap_ts;
	struct samples { uint32_t *v; size_t n, cap; } half[2], target[2];
	struct wsample { uint64_t window; uint32_t us; } *ws;
	size_t n_ws, cap_ws;
	uint64_t errors, sent_total;
	int epfd;
} g;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "bm-load: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* v with room for element n (of size bytes), doubling *cap as needed. */
static void *grow(void *v, size_t n, size_t *cap, size_t size)
{
	if (n < *cap)
		return v;
	*cap = *cap ? *cap * 2 : 65536;
	v = realloc(v, *cap * size);
	if (!v)
		die("realloc");
	return v;
}

static void push(uint32_t **v, size_t *n, size_t *cap, uint32_t us)
{
	if (*n >= MAX_SAMPLES)
		return;
	*v = grow(*v, *n, cap, sizeof(**v));
	(*v)[(*n)++] = us;
}

/* due: when the request was scheduled (CLOCK_MONOTONIC ns); idx: its
 * connection's */
static void record(uint64_t ns, uint64_t due, int idx)
{
	uint64_t us = ns / 1000;
	uint32_t v = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;

	push(&g.lat, &g.n_lat, &g.cap_lat, v);
	if (g.trace_out && g.n_ts < MAX_SAMPLES) {
		g.ts = grow(g.ts, g.n_ts, &g.cap_ts, sizeof(*g.ts));
		g.ts[g.n_ts++] = (struct tsample){ due / 1000, v };
	}
	if (g.two) {
		struct samples *t = &g.target[idx & 1];

		push(&t->v, &t->n, &t->cap, v);
	}
	if (g.split_ns) {
		struct samples *h = &g.half[(due / g.split_ns) & 1];

		push(&h->v, &h->n, &h->cap, v);
		if (g.windows_out && g.n_ws < MAX_SAMPLES) {
			g.ws = grow(g.ws, g.n_ws, &g.cap_ws, sizeof(*g.ws));
			g.ws[g.n_ws++] = (struct wsample){ due / g.split_ns, v };
		}
	}
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(g.epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->rlen = 0;
}

static int conn_open(struct conn *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	int one = 1;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	const struct sockaddr_in *to = g.two && (c->idx & 1) ? &g.addr2 : &g.addr;

	if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &ev)) {
		close(fd);
		return -1;
	}
	c->fd = fd;
	c->st = C_CONNECTING;
	c->rlen = 0;
	return 0;
}

/* Next due time after a request finished (or failed). */
static void schedule_next(struct conn *c, uint64_t now)
{
	if (g.rate > 0)
		c->due += (uint64_t)(g.conns * 1e9 / g.rate);
	else
		c->due = now;
}

static void finish(struct conn *c, bool ok, uint64_t now)
{
	if (ok && c->record)
		record(now - c->due, c->due, c->idx);
	else if (!ok && c->record)
		g.errors++;
	c->sent = false;
	c->woff = 0;
	if (g.close_mode || !ok)
		conn_close(c);
	c->st = C_IDLE;
	schedule_next(c, now);
}

static void try_write(struct conn *c)
{
	while (c->woff < g.req_len) {
		ssize_t n = send(c->fd, g.req + c->woff, g.req_len - c->woff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN)
				return;
			finish(c, false, now_ns());
			return;
		}
		c->woff += (size_t)n;
	}
	c->sent = true;
}

/* Complete response in rbuf? Returns its length, 0 if not yet, -1 on garbage. */
static long response_len(struct conn *c)
{
	char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
	long hdr, cl = -1;

	if (!end)
		return c->rlen >= BUF_SIZE ? -1 : 0;
	hdr = end - c->rbuf + 4;
	if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.1 2", 10))
		return -1;
	for (char *p = c->rbuf; p < end; ) {
		char *nl = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (!nl)
			nl = end;
		if (nl - p > 15 && !strncasecmp(p, "Content-Length:", 15))
			cl = strtol(p + 15, NULL, 10);
		p = nl + 2;
	}
	if (cl < 0 || hdr + cl > BUF_SIZE)
		return -1;
	return (size_t)(hdr + cl) <= c->rlen ? hdr + cl : 0;
}

static void on_event(struct conn *c, uint32_t events)
{
	uint64_t now;

	if (c->st == C_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			if (g.t0)
				finish(c, false, now_ns());
			else
				conn_close(c), c->st = C_IDLE;
			return;
		}
		c->st = g.close_mode ? C_WAITING : C_IDLE;
		if (c->st == C_IDLE)
			return;
	}
	if (c->st != C_WAITING)
		return;
	if (!c->sent)
		try_write(c);
	if (c->st != C_WAITING)
		return;
	for (;;) {
		ssize_t n = recv(c->fd, c->rbuf + c->rlen, BUF_SIZE - c->rlen, 0);
		if (n < 0) {
			if (errno == EAGAIN)
				break;
			finish(c, false, now_ns());
			return;
		}
		if (n == 0) {
			long r = response_len(c);
			finish(c, r > 0 && (size_t)r == c->rlen, now_ns());
			return;
		}
		c->rlen += (size_t)n;
		long r = response_len(c);
		if (r < 0) {
			finish(c, false, now_ns());
			return;
		}
		if (r > 0) {
			now = now_ns();
			if ((size_t)r != c->rlen) {   /* no pipelining: nothing may follow */
				finish(c, false, now);
				return;
			}
			c->rlen = 0;
			finish(c, true, now);
			return;
		}
		if (c->rlen == BUF_SIZE) {
			finish(c, false, now_ns());
			return;
		}
	}
}

static void start_request(struct conn *c, uint64_t now)
{
	c->record = c->due >= g.t_meas;
	c->deadline = now + g.timeout_ns;
	c->woff = 0;
	c->sent = false;
	c->rlen = 0;
	g.sent_total++;
	if (c->fd < 0) {
		if (conn_open(c)) {
			finish(c, false, now);
			return;
		}
		if (g.close_mode) {
			c->st = C_CONNECTING;
			return;
		}
		/* keep-alive connection lost: reconnect, then send */
		c->st = C_CONNECTING;
	}
	if (c->st == C_CONNECTING) {
		/* sent once connected (see the loop) */
		return;
	}
	c->st = C_WAITING;
	try_write(c);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* v sorted */
static double pct_of(const uint32_t *v, size_t n, double p)
{
	if (!n)
		return 0;
	size_t i = (size_t)ceil(p * (double)n);
	if (i < 1)
		i = 1;
	if (i > n)
		i = n;
	return v[i - 1];
}

static double pct(double p)
{
	return pct_of(g.lat, g.n_lat, p);
}

static void print_half(const char *name, struct samples *h)
{
	qsort(h->v, h->n, sizeof(*h->v), cmp_u32);
	printf(",\"%s\":{\"requests\":%zu,\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,"
	       "\"p999_us\":%.0f}", name, h->n, pct_of(h->v, h->n, 0.5), pct_of(h->v, h->n, 0.9),
	       pct_of(h->v, h->n, 0.99), pct_of(h->v, h->n, 0.999));
}

/* "NAME US COUNT" per distinct value of a sorted half */
static void write_hist(FILE *f, const char *name, const struct samples *h)
{
	for (size_t i = 0; i < h->n;) {
		size_t j = i;

		while (j < h->n && h->v[j] == h->v[i])
			j++;
		fprintf(f, "%s %u %zu\n", name, h->v[i], j - i);
		i = j;
	}
}

static int cmp_wsample(const void *a, const void *b)
{
	const struct wsample *x = a, *y = b;

	if (x->window != y->window)
		return x->window < y->window ? -1 : 1;
	return x->us < y->us ? -1 : x->us > y->us;
}

/* One "WINDOW PARITY REQUESTS P50 P90 P99 P999" line per window, in order. */
static void write_windows(FILE *f)
{
	uint32_t *v = malloc((g.n_ws ? g.n_ws : 1) * sizeof(*v));

	if (!v)
		die("malloc");
	qsort(g.ws, g.n_ws, sizeof(*g.ws), cmp_wsample);
	for (size_t i = 0; i < g.n_ws;) {
		size_t n = 0;
		uint64_t w = g.ws[i].window;

		while (i < g.n_ws && g.ws[i].window == w)
			v[n++] = g.ws[i++].us;
		fprintf(f, "%llu %s %zu %.0f %.0f %.0f %.0f\n", (unsigned long long)w, w & 1 ? "odd" : "even", n,
			pct_of(v, n, 0.5), pct_of(v, n, 0.9), pct_of(v, n, 0.99), pct_of(v, n, 0.999));
	}
	free(v);
}

static int parse_addr(const char *s, struct sockaddr_in *out)
{
	char ip[64];
	const char *colon = strrchr(s, ':');

	if (!colon || colon - s >= (long)sizeof(ip))
		return -1;
	memcpy(ip, s, (size_t)(colon - s));
	ip[colon - s] = 0;
	out->sin_family = AF_INET;
	out->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, ip, &out->sin_addr) == 1 ? 0 : -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: bm-load --addr IP:PORT [--addr2 IP:PORT] [--path P] [--host H] [--conns N] [--rate R] "
			"[--duration S] [--warmup S] [--close] [--timeout-ms MS] [--split-period S] [--hist-out FILE]\n"
			"       [--windows-out FILE] [--trace-out FILE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *addr = NULL, *addr2 = NULL;
	char host[64];
	struct conn *cs;
	struct epoll_event evs[256];

	g.path = "/";
	g.conns = 4;
	g.rate = 1000;
	g.duration = 5;
	g.warmup = 0.5;
	g.timeout_ns = 2000ull * 1000000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool more = i + 1 < argc;
		if (!strcmp(a, "--addr") && more) addr = argv[++i];
		else if (!strcmp(a, "--addr2") && more) addr2 = argv[++i];
		else if (!strcmp(a, "--path") && more) g.path = argv[++i];
		else if (!strcmp(a, "--host") && more) g.host = argv[++i];
		else if (!strcmp(a, "--conns") && more) g.conns = atoi(argv[++i]);
		else if (!strcmp(a, "--rate") && more) g.rate = atof(argv[++i]);
		else if (!strcmp(a, "--duration") && more) g.duration = atof(argv[++i]);
		else if (!strcmp(a, "--warmup") && more) g.warmup = atof(argv[++i]);
		else if (!strcmp(a, "--split-period") && more) g.split_ns = (uint64_t)(atof(argv[++i]) * 1e9);
		else if (!strcmp(a, "--hist-out") && more) g.hist_out = argv[++i];
		else if (!strcmp(a, "--windows-out") && more) g.windows_out = argv[++i];
		else if (!strcmp(a, "--trace-out") && more) g.trace_out = argv[++i];
		else if (!strcmp(a, "--timeout-ms") && more) g.timeout_ns = strtoull(argv[++i], NULL, 10) * 1000000;
		else if (!strcmp(a, "--close")) g.close_mode = true;
		else usage();
	}
	if (!addr || g.conns < 1 || g.conns > 100000 || g.rate < 0 || g.duration <= 0 ||
	    g.duration > 600 || g.warmup < 0 || g.warmup > 60)
		usage();
	if (parse_addr(addr, &g.addr) || (addr2 && parse_addr(addr2, &g.addr2)))
		usage();
	g.two = addr2 != NULL;
	snprintf(host, sizeof(host), "%s", addr);
	if (!g.host)
		g.host = host;
	g.req_len = (size_t)snprintf(g.req, sizeof(g.req), "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
				     g.path, g.host, g.close_mode ? "Connection: close\r\n" : "");
	signal(SIGPIPE, SIG_IGN);
	/* wake up on schedule: the default 50 us timer slack would count as latency */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	g.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (g.epfd < 0)
		die("epoll_create1");
	cs = calloc((size_t)g.conns, sizeof(*cs));
	if (!cs)
		die("calloc");
	for (int i = 0; i < g.conns; i++) {
		cs[i].idx = i;
		cs[i].fd = -1;
		cs[i].rbuf = malloc(BUF_SIZE);
		if (!cs[i].rbuf)
			die("malloc");
	}

	/* Keep-alive: open every connection first (bounded wait). */
	if (!g.close_mode) {
		uint64_t until = now_ns() + 5000000000ull;
		int up = 0;
		for (int i = 0; i < g.conns; i++)
			if (conn_open(&cs[i]))
				die("connect");
		while (up < g.conns && now_ns() < until) {
			int n = epoll_wait(g.epfd, evs, 256, 100);
			for (int k = 0; k < n; k++) {
				struct conn *c = evs[k].data.ptr;
				if (c->st == C_CONNECTING) {
					on_event(c, evs[k].events);
					if (c->st == C_IDLE && c->fd >= 0)
						up++;
				}
			}
		}
		if (up < g.conns) {
			fprintf(stderr, "bm-load: only %d of %d connections came up\n", up, g.conns);
			return 1;
		}
	}

	g.t0 = now_ns();
	g.t_meas = g.t0 + (uint64_t)(g.warmup * 1e9);
	g.t_end = g.t_meas + (uint64_t)(g.duration * 1e9);
	for (int i = 0; i < g.conns; i++)
		cs[i].due = g.t0 + (g.rate > 0 ? (uint64_t)(i * 1e9 / g.rate) : 0);

	for (;;) {
		uint64_t now = now_ns(), next = UINT64_MAX;
		int busy = 0;

		for (int i = 0; i < g.conns; i++) {
			struct conn *c = &cs[i];
			if (c->st == C_IDLE && c->due < g.t_end) {
				if (c->due <= now)
					start_request(c, now);
				else if (c->due < next)
					next = c->due;
			}
			if (c->st != C_IDLE) {
				busy++;
				if (now >= c->deadline) {
					finish(c, false, now);
					conn_close(c);
					continue;
				}
				if (c->deadline < next)
					next = c->deadline;
				/* connected keep-alive socket with a request to send */
			}
		}
		if (!busy && now >= g.t_end)
			break;
		{
			bool pending = false;
			for (int i = 0; i < g.conns && !pending; i++)
				pending = cs[i].st == C_IDLE && cs[i].due < g.t_end;
			if (!busy && !pending)
				break;
		}
		struct timespec ts = { 0, 0 };
		if (next != UINT64_MAX && next > now) {
			uint64_t d = next - now;
			ts.tv_sec = (time_t)(d / 1000000000ull);
			ts.tv_nsec = (long)(d % 1000000000ull);
		}
		int n = epoll_pwait2(g.epfd, evs, 256, next == UINT64_MAX ? NULL : &ts, NULL);
		if (n < 0 && errno != EINTR)
			die("epoll_pwait2");
		for (int k = 0; k < n; k++) {
			struct conn *c = evs[k].data.ptr;
			enum cstate before = c->st;
			on_event(c, evs[k].events);
			/* a keep-alive reconnect finished: now send the request */
			if (!g.close_mode && before == C_CONNECTING && c->st == C_IDLE && c->fd >= 0 &&
			    c->deadline > now_ns() && !c->sent && c->due <= now_ns()) {
				c->st = C_WAITING;
				try_write(c);
			}
		}
	}

	double secs = g.duration;
	qsort(g.lat, g.n_lat, sizeof(*g.lat), cmp_u32);
	double sum = 0;
	for (size_t i = 0; i < g.n_lat; i++)
		sum += g.lat[i];
	printf("{\"requests\":%zu,\"sent\":%llu,\"errors\":%llu,\"rps\":%.1f,\"p50_us\":%.0f,\"p90_us\":%.0f,"
	       "\"p99_us\":%.0f,\"p999_us\":%.0f,\"max_us\":%.0f,\"mean_us\":%.1f,"
	       "\"conns\":%d,\"rate\":%.0f,\"close\":%s",
	       g.n_lat, (unsigned long long)g.sent_total, (unsigned long long)g.errors, g.n_lat / secs, pct(0.5), pct(0.9), pct(0.99),
	       pct(0.999), g.n_lat ? (double)g.lat[g.n_lat - 1] : 0.0,
	       g.n_lat ? sum / (double)g.n_lat : 0.0, g.conns, g.rate, g.close_mode ? "true" : "false");
	if (g.split_ns) {
		print_half("even", &g.half[0]);
		print_half("odd", &g.half[1]);
	}
	if (g.two) {
		print_half("a", &g.target[0]);
		print_half("b", &g.target[1]);
	}
	if (g.hist_out) {
		FILE *f = fopen(g.hist_out, "w");
		struct samples all = { g.lat, g.n_lat, g.cap_lat };

		if (!f)
			die(g.hist_out);
		if (!g.split_ns && !g.two)
			write_hist(f, "all", &all);
		if (g.split_ns) {
			write_hist(f, "even", &g.half[0]);
			write_hist(f, "odd", &g.half[1]);
		}
		if (g.two) {
			write_hist(f, "a", &g.target[0]);
			write_hist(f, "b", &g.target[1]);
		}
		if (fclose(f))
			die(g.hist_out);
	}
	if (g.split_ns && g.windows_out) {
		FILE *f = fopen(g.windows_out, "w");

		if (!f)
			die(g.windows_out);
		write_windows(f);
		if (fclose(f))
			die(g.windows_out);
	}
	if (g.trace_out) {
		FILE *f = fopen(g.trace_out, "w");

		if (!f)
			die(g.trace_out);
		for (size_t i = 0; i < g.n_ts; i++)
			fprintf(f, "%llu %u\n", (unsigned long long)g.ts[i].due_us, g.ts[i].us);
		if (fclose(f))
			die(g.trace_out);
	}
	printf("}\n");
	for (int i = 0; i < g.conns; i++)
		conn_close(&cs[i]);
	return 0;
}
