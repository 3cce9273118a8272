#!/usr/bin/env bash
# (a)+(h) A VirtualService 90/10 split between two subsets over 10,000 new
# connections by name lands within +-2 points; every app sees the VIP as its
# peer (getpeername4). Backends on both nodes, the client on node1.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

HOST=split.test.svc.cluster.local VIP=198.19.1.10
pod split-v1 node1 test app=split,version=v1
pod split-v2 node2 test app=split,version=v2
pod client node1 default
server split-v1 v1 9000
server split-v2 v2 9000

apply <<YAML
$(service_yaml split test $HOST $VIP 7000 9000 split)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: split
  namespace: test
spec:
  host: $HOST
  trafficPolicy:
    loadBalancer:
      simple: RANDOM
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
  name: split
  namespace: test
spec:
  hosts:
  - $HOST
  tcp:
  - route:
    - destination:
        host: $HOST
        subset: v1
      weight: 90
    - destination:
        host: $HOST
        subset: v2
      weight: 10
YAML

out=$(probe client --connect $HOST:7000 -n 10000 --concurrency 32)
log "$out"
expect_eq "failed connections" "$(jget "$out" failed)" 0
expect_eq "ok connections" "$(jget "$out" ok)" 10000
expect_eq "peer_mismatch (getpeername must show the VIP)" "$(jget "$out" peer_mismatch)" 0
v1=$(jget "$out" by_id.v1 0); v2=$(jget "$out" by_id.v2 0)
expect_eq "v1 + v2" $((v1 + v2)) 10000
expect_range "v1 connections (90 % +- 2 points)" "$v1" 8800 9200
