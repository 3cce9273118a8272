/* Prometheus text format 0.0.4 writer; see prom.h. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include "prom.h"

static const char *const type_names[] = {
	[BM_PROM_COUNTER] = "counter",
	[BM_PROM_GAUGE] = "gauge",
	[BM_PROM_HISTOGRAM] = "histogram",
	[BM_PROM_UNTYPED] = "untyped",
};

void bm_prom_init(struct bm_prom *p, FILE *f)
{
	memset(p, 0, sizeof(*p));
	p->f = f;
}

static int fail(struct bm_prom *p, int err)
{
	if (!p->err)
		p->err = err;
	return err;
}

static int valid_name(const char *s, int colon_ok)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || (colon_ok && *s == ':')))
			return 0;
	return 1;
}

void bm_prom_write_help(FILE *f, const char *help)
{
	for (const char *c = help ? help : ""; *c; c++) {
		if (*c == '\\')
			fputs("\\\\", f);
		else if (*c == '\n')
			fputs("\\n", f);
		else
			fputc(*c, f);
	}
}

void bm_prom_write_label_value(FILE *f, const char *v)
{
	for (const char *c = v ? v : ""; *c; c++) {
		if (*c == '\\')
			fputs("\\\\", f);
		else if (*c == '"')
			fputs("\\\"", f);
		else if (*c == '\n')
			fputs("\\n", f);
		else
			fputc(*c, f);
	}
}

void bm_prom_write_value(FILE *f, double v)
{
	if (isnan(v))
		fputs("NaN", f);
	else if (isinf(v))
		fputs(v > 0 ? "+Inf" : "-Inf", f);
	else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53: exact */
		fprintf(f, "%.0f", v);
	else
		fprintf(f, "%.17g", v);
}

int bm_prom_family(struct bm_prom *p, const char *name, enum bm_prom_type type, const char *help)
{
	if (!valid_name(name, 1) || (unsigned)type > BM_PROM_UNTYPED)
		return fail(p, -EINVAL);
	for (size_t i = 0; i < p->n_declared; i++)
		if (!strcmp(p->declared[i], name))
			return fail(p, -EEXIST);
	if (p->n_declared == BM_PROM_MAX_FAMILIES)
		return fail(p, -ENOSPC);
	p->declared[p->n_declared++] = name;
	p->family = name;
	p->type = type;
	fprintf(p->f, "# HELP %s ", name);
	bm_prom_write_help(p->f, help);
	fprintf(p->f, "\n# TYPE %s %s\n", name, type_names[type]);
	return 0;
}

/* Is name a sample name of the open family? */
static int in_family(const struct bm_prom *p, const char *name)
{
	size_t n;

	if (!p->family)
		return 0;
	if (!strcmp(name, p->family))
		return p->type != BM_PROM_HISTOGRAM;
	n = strlen(p->family);
	if (p->type != BM_PROM_HISTOGRAM || strncmp(name, p->family, n))
		return 0;
	return !strcmp(name + n, "_bucket") || !strcmp(name + n, "_sum") ||
	       !strcmp(name + n, "_count");
}

static int sample_head(struct bm_prom *p, const char *name, const struct bm_prom_label *l,
		       size_t n)
{
	if (!in_family(p, name))
		return fail(p, -EINVAL);
	for (size_t i = 0; i < n; i++)
		if (!valid_name(l[i].name, 0) || !strncmp(l[i].name, "__", 2))
			return fail(p, -EINVAL);
	fputs(name, p->f);
	if (n) {
		fputc('{', p->f);
		for (size_t i = 0; i < n; i++) {
			fprintf(p->f, "%s%s=\"", i ? "," : "", l[i].name);
			bm_prom_write_label_value(p->f, l[i].value);
			fputc('"', p->f);
		}
		fputc('}', p->f);
	}
	fputc(' ', p->f);
	return 0;
}

int bm_prom_sample_u64(struct bm_prom *p, const char *name, const struct bm_prom_label *l,
		       size_t n, uint64_t value)
{
	int err = sample_head(p, name, l, n);

	if (err)
		return err;
	fprintf(p->f, "%" PRIu64 "\n", value);
	return 0;
}

int bm_prom_sample(struct bm_prom *p, const char *name, const struct bm_prom_label *l,
		   size_t n, double value)
{
	int err = sample_head(p, name, l, n);

	if (err)
		return err;
	bm_prom_write_value(p->f, value);
	fputc('\n', p->f);
	return 0;
}

int bm_prom_finish(struct bm_prom *p)
{
	if (fflush(p->f) || ferror(p->f))
		fail(p, -EIO);
	return p->err;
}
