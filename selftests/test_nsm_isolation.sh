#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# One NSM serves many VMs: what one VM's guest does must not stall it or
# take what the others need.
#
#  1. SO_LINGER with a time: Linux's close() of such a socket waits until
#     its bytes and FIN are acknowledged, up to that time, even when the
#     socket is non-blocking.  vm1's guest sets SO_LINGER {1, 20 s} on a
#     connection whose peer never reads, writes 50 KB and closes; and the
#     same on a connection its listener (SO_LINGER {1, 20 s}) accepted,
#     which inherits it.  Right after each close, vm2's guest connects
#     through the same NSM and gets an answer within 3 s (before: the
#     NSM's one thread waited in close() for 20 s, and every VM with it).
#     The guest still reads back the SO_LINGER it set, and the accepted
#     socket the listener's, as on Linux; the peer still gets the FIN.
#  2. ICMP errors for a guest's connected UDP socket that the guest does
#     not read: Linux keeps one pending error per socket; the NSM holds the
#     latest one while the guest's stream is full, and does not queue one
#     per ICMP message (before: 36 bytes per message in nk-nsm's memory,
#     without a bound); the guest's receives report the error once (or
#     twice: the held one after the stream drained), not once per error
#     frame the stream held.
#  3. A misbehaving NSM (a stand-in on nkd's control protocol) that answers
#     CONN_LIST with batches and never the REPLY: nkd gives that NSM's
#     listing up after 10 s (a warning in conn list's answer), answers the
#     operator while the NSM goes on sending, and its memory stays bounded.
#  4. One VM making sockets without end (nk-nsm's limit lowered to 600):
#     it gets ENOBUFS once the table is half full and it holds more than
#     its share; another VM is still served.
#  5. TCP_CONGESTION with an algorithm the host has not loaded: ENOENT
#     from the NSM's own check (the kernel would load module tcp_NAME for
#     the NSM, which has CAP_NET_ADMIN), logged.

. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_build
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_cmds prlimit

nk_topo_up
NSM=$NK_NSM_PID

# The remote host: a server that accepts and never reads (a 4 KiB receive
# buffer: 50 KB stay unsent), a client of the guest's listener that never
# reads, and an echo server for vm2's probe.
cat >"$NK_TMP/remote.py" <<'PY'
import socket, sys, threading, time
mode = sys.argv[1]
if mode == "sink":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    l.bind(("10.77.0.1", 9100))
    l.listen(8)
    print("ready", flush=True)
    held = []
    while True:
        c, _ = l.accept()
        held.append(c)          # never read
elif mode == "echo":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("10.77.0.1", 9101))
    l.listen(8)
    print("ready", flush=True)
    while True:
        c, _ = l.accept()
        c.sendall(c.recv(64))
        c.close()
elif mode == "stall":       # connect to the guest, never read, then see its FIN
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(("10.77.0.2", 9200))
    time.sleep(float(sys.argv[2]))
    c.settimeout(10)
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    print("read %d then EOF" % n, flush=True)
PY
# vm2's probe: connect through the NSM, one echo; prints the time it took.
cat >"$NK_TMP/probe.py" <<'PY'
import socket, time
t = time.time()
c = socket.create_connection(("10.77.0.1", 9101), timeout=30)
c.sendall(b"ping")
ok = c.recv(64) == b"ping"
print("%s %.1f" % ("ok" if ok else "bad", time.time() - t), flush=True)
PY
# vm1's guest: out (connect to the sink) or in (accept from the listener).
cat >"$NK_TMP/guest.py" <<'PY'
import socket, struct, sys, time
mode = sys.argv[1]
lg = struct.pack("ii", 1, 20)
if mode == "out":
    s = socket.create_connection(("10.77.0.1", 9100))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, lg)
else:
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, lg)
    l.bind(("10.77.0.2", 9200))
    l.listen(4)
    print("listening", flush=True)
    s, _ = l.accept()
