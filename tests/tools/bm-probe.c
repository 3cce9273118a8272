/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-probe: the client side of the sandbox tests. Talks to bm-testsrv banner
 * ports and reports what the connections saw as one JSON object.
 *
 *   --connect HOST:PORT  target; HOST resolved with getaddrinfo (IPv4)
 *   -n N                 connections to make (default 1)
 *   --concurrency C      connections in progress at once (default 1: sequential)
 *   --rate R --duration S  instead of -n: R new connections per second for S
 *                        seconds (R*S connections, at most 1,000,000)
 *   --send BYTES         after the banner, send BYTES and read the echo back
 *   --hold               keep the N connections open; print a JSON line once all
 *                        are open, then on SIGUSR1 or after --hold-seconds
 *                        (default 30) check each with a send/echo round trip,
 *                        print the final JSON and exit
 *   --timeout-ms MS      per-step timeout (default 5000)
 *
 * For every connection: connect (non-blocking; the cgroup connect4 hook runs
 * in connect() all the same), check that getpeername() equals the address the
 * app connected to (the mesh must show the VIP, not the backend), read the
 * "ID\n" banner. Output:
 *   {"ok":N,"failed":F,"errors":{"ECONNREFUSED":n},"by_id":{"v1":n},
 *    "peer_mismatch":m,"alive":A,"bytes_sent":B,"bytes_recv":B,
 *    "connect_p50_us":..,"connect_p99_us":..,   connect() to established
 *    "conn_p50_us":..,"conn_p99_us":..}         connect to banner (and echo) read
 * Exit status 0 when every connection succeeded (and, with --hold, survived).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ID_MAX      128
#define MAX_IDS     512
#define MAX_ERRS    32
#define HOLD_PING   16      /* bytes of the liveness round trip in --hold */

enum state { S_CONNECTING, S_BANNER, S_SEND, S_ECHO, S_HELD, S_DONE };

struct conn {
	int fd;
	enum state state;
	bool verifying;         /* --hold liveness check in progress */
	uint64_t start_ns, deadline_ns;
	size_t id_len;
	size_t to_send, sent, to_recv, recvd;
	char id[ID_MAX + 1];
};

static struct {
	struct sockaddr_in dst;
	long n;
	int concurrency;
	double rate, duration;
	size_t send_bytes;
	bool hold;
	double hold_seconds;
	int timeout_ms;
	int epfd;
	/* results */
	long ok, failed, peer_mismatch, alive, verify_failed;
	uint64_t bytes_sent, bytes_recv;
	struct { char name[ID_MAX + 1]; long n; } ids[MAX_IDS];
	int n_ids;
	struct { const char *name; long n; } errs[MAX_ERRS];
	int n_errs;
	uint32_t *lat_us;       /* connect latency per successful connection */
	long n_lat;
	uint32_t *total_us;     /* connect + banner (+ echo) per successful connection */
	long n_total;
} p = { .n = 1, .concurrency = 1, .timeout_ms = 5000, .hold_seconds = 30 };

static volatile sig_atomic_t got_usr1;
static char payload[65536];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static const char *errno_name(int e)
{
	switch (e) {
	case ECONNREFUSED: return "ECONNREFUSED";
	case ECONNRESET: return "ECONNRESET";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case ENETUNREACH: return "ENETUNREACH";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
	case EPIPE: return "EPIPE";
	case EMFILE: return "EMFILE";
	case ENOBUFS: return "ENOBUFS";
	case EINVAL: return "EINVAL";
	case EAGAIN: return "EAGAIN";
	case ENOENT: return "ENOENT";
	default: return "EOTHER";
	}
}

static void count_error(const char *name)
{
	for (int i = 0; i < p.n_errs; i++)
		if (!strcmp(p.errs[i].name, name)) {
			p.errs[i].n++;
			return;
		}
	if (p.n_errs < MAX_ERRS) {
		p.errs[p.n_errs].name = name;
		p.errs[p.n_errs++].n = 1;
	}
}

static void count_id(const char *id)
{
	for (int i = 0; i < p.n_ids; i++)
		if (!strcmp(p.ids[i].name, id)) {
			p.ids[i].n++;
			return;
		}
	if (p.n_ids < MAX_IDS) {
		snprintf(p.ids[p.n_ids].name, sizeof(p.ids[0].name), "%s", id);
		p.ids[p.n_ids++].n = 1;
	} else {
		count_error("TOO_MANY_IDS");
	}
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = *s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t percentile(uint32_t *v, long n, int pct)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(v[0]), cmp_u32);
	return v[(n - 1) * pct / 100];
}

