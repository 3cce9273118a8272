#!/usr/bin/env bash
# `meshctl stat` (cli/stat.c) against real L7 traffic at a known rate: a
# client on node1 sends RATE requests/s (bm-hget --rate, bounded in count and
# time) to an L7 service (protocol HTTP + a VirtualService with a timeout,
# retries off) backed by one bm-httpsrv pod on each node, both told to
# answer FAIL_PCT % of the requests with 503. Then:
#   - `meshctl stat services -n NS -o json`: the service's row has
#     requests_per_second within 30 % of RATE, success_rate within 5 points
#     of 100 - FAIL_PCT, p50 and p99 numbers (p50 <= p99), the client's view
#     (reporter http "source"), nodes all ok;
#   - `meshctl stat workloads -n NS -o json`: a row per backend workload,
#     their rates summing to RATE within 30 %, their success rates together
#     (weighted by requests) within 5 points, each within 10 (each has only
#     half of the requests, and the failures are random draws: at 625
#     requests one standard deviation is 1.6 points);
#   - `meshctl stat service/NAME -n NS` (table): lists the service by its host
#     with an rps and a percentage;
#   - after the traffic stopped: the row is gone or has no requests.
. "$(dirname "$0")/lib.sh"
sandbox_wait_free
t_begin --nodes 2

NS=stat46 PORT=80 TPORT=8080 RATE=250 FAIL_PCT=20 WINDOW=5
HOST=shop.$NS.svc.cluster.local VIP=198.19.46.1
pod shop-a node1 $NS app=shop,version=v1
pod shop-b node2 $NS app=shop,version=v1
pod cli46 node1 $NS app=cli46
hsrv shop-a shop-a $TPORT --fail-pct $FAIL_PCT
hsrv shop-b shop-b $TPORT --fail-pct $FAIL_PCT
apply <<YAML
$(l7_service_yaml shop $NS $HOST $VIP $PORT $TPORT shop)
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: shop
  namespace: $NS
spec:
  hosts:
  - $HOST
  http:
  - route:
    - destination:
        host: $HOST
    timeout: 10s
    retries:
      attempts: 0
YAML

