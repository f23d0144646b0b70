#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# Issue 5 proof: the operator's control plane.  nkd runs with --uplink (a
# veth whose far end is the remote host) and two NSMs it creates; one VM
# (vm1, guest g1 with only lo) serves HTTP/1.1 (python's threading
# http.server) and runs an iperf3 client against the remote host.
#
#   - nkctl conn list: during a download the connection shows on the
#     right NSM with growing byte counts; a connection the guest has not
#     accepted yet shows too;
#   - graceful moves (nkctl vm set vm1 nsm OTHER) while iperf3 -R runs
#     (the guest is the client: a guest *server* that accepts in the same
#     thread as it reads, iperf3 -s, would block in accept() after the
#     move, see docs/cli.md), while
#     a keep-alive wrk runs and while a "Connection: close" wrk runs: no
#     error; established connections finish on the old NSM (conn list and
#     ss there), new connections are on the new NSM (ss), and once the
#     last old connection ended the old NSM drops the VM's addresses;
#   - a connection offered to the guest before a move and accepted after
#     it: the claim reaches the new NSM and nkd passes it to the old one,
#     which holds the connection (nsmctl.h, "Claims across a move");
#   - nkd killed with SIGKILL mid-transfer and restarted: the transfer
#     finishes, NSM PIDs and map/program ids are unchanged, and the new
#     nkd's conn list shows the old connection.
#
#   remote-$S                    root namespace                  nk-ctl1-$S / nk-ctl2-$S
#   eth0 10.77.2.1/24  ------  nkc-$S (uplink, XDP ingress)      eth0: vm1 10.77.2.2 (one of them)
#   curl, iperf3 -s, wrk        nkh-ctl1-$S, nkh-ctl2-$S (XDP egress)
#   g1-$S (only lo): HTTP/1.1 server on 80, iperf3 -c -R, under nk-run

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds curl ss bpftool iperf3 wrk
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_build

UP=nkc-$S
PIN=/sys/fs/bpf/nk-ctltest-$S
N1=ctl1-$S
N2=ctl2-$S
A=10.77.2.2
# shellcheck disable=SC2034 # read by nk_start_nkd (lib.sh)
NK_NKD_ARGS=(--uplink "$UP" --pin-dir "$PIN")

# Whatever nkd did not remove (a failed run): pins, veths.
nk_uplink_cleanup "$PIN" "$UP" "$N1" "$N2"

conns_json()
{
	nkctl -j conn list vm vm1 2>/dev/null
}

# conn_field JSON PORT FIELD: FIELD of vm1's connected TCP socket with local port PORT
# (the first one), "" if none.
conn_field()
{
	jpy "$1" "next((str(c['$3']) for c in j if c['state'] == 'connected' and c['local'].endswith(':$2')), '')"
}

# conn_nsms JSON PORT: the NSMs holding vm1's connected sockets to remote port PORT
conn_nsms()
{
	jpy "$1" "' '.join(sorted(set(c['nsm'] for c in j if c['state'] == 'connected' and (c['remote'] or '').endswith(':$2'))))"
}

nsm_pid()
{
	nkctl -j nsm show "$1" 2>/dev/null | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["pid"])'
}

nsm_slot()
{
	nkctl -j nsm show "$1" 2>/dev/null | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

vm_nsm()
{
	nkctl -j vm show vm1 2>/dev/null | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["nsm"])'
}

