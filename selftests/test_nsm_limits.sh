#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# An NSM at its descriptor limit (RLIMIT_NOFILE, set on the running nk-nsm
# with prlimit): the guest gets a clear error at once, nothing in flight is
# lost, and it all works again once descriptors are free.
# - connect from the guest fails within 2 s with ENOBUFS, never EMFILE (the
#   NSM's table is not the guest's) and never after the library's 10 s
#   handshake timeout (a held-back descriptor takes the guest stream that
#   arrives when the table is full, so that its HELLO is answered);
# - a connection that gets its socket but no descriptors for its pipes is
#   relayed through a buffer, and its data arrives intact;
# - the connections already open keep echoing;
# - a connection from the remote host that the NSM accepts into its last
#   free slot is served at once: the guest's claim stream comes in the
#   reserve's place and is not refused (a refusal would lose the
#   connection);
# - a connection from the remote host to a guest listener waits in the
#   backlog while the NSM has no slot at all, even after closing its pooled
#   pipes (as on Linux when the accepting process is out of descriptors),
#   is not reset, and is served once the limit is raised;
# - a guest stream nkd passes with SCM_RIGHTS (ATTACH_STREAM, AF_VSOCK
#   hosts) while the table is full is taken and its HELLO answered
#   (ENOBUFS in the reserve's place), not dropped by the kernel;
# - the NSM logs each case with the VM's name, and is the same process at
#   the end.

. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_build
nk_require_cmds prlimit

nk_topo_up
# One VM on the NSM: with two, one that holds more than its share of the
# NSM's sockets is refused once the table is half full (test_nsm_isolation),
# before the limit this test is about.
nk_run_nkctl vm del vm2 >/dev/null
SEM=$OUTPUT/selftests/nk_semantics
nk_bg "remote-$S" "$NK_TMP/peer.log" "$SEM" peer --bind 0.0.0.0
wait_for -t 5 grep -q ready "$NK_TMP/peer.log" || nk_die "semantics peer did not start"
NSM=$NK_NSM_PID
NSM_LOG=$NK_STATE/nsm-nsm1.log
HIGH=$(prlimit --pid "$NSM" --nofile --raw --noheadings -o HARD)

devnull_fds() { find "/proc/$NSM/fd" -lname /dev/null | wc -l; }
DEVNULL_FDS=$(devnull_fds)	# its reserve, and stdin
reserve_back() { [ "$(devnull_fds)" -ge "$DEVNULL_FDS" ]; }

