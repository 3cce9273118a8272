/* etcd store against a real etcd the suite starts on 127.0.0.1 (free ports,
 * temp data dir, killed and removed at the end). Without an etcd binary the
 * suite passes with a "skipped" note. Each case uses its own key prefix. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "curlshim.h"
#include "resource.h"
#include "store.h"
#include "store_etcd.h"
#include "unit.h"

#define ETCD_START_TIMEOUT_MS 15000

static struct {
	bool tried, absent;
	const char *bin;
	char dir[64];
	int client_port, peer_port;
	pid_t pid;
} etcd = { .pid = -1 };

static const char *const docs =
	"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n"
	"  namespace: prod\nspec:\n  hosts: [reviews]\n  tcp:\n  - route:\n"
	"    - destination: {host: reviews, subset: v1}\n      weight: 90\n"
	"    - destination: {host: reviews, subset: v2}\n      weight: 10\n"
	"---\n"
	"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n"
	"  namespace: prod\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n"
	"  - {name: v2, labels: {version: v2}}\n"
	"---\n"
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: w1\n"
	"spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}}\n";

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static size_t sink(char *d, size_t s, size_t n, void *arg)
{
	struct { char b[4096]; size_t len; } *out = arg;
	size_t add = s * n, room = sizeof(out->b) - 1 - out->len;

	memcpy(out->b + out->len, d, add < room ? add : room);
	out->len += add < room ? add : room;
	out->b[out->len] = '\0';
	return add;
}

/* Raw request to the test etcd (what a hand edit with etcdctl would do).
 * Returns the HTTP status, the body in *body (static). */
static long etcd_http(const char *path, const char *json, const char **body)
{
	static struct { char b[4096]; size_t len; } out;
	CURL *h = bm_curl_easy_init();
	char url[256];
	long code = 0;

	out.len = 0;
	out.b[0] = '\0';
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", etcd.client_port, path);
	bm_curl_setopt_ptr(h, CURLOPT_URL, url);
	bm_curl_setopt_ptr(h, CURLOPT_PROXY, "");
	bm_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, 1000L);
	if (json)
		bm_curl_setopt_ptr(h, CURLOPT_POSTFIELDS, json);
	bm_curl_setopt_write(h, CURLOPT_WRITEFUNCTION, sink);
	bm_curl_setopt_ptr(h, CURLOPT_WRITEDATA, &out);
	if (bm_curl_easy_perform(h) == CURLE_OK)
		bm_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &code);
	bm_curl_easy_cleanup(h);
	if (body)
		*body = out.b;
	return code;
}

static char *b64(const char *s)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(s);
	char *o = malloc(n / 3 * 4 + 5), *p = o;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned char)s[i] << 16 |
			     (i + 1 < n ? (unsigned char)s[i + 1] << 8 : 0) |
			     (i + 2 < n ? (unsigned char)s[i + 2] : 0);

		*p++ = t[v >> 18 & 63];
		*p++ = t[v >> 12 & 63];
		*p++ = i + 1 < n ? t[v >> 6 & 63] : '=';
		*p++ = i + 2 < n ? t[v & 63] : '=';
	}
	*p = '\0';
	return o;
}

static void etcd_put(const char *key, const char *value)
{
	char *k = b64(key), *v = b64(value), *req;

	CU_ASSERT_FATAL(asprintf(&req, "{\"key\":\"%s\",\"value\":\"%s\"}", k, v) > 0);
	CU_ASSERT_EQUAL(etcd_http("/v3/kv/put", req, NULL), 200);
	free(req);
	free(k);
	free(v);
}

static bool etcd_healthy(void)
{
	const char *body;

	return etcd_http("/health", NULL, &body) == 200 && strstr(body, "true");
}

