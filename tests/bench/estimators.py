"""tests/bench/estimators.py: how the scrape benchmark (l7.sh's scrape
workload) judges issue 5's goal, apart from report.py so that
test_estimators.py can check it on made-up windows. Standard library only."""
import bisect
import math
import random
import statistics


def lines(path):
    """The lines of the file at path ([] for no path), the file closed."""
    if not path:
        return []
    with open(path) as f:
        return f.readlines()


def read_perwindow(path):
    """{(scenario, round): {window: (side, requests, p99_us)}} from l7.sh's
    l7-scrape-perwindow.txt."""
    runs = {}
    try:
        for line in lines(path):
            f = line.split()
            if line.startswith("#") or len(f) != 9:
                continue
            runs.setdefault((f[1], int(f[0])), {})[int(f[3])] = (f[2], int(f[4]), float(f[7]))
    except (OSError, ValueError):
        return {}
    return runs


def neighbour_logratios(windows):
    """Each scraped window's p99 against the quiet windows just before and
    after it: ln p99(w) - (ln p99(w-1) + ln p99(w+1)) / 2. Windows with fewer
    than 80 % of the run's median request count (the partial first and last
    ones) take no part."""
    if not windows:
        return []
    full = statistics.median(n for _, n, _ in windows.values()) * 0.8
    ok = {w: v for w, v in windows.items() if v[1] >= full and v[2] > 0}
    out = []
    for w, (side, _, p99) in sorted(ok.items()):
        a, b = ok.get(w - 1), ok.get(w + 1)
        if side != "scraped" or not a or not b or a[0] != "quiet" or b[0] != "quiet":
            continue
        out.append(math.log(p99) - (math.log(a[2]) + math.log(b[2])) / 2)
    return out


def neighbour_estimate(by_round, resamples=2000):
    """exp(median) of the log-ratios of all rounds, and a 95 % interval from
    resampling whole rounds (windows of one round share the machine's state;
    rounds are the independent units). Fixed seed: the same data give the
    same report."""
    rounds = [v for v in by_round.values() if v]
    allv = [x for v in rounds for x in v]
    if not allv:
        return None
    est = math.exp(statistics.median(allv))
    if len(rounds) < 3:
        return est, None, None, len(allv), len(rounds)
    rnd, meds = random.Random(1), []
    for _ in range(resamples):
        pick = [x for _ in rounds for x in rounds[rnd.randrange(len(rounds))]]
        meds.append(math.exp(statistics.median(pick)))
    meds.sort()
    lo, hi = meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]
    return est, lo, hi, len(allv), len(rounds)


def neighbour_verdict(scraped, control, limit=0.02):
    """not met: the scraped run's whole interval above x(1 + limit); met: its
    whole interval within the limit of x1 and the control's interval holding
    x1 (the estimator finds no effect where there is none); otherwise not
    shown."""
    ctl_ok = control is not None and control[1] is not None and control[1] <= 1 <= control[2]
    lo, hi = scraped[1], scraped[2]
    if lo is None:
        return "not shown"
    if lo >= 1 + limit:
        return "not met"
    if ctl_ok and 1 - limit < lo and hi < 1 + limit:
        return "met"
    return "not shown"


def hist_pct(h, p):
    """Nearest-rank percentile (bm-load's) of a {latency_us: count} table."""
    n = sum(h.values())
    if not n:
        return None
    rank, seen = max(1, math.ceil(p * n)), 0
    for v in sorted(h):
        seen += h[v]
        if seen >= rank:
            return v
    return None


class Pooled:
    """Percentiles of {us: count} tables added up with multiplicities (a
    resample of rounds), by binary search over each table's prefix sums: a
    resample costs a few hundred additions, not a pass over every value.
    Nearest rank, as hist_pct."""

    def __init__(self, hists):
        self.keys = sorted(set().union(*hists))
        idx = {k: i for i, k in enumerate(self.keys)}
        self.pre = []
        for h in hists:
            c = [0] * len(self.keys)
            for k, v in h.items():
                c[idx[k]] += v
            acc, out = 0, []
            for x in c:
                acc += x
                out.append(acc)
            self.pre.append(out)

    def pct(self, mult, p):
        tabs = [(m, pre) for m, pre in zip(mult, self.pre) if m and pre]
        n = sum(m * pre[-1] for m, pre in tabs)
        if not n:
            return None
        rank, lo, hi = max(1, math.ceil(p * n)), 0, len(self.keys) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if sum(m * pre[mid] for m, pre in tabs) >= rank:
                hi = mid
            else:
                lo = mid + 1
        return self.keys[lo]


