/*
 * Identities follow enrolment: one SVID per service account that has a pod
 * on this node. A pod's service account is its WorkloadEntry's
 * serviceAccount (Istio's default "default"), found by the pod's IP in its
 * namespace. Where certificates come from (docs/identity.md §5, §6):
 *   embedded  this meshd holds the CA and issues locally;
 *   serve     the same, and it signs other nodes' CSRs (--ca-serve);
 *   client    no CA key: every SVID by CSR from the CA service (--ca-addr).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include "agent.h"
#include "ca.h"
#include "identity.h"
#include "log.h"
#include "authz.h"
#include "capture.h"
#include "casvc.h"
#include "mesh.h"
#include "policy.h"
#include "resutil.h"
#include "proxy.h"

/* One agent per process: the CA service or client lives beside it. */
static struct bm_casvc *ca_service;    /* --ca-serve */
static struct bm_caclient *ca_client;  /* --ca-addr */
static int ids_pending;                /* an issuance failed: retried from the tick */
static time_t ids_retry_at;

static int client_init(struct bm_agent *a, const struct bm_mesh_opts *o, const char *td)
{
	struct bm_caclient_opts co = { .addr = o->ca_addr, .bundle = o->ca_bundle, .node = a->node,
				       .state_dir = a->run_dir, .trust_domain = td,
				       .join_token = o->join_token };
	struct bm_identity_opts io = { .trust_domain = td, .ttl = o->cert_ttl, .issue = bm_caclient_issue };
	int err;

	if (o->ca_serve || o->ca_cert) {
		bm_log("mesh CA: --ca-addr (a node without the CA key) excludes --ca-serve and --ca-cert");
		return -EINVAL;
	}
	if (!o->ca_bundle) {
		bm_log("mesh CA: --ca-addr needs --ca-bundle ROOT.pem (the root to trust)");
		return -EINVAL;
	}
	err = bm_caclient_new(&co, &ca_client);
	if (err)
		return err;
	io.issue_arg = ca_client;
	err = bm_identity_init(&a->idm, &io);
	if (!err)
		err = bm_identity_trust_add(&a->idm, bm_caclient_root(ca_client));
	if (err) {
		bm_log("identity manager: %s", strerror(-err));
		bm_caclient_free(ca_client);
		ca_client = NULL;
		return err;
	}
	bm_log("mesh CA: no CA key on this node; SVIDs by CSR from %s", o->ca_addr);
	/* A CA that is down now is retried from the tick. */
	bm_caclient_node_cert(ca_client, time(NULL));
	return 0;
}

int bm_mesh_init(struct bm_agent *a, const struct bm_mesh_opts *o)
{
	const char *td = o->trust_domain && *o->trust_domain ? o->trust_domain : BM_TRUST_DOMAIN_DEFAULT;
	struct bm_identity_opts io = { .trust_domain = td, .ttl = o->cert_ttl };
	int err;

	if (o->ca_addr) {
		err = client_init(a, o, td);
		if (err)
			return err;
		a->mesh_on = 1;
		return 0;
	}
	if (o->ca_cert && o->ca_key)
		err = bm_ca_load_external(o->ca_cert, o->ca_key, td, &a->ca);
	else
		err = bm_ca_load_or_create(o->ca_dir, td, &a->ca);
	if (err) {
		bm_log("mesh CA (%s): %s", o->ca_cert ? o->ca_cert : o->ca_dir, strerror(-err));
		return err;
	}
	io.ca = a->ca;
	err = bm_identity_init(&a->idm, &io);
	if (err) {
		bm_log("identity manager: %s", strerror(-err));
		bm_ca_free(a->ca);
		a->ca = NULL;
		return err;
	}
	if (o->ca_serve) {
		/* The service is an addition: without it this node still works. */
		err = bm_casvc_new(a->ca, a->store_url, 0, &ca_service);
		if (!err)
			err = bm_casvc_listen(ca_service, o->ca_serve);
		if (err) {
			bm_log("mesh CA: the CA service on %s is not running: %s", o->ca_serve, strerror(-err));
			bm_casvc_free(ca_service);
			ca_service = NULL;
		}
	}
	a->mesh_on = 1;
	return 0;
}

int bm_mesh_join(const struct bm_mesh_opts *o, const char *node, const char *state_dir)
{
	struct bm_caclient_opts co = { .addr = o->ca_addr, .bundle = o->ca_bundle, .node = node,
				       .state_dir = state_dir, .trust_domain = o->trust_domain,
				       .join_token = o->join_token };
	struct bm_caclient *c;
	int err;

	if (!o->ca_addr || !o->ca_bundle) {
		bm_log("--join-only needs --ca-addr and --ca-bundle");
		return -EINVAL;
	}
	err = bm_caclient_new(&co, &c);
	if (err)
		return err;
	err = bm_caclient_node_cert(c, time(NULL));
	bm_caclient_free(c);
	return err;
}

