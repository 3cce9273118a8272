/* meshctl get: kubectl-style listing of stored resources. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"
#include "resource.h"
#include "schema.h"
#include "store.h"
#include "yamlout.h"

enum out_fmt { OUT_TABLE, OUT_WIDE, OUT_JSON, OUT_YAML, OUT_NAME };

struct get_opts {
	const char *ns;  /* NULL with -A */
	enum out_fmt fmt;
	const char *store;
};

/* kubectl's HumanDuration, so ages read the same as in kubectl. */
static void human_age(const char *ts, char *buf, size_t size)
{
	struct tm tm = { 0 };
	long long s, m, h, d;
	const char *end;

	end = ts ? strptime(ts, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
	if (!end || *end) {
		snprintf(buf, size, "<unknown>");
		return;
	}
	s = (long long)(time(NULL) - timegm(&tm));
	if (s < 0)
		s = 0;
	m = s / 60, h = s / 3600, d = s / 86400;
	if (s < 120)
		snprintf(buf, size, "%llds", s);
	else if (m < 10)
		snprintf(buf, size, "%lldm%llds", m, s % 60);
	else if (h < 3)
		snprintf(buf, size, "%lldm", m);
	else if (h < 8)
		snprintf(buf, size, "%lldh%lldm", h, m % 60);
	else if (h < 48)
		snprintf(buf, size, "%lldh", h);
	else if (d < 8)
		snprintf(buf, size, "%lldd%lldh", d, h % 24);
	else if (d < 365 * 2)
		snprintf(buf, size, "%lldd", d);
	else
		snprintf(buf, size, "%lldy", d / 365);
}

/* Compact JSON of a field ("[\"reviews\"]"), as kubectl prints array columns. */
static char *compact(const json_t *v)
{
	if (!v)
		return strdup("");
	if (json_is_string(v))
		return strdup(json_string_value(v));
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

struct column {
	const char *title;
	const char *path[3]; /* spec field path */
	bool wide;           /* only with -o wide */
};

struct kind_cols {
	const char *kind;
	struct column cols[4];
};

/* Mirrors the printer columns of Istio's CRDs, plus a few for -o wide. */
static const struct kind_cols kind_columns[] = {
	{ "VirtualService", { { "GATEWAYS", { "gateways" }, true },
			      { "HOSTS", { "hosts" }, false } } },
	{ "DestinationRule", { { "HOST", { "host" }, false },
			       { "SUBSETS", { "subsets" }, true } } },
	{ "ServiceEntry", { { "HOSTS", { "hosts" }, false },
			    { "LOCATION", { "location" }, false },
			    { "RESOLUTION", { "resolution" }, false },
			    { "ADDRESSES", { "addresses" }, true } } },
	{ "WorkloadEntry", { { "ADDRESS", { "address" }, false },
			     { "SERVICEACCOUNT", { "serviceAccount" }, true } } },
};

static const struct kind_cols *columns_for(const char *kind)
{
	for (size_t i = 0; i < sizeof(kind_columns) / sizeof(kind_columns[0]); i++)
		if (!strcmp(kind_columns[i].kind, kind))
			return &kind_columns[i];
	return NULL;
}

static char *cell(const json_t *res, const struct column *c)
{
	const json_t *v = json_object_get(res, "spec");

	/* Subsets show by name: the whole objects would flood the table. */
	if (!strcmp(c->title, "SUBSETS")) {
		json_t *names = json_array(), *s;
		size_t i;
		char *out;

		json_array_foreach(json_object_get(v, "subsets"), i, s)
			json_array_append(names, json_object_get(s, "name"));
		out = json_array_size(names) ? compact(names) : strdup("");
		json_decref(names);
		return out;
	}
	for (size_t i = 0; i < 3 && c->path[i]; i++)
		v = json_object_get(v, c->path[i]);
	return compact(v);
}

/* Rows as cells first, then printed with each column padded to its widest
 * cell plus three spaces, like kubectl. */
static void print_table(const struct bm_kind *k, const json_t *items, const struct get_opts *o,
			bool prefix_kind)
{
	const struct kind_cols *kc = columns_for(k->kind);
	const char *titles[8];
	size_t ncols = 0, rows = json_array_size(items) + 1, width[8] = { 0 };
	char ***cells, full[128];

	if (o->ns == NULL)
		titles[ncols++] = "NAMESPACE";
	titles[ncols++] = "NAME";
	for (size_t i = 0; kc && i < 4 && kc->cols[i].title; i++)
		if (!kc->cols[i].wide || o->fmt == OUT_WIDE)
			titles[ncols++] = kc->cols[i].title;
	titles[ncols++] = "AGE";
	if (o->fmt == OUT_WIDE)
		titles[ncols++] = "GENERATION";
	cells = calloc(rows, sizeof(*cells));
	if (!cells)
		return;
	bm_kind_fullname(k, full, sizeof(full));
	for (size_t r = 0; r < rows; r++) {
		const json_t *res = r ? json_array_get(items, r - 1) : NULL;
		size_t c = 0;

		cells[r] = calloc(ncols, sizeof(**cells));
		if (!cells[r])
			continue;
		if (!r) {
			for (; c < ncols; c++)
				cells[r][c] = strdup(titles[c]);
		} else {
			char age[32];

			if (o->ns == NULL)
				cells[r][c++] = strdup(bm_res_namespace(res));
			if (prefix_kind) {
				if (asprintf(&cells[r][c++], "%s/%s", full, bm_res_name(res)) < 0)
					cells[r][c - 1] = NULL;
			} else {
				cells[r][c++] = strdup(bm_res_name(res));
			}
			for (size_t i = 0; kc && i < 4 && kc->cols[i].title; i++)
				if (!kc->cols[i].wide || o->fmt == OUT_WIDE)
					cells[r][c++] = cell(res, &kc->cols[i]);
			human_age(json_string_value(json_object_get(
					  json_object_get(res, "metadata"), "creationTimestamp")),
				  age, sizeof(age));
			cells[r][c++] = strdup(age);
			if (o->fmt == OUT_WIDE) {
				json_t *g = json_object_get(json_object_get(res, "metadata"),
							    "generation");

				if (asprintf(&cells[r][c++], "%lld",
					     (long long)json_integer_value(g)) < 0)
					cells[r][c - 1] = NULL;
			}
		}
		for (size_t i = 0; i < ncols; i++)
			if (cells[r][i] && strlen(cells[r][i]) > width[i])
				width[i] = strlen(cells[r][i]);
	}
	for (size_t r = 0; r < rows; r++) {
		for (size_t c = 0; cells[r] && c < ncols; c++) {
			const char *s = cells[r][c] ? cells[r][c] : "";

			if (c + 1 < ncols)
				printf("%-*s   ", (int)width[c], s);
			else
				printf("%s\n", s);
			free(cells[r][c]);
		}
		free(cells[r]);
	}
	free(cells);
}

static void print_error(const struct get_opts *o, const char *msg)
{
	fprintf(stderr, "Error: %s\n", msg);
	/* bpftool's rule: -o json output stays valid JSON, errors included. */
	if (o->fmt == OUT_JSON) {
		json_t *e = json_pack("{s:s}", "error", msg);

		json_dumpf(e, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(e);
	}
}

static void lower(const char *in, char *out, size_t size)
{
	size_t i;

	for (i = 0; in[i] && i + 1 < size; i++)
		out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
	out[i] = '\0';
}

/* Resolves "vs", "vs,dr", "all" into kinds; prints the error and returns -1. */
static int resolve_kinds(const char *arg, const struct get_opts *o,
			 const struct bm_kind **kinds, size_t max)
{
	char *copy = strdup(arg), *save = NULL, msg[256];
	size_t n = 0;

	if (!copy)
		return -1;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		const struct bm_kind *k;

		if (!strcasecmp(t, "all")) {
			for (k = bm_kinds; k->kind && n < max; k++)
				if (k->spec)
					kinds[n++] = k;
			continue;
		}
		k = bm_kind_lookup(t);
		if (!k) {
			snprintf(msg, sizeof(msg), "unknown resource type \"%s\"", t);
			goto err;
		}
		if (!k->spec) {
			snprintf(msg, sizeof(msg), "kind %s is not supported yet", k->kind);
			goto err;
		}
		if (n < max)
			kinds[n++] = k;
	}
	free(copy);
	return (int)n;
err:
	print_error(o, msg);
	free(copy);
	return -1;
}

static void print_doc(const json_t *doc, enum out_fmt fmt)
{
	if (fmt == OUT_YAML) {
		bm_yaml_dump(doc, stdout);
	} else {
		json_dumpf(doc, stdout, JSON_INDENT(4));
		putchar('\n');
	}
}

static void get_usage(FILE *f)
{
	fprintf(f, "usage: meshctl get KIND[,KIND...]|all [NAME] [-n NS | -A] "
		   "[-o yaml|json|wide|name] [--store URL]\n"
		   "  kinds: virtualservice (vs), destinationrule (dr), serviceentry (se),\n"
		   "         workloadentry (we); singular, plural or short, any case\n");
}

static int parse_fmt(const char *s, enum out_fmt *fmt)
{
	static const struct { const char *name; enum out_fmt fmt; } fmts[] = {
		{ "json", OUT_JSON }, { "yaml", OUT_YAML }, { "wide", OUT_WIDE },
		{ "name", OUT_NAME },
	};

	for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		if (!strcmp(s, fmts[i].name)) {
			*fmt = fmts[i].fmt;
			return 0;
		}
	}
	return -EINVAL;
}

int do_get(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "namespace", required_argument, NULL, 'n' },
		{ "all-namespaces", no_argument, NULL, 'A' },
		{ "output", required_argument, NULL, 'o' },
		{ "store", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct get_opts o = { .ns = BM_DEFAULT_NAMESPACE };
	const struct bm_kind *kinds[32];
	struct bm_store *store = NULL;
	json_t *all = NULL;
	char *kind_arg = NULL, msg[512];
	const char *name = NULL;
	bool all_ns = false;
	int c, nkinds, rc = 1, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "n:Ao:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			o.ns = optarg;
			break;
		case 'A':
			all_ns = true;
			break;
		case 'o':
			if (parse_fmt(optarg, &o.fmt)) {
				fprintf(stderr, "meshctl get: -o takes yaml, json, wide or name\n");
				return 2;
			}
			break;
		case 'S':
			o.store = optarg;
			break;
		case 'h':
			get_usage(stdout);
			return 0;
		default:
			get_usage(stderr);
			return 2;
		}
	}
	if (optind >= argc || argc - optind > 2) {
		get_usage(stderr);
		return 2;
	}
	kind_arg = strdup(argv[optind]);
	if (!kind_arg)
		return 1;
	if (argc - optind == 2) {
		name = argv[optind + 1];
	} else if (strchr(kind_arg, '/')) { /* kubectl's KIND/NAME */
		name = strchr(argv[optind], '/') + 1;
		*strchr(kind_arg, '/') = '\0';
	}
	if (all_ns)
		o.ns = NULL;
	nkinds = resolve_kinds(kind_arg, &o, kinds, sizeof(kinds) / sizeof(kinds[0]));
	if (nkinds < 0)
		goto out;
	if (name && nkinds != 1) {
		fprintf(stderr, "meshctl get: a NAME needs exactly one KIND\n");
		rc = 2;
		goto out;
	}
	if (bm_store_open_ro(cli_store_url(o.store), &store))
		goto out;
	all = json_array();
	for (int i = 0; all && i < nkinds; i++) {
		json_t *items = NULL, *res;
		size_t j;

		r = bm_store_list(store, kinds[i]->kind, o.ns, &items, NULL);
		if (r) {
			snprintf(msg, sizeof(msg), "reading the store failed: %s", strerror(-r));
			print_error(&o, msg);
			goto out;
		}
		json_array_foreach(items, j, res)
			if (!name || !strcmp(bm_res_name(res), name))
				json_array_append(all, res);
		json_decref(items);
	}
	if (!all)
		goto out;
	if (name && !json_array_size(all)) {
		char kl[64];

		lower(kinds[0]->kind, kl, sizeof(kl));
		if (o.ns)
			snprintf(msg, sizeof(msg), "%s \"%s\" not found in namespace \"%s\"", kl,
				 name, o.ns);
		else
			snprintf(msg, sizeof(msg), "%s \"%s\" not found in any namespace", kl, name);
		print_error(&o, msg);
		goto out;
	}
	rc = 0;
	if (o.fmt == OUT_JSON || o.fmt == OUT_YAML) {
		json_t *doc = name && json_array_size(all) == 1
				      ? json_incref(json_array_get(all, 0))
				      : json_pack("{s:s,s:s,s:O}", "apiVersion", "v1", "kind",
						  "List", "items", all);

		print_doc(doc, o.fmt);
		json_decref(doc);
	} else if (o.fmt == OUT_NAME) {
		json_t *res;
		size_t j;
		char full[128];

		json_array_foreach(all, j, res)
			printf("%s/%s\n",
			       bm_kind_fullname(bm_kind_find(bm_res_kind(res)), full, sizeof(full)),
			       bm_res_name(res));
	} else if (!json_array_size(all)) {
		if (o.ns)
			fprintf(stderr, "No resources found in %s namespace.\n", o.ns);
		else
			fprintf(stderr, "No resources found\n");
	} else {
		bool first = true;

		for (int i = 0; i < nkinds; i++) {
			json_t *items = json_array(), *res;
			size_t j;

			json_array_foreach(all, j, res)
				if (!strcmp(bm_res_kind(res), kinds[i]->kind))
					json_array_append(items, res);
			if (json_array_size(items)) {
				if (!first)
					putchar('\n');
				print_table(kinds[i], items, &o, nkinds > 1);
				first = false;
			}
			json_decref(items);
		}
	}
out:
	json_decref(all);
	bm_store_close(store);
	free(kind_arg);
	return rc;
}
