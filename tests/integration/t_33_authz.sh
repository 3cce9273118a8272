#!/usr/bin/env bash
# Issue 3: L4 AuthorizationPolicy by principal, across nodes, evaluated by the
# destination's meshd on the HBONE peer identity.
#   server az33 (ns33, sa server) on node2, ports 9330 and 9331 behind a VIP;
#   mesh clients on node1: al33 (sa allowed) and ot33 (sa other); and on
#   node2 (same node: no TLS, policy still applies) aln33 / otn33, same SAs.
#   0. no policy: both clients reach both ports
#   1. ALLOW principals [cluster.local/ns/ns33/sa/allowed]: al33 gets banner +
#      echo, ot33 is refused (closed without banner), on both ports
#   2. + DENY to.ports ["9331"]: al33 still on 9330, refused on 9331
#   3. both deleted: both clients reach both ports again
# Each change is probed right after `meshctl apply` returns and every node
# reports the new generation; the time that takes is logged and bounded (3 s).
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=ns33 VIP=198.19.33.10 HOST=az33.ns33.svc.cluster.local
mesh_pod az33 node2 $NS server app=az33
mesh_pod al33 node1 $NS allowed
mesh_pod ot33 node1 $NS other
mesh_pod aln33 node2 $NS allowed
mesh_pod otn33 node2 $NS other
wait_mesh_pod node2 $NS/az33
wait_mesh_pod node1 $NS/al33
wait_mesh_pod node1 $NS/ot33
wait_mesh_pod node2 $NS/aln33
wait_mesh_pod node2 $NS/otn33
server az33 az33 9330 9331
apply <<YAML
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: az33
  namespace: $NS
spec:
  hosts: [$HOST]
  addresses: [$VIP]
  ports:
  - {number: 7330, name: tcp-a, protocol: TCP, targetPort: 9330}
  - {number: 7331, name: tcp-b, protocol: TCP, targetPort: 9331}
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels:
      app: az33
YAML
log "server az33 $(pod_ip az33) (node2); clients al33 $(pod_ip al33) sa allowed, ot33 $(pod_ip ot33) sa other (node1)"

N=5
reach() { # WHAT CLIENT PORT: all N connections get banner + echo
  local out; out=$(probe "$2" --connect $VIP:"$3" -n $N --send 64 --timeout-ms 3000)
  log "$1: $out"
  expect_eq "$1: served by az33" "$(jget "$out" by_id.az33 0)" $N
}
denied() { # WHAT CLIENT PORT: all N connections closed without banner
  local out; out=$(probe "$2" --connect $VIP:"$3" -n $N --timeout-ms 3000)
  log "$1: $out"
  expect_eq "$1: connections with a banner" "$(jget "$out" ok)" 0
  expect_eq "$1: refused" "$(jget "$out" failed)" $N
}
timed_apply() { # apply from stdin, log and bound how long until every node applied it
  local t0 ms; t0=$(date +%s%N)
  apply
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  log "applied on every node in $ms ms"
  [ $ms -le 3000 ] || fail "policy took $ms ms to be applied by every node (want <= 3000)"
}

# --- 0
reach "no policy: allowed -> 7330" al33 7330
reach "no policy: other -> 7330" ot33 7330

# --- 1
before=$(proxy_stats node2)
timed_apply <<YAML
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-allowed
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: az33
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/$NS/sa/allowed"]
YAML
reach "ALLOW: allowed -> 7330" al33 7330
reach "ALLOW: allowed -> 7331" al33 7331
denied "ALLOW: other -> 7330" ot33 7330
denied "ALLOW: other -> 7331" ot33 7331
reach "ALLOW, same node: allowed -> 7330" aln33 7330
denied "ALLOW, same node: other -> 7330" otn33 7330

# --- 2
timed_apply <<YAML
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-9331
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: az33
  action: DENY
  rules:
  - to:
    - operation:
        ports: ["9331"]
YAML
reach "ALLOW + DENY 9331: allowed -> 7330" al33 7330
denied "ALLOW + DENY 9331: allowed -> 7331" al33 7331
denied "ALLOW + DENY 9331: other -> 7330" ot33 7330
denied "ALLOW + DENY 9331, same node: allowed -> 7331" aln33 7331
after=$(proxy_stats node2)
d() { echo $(( $(pstat "$after" "$1") - $(pstat "$before" "$1") )); }
log "node2: CONNECT 200 +$(d hbone.status.200), 401 +$(d hbone.status.401); inbound_hbone denied +$(d connections.inbound_hbone.denied); denials $(jget "$after" denials)"
expect_eq "node2 CONNECTs answered 401" "$(d hbone.status.401)" $((4 * N))
expect_eq "node2 CONNECTs answered 200" "$(d hbone.status.200)" $((3 * N))
# The same denials on /metrics: bpfmesh_authorization_denials_total by reason
# equals meshd's own counters, and the DENY policy's reason counts at least
# the N cross-node connections it refused.
m2=$("$MESHCTL" metrics --node node2) || fail "meshctl metrics --node node2 failed"
python3 - "$(proxy_stats node2)" "$m2" "authorization_policy_deny:$NS/deny-9331" $N <<'EOF2' || fail "authorization denials on /metrics disagree"
import json, re, sys
stats, text, deny_reason, n = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
got = {m.group(1): int(m.group(2)) for m in
       re.finditer(r'^bpfmesh_authorization_denials_total\{reason="([^"]*)"\} (\d+)$', text, re.M)}
want = {k: v for k, v in stats["denials"].items()
        if k.startswith(("authorization_policy", "peer_authentication", "jwt_invalid")) or k == "denied"}
print("metrics:", got, "proxy stats:", want, file=sys.stderr)
sys.exit(0 if got == want and got.get(deny_reason, 0) >= n else 1)
EOF2
log "ok: bpfmesh_authorization_denials_total matches meshd's counters"

# --- 3
t0=$(date +%s%N)
s=$(mesh_gen | awk '{print $3}')
"$MESHCTL" delete authorizationpolicy allow-allowed -n $NS >/dev/null || fail "delete allow-allowed failed"
"$MESHCTL" delete authorizationpolicy deny-9331 -n $NS >/dev/null || fail "delete deny-9331 failed"
wait_ready $((s + 1))
log "policies deleted and applied on every node in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
reach "no policy again: allowed -> 7331" al33 7331
reach "no policy again: other -> 7330" ot33 7330
reach "no policy again: other -> 7331" ot33 7331
reach "no policy again, same node: other -> 7331" otn33 7331
