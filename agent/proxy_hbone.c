/*
 * HBONE for the proxy workers: the client pool (a TLS 1.3 connection per
 * source identity, source IP and destination IP, sessions kept for
 * resumption), the CONNECT streams opened on it for outbound connections
 * and for the HTTP engine's upstreams, and the 15008 server (mTLS with the
 * pod's SVID, policy on the peer's principal: 401, delivery to the app:
 * 503 if it fails). The HTTP/2 side of a connection is agent/hbone.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "ca.h"
#include "capture.h"
#include "hbone.h"
#include "log.h"
#include "mesh.h"
#include "policy.h"
#include "proxy_int.h"
#include "relay.h"
#include "tlsctx.h"

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
		px_pod_put(o->pod);
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

/* An HBONE stream to bip:bport (network order) carrying fd, which is
 * consumed whatever happens: 0; -EHOSTUNREACH when no tunnel could be had
 * (fd reset); -EAGAIN when both tunnels tried were draining (fd reset);
 * another -errno from the stream (fd and row closed there). */
static int hbone_open(struct worker *w, struct ppod *src, int fd, uint32_t bip, uint16_t bport,
		      uint32_t svc_id, const char *forwarded)
{
	char authority[32], bs[INET_ADDRSTRLEN];
	struct bm_hbone_conn *c = pool_find(w, src, bip);
	struct bm_mesh_row *row = hbone_source_row(w, src, bip, bport, svc_id);

	px_ip_str(bip, bs);
	snprintf(authority, sizeof(authority), "%s:%u", bs, ntohs(bport));
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
			return err;
		c = NULL; /* that connection is draining: dial a fresh one */
	}
	bm_close_reset(fd);
	bm_mesh_close(row, 0, 0);
	return -EAGAIN;
}

void px_outbound_hbone(struct worker *w, struct ppod *src, int fd, const struct bm_orig_dst *od,
		       uint16_t app_port)
{
	char forwarded[64], sip[INET_ADDRSTRLEN];
	int err;

	px_ip_str(src->cfg.ip, sip);
	snprintf(forwarded, sizeof(forwarded), "for=\"%s:%u\"", sip, app_port);
	err = hbone_open(w, src, fd, od->bip, od->bport, od->svc_id, forwarded);
	if (err == -EHOSTUNREACH)
		w->st.conns[BM_PDIR_OUT_HBONE][BM_PRES_UPSTREAM]++;
	else if (err)
		w->st.conns[BM_PDIR_OUT_HBONE][BM_PRES_ERROR]++;
}

/* The HTTP engine's upstream over HBONE (see hbone_open). */
int px_l7_hbone_open(struct worker *w, struct ppod *src, int fd, uint32_t bip, uint16_t bport)
{
	char forwarded[64], ss[INET_ADDRSTRLEN];

	px_ip_str(src->cfg.ip, ss);
	snprintf(forwarded, sizeof(forwarded), "for=\"%s\"", ss);
	return hbone_open(w, src, fd, bip, bport, 0, forwarded);
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
	at.src_namespace = px_principal_ns(c->peer, ns, sizeof(ns));
	at.src_ip = c->peer_ip;
	at.dst_ip = ip.s_addr;
	at.dst_port = (uint16_t)port;
	at.dst_pod_ns = pod->cfg.ns;
	at.dst_pod_name = pod->cfg.name;
	at.http_per_request = (uint8_t)px_pod_needs_http(o->w, pod);
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
		if (px_inbound_l7_start(o->w, pod, sv[0], c->peer, c->peer_ip, ip.s_addr,
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

void px_accept_hbone(struct worker *w, struct ppod *pod, int fd, const struct sockaddr_in *peer)
{
	struct conn_owner *o;
	struct bm_hbone_conn *c;
	SSL *ssl;

	if (!pod->sctx) {
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
	px_pod_get(pod);
	c = bm_hbone_conn_new(&w->loop, fd, ssl, 1, &hbone_ops, o);
	if (!c) {
		px_pod_put(pod);
		free(o);
		return;
	}
	c->peer_ip = peer->sin_addr.s_addr;
	conn_track(w, c);
}
