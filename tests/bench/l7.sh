#!/usr/bin/env bash
# tests/bench/l7.sh: bpfmesh's L7 path (meshd parses and routes every request)
# against the kernel L4 path and against the sidecar model with the same
# policy, on the same machine, in the same run. A benchmark, not a test: it
# reports, it does not judge.
#
# Client pod on node1, server pods on node2, all plaintext (no ambient label):
# the difference between the scenarios is the HTTP processing, not TLS.
# Servers: bm-testsrv --http-port 8080 (HTTP/1.1, 1 KB body), one pod "v1"
# (gets the load) and one pod "v2" (gets the canary requests) per model.
#   l4       kernel L4 path: ServiceEntry VIP, port protocol TCP, a
#            VirtualService with only a weighted tcp route (100% subset v1):
#            cgroup/connect4 picks the backend, no proxy in the path
#   l7       the same backends behind a VIP whose port is protocol HTTP and
#            whose VirtualService has L7 policy: header match
#            x-canary: "true" -> subset v2, else subset v1, both with
#            retries {attempts: 2, retryOn: 5xx} and timeout 5s. The connect
#            is captured into node1's meshd, which parses every request,
#            routes it and keeps upstream keep-alive pools
#   sidecar  the sidecar model with the same policy, HAProxy in HTTP mode
#            (2 threads each, like Istio's concurrency 2): in the client pod
#            on 127.0.0.1:16001 (not Istio's 15001: meshd listens on
#            127.0.0.1:15001 in every pod, mesh or not, for the L7
#            capture) (ACL on x-canary -> backend v2 else v1,
#            retries 2, retry-on 5xx + connection failures, timeout server
#            5s, keep-alive and connection reuse to the server) and in the
#            server pod on :15006 in front of the app on 127.0.0.1:8080.
#            No TLS (the L7 scenario is plaintext too).
# Workloads: sat  saturation, wrk -t1 -c16 keep-alive
#            r1k  1,000 req/s on 4 keep-alive connections (bm-load, open loop)
#            scrape  the cost of being scraped (issue 5: "scraping every
#                 second under load changes p99 latency by less than 2%"):
#                 l7 only, 2,000 req/s on 4 keep-alive connections (bm-load)
#                 for BENCH_SCRAPE_SECONDS, run twice per round, in rotated
#                 order: "l7" without scraping and "l7-scraped" with a scraper
#                 in the hub netns (as Prometheus is in t_81) fetching both
#                 nodes' http://198.19.255.<i>:15020/metrics every second
#                 (one bm-scrape process for the run, bounded) during every
#                 other BENCH_SCRAPE_PERIOD-second window of CLOCK_MONOTONIC
#                 (the even ones in odd rounds, the odd ones in even rounds)
#                 and never in the others. bm-load reports the requests
#                 scheduled in even and odd windows apart, so the scraped
#                 windows are compared with quiet windows of the same run,
#                 interleaved every few seconds (the machine's drift falls on
#                 both); the "l7" run, split the same way with no scraper,
#                 shows the split's own noise. The goal is judged window by
#                 window: each scraped window's p99 against the quiet
#                 windows just before and after it, the median over all
#                 rounds with a confidence interval from resampling rounds
#                 (the control gives the same with nobody scraping); all
#                 rounds' requests pooled are shown too. A second estimator
#                 works request by request (bm-load --trace-out, the
#                 scraper's start times): the p99 of the scraped windows'
#                 requests against the p99 of the same requests less those
#                 in flight during a scrape or within a guard after it
#                 (BENCH_EXPOSURE_GUARDS ms), all rounds pooled; the control
#                 gets virtual scrapes at the same moments. The meshd CPU of
#                 the pair shows what the scrapes cost; l7-scrape.txt has
#                 each fetch's node, status, size and time,
#                 l7-scrape-windows.txt the percentiles per side and round,
#                 l7-scrape-perwindow.txt per window, l7-scrape-hist.txt
#                 every latency, l7-scrape-exposure.txt the exposure
#                 estimator's latency tables, l7-scrape-traces.tar.gz every
#                 request's due time and latency (exposure.py reads them).
# Per run: req/s, p50/p90/p99, errors (socket errors + non-2xx), CPU seconds
# of the mesh processes (both meshds for l4 and l7; for sidecar the client
# HAProxy and the v1 server HAProxy, the two in the path), req/s per core
# (requests / mesh CPU seconds = req/s / (CPU s / elapsed s)), and meshd's
# HTTP counters (requests, status classes, retries) before and after, which
# show which path a run took. Rounds interleave the scenarios; each round
# has its own sandbox (up for about a minute) and first checks that every
# scenario takes the path it claims (canary header -> v2, meshd counts the
# l7 requests and none of the l4 ones).
#
# Exit 75: someone else took the sandbox down mid-round too many times.
# Output in $RESULTS (default build/bench/): l7.md (report), l7-raw.txt,
# l7-checks.txt, l7-threads.txt (CPU per thread of the mesh processes), l7-proxy-stats.json,
# l7-scrape.txt (the scrapes of the scrape workload), l7-scrape-windows.txt and
# l7-scrape-hist.txt (its scraped and quiet windows).
#
# Env: BENCH_ROUNDS (3, at most 40), BENCH_SECONDS (4), BENCH_RETRIES (3), BENCH_CONNS (16),
#      BENCH_L7_WORKLOADS ("sat r1k scrape"), BENCH_L7_SCENARIOS ("l4 l7 sidecar"),
#      BENCH_SCRAPE_SECONDS (20, per run of the scrape workload), BENCH_SCRAPE_RATE
#      (2000 req/s), BENCH_SCRAPE_PERIOD (1: seconds per window, scraped and quiet
#      windows alternate; shorter windows give more of them per run), BENCH_SCRAPER_NICE (19: the scraper's nice value, see
#      SCRAPER_NICE), BENCH_SCRAPE_GZIP (1: ask for gzip as Prometheus does; 0: plain
#      text, see SCRAPE_GZIP), BENCH_SCRAPE_URLS (what the scraper fetches; default both
#      nodes' /metrics: "http://198.19.255.2:15020/metrics" alone scrapes only the
#      node that is not in the request path), BENCH_EXPOSURE_GUARDS ("0 20 100":
#      ms after a scrape that still count as exposed to it), BENCH_EXPOSURE_GUARD
#      (20: the one the goal is judged on), BENCH_WAIT (600: seconds to wait for
#      another user's sandbox to go).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BPFMESH_BUILD:-$ROOT/build}
RESULTS=${RESULTS:-$BUILD/bench}
SANDBOX=$ROOT/scripts/sandbox
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-4}
RETRIES=${BENCH_RETRIES:-3}
CONNS=${BENCH_CONNS:-16}
WORKLOADS=${BENCH_L7_WORKLOADS:-sat r1k scrape}
SCENARIOS=${BENCH_L7_SCENARIOS:-l4 l7 sidecar}
SCRAPE_SECS=${BENCH_SCRAPE_SECONDS:-20}
SCRAPE_PERIOD=${BENCH_SCRAPE_PERIOD:-1}
# Guards of the exposure estimator (ms after each scrape during which a
# request still counts as exposed to it) and the one the goal is judged on:
# 20 ms is ten times a typical scrape and twice the longest seen, time for
# what queued behind a scrape to drain; 100 ms shows whether anything lasts.
EXPOSURE_GUARDS=${BENCH_EXPOSURE_GUARDS:-0 20 100}
EXPOSURE_GUARD=${BENCH_EXPOSURE_GUARD:-20}
# The scraper stands in for a Prometheus on another host: its own CPU is not
# the scraped node's cost, but on 2 vCPUs it competes with the data path, so
# it is small (bm-scrape) and runs at nice 19 unless told.
SCRAPER_NICE=${BENCH_SCRAPER_NICE:-19}
# 1: the scraper asks for gzip (Accept-Encoding: gzip), as Prometheus does on
# every scrape, and meshd answers compressed; 0: it asks for nothing and gets
# the plain text (runs 1-7 of docs/performance.md §4 were made so). Either
# way it does not decompress: a remote Prometheus would, on its own host.
SCRAPE_GZIP=${BENCH_SCRAPE_GZIP:-1}
SCRAPE_RATE=${BENCH_SCRAPE_RATE:-2000}
# The scraper sits in the hub netns with this address on the nodes' /24 (as
# t_81's Prometheus does); meshd serves /metrics on 198.19.255.<i>:15020.
HUB_ADDR=198.19.255.254
METRICS_URLS=${BENCH_SCRAPE_URLS:-http://198.19.255.1:15020/metrics http://198.19.255.2:15020/metrics}
WAIT=${BENCH_WAIT:-600}
VIP_L4=198.19.11.10
VIP_L7=198.19.11.20
RUN_DIR=${BPFMESH_RUN:-/run/bpfmesh}
LOAD=$BUILD/bench/bm-load SCRAPER=$BUILD/bench/bm-scrape
HGET=$BUILD/tools/bm-hget

log() { echo "l7.sh: $*" >&2; }
die() { echo "l7.sh: $*" >&2; exit 1; }

for b in "$BUILD/meshd" "$BUILD/meshctl" "$BUILD/tools/bm-testsrv" "$HGET"; do
  [ -x "$b" ] || die "$b missing (run make)"
done
for c in wrk haproxy curl python3; do
  command -v $c >/dev/null || die "$c missing (make deps / scripts/deps.sh)"
done
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 40 ] && [ "$SECS" -ge 1 ] && [ "$SECS" -le 60 ] ||
  die "BENCH_ROUNDS 1..40, BENCH_SECONDS 1..60"
