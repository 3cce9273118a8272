# shellcheck shell=bash
# tests/bench/lib.sh: sourced by the benchmark scripts (not run on its own).
# Only one sandbox can run on a machine (fixed netns names), and others use it
# too (integration tests). The benchmarks never take down a sandbox that is
# not theirs: they wait (bounded) until none is up, bring theirs up with their
# own store, and at the end take it down only if the sandbox's recorded store
# is still theirs (someone else may have replaced it meanwhile).
#
# Needs: SANDBOX, BPFMESH_RUN, BPFMESH_STORE (this run's own store URL).

bench_sandbox_busy() {
  ip netns list 2>/dev/null | grep -q '^bm-hub\b' || [ -e "${BPFMESH_RUN:-/run/bpfmesh}/sandbox/nodes" ]
}

# bench_sandbox_ours: the sandbox up now is the one this run brought up.
bench_sandbox_ours() {
  [ "$(cat "${BPFMESH_RUN:-/run/bpfmesh}/sandbox/store" 2>/dev/null)" = "$BPFMESH_STORE" ]
}

# bench_sandbox_up MAX_WAIT_S NODES: wait while another sandbox is up, then
# `sandbox up --nodes NODES`. Returns 1 (with a message) after MAX_WAIT_S.
bench_sandbox_up() {
  local max=$1 nodes=$2 waited=0 err
  err=$(mktemp /tmp/bpfmesh-bench-up.XXXXXX)
  while :; do
    if ! bench_sandbox_busy; then
      if "$SANDBOX" up --nodes "$nodes" >/dev/null 2>"$err"; then rm -f "$err"; return 0; fi
      # Lost a race with someone else's `up` (theirs now): keep waiting.
      bench_sandbox_busy || { echo "bench: sandbox up failed: $(cat "$err")" >&2; rm -f "$err"; return 1; }
    fi
    if [ $waited -ge "$max" ]; then
      echo "bench: a sandbox (netns bm-hub) is still up after ${max}s; not touching it" >&2
      rm -f "$err"; return 1
    fi
    [ $waited = 0 ] && echo "bench: another sandbox is up; waiting up to ${max}s" >&2
    sleep 5; waited=$((waited + 5))
  done
}

# bench_sandbox_down: take the sandbox down if it is ours.
bench_sandbox_down() {
  if bench_sandbox_ours; then
    "$SANDBOX" down >/dev/null 2>&1
  elif bench_sandbox_busy; then
    echo "bench: the sandbox up now is not this run's (someone replaced it); leaving it" >&2
  fi
  return 0
}

# bench_build_tool NAME OUT: builds tests/bench/NAME.c into OUT unless OUT is
# newer (bm-load, the fixed-rate load generator; bm-scrape; not part of `make`).
bench_build_tool() {
  local src
  src="$(dirname "${BASH_SOURCE[0]}")/$1.c"
  mkdir -p "$(dirname "$2")"
  [ -x "$2" ] && [ ! "$src" -nt "$2" ] && return 0
  gcc -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -o "$2" "$src" -lm
}
