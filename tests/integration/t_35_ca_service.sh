#!/usr/bin/env bash
# The CA as a service (docs/identity.md §6): `sandbox up --ca-service`.
# node1's meshd holds the root and signs CSRs on 198.19.255.1:15012; node2's
# joined with a one-time token and holds no CA key.
#   1. node2's filesystem: a node key and certificate (SPIFFE ID
#      .../bpfmesh/node/node2, chaining to the root), no root key anywhere
#      under its run directory, no CA directory.
#   2. mesh pods on node2 get SVIDs signed by node1's CA (the serial meshctl
#      cert ls shows is in node1's "signed" log line), and a mesh client on
#      node1 reaches a mesh server on node2 through a VIP over mTLS (marker
#      echoed; HBONE counters move).
#   3. node2 asks the CA for an identity with no workload on node2: refused,
#      logged and counted by the CA; the same request for its own workload's
#      identity is signed.
#   4. join tokens: a fresh one works once (meshd --join-only), the reused
#      one is refused, an expired one is refused, and node2 never needs its
#      token again (meshd restart).
#   5. the CA is down (node1's meshd stopped): node2 keeps its SVIDs and its
#      admin socket answers at once while a new pod there waits for its SVID;
#      once the CA is back, node2 gets it without any restart.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2 --ca-service