[[ "$EXPOSURE_GUARDS" =~ ^[0-9]{1,4}( [0-9]{1,4})*$ ]] || die "BENCH_EXPOSURE_GUARDS: ms values, e.g. \"0 20 100\""
[[ " $EXPOSURE_GUARDS " == *" $EXPOSURE_GUARD "* ]] || die "BENCH_EXPOSURE_GUARD ($EXPOSURE_GUARD) must be one of BENCH_EXPOSURE_GUARDS ($EXPOSURE_GUARDS)"
case $SCRAPE_GZIP in 0|1) ;; *) die "BENCH_SCRAPE_GZIP 0 or 1" ;; esac
[ "$SCRAPE_SECS" -ge 2 ] && [ "$SCRAPE_SECS" -le 60 ] && [ "$SCRAPE_RATE" -ge 100 ] && [ "$SCRAPE_RATE" -le 20000 ] ||
  die "BENCH_SCRAPE_SECONDS 2..60, BENCH_SCRAPE_RATE 100..20000"
for w in $WORKLOADS; do case $w in sat|r1k|scrape) ;; *) die "unknown workload $w (sat r1k scrape)" ;; esac; done
# scrape compares l7 with itself scraped: only with the l7 scenario (whose path is checked).
if [[ " $WORKLOADS " == *" scrape "* ]] && [[ " $SCENARIOS " != *" l7 "* ]]; then
  log "workload scrape needs scenario l7: skipped"
  WORKLOADS=$(tr ' ' '\n' <<<"$WORKLOADS" | grep -vx scrape | tr '\n' ' ')
