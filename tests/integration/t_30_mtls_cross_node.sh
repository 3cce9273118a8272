#!/usr/bin/env bash
# Issue 3: traffic between mesh pods on different nodes is mTLS (HBONE on
# 15008) on the node link and arrives intact; same-node mesh traffic skips TLS.
#   1. cross-node: a mesh client on node1 sends a unique marker to a mesh
#      server on node2 through a ServiceEntry VIP; the echo carries the marker,
#      while a capture of node2's link to the hub (hn2) holds no
#      marker byte string and no packet to the app port, and shows TCP to 15008
#      with TLS handshake records (content type 0x16) and TLS 1.3 app data (0x17).
#   2. same-node: a mesh client on node2 reaches the same server; nothing on
#      port 15008 crosses node2's pod bridge or the hub, and meshd counts the
#      connection as same-node delivery.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=mtls30 HOST=srv30.mtls30.svc.cluster.local VIP=198.19.30.30 PORT=7300 TPORT=9300
mesh_pod srv30 node2 $NS server app=srv30
mesh_pod cli30 node1 $NS client
mesh_pod near30 node2 $NS client
wait_mesh_pod node2 $NS/srv30
wait_mesh_pod node1 $NS/cli30
wait_mesh_pod node2 $NS/near30
server srv30 srv30 $TPORT
apply <<YAML
$(service_yaml srv30 $NS $HOST $VIP $PORT $TPORT srv30)
YAML
SRV_IP=$(pod_ip srv30)
log "server srv30 $SRV_IP (node2), clients cli30 $(pod_ip cli30) (node1), near30 $(pod_ip near30) (node2)"

# --- 1. cross node
MARK="BMMARK30-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
PCAP=$T_TMP/cross.pcap
n1_before=$(proxy_stats node1) n2_before=$(proxy_stats node2)
capture_start "$PCAP" hn2
out=$(tcp_marker cli30 $VIP $PORT "$MARK")
log "marker exchange: $out"
bulk=$(probe cli30 --connect $VIP:$PORT -n 50 --concurrency 5 --send 256)
log "50 more connections: $bulk"
sleep 0.3
capture_stop
expect_eq "banner (server reached through the VIP)" "$(jget "$out" banner)" srv30
[[ $(jget "$out" echo) == *"$MARK"* ]] || fail "echo does not carry the marker: $out"
log "ok: marker $MARK arrived intact and came back"
expect_eq "cross-node bm-probe failed" "$(jget "$bulk" failed)" 0
n1_after=$(proxy_stats node1) n2_after=$(proxy_stats node2)
d_out=$(pdelta "$n1_after" "$n1_before" connections.outbound_hbone.ok)
d_in=$(pdelta "$n2_after" "$n2_before" connections.inbound_hbone.ok)
d_200=$(pdelta "$n2_after" "$n2_before" hbone.status.200)
log "proxy counters: node1 outbound_hbone.ok +$d_out, node2 inbound_hbone.ok +$d_in, CONNECT 200 +$d_200," \
    "node1 tls client_handshakes $(pstat "$n1_after" tls.client_handshakes) (resumed $(pstat "$n1_after" tls.resumed))," \
    "node2 server_handshakes $(pstat "$n2_after" tls.server_handshakes)"
expect_eq "node1 outbound HBONE connections (1 marker + 50)" "$d_out" 51
expect_eq "node2 inbound HBONE connections" "$d_in" 51

total=$(pcap_count "$PCAP" "tcp")
hb=$(pcap_count "$PCAP" "tcp port 15008")
hb_syn=$(pcap_count "$PCAP" "tcp port 15008 and tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0")
tls_hs=$(pcap_count "$PCAP" "tcp port 15008 and tcp[((tcp[12] & 0xf0) >> 2)] = 0x16 and tcp[((tcp[12] & 0xf0) >> 2) + 1] = 0x03")
tls_app=$(pcap_count "$PCAP" "tcp port 15008 and tcp[((tcp[12] & 0xf0) >> 2)] = 0x17 and tcp[((tcp[12] & 0xf0) >> 2) + 1] = 0x03")
app=$(pcap_count "$PCAP" "tcp port $TPORT or tcp port $PORT")
mark_raw=$(grep -a -c -F "$MARK" "$PCAP" || true)
mark_ascii=$(tcpdump -r "$PCAP" -nn -A 2>/dev/null | grep -c -F "$MARK" || true)
log "capture on hn2 (node2's hub veth): $total TCP packets, $hb on port 15008 ($hb_syn SYN), TLS handshake records $tls_hs," \
    "TLS app-data records $tls_app, app-port packets $app, marker hits raw $mark_raw / -A $mark_ascii"
