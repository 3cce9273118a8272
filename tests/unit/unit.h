/* Unit test registry: each tests/unit/test_*.c registers its suite with
 * BM_SUITE() and main.c runs them all, so adding a file needs no edit here. */
#ifndef BM_UNIT_H
#define BM_UNIT_H
#include <CUnit/CUnit.h>

struct bm_unit_case {
	const char *name;
	void (*fn)(void);
};

void bm_unit_register(const char *suite, const struct bm_unit_case *cases);

#define BM_SUITE(suite, ...)                                                   \
	static const struct bm_unit_case suite##_cases[] = { __VA_ARGS__,      \
							     { 0, 0 } };       \
	__attribute__((constructor)) static void suite##_register(void)       \
	{                                                                      \
		bm_unit_register(#suite, suite##_cases);                       \
	}
#define BM_CASE(fn) { #fn, fn }

#endif
