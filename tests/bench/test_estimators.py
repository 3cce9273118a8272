#!/usr/bin/env python3
"""Checks tests/bench/estimators.py (the scrape benchmark's verdict) on
made-up windows whose true effect is known: no effect is not called a cost,
a clear cost is called one, noise is called noise, and partial or lopsided
windows take no part. Run by `make unit`; standard library only."""
import bisect
import math
import os
import random
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from estimators import (below_verdict, hist_pct, median_ratio, merge_intervals, paired_ratio,  # noqa: E402
                        paired_verdict,
                        neighbour_estimate, neighbour_logratios, neighbour_verdict, pooled_ratio,
                        read_perwindow, read_together, read_trace, schedule, split_exposed,
                        together_overheads, within_verdict)
import l4_side  # noqa: E402


def run(rnd, effect, sigma, rounds=20, windows=20, first=1000):
    """{round: log-ratios} of made-up runs: alternating sides (the scraped
    parity flips with the round, as l7.sh does), p99 log-normal around
    400 us, the scraped side multiplied by effect."""
    out = {}
    for r in range(rounds):
        par = r % 2
        wins = {}
        for w in range(first, first + windows):
            side = "scraped" if w % 2 == par else "quiet"
            p99 = 400 * math.exp(rnd.gauss(0, sigma)) * (effect if side == "scraped" else 1)
            wins[w] = (side, 4000, p99)
        out[r] = neighbour_logratios(wins)
    return out


