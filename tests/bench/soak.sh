#!/usr/bin/env bash
# tests/bench/soak.sh (issue #6: "memory flat after 10 minutes of churn"):
# new connections through the mTLS path at a fixed rate for SOAK_MINUTES, and
# after every minute both meshds' memory (RSS, and the high-water mark),
# open file descriptors and threads, with that minute's latency and errors.
# A benchmark, not a test: it reports, it does not judge.
#
# Topology: the sandbox, 2 nodes. Client pod on node1 and server pod on node2,
# both ambient (mesh), behind a ServiceEntry VIP: every request is a new TCP
# connection (bm-load --close), captured by connect4 into node1's meshd, sent
# as an HBONE stream (TLS 1.3 mTLS, pooled tunnel) to node2's meshd, and
# delivered to the app (bm-testsrv, HTTP/1.1, 1 KB body).
#
# Output in $RESULTS (default build/bench/): soak.md (per-minute table and
# the growth from minute 2 to the last, per meshd), soak-raw.txt.
#
# Env: SOAK_MINUTES (10), SOAK_RATE (1000 new connections/s), SOAK_CONNS (32
#      in flight at most), BENCH_WAIT (600: seconds to wait for another
#      user's sandbox to go).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BPFMESH_BUILD:-$ROOT/build}
RESULTS=${RESULTS:-$BUILD/bench}
SANDBOX=$ROOT/scripts/sandbox
MINUTES=${SOAK_MINUTES:-10}
RATE=${SOAK_RATE:-1000}
CONNS=${SOAK_CONNS:-32}
WAIT=${BENCH_WAIT:-600}
VIP=198.19.10.30
RUN_DIR=${BPFMESH_RUN:-/run/bpfmesh}
LOAD=$BUILD/bench/bm-load

log() { echo "soak.sh: $*" >&2; }
die() { echo "soak.sh: $*" >&2; exit 1; }

for b in "$BUILD/meshd" "$BUILD/meshctl" "$BUILD/tools/bm-testsrv"; do
  [ -x "$b" ] || die "$b missing (run make)"
done
[ "$MINUTES" -ge 2 ] && [ "$MINUTES" -le 60 ] || die "SOAK_MINUTES 2..60"
[ "$RATE" -ge 1 ] && [ "$RATE" -le 50000 ] || die "SOAK_RATE 1..50000"
mkdir -p "$BUILD/bench" "$RESULTS"
if [ ! -x "$LOAD" ] || [ "$ROOT/tests/bench/bm-load.c" -nt "$LOAD" ]; then
  gcc -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -o "$LOAD" "$ROOT/tests/bench/bm-load.c" -lm ||
    die "cannot build bm-load"
fi

TMP=$(mktemp -d /tmp/bpfmesh-bench.XXXXXX)
export BPFMESH_RUN=$RUN_DIR
export BPFMESH_STORE=file://$TMP/store
mkdir -p "$TMP/store"
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"
OURS=0
BG_PIDS=()
cleanup() {
  set +e
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ $OURS = 1 ] && bench_sandbox_down
  for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
sb() { "$SANDBOX" "$@"; }

bench_sandbox_up "$WAIT" 2 || exit 1
OURS=1
AMB=istio.io/dataplane-mode=ambient
sb pod add soak-srv --node node2 --namespace soak --labels app=soaksrv,$AMB --sa soak-srv >/dev/null
sb pod add soak-cli --node node1 --namespace soak --labels app=soakcli,$AMB --sa soak-cli >/dev/null
sb exec soak-srv -- "$BUILD/tools/bm-testsrv" --id soak-srv --http-port 8080 --body-bytes 1024 \
  2>"$TMP/srv.log" &
BG_PIDS+=($!)
"$BUILD/meshctl" apply -f - >/dev/null <<YAML
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: soaksrv
  namespace: soak
spec:
  hosts: [soaksrv.soak.svc.cluster.local]
  addresses: [$VIP]
  ports:
  - {number: 80, name: http, protocol: TCP, targetPort: 8080}
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: {app: soaksrv}
YAML
MESHD1=$(cat "$RUN_DIR/sandbox/meshd-node1.pid") MESHD2=$(cat "$RUN_DIR/sandbox/meshd-node2.pid")

# The path works before the clock starts (bounded).
ok=0
for _ in $(seq 50); do
  if sb exec soak-cli -- "$LOAD" --addr $VIP:80 --conns 1 --rate 50 --duration 0.2 --warmup 0 --close \
       2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["requests"]>0 and d["errors"]==0 else 1)'; then
    ok=1; break
  fi
  sleep 0.2
