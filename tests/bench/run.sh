#!/usr/bin/env bash
# tests/bench/run.sh: runs the benchmark scripts (tests/bench/*.sh but this
# one), each bounded in time; results go to $RESULTS (default build/bench/).
# A benchmark reports numbers; it passes unless a script breaks.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export RESULTS=${RESULTS:-$ROOT/build/bench}
LIMIT=${BENCH_TIMEOUT:-600}
mkdir -p "$RESULTS"
rc=0
for s in "$HERE"/*.sh; do
  [ "$(basename "$s")" = run.sh ] && continue
  echo "== $(basename "$s")"
  timeout -k 10 "$LIMIT" bash "$s" || { echo "bench: $(basename "$s") failed (exit $?)" >&2; rc=1; "$ROOT/scripts/sandbox" down >/dev/null 2>&1; }
done
exit $rc
