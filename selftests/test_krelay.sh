#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# The kernel NSM's in-kernel relay (nk-nsm --kernel-relay, passed by nkd
# --nsm-arg): the guest -> network direction of a TCP connection is moved by
# a sockmap verdict program (bpf/relay.bpf.c), not by the NSM.  Proves:
# the program is loaded and attached; bytes arrive whole and in order (64 MiB
# checked by SHA-256 at the remote end); the guest's EOF becomes a FIN only
# after every redirected byte reached the TCP socket (the remote replies
# only after EOF, with the count); close() without shutdown loses nothing;
# many connections at once; request/response both ways; the verdict
# program's per-connection count equals what the guest wrote (the bytes went
# through the kernel, not the NSM) and `nkctl conn list` reports it; no map
# entry is left behind and no skb missed its entry; a guest whose peer
# does not read is held back by its own send buffer; the relayed TCP
# socket's send buffer is 16 MiB unless the guest chose one, and per NSM
# 0 (autotuning) or a size given with kernel-relay-sndbuf.  Then per NSM, with
# busy polling as well (`nkctl nsm add ... relay kernel busy-poll 30`, the
# configuration for latency-bound tenants in docs/benchmarks.md): the
# attributes, round trips and 16 MiB through it, whole; test_semantics.sh
# with both on, and test_vm.sh (a real QEMU guest) with the relay on.

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds bpftool ss
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_build

NK_NKD_ARGS=(--nsm-arg=--kernel-relay)
nk_topo_up

log_step "the relay program is loaded and attached"
NSM_LOG=$(ls "$NK_TMP"/state/nsm-*.log 2>/dev/null | head -n 1)
check "nk-nsm says the in-kernel relay is on" grep -q 'in-kernel relay of guest -> network data: on' "$NSM_LOG"
check "bpftool lists the verdict program relay_verdict" bash -c "bpftool prog show name relay_verdict | grep -q sk_skb"
for m in relay_guest relay_tcp relay_conns; do
	check "bpftool lists map $m" bash -c "bpftool map show name $m | grep -q $m"
done

# The remote end: for each connection, read to EOF, then answer
# "<bytes> <sha256>" and close.  An echo server on another port.
cat >"$NK_TMP/sink.py" <<'PY'
import hashlib, socket, sys, threading
def sink(c):
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        h.update(b); n += len(b)
    try:
        c.sendall(f"{n} {h.hexdigest()}\n".encode())
    except OSError:
        pass
    with open(sys.argv[2], "a") as f:
        f.write(f"{n} {h.hexdigest()}\n")
    c.close()
def echo(c):
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
    c.close()
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(128)
    while True:
        c, _ = s.accept()
        threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(7100, echo), daemon=True).start()
serve(7101, sink)
PY
nk_bg "remote-$S" "$NK_TMP/sink.log" "$NK_PY" "$NK_TMP/sink.py" 10.77.0.1 "$NK_TMP/sink.done"
check "remote sink listens" wait_port "remote-$S" 10.77.0.1 7101

# The guest client: send FILE (or N bytes), shutdown or close, print the reply.
cat >"$NK_TMP/send.py" <<'PY'
import hashlib, os, socket, sys, time
mode, path = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
s = socket.create_connection((os.environ.get("HOST", "10.77.0.1"), 7101))
view, off = memoryview(data), 0
while off < len(data):
    off += s.send(view[off:off + 65536 * 3])
if mode == "pause":
    print("sent", flush=True)
    time.sleep(float(sys.argv[3]))
if mode == "close":
    s.close()
    sys.exit(0)
s.shutdown(socket.SHUT_WR)
r = b""
while not r.endswith(b"\n"):
    b = s.recv(256)
    if not b:
        break
    r += b
print(r.decode().strip())
print(len(data), hashlib.sha256(data).hexdigest())
PY

log_step "64 MiB guest -> remote, shutdown(SHUT_WR), the remote answers after EOF"
head -c $((64 << 20)) /dev/urandom >"$NK_TMP/big.bin"
out=$(nk_guest g1 "$NK_PY" "$NK_TMP/send.py" shutdown "$NK_TMP/big.bin" 2>&1)
got=$(echo "$out" | sed -n 1p) want=$(echo "$out" | sed -n 2p)
check_eq "remote received every byte, in order (count and SHA-256)" "$got" "$want"

