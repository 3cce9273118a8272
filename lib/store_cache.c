/* The file store's parse cache: see store_cache.h.
 *
 * Both passes are arrays in listing order, so a lookup is a merge step (the
 * cursor into the previous pass only moves forward): O(files) per listing
 * with no hashing, and the order needs no index. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "store_cache.h"

/* A file changed less than this long before it was read is read again next
 * time: timestamps are as coarse as the kernel's tick, and a second edit of
 * the same size within it would otherwise look unchanged. */
#define RACY_NS (2 * 1000000000LL)
static long long racy_ns = RACY_NS;

void bm_fcache_set_racy_ms(long ms)
{
	racy_ns = ms * 1000000LL;
}

struct fent {
	int kind;
	char *ns, *fname;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim, ctim;
	json_t *res;             /* NULL: invalid, errs says why */
	struct bm_errlist *errs; /* only for an invalid file: most entries are valid */
};

struct fvec {
	struct fent *e;
	size_t n, cap;
};

struct bm_fcache {
	struct fvec old, cur;
	size_t cursor;           /* into old */
	size_t misses, parsed;
	uint64_t generation;
};

static void fent_free(struct fent *e)
{
	if (!e->fname) /* moved to the next pass */
		return;
	free(e->ns);
	free(e->fname);
	json_decref(e->res);
	if (e->errs)
		bm_errlist_free(e->errs);
	free(e->errs);
}

static void fvec_free(struct fvec *v)
{
	for (size_t i = 0; i < v->n; i++)
		fent_free(&v->e[i]);
	free(v->e);
	memset(v, 0, sizeof(*v));
}

struct bm_fcache *bm_fcache_new(void)
{
	return calloc(1, sizeof(struct bm_fcache));
}

void bm_fcache_free(struct bm_fcache *c)
{
	if (!c)
		return;
	fvec_free(&c->old);
	fvec_free(&c->cur);
	free(c);
}

void bm_fcache_clear(struct bm_fcache *c)
{
	fvec_free(&c->old);
	fvec_free(&c->cur);
	c->cursor = 0;
	c->generation = 0;
}

void bm_fcache_begin(struct bm_fcache *c)
{
	fvec_free(&c->cur);
	c->cursor = 0;
	c->misses = 0;
}

static int key_cmp(const struct fent *e, int kind, const char *ns, const char *fname)
{
	int r;

	if (!e->fname)
		return -1; /* moved: behind every key still to come */
	if (e->kind != kind)
		return e->kind < kind ? -1 : 1;
	r = strcmp(e->ns, ns);
	return r ? r : strcmp(e->fname, fname);
}

static bool same_file(const struct fent *e, const struct stat *st)
{
	return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
	       e->mtim.tv_sec == st->st_mtim.tv_sec && e->mtim.tv_nsec == st->st_mtim.tv_nsec &&
	       e->ctim.tv_sec == st->st_ctim.tv_sec && e->ctim.tv_nsec == st->st_ctim.tv_nsec;
}

/* Copies a report: messages verbatim (they are formatted already). */
static int errs_copy(struct bm_errlist *dst, const struct bm_errlist *src)
{
	int r = 0;

	for (size_t i = 0; i < src->n; i++)
		if (bm_errlist_add(dst, NULL, 0, NULL, "%s", src->msg[i]))
			r = -ENOMEM;
	dst->dropped += src->dropped;
	dst->oom |= src->oom;
	for (size_t i = 0; i < src->nwarn; i++) {
		char *w = strdup(src->warn[i]);

		if (dst->nwarn == dst->warncap) {
			size_t cap = dst->warncap ? dst->warncap * 2 : 8;
			char **m = realloc(dst->warn, cap * sizeof(*m));

			if (!m) {
				free(w);
				return -ENOMEM;
			}
			dst->warn = m;
			dst->warncap = cap;
		}
		if (!w)
			return -ENOMEM;
		dst->warn[dst->nwarn++] = w;
	}
	return r;
}

