#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# Issue 2 proof: TCP through nkd and a kernel NSM, from guests that have no
# NIC.  Unmodified curl, nginx (master + 2 workers, epoll) and python's
# http.server run in guest namespaces with only `lo` under nk-run; the
# remote host is the far end of the NSM's veth uplink.  Alongside the
# functional checks run the anti-fake checks: the guest has no interface and
# no TCP socket of its own, the remote-facing sockets belong to the nk-nsm
# process, and nkd (set-up path only) barely moves while 256 MiB pass.

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds nginx wrk curl ss
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_build

nk_topo_up

# ---------------------------------------------------------------- files
WWW=$NK_TMP/www-remote
mkdir -p "$WWW"
echo "remote page $S $(date +%s%N)" >"$WWW/index.html"
head -c 65536 /dev/urandom >"$WWW/random.bin"
head -c $((16 << 20)) /dev/urandom >"$WWW/mid.bin"
truncate -s 256M "$WWW/big.bin"
BIG=$((256 << 20))

# ---------------------------------------------------------------- no NIC
log_step "guests have no network interface but lo"
for g in g1 g2; do
	links=$(ip -n "$g-$S" -o link show | awk -F': ' '{ print $2 }' | tr '\n' ' ')
	check_eq "ip -n $g-$S link: only lo" "$links" "lo "
done

# ---------------------------------------------------------------- curl out
log_step "curl in guest 1 -> nginx on the remote host"
nk_nginx_prep "$NK_TMP/nginx-remote" 1 "10.77.0.1:80" "$WWW"
nk_bg "remote-$S" "$NK_TMP/nginx-remote.log" "${NK_NGINX_ARGV[@]}"
check "remote nginx listens on 10.77.0.1:80" wait_port "remote-$S" 10.77.0.1 80

for f in index.html random.bin; do
	rm -f "$NK_TMP/got"
	out=$(nk_guest g1 curl -sS --max-time 20 -o "$NK_TMP/got" \
		-w '%{http_code}' "http://10.77.0.1/$f" 2>&1)
	check_eq "guest 1 curl http://10.77.0.1/$f: HTTP status" "$out" 200
	check "guest 1 got $f byte for byte" cmp -s "$WWW/$f" "$NK_TMP/got"
done

# A slow download keeps one connection open long enough to look at it.
log_step "anti-fake: where the sockets are during a transfer"
nk_guest_bg g1 "$NK_TMP/curl-slow.log" curl -sS --max-time 30 --limit-rate 4M \
	-o /dev/null -w '%{size_download}\n' http://10.77.0.1/mid.bin
CURL_PID=$NK_BG_PID
nsm_estab()
{
	ip netns exec "nsm-$S" ss -Htnp state established dst 10.77.0.1 dport = :80
}
nsm_has_estab()
{
	[ -n "$(nsm_estab)" ]
}
check "connection to 10.77.0.1:80 established in nsm-$S" wait_for -t 10 nsm_has_estab
est=$(nsm_estab)
g1_tcp=$(ip netns exec "g1-$S" ss -Htan)
echo "ip netns exec g1-$S ss -tan:"
ip netns exec "g1-$S" ss -tan | sed 's/^/    /'
check_eq "no TCP socket (v4/v6) in g1-$S during the transfer" "$g1_tcp" ""
echo "ip netns exec g1-$S ss -xp (the guest's streams to the host):"
ip netns exec "g1-$S" ss -xp | sed 's/^/    /'
echo "ip netns exec nsm-$S ss -tanp:"
ip netns exec "nsm-$S" ss -tanp | sed 's/^/    /'
check "nsm-$S holds an established socket to 10.77.0.1:80" test -n "$est"
if [ -n "$est" ]; then
	src=$(echo "$est" | awk 'NR == 1 { print $3 }')
	check_eq "its source address is vm1's" "${src%:*}" 10.77.0.2
	owners=$(echo "$est" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' ')
	check_eq "it is held by nk-nsm (pid $NK_NSM_PID) only" "$owners" "$NK_NSM_PID "
	check_eq "nkctl nsm show nsm1 reports that pid" "$NK_NSM_PID_NKCTL" "$NK_NSM_PID"
	check_eq "pid $NK_NSM_PID runs $OUTPUT/nk-nsm" \
		"$(readlink "/proc/$NK_NSM_PID/exe")" "$(readlink -f "$OUTPUT/nk-nsm")"
