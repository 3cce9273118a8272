/*
 * Loading and adoption. Maps are pinned by name (LIBBPF_PIN_BY_NAME) under
 * the node's directory, so every object and every meshd generation shares
 * them. Links are pinned too: a restarted or upgraded meshd finds
 * link_<prog> and swaps its new program in with BPF_LINK_UPDATE (atomic;
 * no second copy ever attached, no gap in coverage). Killing meshd leaves
 * the kernel path running.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "connect.skel.h"
#include "sockops.skel.h"
#include "inbound.skel.h"
#include "loader.h"
#include "log.h"

#define BPFFS "/sys/fs/bpf"

int bm_bpffs_ensure(void)
{
	struct statfs st;

	if (!statfs(BPFFS, &st) && st.f_type == BPF_FS_MAGIC)
		return 0;
	if (mkdir(BPFFS, 0700) && errno != EEXIST)
		return -errno;
	if (mount("bpf", BPFFS, "bpf", 0, "mode=0700")) {
		int err = -errno;

		bm_log("mount bpffs at %s: %s", BPFFS, strerror(-err));
		return err;
	}
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

/* Refuse a cgroup2 mount root: programs there would see every process on
 * the host, not just the node's pods. */
static int check_cgroup(const char *path)
{
	char real[PATH_MAX], line[PATH_MAX * 2];
	FILE *f;
	int err = 0;

	if (!realpath(path, real)) {
		bm_log("cgroup %s: %s (is cgroup v2 mounted, and did the runtime create the node's pod cgroup?)",
		       path, strerror(errno));
		return -ENOENT;
	}
	f = fopen("/proc/self/mounts", "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char dev[256], mnt[PATH_MAX], type[64];

		if (sscanf(line, "%255s %4095s %63s", dev, mnt, type) != 3)
			continue;
		if (!strcmp(type, "cgroup2") && !strcmp(mnt, real)) {
			bm_log("cgroup %s is the cgroup v2 root: refusing to attach there; give the node's pod subtree",
			       path);
			err = -EPERM;
		}
	}
	fclose(f);
	return err;
}

static int attach_or_adopt(struct bm_loader *l, struct bpf_program *prog, int cg_fd,
			   const char *name)
{
	char path[PATH_MAX + 64];
	struct bpf_link *link;
	int err;

	snprintf(path, sizeof(path), "%s/link_%s", l->pindir, name);
	link = access(path, F_OK) ? NULL : bpf_link__open(path);
	if (link) {
		err = bpf_link__update_program(link, prog);
		bpf_link__disconnect(link);
		bpf_link__destroy(link);
		if (err) {
			bm_log("update pinned link %s: %s", path, strerror(-err));
			return err;
		}
		l->adopted_links++;
		return 0;
	}
	link = bpf_program__attach_cgroup(prog, cg_fd);
	if (!link) {
		err = -errno;
		bm_log("attach %s to cgroup %s: %s", name, l->cgroup, strerror(-err));
		return err;
	}
	err = bpf_link__pin(link, path);
	if (err) {
		bm_log("pin link %s: %s", path, strerror(-err));
		bpf_link__destroy(link);
		return err;
	}
	bpf_link__disconnect(link); /* the pin keeps it attached */
	bpf_link__destroy(link);
	l->created_links++;
	return 0;
}