map_ids()
{
	local m
	for m in "$PIN"/*; do
		bpftool -j map show pinned "$m" | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'
	done | tr '\n' ' '
}

# estab NSM PORT: established connections on the VM's PORT in NSM's namespace
estab()
{
	ip netns exec "nk-$1" ss -Htn state established "( sport = :$2 )" 2>/dev/null |
		grep -cE "($A|\[::ffff:$A\]):$2 "
}

has_addr_not()
{
	! ip -n "nk-$1" -o addr show dev eth0 | grep -qw "$A"
}

http_ok()
{
	[ "$(ip netns exec "remote-$S" curl -sS --max-time 2 "http://$A/whoami.txt" 2>&1)" = "hello from vm1" ]
}

listening_on()
{
	[ "$(jpy "$(conns_json)" "sum(1 for c in j if c['state'] == 'listening' and c['nsm'] == '$1')")" -ge 1 ]
}

# listens PORT: conn list has vm1's listener on PORT
listens()
{
	[ -n "$(jpy "$(conns_json)" "' '.join(c['local'] for c in j if c['state'] == 'listening' and c['local'].endswith(':$1'))")" ]
}

# queued PORT: conn list has a connection to vm1's PORT (with a remote end)
queued()
{
	[ -n "$(conn_field "$(conns_json)" "$1" remote)" ]
}

# out_rsts NS...: TCP resets sent from these namespaces (Tcp OutRsts of
# /proc/net/snmp).  (The kernel's EstabResets counter also counts orderly
# closes from CLOSE_WAIT, so it says nothing here.)
out_rsts()
{
	local ns n=0 v
	for ns in "$@"; do
		# shellcheck disable=SC2016 # awk's $i, not the shell's
		v=$(ip netns exec "$ns" awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) f[$i] = i; h = 1 }
			else print $f["OutRsts"] }' /proc/net/snmp)
		n=$((n + v))
	done
	echo "$n"
}

# rst_start / rst_check WHAT BASE: the resets the NSMs sent meanwhile are
# at most BASE (what the same load causes without a move), and the
# remote host's are logged (wrk resets connections it ends with a reply
# under way).
rst_start()
{
	RST_N=$(out_rsts "nk-$N1" "nk-$N2")
	RST_R=$(out_rsts "remote-$S")
	FAILS0=$(attempt_fails)
}

# attempt_fails: the remote host's connects that met a reset (Tcp
# AttemptFails): a new connection refused because no NSM listened
attempt_fails()
{
	# shellcheck disable=SC2016 # awk's $i, not the shell's
	ip netns exec "remote-$S" awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) f[$i] = i; h = 1 }
		else print $f["AttemptFails"] }' /proc/net/snmp
}

rst_check()
{
	local n r
	n=$(($(out_rsts "nk-$N1" "nk-$N2") - RST_N))
	r=$(($(out_rsts "remote-$S") - RST_R))
	log_info "$1: TCP resets sent by the NSMs: $n (bound from the same load without a move: $2), by the remote host: $r"
	check "$1: the NSMs sent no more resets than without a move ($n <= $2)" test "$n" -le "$2"
	check_eq "$1: no connect of the remote host was refused (AttemptFails)" \
		"$(($(attempt_fails) - FAILS0))" 0
}

# wrk_check LOG WHAT: wrk's output has requests and no error: no connect,
# read, write or timeout error, no non-2xx.
wrk_check()
{
	local reqs
	reqs=$(awk '/requests in/ { print $1 }' "$1")
	check_gt "$2: requests completed" "${reqs:-0}" 100
	check "$2: no socket errors" not_grep -q "Socket errors" "$1"
	check "$2: no non-2xx responses" not_grep -q "Non-2xx" "$1"
}

# ---------------------------------------------------------------- topology
log_step "topology (suffix $S): uplink $UP, nkd with two NSMs it creates, vm1 on $N1"
nk_mount_bpffs
nk_netns_add "remote-$S"
nk_netns_add "g1-$S"
NK_NETNS+=("nk-$N1" "nk-$N2")
ip link add "$UP" type veth peer name eth0 netns "remote-$S" ||
	nk_die "cannot create the uplink veth pair"
ip -n "remote-$S" addr add 10.77.2.1/24 dev eth0
ip -n "remote-$S" link set eth0 up
ip link set "$UP" up
nk_uplink_far_end "remote-$S" eth0
nk_start_nkd
for n in "$N1" "$N2"; do
	nk_run_nkctl nsm add "$n" type kernel
	NK_NSMS+=("$n")
	check "nk-nsm of $n runs" wait_for -t 5 nk_nsm_pid "nk-$n"
done
P1=$(nk_nsm_pid "nk-$N1")
P2=$(nk_nsm_pid "nk-$N2")
nk_run_nkctl vm add vm1 nsm "$N1" addr "$A/24" uds "$NK_TMP/vm1.vsock"
check "$A on eth0 in nk-$N1" wait_for -t 10 nk_has_addr "nk-$N1" eth0 "$A"
mkdir -p "$NK_TMP/www"
echo "hello from vm1" >"$NK_TMP/www/whoami.txt"
truncate -s 64M "$NK_TMP/www/big.bin"
truncate -s 3M "$NK_TMP/www/mid.bin"
# NK_LOG: the library's account of each move (listening again) is kept
NK_LOG=1 nk_guest_bg g1 "$NK_TMP/http.log" "$NK_PY" -c '
import functools, http.server as h, sys
class H(h.SimpleHTTPRequestHandler):
	protocol_version = "HTTP/1.1"	# keep-alive
	def log_message(self, *a):
		pass
	def end_headers(self):
		# answer "Connection: close" in kind: without it the client
		# takes the connection for kept alive and sends its next
		# request into it as the server closes (and gets a reset)
		if self.close_connection:
			self.send_header("Connection", "close")
		super().end_headers()
h.ThreadingHTTPServer(("0.0.0.0", 80), functools.partial(H, directory=sys.argv[1])).serve_forever()' "$NK_TMP/www"
nk_bg "remote-$S" "$NK_TMP/iperf3-s.log" iperf3 -s -p 5201
check "remote reaches vm1's HTTP server" wait_port "remote-$S" "$A" 80 15
check "the remote iperf3 server listens" wait_port "remote-$S" 10.77.2.1 5201 15

# ---------------------------------------------------------------- conn list
log_step "nkctl conn list during a download"
nk_bg "remote-$S" "$NK_TMP/slow.log" curl -sS --max-time 60 --limit-rate 4M -o /dev/null "http://$A/big.bin"
SLOW=$NK_BG_PID
has_conn()
{
	[ -n "$(conn_field "$(conns_json)" 80 bytes_out)" ]
}
check "the download shows in conn list" wait_for -t 10 has_conn
c0=$(conns_json)
b0=$(conn_field "$c0" 80 bytes_out)
# curl --limit-rate reads in bursts: wait for the next one
grew()
{
	[ "$(conn_field "$(conns_json)" 80 bytes_out)" -gt "$b0" ]
}
check "conn list: bytes_out grows (from $b0)" wait_for -t 10 grew
c1=$(conns_json)
nkctl conn list | sed 's/^/    /'
check_eq "conn list: on $N1" "$(conn_field "$c1" 80 nsm)" "$N1"
check_eq "conn list: proto" "$(conn_field "$c1" 80 proto)" tcp
check "conn list: remote is the remote host ($(conn_field "$c1" 80 remote))" \
	grep -q "^10.77.2.1:" <<<"$(conn_field "$c1" 80 remote)"
check_gt "conn list: bytes_in counts the request" "$(conn_field "$c1" 80 bytes_in)" 50
check_eq "conn list: the listener shows too" \
	"$(jpy "$c1" "[c['local'] for c in j if c['state'] == 'listening']")" "['$A:80']"
nk_stop "$SLOW"

log_step "a connection the guest has not accepted yet shows in conn list (ss shows an accept queue)"
nk_guest_bg g1 "$NK_TMP/noaccept.log" "$NK_PY" -c 'import socket, time
s = socket.socket()
s.bind(("0.0.0.0", 8081))
s.listen(8)
print("listening", flush=True)
time.sleep(8)'
NOACC=$NK_BG_PID
check "vm1 listens on 8081 (never accepting)" wait_for -t 10 listens 8081
nk_bg "remote-$S" "$NK_TMP/hold.log" bash -c "exec 3<>/dev/tcp/$A/8081; sleep 6"
HOLD=$NK_BG_PID
check "the queued connection shows in conn list, connected" wait_for -t 5 queued 8081
check "conn list: its remote is the remote host ($(conn_field "$(conns_json)" 8081 remote))" \
	grep -q "^10.77.2.1:" <<<"$(conn_field "$(conns_json)" 8081 remote)"
nk_stop "$HOLD"
nk_stop "$NOACC"

# ---------------------------------------------------------------- moves
log_step "move vm1 $N1 -> $N2 while iperf3 -R runs (remote -> guest)"
rst_start
nk_guest_bg g1 "$NK_TMP/iperf3.log" iperf3 -c 10.77.2.1 -p 5201 -t 8 -R
IPERF=$NK_BG_PID
sleep 2
nk_run_nkctl vm set vm1 nsm "$N2"
check_eq "vm1 is on $N2" "$(vm_nsm)" "$N2"
c=$(conns_json)
check "the iperf3 connections still finish on $N1 (conn list: $(conn_nsms "$c" 5201))" \
	test "$(conn_nsms "$c" 5201)" = "$N1"
check_gt "ss in nk-$N1: the iperf3 connections are there" \
	"$(ip netns exec "nk-$N1" ss -Htn state established "( dport = :5201 )" | grep -c "$A:")" 1
# counted while iperf3 still runs: at its end iperf3 -R's client closes
# the data socket with data under way, which resets it (as on Linux)
rst_check "iperf3 -R across the move" 0
check "the listener is on $N2 now" wait_for -t 5 listening_on "$N2"
check "a new connection is served through $N2" wait_for -t 5 http_ok
# nsm_tx NSM: bytes the NSM's egress counters saw leave it
nsm_tx()
{
	jpy "$(nkctl -j stats show nsm "$1" 2>/dev/null)" 'j["tx_bytes"]'
}
tx2_0=$(nsm_tx "$N2")
nk_bg "remote-$S" "$NK_TMP/slow2.log" curl -sS --max-time 60 --limit-rate 1M -o /dev/null "http://$A/mid.bin"
SLOW=$NK_BG_PID
# conn_any NSM PORT: the VM's connections on PORT in any state but
# LISTEN (the server may have sent everything and closed its side: FIN-WAIT)
conn_any()
{
	ip netns exec "nk-$1" ss -Htn state connected "( sport = :$2 )" 2>/dev/null |
		grep -cE "($A|\[::ffff:$A\]):$2 "
}
# (a SYN held back during the move is retransmitted after 1 s, then 3 s)
# curl's --limit-rate lets bursts through: the 3 MiB can be over in half a
# second, before ss looks.  What proves the path is the download ending
# well and the bytes leaving through N2.
slow_done()
{
	! kill -0 "$SLOW" 2>/dev/null
}
check "the download started after the move completes" wait_for -t 20 slow_done
wait "$SLOW"
check_eq "... without a curl error" "$?:$(cat "$NK_TMP/slow2.log")" "0:"
check_gt "... and $N2 sent it (its egress counter rose by more than 3 MiB, bytes)" \
	"$(($(nsm_tx "$N2") - tx2_0))" $((3 << 20))
check_eq "ss in nk-$N1: no new connection there" "$(conn_any "$N1" 80)" 0
log_info "steer_flows: $(bpftool -j map dump pinned "$PIN/steer_flows" | "$NK_PY" -c 'import json, sys; print(len(json.load(sys.stdin)))') entries"
wait "$IPERF"
rc=$?
check_eq "iperf3 finished without error" "$rc" 0
check "iperf3 says done" grep -q "iperf Done" "$NK_TMP/iperf3.log"
grep -E "sender|receiver" "$NK_TMP/iperf3.log" | sed 's/^/    /'
check "after the last old connection, $N1 dropped vm1's address" wait_for -t 10 has_addr_not "$N1"
check "nkd logged the drain's end" grep -q "vm vm1: drained from nsm $N1" "$NK_NKD_LOG"
check_eq "no flow entries left" "$(bpftool -j map dump pinned "$PIN/steer_flows")" "[]"

log_step "move vm1 $N2 -> $N1 while a keep-alive wrk runs"
rst_start
nk_bg "remote-$S" "$NK_TMP/wrk1.log" wrk -t1 -c4 -d6s "http://$A/whoami.txt"
WRK=$NK_BG_PID
sleep 2
nk_run_nkctl vm set vm1 nsm "$N1"
check_eq "vm1 is on $N1" "$(vm_nsm)" "$N1"
check_gt "ss in nk-$N2: the keep-alive connections stay there" "$(estab "$N2" 80)" 0
wait "$WRK"
sed 's/^/    /' "$NK_TMP/wrk1.log"
wrk_check "$NK_TMP/wrk1.log" "keep-alive wrk across the move"
rst_check "keep-alive wrk across the move" 0
check "after wrk, $N2 dropped vm1's address" wait_for -t 10 has_addr_not "$N2"
check "the listener is on $N1" wait_for -t 5 listening_on "$N1"

log_step "move vm1 $N1 -> $N2 while a Connection: close wrk runs (new connections during the move)"
# The NSMs' resets under the same load without a move are measured first,
# and twice their rate (+10) is allowed.  The server answers "Connection:
# close" in kind, so wrk sends nothing into a closing connection: no reset
# is expected (0 for 13,516 requests, 2026-11-27).  Before, wrk sent its next
# request into each connection as the server closed it, and the resets
# came and went with the timing (321-1,328 per 6 s run), so that the bound
# failed with no fault of the move.
rst_start
ip netns exec "remote-$S" wrk -t1 -c4 -d6s -H "Connection: close" "http://$A/whoami.txt" >"$NK_TMP/wrk0.log"
BASE=$(($(out_rsts "nk-$N1" "nk-$N2") - RST_N))
BASE_REQ=$(awk '/requests in/ { print $1 }' "$NK_TMP/wrk0.log")
log_info "without a move: $BASE_REQ requests, $BASE resets sent by the NSM"
rst_start
nk_bg "remote-$S" "$NK_TMP/wrk2.log" wrk -t1 -c4 -d6s -H "Connection: close" "http://$A/whoami.txt"
WRK=$NK_BG_PID
sleep 2
nk_run_nkctl vm set vm1 nsm "$N2"
check_eq "vm1 is on $N2" "$(vm_nsm)" "$N2"
sleep 1
check_gt "ss in nk-$N2: connections of wrk after the move are there (any state)" \
	"$(ip netns exec "nk-$N2" ss -Htan "( sport = :80 )" | grep -c "$A:80 ")" 0
wait "$WRK"
sed 's/^/    /' "$NK_TMP/wrk2.log"
wrk_check "$NK_TMP/wrk2.log" "Connection: close wrk across the move"
REQ=$(awk '/requests in/ { print $1 }' "$NK_TMP/wrk2.log")
log_info "TIME_WAIT sockets on the remote host: $(ip netns exec "remote-$S" ss -Htan state time-wait | wc -l)"
# twice the rate without a move, scaled to the requests of this run, + 10
rst_check "Connection: close wrk across the move" $((BASE * REQ * 2 / BASE_REQ + 10))
d=$(nkctl -j stats show vm vm1 2>/dev/null)
log_info "SYNs held back during the moves (drop reason moving): $(jpy "$d" 'j["drops"].get("moving", 0)')"
check "after wrk, $N1 dropped vm1's address" wait_for -t 10 has_addr_not "$N1"

log_step "move vm1 $N2 -> $N1 with a connection offered to the guest, accepted after the move"
# The connection arrives and is offered to the guest (the offer waits in
# the listener's stream) before the move; the program accepts only after
# the move, when its claim reaches the new NSM: nkd passes it on to the
# old one, which holds the connection.  On Linux the connection waits in
# the accept queue; the remote host must get its answer.  The program
# accepts 6 s after the move (an offer outlived its drained listener by
# 5 s before; it waits as with its listener open now, 30 s from its
# offer) and writes a banner at once after accept(): behind its (quiet)
# claim, in the stream the new NSM passed on, before the old NSM has it.
rm -f "$NK_TMP/accept-now"
nk_guest_bg g1 "$NK_TMP/late.log" "$NK_PY" -c 'import os, socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 8083))
l.listen(8)
print("listening", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
c, peer = l.accept()
c.sendall(b"banner\n")
b = b""
while not b.endswith(b"\n"):
    d = c.recv(100)
    if not d:
        break
    b += d
c.sendall(b"got " + b)
c.close()
print("answered", peer[0], flush=True)' "$NK_TMP/accept-now"
LATE=$NK_BG_PID
check "vm1 listens on 8083 on $N2" wait_for -t 10 listens 8083
nk_bg "remote-$S" "$NK_TMP/late-c.log" "$NK_PY" -c 'import socket, sys
s = socket.create_connection((sys.argv[1], 8083), timeout=20)
s.sendall(b"ping\n")
b = b""
while True:
    d = s.recv(100)
    if not d:
        break
    b += d
print(b.decode().strip().replace("\n", " ") or "EOF", flush=True)' "$A"
LATEC=$NK_BG_PID
check "the connection is offered on $N2 (conn list)" wait_for -t 5 queued 8083
nk_run_nkctl vm set vm1 nsm "$N1"
check_eq "vm1 is on $N1" "$(vm_nsm)" "$N1"
sleep 6
touch "$NK_TMP/accept-now"
wait "$LATEC"
check_eq "the remote host got the answer of the connection accepted after the move" \
	"$(cat "$NK_TMP/late-c.log")" "banner got ping"
check "the guest answered it" wait_for -t 5 grep -q "^answered 10.77.2.1" "$NK_TMP/late.log"
check "nkd logged the claim it passed on to $N2" \
	grep -q "vm vm1: connection offered by nsm $N2 before the move, claimed through nsm $N1: passed on" "$NK_NKD_LOG"
nk_stop "$LATE"

# reuse_client DIR: on the remote host, a keep-alive HTTP connection to
# vm1 ("port P" once served), then, each when its file appears in DIR:
# close: reset it (SO_LINGER 0); connect: connect again from port P;
# get: a request on the new connection, and the answer or the error.
reuse_client()
{
	mkdir -p "$1"
	rm -f "$1"/*
	nk_bg "remote-$S" "$1/log" "$NK_PY" -c 'import os, socket, struct, sys, time
addr, d = sys.argv[1], sys.argv[2]
def get(s):
    s.sendall(b"GET /whoami.txt HTTP/1.1\r\nHost: vm1\r\n\r\n")
    b = b""
    while b"\r\n\r\n" not in b:
        r = s.recv(4096)
        if not r:
            raise OSError("EOF before the response header")
        b += r
    head, _, body = b.partition(b"\r\n\r\n")
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    while len(body) < n:
        r = s.recv(4096)
        if not r:
            raise OSError("EOF in the response body")
        body += r
    return head.split(b" ")[1].decode() + " " + body.decode().strip()
def when(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.01)
try:
    s = socket.create_connection((addr, 80), timeout=10)
    port = s.getsockname()[1]
    print("first:", get(s), flush=True)
    print("port", port, flush=True)
    when("close")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("closed", flush=True)
    when("connect")
    s = socket.socket()
    s.settimeout(3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.connect((addr, 80))
    print("connected", flush=True)
    when("get")
    print(get(s), "from port", s.getsockname()[1], flush=True)
except OSError as e:
    print("error:", e, flush=True)' "$A" "$1"
	REUSE=$NK_BG_PID
	check "the remote host's keep-alive connection is served" wait_for -t 10 reuse_at "$1" port
	RPORT=$(awk '/^port / { print $2 }' "$1/log")
}

# flow_pinned PORT NSM: steer_flows sends the flow from remote port PORT to NSM
flow_pinned()
{
	bpftool -j map dump pinned "$PIN/steer_flows" | "$NK_PY" -c 'import json, socket, sys
port, slot = int(sys.argv[1]), int(sys.argv[2])
for e in json.load(sys.stdin):
    k, v = e["formatted"]["key"], e["formatted"]["value"]
    if socket.ntohs(k["remote_port"]) == port and v["nsm_id"] == slot:
        sys.exit(0)
sys.exit(1)' "$1" "$2"
}

# old_conn: nk-N1 has an established connection from the remote port RPORT
old_conn()
{
	ip netns exec "nk-$N1" ss -Htn state established "( sport = :80 and dport = :$RPORT )" | grep -q .
}

old_conn_gone()
{
	! ip netns exec "nk-$N1" ss -Htn "( sport = :80 and dport = :$RPORT )" | grep -q .
}

# reuse_at DIR WORD: the client in DIR logged WORD (or an error)
reuse_at()
{
	grep -q "^$2\|^error" "$1/log"
}

# live_client DIR: on the remote host, a keep-alive HTTP connection to vm1
# ("port P" in DIR/log once served; LIVE its PID, LPORT its port), and a
# second request on it when DIR/again appears ("again 200").
live_client()
{
	mkdir -p "$1"
	rm -f "$1"/*
	nk_bg "remote-$S" "$1/log" "$NK_PY" -c 'import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=5)
req = b"GET /whoami.txt HTTP/1.1\r\nHost: vm1\r\n\r\n"
def get():
    s.sendall(req)
    b = b""
    while not b.endswith(b"hello from vm1\n"):
        r = s.recv(4096)
        if not r:
            return "EOF"
        b += r
    return b.split(b" ")[1].decode()
print("first", get(), flush=True)
print("port", s.getsockname()[1], flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
try:
    print("again", get(), flush=True)
except OSError as e:
    print("again error:", e, flush=True)' "$A" "$1/again"
	LIVE=$NK_BG_PID
	check "the remote host's keep-alive connection is served" wait_for -t 10 reuse_at "$1" port
	LPORT=$(awk '/^port / { print $2 }' "$1/log")
}

# drains_from NSM: nkd.json's drains of vm1 from NSM
drains_from()
{
	"$NK_PY" -c 'import json, sys
d = json.load(open(sys.argv[1])).get("draining", [])
print(sum(1 for x in d if x.get("vm") == "vm1" and x.get("nsm") == sys.argv[2]))' "$NK_STATE/nkd.json" "$1"
}

# back_on_n1: vm1 moves (back) to $N1; $N2, with no connection of it
# left, drops its address
back_on_n1()
{
	nk_run_nkctl vm set vm1 nsm "$N1"
	check "$N2 dropped vm1's address" wait_for -t 10 has_addr_not "$N2"
}

# challenge_acks: the challenge ACKs nk-N1's TCP sent (RFC 5961)
challenge_acks()
{
	ip netns exec "nk-$N1" nstat -az TcpExtTCPChallengeACK | awk '/TcpExtTCPChallengeACK/ { print $2 }'
}

log_step "move vm1 $N1 -> $N2, then a new connection from the ports of a flow that just ended on $N1"
# A remote host that ends a connection and opens the next one from the
# same port before nkd prunes the old flow's entry (every second): its SYN
# matches the entry of a flow that $N1, no longer listening, would answer
# with a reset.  The ingress program deletes the entry for that SYN and
# steers it as a new connection, to $N2.  The client resets its keep-alive
# connection right after the move and connects again from its port at once.
reuse_client "$NK_TMP/reuse1"
SLOT1=$(nsm_slot "$N1")
nk_run_nkctl vm set vm1 nsm "$N2"
# nkd stopped from here until the new connection is served: its prune
# (every second) must not remove the entry meanwhile; the XDP programs
# and the NSMs, which serve the connection, do not need it
kill -STOP "$NKD_PID"
check "steer_flows pins its flow (remote port $RPORT) to $N1" flow_pinned "$RPORT" "$SLOT1"
touch "$NK_TMP/reuse1/close"
check "the remote host reset it" wait_for -t 5 reuse_at "$NK_TMP/reuse1" closed
# (a SYN in the same receive batch as the reset would still meet a reset
# from $N1: docs/cli.md)
check "$N1 has processed the reset (no connection from port $RPORT)" wait_for -t 5 old_conn_gone
check "steer_flows still pins the flow to $N1" flow_pinned "$RPORT" "$SLOT1"
touch "$NK_TMP/reuse1/connect" "$NK_TMP/reuse1/get"
wait "$REUSE"
kill -CONT "$NKD_PID"
check_eq "vm1 is on $N2" "$(vm_nsm)" "$N2"
sed 's/^/    /' "$NK_TMP/reuse1/log"
check_eq "the new connection from port $RPORT got its answer" \
	"$(tail -n 1 "$NK_TMP/reuse1/log")" "200 hello from vm1 from port $RPORT"
check "$N1 dropped vm1's address (no connection left there)" wait_for -t 10 has_addr_not "$N1"
check_eq "no flow entries left" "$(bpftool -j map dump pinned "$PIN/steer_flows")" "[]"

log_step "... a new connection from the ports of one $N1 still holds open (moves $N2 -> $N1 -> $N2)"
# The remote host forgets a connection ($N1 does not get its reset: vm1 is
# quarantined meanwhile) and connects from the same port again.  As on
# Linux, $N1's TCP answers that SYN with a challenge ACK, which the remote
# host answers with a reset that ends the old connection; its SYN, sent
# again at once (Linux retransmits it within milliseconds then), finds no
# connection there and goes to $N2.
back_on_n1
reuse_client "$NK_TMP/reuse2"
nk_run_nkctl vm set vm1 nsm "$N2"
check "steer_flows pins its flow (remote port $RPORT) to $N1" flow_pinned "$RPORT" "$(nsm_slot "$N1")"
nk_run_nkctl policy set vm1 drop-all on
touch "$NK_TMP/reuse2/close"
check "the remote host reset it (the reset dropped by the quarantine)" \
	wait_for -t 5 reuse_at "$NK_TMP/reuse2" closed
check "the old connection is still open on $N1" old_conn
nk_run_nkctl policy set vm1 drop-all off
ch0=$(challenge_acks)
touch "$NK_TMP/reuse2/connect" "$NK_TMP/reuse2/get"
wait "$REUSE"
sed 's/^/    /' "$NK_TMP/reuse2/log"
check_eq "the new connection got its answer" \
	"$(tail -n 1 "$NK_TMP/reuse2/log")" "200 hello from vm1 from port $RPORT"
check_gt "$N1 answered the SYN with a challenge ACK (TcpExtTCPChallengeACK)" \
	"$(($(challenge_acks) - ch0))" 0
check "the old connection on $N1 ended (reset after its challenge ACK)" old_conn_gone
check "$N1 dropped vm1's address" wait_for -t 10 has_addr_not "$N1"

log_step "... and a SYN forged with the ports of a live connection ends nothing (move $N2 -> $N1 -> $N2)"
# A SYN that matches a live connection held by the old NSM stays there and
# gets a challenge ACK, as on Linux (RFC 5961): it must not move the
# connection's later segments to the new NSM.  The remote host sends it
# from a raw socket, with the ports of its own live keep-alive connection.
back_on_n1
live_client "$NK_TMP/live"
nk_run_nkctl vm set vm1 nsm "$N2"
check "steer_flows pins its flow (remote port $LPORT) to $N1" flow_pinned "$LPORT" "$(nsm_slot "$N1")"
ch0=$(challenge_acks)
ip netns exec "remote-$S" "$NK_PY" -c 'import random, socket, struct, sys
src, dst, sport = sys.argv[1], sys.argv[2], int(sys.argv[3])
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
tcp = struct.pack("!HHIIBBHHH", sport, 80, random.getrandbits(32), 0, 5 << 4, 0x02, 65535, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).sendto(tcp, (dst, 0))' \
	10.77.2.1 "$A" "$LPORT"
check_eq "the raw socket sent the forged SYN" "$?" 0
forged_seen()
{
	[ "$(($(challenge_acks) - ch0))" -gt 0 ]
}
check "$N1 got the forged SYN and answered it with a challenge ACK" wait_for -t 2 forged_seen
check "after the forged SYN, steer_flows still pins the flow to $N1" flow_pinned "$LPORT" "$(nsm_slot "$N1")"
touch "$NK_TMP/live/again"
wait "$LIVE"
sed 's/^/    /' "$NK_TMP/live/log"
check_eq "the live connection still serves (a request after the forged SYN)" \
	"$(tail -n 1 "$NK_TMP/live/log")" "again 200"
check "$N1 dropped vm1's address once it closed" wait_for -t 10 has_addr_not "$N1"
nk_run_nkctl vm set vm1 nsm "$N1"
check_eq "vm1 is back on $N1" "$(vm_nsm)" "$N1"
check "$N2 dropped vm1's address" wait_for -t 10 has_addr_not "$N2"

log_step "a connection the guest is opening during a move $N1 -> $N2 completes on $N1"
# The remote server's accept queue is full (backlog 1, two connections
# waiting), so it drops the guest's SYN and the guest's socket on $N1 is
# still connecting at the move.  Its flow must be pinned like an
# established one: the server's SYN-ACK, once there is room, belongs to
# $N1 (at $N2 it would meet a reset and the connect would fail).
rm -f "$NK_TMP/room"
nk_bg "remote-$S" "$NK_TMP/late-srv.log" "$NK_PY" -c 'import os, socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 9099))
l.listen(1)
fs = [socket.create_connection(("127.0.0.1", 9099)) for i in range(2)]
print("full", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
for f in fs:
    a, _ = l.accept()
    a.close()
    f.close()
l.settimeout(15)
c, peer = l.accept()
c.settimeout(5)
c.sendall(b"ok " + c.recv(100))
c.close()
print("served", peer[0], flush=True)' "$NK_TMP/room"
LSRV=$NK_BG_PID
srv_full()
{
	grep -q "^full" "$NK_TMP/late-srv.log"
}
check "the remote server's accept queue is full" wait_for -t 5 srv_full
nk_guest_bg g1 "$NK_TMP/late-cli.log" "$NK_PY" -c 'import socket, sys
s = socket.socket()
s.settimeout(10)
try:
    s.connect((sys.argv[1], 9099))
    s.sendall(b"hi")
    print(s.recv(100).decode(), flush=True)
except OSError as e:
    print("error:", e, flush=True)' 10.77.2.1
LCLI=$NK_BG_PID
connecting()
{
	[ "$(jpy "$(conns_json)" "sum(1 for c in j if c['state'] == 'connecting' and (c['remote'] or '').endswith(':9099'))")" = 1 ]
}
check "conn list: the guest's socket is connecting to port 9099 on $N1" wait_for -t 5 connecting
nk_run_nkctl vm set vm1 nsm "$N2"
check_eq "vm1 is on $N2" "$(vm_nsm)" "$N2"
check "steer_flows pins the connecting flow (remote port 9099) to $N1" flow_pinned 9099 "$(nsm_slot "$N1")"
touch "$NK_TMP/room"
wait "$LCLI"
wait "$LSRV"
check_eq "the guest's connect completed and the server answered" "$(cat "$NK_TMP/late-cli.log")" "ok hi"
check "the server served it" grep -q "^served 10.77.2.2" "$NK_TMP/late-srv.log"
check "$N1 dropped vm1's address once it ended" wait_for -t 10 has_addr_not "$N1"
nk_run_nkctl vm set vm1 nsm "$N1"
check_eq "vm1 is back on $N1" "$(vm_nsm)" "$N1"
check "$N2 dropped vm1's address" wait_for -t 10 has_addr_not "$N2"

log_step "a connect the guest starts on $N1 after a move $N1 -> $N2 (a socket bound before it) completes"
# The guest bound a socket before the move, so it lives on $N1, and
# connects it after: $N1 sends the SYN.  nkd lists that connection only at
# its next prune (every second); the egress program pins the flow when
# the SYN leaves (vm_drains names vm1's drain from $N1), so the remote's
# SYN-ACK reaches $N1 (at $N2 it would meet a reset).  nkd is stopped from
# the move until the connection has carried its answer: only the XDP
# programs can have pinned it.  A keep-alive connection keeps the drain on.
live_client "$NK_TMP/live3"
rm -f "$NK_TMP/go"
nk_bg "remote-$S" "$NK_TMP/bound-srv.log" "$NK_PY" -c 'import socket
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 9097))
l.listen(4)
print("listening", flush=True)
l.settimeout(20)
c, peer = l.accept()
c.settimeout(5)
c.sendall(b"ok " + c.recv(100))
c.close()
print("served", peer[0], flush=True)'
BSRV=$NK_BG_PID
nk_guest_bg g1 "$NK_TMP/bound-cli.log" "$NK_PY" -c 'import os, socket, sys, time
s = socket.socket()
s.bind(("0.0.0.0", 0))
print("bound", s.getsockname()[1], flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
s.settimeout(5)
try:
    s.connect((sys.argv[1], 9097))
    s.sendall(b"hi")
    print(s.recv(100).decode(), flush=True)
except OSError as e:
    print("error:", e, flush=True)' 10.77.2.1 "$NK_TMP/go"
BCLI=$NK_BG_PID
bound_ready()
{
	grep -q "^bound" "$NK_TMP/bound-cli.log" && grep -q "^listening" "$NK_TMP/bound-srv.log"
}
check "the guest bound its socket (on $N1), the remote server listens" wait_for -t 5 bound_ready
# vm_drains_has VMID SLOT: vm_drains registers that VM's drain from NSM
# SLOT (bpftool shows the fields by name: BTF)
vm_drains_has()
{
	bpftool -j map dump pinned "$PIN/vm_drains" | "$NK_PY" -c 'import json, sys
vm, slot = int(sys.argv[1]), int(sys.argv[2])
sys.exit(0 if any(e["formatted"]["key"] == {"vm_id": vm, "nsm_id": slot} and
                  e["formatted"]["value"]["nsm_id"] == slot for e in json.load(sys.stdin)) else 1)' "$1" "$2"
}
VMID=$(nkctl -j vm show vm1 | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
SLOT1=$(nsm_slot "$N1")
nk_run_nkctl vm set vm1 nsm "$N2"
check_eq "vm1 is on $N2" "$(vm_nsm)" "$N2"
# (nkctl would wait for nkd from here until SIGCONT)
kill -STOP "$NKD_PID"
check "vm_drains registers vm1's drain from $N1" vm_drains_has "$VMID" "$SLOT1"
touch "$NK_TMP/go"
wait "$BCLI"
wait "$BSRV"
check_eq "the guest's connect from $N1 completed and the server answered" \
	"$(tail -n 1 "$NK_TMP/bound-cli.log")" "ok hi"
check "the server served it" grep -q "^served 10.77.2.2" "$NK_TMP/bound-srv.log"
check "steer_flows pins its flow (remote port 9097) to $N1, with nkd stopped" \
	flow_pinned 9097 "$SLOT1"
kill -CONT "$NKD_PID"
touch "$NK_TMP/live3/again"
wait "$LIVE"
check_eq "the keep-alive connection is still served on $N1" "$(tail -n 1 "$NK_TMP/live3/log")" "again 200"
check "$N1 dropped vm1's address once its connections ended" wait_for -t 10 has_addr_not "$N1"
check_eq "the drain is no longer in vm_drains" "$(bpftool -j map dump pinned "$PIN/vm_drains")" "[]"
check_eq "no flow entries left" "$(bpftool -j map dump pinned "$PIN/steer_flows")" "[]"
nk_run_nkctl vm set vm1 nsm "$N1"
check_eq "vm1 is back on $N1" "$(vm_nsm)" "$N1"
check "$N2 dropped vm1's address" wait_for -t 10 has_addr_not "$N2"

log_step "a remote host that still has $N1's MAC for vm1 after a move to $N2 is served"
# A remote host that missed the move's gratuitous ARP (or sends right
# after the switch) addresses vm1 at $N1's MAC.  The ingress program
# writes the MAC of the NSM it steers a unicast frame to (nsm_macs) into
# the frame, so $N2's stack takes it.
nk_run_nkctl vm set vm1 nsm "$N2"
check "$N1 dropped vm1's address (no connection there)" wait_for -t 10 has_addr_not "$N1"
MAC1=$(jpy "$(ip -n "nk-$N1" -j link show eth0)" "j[0]['address']")
ip -n "remote-$S" neigh replace "$A" lladdr "$MAC1" nud permanent dev eth0
check_eq "the remote host's entry for $A names $N1's MAC" \
	"$(jpy "$(ip -n "remote-$S" -j neigh show "$A" dev eth0)" "j[0]['lladdr']")" "$MAC1"
check "the listener is on $N2" wait_for -t 5 listening_on "$N2"
check "curl from the remote host to vm1 is served (by $N2)" wait_for -t 5 http_ok
ip -n "remote-$S" neigh del "$A" dev eth0
back_on_n1
check "remote curl to vm1 works on $N1" wait_for -t 5 http_ok

log_step "the guest connects out every few ms across a move $N1 -> $N2: none fails after it"
# Four threads of the guest connect, echo a byte and close, in a loop,
# while vm1 moves.  Once the move is done, connects go through $N2 while
# $N1 still has the connections made just before: $N2 must not pick their
# ports (reserved, the next step) and its SYN-ACKs must reach it.  During
# the fraction of a second the move runs both NSMs make connections with
# vm1's address and neither knows the other's ports: two can pick the same
# one, and one then fails (docs/cli.md); those are counted, not checked.
nk_echo_server "remote-$S" 10.77.2.1 9095
ECHO=$NK_BG_PID
# $N2 has to resolve the remote host's MAC during the move, while vm1's
# address still leads to $N1: the ARP reply to it reaches $N2 by its MAC
# (nsm_by_mac; before, it reached $N1, and the connects after the move
# waited for ARP's second try)
ip -n "nk-$N2" neigh del 10.77.2.1 dev eth0 2>/dev/null
rm -f "$NK_TMP/stop-loop" "$NK_TMP/moved"
nk_guest_bg g1 "$NK_TMP/out-loop.log" "$NK_PY" -c 'import os, socket, sys, threading, time
st = {k: [0, 0, []] for k in ("during", "after")}	# ok, slow, errors
running = threading.Event()
def loop():
    while not os.path.exists(sys.argv[2]):
        c = st["after" if os.path.exists(sys.argv[3]) else "during"]
        t0 = time.monotonic()
        try:
            s = socket.create_connection((sys.argv[1], 9095), timeout=3)
            if time.monotonic() - t0 >= 0.9:
                c[1] += 1	# a SYN sent again (after a reset elsewhere)
            s.sendall(b"x")
            if s.recv(10) != b"x":
                raise OSError("no echo")
            s.close()
            c[0] += 1
        except OSError as e:
            c[2].append(str(e))
        if st["during"][0] >= 20 and not running.is_set():
            running.set()
            print("running", flush=True)
ts = [threading.Thread(target=loop) for i in range(4)]
for t in ts:
    t.start()
for t in ts:
    t.join()
for k, c in st.items():
    print(k, "ok", c[0], "slow", c[1], "errors", len(c[2]), c[2][:3], flush=True)' \
	10.77.2.1 "$NK_TMP/stop-loop" "$NK_TMP/moved"
LOOP=$NK_BG_PID
loop_running()
{
	grep -q "^running" "$NK_TMP/out-loop.log"
}
check "the guest's connect loop runs" wait_for -t 10 loop_running
nk_run_nkctl vm set vm1 nsm "$N2"
sleep 0.2	# the remote host has processed $N2's gratuitous ARP
touch "$NK_TMP/moved"
sleep 1.5
touch "$NK_TMP/stop-loop"
wait "$LOOP"
nk_stop "$ECHO"
sed 's/^/    /' "$NK_TMP/out-loop.log"
check "connects after the move: many, none failed or waited for a second SYN" \
	grep -qE "^after ok [1-9][0-9]+ slow 0 errors 0 " "$NK_TMP/out-loop.log"
check "$N1 dropped vm1's address" wait_for -t 10 has_addr_not "$N1"
check_eq "no vm_drains or flow entries left" \
	"$(bpftool -j map dump pinned "$PIN/vm_drains") $(bpftool -j map dump pinned "$PIN/steer_flows")" "[] []"
back_on_n1

log_step "a connect through $N2 does not pick the port of a connection $N1 drains"
# vm1's new NSM has its address but not the old one's connections: its
# stack could pick the local port of a drained connection to the same
# remote address and port, a 4-tuple the remote host already has.  nkd
# reserves those ports in $N2 (ip_local_reserved_ports).  The guest holds
# a connection from port P on $N1, moves, and $N2's ephemeral range is
# cut to P and P+1 (connect tries P first): three connects through $N2
# must all get P+1.
nk_bg "remote-$S" "$NK_TMP/res-srv.log" "$NK_PY" -c 'import socket, threading
def serve(c):
    d = c.recv(100)
    c.sendall(b"ok " + d)
    if d == b"hold":
        c.recv(100)
    c.close()
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 9094))
l.listen(16)
print("listening", flush=True)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()'
RSRV=$NK_BG_PID
res_srv()
{
	grep -q "^listening" "$NK_TMP/res-srv.log"
}
check "the remote server listens" wait_for -t 5 res_srv
rm -f "$NK_TMP/res-end"
nk_guest_bg g1 "$NK_TMP/res-hold.log" "$NK_PY" -c 'import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 9094), timeout=5)
s.sendall(b"hold")
print(s.recv(100).decode(), "port", s.getsockname()[1], flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
s.close()' 10.77.2.1 "$NK_TMP/res-end"
RHOLD=$NK_BG_PID
res_held()
{
	grep -q "^ok hold port" "$NK_TMP/res-hold.log"
}
check "the guest holds a connection to port 9094 on $N1" wait_for -t 5 res_held
P=$(awk '/^ok hold port/ { print $4 }' "$NK_TMP/res-hold.log")
nk_run_nkctl vm set vm1 nsm "$N2"
reserved_on()
{
	ip netns exec "nk-$1" cat /proc/sys/net/ipv4/ip_local_reserved_ports
}
check_eq "$N2 reserves port $P, the drained connection's" "$(reserved_on "$N2")" "$P"
range0=$(ip netns exec "nk-$N2" cat /proc/sys/net/ipv4/ip_local_port_range)
ip netns exec "nk-$N2" sysctl -qw net.ipv4.ip_local_port_range="$P $((P + 1))"
nk_guest g1 "$NK_PY" -c 'import socket, sys
for i in range(3):
    try:
        s = socket.create_connection((sys.argv[1], 9094), timeout=3)
        port = s.getsockname()[1]
        s.sendall(b"x")
        r = s.recv(100)
        s.recv(100)	# the server closes first: no TIME_WAIT here
        s.close()
        print(r.decode(), "from", port, flush=True)
    except OSError as e:
        print("error:", e, flush=True)' 10.77.2.1 >"$NK_TMP/res-probe.log" 2>&1
ip netns exec "nk-$N2" sysctl -qw net.ipv4.ip_local_port_range="$range0"
sed 's/^/    /' "$NK_TMP/res-probe.log"
check_eq "three connects through $N2 got port $((P + 1))" "$(sort -u "$NK_TMP/res-probe.log")" "ok x from $((P + 1))"
touch "$NK_TMP/res-end"
wait "$RHOLD"
nk_stop "$RSRV"
check "$N1 dropped vm1's address once the connection ended" wait_for -t 10 has_addr_not "$N1"
no_reserved()
{
	[ -z "$(reserved_on "$N2")" ]
}
check "$N2 reserves no port once the drain is over" wait_for -t 5 no_reserved
back_on_n1

log_step "a keep-alive connection drained from $N1 serves requests while vm1 moves back to $N1"
# $N1 -> $N2 leaves the connection draining on $N1; the move back
# $N2 -> $N1 must keep its entry until vms points at $N1 again (until then
# its segments would reach $N2 and be reset).  The remote host sends a
# request on it every few ms during the move back.
rm -f "$NK_TMP/stop-rr"
nk_bg "remote-$S" "$NK_TMP/rr-loop.log" "$NK_PY" -c 'import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=5)
req = b"GET /whoami.txt HTTP/1.1\r\nHost: vm1\r\n\r\n"
def get():
    s.sendall(req)
    b = b""
    while not b.endswith(b"hello from vm1\n"):
        r = s.recv(4096)
        if not r:
            raise OSError("EOF")
        b += r
get()
print("port", s.getsockname()[1], flush=True)
n = 0
try:
    while not os.path.exists(sys.argv[2]):
        if os.path.exists(sys.argv[3]):
            get()
            n += 1
        time.sleep(0.005)
    print("served", n, flush=True)
except OSError as e:
    print("error after", n, ":", e, flush=True)' "$A" "$NK_TMP/stop-rr" "$NK_TMP/go-rr"
RR=$NK_BG_PID
rr_ready()
{
	grep -q "^port" "$NK_TMP/rr-loop.log"
}
check "the remote host's keep-alive connection is served" wait_for -t 10 rr_ready
nk_run_nkctl vm set vm1 nsm "$N2"
check_eq "vm1 drains from $N1" "$(drains_from "$N1")" 1
touch "$NK_TMP/go-rr"
sleep 0.3
nk_run_nkctl vm set vm1 nsm "$N1"
sleep 0.3
touch "$NK_TMP/stop-rr"
wait "$RR"
sed 's/^/    /' "$NK_TMP/rr-loop.log"
check "every request during the move back was served" grep -q "^served [1-9]" "$NK_TMP/rr-loop.log"
check_eq "vm1 is on $N1, no drain left (nkd.json)" "$(vm_nsm) $(drains_from "$N1") $(drains_from "$N2")" "$N1 0 0"

log_step "a drain ends when the VM comes back to its NSM the hard way ($N1 -> $N2 -> N3 -> $N1)"
# N3 has a netns of its own (not on the uplink), so moves to and from it
# are hard.  vm1 drains a live connection from $N1 after the graceful
# move; when it comes back to $N1 through N3, that drain is over: the
# connection is vm1's own on its NSM again, and nkd must stop pinning and
# listing it as draining.
N3=ctl3-$S
nk_netns_add "nk3-$S"
ip -n "nk3-$S" link add eth0 type veth peer name eth1
nk_run_nkctl nsm add "$N3" type kernel netns "nk3-$S" dev eth0
NK_NSMS+=("$N3")
live_client "$NK_TMP/live2"
nk_run_nkctl vm set vm1 nsm "$N2"
check_eq "graceful move to $N2: vm1 drains from $N1 (nkd.json)" "$(drains_from "$N1")" 1
ends0=$(grep -c "vm vm1: drained from nsm $N1 " "$NK_NKD_LOG")
nk_run_nkctl vm set vm1 nsm "$N3"
check_eq "vm1 is on $N3 (a hard move)" "$(vm_nsm)" "$N3"
nk_run_nkctl vm set vm1 nsm "$N1"
check_eq "vm1 is back on $N1 (a hard move)" "$(vm_nsm)" "$N1"
check_eq "the drain from $N1 is over (nkd.json)" "$(drains_from "$N1")" 0
check_gt "nkd logged its end" "$(grep -c "vm vm1: drained from nsm $N1 " "$NK_NKD_LOG")" "$ends0"
touch "$NK_TMP/live2/again"
wait "$LIVE"
check_eq "the connection is still served on $N1" "$(tail -n 1 "$NK_TMP/live2/log")" "again 200"
check_eq "no flow entries left" "$(bpftool -j map dump pinned "$PIN/steer_flows")" "[]"
check "the listener is on $N1" wait_for -t 5 listening_on "$N1"

log_step "a hard move back to an NSM the VM drains from fails: the drained connection stays"
# $N1 -> $N2 (graceful: vm1 drains from $N1) -> N3 (hard), then N3 -> $N1
# (hard) fails after $N1 got vm1 back: the vms map is full (4096 entries
# of other ids, written with bpftool), so nkd cannot steer vm1.  The
# rollback must put $N1 back to draining vm1 (VM_DRAIN), not make it
# forget vm1 (VM_DEL), which would end the connection it drains.
live_client "$NK_TMP/live4"
nk_run_nkctl vm set vm1 nsm "$N2"
nk_run_nkctl vm set vm1 nsm "$N3"
check_eq "vm1 on $N3, draining from $N1 (nkd.json)" "$(vm_nsm) $(drains_from "$N1")" "$N3 1"
"$NK_PY" -c 'import sys
op, pin = sys.argv[1], sys.argv[2]
for i in range(1000, 1000 + 4096):
    k = " ".join(str(b) for b in i.to_bytes(4, "little"))
    print("map %s pinned %s/vms key %s%s" % (op, pin, k, " value 1 0 0 0 0 0 0 0" if op == "update" else ""))' \
	update "$PIN" >"$NK_TMP/vms-fill.batch"
sed 's/^map update/map delete/; s/ value .*//' "$NK_TMP/vms-fill.batch" >"$NK_TMP/vms-empty.batch"
bpftool batch file "$NK_TMP/vms-fill.batch" >/dev/null
check_eq "the vms map is full" \
	"$(bpftool -j map dump pinned "$PIN/vms" | "$NK_PY" -c 'import json, sys; print(len(json.load(sys.stdin)))')" 4096
out=$(nkctl vm set vm1 nsm "$N1" 2>&1)
rc=$?
echo "    nkctl: $out"
check_gt "nkctl vm set vm1 nsm $N1 fails" "$rc" 0
check "... and says why" grep -q "vm vm1: cannot write its steering entries: a steering map is full" <<<"$out"
bpftool batch file "$NK_TMP/vms-empty.batch" >/dev/null
check_eq "the other entries removed again" "$(bpftool -j map dump pinned "$PIN/vms")" "[]"
check_eq "vm1 stays on $N3" "$(vm_nsm)" "$N3"
check_eq "vm1 still drains from $N1 (nkd.json)" "$(drains_from "$N1")" 1
check "nkd put $N1 back to draining vm1" \
	grep -q "vm vm1: still draining from nsm $N1 (the move to it failed)" "$NK_NKD_LOG"
touch "$NK_TMP/live4/again"
wait "$LIVE"
check_eq "the drained connection is still served on $N1" "$(tail -n 1 "$NK_TMP/live4/log")" "again 200"
check "$N1 dropped vm1's address once it ended" wait_for -t 10 has_addr_not "$N1"
nk_run_nkctl vm set vm1 nsm "$N1"
check_eq "vm1 is back on $N1" "$(vm_nsm)" "$N1"
check "remote curl to vm1 works" wait_for -t 5 http_ok

log_step "a move to an NSM that does not answer fails and leaves nothing there"
# The target NSM is stopped (SIGSTOP) while nkd asks it to take vm1: the
# request times out, the move fails and vm1 stays on $N1.  Once the NSM
# runs again it carries out the request it had queued; the VM_DEL nkd
# sent behind it must take vm1's address away again (before, the address
# stayed on the target for good: the hard move N3, and the graceful move
# $N2).
for target in "$N3:nk3-$S" "$N2:nk-$N2"; do
	tn=${target%%:*}
	tns=${target#*:}
	tp=$(nk_nsm_pid "$tns")
	kill -STOP "$tp"
	out=$(nkctl vm set vm1 nsm "$tn" 2>&1)
	rc=$?
	kill -CONT "$tp"
	check_gt "nkctl vm set vm1 nsm $tn with $tn stopped fails" "$rc" 0
	check "... saying $tn did not answer" grep -q "nsm $tn did not answer" <<<"$out"
	check_eq "vm1 stays on $N1" "$(vm_nsm)" "$N1"
	sleep 1
	check "$tn did not keep vm1's address" \
		bash -c "! ip -n '$tns' -o addr show dev eth0 | grep -qw '$A'"
	check "remote curl to vm1 works" wait_for -t 5 http_ok
done

log_step "the guest's listener survives moves that fail and roll back while it listens again"
# Each failed move N3 -> $N1 (the vms map full again) gives vm1 to $N1
# and takes it back: N3 drops vm1 (the guest's listener stream ends), $N1
# takes it, then the rollback drops it there and N3 takes it again.  The
# guest listens again each time, and an attempt that $N1 (or N3) took just
# before dropping vm1 is reset; the library must try again, not give the
# listener up for good.  Without the retry the listener died within a few
# rounds (checked).
lost0=$(grep -c "listener lost with its NSM" "$NK_TMP/http.log")
retry0=$(grep -c "listening again failed" "$NK_TMP/http.log")
ok=0
for round in 1 2 3 4 5 6 7 8 9 10; do
	nk_run_nkctl vm set vm1 nsm "$N3"
	bpftool batch file "$NK_TMP/vms-fill.batch" >/dev/null
	for k in 1 2 3 4 5 6 7 8 9 10; do
		nkctl vm set vm1 nsm "$N1" >/dev/null 2>&1 && break
	done
	bpftool batch file "$NK_TMP/vms-empty.batch" >/dev/null
	if [ "$k" != 10 ] || [ "$(vm_nsm)" != "$N3" ]; then
		log_info "round $round: a move with the vms map full did not fail"
		break
	fi
	nk_run_nkctl vm set vm1 nsm "$N1"
	wait_for -t 5 http_ok || break
	ok=$((ok + 1))
done
check_eq "rounds of 10 failed moves after which remote curl to vm1 works" "$ok" 10
check_eq "the guest never gave its listener up" \
	"$(($(grep -c "listener lost with its NSM" "$NK_TMP/http.log") - lost0))" 0
# a HELLO reset by a move is not an NSM without offers (promote_stream())
check "... nor took a move for an NSM without offered connections" \
	not_grep -q "does not offer accepted connections" "$NK_TMP/http.log"
log_info "attempts to listen again that were reset and tried again: $(($(grep -c "listening again failed" "$NK_TMP/http.log") - retry0))"
nk_run_nkctl nsm del "$N3"
unset 'NK_NSMS[-1]'

log_step "a UDP server in the guest follows vm1's address across moves $N1 -> $N2 -> $N1"
# Datagrams to vm1 go to the NSM its address leads to.  When vm1 starts
# to drain from an NSM, that NSM ends the UDP sockets without a peer (a
# server's) as it ends listeners, and the library makes each again on the
# new NSM, bound to the same port, in the same fd: the server, blocked in
# recvfrom(), never sees it.  Before, the socket stayed on the old NSM
# and datagrams to it met the new one's closed port until the drain ended
# (a keep-alive connection keeps it going here).
NK_LOG=1 nk_guest_bg g1 "$NK_TMP/udp-srv.log" "$NK_PY" -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5300))
print("bound", flush=True)
while True:
    try:
        d, a = s.recvfrom(100)
        s.sendto(b"echo " + d, a)
    except OSError as e:
        print("error", e, flush=True)
        break'
