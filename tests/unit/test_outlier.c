/* The outlier-detection state machine (§2.5, Envoy outlier.rst) on a fake
 * clock: thresholds, resets, the max-ejection-percent cap, ejection time
 * growth and decay. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "unit.h"
#include "../../agent/l7.h"

#define N_IDS 64
#define BASE 30000
#define INTERVAL 10000

static const uint32_t hosts10[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };

static struct bm_outlier_cfg cfg_default(void)
{
	struct bm_outlier_cfg c = {
		.enabled = 1, .consecutive_5xx = 5, .consecutive_gw = 0, .interval_ms = INTERVAL,
		.base_ejection_ms = BASE, .max_ejection_ms = 300000, .max_ejection_pct = 10,
	};
	return c;
}

/* n reports of ev; the return of the last one. */
static int report_n(struct bm_outlier *o, const struct bm_outlier_cfg *c, uint32_t id, const uint32_t *hosts,
		    uint32_t n_hosts, enum bm_outlier_ev ev, int n, uint64_t now)
{
	int rc = 0;

	for (int i = 0; i < n; i++)
		rc = bm_outlier_report(o, c, id, hosts, n_hosts, ev, now);
	return rc;
}

static json_int_t host_field(struct bm_outlier *o, uint32_t id, const char *field)
{
	json_t *j = bm_outlier_json(o);
	char key[16];
	json_t *v;
	json_int_t r = -1;

	snprintf(key, sizeof(key), "%u", id);
	v = json_object_get(json_object_get(j, key), field);
	if (json_is_boolean(v))
		r = json_is_true(v);
	else if (json_is_integer(v))
		r = json_integer_value(v);
	json_decref(j);
	return r;
}

static void test_eject_at_threshold(void)
{
	static const struct {
		const char *what;
		enum bm_outlier_ev ev;
	} kinds[] = {
		{ "5xx", BM_OE_5XX }, { "gateway", BM_OE_GATEWAY }, { "local failure", BM_OE_LOCAL_FAILURE },
	};

	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		struct bm_outlier *o = bm_outlier_new(N_IDS);
		struct bm_outlier_cfg c = cfg_default();

		CU_ASSERT_PTR_NOT_NULL_FATAL(o);
		CU_ASSERT_EQUAL(report_n(o, &c, 3, hosts10, 10, kinds[k].ev, 4, 1000), 0);
		CU_ASSERT_FALSE(bm_outlier_is_ejected(o, 3));
		CU_ASSERT_EQUAL(host_field(o, 3, "consecutive"), 4);
		CU_ASSERT_EQUAL(bm_outlier_report(o, &c, 3, hosts10, 10, kinds[k].ev, 1000), 1);
		CU_ASSERT_TRUE(bm_outlier_is_ejected(o, 3));
		CU_ASSERT_EQUAL(bm_outlier_ejections_total(o), 1);
		CU_ASSERT_EQUAL(host_field(o, 3, "until_ms"), 1000 + BASE);
		/* further errors while ejected: no second ejection */
		CU_ASSERT_EQUAL(report_n(o, &c, 3, hosts10, 10, kinds[k].ev, 10, 1001), 0);
		CU_ASSERT_EQUAL(bm_outlier_ejections_total(o), 1);
		CU_ASSERT_FALSE(bm_outlier_is_ejected(o, 4));
		bm_outlier_free(o);
	}
}

static void test_success_resets(void)
{
	struct bm_outlier *o = bm_outlier_new(N_IDS);
	struct bm_outlier_cfg c = cfg_default();

	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_5XX, 4, 0), 0);
	CU_ASSERT_EQUAL(bm_outlier_report(o, &c, 1, hosts10, 10, BM_OE_SUCCESS, 0), 0);
	CU_ASSERT_EQUAL(host_field(o, 1, "consecutive"), -1);   /* nothing left to show */
	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_GATEWAY, 4, 0), 0);
	CU_ASSERT_FALSE(bm_outlier_is_ejected(o, 1));
	CU_ASSERT_EQUAL(bm_outlier_report(o, &c, 1, hosts10, 10, BM_OE_LOCAL_FAILURE, 0), 1);
	bm_outlier_free(o);
}

