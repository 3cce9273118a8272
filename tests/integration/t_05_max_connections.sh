#!/usr/bin/env bash
# (e) connectionPool.tcp.maxConnections N: N concurrent connections are fine,
# the (N+1)th is refused with ECONNREFUSED; once they close, new ones succeed.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

HOST=mc.test.svc.cluster.local VIP=198.19.5.50 N=8
pod mc-a node2 test app=mc
pod mc-b node2 test app=mc
pod client node1 default
server mc-a mc-a 9300
server mc-b mc-b 9300

apply <<YAML
$(service_yaml mc test $HOST $VIP 9300 9300 mc)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: mc
  namespace: test
spec:
  host: $HOST
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: $N
YAML

hold_start client "$T_TMP/hold.json" --connect $VIP:9300 -n $N --concurrency $N
held=$(grep '"phase":"open"' "$T_TMP/hold.json")
log "held: $held"
expect_eq "held connections ok" "$(jget "$held" ok)" $N

out=$(probe client --connect $VIP:9300 -n 1 --timeout-ms 2000)
log "N+1th: $out"
expect_eq "N+1th connection failed" "$(jget "$out" failed)" 1
expect_eq "N+1th refused with ECONNREFUSED" "$(jget "$out" errors.ECONNREFUSED 0)" 1

final=$(hold_finish "$T_TMP/hold.json")
expect_eq "held connections alive" "$(jget "$final" alive)" $N

# Slots are released when connections close (allow the closes to be accounted).
ok=0
for _ in $(seq 20); do
  out=$(probe client --connect $VIP:9300 -n $N --concurrency $N)
  [ "$(jget "$out" ok)" = $N ] && { ok=1; break; }
  sleep 0.1
done
[ $ok = 1 ] || fail "after the held connections closed, $N new concurrent connections still not all accepted: $out"
log "ok: slots released after close"
