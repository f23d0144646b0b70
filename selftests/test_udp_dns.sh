#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck disable=SC2317 # helper functions are called through check/wait_for
#
# Issue 6 proof with real programs in a guest that has no NIC:
#   - name resolution with the guest's stock resolver.  glibc's resolver
#     opens its sockets inside libc, where LD_PRELOAD cannot reach them, so
#     the guest resolves through a local stub: dnsmasq in the guest under
#     nk-run (listening on 127.0.0.53, loopback, so it stays in the guest)
#     forwards to dnsmasq on the remote host through NetKernel.  getent
#     ahosts and python's socket.getaddrinfo get the remote records,
#     including one too large for a 512-byte UDP answer (40 A records: the
#     stub truncates, glibc retries over TCP, the stub forwards over TCP);
#     the remote dnsmasq logs the queries as coming from the VM, 10.77.0.2.
#     A hand-made DNS query from python over UDP/IPv6 to [fd77::1]:53, too.
#   - iperf3 -u, guest as client, both directions;
#   - python asyncio TCP and UDP echo, server in the guest with the client
#     on the remote host and the other way round, over IPv4 and IPv6;
#   - curl over IPv6 from the guest to nginx on the remote host;
#   - nginx in the guest on [::]:80 ipv6only=off, reached over IPv4 and
#     IPv6 from the remote host (its log shows ::ffff:10.77.0.1 and fd77::1).
#
# /etc/netns/g1-$S/resolv.conf (which `ip netns exec` mounts over
# /etc/resolv.conf) is created here and removed at exit.

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

nk_require_root
nk_require_cmds dnsmasq getent iperf3 nginx curl ss
[ -x "$NK_PY" ] || nk_skip "missing $NK_PY"
nk_require_build

NETNS_ETC=/etc/netns/g1-$S
NETNS_ETC_MADE=0
[ -d /etc/netns ] || NETNS_ETC_MADE=1
dns_cleanup()
{
	local rc=$?
	rm -rf "$NETNS_ETC"
	[ "$NETNS_ETC_MADE" = 0 ] || rmdir /etc/netns 2>/dev/null
	(exit "$rc")
	cleanup
}
trap dns_cleanup EXIT

# shellcheck disable=SC2034 # read by nk_topo_up
NK_TOPO_V6=1
nk_topo_up
check_eq "g1 has only lo" "$(ip -n "g1-$S" -o link | awk -F': ' '{print $2}' | tr '\n' ' ')" "lo "

# ---------------------------------------------------------------- DNS
log_step "dnsmasq on the remote host (10.77.0.1, fd77::1, port 53, UDP and TCP)"
RLOG=$NK_TMP/dns-remote.log
BIGN=40
# shellcheck disable=SC2054 # the commas belong to the option values
records=(--local=/nk.test/ --host-record=web.nk.test,10.77.0.1,fd77::1 --host-record=db.nk.test,10.77.0.50
	--host-record=v6only.nk.test,fd77::99)
for ((i = 1; i <= BIGN; i++)); do
	records+=("--host-record=big.nk.test,10.77.1.$i")
done
nk_bg "remote-$S" "$NK_TMP/dnsmasq-remote.out" dnsmasq --keep-in-foreground --conf-file=/dev/null \
	--no-resolv --no-hosts --bind-interfaces --listen-address=10.77.0.1,fd77::1 --port=53 \
	--user=root --pid-file= --log-queries --log-facility="$RLOG" "${records[@]}"
wait_for -t 10 grep -q "started, version" "$RLOG" || nk_die "remote dnsmasq did not start"
wait_port "nsm-$S" 10.77.0.1 53 || nk_die "remote dnsmasq does not answer on TCP"

