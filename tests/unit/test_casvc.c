/* The CA service (agent/casvc.c) and the store's key/value records and
 * one-time tokens (lib/store.c): wire format, tokens, the authorization
 * decision table, and a real TLS round trip with a CA that goes away. */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/pem.h>
#include "../../agent/casvc.h"
#include "diag.h"
#include "resource.h"
#include "store.h"
#include "unit.h"

#define TD "cluster.local"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- wire format */

static void test_casvc_frames(void)
{
	json_t *req = bm_casvc_req_sign("ns1", "sa1", 3600, "-----BEGIN CERTIFICATE REQUEST-----\n"), *msg = NULL;
	char *buf = NULL, why[128], *pem = NULL;
	size_t len = 0, used = 0;
	json_t *ans;

	CU_ASSERT_EQUAL_FATAL(bm_casvc_frame_encode(req, &buf, &len), 0);
	CU_ASSERT_EQUAL(((unsigned char)buf[0] << 24 | (unsigned char)buf[1] << 16 | (unsigned char)buf[2] << 8 |
			 (unsigned char)buf[3]), (int)len - 4);
	/* Every prefix is "incomplete", with the total size once the header is in. */
	for (size_t i = 0; i < len; i++) {
		CU_ASSERT_EQUAL(bm_casvc_frame_decode(buf, i, &msg, &used), -EAGAIN);
		CU_ASSERT_EQUAL(used, i < 4 ? 4 : len);
	}
	CU_ASSERT_EQUAL_FATAL(bm_casvc_frame_decode(buf, len, &msg, &used), 0);
	CU_ASSERT_EQUAL(used, len);
	CU_ASSERT_TRUE(json_equal(msg, req));
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(msg, "op")), "sign");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(msg, "ttl")), 3600);
	json_decref(msg);
	free(buf);

	/* Announced length over 64 KiB: refused before reading it. */
	CU_ASSERT_EQUAL(bm_casvc_frame_decode("\x00\x01\x00\x01{}", 6, &msg, &used), -EMSGSIZE);
	CU_ASSERT_EQUAL(bm_casvc_frame_decode("\x00\x00\x00\x02[]", 6, &msg, &used), -EBADMSG);
	CU_ASSERT_EQUAL(bm_casvc_frame_decode("\x00\x00\x00\x03{x}", 7, &msg, &used), -EBADMSG);
	CU_ASSERT_EQUAL(bm_casvc_frame_decode("\x00\x00\x00\x02{}", 6, &msg, &used), 0);
	json_decref(msg);
	{
		/* Encoding refuses what the peer would refuse. */
		char *big = malloc(BM_CASVC_MSG_MAX + 1);
		json_t *j;

		memset(big, 'a', BM_CASVC_MSG_MAX);
		big[BM_CASVC_MSG_MAX] = '\0';
		j = json_pack("{s:s}", "csr", big);
		CU_ASSERT_EQUAL(bm_casvc_frame_encode(j, &buf, &len), -EMSGSIZE);
		json_decref(j);
		free(big);
	}
	json_decref(req);

	ans = bm_casvc_answer_ok("PEM");
	CU_ASSERT_EQUAL(bm_casvc_answer_parse(ans, &pem, why, sizeof(why)), 0);
	CU_ASSERT_STRING_EQUAL(pem, "PEM");
	free(pem);
	json_decref(ans);
	ans = bm_casvc_answer_err(-EPERM, "no workload");
	CU_ASSERT_EQUAL(bm_casvc_answer_parse(ans, &pem, why, sizeof(why)), -EPERM);
	CU_ASSERT_STRING_EQUAL(why, "no workload");
	CU_ASSERT_PTR_NULL(pem);
	json_object_set_new(ans, "v", json_integer(2));
	CU_ASSERT_EQUAL(bm_casvc_answer_parse(ans, &pem, why, sizeof(why)), -EPROTO);
	json_decref(ans);
	ans = json_pack("{s:i,s:b}", "v", 1, "ok", 1); /* ok without a certificate */
	CU_ASSERT_EQUAL(bm_casvc_answer_parse(ans, &pem, why, sizeof(why)), -EPROTO);
	json_decref(ans);

	req = bm_casvc_req_join("node2", "tok", "csr");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(req, "node")), "node2");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(req, "v")), BM_CASVC_VERSION);
	json_decref(req);
}

