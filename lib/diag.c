/* Error list: see diag.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "diag.h"

static int errlist_push(struct bm_errlist *e, char *line)
{
	if (e->n >= BM_ERRLIST_MAX) {
		free(line);
		e->dropped++;
		return 0;
	}
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 16;
		char **m = realloc(e->msg, cap * sizeof(*m));

		if (!m) {
			free(line);
			e->oom = true;
			return -ENOMEM;
		}
		e->msg = m;
		e->cap = cap;
	}
	e->msg[e->n++] = line;
	return 0;
}

int bm_errlist_vadd(struct bm_errlist *e, const char *file, unsigned line,
		    const char *path, const char *fmt, va_list ap)
{
	char *body = NULL, *out = NULL;
	char lbuf[24] = "";
	int r;

	if (e->n >= BM_ERRLIST_MAX) {
		e->dropped++;
		return 0;
	}
	if (vasprintf(&body, fmt, ap) < 0)
		goto err_oom;
	if (line)
		snprintf(lbuf, sizeof(lbuf), "%u:", line);
	r = asprintf(&out, "%s%s%s%s%s%s", file ? file : "", file ? ":" : "", lbuf,
		     (file || line) ? " " : "",
		     path && *path ? path : "", path && *path ? ": " : "");
	if (r < 0)
		goto err_free_body;
	{
		size_t a = strlen(out), b = strlen(body);
		char *joined = realloc(out, a + b + 1);

		if (!joined)
			goto err_free_out;
		memcpy(joined + a, body, b + 1);
		out = joined;
	}
	free(body);
	return errlist_push(e, out);

err_free_out:
	free(out);
err_free_body:
	free(body);
err_oom:
	e->oom = true;
	return -ENOMEM;
}

int bm_errlist_add(struct bm_errlist *e, const char *file, unsigned line,
		   const char *path, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = bm_errlist_vadd(e, file, line, path, fmt, ap);
	va_end(ap);
	return r;
}

void bm_errlist_print(const struct bm_errlist *e, FILE *f)
{
	for (size_t i = 0; i < e->n; i++)
		fprintf(f, "%s\n", e->msg[i]);
	if (e->dropped)
		fprintf(f, "... and %zu more errors\n", e->dropped);
	if (e->oom)
		fprintf(f, "(out of memory while collecting errors: list incomplete)\n");
}

int bm_errlist_splice(struct bm_errlist *dst, struct bm_errlist *src)
{
	int r = 0;

	for (size_t i = 0; i < src->n; i++) {
		if (errlist_push(dst, src->msg[i]) < 0)
			r = -ENOMEM;
		src->msg[i] = NULL;
	}
	dst->dropped += src->dropped;
	dst->oom |= src->oom;
	src->n = 0;
	src->dropped = 0;
	src->oom = false;
	return r;
}

void bm_errlist_free(struct bm_errlist *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->msg[i]);
	free(e->msg);
	memset(e, 0, sizeof(*e));
}
