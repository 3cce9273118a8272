/* Stable ids survive a restart (persisted) and are reused once released. */
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include "unit.h"
#include "../../agent/ids.h"
#include "../../agent/strmap.h"

static void test_ids_persist(void)
{
	char path[] = "/tmp/bm-ids-XXXXXX";
	int fd = mkstemp(path);
	struct bm_ids a, b;
	uint32_t x, y, z;

	CU_ASSERT_FATAL(fd >= 0);
	close(fd);
	unlink(path);
	CU_ASSERT_EQUAL_FATAL(bm_ids_init(&a, path), 0);
	CU_ASSERT_EQUAL(bm_ids_get(&a, BM_ID_BACKEND, "198.18.1.2:80", &x), 0);
	CU_ASSERT_EQUAL(bm_ids_get(&a, BM_ID_BACKEND, "198.18.1.3:80", &y), 0);
	CU_ASSERT_NOT_EQUAL(x, 0);
	CU_ASSERT_NOT_EQUAL(x, y);
	CU_ASSERT_EQUAL(bm_ids_get(&a, BM_ID_BACKEND, "198.18.1.2:80", &z), 0);
	CU_ASSERT_EQUAL(x, z);
	CU_ASSERT_EQUAL(bm_ids_save(&a), 0);

	CU_ASSERT_EQUAL_FATAL(bm_ids_init(&b, path), 0);
	CU_ASSERT_EQUAL(bm_ids_lookup(&b, BM_ID_BACKEND, "198.18.1.3:80", &z), 0);
	CU_ASSERT_EQUAL(z, y);
	/* A new key after reload never collides with a persisted id. */
	CU_ASSERT_EQUAL(bm_ids_get(&b, BM_ID_BACKEND, "198.18.1.4:80", &z), 0);
	CU_ASSERT(z != x && z != y);
	CU_ASSERT_EQUAL(bm_ids_release(&b, BM_ID_BACKEND, "198.18.1.2:80"), 0);
	CU_ASSERT_EQUAL(bm_ids_lookup(&b, BM_ID_BACKEND, "198.18.1.2:80", &z), -ENOENT);
	bm_ids_free(&a);
	bm_ids_free(&b);
	unlink(path);
}

static void test_strmap_grow_and_delete(void)
{
	struct bm_strmap m = { 0 };
	char key[32];
	uint64_t v;

	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT_EQUAL(bm_strmap_set(&m, key, (uint64_t)i), 0);
	}
	for (int i = 0; i < 5000; i += 2) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT_EQUAL(bm_strmap_del(&m, key), 0);
	}
	CU_ASSERT_EQUAL(m.len, 2500);
	CU_ASSERT_EQUAL(bm_strmap_get(&m, "k4999", &v), 0);
	CU_ASSERT_EQUAL(v, 4999);
	CU_ASSERT_EQUAL(bm_strmap_get(&m, "k4998", &v), -ENOENT);
	bm_strmap_free(&m);
}

BM_SUITE(ids, BM_CASE(test_ids_persist), BM_CASE(test_strmap_grow_and_delete))
