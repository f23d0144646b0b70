#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Boot a QEMU guest whose only device (besides the serial console) is a
# vhost-user-vsock-pci served by nk-vhost-vsock (or any vhost-user-vsock
# backend).  TCG, no NIC, no disk: kernel + initramfs, console to a file.
# (-T adds a virtio-net NIC on a tap, or replaces the vsock device.)
# QEMU runs in the foreground as this process (exec), so a caller that
# starts this script in the background holds QEMU's PID in $!.
#
#   tools/vm/boot.sh -k VMLINUZ -r INITRD -s VHOST-SOCKET -c CONSOLE-LOG
#                    [-m MEM] [-a APPEND] [-A ACCEL] [-t SECONDS] [-n] [-- QEMU-ARGS...]
#   tools/vm/boot.sh -k VMLINUZ -r INITRD [-s VHOST-SOCKET] -T TAP -c CONSOLE-LOG [...]
#
#   -k VMLINUZ     kernel image (tools/vm/fetch-kernel.sh DIR/vmlinuz)
#   -r INITRD      initramfs (tools/vm/mkinitramfs.sh)
#   -s SOCKET      the backend's vhost-user socket (nk-vhost-vsock --socket)
#   -T TAP         a virtio-net NIC on the existing tap device TAP (the
#                  guest owning its stack: the benchmark's oracle), with or
#                  instead of the vsock device
#   -c LOG         serial console output ("-": QEMU's stdin/stdout, interactive)
#   -m MEM         guest memory, also the shared memfd backend (default 256M)
#   -a APPEND      extra kernel command line
#   -A ACCEL       tcg (default) or kvm (needs a usable /dev/kvm; -cpu host)
#   -t SECONDS     kill QEMU after this long (timeout(1), whose PID $! then
#                  is; default none)
#   -n             print the QEMU command instead of running it
#
# The guest CID is not a QEMU property of vhost-user-vsock-pci: the backend
# gives it in the device's config space (nk-vhost-vsock --guest-cid).  The
# backend must listen before QEMU starts; QEMU 7.2's vhost-user-vsock-pci
# cannot start on a chardev with reconnect=N (it is not connected yet when
# the device is set up) and does not re-attach to a restarted backend.

set -euo pipefail

KERNEL='' INITRD='' SOCK='' TAP='' CONSOLE='' MEM=256M APPEND='' TMO='' DRY=0 ACCEL=tcg
usage()
{
	awk 'NR > 3 && /^#/ { sub(/^# ?/, ""); print; next } NR > 3 { exit }' "$0" >&2
	exit 2
}
while getopts k:r:s:T:c:m:a:A:t:nh opt; do
	case $opt in
	k) KERNEL=$OPTARG ;;
	r) INITRD=$OPTARG ;;
	s) SOCK=$OPTARG ;;
	T) TAP=$OPTARG ;;
	c) CONSOLE=$OPTARG ;;
	m) MEM=$OPTARG ;;
	a) APPEND=$OPTARG ;;
	A) ACCEL=$OPTARG ;;
	t) TMO=$OPTARG ;;
	n) DRY=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
if [ -z "$KERNEL" ] || [ -z "$INITRD" ] || [ -z "$SOCK$TAP" ] || [ -z "$CONSOLE" ]; then
	usage
fi
DEV=()
[ -z "$SOCK" ] || DEV+=(-chardev "socket,id=vu,path=$SOCK" -device "vhost-user-vsock-pci,chardev=vu")
[ -z "$TAP" ] || DEV+=(-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,romfile=")

case $ACCEL in
tcg) CPU=max ;;
kvm) CPU=host ;;
*) echo "boot.sh: -A $ACCEL: tcg or kvm" >&2; exit 2 ;;
esac
if [ "$CONSOLE" = - ]; then
	CHARDEV=stdio,id=con
else
	CHARDEV=file,id=con,path=$CONSOLE
fi

QEMU=${QEMU:-qemu-system-x86_64}
# shellcheck disable=SC2054 # the commas are QEMU's
cmd=("$QEMU" -nodefaults -display none -no-user-config -no-reboot
	-machine pc -accel "$ACCEL" -cpu "$CPU" -smp 1 -m "$MEM"
	-object "memory-backend-memfd,id=mem,size=$MEM,share=on" -numa node,memdev=mem
	-nic none
	"${DEV[@]}"
	-chardev "$CHARDEV" -serial chardev:con
	-monitor none
	-kernel "$KERNEL" -initrd "$INITRD"
	-append "console=ttyS0 panic=-1 loglevel=4 $APPEND"
	"$@")
if [ -n "$TMO" ]; then
	cmd=(timeout --kill-after=5 "$TMO" "${cmd[@]}")
fi
if [ "$DRY" = 1 ]; then
	printf '%q ' "${cmd[@]}"
	echo
	exit 0
fi
exec "${cmd[@]}"
