// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nk_proto_client: speaks the NetKernel guest protocol (proto.h) and the
 * nkd<->NSM messages (nsmctl.h) by hand, without the guest library or nkd.
 * A protocol-level test tool for an NSM:
 *
 *   nk_proto_client nsm CTL vm-add ID NAME ADDR/PFX[,ADDR/PFX...] [gw4 A] [gw6 A]
 *   nk_proto_client nsm CTL vm-del ID
 *   nk_proto_client nsm CTL attach-listener ID PATH
 *       PATH: a Unix listening socket created here and handed to the NSM
 *   nk_proto_client nsm CTL claim-checks ID
 *       malformed and unknown ATTACH_CLAIMs for VM ID: one "what errno"
 *       line each (the NSM refuses them all and keeps running)
 *   nk_proto_client nsm CTL attach-stream ID
 *       prints "connected", then per line of stdin: a stream for VM ID
 *       passed as nkd passes an AF_VSOCK one, then a HELLO SOCKET on it:
 *       "attach ERR hello ERR"
 *   nk_proto_client connect GUEST ADDR PORT
 *       HELLO SOCKET, HELLO CTL, CONNECT, then stdin -> connection -> stdout
 *   nk_proto_client listen GUEST ADDR PORT
 *       BIND, LISTEN, wait for ACCEPT_READY, HELLO ACCEPT, then as connect
 *   nk_proto_client check GUEST VM-ADDR FOREIGN-ADDR [REFUSED-ADDR PORT [NO-HOST-ADDR]]
 *       protocol checks: errno replies, validation, malformed input
 *   nk_proto_client udpcheck GUEST VM-ADDR ECHO-ADDR ECHO-PORT CLOSED-PORT [VM-ADDR2]
 *       datagram sockets against a UDP echo server (selftests/test_nsm_proto.sh's
 *       udp_echo.py): framing, boundaries, source addresses, implicit and
 *       wildcard binds (VM-ADDR2: another address of the same VM, which a
 *       wildcard bind must receive on too), connect, ICMP errors, validation
 *   nk_proto_client fuzz GUEST VM-ADDR SECS SEED
 *       random, mutated conversations of every kind for SECS seconds; exit 0
 *       if the NSM still answers afterwards (test_nsm_proto.sh also checks
 *       that it did not restart and holds no extra descriptors)
 *   nk_proto_client udp GUEST ADDR PORT
 *       one datagram per line of stdin to ADDR:PORT; prints "local A" once,
 *       then "from A: PAYLOAD" per datagram received (until 1 s of silence
 *       after stdin ends)
 *
 * GUEST is the guest's stream path (e.g. /run/nk/vm1.vsock_7531).  At the
 * end of a connection the socket's STATUS is printed on stderr as
 * "status: state S err E (...)".  Exit status 0 on success.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <netkernel/nsmctl.h>
#include <netkernel/proto.h>
#include "nkaddr.h"
#include "nkfd.h"

static uint32_t next_seq = 1;

static int xwrite(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

/* 1: read all, 0: EOF, -errno. */
static int xread(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		p += n;
		len -= n;
	}
	return 1;
}

static int msg_send(int fd, uint8_t op, uint32_t seq, const void *body, size_t len)
{
	char buf[NK_MSG_MAX];
	struct nk_hdr h = {
		.magic = NK_PROTO_MAGIC, .version = NK_PROTO_VERSION, .op = op,
		.len = sizeof(h) + len, .seq = seq,
	};

	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), body, len);
	return xwrite(fd, buf, sizeof(h) + len);
}

/* Read one host->guest message of op.  Returns hdr.err (>= 0) or -errno;
 * -ECONNRESET for a closed stream, -EPROTO for a bad message. */
static int msg_recv(int fd, uint8_t op, uint32_t *seq, void *body, size_t len)
{
	struct nk_hdr h;
	int ret;

	ret = xread(fd, &h, sizeof(h));
	if (ret <= 0)
		return ret ? ret : -ECONNRESET;
	if (nk_hdr_check(&h, 1) != (int)len || h.op != op) {
		fprintf(stderr, "unexpected message op %u len %u (wanted op %u)\n", h.op, h.len, op);
		return -EPROTO;
	}
	ret = xread(fd, body, len);
	if (ret <= 0)
		return ret ? ret : -ECONNRESET;
	if (seq)
		*seq = h.seq;
	return h.err;
}

static int open_stream(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static int hello(int fd, const struct nk_hello_req *req, struct nk_hello_rep *rep)
{
	struct nk_hello_rep tmp;
	uint32_t seq = next_seq++, rseq = 0;
	int ret;

	ret = msg_send(fd, NK_OP_HELLO, seq, req, sizeof(*req));
	if (ret)
		return ret;
	ret = msg_recv(fd, NK_OP_HELLO, &rseq, rep ? rep : &tmp, sizeof(tmp));
	if (ret >= 0 && rseq != seq)
		return -EPROTO;
	return ret;
}

/* A new socket stream with HELLO flags; returns the fd (or -errno, the
 * reply's err also in *err), token in *token. */
static int hello_socket(const char *path, int family, int type, uint8_t flags,
			uint64_t *token, int *err)
{
	struct nk_hello_req req = { .kind = NK_HELLO_SOCKET, .family = family, .type = type,
				    .flags = flags, .pid = getpid() };
	struct nk_hello_rep rep;
	int fd = open_stream(path), ret;

	if (fd < 0)
		return fd;
	ret = hello(fd, &req, &rep);
	if (ret) {
		close(fd);
		if (err)
			*err = ret;
		return ret < 0 ? ret : -ret;
	}
	*token = rep.token;
	return fd;
}

static int new_socket(const char *path, int family, int type, uint64_t *token, int *err)
{
	return hello_socket(path, family, type, 0, token, err);
}

static int new_ctl(const char *path)
{
	struct nk_hello_req req = { .kind = NK_HELLO_CTL, .pid = getpid() };
	int fd = open_stream(path), ret;

	if (fd < 0)
		return fd;
	ret = hello(fd, &req, NULL);
	if (ret) {
		close(fd);
		return ret < 0 ? ret : -ret;
	}
	return fd;
}

/* One request on the control channel: returns the reply's err or -errno. */
static int ctl_call(int ctl, uint8_t op, const void *req, size_t reqlen, void *rep)
{
	char tmp[NK_MSG_MAX];
	uint32_t seq = next_seq++, rseq = 0;
	int ret;

	ret = msg_send(ctl, op, seq, req, reqlen);
	if (ret)
		return ret;
	ret = msg_recv(ctl, op, &rseq, rep ? rep : tmp, nk_body_size(op, 1));
	if (ret >= 0 && rseq != seq)
		return -EPROTO;
	return ret;
}

static int sock_req(int ctl, uint8_t op, uint64_t token, int arg, void *rep)
{
	struct nk_sock_req r = { .token = token, .arg = arg };

	return ctl_call(ctl, op, &r, sizeof(r), rep);
}

static int addr_req(int ctl, uint8_t op, uint64_t token, const struct nk_addr *a, void *rep)
{
	struct nk_addr_req r = { .token = token, .addr = *a };

	return ctl_call(ctl, op, &r, sizeof(r), rep);
}

static int opt_req(int ctl, uint8_t op, uint64_t token, int level, int name, const void *val,
		   uint32_t len, struct nk_opt_rep *rep)
{
	struct nk_opt_req r = { .token = token, .level = level, .name = name, .optlen = len };

	if (val)
		memcpy(r.val, val, len);
	return ctl_call(ctl, op, &r, sizeof(r), rep);
}

static int parse_addr_port(struct nk_addr *a, const char *addr, const char *port)
{
	if (nk_addr_parse(a, addr))
		return -EINVAL;
	a->port = port ? (uint16_t)atoi(port) : 0;
	return 0;
}

static const char *state_name(uint32_t s)
{
	static const char *const names[] = { "?", "setup", "connecting", "connected",
					     "listening", "closed" };

	return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static void print_status(int ctl, uint64_t token)
{
	struct nk_status_rep st;
	int ret = sock_req(ctl, NK_OP_STATUS, token, 0, &st);

	if (ret)
		fprintf(stderr, "status: error %d (%s)\n", ret, strerror(ret < 0 ? -ret : ret));
	else
		fprintf(stderr, "status: state %s err %d (%s)\n", state_name(st.state),
			st.sock_err, st.sock_err ? strerror(st.sock_err) : "orderly");
}

/*
 * stdin -> stream, stream -> stdout.  stdin EOF: shutdown(SHUT_WR).  Ends
 * when the stream reads EOF and stdin is done (or the stream failed).
 */
static int pump(int fd)
{
	static char buf[1 << 16];
	bool in_done = false, out_done = false;
	unsigned long long up = 0, down = 0;

	while (!out_done) {
		struct pollfd p[2] = {
			{ .fd = in_done ? -1 : 0, .events = POLLIN },
			{ .fd = fd, .events = POLLIN },
		};
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[0].revents) {
			n = read(0, buf, sizeof(buf));
			if (n <= 0) {
				in_done = true;
				shutdown(fd, SHUT_WR);
			} else if (xwrite(fd, buf, n)) {
				fprintf(stderr, "write to stream: %s\n", strerror(errno));
				in_done = true;
			} else {
				up += n;
			}
		}
		if (p[1].revents) {
			n = read(fd, buf, sizeof(buf));
			if (n < 0) {
				fprintf(stderr, "read from stream: %s\n", strerror(errno));
				out_done = true;
			} else if (n == 0) {
				out_done = true;
			} else {
				down += n;
				if (xwrite(1, buf, n))
					return -errno;
			}
		}
	}
	/* The peer finished; send the rest of stdin, as nc -N would. */
	while (!in_done) {
		ssize_t n = read(0, buf, sizeof(buf));

		if (n <= 0 || xwrite(fd, buf, n))
			break;
		up += n;
	}
	shutdown(fd, SHUT_WR);
	fprintf(stderr, "bytes: %llu up, %llu down\n", up, down);
	return 0;
}

static int cmd_connect(const char *guest, const char *addr, const char *port)
{
	struct nk_connected_rec rec;
	struct nk_addr dst;
	char a[NK_ADDRSTRLEN], b[NK_ADDRSTRLEN];
	uint64_t token = 0;
	int ctl, fd, ret;

	if (parse_addr_port(&dst, addr, port))
		return -EINVAL;
	ctl = new_ctl(guest);
	if (ctl < 0)
		return ctl;
	fd = new_socket(guest, dst.family, NK_SOCK_STREAM, &token, NULL);
	if (fd < 0)
		return fd;
	ret = addr_req(ctl, NK_OP_CONNECT, token, &dst, NULL);
	if (ret) {
		fprintf(stderr, "connect: %s\n", strerror(ret < 0 ? -ret : ret));
		return -1;
	}
	ret = msg_recv(fd, NK_OP_CONNECTED, NULL, &rec, sizeof(rec));
	if (ret) {
		fprintf(stderr, "connect: %s\n", strerror(ret < 0 ? -ret : ret));
		return -1;
	}
	fprintf(stderr, "connected %s -> %s\n", nk_addr_ntop_port(&rec.local, a, sizeof(a)),
		nk_addr_ntop_port(&rec.peer, b, sizeof(b)));
	ret = pump(fd);
	/* A stream the NSM closed after an error reads EOF too: ask. */
	usleep(100000);
	print_status(ctl, token);
	close(fd);
	return ret;
}

static int cmd_listen(const char *guest, const char *addr, const char *port)
{
	struct nk_hello_req req = { .kind = NK_HELLO_ACCEPT, .pid = getpid() };
	struct nk_addr_rep bound;
	struct nk_accept_rec rec;
	struct nk_hello_rep rep;
	struct nk_addr a;
	char s1[NK_ADDRSTRLEN], s2[NK_ADDRSTRLEN];
	uint64_t token = 0;
	int ctl, lfd, fd, ret, one = 1;

	if (parse_addr_port(&a, addr, port))
		return -EINVAL;
	ctl = new_ctl(guest);
	if (ctl < 0)
		return ctl;
	lfd = new_socket(guest, a.family, NK_SOCK_STREAM, &token, NULL);
	if (lfd < 0)
		return lfd;
	ret = opt_req(ctl, NK_OP_SETSOCKOPT, token, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one),
		      NULL);
	if (!ret)
		ret = addr_req(ctl, NK_OP_BIND, token, &a, &bound);
	if (!ret)
		ret = sock_req(ctl, NK_OP_LISTEN, token, 16, NULL);
	if (ret) {
		fprintf(stderr, "bind/listen: %s\n", strerror(ret < 0 ? -ret : ret));
		return -1;
	}
	fprintf(stderr, "listening on %s\n", nk_addr_ntop_port(&bound.addr, s1, sizeof(s1)));
	ret = msg_recv(lfd, NK_OP_ACCEPT_READY, NULL, &rec, sizeof(rec));
	if (ret) {
		fprintf(stderr, "accept ready: %d\n", ret);
		return -1;
	}
	fd = open_stream(guest);
	if (fd < 0)
		return fd;
	req.listener = token;
	req.conn_id = rec.conn_id;
	ret = hello(fd, &req, &rep);
	if (ret) {
		fprintf(stderr, "HELLO ACCEPT: %s\n", strerror(ret < 0 ? -ret : ret));
		return -1;
	}
	fprintf(stderr, "accepted %s -> %s\n", nk_addr_ntop_port(&rep.peer, s1, sizeof(s1)),
		nk_addr_ntop_port(&rep.local, s2, sizeof(s2)));
	ret = pump(fd);
	usleep(100000);
	print_status(ctl, rep.token);
	close(fd);
	close(lfd);
	return ret;
}

