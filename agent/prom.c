/*
 * Prometheus plumbing, independent of what is exported: the text format
 * 0.0.4 writer and the /metrics HTTP endpoint (see prom.h).
 *
 * The endpoint is one thread with one listening socket, one request per
 * connection (Connection: close), a bounded request read (REQ_MAX bytes in
 * REQ_TIMEOUT_MS) and a deadline for the whole exchange, so a slow or silent
 * client delays the next scrape by seconds at most and never wedges it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <zlib.h>
#include "prom.h"

#define REQ_MAX          4096    /* request line + headers we accept */
#define REQ_TIMEOUT_MS   2000    /* to send the request */
#define BM_PROM_NICE     19      /* the endpoint thread's nice value */
#define BM_PROM_SEND_PIECE (16 * 1024) /* bytes per send() of a response */
#define CONN_TIMEOUT_MS  10000   /* whole exchange, response included */
/* zlib level of a gzip response: the fastest. An exposition repeats long
 * label sets on every bucket, so even 1 makes it about 20 times smaller
 * (the l7 benchmark's node 1: 126 KB of text, 5.5 KB on the wire). */
#define GZIP_LEVEL       1

static const char *const type_names[] = {
	[BM_PROM_COUNTER] = "counter",
	[BM_PROM_GAUGE] = "gauge",
	[BM_PROM_HISTOGRAM] = "histogram",
	[BM_PROM_UNTYPED] = "untyped",
};

void bm_prom_init(struct bm_prom *p, FILE *f)
{
	memset(p, 0, sizeof(*p));
	p->f = f;
}

static int fail(struct bm_prom *p, int err)
{
	if (!p->err)
		p->err = err;
	return err;
}

static int valid_name(const char *s, int colon_ok)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || (colon_ok && *s == ':')))
			return 0;
	return 1;
}

/* Writes v with the characters in esc replaced by their escapes, in runs
 * (fwrite per run, not fputc per character: an exposition is mostly label
 * values, and the render runs while the agent lock is held). */
static void write_escaped(FILE *f, const char *v, const char *esc)
{
	const char *c = v ? v : "";

	for (;;) {
		size_t run = strcspn(c, esc);

		if (run)
			fwrite(c, 1, run, f);
		c += run;
		if (!*c)
			return;
		fputs(*c == '\\' ? "\\\\" : *c == '"' ? "\\\"" : "\\n", f);
		c++;
	}
}

void bm_prom_write_help(FILE *f, const char *help)
{
	write_escaped(f, help, "\\\n");
}

void bm_prom_write_label_value(FILE *f, const char *v)
{
	write_escaped(f, v, "\\\"\n");
}

void bm_prom_write_value(FILE *f, double v)
{
	if (isnan(v))
		fputs("NaN", f);
	else if (isinf(v))
		fputs(v > 0 ? "+Inf" : "-Inf", f);
	else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53: exact */
		fprintf(f, "%.0f", v);
	else
		fprintf(f, "%.17g", v);
}

int bm_prom_family(struct bm_prom *p, const char *name, enum bm_prom_type type, const char *help)
{
	if (!valid_name(name, 1) || (unsigned)type > BM_PROM_UNTYPED)
		return fail(p, -EINVAL);
	for (size_t i = 0; i < p->n_declared; i++)
		if (!strcmp(p->declared[i], name))
			return fail(p, -EEXIST);
	if (p->n_declared == BM_PROM_MAX_FAMILIES)
		return fail(p, -ENOSPC);
	p->declared[p->n_declared++] = name;
	p->family = name;
	p->type = type;
	fprintf(p->f, "# HELP %s ", name);
	bm_prom_write_help(p->f, help);
	fprintf(p->f, "\n# TYPE %s %s\n", name, type_names[type]);
	return 0;
}