fi
for s in $SCENARIOS; do case $s in l4|l7|sidecar) ;; *) die "unknown scenario $s (l4 l7 sidecar)" ;; esac; done
mkdir -p "$BUILD/bench" "$RESULTS"

# One sandbox per machine: never take down someone else's (lib.sh), one
# sandbox per round, a round interrupted by someone else runs again.
TMP=$(mktemp -d /tmp/bpfmesh-bench.XXXXXX)
export BPFMESH_RUN=$RUN_DIR
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"
bench_build_tool bm-load "$LOAD" || die "cannot build bm-load"
bench_build_tool bm-scrape "$SCRAPER" || die "cannot build bm-scrape"
OURS=0
BG_PIDS=()
SETUPS=0
MESHD1="" MESHD2=""
teardown() {
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ $OURS = 1 ] && bench_sandbox_down
  OURS=0
  for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  BG_PIDS=()
}
cleanup() {
  set +e
  teardown
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
sb() { "$SANDBOX" "$@"; }

# interrupted: our sandbox is gone or replaced (someone else's `sandbox down`
# removes pods first and the state last: look twice).
interrupted() {
  sleep 2
  ! bench_sandbox_ours || ! kill -0 "$MESHD1" 2>/dev/null || ! [ -e /run/netns/bmp-l7b-cli ]
}

# fail_or_75 MSG: during setup, a failure because someone else took our
# sandbox down is exit 75 (run.sh runs the script again), anything else dies.
fail_or_75() {
  if interrupted; then log "setup $SETUPS: the sandbox was taken down by someone else ($*)"; exit 75; fi
  die "$@"
}

# http_counters: meshd's HTTP counters summed over the nodes:
# "requests 2xx 5xx no_response other(1xx/3xx/4xx) retries timeouts upstream_connections"
http_counters() {
  { "$BUILD/meshctl" stats -o json 2>/dev/null || true; } | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    d = {}
t = [0] * 8
for n in d.get("nodes", []):
    h = ((n or {}).get("proxy") or {}).get("http") or {}
    for i, k in enumerate(("requests", "2xx", "5xx", "no_response")):
        t[i] += h.get(k, 0)
    t[4] += h.get("1xx", 0) + h.get("3xx", 0) + h.get("4xx", 0)
    for i, k in ((5, "retries"), (6, "timeouts"), (7, "upstream_connections")):
        t[i] += h.get(k, 0)
print(*t)'
}
# counters_delta "A..." "B...": B - A, field by field
counters_delta() {
  local -a a b; local i out=()
  read -ra a <<<"$1"; read -ra b <<<"$2"
  for i in "${!b[@]}"; do out+=($(( b[i] - ${a[i]:-0} ))); done
  echo "${out[*]}"
}

# hget_backends POD URL [HEADER]: "N_total backend=count,..." for 50 requests
hget_backends() {
  local pod=$1 url=$2; shift 2
  sb exec "$pod" -- timeout 20 "$HGET" -n 50 -c 2 --timeout-ms 3000 "$@" "$url" 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.loads(sys.stdin.read().strip().splitlines()[-1])
except Exception:
    print("0 unparsable"); sys.exit(0)
b = d.get("backend", {})
print(d.get("ok", 0), ",".join(f"{k}={v}" for k, v in sorted(b.items())) or "none")'
}

# setup: a fresh store and sandbox with every pod, server, service and sidecar,
# then a check that each scenario takes the path it claims.
setup() {
SETUPS=$((SETUPS + 1))
export BPFMESH_STORE=file://$TMP/store$SETUPS
mkdir -p "$TMP/store$SETUPS"
bench_sandbox_up "$WAIT" 2 || exit 1
OURS=1
# The binary the sandbox just started (others may rebuild build/ meanwhile:
# a run whose rounds used different meshds says so in the report).
local bin
bin="$(sha256sum "$BUILD/meshd" | cut -c1-12) built $(date -u -r "$BUILD/meshd" +%H:%M:%SZ)"
echo "setup $SETUPS: meshd $bin" >>"$CHECKS"
[ -z "${MESHD_BIN:-}" ] || [ "$MESHD_BIN" = "$bin" ] ||
  { log "WARNING: build/meshd changed during the run ($MESHD_BIN, now $bin)"
    echo "WARNING: build/meshd changed during the run: rounds used different binaries" >>"$CHECKS"; }
MESHD_BIN=$bin
sb pod add l7b-v1   --node node2 --namespace bench --labels app=web,version=v1 >/dev/null || fail_or_75 "pod add l7b-v1"
sb pod add l7b-v2   --node node2 --namespace bench --labels app=web,version=v2 >/dev/null || fail_or_75 "pod add l7b-v2"
sb pod add l7b-cli  --node node1 --namespace bench >/dev/null || fail_or_75 "pod add l7b-cli"
sb pod add l7b-sv1  --node node2 --namespace bench --labels app=side,version=v1 >/dev/null || fail_or_75 "pod add l7b-sv1"
sb pod add l7b-sv2  --node node2 --namespace bench --labels app=side,version=v2 >/dev/null || fail_or_75 "pod add l7b-sv2"
sb pod add l7b-scli --node node1 --namespace bench >/dev/null || fail_or_75 "pod add l7b-scli"
IP_SV1=$(sb ip l7b-sv1) && IP_SV2=$(sb ip l7b-sv2) || fail_or_75 "sandbox ip"
for p in v1 v2 sv1 sv2; do
  sb exec l7b-$p -- "$BUILD/tools/bm-testsrv" --id "$p" --http-port 8080 --body-bytes 1024 \
    2>"$TMP/srv-$p.log" &
  BG_PIDS+=($!)
done

"$BUILD/meshctl" apply -f - >/dev/null <<YAML || fail_or_75 "meshctl apply"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: web-l4, namespace: bench}
spec:
  hosts: [web-l4.bench.svc.cluster.local]
  addresses: [$VIP_L4]
  ports:
  - {number: 80, name: tcp-web, protocol: TCP, targetPort: 8080}
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: {app: web}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: web-l4, namespace: bench}
spec:
  host: web-l4.bench.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: web-l4, namespace: bench}
