/* Incremental reload (issue #6): the file store's parse cache (only changed
 * files are parsed) and the model's cluster reuse (only services whose
 * inputs changed are rebuilt) must give exactly what a from-scratch listing
 * and build give. A random sequence of adds, changes and deletes of
 * ServiceEntries, WorkloadEntries, DestinationRules and VirtualServices,
 * with files replaced by invalid ones, renamed, and the store reset, is
 * compared with a full rebuild after every step: the listing, its error
 * report, the model, the model's log, and the "same" flags the reconciler
 * trusts. BM_RELOAD_SEED and BM_RELOAD_STEPS vary the run. */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../agent/model.h"
#include "resource.h"
#include "store.h"
#include "store_cache.h"
#include "unit.h"

#define HOSTS 8
#define WES 10

struct world {
	char dir[64];
	struct bm_store *w;     /* meshctl's side: writes */
	struct bm_store *inc;   /* meshd's side: lists through its cache */
	json_t *prev_res;
	struct bm_model prev;
	unsigned seed, seed0;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static unsigned rnd(struct world *w, unsigned n)
{
	return (unsigned)rand_r(&w->seed) % n;
}

static const char *ns_of(unsigned i)
{
	return i % 3 ? "ns1" : "ns2";
}

/* Canonical resource from a json_pack()ed one, as meshctl apply parses it. */
static int apply_obj(struct world *w, json_t *o)
{
	struct bm_errlist errs = { 0 };
	char *text = json_dumps(o, 0);
	json_t *arr = NULL;
	int r;

	json_decref(o);
	r = bm_resources_parse(text, strlen(text), "gen.json", 0, &arr, &errs);
	if (r) {
		bm_errlist_print(&errs, stderr);
		fprintf(stderr, "%s\n", text);
	}
	CU_ASSERT_EQUAL(r, 0);
	bm_errlist_free(&errs);
	free(text);
	if (!r)
		r = bm_store_apply(w->w, arr, NULL);
	CU_ASSERT_EQUAL(r, 0);
	json_decref(arr);
	return r;
}

static json_t *meta(const char *name, const char *ns)
{
	return json_pack("{s:s,s:s}", "name", name, "namespace", ns);
}

static void put_se(struct world *w, unsigned i)
{
	char name[32], host[32], vip[32];
	json_t *spec, *eps = json_array();
	unsigned n = 1 + rnd(w, 4), second = rnd(w, 4) == 0;

	/* A second entry for the same host ("oldest wins"), sometimes. */
	snprintf(name, sizeof(name), second ? "se%ub" : "se%u", i);
	snprintf(host, sizeof(host), "h%u", i);
	snprintf(vip, sizeof(vip), "10.1.0.%u", rnd(w, 5) == 0 ? (i + 1) % HOSTS + 1 : i + 1);
	spec = json_pack("{s:[s],s:[s],s:[{s:i,s:s,s:s}],s:s,s:s}", "hosts", host, "addresses", vip,
			 "ports", "number", 80, "name", "tcp", "protocol", "TCP", "location",
			 "MESH_INTERNAL", "resolution", "STATIC");
	if (rnd(w, 3) == 0)
		json_array_append_new(json_object_get(spec, "ports"),
				      json_pack("{s:i,s:s,s:s}", "number", 8080, "name", "tcp2",
						"protocol", "TCP"));
	if (rnd(w, 3) == 0) {
		char app[16];

		snprintf(app, sizeof(app), "a%u", i);
		json_object_set_new(spec, "workloadSelector", json_pack("{s:{s:s}}", "labels", "app", app));
	} else {
		for (unsigned k = 0; k < n; k++) {
			char a[32];

			snprintf(a, sizeof(a), "10.2.%u.%u", i, 1 + rnd(w, 6));
			json_array_append_new(eps, json_pack("{s:s,s:{s:s}}", "address", a, "labels",
							     "version", rnd(w, 2) ? "v1" : "v2"));
		}
		json_object_set(spec, "endpoints", eps);
	}
	json_decref(eps);
	apply_obj(w, json_pack("{s:s,s:s,s:o,s:o}", "apiVersion", "networking.istio.io/v1beta1",
			       "kind", "ServiceEntry", "metadata", meta(name, ns_of(i)), "spec", spec));
}

static void put_we(struct world *w, unsigned j)
{
	char name[16], addr[32], app[16];

	snprintf(name, sizeof(name), "we%u", j);
	snprintf(addr, sizeof(addr), "10.3.0.%u", 1 + rnd(w, 20));
	snprintf(app, sizeof(app), "a%u", rnd(w, HOSTS));
	apply_obj(w, json_pack("{s:s,s:s,s:o,s:{s:s,s:{s:s,s:s}}}", "apiVersion",
			       "networking.istio.io/v1beta1", "kind", "WorkloadEntry", "metadata",
			       meta(name, ns_of(rnd(w, HOSTS))), "spec", "address", addr, "labels",
			       "app", app, "version", rnd(w, 2) ? "v1" : "v2"));
}

static void put_dr(struct world *w, unsigned i)
{
	static const char *const lb[] = { "ROUND_ROBIN", "RANDOM", "LEAST_REQUEST" };
	char name[16], host[32];
	json_t *subsets = json_pack("[{s:s,s:{s:s}}]", "name", "v1", "labels", "version", "v1");
	int wild = rnd(w, 6) == 0;

	snprintf(name, sizeof(name), wild ? "drwild" : "dr%u", i);
	if (wild)
		snprintf(host, sizeof(host), "*.%s.svc.cluster.local", ns_of(i));
	else
		snprintf(host, sizeof(host), "h%u", i);
	if (rnd(w, 4))
		json_array_append_new(subsets, json_pack("{s:s,s:{s:s}}", "name", "v2", "labels",
							 "version", "v2"));
	apply_obj(w, json_pack("{s:s,s:s,s:o,s:{s:s,s:{s:{s:s}},s:o}}", "apiVersion",
			       "networking.istio.io/v1beta1", "kind", "DestinationRule", "metadata",
			       meta(name, ns_of(i)), "spec", "host", host, "trafficPolicy",
			       "loadBalancer", "simple", lb[rnd(w, 3)], "subsets", subsets));
}

static void put_vs(struct world *w, unsigned i)
{
	char name[16], host[32], other[64];
	unsigned wt = 1 + rnd(w, 99), o = rnd(w, HOSTS);

	snprintf(name, sizeof(name), "vs%u", i);
	snprintf(host, sizeof(host), "h%u", i);
	/* Routes across hosts (and namespaces): one resource's change reaches
	 * services of others. */
	snprintf(other, sizeof(other), "h%u.%s.svc.cluster.local", o, ns_of(o));
	apply_obj(w, json_pack("{s:s,s:s,s:o,s:{s:[s],s:[{s:[{s:{s:s,s:s},s:i},{s:{s:s,s:s},s:i}]}]}}",
			       "apiVersion", "networking.istio.io/v1beta1", "kind", "VirtualService",
			       "metadata", meta(name, ns_of(i)), "spec", "hosts", host, "tcp", "route",
			       "destination", "host", host, "subset", "v1", "weight", (int)wt,
			       "destination", "host", other, "subset", rnd(w, 2) ? "v1" : "v2",
			       "weight", (int)(100 - wt)));
}

/* Path of a random stored resource file (kind dirs in table order). */
static int pick_file(struct world *w, char *path, size_t len)
{
	static const char *const kinds[] = { "ServiceEntry", "WorkloadEntry", "DestinationRule",
					     "VirtualService" };
	char cmd[512];
	FILE *p;
	int n = 0, want;

	snprintf(cmd, sizeof(cmd), "ls -1 %s/resources/%s/*/*.json 2>/dev/null", w->dir,
		 kinds[rnd(w, 4)]);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	want = (int)rnd(w, 8);
	while (fgets(path, (int)len, p)) {
		path[strcspn(path, "\n")] = 0;
		if (n++ == want)
			break;
	}
	pclose(p);
	return n ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w"); /* in place: same inode */

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(text, f);
	fclose(f);
}

static void bump_generation(struct world *w, long delta)
{
	char path[128], buf[32] = "";
	FILE *f;
	long g;

	snprintf(path, sizeof(path), "%s/generation", w->dir);
	f = fopen(path, "r");
	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = 0;
		fclose(f);
	}
	g = atol(buf) + delta;
	snprintf(buf, sizeof(buf), "%ld\n", g < 0 ? 0 : g);
	write_file(path, buf);
}

