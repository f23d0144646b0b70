#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# Issue 8 proof: nk-vhost-vsock makes a QEMU guest (TCG, no NIC, no disk,
# only vhost-user-vsock-pci) talk to Unix sockets on the host by the
# hybrid-vsock convention.  The guest runs Debian's kernel (fetched once
# into a cache by tools/vm/fetch-kernel.sh, never installed) and a busybox
# initramfs with the vsock modules and tools/vm/guest-vsock-test; the host
# side is tools/vm/vsock-peer.py.  AF_VSOCK is used only inside the guest.
#
#   guest -> host   echo through <uds>_5000; 64 MiB to <uds>_5001 (CRC);
#                   32 connections at once; a port nobody serves (reset)
#   host -> guest   CONNECT to a guest echo listener; 64 MiB to a guest
#                   receiver (CRC); CONNECT to a port without a listener
#   faults          the guest is killed (SIGKILL to QEMU) during a
#                   transfer: the backend releases every connection and fd
#                   and serves a second guest, which echoes again
#
# Nothing the guest sent may have been counted as a violation.

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds qemu-system-x86_64 gcc cpio gzip dpkg-deb apt-get
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
[ -x /bin/busybox ] || nk_skip "missing /bin/busybox (apt-get install busybox-static)"
[ -x "$OUTPUT/nk-vhost-vsock" ] || nk_die "$OUTPUT/nk-vhost-vsock is missing (run make)"

VM=$NK_SRCDIR/tools/vm
UDS=$NK_TMP/vm1.vsock
VU=$NK_TMP/vm1.vhost
BIG=$((64 << 20))

# ---------------------------------------------------------------- guest image
log_step "guest kernel and initramfs"
KDIR=$(bash "$VM/fetch-kernel.sh" 2>"$NK_TMP/fetch.log") ||
	nk_skip "no guest kernel: $(tail -n 1 "$NK_TMP/fetch.log")"
log_info "kernel $(cat "$KDIR/version") from $KDIR"
gcc -static -O2 -Wall -Wextra -Werror -o "$NK_TMP/guest-vsock-test" \
	"$VM/guest-vsock-test.c" || nk_die "cannot build the static guest program"

cat >"$NK_TMP/guest.sh" <<EOF
#!/bin/sh
# one initramfs, two roles chosen on the kernel command line
T=/bin/guest-vsock-test
case "\$(cat /proc/cmdline)" in
*nkt=again*)
	\$T listen-echo 6000 1 &
	\$T echo 5000 1048576
	wait
	echo "NKT DONE"
	;;
*)
	\$T listen-echo 6000 1 &
	\$T recv 6001 &
	\$T echo 5000 1048576
	\$T refused 5999
	\$T send 5001 $BIG 7
	\$T many 5000 32 65536
	wait
	echo "NKT KILLME"
	\$T send 5003 4294967296 9
	echo "NKT NOT-KILLED"
	;;
esac
EOF
bash "$VM/mkinitramfs.sh" -k "$KDIR" -o "$NK_TMP/initrd.gz" -i "$NK_TMP/guest.sh" \
	-f "$NK_TMP/guest-vsock-test:/bin/guest-vsock-test" 2>"$NK_TMP/mkinitramfs.log" ||
	nk_die "mkinitramfs failed: $(cat "$NK_TMP/mkinitramfs.log")"
log_info "$(tail -n 1 "$NK_TMP/mkinitramfs.log")"

# ---------------------------------------------------------------- host side
log_step "backend and host peers"
nk_bg - "$NK_TMP/backend.log" "$OUTPUT/nk-vhost-vsock" --socket "$VU" --uds "$UDS" \
	--guest-cid 3 --name vm1
