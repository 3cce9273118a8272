/* The Prometheus text format (0.0.4) parser of meshctl stat (cli/stat.c):
 * one node's exposition into struct stat_expo, each sample with a canonical
 * key (name and sorted labels) so that a series of the first scrape is found
 * again in the second. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "stat.h"

/* ------------------------------------------------------------ parser */

struct sbuf {
	char *b;
	size_t n, cap;
};

static int sb_put(struct sbuf *s, const char *p, size_t n)
{
	if (s->n + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 256;
		char *nb;

		while (cap < s->n + n + 1)
			cap *= 2;
		nb = realloc(s->b, cap);
		if (!nb)
			return -ENOMEM;
		s->b = nb;
		s->cap = cap;
	}
	memcpy(s->b + s->n, p, n);
	s->n += n;
	return 0;
}

static int sb_putc(struct sbuf *s, char c)
{
	return sb_put(s, &c, 1);
}

static int name_start(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static int name_char(int c)
{
	return name_start(c) || (c >= '0' && c <= '9');
}

static const char *skip_blank(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

/* Offsets into the line's string buffer, turned into pointers at the end. */
struct loff {
	size_t name, value;
};

static int cmp_label(const void *x, const void *y)
{
	return strcmp(((const struct stat_label *)x)->name, ((const struct stat_label *)y)->name);
}

/* Label values as the exposition writes them, so the key is unambiguous. */
static size_t escaped_len(const char *v)
{
	size_t n = 0;

	for (; *v; v++)
		n += (*v == '\\' || *v == '"' || *v == '\n') ? 2 : 1;
	return n;
}

static char *put_escaped(char *w, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"' || *v == '\n') {
			*w++ = '\\';
			*w++ = *v == '\n' ? 'n' : *v;
		} else {
			*w++ = *v;
		}
	}
	return w;
}

/* The sample in sb (name, then label name/value pairs at offs), as one
 * allocation with its canonical key: name{a="x",b="y"} with labels sorted. */
static int add_sample(struct stat_expo *e, const struct sbuf *sb, const struct loff *offs,
		      size_t nl, double value)
{
	struct stat_sample *s;
	size_t keylen;
	char *w;

	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 256;
		struct stat_sample *ns = realloc(e->s, cap * sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		e->s = ns;
		e->cap = cap;
	}
	s = &e->s[e->n];
	memset(s, 0, sizeof(*s));
	s->l = calloc(nl ? nl : 1, sizeof(*s->l));
	if (!s->l)
		return -ENOMEM;
	for (size_t i = 0; i < nl; i++)
		s->l[i] = (struct stat_label){ sb->b + offs[i].name, sb->b + offs[i].value };
	qsort(s->l, nl, sizeof(*s->l), cmp_label);
	keylen = strlen(sb->b) + 2;
	for (size_t i = 0; i < nl; i++)
		keylen += strlen(s->l[i].name) + 4 + escaped_len(s->l[i].value);
	s->buf = malloc(sb->n + keylen + 1);
	if (!s->buf) {
		free(s->l);
		return -ENOMEM;
	}
	memcpy(s->buf, sb->b, sb->n);
	for (size_t i = 0; i < nl; i++) {
		s->l[i].name = s->buf + (s->l[i].name - sb->b);
		s->l[i].value = s->buf + (s->l[i].value - sb->b);
	}
	s->name = s->buf;
	s->nl = nl;
	s->value = value;
	w = s->buf + sb->n;
	s->key = w;
	w = stpcpy(w, s->name);
	*w++ = '{';
	for (size_t i = 0; i < nl; i++) {
		w += sprintf(w, "%s%s=\"", i ? "," : "", s->l[i].name);
		w = put_escaped(w, s->l[i].value);
		*w++ = '"';
	}
	*w++ = '}';
	*w = 0;
	e->n++;
	return 0;
}

/* One line; *why says what is wrong with it (-EINVAL). */
static int parse_line(const char *p, const char *end, struct stat_expo *e, struct sbuf *sb,
		      struct loff **offs, size_t *offcap, const char **why)
{
	char num[64], *nend;
	const char *t;
	size_t nl = 0;
	double v;

