#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# Issue 4 proof: XDP steering on one shared uplink.  nkd runs in the root
# namespace with --uplink (a veth this test creates; its far end is the
# remote host) and creates two kernel NSMs itself (no netns given): their
# namespaces, veth pairs and XDP egress programs.  Three VMs on them serve
# HTTP from guest namespaces with only lo (python http.server under
# nk-run); the remote host reaches each VM through the right NSM, checked
# three ways: the XDP counters (nkctl -j stats show), `ip -s link` of the
# NSM veths, and which nk-nsm process holds the connection (ss -tanp in
# each NSM namespace); ARP is steered by target, so the remote host learns
# each VM address at its NSM's MAC.  Negative control: with XDP off the
# uplink the same traffic fails; SIGHUP re-attaches.  Then: nkd restart
# (XDP and maps stay, one program, counters kept, NSMs adopted, traffic
# flows while nkd is down; --miss drop), a VM moved to the other NSM (its
# new MAC announced), every pinned map dumped by bpftool with field names,
# and nkctl teardown removing everything nkd created.
#
#   remote-$S                    root namespace                 nk-nsm1-$S
#   eth0 10.77.1.1/24  ------  nku-$S (uplink, XDP ingress)     eth0: vm1 10.77.1.2, fd77:1::2
#        fd77:1::1/64           nkh-nsm1-$S (XDP egress) ----  vm2 10.77.1.3
#   curl                        nkh-nsm2-$S (XDP egress) ----  nk-nsm2-$S eth0: vm3 10.77.1.4, fd77:1::4
#                               nkd --uplink nku-$S
#   g1-$S g2-$S g3-$S (only lo): python3 -m http.server 80 under nk-run

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds curl ss bpftool
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_build

UP=nku-$S
PIN=/sys/fs/bpf/nk-test-$S
N1=nsm1-$S
N2=nsm2-$S
NK_NKD_ARGS=(--uplink "$UP" --pin-dir "$PIN")
declare -A VM_ADDR=([vm1]=10.77.1.2 [vm2]=10.77.1.3 [vm3]=10.77.1.4)
declare -A VM_NSM=([vm1]=$N1 [vm2]=$N1 [vm3]=$N2)

# Whatever nkd did not remove (a failed run): pins, veths.
nk_uplink_cleanup "$PIN" "$UP" "$N1" "$N2"

stats_json()
{
	nkctl -j stats show 2>/dev/null
}

# counter JSON OBJECT NAME FIELD: one counter of "nkctl -j stats show".
counter()
{
	jpy "$1" "[o for o in ([j['global']] + j['nsms'] + j['vms']) if o['object'] == '$2' and o['name'] == '$3'][0]['$4']"
}

# policy_drops JSON VM: VM's drops for reason policy in "nkctl -j stats show".
policy_drops()
{
	jpy "$1" "[o for o in j['vms'] if o['name'] == '$2'][0]['drops']['policy']"
}

# veth_rx NS: rx packets of eth0 in NS, from `ip -s link`.
veth_rx()
{
	ip -n "$1" -s -j link show dev eth0 |
		"$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'
}

# get VM [CURL-ARGS...]: fetch http://VM/whoami.txt from the remote host.
get()
{
	local vm=$1
	shift
	ip netns exec "remote-$S" curl -sS --max-time 5 "$@" "http://${VM_ADDR[$vm]}/whoami.txt" 2>&1
}

get6()
{
	ip netns exec "remote-$S" curl -sS --max-time 5 "http://[$1]/whoami.txt" 2>&1
}

nsm_pid()
{
	nkctl -j nsm show "$1" 2>/dev/null | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["pid"])'
}

# nsm_mac NSM: the MAC of eth0 in the NSM's namespace
nsm_mac()
{
	ip -n "nk-$1" -j link show dev eth0 |
		"$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)[0]["address"])'
}

# remote_mac ADDR: the MAC the remote host has for ADDR ("" if none)
remote_mac()
{
	ip -n "remote-$S" -j neigh show "$1" dev eth0 |
		"$NK_PY" -c 'import json, sys; l = json.load(sys.stdin); print(l[0].get("lladdr", "") if l else "")'
}

# remote_has_mac ADDR NSM: the remote host has ADDR at NSM's eth0
remote_has_mac()
{
	[ "$(remote_mac "$1")" = "$(nsm_mac "$2")" ]
}

# ---------------------------------------------------------------- topology
log_step "topology (suffix $S): uplink $UP in the root namespace"
nk_mount_bpffs
FWD0=$(cat /proc/sys/net/ipv4/ip_forward)
nk_netns_add "remote-$S"
for g in g1 g2 g3; do
	nk_netns_add "$g-$S"
done
# nkd creates these; registered so that a failed run still removes them
NK_NETNS+=("nk-$N1" "nk-$N2")
ip link add "$UP" type veth peer name eth0 netns "remote-$S" ||
	nk_die "cannot create the uplink veth pair"