static int etcd_spawn(void)
{
	char curl_[64], purl[64], cluster[96], log[96];
	uint64_t t0 = ms_now();

	snprintf(curl_, sizeof(curl_), "http://127.0.0.1:%d", etcd.client_port);
	snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", etcd.peer_port);
	snprintf(cluster, sizeof(cluster), "default=%s", purl);
	snprintf(log, sizeof(log), "%s.log", etcd.dir);
	etcd.pid = fork();
	if (etcd.pid < 0)
		return -errno;
	if (!etcd.pid) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		/* Never outlive the test binary. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(etcd.bin, "etcd", "--data-dir", etcd.dir, "--listen-client-urls", curl_,
		      "--advertise-client-urls", curl_, "--listen-peer-urls", purl,
		      "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster,
		      "--log-level", "warn", (char *)NULL);
		_exit(127);
	}
	while (ms_now() - t0 < ETCD_START_TIMEOUT_MS) {
		if (etcd_healthy())
			return 0;
		if (waitpid(etcd.pid, NULL, WNOHANG) == etcd.pid) {
			etcd.pid = -1;
			break;
		}
		usleep(50 * 1000);
	}
	fprintf(stderr, "etcd did not come up on port %d within %d ms (log: %s)\n",
		etcd.client_port, ETCD_START_TIMEOUT_MS, log);
	return -ETIMEDOUT;
}

static void etcd_kill(void)
{
	if (etcd.pid <= 0)
		return;
	kill(etcd.pid, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(etcd.pid, NULL, WNOHANG) == etcd.pid) {
			etcd.pid = -1;
			return;
		}
		usleep(50 * 1000);
	}
	kill(etcd.pid, SIGKILL);
	waitpid(etcd.pid, NULL, 0);
	etcd.pid = -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void etcd_cleanup(void)
{
	char log[96];

	etcd_kill();
	if (etcd.dir[0]) {
		nftw(etcd.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		snprintf(log, sizeof(log), "%s.log", etcd.dir);
		unlink(log);
		etcd.dir[0] = '\0';
	}
}

/* Starts etcd on first use. false: no etcd here, the case passes as skipped. */
static bool need_etcd(void)
{
	static const char *const bins[] = { "/usr/bin/etcd", "/usr/local/bin/etcd", NULL };

	if (!etcd.tried) {
		etcd.tried = true;
		/* BPFMESH_TEST_ETCD: the binary to use; "none" skips the suite. */
		etcd.bin = getenv("BPFMESH_TEST_ETCD");
		if (etcd.bin && access(etcd.bin, X_OK))
			etcd.bin = NULL;
		for (int i = 0; !etcd.bin && !getenv("BPFMESH_TEST_ETCD") && bins[i]; i++)
			if (!access(bins[i], X_OK))
				etcd.bin = bins[i];
		if (!etcd.bin) {
			etcd.absent = true;
			printf("\n  etcd not installed (apt-get install etcd-server): etcd store "
			       "tests skipped\n");
		} else {
			snprintf(etcd.dir, sizeof(etcd.dir), "/tmp/bm-etcd-test.XXXXXX");
			CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(etcd.dir));
			etcd.client_port = free_port();
			etcd.peer_port = free_port();
			atexit(etcd_cleanup);
			CU_ASSERT_EQUAL_FATAL(etcd_spawn(), 0);
		}
	}
	if (etcd.absent)
		CU_PASS("etcd not installed: skipped");
	return !etcd.absent && etcd.pid > 0;
}

static struct bm_store *open_prefix(const char *prefix)
{
	struct bm_store *s = NULL;
	char url[128];

	snprintf(url, sizeof(url), "etcd://127.0.0.1:%d/%s", etcd.client_port, prefix);
	CU_ASSERT_EQUAL(bm_store_open(url, &s), 0);
	return s;
}

static json_t *parse(const char *yaml)
{
	struct bm_errlist errs = { 0 };
	json_t *out = NULL;

	CU_ASSERT_EQUAL(bm_resources_parse(yaml, strlen(yaml), "t.yaml", 0, &out, &errs), 0);
	bm_errlist_print(&errs, stderr);
	bm_errlist_free(&errs);
	return out;
}

static uint64_t generation(struct bm_store *s)
{
	uint64_t g = 999;

	CU_ASSERT_EQUAL(bm_store_generation(s, &g), 0);
	return g;
}

static const char *action(json_t *results, size_t i)
{
	const char *a = json_string_value(json_object_get(json_array_get(results, i), "action"));

	return a ? a : "(none)";
}

/* stderr into a temp file for the duration (expected error reports). */
static FILE *saved_stderr;
static char captured[8192];

