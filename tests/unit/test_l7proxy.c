/* The HTTP/1.1 engine (agent/l7proxy.c, l7upstream.c) over loopback: the
 * engine's loop runs in a thread with a listener that hands connections to
 * it; upstreams are small blocking servers on 127.0.0.1 that answer with
 * their id, a configured status, a delay, a reset, or echo the body; the
 * configuration is built by hand. Every socket has a receive timeout and
 * the whole suite an alarm, so nothing hangs. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include "unit.h"
#include "tcpinfo.h"
#include "../../agent/l7proxy.h"
#include "../../agent/l7upstream.h"
#include "../../agent/proxy.h"
#include "bpfmesh/abi.h"

/* ---- upstream servers ------------------------------------------------------ */

/* M_TRAILERS: chunked with a trailer; M_UPGRADE: 101 then echo bytes;
 * M_GRPC (HTTP/2 only): gRPC-shaped answers, the first fail_first with
 * grpc-status fail_status as trailers-only responses. */
enum { M_OK, M_RESET, M_ECHO, M_TRAILERS, M_UPGRADE, M_GRPC };

struct usrv {
	int lfd;
	uint16_t port;             /* host order */
	char id[8];
	int mode;
	int status;                /* M_OK status */
	int fail_first, fail_status; /* the first fail_first requests get fail_status */
	int delay_ms, delay_first; /* delay every request (delay_first: only the first) */
	int conns, reqs;           /* atomics */
	int h2_conns;              /* connections that spoke HTTP/2 (atomic) */
	char last_head[4096];
	pthread_mutex_t mu;
	pthread_t th;
	int stop;
};

#define MAX_SRV 4
static struct usrv srv[MAX_SRV];
static int live_conn_threads;

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Buffered blocking reader. */
struct rd {
	int fd;
	char b[65536];
	size_t off, len;
};