log_step "1 MiB then close() without shutdown: nothing lost"
head -c $((1 << 20)) /dev/urandom >"$NK_TMP/mid.bin"
: >"$NK_TMP/sink.done"
nk_guest g1 "$NK_PY" "$NK_TMP/send.py" close "$NK_TMP/mid.bin" >/dev/null 2>&1
sinkdone()
{
	[ -s "$NK_TMP/sink.done" ]
}
wait_for -t 10 sinkdone
check_eq "remote got the whole 1 MiB after the guest's close" \
	"$(cat "$NK_TMP/sink.done")" "$((1 << 20)) $(sha256sum "$NK_TMP/mid.bin" | cut -d' ' -f1)"

log_step "the verdict program moved the bytes: its count, conn list"
head -c 300000 /dev/urandom >"$NK_TMP/small.bin"
nk_guest_bg g1 "$NK_TMP/pause.log" "$NK_PY" "$NK_TMP/send.py" pause "$NK_TMP/small.bin" 6
PAUSE=$NK_BG_PID
sent()
{
	grep -q sent "$NK_TMP/pause.log"
}
check "guest wrote 300000 bytes and holds the connection" wait_for -t 10 sent
# counted PID BYTES: nk-nsm PID's relay_conns holds one connection, whose
# verdict count is BYTES
counted()
{
	[ "$(nk_relay_conns "$1")" = "$2" ]
}
check "relay_conns holds one connection whose verdict count is 300000" wait_for -t 5 counted "$NK_NSM_PID" 300000
log_info "relay_conns bytes: $(nk_relay_conns "$NK_NSM_PID")"
cl=$(nk_run_nkctl -j conn list)
check_eq "nkctl conn list: bytes out of the connection to 10.77.0.1:7101" \
	"$(jpy "$cl" '[c["bytes_out"] for c in j if c.get("remote", "").endswith(":7101")]')" "[300000]"
check "the remote-facing socket belongs to nk-nsm" bash -c \
	"ip netns exec nsm-$S ss -Htnp state established dst 10.77.0.1 dport = :7101 | grep -q 'pid=$NK_NSM_PID,'"
wait "$PAUSE"
check "the paused connection finished with the right reply" bash -c \
	"[ \"\$(sed -n 2p $NK_TMP/pause.log)\" = \"\$(sed -n 3p $NK_TMP/pause.log)\" ]"

log_step "20 connections at once, 2 MiB each"
head -c $((2 << 20)) /dev/urandom >"$NK_TMP/two.bin"
pids=()
for i in $(seq 1 20); do
	nk_guest_bg g2 "$NK_TMP/par-$i.log" "$NK_PY" "$NK_TMP/send.py" shutdown "$NK_TMP/two.bin"
	pids+=("$NK_BG_PID")
done
wait "${pids[@]}"
ok=0
for i in $(seq 1 20); do
	[ -n "$(sed -n 1p "$NK_TMP/par-$i.log")" ] &&
		[ "$(sed -n 1p "$NK_TMP/par-$i.log")" = "$(sed -n 2p "$NK_TMP/par-$i.log")" ] && ok=$((ok + 1))
done
check_eq "20 of 20 parallel connections delivered whole" "$ok" 20

log_step "request/response: 2000 round trips, up in the kernel, down by splice"
cat >"$NK_TMP/rr.py" <<'PY'
import os, socket
s = socket.create_connection((os.environ.get("HOST", "10.77.0.1"), 7100))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
bad = 0
for i in range(2000):
    m = os.urandom(1 + i % 3000)
    s.sendall(m)
    r = b""
    while len(r) < len(m):
        b = s.recv(len(m) - len(r))
        if not b:
            break
        r += b
    bad += r != m
s.shutdown(socket.SHUT_WR)
print("eof" if s.recv(1) == b"" else "no-eof", bad)
PY
check_eq "2000 echoes came back identical, then EOF" \
	"$(nk_guest g1 "$NK_PY" "$NK_TMP/rr.py" 2>&1)" "eof 0"

