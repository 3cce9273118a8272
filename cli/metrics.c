/* meshctl metrics [--node NODE]: a node's Prometheus exposition, the same
 * text its meshd serves on :15020/metrics, fetched over the admin socket. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "admin.h"
#include "cli.h"

static void usage(void)
{
	fprintf(stderr, "usage: meshctl metrics [--node NODE]\n"
			"  prints the node's Prometheus metrics (text format 0.0.4);\n"
			"  --node may be left out when exactly one node agent runs here\n");
}

int do_metrics(int argc, char **argv)
{
	static const struct option lo[] = { { "node", required_argument, 0, 'N' },
					    { "help", no_argument, 0, 'h' },
					    { 0, 0, 0, 0 } };
	const char *node = NULL, *text;
	struct cli_node *nodes = NULL;
	json_t *req = NULL, *r = NULL;
	int c, n, rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		switch (c) {
		case 'N': node = optarg; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (optind != argc) {
		usage();
		return 2;
	}
	n = cli_nodes(node, &nodes);
	if (n == 0)
		goto out;   /* cli_nodes said why */
	if (n > 1) {
		fprintf(stderr, "meshctl metrics: %d nodes run an agent here; choose one with --node:", n);
		for (int i = 0; i < n; i++)
			fprintf(stderr, " %s", nodes[i].name);
		fputc('\n', stderr);
		rc = 2;
		goto out;
	}
	req = json_pack("{s:s}", "cmd", "metrics");
	r = req ? cli_admin_call(nodes[0].sock, req) : NULL;
	if (!r) {
		fprintf(stderr, "meshctl metrics: node %s: %s\n", nodes[0].name, strerror(errno));
		goto out;
	}
	text = json_string_value(json_object_get(r, "text"));
	if (!json_is_true(json_object_get(r, "ok")) || !text) {
		const char *e = json_string_value(json_object_get(r, "error"));

		fprintf(stderr, "meshctl metrics: node %s: %s\n", nodes[0].name,
			e ? e : "reply has no metrics text");
		goto out;
	}
	fputs(text, stdout);
	rc = fflush(stdout) ? 1 : 0;
out:
	json_decref(r);
	json_decref(req);
	free(nodes);
	return rc;
}