USRV=$NK_BG_PID
# Port 5301: a socket the program asks for options before it receives
# again after the move (the NSM no longer knows it: made again by the
# option request), with a receive timeout set after it was bound (kept
# for the new stream).  Port 5302: one socket shared by two processes
# (fork); each makes it again on its own, and only one can bind the port
# (no SO_REUSEADDR): the other's calls fail with ENETDOWN, on a fd that is
# never readable again, and nothing of it is left on the NSM.
rm -f "$NK_TMP/udp-moved"
NK_LOG=1 nk_guest_bg g1 "$NK_TMP/udp-opt.log" "$NK_PY" -c 'import errno, os, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5301))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 300000))
print("bound", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
try:
    print("rcvbuf", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0, flush=True)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    print("options ok", flush=True)
except OSError as e:
    print("options error", e, flush=True)
t0 = time.monotonic()
try:
    s.recvfrom(100)
    print("unexpected datagram", flush=True)
except OSError as e:
    print("timeout", errno.errorcode.get(e.errno), "%.1f" % (time.monotonic() - t0), flush=True)
while True:
    try:
        d, a = s.recvfrom(100)
        s.sendto(b"echo " + d, a)
    except BlockingIOError:
        pass' "$NK_TMP/udp-moved"
UOPT=$NK_BG_PID
NK_LOG=1 nk_guest_bg g1 "$NK_TMP/udp-fork.log" "$NK_PY" -c 'import ctypes, errno, os, signal, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5302))
who = "child" if os.fork() == 0 else "parent"
if who == "child":
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)	# PR_SET_PDEATHSIG
print(who, "serving", flush=True)
while True:
    try:
        d, a = s.recvfrom(100)
        s.sendto(b"echo " + d, a)
    except OSError as e:
        print(who, "error", errno.errorcode.get(e.errno), flush=True)
        break