/* ---- checks ------------------------------------------------------------- */

static int failures;

static void expect(const char *what, int got, int want)
{
	if (got == want) {
		printf("PASS %s\n", what);
		return;
	}
	printf("FAIL %s: got %d (%s), want %d (%s)\n", what, got,
	       strerror(got < 0 ? -got : got), want, strerror(want < 0 ? -want : want));
	failures++;
}

/* Did the NSM close this stream (EOF or reset) within a second? */
static int closed_by_peer(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	if (poll(&p, 1, 7000) <= 0)
		return 0;
	return read(fd, &c, 1) <= 0;
}

/* 1 if fd has something to read (or hung up) within ms milliseconds. */
static int readable_within(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) > 0;
}

static void check_garbage(const char *guest, const char *what, const void *buf, size_t len,
			  bool after_ctl_hello)
{
	int fd = after_ctl_hello ? new_ctl(guest) : open_stream(guest);

	if (fd < 0) {
		expect(what, fd, 0);
		return;
	}
	xwrite(fd, buf, len);
	expect(what, closed_by_peer(fd), 1);
	close(fd);
}

/* A TCP socket stream with HELLO flags: fd, or -errno; token in *token. */
static int new_socket_flags(const char *path, int family, uint8_t flags, uint64_t *token)
{
	return hello_socket(path, family, NK_SOCK_STREAM, flags, token, NULL);
}

