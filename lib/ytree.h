/* YAML (and JSON, which is YAML flow style) parsed into a small read-only tree
 * whose nodes remember their line, so validation can say "file:14: ...".
 *
 * Scalars stay untyped text here: the resource schema decides what a scalar
 * means (a string field takes `true` as "true"; an int field wants a plain
 * integer literal), so only the facts needed for that are kept: the text and
 * whether it was quoted. */
#ifndef BM_YTREE_H
#define BM_YTREE_H
#include <stdbool.h>
#include <stddef.h>
#include "diag.h"

/* Bounds that keep hostile input cheap: nesting (the tree is walked
 * recursively) and nodes created by alias expansion (billion laughs). */
#define BM_YTREE_MAX_DEPTH 64
#define BM_YTREE_MAX_ALIAS_NODES 100000

enum bm_ytype { BM_Y_SCALAR, BM_Y_SEQ, BM_Y_MAP };

struct bm_ynode {
	enum bm_ytype type;
	unsigned line;           /* 1-based line where the node starts */
	bool quoted;             /* scalar: quoted, block literal or !!str */
	size_t len;              /* scalar: bytes in str; seq/map: entries */
	const char *str;         /* scalar text, NUL-terminated (len counts
				  * bytes, an escaped \0 may come earlier) */
	struct bm_ynode **keys;  /* map: key scalars */
	struct bm_ynode **items; /* seq: items; map: values (keys[i] -> items[i]) */
};

struct bm_ydoc {
	struct bm_ynode *root;
	unsigned line; /* line of the document start */
};

struct bm_ystream {
	size_t ndocs;
	struct bm_ydoc *docs;
	struct bm_yarena *arena; /* owns every node and string */
	size_t alias_nodes;      /* nodes created by alias expansion so far */
};

/* Parses every document of buf. Empty documents (a lone `---`, comments
 * only, an explicit null) are skipped. Returns 0; -EINVAL when the input is
 * not valid YAML (the message is added to errs, *out still holds the
 * documents before the error so they can be validated too); -ENOMEM. */
int bm_yparse(const char *buf, size_t len, const char *file,
	      struct bm_ystream **out, struct bm_errlist *errs);
void bm_ystream_free(struct bm_ystream *s);

/* A plain `~`, `null` (any common case) or empty scalar: YAML's "no value". */
bool bm_ynode_is_null(const struct bm_ynode *n);
/* Value of key in map n, or NULL (also NULL when n is not a map). */
const struct bm_ynode *bm_ynode_get(const struct bm_ynode *n, const char *key);
/* Line of key in map n (where "key:" is written), or n's own line. */
unsigned bm_ynode_key_line(const struct bm_ynode *n, const char *key);

#endif