print("linger", struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)), flush=True)
s.sendall(b"x" * 50000)
time.sleep(1)                   # the relay hands it all to TCP
s.close()
print("closed", flush=True)
PY

log_step "1. SO_LINGER with a time does not stall the NSM"
nk_bg "remote-$S" "$NK_TMP/sink.log" "$NK_PY" "$NK_TMP/remote.py" sink
nk_bg "remote-$S" "$NK_TMP/echo.log" "$NK_PY" "$NK_TMP/remote.py" echo
wait_for -t 5 grep -q ready "$NK_TMP/sink.log" || nk_die "sink did not start"
wait_for -t 5 grep -q ready "$NK_TMP/echo.log" || nk_die "echo did not start"
check_eq "vm2's probe before" "$(nk_guest g2 timeout 30 "$NK_PY" "$NK_TMP/probe.py" | cut -d' ' -f1)" ok

# probe_fast WHAT: vm2's probe, right after vm1's close, answered in < 3 s
probe_fast()
{
	local out
	out=$(nk_guest g2 timeout 30 "$NK_PY" "$NK_TMP/probe.py")
	log_info "vm2's probe after $1: $out s"
	check "vm2 is served at once after $1 (got: $out s)" \
		"$NK_PY" -c "import sys; a = sys.argv[1].split(); sys.exit(0 if a[0] == 'ok' and float(a[1]) < 3 else 1)" "${out:-bad 99}"
}

nk_guest g1 timeout 30 "$NK_PY" "$NK_TMP/guest.py" out >"$NK_TMP/guest-out.log" 2>&1
check "vm1 reads back the SO_LINGER it set" grep -q "linger (1, 20)" "$NK_TMP/guest-out.log"
check "vm1 closed its lingering connection" grep -q closed "$NK_TMP/guest-out.log"
probe_fast "vm1 closed a connection with SO_LINGER 20 s"
check "the NSM is the same process" nk_alive "$NSM"

nk_guest_bg g1 "$NK_TMP/guest-in.log" timeout 30 "$NK_PY" "$NK_TMP/guest.py" in
GIN=$NK_BG_PID
wait_for -t 5 grep -q listening "$NK_TMP/guest-in.log" || nk_die "vm1's listener did not start"
nk_bg "remote-$S" "$NK_TMP/stall.log" "$NK_PY" "$NK_TMP/remote.py" stall 6
STALL=$NK_BG_PID
check "vm1 accepted; the accepted socket has the listener's SO_LINGER" \
	wait_for -t 5 grep -q "linger (1, 20)" "$NK_TMP/guest-in.log"
check "vm1 closed the accepted connection" wait_for -t 5 grep -q closed "$NK_TMP/guest-in.log"
probe_fast "vm1 closed an accepted connection that inherited SO_LINGER 20 s"
check "the peer read all 50000 bytes, then the FIN" wait_for -t 15 grep -q "read 50000 then EOF" "$NK_TMP/stall.log"
nk_stop "$GIN" "$STALL"

log_step "2. ICMP errors a guest does not read are not queued without bound"
# vm1's guest: a UDP socket connected to a closed port of the remote host,
# never read.  The remote host sends it ICMP port unreachable (raw socket).
cat >"$NK_TMP/udp.py" <<'PY'
import errno, os, socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("10.77.0.1", 9999))
u.send(b"x")        # made on the NSM
print("port", u.getsockname()[1], flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
u.setblocking(False)
errs = []
for i in range(100000):
    try:
        u.recv(16)
        errs.append("data")
    except BlockingIOError:
        break
    except OSError as e:
        errs.append(errno.errorcode[e.errno])
print("recv:", " ".join(errs) if errs else "nothing", flush=True)
PY
cat >"$NK_TMP/icmp.py" <<'PY'
import socket, struct, sys
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
sport, n = int(sys.argv[1]), int(sys.argv[2])
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0,
                 socket.inet_aton("10.77.0.2"), socket.inet_aton("10.77.0.1"))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