static int grow(struct fvec *v)
{
	size_t cap = v->cap ? v->cap * 2 : 256;
	struct fent *ne = realloc(v->e, cap * sizeof(*ne));

	if (!ne)
		return -ENOMEM;
	v->e = ne;
	v->cap = cap;
	return 0;
}

static struct fent *push(struct fvec *v, int kind, const char *ns, const char *fname)
{
	struct fent *e;

	if (v->n == v->cap && grow(v))
		return NULL;
	e = &v->e[v->n];
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->ns = strdup(ns);
	e->fname = strdup(fname);
	if (!e->ns || !e->fname) {
		fent_free(e);
		return NULL;
	}
	v->n++;
	return e;
}

int bm_fcache_lookup(struct bm_fcache *c, int kind, const char *ns, const char *fname,
		     const struct stat *st, json_t **res, struct bm_errlist *skipped)
{
	struct fent *o, *e;

	*res = NULL;
	while (c->cursor < c->old.n && key_cmp(&c->old.e[c->cursor], kind, ns, fname) < 0)
		c->cursor++;
	if (c->cursor == c->old.n)
		return 0;
	o = &c->old.e[c->cursor];
	if (key_cmp(o, kind, ns, fname) || !same_file(o, st))
		return 0;
	/* A hit moves the entry to this pass: no copies. */
	if (c->cur.n == c->cur.cap && grow(&c->cur))
		return 0; /* read it again: the cache only saves work */
	e = &c->cur.e[c->cur.n++];
	*e = *o;
	o->fname = NULL;
	o->ns = NULL;
	o->res = NULL;
	o->errs = NULL;
	c->cursor++;
	if (!e->res && e->errs)
		errs_copy(skipped, e->errs);
	*res = e->res;
	return 1;
}

static bool racy(const struct stat *st)
{
	struct timespec now;
	long long t, m = st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
		     ct = st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;

	clock_gettime(CLOCK_REALTIME, &now);
	t = now.tv_sec * 1000000000LL + now.tv_nsec;
	return t - (m > ct ? m : ct) < racy_ns;
}

int bm_fcache_add(struct bm_fcache *c, int kind, const char *ns, const char *fname,
		  const struct stat *st, json_t *res, const struct bm_errlist *errs)
{
	struct fent *e;

	c->misses++;
	if (racy(st))
		return 0;
	e = push(&c->cur, kind, ns, fname);
	if (!e)
		return -ENOMEM;
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->size = st->st_size;
	e->mtim = st->st_mtim;
	e->ctim = st->st_ctim;
	e->res = json_incref(res);
	if (!res && errs) {
		e->errs = calloc(1, sizeof(*e->errs));
		if (!e->errs || errs_copy(e->errs, errs)) {
			c->cur.n--; /* not kept: read again next time */
			fent_free(e);
			return -ENOMEM;
		}
	}
	return 0;
}

void bm_fcache_commit(struct bm_fcache *c, uint64_t generation)
{
	fvec_free(&c->old);
	c->old = c->cur;
	memset(&c->cur, 0, sizeof(c->cur));
	c->cursor = 0;
	c->parsed = c->misses;
	c->generation = generation;
}

/* Hits moved entries out of the previous pass, so it cannot be restored;
 * but every entry of this pass holds what its file held when it was
 * stat()ed, which is all a later pass relies on. Keep them, and the
 * generation of the last consistent pass (a reset is still detected). */
void bm_fcache_abort(struct bm_fcache *c)
{
	fvec_free(&c->old);
	c->old = c->cur;
	memset(&c->cur, 0, sizeof(c->cur));
	c->cursor = 0;
}

uint64_t bm_fcache_generation(const struct bm_fcache *c)
{
	return c->generation;
}

size_t bm_fcache_parsed(const struct bm_fcache *c)
{
	return c->parsed;
}