fi
remote_peer=$(ip netns exec "remote-$S" ss -Htn state established sport = :80 |
	awk 'NR == 1 { print $4 }')
check_eq "the remote host sees the connection from" "${remote_peer%:*}" 10.77.0.2
wait "$CURL_PID"
check_eq "slow curl exit status" "$?" 0
check_eq "slow curl downloaded 16 MiB" "$(tail -n 1 "$NK_TMP/curl-slow.log")" $((16 << 20))

# ---------------------------------------------------------------- stream buffer
# The NSM's end of a guest stream starts with the default send buffer and,
# once full, grows to the TCP socket's receive buffer (capped at 4 MiB):
# a guest that reads late finds that much waiting, and one that set
# SO_RCVBUF gets no more buffering than it asked for.  A python client
# sends its request, sleeps 3 s, then reads and hashes the 16 MiB body.
log_step "the relay buffers as much as the socket's receive buffer, at most 4 MiB"
cat >"$NK_TMP/late_reader.py" <<'PY'
import hashlib, socket, sys, time
rcvbuf = int(sys.argv[1])
s = socket.socket()
if rcvbuf:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
s.connect(("10.77.0.1", 80))
s.sendall(b"GET /mid.bin HTTP/1.0\r\nHost: remote\r\n\r\n")
print("sent", flush=True)
time.sleep(3)
head, body, h = b"", 0, hashlib.sha256()
while True:
    b = s.recv(1 << 16)
    if not b:
        break
    if head is not None:
        head += b
        i = head.find(b"\r\n\r\n")
        if i < 0:
            continue
        b, head = head[i + 4:], None
    h.update(b)
    body += len(b)