static void test_gateway_errors(void)
{
	struct bm_outlier *o = bm_outlier_new(N_IDS);
	struct bm_outlier_cfg c = cfg_default();

	c.consecutive_5xx = 0;   /* only gateway errors */
	c.consecutive_gw = 3;
	/* plain 5xx never ejects here, and clears the gateway run */
	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_5XX, 50, 0), 0);
	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_GATEWAY, 2, 0), 0);
	CU_ASSERT_EQUAL(bm_outlier_report(o, &c, 1, hosts10, 10, BM_OE_5XX, 0), 0);
	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_GATEWAY, 2, 0), 0);
	CU_ASSERT_FALSE(bm_outlier_is_ejected(o, 1));
	CU_ASSERT_EQUAL(bm_outlier_report(o, &c, 1, hosts10, 10, BM_OE_LOCAL_FAILURE, 0), 1);
	/* both detectors on: the lower threshold fires first */
	c.consecutive_5xx = 5;
	c.consecutive_gw = 2;
	CU_ASSERT_EQUAL(report_n(o, &c, 2, hosts10, 10, BM_OE_GATEWAY, 1, 0), 0);
	CU_ASSERT_EQUAL(bm_outlier_report(o, &c, 2, hosts10, 10, BM_OE_GATEWAY, 0), 0);   /* cap: 1 of 10 */
	c.max_ejection_pct = 20;
	CU_ASSERT_EQUAL(report_n(o, &c, 2, hosts10, 10, BM_OE_GATEWAY, 2, 0), 1);
	bm_outlier_free(o);
}

static void test_max_ejection_percent(void)
{
	static const struct {
		const char *what;
		uint32_t n_hosts;
		uint8_t pct;
		int max_ejected;
	} cases[] = {
		{ "10 % of 10", 10, 10, 1 },
		{ "30 % of 10", 10, 30, 3 },
		{ "10 % of 5: at least one", 5, 10, 1 },
		{ "0 %: still one", 10, 0, 1 },
		{ "50 % of 3", 3, 50, 1 },
		{ "67 % of 3", 3, 67, 2 },
		{ "100 % of 4", 4, 100, 4 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bm_outlier *o = bm_outlier_new(N_IDS);
		struct bm_outlier_cfg c = cfg_default();
		int ejected = 0;

		c.max_ejection_pct = cases[i].pct;
		for (uint32_t h = 0; h < cases[i].n_hosts; h++)
			ejected += report_n(o, &c, hosts10[h], hosts10, cases[i].n_hosts, BM_OE_5XX, 5, 0);
		if (ejected != cases[i].max_ejected)
			fprintf(stderr, "\n  cap '%s': %d ejected\n", cases[i].what, ejected);
		CU_ASSERT_EQUAL(ejected, cases[i].max_ejected);
		CU_ASSERT_EQUAL(bm_outlier_ejections_total(o), (uint64_t)cases[i].max_ejected);
		bm_outlier_free(o);
	}
}

static void test_cap_then_retry(void)
{
	struct bm_outlier *o = bm_outlier_new(N_IDS);
	struct bm_outlier_cfg c = cfg_default();
	uint32_t ids[4];

	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_5XX, 5, 0), 1);
	/* host 2 reaches the threshold while host 1 fills the cap: spared,
	 * and its counter starts over */
	CU_ASSERT_EQUAL(report_n(o, &c, 2, hosts10, 10, BM_OE_5XX, 5, 0), 0);
	CU_ASSERT_FALSE(bm_outlier_is_ejected(o, 2));
	CU_ASSERT_EQUAL(bm_outlier_tick(o, BASE, ids, 4), 1);
	CU_ASSERT_EQUAL(ids[0], 1);
	CU_ASSERT_EQUAL(report_n(o, &c, 2, hosts10, 10, BM_OE_5XX, 4, BASE), 0);
	CU_ASSERT_EQUAL(bm_outlier_report(o, &c, 2, hosts10, 10, BM_OE_5XX, BASE), 1);
	/* hosts of another cluster do not count against this one's cap */
	{
		static const uint32_t other[] = { 20, 21 };

		c.max_ejection_pct = 50;
		CU_ASSERT_EQUAL(report_n(o, &c, 20, other, 2, BM_OE_5XX, 5, BASE), 1);
	}
	bm_outlier_free(o);
}

static void test_return_and_growth(void)
{
	struct bm_outlier *o = bm_outlier_new(N_IDS);
	struct bm_outlier_cfg c = cfg_default();
	uint32_t ids[4];
	uint64_t t = 1000;

	CU_ASSERT_EQUAL(report_n(o, &c, 7, hosts10, 10, BM_OE_5XX, 5, t), 1);
	CU_ASSERT_EQUAL(bm_outlier_tick(o, t + BASE - 1, ids, 4), 0);
	CU_ASSERT_TRUE(bm_outlier_is_ejected(o, 7));
	CU_ASSERT_EQUAL(bm_outlier_tick(o, t + BASE, ids, 4), 1);
	CU_ASSERT_EQUAL(ids[0], 7);
	CU_ASSERT_FALSE(bm_outlier_is_ejected(o, 7));
	CU_ASSERT_EQUAL(host_field(o, 7, "times"), 1);
	CU_ASSERT_EQUAL(host_field(o, 7, "ejected"), 0);

	/* ejected again before an interval of health: twice the base */
	t += BASE + 1000;
	CU_ASSERT_EQUAL(report_n(o, &c, 7, hosts10, 10, BM_OE_5XX, 5, t), 1);
	CU_ASSERT_EQUAL(host_field(o, 7, "times"), 2);
	CU_ASSERT_EQUAL(bm_outlier_tick(o, t + 2 * BASE - 1, ids, 4), 0);
	CU_ASSERT_EQUAL(bm_outlier_tick(o, t + 2 * BASE, ids, 4), 1);
	CU_ASSERT_EQUAL(bm_outlier_ejections_total(o), 2);
	bm_outlier_free(o);
}