ip -n "remote-$S" addr add 10.77.1.1/24 dev eth0
ip -n "remote-$S" addr add fd77:1::1/64 dev eth0 nodad
ip -n "remote-$S" link set eth0 up
ip link set "$UP" up
nk_uplink_far_end "remote-$S" eth0
log_info "remote-$S eth0 10.77.1.1/24 fd77:1::1/64 <-> $UP (root namespace)"

nk_start_nkd
check "nkd attached the ingress program to $UP (and said in which mode)" \
	grep -qE "$UP \(ifindex [0-9]+\): XDP ingress program attached in (native|generic) mode" "$NK_NKD_LOG"
grep -E "XDP ingress" "$NK_NKD_LOG" | sed 's/^/    /'
PROG0=$(nk_xdp_prog_ids "$UP")
check "one XDP program on $UP" test -n "$PROG0" -a "${PROG0// /}" = "$PROG0"

log_step "two kernel NSMs created by nkd (no netns given)"
for n in "$N1" "$N2"; do
	nk_run_nkctl nsm add "$n" type kernel
	NK_NSMS+=("$n")
	check "netns nk-$n exists" test -e "/run/netns/nk-$n"
	check "nkh-$n exists in the root namespace with an XDP program" \
		test -n "$(nk_xdp_prog_ids "nkh-$n")"
	check "nk-$n has eth0 with addrgenmode none" \
		grep -q "addrgenmode none" <(ip -n "nk-$n" -d link show dev eth0)
	check "nkh-$n is in no bridge" not_grep -q master <(ip link show dev "nkh-$n")
	check "nk-nsm of $n runs in nk-$n" wait_for -t 5 nk_nsm_pid "nk-$n"
done
P1=$(nk_nsm_pid "nk-$N1")
P2=$(nk_nsm_pid "nk-$N2")
check_eq "nkctl nsm show $N1: pid" "$(nsm_pid "$N1")" "$P1"
check_eq "nkctl nsm show $N2: pid" "$(nsm_pid "$N2")" "$P2"
nkctl nsm show "$N1" | sed 's/^/    /'
# the namespace ids the ingress program looks up moved flows' sockets in
for n in "$N1" "$N2"; do
	nsid=$(ip netns list-id | awk -v ns="nk-$n)" '$NF == ns { print $2 }')
	show=$(nkctl -j nsm show "$n" 2>/dev/null)
	check "nk-$n has an nsid (ip netns list-id)" test -n "$nsid"
	check_eq "nkctl nsm show $n: netns_id is that nsid" "$(jpy "$show" 'j["netns_id"]')" "$nsid"
	check_eq "nsm_netns of $n (bpftool) says the same" \
		"$(bpftool -j map lookup pinned "$PIN/nsm_netns" key $(jpy "$show" 'j["id"]') 0 0 0 |
			"$NK_PY" -c 'import json, sys; v = json.load(sys.stdin)["formatted"]["value"]; print(v["netns_id"] if v["flags"] & 1 else None)')" \
		"$nsid"
done

log_step "three VMs: vm1, vm2 on $N1; vm3 on $N2"
nk_run_nkctl vm add vm1 nsm "$N1" addr 10.77.1.2/24,fd77:1::2/64 uds "$NK_TMP/vm1.vsock"
nk_run_nkctl vm add vm2 nsm "$N1" addr 10.77.1.3/24 uds "$NK_TMP/vm2.vsock"
nk_run_nkctl vm add vm3 nsm "$N2" addr 10.77.1.4/24,fd77:1::4/64 uds "$NK_TMP/vm3.vsock"
for vm in vm1 vm2 vm3; do
	check "${VM_ADDR[$vm]} on eth0 in nk-${VM_NSM[$vm]}" \
		wait_for -t 10 nk_has_addr "nk-${VM_NSM[$vm]}" eth0 "${VM_ADDR[$vm]}"
done
for g in g1 g2 g3; do
	mkdir -p "$NK_TMP/www-$g"
	echo "hello from $(nk_vm_of $g) $S" >"$NK_TMP/www-$g/whoami.txt"
	truncate -s 256M "$NK_TMP/www-$g/big.bin"	# more than both ends buffer
	nk_guest_bg "$g" "$NK_TMP/http-$g.log" "$NK_PY" -m http.server 80 --bind :: \
		--directory "$NK_TMP/www-$g"
done
for vm in vm1 vm2 vm3; do
	check "remote reaches $vm's server at ${VM_ADDR[$vm]}:80" \
		wait_port "remote-$S" "${VM_ADDR[$vm]}" 80 15
done

