#!/usr/bin/env bash
# Issue 4: L7 authorization and JWT on the server's node (seed 05's
# policies, pasted with names changed), for mesh traffic arriving over HBONE
# from another node and delivered on the same node.
#   1. ALLOW frontend: methods GET/POST, paths /api/*: GET /api/x 200,
#      DELETE /api/x 403 "RBAC: access denied", GET /other 403, another
#      service account 403;
#   2. RequestAuthentication (a key made here, inline jwks): no token passes,
#      a valid token passes, a bad signature / expired / wrong issuer token
#      is 401; a DENY on /admin for requests without a request principal
#      makes no-token 403 and a valid token 200; the token is not forwarded;
#   3. jwksUri: the keys fetched over HTTP from a server in the hub netns,
#      a valid token 200 and a forged one 401; still valid after the key
#      server is gone (cached).
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=l7e PORT=9080 TPORT=8080
mesh_pod be1 node2 $NS backend app=backend
mesh_pod api1 node2 $NS api app=api
mesh_pod api2 node2 $NS api app=api2
mesh_pod fe1 node1 $NS frontend app=frontend
mesh_pod fe2 node2 $NS frontend app=frontend
mesh_pod evil node1 $NS intruder app=intruder
for p in be1/node2 api1/node2 api2/node2 fe1/node1 fe2/node2 evil/node1; do wait_mesh_pod ${p#*/} $NS/${p%/*}; done
hsrv be1 be1 $TPORT
hsrv api1 api1 $TPORT
hsrv api2 api2 $TPORT
"$JWTTOOL" keygen --alg RS256 --out "$T_TMP/k1" >/dev/null || fail "bm-jwt keygen"
"$JWTTOOL" keygen --alg ES256 --out "$T_TMP/k2" >/dev/null || fail "bm-jwt keygen"
JWKS=$(python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); print(json.dumps({"keys": a["keys"] + b["keys"]}))' "$T_TMP/k1/jwks.json" "$T_TMP/k2/jwks.json")
TD=cluster.local
# A JWKS server in the hub netns, on an address every node's meshd reaches.
HUB=bm-hub HUB_ADDR=198.19.255.254 JPORT=8765
ip -n $HUB addr add $HUB_ADDR/24 dev br0 || fail "cannot address the hub bridge"
mkdir -p "$T_TMP/jwks"
cp "$T_TMP/k1/jwks.json" "$T_TMP/jwks/jwks.json"
(cd "$T_TMP/jwks" && exec ip netns exec $HUB python3 -m http.server $JPORT --bind $HUB_ADDR >/dev/null 2>&1) &
JWKS_PID=$!
T_BG_PIDS+=($JWKS_PID)
for _ in $(seq 50); do ip netns exec $HUB ss -Hltn "sport = :$JPORT" | grep -q LISTEN && break; sleep 0.1; done
apply <<YAML
$(service_yaml backend $NS backend.$NS.svc.cluster.local 198.19.44.1 $PORT $TPORT backend)
---
$(service_yaml api $NS api.$NS.svc.cluster.local 198.19.44.2 $PORT $TPORT api)
---
$(service_yaml api2 $NS api2.$NS.svc.cluster.local 198.19.44.3 $PORT $TPORT api2)
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-frontend-to-backend
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: backend
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["$TD/ns/$NS/sa/frontend"]
    to:
    - operation:
        methods: ["GET", "POST"]
        paths: ["/api/*"]
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata:
  name: jwt-auth
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: api
  jwtRules:
  - issuer: "https://auth.example.com"
    jwks: '$JWKS'
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata:
  name: jwt-uri
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: api2
  jwtRules:
  - issuer: "https://auth.example.com"
    jwksUri: "http://$HUB_ADDR:$JPORT/jwks.json"
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: admin-needs-token
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: api
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
    to:
    - operation:
        paths: ["/admin*"]
YAML

# --- 1. method/path/principal
for c in fe1 fe2; do
  where=$([ $c = fe1 ] && echo "cross-node (HBONE)" || echo "same node")
  g=$(hget $c -n 20 http://198.19.44.1:$PORT/api/x)
  d=$(hget $c -n 5 -X DELETE -v http://198.19.44.1:$PORT/api/x 2>"$T_TMP/del.err")
  o=$(hget $c -n 5 http://198.19.44.1:$PORT/other)
  log "$where: GET /api/x $(jget "$g" status), DELETE $(jget "$d" status), GET /other $(jget "$o" status)"
  expect_eq "$where GET /api/x allowed" "$(jget "$g" status.200 0)" 20
  expect_eq "$where DELETE /api/x denied" "$(jget "$d" status.403 0)" 5
  expect_eq "$where 403 body" "$(jget "$d" last_body)" "RBAC: access denied"
  expect_eq "$where GET /other denied" "$(jget "$o" status.403 0)" 5
done
e=$(hget evil -n 5 http://198.19.44.1:$PORT/api/x)
expect_eq "another service account denied" "$(jget "$e" status.403 0)" 5
st=$(hsrv_ctl be1 $TPORT /__stats)
log "backend saw: $st"
expect_eq "requests that reached the app (only the 2 x 20 allowed)" "$(jget "$st" requests 0)" 40

# --- 2. JWT
A=http://198.19.44.2:$PORT
good=$("$JWTTOOL" sign --key "$T_TMP/k1/key.pem" --iss https://auth.example.com --sub alice --exp 600)
good_es=$("$JWTTOOL" sign --key "$T_TMP/k2/key.pem" --iss https://auth.example.com --sub bob --exp 600)
expired=$("$JWTTOOL" sign --key "$T_TMP/k1/key.pem" --iss https://auth.example.com --sub alice --exp -600)
wrongiss=$("$JWTTOOL" sign --key "$T_TMP/k1/key.pem" --iss https://evil.example.com --sub alice --exp 600)
"$JWTTOOL" keygen --alg RS256 --out "$T_TMP/k3" >/dev/null
forged=$("$JWTTOOL" sign --key "$T_TMP/k3/key.pem" --iss https://auth.example.com --sub alice --exp 600)
check() { # WHAT PATH TOKEN WANT_STATUS
  local r
  if [ -n "$3" ]; then r=$(hget fe1 -n 3 -H "authorization: Bearer $3" $A$2); else r=$(hget fe1 -n 3 $A$2); fi
  expect_eq "$1" "$(jget "$r" status.$4 0)" 3
  LAST=$r
}
check "no token passes" /x "" 200
check "valid RS256 token" /x "$good" 200
body=$(jget "$LAST" last_body)
expect_eq "token not forwarded to the app" "$(jget "$body" headers.authorization none)" none
check "valid ES256 token" /x "$good_es" 200
check "expired token 401" /x "$expired" 401
check "wrong issuer 401" /x "$wrongiss" 401
check "signature by an unknown key 401" /x "$forged" 401
check "garbage token 401" /x "not.a.jwt" 401
check "/admin without a token 403" /admin/panel "" 403
check "/admin with a valid token" /admin/panel "$good" 200

# --- 3. jwksUri
A=http://198.19.44.3:$PORT
ok=""
for _ in $(seq 50); do   # the first fetch happens in the background after apply
  r=$(hget fe1 -n 1 -H "authorization: Bearer $good" $A/x)
  [ "$(jget "$r" status.200 0)" = 1 ] && { ok=1; break; }
  sleep 0.1
done
[ -n "$ok" ] || fail "a valid token never passed with jwksUri: $(jget "$r" status) $(jget "$r" last_body)"
check "jwksUri: valid token" /x "$good" 200
check "jwksUri: forged token 401" /x "$forged" 401
kill $JWKS_PID 2>/dev/null; wait $JWKS_PID 2>/dev/null || true
check "jwksUri: valid token with the key server gone (cached keys)" /x "$good" 200
