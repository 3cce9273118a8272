#!/usr/bin/env python3
"""Checks tests/bench/estimators.py (the scrape benchmark's verdict) on
made-up windows whose true effect is known: no effect is not called a cost,
a clear cost is called one, noise is called noise, and partial or lopsided
windows take no part. Run by `make unit`; standard library only."""
import math
import os
import random
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from estimators import (neighbour_estimate, neighbour_logratios,  # noqa: E402
                        neighbour_verdict, read_perwindow)


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


if __name__ == "__main__":
    unittest.main()
