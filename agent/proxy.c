/*
 * Proxy workers: pods, listeners, and the three ways a connection comes in.
 *
 * Every worker puts every pod listener in its own epoll with EPOLLEXCLUSIVE
 * (the kernel wakes one waiter per connection). The kernel wakes the first
 * idle waiter, nearly always the same worker, so the worker that accepted a
 * connection deals connections out round-robin: its own turn it keeps, the
 * others' it posts to their command queue (CMD_CONN). A connection then
 * lives in one worker only. Pods are immutable and reference counted; the
 * main thread sends add/remove messages and each worker keeps its own list,
 * so the data path reads pods without a lock.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <bpf/bpf.h>
#include "accesslog.h"
#include "agent.h"
#include "ca.h"
#include "capture.h"
#include "hbone.h"
#include "l7.h"
#include "l7proxy.h"
#include "log.h"
#include "policy.h"
#include "mesh.h"
#include "proxy.h"
#include "reqmetrics.h"
#include "relay.h"
#include "tlsctx.h"
#include "tracing.h"

/* One connection per wake-up (the listeners are level-triggered): the
 * next pending one wakes a waiting worker again. */
#define ACCEPT_BATCH 1
#define SESS_CACHE 64
#define SPIFFE_PREFIX "spiffe://"

enum { L_OUTBOUND, L_INBOUND, L_HBONE, L_KINDS };

struct worker;

struct plistener {
	struct bm_ev ev;
	struct ppod *pod;
	struct worker *w;
	int kind;
	int paused;                 /* out of descriptors: off this worker's epoll until the tick */
};

/* An enrolled pod: immutable once published, freed at the last reference. */
struct ppod {
	int refs;
	struct bm_proxy_pod cfg;
	const char *principal;      /* cfg.spiffe_id without spiffe:// */
	json_t *labels;             /* cfg.labels parsed (sourceLabels), NULL = none */
	char baggage[512];
	SSL_CTX *sctx, *cctx;       /* NULL without an identity manager */
	int lfd[L_KINDS];
	int nsfd;                   /* the pod's netns, for deliveries and tunnels */
	struct plistener *lst;      /* [worker * L_KINDS + kind] */
};

struct cmd {
	struct cmd *next;
	enum { CMD_ADD, CMD_DEL, CMD_STOP, CMD_L7, CMD_CONN } op;
	struct ppod *pod;              /* CMD_CONN: a reference for the connection */
	struct bm_l7_config *l7;       /* CMD_L7: a reference for the worker */
	int fd, kind;                  /* CMD_CONN: an accepted connection, its listener kind */
};

struct sess_ent {
	uint32_t src_ip, dst_ip;
	SSL_SESSION *s;
	time_t valid_until;            /* the certificates it was made with expire */
};

struct worker {
	struct bm_proxy *p;
	int idx;
	int spare_fd;                  /* kept open to accept-and-drop when out of fds */
	unsigned n_paused;             /* listeners taken off the epoll (out of fds) */
	pthread_t th;
	int started;
	struct bm_loop loop;
	struct bm_wstats st;
	struct bm_mesh_table *mt;      /* istio_tcp_* rows of this worker (relay.h) */
	struct bm_ev cmd_ev, tick_ev;
	pthread_mutex_t cmd_lock;
	struct cmd *cmds, *cmds_tail;
	int stop;
	struct ppod **pods;
	size_t n_pods, cap_pods;
	struct bm_hbone_conn *conns;   /* every HBONE connection of this worker */
	struct sess_ent sess[SESS_CACHE];
	unsigned sess_next;
	struct bm_l7_engine *l7;       /* HTTP/1.1 engine (agent/l7proxy.c) */
	/* HTTP requests finished on this worker, by status class ([0] no
	 * response); the owner writes, readers load relaxed. */
	uint64_t http_status[6];
	struct bm_req_table *rq;       /* istio_request* rows of this worker (reqmetrics.h) */
	struct bm_l7_config *cfg;      /* the configuration last published to this worker */
};

/* Per HBONE connection: who owns it and, for clients, the pool key. */
struct conn_owner {
	struct worker *w;
	struct ppod *pod;              /* server: the pod (a reference); client: NULL */
	uint32_t src_ip, dst_ip;       /* client pool key, with src_id */
	char src_id[256];
	time_t valid_until;            /* earliest NotAfter of both certificates */
	time_t sess_valid_until;       /* of the session offered for resumption */
};

struct bm_proxy {
	struct bm_agent *a;
	struct bm_identity_mgr *ids;
	unsigned ping_idle_ms, ping_timeout_ms, pool_idle_ms;
	int n;
	struct worker *w;
	pthread_mutex_t lock;          /* pods[] below: control path only */
	struct ppod **pods;
	size_t n_pods;
	struct bm_l7_config *l7;       /* the last published (a reference) */
	unsigned rr;                   /* round-robin turn of accepted connections (atomic) */
};

/* ---- pods --------------------------------------------------------------- */