# The kernel hands redirected skbs to TCP from a work item that stops when
# the socket's send buffer is full and tries again a jiffy later, so a
# relayed TCP socket gets a 16 MiB one (nk-nsm --kernel-relay-sndbuf,
# krelay_sndbuf()) unless the guest chose its own, or the namespace's
# tcp_wmem maximum is at least that (then autotuning). A connection the
# guest accepts is claimed without waiting (ACCEPT_OFFER), so the guest may
# write first: it is relayed by splice and its buffer stays the kernel's.
log_step "the relayed TCP socket's send buffer, and a guest's own SO_SNDBUF"
cat >"$NK_TMP/sndbuf.py" <<'PY'
import socket, sys, time
SO = (socket.SOL_SOCKET, socket.SO_SNDBUF)
a = socket.create_connection(("10.77.0.1", 7100))
b = socket.socket()
b.setsockopt(*SO, 65536)
b.connect(("10.77.0.1", 7100))
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 7200))
l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
for s in (a, b, c):
    s.sendall(b"x")
print("ready", a.getsockopt(*SO), b.getsockopt(*SO), flush=True)
time.sleep(30)
PY
nk_guest_bg g1 "$NK_TMP/sndbuf.log" "$NK_PY" "$NK_TMP/sndbuf.py"
SNDBUF_PID=$NK_BG_PID
check "the guest listens on 7200" wait_for -t 5 grep -q listening "$NK_TMP/sndbuf.log"
ip netns exec "remote-$S" "$NK_PY" -c '
import socket, time
s = socket.create_connection(("10.77.0.2", 7200)); s.recv(1); time.sleep(30)' &
SNDBUF_REMOTE=$!
nk_register_pid "$SNDBUF_REMOTE"
check "the guest's three connections are up" wait_for -t 5 grep -q ready "$NK_TMP/sndbuf.log"
# tbs NS FILTER...: tb (send buffer) of the established sockets in NS that
# FILTER selects, sorted, each followed by a space
tbs()
{
	local ns=$1
	shift
	ip netns exec "$ns" ss -tmnHO state established "$@" |
		sed -n 's/.*,tb\([0-9]*\),.*/\1/p' | sort -n | tr '\n' ' '
}
wmax=$(ip netns exec "nsm-$S" sysctl -n net.ipv4.tcp_wmem | awk '{ print $3 }')
if [ "${wmax:-0}" -lt 16777216 ]; then
	check_eq "connect: 16 MiB, and 2 x 65536 where the guest set 65536" \
		"$(tbs "nsm-$S" dst 10.77.0.1:7100)" "131072 16777216 "
	check_eq "the guest's getsockopt(SO_SNDBUF) reads the same" \
		"$(grep ready "$NK_TMP/sndbuf.log")" "ready 16777216 131072"
else
	log_info "tcp_wmem's maximum in nsm-$S is $wmax: relayed sockets are left to autotuning"
	check_eq "connect: the guest's 65536 (2 x) kept, the other socket's not forced" \
		"$(tbs "nsm-$S" dst 10.77.0.1:7100 | awk '{ print $1, ($2 == 16777216) }')" "131072 0"
fi
tb_acc=$(tbs "nsm-$S" sport :7200)
check "accepted (relayed by splice): not forced to 16 MiB (tb $tb_acc)" \
	test -n "$tb_acc" -a "$tb_acc" != "16777216 "
nk_stop "$SNDBUF_PID"
nk_stop "$SNDBUF_REMOTE"
check "nk-nsm --kernel-relay-sndbuf=4096 refuses to start (exit status 2)" bash -c \
	"timeout 5 $OUTPUT/nk-nsm --name x --type kernel --dev lo --control $NK_TMP/x.sock --kernel-relay-sndbuf=4096 2>$NK_TMP/e-sb; [ \$? -eq 2 ]"
check "... saying why" grep -q -- "--kernel-relay-sndbuf: '4096' is not 0 or 65536-268435456" "$NK_TMP/e-sb"

# Redirected skbs stay charged to the guest's end of the stream until the
# kernel has sent them: a guest whose peer stops reading is held back by
# its own send buffer, as with a TCP socket, and pins a bounded amount of
# host memory.  (Passing skbs to the NSM's end instead would not be: that
# moved them to an unbounded queue, docs/benchmarks.md.)  The peer accepts
# and never reads; the guest writes without blocking until it has been
# refused for a second, and at most 256 MiB.  (The bound includes the
# relayed socket's 16 MiB send buffer.)
log_step "a peer that does not read: the guest is held back"
cat >"$NK_TMP/noread.py" <<'PY'
import socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], 7102))
l.listen(8)
print("ready", flush=True)
conns = []
while True:
    c, _ = l.accept()
    conns.append(c)
