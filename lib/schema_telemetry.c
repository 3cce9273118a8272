/* telemetry.istio.io schema: Telemetry (v1alpha1 and v1 share it).
 * Field names follow istio/api's telemetry/v1alpha1/telemetry.proto; the
 * rules are istio/istio's ValidateTelemetry (docs/reference/istio-api.md
 * §6). What meshd does with it: docs/observability.md. */
#include <limits.h>
#include <string.h>
#include "schema.h"

/* An Istio field that we refuse until it is implemented. */
#define LATER(n) { .name = (n), .type = BM_T_NONE, .flags = BM_F_UNSUPPORTED }

static const struct bm_field selector[] = {
	{ .name = "matchLabels", .type = BM_T_MAP, .elem = &bm_label_value,
	  .key_check = bm_check_label_key },
	{ .name = NULL },
};

/* providers[].name names a meshConfig extension provider; meshd has no
 * meshConfig, so any name is accepted here and the access-log providers
 * meshd cannot write to are reported by check_log_provider. */
static const struct bm_field provider[] = {
	{ .name = "name", .type = BM_T_STRING, .flags = BM_F_REQUIRED | BM_F_NONEMPTY },
	{ .name = NULL },
};

static const struct bm_field provider_elem = { .type = BM_T_OBJECT, .fields = provider };

/* Access-log providers meshd writes: "envoy" (Istio's built-in, stdout) and
 * "file:/ABSOLUTE/PATH" (bpfmesh's spelling of a file provider). Others are
 * accepted, as Istio would with its meshConfig, and warned about: meshd
 * does not know where they go. */
static void check_log_provider(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *name = json_string_value(json_object_get(val, "name"));

	if (!name || !strcmp(name, "envoy"))
		return;
	if (!strncmp(name, "file:", 5)) {
		if (name[5] != '/' || strlen(name + 5) >= PATH_MAX)
			bm_verr_at(v, n->line, ".name", "\"%.64s\": a file provider is file:/ABSOLUTE/PATH",
				   name);
		return;
	}
	bm_vwarn_at(v, n->line, ".name", "access-log provider \"%.64s\" is not known to "
		    "meshd (envoy or file:/PATH); it writes nothing", name);
}

static const struct bm_field log_provider_elem = { .type = BM_T_OBJECT, .fields = provider,
						   .check = check_log_provider };

static const struct bm_field access_logging[] = {
	LATER("match"),
	{ .name = "providers", .type = BM_T_LIST, .elem = &log_provider_elem },
	{ .name = "disabled", .type = BM_T_BOOL },
	LATER("filter"),
	{ .name = NULL },
};

static const struct bm_field access_logging_elem = { .type = BM_T_OBJECT,
						     .fields = access_logging };

/* istio-api §6: 0-100 (a double, not a Percent object). */
static void check_sampling(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	double d = json_number_value(val);

	if (d < 0 || d > 100)
		bm_verr(v, n->line, "must be between 0 and 100");
}

/* Tracing providers: meshd reports spans to one Zipkin collector, its
 * --zipkin-url (Istio's "zipkin" extension provider). Another name is
 * accepted, as Istio would with its meshConfig, and said to go there. */
static void check_trace_provider(struct bm_vctx *v, const struct bm_ynode *n, json_t *val)
{
	const char *name = json_string_value(json_object_get(val, "name"));

	if (!name || !strcmp(name, "zipkin"))
		return;
	bm_vwarn_at(v, n->line, ".name", "tracing provider \"%.64s\": meshd reports spans "
		    "only to its Zipkin collector (meshd --zipkin-url)", name);
}

static const struct bm_field trace_provider_elem = { .type = BM_T_OBJECT, .fields = provider,
						     .check = check_trace_provider };

static const struct bm_field tracing[] = {
	LATER("match"),
	{ .name = "providers", .type = BM_T_LIST, .elem = &trace_provider_elem },
	{ .name = "randomSamplingPercentage", .type = BM_T_NUMBER, .check = check_sampling },
	{ .name = "disableSpanReporting", .type = BM_T_BOOL },
	LATER("customTags"),
	LATER("useRequestIdForTraceSampling"),
	LATER("enableIstioTags"),
	LATER("disableContextPropagation"),
	{ .name = NULL },
};

static const struct bm_field tracing_elem = { .type = BM_T_OBJECT, .fields = tracing };

static const struct bm_field metrics[] = {
	{ .name = "providers", .type = BM_T_LIST, .elem = &provider_elem },
	LATER("overrides"),
	LATER("reportingInterval"),
	{ .name = NULL },
};

static const struct bm_field metrics_elem = { .type = BM_T_OBJECT, .fields = metrics };

static const struct bm_field telemetry[] = {
	{ .name = "selector", .type = BM_T_OBJECT, .fields = selector },
	LATER("targetRef"),
	LATER("targetRefs"),
	{ .name = "tracing", .type = BM_T_LIST, .elem = &tracing_elem },
	{ .name = "metrics", .type = BM_T_LIST, .elem = &metrics_elem },
	{ .name = "accessLogging", .type = BM_T_LIST, .elem = &access_logging_elem },
	{ .name = NULL },
};

const struct bm_field bm_spec_telemetry = {
	.name = "spec", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED,
	.fields = telemetry };
