#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Real servers and clients in a guest through NetKernel (issue 3):
#   - iperf3, guest as client and as server, both directions;
#   - redis-server in guest 1 bound to its VM address, redis-benchmark from
#     the remote host;
#   - nginx in guest 1 as a reverse proxy to a backend nginx on the remote
#     host (a non-blocking upstream connect per request), under wrk: zero
#     errors.
# Every transfer is also checked from the far side (iperf3's own report,
# redis-benchmark's, wrk's), and the guest has only lo throughout.

. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds iperf3 redis-server redis-benchmark nginx wrk ss
nk_require_build

nk_topo_up

check_eq "g1 has only lo" "$(ip -n "g1-$S" -o link | awk -F': ' '{print $2}' | tr '\n' ' ')" "lo "

# iperf3 -J report -> "BITS BYTES" of the receiver side.
iperf_sum()
{
	"$NK_PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    print("0 0 " + d["error"].replace(" ", "_")); sys.exit()
e = d["end"]["sum_received"]
print(int(e["bits_per_second"]), int(e["bytes"]))' "$1"
}

log_step "iperf3: guest 1 is the client (server on the remote host)"
nk_bg "remote-$S" "$NK_TMP/iperf-s.log" iperf3 -s -B 10.77.0.1 -p 5201
IPERF_SRV=$NK_BG_PID
wait_port "nsm-$S" 10.77.0.1 5201 || nk_die "iperf3 server did not start"
for dir in send recv; do
	flag=
	[ $dir = recv ] && flag=-R
	nk_guest g1 timeout 30 iperf3 -c 10.77.0.1 -p 5201 -t 3 $flag -J \
		>"$NK_TMP/iperf-c-$dir.json" 2>"$NK_TMP/iperf-c-$dir.err"
	check_eq "guest iperf3 client ($dir) exit status" "$?" 0
	read -r bps bytes err <<<"$(iperf_sum "$NK_TMP/iperf-c-$dir.json")"
	log_info "guest client $dir: $((bps / 1000000)) Mbit/s, $bytes bytes ${err:-}"
	check_gt "guest client $dir: bytes received" "${bytes:-0}" $((10 * 1024 * 1024))
done
nk_stop "$IPERF_SRV"

# nsm_listens ADDR:PORT: the NSM holds a listening socket for the guest.
nsm_listens()
{
	ip netns exec "nsm-$S" ss -Htln | grep -Eq "[ :]${1%:*}\]?:${1##*:} "
}

log_step "iperf3: guest 1 is the server (client on the remote host)"
for dir in send recv; do
	flag=
	[ $dir = recv ] && flag=-R
	nk_guest_bg g1 "$NK_TMP/iperf-gs-$dir.log" iperf3 -s -1 -p 5202 --forceflush
	gpid=$NK_BG_PID
	wait_for -t 10 nsm_listens 10.77.0.2:5202 ||
		nk_fail "guest iperf3 server did not start"
	ip netns exec "remote-$S" timeout 30 iperf3 -c 10.77.0.2 -p 5202 -t 3 $flag -J \
		>"$NK_TMP/iperf-r-$dir.json" 2>&1
	check_eq "remote iperf3 client against the guest ($dir) exit status" "$?" 0
	read -r bps bytes err <<<"$(iperf_sum "$NK_TMP/iperf-r-$dir.json")"
	log_info "guest server, remote $dir: $((bps / 1000000)) Mbit/s, $bytes bytes ${err:-}"
	check_gt "guest server, remote $dir: bytes received" "${bytes:-0}" $((10 * 1024 * 1024))
	wait_for -t 5 bash -c "! kill -0 $gpid 2>/dev/null"
	nk_stop "$gpid"
done

log_step "redis-server in guest 1 on 10.77.0.2:6379, redis-benchmark from the remote host"
nk_guest_bg g1 "$NK_TMP/redis.log" redis-server --bind 10.77.0.2 --port 6379 \
	--save '' --appendonly no --protected-mode no --dir "$NK_TMP"
