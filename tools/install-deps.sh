#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Install the Debian packages NetKernel needs to build, test and run its
# demo, and only when something is missing: then `apt-get update` and one
# `apt-get install -y`.  Safe to run again; run as root.
#
#   tools/install-deps.sh            build + run/test packages
#   tools/install-deps.sh --bench    also the benchmark's (make bench)
#   tools/install-deps.sh --list     print the package list and exit

set -eu

# libclang-rt-dev: libFuzzer for the fuzz harnesses (a clang recommend).
BUILD_PKGS=(build-essential clang llvm pkg-config libbpf-dev bpftool
	libjansson-dev libmnl-dev libclang-rt-dev)
# iproute2: ip, ss; procps: ps; util-linux: mountpoint; python3 is
# Debian's /usr/bin/python3, which the tests use explicitly.
# busybox-static, cpio, qemu-system-x86: the QEMU guests of
# test_vhost_vsock, test_vm and tools/nk-vm (the guest kernel is
# downloaded, never installed; curl, nginx-light and their libraries are
# copied into test_vm's guest image).
# dnsmasq-base: the dnsmasq binary without the system service (the DNS
# server and the guest's stub resolver of test_udp_dns).  linux-perf:
# perf stat counts the NSM's polling system calls (test_bulk_poll) and
# profiles the benchmark.
RUN_PKGS=(busybox-static cpio iproute2 nginx-light curl wrk iperf3 qemu-system-x86
	redis-server redis-tools python3 socat procps psmisc util-linux dnsmasq-base
	linux-perf postgresql nodejs)
# The benchmark only (tools/bench.sh): the userspace-networking peers,
# the latency tool and the plot.  CI's tests do not need them.
BENCH_PKGS=(passt slirp4netns sockperf gnuplot-nox)
PKGS=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}")

if [ "${1:-}" = --bench ]; then
	PKGS+=("${BENCH_PKGS[@]}")
	shift
fi

if [ "${1:-}" = --list ]; then
	printf '%s\n' "${PKGS[@]}"
	exit 0
fi

installed()
{
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for p in "${PKGS[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#PKGS[@]} packages present"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing ${missing[*]}; run as root (sudo $0)" >&2
	exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
echo "install-deps: done"
