#!/usr/bin/env bash
# (c) LEAST_REQUEST: with no load new connections spread over all 3 backends;
# with one backend holding 50 idle connections, new connections avoid it.
# To load exactly one backend through the VIP, the other two are ejected while
# the 50 connections open (panic mode off), then unejected.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

HOST=lr.test.svc.cluster.local VIP=198.19.3.30
for b in a b c; do pod lr-$b node2 test app=lr; done
pod client node1 default
for b in a b c; do server lr-$b lr-$b 9100; done

apply <<YAML
$(service_yaml lr test $HOST $VIP 9100 9100 lr)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: lr
  namespace: test
spec:
  host: $HOST
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    # Panic mode off: with two of three ejected (33 % healthy) the default
    # threshold (50 % without an outlierDetection block) would use all three.
    outlierDetection:
      minHealthPercent: 0
YAML

# No load: 60 sequential connections spread over all three.
out=$(probe client --connect $VIP:9100 -n 60)
log "no load: $out"
expect_eq "failed (no load)" "$(jget "$out" failed)" 0
for b in a b c; do
  expect_range "lr-$b connections without load" "$(jget "$out" by_id.lr-$b 0)" 5 50
done

# Load lr-a with 50 idle connections.
for b in b c; do "$MESHCTL" backend eject "$(pod_ip lr-$b):9100" >&2 || fail "backend eject lr-$b"; done
hold_start client "$T_TMP/hold.json" --connect $VIP:9100 -n 50 --concurrency 10
held=$(grep '"phase":"open"' "$T_TMP/hold.json")
log "held: $held"
expect_eq "held connections on lr-a" "$(jget "$held" by_id.lr-a 0)" 50
for b in b c; do "$MESHCTL" backend uneject "$(pod_ip lr-$b):9100" >&2 || fail "backend uneject lr-$b"; done

# 30 new connections (each closed before the next): lr-a gets none or nearly none.
out=$(probe client --connect $VIP:9100 -n 30)
log "with lr-a loaded: $out"
expect_eq "failed (loaded)" "$(jget "$out" failed)" 0
expect_range "new connections to loaded lr-a" "$(jget "$out" by_id.lr-a 0)" 0 1
final=$(hold_finish "$T_TMP/hold.json")
expect_eq "held connections still alive" "$(jget "$final" alive)" 50
