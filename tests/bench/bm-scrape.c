/*
 * bm-scrape: the scrape workload's stand-in for a Prometheus on another host
 * (tests/bench/l7.sh). It fetches every URL once per second, but only in the
 * PERIOD-second windows of CLOCK_MONOTONIC whose number is PARITY modulo 2,
 * at 0.25 s, 1.25 s, ... into each of those windows, for SECS seconds:
 *
 *   bm-scrape OUT SECS PERIOD PARITY GZIP URL...
 *
 * URL is http://IPv4:PORT/path. GZIP 1 sends Accept-Encoding: gzip, as
 * Prometheus does; the body is counted, never decompressed (a remote
 * Prometheus does that on its own host). One connection per fetch (the
 * server answers Connection: close), each fetch bounded to 0.9 s. Appends
 * "host code bytes seconds start" per fetch to OUT (code 000 and 0 bytes
 * when the fetch failed; start in CLOCK_MONOTONIC seconds, the clock bm-load
 * splits its requests by).
 *
 * In C rather than a script because its CPU is not the scraped node's cost,
 * yet on one machine it shares the CPUs with the load it measures: a fetch
 * costs it a socket, a few system calls and one line of output.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#define FETCH_BOUND 0.9          /* seconds per fetch, connect to last byte */
#define HEAD_KEEP   4096         /* response bytes kept to find the status and headers' end */
#define MAX_URLS    16

struct target {
	char host[64];
	struct sockaddr_in sa;
	char request[512];
	size_t request_len;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The first moment at or after now that is k + 0.25 s (k whole) into a
 * window of the given parity. */
static double next_scrape(double now, double period, int parity)
{
	long w = (long)floor(now / period);

	for (;; w++) {
		if (((w % 2) + 2) % 2 != parity)
			continue;
		for (double k = 0.25; k < period; k += 1.0)
			if (w * period + k >= now)
				return w * period + k;
	}
}

static void sleep_until(double t)
{
	struct timespec ts = { .tv_sec = (time_t)t,
			       .tv_nsec = (long)((t - floor(t)) * 1e9) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int parse_url(const char *url, int gzip, struct target *t)
{
	const char *h = url, *colon, *slash;
	char port[8];
	int n;

	if (strncmp(h, "http://", 7))
		return -1;
	h += 7;
	colon = strchr(h, ':');
	slash = strchr(h, '/');
	if (!colon || !slash || colon > slash || (size_t)(colon - h) >= sizeof(t->host) ||
	    (size_t)(slash - colon - 1) >= sizeof(port) || slash == colon + 1)
		return -1;
	memcpy(t->host, h, (size_t)(colon - h));
	t->host[colon - h] = 0;
	memcpy(port, colon + 1, (size_t)(slash - colon - 1));
	port[slash - colon - 1] = 0;
	t->sa.sin_family = AF_INET;
	t->sa.sin_port = htons((uint16_t)atoi(port));
	if (inet_pton(AF_INET, t->host, &t->sa.sin_addr) != 1 || !t->sa.sin_port)
		return -1;
	n = snprintf(t->request, sizeof(t->request),
		     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/plain\r\n%s"
		     "Connection: close\r\n\r\n",
		     slash, t->host, port, gzip ? "Accept-Encoding: gzip\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(t->request))
		return -1;
	t->request_len = (size_t)n;
	return 0;
}

/* Waits for events on fd until the deadline; 1 when ready, 0 otherwise. */
static int wait_fd(int fd, short events, double deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	double left = deadline - now_s();

	if (left <= 0)
		return 0;
	return poll(&p, 1, (int)ceil(left * 1e3)) == 1;
}

/* One fetch: the status code (or "000") and the body's bytes. */
static void fetch(const struct target *t, char code[4], long *body)
{
	static char buf[262144];
	char head[HEAD_KEEP + 1];
	size_t head_len = 0, sent = 0;
	long total = 0;
	double deadline = now_s() + FETCH_BOUND;
	int fd, err = 0;
	socklen_t len = sizeof(err);
	char *eoh;

	strcpy(code, "000");
	*body = 0;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (connect(fd, (const struct sockaddr *)&t->sa, sizeof(t->sa)) && errno != EINPROGRESS)
		goto out;
	if (!wait_fd(fd, POLLOUT, deadline) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) ||
	    err)
		goto out;
	while (sent < t->request_len) {
		ssize_t w = send(fd, t->request + sent, t->request_len - sent, MSG_NOSIGNAL);

		if (w < 0 && errno == EAGAIN && wait_fd(fd, POLLOUT, deadline))
			continue;
		if (w <= 0)
			goto out;
		sent += (size_t)w;
	}
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), 0);

		if (r < 0 && errno == EAGAIN && wait_fd(fd, POLLIN, deadline))
			continue;
		if (r < 0)
			goto out;
		if (r == 0)
			break;
		if (head_len < HEAD_KEEP) {
			size_t k = (size_t)r < HEAD_KEEP - head_len ? (size_t)r : HEAD_KEEP - head_len;

			memcpy(head + head_len, buf, k);
			head_len += k;
		}
		total += r;
	}
	head[head_len] = 0;
	eoh = strstr(head, "\r\n\r\n");
	if (eoh && !strncmp(head, "HTTP/1.", 7) && head_len > 12 && head[8] == ' ') {
		memcpy(code, head + 9, 3);
		code[3] = 0;
		*body = total - (long)(eoh + 4 - head);
	}
out:
	close(fd);
}

int main(int argc, char **argv)
{
	struct target t[MAX_URLS];
	double secs, period, end;
	int parity, gzip, n = argc - 6;
	FILE *out;

	if (argc < 7 || n > MAX_URLS) {
		fprintf(stderr, "usage: bm-scrape OUT SECS PERIOD PARITY GZIP URL... (at most %d URLs)\n",
			MAX_URLS);
		return 2;
	}
	secs = atof(argv[2]);
	period = atof(argv[3]);
	parity = atoi(argv[4]);
	gzip = atoi(argv[5]);
	if (secs <= 0 || period < 1 || (parity != 0 && parity != 1) || (gzip != 0 && gzip != 1)) {
		fprintf(stderr, "bm-scrape: SECS > 0, PERIOD >= 1, PARITY and GZIP 0 or 1\n");
		return 2;
	}
	for (int i = 0; i < n; i++)
		if (parse_url(argv[6 + i], gzip, &t[i])) {
			fprintf(stderr, "bm-scrape: %s: not http://IPv4:PORT/path\n", argv[6 + i]);
			return 2;
		}
	out = fopen(argv[1], "a");
	if (!out) {
		fprintf(stderr, "bm-scrape: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	end = now_s() + secs;
	for (;;) {
		double at = next_scrape(now_s(), period, parity);

		if (at >= end)
			break;
		sleep_until(at);
		for (int i = 0; i < n; i++) {
			double start = now_s();
			char code[4];
			long body;

			fetch(&t[i], code, &body);
			fprintf(out, "%s %s %ld %.6f %.6f\n", t[i].host, code, body, now_s() - start,
				start);
			fflush(out);
		}
	}
	return fclose(out) ? 1 : 0;
}