static void pod_put(struct ppod *pod)
{
	if (__atomic_sub_fetch(&pod->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (int k = 0; k < L_KINDS; k++)
		if (pod->lfd[k] >= 0)
			close(pod->lfd[k]);
	if (pod->nsfd >= 0)
		close(pod->nsfd);
	SSL_CTX_free(pod->sctx);
	SSL_CTX_free(pod->cctx);
	json_decref(pod->labels);
	free(pod->lst);
	free(pod);
}

static void pod_get(struct ppod *pod)
{
	__atomic_add_fetch(&pod->refs, 1, __ATOMIC_ACQ_REL);
}

static struct ppod *worker_pod_by_ip(struct worker *w, uint32_t ip)
{
	for (size_t i = 0; i < w->n_pods; i++)
		if (w->pods[i]->cfg.ip == ip)
			return w->pods[i];
	return NULL;
}

/* "td/ns/NS/sa/SA" -> NS */
static const char *principal_ns(const char *principal, char *buf, size_t len)
{
	const char *p = principal ? strstr(principal, "/ns/") : NULL;
	size_t n;

	if (!p)
		return NULL;
	p += 4;
	n = strcspn(p, "/");
	if (!n || n >= len)
		return NULL;
	memcpy(buf, p, n);
	buf[n] = 0;
	return buf;
}

static void ip_str(uint32_t ip, char *buf)
{
	inet_ntop(AF_INET, &ip, buf, INET_ADDRSTRLEN);
}

/* ---- same-node and plaintext delivery ----------------------------------- */

static int policy(struct worker *w, const struct bm_conn_attrs *at, enum bm_pdir dir)
{
	char reason[BM_DENY_REASON_LEN] = "";
	int rc = bm_policy_check(w->p->a, at, reason, sizeof(reason));

	if (rc) {
		w->st.conns[dir][BM_PRES_DENIED]++;
		bm_wstats_deny(&w->st, reason[0] ? reason : "denied");
	}
	return rc;
}

/* The istio_tcp_* rows of a delivery to dst's port: reporter destination
 * (peer principal or unknown), and for same-node outbound also reporter
 * source. Both plaintext: the bytes never left meshd, no TLS happened. */
static void mesh_rows(struct worker *w, const struct ppod *src, const struct bm_orig_dst *od,
		      const struct ppod *dst, uint16_t port, struct bm_mesh_row **rs,
		      struct bm_mesh_row **rd)
{
	struct bm_mesh_key k;

	*rs = *rd = NULL;
	if (!w->mt)
		return;
	if (src && od) {
		memset(&k, 0, sizeof(k));
		k.reporter = BM_MESH_SOURCE;
		k.port = ntohs(od->bport);
		k.ip = od->bip;
		k.svc_id = od->svc_id;
		snprintf(k.src, sizeof(k.src), "%s/%s", src->cfg.ns, src->cfg.name);
		*rs = bm_mesh_open(w->mt, &k);
	}
	memset(&k, 0, sizeof(k));
	k.reporter = BM_MESH_DESTINATION;
	k.port = port;
	snprintf(k.src, sizeof(k.src), "%s", src && src->principal[0] ? src->principal : "unknown");
	snprintf(k.dst, sizeof(k.dst), "%s/%s", dst->cfg.ns, dst->cfg.name);
	*rd = bm_mesh_open(w->mt, &k);
}

/* Deliver an accepted connection to dst's app from 127.0.0.6 and relay. */
static void deliver_local(struct worker *w, int fd, const struct ppod *src,
			  const struct bm_orig_dst *od, const struct ppod *dst, uint32_t ip,
			  uint16_t port, enum bm_pdir dir)
{
	int ufd = bm_netns_connect_fd(dst->nsfd, BM_DELIVERY_SRC, ip, port);
	struct bm_mesh_row *rs, *rd;

	if (ufd < 0) {
		w->st.conns[dir][BM_PRES_UPSTREAM]++;
		bm_close_reset(fd);
		return;
	}
	mesh_rows(w, src, od, dst, port, &rs, &rd);
	bm_relay_start_rows(&w->loop, fd, ufd, dir, rs, rd);
}

static int pod_needs_http(struct worker *w, const struct ppod *pod);
static int inbound_l7_start(struct worker *w, struct ppod *dst, int fd, const char *principal,
			    uint32_t src_ip, uint32_t dst_ip, uint16_t dst_port, int mtls,
			    enum bm_pdir dir);

static void accept_inbound_plain(struct worker *w, struct ppod *pod, int fd)
{
	struct sockaddr_in src, dst;
	socklen_t sl = sizeof(src), dl = sizeof(dst);
	struct bm_conn_attrs at = { 0 };

	if (getpeername(fd, (struct sockaddr *)&src, &sl) || getsockname(fd, (struct sockaddr *)&dst, &dl)) {
		w->st.conns[BM_PDIR_IN_PLAIN][BM_PRES_ERROR]++;
		bm_close_reset(fd);
		return;
	}
	at.src_ip = src.sin_addr.s_addr;
	at.dst_ip = dst.sin_addr.s_addr;
	at.dst_port = ntohs(dst.sin_port);
	at.dst_pod_ns = pod->cfg.ns;
	at.dst_pod_name = pod->cfg.name;
	at.http_per_request = (uint8_t)pod_needs_http(w, pod);
	/* src_principal NULL: plaintext. STRICT refuses it here. */
	if (policy(w, &at, BM_PDIR_IN_PLAIN)) {
		bm_close_reset(fd);
		return;
	}
	if (at.http_per_request) {
		inbound_l7_start(w, pod, fd, NULL, at.src_ip, at.dst_ip, at.dst_port, 0,
				 BM_PDIR_IN_PLAIN);
		return;
	}
	deliver_local(w, fd, NULL, NULL, pod, at.dst_ip, at.dst_port, BM_PDIR_IN_PLAIN);
}

/* ---- HBONE client pool -------------------------------------------------- */

static void conn_track(struct worker *w, struct bm_hbone_conn *c)
{
	c->next = w->conns;
	c->prev = NULL;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
}

static void conn_untrack(struct worker *w, struct bm_hbone_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else if (w->conns == c)
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
}

static struct sess_ent *sess_find(struct worker *w, uint32_t src_ip, uint32_t dst_ip)
{
	for (int i = 0; i < SESS_CACHE; i++)
		if (w->sess[i].s && w->sess[i].src_ip == src_ip && w->sess[i].dst_ip == dst_ip)
			return &w->sess[i];
	return NULL;
}

/* Keep the connection's session for the next handshake to the same peer
 * (TLS 1.3 tickets arrive after the handshake: call again later). */
static void sess_save(struct worker *w, struct bm_hbone_conn *c)
{
	struct conn_owner *o = c->user;
	SSL_SESSION *s = c->ssl ? SSL_get0_session(c->ssl) : NULL;
	struct sess_ent *e;

	if (c->session_saved || !s || !SSL_SESSION_is_resumable(s))
		return;
	e = sess_find(w, o->src_ip, o->dst_ip);
	if (!e) {
		e = &w->sess[w->sess_next++ % SESS_CACHE];
		e->src_ip = o->src_ip;
		e->dst_ip = o->dst_ip;
	}
	if (e->s)
		SSL_SESSION_free(e->s);
	e->s = SSL_get1_session(c->ssl);
	e->valid_until = o->valid_until;
	c->session_saved = 1;
}

static int on_handshake(struct bm_hbone_conn *c)
{
	struct conn_owner *o = c->user;
	char id[BM_HBONE_PEER_MAX];
	int err = bm_tls_peer_id(c->ssl, id, sizeof(id));

	if (err) {
		bm_log("hbone %s: peer refused: %s (%s)", c->server ? "inbound" : "outbound",
		       bm_tls_peer_error(c->ssl), strerror(-err));
		if (c->server)
			bm_wstats_deny(&o->w->st, "tls_peer_refused");
		return err;
	}
	snprintf(c->peer, sizeof(c->peer), "%s",
		 strncmp(id, SPIFFE_PREFIX, strlen(SPIFFE_PREFIX)) ? id : id + strlen(SPIFFE_PREFIX));
	/* A tunnel authenticates new streams only while both certificates it
	 * was made with are valid: a pooled connection must not outlive them. */
	{
		X509 *peer = SSL_get0_peer_certificate(c->ssl), *own = SSL_get_certificate(c->ssl);
		time_t tp = 0, to = 0;

		if (!peer || bm_x509_time(X509_get0_notAfter(peer), &tp))
			tp = 0;
		if (!own || bm_x509_time(X509_get0_notAfter(own), &to))
			to = tp;
		o->valid_until = tp < to ? tp : to;
		/* A resumed session keeps the certificates of its first handshake
		 * (ours too, as the peer saw it): it is worth no more than those. */
		if (SSL_session_reused(c->ssl) && o->sess_valid_until &&
		    o->sess_valid_until < o->valid_until)
			o->valid_until = o->sess_valid_until;
	}
	return 0;
}

static void on_close(struct bm_hbone_conn *c)
{
	struct conn_owner *o = c->user;

	if (!c->server && c->established)
		sess_save(o->w, c);
	conn_untrack(o->w, c);
	if (o->pod)
		pod_put(o->pod);
	free(o);
	c->user = NULL;
}

static int on_request(struct bm_hbone_conn *c, const struct bm_hbone_req *r, int *fd);

static const struct bm_hbone_ops hbone_ops = {
	.on_request = on_request,
	.on_handshake = on_handshake,
	.on_close = on_close,
};

static struct bm_hbone_conn *pool_find(struct worker *w, const struct ppod *src, uint32_t dst_ip)
{
	for (struct bm_hbone_conn *c = w->conns; c; c = c->next) {
		struct conn_owner *o = c->user;

		if (!c->server && o->dst_ip == dst_ip && o->src_ip == src->cfg.ip &&
		    !strcmp(o->src_id, src->cfg.spiffe_id) && bm_hbone_conn_usable(c) &&
		    time(NULL) + 2 < o->valid_until) /* margin: the server checks later */
			return c;
	}
	return NULL;
}

/* A new pooled connection from the source pod's netns (so the peer sees
 * the pod's IP as the tunnel's source) to dst_ip:15008. */
static struct bm_hbone_conn *pool_dial(struct worker *w, struct ppod *src, uint32_t dst_ip)
{
	char want[BM_SPIFFE_ID_MAX + 1];
	const char *wants[1] = { want };
	struct conn_owner *o;
	struct bm_hbone_conn *c;
	struct sess_ent *e;
	size_t n_want;
	SSL *ssl;
	int fd;

	if (!src->cctx)
		return NULL;
	fd = bm_netns_connect_fd(src->nsfd, 0, dst_ip, BM_PORT_HBONE);
	if (fd < 0) {
		w->st.h2_connect_failed++;
		return NULL;
	}
	ssl = SSL_new(src->cctx);
	o = calloc(1, sizeof(*o));
	/* Pin the server to the identity its WorkloadEntry declares; unknown
	 * workloads must still be in our trust domain. */
	n_want = !bm_mesh_expected_identity(w->p->a, dst_ip, want, sizeof(want));
	if (!ssl || !o || bm_tls_expect_peer(ssl, n_want ? wants : NULL, n_want)) {
		SSL_free(ssl);
		free(o);
		close(fd);
		return NULL;
	}
	e = sess_find(w, src->cfg.ip, dst_ip);
	/* Resume only while the certificates behind the session are valid (a
	 * resumed peer would otherwise be refused as expired), and with some
	 * margin so the tunnel has a useful life. */
	if (e && e->s && SSL_SESSION_is_resumable(e->s) && time(NULL) + 2 < e->valid_until) {
		SSL_set_session(ssl, e->s);
		o->sess_valid_until = e->valid_until;
	}
	o->w = w;
	o->src_ip = src->cfg.ip;
	o->dst_ip = dst_ip;
	snprintf(o->src_id, sizeof(o->src_id), "%s", src->cfg.spiffe_id);
	c = bm_hbone_conn_new(&w->loop, fd, ssl, 0, &hbone_ops, o);
	if (!c) {
		free(o);
		return NULL;
	}
	c->peer_ip = dst_ip;
	conn_track(w, c);
	return c;
}

/* istio_tcp_* of an HBONE stream, client side: reporter source, mutual TLS. */
static struct bm_mesh_row *hbone_source_row(struct worker *w, const struct ppod *src, uint32_t bip,
					    uint16_t bport, uint32_t svc_id)
{
	struct bm_mesh_key k;

	if (!w->mt)
		return NULL;
	memset(&k, 0, sizeof(k));
	k.reporter = BM_MESH_SOURCE;
	k.mtls = 1;
	k.port = ntohs(bport);
	k.ip = bip;
	k.svc_id = svc_id;
	snprintf(k.src, sizeof(k.src), "%s/%s", src->cfg.ns, src->cfg.name);
	return bm_mesh_open(w->mt, &k);
}

static void outbound_hbone(struct worker *w, struct ppod *src, int fd, const struct bm_orig_dst *od,
			   uint16_t app_port)
{
	char authority[32], forwarded[64], bip[INET_ADDRSTRLEN], sip[INET_ADDRSTRLEN];
	struct bm_hbone_conn *c = pool_find(w, src, od->bip);

	struct bm_mesh_row *row = hbone_source_row(w, src, od->bip, od->bport, od->svc_id);

	ip_str(od->bip, bip);
	ip_str(src->cfg.ip, sip);
	snprintf(authority, sizeof(authority), "%s:%u", bip, ntohs(od->bport));
	snprintf(forwarded, sizeof(forwarded), "for=\"%s:%u\"", sip, app_port);
	for (int attempt = 0; attempt < 2; attempt++) {
		int err;

		if (!c)
			c = pool_dial(w, src, od->bip);
		if (!c) {
			w->st.conns[BM_PDIR_OUT_HBONE][BM_PRES_UPSTREAM]++;
			bm_close_reset(fd);
			bm_mesh_close(row, 0, 0);
			return;
		}
		if (c->established)
			sess_save(w, c);
		err = bm_hbone_stream_open_row(c, fd, authority, src->baggage, forwarded, row);
		if (!err)
			return;
		if (err != -EAGAIN) {
			w->st.conns[BM_PDIR_OUT_HBONE][BM_PRES_ERROR]++; /* fd and row are closed */
			return;
		}
		c = NULL; /* that connection is draining: dial a fresh one */
	}
	w->st.conns[BM_PDIR_OUT_HBONE][BM_PRES_ERROR]++;
	bm_close_reset(fd);
	bm_mesh_close(row, 0, 0);
}

/* ---- the HTTP path (agent/l7proxy.c) ------------------------------------- */

/* The owner of one of the engine's downstream connections: what its
 * upstream sockets are made from and which policy applies. */
struct l7user {
	struct worker *w;
	struct ppod *pod;              /* outbound: the source; inbound: the destination (a ref) */
	int inbound;
	char principal[256];           /* inbound: the peer's, "" = plaintext */
	uint32_t src_ip, dst_ip;       /* inbound: the connection's */
	uint16_t dst_port;
};

static int pod_needs_http(struct worker *w, const struct ppod *pod)
{
	return bm_policy_workload_needs_http(pod->cfg.ns, pod->cfg.ip) == 1;
}

static struct l7user *l7user_new(struct worker *w, struct ppod *pod, int inbound)
{
	struct l7user *u = calloc(1, sizeof(*u));

	if (!u)
		return NULL;
	u->w = w;
	u->pod = pod;
	u->inbound = inbound;
	pod_get(pod);
	return u;
}

static void l7_release(void *user)
{
	struct l7user *u = user;

	if (!u)
		return;
	pod_put(u->pod);
	free(u);
}

static void l7_attrs(const struct l7user *u, struct bm_conn_attrs *at, char *ns, size_t len,
		     int per_request)
{
	memset(at, 0, sizeof(*at));
	at->src_principal = u->principal[0] ? u->principal : NULL;
	at->src_namespace = principal_ns(at->src_principal, ns, len);
	at->src_ip = u->src_ip;
	at->dst_ip = u->dst_ip;
	at->dst_port = u->dst_port;
	at->http_per_request = (uint8_t)per_request;
	at->dst_pod_ns = u->pod->cfg.ns;
	at->dst_pod_name = u->pod->cfg.name;
}

/* Carry fd (a client connection, or our end of a socketpair whose other
 * end is an HBONE stream or an outbound engine's upstream) into dst's app
 * through the HTTP engine's authorization. The connection-level check
 * (http_per_request = 1) was done by the caller. fd is consumed. */
static int inbound_l7_start(struct worker *w, struct ppod *dst, int fd, const char *principal,
			    uint32_t src_ip, uint32_t dst_ip, uint16_t dst_port, int mtls,
			    enum bm_pdir dir)
{
	struct l7user *u = w->l7 ? l7user_new(w, dst, 1) : NULL;
	struct bm_l7_peer peer = { 0 };
	char ns[64];

	if (!u) {
		bm_close_reset(fd);
		return -ENOMEM;
	}
	snprintf(u->principal, sizeof(u->principal), "%s", principal ? principal : "");
	u->src_ip = src_ip;
	u->dst_ip = dst_ip;
	u->dst_port = dst_port;
	peer.inbound = 1;
	peer.mtls = (uint8_t)mtls;
	peer.user = u;
	peer.l4_dir = dir;
	snprintf(peer.src_principal, sizeof(peer.src_principal), "%s", u->principal);
	if (principal_ns(u->principal, ns, sizeof(ns)))
		snprintf(peer.src_ns, sizeof(peer.src_ns), "%s", ns);
	peer.src_ip = src_ip;
	peer.dst_ip = dst_ip;
	peer.dst_port = dst_port;
	snprintf(peer.dst_ns, sizeof(peer.dst_ns), "%s", dst->cfg.ns);
	snprintf(peer.dst_name, sizeof(peer.dst_name), "%s", dst->cfg.name);
	return bm_l7_engine_accept(w->l7, fd, &peer);
}

/* An HBONE stream to bip:bport (network order) carrying fd; fd is consumed. */
static int l7_hbone_open(struct worker *w, struct ppod *src, int fd, uint32_t bip, uint16_t bport)
{
	char authority[32], forwarded[64], bs[INET_ADDRSTRLEN], ss[INET_ADDRSTRLEN];
	struct bm_hbone_conn *c = pool_find(w, src, bip);
	struct bm_mesh_row *row = hbone_source_row(w, src, bip, bport, 0);

	ip_str(bip, bs);
	ip_str(src->cfg.ip, ss);
	snprintf(authority, sizeof(authority), "%s:%u", bs, ntohs(bport));
	snprintf(forwarded, sizeof(forwarded), "for=\"%s\"", ss);
	for (int attempt = 0; attempt < 2; attempt++) {
		int err;

		if (!c)
			c = pool_dial(w, src, bip);
		if (!c) {
			bm_close_reset(fd);
			bm_mesh_close(row, 0, 0);
			return -EHOSTUNREACH;
		}
		if (c->established)
			sess_save(w, c);
		err = bm_hbone_stream_open_row(c, fd, authority, src->baggage, forwarded, row);
		if (err != -EAGAIN)
			return err; /* 0, or fd was reset and closed (and the row) */
		c = NULL;
	}
	bm_close_reset(fd);
	bm_mesh_close(row, 0, 0);
	return -EAGAIN;
}

/* The engine's connector: an upstream socket for backend b. */
static int l7_connect(void *user, const struct bm_l7_backend *b, int *fd)
{
	struct l7user *u = user;
	struct worker *w = u->w;
	struct ppod *src = u->pod, *dst;
	int sv[2], err;

	*fd = -1;
	if (u->inbound) {
		/* the app, from 127.0.0.6 like every delivery */
		*fd = bm_netns_connect_fd(src->nsfd, BM_DELIVERY_SRC, b->ip, ntohs(b->port));
		return *fd < 0 ? *fd : 0;
	}
	dst = worker_pod_by_ip(w, b->ip);
	if (dst) {
		/* a pod of this node: its policy here, no TLS */
		struct bm_conn_attrs at = { 0 };
		char ns[64];
		int l7 = pod_needs_http(w, dst);

		at.src_principal = src->principal[0] ? src->principal : NULL;
		at.src_namespace = principal_ns(src->principal, ns, sizeof(ns));
		at.src_ip = src->cfg.ip;
		at.dst_ip = b->ip;
		at.dst_port = ntohs(b->port);
		at.http_per_request = (uint8_t)l7;
		at.dst_pod_ns = dst->cfg.ns;
		at.dst_pod_name = dst->cfg.name;
		if (policy(w, &at, BM_PDIR_OUT_LOCAL))
			return -EACCES;
		if (!l7) {
			*fd = bm_netns_connect_fd(dst->nsfd, BM_DELIVERY_SRC, b->ip, at.dst_port);
			return *fd < 0 ? *fd : 0;
		}
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
			return -errno;
		err = inbound_l7_start(w, dst, sv[0], at.src_principal, src->cfg.ip, b->ip,
				       at.dst_port, 0, BM_PDIR_OUT_LOCAL);
		if (err) {
			close(sv[1]);
			return err;
		}
		*fd = sv[1];
		return 0;
	}
	if (b->mesh) {
		/* a mesh workload on another node: a CONNECT stream */
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
			return -errno;
		err = l7_hbone_open(w, src, sv[0], b->ip, b->port);
		if (err) {
			close(sv[1]);
			return err;
		}
		*fd = sv[1];
		return 0;
	}
	/* outside the mesh: plain TCP from the source pod's netns */
	*fd = bm_netns_connect_fd(src->nsfd, 0, b->ip, ntohs(b->port));
	return *fd < 0 ? *fd : 0;
}

/* An inbound connection that turned out not to be HTTP: the full L4
 * evaluation (HTTP-only attributes degrade as in §4.3). */
static int l7_l4_allowed(void *user)
{
	struct l7user *u = user;
	struct bm_conn_attrs at;
	char ns[64];

	if (!u->inbound)
		return 0;
	l7_attrs(u, &at, ns, sizeof(ns), 0);
	return policy(u->w, &at, BM_PDIR_IN_PLAIN);
}

static int l7_authorize(void *ctx, const struct bm_l7_authz_req *rq, struct bm_l7_authz_res *res)
{
	struct worker *w = ctx;
	struct l7user *u = rq->peer->user;
	struct bm_policy_http_result *pr = calloc(1, sizeof(*pr));
	struct bm_policy_http h = {
		.method = rq->method, .host = rq->host, .path = rq->path,
		.query = rq->query && rq->query[0] ? rq->query : NULL,
		.hdr = rq->hdr, .n_hdr = rq->n_hdr,
	};
	struct bm_conn_attrs at;
	char ns[64];
	int rc;

	if (!pr)
		return -EACCES;
	l7_attrs(u, &at, ns, sizeof(ns), 1);
	rc = bm_policy_check_http(w->p->a, &at, &h, pr);
	for (size_t i = 0; i < pr->n_strip_header && i < BM_L7_MAX_STRIP; i++)
		snprintf(res->strip_header[i], sizeof(res->strip_header[i]), "%s", pr->strip_header[i]);
	res->n_strip_header = pr->n_strip_header < BM_L7_MAX_STRIP ? pr->n_strip_header : BM_L7_MAX_STRIP;
	for (size_t i = 0; i < pr->n_strip_param && i < BM_L7_MAX_STRIP; i++)
		snprintf(res->strip_param[i], sizeof(res->strip_param[i]), "%s", pr->strip_param[i]);
	res->n_strip_param = pr->n_strip_param < BM_L7_MAX_STRIP ? pr->n_strip_param : BM_L7_MAX_STRIP;
	snprintf(res->www_authenticate, sizeof(res->www_authenticate), "%s", pr->www_authenticate);
	snprintf(res->body, sizeof(res->body), "%s", pr->body);
	snprintf(res->reason, sizeof(res->reason), "%s", pr->reason);
	if (rc)
		bm_wstats_deny(&w->st, pr->reason[0] ? pr->reason : "denied");
	free(pr);
	return rc;
}

/* Per-worker request counters by status class; istio_requests_total is
 * built on struct bm_l7_record elsewhere. */
static void l7_complete(void *ctx, const struct bm_l7_record *r)
{
	struct worker *w = ctx;
	unsigned k = r->status >= 100 && r->status < 600 ? r->status / 100 : 0;

	const struct bm_l7_podlog *pl;

	__atomic_store_n(&w->http_status[k], w->http_status[k] + 1, __ATOMIC_RELAXED);
	if (w->rq)
		bm_req_record(w->rq, r);
	pl = r->reporter == BM_MESH_SOURCE ? bm_l7_podlog_find(w->cfg, r->src_ns, r->src_name)
					   : bm_l7_podlog_find(w->cfg, r->dst_ns, r->dst_name);
	if (pl) {
		struct bm_accesslog_sinks sk = { .n = pl->n };

		memcpy(sk.fd, pl->fd, sizeof(sk.fd));
		bm_accesslog_emit(&sk, r);
	}
	if (r->span) /* sampled, reported: format and queue (tracing.h) */
		bm_trace_report(r);
}

static void l7_ejected(void *ctx, const struct bm_l7_cluster *c, const struct bm_l7_backend *b)
{
	struct worker *w = ctx;
	char ip[INET_ADDRSTRLEN];
	uint32_t one = 1;

	ip_str(b->ip, ip);
	if (bpf_map_update_elem(w->p->a->loader.fd.backend_eject, &b->id, &one, BPF_ANY))
		bm_log("outlier: eject %s:%u (id %u) from %s: %s", ip, ntohs(b->port), b->id, c->name,
		       strerror(errno));
	else
		bm_log("outlier: ejected %s:%u from %s", ip, ntohs(b->port), c->name);
}

static const struct bm_l7_ops l7_ops = {
	.connect = l7_connect,
	.release = l7_release,
	.complete = l7_complete,
	.authorize = l7_authorize,
	.l4_allowed = l7_l4_allowed,
	.ejected = l7_ejected,
};

/* A connection connect4 captured for an L7 service (orig_dst bip == 0):
 * no backend chosen, the engine routes each request. */
static void outbound_l7(struct worker *w, struct ppod *src, int fd, const struct bm_orig_dst *od)
{
	struct l7user *u = w->l7 ? l7user_new(w, src, 0) : NULL;
	struct bm_l7_peer peer = { 0 };

	if (!u) {
		w->st.conns[BM_PDIR_OUT_HBONE][BM_PRES_ERROR]++;
		bm_close_reset(fd);
		return;
	}
	peer.pool_key = src->cfg.ip;
	peer.user = u;
	peer.l4_dir = BM_PDIR_OUT_HBONE;
	peer.vip = od->vip;
	peer.port = ntohs(od->vport);
	peer.svc_id = od->svc_id;
	snprintf(peer.src_ns, sizeof(peer.src_ns), "%s", src->cfg.ns);
	snprintf(peer.src_name, sizeof(peer.src_name), "%s", src->cfg.name);
	peer.src_labels = src->labels;
	snprintf(peer.src_principal, sizeof(peer.src_principal), "%s", src->principal);
	peer.src_ip = src->cfg.ip;
	bm_l7_engine_accept(w->l7, fd, &peer);
}

static void accept_outbound(struct worker *w, struct ppod *src, int fd)
{
	struct bm_agent *a = w->p->a;
	struct bm_orig_dst od;
	struct sockaddr_in peer;
	socklen_t pl = sizeof(peer);
	struct ppod *dst;
	struct bm_conn_attrs at = { 0 };

	if (bm_capture_orig_dst(&a->loader, fd, &od) || getpeername(fd, (struct sockaddr *)&peer, &pl)) {
		/* Not captured by connect4 (someone dialled 127.0.0.1:15001). */
		w->st.conns[BM_PDIR_OUT_LOCAL][BM_PRES_ERROR]++;
		bm_close_reset(fd);
		return;
	}
	if (!od.bip) {
		outbound_l7(w, src, fd, &od);
		return;
	}
	dst = worker_pod_by_ip(w, od.bip);
	if (!dst) {
		outbound_hbone(w, src, fd, &od, ntohs(peer.sin_port));
		return;
	}
	/* Both ends are this meshd: no TLS, same identity and policy. */
	char ns[64];

	at.src_principal = src->principal[0] ? src->principal : NULL;
	at.src_namespace = principal_ns(src->principal, ns, sizeof(ns));
	at.src_ip = src->cfg.ip;
	at.dst_ip = od.bip;
	at.dst_port = ntohs(od.bport);
	at.dst_pod_ns = dst->cfg.ns;
	at.dst_pod_name = dst->cfg.name;
	at.http_per_request = (uint8_t)pod_needs_http(w, dst);
	if (policy(w, &at, BM_PDIR_OUT_LOCAL)) {
		bm_close_reset(fd);
		return;
	}
	if (at.http_per_request) {
		inbound_l7_start(w, dst, fd, at.src_principal, src->cfg.ip, od.bip, at.dst_port, 0,
				 BM_PDIR_OUT_LOCAL);
		return;
	}
	deliver_local(w, fd, src, &od, dst, od.bip, at.dst_port, BM_PDIR_OUT_LOCAL);
}

/* ---- HBONE server -------------------------------------------------------- */

/* istio_tcp_* of an HBONE stream, server side: reporter destination, the
 * peer's principal, mutual TLS. */
static struct bm_mesh_row *hbone_destination_row(struct worker *w, const char *peer,
						 const struct ppod *pod, uint16_t port)
{
	struct bm_mesh_key k;

	if (!w->mt)
		return NULL;
	memset(&k, 0, sizeof(k));
	k.reporter = BM_MESH_DESTINATION;
	k.mtls = 1;
	k.port = port;
	snprintf(k.src, sizeof(k.src), "%s", peer && *peer ? peer : "unknown");
	snprintf(k.dst, sizeof(k.dst), "%s/%s", pod->cfg.ns, pod->cfg.name);
	return bm_mesh_open(w->mt, &k);
}

static int on_request(struct bm_hbone_conn *c, const struct bm_hbone_req *r, int *fd)
{
	struct conn_owner *o = c->user;
	struct ppod *pod = o->pod;
	struct bm_conn_attrs at = { 0 };
	char host[INET_ADDRSTRLEN], ns[64];
	const char *colon = strrchr(r->authority, ':');
	struct in_addr ip;
	unsigned long port;
	char *end;

	/* :authority must be this pod's IP:port (§10.1: bad authority = 400). */
	if (!colon || (size_t)(colon - r->authority) >= sizeof(host))
		return 400;
	memcpy(host, r->authority, (size_t)(colon - r->authority));
	host[colon - r->authority] = 0;
	port = strtoul(colon + 1, &end, 10);
	if (*end || !port || port > 65535 || inet_pton(AF_INET, host, &ip) != 1 ||
	    ip.s_addr != pod->cfg.ip)
		return 400;
	if (time(NULL) >= o->valid_until) {
		/* The client kept streaming over a tunnel whose certificates have
		 * expired since the handshake: it must reconnect and re-prove. */
		bm_wstats_deny(&o->w->st, "peer_certificate_expired");
		return 401;
	}
	at.src_principal = c->peer;
	at.src_namespace = principal_ns(c->peer, ns, sizeof(ns));
	at.src_ip = c->peer_ip;
	at.dst_ip = ip.s_addr;
	at.dst_port = (uint16_t)port;
	at.dst_pod_ns = pod->cfg.ns;
	at.dst_pod_name = pod->cfg.name;
	at.http_per_request = (uint8_t)pod_needs_http(o->w, pod);
	{
		char reason[BM_DENY_REASON_LEN] = "";

		if (bm_policy_check(o->w->p->a, &at, reason, sizeof(reason))) {
			bm_wstats_deny(&o->w->st, reason[0] ? reason : "denied");
			return 401;
		}
	}
	if (at.http_per_request) {
		/* HTTP authorization per request: the stream goes into the
		 * engine through a socketpair */
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
			return 503;
		if (inbound_l7_start(o->w, pod, sv[0], c->peer, c->peer_ip, ip.s_addr,
				     (uint16_t)port, 1, BM_PDIR_IN_HBONE)) {
			close(sv[1]);
			return 503;
		}
		*fd = sv[1];
		*r->row = hbone_destination_row(o->w, c->peer, pod, (uint16_t)port);
		return 0;
	}
	*fd = bm_netns_connect_fd(pod->nsfd, BM_DELIVERY_SRC, ip.s_addr, (uint16_t)port);
	if (*fd < 0)
		return 503;
	*r->row = hbone_destination_row(o->w, c->peer, pod, (uint16_t)port);
	return 0;
}

static void accept_hbone(struct worker *w, struct ppod *pod, int fd)
{
	struct sockaddr_in peer;
	socklen_t pl = sizeof(peer);
	struct conn_owner *o;
	struct bm_hbone_conn *c;
	SSL *ssl;

	if (!pod->sctx || getpeername(fd, (struct sockaddr *)&peer, &pl)) {
		w->st.conns[BM_PDIR_IN_HBONE][BM_PRES_ERROR]++;
		bm_close_reset(fd);
		return;
	}
	ssl = SSL_new(pod->sctx);
	o = calloc(1, sizeof(*o));
	if (!ssl || !o) {
		SSL_free(ssl);
		free(o);
		bm_close_reset(fd);
		return;
	}
	o->w = w;
	o->pod = pod;
	pod_get(pod);
	c = bm_hbone_conn_new(&w->loop, fd, ssl, 1, &hbone_ops, o);
	if (!c) {
		pod_put(pod);
		free(o);
		return;
	}
	c->peer_ip = peer.sin_addr.s_addr;
	conn_track(w, c);
}

/* ---- worker -------------------------------------------------------------- */

static void dispatch_conn(struct worker *w, struct ppod *pod, int kind, int fd)
{
	w->st.accepted++;
	switch (kind) {
	case L_OUTBOUND: accept_outbound(w, pod, fd); break;
	case L_INBOUND: accept_inbound_plain(w, pod, fd); break;
	case L_HBONE: accept_hbone(w, pod, fd); break;
	}
}

static int post_conn(struct worker *w, struct ppod *pod, int kind, int fd);

static void on_listener(struct bm_ev *ev, uint32_t events)
{
	struct plistener *pl = (struct plistener *)ev;
	struct worker *w = pl->w;
	unsigned t;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(ev->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1;

		if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
			/* Out of descriptors: the level-triggered listener would wake
			 * us again at once, forever. Free the spare, take the
			 * connection off the queue and reset it, keep the spare; when
			 * there is no spare (another worker took the slot), leave
			 * this listener alone until the next tick. */
			if (w->spare_fd >= 0) {
				close(w->spare_fd);
				fd = accept4(ev->fd, NULL, NULL, SOCK_CLOEXEC);
				if (fd >= 0)
					bm_close_reset(fd);
				w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			}
			w->st.conns[pl->kind == L_OUTBOUND ? BM_PDIR_OUT_LOCAL : BM_PDIR_IN_PLAIN][BM_PRES_ERROR]++;
			bm_wstats_deny(&w->st, "out_of_file_descriptors");
			if (w->spare_fd < 0 && !pl->paused) {
				bm_loop_del(&w->loop, ev);
				pl->paused = 1;
				w->n_paused++;
			}
			return;
		}
		if (fd < 0)
			return; /* EAGAIN: another worker took it, or none left */
		setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
		t = w->p->n > 1 ? __atomic_fetch_add(&w->p->rr, 1, __ATOMIC_RELAXED) % (unsigned)w->p->n
				: (unsigned)w->idx;
		if (t != (unsigned)w->idx && !post_conn(&w->p->w[t], pl->pod, pl->kind, fd))
			continue;
		dispatch_conn(w, pl->pod, pl->kind, fd);
	}
}

static void worker_add_pod(struct worker *w, struct ppod *pod)
{
	if (w->n_pods == w->cap_pods) {
		size_t cap = w->cap_pods ? w->cap_pods * 2 : 16;
		struct ppod **np = realloc(w->pods, cap * sizeof(*np));

		if (!np) {
			bm_log("proxy worker %d: no memory for pod %s/%s", w->idx, pod->cfg.ns, pod->cfg.name);
			pod_put(pod);
			return;
		}
		w->pods = np;
		w->cap_pods = cap;
	}
	w->pods[w->n_pods++] = pod;
	for (int k = 0; k < L_KINDS; k++) {
		struct plistener *pl = &pod->lst[w->idx * L_KINDS + k];

		if (pod->lfd[k] >= 0 && bm_loop_add(&w->loop, &pl->ev, EPOLLIN | EPOLLEXCLUSIVE))
			bm_log("proxy worker %d: epoll add listener %d of %s/%s: %s", w->idx, k,
			       pod->cfg.ns, pod->cfg.name, strerror(errno));
	}
}

static void worker_del_pod(struct worker *w, struct ppod *pod)
{
	for (size_t i = 0; i < w->n_pods; i++) {
		if (w->pods[i] != pod)
			continue;
		for (int k = 0; k < L_KINDS; k++) {
			struct plistener *pl = &pod->lst[w->idx * L_KINDS + k];

			if (pod->lfd[k] >= 0 && !pl->paused)
				bm_loop_del(&w->loop, &pl->ev);
			if (pl->paused) {
				pl->paused = 0;
				w->n_paused--;
			}
		}
		w->pods[i] = w->pods[--w->n_pods];
		pod_put(pod);
		return;
	}
}

static void worker_set_l7(struct worker *w, struct bm_l7_config *cfg)
{
	if (w->l7) {
		bm_l7_engine_set_outlier(w->l7, w->p->a ? w->p->a->outlier : NULL);
		bm_l7_engine_set_config(w->l7, cfg);
	}
	if (w->cfg)
		bm_l7_put(w->cfg);
	w->cfg = cfg; /* the message's reference, for the access-log sinks */
}

static void on_cmd(struct bm_ev *ev, uint32_t events)
{
	struct worker *w = (struct worker *)((char *)ev - offsetof(struct worker, cmd_ev));
	uint64_t v;
	struct cmd *list;

	if (read(ev->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&w->cmd_lock);
	list = w->cmds;
	w->cmds = w->cmds_tail = NULL;
	pthread_mutex_unlock(&w->cmd_lock);
	while (list) {
		struct cmd *c = list;

		list = c->next;
		if (c->op == CMD_ADD)
			worker_add_pod(w, c->pod);
		else if (c->op == CMD_DEL)
			worker_del_pod(w, c->pod);
		else if (c->op == CMD_L7)
			worker_set_l7(w, c->l7);
		else if (c->op == CMD_CONN) {
			if (w->stop)
				close(c->fd); /* stopping: nobody would serve it */
			else
				dispatch_conn(w, c->pod, c->kind, c->fd);
			pod_put(c->pod);
		} else
			w->stop = 1;
		free(c);
	}
}

static void on_tick(struct bm_ev *ev, uint32_t events)
{
	struct worker *w = (struct worker *)((char *)ev - offsetof(struct worker, tick_ev));
	struct bm_proxy *p = w->p;
	uint64_t n;

	if (read(ev->fd, &n, sizeof(n)) < 0)
		return;
	if (w->spare_fd < 0)
		w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* Listeners paused when descriptors ran out: back on the epoll once
	 * the spare could be had again. */
	for (size_t i = 0; i < w->n_pods && w->n_paused && w->spare_fd >= 0; i++)
		for (int k = 0; k < L_KINDS; k++) {
			struct plistener *pl = &w->pods[i]->lst[w->idx * L_KINDS + k];

			if (pl->paused && !bm_loop_add(&w->loop, &pl->ev, EPOLLIN | EPOLLEXCLUSIVE)) {
				pl->paused = 0;
				w->n_paused--;
			}
		}
	for (struct bm_hbone_conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		bm_hbone_conn_tick(c, w->loop.now_ms, p->ping_idle_ms, p->ping_timeout_ms,
				   c->server ? 0 : p->pool_idle_ms);
	}
}

/* Appends c to w's queue and wakes w. */
static int cmd_enqueue(struct worker *w, struct cmd *c)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->cmd_lock);
	if (w->cmds_tail)
		w->cmds_tail->next = c;
	else
		w->cmds = c;
	w->cmds_tail = c;
	pthread_mutex_unlock(&w->cmd_lock);
	return write(w->cmd_ev.fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

static int post_cmd(struct worker *w, int op, struct ppod *pod, struct bm_l7_config *l7)
{
	struct cmd *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->op = op;
	c->pod = pod;
	c->l7 = l7;
	return cmd_enqueue(w, c);
}

static int post(struct worker *w, int op, struct ppod *pod)
{
	return post_cmd(w, op, pod, NULL);
}

/* Hands an accepted connection to worker w (with a pod reference for it).
 * 0, or -errno and the caller keeps the connection. */
static int post_conn(struct worker *w, struct ppod *pod, int kind, int fd)
{
	struct cmd *c;

	if (__atomic_load_n(&w->stop, __ATOMIC_RELAXED) || !(c = calloc(1, sizeof(*c))))
		return -EAGAIN;
	pod_get(pod);
	c->op = CMD_CONN;
	c->pod = pod;
	c->fd = fd;
	c->kind = kind;
	/* Queued even if the wake-up fails: the worker gets it at its next
	 * wake-up, and worker_fini closes it if that never comes. */
	if (cmd_enqueue(w, c))
		bm_log("proxy worker %d: wake-up for a handed-over connection failed: %s", w->idx,
		       strerror(errno));
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	sigset_t all;

	/* Signals are the main thread's (signalfd); EPIPE is handled inline. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (!w->stop)
		if (bm_loop_run_once(&w->loop, -1) < 0)
			break;
	return NULL;
}

static void worker_fini(struct worker *w)
{
	/* HTTP connections first: they hold pods and HBONE streams */
	bm_l7_engine_free(w->l7);
	w->l7 = NULL;
	while (w->conns)
		bm_hbone_conn_close(w->conns);
	while (w->n_pods)
		worker_del_pod(w, w->pods[0]);
	free(w->pods);
	for (int i = 0; i < SESS_CACHE; i++)
		if (w->sess[i].s)
			SSL_SESSION_free(w->sess[i].s);
	while (w->cmds) {
		struct cmd *c = w->cmds;

		w->cmds = c->next;
		if (c->op == CMD_ADD)
			pod_put(c->pod);
		if (c->op == CMD_L7 && c->l7)
			bm_l7_put(c->l7);
		if (c->op == CMD_CONN) {
			close(c->fd);
			pod_put(c->pod);
		}
		free(c);
	}
	if (w->cmd_ev.fd >= 0)
		close(w->cmd_ev.fd);
	if (w->tick_ev.fd >= 0)
		close(w->tick_ev.fd);
	bm_loop_fini(&w->loop);
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	w->spare_fd = -1;
	free(w->mt);
	w->mt = NULL;
	bm_req_table_free(w->rq);
	w->rq = NULL;
	if (w->cfg)
		bm_l7_put(w->cfg);
	w->cfg = NULL;
	pthread_mutex_destroy(&w->cmd_lock);
}

static int worker_init(struct bm_proxy *p, struct worker *w, int idx)
{
	struct itimerspec its = { .it_interval = { 1, 0 }, .it_value = { 1, 0 } };
	int err;

	w->p = p;
	w->idx = idx;
	w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	err = bm_loop_init(&w->loop, &w->st);
	if (err)
		return err;
	w->mt = calloc(1, sizeof(*w->mt));
	w->rq = bm_req_table_new();
	if (!w->mt || !w->rq)
		return -ENOMEM;
	w->cmd_ev.fn = on_cmd;
	w->cmd_ev.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	w->tick_ev.fn = on_tick;
	w->tick_ev.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (w->cmd_ev.fd < 0 || w->tick_ev.fd < 0 || timerfd_settime(w->tick_ev.fd, 0, &its, NULL))
		return -errno;
	if ((err = bm_loop_add(&w->loop, &w->cmd_ev, EPOLLIN)) ||
	    (err = bm_loop_add(&w->loop, &w->tick_ev, EPOLLIN)))
		return err;
	{
		struct bm_l7_ops ops = l7_ops;
		struct bm_l7_engine_opts eo = { .outlier = p->a ? p->a->outlier : NULL };

		ops.ctx = w;
		w->l7 = bm_l7_engine_new(&w->loop, &ops, &eo);
		if (!w->l7)
			return -ENOMEM;
	}
	return 0;
}

/* ---- API ----------------------------------------------------------------- */

int bm_proxy_start(struct bm_agent *a, const struct bm_proxy_opts *o, struct bm_proxy **out)
{
	struct bm_proxy *p = calloc(1, sizeof(*p));
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int err = -ENOMEM;

	if (!p)
		return -ENOMEM;
	p->a = a;
	p->ids = o ? o->ids : NULL;
	p->n = o && o->workers > 0 ? o->workers : (ncpu > 0 ? (int)ncpu : 1);
	p->ping_idle_ms = o && o->ping_idle_ms ? o->ping_idle_ms : 10000;
	p->ping_timeout_ms = o && o->ping_timeout_ms ? o->ping_timeout_ms : 5000;
	p->pool_idle_ms = o && o->pool_idle_ms ? o->pool_idle_ms : 120000;
	pthread_mutex_init(&p->lock, NULL);
	p->w = calloc((size_t)p->n, sizeof(*p->w));
	if (!p->w)
		goto err_free;
	for (int i = 0; i < p->n; i++) {
		/* What bm_proxy_stop() may close if a later init fails. */
		p->w[i].cmd_ev.fd = p->w[i].tick_ev.fd = p->w[i].loop.ep = p->w[i].spare_fd = -1;
		pthread_mutex_init(&p->w[i].cmd_lock, NULL);
	}
	for (int i = 0; i < p->n; i++) {
		err = worker_init(p, &p->w[i], i);
		if (err)
			goto err_workers;
	}
	for (int i = 0; i < p->n; i++) {
		err = -pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]);
		if (err)
			goto err_workers;
		p->w[i].started = 1;
	}
	bm_log("proxy: %d worker(s), HBONE %s", p->n, p->ids ? "on" : "off (no identities)");
	*out = p;
	return 0;
err_workers:
	bm_proxy_stop(p);
	return err;
err_free:
	free(p);
	return err;
}

