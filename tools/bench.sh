#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helpers are called through check/wait_for
#
# `make bench`: NetKernel against the native stack and the userspace
# networking tools operators use today, on the same workloads, in one run
# (issue 7).  Seven paths, each a guest network namespace running the same
# unmodified client and server programs:
#
#   native   the guest owns its stack: veth n1 10.79.1.2 <-> remote 10.79.1.1
#   nk       the guest has only lo; nk-run -> nkd -> kernel NSM (nsm-$S),
#            whose veth uplink reaches the remote host (10.77.0.2 -> .1)
#   pasta    Debian's pasta in host namespace ph-$S (veth 10.78.2.2 <->
#            remote 10.78.2.1) gives guest pg-$S a tap; inbound via -t 80
#   slirp    slirp4netns in host namespace sh-$S (veth 10.78.3.2 <->
#            remote 10.78.3.1) gives guest sg-$S a tap; inbound via its API
#            socket (add_hostfwd)
#   nklat    NetKernel for latency-bound tenants, the in-kernel relay and
#            busy polling: guest g20-$S (only lo), vm20 on a second kernel
#            NSM nsm2 (nkctl nsm add ... relay kernel busy-poll 30) in
#            kr-$S, veth 10.76.0.2 <-> remote 10.76.0.1
#   nkbp     NetKernel with busy polling: guest g30-$S (only lo), vm30 on a
#            third kernel NSM nsm3 (nkctl nsm add ... busy-poll 30) in
#            bp-$S, veth 10.75.0.2 <-> remote 10.75.0.1; measured only when
#            --paths names it
#   nkxdp    NetKernel on a shared uplink steered by XDP (issue 4): nkd
#            --uplink nku-$S (a veth whose far end is xdp0 10.74.0.1 in the
#            remote host) creates nsm4-$S itself (netns nk-nsm4-$S, veth
#            nkh-nsm4-$S <-> eth0); vm40 10.74.0.2, guest g40-$S (only lo).
#            One-stream bulk and round trips only; the XDP programs' run
#            time per packet comes from kernel.bpf_stats_enabled during its
#            runs.
# Stage vm (real VMs): one QEMU guest (TCG) with a vhost-user-vsock device
#            (nk-vhost-vsock -> vm50 on nsm1, 10.77.0.50) and a virtio-net
#            NIC (tap0, bridged in vmn-$S with a veth to remote 10.73.0.1;
#            the guest 10.73.0.2); the two alternate inside the guest:
#            vmnk (under nk-run, AF_VSOCK) and vmnat (its own stack).
#
# Every path but nkxdp (two veths joined by XDP redirects) crosses exactly
# one veth to the remote host (remote-$S, which runs iperf3 -s, sockperf
# sr, nk_cps serve and the wrk clients).
# Workloads: iperf3 1 stream each way and 4 streams each way (with CPU
# seconds per gigabit), sockperf TCP ping-pong (mean, p99), wrk against
# nginx in the guest (keep-alive and Connection: close), nk_cps connections
# per second; then multiplexing density (N = 1, 4, 16 nginx guests under
# light wrk load, one kernel NSM against N guests owning their stacks),
# the idle cost of 100 guest connections through NetKernel, and a perf
# profile of nk-nsm and the guest program during a bulk and an RR run.
# Paths are interleaved inside each repetition so drift hits all alike.
# The anti-fake checks of the tests run alongside (the nk guest has only
# lo and no TCP socket, the NSM owns the remote-facing sockets and burns
# the CPU, pasta/slirp4netns own theirs); a failed check fails the bench.
#
#   tools/bench.sh [--quick] [--reps N] [--out DIR] [--no-profile] [--profile]
#                  [--only STAGE,...] [--paths PATH,...] [--cc NAME]
#
# --only runs a subset of the stages (bulk, rr, wrk, cps, vm, idle, profile,
# density) and --paths a subset of the paths (native, nk, pasta, slirp,
# nklat, nkbp, nkxdp),
# for before/after comparisons while working on one cost; --cc NAME sets
# TCP congestion control NAME in every namespace of the run (guests,
# NSMs, pasta's and slirp4netns' hosts, the remote host) instead of the
# machine's default (not the QEMU guest's own kernel of the vm stage,
# which keeps its default).  Any of the three writes to $OUTPUT/bench/,
# never to docs/.
#
# Full run: docs/benchmarks.md and docs/img/benchmarks.png (the part
# between the bench markers is regenerated; text around it is kept).
# --quick: one repetition, short durations, written to $OUTPUT/bench/.
# Raw samples: $OUTPUT/bench/results.tsv.

NK_TEST_NAME=bench
# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/../selftests/lib.sh"

BENCH_CMD="tools/bench.sh $*"
QUICK=0
REPS=
OUT=
PROFILE=
ONLY=
ONLY_PATHS=
CC=
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--reps) REPS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--profile) PROFILE=1 ;;
	--no-profile) PROFILE=0 ;;
	--only) ONLY=,$2,; shift ;;
	--paths) ONLY_PATHS=$2; shift ;;
	--cc) CC=$2; [ -n "$CC" ] || { echo "bench: --cc needs a name" >&2; exit 2; }; shift ;;
	-h | --help) sed -n '/^#   tools/,/^#                  /p' "$0"; exit 0 ;;
	*) echo "bench: unknown argument '$1'" >&2; exit 2 ;;
	esac
	shift
done

if [ "$QUICK" = 1 ]; then
	REPS=${REPS:-1}
	T_BULK=1 T_RR=1 T_WRK=1 T_CPS=1 T_DENS=1 T_IDLE=3 T_PROF=1 T_COST=1 T_VM=1
	PROFILE=${PROFILE:-0}
	OUT=${OUT:-$OUTPUT/bench}
else
	REPS=${REPS:-3}
	T_BULK=2 T_RR=3 T_WRK=2 T_CPS=2 T_DENS=2 T_IDLE=10 T_PROF=4 T_COST=2 T_VM=2
	PROFILE=${PROFILE:-1}
	OUT=${OUT:-$NK_SRCDIR/docs}
fi
[ -z "$ONLY$ONLY_PATHS$CC" ] || OUT=${OUT/#$NK_SRCDIR\/docs/$OUTPUT/bench}
case $CC in
*[!a-z0-9_]*) echo "bench: --cc '$CC': not a congestion control name" >&2; exit 2 ;;
esac
NK_NETNS_TCP_CC=$CC
for st in ${ONLY//,/ }; do
	case $st in
	bulk | rr | wrk | cps | idle | profile | density | vm) ;;
	*) echo "bench: unknown stage '$st' (bulk rr wrk cps idle profile density vm)" >&2; exit 2 ;;
	esac
done
# have_path PATH: PATH is measured (all of them unless --paths names a subset)
have_path()
{
	[[ " ${PATHS[*]} " == *" $1 "* ]]
}
# want STAGE: the stage runs (all of them unless --only names a subset)
want()
{
	[ -z "$ONLY" ] || [[ $ONLY == *",$1,"* ]]
}
want profile || PROFILE=0
DENS_NS=(1 4 16)
DENS_MAX=16
DENS_DELAY_MS=10	# per-guest light load: one connection, ~100 requests/s
IDLE_CONNS=100
WRK_ARGS=(-t2 -c64)
CPS_THREADS=4
# nkbp only when --paths names it: the full run stays under 10 minutes
# with the real VMs' stage (busy polling alone is in the full runs of
# docs/benchmarks.md up to 2026-11-26 15:09)
PATHS=(native nk pasta slirp nklat nkxdp)
BUSY_POLL_US=30	# the NSMs of the nkbp and nklat paths
if [ -n "$ONLY_PATHS" ]; then
	IFS=, read -r -a PATHS <<<"$ONLY_PATHS"
	for p in "${PATHS[@]}"; do
		case $p in
		native | nk | pasta | slirp | nklat | nkbp | nkxdp) ;;
		*) echo "bench: unknown path '$p' (native nk pasta slirp nklat nkbp nkxdp)" >&2; exit 2 ;;
		esac
	done
fi
# the paths with nginx in the guest (wrk) and the connection workload: all
# but nkxdp, which measures what steering adds to the packets' way
WEB_PATHS=()
for p in "${PATHS[@]}"; do
	[ "$p" = nkxdp ] || WEB_PATHS+=("$p")
