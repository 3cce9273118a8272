#!/usr/bin/env bash
# Installs every Debian package bpfmesh needs to build, test and run its sandbox.
# Idempotent: does nothing when everything is present. Run as root.
set -euo pipefail

pkgs=(
  clang llvm make gcc pkg-config            # BPF objects (clang -target bpf), llvm-strip
  bpftool libbpf-dev libelf-dev zlib1g-dev  # loader, skeletons, vmlinux.h
  libyaml-dev libjansson-dev                # resource parsing (YAML + JSON)
  libssl-dev libmnl-dev libnghttp2-dev      # TLS, netlink, HTTP/2 (later issues)
  libcunit1-dev                             # unit tests
  iproute2 procps psmisc util-linux         # sandbox: ip netns, veth, nsenter
  wrk curl                                  # benchmark load generator, HTTP checks
  haproxy gnuplot-nox                       # bench: the sidecar model; the latency chart
  prometheus                                # promtool + a real server scraping meshd in tests
  tcpdump                                   # capture on the node link (mTLS tests)
  etcd-server libcurl4-openssl-dev          # the distributed store (etcd v3 JSON gateway)
  libcurl4                                  # dlopen()ed at run time by etcd store, JWKS fetch, Zipkin
  libpcre2-dev                              # RE2-style regex matching (VirtualService uri/header regex)
  libhttp-parser-dev                        # HTTP/1.1 message parsing on the L7 path
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
