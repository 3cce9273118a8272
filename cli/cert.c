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

/* meshctl cert request NS/SA --node NODE: that node's meshd asks the CA
 * service for an SVID of NS/SA with a throw-away key and installs nothing.
 * Shows what the CA decides for the node (and is how t_35 forges a request
 * for an identity the node has no workload of). */
static int cert_request(int argc, char **argv)
{
	struct cli_node_opts o = {};
	struct cli_node *nodes;
	char ns[256];
	const char *slash;
	json_t *req, *r;
	int pos, rc = 1;

	if (cli_parse_node_opts(argc, argv, &o, &pos) || pos != argc - 1 || !o.node ||
	    !(slash = strchr(argv[pos], '/')) || slash == argv[pos] || !slash[1] ||
	    (size_t)(slash - argv[pos]) >= sizeof(ns)) {
		fprintf(stderr, "usage: meshctl cert request NAMESPACE/SERVICEACCOUNT --node NODE [-o json]\n");
		return 2;
	}
	snprintf(ns, sizeof(ns), "%.*s", (int)(slash - argv[pos]), argv[pos]);
	if (cli_nodes(o.node, &nodes) != 1)
		return 1;
	req = json_pack("{s:s,s:s,s:s}", "cmd", "ca_request", "namespace", ns, "service_account", slash + 1);
	r = cli_admin_call(nodes[0].sock, req);
	if (!r) {
		fprintf(stderr, "meshctl: node %s: %s\n", o.node, strerror(errno));
	} else {
		json_object_set_new(r, "node", json_string(o.node));
		if (o.json)
			cli_print_json(r);
		else if (json_is_true(json_object_get(r, "ok")))
			printf("node %s: the CA signed %s (serial %s); nothing was installed\n", o.node,
			       str(r, "spiffe_id"), str(r, "serial"));
		else
			fprintf(stderr, "meshctl: node %s: refused: %s\n", o.node, str(r, "error"));
		rc = json_is_true(json_object_get(r, "ok")) ? 0 : 1;
	}
	json_decref(r);
	json_decref(req);
	free(nodes);
	return rc;
}

/* meshctl VERB SUB [--node NODE] [-o json]: one {"cmd":cmd} to the selected
 * nodes, printed as JSON or by show() followed by the nodes' errors. */
static int ask_and_show(int argc, char **argv, const char *sub, const char *cmd,
			const char *usage, void (*show)(json_t *all))
{
	struct cli_node_opts o = {};
	json_t *req, *all;
	int pos, fails;

	if (argc < 2 || strcmp(argv[1], sub) || cli_parse_node_opts(argc - 1, argv + 1, &o, &pos) || pos != argc - 1) {
		fputs(usage, stderr);
		return 2;
	}
	req = json_pack("{s:s}", "cmd", cmd);
	all = cli_ask_nodes(o.node, req, &fails);
	json_decref(req);
	if (!all)
		return 1;
	if (o.json) {
		cli_print_json(all);
	} else {
		show(all);
		node_errors(all);
	}
	json_decref(all);
	return fails ? 1 : 0;
}

static void show_certs(json_t *all)
{
	json_t *n, *id;
	size_t i, j;

	printf("%-12s %-56s %-34s %s\n", "NODE", "IDENTITY", "SERIAL", "NOT AFTER");
	json_array_foreach(json_object_get(all, "nodes"), i, n)
		json_array_foreach(json_object_get(n, "identities"), j, id)
			printf("%-12s %-56s %-34s %s\n", str(n, "node"), str(id, "spiffe_id"),
			       str(id, "serial"), str(id, "not_after"));
}

int do_cert(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "request"))
		return cert_request(argc - 1, argv + 1);
	return ask_and_show(argc, argv, "ls", "certs",
			    "usage: meshctl cert ls [--node NODE] [-o json] | cert request NS/SA --node NODE\n",
			    show_certs);
}

static void show_ca(json_t *all)
{
	json_t *n;
	size_t i;

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
		printf("Mode:          %s\n", str(n, "mode"));
		if (json_object_get(n, "service")) {
			json_t *sv = json_object_get(n, "service");

			printf("CA service:    %s: %lld joined, %lld renewed, %lld signed, %lld refused\n",
			       str(sv, "listen"), json_integer_value(json_object_get(sv, "joined")),
			       json_integer_value(json_object_get(sv, "renewed")),
			       json_integer_value(json_object_get(sv, "signed")),
			       json_integer_value(json_object_get(sv, "refused")));
		}
		if (json_object_get(n, "client")) {
			json_t *cl = json_object_get(n, "client");

			printf("CA service:    %s (node %s, node certificate not after %s)\n", str(cl, "ca_addr"),
			       str(cl, "node_id"), str(cl, "node_cert_not_after"));
		}
	}
}

int do_ca(int argc, char **argv)
{
	return ask_and_show(argc, argv, "show", "ca", "usage: meshctl ca show [--node NODE] [-o json]\n",
			    show_ca);
}