static int rd_fill(struct rd *r)
{
	ssize_t n;

	if (r->off == r->len)
		r->off = r->len = 0;
	if (r->len == sizeof(r->b)) {
		memmove(r->b, r->b + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	n = recv(r->fd, r->b + r->len, sizeof(r->b) - r->len, 0);
	if (n <= 0)
		return -1;
	r->len += (size_t)n;
	return 0;
}

/* A line without CRLF into out; -1 on EOF. */
static int rd_line(struct rd *r, char *out, size_t cap)
{
	for (;;) {
		char *nl = memchr(r->b + r->off, '\n', r->len - r->off);

		if (nl) {
			size_t n = (size_t)(nl - (r->b + r->off));
			size_t k = n && nl[-1] == '\r' ? n - 1 : n;

			if (k >= cap)
				k = cap - 1;
			memcpy(out, r->b + r->off, k);
			out[k] = 0;
			r->off += n + 1;
			return 0;
		}
		if (rd_fill(r))
			return -1;
	}
}

static int rd_bytes(struct rd *r, char *out, size_t n)
{
	while (n) {
		size_t k;

		if (r->off == r->len && rd_fill(r))
			return -1;
		k = r->len - r->off < n ? r->len - r->off : n;
		if (out) {
			memcpy(out, r->b + r->off, k);
			out += k;
		}
		r->off += k;
		n -= k;
	}
	return 0;
}

/* Head lines into head (joined), then the body (content-length or chunked)
 * into *body (malloc'ed). Returns 0, -1 on EOF/error. */
static int read_msg(struct rd *r, char *first, size_t fcap, char *head, size_t hcap, char **body,
		    size_t *blen, int until_close_ok)
{
	char line[8192];
	long long cl = -1;
	int chunked = 0, close_delim = 0;
	size_t hn = 0;

	*body = NULL;
	*blen = 0;
	if (rd_line(r, first, fcap))
		return -1;
	head[0] = 0;
	for (;;) {
		if (rd_line(r, line, sizeof(line)))
			return -1;
		if (!line[0])
			break;
		if (hn + strlen(line) + 2 < hcap) {
			strcpy(head + hn, line);
			hn += strlen(line);
			strcpy(head + hn, "\n");
			hn++;
		}
		if (!strncasecmp(line, "content-length:", 15))
			cl = atoll(line + 15);
		if (!strncasecmp(line, "transfer-encoding:", 18) && strstr(line, "chunked"))
			chunked = 1;
	}
	if (until_close_ok && cl < 0 && !chunked && !strncmp(first, "HTTP/", 5)) {
		int st = atoi(first + 9);

		close_delim = !(st == 204 || st == 304 || st / 100 == 1);
	}
	if (chunked) {
		size_t cap = 1 << 16;

		*body = malloc(cap);
		for (;;) {
			size_t n;

			if (rd_line(r, line, sizeof(line)))
				return -1;
			n = strtoul(line, NULL, 16);
			if (!n)
				break;
			while (*blen + n > cap)
				cap *= 2;
			*body = realloc(*body, cap);
			if (rd_bytes(r, *body + *blen, n) || rd_line(r, line, sizeof(line)))
				return -1;
			*blen += n;
		}
		/* trailers: kept with the head lines, marked */
		while (!rd_line(r, line, sizeof(line)) && line[0])
			if (hn + strlen(line) + 12 < hcap)
				hn += (size_t)snprintf(head + hn, hcap - hn, "trailer %s\n", line);
	} else if (cl > 0) {
		*body = malloc((size_t)cl + 1);
		if (rd_bytes(r, *body, (size_t)cl))
			return -1;
		*blen = (size_t)cl;
	} else if (close_delim) {
		size_t cap = 1 << 16;

		*body = malloc(cap);
		for (;;) {
			if (r->off == r->len && rd_fill(r))
				break;
			while (*blen + (r->len - r->off) > cap)
				cap *= 2;
			*body = realloc(*body, cap);
			memcpy(*body + *blen, r->b + r->off, r->len - r->off);
			*blen += r->len - r->off;
			r->off = r->len;
		}
	}
	return 0;
}

static void send_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

static void set_timeout(int fd, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

struct sconn {
	struct usrv *s;
	int fd;
};

static void srv_h2(struct sconn *sc);
static void srv_upgrade(struct sconn *sc, struct rd *r);

static void *srv_conn(void *arg)
{
	struct sconn *sc = arg;
	struct usrv *s = sc->s;
	struct rd *r = calloc(1, sizeof(*r));
	char first[1024], head[4096];

	r->fd = sc->fd;
	set_timeout(sc->fd, 5000);
	{
		char pk[3];

		if (recv(sc->fd, pk, 3, MSG_PEEK) == 3 && !memcmp(pk, "PRI", 3)) {
			__atomic_add_fetch(&s->h2_conns, 1, __ATOMIC_SEQ_CST);
			srv_h2(sc);
			goto out;
		}
	}
	for (;;) {
		char *body, resp[512];
		size_t blen;
		int n, st;

		if (read_msg(r, first, sizeof(first), head, sizeof(head), &body, &blen, 0))
			break;
		n = __atomic_add_fetch(&s->reqs, 1, __ATOMIC_SEQ_CST);
		pthread_mutex_lock(&s->mu);
		snprintf(s->last_head, sizeof(s->last_head), "%.1000s\n%.3000s", first, head);
		pthread_mutex_unlock(&s->mu);
		if (s->delay_ms && (!s->delay_first || n == 1))
			usleep((useconds_t)s->delay_ms * 1000);
		if (s->mode == M_RESET) {
			struct linger lg = { 1, 0 };

			setsockopt(sc->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			free(body);
			break;
		}
		if (s->mode == M_UPGRADE) {
			free(body);
			srv_upgrade(sc, r);
			break;
		}
		if (s->mode == M_TRAILERS) {
			snprintf(resp, sizeof(resp),
				 "HTTP/1.1 200 OK\r\nx-upstream: %s\r\ntransfer-encoding: chunked\r\n\r\n"
				 "%zx\r\n%s\r\n0\r\nx-trailer: %s-t\r\ngrpc-status: 0\r\n\r\n",
				 s->id, strlen(s->id), s->id, s->id);
			send_all(sc->fd, resp, strlen(resp));
			free(body);
			continue;
		}
		if (s->mode == M_ECHO) {
			snprintf(resp, sizeof(resp),
				 "HTTP/1.1 200 OK\r\nx-upstream: %s\r\ntransfer-encoding: chunked\r\n\r\n", s->id);
			send_all(sc->fd, resp, strlen(resp));
			for (size_t off = 0; off < blen; off += 50000) {
				size_t k = blen - off < 50000 ? blen - off : 50000;

				snprintf(resp, sizeof(resp), "%zx\r\n", k);
				send_all(sc->fd, resp, strlen(resp));
				send_all(sc->fd, body + off, k);
				send_all(sc->fd, "\r\n", 2);
			}
			send_all(sc->fd, "0\r\n\r\n", 5);
			free(body);
			continue;
		}
		st = n <= s->fail_first ? s->fail_status : s->status;
		snprintf(resp, sizeof(resp),
			 "HTTP/1.1 %d X\r\nx-upstream: %s\r\ncontent-length: %zu\r\n\r\n%s", st, s->id,
			 strlen(s->id), s->id);
		send_all(sc->fd, resp, strlen(resp));
		free(body);
	}
out:
	close(sc->fd);
	free(r);
	free(sc);
	__atomic_sub_fetch(&live_conn_threads, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *srv_main(void *arg)
{
	struct usrv *s = arg;

	while (!__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST)) {
		struct pollfd pf = { s->lfd, POLLIN, 0 };
		struct sconn *sc;
		pthread_t th;
		int fd;

		if (poll(&pf, 1, 50) <= 0)
			continue;
		fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		__atomic_add_fetch(&s->conns, 1, __ATOMIC_SEQ_CST);
		sc = calloc(1, sizeof(*sc));
		sc->s = s;
		sc->fd = fd;
		__atomic_add_fetch(&live_conn_threads, 1, __ATOMIC_SEQ_CST);
		if (pthread_create(&th, NULL, srv_conn, sc)) {
			__atomic_sub_fetch(&live_conn_threads, 1, __ATOMIC_SEQ_CST);
			close(fd);
			free(sc);
			continue;
		}
		pthread_detach(th);
	}
	return NULL;
}

static int listen_any(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 128) ||
	    getsockname(fd, (struct sockaddr *)&sa, &len)) {
		close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static struct usrv *srv_start(int i, const char *id, int mode, int status)
{
	struct usrv *s = &srv[i];

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->mode = mode;
	s->status = status;
	s->lfd = listen_any(&s->port);
	CU_ASSERT_FATAL(s->lfd >= 0);
	pthread_create(&s->th, NULL, srv_main, s);
	return s;
}

static void srv_stop_all(void)
{
	uint64_t until = ms_now() + 3000;

	for (int i = 0; i < MAX_SRV; i++) {
		if (!srv[i].th)
			continue;
		__atomic_store_n(&srv[i].stop, 1, __ATOMIC_SEQ_CST);
		pthread_join(srv[i].th, NULL);
		close(srv[i].lfd);
		srv[i].th = 0;
	}
	while (__atomic_load_n(&live_conn_threads, __ATOMIC_SEQ_CST) && ms_now() < until)
		usleep(2000);
}

/* ---- the engine in a thread ------------------------------------------------------ */

struct rec {
	uint8_t protocol, downstream_h2;
	int16_t grpc_status;
	uint16_t status;
	char flags[64];
	uint32_t attempts;
	char request_id[40];
	char route_name[160];
};

static struct {
	struct bm_loop l;
	struct bm_wstats st;
	struct bm_l7_engine *e;
	struct bm_ev lev;
	uint16_t port;              /* the engine's listener */
	struct bm_l7_peer peer;
	pthread_t th;
	int stop;
	int connects;
	pthread_mutex_t mu;
	struct rec recs[1024];
	int n_recs;
	int deny_path_admin;        /* inbound stub policy */
} T;

static int t_connect(void *user, const struct bm_l7_backend *b, int *fd)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = b->ip, .sin_port = b->port };
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	__atomic_add_fetch(&T.connects, 1, __ATOMIC_SEQ_CST);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS) {
		int err = -errno;

		close(s);
		return err;
	}
	*fd = s;
	return 0;
}

static void t_complete(void *ctx, const struct bm_l7_record *r)
{
	pthread_mutex_lock(&T.mu);
	if (T.n_recs < 1024) {
		struct rec *x = &T.recs[T.n_recs++];

		x->status = r->status;
		x->protocol = r->protocol;
		x->downstream_h2 = r->downstream_h2;
		x->grpc_status = r->grpc_status;
		snprintf(x->flags, sizeof(x->flags), "%s", r->flags);
		x->attempts = r->attempts;
		snprintf(x->request_id, sizeof(x->request_id), "%s", r->request_id);
		snprintf(x->route_name, sizeof(x->route_name), "%s", r->route_name ? r->route_name : "");
	}
	pthread_mutex_unlock(&T.mu);
}

/* Stub of the per-request policy: /admin is denied, a token "bad" is 401,
 * a valid token's header is stripped. */
static int t_authorize(void *ctx, const struct bm_l7_authz_req *rq, struct bm_l7_authz_res *res)
{
	for (size_t i = 0; i < rq->n_hdr; i++)
		if (!strcmp(rq->hdr[i].name, "authorization")) {
			if (!strcmp(rq->hdr[i].value, "Bearer bad")) {
				snprintf(res->www_authenticate, sizeof(res->www_authenticate),
					 "Bearer realm=\"x\", error=\"invalid_token\"");
				return -EPERM;
			}
			snprintf(res->strip_header[0], sizeof(res->strip_header[0]), "authorization");
			res->n_strip_header = 1;
		}
	if (!strcmp(rq->path, "/admin"))
		return -EACCES;
	return 0;
}

static void t_on_listen(struct bm_ev *ev, uint32_t events)
{
	for (;;) {
		int fd = accept4(ev->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		bm_l7_engine_accept(T.e, fd, &T.peer);
	}
}

static void *engine_main(void *arg)
{
	while (!__atomic_load_n(&T.stop, __ATOMIC_SEQ_CST))
		bm_loop_run_once(&T.l, 20);
	return NULL;
}

static struct bm_outlier *T_outlier;

/* Start the engine with cfg (NULL: inbound mode with the app at app_port). */
static void engine_start(struct bm_l7_config *cfg, int inbound, uint16_t app_port)
{
	struct bm_l7_ops ops = { .connect = t_connect, .complete = t_complete,
				 .authorize = t_authorize };
	struct bm_l7_engine_opts o = { .outlier = T_outlier, .sniff_timeout_ms = 1000 };
	int lfd;

	memset(&T, 0, sizeof(T));
	pthread_mutex_init(&T.mu, NULL);
	CU_ASSERT_EQUAL_FATAL(bm_loop_init(&T.l, &T.st), 0);
	T.e = bm_l7_engine_new(&T.l, &ops, &o);
	CU_ASSERT_PTR_NOT_NULL_FATAL(T.e);
	bm_l7_engine_set_config(T.e, cfg);
	lfd = listen_any(&T.port);
	CU_ASSERT_FATAL(lfd >= 0);
	T.lev.fn = t_on_listen;
	T.lev.fd = lfd;
	CU_ASSERT_EQUAL_FATAL(fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK), 0);
	CU_ASSERT_EQUAL_FATAL(bm_loop_add(&T.l, &T.lev, EPOLLIN), 0);
	T.peer.inbound = (uint8_t)inbound;
	T.peer.vip = inet_addr("10.9.9.9");
	T.peer.port = 80;
	T.peer.pool_key = 7;
	T.peer.l4_dir = BM_PDIR_OUT_LOCAL;
	T.peer.dst_ip = htonl(INADDR_LOOPBACK);
	T.peer.dst_port = app_port;
	snprintf(T.peer.src_ns, sizeof(T.peer.src_ns), "default");
	snprintf(T.peer.src_name, sizeof(T.peer.src_name), "client");
	pthread_create(&T.th, NULL, engine_main, NULL);
}

static void engine_stop(void)
{
	uint64_t t0 = ms_now();

	__atomic_store_n(&T.stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(T.th, NULL);
	bm_loop_del(&T.l, &T.lev);
	close(T.lev.fd);
	bm_l7_engine_free(T.e);
	bm_loop_fini(&T.l);
	srv_stop_all();
	if (getenv("L7_DEBUG"))
		fprintf(stderr, "stop took %llu ms\n", (unsigned long long)(ms_now() - t0));
}

/* ---- configurations built by hand ----------------------------------------------------- */

struct tc {
	struct bm_l7_config cfg;
	struct bm_l7_service svc;
	struct bm_l7_route rt[4];
	struct bm_l7_cluster cl[4];
	struct bm_l7_cluster_rt crt[4];
	struct bm_l7_backend b[4][4];
	struct bm_l7_dest dest[4][2];
	struct bm_l7_match match[4];
	struct bm_l7_kvmatch kv[4];
	struct bm_l7_mirror mirror[2];
};

static struct tc *tc_new(int n_routes)
{
	struct tc *t = calloc(1, sizeof(*t));

	t->cfg.refs = 1000; /* never freed through bm_l7_put: not built by l7model.c */
	t->cfg.svc = &t->svc;
	t->cfg.n_svc = 1;
	t->cfg.cluster = t->cl;
	t->svc.vip = inet_addr("10.9.9.9");
	t->svc.port = 80;
	snprintf(t->svc.host, sizeof(t->svc.host), "svc.default.svc.cluster.local");
	t->svc.route = t->rt;
	t->svc.n_route = (size_t)n_routes;
	for (int i = 0; i < 4; i++) {
		t->rt[i].name = "r";
		bm_retry_default(&t->rt[i].retry);
		t->rt[i].retry.backoff_base_ms = 2;
	}
	return t;
}

/* Cluster i with the given servers as hosts (ids i*4+k+1). */
static struct bm_l7_cluster *tc_cluster(struct tc *t, int i, struct usrv **hosts, int n)
{
	struct bm_l7_cluster *c = &t->cl[i];

	snprintf(c->name, sizeof(c->name), "outbound|80|c%d|svc.default.svc.cluster.local", i);
	snprintf(c->host, sizeof(c->host), "svc.default.svc.cluster.local");
	c->lb = BM_LB_ROUND_ROBIN;
	c->max_connections = c->max_pending = c->max_requests = c->max_retries = BM_L7_UNLIMITED;
	c->idle_timeout_ms = 60000;
	c->connect_timeout_ms = 1000;
	c->rt = &t->crt[i];
	c->b = t->b[i];
	c->n = (uint32_t)n;
	for (int k = 0; k < n; k++) {
		t->b[i][k].ip = htonl(INADDR_LOOPBACK);
		t->b[i][k].port = htons(hosts[k]->port);
		t->b[i][k].id = (uint32_t)(i * 4 + k + 1);
	}
	if ((size_t)i + 1 > t->cfg.n_cluster)
		t->cfg.n_cluster = (size_t)i + 1;
	return c;
}

static void tc_dest(struct tc *t, int route, int d, int cluster, uint32_t weight)
{
	t->dest[route][d].c = &t->cl[cluster];
	t->dest[route][d].weight = weight;
	t->rt[route].dest = t->dest[route];
	t->rt[route].n_dest = (size_t)d + 1;
	t->rt[route].total_weight += weight;
}

/* ---- the client ------------------------------------------------------------------------ */

struct resp {
	int status;
	char head[4096];
	char *body;
	size_t blen;
};

static int dial_engine(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons(T.port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	set_timeout(fd, 5000);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send req on fd (with the reader r) and read one response. */
static int exchange(int fd, struct rd *r, const char *req, size_t len, struct resp *out)
{
	char first[1024];

	memset(out, 0, sizeof(*out));
	send_all(fd, req, len);
	if (read_msg(r, first, sizeof(first), out->head, sizeof(out->head), &out->body, &out->blen, 1))
		return -1;
	out->status = atoi(first + 9);
	return 0;
}

/* One request on a new connection. */
static int request(const char *req, struct resp *out)
{
	struct rd *r = calloc(1, sizeof(*r));
	int fd = dial_engine(), rc;

	r->fd = fd;
	rc = fd < 0 ? -1 : exchange(fd, r, req, strlen(req), out);
	if (fd >= 0)
		close(fd);
	free(r);
	return rc;
}

static int body_is(const struct resp *r, const char *s)
{
	return r->blen == strlen(s) && !memcmp(r->body, s, r->blen);
}

static void resp_free(struct resp *r)
{
	free(r->body);
	r->body = NULL;
}

static const char GET[] = "GET /x HTTP/1.1\r\nHost: svc\r\n\r\n";

/* ---- cases -------------------------------------------------------------------------------- */

static int timer_fired[4];

static void on_t0(struct l7_timer *t) { timer_fired[0]++; }
static void on_t1(struct l7_timer *t) { timer_fired[1]++; }
static void on_t2(struct l7_timer *t) { timer_fired[2]++; }
static void on_t3(struct l7_timer *t) { timer_fired[3]++; }

/* The engine's timerfd is armed at or before the earliest timer and only
 * moved earlier: arming a later timer or cancelling one costs no
 * timerfd_settime (a request arms and cancels its timeout); a stale
 * deadline fires once for nothing and re-arms for what is left. */
static void test_l7_timer_lazy_rearm(void)
{
	struct bm_l7_ops ops = { .connect = t_connect, .complete = t_complete };
	struct bm_l7_engine_opts o = { 0 };
	struct l7_timer t[4];
	struct itimerspec its;
	struct bm_wstats st = { 0 };
	struct bm_loop l;
	struct bm_l7_engine *e;
	uint64_t t0_at, end;

	memset(timer_fired, 0, sizeof(timer_fired));
	CU_ASSERT_EQUAL_FATAL(bm_loop_init(&l, &st), 0);
	e = bm_l7_engine_new(&l, &ops, &o);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	l7_timer_init(&t[0], on_t0);
	l7_timer_init(&t[1], on_t1);
	l7_timer_init(&t[2], on_t2);
	l7_timer_init(&t[3], on_t3);

	l7_timer_arm(e, &t[0], 5000);
	t0_at = t[0].at;
	CU_ASSERT_EQUAL(e->armed_at, t0_at);
	l7_timer_cancel(e, &t[0]);
	CU_ASSERT_EQUAL(e->armed_at, t0_at);          /* left armed: no syscall */
	CU_ASSERT_EQUAL(timerfd_gettime(e->tev.fd, &its), 0);
	CU_ASSERT(its.it_value.tv_sec > 0 || its.it_value.tv_nsec > 0);
	l7_timer_arm(e, &t[1], 10000);
	CU_ASSERT_EQUAL(e->armed_at, t0_at);          /* later: not moved */
	l7_timer_arm(e, &t[2], 100);
	CU_ASSERT_EQUAL(e->armed_at, t[2].at);        /* earlier: moved */
	l7_timer_arm(e, &t[3], 60);
	l7_timer_cancel(e, &t[3]);                     /* its deadline fires for nothing */
	end = l7_now_ms() + 2000;
	while (!timer_fired[2] && l7_now_ms() < end)
		bm_loop_run_once(&l, 50);
	CU_ASSERT_EQUAL(timer_fired[2], 1);
	CU_ASSERT_EQUAL(timer_fired[3], 0);
	CU_ASSERT_EQUAL(timer_fired[1], 0);
	CU_ASSERT_EQUAL(timer_fired[0], 0);
	/* after the fire: armed for what is left (t[1]) */
	CU_ASSERT_EQUAL(e->armed_at, t[1].at);
	l7_timer_cancel(e, &t[1]);
	bm_l7_engine_free(e);
	bm_loop_fini(&l);
}

/* A response that comes from the upstream in one read leaves to the client
 * in one write: head and body in one segment, not two (one wake-up and one
 * syscall less per request). */
static void test_l7_head_body_one_write(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct rd *r = calloc(1, sizeof(*r));
	struct resp out;
	long before, after;
	int fd;

	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 100);
	engine_start(&t->cfg, 0, 0);
	fd = dial_engine();
	CU_ASSERT_FATAL(fd >= 0);
	r->fd = fd;
	for (int i = 0; i < 5; i++) {
		before = t_data_segs_in(fd);
		CU_ASSERT_EQUAL(exchange(fd, r, GET, strlen(GET), &out), 0);
		CU_ASSERT_EQUAL(out.status, 200);
		CU_ASSERT(body_is(&out, "A"));
		resp_free(&out);
		after = t_data_segs_in(fd);
		CU_ASSERT(before >= 0);
		CU_ASSERT_EQUAL(after - before, 1);
	}
	close(fd);
	free(r);
	engine_stop();
	free(t);
}

static void test_l7_header_routing(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200), *b = srv_start(1, "B", M_OK, 200);
	struct tc *t = tc_new(2);
	struct resp r;

	tc_cluster(t, 0, &a, 1);
	tc_cluster(t, 1, &b, 1);
	t->kv[0].name = "x-user";
	t->kv[0].m.kind = BM_SM_EXACT;
	t->kv[0].m.s = "alice";
	t->match[0].headers = &t->kv[0];
	t->match[0].n_headers = 1;
	t->match[0].name = "alice";
	t->rt[0].match = &t->match[0];
	t->rt[0].n_match = 1;
	t->rt[1].name = "fallback";
	tc_dest(t, 0, 0, 0, 100);
	tc_dest(t, 1, 0, 1, 100);
	engine_start(&t->cfg, 0, 0);
	CU_ASSERT_EQUAL(request("GET /x HTTP/1.1\r\nHost: svc\r\nX-User: alice\r\n\r\n", &r), 0);
	CU_ASSERT_EQUAL(r.status, 200);
	CU_ASSERT(body_is(&r, "A"));
	resp_free(&r);
	CU_ASSERT_EQUAL(request(GET, &r), 0);
	CU_ASSERT_EQUAL(r.status, 200);
	CU_ASSERT(body_is(&r, "B"));
	resp_free(&r);
	/* the upstream saw an x-request-id (a UUID v4) and x-forwarded-proto */
	{
		const char *id = strstr(b->last_head, "x-request-id: ");
		int ok = id != NULL;

		for (int i = 0; ok && i < 36; i++) {
			char c = id[14 + i];

			ok = i == 8 || i == 13 || i == 18 || i == 23 ? c == '-' :
			     (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
		}
		CU_ASSERT(ok && id[14 + 14] == '4' && strchr("89ab", id[14 + 19]) &&
			  (id[14 + 36] == '\r' || id[14 + 36] == '\n'));
	}
	CU_ASSERT_PTR_NOT_NULL(strstr(b->last_head, "x-forwarded-proto: http"));
	engine_stop();
	/* route_name: "<http.name>.<match.name>", the route's name alone when
	 * no named match took the request */
	pthread_mutex_lock(&T.mu);
	CU_ASSERT_EQUAL(T.n_recs, 2);
	if (T.n_recs == 2) {
		CU_ASSERT_STRING_EQUAL(T.recs[0].route_name, "r.alice");
		CU_ASSERT_STRING_EQUAL(T.recs[1].route_name, "fallback");
	}
	pthread_mutex_unlock(&T.mu);
	free(t);
}

static void test_l7_weighted(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200), *b = srv_start(1, "B", M_OK, 200);
	struct tc *t = tc_new(1);
	int na = 0, n = 300;
	struct rd *rdr = calloc(1, sizeof(*rdr));
	int fd;

	tc_cluster(t, 0, &a, 1);
	tc_cluster(t, 1, &b, 1);
	tc_dest(t, 0, 0, 0, 75);
	tc_dest(t, 0, 1, 1, 25);
	engine_start(&t->cfg, 0, 0);
	fd = dial_engine();
	rdr->fd = fd;
	for (int i = 0; i < n; i++) {
		struct resp r;

		if (exchange(fd, rdr, GET, strlen(GET), &r)) {
			CU_FAIL("exchange");
			break;
		}
		na += body_is(&r, "A");
		resp_free(&r);
	}
	close(fd);
	free(rdr);
	/* 75 % of 300 = 225; 5 sigma is about 37 */
	CU_ASSERT(na > 185 && na < 265);
	engine_stop();
	free(t);
}

static void test_l7_no_route_direct_redirect(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(2);
	struct resp r;

	tc_cluster(t, 0, &a, 1);
	t->match[0].uri.kind = BM_SM_PREFIX;
	t->match[0].uri.s = "/direct";
	t->rt[0].match = &t->match[0];
	t->rt[0].n_match = 1;
	t->rt[0].direct.status = 418;
	t->rt[0].direct.body = "teapot";
	t->rt[0].direct.body_len = 6;
	t->match[1].uri.kind = BM_SM_PREFIX;
	t->match[1].uri.s = "/only";
	t->rt[1].match = &t->match[1];
	t->rt[1].n_match = 1;
	tc_dest(t, 1, 0, 0, 1);
	engine_start(&t->cfg, 0, 0);
	CU_ASSERT_EQUAL(request("GET /direct/x HTTP/1.1\r\nHost: svc\r\n\r\n", &r), 0);
	CU_ASSERT_EQUAL(r.status, 418);
	CU_ASSERT(body_is(&r, "teapot"));
	resp_free(&r);
	CU_ASSERT_EQUAL(request("GET /other HTTP/1.1\r\nHost: svc\r\n\r\n", &r), 0);
	CU_ASSERT_EQUAL(r.status, 404);
	resp_free(&r);
	CU_ASSERT_EQUAL(request("GET /only HTTP/1.1\r\nHost: svc\r\n\r\n", &r), 0);
	CU_ASSERT_EQUAL(r.status, 200);
	resp_free(&r);
	CU_ASSERT_EQUAL(__atomic_load_n(&a->reqs, __ATOMIC_SEQ_CST), 1);
	engine_stop();
	pthread_mutex_lock(&T.mu);
	CU_ASSERT(T.n_recs == 3);
	if (T.n_recs == 3)
		CU_ASSERT_STRING_EQUAL(T.recs[1].flags, "NR");
	pthread_mutex_unlock(&T.mu);
	free(t);
}

static void retry_case(int user_policy, int expect_status, int expect_reqs)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct resp r;

	a->fail_first = 2;
	a->fail_status = 503;
	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	if (user_policy) {
		t->rt[0].retry.attempts = 3;
		t->rt[0].retry.on = BM_RETRY_5XX;
	}
	engine_start(&t->cfg, 0, 0);
	CU_ASSERT_EQUAL(request(GET, &r), 0);
	CU_ASSERT_EQUAL(r.status, expect_status);
	resp_free(&r);
	CU_ASSERT_EQUAL(__atomic_load_n(&a->reqs, __ATOMIC_SEQ_CST), expect_reqs);
	engine_stop();
	CU_ASSERT_EQUAL(T.n_recs, 1);
	CU_ASSERT_EQUAL(T.recs[0].attempts, (uint32_t)expect_reqs);
	free(t);
}

static void test_l7_retry_5xx(void)
{
	retry_case(1, 200, 3);   /* attempts 3, retryOn 5xx: 503, 503, 200 */
	retry_case(0, 503, 1);   /* Istio's default retries no 503 */
}

static void test_l7_per_try_timeout(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct resp r;
	uint64_t t0;

	a->delay_ms = 600;
	a->delay_first = 1;
	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	t->rt[0].retry.attempts = 2;
	t->rt[0].retry.on = BM_RETRY_5XX;
	t->rt[0].retry.per_try_ms = 100;
	engine_start(&t->cfg, 0, 0);
	t0 = ms_now();
	CU_ASSERT_EQUAL(request(GET, &r), 0);
	CU_ASSERT_EQUAL(r.status, 200);
	CU_ASSERT(ms_now() - t0 < 500);
	resp_free(&r);
	engine_stop();
	CU_ASSERT_EQUAL(T.recs[0].attempts, 2);
	free(t);
}

static void test_l7_route_timeout(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct resp r;
	uint64_t t0, dt;

	a->delay_ms = 1500;
	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	t->rt[0].timeout_ms = 200;
	t->rt[0].retry.on = BM_RETRY_5XX; /* the route timeout is never retried */
	engine_start(&t->cfg, 0, 0);
	t0 = ms_now();
	CU_ASSERT_EQUAL(request(GET, &r), 0);
	dt = ms_now() - t0;
	CU_ASSERT_EQUAL(r.status, 504);
	CU_ASSERT(body_is(&r, "upstream request timeout"));
	CU_ASSERT(dt >= 190 && dt < 800);
	resp_free(&r);
	engine_stop();
	CU_ASSERT_STRING_EQUAL(T.recs[0].flags, "UT");
	CU_ASSERT_EQUAL(T.recs[0].attempts, 1);
	free(t);
}

static void test_l7_fault_abort(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct resp r;

	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	t->rt[0].fault.abort_ppm = 1000000;
	t->rt[0].fault.abort_status = 503;
	t->rt[0].fault.delay_ppm = 1000000;
	t->rt[0].fault.delay_ms = 50;
	engine_start(&t->cfg, 0, 0);
	CU_ASSERT_EQUAL(request(GET, &r), 0);
	CU_ASSERT_EQUAL(r.status, 503);
	CU_ASSERT(body_is(&r, "fault filter abort"));
	resp_free(&r);
	CU_ASSERT_EQUAL(__atomic_load_n(&a->reqs, __ATOMIC_SEQ_CST), 0);
	CU_ASSERT_EQUAL(__atomic_load_n(&T.connects, __ATOMIC_SEQ_CST), 0);
	engine_stop();
	CU_ASSERT_STRING_EQUAL(T.recs[0].flags, "DI,FI");
	free(t);
}

struct par {
	pthread_t th;
	struct resp r;
	int rc;
};

static void *par_req(void *arg)
{
	struct par *p = arg;

	p->rc = request(GET, &p->r);
	return NULL;
}

static void overflow_case(int max_requests, int max_pending_conns, int n)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct bm_l7_cluster *c;
	struct par p[4];
	int ok = 0, over = 0;

	a->delay_ms = 300;
	c = tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	if (max_requests)
		c->max_requests = 1;
	if (max_pending_conns)
		c->max_pending = c->max_connections = 1;
	engine_start(&t->cfg, 0, 0);
	for (int i = 0; i < n; i++)
		pthread_create(&p[i].th, NULL, par_req, &p[i]);
	for (int i = 0; i < n; i++) {
		pthread_join(p[i].th, NULL);
		CU_ASSERT_EQUAL(p[i].rc, 0);
		if (p[i].r.status == 200)
			ok++;
		if (p[i].r.status == 503 && strstr(p[i].r.head, "x-envoy-overloaded: true"))
			over++;
		resp_free(&p[i].r);
	}
	CU_ASSERT(ok >= 1);
	CU_ASSERT(over >= 1);
	CU_ASSERT_EQUAL(ok + over, n);
	engine_stop();
	free(t);
}

static void test_l7_overflow(void)
{
	overflow_case(1, 0, 2);   /* http2MaxRequests 1 */
	overflow_case(0, 1, 3);   /* maxConnections 1 + http1MaxPendingRequests 1 */
}

static void keepalive_case(uint32_t per_conn, int n, int expect_conns)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct bm_l7_cluster *c;

	c = tc_cluster(t, 0, &a, 1);
	c->max_requests_per_conn = per_conn;
	tc_dest(t, 0, 0, 0, 1);
	engine_start(&t->cfg, 0, 0);
	for (int i = 0; i < n; i++) {
		struct resp r;

		CU_ASSERT_EQUAL(request(GET, &r), 0); /* a new downstream each time */
		CU_ASSERT_EQUAL(r.status, 200);
		resp_free(&r);
	}
	CU_ASSERT_EQUAL(__atomic_load_n(&a->reqs, __ATOMIC_SEQ_CST), n);
	CU_ASSERT_EQUAL(__atomic_load_n(&a->conns, __ATOMIC_SEQ_CST), expect_conns);
	engine_stop();
	free(t);
}