/* One random change to the store. */
static void step(struct world *w)
{
	char path[512], to[1024];
	unsigned op = rnd(w, 20), i = rnd(w, HOSTS);

	if (op < 3) {
		put_se(w, i);
	} else if (op < 5) {
		put_we(w, rnd(w, WES));
	} else if (op < 7) {
		put_dr(w, i);
	} else if (op < 10) {
		put_vs(w, i);
	} else if (op < 14) {
		/* Deletes, the oldest of two entries for a host among them. */
		static const char *const kinds[] = { "ServiceEntry", "WorkloadEntry",
						     "DestinationRule", "VirtualService" };
		static const char *const fmt[] = { "se%u", "we%u", "dr%u", "vs%u" };
		unsigned k = rnd(w, 4);
		char name[16];

		snprintf(name, sizeof(name), op == 13 ? "se%ub" : fmt[k], k == 1 ? rnd(w, WES) : i);
		bm_store_delete(w->w, op == 13 ? "ServiceEntry" : kinds[k], ns_of(i), name);
		if (k == 1) /* WorkloadEntries live in either namespace */
			bm_store_delete(w->w, kinds[k], "ns1", name), bm_store_delete(w->w, kinds[k], "ns2", name);
	} else if (op == 14 && !pick_file(w, path, sizeof(path))) {
		/* Replaced in place by an invalid resource: a field error. */
		char *slash = strrchr(path, '/'), name[128], ns[64], kind[64], text[1024];

		*slash = 0;
		snprintf(name, sizeof(name), "%.*s", (int)(strlen(slash + 1) - 5), slash + 1);
		snprintf(ns, sizeof(ns), "%s", strrchr(path, '/') + 1);
		*strrchr(path, '/') = 0;
		snprintf(kind, sizeof(kind), "%s", strrchr(path, '/') + 1);
		snprintf(text, sizeof(text),
			 "{\"apiVersion\": \"networking.istio.io/v1beta1\", \"kind\": \"%s\",\n"
			 " \"metadata\": {\"name\": \"%s\", \"namespace\": \"%s\"},\n"
			 " \"spec\": {\"hosts\": [5], \"host\": 7, \"address\": []}}\n", kind, name, ns);
		snprintf(to, sizeof(to), "%s/%s/%s.json", path, ns, name);
		write_file(to, text);
		bump_generation(w, 1);
	} else if (op == 15 && !pick_file(w, path, sizeof(path))) {
		write_file(path, "{\"apiVersion\": \"networking.istio.io/v1beta1\",\n  \"kind\": [\n");
		bump_generation(w, 1);
	} else if (op == 16 && !pick_file(w, path, sizeof(path))) {
		/* Renamed: the file no longer holds what its path names. */
		snprintf(to, sizeof(to), "%.*sx.json", (int)(strlen(path) - 5), path);
		CU_ASSERT_EQUAL(rename(path, to), 0);
		bump_generation(w, 1);
	} else if (op == 17 && !pick_file(w, path, sizeof(path))) {
		/* Deleted by hand. */
		CU_ASSERT_EQUAL(unlink(path), 0);
		bump_generation(w, 1);
	} else if (op == 18) {
		/* Store reset: the generation goes backwards. */
		bump_generation(w, -1000);
	} else {
		put_vs(w, i);
		put_se(w, rnd(w, HOSTS));
	}
}

