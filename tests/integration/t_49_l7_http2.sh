#!/usr/bin/env bash
# Issue 4: HTTP/2 (h2c) and gRPC on the L7 path, with real traffic.
#   1. over ONE h2c connection: "end-user: jason" -> v2 every time, the rest
#      90/10 v1/v2 within 3 points over 2,000 requests (the split is per
#      request, not per connection); the port is HTTP2, so the upstream is
#      h2c too, and the response trailers reach the client;
#   2. a gRPC backend failing 30% with grpc-status 14 (trailers-only): with
#      retries {attempts: 3, retryOn: unavailable} more than 97% succeed,
#      with retryOn 5xx (no gRPC token) about 70%; grpc-status trailers
#      reach the client;
#   3. a WebSocket-style upgrade: 101, then bytes relayed both ways;
#   4. /metrics: istio_requests_total with request_protocol="grpc" and
#      grpc_response_status (needs metrics_req.c to render bm_req_key.protocol
#      and .grpc_status).
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

H2=$BUILD/tools/bm-h2
[ -x "$H2" ] || fail "$H2 is missing (run make)"
NS=l7h2 PORT=9080 TPORT=8080

# h2srv POD ID PORT [ARGS...]: bm-h2 serve (h2c + gRPC + upgrade backend) in POD.
h2srv() {
  local pod=$1 id=$2 port=$3; shift 3
  "$SANDBOX" exec "$pod" -- "$H2" serve --id "$id" --port "$port" "$@" 2>>"$T_TMP/h2srv-$pod.log" &
  T_BG_PIDS+=($!)
  wait_listen "$pod" "$port"
}
h2() { local pod=$1; shift; "$SANDBOX" exec "$pod" -- "$H2" "$@" || true; }
# proto_service NAME VIP PROTOCOL APPLABEL
proto_service() {
  service_yaml "$1" $NS "$1.$NS.svc.cluster.local" "$2" $PORT $TPORT "$4" |
    sed -e "s/name: tcp-$1/name: $(echo "$3" | tr A-Z a-z)-$1/" -e "s/protocol: TCP/protocol: $3/"
}

pod rv1 node2 $NS app=reviews,version=v1
pod rv2 node1 $NS app=reviews,version=v2
pod gr1 node2 $NS app=greeter
pod ws1 node2 $NS app=chat
pod cli49 node1 $NS app=cli49
h2srv rv1 v1 $TPORT
h2srv rv2 v2 $TPORT
h2srv gr1 gr1 $TPORT --fail-pct 30 --fail-grpc 14
h2srv ws1 ws1 $TPORT
apply <<YAML
$(proto_service reviews 198.19.49.1 HTTP2 reviews)
---
$(proto_service greeter 198.19.49.2 GRPC greeter)
---
$(proto_service chat 198.19.49.3 HTTP chat)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
  namespace: $NS
spec:
  host: reviews
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
  name: reviews
  namespace: $NS
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 90
    - destination:
        host: reviews
        subset: v2
      weight: 10
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: greeter
  namespace: $NS
spec:
  hosts:
  - greeter
  http:
  - match:
    - uri:
        prefix: /noretry.
    route:
    - destination:
        host: greeter
    retries:
      attempts: 3
      retryOn: 5xx
  - route:
    - destination:
        host: greeter
    retries:
      attempts: 3
      retryOn: unavailable
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: chat
  namespace: $NS
spec:
  hosts:
  - chat
  http:
  - match:
    - uri:
        prefix: /
    route:
    - destination:
        host: chat
YAML

# --- 1. header routing and the 90/10 split, each over one h2c connection
U=http://198.19.49.1:$PORT
jason=$(h2 cli49 get $U/r -n 200 -c 20 -H 'end-user: jason')
log "h2c, end-user: jason, 200 requests on one connection: $jason"
expect_eq "jason's requests answered" "$(jget "$jason" ok 0)" 200
expect_eq "jason's requests at v2" "$(jget "$jason" backend.v2 0)" 200
split=$(h2 cli49 get $U/r -n 2000 -c 50)
log "h2c, no header, 2000 requests on one connection: $split"
v1=$(jget "$split" backend.v1 0) v2=$(jget "$split" backend.v2 0)
expect_eq "answered" "$(jget "$split" ok 0)" 2000
expect_eq "connections used by the client" "$(jget "$split" connections 0)" 1
expect_range "v1 share x100 (90% +-3)" "$(pct100 "$v1" 2000)" 8700 9300
expect_eq "v1 + v2" $((v1 + v2)) 2000
expect_eq "responses whose trailer arrived" "$(jget "$split" trailers.x-trailer-id 0)" 2000
h2c1=$(jget "$(hsrv_ctl rv1 $TPORT /__stats)" h2_connections 0)
[ "$h2c1" -ge 1 ] || fail "v1 saw no HTTP/2 connection: the HTTP2 port was not proxied as h2c"
log "ok: v1 $v1 / v2 $v2 over one connection; v1 got $h2c1 h2c connection(s) from meshd"