# ---------------------------------------------------------------- steering
log_step "ARP was steered: the remote host learned each VM address at its NSM's MAC"
for vm in vm1 vm2 vm3; do
	mac=$(nsm_mac "${VM_NSM[$vm]}")
	check_eq "remote: ${VM_ADDR[$vm]} ($vm) is at ${VM_NSM[$vm]}'s eth0" \
		"$(remote_mac "${VM_ADDR[$vm]}")" "$mac"
	# no neighbour re-validation (unicast ARP probes) during the exact counts
	ip -n "remote-$S" neigh replace "${VM_ADDR[$vm]}" lladdr "$mac" dev eth0 nud permanent
done
# ... in either direction: an NSM re-validating the remote host's address
# gets a reply addressed to one of its VMs, which XDP counts for that VM.
RMAC=$(ip -n "remote-$S" -o link show eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
for n in "$N1" "$N2"; do
	for a in 10.77.1.1 fd77:1::1; do
		ip -n "nk-$n" neigh replace "$a" lladdr "$RMAC" dev eth0 nud permanent 2>/dev/null
	done
done

log_step "traffic to each VM goes through its NSM: XDP counters and ip -s link"
# One VM at a time: its VM and NSM counters move, nobody else's.
for vm in vm1 vm2 vm3; do
	n=${VM_NSM[$vm]}
	other=$N1
	[ "$n" = "$N1" ] && other=$N2
	s0=$(stats_json)
	r0=$(veth_rx "nk-$n")
	o0=$(veth_rx "nk-$other")
	ok=0
	for i in 1 2 3 4 5; do
		[ "$(get "$vm")" = "hello from $vm $S" ] && ok=$((ok + 1))
	done
	s1=$(stats_json)
	r1=$(veth_rx "nk-$n")
	o1=$(veth_rx "nk-$other")
	check_eq "remote curl http://${VM_ADDR[$vm]}/whoami.txt, 5 times" "$ok" 5
	d_vm=$(($(counter "$s1" vm "$vm" rx_packets) - $(counter "$s0" vm "$vm" rx_packets)))
	d_vmtx=$(($(counter "$s1" vm "$vm" tx_packets) - $(counter "$s0" vm "$vm" tx_packets)))
	d_n=$(($(counter "$s1" nsm "$n" rx_packets) - $(counter "$s0" nsm "$n" rx_packets)))
	d_o=$(($(counter "$s1" nsm "$other" rx_packets) - $(counter "$s0" nsm "$other" rx_packets)))
	log_info "$vm: XDP rx +$d_vm tx +$d_vmtx; $n rx +$d_n, $other rx +$d_o; ip -s link eth0 rx: nk-$n +$((r1 - r0)), nk-$other +$((o1 - o0))"
	check_gt "XDP: $vm rx packets grew" "$d_vm" 9
	check_gt "XDP: $vm tx packets (egress through the uplink) grew" "$d_vmtx" 9
	check_eq "XDP: $n rx grew by exactly $vm's" "$d_n" "$d_vm"
	check_eq "XDP: $other rx did not move" "$d_o" 0
	for v in vm1 vm2 vm3; do
		[ "$v" = "$vm" ] && continue
		check_eq "XDP: $v rx did not move" \
			"$(($(counter "$s1" vm "$v" rx_packets) - $(counter "$s0" vm "$v" rx_packets)))" 0
	done
	check_eq "ip -s link: nk-$n eth0 received exactly the frames XDP sent it" "$((r1 - r0))" "$d_n"
	check_eq "ip -s link: nk-$other eth0 received nothing" "$((o1 - o0))" 0
done
out=$(get6 fd77:1::2)
check_eq "remote curl http://[fd77:1::2]/ (vm1, IPv6: ND steered by target)" "$out" "hello from vm1 $S"
out=$(get6 fd77:1::4)
check_eq "remote curl http://[fd77:1::4]/ (vm3, IPv6)" "$out" "hello from vm3 $S"
S_ALL=$(stats_json)
check_eq "no drops counted" \
	"$(jpy "$S_ALL" 'sum(sum(o["drops"].values()) for o in [j["global"]] + j["nsms"] + j["vms"])')" 0
nkctl stats show | sed 's/^/    /'

log_step "which NSM process holds each connection (ss -tanp)"
# slow downloads of big files keep the connections open while we look
SLOW=()
for vm in vm1 vm3; do
	nk_bg "remote-$S" "$NK_TMP/slow-$vm.log" curl -sS --max-time 60 --limit-rate 2M \
		-o /dev/null "http://${VM_ADDR[$vm]}/big.bin"
	SLOW+=("$NK_BG_PID")
done
# estab NSM ADDR: established connections on ADDR:80 (the guests listen on
# ::, so IPv4 peers show as [::ffff:ADDR]:80)
estab()
{
	ip netns exec "nk-$1" ss -Htanp state established sport = :80 |
		awk -v a="$2" '$3 == a ":80" || $3 == "[::ffff:" a "]:80"'
}
has_estab()
{
	[ -n "$(estab "$1" "$2")" ]
}
for vm in vm1 vm3; do
	n=${VM_NSM[$vm]}
	other=$N1
	[ "$n" = "$N1" ] && other=$N2
	pid=$P1
	[ "$n" = "$N2" ] && pid=$P2
	check "$vm's connection is established in nk-$n" wait_for -t 10 has_estab "$n" "${VM_ADDR[$vm]}"
	owners=$(estab "$n" "${VM_ADDR[$vm]}" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' ')
	check_eq "it is held by $n's nk-nsm (pid $pid)" "$owners" "$pid "
	check_eq "nk-$other has no connection of $vm" "$(estab "$other" "${VM_ADDR[$vm]}")" ""
	echo "    ip netns exec nk-$n ss -tanp:"
	ip netns exec "nk-$n" ss -tanp | sed 's/^/      /'
done
check_eq "no TCP socket in any guest namespace" \
	"$(for g in g1 g2 g3; do ip netns exec "$g-$S" ss -Htan; done)" ""
for pid in "${SLOW[@]}"; do
	check "the slow download (curl pid $pid) was still running" nk_alive "$pid"
done
nk_stop "${SLOW[@]}"
check_eq "ip_forward in the root namespace unchanged" "$(cat /proc/sys/net/ipv4/ip_forward)" "$FWD0"
for vm in vm1 vm2 vm3; do	# dynamic again: a move must be learned by ARP
	ip -n "remote-$S" neigh replace "${VM_ADDR[$vm]}" lladdr "$(nsm_mac "${VM_NSM[$vm]}")" \
		dev eth0 nud reachable
done

# ---------------------------------------------------------------- control
log_step "negative control: XDP off the uplink"
ip link set dev "$UP" xdp off
check_eq "no XDP program on $UP" "$(nk_xdp_prog_ids "$UP")" ""
s0=$(stats_json)
for vm in vm1 vm3; do
	out=$(get "$vm" --max-time 3)
	check "without XDP, remote curl to $vm fails ($out)" test "$out" != "hello from $vm $S"
done
s1=$(stats_json)
check_eq "no frame was steered meanwhile" \
	"$(($(counter "$s1" global "$UP" rx_packets) - $(counter "$s0" global "$UP" rx_packets)))" 0
kill -HUP "$NKD_PID"
has_xdp()
{
	[ -n "$(nk_xdp_prog_ids "$UP")" ]
}
check "SIGHUP: nkd attaches the ingress program again" wait_for -t 5 has_xdp
for vm in vm1 vm2 vm3; do
	check_eq "after SIGHUP, remote curl to $vm works again" "$(get "$vm")" "hello from $vm $S"
done

# ---------------------------------------------------------------- policy
log_step "policy: a quarantined VM gets no frame either way; its neighbours do"
# a server on the remote host, for the guests' outbound connections
mkdir -p "$NK_TMP/www-remote"
echo "hello from remote $S" >"$NK_TMP/www-remote/whoami.txt"
nk_bg "remote-$S" "$NK_TMP/http-remote.log" "$NK_PY" -m http.server 8080 --bind 10.77.1.1 \
	--directory "$NK_TMP/www-remote"
REMOTE_HTTP=$NK_BG_PID
# and a UDP sink: what the guests send one way, with no answer to lose
nk_bg "remote-$S" "$NK_TMP/udp-remote.log" "$NK_PY" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.1.1", 9999))
while True:
    d, a = s.recvfrom(2048)
    print(a[0], d.decode(errors="replace"), flush=True)'
REMOTE_UDP=$NK_BG_PID
# udp_send G WORD: three datagrams WORD from guest G to the sink
udp_send()
{
	nk_guest "$1" "$NK_PY" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(sys.argv[1].encode(), ("10.77.1.1", 9999))' "$2"
}
# out G: the guest fetches the remote's page
out()
{
	nk_guest "$1" curl -sS --max-time "${2:-5}" http://10.77.1.1:8080/whoami.txt 2>&1
}
check "remote server up" wait_port "remote-$S" 10.77.1.1 8080 10
check_eq "before: g1 (vm1) reaches the remote" "$(out g1)" "hello from remote $S"
# policy_of VM FIELD: one field of "nkctl -j policy show VM"
policy_of()
{
	jpy "$(nkctl -j policy show "$1")" "j['$2']"
}
# local G VM: guest G fetches VM's page through their NSM's own stack
# (two VMs of one NSM: the traffic never crosses the uplink)
local_get()
{
	nk_guest "$1" curl -sS --max-time "${3:-5}" "http://${VM_ADDR[$2]}/whoami.txt" 2>&1
}
check_eq "before: g2 (vm2) reaches vm1 on their NSM" "$(local_get g2 vm1)" "hello from vm1 $S"
check_eq "policy show vm1: drop_all before" "$(policy_of vm1 drop_all)" False
check_eq "policy show vm1: enforced (its nsm is steered)" "$(policy_of vm1 enforced)" True
s0=$(stats_json)
nk_run_nkctl policy set vm1 drop-all on
check_eq "policy show vm1: drop_all" "$(policy_of vm1 drop_all)" True
# stored_policy VM: the "policy" of VM's entry in nkd.json ("None": none)
stored_policy()
{
	"$NK_PY" -c "
import json
print([v for v in json.load(open('$NK_STATE/nkd.json'))['vms'] if v['name'] == '$1'][0].get('policy'))"
}
# map_drop_all ID: drop_all of vm_policy[ID] through bpftool ("none": no entry)
map_drop_all()
{
	bpftool -j map dump pinned "$PIN/vm_policy" | "$NK_PY" -c "
import json, sys
print(next((e['formatted']['value']['drop_all'] for e in json.load(sys.stdin)
            if e['formatted']['key'] == $1), 'none'))"
}
check_eq "nkd.json keeps it in vm1's entry" "$(stored_policy vm1)" "{'drop_all': True}"
VM1_ID=$(jpy "$(nkctl -j vm show vm1)" "j['id']")
check_eq "bpftool: vm_policy[$VM1_ID] has drop_all 1" "$(map_drop_all "$VM1_ID")" 1
out1=$(get vm1 --max-time 3)
check "remote curl to vm1 fails ($out1)" test "$out1" != "hello from vm1 $S"
out1=$(out g1 3)
check "g1 (vm1) cannot reach the remote ($out1)" test "$out1" != "hello from remote $S"
# egress alone: a datagram needs no answer, so only the egress program
# (on the NSM's veth) can stop it
udp_send g1 quarantined
udp_send g2 neighbour
check "the sink got vm2's datagrams" wait_for -t 5 grep -q "10.77.1.3 neighbour" "$NK_TMP/udp-remote.log"
check "... and none of vm1's" not_grep -q "quarantined" "$NK_TMP/udp-remote.log"
# its neighbour on the same NSM cannot reach it either, nor it the
# neighbour: the local program on the NSM's loopback (before: both could)
sl0=$(stats_json)
out1=$(local_get g2 vm1 3)
check "g2 (vm2) cannot reach vm1 through their NSM ($out1)" test "$out1" != "hello from vm1 $S"
out1=$(local_get g1 vm2 3)
check "g1 (vm1) cannot reach vm2 through their NSM ($out1)" test "$out1" != "hello from vm2 $S"
sl1=$(stats_json)
check_gt "... dropped by the policy on the NSM's loopback (vm1's policy drops rose)" \
	$(($(policy_drops "$sl1" vm1) - $(policy_drops "$sl0" vm1))) 1
check "the local program is on the NSM's loopback (tc ingress)" \
	bash -c "ip netns exec 'nk-$N1' tc filter show dev lo ingress | grep -q tc_steer_local"
check_eq "vm2, on vm1's nsm, still served" "$(get vm2)" "hello from vm2 $S"
check_eq "g2 (vm2) still reaches the remote" "$(out g2)" "hello from remote $S"
check_eq "vm3 still served" "$(get vm3)" "hello from vm3 $S"
s1=$(stats_json)
d_pol=$(($(policy_drops "$s1" vm1) - $(policy_drops "$s0" vm1)))
log_info "vm1: $d_pol frames dropped by its policy"
check_gt "XDP: vm1's policy drops counted" "$d_pol" 2
for vm in vm2 vm3; do
	check_eq "XDP: no policy drop for $vm" \
		"$(policy_drops "$s1" "$vm")" 0
done
POLICIES=$(nkctl policy list)
check "policy list: vm1 on, enforced" grep -qE "^vm1 +$N1 +yes +yes" <<<"$POLICIES"
check "policy list: vm3 off" grep -qE "^vm3 +$N2 +no +yes" <<<"$POLICIES"
echo "$POLICIES" | sed 's/^/    /'
nk_run_nkctl policy set vm1 drop-all off
check_eq "policy off: remote curl to vm1 works again" "$(get vm1)" "hello from vm1 $S"
check_eq "policy off: g1 reaches the remote again" "$(out g1)" "hello from remote $S"
check_eq "policy off: g2 reaches vm1 through their NSM again" "$(local_get g2 vm1)" "hello from vm1 $S"
udp_send g1 released
check "policy off: the sink gets vm1's datagrams" \
	wait_for -t 5 grep -q "10.77.1.2 released" "$NK_TMP/udp-remote.log"
check_eq "bpftool: vm_policy has no entry for vm1" "$(map_drop_all "$VM1_ID")" none
check_eq "nkd.json: vm1's entry has no policy" "$(stored_policy vm1)" None
rc=0
err=$(nkctl policy set vm1 drop-all maybe 2>&1) || rc=$?
check_eq "policy set vm1 drop-all maybe: exit 1" "$rc" 1
check "... says on or off ($err)" grep -q "drop-all is on or off, not 'maybe'" <<<"$err"
rc=0
err=$(nkctl policy show nope 2>&1) || rc=$?
check_eq "policy show nope: exit 1" "$rc" 1
check "... says vm nope does not exist" grep -q "vm nope does not exist" <<<"$err"
nk_stop "$REMOTE_HTTP" "$REMOTE_UDP"

# ---------------------------------------------------------------- restart
log_step "restart is not teardown"
before=$(stats_json)
prog=$(nk_xdp_prog_ids "$UP")
nk_stop "$NKD_PID"
check_eq "nkd gone: the ingress program stays on $UP" "$(nk_xdp_prog_ids "$UP")" "$prog"
check "nkd gone: the maps stay pinned" test -e "$PIN/addr_vm"
check_eq "nkd gone: remote curl to vm2 still works (the data path has no nkd)" \
	"$(get vm2)" "hello from vm2 $S"
NK_NKD_LOG=$NK_TMP/nkd-2.log
# and now frames for no VM are dropped; the configuration comes from a
# copy of the state file given as --config (the same schema), so that
# SIGHUP re-reads it below
CFG=$NK_TMP/nkd-config.json
cp "$NK_STATE/nkd.json" "$CFG"
NK_NKD_ARGS+=(--miss drop --config "$CFG")
nk_start_nkd
check "restarted nkd reused the pinned maps" grep -q "steering maps reused from $PIN" "$NK_NKD_LOG"
check "restarted nkd kept the ingress program (same code, same maps)" \
	grep -q "$UP (ifindex [0-9]*): XDP ingress program id $prog kept (same code on the same maps)" "$NK_NKD_LOG"
now=$(nk_xdp_prog_ids "$UP")
check "exactly one XDP program on $UP ($prog -> $now)" test -n "$now" -a "${now// /}" = "$now"
check_eq "$N1 adopted, same pid" "$(nsm_pid "$N1")" "$P1"
check_eq "$N2 adopted, same pid" "$(nsm_pid "$N2")" "$P2"
after=$(stats_json)
check "counters survive the restart (global rx $(counter "$before" global "$UP" rx_packets) -> $(counter "$after" global "$UP" rx_packets))" \
	test "$(counter "$after" global "$UP" rx_packets)" -ge "$(counter "$before" global "$UP" rx_packets)"
for vm in vm1 vm2 vm3; do
	check_eq "after the restart, remote curl to $vm works" "$(get "$vm")" "hello from $vm $S"
done
check "--miss drop: nkd says so" grep -q "frames for no VM are dropped" "$NK_NKD_LOG"
# The NSMs nkd created itself have no netns/dev in the file: a reload of
# the unchanged file changes nothing and warns about nothing.
kill -HUP "$NKD_PID"
check "SIGHUP of the unchanged --config: nothing applied" \
	wait_for -t 5 grep -q "SIGHUP: $CFG applied: 0 added, 0 removed, 0 changed" "$NK_NKD_LOG"
check "SIGHUP of the unchanged --config: no NSM setting reported as changed" \
	not_grep -q "changed in $CFG" "$NK_NKD_LOG"
check_eq "after that SIGHUP, $N1 has the same pid" "$(nsm_pid "$N1")" "$P1"
# A policy changed in the file applies in place on SIGHUP: vm3 quarantined
# and back, its NSM and its listener untouched.
# cfg_policy VM on|off: VM's entry in $CFG with or without drop_all
cfg_policy()
{
	"$NK_PY" - "$CFG" "$1" "$2" <<-'EOF'
	import json, sys
	path, name, on = sys.argv[1], sys.argv[2], sys.argv[3] == "on"
	c = json.load(open(path))
	for v in c["vms"]:
	    if v["name"] == name:
	        v.pop("policy", None)
	        if on:
	            v["policy"] = {"drop_all": True}
	json.dump(c, open(path, "w"), indent=1)
	EOF
}
cfg_policy vm3 on
kill -HUP "$NKD_PID"
s0=$(stats_json)
check "SIGHUP with vm3's policy on: 1 changed" \
	wait_for -t 5 grep -q "SIGHUP: $CFG applied: 0 added, 0 removed, 1 changed" "$NK_NKD_LOG"
check "... in place: the policy changed" grep -q "SIGHUP: vm vm3: policy drop_all on" "$NK_NKD_LOG"
check "... the vm was not deleted and added again" not_grep -q "vm vm3: deleted" "$NK_NKD_LOG"
check_eq "policy show vm3: drop_all" "$(jpy "$(nkctl -j policy show vm3)" "j['drop_all']")" True
out3=$(get vm3 --max-time 3)
check "remote curl to vm3 fails ($out3)" test "$out3" != "hello from vm3 $S"
s1=$(stats_json)
check_gt "XDP: vm3's policy drops counted" \
	"$(($(policy_drops "$s1" vm3) - $(policy_drops "$s0" vm3)))" 0
check_eq "vm1 still served" "$(get vm1)" "hello from vm1 $S"
cfg_policy vm3 off
kill -HUP "$NKD_PID"
# applied_twice: the second "1 changed" is in the log
applied_twice()
{
	[ "$(grep -c "SIGHUP: $CFG applied: 0 added, 0 removed, 1 changed" "$NK_NKD_LOG")" -eq 2 ]
}
check "SIGHUP with vm3's policy gone: 1 changed" wait_for -t 5 applied_twice
check_eq "remote curl to vm3 works again" "$(get vm3)" "hello from vm3 $S"
check_eq "$N2 has the same pid" "$(nsm_pid "$N2")" "$P2"
check_eq "--miss drop: stored in nkd.json" \
	"$("$NK_PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["miss"])' "$NK_STATE/nkd.json")" drop