spec:
  hosts: [web-l4.bench.svc.cluster.local]
  tcp:
  - route:
    - destination: {host: web-l4.bench.svc.cluster.local, subset: v1}
      weight: 100
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: web, namespace: bench}
spec:
  hosts: [web.bench.svc.cluster.local]
  addresses: [$VIP_L7]
  ports:
  - {number: 80, name: http-web, protocol: HTTP, targetPort: 8080}
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: {app: web}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: web, namespace: bench}
spec:
  host: web.bench.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: web, namespace: bench}
spec:
  hosts: [web.bench.svc.cluster.local]
  http:
  - match:
    - headers:
        x-canary: {exact: "true"}
    route:
    - destination: {host: web.bench.svc.cluster.local, subset: v2}
    retries: {attempts: 2, retryOn: 5xx}
    timeout: 5s
  - route:
    - destination: {host: web.bench.svc.cluster.local, subset: v1}
    retries: {attempts: 2, retryOn: 5xx}
    timeout: 5s
YAML

# ---------------------------------------------------------------- sidecars
# HTTP mode, the same policy as the VirtualService. Istio's retryOn 5xx is
# "any 5xx, connect failure or reset": HAProxy 2.6 has no 5xx class, so the
# codes are listed. http-reuse always: Envoy pools upstream connections
# across downstream ones.
cat >"$TMP/cli.cfg" <<CFG
global
  nbthread 2
  maxconn 4000
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 120s
  timeout server 5s
  timeout http-keep-alive 120s
  retries 2
  retry-on conn-failure empty-response 500 501 502 503 504
frontend outbound
  bind 127.0.0.1:16001
  acl canary req.hdr(x-canary) -m str true
  use_backend v2 if canary
  default_backend v1
backend v1
  http-reuse always
  server v1 $IP_SV1:15006
backend v2
  http-reuse always
  server v2 $IP_SV2:15006
CFG
cat >"$TMP/srv.cfg" <<CFG
global
  nbthread 2
  maxconn 4000
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
frontend inbound
  bind 0.0.0.0:15006
  default_backend app
backend app
  http-reuse always
  server app 127.0.0.1:8080
CFG
for cf in cli srv; do
  haproxy -c -q -f "$TMP/$cf.cfg" || die "haproxy rejects $TMP/$cf.cfg"
done
# -db: foreground, no master process: one haproxy process per pod.
for p in sv1 sv2; do
  sb exec l7b-$p -- haproxy -db -f "$TMP/srv.cfg" >"$TMP/haproxy-$p.log" 2>&1 &
  BG_PIDS+=($!)
done
sb exec l7b-scli -- haproxy -db -f "$TMP/cli.cfg" >"$TMP/haproxy-cli.log" 2>&1 &
BG_PIDS+=($!)
haproxy_pid() { # POD
  local p
  for p in $(ip netns pids "bmp-$1"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = haproxy ] && { echo "$p"; return 0; }
  done
  return 1
}
HAP_SV1="" HAP_CLI=""
for _ in $(seq 50); do
  HAP_SV1=$(haproxy_pid l7b-sv1 || true); HAP_CLI=$(haproxy_pid l7b-scli || true)
  [ -n "$HAP_SV1" ] && [ -n "$HAP_CLI" ] && break
  sleep 0.1
