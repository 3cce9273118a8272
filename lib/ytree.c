/* YAML -> line-numbered tree, built from libyaml's event stream. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include "ytree.h"

#define YAML_TAG_PREFIX "tag:yaml.org,2002:"

/* Every node and string of a stream lives in one arena: freeing a stream is a
 * walk over a few blocks instead of over a (possibly alias-expanded) tree. */
struct bm_yarena {
	struct bm_yarena *next;
	size_t used, size;
	max_align_t data[];
};

#define ARENA_BLOCK (64 * 1024)

static void *arena_alloc(struct bm_ystream *s, size_t n)
{
	struct bm_yarena *a = s->arena;
	void *p;

	n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	if (!a || a->size - a->used < n) {
		size_t size = n > ARENA_BLOCK ? n : ARENA_BLOCK;

		a = malloc(sizeof(*a) + size);
		if (!a)
			return NULL;
		a->size = size;
		a->used = 0;
		a->next = s->arena;
		s->arena = a;
	}
	p = (char *)a->data + a->used;
	a->used += n;
	return p;
}

static char *arena_strndup(struct bm_ystream *s, const char *str, size_t n)
{
	char *p = arena_alloc(s, n + 1);

	if (p) {
		memcpy(p, str, n);
		p[n] = '\0';
	}
	return p;
}

/* A collection being built: its children are gathered in a heap vector and
 * copied into the arena, exactly sized, when the collection ends. */
struct frame {
	struct bm_ynode *node;
	struct bm_ynode **vec; /* seq: items; map: key, value, key, value... */
	size_t n, cap;
	char *anchor;
};

struct anchor {
	char *name;
	struct bm_ynode *node;
};

struct builder {
	struct bm_ystream *s;
	const char *file;
	struct bm_errlist *errs;
	struct frame stack[BM_YTREE_MAX_DEPTH];
	size_t depth;
	struct anchor *anchors;
	size_t nanchors, anchors_cap;
	struct bm_ynode *root;
};

static int fail(struct builder *b, unsigned line, const char *fmt, const char *arg)
{
	bm_errlist_add(b->errs, b->file, line, NULL, fmt, arg);
	return -EINVAL;
}

static int vec_push(struct frame *f, struct bm_ynode *n)
{
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 8;
		struct bm_ynode **v = realloc(f->vec, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		f->vec = v;
		f->cap = cap;
	}
	f->vec[f->n++] = n;
	return 0;
}

static int add_child(struct builder *b, struct bm_ynode *n)
{
	struct frame *f;

	if (!b->depth) {
		b->root = n;
		return 0;
	}
	f = &b->stack[b->depth - 1];
	if (f->node->type == BM_Y_MAP && f->n % 2 == 0) {
		/* Keys are field names: a collection as a key has no meaning in
		 * any resource, and "<<" would need merge semantics we do not
		 * implement, so say so instead of reporting an odd field. */
		if (n->type != BM_Y_SCALAR)
			return fail(b, n->line, "YAML: mapping keys must be scalars%s", "");
		if (!n->quoted && !strcmp(n->str, "<<"))
			return fail(b, n->line, "YAML: merge keys (%s) are not supported", "<<");
	}
	return vec_push(f, n);
}

static int remember_anchor(struct builder *b, const char *name, struct bm_ynode *n)
{
	char *copy;

	if (!name)
		return 0;
	/* A redefined anchor shadows the earlier one for later aliases. */
	for (size_t i = 0; i < b->nanchors; i++) {
		if (!strcmp(b->anchors[i].name, name)) {
			b->anchors[i].node = n;
			return 0;
		}
	}
	if (b->nanchors == b->anchors_cap) {
		size_t cap = b->anchors_cap ? b->anchors_cap * 2 : 8;
		struct anchor *a = realloc(b->anchors, cap * sizeof(*a));

		if (!a)
			return -ENOMEM;
		b->anchors = a;
		b->anchors_cap = cap;
	}
	copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	b->anchors[b->nanchors].name = copy;
	b->anchors[b->nanchors].node = n;
	b->nanchors++;
	return 0;
}

static void forget_anchors(struct builder *b)
{
	for (size_t i = 0; i < b->nanchors; i++)
		free(b->anchors[i].name);
	b->nanchors = 0;
}

/* Aliases are expanded into real copies so consumers see a plain tree; the
 * copy budget is what defeats "billion laughs" documents. */
static int copy_node(struct builder *b, const struct bm_ynode *src, size_t depth,
		     struct bm_ynode **out)
{
	struct bm_ystream *s = b->s;
	struct bm_ynode *n;
	size_t nvec;