static void capture_stderr(void)
{
	saved_stderr = stderr;
	stderr = tmpfile();
}

static const char *captured_stderr(void)
{
	size_t n;

	fflush(stderr);
	rewind(stderr);
	n = fread(captured, 1, sizeof(captured) - 1, stderr);
	captured[n] = '\0';
	fclose(stderr);
	stderr = saved_stderr;
	return captured;
}

static void test_etcd_round_trip(void)
{
	struct bm_store *s, *two = NULL;
	json_t *res, *results = NULL, *list = NULL, *one = NULL;
	uint64_t gen = 0;
	char url[128];

	if (!need_etcd())
		return;
	s = open_prefix("rt");
	res = parse(docs);
	CU_ASSERT_EQUAL(generation(s), 0);
	CU_ASSERT_EQUAL(bm_store_apply(s, res, &results), 0);
	CU_ASSERT_EQUAL(json_array_size(results), 3);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "created");
	CU_ASSERT_STRING_EQUAL(action(results, 2), "created");
	CU_ASSERT_EQUAL(generation(s), 1);
	json_decref(results);

	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, &gen), 0);
	CU_ASSERT_EQUAL(gen, 1);
	CU_ASSERT_EQUAL(json_array_size(list), 3);
	/* Kind table order, like the file store. */
	CU_ASSERT_STRING_EQUAL(bm_res_kind(json_array_get(list, 0)), "VirtualService");
	CU_ASSERT_STRING_EQUAL(bm_res_kind(json_array_get(list, 1)), "DestinationRule");
	CU_ASSERT_STRING_EQUAL(bm_res_kind(json_array_get(list, 2)), "WorkloadEntry");
	{
		json_t *stripped = json_deep_copy(json_array_get(list, 0));
		json_t *meta = json_object_get(stripped, "metadata");

		CU_ASSERT_EQUAL(json_integer_value(json_object_get(meta, "generation")), 1);
		CU_ASSERT_PTR_NOT_NULL(json_string_value(json_object_get(meta, "creationTimestamp")));
		json_object_del(meta, "generation");
		json_object_del(meta, "creationTimestamp");
		CU_ASSERT(json_equal(stripped, json_array_get(res, 0)));
		json_decref(stripped);
	}
	json_decref(list);

	/* Same content: nothing written, no bump. */
	CU_ASSERT_EQUAL(bm_store_apply(s, res, &results), 0);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "unchanged");
	CU_ASSERT_STRING_EQUAL(action(results, 1), "unchanged");
	CU_ASSERT_STRING_EQUAL(action(results, 2), "unchanged");
	CU_ASSERT_EQUAL(generation(s), 1);
	json_decref(results);

	/* Two changes in one apply: one bump. A dry run writes nothing. */
	json_object_set_new(json_object_get(json_array_get(res, 0), "spec"), "exportTo",
			    json_pack("[s]", "."));
	json_object_set_new(json_object_get(json_array_get(res, 1), "metadata"), "labels",
			    json_pack("{s:s}", "team", "a"));
	CU_ASSERT_EQUAL(bm_store_plan(s, res, &results), 0);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "configured");
	CU_ASSERT_EQUAL(generation(s), 1);
	json_decref(results);
	CU_ASSERT_EQUAL(bm_store_apply(s, res, &results), 0);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "configured");
	CU_ASSERT_STRING_EQUAL(action(results, 1), "configured");
	CU_ASSERT_STRING_EQUAL(action(results, 2), "unchanged");
	CU_ASSERT_EQUAL(generation(s), 2);
	json_decref(results);
	CU_ASSERT_EQUAL(bm_store_get(s, "we", "default", "w1", &one), 0);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(one, "metadata"),
							   "generation")), 1);
	json_decref(one);
	CU_ASSERT_EQUAL(bm_store_get(s, "dr", "prod", "reviews", &one), 0);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(one, "metadata"),
							   "generation")), 2);
	json_decref(one);

	CU_ASSERT_EQUAL(bm_store_list(s, "dr", "prod", &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 1);
	json_decref(list);
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, "default", &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 1);
	json_decref(list);
	CU_ASSERT_EQUAL(bm_store_get(s, "VirtualService", "default", "reviews", &one), -ENOENT);
	/* "review" is a key prefix of "reviews": get is exact. */
	CU_ASSERT_EQUAL(bm_store_get(s, "VirtualService", "prod", "review", &one), -ENOENT);

	CU_ASSERT_EQUAL(bm_store_delete(s, "VirtualService", "prod", "reviews"), 0);
	CU_ASSERT_EQUAL(generation(s), 3);
	CU_ASSERT_EQUAL(bm_store_delete(s, "vs", "prod", "reviews"), -ENOENT);
	CU_ASSERT_EQUAL(generation(s), 3);
	CU_ASSERT_EQUAL(bm_store_list(s, "VirtualService", NULL, &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 0);
	json_decref(list);
	CU_ASSERT_PTR_NULL(bm_store_watch_path(s));

	/* A dead first endpoint: the next one answers. */
	snprintf(url, sizeof(url), "etcd://127.0.0.1:%d,127.0.0.1:%d/rt", free_port(),
		 etcd.client_port);
	capture_stderr();
	CU_ASSERT_EQUAL(bm_store_open(url, &two), 0);
	CU_ASSERT_EQUAL(bm_store_list(two, NULL, NULL, &list, &gen), 0);
	captured_stderr();
	CU_ASSERT_EQUAL(gen, 3);
	CU_ASSERT_EQUAL(json_array_size(list), 2);
	json_decref(list);
	bm_store_close(two);

	capture_stderr();
	CU_ASSERT_EQUAL(bm_store_open("etcd://", &two), -EINVAL);
	CU_ASSERT_EQUAL(bm_store_open("etcds://127.0.0.1:2379", &two), -EPROTONOSUPPORT);
	captured_stderr();
	json_decref(res);
	bm_store_close(s);
}

