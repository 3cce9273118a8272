#!/usr/bin/env bash
# Issue 5: tracing on the L7 path. meshd on both nodes reports Zipkin v2
# spans to bm-zipkin (a tiny collector in the hub netns, where every node's
# meshd reaches it) for a client on node1 calling a backend on node2 over
# HBONE: the client's node routes at L7 (a VirtualService with a timeout),
# the server's node authorizes at L7 (an AuthorizationPolicy with methods).
#   1. Telemetry mesh-wide randomSamplingPercentage 100: N requests make N
#      CLIENT spans and N SERVER spans; each pair shares the trace id, the
#      SERVER span's parentId is the CLIENT span's id, both carry the same
#      request_id;
#   2. the app sees traceparent and x-b3-* with the SERVER span as the
#      parent's child (x-b3-spanid = SERVER id, x-b3-parentspanid = CLIENT
#      id), and the x-request-id both spans report;
#   3. an incoming traceparent is joined (same trace id, the caller's span
#      as the CLIENT span's parent);
#   4. sampling 0: no span, x-b3-sampled: 0 reaches the app;
#   5. sampling 0 but x-b3-sampled: 1 from the client: spans exported.
. "$(dirname "$0")/lib.sh"
ZIPKIN=$BUILD/tools/bm-zipkin
[ -x "$ZIPKIN" ] || fail "$ZIPKIN is missing (run make)"
HUB=bm-hub HUB_ADDR=198.19.255.254 ZPORT=9411
export BPFMESH_MESHD_ARGS="--zipkin-url http://$HUB_ADDR:$ZPORT/api/v2/spans"
sandbox_wait_free
t_begin --nodes 2

NS=l7t PORT=9080 TPORT=8080 VIP=198.19.45.1 N=20
SPANS=$T_TMP/spans.jsonl
: >"$SPANS"
# The hub is a plain bridge; an address on the nodes' /24 makes it reachable
# from every meshd's netns (removed with the hub at down).
ip -n $HUB addr add $HUB_ADDR/24 dev br0 || fail "cannot address the hub bridge"
ip netns exec $HUB "$ZIPKIN" --listen $HUB_ADDR:$ZPORT --out "$SPANS" 2>>"$T_TMP/zipkin.log" &
T_BG_PIDS+=($!)

