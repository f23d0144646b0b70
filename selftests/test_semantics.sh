#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Differential TCP semantics (issue 3): build/selftests/nk_semantics runs
# every case twice, once in a guest namespace that owns its stack on a veth
# ("native"), once in guest 1 under nk-run through nkd and the kernel NSM.
# Linux is the oracle: each case's line must match; the test names the
# cases that differ.  Option values are checked on the NSM's own socket
# with ss, not only from what the library reports.
#
#   remote-$S eth0 10.77.0.1 ---- nsm-$S up0 (vm1 10.77.0.2, vm2 10.77.0.3)
#             eth1 10.78.0.1 ---- gn-$S veth0 10.78.0.2 (native guest)
#   10.79.0.0/24 is routed to the remote host, which does not forward: a
#   blackhole (SYNs vanish, nothing answers).

. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds ss ip
nk_require_build
[ -x "$OUTPUT/selftests/nk_semantics" ] || nk_die "$OUTPUT/selftests/nk_semantics is missing (run make)"
SEM=$OUTPUT/selftests/nk_semantics

nk_topo_up

log_step "native guest gn-$S and the blackhole route"
nk_netns_add "gn-$S"
ip link add veth0 netns "gn-$S" type veth peer name eth1 netns "remote-$S" ||
	nk_die "cannot create the native guest's veth"
ip -n "remote-$S" addr add 10.78.0.1/24 dev eth1
ip -n "remote-$S" link set eth1 up
ip -n "gn-$S" addr add 10.78.0.2/24 dev veth0
ip -n "gn-$S" link set veth0 up
ip netns exec "remote-$S" sysctl -qw net.ipv4.ip_forward=0
ip -n "gn-$S" route add 10.79.0.0/24 via 10.78.0.1
ip -n "nsm-$S" route add 10.79.0.0/24 via 10.77.0.1

nk_bg "remote-$S" "$NK_TMP/peer.log" "$SEM" peer --bind 0.0.0.0
wait_for -t 5 grep -q ready "$NK_TMP/peer.log" || nk_die "semantics peer did not start"
wait_port "gn-$S" 10.78.0.1 7001 || nk_die "native guest cannot reach the peer"

log_step "native run"
ip netns exec "gn-$S" "$SEM" client ${SEM_CASES:+--case "$SEM_CASES"} --peer 10.78.0.1 --self 10.78.0.2 \
	--other 10.78.0.3 --blackhole 10.79.0.9 >"$NK_TMP/native.out" 2>"$NK_TMP/native.err"
sed 's/^/  native  /' "$NK_TMP/native.out"

log_step "NetKernel run (guest g1, vm1)"
nk_guest g1 env NK_LOG=1 NK_LOG_FILE="$NK_TMP/shim.log" "$SEM" client ${SEM_CASES:+--case "$SEM_CASES"} --peer 10.77.0.1 \
	--self 10.77.0.2 --other 10.77.0.3 --blackhole 10.79.0.9 \
	>"$NK_TMP/nk.out" 2>"$NK_TMP/nk.err"
sed 's/^/  nk      /' "$NK_TMP/nk.out"

log_step "compare case by case"
ncases=$(wc -l <"$NK_TMP/native.out")
[ -n "${SEM_CASES:-}" ] || check_gt "native run produced its cases" "$ncases" 50
check_eq "both runs produced the same number of cases" "$(wc -l <"$NK_TMP/nk.out")" "$ncases"
differ=()
while IFS= read -r line; do
	name=${line%%:*}
	theirs=$(grep -m1 "^$name:" "$NK_TMP/nk.out")
	if [ "$theirs" != "$line" ]; then
		differ+=("$name")
		echo "  DIFF $name"
		echo "       native: ${line#*: }"
		echo "       nk:     ${theirs#*: }"
	fi
done <"$NK_TMP/native.out"
check_eq "cases that differ from Linux" "${differ[*]:-none}" none

log_step "the guest really had no stack: no TCP socket in g1 during the run"
check_eq "g1 interfaces" "$(ip -n "g1-$S" -o link | awk -F': ' '{print $2}' | tr '\n' ' ')" "lo "

log_step "options applied on the NSM's socket (ss in nsm-$S)"
# A guest connection with options set, held open while ss looks at it.
cat >"$NK_TMP/opts.py" <<'PY'
import socket, sys, time
s = socket.create_connection(("10.77.0.1", 7006))
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 100000)
print("ready", flush=True)
sys.stdin.read()
PY
coproc OPTS { nk_guest g1 "$NK_PY" "$NK_TMP/opts.py"; }
read -r -t 10 ready <&"${OPTS[0]}"
check_eq "option-setting guest program is ready" "${ready:-}" ready
ssout=$(ip netns exec "nsm-$S" ss -tnmoi state established dst 10.77.0.1:7006)
echo "$ssout" | sed 's/^/  ss  /'
check "NSM socket has the keepalive timer (SO_KEEPALIVE, TCP_KEEPIDLE 77)" \
	grep -Eq 'timer:\(keepalive,1min1[0-9]s' <<<"$ssout"
check "NSM socket runs reno (TCP_CONGESTION)" grep -qw reno <<<"$ssout"
check "NSM socket receive buffer is 200000 (SO_RCVBUF 100000 doubled)" \
	grep -q 'rb200000' <<<"$ssout"
eval "exec ${OPTS[1]}>&-"
wait "$OPTS_PID" 2>/dev/null

log_step "an option the NSM does not carry fails loudly"
out=$(nk_guest g1 env NK_LOG=1 "$NK_PY" -c '
import socket, errno
s = socket.create_connection(("10.77.0.1", 7006))
try:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 5)
    print("silently accepted")
except OSError as e:
    print("errno", errno.errorcode[e.errno])
' 2>&1)
echo "$out" | sed 's/^/  /'
check "unsupported option gives ENOPROTOOPT" grep -q "errno ENOPROTOOPT" <<<"$out"
check "and a log line says which" grep -q "setsockopt" <<<"$out"

nk_finish