/* A writer sneaking in between our read and our transaction. */
static struct {
	struct bm_store *other;
	int fired, limit;
	bool busy;
} rival;

static void rival_write(void *arg)
{
	char yaml[256];
	json_t *res;

	(void)arg;
	if (rival.busy || rival.fired >= rival.limit)
		return;
	rival.busy = true; /* its own apply passes through here too */
	rival.fired++;
	snprintf(yaml, sizeof(yaml),
		 "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n"
		 "  name: reviews\n  namespace: prod\nspec:\n  host: rival-%d\n", rival.fired);
	res = parse(yaml);
	CU_ASSERT_EQUAL(bm_store_apply(rival.other, res, NULL), 0);
	json_decref(res);
	rival.busy = false;
}

static void test_etcd_apply_all_or_nothing(void)
{
	struct bm_store *s;
	json_t *res, *results = NULL, *one = NULL, *list = NULL;
	const char *err;

	if (!need_etcd())
		return;
	s = open_prefix("aon");
	rival.other = open_prefix("aon");
	res = parse(docs);
	bm_etcd_test_before_commit = rival_write;

	/* One conflict: redone on fresh data, then applied whole. */
	rival.fired = 0;
	rival.limit = 1;
	CU_ASSERT_EQUAL(bm_store_apply(s, res, &results), 0);
	CU_ASSERT_EQUAL(rival.fired, 1);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "created");
	CU_ASSERT_STRING_EQUAL(action(results, 1), "configured"); /* over the rival's */
	CU_ASSERT_EQUAL(generation(s), 2);
	json_decref(results);
	CU_ASSERT_EQUAL(bm_store_get(s, "dr", "prod", "reviews", &one), 0);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(one, "spec"),
								"host")), "reviews");
	json_decref(one);

	/* Conflicts every time: nothing of the document set lands. */
	json_object_set_new(json_object_get(json_array_get(res, 0), "spec"), "exportTo",
			    json_pack("[s]", "."));
	json_object_set_new(json_object_get(json_array_get(res, 2), "spec"), "address",
			    json_string("10.0.0.9"));
	rival.fired = 0;
	rival.limit = 1000;
	capture_stderr();
	CU_ASSERT_EQUAL(bm_store_apply(s, res, &results), -EBUSY);
	err = captured_stderr();
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "nothing applied"));
	CU_ASSERT(rival.fired >= 2);
	CU_ASSERT_EQUAL(generation(s), 2 + (uint64_t)rival.fired);
	CU_ASSERT_EQUAL(bm_store_get(s, "vs", "prod", "reviews", &one), 0);
	CU_ASSERT_PTR_NULL(json_object_get(json_object_get(one, "spec"), "exportTo"));
	json_decref(one);
	CU_ASSERT_EQUAL(bm_store_get(s, "we", "default", "w1", &one), 0);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(one, "spec"),
								"address")), "10.0.0.1");
	json_decref(one);
	bm_etcd_test_before_commit = NULL;

	/* The same resource twice in one set: the later wins, one put. */
	json_array_append(res, json_array_get(res, 2));
	json_object_set_new(json_object_get(json_array_get(res, 2), "spec"), "address",
			    json_string("10.0.0.7"));
	CU_ASSERT_EQUAL(bm_store_apply(s, res, &results), 0);
	CU_ASSERT_STRING_EQUAL(action(results, 3), "unchanged");
	json_decref(results);
	CU_ASSERT_EQUAL(bm_store_list(s, "we", NULL, &list, NULL), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 1);
	json_decref(list);

	json_decref(res);
	bm_store_close(rival.other);
	bm_store_close(s);
}

