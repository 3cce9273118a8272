#!/usr/bin/env bash
# tests/bench/scale.sh (issue #6): how meshd copes with a large store.
# Generates SCALE_SERVICES ServiceEntries (VIPs in 10.100.0.0/14, never
# connected to: nothing is sent, only maps are written) with SCALE_ENDPOINTS
# endpoints each (inline, or WorkloadEntries for the first SCALE_WE_SERVICES
# services), DestinationRules (subsets, ROUND_ROBIN, outlierDetection on half)
# for SCALE_DR_PCT % of them, weighted tcp VirtualServices for SCALE_VS_PCT %,
# and for SCALE_L7_PCT % an HTTP port and a VirtualService with a header
# match, so the L7 compiler has work too. Then it measures:
#   apply    `meshctl apply -f` of the whole set into an empty store;
#   cold     meshd start -> "generation N applied" with every service in svc_v1;
#   memory   meshd RSS and CPU time after the load;
#   single   SCALE_CHANGES one-service weight changes (meshctl apply) ->
#            "generation N applied" (meshd's log, written after the maps hold
#            it), then the weights read back from the pinned svc_v1;
#   burst    SCALE_BURST changes as back-to-back applies, and as one apply;
#   connect  connect() latency through one VIP whose backend is a real
#            listener (loopback, in a netns of its own), from the pod cgroup
#            of this node (N services) and of a second node, scale0, holding
#            10 services, in alternating batches (SCALE_CONNECTS per side,
#            2000; 0 skips the phase); and each node's BPF map memory;
#   restart  meshd restarted on its pins: adopt and compare, nothing rewritten.
# meshd logs each reload's phase times (BPFMESH_RELOAD_TIMES=1).
# meshd runs on its own (not the sandbox): node scale1, cgroup
# <cgroup2>/bpfmesh/scale1/pods, pins /sys/fs/bpf/bpfmesh/scale1, run dir
# /run/bpfmesh-scale, store in a temp dir; all removed by the EXIT trap.
# Every phase is bounded by SCALE_PHASE_TIMEOUT seconds (300). Output:
# $RESULTS/scale.md (RESULTS default build/bench). SCALE_PERF=1 also records
# `perf record -g` of meshd during one single change (scale-perf.txt).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RESULTS=${RESULTS:-$ROOT/build/bench}
MESHD=${MESHD:-$ROOT/build/meshd}
MESHCTL=${MESHCTL:-$ROOT/build/meshctl}
N=${SCALE_SERVICES:-10000}
E=${SCALE_ENDPOINTS:-10}
WE=${SCALE_WE_SERVICES:-0}
DR_PCT=${SCALE_DR_PCT:-10}
VS_PCT=${SCALE_VS_PCT:-10}
L7_PCT=${SCALE_L7_PCT:-2}
CHANGES=${SCALE_CHANGES:-20}
BURST=${SCALE_BURST:-100}
LIMIT=${SCALE_PHASE_TIMEOUT:-300}
NODE=scale1
RUN_ROOT=/run/bpfmesh-scale
RUN=$RUN_ROOT/$NODE
PIN_ROOT=/sys/fs/bpf/bpfmesh
PIN=$PIN_ROOT/$NODE

