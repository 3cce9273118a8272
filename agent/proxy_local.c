/*
 * Plaintext connections of pods: the 15001 outbound capture (an L7
 * service goes to the HTTP engine, another node to HBONE, a pod of this
 * node gets its policy check and the delivery here, no TLS) and the 15006
 * plaintext that sk_lookup steered here (policy with no principal: STRICT
 * refuses it). Deliveries come from 127.0.0.6 and are spliced
 * (agent/relay.c).
 */
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "agent.h"
#include "capture.h"
#include "policy.h"
#include "proxy_int.h"
#include "relay.h"

/* ---- same-node and plaintext delivery ----------------------------------- */

int px_policy(struct worker *w, const struct bm_conn_attrs *at, enum bm_pdir dir)
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

void px_accept_inbound_plain(struct worker *w, struct ppod *pod, int fd,
			     const struct sockaddr_in *peer)
{
	struct sockaddr_in dst;
	socklen_t dl = sizeof(dst);
	struct bm_conn_attrs at = { 0 };

	/* The local address is where the client was going (sk_lookup). */
	if (getsockname(fd, (struct sockaddr *)&dst, &dl)) {
		w->st.conns[BM_PDIR_IN_PLAIN][BM_PRES_ERROR]++;
		bm_close_reset(fd);
		return;
	}
	at.src_ip = peer->sin_addr.s_addr;
	at.dst_ip = dst.sin_addr.s_addr;
	at.dst_port = ntohs(dst.sin_port);
	at.dst_pod_ns = pod->cfg.ns;
	at.dst_pod_name = pod->cfg.name;
	at.http_per_request = (uint8_t)px_pod_needs_http(w, pod);
	/* src_principal NULL: plaintext. STRICT refuses it here. */
	if (px_policy(w, &at, BM_PDIR_IN_PLAIN)) {
		bm_close_reset(fd);
		return;
	}
	if (at.http_per_request) {
		px_inbound_l7_start(w, pod, fd, NULL, at.src_ip, at.dst_ip, at.dst_port, 0,
				    BM_PDIR_IN_PLAIN);
		return;
	}
	deliver_local(w, fd, NULL, NULL, pod, at.dst_ip, at.dst_port, BM_PDIR_IN_PLAIN);
}

void px_accept_outbound(struct worker *w, struct ppod *src, int fd, const struct sockaddr_in *peer)
{
	struct bm_agent *a = w->p->a;
	struct bm_orig_dst od;
	struct ppod *dst;
	struct bm_conn_attrs at = { 0 };

	if (bm_capture_orig_dst(&a->loader, src->netns_cookie, ntohs(peer->sin_port), &od)) {
		/* Not captured by connect4 (someone dialled 127.0.0.1:15001). */
		w->st.conns[BM_PDIR_OUT_LOCAL][BM_PRES_ERROR]++;
		bm_close_reset(fd);
		return;
	}
	if (!od.bip) {
		px_outbound_l7(w, src, fd, &od);
		return;
	}
	dst = px_worker_pod_by_ip(w, od.bip);
	if (!dst) {
		px_outbound_hbone(w, src, fd, &od, ntohs(peer->sin_port));
		return;
	}
	/* Both ends are this meshd: no TLS, same identity and policy. */
	char ns[64];

	at.src_principal = src->principal[0] ? src->principal : NULL;
	at.src_namespace = px_principal_ns(src->principal, ns, sizeof(ns));
	at.src_ip = src->cfg.ip;
	at.dst_ip = od.bip;
	at.dst_port = ntohs(od.bport);
	at.dst_pod_ns = dst->cfg.ns;
	at.dst_pod_name = dst->cfg.name;
	at.http_per_request = (uint8_t)px_pod_needs_http(w, dst);
	if (px_policy(w, &at, BM_PDIR_OUT_LOCAL)) {
		bm_close_reset(fd);
		return;
	}
	if (at.http_per_request) {
		px_inbound_l7_start(w, dst, fd, at.src_principal, src->cfg.ip, od.bip, at.dst_port,
				    0, BM_PDIR_OUT_LOCAL);
		return;
	}
	deliver_local(w, fd, src, &od, dst, od.bip, at.dst_port, BM_PDIR_OUT_LOCAL);
}
