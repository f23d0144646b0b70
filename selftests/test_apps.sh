#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Real servers and clients in a guest through NetKernel (issue 3):
#   - iperf3, guest as client and as server, both directions;
#   - redis-server in guest 1 bound to its VM address, redis-benchmark from
#     the remote host;
#   - nginx in guest 1 as a reverse proxy to a backend nginx on the remote
#     host (a non-blocking upstream connect per request), under wrk: zero
#     errors;
#   - PostgreSQL in guest 1 (a forked backend per connection), pgbench from
#     the remote host (one connection per client, and a new one per
#     transaction), psql from guest 2;
#   - Node.js: an HTTP server in guest 1 under wrk, a client in guest 2
#     POSTing to it.
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

log_step "PostgreSQL in guest 1 (a process per connection), pgbench from the remote host, psql from guest 2"
# The postmaster listens through NetKernel and forks a backend for every
# connection, which inherits the accepted socket; -C opens a new
# connection for every transaction.  psql in guest 2 reaches it through
# the NSM as well.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/pgbench" ] && command -v psql >/dev/null; then
	PGD=$NK_TMP/pg
	mkdir -p "$PGD"
	chown postgres "$PGD"
	runuser -u postgres -- "$PGBIN/initdb" -D "$PGD/data" -A trust >"$NK_TMP/initdb.log" 2>&1 ||
		nk_die "initdb failed: $(tail -3 "$NK_TMP/initdb.log")"
	echo "host all all 0.0.0.0/0 trust" >>"$PGD/data/pg_hba.conf"
	nk_bg "g1-$S" "$NK_TMP/postgres.log" runuser -u postgres -- "$OUTPUT/nk-run" \
		--transport "$(nk_transport g1)" -- "$PGBIN/postgres" -D "$PGD/data" -k "$PGD" \
		-c listen_addresses=10.77.0.2 -c port=5432
	PG=$NK_BG_PID
	wait_port "remote-$S" 10.77.0.2 5432 || nk_fail "postgres in the guest is not reachable"
	check "the NSM holds postgres' listener" \
		grep -q '10.77.0.2:5432' <<<"$(ip netns exec "nsm-$S" ss -Htln)"
	ip netns exec "remote-$S" timeout 60 "$PGBIN/pgbench" -h 10.77.0.2 -U postgres -i -s 2 postgres \
		>"$NK_TMP/pgbench-i.out" 2>&1
	check_eq "pgbench -i exit status" "$?" 0
	for mode in keep new; do
		flag=
		[ $mode = new ] && flag=-C
		ip netns exec "remote-$S" timeout 60 "$PGBIN/pgbench" -h 10.77.0.2 -U postgres \
			-c 8 -j 2 -T 3 -S $flag postgres >"$NK_TMP/pgbench-$mode.out" 2>&1
		check_eq "pgbench -S $flag exit status" "$?" 0
		grep -E '^(tps|number of failed)' "$NK_TMP/pgbench-$mode.out" | sed 's/^/    /'
		n=$(awk '/number of transactions actually processed/ { split($NF, a, "/"); print a[1] }' \
			"$NK_TMP/pgbench-$mode.out")
		check_gt "pgbench -S $flag: transactions processed" "${n:-0}" 50
		check "pgbench -S $flag: none failed" grep -q '^number of failed transactions: 0 ' \
			"$NK_TMP/pgbench-$mode.out"
	done
	check_eq "psql in guest 2: the 200000 rows pgbench wrote" \
		"$(nk_guest g2 timeout 20 psql -h 10.77.0.2 -U postgres -Atc 'select count(*) from pgbench_accounts' postgres 2>&1)" \
		200000
	check "postgres logged no error" not_grep -E 'ERROR|FATAL|PANIC' "$NK_TMP/postgres.log"
	nk_stop "$PG"
else
	nk_fail "PostgreSQL is not installed (tools/install-deps.sh installs postgresql)"
fi

log_step "Node.js: an HTTP server in guest 1 under wrk, a client in guest 2"
# libuv: non-blocking sockets, epoll, accept in a loop, writev.
cat >"$NK_TMP/srv.js" <<'JS'
const http = require('http');
http.createServer((req, res) => {
	let n = 0;
	req.on('data', d => { n += d.length; });
	req.on('end', () => res.end('got ' + n + '\n'));
}).listen(8080, process.argv[2]);
JS
cat >"$NK_TMP/cli.js" <<'JS'
const http = require('http');
let done = 0, bad = 0;
const body = 'x'.repeat(200000);
for (let i = 0; i < 20; i++) {
	const r = http.request({ host: process.argv[2], port: 8080, method: 'POST' }, res => {
		let b = '';
		res.on('data', d => { b += d; });
		res.on('end', () => { if (b !== 'got 200000\n') bad++; if (++done === 20) console.log('done ' + done + ' bad ' + bad); });
	});
	r.on('error', e => { console.log('error ' + e.message); process.exit(1); });
	r.end(body);
}
JS
if command -v node >/dev/null; then
	nk_guest_bg g1 "$NK_TMP/node.log" node "$NK_TMP/srv.js" 10.77.0.2
	NODE=$NK_BG_PID
	wait_port "remote-$S" 10.77.0.2 8080 || nk_fail "node in the guest is not reachable"
	check_eq "node client in guest 2: 20 POSTs of 200000 bytes answered" \
		"$(nk_guest g2 timeout 20 node "$NK_TMP/cli.js" 10.77.0.2 2>&1)" "done 20 bad 0"
	ip netns exec "remote-$S" wrk -t2 -c16 -d2s http://10.77.0.2:8080/ >"$NK_TMP/wrk-node.out" 2>&1
	check_eq "wrk against node: exit status" "$?" 0
	grep 'Requests/sec' "$NK_TMP/wrk-node.out" | sed 's/^/    /'
	reqs=$(awk '/requests in/ { print $1 }' "$NK_TMP/wrk-node.out")
	check_gt "wrk requests answered by node" "${reqs:-0}" 100
	check "wrk against node: no socket errors" not_grep 'Socket errors' "$NK_TMP/wrk-node.out"
	check "node logged nothing" test ! -s "$NK_TMP/node.log"
	nk_stop "$NODE"
else
	nk_fail "node is not installed (tools/install-deps.sh installs nodejs)"
fi

nk_finish
