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
#      v2: 60 in one) split 25/75 by weight, not by endpoint count.
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

endpoints_yaml() {
  local i
  for i in $(seq 0 99); do
    printf '  - address: %s\n    ports:\n      tcp-ma: %d\n    labels:\n      version: v1\n' "$A" $((BASE + i))
  done
  for i in $(seq 0 59); do
    printf '  - address: %s\n    ports:\n      tcp-ma: %d\n    labels:\n      version: v2\n' "$B" $((BASE + i))
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

# count OUT: "hit a b ejected_hits rest1 rest2" from bm-probe's by_id
# ("ma-a:PORT": n): endpoints hit, connections to ma-a and ma-b, to the
# endpoints named in EJ ("ID:PORT", space-separated), and to the endpoints of
# index 1 and 2 modulo 3 (in the order of EPS).
count() {
  python3 - "$1" "${EJ:-}" $BASE <<'EOF'
import json, sys
by = json.loads(sys.argv[1].strip().splitlines()[-1]).get("by_id", {})
ej, base = set(sys.argv[2].split()), int(sys.argv[3])
def index(k):
    pod, port = k.rsplit(":", 1)
    return int(port) - base + (100 if pod == "ma-b" else 0)
hit = sum(1 for v in by.values() if v > 0)
a = sum(v for k, v in by.items() if k.startswith("ma-a:"))
b = sum(v for k, v in by.items() if k.startswith("ma-b:"))
rest = [sum(v for k, v in by.items() if index(k) % 3 == r) for r in (1, 2)]
print(hit, a, b, sum(v for k, v in by.items() if k in ej), *rest)
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

# --- 2. every third endpoint ejected
EJ=""
for i in $(seq 0 3 159); do
  "$MESHCTL" backend eject "${EPS[$i]}" >&2 || fail "backend eject ${EPS[$i]}"
  if [ "$i" -lt 100 ]; then EJ+=" ma-a:$((BASE + i))"; else EJ+=" ma-b:$((BASE + i - 100))"; fi
done
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
EJ=""

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
