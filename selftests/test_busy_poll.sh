#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Busy polling in the kernel NSM (nk-nsm --busy-poll=USEC, per NSM with
# `nkctl nsm add ... busy-poll USEC`): after events the NSM looks for more
# without sleeping for up to USEC microseconds, which shortens round trips
# (docs/benchmarks.md), and sleeps as before once traffic stops.
#   - the attribute: nkctl nsm show, the NSM's command line, nkd.json;
#     values out of 0-1000 or not numbers are refused and nothing is added
#   - connections, round trips and a 16 MiB transfer through it, byte for
#     byte (the log has the round trip and the NSM's CPU ticks with and
#     without busy polling; make bench measures them properly)
#   - no spinning when idle: less than 1% of a core over 3 s with 50 idle
#     connections, as without busy polling
. "$(dirname "$0")/lib.sh"

nk_require_root
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_build

nk_topo_up
R=remote-$S

log_step "nkctl nsm add nsm3 ... busy-poll 50"
check "busy-poll 5000 is refused" nk_refused "$NK_TMP/e1" nsm add nsm3 type kernel netns "bp-$S" dev up0 busy-poll 5000
check "... saying why" grep -q 'busy-poll must be a number of microseconds from 0 to 1000' "$NK_TMP/e1"
check "busy-poll 5x is refused" nk_refused "$NK_TMP/e2" nsm add nsm3 type kernel netns "bp-$S" dev up0 busy-poll 5x
check "... saying why" grep -q 'busy-poll must be a number' "$NK_TMP/e2"
check "and no nsm3 was added" nk_refused /dev/null nsm show nsm3
nk_nsm_path nsm3 bp bpr0 10.75.0 vm3 g3 busy-poll 50
NSM3_PID=$NK_PATH_NSM_PID
check_eq "nkctl -j nsm show nsm3: busy_poll" "$(jpy "$(nk_run_nkctl -j nsm show nsm3)" 'j["busy_poll"]')" 50
check_eq "nsm1 does not busy-poll" "$(jpy "$(nk_run_nkctl -j nsm show nsm1)" 'j["busy_poll"]')" 0
check "nsm3's nk-nsm runs with --busy-poll=50" nk_nsm_has_opt "$NSM3_PID" --busy-poll=50
check "nkd.json keeps busy_poll 50 for nsm3" bash -c \
	"grep -A8 '\"nsm3\"' $NK_TMP/state/nkd.json | grep -q '\"busy_poll\": *50'"

log_step "traffic through the busy-polling NSM"
nk_echo_server "$R" 10.75.0.1 7100
nk_echo_server "$R" 10.77.0.1 7100
cat >"$NK_TMP/client.py" <<'PY'
import hashlib, os, socket, sys, time
host, n = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, 7100))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t0 = time.monotonic()
for i in range(n):
    s.sendall(b"x" * 32)
    got = b""
    while len(got) < 32:
        got += s.recv(32 - len(got))
rtt = (time.monotonic() - t0) / n * 1e6
blob = os.urandom(16 << 20)
def pump():
    got = bytearray()
    while len(got) < len(blob):
        got += s.recv(1 << 20)
    return bytes(got)
import threading
res = {}
t = threading.Thread(target=lambda: res.setdefault("b", pump()))
t.start()
s.sendall(blob)
t.join()
ok = hashlib.sha256(res["b"]).hexdigest() == hashlib.sha256(blob).hexdigest()
s.close()
conns = 0
for i in range(200):
    c = socket.create_connection((host, 7100))
    c.sendall(b"hi")
    conns += c.recv(2) == b"hi"
    c.close()
print("rtt_us %.1f bulk %s conns %d" % (rtt, "ok" if ok else "BAD", conns), flush=True)
PY
rtt_cpu()	# G HOST NSM_PID: the client's output, then the NSM's CPU us per round trip
{
	local g=$1 host=$2 pid=$3 t0 t1 out
	t0=$(nk_proc_cpu_ticks "$pid")
	out=$(nk_guest "$g" "$NK_PY" "$NK_TMP/client.py" "$host" 3000)
	t1=$(nk_proc_cpu_ticks "$pid")
	echo "$out cpu_ticks $((t1 - t0))"
}
out3=$(rtt_cpu g3 10.75.0.1 "$NSM3_PID")
out1=$(rtt_cpu g1 10.77.0.1 "$NK_NSM_PID")
log_info "busy-poll 50: $out3"
log_info "no busy-poll: $out1"
check "round trips, 16 MiB both ways and 200 connections through nsm3" \
	grep -q 'bulk ok conns 200' <<<"$out3"
check "the same through nsm1" grep -q 'bulk ok conns 200' <<<"$out1"
check "the guest has no TCP socket of its own" test -z "$(ip netns exec "g3-$S" ss -Htan)"

log_step "spinning only while traffic flows"
nk_hold_idle g3 10.75.0.1 50 "bp-$S"
sleep 1
t0=$(nk_proc_cpu_ticks "$NSM3_PID")
sleep 3
t1=$(nk_proc_cpu_ticks "$NSM3_PID")
log_info "nsm3 idle with 50 connections: $((t1 - t0)) ticks of CPU over 3 s"
# 1% of a core over 3 s is 3 ticks at 100 Hz
check "idle: nsm3 used under 1% of a core over 3 s ($((t1 - t0)) ticks)" test $((t1 - t0)) -lt 3
nk_stop "$NK_HOLD_PID"

nk_finish
