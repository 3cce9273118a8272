/* Access logs (agent/accesslog.c): which workloads the Telemetry API logs
 * (mesh-wide, namespace, workload selector, disabled, none), where the
 * lines go (stdout, file providers, --access-log-file), and the JSON line
 * with Istio's default keys. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "unit.h"
#include "../../agent/accesslog.h"
#include "../../agent/l7proxy.h"
#include "../../agent/relay.h"

static json_t *res(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);

	if (!j)
		fprintf(stderr, "\n%s: %s\n", text, je.text);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	return j;
}

#define TEL(ns, name, spec) \
	"{\"kind\":\"Telemetry\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns "\"}," \
	"\"spec\":" spec "}"
#define ENVOY "{\"accessLogging\":[{\"providers\":[{\"name\":\"envoy\"}]}]}"
#define OFF "{\"accessLogging\":[{\"disabled\":true}]}"

static void test_wanted_table(void)
{
	static const struct {
		const char *why, *resources, *ns, *labels;
		int want;
	} cases[] = {
		{ "no Telemetry", "[]", "default", "{\"app\":\"web\"}", 0 },
		{ "other kinds only",
		  "[{\"kind\":\"PeerAuthentication\",\"metadata\":{\"name\":\"p\",\"namespace\":"
		  "\"istio-system\"},\"spec\":{}}]", "default", NULL, 0 },
		{ "mesh-wide", "[" TEL("istio-system", "mesh", ENVOY) "]", "default", NULL, 1 },
		{ "mesh-wide, another namespace", "[" TEL("istio-system", "mesh", ENVOY) "]", "prod",
		  "{\"app\":\"web\"}", 1 },
		{ "namespace", "[" TEL("prod", "ns", ENVOY) "]", "prod", NULL, 1 },
		{ "another namespace's", "[" TEL("prod", "ns", ENVOY) "]", "default", NULL, 0 },
		{ "namespace turns mesh-wide off",
		  "[" TEL("istio-system", "mesh", ENVOY) "," TEL("prod", "ns", OFF) "]", "prod", NULL, 0 },
		{ "... and only there",
		  "[" TEL("istio-system", "mesh", ENVOY) "," TEL("prod", "ns", OFF) "]", "default",
		  NULL, 1 },
		{ "workload selector over a disabled namespace",
		  "[" TEL("prod", "ns", OFF) ","
		  TEL("prod", "web", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
		      "\"accessLogging\":[{\"providers\":[{\"name\":\"envoy\"}]}]}") "]",
		  "prod", "{\"app\":\"web\",\"version\":\"v1\"}", 1 },
		{ "selector not matching",
		  "[" TEL("prod", "ns", OFF) ","
		  TEL("prod", "web", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
		      "\"accessLogging\":[{}]}") "]",
		  "prod", "{\"app\":\"db\"}", 0 },
		{ "selector in another namespace",
		  "[" TEL("default", "web", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
		      "\"accessLogging\":[{}]}") "]",
		  "prod", "{\"app\":\"web\"}", 0 },
		{ "root-namespace selector is not mesh-wide",
		  "[" TEL("istio-system", "web", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
		      "\"accessLogging\":[{}]}") "]",
		  "prod", "{\"app\":\"web\"}", 0 },
		{ "workload disabled under mesh-wide",
		  "[" TEL("istio-system", "mesh", ENVOY) ","
		  TEL("prod", "web", "{\"selector\":{\"matchLabels\":{\"app\":\"web\"}},"
		      "\"accessLogging\":[{\"disabled\":true}]}") "]",
		  "prod", "{\"app\":\"web\"}", 0 },
		{ "a level without accessLogging does not count",
		  "[" TEL("istio-system", "mesh", ENVOY) ","
		  TEL("prod", "tr", "{\"tracing\":[{\"randomSamplingPercentage\":1}]}") "]",
		  "prod", NULL, 1 },
		{ "no providers: the default (envoy)", "[" TEL("prod", "ns", "{\"accessLogging\":[{}]}") "]",
		  "prod", NULL, 1 },
		{ "file provider",
		  "[" TEL("prod", "ns", "{\"accessLogging\":[{\"providers\":[{\"name\":"
		      "\"file:/tmp/x.log\"}]}]}") "]", "prod", NULL, 1 },
		{ "a provider meshd cannot write",
		  "[" TEL("prod", "ns", "{\"accessLogging\":[{\"providers\":[{\"name\":\"otel\"}]}]}") "]",
		  "prod", NULL, 0 },
		{ "rules in order: on, then that provider off",
		  "[" TEL("prod", "ns", "{\"accessLogging\":[{\"providers\":[{\"name\":\"envoy\"}]},"
		      "{\"providers\":[{\"name\":\"envoy\"}],\"disabled\":true}]}") "]", "prod", NULL, 0 },
		{ "disabling another provider leaves envoy",
		  "[" TEL("prod", "ns", "{\"accessLogging\":[{\"providers\":[{\"name\":\"envoy\"}]},"
		      "{\"providers\":[{\"name\":\"otel\"}],\"disabled\":true}]}") "]", "prod", NULL, 1 },
		{ "two at one level: the first by name",
		  "[" TEL("prod", "b", ENVOY) "," TEL("prod", "a", OFF) "]", "prod", NULL, 0 },
		{ "two at one level, other order",
		  "[" TEL("prod", "a", OFF) "," TEL("prod", "b", ENVOY) "]", "prod", NULL, 0 },
		{ "empty selector is namespace-wide",
		  "[" TEL("prod", "ns", "{\"selector\":{\"matchLabels\":{}},\"accessLogging\":[{}]}") "]",
		  "prod", NULL, 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *r = res(cases[i].resources);
		json_t *l = cases[i].labels ? res(cases[i].labels) : NULL;
		int got = bm_accesslog_wanted(r, cases[i].ns, l);

		if (got != cases[i].want)
			fprintf(stderr, "\n%s: wanted %d, got %d\n", cases[i].why, cases[i].want, got);
		CU_ASSERT_EQUAL(got, cases[i].want);
		json_decref(r);
		json_decref(l);
	}
	CU_ASSERT_EQUAL(bm_accesslog_wanted(NULL, "prod", NULL), 0);
}

static struct bm_l7_record sample(void)
{
	struct bm_l7_record r;

	memset(&r, 0, sizeof(r));
	r.reporter = BM_MESH_SOURCE;
	r.src_ns = "default";
	r.src_name = "client-0";
	r.src_principal = r.dst_ns = r.dst_name = "";
	r.dst_service = "reviews.default.svc.cluster.local";
	r.dst_service_ns = "default";
	r.cluster = "outbound|9080|v1|reviews.default.svc.cluster.local";
	r.subset = "v1";
	inet_pton(AF_INET, "10.0.2.5", &r.upstream_ip);
	r.upstream_port = htons(9080);
	r.dst_port = 9080;
	r.method = "GET";
	r.authority = "reviews:9080";
	r.path = "/reviews/0?x=1";
	r.status = 200;
	r.flags = "-";
	r.req_body_bytes = 0;
	r.resp_body_bytes = 295;
	r.start_ms = 1700000000123ull;   /* 2023-11-14T22:13:20.123Z */
	r.duration_ms = 7;
	r.attempts = 1;
	r.route_name = "default";
	r.request_id = "0b7e9c1a-1f2d-4c1e-9a3b-5d6e7f809a1b";
	r.user_agent = "curl/7.88.1";
	return r;
}

