/* Pods enrolled with this node's meshd by the runtime (the sandbox here, a
 * CNI plugin in Kubernetes). Persisted in the run directory, so a restarted
 * meshd knows the pods that existed before it. */
#ifndef BM_PODS_H
#define BM_PODS_H
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "model.h"

struct bm_pod {
	char name[128], ns[64], ip[16], netns[128], cgroup[PATH_MAX];
	uint64_t cgroup_id;   /* inode of the pod's cgroup dir = bpf_get_current_cgroup_id() */
};

struct bm_pods {
	struct bm_pod *p;
	size_t n;
	char path[PATH_MAX];
};

int bm_pods_load(struct bm_pods *pods, const char *path);
void bm_pods_free(struct bm_pods *pods);
/* Enrol (or update) a pod from a JSON request; err gets a message on -EINVAL. */
int bm_pods_enroll(struct bm_pods *pods, const json_t *req, char *err, size_t errlen);
int bm_pods_remove(struct bm_pods *pods, const char *name, const char *ns);
json_t *bm_pods_json(const struct bm_pods *pods);
/* The enrolled pod whose cgroup has this id, or NULL. */
const struct bm_pod *bm_pods_by_cgroup(const struct bm_pods *pods, uint64_t cgroup_id);
const struct bm_pod *bm_pods_by_ip(const struct bm_pods *pods, const char *ip);
/* Service names inside each pod: /etc/netns/<netns>/hosts (what `ip netns
 * exec` bind-mounts over /etc/hosts), names of the pod's own namespace
 * first, plus short forms. Until the agent serves DNS. */
void bm_pods_write_hosts(const struct bm_pods *pods, const struct bm_model *m);

#endif
