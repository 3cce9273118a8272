/* meshctl apply: validate everything, then store everything (or nothing). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "diag.h"
#include "input.h"
#include "resource.h"
#include "schema.h"
#include "store.h"

static void apply_usage(FILE *f)
{
	fprintf(f, "usage: meshctl apply -f FILE|DIR|- [-f ...] [--dry-run] [--store URL]\n"
		   "  -f, --filename   YAML or JSON resources (multi-document); a directory\n"
		   "                   applies its *.yaml, *.yml and *.json files\n"
		   "      --dry-run    validate and show what would change, store nothing\n"
		   "      --store URL  resource store (default $BPFMESH_STORE or %s)\n",
		BM_STORE_DEFAULT_URL);
}

static void print_results(const json_t *results, bool dry)
{
	size_t i;
	json_t *r;

	json_array_foreach(results, i, r) {
		const struct bm_kind *k = bm_kind_find(json_string_value(json_object_get(r, "kind")));
		char full[128];

		printf("%s/%s %s%s\n", k ? bm_kind_fullname(k, full, sizeof(full)) : "?",
		       json_string_value(json_object_get(r, "name")),
		       json_string_value(json_object_get(r, "action")), dry ? " (dry run)" : "");
	}
}

int do_apply(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "filename", required_argument, NULL, 'f' },
		{ "dry-run", optional_argument, NULL, 'D' },
		{ "store", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bm_errlist errs = { 0 };
	const char *store_flag = NULL;
	json_t *resources = NULL, *results = NULL;
	struct bm_store *store = NULL;
	char **files = NULL;
	size_t nfiles = 0;
	bool dry = false;
	int c, r, rc = 1;

	files = calloc((size_t)argc + 1, sizeof(*files));
	if (!files) {
		fprintf(stderr, "meshctl apply: out of memory\n");
		return 1;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			files[nfiles++] = optarg;
			break;
		case 'D':
			/* kubectl spells it --dry-run=client|server|none. */
			if (!optarg || !strcmp(optarg, "client") || !strcmp(optarg, "server")) {
				dry = true;
			} else if (strcmp(optarg, "none")) {
				fprintf(stderr, "meshctl apply: --dry-run takes client, server or "
						"none\n");
				rc = 2;
				goto out;
			}
			break;
		case 'S':
			store_flag = optarg;
			break;
		case 'h':
			apply_usage(stdout);
			rc = 0;
			goto out;
		default:
			apply_usage(stderr);
			rc = 2;
			goto out;
		}
	}
	if (!nfiles || optind < argc) {
		if (optind < argc)
			fprintf(stderr, "meshctl apply: unexpected argument '%s'\n", argv[optind]);
		else
			fprintf(stderr, "meshctl apply: -f FILE is required\n");
		apply_usage(stderr);
		rc = 2;
		goto out;
	}
	r = bm_load_inputs(files, nfiles, 0, &resources, &errs);
	if (r) {
		bm_errlist_print(&errs, stderr);
		if (r == -ENOMEM)
			fprintf(stderr, "meshctl apply: out of memory\n");
		else
			fprintf(stderr, "error: nothing applied (%zu error%s)\n",
				bm_errlist_count(&errs), bm_errlist_count(&errs) == 1 ? "" : "s");
		goto out;
	}
	bm_errlist_print(&errs, stderr); /* warnings of accepted input (deprecated fields...) */
	if (!json_array_size(resources)) {
		fprintf(stderr, "error: no objects passed to apply\n");
		goto out;
	}
	r = dry ? bm_store_open_ro(cli_store_url(store_flag), &store)
		: bm_store_open(cli_store_url(store_flag), &store);
	if (r)
		goto out;
	r = dry ? bm_store_plan(store, resources, &results)
		: bm_store_apply(store, resources, &results);
	if (r) {
		fprintf(stderr, "error: storing resources failed: %s\n", strerror(-r));
		goto out;
	}
	print_results(results, dry);
	rc = 0;
out:
	json_decref(results);
	json_decref(resources);
	bm_store_close(store);
	bm_errlist_free(&errs);
	free(files);
	return rc;
}
