#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# The kernel NSM at the protocol level, without the guest library:
# nk_proto_client speaks docs/protocol.md by hand on vm1's guest socket
# (served by nkd, handed to nk-nsm).  Checks the errno replies and the
# validation rules (malformed input closes that stream only, is counted and
# logged with the VM's name), FIN in both directions with the stream still
# open for the other one, a reset reported by STATUS as ECONNRESET, byte-exact
# bulk data both ways, accepting through a wildcard listener, and that a
# VM's listener never sees connections to another VM's address.

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_build
CLIENT=$OUTPUT/selftests/nk_proto_client
[ -x "$CLIENT" ] || nk_die "$CLIENT is missing (run make)"

nk_topo_up
G1=$NK_TMP/vm1.vsock_7531

# ---------------------------------------------------------------- helpers
# A remote peer for one connection (MODE ADDR PORT [MiB]):
#   sink      read to EOF, then answer "<bytes> <sha256>" and close
#   finfirst  send "hi", FIN, then read to EOF and print "got <bytes> <sha256>"
#   rst       read a little, then close with SO_LINGER 0 (RST)
#   source    send N MiB, print "sent <bytes> <sha256>", FIN, read to EOF
cat >"$NK_TMP/peer.py" <<'EOF'
import hashlib, os, socket, struct, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(4)
c, _ = s.accept()
def drain():
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            return n, h.hexdigest()
        h.update(b)
        n += len(b)
if mode == "sink":
    n, d = drain()
    c.sendall(f"{n} {d}\n".encode())
elif mode == "finfirst":
    c.sendall(b"hi\n")
    c.shutdown(socket.SHUT_WR)
    print("got %d %s" % drain(), flush=True)
elif mode == "rst":
    c.recv(16)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
elif mode == "source":
    blk, h = os.urandom(1 << 20), hashlib.sha256()
    for i in range(int(sys.argv[4])):
        b = blk[i:] + blk[:i]
        h.update(b)
        c.sendall(b)
    print("sent %d %s" % (int(sys.argv[4]) << 20, h.hexdigest()), flush=True)
    c.shutdown(socket.SHUT_WR)
    drain()
c.close()
EOF

# A remote client: connect, send FILE, half-close, print "recv <bytes> <sha256>".
cat >"$NK_TMP/remote_client.py" <<'EOF'
import hashlib, socket, sys, threading
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = socket.create_connection((host, port), timeout=30)
def send():
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            c.sendall(b)
    c.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
h, n = hashlib.sha256(), 0
while b := c.recv(1 << 20):
    h.update(b)
    n += len(b)
t.join()
print("recv", n, h.hexdigest())
EOF

# peer MODE PORT [ARGS]: start peer.py on 10.77.0.1:PORT in the remote host.
peer()
{
	local mode=$1 port=$2
	shift 2
	nk_bg "remote-$S" "$NK_TMP/peer-$port.log" "$NK_PY" "$NK_TMP/peer.py" "$mode" \
		10.77.0.1 "$port" "$@"
	wait_for -t 5 nk_remote_listening "$port"
}
nk_remote_listening()
{
	ip netns exec "remote-$S" ss -Htln "sport = :$1" | grep -q .
}
sha()
{
	sha256sum "$1" | cut -c1-64
}

head -c $((5 << 20)) /dev/urandom >"$NK_TMP/f5"
head -c $((64 << 20)) /dev/urandom >"$NK_TMP/f64"

# ---------------------------------------------------------------- requests
log_step "control requests, errno replies and malformed input (nk_proto_client check)"
"$CLIENT" check "$G1" 10.77.0.2 10.77.0.3 10.77.0.1 9 10.77.0.99 >"$NK_TMP/check.log" 2>&1
sed 's/^/    /' "$NK_TMP/check.log"
check_eq "protocol checks" "$(tail -n 1 "$NK_TMP/check.log")" "0 failures"
NSM_LOG=
for f in "$NK_STATE"/nsm-*.log; do
	[ -e "$f" ] && NSM_LOG=$f