TD=cluster.local NS=ca35 HOST=srv35.ca35.svc.cluster.local VIP=198.19.35.35 PORT=7350 TPORT=9350
RUN2=$BPFMESH_RUN/node2 STATE=$BPFMESH_RUN/sandbox
BUNDLE=$STATE/ca-bundle.pem CA_ADDR=198.19.255.1:15012
LOG1=$STATE/meshd-node1.log LOG2=$STATE/meshd-node2.log
# jctl ARGS...: meshctl ARGS -o json on one line (for jget); exit status ignored.
jctl() { { "$MESHCTL" "$@" -o json 2>/dev/null || true; } | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' 2>/dev/null || echo '{}'; }

# --- 1. no CA key on node2
[ -s "$BUNDLE" ] || fail "no CA bundle $BUNDLE"
[ -s "$STATE/ca/root-key.pem" ] || fail "node1's CA has no root key in $STATE/ca"
[ -s "$RUN2/node-key.pem" ] && [ -s "$RUN2/node-cert.pem" ] || fail "node2 has no node key/certificate in $RUN2"
expect_eq "node2 node key mode" "$(stat -c %a "$RUN2/node-key.pem")" 600
[ ! -e "$RUN2/ca" ] || fail "node2 has a CA directory $RUN2/ca"
n_rootkeys=$(find "$RUN2" -name 'root-key*' | wc -l)
expect_eq "root keys under node2's run directory" "$n_rootkeys" 0
root_pub=$(openssl pkey -in "$STATE/ca/root-key.pem" -pubout 2>/dev/null | sha256sum)
for f in $(grep -l 'PRIVATE KEY' -r "$RUN2" 2>/dev/null || true); do
  [ "$(openssl pkey -in "$f" -pubout 2>/dev/null | sha256sum)" != "$root_pub" ] || fail "$f is the root key"
done
log "ok: private keys under $RUN2: $(grep -l 'PRIVATE KEY' -r "$RUN2" | xargs -n1 basename | tr '\n' ' ')(none is the root's)"
openssl verify -CAfile "$BUNDLE" "$RUN2/node-cert.pem" >/dev/null || fail "node2's node certificate does not chain to the root"
san=$(openssl x509 -in "$RUN2/node-cert.pem" -noout -ext subjectAltName | sed -n 's/^ *URI://p')
expect_eq "node2's node certificate" "$san" "spiffe://$TD/bpfmesh/node/node2"
grep -q "joined: got node certificate spiffe://$TD/bpfmesh/node/node2" "$LOG2" || fail "node2 did not log its join"
ca2=$(jctl ca show --node node2)
expect_eq "node2 CA mode" "$(jget "$ca2" nodes.0.mode)" client
expect_eq "node2 trusts node1's root" "$(jget "$ca2" nodes.0.sha256_fingerprint)" \
  "$(openssl x509 -in "$BUNDLE" -noout -fingerprint -sha256 | sed 's/.*=//')"

# --- 2. SVIDs by CSR, cross-node mTLS
mesh_pod srv35 node2 $NS server app=srv35
mesh_pod cli35 node1 $NS client
wait_mesh_pod node2 $NS/srv35
wait_mesh_pod node1 $NS/cli35
server srv35 srv35 $TPORT
apply <<YAML
$(service_yaml srv35 $NS $HOST $VIP $PORT $TPORT srv35)
YAML
ID=spiffe://$TD/ns/$NS/sa/server
serial=""
for _ in $(seq 60); do
  serial=$(cert_serials node2 | sed -n "s|^$ID=||p")
  [ -n "$serial" ] && break
  sleep 0.1
done
[ -n "$serial" ] || fail "node2 has no SVID for $ID: $("$MESHCTL" cert ls --node node2 2>&1)"
grep -q "sign: signed $ID for node node2 (serial $serial" "$LOG1" ||
  fail "SVID serial $serial of node2 is not one node1's CA signed: $(grep 'ca service' "$LOG1" | tail -n 5)"
log "ok: node2's SVID $ID serial $serial was signed by node1's CA service"
before1=$(proxy_stats node1) before2=$(proxy_stats node2)
MARK="BMMARK35-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
out=$(tcp_marker cli35 $VIP $PORT "$MARK")
log "marker exchange: $out"
expect_eq "banner (server on node2 reached through the VIP)" "$(jget "$out" banner)" srv35
[[ $(jget "$out" echo) == *"$MARK"* ]] || fail "echo does not carry the marker: $out"
after1=$(proxy_stats node1) after2=$(proxy_stats node2)
expect_eq "node1 outbound HBONE connections" \
  $(pdelta "$after1" "$before1" connections.outbound_hbone.ok) 1
expect_eq "node2 inbound HBONE connections" \
  $(pdelta "$after2" "$before2" connections.inbound_hbone.ok) 1

# --- 3. a forged request: an identity with no workload on node2
svc1=$(jctl ca show --node node1)
ref0=$(jget "$svc1" nodes.0.service.refused 0)
out=$(jctl cert request $NS/client --node node2)
log "node2 asks for $NS/client (its pod is on node1): $out"
expect_eq "forged request answered" "$(jget "$out" ok)" False
[[ $(jget "$out" error) == *"not on the requesting node"* || $(jget "$out" error) == *"no workload of this service account"* ]] ||
  fail "refusal does not say why: $out"
out=$(jctl cert request other35/nobody --node node2)
expect_eq "request for an identity nobody has" "$(jget "$out" ok)" False
svc1=$(jctl ca show --node node1)
expect_eq "CA refusals counted" $(( $(jget "$svc1" nodes.0.service.refused) - ref0 )) 2
grep -q "refused sign from node node2 for $NS/client" "$LOG1" || fail "node1's CA did not log the refusal"
out=$(jctl cert request $NS/server --node node2)
expect_eq "request for node2's own workload identity" "$(jget "$out" ok)" True

# --- 4. join tokens
J=$T_TMP/join
join_once() { # DIR NODE TOKEN: meshd --join-only from node2's netns; prints the exit status
  mkdir -p "$1"
  nsenter --net=/run/netns/bmn-node2 "$MESHD" --join-only --node "$2" --run-dir "$1" \
    --ca-addr $CA_ADDR --ca-bundle "$BUNDLE" --join-token "$3" >"$1.log" 2>&1 && echo 0 || echo $?
}
tok=$("$MESHCTL" node join node3 --ttl 10m 2>/dev/null)
[[ $tok =~ ^[0-9a-f]{64}$ ]] || fail "meshctl node join printed '$tok', not a 64-digit hex token"
grep -rq "$tok" "$T_TMP/store" && fail "the token itself is in the store"
log "ok: the store holds only the token's hash: $(cat "$T_TMP/store/kv/nodes/node3/join-token")"
expect_eq "first join with the token" "$(join_once "$J/a" node3 "$tok")" 0
openssl verify -CAfile "$BUNDLE" "$J/a/node-cert.pem" >/dev/null || fail "node3's certificate does not chain to the root"
expect_eq "second join with the same token" "$(join_once "$J/b" node3 "$tok")" 1
grep -q "no join token for this node" "$J/b.log" || fail "reuse refused without the reason: $(cat "$J/b.log")"
[ ! -e "$J/b/node-cert.pem" ] || fail "a reused token produced a node certificate"
tok=$("$MESHCTL" node join node4 --ttl 1s 2>/dev/null)
sleep 2
expect_eq "join with an expired token" "$(join_once "$J/c" node4 "$tok")" 1
grep -q "join token expired" "$J/c.log" || fail "expiry refused without the reason: $(cat "$J/c.log")"
tok=$("$MESHCTL" node join node5 --ttl 10m 2>/dev/null)
expect_eq "join as another node with node5's token" "$(join_once "$J/d" node6 "$tok")" 1
log "ok: join token refusals: $(grep -c 'refused join' "$LOG1") logged by node1's CA"
# node2 restarts without a token: its node certificate is enough.
meshd_ctl restart node2
wait_ready
grep -q "node certificate spiffe://$TD/bpfmesh/node/node2 loaded" "$LOG2" || fail "restarted node2 did not load its node certificate"
out=$(tcp_marker cli35 $VIP $PORT "$MARK-again")
[[ $(jget "$out" echo) == *"$MARK-again"* ]] || fail "after node2's restart: $out"
log "ok: node2 restarted without a token and serves mTLS again"

# --- 5. CA outage
meshd_ctl stop node1
"$SANDBOX" pod add late35 --node node2 --namespace $NS --sa late --labels "$AMBIENT" >/dev/null ||
  fail "sandbox pod add late35 failed"
LATE=spiffe://$TD/ns/$NS/sa/late
sleep 3
t0=$(date +%s%N)
"$MESHCTL" status --node node2 >/dev/null || fail "node2's meshd does not answer while the CA is down"
t_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$t_ms" -lt 1000 ] || fail "node2's admin socket took ${t_ms} ms while the CA is down"
expect_eq "node2 keeps its SVID while the CA is down" "$(cert_serials node2 | sed -n "s|^$ID=||p" | grep -c .)" 1
expect_eq "SVID for the new pod while the CA is down" "$(cert_serials node2 | grep -c "^$LATE=" || true)" 0
log "ok: CA down: node2 answered in ${t_ms} ms, kept $ID; node2 log: $(grep 'ca client: CA' "$LOG2" | tail -n 1 | cut -c 26-)"
meshd_ctl start node1
t0=$(date +%s)
for _ in $(seq 400); do
  cert_serials node2 | grep -q "^$LATE=" && break
  sleep 0.1
done
cert_serials node2 | grep -q "^$LATE=" || fail "node2 got no SVID for $LATE within 40 s of the CA's return"
log "ok: CA back: node2 got $LATE within $(( $(date +%s) - t0 )) s, no restart"
