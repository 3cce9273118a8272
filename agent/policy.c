/*
 * Inbound decisions for mesh connections, called by proxy workers once per
 * connection (never per byte). Workers take a reference to the current store
 * snapshot under the agent lock (a pointer copy) and evaluate without it:
 * jansson's reference counts are atomic and evaluation only reads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "agent.h"
#include "authz.h"
#include "log.h"
#include "policy.h"
#include "resutil.h"

/* Labels of the workload at ip in namespace ns (its WorkloadEntry). */
static const json_t *workload_labels(const json_t *res, const char *ns, uint32_t ip)
{
	char addr[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &ip, addr, sizeof(addr));
	return json_object_get(json_object_get(bm_find_workload_entry(res, ns, addr), "spec"), "labels");
}

static uint8_t port_mode(const struct bm_pod_inbound *pi, uint16_t port)
{
	for (int i = 0; i < pi->n_ports && i < BM_POD_PORT_OVERRIDES; i++)
		if (pi->port[i] == port)
			return pi->port_mode[i];
	return pi->mode;
}

int bm_policy_check(struct bm_agent *a, const struct bm_conn_attrs *c, char *reason, size_t len)
{
	struct bm_authz_req r = { .principal = c->src_principal, .src_ip = c->src_ip,
				  .dst_ip = c->dst_ip, .dst_port = c->dst_port };
	const char *ns = c->dst_pod_ns ? c->dst_pod_ns : "default";
	struct bm_pod_inbound pi;
	const json_t *labels;
	char peer_ns[64] = "";
	json_t *res;
	int err = 0;

	if (len)
		reason[0] = 0;
	pthread_mutex_lock(&a->lock);
	res = json_incref(a->resources);
	pthread_mutex_unlock(&a->lock);
	if (!res)
		return 0; /* no configuration yet: nothing to enforce */

	labels = workload_labels(res, ns, c->dst_ip);
	bm_peerauth_mode(res, BM_ROOT_NAMESPACE, ns, labels, &pi);
	if (!c->src_principal && port_mode(&pi, c->dst_port) == BM_MTLS_STRICT) {
		snprintf(reason, len, "peer_authentication_strict");
		err = -EACCES;
		goto out;
	}
	if (c->src_namespace) {
		r.ns = c->src_namespace;
	} else if (c->src_principal && sscanf(c->src_principal, "%*[^/]/ns/%63[^/]", peer_ns) == 1) {
		r.ns = peer_ns;
	}
	err = bm_authz_eval(res, BM_ROOT_NAMESPACE, ns, labels, &r, reason, len);
out:
	json_decref(res);
	return err;
}
