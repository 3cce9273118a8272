/* meshctl delete: by file (the resources it names) or by KIND NAME. */
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

static void delete_usage(FILE *f)
{
	fprintf(f, "usage: meshctl delete -f FILE|DIR|- [-f ...] [--ignore-not-found] "
		   "[--store URL]\n"
		   "       meshctl delete KIND NAME [NAME...] [-n NS] [--ignore-not-found] "
		   "[--store URL]\n");
}

/* Returns 0 deleted, 1 failed (message printed). */
static int delete_one(struct bm_store *s, const struct bm_kind *k, const char *ns,
		      const char *name, bool ignore_missing)
{
	char full[128], kl[64];
	int r = bm_store_delete(s, k->kind, ns, name);
	size_t i;

	bm_kind_fullname(k, full, sizeof(full));
	if (!r) {
		printf("%s/%s deleted\n", full, name);
		return 0;
	}
	if (r == -ENOENT && ignore_missing)
		return 0;
	for (i = 0; k->kind[i] && i + 1 < sizeof(kl); i++)
		kl[i] = (char)(k->kind[i] >= 'A' && k->kind[i] <= 'Z' ? k->kind[i] + 32 : k->kind[i]);
	kl[i] = '\0';
	if (r == -ENOENT || r == -EINVAL)
		fprintf(stderr, "Error: %s \"%s\" not found in namespace \"%s\"\n", kl, name, ns);
	else
		fprintf(stderr, "Error: deleting %s \"%s\" in namespace \"%s\": %s\n", kl, name,
			ns, strerror(-r));
	return 1;
}

int do_delete(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "filename", required_argument, NULL, 'f' },
		{ "namespace", required_argument, NULL, 'n' },
		{ "ignore-not-found", no_argument, NULL, 'I' },
		{ "store", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bm_errlist errs = { 0 };
	const char *ns = BM_DEFAULT_NAMESPACE, *store_flag = NULL;
	struct bm_store *store = NULL;
	json_t *resources = NULL;
	char **files;
	size_t nfiles = 0;
	bool ignore_missing = false;
	int c, rc = 1;

	files = calloc((size_t)argc + 1, sizeof(*files));
	if (!files)
		return 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			files[nfiles++] = optarg;
			break;
		case 'n':
			ns = optarg;
			break;
		case 'I':
			ignore_missing = true;
			break;
		case 'S':
			store_flag = optarg;
			break;
		case 'h':
			delete_usage(stdout);
			rc = 0;
			goto out;
		default:
			delete_usage(stderr);
			rc = 2;
			goto out;
		}
	}
	if ((nfiles && optind < argc) || (!nfiles && argc - optind < 2)) {
		delete_usage(stderr);
		rc = 2;
		goto out;
	}
	if (nfiles) {
		/* Only names are needed: a file that no longer validates (say,
		 * written for a newer meshctl) can still be deleted. */
		if (bm_load_inputs(files, nfiles, BM_PARSE_IDENTITY, &resources, &errs)) {
			bm_errlist_print(&errs, stderr);
			fprintf(stderr, "error: nothing deleted\n");
			goto out;
		}
	}
	if (bm_store_open(cli_store_url(store_flag), &store))
		goto out;
	rc = 0;
	if (nfiles) {
		size_t i;
		json_t *res;

		json_array_foreach(resources, i, res)
			rc |= delete_one(store, bm_kind_find(bm_res_kind(res)),
					 bm_res_namespace(res), bm_res_name(res), ignore_missing);
	} else {
		const struct bm_kind *k = bm_kind_lookup(argv[optind]);

		if (!k || !k->spec) {
			fprintf(stderr, k ? "Error: kind %s is not supported yet\n"
					  : "Error: unknown resource type \"%s\"\n",
				k ? k->kind : argv[optind]);
			rc = 1;
			goto out;
		}
		for (int i = optind + 1; i < argc; i++)
			rc |= delete_one(store, k, ns, argv[i], ignore_missing);
	}
out:
	json_decref(resources);
	bm_store_close(store);
	bm_errlist_free(&errs);
	free(files);
	return rc;
}
