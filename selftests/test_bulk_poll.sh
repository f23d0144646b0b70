#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Bulk polling in the kernel NSM (nk-nsm --bulk-poll=USEC|auto; per NSM
# with `nkctl nsm add ... bulk-poll USEC|auto`): after a batch of events in
# which one connection relayed 16 KiB or more, the NSM looks for more events
# without sleeping for up to USEC microseconds, and payload keeps that window
# open for as long as such bursts keep coming (1 ms).  A bulk transfer then
# does not cost a wakeup of the NSM per burst, paid by whoever sends
# (docs/benchmarks.md has what it buys); small messages never open it.
# "auto", the default, is 50 us where a wakeup round trip between two
# processes on one CPU costs 8 us or more (nk-nsm measures it at start),
# else 0: on machines where switching is cheap, looking costs more than it
# saves.  nsm1 here has an explicit `bulk-poll 50`, so that the windows
# are counted on any machine; test_nkctl checks "auto" through nkd.
#
# The windows are counted exactly: every look without sleeping is an
# epoll_wait with a zero timeout, counted with `perf stat` on the
# syscalls:sys_enter_epoll_wait tracepoint filtered on timeout == 0.
#   - the attribute: nk-nsm's command line (nkd passes it only when it is
#     not nk-nsm's own default, so an older nk-nsm still starts), nkctl nsm
#     show, nkd.json, a restart after SIGKILL; values out of 0-1000 or not
#     numbers are refused and nothing is added
#   - round trips of 32 bytes and short connections: no window at all
#   - a 48 MiB download and a 48 MiB upload, byte for byte: windows
#   - once the transfer is over, no window and no CPU while connections idle
#   - an NSM with bulk-poll 0 moves the same download without a window
. "$(dirname "$0")/lib.sh"

nk_require_root
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_cmds perf
nk_require_build

# The splice relay is what is measured: with NK_NKD_EXTRA_ARGS=--nsm-arg=
# --kernel-relay uploads would not pass through the NSM's user space.
NK_NKD_ARGS=()
NK_NSM1_ARGS=(bulk-poll 50)
nk_topo_up
R=remote-$S
perf stat -x, -e syscalls:sys_enter_epoll_wait --filter 'timeout == 0' -p "$NK_NSM_PID" \
	-- sleep 0.1 >/dev/null 2>&1 ||
	nk_skip "perf cannot count the syscalls:sys_enter_epoll_wait tracepoint here"

# spins OUT PID CMD...: run CMD (a command or a function; its output to
# OUT); print the number of zero-timeout epoll_waits PID made meanwhile,
# or "none" when perf did not count.  perf sets its counters up before it
# starts the command it is given, which tells the test when to start CMD
# and waits for the test to finish it.
spins()
{
	local out=$1 pid=$2 pp
	shift 2
	rm -f "$NK_TMP/perf.out" "$NK_TMP/perf.ready" "$NK_TMP/perf.done"
	perf stat -x, -o "$NK_TMP/perf.out" -e syscalls:sys_enter_epoll_wait \
		--filter 'timeout == 0' -p "$pid" -- bash -c \
		"touch $NK_TMP/perf.ready; while [ ! -e $NK_TMP/perf.done ]; do sleep 0.02; done" \
		>/dev/null 2>&1 &
	pp=$!
	if ! wait_for -t 10 test -e "$NK_TMP/perf.ready"; then
		touch "$NK_TMP/perf.done"
		wait "$pp"
		echo none
		return
	fi
	"$@" >"$out" 2>&1
	touch "$NK_TMP/perf.done"
	wait "$pp"
	awk -F, '/sys_enter_epoll_wait/ { print $1 + 0; n++ } END { if (!n) print "none" }' \
		"$NK_TMP/perf.out" 2>/dev/null || echo none
}

log_step "the setting"
check_eq "nsm1's nk-nsm runs with --bulk-poll=50" "$(nk_nsm_opts "$NK_NSM_PID")" "--bulk-poll=50"
check_eq "nkctl -j nsm show nsm1: bulk_poll, and what runs" \
	"$(jpy "$(nk_run_nkctl -j nsm show nsm1)" '(j["bulk_poll"], j["running"]["bulk_poll"], "bulk_poll_auto" in j["running"])')" \
	"(50, 50, False)"
