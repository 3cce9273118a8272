#!/usr/bin/env bash
# Issue 4: retries, timeouts and circuit breaking on the client's node.
#   1. a backend failing 30% with 503: with the default retry policy about a
#      third of requests fail (Istio no longer retries 503 by default); with
#      retries {attempts: 3, retryOn: 5xx} more than 99% succeed;
#   2. perTryTimeout: of two backends one stalls every request 3 s; with
#      perTryTimeout 200ms and retryOn 5xx every request succeeds (the retry
#      goes to the other host) and none takes 3 s;
#   3. timeout 1s in front of a backend that takes 3 s: 504 after about 1 s;
#   4. connectionPool http1MaxPendingRequests 1 / http2MaxRequests 2 /
#      maxConnections 1 with 20 concurrent slow requests: the overflow is
#      answered 503 with x-envoy-overloaded: true, the rest succeed.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=l7b PORT=9080 TPORT=8080
pod fl1 node2 $NS app=flaky
pod sl1 node2 $NS app=slow
pod sl2 node1 $NS app=slow
pod to1 node2 $NS app=tmo
pod cb1 node2 $NS app=cbreak
pod cli41 node1 $NS
hsrv fl1 fl1 $TPORT --fail-pct 30 --fail-status 503
hsrv sl1 sl1 $TPORT --delay-ms 3000
hsrv sl2 sl2 $TPORT
hsrv to1 to1 $TPORT --delay-ms 3000
hsrv cb1 cb1 $TPORT --delay-ms 400
apply <<YAML
$(l7_service_yaml flaky $NS flaky.$NS.svc.cluster.local 198.19.41.1 $PORT $TPORT flaky)
---
$(l7_service_yaml slow $NS slow.$NS.svc.cluster.local 198.19.41.2 $PORT $TPORT slow)
---
$(l7_service_yaml tmo $NS tmo.$NS.svc.cluster.local 198.19.41.4 $PORT $TPORT tmo)
---
$(l7_service_yaml cbreak $NS cbreak.$NS.svc.cluster.local 198.19.41.3 $PORT $TPORT cbreak)
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: flaky
  namespace: $NS
spec:
  hosts:
  - flaky
  http:
  - match:
    - uri:
        prefix: /retry
    route:
    - destination:
        host: flaky
    retries:
      attempts: 3
      retryOn: 5xx
  - route:
    - destination:
        host: flaky
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: slow
  namespace: $NS
spec:
  hosts:
  - slow
  http:
  - route:
    - destination:
        host: slow
    retries:
      attempts: 3
      perTryTimeout: 200ms
      retryOn: 5xx
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: slow
  namespace: $NS
spec:
  host: slow
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: tmo
  namespace: $NS
spec:
  hosts:
  - tmo
  http:
  - timeout: 1s
    route:
    - destination:
        host: tmo
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: cbreak
  namespace: $NS
spec:
  host: cbreak
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        http2MaxRequests: 2
YAML

# --- 1. retries. With 30% failing attempts, attempts 3 (4 tries) leaves
# 0.3^4 = 0.81% failed: 24.3 failures expected in 3000 (sigma 4.9). The bound
# (at most 47 failures) is as unlikely to fail by chance with attempts 3
# (P(>= 48) = 1.3e-5, binomial) as to pass with attempts 2 (81 expected,
# P(<= 47) = 2.4e-5); the earlier bound of 36 failed one run in a hundred.
# The app's count shows the retries really happened
# (1 + .3 + .09 + .027 = 1.417 tries/request, sigma 0.013).
U=http://198.19.41.1:$PORT
plain=$(hget cli41 -n 1000 -c 2 $U/plain)
hsrv_ctl fl1 $TPORT /__reset >/dev/null
retry=$(hget cli41 -n 3000 -c 4 $U/retry)
tries=$(jget "$(hsrv_ctl fl1 $TPORT /__stats)" requests 0)
p_ok=$(jget "$plain" ok 0) r_ok=$(jget "$retry" ok 0)
log "backend failing 30%: default policy $p_ok/1000 ok ($(jget "$plain" status)); attempts 3 + 5xx: $r_ok/3000 ok ($(jget "$retry" status)), $tries tries at the app"
expect_range "successes without a 5xx retry policy" "$p_ok" 630 770
expect_range "successes with attempts 3, retryOn 5xx (at most 47 of 3000 failed)" "$r_ok" 2953 3000
expect_range "tries per request x1000 at the app" $((tries * 1000 / 3000)) 1360 1480

