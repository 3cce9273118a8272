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

/* "FILE:LINE: PATH: " + tag + message into *out; 0 or -ENOMEM. */
static int format_line(char **out, const char *file, unsigned line, const char *path,
		       const char *tag, const char *fmt, va_list ap)
{
	char *body = NULL, *head = NULL;
	char lbuf[24] = "";

	*out = NULL;
	if (vasprintf(&body, fmt, ap) < 0)
		goto err_oom;
	if (line)
		snprintf(lbuf, sizeof(lbuf), "%u:", line);
	if (asprintf(&head, "%s%s%s%s%s%s%s", file ? file : "", file ? ":" : "", lbuf,
		     (file || line) ? " " : "",
		     path && *path ? path : "", path && *path ? ": " : "", tag) < 0)
		goto err_free_body;
	{
		size_t a = strlen(head), b = strlen(body);
		char *joined = realloc(head, a + b + 1);

		if (!joined)
			goto err_free_head;
		memcpy(joined + a, body, b + 1);
		head = joined;
	}
	free(body);
	*out = head;
	return 0;

err_free_head:
	free(head);
err_free_body:
	free(body);
err_oom:
	return -ENOMEM;
}

int bm_errlist_vadd(struct bm_errlist *e, const char *file, unsigned line,
		    const char *path, const char *fmt, va_list ap)
{
	char *out;

	if (e->n >= BM_ERRLIST_MAX) {
		e->dropped++;
		return 0;
	}
	if (format_line(&out, file, line, path, "", fmt, ap) < 0) {
		e->oom = true;
		return -ENOMEM;
	}
	return errlist_push(e, out);
}

static int warn_push(struct bm_errlist *e, char *line)
{
	if (e->nwarn >= BM_ERRLIST_MAX) {
		free(line);
		return 0;
	}
	if (e->nwarn == e->warncap) {
		size_t cap = e->warncap ? e->warncap * 2 : 8;
		char **m = realloc(e->warn, cap * sizeof(*m));

		if (!m) {
			free(line);
			return -ENOMEM;
		}
		e->warn = m;
		e->warncap = cap;
	}
	e->warn[e->nwarn++] = line;
	return 0;
}

int bm_errlist_vwarn(struct bm_errlist *e, const char *file, unsigned line,
		     const char *path, const char *fmt, va_list ap)
{
	char *out;

	if (e->nwarn >= BM_ERRLIST_MAX)
		return 0;
	if (format_line(&out, file, line, path, "warning: ", fmt, ap) < 0)
		return -ENOMEM;
	return warn_push(e, out);
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
	for (size_t i = 0; i < e->nwarn; i++)
		fprintf(f, "%s\n", e->warn[i]);
}

int bm_errlist_splice(struct bm_errlist *dst, struct bm_errlist *src)
{
	int r = 0;

	for (size_t i = 0; i < src->n; i++) {
		if (errlist_push(dst, src->msg[i]) < 0)
			r = -ENOMEM;
		src->msg[i] = NULL;
	}
	for (size_t i = 0; i < src->nwarn; i++) {
		if (warn_push(dst, src->warn[i]) < 0)
			r = -ENOMEM;
		src->warn[i] = NULL;
	}
	src->nwarn = 0;
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
	for (size_t i = 0; i < e->nwarn; i++)
		free(e->warn[i]);
	free(e->warn);
	memset(e, 0, sizeof(*e));
}
