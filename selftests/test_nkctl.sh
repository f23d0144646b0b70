#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# nkctl and nkd: the grammar (prefixes, any order, usage errors with exit
# 2), every validation error path of "nsm add" and "vm add" against a real
# nkd and a real nk-nsm (exit 1, a message naming the problem, and nothing
# changed: vm list, nsm list and nkd.json identical before and after), the
# root-only control socket, -j output, cid VMs with --no-vsock, nsm del
# refusal, an NSM crash (restarted, VMs pushed again), an nkd restart (NSM
# adopted, not restarted), and --config (a bad file refuses to start).
#
# Topology: one NSM namespace nsm-$S with a veth (up0) whose peer lives in
# peer-$S.  No guest traffic: test_tcp_path.sh covers the data path.

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds setpriv
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
for f in nkd nkctl nk-nsm; do
	[ -x "$OUTPUT/$f" ] || nk_die "$OUTPUT/$f is missing (run make)"
done

NKCTL=$OUTPUT/nkctl
# The test checks the options nkd gives its NSM and what the NSM reports it
# runs with: NK_NKD_EXTRA_ARGS (an --nsm-arg) would change both.
NK_NKD_ARGS=()

# snapshot: everything an error must leave unchanged.
snapshot()
{
	"$NKCTL" -c "$NK_CTL" -j vm list 2>&1
	"$NKCTL" -c "$NK_CTL" -j nsm list 2>&1
	md5sum <"$NK_STATE/nkd.json" 2>&1
	ls -l "$NK_TMP/guests" 2>&1
}