static void test_l7_keepalive(void)
{
	keepalive_case(0, 5, 1);
	keepalive_case(1, 5, 5);
}

static void test_l7_chunked_5mb(void)
{
	struct usrv *a = srv_start(0, "E", M_ECHO, 200);
	struct tc *t = tc_new(1);
	size_t total = 5 * 1024 * 1024, piece = 70000;
	char *data = malloc(total), hdr[64];
	struct rd *rdr = calloc(1, sizeof(*rdr));
	struct resp r;
	char first[256];
	int fd;

	for (size_t i = 0; i < total; i++)
		data[i] = (char)(i * 7 + i / 1000);
	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	engine_start(&t->cfg, 0, 0);
	fd = dial_engine();
	set_timeout(fd, 20000); /* 5 MB each way, also under ASan on a busy host */
	rdr->fd = fd;
	{
		const char *h = "POST /up HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n";

		send_all(fd, h, strlen(h));
	}
	/* the echo server answers only after the whole body: send it all
	 * first (the engine streams it, bounded) */
	for (size_t off = 0; off < total; off += piece) {
		size_t k = total - off < piece ? total - off : piece;

		snprintf(hdr, sizeof(hdr), "%zx\r\n", k);
		send_all(fd, hdr, strlen(hdr));
		send_all(fd, data + off, k);
		send_all(fd, "\r\n", 2);
	}
	send_all(fd, "0\r\n\r\n", 5);
	memset(&r, 0, sizeof(r));
	CU_ASSERT_EQUAL(read_msg(rdr, first, sizeof(first), r.head, sizeof(r.head), &r.body, &r.blen, 1), 0);
	CU_ASSERT_EQUAL(atoi(first + 9), 200);
	CU_ASSERT_EQUAL(r.blen, total);
	CU_ASSERT(r.body && r.blen == total && !memcmp(r.body, data, total));
	CU_ASSERT_PTR_NOT_NULL(strstr(r.head, "transfer-encoding: chunked"));
	resp_free(&r);
	close(fd);
	free(rdr);
	free(data);
	engine_stop();
	free(t);
}

