#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# The guest package (issue 9, first part): `make deb` builds
# netkernel-guest_<version>_<arch>.deb; dpkg-deb --info/--contents show the
# library, nk-run, the conffile and the system-wide switch; it installs
# into a throwaway root with `dpkg --root` (never on this host); the
# installed nk-run carries curl through NetKernel; the switch edits
# ROOT/etc/ld.so.preload and only that.

. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds dpkg-deb dpkg curl
nk_require_build

log_step "make deb"
make -s -C "$NK_SRCDIR" OUTPUT="$OUTPUT" deb >"$NK_TMP/deb.out" 2>&1
check_eq "make deb exit status" "$?" 0
deb=$(ls "$OUTPUT"/netkernel-guest_*_"$(dpkg --print-architecture)".deb 2>/dev/null | tail -n 1)
check "the package exists" test -s "$deb"
dpkg-deb --info "$deb" >"$NK_TMP/info" 2>&1
check_eq "dpkg-deb --info exit status" "$?" 0
check "control: package name" grep -q '^ Package: netkernel-guest$' "$NK_TMP/info"
check "control: conffile listed" grep -q 'conffiles' "$NK_TMP/info"
dpkg-deb --contents "$deb" >"$NK_TMP/contents" 2>&1
check_eq "dpkg-deb --contents exit status" "$?" 0
for f in ./usr/lib/netkernel/libnkguest.so ./usr/bin/nk-run ./etc/netkernel/guest.conf \
	./usr/sbin/netkernel-guest-enable ./usr/sbin/netkernel-guest-disable \
	./usr/share/doc/netkernel-guest/README.Debian; do
	check "contents: $f" grep -q " $f" "$NK_TMP/contents"
done

log_step "install into a throwaway root with dpkg --root"
R=$NK_TMP/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/etc"
: >"$R/var/lib/dpkg/status"
dpkg --root="$R" --force-depends --force-script-chrootless -i "$deb" >"$NK_TMP/dpkg.out" 2>&1
check_eq "dpkg --root -i exit status" "$?" 0 || cat "$NK_TMP/dpkg.out"
check "installed: the library" test -f "$R/usr/lib/netkernel/libnkguest.so"
check "installed: guest.conf says vsock:2:7531" grep -q '^transport = vsock:2:7531' "$R/etc/netkernel/guest.conf"
check "dpkg knows the package" grep -q '^Package: netkernel-guest' "$R/var/lib/dpkg/status"

log_step "the system-wide switch acts on ROOT/etc/ld.so.preload only"
NK_ROOT=$R "$R/usr/sbin/netkernel-guest-enable" >/dev/null
check_eq "enable writes the library path" "$(cat "$R/etc/ld.so.preload" 2>/dev/null)" /usr/lib/netkernel/libnkguest.so
NK_ROOT=$R "$R/usr/sbin/netkernel-guest-enable" >/dev/null
check_eq "enable is idempotent" "$(grep -c libnkguest "$R/etc/ld.so.preload")" 1
NK_ROOT=$R "$R/usr/sbin/netkernel-guest-disable" >/dev/null
check "disable removes it" test ! -e "$R/etc/ld.so.preload"

log_step "the installed nk-run carries curl through NetKernel"
nk_topo_up
mkdir -p "$NK_TMP/www"
echo "from-the-remote-host" >"$NK_TMP/www/index.html"
nk_nginx_prep "$NK_TMP/ng" 1 "10.77.0.1:80" "$NK_TMP/www"
nk_bg "remote-$S" "$NK_TMP/ng.log" "${NK_NGINX_ARGV[@]}"
wait_port "nsm-$S" 10.77.0.1 80 || nk_die "nginx on the remote host did not start"
out=$(ip netns exec "g1-$S" "$R/usr/bin/nk-run" --transport "$(nk_transport g1)" -- \
	curl -s --max-time 5 http://10.77.0.1/index.html)
check_eq "curl through the installed nk-run" "$out" "from-the-remote-host"
nk_finish