void bm_mesh_free(struct bm_agent *a)
{
	if (!a->mesh_on)
		return;
	/* The service thread signs with a->ca: stop it first. */
	bm_casvc_free(ca_service);
	ca_service = NULL;
	bm_identity_free(&a->idm);
	bm_caclient_free(ca_client);
	ca_client = NULL;
	bm_ca_free(a->ca);
	a->ca = NULL;
	a->mesh_on = 0;
}

json_t *bm_mesh_ca_json(struct bm_agent *a)
{
	struct bm_ca root = { 0 };
	json_t *j;

	if (ca_client) {
		/* Only the certificate: bm_ca_show_json reads nothing else. */
		root.cert = bm_caclient_root(ca_client);
		snprintf(root.trust_domain, sizeof(root.trust_domain), "%s", a->idm.trust_domain);
		j = bm_ca_show_json(&root);
		if (j) {
			json_object_set_new(j, "mode", json_string("client"));
			json_object_set_new(j, "client", bm_caclient_status_json(ca_client));
		}
		return j;
	}
	j = bm_ca_show_json(a->ca);
	if (j) {
		json_object_set_new(j, "mode", json_string(ca_service ? "serve" : "embedded"));
		if (ca_service)
			json_object_set_new(j, "service", bm_casvc_stats_json(ca_service));
	}
	return j;
}

json_t *bm_mesh_ca_request_json(struct bm_agent *a, const char *ns, const char *sa)
{
	if (!ca_client)
		return json_pack("{s:b,s:s}", "ok", 0, "error",
				 "this node holds the CA key; requests are for nodes started with --ca-addr");
	return bm_caclient_request_json(ca_client, ns, sa, a->idm.ttl);
}

static const char *label(const json_t *we, const char *key)
{
	const char *v = json_string_value(json_object_get(
		json_object_get(json_object_get(we, "spec"), "labels"), key));

	return v ? v : "";
}

/* serviceAccount of the WorkloadEntry at ip in namespace ns (Istio's
 * default "default"). */
static const char *service_account(const json_t *res, const char *ns, const char *ip)
{
	const char *sa = json_string_value(json_object_get(
		json_object_get(bm_find_workload_entry(res, ns, ip), "spec"), "serviceAccount"));

	return sa && *sa ? sa : "default";
}

static struct bm_mesh_pod *find_mpod(struct bm_agent *a, const char *ns, const char *name)
{
	for (size_t i = 0; i < a->n_mpods; i++)
		if (!strcmp(a->mpods[i].ns, ns) && !strcmp(a->mpods[i].name, name))
			return &a->mpods[i];
	return NULL;
}

static void close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* What the proxy knows of a pod besides its listeners: identity, labels. */
static void proxy_pod_fill(struct bm_agent *a, const struct bm_pod *p, const json_t *we,
			   uint32_t ip, struct bm_proxy_pod *pp)
{
	char *lj;

	snprintf(pp->name, sizeof(pp->name), "%s", p->name);
	snprintf(pp->ns, sizeof(pp->ns), "%s", p->ns);
	snprintf(pp->sa, sizeof(pp->sa), "%s", service_account(a->resources, p->ns, p->ip));
	bm_spiffe_id_build(a->idm.trust_domain, pp->ns, pp->sa, pp->spiffe_id, sizeof(pp->spiffe_id));
	pp->ip = ip;
	snprintf(pp->netns, sizeof(pp->netns), "%s", p->netns);
	/* sourceLabels of the HTTP path's route matches */
	lj = json_dumps(json_object_get(json_object_get(we, "spec"), "labels"),
			JSON_COMPACT | JSON_SORT_KEYS);
	snprintf(pp->labels, sizeof(pp->labels), "%s", lj && strlen(lj) < sizeof(pp->labels) ? lj : "{}");
	free(lj);
	snprintf(pp->app, sizeof(pp->app), "%s", label(we, "app"));
	snprintf(pp->version, sizeof(pp->version), "%s", label(we, "version"));
}

/* A digest of what proxy_pod_fill() takes from the store, to notice when
 * the pod's WorkloadEntry arrives or changes after enrolment. */