void bm_proxy_stop(struct bm_proxy *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n && p->w; i++)
		if (p->w[i].started)
			post(&p->w[i], CMD_STOP, NULL);
	for (int i = 0; i < p->n && p->w; i++)
		if (p->w[i].started)
			pthread_join(p->w[i].th, NULL);
	/* Workers are gone: their state can be torn down from here. */
	for (int i = 0; i < p->n && p->w; i++) {
		if (p->w[i].cmd_ev.fd >= 0)
			on_cmd(&p->w[i].cmd_ev, EPOLLIN); /* pending adds/removes */
		worker_fini(&p->w[i]);
	}
	for (size_t i = 0; i < p->n_pods; i++)
		pod_put(p->pods[i]);
	free(p->pods);
	if (p->l7)
		bm_l7_put(p->l7);
	free(p->w);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static void build_baggage(struct ppod *pod)
{
	const struct bm_proxy_pod *c = &pod->cfg;
	int n = snprintf(pod->baggage, sizeof(pod->baggage),
			 "k8s.namespace.name=%s,k8s.workload.name=%s", c->ns,
			 c->workload[0] ? c->workload : c->name);

	if (c->app[0] && n > 0 && (size_t)n < sizeof(pod->baggage))
		n += snprintf(pod->baggage + n, sizeof(pod->baggage) - (size_t)n,
			      ",service.name=%s", c->app);
	if (c->version[0] && n > 0 && (size_t)n < sizeof(pod->baggage))
		snprintf(pod->baggage + n, sizeof(pod->baggage) - (size_t)n,
			 ",service.version=%s", c->version);
}

