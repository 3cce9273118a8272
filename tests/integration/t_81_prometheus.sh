#!/usr/bin/env bash
# A real Prometheus server (Debian's prometheus binary) in the sandbox's hub
# network namespace scrapes every node's meshd on :15020 each second. After a
# known amount of traffic (60 connections from a client on node1, 40 from
# one on node2, to a service with a backend on each node), PromQL through its
# HTTP API returns exactly those istio_tcp_connections_opened_total per node
# and in total, and both targets are up. Then the L7 request metrics: 300
# HTTP requests from client-1 through an L7 service (protocol HTTP and a
# VirtualService with a timeout), 60 of them answered 503 by the backend
# (bm-httpsrv, x-test-status), make sum(istio_requests_total{reporter=
# "source"}) exactly 240 for response_code 200 and 60 for 503, all counted on
# node1 (the client's), and histogram_quantile over
# istio_request_duration_milliseconds_bucket returns a finite number.
# Prometheus is stopped and its storage removed by the trap, whatever happens.
. "$(dirname "$0")/lib.sh"
command -v prometheus >/dev/null || fail "prometheus is missing (Debian package prometheus; scripts/deps.sh)"
command -v curl >/dev/null || fail "curl is missing"
sandbox_wait_free
t_begin --nodes 2

HOST=web.prom.svc.cluster.local VIP=198.19.1.81 N1=60 N2=40
HUB=bm-hub HUB_ADDR=198.19.255.254 PROM=127.0.0.1:9090
pod web-a node1 prom app=web,version=v1
pod web-b node2 prom app=web,version=v1
pod client-1 node1 default app=load
pod client-2 node2 default app=load
server web-a a 9000
server web-b b 9000
# L7: one backend on node2; retries off so a 503 is one request, one series.
HOST7=api.prom.svc.cluster.local VIP7=198.19.1.82 N200=240 N503=60
pod api-b node2 prom app=api,version=v1
hsrv api-b api-b 8080
apply <<YAML
$(service_yaml web prom $HOST $VIP 7000 9000 web)
---
$(l7_service_yaml api prom $HOST7 $VIP7 80 8080 api)
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: api
  namespace: prom
spec:
  hosts:
  - $HOST7
  http:
  - route:
    - destination:
        host: $HOST7
    timeout: 10s
    retries:
      attempts: 0
YAML

# The hub is a plain bridge; give it an address on the nodes' /24 so a
# process in it reaches every node's 15020 (removed with the hub at down).
ip -n $HUB addr add $HUB_ADDR/24 dev br0 || fail "cannot address the hub bridge"

mkdir -p "$T_TMP/prom-data"
{
  echo "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}"
  echo "scrape_configs:"
  echo "- job_name: bpfmesh"
  echo "  static_configs:"
  i=1
  for node in node1 node2; do
    echo "  - targets: ['198.19.255.$i:15020']"
    echo "    labels: {node: $node}"
    i=$((i + 1))
  done
} >"$T_TMP/prometheus.yml"
promtool check config "$T_TMP/prometheus.yml" >"$T_TMP/promtool.out" 2>&1 ||
  { cat "$T_TMP/promtool.out" >&2; fail "generated prometheus.yml does not check"; }

ip netns exec $HUB prometheus --config.file="$T_TMP/prometheus.yml" \
  --storage.tsdb.path="$T_TMP/prom-data" --web.listen-address=$PROM \
  --log.level=warn >"$T_TMP/prometheus.log" 2>&1 &
PROM_PID=$!
T_BG_PIDS+=($PROM_PID)
stop_prometheus() {
  kill "$PROM_PID" 2>/dev/null || return 0
  local i
  for i in $(seq 100); do kill -0 "$PROM_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PROM_PID" 2>/dev/null || true
}

for i in $(seq 150); do
  ip netns exec $HUB curl -sf --max-time 1 "http://$PROM/-/ready" >/dev/null 2>&1 && break
  kill -0 $PROM_PID 2>/dev/null || { cat "$T_TMP/prometheus.log" >&2; fail "prometheus exited"; }
  sleep 0.1
done
ip netns exec $HUB curl -sf --max-time 1 "http://$PROM/-/ready" >/dev/null ||
  { tail -n 20 "$T_TMP/prometheus.log" >&2; fail "prometheus not ready within 15 s"; }
log "prometheus ready (pid $PROM_PID)"

# query PROMQL: one "LABELVALUES=VALUE" line per result, label values joined
# by "/" in label-name order ("=VALUE" for a result without labels).
query() {
  local json
  json=$(ip netns exec $HUB curl -sS --max-time 5 -G "http://$PROM/api/v1/query" \
    --data-urlencode "query=$1") || return 1
  python3 - "$json" <<'EOF'
import json, sys
d = json.loads(sys.argv[1])
if d.get("status") != "success":
    sys.exit("query failed: %s" % d.get("error"))
rows = ["/".join(v for _, v in sorted(r["metric"].items())) + "=" + r["value"][1]
        for r in d["data"]["result"]]
print("\n".join(sorted(rows)))
EOF
}

# wait_query WHAT PROMQL WANT: polls (up to 20 s: scrapes are 1 s apart) until
# the result is exactly WANT.
wait_query() {
  local got="" i
  for i in $(seq 40); do
    got=$(query "$2" | tr '\n' ' ' | sed 's/ $//') || true
    [ "$got" = "$3" ] && { log "ok: $1: $got"; return 0; }
    sleep 0.5
  done
  fail "$1: PromQL '$2' returned '$got', want '$3'"
}

