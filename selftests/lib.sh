# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck shell=bash disable=SC2034
#
# Shared helpers for the NetKernel integration tests (and tools/demo.sh).
# A test sources this file, calls nk_topo_up to get the standard topology
# in throwaway network namespaces with a random suffix, drives real programs
# through it, records every check with `check` (a failed check does not
# stop the test, so one run reports all of them) and ends with nk_finish.
# Whatever a test creates is registered here and removed by one EXIT trap:
# processes by PID, namespaces by name, the temporary directory.
#
# Standard topology (S = random suffix of this test):
#
#   remote-$S            nsm-$S                    root namespace
#   eth0 10.77.0.1/24 ---- up0 (veth uplink)         nkd --foreground
#        fd77::1/64        VM addresses, added       (control socket and
#   nginx, wrk, curl       by nk-nsm (nsm1)           state in $NK_TMP)
#                          kernel sockets of VMs
#
#   g1-$S (only lo): guest of vm1, 10.77.0.2/24, unix:$NK_TMP/vm1.vsock_7531
#   g2-$S (only lo): guest of vm2, 10.77.0.3/24, unix:$NK_TMP/vm2.vsock_7531
#   (NK_TOPO_V6=1 before nk_topo_up: vm1 also fd77::2/64, vm2 fd77::3/64)
#
# Exit status of a test: 0 pass, 1 fail, 4 skip (reason on stderr, last line).

set -u

NK_SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Safety net: this machine's vsock leads to a hypervisor that is not ours.
# The guest library's default transport is vsock:2:7531; a program that
# reaches the library without an explicit --transport must fail instead.
export NK_TRANSPORT=unix:/nonexistent/nk-no-transport-given
OUTPUT=${OUTPUT:-$NK_SRCDIR/build}
NK_PY=/usr/bin/python3		# Debian's python, not a pyenv shim
NK_KSFT_SKIP=4

S=${NK_SUFFIX:-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')}
NK_TMP=$(mktemp -d "/tmp/nk-${NK_TEST_NAME:-$(basename "$0" .sh)}.XXXXXX")
chmod 0755 "$NK_TMP"
NK_CTL=$NK_TMP/nkd.sock
NK_STATE=$NK_TMP/state
NK_RUN=$NK_TMP/run
NK_NKD_LOG=$NK_TMP/nkd.log
NKD_PID=

NK_PIDS=()		# processes we started, killed at cleanup
NK_NETNS=()		# namespaces we created, emptied and deleted at cleanup
NK_NSMS=()		# NSMs registered with nkd, deleted through nkctl
NK_CLEANUP_HOOKS=()	# commands run at cleanup, after the namespaces are gone
# extra arguments of nkd (nk_start_nkd); NK_NKD_EXTRA_ARGS in the
# environment (words) runs a test with them, e.g. the kernel NSM's
# in-kernel relay: NK_NKD_EXTRA_ARGS=--nsm-arg=--kernel-relay
read -r -a NK_NKD_ARGS <<<"${NK_NKD_EXTRA_ARGS:-}"
NK_FAILS=0
NK_FAILED_CHECKS=()
NK_CHECKS=0
NK_T0=$(date +%s.%N)

# ---------------------------------------------------------------- logging

nk_ts()
{
	awk -v t0="$NK_T0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%6.1fs", t1 - t0 }'
}

log_info()
{
	echo "[$(nk_ts)] $*"
}

log_step()
{
	echo
	echo "[$(nk_ts)] === $*"
}

log_err()
{
	echo "[$(nk_ts)] ERROR: $*" >&2
}

# Abort the test (exit 1): the rest cannot be meaningful.
nk_die()
{
	log_err "$*"
	NK_FAILED_CHECKS+=("fatal: $*")
	NK_FAILS=$((NK_FAILS + 1))
	exit 1
}

# Skip the test (exit 4); the reason is the last line on stderr.
nk_skip()
{
	echo "$*" >&2
	NK_SKIPPING=1
	exit $NK_KSFT_SKIP
}

# ---------------------------------------------------------------- checks

nk_pass()
{
	NK_CHECKS=$((NK_CHECKS + 1))
	echo "[$(nk_ts)]   ok    $1"
}

nk_fail()
{
	NK_CHECKS=$((NK_CHECKS + 1))
	NK_FAILS=$((NK_FAILS + 1))
	NK_FAILED_CHECKS+=("$1")
	echo "[$(nk_ts)]   FAIL  $1"
}

# check DESCRIPTION CMD [ARGS...]: run CMD, record pass or failure, go on.
check()
{
	local desc=$1
	shift
	if "$@"; then
		nk_pass "$desc"
		return 0
	fi
	nk_fail "$desc"
	return 1
}