s0=$(stats_json)
ip netns exec "remote-$S" curl -s --max-time 1 -o /dev/null http://10.77.1.9/
s1=$(stats_json)
check_eq "stats: miss action" "$(counter "$s1" global "$UP" miss)" drop
check_gt "--miss drop: ARP for 10.77.1.9 (no VM) dropped as no_vm" \
	"$(($(jpy "$s1" 'j["global"]["drops"]["no_vm"]') - $(jpy "$s0" 'j["global"]["drops"]["no_vm"]')))" 0

# ---------------------------------------------------------------- replies
log_step "a neighbour reply goes to the NSM that asked, not to the address's NSM"
# During a move both NSMs have the VM's address, and the new one resolves
# its neighbours from it while the address still leads to the old one.
# Here $N2 takes vm1's addresses (vm1 stays on $N1) and resolves the remote
# host from them: the ARP reply and the neighbour advertisement are for
# vm1's addresses and unicast to $N2's MAC (nsm_by_mac); steered by
# address they would reach $N1, and $N2 would ask again until it gave up.
ip -n "nk-$N2" addr add 10.77.1.2/24 dev eth0
ip -n "nk-$N2" addr add fd77:1::2/64 dev eth0 nodad
for a in 10.77.1.1 fd77:1::1; do
	ip -n "nk-$N2" neigh del "$a" dev eth0
	# a datagram from vm1's address to the remote host (its discard port)
	ip netns exec "nk-$N2" "$NK_PY" -c '
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.sendto(b"x", (sys.argv[2], 9))' "${a%1}2" "$a"
	check "$N2 resolved the remote host $a from vm1's address (without the rule: never)" \
		wait_for -t 3 bash -c "ip -n nk-$N2 neigh show $a dev eth0 | grep -q '$RMAC'"
	ip -n "nk-$N2" neigh show "$a" dev eth0 | sed 's/^/    /'
	ip -n "nk-$N2" neigh replace "$a" lladdr "$RMAC" dev eth0 nud permanent