done
# four-stream transfers: all but nkxdp too (its one-stream runs show what
# steering costs, and the full run stays under 10 minutes)
BULK4_PATHS=("${WEB_PATHS[@]}")

BDIR=$OUTPUT/bench
RES=$BDIR/results.tsv
META=$BDIR/meta.tsv
CHECKS=$BDIR/checks.txt
NKCPS=$OUTPUT/bench/nk_cps
NKWAKE=$OUTPUT/bench/nk_wake
mkdir -p "$BDIR"
: >"$RES"
: >"$META"

nk_require_root
nk_require_cmds iperf3 sockperf wrk nginx pasta slirp4netns gnuplot ss perf
! have_path nkxdp || nk_require_cmds bpftool
nk_require_build
[ -x "$NKCPS" ] && [ -x "$NKWAKE" ] || nk_die "$NKCPS or $NKWAKE is missing (run make)"
# Run private copies of the binaries: a rebuild in the tree during the run
# (others build there too) must not swap them under the benchmark.
mkdir -p "$NK_TMP/bin"
cp -p "$OUTPUT"/{nkd,nkctl,nk-nsm,nk-run,libnkguest.so,nk-vhost-vsock} "$NKCPS" "$NK_TMP/bin/" ||
	nk_die "cannot copy the binaries of $OUTPUT"
OUTPUT=$NK_TMP/bin
NKCPS=$OUTPUT/nk_cps

BENCH_T0=$(date +%s)

# ---------------------------------------------------------------- recording

REP=0
# rec PATH WORKLOAD METRIC VALUE
rec()
{
	printf '%s\t%s\t%s\t%s\t%s\n' "$REP" "$1" "$2" "$3" "$4" >>"$RES"
}

meta()
{
	printf '%s\t%s\n' "$1" "$2" >>"$META"
}

