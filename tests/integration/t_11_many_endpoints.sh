#!/usr/bin/env bash
# A service with more endpoints than one kernel cluster entry holds (64):
# 160 endpoints, 100 on pod ma-a (node1) and 60 on pod ma-b (node2), each its
# own port answering "ID:PORT".
#   1. every endpoint gets connections, none fails (before, the kernel used
#      the first 64 and the others got nothing);
#   2. every third endpoint ejected (54 of 160: 66 % healthy, above
#      minHealthPercent 50): no connection reaches an ejected endpoint. The
#      reconciler spreads a 160-endpoint cluster over three kernel entries,
#      endpoint i in entry i % 3, so one entry holds only ejected endpoints;
#      panic is the cluster's state, so connect4 must go to another entry
#      instead of panicking in that one;
#   3. weighted subsets of unequal size (v1: 100 endpoints in two entries,
#      v2: 60 in one) split 25/75 by weight, not by endpoint count;
#   4. maxConnections is the subset's, not each entry's: with a limit of 40,
#      40 held connections fill it and the 41st is refused.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

NS=t11 HOST=ma.t11.svc.cluster.local VIP=198.19.11.10 BASE=21000
pod ma-a node1 $NS app=ma
pod ma-b node2 $NS app=ma
pod client node1 default
for p in a b; do
  n=100; [ $p = b ] && n=60
  "$SANDBOX" exec ma-$p -- "$TESTSRV" --id ma-$p --ports $BASE-$((BASE + n - 1)) 2>>"$T_TMP/srv-ma-$p.log" &
  T_BG_PIDS+=($!)
  wait_listen ma-$p $((BASE + n - 1))
done
A=$(pod_ip ma-a) B=$(pod_ip ma-b)

# endpoint list in order: ma-a's 100 ports, then ma-b's 60
EPS=()
for i in $(seq 0 99); do EPS+=("$A:$((BASE + i))"); done
for i in $(seq 0 59); do EPS+=("$B:$((BASE + i))"); done

endpoints_yaml() { # ma-a's endpoints are subset v1, ma-b's v2
  local ep
  for ep in "${EPS[@]}"; do
    printf '  - address: %s\n    ports:\n      tcp-ma: %d\n    labels:\n      version: %s\n' \
      "${ep%:*}" "${ep#*:}" "$([ "${ep%:*}" = "$A" ] && echo v1 || echo v2)"
  done
}

apply <<YAML
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: ma
  namespace: $NS
spec:
  hosts:
  - $HOST
  addresses:
  - $VIP
  ports:
  - number: 80
    name: tcp-ma
    protocol: TCP
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
$(endpoints_yaml)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: ma
  namespace: $NS
spec:
  host: $HOST
  trafficPolicy:
    outlierDetection:
      minHealthPercent: 50
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
YAML

# count OUT: "hit a b m0 m1 m2" from bm-probe's by_id ("ma-a:PORT": n):
# endpoints hit, connections to ma-a and to ma-b, and to the endpoints whose
# index in EPS is 0, 1 and 2 modulo 3.
count() {
  python3 - "$1" $BASE <<'EOF'
import json, sys
by = json.loads(sys.argv[1].strip().splitlines()[-1]).get("by_id", {})
base = int(sys.argv[2])
def index(k):
    pod, port = k.rsplit(":", 1)
    return int(port) - base + (100 if pod == "ma-b" else 0)
hit = sum(1 for v in by.values() if v > 0)
a = sum(v for k, v in by.items() if index(k) < 100)
mod = [sum(v for k, v in by.items() if index(k) % 3 == r) for r in range(3)]
print(hit, a, sum(by.values()) - a, *mod)
EOF
}

# --- 1. all 160 endpoints in use. 1,600 connections, about 10 per endpoint:
# the chance that a given one gets none is 5e-5, so at least 150 must be hit;
# ma-a holds 62.5 % of the endpoints (1000 +- 19 expected).
out=$(probe client --connect $VIP:80 -n 1600)
read -r hit a b _ < <(count "$out")
log "160 endpoints: $hit hit; ma-a $a, ma-b $b; failed $(jget "$out" failed)"
expect_eq "failed" "$(jget "$out" failed)" 0
expect_range "endpoints that got a connection" "$hit" 150 160
expect_range "connections to ma-a's 100 endpoints (of 1600)" "$a" 900 1100

# --- 2. every third endpoint ejected (index 0 mod 3)
for i in $(seq 0 3 159); do "$MESHCTL" backend eject "${EPS[$i]}" >&2 || fail "backend eject ${EPS[$i]}"; done
out=$(probe client --connect $VIP:80 -n 600)
read -r hit a b ej r1 r2 < <(count "$out")
log "54 of 160 ejected: $hit endpoints hit, $ej connections to ejected ones, $r1 and $r2 to the other two thirds; failed $(jget "$out" failed)"
expect_eq "failed (ejections)" "$(jget "$out" failed)" 0
expect_eq "connections to ejected endpoints (66 % healthy: no panic)" "$ej" 0
# The ejected entry's share goes to both others alike: 300 +- 12 each (400 and
# 200 if it all went to the next entry).
expect_range "connections to the endpoints of index 1 mod 3" "$r1" 245 355
expect_range "connections to the endpoints of index 2 mod 3" "$r2" 245 355
for i in $(seq 0 3 159); do "$MESHCTL" backend uneject "${EPS[$i]}" >&2 || fail "backend uneject ${EPS[$i]}"; done

# --- 3. weighted subsets of unequal size: 25 % to v1 (100 endpoints), 75 % to
# v2 (60). Weighing by endpoints instead would give v2 64 %.
apply <<YAML
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: ma
  namespace: $NS
spec:
  hosts:
  - $HOST
  tcp:
  - route:
    - destination:
        host: $HOST
        subset: v1
      weight: 25
    - destination:
        host: $HOST
        subset: v2
      weight: 75
YAML
out=$(probe client --connect $VIP:80 -n 1000)
read -r hit a b _ < <(count "$out")
log "25/75 over 100/60 endpoints: v1 (ma-a) $a, v2 (ma-b) $b of 1000; $hit endpoints hit"
expect_eq "failed (weights)" "$(jget "$out" failed)" 0
# 750 +- 14 expected; 640 if weighed by endpoint count
expect_range "connections to v2 (75 %)" "$b" 690 810

# --- 4. one maxConnections budget for the subset's three entries (no route:
# the whole service, 160 endpoints)
"$MESHCTL" delete virtualservice ma -n $NS >&2 || fail "meshctl delete virtualservice ma"
apply <<YAML
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: ma
  namespace: $NS
spec:
  host: $HOST
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 40
YAML
hold_start client "$T_TMP/hold.json" --connect $VIP:80 -n 40 --concurrency 40
held=$(grep '"phase":"open"' "$T_TMP/hold.json")
expect_eq "held connections (limit 40 over 3 entries)" "$(jget "$held" ok)" 40
out=$(probe client --connect $VIP:80 -n 1 --timeout-ms 2000)
log "41st connection: $out"
expect_eq "41st refused with ECONNREFUSED (each entry's own budget would take 120)" \
  "$(jget "$out" errors.ECONNREFUSED 0)" 1
hold_finish "$T_TMP/hold.json" >/dev/null