wait_query "both meshd targets up" 'sum by (node) (up{job="bpfmesh"})' "node1=1 node2=1"

out1=$(probe client-1 --connect $HOST:7000 -n $N1 --send 1000 --concurrency 4)
out2=$(probe client-2 --connect $HOST:7000 -n $N2 --send 1000 --concurrency 4)
expect_eq "client-1 ok" "$(jget "$out1" ok)" $N1
expect_eq "client-2 ok" "$(jget "$out2" ok)" $N2

SEL="destination_service=\"$HOST\",reporter=\"source\",response_flags=\"-\""
wait_query "opened per node" \
  "sum by (node) (istio_tcp_connections_opened_total{$SEL})" "node1=$N1 node2=$N2"
wait_query "opened in total" "sum(istio_tcp_connections_opened_total{$SEL})" "=$((N1 + N2))"
wait_query "closed in total" "sum(istio_tcp_connections_closed_total{$SEL})" "=$((N1 + N2))"
wait_query "opened by source workload" \
  "sum by (source_workload) (istio_tcp_connections_opened_total{$SEL})" "client-1=$N1 client-2=$N2"

# Bytes: what the clients sent is the request direction (received_bytes).
want=$(( $(jget "$out1" bytes_sent) + $(jget "$out2" bytes_sent) ))
got=$(query "sum(istio_tcp_received_bytes_total{$SEL})" | sed 's/^=//')
python3 -c "import sys; g, w = float(sys.argv[1]), int(sys.argv[2]); sys.exit(0 if abs(g - w) <= w / 100 else 1)" \
  "${got:-0}" "$want" || fail "istio_tcp_received_bytes_total via PromQL: $got, want $want +- 1 %"
log "ok: istio_tcp_received_bytes_total via PromQL = $got (clients sent $want)"

# --- L7: istio_requests_total and the duration histogram through PromQL
ok7=$(hget client-1 -n $N200 --timeout-ms 3000 http://$VIP7/ok)
bad7=$(hget client-1 -n $N503 --timeout-ms 3000 -H 'x-test-status: 503' http://$VIP7/fail)
expect_eq "HTTP 200 answers" "$(jget "$ok7" status.200 0)" $N200
expect_eq "HTTP 503 answers" "$(jget "$bad7" status.503 0)" $N503
expect_eq "backend requests (no retries)" "$(jget "$(hsrv_ctl api-b 8080 /__stats)" requests 0)" $((N200 + N503))

SEL7="reporter=\"source\",destination_service=\"$HOST7\""
wait_query "istio_requests_total 200" "sum(istio_requests_total{$SEL7,response_code=\"200\"})" "=$N200"
wait_query "istio_requests_total 503" "sum(istio_requests_total{$SEL7,response_code=\"503\"})" "=$N503"
wait_query "istio_requests_total by node and code" \
  "sum by (node, response_code) (istio_requests_total{$SEL7})" "node1/200=$N200 node1/503=$N503"
wait_query "istio_request_duration_milliseconds_count" \
  "sum(istio_request_duration_milliseconds_count{$SEL7})" "=$((N200 + N503))"
wait_query "istio_request_duration_milliseconds_bucket le=+Inf" \
  "sum(istio_request_duration_milliseconds_bucket{$SEL7,le=\"+Inf\"})" "=$((N200 + N503))"
for q in 0.5 0.99; do
  v=$(query "histogram_quantile($q, sum by (le) (istio_request_duration_milliseconds_bucket{$SEL7}))" | sed 's/^=//')
  python3 -c 'import math, sys; v = float(sys.argv[1]); sys.exit(0 if math.isfinite(v) and 0 <= v <= 10000 else 1)' \
    "${v:-x}" 2>/dev/null || fail "histogram_quantile($q) over istio_request_duration_milliseconds_bucket: '$v', want a number"
  log "ok: histogram_quantile($q) of the request duration = $v ms"
done

# The shipped Grafana dashboard: every panel query is valid PromQL for this
# Prometheus, and every metric it names is one meshd exports.
fams=$( { "$MESHCTL" metrics --node node1; "$MESHCTL" metrics --node node2; } | awk '$1 == "#" && $2 == "TYPE" { print $3 }' | sort -u)
python3 - "$ROOT/deploy/grafana/bpfmesh-dashboard.json" "$fams" >"$T_TMP/dash-queries.txt" <<'EOF' ||
import json, re, sys
dash, fams = json.load(open(sys.argv[1])), set(sys.argv[2].split())
bad = []
for p in dash["panels"]:
    for t in p.get("targets", []):
        e = t["expr"]
        for name in re.findall(r"\b((?:bpfmesh|istio)_[a-z_]+)", e):
            fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in fams else name
            if fam not in fams:
                bad.append("%s: %s" % (p["title"], name))
        print(e.replace("$__rate_interval", "1m").replace("$node", ".*").replace("$service", ".*"))
if bad:
    sys.exit("dashboard names metrics meshd does not export: %s" % bad)
EOF
  fail "the Grafana dashboard does not match meshd's metrics"
nq=0
while IFS= read -r q; do
  query "$q" >/dev/null || fail "dashboard query fails in Prometheus: $q"
  nq=$((nq + 1))
done <"$T_TMP/dash-queries.txt"
log "ok: the dashboard's $nq queries run in Prometheus and name only exported metrics"

stop_prometheus
log "prometheus stopped"