static void test_casvc_names(void)
{
	static const struct {
		const char *node;
		int ok;
	} cases[] = {
		{ "node2", 1 }, { "ip-10-0-0-1.ec2.internal", 1 }, { "", 0 }, { "Node2", 0 }, { "a/b", 0 },
		{ "..", 0 },    { ".", 0 },                        { "n_1", 0 }, { "n:1", 0 },
	};
	char id[BM_SPIFFE_ID_MAX + 1];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CU_ASSERT_EQUAL(bm_casvc_node_id(TD, cases[i].node, id, sizeof(id)) == 0, cases[i].ok);
	CU_ASSERT_EQUAL(bm_casvc_node_id(TD, "node2", id, sizeof(id)), 0);
	CU_ASSERT_STRING_EQUAL(id, "spiffe://cluster.local/bpfmesh/node/node2");
}

/* ---------------------------------------------------------------- key/value, tokens */

static void test_store_kv_file(void)
{
	char dir[] = "/tmp/bm-kv-XXXXXX", *v = NULL, big[300];
	struct bm_store *s;
	uint64_t gen = 1;
	json_t *list = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	CU_ASSERT_EQUAL_FATAL(bm_store_open(dir, &s), 0);
	CU_ASSERT_EQUAL(bm_store_kv_get(s, "nodes/n1/record", &v), -ENOENT);
	CU_ASSERT_EQUAL(bm_store_kv_put(s, "nodes/n1/record", "{\"a\":1}"), 0);
	CU_ASSERT_EQUAL(bm_store_kv_get(s, "nodes/n1/record", &v), 0);
	CU_ASSERT_STRING_EQUAL(v, "{\"a\":1}");
	free(v);
	CU_ASSERT_EQUAL(bm_store_kv_put(s, "nodes/n1/record", "second"), 0);
	CU_ASSERT_EQUAL(bm_store_kv_get(s, "nodes/n1/record", &v), 0);
	CU_ASSERT_STRING_EQUAL(v, "second");
	free(v);
	/* Records are not configuration: no generation, nothing listed. */
	CU_ASSERT_EQUAL(bm_store_generation(s, &gen), 0);
	CU_ASSERT_EQUAL(gen, 0);
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 0);
	json_decref(list);
	/* One deleter wins. */
	CU_ASSERT_EQUAL(bm_store_kv_del(s, "nodes/n1/record"), 0);
	CU_ASSERT_EQUAL(bm_store_kv_del(s, "nodes/n1/record"), -ENOENT);
	CU_ASSERT_EQUAL(bm_store_kv_get(s, "nodes/n1/record", &v), -ENOENT);
	/* Keys never leave <dir>/kv. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	{
		const char *bad[] = { "", "/abs", "a//b", "a/", "../x", "a/../b", "a/./b", ".", "a b", "a\\b",
				      big };

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			CU_ASSERT_EQUAL(bm_store_kv_put(s, bad[i], "x"), -EINVAL);
			CU_ASSERT_EQUAL(bm_store_kv_get(s, bad[i], &v), -EINVAL);
			CU_ASSERT_EQUAL(bm_store_kv_del(s, bad[i]), -EINVAL);
		}
	}
	CU_ASSERT_EQUAL(bm_store_kv_put(s, "a.b/c-d_e", "ok"), 0);
	bm_store_close(s);
	rm_tree(dir);
}

static void test_store_tokens(void)
{
	char dir[] = "/tmp/bm-tok-XXXXXX", t1[BM_STORE_TOKEN_HEX + 1], t2[BM_STORE_TOKEN_HEX + 1], *rec = NULL;
	struct bm_store *s;
	time_t now = 1700000000;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	CU_ASSERT_EQUAL_FATAL(bm_store_open(dir, &s), 0);
	CU_ASSERT_EQUAL_FATAL(bm_store_token_create(s, "nodes/n2/join-token", 3600, now, t1), 0);
	CU_ASSERT_EQUAL(strlen(t1), 64);
	CU_ASSERT_EQUAL(strspn(t1, "0123456789abcdef"), 64);
	/* The store holds the hash and the expiry, never the token. */
	CU_ASSERT_EQUAL_FATAL(bm_store_kv_get(s, "nodes/n2/join-token", &rec), 0);
	CU_ASSERT_PTR_NULL(strstr(rec, t1));
	CU_ASSERT_PTR_NOT_NULL(strstr(rec, "\"sha256\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(rec, "\"expires\":1700003600"));
	free(rec);
	/* Wrong, short or missing tokens: refused, the record stays. */
	strcpy(t2, t1);
	t2[0] = t2[0] == 'a' ? 'b' : 'a';
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", t2, now), -EPERM);
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", "abc", now), -EPERM);
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", NULL, now), -EPERM);
	/* Another node's key does not take this node's token. */
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n3/join-token", t1, now), -ENOENT);
	/* The right one works once. */
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", t1, now + 3599), 0);
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", t1, now + 3599), -ENOENT);
	/* Expired: refused and removed. */
	CU_ASSERT_EQUAL_FATAL(bm_store_token_create(s, "nodes/n2/join-token", 60, now, t2), 0);
	CU_ASSERT_NOT_EQUAL(strcmp(t1, t2), 0);
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", t2, now + 60), -EKEYEXPIRED);
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", t2, now), -ENOENT);
	/* A new token replaces an unused one. */
	CU_ASSERT_EQUAL_FATAL(bm_store_token_create(s, "nodes/n2/join-token", 60, now, t1), 0);
	CU_ASSERT_EQUAL_FATAL(bm_store_token_create(s, "nodes/n2/join-token", 60, now, t2), 0);
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", t1, now), -EPERM);
	CU_ASSERT_EQUAL(bm_store_token_redeem(s, "nodes/n2/join-token", t2, now), 0);
	CU_ASSERT_EQUAL(bm_store_token_create(s, "nodes/n2/join-token", 0, now, t1), -EINVAL);
	bm_store_close(s);
	rm_tree(dir);
}