log() { echo "scale: $*" >&2; }
die() { echo "scale: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (BPF programs, cgroups, bpffs)"
[ -x "$MESHD" ] && [ -x "$MESHCTL" ] || die "no $MESHD or $MESHCTL (run make)"
command -v bpftool >/dev/null || die "bpftool not found"
[ "$E" -ge 1 ] && [ "$E" -le 1024 ] || die "SCALE_ENDPOINTS must be 1..1024 (endpoints per service port in the kernel path)"
[ "$VS_PCT" -le "$DR_PCT" ] && [ "$L7_PCT" -le "$VS_PCT" ] ||
  die "want SCALE_L7_PCT <= SCALE_VS_PCT <= SCALE_DR_PCT (VirtualServices route to DR subsets)"
mkdir -p "$RESULTS"

CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
[ -n "$CG2" ] || die "cgroup v2 is not mounted (no cgroup2 entry in /proc/self/mounts)"
CG=$CG2/bpfmesh/$NODE/pods
CG0=$CG2/bpfmesh/scale0/pods

# A leftover of a run killed before its trap: only if no meshd of ours runs.
if [ -e "$RUN/meshd.pid" ] && kill -0 "$(cat "$RUN/meshd.pid")" 2>/dev/null; then
  die "a scale run is already going (meshd pid $(cat "$RUN/meshd.pid"))"
fi

# Someone else's `sandbox down` sweeps every node under the pin and cgroup
# roots, scale1 too: start when no sandbox is up (bounded, SCALE_WAIT s).
waited=0
while ip netns list 2>/dev/null | grep -q '^bm-hub\b' || [ -e /run/bpfmesh/sandbox/nodes ]; do
  [ $waited -ge "${SCALE_WAIT:-600}" ] && { log "a sandbox is still up after ${waited}s; starting anyway"; break; }
  [ $waited = 0 ] && log "a sandbox is up (its down would remove our pins); waiting up to ${SCALE_WAIT:-600}s"
  sleep 5; waited=$((waited + 5))
done

TMP=$(mktemp -d /tmp/bpfmesh-scale.XXXXXX)
MESHD_PID=
MOUNTED_BPFFS=0
MADE_PIN_ROOT=0
MADE_CG_ROOT=0
# The connect-latency phase's own things: a second, small node (scale0), a
# netns with the listener, the clients' cgroups. Safe to call twice.
CONN_NS=bm-scale-conn
NODE0=scale0
PIN0=$PIN_ROOT/$NODE0
CONN_SRV_PID=
MESHD0_PID=
conn_cleanup() {
  [ -n "$CONN_SRV_PID" ] && { kill "$CONN_SRV_PID" 2>/dev/null; wait "$CONN_SRV_PID" 2>/dev/null; CONN_SRV_PID=; }
  if [ -n "$MESHD0_PID" ]; then
    kill "$MESHD0_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$MESHD0_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$MESHD0_PID" 2>/dev/null; wait "$MESHD0_PID" 2>/dev/null; MESHD0_PID=
  fi
  [ -d "$PIN0" ] && { "$MESHD" --cleanup --bpffs "$PIN0" >/dev/null 2>&1 || log "meshd --cleanup --bpffs $PIN0 failed"; }
  rmdir "$CG/connlat" "$CG0/connlat" "$CG0" "$CG2/bpfmesh/$NODE0" 2>/dev/null
  ip netns list 2>/dev/null | grep -q "^$CONN_NS\b" && ip netns del "$CONN_NS" 2>/dev/null
  return 0
}
cleanup() {
  local rc=$?
  if [ -n "$MESHD_PID" ] && kill -0 "$MESHD_PID" 2>/dev/null; then
    kill "$MESHD_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$MESHD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$MESHD_PID" 2>/dev/null
    wait "$MESHD_PID" 2>/dev/null
  fi
  [ -s "$TMP/meshd.log" ] && cp "$TMP/meshd.log" "$RESULTS/scale-meshd.log"
  conn_cleanup
  [ -d "$PIN" ] && { "$MESHD" --cleanup --bpffs "$PIN" >/dev/null 2>&1 || log "meshd --cleanup --bpffs $PIN failed"; }
  rmdir "$CG" "$CG2/bpfmesh/$NODE" 2>/dev/null
  [ $MADE_CG_ROOT = 1 ] && rmdir "$CG2/bpfmesh" 2>/dev/null
  [ $MADE_PIN_ROOT = 1 ] && rmdir "$PIN_ROOT" 2>/dev/null
  [ $MOUNTED_BPFFS = 1 ] && umount /sys/fs/bpf 2>/dev/null
  rm -rf "$RUN_ROOT" "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -d "$PIN" ] && "$MESHD" --cleanup --bpffs "$PIN" >/dev/null 2>&1
if ! awk '$2 == "/sys/fs/bpf" && $3 == "bpf" { f = 1 } END { exit !f }' /proc/self/mounts; then
  mount -t bpf bpf /sys/fs/bpf || die "cannot mount bpffs at /sys/fs/bpf"
  MOUNTED_BPFFS=1
fi
[ -d "$PIN_ROOT" ] || { mkdir -p "$PIN_ROOT" && MADE_PIN_ROOT=1; }
[ -d "$CG2/bpfmesh" ] || { mkdir -p "$CG2/bpfmesh" && MADE_CG_ROOT=1; }
mkdir -p "$CG" "$RUN" || die "cannot create $CG or $RUN"
export BPFMESH_RUN=$RUN_ROOT

now_ms() { date +%s%3N; }
# Milliseconds of meshd's log timestamp ("2026-11-22T06:28:40.123Z meshd: ...").
log_ms() { date -d "${1%% *}" +%s%3N; }
mtime_ms() { stat -c %.3Y "$1" | tr -d .; }
cpu_ms() { awk -v t="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / t) }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
stats() { # numbers on stdin -> "median max n"
  sort -n | awk '{ a[NR] = $1 } END { if (!NR) { print "- - 0"; exit }
    print a[int((NR + 1) / 2)], a[NR], NR }'
}
# wait_applied GEN LOG: the log line of GEN applied (bounded by LIMIT).
wait_applied() {
  local gen=$1 logf=$2 t_end=$(( $(date +%s) + LIMIT )) line
  while :; do
    line=$(grep -a " generation $gen applied" "$logf" | tail -1)
    [ -n "$line" ] && { echo "$line"; return 0; }
    if [ -n "$MESHD_PID" ] && ! kill -0 "$MESHD_PID" 2>/dev/null; then
      log "meshd exited; its log:"; tail -20 "$logf" >&2; return 1
    fi
    [ "$(date +%s)" -ge $t_end ] && { log "generation $gen not applied after ${LIMIT}s"; return 1; }
    sleep 0.01
  done
}
# `sandbox down` (someone else's) removes every node under the cgroup and pin
# roots, ours too: recreate the cgroup before each start, and stop with 75
# (run.sh reruns) when our pins are gone mid-run.
start_meshd() { # STORE_DIR LOG
  mkdir -p "$CG" || die "cannot create $CG"
  BPFMESH_RELOAD_TIMES=1 "$MESHD" --node $NODE --cgroup "$CG" --bpffs "$PIN" --run-dir "$RUN" --store "file://$1" \
    --no-proxy --metrics-addr 127.0.0.1:0 --ready-addr 127.0.0.1:0 >>"$2" 2>&1 &
  MESHD_PID=$!
  echo $MESHD_PID >"$RUN/meshd.pid"
}
check_pins() {
  [ -e "$PIN/svc_v1" ] && return 0
  log "the pins under $PIN are gone: someone ran \`sandbox down\` meanwhile; not a valid run"
  exit 75
}
stop_meshd() {
  kill "$MESHD_PID" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$MESHD_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$MESHD_PID" 2>/dev/null
  MESHD_PID=
}
# svc_weights I: the first destination's share of service I's svc_v1 entry, in
# percent, then 100 ("70 100" for a 70/30 split). A subset of more than 64
# endpoints is spread over several cluster_v1 entries (chunks, same cluster
# id, weighted by their share): the chunks of the first cluster are summed.
svc_weights() {
  local i=$(( $1 + 1 ))
  python3 - "$PIN" 10 $((100 + (i >> 16))) $(((i >> 8) & 255)) $((i & 255)) <<'PY'
import json, struct, subprocess, sys
pin, vip = sys.argv[1], [int(x) for x in sys.argv[2:6]]
def lookup(m, key):
    r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", f"{pin}/{m}", "key"] +
                       [str(x) for x in key], capture_output=True, text=True)
    o = json.loads(r.stdout)
    return bytes(int(x, 16) for x in o["value"])
try:
    v = lookup("svc_v1", vip + [0, 80, 6, 0])
    svc_id, rev, n, total = struct.unpack_from("<4I", v, 0)
    cum = struct.unpack_from(f"<{n}I", v, 16)
    first, w, prev = None, 0, 0
    for d in range(n):
        c = lookup("cluster_v1", list(struct.pack("<3I", svc_id, rev, d)))
        cid = struct.unpack_from("<I", c, 0)[0]
        first = cid if first is None else first
        if cid == first:
            w += cum[d] - prev
        prev = cum[d]
    print(round(100 * w / total), 100)
except Exception as e:
    print("lookup failed:", str(e).replace("\n", " ")[:200])
PY
}

# ---- generation ---------------------------------------------------------------
# vs_yaml I W1: VirtualService of service I, W1 % to subset v1 (tcp, or http
# behind a header match for the L7 share).
GEN=$TMP/gen.py
cat >"$GEN" <<'PY'
import json, os, sys
mode, N, E, WE, DR, VS, L7 = sys.argv[1], *map(int, sys.argv[2:8])
out = sys.argv[8]
NS, TS = "scale", "2026-01-01T00:00:00Z"

def vip(i):
    i += 1
    return "10.%d.%d.%d" % (100 + (i >> 16), (i >> 8) & 255, i & 255)

def ep_ip(j):
    j += 1
    return "10.%d.%d.%d" % (128 + (j >> 16), (j >> 8) & 255, j & 255)

def host(i):
    return "s%d.%s.svc.cluster.local" % (i, NS)

def vs(i, w1):
    h = host(i)
    route = [{"destination": {"host": h, "subset": "v1"}, "weight": w1},
             {"destination": {"host": h, "subset": "v2"}, "weight": 100 - w1}]
    spec = {"hosts": [h]}
    if i % 100 < L7:
        spec["http"] = [{"match": [{"headers": {"x-canary": {"exact": "true"}}}],
                         "route": [{"destination": {"host": h, "subset": "v2"}}]},
                        {"route": route}]
    else:
        spec["tcp"] = [{"route": route}]
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "s%d" % i, "namespace": NS}, "spec": spec}

