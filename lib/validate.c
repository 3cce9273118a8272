/* Schema walker: YAML tree + field table -> canonical JSON + errors. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "duration.h"
#include "schema.h"

void bm_vctx_init(struct bm_vctx *v, const char *file, struct bm_errlist *errs)
{
	memset(v, 0, sizeof(*v));
	v->file = file;
	v->errs = errs;
}

void bm_vctx_fini(struct bm_vctx *v)
{
	free(v->path);
	v->path = NULL;
	v->plen = v->pcap = 0;
}

static void path_append(struct bm_vctx *v, const char *s, size_t n)
{
	if (v->plen + n + 1 > v->pcap) {
		size_t cap = (v->plen + n + 1) * 2;
		char *p = realloc(v->path, cap);

		if (!p) {
			/* The message loses precision, not correctness. */
			v->oom = true;
			return;
		}
		v->path = p;
		v->pcap = cap;
	}
	memcpy(v->path + v->plen, s, n);
	v->plen += n;
	v->path[v->plen] = '\0';
}

/* Keys that are not identifier-like (label keys such as
 * "app.kubernetes.io/name") are bracketed so the path stays unambiguous. */
static bool key_is_plain(const char *k)
{
	if (!*k)
		return false;
	for (; *k; k++)
		if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
		      (*k >= '0' && *k <= '9') || *k == '_' || *k == '-'))
			return false;
	return true;
}

size_t bm_vpath_push_key(struct bm_vctx *v, const char *key)
{
	size_t mark = v->plen;

	if (key_is_plain(key)) {
		if (v->plen)
			path_append(v, ".", 1);
		path_append(v, key, strlen(key));
	} else {
		path_append(v, "[\"", 2);
		/* Keys are user text: keep the path printable. */
		for (const char *k = key; *k; k++) {
			char c = (*k == '"' || *k == '\\' || (unsigned char)*k < 0x20) ? '?' : *k;

			path_append(v, &c, 1);
		}
		path_append(v, "\"]", 2);
	}
	return mark;
}

size_t bm_vpath_push_index(struct bm_vctx *v, size_t i)
{
	char buf[32];
	size_t mark = v->plen;
	int n = snprintf(buf, sizeof(buf), "[%zu]", i);

	path_append(v, buf, (size_t)n);
	return mark;
}

void bm_vpath_pop(struct bm_vctx *v, size_t mark)
{
	if (mark <= v->plen) {
		v->plen = mark;
		if (v->path)
			v->path[mark] = '\0';
	}
}

/* For bm_verr_at / bm_vwarn_at: the suffix names a field below the current
 * path, for this one entry only. */
static void vreport_at(struct bm_vctx *v, bool warn, unsigned line, const char *suffix,
		       const char *fmt, va_list ap)
{
	size_t mark = v->plen;

	if (*suffix == '.' && !v->plen)
		suffix++;
	path_append(v, suffix, strlen(suffix));
	if (warn)
		bm_errlist_vwarn(v->errs, v->file, line, v->path, fmt, ap);
	else
		bm_errlist_vadd(v->errs, v->file, line, v->path, fmt, ap);
	bm_vpath_pop(v, mark);
}

void bm_verr(struct bm_vctx *v, unsigned line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bm_errlist_vadd(v->errs, v->file, line, v->path, fmt, ap);
	va_end(ap);
}

void bm_verr_at(struct bm_vctx *v, unsigned line, const char *suffix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport_at(v, false, line, suffix, fmt, ap);
	va_end(ap);
}

void bm_vwarn(struct bm_vctx *v, unsigned line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bm_errlist_vwarn(v->errs, v->file, line, v->path, fmt, ap);
	va_end(ap);
}

void bm_vwarn_at(struct bm_vctx *v, unsigned line, const char *suffix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport_at(v, true, line, suffix, fmt, ap);
	va_end(ap);
}

static bool in_list(const char *const *list, const char *s, bool icase)
{
	for (; list && *list; list++)
		if (icase ? !strcasecmp(*list, s) : !strcmp(*list, s))
			return true;
	return false;
}

/* libyaml only hands out UTF-8, but jansson refuses anything else: never
 * let a refused string turn into a silently missing field. */
static json_t *utf8_string(struct bm_vctx *v, const struct bm_ynode *n)
{
	json_t *j = json_stringn(n->str, n->len);

	if (!j)
		bm_verr(v, n->line, "must be valid UTF-8 text");
	return j;
}

