#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# nkd as an operator meets it, with --uplink: the names nkd gives the NSMs
# it creates, the namespaces it takes, and a state file it cannot write.
#
#  1. host-side veth names: an NSM whose name is too long for nkh-NAME gets
#     nkh-ID; an NSM named after that id must not get the same veth (nkd
#     would re-create the pair and take the first NSM's veth away).  The
#     second one is refused with a message naming nkh-ID and the other
#     NSM; a long name whose nkh-ID is another NSM's nkh-NAME gets another
#     id.  Every NSM keeps its own veth.
#  2. an operator's namespace nk-NAME (ip netns add) is not nkd's: "nsm
#     add NAME" is refused, naming it, and the namespace survives (an "nsm
#     del NAME" afterwards too).
#  3. nkd.json cannot be written (nkd.json.tmp is a directory): vm add, vm
#     del and nsm add still succeed (exit 0), nkctl prints a warning
#     naming the file, and -j stdout stays one JSON document.  Once the
#     directory is gone the next change persists everything.
#  4. an nkd restart still adopts the namespaces and veths it created.
#  5. nsm add of an NSM an earlier nkd left running adopts it.
#  6. 64 idle root clients on the control socket: nkctl still answers
#     (nkd closes the one idle the longest).
#  0. (first) nkd --uplink with no such interface exits before it pins a map.
#
#   remote-$S                 root namespace
#   eth0 ------------------- nku-$S (uplink)   nkd --uplink nku-$S
#                             nkh-0, nkh-2, nkh-3, nkh-c-$S <-> eth0 in nk-NAME

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
for f in nkd nkctl nk-nsm; do
	[ -x "$OUTPUT/$f" ] || nk_die "$OUTPUT/$f is missing (run make)"
done

UP=nku-$S
PIN=/sys/fs/bpf/nk-ops-$S
# nkh-ID names are ids, not this test's: the short names must be ids too
# 31 characters (the most a name has): nkh-NAME does not fit, nkh-ID
LONG=$(printf 'long-%s-%s' "$S" aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | cut -c1-31)
LONG2=$(printf 'long2-%s-%s' "$S" bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb | cut -c1-31)
NC=c-$S
OP=op-$S
for n in 0 1 2 3 4; do
	ip link show "nkh-$n" >/dev/null 2>&1 && nk_skip "interface nkh-$n exists (not this test's)"
	[ -e "/run/netns/nk-$n" ] && nk_skip "netns nk-$n exists (not this test's)"
done
NK_NKD_ARGS=(--uplink "$UP" --pin-dir "$PIN")
nk_uplink_cleanup "$PIN" "$UP" 0 1 2 3 4 "$NC" "$OP"