# sched_ns PID...: CPU time (ns, all threads) of the processes; gone ones count 0.
sched_ns()
{
	local p t n=0 v
	for p in "$@"; do
		for t in /proc/"$p"/task/*/schedstat; do
			[ -r "$t" ] || continue
			read -r v _ <"$t" 2>/dev/null || continue
			n=$((n + v))
		done
	done
	echo "$n"
}

# The kernel's worker threads: ksoftirqd (softirq work no process paid
# for) and kworker (work items: the in-kernel relay sends its redirected
# skbs from one).  kworkers come and go, so each sample is a PID -> run
# time table, and kthreads_delta counts a thread born in between in full.
declare -A KT0 KT1
kthreads_sample()
{
	local -n tab=$1
	local f c p v
	tab=()
	for f in /proc/[0-9]*/comm; do
		# (the braces: a process gone meanwhile says nothing)
		{ read -r c <"$f"; } 2>/dev/null || continue
		case $c in
		ksoftirqd/* | kworker/*)
			p=${f#/proc/}
			p=${p%/comm}
			# tab: a nameref to the caller's associative table
			# shellcheck disable=SC2034,SC2004
			{ read -r v _ <"/proc/$p/schedstat"; } 2>/dev/null && tab[$p]=$v
			;;
		esac
	done
}

kthreads_delta()
{
	local p n=0
	for p in "${!KT1[@]}"; do
		n=$((n + KT1[$p] - ${KT0[$p]:-0}))
	done
	echo "$n"
}

# busy_ticks: non-idle jiffies of the whole machine (/proc/stat).
busy_ticks()
{
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

ns2s()
{
	awk -v n="$1" 'BEGIN { printf "%.4f", n / 1e9 }'
}

# ---------------------------------------------------------------- machine

idle_sample()
{
	local a b
	a=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	sleep 2
	b=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y);
		printf "%.0f", 100 * (1 - (y[2] - x[2]) / (y[1] - x[1])) }'
}

meta command "$BENCH_CMD"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta nproc "$(nproc)"
meta kernel "$(uname -r)"
meta cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta mem "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
meta git "$(git -C "$NK_SRCDIR" rev-parse --short HEAD 2>/dev/null)$(git -C "$NK_SRCDIR" diff --quiet HEAD -- nsm ctl guest-shim lib include 2>/dev/null || echo ' (+ uncommitted changes in the data path)')"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta busy_start "$(idle_sample)"
# What a system call and a wakeup cost on this machine: NetKernel adds both.
# perf_us CMD...: the usecs/op a perf bench command reports.
perf_us()
{
	"$@" 2>/dev/null | awk '/usecs\/op/ { print $1 }'
}
meta syscall_us "$(perf_us perf bench syscall basic -l 200000)"
meta pipe_rtt_us "$(perf_us perf bench sched pipe -l 10000)"
# ... on one CPU, between processes and between threads: what a wakeup costs
# without waking an idle CPU, and without switching address spaces.
meta pipe_rtt_1cpu_us "$(perf_us taskset 1 perf bench sched pipe -l 10000)"
meta pipe_rtt_1cpu_thr_us "$(perf_us taskset 1 perf bench sched pipe -T -l 10000)"
# ... and between processes pinned to two different CPUs: every half round
# trip wakes the other CPU, which may have gone idle (a VM's idle vCPU
# halts, and waking it is the hypervisor's work).
[ "$(nproc)" -lt 2 ] ||
	meta pipe_rtt_2cpu_us "$("$NKWAKE" 0 1 20000 | sed -n 's/^usecs_per_round_trip=//p')"
meta quick "$QUICK"
meta reps "$REPS"
meta durations "bulk ${T_BULK}s, rr ${T_RR}s, wrk ${T_WRK}s, cps ${T_CPS}s, density ${T_DENS}s, idle ${T_IDLE}s, real VMs ${T_VM}s per run"
meta versions "iperf3 $(iperf3 --version | awk 'NR == 1 { print $2 }'), sockperf $(dpkg-query -W -f='${Version}' sockperf 2>/dev/null), wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null), nginx $(nginx -v 2>&1 | sed 's|.*/||'), passt $(dpkg-query -W -f='${Version}' passt 2>/dev/null), slirp4netns $(dpkg-query -W -f='${Version}' slirp4netns 2>/dev/null)"
meta wrk_args "${WRK_ARGS[*]}"
meta cps_threads "$CPS_THREADS"

# ---------------------------------------------------------------- topology

# The shared uplink of the nkxdp path exists before nkd starts with
# --uplink; its far end moves into the remote host once that exists.
# (Only when the path is measured: --paths without it needs no XDP.)
UPLINK=nku-$S
NSM4=nsm4-$S
NK_PIN=/sys/fs/bpf/nk-bench-$S
NSM4_PID='' XDP_IN='' XDP_OUT=''
if have_path nkxdp; then
	nk_uplink_cleanup "$NK_PIN" "$UPLINK" "$NSM4"
	ip link add "$UPLINK" type veth peer name "upl-$S" || nk_die "cannot create the uplink veth pair"
	ip link set "$UPLINK" up
	NK_NKD_ARGS+=(--uplink "$UPLINK" --pin-dir "$NK_PIN")
fi
nk_topo_up		# remote-$S, nsm-$S, g1/g2 (lo only), nkd, nsm1, vm1, vm2
NSM_PID=$NK_NSM_PID
R=remote-$S
# the default path is what nkd starts by default: splice, bulk polling
# "auto" (what it chose, and from which round trip, as nkd shows it)
meta nsm1_args "$(nk_nsm_opts "$NSM_PID")"
meta nsm1_bulk_poll "$(nkctl -j nsm show nsm1 | "$NK_PY" -c '
import json, sys
r = json.load(sys.stdin).get("running") or {}
print("%s %s %s" % (r.get("bulk_poll"), r.get("bulk_poll_auto", False), r.get("wakeup_us", "")))')"

# veth_pair NS DEV ADDR RDEV RADDR [GW]: DEV in NS <-> RDEV in the remote host
veth_pair()
{
	local ns=$1 dev=$2 addr=$3 rdev=$4 raddr=$5 gw=${6:-}
	nk_veth "$ns" "$dev" "$R" "$rdev"
	ip -n "$ns" addr add "$addr/24" dev "$dev"
	ip -n "$R" addr add "$raddr/24" dev "$rdev"
	[ -z "$gw" ] || ip -n "$ns" route add default via "$gw"
}

# Native guests n1..n16, n_i owns 10.79.i.2 on its veth to remote 10.79.i.1.
native_guest_up()
{
	local i=$1
	nk_netns_add "n$i-$S"
	veth_pair "n$i-$S" eth0 "10.79.$i.2" "nat$i" "10.79.$i.1" "10.79.$i.1"
}

log_step "NetKernel for latency: nsm2 (relay kernel busy-poll $BUSY_POLL_US), vm20, guest g20"
nk_nsm_path nsm2 kr krr0 10.76.0 vm20 g20 relay kernel busy-poll "$BUSY_POLL_US"
NSM2_PID=$NK_PATH_NSM_PID
check "nsm2 (pid $NSM2_PID) has the in-kernel relay on" wait_for -t 5 grep -q \
	'in-kernel relay of guest -> network data: on' "$NK_STATE/nsm-nsm2.log"
check "nsm2 (pid $NSM2_PID) runs with --busy-poll=$BUSY_POLL_US" nk_nsm_has_opt "$NSM2_PID" "--busy-poll=$BUSY_POLL_US"

NSM3_PID=''
if have_path nkbp; then
	log_step "NetKernel with busy polling: nsm3 (busy-poll $BUSY_POLL_US), vm30, guest g30"
	nk_nsm_path nsm3 bp bpr0 10.75.0 vm30 g30 busy-poll "$BUSY_POLL_US"
	NSM3_PID=$NK_PATH_NSM_PID
	check "nsm3 (pid $NSM3_PID) runs with --busy-poll=$BUSY_POLL_US" nk_nsm_has_opt "$NSM3_PID" "--busy-poll=$BUSY_POLL_US"
fi

if have_path nkxdp; then
	log_step "NetKernel on the shared uplink: $NSM4 created and steered by nkd (XDP), vm40, guest g40"
	ip link set "upl-$S" netns "$R" name xdp0 || nk_die "cannot move the uplink's far end"
	ip -n "$R" addr add 10.74.0.1/24 dev xdp0
	ip -n "$R" link set xdp0 up
	nk_uplink_far_end "$R" xdp0
	NK_NETNS+=("nk-$NSM4")
	nk_run_nkctl nsm add "$NSM4" type kernel >/dev/null
	NK_NSMS+=("$NSM4")
	wait_for -t 10 nk_nsm_pid "nk-$NSM4" || nk_die "no nk-nsm process in nk-$NSM4"
	NSM4_PID=$(nk_nsm_pid "nk-$NSM4")
	# nkd made this namespace: --cc applies to it here, before any traffic
	[ -z "$CC" ] || nk_netns_tcp_cc "nk-$NSM4" "$CC"
	nk_netns_add "g40-$S"
	nk_run_nkctl vm add vm40 nsm "$NSM4" addr 10.74.0.2/24 uds "$NK_TMP/vm40.vsock" >/dev/null
	wait_for -t 10 test -S "$NK_TMP/vm40.vsock_7531" || nk_die "nkd does not serve vm40"
	wait_for -t 10 nk_has_addr "nk-$NSM4" eth0 10.74.0.2 || nk_die "10.74.0.2 did not appear in nk-$NSM4"
	# the XDP programs of the path: the uplink's ingress and the NSM's egress
	XDP_IN=$(nk_xdp_prog_ids "$UPLINK")
	XDP_OUT=$(nk_xdp_prog_ids "nkh-$NSM4")
	check "nkd's XDP program on the uplink $UPLINK (id ${XDP_IN:-none}) and on nkh-$NSM4 (id ${XDP_OUT:-none})" \
		test -n "$XDP_IN" -a -n "$XDP_OUT"
fi

log_step "peer paths: native guest, pasta, slirp4netns"
native_guest_up 1
nk_netns_add "ph-$S"
nk_netns_add "pg-$S"
veth_pair "ph-$S" p0 10.78.2.2 pas0 10.78.2.1 10.78.2.1
nk_netns_add "sh-$S"
nk_netns_add "sg-$S"
veth_pair "sh-$S" s0 10.78.3.2 slp0 10.78.3.1 10.78.3.1

# The connection workload opens many client sockets: widen the port range
# wherever a path's client-side kernel sockets live.
for ns in "n1-$S" "nsm-$S" "ph-$S" "pg-$S" "sh-$S" "sg-$S" "kr-$S" ${NSM3_PID:+"bp-$S"}; do
	ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
done
# The remote host is the client of the Connection: close workload. wrk
# closes as soon as a response is complete, so whenever the server's FIN
# is not in yet (13% of connections natively, 19-21% through NetKernel in
# scratch runs) the TIME_WAIT socket is the remote host's and holds one
# of its ports for 60 s. With the default 28k ports each path's run found
# the earlier paths' TIME_WAIT sockets in the table and its connect()s
# grew dearer (a second run right after the first fell to 1k requests/s).
# A load generator's usual settings keep each path's run independent of
# the order: all the ports, and reuse of a TIME_WAIT port after 1 s.
ip netns exec "$R" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1

# pasta (as root: --runas 0, an existing netns, --netns-only); --no-map-gw
# so the remote host's address is the remote host, not pasta's loopback.
nk_bg "ph-$S" "$NK_TMP/pasta.log" pasta --runas 0 -f -q -4 --config-net \
	--netns "pg-$S" --netns-only --no-map-gw -t 80,81 -u none -T none -U none
PASTA_PID=$NK_BG_PID
nk_bg "sh-$S" "$NK_TMP/slirp.log" slirp4netns --configure --mtu=65520 \
	--disable-host-loopback --api-socket "$NK_TMP/slirp.sock" \
	--netns-type=path "/run/netns/sg-$S" tap0
SLIRP_PID=$NK_BG_PID
has_default_route()
{
	ip -n "$1" route show default | grep -q .
}
wait_for -t 10 has_default_route "pg-$S" || nk_die "pasta did not configure pg-$S (log: $NK_TMP/pasta.log)"
wait_for -t 10 has_default_route "sg-$S" || nk_die "slirp4netns did not configure sg-$S"
wait_for -t 10 test -S "$NK_TMP/slirp.sock" || nk_die "no slirp4netns API socket"
"$NK_PY" - "$NK_TMP/slirp.sock" >"$NK_TMP/slirp-api.out" 2>&1 <<'EOF'
import json, socket, sys
for port in (80, 81):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(json.dumps({"execute": "add_hostfwd", "arguments": {
        "proto": "tcp", "host_addr": "10.78.3.2", "host_port": port,
        "guest_port": port}}).encode())
    print(s.recv(4096).decode())
    s.close()
EOF
check_eq "slirp4netns add_hostfwd 10.78.3.2:80 and :81 -> guest" \
	"$(grep -c '"return"' "$NK_TMP/slirp-api.out")" 2
log_info "pasta pid $PASTA_PID (ph-$S -> pg-$S), slirp4netns pid $SLIRP_PID (sh-$S -> sg-$S)"

# Per path: guest namespace, the remote address it dials, the address the
# remote host dials for the guest's server, the daemons of the path.
declare -A GNS RADDR GADDR DAEMONS
GNS=([native]="n1-$S" [nk]="g1-$S" [pasta]="pg-$S" [slirp]="sg-$S" [nklat]="g20-$S"
	[nkbp]="g30-$S" [nkxdp]="g40-$S")
RADDR=([native]=10.79.1.1 [nk]=10.77.0.1 [pasta]=10.78.2.1 [slirp]=10.78.3.1 [nklat]=10.76.0.1
	[nkbp]=10.75.0.1 [nkxdp]=10.74.0.1)
GADDR=([native]=10.79.1.2 [nk]=10.77.0.2 [pasta]=10.78.2.2 [slirp]=10.78.3.2 [nklat]=10.76.0.2
	[nkbp]=10.75.0.2 [nkxdp]=10.74.0.2)
DAEMONS=([native]="" [nk]="$NSM_PID $NKD_PID" [pasta]="$PASTA_PID" [slirp]="$SLIRP_PID"
	[nklat]="$NSM2_PID $NKD_PID" [nkbp]="$NSM3_PID $NKD_PID" [nkxdp]="$NSM4_PID $NKD_PID")
# the guest of a NetKernel path (nk-run with that VM's transport)
declare -A NKG=([nk]=g1 [nklat]=g20 [nkbp]=g30 [nkxdp]=g40)
# the namespace holding the path's remote-facing sockets, and their owner
declare -A SOCKNS SOCKPID
SOCKNS=([native]="n1-$S" [nk]="nsm-$S" [pasta]="ph-$S" [slirp]="sh-$S" [nklat]="kr-$S"
	[nkbp]="bp-$S" [nkxdp]="nk-$NSM4")
SOCKPID=([native]="" [nk]="$NSM_PID" [pasta]="$PASTA_PID" [slirp]="$SLIRP_PID" [nklat]="$NSM2_PID"
	[nkbp]="$NSM3_PID" [nkxdp]="$NSM4_PID")

# gx PATH CMD...: run CMD in the path's guest (under nk-run for nk).
gx()
{
	local p=$1
	shift
	if [ -n "${NKG[$p]:-}" ]; then
		nk_guest "${NKG[$p]}" "$@"
	else
		ip netns exec "${GNS[$p]}" "$@"
	fi
}

# gbg PATH LOG CMD...: gx in the background (PID in NK_BG_PID).
gbg()
{
	local p=$1 logf=$2
	shift 2
	if [ -n "${NKG[$p]:-}" ]; then
		nk_guest_bg "${NKG[$p]}" "$logf" "$@"
	else
		nk_bg "${GNS[$p]}" "$logf" "$@"
	fi
}

only_lo()
{
	[ "$(ip -n "$1" -o link show | awk -F': ' '{ print $2 }' | tr '\n' ' ')" = "lo " ]
}
check "nk guest g1-$S has only lo" only_lo "g1-$S"
check "nklat guest g20-$S has only lo" only_lo "g20-$S"
! have_path nkbp || check "nkbp guest g30-$S has only lo" only_lo "g30-$S"
! have_path nkxdp || check "nkxdp guest g40-$S has only lo" only_lo "g40-$S"
check "pasta guest has pasta's tap, no veth" bash -c "! ip -n pg-$S -d link show | grep -q veth"
check "slirp guest has slirp's tap, no veth" bash -c "! ip -n sg-$S -d link show | grep -q veth"

# ---------------------------------------------------------------- servers

log_step "servers on the remote host and nginx in each guest"
nk_bg "$R" "$NK_TMP/iperf3-s.log" iperf3 -s -p 5201
IPERF_SRV=$NK_BG_PID
nk_bg "$R" "$NK_TMP/sockperf-s.log" sockperf sr --tcp -i 0.0.0.0 -p 11111
nk_bg "$R" "$NK_TMP/cps-s.log" "$NKCPS" serve 7000
nk_bg "$R" "$NK_TMP/hold-s.log" "$NKCPS" serve -H 7001
for port in 5201 11111 7000 7001; do
	wait_port "n1-$S" 10.79.1.1 $port || nk_die "remote server on port $port did not start"
done

WWW=$NK_TMP/www
mkdir -p "$WWW"
head -c 1024 /dev/zero | tr '\0' x >"$WWW/index.html"
declare -A NGINX
for p in "${PATHS[@]}"; do
	nk_nginx_prep "$NK_TMP/nginx-$p" 1 80 "$WWW"
	gbg "$p" "$NK_TMP/nginx-$p.log" "${NK_NGINX_ARGV[@]}"
	NGINX[$p]=$NK_BG_PID
done
# A second nginx on port 81 with what Debian's nginx.conf sets besides:
# `tcp_nopush on` (TCP_CORK on and off around every response).
for p in "${WEB_PATHS[@]}"; do
	nk_nginx_prep "$NK_TMP/nginx-np-$p" 1 81 "$WWW"
	sed -i 's/^\tsendfile on;$/&\n\ttcp_nopush on;/' "$NK_TMP/nginx-np-$p/nginx.conf"
	grep -q '^	tcp_nopush on;$' "$NK_TMP/nginx-np-$p/nginx.conf" ||
		nk_die "nginx-np-$p: no tcp_nopush in its nginx.conf"
	gbg "$p" "$NK_TMP/nginx-np-$p.log" "${NK_NGINX_ARGV[@]}"
done
for p in "${PATHS[@]}"; do
	wait_for -t 10 nk_tcp_open "$R" "${GADDR[$p]}" 80 ||
		nk_die "nginx of path $p not reachable at ${GADDR[$p]}:80"
done
for p in "${WEB_PATHS[@]}"; do
	wait_for -t 10 nk_tcp_open "$R" "${GADDR[$p]}" 81 ||
		nk_die "nginx (tcp_nopush on) of path $p not reachable at ${GADDR[$p]}:81"
done
if [[ " ${PATHS[*]} " == *" nk "* ]]; then	# --paths may leave it out
	check "nk-nsm holds nk guest nginx's listener on 10.77.0.2:80" bash -c \
		"ip netns exec nsm-$S ss -Htlnp | grep -E '10.77.0.2:80 |\\*:80 ' | grep -q 'pid=$NSM_PID,'"
	check_eq "no TCP socket of its own in g1-$S with nginx listening" "$(ip netns exec "g1-$S" ss -Htan)" ""
fi

# ---------------------------------------------------------------- anti-fake

# sock_owner PATH PORT: remote-facing connections to PORT are held by the
# path's daemon (or for native by the guest's own stack).
sock_owner_ok()
{
	local p=$1 port=$2 est
	est=$(ip netns exec "${SOCKNS[$p]}" ss -Htnp state established dst "${RADDR[$p]}" dport = ":$port")
	[ -n "$est" ] || return 1
	[ -z "${SOCKPID[$p]}" ] && return 0
	echo "$est" | grep -q "pid=${SOCKPID[$p]},"
}

# midcheck PATH PORT WORKLOAD: while a client workload runs (once per
# path and workload: the first repetition).
declare -A MIDCHECKED
midcheck()
{
	local p=$1 port=$2 wl=$3
	[ -z "${MIDCHECKED[$p-$wl]:-}" ] || return 0
	MIDCHECKED[$p-$wl]=1
	check "$p $wl: ${SOCKNS[$p]} holds the connection to ${RADDR[$p]}:$port${SOCKPID[$p]:+ (owner pid ${SOCKPID[$p]})}" \
		wait_for -t 5 sock_owner_ok "$p" "$port"
	if [ -n "${NKG[$p]:-}" ]; then
		check_eq "$p $wl: no TCP socket in ${GNS[$p]}" "$(ip netns exec "${GNS[$p]}" ss -Htan)" ""
		check "$p $wl: ${GNS[$p]} still has only lo" only_lo "${GNS[$p]}"
	fi
	if [ "$p" = nklat ]; then
		check "nklat $wl: the verdict program is moving this connection's bytes (relay_conns)" \
			wait_for -t 5 relay_moving
	fi
}

# relay_moving: a connection in nsm2's relay_conns with bytes counted
relay_moving()
{
	nk_relay_conns "$NSM2_PID" | grep -qE '[1-9]'
}

# daemon_rose PATH WL NS: the path's daemons did work during the run
daemon_rose()
{
	local p=$1 wl=$2 ns=$3 min=$4
	[ -n "${DAEMONS[$p]}" ] || return 0
	# with the in-kernel relay a guest -> remote transfer leaves the
	# NSM idle (that is the point); relay_moving checks it instead
	[ "$p-$wl" != nklat-bulk ] || return 0
	[ -z "${MIDCHECKED[$p-$wl-cpu]:-}" ] || return 0
	MIDCHECKED[$p-$wl-cpu]=1
	check_gt "$p $wl: CPU of the path's daemon(s) rose (ms)" "$((ns / 1000000))" "$min"
}

# ---------------------------------------------------------------- workloads

# bulk PATH WL ARGS...: one iperf3 run; throughput and CPU per gigabit.
bulk()
{
	local p=$1 wl=$2 d0 d1 k0 k1 r0 r1 b0 b1 out line gpid
	shift 2
	out=$NK_TMP/iperf-$p-$wl-$REP.json
	[ "$p" != nkxdp ] || xdp_begin	# outside the CPU accounting
	# shellcheck disable=SC2086
	d0=$(sched_ns ${DAEMONS[$p]})
	kthreads_sample KT0
	r0=$(sched_ns "$IPERF_SRV") b0=$(busy_ticks)
	gbg "$p" "$out" timeout $((T_BULK + 20)) iperf3 -c "${RADDR[$p]}" -p 5201 \
		-t "$T_BULK" -J "$@"
	gpid=$NK_BG_PID
	midcheck "$p" 5201 bulk
	wait "$gpid"
	# shellcheck disable=SC2086
	d1=$(sched_ns ${DAEMONS[$p]})
	kthreads_sample KT1
	k0=0 k1=$(kthreads_delta)
	r1=$(sched_ns "$IPERF_SRV") b1=$(busy_ticks)
	[ "$p" != nkxdp ] || xdp_end "$wl"
	daemon_rose "$p" bulk $((d1 - d0)) 10
	line=$("$NK_PY" - "$out" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("error", "bad_json"); sys.exit()
if "error" in d:
    print("error", d["error"].replace(" ", "_")); sys.exit()
e = d["end"]
r = e["sum_received"]
print(r["bits_per_second"], r["bytes"], r["seconds"],
      e["cpu_utilization_percent"]["host_total"] * r["seconds"] / 100)
EOF
)
	# shellcheck disable=SC2086
	set -- $line
	if [ "$1" = error ] || [ $# -ne 4 ]; then
		log_info "$p $wl: iperf3 failed (${2:-?})"
		rec "$p" "$wl" error "${2:-iperf3}"
		return
	fi
	local gbit cpu
	gbit=$(awk -v b="$2" 'BEGIN { printf "%.4f", b * 8 / 1e9 }')
	cpu=$(awk -v g="$4" -v r="$((r1 - r0))" -v d="$((d1 - d0))" -v k="$((k1 - k0))" \
		'BEGIN { printf "%.4f", g + (r + d + k) / 1e9 }')
	rec "$p" "$wl" gbps "$(awk -v b="$1" 'BEGIN { printf "%.3f", b / 1e9 }')"
	rec "$p" "$wl" gbit "$gbit"
	rec "$p" "$wl" cpu_s "$cpu"
	rec "$p" "$wl" cpu_guest_s "$4"
	rec "$p" "$wl" cpu_remote_s "$(ns2s $((r1 - r0)))"
	rec "$p" "$wl" cpu_daemon_s "$(ns2s $((d1 - d0)))"
	rec "$p" "$wl" cpu_softirqd_s "$(ns2s $((k1 - k0)))"
	rec "$p" "$wl" machine_busy_s "$(awk -v t=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }')"
	rec "$p" "$wl" cpu_s_per_gbit "$(awk -v c="$cpu" -v g="$gbit" 'BEGIN { printf "%.4f", (g > 0 ? c / g : 0) }')"
	log_info "$p $wl: $(awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e9 }') Gbit/s, $cpu CPU s for $gbit Gbit"
}

# xdp_begin / xdp_end WL: around a run of the nkxdp path, the run time per
# packet of nkd's two XDP programs (the uplink's ingress, the NSM's egress
# veth) from the kernel's BPF statistics, on only for these runs (they cost
# two clock reads per packet).
XDP_STATS0=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)
# xdp_sample ID: "run_time_ns run_cnt" of program ID, nothing if bpftool
# cannot show it (with -j it reports errors on stdout, as JSON).
xdp_sample()
{
	bpftool prog show id "$1" -j 2>/dev/null | "$NK_PY" -c '
import json, sys
try:
    j = json.load(sys.stdin)
except ValueError:
    sys.exit()
if "error" not in j and "id" in j:
    print(j.get("run_time_ns", 0), j.get("run_cnt", 0))' 2>/dev/null
}
XDP_STATS_ON=0
xdp_begin()
{
	XI0='' XO0=''
	sysctl -qw kernel.bpf_stats_enabled=1 || { log_info "nkxdp: cannot turn BPF statistics on"; return 0; }
	XDP_STATS_ON=1
	XI0=$(xdp_sample "$XDP_IN") XO0=$(xdp_sample "$XDP_OUT")
}
# xdp_rec WL DIR T0 N0 T1 N1: one program's packets and ns per packet,
# when its count rose
xdp_rec()
{
	local n=$(($6 - $4))
	[ "$n" -gt 0 ] || { log_info "nkxdp $1: no packets counted by the $2 program"; return 0; }
	rec nkxdp "$1" "xdp_$2_pkts" "$n"
	rec nkxdp "$1" "xdp_$2_ns" "$(awk -v t=$(($5 - $3)) -v n="$n" 'BEGIN { printf "%.1f", t / n }')"
}
xdp_end()
{
	local wl=$1 xi xo
	[ "$XDP_STATS_ON" = 1 ] || return 0
	xi=$(xdp_sample "$XDP_IN") xo=$(xdp_sample "$XDP_OUT")
	sysctl -qw kernel.bpf_stats_enabled="$XDP_STATS0"
	XDP_STATS_ON=0
	# shellcheck disable=SC2086
	set -- $XI0 $xi
	if [ $# -eq 4 ]; then xdp_rec "$wl" in "$@"; else log_info "nkxdp $wl: no BPF statistics (ingress)"; fi
	# shellcheck disable=SC2086
	set -- $XO0 $xo
	if [ $# -eq 4 ]; then xdp_rec "$wl" out "$@"; else log_info "nkxdp $wl: no BPF statistics (egress)"; fi
}
# the statistics back off if the bench stops during an nkxdp run
xdp_stats_restore()
{
	[ "$XDP_STATS_ON" = 0 ] || sysctl -qw kernel.bpf_stats_enabled="$XDP_STATS0"
}
NK_CLEANUP_HOOKS+=(xdp_stats_restore)

# rr PATH: sockperf TCP ping-pong, mean and p99 round trip.
rr()
{
	local p=$1 out d0 d1 mean p99 gpid
	out=$NK_TMP/sockperf-$p-$REP.log
	# shellcheck disable=SC2086
	d0=$(sched_ns ${DAEMONS[$p]})
	[ "$p" != nkxdp ] || xdp_begin
	gbg "$p" "$out" timeout $((T_RR + 15)) sockperf pp --tcp -i "${RADDR[$p]}" \
		-p 11111 -t "$T_RR" --full-rtt
	gpid=$NK_BG_PID
	midcheck "$p" 11111 rr
	wait "$gpid"
	[ "$p" != nkxdp ] || xdp_end rr
	# shellcheck disable=SC2086
	d1=$(sched_ns ${DAEMONS[$p]})
	daemon_rose "$p" rr $((d1 - d0)) 5
	mean=$(sed -n 's/.*avg-rtt=\([0-9.]*\).*/\1/p' "$out" | tail -n 1)
	p99=$(awk '/percentile 99.000 =/ { v = $NF } END { print v }' "$out")
	if [ -z "$mean" ] || [ -z "$p99" ]; then
		log_info "$p rr: sockperf failed"
		rec "$p" rr error sockperf
		return
	fi
	rec "$p" rr mean_us "$mean"
	rec "$p" rr p99_us "$p99"
	log_info "$p rr: mean $mean us, p99 $p99 us"
}

# web PATH WL [ARGS]: wrk from the remote host against nginx in the guest.
web()
{
	local p=$1 wl=$2 out rps d0 d1 errs
	shift 2
	out=$NK_TMP/wrk-$p-$wl-$REP.log
	# shellcheck disable=SC2086
	d0=$(sched_ns ${DAEMONS[$p]})
	ip netns exec "$R" timeout $((T_WRK + 15)) wrk "${WRK_ARGS[@]}" -d "${T_WRK}s" \
		"$@" "http://${GADDR[$p]}:${WEB_PORT:-80}/index.html" >"$out" 2>&1
	# shellcheck disable=SC2086
	d1=$(sched_ns ${DAEMONS[$p]})
	daemon_rose "$p" "$wl" $((d1 - d0)) 20
	rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
	errs=$(awk '/Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
		/Non-2xx/ { n += $NF } END { print n + 0 }' "$out")
	if [ -z "$rps" ]; then
		log_info "$p $wl: wrk failed"
		rec "$p" "$wl" error wrk
		return
	fi
	rec "$p" "$wl" rps "$rps"
	rec "$p" "$wl" errors "$errs"
	log_info "$p $wl: $rps requests/s, $errs errors"
}

# cps PATH: connections per second from the guest to the remote host.
cps()
{
	local p=$1 out gpid v
	out=$NK_TMP/cps-$p-$REP.log
	gbg "$p" "$out" timeout $((T_CPS + 15)) "$NKCPS" connect -t "$CPS_THREADS" \
		"${RADDR[$p]}" 7000 "$T_CPS"
	gpid=$NK_BG_PID
	wait "$gpid"
	v=$(sed -n 's/^cps=\([0-9.]*\) .*errors=\([0-9]*\).*/\1 \2/p' "$out")
	if [ -z "$v" ]; then
		log_info "$p cps: nk_cps failed ($(tail -n 1 "$out"))"
		rec "$p" cps error nk_cps
		return
	fi
	rec "$p" cps cps "${v% *}"
	rec "$p" cps errors "${v#* }"
	log_info "$p cps: ${v% *} connections/s, ${v#* } errors"
}

# ---------------------------------------------------------------- main runs

for ((REP = 1; REP <= REPS; REP++)); do
	log_step "repetition $REP of $REPS"
	if want bulk; then
		for p in "${PATHS[@]}"; do bulk "$p" send1; done
		for p in "${PATHS[@]}"; do bulk "$p" recv1 -R; done
		for p in "${BULK4_PATHS[@]}"; do bulk "$p" send4 -P 4; done
		for p in "${BULK4_PATHS[@]}"; do bulk "$p" recv4 -P 4 -R; done
	fi
	if want rr; then
		for p in "${PATHS[@]}"; do rr "$p"; done
	fi
	if want wrk; then
		for p in "${WEB_PATHS[@]}"; do web "$p" wrk_ka; done
		for p in "${WEB_PATHS[@]}"; do WEB_PORT=81 web "$p" wrk_np; done
		for p in "${WEB_PATHS[@]}"; do web "$p" wrk_close -H 'Connection: close'; done
	fi
	if want cps; then
		for p in "${WEB_PATHS[@]}"; do cps "$p"; done
	fi
done
check "nk guest g1-$S has only lo after the runs" only_lo "g1-$S"
# (every NSM of the run: NK_NKD_EXTRA_ARGS may turn the relay on for all)
check_eq "no skb missed its relay_conns entry (nsm1, nsm2${NSM3_PID:+, nsm3})" \
	"$(nk_relay_misses "$NSM_PID" "$NSM2_PID" ${NSM3_PID:+"$NSM3_PID"} 2>/dev/null || echo '?')" 0

# ---------------------------------------------------------------- real VMs

# The product's transport (issue 9) in a real VM: a QEMU guest (TCG: this
# machine boots no stock kernel under KVM) whose programs reach the remote
# host through virtio-vsock -> nk-vhost-vsock -> nkd's vm50 socket -> nsm1
# (vm50, 10.77.0.50), against the same guest's own stack on a virtio-net
# NIC (tap0, bridged in vmn-$S with a veth to the remote host: 10.73.0.2).
# One boot with both devices; in each repetition the two alternate, the
# NetKernel runs under nk-run (AF_VSOCK), the others without it.  Bulk one
# stream each way and round trips (iperf3 -t T_VM, sockperf pp -t T_VM).
# No CPU figures: QEMU's CPU time is the emulator's.
# up0_bytes: bytes through nsm1's uplink veth, both ways
up0_bytes()
{
	ip netns exec "nsm-$S" cat /sys/class/net/up0/statistics/rx_bytes \
		/sys/class/net/up0/statistics/tx_bytes | awk '{ s += $1 } END { print s + 0 }'
}

vm_stage()
{
	local img=$NK_TMP/vmimg con=$NK_TMP/vm-console.log script=$NK_TMP/vm-bench.sh
	local nkb=$NK_TMP/vm-nkb.txt r p wl k v b0 b1 rc t0
	log_step "real VMs (QEMU TCG): the guest's vsock through NetKernel against its own virtio-net"
	if ! command -v qemu-system-x86_64 >/dev/null || [ ! -x /bin/busybox ]; then
		log_info "vm: qemu-system-x86 or busybox-static missing: stage skipped"
		return 0
	fi
	if ! have_path nk; then
		log_info "vm: the stage uses nsm1 of the nk path: skipped without it"
		return 0
	fi
	# the guest kernel into the cache from here (the VM's namespace has no
	# network for apt); nk-vm then takes it offline
	bash "$NK_SRCDIR/tools/vm/fetch-kernel.sh" >/dev/null 2>"$NK_TMP/fetch-kernel.log" ||
		{ log_info "vm: no guest kernel ($(tail -n 1 "$NK_TMP/fetch-kernel.log")): stage skipped"; return 0; }
	nk_run_nkctl vm add vm50 nsm nsm1 addr 10.77.0.50/24 uds "$NK_TMP/vm50.vsock" >/dev/null
	wait_for -t 10 test -S "$NK_TMP/vm50.vsock_7531" || nk_die "nkd does not serve vm50"
	wait_for -t 10 nk_has_addr "nsm-$S" up0 10.77.0.50 || nk_die "10.77.0.50 did not appear on up0"
	nk_netns_add "vmn-$S"
	nk_veth "vmn-$S" eth0 "$R" vmn0
	ip -n "$R" addr add 10.73.0.1/24 dev vmn0
	ip -n "vmn-$S" tuntap add tap0 mode tap
	ip -n "vmn-$S" link add br0 type bridge
	ip -n "vmn-$S" link set tap0 master br0
	ip -n "vmn-$S" link set eth0 master br0
	ip -n "vmn-$S" link set tap0 up
	ip -n "vmn-$S" link set br0 up
	cat >"$script" <<EOF
#!/bin/sh
# make bench's guest (tools/bench.sh vm_stage): "NKB REP PATH WL METRIC VALUE" lines
ip link set eth0 up
ip addr add 10.73.0.2/24 dev eth0
i=0
while ! ping -c 1 -W 1 10.73.0.1 >/dev/null 2>&1 && [ \$i -lt 20 ]; do i=\$((i + 1)); done
echo "NKB 0 vm all links \$(ip -o link | awk -F': ' '{ printf "%s,", \$2 }')"
echo "NKB 0 vm all start_s \$(cut -d' ' -f1 /proc/uptime)"
gbps() { awk '/receiver/ { for (i = 1; i <= NF; i++) if (\$i == "Mbits/sec") v = \$(i - 1) } END { print (v != "" ? v / 1000 : "error") }'; }
rtt() { awk '/avg-rtt=/ { sub(/.*avg-rtt=/, ""); sub(/ .*/, ""); m = \$0 } /percentile 99.000 =/ { p = \$NF } END { print (m != "" ? m : "error"), (p != "" ? p : "error") }'; }
tx() { cat /sys/class/net/eth0/statistics/tx_bytes; }
for r in \$(seq $REPS); do
	for p in vmnat vmnk; do
		if [ \$p = vmnk ]; then pre=nk-run R=10.77.0.1; else pre= R=10.73.0.1; fi
		t0=\$(tx)
		echo "NKB \$r \$p send1 gbps \$(timeout $((T_VM + 30)) \$pre iperf3 -c \$R -p 5201 -t $T_VM -f m 2>&1 | gbps)"
		echo "NKB \$r \$p recv1 gbps \$(timeout $((T_VM + 30)) \$pre iperf3 -c \$R -p 5201 -t $T_VM -f m -R 2>&1 | gbps)"
		set -- \$(timeout $((T_VM + 30)) \$pre sockperf pp --tcp -i \$R -p 11111 -t $T_VM --full-rtt 2>&1 | rtt)
		echo "NKB \$r \$p rr mean_us \$1"
		echo "NKB \$r \$p rr p99_us \$2"
		echo "NKB \$r \$p all eth0_tx_bytes \$((\$(tx) - t0))"
	done
done
echo "NKB 0 vm all end_s \$(cut -d' ' -f1 /proc/uptime)"
EOF
	b0=$(up0_bytes)
	rc=0
	t0=$(date +%s.%N)
	OUTPUT=$OUTPUT NK_VM_OFFLINE=1 ip netns exec "vmn-$S" "$NK_SRCDIR/tools/nk-vm" --uds "$NK_TMP/vm50.vsock" --tap tap0 \
		--add "$(command -v iperf3)" --add "$(command -v sockperf)" --script "$script" \
		--console "$con" --image "$img" --timeout $((REPS * 6 * (T_VM + 4) + 120)) \
		>"$NK_TMP/nk-vm.log" 2>&1 || rc=$?
	b1=$(up0_bytes)
	# the guest's result lines, without the console's CRs
	tr -d '\r' <"$con" | grep '^NKB ' >"$nkb"
	log_info "vm: nk-vm took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; in the guest: $(awk '$5 == "start_s" { a = $6 } $5 == "end_s" { b = $6 } END { printf "booted after %s s, the runs took %.1f s", a, b - a }' "$nkb")"
	check_eq "vm: the guest's script ran to its end (nk-vm's status; log $NK_TMP/nk-vm.log)" "$rc" 0
	check "vm: the guest's links are lo and eth0 (virtio-net; vsock is no link)" \
		grep -q '^NKB 0 vm all links lo,eth0,' "$nkb"
	local -A failed=()
	while read -r _ r p wl k v _; do
		if [[ ! $v =~ ^[0-9.]+$ ]]; then
			# one error per run (sockperf's failure gives two lines)
			[ -n "${failed[$r-$p-$wl]:-}" ] || REP=$r rec "$p" "$wl" error "${k}_${v:-missing}"
			failed[$r-$p-$wl]=1
			continue
		fi
		REP=$r rec "$p" "$wl" "$k" "$v"
	done < <(grep '^NKB [1-9]' "$nkb")
	# anti-fake: NetKernel's runs moved their bytes through nsm1's uplink
	# (idle otherwise during this stage), not through the guest's NIC
	check_gt "vm: nsm1's up0 carried vm50's transfers (its byte counters rose, MB)" \
		$(((b1 - b0) >> 20)) $((REPS * 4))
	v=$(awk '$2 > 0 && $3 == "vmnk" && $5 == "eth0_tx_bytes" {
		if ($6 !~ /^[0-9]+$/) m = 1e12; else if ($6 > m) m = $6 } END { print m + 0 }' "$nkb")
	check_lt "vm: the guest's eth0 sent almost nothing during NetKernel's runs (most in one repetition, bytes)" "$v" 100000
	nk_run_nkctl vm del vm50 >/dev/null
}

if want vm; then
	vm_stage
fi

# ---------------------------------------------------------------- idle cost

if want idle; then
	log_step "idle cost: $IDLE_CONNS idle guest connections through NetKernel"
	nk_guest_bg g2 "$NK_TMP/hold-c.log" "$NKCPS" hold 10.77.0.1 7001 "$IDLE_CONNS" $((T_IDLE + 30))
	HOLD=$NK_BG_PID
	held()
	{
		[ "$(ip netns exec "nsm-$S" ss -Htnp state established dst 10.77.0.1 dport = :7001 |
			grep -c "pid=$NSM_PID,")" -ge "$IDLE_CONNS" ]
	}
	if check "nk-nsm holds $IDLE_CONNS established connections of vm2 to 10.77.0.1:7001" wait_for -t 20 held; then
		sleep 1
		a=$(sched_ns "$NSM_PID") b=$(sched_ns "$NKD_PID") c=$(sched_ns "$HOLD")
		sleep "$T_IDLE"
		a=$(($(sched_ns "$NSM_PID") - a)) b=$(($(sched_ns "$NKD_PID") - b))
		c=$(($(sched_ns "$HOLD") - c))
		REP=1
		for x in "nsm:$a" "nkd:$b" "guest:$c"; do
			rec nk idle "${x%%:*}_core_pct" "$(awk -v n="${x#*:}" -v t="$T_IDLE" 'BEGIN { printf "%.4f", n / (t * 1e9) * 100 }')"
		done
		log_info "idle: nk-nsm $((a / 1000)) us, nkd $((b / 1000)) us, guest $((c / 1000)) us CPU over ${T_IDLE}s"
		check "held connections still open after ${T_IDLE}s" held
	fi
	nk_stop "$HOLD"
fi

# ---------------------------------------------------------------- profile

# Cost model: one run each of the RR and the bulk workload, apart from the
# timed runs above (the syscall tracepoint slows every call a little), with
# software counters (CPU time, context switches, system calls) on the guest
# program and on the path's daemons over a window of the steady state; the
# work done in the window comes from the program's own average rate.
PERF_EVENTS=task-clock,context-switches,raw_syscalls:sys_enter

# pstat OUT PID...: counters on the processes for T_COST seconds
pstat()
{
	local o=$1
	shift
	perf stat -x "," -o "$o" -e "$PERF_EVENTS" -p "$(echo "$@" | tr ' ' ,)" \
		-- sleep "$T_COST" >/dev/null 2>&1
}

# cost PATH WL: counters in the steady state of one run.
cost()
{
	local p=$1 wl=$2 gpid wpid dpids=() units log delay d i
	rm -f "$BDIR/stat-$p-$wl-"*.csv
	log=$NK_TMP/cost-$p-$wl.log
	case $wl in
	rr)
		delay=3		# sockperf sleeps about 2 s before it starts
		gbg "$p" "$log" sockperf pp --tcp -i "${RADDR[$p]}" -p 11111 -t $((T_COST + 2)) ;;
	bulk)
		delay=1
		gbg "$p" "$log" iperf3 -c "${RADDR[$p]}" -p 5201 -t $((T_COST + 2)) -J ;;
	cps)
		delay=0.5
		gbg "$p" "$log" "$NKCPS" connect -t 1 "${RADDR[$p]}" 7000 $((T_COST + 1)) ;;
	accept)
		# The guest program is nginx's worker; the load comes from
		# the remote host (wrk, a new connection per request).
		delay=0.5
		nk_bg "$R" "$log" wrk "${WRK_ARGS[@]}" -d "$((T_COST + 1))s" \
			-H "Connection: close" "http://${GADDR[$p]}/index.html" ;;
	esac
	gpid=$NK_BG_PID
	wpid=$gpid
	if [ "$wl" = accept ]; then
		gpid=$(pgrep -P "${NGINX[$p]}" | head -n 1)
		[ -n "$gpid" ] || { log_info "cost $p $wl: no nginx worker"; wait "$wpid"; return; }
	fi
	sleep "$delay"
	i=0
	for d in ${DAEMONS[$p]}; do	# each daemon on its own: nk-nsm, nkd
		i=$((i + 1))
		pstat "$BDIR/stat-$p-$wl-d$i.csv" "$d" &
		dpids+=($!)
	done
	pstat "$BDIR/stat-$p-$wl-g.csv" "$gpid"
	[ ${#dpids[@]} -eq 0 ] || wait "${dpids[@]}"
	wait "$wpid"
	case $wl in
	rr)
		units=$(sed -n 's/.*Valid Duration.*RunTime=\([0-9.]*\) sec.*ReceivedMessages=\([0-9]*\).*/\1 \2/p' "$log" |
			awk -v w="$T_COST" '$1 > 0 { printf "%.0f", $2 / $1 * w }') ;;
	bulk)
		units=$("$NK_PY" -c 'import json, sys; e = json.load(open(sys.argv[1]))["end"]["sum_sent"]
print("%.1f" % (e["bytes"] / e["seconds"] * float(sys.argv[2]) / 1e6))' "$log" "$T_COST" 2>/dev/null) ;;
	cps)
		units=$(sed -n 's/^cps=\([0-9.]*\) .*/\1/p' "$log" | awk -v w="$T_COST" '{ printf "%.0f", $1 * w }') ;;
	accept)
		units=$(awk -v w="$T_COST" '/^Requests\/sec:/ { printf "%.0f", $2 * w }' "$log") ;;
	esac
	if [ -z "$units" ]; then
		log_info "cost $p $wl: the run failed"
		return
	fi
	REP=1 rec "$p" "cost_$wl" units "$units"
	log_info "cost $p $wl: about $units units in the ${T_COST}s window"
}

