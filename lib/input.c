/* Files, directories and stdin -> canonical resources. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "input.h"
#include "resource.h"

/* Policy files are small; this bounds memory for a mistaken -f /dev/zero. */
#define BM_MAX_INPUT_BYTES (64u << 20)

int bm_read_fd(int fd, char **buf, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *b = malloc(cap + 1);

	if (!b)
		return -ENOMEM;
	for (;;) {
		ssize_t got;

		if (n == cap) {
			char *nb;

			if (cap >= BM_MAX_INPUT_BYTES) {
				free(b);
				return -EFBIG;
			}
			nb = realloc(b, cap * 2 + 1);
			if (!nb) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
			cap *= 2;
		}
		got = read(fd, b + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int err = errno;

			free(b);
			return -err;
		}
		if (!got)
			break;
		n += (size_t)got;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

int bm_read_path(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -errno;
	r = bm_read_fd(fd, buf, len);
	close(fd);
	return r;
}

static int parse_one(const char *path, const char *display, unsigned flags, json_t *all,
		     struct bm_errlist *errs)
{
	char *buf = NULL;
	size_t len = 0;
	json_t *res = NULL;
	int r = strcmp(path, "-") ? bm_read_path(path, &buf, &len) : bm_read_fd(0, &buf, &len);

	if (r) {
		bm_errlist_add(errs, display, 0, NULL, "cannot read: %s", strerror(-r));
		return r == -ENOMEM ? r : -EINVAL;
	}
	r = bm_resources_parse(buf, len, display, flags, &res, errs);
	free(buf);
	if (!r && json_array_extend(all, res))
		r = -ENOMEM;
	json_decref(res);
	return r;
}

static bool resource_file_name(const char *n)
{
	size_t len = strlen(n);
	static const char *const exts[] = { ".yaml", ".yml", ".json" };

	if (n[0] == '.')
		return false;
	for (size_t i = 0; i < 3; i++) {
		size_t el = strlen(exts[i]);

		if (len > el && !strcmp(n + len - el, exts[i]))
			return true;
	}
	return false;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int parse_dir(const char *dir, unsigned flags, json_t *all, struct bm_errlist *errs)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	if (!d) {
		bm_errlist_add(errs, dir, 0, NULL, "cannot read directory: %s", strerror(errno));
		return -EINVAL;
	}
	while ((e = readdir(d))) {
		if (!resource_file_name(e->d_name))
			continue;
		if (n == cap) {
			char **v = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof(*v));

			if (!v) {
				r = -ENOMEM;
				break;
			}
			names = v;
		}
		if (asprintf(&names[n], "%s/%s", dir, e->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (!r && !n) {
		bm_errlist_add(errs, dir, 0, NULL, "no .yaml, .yml or .json files in directory");
		r = -EINVAL;
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		/* Keep going after a bad file: report every file's problems. */
		if (!r || r == -EINVAL) {
			int r2 = parse_one(names[i], names[i], flags, all, errs);

			if (r2)
				r = r2;
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int bm_load_inputs(char *const *paths, size_t npaths, unsigned flags, json_t **out,
		   struct bm_errlist *errs)
{
	json_t *all = json_array();
	int r = 0;

	*out = NULL;
	if (!all)
		return -ENOMEM;
	for (size_t i = 0; i < npaths && r != -ENOMEM; i++) {
		struct stat st;
		int r2;

		if (strcmp(paths[i], "-") && !stat(paths[i], &st) && S_ISDIR(st.st_mode))
			r2 = parse_dir(paths[i], flags, all, errs);
		else
			r2 = parse_one(paths[i], strcmp(paths[i], "-") ? paths[i] : "<stdin>",
				       flags, all, errs);
		if (r2)
			r = r2;
	}
	if (r) {
		json_decref(all);
		return r;
	}
	*out = all;
	return 0;
}