body = struct.pack("!BBHI", 3, 3, 0, 0) + ip + struct.pack("!HHHH", sport, 9999, 8, 0)
pkt = body[:2] + struct.pack("!H", csum(body)) + body[4:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for i in range(n):
    r.sendto(pkt, ("10.77.0.2", 0))
print("sent", n, flush=True)
PY
nk_guest_bg g1 "$NK_TMP/udp.log" timeout 60 "$NK_PY" "$NK_TMP/udp.py" "$NK_TMP/udp.read"
UDPG=$NK_BG_PID
wait_for -t 5 grep -q "^port " "$NK_TMP/udp.log" || nk_die "vm1's UDP socket did not start"
UPORT=$(awk '/^port / { print $2 }' "$NK_TMP/udp.log")
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$NSM/status"; }
# the first round fills the guest's stream and whatever the NSM keeps for it
ip netns exec "remote-$S" "$NK_PY" "$NK_TMP/icmp.py" "$UPORT" 100000 >/dev/null
RSS1=$(rss)
ip netns exec "remote-$S" "$NK_PY" "$NK_TMP/icmp.py" "$UPORT" 300000 >"$NK_TMP/icmp.log"
check "the remote host sent 300000 more" grep -q "sent 300000" "$NK_TMP/icmp.log"
RSS2=$(rss)
log_info "nk-nsm RSS: $RSS1 KiB after 100000 ICMP errors, $RSS2 KiB after 300000 more"
# one frame per message would be 300000 * 36 bytes: over 10 MB
check "nk-nsm's memory did not grow with the ICMP errors (< 2 MiB more)" \
	test "$((RSS2 - RSS1))" -lt 2048
touch "$NK_TMP/udp.read"
check "the guest reads" wait_for -t 20 grep -q "^recv:" "$NK_TMP/udp.log"
log_info "$(grep "^recv:" "$NK_TMP/udp.log" | cut -c1-200)"
# Linux reports the pending error once, then EAGAIN; the NSM may pass the
# one it held while the stream was full right after the guest drained it
# (before: one ECONNREFUSED per error frame the stream held, 280 here)
NREFUSED=$(grep "^recv:" "$NK_TMP/udp.log" | grep -o ECONNREFUSED | wc -l)
check "the guest's receives report the error once or twice, not once per ICMP (got $NREFUSED)" \
	test "$NREFUSED" -ge 1 -a "$NREFUSED" -le 2
check "and nothing but the error" bash -c "! grep '^recv:' '$NK_TMP/udp.log' | grep -qv 'recv: ECONNREFUSED\( ECONNREFUSED\)\?$'"
nk_stop "$UDPG"

log_step "3. an NSM that streams without end does not capture nkd"
# A stand-in NSM on nkd's control protocol: HELLO, a REPLY to every
# request, but CONN_BATCH packets without end for CONN_LIST.  Before: nkd
# collected them for ever (its memory grew by 600 MB in 10 s) and answered
# no one.  Now the listing gives up after 10 s, nkd bounds what it takes
# per wakeup and per listing, and answers the operator.
cat >"$NK_TMP/fakensm.py" <<'PY'
import os, socket, struct, sys
path = sys.argv[1]
l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
l.bind(path)
l.listen(4)
MAGIC = 0x4d4e
def msg(typ, seq, body=b""):
    return struct.pack("<HBBIIi", MAGIC, 1, typ, 16 + len(body), seq, 0) + body
hello = b"fake".ljust(32, b"\0") + b"kernel".ljust(16, b"\0") + struct.pack("<II", os.getpid(), 0)
entry = lambda i: struct.pack("<QIBBH", 0x1000 + i, 1, 6, 3, 0) + b"\0" * 56 + struct.pack("<QQ", 0, 0)
batch = struct.pack("<II", 10, 0) + b"".join(entry(i) for i in range(10))
print("ready", flush=True)
while True:
    c, _ = l.accept()
    c.send(msg(1, 0, hello))
    while True:
        try:
            m = c.recv(2048)
        except OSError:
            break
        if not m:
            break
        typ, seq = m[3], struct.unpack("<I", m[8:12])[0]
        if typ == 7:            # CONN_LIST: batches, never the REPLY
            print("streaming", flush=True)
            try:
                while True:
                    c.send(msg(8, seq, batch))
            except OSError:
                break
        c.send(msg(2, seq))
PY
nk_netns_add "fk-$S"
ip -n "fk-$S" link add fk0 type veth peer name fk1
nk_bg - "$NK_TMP/fakensm.log" "$NK_PY" "$NK_TMP/fakensm.py" "$NK_RUN/nsm-fake.sock"
FAKE=$NK_BG_PID
wait_for -t 5 grep -q ready "$NK_TMP/fakensm.log" || nk_die "the stand-in NSM did not start"
run_ctl nsm add fake type kernel netns "fk-$S" dev fk0
check_eq "nkd adopts the stand-in NSM (got: $ERR)" "$RC" 0
NKD_RSS0=$(awk '/^VmRSS:/ { print $2 }' "/proc/$NKD_PID/status")
T0=$(date +%s)
"$OUTPUT/nkctl" -c "$NK_CTL" conn list >"$NK_TMP/connlist.out" 2>&1
RC=$?
T1=$(date +%s)
check_eq "conn list answers (the other NSMs' connections)" "$RC" 0
check "... with a warning that nsm fake's listing failed" \
	grep -q "warning: nsm fake: connection list failed: Connection timed out" "$NK_TMP/connlist.out"
check "... within 15 s (took $((T1 - T0)) s)" test $((T1 - T0)) -le 15
check "nkd says the NSM did not answer" grep -q "nsm fake: CONN_LIST not answered after 10000 ms of batches; given up" "$NK_NKD_LOG"
check "the stand-in NSM still streams" nk_alive "$FAKE"
check "nkd answers the operator meanwhile" timeout 5 "$OUTPUT/nkctl" -c "$NK_CTL" vm list
NKD_RSS1=$(awk '/^VmRSS:/ { print $2 }' "/proc/$NKD_PID/status")
log_info "nkd RSS: $NKD_RSS0 KiB before, $NKD_RSS1 KiB after"
check "nkd's memory stays bounded (< 64 MiB more)" test $((NKD_RSS1 - NKD_RSS0)) -lt 65536
nk_stop "$FAKE"
run_ctl nsm del fake
check_eq "nsm del fake (got: $ERR)" "$RC" 0

log_step "4. one VM cannot take every descriptor of the NSM"
# nk-nsm's descriptor limit lowered to 600 (prlimit).  vm1's guest makes
# sockets (bound to its address: each is a socket on the NSM) until one
# fails; then vm2's guest connects through the same NSM.  Before: vm1 took
# the whole table and vm2 got ENOBUFS.  Now vm1, holding more than its
# share of the NSM's sockets once the table is half full, gets ENOBUFS
# there, and vm2 is served.
cat >"$NK_TMP/hog.py" <<'PY'
import errno, os, socket, sys, time
held = []
err = None
most = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
while len(held) < most:
    s = socket.socket()
    try:
        s.bind(("10.77.0.2", 0))
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
        s.close()
        break
    held.append(s)
print("held %d then %s" % (len(held), err), flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
PY
# First vm1 holds 200 sockets and is deleted and added again: the NSM
# must count them gone (before: the sockets a VM delete ended stayed
# counted, and the share check then let vm1 take the whole table).
nk_guest_bg g1 "$NK_TMP/hog0.log" timeout 60 "$NK_PY" "$NK_TMP/hog.py" "$NK_TMP/hog0.done" 200
HOG0=$NK_BG_PID
check "vm1's guest holds 200 sockets" wait_for -t 30 grep -q "^held 200 then None" "$NK_TMP/hog0.log"
nk_run_nkctl vm del vm1 >/dev/null
nk_run_nkctl vm add vm1 nsm nsm1 addr 10.77.0.2/24 uds "$NK_TMP/vm1.vsock" >/dev/null
touch "$NK_TMP/hog0.done"
nk_stop "$HOG0"
wait_for -t 10 nk_has_addr "nsm-$S" up0 10.77.0.2 || nk_die "vm1's address did not come back"
HIGH=$(prlimit --pid "$NSM" --nofile --raw --noheadings -o HARD)
prlimit --pid "$NSM" --nofile="600:$HIGH"
sleep 1.2	# nk-nsm reads its limit again at most once a second
nk_guest_bg g1 "$NK_TMP/hog.log" timeout 60 "$NK_PY" "$NK_TMP/hog.py" "$NK_TMP/hog.done"
HOG=$NK_BG_PID
check "vm1's guest stopped getting sockets" wait_for -t 30 grep -q "^held " "$NK_TMP/hog.log"
log_info "vm1: $(cat "$NK_TMP/hog.log")"
check "... with ENOBUFS" grep -q "then ENOBUFS" "$NK_TMP/hog.log"
HELD=$(awk '/^held / { print $2 }' "$NK_TMP/hog.log")
check "... once it held about half the table (100-200 sockets; got ${HELD:-none})" \
	test "${HELD:-0}" -ge 100 -a "${HELD:-0}" -le 200
check "the NSM says why, naming vm1" grep -q "vm vm1: .*more than its share" "$NK_STATE/nsm-nsm1.log"
check_eq "vm2's probe while vm1 holds its share" \
	"$(nk_guest g2 timeout 30 "$NK_PY" "$NK_TMP/probe.py" | cut -d' ' -f1)" ok
touch "$NK_TMP/hog.done"
nk_stop "$HOG"
prlimit --pid "$NSM" --nofile="$HIGH:$HIGH"
check_eq "vm1's probe once it let go" "$(nk_guest g1 timeout 30 "$NK_PY" "$NK_TMP/probe.py" | cut -d' ' -f1)" ok

log_step "5. a guest's TCP_CONGESTION does not make the host load a module"
# Linux loads module tcp_NAME for an algorithm that is not loaded when the
# caller has CAP_NET_ADMIN, as the NSM does.  The NSM takes only the
# algorithms the host has (tcp_available_congestion_control): another is
# ENOENT, as Linux says for an unknown one, and logged.
cat >"$NK_TMP/cc.py" <<'PY'
import socket
s = socket.create_connection(("10.77.0.1", 9101), timeout=10)
for name in (b"nosuchcc", b"reno", b"x\nvm vm2: FAKE"):
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name)
        got = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")
        print(name.decode(), "ok", got.decode())
    except OSError as e:
        print(name.decode(), "errno", e.errno)
PY
OUT=$(nk_guest g1 timeout 30 "$NK_PY" "$NK_TMP/cc.py" 2>&1)
check_eq "an algorithm the host has not loaded: ENOENT (2)" "$(grep '^nosuchcc' <<<"$OUT")" "nosuchcc errno 2"
check_eq "one it has: taken and read back" "$(grep '^reno' <<<"$OUT")" "reno ok reno"
check "the NSM says why, naming the VM" grep -q \
	"vm vm1: .*TCP_CONGESTION nosuchcc refused: not an algorithm the host has loaded" \
	"$NK_STATE/nsm-nsm1.log"
# the name is the guest's: it cannot start a line of the NSM's log of its own
check "a name with a newline stays in vm1's line" grep -q \
	"vm vm1: .*TCP_CONGESTION x?vm vm2: FAKE refused" "$NK_STATE/nsm-nsm1.log"
check "... and starts no line" not_grep -q "^vm vm2: FAKE" "$NK_STATE/nsm-nsm1.log"

nk_finish