PY
cat >"$NK_TMP/flood.py" <<'PY'
import errno, socket, time
s = socket.create_connection(("10.77.0.1", 7102))
s.setblocking(False)
chunk, sent, last = b"x" * 65536, 0, time.monotonic()
while sent < (256 << 20) and time.monotonic() - last < 1.0:
    try:
        sent += s.send(chunk)
        last = time.monotonic()
    except BlockingIOError:
        time.sleep(0.01)
print(sent, flush=True)
PY
nk_bg "remote-$S" "$NK_TMP/noread.log" "$NK_PY" "$NK_TMP/noread.py" 10.77.0.1
check "the remote that never reads listens" wait_for -t 5 grep -q ready "$NK_TMP/noread.log"
NOREAD=$NK_BG_PID
flooded=$(nk_guest g1 "$NK_PY" "$NK_TMP/flood.py" 2>&1)
log_info "the guest got $flooded bytes written before its writes were refused for 1 s"
check_gt "the guest wrote something" "${flooded:-0}" 0
check_lt "and was held back within 64 MiB (its send buffer, the socket's, the peer's window)" \
	"${flooded:-999999999}" $((64 << 20))
nk_stop "$NOREAD"

log_step "nothing left behind"
# empty PID...: no connection left in these nk-nsm's relay_conns
empty()
{
	local pid
	for pid in "$@"; do
		[ -z "$(nk_relay_conns "$pid" | tr -d ' ')" ] || return 1
	done
}
check "relay_conns is empty once every connection ended" wait_for -t 10 empty "$NK_NSM_PID"
check_eq "no skb of a relayed stream missed its relay_conns entry" "$(nk_relay_misses "$NK_NSM_PID")" 0
check_eq "g1 has no TCP socket of its own" "$(ip netns exec "g1-$S" ss -Htan)" ""

log_step "per NSM, with busy polling: nkctl nsm add ... relay kernel busy-poll 30"
nk_nsm_path nsm2 kr krr0 10.76.0 vm20 g20 relay kernel busy-poll 30
NSM2_PID=$NK_PATH_NSM_PID
check_eq "nkctl nsm show nsm2: relay" "$(jpy "$(nk_run_nkctl -j nsm show nsm2)" 'j["relay"]')" kernel
check_eq "nkctl nsm show nsm2: busy_poll" "$(jpy "$(nk_run_nkctl -j nsm show nsm2)" 'j["busy_poll"]')" 30
# nkd passes an NSM's own options before its --nsm-arg ones (this test's
# nkd has --nsm-arg=--kernel-relay for every NSM): both must be there
check_eq "nsm2's nk-nsm runs with its own --kernel-relay --busy-poll=30, then nkd's --nsm-arg" \
	"$(nk_nsm_opts "$NSM2_PID")" "--kernel-relay --busy-poll=30 --kernel-relay"
# What the NSMs report they run with: nsm2 as configured; nsm1 (relay
# splice in nkd.json) with nkd's --nsm-arg=--kernel-relay, which nkd says
check_eq "nsm2 reports relay kernel, busy_poll 30, as configured" \
	"$(jpy "$(nk_run_nkctl -j nsm show nsm2)" 'j["running"]["relay"], j["running"]["busy_poll"], j["config_differs"]')" \
	"('kernel', 30, False)"
check_eq "nsm1 reports relay kernel, not its configured splice" \
	"$(jpy "$(nk_run_nkctl -j nsm show nsm1)" 'j["relay"], j["running"]["relay"], j["config_differs"]')" \
	"('splice', 'kernel', True)"
check "nkd says why nsm1 differs" grep -qF \
	"does not run as configured: relay kernel (configured: splice); nkd started it so: its --nsm-arg" \
	"$NK_NKD_LOG"
check "nsm2's log says the relay is on" wait_for -t 5 grep -q 'in-kernel relay of guest -> network data: on' \
	"$NK_TMP/state/nsm-nsm2.log"
check "nkd.json keeps relay kernel and busy_poll 30 for nsm2" bash -c \
	"grep -A8 '\"nsm2\"' $NK_TMP/state/nkd.json | grep -q '\"relay\": *\"kernel\"' &&
	 grep -A8 '\"nsm2\"' $NK_TMP/state/nkd.json | grep -q '\"busy_poll\": *30'"