/* stderr of fn(arg) as a string (malloc'd). */
static char *capture(int (*fn)(void *), void *arg, int *ret)
{
	char tmpl[] = "/tmp/bm-reload-err.XXXXXX";
	int fd = mkstemp(tmpl), saved;
	char *buf = calloc(1, 1 << 16);
	ssize_t n;

	CU_ASSERT_FATAL(fd >= 0 && buf);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	*ret = fn(arg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, (1 << 16) - 1);
	buf[n > 0 ? n : 0] = 0;
	close(fd);
	unlink(tmpl);
	return buf;
}

struct list_arg {
	struct bm_store *s;
	json_t *out;
};

static int do_list(void *p)
{
	struct list_arg *a = p;

	return bm_store_list(a->s, NULL, NULL, &a->out, NULL);
}

static int same_cluster(const struct bm_m_cluster *a, const struct bm_m_cluster *b)
{
	if (strcmp(a->name, b->name) || a->lb != b->lb || a->min_health != b->min_health ||
	    a->max_conns != b->max_conns || a->tls != b->tls || a->n != b->n ||
	    memcmp(&a->od, &b->od, sizeof(a->od)))
		return 0;
	for (uint32_t i = 0; i < a->n; i++)
		if (a->b[i].ip != b->b[i].ip || a->b[i].port != b->b[i].port ||
		    a->b[i].mesh != b->b[i].mesh)
			return 0;
	return 1;
}