/* ---------------------------------------------------------------- the server's decisions */

struct env {
	char dir[64], url[96], cadir[96];
	struct bm_ca *ca;
	struct bm_store *store;
	struct bm_casvc *svc;
};

static const char wes_yaml[] =
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: srv, namespace: a}\n"
	"spec: {address: 10.0.2.2, serviceAccount: server, labels: {app: srv, bpfmesh.io/node: node2}}\n"
	"---\n"
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: oth, namespace: a}\n"
	"spec: {address: 10.0.3.2, serviceAccount: other, labels: {bpfmesh.io/node: node3}}\n"
	"---\n"
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: dflt, namespace: b}\n"
	"spec: {address: 10.0.2.3, labels: {bpfmesh.io/node: node2}}\n"
	"---\n"
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: nolabel, namespace: a}\n"
	"spec: {address: 10.0.2.4, serviceAccount: unlabelled}\n";

static void env_open(struct env *e)
{
	struct bm_errlist errs = { 0 };
	json_t *res = NULL;

	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "/tmp/bm-casvc-XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(e->dir));
	snprintf(e->url, sizeof(e->url), "file://%s/store", e->dir);
	snprintf(e->cadir, sizeof(e->cadir), "%s/ca", e->dir);
	CU_ASSERT_EQUAL_FATAL(bm_ca_load_or_create(e->cadir, TD, &e->ca), 0);
	CU_ASSERT_EQUAL_FATAL(bm_store_open(e->url, &e->store), 0);
	CU_ASSERT_EQUAL_FATAL(bm_resources_parse(wes_yaml, strlen(wes_yaml), "t.yaml", 0, &res, &errs), 0);
	bm_errlist_print(&errs, stderr);
	bm_errlist_free(&errs);
	CU_ASSERT_EQUAL_FATAL(bm_store_apply(e->store, res, NULL), 0);
	json_decref(res);
	CU_ASSERT_EQUAL_FATAL(bm_casvc_new(e->ca, e->url, 0, &e->svc), 0);
}

static void env_close(struct env *e)
{
	bm_casvc_free(e->svc);
	bm_store_close(e->store);
	bm_ca_free(e->ca);
	rm_tree(e->dir);
}

