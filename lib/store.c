/* File store: see store.h for the layout and the consistency protocol.
 * Also the front of every store: etcd:// URLs go to store_etcd.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include "resource.h"
#include "schema.h"
#include "store.h"
#include "store_cache.h"
#include "store_etcd.h"

/* Reader retries: 1 ms doubling to 100 ms, about 5 s in all, which covers an
 * apply of many resources each paying two fsyncs. */
#define LIST_ATTEMPTS 56
#define MAX_RESOURCE_FILE (4 << 20)

struct bm_store {
	struct bm_etcd *etcd; /* set: an etcd store, nothing below is used */
	char *dir;
	char *resdir;
	char *genpath;
	char *lockpath;
	int watch_fd;         /* inotify on dir, -1 until bm_store_watch_fd() */
	struct bm_fcache *cache; /* full listings: parse only changed files */
};

static int sys_err(const char *what, const char *path)
{
	int err = errno;

	fprintf(stderr, "bpfmesh store: %s %s: %s\n", what, path, strerror(err));
	return -err;
}

static int url_to_dir(const char *url, char **dir)
{
	const char *p = url;
	const char *scheme_end = strstr(url, "://");

	if (!url || !*url) {
		fprintf(stderr, "bpfmesh store: empty store URL\n");
		return -EINVAL;
	}
	if (scheme_end) {
		if (!strncmp(url, "file://", 7)) {
			p = url + 7;
			if (*p != '/') {
				fprintf(stderr, "bpfmesh store: %s: want file:///absolute/path\n",
					url);
				return -EINVAL;
			}
		} else if (!strncmp(url, "etcds://", 8)) {
			fprintf(stderr, "bpfmesh store: %s: etcd over TLS is not supported yet "
				"(use etcd://HOST:PORT)\n", url);
			return -EPROTONOSUPPORT;
		} else {
			fprintf(stderr, "bpfmesh store: %s: unknown store URL scheme "
				"(want file:///path or etcd://HOST:PORT[,HOST:PORT...])\n", url);
			return -EPROTONOSUPPORT;
		}
	}
	*dir = strdup(p);
	return *dir ? 0 : -ENOMEM;
}

static int mkdir_p(const char *path)
{
	char *tmp = strdup(path);
	int r = 0;

	if (!tmp)
		return -ENOMEM;
	for (char *p = tmp + 1;; p++) {
		if (*p && *p != '/')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(tmp, 0755) && errno != EEXIST) {
			r = sys_err("mkdir", tmp);
			break;
		}
		*p = c;
		if (!c)
			break;
	}
	free(tmp);
	return r;
}

static int store_new(const char *url, bool create, struct bm_store **out)
{
	struct bm_store *s = calloc(1, sizeof(*s));
	int r;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->watch_fd = -1;
	if (url && !strncmp(url, "etcd://", 7)) {
		/* Nothing to create in etcd: open and open_ro are the same. */
		r = bm_etcd_open(url, &s->etcd);
		if (r)
			goto err_free;
		*out = s;
		return 0;
	}
	r = url_to_dir(url, &s->dir);
	if (r)
		goto err_free;
	r = -ENOMEM;
	if (asprintf(&s->resdir, "%s/resources", s->dir) < 0) {
		s->resdir = NULL;
		goto err_free;
	}
	if (asprintf(&s->genpath, "%s/generation", s->dir) < 0) {
		s->genpath = NULL;
		goto err_free;
	}
	if (asprintf(&s->lockpath, "%s/.lock", s->dir) < 0) {
		s->lockpath = NULL;
		goto err_free;
	}
	if (create) {
		r = mkdir_p(s->resdir);
		if (r)
			goto err_free;
	}
	*out = s;
	return 0;

err_free:
	bm_store_close(s);
	return r;
}

int bm_store_open(const char *url, struct bm_store **out)
{
	return store_new(url, true, out);
}

int bm_store_open_ro(const char *url, struct bm_store **out)
{
	return store_new(url, false, out);
}

void bm_store_close(struct bm_store *s)
{
	if (!s)
		return;
	bm_etcd_close(s->etcd);
	bm_fcache_free(s->cache);
	if (s->watch_fd >= 0)
		close(s->watch_fd);
	free(s->dir);
	free(s->resdir);
	free(s->genpath);
	free(s->lockpath);
	free(s);
}

const char *bm_store_watch_path(const struct bm_store *s)
{
	return s->genpath; /* NULL for etcd */
}