done
ip -n "nk-$N2" addr del 10.77.1.2/24 dev eth0
ip -n "nk-$N2" addr del fd77:1::2/64 dev eth0
# the remote host took $N2's requests for news of vm1's addresses: it
# forgets them, and learns vm1 at $N1 again (ARP steered by target)
ip -n "remote-$S" neigh del 10.77.1.2 dev eth0 2>/dev/null
ip -n "remote-$S" neigh del fd77:1::2 dev eth0 2>/dev/null
check_eq "remote curl to vm1 works" "$(get vm1)" "hello from vm1 $S"
check "... through $N1: the remote host has vm1 at $N1's MAC again" remote_has_mac 10.77.1.2 "$N1"

# ---------------------------------------------------------------- move
log_step "move vm2 from $N1 to $N2"
s0=$(stats_json)
nk_run_nkctl vm set vm2 nsm "$N2"
VM_NSM[vm2]=$N2
check "the remote host learned vm2's new MAC ($N2's eth0) from the announcement" \
	wait_for -t 5 remote_has_mac 10.77.1.3 "$N2"
check "10.77.1.3 now on eth0 in nk-$N2" wait_for -t 5 nk_has_addr "nk-$N2" eth0 10.77.1.3
check "10.77.1.3 gone from nk-$N1" wait_for -t 5 bash -c "! ip -n nk-$N1 -o addr show dev eth0 | grep -qw 10.77.1.3"
vm2_ok()
{
	[ "$(get vm2 --max-time 2)" = "hello from vm2 $S" ]
}
check "remote curl to vm2 works through $N2" wait_for -t 15 vm2_ok
s1=$(stats_json)
d_vm2=$(($(counter "$s1" vm vm2 rx_packets) - $(counter "$s0" vm vm2 rx_packets)))
d_n1=$(($(counter "$s1" nsm "$N1" rx_packets) - $(counter "$s0" nsm "$N1" rx_packets)))
d_vm1=$(($(counter "$s1" vm vm1 rx_packets) - $(counter "$s0" vm vm1 rx_packets)))
d_n2=$(($(counter "$s1" nsm "$N2" rx_packets) - $(counter "$s0" nsm "$N2" rx_packets)))
d_vm3=$(($(counter "$s1" vm vm3 rx_packets) - $(counter "$s0" vm vm3 rx_packets)))
check_gt "XDP: vm2 rx grew" "$d_vm2" 0
check_eq "XDP: $N2 rx = vm2's + vm3's" "$d_n2" "$((d_vm2 + d_vm3))"
check_eq "XDP: $N1 rx = vm1's only (none of vm2's)" "$d_n1" "$d_vm1"