	if (depth >= BM_YTREE_MAX_DEPTH)
		return fail(b, src->line, "YAML: alias expands beyond %s levels of nesting",
			    "64");
	if (++s->alias_nodes > BM_YTREE_MAX_ALIAS_NODES)
		return fail(b, src->line, "YAML: aliases expand to too many nodes (limit %s)",
			    "100000");
	n = arena_alloc(s, sizeof(*n));
	if (!n)
		return -ENOMEM;
	*n = *src;
	*out = n;
	if (src->type == BM_Y_SCALAR)
		return 0;
	nvec = src->len;
	n->items = arena_alloc(s, (nvec ? nvec : 1) * sizeof(*n->items));
	if (!n->items)
		return -ENOMEM;
	for (size_t i = 0; i < nvec; i++) {
		int r = copy_node(b, src->items[i], depth + 1, &n->items[i]);

		if (r)
			return r;
	}
	/* Keys are scalars and immutable: sharing them is safe. */
	return 0;
}

static unsigned event_line(const yaml_event_t *ev)
{
	return (unsigned)ev->start_mark.line + 1;
}

/* Explicit tags: core-schema tags are fine (the schema types the value
 * anyway), `!!str` and the non-specific `!` force a string; application
 * tags mean something we cannot honour. */
static int check_tag(struct builder *b, const yaml_char_t *tag, unsigned line, bool *force_str)
{
	const char *t = (const char *)tag;

	*force_str = false;
	if (!t)
		return 0;
	if (!strcmp(t, "!") || !strcmp(t, YAML_TAG_PREFIX "str")) {
		*force_str = true;
		return 0;
	}
	if (!strncmp(t, YAML_TAG_PREFIX, strlen(YAML_TAG_PREFIX)))
		return 0;
	return fail(b, line, "YAML: unsupported tag %s", t);
}

static int on_scalar(struct builder *b, const yaml_event_t *ev)
{
	struct bm_ynode *n = arena_alloc(b->s, sizeof(*n));
	bool force_str;
	int r;

	if (!n)
		return -ENOMEM;
	r = check_tag(b, ev->data.scalar.tag, event_line(ev), &force_str);
	if (r)
		return r;
	memset(n, 0, sizeof(*n));
	n->type = BM_Y_SCALAR;
	n->line = event_line(ev);
	n->quoted = force_str || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
	n->len = ev->data.scalar.length;
	n->str = arena_strndup(b->s, (const char *)ev->data.scalar.value, n->len);
	if (!n->str)
		return -ENOMEM;
	r = remember_anchor(b, (const char *)ev->data.scalar.anchor, n);
	return r ? r : add_child(b, n);
}

static int on_start(struct builder *b, const yaml_event_t *ev, enum bm_ytype type)
{
	const yaml_char_t *tag = type == BM_Y_MAP ? ev->data.mapping_start.tag
						  : ev->data.sequence_start.tag;
	const yaml_char_t *anchor = type == BM_Y_MAP ? ev->data.mapping_start.anchor
						     : ev->data.sequence_start.anchor;
	struct frame *f;
	struct bm_ynode *n;
	bool force_str;
	int r;

	r = check_tag(b, tag, event_line(ev), &force_str);
	if (r)
		return r;
	if (b->depth >= BM_YTREE_MAX_DEPTH)
		return fail(b, event_line(ev), "YAML: nesting deeper than %s levels", "64");
	n = arena_alloc(b->s, sizeof(*n));
	if (!n)
		return -ENOMEM;
	memset(n, 0, sizeof(*n));
	n->type = type;
	n->line = event_line(ev);
	n->str = "";
	f = &b->stack[b->depth++];
	memset(f, 0, sizeof(*f));
	f->node = n;
	if (anchor) {
		f->anchor = strdup((const char *)anchor);
		if (!f->anchor)
			return -ENOMEM;
	}
	return 0;
}

static int on_end(struct builder *b)
{
	struct frame *f = &b->stack[--b->depth];
	struct bm_ynode *n = f->node;
	size_t count = n->type == BM_Y_MAP ? f->n / 2 : f->n;
	int r = -ENOMEM;

	n->len = count;
	n->items = arena_alloc(b->s, (count ? count : 1) * sizeof(*n->items));
	if (!n->items)
		goto out;
	if (n->type == BM_Y_MAP) {
		n->keys = arena_alloc(b->s, (count ? count : 1) * sizeof(*n->keys));
		if (!n->keys)
			goto out;
		for (size_t i = 0; i < count; i++) {
			n->keys[i] = f->vec[2 * i];
			n->items[i] = f->vec[2 * i + 1];
		}
	} else if (count) {
		memcpy(n->items, f->vec, count * sizeof(*n->items));
	}
	/* Registered only now: an alias inside its own anchor (a cycle) then
	 * finds nothing and is reported as an unknown anchor. */
	r = remember_anchor(b, f->anchor, n);
	if (!r)
		r = add_child(b, n);
out:
	free(f->vec);
	free(f->anchor);
	return r;
}