# --- 2. perTryTimeout: sl1 stalls every request 3 s, sl2 answers at once
pt=$(hget cli41 -n 40 -c 4 --timeout-ms 8000 http://198.19.41.2:$PORT/pertry)
log "perTryTimeout 200ms, one of two backends stalling: $(jget "$pt" status) $(jget "$pt" backend), latency $(jget "$pt" latency_ms)"
expect_eq "requests answered 200 despite the stalling host" "$(jget "$pt" ok 0)" 40
expect_eq "answers from the stalling host" "$(jget "$pt" backend.sl1 0)" 0
max=$(jget "$pt" latency_ms.max 99999); max=${max%.*}
[ "$max" -lt 1500 ] || fail "a request waited ${max} ms: the stalled attempt was not cut at 200 ms"
log "ok: slowest request ${max} ms"
seen=$(jget "$(hsrv_ctl sl1 $TPORT /__stats)" requests 0)
[ "$seen" -ge 15 ] || fail "the stalling host saw only $seen attempts: the test did not exercise perTryTimeout"
log "ok: the stalling host got $seen attempts, all cut and retried elsewhere"

# --- 3. route timeout
to=$(hget cli41 -n 4 -c 4 --timeout-ms 8000 http://198.19.41.4:$PORT/x)
log "timeout 1s over a 3 s backend: $(jget "$to" status) latency $(jget "$to" latency_ms)"
expect_eq "504 on timeout" "$(jget "$to" status.504 0)" 4
p50=$(jget "$to" latency_ms.p50 0); p50=${p50%.*}
expect_range "time to the 504 (ms)" "$p50" 900 1800

# --- 4. circuit breaking
cb=$(hget cli41 -n 20 -c 20 --count-header x-envoy-overloaded http://198.19.41.3:$PORT/)
log "20 concurrent to a 400 ms backend, pending 1 / requests 2 / connections 1: $(jget "$cb" status), overloaded $(jget "$cb" headers)"
ov=$(jget "$cb" headers.x-envoy-overloaded.true 0)
s503=$(jget "$cb" status.503 0) ok=$(jget "$cb" ok 0)
[ "$ok" -ge 1 ] || fail "no request went through the circuit breaker"
[ "$s503" -ge 10 ] || fail "overflow not refused: 503 x $s503"
expect_eq "every 503 carries x-envoy-overloaded: true" "$ov" "$s503"
expect_eq "answered" $((ok + s503)) 20
log "ok: $ok served, $s503 refused as overflow (UO)"

# ... and node1's /metrics counts each of them against the limit it hit
# (pending or requests), for the cluster, with nothing left in flight.
m=$(ip netns exec bmn-node1 curl -sS --max-time 5 http://127.0.0.1:15020/metrics) ||
  fail "GET node1 :15020/metrics failed"
cbm=$(grep "^bpfmesh_l7_circuit_breaker_overflow_total{.*cluster=\"outbound|$PORT||cbreak.$NS.svc.cluster.local\"" <<<"$m" || true)
log "node1 /metrics: $(tr '\n' ' ' <<<"$cbm")"
over=$(awk '/limit="(pending|requests)"/ { s += $NF } END { print s + 0 }' <<<"$cbm")
expect_eq "overflows on /metrics (pending + requests)" "$over" "$s503"
inflight=$(grep -E "^bpfmesh_l7_(pending|active)_requests\{cluster=\"outbound\|$PORT\|\|cbreak" <<<"$m" | awk '{ s += $NF } END { print s + 0 }')
expect_eq "requests pending or in flight after the burst" "$inflight" 0
