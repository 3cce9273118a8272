#!/usr/bin/env bash
# Builds every libFuzzer target with ASan + UBSan and runs each for
# FUZZ_SECONDS (default 30) from its seed corpus:
#   fuzz_resource  resource parser and validator (lib/)
#   fuzz_http1     HTTP/1.1 codec (agent/http1.c over http-parser)
#   fuzz_jwt       JWT and JWKS parsing and verification (agent/jwt.c)
#   fuzz_l7match   path normalization, StringMatch/PCRE2, route selection,
#                  rewrite/redirect (agent/l7match.c), authz path templates
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
targets=${FUZZ_TARGETS:-fuzz_resource fuzz_http1 fuzz_jwt fuzz_l7match}

cflags=(-g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Iinclude -Ilib -Iagent
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
libs=(-ljansson -lpcre2-8 -lhttp_parser -lssl -lcrypto -lcurl -lyaml -lm -lpthread)

# The agent files each target needs (nothing that pulls in the BPF loader).
sources() {
	case $1 in
	fuzz_resource) echo lib/*.c ;;
	fuzz_http1)    echo agent/http1.c agent/relay.c ;;
	fuzz_jwt)      echo agent/jwt.c ;;
	fuzz_l7match)  echo agent/l7match.c agent/authz.c agent/resutil.c agent/log.c lib/*.c ;;
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
