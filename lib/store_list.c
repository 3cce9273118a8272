/* File store, reads: bm_store_list, bm_store_get and the re-validation of
 * every stored value both backends share (store_etcd.h). Whole-store listings
 * go through the parse cache (store_cache.c); etcd stores to store_etcd.c.
 * store.c has the file primitives they build on. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include "resource.h"
#include "schema.h"
#include "store.h"
#include "store_cache.h"
#include "store_etcd.h"
#include "store_int.h"

/* Reader retries: 1 ms doubling to 100 ms, about 5 s in all, which covers an
 * apply of many resources each paying two fsyncs. */
#define LIST_ATTEMPTS 56

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
		return errno == ENOENT || errno == ENOTDIR ? 0 : store_sys_err("opendir", dir);
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
	int r = store_read_all(path, &buf, &len);
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
	if (name && (!have_st || store_read_all(path, &buf, &len))) {
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