# nsm_field NSM FIELD: one field of "nkctl -j nsm show NSM"
nsm_field()
{
	nkctl -j nsm show "$1" 2>/dev/null |
		"$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# veth_intact NSM: NSM's host-side veth exists and its peer is eth0 in nk-NSM
veth_intact()
{
	local hd peer
	hd=$(nsm_field "$1" hostdev) || return 1
	peer=$(ip -j link show dev "$hd" 2>/dev/null |
		"$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)[0].get("link_index", ""))') ||
		return 1
	[ -n "$peer" ] && ip -n "nk-$1" -j link show dev eth0 2>/dev/null |
		"$NK_PY" -c 'import json, sys; sys.exit(json.load(sys.stdin)[0]["ifindex"] != int(sys.argv[1]))' "$peer"
}

# nsm_ok NSM: running, with its veth intact
nsm_ok()
{
	nk_nsm_running "$1" && veth_intact "$1"
}

nsm_absent()
{
	! nkctl nsm show "$1" >/dev/null 2>&1
}

# hostdevs_distinct: no two NSMs of nkd share a host-side veth name
hostdevs_distinct()
{
	nkctl -j nsm list | "$NK_PY" -c '
import json, sys
h = [n["hostdev"] for n in json.load(sys.stdin) if n.get("managed")]
print(" ".join(h), file=sys.stderr)
sys.exit(len(h) != len(set(h)))'
}

# op_keep0: the operator's namespace still has the veth the operator made
op_keep0()
{
	ip -n "nk-$OP" link show keep0 >/dev/null 2>&1
}

is_json()
{
	"$NK_PY" -c 'import json, sys; json.loads(sys.argv[1])' "$1" 2>/dev/null
}

# ---------------------------------------------------------------- topology
log_step "topology (suffix $S): uplink $UP, nkd --uplink"
nk_mount_bpffs
nk_netns_add "remote-$S"
# nkd creates these (and, without the fixes, nk-0); removed if a run fails
NK_NETNS+=("nk-$LONG" "nk-$LONG2" "nk-0" "nk-2" "nk-$NC")
ip link add "$UP" type veth peer name eth0 netns "remote-$S" ||
	nk_die "cannot create the uplink veth pair"
ip -n "remote-$S" link set eth0 up
ip link set "$UP" up
nk_uplink_far_end "remote-$S" eth0

log_step "0. nkd --uplink with an interface that does not exist pins nothing"
BADPIN=/sys/fs/bpf/nk-bad-$S
out=$(timeout 10 "$OUTPUT/nkd" --foreground --uplink "nosuch-$S" --pin-dir "$BADPIN" \
	--control "$NK_TMP/bad.sock" --state-dir "$NK_TMP/bad-state" --run-dir "$NK_TMP/bad-run" \
	--no-vsock 2>&1)
rc=$?
check_eq "nkd --uplink nosuch-$S: exit status" "$rc" 1
check "... naming the interface (got: $out)" grep -qF "uplink nosuch-$S: no such interface" <<<"$out"
check "... and no map pinned in $BADPIN" test ! -e "$BADPIN/vms"
rm -rf "$BADPIN"

nk_start_nkd

# ---------------------------------------------------------------- 1. names
log_step "1. host-side veth names never collide"
nk_run_nkctl nsm add "$LONG" type kernel >/dev/null
NK_NSMS+=("$LONG")
check_eq "a 31-character name gets the fallback nkh-ID" "$(nsm_field "$LONG" hostdev)" nkh-0
check "$LONG: veth intact" veth_intact "$LONG"
run_ctl nsm add 0 type kernel
[ "$RC" -eq 0 ] && NK_NSMS+=(0)
check_eq "nsm add 0 (whose nkh-0 is $LONG's) is refused: exit status" "$RC" 1
check "... saying which veth and whose (got: $ERR)" \
	grep -q "nsm 0: its host-side veth nkh-0 is already nsm $LONG's" <<<"$ERR"
check "... and nsm 0 does not exist" nsm_absent 0
check "$LONG: still running" nk_nsm_running "$LONG"
check "$LONG: veth still intact" veth_intact "$LONG"
check "nkd did not re-create a pair" not_grep -q "re-creating the pair" "$NK_NKD_LOG"

# the other order: "2" first (id 1, nkh-2); a long name must not get id 2
nk_run_nkctl nsm add 2 type kernel >/dev/null
NK_NSMS+=(2)
run_ctl nsm add "$LONG2" type kernel
[ "$RC" -eq 0 ] && NK_NSMS+=("$LONG2")
check_eq "nsm add $LONG2 succeeds (got: $ERR)" "$RC" 0
check_eq "nsm 2 gets id 1, veth nkh-2" "$(nsm_field 2 id) $(nsm_field 2 hostdev)" "1 nkh-2"
check_eq "$LONG2 skips id 2 (nkh-2 is nsm 2's): id 3, nkh-3" \
	"$(nsm_field "$LONG2" id) $(nsm_field "$LONG2" hostdev)" "3 nkh-3"
for n in "$LONG" 2 "$LONG2"; do
	check "$n: running, veth intact" nsm_ok "$n"
done
check "no two NSMs share a host-side veth ($(hostdevs_distinct 2>&1))" hostdevs_distinct 2>/dev/null
check "still no pair re-created" not_grep -q "re-creating the pair" "$NK_NKD_LOG"

# ---------------------------------------------------------------- 2. netns
log_step "2. an operator's namespace nk-$OP is not nkd's"
nk_netns_add "nk-$OP"
ip -n "nk-$OP" link add keep0 type veth peer name keep1 || nk_die "cannot add keep0 to nk-$OP"
run_ctl nsm add "$OP" type kernel
[ "$RC" -eq 0 ] && NK_NSMS+=("$OP")
check_eq "nsm add $OP is refused: exit status" "$RC" 1
check "... naming the namespace (got: $ERR)" \
	grep -q "nsm $OP: netns nk-$OP exists already and is not nkd's" <<<"$ERR"
# without the fix this is where the operator's namespace would go
nkctl nsm del "$OP" >/dev/null 2>&1
check "nk-$OP survives (nsm add, nsm del)" test -e "/run/netns/nk-$OP"
check "... with the operator's keep0 in it" op_keep0
check "... and no nk-nsm in it" nk_ns_empty "nk-$OP"

# ---------------------------------------------------------------- 3. state
log_step "3. a state file nkd cannot write is reported"
mkdir "$NK_STATE/nkd.json.tmp"
WARN="nkctl: warning: cannot write the state file $NK_STATE/nkd.json"
run_ctl vm add vm1 nsm "$LONG" addr 10.77.9.2/24 uds "$NK_TMP/vm1.vsock"
check_eq "vm add: succeeds (exit status)" "$RC" 0
check "vm add: warns that nkd.json is not written (got: $ERR)" grep -qF "$WARN" <<<"$ERR"
check "nkd.json does not list vm1" not_grep -q '"vm1"' "$NK_STATE/nkd.json"
run_ctl -j vm del vm1
check_eq "vm del -j: succeeds (exit status)" "$RC" 0
check "vm del -j: warns on stderr (got: $ERR)" grep -qF "$WARN" <<<"$ERR"
check "vm del -j: stdout is JSON (got: $OUT)" is_json "$OUT"
# nsm add answers after the NSM's HELLO: the deferred reply warns too
run_ctl -j nsm add "$NC" type kernel
[ "$RC" -eq 0 ] && NK_NSMS+=("$NC")
check_eq "nsm add -j: succeeds (exit status)" "$RC" 0
check "nsm add -j: warns on stderr (got: $ERR)" grep -qF "$WARN" <<<"$ERR"
check "nsm add -j: stdout is JSON" is_json "$OUT"
rmdir "$NK_STATE/nkd.json.tmp"
run_ctl vm add vm1 nsm "$LONG" addr 10.77.9.2/24 uds "$NK_TMP/vm1.vsock"
check_eq "state dir fixed: vm add succeeds" "$RC" 0
check_eq "... without a warning" "$ERR" ""
check "... and nkd.json has vm1 and $NC" \
	bash -c "grep -q '\"vm1\"' '$NK_STATE/nkd.json' && grep -q '\"$NC\"' '$NK_STATE/nkd.json'"

# ---------------------------------------------------------------- 4. restart
log_step "4. a restarted nkd adopts what it created"
nk_stop "$NKD_PID"
NK_NKD_LOG=$NK_TMP/nkd-2.log
nk_start_nkd
for n in "$LONG" 2 "$LONG2" "$NC"; do
	check "after the restart, $n: running" wait_for -t 10 nk_nsm_running "$n"
	check_eq "after the restart, $n: adopted" "$(nsm_field "$n" adopted)" True
	check "after the restart, $n: veth intact" veth_intact "$n"
done
check "after the restart: no refusal, no pair re-created" \
	not_grep -qE "re-creating the pair|exists already|is already nsm" "$NK_NKD_LOG"
check "after the restart: vm1 restored" wait_for -t 1 nkctl vm show vm1
nk_run_nkctl vm del vm1 >/dev/null
check "nk-$OP and its keep0 still there" op_keep0

# ---------------------------------------------------------------- 5. adopt
log_step "5. nsm add of an NSM an earlier nkd left running adopts it"
# nkd.json lost $NC while nkd was down (a hand edit): its nk-nsm still runs
# in nk-$NC, which exists, but it is nkd's own NSM: nsm add adopts it.
NC_PID=$(nsm_field "$NC" pid)
nk_stop "$NKD_PID"
"$NK_PY" - "$NK_STATE/nkd.json" "$NC" <<'PY'
import json, sys
p = sys.argv[1]
j = json.load(open(p))
j["nsms"] = [n for n in j["nsms"] if n["name"] != sys.argv[2]]
json.dump(j, open(p, "w"), indent=2)
PY
NK_NKD_LOG=$NK_TMP/nkd-3.log
nk_start_nkd
check "$NC is unknown to the restarted nkd" nsm_absent "$NC"
run_ctl nsm add "$NC" type kernel
check_eq "nsm add $NC succeeds (got: $ERR)" "$RC" 0
check_eq "... adopting the running nk-nsm" "$(nsm_field "$NC" adopted) $(nsm_field "$NC" pid)" \
	"True $NC_PID"

# ---------------------------------------------------------------- 6. clients
log_step "6. idle clients holding every control slot do not lock the operator out"
# A root process connects 64 times and says nothing (before: every slot
# taken, nkctl refused until it went).  nkd closes the client idle the
# longest, for a newcomer that finds no free slot, and says so; the others
# stay connected.
HOLD_READY=$NK_TMP/hold.ready
HOLD_OUT=$NK_TMP/hold.out
cat >"$NK_TMP/hold.py" <<'PY'
import os, socket, sys, time
path, ready, out = sys.argv[1:4]
socks = []
for _ in range(64):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    socks.append(s)
    time.sleep(0.005)	# connected in order: the first is idle the longest
open(ready, "w").close()
while True:
    closed = []
    for i, s in enumerate(socks):
        try:
            if s.recv(1, socket.MSG_DONTWAIT) == b"":
                closed.append(i)
        except BlockingIOError:
            pass
    with open(out + ".tmp", "w") as f:
        f.write(" ".join(map(str, closed)) + "\n")
    os.rename(out + ".tmp", out)
    time.sleep(0.1)
PY
nk_bg - "$NK_TMP/hold.log" "$NK_PY" "$NK_TMP/hold.py" "$NK_CTL" "$HOLD_READY" "$HOLD_OUT"
HOLD_PID=$NK_BG_PID
check "64 idle clients connected" wait_for -t 10 test -e "$HOLD_READY"
run_ctl nsm list
check_eq "nkctl answers with every slot held (got: $ERR)" "$RC" 0
check "nkd names the client it closed" grep -qE \
	"control socket: 64 nkctl clients connected; closing pid $HOLD_PID's, idle for [0-9]+ ms, for pid [0-9]+" \
	"$NK_NKD_LOG"
run_ctl vm list
check_eq "and again (got: $ERR)" "$RC" 0
closed_are() { [ "$(cat "$HOLD_OUT" 2>/dev/null)" = "$1" ]; }
# the first nkctl's slot was free again for the second one
check "the one idle the longest was closed, the other 63 stay" wait_for -t 5 closed_are 0
nk_stop "$HOLD_PID"

nk_finish