done
if [ -n "$NSM_LOG" ]; then
	check "NSM log names the VM and the reason" \
		grep -q "vm vm1: closing channel: bad header" "$NSM_LOG"
	check "NSM log: refused bind names the address" \
		grep -q "vm vm1: bind to 10.77.0.3 refused: not this VM's address" "$NSM_LOG"
	check "NSM log: a refused posted option (no reply to carry it) names the VM, the option and the reason" \
		grep -q "vm vm1: socket 0x[0-9a-f]*: posted option 1/36 of pid [0-9]* failed: " "$NSM_LOG"
fi
check "nk-nsm survived the malformed input" nk_alive "$NK_NSM_PID"

# ---------------------------------------------------------------- FIN
log_step "guest FIN first: 5 MiB up, then the peer's answer, then its FIN"
peer sink 9001
out=$("$CLIENT" connect "$G1" 10.77.0.1 9001 <"$NK_TMP/f5" 2>"$NK_TMP/c1.log")
check_eq "peer read all and the guest read its answer" "$out" "$((5 << 20)) $(sha "$NK_TMP/f5")"
check "STATUS after both FINs: closed, orderly" grep -q "state closed err 0" "$NK_TMP/c1.log"

log_step "peer FIN first: the guest reads EOF and may still send 5 MiB"
peer finfirst 9002
out=$("$CLIENT" connect "$G1" 10.77.0.1 9002 <"$NK_TMP/f5" 2>"$NK_TMP/c2.log")
check_eq "guest read the greeting then EOF" "$out" "hi"
wait_for -t 5 grep -q got "$NK_TMP/peer-9002.log"
check_eq "peer got everything sent after its FIN" "$(cat "$NK_TMP/peer-9002.log")" \
	"got $((5 << 20)) $(sha "$NK_TMP/f5")"

# ---------------------------------------------------------------- RST
log_step "peer reset: STATUS tells ECONNRESET"
peer rst 9003
echo abc | "$CLIENT" connect "$G1" 10.77.0.1 9003 >/dev/null 2>"$NK_TMP/c3.log"
check "STATUS after a reset: closed, ECONNRESET" grep -q "state closed err 104" "$NK_TMP/c3.log"

# ---------------------------------------------------------------- bulk
log_step "bulk data, 64 MiB each way, byte for byte"
peer sink 9004
out=$("$CLIENT" connect "$G1" 10.77.0.1 9004 <"$NK_TMP/f64" 2>/dev/null)
check_eq "guest -> remote 64 MiB" "$out" "$((64 << 20)) $(sha "$NK_TMP/f64")"
peer source 9005 64
got=$("$CLIENT" connect "$G1" 10.77.0.1 9005 </dev/null 2>/dev/null | sha256sum | cut -c1-64)
wait_for -t 5 grep -q sent "$NK_TMP/peer-9005.log"
check_eq "remote -> guest 64 MiB" "sent $((64 << 20)) $got" "$(cat "$NK_TMP/peer-9005.log")"

# ---------------------------------------------------------------- accept
log_step "accept through vm1's wildcard listener; vm2's address stays closed"
nk_bg - "$NK_TMP/listen.log" sh -c "'$CLIENT' listen '$G1' 0.0.0.0 8080 <'$NK_TMP/f5' | sha256sum"
LPID=$NK_BG_PID
wait_for -t 5 grep -q "listening on 0.0.0.0:8080" "$NK_TMP/listen.log"
refuses()
{
	! nk_tcp_open "$@"
}
check "10.77.0.3:8080 (vm2) refuses" refuses "remote-$S" 10.77.0.3 8080
out=$(ip netns exec "remote-$S" "$NK_PY" "$NK_TMP/remote_client.py" 10.77.0.2 8080 "$NK_TMP/f64")
check_eq "remote <- guest 5 MiB over the accepted connection" "$out" \
	"recv $((5 << 20)) $(sha "$NK_TMP/f5")"
wait_for -t 10 grep -q "  -" "$NK_TMP/listen.log"
check "guest <- remote 64 MiB over the accepted connection" \
	grep -q "^$(sha "$NK_TMP/f64")  -" "$NK_TMP/listen.log"
check "the accepted connection came from the remote to vm1's address" \
	grep -q "accepted 10.77.0.1:[0-9]* -> 10.77.0.2:8080" "$NK_TMP/listen.log"
nk_stop "$LPID"

