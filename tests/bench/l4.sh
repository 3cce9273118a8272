#!/usr/bin/env bash
# tests/bench/l4.sh: the kernel L4 path's cost. A benchmark, not a test: it
# reports, it does not judge.
#
# Client pod on node1, bm-testsrv pod on node2. The same server is reached
# through a ServiceEntry VIP (cgroup/connect4 rewrites the destination) and
# straight at its pod IP, side by side, in interleaved rounds (VIP, direct,
# VIP, direct...) so drift on the machine hits both alike. Measured:
#   - wrk -H 'Connection: close': a new TCP connection per HTTP request
#   - wrk keep-alive: requests on open connections (the VIP costs nothing here
#     by design: one lookup per connect, none per packet)
#   - bm-probe, sequential: connect + banner read latency per connection
# Medians over the rounds of p50, p99 and req/s, and the VIP/direct ratios, go
# to $RESULTS/l4.md (default build/bench/) as a Markdown table.
#
# Side by side in one run (the goal of issue 6: the kernel L4 path within 2%
# of no mesh at p50 and p99): bm-load at a fixed rate sends every other
# request to the VIP and the others straight to the pod IP, on keep-alive
# connections and with a new connection per request, so both paths see the
# same moments of the machine; which path gets the even connections swaps
# every round. All rounds' latencies are pooled per path (l4-side-hist.txt);
# the report gives VIP/direct at p50 and p99 with a 95% interval from
# resampling whole rounds, and judges the goal on it.
#
# Env: BENCH_ROUNDS (3), BENCH_SECONDS (5), BENCH_CONNS (16 wrk connections),
#      BENCH_PROBE_N (2000 sequential connections per bm-probe round),
#      BENCH_SIDE_SECONDS (10 per side-by-side run), BENCH_SIDE_RATE (2000
#      req/s keep-alive), BENCH_SIDE_CLOSE_RATE (1000 new connections/s),
#      BENCH_PROG_SECONDS (5 per run of the kernel-programs phase, 0 skips it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BPFMESH_BUILD:-$ROOT/build}
RESULTS=${RESULTS:-$BUILD/bench}
SANDBOX=$ROOT/scripts/sandbox
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-16}
PROBE_N=${BENCH_PROBE_N:-2000}
SIDE_SECS=${BENCH_SIDE_SECONDS:-10}
SIDE_RATE=${BENCH_SIDE_RATE:-2000}
SIDE_CLOSE_RATE=${BENCH_SIDE_CLOSE_RATE:-1000}
SIDE_CONNS=32 SIDE_CLOSE_CONNS=8   # keep-alive connections; new connections in flight
PROG_SECS=${BENCH_PROG_SECONDS:-5}
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)
LOAD=$BUILD/bench/bm-load
VIP=198.19.10.10
HOST=bench.bench.svc.cluster.local

for b in "$BUILD/meshd" "$BUILD/meshctl" "$BUILD/tools/bm-probe" "$BUILD/tools/bm-testsrv"; do
  [ -x "$b" ] || { echo "l4.sh: $b missing (run make)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "l4.sh: wrk missing (make deps)" >&2; exit 1; }
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] && [ "$SECS" -ge 1 ] && [ "$SECS" -le 60 ] &&
  [ "$SIDE_SECS" -ge 1 ] && [ "$SIDE_SECS" -le 60 ] && [ "$PROG_SECS" -ge 0 ] && [ "$PROG_SECS" -le 60 ] ||
  { echo "l4.sh: BENCH_ROUNDS 1..20, BENCH_SECONDS and BENCH_SIDE_SECONDS 1..60" >&2; exit 2; }

