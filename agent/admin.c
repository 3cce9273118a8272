/*
 * Admin socket for meshctl and the node runtime: status, pod enrolment,
 * manual ejection, counters. Requests are tiny and handled inline on the
 * main loop; a client gets 1 s to send its line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <bpf/bpf.h>
#include "agent.h"
#include "ca.h"
#include "log.h"
#include "mesh.h"
#include "metrics.h"

int bm_admin_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0600) || listen(fd, 64)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static json_t *error_reply(const char *fmt, const char *arg)
{
	char msg[512];

	snprintf(msg, sizeof(msg), fmt, arg);
	return json_pack("{s:b,s:s}", "ok", 0, "error", msg);
}

static json_t *do_eject(struct bm_agent *a, const json_t *req)
{
	const char *addr = json_string_value(json_object_get(req, "backend"));
	int on = json_is_true(json_object_get(req, "ejected"));
	uint32_t id, val = on ? 1 : 0;

	if (!addr)
		return error_reply("eject: \"backend\" (IP:PORT) is required%s", "");
	if (bm_reconcile_backend_id(&a->rec, addr, &id))
		return error_reply("backend %s is not a backend of any service on this node", addr);
	if (bpf_map_update_elem(a->loader.fd.backend_eject, &id, &val, BPF_ANY))
		return error_reply("write backend_eject_v1: %s", strerror(errno));
	bm_log("backend %s %s by admin request", addr, on ? "ejected" : "returned");
	return json_pack("{s:b,s:s,s:b}", "ok", 1, "backend", addr, "ejected", on);
}

static json_t *handle(struct bm_agent *a, const json_t *req)
{
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	char err[256] = "";
	json_t *r;
	int e;

	if (!cmd)
		return error_reply("request needs a \"cmd\"%s", "");
	if (!strcmp(cmd, "status"))
		return bm_agent_status_json(a);
	if (!strcmp(cmd, "stats"))
		return bm_agent_stats_json(a);
	if (!strcmp(cmd, "eject"))
		return do_eject(a, req);
	if (!strcmp(cmd, "certs") || !strcmp(cmd, "ca")) {
		if (!a->mesh_on)
			return error_reply("mesh identity is not enabled on this node%s", "");
		r = !strcmp(cmd, "certs") ? bm_identity_list_json(&a->idm) : bm_mesh_ca_json(a);
		if (!r)
			return error_reply("%s: out of memory", cmd);
		json_object_set_new(r, "ok", json_true());
		return r;
	}
	if (!strcmp(cmd, "ca_request")) {
		const char *ns = json_string_value(json_object_get(req, "namespace"));
		const char *sa = json_string_value(json_object_get(req, "service_account"));

		if (!a->mesh_on)
			return error_reply("mesh identity is not enabled on this node%s", "");
		if (!ns || !sa)
			return error_reply("ca_request: \"namespace\" and \"service_account\" are required%s", "");
		r = bm_mesh_ca_request_json(a, ns, sa);
		return r ? r : error_reply("%s: out of memory", cmd);
	}
	if (!strcmp(cmd, "metrics")) {
		char *text = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&text, &len);

		if (!f)
			return error_reply("metrics: %s", strerror(errno));
		bm_metrics_render(a, f);
		fclose(f);
		r = json_pack("{s:b,s:s}", "ok", 1, "text", text ? text : "");
		free(text);
		return r;
	}
	if (!strcmp(cmd, "pod_enroll")) {
		e = bm_pods_enroll(&a->pods, req, err, sizeof(err));
		if (e)
			return error_reply("%s", err[0] ? err : strerror(-e));
		bm_pods_write_hosts(&a->pods, &a->model);
		bm_mesh_sync(a);
		bm_log("pod %s/%s enrolled", json_string_value(json_object_get(req, "namespace")),
		       json_string_value(json_object_get(req, "name")));
		return json_pack("{s:b}", "ok", 1);
	}
	if (!strcmp(cmd, "pod_remove")) {
		const char *name = json_string_value(json_object_get(req, "name"));

		e = bm_pods_remove(&a->pods, name ? name : "",
				   json_string_value(json_object_get(req, "namespace")));
		if (e)
			return error_reply("pod %s is not enrolled on this node", name ? name : "");
		bm_mesh_sync(a);
		return json_pack("{s:b}", "ok", 1);
	}
	r = error_reply("unknown command \"%s\"", cmd);
	return r;
}

void bm_admin_serve(struct bm_agent *a, int listen_fd)
{
	struct timeval tv = { .tv_sec = 1 };
	char buf[65536];
	size_t len = 0;
	json_t *req, *reply;
	char *out;
	int fd;

	fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (len < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	buf[len] = 0;
	req = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
	pthread_mutex_lock(&a->lock);
	reply = req ? handle(a, req) : error_reply("request is not valid JSON%s", "");
	pthread_mutex_unlock(&a->lock);
	out = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
	if (out) {
		size_t n = strlen(out), off = 0;

		while (off < n) {
			ssize_t w = write(fd, out + off, n - off);

			if (w <= 0)
				break;
			off += (size_t)w;
		}
		if (write(fd, "\n", 1) < 0) {
			/* the client went away; nothing to do */
		}
	}
	free(out);
	json_decref(reply);
	json_decref(req);
	close(fd);
}