def resources(i):
    l7 = i % 100 < L7
    port = {"number": 80, "name": "http" if l7 else "tcp", "protocol": "HTTP" if l7 else "TCP"}
    se = {"hosts": [host(i)], "addresses": [vip(i)], "ports": [port],
          "location": "MESH_INTERNAL", "resolution": "STATIC"}
    eps = [{"address": ep_ip(i * E + k), "labels": {"app": "s%d" % i, "version": "v%d" % (k % 2 + 1)}}
           for k in range(E)]
    if i < WE:
        se["workloadSelector"] = {"labels": {"app": "s%d" % i}}
        for k, ep in enumerate(eps):
            yield {"apiVersion": "networking.istio.io/v1beta1", "kind": "WorkloadEntry",
                   "metadata": {"name": "s%d-%d" % (i, k), "namespace": NS, "labels": ep["labels"]},
                   "spec": ep}
    else:
        se["endpoints"] = eps
    yield {"apiVersion": "networking.istio.io/v1beta1", "kind": "ServiceEntry",
           "metadata": {"name": "s%d" % i, "namespace": NS}, "spec": se}
    if i % 100 < DR:
        tp = {"loadBalancer": {"simple": "ROUND_ROBIN"}}
        if i % 2:
            tp["outlierDetection"] = {"consecutive5xxErrors": 5, "interval": "10s",
                                      "baseEjectionTime": "30s", "maxEjectionPercent": 50}
        yield {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
               "metadata": {"name": "s%d" % i, "namespace": NS},
               "spec": {"host": host(i), "trafficPolicy": tp,
                        "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                    {"name": "v2", "labels": {"version": "v2"}}]}}
    if i % 100 < VS:
        yield vs(i, 90)

if mode == "all":       # out: YAML (as JSON documents) for meshctl apply, and a store dir
    yml, store = out + ".yaml", out + ".store"
    n = 0
    with open(yml, "w") as y:
        for i in range(N):
            for r in resources(i):
                y.write("---\n" + json.dumps(r) + "\n")
                st = json.loads(json.dumps(r))
                st["metadata"].update({"generation": 1, "creationTimestamp": TS})
                d = os.path.join(store, "resources", r["kind"], NS)
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, r["metadata"]["name"] + ".json"), "w") as f:
                    json.dump(st, f, indent=2)
                n += 1
    with open(os.path.join(store, "generation"), "w") as f:
        f.write("1\n")
    print(n)