print(body, h.hexdigest())
PY
MID_SUM="$((16 << 20)) $(sha256sum "$WWW/mid.bin" | cut -d' ' -f1)"
WMEM_DEFAULT=$(ip netns exec "g1-$S" cat /proc/sys/net/core/wmem_default)
# stream_skmem PATTERN: "t tb" (bytes queued, send buffer) of each AF_UNIX
# stream end in g1's namespace whose owner (ss -p) matches PATTERN; nk-nsm's
# ends live there too.
stream_skmem()
{
	ip netns exec "g1-$S" ss -xmpn | grep -- "$1" |
		sed -n 's/.*skmem:(r[0-9]*,rb[0-9]*,t\([0-9]*\),tb\([0-9]*\),.*/\1 \2/p'
}
# nk-nsm's stream end holding the most: "t tb"
nsm_stream_mem()
{
	stream_skmem "pid=$NK_NSM_PID," | sort -n | tail -n 1
}
stream_filled()
{
	local m
	m=$(nsm_stream_mem)
	[ -n "$m" ] && [ "${m% *}" -ge $((${m#* } * 9 / 10)) ] && [ "${m% *}" -gt 0 ]
}
for rb in 0 65536; do
	nk_guest_bg g1 "$NK_TMP/late-$rb.log" "$NK_PY" "$NK_TMP/late_reader.py" "$rb"
	LATE_PID=$NK_BG_PID
	wait_for -t 5 grep -q sent "$NK_TMP/late-$rb.log"
	sleep 1	# the NSM fills the stream while the guest sleeps
	wait_for -t 1 stream_filled
	mem=$(nsm_stream_mem)
	log_info "SO_RCVBUF ${rb/#0/not set}: nk-nsm's end of the stream holds ${mem% *} bytes, send buffer ${mem#* }"
	if [ "$rb" = 0 ]; then
		check_gt "autotuned socket: the stream's send buffer grew past the default" \
			"${mem#* }" "$WMEM_DEFAULT"
		check_lt "... and stays within 4 MiB" "${mem#* }" $(((4 << 20) + 1))
	else
		check_eq "SO_RCVBUF $rb: the stream's send buffer stays at the default" \
			"${mem#* }" "$WMEM_DEFAULT"
	fi
	wait "$LATE_PID"
	check_eq "late reader (SO_RCVBUF ${rb/#0/not set}) exit status" "$?" 0
	check_eq "late reader (SO_RCVBUF ${rb/#0/not set}) got the 16 MiB intact" \
		"$(tail -n 1 "$NK_TMP/late-$rb.log")" "$MID_SUM"
done

# The guest's end grows too, in libnkguest: at the first write of 64 KiB or
# more (or the first that finds the stream full), unless the application
# set SO_SNDBUF.  A python client sends 8 MiB in 256 KiB writes to a sink
# on the remote host, then waits before closing while we look.
log_step "a bulk sender's stream gets a bigger send buffer in the guest, unless SO_SNDBUF was set"
# sink.py PORT [DELAY]: accept one connection on the remote host, wait
# DELAY seconds before reading, then print the bytes read and their sha256
cat >"$NK_TMP/sink.py" <<'PY'
import hashlib, socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("10.77.0.1", int(sys.argv[1])))
l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
n, h = 0, hashlib.sha256()
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    n += len(b)
    h.update(b)
print(n, h.hexdigest(), flush=True)
PY
cat >"$NK_TMP/bulk_sender.py" <<'PY'
import socket, sys, time
sndbuf = int(sys.argv[1])
s = socket.socket()
if sndbuf:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
s.connect(("10.77.0.1", int(sys.argv[2])))
chunk = b"x" * (256 << 10)
for _ in range(32):
    s.sendall(chunk)
print("sent", flush=True)
time.sleep(3)
s.close()
PY
# the largest send buffer of the guest program's own stream ends
guest_stream_tb()
{
	stream_skmem '"python3"' | cut -d' ' -f2 | sort -n | tail -n 1
}
port=9100
for sb in 0 65536; do
	port=$((port + 1))
	nk_bg "remote-$S" "$NK_TMP/sink-$sb.log" "$NK_PY" "$NK_TMP/sink.py" "$port"
	SINK_PID=$NK_BG_PID
	wait_for -t 5 grep -q listening "$NK_TMP/sink-$sb.log"
	nk_guest_bg g1 "$NK_TMP/sender-$sb.log" "$NK_PY" "$NK_TMP/bulk_sender.py" "$sb" "$port"
	SENDER_PID=$NK_BG_PID
	check "bulk sender (SO_SNDBUF ${sb/#0/not set}) sent 8 MiB" \
		wait_for -t 20 grep -q sent "$NK_TMP/sender-$sb.log"
	tb=$(guest_stream_tb)
	log_info "SO_SNDBUF ${sb/#0/not set}: the guest's end of the stream has a send buffer of $tb bytes"
	if [ "$sb" = 0 ]; then
		check_gt "the stream's send buffer grew past the default" "$tb" "$WMEM_DEFAULT"
	else
		check_eq "SO_SNDBUF $sb: the stream's send buffer stays at the default" "$tb" "$WMEM_DEFAULT"
	fi
	wait "$SENDER_PID"
	check_eq "bulk sender (SO_SNDBUF ${sb/#0/not set}) exit status" "$?" 0
	wait "$SINK_PID"
	check_eq "the remote sink got 8 MiB" "$(tail -n 1 "$NK_TMP/sink-$sb.log" | cut -d' ' -f1)" \
		$((8 << 20))
done

# ---------------------------------------------------------------- unsent bytes
# nk-nsm sets TCP_NOTSENT_LOWAT (128 KiB) on the TCP sockets it writes
# to, unless the guest set its own: bytes the window does not let out
# wait in the stream and the pipe, not in the TCP socket, so that nk-nsm
# pushes them itself rather than the peer's ACK softirq (nsm/relay.c,
# relay_lowat()).  A sink on the remote host sleeps 3 s before reading, the
# window closes, and we look at the NSM socket's unsent bytes (ss -i
# "notsent"); the guest sends 16 MiB, which must all arrive intact.
log_step "the relay keeps unsent bytes out of the TCP socket (TCP_NOTSENT_LOWAT), unless the guest sets it"
cat >"$NK_TMP/lowat_sender.py" <<'PY'
import hashlib, socket, sys
lowat = int(sys.argv[2])
s = socket.socket()
s.connect(("10.77.0.1", int(sys.argv[1])))
if lowat:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, lowat)
chunk, h = bytes(range(256)) * 1024, hashlib.sha256()
for _ in range(64):
    s.sendall(chunk)
    h.update(chunk)
print("sent", 64 * len(chunk), h.hexdigest(), flush=True)
s.close()
PY
# the NSM socket's unsent bytes (0 when ss shows none)
nsm_notsent()
{
	local n
	n=$(ip netns exec "nsm-$S" ss -Htni state established dst 10.77.0.1 dport = :"$1" |
		grep -o 'notsent:[0-9]*' | head -n 1)
	echo "${n#notsent:}"
}
nsm_has_notsent()
{
	[ "$(nsm_notsent "$1")" -gt 0 ] 2>/dev/null
}
for lw in 0 1048576; do
	port=$((port + 1))
	nk_bg "remote-$S" "$NK_TMP/late-sink-$lw.log" "$NK_PY" "$NK_TMP/sink.py" "$port" 3
	SINK_PID=$NK_BG_PID
	wait_for -t 5 grep -q listening "$NK_TMP/late-sink-$lw.log"
	nk_guest_bg g1 "$NK_TMP/lowat-sender-$lw.log" "$NK_PY" "$NK_TMP/lowat_sender.py" "$port" "$lw"
	SENDER_PID=$NK_BG_PID
	what="guest's TCP_NOTSENT_LOWAT ${lw/#0/not set}"
	check "$what: the window closed with bytes unsent in nsm-$S" \
		wait_for -t 5 nsm_has_notsent "$port"
	sleep 0.5	# the NSM moves what the socket takes
	ns=$(nsm_notsent "$port")
	log_info "$what: the NSM socket holds ${ns:-0} bytes unsent"
	if [ "$lw" = 0 ]; then
		# 128 KiB, and the last skb the socket took before it said no
		check_lt "... at most 128 KiB and one segment's worth" "${ns:-0}" $(((128 + 64) << 10))
	else
		check_gt "... more than 256 KiB: the guest's value applies" "${ns:-0}" $((256 << 10))
	fi
	wait "$SENDER_PID"
	check_eq "$what: sender exit status" "$?" 0
	wait "$SINK_PID"
	check_eq "$what: the late sink got the 16 MiB intact" \
		"$(tail -n 1 "$NK_TMP/late-sink-$lw.log")" \
		"$(tail -n 1 "$NK_TMP/lowat-sender-$lw.log" | cut -d' ' -f2-)"
done
# per NSM (nkctl nsm add ... lowat BYTES; test_nkctl changes it in
# nkd.json): a second NSM in the same namespace, started with it, reports
# it; values out of range are refused by nkd and by nk-nsm, saying why
if check "nkctl nsm add nsm9 ... lowat 65536" nkctl nsm add nsm9 type kernel netns "nsm-$S" dev up0 lowat 65536; then
	OUT=$(nkctl -j nsm show nsm9)
	check_eq "nsm show nsm9: the setting, and what runs" \
		"$(jpy "$OUT" 'j["notsent_lowat"], j["running"]["notsent_lowat"], j["config_differs"]')" \
		"(65536, 65536, False)"
	check "its nk-nsm runs with --notsent-lowat=65536" \
		nk_nsm_has_opt "$(jpy "$OUT" 'j["pid"]')" --notsent-lowat=65536
	check "nkctl nsm del nsm9" nkctl nsm del nsm9
fi
for bad in -1 1073741825 lots; do
	check "lowat $bad is refused" nk_refused "$NK_TMP/e-lw" \
		nsm add nsm9 type kernel netns "nsm-$S" dev up0 lowat "$bad"
	check "... saying why" grep -q \
		"lowat must be 0 (none: the namespace's sysctl applies) or a number of bytes up to 1073741824" \
		"$NK_TMP/e-lw"
done
check "nk-nsm --notsent-lowat=-1 refuses to start (exit status 2)" bash -c \
	"timeout 5 $OUTPUT/nk-nsm --name x --type kernel --dev lo --control $NK_TMP/x.sock --notsent-lowat=-1 2>$NK_TMP/e-lw2; [ \$? -eq 2 ]"
check "... saying why" grep -q -- "--notsent-lowat: '-1' is not 0-1073741824 (bytes)" "$NK_TMP/e-lw2"

# ---------------------------------------------------------------- nkd idle
log_step "anti-fake: nkd stays off the data path (256 MiB download)"
cpu0=$(nk_proc_cpu_ticks "$NKD_PID")
io0=$(nk_proc_io_bytes "$NKD_PID")
ncpu0=$(nk_proc_cpu_ticks "$NK_NSM_PID")
t0=$(date +%s.%N)
out=$(nk_guest g1 curl -sS --max-time 120 -o /dev/null \
	-w '%{http_code} %{size_download}' http://10.77.0.1/big.bin 2>&1)
t1=$(date +%s.%N)
cpu1=$(nk_proc_cpu_ticks "$NKD_PID")
io1=$(nk_proc_io_bytes "$NKD_PID")
ncpu1=$(nk_proc_cpu_ticks "$NK_NSM_PID")
check_eq "guest 1 curl big.bin: status and size" "$out" "200 $BIG"
hz=$(getconf CLK_TCK)
dcpu_ms=$(((cpu1 - cpu0) * 1000 / hz))
dio=$((io1 - io0))
log_info "256 MiB in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f s (%.2f Gbit/s)", b - a, 2.147483648 / (b - a) }')"
log_info "nk-nsm CPU during it: $(((ncpu1 - ncpu0) * 1000 / hz)) ms; nkd CPU: $dcpu_ms ms, nkd I/O: $dio bytes"
check_lt "nkd CPU time (ms) across 256 MiB" "$dcpu_ms" 200
check_lt "nkd rchar+wchar across 256 MiB" "$dio" $((1 << 20))

# ---------------------------------------------------------------- nginx in
log_step "nginx in guest 1 (master + 2 workers) <- wrk on the remote host"
GWWW=$NK_TMP/www-g1
mkdir -p "$GWWW"
echo "guest 1 nginx $S" >"$GWWW/index.html"
nk_nginx_prep "$NK_TMP/nginx-g1" 2 80 "$GWWW"
nk_guest_bg g1 "$NK_TMP/nginx-g1.log" "${NK_NGINX_ARGV[@]}"
if check "guest 1 nginx reachable at 10.77.0.2:80 from the remote host" \
	wait_port "remote-$S" 10.77.0.2 80 15; then
	master=$(nk_nginx_pid "$NK_TMP/nginx-g1")
	nworkers=$(ps -o pid= --ppid "${master:-0}" | wc -l)
	check_eq "guest nginx master $master has 2 workers" "$nworkers" 2
	out=$(ip netns exec "remote-$S" curl -sS --max-time 10 http://10.77.0.2/ 2>&1)
	check_eq "remote curl http://10.77.0.2/ gets guest 1's page" "$out" "guest 1 nginx $S"

	ip netns exec "remote-$S" wrk -t2 -c32 -d5s http://10.77.0.2/ \
		>"$NK_TMP/wrk.out" 2>&1 &
	WRK_PID=$!
	nk_register_pid "$WRK_PID"
	sleep 2
	check_eq "no TCP socket in g1-$S while wrk runs" "$(ip netns exec "g1-$S" ss -Htan)" ""
	listen_owner=$(ip netns exec "nsm-$S" ss -Htlnp 'sport = :80' |
		grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' ')
	check_eq "the listener on :80 in nsm-$S belongs to nk-nsm" "$listen_owner" "$NK_NSM_PID "
	wait "$WRK_PID"
	check_eq "wrk exit status" "$?" 0
	sed 's/^/    /' "$NK_TMP/wrk.out"
	reqs=$(awk '/requests in/ { print $1 }' "$NK_TMP/wrk.out")
	check_gt "wrk requests" "${reqs:-0}" 0
	check "wrk: no socket errors" not_grep 'Socket errors' "$NK_TMP/wrk.out"
	check "wrk: no non-2xx/3xx responses" not_grep 'Non-2xx' "$NK_TMP/wrk.out"
fi
master=$(nk_nginx_pid "$NK_TMP/nginx-g1")
[ -n "$master" ] && nk_stop "$master"
nk_ns_stop "g1-$S"
check "guest 1 nginx stopped" wait_for -t 5 nk_ns_empty "g1-$S"

# ---------------------------------------------------------------- two VMs
log_step "python3 http.server on port 80 in both guests at once"
for g in g1 g2; do
	mkdir -p "$NK_TMP/py-$g"
	echo "hello from $g $S" >"$NK_TMP/py-$g/whoami.txt"
	nk_guest_bg "$g" "$NK_TMP/py-$g.log" "$NK_PY" -m http.server 80 \
		--bind 0.0.0.0 --directory "$NK_TMP/py-$g"
done
check "guest 1 http.server reachable at 10.77.0.2:80" wait_port "remote-$S" 10.77.0.2 80 15
check "guest 2 http.server reachable at 10.77.0.3:80" wait_port "remote-$S" 10.77.0.3 80 15
for g in g1 g2; do
	addr=10.77.0.$((${g#g} + 1))
	out=$(ip netns exec "remote-$S" curl -sS --max-time 10 "http://$addr/whoami.txt" 2>&1)
	check_eq "remote curl http://$addr/whoami.txt" "$out" "hello from $g $S"
done
echo "ip netns exec nsm-$S ss -tlnp:"
ip netns exec "nsm-$S" ss -tlnp | sed 's/^/    /'

log_step "a VM cannot use another VM's address"
bind_errno()
{
	local g=$1 addr=$2 port=$3
	nk_guest "$g" "$NK_PY" -c '
import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError as e:
    print(e.errno)
    sys.exit(0)
print(0)
' "$addr" "$port" 2>&1
}
out=$(bind_errno g1 10.77.0.3 80)
echo "    guest 1 bind(10.77.0.3:80): errno $out"
check_eq "guest 1 bind to vm2's 10.77.0.3:80 fails with EADDRNOTAVAIL" "$out" 99
out=$(bind_errno g1 10.77.0.3 8081)
check_eq "guest 1 bind to vm2's 10.77.0.3:8081 fails with EADDRNOTAVAIL" "$out" 99
out=$(bind_errno g1 10.77.0.1 8081)
check_eq "guest 1 bind to the remote's 10.77.0.1:8081 fails with EADDRNOTAVAIL" "$out" 99
out=$(bind_errno g1 10.77.0.2 8081)
check_eq "guest 1 bind to its own 10.77.0.2:8081 succeeds" "$out" 0

log_step "vm2's wildcard listener does not take vm1's traffic"
nk_ns_stop "g1-$S"
vm1_silent()
{
	! ip netns exec "remote-$S" curl -s --max-time 2 -o /dev/null http://10.77.0.2/whoami.txt
}
check "with guest 1's server gone, nothing answers at 10.77.0.2:80" wait_for -t 5 vm1_silent
out=$(ip netns exec "remote-$S" curl -sS --max-time 10 http://10.77.0.3/whoami.txt 2>&1)
check_eq "guest 2 still serves at 10.77.0.3" "$out" "hello from g2 $S"

nk_finish
