#!/usr/bin/env bash
# The store -> data plane path is fast: meshd applies a change within 100 ms.
# Measured without polling noise: the store's generation file is renamed in
# at the write (its mtime), and each meshd logs "generation N applied" after
# the maps hold the change. 10 weight changes on 2 nodes; every one of the 20
# (node, change) pairs must be under 100 ms. Then traffic confirms the last
# change is what the kernel uses.
. "$(dirname "$0")/lib.sh"
t_begin --nodes 2

HOST=lat.test.svc.cluster.local VIP=198.19.10.10
pod lat-a node2 test app=lat,version=a
pod lat-b node2 test app=lat,version=b
pod client node1 default
server lat-a lat-a 7000
server lat-b lat-b 7000

split() { # WEIGHT_A WEIGHT_B
  cat <<YAML
$(service_yaml lat test $HOST $VIP 7000 7000 lat)
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: lat, namespace: test}
spec:
  host: $HOST
  subsets:
  - {name: a, labels: {version: a}}
  - {name: b, labels: {version: b}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: lat, namespace: test}
spec:
  hosts: [$HOST]
  tcp:
  - route:
    - {destination: {host: $HOST, subset: a}, weight: $1}
    - {destination: {host: $HOST, subset: b}, weight: $2}
YAML
}

split 50 50 | apply
STORE_DIR=${BPFMESH_STORE#file://}
: >"$T_TMP/lat"
for i in $(seq 1 10); do
  split $((i * 9)) $((100 - i * 9)) | apply
  gen=$(cat "$STORE_DIR/generation")
  written=$(python3 -c 'import os,sys; print(os.stat(sys.argv[1]).st_mtime_ns // 1000000)' "$STORE_DIR/generation")
  for node in node1 node2; do
    line=$(grep "generation $gen applied" "$BPFMESH_RUN/sandbox/meshd-$node.log" | tail -1)
    [ -n "$line" ] || fail "$node never logged generation $gen"
    applied=$(python3 -c '
import sys, datetime
ts = sys.argv[1].split()[0].rstrip("Z")
d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
print(int(d.timestamp() * 1000))' "$line")
    echo "$node $gen $((applied - written))" >>"$T_TMP/lat"
  done
done
log "apply -> data plane, ms (node generation latency):"
cat "$T_TMP/lat" >&2
max=$(awk '{ if ($3 > m) m = $3 } END { print m + 0 }' "$T_TMP/lat")
med=$(awk '{ print $3 }' "$T_TMP/lat" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
log "median ${med} ms, max ${max} ms over $(wc -l <"$T_TMP/lat") applies"
expect_range "slowest apply -> data plane (ms)" "$max" -5 100

# The last change (90/10) is what connections get.
out=$(probe client --connect $VIP:7000 -n 1000)
log "after the last change: $out"
expect_eq "failed" "$(jget "$out" failed)" 0
expect_range "lat-a share of 1000 (90 %)" "$(jget "$out" by_id.lat-a 0)" 860 940