int bm_proxy_pod_add(struct bm_proxy *p, const struct bm_proxy_pod *cfg)
{
	struct ppod *pod;
	int err;

	if (!cfg->name[0] || !cfg->netns[0] || !cfg->ip)
		return -EINVAL;
	pod = calloc(1, sizeof(*pod));
	if (!pod)
		return -ENOMEM;
	pod->cfg = *cfg;
	pod->cfg.labels[sizeof(pod->cfg.labels) - 1] = 0;
	if (pod->cfg.labels[0]) {
		pod->labels = json_loads(pod->cfg.labels, 0, NULL);
		if (pod->labels && !json_is_object(pod->labels)) {
			json_decref(pod->labels);
			pod->labels = NULL;
		}
	}
	pod->principal = strncmp(pod->cfg.spiffe_id, SPIFFE_PREFIX, strlen(SPIFFE_PREFIX)) ?
		pod->cfg.spiffe_id : pod->cfg.spiffe_id + strlen(SPIFFE_PREFIX);
	build_baggage(pod);
	pod->nsfd = bm_netns_open(cfg->netns);
	if (pod->nsfd < 0) {
		err = pod->nsfd;
		bm_log("proxy: netns %s: %s", cfg->netns, strerror(-err));
		json_decref(pod->labels);
		free(pod);
		return err;
	}
	pod->lfd[L_OUTBOUND] = cfg->fd_outbound;
	pod->lfd[L_INBOUND] = cfg->fd_inbound;
	pod->lfd[L_HBONE] = cfg->fd_hbone;
	/* A re-enrolment (new identity after a WorkloadEntry change) with fd
	 * -1 keeps the current listener: its port cannot be bound twice. */
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->n_pods; i++) {
		struct ppod *old = p->pods[i];

		if (strcmp(old->cfg.name, cfg->name) || strcmp(old->cfg.ns, cfg->ns))
			continue;
		for (int k = 0; k < L_KINDS; k++)
			if (pod->lfd[k] < 0 && old->lfd[k] >= 0)
				pod->lfd[k] = fcntl(old->lfd[k], F_DUPFD_CLOEXEC, 0);
	}
	pthread_mutex_unlock(&p->lock);
	if (p->ids && cfg->spiffe_id[0]) {
		pod->sctx = bm_tls_server_ctx(p->ids, cfg->spiffe_id);
		pod->cctx = bm_tls_client_ctx(p->ids, cfg->spiffe_id);
		if (!pod->sctx || !pod->cctx) {
			err = -(errno ? errno : ENOMEM);
			bm_log("proxy: TLS contexts for %s: %s", cfg->spiffe_id, strerror(-err));
			goto err_free;
		}
	}
	pod->lst = calloc((size_t)p->n * L_KINDS, sizeof(*pod->lst));
	if (!pod->lst) {
		err = -ENOMEM;
		goto err_free;
	}
	for (int i = 0; i < p->n; i++) {
		for (int k = 0; k < L_KINDS; k++) {
			struct plistener *pl = &pod->lst[i * L_KINDS + k];

			pl->ev.fn = on_listener;
			pl->ev.fd = pod->lfd[k];
			pl->pod = pod;
			pl->w = &p->w[i];
			pl->kind = k;
		}
	}
	bm_proxy_pod_remove(p, cfg->ns, cfg->name); /* a re-enrolment replaces */
	pthread_mutex_lock(&p->lock);
	{
		struct ppod **np = realloc(p->pods, (p->n_pods + 1) * sizeof(*np));

		if (!np) {
			pthread_mutex_unlock(&p->lock);
			err = -ENOMEM;
			goto err_free;
		}
		p->pods = np;
		p->pods[p->n_pods++] = pod;
	}
	pod->refs = 1 + p->n;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n; i++)
		if (post(&p->w[i], CMD_ADD, pod))
			pod_put(pod); /* that worker never sees it */
	return 0;
