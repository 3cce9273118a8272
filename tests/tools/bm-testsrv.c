/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bm-testsrv: the backend the sandbox tests and benchmarks talk to.
 *
 *   --id STRING       identity reported to clients (default: hostname)
 *   --port P          TCP banner port (repeatable): on accept send "ID\n",
 *                     then echo whatever the client sends until EOF
 *   --http-port P     HTTP/1.1 port (repeatable): every request gets a 200 with
 *                     header x-backend-id: ID and a body of --body-bytes bytes
 *                     that starts with ID; keep-alive unless the request says
 *                     "Connection: close"
 *   --body-bytes N    HTTP body size (default 1024)
 *   --bind ADDR       listen address (default 0.0.0.0)
 *   --ports A-B       banner ports A..B (at most 256 in all), each answering
 *                     "ID:PORT\n", so a client can tell them apart
 *
 * One thread, one epoll loop, non-blocking sockets, edge-triggered reads: a
 * single core serves thousands of connections and a wrk run. SIGTERM/SIGINT
 * end the loop cleanly (signalfd).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LISTEN   256
#define RBUF_SIZE    8192
#define MAX_EVENTS   256

enum conn_kind { K_LISTEN_BANNER, K_LISTEN_HTTP, K_SIGNAL, K_BANNER, K_HTTP };

struct conn {
	enum conn_kind kind;
	int fd;
	bool closing;          /* close once the pending output is flushed */
	bool want_out;         /* EPOLLOUT armed */
	const char *out;       /* pending output: static response or rbuf */
	char *banner;          /* a listener's own banner (--ports), else NULL */
	size_t banner_len;
	size_t out_len;
	size_t rlen;           /* bytes buffered in rbuf (HTTP parsing / echo) */
	char rbuf[RBUF_SIZE];
};

static struct {
	const char *id;
	size_t body_bytes;
	int epfd;
	char *resp_keepalive, *resp_close, *banner;
	size_t resp_keepalive_len, resp_close_len, banner_len;
	unsigned long accepted, requests;
} srv = { .body_bytes = 1024 };

static void die(const char *what)
{
	fprintf(stderr, "bm-testsrv: %s: %s\n", what, strerror(errno));
	exit(1);
}

static char *build_response(bool close_conn, size_t *len)
{
	size_t hdr_max = 256 + strlen(srv.id);
	size_t id_len = strlen(srv.id);
	char *r = malloc(hdr_max + srv.body_bytes);
	int n;

	if (!r)
		die("malloc");
	n = snprintf(r, hdr_max,
		     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
		     "Content-Length: %zu\r\nx-backend-id: %s\r\nConnection: %s\r\n\r\n",
		     srv.body_bytes, srv.id, close_conn ? "close" : "keep-alive");
	/* Body: the ID, then filler, ending with a newline when there is room. */
	for (size_t i = 0; i < srv.body_bytes; i++)
		r[n + i] = i < id_len ? srv.id[i] : (i + 1 == srv.body_bytes ? '\n' : 'x');
	*len = n + srv.body_bytes;
	return r;
}

static void set_events(struct conn *c, bool out)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET | (out ? EPOLLOUT : 0),
				  .data.ptr = c };

	if (c->want_out == out)
		return;
	c->want_out = out;
	if (epoll_ctl(srv.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die("epoll_ctl mod");
}

static void conn_close(struct conn *c)
{
	close(c->fd); /* also removes it from the epoll set */
	free(c);
}

/* Returns 1 when all pending output is written, 0 when it would block, -1 on error. */
static int flush_out(struct conn *c)
{
	while (c->out_len) {
		ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -1;
		}
		c->out += n;
		c->out_len -= n;
	}
	return 1;
}

static bool header_says_close(const char *hdrs, size_t len)
{
	/* Looks for a "Connection: close" header line, case-insensitively. */
	for (size_t i = 0; i + 17 <= len; i++) {
		if ((i == 0 || hdrs[i - 1] == '\n') && !strncasecmp(hdrs + i, "connection:", 11)) {
			size_t j = i + 11;

			while (j < len && (hdrs[j] == ' ' || hdrs[j] == '\t'))
				j++;
			if (j + 5 <= len && !strncasecmp(hdrs + j, "close", 5))
				return true;
		}
	}
	return false;
}

