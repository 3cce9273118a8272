/* File store: round trips, generation rules, robustness to hand edits. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "resource.h"
#include "store.h"
#include "unit.h"

static const char *const docs =
	"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n"
	"  namespace: prod\nspec:\n  hosts: [reviews]\n  tcp:\n  - route:\n"
	"    - destination: {host: reviews, subset: v1}\n      weight: 90\n"
	"    - destination: {host: reviews, subset: v2}\n      weight: 10\n"
	"---\n"
	"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n"
	"  namespace: prod\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n"
	"  - {name: v2, labels: {version: v2}}\n"
	"---\n"
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: w1\n"
	"spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}}\n";

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

struct fixture {
	char dir[64];
	struct bm_store *s;
};

static void setup(struct fixture *f)
{
	snprintf(f->dir, sizeof(f->dir), "/tmp/bm-store-test.XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(f->dir));
	CU_ASSERT_EQUAL_FATAL(bm_store_open(f->dir, &f->s), 0);
}

static void teardown(struct fixture *f)
{
	bm_store_close(f->s);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static json_t *parse(const char *yaml)
{
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;

	CU_ASSERT_EQUAL(bm_resources_parse(yaml, strlen(yaml), "t.yaml", 0, &out, &errs), 0);
	bm_errlist_print(&errs, stderr);
	bm_errlist_free(&errs);
	return out;
}

static uint64_t generation(struct fixture *f)
{
	uint64_t g = 999;

	CU_ASSERT_EQUAL(bm_store_generation(f->s, &g), 0);
	return g;
}

static const char *action(json_t *results, size_t i)
{
	return json_string_value(json_object_get(json_array_get(results, i), "action"));
}

static void test_store_round_trip(void)
{
	struct fixture f;
	json_t *res = parse(docs), *results = NULL, *list = NULL, *one = NULL;
	uint64_t gen = 0;

	setup(&f);
	CU_ASSERT_EQUAL(generation(&f), 0);
	CU_ASSERT_EQUAL(bm_store_apply(f.s, res, &results), 0);
	CU_ASSERT_EQUAL(json_array_size(results), 3);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "created");
	CU_ASSERT_STRING_EQUAL(action(results, 2), "created");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(results, 2),
								"namespace")), "default");
	CU_ASSERT_EQUAL(generation(&f), 1);
	json_decref(results);

	CU_ASSERT_EQUAL(bm_store_list(f.s, NULL, NULL, &list, &gen), 0);
	CU_ASSERT_EQUAL(gen, 1);
	CU_ASSERT_EQUAL(json_array_size(list), 3);
	/* Kind table order: VirtualService, DestinationRule, ..., WorkloadEntry. */
	CU_ASSERT_STRING_EQUAL(bm_res_kind(json_array_get(list, 0)), "VirtualService");
	CU_ASSERT_STRING_EQUAL(bm_res_kind(json_array_get(list, 2)), "WorkloadEntry");
	{
		json_t *meta = json_object_get(json_array_get(list, 0), "metadata");
		json_t *stripped = json_deep_copy(json_array_get(list, 0));

		CU_ASSERT_EQUAL(json_integer_value(json_object_get(meta, "generation")), 1);
		CU_ASSERT_PTR_NOT_NULL(json_string_value(json_object_get(meta, "creationTimestamp")));
		/* What comes back is what went in, plus the store's bookkeeping. */
		json_object_del(json_object_get(stripped, "metadata"), "generation");
		json_object_del(json_object_get(stripped, "metadata"), "creationTimestamp");
		CU_ASSERT(json_equal(stripped, json_array_get(res, 0)));
		json_decref(stripped);
	}
	json_decref(list);

	CU_ASSERT_EQUAL(bm_store_list(f.s, "dr", "prod", &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 1);
	json_decref(list);
	CU_ASSERT_EQUAL(bm_store_list(f.s, NULL, "default", &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 1);
	json_decref(list);
	CU_ASSERT_EQUAL(bm_store_get(f.s, "VirtualService", "prod", "reviews", &one), 0);
	CU_ASSERT_STRING_EQUAL(bm_res_name(one), "reviews");
	json_decref(one);
	CU_ASSERT_EQUAL(bm_store_get(f.s, "VirtualService", "default", "reviews", &one), -ENOENT);

	CU_ASSERT_EQUAL(bm_store_delete(f.s, "VirtualService", "prod", "reviews"), 0);
	CU_ASSERT_EQUAL(generation(&f), 2);
	CU_ASSERT_EQUAL(bm_store_delete(f.s, "vs", "prod", "reviews"), -ENOENT);
	CU_ASSERT_EQUAL(generation(&f), 2);
	CU_ASSERT_EQUAL(bm_store_list(f.s, "VirtualService", NULL, &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 0);
	json_decref(list);
	json_decref(res);
	teardown(&f);
}

static void test_store_generation_rules(void)
{
	struct fixture f;
	json_t *res = parse(docs), *results = NULL, *one = NULL;
	const char *created;
	char *ts;

	setup(&f);
	CU_ASSERT_EQUAL(bm_store_apply(f.s, res, NULL), 0);
	CU_ASSERT_EQUAL(generation(&f), 1);
	/* Same content again: nothing written, no bump. */
	CU_ASSERT_EQUAL(bm_store_apply(f.s, res, &results), 0);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "unchanged");
	CU_ASSERT_STRING_EQUAL(action(results, 1), "unchanged");
	CU_ASSERT_EQUAL(generation(&f), 1);
	json_decref(results);

	CU_ASSERT_EQUAL(bm_store_get(f.s, "dr", "prod", "reviews", &one), 0);
	created = json_string_value(json_object_get(json_object_get(one, "metadata"),
						    "creationTimestamp"));
	ts = created ? strdup(created) : NULL;
	json_decref(one);

	/* Two changes in one apply: one bump; the unchanged one keeps its
	 * generation, changed ones get the new one; creation time is kept. */
	json_object_set_new(json_object_get(json_array_get(res, 0), "spec"), "exportTo",
			    json_pack("[s]", "."));
	json_object_set_new(json_object_get(json_array_get(res, 1), "metadata"), "labels",
			    json_pack("{s:s}", "team", "a"));
	CU_ASSERT_EQUAL(bm_store_apply(f.s, res, &results), 0);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "configured");
	CU_ASSERT_STRING_EQUAL(action(results, 1), "configured");
	CU_ASSERT_STRING_EQUAL(action(results, 2), "unchanged");
	CU_ASSERT_EQUAL(generation(&f), 2);
	json_decref(results);
	CU_ASSERT_EQUAL(bm_store_get(f.s, "dr", "prod", "reviews", &one), 0);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(one, "metadata"),
							   "generation")), 2);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(one, "metadata"),
								"creationTimestamp")), ts);
	json_decref(one);
	CU_ASSERT_EQUAL(bm_store_get(f.s, "we", "default", "w1", &one), 0);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(one, "metadata"),
							   "generation")), 1);
	json_decref(one);

	/* A dry run reports and writes nothing. */
	json_object_set_new(json_object_get(json_array_get(res, 2), "spec"), "address",
			    json_string("10.0.0.2"));
	CU_ASSERT_EQUAL(bm_store_plan(f.s, res, &results), 0);
	CU_ASSERT_STRING_EQUAL(action(results, 2), "configured");
	CU_ASSERT_EQUAL(generation(&f), 2);
	json_decref(results);
	free(ts);
	json_decref(res);
	teardown(&f);
}

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
	fputs(text, fp);
	fclose(fp);
}