static void test_l7_mirror(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200), *m = srv_start(1, "M", M_OK, 200);
	struct usrv *dead = srv_start(2, "D", M_RESET, 200);
	struct tc *t = tc_new(1);
	struct resp r;
	uint64_t until;

	tc_cluster(t, 0, &a, 1);
	tc_cluster(t, 1, &m, 1);
	tc_cluster(t, 2, &dead, 1);
	tc_dest(t, 0, 0, 0, 1);
	t->mirror[0].c = &t->cl[1];
	t->mirror[0].ppm = 1000000;
	t->mirror[1].c = &t->cl[2];
	t->mirror[1].ppm = 1000000;
	t->rt[0].mirror = t->mirror;
	t->rt[0].n_mirror = 2;
	engine_start(&t->cfg, 0, 0);
	CU_ASSERT_EQUAL(request("POST /m HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc", &r), 0);
	CU_ASSERT_EQUAL(r.status, 200);
	CU_ASSERT(body_is(&r, "A"));
	resp_free(&r);
	until = ms_now() + 2000;
	while (__atomic_load_n(&m->reqs, __ATOMIC_SEQ_CST) < 1 && ms_now() < until)
		usleep(5000);
	CU_ASSERT_EQUAL(__atomic_load_n(&m->reqs, __ATOMIC_SEQ_CST), 1);
	pthread_mutex_lock(&m->mu);
	CU_ASSERT_PTR_NOT_NULL(strstr(m->last_head, "POST /m"));
	CU_ASSERT_PTR_NOT_NULL(strstr(m->last_head, "host: svc")); /* no -shadow suffix */
	pthread_mutex_unlock(&m->mu);
	engine_stop();
	free(t);
}

