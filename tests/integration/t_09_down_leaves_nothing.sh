#!/usr/bin/env bash
# (i) sandbox down leaves nothing behind (netns, cgroup, pins, veths, /etc/netns,
# run dirs, meshd or test processes, WorkloadEntries), also after a partial up,
# and is idempotent.
. "$(dirname "$0")/lib.sh"

CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
leftovers() {
  ip netns list | awk '{print $1}' | grep -E '^(bm-hub|bmn-|bmp-)' | sed 's/^/netns /'
  [ -e "$CG2/bpfmesh" ] && echo "cgroup $CG2/bpfmesh"
  [ -e /sys/fs/bpf/bpfmesh ] && echo "pins /sys/fs/bpf/bpfmesh"
  ls -d /etc/netns/bmp-* 2>/dev/null | sed 's/^/dir /'
  ls -d "$BPFMESH_RUN"/node* "$BPFMESH_RUN"/sandbox 2>/dev/null | sed 's/^/dir /'
  ip -o link show type veth | awk -F': ' '{print $2}' | grep -E '^(hn[0-9]+|vp[0-9]+)(@|$)' | sed 's/^/veth /'
  pgrep -f "$BUILD/(meshd|tools/bm-testsrv|tools/bm-probe)" | sed 's/^/process /'
  # cgroup links of meshd that outlived their cgroup would show up here
  bpftool cgroup tree 2>/dev/null | grep bpfmesh | sed 's/^/attached /'
  true
}

before=$(leftovers)
[ -z "$before" ] || fail "host not clean before the test: $before"
t_begin --nodes 3
pod td-a node1 test app=td
pod td-b node3 test app=td
pod client node2 default
server td-a td-a 9700
server td-b td-b 9700
service_yaml td test td.test.svc.cluster.local 198.19.9.90 9700 9700 td | apply
hold_start client "$T_TMP/hold.json" --connect 198.19.9.90:9700 -n 10

"$SANDBOX" down
wait "${T_BG_PIDS[@]}" 2>/dev/null || true
left=$(leftovers)
[ -z "$left" ] || fail "left behind after down: $(echo $left)"
wes=$("$MESHCTL" get workloadentry -A -o json 2>/dev/null || true)
python3 - "$wes" <<'PY' || fail "WorkloadEntries left in the store after down: $wes"
import json, sys
s = sys.argv[1].strip()
if not s: sys.exit(0)
d = json.loads(s)
items = d.get("items", d) if isinstance(d, dict) else d
sys.exit(1 if items else 0)
PY
log "ok: nothing left after down"

"$SANDBOX" down || fail "second down failed"
log "ok: down is idempotent"

# A partial up: a hub and a node namespace, a node cgroup, a pin dir, and state.
ip netns add bm-hub
ip netns add bmn-node1
mkdir -p "$CG2/bpfmesh/node1/pods/x" /etc/netns/bmp-x
mount | grep -q ' /sys/fs/bpf type bpf' && mkdir -p /sys/fs/bpf/bpfmesh/node1
"$SANDBOX" down || fail "down after a partial up failed"
left=$(leftovers)
[ -z "$left" ] || fail "left behind after down of a partial up: $(echo $left)"
log "ok: down cleans a partial up"