while True:	# the parent stays: the child dies with it
    signal.pause()'
UFORK=$NK_BG_PID
# Port 5303: a socket bound, then passed across exec to the program that
# serves on it (the library's knowledge of it goes along in NK_FDS).
NK_LOG=1 nk_guest_bg g1 "$NK_TMP/udp-exec.log" "$NK_PY" -c 'import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5303))
s.set_inheritable(True)
os.execv(sys.executable, [sys.executable, "-c", """import socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
print("serving", flush=True)
while True:
    d, a = s.recvfrom(100)
    s.sendto(b"echo " + d, a)""", str(s.fileno())])'
UEXEC=$NK_BG_PID
# udp_ask WORD [PORT]: the server's answer to WORD and its port (a few
# tries: a datagram sent while the socket is being made again is lost)
udp_ask()
{
	nk_udp_ask "remote-$S" "$A" "${2:-5300}" "$1" 10
}
udp_on()
{
	ip netns exec "nk-$1" ss -Huan "( sport = :${2:-5300} )" | grep -q .
}
udp_off()
{
	! udp_on "$1"
}
check "the guest's UDP server is bound (on $N1)" wait_for -t 5 udp_on "$N1"
check "... and the other three (5301, 5302, 5303)" wait_for -t 5 bash -c \
	"grep -q bound '$NK_TMP/udp-opt.log' && [ \$(grep -c serving '$NK_TMP/udp-fork.log') = 2 ] &&
	 grep -q serving '$NK_TMP/udp-exec.log'"