# curl as a third-party h2c client (prior knowledge), through the same route
cv=$("$SANDBOX" exec cli49 -- curl -s -m 5 --http2-prior-knowledge -D - -o /dev/null \
  -H 'end-user: jason' "$U/curl" | tr -d '\r' || true)
log "curl --http2-prior-knowledge: $(echo "$cv" | head -1), $(echo "$cv" | grep -i '^x-backend-id')"
echo "$cv" | head -1 | grep -q '^HTTP/2 200' || fail "curl over h2c did not get HTTP/2 200"
echo "$cv" | grep -qi '^x-backend-id: v2' || fail "curl's jason request did not reach v2"

# --- 2. gRPC retries on grpc-status 14
G=http://198.19.49.2:$PORT
hsrv_ctl gr1 $TPORT /__reset >/dev/null
rt=$(h2 cli49 get $G/greeter.Greeter/SayHello --grpc -n 2000 -c 20)
tries=$(jget "$(hsrv_ctl gr1 $TPORT /__stats)" requests 0)
log "gRPC, 30% grpc-status 14, attempts 3 retryOn unavailable: $rt; $tries tries at the app"
r_ok=$(jget "$rt" ok 0)
expect_range "successes with retryOn unavailable (>97% of 2000)" "$r_ok" 1941 2000
expect_range "tries per request x1000 at the app (1 + .3 + .09 + .027 = 1.417)" \
  $((tries * 1000 / 2000)) 1340 1500
expect_eq "grpc-status trailers at the client" "$(jget "$rt" trailers.grpc-status 0)" "$r_ok"
nr=$(h2 cli49 get $G/noretry.Greeter/SayHello --grpc -n 1000 -c 20)
n_ok=$(jget "$nr" ok 0)
log "gRPC, retryOn 5xx only: $nr"
expect_range "successes without a gRPC retry token (70% of 1000)" "$n_ok" 620 780
expect_range "grpc-status 14 answers reaching the client" "$(jget "$nr" grpc_status.14 0)" 220 380

# --- 3. WebSocket-style upgrade over the L7 path
ws=$(h2 cli49 ws http://198.19.49.3:$PORT/chat --messages 5)
log "upgrade: $ws"
expect_eq "101 relayed" "$(jget "$ws" status 0)" 101
expect_eq "the server's first bytes arrived" "$(jget "$ws" greeting 0)" 1
expect_eq "messages echoed through the relay" "$(jget "$ws" echoed 0)" 5

# --- 4. request metrics: gRPC requests are request_protocol="grpc"
m1=$T_TMP/metrics-node1.txt
"$MESHCTL" metrics --node node1 >"$m1" || fail "meshctl metrics --node node1 failed"
grep '^istio_requests_total{' "$m1" | grep 'destination_service="greeter' >"$T_TMP/greeter.txt" || true
log "greeter series: $(wc -l <"$T_TMP/greeter.txt")"
grep -q 'request_protocol="grpc"' "$T_TMP/greeter.txt" ||
  fail "no istio_requests_total series of greeter with request_protocol=\"grpc\" (metrics_req.c must render bm_req_key.protocol)"
grep -q 'grpc_response_status="0"' "$T_TMP/greeter.txt" ||
  fail "no greeter series with grpc_response_status=\"0\""
grep -q 'grpc_response_status="14"' "$T_TMP/greeter.txt" ||
  fail "no greeter series with grpc_response_status=\"14\" (the noretry route answers 14)"
grep '^istio_requests_total{' "$m1" | grep 'destination_service="reviews' |
  grep -q 'request_protocol="http".*grpc_response_status=""' ||
  fail "reviews (HTTP/2, not gRPC) series should be request_protocol=\"http\", grpc_response_status=\"\""
log "ok: request_protocol and grpc_response_status rendered"
