#!/usr/bin/env bash
# Builds every libFuzzer target with ASan + UBSan and runs each for
# FUZZ_SECONDS (default 30) from its seed corpus:
#   fuzz_resource  resource parser and validator (lib/)
#   fuzz_http1     HTTP/1.1 codec (agent/http1.c over http-parser)
#   fuzz_jwt       JWT and JWKS parsing and verification (agent/jwt.c)
#   fuzz_l7match   path normalization, StringMatch/PCRE2, route selection,
#                  rewrite/redirect (agent/l7match.c), authz path templates
#   fuzz_h2down    the HTTP/2 front (agent/h2down.c) through the real engine:
#                  client frames (or raw bytes) over a socketpair
#   fuzz_h2up      the HTTP/2 upstream client (agent/h2up.c) through the
#                  engine: the fuzzer is the upstream server
#   fuzz_grpc      grpc-status parsing and gRPC local replies (agent/l7reply.c)
#   fuzz_prom      a scraper's request headers, for Accept-Encoding (agent/prom.c)
# (fuzz_http1 covers chunked trailers too: bm_h1_trailers and
# bm_h1_write_end_trailers in its round trip.)
# FUZZ_TARGETS (space-separated names) picks a subset. Exits non-zero when
# any target finds a crash, a leak, a timeout or a sanitizer report; the
# reproducer is left in $FUZZ_OUT (default build/fuzz) as
# <target>-crash-*/leak-*/timeout-*/oom-*. Replay one with
#   build/fuzz/fuzz_http1 build/fuzz/fuzz_http1-crash-...
set -euo pipefail

cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-30}
out=${FUZZ_OUT:-build/fuzz}
clang=${CLANG:-clang}
targets=${FUZZ_TARGETS:-fuzz_resource fuzz_http1 fuzz_jwt fuzz_l7match fuzz_h2down fuzz_h2up fuzz_grpc fuzz_prom}

cflags=(-g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Iinclude -Ilib -Iagent
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
libs=(-ljansson -lpcre2-8 -lhttp_parser -lnghttp2 -lssl -lcrypto -lyaml -lz -lm -lpthread)
# The L7 engine without the BPF loader, the agent's main loop or metrics.
engine=(agent/l7conn.c agent/l7proxy.c agent/l7h1.c agent/h2down.c agent/h2up.c
	agent/l7reply.c agent/l7mirror.c agent/l7upstream.c agent/l7match.c agent/l7model.c
	agent/l7model_clusters.c agent/l7model_routes.c
	agent/model.c agent/modelix.c agent/strmap.c agent/retry.c agent/outlier.c
	agent/http1.c agent/relay.c agent/tracing.c agent/log.c agent/resutil.c lib/*.c)

# The agent files each target needs (nothing that pulls in the BPF loader).
sources() {
	case $1 in
	fuzz_resource) echo lib/*.c ;;
	fuzz_http1)    echo agent/http1.c agent/relay.c ;;
	fuzz_jwt)      echo agent/jwt.c ;;
	fuzz_l7match)  echo agent/l7match.c agent/authz.c agent/resutil.c agent/log.c lib/*.c ;;
	fuzz_h2down | fuzz_h2up | fuzz_grpc) echo "${engine[@]}" ;;
	fuzz_prom)     echo agent/prom.c ;;
	*) echo "unknown fuzz target $1" >&2; return 1 ;;
	esac
}

# name: seed corpus dir, dictionary, -max_len
seeds() {
	case $1 in
	fuzz_resource) echo "tests/fuzz/corpus tests/fuzz/resource.dict 8192" ;;
	fuzz_http1)    echo "tests/fuzz/corpus_http1 tests/fuzz/http1.dict 8192" ;;
	fuzz_jwt)      echo "tests/fuzz/corpus_jwt tests/fuzz/jwt.dict 4096" ;;
	fuzz_l7match)  echo "tests/fuzz/corpus_l7match tests/fuzz/l7match.dict 4096" ;;
	fuzz_h2down)   echo "tests/fuzz/corpus_h2down tests/fuzz/h2.dict 8192" ;;
	fuzz_h2up)     echo "tests/fuzz/corpus_h2up tests/fuzz/h2.dict 8192" ;;
	fuzz_grpc)     echo "tests/fuzz/corpus_grpc tests/fuzz/grpc.dict 4096" ;;
	fuzz_prom)     echo "tests/fuzz/corpus_prom tests/fuzz/prom.dict 4096" ;;
	esac
}

mkdir -p "$out"
for t in $targets; do
	# shellcheck disable=SC2046 # globs in sources() are meant to split
	"$clang" "${cflags[@]}" "tests/fuzz/$t.c" $(sources "$t") -o "$out/$t" "${libs[@]}"
done

failed=()
for t in $targets; do
	read -r corpus dict max_len < <(seeds "$t")
	# New inputs go to $out/corpus[_name]; the checked-in seeds are read only.
	# fuzz_resource keeps its historical corpus directory.
	work=$out/corpus${t#fuzz_resource}
	[ "$t" = fuzz_resource ] || work=$out/corpus_${t#fuzz_}
	mkdir -p "$work"
	echo "== $t: $seconds s"
	if ! "$out/$t" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
		-rss_limit_mb=2048 -dict="$dict" -artifact_prefix="$out/$t-" \
		-print_final_stats=1 "$work" "$corpus"; then
		failed+=("$t")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: failed: ${failed[*]} (reproducers in $out/)" >&2
	exit 1
fi
echo "fuzz: all targets ran $seconds s without a finding"
