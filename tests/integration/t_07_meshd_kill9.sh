#!/usr/bin/env bash
# (g) meshd killed with SIGKILL and restarted while 100 long-lived connections
# are open: all 100 survive (echo round trip), new connections stay balanced
# both while meshd is gone and after it adopted its pins, and the restart does
# not attach a second copy of any program.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

HOST=ks.test.svc.cluster.local VIP=198.19.7.70
pod ks-a node2 test app=ks
pod ks-b node2 test app=ks
pod client node1 default
server ks-a ks-a 9500
server ks-b ks-b 9500
CG=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)/bpfmesh/node1/pods

apply <<YAML
$(service_yaml ks test $HOST $VIP 9500 9500 ks)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: ks
  namespace: test
spec:
  host: $HOST
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
YAML

attached() { bpftool cgroup show "$CG" | tail -n +2 | awk '{print $2 "/" $NF}' | sort | tr '\n' ' '; }
progs_before=$(attached)
log "programs on $CG: $progs_before"
[ -n "$progs_before" ] || fail "no programs attached to $CG"

hold_start client "$T_TMP/hold.json" --connect $VIP:9500 -n 100 --concurrency 20
held=$(grep '"phase":"open"' "$T_TMP/hold.json")
expect_eq "held connections" "$(jget "$held" ok)" 100

meshd_ctl kill node1
meshd_ctl kill node2
out=$(probe client --connect $VIP:9500 -n 100)
log "meshd dead: $out"
expect_eq "failed with meshd dead" "$(jget "$out" failed)" 0
expect_eq "ks-a while meshd dead" "$(jget "$out" by_id.ks-a 0)" 50
expect_eq "ks-b while meshd dead" "$(jget "$out" by_id.ks-b 0)" 50

meshd_ctl start node1
meshd_ctl start node2
wait_ready
progs_after=$(attached)
[ "$progs_before" = "$progs_after" ] ||
  fail "programs on $CG changed across the restart: before [$progs_before] after [$progs_after]"
log "ok: same programs attached after restart (no second copy)"

final=$(hold_finish "$T_TMP/hold.json")
log "held after restart: $final"
expect_eq "held connections alive after kill -9 + restart" "$(jget "$final" alive)" 100

out=$(probe client --connect $VIP:9500 -n 200 --concurrency 1)
log "after restart: $out"
expect_eq "failed after restart" "$(jget "$out" failed)" 0
expect_eq "ks-a after restart" "$(jget "$out" by_id.ks-a 0)" 100
expect_eq "ks-b after restart" "$(jget "$out" by_id.ks-b 0)" 100