static void test_line_fields(void)
{
	static const char *const keys[] = {
		"start_time", "method", "path", "protocol", "response_code", "response_flags",
		"response_code_details", "connection_termination_details",
		"upstream_transport_failure_reason", "bytes_received", "bytes_sent", "duration",
		"upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority",
		"upstream_host", "upstream_cluster", "upstream_local_address",
		"downstream_local_address", "downstream_remote_address", "requested_server_name",
		"route_name",
	};
	struct bm_l7_record r = sample();
	char line[BM_ACCESSLOG_LINE_MAX], *at = line;
	size_t n = bm_accesslog_format(&r, line, sizeof(line));
	json_error_t je;
	json_t *j;

	CU_ASSERT_EQUAL(n, strlen(line));
	CU_ASSERT(n > 2 && line[n - 1] == '\n' && !memchr(line, '\n', n - 1));
	j = json_loadb(line, n, 0, &je);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT_EQUAL(json_object_size(j), sizeof(keys) / sizeof(keys[0]));
	/* every key, in Istio's order */
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char needle[64];
		char *p;

		snprintf(needle, sizeof(needle), "\"%s\":", keys[i]);
		p = strstr(line, needle);
		CU_ASSERT_PTR_NOT_NULL(p);
		CU_ASSERT(p >= at);
		if (p)
			at = p;
	}
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "start_time")),
			       "2023-11-14T22:13:20.123Z");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "method")), "GET");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "path")), "/reviews/0?x=1");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "protocol")), "HTTP/1.1");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "response_code")), 200);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "response_flags")), "-");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "response_code_details")),
			       "via_upstream");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bytes_received")), 0);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bytes_sent")), 295);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "duration")), 7);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "user_agent")), "curl/7.88.1");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "request_id")),
			       "0b7e9c1a-1f2d-4c1e-9a3b-5d6e7f809a1b");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "authority")), "reviews:9080");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "upstream_host")),
			       "10.0.2.5:9080");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "upstream_cluster")),
			       "outbound|9080|v1|reviews.default.svc.cluster.local");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "route_name")), "default");
	/* what meshd does not know is null */
	CU_ASSERT(json_is_null(json_object_get(j, "x_forwarded_for")));
	CU_ASSERT(json_is_null(json_object_get(j, "upstream_service_time")));
	CU_ASSERT(json_is_null(json_object_get(j, "downstream_remote_address")));
	CU_ASSERT(json_is_null(json_object_get(j, "requested_server_name")));
	json_decref(j);

	/* A local reply to a client that went away: code 0, flags kept, no
	 * upstream, empty strings null. */
	r.status = 0;
	r.flags = "DC";
	r.attempts = 0;
	r.upstream_ip = 0;
	r.cluster = r.route_name = r.user_agent = "";
	r.start_ms = 0;
	n = bm_accesslog_format(&r, line, sizeof(line));
	j = json_loadb(line, n, 0, &je);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "response_code")), 0);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "response_flags")), "DC");
	CU_ASSERT(json_is_null(json_object_get(j, "response_code_details")));
	CU_ASSERT(json_is_null(json_object_get(j, "upstream_host")));
	CU_ASSERT(json_is_null(json_object_get(j, "upstream_cluster")));
	CU_ASSERT(json_is_null(json_object_get(j, "user_agent")));
	CU_ASSERT(json_is_null(json_object_get(j, "start_time")));
	json_decref(j);
}