check_eq "it answers" "$(udp_ask before)" "echo before 5300"
live_client "$NK_TMP/live6"
nk_run_nkctl vm set vm1 nsm "$N2"
check_eq "vm1 drains from $N1 (nkd.json)" "$(drains_from "$N1")" 1
check "its socket is on $N2" wait_for -t 5 udp_on "$N2"
check_eq "it answers after the move, from its port" "$(udp_ask moved)" "echo moved 5300"
check "... and $N1 has no socket on the port" wait_for -t 5 udp_off "$N1"
check_eq "... while vm1 still drains from $N1" "$(drains_from "$N1")" 1
touch "$NK_TMP/udp-moved"
udp_opt_done()
{
	grep -q "^timeout" "$NK_TMP/udp-opt.log"
}
wait_for -t 5 udp_opt_done
sed 's/^/    /' "$NK_TMP/udp-opt.log"
check "5301: options asked for before any receive after the move work" \
	grep -qx "options ok" "$NK_TMP/udp-opt.log"
check "... and its receive timeout (set after bind) still applies" \
	grep -qE "^timeout EAGAIN 0\.[345]$" "$NK_TMP/udp-opt.log"
check_eq "... and it answers, from its port" "$(udp_ask opt 5301)" "echo opt 5301"
check_eq "5302 (shared by two processes): one of them answers" "$(udp_ask fork 5302)" "echo fork 5302"
udp_fork_done()
{
	grep -q "error" "$NK_TMP/udp-fork.log"
}
wait_for -t 5 udp_fork_done
sed 's/^/    /' "$NK_TMP/udp-fork.log"
check_eq "... the other one's receive failed with ENETDOWN (it could not bind the port again)" \
	"$(grep -c " error ENETDOWN$" "$NK_TMP/udp-fork.log") $(grep -c "UDP socket made again" "$NK_TMP/udp-fork.log") $(grep -c "UDP socket lost with its NSM" "$NK_TMP/udp-fork.log")" "1 1 1"
