#!/usr/bin/env bash
# meshd out of file descriptors: connections captured to its listeners while
# it cannot accept them are taken off the queue and reset (a spare fd kept for
# that), instead of the level-triggered listener waking the workers in a
# busy loop; once descriptors are back, requests work again.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 1

NS=fd48 PORT=9080 TPORT=8080
pod srv48 node1 $NS app=fdsvc
pod cli48 node1 $NS
hsrv srv48 srv48 $TPORT
apply <<YAML
$(l7_service_yaml fdsvc $NS fdsvc.$NS.svc.cluster.local 198.19.48.1 $PORT $TPORT fdsvc)
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: fdsvc
  namespace: $NS
spec:
  hosts:
  - fdsvc
  http:
  - timeout: 5s
    route:
    - destination:
        host: fdsvc
YAML
URL=http://198.19.48.1:$PORT/
r=$(hget cli48 -n 5 $URL)
expect_eq "requests before" "$(jget "$r" ok 0)" 5
PID=$(cat "$BPFMESH_RUN/sandbox/meshd-node1.pid")
open_fds=$(ls /proc/$PID/fd | wc -l)
read -r soft hard < <(awk '/^Max open files/ { print $4, $5 }' /proc/$PID/limits)
# Only the soft limit moves: raising a hard limit again may need a
# capability this machine's root lacks.
prlimit --pid "$PID" --nofile=$((open_fds + 8)):"$hard" || fail "prlimit"
log "meshd $PID: $open_fds fds open, soft limit $soft -> $((open_fds + 8))"
cpu() { awk '{ print $14 + $15 }' /proc/$PID/stat; }
"$SANDBOX" exec cli48 -- python3 -c '
import socket, time
s = []
for i in range(60):
    try:
        c = socket.create_connection(("198.19.48.1", '$PORT'), timeout=2)
        s.append(c)
    except OSError:
        pass
time.sleep(8)
' &
HOLD=$!
T_BG_PIDS+=($HOLD)
sleep 1
c0=$(cpu)
sleep 2
c1=$(cpu)
wait $HOLD 2>/dev/null || true
prlimit --pid "$PID" --nofile="$soft":"$hard" || fail "prlimit restore"
ticks=$((c1 - c0))
log "meshd CPU while out of descriptors: $ticks ticks in 2 s (a busy loop would be ~200)"
[ "$ticks" -lt 60 ] || fail "meshd spins while out of file descriptors: $ticks ticks in 2 s"
grep -q out_of_file_descriptors <<<"$("$MESHCTL" status -o json 2>/dev/null; "$MESHCTL" stats -o json 2>/dev/null)" ||
  fail "refusals not counted as out_of_file_descriptors"
log "ok: refusals counted as out_of_file_descriptors"
r=$(hget cli48 -n 5 $URL)
expect_eq "requests after descriptors are back" "$(jget "$r" ok 0)" 5