err_free:
	/* Close only the duplicates made above: the caller keeps its fds. */
	if (cfg->fd_outbound < 0 && pod->lfd[L_OUTBOUND] >= 0)
		close(pod->lfd[L_OUTBOUND]);
	if (cfg->fd_inbound < 0 && pod->lfd[L_INBOUND] >= 0)
		close(pod->lfd[L_INBOUND]);
	if (cfg->fd_hbone < 0 && pod->lfd[L_HBONE] >= 0)
		close(pod->lfd[L_HBONE]);
	SSL_CTX_free(pod->sctx);
	SSL_CTX_free(pod->cctx);
	close(pod->nsfd);
	json_decref(pod->labels);
	free(pod->lst);
	free(pod);
	return err;
}

void bm_proxy_set_l7(struct bm_proxy *p, struct bm_l7_config *cfg)
{
	struct bm_l7_config *old;

	if (!p)
		return;
	if (cfg)
		bm_l7_get(cfg);
	pthread_mutex_lock(&p->lock);
	old = p->l7;
	p->l7 = cfg;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n; i++) {
		if (!p->w[i].started)
			continue;
		if (cfg)
			bm_l7_get(cfg); /* the worker's, put when it has taken its own */
		if (post_cmd(&p->w[i], CMD_L7, NULL, cfg) && cfg)
			bm_l7_put(cfg);
	}
	if (old)
		bm_l7_put(old);
}

