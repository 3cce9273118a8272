/*
 * Identities follow enrolment: one SVID per service account that has a pod
 * on this node. A pod's service account is its WorkloadEntry's
 * serviceAccount (Istio's default "default"), found by the pod's IP in its
 * namespace. Embedded mode: this meshd holds the CA and issues locally
 * (docs/identity.md describes the CSR flow for several nodes).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "agent.h"
#include "ca.h"
#include "identity.h"
#include "log.h"
#include "mesh.h"

int bm_mesh_init(struct bm_agent *a, const struct bm_mesh_opts *o)
{
	const char *td = o->trust_domain && *o->trust_domain ? o->trust_domain : BM_TRUST_DOMAIN_DEFAULT;
	struct bm_identity_opts io = { .trust_domain = td, .ttl = o->cert_ttl };
	int err;

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
	a->mesh_on = 1;
	return 0;
}

void bm_mesh_free(struct bm_agent *a)
{
	if (!a->mesh_on)
		return;
	bm_identity_free(&a->idm);
	bm_ca_free(a->ca);
	a->ca = NULL;
	a->mesh_on = 0;
}

/* serviceAccount of the WorkloadEntry at ip in namespace ns. */
static const char *service_account(const json_t *res, const char *ns, const char *ip)
{
	size_t i;
	json_t *r;

	json_array_foreach(res, i, r) {
		const json_t *md = json_object_get(r, "metadata"), *spec = json_object_get(r, "spec");
		const char *rns = json_string_value(json_object_get(md, "namespace"));
		const char *addr = json_string_value(json_object_get(spec, "address"));
		const char *sa = json_string_value(json_object_get(spec, "serviceAccount"));

		if (strcmp(json_string_value(json_object_get(r, "kind")) ?: "", "WorkloadEntry") ||
		    !addr || strcmp(addr, ip) || strcmp(rns ? rns : "default", ns))
			continue;
		return sa && *sa ? sa : "default";
	}
	return "default";
}

void bm_mesh_sync(struct bm_agent *a)
{
	const char **pairs;
	char *buf;
	size_t n = 0;
	int err;

	if (!a->mesh_on)
		return;
	pairs = calloc(a->pods.n + 1, sizeof(*pairs));
	buf = calloc(a->pods.n + 1, 256);
	if (!pairs || !buf)
		goto out;
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
	err = bm_identity_sync(&a->idm, pairs, n, time(NULL));
	if (err < 0)
		bm_log("identities: %s", strerror(-err));
	else if (err > 0)
		bm_log("identities: %d issued, %zu service accounts on this node", err, n);
out:
	free(pairs);
	free(buf);
}

void bm_mesh_tick(struct bm_agent *a, time_t now)
{
	int n;

	if (!a->mesh_on)
		return;
	pthread_mutex_lock(&a->lock);
	n = bm_identity_rotate_due(&a->idm, now);
	pthread_mutex_unlock(&a->lock);
	if (n > 0)
		bm_log("identities: %d certificate(s) rotated at half-life", n);
	else if (n < 0)
		bm_log("identities: rotation failed: %s", strerror(-n));
}
