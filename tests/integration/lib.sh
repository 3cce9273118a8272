# tests/integration/lib.sh: helpers for the sandbox integration tests.
# Sourced by each t_*.sh. A test calls t_begin (own store, sandbox up, cleanup
# trap), builds pods/services, sends real traffic with bm-probe, and fails with
# `fail REASON` (the runner prints the last "FAIL: " line as the reason).
# shellcheck shell=bash
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BPFMESH_BUILD:-$ROOT/build}
SANDBOX=$ROOT/scripts/sandbox
MESHCTL=$BUILD/meshctl
MESHD=$BUILD/meshd
PROBE=$BUILD/tools/bm-probe
TESTSRV=$BUILD/tools/bm-testsrv
export BPFMESH_RUN=${BPFMESH_RUN:-/run/bpfmesh}

T_NAME=$(basename "${0%.sh}")
T_TMP=""
T_BG_PIDS=()

log()  { echo "[$T_NAME] $*" >&2; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# ------------------------------------------------------------ lifecycle

t_cleanup() {
  local rc=$?
  set +e
  trap - EXIT
  local p
  for p in "${T_BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [ $rc -ne 0 ] && [ -n "$T_TMP" ]; then
    "$SANDBOX" status >&2 2>/dev/null
    local f
    for f in "$BPFMESH_RUN"/sandbox/meshd-*.log; do
      [ -f "$f" ] && { echo "--- $f (last 15 lines)" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  "$SANDBOX" down >/dev/null 2>&1
  for p in "${T_BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$T_TMP" ] && rm -rf "$T_TMP"
  exit $rc
}

# t_begin [--nodes N]: fresh store, sandbox up, cleanup on any exit.
t_begin() {
  for b in "$MESHD" "$MESHCTL" "$PROBE" "$TESTSRV"; do
    [ -x "$b" ] || fail "$b is missing (run make)"
  done
  T_TMP=$(mktemp -d /tmp/bpfmesh-it.XXXXXX)
  export BPFMESH_STORE=file://$T_TMP/store
  mkdir -p "$T_TMP/store"
  trap t_cleanup EXIT
  trap 'exit 143' TERM INT
  "$SANDBOX" down >/dev/null 2>&1 || true
  "$SANDBOX" up "$@" >"$T_TMP/up.log" 2>&1 || { cat "$T_TMP/up.log" >&2; fail "sandbox up failed"; }
  wait_ready
}

# ------------------------------------------------------------ JSON

# jget JSON PATH [DEFAULT]: a field by dotted path (numbers index lists).
jget() {
  python3 - "$1" "$2" "${3-}" <<'EOF'
import json, sys
doc, path, dflt = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    v = json.loads(doc.strip().splitlines()[-1])
    for part in path.split("."):
        v = v[int(part)] if isinstance(v, list) else v[part]
except Exception:
    print(dflt); sys.exit(0)
print(json.dumps(v) if isinstance(v, (dict, list)) else v)
EOF
}

# ------------------------------------------------------------ agents

# mesh_gen: prints "ALLREADY MIN_APPLIED MAX_STORE" over all nodes.
mesh_gen() {
  local out
  out=$("$MESHCTL" status -o json 2>/dev/null) || { echo "0 0 0"; return; }
  python3 - "$out" <<'EOF'
import json, sys
try:
    nodes = json.loads(sys.argv[1])["nodes"]
except Exception:
    print("0 0 0"); sys.exit(0)
ready = int(bool(nodes) and all(n.get("ready") for n in nodes) and
            all(n.get("applied_generation", -1) == n.get("store_generation", -2) for n in nodes))
print(ready, min(n.get("applied_generation", 0) for n in nodes) if nodes else 0,
      max(n.get("store_generation", 0) for n in nodes) if nodes else 0)
EOF
}

# wait_ready [MIN_GEN]: every node ready and applied == store generation (> MIN_GEN).
wait_ready() {
  local min=${1:--1} r a s
  for _ in $(seq 100); do
    # Every node must have applied a generation newer than $min: a node that
    # has not yet noticed the change still reports applied == its store.
    read -r r a s < <(mesh_gen)
    [ "$r" = 1 ] && [ "$a" -gt "$min" ] && [ "$s" -gt "$min" ] && return 0
    sleep 0.1
  done
  "$MESHCTL" status -o json >&2 || true
  fail "nodes did not apply the store generation (> $min) within 10 s"
}

# apply: resources from stdin; returns once every node applied them.
apply() {
  local s before
  read -r _ _ s < <(mesh_gen)
  before=$s
  "$MESHCTL" apply -f - >"$T_TMP/apply.out" 2>&1 || { cat "$T_TMP/apply.out" >&2; fail "meshctl apply failed"; }
  wait_ready "$before"
}

meshd_ctl() { "$SANDBOX" meshd "$@" >&2; }

# ------------------------------------------------------------ pods and traffic

# pod NAME NODE [NS] [LABELS]: adds a pod.
# Returns once every node applied its WorkloadEntry.
pod() {
  local s
  read -r _ _ s < <(mesh_gen)
  "$SANDBOX" pod add "$1" --node "$2" --namespace "${3:-default}" ${4:+--labels "$4"} >/dev/null ||
    fail "sandbox pod add $1 failed"
  wait_ready "$s"
}

pod_del() {
  local s
  read -r _ _ s < <(mesh_gen)
  "$SANDBOX" pod del "$1" >/dev/null || fail "sandbox pod del $1 failed"
  wait_ready "$s"
}

pod_ip() { "$SANDBOX" ip "$1"; }

# server POD ID PORT...: bm-testsrv in POD with banner ports; waits until it listens.
server() {
  local pod=$1 id=$2; shift 2
  local args=() p
  for p in "$@"; do args+=(--port "$p"); done
  "$SANDBOX" exec "$pod" -- "$TESTSRV" --id "$id" "${args[@]}" 2>>"$T_TMP/srv-$pod.log" &
  T_BG_PIDS+=($!)
  wait_listen "$pod" "$1"
}

# http_server POD ID PORT: bm-testsrv HTTP mode.
http_server() {
  "$SANDBOX" exec "$1" -- "$TESTSRV" --id "$2" --http-port "$3" 2>>"$T_TMP/srv-$1.log" &
  T_BG_PIDS+=($!)
  wait_listen "$1" "$3"
}

wait_listen() {
  for _ in $(seq 100); do
    ip netns exec "bmp-$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q LISTEN && return 0
    sleep 0.05
  done
  fail "server in pod $1 not listening on $2"
}

# probe POD ARGS...: runs bm-probe in POD; prints its JSON (exit status ignored:
# tests judge the numbers).
probe() {
  local pod=$1; shift
  "$SANDBOX" exec "$pod" -- "$PROBE" "$@" || true
}

# hold_start POD OUTFILE ARGS...: background bm-probe --hold; waits for "open".
# Sets HOLD_PID (the probe: SIGUSR1 it to verify and finish).
hold_start() {
  local pod=$1 out=$2; shift 2
  : >"$out"
  "$SANDBOX" exec "$pod" -- "$PROBE" --hold --hold-seconds 120 "$@" >"$out" 2>&1 &
  HOLD_PID=$!
  T_BG_PIDS+=("$HOLD_PID")
  for _ in $(seq 300); do
    grep -q '"phase":"open"' "$out" && return 0
    kill -0 "$HOLD_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$out" >&2
  fail "held connections did not open"
}

# hold_finish OUTFILE: SIGUSR1 the holder, wait, print its final JSON.
hold_finish() {
  kill -USR1 "$HOLD_PID" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$HOLD_PID" 2>/dev/null || break; sleep 0.05; done
  wait "$HOLD_PID" 2>/dev/null || true
  grep '"phase":"final"' "$1" || { cat "$1" >&2; fail "holder printed no final result"; }
}

# ------------------------------------------------------------ checks

expect_eq() { # WHAT ACTUAL EXPECTED
  [ "$2" = "$3" ] || fail "$1: got $2, want $3"
  log "ok: $1 = $2"
}

expect_range() { # WHAT ACTUAL MIN MAX (integers)
  [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] || fail "$1: got $2, want $3..$4"
  log "ok: $1 = $2 (in $3..$4)"
}

# ------------------------------------------------------------ resources

# service NAME NS HOST VIP PORT TARGETPORT APPLABEL: a ServiceEntry selecting app=APPLABEL.
service_yaml() {
  cat <<EOF
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: $1
  namespace: $2
spec:
  hosts:
  - $3
  addresses:
  - $4
  ports:
  - number: $5
    name: tcp-$1
    protocol: TCP
    targetPort: $6
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels:
      app: $7
EOF
}

# ------------------------------------------------------------ mesh (issue 3) helpers

HBONE=$BUILD/tools/bm-hbone
CERTGEN=$BUILD/tools/bm-certgen
AMBIENT=istio.io/dataplane-mode=ambient

# sandbox_wait_free [MAX_S]: only one sandbox can run on the machine and
# t_begin takes down whatever is up. If someone else's sandbox is up, wait
# (up to MAX_S, default 300 s) for it to go away; one whose nodes file is
# older than 10 min is considered abandoned and left for t_begin to take
# down (long benchmarks touch the file to say they still use it).
sandbox_wait_free() {
  local max=${1:-300} f=$BPFMESH_RUN/sandbox/nodes age i
  for ((i = 0; i < max; i += 5)); do
    [ -f "$f" ] || return 0
    age=$(( $(date +%s) - $(stat -c %Y "$f" 2>/dev/null || date +%s) ))
    [ "$age" -gt 600 ] && { log "sandbox up for ${age}s: taking it as abandoned"; return 0; }
    [ "$i" = 0 ] && log "another sandbox is up (for ${age}s); waiting for it to go down"
    sleep 5
  done
  fail "another sandbox stayed up for ${max}s more; not tearing it down"
}

# mesh_pod NAME NODE NS SA [LABELS]: a pod in the mesh (dataplane-mode=ambient)
# with service account SA. Returns once every node applied its WorkloadEntry.
mesh_pod() {
  local s
  read -r _ _ s < <(mesh_gen)
  "$SANDBOX" pod add "$1" --node "$2" --namespace "$3" --sa "$4" \
    --labels "${5:+$5,}$AMBIENT" >/dev/null || fail "sandbox pod add $1 failed"
  wait_ready "$s"
}

# The embedded CA's directory (<store dir>/ca) of this test's store.
ca_dir() { echo "$T_TMP/store/ca"; }

# wait_mesh_pod NODE NS/NAME: meshd on NODE logged that the pod joined the mesh.
wait_mesh_pod() {
  for _ in $(seq 100); do
    grep -q "pod $2 in the mesh" "$BPFMESH_RUN/sandbox/meshd-$1.log" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "pod $2 did not join the mesh on $1 (meshd-$1.log: $(grep -c . "$BPFMESH_RUN/sandbox/meshd-$1.log") lines)"
}

# hbone POD ARGS...: bm-hbone in POD; prints its JSON; exit status ignored.
hbone() {
  local pod=$1; shift
  "$SANDBOX" exec "$pod" -- "$HBONE" "$@" || true
}

# tcp_marker POD HOST PORT MARKER [TIMEOUT_S]: from POD, connect, read the
# bm-testsrv banner line, send MARKER, read until the echo contains it (or
# EOF/timeout). Prints {"connected":..,"banner":..,"echo":..,"error":..}.
tcp_marker() {
  "$SANDBOX" exec "$1" -- python3 - "$2" "$3" "$4" "${5:-3}" <<'PY' || true
import json, socket, sys
host, port, marker, tmo = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
r = {"connected": False, "banner": "", "echo": "", "error": ""}
try:
    s = socket.create_connection((host, port), timeout=tmo)
    r["connected"] = True
    buf = b""
    while b"\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise EOFError("EOF before banner")
        buf += d
    line, rest = buf.split(b"\n", 1)
    r["banner"] = line.decode(errors="replace")
    s.sendall(marker)
    echo = rest
    while marker not in echo:
        d = s.recv(4096)
        if not d:
            raise EOFError("EOF before echo")
        echo += d
    r["echo"] = echo.decode(errors="replace")
    s.close()
except Exception as e:
    r["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(r))
PY
}

# capture_start FILE [IFACE]: tcpdump in the hub netns on IFACE (default
# "any": the node veths hn<i>, so every node-to-node packet, seen on both
# ends; br0 itself does not see unicast it bridges); waits until it is
# capturing. Sets CAP_PID.
capture_start() {
  local f=$1 ifc=${2:-any}
  ip netns exec bm-hub tcpdump -Z root --immediate-mode -i "$ifc" -U -s 0 -w "$f" >"$f.log" 2>&1 &
  CAP_PID=$!
  T_BG_PIDS+=("$CAP_PID")
  for _ in $(seq 100); do
    grep -q 'listening on' "$f.log" 2>/dev/null && return 0
    sleep 0.05
  done
  cat "$f.log" >&2
  fail "tcpdump on bm-hub $ifc did not start"
}

# capture_stop: stop tcpdump (SIGINT flushes the file) and wait for it.
capture_stop() {
  kill -INT "$CAP_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$CAP_PID" 2>/dev/null || break; sleep 0.05; done
  wait "$CAP_PID" 2>/dev/null || true
}

# pcap_count FILE FILTER: packets in FILE matching the tcpdump FILTER.
pcap_count() {
  tcpdump -r "$1" -nn "$2" 2>/dev/null | wc -l
}

# cert_serials NODE: "identity=serial" lines from meshctl cert ls -o json.
cert_serials() {
  "$MESHCTL" cert ls --node "$1" -o json 2>/dev/null | python3 -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except Exception:
    sys.exit(0)
def walk(v):
    if isinstance(v, dict):
        if "serial" in v and ("identity" in v or "spiffe_id" in v or "id" in v):
            print("%s=%s" % (v.get("identity") or v.get("spiffe_id") or v.get("id"), v["serial"]))
        else:
            for x in v.values(): walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
walk(doc)'
}

# proxy_stats NODE: the "proxy" object of meshctl stats -o json for NODE ({} if none).
proxy_stats() {
  "$MESHCTL" stats --node "$1" -o json 2>/dev/null | python3 -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except Exception:
    print("{}"); sys.exit(0)
def find(v):
    if isinstance(v, dict):
        if "proxy" in v: return v["proxy"]
        for x in v.values():
            r = find(x)
            if r is not None: return r
    elif isinstance(v, list):
        for x in v:
            r = find(x)
            if r is not None: return r
    return None
print(json.dumps(find(doc) or {}))'
}

# meshd_log_tail NODE [N]: last N (default 20) lines of a node's meshd log.
meshd_log_tail() { tail -n "${2:-20}" "$BPFMESH_RUN/sandbox/meshd-$1.log" 2>/dev/null; }

# pstat JSON PATH: a proxy counter (dotted path) from proxy_stats output, 0 if absent.
pstat() { jget "$1" "$2" 0; }
# pdelta AFTER BEFORE PATH: how much a proxy counter grew between two proxy_stats.
pdelta() { echo $(( $(pstat "$1" "$3") - $(pstat "$2" "$3") )); }

# ------------------------------------------------------------ L7 (issue 4) helpers

# Verbatim copies of ../shared/examples/seeds (the checkout may not sit next
# to it, e.g. in CI); tests paste them with only names changed.
SEEDS=$ROOT/tests/integration/seeds
HTTPSRV=$BUILD/tools/bm-httpsrv
HGET=$BUILD/tools/bm-hget
JWTTOOL=$BUILD/tools/bm-jwt

# hsrv POD ID PORT [ARGS...]: bm-httpsrv (controllable HTTP backend) in POD.
hsrv() {
  local pod=$1 id=$2 port=$3; shift 3
  "$SANDBOX" exec "$pod" -- "$HTTPSRV" --id "$id" --port "$port" "$@" 2>>"$T_TMP/hsrv-$pod.log" &
  T_BG_PIDS+=($!)
  wait_listen "$pod" "$port"
}

# hget POD ARGS...: bm-hget in POD; prints its JSON (exit status ignored).
hget() {
  local pod=$1; shift
  "$SANDBOX" exec "$pod" -- "$HGET" "$@" || true
}

# hsrv_ctl POD PORT PATH: a control request (/__stats, /__reset, /__set?...)
# to the server in POD, sent from inside POD to itself (not through the mesh).
hsrv_ctl() {
  local method=GET
  [ "$3" = /__reset ] && method=POST
  ip netns exec "bmp-$1" curl -s -m 5 -X "$method" "http://127.0.0.1:$2$3"
}

# l7_service NAME NS HOST VIP PORT TARGETPORT APPLABEL: a ServiceEntry with an
# http port (protocol HTTP) selecting app=APPLABEL.
l7_service_yaml() {
  service_yaml "$@" | sed -e "s/name: tcp-$1/name: http-$1/" -e 's/protocol: TCP/protocol: HTTP/'
}

# pct PART TOTAL: integer percent, rounded down, x100 for two decimals
pct100() { echo $(( $1 * 10000 / ( $2 > 0 ? $2 : 1 ) )); }