done
[ $ok = 1 ] || die "no working path through the mesh to $VIP"
# mem PID: rss_kb hwm_kb fds threads (nothing when the process is gone)
mem() {
  local st
  st=$(awk '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} /^Threads:/{t=$2} END{print r, h, t}' "/proc/$1/status" 2>/dev/null)
  [ -n "$st" ] || return 1
  set -- $st "$(ls "/proc/$1/fd" 2>/dev/null | wc -l)"
  echo "$1 $2 $4 $3"
}
# alive: both meshds still run and the sandbox is still this run's; else
# keep their logs and stop (exit 75: someone took the sandbox, run again).
alive() {
  local n
  for n in 1 2; do
    cp "$RUN_DIR/sandbox/meshd-node$n.log" "$RESULTS/soak-meshd-node$n.log" 2>/dev/null || true
  done
  bench_sandbox_ours || { log "the sandbox was taken down or replaced by someone else"; exit 75; }
  kill -0 "$MESHD1" 2>/dev/null && kill -0 "$MESHD2" 2>/dev/null && return 0
  die "a meshd died during the soak (logs: $RESULTS/soak-meshd-node*.log)"
}

RAW=$RESULTS/soak-raw.txt
{
  echo "# soak.sh $(date -u +%FT%TZ): $MINUTES min, $RATE new connections/s, <= $CONNS in flight"
  echo "# minute requests errors rps p50_us p99_us | node1: rss_kb hwm_kb fds threads | node2: rss_kb hwm_kb fds threads"
  echo "0 - - - - - | $(mem "$MESHD1") | $(mem "$MESHD2")"
} >"$RAW"
log "$MINUTES minutes of $RATE new mTLS connections/s (node1 meshd $MESHD1, node2 meshd $MESHD2)"
for m in $(seq "$MINUTES"); do
  out=$(sb exec soak-cli -- "$LOAD" --addr $VIP:80 --conns "$CONNS" --rate "$RATE" --duration 60 \
          --warmup 0 --close --timeout-ms 5000 2>/dev/null) || out='{}'
  line=$(python3 -c 'import json,sys
try: d=json.loads(sys.argv[1])
except Exception: d={}
print(d.get("requests","-"), d.get("errors","-"), round(d["rps"]) if "rps" in d else "-", d.get("p50_us","-"), d.get("p99_us","-"))' "$out")
  alive
  echo "$m $line | $(mem "$MESHD1") | $(mem "$MESHD2")" >>"$RAW"
  # Others take a sandbox whose nodes file is untouched for 10 minutes as
  # abandoned (tests/integration/lib.sh): this one is in use.
  touch "$RUN_DIR/sandbox/nodes" 2>/dev/null || true
  log "minute $m: $line"
done

python3 - "$RAW" "$RESULTS/soak.md" "$MINUTES" "$RATE" <<'PY'
import sys
raw, md, minutes, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = []
for l in open(raw):
    if l.startswith("#"):
        continue
    a, n1, n2 = [p.split() for p in l.strip().split("|")]
    rows.append((a, [int(x) for x in n1], [int(x) for x in n2]))
out = ["# Soak: new mTLS connections at a fixed rate", "",
       f"{minutes} minutes, {rate} new connections/s (client pod on node1 -> VIP -> HBONE -> "
       "server pod on node2). Memory of each meshd after every minute.", "",
       "| minute | requests | errors | req/s | p50 ms | p99 ms | node1 RSS MB | node1 fds | node2 RSS MB | node2 fds |",
       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
def ms(v):
    return f"{int(v)/1000:.2f}" if v not in ("-", "None") else "-"
tot = err = 0
for a, n1, n2 in rows:
    m, req, e, rps, p50, p99 = a
    if req != "-":
        tot += int(req); err += int(e)
    out.append(f"| {m} | {req} | {e} | {rps} | {ms(p50)} | {ms(p99)} | {n1[0]/1024:.1f} | {n1[2]} | {n2[0]/1024:.1f} | {n2[2]} |")
out += ["", f"Total: {tot} requests, {err} errors.", ""]
if len(rows) >= 4:
    first, last = rows[2], rows[-1]   # after minute 2 (warm pools, TLS caches) -> end
    span = int(last[0][0]) - int(first[0][0])
    for i, node in ((1, "node1 (client side)"), (2, "node2 (server side)")):
        d_kb = last[i][0] - first[i][0]
        out.append(f"- {node}: RSS {first[i][0]/1024:.1f} MB after minute 2, {last[i][0]/1024:.1f} MB "
                   f"after minute {last[0][0]} ({d_kb/1024:+.2f} MB, {d_kb/1024/max(span,1):+.3f} MB/min); "
                   f"high-water mark {last[i][1]/1024:.1f} MB; fds {first[i][2]} -> {last[i][2]}; "
                   f"threads {last[i][3]}.")
open(md, "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