static int on_alias(struct builder *b, const yaml_event_t *ev)
{
	const char *name = (const char *)ev->data.alias.anchor;
	struct bm_ynode *copy;

	for (size_t i = b->nanchors; i-- > 0;) {
		if (!strcmp(b->anchors[i].name, name)) {
			int r = copy_node(b, b->anchors[i].node, b->depth, &copy);

			return r ? r : add_child(b, copy);
		}
	}
	return fail(b, event_line(ev), "YAML: unknown anchor \"%s\"", name);
}

static int add_doc(struct builder *b, unsigned line)
{
	struct bm_ystream *s = b->s;
	struct bm_ydoc *d;

	if (!b->root || bm_ynode_is_null(b->root))
		return 0;
	d = realloc(s->docs, (s->ndocs + 1) * sizeof(*d));
	if (!d)
		return -ENOMEM;
	s->docs = d;
	s->docs[s->ndocs].root = b->root;
	s->docs[s->ndocs].line = line;
	s->ndocs++;
	return 0;
}

int bm_yparse(const char *buf, size_t len, const char *file,
	      struct bm_ystream **out, struct bm_errlist *errs)
{
	struct builder b = { .file = file, .errs = errs };
	yaml_parser_t parser;
	yaml_event_t ev;
	unsigned doc_line = 1;
	bool done = false;
	int r = 0;

	*out = NULL;
	b.s = calloc(1, sizeof(*b.s));
	if (!b.s)
		return -ENOMEM;
	if (!yaml_parser_initialize(&parser)) {
		free(b.s);
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	while (!done && !r) {
		if (!yaml_parser_parse(&parser, &ev)) {
			if (parser.error == YAML_MEMORY_ERROR) {
				r = -ENOMEM;
				break;
			}
			bm_errlist_add(errs, file, (unsigned)parser.problem_mark.line + 1, NULL,
				       "YAML syntax error: %s%s%s",
				       parser.problem ? parser.problem : "invalid input",
				       parser.context ? " " : "",
				       parser.context ? parser.context : "");
			r = -EINVAL;
			break;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			doc_line = event_line(&ev);
			b.root = NULL;
			forget_anchors(&b);
			break;
		case YAML_DOCUMENT_END_EVENT:
			r = add_doc(&b, doc_line);
			break;
		case YAML_SCALAR_EVENT:
			r = on_scalar(&b, &ev);
			break;
		case YAML_SEQUENCE_START_EVENT:
			r = on_start(&b, &ev, BM_Y_SEQ);
			break;
		case YAML_MAPPING_START_EVENT:
			r = on_start(&b, &ev, BM_Y_MAP);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			r = on_end(&b);
			break;
		case YAML_ALIAS_EVENT:
			r = on_alias(&b, &ev);
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	/* Unwind collections left open by an error. */
	while (b.depth) {
		struct frame *f = &b.stack[--b.depth];

		free(f->vec);
		free(f->anchor);
	}
	forget_anchors(&b);
	free(b.anchors);
	yaml_parser_delete(&parser);
	if (r == -ENOMEM) {
		bm_ystream_free(b.s);
		return r;
	}
	*out = b.s;
	return r;
}

void bm_ystream_free(struct bm_ystream *s)
{
	if (!s)
		return;
	while (s->arena) {
		struct bm_yarena *next = s->arena->next;

		free(s->arena);
		s->arena = next;
	}
	free(s->docs);
	free(s);
}

bool bm_ynode_is_null(const struct bm_ynode *n)
{
	if (!n || n->type != BM_Y_SCALAR || n->quoted)
		return false;
	return n->len == 0 || !strcmp(n->str, "~") || !strcmp(n->str, "null") ||
	       !strcmp(n->str, "Null") || !strcmp(n->str, "NULL");
}

const struct bm_ynode *bm_ynode_get(const struct bm_ynode *n, const char *key)
{
	if (!n || n->type != BM_Y_MAP)
		return NULL;
	for (size_t i = 0; i < n->len; i++)
		if (!strcmp(n->keys[i]->str, key))
			return n->items[i];
	return NULL;
}

unsigned bm_ynode_key_line(const struct bm_ynode *n, const char *key)
{
	if (n && n->type == BM_Y_MAP)
		for (size_t i = 0; i < n->len; i++)
			if (!strcmp(n->keys[i]->str, key))
				return n->keys[i]->line;
	return n ? n->line : 0;
}