def read_progs_text(text):
    """l4_side.read_progs of an l4-progs.txt holding text."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        return l4_side.read_progs(f.name)
    finally:
        os.unlink(f.name)


class Estimators(unittest.TestCase):
    def test_no_effect_quiet_machine_is_met(self):
        rnd = random.Random(7)
        sc = neighbour_estimate(run(rnd, 1.0, 0.02))
        ctl = neighbour_estimate(run(rnd, 1.0, 0.02))
        self.assertLess(abs(sc[0] - 1), 0.01)
        self.assertEqual(neighbour_verdict(sc, ctl), "met")

    def test_clear_cost_is_not_met(self):
        rnd = random.Random(8)
        sc = neighbour_estimate(run(rnd, 1.10, 0.02))
        ctl = neighbour_estimate(run(rnd, 1.0, 0.02))
        self.assertGreater(sc[1], 1.05)
        self.assertEqual(neighbour_verdict(sc, ctl), "not met")

    def test_small_cost_on_quiet_machine_is_not_met(self):
        # 4 % is twice the goal's limit: a quiet machine must see it.
        rnd = random.Random(9)
        sc = neighbour_estimate(run(rnd, 1.04, 0.01, rounds=30))
        ctl = neighbour_estimate(run(rnd, 1.0, 0.01, rounds=30))
        self.assertEqual(neighbour_verdict(sc, ctl), "not met")

    def test_noisy_machine_is_not_shown(self):
        rnd = random.Random(10)
        sc = neighbour_estimate(run(rnd, 1.0, 0.3, rounds=6))
        ctl = neighbour_estimate(run(rnd, 1.0, 0.3, rounds=6))
        self.assertGreater(sc[2] - sc[1], 0.04)
        self.assertEqual(neighbour_verdict(sc, ctl), "not shown")

    def test_control_off_is_not_shown(self):
        sc = (1.0, 0.995, 1.005, 100, 20)
        self.assertEqual(neighbour_verdict(sc, (1.05, 1.03, 1.07, 100, 20)), "not shown")
        self.assertEqual(neighbour_verdict(sc, None), "not shown")
        self.assertEqual(neighbour_verdict(sc, (1.0, 0.99, 1.01, 100, 20)), "met")
        # a clear cost is a cost whatever the control says
        self.assertEqual(neighbour_verdict((1.1, 1.05, 1.15, 100, 20), (1.05, 1.03, 1.07, 100, 20)),
                         "not met")

    def test_partial_and_lopsided_windows_take_no_part(self):
        wins = {
            10: ("scraped", 900, 9000.0),   # partial first window: out
            11: ("quiet", 4000, 400.0),
            12: ("scraped", 4000, 440.0),   # both neighbours quiet and full: in
            13: ("quiet", 4000, 400.0),
            14: ("scraped", 4000, 800.0),   # right neighbour missing: out
        }
        lr = neighbour_logratios(wins)
        self.assertEqual(len(lr), 1)
        self.assertAlmostEqual(math.exp(lr[0]), 1.1, places=6)
        self.assertEqual(neighbour_logratios({}), [])

    def test_resampling_is_repeatable(self):
        rnd = random.Random(11)
        data = run(rnd, 1.0, 0.1, rounds=8)
        self.assertEqual(neighbour_estimate(data), neighbour_estimate(data))
        self.assertIsNone(neighbour_estimate({1: [], 2: []}))
        self.assertIsNone(neighbour_estimate({1: [0.0], 2: [0.0]})[1])

    def test_read_perwindow(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("# header\n"
                    "3 l7-scraped scraped 31096 4000 151 254 772 2079\n"
                    "3 l7-scraped quiet 31097 4000 156 256 636 3256\n"
                    "3 l7 quiet 31097 bad line\n")
        try:
            runs = read_perwindow(f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual(runs, {("l7-scraped", 3): {31096: ("scraped", 4000, 772.0),
                                                     31097: ("quiet", 4000, 636.0)}})
        self.assertEqual(read_perwindow("/nonexistent/perwindow.txt"), {})


def side_rounds(rnd, effect, n_rounds, n=5000, jitter=0.0):
    """{round: (hist x, hist y)}: both sides drawn from the same log-normal
    latencies (the round's own level, as a machine drifts), x times effect."""
    out = {}
    for r in range(n_rounds):
        level = 300 * math.exp(rnd.gauss(0, jitter))
        hx, hy = {}, {}
        for _ in range(n):
            v = int(level * math.exp(rnd.gauss(0, 0.3)) * effect)
            hx[v] = hx.get(v, 0) + 1
            v = int(level * math.exp(rnd.gauss(0, 0.3)))
            hy[v] = hy.get(v, 0) + 1
        out[r] = (hx, hy)
    return out


class SideBySide(unittest.TestCase):
    def test_hist_pct_nearest_rank(self):
        h = {100: 98, 200: 1, 900: 1}
        self.assertEqual(hist_pct(h, 0.5), 100)
        self.assertEqual(hist_pct(h, 0.99), 200)
        self.assertEqual(hist_pct(h, 1.0), 900)
        self.assertIsNone(hist_pct({}, 0.5))

    def test_same_paths_are_within(self):
        # Rounds at different levels (drift) do not matter: both sides share them.
        rnd = random.Random(3)
        data = side_rounds(rnd, 1.0, 10, n=10000, jitter=0.3)
        for p in (0.5, 0.99):
            est, ci, nx, ny = pooled_ratio(data, p)
            self.assertEqual((nx, ny), (100000, 100000))
            self.assertLess(abs(est - 1), 0.02)
            self.assertEqual(within_verdict(ci), "met")

    def test_a_slower_path_is_not_met(self):
        rnd = random.Random(4)
        est, ci, _, _ = pooled_ratio(side_rounds(rnd, 1.06, 10, jitter=0.5), 0.5)
        self.assertGreater(ci[0], 1.02)
        self.assertEqual(within_verdict(ci), "not met")

    def test_few_rounds_are_not_shown(self):
        rnd = random.Random(5)
        est, ci, _, _ = pooled_ratio(side_rounds(rnd, 1.0, 2), 0.5)
        self.assertIsNone(ci)
        self.assertEqual(within_verdict(ci), "not shown")
        self.assertEqual(within_verdict((0.97, 1.01)), "not shown")
        self.assertEqual(within_verdict((0.90, 0.97)), "not met")
        self.assertIsNone(pooled_ratio({}, 0.5))

    def test_l4_side_report(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("# header\n")
            for r in range(1, 5):
                for path in ("vip", "direct"):
                    f.write(f"{r} keepalive {path} 100 980\n{r} keepalive {path} 150 20\n")
                f.write(f"{r} close vip 300 1000\n{r} close direct 200 1000\n")
            f.write("1 keepalive other 5 5\nbad\n")
        try:
            data = l4_side.read(f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual(data["keepalive"][1], ({100: 980, 150: 20}, {100: 980, 150: 20}))
        text = "\n".join(l4_side.section(data, 10, 2000, 1000))
        self.assertIn("keep-alive, 2,000 req/s on 32 connections | 4 | 4,000 / 4,000 | 100 / 100 |", text)
        self.assertIn("keepalive **met**; close **not met**", text)

    def test_l4_progs(self):
        progs = read_progs_text(
            "# header\n"
            # keep-alive: 32 connections' worth of runs, nothing per request
            "keepalive vip bm_connect4 32 134400 10000 32\nkeepalive vip bm_sockops 416 83200 10000 32\n"
            "keepalive direct bm_connect4 32 19200 10000 32\nkeepalive direct bm_sockops 288 43200 10000 32\n"
            "close vip bm_connect4 5000 21000000 5000 8\nclose vip bm_sockops 65000 13000000 5000 8\n"
            "close direct bm_connect4 5000 3000000 5000 8\nclose direct bm_sockops 45000 6750000 5000 8\n"
            "close direct bm_getpeername4 0 0 5000 8\nbad line\n")
        self.assertEqual(progs[("close", "vip")][1]["bm_connect4"], (5000, 21000000))
        self.assertAlmostEqual(l4_side.after_connect(progs, "vip"), 0.0)
        self.assertAlmostEqual(l4_side.after_connect(progs, "direct"), 0.0)
        L, ka = l4_side.progs_section(progs)
        text = "\n".join(L)
        self.assertIn("| close | vip | 5,000 | bm_connect4 | 1.000 | 4,200 | 4,200 |", text)
        self.assertIn("a new connection to the VIP runs 14.0 program calls (6.80 us) against 10.0 (1.95 us)", text)
        self.assertNotIn("bm_getpeername4", text)
        # programs per request on one path: not the same path
        progs[("keepalive", "vip")][1]["bm_sockops"] = (416 + 20000, 83200)
        self.assertAlmostEqual(l4_side.after_connect(progs, "vip"), 2.0)
        self.assertIsNone(l4_side.after_connect({}, "vip"))

    def test_l4_progs_connections_column(self):
        # Written with the connections each run opened: 16 keep-alive
        # connections, each costing what a close run's connection costs.
        progs = read_progs_text(
            "keepalive vip bm_connect4 16 67200 10000 16\nkeepalive vip bm_sockops 208 41600 10000 16\n"
            "close vip bm_connect4 5000 21000000 5000 4\nclose vip bm_sockops 65000 13000000 5000 4\n")
        self.assertEqual(progs[("keepalive", "vip")].conns, 16)
        self.assertEqual(progs[("close", "vip")].conns, 4)
        self.assertAlmostEqual(l4_side.after_connect(progs, "vip"), 0.0)
        self.assertIn("opening its 16 connections", "\n".join(l4_side.progs_section(progs)[0]).replace("\n", " "))

    def test_l4_keepalive_same_path(self):
        rounds = {r: ({100: 980, 150: 20 + (r % 2)}, {100: 980, 150: 20 + ((r + 1) % 2)}) for r in range(1, 7)}
        rnd = random.Random(2)
        for r in rounds:  # noisy enough that 2 % is not shown
            for h in rounds[r]:
                for _ in range(200):
                    v = int(100 * math.exp(rnd.gauss(0, 0.5)))
                    h[v] = h.get(v, 0) + 1
        data = {"keepalive": rounds}
        plain = "\n".join(l4_side.section(data, 10, 2000, 1000))
        self.assertIn("keepalive **not shown**", plain)
        same = "\n".join(l4_side.section(data, 10, 2000, 1000, {"vip": 0.0, "direct": 0.0}))
        self.assertIn("keepalive **met (same path)**", same)
        busy = "\n".join(l4_side.section(data, 10, 2000, 1000, {"vip": 2.0, "direct": 0.0}))
        self.assertIn("keepalive **not shown**", busy)


def together_rounds(rnd, add_mesh, add_side, n_rounds, n=4000):
    """{round: {scenario: hist}}: direct's latencies log-normal around the
    round's level, the proxies' the same plus a fixed overhead in us."""
    out = {}
    for r in range(n_rounds):
        level = 200 * math.exp(rnd.gauss(0, 0.3))
        rr = {}
        for s, add in (("direct", 0), ("mesh-x", add_mesh), ("sidecar", add_side)):
            h = {}
            for _ in range(n):
                v = int(level * math.exp(rnd.gauss(0, 0.4)) + add)
                h[v] = h.get(v, 0) + 1
            rr[s] = h
        out[r] = rr
    return out


class Together(unittest.TestCase):
    def test_overheads_and_ratio(self):
        t = together_overheads(together_rounds(random.Random(21), 60, 300, 8))
        self.assertEqual(t["rounds"], 8)
        self.assertTrue(40 < t["a"][0] < 80, t["a"])
        self.assertTrue(260 < t["b"][0] < 340, t["b"])
        self.assertTrue(0.1 < t["ratio"][0] < 0.3, t["ratio"])
        self.assertEqual(below_verdict(t["ratio"][1], 0.5), "met")
        self.assertEqual(below_verdict(t["a"][1], 200), "met")

    def test_equal_overheads_are_not_met(self):
        t = together_overheads(together_rounds(random.Random(22), 300, 300, 8))
        self.assertEqual(below_verdict(t["ratio"][1], 0.5), "not met")
        self.assertEqual(below_verdict(t["a"][1], 200), "not met")

    def test_no_interval_without_rounds_or_overhead(self):
        t = together_overheads(together_rounds(random.Random(23), 50, 300, 2))
        self.assertIsNone(t["a"][1])
        self.assertEqual(below_verdict(t["a"][1], 200), "not shown")
        # a sidecar that adds nothing: no ratio, no verdict
        t = together_overheads({r: {"direct": {100: 10}, "mesh-x": {150: 10}, "sidecar": {100: 10}}
                                for r in range(4)})
        self.assertIsNone(t["ratio"][0])
        self.assertIsNone(t["ratio"][1])
        self.assertIsNone(together_overheads({1: {"direct": {100: 1}}}))
        self.assertEqual(below_verdict((0.4, 0.6), 0.5), "not shown")

    def test_read_together(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("# header\n2 direct 100 5\n2 direct 100 1\n2 mesh-x 180 6\nbad line\n")
        try:
            self.assertEqual(read_together(f.name), {2: {"direct": {100: 6}, "mesh-x": {180: 6}}})
        finally:
            os.unlink(f.name)
        self.assertEqual(read_together(""), {})


def exposure_run(rnd, slow, rounds=10, secs=10, rate=2000, scrape_ms=1.5, guard_ms=100, stall=0.0, phase=1.0):
    """(paired ratio, the scraped run's unpaired median ratio) of made-up runs at `rate`
    req/s: latencies log-normal around 300 us; scrapes once in every
    scraped 1-second window (l7.sh's moments); a request in flight during a
    scrape takes `slow` times longer (the control has none). `stall`: the
    share of seconds in which the whole machine is 20x slower, scrape or
    not. `phase`: requests due in the second half of every second are that
    many times slower in both runs (the machine's work aligned to whole
    seconds), which makes the moments after a scrape quieter than the rest."""
    sc, ctl = {}, {}
    for r in range(rounds):
        par = (r + 1) % 2
        t0 = (1000 + 100 * r) * 1_000_000
        real = schedule(t0, t0 + secs * 1_000_000, 1.0, par, scrape_ms * 1000)
        starts = [s for s, _ in real]
        for name, out in (("l7-scraped", sc), ("l7", ctl)):
            stalled = {s for s in range(secs) if rnd.random() < stall}
            trace = []
            for i in range(secs * rate):
                due = t0 + i * 1_000_000 // rate
                lat = 300 * math.exp(rnd.gauss(0, 0.4))
                if (due - t0) % 1_000_000 >= 500_000:
                    lat *= phase
                if (due - t0) // 1_000_000 in stalled:
                    lat *= 20
                if name == "l7-scraped":
                    k = bisect.bisect_right(starts, due + lat) - 1
                    if k >= 0 and real[k][1] >= due:
                        lat *= slow
                trace.append((due, int(lat)))
            h_all, h_un, _ = split_exposed(trace, real, guard_ms * 1000, 1.0, par)
            out[r] = (h_all, h_un)
    return paired_ratio(sc, ctl, 0.99, resamples=300), median_ratio(sc, 0.99, resamples=300)


class Exposure(unittest.TestCase):
    def test_merge_and_schedule(self):
        self.assertEqual(merge_intervals([(5, 7), (1, 3), (2, 4), (8, 9)]), [(1, 4), (5, 7), (8, 9)])
        # one moment 0.25 s into every window of parity 1 (odd seconds)
        iv = schedule(10_000_000, 15_000_000, 1.0, 1, 2000)
        self.assertEqual([s for s, _ in iv], [11_250_000, 13_250_000])
        self.assertEqual(iv[0][1] - iv[0][0], 2000)
        # half-second windows: a moment in every other one, i.e. every second
        self.assertEqual(len(schedule(0, 10_000_000, 0.5, 0, 1000)), 10)

    def test_split_exposed(self):
        iv = [(1_250_000, 1_252_000)]
        trace = [(1_100_000, 100),      # before the scrape
                 (1_249_000, 2000),     # in flight when it starts
                 (1_251_000, 100),      # during it
                 (1_300_000, 100),      # within a 100 ms guard
                 (1_400_000, 100),      # after the guard
                 (2_251_000, 100)]      # a window of the other parity
        h_all, h_un, n = split_exposed(trace, iv, 100_000, 1.0, 1)
        self.assertEqual(sum(h_all.values()), 5)
        self.assertEqual(n, 3)
        self.assertEqual(sorted(h_un), [100])
        self.assertEqual(h_un[100], 2)
        _, _, n0 = split_exposed(trace, iv, 0, 1.0, 1)
        self.assertEqual(n0, 2)

    def test_no_effect_is_met(self):
        pr, _ = exposure_run(random.Random(3), 1.0)
        self.assertEqual(paired_verdict(pr), "met", pr)

    def test_no_effect_on_a_stalling_machine_is_not_a_cost(self):
        # stalls hit both sides of the comparison: no cost is made up
        pr, _ = exposure_run(random.Random(4), 1.0, stall=0.05)
        self.assertNotEqual(paired_verdict(pr), "not met", pr)
        self.assertLess(abs(pr[0] - 1), 0.02)

    def test_the_moments_own_tail_cancels(self):
        # the second half of each second slower in both runs: leaving out
        # the (quieter) moments after 0.25 s raises the p99 by itself, unpaired
        pr, unpaired = exposure_run(random.Random(6), 1.0, phase=1.5)
        self.assertLess(unpaired[1][1], 0.99, unpaired)
        self.assertEqual(paired_verdict(pr), "met", pr)

    def test_a_cost_is_not_met(self):
        # 20 ms scrapes that make the requests they touch 30x slower: 4 % of
        # the scraped windows' requests exposed, well above the tail
        pr, _ = exposure_run(random.Random(5), 30.0, scrape_ms=20)
        self.assertEqual(paired_verdict(pr), "not met", pr)

    def test_paired_verdict(self):
        self.assertEqual(paired_verdict((1.005, (0.99, 1.015), 20)), "met")
        self.assertEqual(paired_verdict((1.10, (1.05, 1.20), 20)), "not met")
        self.assertEqual(paired_verdict((1.01, (0.99, 1.03), 20)), "not shown")
        self.assertEqual(paired_verdict((1.0, (0.995, 1.005), 4)), "not shown")   # too few rounds
        self.assertEqual(paired_verdict((1.0, None, 2)), "not shown")
        self.assertEqual(paired_verdict(None), "not shown")
        one = {100: 99, 1000: 1}
        pr = paired_ratio({1: (one, one), 2: (one, one), 3: (one, one)}, {1: (one, one), 2: (one, one)}, 0.99)
        self.assertEqual(pr[0], 1.0)
        self.assertEqual(pr[2], 2)           # rounds without a control take no part
        self.assertIsNone(pr[1])

    def test_median_ratio(self):
        one = {100: 99, 1000: 1}
        slow = {100: 98, 5000: 2}
        by_round = {r: (slow if r == 0 else one, one) for r in range(9)}
        m = median_ratio(by_round, 0.99)
        self.assertEqual(m[0], 1.0)             # one odd round does not move the median
        self.assertEqual(m[2], 9)
        self.assertLessEqual(m[1][0], 1.0)
        p = pooled_ratio(by_round, 0.998)
        self.assertGreater(p[0], 1.0)           # it moves the pooled tail
        self.assertIsNone(median_ratio({}, 0.99))
        self.assertIsNone(median_ratio({1: (one, one)}, 0.99)[1])

    def test_read_trace(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("1000 250\n2000 300\nbad\n")
        try:
            self.assertEqual(read_trace(f.name), [(1000, 250), (2000, 300)])
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    unittest.main()
