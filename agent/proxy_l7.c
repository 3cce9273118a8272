/*
 * The proxy workers' side of the HTTP engine (agent/l7proxy.c): the owner
 * of each of its downstream connections (struct l7user), its ops (upstream
 * sockets from the right netns or on an HBONE stream, the policy
 * decisions, finished requests into counters, access logs and traces,
 * ejections into the BPF map), and the two ways in: an outbound connection
 * to an L7 service, and an inbound one whose policy needs HTTP attributes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <bpf/bpf.h>
#include "accesslog.h"
#include "agent.h"
#include "capture.h"
#include "l7.h"
#include "l7proxy.h"
#include "log.h"
#include "policy.h"
#include "proxy_int.h"
#include "reqmetrics.h"
#include "relay.h"
#include "tracing.h"

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

int px_pod_needs_http(struct worker *w, const struct ppod *pod)
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
	px_pod_get(pod);
	return u;
}

static void l7_release(void *user)
{
	struct l7user *u = user;

	if (!u)
		return;
	px_pod_put(u->pod);
	free(u);
}

static void l7_attrs(const struct l7user *u, struct bm_conn_attrs *at, char *ns, size_t len,
		     int per_request)
{
	memset(at, 0, sizeof(*at));
	at->src_principal = u->principal[0] ? u->principal : NULL;
	at->src_namespace = px_principal_ns(at->src_principal, ns, len);
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
int px_inbound_l7_start(struct worker *w, struct ppod *dst, int fd, const char *principal,
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
	if (px_principal_ns(u->principal, ns, sizeof(ns)))
		snprintf(peer.src_ns, sizeof(peer.src_ns), "%s", ns);
	peer.src_ip = src_ip;
	peer.dst_ip = dst_ip;
	peer.dst_port = dst_port;
	snprintf(peer.dst_ns, sizeof(peer.dst_ns), "%s", dst->cfg.ns);
	snprintf(peer.dst_name, sizeof(peer.dst_name), "%s", dst->cfg.name);
	return bm_l7_engine_accept(w->l7, fd, &peer);
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
	dst = px_worker_pod_by_ip(w, b->ip);
	if (dst) {
		/* a pod of this node: its policy here, no TLS */
		struct bm_conn_attrs at = { 0 };
		char ns[64];
		int l7 = px_pod_needs_http(w, dst);

		at.src_principal = src->principal[0] ? src->principal : NULL;
		at.src_namespace = px_principal_ns(src->principal, ns, sizeof(ns));
		at.src_ip = src->cfg.ip;
		at.dst_ip = b->ip;
		at.dst_port = ntohs(b->port);
		at.http_per_request = (uint8_t)l7;
		at.dst_pod_ns = dst->cfg.ns;
		at.dst_pod_name = dst->cfg.name;
		if (px_policy(w, &at, BM_PDIR_OUT_LOCAL))
			return -EACCES;
		if (!l7) {
			*fd = bm_netns_connect_fd(dst->nsfd, BM_DELIVERY_SRC, b->ip, at.dst_port);
			return *fd < 0 ? *fd : 0;
		}
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
			return -errno;
		err = px_inbound_l7_start(w, dst, sv[0], at.src_principal, src->cfg.ip, b->ip,
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
		err = px_l7_hbone_open(w, src, sv[0], b->ip, b->port);
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
	return px_policy(u->w, &at, BM_PDIR_IN_PLAIN);
}

static int l7_authorize(void *ctx, const struct bm_l7_authz_req *rq, struct bm_l7_authz_res *res)
{
	struct worker *w = ctx;
	struct l7user *u = rq->peer->user;
	struct bm_policy_http_result *pr;
	struct bm_policy_http h = {
		.method = rq->method, .host = rq->host, .path = rq->path,
		.query = rq->query && rq->query[0] ? rq->query : NULL,
		.hdr = rq->hdr, .n_hdr = rq->n_hdr,
	};
	struct bm_conn_attrs at;
	char ns[64];
	int rc;

	/* No HTTP policy anywhere: allowed, nothing to strip (res is zeroed). */
	if (!bm_policy_http_any())
		return 0;
	pr = calloc(1, sizeof(*pr));
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

	px_ip_str(b->ip, ip);
	if (bpf_map_update_elem(w->p->a->loader.fd.backend_eject, &b->id, &one, BPF_ANY))
		bm_log("outlier: eject %s:%u (id %u) from %s: %s", ip, ntohs(b->port), b->id, c->name,
		       strerror(errno));
	else
		bm_log("outlier: ejected %s:%u from %s", ip, ntohs(b->port), c->name);
}

const struct bm_l7_ops px_l7_ops = {
	.connect = l7_connect,
	.release = l7_release,
	.complete = l7_complete,
	.authorize = l7_authorize,
	.l4_allowed = l7_l4_allowed,
	.ejected = l7_ejected,
};

/* A connection connect4 captured for an L7 service (orig_dst bip == 0):
 * no backend chosen, the engine routes each request. */
void px_outbound_l7(struct worker *w, struct ppod *src, int fd, const struct bm_orig_dst *od)
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
