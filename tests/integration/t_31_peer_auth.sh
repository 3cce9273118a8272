#!/usr/bin/env bash
# Issue 3: PeerAuthentication for mesh pods, enforced by meshd (15006) and,
# when meshd is gone, by the sk_lookup program (fail closed).
#   pod A (pa31a, ns strict31: namespace PeerAuthentication STRICT) and pod B
#   (pa31b, ns perm31: PERMISSIVE), both on node2, both in the mesh;
#   ext31: a NON-mesh pod on node1 connecting straight to the pod IPs;
#   mc31: a mesh client on node1 (reaches A through a ServiceEntry VIP).
#   1. plaintext ext31 -> A:9310 and A:9311 refused (no banner); -> B:9310 accepted
#   2. mc31 -> A's VIP works (HBONE mTLS), node2 counts inbound HBONE; a mesh
#      client on A's node (mn31, no TLS: meshd delivers) is accepted too
#   3. meshd on node2 killed (SIGKILL): plaintext to A still refused (SYN
#      dropped: connect times out), B (PERMISSIVE) still reachable;
#      meshd restarted: mesh client works again, plaintext to A still refused
#   4. workload PeerAuthentication on A: portLevelMtls {9311: PERMISSIVE}:
#      plaintext to A:9311 accepted, A:9310 still refused; deleting it
#      closes 9311 again
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

VIP=198.19.31.10 HOST=pa31a.strict31.svc.cluster.local
mesh_pod pa31a node2 strict31 server app=pa31a
mesh_pod pa31b node2 perm31 server app=pa31b
mesh_pod mc31 node1 client31 client
mesh_pod mn31 node2 client31 client
pod ext31 node1 default
wait_mesh_pod node2 strict31/pa31a
wait_mesh_pod node2 perm31/pa31b
wait_mesh_pod node1 client31/mc31
wait_mesh_pod node2 client31/mn31
server pa31a pa31a 9310 9311
server pa31b pa31b 9310
A=$(pod_ip pa31a) B=$(pod_ip pa31b)
apply <<YAML
$(service_yaml pa31a strict31 $HOST $VIP 7310 9310 pa31a)
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: strict31
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: perm31
spec:
  mtls:
    mode: PERMISSIVE
YAML
log "A=pa31a $A (strict31, STRICT), B=pa31b $B (perm31, PERMISSIVE), both node2; ext31 $(pod_ip ext31) plain, mc31 $(pod_ip mc31) mesh, node1"

refused() { # WHAT TARGET: every plaintext connection from ext31 gets no banner
  local out; out=$(probe ext31 --connect "$2" -n 3 --concurrency 3 --timeout-ms 1500)
  log "$1: $out"
  expect_eq "$1: connections that read a banner" "$(jget "$out" ok)" 0
  expect_eq "$1: refused connections" "$(jget "$out" failed)" 3
}
accepted() { # WHAT TARGET ID
  local out; out=$(probe ext31 --connect "$2" -n 3 --timeout-ms 1500 --send 32)
  log "$1: $out"
  expect_eq "$1: connections served by $3" "$(jget "$out" by_id.$3 0)" 3
}
mesh_ok() { # WHAT: mc31 through the VIP, 10 connections with echo
  local out; out=$(probe mc31 --connect $VIP:7310 -n 10 --send 64 --timeout-ms 3000)
  log "$1: $out"
  expect_eq "$1: mesh connections served by pa31a" "$(jget "$out" by_id.pa31a 0)" 10
}

# --- 1 + 2
p2_before=$(proxy_stats node2)
refused "plaintext -> A:9310 (STRICT)" $A:9310
refused "plaintext -> A:9311 (STRICT)" $A:9311
accepted "plaintext -> B:9310 (PERMISSIVE)" $B:9310 pa31b
mesh_ok "mesh client -> A via VIP"
out=$(probe mn31 --connect $VIP:7310 -n 10 --send 64 --timeout-ms 3000)
log "same-node mesh client -> A via VIP: $out"
expect_eq "same-node mesh client -> STRICT A: served by pa31a" "$(jget "$out" by_id.pa31a 0)" 10
p2_after=$(proxy_stats node2)
d() { echo $(( $(pstat "$p2_after" "$1") - $(pstat "$p2_before" "$1") )); }
log "node2 proxy: inbound_plaintext ok +$(d connections.inbound_plaintext.ok) denied +$(d connections.inbound_plaintext.denied)," \
    "inbound_hbone ok +$(d connections.inbound_hbone.ok); denials $(jget "$p2_after" denials)"
expect_eq "node2 inbound HBONE connections (mesh client)" "$(d connections.inbound_hbone.ok)" 10
expect_eq "node2 plaintext connections delivered (B only)" "$(d connections.inbound_plaintext.ok)" 3
expect_eq "node2 plaintext connections denied (A, STRICT)" "$(d connections.inbound_plaintext.denied)" 6

# --- 3. meshd gone: fail closed
meshd_ctl kill node2
t0=$(date +%s%N)
out=$(probe ext31 --connect $A:9310 -n 3 --concurrency 3 --timeout-ms 1500)
log "meshd dead, plaintext -> A:9310: $out"
expect_eq "meshd dead: plaintext to STRICT A that read a banner" "$(jget "$out" ok)" 0
expect_eq "meshd dead: plaintext to STRICT A refused" "$(jget "$out" failed)" 3
accepted "meshd dead, plaintext -> B:9310 (PERMISSIVE falls through to the app)" $B:9310 pa31b
log "fail-closed check took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
meshd_ctl start node2
wait_ready
ok=0
for i in $(seq 50); do
  out=$(probe mc31 --connect $VIP:7310 -n 1 --timeout-ms 1000)
  [ "$(jget "$out" ok)" = 1 ] && { ok=1; break; }
  sleep 0.1
done
[ $ok = 1 ] || fail "mesh client cannot reach A within 5 s of the meshd restart: $out"
log "mesh path back after restart (attempt $i)"
mesh_ok "after restart: mesh client -> A via VIP"
refused "after restart: plaintext -> A:9310" $A:9310

# --- 4. port-level PERMISSIVE on one port of A
apply <<YAML
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: pa31a-port
  namespace: strict31
spec:
  selector:
    matchLabels:
      app: pa31a
  mtls:
    mode: STRICT
  portLevelMtls:
    9311:
      mode: PERMISSIVE
YAML
accepted "portLevelMtls 9311 PERMISSIVE: plaintext -> A:9311" $A:9311 pa31a
refused "portLevelMtls 9311 PERMISSIVE: plaintext -> A:9310" $A:9310
mesh_ok "portLevelMtls: mesh client -> A via VIP"
s=$(mesh_gen | awk '{print $3}')
"$MESHCTL" delete peerauthentication pa31a-port -n strict31 >/dev/null || fail "meshctl delete peerauthentication failed"
wait_ready "$s"
refused "workload policy deleted: plaintext -> A:9311" $A:9311