static X509 *pem_x509(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);

	BIO_free(b);
	return x;
}

static long stat_of(struct env *e, const char *k)
{
	json_t *j = bm_casvc_stats_json(e->svc);
	long v = (long)json_integer_value(json_object_get(j, k));

	json_decref(j);
	return v;
}

/* Ask the handler; 0 and *cert (may be NULL) or the answer's -errno. */
static int handle(struct env *e, X509 *peer, json_t *req, time_t now, X509 **cert)
{
	json_t *ans = bm_casvc_handle(e->svc, peer, req, now);
	char why[256], *pem = NULL;
	int err = bm_casvc_answer_parse(ans, &pem, why, sizeof(why));

	if (cert)
		*cert = pem ? pem_x509(pem) : NULL;
	free(pem);
	json_decref(ans);
	json_decref(req);
	return err;
}

/* A node certificate through the real join path. */
static X509 *join(struct env *e, const char *node, time_t now, EVP_PKEY **key_out)
{
	char id[BM_SPIFFE_ID_MAX + 1], key[128], tok[BM_STORE_TOKEN_HEX + 1], *csr = NULL;
	EVP_PKEY *k = NULL;
	X509 *x = NULL;

	bm_casvc_node_id(TD, node, id, sizeof(id));
	bm_casvc_token_key(node, key, sizeof(key));
	CU_ASSERT_EQUAL_FATAL(bm_store_token_create(e->store, key, 3600, now, tok), 0);
	CU_ASSERT_EQUAL_FATAL(bm_csr_create(id, &k, &csr), 0);
	CU_ASSERT_EQUAL(handle(e, NULL, bm_casvc_req_join(node, tok, csr), now, &x), 0);
	/* The same token again: refused (one use). */
	CU_ASSERT_EQUAL(handle(e, NULL, bm_casvc_req_join(node, tok, csr), now, NULL), -EPERM);
	free(csr);
	if (key_out)
		*key_out = k;
	else
		EVP_PKEY_free(k);
	return x;
}