static int same_svc(const struct bm_m_service *a, const struct bm_m_service *b)
{
	if (a->vip != b->vip || a->port != b->port || strcmp(a->host, b->host) ||
	    strcmp(a->ns, b->ns) || a->n_dests != b->n_dests)
		return 0;
	for (uint32_t d = 0; d < a->n_dests; d++)
		if (a->d[d].weight != b->d[d].weight || !same_cluster(a->d[d].c, b->d[d].c))
			return 0;
	return 1;
}

static int same_model(const struct bm_model *a, const struct bm_model *b)
{
	if (a->n_svc != b->n_svc || a->n_names != b->n_names || a->warnings != b->warnings)
		return 0;
	for (size_t i = 0; i < a->n_svc; i++)
		if (!same_svc(&a->svc[i], &b->svc[i]))
			return 0;
	for (size_t i = 0; i < a->n_names; i++)
		if (a->names[i].vip != b->names[i].vip || strcmp(a->names[i].ns, b->names[i].ns) ||
		    strcmp(a->names[i].name, b->names[i].name))
			return 0;
	return 1;
}

/* A service marked "same" equals the previous model's at its VIP:port. */
static int same_flags_true(const struct bm_model *m, const struct bm_model *prev)
{
	for (size_t i = 0; i < m->n_svc; i++) {
		char key[16];
		uint64_t j = 0;

		if (!m->svc[i].same)
			continue;
		snprintf(key, sizeof(key), "%08x:%04x", m->svc[i].vip, m->svc[i].port);
		if (bm_strmap_get(&prev->by_key, key, &j) || !j || !same_svc(&m->svc[i], &prev->svc[j - 1]))
			return 0;
	}
	return 1;
}

static char *build_log(const json_t *res, const struct bm_model *prev, struct bm_model *m)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(bm_model_build_inc(res, prev, m, f), 0);
	fclose(f);
	return buf;
}

/* The L7 compiler's finders: indexed (collected registry) and scanning
 * (stamp 0) give the same resource for every host. */