static void write_u64(FILE *f, uint64_t v)
{
	char buf[24];
	size_t i = sizeof(buf);

	do
		buf[--i] = (char)('0' + v % 10);
	while (v /= 10);
	fwrite(buf + i, 1, sizeof(buf) - i, f);
}

/* Is name a sample name of the open family? */
static int in_family(const struct bm_prom *p, const char *name)
{
	size_t n;

	if (!p->family)
		return 0;
	if (!strcmp(name, p->family))
		return p->type != BM_PROM_HISTOGRAM;
	n = strlen(p->family);
	if (p->type != BM_PROM_HISTOGRAM || strncmp(name, p->family, n))
		return 0;
	return !strcmp(name + n, "_bucket") || !strcmp(name + n, "_sum") ||
	       !strcmp(name + n, "_count");
}

static int sample_head(struct bm_prom *p, const char *name, const struct bm_prom_label *l,
		       size_t n)
{
	if (!in_family(p, name))
		return fail(p, -EINVAL);
	for (size_t i = 0; i < n; i++)
		if (!valid_name(l[i].name, 0) || !strncmp(l[i].name, "__", 2))
			return fail(p, -EINVAL);
	fputs(name, p->f);
	if (n) {
		fputc('{', p->f);
		for (size_t i = 0; i < n; i++) {
			if (i)
				fputc(',', p->f);
			fputs(l[i].name, p->f);
			fputs("=\"", p->f);
			bm_prom_write_label_value(p->f, l[i].value);
			fputc('"', p->f);
		}
		fputc('}', p->f);
	}
	fputc(' ', p->f);
	return 0;
}

int bm_prom_sample_u64(struct bm_prom *p, const char *name, const struct bm_prom_label *l,
		       size_t n, uint64_t value)
{
	int err = sample_head(p, name, l, n);

	if (err)
		return err;
	write_u64(p->f, value);
	fputc('\n', p->f);
	return 0;
}

int bm_prom_sample(struct bm_prom *p, const char *name, const struct bm_prom_label *l,
		   size_t n, double value)
{
	int err = sample_head(p, name, l, n);

	if (err)
		return err;
	bm_prom_write_value(p->f, value);
	fputc('\n', p->f);
	return 0;
}

int bm_prom_labelset_init(struct bm_prom_labelset *ls, const struct bm_prom_label *l, size_t n)
{
	FILE *f;

	memset(ls, 0, sizeof(*ls));
	for (size_t i = 0; i < n; i++)
		if (!valid_name(l[i].name, 0) || !strncmp(l[i].name, "__", 2))
			return -EINVAL;
	f = open_memstream(&ls->text, &ls->len);
	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (i)
			fputc(',', f);
		fputs(l[i].name, f);
		fputs("=\"", f);
		bm_prom_write_label_value(f, l[i].value);
		fputc('"', f);
	}
	if (fclose(f) || !ls->text) {
		free(ls->text);
		memset(ls, 0, sizeof(*ls));
		return -ENOMEM;
	}
	return 0;
}

void bm_prom_labelset_free(struct bm_prom_labelset *ls)
{
	free(ls->text);
	memset(ls, 0, sizeof(*ls));
}

int bm_prom_sample_set_u64(struct bm_prom *p, const char *name, const struct bm_prom_labelset *ls,
			   const struct bm_prom_label *extra, uint64_t value)
{
	if (!in_family(p, name) || !ls->text ||
	    (extra && (!valid_name(extra->name, 0) || !strncmp(extra->name, "__", 2))))
		return fail(p, -EINVAL);
	fputs(name, p->f);
	if (ls->len || extra) {
		fputc('{', p->f);
		fwrite(ls->text, 1, ls->len, p->f);
		if (extra) {
			if (ls->len)
				fputc(',', p->f);
			fputs(extra->name, p->f);
			fputs("=\"", p->f);
			bm_prom_write_label_value(p->f, extra->value);
			fputc('"', p->f);
		}
		fputc('}', p->f);
	}
	fputc(' ', p->f);
	write_u64(p->f, value);
	fputc('\n', p->f);
	return 0;
}

