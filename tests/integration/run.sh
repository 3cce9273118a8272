#!/usr/bin/env bash
# tests/integration/run.sh [PATTERN...]: runs every tests/integration/t_*.sh
# (or those whose name contains a PATTERN) in order, each in its own bash with
# a time limit, and prints "PASS name" / "FAIL name (reason)" per test, then
# "N passed, N failed". Exit 1 if any failed. Logs: $BPFMESH_IT_LOGS
# (default build/integration/), one file per test.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOGS=${BPFMESH_IT_LOGS:-$ROOT/build/integration}
LIMIT=${BPFMESH_IT_TIMEOUT:-150}   # seconds per test

[ "$(id -u)" -eq 0 ] || { echo "run.sh: the sandbox tests need root" >&2; exit 1; }
mkdir -p "$LOGS"

tests=()
for t in "$HERE"/t_*.sh; do
  name=$(basename "$t" .sh)
  if [ $# -gt 0 ]; then
    match=0
    for p in "$@"; do [[ $name == *"$p"* ]] && match=1; done
    [ $match = 1 ] || continue
  fi
  tests+=("$t")
done

passed=0 failed=0
for t in "${tests[@]}"; do
  name=$(basename "$t" .sh)
  log=$LOGS/$name.log
  start=$(date +%s)
  timeout -k 10 "$LIMIT" bash "$t" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then
    echo "PASS $name (${secs}s)"
    passed=$((passed + 1))
  else
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      reason="timed out after ${LIMIT}s"
    else
      reason=$(grep '^FAIL: ' "$log" | tail -n 1 | sed 's/^FAIL: //')
      [ -n "$reason" ] || reason="exit $rc: $(tail -n 1 "$log")"
    fi
    echo "FAIL $name ($reason; log: ${log#"$ROOT"/})"
    failed=$((failed + 1))
    # A test killed by the time limit may not have run its trap.
    "$ROOT/scripts/sandbox" down >/dev/null 2>&1 || true
  fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