def pooled_ratio(by_round, p, resamples=1000):
    """by_round: {round: ({us: count} of side x, {us: count} of side y)}, the
    two sides measured side by side in each round. Returns (ratio of the
    pooled p-th percentiles x/y, 95 % interval from resampling whole rounds or
    None with fewer than 3 rounds, requests of x, requests of y), or None."""
    rounds = [v for v in by_round.values() if v[0] and v[1]]
    if not rounds:
        return None
    px, py = Pooled([hx for hx, _ in rounds]), Pooled([hy for _, hy in rounds])

    def ratio(mult):
        a, b = px.pct(mult, p), py.pct(mult, p)
        return a / b if a and b else None

    est = ratio([1] * len(rounds))
    if est is None:
        return None
    nx = sum(sum(hx.values()) for hx, _ in rounds)
    ny = sum(sum(hy.values()) for _, hy in rounds)
    if len(rounds) < 3:
        return est, None, nx, ny
    rnd, rs = random.Random(1), []
    for _ in range(resamples):
        mult = [0] * len(rounds)
        for _ in rounds:
            mult[rnd.randrange(len(rounds))] += 1
        r = ratio(mult)
        if r is not None:
            rs.append(r)
    rs.sort()
    return est, (rs[int(0.025 * len(rs))], rs[int(0.975 * len(rs)) - 1]), nx, ny


def within_verdict(interval, limit=0.02):
    """met: the whole interval within the limit of x1; not met: the whole
    interval outside it on one side; otherwise not shown."""
    if interval is None:
        return "not shown"
    lo, hi = interval
    if 1 - limit < lo and hi < 1 + limit:
        return "met"
    if lo >= 1 + limit or hi <= 1 - limit:
        return "not met"
    return "not shown"


def pool(hists):
    """One {us: count} table of several."""
    out = {}
    for h in hists:
        for v, c in h.items():
            out[v] = out.get(v, 0) + c
    return out


def together_overheads(by_round, p=0.99, base="direct", a="mesh-x", b="sidecar", resamples=1000):
    """by_round: {round: {scenario: {us: count}}} of paths measured at the same
    time. Returns {"a": (est, interval), "b": ..., "ratio": ...}: the p-th
    percentile's overhead over base in us of a and of b, and a's over b's;
    intervals (95 %) from resampling whole rounds, None with fewer than 3
    rounds. A resample in which b's overhead is not positive has no ratio."""
    rounds = [v for v in by_round.values() if all(v.get(k) for k in (base, a, b))]
    if not rounds:
        return None

    def figures(rs):
        q = {k: hist_pct(pool(r[k] for r in rs), p) for k in (base, a, b)}
        oa, ob = q[a] - q[base], q[b] - q[base]
        return oa, ob, (oa / ob if ob > 0 else None)

    est = figures(rounds)
    out = {"a": [est[0], None], "b": [est[1], None], "ratio": [est[2], None], "rounds": len(rounds)}
    if len(rounds) >= 3:
        rnd, acc = random.Random(1), ([], [], [])
        for _ in range(resamples):
            f = figures([rounds[rnd.randrange(len(rounds))] for _ in rounds])
            for i in range(3):
                if f[i] is not None:
                    acc[i].append(f[i])
        for i, k in enumerate(("a", "b", "ratio")):
            v = sorted(acc[i])
            # every resample must give a figure, or the interval says nothing
            if len(v) == resamples:
                out[k][1] = (v[int(0.025 * len(v))], v[int(0.975 * len(v)) - 1])
    return out


def below_verdict(interval, limit):
    """met: the whole interval below limit; not met: the whole interval at or
    above it; otherwise (or no interval) not shown."""
    if interval is None:
        return "not shown"
    if interval[1] < limit:
        return "met"
    if interval[0] >= limit:
        return "not met"
    return "not shown"


def read_together(path):
    """{round: {scenario: {us: count}}} from mesh.sh's mesh-together-hist.txt."""
    out = {}
    try:
        for line in lines(path):
            f = line.split()
            if line.startswith("#") or len(f) != 4:
                continue
            h = out.setdefault(int(f[0]), {}).setdefault(f[1], {})
            h[int(f[2])] = h.get(int(f[2]), 0) + int(f[3])
    except (OSError, ValueError):
        return {}
    return out


# The exposure estimator. A scrape can only slow the requests that are in
# flight while meshd serves it, or soon after (work queued behind it). Within
# one run, the p99 of every request of the scraped windows is set against the
# p99 of the same requests without those that overlapped a scrape or the
# guard after it: the requests compared are the same ones, so the machine's
# drift and stalls are on both sides, and what is left is what the exposed
# requests did to the tail. With no effect, leaving out requests at moments
# chosen without looking at them leaves the percentiles where they were (the
# control shows it, with virtual scrapes at the same moments of the unscraped
# run). An effect that outlasts the guard is not seen: the guard (20 ms by
# default, ten times a typical scrape) has to cover the work queued behind a
# scrape; a longer guard shows whether anything lasts, and the window
# estimator above, coarser, covers whole windows.

