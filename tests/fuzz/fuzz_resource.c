/* libFuzzer entry for the resource parser and validator (lib/ytree.c,
 * validate.c, schema*.c, resource.c), and the YAML printer: whatever parses
 * must print as YAML and parse back to the same canonical JSON. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "resource.h"
#include "yamlout.h"

static void round_trip(const json_t *res)
{
	struct bm_errlist errs = { 0 };
	json_t *back = NULL;
	char *yaml = bm_yaml_dumps(res);

	if (!yaml)
		return;
	if (bm_resources_parse(yaml, strlen(yaml), "roundtrip.yaml", 0, &back, &errs) ||
	    json_array_size(back) != 1 || !json_equal(json_array_get(back, 0), res)) {
		fprintf(stderr, "YAML round trip changed the resource:\n%s\n", yaml);
		bm_errlist_print(&errs, stderr);
		abort();
	}
	json_decref(back);
	bm_errlist_free(&errs);
	free(yaml);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;
	int r;

	/* Store files are parsed with BM_PARSE_STORED: cover both paths. */
	r = bm_resources_parse((const char *)data, size, "fuzz.yaml",
			       size && (data[size - 1] & 1) ? BM_PARSE_STORED : 0, &out, &errs);
	if (!r) {
		size_t i;
		json_t *res;

		json_array_foreach(out, i, res) {
			json_t *plain = json_deep_copy(res);

			/* The stored-only fields are not part of the round trip. */
			json_object_del(json_object_get(plain, "metadata"), "generation");
			json_object_del(json_object_get(plain, "metadata"), "creationTimestamp");
			round_trip(plain);
			json_decref(plain);
		}
	} else if (r == -EINVAL && !errs.n && !errs.dropped) {
		fprintf(stderr, "rejected without an error message\n");
		abort();
	}
	json_decref(out);
	bm_errlist_free(&errs);
	return 0;
}