static void enum_error(struct bm_vctx *v, const struct bm_field *f, const struct bm_ynode *n)
{
	char list[512];
	size_t off = 0;

	list[0] = '\0';
	for (const char *const *e = f->enums; *e && off < sizeof(list); e++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
					e == f->enums ? "" : ", ", *e);
	bm_verr(v, n->line, "must be one of %s (got \"%.64s\")", list, n->str);
}

static json_t *to_string(struct bm_vctx *v, const struct bm_field *f, const struct bm_ynode *n)
{
	bool icase = f->flags & BM_F_ICASE;

	if (n->type != BM_Y_SCALAR) {
		bm_verr(v, n->line, "must be a string");
		return NULL;
	}
	/* Later consumers use C strings: an escaped "\0" would truncate. */
	if (memchr(n->str, '\0', n->len)) {
		bm_verr(v, n->line, "must not contain NUL characters");
		return NULL;
	}
	if ((f->flags & BM_F_NONEMPTY) && !n->len) {
		bm_verr(v, n->line, "must not be empty");
		return NULL;
	}
	if (f->enums && !in_list(f->enums, n->str, icase)) {
		if (in_list(f->enums_later, n->str, icase))
			bm_verr(v, n->line, "%s is not supported yet", n->str);
		else
			enum_error(v, f, n);
		return NULL;
	}
	return utf8_string(v, n);
}

/* Decimal integer literal, as JSON and YAML both spell it. YAML 1.1 forms
 * (0x1F, 0o17, 1_000, 1:30) are refused: Kubernetes' JSON decoding would
 * refuse them too. */
static int parse_int(const char *s, long long *out)
{
	const char *p = s;
	bool neg = false;
	unsigned long long acc = 0;

	if (*p == '-' || *p == '+')
		neg = *p++ == '-';
	if (!*p)
		return -EINVAL;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		if (acc > (ULLONG_MAX - 9) / 10)
			return -ERANGE;
		acc = acc * 10 + (unsigned)(*p - '0');
	}
	if (acc > (unsigned long long)LLONG_MAX + (neg ? 1 : 0))
		return -ERANGE;
	*out = neg ? (long long)(0 - acc) : (long long)acc;
	return 0;
}

static json_t *to_int(struct bm_vctx *v, const struct bm_field *f, const struct bm_ynode *n)
{
	long long x;
	int r;

	if (n->type != BM_Y_SCALAR || n->quoted) {
		bm_verr(v, n->line, "must be an integer%s",
			n->type == BM_Y_SCALAR ? " (not a quoted string)" : "");
		return NULL;
	}
	r = parse_int(n->str, &x);
	if (r == -ERANGE || (!r && (x < INT32_MIN || x > UINT32_MAX))) {
		bm_verr(v, n->line, "integer out of range");
		return NULL;
	}
	if (r) {
		bm_verr(v, n->line, "must be an integer (got \"%.64s\")", n->str);
		return NULL;
	}
	if ((f->flags & BM_F_RANGE) && (x < f->min || x > f->max)) {
		if (f->max >= INT32_MAX)
			bm_verr(v, n->line, "must be >= %lld", f->min);
		else
			bm_verr(v, n->line, "must be between %lld and %lld", f->min, f->max);
		return NULL;
	}
	return json_integer(x);
}

static json_t *to_bool(struct bm_vctx *v, const struct bm_ynode *n)
{
	if (n->type == BM_Y_SCALAR && !n->quoted) {
		if (!strcmp(n->str, "true") || !strcmp(n->str, "True") || !strcmp(n->str, "TRUE"))
			return json_true();
		if (!strcmp(n->str, "false") || !strcmp(n->str, "False") || !strcmp(n->str, "FALSE"))
			return json_false();
	}
	bm_verr(v, n->line, "must be a boolean (true or false)");
	return NULL;
}

static json_t *to_number(struct bm_vctx *v, const struct bm_ynode *n)
{
	long long i;
	char *end;
	double d;

	if (n->type == BM_Y_SCALAR && !n->quoted) {
		if (!parse_int(n->str, &i))
			return json_integer(i);
		errno = 0;
		d = strtod(n->str, &end);
		/* strtod also takes hex, "inf" and "nan": keep to decimal. */
		if (n->len && !*end && !errno && isfinite(d) &&
		    !strpbrk(n->str, "xXiInN"))
			return json_real(d);
	}
	bm_verr(v, n->line, "must be a number");
	return NULL;
}