BACKEND=$NK_BG_PID
check "backend listens on $VU and $UDS" wait_for -t 10 test -S "$VU" -a -S "$UDS"
nk_bg - "$NK_TMP/echo.log" "$NK_PY" "$VM/vsock-peer.py" echo-server "${UDS}_5000"
nk_bg - "$NK_TMP/sink.log" "$NK_PY" "$VM/vsock-peer.py" sink "${UDS}_5001"
nk_bg - "$NK_TMP/sink-kill.log" "$NK_PY" "$VM/vsock-peer.py" sink "${UDS}_5003" --progress
wait_for -t 10 test -S "${UDS}_5000" -a -S "${UDS}_5001" -a -S "${UDS}_5003" ||
	nk_die "host peers did not start"
fds_of()
{
	find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l
}
FDS0=$(fds_of "$BACKEND")
log_info "backend pid $BACKEND, $FDS0 fds; peers on ${UDS}_5000 (echo), _5001, _5003 (sinks)"

# boot LOG ROLE: QEMU in the background, its PID in QEMU (boot.sh execs
# it; no -t, so no timeout(1) in between: the runner's timeout and the
# cleanup bound its life)
boot()
{
	nk_bg - "$NK_TMP/qemu-$2.log" bash "$VM/boot.sh" -k "$KDIR/vmlinuz" \
		-r "$NK_TMP/initrd.gz" -s "$VU" -c "$1" -a "nkt=$2"
	QEMU=$NK_BG_PID
}

console_has()
{
	grep -q "$2" "$1" 2>/dev/null
}

# nkt_line CONSOLE NAME: the guest's result line for NAME
nkt_line()
{
	grep -a "^NKT [A-Z]* $2 " "$1" | tail -n 1
}

check_nkt()
{
	local line
	line=$(nkt_line "$1" "$2")
	if [ "${line#NKT PASS }" != "$line" ]; then
		nk_pass "guest: ${line#NKT PASS }"
	else
		nk_fail "guest $2: ${line:-no result line}"
	fi
}

# field LINE KEY: the word after KEY
field()
{
	echo "$1" | awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }'
}

# ---------------------------------------------------------------- guest 1
log_step "guest 1: boot (TCG) and run"
CON1=$NK_TMP/console-1.log
T0=$(date +%s)
boot "$CON1" main
if ! wait_for -t 120 console_has "$CON1" "NKT LISTEN 6001"; then
	tail -n 20 "$CON1"
	nk_die "guest 1 did not come up (console above)"
fi
log_info "guest 1 listening after $(($(date +%s) - T0)) s"
check "backend saw the guest driver start" grep -q "guest driver is up (cid 3)" "$NK_TMP/backend.log"

log_step "host -> guest: CONNECT"
out=$("$NK_PY" "$VM/vsock-peer.py" connect "$UDS" 6000 echo 1048576 2>&1)
check "host CONNECT 6000, echo 1 MiB: $out" [ "${out#PEER PASS}" != "$out" ]
out=$("$NK_PY" "$VM/vsock-peer.py" connect "$UDS" 6999 expect-fail 2>&1)
check "host CONNECT 6999 (no guest listener) refused: $out" [ "${out#PEER PASS}" != "$out" ]
PEER_SEND=$("$NK_PY" "$VM/vsock-peer.py" connect "$UDS" 6001 send "$BIG" 2>&1)
check "host CONNECT 6001, 64 MiB sent: $PEER_SEND" [ "${PEER_SEND#PEER PASS}" != "$PEER_SEND" ]

if ! wait_for -t 180 console_has "$CON1" "NKT KILLME"; then
	tail -n 20 "$CON1"
	nk_fail "guest 1 did not finish its tests (console above)"
fi
log_step "guest 1 results"
for t in echo refused send many listen-echo recv; do
	check_nkt "$CON1" "$t"
done
line=$(nkt_line "$CON1" recv)
check_eq "host -> guest 64 MiB: guest received" "$(field "$line" bytes)" "$BIG"
check_eq "host -> guest 64 MiB: CRC host sent = CRC guest got" \
	"$(field "$line" crc)" "$(field "$PEER_SEND" crc)"