def read_trace(path):
    """[(due_us, latency_us)] from bm-load --trace-out."""
    out = []
    for line in lines(path):
        f = line.split()
        if len(f) == 2:
            out.append((int(f[0]), int(f[1])))
    return out


def merge_intervals(iv):
    """Sorted, non-overlapping (start, end) pairs covering the same time."""
    out = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def schedule(t_lo_us, t_hi_us, period_s, parity, dur_us, offset_s=0.25):
    """The scraper's moments between t_lo_us and t_hi_us (l7.sh's
    next_scrape: offset_s + k seconds into every window of the given parity),
    each taken as an interval of dur_us: the control's virtual scrapes."""
    out, p = [], period_s * 1e6
    w = math.floor(t_lo_us / p)
    while w * p <= t_hi_us:
        if w % 2 == parity:
            k = offset_s
            while k < period_s:
                s = w * p + k * 1e6
                if t_lo_us <= s <= t_hi_us:
                    out.append((s, s + dur_us))
                k += 1.0
        w += 1
    return out


def split_exposed(trace, intervals, guard_us, period_s, parity):
    """({us: count} of the requests scheduled in windows of the given parity,
    {us: count} of those of them that overlapped no interval nor the guard
    after it, the number left out). A request occupies [due, due + latency]."""
    iv = merge_intervals((s, e + guard_us) for s, e in intervals)
    starts = [s for s, _ in iv]
    p = period_s * 1e6
    h_all, h_un, n_exp = {}, {}, 0
    for due, lat in trace:
        if math.floor(due / p) % 2 != parity:
            continue
        h_all[lat] = h_all.get(lat, 0) + 1
        i = bisect.bisect_right(starts, due + lat) - 1
        if i >= 0 and iv[i][1] >= due:
            n_exp += 1
            continue
        h_un[lat] = h_un.get(lat, 0) + 1
    return h_all, h_un, n_exp


def median_interval(rs, resamples=2000):
    """(median of the per-round figures rs, 95 % interval from resampling
    them with a fixed seed or None with fewer than 3, len(rs)), or None."""
    if not rs:
        return None
    est = statistics.median(rs)
    if len(rs) < 3:
        return est, None, len(rs)
    rnd = random.Random(1)
    meds = sorted(statistics.median([rs[rnd.randrange(len(rs))] for _ in rs]) for _ in range(resamples))
    return est, (meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]), len(rs)


def median_ratio(by_round, p, resamples=2000):
    """by_round as pooled_ratio's. The median over rounds of each round's
    p-th percentile ratio x/y, with a 95 % interval from resampling rounds
    (None with fewer than 3): one round whose tail a stall decided moves a
    pooled percentile, not the median. Returns (median, interval, rounds)."""
    rs = []
    for hx, hy in by_round.values():
        a, b = hist_pct(hx, p), hist_pct(hy, p)
        if a and b:
            rs.append(a / b)
    return median_interval(rs, resamples)


def paired_ratio(scraped, control, p, resamples=2000):
    """scraped, control: {round: ({us: count} all, {us: count} not
    exposed)} of the two runs of each round, the control's exposure at the
    same moments with nobody scraping. Each round's p-th percentile ratio
    all / not exposed of the scraped run over the control's: what the
    moments themselves do to the tail (periodic work of the machine lands at
    fixed moments of the second) cancels, what the scrape did stays. The
    median over rounds, a 95 % interval from resampling rounds (None with
    fewer than 3), and the number of rounds."""
    rs = []
    for r in sorted(scraped):
        if r not in control:
            continue
        q = []
        for hx, hy in (scraped[r], control[r]):
            a, b = hist_pct(hx, p), hist_pct(hy, p)
            q.append(a / b if a and b else None)
        if None not in q:
            rs.append(q[0] / q[1])
    return median_interval(rs, resamples)


def paired_verdict(paired, limit=0.02, min_rounds=5):
    """met: the paired interval within the limit of x1; not met: wholly
    above x(1 + limit); otherwise, or with fewer than min_rounds rounds, not
    shown."""
    if not paired or paired[1] is None or paired[2] < min_rounds:
        return "not shown"
    lo, hi = paired[1]
    if lo >= 1 + limit:
        return "not met"
    if 1 - limit < lo and hi < 1 + limit:
        return "met"
    return "not shown"