# nofile_room N [pipes]: the NSM may open N more descriptors.  The limit
# bounds descriptor numbers, and a new one takes the lowest free number:
# the limit is the (N+1)th free number.  With "pipes", the NSM's pipes
# count as free: with no connection open they are its pool of empty
# pipes, which it closes when it runs out of descriptors.
nofile_room()
{
	local lim

	# First, the NSM holds its reserve descriptor (/dev/null) again.
	wait_for -t 3 reserve_back ||
		nk_die "nk-nsm did not take its reserve descriptor back"
	lim=$("$NK_PY" -c '
import os, sys
d, room, pipes = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "pipes"
used = {int(f) for f in os.listdir(d)
        if not (pipes and os.readlink(os.path.join(d, f)).startswith("pipe:"))}
free = [n for n in range(max(used) + room + 2) if n not in used]
print(free[room])' "/proc/$NSM/fd" "$1" "${2:-}") || nk_die "cannot read nk-nsm's descriptors"
	prlimit --pid "$NSM" --nofile="$lim:$HIGH"
}
nofile_high() { prlimit --pid "$NSM" --nofile="$HIGH:$HIGH"; }

# A guest listener (echo), for the connections from the remote host.
cat >"$NK_TMP/srv.py" <<'PY'
import socket, threading
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 8080))
l.listen(16)
print("ready", flush=True)
def serve(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
nk_guest_bg g1 "$NK_TMP/srv.log" "$NK_PY" "$NK_TMP/srv.py"
wait_for -t 5 grep -q ready "$NK_TMP/srv.log" || nk_die "guest listener did not start"

# Room for one descriptor, no pooled pipes yet (no connection has ended):
# the NSM accepts the remote's connection into the last slot, the guest's
# claim stream comes in the reserve's place, and the connection is served
# (through buffers: no descriptors for pipes) instead of being lost.
cat >"$NK_TMP/once.py" <<'PY'
import socket, time
t = time.time()
s = socket.create_connection(("10.77.0.2", 8080), timeout=5)
s.sendall(b"ping")
try:
    print("echo %r after %.2f" % (s.recv(4), time.time() - t), flush=True)
except OSError as e:
    print("failed", e, flush=True)
PY
nofile_room 1
out=$(ip netns exec "remote-$S" "$NK_PY" "$NK_TMP/once.py" 2>&1)
nofile_high
log_info "remote -> guest listener with room for 1 descriptor: $out"
check "room 1: a remote connection to the guest listener is served at once" \
	awk '$1 == "echo" && $2 == "b'"'ping'"'" && $4 < 2 { f = 1 } END { exit !f }' <<<"$out"
check "NSM logs a claim relayed through a buffer, naming the VM" \
	grep -q 'vm vm1: socket 0x[0-9a-f]*: no descriptors for a pipe: relayed through a buffer' "$NSM_LOG"
sleep 0.3

# The guest opens connections to the echo port until one fails, checks
# that each open one echoes 256 KiB intact, and prints
# "opened N err ERRNO after SECONDS echo OK|BAD".
cat >"$NK_TMP/fill.py" <<'PY'
import errno, os, socket, sys, time

conns, err, t_err = [], None, 0.0
for i in range(16):
    t = time.time()
    try:
        s = socket.create_connection(("10.77.0.1", 7001), timeout=15)
        conns.append(s)
    except OSError as e:
        err, t_err = errno.errorcode.get(e.errno, str(e.errno)), time.time() - t
        break
data = os.urandom(256 * 1024)
ok = True
for s in conns:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        d = s.recv(len(data) - len(got))
        if not d:
            break
        got += d
    ok = ok and got == data
print("opened %d err %s after %.2f echo %s" % (len(conns), err, t_err, "OK" if ok else "BAD"), flush=True)
PY

# Room for guest connections, from none to enough for two spliced ones (a
# connection takes its guest stream, its TCP socket and two pipes; a
# python connect with a timeout also opens the process's control channel
# for SO_ERROR).  Rooms 3, 6 and 12 open a connection: 3 with no room for
# a pipe (relayed through buffers both ways), 6 and 12 with pipes.
for room in 0 2 3 4 6 12; do
	nofile_room "$room"
	out=$(nk_guest g1 "$NK_PY" "$NK_TMP/fill.py" 2>&1)
	nofile_high
	log_info "room for $room more descriptors: $out"
	check "room $room: connect fails with ENOBUFS, within 2 s" \
		awk '$4 == "ENOBUFS" && $6 < 2 { f = 1 } END { exit !f }' <<<"$out"
	case $room in
	3 | 6 | 12)
		check "room $room: a connection opens and echoes 256 KiB intact" \
			awk '$2 >= 1 && $8 == "OK" { f = 1 } END { exit !f }' <<<"$out" ;;
	esac
	sleep 0.3	# the streams' closes reach the NSM
done
check "NSM logs the refused socket, naming the VM" \
	grep -Eq "vm vm1: (no socket for the guest: Too many open files|stream of pid [0-9]+ refused: out of descriptors) \(ENOBUFS to the guest\)" "$NSM_LOG"

cat >"$NK_TMP/wait.py" <<'PY'
import socket, sys, time
s = socket.create_connection(("10.77.0.2", 8080), timeout=5)
s.sendall(b"ping")
s.settimeout(1.5)
try:
    d = s.recv(4)
    print("early", d, flush=True)
except socket.timeout:
    print("waiting", flush=True)
open(sys.argv[1], "w").close()		# the test raises the limit now
s.settimeout(5)
t = time.time()
try:
    d = s.recv(4)
    print("served %r after %.2f" % (d, time.time() - t), flush=True)
except OSError as e:
    print("failed", e, flush=True)
PY
# Room for none, even once the pooled pipes are closed.
sleep 0.3
nofile_room 0 pipes
rm -f "$NK_TMP/raise"
ip netns exec "remote-$S" "$NK_PY" "$NK_TMP/wait.py" "$NK_TMP/raise" >"$NK_TMP/wait.log" 2>&1 &
WAITER=$!
nk_register_pid "$WAITER"
wait_for -t 10 test -e "$NK_TMP/raise" || nk_die "the remote client did not get to wait"
nofile_high
wait "$WAITER"
log_info "remote -> guest listener while the NSM is full: $(tr '\n' ' ' <"$NK_TMP/wait.log")"
check "remote connection waits while the NSM is full (no reset, no answer)" \
	grep -qx waiting "$NK_TMP/wait.log"