else:                    # "vs": VirtualServices "I:W1,I:W1,..." as one YAML stream
    for item in out.split(","):
        i, w1 = map(int, item.split(":"))
        sys.stdout.write("---\n" + json.dumps(vs(i, w1)) + "\n")
PY
vs_yaml() { python3 "$GEN" vs "$N" "$E" "$WE" "$DR_PCT" "$VS_PCT" "$L7_PCT" "$1"; }
# Services with a VirtualService, in order: i % 100 < VS_PCT.
vs_service() { echo $(( ($1 / VS_PCT) * 100 + $1 % VS_PCT )); }

R=$TMP/report
: >"$R"
kv() { echo "$1=$2" >>"$R"; log "$1 = $2"; }
kv services "$N"; kv endpoints_per_service "$E"; kv we_services "$WE"
kv dr_pct "$DR_PCT"; kv vs_pct "$VS_PCT"; kv l7_pct "$L7_PCT"

log "generating $N services x $E endpoints"
t0=$(now_ms)
n_res=$(timeout "$LIMIT" python3 "$GEN" all "$N" "$E" "$WE" "$DR_PCT" "$VS_PCT" "$L7_PCT" "$TMP/set") ||
  die "generation failed or took over ${LIMIT}s"
kv resources "$n_res"
kv generate_ms $(( $(now_ms) - t0 ))
kv yaml_bytes "$(stat -c %s "$TMP/set.yaml")"