int bm_proxy_pod_remove(struct bm_proxy *p, const char *ns, const char *name)
{
	struct ppod *pod = NULL;

	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->n_pods; i++) {
		if (!strcmp(p->pods[i]->cfg.name, name) && !strcmp(p->pods[i]->cfg.ns, ns)) {
			pod = p->pods[i];
			p->pods[i] = p->pods[--p->n_pods];
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (!pod)
		return -ENOENT;
	for (int i = 0; i < p->n; i++)
		if (post(&p->w[i], CMD_DEL, pod))
			bm_log("proxy: worker %d did not get the removal of %s/%s", i, ns, name);
	pod_put(pod);
	return 0;
}

/* ---- counters ------------------------------------------------------------ */

static const char *const dir_names[BM_PDIR_MAX] = {
	[BM_PDIR_OUT_HBONE] = "outbound_hbone", [BM_PDIR_OUT_LOCAL] = "outbound_local",
	[BM_PDIR_IN_HBONE] = "inbound_hbone", [BM_PDIR_IN_PLAIN] = "inbound_plaintext",
};

#define RD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

json_t *bm_proxy_stats_json(struct bm_proxy *p)
{
	struct bm_wstats sum = { 0 };
	json_t *conns = json_object(), *denials = json_object(), *per_worker = json_array(), *r;
	uint64_t hs[6] = { 0 };
	struct bm_l7_stats ls = { 0 };

	for (int i = 0; i < p->n; i++) {
		struct bm_wstats *s = &p->w[i].st;
		uint32_t nd = __atomic_load_n(&s->n_deny, __ATOMIC_ACQUIRE);

		json_array_append_new(per_worker, json_integer((json_int_t)RD(s->accepted)));
		for (int d = 0; d < BM_PDIR_MAX; d++) {
			for (int k = 0; k < BM_PRES_MAX; k++)
				sum.conns[d][k] += RD(s->conns[d][k]);
			sum.active[d] += RD(s->active[d]);
			sum.bytes_up[d] += RD(s->bytes_up[d]);
			sum.bytes_down[d] += RD(s->bytes_down[d]);
		}
#define ADD(f) sum.f += RD(s->f)
		ADD(tls_client); ADD(tls_server); ADD(tls_resumed); ADD(tls_failed);
		ADD(h2_client); ADD(h2_server); ADD(h2_closed); ADD(h2_pings); ADD(h2_ping_timeouts);
		ADD(h2_connect_failed); ADD(streams_opened); ADD(streams_reset);
		ADD(status_200); ADD(status_400); ADD(status_401); ADD(status_503); ADD(status_other);
		ADD(deny_other);
#undef ADD
		for (int k = 0; k < 6; k++)
			hs[k] += RD(p->w[i].http_status[k]);
		if (p->w[i].l7) {
			const struct bm_l7_stats *e = bm_l7_engine_stats(p->w[i].l7);
#define ADD(f) ls.f += RD(e->f)
			ADD(retries); ADD(timeouts); ADD(overflows); ADD(mirrors); ADD(mirrors_dropped);
			ADD(ejections); ADD(l4_fallbacks); ADD(upstream_cx); ADD(upstream_cx_reused);
			ADD(downstream_cx);
#undef ADD
		}
		for (uint32_t k = 0; k < nd; k++) {
			json_t *v = json_object_get(denials, s->deny[k].reason);

			json_object_set_new(denials, s->deny[k].reason,
					    json_integer((json_int_t)(RD(s->deny[k].n) +
								      (v ? json_integer_value(v) : 0))));
		}
	}
	if (sum.deny_other)
		json_object_set_new(denials, "other", json_integer((json_int_t)sum.deny_other));
	for (int d = 0; d < BM_PDIR_MAX; d++)
		json_object_set_new(conns, dir_names[d],
			json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
				  "ok", (json_int_t)sum.conns[d][BM_PRES_OK],
				  "denied", (json_int_t)sum.conns[d][BM_PRES_DENIED],
				  "upstream_failed", (json_int_t)sum.conns[d][BM_PRES_UPSTREAM],
				  "error", (json_int_t)sum.conns[d][BM_PRES_ERROR],
				  "active", (json_int_t)sum.active[d],
				  "bytes_up", (json_int_t)sum.bytes_up[d],
				  "bytes_down", (json_int_t)sum.bytes_down[d]));
	pthread_mutex_lock(&p->lock);
	r = json_pack("{s:i,s:i,s:o,s:{s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I}},s:o}",
		      "workers", p->n, "pods", (int)p->n_pods, "connections", conns,
		      "tls", "client_handshakes", (json_int_t)sum.tls_client,
		      "server_handshakes", (json_int_t)sum.tls_server,
		      "resumed", (json_int_t)sum.tls_resumed, "failed", (json_int_t)sum.tls_failed,
		      "hbone", "client_connections", (json_int_t)sum.h2_client,
		      "server_connections", (json_int_t)sum.h2_server,
		      "closed_connections", (json_int_t)sum.h2_closed,
		      "connect_failed", (json_int_t)sum.h2_connect_failed,
		      "pings", (json_int_t)sum.h2_pings, "ping_timeouts", (json_int_t)sum.h2_ping_timeouts,
		      "streams", (json_int_t)sum.streams_opened, "streams_reset", (json_int_t)sum.streams_reset,
		      "status", "200", (json_int_t)sum.status_200, "400", (json_int_t)sum.status_400,
		      "401", (json_int_t)sum.status_401, "503", (json_int_t)sum.status_503,
		      "other", (json_int_t)sum.status_other,
		      "denials", denials);
	pthread_mutex_unlock(&p->lock);
	if (r)
		json_object_set_new(r, "accepted_per_worker", per_worker);
	else
		json_decref(per_worker);
	if (r) {
		json_t *h = json_object();
		static const char *const cls[6] = { "no_response", "1xx", "2xx", "3xx", "4xx", "5xx" };
		uint64_t total = 0;

		for (int k = 0; k < 6; k++) {
			json_object_set_new(h, cls[k], json_integer((json_int_t)hs[k]));
			total += hs[k];
		}
		json_object_set_new(h, "requests", json_integer((json_int_t)total));
#define PUT(n, f) json_object_set_new(h, n, json_integer((json_int_t)ls.f))
		PUT("retries", retries); PUT("timeouts", timeouts); PUT("overflows", overflows);
		PUT("mirrors", mirrors); PUT("mirrors_dropped", mirrors_dropped);
		PUT("ejections", ejections); PUT("l4_fallbacks", l4_fallbacks);
		PUT("upstream_connections", upstream_cx); PUT("upstream_reused", upstream_cx_reused);
		PUT("downstream_open", downstream_cx);
#undef PUT
		{
			struct bm_trace_stats ts;

			bm_trace_get_stats(&ts);
			json_object_set_new(h, "spans_reported", json_integer((json_int_t)ts.spans_reported));
			json_object_set_new(h, "spans_exported", json_integer((json_int_t)ts.spans_exported));
			json_object_set_new(h, "spans_dropped", json_integer((json_int_t)ts.spans_dropped));
			json_object_set_new(h, "spans_failed", json_integer((json_int_t)ts.spans_failed));
		}
		json_object_set_new(r, "http", h);
	}
	return r;
}

int bm_proxy_mesh_rows(struct bm_proxy *p, struct bm_mesh_row **out, size_t *n)
{
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	for (int i = 0; p && i < p->n; i++) {
		int err = p->w[i].mt ? bm_mesh_collect(p->w[i].mt, out, n, &cap) : 0;

		if (err) {
			free(*out);
			*out = NULL;
			*n = 0;
			return err;
		}
	}
	return 0;
}

int bm_proxy_req_rows(struct bm_proxy *p, struct bm_req_row **out, size_t *n)
{
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	for (int i = 0; p && i < p->n; i++) {
		int err = p->w[i].rq ? bm_req_collect(p->w[i].rq, out, n, &cap) : 0;

		if (err) {
			free(*out);
			*out = NULL;
			*n = 0;
			return err;
		}
	}
	return 0;
}

uint64_t bm_proxy_req_overflow(struct bm_proxy *p)
{
	uint64_t n = 0;

	for (int i = 0; p && i < p->n; i++)
		if (p->w[i].rq)
			n += bm_req_table_overflow(p->w[i].rq);
	return n;
}