static void test_l7_outlier(void)
{
	struct usrv *bad = srv_start(0, "X", M_OK, 500), *good = srv_start(1, "G", M_OK, 200);
	struct usrv *hosts[2] = { bad, good };
	struct tc *t = tc_new(1);
	struct bm_l7_cluster *c;
	int last_ok = 0;

	T_outlier = bm_outlier_new(64);
	CU_ASSERT_PTR_NOT_NULL_FATAL(T_outlier);
	c = tc_cluster(t, 0, hosts, 2);
	c->od.enabled = 1;
	c->od.consecutive_5xx = 3;
	c->od.interval_ms = 10000;
	c->od.base_ejection_ms = 30000;
	c->od.max_ejection_ms = 300000;
	c->od.max_ejection_pct = 50;
	tc_dest(t, 0, 0, 0, 1);
	engine_start(&t->cfg, 0, 0);
	for (int i = 0; i < 30; i++) {
		struct resp r;

		CU_ASSERT_EQUAL(request(GET, &r), 0);
		if (i >= 20)
			last_ok += r.status == 200 && body_is(&r, "G");
		resp_free(&r);
	}
	CU_ASSERT_EQUAL(last_ok, 10);
	CU_ASSERT(bm_outlier_is_ejected(T_outlier, 1));
	CU_ASSERT(!bm_outlier_is_ejected(T_outlier, 2));
	CU_ASSERT_EQUAL(__atomic_load_n(&bad->reqs, __ATOMIC_SEQ_CST), 3);
	CU_ASSERT_EQUAL(bm_l7_engine_stats(T.e)->ejections, 1);
	engine_stop();
	bm_outlier_free(T_outlier);
	T_outlier = NULL;
	free(t);
}