mesh_pod be1 node2 $NS backend app=backend
mesh_pod cli node1 $NS frontend app=frontend
for p in be1/node2 cli/node1; do wait_mesh_pod ${p#*/} $NS/${p%/*}; done
hsrv be1 be1 $TPORT
telemetry() { # PCT
  apply <<YAML
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers:
    - name: zipkin
    randomSamplingPercentage: $1
YAML
}
apply <<YAML
$(l7_service_yaml backend $NS backend.$NS.svc.cluster.local $VIP $PORT $TPORT backend)
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: backend
  namespace: $NS
spec:
  hosts:
  - backend.$NS.svc.cluster.local
  http:
  - timeout: 5s
    route:
    - destination:
        host: backend.$NS.svc.cluster.local
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: backend-get
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: backend
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
YAML
telemetry 100

# spans TAG: the collected spans whose http.url has /TAG/, as a JSON list.
spans() {
  python3 - "$SPANS" "/$1/" <<'EOF'
import json, sys
out = []
for line in open(sys.argv[1]):
    try:
        s = json.loads(line)
    except Exception:
        continue
    if sys.argv[2] in s.get("tags", {}).get("http.url", ""):
        out.append(s)
print(json.dumps(out))
EOF
}
# wait_spans TAG WANT: until WANT spans of TAG arrived (exporter: every 1 s).
wait_spans() {
  local n
  for _ in $(seq 50); do
    n=$(spans "$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$n" -ge "$2" ] && break
    sleep 0.2
  done
  sleep 1.2   # one more flush: nothing beyond WANT may arrive either
  spans "$1"
}

# --- 1. sampling 100: N pairs
r=$(hget cli -n $N http://$VIP:$PORT/t1/x)
expect_eq "requests through both L7 sides" "$(jget "$r" status.200 0)" $N
all=$(wait_spans t1 $((2 * N)))
check=$(python3 - "$all" "$N" <<'EOF'
import json, sys
spans, n = json.loads(sys.argv[1]), int(sys.argv[2])
cl = [s for s in spans if s.get("kind") == "CLIENT"]
sv = [s for s in spans if s.get("kind") == "SERVER"]
bad = []
if len(cl) != n or len(sv) != n:
    bad.append("client %d server %d spans" % (len(cl), len(sv)))
by_id = {s["id"]: s for s in cl}
for s in sv:
    c = by_id.get(s.get("parentId"))
    if not c:
        bad.append("server span %s: parent %s is no client span" % (s["id"], s.get("parentId"))); continue
    if c["traceId"] != s["traceId"]:
        bad.append("trace ids differ %s %s" % (c["traceId"], s["traceId"]))
    if c["tags"].get("request_id") != s["tags"].get("request_id"):
        bad.append("request ids differ")
    if c["tags"].get("http.status_code") != "200" or s["tags"].get("http.status_code") != "200":
        bad.append("status")
    if c["localEndpoint"].get("serviceName") != "frontend" or s["localEndpoint"].get("serviceName") != "backend":
        bad.append("service names %s %s" % (c["localEndpoint"], s["localEndpoint"]))
    if not (c.get("timestamp", 0) > 0 and c.get("duration", 0) >= 1 and s.get("duration", 0) >= 1):
        bad.append("times")
    if "parentId" in c:
        bad.append("client span of a new trace has a parent")
if len({s["traceId"] for s in cl}) != n:
    bad.append("trace ids not one per request")
print("; ".join(bad[:5]) or "ok")
EOF
)
log "sampling 100: $(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])))' "$all") spans, check: $check"
expect_eq "N CLIENT + N SERVER spans, paired by trace and parent id" "$check" ok

# --- 2. what the app sees
r=$(hget cli -n 1 http://$VIP:$PORT/t2/x)
body=$(jget "$r" last_body)
all=$(wait_spans t2 2)
check=$(python3 - "$all" "$body" <<'EOF'
import json, sys
spans, h = json.loads(sys.argv[1]), json.loads(sys.argv[2])["headers"]
cl = [s for s in spans if s["kind"] == "CLIENT"]
sv = [s for s in spans if s["kind"] == "SERVER"]
bad = []
if len(cl) != 1 or len(sv) != 1:
    print("spans: %d client, %d server" % (len(cl), len(sv))); sys.exit()
c, s = cl[0], sv[0]
tid = c["traceId"].rjust(32, "0")
want = {
    "x-b3-traceid": c["traceId"], "x-b3-spanid": s["id"], "x-b3-parentspanid": c["id"],
    "x-b3-sampled": "1", "traceparent": "00-%s-%s-01" % (tid, s["id"]),
    "x-request-id": c["tags"]["request_id"],
}
for k, v in want.items():
    if h.get(k) != v:
        bad.append("%s: app saw %r, want %r" % (k, h.get(k), v))
if s["tags"]["request_id"] != h.get("x-request-id"):
    bad.append("server span request_id")
print("; ".join(bad) or "ok")
EOF
)
log "app headers: $(python3 -c 'import json,sys; h=json.loads(sys.argv[1])["headers"]; print({k: v for k, v in h.items() if k.startswith(("x-b3", "trace", "x-request"))})' "$body")"
expect_eq "the app sees the SERVER span as parent, same x-request-id" "$check" ok

# --- 3. an incoming traceparent is joined
TID=4bf92f3577b34da6a3ce929d0e0e4736 PID=00f067aa0ba902b7
r=$(hget cli -n 1 -H "traceparent: 00-$TID-$PID-01" -H "tracestate: congo=t61rcWkgMzE" \
    http://$VIP:$PORT/t3/x)
body=$(jget "$r" last_body)
all=$(wait_spans t3 2)
check=$(python3 - "$all" "$body" "$TID" "$PID" <<'EOF'
import json, sys
spans, h, tid, pid = json.loads(sys.argv[1]), json.loads(sys.argv[2])["headers"], sys.argv[3], sys.argv[4]
cl = [s for s in spans if s["kind"] == "CLIENT"]
bad = []
if len(spans) != 2 or len(cl) != 1:
    print("spans: %d" % len(spans)); sys.exit()
if any(s["traceId"] != tid for s in spans):
    bad.append("trace ids %s" % [s["traceId"] for s in spans])
if cl[0].get("parentId") != pid:
    bad.append("client parent %s" % cl[0].get("parentId"))
if h.get("tracestate") != "congo=t61rcWkgMzE":
    bad.append("tracestate %r" % h.get("tracestate"))
print("; ".join(bad) or "ok")
EOF
)
expect_eq "incoming traceparent joined, tracestate kept" "$check" ok

# --- 4. sampling 0: nothing reported, the decision propagated
telemetry 0
r=$(hget cli -n $N http://$VIP:$PORT/t4/x)
expect_eq "requests with sampling 0" "$(jget "$r" status.200 0)" $N
expect_eq "the app sees x-b3-sampled: 0" "$(jget "$(jget "$r" last_body)" headers.x-b3-sampled)" 0
all=$(wait_spans t4 1)
expect_eq "no span with sampling 0" "$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])))' "$all")" 0

# --- 5. sampling 0, the client decided to sample
r=$(hget cli -n 5 -H "x-b3-sampled: 1" http://$VIP:$PORT/t5/x)
expect_eq "requests with x-b3-sampled: 1" "$(jget "$r" status.200 0)" 5
all=$(wait_spans t5 10)
kinds=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(sum(x["kind"]=="CLIENT" for x in s), sum(x["kind"]=="SERVER" for x in s))' "$all")
expect_eq "x-b3-sampled: 1 honoured over sampling 0 (client server spans)" "$kinds" "5 5"

for node in node1 node2; do
  st=$(proxy_stats $node)
  log "$node: spans exported $(pstat "$st" http.spans_exported), dropped $(pstat "$st" http.spans_dropped), failed $(pstat "$st" http.spans_failed)"
  expect_eq "$node: no span dropped" "$(pstat "$st" http.spans_dropped)" 0
done
log "ok"