log_step "a quarantined VM stays quarantined across a move (vm2 back to $N1)"
nk_run_nkctl policy set vm2 drop-all on
s0=$(stats_json)
nk_run_nkctl vm set vm2 nsm "$N1"
VM_NSM[vm2]=$N1
check "10.77.1.3 now on eth0 in nk-$N1" wait_for -t 5 nk_has_addr "nk-$N1" eth0 10.77.1.3
check_eq "policy show vm2 after the move: drop_all" \
	"$(jpy "$(nkctl -j policy show vm2)" "(j['nsm'], j['drop_all'], j['enforced'])")" \
	"('$N1', True, True)"
out2=$(get vm2 --max-time 3)
check "remote curl to vm2 on $N1 fails ($out2)" test "$out2" != "hello from vm2 $S"
s1=$(stats_json)
check_gt "XDP: vm2's policy drops counted after the move" \
	"$(($(policy_drops "$s1" vm2) - $(policy_drops "$s0" vm2)))" 0
nk_run_nkctl policy set vm2 drop-all off
# the quarantine dropped the move's announcement; lifting it announces again
check "policy off: the remote host learned vm2's MAC at $N1 at once" \
	wait_for -t 1 remote_has_mac 10.77.1.3 "$N1"
check "remote curl to vm2 works through $N1 again" wait_for -t 5 vm2_ok

