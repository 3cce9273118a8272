#!/usr/bin/env bash
# Issue 4: fault injection and mirroring (seed 04, pasted with names changed).
#   1. abort 10% with 500 over 3000 requests: 10% +- 2 points are 500 and
#      never reach the app (the app counts exactly the others);
#   2. delay 5 s on 50%: about half of 60 concurrent requests take >= 5 s;
#   3. mirror 10% to v2: v2 sees about 10% of 2000 requests, the client only
#      ever hears v1; a mirror that fails (500) or stalls changes nothing for
#      the client.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=l7c PORT=9080 TPORT=8080
pod ab1 node2 $NS app=abort
pod dl1 node2 $NS app=delay
pod mv1 node2 $NS app=mirrored,version=v1
pod mv2 node1 $NS app=mirrored,version=v2
pod cli42 node1 $NS
for p in ab1 dl1 mv1 mv2; do hsrv $p $p $TPORT; done
SEED=$SEEDS/04-fault-and-mirror.yaml
# The seed's first document split into an abort-only and a delay-only service
# so each share is measured on its own; percentages and statuses as written.
apply <<YAML
$(l7_service_yaml abort $NS abort.$NS.svc.cluster.local 198.19.42.1 $PORT $TPORT abort)
---
$(l7_service_yaml delay $NS delay.$NS.svc.cluster.local 198.19.42.2 $PORT $TPORT delay)
---
$(l7_service_yaml mirrored $NS mirrored.$NS.svc.cluster.local 198.19.42.3 $PORT $TPORT mirrored)
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: abort
  namespace: $NS
spec:
  hosts:
  - abort
  http:
  - fault:
      abort:
        percentage:
          value: 10
        httpStatus: 500
    route:
    - destination:
        host: abort
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: delay
  namespace: $NS
spec:
  hosts:
  - delay
  http:
  - fault:
      delay:
        percentage:
          value: 50
        fixedDelay: 5s
    route:
    - destination:
        host: delay
---
$(sed -n '/name: mirror-traffic/,/^---/p' "$SEED" | sed '$d' | sed -e '1i apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:' -e "s/^  name: mirror-traffic/  name: mirror-traffic\n  namespace: $NS/" -e 's/myapp/mirrored/g' | sed '/^metadata:$/{n;/^metadata:$/d}')
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: mirrored
  namespace: $NS
spec:
  host: mirrored
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
YAML

# --- 1. abort
r=$(hget cli42 -n 3000 -c 4 http://198.19.42.1:$PORT/)
s500=$(jget "$r" status.500 0) s200=$(jget "$r" status.200 0)
app=$(jget "$(hsrv_ctl ab1 $TPORT /__stats)" requests 0)
log "abort 10%: $(jget "$r" status); the app counted $app requests"
# 10% of 3000: 300 expected, sigma 16.4; the bounds are 4.9 sigma away.
expect_range "aborted with 500 (per 3000)" "$s500" 220 380
expect_eq "answered" $((s500 + s200)) 3000
expect_eq "requests the app saw (aborts never reach it)" "$app" "$s200"

# --- 2. delay
r=$(hget cli42 -n 60 -c 60 --timeout-ms 15000 --slow-ms 4900 http://198.19.42.2:$PORT/)
slow=$(jget "$r" slow 0)
log "delay 5s on 50%: $(jget "$r" status), $slow of 60 took >= 4.9 s, latency $(jget "$r" latency_ms)"
expect_eq "delayed requests still succeed" "$(jget "$r" ok 0)" 60
# 50% of 60: 30 expected, sigma 3.9; the bounds are 4.7 sigma away
# (no delay gives 0, delaying all gives 60).
expect_range "delayed requests" "$slow" 12 48
p50=$(jget "$r" latency_ms.max 0); p50=${p50%.*}
expect_range "longest request (ms)" "$p50" 4900 7000

# --- 3. mirror
r=$(hget cli42 -n 2000 -c 4 http://198.19.42.3:$PORT/m)
sleep 0.5
m=$(jget "$(hsrv_ctl mv2 $TPORT /__stats)" requests 0)
log "mirror 10% to v2: client heard $(jget "$r" backend); v2 saw $m copies"
expect_eq "client answers from v1" "$(jget "$r" backend.mv1 0)" 2000
expect_range "mirrored copies at v2 (per 2000)" "$m" 140 260
hsrv_ctl mv2 $TPORT "/__set?status=500&delay_ms=2000" >/dev/null
r=$(hget cli42 -n 300 -c 4 http://198.19.42.3:$PORT/m)
p99=$(jget "$r" latency_ms.p99 0); p99=${p99%.*}
log "mirror answering 500 after 2 s: client $(jget "$r" status), p99 ${p99} ms"
expect_eq "client unaffected by the failing mirror" "$(jget "$r" status.200 0)" 300
[ "$p99" -lt 1000 ] || fail "client waited for the mirror: p99 ${p99} ms"