/* Hand-edited files that do not parse, do not validate or sit at the wrong
 * path are skipped (and reported), the rest still load. */
static void test_store_skips_corrupt_files(void)
{
	struct fixture f;
	json_t *res = parse(docs), *list = NULL;
	char path[256];
	FILE *saved = stderr;

	setup(&f);
	CU_ASSERT_EQUAL(bm_store_apply(f.s, res, NULL), 0);
	snprintf(path, sizeof(path), "%s/resources/VirtualService/prod/broken.json", f.dir);
	write_text(path, "{\"apiVersion\": \"networking.istio.io/v1\", \"kind\": ");
	snprintf(path, sizeof(path), "%s/resources/VirtualService/prod/invalid.json", f.dir);
	write_text(path, "{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"VirtualService\","
			 "\"metadata\":{\"name\":\"invalid\",\"namespace\":\"prod\"},"
			 "\"spec\":{\"hosts\":[\"*\"],\"tcp\":[]}}");
	snprintf(path, sizeof(path), "%s/resources/VirtualService/prod/elsewhere.json", f.dir);
	write_text(path, "{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"VirtualService\","
			 "\"metadata\":{\"name\":\"other\",\"namespace\":\"prod\"},"
			 "\"spec\":{\"hosts\":[\"a\"],\"tcp\":[{\"route\":[{\"destination\":"
			 "{\"host\":\"a\"}}]}]}}");
	snprintf(path, sizeof(path), "%s/resources/VirtualService/prod/.tmp-partial.json", f.dir);
	write_text(path, "{");
	/* The skip reports are expected noise here. */
	stderr = fopen("/dev/null", "w");
	CU_ASSERT_EQUAL(bm_store_list(f.s, NULL, NULL, &list, NULL), 0);
	fclose(stderr);
	stderr = saved;
	CU_ASSERT_EQUAL(json_array_size(list), 3);
	json_decref(list);
	json_decref(res);
	teardown(&f);
}