TMP=$(mktemp -d /tmp/bpfmesh-bench.XXXXXX)
export BPFMESH_STORE=file://$TMP/store BPFMESH_RUN=${BPFMESH_RUN:-/run/bpfmesh}
SRV_PID=""
OURS=0
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"
bench_build_tool bm-load "$LOAD" || { echo "l4.sh: cannot build bm-load" >&2; exit 1; }
cleanup() {
  set +e
  sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS" 2>/dev/null
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null
  [ $OURS = 1 ] && bench_sandbox_down
  [ -n "$SRV_PID" ] && wait "$SRV_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
mkdir -p "$TMP/store" "$RESULTS"

# Never take down someone else's sandbox: wait (bounded) for it to go.
bench_sandbox_up "${BENCH_WAIT:-600}" 2 || exit 1
OURS=1
"$SANDBOX" pod add bench-srv --node node2 --namespace bench --labels app=bench >/dev/null
"$SANDBOX" pod add bench-client --node node1 >/dev/null
SRV_IP=$("$SANDBOX" ip bench-srv)
"$SANDBOX" exec bench-srv -- "$BUILD/tools/bm-testsrv" --id bench --http-port 8080 --port 9000 \
  2>"$TMP/srv.log" &
SRV_PID=$!
"$BUILD/meshctl" apply -f - >/dev/null <<YAML
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: bench
  namespace: bench
spec:
  hosts:
  - $HOST
  addresses:
  - $VIP
  ports:
  - number: 80
    name: http
    protocol: TCP
    targetPort: 8080
  - number: 9000
    name: tcp-banner
    protocol: TCP
    targetPort: 9000
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels:
      app: bench
YAML
# Until every node applied the store, and the VIP answers.
for _ in $(seq 100); do
  out=$("$SANDBOX" exec bench-client -- "$BUILD/tools/bm-probe" --connect $VIP:9000 -n 1 --timeout-ms 500 2>/dev/null || true)
  [[ $out == *'"ok":1'* ]] && break
  sleep 0.1
done
[[ $out == *'"ok":1'* ]] || { echo "l4.sh: the VIP does not answer: $out" >&2; exit 1; }

# wrk_run NAME URL [ARGS]: one wrk run, prints "p50_us p99_us rps".
wrk_run() {
  local url=$2; shift 2
  "$SANDBOX" exec bench-client -- timeout $((SECS + 15)) wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$@" "$url" \
    >"$TMP/wrk.out" 2>&1 || true
  python3 - "$TMP/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def us(v, u):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[u]
lat = {m.group(1): us(m.group(2), m.group(3))
       for m in re.finditer(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
errs = re.search(r"Socket errors: (.*)", t)
if errs: print("wrk socket errors: " + errs.group(1), file=sys.stderr)
if not rps or not float(rps.group(1)):
    sys.stderr.write("l4.sh: wrk measured nothing:\n" + t)
    sys.exit(1)
print(lat.get("50", 0), lat.get("99", 0), rps.group(1))
PY
}

# probe_run TARGET: sequential connections; prints "p50_us p99_us conns_per_s".
probe_run() {
  local t0 t1
  t0=$(date +%s.%N)
  "$SANDBOX" exec bench-client -- "$BUILD/tools/bm-probe" --connect "$1" -n "$PROBE_N" >"$TMP/probe.out" 2>&1 || true
  t1=$(date +%s.%N)
  python3 - "$TMP/probe.out" "$t0" "$t1" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
try:
    d = json.loads(t.strip().splitlines()[-1])
    assert d["ok"] > 0
except Exception:
    sys.stderr.write("l4.sh: bm-probe failed:\n" + t)
    sys.exit(1)
secs = float(sys.argv[3]) - float(sys.argv[2])
print(d["conn_p50_us"], d["conn_p99_us"], round(d["ok"] / secs, 1))
PY
}

# side_run ROUND WORKLOAD [--close]: bm-load to the VIP and the pod IP at
# once; appends "round workload vip|direct us count" lines to $SIDE_HIST.
# Odd rounds give the VIP the even connections, even rounds the odd ones.
side_run() {
  local r=$1 w=$2 rate=$SIDE_RATE conns=$SIDE_CONNS a b; shift 2
  [ "${1:-}" = --close ] && { rate=$SIDE_CLOSE_RATE; conns=$SIDE_CLOSE_CONNS; }
  if [ $((r % 2)) = 1 ]; then a=vip b=direct; else a=direct b=vip; fi
  local -A to=([vip]=$VIP:80 [direct]=$SRV_IP:8080)
  rm -f "$TMP/side.hist"
  "$SANDBOX" exec bench-client -- timeout $((SIDE_SECS + 20)) "$LOAD" --addr "${to[$a]}" --addr2 "${to[$b]}" \
    --rate "$rate" --conns $conns --duration "$SIDE_SECS" --warmup 0.5 --hist-out "$TMP/side.hist" "$@" \
    >"$TMP/side.out" 2>&1 || true
  [ -s "$TMP/side.hist" ] || { echo "l4.sh: bm-load failed: $(tail -3 "$TMP/side.out")" >&2; exit 1; }
  awk -v p="$r $w" -v a=$a -v b=$b '$1 == "a" { print p, a, $2, $3 } $1 == "b" { print p, b, $2, $3 }' \
    "$TMP/side.hist" >>"$SIDE_HIST"
  echo "$r $w $a=even $(tail -1 "$TMP/side.out")" >>"$SIDE_RAW"
}

# prog_totals: "name runs run_time_ns" of the bpfmesh programs (bm_*) loaded on
# the machine, both nodes' summed by name (kernel.bpf_stats_enabled counts).
prog_totals() {
  bpftool -j prog show | python3 -c '
import json, sys
t = {}
for p in json.load(sys.stdin):
    n = p.get("name", "")
    if n.startswith("bm_"):
        a = t.setdefault(n, [0, 0])
        a[0] += p.get("run_cnt", 0)
        a[1] += p.get("run_time_ns", 0)
for n, (c, ns) in sorted(t.items()):
    print(n, c, ns)'
}

# prog_run WORKLOAD PATH [--close]: bm-load on one path alone, the programs'
# counters before and after; appends "workload path program runs ns
# requests conns" lines to $PROGS (requests: every one sent; conns: the
# connections bm-load opened, whose programs keep-alive counts include).
prog_run() {
  local w=$1 p=$2 rate=$SIDE_RATE conns=$SIDE_CONNS to=$VIP:80 n; shift 2
  [ "${1:-}" = --close ] && { rate=$SIDE_CLOSE_RATE; conns=$SIDE_CLOSE_CONNS; }
  [ "$p" = direct ] && to=$SRV_IP:8080
  prog_totals >"$TMP/p0"
  "$SANDBOX" exec bench-client -- timeout $((PROG_SECS + 20)) "$LOAD" --addr "$to" --rate "$rate" --conns $conns \
    --duration "$PROG_SECS" --warmup 0 "$@" >"$TMP/prog.out" 2>&1 || true
  prog_totals >"$TMP/p1"
  n=$(python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["sent"])' \
    "$TMP/prog.out" 2>/dev/null) || { echo "l4.sh: bm-load failed: $(tail -3 "$TMP/prog.out")" >&2; exit 1; }
  join <(sort "$TMP/p0") <(sort "$TMP/p1") | awk -v w="$w" -v p="$p" -v n="$n" -v c="$conns" '{ print w, p, $1, $4 - $2, $5 - $3, n, c }' >>"$PROGS"
}

RAW=$TMP/raw.txt
: >"$RAW"
PROGS=$RESULTS/l4-progs.txt
echo "# workload path program runs run_time_ns requests conns: the bpfmesh programs' counters (kernel.bpf_stats_enabled) over one run on one path" >"$PROGS"
SIDE_HIST=$RESULTS/l4-side-hist.txt SIDE_RAW=$RESULTS/l4-side-raw.txt
echo "# round workload path latency_us count: every request of the side-by-side runs" >"$SIDE_HIST"
echo "# round workload path-of-the-even-connections bm-load's JSON (a: even connections, b: odd)" >"$SIDE_RAW"
echo "l4.sh: $ROUNDS rounds x {close, keep-alive} x {VIP, direct} x ${SECS}s wrk -c$CONNS, plus $PROBE_N sequential connects," \
  "plus VIP and direct side by side ${SIDE_SECS}s at $SIDE_RATE req/s keep-alive and $SIDE_CLOSE_RATE conn/s" >&2
for r in $(seq "$ROUNDS"); do
  for target in vip direct; do
    if [ $target = vip ]; then url=http://$VIP/; dst=$VIP:9000; else url=http://$SRV_IP:8080/; dst=$SRV_IP:9000; fi
    res=$(wrk_run close "$url" -H 'Connection: close'); echo "close $target $res" >>"$RAW"
    res=$(wrk_run keepalive "$url"); echo "keepalive $target $res" >>"$RAW"
    res=$(probe_run "$dst"); echo "connect $target $res" >>"$RAW"
  done
  side_run "$r" keepalive
  side_run "$r" close --close
  echo "l4.sh: round $r/$ROUNDS done" >&2
done

# What the kernel path runs per request and per connection, after the timed
# runs: bpf_stats adds two clock reads to every program run, so it is on only
# here.
if [ "$PROG_SECS" -gt 0 ]; then
  sysctl -qw kernel.bpf_stats_enabled=1
  for p in vip direct; do
    prog_run keepalive $p
    prog_run close $p --close
  done
  sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
fi

stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
python3 - "$RAW" "$RESULTS/l4.md" "$stamp" "$ROUNDS" "$SECS" "$CONNS" "$PROBE_N" "$(uname -r)" "$(nproc)" <<'PY'
import statistics, sys
raw, out, stamp, rounds, secs, conns, probe_n, kernel, cpus = sys.argv[1:]
rows = {}
for line in open(raw):
    f = line.split()
    if len(f) != 5: continue
    rows.setdefault((f[0], f[1]), []).append(tuple(map(float, f[2:])))
def med(k, i):
    v = [x[i] for x in rows.get(k, [])]
    return statistics.median(v) if v else 0.0
def ratio(a, b):
    return f"{a / b:.3f}" if b else "n/a"
names = {"close": f"HTTP, new connection per request (wrk -c{conns}, Connection: close)",
         "keepalive": f"HTTP keep-alive (wrk -c{conns})",
         "connect": f"connect + banner read, sequential (bm-probe, {probe_n} conns)"}
lines = [f"# bpfmesh L4 benchmark: service VIP vs pod IP", "",
         f"{stamp}, kernel {kernel}, {cpus} CPUs; client pod on node1, server pod on node2;",
         f"{rounds} interleaved rounds x {secs} s per wrk run; medians over rounds.", "",
         "| workload | metric | direct (pod IP) | VIP | VIP/direct |",
         "|---|---|---:|---:|---:|"]
for w in ("close", "keepalive", "connect"):
    for i, (m, unit) in enumerate((("p50", "us"), ("p99", "us"), ("req/s" if w != "connect" else "conn/s", ""))):
        d, v = med((w, "direct"), i), med((w, "vip"), i)
        lines.append(f"| {names[w]} | {m}{' (' + unit + ')' if unit else ''} | {d:.1f} | {v:.1f} | {ratio(v, d)} |")
lines += ["", "Raw rounds (workload target p50_us p99_us rate):", "", "```"] + \
         [l.rstrip() for l in open(raw)] + ["```", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
python3 "$ROOT/tests/bench/l4_side.py" "$SIDE_HIST" "$SIDE_SECS" "$SIDE_RATE" "$SIDE_CLOSE_RATE" "$PROGS" >>"$RESULTS/l4.md"
tail -n +2 "$RESULTS/l4.md" | sed -n '/^## Side by side/,$p'
echo "l4.sh: results in $RESULTS/l4.md" >&2