int bm_prom_finish(struct bm_prom *p)
{
	if (fflush(p->f) || ferror(p->f))
		fail(p, -EIO);
	return p->err;
}

/* ------------------------------------------------------------ HTTP endpoint */

struct bm_prom_server {
	int fd;
	pthread_t thread;
	atomic_int stop;
	int (*render)(void *arg, FILE *f);
	void *arg;
	const char *path;            /* the one path served */
	const char *content_type;    /* of a 200 */
	z_stream z;                  /* gzip state, kept between responses */
	int z_ready;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int send_all(int fd, const char *buf, size_t len, uint64_t deadline)
{
	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		uint64_t now = now_ms();
		ssize_t w;

		if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0)
			return -ETIMEDOUT;
		/* In pieces: a send runs the receiver's softirq work in our
		 * context, and the kernel does not preempt it, so one send of a
		 * whole 120 KB exposition would keep a waking proxy worker off
		 * this CPU until it returns; between pieces it gets the CPU. */
		w = send(fd, buf, len < BM_PROM_SEND_PIECE ? len : BM_PROM_SEND_PIECE,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (w <= 0)
			return -EIO;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

static void reply(int fd, const char *status, const char *ctype, const char *extra,
		  const char *body, size_t len, int head_only, uint64_t deadline)
{
	char hdr[512];
	int n = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
			 "Connection: close\r\n\r\n", status, ctype, len, extra ? extra : "");

	if (send_all(fd, hdr, (size_t)n, deadline) == 0 && !head_only && len)
		send_all(fd, body, len, deadline);
}

/* Reads until the end of the headers, REQ_MAX bytes, or the deadline. */
static ssize_t read_request(int fd, char *buf, size_t cap, uint64_t deadline)
{
	size_t len = 0;

	while (len < cap - 1) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t now = now_ms();
		ssize_t r;

		if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0)
			return -1;
		r = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r <= 0)
			return -1;
		len += (size_t)r;
		buf[len] = 0;
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			return (ssize_t)len;
	}
	return -1;
}

/* The q of one list element's parameters (";q=0.5"): 1 when absent, -1
 * when malformed. p points just past the coding's name. */
static double coding_q(const char *p, const char *end)
{
	while (p < end) {
		char num[8];
		size_t n;
		char *stop;
		double q;

		while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
			p++;
		if (end - p < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=') {
			/* another parameter: skip it */
			while (p < end && *p != ';')
				p++;
			continue;
		}
		p += 2;
		n = strcspn(p, " \t;,\r\n");
		if (n == 0 || n >= sizeof(num) || p + n > end)
			return -1;
		memcpy(num, p, n);
		num[n] = 0;
		q = strtod(num, &stop);
		if (*stop || q < 0 || q > 1)
			return -1;
		return q;
	}
	return 1;
}

int bm_http_accepts_gzip(const char *req)
{
	static const char name[] = "accept-encoding";
	double gzip_q = -1, star_q = -1;
	const char *line = strchr(req, '\n');

	/* Every Accept-Encoding line of the header block (a field may be
	 * split over several lines; RFC 9110 joins them with commas). */
	while (line && line[1] && line[1] != '\r' && line[1] != '\n') {
		const char *v = line + 1, *eol = v + strcspn(v, "\r\n");

		line = *eol ? strchr(eol, '\n') : NULL;
		if (strncasecmp(v, name, sizeof(name) - 1) || v[sizeof(name) - 1] != ':')
			continue;
		v += sizeof(name);
		while (v < eol) {
			const char *elt_end = v + strcspn(v, ",\r\n"), *c;
			size_t n;
			double q;

			if (elt_end > eol)
				elt_end = eol;
			while (v < elt_end && (*v == ' ' || *v == '\t'))
				v++;
			c = v;
			n = strcspn(c, " \t;,\r\n");
			q = coding_q(c + n, elt_end);
			if (q >= 0 && ((n == 4 && !strncasecmp(c, "gzip", 4)) ||
				       (n == 6 && !strncasecmp(c, "x-gzip", 6))))
				gzip_q = q;
			else if (q >= 0 && n == 1 && *c == '*')
				star_q = q;
			v = elt_end + (elt_end < eol);
		}
	}
	/* An explicit gzip wins over "*", and q=0 means "not this". */
	return gzip_q >= 0 ? gzip_q > 0 : star_q > 0;
}