static int finders_agree(const json_t *res)
{
	struct bm_m_registry ix[3] = {}, scan[3];
	static const char *const kinds[] = { "ServiceEntry", "DestinationRule", "VirtualService" };
	int ok = 1;

	for (int k = 0; k < 3; k++) {
		if (bm_m_collect(res, kinds[k], &ix[k]))
			return 0;
		scan[k] = ix[k];
		scan[k].stamp = 0;
	}
	for (unsigned i = 0; i < HOSTS + 1; i++)
		for (unsigned n = 1; n <= 2; n++) {
			char fq[64], ns[8];

			snprintf(ns, sizeof(ns), "ns%u", n);
			snprintf(fq, sizeof(fq), "h%u.%s.svc.cluster.local", i, ns);
			ok &= bm_m_find_se(&ix[0], fq) == bm_m_find_se(&scan[0], fq);
			ok &= bm_m_find_dr(&ix[1], fq, ns) == bm_m_find_dr(&scan[1], fq, ns);
			ok &= bm_m_find_dr(&ix[1], fq, "istio-system") ==
			      bm_m_find_dr(&scan[1], fq, "istio-system");
		}
	for (size_t i = 0; i < ix[0].n; i++)
		ok &= bm_m_find_vs(&ix[2], &ix[0].r[i]) == bm_m_find_vs(&scan[2], &ix[0].r[i]);
	for (int k = 0; k < 3; k++)
		free(ix[k].r);
	return ok;
}

/* After a change: meshd's incremental reload against a from-scratch one. */
static void check(struct world *w, unsigned stepno, size_t *parsed, size_t *listed, size_t *reused)
{
	struct list_arg inc = { w->inc, NULL }, full = { NULL, NULL };
	struct bm_model mi, mf;
	char *err_i, *err_f, *log_i, *log_f;
	int ri, rf, ok;

	err_i = capture(do_list, &inc, &ri);
	CU_ASSERT_EQUAL_FATAL(bm_store_open_ro(w->dir, &full.s), 0);
	err_f = capture(do_list, &full, &rf);
	bm_store_close(full.s);
	CU_ASSERT_EQUAL_FATAL(ri, 0);
	CU_ASSERT_EQUAL_FATAL(rf, 0);
	ok = json_equal(inc.out, full.out) && !strcmp(err_i, err_f);
	if (!ok)
		fprintf(stderr, "step %u (BM_RELOAD_SEED=%u): listing differs\n--- incremental:\n%s"
			"--- full:\n%s", stepno, w->seed0, err_i, err_f);
	CU_ASSERT(ok);
	*parsed += bm_store_list_parsed(w->inc);
	*listed += json_array_size(full.out);

	log_i = build_log(inc.out, &w->prev, &mi);
	log_f = build_log(full.out, NULL, &mf);
	ok = same_model(&mi, &mf) && !strcmp(log_i, log_f) && same_flags_true(&mi, &w->prev);
	if (!ok)
		fprintf(stderr, "step %u (BM_RELOAD_SEED=%u): model differs\n--- incremental:\n%s"
			"--- full:\n%s", stepno, w->seed0, log_i, log_f);
	CU_ASSERT(ok);
	for (size_t i = 0; i < mi.n_svc; i++)
		for (uint32_t d = 0; d < mi.svc[i].n_dests; d++)
			*reused += mi.svc[i].d[d].c->refs > 1;
	CU_ASSERT(finders_agree(full.out));

	/* meshd's order: the new model is built while the old one and its
	 * resources are alive, then replaces them. */
	bm_model_free(&w->prev);
	w->prev = mi;
	json_decref(w->prev_res);
	w->prev_res = inc.out;
	bm_model_free(&mf);
	json_decref(full.out);
	free(err_i);
	free(err_f);
	free(log_i);
	free(log_f);
}