/* Files newer than the store generation with no writer holding the lock are
 * what a crashed apply leaves: readers accept them rather than spin. */
static void test_store_interrupted_apply(void)
{
	struct fixture f;
	json_t *res = parse(docs), *list = NULL;
	char path[256];
	uint64_t gen = 0;

	setup(&f);
	CU_ASSERT_EQUAL(bm_store_apply(f.s, res, NULL), 0);
	snprintf(path, sizeof(path), "%s/generation", f.dir);
	write_text(path, "0\n");
	CU_ASSERT_EQUAL(bm_store_list(f.s, NULL, NULL, &list, &gen), 0);
	CU_ASSERT_EQUAL(gen, 0);
	CU_ASSERT_EQUAL(json_array_size(list), 3);
	json_decref(list);
	json_decref(res);
	teardown(&f);
}

static void test_store_urls_and_names(void)
{
	struct bm_store *s = NULL;
	struct fixture f;
	char url[128];
	json_t *list = NULL, *bad;
	FILE *saved = stderr;

	stderr = fopen("/dev/null", "w");
	CU_ASSERT_EQUAL(bm_store_open("etcds://127.0.0.1:2379", &s), -EPROTONOSUPPORT);
	CU_ASSERT_EQUAL(bm_store_open("etcd://", &s), -EINVAL);
	CU_ASSERT_EQUAL(bm_store_open("s3://bucket", &s), -EPROTONOSUPPORT);
	CU_ASSERT_EQUAL(bm_store_open("file://relative/path", &s), -EINVAL);
	CU_ASSERT_EQUAL(bm_store_open("", &s), -EINVAL);
	fclose(stderr);
	stderr = saved;
	CU_ASSERT_PTR_NULL(s);

	setup(&f);
	snprintf(url, sizeof(url), "file://%s", f.dir);
	CU_ASSERT_EQUAL(bm_store_open_ro(url, &s), 0);
	CU_ASSERT_STRING_EQUAL(bm_store_watch_path(s) + strlen(f.dir), "/generation");
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 0);
	json_decref(list);
	bm_store_close(s);

	/* Names are path components: anything not a DNS name is refused. */
	bad = json_pack("[{s:s,s:s,s:{s:s,s:s},s:{}}]", "apiVersion", "networking.istio.io/v1",
			"kind", "WorkloadEntry", "metadata", "name", "../../etc", "namespace",
			"default", "spec");
	CU_ASSERT_EQUAL(bm_store_apply(f.s, bad, NULL), -EINVAL);
	CU_ASSERT_EQUAL(bm_store_delete(f.s, "we", "..", "x"), -EINVAL);
	CU_ASSERT_EQUAL(bm_store_delete(f.s, "nokind", "default", "x"), -EINVAL);
	CU_ASSERT_EQUAL(generation(&f), 0);
	json_decref(bad);
	teardown(&f);

	/* A read-only open of a store that does not exist is an empty store. */
	CU_ASSERT_EQUAL(bm_store_open_ro("/nonexistent/bpfmesh-store", &s), 0);
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 0);
	json_decref(list);
	bm_store_close(s);
}

BM_SUITE(store,
	 BM_CASE(test_store_round_trip),
	 BM_CASE(test_store_generation_rules),
	 BM_CASE(test_store_skips_corrupt_files),
	 BM_CASE(test_store_interrupted_apply),
	 BM_CASE(test_store_urls_and_names))