# ---------------------------------------------------------------- UDP
# A UDP echo on the remote host: "whoami" -> "ADDR PORT" of the sender,
# "poke ADDR PORT" -> "poked ADDR" sent to ADDR:PORT, "pokeme ADDR" the
# same to ADDR and the sender's port, anything else echoed.
cat >"$NK_TMP/udp_echo.py" <<'EOF'
import select, socket, sys
port = int(sys.argv[1])
socks, by_family = [], {}
for host in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.bind((host, port))
    socks.append(s)
    by_family[s.family] = s
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data, src = s.recvfrom(65535)
        if data == b"whoami":
            s.sendto(f"{src[0]} {src[1]}".encode(), src)
        elif data.startswith(b"poke"):
            w = data.decode().split()
            host, p = w[1], int(w[2]) if len(w) > 2 else src[1]
            fam = socket.AF_INET6 if ':' in host else socket.AF_INET
            by_family[fam].sendto(f"poked {host}".encode(), (host, p))
        else:
            s.sendto(data, src)
EOF
nk_bg "remote-$S" "$NK_TMP/udp_echo.log" "$NK_PY" "$NK_TMP/udp_echo.py" 7777 10.77.0.1 fd77::1
wait_for -t 5 grep -q ready "$NK_TMP/udp_echo.log" || nk_fail "the UDP echo did not start"

# vm3: two IPv4 and two IPv6 addresses (wildcard binds, IPv6).
nk_run_nkctl vm add vm3 nsm nsm1 addr 10.77.0.4/24,10.77.0.5/24,fd77::4/64,fd77::5/64 \
	uds "$NK_TMP/vm3.vsock"
G3=$NK_TMP/vm3.vsock_7531
wait_for -t 10 test -S "$G3" || nk_die "nkd does not serve $G3"
wait_for -t 10 nk_has_addr "nsm-$S" up0 fd77::5 || nk_die "fd77::5 did not appear on nsm-$S up0"

udpcheck()
{
	local name=$1 log=$NK_TMP/udp-$1.log
	shift
	"$CLIENT" udpcheck "$@" >"$log" 2>&1
	sed 's/^/    /' "$log"
	check_eq "UDP protocol checks, $name" "$(tail -n 1 "$log")" "0 failures"
}

log_step "UDP: vm1, IPv4 (nk_proto_client udpcheck)"
udpcheck vm1-v4 "$G1" 10.77.0.2 10.77.0.1 7777 7778
if [ -n "$NSM_LOG" ]; then
	check "NSM log: an oversize frame closes the channel, named" \
		grep -q "vm vm1: closing channel: datagram frame of 65536 bytes" "$NSM_LOG"
	check "NSM log: a datagram to loopback is dropped, named" \
		grep -q "vm vm1: socket 0x[0-9a-f]*: datagram to 127.0.0.1:7777 dropped" "$NSM_LOG"
fi

log_step "UDP: vm3, a wildcard bind over two IPv4 addresses, then IPv6"
udpcheck vm3-v4 "$G3" 10.77.0.4 10.77.0.1 7777 7778 10.77.0.5
udpcheck vm3-v6 "$G3" fd77::4 fd77::1 7777 7778 fd77::5

log_step "UDP: a request behind a datagram, read first by the NSM, sees the implicit bind"
"$CLIENT" udporder "$G1" 10.77.0.1 7777 "$NK_NSM_PID" >"$NK_TMP/udporder.log" 2>&1
sed 's/^/    /' "$NK_TMP/udporder.log"
check_eq "nk_proto_client udporder" "$(tail -n 1 "$NK_TMP/udporder.log")" "0 failures"

log_step "UDP: the implicit bind is on the VM's address, in the NSM's namespace"
mkfifo "$NK_TMP/udp.in"
nk_bg - "$NK_TMP/udp.out" sh -c "exec '$CLIENT' udp '$G1' 10.77.0.1 7777 <'$NK_TMP/udp.in'"
UPID=$NK_BG_PID
exec 7>"$NK_TMP/udp.in"
echo whoami >&7
wait_for -t 5 grep -q "^from 10.77.0.1:7777: 10.77.0.2 " "$NK_TMP/udp.out"
port=$(sed -n 's/^local 0\.0\.0\.0:\([0-9]*\)$/\1/p' "$NK_TMP/udp.out")
check_eq "the guest sees the wildcard; the remote saw vm1's address and that port" \
	"$(sed -n 's/^from 10.77.0.1:7777: //p' "$NK_TMP/udp.out")" "10.77.0.2 $port"