nk_bg "remote-$S" "$NK_TMP/sink2.log" "$NK_PY" "$NK_TMP/sink.py" 10.76.0.1 "$NK_TMP/sink2.done"
servers2()
{
	wait_port "remote-$S" 10.76.0.1 7101 && wait_port "remote-$S" 10.76.0.1 7100
}
check "remote sink and echo listen on 10.76.0.1" servers2
check_eq "2000 echoes through nsm2 came back identical, then EOF" \
	"$(HOST=10.76.0.1 nk_guest g20 "$NK_PY" "$NK_TMP/rr.py" 2>&1)" "eof 0"
head -c $((16 << 20)) /dev/urandom >"$NK_TMP/b16.bin"
out=$(HOST=10.76.0.1 nk_guest g20 "$NK_PY" "$NK_TMP/send.py" shutdown "$NK_TMP/b16.bin" 2>&1)
check "16 MiB guest -> remote through nsm2, every byte in order" test -n "$(echo "$out" | sed -n 1p)" -a \
	"$(echo "$out" | sed -n 1p)" = "$(echo "$out" | sed -n 2p)"
# and through nsm2's verdict program, not its splice relay
: >"$NK_TMP/pause2.log"
HOST=10.76.0.1 nk_guest_bg g20 "$NK_TMP/pause2.log" "$NK_PY" "$NK_TMP/send.py" pause "$NK_TMP/small.bin" 4
PAUSE=$NK_BG_PID
check "a guest of nsm2 wrote 300000 bytes and holds the connection" wait_for -t 10 grep -q sent "$NK_TMP/pause2.log"
check "nsm2's relay_conns counts them: the kernel moved them" wait_for -t 5 counted "$NSM2_PID" 300000
wait "$PAUSE"
check "relay_conns of nsm1 and nsm2 are empty again" wait_for -t 10 empty "$NK_NSM_PID" "$NSM2_PID"
check_eq "no skb missed its relay_conns entry in nsm1 or nsm2" "$(nk_relay_misses "$NK_NSM_PID" "$NSM2_PID")" 0
check_eq "g20 has no TCP socket of its own" "$(ip netns exec "g20-$S" ss -Htan)" ""

# The relayed sockets' send buffer per NSM: nsm2 has the default (16 MiB),
# nsm3 leaves it to autotuning, nsm4 sets 1 MiB (below autotuning's
# ceiling, applied as given).
log_step "per NSM: nkctl nsm add ... relay kernel kernel-relay-sndbuf BYTES"
for bad in 4096 268435457 -1 1M; do
	check "kernel-relay-sndbuf $bad is refused" nk_refused "$NK_TMP/e-rs" \
		nsm add nsm3 type kernel netns "ks-$S" dev up0 relay kernel kernel-relay-sndbuf "$bad"
	check "... saying why" grep -q \
		'kernel-relay-sndbuf must be 0 (autotuning) or a number of bytes from 65536 to 268435456' "$NK_TMP/e-rs"
done
check "and no nsm3 was added" nk_refused "$NK_TMP/e-rs2" nsm show nsm3
check_eq "nkctl nsm show nsm2: kernel_relay_sndbuf, the default" \
	"$(jpy "$(nk_run_nkctl -j nsm show nsm2)" 'j["kernel_relay_sndbuf"]')" 16777216
has_conn()
{
	[ -n "$(nk_relay_conns "$1" | tr -d ' ')" ]
}
# echo_on NET.1: the sink/echo server on the remote host at NET.1:7100
echo_on()
{
	nk_bg "remote-$S" "$NK_TMP/sink-$1.log" "$NK_PY" "$NK_TMP/sink.py" "$1" "$NK_TMP/sink-$1.done"
	wait_port "remote-$S" "$1" 7100
}
# held_tb NSMPID NS GUEST NET: tb of the relayed TCP socket of a connection
# from GUEST to the echo server on NET.1 (started by echo_on), held open.
held_tb()
{
	local pid=$1 ns=$2-$S g=$3 net=$4 tb
	: >"$NK_TMP/hold-$g.log"
	nk_guest_bg "$g" "$NK_TMP/hold-$g.log" "$NK_PY" -c "
import socket, time
s = socket.create_connection(('$net.1', 7100)); s.sendall(b'x'); s.recv(1)
print('up', flush=True); time.sleep(30)"
	local hold=$NK_BG_PID
	wait_for -t 5 grep -q up "$NK_TMP/hold-$g.log" && wait_for -t 5 has_conn "$pid" &&
		tb=$(tbs "$ns" dst "$net.1:7100")
	nk_stop "$hold"
	tb=${tb% }
	echo "${tb:-none}"
}
nk_nsm_path nsm3 ks ksr0 10.74.0 vm30 g30 relay kernel kernel-relay-sndbuf 0
NSM3_PID=$NK_PATH_NSM_PID
check_eq "nkctl nsm show nsm3: kernel_relay_sndbuf" \
	"$(jpy "$(nk_run_nkctl -j nsm show nsm3)" 'j["kernel_relay_sndbuf"]')" 0