static void test_etcd_skips_invalid_values(void)
{
	struct bm_store *s;
	json_t *res, *list = NULL, *results = NULL;
	const char *err;
	uint64_t gen;

	if (!need_etcd())
		return;
	s = open_prefix("bad");
	res = parse(docs);
	CU_ASSERT_EQUAL(bm_store_apply(s, res, NULL), 0);
	etcd_put("/bad/resources/VirtualService/prod/broken",
		 "{\"apiVersion\": \"networking.istio.io/v1\", \"kind\": ");
	etcd_put("/bad/resources/VirtualService/prod/invalid",
		 "{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"VirtualService\","
		 "\"metadata\":{\"name\":\"invalid\",\"namespace\":\"prod\"},"
		 "\"spec\":{\"hosts\":[\"*\"],\"tcp\":[]}}");
	etcd_put("/bad/resources/VirtualService/prod/elsewhere",
		 "{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"VirtualService\","
		 "\"metadata\":{\"name\":\"other\",\"namespace\":\"prod\"},"
		 "\"spec\":{\"hosts\":[\"a\"],\"tcp\":[{\"route\":[{\"destination\":"
		 "{\"host\":\"a\"}}]}]}}");
	etcd_put("/bad/resources/NoSuchKind/prod/x", "{}");
	etcd_put("/bad/resources/VirtualService/too/many/parts", "{}");

	capture_stderr();
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, &gen), 0);
	err = captured_stderr();
	CU_ASSERT_EQUAL(json_array_size(list), 3);
	CU_ASSERT_EQUAL(gen, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "etcd:/bad/resources/VirtualService/prod/broken"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "etcd:/bad/resources/VirtualService/prod/invalid"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "elsewhere"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "NoSuchKind"));
	json_decref(list);

	/* Applying over a value that no longer reads replaces it. */
	json_object_set_new(json_object_get(json_array_get(res, 0), "metadata"), "name",
			    json_string("broken"));
	CU_ASSERT_EQUAL(bm_store_apply(s, res, &results), 0);
	CU_ASSERT_STRING_EQUAL(action(results, 0), "created");
	json_decref(results);
	capture_stderr();
	CU_ASSERT_EQUAL(bm_store_list(s, "vs", "prod", &list, NULL), 0);
	captured_stderr();
	CU_ASSERT_EQUAL(json_array_size(list), 2);
	json_decref(list);

	/* A hand-written generation is an error, not a crash. */
	etcd_put("/bad/generation", "seven");
	capture_stderr();
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, NULL), -EBADMSG);
	CU_ASSERT_EQUAL(bm_store_apply(s, res, NULL), -EBADMSG);
	err = captured_stderr();
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a decimal generation"));
	CU_ASSERT_PTR_NULL(list);
	json_decref(res);
	bm_store_close(s);
}

/* Waits up to ms for fd to be readable; the time it took, or -1. */
static long wait_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t t0 = ms_now();

	return poll(&p, 1, ms) == 1 ? (long)(ms_now() - t0) : -1;
}

