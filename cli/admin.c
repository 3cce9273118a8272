#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "admin.h"
#include "cli.h"

static const char *run_dir(void)
{
	const char *r = getenv("BPFMESH_RUN");

	return r && *r ? r : "/run/bpfmesh";
}

static int cmp_nodes(const void *a, const void *b)
{
	return strcmp(((const struct cli_node *)a)->name, ((const struct cli_node *)b)->name);
}

int cli_nodes(const char *only, struct cli_node **out)
{
	DIR *d = opendir(run_dir());
	struct cli_node *nodes = NULL;
	struct dirent *e;
	int n = 0;

	*out = NULL;
	if (!d) {
		fprintf(stderr, "meshctl: no node agents: %s: %s (is meshd running on this host?)\n",
			run_dir(), strerror(errno));
		return 0;
	}
	while ((e = readdir(d))) {
		char sock[4400];
		struct cli_node *nn;

		if (e->d_name[0] == '.' || (only && strcmp(only, e->d_name)))
			continue;
		snprintf(sock, sizeof(sock), "%s/%s/admin.sock", run_dir(), e->d_name);
		if (access(sock, F_OK))
			continue;
		nn = realloc(nodes, (n + 1) * sizeof(*nodes));
		if (!nn)
			break;
		nodes = nn;
		snprintf(nodes[n].name, sizeof(nodes[n].name), "%s", e->d_name);
		snprintf(nodes[n].sock, sizeof(nodes[n].sock), "%s", sock);
		n++;
	}
	closedir(d);
	if (!n) {
		if (only)
			fprintf(stderr, "meshctl: node %s has no agent socket under %s\n", only, run_dir());
		else
			fprintf(stderr, "meshctl: no node agents under %s (is meshd running?)\n", run_dir());
	}
	if (n)
		qsort(nodes, n, sizeof(*nodes), cmp_nodes);
	*out = nodes;
	return n;
}

json_t *cli_admin_call(const char *sock, json_t *req)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	char *line = json_dumps(req, JSON_COMPACT), *buf = NULL;
	size_t len = 0, cap = 0;
	json_t *reply = NULL;
	int fd = -1;

	if (!line || strlen(sock) >= sizeof(sa.sun_path)) {
		errno = EINVAL;
		goto out;
	}
	strcpy(sa.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		goto out;
	if (write(fd, line, strlen(line)) < 0 || write(fd, "\n", 1) < 0)
		goto out;
	for (;;) {
		ssize_t n;

		if (len + 4096 > cap) {
			char *nb = realloc(buf, cap = cap ? cap * 2 : 65536);

			if (!nb)
				goto out;
			buf = nb;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (!buf)
		goto out;
	buf[len] = 0;
	reply = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
	if (!reply)
		errno = EPROTO;
out:
	if (fd >= 0)
		close(fd);
	free(line);
	free(buf);
	return reply;
}

const char *cli_store_url(const char *flag)
{
	const char *env = getenv("BPFMESH_STORE");

	if (flag && *flag)
		return flag;
	if (env && *env)
		return env;
	return "file:///var/lib/bpfmesh";
}

int cli_parse_node_opts(int argc, char **argv, struct cli_node_opts *o, int *first_pos)
{
	static const struct option lo[] = { { "node", required_argument, 0, 'N' },
					    { "output", required_argument, 0, 'o' },
					    { "json", no_argument, 0, 'j' },
					    { 0, 0, 0, 0 } };
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:j", lo, NULL)) != -1) {
		switch (c) {
		case 'N': o->node = optarg; break;
		case 'o':
			if (strcmp(optarg, "json") && strcmp(optarg, "table") && strcmp(optarg, "wide")) {
				fprintf(stderr, "meshctl: -o %s: use json or table\n", optarg);
				return -1;
			}
			o->json = !strcmp(optarg, "json");
			break;
		case 'j': o->json = 1; break;
		default: return -1;
		}
	}
	*first_pos = optind;
	return 0;
}

json_t *cli_ask_nodes(const char *only, json_t *req, int *failures)
{
	struct cli_node *nodes;
	int n = cli_nodes(only, &nodes);
	json_t *all = json_pack("{s:[]}", "nodes");

	*failures = n ? 0 : 1;
	for (int i = 0; i < n && all; i++) {
		json_t *r = cli_admin_call(nodes[i].sock, req);

		if (!r) {
			r = json_pack("{s:b,s:s,s:b,s:s}", "ok", 0, "node", nodes[i].name, "ready", 0,
				      "error", strerror(errno));
			(*failures)++;
		} else if (!json_is_true(json_object_get(r, "ok"))) {
			(*failures)++;
		}
		json_object_set_new(r, "node", json_string(nodes[i].name));
		json_array_append_new(json_object_get(all, "nodes"), r);
	}
	free(nodes);
	return all;
}

void cli_print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));

	if (s)
		puts(s);
	free(s);
}