/* Read exactly len bytes within 2 s: 0, or -1. */
static int read_exact(int fd, void *buf, size_t len)
{
	char *p = buf;
	ssize_t n;

	while (len) {
		if (!readable_within(fd, 2000))
			return -1;
		n = read(fd, p, len);
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A new stream with a quiet claim (HELLO ACCEPT + QUIET) of conn_id. */
static int quiet_claim(const char *guest, uint64_t listener, uint64_t conn_id)
{
	struct nk_hello_req claim = { .kind = NK_HELLO_ACCEPT, .flags = NK_HELLO_F_QUIET,
				      .listener = listener, .conn_id = conn_id,
				      .pid = getpid() };
	int fd = open_stream(guest);

	msg_send(fd, NK_OP_HELLO, 1, &claim, sizeof(claim));
	return fd;
}

/* 0 if the NSM closes fd within 2 s without a byte of reply; closes fd. */
static int closed_unanswered(int fd)
{
	char c;
	int ret = readable_within(fd, 2000) && read(fd, &c, 1) <= 0 ? 0 : -1;

	close(fd);
	return ret;
}

/*
 * Requests pipelined faster than their replies are read: the NSM reads a
 * control channel ahead and stops handling requests while NSM_CHAN_OUTQ_MAX
 * bytes of replies wait; every request must still be answered, in order,
 * once the guest reads (280-byte replies: 3000 are far more than the
 * stream and that queue hold).
 */
static void check_pipelined(const char *guest)
{
	enum { N = 3000 };
	int c = new_ctl(guest), i, got = 0;
	pid_t pid;

	expect("pipelined requests: HELLO CTL", c < 0 ? c : 0, 0);
	if (c < 0)
		return;
	pid = fork();
	if (pid == 0) {
		struct nk_opt_req r = { .token = 12345, .level = IPPROTO_TCP,
					.name = TCP_NODELAY, .optlen = 4 };

		for (i = 0; i < N; i++)
			if (msg_send(c, NK_OP_GETSOCKOPT, 1000 + i, &r, sizeof(r)))
				_exit(1);
		_exit(0);
	}
	usleep(300000);	/* the replies back up meanwhile */
	for (i = 0; i < N && readable_within(c, 3000); i++) {
		struct nk_opt_rep rep;
		uint32_t seq = 0;

		if (msg_recv(c, NK_OP_GETSOCKOPT, &seq, &rep, sizeof(rep)) != ENOTSOCK ||
		    seq != 1000u + i)
			break;
		got++;
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	expect("3000 requests pipelined, replies read late: all answered, in order", got, N);
	close(c);
}

/*
 * ACCEPT_OFFER records (NK_HELLO_F_OFFER) and quiet claims
 * (NK_HELLO_F_QUIET): the VM connects to its own listener.
 */
static void check_offer(const char *guest, int ctl, const struct nk_addr *own)
{
	struct nk_hello_req claim = { .kind = NK_HELLO_ACCEPT, .flags = NK_HELLO_F_QUIET };
	struct nk_addr a = *own;
	struct nk_addr_rep bound;
	struct nk_connected_rec crec;
	struct nk_accept_offer off;
	struct nk_accept_rec rrec;
	struct nk_opt_rep orep;
	uint64_t lt = 0, ct = 0, rt = 0;
	int lfd, cfd, afd, rfd, one = 1, ret, i;
	char buf[8];

	lfd = new_socket_flags(guest, own->family, NK_HELLO_F_OFFER, &lt);
	expect("HELLO SOCKET with NK_HELLO_F_OFFER", lfd < 0 ? lfd : 0, 0);
	if (lfd < 0)
		return;
	a.port = 0;
	ret = addr_req(ctl, NK_OP_BIND, lt, &a, &bound);
	if (!ret)
		ret = sock_req(ctl, NK_OP_LISTEN, lt, 4, NULL);
	expect("offering listener: BIND, LISTEN", ret, 0);
	cfd = new_socket_flags(guest, own->family, 0, &ct);
	ret = cfd < 0 ? cfd : addr_req(ctl, NK_OP_CONNECT, ct, &bound.addr, NULL);
	if (!ret)
		ret = msg_recv(cfd, NK_OP_CONNECTED, NULL, &crec, sizeof(crec));
	expect("connect to the offering listener", ret, 0);
	ret = msg_recv(lfd, NK_OP_ACCEPT_OFFER, NULL, &off, sizeof(off));
	expect("an ACCEPT_OFFER record arrives", ret, 0);
	expect("... with a token, the peer and the local address",
	       !ret && off.token && off.peer.port == crec.local.port &&
	       nk_addr_same_ip(&off.peer, &crec.local) && off.local.port == bound.addr.port &&
	       nk_addr_same_ip(&off.local, &bound.addr) ? 0 : -1, 0);
	/* Requests on the offered token work before any claim. */
	expect("SETSOCKOPT on an offered, unclaimed token",
	       opt_req(ctl, NK_OP_SETSOCKOPT, off.token, IPPROTO_TCP, TCP_NODELAY, &one,
		       sizeof(one), NULL), 0);
	ret = opt_req(ctl, NK_OP_GETSOCKOPT, off.token, IPPROTO_TCP, TCP_NODELAY, NULL, 4, &orep);
	expect("... and GETSOCKOPT reads it back", ret ? ret : orep.val[0] ? 0 : -1, 0);

	/* Quiet claim with payload behind it in the same write: no reply,
	 * the payload goes out, and the first bytes back are payload. */
	afd = open_stream(guest);
	claim.listener = lt;
	claim.conn_id = off.conn_id;
	claim.pid = getpid();
	{
		char w[sizeof(struct nk_hdr) + sizeof(claim) + 4];
		struct nk_hdr h = { .magic = NK_PROTO_MAGIC, .version = NK_PROTO_VERSION,
				    .op = NK_OP_HELLO, .len = sizeof(h) + sizeof(claim) };

		memcpy(w, &h, sizeof(h));
		memcpy(w + sizeof(h), &claim, sizeof(claim));
		memcpy(w + sizeof(h) + sizeof(claim), "ping", 4);
		xwrite(afd, w, sizeof(w));
	}
	expect("quiet claim: payload written behind the HELLO arrives",
	       read_exact(cfd, buf, 4) == 0 && !memcmp(buf, "ping", 4) ? 0 : -1, 0);
	xwrite(cfd, "pong", 4);
	expect("quiet claim: no reply, the first bytes read are payload",
	       read_exact(afd, buf, 4) == 0 && !memcmp(buf, "pong", 4) ? 0 : -1, 0);
	close(afd);
	expect("... and closing the claimed stream ends the connection",
	       closed_by_peer(cfd), 1);
	close(cfd);

	/* A quiet claim that fails closes the stream unanswered. */
	expect("quiet claim of an unknown conn_id: closed, no reply",
	       closed_unanswered(quiet_claim(guest, lt, 99)), 0);

	/* A connection announced without an offer cannot be claimed quietly. */
	rfd = new_socket_flags(guest, own->family, 0, &rt);
	ret = rfd < 0 ? rfd : addr_req(ctl, NK_OP_BIND, rt, &a, &bound);
	if (!ret)
		ret = sock_req(ctl, NK_OP_LISTEN, rt, 4, NULL);
	cfd = new_socket_flags(guest, own->family, 0, &ct);
	if (!ret)
		ret = cfd < 0 ? cfd : addr_req(ctl, NK_OP_CONNECT, ct, &bound.addr, NULL);
	if (!ret)
		ret = msg_recv(rfd, NK_OP_ACCEPT_READY, NULL, &rrec, sizeof(rrec));
	expect("a listener without the flag announces ACCEPT_READY", ret, 0);
	expect("quiet claim of an ACCEPT_READY connection: closed, no reply",
	       closed_unanswered(quiet_claim(guest, rt, rrec.conn_id)), 0);
	close(cfd);
	close(rfd);

	/* An offered connection outlives its listener for a claim in flight
	 * (on Linux closing a listener leaves accepted connections alone):
	 * claimed after the close, it works; never claimed, it is closed
	 * after the grace period (NSM_ORPHAN_GRACE, 5 s). */
	for (i = 0; i < 2; i++) {
		cfd = new_socket_flags(guest, own->family, 0, &ct);
		close(lfd);
		lfd = new_socket_flags(guest, own->family, NK_HELLO_F_OFFER, &lt);
		a.port = 0;
		ret = lfd < 0 ? lfd : addr_req(ctl, NK_OP_BIND, lt, &a, &bound);
		if (!ret)
			ret = sock_req(ctl, NK_OP_LISTEN, lt, 4, NULL);
		if (!ret)
			ret = addr_req(ctl, NK_OP_CONNECT, ct, &bound.addr, NULL);
		if (!ret)
			ret = msg_recv(cfd, NK_OP_CONNECTED, NULL, &crec, sizeof(crec));
		if (!ret)
			ret = msg_recv(lfd, NK_OP_ACCEPT_OFFER, NULL, &off, sizeof(off));
		expect(i ? "a third offer" : "a second offer", ret, 0);
		close(lfd);
		lfd = -1;
		usleep(200000);
		if (i == 0) {
			expect("the offered token outlives its listener",
			       opt_req(ctl, NK_OP_GETSOCKOPT, off.token, IPPROTO_TCP, TCP_NODELAY,
				       NULL, 4, &orep), 0);
			afd = quiet_claim(guest, lt, off.conn_id);
			xwrite(cfd, "late", 4);
			expect("... and claimed after the listener closed, it carries payload",
			       read_exact(afd, buf, 4) == 0 && !memcmp(buf, "late", 4) ? 0 : -1, 0);
			close(afd);
		} else {
			expect("never claimed: the connection is closed after the grace period",
			       closed_by_peer(cfd), 1);
			expect("... and its token is gone",
			       opt_req(ctl, NK_OP_GETSOCKOPT, off.token, IPPROTO_TCP, TCP_NODELAY,
				       NULL, 4, &orep), ENOTSOCK);
			expect("... and a late quiet claim is closed unanswered",
			       closed_unanswered(quiet_claim(guest, lt, off.conn_id)), 0);
		}
		close(cfd);
	}

	/* The flags where they do not belong close the stream. */
	{
		struct nk_hello_req bad[] = {
			{ .kind = NK_HELLO_SOCKET, .family = own->family, .type = NK_SOCK_STREAM,
			  .flags = NK_HELLO_F_QUIET },
			{ .kind = NK_HELLO_SOCKET, .family = own->family, .type = NK_SOCK_DGRAM,
			  .flags = NK_HELLO_F_OFFER },
			{ .kind = NK_HELLO_CTL, .flags = NK_HELLO_F_OFFER },
			{ .kind = NK_HELLO_ACCEPT, .listener = lt, .conn_id = 1,
			  .flags = NK_HELLO_F_OFFER },
		};
		const char *what[] = {
			"NK_HELLO_F_QUIET on HELLO SOCKET closes the stream",
			"NK_HELLO_F_OFFER on a datagram socket closes the stream",
			"NK_HELLO_F_OFFER on HELLO CTL closes the stream",
			"NK_HELLO_F_OFFER on HELLO ACCEPT closes the stream",
		};
		unsigned int i;

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			afd = open_stream(guest);
			msg_send(afd, NK_OP_HELLO, 1, &bad[i], sizeof(bad[i]));
			expect(what[i], closed_by_peer(afd), 1);
			close(afd);
		}
	}
}

static int cmd_check(const char *guest, const char *vmaddr, const char *foreign,
		     const char *refused, const char *refused_port, const char *unreach)
{
	struct nk_addr own, other, any = { .family = 0 }, lo;
	struct nk_addr_rep ar;
	struct nk_opt_rep orep;
	struct nk_status_rep st;
	struct nk_connected_rec rec;
	uint64_t token = 0, token2 = 0;
	int ctl, fd, fd2, err = 0, one = 1, ret;
	char dev[] = "lo";

	if (nk_addr_parse(&own, vmaddr) || nk_addr_parse(&other, foreign))
		return -EINVAL;
	any.family = own.family;
	nk_addr_parse(&lo, own.family == NK_AF_INET ? "127.0.0.1" : "::1");
	lo.port = 80;

	ctl = new_ctl(guest);
	expect("HELLO CTL", ctl < 0 ? ctl : 0, 0);
	if (ctl < 0)
		return -1;

	new_socket(guest, NK_AF_INET, 3, &token, &err);
	expect("HELLO SOCKET type 3 -> ESOCKTNOSUPPORT", err, ESOCKTNOSUPPORT);
	err = 0;
	new_socket(guest, 5, NK_SOCK_STREAM, &token, &err);
	expect("HELLO SOCKET family 5 -> EAFNOSUPPORT", err, EAFNOSUPPORT);

	fd = new_socket(guest, own.family, NK_SOCK_STREAM, &token, NULL);
	expect("HELLO SOCKET", fd < 0 ? fd : 0, 0);
	if (fd < 0)
		return -1;
	expect("BIND unknown token -> ENOTSOCK", addr_req(ctl, NK_OP_BIND, token ^ 1, &own, NULL),
	       ENOTSOCK);
	other.port = 0;
	expect("BIND another VM's address -> EADDRNOTAVAIL",
	       addr_req(ctl, NK_OP_BIND, token, &other, NULL), EADDRNOTAVAIL);
	expect("CONNECT loopback -> ENETUNREACH", addr_req(ctl, NK_OP_CONNECT, token, &lo, NULL),
	       ENETUNREACH);
	expect("GETNAME peer unconnected -> ENOTCONN",
	       sock_req(ctl, NK_OP_GETNAME, token, 1, &ar), ENOTCONN);
	expect("SHUTDOWN unconnected -> ENOTCONN",
	       sock_req(ctl, NK_OP_SHUTDOWN, token, SHUT_WR, NULL), ENOTCONN);
	expect("SETSOCKOPT TCP_NODELAY", opt_req(ctl, NK_OP_SETSOCKOPT, token, IPPROTO_TCP,
						 TCP_NODELAY, &one, sizeof(one), NULL), 0);
	ret = opt_req(ctl, NK_OP_GETSOCKOPT, token, IPPROTO_TCP, TCP_NODELAY, NULL, 4, &orep);
	expect("GETSOCKOPT TCP_NODELAY", ret ? ret : (orep.optlen == 4 && orep.val[0]) ? 0 : -1,
	       0);
	expect("SETSOCKOPT SO_BINDTODEVICE -> EPERM",
	       opt_req(ctl, NK_OP_SETSOCKOPT, token, SOL_SOCKET, SO_BINDTODEVICE, dev,
		       sizeof(dev), NULL), EPERM);
	expect("SETSOCKOPT IP_PKTINFO -> ENOPROTOOPT",
	       opt_req(ctl, NK_OP_SETSOCKOPT, token, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one),
		       NULL), ENOPROTOOPT);
	expect("SETSOCKOPT optlen > NK_OPT_MAX -> EINVAL",
	       opt_req(ctl, NK_OP_SETSOCKOPT, token, IPPROTO_TCP, TCP_NODELAY, NULL,
		       NK_OPT_MAX + 1, NULL), EINVAL);
	ret = addr_req(ctl, NK_OP_BIND, token, &any, &ar);
	expect("BIND wildcard port 0", ret ? ret : (nk_addr_is_any(&ar.addr) && ar.addr.port) ? 0 : -1,
	       0);
	expect("BIND twice -> EINVAL", addr_req(ctl, NK_OP_BIND, token, &any, NULL), EINVAL);
	ret = sock_req(ctl, NK_OP_GETNAME, token, 0, &ar);
	expect("GETNAME local of a wildcard bind", ret ? ret : nk_addr_is_any(&ar.addr) ? 0 : -1, 0);
	ret = sock_req(ctl, NK_OP_STATUS, token, 0, &st);
	expect("STATUS live socket", ret ? ret : st.state == NK_STATE_SETUP ? 0 : -1, 0);
	expect("STATUS unknown -> ENOTSOCK", sock_req(ctl, NK_OP_STATUS, 12345, 0, &st), ENOTSOCK);
	close(fd);
	usleep(200000);
	ret = sock_req(ctl, NK_OP_STATUS, token, 0, &st);
	expect("STATUS after close -> closed, 0",
	       ret ? ret : (st.state == NK_STATE_CLOSED && !st.sock_err) ? 0 : -1, 0);

	/* Another own-address bind, and HELLO ACCEPT of nothing. */
	fd = new_socket(guest, own.family, NK_SOCK_STREAM, &token, NULL);
	own.port = 0;
	ret = addr_req(ctl, NK_OP_BIND, token, &own, &ar);
	expect("BIND own address", ret ? ret : nk_addr_same_ip(&ar.addr, &own) ? 0 : -1, 0);
	expect("LISTEN", sock_req(ctl, NK_OP_LISTEN, token, 4, NULL), 0);
	ret = opt_req(ctl, NK_OP_GETSOCKOPT, token, SOL_SOCKET, SO_ACCEPTCONN, NULL, 4, &orep);
	expect("GETSOCKOPT SO_ACCEPTCONN", ret ? ret : orep.val[0] == 1 ? 0 : -1, 0);
	expect("CONNECT on a listener -> EISCONN",
	       addr_req(ctl, NK_OP_CONNECT, token, &other, NULL), EISCONN);
	{
		struct nk_hello_req req = { .kind = NK_HELLO_ACCEPT, .listener = token,
					    .conn_id = 99 };

		fd2 = open_stream(guest);
		expect("HELLO ACCEPT unknown conn_id -> ECONNABORTED", hello(fd2, &req, NULL),
		       ECONNABORTED);
		close(fd2);
	}
	close(fd);

	if (refused) {
		struct nk_addr dst;

		parse_addr_port(&dst, refused, refused_port);
		fd = new_socket(guest, dst.family, NK_SOCK_STREAM, &token2, NULL);
		expect("CONNECT (refused port)", addr_req(ctl, NK_OP_CONNECT, token2, &dst, NULL),
		       0);
		expect("CONNECTED err ECONNREFUSED",
		       msg_recv(fd, NK_OP_CONNECTED, NULL, &rec, sizeof(rec)), ECONNREFUSED);
		expect("CONNECT again after a failure",
		       addr_req(ctl, NK_OP_CONNECT, token2, &dst, NULL), 0);
		expect("CONNECTED err ECONNREFUSED again",
		       msg_recv(fd, NK_OP_CONNECTED, NULL, &rec, sizeof(rec)), ECONNREFUSED);
		close(fd);
	}
	if (unreach) {
		struct nk_addr dst;

		parse_addr_port(&dst, unreach, "80");
		fd = new_socket(guest, dst.family, NK_SOCK_STREAM, &token2, NULL);
		expect("CONNECT (no such host)", addr_req(ctl, NK_OP_CONNECT, token2, &dst, NULL),
		       0);
		expect("CONNECT while connecting -> EALREADY",
		       addr_req(ctl, NK_OP_CONNECT, token2, &dst, NULL), EALREADY);
		ret = sock_req(ctl, NK_OP_STATUS, token2, 0, &st);
		expect("STATUS connecting", ret ? ret : st.state == NK_STATE_CONNECTING ? 0 : -1, 0);
		expect("CONNECTED err EHOSTUNREACH",
		       msg_recv(fd, NK_OP_CONNECTED, NULL, &rec, sizeof(rec)), EHOSTUNREACH);
		close(fd);
	}

	/* Malformed input closes that stream only. */
	{
		struct nk_hdr h = { .magic = 0x1234, .version = 1, .op = NK_OP_HELLO, .len = 40 };
		char buf[64] = { 0 };

		check_garbage(guest, "bad magic closes the stream", &h, sizeof(h), false);
		h.magic = NK_PROTO_MAGIC;
		h.version = 9;
		check_garbage(guest, "bad version closes the stream", &h, sizeof(h), false);
		h.version = NK_PROTO_VERSION;
		h.len = 41;
		check_garbage(guest, "bad length closes the stream", &h, sizeof(h), false);
		h.len = 40;
		h.op = NK_OP_BIND;
		memcpy(buf, &h, sizeof(h));
		check_garbage(guest, "non-HELLO first closes the stream", buf, 40, false);
		h.op = NK_OP_HELLO;
		memcpy(buf, &h, sizeof(h));
		buf[16] = 9;	/* kind */
		check_garbage(guest, "unknown HELLO kind closes the stream", buf, 40, false);
		h.op = 77;
		check_garbage(guest, "unknown op on ctl closes it", &h, sizeof(h), true);
		h.op = NK_OP_LISTEN;
		h.len = 32;
		memcpy(buf, &h, sizeof(h));
		memset(buf + 16, 0, 16);
		buf[16 + 12] = 1;	/* pad0 */
		check_garbage(guest, "non-zero padding closes ctl", buf, 32, true);
		h.op = NK_OP_BIND;
		h.len = 56;
		memcpy(buf, &h, sizeof(h));
		memset(buf + 16, 0, 40);
		buf[16 + 8] = 5;	/* addr.family */
		check_garbage(guest, "bad address family closes ctl", buf, 56, true);
	}
	/* Set-up requests pipelined behind HELLO (NK_HELLO_F_SETUP). */
	{
		struct nk_hello_req hreq = { .kind = NK_HELLO_SOCKET, .family = own.family,
					     .type = NK_SOCK_STREAM, .flags = NK_HELLO_F_SETUP };
		struct nk_opt_req oreq = { .level = IPPROTO_TCP, .name = TCP_NODELAY, .optlen = 4 };
		struct nk_addr_req creq = { .addr = lo };
		struct nk_hello_rep hrep;
		int i, n;

		/* HELLO + SETSOCKOPT + CONNECT in one write, replies in order. */
		memcpy(oreq.val, &one, sizeof(one));
		creq.addr = own;
		nk_addr_parse(&creq.addr, refused);
		creq.addr.port = (uint16_t)atoi(refused_port);
		fd = open_stream(guest);
		if (fd >= 0) {
			msg_send(fd, NK_OP_HELLO, 1, &hreq, sizeof(hreq));
			msg_send(fd, NK_OP_SETSOCKOPT, 2, &oreq, sizeof(oreq));
			msg_send(fd, NK_OP_CONNECT, 3, &creq, sizeof(creq));
			expect("pipelined: HELLO reply first", msg_recv(fd, NK_OP_HELLO, NULL, &hrep, sizeof(hrep)), 0);
			expect("pipelined: SETSOCKOPT reply", msg_recv(fd, NK_OP_SETSOCKOPT, NULL, NULL, 0), 0);
			expect("pipelined: CONNECT reply", msg_recv(fd, NK_OP_CONNECT, NULL, NULL, 0), 0);
			expect("pipelined: CONNECTED err ECONNREFUSED (refused port)",
			       msg_recv(fd, NK_OP_CONNECTED, NULL, &rec, sizeof(rec)), ECONNREFUSED);
			close(fd);
		}
		/* A failed pipelined option: the CONNECT is answered with its
		 * errno and not made (no CONNECTED record follows). */
		fd = open_stream(guest);
		if (fd >= 0) {
			struct nk_opt_req bad = { .level = SOL_SOCKET, .name = 25 /* SO_BINDTODEVICE */,
						  .optlen = 4 };
			int e1, e2;

			memcpy(bad.val, "lo", 3);
			msg_send(fd, NK_OP_HELLO, 1, &hreq, sizeof(hreq));
			msg_send(fd, NK_OP_SETSOCKOPT, 2, &bad, sizeof(bad));
			msg_send(fd, NK_OP_CONNECT, 3, &creq, sizeof(creq));
			msg_recv(fd, NK_OP_HELLO, NULL, &hrep, sizeof(hrep));
			e1 = msg_recv(fd, NK_OP_SETSOCKOPT, NULL, NULL, 0);
			e2 = msg_recv(fd, NK_OP_CONNECT, NULL, NULL, 0);
			expect("pipelined SO_BINDTODEVICE is refused (EPERM)", e1, EPERM);
			expect("... and the CONNECT behind it answered with the same errno", e2, e1);
			expect("... and no CONNECTED record follows", readable_within(fd, 300), 0);
			close(fd);
		}
		/* An option the NSM does not take (ENOPROTOOPT) is answered so,
		 * and the CONNECT behind it goes on: the guest's own kernel took
		 * it on the fresh socket, and the library goes on without it. */
		fd = open_stream(guest);
		if (fd >= 0) {
			struct nk_opt_req unsup = { .level = SOL_SOCKET, .name = 36 /* SO_MARK */,
						    .optlen = 4 };

			memcpy(unsup.val, &one, sizeof(one));
			msg_send(fd, NK_OP_HELLO, 1, &hreq, sizeof(hreq));
			msg_send(fd, NK_OP_SETSOCKOPT, 2, &unsup, sizeof(unsup));
			msg_send(fd, NK_OP_CONNECT, 3, &creq, sizeof(creq));
			msg_recv(fd, NK_OP_HELLO, NULL, &hrep, sizeof(hrep));
			expect("pipelined SO_MARK is not supported (ENOPROTOOPT)",
			       msg_recv(fd, NK_OP_SETSOCKOPT, NULL, NULL, 0), ENOPROTOOPT);
			expect("... and the CONNECT behind it is made",
			       msg_recv(fd, NK_OP_CONNECT, NULL, NULL, 0), 0);
			expect("... and its CONNECTED record follows", readable_within(fd, 3000), 1);
			close(fd);
		}
		/* A request naming a token, another op, too many requests, or
		 * the flag on a control channel: the stream is closed. */
		fd = open_stream(guest);
		if (fd >= 0) {
			oreq.token = 7;
			msg_send(fd, NK_OP_HELLO, 1, &hreq, sizeof(hreq));
			msg_send(fd, NK_OP_SETSOCKOPT, 2, &oreq, sizeof(oreq));
			msg_recv(fd, NK_OP_HELLO, NULL, &hrep, sizeof(hrep));
			expect("pipelined SETSOCKOPT naming a token closes the stream", closed_by_peer(fd), 1);
			close(fd);
			oreq.token = 0;
		}
		fd = open_stream(guest);
		if (fd >= 0) {
			struct nk_sock_req lreq = { .arg = 4 };

			msg_send(fd, NK_OP_HELLO, 1, &hreq, sizeof(hreq));
			msg_send(fd, NK_OP_LISTEN, 2, &lreq, sizeof(lreq));
			msg_recv(fd, NK_OP_HELLO, NULL, &hrep, sizeof(hrep));
			expect("pipelined LISTEN (not a set-up request) closes the stream", closed_by_peer(fd), 1);
			close(fd);
		}
		fd = open_stream(guest);
		if (fd >= 0) {
			msg_send(fd, NK_OP_HELLO, 1, &hreq, sizeof(hreq));
			for (i = 0, n = 0; i < 65; i++)
				n += !msg_send(fd, NK_OP_SETSOCKOPT, 2 + i, &oreq, sizeof(oreq));
			msg_recv(fd, NK_OP_HELLO, NULL, &hrep, sizeof(hrep));
			for (i = 0; i < 64; i++)
				msg_recv(fd, NK_OP_SETSOCKOPT, NULL, NULL, 0);
			expect("65 pipelined set-up requests close the stream", closed_by_peer(fd), 1);
			close(fd);
		}
		fd = open_stream(guest);
		if (fd >= 0) {
			struct nk_hello_req c = { .kind = NK_HELLO_CTL, .flags = NK_HELLO_F_SETUP };

			msg_send(fd, NK_OP_HELLO, 1, &c, sizeof(c));
			expect("the set-up flag on a control channel closes it", closed_by_peer(fd), 1);
			close(fd);
		}
	}

	/* Posted options (NK_HELLO_F_POST): no reply, in order with the rest. */
	{
		struct nk_hello_req c = { .kind = NK_HELLO_CTL, .flags = NK_HELLO_F_POST };
		struct nk_hello_req hs = { .kind = NK_HELLO_SOCKET, .family = own.family,
					   .type = NK_SOCK_STREAM, .flags = NK_HELLO_F_POST };
		struct nk_opt_req p = { .level = IPPROTO_TCP, .name = TCP_CORK, .optlen = 4,
					.flags = NK_OPT_F_POSTED };
		int pctl = open_stream(guest), pfd, plain;
		struct nk_hello_rep crep = { 0 };
		uint64_t ptok = 0;

		pfd = new_socket(guest, own.family, NK_SOCK_STREAM, &ptok, NULL);
		expect("HELLO CTL with NK_HELLO_F_POST", pctl < 0 ? pctl : hello(pctl, &c, &crep), 0);
		/* the reply names every flag the NSM takes (the library does
		 * not take a move's reset for an NSM without them) */
		expect("HELLO reply's flags: SETUP, OFFER, QUIET, POST", (int)crep.flags,
		       NK_HELLO_F_SETUP | NK_HELLO_F_OFFER | NK_HELLO_F_QUIET | NK_HELLO_F_POST);
		if (pctl >= 0 && pfd >= 0) {
			p.token = ptok;
			memcpy(p.val, &one, sizeof(one));
			msg_send(pctl, NK_OP_SETSOCKOPT, 100, &p, sizeof(p));
			/* a reply to the posted request would come first
			 * (op SETSOCKOPT, seq 100) and fail this call */
			ret = opt_req(pctl, NK_OP_GETSOCKOPT, ptok, IPPROTO_TCP, TCP_CORK, NULL, 4,
				      &orep);
			expect("posted TCP_CORK on: no reply; a GETSOCKOPT behind it reads 1",
			       ret ? ret : (orep.optlen == 4 && orep.val[0] == 1) ? 0 : -1, 0);
			memset(p.val, 0, sizeof(p.val));
			msg_send(pctl, NK_OP_SETSOCKOPT, 101, &p, sizeof(p));
			p.level = SOL_SOCKET;
			p.name = 36;	/* SO_MARK: refused, and posted, so unanswered */
			msg_send(pctl, NK_OP_SETSOCKOPT, 102, &p, sizeof(p));
			p.level = IPPROTO_TCP;
			p.name = TCP_CORK;
			p.token = ptok ^ 1;	/* no such socket: unanswered too */
			msg_send(pctl, NK_OP_SETSOCKOPT, 103, &p, sizeof(p));
			p.token = ptok;
			ret = opt_req(pctl, NK_OP_GETSOCKOPT, ptok, IPPROTO_TCP, TCP_CORK, NULL, 4,
				      &orep);
			expect("posted TCP_CORK off, a refused and an unknown one: none answered, "
			       "the next reply reads 0",
			       ret ? ret : (orep.optlen == 4 && orep.val[0] == 0) ? 0 : -1, 0);
			msg_send(pctl, NK_OP_GETSOCKOPT, 104, &p, sizeof(p));
			expect("a posted GETSOCKOPT closes the channel", closed_by_peer(pctl), 1);
		}
		if (pctl >= 0)
			close(pctl);
		plain = new_ctl(guest);
		if (plain >= 0 && pfd >= 0) {
			msg_send(plain, NK_OP_SETSOCKOPT, 1, &p, sizeof(p));
			expect("a posted SETSOCKOPT on a channel without the flag closes it",
			       closed_by_peer(plain), 1);
			close(plain);
		}
		if (pfd >= 0)
			close(pfd);
		pfd = open_stream(guest);
		if (pfd >= 0) {
			msg_send(pfd, NK_OP_HELLO, 1, &hs, sizeof(hs));
			expect("the post flag on a socket's HELLO closes it", closed_by_peer(pfd), 1);
			close(pfd);
		}
	}

	check_offer(guest, ctl, &own);
	check_pipelined(guest);

	/* ... and the control channel opened first still works. */
	expect("first ctl channel unaffected", sock_req(ctl, NK_OP_STATUS, 12345, 0, &st), ENOTSOCK);

	printf("%d failure%s\n", failures, failures == 1 ? "" : "s");
	return failures ? -1 : 0;
}

/* ---- protocol fuzzing --------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(void)
{
	/* xorshift64*: reproducible from the seed printed at the start */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545f4914f6cdd1dULL) >> 32);
}