int bm_store_watch_fd(struct bm_store *s)
{
	char *dir;

	if (s->etcd)
		return bm_etcd_watch_fd(s->etcd);
	if (s->watch_fd >= 0)
		return s->watch_fd;
	dir = strdup(s->genpath);
	if (!dir)
		return -ENOMEM;
	*strrchr(dir, '/') = '\0';
	s->watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (s->watch_fd < 0) {
		int r = sys_err("inotify_init1 for", dir);

		free(dir);
		return r;
	}
	/* The generation file is replaced by rename: watch its directory. */
	if (inotify_add_watch(s->watch_fd, dir, IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE) < 0) {
		int r = sys_err("inotify_add_watch", dir);

		close(s->watch_fd);
		s->watch_fd = -1;
		free(dir);
		return r;
	}
	free(dir);
	return s->watch_fd;
}

int bm_store_watch_ack(struct bm_store *s)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int changed = 0;
	ssize_t len;

	if (s->etcd)
		return bm_etcd_watch_ack(s->etcd);
	if (s->watch_fd < 0)
		return -EBADF;
	while ((len = read(s->watch_fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + len;) {
			struct inotify_event *ie = (struct inotify_event *)p;

			if (ie->len && !strcmp(ie->name, "generation"))
				changed = 1;
			/* The directory itself went away: the reader must look. */
			if (ie->mask & (IN_IGNORED | IN_Q_OVERFLOW))
				changed = 1;
			p += sizeof(*ie) + ie->len;
		}
	}
	if (len < 0 && errno != EAGAIN && errno != EINTR)
		return sys_err("read inotify for", s->dir);
	return changed;
}

int bm_store_health(struct bm_store *s, int *connected, time_t *last_ok)
{
	if (!s) {
		*connected = 0;
		*last_ok = 0;
		return -EINVAL;
	}
	if (s->etcd)
		return bm_etcd_health(s->etcd, connected, last_ok);
	/* A local directory is never out of reach. */
	*connected = 1;
	*last_ok = time(NULL);
	return 0;
}

/* Reads a whole file; -ENOENT passes through silently (absence is normal). */
static int read_all(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t n;
	int r = 0;

	if (fd < 0)
		return errno == ENOENT ? -ENOENT : sys_err("open", path);
	if (fstat(fd, &st)) {
		r = sys_err("stat", path);
		goto out;
	}
	if (st.st_size > MAX_RESOURCE_FILE) {
		fprintf(stderr, "bpfmesh store: %s: larger than %d bytes\n", path,
			MAX_RESOURCE_FILE);
		r = -EFBIG;
		goto out;
	}
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf) {
		r = -ENOMEM;
		goto out;
	}
	n = read(fd, *buf, (size_t)st.st_size);
	if (n < 0) {
		r = sys_err("read", path);
		free(*buf);
		*buf = NULL;
		goto out;
	}
	(*buf)[n] = '\0';
	*len = (size_t)n;
out:
	close(fd);
	return r;
}

int bm_store_generation(struct bm_store *s, uint64_t *gen)
{
	char *buf = NULL, *end;
	size_t len;
	int r;

	if (s->etcd)
		return bm_etcd_generation(s->etcd, gen);
	r = read_all(s->genpath, &buf, &len);

	if (r == -ENOENT) {
		*gen = 0;
		return 0;
	}
	if (r)
		return r;
	errno = 0;
	*gen = strtoull(buf, &end, 10);
	if (errno || end == buf || (*end && strcmp(end, "\n"))) {
		fprintf(stderr, "bpfmesh store: %s: not a decimal generation\n", s->genpath);
		r = -EBADMSG;
	}
	free(buf);
	return r;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return sys_err("open", dir);
	if (fsync(fd))
		r = sys_err("fsync", dir);
	close(fd);
	return r;
}

/* Temp file in the same directory, fsync, rename over the target, fsync the
 * directory: after a crash the file is either old or new, never torn. */
static int write_atomic(const char *dir, const char *path, const char *data, size_t len)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	char *tmp = NULL;
	int fd, r = 0;

	if (asprintf(&tmp, "%s/.%s.tmp.%d", dir, base, (int)getpid()) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = sys_err("create", tmp);
		goto out;
	}
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = sys_err("write", tmp);
			goto err_close;
		}
		off += (size_t)n;
	}
	if (fsync(fd)) {
		r = sys_err("fsync", tmp);
		goto err_close;
	}
	if (close(fd)) {
		r = sys_err("close", tmp);
		goto err_unlink;
	}
	if (rename(tmp, path)) {
		r = sys_err("rename to", path);
		goto err_unlink;
	}
	r = fsync_dir(dir);
	goto out;

