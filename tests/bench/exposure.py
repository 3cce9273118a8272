#!/usr/bin/env python3
"""tests/bench/exposure.py: the exposure estimator's input for l7.sh's
scrape workload (estimators.py says what it judges). Reads bm-load's
--trace-out of every run and the scraper's fetches, and writes, per round
and run, the latency table of the requests of the scraped windows ("all")
and, for each guard, of those of them that overlapped no scrape nor the
guard after it ("unexposed"). Every scrape counts as long as the median one:
a fetch that a stall of the machine stretched would otherwise stretch its
exposure over the stall's slow requests, which the scrape did not cause.
The unscraped control gets virtual scrapes at the scraper's moments, as long.

usage: exposure.py --traces DIR --scrapes FILE --period S --guards "MS ..." --out FILE
DIR holds trace-ROUND-SCENARIO-PARITY.txt; FILE is l7.sh's l7-scrape.txt
("round node_ip http_code bytes seconds start", start in CLOCK_MONOTONIC s)."""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from estimators import lines, merge_intervals, read_trace, schedule, split_exposed  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--traces", required=True)
ap.add_argument("--scrapes", required=True)
ap.add_argument("--period", type=float, required=True)
ap.add_argument("--guards", default="0 20 100")
ap.add_argument("--out", required=True)
o = ap.parse_args()
guards = [int(g) for g in o.guards.split()]

# Scrape moments per round: the fetches of one moment (both nodes, one after
# the other) merged into one interval, in us.
fetches = {}
for line in lines(o.scrapes):
    f = line.split()
    if line.startswith("#") or len(f) != 6:
        continue
    s = float(f[5]) * 1e6
    fetches.setdefault(int(f[0]), []).append((s, s + float(f[4]) * 1e6))
events = {r: merge_intervals((s, e + 1000) for s, e in v) for r, v in fetches.items()}
events = {r: [(s, e - 1000) for s, e in v] for r, v in events.items()}
durs = [e - s for v in events.values() for s, e in v]
virtual_dur = statistics.median(durs) if durs else 2000.0
events = {r: [(s, s + virtual_dur) for s, _ in v] for r, v in events.items()}

with open(o.out, "w") as out:
    out.write("# round scenario guard_ms side latency_us count: requests of the scraped windows "
              "(all), and those that overlapped no scrape nor the guard after it (unexposed); "
              f"every scrape, real or virtual, taken as {virtual_dur / 1e3:.3f} ms long (the median)\n")
    for name in sorted(os.listdir(o.traces)):
        m = re.fullmatch(r"trace-(\d+)-([\w-]+)-([01])\.txt", name)
        if not m:
            continue
        r, scen, par = int(m.group(1)), m.group(2), int(m.group(3))
        trace = read_trace(os.path.join(o.traces, name))
        if not trace:
            continue
        if scen == "l7-scraped":
            iv = events.get(r, [])
        else:
            lo = min(d for d, _ in trace)
            hi = max(d + x for d, x in trace)
            iv = schedule(lo, hi, o.period, par, virtual_dur)
        for i, g in enumerate(guards):
            h_all, h_un, _ = split_exposed(trace, iv, g * 1000, o.period, par)
            if i == 0:
                for us in sorted(h_all):
                    out.write(f"{r} {scen} - all {us} {h_all[us]}\n")
            for us in sorted(h_un):
                out.write(f"{r} {scen} {g} unexposed {us} {h_un[us]}\n")
