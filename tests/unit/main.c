/* Runs every registered CUnit suite; exit status 1 when any assertion failed. */
#include <stdio.h>
#include <string.h>
#include <CUnit/Basic.h>
#include "unit.h"

#define MAX_SUITES 64

static struct {
	const char *name;
	const struct bm_unit_case *cases;
} suites[MAX_SUITES];
static int n_suites;

void bm_unit_register(const char *suite, const struct bm_unit_case *cases)
{
	if (n_suites < MAX_SUITES) {
		suites[n_suites].name = suite;
		suites[n_suites].cases = cases;
		n_suites++;
	}
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	for (int i = 0; i < n_suites; i++) {
		CU_pSuite s;

		if (only && strcmp(only, suites[i].name))
			continue;
		s = CU_add_suite(suites[i].name, NULL, NULL);
		if (!s)
			return 2;
		for (const struct bm_unit_case *c = suites[i].cases; c->name; c++)
			CU_add_test(s, c->name, c->fn);
	}
	CU_basic_set_mode(CU_BRM_NORMAL);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
