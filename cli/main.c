/* meshctl: edits bpfmesh policy and talks to node agents. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

int do_node(int argc, char **argv); /* cli/node.c: node join / remove (CA service) */

static const struct cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
	const char *help;
} cmds[] = {
	{ "apply", do_apply, "apply -f FILE|- [--dry-run] [--store URL]",
	  "validate and store resources (YAML or JSON, multi-document)" },
	{ "get", do_get, "get KIND [NAME] [-n NS | -A] [-o yaml|json|wide]",
	  "list or show stored resources" },
	{ "delete", do_delete, "delete -f FILE | delete KIND NAME [-n NS]",
	  "remove resources from the store" },
	{ "check", do_check, "check [-o json]",
	  "preflight: can this host run bpfmesh?" },
	{ "status", do_status, "status [--node NODE] [-o json]",
	  "node agents: config generation applied, programs, pods" },
	{ "backend", do_backend, "backend eject|uneject IP:PORT [--node NODE]",
	  "take a backend out of (or back into) kernel load balancing" },
	{ "pod", do_pod, "pod enroll|remove --node NODE --name NAME [--namespace NS] --ip IP [--netns NETNS] [--cgroup PATH]",
	  "enrol a pod with its node's meshd (used by the runtime / sandbox)" },
	{ "stats", do_stats, "stats [--node NODE] [-o json]",
	  "kernel connection counters per service and backend" },
	{ "cert", do_cert, "cert ls [--node NODE] [-o json] | cert request NS/SA --node NODE",
	  "workload certificates (SPIFFE X.509-SVIDs) per node; ask the CA service as a node" },
	{ "node", do_node, "node join NODE [--ttl 1h] [-o json] | node remove NODE",
	  "one-time join token for a node of the CA service (printed once) / remove a node" },
	{ "ca", do_ca, "ca show [--node NODE] [-o json]",
	  "the mesh CA: subject, trust domain, serial, expiry, SHA-256 fingerprint" },
	{ "metrics", do_metrics, "metrics [--node NODE]",
	  "a node's Prometheus metrics (what :15020/metrics serves)" },
	{ "stat", do_stat, "stat [KIND/NAME] [-n NS|-A] [--from-node N] [-o json|wide]",
	  "golden signals per service or workload: success, RPS, latency, TCP" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: meshctl COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-60s %s\n", cmds[i].usage, cmds[i].help);
	fprintf(f, "\nenvironment: BPFMESH_STORE (store URL: file:///DIR or etcd://HOST:PORT[,...];\n"
		   "             default file:///var/lib/bpfmesh),\n"
		   "             BPFMESH_RUN (node agents' run directory, default /run/bpfmesh)\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "meshctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