log_step "stub resolver in guest 1: dnsmasq under nk-run on 127.0.0.53 -> 10.77.0.1"
mkdir -p "$NETNS_ETC"
printf 'nameserver 127.0.0.53\noptions timeout:2 attempts:2\n' >"$NETNS_ETC/resolv.conf"
SLOG=$NK_TMP/dns-stub.log
# --edns-packet-max=512: the stub asks for plain-size UDP answers upstream,
# so the large record comes back truncated and is fetched again over TCP.
nk_guest_bg g1 "$NK_TMP/dnsmasq-stub.out" env NK_LOG=1 NK_LOG_FILE="$NK_TMP/shim-stub.log" \
	dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-negcache \
	--cache-size=0 --listen-address=127.0.0.53 --bind-interfaces --port=53 --pid-file= \
	--server=10.77.0.1 --edns-packet-max=512 --log-queries --log-facility="$SLOG"
STUB=$NK_BG_PID
wait_for -t 10 grep -q "started, version" "$SLOG" || nk_fail "the stub dnsmasq did not start"
wait_port "g1-$S" 127.0.0.53 53 || nk_fail "the stub does not listen on 127.0.0.53"
check_eq "g1 still has only lo" "$(ip -n "g1-$S" -o link | awk -F': ' '{print $2}' | tr '\n' ' ')" "lo "

# getent ahosts (AF_UNSPEC): ahostsv4/ahostsv6 ask for AI_ADDRCONFIG with one
# family, and a guest without a NIC has no address of either family for
# glibc to see (docs/compat.md).
log_step "getent ahosts in guest 1 (glibc's resolver -> stub -> NetKernel -> remote dnsmasq)"
out=$(ip netns exec "g1-$S" timeout 20 getent ahosts web.nk.test)
echo "$out" | sed 's/^/    /'
check "web.nk.test has its IPv4 address" grep -q '^10\.77\.0\.1 ' <<<"$out"
check "web.nk.test has its IPv6 address" grep -q '^fd77::1 ' <<<"$out"
out=$(ip netns exec "g1-$S" timeout 20 getent ahosts db.nk.test 2>&1)
echo "$out" | sed 's/^/    /'
check "db.nk.test resolves to 10.77.0.50" grep -q '^10\.77\.0\.50 ' <<<"$out"
out=$(ip netns exec "g1-$S" timeout 20 getent ahosts v6only.nk.test 2>&1)
echo "$out" | sed 's/^/    /'
check "v6only.nk.test resolves to fd77::99" grep -q '^fd77::99 ' <<<"$out"
ip netns exec "g1-$S" timeout 20 getent ahosts nonexistent.nk.test >/dev/null
check_eq "a name the server does not know fails (getent status 2)" "$?" 2
out=$(ip netns exec "g1-$S" timeout 30 getent ahosts big.nk.test 2>&1)
echo "$out" | head -n 3 | sed 's/^/    /'
n=$(awk '$2 == "STREAM"' <<<"$out" | sort -u | wc -l)
check_eq "big.nk.test: all $BIGN addresses (a TCP answer; UDP holds at most 30)" "$n" "$BIGN"

