#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# The kernel NSM's two relays side by side: splice (the default) and the
# in-kernel sockmap relay of the guest -> network direction (nk-nsm
# --kernel-relay).  Same topology as the tests (guest g1 with only lo,
# nk-nsm nsm1, remote host on the NSM's veth), one after the other, each
# workload REPS times: sockperf TCP ping-pong (mean and p99 round trip),
# iperf3 guest -> remote with 1 and 4 streams, remote -> guest with 1,
# nk_cps connections per second.  Prints a Markdown table of medians.
#
#   tools/bench/krelay_ab.sh [REPS]        (root; make first)

if [ "${1:-}" != --one ]; then
	REPS=${1:-3}
	out=$(mktemp)
	for mode in splice kernel; do
		bash "$0" --one "$mode" "$REPS" >>"$out" || { cat "$out"; exit 1; }
	done
	/usr/bin/python3 - "$out" "$REPS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 3 and p[0] in ("splice", "kernel"):
        rows.setdefault(p[1], {}).setdefault(p[0], []).append(float(p[2]))
names = [("rr_mean", "TCP round trip, mean (µs)"), ("rr_p99", "TCP round trip, p99 (µs)"),
         ("send1", "iperf3 guest→remote, 1 stream (Gbit/s)"),
         ("send4", "iperf3 guest→remote, 4 streams (Gbit/s)"),
         ("recv1", "iperf3 remote→guest, 1 stream (Gbit/s)"),
         ("cps", "connections/s, guest→remote")]
print(f"| workload ({sys.argv[2]} runs, median (min–max)) | splice relay | in-kernel relay | ratio |")
print("|---|---:|---:|---:|")
def cell(v):
    return f"{statistics.median(v):.3g} ({min(v):.3g}–{max(v):.3g})" if v else "–"
for k, label in names:
    s, kr = rows.get(k, {}).get("splice", []), rows.get(k, {}).get("kernel", [])
    r = f"{statistics.median(kr) / statistics.median(s):.2f}" if s and kr else "–"
    print(f"| {label} | {cell(s)} | {cell(kr)} | {r} |")
PY
	rm -f "$out"
	exit 0
fi

MODE=$2 REPS=$3
NK_TEST_NAME=krelay-ab
# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/../../selftests/lib.sh"
nk_require_root
nk_require_cmds iperf3 sockperf
[ "$MODE" = kernel ] && NK_NKD_ARGS=(--nsm-arg=--kernel-relay)
nk_topo_up >&2
R=remote-$S
ip netns exec "nsm-$S" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
nk_bg "$R" "$NK_TMP/ip.log" iperf3 -s -p 5201
nk_bg "$R" "$NK_TMP/sp.log" sockperf sr --tcp -i 10.77.0.1 -p 11111
nk_bg "$R" "$NK_TMP/cps.log" "$OUTPUT/bench/nk_cps" serve 7000
for p in 5201 11111 7000; do wait_port "$R" 10.77.0.1 $p >&2 || nk_die "server on $p"; done
if [ "$MODE" = kernel ]; then
	grep -q 'in-kernel relay of guest -> network data: on' "$NK_TMP"/state/nsm-*.log ||
		nk_die "the NSM did not turn the in-kernel relay on"
fi
gbps()
{
	"$NK_PY" -c 'import json, sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
for ((i = 1; i <= REPS; i++)); do
	o=$(nk_guest g1 sockperf pp --tcp -i 10.77.0.1 -p 11111 -t 3 --full-rtt 2>&1)
	echo "$MODE rr_mean $(echo "$o" | sed -n 's/.*avg-rtt=\([0-9.]*\).*/\1/p' | tail -n 1)"
	echo "$MODE rr_p99 $(echo "$o" | awk '/percentile 99.000 =/ { v = $NF } END { print v }')"
	echo "$MODE send1 $(nk_guest g1 iperf3 -c 10.77.0.1 -p 5201 -t 2 -J | gbps)"
	echo "$MODE send4 $(nk_guest g1 iperf3 -c 10.77.0.1 -p 5201 -t 2 -P 4 -J | gbps)"
	echo "$MODE recv1 $(nk_guest g1 iperf3 -c 10.77.0.1 -p 5201 -t 2 -R -J | gbps)"
	echo "$MODE cps $(nk_guest g1 "$OUTPUT/bench/nk_cps" connect -t 4 10.77.0.1 7000 2 |
		sed -n 's/^cps=\([0-9.]*\) .*/\1/p')"
done
nk_finish >&2
