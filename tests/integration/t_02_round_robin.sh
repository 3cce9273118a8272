#!/usr/bin/env bash
# (b) ROUND_ROBIN is exact: 300 sequential connections over 3 backends give
# exactly 100 each. 3 backends on node2, the client on node1 (cross-node).
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

HOST=rr.test.svc.cluster.local VIP=198.19.2.20
for b in a b c; do pod rr-$b node2 test app=rr; done
pod client node1 default
for b in a b c; do server rr-$b rr-$b 8000; done

apply <<YAML
$(service_yaml rr test $HOST $VIP 8080 8000 rr)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: rr
  namespace: test
spec:
  host: $HOST
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
YAML

out=$(probe client --connect $VIP:8080 -n 300)
log "$out"
expect_eq "failed connections" "$(jget "$out" failed)" 0
expect_eq "peer_mismatch" "$(jget "$out" peer_mismatch)" 0
for b in a b c; do
  expect_eq "connections to rr-$b" "$(jget "$out" by_id.rr-$b 0)" 100
done