# perf_profile WL DELAY CMD...: record nk-nsm and the guest program (CMD is
# the program itself, no wrapper: its PID is the one recorded), from DELAY
# seconds after its start (sockperf sleeps about 2 s before it starts).
perf_profile()
{
	local wl=$1 delay=$2 gpid
	shift 2
	nk_guest_bg g1 "$NK_TMP/prof-$wl.log" "$@"
	gpid=$NK_BG_PID
	sleep "$delay"
	perf record -q -F 999 -g -p "$NSM_PID,$gpid" -o "$BDIR/perf-$wl.data" \
		-- sleep "$T_PROF" >"$NK_TMP/perf-$wl.log" 2>&1
	wait "$gpid"
	perf script -i "$BDIR/perf-$wl.data" -F comm,tid,ip,sym,dso \
		>"$BDIR/perf-$wl.script" 2>/dev/null
	log_info "profile $wl: $(grep -c '^[^[:space:]]' "$BDIR/perf-$wl.script") samples"
}

rm -f "$BDIR"/perf-* "$BDIR"/stat-*
if [ "$PROFILE" = 1 ]; then
	log_step "cost model (software counters) and perf profile of nk-nsm + guest"
	for wl in rr bulk cps accept; do
		for p in native nk; do
			cost "$p" "$wl"
		done
	done
	perf_profile bulk 1 iperf3 -c 10.77.0.1 -p 5201 -t $((T_PROF + 2))
	perf_profile rr 3 sockperf pp --tcp -i 10.77.0.1 -p 11111 -t $((T_PROF + 2))