static void test_reload_incremental_equals_full(void)
{
	struct world w = { .seed = 6 };
	const char *env = getenv("BM_RELOAD_SEED");
	unsigned steps = getenv("BM_RELOAD_STEPS") ? (unsigned)atoi(getenv("BM_RELOAD_STEPS")) : 400;
	size_t parsed = 0, listed = 0, reused = 0;

	if (env)
		w.seed = (unsigned)atoi(env);
	w.seed0 = w.seed;
	/* Files here change within milliseconds of being read: trust them
	 * at once (the store's writes rename, a new inode each time). */
	bm_fcache_set_racy_ms(0);
	snprintf(w.dir, sizeof(w.dir), "/tmp/bm-reload-test.XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(w.dir));
	CU_ASSERT_EQUAL_FATAL(bm_store_open(w.dir, &w.w), 0);
	CU_ASSERT_EQUAL_FATAL(bm_store_open_ro(w.dir, &w.inc), 0);
	for (unsigned i = 0; i < HOSTS; i++) {
		put_se(&w, i);
		put_dr(&w, i);
		put_vs(&w, i);
	}
	for (unsigned j = 0; j < WES; j++)
		put_we(&w, j);
	check(&w, 0, &parsed, &listed, &reused);
	for (unsigned s = 1; s <= steps; s++) {
		step(&w);
		if (rnd(&w, 4) == 0)
			step(&w); /* two changes in one reload, sometimes */
		check(&w, s, &parsed, &listed, &reused);
	}
	/* The point of it all: most files were not parsed again, most
	 * clusters not rebuilt. */
	CU_ASSERT(parsed * 4 < listed);
	CU_ASSERT(reused > 0);
	bm_model_free(&w.prev);
	json_decref(w.prev_res);
	bm_store_close(w.w);
	bm_store_close(w.inc);
	nftw(w.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	bm_fcache_set_racy_ms(2000);
}

/* A file changed within the racy window is parsed again on every listing,
 * even when its inode, size and times look the same. */
static void test_reload_racy_files_reread(void)
{
	char dir[64] = "/tmp/bm-reload-racy.XXXXXX", path[160];
	struct bm_store *w, *r;
	json_t *l1, *l2;
	json_t *arr = NULL;
	struct bm_errlist errs = { 0 };
	const char *y = "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\n"
			"metadata: {name: w1, namespace: ns1}\nspec: {address: 10.0.0.1}\n";

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	CU_ASSERT_EQUAL_FATAL(bm_store_open(dir, &w), 0);
	CU_ASSERT_EQUAL_FATAL(bm_store_open_ro(dir, &r), 0);
	CU_ASSERT_EQUAL(bm_resources_parse(y, strlen(y), "t", 0, &arr, &errs), 0);
	CU_ASSERT_EQUAL(bm_store_apply(w, arr, NULL), 0);
	CU_ASSERT_EQUAL(bm_store_list(r, NULL, NULL, &l1, NULL), 0);
	CU_ASSERT_EQUAL(bm_store_list_parsed(r), 1);
	CU_ASSERT_EQUAL(bm_store_list(r, NULL, NULL, &l2, NULL), 0);
	CU_ASSERT_EQUAL(bm_store_list_parsed(r), 1); /* just written: not trusted yet */
	json_decref(l2);
	bm_fcache_set_racy_ms(0);
	CU_ASSERT_EQUAL(bm_store_list(r, NULL, NULL, &l2, NULL), 0);
	CU_ASSERT_EQUAL(bm_store_list_parsed(r), 1); /* kept this time */
	json_decref(l2);
	CU_ASSERT_EQUAL(bm_store_list(r, NULL, NULL, &l2, NULL), 0);
	CU_ASSERT_EQUAL(bm_store_list_parsed(r), 0);
	/* Edited in place: size and times change, so it is read again. */
	snprintf(path, sizeof(path), "%s/resources/WorkloadEntry/ns1/w1.json", dir);
	write_file(path, "{\"apiVersion\": \"networking.istio.io/v1beta1\", \"kind\": \"WorkloadEntry\", "
			 "\"metadata\": {\"name\": \"w1\", \"namespace\": \"ns1\"}, "
			 "\"spec\": {\"address\": \"10.0.0.2\"}}\n");
	json_decref(l2);
	CU_ASSERT_EQUAL(bm_store_list(r, NULL, NULL, &l2, NULL), 0);
	CU_ASSERT_EQUAL(bm_store_list_parsed(r), 1);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(
		json_array_get(l2, 0), "spec"), "address")), "10.0.0.2");
	bm_fcache_set_racy_ms(2000);
	json_decref(l1);
	json_decref(l2);
	json_decref(arr);
	bm_errlist_free(&errs);
	bm_store_close(w);
	bm_store_close(r);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static json_t *parse_one(const char *y)
{
	struct bm_errlist errs = { 0 };
	json_t *arr = NULL;

	CU_ASSERT_EQUAL(bm_resources_parse(y, strlen(y), "t.yaml", 0, &arr, &errs), 0);
	bm_errlist_print(&errs, stderr);
	bm_errlist_free(&errs);
	return arr;
}