check_eq "... and $N2 has one socket on 5302" \
	"$(ip netns exec "nk-$N2" ss -Huan "( sport = :5302 )" | wc -l)" 1
check_eq "5303 (bound, then passed across exec): it answers from its port" \
	"$(udp_ask exec 5303)" "echo exec 5303"
touch "$NK_TMP/live6/again"
wait "$LIVE"
check_eq "the drained connection is served on $N1" "$(tail -n 1 "$NK_TMP/live6/log")" "again 200"
back_on_n1
check_eq "it answers after the move back" "$(udp_ask back)" "echo back 5300"
check "... and $N2 has no socket on the port" wait_for -t 5 udp_off "$N2"
check "its recvfrom() never failed" not_grep -q "^error" "$NK_TMP/udp-srv.log"
check_eq "the library made it again at each move" \
	"$(grep -c "UDP socket made again" "$NK_TMP/udp-srv.log")" 2
nk_stop "$USRV"
nk_stop "$UOPT"
nk_stop "$UFORK" "$UEXEC"

log_step "a TCP socket bound before a move $N1 -> $N2 and made to listen after it listens on $N2"
# The bound socket stays on $N1 through the move (a connect from it would
# complete there, pinned); a listener there would get none of vm1's
# connections.  $N1 ends it at the listen, and the library makes it again
# on $N2, bound the same, and listens there.
rm -f "$NK_TMP/late-listen"
NK_LOG=1 nk_guest_bg g1 "$NK_TMP/late-listen.log" "$NK_PY" -c 'import os, socket, sys, time
s = socket.socket()
s.bind(("0.0.0.0", 8081))
print("bound", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
s.listen(8)
print("listening", flush=True)
while True:
    c, a = s.accept()
    c.sendall(b"late\n")
    c.close()' "$NK_TMP/late-listen"
LLS=$NK_BG_PID
late_bound()
{
	grep -q "^bound" "$NK_TMP/late-listen.log"
}
check "the guest bound its socket (on $N1)" wait_for -t 5 late_bound
live_client "$NK_TMP/live7"
nk_run_nkctl vm set vm1 nsm "$N2"
check_eq "vm1 drains from $N1 (nkd.json)" "$(drains_from "$N1")" 1
touch "$NK_TMP/late-listen"
late_on_n2()
{
	ip netns exec "nk-$N2" ss -Htln "( sport = :8081 )" | grep -q .
}
check "it listens on $N2" wait_for -t 5 late_on_n2
check_eq "the remote host connects to it" \
	"$(ip netns exec "remote-$S" curl -s --max-time 3 "telnet://$A:8081" </dev/null)" late
check_eq "$N1 has no socket of vm1 on 8081 (conn list)" \
	"$(jpy "$(conns_json)" "sum(1 for c in j if c['nsm'] == '$N1' and c['local'].endswith(':8081'))")" 0
sed 's/^/    /' "$NK_TMP/late-listen.log"
touch "$NK_TMP/live7/again"
wait "$LIVE"
check_eq "the drained connection is served on $N1" "$(tail -n 1 "$NK_TMP/live7/log")" "again 200"
nk_stop "$LLS"
back_on_n1

log_step "nkd restarted with --config while vm1 drains from $N1: the drain goes on"
# The drains are nkd's own state (STATE-DIR/nkd.json), not the operator's
# configuration: a restart with --config FILE resumes them too, and keeps
# their steering entries (removing them would reset the connections).
live_client "$NK_TMP/live5"
nk_run_nkctl vm set vm1 nsm "$N2"
check "steer_flows pins the connection (remote port $LPORT) to $N1" flow_pinned "$LPORT" "$SLOT1"
"$NK_PY" -c 'import json, sys
j = json.load(open(sys.argv[1]))
j.pop("draining", None)
json.dump(j, open(sys.argv[2], "w"), indent=1)' "$NK_STATE/nkd.json" "$NK_TMP/nkd-config.json"
kill -KILL "$NKD_PID"
wait "$NKD_PID" 2>/dev/null
args0=("${NK_NKD_ARGS[@]}")
NK_NKD_ARGS+=(--config "$NK_TMP/nkd-config.json")
NK_NKD_LOG=$NK_TMP/nkd-config.log
nk_start_nkd
NK_NKD_ARGS=("${args0[@]}")
check "nkd (--config) resumed the drain" grep -q "vm vm1: still draining from nsm $N1" "$NK_NKD_LOG"
check "steer_flows still pins the connection to $N1" flow_pinned "$LPORT" "$SLOT1"
check "vm_drains still registers the drain" vm_drains_has "$VMID" "$SLOT1"
touch "$NK_TMP/live5/again"
wait "$LIVE"
check_eq "the drained connection is still served on $N1" "$(tail -n 1 "$NK_TMP/live5/log")" "again 200"
check "$N1 dropped vm1's address once it ended" wait_for -t 10 has_addr_not "$N1"
back_on_n1

# ---------------------------------------------------------------- restart
log_step "nkd killed with SIGKILL mid-transfer and restarted"
nk_bg "remote-$S" "$NK_TMP/slow3.log" curl -sS --max-time 60 --limit-rate 4M \
	-o "$NK_TMP/got.bin" -w '%{size_download}\n' "http://$A/big.bin"
SLOW=$NK_BG_PID
check "the download shows in conn list" wait_for -t 10 has_conn
prog=$(nk_xdp_prog_ids "$UP")
maps=$(map_ids)
kill -KILL "$NKD_PID"
wait "$NKD_PID" 2>/dev/null
sleep 1
# entries of no drain, as a pin dir left by another nkd could hold: a
# drain of vm id 99 from nsm 7, and vm1's flow 10.77.2.2:5555 <- 10.77.2.1:6666
# pinned to nsm 7; the new nkd removes both
bpftool map update pinned "$PIN/vm_drains" key 99 0 0 0 7 0 0 0 \
	value 7 0 0 0 2 0 0 0 0 7 0 0
bpftool map update pinned "$PIN/steer_flows" \
	key 4 6 0x15 0xb3 0x1a 0x0a 0 0 10 77 2 2 0 0 0 0 0 0 0 0 0 0 0 0 \
	10 77 2 1 0 0 0 0 0 0 0 0 0 0 0 0 value 7 0 0 0 0 0 0 0 0 0 0 0
check_eq "a stale drain and a stale flow are in the maps" \
	"$(jpy "$(bpftool -j map dump pinned "$PIN/vm_drains")" "len(j)") $(jpy "$(bpftool -j map dump pinned "$PIN/steer_flows")" "len(j)")" "1 1"
NK_NKD_LOG=$NK_TMP/nkd-2.log
nk_start_nkd
check "the new nkd removed them (it logged it)" \
	grep -q "steering: removed 1 drain and 1 flow of no drain" "$NK_NKD_LOG"
check_eq "vm_drains and steer_flows are empty" \
	"$(bpftool -j map dump pinned "$PIN/vm_drains") $(bpftool -j map dump pinned "$PIN/steer_flows")" "[] []"
check_eq "$N1 adopted, same pid" "$(nsm_pid "$N1")" "$P1"
check_eq "$N2 adopted, same pid" "$(nsm_pid "$N2")" "$P2"
check "nkd logged the adoptions" wait_for -t 5 grep -q "nsm $N2: adopted running pid $P2" "$NK_NKD_LOG"
check "both run as configured (managed: nk-NAME, eth0)" bash -c \
	"! grep -qE 'does not run as configured|does not report its settings' '$NK_NKD_LOG'"
check_eq "map ids unchanged" "$(map_ids)" "$maps"
check_eq "XDP program ids unchanged on $UP" "$(nk_xdp_prog_ids "$UP")" "$prog"
on_n1()
{
	[ "$(conn_field "$(conns_json)" 80 nsm)" = "$N1" ]
}
check "the new nkd's conn list shows the download on $N1 (vm1's NSM since the last move)" wait_for -t 5 on_n1
wait "$SLOW"
rc=$?
check_eq "the download finished" "$rc" 0
check_eq "all 64 MiB arrived" "$(tail -n 1 "$NK_TMP/slow3.log")" 67108864

nk_finish
