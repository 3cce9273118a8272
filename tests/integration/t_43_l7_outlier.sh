#!/usr/bin/env bash
# Issue 4: outlier detection ejects in the kernel too.
#   A backend that starts answering 500 is ejected after consecutive5xxErrors
#   (3) by the client node's meshd; the ejection is written to the kernel's
#   backend_eject_v1, so plain L4 clients of another service that shares the
#   backend skip it as well; once healthy again it comes back after
#   baseEjectionTime and gets traffic again.
#   For a plain TCP service (kernel path, no proxy), connect failures seen by
#   sockops count the same way: a backend refusing connections is ejected
#   after consecutive5xxErrors failed connects.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=l7d PORT=9080 L4PORT=9081 TPORT=8080
pod od1 node2 $NS app=odsvc
pod od2 node2 $NS app=odsvc
pod cli43 node1 $NS
pod tc1 node2 $NS app=tcpod
pod tc2 node2 $NS app=tcpod
hsrv od1 od1 $TPORT
hsrv od2 od2 $TPORT
hsrv tc1 tc1 $TPORT   # tc2 listens on nothing: its connects are refused
apply <<YAML
$(l7_service_yaml odsvc $NS odsvc.$NS.svc.cluster.local 198.19.43.1 $PORT $TPORT odsvc)
---
$(service_yaml odl4 $NS odl4.$NS.svc.cluster.local 198.19.43.2 $L4PORT $TPORT odsvc)
---
$(service_yaml tcpod $NS tcpod.$NS.svc.cluster.local 198.19.43.3 $L4PORT $TPORT tcpod)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: tcpod
  namespace: $NS
spec:
  host: tcpod
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 60s
      maxEjectionPercent: 50
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: odsvc
  namespace: $NS
spec:
  host: odsvc
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 4s
      maxEjectionPercent: 50
YAML
OD1=$(pod_ip od1)
ejected() { # 1/0: bpfmesh_backend_ejected of od1 on node1
  "$MESHCTL" metrics --node node1 2>/dev/null |
    awk -v b="backend=\"$OD1:$TPORT\"" 'index($0, "bpfmesh_backend_ejected{") == 1 && index($0, b) { print $NF; f=1 } END { if (!f) print "none" }'
}

r=$(hget cli43 -n 100 http://198.19.43.1:$PORT/)
log "healthy: $(jget "$r" backend)"
[ "$(jget "$r" backend.od1 0)" -ge 40 ] || fail "od1 should get about half: $(jget "$r" backend)"
expect_eq "od1 ejected before failures" "$(ejected)" 0

hsrv_ctl od1 $TPORT "/__set?status=500" >/dev/null
t0=$(date +%s%N)
r=$(hget cli43 -n 200 http://198.19.43.1:$PORT/)
log "od1 answering 500: $(jget "$r" status) $(jget "$r" backend)"
f=$(jget "$r" status.500 0)
expect_range "500s seen before od1 was ejected" "$f" 3 4
expect_eq "od1 ejected in the kernel map" "$(ejected)" 1
l4=$(hget cli43 -n 40 --close http://198.19.43.2:$L4PORT/)
log "L4 service sharing the backend, 40 new connections: $(jget "$l4" backend)"
expect_eq "L4 connections to the ejected backend" "$(jget "$l4" backend.od1 0)" 0
expect_eq "L4 connections served" "$(jget "$l4" ok 0)" 40

hsrv_ctl od1 $TPORT "/__set?status=200" >/dev/null
back=""
for _ in $(seq 100); do
  [ "$(ejected)" = 0 ] && { back=$(( ($(date +%s%N) - t0) / 1000000 )); break; }
  sleep 0.1
done
[ -n "$back" ] || fail "od1 not returned 10 s after the ejection"
log "od1 returned to load balancing ${back} ms after the ejection (baseEjectionTime 4s)"
expect_range "ejection time (ms)" "$back" 3500 6500
r=$(hget cli43 -n 100 http://198.19.43.1:$PORT/)
log "after return: $(jget "$r" backend) $(jget "$r" status)"
[ "$(jget "$r" backend.od1 0)" -ge 40 ] || fail "od1 back but not getting traffic: $(jget "$r" backend)"
expect_eq "all 200 after recovery" "$(jget "$r" ok 0)" 100

# --- kernel path: connect failures from sockops
TC2=$(pod_ip tc2)
ejected_tc2() {
  "$MESHCTL" metrics --node node1 2>/dev/null |
    awk -v b="backend=\"$TC2:$TPORT\"" 'index($0, "bpfmesh_backend_ejected{") == 1 && index($0, b) { print $NF; f=1 } END { if (!f) print "none" }'
}
expect_eq "tc2 ejected before any traffic" "$(ejected_tc2)" 0
r=$(hget cli43 -n 12 --close http://198.19.43.3:$L4PORT/)
log "12 connections over the kernel path, tc2 refusing: $(jget "$r" backend) errors $(jget "$r" errors)"
for _ in $(seq 30); do [ "$(ejected_tc2)" = 1 ] && break; sleep 0.1; done
expect_eq "tc2 ejected after refused connects" "$(ejected_tc2)" 1
r=$(hget cli43 -n 40 --close http://198.19.43.3:$L4PORT/)
log "40 more: $(jget "$r" backend) errors $(jget "$r" errors)"
expect_eq "connections served once tc2 is out" "$(jget "$r" backend.tc1 0)" 40