static size_t content_length(const char *hdrs, size_t len)
{
	for (size_t i = 0; i + 15 <= len; i++)
		if ((i == 0 || hdrs[i - 1] == '\n') && !strncasecmp(hdrs + i, "content-length:", 15))
			return strtoul(hdrs + i + 15, NULL, 10);
	return 0;
}

/*
 * Answers every complete request in rbuf. Pipelined requests are answered one
 * at a time: the next is parsed only after the previous response is flushed.
 * Returns -1 to close the connection.
 */
static int http_progress(struct conn *c)
{
	for (;;) {
		int f = flush_out(c);

		if (f < 0)
			return -1;
		if (f == 0) {
			set_events(c, true);
			return 0;
		}
		if (c->closing)
			return -1;
		char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);

		if (!end) {
			if (c->rlen == sizeof(c->rbuf))
				return -1; /* headers larger than we serve */
			set_events(c, false);
			return 0;
		}
		size_t hlen = end + 4 - c->rbuf;
		size_t blen = content_length(c->rbuf, hlen);

		if (hlen + blen > c->rlen) {
			if (hlen + blen > sizeof(c->rbuf))
				return -1;
			set_events(c, false);
			return 0;
		}
		bool close_conn = header_says_close(c->rbuf, hlen) ||
				  !memmem(c->rbuf, hlen < 64 ? hlen : 64, "HTTP/1.1", 8);

		memmove(c->rbuf, c->rbuf + hlen + blen, c->rlen - hlen - blen);
		c->rlen -= hlen + blen;
		srv.requests++;
		if (close_conn) {
			c->out = srv.resp_close;
			c->out_len = srv.resp_close_len;
			c->closing = true;
		} else {
			c->out = srv.resp_keepalive;
			c->out_len = srv.resp_keepalive_len;
		}
	}
}

static void on_http(struct conn *c, uint32_t events)
{
	bool eof = false;

	if (events & EPOLLERR)
		goto close;
	for (;;) {
		bool full = false;

		for (;;) {
			if (c->rlen == sizeof(c->rbuf)) {
				full = true;
				break;
			}
			ssize_t n = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);

			if (n > 0) {
				c->rlen += n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0 || errno != EAGAIN)
				eof = true;
			break;
		}
		if (http_progress(c) < 0 || (eof && !c->out_len))
			goto close;
		/* Edge-triggered: with a full buffer no new edge comes; go on reading
		 * once answering made room, unless output is still pending. */
		if (!full || c->out_len || c->rlen == sizeof(c->rbuf))
			return;
	}
close:
	conn_close(c);
}

/* Echo: read what is there, write it back; stop reading while output is pending. */
static void on_banner(struct conn *c, uint32_t events)
{
	if (events & EPOLLERR)
		goto close;
	for (;;) {
		int f = flush_out(c);

		if (f < 0)
			goto close;
		if (f == 0) {
			set_events(c, true);
			return;
		}
		if (c->closing)
			goto close;
		ssize_t n = recv(c->fd, c->rbuf, sizeof(c->rbuf), 0);

		if (n > 0) {
			c->out = c->rbuf;
			c->out_len = n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			set_events(c, false);
			return;
		}
		goto close; /* EOF or error */
	}
close:
	conn_close(c);
}

static void on_accept(struct conn *l)
{
	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
				fprintf(stderr, "bm-testsrv: accept: %s\n", strerror(errno));
			return; /* EAGAIN, or out of fds: retry on the next event */
		}
		struct conn *c = calloc(1, sizeof(*c));
		int one = 1;

		if (!c) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		c->kind = l->kind == K_LISTEN_BANNER ? K_BANNER : K_HTTP;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c };

		if (epoll_ctl(srv.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		srv.accepted++;
		if (c->kind == K_BANNER) {
			c->out = l->banner ? l->banner : srv.banner;
			c->out_len = l->banner ? l->banner_len : srv.banner_len;
			on_banner(c, EPOLLIN);
		}
	}
}