static void test_line_hostile_fields(void)
{
	/* Quotes, control characters, bytes that are not UTF-8 and very long
	 * values: still one valid JSON line within BM_ACCESSLOG_LINE_MAX. */
	struct bm_l7_record r = sample();
	char *big = malloc(20000), line[BM_ACCESSLOG_LINE_MAX];
	size_t n;
	json_error_t je;
	json_t *j;

	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	for (int i = 0; i < 19999; i++)
		big[i] = "\"\\\n\x01\xff\xc3\xa9" "a"[i % 8];
	big[19999] = 0;
	r.path = r.user_agent = r.authority = r.request_id = r.route_name = r.method = big;
	r.cluster = r.flags = big;
	n = bm_accesslog_format(&r, line, sizeof(line));
	CU_ASSERT(n < BM_ACCESSLOG_LINE_MAX);
	CU_ASSERT(line[n - 1] == '\n' && !memchr(line, '\n', n - 1));
	j = json_loadb(line, n, 0, &je);
	if (!j)
		fprintf(stderr, "\ninvalid JSON (%s): %.200s\n", je.text, line);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT_PTR_NOT_NULL(strstr(json_string_value(json_object_get(j, "path")),
				      "\"\\\n\x01\xef\xbf\xbd\xc3\xa9"));
	json_decref(j);
	/* a small buffer cuts, never overruns */
	n = bm_accesslog_format(&r, line, 64);
	CU_ASSERT(n < 64);
	free(big);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	buf = calloc(1, 8 << 20);
	CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
	n = fread(buf, 1, (8 << 20) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static void test_sinks(void)
{
	char dir[] = "/tmp/bm-accesslog-XXXXXX", a[64], b[64], text[1024];
	struct bm_accesslog_sinks s;
	struct bm_l7_record r = sample();
	json_t *none = res("[]"), *tel;
	char *out;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/a.log", dir);
	snprintf(b, sizeof(b), "%s/b.log", dir);
	snprintf(text, sizeof(text),
		 "[" TEL("istio-system", "mesh", ENVOY) ","
		 TEL("prod", "ns", "{\"accessLogging\":[{\"providers\":[{\"name\":\"file:%s\"},"
		     "{\"name\":\"envoy\"},{\"name\":\"file:%s\"},{\"name\":\"otel\"}]}]}") "]", a, a);
	tel = res(text);
	/* envoy is stdout; one file listed twice is one sink */
	CU_ASSERT_EQUAL(bm_accesslog_sinks(tel, "default", NULL, &s), 0);
	CU_ASSERT_EQUAL(s.n, 1);
	CU_ASSERT_EQUAL(s.fd[0], STDOUT_FILENO);
	CU_ASSERT_EQUAL(bm_accesslog_sinks(tel, "prod", NULL, &s), 0);
	CU_ASSERT_EQUAL_FATAL(s.n, 2);
	CU_ASSERT(s.fd[0] > 2);
	CU_ASSERT_EQUAL(s.fd[1], STDOUT_FILENO);
	s.n = 1;   /* keep the test's stdout clean */
	bm_accesslog_emit(&s, &r);
	bm_accesslog_emit(&s, &r);
	bm_accesslog_write(&r, s.fd[0]);
	out = slurp(a);
	{
		size_t lines = 0;

		for (char *p = out; (p = strchr(p, '\n')); p++)
			lines++;
		CU_ASSERT_EQUAL(lines, 3);
		CU_ASSERT(!strncmp(out, "{\"start_time\":\"2023-11-14T22:13:20.123Z\",", 41));
	}
	free(out);
	/* No Telemetry: nothing, unless --access-log-file (legacy
	 * meshConfig.accessLogFile) is set; a Telemetry that decides wins. */
	CU_ASSERT_EQUAL(bm_accesslog_sinks(none, "prod", NULL, &s), 0);
	CU_ASSERT_EQUAL(s.n, 0);
	bm_accesslog_emit(&s, &r);   /* no sinks: nothing happens */
	CU_ASSERT_EQUAL(bm_accesslog_set_file(b), 0);
	CU_ASSERT_EQUAL(bm_accesslog_sinks(none, "prod", NULL, &s), 0);
	CU_ASSERT_EQUAL_FATAL(s.n, 1);
	bm_accesslog_emit(&s, &r);
	out = slurp(b);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"upstream_host\":\"10.0.2.5:9080\""));
	free(out);
	json_decref(tel);
	tel = res("[" TEL("prod", "ns", OFF) "]");
	CU_ASSERT_EQUAL(bm_accesslog_sinks(tel, "prod", NULL, &s), 0);
	CU_ASSERT_EQUAL(s.n, 0);
	CU_ASSERT_EQUAL(bm_accesslog_set_file(NULL), 0);
	CU_ASSERT_EQUAL(bm_accesslog_sinks(none, "prod", NULL, &s), 0);
	CU_ASSERT_EQUAL(s.n, 0);
	/* A file that cannot be opened is an error, reported. */
	CU_ASSERT(bm_accesslog_set_file("/nonexistent-dir/x.log") < 0);
	json_decref(tel);
	json_decref(none);
	unlink(a);
	unlink(b);
	rmdir(dir);
}