# ---- (5) meshctl apply of the whole set ----------------------------------------
STORE=$TMP/set.store
log "meshctl apply -f of $n_res resources"
t0=$(now_ms)
if BPFMESH_STORE=file://$TMP/applied timeout "$LIMIT" "$MESHCTL" apply -f "$TMP/set.yaml" >"$TMP/apply.out" 2>&1; then
  kv apply_all_ms $(( $(now_ms) - t0 ))
  kv apply_all_created "$(grep -c ' created$' "$TMP/apply.out")"
  STORE=$TMP/applied
else
  kv apply_all_ms "failed after $(( $(now_ms) - t0 )) ms: $(tail -1 "$TMP/apply.out")"
  log "using the directly written store instead"
fi
kv store "$( [ "$STORE" = "$TMP/applied" ] && echo 'written by meshctl apply' || echo 'written directly')"
rm -rf "$TMP/set.yaml"

# ---- (1) cold start -------------------------------------------------------------
LOGF=$TMP/meshd.log
: >"$LOGF"
gen=$(cat "$STORE/generation")
log "cold start on $n_res resources (generation $gen)"
t0=$(now_ms)
start_meshd "$STORE" "$LOGF"
line=$(wait_applied "$gen" "$LOGF") || die "cold start failed"
t1=$(log_ms "$line")
prog=$(grep -a 'meshd: programs ' "$LOGF" | head -1)
kv cold_start_ms $(( t1 - t0 ))
[ -n "$prog" ] && kv cold_programs_ms $(( $(log_ms "$prog") - t0 ))
kv cold_applied_line "${line#* meshd: }"
st=$(timeout 30 "$MESHCTL" status --node $NODE -o json)
for f in services clusters backends applied_generation reloads; do
  kv "status_$f" "$(echo "$st" | python3 -c "import json,sys; print(json.load(sys.stdin)['nodes'][0].get('$f'))")"
done
kv svc_v1_entries "$(timeout 60 bpftool -j map dump pinned "$PIN/svc_v1" | python3 -c 'import json,sys; o = json.load(sys.stdin); print(len(o) if isinstance(o, list) else o)')"
kv cluster_v1_entries "$(timeout 60 bpftool -j map dump pinned "$PIN/cluster_v1" | python3 -c 'import json,sys; o = json.load(sys.stdin); print(len(o) if isinstance(o, list) else o)')"
[ "$(grep '^svc_v1_entries=' "$R" | cut -d= -f2)" = "$N" ] || log "WARNING: svc_v1 does not hold $N services"

check_pins

# ---- (4) memory and CPU after the load ----------------------------------------
kv rss_after_load_kb "$(rss_kb "$MESHD_PID")"
kv hwm_after_load_kb "$(hwm_kb "$MESHD_PID")"
kv cpu_after_load_ms "$(cpu_ms "$MESHD_PID")"

