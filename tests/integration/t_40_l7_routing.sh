#!/usr/bin/env bash
# Issue 4: HTTP routing on the client's node. The seeds' VirtualServices
# (../shared/examples/seeds 01, 02, 04), pasted with only names changed,
# behave as Istio documents:
#   1. header match: "end-user: jason" -> reviews v2, everything else -> v1
#      (both v1 pods, on two nodes, serve), per request on kept-alive
#      connections;
#   2. canary: "canary: true" -> canary; the rest 90/10 stable/canary within
#      2 points over 10,000 requests;
#   3. uri prefix routing, 404 when no rule matches, rewrite.uri of the
#      matched prefix, directResponse, redirect, request/response header ops.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=l7a PORT=9080 TPORT=8080
pod rv1a node1 $NS app=reviews,version=v1
pod rv1b node2 $NS app=reviews,version=v1
pod rv2 node2 $NS app=reviews,version=v2
pod st1 node1 $NS app=myapp,track=stable
pod cn1 node2 $NS app=myapp,track=canary
pod rt1 node2 $NS app=ratings,version=v1
pod cli40 node1 $NS app=cli40
pod other40 node1 $NS app=other
for p in rv1a rv1b rv2 st1 cn1 rt1; do hsrv $p $p $TPORT; done
apply <<YAML
$(l7_service_yaml reviews $NS reviews.$NS.svc.cluster.local 198.19.40.1 $PORT $TPORT reviews)
---
$(l7_service_yaml myapp $NS myapp.$NS.svc.cluster.local 198.19.40.2 $PORT $TPORT myapp)
---
$(l7_service_yaml ratings $NS ratings.$NS.svc.cluster.local 198.19.40.3 $PORT $TPORT ratings)
---
$(sed -e "s/namespace: production/namespace: $NS/" "$SEEDS/01-header-routing.yaml")
---
$(sed -e "/^metadata:/a\  namespace: $NS" "$SEEDS/02-canary.yaml" | sed -n '1,/^---/p' | sed '$d')
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: myapp
  namespace: $NS
spec:
  host: myapp
  subsets:
  - name: stable
    labels:
      track: stable
  - name: canary
    labels:
      track: canary
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: ratings
  namespace: $NS
spec:
  hosts:
  - ratings
  http:
  - match:
    - uri:
        prefix: /api
    rewrite:
      uri: /v1
    headers:
      request:
        set:
          x-l7-route: api
      response:
        add:
          x-l7-served-by: bpfmesh
    route:
    - destination:
        host: ratings
  - match:
    - uri:
        prefix: /src
      sourceLabels:
        app: cli40
    directResponse:
      status: 200
      body:
        string: "hello cli40"
  - match:
    - uri:
        exact: /health
    directResponse:
      status: 200
      body:
        string: "all good"
  - match:
    - uri:
        prefix: /old
    redirect:
      uri: /new
      redirectCode: 302
  - match:
    - method:
        exact: POST
      uri:
        regex: "/items/[0-9]+"
    route:
    - destination:
        host: ratings
YAML
URL=http://198.19.40.1:$PORT

# --- 1. header routing (seed 01)
jason=$(hget cli40 -n 200 -H 'end-user: jason' $URL/reviews/1)
other=$(hget cli40 -n 200 -H 'end-user: alice' $URL/reviews/1)
log "end-user jason: $(jget "$jason" backend) status $(jget "$jason" status)"
log "end-user alice: $(jget "$other" backend) status $(jget "$other" status)"
expect_eq "jason's requests answered by rv2 (v2)" "$(jget "$jason" backend.rv2 0)" 200
expect_eq "alice's 2xx" "$(jget "$other" ok 0)" 200
expect_eq "alice's requests answered by v2" "$(jget "$other" backend.rv2 0)" 0
v1a=$(jget "$other" backend.rv1a 0) v1b=$(jget "$other" backend.rv1b 0)
expect_eq "alice's requests answered by v1 pods" $((v1a + v1b)) 200
[ "$v1a" -gt 20 ] && [ "$v1b" -gt 20 ] || fail "both v1 pods should serve (per-request balancing): rv1a $v1a rv1b $v1b"
log "ok: per-request balancing over v1: rv1a $v1a, rv1b $v1b"

# --- 2. canary (seed 02)
URL2=http://198.19.40.2:$PORT
can=$(hget cli40 -n 300 -H 'canary: true' $URL2/)
expect_eq "canary: true -> canary" "$(jget "$can" backend.cn1 0)" 300
split=$(hget cli40 -n 10000 -c 4 $URL2/)
st=$(jget "$split" backend.st1 0) cn=$(jget "$split" backend.cn1 0)
log "split over 10000: stable $st, canary $cn, status $(jget "$split" status), p50 $(jget "$split" latency_ms.p50) ms"
expect_eq "split requests answered" $((st + cn)) 10000
expect_range "canary share (per 10000)" "$cn" 800 1200