/* Append one message (header + body of op's request size) to buf. */
static size_t put_msg(uint8_t *buf, size_t off, uint8_t op, const void *body, size_t len)
{
	struct nk_hdr h = { .magic = NK_PROTO_MAGIC, .version = NK_PROTO_VERSION, .op = op,
			    .len = sizeof(h) + len, .seq = rnd() };

	memcpy(buf + off, &h, sizeof(h));
	memcpy(buf + off + sizeof(h), body, len);
	return off + sizeof(h) + len;
}

/*
 * One conversation: a well-formed opening picked at random (HELLO of each
 * kind and flag, set-up pipelines, control requests naming live, dead and
 * random tokens, claims of real and invented connections), then mutated:
 * bytes flipped, cut short, garbage appended, lengths changed.  What the
 * NSM says back is read and dropped.  A real token (listener, offered
 * connection) makes deeper paths reachable.
 */
static void fuzz_one(const char *guest, const struct nk_addr *own, uint64_t live_tok,
		     uint64_t listener, uint64_t conn_id)
{
	uint8_t buf[4096], junk[512];
	struct nk_hello_req hello = { .pid = 1 };
	struct nk_addr_req areq = { 0 };
	struct nk_sock_req sreq = { 0 };
	struct nk_opt_req oreq = { 0 };
	size_t off = 0, cut;
	uint32_t i, n, r = rnd() % 8;
	int fd, flips;

	fd = open_stream(guest);
	if (fd < 0)
		return;
	switch (r) {
	case 0:	/* HELLO SOCKET, any flags, pipelined set-up requests */
	case 1:
		hello.kind = NK_HELLO_SOCKET;
		hello.family = rnd() % 2 ? own->family : rnd() % 8;
		hello.type = 1 + rnd() % 2;
		hello.flags = rnd() % 8;
		off = put_msg(buf, off, NK_OP_HELLO, &hello, sizeof(hello));
		for (i = 0, n = rnd() % 4; i < n; i++) {
			oreq.token = rnd() % 4 ? 0 : live_tok;
			oreq.level = rnd() % 3 ? IPPROTO_TCP : SOL_SOCKET;
			oreq.name = rnd() % 40;
			oreq.optlen = rnd() % 5 ? 4 : rnd() % 300;
			off = put_msg(buf, off, NK_OP_SETSOCKOPT, &oreq, sizeof(oreq));
		}
		areq.token = rnd() % 4 ? 0 : live_tok;
		areq.addr = *own;
		areq.addr.port = rnd() % 4 ? 9 : rnd();
		off = put_msg(buf, off, rnd() % 4 ? NK_OP_CONNECT : 1 + rnd() % 12, &areq,
			      sizeof(areq));
		break;
	case 2:	/* HELLO CTL and requests */
	case 3:
		hello.kind = NK_HELLO_CTL;
		hello.flags = rnd() % 4 ? 0 : rnd() % 8;
		off = put_msg(buf, off, NK_OP_HELLO, &hello, sizeof(hello));
		for (i = 0, n = 1 + rnd() % 6; i < n && off + 400 < sizeof(buf); i++) {
			uint64_t tok = rnd() % 2 ? live_tok : rnd() % 2 ? listener : rnd();
			uint8_t op = 2 + rnd() % 8;

			switch (op) {
			case NK_OP_BIND:
			case NK_OP_CONNECT:
				areq.token = tok;
				areq.addr = *own;
				areq.addr.port = rnd();
				if (rnd() % 4 == 0)
					areq.addr.family = rnd() % 8;
				off = put_msg(buf, off, op, &areq, sizeof(areq));
				break;
			case NK_OP_SETSOCKOPT:
			case NK_OP_GETSOCKOPT:
				oreq.token = tok;
				oreq.level = rnd() % 2 ? IPPROTO_TCP : rnd() % 2 ? SOL_SOCKET : rnd();
				oreq.name = rnd() % 70;
				oreq.optlen = rnd() % 3 ? 4 : rnd() % 400;
				off = put_msg(buf, off, op, &oreq, sizeof(oreq));
				break;
			default:
				sreq.token = tok;
				sreq.arg = rnd() % 3 ? (int)(rnd() % 3) : (int)rnd();
				off = put_msg(buf, off, op, &sreq, sizeof(sreq));
				break;
			}
		}
		break;
	case 4:	/* claims: real listener, real or invented conn_id, any flags */
	case 5:
		hello.kind = NK_HELLO_ACCEPT;
		hello.listener = rnd() % 4 ? listener : rnd();
		hello.conn_id = rnd() % 2 ? conn_id : rnd() % 8;
		hello.flags = rnd() % 2 ? NK_HELLO_F_QUIET : rnd() % 8;
		off = put_msg(buf, off, NK_OP_HELLO, &hello, sizeof(hello));
		break;
	default: /* a header and random bytes */
		hello.kind = rnd() % 5;
		off = put_msg(buf, off, rnd() % 2 ? NK_OP_HELLO : rnd() % 16, &hello,
			      sizeof(hello));
		break;
	}
	/* Mutate: flip bytes, change the length of a message, cut, append. */
	for (flips = rnd() % 4; flips > 0; flips--)
		buf[rnd() % off] ^= (uint8_t)(1u << (rnd() % 8));
	if (rnd() % 4 == 0)
		buf[4 + rnd() % 4] = (uint8_t)rnd();	/* the first message's length */
	cut = rnd() % 3 ? off : rnd() % (off + 1);
	if (rnd() % 4 == 0) {
		for (i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)rnd();
		n = rnd() % sizeof(junk);
		if (cut + n <= sizeof(buf)) {
			memcpy(buf + cut, junk, n);
			cut += n;
		}
	}
	xwrite(fd, buf, cut);
	if (rnd() % 2)
		shutdown(fd, SHUT_WR);
	/* Read what comes back for a moment (replies, records), then go. */
	for (i = 0; i < 4 && readable_within(fd, rnd() % 3 ? 1 : 20); i++)
		if (read(fd, junk, sizeof(junk)) <= 0)
			break;
	close(fd);
}