udp_ss()
{
	ip netns exec "nsm-$S" ss -Huan "sport = :$port"
}
check "ss in the NSM namespace: a UDP socket on 10.77.0.2:$port" \
	grep -q "10.77.0.2:$port " <<<"$(udp_ss)"
check "... and none on the wildcard" not_grep -q "0.0.0.0:$port " <<<"$(udp_ss)"
exec 7>&-
nk_stop "$UPID"

log_step "UDP: a VM receives for its own addresses only"
G2=$NK_TMP/vm2.vsock_7531
out=$(printf 'pokeme 10.77.0.2\npokeme 10.77.0.3\n' | "$CLIENT" udp "$G2" 10.77.0.1 7777)
check "vm2 receives what is sent to its address" grep -q "poked 10.77.0.3" <<<"$out"
check "vm2 does not receive what is sent to vm1's address, same port" \
	not_grep "poked 10.77.0.2" <<<"$out"

# guest_script NAME SCRIPT: python SCRIPT in guest g1, its output in
# $NK_TMP/NAME.out, its stdin the fifo $NK_TMP/NAME.in held open on fd 8
# (each `echo go >&8` lets a readline() return); its pid in GUEST_PID.
# guest_script_end NAME: EOF on its stdin, its output shown, it stopped.
guest_script()
{
	mkfifo "$NK_TMP/$1.in"
	nk_guest_bg g1 "$NK_TMP/$1.out" sh -c 'exec "$0" -c "$1" <"$2"' "$NK_PY" "$2" "$NK_TMP/$1.in"
	GUEST_PID=$NK_BG_PID
	exec 8>"$NK_TMP/$1.in"
}
guest_script_end()
{
	exec 8>&-
	sed 's/^/    /' "$NK_TMP/$1.out"
	nk_stop "$GUEST_PID"
}

log_step "posted options: TCP_CORK, TCP_NODELAY and the keepalive options do not wait for the NSM"
# libnkguest posts them on its control channel (NK_HELLO_F_POST): with
# nk-nsm stopped they still return, where a request waiting for its reply
# would hang until nk-nsm runs again; afterwards they read back as set,
# and the bytes written between them arrive.
nk_echo_server "remote-$S" 10.77.0.1 9120
guest_script post '
import socket, sys, time
T = socket.IPPROTO_TCP
s = socket.create_connection(("10.77.0.1", 9120))
print("nodelay", s.getsockopt(T, socket.TCP_NODELAY), flush=True)
sys.stdin.readline()
t = time.monotonic()
s.setsockopt(T, socket.TCP_CORK, 1)
s.sendall(b"corked")
s.setsockopt(T, socket.TCP_CORK, 0)
s.setsockopt(T, socket.TCP_NODELAY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(T, socket.TCP_KEEPIDLE, 77)
s.setsockopt(T, socket.TCP_KEEPINTVL, 9)
s.setsockopt(T, socket.TCP_KEEPCNT, 4)
print("posted in %.3f s" % (time.monotonic() - t), flush=True)
t = time.monotonic()
e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
print("so_error", e, "waited" if time.monotonic() - t > 0.15 else "at once", flush=True)
sys.stdin.readline()
print("cork", s.getsockopt(T, socket.TCP_CORK), "nodelay", s.getsockopt(T, socket.TCP_NODELAY), flush=True)
print("keepalive", s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), s.getsockopt(T, socket.TCP_KEEPIDLE),
      s.getsockopt(T, socket.TCP_KEEPINTVL), s.getsockopt(T, socket.TCP_KEEPCNT), flush=True)
print("echo", s.recv(64).decode(), flush=True)
sys.stdin.readline()
s.sendall(b"early")
s.setsockopt(T, socket.TCP_CORK, 1)
print("cork on behind unread bytes returned", flush=True)
print("echo", s.recv(64).decode(), flush=True)
s.setsockopt(T, socket.TCP_CORK, 0)
'
check "the guest connected and asked once (its control channel is open)" \
	wait_for -t 10 grep -q '^nodelay 0' "$NK_TMP/post.out"