static void test_etcd_watch(void)
{
	struct bm_store *s, *other;
	json_t *res, *list = NULL;
	uint64_t t0, applied, gen;
	long waited;
	int fd;

	if (!need_etcd())
		return;
	s = open_prefix("w");
	other = open_prefix("w");
	res = parse(docs);
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, NULL), 0);
	json_decref(list);
	fd = bm_store_watch_fd(s);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(bm_store_watch_fd(s), fd);
	usleep(200 * 1000); /* the stream is up */
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), 0);

	t0 = ms_now();
	CU_ASSERT_EQUAL(bm_store_apply(other, res, NULL), 0);
	applied = ms_now();
	waited = wait_readable(fd, 100);
	printf("\n  watch fired %ld ms after the apply began (the apply took %llu ms)\n",
	       waited < 0 ? -1 : (long)(ms_now() - t0), (unsigned long long)(applied - t0));
	CU_ASSERT(waited >= 0 && ms_now() - t0 <= 100);
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), BM_STORE_CHANGED);
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), 0);
	/* The watcher's generation equals the store's. */
	usleep(20 * 1000);
	CU_ASSERT_EQUAL(bm_store_generation(s, &gen), 0);
	CU_ASSERT_EQUAL(gen, 1);

	CU_ASSERT_EQUAL(bm_store_delete(other, "we", "default", "w1"), 0);
	CU_ASSERT(wait_readable(fd, 100) >= 0);
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), BM_STORE_CHANGED);
	usleep(20 * 1000);
	CU_ASSERT_EQUAL(bm_store_generation(s, &gen), 0);
	CU_ASSERT_EQUAL(gen, 2);
	json_decref(res);
	bm_store_close(other);
	bm_store_close(s);
}

/* The revision to watch from was compacted away: a full re-list is asked for,
 * and watching goes on from the present. */
static void test_etcd_watch_compaction(void)
{
	struct bm_store *s, *other;
	json_t *res, *list = NULL;
	const char *body, *rev;
	char req[96];
	int fd;

	if (!need_etcd())
		return;
	s = open_prefix("cmp");
	other = open_prefix("cmp");
	res = parse(docs);
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, NULL), 0);
	json_decref(list);
	CU_ASSERT_EQUAL(bm_store_apply(other, res, NULL), 0);
	CU_ASSERT_EQUAL(bm_store_delete(other, "vs", "prod", "reviews"), 0);
	CU_ASSERT_EQUAL(etcd_http("/v3/kv/range", "{\"key\":\"Lw==\"}", &body), 200);
	rev = strstr(body, "\"revision\":\"");
	CU_ASSERT_PTR_NOT_NULL_FATAL(rev);
	snprintf(req, sizeof(req), "{\"revision\":\"%lld\",\"physical\":true}",
		 strtoll(rev + 12, NULL, 10));
	CU_ASSERT_EQUAL(etcd_http("/v3/kv/compaction", req, NULL), 200);

	capture_stderr();
	fd = bm_store_watch_fd(s);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(wait_readable(fd, 2000) >= 0);
	usleep(100 * 1000);
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), BM_STORE_RELIST);
	CU_ASSERT_PTR_NOT_NULL(strstr(captured_stderr(), "compacted"));
	/* Watching again, from the present. */
	CU_ASSERT_EQUAL(bm_store_delete(other, "dr", "prod", "reviews"), 0);
	CU_ASSERT(wait_readable(fd, 1000) >= 0);
	CU_ASSERT(bm_store_watch_ack(s) > 0);
	json_decref(res);
	bm_store_close(other);
	bm_store_close(s);
}

/* etcd gone: list fails at once with an error, health says disconnected; the
 * watcher resumes when etcd is back, and sees later changes. */