	sb->n = 0;
	p = skip_blank(p, end);
	if (p == end || *p == '#')
		return 0;
	if (!name_start((unsigned char)*p)) {
		*why = "metric name expected";
		return -EINVAL;
	}
	for (t = p; p < end && name_char((unsigned char)*p); p++)
		;
	if (sb_put(sb, t, (size_t)(p - t)) || sb_putc(sb, 0))
		return -ENOMEM;
	p = skip_blank(p, end);
	if (p < end && *p == '{') {
		for (p++;;) {
			p = skip_blank(p, end);
			if (p < end && *p == '}') {
				p++;
				break;
			}
			if (p == end || !name_start((unsigned char)*p) || *p == ':') {
				*why = "label name expected";
				return -EINVAL;
			}
			if (nl == *offcap) {
				size_t cap = *offcap ? *offcap * 2 : 32;
				struct loff *no = realloc(*offs, cap * sizeof(*no));

				if (!no)
					return -ENOMEM;
				*offs = no;
				*offcap = cap;
			}
			(*offs)[nl].name = sb->n;
			for (t = p; p < end && name_char((unsigned char)*p) && *p != ':'; p++)
				;
			if (sb_put(sb, t, (size_t)(p - t)) || sb_putc(sb, 0))
				return -ENOMEM;
			p = skip_blank(p, end);
			if (p == end || *p != '=') {
				*why = "'=' expected after the label name";
				return -EINVAL;
			}
			p = skip_blank(p + 1, end);
			if (p == end || *p != '"') {
				*why = "'\"' expected: label values are quoted";
				return -EINVAL;
			}
			(*offs)[nl++].value = sb->n;
			for (p++; p < end && *p != '"'; p++) {
				char c = *p;

				if (c == '\\') {
					if (++p == end)
						break;
					/* The format's escapes are \\, \" and \n; anything
					 * else is kept as written. */
					if (*p == 'n')
						c = '\n';
					else if (*p == '\\' || *p == '"')
						c = *p;
					else if (sb_putc(sb, '\\'))
						return -ENOMEM;
					else
						c = *p;
				}
				if (sb_putc(sb, c))
					return -ENOMEM;
			}
			if (p >= end) {
				*why = "label value not terminated";
				return -EINVAL;
			}
			if (sb_putc(sb, 0))
				return -ENOMEM;
			p = skip_blank(p + 1, end);
			if (p < end && *p == ',')
				p++;
			else if (p == end || *p != '}') {
				*why = "',' or '}' expected after a label";
				return -EINVAL;
			}
		}
	}
	p = skip_blank(p, end);
	for (t = p; p < end && *p != ' ' && *p != '\t'; p++)
		;
	if (p == t || (size_t)(p - t) >= sizeof(num)) {
		*why = "value expected";
		return -EINVAL;
	}
	memcpy(num, t, (size_t)(p - t));
	num[p - t] = 0;
	errno = 0;
	v = strtod(num, &nend);
	if (*nend || (errno && errno != ERANGE)) {
		*why = "value is not a number";
		return -EINVAL;
	}
	/* An optional timestamp (ms), ignored: the interval is our own. */
	p = skip_blank(p, end);
	if (p < end && *p == '-')
		p++;
	for (t = p; p < end && isdigit((unsigned char)*p); p++)
		;
	p = skip_blank(p, end);
	if (p != end) {
		*why = "unexpected text after the value";
		return -EINVAL;
	}
	return add_sample(e, sb, *offs, nl, v);
}

int stat_parse(const char *text, struct stat_expo *e, char *err, size_t errlen)
{
	struct sbuf sb = {};
	struct loff *offs = NULL;
	size_t offcap = 0, line = 1;
	int rc = 0;

	while (*text) {
		const char *eol = strchr(text, '\n'), *why = NULL;

		if (!eol)
			eol = text + strlen(text);
		rc = parse_line(text, eol, e, &sb, &offs, &offcap, &why);
		if (rc) {
			if (err && errlen)
				snprintf(err, errlen, "line %zu: %s", line,
					 why ? why : strerror(-rc));
			break;
		}
		text = *eol ? eol + 1 : eol;
		line++;
	}
	free(sb.b);
	free(offs);
	return rc;
}

void stat_expo_free(struct stat_expo *e)
{
	for (size_t i = 0; i < e->n; i++) {
		free(e->s[i].l);
		free(e->s[i].buf);
	}
	free(e->s);
	memset(e, 0, sizeof(*e));
}

const char *stat_label(const struct stat_sample *s, const char *name)
{
	for (size_t i = 0; i < s->nl; i++)
		if (!strcmp(s->l[i].name, name))
			return s->l[i].value;
	return NULL;
}
