#!/usr/bin/env bash
# (d) An ejected backend gets no connections; when ejections drop the healthy
# share below outlierDetection.minHealthPercent, panic mode uses all backends.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

HOST=ej.test.svc.cluster.local VIP=198.19.4.40
pod ej-a node1 test app=ej
pod ej-b node2 test app=ej
pod ej-c node2 test app=ej
pod client node2 default
for b in a b c; do server ej-$b ej-$b 9200; done

apply <<YAML
$(service_yaml ej test $HOST $VIP 80 9200 ej)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: ej
  namespace: test
spec:
  host: $HOST
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    outlierDetection:
      minHealthPercent: 50
YAML

# One of three ejected: 66 % healthy >= 50 %, no panic.
"$MESHCTL" backend eject "$(pod_ip ej-b):9200" >&2 || fail "backend eject ej-b"
out=$(probe client --connect $VIP:80 -n 200)
log "ej-b ejected: $out"
expect_eq "failed" "$(jget "$out" failed)" 0
expect_eq "connections to ejected ej-b" "$(jget "$out" by_id.ej-b 0)" 0
expect_eq "connections to ej-a" "$(jget "$out" by_id.ej-a 0)" 100
expect_eq "connections to ej-c" "$(jget "$out" by_id.ej-c 0)" 100

# Two of three ejected: 33 % healthy < 50 %: panic, all three used.
"$MESHCTL" backend eject "$(pod_ip ej-c):9200" >&2 || fail "backend eject ej-c"
out=$(probe client --connect $VIP:80 -n 300)
log "ej-b, ej-c ejected (panic): $out"
expect_eq "failed (panic)" "$(jget "$out" failed)" 0
for b in a b c; do
  expect_range "connections to ej-$b in panic" "$(jget "$out" by_id.ej-$b 0)" 50 150
done

# Unejected: back to all three, ej-b included.
"$MESHCTL" backend uneject "$(pod_ip ej-b):9200" >&2 || fail "backend uneject ej-b"
"$MESHCTL" backend uneject "$(pod_ip ej-c):9200" >&2 || fail "backend uneject ej-c"
out=$(probe client --connect $VIP:80 -n 300)
log "none ejected: $out"
for b in a b c; do
  expect_eq "connections to ej-$b after uneject" "$(jget "$out" by_id.ej-$b 0)" 100
done