done
[ -n "$HAP_SV1" ] && [ -n "$HAP_CLI" ] || fail_or_75 "haproxy did not start: $(cat "$TMP"/haproxy-*.log)"
MESHD1=$(cat "$RUN_DIR/sandbox/meshd-node1.pid") && MESHD2=$(cat "$RUN_DIR/sandbox/meshd-node2.pid") ||
  fail_or_75 "no meshd pid files"

# Every target answers (bounded: 10 s each).
local sc ok code
for sc in $SCENARIOS; do
  ok=""
  for _ in $(seq 50); do
    code=$(sb exec "$(client_of "$sc")" -- curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$(addr_of "$sc")/" 2>/dev/null || true)
    [ "$code" = 200 ] && { ok=1; break; }
    sleep 0.2
  done
  [ -n "$ok" ] || { tail -n 5 "$TMP"/*.log >&2 2>/dev/null
    fail_or_75 "scenario $sc: http://$(addr_of "$sc")/ from $(client_of "$sc") does not answer (last: $code)"; }
done
check_paths
[[ " $WORKLOADS " == *" scrape "* ]] && check_scrape
return 0
}

# check_scrape: the hub gets an address on the nodes' /24 (gone with the hub at
# down) and both meshds answer /metrics from there, or the run stops.
check_scrape() {
  local out
  ip -n bm-hub addr add "$HUB_ADDR/24" dev br0 2>/dev/null ||
    ip -n bm-hub -4 addr show dev br0 | grep -q "inet $HUB_ADDR/" || fail_or_75 "cannot address the hub bridge"
  # shellcheck disable=SC2086,SC2046
  local ae=identity
  [ "$SCRAPE_GZIP" = 1 ] && ae=gzip
  out=$(ip netns exec bm-hub curl -s --max-time 2 -H "Accept-Encoding: $ae" \
    -w '%{http_code} %{size_download} %{time_total} %header{content-encoding}\n' \
    $(printf -- '-o /dev/null %s ' $METRICS_URLS) 2>&1 | tr '\n' ' ') || true
  echo "setup $SETUPS scrape: from bm-hub $METRICS_URLS, Accept-Encoding: $ae: (code bytes seconds encoding) $out" >>"$CHECKS"
  [ "$(grep -o '\b200 [0-9]' <<<"$out" | wc -l)" = "$(wc -w <<<"$METRICS_URLS")" ] ||
    fail_or_75 "scrape from bm-hub failed: $out"
  # What was asked for is what the meshd under test serves (an older build
  # answers plain text to a gzip request: that run would measure the wrong thing).
  [ "$SCRAPE_GZIP" = 0 ] || [ "$(grep -o ' gzip\b' <<<"$out" | wc -l)" = "$(wc -w <<<"$METRICS_URLS")" ] ||
    fail_or_75 "asked for gzip, meshd answered otherwise: $out"
}

# scraper_start OUT PARITY: both nodes' /metrics every second from the hub
# netns, as Prometheus does, but only in the SCRAPE_PERIOD-second windows of
# CLOCK_MONOTONIC (the clock bm-load splits its requests by; shared by all
# network namespaces) whose number is PARITY modulo 2: at 0.25 s, 1.25 s, ...
# into each of those windows, nothing in the others. The parity alternates
# with the round, so whatever else favours even or odd windows falls on the
# scraped side in half of the rounds and on the quiet side in the other half.
# One long-running process (bm-scrape, in C: started once, so no process start
# per scrape competes for the CPUs, and a fetch costs it a few system calls;
# runs 1-8 used a python loop that also allocated a 256 KB buffer per fetch),
# one connection per fetch (meshd answers Connection: close), each fetch
# bounded to 0.9 s, for at most SCRAPE_SECS + 5 s. Appends "node_ip code
# bytes seconds start" per fetch to OUT. Sets SCRAPER_PID.
scraper_start() {
  # shellcheck disable=SC2086
  timeout $((SCRAPE_SECS + 10)) ip netns exec bm-hub nice -n "$SCRAPER_NICE" \
    "$SCRAPER" "$1" $((SCRAPE_SECS + 5)) "$SCRAPE_PERIOD" "$2" "$SCRAPE_GZIP" $METRICS_URLS &
  SCRAPER_PID=$!
  BG_PIDS+=("$SCRAPER_PID")
}
scraper_stop() {
  local p keep=()
  kill "$SCRAPER_PID" 2>/dev/null || true
  wait "$SCRAPER_PID" 2>/dev/null || true
  # teardown kills BG_PIDS under set -e: a reaped pid must not be in it.
  for p in "${BG_PIDS[@]}"; do [ "$p" = "$SCRAPER_PID" ] || keep+=("$p"); done
  BG_PIDS=("${keep[@]}")
}

# check_paths: each scenario takes the path it claims, or the run stops (a
# benchmark of the wrong path is worthless). 50 requests with and 50 without
# the canary header; meshd's HTTP request counter must grow by the l7 ones
# only.
check_paths() {
  local sc h0 h1 d can def line
  for sc in $SCENARIOS; do
    h0=$(http_counters)
    can=$(hget_backends "$(client_of "$sc")" "http://$(addr_of "$sc")/" -H 'x-canary: true')
    def=$(hget_backends "$(client_of "$sc")" "http://$(addr_of "$sc")/")
    sleep 0.2
    h1=$(http_counters)
    d=$(counters_delta "$h0" "$h1"); d=${d%% *}
    line="setup $SETUPS $sc: x-canary true -> ok ${can/ /, backends }; no header -> ok ${def/ /, backends }; meshd HTTP requests +$d"
    echo "$line" >>"$CHECKS"
    log "$line"
    case $sc in
      l7)
        [ "$can" = "50 v2=50" ] && [ "$def" = "50 v1=50" ] ||
          fail_or_75 "l7: the header routing did not happen as configured ($line)"
        [ "$d" -ge 100 ] || fail_or_75 "l7: meshd did not count the requests: not on the L7 path ($line)" ;;
      sidecar)
        [ "$can" = "50 sv2=50" ] && [ "$def" = "50 sv1=50" ] ||
          fail_or_75 "sidecar: the HAProxy ACL did not route as configured ($line)"
        [ "$d" -eq 0 ] || fail_or_75 "sidecar: meshd counted HTTP requests ($line)" ;;
      l4)
        # No header routing on L4: everything to subset v1, meshd not involved.
        [ "$can" = "50 v1=50" ] && [ "$def" = "50 v1=50" ] ||
          fail_or_75 "l4: expected subset v1 only ($line)"
        [ "$d" -eq 0 ] || fail_or_75 "l4: meshd counted HTTP requests: not the kernel path ($line)" ;;
    esac
  done
}

# ---------------------------------------------------------------- targets
client_of() { case $1 in l4|l7|l7-scraped) echo l7b-cli ;; sidecar) echo l7b-scli ;; esac; }
addr_of() {
  case $1 in
    l4) echo "$VIP_L4:80" ;; l7|l7-scraped) echo "$VIP_L7:80" ;; sidecar) echo "127.0.0.1:16001" ;;
  esac
}
procs_of() { case $1 in sidecar) echo "$HAP_CLI $HAP_SV1" ;; *) echo "$MESHD1 $MESHD2" ;; esac; }

cpu_ticks() { local t=0 p a; for p in "$@"; do read -ra a <"/proc/$p/stat"; t=$((t + a[13] + a[14])); done; echo $t; }
# task_ticks PID...: "pid/tid=ticks ..." per thread (how the work spreads
# over meshd's workers and HAProxy's threads, and what each node's part is)
task_ticks() {
  local p f a out=()
  for p in "$@"; do
    for f in /proc/"$p"/task/*/stat; do
      read -ra a <"$f" 2>/dev/null || continue
      out+=("$p/${a[0]}=$((a[13] + a[14]))")
    done
  done
  echo "${out[*]}"
}
# task_delta "BEFORE" "AFTER": per-thread ticks during the run, busy ones only
task_delta() {
  python3 -c '
import sys
b = dict(x.split("=") for x in sys.argv[1].split())
a = dict(x.split("=") for x in sys.argv[2].split())
print(" ".join(f"{k}={int(v) - int(b.get(k, 0))}" for k, v in a.items() if int(v) - int(b.get(k, 0)) > 0) or "-")' "$1" "$2"
}
HZ=$(getconf CLK_TCK)

# parse_wrk FILE: "p50 p90 p99 rps requests errors" (us)
parse_wrk() {
  python3 - "$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def us(v, u): return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[u]
lat = {m.group(1): us(m.group(2), m.group(3))
       for m in re.finditer(r"^\s+(50|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
n = re.search(r"(\d+) requests in", t)
err = 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
if m: err += sum(map(int, m.groups()))
m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if m: err += int(m.group(1))
if not rps or not float(rps.group(1)):
    sys.stderr.write("l7.sh: wrk measured nothing:\n" + t); sys.exit(1)
print(*(f"{lat.get(k, 0):.1f}" for k in ("50", "90", "99")), rps.group(1), n.group(1), err)
PY
}
# parse_load FILE: same fields from bm-load's JSON line
parse_load() {
  python3 - "$1" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
try:
    d = json.loads(t.strip().splitlines()[-1])
except Exception:
    sys.stderr.write("l7.sh: bm-load failed:\n" + t); sys.exit(1)
print(d["p50_us"], d["p90_us"], d["p99_us"], d["rps"], d["sent"], d["errors"])
PY
}

# parse_windows BM_LOAD_OUTPUT PARITY: "requests p50 p90 p99 p999" (us) of
# the windows of that parity (scraped in l7-scraped), then the same of the
# others.
parse_windows() {
  python3 - "$1" "$2" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
halves = ("even", "odd") if sys.argv[2] == "0" else ("odd", "even")
print(" ".join(str(d[h][k]) for h in halves for k in ("requests", "p50_us", "p90_us", "p99_us", "p999_us")))
PY
}

# run_one WORKLOAD SCENARIO ROUND: appends one line to $RAW.
run_one() {
  local w=$1 s=$2 r=$3 cli addr procs c0 c1 k0 k1 t0 t1 h0 h1 res par
  cli=$(client_of "$s"); addr=$(addr_of "$s"); procs=$(procs_of "$s")
  h0=$(http_counters)
  # shellcheck disable=SC2086
  c0=$(cpu_ticks $procs 2>/dev/null) || return 1
  # shellcheck disable=SC2086
  k0=$(task_ticks $procs); t0=$(date +%s.%N)
  case $w in
    r1k)
      sb exec "$cli" -- timeout $((SECS + 20)) "$LOAD" --addr "$addr" --rate 1000 --conns 4 \
        --duration "$SECS" --warmup 0.5 >"$TMP/run.out" 2>&1 || true
      res=$(parse_load "$TMP/run.out") || res="" ;;
    scrape)
      # Odd rounds scrape the even windows, even rounds the odd ones; the
      # control is split the same way.
      par=$(( (r + 1) % 2 ))
      [ "$s" = l7-scraped ] && { : >"$TMP/scrape.out"; scraper_start "$TMP/scrape.out" "$par"; }
      rm -f "$TMP/hist.out" "$TMP/win.out"
      sb exec "$cli" -- timeout $((SCRAPE_SECS + 20)) "$LOAD" --addr "$addr" --rate "$SCRAPE_RATE" --conns 4 \
        --duration "$SCRAPE_SECS" --warmup 0.5 --split-period "$SCRAPE_PERIOD" \
        --hist-out "$TMP/hist.out" --windows-out "$TMP/win.out" \
        --trace-out "$TRACE_RND/trace-$r-$s-$par.txt" >"$TMP/run.out" 2>&1 || true
      if [ "$s" = l7-scraped ]; then
        scraper_stop
        sed "s/^/$r /" "$TMP/scrape.out" >>"$SCRAPE_RND"
      fi
      res=$(parse_load "$TMP/run.out") || res=""
      if [ -n "$res" ]; then
        echo "$r $s $par $(parse_windows "$TMP/run.out" "$par")" >>"$WIN_RND"
        [ ! -s "$TMP/hist.out" ] ||
          awk -v p="$r $s" -v par="$par" '{ h = (($1 == "even") == (par == 0)) ? "scraped" : "quiet"; print p, h, $2, $3 }' \
            "$TMP/hist.out" >>"$HIST_RND"
        [ ! -s "$TMP/win.out" ] ||
          awk -v p="$r $s" -v par="$par" '{ h = (($2 == "even") == (par == 0)) ? "scraped" : "quiet"; print p, h, $1, $3, $4, $5, $6, $7 }' \
            "$TMP/win.out" >>"$PERWIN_RND"
      fi ;;
    sat)
      sb exec "$cli" -- timeout $((SECS + 20)) wrk -t1 -c"$CONNS" -d"${SECS}s" --latency \
        "http://$addr/" >"$TMP/run.out" 2>&1 || true
      res=$(parse_wrk "$TMP/run.out") || res="" ;;
  esac
  t1=$(date +%s.%N)
  # shellcheck disable=SC2086
  c1=$(cpu_ticks $procs 2>/dev/null) || return 1
  # shellcheck disable=SC2086
  k1=$(task_ticks $procs)
  h1=$(http_counters)
  [ -n "$res" ] || return 1
  echo "$w $s $r $(task_delta "$k0" "$k1")" >>"$THREADS_RND"
  echo "$w $s $r $res $(( c1 - c0 )) $(python3 -c "print(f'{$t1 - $t0:.3f}')") $(counters_delta "$h0" "$h1")" >>"$RAW"
}

