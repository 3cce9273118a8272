/* meshctl cert ls / ca show: workload certificates and the mesh CA, as the
 * node agents report them over their admin sockets ({"cmd":"certs"},
 * {"cmd":"ca"}). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "admin.h"
#include "cli.h"


struct cert_opts {
	const char *node;
	int json;
};

/* After the sub-verb: --node NODE, -o json|table, -j. */
static int parse_opts(int argc, char **argv, struct cert_opts *o)
{
	static const struct option lo[] = { { "node", required_argument, 0, 'N' },
					    { "output", required_argument, 0, 'o' },
					    { "json", no_argument, 0, 'j' },
					    { 0, 0, 0, 0 } };
	int c;

	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "o:j", lo, NULL)) != -1) {
		switch (c) {
		case 'N': o->node = optarg; break;
		case 'o':
			if (strcmp(optarg, "json") && strcmp(optarg, "table") && strcmp(optarg, "wide")) {
				fprintf(stderr, "meshctl: -o %s: use json or table\n", optarg);
				return -EINVAL;
			}
			o->json = !strcmp(optarg, "json");
			break;
		case 'j': o->json = 1; break;
		default: return -EINVAL;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "meshctl: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* One request to every selected node: {"nodes":[reply + "node", ...]}.
 * A node that cannot be reached still gets an entry, so -o json always
 * shows every node and why it is missing. */
static json_t *ask_nodes(const char *only, const char *cmd, int *failures)
{
	json_t *all = json_pack("{s:[]}", "nodes"), *req = json_pack("{s:s}", "cmd", cmd);
	struct cli_node *nodes = NULL;
	int n = cli_nodes(only, &nodes);

	*failures = n > 0 ? 0 : 1;
	for (int i = 0; i < n && all && req; i++) {
		json_t *r = cli_admin_call(nodes[i].sock, req);

		if (!r) {
			r = json_pack("{s:b,s:s}", "ok", 0, "error", strerror(errno));
			(*failures)++;
		} else if (!json_is_true(json_object_get(r, "ok"))) {
			(*failures)++;
		}
		json_object_set_new(r, "node", json_string(nodes[i].name));
		json_array_append_new(json_object_get(all, "nodes"), r);
	}
	json_decref(req);
	free(nodes);
	return all;
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));

	if (s)
		puts(s);
	free(s);
}

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static void node_errors(json_t *all)
{
	json_t *n;
	size_t i;

	json_array_foreach(json_object_get(all, "nodes"), i, n)
		if (!json_is_true(json_object_get(n, "ok")))
			fprintf(stderr, "meshctl: node %s: %s\n", str(n, "node"), str(n, "error"));
}

int do_cert(int argc, char **argv)
{
	struct cert_opts o = {};
	json_t *all, *n, *id;
	size_t i, j;
	int fails;

	if (argc < 2 || strcmp(argv[1], "ls") || parse_opts(argc - 1, argv + 1, &o)) {
		fprintf(stderr, "usage: meshctl cert ls [--node NODE] [-o json]\n");
		return 2;
	}
	all = ask_nodes(o.node, "certs", &fails);
	if (!all)
		return 1;
	if (o.json) {
		print_json(all);
	} else {
		printf("%-12s %-56s %-34s %s\n", "NODE", "IDENTITY", "SERIAL", "NOT AFTER");
		json_array_foreach(json_object_get(all, "nodes"), i, n)
			json_array_foreach(json_object_get(n, "identities"), j, id)
				printf("%-12s %-56s %-34s %s\n", str(n, "node"), str(id, "spiffe_id"),
				       str(id, "serial"), str(id, "not_after"));
		node_errors(all);
	}
	json_decref(all);
	return fails ? 1 : 0;
}

int do_ca(int argc, char **argv)
{
	struct cert_opts o = {};
	json_t *all, *n;
	int fails;
	size_t i;

	if (argc < 2 || strcmp(argv[1], "show") || parse_opts(argc - 1, argv + 1, &o)) {
		fprintf(stderr, "usage: meshctl ca show [--node NODE] [-o json]\n");
		return 2;
	}
	all = ask_nodes(o.node, "ca", &fails);
	if (!all)
		return 1;
	if (o.json) {
		print_json(all);
	} else {
		json_array_foreach(json_object_get(all, "nodes"), i, n) {
			if (!json_is_true(json_object_get(n, "ok")))
				continue;
			printf("%sNode:          %s\n", i ? "\n" : "", str(n, "node"));
			printf("Subject:       %s\n", str(n, "subject"));
			printf("Trust domain:  %s\n", str(n, "trust_domain"));
			printf("Serial:        %s\n", str(n, "serial"));
			printf("Not before:    %s\n", str(n, "not_before"));
			printf("Not after:     %s\n", str(n, "not_after"));
			printf("SHA-256:       %s\n", str(n, "sha256_fingerprint"));
		}
		node_errors(all);
	}
	json_decref(all);
	return fails ? 1 : 0;
}