# "auto": the choice follows the measured round trip (nk-nsm's default, and
# as an explicit --bulk-poll=auto): off under 8 us, 50 us from 8 us on
auto_consistent()
{
	local l us
	l=$(grep -o 'bulk polling (auto): .* costs [0-9.]* us here' "$1") || return 1
	us=${l##*costs }
	us=${us% us here}
	if awk -v u="$us" 'BEGIN { exit !(u < 8) }'; then
		[[ $l == *"(auto): off:"* ]]
	else
		[[ $l == *"(auto): 50 us after bursts:"* ]]
	fi
}
for a in "" --bulk-poll=auto; do
	timeout 0.5 "$OUTPUT/nk-nsm" --name x --type kernel --dev lo --control "$NK_TMP/x.sock" $a \
		>"$NK_TMP/auto.log" 2>&1
	check "nk-nsm ${a:-without --bulk-poll} measures and chooses consistently ($(grep -o 'bulk polling.*' "$NK_TMP/auto.log"))" \
		auto_consistent "$NK_TMP/auto.log"
done
check "nk-nsm --bulk-poll=fast refuses to start, naming auto" bash -c \
	"timeout 5 $OUTPUT/nk-nsm --name x --type kernel --dev lo --control $NK_TMP/x.sock --bulk-poll=fast 2>$NK_TMP/e4; [ \$? -eq 2 ] && grep -q \"also takes 'auto'\" $NK_TMP/e4"
check "bulk-poll fast is refused by nkd" nk_refused "$NK_TMP/e5" nsm add nsm3 type kernel netns "bp-$S" dev up0 bulk-poll fast
check "... saying why" grep -q 'bulk-poll must be auto or a number of microseconds from 0 to 1000' "$NK_TMP/e5"
check "bulk-poll 1001 is refused" nk_refused "$NK_TMP/e1" nsm add nsm3 type kernel netns "bp-$S" dev up0 bulk-poll 1001
check "... saying why" grep -q 'bulk-poll must be auto or a number of microseconds from 0 to 1000' "$NK_TMP/e1"
check "bulk-poll -1 is refused" nk_refused "$NK_TMP/e2" nsm add nsm3 type kernel netns "bp-$S" dev up0 bulk-poll -1
check "... saying why" grep -q 'bulk-poll must be auto or a number' "$NK_TMP/e2"
check "and no nsm3 was added" nk_refused /dev/null nsm show nsm3
check "nk-nsm --bulk-poll=2000 refuses to start (exit status 2)" bash -c \
	"timeout 5 $OUTPUT/nk-nsm --name x --type kernel --dev lo --control $NK_TMP/x.sock --bulk-poll=2000 2>$NK_TMP/e3; [ \$? -eq 2 ]"
check "... saying why" grep -q -- "--bulk-poll: '2000' is not 0-1000" "$NK_TMP/e3"
nk_nsm_path nsm3 bp bpr0 10.75.0 vm3 g3 bulk-poll 0
NSM3_PID=$NK_PATH_NSM_PID
check_eq "nkctl -j nsm show nsm3: bulk_poll" "$(jpy "$(nk_run_nkctl -j nsm show nsm3)" 'j["bulk_poll"]')" 0
check_eq "nsm3's nk-nsm runs with --bulk-poll=0" "$(nk_nsm_opts "$NSM3_PID")" "--bulk-poll=0"
check "nkd.json keeps bulk_poll 0 for nsm3" bash -c \
	"grep -A9 '\"nsm3\"' $NK_TMP/state/nkd.json | grep -q '\"bulk_poll\": *0'"
old=$NSM3_PID
kill -KILL "$old"
wait_for -t 10 bash -c "p=\$(ip netns pids bp-$S); [ -n \"\$p\" ] && ! grep -qw $old <<<\"\$p\"" ||
	nk_die "nkd did not restart nsm3"
NSM3_PID=$(nk_nsm_pid "bp-$S")
check_eq "nsm3 restarted after SIGKILL runs with --bulk-poll=0 again" "$(nk_nsm_opts "$NSM3_PID")" "--bulk-poll=0"
check "nkctl shows nsm3 running again" wait_for -t 10 nk_nsm_running nsm3
wait_for -t 10 nk_has_addr "bp-$S" up0 10.75.0.2 || nk_die "vm3's address did not come back"

log_step "servers on the remote host"
# 7200: echo.  7201 (srv.py): "get N" sends N pseudo-random bytes and closes;
# "put N" reads N bytes and answers their sha256.
cat >"$NK_TMP/srv.py" <<'PY'
import hashlib, socket, sys, threading
def blob(n):
    return (hashlib.sha256(b"nk-bulk").digest() * ((n >> 5) + 1))[:n]
def bulk(c):
    with c:
        f = c.makefile("rb")
        op, n = f.readline().split()
        n = int(n)
        if op == b"get":
            c.sendall(blob(n))
        else:
            h, left = hashlib.sha256(), n
            while left:
                b = f.read(min(left, 1 << 20))
                if not b:
                    return
                h.update(b)
                left -= len(b)
            c.sendall(h.hexdigest().encode() + b"\n")
def serve(host, port, fn):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port))
    l.listen(64)
    while True:
        c, _ = l.accept()
        threading.Thread(target=fn, args=(c,), daemon=True).start()