int bm_loader_open(struct bm_loader *l, const char *pindir, const char *cgroup)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pindir);
	char probe[PATH_MAX + 16];
	int err, cg_fd = -1;

	memset(l, 0, sizeof(*l));
	snprintf(l->pindir, sizeof(l->pindir), "%s", pindir);
	snprintf(l->cgroup, sizeof(l->cgroup), "%s", cgroup);
	err = check_cgroup(cgroup);
	if (err)
		return err;
	err = bm_bpffs_ensure();
	if (err)
		return err;
	err = mkdir_p(pindir, 0700);
	if (err) {
		bm_log("create pin directory %s: %s", pindir, strerror(-err));
		return err;
	}
	snprintf(probe, sizeof(probe), "%s/svc_v1", pindir);
	l->adopted_maps = !access(probe, F_OK);

	l->conn = connect_bpf__open_opts(&opts);
	if (!l->conn) {
		err = -errno;
		bm_log("open connect BPF object: %s", strerror(-err));
		goto err_close;
	}
	err = connect_bpf__load(l->conn);
	if (err) {
		bm_log("load connect BPF object: %s (kernel too old, or a pinned map with another layout?)",
		       strerror(-err));
		goto err_close;
	}
	l->sops = sockops_bpf__open_opts(&opts);
	if (!l->sops) {
		err = -errno;
		bm_log("open sockops BPF object: %s", strerror(-err));
		goto err_close;
	}
	err = sockops_bpf__load(l->sops);
	if (err) {
		bm_log("load sockops BPF object: %s", strerror(-err));
		goto err_close;
	}

	l->inb = inbound_bpf__open_opts(&opts);
	if (!l->inb) {
		err = -errno;
		bm_log("open inbound BPF object: %s", strerror(-err));
		goto err_close;
	}
	err = inbound_bpf__load(l->inb);
	if (err) {
		bm_log("load inbound BPF object: %s", strerror(-err));
		goto err_close;
	}

	cg_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0) {
		err = -errno;
		bm_log("open cgroup %s: %s", cgroup, strerror(-err));
		goto err_close;
	}
	if ((err = attach_or_adopt(l, l->conn->progs.bm_connect4, cg_fd, "connect4")) ||
	    (err = attach_or_adopt(l, l->conn->progs.bm_getpeername4, cg_fd, "getpeername4")) ||
	    (err = attach_or_adopt(l, l->conn->progs.bm_sock_release, cg_fd, "sock_release")) ||
	    (err = attach_or_adopt(l, l->sops->progs.bm_sockops, cg_fd, "sockops")))
		goto err_close;
	close(cg_fd);

	l->fd.svc = bpf_map__fd(l->conn->maps.svc_v1);
	l->fd.cluster = bpf_map__fd(l->conn->maps.cluster_v1);
	l->fd.cluster_state = bpf_map__fd(l->conn->maps.cluster_state_v1);
	l->fd.backend_active = bpf_map__fd(l->conn->maps.backend_active_v1);
	l->fd.backend_eject = bpf_map__fd(l->conn->maps.backend_eject_v1);
	l->fd.sock = bpf_map__fd(l->conn->maps.sock_v1);
	l->fd.stats = bpf_map__fd(l->conn->maps.stats_v1);
	l->fd.cluster_stats = bpf_map__fd(l->conn->maps.cluster_stats_v1);
	l->fd.orig_dst = bpf_map__fd(l->conn->maps.orig_dst_v1);
	l->fd.pod_inbound = bpf_map__fd(l->conn->maps.pod_inbound_v1);
	l->fd.inbound_socks = bpf_map__fd(l->conn->maps.inbound_socks_v1);
	l->fd.backend_health = bpf_map__fd(l->sops->maps.backend_health_v1);
	l->fd.stats_keys = bpf_map__fd(l->sops->maps.stats_keys_v1);
	l->fd.stats_keys_lost = bpf_map__fd(l->sops->maps.stats_keys_lost_v1);
	return 0;

err_close:
	if (cg_fd >= 0)
		close(cg_fd);
	bm_loader_close(l);
	return err;
}

void bm_loader_close(struct bm_loader *l)
{
	inbound_bpf__destroy(l->inb);
	sockops_bpf__destroy(l->sops);
	connect_bpf__destroy(l->conn);
	l->inb = NULL;
	l->sops = NULL;
	l->conn = NULL;
}

int bm_loader_cleanup(const char *pindir)
{
	DIR *d = opendir(pindir);
	struct dirent *e;
	int err = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	/* Links first, so nothing runs against half-removed maps. */
	for (int pass = 0; pass < 2; pass++) {
		rewinddir(d);
		while ((e = readdir(d))) {
			char path[PATH_MAX + 256];
			int is_link = !strncmp(e->d_name, "link_", 5);

			if (e->d_name[0] == '.' || is_link != (pass == 0))
				continue;
			snprintf(path, sizeof(path), "%s/%s", pindir, e->d_name);
			if (unlink(path) && !err)
				err = -errno;
		}
	}
	closedir(d);
	if (rmdir(pindir) && errno != ENOENT && !err)
		err = -errno;
	return err;
}
