#!/usr/bin/env bash
# etcd as the shared store (issue 7): three nodes' meshd share one etcd, which
# runs in the hub netns on 198.19.255.254 (on br0, where every node reaches
# it). meshctl runs in the hub netns too (the sandbox keeps nothing in the
# root netns).
#  - a ServiceEntry applied through meshctl reaches all three data planes
#    (time from apply to each node's "generation N applied" is reported);
#  - etcd stopped for 10 s while new connections flow on the kernel path: none
#    fails; meshd says etcd is unreachable and keeps its configuration, also
#    across a meshd restart during the outage;
#  - a change made after etcd returns is applied on every node and carries
#    traffic.
. "$(dirname "$0")/lib.sh"

ETCD=${BPFMESH_TEST_ETCD:-$(command -v etcd || true)}
[ -x "$ETCD" ] || { log "SKIP: no etcd binary (apt-get install etcd-server)"; exit 0; }
ETCD_ADDR=198.19.255.254
ETCD_PID=""
HUBNS=/run/netns/bm-hub
export BPFMESH_STORE=etcd://$ETCD_ADDR:2379

# Only one sandbox fits on the machine: wait (up to 10 min) for another one.
for ((i = 0; i < 600; i += 5)); do
  ip netns list | awk '{ print $1 }' | grep -qx bm-hub || break
  [ "$i" = 0 ] && log "another sandbox is up (netns bm-hub); waiting for it to go down"
  sleep 5
done
ip netns list | awk '{ print $1 }' | grep -qx bm-hub && fail "another sandbox stayed up for 10 min"

etcd_start() {
  nsenter --net=$HUBNS "$ETCD" --name bm --data-dir "$T_TMP/etcd" \
    --listen-client-urls "http://$ETCD_ADDR:2379" --advertise-client-urls "http://$ETCD_ADDR:2379" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster bm=http://127.0.0.1:2380 --log-level warn >>"$T_TMP/etcd.log" 2>&1 &
  ETCD_PID=$!
  for _ in $(seq 150); do
    nsenter --net=$HUBNS curl -s --max-time 1 "http://$ETCD_ADDR:2379/health" 2>/dev/null |
      grep -q true && return 0
    kill -0 "$ETCD_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$T_TMP/etcd.log" >&2
  fail "etcd did not become healthy on $ETCD_ADDR:2379 within 15 s"
}

etcd_stop() {
  [ -n "$ETCD_PID" ] || return 0
  kill "$ETCD_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$ETCD_PID" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$ETCD_PID" 2>/dev/null || true
  wait "$ETCD_PID" 2>/dev/null || true
  ETCD_PID=""
}

it_cleanup() {
  local rc=$?
  set +e
  etcd_stop
  [ $rc -ne 0 ] && [ -f "$T_TMP/etcd.log" ] && { echo "--- etcd.log" >&2; tail -n 15 "$T_TMP/etcd.log" >&2; }
  (exit $rc)
  t_cleanup
}

# Up and down in the root netns (they make and remove the hub); everything
# else in the hub netns, where etcd is reachable. nsenter keeps the mount
# namespace (cgroups, bpffs), unlike `ip netns exec`.
in_hub_wrappers() {
  local real_sandbox=$SANDBOX real_meshctl=$MESHCTL
  cat >"$T_TMP/sandbox" <<EOF
#!/bin/sh
case \${1:-} in up|down) exec "$real_sandbox" "\$@" ;; esac
exec nsenter --net=$HUBNS "$real_sandbox" "\$@"
EOF
  cat >"$T_TMP/meshctl" <<EOF
#!/bin/sh
exec nsenter --net=$HUBNS "$real_meshctl" "\$@"
EOF
  chmod +x "$T_TMP/sandbox" "$T_TMP/meshctl"
  SANDBOX=$T_TMP/sandbox
  MESHCTL=$T_TMP/meshctl
}