static struct conn *add_listener(const char *bind_addr, int port, enum conn_kind kind)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;
	int fd;

	if (!c)
		die("calloc");
	if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "bm-testsrv: bad --bind address %s\n", bind_addr);
		exit(2);
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "bm-testsrv: bind %s:%d: %s\n", bind_addr, port, strerror(errno));
		exit(1);
	}
	if (listen(fd, 4096) < 0)
		die("listen");
	c->fd = fd;
	c->kind = kind;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

	if (epoll_ctl(srv.epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl add listener");
	return c;
}

static int parse_port(const char *s)
{
	char *end;
	long p = strtol(s, &end, 10);

	if (*end || p < 1 || p > 65535) {
		fprintf(stderr, "bm-testsrv: bad port '%s'\n", s);
		exit(2);
	}
	return (int)p;
}

static void usage(void)
{
	fprintf(stderr, "usage: bm-testsrv [--id ID] [--port P]... [--http-port P]... "
			"[--ports A-B] [--body-bytes N] [--bind ADDR]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int ports[MAX_LISTEN], http_ports[MAX_LISTEN];
	int n_ports = 0, n_http = 0, r_lo = 0, r_hi = -1;
	const char *bind_addr = "0.0.0.0";
	static char host[256];
	struct rlimit rl;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (i + 1 >= argc)
			usage();
		if (!strcmp(a, "--id"))
			srv.id = argv[++i];
		else if (!strcmp(a, "--port") && n_ports < MAX_LISTEN)
			ports[n_ports++] = parse_port(argv[++i]);
		else if (!strcmp(a, "--http-port") && n_http < MAX_LISTEN)
			http_ports[n_http++] = parse_port(argv[++i]);
		else if (!strcmp(a, "--body-bytes"))
			srv.body_bytes = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(a, "--bind"))
			bind_addr = argv[++i];
		else if (!strcmp(a, "--ports") && sscanf(argv[++i], "%d-%d", &r_lo, &r_hi) == 2 &&
			 r_lo > 0 && r_hi >= r_lo && r_hi < 65536 && r_hi - r_lo < MAX_LISTEN)
			;
		else
			usage();
	}
	if (!n_ports && !n_http && r_hi < r_lo)
		usage();
	if (!srv.id) {
		gethostname(host, sizeof(host) - 1);
		srv.id = host;
	}
	if (strlen(srv.id) > 128) {
		fprintf(stderr, "bm-testsrv: --id longer than 128 bytes\n");
		return 2;
	}
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	srv.resp_keepalive = build_response(false, &srv.resp_keepalive_len);
	srv.resp_close = build_response(true, &srv.resp_close_len);
	srv.banner_len = strlen(srv.id) + 1;
	srv.banner = malloc(srv.banner_len + 1);
	if (!srv.banner)
		die("malloc");
	snprintf(srv.banner, srv.banner_len + 1, "%s\n", srv.id);

	srv.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv.epfd < 0)
		die("epoll_create1");
	for (int i = 0; i < n_ports; i++)
		add_listener(bind_addr, ports[i], K_LISTEN_BANNER);
	for (int i = 0; i < n_http; i++)
		add_listener(bind_addr, http_ports[i], K_LISTEN_HTTP);
	for (int p = r_lo; p <= r_hi; p++) {
		struct conn *l = add_listener(bind_addr, p, K_LISTEN_BANNER);

		l->banner_len = strlen(srv.id) + 7;
		l->banner = malloc(l->banner_len + 1);
		if (!l->banner)
			die("malloc");
		l->banner_len = (size_t)snprintf(l->banner, l->banner_len + 1, "%s:%d\n", srv.id, p);
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	struct conn sigc = { .kind = K_SIGNAL };

	sigc.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigc.fd < 0)
		die("signalfd");
	struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &sigc };

	if (epoll_ctl(srv.epfd, EPOLL_CTL_ADD, sigc.fd, &sev) < 0)
		die("epoll_ctl signalfd");

	fprintf(stderr, "bm-testsrv: id=%s serving\n", srv.id);
	for (;;) {
		struct epoll_event evs[MAX_EVENTS];
		int n = epoll_wait(srv.epfd, evs, MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			switch (c->kind) {
			case K_SIGNAL:
				fprintf(stderr, "bm-testsrv: id=%s exiting: %lu connections, %lu http requests\n",
					srv.id, srv.accepted, srv.requests);
				return 0;
			case K_LISTEN_BANNER:
			case K_LISTEN_HTTP:
				on_accept(c);
				break;
			case K_BANNER:
				on_banner(c, evs[i].events);
				break;
			case K_HTTP:
				on_http(c, evs[i].events);
				break;
			}
		}
	}
}
