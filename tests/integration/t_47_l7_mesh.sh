#!/usr/bin/env bash
# Issue 4 in the mesh: client-side HTTP routing to mesh workloads. A mesh
# client on node1 calls "reviews" by name; the VirtualService (seed 01's,
# pasted with the namespace changed) sends end-user jason to v2 on node2
# (reached over HBONE, mutual TLS) and everyone else to v1 on node1 (same
# node, delivered by meshd without TLS); the seed's DestinationRule (pool
# limits, maxRequestsPerConnection 2, outlier detection) applies as
# written. The server side keeps its identity:
# an AuthorizationPolicy on v2 allowing only the client's service account
# lets jason through and a second client with another account is refused.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=l7m PORT=9080 TPORT=8080 TD=cluster.local
mesh_pod rev1 node1 $NS reviews app=reviews,version=v1
mesh_pod rev2 node2 $NS reviews app=reviews,version=v2
mesh_pod web node1 $NS frontend app=web
mesh_pod other node1 $NS other app=other
for p in rev1/node1 rev2/node2 web/node1 other/node1; do wait_mesh_pod ${p#*/} $NS/${p%/*}; done
hsrv rev1 rev1 $TPORT
hsrv rev2 rev2 $TPORT
apply <<YAML
$(l7_service_yaml reviews $NS reviews.$NS.svc.cluster.local 198.19.47.1 $PORT $TPORT reviews)
---
$(sed -e "s/namespace: production/namespace: $NS/" "$SEEDS/01-header-routing.yaml")
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: v2-frontend-only
  namespace: $NS
spec:
  selector:
    matchLabels:
      version: v2
  rules:
  - from:
    - source:
        principals: ["$TD/ns/$NS/sa/frontend"]
YAML
URL=http://reviews.$NS.svc.cluster.local:$PORT/reviews/7

j=$(hget web -n 100 -H 'end-user: jason' $URL)
o=$(hget web -n 300 -H 'end-user: alice' $URL)
log "jason: $(jget "$j" backend) $(jget "$j" status); alice: $(jget "$o" backend) $(jget "$o" status)"
expect_eq "jason -> v2 on node2 (HBONE)" "$(jget "$j" backend.rev2 0)" 100
expect_eq "alice -> v1 only" "$(jget "$o" backend.rev2 0)" 0
ok=$(jget "$o" ok 0)
expect_eq "alice's requests answered 200" "$ok" 300
e=$(hget other -n 5 -H 'end-user: jason' $URL)
log "another service account as jason: $(jget "$e" status) $(jget "$e" errors)"
[ "$(jget "$e" backend.rev2 0)" = 0 ] || fail "v2 answered a client its policy refuses"
[ "$(jget "$e" ok 0)" = 0 ] || fail "the refused client got 2xx"

# The cross-node leg is mutual TLS: node2 reports the requests' streams as
# mutual_tls from the frontend principal, node1 the same-node ones as none.
m2=$("$MESHCTL" metrics --node node2)
x=$(awk -v p="spiffe://$TD/ns/$NS/sa/frontend" '/^istio_tcp_connections_opened_total\{/ && /reporter="destination"/ && /connection_security_policy="mutual_tls"/ && index($0, "source_principal=\"" p "\"") { s += $NF } END { print s + 0 }' <<<"$m2")
log "node2: HBONE streams from the frontend principal: $x"
[ "$x" -ge 1 ] || fail "no mutual_tls stream from the frontend on node2"
m1=$("$MESHCTL" metrics --node node1)
n=$(awk '/^istio_requests_total\{/ && /reporter="source"/ && /destination_workload="rev2"/ && /response_code="200"/ { s += $NF } END { print s + 0 }' <<<"$m1")
expect_eq "istio_requests_total to rev2 on node1" "$n" 100
