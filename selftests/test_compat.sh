#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# Version skew: this guest library against the NSM of NetKernel 0.1.0
# (commit b55226a, before NK_HELLO_F_SETUP).  Guests install their package
# on their own schedule, so a newer library must keep working with the
# host's older NSM: the old NSM closes a pipelined set-up unanswered, and
# the library falls back to one request at a time for the rest of the
# process (saying so once); the same for a control channel that would post
# options (NK_HELLO_F_POST).  The old nk-nsm is built from git history into
# the test's temporary directory; without the history the test is skipped.
# Then nkd against an nk-nsm that reports its settings but is older than
# --notsent-lowat (77e9669): that setting is not checked.

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

OLD=b55226a
nk_require_root
nk_require_build
command -v git >/dev/null || nk_skip "no git"
git -C "$NK_SRCDIR" cat-file -e "$OLD^{commit}" 2>/dev/null ||
	nk_skip "commit $OLD (NetKernel 0.1.0) is not in this clone's history"

log_step "build nk-nsm of $OLD"
git -C "$NK_SRCDIR" archive "$OLD" | tar -x -C "$NK_TMP" --one-top-level=old ||
	nk_die "cannot extract $OLD"
make -s -C "$NK_TMP/old" OUTPUT="$NK_TMP/old/build" "$NK_TMP/old/build/nk-nsm" \
	>"$NK_TMP/old-build.log" 2>&1 || { cat "$NK_TMP/old-build.log"; nk_die "cannot build nk-nsm of $OLD"; }
check "old nk-nsm built" test -x "$NK_TMP/old/build/nk-nsm"

NK_NKD_ARGS=(--nsm-bin "$NK_TMP/old/build/nk-nsm")
nk_topo_up
check "the NSM running is the old binary" bash -c \
	"[ \"\$(readlink -f /proc/$NK_NSM_PID/exe)\" = \"$(readlink -f "$NK_TMP/old/build/nk-nsm")\" ]"
check_eq "nkd: the old NSM reports no settings (running null), not a difference" \
	"$(nk_run_nkctl -j nsm show nsm1 | "$NK_PY" -c 'import json, sys; j = json.load(sys.stdin); print(j["running"], j["config_differs"])')" \
	"None False"
check "nkd logs that it is not checked" grep -q \
	"nsm nsm1 (pid $NK_NSM_PID): an older nk-nsm that does not report its settings; not checked" "$NK_NKD_LOG"

nk_bg "remote-$S" "$NK_TMP/cps-s.log" "$OUTPUT/bench/nk_cps" serve 7000
check "remote server listens" wait_port "remote-$S" 10.77.0.1 7000

log_step "connects through the old NSM"
out=$(nk_guest g1 env NK_LOG=1 "$NK_PY" -c '
import socket
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.connect(("10.77.0.1", 7000))
print("peer", s.getpeername()[1], "nodelay", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
print("cork", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK))
s2 = socket.socket()
try:
    s2.connect(("10.77.0.1", 9))
except OSError as e:
    print("refused", e.errno)
' 2>&1)
echo "$out" | sed 's/^/  /'
check "first connect works (option set before it applied)" grep -q '^peer 7000 nodelay 1' <<<"$out"
check "a refused connect says ECONNREFUSED" grep -q '^refused 111' <<<"$out"
check_eq "the library said once that it falls back" \
	"$(grep -c 'does not take pipelined set-up requests' <<<"$out")" 1
check "TCP_CORK after connect: waited for, applied (the old NSM takes no posted options)" \
	grep -q '^cork 1' <<<"$out"
check_eq "the library said once that it waits for every option" \
	"$(grep -c 'does not take posted options' <<<"$out")" 1
out=$(nk_guest g1 "$OUTPUT/bench/nk_cps" connect -t 2 10.77.0.1 7000 1 2>&1)
check "many connections, no error" grep -Eq '^cps=[0-9.]+ conns=[1-9][0-9]* errors=0' <<<"$out"
log_info "$out"

log_step "accepts through the old NSM (no ACCEPT_OFFER records: the library waits for the claim's reply)"
nk_guest_bg g1 "$NK_TMP/srv.log" env NK_LOG=1 "$NK_PY" -c '
import socket, sys
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 8080))
l.listen(4)
print("listening", flush=True)
for i in range(2):
    a, peer = l.accept()
    a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("accepted", peer[0], a.getsockname()[1], a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), flush=True)
    a.sendall(b"hi " + a.recv(16))
    a.close()
