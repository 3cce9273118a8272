#!/usr/bin/env bash
# Istio TCP metrics of mesh traffic come from the proxy, never twice: a mesh
# client and a mesh server on node2, N=37 connections through the VIP with
# known bytes each (same-node delivery inside meshd: identity, no TLS), make
# node2 export istio_tcp_connections_opened/closed_total == N with
# reporter="source" and again with reporter="destination", both with
# connection_security_policy="none" (what really happened: no mutual TLS),
# bytes within 1 % of what the client sent and received, and no second
# count from the kernel path (its rows would carry the same source labels
# and double the value). `promtool check metrics` reports nothing.
# Then a mesh client on node1 opens N2 connections to the same server over
# HBONE: node1 exports them with reporter="source" and node2 with
# reporter="destination", both connection_security_policy="mutual_tls",
# bytes within 1 % again.
. "$(dirname "$0")/lib.sh"
command -v promtool >/dev/null || fail "promtool is missing (Debian package prometheus; scripts/deps.sh)"
sandbox_wait_free
t_begin --nodes 2

NS=mm82 HOST=srv82.mm82.svc.cluster.local VIP=198.19.82.82 PORT=7820 TPORT=9820 N=37 BYTES=5000
mesh_pod srv82 node2 $NS server app=srv82
mesh_pod cli82 node2 $NS client app=cli82
mesh_pod far82 node1 $NS client app=cli82
wait_mesh_pod node2 $NS/srv82
wait_mesh_pod node2 $NS/cli82
wait_mesh_pod node1 $NS/far82
server srv82 srv82 $TPORT
apply <<YAML
$(service_yaml srv82 $NS $HOST $VIP $PORT $TPORT srv82)
YAML

out=$(probe cli82 --connect $VIP:$PORT -n $N --send $BYTES --concurrency 4)
log "$out"
expect_eq "client connections ok" "$(jget "$out" ok)" $N
client_sent=$(jget "$out" bytes_sent)
client_recv=$(jget "$out" bytes_recv)

# series FILE FAMILY REPORTER [POLICY]: the summed value of FAMILY for
# clients of sa/client -> srv82 with that reporter and
# connection_security_policy (default none), after checking the labels that
# must hold.
series() {
  python3 - "$1" "$2" "$3" "$NS" "${4:-none}" <<'EOF'
import re, sys
path, family, reporter, ns, policy = sys.argv[1:6]
want = {"reporter": reporter, "connection_security_policy": policy, "request_protocol": "tcp",
        "destination_workload_namespace": ns, "response_flags": "-",
        "source_principal": "spiffe://cluster.local/ns/%s/sa/client" % ns,
        "destination_principal": "spiffe://cluster.local/ns/%s/sa/server" % ns}
total, hits = 0, 0
for line in open(path):
    m = re.match(r'^(\w+)\{(.*)\} (\S+)$', line.strip())
    if not m or m.group(1) != family:
        continue
    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
    if labels.get("reporter") != reporter or labels.get("destination_workload_namespace") != ns \
       or labels.get("connection_security_policy") != policy:
        continue
    bad = {k: labels.get(k) for k in want if labels.get(k) != want[k]}
    if bad:
        sys.exit("unexpected label values: %s" % bad)
    hits += 1
    total += int(float(m.group(3)))
if hits > 1:
    sys.exit("%d series for one source/destination pair" % hits)
print(total)
EOF
}

m2=$T_TMP/node2.prom
for _ in $(seq 50); do
  "$MESHCTL" metrics --node node2 >"$m2" || fail "meshctl metrics --node node2 failed"
  c_src=$(series "$m2" istio_tcp_connections_closed_total source) || fail "node2: $c_src"
  c_dst=$(series "$m2" istio_tcp_connections_closed_total destination) || fail "node2: $c_dst"
  [ "$c_src" = $N ] && [ "$c_dst" = $N ] && break
  sleep 0.1