# ---- (2) single changes ----------------------------------------------------------
apply_one() { # YAML on stdin -> generation applied, prints "gen_to_applied e2e rewritten"
  local t0 gen line ta
  t0=$(now_ms)
  timeout "$LIMIT" "$MESHCTL" apply -f - >/dev/null || { log "meshctl apply failed"; return 1; }
  gen=$(cat "$STORE/generation")
  line=$(wait_applied "$gen" "$LOGF") || return 1
  ta=$(log_ms "$line")
  echo "$(( ta - $(mtime_ms "$STORE/generation") )) $(( ta - t0 )) $(echo "$line" | sed -n 's/.* \([0-9]*\) rewritten.*/\1/p')"
}
export BPFMESH_STORE=file://$STORE
target=$(vs_service 0)
: >"$TMP/single"
cpu0=$(cpu_ms "$MESHD_PID")
wrong=0
log "$CHANGES single weight changes of service $target"
for c in $(seq 1 "$CHANGES"); do
  w1=$(( 5 + (c * 37) % 90 ))
  if [ "${SCALE_PERF:-0}" = 1 ] && [ "$c" = 1 ] && command -v perf >/dev/null; then
    perf record -g -o "$TMP/perf.data" -p "$MESHD_PID" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
  fi
  r=$(vs_yaml "$target:$w1" | apply_one) || die "single change $c failed"
  if [ -n "${perf_pid:-}" ]; then
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null; perf_pid=
    perf report -i "$TMP/perf.data" --no-children --stdio --percent-limit 1 2>/dev/null |
      grep -v '^$' | head -150 >"$RESULTS/scale-perf.txt"
  fi
  echo "$r" >>"$TMP/single"
  got=$(svc_weights "$target")
  [ "$got" = "$w1 100" ] || { wrong=$((wrong + 1)); log "change $c: svc_v1 holds '$got', want '$w1 100'"; }
done
cpu1=$(cpu_ms "$MESHD_PID")
read -r med max n < <(cut -d' ' -f1 "$TMP/single" | stats)
kv single_gen_to_applied_ms "median $med, max $max (n=$n)"
read -r med max n < <(cut -d' ' -f2 "$TMP/single" | stats)
kv single_apply_to_applied_ms "median $med, max $max (n=$n)"
kv single_rewritten "$(cut -d' ' -f3 "$TMP/single" | sort -u | tr '\n' ' ')"
kv single_cpu_ms_per_change $(( (cpu1 - cpu0) / CHANGES ))
kv single_map_mismatches "$wrong"

check_pins

# ---- (3) bursts -------------------------------------------------------------------
reloads() { timeout 30 "$MESHCTL" status --node $NODE -o json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["nodes"][0]["reloads"])'; }
n_vs=$(( N / 100 * VS_PCT + (N % 100 < VS_PCT ? N % 100 : VS_PCT) ))
[ "$BURST" -le $(( n_vs - 1 )) ] || BURST=$(( n_vs - 1 ))
log "burst: $BURST back-to-back applies"
rl0=$(reloads)
cpu0=$(cpu_ms "$MESHD_PID")
t0=$(now_ms)
for b in $(seq 1 "$BURST"); do
  vs_yaml "$(vs_service "$b"):$(( 20 + b % 60 ))" | timeout "$LIMIT" "$MESHCTL" apply -f - >/dev/null ||
    die "burst apply $b failed"
done
t_written=$(now_ms)
gen=$(cat "$STORE/generation")
line=$(wait_applied "$gen" "$LOGF") || die "burst not applied"
ta=$(log_ms "$line")
kv burst_applies_ms $(( t_written - t0 ))
kv burst_first_apply_to_applied_ms $(( ta - t0 ))
kv burst_last_write_to_applied_ms $(( ta - $(mtime_ms "$STORE/generation") ))
kv burst_reloads $(( $(reloads) - rl0 ))
kv burst_cpu_ms $(( $(cpu_ms "$MESHD_PID") - cpu0 ))
bad=0
for b in $(seq 1 "$BURST"); do
  [ "$(svc_weights "$(vs_service "$b")")" = "$(( 20 + b % 60 )) 100" ] || bad=$((bad + 1))
done
kv burst_map_mismatches "$bad"

log "burst: $BURST changes in one apply"
items=$(for b in $(seq 1 "$BURST"); do printf '%s:%s,' "$(vs_service "$b")" $(( 70 + b % 20 )); done)
r=$(vs_yaml "${items%,}" | apply_one) || die "one-apply burst failed"
kv burst_one_apply_gen_to_applied_ms "$(echo "$r" | cut -d' ' -f1)"
kv burst_one_apply_to_applied_ms "$(echo "$r" | cut -d' ' -f2)"
kv burst_one_apply_rewritten "$(echo "$r" | cut -d' ' -f3)"