'
check "guest server listens" wait_for -t 10 grep -q listening "$NK_TMP/srv.log"
for i in 1 2; do
	got=$(ip netns exec "remote-$S" "$NK_PY" -c '
import socket
s = socket.create_connection(("10.77.0.2", 8080), timeout=5)
s.sendall(b"there")
print(s.recv(16).decode())' 2>&1)
	check_eq "accepted connection $i answers" "$got" "hi there"
done
wait_for -t 5 bash -c "[ \$(grep -c ^accepted '$NK_TMP/srv.log') -ge 2 ]"
sed 's/^/  /' "$NK_TMP/srv.log"
check_eq "both accepted with the peer, the port and the option" \
	"$(grep -c '^accepted 10.77.0.1 8080 1' "$NK_TMP/srv.log")" 2
check_eq "the library said once that the NSM offers nothing" \
	"$(grep -c 'does not offer accepted connections' "$NK_TMP/srv.log")" 1

# An nk-nsm that reports its settings but is older than --notsent-lowat
# (struct nsm_hello_run without nsm_hello_run2): nkd checks what it
# reports and not that setting, which it neither shows nor counts as a
# difference.  nkd is stopped (its NSM keeps running), the NSM stopped,
# and nkd started again with that binary and --config (a copy of its
# nkd.json): it starts nsm1 anew.  A SIGHUP that asks for another
# notsent_lowat then says that this nk-nsm does not report it.
OLD2=77e9669
log_step "an nk-nsm from before notsent_lowat ($OLD2): its settings checked, that one not"
if git -C "$NK_SRCDIR" cat-file -e "$OLD2^{commit}" 2>/dev/null &&
	git -C "$NK_SRCDIR" archive "$OLD2" | tar -x -C "$NK_TMP" --one-top-level=old2 &&
	make -s -C "$NK_TMP/old2" OUTPUT="$NK_TMP/old2/build" "$NK_TMP/old2/build/nk-nsm" \
		>"$NK_TMP/old2-build.log" 2>&1; then
	nk_stop "$NKD_PID"
	nk_stop "$NK_NSM_PID"
	cp "$NK_STATE/nkd.json" "$NK_TMP/old2.json"
	NK_NKD_ARGS=(--nsm-bin "$NK_TMP/old2/build/nk-nsm" --config "$NK_TMP/old2.json")
	NK_NKD_LOG=$NK_TMP/nkd-old2.log
	nk_start_nkd
	old2_running()
	{
		local p
		p=$(nk_nsm_pid "nsm-$S") &&
			[ "$(readlink -f "/proc/$p/exe")" = "$(readlink -f "$NK_TMP/old2/build/nk-nsm")" ] &&
			[ "$(jpy "$(nk_run_nkctl -j nsm show nsm1)" 'j["running"] is not None')" = True ]
	}
	check "nsm1 runs the $OLD2 binary and has reported" wait_for -t 10 old2_running
	OUT=$(nk_run_nkctl -j nsm show nsm1)
	check_eq "nsm show: configured notsent_lowat, running without it, no difference" \
		"$(jpy "$OUT" 'j["notsent_lowat"], "notsent_lowat" in j["running"], j["running"]["relay"], j["config_differs"]')" \
		"(131072, False, 'splice', False)"
	check "nkd found nothing that differs" bash -c "! grep -q 'does not run as configured' '$NK_NKD_LOG'"
	sed -i 's/"notsent_lowat": *131072/"notsent_lowat": 262144/' "$NK_TMP/old2.json"
	check "the config asks for notsent_lowat 262144" grep -q '"notsent_lowat": *262144' "$NK_TMP/old2.json"
	kill -HUP "$NKD_PID"
	check "SIGHUP: nkd says this nk-nsm does not report notsent_lowat" wait_for -t 5 grep -qF \
		"SIGHUP: nsm nsm1: notsent_lowat changed in $NK_TMP/old2.json (262144; running: not reported by this nk-nsm); not applied (delete and add it again)" \
		"$NK_NKD_LOG"
else
	check "nk-nsm of $OLD2 built" false
	sed 's/^/  /' "$NK_TMP/old2-build.log" 2>/dev/null | tail -n 20
fi

nk_finish
