/* telemetry.istio.io Telemetry (istio-api §6): the seed 06 document, the
 * fields meshd accepts in their canonical form, one failing case per rule
 * with the exact "file:line: field.path: message", and the warnings for
 * what is accepted but not applied. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "resource.h"
#include "schema.h"
#include "unit.h"

/* Spec bodies start on line 6. */
#define TEL "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\nspec:\n"

/* examples/seeds/06-telemetry.yaml's Telemetry document, verbatim. */
#define SEED_TEL \
	"apiVersion: telemetry.istio.io/v1alpha1\n" \
	"kind: Telemetry\n" \
	"metadata:\n" \
	"  name: access-logging\n" \
	"  namespace: production\n" \
	"spec:\n" \
	"  accessLogging:\n" \
	"  - providers:\n" \
	"    - name: envoy\n"

static int parse(const char *yaml, json_t **out, struct bm_errlist *errs)
{
	return bm_resources_parse(yaml, strlen(yaml), "t.yaml", 0, out, errs);
}

static const struct {
	const char *yaml;
	const char *spec;   /* canonical spec */
	const char *warn;   /* the one warning expected, or NULL */
} good_cases[] = {
	{ SEED_TEL, "{\"accessLogging\":[{\"providers\":[{\"name\":\"envoy\"}]}]}", NULL },
	{ TEL "  selector:\n    matchLabels: {app: web}\n"
	  "  accessLogging:\n  - providers: [{name: envoy}, {name: 'file:/var/log/mesh.log'}]\n"
	  "  - disabled: true\n",
	  "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"accessLogging\":[{\"providers\":"
	  "[{\"name\":\"envoy\"},{\"name\":\"file:/var/log/mesh.log\"}]},{\"disabled\":true}]}",
	  NULL },
	{ TEL "  accessLogging: [{}]\n", "{\"accessLogging\":[{}]}", NULL },
	{ TEL "  metrics:\n  - providers: [{name: prometheus}]\n",
	  "{\"metrics\":[{\"providers\":[{\"name\":\"prometheus\"}]}]}", NULL },
	{ TEL "  tracing:\n  - providers: [{name: zipkin}]\n    randomSamplingPercentage: 12.5\n"
	  "    disableSpanReporting: false\n",
	  "{\"tracing\":[{\"providers\":[{\"name\":\"zipkin\"}],\"randomSamplingPercentage\":12.5,"
	  "\"disableSpanReporting\":false}]}",
	  NULL },
	{ TEL "  tracing:\n  - randomSamplingPercentage: 100\n  - randomSamplingPercentage: 0\n",
	  "{\"tracing\":[{\"randomSamplingPercentage\":100},{\"randomSamplingPercentage\":0}]}",
	  NULL },
	{ TEL "  accessLogging:\n  - providers:\n    - name: otel\n",
	  "{\"accessLogging\":[{\"providers\":[{\"name\":\"otel\"}]}]}",
	  "t.yaml:8: spec.accessLogging[0].providers[0].name: warning: access-log provider "
	  "\"otel\" is not known to meshd (envoy or file:/PATH); it writes nothing" },
	{ "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {name: t, "
	  "namespace: istio-system}\nspec: {}\n", "{}", NULL },
};

static void test_telemetry_good(void)
{
	for (size_t i = 0; i < sizeof(good_cases) / sizeof(good_cases[0]); i++) {
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;
		int r = parse(good_cases[i].yaml, &out, &errs);
		char *s;

		if (r || errs.nwarn != (good_cases[i].warn ? 1u : 0u)) {
			fprintf(stderr, "\nunexpected result for:\n%s", good_cases[i].yaml);
			bm_errlist_print(&errs, stderr);
		}
		CU_ASSERT_EQUAL(r, 0);
		CU_ASSERT_EQUAL_FATAL(json_array_size(out), 1);
		CU_ASSERT_STRING_EQUAL(bm_res_kind(json_array_get(out, 0)), "Telemetry");
		s = json_dumps(json_object_get(json_array_get(out, 0), "spec"), JSON_COMPACT);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		if (strcmp(s, good_cases[i].spec))
			fprintf(stderr, "\nwant %s\ngot  %s\n", good_cases[i].spec, s);
		CU_ASSERT_STRING_EQUAL(s, good_cases[i].spec);
		free(s);
		CU_ASSERT_EQUAL(errs.nwarn, good_cases[i].warn ? 1u : 0u);
		if (good_cases[i].warn && errs.nwarn)
			CU_ASSERT_STRING_EQUAL(errs.warn[0], good_cases[i].warn);
		json_decref(out);
		bm_errlist_free(&errs);
	}
}