# ---------------------------------------------------------------- maps
log_step "every pinned map dumps through bpftool (BTF maps with field names)"
declare -A FIELD=([steer_cfg]=miss_action [addr_vm]=vm_id [vms]=nsm_id [vm_policy]=drop_all
	[nsms]=dev_slot [nsm_ifindex]=nsm_id [vm_stats]=rx_packets [nsm_stats]=rx_packets
	[global_stats]=rx_packets [steer_flows]=nsm_id [nsm_netns]=netns_id [vm_drains]=nsm_id [nsm_macs]=mac
	[nsm_by_mac]=nsm_id)
nmaps=0
for m in "$PIN"/*; do
	name=$(basename "$m")
	nmaps=$((nmaps + 1))
	if ! out=$(bpftool -j map dump pinned "$m" 2>&1); then
		nk_fail "bpftool map dump pinned $m: $out"
		continue
	fi
	case $name in
	nsm_devs | uplink_dev | nsm_xsks)
		nk_pass "bpftool map dump pinned $m (no BTF for this map type: raw keys/values)"
		;;
	*)
		btf=$(bpftool -j map show pinned "$m" | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin).get("btf_id", 0))')
		check_gt "$name carries BTF (btf_id)" "$btf" 0
		if [ "$out" = "[]" ]; then
			nk_pass "bpftool map dump pinned $m: empty (nothing to name)"
		else
			check "bpftool map dump pinned $m prints field name ${FIELD[$name]:-?}" \
				grep -q "\"${FIELD[$name]:-?}\"" <<<"$out"
		fi
		;;
	esac
done
check_eq "pinned maps" "$nmaps" 17
bpftool map dump pinned "$PIN/addr_vm" | head -n 12 | sed 's/^/    /'

# ---------------------------------------------------------------- teardown
log_step "nkctl teardown removes what nkd created"
nk_run_nkctl teardown
check "nkd exits after teardown" wait_for -t 10 bash -c "! kill -0 $NKD_PID 2>/dev/null"
wait "$NKD_PID" 2>/dev/null
check_eq "no XDP program on $UP" "$(nk_xdp_prog_ids "$UP")" ""
check "pin dir $PIN removed" test ! -e "$PIN"
for n in "$N1" "$N2"; do
	check "netns nk-$n removed" test ! -e "/run/netns/nk-$n"
	check "veth nkh-$n removed" bash -c "! ip link show dev nkh-$n >/dev/null 2>&1"
done
nsms_gone()
{
	! nk_alive "$P1" && ! nk_alive "$P2"
}
check "the nk-nsm processes are gone" nsms_gone
NK_NSMS=()

nk_finish