# applied_ms GEN T0_MS: per node, ms from T0 to its "generation GEN applied"
# log line; prints "node1=12 node2=15 node3=9 max=15" (missing: -1).
applied_ms() {
  python3 - "$BPFMESH_RUN/sandbox" "$1" "$2" <<'PY'
import datetime, glob, os, re, sys
d, gen, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
out, all_ms = [], []
for f in sorted(glob.glob(os.path.join(d, "meshd-node*.log"))):
    node, ms = os.path.basename(f)[6:-4], -1
    for line in open(f, errors="replace"):
        if re.search(r"generation %s applied" % gen, line):
            ts = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
            ms = int(ts.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000) - t0
    out.append("%s=%d" % (node, ms))
    all_ms.append(ms)
print(" ".join(out), "max=%d" % (-1 if not all_ms or min(all_ms) < 0 else max(all_ms)))
PY
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# store_gen: the generation etcd holds (agents report only what they saw).
store_gen() {
  nsenter --net=$HUBNS curl -s --max-time 2 -X POST "http://$ETCD_ADDR:2379/v3/kv/range" \
    -d "{\"key\":\"$(printf /bpfmesh/generation | base64)\"}" | python3 -c '
import base64, json, sys
kvs = json.load(sys.stdin).get("kvs", [])
print(base64.b64decode(kvs[0]["value"]).decode() if kvs else 0)'
}

# wait_applied GEN: every node applied GEN or later (10 s).
wait_applied() {
  local m
  for _ in $(seq 100); do
    read -r _ m _ < <(mesh_gen)
    [ "$m" -ge "$1" ] && return 0
    sleep 0.1
  done
  "$MESHCTL" status -o json >&2 || true
  fail "not every node applied generation $1 within 10 s"
}

# apply_timed: resources from stdin; waits until every node applied the new
# generation; sets APPLIED_GEN and PROPAGATION (the applied_ms line).
apply_timed() {
  local t0
  t0=$(now_ms)
  "$MESHCTL" apply -f - >"$T_TMP/apply.out" 2>&1 || { cat "$T_TMP/apply.out" >&2; fail "meshctl apply failed"; }
  APPLIED_GEN=$(store_gen)
  wait_applied "$APPLIED_GEN"
  PROPAGATION=$(applied_ms "$APPLIED_GEN" "$t0")
}

# ------------------------------------------------------------------ setup

for b in "$MESHD" "$MESHCTL" "$PROBE" "$TESTSRV"; do [ -x "$b" ] || fail "$b is missing (run make)"; done
T_TMP=$(mktemp -d /tmp/bpfmesh-it.XXXXXX)
trap it_cleanup EXIT
trap 'exit 143' TERM INT
in_hub_wrappers
"$SANDBOX" down >/dev/null 2>&1 || true
"$SANDBOX" up --nodes 3 >"$T_TMP/up.log" 2>&1 || { cat "$T_TMP/up.log" >&2; fail "sandbox up failed"; }
ip -n bm-hub addr add "$ETCD_ADDR/24" dev br0
etcd_start
log "etcd $("$ETCD" --version | head -n 1 | awk '{ print $3 }') at $BPFMESH_STORE (hub netns)"
wait_ready
for n in node1 node2 node3; do
  # A first SYN to the hub's fresh address can be lost (neighbour
  # resolution); TCP retransmits it after 1 s, so allow a few attempts.
  ok=0
  for _ in 1 2 3 4 5; do
    if nsenter --net=/run/netns/bmn-$n curl -s --max-time 2 "http://$ETCD_ADDR:2379/health" | grep -q true; then
      ok=1
      break
    fi
  done
  [ "$ok" = 1 ] || fail "etcd not reachable from $n's netns"
done

HOST=et.test.svc.cluster.local VIP=198.19.7.70 VIP2=198.19.7.71
pod et-a node2 test app=et
pod et-b node3 test app=et
pod client node1 default
server et-a et-a 9700
server et-b et-b 9700

# ------------------------------------------------------------------ propagation

apply_timed <<YAML
$(service_yaml et test $HOST $VIP 9700 9700 et)
YAML
log "ServiceEntry (generation $APPLIED_GEN) applied, ms after meshctl apply: $PROPAGATION"
max=${PROPAGATION##*max=}
[ "$max" -ge 0 ] || fail "a node did not log generation $APPLIED_GEN applied: $PROPAGATION"
out=$(probe client --connect $VIP:9700 -n 100)
log "through the VIP: $out"
expect_eq "failed via $VIP" "$(jget "$out" failed)" 0
[ "$(jget "$out" by_id.et-a 0)" -gt 0 ] && [ "$(jget "$out" by_id.et-b 0)" -gt 0 ] ||
  fail "both backends (node2, node3) should serve: $out"

# ------------------------------------------------------------------ outage

# New connections for 16 s at 50/s: across the outage and a meshd restart.
"$SANDBOX" exec client -- "$PROBE" --connect $VIP:9700 --rate 50 --duration 16 \
  >"$T_TMP/outage.json" 2>&1 &
LOAD_PID=$!
T_BG_PIDS+=("$LOAD_PID")
sleep 1
gen_before=$(store_gen)
log "stopping etcd for 10 s (generation $gen_before applied everywhere)"
etcd_stop
t_down=$(now_ms)
sleep 3
# meshd restarted with etcd down: it adopts its pinned maps and keeps serving.
meshd_ctl restart node1
sleep 1
out=$(probe client --connect $VIP:9700 -n 50)
log "etcd down, node1's meshd restarted: $out"
expect_eq "failed with etcd down after a meshd restart" "$(jget "$out" failed)" 0
for n in node1 node2 node3; do
  grep -q "unreachable" "$BPFMESH_RUN/sandbox/meshd-$n.log" ||
    fail "meshd on $n did not report etcd unreachable"
done
st=$("$MESHCTL" status -o json 2>/dev/null || true)
log "status during the outage: $(python3 -c '
import json, sys
try:
    for n in json.loads(sys.argv[1])["nodes"]:
        print("%s applied=%s store_connected=%s last_error=%r" % (n["node"], n.get("applied_generation"),
              n.get("store_connected", "n/a"), n.get("last_error")), end="; ")
except Exception as e:
    print("unparsable:", e)' "$st")"
# Staleness in status, where meshd reports it (store_connected, store_last_ok).
if grep -q '"store_connected"' <<<"$st"; then
  grep -q '"store_connected": *true' <<<"$st" && fail "a node reports the store connected while etcd is down"
  log "ok: every node reports store_connected=false"
fi
left=$(( 10000 - ($(now_ms) - t_down) ))
[ "$left" -gt 0 ] && sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
etcd_start
log "etcd back after $(( ($(now_ms) - t_down) )) ms"
wait "$LOAD_PID" 2>/dev/null || true
out=$(grep '^{' "$T_TMP/outage.json" | tail -n 1)
log "connections through the outage: $out"
[ -n "$out" ] || { cat "$T_TMP/outage.json" >&2; fail "no result from the load through the outage"; }
expect_eq "failed connections through the etcd outage" "$(jget "$out" failed)" 0
[ "$(jget "$out" ok)" -ge 700 ] || fail "too few connections through the outage: $out"

# ------------------------------------------------------------------ after

apply_timed <<YAML
$(service_yaml et2 test et2.test.svc.cluster.local $VIP2 9700 9700 et)
YAML
log "change after etcd returned (generation $APPLIED_GEN), ms after meshctl apply: $PROPAGATION"
[ "${PROPAGATION##*max=}" -ge 0 ] || fail "a node did not apply generation $APPLIED_GEN: $PROPAGATION"
out=$(probe client --connect $VIP2:9700 -n 50)
log "through the new VIP: $out"
expect_eq "failed via $VIP2 (created after the outage)" "$(jget "$out" failed)" 0