/*
 * nk_proto_client fuzz GUEST VM-ADDR SECS SEED: conversations as above for
 * SECS seconds against a live NSM.  Prints the count; exit status 0 if the
 * NSM still answers a well-formed HELLO CTL and STATUS at the end.
 */
static int cmd_fuzz(const char *guest, const char *vmaddr, const char *secs, const char *seed)
{
	struct nk_addr own, bound;
	struct nk_addr_rep ar;
	struct nk_status_rep st;
	struct nk_accept_offer off;
	uint64_t live = 0, lt = 0, conn_id = 1, count = 0;
	int ctl, lfd, cfd = -1, ret;
	time_t end;

	if (nk_addr_parse(&own, vmaddr))
		return -EINVAL;
	rng_state = strtoull(seed, NULL, 0) | 1;
	ctl = new_ctl(guest);
	if (ctl < 0)
		return ctl;
	/* A live socket and an offering listener with a waiting connection. */
	new_socket(guest, own.family, NK_SOCK_STREAM, &live, NULL);
	lfd = new_socket_flags(guest, own.family, NK_HELLO_F_OFFER, &lt);
	bound = own;
	bound.port = 0;
	if (lfd >= 0 && !addr_req(ctl, NK_OP_BIND, lt, &bound, &ar) &&
	    !sock_req(ctl, NK_OP_LISTEN, lt, 64, NULL)) {
		uint64_t ct;

		cfd = new_socket_flags(guest, own.family, 0, &ct);
		if (cfd >= 0 && !addr_req(ctl, NK_OP_CONNECT, ct, &ar.addr, NULL) &&
		    !msg_recv(lfd, NK_OP_ACCEPT_OFFER, NULL, &off, sizeof(off)))
			conn_id = off.conn_id;
	}
	end = time(NULL) + atoi(secs);
	while (time(NULL) < end) {
		fuzz_one(guest, &own, live, lt, conn_id);
		count++;
	}
	printf("fuzz: %llu conversations (seed %s)\n", (unsigned long long)count, seed);
	close(ctl);
	ctl = new_ctl(guest);
	ret = ctl < 0 ? ctl : sock_req(ctl, NK_OP_STATUS, live, 0, &st);
	printf("after fuzzing: HELLO CTL + STATUS %s\n", ret ? strerror(ret < 0 ? -ret : ret) : "ok");
	if (cfd >= 0)
		close(cfd);
	if (lfd >= 0)
		close(lfd);
	return ret ? -1 : 0;
}