check_eq "nsm3's nk-nsm runs with --kernel-relay --kernel-relay-sndbuf=0, then nkd's --nsm-arg" \
	"$(nk_nsm_opts "$NSM3_PID")" "--kernel-relay --kernel-relay-sndbuf=0 --kernel-relay"
check "nkd.json keeps kernel_relay_sndbuf 0 for nsm3" bash -c \
	"grep -A9 '\"nsm3\"' $NK_TMP/state/nkd.json | grep -q '\"kernel_relay_sndbuf\": *0'"
check "remote echo listens on 10.74.0.1" echo_on 10.74.0.1
tb3=$(held_tb "$NSM3_PID" ks g30 10.74.0)
wmax3=$(ip netns exec "ks-$S" sysctl -n net.ipv4.tcp_wmem | awk '{ print $3 }')
if [ "${wmax3:-0}" -lt 16777216 ]; then
	check "nsm3's relayed TCP socket keeps an autotuned buffer, not the default's 16 MiB (tb $tb3)" \
		test "$tb3" != none -a "$tb3" != 16777216
else
	log_info "tcp_wmem's maximum in ks-$S is $wmax3: the default would autotune as well (tb $tb3)"
fi
nk_nsm_path nsm4 kq kqr0 10.73.0 vm40 g40 relay kernel kernel-relay-sndbuf 1048576
NSM4_PID=$NK_PATH_NSM_PID
check "remote echo listens on 10.73.0.1" echo_on 10.73.0.1
check_eq "nsm4's relayed TCP socket has the 1 MiB it was given, below autotuning's ceiling" \
	"$(held_tb "$NSM4_PID" kq g40 10.73.0)" 1048576

# The differential semantics test (every case against a guest owning its
# stack) with the in-kernel relay on, in its own topology.
log_step "test_semantics.sh with the in-kernel relay and busy polling"
NK_NKD_EXTRA_ARGS="--nsm-arg=--kernel-relay --nsm-arg=--busy-poll=30" OUTPUT=$OUTPUT \
	bash "$NK_SRCDIR/selftests/test_semantics.sh" >"$NK_TMP/semantics.log" 2>&1
sem=$?
grep -E 'nk-nsm pid|checks? passed|FAIL|not compared' "$NK_TMP/semantics.log" | sed 's/^/  /' | tail -n 12
check_eq "test_semantics.sh passes with the in-kernel relay and busy polling" "$sem" 0
check "and its NSM ran with --kernel-relay --busy-poll=30" \
	grep -q 'nk-nsm pid .*--kernel-relay --busy-poll=30' "$NK_TMP/semantics.log"

# The real VM path (QEMU guest, AF_VSOCK -> nk-vhost-vsock -> unix -> NSM):
# the NSM's end of each stream is a Unix socket there too.
log_step "test_vm.sh with the in-kernel relay"
NK_NKD_EXTRA_ARGS=--nsm-arg=--kernel-relay OUTPUT=$OUTPUT \
	bash "$NK_SRCDIR/selftests/test_vm.sh" >"$NK_TMP/vm.log" 2>&1
vmrc=$?
grep -E 'nk-nsm pid|checks? passed|FAIL|SKIP|skip' "$NK_TMP/vm.log" | sed 's/^/  /' | tail -n 8
if [ "$vmrc" = "$NK_KSFT_SKIP" ]; then
	log_info "test_vm.sh skipped itself (no VM on this machine); not counted"
else
	check_eq "test_vm.sh passes with the in-kernel relay" "$vmrc" 0
	check "and its NSM ran with --kernel-relay" grep -q 'nk-nsm pid .*--kernel-relay' "$NK_TMP/vm.log"
fi

nk_finish