kill -STOP "$NK_NSM_PID"
echo go >&8
check "with nk-nsm stopped, TCP_CORK on, off, TCP_NODELAY on and redis's keepalive options returned" \
	wait_for -t 5 grep -q '^posted in' "$NK_TMP/post.out"
# (asking the NSM would time out after 300 ms and say 0 too)
check "... and SO_ERROR of the open connection answered at once without the NSM (0)" \
	wait_for -t 5 grep -q '^so_error 0 at once$' "$NK_TMP/post.out"
kill -CONT "$NK_NSM_PID"
echo go >&8
check "then they read back as set (cork 0, nodelay 1)" \
	wait_for -t 10 grep -q '^cork 0 nodelay 1$' "$NK_TMP/post.out"
check "... and SO_KEEPALIVE 1, TCP_KEEPIDLE 77, TCP_KEEPINTVL 9, TCP_KEEPCNT 4" \
	wait_for -t 10 grep -q '^keepalive 1 77 9 4$' "$NK_TMP/post.out"
check "and the bytes written between them came back from the echo server" \
	wait_for -t 10 grep -q '^echo corked$' "$NK_TMP/post.out"
# TCP_CORK on while the NSM has not read bytes written before it: posted,
# it could hold them with the ones after it, so it waits for the NSM,
# which sends them first (as on Linux, where they were sent at write()).
kill -STOP "$NK_NSM_PID"
echo go >&8
sleep 1
check "with nk-nsm stopped and bytes unread, TCP_CORK on waits" \
	not_grep -q '^cork on behind unread' "$NK_TMP/post.out"
kill -CONT "$NK_NSM_PID"
check "it returns once nk-nsm runs" \
	wait_for -t 10 grep -q '^cork on behind unread' "$NK_TMP/post.out"
check "and the bytes written before it came back (within the 10 s this waits)" \
	wait_for -t 10 grep -q '^echo early$' "$NK_TMP/post.out"
guest_script_end post

# A connection accepted from a corked listener inherits TCP_CORK (Linux's
# child socket is a copy of the listener).  With nk-nsm stopped, TCP_CORK
# on, a write, off: nk-nsm then reads the on and the off together before
# the bytes, and must still turn its socket's inherited cork off
# (relay_cork_post()); read back, TCP_CORK is 0, as on Linux.
guest_script acork '
import socket, sys
T = socket.IPPROTO_TCP
l = socket.socket()
l.bind(("10.77.0.2", 9121))
l.setsockopt(T, socket.TCP_CORK, 1)
l.listen()
print("listening", flush=True)
a, _ = l.accept()
print("accepted cork", a.getsockopt(T, socket.TCP_CORK), flush=True)
sys.stdin.readline()
a.setsockopt(T, socket.TCP_CORK, 1)
a.sendall(b"pong")
a.setsockopt(T, socket.TCP_CORK, 0)
print("posted", flush=True)
sys.stdin.readline()
print("cork", a.getsockopt(T, socket.TCP_CORK), flush=True)
'
check "the guest listens on 10.77.0.2:9121 with TCP_CORK" \
	wait_for -t 10 grep -q '^listening' "$NK_TMP/acork.out"
nk_bg "remote-$S" "$NK_TMP/acork-peer.out" "$NK_PY" -c '
import socket
s = socket.create_connection(("10.77.0.2", 9121))
print("got", s.recv(64).decode(), flush=True)
'
check "the accepted connection has TCP_CORK 1" \
	wait_for -t 10 grep -q '^accepted cork 1$' "$NK_TMP/acork.out"
kill -STOP "$NK_NSM_PID"
echo go >&8
check "with nk-nsm stopped, TCP_CORK on, a write, off: returned" \
	wait_for -t 5 grep -q '^posted' "$NK_TMP/acork.out"
kill -CONT "$NK_NSM_PID"
echo go >&8
check "then TCP_CORK reads 0 (the inherited cork is off)" \
	wait_for -t 10 grep -q '^cork 0$' "$NK_TMP/acork.out"
check "and the remote host has the bytes" wait_for -t 10 grep -q '^got pong$' "$NK_TMP/acork-peer.out"
guest_script_end acork