/* ---- datagram sockets --------------------------------------------------- */

/* One frame, one write (dst NULL: the connected peer). */
static int dgram_send(int fd, const struct nk_addr *dst, const void *p, size_t len)
{
	static char frame[sizeof(struct nk_dgram_hdr) + NK_DGRAM_MAX];
	struct nk_dgram_hdr h = { .len = len };

	if (len > NK_DGRAM_MAX)
		return -EMSGSIZE;
	if (dst)
		h.addr = *dst;
	memcpy(frame, &h, sizeof(h));
	memcpy(frame + sizeof(h), p, len);
	return xwrite(fd, frame, sizeof(h) + len);
}

/* One frame within ms: 1 (header in *h, payload in buf), 0 (nothing), or
 * -errno (-ECONNRESET: the stream was closed, -EPROTO: a bad frame). */
static int dgram_recv(int fd, struct nk_dgram_hdr *h, void *buf, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int ret;

	ret = poll(&p, 1, ms);
	if (ret <= 0)
		return ret < 0 ? -errno : 0;
	ret = xread(fd, h, sizeof(*h));
	if (ret <= 0)
		return ret ? ret : -ECONNRESET;
	if (h->len > NK_DGRAM_MAX || (h->flags & ~NK_DGRAM_F_ERROR) ||
	    ((h->flags & NK_DGRAM_F_ERROR) && (h->len || !h->err)))
		return -EPROTO;
	if (h->len) {
		ret = xread(fd, buf, h->len);
		if (ret <= 0)
			return ret ? ret : -ECONNRESET;
	}
	return 1;
}

/* The next data frame (error frames skipped) within ms. */
static int dgram_recv_data(int fd, struct nk_dgram_hdr *h, void *buf, int ms)
{
	int ret;

	do
		ret = dgram_recv(fd, h, buf, ms);
	while (ret == 1 && (h->flags & NK_DGRAM_F_ERROR));
	return ret;
}

static int udp_opt_check(int ctl, uint64_t token, int level, int name, int val)
{
	struct nk_opt_rep rep;
	int ret, got = 0;

	ret = opt_req(ctl, NK_OP_SETSOCKOPT, token, level, name, &val, sizeof(val), NULL);
	if (ret)
		return ret;
	ret = opt_req(ctl, NK_OP_GETSOCKOPT, token, level, name, NULL, sizeof(int), &rep);
	if (ret)
		return ret;
	memcpy(&got, rep.val, sizeof(got));
	return rep.optlen == sizeof(int) && got == val ? 0 : -1;
}

static void fill(char *p, size_t len, int seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (char)('A' + (seed * 7 + i) % 26);
}

static int cmd_udpcheck(const char *guest, const char *vmaddr, const char *echo, const char *port,
			const char *closed, const char *vmaddr2)
{
	static const size_t sizes[] = { 1, 1400, 0, 9000, 60000, 3, 32768, 512 };
	static char buf[NK_DGRAM_MAX], want[NK_DGRAM_MAX];
	struct nk_addr own, own2, dst, cl, any = { 0 }, lo, unspec = { 0 };
	struct nk_dgram_hdr h;
	struct nk_addr_rep ar;
	struct nk_status_rep st;
	char a[NK_ADDRSTRLEN], line[160];
	uint64_t token = 0, token2 = 0, token3 = 0;
	int ctl, fd, fd2, fd3, ret, ok, v6, i;
	uint16_t port1 = 0;

	if (nk_addr_parse(&own, vmaddr) || parse_addr_port(&dst, echo, port) ||
	    parse_addr_port(&cl, echo, closed))
		return -EINVAL;
	if (vmaddr2 && nk_addr_parse(&own2, vmaddr2))
		return -EINVAL;
	v6 = own.family == NK_AF_INET6;
	any.family = own.family;
	nk_addr_parse(&lo, v6 ? "::1" : "127.0.0.1");
	lo.port = dst.port;

	ctl = new_ctl(guest);
	expect("HELLO CTL", ctl < 0 ? ctl : 0, 0);
	if (ctl < 0)
		return -1;

	/* ---- a fresh socket, its options and what it refuses */
	fd = new_socket(guest, own.family, NK_SOCK_DGRAM, &token, NULL);
	expect("HELLO SOCKET DGRAM", fd < 0 ? fd : 0, 0);
	if (fd < 0)
		return -1;
	ret = sock_req(ctl, NK_OP_GETNAME, token, 0, &ar);
	expect("GETNAME local of a fresh UDP socket: wildcard, port 0",
	       ret ? ret : (nk_addr_is_any(&ar.addr) && !ar.addr.port) ? 0 : -1, 0);
	expect("LISTEN on UDP -> EOPNOTSUPP", sock_req(ctl, NK_OP_LISTEN, token, 4, NULL),
	       EOPNOTSUPP);
	expect("GETNAME peer unconnected -> ENOTCONN",
	       sock_req(ctl, NK_OP_GETNAME, token, 1, &ar), ENOTCONN);
	expect("SHUTDOWN unconnected -> ENOTCONN",
	       sock_req(ctl, NK_OP_SHUTDOWN, token, SHUT_RD, NULL), ENOTCONN);
	expect("SO_BROADCAST set and read back",
	       udp_opt_check(ctl, token, SOL_SOCKET, SO_BROADCAST, 1), 0);
	expect("SO_RCVBUF set", opt_req(ctl, NK_OP_SETSOCKOPT, token, SOL_SOCKET, SO_RCVBUF,
					 &(int){ 1 << 20 }, sizeof(int), NULL), 0);
	if (v6) {
		expect("IPV6_UNICAST_HOPS set and read back",
		       udp_opt_check(ctl, token, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 33), 0);
		expect("IPV6_MULTICAST_HOPS set and read back",
		       udp_opt_check(ctl, token, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 3), 0);
		expect("IPV6_RECVERR -> ENOPROTOOPT",
		       opt_req(ctl, NK_OP_SETSOCKOPT, token, IPPROTO_IPV6, IPV6_RECVERR,
			       &(int){ 1 }, sizeof(int), NULL), ENOPROTOOPT);
	} else {
		expect("IP_TTL set and read back", udp_opt_check(ctl, token, IPPROTO_IP, IP_TTL, 33),
		       0);
		expect("IP_TOS set and read back",
		       udp_opt_check(ctl, token, IPPROTO_IP, IP_TOS, 0x10), 0);
		expect("IP_MULTICAST_TTL set and read back",
		       udp_opt_check(ctl, token, IPPROTO_IP, IP_MULTICAST_TTL, 3), 0);
		expect("IP_MULTICAST_LOOP set and read back",
		       udp_opt_check(ctl, token, IPPROTO_IP, IP_MULTICAST_LOOP, 0), 0);
		expect("IP_RECVERR -> ENOPROTOOPT",
		       opt_req(ctl, NK_OP_SETSOCKOPT, token, IPPROTO_IP, IP_RECVERR, &(int){ 1 },
			       sizeof(int), NULL), ENOPROTOOPT);
	}

	/* ---- the first datagram binds implicitly, to the VM's address */
	dgram_send(fd, &dst, "whoami", 6);
	ret = dgram_recv_data(fd, &h, buf, 3000);
	ok = ret == 1 && nk_addr_same_ip(&h.addr, &dst) && h.addr.port == dst.port;
	expect("the echo's reply comes back with the echo's address as source", ok ? 0 : -1, 0);
	ret = sock_req(ctl, NK_OP_GETNAME, token, 0, &ar);
	expect("GETNAME local after the implicit bind: wildcard and a port",
	       ret ? ret : (nk_addr_is_any(&ar.addr) && ar.addr.port) ? 0 : -1, 0);
	port1 = ar.addr.port;
	snprintf(line, sizeof(line), "%s %u", nk_addr_ntop(&own, a, sizeof(a)), port1);
	ok = h.len == strlen(line) && !memcmp(buf, line, h.len);
	printf("%s the echo saw the datagram come from %.*s (want %s)\n", ok ? "PASS" : "FAIL",
	       (int)h.len, buf, line);
	failures += !ok;

	/* ---- boundaries: back to back, one write each, and several frames in one write */
	for (i = 0; i < (int)(sizeof(sizes) / sizeof(sizes[0])); i++) {
		fill(want, sizes[i], i);
		dgram_send(fd, &dst, want, sizes[i]);
	}
	{
		char two[2 * sizeof(struct nk_dgram_hdr) + 10];
		struct nk_dgram_hdr th = { .len = 5, .addr = dst };

		memcpy(two, &th, sizeof(th));
		memcpy(two + sizeof(th), "frame", 5);
		memcpy(two + sizeof(th) + 5, &th, sizeof(th));
		memcpy(two + 2 * sizeof(th) + 5, "FRAME", 5);
		xwrite(fd, two, sizeof(two));
	}
	ok = 1;
	for (i = 0; i < (int)(sizeof(sizes) / sizeof(sizes[0])) && ok; i++) {
		fill(want, sizes[i], i);
		ret = dgram_recv_data(fd, &h, buf, 3000);
		ok = ret == 1 && h.len == sizes[i] && !memcmp(buf, want, sizes[i]) &&
		     nk_addr_same_ip(&h.addr, &dst);
		if (!ok)
			printf("     datagram %d (%zu bytes): got %d, %u bytes\n", i, sizes[i], ret,
			       ret == 1 ? h.len : 0);
	}
	expect("8 datagrams (0..60000 bytes) sent back to back come back whole, in order",
	       ok ? 0 : -1, 0);
	ret = dgram_recv_data(fd, &h, buf, 3000);
	ok = ret == 1 && h.len == 5 && !memcmp(buf, "frame", 5);
	ret = dgram_recv_data(fd, &h, buf, 3000);
	ok = ok && ret == 1 && h.len == 5 && !memcmp(buf, "FRAME", 5);
	expect("two frames in one write are two datagrams", ok ? 0 : -1, 0);

	/* ---- refused destinations are dropped, the stream stays */
	dgram_send(fd, &lo, "x", 1);
	dgram_send(fd, NULL, "x", 1);	/* not connected: no peer */
	dgram_send(fd, &dst, "whoami", 6);
	ret = dgram_recv_data(fd, &h, buf, 3000);
	expect("datagrams to loopback / without a peer dropped, the socket goes on",
	       ret == 1 && nk_addr_same_ip(&h.addr, &dst) ? 0 : -1, 0);

	/* ---- connect, ICMP port unreachable, disconnect */
	fd2 = new_socket(guest, own.family, NK_SOCK_DGRAM, &token2, NULL);
	expect("CONNECT loopback -> ENETUNREACH",
	       addr_req(ctl, NK_OP_CONNECT, token2, &lo, NULL), ENETUNREACH);
	expect("CONNECT (synchronous, no CONNECTED record)",
	       addr_req(ctl, NK_OP_CONNECT, token2, &cl, NULL), 0);
	ret = sock_req(ctl, NK_OP_GETNAME, token2, 1, &ar);
	expect("GETNAME peer of the connected socket",
	       ret ? ret : (nk_addr_same_ip(&ar.addr, &cl) && ar.addr.port == cl.port) ? 0 : -1, 0);
	ret = sock_req(ctl, NK_OP_GETNAME, token2, 0, &ar);
	expect("GETNAME local of the connected socket: the VM's address",
	       ret ? ret : (nk_addr_same_ip(&ar.addr, &own) && ar.addr.port) ? 0 : -1, 0);
	ret = sock_req(ctl, NK_OP_STATUS, token2, 0, &st);
	expect("STATUS connected", ret ? ret : st.state == NK_STATE_CONNECTED ? 0 : -1, 0);
	dgram_send(fd2, NULL, "ping", 4);
	ret = dgram_recv(fd2, &h, buf, 3000);
	expect("ICMP port unreachable -> error frame ECONNREFUSED",
	       ret == 1 && (h.flags & NK_DGRAM_F_ERROR) ? h.err : ret, ECONNREFUSED);
	expect("CONNECT again, to the echo", addr_req(ctl, NK_OP_CONNECT, token2, &dst, NULL), 0);
	dgram_send(fd2, NULL, "whoami", 6);
	ret = dgram_recv_data(fd2, &h, buf, 3000);
	expect("a datagram without address goes to the connected peer",
	       ret == 1 && nk_addr_same_ip(&h.addr, &dst) ? 0 : -1, 0);
	expect("SHUTDOWN SHUT_RD connected", sock_req(ctl, NK_OP_SHUTDOWN, token2, SHUT_RD, NULL),
	       0);
	expect("CONNECT NK_AF_UNSPEC dissolves",
	       addr_req(ctl, NK_OP_CONNECT, token2, &unspec, NULL), 0);
	expect("GETNAME peer after dissolving -> ENOTCONN",
	       sock_req(ctl, NK_OP_GETNAME, token2, 1, &ar), ENOTCONN);
	/* Linux releases the implicitly bound port: 0.0.0.0:0. */
	ret = sock_req(ctl, NK_OP_GETNAME, token2, 0, &ar);
	expect("GETNAME local after dissolving: wildcard, port 0 (released)",
	       ret ? ret : (nk_addr_is_any(&ar.addr) && !ar.addr.port) ? 0 : -1, 0);
	dgram_send(fd2, &dst, "whoami", 6);
	ret = dgram_recv_data(fd2, &h, buf, 3000);
	snprintf(line, sizeof(line), "%s ", nk_addr_ntop(&own, a, sizeof(a)));
	expect("after dissolving, a datagram binds again, from the VM's address",
	       ret == 1 && h.len > strlen(line) && !memcmp(buf, line, strlen(line)) ? 0 : -1, 0);
	close(fd2);

	/* ---- explicit wildcard bind; the remote sends first */
	fd3 = new_socket(guest, own.family, NK_SOCK_DGRAM, &token3, NULL);
	ret = addr_req(ctl, NK_OP_BIND, token3, &any, &ar);
	expect("BIND wildcard port 0 reports the wildcard and a port",
	       ret ? ret : (nk_addr_is_any(&ar.addr) && ar.addr.port) ? 0 : -1, 0);
	printf("     bound %s\n", nk_addr_ntop_port(&ar.addr, a, sizeof(a)));
	expect("BIND twice -> EINVAL", addr_req(ctl, NK_OP_BIND, token3, &any, NULL), EINVAL);
	port1 = ar.addr.port;
	snprintf(line, sizeof(line), "poke %s %u", nk_addr_ntop(&own, a, sizeof(a)), port1);
	dgram_send(fd3, &dst, line, strlen(line));
	ret = dgram_recv_data(fd3, &h, buf, 3000);
	snprintf(line, sizeof(line), "poked %s", nk_addr_ntop(&own, a, sizeof(a)));
	expect("a datagram from the remote to the VM's address arrives",
	       ret == 1 && h.len == strlen(line) && !memcmp(buf, line, h.len) ? 0 : -1, 0);
	if (vmaddr2) {
		snprintf(line, sizeof(line), "poke %s %u", nk_addr_ntop(&own2, a, sizeof(a)), port1);
		dgram_send(fd3, &dst, line, strlen(line));
		ret = dgram_recv_data(fd3, &h, buf, 3000);
		snprintf(line, sizeof(line), "poked %s", nk_addr_ntop(&own2, a, sizeof(a)));
		expect("... and one to the VM's other address, on the same socket",
		       ret == 1 && h.len == strlen(line) && !memcmp(buf, line, h.len) ? 0 : -1, 0);
	}
	close(fd3);

	/* ---- malformed frames close that stream only */
	{
		struct nk_dgram_hdr bad = { .len = NK_DGRAM_MAX + 1, .addr = dst };

		fd2 = new_socket(guest, own.family, NK_SOCK_DGRAM, &token2, NULL);
		xwrite(fd2, &bad, sizeof(bad));
		expect("a frame longer than NK_DGRAM_MAX closes the stream", closed_by_peer(fd2), 1);
		close(fd2);
		bad.len = 1;
		bad.flags = 2;
		fd2 = new_socket(guest, own.family, NK_SOCK_DGRAM, &token2, NULL);
		xwrite(fd2, &bad, sizeof(bad));
		expect("a frame with flags set closes the stream", closed_by_peer(fd2), 1);
		close(fd2);
		bad.flags = 0;
		bad.addr.family = v6 ? NK_AF_INET : NK_AF_INET6;
		fd2 = new_socket(guest, own.family, NK_SOCK_DGRAM, &token2, NULL);
		xwrite(fd2, &bad, sizeof(bad));
		expect("a frame of the other family closes the stream", closed_by_peer(fd2), 1);
		close(fd2);
	}
	expect("the control channel is unaffected", sock_req(ctl, NK_OP_STATUS, 12345, 0, &st),
	       ENOTSOCK);
	close(fd);
	usleep(200000);
	ret = sock_req(ctl, NK_OP_STATUS, token, 0, &st);
	expect("STATUS after close -> closed, 0",
	       ret ? ret : (st.state == NK_STATE_CLOSED && !st.sock_err) ? 0 : -1, 0);

	printf("%d failure%s\n", failures, failures == 1 ? "" : "s");
	return failures ? -1 : 0;
}

