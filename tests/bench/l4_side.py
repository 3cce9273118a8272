#!/usr/bin/env python3
"""tests/bench/l4_side.py HIST SECS RATE CLOSE_RATE: the side-by-side part of
l4.md. HIST is l4.sh's l4-side-hist.txt ("round workload vip|direct us
count"): every request of runs that sent every other request to the VIP and
the others to the pod IP. Prints the Markdown section: per workload, pooled
p50/p90/p99 of both paths, VIP/direct with a 95 % interval from resampling
rounds, and issue 6's goal (the kernel L4 path within 2 % of no mesh at p50
and p99) judged on the intervals. Standard library only."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from estimators import hist_pct, lines, pool, pooled_ratio, within_verdict  # noqa: E402


def read(path):
    """{workload: {round: ({us: count} vip, {us: count} direct)}}"""
    out = {}
    for line in lines(path):
        f = line.split()
        if line.startswith("#") or len(f) != 5 or f[2] not in ("vip", "direct"):
            continue
        sides = out.setdefault(f[1], {}).setdefault(int(f[0]), ({}, {}))
        h = sides[0 if f[2] == "vip" else 1]
        h[int(f[3])] = h.get(int(f[3]), 0) + int(f[4])
    return out


def section(data, secs, rate, close_rate):
    names = {"keepalive": f"keep-alive, {rate:,} req/s on 32 connections",
             "close": f"new connection per request, {close_rate:,} req/s, 8 in flight"}
    L = ["", "## Side by side: VIP and pod IP in the same run", "",
         f"bm-load at a fixed rate for {secs} s per run sends every other connection's requests to the",
         "VIP (cgroup/connect4 picks the backend) and the others straight to the pod IP: both paths share",
         "every moment of the machine. The paths swap connections every round. All rounds pooled; the",
         "interval (95 %) comes from resampling whole rounds. Issue 6's goal: the kernel L4 path within",
         "2 % of no mesh at p50 and p99: met when both intervals lie within x0.98–x1.02.", "",
         "| workload | rounds | requests VIP / direct | p50 us VIP / direct | p90 us | p99 us | VIP/direct p50 (95 %) | VIP/direct p99 (95 %) | goal |",
         "|---|---:|---:|---|---|---|---|---|---|"]
    verdicts = {}
    for w in ("keepalive", "close"):
        rounds = data.get(w)
        if not rounds:
            continue
        vip = pool(hv for hv, _ in rounds.values())
        direct = pool(hd for _, hd in rounds.values())
        cells, vs = [], []
        for p in (0.5, 0.99):
            r = pooled_ratio(rounds, p)
            if r is None:
                cells.append("–")
                vs.append("not shown")
                continue
            est, ci = r[0], r[1]
            cells.append(f"x{est:.3f}" + (f" (x{ci[0]:.3f}–x{ci[1]:.3f})" if ci else ""))
            vs.append(within_verdict(ci))
        verdict = "met" if vs == ["met", "met"] else "not met" if "not met" in vs else "not shown"
        verdicts[w] = verdict
        pc = [f"{hist_pct(vip, p)} / {hist_pct(direct, p)}" for p in (0.5, 0.9, 0.99)]
        L.append(f"| {names[w]} | {len(rounds)} | {sum(vip.values()):,} / {sum(direct.values()):,} | "
                 + " | ".join(pc) + " | " + " | ".join(cells) + f" | **{verdict}** |")
    if verdicts:
        L += ["", "**Goal** (issue 6: kernel L4 path within 2 % of no mesh at p50 and p99), side by side: "
              + "; ".join(f"{w} **{v}**" for w, v in verdicts.items())
              + " (not shown: an interval reaches past 2 % because the run is too noisy or too short;"
              " more rounds narrow it)."]
    return L + [""]


if __name__ == "__main__":
    hist, secs, rate, close_rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print("\n".join(section(read(hist), secs, rate, close_rate)))
