#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# The NetKernel demo (`make demo`, as root).  Builds the test topology in
# throwaway namespaces with its own suffix: a remote host, a kernel NSM
# behind a veth uplink, two guests that have only `lo`; starts nkd,
# registers nsm1, vm1 and vm2 with nkctl; then, through NetKernel, curl in
# guest 1 fetches a page from nginx on the remote host, and wrk on the
# remote host drives nginx running inside guest 1 for 3 seconds.  Prints
# what nkctl shows and a short report, and removes everything it made.

export NK_TEST_NAME=demo
# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/../selftests/lib.sh"

nk_require_root
nk_require_cmds nginx wrk curl
nk_require_build

cat <<EOF
NetKernel demo
  Guests g1-$S and g2-$S have no network interface, only lo.  Their
  programs run unmodified under nk-run: each socket call goes over the
  guest transport (here unix:..._7531, the hybrid-vsock path) to nkd,
  which hands the stream to the NSM; the NSM runs it on the Linux stack
  of nsm-$S, whose veth up0 leads to the "remote host" remote-$S.
EOF

nk_topo_up

log_step "remote host: nginx on 10.77.0.1:80"
WWW=$NK_TMP/www-remote
mkdir -p "$WWW"
echo "Hello from the remote host ($S)" >"$WWW/index.html"
nk_nginx_prep "$NK_TMP/nginx-remote" 1 "10.77.0.1:80" "$WWW"
nk_bg "remote-$S" "$NK_TMP/nginx-remote.log" "${NK_NGINX_ARGV[@]}"
wait_port "remote-$S" 10.77.0.1 80 || nk_die "remote nginx did not start"

log_step "guest 1: curl http://10.77.0.1/ (under nk-run)"
echo "  \$ ip netns exec g1-$S nk-run --transport $(nk_transport g1) -- curl -sS http://10.77.0.1/"
page=$(nk_guest g1 curl -sS --max-time 10 http://10.77.0.1/ 2>&1)
curl_rc=$?
echo "  $page"
if [ $curl_rc -eq 0 ] && [ "$page" = "$(cat "$WWW/index.html")" ]; then
	curl_result="ok, got the remote page"
else
	curl_result="FAILED (curl exit $curl_rc)"
	nk_fail "curl in guest 1"
fi

log_step "guest 1: nginx (master + 2 workers) on port 80 of vm1 (10.77.0.2)"
GWWW=$NK_TMP/www-g1
mkdir -p "$GWWW"
echo "Hello from nginx in guest 1 ($S)" >"$GWWW/index.html"
nk_nginx_prep "$NK_TMP/nginx-g1" 2 80 "$GWWW"
nk_guest_bg g1 "$NK_TMP/nginx-g1.log" "${NK_NGINX_ARGV[@]}"
wrk_rps="-"
wrk_errors="-"
wrk_requests=0
if wait_port "remote-$S" 10.77.0.2 80 15; then
	echo "  \$ ip netns exec remote-$S wrk -t2 -c32 -d3s http://10.77.0.2/"
	ip netns exec "remote-$S" wrk -t2 -c32 -d3s http://10.77.0.2/ >"$NK_TMP/wrk.out" 2>&1
	sed 's/^/  /' "$NK_TMP/wrk.out"
	wrk_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$NK_TMP/wrk.out")
	wrk_requests=$(awk '/requests in/ { print $1 }' "$NK_TMP/wrk.out")
	wrk_errors=$(grep -E 'Socket errors|Non-2xx' "$NK_TMP/wrk.out" | sed 's/^ *//' | paste -sd ';' -)
	[ -n "$wrk_errors" ] || wrk_errors=none
	if [ "${wrk_requests:-0}" -eq 0 ] || [ "$wrk_errors" != none ]; then
		nk_fail "wrk against nginx in guest 1"
	fi
else
	nk_fail "nginx in guest 1 is not reachable at 10.77.0.2:80"
fi

log_step "what the operator sees"
echo "  \$ nkctl vm list"
nkctl vm list 2>&1 | sed 's/^/  /'
echo "  \$ nkctl nsm list"
nkctl nsm list 2>&1 | sed 's/^/  /'
echo "  \$ ip -n g1-$S link      (the guest has no NIC)"
ip -n "g1-$S" -br link | sed 's/^/  /'
echo "  \$ ip netns exec nsm-$S ss -tlnp      (the guest's listener lives in the NSM)"
ip netns exec "nsm-$S" ss -tlnp | sed 's/^/  /'

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
