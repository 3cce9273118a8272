#!/usr/bin/env bash
# scripts/demo.sh (`make demo`): a 2-node sandbox, the sample service `reviews`
# in two versions on different nodes, a client pod, the example policies from
# policies/ applied with meshctl, 1,000 connections sent by name from the
# client, and the resulting split shown. The sandbox is taken down on exit.
#
# Env: DEMO_CONNECTIONS (1000). The store is $BPFMESH_STORE, else a temporary
# directory so the demo leaves the host as it found it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BPFMESH_BUILD:-$ROOT/build}
SANDBOX=$ROOT/scripts/sandbox
MESHCTL=$BUILD/meshctl
N=${DEMO_CONNECTIONS:-1000}
HOST=reviews.bookinfo.svc.cluster.local

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (namespaces, cgroups, BPF)" >&2; exit 1; }
for b in "$BUILD/meshd" "$MESHCTL" "$BUILD/tools/bm-probe" "$BUILD/tools/bm-testsrv"; do
  [ -x "$b" ] || { echo "demo: $b missing: run make" >&2; exit 1; }
done
[ "$N" -ge 1 ] && [ "$N" -le 100000 ] || { echo "demo: DEMO_CONNECTIONS 1..100000" >&2; exit 2; }

TMP=$(mktemp -d /tmp/bpfmesh-demo.XXXXXX)
export BPFMESH_STORE=${BPFMESH_STORE:-file://$TMP/store} BPFMESH_RUN=${BPFMESH_RUN:-/run/bpfmesh}
mkdir -p "$TMP/store"
PIDS=()
cleanup() {
  set +e
  echo; step "taking the sandbox down"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  "$SANDBOX" down
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run()  { printf '$ %s\n' "$*"; "$@"; }

"$SANDBOX" down >/dev/null 2>&1 || true
step "a 2-node sandbox (one meshd per node)"
run "$SANDBOX" up --nodes 2

step "pods: reviews v1 on node1, reviews v2 on node2, a client on node1"
run "$SANDBOX" pod add reviews-v1 --node node1 --namespace bookinfo --labels app=reviews,version=v1 --sa bookinfo-reviews --port 9080
run "$SANDBOX" pod add reviews-v2 --node node2 --namespace bookinfo --labels app=reviews,version=v2 --sa bookinfo-reviews --port 9080
run "$SANDBOX" pod add client --node node1
for v in v1 v2; do
  "$SANDBOX" exec reviews-$v -- "$BUILD/tools/bm-testsrv" --id reviews-$v --port 9080 2>/dev/null &
  PIDS+=($!)
done

step "the example policies"
run "$MESHCTL" apply -f "$ROOT/policies/reviews-serviceentry.yaml"
run "$MESHCTL" apply -f "$ROOT/policies/reviews-destinationrule.yaml"
run "$MESHCTL" apply -f "$ROOT/policies/reviews-virtualservice.yaml"

# Until both agents applied the store's generation.
for _ in $(seq 100); do
  st=$("$MESHCTL" status -o json 2>/dev/null || true)
  python3 -c '
import json, sys
n = json.loads(sys.argv[1])["nodes"]
sys.exit(0 if n and all(x.get("ready") and x.get("applied_generation") == x.get("store_generation") for x in n) else 1)
' "$st" 2>/dev/null && break
  sleep 0.1
done
run "$MESHCTL" status
for v in v1 v2; do
  for _ in $(seq 100); do
    ip netns exec "bmp-reviews-$v" ss -Hltn 'sport = :9080' | grep -q LISTEN && break
    sleep 0.05
  done
done

step "$N connections from the client pod to $HOST:9080"
run "$SANDBOX" exec client -- getent hosts "$HOST"
out=$("$SANDBOX" exec client -- "$BUILD/tools/bm-probe" --connect "$HOST:9080" -n "$N" --concurrency 8 || true)

step "result (policy: v1 80 %, v2 20 %)"
python3 - "$out" <<'PY'
import json, sys
d = json.loads(sys.argv[1].strip().splitlines()[-1])
ok = d["ok"]
print(f"{'subset':<8}{'pod':<14}{'node':<8}{'connections':>12}{'share':>9}{'policy':>9}")
for sub, node, want in (("v1", "node1", 80), ("v2", "node2", 20)):
    n = d["by_id"].get(f"reviews-{sub}", 0)
    print(f"{sub:<8}{'reviews-' + sub:<14}{node:<8}{n:>12}{100.0 * n / ok if ok else 0:>8.1f}%{want:>8}%")
print(f"\nok {ok}, failed {d['failed']}{(' ' + str(d['errors'])) if d['errors'] else ''}, "
      f"peer address seen by the app = the VIP for {ok - d['peer_mismatch']} of {ok}")
PY

step "kernel counters (meshctl stats)"
"$MESHCTL" stats || true