/*
 * A request behind a datagram, taken by the NSM in the other order: with
 * nk-nsm stopped, a GETSOCKOPT on the control channel (its event is ready
 * first), a datagram on a fresh UDP socket's stream, then GETNAME of that
 * socket behind the GETSOCKOPT.  nk-nsm, continued, reads both requests
 * before the stream; GETNAME must still name the port the datagram bound
 * (sock.c, udp_sync_up()), as on Linux, where sendto() binds at once.
 */
static int cmd_udporder(const char *guest, const char *echo, const char *port,
			const char *nsm_pid)
{
	struct nk_opt_req o = { .level = SOL_SOCKET, .name = SO_RCVBUF, .optlen = 4 };
	struct nk_sock_req g = { .arg = 0 };
	union { struct nk_opt_rep opt; struct nk_addr_rep addr; char raw[NK_MSG_MAX]; } rep;
	struct nk_addr dst;
	uint32_t seq1, seq2, rseq = 0;
	pid_t pid = atoi(nsm_pid);
	uint64_t token = 0;
	int ctl, fd, ret;

	if (parse_addr_port(&dst, echo, port) || pid <= 0)
		return -EINVAL;
	ctl = new_ctl(guest);
	fd = ctl < 0 ? -1 : new_socket(guest, dst.family, NK_SOCK_DGRAM, &token, NULL);
	expect("HELLO CTL and a fresh UDP socket", ctl < 0 ? ctl : fd < 0 ? fd : 0, 0);
	if (ctl < 0 || fd < 0)
		return -1;
	o.token = g.token = token;
	if (kill(pid, SIGSTOP))
		return -errno;
	seq1 = next_seq++;
	seq2 = next_seq++;
	ret = msg_send(ctl, NK_OP_GETSOCKOPT, seq1, &o, sizeof(o));
	usleep(20000);
	if (!ret)
		ret = dgram_send(fd, &dst, "x", 1);
	usleep(20000);
	if (!ret)
		ret = msg_send(ctl, NK_OP_GETNAME, seq2, &g, sizeof(g));
	kill(pid, SIGCONT);
	expect("with nk-nsm stopped: GETSOCKOPT, a datagram, GETNAME sent", ret, 0);
	if (ret)
		return -1;
	ret = msg_recv(ctl, NK_OP_GETSOCKOPT, &rseq, &rep, nk_body_size(NK_OP_GETSOCKOPT, 1));
	expect("GETSOCKOPT answered", ret < 0 ? ret : rseq == seq1 ? 0 : -EPROTO, 0);
	ret = msg_recv(ctl, NK_OP_GETNAME, &rseq, &rep, nk_body_size(NK_OP_GETNAME, 1));
	expect("GETNAME behind the datagram names the port it bound",
	       ret ? ret : rseq != seq2 ? -EPROTO : rep.addr.addr.port ? 0 : -1, 0);
	printf("port %u\n", rep.addr.addr.port);
	close(fd);
	close(ctl);
	printf("%d failure%s\n", failures, failures == 1 ? "" : "s");
	return failures ? -1 : 0;
}

/* stdin lines -> datagrams to ADDR:PORT; datagrams received -> stdout. */
static int cmd_udp(const char *guest, const char *addr, const char *port)
{
	static char buf[NK_DGRAM_MAX];
	struct nk_dgram_hdr h;
	struct nk_addr_rep ar;
	struct nk_addr dst;
	char a[NK_ADDRSTRLEN], line[4096];
	uint64_t token = 0;
	bool in_done = false, named = false;
	int ctl, fd, ret;

	if (parse_addr_port(&dst, addr, port))
		return -EINVAL;
	ctl = new_ctl(guest);
	if (ctl < 0)
		return ctl;
	fd = new_socket(guest, dst.family, NK_SOCK_DGRAM, &token, NULL);
	if (fd < 0)
		return fd;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = in_done ? -1 : 0, .events = POLLIN },
			{ .fd = fd, .events = POLLIN },
		};

		ret = poll(p, 2, in_done ? 1000 : -1);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0)
			break;
		if (p[0].revents) {
			if (!fgets(line, sizeof(line), stdin)) {
				in_done = true;
			} else {
				line[strcspn(line, "\n")] = 0;
				dgram_send(fd, &dst, line, strlen(line));
				if (!named && !sock_req(ctl, NK_OP_GETNAME, token, 0, &ar)) {
					printf("local %s\n", nk_addr_ntop_port(&ar.addr, a, sizeof(a)));
					named = true;
				}
			}
		}
		if (p[1].revents) {
			ret = dgram_recv(fd, &h, buf, 0);
			if (ret < 0)
				return ret;
			if (h.flags & NK_DGRAM_F_ERROR)
				printf("error %s\n", strerror(h.err));
			else
				printf("from %s: %.*s\n", nk_addr_ntop_port(&h.addr, a, sizeof(a)),
				       (int)h.len, buf);
		}
	}
	close(fd);
	return 0;
}

