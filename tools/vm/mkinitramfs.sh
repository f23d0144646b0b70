#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Build a busybox initramfs for the QEMU guests of the tests and demos.
# The guest's /init mounts proc, sys and devtmpfs, loads the modules named
# with -m (and what they depend on, read from each module's modinfo, in
# dependency order), runs /etc/nk-init.sh if one was given with -i, and
# powers the machine off when it returns.  Lines on the console starting
# with "nk-init:" come from /init itself.
#
#   tools/vm/mkinitramfs.sh -k KDIR -o OUT.cpio.gz [-m MODULE]... [-f SRC:DST]...
#                           [-d DIR]... [-i SCRIPT] [-b BUSYBOX]
#
#   -k KDIR      kernel directory from tools/vm/fetch-kernel.sh
#   -o OUT       the initramfs (gzip'd newc cpio)
#   -m MODULE    a module name (vmw_vsock_virtio_transport); repeatable;
#                default: the virtio-vsock guest modules
#   -f SRC:DST   copy a host file into the image (DST absolute); repeatable
#   -d DIR       merge the tree DIR into the image's root (a staging root
#                with packages installed by dpkg --root, libraries...);
#                repeatable, copied before the -f files
#   -i SCRIPT    the guest's test script, run as /etc/nk-init.sh
#   -b BUSYBOX   a statically linked busybox (default /bin/busybox, from
#                Debian's busybox-static)

set -euo pipefail

KDIR='' OUT='' SCRIPT='' BUSYBOX=/bin/busybox
MODS=()
FILES=()
TREES=()
usage()
{
	awk 'NR > 3 && /^#/ { sub(/^# ?/, ""); print; next } NR > 3 { exit }' "$0" >&2
	exit 2
}
while getopts k:o:m:f:d:i:b:h opt; do
	case $opt in
	k) KDIR=$OPTARG ;;
	o) OUT=$OPTARG ;;
	m) MODS+=("$OPTARG") ;;
	f) FILES+=("$OPTARG") ;;
	d) TREES+=("$OPTARG") ;;
	i) SCRIPT=$OPTARG ;;
	b) BUSYBOX=$OPTARG ;;
	*) usage ;;
	esac
done
if [ -z "$KDIR" ] || [ -z "$OUT" ]; then
	usage
fi
[ ${#MODS[@]} -gt 0 ] || MODS=(virtio_pci vmw_vsock_virtio_transport)

die()
{
	echo "mkinitramfs: $*" >&2
	exit 1
}

[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' &&
	ldd "$BUSYBOX" >/dev/null 2>&1; then
	die "$BUSYBOX is dynamically linked; install busybox-static"
fi
MDIR=$(find "$KDIR/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)
[ -n "$MDIR" ] || die "no module tree under $KDIR/modules"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,etc,proc,sys,dev,tmp,root,lib/modules}
cp "$BUSYBOX" "$stage/bin/busybox"

# Module name -> file, and its depends= list from the .modinfo strings.
declare -A MODFILE=()
while IFS= read -r f; do
	n=${f##*/}
	n=${n%%.ko*}
	MODFILE[$n]=$f
	MODFILE[${n//-/_}]=$f
done < <(find "$MDIR/kernel" -name '*.ko*')

mod_deps()
{
	local f=${MODFILE[$1]}
	case $f in
	*.ko.xz) xz -dc "$f" ;;
	*.ko.zst) zstd -dc "$f" ;;
	*.ko.gz) gzip -dc "$f" ;;
	*) cat "$f" ;;
	esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '
}

declare -A SEEN=()
ORDER=()
visit()
{
	local m=${1//-/_} d
	[ -n "${SEEN[$m]:-}" ] && return 0
	SEEN[$m]=1
	[ -n "${MODFILE[$m]:-}" ] || {
		# built in (=y) modules have no file: check the config
		echo "mkinitramfs: note: no module file for $m (built in?)" >&2
		return 0
	}
	for d in $(mod_deps "$m"); do
		visit "$d"
	done
	ORDER+=("$m")
}
for m in "${MODS[@]}"; do
	visit "$m"
done

: >"$stage/lib/modules/load.order"
for m in "${ORDER[@]}"; do
	f=${MODFILE[$m]}
	case $f in
	*.ko.xz) xz -dc "$f" >"$stage/lib/modules/$m.ko" ;;
	*.ko.zst) zstd -dc "$f" >"$stage/lib/modules/$m.ko" ;;
	*.ko.gz) gzip -dc "$f" >"$stage/lib/modules/$m.ko" ;;
	*) cp "$f" "$stage/lib/modules/$m.ko" ;;
	esac
	echo "$m" >>"$stage/lib/modules/load.order"
done

for tree in "${TREES[@]}"; do
	[ -d "$tree" ] || die "-d $tree: not a directory"
	cp -a "$tree/." "$stage/"
done
for spec in "${FILES[@]}"; do
	src=${spec%%:*}
	dst=${spec#*:}
	[ -e "$src" ] || die "-f $spec: $src does not exist"
	mkdir -p "$stage$(dirname "$dst")"
	cp -a "$src" "$stage$dst"
done
if [ -n "$SCRIPT" ]; then
	cp "$SCRIPT" "$stage/etc/nk-init.sh"
	chmod 0755 "$stage/etc/nk-init.sh"
fi

cat >"$stage/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for m in $(cat /lib/modules/load.order); do
	insmod "/lib/modules/$m.ko" || echo "nk-init: insmod $m failed"
done
echo "nk-init: modules loaded: $(cat /lib/modules/load.order | tr '\n' ' ')"
if [ -x /etc/nk-init.sh ]; then
	/etc/nk-init.sh
	echo "nk-init: /etc/nk-init.sh exited $?"
else
	echo "nk-init: no /etc/nk-init.sh; a shell on the console"
	setsid cttyhack sh
fi
sync
poweroff -f
EOF
chmod 0755 "$stage/init"

mkdir -p "$(dirname "$OUT")"
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "mkinitramfs: $OUT: modules ${ORDER[*]}" >&2
