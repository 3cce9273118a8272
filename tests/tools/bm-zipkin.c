/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-zipkin: a tiny Zipkin v2 collector for the tracing tests.
 *
 *   bm-zipkin --listen IP:PORT [--out FILE]
 *
 * Accepts POST /api/v2/spans (Content-Type application/json, a JSON array
 * of spans, Content-Length or chunked) and appends each span as one compact
 * JSON line to FILE (default stdout), then answers 202 as Zipkin does.
 * A body that is not a JSON array gets 400, other paths 404, other methods
 * 405. Keep-alive connections are served by a thread each, so one client
 * holding its connection open does not stall another. SIGTERM/SIGINT exit.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX (16 * 1024)
#define BODY_MAX (16 * 1024 * 1024)

static FILE *out;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

struct conn {
	int fd;
	char buf[HEAD_MAX];
	size_t len;
};

/* Read more into the buffer: 0, or -1 on EOF, error or a full buffer. */
static int fill(struct conn *c)
{
	ssize_t r;

	if (c->len == sizeof(c->buf))
		return -1;
	do
		r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return -1;
	c->len += (size_t)r;
	return 0;
}

static void consume(struct conn *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

/* Take exactly n body bytes into dst (from the buffer, then the socket). */
static int take(struct conn *c, char *dst, size_t n)
{
	size_t have = c->len < n ? c->len : n;

	memcpy(dst, c->buf, have);
	consume(c, have);
	while (have < n) {
		ssize_t r = read(c->fd, dst + have, n - have);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		have += (size_t)r;
	}
	return 0;
}

/* One line (up to CRLF) from the buffer into line. */
static int get_line(struct conn *c, char *line, size_t cap)
{
	char *nl;

	while (!(nl = memchr(c->buf, '\n', c->len)))
		if (fill(c))
			return -1;
	size_t n = (size_t)(nl - c->buf) + 1;

	if (n >= cap)
		return -1;
	memcpy(line, c->buf, n);
	line[n] = 0;
	consume(c, n);
	line[strcspn(line, "\r\n")] = 0;
	return 0;
}

static void reply(int fd, int status, const char *reason, int close_after)
{
	char r[256];
	int n = snprintf(r, sizeof(r), "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n%s\r\n", status, reason,
			 close_after ? "Connection: close\r\n" : "");

	(void)!write(fd, r, (size_t)n);
}

static char *read_chunked(struct conn *c, size_t *len)
{
	char line[128], *body = NULL;
	size_t n = 0;

	for (;;) {
		unsigned long sz;
		char *tmp;

		if (get_line(c, line, sizeof(line)))
			goto err;
		sz = strtoul(line, NULL, 16);
		if (!sz)
			break;
		if (n + sz > BODY_MAX || !(tmp = realloc(body, n + sz + 1)))
			goto err;
		body = tmp;
		if (take(c, body + n, sz) || get_line(c, line, sizeof(line)))
			goto err;
		n += sz;
	}
	while (!get_line(c, line, sizeof(line)) && line[0]) /* trailers */
		;
	if (!body && !(body = malloc(1)))
		return NULL;
	body[n] = 0;
	*len = n;
	return body;
err:
	free(body);
	return NULL;
}

/* Write each element of the array as one line. Returns 0 or -1 (not an array). */
static int store(const char *body, size_t len)
{
	json_error_t je;
	json_t *a = json_loadb(body, len, 0, &je), *v;
	size_t i;

	if (!json_is_array(a)) {
		json_decref(a);
		return -1;
	}
	pthread_mutex_lock(&out_lock);
	json_array_foreach(a, i, v) {
		char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);

		if (s) {
			fprintf(out, "%s\n", s);
			free(s);
		}
	}
	fflush(out);
	pthread_mutex_unlock(&out_lock);
	json_decref(a);
	return 0;
}

static void *serve(void *arg)
{
	struct conn *c = arg;
	char line[HEAD_MAX];

	for (;;) {
		char method[16] = "", path[1024] = "";
		long clen = -1;
		int chunked = 0, close_after = 0;
		char *body = NULL;
		size_t blen = 0;

		if (get_line(c, line, sizeof(line)) ||
		    sscanf(line, "%15s %1023s", method, path) != 2)
			break;
		while (!get_line(c, line, sizeof(line)) && line[0]) {
			char *colon = strchr(line, ':'), *v;

			if (!colon)
				continue;
			*colon = 0;
			for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
				;
			if (!strcasecmp(line, "content-length"))
				clen = strtol(v, NULL, 10);
			else if (!strcasecmp(line, "transfer-encoding") && strcasestr(v, "chunked"))
				chunked = 1;
			else if (!strcasecmp(line, "connection") && strcasestr(v, "close"))
				close_after = 1;
		}
		if (chunked) {
			body = read_chunked(c, &blen);
			if (!body)
				break;
		} else if (clen > 0) {
			if (clen > BODY_MAX || !(body = malloc((size_t)clen + 1)) ||
			    take(c, body, (size_t)clen)) {
				free(body);
				break;
			}
			blen = (size_t)clen;
		}
		if (strcmp(path, "/api/v2/spans"))
			reply(c->fd, 404, "Not Found", close_after);
		else if (strcmp(method, "POST"))
			reply(c->fd, 405, "Method Not Allowed", close_after);
		else if (store(body ? body : "", blen))
			reply(c->fd, 400, "Bad Request", close_after);
		else
			reply(c->fd, 202, "Accepted", close_after);
		free(body);
		if (close_after)
			break;
	}
	close(c->fd);
	free(c);
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bm-zipkin --listen IP:PORT [--out FILE]\n");
}

int main(int argc, char **argv)
{
	const char *listen_at = NULL, *path = NULL;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	unsigned port;
	int lfd;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--listen") && i + 1 < argc)
			listen_at = argv[++i];
		else if (!strcmp(argv[i], "--out") && i + 1 < argc)
			path = argv[++i];
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!listen_at || sscanf(listen_at, "%63[^:]:%u", host, &port) != 2 || port > 65535 ||
	    inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		usage(stderr);
		return 2;
	}
	sa.sin_port = htons((uint16_t)port);
	out = path ? fopen(path, "a") : stdout;
	if (!out) {
		fprintf(stderr, "bm-zipkin: %s: %s\n", path, strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 64)) {
		fprintf(stderr, "bm-zipkin: listen %s: %s\n", listen_at, strerror(errno));
		return 1;
	}
	fprintf(stderr, "bm-zipkin: listening on %s\n", listen_at);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		struct conn *c;
		pthread_t th;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		if (pthread_create(&th, NULL, serve, c)) {
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(th);
	}
}