# --- 3. ratings: prefix + rewrite + header ops, exact directResponse, redirect, regex+method, 404
URL3=http://198.19.40.3:$PORT
r=$(hget cli40 -n 1 -v --count-header x-l7-served-by $URL3/api/stars?x=1)
body=$(jget "$r" last_body)
expect_eq "rewrite: /api/stars?x=1 reaches the app as" "$(jget "$body" path)" "/v1/stars?x=1"
expect_eq "request header set by the route" "$(jget "$body" headers.x-l7-route)" api
expect_eq "original path header" "$(jget "$body" headers.x-envoy-original-path)" "/api/stars?x=1"
expect_eq "response header added by the route" "$(jget "$r" headers.x-l7-served-by.bpfmesh 0)" 1
r=$(hget cli40 -n 3 $URL3/health)
expect_eq "directResponse status" "$(jget "$r" status.200 0)" 3
expect_eq "directResponse body" "$(jget "$r" last_body)" "all good"
expect_eq "directResponse never reaches the app" "$(jget "$(hsrv_ctl rt1 $TPORT /__stats)" by_path./health 0)" 0
r=$(hget cli40 -n 1 --count-header location $URL3/old/x)
expect_eq "redirect status" "$(jget "$r" status.302 0)" 1
[[ $(jget "$r" headers.location) == *'/new"'* ]] || fail "redirect location: $(jget "$r" headers.location)"
r=$(hget cli40 -n 2 -X POST -d '{}' $URL3/items/42)
expect_eq "POST /items/42 (regex + method)" "$(jget "$r" backend.rt1 0)" 2
r=$(hget cli40 -n 2 $URL3/items/42)
expect_eq "GET /items/42 matches no rule: 404" "$(jget "$r" status.404 0)" 2
r=$(hget cli40 -n 2 -X POST $URL3/items/4x2)
expect_eq "regex is a full match: /items/4x2 404" "$(jget "$r" status.404 0)" 2
r=$(hget cli40 -n 2 $URL3/src)
expect_eq "sourceLabels app=cli40 matches its pod" "$(jget "$r" last_body)" "hello cli40"
r=$(hget other40 -n 2 $URL3/src)
expect_eq "another pod does not match sourceLabels: 404" "$(jget "$r" status.404 0)" 2
log "ok: routing behaves as the VirtualServices say"

# --- 4. request metrics and access logs
apply <<YAML
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  accessLogging:
  - providers:
    - name: envoy
YAML
hget cli40 -n 7 -H 'x-mark: 1' $URL3/api/logged-$$ >/dev/null
m=$("$MESHCTL" metrics --node node1)
n=$(awk '/^istio_requests_total\{/ && /reporter="source"/ && /destination_service="reviews.l7a.svc.cluster.local"/ && /response_code="200"/ { s += $NF } END { print s + 0 }' <<<"$m")
log "istio_requests_total{reporter=source, reviews, 200} on node1: $n"
[ "$n" -ge 400 ] || fail "istio_requests_total for reviews: $n, want >= 400"
grep -q '^istio_request_duration_milliseconds_bucket{.*destination_service="myapp.l7a.svc.cluster.local".*le="+Inf"}' <<<"$m" ||
  fail "no istio_request_duration_milliseconds histogram for myapp"
nv=$(awk '/^istio_requests_total\{/ && /destination_workload="cn1"/ && /response_code="200"/ { s += $NF } END { print s + 0 }' <<<"$m")
log "requests to workload cn1 (canary): $nv"
[ "$nv" -ge 1000 ] || fail "istio_requests_total by destination_workload cn1: $nv"
promtool check metrics <<<"$m" 2>&1 | grep -v 'istio_request_duration_milliseconds' | grep -q . &&
  { promtool check metrics <<<"$m" >&2 || true; fail "promtool check metrics complains"; }
for _ in $(seq 30); do
  [ "$(grep -c "logged-$$" "$BPFMESH_RUN/sandbox/meshd-node1.log" 2>/dev/null)" -ge 7 ] && break
  sleep 0.1
done
line=$(grep -m1 "logged-$$" "$BPFMESH_RUN/sandbox/meshd-node1.log" || true)
log "access log line: $line"
[ "$(grep -c "logged-$$" "$BPFMESH_RUN/sandbox/meshd-node1.log")" -ge 7 ] || fail "access log lines missing"
expect_eq "access log response_code" "$(jget "$line" response_code)" 200
expect_eq "access log upstream_cluster" "$(jget "$line" upstream_cluster)" "outbound|$PORT||ratings.l7a.svc.cluster.local"