static uint64_t proxy_pod_sig(const struct bm_proxy_pod *pp)
{
	uint64_t h = 1469598103934665603ULL;

	for (const char *s = pp->sa; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ULL;
	h = (h ^ '|') * 1099511628211ULL;
	for (const char *s = pp->labels; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ULL;
	return h;
}

/* Listeners in the pod's netns, sk_lookup steering, proxy entry. A pod
 * outside the mesh (inbound == 0) only gets the outbound listener: its
 * connections to services with L7 policy and to mesh workloads come to
 * meshd, nothing is steered into it. */
static int mesh_pod_add(struct bm_agent *a, const struct bm_pod *p, const json_t *we,
			const struct bm_pod_inbound *mode, int inbound)
{
	struct bm_proxy_pod pp = { 0 };
	struct bm_mesh_pod *mp, *nm;
	char key[256];
	uint32_t slot, ip;
	int fds[3], err;

	inet_pton(AF_INET, p->ip, &ip);
	snprintf(key, sizeof(key), "%s/%s", p->ns, p->name);
	err = bm_ids_get(&a->rec.ids, BM_ID_POD, key, &slot);
	if (err)
		return err;
	fds[0] = bm_netns_listen(p->netns, htonl(INADDR_LOOPBACK), BM_PORT_OUTBOUND, 1024);
	fds[1] = inbound ? bm_netns_listen(p->netns, INADDR_ANY, BM_PORT_INBOUND, 1024) : -1;
	fds[2] = inbound ? bm_netns_listen(p->netns, ip, BM_PORT_HBONE, 1024) : -1;
	for (int i = 0; i < (inbound ? 3 : 1); i++)
		if (fds[i] < 0) {
			err = fds[i];
			bm_log("pod %s: listener in netns %s: %s", key, p->netns, strerror(-err));
			goto err_fds;
		}
	if (inbound) {
		err = bm_capture_pod_attach(&a->loader, p->netns, ip, slot, mode, fds[1]);
		if (err)
			goto err_fds;
	}
	proxy_pod_fill(a, p, we, ip, &pp);
	pp.fd_outbound = fds[0];
	pp.fd_inbound = fds[1];
	pp.fd_hbone = fds[2];
	err = bm_proxy_pod_add(a->proxy, &pp);
	if (err) {
		if (inbound)
			bm_capture_pod_detach(&a->loader, ip, slot);
		goto err_fds;
	}
	nm = realloc(a->mpods, (a->n_mpods + 1) * sizeof(*nm));
	if (!nm) {
		bm_proxy_pod_remove(a->proxy, p->ns, p->name);
		if (inbound)
			bm_capture_pod_detach(&a->loader, ip, slot);
		return -ENOMEM;
	}
	a->mpods = nm;
	mp = &a->mpods[a->n_mpods++];
	memset(mp, 0, sizeof(*mp));
	snprintf(mp->name, sizeof(mp->name), "%s", p->name);
	snprintf(mp->ns, sizeof(mp->ns), "%s", p->ns);
	mp->ip = ip;
	mp->slot = slot;
	mp->live = 1;
	mp->inbound = inbound;
	mp->sig = proxy_pod_sig(&pp);
	if (inbound)
		bm_log("pod %s in the mesh: capture on, identity %s", key, pp.spiffe_id);
	else
		bm_log("pod %s: outbound capture only (not in the mesh)", key);
	return 0;

err_fds:
	close_fds(fds, 3);
	bm_ids_release(&a->rec.ids, BM_ID_POD, key);
	return err;
}

static void mesh_pod_remove(struct bm_agent *a, size_t i)
{
	struct bm_mesh_pod *mp = &a->mpods[i];
	char key[256];

	bm_proxy_pod_remove(a->proxy, mp->ns, mp->name);
	if (mp->inbound)
		bm_capture_pod_detach(&a->loader, mp->ip, mp->slot);
	snprintf(key, sizeof(key), "%s/%s", mp->ns, mp->name);
	bm_ids_release(&a->rec.ids, BM_ID_POD, key);
	bm_log("pod %s left the %s", key, mp->inbound ? "mesh" : "proxy");
	a->mpods[i] = a->mpods[--a->n_mpods];
}

/* Every pod gets the outbound listener; pods labelled for the mesh also get
 * inbound capture, and their PeerAuthentication mode is (re)published for
 * sk_lookup's fail-closed decision. */
static void sync_capture(struct bm_agent *a)
{
	for (size_t i = 0; i < a->n_mpods; i++)
		a->mpods[i].live = 0;
	for (size_t i = 0; i < a->pods.n; i++) {
		const struct bm_pod *p = &a->pods.p[i];
		const json_t *we = bm_find_workload_entry(a->resources, p->ns, p->ip);
		struct bm_pod_inbound mode;
		struct bm_mesh_pod *mp;
		int in_mesh;

		if (!p->netns[0])
			continue;
		in_mesh = we && !strcmp(label(we, BM_DATAPLANE_LABEL), BM_DATAPLANE_MESH);
		memset(&mode, 0, sizeof(mode));
		if (in_mesh)
			bm_peerauth_mode(a->resources, BM_ROOT_NAMESPACE, p->ns,
					 json_object_get(json_object_get(we, "spec"), "labels"), &mode);
		mp = find_mpod(a, p->ns, p->name);
		if (mp && mp->inbound != in_mesh) {
			/* joined or left the mesh: re-enrol with the other listeners */
			mesh_pod_remove(a, (size_t)(mp - a->mpods));
			mp = NULL;
		}
		if (mp) {
			struct bm_proxy_pod pp = { 0 };

			mp->live = 1;
			if (in_mesh)
				bm_capture_pod_mode(&a->loader, mp->ip, &mode);
			proxy_pod_fill(a, p, we, mp->ip, &pp);
			if (proxy_pod_sig(&pp) != mp->sig) {
				/* service account or labels changed: same listeners,
				 * open connections continue */
				pp.fd_outbound = pp.fd_inbound = pp.fd_hbone = -1;
				if (!bm_proxy_pod_add(a->proxy, &pp))
					mp->sig = proxy_pod_sig(&pp);
			}
			continue;
		}
		mesh_pod_add(a, p, we, &mode, in_mesh);
	}
	for (size_t i = a->n_mpods; i-- > 0;)
		if (!a->mpods[i].live)
			mesh_pod_remove(a, i);
	bm_ids_save(&a->rec.ids);
}

/* Identities for the service accounts with pods here. Called with a->lock
 * held. A node without the CA key issues over the network (each exchange
 * bounded by BM_CASVC_TIMEOUT_MS): the agent lock is let go meanwhile, so
 * metrics and new tunnels do not wait for the CA. Only this (main) thread
 * writes pods, resources and identities, so nothing it reads changes. */
static void sync_identities(struct bm_agent *a)
{
	const char **pairs;
	char *buf;
	size_t n = 0;
	int err;

	pairs = calloc(a->pods.n + 1, sizeof(*pairs));
	buf = calloc(a->pods.n + 1, 256);
	if (!pairs || !buf) {
		ids_pending = 1;
		goto out;
	}
	for (size_t i = 0; i < a->pods.n; i++) {
		const struct bm_pod *p = &a->pods.p[i];
		char *slot = buf + n * 256;
		int dup = 0;

		snprintf(slot, 256, "%s/%s", p->ns, service_account(a->resources, p->ns, p->ip));
		for (size_t j = 0; j < n; j++)
			dup |= !strcmp(pairs[j], slot);
		if (!dup)
			pairs[n++] = slot;
	}
	if (ca_client)
		pthread_mutex_unlock(&a->lock);
	err = bm_identity_sync(&a->idm, pairs, n, time(NULL));
	if (ca_client)
		pthread_mutex_lock(&a->lock);
	ids_pending = err < 0;
	if (err < 0 && err != -EAGAIN)
		bm_log("identities: %s", strerror(-err));
	else if (err > 0)
		bm_log("identities: %d issued, %zu service accounts on this node", err, n);
out:
	free(pairs);
	free(buf);
}

void bm_mesh_sync(struct bm_agent *a)
{
	if (!a->mesh_on)
		return;
	sync_identities(a);
	if (a->proxy)
		sync_capture(a);
}

void bm_mesh_tick(struct bm_agent *a, time_t now)
{
	int n;

	if (!a->mesh_on)
		return;
	if (ca_client) {
		/* Join or renew the node certificate when due; SVIDs the CA
		 * could not give yet are asked for again (the client backs off). */
		bm_caclient_node_cert(ca_client, now);
		if (ids_pending && now >= ids_retry_at) {
			ids_retry_at = now + 1;
			pthread_mutex_lock(&a->lock);
			sync_identities(a);
			pthread_mutex_unlock(&a->lock);
		}
		n = bm_identity_rotate_due(&a->idm, now);
	} else {
		pthread_mutex_lock(&a->lock);
		n = bm_identity_rotate_due(&a->idm, now);
		pthread_mutex_unlock(&a->lock);
	}
	if (n > 0)
		bm_log("identities: %d certificate(s) rotated at half-life", n);
	else if (n < 0 && n != -EAGAIN)
		bm_log("identities: rotation failed: %s", strerror(-n));
}

int bm_mesh_expected_identity(struct bm_agent *a, uint32_t ip, char *buf, size_t len)
{
	char ns[256], sa[256];
	int err = bm_policy_workload_account(ip, ns, sizeof(ns), sa, sizeof(sa));

	/* The trust domain is set once at start. */
	return err ? err : bm_spiffe_id_build(a->idm.trust_domain, ns, sa, buf, len);
}