done
for r in source destination; do
  expect_eq "node2 opened_total reporter=$r (once, not from the kernel too)" \
    "$(series "$m2" istio_tcp_connections_opened_total $r)" $N
  expect_eq "node2 closed_total reporter=$r" "$(series "$m2" istio_tcp_connections_closed_total $r)" $N
done

within_1pct() { # WHAT GOT WANT
  python3 -c "import sys; g, w = int(sys.argv[1]), int(sys.argv[2]); sys.exit(0 if w > 0 and abs(g - w) <= w / 100 else 1)" "$2" "$3" ||
    fail "$1: got $2, want $3 +- 1 %"
  log "ok: $1 = $2 (client: $3)"
}
for r in source destination; do
  within_1pct "received_bytes reporter=$r" "$(series "$m2" istio_tcp_received_bytes_total $r)" "$client_sent"
  within_1pct "sent_bytes reporter=$r" "$(series "$m2" istio_tcp_sent_bytes_total $r)" "$client_recv"
done

# Nothing about these connections on node1.
m1=$T_TMP/node1.prom
"$MESHCTL" metrics --node node1 >"$m1" || fail "meshctl metrics --node node1 failed"
expect_eq "node1 rows for $NS" "$(grep -c "destination_workload_namespace=\"$NS\"" "$m1" || true)" 0

# --- cross node: HBONE streams, mutual TLS
N2=23
out=$(probe far82 --connect $VIP:$PORT -n $N2 --send $BYTES --concurrency 4)
log "cross-node: $out"
expect_eq "cross-node connections ok" "$(jget "$out" ok)" $N2
x_sent=$(jget "$out" bytes_sent) x_recv=$(jget "$out" bytes_recv)
for _ in $(seq 50); do
  "$MESHCTL" metrics --node node1 >"$m1" || fail "meshctl metrics --node node1 failed"
  "$MESHCTL" metrics --node node2 >"$m2" || fail "meshctl metrics --node node2 failed"
  a=$(series "$m1" istio_tcp_connections_closed_total source mutual_tls) || fail "node1: $a"
  b=$(series "$m2" istio_tcp_connections_closed_total destination mutual_tls) || fail "node2: $b"
  [ "$a" = $N2 ] && [ "$b" = $N2 ] && break
  sleep 0.1
done
expect_eq "node1 closed_total reporter=source mutual_tls" "$(series "$m1" istio_tcp_connections_closed_total source mutual_tls)" $N2
expect_eq "node1 opened_total reporter=source mutual_tls" "$(series "$m1" istio_tcp_connections_opened_total source mutual_tls)" $N2
expect_eq "node2 opened_total reporter=destination mutual_tls" "$(series "$m2" istio_tcp_connections_opened_total destination mutual_tls)" $N2
within_1pct "node1 received_bytes (source, mutual_tls)" "$(series "$m1" istio_tcp_received_bytes_total source mutual_tls)" "$x_sent"
within_1pct "node1 sent_bytes (source, mutual_tls)" "$(series "$m1" istio_tcp_sent_bytes_total source mutual_tls)" "$x_recv"
within_1pct "node2 received_bytes (destination, mutual_tls)" "$(series "$m2" istio_tcp_received_bytes_total destination mutual_tls)" "$x_sent"
within_1pct "node2 sent_bytes (destination, mutual_tls)" "$(series "$m2" istio_tcp_sent_bytes_total destination mutual_tls)" "$x_recv"
expect_eq "node2 destination rows without TLS unchanged" "$(series "$m2" istio_tcp_connections_opened_total destination)" $N

for f in "$m1" "$m2"; do
  lint=$(promtool check metrics <"$f" 2>&1) || fail "promtool check metrics $(basename "$f"): $lint"
  [ -z "$lint" ] || fail "promtool check metrics $(basename "$f"): $lint"
done
log "ok: promtool check metrics reports nothing"