# ---- (6) connect latency against map size ------------------------------------------
# One VIP (198.18.0.10:80, never routed: the clients' netns has only lo) whose
# backend is a real listener on 127.0.0.2:18080 in that netns, loaded into
# this node (N services) and into a second meshd, node scale0, that holds 10
# services. Clients run in each node's pod cgroup (<pods>/connlat, under the
# subtree connect4 is attached to), in alternating batches: both map sizes
# see the same machine load. SCALE_CONNECTS per side (2000), in batches of
# SCALE_CONNECT_BATCH (100). Also each node's BPF map memory (memlock).
if [ "${SCALE_CONNECTS:-2000}" -gt 0 ]; then
  CONNS=${SCALE_CONNECTS:-2000}
  CBATCH=${SCALE_CONNECT_BATCH:-100}
  CONNLAT=$TMP/bm-connlat
  gcc -O2 -Wall -Wextra -Werror -o "$CONNLAT" "$HERE/bm-connlat.c" || die "cannot build bm-connlat"
  conn_se() { # NAME VIP TARGET_PORT ENDPOINT
    printf -- '---\n{"apiVersion": "networking.istio.io/v1beta1", "kind": "ServiceEntry", "metadata": {"name": "%s", "namespace": "scale"}, "spec": {"hosts": ["%s.scale.svc.cluster.local"], "addresses": ["%s"], "ports": [{"number": 80, "name": "tcp", "protocol": "TCP", "targetPort": %s}], "location": "MESH_INTERNAL", "resolution": "STATIC", "endpoints": [{"address": "%s"}]}}\n' "$1" "$1" "$2" "$3" "$4"
  }
  log "connect latency: listener in netns $CONN_NS, node $NODE0 with 10 services"
  conn_cleanup
  ip netns add "$CONN_NS" && ip -n "$CONN_NS" link set lo up || die "cannot create netns $CONN_NS"
  ip netns exec "$CONN_NS" "$CONNLAT" serve 127.0.0.2:18080 &
  CONN_SRV_PID=$!
  # The VIP in the big node: one more service, one more reload.
  conn_se connlat 198.18.0.10 18080 127.0.0.2 | apply_one >/dev/null || die "connlat service not applied"
  # The small node: the same VIP and 9 others.
  SMALL=$TMP/small-store
  { conn_se connlat 198.18.0.10 18080 127.0.0.2
    for i in $(seq 1 9); do conn_se "small$i" "198.18.1.$i" 18080 "127.0.0.$((10 + i))"; done
  } | BPFMESH_STORE=file://$SMALL timeout "$LIMIT" "$MESHCTL" apply -f - >/dev/null || die "small store"
  mkdir -p "$CG0" "$RUN_ROOT/$NODE0" || die "cannot create $CG0"
  : >"$TMP/meshd0.log"
  "$MESHD" --node $NODE0 --cgroup "$CG0" --bpffs "$PIN0" --run-dir "$RUN_ROOT/$NODE0" \
    --store "file://$SMALL" --no-proxy --metrics-addr 127.0.0.1:0 --ready-addr 127.0.0.1:0 \
    >>"$TMP/meshd0.log" 2>&1 &
  MESHD0_PID=$!
  g0=$(cat "$SMALL/generation")
  for _ in $(seq $((LIMIT * 10))); do
    grep -aq " generation $g0 applied" "$TMP/meshd0.log" && break
    kill -0 "$MESHD0_PID" 2>/dev/null || { tail -5 "$TMP/meshd0.log" >&2; die "node $NODE0 exited"; }
    sleep 0.1
  done
  grep -aq " generation $g0 applied" "$TMP/meshd0.log" || die "node $NODE0 did not apply its store"
  mkdir -p "$CG/connlat" "$CG0/connlat" || die "cannot create the clients' cgroups"
  : >"$TMP/lat-big"; : >"$TMP/lat-small"
  bad=0
  t_end=$(( $(date +%s) + LIMIT ))
  for r in $(seq 1 $(( (CONNS + CBATCH - 1) / CBATCH ))); do
    # ABBA order: neither side always runs first.
    if [ $((r % 2)) = 1 ]; then order="small big"; else order="big small"; fi
    for side in $order; do
      cg=$CG0/connlat; [ $side = big ] && cg=$CG/connlat
      # Into the cgroup first: `ip netns exec` mounts a /sys without it.
      sh -c "echo \$\$ >'$cg/cgroup.procs' && exec ip netns exec '$CONN_NS' '$CONNLAT' connect 198.18.0.10:80 $CBATCH" \
        >>"$TMP/lat-$side" 2>>"$TMP/lat-err" || bad=$((bad + 1))
    done
    [ "$(date +%s)" -ge $t_end ] && { log "connect phase: time limit reached after $r rounds"; break; }
  done
  pct() { sort -n "$1" | awk '{ a[NR] = $1 } END { if (!NR) { print "- - - 0"; exit }
    printf "%.1f %.1f %.1f %d\n", a[int(NR * 0.50 + 0.5)] / 1000, a[int(NR * 0.90 + 0.5)] / 1000,
      a[int(NR * 0.99 + 0.5)] / 1000, NR }'; }
  read -r p50 p90 p99 n < <(pct "$TMP/lat-small")
  kv connect_10_services_us "p50 $p50, p90 $p90, p99 $p99 (n=$n)"
  read -r p50 p90 p99 n < <(pct "$TMP/lat-big")
  kv connect_${N}_services_us "p50 $p50, p90 $p90, p99 $p99 (n=$n)"
  kv connect_failed_batches "$bad$( [ -s "$TMP/lat-err" ] && echo ": $(sort -u "$TMP/lat-err" | head -2 | tr '\n' ' ')")"
  # Map memory: memlock of every map pinned under each node's directory.
  memlock() { local t=0 b f
    for f in $(find "$1" -maxdepth 1 -type f 2>/dev/null); do
      b=$(bpftool -j map show pinned "$f" 2>/dev/null | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("bytes_memlock", 0))
except Exception: print(0)')
      t=$((t + ${b:-0}))
    done; echo $t; }
  big=$(memlock "$PIN"); small=$(memlock "$PIN0")
  kv map_memlock_bytes "$N services: $big; 10 services: $small"
  kv map_memlock_per_1000_services "$(( big * 1000 / (N + 1) )) bytes in all; $(( (big - small) * 1000 / (N + 1 - 10) )) bytes above the 10-service node"
  conn_cleanup