RAW=$RESULTS/l7-raw.txt
CHECKS=$RESULTS/l7-checks.txt
THREADS=$RESULTS/l7-threads.txt THREADS_RND=$TMP/threads.txt
SCRAPES=$RESULTS/l7-scrape.txt SCRAPE_RND=$TMP/scrape-round.txt
WINDOWS=$RESULTS/l7-scrape-windows.txt WIN_RND=$TMP/windows-round.txt
HIST=$RESULTS/l7-scrape-hist.txt HIST_RND=$TMP/hist-round.txt
PERWIN=$RESULTS/l7-scrape-perwindow.txt PERWIN_RND=$TMP/perwindow-round.txt
echo "# round scenario parity, requests p50 p90 p99 p999 (us) of the windows of that parity (scraped in l7-scraped), then of the others (quiet); ${SCRAPE_PERIOD}s windows" >"$WINDOWS"
echo "# round scenario side latency_us count: every recorded request of the scrape workload (side: scraped or quiet windows)" >"$HIST"
echo "# round scenario side window requests p50 p90 p99 p999 (us): each ${SCRAPE_PERIOD}s window of the scrape workload (window: its number since CLOCK_MONOTONIC's zero; side: scraped or quiet)" >"$PERWIN"
echo "# round node_ip http_code bytes seconds start: every fetch of /metrics during the l7-scraped runs (start: CLOCK_MONOTONIC s)" >"$SCRAPES"
# bm-load's --trace-out of each scrape-workload run (every request's due time
# and latency), kept in TMP: exposure.py turns them into l7-scrape-exposure.txt.
TRACES=$TMP/traces TRACE_RND=$TMP/traces-round EXPOSURE=$RESULTS/l7-scrape-exposure.txt
rm -rf "$TRACES" "$TRACE_RND"; mkdir -p "$TRACES" "$TRACE_RND"
echo "# workload scenario round pid/tid=cpu_ticks(${HZ}/s), threads busy during the run" >"$THREADS"
echo "# workload scenario round p50_us p90_us p99_us rps requests errors cpu_ticks(${HZ}/s) elapsed_s" \
  "meshd_http: requests 2xx 5xx no_response other retries timeouts upstream_cx" >"$RAW"