static void test_max_ejection_time(void)
{
	struct bm_outlier *o = bm_outlier_new(N_IDS);
	struct bm_outlier_cfg c = cfg_default();
	uint32_t ids[4];
	uint64_t t = 0;

	/* eject, return, eject at once again: base x k up to the 300 s cap */
	for (int k = 1; k <= 14; k++) {
		uint64_t want = (uint64_t)BASE * (uint64_t)k < 300000 ? (uint64_t)BASE * (uint64_t)k : 300000;

		CU_ASSERT_EQUAL(report_n(o, &c, 5, hosts10, 10, BM_OE_GATEWAY, 5, t), 1);
		CU_ASSERT_EQUAL(host_field(o, 5, "until_ms"), (json_int_t)(t + want));
		CU_ASSERT_EQUAL(bm_outlier_tick(o, t + want - 1, ids, 4), 0);
		CU_ASSERT_EQUAL(bm_outlier_tick(o, t + want, ids, 4), 1);
		t += want;
	}
	/* the multiplier stops growing once base x times reaches max + base,
	 * so a long run does not take ages to decay */
	CU_ASSERT_EQUAL(host_field(o, 5, "times"), 11);

	/* a base above 300 s: the cap is the base itself */
	c.base_ejection_ms = 400000;
	c.max_ejection_ms = 400000;
	CU_ASSERT_EQUAL(report_n(o, &c, 6, hosts10, 10, BM_OE_5XX, 5, t), 1);
	CU_ASSERT_EQUAL(host_field(o, 6, "until_ms"), (json_int_t)(t + 400000));
	CU_ASSERT_EQUAL(bm_outlier_tick(o, t + 400000, ids, 4), 1);
	CU_ASSERT_EQUAL(report_n(o, &c, 6, hosts10, 10, BM_OE_5XX, 5, t + 400000), 1);
	CU_ASSERT_EQUAL(host_field(o, 6, "until_ms"), (json_int_t)(t + 800000));
	bm_outlier_free(o);
}

static void test_multiplier_decay(void)
{
	struct bm_outlier *o = bm_outlier_new(N_IDS);
	struct bm_outlier_cfg c = cfg_default();
	uint32_t ids[4];
	uint64_t t = 0, back;

	/* times 3 */
	for (int k = 1; k <= 3; k++) {
		CU_ASSERT_EQUAL(report_n(o, &c, 9, hosts10, 10, BM_OE_5XX, 5, t), 1);
		t += (uint64_t)BASE * (uint64_t)k;
		CU_ASSERT_EQUAL(bm_outlier_tick(o, t, ids, 4), 1);
	}
	back = t;
	CU_ASSERT_EQUAL(host_field(o, 9, "times"), 3);
	/* one step per whole interval of health */
	bm_outlier_tick(o, back + INTERVAL - 1, ids, 4);
	CU_ASSERT_EQUAL(host_field(o, 9, "times"), 3);
	bm_outlier_tick(o, back + INTERVAL, ids, 4);
	CU_ASSERT_EQUAL(host_field(o, 9, "times"), 2);
	bm_outlier_tick(o, back + INTERVAL + 5000, ids, 4);   /* ticks in between change nothing */
	CU_ASSERT_EQUAL(host_field(o, 9, "times"), 2);
	bm_outlier_tick(o, back + 2 * INTERVAL, ids, 4);
	CU_ASSERT_EQUAL(host_field(o, 9, "times"), 1);
	/* ejected now: times 1 -> 2, twice the base */
	t = back + 2 * INTERVAL + 1;
	CU_ASSERT_EQUAL(report_n(o, &c, 9, hosts10, 10, BM_OE_5XX, 5, t), 1);
	CU_ASSERT_EQUAL(host_field(o, 9, "until_ms"), (json_int_t)(t + 2 * BASE));
	/* no decay while ejected */
	bm_outlier_tick(o, t + 2 * BASE - 1, ids, 4);
	CU_ASSERT_EQUAL(host_field(o, 9, "times"), 2);
	CU_ASSERT_EQUAL(bm_outlier_tick(o, t + 2 * BASE, ids, 4), 1);
	back = t + 2 * BASE;
	/* a late tick catches up: three intervals, two steps left to take */
	bm_outlier_tick(o, back + 3 * INTERVAL, ids, 4);
	CU_ASSERT_EQUAL(host_field(o, 9, "times"), -1);   /* nothing left: times 0, counters 0 */
	t = back + 3 * INTERVAL;
	CU_ASSERT_EQUAL(report_n(o, &c, 9, hosts10, 10, BM_OE_5XX, 5, t), 1);
	CU_ASSERT_EQUAL(host_field(o, 9, "until_ms"), (json_int_t)(t + BASE));
	bm_outlier_free(o);
}

