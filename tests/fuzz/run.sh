#!/usr/bin/env bash
# Builds the resource fuzzer with libFuzzer + ASan + UBSan against lib/ and
# runs it for FUZZ_SECONDS (default 30) from the seed corpus. Exits non-zero
# when it finds a crash, a leak or a sanitizer report; the reproducer is left
# in $FUZZ_OUT (default build/fuzz) as crash-*/leak-*/timeout-*.
set -euo pipefail

cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-30}
out=${FUZZ_OUT:-build/fuzz}
clang=${CLANG:-clang}

mkdir -p "$out/corpus"
"$clang" -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Iinclude -Ilib \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	tests/fuzz/fuzz_resource.c lib/*.c -o "$out/fuzz_resource" -lyaml -ljansson -lpcre2-8 -lm

# New inputs go to $out/corpus; the checked-in seeds are read only.
"$out/fuzz_resource" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
	-rss_limit_mb=2048 -dict=tests/fuzz/resource.dict \
	-artifact_prefix="$out/" -print_final_stats=1 \
	"$out/corpus" tests/fuzz/corpus