fi
for p in "${PATHS[@]}"; do	# the cost model's accept row used them
	nk_stop "${NGINX[$p]}"
done

# ---------------------------------------------------------------- density

if want density; then
	log_step "multiplexing density: N nginx guests under light load, one kernel NSM vs own stacks"
	for ((i = 2; i <= DENS_MAX; i++)); do
		native_guest_up "$i"
	done
	for ((i = 3; i <= DENS_MAX; i++)); do
		nk_netns_add "g$i-$S"
		nk_run_nkctl vm add "vm$i" nsm nsm1 addr "10.77.0.$((i + 1))/24" uds "$NK_TMP/vm$i.vsock"
	done
	for ((i = 3; i <= DENS_MAX; i++)); do
		wait_for -t 10 test -S "$NK_TMP/vm$i.vsock_7531" || nk_die "nkd does not serve vm$i"
		wait_for -t 10 nk_has_addr "nsm-$S" up0 "10.77.0.$((i + 1))" || nk_die "no address for vm$i"
	done
	cat >"$NK_TMP/delay.lua" <<-EOF
	function delay()
		return $DENS_DELAY_MS
	end
	EOF

	dens_addr()
	{
		if [ "$1" = nk ]; then
			echo "10.77.0.$(($2 + 1))"
		else
			echo "10.79.$2.2"
		fi
	}

	dens_ns()
	{
		if [ "$1" = nk ]; then
			echo "g$2-$S"
		else
			echo "n$2-$S"
		fi
	}

	for n in "${DENS_NS[@]}"; do
		pids=()
		for mode in native nk; do
			for ((i = 1; i <= n; i++)); do
				d=$NK_TMP/dens-$mode-$i
				nk_nginx_prep "$d" 1 80 "$WWW"
				if [ "$mode" = nk ]; then
					nk_guest_bg "g$i" "$d.log" "${NK_NGINX_ARGV[@]}"
				else
					nk_bg "n$i-$S" "$d.log" "${NK_NGINX_ARGV[@]}"
				fi
				pids+=("$NK_BG_PID")
			done
		done
		for mode in native nk; do
			for ((i = 1; i <= n; i++)); do
				wait_for -t 10 nk_tcp_open "$R" "$(dens_addr $mode "$i")" 80 ||
					nk_die "density: nginx $mode $i not reachable"
			done
		done
		for ((REP = 1; REP <= REPS; REP++)); do
			for mode in native nk; do
				gp=()
				for ((i = 1; i <= n; i++)); do
					# shellcheck disable=SC2207
					gp+=($(nk_ns_pids "$(dens_ns $mode "$i")"))
				done
				ds=()
				[ "$mode" = native ] || ds=("$NSM_PID" "$NKD_PID")
				wl=()
				for ((i = 1; i <= n; i++)); do
					ip netns exec "$R" wrk -t1 -c1 -d "$((T_DENS + 1))s" -s "$NK_TMP/delay.lua" \
						"http://$(dens_addr $mode "$i")/index.html" >"$NK_TMP/dens-wrk-$mode-$n-$i.log" 2>&1 &
					wl+=($!)
				done
				sleep 0.5
				a=$(sched_ns "${gp[@]}" "${ds[@]}") b0=$(busy_ticks)
				sleep "$T_DENS"
				a=$(($(sched_ns "${gp[@]}" "${ds[@]}") - a)) b0=$(($(busy_ticks) - b0))
				wait "${wl[@]}"
				reqs=$(cat "$NK_TMP"/dens-wrk-$mode-"$n"-*.log | awk '/requests in/ { n += $1 } END { print n + 0 }')
				errs=$(cat "$NK_TMP"/dens-wrk-$mode-"$n"-*.log | awk '/Socket errors|Non-2xx/ { e++ } END { print e + 0 }')
				rss=0
				for pid in "${gp[@]}" "${ds[@]}"; do
					rss=$((rss + $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)))
				done
				rec "$mode" "dens$n" cpu_core_pct "$(awk -v n="$a" -v t="$T_DENS" 'BEGIN { printf "%.3f", n / (t * 1e9) * 100 }')"
				rec "$mode" "dens$n" machine_core_pct "$(awk -v x="$b0" -v t="$T_DENS" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", x / hz / t * 100 }')"
				rec "$mode" "dens$n" rps "$(awk -v r="$reqs" -v t="$((T_DENS + 1))" 'BEGIN { printf "%.0f", r / t }')"
				rec "$mode" "dens$n" rss_kb "$rss"
				rec "$mode" "dens$n" errors "$errs"
				log_info "density N=$n $mode: $(awk -v n="$a" -v t="$T_DENS" 'BEGIN { printf "%.1f", n / (t * 1e9) * 100 }')% of a core, $reqs requests, RSS $((rss / 1024)) MiB"
			done
		done
		nk_stop "${pids[@]}"
	done