struct writer {
	int fd;
	int id;
};

static void *write_lines(void *arg)
{
	struct writer *w = arg;
	struct bm_l7_record r = sample();
	char path[1200];

	/* a long, different path per writer: lines of ~1.2 KB */
	memset(path, 'a' + w->id, sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = 0;
	r.path = path;
	for (int i = 0; i < 300; i++)
		bm_accesslog_write(&r, w->fd);
	return NULL;
}

static void test_lines_never_interleave(void)
{
	/* Four threads append to one O_APPEND file: every line parses. */
	char dir[] = "/tmp/bm-accesslog-XXXXXX", path[64], text[256];
	struct bm_accesslog_sinks s;
	struct writer w[4];
	pthread_t th[4];
	json_t *tel;
	char *out, *line;
	size_t lines = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/c.log", dir);
	snprintf(text, sizeof(text), "[" TEL("p", "t", "{\"accessLogging\":[{\"providers\":"
					     "[{\"name\":\"file:%s\"}]}]}") "]", path);
	tel = res(text);
	CU_ASSERT_EQUAL(bm_accesslog_sinks(tel, "p", NULL, &s), 0);
	CU_ASSERT_EQUAL_FATAL(s.n, 1);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){ s.fd[0], i };
		pthread_create(&th[i], NULL, write_lines, &w[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	out = slurp(path);
	for (line = out; *line;) {
		char *eol = strchr(line, '\n');
		json_error_t je;
		json_t *j;

		CU_ASSERT_PTR_NOT_NULL_FATAL(eol);
		j = json_loadb(line, (size_t)(eol - line), 0, &je);
		CU_ASSERT_PTR_NOT_NULL(j);
		json_decref(j);
		lines++;
		line = eol + 1;
	}
	CU_ASSERT_EQUAL(lines, 1200);
	free(out);
	json_decref(tel);
	unlink(path);
	rmdir(dir);
}

BM_SUITE(accesslog,
	 BM_CASE(test_wanted_table),
	 BM_CASE(test_line_fields),
	 BM_CASE(test_line_hostile_fields),
	 BM_CASE(test_sinks),
	 BM_CASE(test_lines_never_interleave))