REDIS=$NK_BG_PID
wait_port "remote-$S" 10.77.0.2 6379 || nk_fail "redis in the guest is not reachable"
ip netns exec "remote-$S" timeout 60 redis-benchmark -h 10.77.0.2 -p 6379 -n 20000 -c 20 \
	-t set,get,incr,lpush -q >"$NK_TMP/redis-bench.out" 2>&1
check_eq "redis-benchmark exit status" "$?" 0
tr '\r' '\n' <"$NK_TMP/redis-bench.out" | grep 'requests per second' | sed 's/^/    /'
check_eq "redis-benchmark reported all four tests" \
	"$(tr '\r' '\n' <"$NK_TMP/redis-bench.out" | grep -c 'requests per second')" 4
check "redis-benchmark: no errors" not_grep -i 'error' "$NK_TMP/redis-bench.out"
got=$(ip netns exec "remote-$S" redis-cli -h 10.77.0.2 get counter:__rand_int__)
check "redis answers a GET of a key the benchmark wrote" test -n "$got"
check "redis listens only on its VM address in the NSM" \
	grep -q '10.77.0.2:6379' <<<"$(ip netns exec "nsm-$S" ss -Htln)"
nk_stop "$REDIS"

log_step "nginx reverse proxy in guest 1 -> backend nginx on the remote host, under wrk"
mkdir -p "$NK_TMP/backend/www" "$NK_TMP/proxy/tmp"
head -c 4096 /dev/urandom | base64 >"$NK_TMP/backend/www/index.html"
nk_nginx_prep "$NK_TMP/backend" 1 "10.77.0.1:8080" "$NK_TMP/backend/www"
nk_bg "remote-$S" "$NK_TMP/backend.log" "${NK_NGINX_ARGV[@]}"
BACKEND=$NK_BG_PID
wait_port "nsm-$S" 10.77.0.1 8080 || nk_die "backend nginx did not start"
P=$NK_TMP/proxy
cat >"$P/nginx.conf" <<CONF
user nobody nogroup;
worker_processes 2;
pid $P/nginx.pid;
error_log $P/error.log warn;
events { use epoll; worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $P/tmp/body;
	proxy_temp_path $P/tmp/proxy;
	fastcgi_temp_path $P/tmp/fastcgi;
	uwsgi_temp_path $P/tmp/uwsgi;
	scgi_temp_path $P/tmp/scgi;
	server {
		listen 80;
		location / { proxy_pass http://10.77.0.1:8080; }
	}
}
CONF
nk_guest_bg g1 "$NK_TMP/proxy.log" nginx -p "$P" -c "$P/nginx.conf" -e "$P/error.log" -g 'daemon off;'
PROXY=$NK_BG_PID
wait_port "remote-$S" 10.77.0.2 80 || nk_fail "proxy nginx in the guest is not reachable"
body=$(ip netns exec "remote-$S" curl -s --max-time 5 http://10.77.0.2/index.html)
check "the proxy returns the backend's page" test "$body" = "$(cat "$NK_TMP/backend/www/index.html")"
ip netns exec "remote-$S" wrk -t2 -c16 -d4s http://10.77.0.2/index.html >"$NK_TMP/wrk-proxy.out" 2>&1
check_eq "wrk exit status" "$?" 0
sed 's/^/    /' "$NK_TMP/wrk-proxy.out"
reqs=$(awk '/requests in/ { print $1 }' "$NK_TMP/wrk-proxy.out")
check_gt "wrk requests through the proxy" "${reqs:-0}" 100
check "wrk: no socket errors" not_grep 'Socket errors' "$NK_TMP/wrk-proxy.out"
check "wrk: no non-2xx responses" not_grep 'Non-2xx' "$NK_TMP/wrk-proxy.out"
check "proxy error log has no upstream errors" not_grep -E 'upstream|\[error\]|\[crit\]' "$P/error.log"
check_eq "no TCP socket in g1 after the run" "$(ip netns exec "g1-$S" ss -Htan)" ""
nk_stop "$PROXY" "$BACKEND"

nk_finish