/* ---- nsmctl ------------------------------------------------------------- */

static int nsm_call(int fd, uint8_t type, const void *body, size_t len, int passfd)
{
	char buf[NSM_CTL_MSG_MAX];
	struct nsm_hdr h = {
		.magic = NSM_CTL_MAGIC, .version = NSM_CTL_VERSION, .type = type,
		.len = sizeof(h) + len, .seq = next_seq++,
	};
	struct nsm_hdr rep;
	ssize_t n;

	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), body, len);
	if (nk_send_fd(fd, buf, h.len, passfd, 0) < 0)
		return -errno;
	for (;;) {
		n = recv(fd, &rep, sizeof(rep), 0);
		if (n < (ssize_t)sizeof(rep))
			return n < 0 ? -errno : -EPROTO;
		if (rep.type == NSM_MSG_REPLY && rep.seq == h.seq)
			return rep.err;
	}
}

static void claim_check(int fd, const char *what, const void *body, size_t len, bool stream)
{
	int sv[2] = { -1, -1 }, ret;

	if (stream && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		printf("%s socketpair: %s\n", what, strerror(errno));
		return;
	}
	ret = nsm_call(fd, NSM_MSG_ATTACH_CLAIM, body, len, sv[0]);
	/* strerrorname_np(): glibc 2.32 */
	printf("%s %s\n", what, ret < 0 ? "local-error" : ret ? strerrorname_np(ret) : "ok");
	if (stream) {
		close(sv[0]);
		close(sv[1]);
	}
}

/* ATTACH_CLAIM as nkd would send it, broken one way at a time (nsmctl.h). */
static int claim_checks(int fd, uint32_t vm_id)
{
	struct nsm_claim c = {
		.vm_id = vm_id,
		.hdr = { .magic = NK_PROTO_MAGIC, .version = NK_PROTO_VERSION, .op = NK_OP_HELLO,
			 .len = sizeof(struct nk_hdr) + sizeof(struct nk_hello_req), .seq = 1 },
		.req = { .kind = NK_HELLO_ACCEPT, .flags = NK_HELLO_F_QUIET,
			 .listener = 0x1234567890abcdefull, .conn_id = 1 },
	};
	struct nsm_claim b;

	claim_check(fd, "unknown-token", &c, sizeof(c), true);
	claim_check(fd, "no-stream", &c, sizeof(c), false);
	claim_check(fd, "short", &c, sizeof(c) - 1, true);
	b = c;
	b.vm_id = 65000;
	claim_check(fd, "unknown-vm", &b, sizeof(b), true);
	b = c;
	b.hdr.op = NK_OP_CONNECT;
	claim_check(fd, "not-hello", &b, sizeof(b), true);
	b = c;
	b.hdr.len += 8;
	claim_check(fd, "bad-len", &b, sizeof(b), true);
	b = c;
	b.req.kind = NK_HELLO_SOCKET;
	claim_check(fd, "not-accept", &b, sizeof(b), true);
	b = c;
	b.pad0 = 1;
	claim_check(fd, "pad", &b, sizeof(b), true);
	return 0;
}

/*
 * ATTACH_STREAM as nkd sends a guest's AF_VSOCK stream, one end of a
 * socketpair standing in for it, then a HELLO SOCKET on the other end.
 * Prints "attach ERR hello ERR" (ok, an errno name, or "reset" for a stream
 * closed without an answer).
 */
static int attach_stream_one(int fd, uint32_t vm_id)
{
	struct nsm_vm_ref r = { .vm_id = vm_id };
	struct nk_hello_req req = { .kind = NK_HELLO_SOCKET, .family = NK_AF_INET,
				    .type = NK_SOCK_STREAM, .pid = getpid() };
	struct nk_hello_rep rep;
	struct timeval tv = { .tv_sec = 5 };
	int sv[2], ret;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	/* a stream the NSM neither answers nor closes reads as EAGAIN */
	setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ret = nsm_call(fd, NSM_MSG_ATTACH_STREAM, &r, sizeof(r), sv[0]);
	close(sv[0]);
	printf("attach %s", ret < 0 ? "local-error" : ret ? strerrorname_np(ret) : "ok");
	if (ret) {
		printf("\n");
		close(sv[1]);
		return 0;
	}
	ret = hello(sv[1], &req, &rep);
	printf(" hello %s\n", ret == -ECONNRESET ? "reset" : ret < 0 ? "local-error" :
	       ret ? strerrorname_np(ret) : "ok");
	close(sv[1]);
	return 0;
}

/* "connected", then one attach_stream_one() per line of stdin: the caller
 * changes the NSM's state between them while this holds its control
 * connection. */
static int attach_stream_check(int fd, uint32_t vm_id)
{
	struct timeval tv = { .tv_sec = 5 };
	char line[64];
	int ret = 0;

	/* an NSM that does not answer fails the request, not hangs it */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("connected\n");
	while (!ret && fgets(line, sizeof(line), stdin))
		ret = attach_stream_one(fd, vm_id);
	return ret;
}

static int cmd_nsm(int argc, char **argv)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char buf[sizeof(struct nsm_hdr) + sizeof(struct nsm_hello)];
	int fd, ret = -EINVAL;

	if (argc < 2)
		return -EINVAL;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", argv[0]);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)))
		return -errno;
	if (recv(fd, buf, sizeof(buf), 0) < (ssize_t)sizeof(struct nsm_hdr))
		return -EPROTO;	/* HELLO */

	if (!strcmp(argv[1], "vm-add") && argc >= 5) {
		struct nsm_vm_add m = { .vm_id = atoi(argv[2]) };
		char *list = strdup(argv[4]), *save = NULL, *tok;
		int i;

		snprintf(m.name, sizeof(m.name), "%s", argv[3]);
		for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			int prefix;

			if (m.naddrs == NK_VM_ADDRS_MAX ||
			    nk_addr_parse_prefix(&m.addrs[m.naddrs].addr, &prefix, tok, true)) {
				free(list);
				return -EINVAL;
			}
			m.addrs[m.naddrs++].prefix = prefix;
		}
		free(list);
		for (i = 5; i + 1 < argc; i += 2) {
			if (!strcmp(argv[i], "gw4"))
				nk_addr_parse(&m.gw4, argv[i + 1]);
			else if (!strcmp(argv[i], "gw6"))
				nk_addr_parse(&m.gw6, argv[i + 1]);
			else
				return -EINVAL;
		}
		ret = nsm_call(fd, NSM_MSG_VM_ADD, &m, sizeof(m), -1);
	} else if (!strcmp(argv[1], "vm-del") && argc == 3) {
		struct nsm_vm_ref r = { .vm_id = atoi(argv[2]) };

		ret = nsm_call(fd, NSM_MSG_VM_DEL, &r, sizeof(r), -1);
	} else if (!strcmp(argv[1], "attach-listener") && argc == 4) {
		struct nsm_vm_ref r = { .vm_id = atoi(argv[2]) };
		struct sockaddr_un l = { .sun_family = AF_UNIX };
		int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		snprintf(l.sun_path, sizeof(l.sun_path), "%s", argv[3]);
		unlink(argv[3]);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&l, sizeof(l)) || listen(lfd, 128))
			return -errno;
		ret = nsm_call(fd, NSM_MSG_ATTACH_LISTENER, &r, sizeof(r), lfd);
		close(lfd);
	} else if (!strcmp(argv[1], "claim-checks") && argc == 3) {
		ret = claim_checks(fd, atoi(argv[2]));
	} else if (!strcmp(argv[1], "attach-stream") && argc == 3) {
		ret = attach_stream_check(fd, atoi(argv[2]));
	}
	if (ret > 0)
		fprintf(stderr, "nsm: %s\n", strerror(ret));
	close(fd);
	return ret;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: nk_proto_client nsm CTL vm-add ID NAME ADDR/PFX[,...] [gw4 A] [gw6 A]\n"
		"       nk_proto_client nsm CTL vm-del ID\n"
		"       nk_proto_client nsm CTL attach-listener ID PATH\n"
		"       nk_proto_client nsm CTL claim-checks ID\n"
		"       nk_proto_client nsm CTL attach-stream ID\n"
		"       nk_proto_client connect GUEST ADDR PORT\n"
		"       nk_proto_client listen GUEST ADDR PORT\n"
		"       nk_proto_client check GUEST VM-ADDR FOREIGN-ADDR [REFUSED-ADDR PORT [NO-HOST-ADDR]]\n"
		"       nk_proto_client udpcheck GUEST VM-ADDR ECHO-ADDR ECHO-PORT CLOSED-PORT [VM-ADDR2]\n"
		"       nk_proto_client udp GUEST ADDR PORT\n"
		"       nk_proto_client udporder GUEST ECHO-ADDR ECHO-PORT NSM-PID\n");
}

int main(int argc, char **argv)
{
	int ret = -EINVAL;

	signal(SIGPIPE, SIG_IGN);
	if (argc >= 4 && !strcmp(argv[1], "nsm"))
		ret = cmd_nsm(argc - 2, argv + 2);
	else if (argc == 6 && !strcmp(argv[1], "fuzz"))
		ret = cmd_fuzz(argv[2], argv[3], argv[4], argv[5]);
	else if (argc == 5 && !strcmp(argv[1], "connect"))
		ret = cmd_connect(argv[2], argv[3], argv[4]);
	else if (argc == 5 && !strcmp(argv[1], "listen"))
		ret = cmd_listen(argv[2], argv[3], argv[4]);
	else if (argc == 5 && !strcmp(argv[1], "check"))
		ret = cmd_check(argv[2], argv[3], argv[4], NULL, NULL, NULL);
	else if ((argc == 7 || argc == 8) && !strcmp(argv[1], "udpcheck"))
		ret = cmd_udpcheck(argv[2], argv[3], argv[4], argv[5], argv[6],
				   argc == 8 ? argv[7] : NULL);
	else if (argc == 5 && !strcmp(argv[1], "udp"))
		ret = cmd_udp(argv[2], argv[3], argv[4]);
	else if (argc == 6 && !strcmp(argv[1], "udporder"))
		ret = cmd_udporder(argv[2], argv[3], argv[4], argv[5]);
	else if ((argc == 7 || argc == 8) && !strcmp(argv[1], "check"))
		ret = cmd_check(argv[2], argv[3], argv[4], argv[5], argv[6],
				argc == 8 ? argv[7] : NULL);
	else
		usage();
	if (ret && ret != -1 && ret < 0)
		fprintf(stderr, "nk_proto_client: %s\n", strerror(-ret));
	return ret ? 1 : 0;
}
