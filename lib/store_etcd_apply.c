/* etcd v3 store, writes: bm_etcd_apply and bm_etcd_delete (store_etcd.c has
 * the requests and reads they build on).
 *
 * Writes are one transaction each, guarded by the mod_revision of the
 * generation key and of every resource key they read: a concurrent writer
 * makes the compare fail, nothing of ours is written, and the operation is
 * redone on fresh data a bounded number of times. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "resource.h"
#include "store_etcd.h"
#include "store_etcd_int.h"

/* Conflicting writers are other meshctl runs: a handful of retries is plenty. */
#define APPLY_ATTEMPTS 8
/* etcd's --max-txn-ops default; every apply reads and compares one key per
 * resource plus the generation key in one transaction. */
#define MAX_TXN_OPS 128
#define COMPARE_FAILED 1      /* internal: the transaction lost a race */

void (*bm_etcd_test_before_commit)(void *arg);
void *bm_etcd_test_arg;

/* ---------------------------------------------------------------- apply */

/* Transaction outcome: 0, COMPARE_FAILED, or a negative errno. */
static int commit(struct bm_etcd *e, json_t *compare, json_t *success)
{
	json_t *req = json_pack("{s:o,s:o}", "compare", compare, "success", success), *resp = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	if (bm_etcd_test_before_commit)
		bm_etcd_test_before_commit(bm_etcd_test_arg);
	r = etcd_post(e, "kv/txn", req, &resp, false);
	json_decref(req);
	if (!r && !json_is_true(json_object_get(resp, "succeeded")))
		r = COMPARE_FAILED;
	json_decref(resp);
	return r;
}

char *etcd_resource_key(struct bm_etcd *e, const char *kind, const char *ns, const char *name)
{
	char *k;

	return asprintf(&k, "%s%s/%s/%s", e->res_prefix, kind, ns, name) < 0 ? NULL : k;
}

/* One read-compute-commit round. keys[i] is resources[i]'s key; ukeys the
 * distinct keys (a document set may name one resource twice: the later
 * document then sees the earlier one, as with the file store). */
static int apply_once(struct bm_etcd *e, json_t *resources, char **keys, char **ukeys,
		      size_t nu, json_t *out, bool dry)
{
	json_t *ops = json_array(), *responses = NULL, *current = json_object(), *dirty = json_object();
	json_t *compare = json_array(), *puts = json_array(), *res;
	uint64_t gen;
	int64_t gen_mod;
	bool changed = false;
	size_t i;
	int r = -ENOMEM;

	if (!ops || !current || !dirty || !compare || !puts)
		goto out;
	json_array_append_new(ops, etcd_op_range(e->gen_key, NULL));
	for (i = 0; i < nu; i++)
		json_array_append_new(ops, etcd_op_range(ukeys[i], NULL));
	r = etcd_read_txn(e, json_incref(ops), &responses, NULL);
	if (r)
		goto out;
	r = etcd_parse_generation(e, etcd_range_kvs(responses, 0), &gen, &gen_mod);
	if (r)
		goto out;
	r = -ENOMEM;
	if (json_array_append_new(compare, etcd_cmp_mod(e->gen_key, gen_mod)))
		goto out;
	for (i = 0; i < nu; i++) {
		json_t *kv = json_array_get(etcd_range_kvs(responses, i + 1), 0);
		size_t len;
		char *v = kv ? etcd_b64_decode(json_string_value(json_object_get(kv, "value")), &len)
			     : NULL;

		/* Absent keys compare as mod_revision 0: created by nobody else. */
		if (json_array_append_new(compare, etcd_cmp_mod(ukeys[i], etcd_jint(json_object_get(
								kv, "mod_revision"))))) {
			free(v);
			goto out;
		}
		/* A stored value that no longer reads is replaced, not trusted. */
		if (v)
			json_object_set_new(current, ukeys[i], json_loadb(v, len, 0, NULL));
		free(v);
	}
	json_array_clear(out);
	json_array_foreach(resources, i, res) {
		json_t *old = json_object_get(current, keys[i]), *stamped;
		const char *action = !json_is_object(old) ? "created" :
				     bm_store_same_content(old, res) ? "unchanged" : "configured";

		if (strcmp(action, "unchanged")) {
			stamped = bm_store_stamp(res, old, gen + 1);
			if (!stamped || json_object_set_new(current, keys[i], stamped) ||
			    json_object_set_new(dirty, keys[i], json_true()))
				goto out;
			changed = true;
		}
		if (json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "kind",
							 bm_res_kind(res), "namespace",
							 bm_res_namespace(res), "name",
							 bm_res_name(res), "action", action)))
			goto out;
	}
	r = 0;
	if (dry || !changed)
		goto out;
	/* Final content per key, each put once: etcd refuses a key twice. */
	for (i = 0; i < nu; i++) {
		json_t *obj = json_object_get(current, ukeys[i]);
		char *text;

		if (!json_object_get(dirty, ukeys[i]))
			continue; /* unchanged */
		text = json_dumps(obj, JSON_COMPACT);
		r = text ? json_array_append_new(puts, etcd_op_put(ukeys[i], text)) : -1;
		free(text);
		if (r) {
			r = -ENOMEM;
			goto out;
		}
	}
	{
		char g[24];

		snprintf(g, sizeof(g), "%" PRIu64, gen + 1);
		/* In the same transaction: the bump and the resources land together. */
		if (json_array_append_new(puts, etcd_op_put(e->gen_key, g))) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = commit(e, json_incref(compare), json_incref(puts));
out:
	json_decref(ops);
	json_decref(responses);
	json_decref(current);
	json_decref(dirty);
	json_decref(compare);
	json_decref(puts);
	return r;
}