check "remote connection is served within 3 s of the limit being raised" \
	awk '$1 == "served" && $2 == "b'"'ping'"'" && $4 < 3 { f = 1 } END { exit !f }' "$NK_TMP/wait.log"
check "NSM logs the paused accept, naming the VM" \
	grep -q 'vm vm1: accept: Too many open files' "$NSM_LOG"

# A guest stream that nkd passes (ATTACH_STREAM: how a VM's AF_VSOCK
# streams reach the NSM on a host with kernel vhost-vsock) while the table
# is full.  The NSM makes room before it receives the message (its pooled
# pipes, then its reserve), takes the stream and answers its HELLO; before,
# the kernel dropped the passed descriptor (MSG_CTRUNC) and the guest saw
# its stream closed without an answer.  The client here holds the NSM's
# control connection (nkd is stopped meanwhile so that it does not take it
# back) and passes one end of a socketpair per line of its input: at room
# 0 twice (the first may still find pooled pipes to close; the second
# comes in the reserve's place and gets ENOBUFS), then with the limit
# raised.  Before each limit is set, the NSM has closed the stream passed
# before (else its slot frees up under the new limit), and the second
# limit leaves no room even with every pipe closed (a connection that
# ended late may have pooled its pipes since the first).
VM1_ID=$(jpy "$(nkctl -j vm show vm1)" 'j["id"]')
mkfifo "$NK_TMP/attach.in"
ups() { grep -c "nsm nsm1 (pid $NSM): up" "$NK_NKD_LOG"; }
reconnected() { [ "$(ups)" -gt "$UPS" ]; }
UPS=$(ups)
kill -STOP "$NKD_PID"
"$OUTPUT/selftests/nk_proto_client" nsm "$NK_RUN/nsm-nsm1.sock" attach-stream "$VM1_ID" \
	<"$NK_TMP/attach.in" >"$NK_TMP/attach.out" 2>&1 &
ATTACHER=$!
nk_register_pid "$ATTACHER"
exec 7>"$NK_TMP/attach.in"
# (each poll counts again: a "$(...)" argument of wait_for is read once)
attach_lines() { [ "$(grep -c '^attach' "$NK_TMP/attach.out")" -ge "$1" ]; }
attached() { wait_for -t 5 attach_lines "$1"; }
wait_for -t 5 grep -qx connected "$NK_TMP/attach.out" ||
	{ kill -CONT "$NKD_PID"; nk_die "no control connection to nsm1"; }
nsm_socks() { find "/proc/$NSM/fd" -lname 'socket:*' | wc -l; }
socks_back() { [ "$(nsm_socks)" -le "$SOCKS" ]; }
SOCKS=$(nsm_socks)
for i in 1 2; do
	wait_for -t 5 socks_back ||
		log_info "nk-nsm still has $(nsm_socks) sockets, $SOCKS before the first stream"
	if [ "$i" = 1 ]; then nofile_room 0; else nofile_room 0 pipes; fi
	echo go >&7
	attached "$i" || break
done
nofile_high
echo go >&7
attached 3
exec 7>&-
wait "$ATTACHER"
kill -CONT "$NKD_PID"
log_info "ATTACH_STREAM at room 0, 0, then raised: $(tr '\n' ' ' <"$NK_TMP/attach.out")"
mapfile -t att < <(grep '^attach' "$NK_TMP/attach.out")
check "room 0: a passed stream is taken and its HELLO answered (${att[0]:-nothing})" \
	grep -Eqx 'attach ok hello (ok|ENOBUFS)' <<<"${att[0]:-}"
check_eq "room 0, no pooled pipes left: the stream in the reserve's place gets ENOBUFS" \
	"${att[1]:-nothing}" "attach ok hello ENOBUFS"
check_eq "limit raised: a passed stream is served" "${att[2]:-nothing}" "attach ok hello ok"
check "nkd is connected to nsm1 again" wait_for -t 10 reconnected

# Afterwards: the same NSM, and 12 connections at once work.
check "the NSM is the same process" test "$(nk_nsm_pid "nsm-$S")" = "$NSM"
out=$(nk_guest g1 "$NK_PY" - <<'PY'
import socket
cs = [socket.create_connection(("10.77.0.1", 7001), timeout=5) for _ in range(12)]
for c in cs:
    c.sendall(b"again")
print(sum(c.recv(5) == b"again" for c in cs))
PY
)
check "12 connections at once echo after the limit is raised ($out)" test "$out" = 12

nk_finish