# A posted TCP_CORK on and the write behind it, ready in one batch with
# the stream ahead of the control channel in epoll's ready list: the
# stream's entry is already there, linked by write room (EPOLLOUT, which
# the relay asks for while its pipe to the guest is full) when the guest
# posts the cork.  nk-nsm handles a batch's control channels first
# (main.c, dispatch_batch()), so the cork holds the bytes: the remote
# host gets them at the uncork or after Linux's 200 ms, not within
# 100 ms of nk-nsm running again.
nk_bg "remote-$S" "$NK_TMP/bcork-peer.out" "$NK_PY" -c '
import socket, threading, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("10.77.0.1", 9122))
l.listen()
print("ready", flush=True)
a, _ = l.accept()
def flood():
    a.sendall(b"x" * (64 << 20))
    a.shutdown(socket.SHUT_WR)
threading.Thread(target=flood, daemon=True).start()
while True:
    d = a.recv(64)
    if not d:
        break
    print("got", d.decode(), "%.6f" % time.monotonic(), flush=True)
'
wait_for -t 5 grep -q '^ready' "$NK_TMP/bcork-peer.out" || nk_die "the flooding peer did not start"
guest_script bcork '
import socket, sys, os
T = socket.IPPROTO_TCP
s = socket.create_connection(("10.77.0.1", 9122))
print("connected", s.getsockopt(T, socket.TCP_CORK), flush=True)
sys.stdin.readline()
s.setblocking(False)
n = 0
try:
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        n += len(d)
except BlockingIOError:
    pass
s.setblocking(True)
s.setsockopt(T, socket.TCP_CORK, 1)
s.sendall(b"held")
print("read", n, "posted", flush=True)
sys.stdin.readline()
s.setsockopt(T, socket.TCP_CORK, 0)
print("uncorked", flush=True)
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    n += len(d)
print("read", n, "in all", flush=True)
'
check "the guest connected to the flooding peer and asked once (its control channel is open)" wait_for -t 10 grep -q '^connected' "$NK_TMP/bcork.out"
# the guest does not read: its stream, the relay's pipe and the NSM's
# socket fill up (nk-nsm then waits for write room on the stream)
sleep 1
kill -STOP "$NK_NSM_PID"
echo go >&8
check "with nk-nsm stopped, the guest read what its stream held, then TCP_CORK on (posted) and a write" \
	wait_for -t 5 grep -q '^read [1-9][0-9]* posted' "$NK_TMP/bcork.out"
t_cont=$("$NK_PY" -c 'import os, signal, sys, time; t = time.monotonic(); os.kill(int(sys.argv[1]), signal.SIGCONT); print("%.6f" % t)' "$NK_NSM_PID")
check "the remote host gets the corked bytes" wait_for -t 5 grep -q '^got held' "$NK_TMP/bcork-peer.out"
t_got=$(awk '/^got held/ { print $3; exit }' "$NK_TMP/bcork-peer.out")
held_ms=$(awk -v a="$t_cont" -v b="$t_got" 'BEGIN { printf "%d", (b - a) * 1000 }')
log_info "the corked bytes reached the remote host $held_ms ms after nk-nsm ran again"
check_gt "... not within 100 ms of nk-nsm running again (held by the cork)" "$held_ms" 99
echo go >&8
check "the guest uncorked and read the peer's 64 MiB" \
	wait_for -t 20 grep -q "^read $((64 << 20)) in all" "$NK_TMP/bcork.out"
guest_script_end bcork

log_step "protocol fuzzing: random, mutated conversations of every kind on vm2's streams"
nsm_fds() { ls "/proc/$NK_NSM_PID/fd" | wc -l; }
fds0=$(nsm_fds)
seed=${NK_FUZZ_SEED:-$(date +%s)}
out=$("$CLIENT" fuzz "$G2" 10.77.0.3 "${NK_PROTO_FUZZ_SECS:-5}" "$seed" 2>&1)
echo "$out" | sed 's/^/  /'
check "conversations ran (seed $seed)" grep -Eq '^fuzz: [1-9][0-9]{2,} conversations' <<<"$out"
check "the NSM answers a well-formed control channel afterwards" \
	grep -q '^after fuzzing: HELLO CTL + STATUS ok' <<<"$out"
