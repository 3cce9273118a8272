#!/usr/bin/env bash
# (f) Weights changed repeatedly while a steady stream of new connections runs:
# not one connection fails.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

HOST=wl.test.svc.cluster.local VIP=198.19.6.60
pod wl-v1 node1 test app=wl,version=v1
pod wl-v2 node2 test app=wl,version=v2
pod client node2 default
server wl-v1 v1 9400
server wl-v2 v2 9400

dr_and_vs() { # W1 W2
  cat <<YAML
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: wl
  namespace: test
spec:
  host: $HOST
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: wl
  namespace: test
spec:
  hosts:
  - $HOST
  tcp:
  - route:
    - destination:
        host: $HOST
        subset: v1
      weight: $1
    - destination:
        host: $HOST
        subset: v2
      weight: $2
YAML
}

{ service_yaml wl test $HOST $VIP 9400 9400 wl; echo ---; dr_and_vs 100 0; } | apply

# 300 new connections/s for 10 s, 2 s timeout each.
"$SANDBOX" exec client -- "$PROBE" --connect $VIP:9400 --rate 300 --duration 10 --timeout-ms 2000 \
  >"$T_TMP/load.json" 2>&1 &
LOAD=$!
T_BG_PIDS+=("$LOAD")
sleep 0.5
for w in "50 50" "0 100" "80 20" "100 0" "10 90" "0 100" "50 50" "100 0" "30 70" "70 30" "0 100" "90 10"; do
  dr_and_vs $w | apply
  log "weights now $w"
  sleep 0.5
done
for _ in $(seq 200); do kill -0 $LOAD 2>/dev/null || break; sleep 0.1; done
wait $LOAD || true
out=$(tail -n 1 "$T_TMP/load.json")
log "$out"
expect_eq "connections made" "$(jget "$out" ok)" 3000
expect_eq "failed connections during weight changes" "$(jget "$out" failed)" 0
expect_range "connections to v1" "$(jget "$out" by_id.v1 0)" 1 2999
expect_range "connections to v2" "$(jget "$out" by_id.v2 0)" 1 2999