for host in sys.argv[1:]:
    threading.Thread(target=serve, args=(host, 7201, bulk), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
PY
nk_bg "$R" "$NK_TMP/srv.log" "$NK_PY" "$NK_TMP/srv.py" 10.77.0.1 10.75.0.1
wait_for -t 5 grep -q ready "$NK_TMP/srv.log" || nk_die "servers did not start"
wait_for -t 5 nk_tcp_open "$R" 10.75.0.1 7201 || nk_die "servers did not start"
nk_echo_server "$R" 10.77.0.1 7200
nk_echo_server "$R" 10.75.0.1 7200

cat >"$NK_TMP/cli.py" <<'PY'
import hashlib, socket, sys
host, what = sys.argv[1], sys.argv[2]
def blob(n):
    return (hashlib.sha256(b"nk-bulk").digest() * ((n >> 5) + 1))[:n]
if what == "small":
    s = socket.create_connection((host, 7200))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ok = 0
    for i in range(2000):
        s.sendall(b"%032d" % i)
        got = b""
        while len(got) < 32:
            got += s.recv(32 - len(got))
        ok += got == b"%032d" % i
    s.close()
    conns = 0
    for i in range(100):
        c = socket.create_connection((host, 7200))
        c.sendall(b"hi")
        conns += c.recv(2) == b"hi"
        c.close()
    print("round trips %d connections %d" % (ok, conns))
else:
    n = int(sys.argv[3])
    s = socket.create_connection((host, 7201))
    if what == "get":
        s.sendall(b"get %d\n" % n)
        h, got = hashlib.sha256(), 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            h.update(b)
            got += len(b)
        ok = got == n and h.digest() == hashlib.sha256(blob(n)).digest()
    else:
        s.sendall(b"put %d\n" % n)
        s.sendall(blob(n))
        ok = s.makefile("rb").readline().strip().decode() == hashlib.sha256(blob(n)).hexdigest()
    print("%s %d %s" % (what, n, "intact" if ok else "BAD"))
PY

log_step "small messages never open a window"
n=$(spins "$NK_TMP/small.out" "$NK_NSM_PID" nk_guest g1 "$NK_PY" "$NK_TMP/cli.py" 10.77.0.1 small)
check "2000 round trips of 32 bytes and 100 connections through nsm1" \
	grep -q 'round trips 2000 connections 100' "$NK_TMP/small.out"
check_eq "nsm1 looked without sleeping: never" "$n" 0

log_step "bulk transfers poll"
MB48=$((48 << 20))
v0=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$NK_NSM_PID/status")
n=$(spins "$NK_TMP/get.out" "$NK_NSM_PID" nk_guest g1 "$NK_PY" "$NK_TMP/cli.py" 10.77.0.1 get $MB48)
v1=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$NK_NSM_PID/status")
check "48 MiB downloaded through nsm1, intact" grep -q "get $MB48 intact" "$NK_TMP/get.out"
log_info "download through nsm1: $n looks without sleeping, $((v1 - v0)) sleeps of nk-nsm"
check "nsm1 polled during the download ($n looks without sleeping)" test "$n" -gt 0
n=$(spins "$NK_TMP/put.out" "$NK_NSM_PID" nk_guest g1 "$NK_PY" "$NK_TMP/cli.py" 10.77.0.1 put $MB48)
check "48 MiB uploaded through nsm1, intact" grep -q "put $MB48 intact" "$NK_TMP/put.out"
check "nsm1 polled during the upload ($n looks without sleeping)" test "$n" -gt 0

log_step "after the transfer, sleeping again"
nk_hold_idle g1 10.77.0.1 20 "nsm-$S"
# a burst, then nothing
nk_guest g1 "$NK_PY" "$NK_TMP/cli.py" 10.77.0.1 get $((4 << 20)) >"$NK_TMP/get2.out" 2>&1
check "4 MiB downloaded, intact" grep -q "intact" "$NK_TMP/get2.out"
t0=$(nk_proc_cpu_ticks "$NK_NSM_PID")
n=$(spins "$NK_TMP/idle.out" "$NK_NSM_PID" sleep 3)
t1=$(nk_proc_cpu_ticks "$NK_NSM_PID")
check_eq "idle with 20 connections: no look without sleeping over 3 s" "$n" 0
# 1% of a core over 3 s is 3 ticks at 100 Hz
check "idle: nsm1 used under 1% of a core over 3 s ($((t1 - t0)) ticks)" test $((t1 - t0)) -lt 3
nk_stop "$NK_HOLD_PID"

log_step "bulk-poll 0"
v0=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$NSM3_PID/status")
n=$(spins "$NK_TMP/get3.out" "$NSM3_PID" nk_guest g3 "$NK_PY" "$NK_TMP/cli.py" 10.75.0.1 get $MB48)
v1=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$NSM3_PID/status")
check "48 MiB downloaded through nsm3, intact" grep -q "get $MB48 intact" "$NK_TMP/get3.out"
log_info "download through nsm3 (bulk-poll 0): $n looks without sleeping, $((v1 - v0)) sleeps of nk-nsm"
check_eq "nsm3 never looked without sleeping" "$n" 0

nk_finish