line=$(nkt_line "$CON1" send)
sink=$(grep "^SINK conn .* bytes $BIG " "$NK_TMP/sink.log" | tail -n 1)
check_eq "guest -> host 64 MiB: host sink received" "$(field "$sink" bytes)" "$BIG"
check_eq "guest -> host 64 MiB: CRC guest sent = CRC host got" \
	"$(field "$sink" crc)" "$(field "$line" crc)"
line=$(nkt_line "$CON1" many)
check_eq "32 connections at once" "$(field "$line" connections)" 32
check "refused connect came back as a reset" grep -q "NKT PASS refused port 5999: Connection reset" "$CON1"

# ---------------------------------------------------------------- kill
log_step "guest 1 killed mid-transfer"
sink_progress()
{
	grep -q '^SINK progress' "$NK_TMP/sink-kill.log"
}
check "guest 1 streams to ${UDS}_5003" wait_for -t 60 sink_progress
check_eq "the PID is QEMU's" "$(cat "/proc/$QEMU/comm" 2>/dev/null)" qemu-system-x86
kill -KILL "$QEMU" 2>/dev/null
wait "$QEMU" 2>/dev/null
check "backend noticed the front-end go" wait_for -t 10 grep -q "front-end disconnected" "$NK_TMP/backend.log"
check "backend released the open connections" grep -q "released [0-9]* connections: front-end disconnected" "$NK_TMP/backend.log"
sink_closed()
{
	grep -q '^SINK conn 1 ' "$NK_TMP/sink-kill.log"
}
check "the host end of the interrupted stream was closed" wait_for -t 10 sink_closed
log_info "$(grep '^SINK conn 1 ' "$NK_TMP/sink-kill.log")"
check_eq "guest did not outlive the kill" "$(grep -c 'NKT NOT-KILLED' "$CON1")" 0
fds_back()
{
	[ "$(fds_of "$BACKEND")" -eq "$FDS0" ]
}
check "backend is back to its $FDS0 fds (now $(fds_of "$BACKEND"))" wait_for -t 5 fds_back
check "backend still runs" nk_alive "$BACKEND"

# ---------------------------------------------------------------- guest 2
log_step "guest 2: the next guest on the same backend"
CON2=$NK_TMP/console-2.log
boot "$CON2" again
if ! wait_for -t 120 console_has "$CON2" "NKT LISTEN 6000"; then
	tail -n 20 "$CON2"
	nk_die "guest 2 did not come up (console above)"
fi
out=$("$NK_PY" "$VM/vsock-peer.py" connect "$UDS" 6000 echo 65536 2>&1)
check "guest 2: host CONNECT 6000, echo: $out" [ "${out#PEER PASS}" != "$out" ]
check "guest 2 finished" wait_for -t 60 console_has "$CON2" "NKT DONE"
check_nkt "$CON2" echo
check_nkt "$CON2" listen-echo
guest_gone()
{
	! nk_alive "$QEMU"
}
check "guest 2 powered off by itself" wait_for -t 30 guest_gone
check "backend back to its $FDS0 fds after guest 2" wait_for -t 5 fds_back

# ---------------------------------------------------------------- counters
log_step "backend counters"
kill -USR1 "$BACKEND"
sleep 0.5
grep 'stat ' "$NK_TMP/backend.log" | tail -n 20 | sed 's/^.*stat /  /'
bad=$(grep -E 'stat (RING_|DESC_|RX_BAD|PKT_(SHORT|LEN|CID|TYPE|OP|STATE|CREDIT)|RST_DROPPED|UNIX_ERROR)' \
	"$NK_TMP/backend.log" | sed 's/^.*stat //' | sort -u | tr '\n' ' ')
check_eq "no guest violation or Unix error counted" "$bad" ""
check_eq "front-ends served" "$(grep 'stat FRONTEND=' "$NK_TMP/backend.log" | tail -n 1 | sed 's/.*FRONTEND=\([0-9]*\).*/\1/')" 2

nk_stop "$BACKEND"
sockets_gone()
{
	[ ! -e "$VU" ] && [ ! -e "$UDS" ]
}
check "backend removed its sockets on exit" sockets_gone
nk_finish
