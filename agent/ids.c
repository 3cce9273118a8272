#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include "bpfmesh/abi.h"
#include "ids.h"

static const char *const kind_names[BM_ID_KINDS] = { "services", "clusters", "backends", "pods" };
static const uint32_t kind_limits[BM_ID_KINDS] = { BM_MAX_SERVICES, BM_MAX_CLUSTER_IDS,
						   BM_MAX_BACKEND_IDS, BM_MAX_PODS };

static void mark(struct bm_ids *ids, enum bm_id_kind k, uint32_t id, int on)
{
	if (on)
		ids->used[k][id / 8] |= 1u << (id % 8);
	else
		ids->used[k][id / 8] &= ~(1u << (id % 8));
}

static int is_used(const struct bm_ids *ids, enum bm_id_kind k, uint32_t id)
{
	return ids->used[k][id / 8] & (1u << (id % 8));
}

int bm_ids_init(struct bm_ids *ids, const char *path)
{
	json_t *root;

	memset(ids, 0, sizeof(*ids));
	snprintf(ids->path, sizeof(ids->path), "%s", path ? path : "");
	for (int k = 0; k < BM_ID_KINDS; k++) {
		ids->limit[k] = kind_limits[k];
		ids->used[k] = calloc(ids->limit[k] / 8 + 1, 1);
		if (!ids->used[k]) {
			bm_ids_free(ids);
			return -ENOMEM;
		}
		mark(ids, k, 0, 1);
		ids->cursor[k] = 1;
	}
	if (!path || access(path, F_OK))
		return 0;
	root = json_load_file(path, 0, NULL);
	if (!root) /* unreadable state: start afresh rather than refuse to run */
		return 0;
	for (int k = 0; k < BM_ID_KINDS; k++) {
		const char *key;
		json_t *v;

		json_object_foreach(json_object_get(root, kind_names[k]), key, v) {
			json_int_t id = json_integer_value(v);

			if (id <= 0 || id >= ids->limit[k] || is_used(ids, k, (uint32_t)id))
				continue;
			if (bm_strmap_set(&ids->map[k], key, (uint64_t)id)) {
				json_decref(root);
				bm_ids_free(ids);
				return -ENOMEM;
			}
			mark(ids, k, (uint32_t)id, 1);
		}
	}
	json_decref(root);
	return 0;
}

void bm_ids_free(struct bm_ids *ids)
{
	for (int k = 0; k < BM_ID_KINDS; k++) {
		bm_strmap_free(&ids->map[k]);
		free(ids->used[k]);
		ids->used[k] = NULL;
	}
}

int bm_ids_lookup(const struct bm_ids *ids, enum bm_id_kind k, const char *key, uint32_t *id)
{
	uint64_t v;
	int err = bm_strmap_get(&ids->map[k], key, &v);

	if (!err)
		*id = (uint32_t)v;
	return err;
}

int bm_ids_get(struct bm_ids *ids, enum bm_id_kind k, const char *key, uint32_t *id)
{
	uint32_t n = ids->limit[k];

	if (!bm_ids_lookup(ids, k, key, id))
		return 0;
	for (uint32_t tries = 0; tries < n; tries++) {
		uint32_t c = ids->cursor[k];

		ids->cursor[k] = c + 1 < n ? c + 1 : 1;
		if (is_used(ids, k, c))
			continue;
		if (bm_strmap_set(&ids->map[k], key, c))
			return -ENOMEM;
		mark(ids, k, c, 1);
		ids->dirty = 1;
		*id = c;
		return 0;
	}
	return -ENOSPC;
}

int bm_ids_release(struct bm_ids *ids, enum bm_id_kind k, const char *key)
{
	uint32_t id;

	if (bm_ids_lookup(ids, k, key, &id))
		return -ENOENT;
	bm_strmap_del(&ids->map[k], key);
	mark(ids, k, id, 0);
	ids->dirty = 1;
	return 0;
}

int bm_ids_save(struct bm_ids *ids)
{
	char tmp[PATH_MAX + 8];
	json_t *root = json_object();
	int err = 0, fd;

	if (!ids->dirty || !ids->path[0]) {
		json_decref(root);
		return 0;
	}
	if (!root)
		return -ENOMEM;
	for (int k = 0; k < BM_ID_KINDS; k++) {
		json_t *o = json_object();
		const char *key;
		uint64_t v;

		for (size_t it = 0; bm_strmap_next(&ids->map[k], &it, &key, &v);)
			json_object_set_new(o, key, json_integer((json_int_t)v));
		json_object_set_new(root, kind_names[k], o);
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", ids->path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	if (json_dumpfd(root, fd, JSON_COMPACT) || fsync(fd)) {
		err = -EIO;
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	if (rename(tmp, ids->path)) {
		err = -errno;
		unlink(tmp);
		goto out;
	}
	ids->dirty = 0;
out:
	json_decref(root);
	return err;
}