expect_eq "marker bytes in the node-link capture" "$mark_raw" 0
expect_eq "marker in tcpdump -A of the capture" "$mark_ascii" 0
expect_eq "plaintext packets to the app port on the node link" "$app" 0
[ "$hb" -gt 0 ] || fail "no TCP to port 15008 on the node link"
[ "$tls_hs" -gt 0 ] || fail "no TLS handshake record (0x16 0x03) on port 15008"
[ "$tls_app" -gt 0 ] || fail "no TLS application-data record (0x17 0x03) on port 15008"
log "ok: node link carries TLS to 15008 only ($hb packets; HBONE pooling: $hb_syn TCP connection(s) for 51 app connections)"
{ tcpdump -r "$PCAP" -nn 'tcp port 15008' 2>/dev/null || true; } | sed -n '1,3s/^/  /p' >&2

# --- 2. same node
MARK2="BMNEAR30-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
PCAP2=$T_TMP/near-hub.pcap PCAP3=$T_TMP/near-pods.pcap
p2_before=$(proxy_stats node2)
capture_start "$PCAP2" any
CAP2=$CAP_PID
ip netns exec bmn-node2 tcpdump -Z root --immediate-mode -i pods0 -U -s 0 -w "$PCAP3" >"$PCAP3.log" 2>&1 &
CAP3=$!
T_BG_PIDS+=("$CAP3")
for _ in $(seq 100); do grep -q 'listening on' "$PCAP3.log" && break; sleep 0.05; done
out=$(tcp_marker near30 $VIP $PORT "$MARK2")
log "same-node marker exchange: $out"
bulk=$(probe near30 --connect $VIP:$PORT -n 50 --concurrency 5 --send 256)
log "50 more same-node connections: $bulk"
sleep 0.3
CAP_PID=$CAP2 capture_stop
CAP_PID=$CAP3 capture_stop
p2_after=$(proxy_stats node2)
expect_eq "same-node banner" "$(jget "$out" banner)" srv30
[[ $(jget "$out" echo) == *"$MARK2"* ]] || fail "same-node echo does not carry the marker: $out"
expect_eq "same-node bm-probe failed" "$(jget "$bulk" failed)" 0
hub15008=$(pcap_count "$PCAP2" "tcp port 15008")
pods15008=$(pcap_count "$PCAP3" "tcp port 15008")
podsall=$(pcap_count "$PCAP3" "tcp")
log "same-node captures: hub 15008 packets $hub15008; node2 pods0: $podsall TCP packets, $pods15008 on 15008"
expect_eq "port-15008 packets on the hub for same-node traffic" "$hub15008" 0
expect_eq "port-15008 packets on node2's pod bridge for same-node traffic" "$pods15008" 0
d_local=$(pdelta "$p2_after" "$p2_before" connections.outbound_local.ok)
d_hb=$(pdelta "$p2_after" "$p2_before" connections.inbound_hbone.ok)
d_hs=$(( $(pstat "$p2_after" tls.server_handshakes) + $(pstat "$p2_after" tls.client_handshakes) -
         $(pstat "$p2_before" tls.server_handshakes) - $(pstat "$p2_before" tls.client_handshakes) ))
log "node2 proxy counters: outbound_local.ok +$d_local, inbound_hbone.ok +$d_hb, TLS handshakes +$d_hs"
expect_eq "node2 same-node deliveries (1 marker + 50)" "$d_local" 51
expect_eq "node2 HBONE streams for same-node traffic" "$d_hb" 0
expect_eq "node2 TLS handshakes for same-node traffic" "$d_hs" 0