fi

# ---------------------------------------------------------------- report

# The TCP congestion control of every namespace of the run (all made by
# now): one name, --cc's or the default a new namespace gets (the initial
# namespace's), recorded with the results.
TCP_CC_WANT=${CC:-$(nsenter --net=/proc/1/ns/net sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null ||
	sysctl -n net.ipv4.tcp_congestion_control)}
TCP_CCS=$(for ns in "${NK_NETNS[@]}"; do
	ip netns exec "$ns" sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo "?$ns"
done | sort -u | paste -sd' ')
check_eq "one TCP congestion control in the run's ${#NK_NETNS[@]} namespaces" "$TCP_CCS" "$TCP_CC_WANT"
meta tcp_cc "$TCP_CCS${CC:+ --cc}"
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta busy_end "$(idle_sample)"
meta elapsed_s "$(($(date +%s) - BENCH_T0))"
meta checks "$NK_CHECKS checks, $NK_FAILS failed"
{
	echo "$NK_CHECKS checks, $NK_FAILS failed"
	for c in "${NK_FAILED_CHECKS[@]}"; do
		echo "FAILED: $c"
	done
} >"$CHECKS"

log_step "report"
mkdir -p "$OUT/img"
"$NK_PY" "$NK_SRCDIR/tools/bench/report.py" --results "$RES" --meta "$META" \
	--checks "$CHECKS" --profile-dir "$BDIR" --md "$OUT/benchmarks.md" \
	--png "$OUT/img/benchmarks.png" || nk_fail "report generation failed"
log_info "wrote $OUT/benchmarks.md and $OUT/img/benchmarks.png in $(($(date +%s) - BENCH_T0)) s"
nk_finish
