#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "log.h"
#include "pods.h"

static const char *js(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static int save(const struct bm_pods *pods)
{
	char tmp[PATH_MAX + 8];
	json_t *arr;
	int err = 0;

	if (!pods->path[0])
		return 0;
	arr = bm_pods_json(pods);
	if (!arr)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s.tmp", pods->path);
	if (json_dump_file(arr, tmp, JSON_COMPACT) || rename(tmp, pods->path))
		err = -EIO;
	json_decref(arr);
	return err;
}

static struct bm_pod *find(struct bm_pods *pods, const char *name, const char *ns)
{
	for (size_t i = 0; i < pods->n; i++)
		if (!strcmp(pods->p[i].name, name) && !strcmp(pods->p[i].ns, ns))
			return &pods->p[i];
	return NULL;
}

static int fill(struct bm_pod *p, const json_t *o, char *err, size_t errlen)
{
	struct in_addr a;
	struct stat st;
	const char *ns = js(o, "namespace");

	if (!*js(o, "name") || strlen(js(o, "name")) >= sizeof(p->name)) {
		snprintf(err, errlen, "pod: name is required (at most %zu characters)", sizeof(p->name) - 1);
		return -EINVAL;
	}
	if (inet_pton(AF_INET, js(o, "ip"), &a) != 1) {
		snprintf(err, errlen, "pod %s: ip \"%s\" is not an IPv4 address", js(o, "name"), js(o, "ip"));
		return -EINVAL;
	}
	if (strchr(js(o, "netns"), '/') || strstr(js(o, "netns"), "..")) {
		snprintf(err, errlen, "pod %s: netns must be a name under /run/netns", js(o, "name"));
		return -EINVAL;
	}
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", js(o, "name"));
	snprintf(p->ns, sizeof(p->ns), "%s", *ns ? ns : "default");
	snprintf(p->ip, sizeof(p->ip), "%s", js(o, "ip"));
	snprintf(p->netns, sizeof(p->netns), "%s", js(o, "netns"));
	snprintf(p->cgroup, sizeof(p->cgroup), "%s", js(o, "cgroup"));
	if (p->cgroup[0] && !stat(p->cgroup, &st))
		p->cgroup_id = st.st_ino;
	return 0;
}

int bm_pods_load(struct bm_pods *pods, const char *path)
{
	json_t *arr, *o;
	size_t i;
	char err[256];

	memset(pods, 0, sizeof(*pods));
	snprintf(pods->path, sizeof(pods->path), "%s", path);
	arr = json_load_file(path, 0, NULL);
	if (!arr)
		return 0;
	json_array_foreach(arr, i, o)
		bm_pods_enroll(pods, o, err, sizeof(err));
	json_decref(arr);
	return 0;
}

void bm_pods_free(struct bm_pods *pods)
{
	free(pods->p);
	pods->p = NULL;
	pods->n = 0;
}

int bm_pods_enroll(struct bm_pods *pods, const json_t *req, char *err, size_t errlen)
{
	struct bm_pod p, *slot;
	int e = fill(&p, req, err, errlen);

	if (e)
		return e;
	slot = find(pods, p.name, p.ns);
	if (!slot) {
		struct bm_pod *np = realloc(pods->p, (pods->n + 1) * sizeof(*np));

		if (!np)
			return -ENOMEM;
		pods->p = np;
		slot = &pods->p[pods->n++];
	}
	*slot = p;
	return save(pods);
}

int bm_pods_remove(struct bm_pods *pods, const char *name, const char *ns)
{
	struct bm_pod *p = find(pods, name, ns && *ns ? ns : "default");

	if (!p)
		return -ENOENT;
	*p = pods->p[--pods->n];
	return save(pods);
}

const struct bm_pod *bm_pods_by_cgroup(const struct bm_pods *pods, uint64_t cgroup_id)
{
	for (size_t i = 0; cgroup_id && i < pods->n; i++)
		if (pods->p[i].cgroup_id == cgroup_id)
			return &pods->p[i];
	return NULL;
}

const struct bm_pod *bm_pods_by_ip(const struct bm_pods *pods, const char *ip)
{
	for (size_t i = 0; i < pods->n; i++)
		if (!strcmp(pods->p[i].ip, ip))
			return &pods->p[i];
	return NULL;
}

json_t *bm_pods_json(const struct bm_pods *pods)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < pods->n; i++) {
		const struct bm_pod *p = &pods->p[i];

		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:s}", "name", p->name,
						     "namespace", p->ns, "ip", p->ip, "netns",
						     p->netns, "cgroup", p->cgroup));
	}
	return arr;
}

/* "reviews.prod.svc.cluster.local" answers to itself and, inside namespace
 * prod, to "reviews", "reviews.prod" and "reviews.prod.svc". */
static void write_names(FILE *f, const struct bm_model *m, const char *pod_ns, int own)
{
	for (size_t i = 0; i < m->n_names; i++) {
		const struct bm_m_name *n = &m->names[i];
		char ip[INET_ADDRSTRLEN], shortname[256];
		const char *svc = strstr(n->name, ".svc.cluster.local");

		if ((strcmp(n->ns, pod_ns) == 0) != own)
			continue;
		inet_ntop(AF_INET, &n->vip, ip, sizeof(ip));
		fprintf(f, "%s\t%s", ip, n->name);
		if (svc && svc[18] == 0) {
			size_t len = (size_t)(svc - n->name);
			const char *dot;

			snprintf(shortname, sizeof(shortname), "%.*s", (int)len, n->name);
			fprintf(f, " %s.svc", shortname);
			dot = strchr(shortname, '.');
			if (dot) {
				fprintf(f, " %s", shortname);
				if (own)
					fprintf(f, " %.*s", (int)(dot - shortname), shortname);
			}
		}
		fputc('\n', f);
	}
}

void bm_pods_write_hosts(const struct bm_pods *pods, const struct bm_model *m)
{
	for (size_t i = 0; i < pods->n; i++) {
		const struct bm_pod *p = &pods->p[i];
		char dir[PATH_MAX], path[PATH_MAX + 16], tmp[PATH_MAX + 32];
		FILE *f;

		if (!p->netns[0])
			continue;
		snprintf(dir, sizeof(dir), "/etc/netns/%s", p->netns);
		if (access(dir, F_OK))
			continue; /* the runtime did not ask for name resolution */
		snprintf(path, sizeof(path), "%s/hosts", dir);
		snprintf(tmp, sizeof(tmp), "%s/.hosts.tmp", dir);
		f = fopen(tmp, "w");
		if (!f) {
			bm_log("write %s: %s", tmp, strerror(errno));
			continue;
		}
		fprintf(f, "# written by meshd: service names of the mesh\n127.0.0.1\tlocalhost\n::1\tlocalhost\n%s\t%s\n",
			p->ip, p->name);
		write_names(f, m, p->ns, 1);
		write_names(f, m, p->ns, 0);
		if (fclose(f) || rename(tmp, path))
			bm_log("write %s: %s", path, strerror(errno));
	}
}