# The path is the L7 one before the load starts (meshd counts requests).
r=$(hget cli46 -n 20 --timeout-ms 3000 http://$VIP/warm)
expect_eq "warm-up requests answered" $(( $(jget "$r" status.200 0) + $(jget "$r" status.503 0) )) 20

# Background load: RATE req/s for at most LOAD_S seconds (bounded twice: the
# request count and timeout(1)), killed by the cleanup trap if still running.
LOAD_S=30
"$SANDBOX" exec cli46 -- timeout $((LOAD_S + 10)) "$HGET" -n $((RATE * LOAD_S)) -c 4 --rate $RATE \
  --timeout-ms 3000 http://$VIP/load >"$T_TMP/load.json" 2>"$T_TMP/load.err" &
LOAD_PID=$!
T_BG_PIDS+=("$LOAD_PID")
t_load=$(date +%s)
sleep 1.5   # past the first second of the load and into the window

# stat_json ARGS...: meshctl stat ... -o json (exit status checked).
stat_json() {
  local out
  out=$("$MESHCTL" stat "$@" --window $WINDOW -o json 2>"$T_TMP/stat.err") ||
    { cat "$T_TMP/stat.err" >&2; echo "$out" >&2; fail "meshctl stat $* -o json failed"; }
  echo "$out" | tr -d '\n'
  echo
}

# check_rows JSON WHAT: judges the rows; prints one summary line per row.
check_rows() {
  python3 - "$1" "$2" "$RATE" "$FAIL_PCT" "$HOST" <<'EOF'
import json, sys
doc, what, rate, fail_pct, host = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def bad(msg):
    print("FAIL: %s: %s" % (what, msg)); sys.exit(1)
if not doc.get("ok"):
    bad("ok is not true: %s" % doc.get("error"))
if not doc.get("nodes") or not all(n.get("ok") for n in doc["nodes"]) or len(doc["nodes"]) != 2:
    bad("nodes: %s" % doc.get("nodes"))
rows = doc.get("rows") or []
if what == "services":
    rows = [r for r in rows if r["name"] == host]
    if len(rows) != 1:
        bad("want one row for %s, got %s" % (host, [r["name"] for r in doc.get("rows") or []]))
    want = {"": rate}
else:
    rows = [r for r in rows if r["name"] in ("shop-a", "shop-b")]
    if sorted(r["name"] for r in rows) != ["shop-a", "shop-b"]:
        bad("want rows shop-a and shop-b, got %s" % [r["name"] for r in doc.get("rows") or []])
total = 0.0
for r in rows:
    rps, sr, lat = r["requests_per_second"], r["success_rate"], r["latency_ms"]
    print("%s: %s rps %.1f, success %.2f%%, p50 %s p95 %s p99 %s ms, requests %s, reporter %s"
          % (what, r["name"], rps or 0, 100 * (sr or 0), lat["p50"], lat["p95"], lat["p99"],
             r["requests"], r["reporter"]["http"]))
    if rps is None or sr is None:
        bad("%s: no requests_per_second / success_rate" % r["name"])
    tol = 5 if what == "services" else 10
    if abs(100 * sr - (100 - fail_pct)) > tol:
        bad("%s: success rate %.2f%%, want %.0f%% +- %d points" % (r["name"], 100 * sr, 100 - fail_pct, tol))
    for k in ("p50", "p99"):
        if not isinstance(lat[k], (int, float)) or lat[k] < 0:
            bad("%s: latency %s is %r" % (r["name"], k, lat[k]))
    if lat["p50"] > lat["p99"]:
        bad("%s: p50 %s > p99 %s" % (r["name"], lat["p50"], lat["p99"]))
    if r["reporter"]["http"] != "source":
        bad("%s: http reporter %r, want source (no destination-side L7 here)" % (r["name"], r["reporter"]["http"]))
    total += rps
n = sum(r["requests"] for r in rows)
ok = sum(r["requests"] * r["success_rate"] for r in rows) / n if n else 0
if abs(100 * ok - (100 - fail_pct)) > 5:
    bad("success rate over the rows %.2f%%, want %.0f%% +- 5 points" % (100 * ok, 100 - fail_pct))
if abs(total - rate) > 0.3 * rate:
    bad("requests_per_second %.1f (sum over rows), want %.0f +- 30%%" % (total, rate))
EOF
}

svc=$(stat_json services -n $NS)
check_rows "$svc" services >"$T_TMP/check.out" || { cat "$T_TMP/check.out" >&2; echo "$svc" >&2; fail "$(grep '^FAIL: ' "$T_TMP/check.out" | sed 's/^FAIL: //')"; }
while read -r l; do log "ok: $l"; done <"$T_TMP/check.out"

wl=$(stat_json workloads -n $NS)
check_rows "$wl" workloads >"$T_TMP/check.out" || { cat "$T_TMP/check.out" >&2; echo "$wl" >&2; fail "$(grep '^FAIL: ' "$T_TMP/check.out" | sed 's/^FAIL: //')"; }
while read -r l; do log "ok: $l"; done <"$T_TMP/check.out"

tab=$("$MESHCTL" stat service/shop -n $NS --window 2 2>&1) || { echo "$tab" >&2; fail "meshctl stat service/shop (table) failed"; }
echo "$tab" >&2
head -n1 <<<"$tab" | grep -q '^NAME  *SUCCESS  *RPS  *LATENCY_P50  *LATENCY_P95  *LATENCY_P99 ' ||
  fail "table header: $(head -n1 <<<"$tab")"
grep -Eq "^$HOST +[0-9.]+% +[0-9.]+rps +[0-9.]+m?s " <<<"$tab" || fail "the table does not list $HOST with a success rate and rps"
log "ok: the table lists $HOST"
[ $(( $(date +%s) - t_load )) -lt $LOAD_S ] || fail "the checks outlasted the load (${LOAD_S}s): rates measured without it"

# Stop the load (LOAD_PID is timeout(1), which passes SIGTERM on to bm-hget),
# then the service has no requests in the window.
kill "$LOAD_PID" 2>/dev/null || true
for _ in $(seq 50); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LOAD_PID" 2>/dev/null && fail "the background bm-hget did not stop"
log "load stopped after $(( $(date +%s) - t_load ))s"
sleep 0.5
idle=$(stat_json services -n $NS)
python3 - "$idle" "$HOST" <<'EOF' || fail "after the load: $HOST still has requests: $idle"
import json, sys
d = json.loads(sys.argv[1])
rows = [r for r in d.get("rows") or [] if r["name"] == sys.argv[2]]
sys.exit(0 if not rows or not rows[0]["requests"] else 1)
EOF
log "ok: no requests for $HOST once the load stopped"