static void print_json(const char *phase)
{
	uint32_t p50 = percentile(p.lat_us, p.n_lat, 50), p99 = percentile(p.lat_us, p.n_lat, 99);
	uint32_t t50 = percentile(p.total_us, p.n_total, 50), t99 = percentile(p.total_us, p.n_total, 99);

	printf("{\"phase\":\"%s\",\"ok\":%ld,\"failed\":%ld,\"errors\":{", phase, p.ok, p.failed);
	for (int i = 0; i < p.n_errs; i++)
		printf("%s\"%s\":%ld", i ? "," : "", p.errs[i].name, p.errs[i].n);
	printf("},\"by_id\":{");
	for (int i = 0; i < p.n_ids; i++) {
		printf("%s", i ? "," : "");
		json_str(stdout, p.ids[i].name);
		printf(":%ld", p.ids[i].n);
	}
	printf("},\"peer_mismatch\":%ld,\"alive\":%ld,\"bytes_sent\":%llu,\"bytes_recv\":%llu,"
	       "\"connect_p50_us\":%u,\"connect_p99_us\":%u,\"conn_p50_us\":%u,\"conn_p99_us\":%u}\n",
	       p.peer_mismatch, p.alive, (unsigned long long)p.bytes_sent,
	       (unsigned long long)p.bytes_recv, p50, p99, t50, t99);
	fflush(stdout);
}

