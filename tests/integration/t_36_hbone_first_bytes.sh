#!/usr/bin/env bash
# Issues 3 and 6: a new HBONE stream's first bytes and its 200, with real
# traffic across nodes. A mesh client on node1 connects through a VIP and
# sends its request at once; the app on node2 reads it and answers 4 s
# later. The request leaves with the CONNECT, and node2's meshd holds its 200
# for the app's answer; the worker tick (1 s) must release that 200 while the
# app is still silent: node1 has counted the 200 before the answer comes.
# Then the answer arrives intact and the stream ends cleanly on both sides.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=hb36 HOST=late36.hb36.svc.cluster.local VIP=198.19.36.36 PORT=7360 TPORT=9360
mesh_pod late36 node2 $NS server app=late36
mesh_pod cli36 node1 $NS client
wait_mesh_pod node2 $NS/late36
wait_mesh_pod node1 $NS/cli36
# The app: reads one request, answers 4 s later, closes.
"$SANDBOX" exec late36 -- python3 - $TPORT 2>>"$T_TMP/srv-late36.log" <<'PY' &
import socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", int(sys.argv[1])))
l.listen(8)
while True:
    c, _ = l.accept()
    data = c.recv(4096)
    time.sleep(4)
    c.sendall(b"late:" + data)
    c.close()
PY
T_BG_PIDS+=($!)
wait_listen late36 $TPORT
apply <<YAML
$(service_yaml late36 $NS $HOST $VIP $PORT $TPORT late36)
YAML

n1_before=$(proxy_stats node1) n2_before=$(proxy_stats node2)
OUT=$T_TMP/client.json
"$SANDBOX" exec cli36 -- python3 - $VIP $PORT >"$OUT" 2>&1 <<'PY' &
import json, socket, sys, time
r = {"reply": "", "elapsed": 0, "error": ""}
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
    t0 = time.monotonic()
    s.sendall(b"hello36\n")
    buf = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    r["reply"] = buf.decode(errors="replace")
    r["elapsed"] = round(time.monotonic() - t0, 3)
except Exception as e:
    r["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(r))
PY
CLI=$!
# The app answers 4 s after the request; the held 200 goes at the first
# tick, at most 1 s after it was held. 2.5 s leaves room both ways (the
# client's python starts in well under a second).
sleep 2.5
n1_mid=$(proxy_stats node1)
d200_mid=$(pdelta "$n1_mid" "$n1_before" hbone.status.200)
wait "$CLI" || true
out=$(cat "$OUT")
log "client: $out; node1 had counted $d200_mid 200 after 2.5 s"
expect_eq "client error" "$(jget "$out" error)" ""
expect_eq "answer through the tunnel" "$(jget "$out" reply)" "late:hello36"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 3.9 else 1)" "$(jget "$out" elapsed 0)" ||
  fail "the answer came after $(jget "$out" elapsed) s: the app waits 4 s"
expect_eq "200s node1 saw while the app was silent (the tick released the held 200)" "$d200_mid" 1
sleep 0.3
n1_after=$(proxy_stats node1) n2_after=$(proxy_stats node2)
d_out=$(pdelta "$n1_after" "$n1_before" connections.outbound_hbone.ok)
d_in=$(pdelta "$n2_after" "$n2_before" connections.inbound_hbone.ok)
d_rst=$(( $(pdelta "$n1_after" "$n1_before" hbone.streams_reset) +
          $(pdelta "$n2_after" "$n2_before" hbone.streams_reset) ))
log "node1 outbound_hbone.ok +$d_out, node2 inbound_hbone.ok +$d_in, streams reset +$d_rst"
expect_eq "node1 outbound HBONE connections ok" "$d_out" 1
expect_eq "node2 inbound HBONE connections ok" "$d_in" 1
expect_eq "streams reset" "$d_rst" 0
log "ok: the request went with the CONNECT, the held 200 went at the tick, the late answer arrived"