: >"$CHECKS"
n_w=$(wc -w <<<"$WORKLOADS"); n_s=$(wc -w <<<"$SCENARIOS")
n_sc=0; [[ " $WORKLOADS " == *" scrape "* ]] && n_sc=1
log "$ROUNDS rounds x $((n_w - n_sc)) workloads x $n_s scenarios x ${SECS}s$([ $n_sc = 1 ] && echo " + scrape 2 x ${SCRAPE_SECS}s")" \
  "(~$(( ROUNDS * ((n_w - n_sc) * n_s * (SECS + 3) + n_sc * 2 * (SCRAPE_SECS + 3) + 25) ))s)"
ROUND_RAW=$TMP/round.txt
t_start=$(date +%s)
for r in $(seq "$ROUNDS"); do
  for try in $(seq $((1 + RETRIES))); do
    setup
    : >"$ROUND_RAW"; : >"$SCRAPE_RND"; : >"$WIN_RND"; : >"$HIST_RND"; : >"$PERWIN_RND"; rm -f "$TRACE_RND"/*
    echo "# round $r: meshd node1 $MESHD1, node2 $MESHD2; haproxy client $HAP_CLI, server v1 $HAP_SV1" >"$THREADS_RND"
    RAW_SAVE=$RAW; RAW=$ROUND_RAW
    done_ok=1
    for w in $WORKLOADS; do
      # Rotate the order within the round so no scenario always runs first.
      # shellcheck disable=SC2086
      set -- $SCENARIOS
      [ "$w" = scrape ] && set -- l7 l7-scraped
      for _ in $(seq $(( (r - 1) % $# ))); do set -- "${@:2}" "$1"; done
      for s in "$@"; do
        run_one "$w" "$s" "$r" && continue
        interrupted || die "run $w $s failed: $(tail -5 "$TMP/run.out")"
        log "round $r: run $w $s failed: the sandbox was taken down by someone else; the round starts again"
        OURS=0; done_ok=0; break 2
      done
    done
    RAW=$RAW_SAVE
    if [ $done_ok = 1 ]; then
      "$BUILD/meshctl" stats -o json >"$RESULTS/l7-proxy-stats.json" 2>/dev/null || true
      # meshd's complaints during the round (not the "0 warnings" of each apply)
      grep -h -i -E "error|warn|fail|refus|overload|eject|timeout|reset" "$RUN_DIR"/sandbox/meshd-node*.log 2>/dev/null \
        | grep -v -E "applied: .*, 0 warnings$" | tail -n 20 | sed "s/^/round $r meshd log: /" >>"$CHECKS" || true
      cat "$ROUND_RAW" >>"$RAW"
      cat "$THREADS_RND" >>"$THREADS"
      cat "$SCRAPE_RND" >>"$SCRAPES"
      cat "$WIN_RND" >>"$WINDOWS"
      cat "$HIST_RND" >>"$HIST"
      cat "$PERWIN_RND" >>"$PERWIN"
      mv "$TRACE_RND"/* "$TRACES"/ 2>/dev/null || true
      teardown
      break
    fi
    teardown
    [ "$try" -gt "$RETRIES" ] && { log "round $r interrupted $try times; giving up"; exit 75; }
  done
  log "round $r/$ROUNDS done"
done

# ---------------------------------------------------------------- report
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
rm -f "$EXPOSURE"
if [[ " $WORKLOADS " == *" scrape "* ]]; then
  python3 "$ROOT/tests/bench/exposure.py" --traces "$TRACES" --scrapes "$SCRAPES" --period "$SCRAPE_PERIOD" \
    --guards "$EXPOSURE_GUARDS" --out "$EXPOSURE" || log "exposure.py failed: no exposure estimate"
  # the traces themselves, for another look with other guards or estimators
  tar czf "$RESULTS/l7-scrape-traces.tar.gz" -C "$TRACES" . || log "could not keep the traces"
fi
python3 "$ROOT/tests/bench/report.py" --l7-raw "$RAW" --l7-checks "$CHECKS" --l7-threads "$THREADS" --l7-scrape "$SCRAPES" --l7-windows "$WINDOWS" --l7-hist "$HIST" --l7-perwindow "$PERWIN" --l7-exposure "$EXPOSURE" --exposure-guard "$EXPOSURE_GUARD" --scrape-period "$SCRAPE_PERIOD" --scraper-nice "$SCRAPER_NICE" --scrape-gzip "$SCRAPE_GZIP" \
  --out "$RESULTS/l7.md" --hz "$HZ" --stamp "$stamp" --rounds "$ROUNDS" \
  --secs "$SECS" --scrape-secs "$SCRAPE_SECS" --scrape-rate "$SCRAPE_RATE" --conns "$CONNS" --kernel "$(uname -r)" --nproc "$(nproc)" --cpu "$cpu_model" \
  --version "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo dev)" \
  --haproxy "$(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')"
log "done in $(( $(date +%s) - t_start ))s; results in $RESULTS/l7.md"
