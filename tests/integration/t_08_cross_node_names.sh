#!/usr/bin/env bash
# Service names resolve in pods (/etc/netns/<pod>/hosts written by meshd), a
# pod added after the policy joins its service, a deleted pod leaves it, and
# plain pod-IP traffic (no VIP) is left alone. 3 nodes.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 3

HOST=names.other.svc.cluster.local VIP=198.19.8.80
pod nm-a node2 other app=names
pod client node1 default
server nm-a nm-a 9600

apply <<YAML
$(service_yaml names other $HOST $VIP 9600 9600 names)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: names
  namespace: other
spec:
  host: $HOST
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
YAML

resolved=$("$SANDBOX" exec client -- getent hosts $HOST | awk '{print $1}')
expect_eq "$HOST resolves in the client pod" "$resolved" $VIP

out=$(probe client --connect $HOST:9600 -n 20)
expect_eq "all to nm-a" "$(jget "$out" by_id.nm-a 0)" 20

pod nm-b node3 other app=names
server nm-b nm-b 9600
out=$(probe client --connect $HOST:9600 -n 20)
log "after nm-b joined: $out"
expect_eq "nm-a after nm-b joined" "$(jget "$out" by_id.nm-a 0)" 10
expect_eq "nm-b after nm-b joined" "$(jget "$out" by_id.nm-b 0)" 10

pod_del nm-a
out=$(probe client --connect $HOST:9600 -n 20)
log "after nm-a deleted: $out"
expect_eq "failed after nm-a deleted" "$(jget "$out" failed)" 0
expect_eq "nm-b after nm-a deleted" "$(jget "$out" by_id.nm-b 0)" 20

# Direct pod-IP traffic is not rewritten; its peer is the pod.
out=$(probe client --connect "$(pod_ip nm-b)":9600 -n 10)
expect_eq "direct to pod IP" "$(jget "$out" by_id.nm-b 0)" 10
expect_eq "direct peer_mismatch" "$(jget "$out" peer_mismatch)" 0
