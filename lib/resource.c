/* Documents -> kinds -> schema validation -> canonical JSON. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "resource.h"
#include "ytree.h"

static const struct bm_field identity_spec = {
	.name = "spec", .type = BM_T_ANY, .flags = BM_F_IGNORED };

static const struct bm_field metadata_field = {
	.name = "metadata", .type = BM_T_OBJECT, .flags = BM_F_REQUIRED,
	.fields = bm_metadata_fields };

static const struct bm_ynode *scalar_field(const struct bm_ynode *doc, const char *key)
{
	const struct bm_ynode *n = bm_ynode_get(doc, key);

	return n && n->type == BM_Y_SCALAR && !bm_ynode_is_null(n) ? n : NULL;
}

static void kind_not_supported(struct bm_vctx *v, const struct bm_ynode *kind,
			       const struct bm_ynode *api)
{
	bm_verr(v, kind->line, "kind %.64s (apiVersion %.64s) is not supported yet", kind->str,
		api ? api->str : "none");
}

/* Resolves the document's kind, reporting why when it cannot be used. */
static const struct bm_kind *doc_kind(struct bm_vctx *v, const struct bm_ynode *doc)
{
	const struct bm_ynode *kind = scalar_field(doc, "kind");
	const struct bm_ynode *api = scalar_field(doc, "apiVersion");
	const struct bm_kind *k;
	char want[160];
	size_t off;

	if (!kind) {
		const struct bm_ynode *raw = bm_ynode_get(doc, "kind");

		bm_verr_at(v, raw ? raw->line : doc->line, ".kind",
			   raw && !bm_ynode_is_null(raw) ? "must be a string" : "required");
		return NULL;
	}
	k = bm_kind_find(kind->str);
	if (!k) {
		/* Kinds are case-sensitive (as in Kubernetes); help the slip. */
		const struct bm_kind *alt = bm_kind_lookup(kind->str);

		if (alt && !strchr(kind->str, '.'))
			bm_verr_at(v, kind->line, ".kind", "unknown kind \"%.64s\" (did you mean "
				   "\"%s\"?)", kind->str, alt->kind);
		else
			kind_not_supported(v, kind, api);
		return NULL;
	}
	if (!k->spec) {
		kind_not_supported(v, kind, api);
		return NULL;
	}
	if (!api) {
		const struct bm_ynode *raw = bm_ynode_get(doc, "apiVersion");

		bm_verr_at(v, raw ? raw->line : doc->line, ".apiVersion",
			   raw && !bm_ynode_is_null(raw) ? "must be a string" : "required");
		return NULL;
	}
	if (!bm_kind_accepts_api_version(k, api->str)) {
		off = (size_t)snprintf(want, sizeof(want), "%s/", k->group);
		for (const char *const *ver = k->versions; *ver && off < sizeof(want); ver++)
			off += (size_t)snprintf(want + off, sizeof(want) - off, "%s%s",
						ver == k->versions ? "" : ", ", *ver);
		bm_verr_at(v, api->line, ".apiVersion", "\"%.64s\" is not a valid apiVersion "
			   "for %s (want %s)", api->str, k->kind, want);
		return NULL;
	}
	return k;
}

/* Store files carry the store's bookkeeping: copy it back when asked. */
static void copy_stored_meta(const struct bm_ynode *ymeta, json_t *meta)
{
	const struct bm_ynode *gen = bm_ynode_get(ymeta, "generation");
	const struct bm_ynode *ts = bm_ynode_get(ymeta, "creationTimestamp");
	unsigned long long g;
	char *end;

	if (gen && gen->type == BM_Y_SCALAR && !gen->quoted && gen->len &&
	    strspn(gen->str, "0123456789") == gen->len) {
		g = strtoull(gen->str, &end, 10);
		json_object_set_new(meta, "generation", json_integer((json_int_t)g));
	}
	if (ts && ts->type == BM_Y_SCALAR && !bm_ynode_is_null(ts) && !memchr(ts->str, 0, ts->len))
		json_object_set_new(meta, "creationTimestamp", json_stringn(ts->str, ts->len));
}

/* Rebuilds metadata with the namespace defaulted and in a stable order. */
static json_t *canonical_metadata(json_t *meta)
{
	json_t *out = json_object();
	const char *key;
	json_t *val;

	if (!out)
		return NULL;
	json_object_set(out, "name", json_object_get(meta, "name"));
	if (json_object_get(meta, "namespace"))
		json_object_set(out, "namespace", json_object_get(meta, "namespace"));
	else
		json_object_set_new(out, "namespace", json_string(BM_DEFAULT_NAMESPACE));
	json_object_foreach(meta, key, val)
		if (strcmp(key, "name") && strcmp(key, "namespace"))
			json_object_set(out, key, val);
	return out;
}

