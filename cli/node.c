/* meshctl verbs about nodes: status, backend, pod, stats (over the agents'
 * admin sockets) and node join/remove (in the store). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include "admin.h"
#include "cli.h"
#include "duration.h"
#include "schema.h"
#include "store.h"

int do_status(int argc, char **argv)
{
	struct cli_node_opts o = {};
	json_t *all, *req, *n;
	int pos, fails;
	size_t i;

	if (cli_parse_node_opts(argc, argv, &o, &pos))
		return 2;
	req = json_pack("{s:s}", "cmd", "status");
	all = cli_ask_nodes(o.node, req, &fails);
	json_decref(req);
	if (o.json) {
		cli_print_json(all);
	} else {
		printf("%-12s %-6s %-10s %-10s %-9s %-9s %-5s %s\n", "NODE", "READY", "APPLIED",
		       "STORE", "SERVICES", "BACKENDS", "PODS", "ERROR");
		json_array_foreach(json_object_get(all, "nodes"), i, n) {
			const char *e = json_string_value(json_object_get(n, "error"));

			if (!e)
				e = json_string_value(json_object_get(n, "last_error"));
			printf("%-12s %-6s %-10lld %-10lld %-9lld %-9lld %-5zu %s\n",
			       json_string_value(json_object_get(n, "node")),
			       json_is_true(json_object_get(n, "ready")) ? "yes" : "no",
			       json_integer_value(json_object_get(n, "applied_generation")),
			       json_integer_value(json_object_get(n, "store_generation")),
			       json_integer_value(json_object_get(n, "services")),
			       json_integer_value(json_object_get(n, "backends")),
			       json_array_size(json_object_get(n, "pods")), e ? e : "");
		}
	}
	json_decref(all);
	return fails ? 1 : 0;
}

int do_backend(int argc, char **argv)
{
	struct cli_node_opts o = {};
	json_t *all, *req, *n;
	int pos, fails, eject, ok = 0;
	size_t i;

	if (cli_parse_node_opts(argc, argv, &o, &pos))
		return 2;
	if (argc - pos != 2 || (strcmp(argv[pos], "eject") && strcmp(argv[pos], "uneject"))) {
		fprintf(stderr, "usage: meshctl backend eject|uneject IP:PORT [--node NODE]\n");
		return 2;
	}
	eject = !strcmp(argv[pos], "eject");
	req = json_pack("{s:s,s:s,s:b}", "cmd", "eject", "backend", argv[pos + 1], "ejected", eject);
	all = cli_ask_nodes(o.node, req, &fails);
	json_decref(req);
	json_array_foreach(json_object_get(all, "nodes"), i, n) {
		if (json_is_true(json_object_get(n, "ok"))) {
			ok++;
			if (!o.json)
				printf("backend %s %s on node %s\n", argv[pos + 1],
				       eject ? "ejected" : "returned to service",
				       json_string_value(json_object_get(n, "node")));
		}
	}
	if (o.json)
		cli_print_json(all);
	else if (!ok)
		json_array_foreach(json_object_get(all, "nodes"), i, n)
			fprintf(stderr, "meshctl: node %s: %s\n", json_string_value(json_object_get(n, "node")),
				json_string_value(json_object_get(n, "error")));
	json_decref(all);
	return ok ? 0 : 1;
}

int do_pod(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "node", required_argument, 0, 'N' }, { "name", required_argument, 0, 'n' },
		{ "namespace", required_argument, 0, 's' }, { "ip", required_argument, 0, 'i' },
		{ "netns", required_argument, 0, 'e' }, { "cgroup", required_argument, 0, 'c' },
		{ 0, 0, 0, 0 }
	};
	const char *node = NULL, *name = NULL, *ns = "default", *ip = "", *netns = "", *cg = "";
	struct cli_node *nodes;
	json_t *req, *r;
	int c, enroll, rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'N': node = optarg; break;
		case 'n': name = optarg; break;
		case 's': ns = optarg; break;
		case 'i': ip = optarg; break;
		case 'e': netns = optarg; break;
		case 'c': cg = optarg; break;
		default: return 2;
		}
	}
	if (argc - optind != 1 || (strcmp(argv[optind], "enroll") && strcmp(argv[optind], "remove")) ||
	    !node || !name) {
		fprintf(stderr, "usage: meshctl pod enroll|remove --node NODE --name NAME [--namespace NS] "
				"[--ip IP --netns NETNS --cgroup PATH]\n");
		return 2;
	}
	enroll = !strcmp(argv[optind], "enroll");
	if (cli_nodes(node, &nodes) != 1)
		return 1;
	req = enroll ? json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "cmd", "pod_enroll", "name", name,
				 "namespace", ns, "ip", ip, "netns", netns, "cgroup", cg)
		     : json_pack("{s:s,s:s,s:s}", "cmd", "pod_remove", "name", name, "namespace", ns);
	r = cli_admin_call(nodes[0].sock, req);
	if (!r)
		fprintf(stderr, "meshctl: node %s: %s\n", node, strerror(errno));
	else if (!json_is_true(json_object_get(r, "ok")))
		fprintf(stderr, "meshctl: node %s: %s\n", node, json_string_value(json_object_get(r, "error")));
	else {
		printf("pod %s/%s %s on node %s\n", ns, name, enroll ? "enrolled" : "removed", node);
		rc = 0;
	}
	json_decref(r);
	json_decref(req);
	free(nodes);
	return rc;
}

int do_stats(int argc, char **argv)
{
	struct cli_node_opts o = {};
	json_t *all, *req, *n, *row;
	int pos, fails;
	size_t i, j;

	if (cli_parse_node_opts(argc, argv, &o, &pos))
		return 2;
	req = json_pack("{s:s}", "cmd", "stats");
	all = cli_ask_nodes(o.node, req, &fails);
	json_decref(req);
	if (o.json) {
		cli_print_json(all);
		json_decref(all);
		return fails ? 1 : 0;
	}
	printf("%-8s %-22s %-22s %8s %8s %7s %12s %12s\n", "NODE", "SERVICE", "BACKEND", "OPENED",
	       "CLOSED", "FAILED", "SENT", "RECEIVED");
	json_array_foreach(json_object_get(all, "nodes"), i, n)
		json_array_foreach(json_object_get(n, "connections"), j, row)
			printf("%-8s %-22s %-22s %8lld %8lld %7lld %12lld %12lld\n",
			       json_string_value(json_object_get(n, "node")),
			       json_string_value(json_object_get(row, "service")),
			       json_string_value(json_object_get(row, "backend")),
			       json_integer_value(json_object_get(row, "opened")),
			       json_integer_value(json_object_get(row, "closed")),
			       json_integer_value(json_object_get(row, "failed")),
			       json_integer_value(json_object_get(row, "bytes_sent")),
			       json_integer_value(json_object_get(row, "bytes_recv")));
	printf("\n%-8s %-48s %7s %8s %8s %10s %10s\n", "NODE", "CLUSTER", "ACTIVE", "PICKS", "PANICS",
	       "REF_LIMIT", "REF_NOHOST");
	json_array_foreach(json_object_get(all, "nodes"), i, n)
		json_array_foreach(json_object_get(n, "clusters"), j, row)
			printf("%-8s %-48s %7lld %8lld %8lld %10lld %10lld\n",
			       json_string_value(json_object_get(n, "node")),
			       json_string_value(json_object_get(row, "cluster")),
			       json_integer_value(json_object_get(row, "active")),
			       json_integer_value(json_object_get(row, "picks")),
			       json_integer_value(json_object_get(row, "panics")),
			       json_integer_value(json_object_get(row, "refused_max_conns")),
			       json_integer_value(json_object_get(row, "refused_no_backend")));
	json_decref(all);
	return fails ? 1 : 0;
}

/* meshctl node join NODE [--ttl 1h] | node remove NODE: the CA service's
 * side of a node's membership (docs/identity.md §6). Written to the store
 * directly, so it works with no meshd running. */