/* in -> a gzip member in *out (malloc'd). Reuses the server's zlib state
 * (some 260 KB) instead of allocating and faulting it in on every scrape. */
static int gzip_body(struct bm_prom_server *srv, const char *in, size_t len, char **out,
		     size_t *out_len)
{
	z_stream *z = &srv->z;
	uLong cap;
	int rc;

	if (len > UINT_MAX)
		return -E2BIG;
	if (!srv->z_ready) {
		memset(z, 0, sizeof(*z));
		/* windowBits 15 + 16: a gzip header and trailer, not zlib's */
		if (deflateInit2(z, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		srv->z_ready = 1;
	} else if (deflateReset(z) != Z_OK) {
		return -EIO;
	}
	cap = deflateBound(z, (uLong)len);
	*out = malloc(cap);
	if (!*out)
		return -ENOMEM;
	z->next_in = (Bytef *)(uintptr_t)in;
	z->avail_in = (uInt)len;
	z->next_out = (Bytef *)*out;
	z->avail_out = (uInt)cap;
	rc = deflate(z, Z_FINISH);
	if (rc != Z_STREAM_END) {
		free(*out);
		*out = NULL;
		return -EIO;
	}
	*out_len = cap - z->avail_out;
	return 0;
}

static void serve_one(struct bm_prom_server *srv, int fd)
{
	static const char text[] = "text/plain; charset=utf-8";
	uint64_t deadline = now_ms() + CONN_TIMEOUT_MS;
	char buf[REQ_MAX], method[16], target[1024], version[16];
	char *body = NULL;
	size_t len = 0;
	FILE *f;
	int head, err;

	if (read_request(fd, buf, sizeof(buf), now_ms() + REQ_TIMEOUT_MS) < 0 ||
	    sscanf(buf, "%15s %1023s %15s", method, target, version) != 3 ||
	    strncmp(version, "HTTP/1.", 7)) {
		reply(fd, "400 Bad Request", text, NULL, "bad request\n", 12, 0, deadline);
		return;
	}
	target[strcspn(target, "?#")] = 0;
	if (strcmp(target, srv->path)) {
		char msg[256];
		int n = snprintf(msg, sizeof(msg), "not found: this endpoint serves %s\n", srv->path);

		reply(fd, "404 Not Found", text, NULL, msg, (size_t)n, 0, deadline);
		return;
	}
	head = !strcmp(method, "HEAD");
	if (!head && strcmp(method, "GET")) {
		reply(fd, "405 Method Not Allowed", text, "Allow: GET, HEAD\r\n",
		      "method not allowed\n", 19, 0, deadline);
		return;
	}
	/* Render into memory first: a 200 with a length, or a clean 500. */
	f = open_memstream(&body, &len);
	if (!f) {
		reply(fd, "500 Internal Server Error", text, NULL, "out of memory\n", 14, 0, deadline);
		return;
	}
	err = srv->render(srv->arg, f);
	if (fclose(f) && !err)
		err = -ENOMEM;
	if (err == -EAGAIN) {
		/* Not ready: the body says why. */
		reply(fd, "503 Service Unavailable", text, NULL, body, len, head, deadline);
	} else if (err) {
		reply(fd, "500 Internal Server Error", text, NULL, "render failed\n", 14, 0, deadline);
	} else {
		char *gz = NULL;
		size_t gz_len = 0;

		/* Compressed when the client says it takes gzip (Prometheus
		 * does): a twentieth of the bytes for the kernel to carry. A
		 * HEAD gets the length its GET would. */
		if (bm_http_accepts_gzip(buf) && !gzip_body(srv, body, len, &gz, &gz_len))
			reply(fd, "200 OK", srv->content_type,
			      "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n", gz, gz_len, head,
			      deadline);
		else
			reply(fd, "200 OK", srv->content_type, "Vary: Accept-Encoding\r\n", body, len,
			      head, deadline);
		free(gz);
	}
	free(body);
}

static void *server_thread(void *arg)
{
	struct bm_prom_server *srv = arg;

	/* Scrapes and probes must not take a CPU from the data path: at the
	 * lowest priority, a proxy worker that wakes runs before this thread.
	 * Not SCHED_IDLE: under a fully busy node a scrape still finishes
	 * (weight 15 of 1024 is tens of ms for a render), and a reload waiting
	 * for the agent lock this thread holds is not starved. */
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), BM_PROM_NICE))
		fprintf(stderr, "meshd: metrics thread: setpriority: %s\n", strerror(errno));
	while (!atomic_load(&srv->stop)) {
		int fd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (atomic_load(&srv->stop))
				break;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				usleep(100 * 1000); /* out of fds: back off, don't spin */
			continue;
		}
		serve_one(srv, fd);
		close(fd);
	}
	return NULL;
}