static json_t *to_duration(struct bm_vctx *v, const struct bm_ynode *n)
{
	uint64_t ms;
	int r;

	if (n->type != BM_Y_SCALAR) {
		bm_verr(v, n->line, "must be a duration string such as \"1.5s\"");
		return NULL;
	}
	r = bm_duration_ms(n->str, &ms);
	if (r == -ERANGE) {
		bm_verr(v, n->line, "must be at least 1ms and a whole number of milliseconds");
		return NULL;
	}
	if (r) {
		bm_verr(v, n->line, "invalid duration \"%.64s\" (e.g. \"10s\", \"1.5s\", \"100ms\")",
			n->str);
		return NULL;
	}
	return utf8_string(v, n);
}

static json_t *to_list(struct bm_vctx *v, const struct bm_field *f, const struct bm_ynode *n)
{
	json_t *arr;

	if (n->type != BM_Y_SEQ) {
		bm_verr(v, n->line, "must be a list");
		return NULL;
	}
	if ((f->flags & BM_F_NONEMPTY) && !n->len) {
		bm_verr(v, n->line, "must not be empty");
		return NULL;
	}
	arr = json_array();
	if (!arr) {
		v->oom = true;
		return NULL;
	}
	for (size_t i = 0; i < n->len; i++) {
		size_t mark = bm_vpath_push_index(v, i);
		json_t *j = NULL;

		if (bm_ynode_is_null(n->items[i]))
			bm_verr(v, n->items[i]->line, "must not be null");
		else
			j = bm_validate_node(v, f->elem, n->items[i]);
		if (j && json_array_append_new(arr, j))
			v->oom = true;
		bm_vpath_pop(v, mark);
	}
	return arr;
}

static int cmp_key(const void *a, const void *b)
{
	const struct bm_ynode *x = *(const struct bm_ynode *const *)a;
	const struct bm_ynode *y = *(const struct bm_ynode *const *)b;
	int c = strcmp(x->str, y->str);

	if (c)
		return c;
	return x->line < y->line ? -1 : x->line > y->line;
}

/* Reports every repeated key once, at its later occurrence. Sorting keeps
 * this O(n log n) for the large maps a fuzzer (or a generator) can produce. */
static void report_duplicate_keys(struct bm_vctx *v, const struct bm_ynode *n)
{
	const struct bm_ynode **sorted;

	if (n->len < 2)
		return;
	sorted = malloc(n->len * sizeof(*sorted));
	if (!sorted) {
		v->oom = true;
		return;
	}
	memcpy(sorted, n->keys, n->len * sizeof(*sorted));
	qsort(sorted, n->len, sizeof(*sorted), cmp_key);
	for (size_t i = 1; i < n->len; i++) {
		if (!strcmp(sorted[i]->str, sorted[i - 1]->str)) {
			size_t mark = bm_vpath_push_key(v, sorted[i]->str);

			bm_verr(v, sorted[i]->line, "duplicate key");
			bm_vpath_pop(v, mark);
		}
	}
	free(sorted);
}

static json_t *to_map(struct bm_vctx *v, const struct bm_field *f, const struct bm_ynode *n)
{
	json_t *obj;

	if (n->type != BM_Y_MAP) {
		bm_verr(v, n->line, "must be a mapping");
		return NULL;
	}
	if ((f->flags & BM_F_NONEMPTY) && !n->len) {
		bm_verr(v, n->line, "must not be empty");
		return NULL;
	}
	obj = json_object();
	if (!obj) {
		v->oom = true;
		return NULL;
	}
	report_duplicate_keys(v, n);
	for (size_t i = 0; i < n->len; i++) {
		const struct bm_ynode *k = n->keys[i];
		size_t mark = bm_vpath_push_key(v, k->str);
		json_t *j = NULL;

		if (memchr(k->str, '\0', k->len) || !k->len) {
			bm_verr(v, k->line, "keys must be non-empty text");
		} else {
			if (f->key_check)
				f->key_check(v, k, NULL);
			if (bm_ynode_is_null(n->items[i]))
				bm_verr(v, n->items[i]->line, "must not be null");
			else
				j = bm_validate_node(v, f->elem, n->items[i]);
		}
		if (j && json_object_set_new(obj, k->str, j))
			v->oom = true;
		bm_vpath_pop(v, mark);
	}
	return obj;
}

static int field_index(const struct bm_field *fields, const char *name)
{
	for (int i = 0; fields[i].name; i++)
		if (!strcmp(fields[i].name, name))
			return i;
	return -1;
}