static void test_l7_inbound_authz(void)
{
	struct usrv *app = srv_start(0, "APP", M_OK, 200);
	struct resp r;

	engine_start(NULL, 1, app->port);
	CU_ASSERT_EQUAL(request("GET /ok HTTP/1.1\r\nHost: pod\r\nAuthorization: Bearer good\r\n\r\n", &r), 0);
	CU_ASSERT_EQUAL(r.status, 200);
	CU_ASSERT(body_is(&r, "APP"));
	resp_free(&r);
	pthread_mutex_lock(&app->mu);
	CU_ASSERT_PTR_NULL(strstr(app->last_head, "authorization")); /* stripped */
	pthread_mutex_unlock(&app->mu);
	CU_ASSERT_EQUAL(request("GET /x/../admin HTTP/1.1\r\nHost: pod\r\n\r\n", &r), 0);
	CU_ASSERT_EQUAL(r.status, 403);
	CU_ASSERT(body_is(&r, "RBAC: access denied"));
	resp_free(&r);
	CU_ASSERT_EQUAL(request("GET /ok HTTP/1.1\r\nHost: pod\r\nAuthorization: Bearer bad\r\n\r\n", &r), 0);
	CU_ASSERT_EQUAL(r.status, 401);
	CU_ASSERT_PTR_NOT_NULL(strstr(r.head, "www-authenticate: Bearer"));
	resp_free(&r);
	CU_ASSERT_EQUAL(__atomic_load_n(&app->reqs, __ATOMIC_SEQ_CST), 1);
	engine_stop();
	CU_ASSERT_EQUAL(T.n_recs, 3);
	if (T.n_recs == 3)
		CU_ASSERT_STRING_EQUAL(T.recs[1].flags, "DENY");
}

