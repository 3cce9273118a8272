/* Loads bpfmesh's BPF programs for one node, pins maps and links under the
 * node's bpffs directory, and adopts what a previous meshd left pinned. */
#ifndef BM_LOADER_H
#define BM_LOADER_H
#include <limits.h>

struct connect_bpf;
struct sockops_bpf;
struct inbound_bpf;

struct bm_maps {
	int svc, cluster, cluster_state, backend_active, backend_eject, sock, stats,
	    cluster_stats, orig_dst, pod_inbound, inbound_socks, backend_health,
	    stats_keys, stats_keys_lost;
};

struct bm_loader {
	struct connect_bpf *conn;
	struct sockops_bpf *sops;
	struct inbound_bpf *inb;   /* loaded; attached per pod netns by capture.c */
	struct bm_maps fd;
	char pindir[PATH_MAX];
	char cgroup[PATH_MAX];
	int adopted_links;    /* links found pinned and updated in place */
	int created_links;    /* links attached by this process */
	int adopted_maps;     /* the maps existed (a restart) */
};

/* Mount bpffs at /sys/fs/bpf when it is not mounted. */
int bm_bpffs_ensure(void);
int bm_loader_open(struct bm_loader *l, const char *pindir, const char *cgroup);
void bm_loader_close(struct bm_loader *l); /* closes fds; pins stay */
/* Detach (unpin links) and remove every pin under pindir. */
int bm_loader_cleanup(const char *pindir);

#endif