static void unknown_field(struct bm_vctx *v, const struct bm_field *fields,
			  const struct bm_ynode *key)
{
	/* "Subsets" vs "subsets" is the common slip; point at the real name. */
	for (int i = 0; fields[i].name; i++) {
		if (!strcasecmp(fields[i].name, key->str)) {
			bm_verr(v, key->line, "unknown field (did you mean \"%s\"?)", fields[i].name);
			return;
		}
	}
	bm_verr(v, key->line, "unknown field");
}

json_t *bm_validate_object(struct bm_vctx *v, const struct bm_field *fields,
			   const struct bm_ynode *n)
{
	const struct bm_ynode *found[BM_SCHEMA_MAX_FIELDS] = { 0 };
	json_t *vals[BM_SCHEMA_MAX_FIELDS] = { 0 };
	json_t *obj;
	int nfields = 0;

	if (n->type != BM_Y_MAP) {
		bm_verr(v, n->line, "must be an object (a mapping of fields)");
		return NULL;
	}
	while (fields[nfields].name)
		nfields++;
	for (size_t i = 0; i < n->len; i++) {
		const struct bm_ynode *key = n->keys[i], *val = n->items[i];
		int idx = field_index(fields, key->str);
		size_t mark = bm_vpath_push_key(v, key->str);
		const struct bm_field *f;

		if (idx < 0 || idx >= BM_SCHEMA_MAX_FIELDS) {
			unknown_field(v, fields, key);
			goto next;
		}
		f = &fields[idx];
		if (found[idx]) {
			bm_verr(v, key->line, "duplicate field");
			goto next;
		}
		found[idx] = val;
		/* null is YAML's way of saying "unset". */
		if (bm_ynode_is_null(val) || (f->flags & BM_F_IGNORED))
			goto next;
		if (f->flags & BM_F_UNSUPPORTED) {
			bm_verr(v, key->line, "not supported yet");
			goto next;
		}
		v->key_line = key->line;
		vals[idx] = bm_validate_node(v, f, val);
next:
		bm_vpath_pop(v, mark);
	}
	for (int i = 0; i < nfields && i < BM_SCHEMA_MAX_FIELDS; i++) {
		if ((fields[i].flags & BM_F_REQUIRED) &&
		    (!found[i] || bm_ynode_is_null(found[i]))) {
			size_t mark = bm_vpath_push_key(v, fields[i].name);

			bm_verr(v, found[i] ? found[i]->line : n->line, "required");
			bm_vpath_pop(v, mark);
		}
	}
	obj = json_object();
	if (!obj)
		v->oom = true;
	/* Schema order, so equal resources serialise identically whatever
	 * order the user wrote their fields in. */
	for (int i = 0; i < nfields && i < BM_SCHEMA_MAX_FIELDS; i++) {
		if (!vals[i])
			continue;
		if (!obj || json_object_set_new(obj, fields[i].name, vals[i])) {
			if (obj)
				v->oom = true;
			else
				json_decref(vals[i]);
		}
	}
	return obj;
}

json_t *bm_validate_node(struct bm_vctx *v, const struct bm_field *f, const struct bm_ynode *n)
{
	size_t before = bm_errlist_count(v->errs);
	struct bm_ynode at_key;
	json_t *j = NULL;

	/* A block collection starts on the line after its key; errors about
	 * the collection as a whole ("required", "total weight") read better
	 * on the key's line, so report them there. */
	if (v->key_line && n->type != BM_Y_SCALAR) {
		at_key = *n;
		at_key.line = v->key_line;
		n = &at_key;
	}
	v->key_line = 0;

	switch (f->type) {
	case BM_T_STRING:
		j = to_string(v, f, n);
		break;
	case BM_T_INT:
		j = to_int(v, f, n);
		break;
	case BM_T_BOOL:
		j = to_bool(v, n);
		break;
	case BM_T_NUMBER:
		j = to_number(v, n);
		break;
	case BM_T_DURATION:
		j = to_duration(v, n);
		break;
	case BM_T_OBJECT:
		j = bm_validate_object(v, f->fields, n);
		break;
	case BM_T_LIST:
		j = to_list(v, f, n);
		break;
	case BM_T_MAP:
		j = to_map(v, f, n);
		break;
	case BM_T_NONE:
	case BM_T_ANY:
		/* Tables only use these with BM_F_UNSUPPORTED / BM_F_IGNORED,
		 * which never reach here; refuse rather than guess. */
		bm_verr(v, n->line, "not supported yet");
		break;
	}
	/* Checks see only values that are otherwise fine, so one mistake does
	 * not cascade into follow-up complaints. */
	if (j && f->check && bm_errlist_count(v->errs) == before)
		f->check(v, n, j);
	return j;
}
