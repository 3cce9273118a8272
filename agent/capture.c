/*
 * Namespace switching is per thread (setns(CLONE_NEWNET)): sockets created
 * while the thread is inside a pod's netns stay there after it switches back,
 * which is how one meshd serves every pod of its node.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "inbound.skel.h"
#include "capture.h"
#include "log.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static int enter_netns(const char *netns, int *self_fd)
{
	char path[PATH_MAX];
	int fd;

	*self_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (*self_fd < 0)
		return -errno;
	snprintf(path, sizeof(path), "/run/netns/%s", netns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET)) {
		int err = -errno;

		if (fd >= 0)
			close(fd);
		close(*self_fd);
		return err;
	}
	close(fd);
	return 0;
}

static void leave_netns(int self_fd)
{
	if (setns(self_fd, CLONE_NEWNET))
		bm_log("setns back to meshd's netns: %s", strerror(errno)); /* cannot really happen */
	close(self_fd);
}

int bm_netns_listen(const char *netns, uint32_t ip, uint16_t port, int backlog)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = ip, .sin_port = htons(port) };
	int self, fd, one = 1, err = enter_netns(netns, &self);

	if (err)
		return err;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Accepted connections inherit it: no setsockopt per connection. */
	setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, backlog)) {
		err = -errno;
		close(fd);
		goto out;
	}
	err = fd;
out:
	leave_netns(self);
	return err;
}

int bm_netns_open(const char *netns)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "/run/netns/%s", netns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* This thread's own netns, opened once per thread: switching back costs no
 * open() on the per-connection path. */
static int self_netns(void)
{
	static __thread int self = -1;

	if (self < 0)
		self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	return self;
}

int bm_netns_connect_fd(int netns_fd, uint32_t src_ip, uint32_t ip, uint16_t port)
{
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr.s_addr = ip, .sin_port = htons(port) };
	struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = src_ip };
	int self = self_netns(), fd, one = 1, err;

	if (self < 0)
		return -errno;
	if (setns(netns_fd, CLONE_NEWNET))
		return -errno;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (setns(self, CLONE_NEWNET))
		bm_log("setns back to meshd's netns: %s", strerror(errno));
	if (fd < 0)
		return -errno;
	/* Only socket() needs the namespace: bind and connect use the socket's. */
	setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
	/* A loopback source (127.0.0.6) binds as is; IP_FREEBIND only when the
	 * address is not there (the pod's lo is down). */
	if (src_ip && bind(fd, (struct sockaddr *)&src, sizeof(src))) {
		err = errno == EADDRNOTAVAIL ? 0 : -errno;
		if (!err && (setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one)) ||
			     bind(fd, (struct sockaddr *)&src, sizeof(src))))
			err = -errno;
		if (err) {
			close(fd);
			return err;
		}
	}
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) && errno != EINPROGRESS) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int bm_netns_connect(const char *netns, uint32_t src_ip, uint32_t ip, uint16_t port)
{
	int nsfd = bm_netns_open(netns), fd;

	if (nsfd < 0)
		return nsfd;
	fd = bm_netns_connect_fd(nsfd, src_ip, ip, port);
	close(nsfd);
	return fd;
}

static void link_path(const struct bm_loader *l, uint32_t slot, char *buf, size_t len)
{
	snprintf(buf, len, "%s/link_inbound_%u", l->pindir, slot);
}

int bm_capture_pod_attach(struct bm_loader *l, const char *netns, uint32_t pod_ip,
			  uint32_t slot, const struct bm_pod_inbound *mode, int listener_fd)
{
	char path[PATH_MAX + 64], nspath[PATH_MAX];
	struct bm_pod_inbound v = *mode;
	struct bpf_link *link;
	int err = 0, nsfd;

	v.slot = slot;
	link_path(l, slot, path, sizeof(path));
	if (access(path, F_OK)) {
		snprintf(nspath, sizeof(nspath), "/run/netns/%s", netns);
		nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
		if (nsfd < 0)
			return -errno;
		link = bpf_program__attach_netns(l->inb->progs.bm_inbound, nsfd);
		close(nsfd);
		if (!link) {
			err = -errno;
			bm_log("attach sk_lookup in netns %s: %s", netns, strerror(-err));
			return err;
		}
		err = bpf_link__pin(link, path);
		bpf_link__disconnect(link);
		bpf_link__destroy(link);
		if (err) {
			bm_log("pin %s: %s", path, strerror(-err));
			return err;
		}
	} else {
		link = bpf_link__open(path);
		if (link) {
			err = bpf_link__update_program(link, l->inb->progs.bm_inbound);
			bpf_link__disconnect(link);
			bpf_link__destroy(link);
		}
	}
	if (bpf_map_update_elem(l->fd.pod_inbound, &pod_ip, &v, BPF_ANY))
		return -errno;
	if (listener_fd >= 0) {
		uint64_t fd64 = (uint64_t)listener_fd;

		if (bpf_map_update_elem(l->fd.inbound_socks, &slot, &fd64, BPF_ANY)) {
			err = -errno;
			bm_log("sockmap slot %u: %s", slot, strerror(-err));
		}
	}
	return err;
}

int bm_capture_pod_mode(struct bm_loader *l, uint32_t pod_ip, const struct bm_pod_inbound *mode)
{
	struct bm_pod_inbound cur;

	if (bpf_map_lookup_elem(l->fd.pod_inbound, &pod_ip, &cur))
		return -ENOENT;
	cur.mode = mode->mode;
	cur.n_ports = mode->n_ports;
	memcpy(cur.port, mode->port, sizeof(cur.port));
	memcpy(cur.port_mode, mode->port_mode, sizeof(cur.port_mode));
	return bpf_map_update_elem(l->fd.pod_inbound, &pod_ip, &cur, BPF_ANY) ? -errno : 0;
}

void bm_capture_pod_detach(struct bm_loader *l, uint32_t pod_ip, uint32_t slot)
{
	char path[PATH_MAX + 64];

	link_path(l, slot, path, sizeof(path));
	unlink(path);
	bpf_map_delete_elem(l->fd.pod_inbound, &pod_ip);
	bpf_map_delete_elem(l->fd.inbound_socks, &slot);
}

int bm_capture_orig_dst(const struct bm_loader *l, uint64_t netns_cookie, uint16_t sport,
			struct bm_orig_dst *out)
{
	struct bm_orig_key k = { .netns_cookie = netns_cookie, .sport = sport };

	/* One system call (LRU hashes have it since 5.14, as SO_NETNS_COOKIE). */
	return bpf_map_lookup_and_delete_elem(l->fd.orig_dst, &k, out) ? -ENOENT : 0;
}
