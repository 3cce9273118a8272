#!/usr/bin/env bash
# The sandbox in etcd mode (issue 7): `sandbox up --nodes 3 --store etcd`
# starts etcd itself (hub netns, 198.19.255.254:2379) and every node's meshd
# watches it; meshctl reaches it through `sandbox meshctl`.
#  - a ServiceEntry + DestinationRule (ROUND_ROBIN) applied through `sandbox
#    meshctl apply` reaches all three data planes (ms from apply to each node's
#    "generation N applied" reported); a client on node1 is balanced over
#    backends on node2 and node3;
#  - the nodes share one CA root (--ca-dir): a mesh (mTLS/HBONE) connection
#    from node1 to node3 works;
#  - `sandbox etcd stop` for 10 s while new connections flow: none fails; meshd
#    on node1 (the client's node, where balancing happens) restarted during the
#    outage serves from its last good configuration, still balanced;
#  - a VirtualService applied after etcd returns is applied on every node
#    (including the restarted one) and steers the traffic.
. "$(dirname "$0")/lib.sh"

command -v etcd >/dev/null || { log "SKIP: no etcd binary (apt-get install etcd-server)"; exit 0; }
command -v curl >/dev/null || { log "SKIP: no curl"; exit 0; }

# Only one sandbox fits on the machine, and t_begin takes down whatever is up:
# wait (up to 10 min) until nobody else's is.
for ((i = 0; i < 600; i += 5)); do
  ip netns list | awk '{ print $1 }' | grep -qx bm-hub || break
  [ "$i" = 0 ] && log "another sandbox is up (netns bm-hub); waiting for it to go down"
  sleep 5
done
ip netns list | awk '{ print $1 }' | grep -qx bm-hub && fail "another sandbox stayed up for 10 min"

T_START=$(date +%s)
t_begin --nodes 3 --store etcd

# From here meshctl is the sandbox's: etcd is reachable from the hub netns only
# (t_begin's BPFMESH_STORE=file://... is ignored in etcd mode).
cat >"$T_TMP/meshctl" <<EOF
#!/bin/sh
exec "$SANDBOX" meshctl "\$@"
EOF
chmod +x "$T_TMP/meshctl"
MESHCTL=$T_TMP/meshctl

ETCD_ADDR=198.19.255.254
st=$("$SANDBOX" status)
grep -q "^store: etcd://$ETCD_ADDR:2379\$" <<<"$st" || fail "sandbox status does not show the etcd store: $st"
grep -q "^etcd: pid [0-9]*, healthy" <<<"$st" || fail "sandbox status does not show etcd healthy: $st"
for n in node1 node2 node3; do
  grep -q "store etcd://$ETCD_ADDR:2379" "$BPFMESH_RUN/sandbox/meshd-$n.log" ||
    fail "meshd on $n does not use the etcd store: $(meshd_log_tail $n 5)"
done
log "ok: 3 nodes, etcd $(etcd --version | awk 'NR == 1 { print $3 }') at $ETCD_ADDR:2379 (hub netns)"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# store_gen: the generation etcd holds (what every node has to reach).
store_gen() {
  nsenter --net=/run/netns/bm-hub curl -s --max-time 2 -X POST "http://$ETCD_ADDR:2379/v3/kv/range" \
    -d "{\"key\":\"$(printf /bpfmesh/generation | base64)\"}" | python3 -c '
import base64, json, sys
kvs = json.load(sys.stdin).get("kvs", [])
print(base64.b64decode(kvs[0]["value"]).decode() if kvs else 0)'
}

# wait_gen GEN: every node applied GEN or later (10 s).
wait_gen() {
  local m
  for _ in $(seq 200); do
    read -r _ m _ < <(mesh_gen)
    [ "$m" -ge "$1" ] && return 0
    sleep 0.05
  done
  "$MESHCTL" status >&2 || true
  fail "not every node applied generation $1 within 10 s"
}

# node_ms GEN T0: per node, ms from T0 (ms since the epoch) to the log line
# "generation GEN applied"; prints "node1=.. node2=.. node3=.. max=.." (-1: none).
node_ms() {
  python3 - "$BPFMESH_RUN/sandbox" "$1" "$2" <<'PY'
import datetime, glob, os, re, sys
d, gen, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = []
for f in sorted(glob.glob(os.path.join(d, "meshd-node*.log"))):
    ms = -1
    for line in open(f, errors="replace"):
        if re.search(r"\bgeneration %s applied" % re.escape(gen), line):
            ts = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
            ms = round(ts.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000) - t0
    res.append((os.path.basename(f)[6:-4], ms))
worst = -1 if not res or min(m for _, m in res) < 0 else max(m for _, m in res)
print(" ".join("%s=%d" % r for r in res), "max=%d" % worst)
PY
}

# apply_timed: resources from stdin through `sandbox meshctl apply`; returns
# once all nodes applied; sets GEN and PROPAGATION.
apply_timed() {
  local t0 t1
  t0=$(now_ms)
  "$MESHCTL" apply -f - >"$T_TMP/apply.out" 2>&1 || { cat "$T_TMP/apply.out" >&2; fail "sandbox meshctl apply failed"; }
  GEN=$(store_gen)
  [ "$GEN" -gt 0 ] || fail "etcd holds no generation after apply"
  wait_gen "$GEN"
  t1=$(now_ms)
  PROPAGATION="$(node_ms "$GEN" "$t0") (observed by polling: $((t1 - t0)) ms)"
  [[ $PROPAGATION == *max=-1* ]] && fail "a node did not log generation $GEN applied: $PROPAGATION"
  return 0
}

