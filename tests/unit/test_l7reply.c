/* The gRPC helpers of agent/l7reply.c on their own: grpc-status parsing
 * of header and trailer lists, and the local reply's gRPC headers. Found
 * by tests/fuzz/fuzz_grpc.c. */
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../agent/l7upstream.h"

static int status_of(const char *v, size_t vl)
{
	struct bm_http_hdr h = { .name = "grpc-status", .name_len = 11, .value = v, .value_len = vl };

	return l7_grpc_status_of(&h, 1);
}

/* HTTP/1.1 trailers are views into the parser's buffer: the value "1" of
 * "grpc-status: 1" is followed by the next trailer's bytes, not a NUL. */
static void test_grpc_status_within_length(void)
{
	CU_ASSERT_EQUAL(status_of("12x-next", 1), 1);
	CU_ASSERT_EQUAL(status_of("149", 2), 14);
	CU_ASSERT_EQUAL(status_of("0", 1), 0);
	CU_ASSERT_EQUAL(status_of("999", 3), 999);
}

static void test_grpc_status_malformed(void)
{
	CU_ASSERT_EQUAL(status_of("", 0), -1);
	CU_ASSERT_EQUAL(status_of("14x", 3), -1);
	CU_ASSERT_EQUAL(status_of("-1", 2), -1);
	CU_ASSERT_EQUAL(status_of("1 ", 2), -1);
	CU_ASSERT_EQUAL(status_of("1000", 4), -1);
	CU_ASSERT_EQUAL(l7_grpc_status_of(NULL, 0), -1);
}

/* The value is read only within value_len: a block of exactly its size. */
static void test_grpc_status_no_overread(void)
{
	char *v = malloc(2);

	memcpy(v, "14", 2);
	CU_ASSERT_EQUAL(status_of(v, 2), 14);
	free(v);
}

BM_SUITE(l7reply,
	 BM_CASE(test_grpc_status_within_length),
	 BM_CASE(test_grpc_status_malformed),
	 BM_CASE(test_grpc_status_no_overread))
