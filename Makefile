# bpfmesh build. `make` builds BPF objects + skeletons, meshd and meshctl.
# `make test` runs unit tests (plain and ASan+UBSan) and the sandbox integration tests.
# `make demo` runs the 2-node sandbox demo. `make bench` runs the benchmark scripts.

B        ?= build
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
SAN      ?=

OPT      ?= -O2 -g
CFLAGS   += $(OPT) -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
            -Iinclude -Ilib -I$(B) -pthread $(SAN) \
            -DBPFMESH_VERSION=\"$(shell git describe --always --dirty 2>/dev/null || echo dev)\"
JOBS     ?= $(shell nproc 2>/dev/null || echo 1)
# No -lcurl: lib/curlshim.c dlopen()s libcurl.so.4 on first use (JWKS, Zipkin, etcd).
LDLIBS   := -lbpf -lelf -lz -lyaml -ljansson -lnghttp2 -lssl -lcrypto -lpcre2-8 -lhttp_parser -lpthread -lm
LDFLAGS  += $(SAN)

BPF_SRCS   := $(wildcard bpf/*.bpf.c)
BPF_OBJS   := $(patsubst bpf/%.bpf.c,$(B)/bpf/%.bpf.o,$(BPF_SRCS))
SKELS      := $(patsubst bpf/%.bpf.c,$(B)/%.skel.h,$(BPF_SRCS))
LIB_OBJS   := $(patsubst %.c,$(B)/%.o,$(wildcard lib/*.c))
AGENT_OBJS := $(patsubst %.c,$(B)/%.o,$(filter-out agent/main.c,$(wildcard agent/*.c)))
CLI_OBJS   := $(patsubst %.c,$(B)/%.o,$(filter-out cli/main.c,$(wildcard cli/*.c)))
UNIT_OBJS  := $(patsubst %.c,$(B)/%.o,$(wildcard tests/unit/*.c))
TOOLS      := $(patsubst tests/tools/%.c,$(B)/tools/%,$(wildcard tests/tools/*.c))
FUZZ_SRCS  := $(wildcard tests/fuzz/*.c)

DEPS_OK  := $(B)/.deps-ok

.SECONDARY:
.PHONY: all deps test unit unit-asan integration demo bench fuzz clean
all: $(B)/meshd $(B)/meshctl $(TOOLS)

deps: $(DEPS_OK)
$(DEPS_OK): scripts/deps.sh
	@mkdir -p $(B)
	scripts/deps.sh
	@touch $@

$(B)/vmlinux.h: | $(DEPS_OK)
	@mkdir -p $(B)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(B)/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/lib/*.h) include/bpfmesh/abi.h $(B)/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror \
		-Iinclude -Ibpf -I$(B) -c $< -o $@
	llvm-strip -g $@ 2>/dev/null || true

$(B)/%.skel.h: $(B)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@.tmp && mv $@.tmp $@

# Header dependencies come from the compiler (-MMD): an edit to one header
# rebuilds the files that include it, not the whole tree. An object built
# before it had a .d file depends on every header, as all did before.
ALL_HDRS := $(wildcard include/bpfmesh/*.h lib/*.h agent/*.h cli/*.h)
.SECONDEXPANSION:
$(B)/%.o: %.c $$(if $$(wildcard $(B)/$$*.d),,$$(ALL_HDRS)) | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

-include $(shell find $(B) -name '*.d' 2>/dev/null)

$(AGENT_OBJS) $(B)/agent/main.o: $(SKELS)

$(B)/libbpfmesh.a: $(LIB_OBJS)
	ar rcs $@ $^

$(B)/meshd: $(B)/agent/main.o $(AGENT_OBJS) $(B)/libbpfmesh.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/meshctl: $(B)/cli/main.o $(CLI_OBJS) $(B)/libbpfmesh.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tools/%: tests/tools/%.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(B)/unit-tests: $(UNIT_OBJS) $(AGENT_OBJS) $(CLI_OBJS) $(B)/libbpfmesh.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcunit

unit: $(B)/unit-tests
	$(B)/unit-tests
	python3 -B tests/bench/test_estimators.py
	python3 -B tests/bench/test_tools.py

# Same unit tests under AddressSanitizer + UndefinedBehaviorSanitizer.
unit-asan:
	$(MAKE) -j$(JOBS) B=build-asan SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		OPT="-O1 -g" build-asan/unit-tests
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build-asan/unit-tests

integration: all
	tests/integration/run.sh

# The builds in parallel (one job per CPU), the tests one after another.
test:
	$(MAKE) -j$(JOBS) all
	$(MAKE) unit unit-asan integration

demo: all
	scripts/demo.sh

bench: all
	tests/bench/run.sh

fuzz: | $(DEPS_OK)
	tests/fuzz/run.sh

clean:
	rm -rf build build-asan
