/* Prometheus plumbing: a small writer for the text exposition format 0.0.4
 * (prometheus/docs exposition_formats.md) -- HELP and TYPE once per family,
 * every sample of a family contiguous, label values escaped; it refuses what
 * would make an invalid exposition instead of writing it -- and the HTTP
 * endpoint that serves it. */
#ifndef BM_PROM_H
#define BM_PROM_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BM_PROM_MAX_FAMILIES 64

enum bm_prom_type { BM_PROM_COUNTER, BM_PROM_GAUGE, BM_PROM_HISTOGRAM, BM_PROM_UNTYPED };

struct bm_prom_label {
	const char *name;
	const char *value;   /* NULL is written as "" */
};

struct bm_prom {
	FILE *f;
	const char *family;                             /* the open family, or NULL */
	enum bm_prom_type type;
	const char *declared[BM_PROM_MAX_FAMILIES];     /* names; caller keeps them alive */
	size_t n_declared;
	int err;                                        /* first error, sticky */
};

void bm_prom_init(struct bm_prom *p, FILE *f);
/* Starts a family: # HELP and # TYPE. -EEXIST when name was declared
 * before in this exposition (a family must be contiguous), -EINVAL for a
 * name that is not [a-zA-Z_:][a-zA-Z0-9_:]*. name must outlive p. */
int bm_prom_family(struct bm_prom *p, const char *name, enum bm_prom_type type, const char *help);
/* One sample of the open family: name is the family name (or, for a
 * histogram, name_bucket/_sum/_count). Labels are written in the order given.
 * -EINVAL for a sample outside the open family or a bad label name. */
int bm_prom_sample_u64(struct bm_prom *p, const char *name, const struct bm_prom_label *l,
		       size_t n, uint64_t value);
int bm_prom_sample(struct bm_prom *p, const char *name, const struct bm_prom_label *l,
		   size_t n, double value);
/* A label set rendered once (`a="x",b="y"`, values escaped, names checked)
 * for a series written many times, as a histogram's bucket lines are. */
struct bm_prom_labelset {
	char *text;
	size_t len;
};
int bm_prom_labelset_init(struct bm_prom_labelset *ls, const struct bm_prom_label *l, size_t n);
void bm_prom_labelset_free(struct bm_prom_labelset *ls);
/* A sample with a prepared label set, plus one more label when extra is
 * not NULL (le for a bucket). Same family rules as bm_prom_sample_u64. */
int bm_prom_sample_set_u64(struct bm_prom *p, const char *name, const struct bm_prom_labelset *ls,
			   const struct bm_prom_label *extra, uint64_t value);
/* 0, or the first error any call returned (-EIO when writing failed). */
int bm_prom_finish(struct bm_prom *p);

/* Escaping, exposed for tests: label values escape \ " and newline; HELP
 * text escapes \ and newline. */
void bm_prom_write_label_value(FILE *f, const char *v);
void bm_prom_write_help(FILE *f, const char *help);
/* Go float syntax: NaN, +Inf, -Inf, integers without exponent. */
void bm_prom_write_value(FILE *f, double v);

/* The /metrics endpoint: a thread serving GET and HEAD /metrics on addr
 * ("IP:PORT" or "[IPv6]:PORT", SO_REUSEADDR), 404 elsewhere, 405 for other
 * methods. render(arg, f) writes the exposition for each request (from the
 * server thread; 0, or -errno for a 500). The socket is bound before this
 * returns, so a bad or busy address is an error here. */
struct bm_prom_server;
int bm_prom_serve(const char *addr, int (*render)(void *arg, FILE *f), void *arg,
		  struct bm_prom_server **out);
/* The same server for any one path (e.g. /healthz/ready on 15021): render
 * returning -EAGAIN answers 503 with what it wrote (not ready). path and
 * content_type must outlive the server. */
int bm_http_serve(const char *addr, const char *path, const char *content_type,
		  int (*render)(void *arg, FILE *f), void *arg, struct bm_prom_server **out);
/* 1 when an HTTP request's header block (NUL-terminated, request line
 * first) accepts a gzip body: Accept-Encoding names gzip or x-gzip, or "*",
 * with a q above 0 (an explicit gzip;q=0 refuses it). The endpoint then
 * answers a 200 with Content-Encoding: gzip. Exposed for tests. */
int bm_http_accepts_gzip(const char *req);
/* The bound port (for an addr with port 0), or -errno. */
int bm_prom_server_port(const struct bm_prom_server *srv);
/* Stop the thread (within the per-connection deadline) and free srv. */
void bm_prom_server_stop(struct bm_prom_server *srv);

#endif