int do_node(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "ttl", required_argument, 0, 't' }, { "store", required_argument, 0, 's' },
		{ "output", required_argument, 0, 'o' }, { 0, 0, 0, 0 }
	};
	const char *ttl_s = "1h", *store_flag = NULL, *node, *verb;
	char token[BM_STORE_TOKEN_HEX + 1], key[300], until[32];
	struct bm_store *store = NULL;
	int c, json = 0, r, rc = 1;
	uint64_t ns = 0;
	time_t now = time(NULL);
	long ttl;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:", lo, NULL)) != -1) {
		switch (c) {
		case 't': ttl_s = optarg; break;
		case 's': store_flag = optarg; break;
		case 'o': json = !strcmp(optarg, "json"); break;
		default: return 2;
		}
	}
	if (argc - optind != 2 || (strcmp(argv[optind], "join") && strcmp(argv[optind], "remove"))) {
		fprintf(stderr, "usage: meshctl node join NODE [--ttl 1h] [-o json] | node remove NODE\n");
		return 2;
	}
	verb = argv[optind];
	node = argv[optind + 1];
	/* The node name becomes a SPIFFE ID path segment and a store key. */
	if (!bm_is_dns1123_subdomain(node)) {
		fprintf(stderr, "meshctl: node name '%s' must be a DNS name (lowercase [a-z0-9.-])\n", node);
		return 2;
	}
	if (bm_duration_parse_ns(ttl_s, &ns) || ns < 1000000000ull || ns / 1000000000ull > 30L * 24 * 3600) {
		fprintf(stderr, "meshctl: --ttl %s: want a duration from 1s to 720h (e.g. 10m, 1h)\n", ttl_s);
		return 2;
	}
	ttl = (long)(ns / 1000000000ull);
	r = bm_store_open(cli_store_url(store_flag), &store);
	if (r) {
		fprintf(stderr, "meshctl: open store: %s\n", strerror(-r));
		return 1;
	}
	if (!strcmp(verb, "remove")) {
		int r1, r2;

		snprintf(key, sizeof(key), "nodes/%s/record", node);
		r1 = bm_store_kv_del(store, key);
		snprintf(key, sizeof(key), "nodes/%s/join-token", node);
		r2 = bm_store_kv_del(store, key);
		if ((r1 && r1 != -ENOENT) || (r2 && r2 != -ENOENT)) {
			fprintf(stderr, "meshctl: node %s: %s\n", node, strerror(-(r1 && r1 != -ENOENT ? r1 : r2)));
		} else if (r1 == -ENOENT && r2 == -ENOENT) {
			fprintf(stderr, "meshctl: node %s has not joined and has no join token\n", node);
		} else {
			printf("node %s removed: the CA refuses its renewals and CSRs from now on; its node "
			       "certificate expires by itself\n", node);
			rc = 0;
		}
		goto out;
	}
	snprintf(key, sizeof(key), "nodes/%s/join-token", node);
	r = bm_store_token_create(store, key, ttl, now, token);
	if (r) {
		fprintf(stderr, "meshctl: store the join token of node %s: %s\n", node, strerror(-r));
		goto out;
	}
	{
		struct tm tm;

		gmtime_r(&(time_t){ now + ttl }, &tm);
		strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	if (json) {
		json_t *j = json_pack("{s:s,s:s,s:s}", "node", node, "token", token, "expires", until);

		cli_print_json(j);
		json_decref(j);
	} else {
		printf("%s\n", token);
		fprintf(stderr, "join token for node %s, one use, valid until %s; shown once (the store keeps "
				"only its SHA-256).\nStart that node's meshd with --ca-addr CA:15012 --ca-bundle "
				"ROOT.pem --join-token TOKEN\n", node, until);
	}
	OPENSSL_cleanse(token, sizeof(token));
	rc = 0;
out:
	bm_store_close(store);
	return rc;
}