static void arm(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	epoll_ctl(p.epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* A connection failed: count it once (as a failed connection, or as a dead
 * held connection during --hold verification) and release it. */
static void conn_fail(struct conn *c, const char *err)
{
	count_error(err);
	if (c->verifying)
		p.verify_failed++;
	else
		p.failed++;
	close(c->fd);
	c->fd = -1;
	c->state = S_DONE;
}

static void conn_finish(struct conn *c)
{
	if (c->verifying) {
		p.alive++;
		close(c->fd);
		c->fd = -1;
		c->state = S_DONE;
		return;
	}
	p.ok++;
	count_id(c->id);
	if (p.n_total < p.n)
		p.total_us[p.n_total++] = (now_ns() - c->start_ns) / 1000;
	if (p.hold) {
		c->state = S_HELD;
		arm(c, EPOLLRDHUP); /* notice a reset while held, without reading */
		return;
	}
	close(c->fd);
	c->fd = -1;
	c->state = S_DONE;
}

static void start_send(struct conn *c, size_t bytes)
{
	c->to_send = bytes;
	c->sent = 0;
	c->to_recv = bytes;
	c->recvd = 0;
	c->state = S_SEND;
	c->deadline_ns = now_ns() + (uint64_t)p.timeout_ms * 1000000ull;
	arm(c, EPOLLOUT);
}

static void conn_step(struct conn *c)
{
	for (;;) {
		switch (c->state) {
		case S_CONNECTING: {
			int err = 0;
			socklen_t len = sizeof(err);
			struct sockaddr_in peer;
			socklen_t plen = sizeof(peer);

			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
			if (err) {
				conn_fail(c, errno_name(err));
				return;
			}
			if (getpeername(c->fd, (struct sockaddr *)&peer, &plen) < 0) {
				if (errno == ENOTCONN || errno == EINPROGRESS)
					return; /* spurious wakeup */
				conn_fail(c, errno_name(errno));
				return;
			}
			if (peer.sin_addr.s_addr != p.dst.sin_addr.s_addr || peer.sin_port != p.dst.sin_port)
				p.peer_mismatch++;
			if (p.n_lat < p.n)
				p.lat_us[p.n_lat++] = (now_ns() - c->start_ns) / 1000;
			c->state = S_BANNER;
			arm(c, EPOLLIN);
			continue;
		}
		case S_BANNER: {
			char ch;
			ssize_t r;

			/* One byte at a time: never consume echo data past the newline. */
			while ((r = recv(c->fd, &ch, 1, 0)) == 1) {
				p.bytes_recv++;
				if (ch == '\n')
					break;
				if (c->id_len < ID_MAX)
					c->id[c->id_len++] = ch;
			}
			if (r == 1) {
				c->id[c->id_len] = 0;
				if (p.send_bytes) {
					start_send(c, p.send_bytes);
					continue;
				}
				conn_finish(c);
				return;
			}
			if (r == 0)
				conn_fail(c, "EOF_BEFORE_BANNER");
			else if (errno != EAGAIN && errno != EINTR)
				conn_fail(c, errno_name(errno));
			return;
		}
		case S_SEND:
			while (c->sent < c->to_send) {
				size_t chunk = c->to_send - c->sent;
				ssize_t w;

				if (chunk > sizeof(payload))
					chunk = sizeof(payload);
				w = send(c->fd, payload, chunk, MSG_NOSIGNAL);
				if (w < 0) {
					if (errno == EAGAIN || errno == EINTR)
						return;
					conn_fail(c, errno_name(errno));
					return;
				}
				c->sent += w;
				p.bytes_sent += w;
			}
			c->state = S_ECHO;
			arm(c, EPOLLIN);
			continue;
		case S_ECHO: {
			char buf[65536];

			while (c->recvd < c->to_recv) {
				size_t want = c->to_recv - c->recvd;
				ssize_t r = recv(c->fd, buf, want < sizeof(buf) ? want : sizeof(buf), 0);

				if (r > 0) {
					c->recvd += r;
					p.bytes_recv += r;
					continue;
				}
				if (r == 0) {
					conn_fail(c, "EOF_BEFORE_ECHO");
					return;
				}
				if (errno == EAGAIN || errno == EINTR)
					return;
				conn_fail(c, errno_name(errno));
				return;
			}
			conn_finish(c);
			return;
		}
		case S_HELD:
			/* RDHUP/ERR while held: the connection died; verification will
			 * find out and count it. Stop polling it to avoid a busy loop. */
			epoll_ctl(p.epfd, EPOLL_CTL_DEL, c->fd, NULL);
			return;
		case S_DONE:
			return;
		}
	}
}

static struct conn *conn_open(struct conn *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->start_ns = now_ns();
	c->deadline_ns = c->start_ns + (uint64_t)p.timeout_ms * 1000000ull;
	if (fd < 0) {
		c->state = S_CONNECTING;
		conn_fail(c, errno_name(errno));
		return c;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->state = S_CONNECTING;
	if (connect(fd, (struct sockaddr *)&p.dst, sizeof(p.dst)) < 0 && errno != EINPROGRESS) {
		conn_fail(c, errno_name(errno));
		return c;
	}
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };

	if (epoll_ctl(p.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		conn_fail(c, errno_name(errno));
		return c;
	}
	return c;
}

static bool in_progress(const struct conn *c)
{
	return c->state != S_DONE && c->state != S_HELD;
}

/* Expire connections (or verifications) past their deadline. */
static void expire(struct conn *conns, long n)
{
	uint64_t t = now_ns();

	for (long i = 0; i < n; i++)
		if (in_progress(&conns[i]) && conns[i].deadline_ns <= t)
			conn_fail(&conns[i], "ETIMEDOUT");
}

static int wait_events(int timeout_ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(p.epfd, evs, 256, timeout_ms);

	for (int i = 0; i < n; i++)
		conn_step(evs[i].data.ptr);
	return n;
}

static void on_usr1(int sig)
{
	got_usr1 = 1;
}

static void parse_target(const char *arg)
{
	char host[256];
	const char *colon = strrchr(arg, ':');
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
	int rc;

	if (!colon || colon == arg || (size_t)(colon - arg) >= sizeof(host)) {
		fprintf(stderr, "bm-probe: --connect wants HOST:PORT\n");
		exit(2);
	}
	memcpy(host, arg, colon - arg);
	host[colon - arg] = 0;
	rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc) {
		fprintf(stderr, "bm-probe: cannot resolve %s: %s\n", arg, gai_strerror(rc));
		printf("{\"ok\":0,\"failed\":0,\"errors\":{\"ERESOLVE\":1},\"by_id\":{},"
		       "\"peer_mismatch\":0,\"alive\":0,\"bytes_sent\":0,\"bytes_recv\":0}\n");
		exit(1);
	}
	memcpy(&p.dst, res->ai_addr, sizeof(p.dst));
	freeaddrinfo(res);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bm-probe --connect HOST:PORT [-n N] [--concurrency C]\n"
		"                [--rate R --duration S] [--send BYTES]\n"
		"                [--hold [--hold-seconds S]] [--timeout-ms MS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *target = NULL;
	struct rlimit rl;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--hold")) {
			p.hold = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];

		if (!strcmp(a, "--connect"))
			target = v;
		else if (!strcmp(a, "-n"))
			p.n = atol(v);
		else if (!strcmp(a, "--concurrency"))
			p.concurrency = atoi(v);
		else if (!strcmp(a, "--rate"))
			p.rate = atof(v);
		else if (!strcmp(a, "--duration"))
			p.duration = atof(v);
		else if (!strcmp(a, "--send"))
			p.send_bytes = strtoul(v, NULL, 10);
		else if (!strcmp(a, "--hold-seconds"))
			p.hold_seconds = atof(v);
		else if (!strcmp(a, "--timeout-ms"))
			p.timeout_ms = atoi(v);
		else
			usage();
	}
	if (!target || p.concurrency < 1 || p.timeout_ms < 1)
		usage();
	if (p.rate > 0) {
		if (p.duration <= 0 || p.hold)
			usage();
		p.n = (long)(p.rate * p.duration + 0.5);
	}
	if (p.n < 1 || p.n > 1000000) {
		fprintf(stderr, "bm-probe: connection count must be 1..1000000\n");
		return 2;
	}
	parse_target(target);
	memset(payload, 'p', sizeof(payload));
	signal(SIGPIPE, SIG_IGN);
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	struct sigaction sa = { .sa_handler = on_usr1 };
	sigaction(SIGUSR1, &sa, NULL);

	struct conn *conns = calloc(p.n, sizeof(*conns));

	p.lat_us = calloc(p.n, sizeof(*p.lat_us));
	p.total_us = calloc(p.n, sizeof(*p.total_us));
	p.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!conns || !p.lat_us || !p.total_us || p.epfd < 0) {
		perror("bm-probe: setup");
		return 1;
	}

	/* Phase 1: open the connections (by count and concurrency, or by rate). */
	uint64_t t0 = now_ns();
	long launched = 0, done_scan = 0;

	for (;;) {
		long inflight = 0;

		while (done_scan < launched && !in_progress(&conns[done_scan]))
			done_scan++;
		for (long i = done_scan; i < launched; i++)
			inflight += in_progress(&conns[i]);
		if (launched == p.n && !inflight)
			break;

		int wait_ms = 50;

		if (p.rate > 0) {
			/* Steady rate: connection i starts at t0 + i/rate. */
			uint64_t t = now_ns();

			while (launched < p.n &&
			       t >= t0 + (uint64_t)(launched * 1e9 / p.rate)) {
				conn_open(&conns[launched++]);
			}
			if (launched < p.n) {
				uint64_t next = t0 + (uint64_t)(launched * 1e9 / p.rate);
				wait_ms = next > t ? (int)((next - t) / 1000000) : 0;
			}
		} else {
			while (launched < p.n && inflight < p.concurrency) {
				if (in_progress(conn_open(&conns[launched++])))
					inflight++;
			}
		}
		wait_events(wait_ms > 50 ? 50 : wait_ms);
		expire(conns + done_scan, launched - done_scan);
	}

	if (!p.hold) {
		p.alive = p.ok;
		print_json("done");
		return p.failed ? 1 : 0;
	}

	/* Phase 2 (--hold): all open; wait for SIGUSR1 or the hold time. */
	print_json("open");
	uint64_t hold_end = now_ns() + (uint64_t)(p.hold_seconds * 1e9);

	while (!got_usr1 && now_ns() < hold_end)
		wait_events(50);

	/* Phase 3: a send/echo round trip on each held connection. */
	long verifying = 0;

	for (long i = 0; i < p.n; i++) {
		struct conn *c = &conns[i];

		if (c->state != S_HELD)
			continue;
		c->verifying = true;
		struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };

		/* It may have been removed from the set after a hangup. */
		if (epoll_ctl(p.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
			epoll_ctl(p.epfd, EPOLL_CTL_ADD, c->fd, &ev);
		start_send(c, p.send_bytes ? p.send_bytes : HOLD_PING);
		verifying++;
	}
	while (verifying) {
		verifying = 0;
		wait_events(50);
		expire(conns, p.n);
		for (long i = 0; i < p.n; i++)
			verifying += in_progress(&conns[i]);
	}
	print_json("final");
	return (p.failed || p.alive != p.ok) ? 1 : 0;
}