static void test_casvc_authz_table(void)
{
	struct env e;
	time_t now = time(NULL);
	X509 *n2, *n3, *n2_expired = NULL, *workload = NULL, *foreign = NULL;
	struct bm_ca *other = NULL;
	char other_dir[128], id[BM_SPIFFE_ID_MAX + 1];
	EVP_PKEY *k;

	env_open(&e);
	n2 = join(&e, "node2", now, NULL);
	n3 = join(&e, "node3", now, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(n2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(n3);
	CU_ASSERT_EQUAL(bm_x509_uri_san(n2, id, sizeof(id)), 0);
	CU_ASSERT_STRING_EQUAL(id, "spiffe://cluster.local/bpfmesh/node/node2");
	/* Peers that must not pass: expired, a workload SVID, another CA's node cert. */
	k = EVP_EC_gen("P-256");
	CU_ASSERT_EQUAL(bm_ca_issue(e.ca, "spiffe://cluster.local/bpfmesh/node/node2", k, 60, now - 3600,
				    &n2_expired), 0);
	CU_ASSERT_EQUAL(bm_ca_issue(e.ca, "spiffe://cluster.local/ns/a/sa/server", k, 3600, now, &workload), 0);
	snprintf(other_dir, sizeof(other_dir), "%s/other-ca", e.dir);
	CU_ASSERT_EQUAL_FATAL(bm_ca_load_or_create(other_dir, TD, &other), 0);
	CU_ASSERT_EQUAL(bm_ca_issue(other, "spiffe://cluster.local/bpfmesh/node/node2", k, 3600, now, &foreign), 0);
	EVP_PKEY_free(k);

	{
		const struct {
			const char *what;
			X509 *peer;
			const char *ns, *sa, *csr_for; /* csr_for NULL: the requested identity */
			int want;
		} cases[] = {
			{ "identity on the node", n2, "a", "server", NULL, 0 },
			{ "default service account on the node", n2, "b", "default", NULL, 0 },
			{ "identity on another node", n2, "a", "other", NULL, -EPERM },
			{ "node cert of another node", n3, "a", "server", NULL, -EPERM },
			{ "expired node cert", n2_expired, "a", "server", NULL, -EPERM },
			{ "no client cert", NULL, "a", "server", NULL, -EPERM },
			{ "workload SVID as client cert", workload, "a", "server", NULL, -EPERM },
			{ "node cert of another CA", foreign, "a", "server", NULL, -EPERM },
			{ "CSR SAN differs from the request", n2, "a", "server",
			  "spiffe://cluster.local/ns/a/sa/other", -EPERM },
			{ "CSR for a node identity", n2, "a", "server", "spiffe://cluster.local/bpfmesh/node/node2",
			  -EPERM },
			{ "no such workload", n2, "a", "nobody", NULL, -EPERM },
			{ "workload without a node label", n2, "a", "unlabelled", NULL, -EPERM },
			{ "bad namespace", n2, "a/b", "server", "spiffe://cluster.local/ns/a/sa/server", -EINVAL },
		};
		long refused0 = stat_of(&e, "refused"), signed0 = stat_of(&e, "signed"), nref = 0, nsig = 0;

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			char want_id[BM_SPIFFE_ID_MAX + 1] = "spiffe://cluster.local/ns/a/sa/x", *csr = NULL;
			X509 *x = NULL;
			int got;

			bm_spiffe_id_build(TD, cases[i].ns, cases[i].sa, want_id, sizeof(want_id));
			CU_ASSERT_EQUAL_FATAL(bm_csr_create(cases[i].csr_for ? cases[i].csr_for : want_id, &k, &csr), 0);
			got = handle(&e, cases[i].peer, bm_casvc_req_sign(cases[i].ns, cases[i].sa, 600, csr), now, &x);
			if (got != cases[i].want)
				fprintf(stderr, "\n  case '%s': got %d, want %d\n", cases[i].what, got, cases[i].want);
			CU_ASSERT_EQUAL(got, cases[i].want);
			if (!got) {
				char san[BM_SPIFFE_ID_MAX + 1];

				CU_ASSERT_PTR_NOT_NULL_FATAL(x);
				CU_ASSERT_EQUAL(X509_check_private_key(x, k), 1);
				CU_ASSERT_EQUAL(bm_x509_uri_san(x, san, sizeof(san)), 0);
				CU_ASSERT_STRING_EQUAL(san, want_id);
				CU_ASSERT_EQUAL(X509_verify(x, X509_get0_pubkey(e.ca->cert)), 1);
				nsig++;
			} else {
				nref++;
			}
			X509_free(x);
			EVP_PKEY_free(k);
			free(csr);
		}
		CU_ASSERT_EQUAL(stat_of(&e, "refused") - refused0, nref);
		CU_ASSERT_EQUAL(stat_of(&e, "signed") - signed0, nsig);
	}

	/* Renewal: a node renews itself only, with a valid node certificate. */
	{
		char *csr = NULL;
		X509 *x = NULL;

		CU_ASSERT_EQUAL_FATAL(bm_csr_create("spiffe://cluster.local/bpfmesh/node/node2", &k, &csr), 0);
		CU_ASSERT_EQUAL(handle(&e, n2, bm_casvc_req_renew(csr), now, &x), 0);
		CU_ASSERT_PTR_NOT_NULL(x);
		X509_free(x);
		CU_ASSERT_EQUAL(handle(&e, n3, bm_casvc_req_renew(csr), now, NULL), -EPERM);
		CU_ASSERT_EQUAL(handle(&e, n2_expired, bm_casvc_req_renew(csr), now, NULL), -EPERM);
		CU_ASSERT_EQUAL(handle(&e, NULL, bm_casvc_req_renew(csr), now, NULL), -EPERM);
		/* A removed node (meshctl node remove) gets nothing more. */
		CU_ASSERT_EQUAL(bm_store_kv_del(e.store, "nodes/node2/record"), 0);
		CU_ASSERT_EQUAL(handle(&e, n2, bm_casvc_req_renew(csr), now, NULL), -EPERM);
		EVP_PKEY_free(k);
		free(csr);
		CU_ASSERT_EQUAL_FATAL(bm_csr_create("spiffe://cluster.local/ns/a/sa/server", &k, &csr), 0);
		CU_ASSERT_EQUAL(handle(&e, n2, bm_casvc_req_sign("a", "server", 600, csr), now, NULL), -EPERM);
		EVP_PKEY_free(k);
		free(csr);
	}

	/* Join: a bad CSR does not burn the token; a token is for its node only. */
	{
		char tok[BM_STORE_TOKEN_HEX + 1], *csr = NULL;

		CU_ASSERT_EQUAL_FATAL(bm_store_token_create(e.store, "nodes/node4/join-token", 3600, now, tok), 0);
		CU_ASSERT_EQUAL_FATAL(bm_csr_create("spiffe://cluster.local/bpfmesh/node/node5", &k, &csr), 0);
		CU_ASSERT_EQUAL(handle(&e, NULL, bm_casvc_req_join("node4", tok, csr), now, NULL), -EPERM);
		CU_ASSERT_EQUAL(handle(&e, NULL, bm_casvc_req_join("node5", tok, csr), now, NULL), -EPERM);
		CU_ASSERT_EQUAL(handle(&e, NULL, bm_casvc_req_join("Bad/Name", tok, csr), now, NULL), -EINVAL);
		EVP_PKEY_free(k);
		free(csr);
		CU_ASSERT_EQUAL_FATAL(bm_csr_create("spiffe://cluster.local/bpfmesh/node/node4", &k, &csr), 0);
		CU_ASSERT_EQUAL(handle(&e, NULL, bm_casvc_req_join("node4", tok, csr), now + 3600, NULL), -EPERM);
		CU_ASSERT_EQUAL(bm_store_token_create(e.store, "nodes/node4/join-token", 3600, now, tok), 0);
		CU_ASSERT_EQUAL(handle(&e, NULL, bm_casvc_req_join("node4", tok, csr), now, NULL), 0);
		EVP_PKEY_free(k);
		free(csr);
	}
	{
		json_t *bad = json_pack("{s:i,s:s,s:s}", "v", 9, "op", "sign", "csr", "x");

		CU_ASSERT_EQUAL(handle(&e, n2, bad, now, NULL), -EPROTO);
		bad = json_pack("{s:i,s:s,s:s}", "v", 1, "op", "delete-everything", "csr", "x");
		CU_ASSERT_EQUAL(handle(&e, n2, bad, now, NULL), -EINVAL);
	}
	X509_free(n2);
	X509_free(n3);
	X509_free(n2_expired);
	X509_free(workload);
	X509_free(foreign);
	bm_ca_free(other);
	env_close(&e);
}

/* ---------------------------------------------------------------- over TLS */

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_casvc_tls_round_trip(void)
{
	struct env e;
	char addr[32], bundle[128], state[128], tok[BM_STORE_TOKEN_HEX + 1], path[200];
	struct bm_caclient_opts co = { .addr = addr, .bundle = bundle, .node = "node2", .state_dir = state,
				       .trust_domain = TD, .join_token = tok };
	struct bm_caclient *c = NULL, *c2 = NULL;
	EVP_PKEY *k;
	X509 *x = NULL;
	struct stat st;
	FILE *f;
	uint64_t t0;
	int err = -1;

	env_open(&e);
	for (int i = 0; i < 20 && err; i++) {
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", 20000 + (int)(ms_now() * 7919 % 30000));
		err = bm_casvc_listen(e.svc, addr);
	}
	CU_ASSERT_EQUAL_FATAL(err, 0);
	snprintf(bundle, sizeof(bundle), "%s/bundle.pem", e.dir);
	snprintf(state, sizeof(state), "%s/node2", e.dir);
	mkdir(state, 0700);
	f = fopen(bundle, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	PEM_write_X509(f, e.ca->cert);
	fclose(f);
	CU_ASSERT_EQUAL_FATAL(bm_store_token_create(e.store, "nodes/node2/join-token", 600, time(NULL), tok), 0);

	CU_ASSERT_EQUAL_FATAL(bm_caclient_new(&co, &c), 0);
	CU_ASSERT_EQUAL(bm_caclient_node_cert(c, time(NULL)), 0);
	snprintf(path, sizeof(path), "%s/%s", state, BM_NODE_KEY_FILE);
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/%s", state, BM_NODE_CERT_FILE);
	CU_ASSERT_EQUAL(stat(path, &st), 0);

	/* The issuer callback: allowed identity, then one with no pod here. */
	k = EVP_EC_gen("P-256");
	CU_ASSERT_EQUAL(bm_caclient_issue(c, "spiffe://cluster.local/ns/a/sa/server", k, 600, time(NULL), &x, NULL), 0);
	CU_ASSERT_PTR_NOT_NULL(x);
	CU_ASSERT_EQUAL(X509_check_private_key(x, k), 1);
	X509_free(x);
	x = NULL;
	CU_ASSERT_EQUAL(bm_caclient_issue(c, "spiffe://cluster.local/ns/a/sa/other", k, 600, time(NULL), &x, NULL),
			-EAGAIN);
	CU_ASSERT_PTR_NULL(x);
	/* Refused identities are held back, not asked for at every call. */
	t0 = ms_now();
	CU_ASSERT_EQUAL(bm_caclient_issue(c, "spiffe://cluster.local/ns/a/sa/other", k, 600, time(NULL), &x, NULL),
			-EAGAIN);
	CU_ASSERT(ms_now() - t0 < 50);
	{
		json_t *j = bm_caclient_request_json(c, "a", "other", 600);

		CU_ASSERT_FALSE(json_is_true(json_object_get(j, "ok")));
		CU_ASSERT_PTR_NOT_NULL(strstr(json_string_value(json_object_get(j, "error")), "node"));
		json_decref(j);
	}

	/* The figure in docs/identity.md §8: a whole exchange (connect, TLS 1.3
	 * with client certificate, CSR check, signing, answer, checks). */
	t0 = ms_now();
	for (int i = 0; i < 20; i++) {
		CU_ASSERT_EQUAL(bm_caclient_issue(c, "spiffe://cluster.local/ns/a/sa/server", k, 600, time(NULL), &x,
						  NULL), 0);
		X509_free(x);
		x = NULL;
	}
	fprintf(stderr, "\n  CSR exchange over TLS (both ends here): %.1f ms each\n", (ms_now() - t0) / 20.0);

	/* A restarted node loads its node certificate: no token needed. */
	co.join_token = NULL;
	CU_ASSERT_EQUAL_FATAL(bm_caclient_new(&co, &c2), 0);
	CU_ASSERT_EQUAL(bm_caclient_node_cert(c2, time(NULL)), 0);
	CU_ASSERT_EQUAL(bm_caclient_issue(c2, "spiffe://cluster.local/ns/a/sa/server", k, 600, time(NULL), &x, NULL), 0);
	X509_free(x);
	x = NULL;

	/* The CA goes away: the first request fails within the bound, the next
	 * ones back off without touching the network. */
	bm_casvc_free(e.svc);
	e.svc = NULL;
	t0 = ms_now();
	err = bm_caclient_issue(c2, "spiffe://cluster.local/ns/b/sa/default", k, 600, time(NULL), &x, NULL);
	CU_ASSERT(err == -ECONNREFUSED || err == -ETIMEDOUT);
	CU_ASSERT(ms_now() - t0 <= BM_CASVC_TIMEOUT_MS + 200);
	t0 = ms_now();
	CU_ASSERT_EQUAL(bm_caclient_issue(c2, "spiffe://cluster.local/ns/b/sa/default", k, 600, time(NULL), &x, NULL),
			-EAGAIN);
	CU_ASSERT(ms_now() - t0 < 50);
	{
		json_t *j = bm_caclient_status_json(c2);

		CU_ASSERT_PTR_NOT_NULL(strstr(json_string_value(json_object_get(j, "last_error")), "connect"));
		CU_ASSERT_STRING_NOT_EQUAL(json_string_value(json_object_get(j, "node_cert_serial")), "");
		json_decref(j);
	}
	EVP_PKEY_free(k);
	bm_caclient_free(c2);
	bm_caclient_free(c);
	env_close(&e);
}

BM_SUITE(casvc,
	 BM_CASE(test_casvc_frames),
	 BM_CASE(test_casvc_names),
	 BM_CASE(test_store_kv_file),
	 BM_CASE(test_store_tokens),
	 BM_CASE(test_casvc_authz_table),
	 BM_CASE(test_casvc_tls_round_trip))
