#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Build the guest package netkernel-guest_<version>_amd64.deb with dpkg-deb
# from the built tree: the guest library, nk-run, /etc/netkernel/guest.conf
# (a conffile), the system-wide switch and its documentation.
#
#   tools/mkdeb.sh OUTPUT-DIR VERSION [DEST-DIR]
#
# The package is written to DEST-DIR (default OUTPUT-DIR), so a caller
# (tools/nk-vm) can build its own copy without racing `make deb`.
set -euo pipefail

out=${1:?output dir}
version=${2:?version}
dest=${3:-$out}
src=$(cd "$(dirname "$0")/.." && pwd)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

for f in libnkguest.so nk-run; do
	[ -e "$out/$f" ] || { echo "mkdeb: $out/$f is missing (run make)" >&2; exit 1; }
done

install -d "$stage/DEBIAN" "$stage/usr/lib/netkernel" "$stage/usr/bin" "$stage/usr/sbin" \
	"$stage/etc/netkernel" "$stage/usr/share/doc/netkernel-guest"
install -m 0644 "$out/libnkguest.so" "$stage/usr/lib/netkernel/libnkguest.so"
install -m 0755 "$out/nk-run" "$stage/usr/bin/nk-run"
install -m 0755 "$src/guest-shim/pkg/netkernel-guest-enable" "$stage/usr/sbin/netkernel-guest-enable"
ln -s netkernel-guest-enable "$stage/usr/sbin/netkernel-guest-disable"
install -m 0644 "$src/guest-shim/pkg/guest.conf" "$stage/etc/netkernel/guest.conf"
install -m 0644 "$src/guest-shim/pkg/README.Debian" "$stage/usr/share/doc/netkernel-guest/README.Debian"
for d in protocol.md compat.md; do
	[ -e "$src/docs/$d" ] && install -m 0644 "$src/docs/$d" "$stage/usr/share/doc/netkernel-guest/$d"
done
strip --strip-unneeded "$stage/usr/lib/netkernel/libnkguest.so" "$stage/usr/bin/nk-run"

size=$(du -sk "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CTRL
Package: netkernel-guest
Version: $version
Architecture: $arch
Maintainer: NetKernel developers <dev@netkernel.invalid>
Installed-Size: $size
Depends: libc6
Section: net
Priority: optional
Description: NetKernel guest library: sockets through the host's network stack
 Makes unmodified, dynamically linked programs in a VM use NetKernel: their
 TCP and UDP sockets travel over virtio-vsock to the host, where the
 operator's Network Stack Modules run them on a real network stack.
 Provides nk-run (one program), netkernel-guest-enable/-disable (every
 program, through /etc/ld.so.preload) and /etc/netkernel/guest.conf.
CTRL
echo /etc/netkernel/guest.conf >"$stage/DEBIAN/conffiles"
deb=$dest/netkernel-guest_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
