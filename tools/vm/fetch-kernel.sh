#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Fetch Debian's guest kernel for the QEMU tests into a cache, without ever
# installing a kernel package on the host: `apt-get download` the
# linux-image-amd64 metapackage, find the versioned image it depends on,
# download that and `dpkg-deb -x` it.  The cache keeps vmlinuz, the config
# and the module tree per package version; a second run with the same
# version downloads nothing, and a run without the package registry uses
# the newest cached version.  Prints the kernel directory on stdout:
#
#   DIR/vmlinuz   DIR/config   DIR/modules/<kver>/kernel/...   DIR/version
#
#   tools/vm/fetch-kernel.sh [--cache DIR] [--offline]
#   NK_VM_CACHE=DIR          the cache (default /var/cache/netkernel/vm)

set -euo pipefail

CACHE=${NK_VM_CACHE:-/var/cache/netkernel/vm}
OFFLINE=0
while [ $# -gt 0 ]; do
	case $1 in
	--cache) CACHE=$2; shift 2 ;;
	--offline) OFFLINE=1; shift ;;
	-h|--help) awk 'NR > 3 && /^#/ { sub(/^# ?/, ""); print; next } NR > 3 { exit }' "$0"; exit 0 ;;
	*) echo "fetch-kernel: unknown argument '$1'" >&2; exit 2 ;;
	esac
done

log()
{
	echo "fetch-kernel: $*" >&2
}

newest_cached()
{
	local d
	d=$(find "$CACHE/kernel" -mindepth 2 -maxdepth 2 -name vmlinuz -printf '%h\n' 2>/dev/null |
		sort -V | tail -n 1)
	[ -n "$d" ] && echo "$d"
}

mkdir -p "$CACHE/kernel"
tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt's sandbox user must be able to write the download directory
chmod 0755 "$tmp"

pkg=
# Without package lists (a fresh machine) apt-get download knows nothing:
# update them once and try again.
if [ "$OFFLINE" = 0 ] &&
	{ (cd "$tmp" && apt-get download -q linux-image-amd64 >"$tmp/apt.log" 2>&1) ||
	  { apt-get update -q >>"$tmp/apt.log" 2>&1 &&
	    (cd "$tmp" && apt-get download -q linux-image-amd64 >>"$tmp/apt.log" 2>&1); }; }; then
	# Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
	pkg=$(dpkg-deb -f "$tmp"/linux-image-amd64_*.deb Depends |
		tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n 1)
fi
if [ -z "$pkg" ]; then
	d=$(newest_cached) || true
	if [ -n "$d" ]; then
		log "registry not reached; using the cached $(cat "$d/version")"
		echo "$d"
		exit 0
	fi
	log "cannot download linux-image-amd64 and nothing is cached in $CACHE"
	[ -s "$tmp/apt.log" ] && sed 's/^/  /' "$tmp/apt.log" >&2
	exit 1
fi

ver=$(dpkg-deb -f "$tmp"/linux-image-amd64_*.deb Version)
dir=$CACHE/kernel/$pkg
if [ -s "$dir/vmlinuz" ] && [ -d "$dir/modules" ]; then
	echo "$dir"
	exit 0
fi

log "downloading $pkg (for linux-image-amd64 $ver) into $CACHE"
(cd "$tmp" && apt-get download -q "$pkg" >>"$tmp/apt.log" 2>&1) || {
	sed 's/^/  /' "$tmp/apt.log" >&2
	exit 1
}
mkdir -p "$tmp/x"
dpkg-deb -x "$tmp/$pkg"_*.deb "$tmp/x"
kver=${pkg#linux-image-}
mkdir -p "$tmp/out/modules"
cp "$tmp/x/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
cp "$tmp/x/boot/config-$kver" "$tmp/out/config"
mv "$tmp/x/lib/modules/$kver" "$tmp/out/modules/$kver"
echo "$pkg $(dpkg-deb -f "$tmp/$pkg"_*.deb Version)" >"$tmp/out/version"
rm -rf "$dir"
mv "$tmp/out" "$dir"
log "cached $(cat "$dir/version") in $dir"
echo "$dir"