# balanced OUT WHAT: no failure, both backends within 45..55 of 100.
balanced() {
  expect_eq "$2: failed" "$(jget "$1" failed)" 0
  expect_range "$2: to lb-1 (node2)" "$(jget "$1" by_id.lb-1 0)" 45 55
  expect_range "$2: to lb-2 (node3)" "$(jget "$1" by_id.lb-2 0)" 45 55
}

HOST=lb.t71.svc.cluster.local VIP=198.19.71.10 PORT=7100 TPORT=9710
pod lb-1 node2 t71 app=lb,version=v1
pod lb-2 node3 t71 app=lb,version=v2
pod client node1 default
server lb-1 lb-1 $TPORT
server lb-2 lb-2 $TPORT

# ------------------------------------------------------------ propagation + balance

apply_timed <<YAML
$(service_yaml lb t71 $HOST $VIP $PORT $TPORT lb)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: lb
  namespace: t71
spec:
  host: $HOST
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
YAML
log "ServiceEntry + DestinationRule (generation $GEN): ms from sandbox meshctl apply to applied: $PROPAGATION"
out=$(probe client --connect $VIP:$PORT -n 100)
log "client (node1) -> $VIP:$PORT: $out"
balanced "$out" "before the outage"

# ------------------------------------------------------------ shared CA, mTLS across nodes

fps=$("$MESHCTL" ca show -o json | python3 -c '
import json, sys
print(" ".join(sorted({n.get("sha256_fingerprint", "?") for n in json.load(sys.stdin)["nodes"]})))')
[ -n "$fps" ] && [[ $fps != *" "* ]] && [ "$fps" != "?" ] || fail "nodes do not share one CA root: $fps"
log "ok: one CA root on all nodes ($fps)"
mesh_pod ms-srv node3 t71 ms-server app=ms
mesh_pod ms-cli node1 t71 ms-client
wait_mesh_pod node3 t71/ms-srv
wait_mesh_pod node1 t71/ms-cli
server ms-srv ms-srv 9711
apply_timed <<YAML
$(service_yaml ms t71 ms.t71.svc.cluster.local 198.19.71.11 7101 9711 ms)
YAML
before=$(proxy_stats node1)
mark="BM71-$RANDOM$RANDOM"
out=$(tcp_marker ms-cli 198.19.71.11 7101 "$mark")
after=$(proxy_stats node1)
expect_eq "mesh connection node1 -> node3: banner" "$(jget "$out" banner)" ms-srv
[[ $(jget "$out" echo) == *"$mark"* ]] || fail "mesh connection: echo lacks the marker: $out"
expect_eq "node1 outbound HBONE connections" \
  $(pdelta "$after" "$before" connections.outbound_hbone.ok) 1

# ------------------------------------------------------------ etcd outage

# New connections at 50/s for 16 s: across the outage and a meshd restart.
"$SANDBOX" exec client -- "$PROBE" --connect $VIP:$PORT --rate 50 --duration 16 >"$T_TMP/outage.json" 2>&1 &
LOAD_PID=$!
T_BG_PIDS+=("$LOAD_PID")
sleep 1
"$SANDBOX" etcd stop 2>>"$T_TMP/sandbox.log" || fail "sandbox etcd stop failed"
t_down=$(now_ms)
"$SANDBOX" etcd status >/dev/null 2>&1 && fail "sandbox etcd status says running after stop"
log "etcd stopped (generation $GEN applied everywhere)"
sleep 3
meshd_ctl restart node1
sleep 1
out=$(probe client --connect $VIP:$PORT -n 100)
log "etcd down, node1's meshd restarted: $out"
balanced "$out" "etcd down, meshd on node1 restarted"
for n in node1 node2 node3; do
  grep -q "unreachable" "$BPFMESH_RUN/sandbox/meshd-$n.log" || fail "meshd on $n did not report etcd unreachable"
done
left=$(( 10000 - ($(now_ms) - t_down) ))
[ "$left" -gt 0 ] && sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
"$SANDBOX" etcd start 2>>"$T_TMP/sandbox.log" || fail "sandbox etcd start failed"
log "etcd back after $(( $(now_ms) - t_down )) ms"
wait "$LOAD_PID" 2>/dev/null || true
out=$(grep '^{' "$T_TMP/outage.json" | tail -n 1)
log "connections through the outage: $out"
[ -n "$out" ] || { cat "$T_TMP/outage.json" >&2; fail "no result from the load through the outage"; }
expect_eq "failed connections through the etcd outage" "$(jget "$out" failed)" 0
[ "$(jget "$out" ok 0)" -ge 700 ] || fail "too few connections through the outage: $out"

# ------------------------------------------------------------ a change after etcd returns

apply_timed <<YAML
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: lb
  namespace: t71
spec:
  hosts:
  - $HOST
  tcp:
  - route:
    - destination:
        host: $HOST
        subset: v2
      weight: 100
YAML
log "VirtualService after etcd returned (generation $GEN): ms from apply to applied: $PROPAGATION"
out=$(probe client --connect $VIP:$PORT -n 50)
log "after the change: $out"
expect_eq "failed after the change" "$(jget "$out" failed)" 0
expect_eq "connections to subset v2 (lb-2)" "$(jget "$out" by_id.lb-2 0)" 50
secs=$(( $(date +%s) - T_START ))
log "done in ${secs}s"
[ "$secs" -lt 90 ] || fail "took ${secs}s (bound: 90 s)"
