#!/usr/bin/env bash
# Issue 3: meshd's HBONE listener (podIP:15008) refuses peers it must not
# trust and answers CONNECT per §10.1. bm-hbone runs in a NON-mesh pod on
# node1 (nothing captures it) against a mesh server pod on node2 whose
# AuthorizationPolicy allows only principal cluster.local/ns/ns32/sa/good.
# Client certificates come from bm-certgen:
#   (a) valid profile, allowed identity, signed by ANOTHER root    -> TLS refused
#   (b) mesh root, allowed identity, EXPIRED an hour ago           -> TLS refused
#   (c) mesh root, allowed identity path, other trust domain       -> TLS refused
#   (d) no client certificate at all                               -> TLS refused
#   (e) mesh root, valid, identity sa/bad (not allowed)            -> CONNECT 401
#   (f) mesh root, valid, sa/good                                  -> 200 + echo of a marker
#   (g) sa/good, :authority another IP                             -> 400
#   (h) sa/good, :method GET                                       -> 400
#   (i) sa/good, :authority the pod on a port with no listener     -> 503
# Every run also checks the server's identity (URI SAN sa/server) and ALPN h2;
# meshd's counters must show the refusals.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2
for b in "$HBONE" "$CERTGEN"; do [ -x "$b" ] || fail "$b is missing (run make)"; done

NS=ns32 TD=cluster.local TPORT=9320
mesh_pod srv32 node2 $NS server app=srv32
pod ext32 node1 default
wait_mesh_pod node2 $NS/srv32
server srv32 srv32 $TPORT
apply <<YAML
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: only-good
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: srv32
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["$TD/ns/$NS/sa/good"]
YAML
SRV=$(pod_ip srv32)
CA=$(ca_dir)
[ -s "$CA/root-cert.pem" ] || fail "no mesh root at $CA/root-cert.pem"
C=$T_TMP/certs; mkdir -p "$C"
log "server srv32 $SRV:15008 (node2), client ext32 $(pod_ip ext32) (node1, not in the mesh); mesh root $CA"

gen() { # NAME ARGS...: bm-certgen into $C/NAME.{crt,key}
  local n=$1; shift
  local o; o=$("$CERTGEN" "$@" --out-cert "$C/$n.crt" --out-key "$C/$n.key" 2>&1) ||
    fail "bm-certgen $n failed: $o"
  log "cert $n: $(echo "$o" | tail -n 1)"
}
GOOD=spiffe://$TD/ns/$NS/sa/good
gen other  --new-ca "$T_TMP/other-ca" --id "$GOOD"
gen expired --ca-dir "$CA" --id "$GOOD" --not-before-offset -7200 --ttl 3600
gen foreign --ca-dir "$CA" --trust-domain evil.local --id "spiffe://evil.local/ns/$NS/sa/good"
gen bad    --ca-dir "$CA" --id "spiffe://$TD/ns/$NS/sa/bad"
gen good   --ca-dir "$CA" --id "$GOOD"

before=$(proxy_stats node2)
HB=(--connect "$SRV:15008" --ca "$CA/root-cert.pem" --expect-peer "spiffe://$TD/ns/$NS/sa/server" --timeout-ms 3000)
MARK="BMMARK32-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

check() { # CASE WANT_DESC OUT
  log "($1) $3"
  [ "$(jget "$3" ok)" = 1 ] || fail "($1) want $2, got: $3"
}
hb_case() { # CASE WANT_DESC bm-hbone ARGS...: runs, records the exit status in the JSON
  local c=$1 want=$2 out rc; shift 2
  out=$("$SANDBOX" exec ext32 -- "$HBONE" "$@") && rc=0 || rc=$?
  out=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1].splitlines()[-1]); d["ok"]=int(sys.argv[2]=="0"); print(json.dumps(d))' "$out" "$rc" 2>/dev/null) ||
    fail "($c) bm-hbone printed no JSON (exit $rc)"
  check "$c" "$want" "$out"
  LAST=$out
}
hb_case a "TLS refused (other CA)"      "${HB[@]}" --authority "$SRV:$TPORT" --cert "$C/other.crt" --key "$C/other.key" --expect-tls-failure
hb_case b "TLS refused (expired)"       "${HB[@]}" --authority "$SRV:$TPORT" --cert "$C/expired.crt" --key "$C/expired.key" --expect-tls-failure
hb_case c "TLS refused (trust domain)"  "${HB[@]}" --authority "$SRV:$TPORT" --cert "$C/foreign.crt" --key "$C/foreign.key" --expect-tls-failure
hb_case d "TLS refused (no cert)"       "${HB[@]}" --authority "$SRV:$TPORT" --expect-tls-failure
hb_case e "401 (identity not allowed)"  "${HB[@]}" --authority "$SRV:$TPORT" --cert "$C/bad.crt" --key "$C/bad.key" --expect-status 401
hb_case f "200 + echo"                  "${HB[@]}" --authority "$SRV:$TPORT" --cert "$C/good.crt" --key "$C/good.key" --send "$MARK" --expect-echo --expect-status 200
[[ $(jget "$LAST" echo) == "srv32"$'\n'"$MARK"* ]] || fail "(f) echo is not banner + marker: $LAST"
expect_eq "(f) server identity seen by the client" "$(jget "$LAST" peer_id)" "spiffe://$TD/ns/$NS/sa/server"
expect_eq "(f) ALPN" "$(jget "$LAST" alpn)" h2
hb_case g "400 (bad authority)"         "${HB[@]}" --authority "198.18.9.9:$TPORT" --cert "$C/good.crt" --key "$C/good.key" --expect-status 400
hb_case h "400 (not CONNECT)"           "${HB[@]}" --authority "$SRV:$TPORT" --method GET --cert "$C/good.crt" --key "$C/good.key" --expect-status 400
hb_case i "503 (app unreachable)"       "${HB[@]}" --authority "$SRV:9399" --cert "$C/good.crt" --key "$C/good.key" --expect-status 503

after=$(proxy_stats node2)
d() { echo $(( $(pstat "$after" "$1") - $(pstat "$before" "$1") )); }
log "node2 proxy deltas: tls.failed +$(d tls.failed), server_handshakes +$(d tls.server_handshakes)," \
    "CONNECT 200 +$(d hbone.status.200) 400 +$(d hbone.status.400) 401 +$(d hbone.status.401) 503 +$(d hbone.status.503)"
log "node2 denials: $(jget "$after" denials)"
log "node2 meshd log (TLS / HBONE lines):"
{ grep -iE 'tls|hbone|peer|denied|401' "$BPFMESH_RUN/sandbox/meshd-node2.log" || true; } | tail -n 12 | sed 's/^/  /' >&2
expect_eq "CONNECT answered 200" "$(d hbone.status.200)" 1
expect_eq "CONNECT answered 401" "$(d hbone.status.401)" 1
expect_eq "CONNECT answered 400" "$(d hbone.status.400)" 2
expect_eq "CONNECT answered 503" "$(d hbone.status.503)" 1
tf=$(d tls.failed)
[ "$tf" -ge 4 ] || fail "tls.failed counted $tf refused handshakes, want >= 4 (a-d)"
log "ok: tls.failed +$tf (>= 4)"
