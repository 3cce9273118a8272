#!/usr/bin/env bash
# Istio TCP metrics from the kernel path are exact: 137 connections from a
# client on node1 to a service backed on node2, 10,000 bytes echoed on each,
# make istio_tcp_connections_opened_total and _closed_total exactly 137 for
# that source/destination on node1 (reporter="source"), the byte counters
# match what the client sent and received within 1 %, node2 does not count
# them a second time, and `promtool check metrics` finds nothing to say about
# either node's exposition. Also: the HTTP endpoint on :15020 (content type,
# 404 elsewhere) and meshd's own counters for the same traffic.
. "$(dirname "$0")/lib.sh"
command -v promtool >/dev/null || fail "promtool is missing (Debian package prometheus; scripts/deps.sh)"
command -v curl >/dev/null || fail "curl is missing"
t_begin --nodes 2

HOST=echo.metrics.svc.cluster.local VIP=198.19.1.80 N=137 BYTES=10000
pod echo-v1 node2 metrics app=echo,version=v1
pod client node1 default app=sleep
server echo-v1 v1 9000
apply <<YAML
$(service_yaml echo metrics $HOST $VIP 7000 9000 echo)
YAML

# Scraped once before any traffic: meshd indexes the stats rows with one walk
# of the map at its first scrape, so the row this traffic creates must reach
# the index through sockops' ring of new keys (stats_keys_v1), not a walk.
"$MESHCTL" metrics --node node1 >/dev/null || fail "meshctl metrics --node node1 failed"
out=$(probe client --connect $HOST:7000 -n $N --send $BYTES --concurrency 8)
log "$out"
expect_eq "client connections ok" "$(jget "$out" ok)" $N
client_sent=$(jget "$out" bytes_sent)
client_recv=$(jget "$out" bytes_recv)

# series FILE FAMILY: the value of FAMILY for client -> echo-v1 (0 if absent),
# after checking every label of the Istio TCP set has the value it must have.
series() {
  python3 - "$1" "$2" "$HOST" <<'EOF'
import re, sys
path, family, host = sys.argv[1:4]
want = {
    "reporter": "source", "source_workload": "client", "source_workload_namespace": "default",
    "source_principal": "spiffe://cluster.local/ns/default/sa/default", "source_app": "sleep",
    "source_version": "unknown", "source_canonical_service": "sleep",
    "source_canonical_revision": "latest", "source_cluster": "unknown",
    "destination_workload": "echo-v1", "destination_workload_namespace": "metrics",
    "destination_principal": "spiffe://cluster.local/ns/metrics/sa/default",
    "destination_app": "echo", "destination_version": "v1", "destination_service": host,
    "destination_service_name": "echo", "destination_service_namespace": "metrics",
    "destination_canonical_service": "echo", "destination_canonical_revision": "v1",
    "destination_cluster": "unknown", "request_protocol": "tcp", "response_flags": "-",
    "connection_security_policy": "none",
}
total, hits = 0, 0
for line in open(path):
    m = re.match(r'^(\w+)\{(.*)\} (\S+)$', line.strip())
    if not m or m.group(1) != family:
        continue
    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
    if labels.get("destination_service") != host or labels.get("source_workload") != "client" \
            or labels.get("response_flags") != "-":
        continue
    if set(labels) != set(want):
        sys.exit("label names differ: %s" % sorted(set(labels) ^ set(want)))
    bad = {k: labels[k] for k in want if labels[k] != want[k]}
    if bad:
        sys.exit("unexpected label values: %s" % bad)
    hits += 1
    total += int(float(m.group(3)))
if hits > 1:
    sys.exit("%d series with one label set" % hits)
print(total)
EOF
}

# A closed count lands when the kernel moves the socket to CLOSE: allow a moment.
m1=$T_TMP/node1.prom
for i in $(seq 50); do
  "$MESHCTL" metrics --node node1 >"$m1" || fail "meshctl metrics --node node1 failed"
  closed=$(series "$m1" istio_tcp_connections_closed_total) || fail "node1: $closed"
  [ "$closed" = $N ] && break
  sleep 0.1
done
expect_eq "node1 istio_tcp_connections_opened_total" "$(series "$m1" istio_tcp_connections_opened_total)" $N
expect_eq "node1 istio_tcp_connections_closed_total" "$closed" $N