# expect_fail RC PATTERN ARGS...: nkctl ARGS exits RC, says PATTERN on
# stderr (one line first), prints nothing on stdout, and changes nothing.
expect_fail()
{
	local want_rc=$1 pat=$2 before after desc
	shift 2
	desc="nkctl $*"
	[ ${#desc} -gt 90 ] && desc="${desc:0:87}..."
	before=$(snapshot)
	run_ctl "$@"
	after=$(snapshot)
	if [ "$RC" != "$want_rc" ] || ! grep -qF -- "$pat" <<<"$ERR" || [ -n "$OUT" ] ||
	   [ "$before" != "$after" ]; then
		nk_fail "$desc: want exit $want_rc, '$pat', no change; got exit $RC"
		echo "    stderr: $ERR"
		[ -z "$OUT" ] || echo "    stdout: $OUT"
		[ "$before" = "$after" ] || diff <(echo "$before") <(echo "$after") | sed 's/^/    /'
		return 1
	fi
	nk_pass "$desc -> exit $RC: $(head -n 1 <<<"$ERR")"
}

# expect_ok ARGS...: nkctl ARGS succeeds.
expect_ok()
{
	run_ctl "$@"
	if [ "$RC" -ne 0 ]; then
		nk_fail "nkctl $*: exit $RC: $ERR"
		return 1
	fi
	nk_pass "nkctl $*"
}

# jget JSON EXPR: evaluate a python expression on the parsed JSON (j).
jget()
{
	"$NK_PY" -c 'import json, sys; j = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}

nsm_pid()
{
	"$NKCTL" -c "$NK_CTL" -j nsm show nsm1 2>/dev/null |
		"$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["pid"])'
}

nsm_running()
{
	[ "$("$NKCTL" -c "$NK_CTL" -j nsm show nsm1 2>/dev/null |
		"$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["state"])')" = running ]
}

# ---------------------------------------------------------------- grammar
log_step "grammar (no nkd needed)"
NK_CTL=$NK_TMP/nobody-here.sock
run_ctl help
check_eq "nkctl help: exit" "$RC" 0
check "help shows the vm add grammar" grep -qF \
	"nkctl vm add NAME nsm NSM addr ADDR/PREFIX[,ADDR/PREFIX...] (uds PATH | cid N) [gw ADDR]..." <<<"$OUT"
check "help lists the reserved conn verbs after conn list" grep -qF \
	"nkctl conn { show | del } ...   (not implemented yet)" <<<"$OUT"
run_ctl conn help
check "conn help too" grep -qF "nkctl conn { show | del } ...   (not implemented yet)" <<<"$OUT"
run_ctl vm help
check_eq "nkctl vm help: exit" "$RC" 0
check "vm help lists vm show" grep -qF "nkctl vm show NAME" <<<"$OUT"
run_ctl
check_eq "nkctl without arguments: exit" "$RC" 2

G=(nsm nsm1 addr 10.0.0.2/24 uds /tmp/x)
expect_fail 2 "unknown object 'frob'" frob list
expect_fail 2 "unknown verb 'frob' for 'vm'" vm frob
expect_fail 2 "ambiguous verb 's' (set, show)" policy s
expect_fail 2 "missing NAME" vm add
expect_fail 2 "unknown keyword 'colour'" vm add vm9 "${G[@]}" colour red
expect_fail 2 "Usage: nkctl vm add NAME nsm NSM" vm add vm9 "${G[@]}" colour red
expect_fail 2 "keyword 'nsm' given twice" vm add vm9 "${G[@]}" nsm nsm2
expect_fail 2 "keyword 'gw' needs a value" vm add vm9 "${G[@]}" gw
expect_fail 2 "missing 'addr ADDR/PREFIX" vm add vm9 nsm nsm1 uds /tmp/x
expect_fail 2 "missing one of 'uds PATH' or 'cid N'" vm add vm9 nsm nsm1 addr 10.0.0.2/24
expect_fail 2 "give only one of 'uds PATH' or 'cid N'" vm add vm9 "${G[@]}" cid 5
expect_fail 2 "cid wants a number, not 'five'" vm add vm9 nsm nsm1 addr 10.0.0.2/24 cid five
expect_fail 2 "empty element" vm add vm9 nsm nsm1 addr 10.0.0.2/24,,10.0.0.3/24 uds /tmp/x
expect_fail 2 "unexpected argument 'extra'" vm list extra
expect_fail 1 "'policy add' is not implemented yet" policy add
expect_fail 2 "missing 'drop-all on|off'" policy set vm1
expect_fail 1 "'conn del' is not implemented yet" conn del
expect_fail 1 "'conn show' is not implemented yet" conn sh
expect_fail 2 "'netns NETNS' and 'dev IFNAME' go together" nsm add nsm9 type kernel netns x
expect_fail 2 "'netns NETNS' and 'dev IFNAME' go together" nsm add nsm9 type kernel dev eth0
expect_fail 2 "unknown keyword 'cid' for 'stats show'" stats show cid 3
expect_fail 2 "give only one of 'vm NAME' or 'nsm NAME'" stats show vm a nsm b
expect_fail 2 "say 'teardown' in full" teard
expect_fail 2 "unexpected argument 'now'" teardown now
expect_fail 1 "is nkd running?" vm list

# ---------------------------------------------------------------- nkd
log_step "nkd with a real nk-nsm"
nk_netns_add "nsm-$S"
nk_netns_add "peer-$S"
nk_veth "nsm-$S" up0 "peer-$S" eth0
mkdir -p "$NK_TMP/guests"
NK_CTL=$NK_TMP/nkd.sock
nk_start_nkd
check_eq "control socket mode" "$(stat -c %a "$NK_CTL")" 600

log_step "root-only control socket"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$NKCTL" -c "$NK_CTL" vm list 2>&1)
rc=$?
check_eq "nobody: nkctl vm list exit" "$rc" 1
check "nobody: told to run as root" grep -q "must run as root" <<<"$out"
chmod 0666 "$NK_CTL"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$NKCTL" -c "$NK_CTL" vm list 2>&1)
rc=$?
chmod 0600 "$NK_CTL"
check_eq "nobody through a 0666 socket: exit" "$rc" 1
check "nobody through a 0666 socket: refused by SO_PEERCRED" grep -q "root only" <<<"$out"

log_step "nsm add: errors, then success"
expect_fail 1 "type xdp not supported yet" nsm add nsm1 type xdp netns "nsm-$S" dev up0
expect_fail 1 "netns nope-$S does not exist" nsm add nsm1 type kernel netns "nope-$S" dev up0
expect_fail 1 "dev nope0 does not exist in netns nsm-$S" nsm add nsm1 type kernel netns "nsm-$S" dev nope0
expect_fail 1 "is not a valid interface name" nsm add nsm1 type kernel netns "nsm-$S" dev 0123456789abcdefgh
expect_fail 1 "nsm name 'a/b' is invalid" nsm add a/b type kernel netns "nsm-$S" dev up0
expect_fail 1 "only when it runs with --uplink IFNAME" nsm add nsm1 type kernel
expect_fail 1 "relay 'bogus' is not splice or kernel" nsm add nsm1 type kernel netns "nsm-$S" dev up0 relay bogus
expect_fail 1 "nkd steers no uplink" stats show
# prefixes everywhere, keywords in any order
expect_ok n a nsm1 d up0 t kernel n "nsm-$S"
NK_NSMS+=(nsm1)
check "nsm1 is running" nsm_running
NSM_PID=$(nsm_pid)
check "nsm1 runs nk-nsm in nsm-$S" test "$(nk_nsm_pid "nsm-$S")" = "$NSM_PID"
check "nsm1 control socket" test -S "$NK_RUN/nsm-nsm1.sock"
check_eq "nsm1 relays with splice (the default)" \
	"$(jpy "$(nk_run_nkctl -j nsm show nsm1)" 'j["relay"]')" splice
check "nsm1 runs without --kernel-relay" bash -c "! tr '\\0' ' ' </proc/$NSM_PID/cmdline | grep -q kernel-relay"
expect_fail 1 "nsm nsm1 already exists" nsm add nsm1 type kernel netns "nsm-$S" dev up0

log_step "vm add: success"
expect_ok v a vm1 u "$NK_TMP/guests/vm1.vsock" a 10.78.0.2/24,fd78::2/64 g 10.78.0.1 n nsm1
check "vm1 listener is a socket" test -S "$NK_TMP/guests/vm1.vsock_7531"
check_eq "vm1 listener mode" "$(stat -c %a "$NK_TMP/guests/vm1.vsock_7531")" 666
check "vm1 addresses on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.2
check "vm1 IPv6 address on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 fd78::2
run_ctl -j vm add vm2 nsm nsm1 addr 10.78.0.3/24 uds "$NK_TMP/guests/vm2.vsock"
check_eq "vm add -j: exit" "$RC" 0
check_eq "vm add -j prints the vm (transport)" "$(jget "$OUT" 'j["transport"]')" \
	"unix:$NK_TMP/guests/vm2.vsock_7531"
run_ctl vm show vm1
check "vm show: hybrid path" grep -qE "^listen +$NK_TMP/guests/vm1.vsock_7531\$" <<<"$OUT"
check "vm show: guest transport" grep -qE "^transport +unix:$NK_TMP/guests/vm1.vsock_7531\$" <<<"$OUT"
check "vm show: gw" grep -qE "^gw +10.78.0.1\$" <<<"$OUT"
run_ctl vm list
check "vm list: table header" grep -qE "^NAME +ID +NSM +ADDRESSES" <<<"$OUT"
check "vm list: vm1 row" grep -qE "^vm1 +1 +nsm1 +10.78.0.2/24,fd78::2/64 +10.78.0.1 " <<<"$OUT"
run_ctl -j nsm show nsm1
check_eq "nsm show -j: vms" "$(jget "$OUT" '",".join(j["vms"])')" "vm1,vm2"
check "nkd.json lists vm1" grep -q '"vm1"' "$NK_STATE/nkd.json"

log_step "one nkd per state dir"
out=$(timeout 10 "$OUTPUT/nkd" --foreground --control "$NK_TMP/other.sock" --state-dir "$NK_STATE" \
	--run-dir "$NK_TMP/other-run" --no-vsock --nsm-bin "$OUTPUT/nk-nsm" 2>&1)
rc=$?
check_eq "a second nkd on the same state dir: exit" "$rc" 1
check "it says why" grep -qF "another nkd uses the state dir $NK_STATE" <<<"$out"
out=$(timeout 10 "$OUTPUT/nkd" --control "$NK_TMP/other.sock" --state-dir "$NK_STATE" \
	--run-dir "$NK_TMP/other-run" --no-vsock --nsm-bin "$OUTPUT/nk-nsm" 2>&1)
rc=$?
check_eq "... also as a daemon: exit" "$rc" 1
check "... saying why on its own stderr" grep -qF "another nkd uses the state dir $NK_STATE" <<<"$out"
check "the first nkd still answers" nkctl vm show vm1
check "vm1 keeps its socket" test -S "$NK_TMP/guests/vm1.vsock_7531"

log_step "vm add: every error leaves everything unchanged"
V=(nsm nsm1 uds "$NK_TMP/guests/vm9.vsock")
expect_fail 1 "bad address '10.78.0.300/24'" vm add vm9 "${V[@]}" addr 10.78.0.300/24
expect_fail 1 "bad address '10.78.0.9/33'" vm add vm9 "${V[@]}" addr 10.78.0.9/33
expect_fail 1 "bad address '10.78.0.9'" vm add vm9 "${V[@]}" addr 10.78.0.9
expect_fail 1 "bad address 'fd78::zz/64'" vm add vm9 "${V[@]}" addr fd78::zz/64
expect_fail 1 "nsm nsmX does not exist" vm add vm9 nsm nsmX addr 10.78.0.9/24 uds "$NK_TMP/guests/vm9.vsock"
expect_fail 1 "vm vm1 already exists" vm add vm1 "${V[@]}" addr 10.78.0.9/24
expect_fail 1 "address 10.78.0.2 is already used by vm vm1" vm add vm9 "${V[@]}" addr 10.78.0.9/24,10.78.0.2/24
expect_fail 1 "address fd78::2 is already used by vm vm1" vm add vm9 "${V[@]}" addr fd78::2/64
expect_fail 1 "address 10.78.0.9 is given twice" vm add vm9 "${V[@]}" addr 10.78.0.9/24,10.78.0.9/24
expect_fail 1 "is a loopback address" vm add vm9 "${V[@]}" addr 127.0.0.9/8
expect_fail 1 "is the unspecified address" vm add vm9 "${V[@]}" addr 0.0.0.0/0
expect_fail 1 "is a multicast" vm add vm9 "${V[@]}" addr 239.1.1.1/24
expect_fail 1 "is a multicast address" vm add vm9 "${V[@]}" addr ff05::1/64
expect_fail 1 "at most 8 allowed" vm add vm9 "${V[@]}" \
	addr 10.1.0.1/32,10.1.0.2/32,10.1.0.3/32,10.1.0.4/32,10.1.0.5/32,10.1.0.6/32,10.1.0.7/32,10.1.0.8/32,10.1.0.9/32
expect_fail 1 "gateway 10.99.0.1 is not inside" vm add vm9 "${V[@]}" addr 10.78.0.9/24 gw 10.99.0.1
expect_fail 1 "more than one IPv4 gateway" vm add vm9 "${V[@]}" addr 10.78.0.9/24 gw 10.78.0.1 gw 10.78.0.254
expect_fail 1 "has no IPv6 address" vm add vm9 "${V[@]}" addr 10.78.0.9/24 gw fd78::1
expect_fail 1 "bad gateway 'nowhere'" vm add vm9 "${V[@]}" addr 10.78.0.9/24 gw nowhere
expect_fail 1 "uds PATH must be an absolute path" vm add vm9 nsm nsm1 addr 10.78.0.9/24 uds rel/vm9
expect_fail 1 "uds $NK_TMP/guests/vm1.vsock is already used by vm vm1" \
	vm add vm9 nsm nsm1 addr 10.78.0.9/24 uds "$NK_TMP/guests/vm1.vsock"
expect_fail 1 "directory $NK_TMP/nodir does not exist" \
	vm add vm9 nsm nsm1 addr 10.78.0.9/24 uds "$NK_TMP/nodir/vm9"
# Another spelling of vm1's path is vm1's path: refused, and vm1 keeps its
# socket (before, the new vm replaced it and took vm1's guests).
ln -s "$NK_TMP/guests" "$NK_TMP/glink"
VM1_INO=$(stat -c %i "$NK_TMP/guests/vm1.vsock_7531")
for spelling in "$NK_TMP/guests/./vm1.vsock" "$NK_TMP//guests/vm1.vsock" "$NK_TMP/glink/vm1.vsock"; do
	expect_fail 1 "uds $spelling is already used by vm vm1 (as $NK_TMP/guests/vm1.vsock)" \
		vm add vm9 nsm nsm1 addr 10.78.0.9/24 uds "$spelling"
done
check_eq "vm1 keeps its socket file" "$(stat -c %i "$NK_TMP/guests/vm1.vsock_7531")" "$VM1_INO"
expect_fail 1 "uds PATH must name a file" vm add vm9 nsm nsm1 addr 10.78.0.9/24 uds "$NK_TMP/guests/"
expect_fail 1 "uds PATH must name a file" vm add vm9 nsm nsm1 addr 10.78.0.9/24 uds "$NK_TMP/guests/.."
expect_fail 1 "10.78.0.255/24 is the broadcast address of its subnet" vm add vm9 "${V[@]}" addr 10.78.0.255/24
expect_fail 1 "10.78.0.0/24 is the network address of its subnet" vm add vm9 "${V[@]}" addr 10.78.0.0/24
expect_fail 1 "10.78.0.9/0 has prefix /0" vm add vm9 "${V[@]}" addr 10.78.0.9/0
expect_fail 1 "fd78::9/0 has prefix /0" vm add vm9 "${V[@]}" addr fd78::9/0
expect_fail 1 "gateway 10.78.0.255 is the network or broadcast address of vm9's subnet" \
	vm add vm9 "${V[@]}" addr 10.78.0.9/24 gw 10.78.0.255
expect_fail 1 "gateway 10.78.0.2 is vm vm1's address" vm add vm9 "${V[@]}" addr 10.78.0.9/24 gw 10.78.0.2
expect_fail 1 "address 10.78.0.1 is vm vm1's gateway" vm add vm9 "${V[@]}" addr 10.78.0.1/24
touch "$NK_TMP/guests/file_7531"
expect_fail 1 "exists and is not a socket" vm add vm9 nsm nsm1 addr 10.78.0.9/24 uds "$NK_TMP/guests/file"
rm -f "$NK_TMP/guests/file_7531"
expect_fail 1 "bad cid" vm add vm9 nsm nsm1 addr 10.78.0.9/24 cid 2
expect_fail 1 "vm name 'bad name' is invalid" vm add "bad name" "${V[@]}" addr 10.78.0.9/24
# Words JSON cannot carry, refused whole by nkctl (before, such a list
# element or gw was left out and the VM added without it; found by
# ctl/fuzz_nkctl_args.c), and numbers given in digits only.
expect_fail 2 "addr: the value is not UTF-8 text" vm add vm9 "${V[@]}" \
	addr 10.78.0.9/24,$'10.78.0.10/24\xff'
expect_fail 2 "gw: the value is not UTF-8 text" vm add vm9 "${V[@]}" addr 10.78.0.9/24 \
	gw 10.78.0.1 gw $'fd78::1\xfe'
expect_fail 2 "NAME: the value is not UTF-8 text" vm add $'vm9\xff' "${V[@]}" addr 10.78.0.9/24
expect_fail 2 "cid wants a number, not '+5'" vm add vm9 nsm nsm1 addr 10.78.0.9/24 cid +5
expect_fail 2 "cid: 9223372036854775808 is too large" vm add vm9 nsm nsm1 addr 10.78.0.9/24 \
	cid 9223372036854775808
expect_fail 1 "vm nope does not exist" vm show nope
expect_fail 1 "vm nope does not exist" vm del nope
expect_fail 1 "nsm nope does not exist" nsm show nope

log_step "vm set: every error leaves everything unchanged"
expect_fail 2 "missing 'nsm NSM'" vm set vm1
expect_fail 2 "unknown keyword 'addr' for 'vm set'" vm set vm1 addr 10.78.0.9/24
expect_fail 2 "keyword 'nsm' needs a value" vm set vm1 nsm
expect_fail 1 "vm nope does not exist" vm set nope nsm nsm1
expect_fail 1 "vm vm1: nsm nsmX does not exist" vm set vm1 nsm nsmX
expect_ok vm set vm1 nsm nsm1
check "vm set to its own NSM changes nothing" grep -qE "^vm1 +1 +nsm1 " <<<"$("$NKCTL" -c "$NK_CTL" vm list)"

log_step "requests nkctl would not send: refused with a reason, nothing changed"
# raw_req FILE: one packet (FILE's bytes) to nkd's control socket; the reply's
# ok and error on one line.
raw_req()
{
	"$NK_PY" - "$NK_CTL" "$1" <<-'EOF'
	import json, socket, sys
	s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
	s.connect(sys.argv[1])
	s.send(open(sys.argv[2], "rb").read())
	r = json.loads(s.recv(1 << 23))
	print(r.get("ok"), r.get("error"))
	EOF
}
# expect_bad PATTERN REQUEST: nkd answers ok false with PATTERN, changes nothing.
expect_bad()
{
	local pat=$1 before after out
	printf '%s' "$2" >"$NK_TMP/req"
	before=$(snapshot)
	out=$(raw_req "$NK_TMP/req" 2>&1)
	after=$(snapshot)
	if [[ "$out" != "False "*"$pat"* ]] || [ "$before" != "$after" ]; then
		nk_fail "request ${2:0:60}: want an error with '$pat', no change; got: $out"
		[ "$before" = "$after" ] || diff <(echo "$before") <(echo "$after") | sed 's/^/    /'
		return 1
	fi
	nk_pass "request ${2:0:60} -> ${out#False }"
}
expect_bad "bad request: '[' or '{' expected" 'vm list'
expect_bad "bad request: not a JSON object" '["vm", "list"]'
expect_bad 'bad request: want {"object", "verb", "args": {...}}' '{"object": "vm"}'
expect_bad 'bad request: want {"object", "verb", "args": {...}}' \
	'{"object": "vm", "verb": "list", "args": ["name"]}'
expect_bad "bad request: duplicate object key" '{"object": "vm", "verb": "list", "object": "nsm"}'
expect_bad "frob list: not implemented yet" '{"object": "frob", "verb": "list"}'
expect_bad "vm frob: unknown verb" '{"object": "vm", "verb": "frob", "args": {"name": "vm1"}}'
expect_bad "bad request: vm del takes no argument 'force' (expected name)" \
	'{"object": "vm", "verb": "del", "args": {"name": "vm1", "force": true}}'
expect_bad "bad request: vm del: 'name' must be a string" \
	'{"object": "vm", "verb": "del", "args": {"name": ["vm1"]}}'
expect_bad "bad request: vm set takes no argument 'addrs' (expected name, nsm)" \
	'{"object": "vm", "verb": "set", "args": {"name": "vm1", "nsm": "nsm1", "addrs": []}}'
# read as no filter before: every connection listed
expect_bad "bad request: conn list: 'vm' must be a string" \
	'{"object": "conn", "verb": "list", "args": {"vm": 1}}'
expect_bad "bad request: nsm list takes no argument 'name'" \
	'{"object": "nsm", "verb": "list", "args": {"name": "nsm1"}}'
# acted on before: removed every VM and NSM and stopped nkd
expect_bad "bad request: teardown takes no argument 'keep'" \
	'{"object": "teardown", "verb": "", "args": {"keep": "vm1"}}'
expect_bad "teardown frob: not implemented yet" '{"object": "teardown", "verb": "frob"}'
expect_bad "vm: unknown key 'colour'" \
	"{\"object\": \"vm\", \"verb\": \"add\", \"args\": {\"name\": \"vm9\", \"nsm\": \"nsm1\",
	  \"addrs\": [\"10.78.0.9/24\"], \"uds\": \"$NK_TMP/guests/vm9.vsock\", \"colour\": \"red\"}}"
expect_bad "bad request: larger than 64 KiB" \
	"{\"object\": \"vm\", \"verb\": \"list\", \"args\": {\"name\": \"$(printf 'x%.0s' {1..70000})\"}}"
check_eq "nkd still answers: vm1 listed" \
	"$("$NKCTL" -c "$NK_CTL" -j vm show vm1 | "$NK_PY" -c 'import json,sys; print(json.load(sys.stdin)["name"])')" vm1

log_step "policy on an nkd without an uplink: stored, not enforced, said so"
expect_ok policy set vm1 drop-all on
check "warned that the policy is not enforced" grep -q "is not steered by nkd's uplink" <<<"$ERR"
run_ctl -j policy show vm1
check_eq "policy show vm1: drop_all" "$(jget "$OUT" 'j["drop_all"]')" True
check_eq "policy show vm1: enforced" "$(jget "$OUT" 'j["enforced"]')" False
check "nkd.json keeps it" grep -q '"drop_all": true' "$NK_STATE/nkd.json"
expect_fail 1 "policy vm1: drop-all is on or off, not 'yes'" policy set vm1 drop-all yes
expect_fail 1 "vm nope does not exist" policy show nope
expect_ok policy set vm1 drop-all off
check "nkd.json: no policy left" not_grep -q '"policy"' "$NK_STATE/nkd.json"

log_step "conn list"
run_ctl conn list
check_eq "conn list: exit" "$RC" 0
check "conn list: table header" grep -qE "^VM +NSM +PROTO +LOCAL +REMOTE +STATE +BYTES_IN +BYTES_OUT" <<<"$OUT"
run_ctl -j conn list vm vm1
check_eq "conn list -j vm vm1: a JSON list" "$(jget "$OUT" 'type(j).__name__')" list
expect_fail 1 "conn list: vm nope does not exist" conn list vm nope
expect_fail 2 "unknown keyword 'cid' for 'conn list'" conn list cid 3

log_step "cid vm (nkd runs with --no-vsock: stored, never served)"
expect_ok vm add vm3 nsm nsm1 addr 10.78.0.4/24 cid 3
check "warned that cid 3 is not served" grep -q "not served" <<<"$ERR"
run_ctl -j vm show vm3
check_eq "vm3 transport" "$(jget "$OUT" 'j["transport"]')" "vsock:3"
check_eq "vm3 state" "$(jget "$OUT" 'j["state"]')" "not-served"
expect_fail 1 "cid 3 is already used by vm vm3" vm add vm9 nsm nsm1 addr 10.78.0.9/24 cid 3
expect_ok vm del vm3

log_step "nsm del refuses while VMs use the NSM"
expect_fail 1 "nsm nsm1 is used by 2 vm(s) (vm1, vm2); delete them first" nsm del nsm1
check "nsm1 still the same process" test "$(nsm_pid)" = "$NSM_PID"

log_step "NSM crash: nkd restarts it and pushes the VMs again"
kill -KILL "$NSM_PID"
check "nsm1 running again" wait_for -t 10 nsm_running
NEW_PID=$(nsm_pid)
check "nsm1 has a new pid ($NSM_PID -> $NEW_PID)" test -n "$NEW_PID" -a "$NEW_PID" != "$NSM_PID"
run_ctl -j nsm show nsm1
check_eq "nsm1 restarts" "$(jget "$OUT" 'j["restarts"]')" 1
check "vm1 address back on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.2
check "vm2 address back on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.3
check "nkd logged the exit and the restart" \
	grep -q "nsm nsm1 (pid $NSM_PID) exited: killed by signal SIGKILL; restarting" "$NK_NKD_LOG"
NSM_PID=$NEW_PID

log_step "nkd restart: NSM adopted, not restarted"
expect_ok policy set vm1 drop-all on	# kept across the restart (nkd.json)
before=$("$NKCTL" -c "$NK_CTL" -j vm list)
nk_stop "$NKD_PID"
check "nsm1 survives nkd's SIGTERM" nk_alive "$NSM_PID"
check "vm1 listener survives nkd's SIGTERM" test -S "$NK_TMP/guests/vm1.vsock_7531"
NK_NKD_LOG=$NK_TMP/nkd-2.log
nk_start_nkd
run_ctl -j nsm show nsm1
check_eq "nsm1 adopted" "$(jget "$OUT" 'j["adopted"]')" True
check_eq "nsm1 pid unchanged" "$(jget "$OUT" 'j["pid"]')" "$NSM_PID"
check_eq "vm list unchanged across the restart" "$("$NKCTL" -c "$NK_CTL" -j vm list)" "$before"
check "vm1 listener re-created" test -S "$NK_TMP/guests/vm1.vsock_7531"
check "nkd logged the adoption" grep -q "nsm nsm1: adopted running pid $NSM_PID" "$NK_NKD_LOG"
check_eq "nsm1 runs as configured" "$(jget "$OUT" 'j["config_differs"]')" False
# bulk polling "auto" (the default): nk-nsm chose from the wakeup round
# trip it measured at start, 50 us from 8 us on, else none, and says so
AUTO_BP=$(jget "$OUT" '50 if j["running"].get("wakeup_us", 8) >= 8 else 0')
check_eq "nsm show: bulk_poll auto, and what it chose" \
	"$(jget "$OUT" 'j["bulk_poll"], j["running"]["bulk_poll_auto"], j["running"]["wakeup_us"] > 0')" \
	"('auto', True, True)"
check_eq "nsm show: what it reports it runs with" \
	"$(jget "$OUT" '" ".join(str(j["running"][k]) for k in ("relay", "busy_poll", "bulk_poll", "kernel_relay_sndbuf", "dev", "notsent_lowat"))')" \
	"splice 0 $AUTO_BP 16777216 up0 131072"
check "nk-nsm logged the same choice" grep -qE \
	"bulk polling \(auto\): $([ "$AUTO_BP" = 0 ] && echo 'off' || echo '50 us after bursts'): a wakeup round trip between two processes on one CPU costs $(jget "$OUT" '"%.1f" % j["running"]["wakeup_us"]') us here" \
	"$NK_STATE/nsm-nsm1.log"
check "no warning about its settings" bash -c "! grep -q 'does not run as configured' '$NK_NKD_LOG'"
run_ctl -j policy show vm1
check_eq "vm1's policy kept across the restart" "$(jget "$OUT" 'j["drop_all"]')" True
expect_ok policy set vm1 drop-all off

# restart_nkd_with LOG KEY=JSON...: stop nkd, set nsm1's KEYs in nkd.json
# (as after a hand edit while nkd was stopped), start nkd again with its
# log in NK_TMP/LOG; nsm show nsm1 -j in OUT.
restart_nkd_with()
{
	local log=$1
	shift
	nk_stop "$NKD_PID"
	"$NK_PY" - "$NK_STATE/nkd.json" "$@" <<'PY'
import json, sys
p = sys.argv[1]
j = json.load(open(p))
for n in j["nsms"]:
    if n["name"] == "nsm1":
        for kv in sys.argv[2:]:
            k, v = kv.split("=", 1)
            n[k] = json.loads(v)
json.dump(j, open(p, "w"), indent=2)
PY
	NK_NKD_LOG=$NK_TMP/$log
	nk_start_nkd
	run_ctl -j nsm show nsm1
}

log_step "nkd restart after nkd.json changed: adopted, the difference reported, applied at the next start"
# As after an upgrade or a hand edit while nkd was stopped: the running
# NSM keeps its options (adoption must not end connections), and nkd says
# which differ instead of showing the file's values as if they ran.
old_opts=$(nk_nsm_opts "$NSM_PID")
restart_nkd_with nkd-2b.log bulk_poll=0 kernel_relay_sndbuf=1048576 notsent_lowat=65536
check_eq "nsm1 adopted again, same pid" "$(jget "$OUT" 'j["adopted"], j["pid"]')" "(True, $NSM_PID)"
check_eq "nsm show: the configured settings" \
	"$(jget "$OUT" 'j["bulk_poll"], j["kernel_relay_sndbuf"], j["notsent_lowat"]')" "(0, 1048576, 65536)"
check_eq "nsm show: config_differs" "$(jget "$OUT" 'j["config_differs"]')" True
check_eq "nsm show: what it runs with" \
	"$(jget "$OUT" 'j["running"]["bulk_poll"], j["running"]["kernel_relay_sndbuf"], j["running"]["notsent_lowat"]')" \
	"($AUTO_BP, 16777216, 131072)"
check_eq "nk-nsm's options unchanged" "$(nk_nsm_opts "$NSM_PID")" "$old_opts"
check "nkd names the difference" grep -qF \
	"nsm nsm1 (pid $NSM_PID) does not run as configured: bulk_poll auto: $AUTO_BP (configured: 0); kernel_relay_sndbuf 16777216 (configured: 1048576); notsent_lowat 131072 (configured: 65536); it was adopted, and the configuration applies when it next starts (stop it and nkd starts it again)" \
	"$NK_NKD_LOG"
run_ctl nsm show nsm1
check "text show has config_differs yes" grep -qE '^config_differs +yes$' <<<"$OUT"
check "text show has running in full, zeros too" \
	grep -qE "^running +relay=splice,busy_poll=0,bulk_poll=$AUTO_BP,kernel_relay_sndbuf=16777216,dev=up0,notsent_lowat=131072,bulk_poll_auto=yes,wakeup_us=[0-9.]+\$" <<<"$OUT"
kill -KILL "$NSM_PID"
nsm_replaced() { nsm_running && [ "$(nsm_pid)" != "$NSM_PID" ]; }
check "nsm1 restarted" wait_for -t 10 nsm_replaced
NSM_PID=$(nsm_pid)
check_eq "restarted with the configured options" "$(nk_nsm_opts "$NSM_PID")" \
	"--bulk-poll=0 --kernel-relay-sndbuf=1048576 --notsent-lowat=65536"
run_ctl -j nsm show nsm1
check_eq "config_differs cleared, and it reports the configured values" \
	"$(jget "$OUT" 'j["config_differs"], j["running"]["bulk_poll"], j["running"]["kernel_relay_sndbuf"], j["running"]["notsent_lowat"]')" \
	"(False, 0, 1048576, 65536)"
check "vm1 address back on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.2

log_step "nkd restart with nsm1 moved to another netns in nkd.json: the adopted NSM's netns checked"
restart_nkd_with nkd-2c.log "netns=\"peer-$S\"" 'dev="eth0"'
check_eq "adopted, same pid, config_differs" "$(jget "$OUT" 'j["adopted"], j["pid"], j["config_differs"]')" \
	"(True, $NSM_PID, True)"
check "nkd says it runs in another netns" grep -qF \
	"nsm nsm1 (pid $NSM_PID) does not run as configured: dev up0 (configured: eth0); another netns than peer-$S; it was adopted" \
	"$NK_NKD_LOG"
restart_nkd_with nkd-2d.log "netns=\"nsm-$S\"" 'dev="up0"'
check_eq "back as configured: adopted, config_differs" "$(jget "$OUT" 'j["adopted"], j["config_differs"]')" \
	"(True, False)"
check "no warning" bash -c "! grep -q 'does not run as configured' '$NK_NKD_LOG'"

log_step "nkd restart after a vm was deleted from nkd.json: the adopted NSM drops it"
# As after a hand edit (or a --config FILE without the vm) while nkd was
# stopped: the running NSM still serves the vm; before, its address and
# listener stayed there for good, unseen by nkctl, and a vm added later
# with its id took over what was left of it.
expect_ok vm add vm4 nsm nsm1 addr 10.78.0.6/24 uds "$NK_TMP/guests/vm4.vsock"
check "vm4's address on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.6
VM4_ID=$("$NKCTL" -c "$NK_CTL" -j vm show vm4 | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
NSM_PID=$(nsm_pid)
nk_stop "$NKD_PID"
"$NK_PY" - "$NK_STATE/nkd.json" <<'PY'
import json, sys
p = sys.argv[1]
j = json.load(open(p))
j["vms"] = [v for v in j["vms"] if v["name"] != "vm4"]
json.dump(j, open(p, "w"), indent=2)
PY
NK_NKD_LOG=$NK_TMP/nkd-2d.log
nk_start_nkd
check_eq "nsm1 adopted, same pid" "$(nsm_pid)" "$NSM_PID"
check "nkd removed vm4 from it" \
	grep -q "nsm nsm1: removed vm vm4 (id $VM4_ID), which it served but nkd no longer has" "$NK_NKD_LOG"
has_no_addr() { ! nk_has_addr "nsm-$S" up0 "$1"; }
check "vm4's address gone from up0" wait_for -t 5 has_no_addr 10.78.0.6
check "vm1's address stays" nk_has_addr "nsm-$S" up0 10.78.0.2
check "vm2's address stays" nk_has_addr "nsm-$S" up0 10.78.0.3
rm -f "$NK_TMP/guests/vm4.vsock_7531"

log_step "nkd restart with an nkd.json an older nkd wrote: rules newer than it warn"
# vm2's gateway is vm1's address, which nkd now refuses for a new vm; an
# nkd.json from before the rule must not keep the upgraded nkd down.
nk_stop "$NKD_PID"
"$NK_PY" - "$NK_STATE/nkd.json" <<'PY'
import json, sys
p = sys.argv[1]
j = json.load(open(p))
for v in j["vms"]:
    if v["name"] == "vm2":
        v["gw"] = ["10.78.0.2"]
json.dump(j, open(p, "w"), indent=2)
PY
NK_NKD_LOG=$NK_TMP/nkd-2e.log
nk_start_nkd
check "nkd runs, with vm2" nkctl vm show vm2
check "and says what the newer rule refuses" grep -qF \
	"vm vm2: gateway 10.78.0.2 is vm vm1's address; give a router's address; restored as nkd.json has it (a new vm would be refused)" \
	"$NK_NKD_LOG"

log_step "an address the operator put on the NSM's device stays when a vm that used it goes"
# The NSM marks the addresses it adds (IFA_PROTO); before, vm del removed
# the operator's own address with the vm's.
ip -n "nsm-$S" addr add 10.78.0.70/24 dev up0
expect_ok vm add own nsm nsm1 addr 10.78.0.70/24 uds "$NK_TMP/guests/own.vsock"
check "the NSM says the address was there" wait_for -t 5 grep -qF \
	"vm own: 10.78.0.70 is on up0 already, not added by an NSM" "$NK_STATE/nsm-nsm1.log"
expect_ok vm del own
check "the operator's address stays" nk_has_addr "nsm-$S" up0 10.78.0.70
ip -n "nsm-$S" addr del 10.78.0.70/24 dev up0

log_step "vm del, nsm del"
expect_ok vm del vm1
check "vm1 listener removed" test ! -e "$NK_TMP/guests/vm1.vsock_7531"
# vm1's addresses came back after nk-nsm was killed and restarted (the
# new process found them there, marked as an NSM's): they go with vm1
check "vm1's addresses gone from up0" wait_for -t 5 has_no_addr 10.78.0.2
run_ctl -j vm del vm2
check_eq "vm del -j prints the deleted vm" "$(jget "$OUT" 'j["name"]')" vm2
expect_ok nsm del nsm1
check "nk-nsm stopped" wait_for -t 5 nk_ns_empty "nsm-$S"
check "nsm1 control socket removed" test ! -e "$NK_RUN/nsm-nsm1.sock"
run_ctl -j nsm list
check_eq "nsm list empty" "$OUT" "[]"

log_step "--config"
nk_stop "$NKD_PID"
cat >"$NK_TMP/bad.json" <<EOF
{"nsms": [{"name": "nsm1", "type": "kernel", "netns": "nsm-$S", "dev": "up0", "kernel_relay_sndbuf": 1048576}],
 "vms": [{"name": "vmA", "nsm": "nsm1", "addrs": ["10.78.0.2/24"], "uds": "$NK_TMP/guests/vmA"},
         {"name": "vmB", "nsm": "nsm1", "addrs": ["10.78.0.2/24"], "uds": "$NK_TMP/guests/vmB"}]}
EOF
out=$(timeout 10 "$OUTPUT/nkd" --foreground --config "$NK_TMP/bad.json" --control "$NK_CTL" \
	--state-dir "$NK_STATE" --run-dir "$NK_RUN" --no-vsock --nsm-bin "$OUTPUT/nk-nsm" 2>&1)
rc=$?
check_eq "nkd with a bad config: exit" "$rc" 1
check "nkd names the bad entry" grep -q "vms\[1\]: vm vmB: address 10.78.0.2 is already used by vm vmA" <<<"$out"
check "nothing was started" nk_ns_empty "nsm-$S"
sed 's/"10.78.0.2\/24"], "uds": "[^"]*vmB"/"10.78.0.3\/24"], "cid": 9/' "$NK_TMP/bad.json" >"$NK_TMP/good.json"
NK_NKD_LOG=$NK_TMP/nkd-3.log
mkdir -p "$NK_STATE" "$NK_RUN"
nk_bg - "$NK_NKD_LOG" "$OUTPUT/nkd" --foreground --config "$NK_TMP/good.json" --control "$NK_CTL" \
	--state-dir "$NK_STATE" --run-dir "$NK_RUN" --no-vsock --nsm-bin "$OUTPUT/nk-nsm"
NKD_PID=$NK_BG_PID
NK_NSMS+=(nsm1)
check "nkd --config: nsm1 running" wait_for -t 10 nsm_running
run_ctl -j vm list
check_eq "nkd --config: vms" "$(jget "$OUT" '",".join(v["name"] + ":" + v["state"] for v in j)')" \
	"vmA:ok,vmB:not-served"
check "vmA listener" test -S "$NK_TMP/guests/vmA_7531"
check "vmA address on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.2

log_step "SIGHUP re-reads --config and applies the difference"
vm_names()
{
	"$NKCTL" -c "$NK_CTL" -j vm list 2>/dev/null | "$NK_PY" -c 'import json, sys; print(",".join(sorted(v["name"] + ":" + "/".join(v["addrs"]) for v in json.load(sys.stdin))))'
}
# nsm1 runs with kernel_relay_sndbuf 1 MiB and bulk_poll "auto" (bad.json);
# the new file leaves kernel_relay_sndbuf out (its default, 16 MiB) and asks
# for busy_poll 30, bulk_poll 0 and notsent_lowat 256 KiB: none is applied to a running NSM, and
# each gets a warning naming both values (for bulk_poll, what "auto"
# chose).  relay null is refused, as when an NSM starts, not taken as the
# default.
cat >"$NK_TMP/good.json" <<EOF
{"nsms": [{"name": "nsm1", "type": "kernel", "netns": "nsm-$S", "dev": "up0", "busy_poll": 30,
           "bulk_poll": 0, "relay": null, "notsent_lowat": 262144}],
 "vms": [{"name": "vmA", "nsm": "nsm1", "addrs": ["10.78.0.2/24", "10.78.0.5/24"], "uds": "$NK_TMP/guests/vmA"},
         {"name": "vmC", "nsm": "nsm1", "addrs": ["10.78.0.4/24"], "uds": "$NK_TMP/guests/vmC"}]}
EOF
AUTO_BP2=$("$NKCTL" -c "$NK_CTL" -j nsm show nsm1 | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["running"]["bulk_poll"])')
kill -HUP "$NKD_PID"
check "nkd logged the reload" wait_for -t 5 grep -q "SIGHUP: $NK_TMP/good.json applied: 1 added, 1 removed, 1 changed" "$NK_NKD_LOG"
check "a setting left out counts as its default: nkd warns that kernel_relay_sndbuf would change" grep -qF \
	"SIGHUP: nsm nsm1: kernel_relay_sndbuf changed in $NK_TMP/good.json (16777216, the default, as it is left out; running: 1048576); not applied (delete and add it again)" \
	"$NK_NKD_LOG"
check "and that bulk_poll would, naming what auto chose" grep -qF \
	"SIGHUP: nsm nsm1: bulk_poll changed in $NK_TMP/good.json (0; running: \"auto\": $AUTO_BP2); not applied (delete and add it again)" \
	"$NK_NKD_LOG"
check "and that busy_poll would" grep -qF \
	"SIGHUP: nsm nsm1: busy_poll changed in $NK_TMP/good.json (30; running: 0); not applied (delete and add it again)" \
	"$NK_NKD_LOG"
check "and that notsent_lowat would" grep -qF \
	"SIGHUP: nsm nsm1: notsent_lowat changed in $NK_TMP/good.json (262144; running: 131072); not applied (delete and add it again)" \
	"$NK_NKD_LOG"
check "relay null is refused, not the default" grep -qF \
	"SIGHUP: nsm nsm1: relay is null in $NK_TMP/good.json, which is not a value (leave it out for the default); not applied" \
	"$NK_NKD_LOG"
check "no warning for what did not change" bash -c "! grep -E 'nsm1: (type|netns|dev|relay) changed' '$NK_NKD_LOG'"
check_eq "nsm1 still runs with bulk_poll auto and busy_poll 0" \
	"$("$NKCTL" -c "$NK_CTL" -j nsm show nsm1 | "$NK_PY" -c 'import json, sys; j = json.load(sys.stdin); print(j["bulk_poll"], j["busy_poll"])')" "auto 0"
check_eq "after SIGHUP: vmB gone, vmC added, vmA with its new address" "$(vm_names)" \
	"vmA:10.78.0.2/24/10.78.0.5/24,vmC:10.78.0.4/24"
check "vmC address on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.4
check "vmA's new address on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.5
check "nkd.json follows" grep -q '"vmC"' "$NK_STATE/nkd.json"
# A reload counts its lines: reloaded N times so far.
reloads() { grep -c "SIGHUP: .* applied:" "$NK_NKD_LOG"; }
reload_line() { grep "SIGHUP: .* applied:" "$NK_NKD_LOG" | tail -1 | sed 's/.*applied: //'; }
reloaded_more() { test "$(reloads)" -gt "$1"; }
# hup_check DESC: SIGHUP nkd, and check (DESC) that it reloaded the file
hup_check()
{
	local n
	n=$(reloads)
	kill -HUP "$NKD_PID"
	check "$1" wait_for -t 5 reloaded_more "$n"
}
# A gateway given as one string and a cid as a string (both allowed): the
# same file again changes nothing (before, both VMs were deleted and added
# again at every SIGHUP, their connections ended).
sed -e 's|"addrs": \["10.78.0.2/24", "10.78.0.5/24"\]|&, "gw": "10.78.0.1"|' \
    -e 's|"uds": "[^"]*vmC"|"cid": "7"|' "$NK_TMP/good.json" >"$NK_TMP/good2.json"
cp "$NK_TMP/good2.json" "$NK_TMP/good.json"
hup_check "reloaded"
check_eq "gw added to vmA, vmC on a cid: 2 changed" "$(reload_line)" "0 added, 0 removed, 2 changed"
VMA_INO=$(stat -c %i "$NK_TMP/guests/vmA_7531")
hup_check "reloaded again"
check_eq "the same file again: nothing changed" "$(reload_line)" "0 added, 0 removed, 0 changed"
check_eq "vmA kept its socket (not deleted and added again)" \
	"$(stat -c %i "$NK_TMP/guests/vmA_7531")" "$VMA_INO"
# An id the file gives a running VM is applied: the VM is deleted and
# added again with it, as for a new address (before: ignored, and nkd.json
# went on with the old id).  An NSM's id is its index in the steering
# maps: a change gets the warning of the other NSM settings.
vm_id() { "$NKCTL" -c "$NK_CTL" -j vm show "$1" | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }
nsm_id() { "$NKCTL" -c "$NK_CTL" -j nsm show "$1" | "$NK_PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }
VMA_ID=$(vm_id vmA)
NEW_ID=$((VMA_ID + 40))
NSM1_ID=$(nsm_id nsm1)
sed -e "s|\"name\": \"vmA\",|\"name\": \"vmA\", \"id\": $NEW_ID,|" \
    -e "s|\"name\": \"nsm1\",|\"name\": \"nsm1\", \"id\": $((NSM1_ID + 7)),|" \
	"$NK_TMP/good2.json" >"$NK_TMP/good.json"
hup_check "reloaded with new ids for vmA and nsm1"
check_eq "vmA's id changed: 1 changed" "$(reload_line)" "0 added, 0 removed, 1 changed"
check_eq "vmA has the file's id" "$(vm_id vmA)" "$NEW_ID"
check "nkd says why vmA was added again" grep -qF \
	"SIGHUP: vm vmA: id $NEW_ID in $NK_TMP/good.json (it has $VMA_ID): deleted and added again" "$NK_NKD_LOG"
check "nkd.json has vmA's new id" "$NK_PY" -c "
import json, sys
j = json.load(open('$NK_STATE/nkd.json'))
sys.exit(0 if [v['id'] for v in j['vms'] if v['name'] == 'vmA'] == [$NEW_ID] else 1)"
check "the NSM serves vmA by its new id" wait_for -t 5 grep -q "vm vmA: added (id $NEW_ID," "$NK_STATE/nsm-nsm1.log"
check "vmA's addresses on up0" wait_for -t 5 nk_has_addr "nsm-$S" up0 10.78.0.5
check "nsm1's id change is a warning, not applied" grep -qF \
	"SIGHUP: nsm nsm1: id changed in $NK_TMP/good.json ($((NSM1_ID + 7)); running: $NSM1_ID); not applied (delete and add it again)" \
	"$NK_NKD_LOG"
check_eq "nsm1 keeps its id" "$(nsm_id nsm1)" "$NSM1_ID"
hup_check "reloaded with the same ids"
check_eq "the same ids again: nothing changed" "$(reload_line)" "0 added, 0 removed, 0 changed"
cp "$NK_TMP/good2.json" "$NK_TMP/good.json"
hup_check "reloaded without ids"
check_eq "ids left out: the VM keeps the one it has" "$(reload_line)" "0 added, 0 removed, 0 changed"
check_eq "vmA still has id $NEW_ID" "$(vm_id vmA)" "$NEW_ID"
check "no warning for nsm1's id left out" bash -c "! grep -q 'nsm nsm1: id changed.*left out' '$NK_NKD_LOG'"
# An entry with an error leaves its VM as it is (before: deleted, then not
# added again), and the error names it.
sed 's|"10.78.0.4/24"|"10.78.0.4/99"|' "$NK_TMP/good2.json" >"$NK_TMP/good.json"
hup_check "reloaded with a bad entry"
check "the bad entry is named, its vm kept" grep -qF \
	"good.json: vm vmC: bad address '10.78.0.4/99': expected ADDR/PREFIX such as 10.0.0.2/24 or fd00::2/64; the vm stays as it is" \
	"$NK_NKD_LOG"
check_eq "after a bad entry: vmC still there, as it was" "$(vm_names)" \
	"vmA:10.78.0.2/24/10.78.0.5/24,vmC:10.78.0.4/24"
check "vmC's address still on up0" nk_has_addr "nsm-$S" up0 10.78.0.4
# A changed entry that passes the checks but fails to be added (its uds
# directory does not exist): the vm comes back as it was (before: gone).
sed "s|\"$NK_TMP/guests/vmA\"|\"$NK_TMP/nodir/vmA\"|" "$NK_TMP/good2.json" >"$NK_TMP/good.json"
hup_check "reloaded with an entry that cannot be added"
check "the failure is named" grep -qF "directory $NK_TMP/nodir does not exist" "$NK_NKD_LOG"
check "vmA is back as it was" grep -qF "SIGHUP: vm vmA is back as it was" "$NK_NKD_LOG"
check_eq "after it: vmA and vmC as they were" "$(vm_names)" \
	"vmA:10.78.0.2/24/10.78.0.5/24,vmC:10.78.0.4/24"
check "vmA listens on its old path" test -S "$NK_TMP/guests/vmA_7531"
# ... unless a VM added by the same reload took what it had: a new vmZ,
# listed first, takes vmA's address; vmA is not brought back beside it
# (before: two VMs with one address).
"$NK_PY" - "$NK_TMP/good2.json" "$NK_TMP/good.json" "$NK_TMP" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for v in j["vms"]:
    if v["name"] == "vmA":
        v["uds"] = sys.argv[3] + "/nodir/vmA"
j["vms"].insert(0, {"name": "vmZ", "nsm": "nsm1", "addrs": ["10.78.0.2/24"],
                    "uds": sys.argv[3] + "/guests/vmZ"})
json.dump(j, open(sys.argv[2], "w"))
PY
hup_check "reloaded with vmZ taking vmA's address"
check "vmA is not brought back beside vmZ" grep -qF \
	"SIGHUP: vm vmA could not be added back as it was either: vm vmA: address 10.78.0.2 is vm vmZ's now; it is gone" \
	"$NK_NKD_LOG"
check_eq "vmZ has the address, vmA is gone" "$(vm_names)" "vmC:10.78.0.4/24,vmZ:10.78.0.2/24"
cp "$NK_TMP/good2.json" "$NK_TMP/good.json"
hup_check "reloaded back"
check_eq "vmA back, vmZ gone" "$(vm_names)" "vmA:10.78.0.2/24/10.78.0.5/24,vmC:10.78.0.4/24"
# An unknown key in an unchanged entry: nkd would refuse the file at
# start, so the reload says so (before: silently taken).
sed -e 's|"name": "vmA",|"name": "vmA", "colour": "red",|' \
    -e 's|"name": "nsm1",|"name": "nsm1", "colour": "blue",|' "$NK_TMP/good2.json" >"$NK_TMP/good.json"
hup_check "reloaded with an unknown key"
check "the unknown key is reported" grep -qF "vm vmA: vm: unknown key 'colour'" "$NK_NKD_LOG"
check "... in an NSM's entry too" grep -qF \
	"nsms[0]: nsm: unknown key 'colour' (expected name, id, type, netns, dev, relay, busy_poll, bulk_poll, kernel_relay_sndbuf, notsent_lowat); the nsm stays as it is" \
	"$NK_NKD_LOG"
# A name twice: refused whole, as at start (before: the second ignored).
sed 's|"name": "vmC"|"name": "vmA"|' "$NK_TMP/good2.json" >"$NK_TMP/good.json"
kill -HUP "$NKD_PID"
check "a name twice is refused" wait_for -t 5 grep -qF "names vmA twice; not applied" "$NK_NKD_LOG"
check_eq "after it: unchanged" "$(vm_names)" "vmA:10.78.0.2/24/10.78.0.5/24,vmC:10.78.0.4/24"
stays() { grep -c "the configuration stays as it is" "$NK_NKD_LOG"; }
stays_more() { test "$(stays)" -gt "$1"; }
n=$(stays)
echo '{"vms": [' >"$NK_TMP/good.json"
kill -HUP "$NKD_PID"
check "a broken file is refused" wait_for -t 5 stays_more "$n"
check_eq "after a broken file: unchanged" "$(vm_names)" "vmA:10.78.0.2/24/10.78.0.5/24,vmC:10.78.0.4/24"
log_step "nkd restarted with --config FILE after a vm was taken out of it"
# The file gives no ids: the VMs keep those of nkd.json (before, vmC took
# the id vmA left and was a new VM to the NSM, its connections ended),
# and the adopted NSM drops vmA before nkd sends it the others.
cp "$NK_TMP/good2.json" "$NK_TMP/good.json"
hup_check "reloaded with vmA and vmC"
VMA_ID=$(vm_id vmA)
VMC_ID=$(vm_id vmC)
NSM_PID=$(nsm_pid)
nk_stop "$NKD_PID"
"$NK_PY" - "$NK_TMP/good2.json" "$NK_TMP/good.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
j["vms"] = [v for v in j["vms"] if v["name"] != "vmA"]
for n in j["nsms"]:	# "relay": null is refused at start (SIGHUP warned)
    n.pop("relay", None)
json.dump(j, open(sys.argv[2], "w"))
PY
NK_NKD_LOG=$NK_TMP/nkd-4.log
nk_bg - "$NK_NKD_LOG" "$OUTPUT/nkd" --foreground --config "$NK_TMP/good.json" --control "$NK_CTL" \
	--state-dir "$NK_STATE" --run-dir "$NK_RUN" --no-vsock --nsm-bin "$OUTPUT/nk-nsm"
NKD_PID=$NK_BG_PID
check "nkd --config restarted: nsm1 running" wait_for -t 10 nsm_running
check_eq "nsm1 adopted, same pid" "$(nsm_pid)" "$NSM_PID"
check_eq "vmC keeps its id ($VMC_ID)" "$(vm_id vmC)" "$VMC_ID"
check "nkd removed vmA from nsm1" \
	grep -q "nsm nsm1: removed vm vmA (id $VMA_ID), which it served but nkd no longer has" "$NK_NKD_LOG"
check "vmA's addresses gone from up0" wait_for -t 5 has_no_addr 10.78.0.2
check "vmC's address stays" nk_has_addr "nsm-$S" up0 10.78.0.4
check "the NSM did not take vmC for a new vm" \
	bash -c "! grep -q \"the id is vm vmC's now\" '$NK_STATE/nsm-nsm1.log'"
log_step "SIGHUP that adopts an NSM an earlier nkd left running keeps the VMs it serves"
# nkd restarted with a file without nsm1: nsm1 runs on with vmC, unknown
# to nkd.  The file gets nsm1 and vmC back and nkd reloads it: nsm1 is
# adopted and vmC takes the id nsm1 knows it by (before, nsm1's VMs were
# deleted at the adoption and added again: their connections ended).
VMC_ID=$(vm_id vmC)
nk_stop "$NKD_PID"
cp "$NK_TMP/good.json" "$NK_TMP/with-nsm1.json"
echo '{"nsms": [], "vms": []}' >"$NK_TMP/good.json"
NK_NKD_LOG=$NK_TMP/nkd-5.log
nk_bg - "$NK_NKD_LOG" "$OUTPUT/nkd" --foreground --config "$NK_TMP/good.json" --control "$NK_CTL" \
	--state-dir "$NK_STATE" --run-dir "$NK_RUN" --no-vsock --nsm-bin "$OUTPUT/nk-nsm"
NKD_PID=$NK_BG_PID
check "nkd without nsm1 answers" wait_for -t 10 nkctl nsm list
check "nsm1 runs on, unknown to nkd" nk_alive "$NSM_PID"
dels=$(grep -c "vm vmC: deleted" "$NK_STATE/nsm-nsm1.log")
cp "$NK_TMP/with-nsm1.json" "$NK_TMP/good.json"
kill -HUP "$NKD_PID"
check "reloaded with nsm1 back" wait_for -t 10 grep -q "SIGHUP: .* applied:" "$NK_NKD_LOG"
check_eq "nsm1 adopted, same pid" "$(nsm_pid)" "$NSM_PID"
check_eq "vmC has the id nsm1 knows it by" "$(vm_id vmC)" "$VMC_ID"
check_eq "nsm1 did not delete vmC" "$(grep -c "vm vmC: deleted" "$NK_STATE/nsm-nsm1.log")" "$dels"
check "vmC's address stays" nk_has_addr "nsm-$S" up0 10.78.0.4
for v in vmA vmB vmC; do
	"$NKCTL" -c "$NK_CTL" vm del "$v" >/dev/null 2>&1
done

nk_finish
