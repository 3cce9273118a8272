/*
 * Istio's label set (reference §7.2) of istio_tcp_* and istio_request*
 * series: label names and order, the label precedence for app and version,
 * the `unknown` and `latest` fallbacks, principals, short service names.
 * Who the ends of a row are comes from agent/metrics_lookup.c; this file
 * only labels them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "metrics.h"
#include "metrics_int.h"

#define TRUST_DOMAIN     "cluster.local"   /* meshConfig.trustDomain default */
#define UNKNOWN          "unknown"

const char *const bm_istio_label_names[BM_L_COUNT] = {
	"reporter",
	"source_workload",
	"source_workload_namespace",
	"source_principal",
	"source_app",
	"source_version",
	"source_canonical_service",
	"source_canonical_revision",
	"source_cluster",
	"destination_workload",
	"destination_workload_namespace",
	"destination_principal",
	"destination_app",
	"destination_version",
	"destination_service",
	"destination_service_name",
	"destination_service_namespace",
	"destination_canonical_service",
	"destination_canonical_revision",
	"destination_cluster",
	"request_protocol",
	"response_flags",
	"connection_security_policy",
};

/* Label precedence of reference §7.2: app / canonical service, version /
 * canonical revision. */
static const char *const app_keys[] = { "service.istio.io/canonical-name",
					"app.kubernetes.io/name", "app", NULL };
static const char *const version_keys[] = { "service.istio.io/canonical-revision",
					    "app.kubernetes.io/version", "version", NULL };

static const char *first_label(const json_t *labels, const char *const *keys)
{
	for (; *keys; keys++) {
		const char *v = json_string_value(json_object_get(labels, *keys));

		if (v && *v)
			return v;
	}
	return NULL;
}

static const char *or_unknown(const char *v)
{
	return v && *v ? v : UNKNOWN;
}

void bm_peer_from_workload_entry(const json_t *we, struct bm_peer *p)
{
	const json_t *meta = json_object_get(we, "metadata");
	const json_t *spec = json_object_get(we, "spec");
	const char *wl;

	memset(p, 0, sizeof(*p));
	p->labels = json_object_get(spec, "labels");
	/* Istio names a WorkloadEntry's workload by this label, else the entry. */
	wl = json_string_value(json_object_get(p->labels, "service.istio.io/workload-name"));
	p->workload = wl && *wl ? wl : json_string_value(json_object_get(meta, "name"));
	p->ns = json_string_value(json_object_get(meta, "namespace"));
	p->sa = json_string_value(json_object_get(spec, "serviceAccount"));
}

/* "reviews.bookinfo.svc.cluster.local" in namespace bookinfo -> "reviews";
 * a host that is not NAME.NS.svc.* is its own name, as Istio does for
 * ServiceEntry hosts. */
static void short_service_name(const char *host, const char *ns, char *out, size_t len)
{
	const char *dot = strchr(host, '.');
	size_t nl = ns ? strlen(ns) : 0;

	if (dot && nl && !strncmp(dot + 1, ns, nl) && !strncmp(dot + 1 + nl, ".svc.", 5) &&
	    (size_t)(dot - host) < len) {
		memcpy(out, host, (size_t)(dot - host));
		out[dot - host] = 0;
		return;
	}
	snprintf(out, len, "%s", host);
}

static void principal(const struct bm_peer *p, char *out, size_t len)
{
	if (p && p->sa && *p->sa && p->ns && *p->ns)
		snprintf(out, len, "spiffe://%s/ns/%s/sa/%s", TRUST_DOMAIN, p->ns, p->sa);
	else
		snprintf(out, len, UNKNOWN);
}

int bm_tcp_series_init(struct bm_tcp_series *s, const struct bm_peer *src,
		       const struct bm_peer *dst, const struct bm_dest_service *svc,
		       const char *response_flags, const char *security_policy)
{
	static const struct bm_peer nobody;
	const char *val[BM_L_COUNT];
	char src_principal[512], dst_principal[512], svc_name[256];
	const char *app, *ver;
	size_t total = 0;
	char *w;

	memset(s, 0, sizeof(*s));
	if (!src)
		src = &nobody;
	if (!dst)
		dst = &nobody;
	principal(src, src_principal, sizeof(src_principal));
	principal(dst, dst_principal, sizeof(dst_principal));
	if (svc && svc->host && *svc->host)
		short_service_name(svc->host, svc->ns, svc_name, sizeof(svc_name));
	else
		snprintf(svc_name, sizeof(svc_name), UNKNOWN);

	val[BM_L_REPORTER] = "source";
	app = first_label(src->labels, app_keys);
	ver = first_label(src->labels, version_keys);
	val[BM_L_SOURCE_WORKLOAD] = or_unknown(src->workload);
	val[BM_L_SOURCE_WORKLOAD_NAMESPACE] = or_unknown(src->ns);
	val[BM_L_SOURCE_PRINCIPAL] = src_principal;
	val[BM_L_SOURCE_APP] = or_unknown(app);
	val[BM_L_SOURCE_VERSION] = or_unknown(ver);
	val[BM_L_SOURCE_CANONICAL_SERVICE] = or_unknown(app);
	val[BM_L_SOURCE_CANONICAL_REVISION] = ver ? ver : "latest";
	val[BM_L_SOURCE_CLUSTER] = UNKNOWN;   /* no cluster id until multi-cluster */
	app = first_label(dst->labels, app_keys);
	ver = first_label(dst->labels, version_keys);
	val[BM_L_DESTINATION_WORKLOAD] = or_unknown(dst->workload);
	val[BM_L_DESTINATION_WORKLOAD_NAMESPACE] = or_unknown(dst->ns);
	val[BM_L_DESTINATION_PRINCIPAL] = dst_principal;
	val[BM_L_DESTINATION_APP] = or_unknown(app);
	val[BM_L_DESTINATION_VERSION] = or_unknown(ver);
	val[BM_L_DESTINATION_SERVICE] = or_unknown(svc ? svc->host : NULL);
	val[BM_L_DESTINATION_SERVICE_NAME] = svc_name;
	val[BM_L_DESTINATION_SERVICE_NAMESPACE] = or_unknown(svc ? svc->ns : NULL);
	val[BM_L_DESTINATION_CANONICAL_SERVICE] = or_unknown(app);
	val[BM_L_DESTINATION_CANONICAL_REVISION] = ver ? ver : "latest";
	val[BM_L_DESTINATION_CLUSTER] = UNKNOWN;
	val[BM_L_REQUEST_PROTOCOL] = "tcp";
	val[BM_L_RESPONSE_FLAGS] = response_flags && *response_flags ? response_flags : "-";
	val[BM_L_CONNECTION_SECURITY_POLICY] = or_unknown(security_policy);

	for (int i = 0; i < BM_L_COUNT; i++)
		total += strlen(val[i]) + 1;
	s->buf = malloc(total);
	if (!s->buf)
		return -ENOMEM;
	w = s->buf;
	for (int i = 0; i < BM_L_COUNT; i++) {
		size_t n = strlen(val[i]) + 1;

		memcpy(w, val[i], n);
		s->v[i] = w;
		w += n;
	}
	return 0;
}

void bm_tcp_series_free(struct bm_tcp_series *s)
{
	free(s->buf);
	s->buf = NULL;
}

int metrics_series_cmp(const void *x, const void *y)
{
	const struct bm_tcp_series *a = x, *b = y;

	for (int i = 0; i < BM_L_COUNT; i++) {
		int c = strcmp(a->v[i], b->v[i]);

		if (c)
			return c;
	}
	return 0;
}