/* A route to another service's host: a change to that host's ServiceEntry
 * (a resource the routing service does not name) rebuilds the cluster. */
static void test_reload_follows_other_hosts(void)
{
	const char *base =
		"apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
		"metadata: {name: a, namespace: ns1}\nspec: {hosts: [ha], addresses: [10.1.0.1],\n"
		"  ports: [{number: 80, name: tcp, protocol: TCP}], resolution: STATIC,\n"
		"  endpoints: [{address: 10.2.0.1}]}\n---\n"
		"apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
		"metadata: {name: a, namespace: ns1}\nspec: {hosts: [ha], tcp: [{route: [\n"
		"  {destination: {host: ha}, weight: 50},\n"
		"  {destination: {host: hb.ns2.svc.cluster.local}, weight: 50}]}]}\n";
	const char *b1 =
		"apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
		"metadata: {name: b, namespace: ns2}\nspec: {hosts: [hb], addresses: [10.1.0.2],\n"
		"  ports: [{number: 80, name: tcp, protocol: TCP}], resolution: STATIC,\n"
		"  endpoints: [{address: 10.2.1.1}]}\n";
	const char *b2 =
		"apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
		"metadata: {name: b, namespace: ns2}\nspec: {hosts: [hb], addresses: [10.1.0.2],\n"
		"  ports: [{number: 80, name: tcp, protocol: TCP}], resolution: STATIC,\n"
		"  endpoints: [{address: 10.2.1.2}]}\n";
	json_t *r1 = parse_one(base), *sb1 = parse_one(b1), *sb2 = parse_one(b2), *r2;
	struct bm_model m1, m2, full;
	FILE *devnull = fopen("/dev/null", "w");

	/* Two snapshots sharing the unchanged objects, as the store cache gives. */
	r2 = json_copy(r1);
	json_array_extend(r1, sb1);
	json_array_extend(r2, sb2);
	CU_ASSERT_EQUAL_FATAL(bm_model_build_inc(r1, NULL, &m1, devnull), 0);
	CU_ASSERT_EQUAL_FATAL(bm_model_build_inc(r2, &m1, &m2, devnull), 0);
	CU_ASSERT_EQUAL_FATAL(bm_model_build(r2, &full, devnull), 0);
	CU_ASSERT_EQUAL_FATAL(m2.n_svc, 2);
	CU_ASSERT(same_model(&m2, &full));
	/* Service a: its own cluster reused, the one to hb rebuilt. */
	CU_ASSERT_EQUAL(m2.svc[0].n_dests, 2);
	CU_ASSERT_PTR_EQUAL(m2.svc[0].d[0].c, m1.svc[0].d[0].c);
	CU_ASSERT_PTR_NOT_EQUAL(m2.svc[0].d[1].c, m1.svc[0].d[1].c);
	CU_ASSERT_EQUAL(m2.svc[0].d[1].c->b[0].ip, htonl(0x0a020102));
	CU_ASSERT_FALSE(m2.svc[0].same);
	CU_ASSERT_FALSE(m2.svc[1].same);
	bm_model_free(&m1);
	bm_model_free(&m2);
	bm_model_free(&full);
	json_decref(r1);
	json_decref(r2);
	json_decref(sb1);
	json_decref(sb2);
	fclose(devnull);
}

BM_SUITE(reload,
	 BM_CASE(test_reload_follows_other_hosts),
	 BM_CASE(test_reload_incremental_equals_full),
	 BM_CASE(test_reload_racy_files_reread))
