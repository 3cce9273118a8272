/* File store: see store.h for the layout and the consistency protocol.
 * Also the front of every store: etcd:// URLs go to store_etcd.c.
 * This file: opening, watching, health, the generation, the file primitives
 * the other files share (store_int.h), key/value records and tokens; writes
 * are in store_apply.c, listing and reading in store_list.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include "store.h"
#include "store_cache.h"
#include "store_etcd.h"
#include "store_int.h"

#define MAX_RESOURCE_FILE (4 << 20)

int store_sys_err(const char *what, const char *path)
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

int store_mkdir_p(const char *path)
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
			r = store_sys_err("mkdir", tmp);
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
		r = store_mkdir_p(s->resdir);
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
		int r = store_sys_err("inotify_init1 for", dir);

		free(dir);
		return r;
	}
	/* The generation file is replaced by rename: watch its directory. */
	if (inotify_add_watch(s->watch_fd, dir, IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE) < 0) {
		int r = store_sys_err("inotify_add_watch", dir);

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
		return store_sys_err("read inotify for", s->dir);
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
int store_read_all(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t n;
	int r = 0;

	if (fd < 0)
		return errno == ENOENT ? -ENOENT : store_sys_err("open", path);
	if (fstat(fd, &st)) {
		r = store_sys_err("stat", path);
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
		r = store_sys_err("read", path);
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
	r = store_read_all(s->genpath, &buf, &len);

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

int store_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return store_sys_err("open", dir);
	if (fsync(fd))
		r = store_sys_err("fsync", dir);
	close(fd);
	return r;
}

/* Temp file in the same directory, fsync, rename over the target, fsync the
 * directory: after a crash the file is either old or new, never torn. */
int store_write_atomic(const char *dir, const char *path, const char *data, size_t len)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	char *tmp = NULL;
	int fd, r = 0;

	if (asprintf(&tmp, "%s/.%s.tmp.%d", dir, base, (int)getpid()) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = store_sys_err("create", tmp);
		goto out;
	}
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = store_sys_err("write", tmp);
			goto err_close;
		}
		off += (size_t)n;
	}
	if (fsync(fd)) {
		r = store_sys_err("fsync", tmp);
		goto err_close;
	}
	if (close(fd)) {
		r = store_sys_err("close", tmp);
		goto err_unlink;
	}
	if (rename(tmp, path)) {
		r = store_sys_err("rename to", path);
		goto err_unlink;
	}
	r = store_fsync_dir(dir);
	goto out;

err_close:
	close(fd);
err_unlink:
	unlink(tmp);
out:
	free(tmp);
	return r;
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
	r = store_mkdir_p(dir);
	if (!r)
		r = store_write_atomic(dir, path, value, len);
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
	r = store_read_all(path, value, &len);
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
		r = errno == ENOENT ? -ENOENT : store_sys_err("unlink", path);
	else {
		*strrchr(path, '/') = '\0';
		store_fsync_dir(path);
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