# Istio's directions are the proxy's towards the client app: received = the
# request (what the client sent), sent = the response (what it received).
within_1pct() { # WHAT GOT WANT
  python3 -c "import sys; g, w = int(sys.argv[1]), int(sys.argv[2]); sys.exit(0 if w > 0 and abs(g - w) <= w / 100 else 1)" "$2" "$3" ||
    fail "$1: got $2, want $3 +- 1 %"
  log "ok: $1 = $2 (client: $3)"
}
within_1pct "istio_tcp_received_bytes_total" "$(series "$m1" istio_tcp_received_bytes_total)" "$client_sent"
within_1pct "istio_tcp_sent_bytes_total" "$(series "$m1" istio_tcp_sent_bytes_total)" "$client_recv"

# The server's node saw the same connections arrive: not counted there again.
m2=$T_TMP/node2.prom
"$MESHCTL" metrics --node node2 >"$m2" || fail "meshctl metrics --node node2 failed"
expect_eq "node2 istio_tcp_connections_opened_total (no double count)" \
  "$(series "$m2" istio_tcp_connections_opened_total)" 0

# meshd's own view of the same traffic.
metric() { # FILE NAME LABEL-SUBSTRING: value of the first matching sample
  awk -v n="$2" -v l="$3" 'index($0, n) == 1 && index($0, l) { print $NF; exit }' "$1"
}
expect_eq "bpfmesh_lb_picks_total" "$(metric "$m1" 'bpfmesh_lb_picks_total{' "outbound|7000||$HOST")" $N
expect_eq "bpfmesh_backend_active_connections after close" \
  "$(metric "$m1" 'bpfmesh_backend_active_connections{' "$(pod_ip echo-v1):9000")" 0
expect_eq "refused (max_connections)" \
  "$(metric "$m1" 'bpfmesh_connections_refused_total{reason="max_connections"' "$HOST")" 0
expect_eq "stats_v1 rows" "$(metric "$m1" 'bpfmesh_bpf_map_entries{map="stats_v1"}' '')" 1
read -r _ applied store < <(mesh_gen)
expect_eq "bpfmesh_config_applied_generation" "$(metric "$m1" 'bpfmesh_config_applied_generation ' '')" "$store"

# promtool lint: no output, exit 0, for both nodes.
for f in "$m1" "$m2"; do
  lint=$(promtool check metrics <"$f" 2>&1) || fail "promtool check metrics $(basename "$f"): $lint"
  [ -z "$lint" ] || fail "promtool check metrics $(basename "$f"): $lint"
done
log "ok: promtool check metrics reports nothing"

# The HTTP endpoint in node1's network namespace: same exposition.
hdr=$T_TMP/hdr body=$T_TMP/body
ip netns exec bmn-node1 curl -sS --max-time 5 -D "$hdr" -o "$body" http://127.0.0.1:15020/metrics ||
  fail "GET :15020/metrics failed"
grep -qi '^content-type: text/plain; version=0.0.4; charset=utf-8' "$hdr" ||
  fail "content type: $(grep -i content-type "$hdr")"
expect_eq "HTTP opened_total" "$(series "$body" istio_tcp_connections_opened_total)" $N
# Asked for gzip, as Prometheus asks: the same exposition, compressed.
ip netns exec bmn-node1 curl -sS --max-time 5 -H 'Accept-Encoding: gzip' -D "$hdr" -o "$body.gz" \
  http://127.0.0.1:15020/metrics || fail "GET :15020/metrics (gzip) failed"
grep -qi '^content-encoding: gzip' "$hdr" || fail "no Content-Encoding: gzip: $(tr -d '\r' <"$hdr")"
gunzip -c "$body.gz" >"$body.txt" || fail "the gzip body does not decompress"
expect_eq "gzip opened_total" "$(series "$body.txt" istio_tcp_connections_opened_total)" $N
lint=$(promtool check metrics <"$body.txt" 2>&1) && [ -z "$lint" ] || fail "promtool check metrics (gzip): $lint"
log "ok: gzip $(stat -c %s "$body.gz") bytes for $(stat -c %s "$body.txt") of text"
code=$(ip netns exec bmn-node1 curl -s --max-time 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:15020/other)
expect_eq "GET /other" "$code" 404

# Readiness on :15021: 200 once the store's generation is applied.
code=$(ip netns exec bmn-node1 curl -s --max-time 5 -o "$body" -w '%{http_code}' http://127.0.0.1:15021/healthz/ready)
expect_eq "GET :15021/healthz/ready" "$code" 200
grep -q '^ready: generation' "$body" || fail "readiness body: $(cat "$body")"