static void validate_doc(struct bm_vctx *v, const struct bm_ynode *doc, unsigned flags,
			 json_t *out, bool in_list);

static void validate_list(struct bm_vctx *v, const struct bm_ynode *doc, unsigned flags,
			  json_t *out)
{
	const struct bm_ynode *items = bm_ynode_get(doc, "items");
	size_t mark;

	for (size_t i = 0; i < doc->len; i++) {
		const char *k = doc->keys[i]->str;

		if (strcmp(k, "apiVersion") && strcmp(k, "kind") && strcmp(k, "items") &&
		    strcmp(k, "metadata")) {
			size_t m = bm_vpath_push_key(v, k);

			bm_verr(v, doc->keys[i]->line, "unknown field");
			bm_vpath_pop(v, m);
		}
	}
	if (!items || bm_ynode_is_null(items))
		return;
	mark = bm_vpath_push_key(v, "items");
	if (items->type != BM_Y_SEQ) {
		bm_verr(v, items->line, "must be a list");
	} else {
		for (size_t i = 0; i < items->len; i++) {
			size_t m = bm_vpath_push_index(v, i);

			validate_doc(v, items->items[i], flags, out, true);
			bm_vpath_pop(v, m);
		}
	}
	bm_vpath_pop(v, mark);
}

static void validate_doc(struct bm_vctx *v, const struct bm_ynode *doc, unsigned flags,
			 json_t *out, bool in_list)
{
	struct bm_field top[6] = {
		{ .name = "apiVersion", .type = BM_T_STRING, .flags = BM_F_REQUIRED },
		{ .name = "kind", .type = BM_T_STRING, .flags = BM_F_REQUIRED },
		metadata_field,
		{ 0 },
		/* Status is written by API servers; pasted output carries it. */
		{ .name = "status", .type = BM_T_ANY, .flags = BM_F_IGNORED },
		{ .name = NULL },
	};
	size_t before = bm_errlist_count(v->errs);
	const struct bm_ynode *kind;
	const struct bm_kind *k;
	json_t *obj, *meta;

	if (doc->type != BM_Y_MAP) {
		bm_verr(v, doc->line, "a resource must be a mapping with apiVersion, kind, "
			"metadata and spec");
		return;
	}
	kind = scalar_field(doc, "kind");
	/* kubectl's List wrapper (what `get -o yaml|json` prints) applies too. */
	if (!in_list && kind && !strcmp(kind->str, "List")) {
		validate_list(v, doc, flags, out);
		return;
	}
	k = doc_kind(v, doc);
	if (!k)
		return;
	top[3] = (flags & BM_PARSE_IDENTITY) ? identity_spec : *k->spec;
	obj = bm_validate_object(v, top, doc);
	if (!obj || bm_errlist_count(v->errs) != before) {
		json_decref(obj);
		return;
	}
	meta = canonical_metadata(json_object_get(obj, "metadata"));
	if (!meta) {
		v->oom = true;
		json_decref(obj);
		return;
	}
	if (flags & BM_PARSE_STORED)
		copy_stored_meta(bm_ynode_get(doc, "metadata"), meta);
	json_object_set_new(obj, "metadata", meta);
	if (json_array_append_new(out, obj))
		v->oom = true;
}

int bm_resources_parse(const char *buf, size_t len, const char *file, unsigned flags,
		       json_t **out, struct bm_errlist *errs)
{
	size_t before = bm_errlist_count(errs);
	struct bm_ystream *ys = NULL;
	struct bm_vctx v;
	json_t *arr;
	int r;

	*out = NULL;
	r = bm_yparse(buf, len, file, &ys, errs);
	if (r == -ENOMEM)
		return r;
	arr = json_array();
	if (!arr) {
		bm_ystream_free(ys);
		return -ENOMEM;
	}
	bm_vctx_init(&v, file, errs);
	/* Documents before a syntax error are still checked: one run shows the
	 * user everything that needs fixing. */
	for (size_t i = 0; ys && i < ys->ndocs; i++)
		validate_doc(&v, ys->docs[i].root, flags, arr, false);
	bm_vctx_fini(&v);
	bm_ystream_free(ys);
	if (v.oom || errs->oom) {
		json_decref(arr);
		return -ENOMEM;
	}
	if (r || bm_errlist_count(errs) != before) {
		json_decref(arr);
		return -EINVAL;
	}
	*out = arr;
	return 0;
}

static const char *meta_str(const json_t *res, const char *key)
{
	return json_string_value(json_object_get(json_object_get(res, "metadata"), key));
}

const char *bm_res_kind(const json_t *res)
{
	return json_string_value(json_object_get(res, "kind"));
}

const char *bm_res_name(const json_t *res)
{
	return meta_str(res, "name");
}

const char *bm_res_namespace(const json_t *res)
{
	return meta_str(res, "namespace");
}
