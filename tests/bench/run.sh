#!/usr/bin/env bash
# tests/bench/run.sh (`make bench`): runs the benchmark scripts, each bounded
# in time; results go to $RESULTS (default build/bench/):
#   mesh.sh  no mesh / kernel L4 / mTLS cross-node and same-node / sidecar
#            model, interleaved rounds: mesh.md, mesh.png (docs/performance.md)
#   l4.sh    kernel L4 path in detail (VIP vs pod IP, connect latency): l4.md
#   l7.sh    L7 path (meshd routes each request) vs kernel L4 vs the sidecar
#            model (HAProxy x2, HTTP mode) with the same policy: l7.md
#   scale.sh (not in the default list: BENCH_ONLY=scale) 10,000 services /
#            100,000 endpoints, apply -> maps, own meshd, no sandbox: scale.md
#   soak.sh  (not in the default list: BENCH_ONLY=soak) new mTLS connections
#            at a fixed rate for SOAK_MINUTES (10), meshd memory and fds
#            after every minute: soak.md
# A benchmark reports numbers; it passes unless a script breaks. The sandbox
# is one per machine: each script waits (bounded, BENCH_WAIT) while someone
# else's is up and never takes theirs down (lib.sh).
# Env: BENCH_ONLY="mesh l4 l7" (which scripts), BENCH_TIMEOUT (s per script including the wait, 1200),
#      BENCH_WAIT (s to wait for a foreign sandbox, 600), BENCH_RETRIES (2: reruns
#      of a script whose sandbox someone else took down), and the scripts' own.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export RESULTS=${RESULTS:-$ROOT/build/bench}
LIMIT=${BENCH_TIMEOUT:-1200}
RUN_DIR=${BPFMESH_RUN:-/run/bpfmesh}
mkdir -p "$RESULTS"

# shellcheck source=tests/bench/lib.sh
. "$HERE/lib.sh"

rc=0
t0=$(date +%s)
for name in ${BENCH_ONLY:-mesh l4 l7}; do
  s=$HERE/$name.sh
  [ -f "$s" ] || { echo "bench: no $s" >&2; rc=1; continue; }
  echo "== $name.sh"
  for try in $(seq $((1 + ${BENCH_RETRIES:-2}))); do
    timeout -k 20 "$LIMIT" bash "$s"
    e=$?
    # 75: the sandbox was taken down under it by someone else; run it again.
    [ $e -eq 75 ] || break
    echo "bench: $name.sh was interrupted by another sandbox user (try $try)" >&2
  done
  if [ $e -ne 0 ]; then
    echo "bench: $name.sh failed (exit $e)" >&2
    rc=1
    # Killed by the timeout: its EXIT trap may not have run. Take down the
    # sandbox only if it is a benchmark's (its store is a bench temp dir).
    if { [ $e -eq 124 ] || [ $e -eq 137 ]; } &&
       grep -q '^file:///tmp/bpfmesh-bench\.' "$RUN_DIR/sandbox/store" 2>/dev/null; then
      "$ROOT/scripts/sandbox" down >/dev/null 2>&1
    fi
  fi
done
echo "bench: done in $(( $(date +%s) - t0 ))s; results in $RESULTS" >&2
exit $rc
