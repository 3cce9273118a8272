/* File store, writes: bm_store_apply, bm_store_plan and bm_store_delete
 * (etcd stores go to store_etcd_apply.c), and the stamping, comparing and
 * identity checks both backends share (store_etcd.h). store.c has the file
 * primitives they build on. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include "resource.h"
#include "schema.h"
#include "store.h"
#include "store_etcd.h"
#include "store_int.h"

static int write_generation(struct bm_store *s, uint64_t gen)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", gen);

	return store_write_atomic(s->dir, s->genpath, buf, (size_t)n);
}

static int lock_store(struct bm_store *s, int *fd)
{
	*fd = open(s->lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (*fd < 0)
		return store_sys_err("open", s->lockpath);
	while (flock(*fd, LOCK_EX)) {
		if (errno != EINTR) {
			int r = store_sys_err("flock", s->lockpath);

			close(*fd);
			return r;
		}
	}
	return 0;
}

/* Closing the descriptor drops the flock. */
static void unlock_store(int fd)
{
	close(fd);
}

/* Names come from validated resources, but the store is a library: never let
 * a name escape its directory. */
int bm_store_res_identity(const json_t *res, const struct bm_kind **k, const char **ns,
		    const char **name)
{
	const char *kind = bm_res_kind(res);

	*ns = bm_res_namespace(res);
	*name = bm_res_name(res);
	*k = kind ? bm_kind_find(kind) : NULL;
	if (!*k || !(*k)->spec || !*ns || !*name || !bm_is_dns1123_label(*ns) ||
	    !bm_is_dns1123_subdomain(*name))
		return -EINVAL;
	return 0;
}

static char *resource_path(struct bm_store *s, const char *kind, const char *ns,
			   const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s/%s/%s.json", s->resdir, kind, ns, name) < 0)
		return NULL;
	return p;
}

bool bm_store_same_content(const json_t *a, const json_t *b)
{
	const json_t *ma = json_object_get(a, "metadata"), *mb = json_object_get(b, "metadata");
	static const char *const keys[] = { "labels", "annotations" };

	if (!json_equal(json_object_get(a, "spec"), json_object_get(b, "spec")))
		return false;
	for (size_t i = 0; i < 2; i++) {
		json_t *x = json_object_get(ma, keys[i]), *y = json_object_get(mb, keys[i]);

		/* An empty map and no map mean the same thing. */
		if (!json_object_size(x) && !json_object_size(y))
			continue;
		if (!x || !y || !json_equal(x, y))
			return false;
	}
	return true;
}