static void test_l7_bad_requests(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct resp r;
	char *big = malloc(70000);

	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	engine_start(&t->cfg, 0, 0);
	CU_ASSERT_EQUAL(request("GET /x HTTP/1.1\r\nBad Header\r\n\r\n", &r), 0);
	CU_ASSERT_EQUAL(r.status, 400);
	resp_free(&r);
	strcpy(big, "GET /x HTTP/1.1\r\nX-Big: ");
	memset(big + strlen(big), 'a', 66000);
	strcpy(big + 24 + 66000, "\r\n\r\n");
	CU_ASSERT_EQUAL(request(big, &r), 0);
	CU_ASSERT_EQUAL(r.status, 431);
	resp_free(&r);
	CU_ASSERT_EQUAL(__atomic_load_n(&a->reqs, __ATOMIC_SEQ_CST), 0);
	free(big);
	engine_stop();
	free(t);
}

static void test_l7_connect_failure(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct resp r;

	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	engine_start(&t->cfg, 0, 0);
	/* stop the upstream: its port refuses */
	__atomic_store_n(&a->stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(a->th, NULL);
	close(a->lfd);
	a->th = 0;
	CU_ASSERT_EQUAL(request(GET, &r), 0);
	CU_ASSERT_EQUAL(r.status, 503);
	CU_ASSERT(body_is(&r, "upstream connect error or disconnect/reset before headers. reset "
			      "reason: connection failure"));
	resp_free(&r);
	engine_stop();
	/* the default policy retries connect failures: 3 attempts, then URX */
	CU_ASSERT_EQUAL(T.recs[0].attempts, 3);
	CU_ASSERT_STRING_EQUAL(T.recs[0].flags, "URX,UF");
	free(t);
}

static void test_l7_pipelined_keepalive(void)
{
	struct usrv *a = srv_start(0, "A", M_OK, 200);
	struct tc *t = tc_new(1);
	struct rd *rdr = calloc(1, sizeof(*rdr));
	char req[256];
	int fd;

	tc_cluster(t, 0, &a, 1);
	tc_dest(t, 0, 0, 0, 1);
	engine_start(&t->cfg, 0, 0);
	fd = dial_engine();
	rdr->fd = fd;
	snprintf(req, sizeof(req), "%s%s%s", GET, GET, GET);
	send_all(fd, req, strlen(req));
	for (int i = 0; i < 3; i++) {
		char first[256];
		struct resp r = { 0 };

		CU_ASSERT_EQUAL(read_msg(rdr, first, sizeof(first), r.head, sizeof(r.head), &r.body,
					 &r.blen, 1), 0);
		CU_ASSERT_EQUAL(atoi(first + 9), 200);
		resp_free(&r);
	}
	close(fd);
	free(rdr);
	CU_ASSERT_EQUAL(__atomic_load_n(&a->conns, __ATOMIC_SEQ_CST), 1);
	engine_stop();
	free(t);
}

static void suite_alarm(int sig)
{
	(void)sig;
	fprintf(stderr, "test_l7proxy: timed out\n");
	_exit(3);
}

static void test_l7_setup(void)
{
	signal(SIGALRM, suite_alarm);
	signal(SIGPIPE, SIG_IGN);
	alarm(120);
}

static void test_l7_teardown(void)
{
	alarm(0);
}

/* HTTP/2, gRPC, trailers and upgrades: the same harness. */
#include "l7h2_cases.inc"

/* meshd's worker count when --workers is not given: one per two CPUs,
 * rounded up, never 0. */
static void test_default_workers(void)
{
	static const long cpus[] = { -1, 0, 1, 2, 3, 4, 7, 8, 64 };
	static const int want[] = { 1, 1, 1, 1, 2, 2, 4, 4, 32 };

	for (size_t i = 0; i < sizeof(cpus) / sizeof(cpus[0]); i++)
		CU_ASSERT_EQUAL(bm_proxy_default_workers(cpus[i]), want[i]);
}

BM_SUITE(l7proxy,
	 BM_CASE(test_default_workers),
	 BM_CASE(test_l7_setup),
	 BM_CASE(test_l7_timer_lazy_rearm),
	 BM_CASE(test_l7_head_body_one_write),
	 BM_CASE(test_l7_header_routing),
	 BM_CASE(test_l7_weighted),
	 BM_CASE(test_l7_no_route_direct_redirect),
	 BM_CASE(test_l7_retry_5xx),
	 BM_CASE(test_l7_per_try_timeout),
	 BM_CASE(test_l7_route_timeout),
	 BM_CASE(test_l7_fault_abort),
	 BM_CASE(test_l7_overflow),
	 BM_CASE(test_l7_keepalive),
	 BM_CASE(test_l7_pipelined_keepalive),
	 BM_CASE(test_l7_chunked_5mb),
	 BM_CASE(test_l7_mirror),
	 BM_CASE(test_l7_outlier),
	 BM_CASE(test_l7_inbound_authz),
	 BM_CASE(test_l7_bad_requests),
	 BM_CASE(test_l7_connect_failure),
	 BM_CASE(test_l7_teardown))