# check_eq DESCRIPTION GOT WANT
check_eq()
{
	if [ "$2" = "$3" ]; then
		nk_pass "$1 (= $3)"
		return 0
	fi
	nk_fail "$1: got '$2', want '$3'"
	return 1
}

# check_lt DESCRIPTION GOT LIMIT (integers)
check_lt()
{
	if [ "$2" -lt "$3" ] 2>/dev/null; then
		nk_pass "$1 ($2 < $3)"
		return 0
	fi
	nk_fail "$1: got $2, limit $3"
	return 1
}

# check_gt DESCRIPTION GOT MIN (integers)
check_gt()
{
	if [ "$2" -gt "$3" ] 2>/dev/null; then
		nk_pass "$1 ($2 > $3)"
		return 0
	fi
	nk_fail "$1: got '$2', want > $3"
	return 1
}

# not_grep PATTERN FILE: PATTERN does not occur in FILE
not_grep()
{
	! grep -q "$@"
}

nk_finish()
{
	if [ "$NK_FAILS" -gt 0 ]; then
		exit 1
	fi
	echo
	log_info "all $NK_CHECKS checks passed"
	exit 0
}

# ---------------------------------------------------------------- requirements

nk_require_root()
{
	[ "$(id -u)" -eq 0 ] || nk_skip "needs root"
}

# nk_require_cmds CMD...: skip when a program the test drives is missing.
nk_require_cmds()
{
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 ||
			nk_skip "missing program '$c' (run tools/install-deps.sh)"
	done
}

# Missing NetKernel binaries are a failure, not a skip: `make` builds them.
nk_require_build()
{
	local f
	for f in nkd nkctl nk-nsm nk-run libnkguest.so; do
		[ -e "$OUTPUT/$f" ] || nk_die "$OUTPUT/$f is missing (run make)"
	done
}

nk_mount_bpffs()
{
	mountpoint -q /sys/fs/bpf 2>/dev/null ||
		mount -t bpf bpf /sys/fs/bpf ||
		log_err "cannot mount bpffs on /sys/fs/bpf"
}

# ---------------------------------------------------------------- processes

nk_register_pid()
{
	NK_PIDS+=("$1")
}