static const struct {
	const char *yaml;
	const char *want;   /* after "t.yaml:" */
} bad_cases[] = {
	{ TEL "  targetRef: {kind: Gateway, name: gw}\n", "6: spec.targetRef: not supported yet" },
	{ TEL "  targetRefs:\n  - {kind: Gateway, name: gw}\n", "6: spec.targetRefs: not supported yet" },
	{ TEL "  accessLogging:\n  - filter:\n      expression: response.code >= 400\n",
	  "7: spec.accessLogging[0].filter: not supported yet" },
	{ TEL "  accessLogging:\n  - match: {mode: CLIENT}\n",
	  "7: spec.accessLogging[0].match: not supported yet" },
	{ TEL "  accessLogging:\n  - disabled: sometimes\n",
	  "7: spec.accessLogging[0].disabled: must be a boolean" },
	{ TEL "  accessLogging:\n  - providers: [{}]\n",
	  "7: spec.accessLogging[0].providers[0].name: " },
	{ TEL "  accessLogging:\n  - providers: [{name: ''}]\n",
	  "7: spec.accessLogging[0].providers[0].name: " },
	{ TEL "  accessLogging:\n  - providers: [{name: 'file:relative.log'}]\n",
	  "7: spec.accessLogging[0].providers[0].name: \"file:relative.log\": a file provider is "
	  "file:/ABSOLUTE/PATH" },
	{ TEL "  accessLogging:\n  - providers: [{name: envoy, format: json}]\n",
	  "7: spec.accessLogging[0].providers[0].format: unknown field" },
	{ TEL "  tracing:\n  - randomSamplingPercentage: 100.5\n",
	  "7: spec.tracing[0].randomSamplingPercentage: must be between 0 and 100" },
	{ TEL "  tracing:\n  - randomSamplingPercentage: -1\n",
	  "7: spec.tracing[0].randomSamplingPercentage: must be between 0 and 100" },
	{ TEL "  tracing:\n  - randomSamplingPercentage: '50'\n",
	  "7: spec.tracing[0].randomSamplingPercentage: must be a number" },
	{ TEL "  tracing:\n  - disableSpanReporting: 1\n",
	  "7: spec.tracing[0].disableSpanReporting: must be a boolean" },
	{ TEL "  tracing:\n  - customTags:\n      env: {literal: {value: prod}}\n",
	  "7: spec.tracing[0].customTags: not supported yet" },
	{ TEL "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT}\n      disabled: true\n",
	  "7: spec.metrics[0].overrides: not supported yet" },
	{ TEL "  metrics:\n  - reportingInterval: 10s\n",
	  "7: spec.metrics[0].reportingInterval: not supported yet" },
	{ TEL "  selector:\n    matchLabels: {'bad key!': x}\n", "7: spec.selector.matchLabels[\"bad key!\"]: invalid key" },
	{ TEL "  logging: []\n", "6: spec.logging: unknown field" },
	{ "apiVersion: telemetry.istio.io/v1beta2\nkind: Telemetry\nmetadata: {name: t}\nspec: {}\n",
	  "1: apiVersion" },
};

static void test_telemetry_rules(void)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct bm_errlist errs = { 0 };
		json_t *out = NULL;
		char prefix[512];
		int r = parse(bad_cases[i].yaml, &out, &errs);
		bool found = false;

		snprintf(prefix, sizeof(prefix), "t.yaml:%s", bad_cases[i].want);
		for (size_t j = 0; j < errs.n; j++)
			if (!strncmp(errs.msg[j], prefix, strlen(prefix)))
				found = true;
		if (!found || r != -EINVAL || out) {
			fprintf(stderr, "\nwanted \"%s\" (r=%d) for:\n%s--- got:\n", prefix, r,
				bad_cases[i].yaml);
			bm_errlist_print(&errs, stderr);
		}
		CU_ASSERT_EQUAL(r, -EINVAL);
		CU_ASSERT_PTR_NULL(out);
		CU_ASSERT(found);
		json_decref(out);
		bm_errlist_free(&errs);
	}
}

static void test_telemetry_kind_names(void)
{
	/* meshctl spellings: kind, plural, kind.group; both API versions. */
	const struct bm_kind *k = bm_kind_lookup("telemetries");

	CU_ASSERT_PTR_NOT_NULL_FATAL(k);
	CU_ASSERT_STRING_EQUAL(k->kind, "Telemetry");
	CU_ASSERT_PTR_NOT_NULL(k->spec);
	CU_ASSERT_PTR_EQUAL(bm_kind_lookup("Telemetry"), k);
	CU_ASSERT_PTR_EQUAL(bm_kind_lookup("telemetry.telemetry.istio.io"), k);
	CU_ASSERT(bm_kind_accepts_api_version(k, "telemetry.istio.io/v1"));
	CU_ASSERT(bm_kind_accepts_api_version(k, "telemetry.istio.io/v1alpha1"));
	CU_ASSERT(!bm_kind_accepts_api_version(k, "telemetry.istio.io/v1beta1"));
	/* IstioOperator stays refused: it installs Istio, it is not mesh config. */
	CU_ASSERT_PTR_NULL(bm_kind_lookup("IstioOperator")->spec);
}

BM_SUITE(resource_telemetry,
	 BM_CASE(test_telemetry_good),
	 BM_CASE(test_telemetry_rules),
	 BM_CASE(test_telemetry_kind_names))