static void test_etcd_outage(void)
{
	struct bm_store *s, *other;
	json_t *res, *list = NULL;
	time_t before_ok, last_ok = 0;
	int connected = -1, fd;
	uint64_t t0, gen = 0;
	const char *err;

	if (!need_etcd())
		return;
	s = open_prefix("out");
	other = open_prefix("out");
	res = parse(docs);
	CU_ASSERT_EQUAL(bm_store_apply(other, res, NULL), 0);
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, NULL), 0);
	json_decref(list);
	fd = bm_store_watch_fd(s);
	CU_ASSERT_FATAL(fd >= 0);
	usleep(200 * 1000);
	CU_ASSERT_EQUAL(bm_store_health(s, &connected, &before_ok), 0);
	CU_ASSERT_EQUAL(connected, 1);

	capture_stderr();
	etcd_kill();
	sleep(1);
	t0 = ms_now();
	list = NULL;
	CU_ASSERT(bm_store_list(s, NULL, NULL, &list, &gen) < 0);
	printf("\n  list with etcd down failed after %llu ms\n",
	       (unsigned long long)(ms_now() - t0));
	CU_ASSERT(ms_now() - t0 < 1500);
	CU_ASSERT_PTR_NULL(list);
	CU_ASSERT_EQUAL(bm_store_health(s, &connected, &last_ok), 0);
	CU_ASSERT_EQUAL(connected, 0);
	CU_ASSERT(last_ok > 0 && last_ok <= time(NULL) - 1);
	CU_ASSERT(bm_store_generation(s, &gen) < 0);
	CU_ASSERT_EQUAL(bm_store_apply(other, res, NULL) < 0, 1);
	err = captured_stderr();
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unreachable"));

	CU_ASSERT_EQUAL_FATAL(etcd_spawn(), 0);
	t0 = ms_now();
	/* The watcher's reconnect is news (a failed reload should be retried). */
	CU_ASSERT(wait_readable(fd, 5000) >= 0);
	printf("  watch re-established %llu ms after etcd was back\n",
	       (unsigned long long)(ms_now() - t0));
	bm_store_watch_ack(s);
	CU_ASSERT_EQUAL(bm_store_list(s, NULL, NULL, &list, &gen), 0);
	CU_ASSERT_EQUAL(json_array_size(list), 3);
	CU_ASSERT_EQUAL(gen, 1);
	json_decref(list);
	CU_ASSERT_EQUAL(bm_store_health(s, &connected, &last_ok), 0);
	CU_ASSERT_EQUAL(connected, 1);
	CU_ASSERT(last_ok >= time(NULL) - 1);
	CU_ASSERT_EQUAL(bm_store_delete(other, "vs", "prod", "reviews"), 0);
	CU_ASSERT(wait_readable(fd, 100) >= 0);
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), BM_STORE_CHANGED);
	json_decref(res);
	bm_store_close(other);
	bm_store_close(s);
}

/* The same watch API on a file store: inotify on the generation's directory. */
static void test_file_store_watch_fd(void)
{
	char dir[64] = "/tmp/bm-store-watch.XXXXXX";
	struct bm_store *s = NULL, *other = NULL;
	json_t *res = parse(docs);
	time_t last_ok = 0;
	int fd, connected = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	CU_ASSERT_EQUAL(bm_store_open(dir, &s), 0);
	CU_ASSERT_EQUAL(bm_store_open(dir, &other), 0);
	fd = bm_store_watch_fd(s);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(bm_store_watch_fd(s), fd);
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), 0);
	CU_ASSERT_EQUAL(bm_store_apply(other, res, NULL), 0);
	CU_ASSERT(wait_readable(fd, 100) >= 0);
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), BM_STORE_CHANGED);
	CU_ASSERT_EQUAL(bm_store_watch_ack(s), 0);
	CU_ASSERT_EQUAL(bm_store_health(s, &connected, &last_ok), 0);
	CU_ASSERT_EQUAL(connected, 1);
	CU_ASSERT(last_ok >= time(NULL) - 1);
	bm_store_close(other);
	bm_store_close(s);
	json_decref(res);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Last: the suite's etcd goes away with its data. */
static void test_etcd_cleanup(void)
{
	etcd_cleanup();
	CU_PASS("etcd stopped, data removed");
}

BM_SUITE(store_etcd,
	 BM_CASE(test_etcd_round_trip),
	 BM_CASE(test_etcd_apply_all_or_nothing),
	 BM_CASE(test_etcd_skips_invalid_values),
	 BM_CASE(test_etcd_watch),
	 BM_CASE(test_etcd_watch_compaction),
	 BM_CASE(test_etcd_outage),
	 BM_CASE(test_file_store_watch_fd),
	 BM_CASE(test_etcd_cleanup))