static void now_rfc3339(char *buf, size_t size)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *bm_store_stamp(const json_t *res, const json_t *old, uint64_t gen)
{
	json_t *obj = json_deep_copy(res), *meta;
	const char *created = json_string_value(
		json_object_get(json_object_get(old, "metadata"), "creationTimestamp"));
	char ts[32];

	if (!obj)
		return NULL;
	meta = json_object_get(obj, "metadata");
	if (!created) {
		now_rfc3339(ts, sizeof(ts));
		created = ts;
	}
	if (json_object_set_new(meta, "generation", json_integer((json_int_t)gen)) ||
	    json_object_set_new(meta, "creationTimestamp", json_string(created))) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

static int write_resource(struct bm_store *s, const json_t *res, const json_t *old,
			  uint64_t gen, const char *path)
{
	json_t *obj = bm_store_stamp(res, old, gen);
	char *dir = NULL, *text = NULL;
	int r = -ENOMEM;

	if (!obj)
		return -ENOMEM;
	text = json_dumps(obj, JSON_INDENT(2));
	dir = strdup(path);
	if (!text || !dir)
		goto out;
	*strrchr(dir, '/') = '\0';
	r = store_mkdir_p(dir);
	if (!r) {
		size_t len = strlen(text);

		/* json_dumps gives no trailing newline; files read nicer with one. */
		char *nl = realloc(text, len + 2);

		if (!nl) {
			r = -ENOMEM;
			goto out;
		}
		text = nl;
		memcpy(text + len, "\n", 2);
		r = store_write_atomic(dir, path, text, len + 1);
	}
out:
	free(dir);
	free(text);
	json_decref(obj);
	return r;
}

static int store_apply(struct bm_store *s, json_t *resources, json_t **results, bool dry)
{
	json_t *out = json_array();
	bool changed = false;
	uint64_t gen = 0;
	int lockfd = -1, r;
	size_t i;
	json_t *res;

	if (results)
		*results = NULL;
	if (!out)
		return -ENOMEM;
	if (!json_is_array(resources)) {
		r = -EINVAL;
		goto out;
	}
	if (s->etcd) {
		r = bm_etcd_apply(s->etcd, resources, results, dry);
		goto out;
	}
	if (!dry) {
		r = lock_store(s, &lockfd);
		if (r)
			goto out;
	}
	r = bm_store_generation(s, &gen);
	if (r)
		goto out_unlock;
	json_array_foreach(resources, i, res) {
		const struct bm_kind *k;
		const char *ns, *name, *action;
		char *path;
		json_t *old;

		r = bm_store_res_identity(res, &k, &ns, &name);
		if (r)
			goto out_unlock;
		path = resource_path(s, k->kind, ns, name);
		if (!path) {
			r = -ENOMEM;
			goto out_unlock;
		}
		/* A stored file that no longer reads is replaced, not trusted. */
		old = json_load_file(path, 0, NULL);
		action = !old ? "created" : bm_store_same_content(old, res) ? "unchanged" : "configured";
		if (!dry && strcmp(action, "unchanged")) {
			r = write_resource(s, res, old, gen + 1, path);
			changed = true;
		}
		json_decref(old);
		free(path);
		if (r)
			goto out_unlock;
		if (json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "kind", k->kind,
							 "namespace", ns, "name", name,
							 "action", action))) {
			r = -ENOMEM;
			goto out_unlock;
		}
	}
	/* Last, and once: this rename is what tells watchers to reload. */
	if (changed)
		r = write_generation(s, gen + 1);
out_unlock:
	if (lockfd >= 0)
		unlock_store(lockfd);
out:
	if (!r && results && !*results)
		*results = json_incref(out);
	json_decref(out);
	return r;
}

int bm_store_apply(struct bm_store *s, json_t *resources, json_t **results)
{
	return store_apply(s, resources, results, false);
}

int bm_store_plan(struct bm_store *s, json_t *resources, json_t **results)
{
	return store_apply(s, resources, results, true);
}

int bm_store_delete(struct bm_store *s, const char *kind, const char *ns, const char *name)
{
	const struct bm_kind *k = kind ? bm_kind_lookup(kind) : NULL;
	char *path = NULL, *dir;
	uint64_t gen;
	int lockfd, r;

	if (!k || !ns || !name || !bm_is_dns1123_label(ns) || !bm_is_dns1123_subdomain(name))
		return -EINVAL;
	if (s->etcd)
		return bm_etcd_delete(s->etcd, k, ns, name);
	path = resource_path(s, k->kind, ns, name);
	if (!path)
		return -ENOMEM;
	r = lock_store(s, &lockfd);
	if (r)
		goto out;
	r = bm_store_generation(s, &gen);
	if (r)
		goto out_unlock;
	if (unlink(path)) {
		r = errno == ENOENT ? -ENOENT : store_sys_err("unlink", path);
		goto out_unlock;
	}
	dir = path;
	*strrchr(dir, '/') = '\0';
	r = store_fsync_dir(dir);
	if (!r)
		r = write_generation(s, gen + 1);
	/* Tidy an emptied namespace directory; failure (not empty) is fine. */
	rmdir(dir);
out_unlock:
	unlock_store(lockfd);
out:
	free(path);
	return r;
}