# nk_alive PID: running (a zombie is not alive)
nk_alive()
{
	[ -n "$1" ] && kill -0 "$1" 2>/dev/null &&
		! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# nk_stop PID...: SIGTERM, wait up to 5 s, then SIGKILL.
nk_stop()
{
	local pid i
	for pid in "$@"; do
		nk_alive "$pid" && kill -TERM "$pid" 2>/dev/null
	done
	for pid in "$@"; do
		for ((i = 0; i < 50; i++)); do
			nk_alive "$pid" || break
			sleep 0.1
		done
		nk_alive "$pid" && kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	return 0
}

# nk_ns_pids NS: PIDs whose network namespace is NS (all started by us).
nk_ns_pids()
{
	ip netns pids "$1" 2>/dev/null
}

# nk_ns_empty NS: nothing runs in NS
nk_ns_empty()
{
	[ -z "$(nk_ns_pids "$1")" ]
}

# nk_ns_stop NS: stop everything running in a namespace we created.
nk_ns_stop()
{
	local pids
	pids=$(nk_ns_pids "$1")
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086
	nk_stop $pids
}

# nk_bg NS LOG CMD...: start CMD in namespace NS (root namespace when NS is
# "-") in the background; its PID is in NK_BG_PID and registered.
nk_bg()
{
	local ns=$1 logf=$2
	shift 2
	if [ "$ns" = - ]; then
		"$@" >"$logf" 2>&1 </dev/null &
	else
		ip netns exec "$ns" "$@" >"$logf" 2>&1 </dev/null &
	fi
	NK_BG_PID=$!
	nk_register_pid "$NK_BG_PID"
}

# wait_for [-t SECS] CMD...: poll CMD every 0.1 s until it succeeds.
wait_for()
{
	local tmo=10 i n
	if [ "$1" = -t ]; then
		tmo=$2
		shift 2
	fi
	n=$((tmo * 10))
	for ((i = 0; i < n; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# nk_tcp_open NS ADDR PORT: one TCP connect from NS (no payload).
nk_tcp_open()
{
	ip netns exec "$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null
}

# wait_port NS ADDR PORT [SECS]: wait until ADDR:PORT accepts from NS.
wait_port()
{
	wait_for -t "${4:-10}" nk_tcp_open "$1" "$2" "$3"
}

# ---------------------------------------------------------------- namespaces

# nk_netns_add NS: a new network namespace NS (removed by nk_finish), lo up;
# with NK_NETNS_TCP_CC set (tools/bench.sh --cc), TCP congestion control
# NK_NETNS_TCP_CC there (a new namespace starts with the machine's
# default).  A namespace nkd creates gets it from the caller, once nkd
# made it (nk_topo_uplink_up, tools/bench.sh).
nk_netns_add()
{
	ip netns add "$1" || nk_die "cannot create netns $1"
	NK_NETNS+=("$1")
	ip -n "$1" link set lo up
	[ -z "${NK_NETNS_TCP_CC:-}" ] || nk_netns_tcp_cc "$1" "$NK_NETNS_TCP_CC"
}

# nk_netns_tcp_cc NS NAME: TCP congestion control NAME for the sockets
# created in NS from now on; a name this kernel lacks, or does not allow
# in a network namespace, is an error.
nk_netns_tcp_cc()
{
	local err
	if ! [[ " $(sysctl -n net.ipv4.tcp_available_congestion_control) " == *" $2 "* ]]; then
		nk_die "TCP congestion control '$2' is not in this kernel (net.ipv4.tcp_available_congestion_control: $(sysctl -n net.ipv4.tcp_available_congestion_control))"
	fi
	err=$(ip netns exec "$1" sysctl -qw net.ipv4.tcp_congestion_control="$2" 2>&1) ||
		nk_die "netns $1: TCP congestion control '$2' refused (${err##*: }); a network namespace may have only net.ipv4.tcp_allowed_congestion_control: $(sysctl -n net.ipv4.tcp_allowed_congestion_control)"
}

# ---------------------------------------------------------------- NetKernel

nkctl()
{
	"$OUTPUT/nkctl" -c "$NK_CTL" "$@"
}

# run_ctl ARGS...: nkctl with its stdout, stderr and status in OUT, ERR, RC.
run_ctl()
{
	local o=$NK_TMP/ctl.out e=$NK_TMP/ctl.err
	"$OUTPUT/nkctl" -c "$NK_CTL" "$@" >"$o" 2>"$e"
	RC=$?
	OUT=$(cat "$o")
	ERR=$(cat "$e")
}

# nk_refused ERRFILE NKCTL-ARGS...: the nkctl command fails (its stderr in
# ERRFILE, to check the message).
nk_refused()
{
	local f=$1
	shift
	! nkctl "$@" >/dev/null 2>"$f"
}

# nk_vm_of G: g1 -> vm1, g2 -> vm2
nk_vm_of()
{
	echo "vm${1#g}"
}

# nk_transport G: the unix transport of guest G's VM.
nk_transport()
{
	echo "unix:$NK_TMP/$(nk_vm_of "$1").vsock_7531"
}

# nk_guest G CMD...: run CMD in guest namespace G-$S under nk-run.
nk_guest()
{
	local g=$1
	shift
	ip netns exec "$g-$S" "$OUTPUT/nk-run" --transport "$(nk_transport "$g")" -- "$@"
}

# nk_guest_bg G LOG CMD...: nk_guest in the background (PID in NK_BG_PID).
nk_guest_bg()
{
	local g=$1 logf=$2
	shift 2
	nk_bg "$g-$S" "$logf" "$OUTPUT/nk-run" --transport "$(nk_transport "$g")" -- "$@"
}

# nk_hold_idle G ADDR N NS: N idle connections from guest G to nk_cps serve
# on the remote host at ADDR:7001, once the NSM's netns NS has them all
# established; the holder's pid in NK_HOLD_PID (nk_stop it).
nk_hold_idle()
{
	local g=$1 addr=$2 n=$3 ns=$4
	nk_bg "remote-$S" "$NK_TMP/hold-s.log" "$OUTPUT/bench/nk_cps" serve -H 7001
	wait_for -t 5 nk_tcp_open "remote-$S" "$addr" 7001 || nk_die "hold server did not start"
	nk_guest_bg "$g" "$NK_TMP/hold.log" "$OUTPUT/bench/nk_cps" hold "$addr" 7001 "$n" 8
	NK_HOLD_PID=$NK_BG_PID
	wait_for -t 5 bash -c "[ \$(ip netns exec $ns ss -Htn state established '( dport = :7001 )' | wc -l) -ge $n ]" ||
		nk_die "$n connections did not open"
}

# nk_start_nkd: nkd in the foreground, with NK_NKD_ARGS appended.
nk_start_nkd()
{
	mkdir -p "$NK_STATE" "$NK_RUN"
	# --no-vsock: these machines must never open AF_VSOCK (no test VM
	# has a CID anyway); --nsm-bin: the NSM of the tree under test.
	nk_bg - "$NK_NKD_LOG" "$OUTPUT/nkd" --foreground --control "$NK_CTL" \
		--state-dir "$NK_STATE" --run-dir "$NK_RUN" --no-vsock \
		--nsm-bin "$OUTPUT/nk-nsm" "${NK_NKD_ARGS[@]}"
	NKD_PID=$NK_BG_PID
	if ! wait_for -t 10 nkctl nsm list; then
		nk_alive "$NKD_PID" || nk_die "nkd exited at start (log: $NK_NKD_LOG)"
		nk_die "nkd does not answer on $NK_CTL"
	fi
	log_info "nkd pid $NKD_PID, control $NK_CTL"
}

# nk_udp_ask NS HOST PORT WORD TRIES: send WORD from NS to a UDP server at
# HOST:PORT until it answers (0.3 s each try, at most TRIES); prints the
# answer and the port it came from, or "no answer".
nk_udp_ask()
{
	ip netns exec "$1" "$NK_PY" -c 'import socket, sys
host, port, word, tries = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.settimeout(0.3)
for i in range(tries):
    try:
        c.sendto(word.encode(), (host, port))
        d, a = c.recvfrom(100)
        print(d.decode(), a[1])
        break
    except OSError:
        pass
else:
    print("no answer")' "$2" "$3" "$4" "$5"
}

# nk_echo_server NS HOST PORT: a TCP echo server in NS at HOST:PORT (a
# thread per connection), accepting when this returns; pid in NK_BG_PID.
nk_echo_server()
{
	local ns=$1 host=$2 port=$3
	nk_bg "$ns" "$NK_TMP/echo-$host-$port.log" "$NK_PY" -c '
import socket, sys, threading
def serve(c):
    with c:
        while True:
            b = c.recv(65536)
            if not b:
                return
            c.sendall(b)
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(64)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()' "$host" "$port"
	wait_port "$ns" "$host" "$port" 5 || nk_die "echo server on $host:$port did not start"
}

# nk_nsm_opts PID: nk-nsm PID's options after the four nkd always gives
# (name, type, dev, control), as one line.
nk_nsm_opts()
{
	tr '\0' ' ' <"/proc/$1/cmdline" | sed 's/.*--control [^ ]*//; s/^ *//; s/ *$//'
}

# nk_nsm_has_opt PID OPT: nk-nsm PID runs with OPT (a whole word)
nk_nsm_has_opt()
{
	[[ " $(nk_nsm_opts "$1") " == *" $2 "* ]]
}

# nk_bpf_map_ids PID NAME: the ids of the BPF maps named NAME that process
# PID holds open (its fdinfo: `bpftool map show name` would list every
# process's maps of that name, and this bpftool shows no owner pids).
nk_bpf_map_ids()
{
	local pid=$1 name=$2 id
	# shellcheck disable=SC2013 # one number per line: words are lines
	for id in $(sed -n 's/^map_id:[[:space:]]*//p' /proc/"$pid"/fdinfo/* 2>/dev/null | sort -un); do
		bpftool -j map show id "$id" 2>/dev/null | grep -q "\"name\":\"$name\"" && echo "$id"
	done
}

# nk_relay_conns PID: the entries of nk-nsm PID's relay_conns map (the
# in-kernel relay), "bytes" of each, one line; nothing without the relay.
nk_relay_conns()
{
	local id
	for id in $(nk_bpf_map_ids "$1" relay_conns); do
		bpftool -j map dump id "$id" | "$NK_PY" -c '
import json, sys
print(" ".join(str(e["formatted"]["value"]["bytes"]) for e in json.load(sys.stdin)))'
	done
}

# nk_relay_misses PID...: the sum of the relay programs' relay_misses of
# these nk-nsm processes (0 for those without the relay).
nk_relay_misses()
{
	local pid id n=0 v
	for pid in "$@"; do
		for id in $(nk_bpf_map_ids "$pid" relay_bp.bss); do
			v=$(bpftool -j map dump id "$id" | "$NK_PY" -c '
import json, sys
print(json.load(sys.stdin)[0]["formatted"]["value"][".bss"][0]["relay_misses"])') || return 1
			n=$((n + v))
		done
	done
	echo "$n"
}

# nk_nsm_pid NSM-NETNS: the PID of the nk-nsm process in that namespace.
nk_nsm_pid()
{
	local pid
	for pid in $(nk_ns_pids "$1"); do
		if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nk-nsm ]; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

# nk_has_addr NS DEV ADDR
nk_has_addr()
{
	ip -n "$1" -o addr show dev "$2" 2>/dev/null | grep -qw "inet6\? $3/[0-9]*"
}

# nk_nsm_running NAME: nkctl says NSM NAME is in state running (not only
# that its JSON mentions the word: "running" is also a key of nsm show).
nk_nsm_running()
{
	[ "$(nkctl -j nsm show "$1" 2>/dev/null |
		"$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["state"])')" = running ]
}

nk_run_nkctl()
{
	local out
	if ! out=$(nkctl "$@" 2>&1); then
		echo "$out"
		nk_die "nkctl $* failed"
	fi
	[ -z "$out" ] || echo "$out"
}

# nk_topo_up: the standard topology, nkd, nsm1 and vm1 + vm2 (see the top).
# nk_veth NS DEV PEERNS PEERDEV: a veth pair DEV (in NS) <-> PEERDEV (in
# PEERNS), both up, no addresses.
nk_veth()
{
	ip link add "$2" netns "$1" type veth peer name "$4" netns "$3" ||
		nk_die "cannot create the veth pair $2 ($1) <-> $4 ($3)"
	ip -n "$1" link set "$2" up
	ip -n "$3" link set "$4" up
}

# nk_native_guest_up: the semantics tests' oracle, guest gn-$S owning its
# stack on a veth to the remote host (10.78.0.2 <-> 10.78.0.1, fd78::/64),
# and the blackhole routes the cases expect (10.79.0.0/24 and fd79::/64 go
# nowhere, from gn-$S and from the NSM).  Its client arguments go into
# NK_NATIVE_ADDRS.
nk_native_guest_up()
{
	nk_netns_add "gn-$S"
	nk_veth "gn-$S" veth0 "remote-$S" eth1
	ip -n "remote-$S" addr add 10.78.0.1/24 dev eth1
	ip -n "remote-$S" addr add fd78::1/64 dev eth1 nodad
	ip -n "gn-$S" addr add 10.78.0.2/24 dev veth0
	ip -n "gn-$S" addr add fd78::2/64 dev veth0 nodad
	ip netns exec "remote-$S" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 \
		net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0
	ip -n "remote-$S" -6 route add blackhole fd79::/64
	ip -n "gn-$S" route add 10.79.0.0/24 via 10.78.0.1
	ip -n "gn-$S" -6 route add fd79::/64 via fd78::1
	# A default route, so that the limited broadcast has a route (it is
	# refused for want of SO_BROADCAST, as on a VM with a gateway).
	ip -n "gn-$S" route add default via 10.78.0.1
	ip -n "nsm-$S" route add 10.79.0.0/24 via 10.77.0.1
	ip -n "nsm-$S" -6 route add fd79::/64 via fd77::1
	NK_NATIVE_ADDRS=(--peer 10.78.0.1 --self 10.78.0.2 --other 10.78.0.3 --blackhole 10.79.0.9
			 --peer fd78::1 --self fd78::2 --other fd78::3 --blackhole fd79::9)
}

nk_topo_up()
{
	log_step "topology (suffix $S)"
	nk_mount_bpffs
	nk_netns_add "remote-$S"
	nk_netns_add "nsm-$S"
	nk_netns_add "g1-$S"
	nk_netns_add "g2-$S"

	nk_veth "nsm-$S" up0 "remote-$S" eth0
	ip -n "remote-$S" addr add 10.77.0.1/24 dev eth0
	ip -n "remote-$S" addr add fd77::1/64 dev eth0 nodad
	log_info "remote-$S eth0 10.77.0.1/24 fd77::1/64 <-> nsm-$S up0; g1-$S, g2-$S: lo only"

	nk_start_nkd
	# NK_NSM1_ARGS: more `nsm add` keywords for nsm1 (an array)
	nk_run_nkctl nsm add nsm1 type kernel netns "nsm-$S" dev up0 \
		${NK_NSM1_ARGS[@]+"${NK_NSM1_ARGS[@]}"}
	NK_NSMS+=(nsm1)
	wait_for -t 10 nk_nsm_pid "nsm-$S" ||
		nk_die "no nk-nsm process appeared in nsm-$S"
	NK_NSM_PID=$(nk_nsm_pid "nsm-$S")
	log_info "nsm1: nk-nsm pid $NK_NSM_PID in nsm-$S ($(nk_nsm_opts "$NK_NSM_PID"))"
	NK_NSM_PID_NKCTL=$(nkctl -j nsm show nsm1 2>/dev/null |
		"$NK_PY" -c 'import json, sys; print(json.load(sys.stdin).get("pid"))' 2>/dev/null)

	# NK_TOPO_V6=1: the VMs also get fd77::2/64 and fd77::3/64.
	local v6a='' v6b=''
	if [ "${NK_TOPO_V6:-0}" = 1 ]; then
		v6a=,fd77::2/64
		v6b=,fd77::3/64
	fi
	nk_run_nkctl vm add vm1 nsm nsm1 addr "10.77.0.2/24$v6a" uds "$NK_TMP/vm1.vsock"
	nk_run_nkctl vm add vm2 nsm nsm1 addr "10.77.0.3/24$v6b" uds "$NK_TMP/vm2.vsock"
	wait_for -t 10 test -S "$NK_TMP/vm1.vsock_7531" ||
		nk_die "nkd does not serve $NK_TMP/vm1.vsock_7531"
	wait_for -t 10 test -S "$NK_TMP/vm2.vsock_7531" ||
		nk_die "nkd does not serve $NK_TMP/vm2.vsock_7531"
	wait_for -t 10 nk_has_addr "nsm-$S" up0 10.77.0.2 ||
		nk_die "10.77.0.2 did not appear on nsm-$S up0"
	wait_for -t 10 nk_has_addr "nsm-$S" up0 10.77.0.3 ||
		nk_die "10.77.0.3 did not appear on nsm-$S up0"
	if [ -n "$v6a" ]; then
		wait_for -t 10 nk_has_addr "nsm-$S" up0 fd77::2 ||
			nk_die "fd77::2 did not appear on nsm-$S up0"
		wait_for -t 10 nk_has_addr "nsm-$S" up0 fd77::3 ||
			nk_die "fd77::3 did not appear on nsm-$S up0"
	fi
	log_info "vm1 10.77.0.2${v6a:+ fd77::2} via unix:$NK_TMP/vm1.vsock_7531"
	log_info "vm2 10.77.0.3${v6b:+ fd77::3} via unix:$NK_TMP/vm2.vsock_7531"
}

# nk_nsm_path NSM NS RDEV NET VM GUEST [nsm add ATTRS...]: one more kernel
# NSM in netns NS-$S with its own veth to remote-$S (NET.1 on RDEV there),
# VM (address NET.2) on it, and the guest namespace GUEST-$S (only lo,
# transport unix:$NK_TMP/VM.vsock_7531); the NSM's pid in NK_PATH_NSM_PID.
nk_nsm_path()
{
	local nsm=$1 ns=$2-$S rdev=$3 net=$4 vm=$5 g=$6-$S
	shift 6
	nk_netns_add "$ns"
	nk_netns_add "$g"
	nk_veth "$ns" up0 "remote-$S" "$rdev"
	ip -n "remote-$S" addr add "$net.1/24" dev "$rdev"
	nk_run_nkctl nsm add "$nsm" type kernel netns "$ns" dev up0 "$@" >/dev/null
	NK_NSMS+=("$nsm")
	wait_for -t 10 nk_nsm_pid "$ns" || nk_die "no nk-nsm process appeared in $ns"
	NK_PATH_NSM_PID=$(nk_nsm_pid "$ns")
	nk_run_nkctl vm add "$vm" nsm "$nsm" addr "$net.2/24" uds "$NK_TMP/$vm.vsock" >/dev/null
	wait_for -t 10 test -S "$NK_TMP/$vm.vsock_7531" || nk_die "nkd does not serve $vm"
	wait_for -t 10 nk_has_addr "$ns" up0 "$net.2" || nk_die "$net.2 did not appear on $ns up0"
}

# nk_ethtool NS DEV CMD VALUE: one ethtool set ioctl (0x2c ETHTOOL_SGRO,
# 0x17 ETHTOOL_STXCSUM) without the ethtool program.
nk_ethtool()
{
	ip netns exec "$1" "$NK_PY" - "$2" "$3" "$4" <<'PYEOF'
import ctypes, fcntl, socket, struct, sys
name, cmd, val = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3])
ev = ctypes.create_string_buffer(struct.pack('II', cmd, val), 8)
ifr = struct.pack('16sP', name.encode(), ctypes.addressof(ev)).ljust(40, b'\0')
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)
PYEOF
}

# jpy JSON EXPR: evaluate EXPR on the parsed JSON (j), without jq.
jpy()
{
	"$NK_PY" -c 'import json, sys; j = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}

# nk_topo_uplink_up NET: the shared-uplink topology of issue 4.  The uplink
# nku-$S is a veth in the root namespace (XDP ingress, attached by nkd
# --uplink); its far end is eth0 of remote-$S at NET.1/24.  nkd creates
# the NSM nsm1-$S itself (namespace nk-nsm1-$S, veth nkh-... <-> eth0) and
# steers vm1 (NET.2) and vm2 (NET.3) to it; guests g1-$S and g2-$S have
# only lo.  Maps are pinned under NK_PIN=/sys/fs/bpf/nk-$S.
nk_topo_uplink_up()
{
	local net=$1
	NK_UPLINK=nku-$S
	NK_PIN=/sys/fs/bpf/nk-$NK_TEST_NAME-$S
	NK_NSM1=nsm1-$S
	NK_NKD_ARGS=(--uplink "$NK_UPLINK" --pin-dir "$NK_PIN")
	nk_uplink_cleanup "$NK_PIN" "$NK_UPLINK" "$NK_NSM1"
	log_step "shared-uplink topology (suffix $S): uplink $NK_UPLINK, XDP steering"
	nk_mount_bpffs
	nk_netns_add "remote-$S"
	nk_netns_add "g1-$S"
	nk_netns_add "g2-$S"
	NK_NETNS+=("nk-$NK_NSM1")
	ip link add "$NK_UPLINK" type veth peer name eth0 netns "remote-$S" ||
		nk_die "cannot create the uplink veth pair"
	ip -n "remote-$S" addr add "$net.1/24" dev eth0
	ip -n "remote-$S" link set eth0 up
	ip link set "$NK_UPLINK" up
	nk_uplink_far_end "remote-$S" eth0
	nk_start_nkd
	nk_run_nkctl nsm add "$NK_NSM1" type kernel
	NK_NSMS+=("$NK_NSM1")
	wait_for -t 10 nk_nsm_pid "nk-$NK_NSM1" || nk_die "no nk-nsm process in nk-$NK_NSM1"
	# nkd made this namespace: NK_NETNS_TCP_CC applies once it exists
	[ -z "${NK_NETNS_TCP_CC:-}" ] || nk_netns_tcp_cc "nk-$NK_NSM1" "$NK_NETNS_TCP_CC"
	nk_run_nkctl vm add vm1 nsm "$NK_NSM1" addr "$net.2/24" uds "$NK_TMP/vm1.vsock"
	nk_run_nkctl vm add vm2 nsm "$NK_NSM1" addr "$net.3/24" uds "$NK_TMP/vm2.vsock"
	wait_for -t 10 nk_has_addr "nk-$NK_NSM1" eth0 "$net.2" ||
		nk_die "$net.2 did not appear in nk-$NK_NSM1"
}

# nk_uplink_far_end NS DEV: the far end of a veth uplink, once it is up:
# GRO on (native XDP redirects into a veth need NAPI on the receiving
# peer) and transmit checksum offload off (a partial checksum would cross
# the XDP redirect unfinished; docs/maps.md).
nk_uplink_far_end()
{
	nk_ethtool "$1" "$2" 0x2c 1 || nk_die "cannot turn GRO on for $2 in $1"
	nk_ethtool "$1" "$2" 0x17 0 || nk_die "cannot turn tx checksumming off for $2 in $1"
}

# nk_xdp_prog_ids DEV: the ids of the XDP programs attached to DEV (in
# this namespace), sorted, on one line; empty if none.
nk_xdp_prog_ids()
{
	ip -j link show dev "$1" | "$NK_PY" -c '
import json, sys
x = json.load(sys.stdin)[0].get("xdp", {})
ids = [str(p["prog"]["id"]) for p in x.get("attached", []) if "prog" in p]
if "prog" in x:
    ids.append(str(x["prog"]["id"]))
print(" ".join(sorted(set(ids))))'
}

# nk_uplink_cleanup PIN UPLINK NSM...: at cleanup, remove what nkd --uplink
# makes and a failed run may leave behind: the pin directory, the uplink
# veth and each NSM's host-side veth nkh-NSM.
nk_uplink_cleanup()
{
	NK_UPLINK_LEFT=("$@")
	NK_CLEANUP_HOOKS+=(nk_uplink_leftovers)
}

nk_uplink_leftovers()
{
	local n
	rm -rf "${NK_UPLINK_LEFT[0]}"
	ip link del "${NK_UPLINK_LEFT[1]}" 2>/dev/null
	for n in "${NK_UPLINK_LEFT[@]:2}"; do
		ip link del "nkh-$n" 2>/dev/null
	done
	return 0
}

# nk_proc_cpu_ticks PID: utime + stime in clock ticks.
nk_proc_cpu_ticks()
{
	# fields after the ")" of comm: 3=state ... 14=utime 15=stime
	sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# nk_proc_io_bytes PID: rchar + wchar.
# nk_sem_timed_out FILE...: the nk_semantics cases that timed out in these
# outputs ("NAME: ... TIMEOUT"), on one line; a case that timed out in the
# oracle run compares nothing.
nk_sem_timed_out()
{
	grep -h '[: ]TIMEOUT$' "$@" 2>/dev/null | cut -d: -f1 | sort -u | tr '\n' ' '
}

nk_proc_io_bytes()
{
	awk '/^rchar:|^wchar:/ { n += $2 } END { print n }' "/proc/$1/io"
}

# ---------------------------------------------------------------- nginx

# nk_nginx_prep DIR WORKERS LISTEN ROOT: a self-contained nginx prefix;
# NK_NGINX_ARGV is then the command that runs it in the foreground.
# Workers run as nobody, as in production: the VM's hybrid-vsock socket is
# mode 0666, so an unprivileged guest process opens its own guest streams.
# The prefix is made readable for them.
nk_nginx_prep()
{
	local p=$1 workers=$2 listen=$3 root=$4
	mkdir -p "$p/tmp"
	chmod -R a+rX "$p" "$root"
	NK_NGINX_ARGV=(nginx -p "$p" -c "$p/nginx.conf" -e "$p/error.log" -g 'daemon off;')
	cat >"$p/nginx.conf" <<EOF
user nobody nogroup;
worker_processes $workers;
pid $p/nginx.pid;
error_log $p/error.log warn;
events {
	use epoll;
	worker_connections 1024;
}
http {
	access_log off;
	sendfile on;
	keepalive_requests 1000000;
	client_body_temp_path $p/tmp/body;
	proxy_temp_path $p/tmp/proxy;
	fastcgi_temp_path $p/tmp/fastcgi;
	uwsgi_temp_path $p/tmp/uwsgi;
	scgi_temp_path $p/tmp/scgi;
	types {
		text/html html;
		text/plain txt;
	}
	default_type application/octet-stream;
	server {
		listen $listen;
		root $root;
	}
}
EOF
}


# nk_nginx_pid DIR: the master's PID from its pid file.
nk_nginx_pid()
{
	cat "$1/nginx.pid" 2>/dev/null
}

# ---------------------------------------------------------------- cleanup

nk_tail()
{
	local f=$1 n=${2:-25}
	[ -s "$f" ] || return 0
	echo "----- $f (last $n lines)"
	tail -n "$n" "$f"
}

nk_dump_logs()
{
	local f
	echo
	echo "===== logs of $NK_TMP"
	nk_tail "$NK_NKD_LOG" 30
	for f in "$NK_STATE"/nsm-*.log; do
		[ -e "$f" ] && nk_tail "$f" 30
	done
	for f in "$NK_TMP"/*.log "$NK_TMP"/*/error.log; do
		[ -e "$f" ] && [ "$f" != "$NK_NKD_LOG" ] && nk_tail "$f" 10
	done
}

cleanup()
{
	local rc=$? i ns n pids
	trap - EXIT INT TERM HUP
	set +e
	if [ "${NK_SKIPPING:-0}" != 1 ] && { [ "$rc" -ne 0 ] || [ "$NK_FAILS" -gt 0 ]; }; then
		nk_dump_logs
	fi
	# orderly removal through nkd first, then everything by PID
	if nk_alive "$NKD_PID"; then
		for n in "${NK_NSMS[@]}"; do
			timeout 5 "$OUTPUT/nkctl" -c "$NK_CTL" nsm del "$n" >/dev/null 2>&1
		done
	fi
	for ((i = ${#NK_PIDS[@]} - 1; i >= 0; i--)); do
		nk_alive "${NK_PIDS[i]}" && kill -TERM "${NK_PIDS[i]}" 2>/dev/null
	done
	# shellcheck disable=SC2086
	[ ${#NK_PIDS[@]} -eq 0 ] || nk_stop "${NK_PIDS[@]}"
	for ns in "${NK_NETNS[@]}"; do
		nk_ns_stop "$ns"
	done
	for ns in "${NK_NETNS[@]}"; do
		ip netns del "$ns" 2>/dev/null
	done
	for i in "${NK_CLEANUP_HOOKS[@]}"; do
		eval "$i"
	done
	if [ "${NK_KEEP:-0}" = 1 ]; then
		echo "kept $NK_TMP"
	else
		rm -rf "$NK_TMP"
	fi
	if [ "$NK_FAILS" -gt 0 ]; then
		echo
		echo "$NK_FAILS of $NK_CHECKS checks failed:"
		for i in "${NK_FAILED_CHECKS[@]}"; do
			echo "  - $i"
		done
		[ "$rc" -ne 0 ] || rc=1
	fi
	exit "$rc"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