err_close:
	close(fd);
err_unlink:
	unlink(tmp);
out:
	free(tmp);
	return r;
}

static int write_generation(struct bm_store *s, uint64_t gen)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", gen);

	return write_atomic(s->dir, s->genpath, buf, (size_t)n);
}

static int lock_store(struct bm_store *s, int *fd)
{
	*fd = open(s->lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (*fd < 0)
		return sys_err("open", s->lockpath);
	while (flock(*fd, LOCK_EX)) {
		if (errno != EINTR) {
			int r = sys_err("flock", s->lockpath);

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

static bool writer_active(struct bm_store *s)
{
	int fd = open(s->lockpath, O_RDONLY | O_CLOEXEC);
	bool busy;

	if (fd < 0)
		return false;
	busy = flock(fd, LOCK_SH | LOCK_NB) && errno == EWOULDBLOCK;
	close(fd);
	return busy;
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
	r = mkdir_p(dir);
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
		r = write_atomic(dir, path, text, len + 1);
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
		r = errno == ENOENT ? -ENOENT : sys_err("unlink", path);
		goto out_unlock;
	}
	dir = path;
	*strrchr(dir, '/') = '\0';
	r = fsync_dir(dir);
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

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entry names of dir (skipping dot files: temp files start with '.').
 * A missing directory is an empty list. */
static int list_dir(const char *dir, bool want_dirs, char ***names, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 0;
	int r = 0;

	*names = NULL;
	*n = 0;
	if (!d)
		return errno == ENOENT || errno == ENOTDIR ? 0 : sys_err("opendir", dir);
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (e->d_name[0] == '.')
			continue;
		if (!want_dirs && (len < 6 || strcmp(e->d_name + len - 5, ".json")))
			continue;
		if (*n == cap) {
			char **v = realloc(*names, (cap = cap ? cap * 2 : 16) * sizeof(*v));

			if (!v) {
				r = -ENOMEM;
				break;
			}
			*names = v;
		}
		(*names)[*n] = strdup(e->d_name);
		if (!(*names)[*n]) {
			r = -ENOMEM;
			break;
		}
		(*n)++;
	}
	closedir(d);
	if (*n)
		qsort(*names, *n, sizeof(**names), cmp_str);
	return r;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Hand edits must not reach meshd unchecked: every stored value is parsed
 * and validated again on read, and must name what its path (or key) says. */
json_t *bm_store_load_text(const char *buf, size_t len, const char *path, const char *kind,
			   const char *ns, const char *name, struct bm_errlist *skipped)
{
	struct bm_errlist errs = { 0 };
	json_t *arr = NULL, *res = NULL;
	int r = bm_resources_parse(buf, len, path, BM_PARSE_STORED, &arr, &errs);

	if (r) {
		bm_errlist_add(skipped, path, 0, NULL, "invalid stored resource, skipped:");
		bm_errlist_splice(skipped, &errs);
		bm_errlist_free(&errs);
		return NULL;
	}
	bm_errlist_free(&errs);
	res = json_array_get(arr, 0);
	if (json_array_size(arr) != 1 || strcmp(bm_res_kind(res), kind) ||
	    strcmp(bm_res_namespace(res), ns) || strcmp(bm_res_name(res), name)) {
		bm_errlist_add(skipped, path, 0, NULL, "does not hold exactly the %s %s/%s its "
			       "path names, skipped", kind, ns, name);
		res = NULL;
	}
	json_incref(res);
	json_decref(arr);
	return res;
}

/* Reads and re-validates one stored file. Problems go to skipped; the
 * resource is then left out. */
static json_t *load_resource(const char *path, const char *kind, const char *ns,
			     const char *name, struct bm_errlist *skipped)
{
	char *buf = NULL;
	size_t len = 0;
	int r = read_all(path, &buf, &len);
	json_t *res;

	if (r == -ENOENT) /* deleted while we listed: the retry sorts it out */
		return NULL;
	if (r) {
		bm_errlist_add(skipped, path, 0, NULL, "unreadable (%s), skipped", strerror(-r));
		return NULL;
	}
	res = bm_store_load_text(buf, len, path, kind, ns, name, skipped);
	free(buf);
	return res;
}

/* load_resource() through the parse cache: a file whose identity (inode,
 * size, times) is unchanged since the last listing is not read again. The
 * stat goes through the namespace directory's descriptor (dfd): no path
 * walk per file. *res NULL: left out (reported, or gone meanwhile). */
static int load_cached(struct bm_fcache *fc, int dfd, const char *nsdir, int kidx,
		       const char *kind, const char *ns, const char *fname,
		       struct bm_errlist *skipped, json_t **res)
{
	struct bm_errlist mine = { 0 };
	char *buf = NULL, *path = NULL, *name = NULL;
	struct stat st;
	size_t len = 0;
	int r, have_st;

	*res = NULL;
	have_st = dfd >= 0 && !fstatat(dfd, fname, &st, 0);
	if (have_st && bm_fcache_lookup(fc, kidx, ns, fname, &st, res, skipped)) {
		json_incref(*res);
		return 0;
	}
	if (asprintf(&path, "%s/%s", nsdir, fname) < 0)
		return -ENOMEM;
	name = strndup(fname, strlen(fname) - 5); /* without ".json" */
	r = name ? 0 : -ENOMEM;
	if (name && (!have_st || read_all(path, &buf, &len))) {
		/* gone meanwhile (the retry sorts it out), or load_resource reports */
		*res = load_resource(path, kind, ns, name, skipped);
	} else if (name) {
		*res = bm_store_load_text(buf, len, path, kind, ns, name, &mine);
		bm_fcache_add(fc, kidx, ns, fname, &st, *res, &mine);
		bm_errlist_splice(skipped, &mine);
		bm_errlist_free(&mine);
	}
	free(buf);
	free(path);
	free(name);
	return r;
}

static int list_kind(struct bm_store *s, const struct bm_kind *k, const char *ns,
		     const char *name, json_t *out, uint64_t *maxgen,
		     struct bm_errlist *skipped, struct bm_fcache *fc)
{
	char *kdir = NULL, **nss = NULL;
	size_t nns = 0;
	int r;

	if (asprintf(&kdir, "%s/%s", s->resdir, k->kind) < 0)
		return -ENOMEM;
	if (ns) {
		nss = malloc(sizeof(*nss));
		r = nss ? 0 : -ENOMEM;
		if (nss) {
			nss[0] = strdup(ns);
			nns = 1;
			if (!nss[0])
				r = -ENOMEM;
		}
	} else {
		r = list_dir(kdir, true, &nss, &nns);
	}
	for (size_t i = 0; !r && i < nns; i++) {
		char *nsdir = NULL, **files = NULL;
		size_t nfiles = 0;
		int dfd;

		if (!bm_is_dns1123_label(nss[i]))
			continue;
		if (asprintf(&nsdir, "%s/%s", kdir, nss[i]) < 0) {
			r = -ENOMEM;
			break;
		}
		r = list_dir(nsdir, false, &files, &nfiles);
		dfd = fc ? open(nsdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
		for (size_t j = 0; !r && j < nfiles; j++) {
			char *path = NULL;
			json_t *res;

			if (fc) {
				/* The cache keys on the whole file name: the listing's order. */
				r = load_cached(fc, dfd, nsdir, (int)(k - bm_kinds), k->kind, nss[i],
						files[j], skipped, &res);
				if (r)
					break;
			} else {
				files[j][strlen(files[j]) - 5] = '\0'; /* drop ".json" */
				if (name && strcmp(files[j], name))
					continue;
				if (asprintf(&path, "%s/%s.json", nsdir, files[j]) < 0) {
					r = -ENOMEM;
					break;
				}
				res = load_resource(path, k->kind, nss[i], files[j], skipped);
				free(path);
			}
			if (!res)
				continue;
			{
				json_int_t g = json_integer_value(json_object_get(
					json_object_get(res, "metadata"), "generation"));

				if (g > 0 && (uint64_t)g > *maxgen)
					*maxgen = (uint64_t)g;
			}
			if (json_array_append_new(out, res))
				r = -ENOMEM;
		}
		if (dfd >= 0)
			close(dfd);
		free_names(files, nfiles);
		free(nsdir);
	}
	free_names(nss, nns);
	free(kdir);
	return r;
}

static int store_list(struct bm_store *s, const char *kind, const char *ns, const char *name,
		      json_t **out_array, uint64_t *generation)
{
	const struct bm_kind *only = NULL;
	struct bm_fcache *fc;
	unsigned delay_ms = 1;
	int r = -EAGAIN;

	*out_array = NULL;
	if (kind) {
		only = bm_kind_lookup(kind);
		if (!only)
			return -EINVAL;
	}
	if (ns && !bm_is_dns1123_label(ns))
		return -EINVAL;
	if (s->etcd)
		return bm_etcd_list(s->etcd, only, ns, name, out_array, generation);
	/* Only whole-store listings (meshd's) use the parse cache. */
	if (!only && !ns && !name && !s->cache)
		s->cache = bm_fcache_new();
	fc = !only && !ns && !name ? s->cache : NULL;
	for (int attempt = 0; attempt < LIST_ATTEMPTS; attempt++) {
		struct bm_errlist skipped = { 0 };
		uint64_t g1, g2, maxgen = 0;
		json_t *arr = json_array();

		if (!arr)
			return -ENOMEM;
		r = bm_store_generation(s, &g1);
		/* A store reset (restored, recreated): trust nothing from before. */
		if (!r && fc && g1 < bm_fcache_generation(fc))
			bm_fcache_clear(fc);
		if (fc)
			bm_fcache_begin(fc);
		for (const struct bm_kind *k = bm_kinds; !r && k->kind; k++) {
			if ((only && k != only) || !k->spec)
				continue;
			r = list_kind(s, k, ns, name, arr, &maxgen, &skipped, fc);
		}
		if (!r)
			r = bm_store_generation(s, &g2);
		if (!r && g1 == g2 && (maxgen <= g1 || !writer_active(s))) {
			bm_errlist_print(&skipped, stderr);
			bm_errlist_free(&skipped);
			if (fc)
				bm_fcache_commit(fc, g1);
			*out_array = arr;
			if (generation)
				*generation = g1;
			return 0;
		}
		if (fc)
			bm_fcache_abort(fc);
		bm_errlist_free(&skipped);
		json_decref(arr);
		if (r)
			return r;
		r = -EAGAIN;
		usleep(delay_ms * 1000);
		delay_ms = delay_ms * 2 > 100 ? 100 : delay_ms * 2;
	}
	fprintf(stderr, "bpfmesh store: %s: kept changing while being read\n", s->dir);
	return r;
}

int bm_store_list(struct bm_store *s, const char *kind, const char *ns, json_t **out_array,
		  uint64_t *generation)
{
	return store_list(s, kind, ns, NULL, out_array, generation);
}

size_t bm_store_list_parsed(const struct bm_store *s)
{
	return s->cache ? bm_fcache_parsed(s->cache) : 0;
}

int bm_store_get(struct bm_store *s, const char *kind, const char *ns, const char *name,
		 json_t **out)
{
	json_t *arr;
	int r;

	*out = NULL;
	if (!kind || !ns || !name)
		return -EINVAL;
	if (!bm_is_dns1123_subdomain(name))
		return -ENOENT;
	r = store_list(s, kind, ns, name, &arr, NULL);
	if (r)
		return r;
	if (json_array_size(arr))
		*out = json_incref(json_array_get(arr, 0));
	json_decref(arr);
	return *out ? 0 : -ENOENT;
}

/* ---------------------------------------------------------------- key/value */

/* The etcd half lives in store_etcd.c (keys <prefix>/kv/<key>). */
int bm_etcd_kv_put(struct bm_etcd *e, const char *key, const char *value);
int bm_etcd_kv_get(struct bm_etcd *e, const char *key, char **value);
int bm_etcd_kv_del(struct bm_etcd *e, const char *key);

/* Keys become paths under <dir>/kv: never let one escape it. */
static bool kv_key_valid(const char *key)
{
	size_t n = key ? strnlen(key, 256) : 0, seg = 0;

	if (!n || n > 255)
		return false;
	for (size_t i = 0; i <= n; i++) {
		char c = key[i];

		if (c == '/' || c == '\0') {
			if (!seg || (seg == 1 && key[i - 1] == '.') ||
			    (seg == 2 && key[i - 1] == '.' && key[i - 2] == '.'))
				return false;
			seg = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
		seg++;
	}
	return true;
}

static char *kv_path(struct bm_store *s, const char *key)
{
	char *p;

	return asprintf(&p, "%s/kv/%s", s->dir, key) < 0 ? NULL : p;
}

int bm_store_kv_put(struct bm_store *s, const char *key, const char *value)
{
	char *path, *dir;
	size_t len = value ? strnlen(value, BM_STORE_KV_MAX + 1) : 0;
	int r;

	if (!kv_key_valid(key) || !value)
		return -EINVAL;
	if (len > BM_STORE_KV_MAX)
		return -E2BIG;
	if (s->etcd)
		return bm_etcd_kv_put(s->etcd, key, value);
	path = kv_path(s, key);
	if (!path)
		return -ENOMEM;
	dir = strdup(path);
	if (!dir) {
		free(path);
		return -ENOMEM;
	}
	*strrchr(dir, '/') = '\0';
	r = mkdir_p(dir);
	if (!r)
		r = write_atomic(dir, path, value, len);
	free(dir);
	free(path);
	return r;
}

int bm_store_kv_get(struct bm_store *s, const char *key, char **value)
{
	size_t len;
	char *path;
	int r;

	*value = NULL;
	if (!kv_key_valid(key))
		return -EINVAL;
	if (s->etcd)
		return bm_etcd_kv_get(s->etcd, key, value);
	path = kv_path(s, key);
	if (!path)
		return -ENOMEM;
	r = read_all(path, value, &len);
	if (!r && len > BM_STORE_KV_MAX) {
		free(*value);
		*value = NULL;
		r = -EFBIG;
	}
	free(path);
	return r;
}

int bm_store_kv_del(struct bm_store *s, const char *key)
{
	char *path;
	int r = 0;

	if (!kv_key_valid(key))
		return -EINVAL;
	if (s->etcd)
		return bm_etcd_kv_del(s->etcd, key);
	path = kv_path(s, key);
	if (!path)
		return -ENOMEM;
	/* unlink succeeds for exactly one caller: the one-use guarantee. */
	if (unlink(path))
		r = errno == ENOENT ? -ENOENT : sys_err("unlink", path);
	else {
		*strrchr(path, '/') = '\0';
		fsync_dir(path);
	}
	free(path);
	return r;
}

/* ---------------------------------------------------------------- tokens */

static void sha256_hex(const char *text, char hex[BM_STORE_TOKEN_HEX + 1])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)text, strlen(text), md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

int bm_store_token_create(struct bm_store *s, const char *key, long ttl, time_t now,
			  char token[BM_STORE_TOKEN_HEX + 1])
{
	unsigned char rnd[BM_STORE_TOKEN_HEX / 2];
	char hash[BM_STORE_TOKEN_HEX + 1];
	json_t *rec;
	char *text;
	int r;

	if (ttl <= 0)
		return -EINVAL;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -EIO;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(token + 2 * i, 3, "%02x", rnd[i]);
	OPENSSL_cleanse(rnd, sizeof(rnd));
	sha256_hex(token, hash);
	rec = json_pack("{s:s,s:I,s:I}", "sha256", hash, "expires", (json_int_t)(now + ttl),
			"created", (json_int_t)now);
	text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	json_decref(rec);
	if (!text)
		return -ENOMEM;
	r = bm_store_kv_put(s, key, text);
	free(text);
	if (r)
		OPENSSL_cleanse(token, BM_STORE_TOKEN_HEX + 1);
	return r;
}

int bm_store_token_redeem(struct bm_store *s, const char *key, const char *token, time_t now)
{
	char hash[BM_STORE_TOKEN_HEX + 1], *text = NULL;
	const char *want;
	json_t *rec;
	int r;

	if (!token || strlen(token) != BM_STORE_TOKEN_HEX)
		return -EPERM;
	r = bm_store_kv_get(s, key, &text);
	if (r)
		return r;
	rec = json_loads(text, 0, NULL);
	free(text);
	want = json_string_value(json_object_get(rec, "sha256"));
	sha256_hex(token, hash);
	if (!want || strlen(want) != BM_STORE_TOKEN_HEX) {
		r = -EBADMSG;
	} else if (CRYPTO_memcmp(want, hash, BM_STORE_TOKEN_HEX)) {
		r = -EPERM;
	} else if (json_integer_value(json_object_get(rec, "expires")) <= (json_int_t)now) {
		bm_store_kv_del(s, key);
		r = -EKEYEXPIRED;
	} else {
		/* Used now: whoever deletes it first is the one user. */
		r = bm_store_kv_del(s, key);
	}
	json_decref(rec);
	return r;
}
