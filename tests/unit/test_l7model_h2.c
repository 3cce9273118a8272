/* Resources -> the L7 configuration, HTTP/2 and gRPC parts: the upstream
 * protocol of a cluster (the port's protocol or name, h2UpgradePolicy,
 * useClientProtocol) and fault.abort.grpcStatus. JSON with ' for ". */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../agent/l7.h"

static struct bm_l7_config *build_json(const char *text)
{
	char *buf = strdup(text);
	struct bm_l7_config *cfg = NULL;
	json_error_t e;
	json_t *j;
	FILE *log = fopen("/dev/null", "w");

	for (char *p = buf; *p; p++)
		if (*p == '\'')
			*p = '"';
	j = json_loads(buf, 0, &e);
	free(buf);
	if (!j)
		fprintf(stderr, "test JSON: %s at %d:%d\n", e.text, e.line, e.column);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT_EQUAL_FATAL(bm_l7_build(j, &cfg, log), 0);
	fclose(log);
	json_decref(j);
	return cfg;
}

#define SE(name, vip, pname, proto, app)                                                      \
	"{'kind':'ServiceEntry','metadata':{'name':'" name "','namespace':'d'},"               \
	"'spec':{'hosts':['" name "'],'addresses':['" vip "'],'ports':[{'number':80,"         \
	"'name':'" pname "'" proto "}],'workloadSelector':{'labels':{'app':'" app "'}}}}"
#define WE(name, ip, app)                                                                     \
	"{'kind':'WorkloadEntry','metadata':{'name':'" name "','namespace':'d'},"              \
	"'spec':{'address':'" ip "','labels':{'app':'" app "'}}}"
/* A VirtualService that makes the port L7 (a timeout). */
#define VS(name)                                                                              \
	"{'kind':'VirtualService','metadata':{'name':'" name "','namespace':'d'},"             \
	"'spec':{'hosts':['" name "'],'http':[{'timeout':'5s','route':[{'destination':"        \
	"{'host':'" name "'}}]}]}}"
#define DR(name, http)                                                                        \
	"{'kind':'DestinationRule','metadata':{'name':'" name "','namespace':'d'},"            \
	"'spec':{'host':'" name "','trafficPolicy':{'connectionPool':{'http':" http "}}}}"

static uint8_t proto_of(const struct bm_l7_config *c, const char *vip)
{
	const struct bm_l7_service *s = bm_l7_find(c, inet_addr(vip), 80);

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s->route[0].dest[0].c);
	return s->route[0].dest[0].c->proto;
}

static void test_upstream_protocol(void)
{
	struct bm_l7_config *c = build_json("["
		SE("g", "198.19.9.1", "grpc", ",'protocol':'GRPC'", "g") "," WE("g1", "198.18.9.1", "g") "," VS("g") ","
		SE("h2", "198.19.9.2", "web", ",'protocol':'HTTP2'", "h2") "," WE("h21", "198.18.9.2", "h2") "," VS("h2") ","
		SE("h1", "198.19.9.3", "web", ",'protocol':'HTTP'", "h1") "," WE("h11", "198.18.9.3", "h1") "," VS("h1") ","
		SE("up", "198.19.9.4", "web", ",'protocol':'HTTP'", "up") "," WE("up1", "198.18.9.4", "up") "," VS("up") ","
		DR("up", "{'h2UpgradePolicy':'UPGRADE'}") ","
		SE("auto", "198.19.9.5", "web", "", "auto") "," WE("au1", "198.18.9.5", "auto") "," VS("auto") ","
		SE("named", "198.19.9.6", "grpc-api", "", "named") "," WE("n1", "198.18.9.6", "named") "," VS("named") ","
		SE("cli", "198.19.9.7", "http-x", "", "cli") "," WE("c1", "198.18.9.7", "cli") "," VS("cli") ","
		DR("cli", "{'useClientProtocol':true}")
		"]");

	CU_ASSERT_EQUAL(proto_of(c, "198.19.9.1"), BM_L7_UP_H2);         /* GRPC */
	CU_ASSERT_EQUAL(proto_of(c, "198.19.9.2"), BM_L7_UP_H2);         /* HTTP2 */
	CU_ASSERT_EQUAL(proto_of(c, "198.19.9.3"), BM_L7_UP_H1);         /* HTTP */
	CU_ASSERT_EQUAL(proto_of(c, "198.19.9.4"), BM_L7_UP_H2);         /* h2UpgradePolicy */
	CU_ASSERT_EQUAL(proto_of(c, "198.19.9.5"), BM_L7_UP_DOWNSTREAM); /* unset: sniffed */
	CU_ASSERT_EQUAL(proto_of(c, "198.19.9.6"), BM_L7_UP_H2);         /* name grpc-... */
	CU_ASSERT_EQUAL(proto_of(c, "198.19.9.7"), BM_L7_UP_DOWNSTREAM); /* useClientProtocol */
	bm_l7_put(c);
}

static void test_fault_grpc_status(void)
{
	struct bm_l7_config *c = build_json("["
		SE("g", "198.19.9.1", "grpc", ",'protocol':'GRPC'", "g") "," WE("g1", "198.18.9.1", "g") ","
		"{'kind':'VirtualService','metadata':{'name':'g','namespace':'d'},"
		"'spec':{'hosts':['g'],'http':[{'fault':{'abort':{'grpcStatus':'UNAVAILABLE',"
		"'percentage':{'value':50}}},'route':[{'destination':{'host':'g'}}]}]}}"
		"]");
	const struct bm_l7_service *s = bm_l7_find(c, inet_addr("198.19.9.1"), 80);

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(s->route[0].fault.abort_grpc, 14 + 1);
	CU_ASSERT_EQUAL(s->route[0].fault.abort_status, 200);
	CU_ASSERT_EQUAL(s->route[0].fault.abort_ppm, 500000);
	bm_l7_put(c);
}

BM_SUITE(l7model_h2,
	 BM_CASE(test_upstream_protocol),
	 BM_CASE(test_fault_grpc_status))