/* "IP:PORT" or "[IPv6]:PORT" -> a bound, listening socket. */
static int listen_on(const char *addr)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
	char host[128];
	const char *colon = strrchr(addr, ':'), *h = host;
	struct addrinfo *ai;
	int fd, one = 1, err;

	if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host) || !colon[1])
		return -EINVAL;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = 0;
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		host[strlen(host) - 1] = 0;
		h = host + 1;
	}
	if (getaddrinfo(h, colon + 1, &hints, &ai))
		return -EINVAL;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 64)) {
		err = -errno;
		close(fd);
		goto out;
	}
	err = fd;
out:
	freeaddrinfo(ai);
	return err;
}

int bm_prom_serve(const char *addr, int (*render)(void *arg, FILE *f), void *arg,
		  struct bm_prom_server **out)
{
	return bm_http_serve(addr, "/metrics", "text/plain; version=0.0.4; charset=utf-8", render,
			     arg, out);
}

int bm_http_serve(const char *addr, const char *path, const char *content_type,
		  int (*render)(void *arg, FILE *f), void *arg, struct bm_prom_server **out)
{
	struct bm_prom_server *srv = calloc(1, sizeof(*srv));
	sigset_t all, old;
	int err;

	*out = NULL;
	if (!srv)
		return -ENOMEM;
	srv->fd = listen_on(addr);
	if (srv->fd < 0) {
		err = srv->fd;
		goto err_free;
	}
	srv->render = render;
	srv->arg = arg;
	srv->path = path;
	srv->content_type = content_type;
	/* The thread must never take the signals the caller's signalfd reads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&srv->thread, NULL, server_thread, srv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		goto err_close;
	*out = srv;
	return 0;
err_close:
	close(srv->fd);
err_free:
	free(srv);
	return err;
}

int bm_prom_server_port(const struct bm_prom_server *srv)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(srv->fd, (struct sockaddr *)&ss, &len))
		return -errno;
	return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);
}

void bm_prom_server_stop(struct bm_prom_server *srv)
{
	if (!srv)
		return;
	atomic_store(&srv->stop, 1);
	shutdown(srv->fd, SHUT_RDWR);   /* wakes accept() */
	pthread_join(srv->thread, NULL);
	close(srv->fd);
	if (srv->z_ready)
		deflateEnd(&srv->z);
	free(srv);
}
