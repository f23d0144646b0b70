#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# The NetKernel demo (`make demo`, as root).  Builds a throwaway topology
# with its own suffix: a remote host behind one shared uplink (a veth whose
# host end carries nkd's XDP steering program), a kernel NSM that nkd
# creates and supervises, two guests that have only `lo`.  Then, through
# NetKernel, curl in guest 1 fetches a page from nginx on the remote host,
# and wrk on the remote host drives nginx running inside guest 1 for 3
# seconds.  Prints what the operator sees (nkctl vm list, conn list, stats
# and one bpftool map dump), a short report, and removes everything.

export NK_TEST_NAME=demo
# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/../selftests/lib.sh"

nk_require_root
nk_require_cmds nginx wrk curl bpftool
nk_require_build

NET=10.77.5
cat <<EOF
NetKernel demo
  Guests g1-$S and g2-$S have no network interface, only lo.  Their
  programs run unmodified under nk-run: each socket call goes over the
  guest transport (here unix:..._7531, the hybrid-vsock path) to the VM's
  NSM, which runs it on the Linux stack of its own namespace.  Frames from
  the remote host arrive on the shared uplink, where nkd's XDP program
  steers each one to the NSM that owns its destination VM address.
EOF

nk_topo_uplink_up "$NET"

log_step "remote host: nginx on $NET.1:80"
WWW=$NK_TMP/www-remote
mkdir -p "$WWW"
echo "Hello from the remote host ($S)" >"$WWW/index.html"
nk_nginx_prep "$NK_TMP/nginx-remote" 1 "$NET.1:80" "$WWW"
nk_bg "remote-$S" "$NK_TMP/nginx-remote.log" "${NK_NGINX_ARGV[@]}"
wait_port "remote-$S" $NET.1 80 || nk_die "remote nginx did not start"

log_step "guest 1: curl http://$NET.1/ (under nk-run)"
echo "  \$ ip netns exec g1-$S nk-run --transport $(nk_transport g1) -- curl -sS http://$NET.1/"
page=$(nk_guest g1 curl -sS --max-time 10 http://$NET.1/ 2>&1)
curl_rc=$?
echo "  $page"
if [ $curl_rc -eq 0 ] && [ "$page" = "$(cat "$WWW/index.html")" ]; then
	curl_result="ok, got the remote page"
else
	curl_result="FAILED (curl exit $curl_rc)"
	nk_fail "curl in guest 1"
fi

log_step "guest 1: nginx (master + 2 workers) on port 80 of vm1 ($NET.2)"
GWWW=$NK_TMP/www-g1
mkdir -p "$GWWW"
echo "Hello from nginx in guest 1 ($S)" >"$GWWW/index.html"
nk_nginx_prep "$NK_TMP/nginx-g1" 2 80 "$GWWW"
nk_guest_bg g1 "$NK_TMP/nginx-g1.log" "${NK_NGINX_ARGV[@]}"
wrk_rps="-"
wrk_errors="-"
wrk_requests=0
if wait_port "remote-$S" $NET.2 80 15; then
	echo "  \$ ip netns exec remote-$S wrk -t2 -c32 -d3s http://$NET.2/"
	ip netns exec "remote-$S" wrk -t2 -c32 -d3s http://$NET.2/ >"$NK_TMP/wrk.out" 2>&1 &
	wrk_pid=$!
	sleep 1.5
	nkctl conn list vm vm1 >"$NK_TMP/conns.txt" 2>&1
	wait "$wrk_pid"
	sed 's/^/  /' "$NK_TMP/wrk.out"
	wrk_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$NK_TMP/wrk.out")
	wrk_requests=$(awk '/requests in/ { print $1 }' "$NK_TMP/wrk.out")
	wrk_errors=$(grep -E 'Socket errors|Non-2xx' "$NK_TMP/wrk.out" | sed 's/^ *//' | paste -sd ';' -)
	[ -n "$wrk_errors" ] || wrk_errors=none
	if [ "${wrk_requests:-0}" -eq 0 ] || [ "$wrk_errors" != none ]; then
		nk_fail "wrk against nginx in guest 1"
	fi
else
	nk_fail "nginx in guest 1 is not reachable at $NET.2:80"
fi

log_step "what the operator sees"
echo "  \$ nkctl vm list"
nkctl vm list 2>&1 | sed 's/^/  /'
echo "  \$ nkctl nsm list"
nkctl nsm list 2>&1 | sed 's/^/  /'
echo "  \$ nkctl conn list vm vm1      (taken while wrk ran; first lines)"
head -n 8 "$NK_TMP/conns.txt" 2>/dev/null | sed 's/^/  /'
echo "  \$ nkctl stats show vm vm1      (the XDP program's per-VM counters)"
nkctl stats show vm vm1 2>&1 | sed 's/^/  /'
echo "  \$ bpftool map dump pinned $NK_PIN/addr_vm      (address -> VM, written by nkd)"
bpftool map dump pinned "$NK_PIN/addr_vm" 2>&1 | head -n 30 | sed 's/^/  /'
echo "  \$ ip -n g1-$S link      (the guest has no NIC)"
ip -n "g1-$S" -br link | sed 's/^/  /'
echo "  \$ ip netns exec nk-$NK_NSM1 ss -tlnp      (the guest's listener lives in the NSM)"
ip netns exec "nk-$NK_NSM1" ss -tlnp | sed 's/^/  /'

cat <<EOF

Report
  curl in guest 1 -> remote nginx:   $curl_result
  wrk -> nginx in guest 1 (3 s):     ${wrk_requests:-0} requests, ${wrk_rps:-?} req/s, errors: $wrk_errors
EOF
if [ "$NK_FAILS" -gt 0 ]; then
	echo "  demo FAILED (logs follow)"
	exit 1
fi
echo "  demo OK; cleaning up"
exit 0
