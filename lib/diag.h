/* Diagnostics collected while parsing and validating resources: one line per
 * problem, "FILE:LINE: FIELD.PATH: message", so every error in an input is
 * reported at once rather than one per run. */
#ifndef BM_DIAG_H
#define BM_DIAG_H
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Past this many messages further ones are counted but not kept: garbage input
 * (or a fuzzer) must not turn into megabytes of output. */
#define BM_ERRLIST_MAX 1000

struct bm_errlist {
	char **msg;     /* formatted lines, without trailing newline */
	size_t n;       /* lines kept */
	size_t cap;
	size_t dropped; /* lines not kept because of BM_ERRLIST_MAX */
	bool oom;       /* a line could not be stored: the list is incomplete */
	/* Warnings ("FILE:LINE: PATH: warning: message"): accepted input worth
	 * a remark, such as a deprecated field. Kept apart so they never count
	 * as errors (bm_errlist_count ignores them). */
	char **warn;
	size_t nwarn, warncap;
};

/* Appends "FILE:LINE: PATH: message" (PATH omitted when NULL or empty, LINE
 * when 0). Returns 0 or -ENOMEM (then e->oom is set). */
int bm_errlist_add(struct bm_errlist *e, const char *file, unsigned line,
		   const char *path, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
int bm_errlist_vadd(struct bm_errlist *e, const char *file, unsigned line,
		    const char *path, const char *fmt, va_list ap);
/* Appends a warning (same layout, "warning: " before the message). Returns
 * 0 or -ENOMEM; a lost warning is not an error and does not set e->oom. */
int bm_errlist_vwarn(struct bm_errlist *e, const char *file, unsigned line,
		     const char *path, const char *fmt, va_list ap);
/* Total problems seen, kept or not (warnings are not problems). */
static inline size_t bm_errlist_count(const struct bm_errlist *e)
{
	return e->n + e->dropped + (e->oom ? 1 : 0);
}
/* One line per message, then a summary line when some were dropped, then
 * the warnings. */
void bm_errlist_print(const struct bm_errlist *e, FILE *f);
/* Moves src's messages to the end of dst (src is left empty). */
int bm_errlist_splice(struct bm_errlist *dst, struct bm_errlist *src);
void bm_errlist_free(struct bm_errlist *e);

#endif