static void test_disabled(void)
{
	struct bm_outlier *o = bm_outlier_new(N_IDS);
	struct bm_outlier_cfg c = cfg_default();
	uint32_t ids[4];

	c.enabled = 0;   /* no outlierDetection block */
	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_5XX, 100, 0), 0);
	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_LOCAL_FAILURE, 100, 0), 0);
	c.enabled = 1;   /* both detectors off */
	c.consecutive_5xx = 0;
	c.consecutive_gw = 0;
	CU_ASSERT_EQUAL(report_n(o, &c, 2, hosts10, 10, BM_OE_GATEWAY, 100, 0), 0);
	CU_ASSERT_FALSE(bm_outlier_is_ejected(o, 1));
	CU_ASSERT_FALSE(bm_outlier_is_ejected(o, 2));
	CU_ASSERT_EQUAL(bm_outlier_ejections_total(o), 0);
	CU_ASSERT_EQUAL(bm_outlier_tick(o, 1000000, ids, 4), 0);
	bm_outlier_free(o);
}

static void test_tick_room_and_ids(void)
{
	struct bm_outlier *o = bm_outlier_new(N_IDS);
	struct bm_outlier_cfg c = cfg_default();
	uint32_t ids[4] = { 0 };
	json_t *j;

	c.max_ejection_pct = 100;
	CU_ASSERT_EQUAL(report_n(o, &c, 1, hosts10, 10, BM_OE_5XX, 5, 0), 1);
	CU_ASSERT_EQUAL(report_n(o, &c, 2, hosts10, 10, BM_OE_5XX, 5, 0), 1);
	/* room for one: the other waits for the next tick, still ejected */
	CU_ASSERT_EQUAL(bm_outlier_tick(o, BASE, ids, 1), 1);
	CU_ASSERT_EQUAL(ids[0], 1);
	CU_ASSERT_TRUE(bm_outlier_is_ejected(o, 2));
	CU_ASSERT_EQUAL(bm_outlier_tick(o, BASE + 1, ids, 1), 1);
	CU_ASSERT_EQUAL(ids[0], 2);
	/* the highest id of the table works like any other */
	{
		static const uint32_t top[] = { N_IDS - 1 };

		CU_ASSERT_EQUAL(report_n(o, &c, N_IDS - 1, top, 1, BM_OE_5XX, 5, 0), 1);
		CU_ASSERT_EQUAL(bm_outlier_tick(o, BASE + 2, ids, 4), 1);
		CU_ASSERT_EQUAL(ids[0], N_IDS - 1);
	}
	/* ids outside the table, and the unknown id 0 */
	CU_ASSERT_EQUAL(bm_outlier_report(o, &c, N_IDS, hosts10, 10, BM_OE_5XX, 0), -ERANGE);
	CU_ASSERT_EQUAL(report_n(o, &c, 0, hosts10, 10, BM_OE_5XX, 10, 0), 0);
	CU_ASSERT_FALSE(bm_outlier_is_ejected(o, N_IDS + 5));
	/* the admin view */
	CU_ASSERT_EQUAL(report_n(o, &c, 3, hosts10, 10, BM_OE_GATEWAY, 2, 0), 0);
	j = bm_outlier_json(o);
	CU_ASSERT_TRUE(json_is_object(j));
	CU_ASSERT_EQUAL(json_object_size(j), 4);
	CU_ASSERT_TRUE(json_is_false(json_object_get(json_object_get(j, "1"), "ejected")));
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "1"), "times")), 1);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "3"), "consecutive")), 2);
	json_decref(j);
	bm_outlier_free(o);
}

BM_SUITE(outlier, BM_CASE(test_eject_at_threshold), BM_CASE(test_success_resets),
	 BM_CASE(test_gateway_errors), BM_CASE(test_max_ejection_percent), BM_CASE(test_cap_then_retry),
	 BM_CASE(test_return_and_growth), BM_CASE(test_max_ejection_time), BM_CASE(test_multiplier_decay),
	 BM_CASE(test_disabled), BM_CASE(test_tick_room_and_ids))