fi

kv rss_end_kb "$(rss_kb "$MESHD_PID")"
kv hwm_end_kb "$(hwm_kb "$MESHD_PID")"
kv cpu_end_ms "$(cpu_ms "$MESHD_PID")"

check_pins

# ---- restart on the pins ------------------------------------------------------------
log "restart: adopt the pinned maps"
stop_meshd
gen=$(cat "$STORE/generation")
mark=$(wc -l <"$LOGF")
t0=$(now_ms)
start_meshd "$STORE" "$LOGF"
for _ in $(seq $((LIMIT * 100))); do
  line=$(tail -n +$((mark + 1)) "$LOGF" | grep -a " generation $gen applied" | tail -1)
  [ -n "$line" ] && break
  kill -0 "$MESHD_PID" 2>/dev/null || die "meshd exited on restart"
  sleep 0.01
done
[ -n "$line" ] || die "restart: generation $gen not applied"
check_pins
kv restart_ms $(( $(log_ms "$line") - t0 ))
kv restart_applied_line "${line#* meshd: }"
grep -a -c 'model: \|l7: ' "$LOGF" | { read -r w; kv model_log_lines "$w"; }

# ---- report ------------------------------------------------------------------------------
get() { grep "^$1=" "$R" | tail -1 | cut -d= -f2-; }
{
  echo "# Scale: $N services x $E endpoints"
  echo
  echo "- Run: $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "- Machine: nproc $(nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  echo "- Set: $(get resources) resources: $N ServiceEntries ($WE with WorkloadEntries), DR on $DR_PCT %, VS on $VS_PCT % (L7 with a header match on $L7_PCT %); store $(get store)"
  echo
  echo "| measure | value |"
  echo "|---|---|"
  while IFS='=' read -r k v; do echo "| $k | $v |"; done <"$R"
} >"$RESULTS/scale.md"
log "report: $RESULTS/scale.md"