check "nk-nsm is the same process (no crash, no restart)" \
	test "$(nk_nsm_pid "nsm-$S")" = "$NK_NSM_PID"
check "bad input was refused and counted in its log" grep -q 'closing channel' "$NK_STATE/nsm-nsm1.log"
# Half-sent HELLOs are dropped after 5 s, unclaimed offers with their listener.
check "no descriptor left behind ($fds0 before)" wait_for -t 12 bash -c "[ \$(ls /proc/$NK_NSM_PID/fd | wc -l) -le $fds0 ]"
log_info "nk-nsm descriptors: $fds0 before, $(nsm_fds) after"
peer sink 9110
out=$(printf 'after the fuzz\n' | "$CLIENT" connect "$G1" 10.77.0.1 9110 2>/dev/null)
check_eq "vm1 still connects and sends through the NSM" "${out%% *}" 15

log_step "nkd's ATTACH_CLAIM (a claim passed on after a move), malformed and unknown"
# as nkd would send it, on nsm1's control socket (the NSM takes this
# connection instead of nkd's; nkd, stopped meanwhile so that it does not
# take it back, connects again and re-sends its state)
VM1_ID=$(jpy "$(nkctl -j vm show vm1)" 'j["id"]')
kill -STOP "$NKD_PID"
out=$("$CLIENT" nsm "$NK_RUN/nsm-nsm1.sock" claim-checks "$VM1_ID" 2>&1)
kill -CONT "$NKD_PID"
echo "$out" | sed 's/^/    /'
check_eq "ATTACH_CLAIM: each refused with its errno" "$(tr '\n' ' ' <<<"$out")" \
	"unknown-token ENOENT no-stream EINVAL short EPROTO unknown-vm ENOENT not-hello EINVAL bad-len EINVAL not-accept EINVAL pad EINVAL "
check "nk-nsm is the same process" test "$(nk_nsm_pid "nsm-$S")" = "$NK_NSM_PID"
check "nkd is connected to nsm1 again" wait_for -t 10 bash -c \
	"grep -c 'nsm nsm1 (pid $NK_NSM_PID): up' '$NK_NKD_LOG' | grep -qv '^1$'"
peer sink 9111
out=$(printf 'after the claims\n' | "$CLIENT" connect "$G1" 10.77.0.1 9111 2>/dev/null)
check_eq "vm1 still connects and sends through the NSM" "${out%% *}" 17

log_step "a VM_ADD with an id the NSM has under another name replaces that VM"
# nkd gives a deleted VM's id to a new one; before, the NSM renamed the
# old VM and the new one inherited its sockets and guest streams.  nkd is
# stopped meanwhile (the NSM takes this connection instead of nkd's).
kill -STOP "$NKD_PID"
"$CLIENT" nsm "$NK_RUN/nsm-nsm1.sock" vm-add 77 oldvm 10.77.0.77/24 >/dev/null 2>&1
check "oldvm (id 77) has its address" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.77.0.77
"$CLIENT" nsm "$NK_RUN/nsm-nsm1.sock" vm-add 77 newvm 10.77.0.78/24 >/dev/null 2>&1
check "newvm (id 77) has its address" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.77.0.78
no_77() { ! nk_has_addr "nsm-$S" up0 10.77.0.77; }
check "... and oldvm's is gone" wait_for -t 5 no_77
check "NSM log: the old vm deleted, not renamed" \
	grep -q "vm oldvm (id 77): the id is vm newvm's now; oldvm's sockets and streams are closed" \
	"${NSM_LOG:-/nonexistent}"
"$CLIENT" nsm "$NK_RUN/nsm-nsm1.sock" vm-del 77 >/dev/null 2>&1
kill -CONT "$NKD_PID"
check "nkd is connected to nsm1 again" wait_for -t 10 bash -c \
	"[ \$(grep -c 'nsm nsm1 (pid $NK_NSM_PID): up' '$NK_NKD_LOG') -ge 3 ]"
peer sink 9112
out=$(printf 'after the ids\n' | "$CLIENT" connect "$G1" 10.77.0.1 9112 2>/dev/null)
check_eq "vm1 still connects and sends through the NSM" "${out%% *}" 14

check "nk-nsm is still running" nk_alive "$NK_NSM_PID"
nk_finish