log_step "python socket.getaddrinfo in guest 1"
out=$(ip netns exec "g1-$S" timeout 30 "$NK_PY" -c '
import socket
for name in ("web.nk.test", "big.nk.test"):
    r = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    print(name, len(r), " ".join(sorted(a[4][0] for a in r)))
' 2>&1)
echo "$out" | sed 's/^/    /'
check "getaddrinfo(web.nk.test): 10.77.0.1 and fd77::1" \
	grep -Eq '^web.nk.test 2 (10.77.0.1 fd77::1|fd77::1 10.77.0.1)$' <<<"$out"
check "getaddrinfo(big.nk.test): $BIGN addresses" grep -q "^big.nk.test $BIGN " <<<"$out"

log_step "the queries reached the remote server from the VM, over UDP and TCP"
check "remote dnsmasq logged web.nk.test from 10.77.0.2" \
	grep -q 'query\[A\] web.nk.test from 10.77.0.2' "$RLOG"
check "remote dnsmasq logged AAAA web.nk.test from 10.77.0.2" \
	grep -q 'query\[AAAA\] web.nk.test from 10.77.0.2' "$RLOG"
check "remote dnsmasq logged big.nk.test from 10.77.0.2" \
	grep -q 'query\[A\] big.nk.test from 10.77.0.2' "$RLOG"
# dnsmasq serves each TCP connection in a child process: a query logged
# under another PID than the server's came over TCP.
rpid=$(sed -n 's/.*dnsmasq\[\([0-9]*\)\]: started.*/\1/p' "$RLOG" | head -n 1)
tcpq=$(grep 'query\[A\] big.nk.test from 10.77.0.2' "$RLOG" | grep -vc "dnsmasq\[${rpid:-0}\]")
check_gt "big.nk.test was asked again over TCP (TCP handler processes logged it)" "$tcpq" 0
udpq=$(grep 'query\[A\] big.nk.test from 10.77.0.2' "$RLOG" | grep -c "dnsmasq\[${rpid:-0}\]")
check_gt "and first over UDP (the server process logged it)" "$udpq" 0
check "no query came from anywhere else" not_grep -E 'query\[.*from (127|10\.77\.0\.[^2])' "$RLOG"
check "the stub forwarded to 10.77.0.1" grep -q 'forwarded big.nk.test to 10.77.0.1' "$SLOG"
sed 's/^/    remote: /' "$RLOG" | grep -E 'query|reply' | tail -n 8

log_step "a DNS query over UDP/IPv6 from python through NetKernel (connected, as a resolver)"
cat >"$NK_TMP/dnsq.py" <<'PY'
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
q += struct.pack(">HH", 28, 1)			# AAAA, IN
fam = socket.AF_INET6 if ":" in server else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((server, 53))
s.send(q)
r = s.recv(4096)
ident, flags, qd, an = struct.unpack(">HHHH", r[:8])
print("id=%#x rcode=%d answers=%d peer=%s" % (ident, flags & 15, an, s.getpeername()[0]))
PY
out=$(nk_guest g1 "$NK_PY" "$NK_TMP/dnsq.py" fd77::1 web.nk.test 2>&1)
echo "    $out"
check_eq "AAAA web.nk.test from [fd77::1]:53 over UDP/IPv6" "$out" "id=0x1234 rcode=0 answers=1 peer=fd77::1"
check "remote dnsmasq logged the IPv6 query from fd77::2" \
	grep -q 'query\[AAAA\] web.nk.test from fd77::2' "$RLOG"
nk_stop "$STUB"

# ---------------------------------------------------------------- iperf3 -u
log_step "iperf3 -u: guest 1 is the client, both directions"
nk_bg "remote-$S" "$NK_TMP/iperf-s.log" iperf3 -s -B 10.77.0.1 -p 5201
IPERF=$NK_BG_PID
wait_port "nsm-$S" 10.77.0.1 5201 || nk_die "iperf3 server did not start"
for dir in send recv; do
	flag=
	[ $dir = recv ] && flag=-R
	nk_guest g1 timeout 30 iperf3 -c 10.77.0.1 -p 5201 -u -b 50M -l 1400 -t 3 $flag -J \
		>"$NK_TMP/iperf-u-$dir.json" 2>"$NK_TMP/iperf-u-$dir.err"
	check_eq "guest iperf3 -u client ($dir) exit status" "$?" 0
	read -r pkts lost pct mbps err <<<"$("$NK_PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    print("0 0 0 0 " + d["error"].replace(" ", "_")); sys.exit()
s = d["end"]["sum"]
print(s["packets"], s["lost_packets"], "%.2f" % s["lost_percent"], int(s["bits_per_second"] / 1e6))
' "$NK_TMP/iperf-u-$dir.json")"
	log_info "iperf3 -u $dir: $pkts datagrams, $lost lost ($pct%), $mbps Mbit/s ${err:-}"
	# Loss depends on the load of the machine: reported, not judged.
	check_gt "iperf3 -u $dir: datagrams counted" "${pkts:-0}" 1000
	check_gt "iperf3 -u $dir: datagrams received" "$((${pkts:-0} - ${lost:-0}))" 100
	check "iperf3 -u $dir: loss is reported" test -n "${pct:-}"
done
nk_stop "$IPERF"

# ---------------------------------------------------------------- asyncio
log_step "python asyncio echo, TCP and UDP, both ends"
cat >"$NK_TMP/aecho.py" <<'PY'
import asyncio, socket, sys

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
N = 50

class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t
    def datagram_received(self, data, addr):
        self.t.sendto(data, addr)

class UdpClient(asyncio.DatagramProtocol):
    def __init__(self):
        self.q = asyncio.Queue()
    def datagram_received(self, data, addr):
        self.q.put_nowait((data, addr))
    def error_received(self, exc):
        self.q.put_nowait((None, exc))

async def tcp_echo(r, w):
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()

async def main():
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    if mode == "tcp-server":
        srv = await asyncio.start_server(tcp_echo, host, port, family=fam)
        print("ready", flush=True)
        await srv.serve_forever()
    elif mode == "udp-server":
        await asyncio.get_running_loop().create_datagram_endpoint(
            UdpEcho, local_addr=(host, port), family=fam)
        print("ready", flush=True)
        await asyncio.Event().wait()
    elif mode == "tcp-client":
        r, w = await asyncio.open_connection(host, port)
        ok = 0
        for i in range(N):
            msg = b"tcp %d " % i * 50
            w.write(msg)
            await w.drain()
            ok += await asyncio.wait_for(r.readexactly(len(msg)), 5) == msg
        w.close()
        print("echoed %d/%d peer=%s" % (ok, N, w.get_extra_info("peername")[0]))
    elif mode == "udp-client":
        t, p = await asyncio.get_running_loop().create_datagram_endpoint(
            UdpClient, remote_addr=(host, port), family=fam)
        ok = 0
        for i in range(N):
            msg = b"udp %d " % i * 30
            t.sendto(msg)
            data, addr = await asyncio.wait_for(p.q.get(), 5)
            ok += data == msg
        print("echoed %d/%d peer=%s" % (ok, N, t.get_extra_info("peername")[0]))
        t.close()

asyncio.run(main())
PY
# aecho_pair PROTO SERVER-SIDE ADDR PORT: a server on one side, the client on the other.
aecho_pair()
{
	local proto=$1 side=$2 addr=$3 port=$4 out spid
	if [ "$side" = guest ]; then
		nk_guest_bg g1 "$NK_TMP/aecho-$proto-$port.log" "$NK_PY" "$NK_TMP/aecho.py" \
			"$proto-server" "$addr" "$port"
	else
		nk_bg "remote-$S" "$NK_TMP/aecho-$proto-$port.log" "$NK_PY" "$NK_TMP/aecho.py" \
			"$proto-server" "$addr" "$port"
	fi
	spid=$NK_BG_PID
	wait_for -t 10 grep -q ready "$NK_TMP/aecho-$proto-$port.log" ||
		nk_fail "asyncio $proto server ($side) did not start"
	if [ "$side" = guest ]; then
		out=$(ip netns exec "remote-$S" timeout 30 "$NK_PY" "$NK_TMP/aecho.py" \
			"$proto-client" "$addr" "$port" 2>&1)
	else
		out=$(nk_guest g1 timeout 30 "$NK_PY" "$NK_TMP/aecho.py" "$proto-client" "$addr" \
			"$port" 2>&1)
	fi
	echo "    $out"
	check_eq "asyncio $proto echo, server in the $side on $addr" "$out" "echoed 50/50 peer=$addr"
	nk_stop "$spid"
}
aecho_pair tcp guest 10.77.0.2 9001
aecho_pair udp guest 10.77.0.2 9002
aecho_pair tcp remote 10.77.0.1 9003
aecho_pair udp remote 10.77.0.1 9004
aecho_pair tcp guest fd77::2 9005
aecho_pair udp guest fd77::2 9006
aecho_pair udp remote fd77::1 9007

# ---------------------------------------------------------------- curl over IPv6
log_step "curl over IPv6 in guest 1 -> nginx on the remote host [fd77::1]:8080"
mkdir -p "$NK_TMP/www"
head -c 3000 /dev/urandom | base64 >"$NK_TMP/www/index.html"
nk_nginx_prep "$NK_TMP/remote-nginx" 1 "[fd77::1]:8080" "$NK_TMP/www"
nk_bg "remote-$S" "$NK_TMP/remote-nginx.log" "${NK_NGINX_ARGV[@]}"
RNGINX=$NK_BG_PID
wait_port "nsm-$S" fd77::1 8080 || nk_die "remote nginx did not start on [fd77::1]:8080"
body=$(nk_guest g1 curl -sS -g --max-time 10 "http://[fd77::1]:8080/index.html" 2>&1)
check "curl -g http://[fd77::1]:8080/ returns the page" test "$body" = "$(cat "$NK_TMP/www/index.html")"
out=$(nk_guest g1 curl -sS -g --max-time 10 -o /dev/null -w '%{http_code} %{remote_ip} %{local_ip}' \
	"http://[fd77::1]:8080/index.html" 2>&1)
check_eq "curl reports the IPv6 peer and the VM's IPv6 address" "$out" "200 fd77::1 fd77::2"
nk_stop "$RNGINX"

# ---------------------------------------------------------------- nginx on [::]:80
log_step "nginx in guest 1 on [::]:80 ipv6only=off, reached over IPv4 and IPv6"
G=$NK_TMP/guest-nginx
nk_nginx_prep "$G" 2 "[::]:80 ipv6only=off" "$NK_TMP/www"
# shellcheck disable=SC2016 # nginx variables
sed -i 's|access_log off;|log_format peer "$remote_addr $server_addr $status";\n\taccess_log '"$G"'/access.log peer;|' \
	"$G/nginx.conf"
nk_guest_bg g1 "$NK_TMP/guest-nginx.log" "${NK_NGINX_ARGV[@]}"
GNGINX=$NK_BG_PID
wait_port "remote-$S" 10.77.0.2 80 || nk_fail "guest nginx is not reachable over IPv4"
wait_port "remote-$S" fd77::2 80 || nk_fail "guest nginx is not reachable over IPv6"
for url in "http://10.77.0.2/index.html" "http://[fd77::2]/index.html"; do
	body=$(ip netns exec "remote-$S" curl -sS -g --max-time 10 "$url" 2>&1)
	check "remote curl $url returns the page" test "$body" = "$(cat "$NK_TMP/www/index.html")"
done
check "nginx listens on both VM addresses in the NSM" \
	grep -q '10.77.0.2\]*:80 ' <<<"$(ip netns exec "nsm-$S" ss -Htln)"
sleep 0.3
sed 's/^/    access: /' "$G/access.log"
check "the IPv4 client is logged v4-mapped (::ffff:10.77.0.1 -> ::ffff:10.77.0.2)" \
	grep -q '^::ffff:10.77.0.1 ::ffff:10.77.0.2 200$' "$G/access.log"
check "the IPv6 client is logged as fd77::1 -> fd77::2" \
	grep -q '^fd77::1 fd77::2 200$' "$G/access.log"
# (loopback sockets to the stub, in TIME-WAIT, are the guest's own business)
check_eq "no TCP or UDP socket in g1 of its own but on loopback" \
	"$(ip netns exec "g1-$S" ss -Htuan | grep -v '127\.0\.0\.[0-9]*:[0-9]* *127\.0\.0\.')" ""
nk_stop "$GNGINX"

nk_finish