int bm_etcd_apply(struct bm_etcd *e, json_t *resources, json_t **results, bool dry)
{
	size_t n = json_array_size(resources), nu = 0, i;
	char **keys = calloc(n + 1, sizeof(*keys)), **ukeys = calloc(n + 1, sizeof(*ukeys));
	json_t *out = json_array(), *res;
	int r = -ENOMEM;

	if (!keys || !ukeys || !out)
		goto out;
	json_array_foreach(resources, i, res) {
		const struct bm_kind *k;
		const char *ns, *name;
		bool seen = false;

		r = bm_store_res_identity(res, &k, &ns, &name);
		if (r)
			goto out;
		keys[i] = etcd_resource_key(e, k->kind, ns, name);
		if (!keys[i]) {
			r = -ENOMEM;
			goto out;
		}
		for (size_t j = 0; j < nu && !seen; j++)
			seen = !strcmp(ukeys[j], keys[i]);
		if (!seen)
			ukeys[nu++] = keys[i];
	}
	if (nu + 1 > MAX_TXN_OPS) {
		fprintf(stderr, "bpfmesh store: etcd %s: %zu resources in one apply; one etcd "
			"transaction holds at most %d (etcd --max-txn-ops): apply them in parts\n",
			e->url, nu, MAX_TXN_OPS - 1);
		r = -E2BIG;
		goto out;
	}
	for (int attempt = 0; attempt < APPLY_ATTEMPTS; attempt++) {
		r = apply_once(e, resources, keys, ukeys, nu, out, dry);
		if (r != COMPARE_FAILED)
			break;
		usleep(1000u << attempt); /* 1 ms doubling: let the other writer finish */
	}
	if (r == COMPARE_FAILED) {
		fprintf(stderr, "bpfmesh store: etcd %s: other writers kept changing the store; "
			"gave up after %d attempts, nothing applied\n", e->url, APPLY_ATTEMPTS);
		r = -EBUSY;
	}
	if (!r && results)
		*results = json_incref(out);
out:
	for (i = 0; keys && i < n; i++)
		free(keys[i]);
	free(keys);
	free(ukeys);
	json_decref(out);
	return r;
}

int bm_etcd_delete(struct bm_etcd *e, const struct bm_kind *k, const char *ns, const char *name)
{
	char *key = etcd_resource_key(e, k->kind, ns, name), g[24];
	int r = -ENOMEM;

	if (!key)
		return -ENOMEM;
	for (int attempt = 0; attempt < APPLY_ATTEMPTS; attempt++) {
		json_t *responses = NULL, *kv;
		uint64_t gen;
		int64_t gen_mod;

		r = etcd_read_txn(e, json_pack("[o,o]", etcd_op_range(e->gen_key, NULL), etcd_op_range(key, NULL)),
				  &responses, NULL);
		if (!r)
			r = etcd_parse_generation(e, etcd_range_kvs(responses, 0), &gen, &gen_mod);
		kv = json_array_get(etcd_range_kvs(responses, 1), 0);
		if (!r && !kv)
			r = -ENOENT;
		if (!r) {
			snprintf(g, sizeof(g), "%" PRIu64, gen + 1);
			r = commit(e, json_pack("[o,o]", etcd_cmp_mod(e->gen_key, gen_mod),
						etcd_cmp_mod(key, etcd_jint(json_object_get(kv, "mod_revision")))),
				   json_pack("[{s:{s:o}},o]", "request_delete_range", "key",
					     etcd_jkey(key), etcd_op_put(e->gen_key, g)));
		}
		json_decref(responses);
		if (r != COMPARE_FAILED)
			break;
		usleep(1000u << attempt);
	}
	if (r == COMPARE_FAILED) {
		fprintf(stderr, "bpfmesh store: etcd %s: other writers kept changing the store; "
			"gave up deleting %s\n", e->url, key);
		r = -EBUSY;
	}
	free(key);
	return r;
}
