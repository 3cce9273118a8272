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
	struct cli_node_opts o = {};
	json_t *req, *all, *n, *id;
	size_t i, j;
	int pos, fails;

	if (argc < 2 || strcmp(argv[1], "ls") || cli_parse_node_opts(argc - 1, argv + 1, &o, &pos) || pos != argc - 1) {
		fprintf(stderr, "usage: meshctl cert ls [--node NODE] [-o json]\n");
		return 2;
	}
	req = json_pack("{s:s}", "cmd", "certs");
	all = cli_ask_nodes(o.node, req, &fails);
	json_decref(req);
	if (!all)
		return 1;
	if (o.json) {
		cli_print_json(all);
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
	struct cli_node_opts o = {};
	json_t *req;
	int pos;
	json_t *all, *n;
	int fails;
	size_t i;

	if (argc < 2 || strcmp(argv[1], "show") || cli_parse_node_opts(argc - 1, argv + 1, &o, &pos) || pos != argc - 1) {
		fprintf(stderr, "usage: meshctl ca show [--node NODE] [-o json]\n");
		return 2;
	}
	req = json_pack("{s:s}", "cmd", "ca");
	all = cli_ask_nodes(o.node, req, &fails);
	json_decref(req);
	if (!all)
		return 1;
	if (o.json) {
		cli_print_json(all);
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
