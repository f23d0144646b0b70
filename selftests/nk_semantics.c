// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nk_semantics: one case per socket behaviour (TCP and UDP, IPv4 and IPv6),
 * for differential tests.
 *
 *   nk_semantics peer [--bind ADDR]
 *       Runs on the remote host: the services the cases talk to, on both
 *       families (by default one dual-stack socket per service on "::").
 *   nk_semantics client --family 4|6 --peer ADDR --self ADDR --other ADDR
 *                       --blackhole ADDR [--case NAME[,NAME...]] [--list]
 *       Runs in the guest (natively, or under nk-run) and prints one line per
 *       case: "NAME: RESULT".  Each address option is given once per family
 *       (an IPv4 and an IPv6 address); --family picks the one the cases use,
 *       and the IPv4 ones also serve the v4-mapped cases of family 6.
 *       Results are symbolic (errno names, flags, "ok", "peer", "self",
 *       "mapped-peer"...), never addresses or timings, so a native run and
 *       a NetKernel run can be compared line by line.
 *
 * Cases run in both families unless their table entry says otherwise;
 * the differential test counts each (case, family) pair.
 *
 * Peer services (ports on every peer address):
 *   TCP 7001 echo                      7004 send "data", then reset
 *       7002 send "hello", then FIN    7005 count bytes until EOF, send it
 *       7003 reset at once             7006 accept and hold until EOF
 *       7007 send "data", FIN, then reset 200 ms later
 *       7008 send "12", "3" as urgent data (MSG_OOB), "45", then FIN
 *       7010 control: one line per connection,
 *        "CONNECT IP PORT"   connect to IP:PORT, send "ping", read the
 *                            reply, answer "OK <reply>" or "ERR <errno>"
 *        "READEOF IP PORT"   connect, read until EOF or error, answer
 *                            "EOF <bytes>" or "ERR <errno name>"
 *        "PINGEOF IP PORT"   connect, send "ping", read until EOF or
 *                            error; answer as READEOF
 *        "URGEOF IP PORT"    connect, send "x" and "u" as urgent data,
 *                            FIN, read until EOF or error; answer
 *                            "EOF <bytes>" or "ERR <errno name>"
 *        "SENDRST IP PORT"   connect, write until the receiver takes no
 *                            more (300 ms), wait 300 ms, reset; answer
 *                            "ACKED <bytes the receiver acknowledged>"
 *                            (written less SIOCOUTQ)
 *        "HOLD IP PORT N"    open N connections and keep them until the
 *                            control connection closes; answer "OK N"
 *        "UDPSEND IP PORT N SIZE"  send N datagrams of SIZE bytes from UDP
 *                            port 7101 to IP:PORT; answer "OK N"
 *       7099 is never served (ECONNREFUSED).
 *   UDP 7101 echo: each datagram back to its sender
 *       7102 generator: a datagram "S1,S2,..." (sizes) is answered with
 *            one datagram per size, datagram k filled with 'a' + k
 *       7199 is never served (ICMP port unreachable)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#define P_ECHO		7001
#define P_FIN		7002
#define P_RST		7003
#define P_DATARST	7004
#define P_COUNT		7005
#define P_HOLD		7006
#define P_FINRST	7007
#define P_URG		7008
#define P_CTL		7010
#define P_CLOSE		7011	/* accept, close at once */
#define P_CLOSED	7099
#define P_UECHO		7101
#define P_UGEN		7102
#define P_UCLOSED	7199

#define SA(s)		((struct sockaddr *)&(s))
#define SL(s)		slen_of(&(s))

typedef struct sockaddr_storage saddr;

/* The addresses of one family, from the command line (port 0). */
struct fam_addrs {
	saddr peer, self, other, bh;
	bool have;
};

static int fam = AF_INET;
static struct fam_addrs A4, A6;
/* The family under test: templates the cases use. */
static saddr sa_peer, sa_self, sa_other, sa_bh;
static char result[512];
static volatile sig_atomic_t sigpipes;
static char *self_exe;

static const struct { int e; const char *n; } errnames[] = {
	{ 0, "0" }, { EPERM, "EPERM" }, { ENOENT, "ENOENT" }, { EINTR, "EINTR" },
	{ EBADF, "EBADF" }, { EAGAIN, "EAGAIN" }, { EACCES, "EACCES" }, { EFAULT, "EFAULT" },
	{ EINVAL, "EINVAL" }, { EPIPE, "EPIPE" }, { ENOPROTOOPT, "ENOPROTOOPT" },
	{ EPROTONOSUPPORT, "EPROTONOSUPPORT" }, { EOPNOTSUPP, "EOPNOTSUPP" },
	{ EAFNOSUPPORT, "EAFNOSUPPORT" }, { EADDRINUSE, "EADDRINUSE" },
	{ EADDRNOTAVAIL, "EADDRNOTAVAIL" }, { ENETUNREACH, "ENETUNREACH" },
	{ ECONNABORTED, "ECONNABORTED" }, { ECONNRESET, "ECONNRESET" },
	{ EISCONN, "EISCONN" }, { ENOTCONN, "ENOTCONN" }, { ETIMEDOUT, "ETIMEDOUT" },
	{ ECONNREFUSED, "ECONNREFUSED" }, { EHOSTUNREACH, "EHOSTUNREACH" },
	{ EALREADY, "EALREADY" }, { EINPROGRESS, "EINPROGRESS" }, { ENOTSOCK, "ENOTSOCK" },
	{ EPROTO, "EPROTO" }, { EDESTADDRREQ, "EDESTADDRREQ" }, { EMSGSIZE, "EMSGSIZE" },
	{ ENETDOWN, "ENETDOWN" }, { ENOMEM, "ENOMEM" }, { ENOBUFS, "ENOBUFS" },
	{ ENOTTY, "ENOTTY" },
};

static const char *ename(int e)
{
	static char buf[16];
	size_t i;

	for (i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].e == e)
			return errnames[i].n;
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}

/* Append "fmt" to this case's result, space separated. */
static void out(const char *fmt, ...)
{
	size_t n = strlen(result);
	va_list ap;

	if (n && n < sizeof(result) - 1)
		result[n++] = ' ';
	va_start(ap, fmt);
	vsnprintf(result + n, sizeof(result) - n, fmt, ap);
	va_end(ap);
}

/* Record the outcome of a call: "ok" or the errno name. */
static int rc(const char *what, int r)
{
	if (r < 0)
		out("%s=%s", what, ename(errno));
	else
		out("%s=ok", what);
	return r;
}

/* Record a byte count or the errno name. */
static ssize_t rn(const char *what, ssize_t n)
{
	if (n < 0)
		out("%s=%s", what, ename(errno));
	else
		out("%s=%zd", what, n);
	return n;
}

/* ---- addresses -----------------------------------------------------------
 * Addresses are read and written with memcpy only: sockaddr_in, sockaddr_in6
 * and sockaddr_storage are different types to the compiler's aliasing
 * rules, and a cast-and-read across them is optimised into garbage.
 */

static sa_family_t fam_of(const void *sa)
{
	sa_family_t f;

	memcpy(&f, sa, sizeof(f));
	return f;
}

/* The address bytes (4 or 16) of sa; returns their count. */
static size_t ip_of(const void *sa, unsigned char *ip)
{
	if (fam_of(sa) == AF_INET6) {
		memcpy(ip, (const char *)sa + offsetof(struct sockaddr_in6, sin6_addr), 16);
		return 16;
	}
	memcpy(ip, (const char *)sa + offsetof(struct sockaddr_in, sin_addr), 4);
	return 4;
}

static socklen_t slen_of(const saddr *s)
{
	return s->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* sin_port and sin6_port are at the same offset */
static int port_of(const void *s)
{
	uint16_t p;

	memcpy(&p, (const char *)s + offsetof(struct sockaddr_in, sin_port), sizeof(p));
	return ntohs(p);
}

/* Template t with port. */
static saddr at(const saddr *t, int port)
{
	uint16_t p = htons(port);
	saddr s = *t;

	memcpy((char *)&s + offsetof(struct sockaddr_in, sin_port), &p, sizeof(p));
	return s;
}

/* A saddr of family with the given address bytes, port 0. */
static saddr make_sa(int family, const void *ip)
{
	saddr s;

	memset(&s, 0, sizeof(s));
	if (family == AF_INET6) {
		struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };

		memcpy(&s6.sin6_addr, ip, 16);
		memcpy(&s, &s6, sizeof(s6));
	} else {
		struct sockaddr_in s4 = { .sin_family = AF_INET };

		memcpy(&s4.sin_addr, ip, 4);
		memcpy(&s, &s4, sizeof(s4));
	}
	return s;
}

/* The wildcard (any = true) or the loopback address of the family. */
static saddr special(int family, bool any)
{
	uint32_t v4 = htonl(any ? INADDR_ANY : INADDR_LOOPBACK);

	if (family == AF_INET)
		return make_sa(AF_INET, &v4);
	return make_sa(AF_INET6, any ? &in6addr_any : &in6addr_loopback);
}

static saddr wild(int port)
{
	saddr s = special(fam, true);

	return at(&s, port);
}

/* ::ffff:a.b.c.d of an IPv4 template, with port. */
static saddr mapped(const saddr *v4, int port)
{
	unsigned char ip[16] = { [10] = 0xff, [11] = 0xff }, a[16];
	saddr s;

	ip_of(v4, a);
	memcpy(ip + 12, a, 4);
	s = make_sa(AF_INET6, ip);
	return at(&s, port);
}

/* The numeric address of s, for peer control lines. */
static const char *ntop(const saddr *s)
{
	static char buf[4][INET6_ADDRSTRLEN];
	static int i;
	char *b = buf[i++ & 3];
	unsigned char ip[16];

	ip_of(s, ip);
	inet_ntop(s->ss_family, ip, b, INET6_ADDRSTRLEN);
	return b;
}

static bool same_ip(const void *a, const saddr *t)
{
	unsigned char x[16], y[16];
	size_t n;

	if (fam_of(a) != t->ss_family)
		return false;
	n = ip_of(a, x);
	ip_of(t, y);
	return !memcmp(x, y, n);
}

static const char *ip_name(const void *sa, const struct fam_addrs *fa, int family)
{
	saddr any = special(family, true), lo = special(family, false);

	if (same_ip(sa, &fa->peer))
		return "peer";
	if (same_ip(sa, &fa->self))
		return "self";
	if (same_ip(sa, &fa->other))
		return "other";
	if (same_ip(sa, &fa->bh))
		return "blackhole";
	if (same_ip(sa, &any))
		return "any";
	if (same_ip(sa, &lo))
		return "lo";
	return "?";
}

/*
 * The symbolic name of an address: "peer", "self", "other", "any", "lo",
 * "mapped-peer" (::ffff: of the IPv4 peer), "v4-peer" (an AF_INET address
 * in family 6)...; "none" when len is 0, "(lenN)" appended when the length
 * does not fit the family.
 */
static const char *aname(const void *sa, socklen_t len)
{
	static const unsigned char v4mapped[12] = { [10] = 0xff, [11] = 0xff };
	static char buf[4][48];
	static int i;
	char *b = buf[i++ & 3];
	const char *pre = "", *n = "?";
	unsigned char ip[16];

	if (!len)
		return "none";
	if (fam_of(sa) == AF_INET) {
		pre = fam == AF_INET ? "" : "v4-";
		n = ip_name(sa, &A4, AF_INET);
		if (len != sizeof(struct sockaddr_in))
			goto badlen;
	} else if (fam_of(sa) == AF_INET6) {
		ip_of(sa, ip);
		pre = fam == AF_INET6 ? "" : "v6-";
		if (!memcmp(ip, v4mapped, 12)) {
			saddr v4 = make_sa(AF_INET, ip + 12);

			pre = fam == AF_INET6 ? "mapped-" : "v6-mapped-";
			n = ip_name(&v4, &A4, AF_INET);
		} else {
			n = ip_name(sa, &A6, AF_INET6);
		}
		if (len != sizeof(struct sockaddr_in6))
			goto badlen;
	} else {
		snprintf(b, 48, "family%d", fam_of(sa));
		return b;
	}
	snprintf(b, 48, "%s%s", pre, n);
	return b;
badlen:
	snprintf(b, 48, "%s%s(len%u)", pre, n, (unsigned)len);
	return b;
}

/* "NAME:set|zero" for getsockname (peer false) or getpeername, or errno. */
static const char *name_of(int fd, bool peer)
{
	static char buf[4][64];
	static int i;
	char *b = buf[i++ & 3];
	saddr s;
	socklen_t l = sizeof(s);
	int r;

	memset(&s, 0, sizeof(s));
	r = peer ? getpeername(fd, SA(s), &l) : getsockname(fd, SA(s), &l);
	if (r < 0)
		return ename(errno);
	snprintf(b, 64, "%s:%s", aname(&s, l), port_of(&s) ? "set" : "zero");
	return b;
}

static int local_port(int fd)
{
	saddr s;
	socklen_t l = sizeof(s);

	if (getsockname(fd, SA(s), &l) < 0)
		return -1;
	return port_of(&s);
}

static int remote_port(int fd)
{
	saddr s;
	socklen_t l = sizeof(s);

	if (getpeername(fd, SA(s), &l) < 0)
		return -1;
	return port_of(&s);
}

/* "echo", "gen", ... for a peer port. */
static const char *pname(int port)
{
	switch (port) {
	case P_UECHO:
		return "echo";
	case P_UGEN:
		return "gen";
	case P_ECHO:
		return "techo";
	case 0:
		return "zero";
	default:
		return "other";
	}
}

/* ---- sockets ------------------------------------------------------------- */

static int tcp(void)
{
	return socket(fam, SOCK_STREAM, 0);
}

static int udp(void)
{
	return socket(fam, SOCK_DGRAM, 0);
}

static int connect_sa(int type, const saddr *sa)
{
	int s = socket(sa->ss_family, type, 0);

	if (s >= 0 && connect(s, (const struct sockaddr *)sa, slen_of(sa)) < 0) {
		int e = errno;

		close(s);
		errno = e;
		return -1;
	}
	return s;
}

static int connect_to(const saddr *t, int port)
{
	saddr sa = at(t, port);

	return connect_sa(SOCK_STREAM, &sa);
}

static int udp_to(const saddr *t, int port)
{
	saddr sa = at(t, port);

	return connect_sa(SOCK_DGRAM, &sa);
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int sock_error(int fd)
{
	int e = -1;
	socklen_t l = sizeof(e);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
		return -errno;
	return e;
}

static void set_rcvtimeo(int fd, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static ssize_t read_full(int fd, char *buf, size_t len, int timeout_ms)
{
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, timeout_ms) <= 0)
			break;
		n = read(fd, buf + got, len - got);
		if (n <= 0)
			return got ? (ssize_t)got : n;
		got += n;
	}
	return got;
}

/* Wait for a datagram (or an error) up to timeout_ms, then receive it. */
static ssize_t recv_wait(int fd, void *buf, size_t len, int flags, saddr *from, socklen_t *fl,
			 int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, timeout_ms) <= 0) {
		errno = EAGAIN;
		return -1;
	}
	return recvfrom(fd, buf, len, flags | MSG_DONTWAIT, (struct sockaddr *)from, fl);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int bind_listen_sa(const saddr *sa, int backlog)
{
	int s = socket(sa->ss_family, SOCK_STREAM, 0), one = 1;

	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (const struct sockaddr *)sa, slen_of(sa)) < 0 || listen(s, backlog) < 0) {
		close(s);
		return -1;
	}
	return s;
}

static int bind_listen(const saddr *t, int port, int backlog)
{
	saddr sa = at(t, port);

	return bind_listen_sa(&sa, backlog);
}

static void setint(const char *name, int fd, int level, int opt, int v)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v)) < 0)
		out("set_%s=%s", name, ename(errno));
}

static void getint(const char *name, int fd, int level, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &l) < 0)
		out("%s=%s", name, ename(errno));
	else
		out("%s=%d", name, v);
}

/* Start a peer control request in the background (the case accepts). */
static int peer_ctl_async(const char *fmt, ...)
{
	char line[160];
	va_list ap;
	int c = connect_to(&sa_peer, P_CTL);

	if (c < 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (write(c, line, strlen(line)) < 0) {
		close(c);
		return -1;
	}
	return c;
}

static void ctl_reply(int c, char *buf, size_t len)
{
	ssize_t n = read_full(c, buf, len - 1, 5000);

	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	close(c);
}

/* The answer of a background peer request (peer_ctl_async()), as peer="..."
 * (nothing when it could not be started). */
static void peer_reply_out(int c)
{
	char buf[64];

	if (c < 0)
		return;
	ctl_reply(c, buf, sizeof(buf));
	out("peer=\"%s\"", buf);
}

/* A peer control request and its one-line answer. */
static void peer_ctl(char *reply, size_t len, const char *fmt, ...)
{
	char line[160];
	va_list ap;
	int c;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c = peer_ctl_async("%s", line);
	if (c < 0) {
		snprintf(reply, len, "ctl-%s", ename(errno));
		return;
	}
	ctl_reply(c, reply, len);
}

/* datagram k of the generator: len bytes of 'a' + k */
static bool gen_ok(const char *buf, ssize_t n, ssize_t want, int k)
{
	ssize_t i;

	if (n != want)
		return false;
	for (i = 0; i < n; i++)
		if (buf[i] != 'a' + k)
			return false;
	return true;
}

/* ======================================================================
 * TCP cases (both families)
 * ====================================================================== */

static void case_connect_ok(void)
{
	char buf[8] = { 0 };
	int s = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("write", write(s, "abc", 3));
	out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "abc", 3) ? "ok" : "bad");
	out("local=%s peer=%s", name_of(s, false), name_of(s, true));
	close(s);
}

/*
 * nginx's tcp_nopush around each response: TCP_CORK on, header, body,
 * TCP_CORK off (libnkguest posts both without waiting for the NSM); every
 * response must arrive whole, in order, without a timeout. Then the values
 * read back, and the values Linux refuses.
 */
static void case_cork_rounds(void)
{
	static const char head[] = "HTTP/1.1 200 OK\r\n\r\n", body[] = "0123456789abcdef";
	char buf[64];
	int s = connect_to(&sa_peer, P_ECHO), on = 1, off = 0, i, ok = 0;
	size_t want = strlen(head) + strlen(body);

	if (rc("connect", s) < 0)
		return;
	for (i = 0; i < 200; i++) {
		if (setsockopt(s, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) ||
		    write(s, head, strlen(head)) != (ssize_t)strlen(head) ||
		    write(s, body, strlen(body)) != (ssize_t)strlen(body) ||
		    setsockopt(s, IPPROTO_TCP, TCP_CORK, &off, sizeof(off)))
			break;
		if (read_full(s, buf, want, 3000) != (ssize_t)want ||
		    memcmp(buf, head, strlen(head)) || memcmp(buf + strlen(head), body, strlen(body)))
			break;
		ok++;
	}
	out("rounds=%d", ok);
	rc("cork_on", setsockopt(s, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)));
	getint("cork", s, IPPROTO_TCP, TCP_CORK);
	rc("cork_off", setsockopt(s, IPPROTO_TCP, TCP_CORK, &off, sizeof(off)));
	getint("cork", s, IPPROTO_TCP, TCP_CORK);
	rc("nodelay_on", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)));
	getint("nodelay", s, IPPROTO_TCP, TCP_NODELAY);
	rc("nodelay_off", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &off, sizeof(off)));
	getint("nodelay", s, IPPROTO_TCP, TCP_NODELAY);
	rc("cork_short", setsockopt(s, IPPROTO_TCP, TCP_CORK, &on, 2));
	rc("cork_null", setsockopt(s, IPPROTO_TCP, TCP_CORK, NULL, sizeof(on)));
	/* the options libnkguest posts once checked like Linux (redis sets
	 * them on every accepted connection): the edges of their ranges */
	{
		static const struct { const char *what; int level, name, val; } kv[] = {
			{ "keepalive", SOL_SOCKET, SO_KEEPALIVE, 7 },
			{ "keepidle0", IPPROTO_TCP, TCP_KEEPIDLE, 0 },
			{ "keepidle1", IPPROTO_TCP, TCP_KEEPIDLE, 1 },
			{ "keepidle_max", IPPROTO_TCP, TCP_KEEPIDLE, 32767 },
			{ "keepidle_over", IPPROTO_TCP, TCP_KEEPIDLE, 32768 },
			{ "keepintvl0", IPPROTO_TCP, TCP_KEEPINTVL, 0 },
			{ "keepintvl_max", IPPROTO_TCP, TCP_KEEPINTVL, 32767 },
			{ "keepintvl_over", IPPROTO_TCP, TCP_KEEPINTVL, 32768 },
			{ "keepcnt0", IPPROTO_TCP, TCP_KEEPCNT, 0 },
			{ "keepcnt_max", IPPROTO_TCP, TCP_KEEPCNT, 127 },
			{ "keepcnt_over", IPPROTO_TCP, TCP_KEEPCNT, 128 },
			{ "keepcnt_neg", IPPROTO_TCP, TCP_KEEPCNT, -1 },
		};
		size_t k;

		for (k = 0; k < sizeof(kv) / sizeof(kv[0]); k++)
			rc(kv[k].what, setsockopt(s, kv[k].level, kv[k].name, &kv[k].val,
						  sizeof(kv[k].val)));
		getint("keepalive", s, SOL_SOCKET, SO_KEEPALIVE);
		getint("keepidle", s, IPPROTO_TCP, TCP_KEEPIDLE);
		getint("keepintvl", s, IPPROTO_TCP, TCP_KEEPINTVL);
		getint("keepcnt", s, IPPROTO_TCP, TCP_KEEPCNT);
		rc("keepcnt_short", setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &on, 2));
	}
	/* corked, then closed: what was held goes out before the FIN */
	rc("cork_on2", setsockopt(s, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)));
	rc("write_corked", write(s, "tail", 4));
	rc("shut_wr", shutdown(s, SHUT_WR));
	out("tail=%s", read_full(s, buf, 4, 3000) == 4 && !memcmp(buf, "tail", 4) ? "ok" : "bad");
	close(s);
}

static void case_connect_refused(void)
{
	int s = connect_to(&sa_peer, P_CLOSED);

	rc("connect", s);
	if (s >= 0)
		close(s);
}

static void case_connect_twice(void)
{
	saddr sa = at(&sa_peer, P_ECHO);
	int s = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("again", connect(s, SA(sa), SL(sa)));
	rc("again_null", connect(s, NULL, 0));
	rc("again_short", connect(s, SA(sa), 1));
	close(s);
}

static void case_nb_connect(void)
{
	saddr sa = at(&sa_peer, P_ECHO);
	struct pollfd p;
	char buf[4] = { 0 };
	int s = tcp(), r;

	set_nonblock(s);
	r = connect(s, SA(sa), SL(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	p = (struct pollfd){ .fd = s, .events = POLLOUT };
	r = poll(&p, 1, 3000);
	out("poll=%d out=%d err=%d", r, !!(p.revents & POLLOUT), !!(p.revents & POLLERR));
	out("so_error=%s", ename(sock_error(s)));
	rc("write", write(s, "xyz", 3));
	out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "xyz", 3) ? "ok" : "bad");
	close(s);
}

static void case_nb_connect_refused(void)
{
	saddr sa = at(&sa_peer, P_CLOSED);
	struct pollfd p;
	int s = tcp(), r;

	set_nonblock(s);
	r = connect(s, SA(sa), SL(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	p = (struct pollfd){ .fd = s, .events = POLLOUT };
	r = poll(&p, 1, 3000);
	out("poll=%d out=%d err=%d hup=%d", r, !!(p.revents & POLLOUT), !!(p.revents & POLLERR),
	    !!(p.revents & POLLHUP));
	out("so_error=%s", ename(sock_error(s)));
	out("so_error2=%s", ename(sock_error(s)));
	close(s);
}

/*
 * connect() again once poll() said the non-blocking connect is done
 * (Perl's IO::Socket::INET with Timeout, Ruby's connect_nonblock): the
 * outcome once (0, or the error), then EISCONN or a new attempt; after
 * SO_ERROR took the error, ECONNABORTED.
 */
static void case_nb_connect_again(void)
{
	saddr ok = at(&sa_peer, P_ECHO), no = at(&sa_peer, P_CLOSED);
	struct pollfd p;
	char buf[4] = { 0 };
	int s = tcp(), i;

	set_nonblock(s);
	out("connect=%s", connect(s, SA(ok), SL(ok)) ? ename(errno) : "0");
	p = (struct pollfd){ .fd = s, .events = POLLOUT };
	rc("poll", poll(&p, 1, 3000));
	out("again=%s", connect(s, SA(ok), SL(ok)) ? ename(errno) : "0");
	out("again2=%s", connect(s, SA(ok), SL(ok)) ? ename(errno) : "0");
	rc("write", write(s, "xyz", 3));
	out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "xyz", 3) ? "ok" : "bad");
	close(s);

	/* reset between poll() and connect(): the reset's error */
	{
		saddr rst = at(&sa_peer, P_RST);

		s = tcp();
		set_nonblock(s);
		connect(s, SA(rst), SL(rst));
		p = (struct pollfd){ .fd = s, .events = POLLOUT };
		rc("poll", poll(&p, 1, 3000));
		usleep(300000);
		out("after_rst=%s", connect(s, SA(rst), SL(rst)) ? ename(errno) : "0");
		close(s);
	}

	/* a shutdown() in between makes it connected: EISCONN */
	s = tcp();
	set_nonblock(s);
	connect(s, SA(ok), SL(ok));
	p = (struct pollfd){ .fd = s, .events = POLLOUT };
	rc("poll", poll(&p, 1, 3000));
	rc("shutdown", shutdown(s, SHUT_WR));
	out("after_shutdown=%s", connect(s, SA(ok), SL(ok)) ? ename(errno) : "0");
	close(s);

	s = tcp();
	set_nonblock(s);
	for (i = 0; i < 2; i++) {
		out("refused%d=%s", i, connect(s, SA(no), SL(no)) ? ename(errno) : "0");
		p = (struct pollfd){ .fd = s, .events = POLLOUT };
		rc("poll", poll(&p, 1, 3000));
		out("again=%s", connect(s, SA(no), SL(no)) ? ename(errno) : "0");
	}
	close(s);

	s = tcp();
	set_nonblock(s);
	out("refused=%s", connect(s, SA(no), SL(no)) ? ename(errno) : "0");
	p = (struct pollfd){ .fd = s, .events = POLLOUT };
	rc("poll", poll(&p, 1, 3000));
	out("so_error=%s", ename(sock_error(s)));
	out("again=%s", connect(s, SA(no), SL(no)) ? ename(errno) : "0");
	close(s);
}

static void case_nb_connect_blackhole(void)
{
	saddr sa = at(&sa_bh, P_ECHO);
	struct epoll_event ev = { .events = EPOLLOUT }, evs[2];
	struct timeval tv = { 0, 300000 };
	struct pollfd p;
	fd_set w;
	int s = tcp(), r, ep;

	set_nonblock(s);
	r = connect(s, SA(sa), SL(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	p = (struct pollfd){ .fd = s, .events = POLLOUT };
	out("poll=%d", poll(&p, 1, 400));
	r = connect(s, SA(sa), SL(sa));
	out("again=%s", r == 0 ? "0" : ename(errno));
	ep = epoll_create1(0);
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	out("epoll=%d", epoll_wait(ep, evs, 2, 300));
	FD_ZERO(&w);
	FD_SET(s, &w);
	out("select=%d", select(s + 1, NULL, &w, NULL, &tv));
	out("so_error=%s", ename(sock_error(s)));
	close(ep);
	close(s);
}

static void case_sndtimeo_connect(void)
{
	saddr sa = at(&sa_bh, P_ECHO);
	struct timeval tv = { 0, 300000 };
	int s = tcp(), r;
	int64_t t0, dt;

	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	t0 = now_ms();
	r = connect(s, SA(sa), SL(sa));
	dt = now_ms() - t0;
	out("connect=%s", r == 0 ? "0" : ename(errno));
	out("timed=%s", dt >= 250 && dt < 2000 ? "yes" : "no");
	close(s);
}

/* Another thread's calls on a socket whose blocking connect is still
 * waiting return at once (Linux does not hold the socket across the
 * wait). */
struct connect_waiter {
	int s;
	int r, e;
};

static void *blocking_connect(void *arg)
{
	struct connect_waiter *w = arg;
	saddr sa = at(&sa_bh, P_ECHO);

	w->r = connect(w->s, SA(sa), SL(sa));
	w->e = errno;
	return NULL;
}

static void case_connect_other_thread(void)
{
	struct connect_waiter w = { .s = tcp() };
	struct timeval tv = { 1, 0 };
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	pthread_t th;
	int64_t t0, dt;
	int one = 1;

	setsockopt(w.s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	pthread_create(&th, NULL, blocking_connect, &w);
	usleep(200000);
	t0 = now_ms();
	getsockname(w.s, (struct sockaddr *)&ss, &sl);
	setsockopt(w.s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	dt = now_ms() - t0;
	out("other_thread_calls=%s", dt < 300 ? "prompt" : "waited");
	pthread_join(th, NULL);
	out("connect=%s", w.r == 0 ? "0" : ename(w.e));
	close(w.s);
}

static void case_epoll_et_connect(void)
{
	saddr sa = at(&sa_peer, P_ECHO);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = 42 }, evs[4];
	char buf[4] = { 0 };
	int s = tcp(), r, ep = epoll_create1(0);
	int64_t t0;

	set_nonblock(s);
	/* Registered before connect, as nginx does for upstreams. */
	rc("ctl", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
	r = connect(s, SA(sa), SL(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	r = epoll_wait(ep, evs, 4, 3000);
	out("wait=%d out=%d data=%d", r, r > 0 && (evs[0].events & EPOLLOUT),
	    r > 0 && evs[0].data.u64 == 42);
	out("so_error=%s", ename(sock_error(s)));
	rc("write", write(s, "et!", 3));
	/* Extra EPOLLOUT edges are allowed (a stream wakes writers when its
	 * peer reads); what counts is that EPOLLIN arrives. */
	t0 = now_ms();
	do {
		r = epoll_wait(ep, evs, 4, 3000);
	} while (r > 0 && !(evs[0].events & EPOLLIN) && now_ms() - t0 < 3000);
	out("wait2=%s", r > 0 && (evs[0].events & EPOLLIN) ? "in" : "none");
	out("echo=%s", read(s, buf, 3) == 3 && !memcmp(buf, "et!", 3) ? "ok" : "bad");
	close(ep);
	close(s);
}

/* A socket registered in an epoll set that is then closed, and another
 * epoll set that gets the same number: connecting the socket must not put
 * it in the new set (libnkguest re-registers a socket when its fd changes
 * file at connect). */
static void case_epoll_fd_reused(void)
{
	saddr sa = at(&sa_peer, P_ECHO);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u64 = 7 }, evs[4];
	int s = tcp(), ep = epoll_create1(0), ep2, last = -1, r, i;

	rc("ctl", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
	close(ep);
	ep2 = epoll_create1(0);
	out("same_number=%s", ep2 == ep ? "yes" : "no");
	/* Ten more sets, nine of them closed again: the one left must
	 * still see the socket after connect. */
	for (i = 0; i < 10; i++) {
		int e = epoll_create1(0);

		if (epoll_ctl(e, EPOLL_CTL_ADD, s, &ev) < 0)
			out("ctl_many=%s", ename(errno));
		if (i < 9)
			close(e);
		else
			last = e;
	}
	r = connect(s, SA(sa), SL(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	r = epoll_wait(ep2, evs, 4, 200);
	out("new_set_events=%d", r);
	r = epoll_wait(last, evs, 4, 1000);
	out("kept_set=%d out=%d", r, r > 0 && (evs[0].events & EPOLLOUT));
	close(last);
	close(ep2);
	close(s);
}

static void case_select_connect(void)
{
	saddr sa = at(&sa_peer, P_ECHO);
	struct timeval tv = { 3, 0 };
	fd_set w;
	int s = tcp(), r;

	set_nonblock(s);
	r = connect(s, SA(sa), SL(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	FD_ZERO(&w);
	FD_SET(s, &w);
	r = select(s + 1, NULL, &w, NULL, &tv);
	out("select=%d set=%d", r, FD_ISSET(s, &w));
	out("so_error=%s", ename(sock_error(s)));
	close(s);
}

static void case_bind_inuse(void)
{
	saddr sa = at(&sa_self, 0);
	int s1 = tcp(), s2 = tcp();

	rc("bind1", bind(s1, SA(sa), SL(sa)));
	rc("listen", listen(s1, 4));
	sa = at(&sa_self, local_port(s1));
	rc("bind2", bind(s2, SA(sa), SL(sa)));
	close(s1);
	close(s2);
}

static void case_bind_notavail(void)
{
	saddr sa = at(&sa_other, 0);
	int s = tcp();

	rc("bind", bind(s, SA(sa), SL(sa)));
	close(s);
}

static void case_bind_port0(void)
{
	saddr sa = at(&sa_self, 0);
	int s = tcp();

	rc("bind", bind(s, SA(sa), SL(sa)));
	out("name=%s", name_of(s, false));
	close(s);
}

static void case_bind_any_port0(void)
{
	saddr sa = wild(0);
	int s = tcp();

	rc("bind", bind(s, SA(sa), SL(sa)));
	rc("listen", listen(s, 4));
	out("name=%s", name_of(s, false));
	close(s);
}

static void case_bind_twice(void)
{
	saddr sa = at(&sa_self, 0);
	int s = tcp();

	rc("bind1", bind(s, SA(sa), SL(sa)));
	rc("bind2", bind(s, SA(sa), SL(sa)));
	close(s);
}

static void case_bind_badlen(void)
{
	saddr sa = at(&sa_self, 0);
	socklen_t l = SL(sa);
	int s = tcp();

	/* IPv6 accepts the 24-byte RFC 2133 sockaddr_in6: go below it. */
	rc("short", bind(s, SA(sa), fam == AF_INET ? l - 1 : 23));
	sa.ss_family = fam == AF_INET ? AF_INET6 : AF_INET;
	rc("family", bind(s, SA(sa), l));
	close(s);
}

static void case_reuseaddr_listen(void)
{
	saddr sa = at(&sa_self, 0);
	int s1 = tcp(), s2 = tcp(), one = 1;

	setsockopt(s1, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(s2, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	rc("bind1", bind(s1, SA(sa), SL(sa)));
	rc("listen", listen(s1, 4));
	sa = at(&sa_self, local_port(s1));
	rc("bind2", bind(s2, SA(sa), SL(sa)));
	close(s1);
	close(s2);
}

static void case_reuseaddr_bound(void)
{
	saddr sa = at(&sa_self, 0);
	int s1 = tcp(), s2 = tcp(), one = 1;

	setsockopt(s1, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(s2, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	rc("bind1", bind(s1, SA(sa), SL(sa)));
	sa = at(&sa_self, local_port(s1));
	rc("bind2", bind(s2, SA(sa), SL(sa)));
	close(s1);
	close(s2);
}

static void case_reuseport(void)
{
	saddr sa = at(&sa_self, 0);
	int s1 = tcp(), s2 = tcp(), one = 1;

	setsockopt(s1, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(s2, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	rc("bind1", bind(s1, SA(sa), SL(sa)));
	rc("listen1", listen(s1, 4));
	sa = at(&sa_self, local_port(s1));
	rc("bind2", bind(s2, SA(sa), SL(sa)));
	rc("listen2", listen(s2, 4));
	close(s1);
	close(s2);
}

/* The peer's "ping" (sent by its CONNECT request) read from a, as read=... */
static void out_read_ping(int a)
{
	char buf[4];

	out("read=%s", read_full(a, buf, 4, 3000) == 4 && !memcmp(buf, "ping", 4) ? "ping" : "bad");
}

/* Listen on l, have the peer connect to target, accept; the accepted fd. */
static int accept_from_peer(int l, const saddr *target, int *ctl, int flags)
{
	*ctl = peer_ctl_async("CONNECT %s %d\n", ntop(target), local_port(l));
	if (*ctl < 0)
		return -1;
	return accept4(l, NULL, NULL, flags);
}

static void case_accept_basic(void)
{
	int l = bind_listen(&sa_self, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	a = accept_from_peer(l, &sa_self, &c, 0);
	if (rc("accept", a) >= 0) {
		out("local=%s port=%s peer=%s", name_of(a, false),
		    local_port(a) == local_port(l) ? "same" : "diff", name_of(a, true));
		out_read_ping(a);
		rc("write", write(a, "pong", 4));
		close(a);
	}
	peer_reply_out(c);
	close(l);
}

/*
 * TCP_NOTSENT_LOWAT reads 0 until the application sets it, as on Linux,
 * though nk-nsm's relay sets its own on the TCP socket behind a stream
 * (nsm/relay.c, relay_lowat()); what the application sets is what it
 * reads, on a connected socket, on a listener and on what it accepts.
 */
static void case_notsent_lowat(void)
{
	char buf[8];
	unsigned char small[2] = { 0xaa, 0xaa };
	socklen_t sl = sizeof(small);
	int s = connect_to(&sa_peer, P_ECHO), l, a, c;

	if (rc("connect", s) < 0)
		return;
	rc("write", write(s, "ping", 4));
	out("echo=%s", read_full(s, buf, 4, 3000) == 4 && !memcmp(buf, "ping", 4) ? "ok" : "bad");
	getint("lowat", s, IPPROTO_TCP, TCP_NOTSENT_LOWAT);
	rc("get_short", getsockopt(s, IPPROTO_TCP, TCP_NOTSENT_LOWAT, small, &sl));
	out("short=%u:%02x%02x", (unsigned int)sl, small[0], small[1]);
	setint("lowat", s, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 65536);
	getint("lowat", s, IPPROTO_TCP, TCP_NOTSENT_LOWAT);
	setint("lowat0", s, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 0);
	getint("lowat", s, IPPROTO_TCP, TCP_NOTSENT_LOWAT);
	rc("write2", write(s, "pong", 4));
	out("echo2=%s", read_full(s, buf, 4, 3000) == 4 && !memcmp(buf, "pong", 4) ? "ok" : "bad");
	close(s);

	/* accepted: 0 from a listener without it, the listener's value from one with it */
	for (int v = 0; v <= 8192; v += 8192) {
		l = bind_listen(&sa_self, 0, 4);
		if (rc("listen", l) < 0)
			return;
		if (v)
			setint("listener_lowat", l, IPPROTO_TCP, TCP_NOTSENT_LOWAT, v);
		getint("listener_lowat", l, IPPROTO_TCP, TCP_NOTSENT_LOWAT);
		a = accept_from_peer(l, &sa_self, &c, 0);
		if (rc("accept", a) >= 0) {
			out_read_ping(a);
			getint("accepted_lowat", a, IPPROTO_TCP, TCP_NOTSENT_LOWAT);
			rc("write", write(a, "pong", 4));
			close(a);
		}
		peer_reply_out(c);
		close(l);
	}
}

/*
 * What TCP_CORK holds stays held until the uncork: Linux keeps a partial
 * frame up to 200 ms, so none of it is echoed within 100 ms, and all of it
 * right after TCP_CORK off.  Through NetKernel the NSM takes the posted
 * TCP_CORK on when the bytes behind it reach its socket (relay_cork_post()).
 * Then a connection accepted from a corked listener, which inherits
 * TCP_CORK: on, a write and off send the write at once (the peer, which
 * closes when it has it, is seen to close within 100 ms).
 */
static void case_cork_hold(void)
{
	char buf[16];
	int s = connect_to(&sa_peer, P_ECHO), on = 1, off = 0, i, l, a, c;
	ssize_t n, m;

	if (rc("connect", s) < 0)
		return;
	for (i = 0; i < 3; i++) {
		rc("cork_on", setsockopt(s, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)));
		rc("write", write(s, "held", 4));
		n = read_full(s, buf, 4, 100);
		out("within_100ms=%zd", n);
		rc("cork_off", setsockopt(s, IPPROTO_TCP, TCP_CORK, &off, sizeof(off)));
		if (n < 0)
			n = 0;
		m = n < 4 ? read_full(s, buf + n, 4 - n, 3000) : 0;
		out("after_uncork=%s", m >= 0 && n + m == 4 && !memcmp(buf, "held", 4) ? "ok" : "bad");
	}
	close(s);

	l = bind_listen(&sa_self, 0, 4);
	if (rc("listen", l) < 0)
		return;
	setint("listener_cork", l, IPPROTO_TCP, TCP_CORK, 1);
	a = accept_from_peer(l, &sa_self, &c, 0);
	if (rc("accept", a) >= 0) {
		struct pollfd p = { .fd = a, .events = POLLIN };

		out_read_ping(a);
		getint("accepted_cork", a, IPPROTO_TCP, TCP_CORK);
		rc("cork_on", setsockopt(a, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)));
		rc("write", write(a, "pong", 4));
		rc("cork_off", setsockopt(a, IPPROTO_TCP, TCP_CORK, &off, sizeof(off)));
		out("peer_closed_within_100ms=%s",
		    poll(&p, 1, 100) == 1 && read(a, buf, 1) == 0 ? "yes" : "no");
		close(a);
	}
	peer_reply_out(c);
	close(l);
}

/* Requests on an accepted socket at once (libnkguest returns from accept
 * before the NSM has read its claim), and a server that speaks first. */
static void case_accept_then_requests(void)
{
	int l = bind_listen(&sa_self, 0, 4), c, a, one = 1;

	if (rc("listen", l) < 0)
		return;
	a = accept_from_peer(l, &sa_self, &c, 0);
	if (rc("accept", a) >= 0) {
		rc("nodelay", setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
		getint("nodelay", a, IPPROTO_TCP, TCP_NODELAY);
		getint("error", a, SOL_SOCKET, SO_ERROR);
		getint("type", a, SOL_SOCKET, SO_TYPE);
		rc("write_first", write(a, "pong", 4));
		out_read_ping(a);
		rc("shut_rd", shutdown(a, SHUT_RD));
		close(a);
	}
	peer_reply_out(c);
	close(l);
}

/* accept(), then close the listener at once (a one-shot server): the
 * accepted connection goes on. */
static void case_accept_close_listener(void)
{
	int l = bind_listen(&sa_self, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	a = accept_from_peer(l, &sa_self, &c, 0);
	close(l);
	if (rc("accept", a) >= 0) {
		out_read_ping(a);
		rc("write", write(a, "pong", 4));
		close(a);
	}
	peer_reply_out(c);
}

static void case_accept_addr(void)
{
	saddr pa;
	socklen_t pl = sizeof(pa), small = 4;
	char buf[64], tiny[4];
	int l = bind_listen(&sa_self, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	c = peer_ctl_async("CONNECT %s %d\n", ntop(&sa_self), local_port(l));
	a = accept(l, SA(pa), &pl);
	if (rc("accept", a) >= 0) {
		out("addr=%s", aname(&pa, pl));
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	/* A short address buffer: truncated, the full length reported. */
	c = peer_ctl_async("CONNECT %s %d\n", ntop(&sa_self), local_port(l));
	a = accept(l, (struct sockaddr *)tiny, &small);
	if (rc("accept_short", a) >= 0) {
		out("len=%s", small == SL(sa_self) ? "full" : "other");
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	close(l);
}

static void case_accept_wildcard_name(void)
{
	saddr w = wild(0);
	char buf[64];
	int l = bind_listen_sa(&w, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	a = accept_from_peer(l, &sa_self, &c, 0);
	if (rc("accept", a) >= 0) {
		out("local=%s", name_of(a, false));
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	close(l);
}

static void case_accept4_flags(void)
{
	char buf[64];
	int l = bind_listen(&sa_self, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	a = accept_from_peer(l, &sa_self, &c, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (rc("accept4", a) >= 0) {
		out("nonblock=%d cloexec=%d", !!(fcntl(a, F_GETFL) & O_NONBLOCK),
		    !!(fcntl(a, F_GETFD) & FD_CLOEXEC));
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	a = accept_from_peer(l, &sa_self, &c, 0);
	if (rc("accept", a) >= 0) {
		out("nonblock=%d cloexec=%d", !!(fcntl(a, F_GETFL) & O_NONBLOCK),
		    !!(fcntl(a, F_GETFD) & FD_CLOEXEC));
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	close(l);
}

static void case_accept_nonblock_empty(void)
{
	int l = bind_listen(&sa_self, 0, 4);

	set_nonblock(l);
	rc("accept", accept(l, NULL, NULL));
	close(l);
}

static void case_listen_epoll_lt(void)
{
	struct epoll_event ev = { .events = EPOLLIN }, evs[2];
	char buf[64];
	int l = bind_listen(&sa_self, 0, 4), ep = epoll_create1(0), c, a;

	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	out("idle=%d", epoll_wait(ep, evs, 2, 100));
	c = peer_ctl_async("CONNECT %s %d\n", ntop(&sa_self), local_port(l));
	out("ready=%d", epoll_wait(ep, evs, 2, 3000));
	out("still=%d", epoll_wait(ep, evs, 2, 100));
	a = accept(l, NULL, NULL);
	rc("accept", a);
	out("after=%d", epoll_wait(ep, evs, 2, 100));
	if (a >= 0) {
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	close(ep);
	close(l);
}

static void case_listen_epoll_et(void)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET }, evs[2];
	char buf[64];
	int l = bind_listen(&sa_self, 0, 4), ep = epoll_create1(0), c, a;

	set_nonblock(l);
	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	c = peer_ctl_async("CONNECT %s %d\n", ntop(&sa_self), local_port(l));
	out("ready=%d", epoll_wait(ep, evs, 2, 3000));
	out("again=%d", epoll_wait(ep, evs, 2, 100));
	a = accept(l, NULL, NULL);
	rc("accept", a);
	rc("accept2", accept(l, NULL, NULL));
	if (a >= 0) {
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	close(ep);
	close(l);
}

static void case_listen_poll(void)
{
	struct pollfd p;
	char buf[64];
	int l = bind_listen(&sa_self, 0, 4), c, a, i;

	p = (struct pollfd){ .fd = l, .events = POLLIN };
	out("idle=%d", poll(&p, 1, 100));
	c = peer_ctl_async("CONNECT %s %d\n", ntop(&sa_self), local_port(l));
	p.revents = 0;
	i = poll(&p, 1, 3000);
	out("ready=%d in=%d", i, !!(p.revents & POLLIN));
	a = accept(l, NULL, NULL);
	if (a >= 0) {
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	close(l);
}

/* IP_TOS (family 4) or IPV6_TCLASS (family 6). */
static void tos_opt(int fd, int v)
{
	if (fam == AF_INET) {
		setint("tos", fd, IPPROTO_IP, IP_TOS, v);
		getint("tos", fd, IPPROTO_IP, IP_TOS);
	} else {
		setint("tclass", fd, IPPROTO_IPV6, IPV6_TCLASS, v);
		getint("tclass", fd, IPPROTO_IPV6, IPV6_TCLASS);
	}
}

static void case_opt_basic(void)
{
	int s = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	setint("nodelay", s, IPPROTO_TCP, TCP_NODELAY, 1);
	getint("nodelay", s, IPPROTO_TCP, TCP_NODELAY);
	setint("keepalive", s, SOL_SOCKET, SO_KEEPALIVE, 1);
	getint("keepalive", s, SOL_SOCKET, SO_KEEPALIVE);
	setint("keepidle", s, IPPROTO_TCP, TCP_KEEPIDLE, 30);
	getint("keepidle", s, IPPROTO_TCP, TCP_KEEPIDLE);
	setint("keepintvl", s, IPPROTO_TCP, TCP_KEEPINTVL, 5);
	getint("keepintvl", s, IPPROTO_TCP, TCP_KEEPINTVL);
	setint("keepcnt", s, IPPROTO_TCP, TCP_KEEPCNT, 3);
	getint("keepcnt", s, IPPROTO_TCP, TCP_KEEPCNT);
	setint("rcvbuf", s, SOL_SOCKET, SO_RCVBUF, 65536);
	getint("rcvbuf", s, SOL_SOCKET, SO_RCVBUF);
	setint("sndbuf", s, SOL_SOCKET, SO_SNDBUF, 65536);
	getint("sndbuf", s, SOL_SOCKET, SO_SNDBUF);
	tos_opt(s, 0x10);
	getint("type", s, SOL_SOCKET, SO_TYPE);
	getint("domain", s, SOL_SOCKET, SO_DOMAIN);
	getint("protocol", s, SOL_SOCKET, SO_PROTOCOL);
	getint("acceptconn", s, SOL_SOCKET, SO_ACCEPTCONN);
	close(s);
}

static void case_opt_linger_cc(void)
{
	struct linger lg = { 1, 5 }, got = { 0, 0 };
	char cc[16] = { 0 };
	socklen_t l = sizeof(got);
	int s = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("set_linger", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
	rc("get_linger", getsockopt(s, SOL_SOCKET, SO_LINGER, &got, &l));
	out("linger=%d,%d", got.l_onoff, got.l_linger);
	rc("set_cc", setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "reno", 4));
	l = sizeof(cc);
	rc("get_cc", getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc, &l));
	out("cc=%s", cc);
	close(s);
}

static void case_opt_before_connect(void)
{
	saddr sa = at(&sa_peer, P_ECHO);
	int s = tcp();

	setint("nodelay", s, IPPROTO_TCP, TCP_NODELAY, 1);
	setint("keepalive", s, SOL_SOCKET, SO_KEEPALIVE, 1);
	rc("connect", connect(s, SA(sa), SL(sa)));
	getint("nodelay", s, IPPROTO_TCP, TCP_NODELAY);
	getint("keepalive", s, SOL_SOCKET, SO_KEEPALIVE);
	close(s);
}

/*
 * Options Linux takes that the NSM does not (TCP_FASTOPEN_CONNECT, as
 * `curl --tcp-fastopen` sets; IP_RECVERR on a UDP socket), set on the
 * fresh socket: the setsockopt() succeeds, and so do the connect and the
 * first datagram that make the socket on the NSM (docs/compat.md).
 */
static void case_fresh_opt_unsupported(void)
{
	saddr sa = at(&sa_peer, P_ECHO), ua = at(&sa_peer, P_UECHO);
	char buf[8] = { 0 };
	int s = tcp(), u = udp();

	setint("fastopen_connect", s, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1);
	if (rc("connect", connect(s, SA(sa), SL(sa))) == 0) {
		rc("write", write(s, "abc", 3));
		out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "abc", 3) ? "ok" : "bad");
	}
	close(s);
	if (fam == AF_INET)
		setint("recverr", u, IPPROTO_IP, IP_RECVERR, 1);
	else
		setint("recverr", u, IPPROTO_IPV6, IPV6_RECVERR, 1);
	set_rcvtimeo(u, 3000);
	rc("sendto", sendto(u, "udp", 3, 0, SA(ua), SL(ua)));
	memset(buf, 0, sizeof(buf));
	out("uecho=%s", recv(u, buf, sizeof(buf), 0) == 3 && !memcmp(buf, "udp", 3) ? "ok" : "bad");
	close(u);
}

static void case_opt_listener(void)
{
	int l = bind_listen(&sa_self, 0, 4);

	getint("acceptconn", l, SOL_SOCKET, SO_ACCEPTCONN);
	getint("reuseaddr", l, SOL_SOCKET, SO_REUSEADDR);
	close(l);
}

static void case_linger0_rst(void)
{
	struct linger lg = { 1, 0 };
	int l = bind_listen(&sa_self, 0, 4), c, a;

	c = peer_ctl_async("READEOF %s %d\n", ntop(&sa_self), local_port(l));
	a = accept(l, NULL, NULL);
	if (rc("accept", a) >= 0) {
		rc("linger", setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
		close(a);
	}
	peer_reply_out(c);
	close(l);
}

static void case_close_fin(void)
{
	int l = bind_listen(&sa_self, 0, 4), c, a;

	c = peer_ctl_async("READEOF %s %d\n", ntop(&sa_self), local_port(l));
	a = accept(l, NULL, NULL);
	if (rc("accept", a) >= 0) {
		write(a, "bye", 3);
		close(a);
	}
	peer_reply_out(c);
	close(l);
}

/*
 * close() with received bytes unread resets the connection (Linux's
 * tcp_close()): the peer reads ECONNRESET, not EOF.  Through NetKernel
 * those bytes are already in the guest's stream, or still on their way
 * to it (docs/compat.md).  Then the same with every byte read: a FIN.
 */
static void case_close_unread_rst(void)
{
	struct pollfd p;
	char buf[8];
	int l = bind_listen(&sa_self, 0, 4), c, a;

	c = peer_ctl_async("PINGEOF %s %d\n", ntop(&sa_self), local_port(l));
	a = accept(l, NULL, NULL);
	if (rc("accept", a) >= 0) {
		p = (struct pollfd){ .fd = a, .events = POLLIN };
		rc("poll", poll(&p, 1, 3000));	/* "ping" is in, unread */
		close(a);
	}
	peer_reply_out(c);
	c = peer_ctl_async("PINGEOF %s %d\n", ntop(&sa_self), local_port(l));
	a = accept(l, NULL, NULL);
	if (rc("accept_read", a) >= 0) {
		out("read=%zd", read_full(a, buf, 4, 3000));
		close(a);
	}
	peer_reply_out(c);
	/* A non-blocking connect closed before anyone looked at it: nothing
	 * was received, so a FIN (through NetKernel its CONNECTED record
	 * was all the guest left unread). */
	c = tcp();
	set_nonblock(c);
	{
		saddr sa = at(&sa_self, local_port(l));

		connect(c, SA(sa), SL(sa));
	}
	usleep(200000);
	close(c);
	a = accept(l, NULL, NULL);
	if (rc("accept_nb", a) >= 0) {
		set_rcvtimeo(a, 3000);
		ssize_t n = read(a, buf, sizeof(buf));

		out("nb_closed_read=%s", n < 0 ? ename(errno) : n == 0 ? "eof" : "data");
		close(a);
	}
	close(l);
}

static void case_half_close(void)
{
	char big[1000], buf[32] = { 0 };
	int s = connect_to(&sa_peer, P_COUNT);

	if (rc("connect", s) < 0)
		return;
	memset(big, 'x', sizeof(big));
	rc("write", write(s, big, sizeof(big)));
	rc("shutdown", shutdown(s, SHUT_WR));
	read_full(s, buf, sizeof(buf) - 1, 3000);
	out("count=%s", buf);
	out("eof=%zd", read(s, buf, sizeof(buf)));
	rc("write_after", send(s, "y", 1, MSG_NOSIGNAL));
	close(s);
}

static void case_peer_fin(void)
{
	char buf[16] = { 0 };
	int s = connect_to(&sa_peer, P_FIN);

	if (rc("connect", s) < 0)
		return;
	out("read=%zd", read_full(s, buf, 5, 3000));
	out("eof=%zd", read(s, buf, sizeof(buf)));
	out("eof2=%zd", read(s, buf, sizeof(buf)));
	rc("write", send(s, "x", 1, MSG_NOSIGNAL));
	close(s);
}

static void case_peer_rst_read(void)
{
	char buf[16];
	ssize_t n;
	int s = connect_to(&sa_peer, P_RST);

	if (rc("connect", s) < 0)
		return;
	usleep(300000);
	n = read(s, buf, sizeof(buf));
	out("read1=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
	n = read(s, buf, sizeof(buf));
	out("read2=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
	close(s);
}

static void case_peer_rst_write(void)
{
	ssize_t n;
	int s = connect_to(&sa_peer, P_RST);

	if (rc("connect", s) < 0)
		return;
	usleep(300000);
	n = send(s, "x", 1, MSG_NOSIGNAL);
	out("write1=%s", n < 0 ? ename(errno) : "ok");
	n = send(s, "x", 1, MSG_NOSIGNAL);
	out("write2=%s", n < 0 ? ename(errno) : "ok");
	close(s);
}

/* SO_ERROR after the peer's reset: Linux reports it there once, and the
 * read after that ends in EOF. */
static void case_options_after_rst(void)
{
	char buf[8];
	ssize_t n;
	int s = connect_to(&sa_peer, P_RST);

	if (rc("connect", s) < 0)
		return;
	usleep(300000);
	getint("error", s, SOL_SOCKET, SO_ERROR);
	getint("error2", s, SOL_SOCKET, SO_ERROR);
	n = read(s, buf, sizeof(buf));
	out("read=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
	/* the socket is still there: options on a reset connection */
	{
		struct linger lg = { 1, 0 };
		int v = 0;
		socklen_t l = sizeof(v);

		rc("linger", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
		rc("nodelay", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int)));
		rc("get_rcvbuf", getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &l));
		rc("get_nodelay", getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &l));
	}
	out("local=%s peer=%s", name_of(s, false), name_of(s, true));
	rc("shutdown", shutdown(s, SHUT_WR));
	close(s);
}

/* Names and shutdown through an orderly end: the peer's FIN (CLOSE_WAIT:
 * the peer is still there), then ours (CLOSE: ENOTCONN). */
static void case_names_after_fin(void)
{
	char buf[16];
	int s = connect_to(&sa_peer, P_FIN);

	if (rc("connect", s) < 0)
		return;
	while (read(s, buf, sizeof(buf)) > 0)
		;
	out("peer=%s", name_of(s, true));
	rc("shutdown", shutdown(s, SHUT_WR));
	usleep(300000);
	out("local=%s peer2=%s", name_of(s, false), name_of(s, true));
	rc("shutdown2", shutdown(s, SHUT_WR));
	close(s);
}

/* Urgent data from the peer: a reader that does not ask for it (no
 * MSG_OOB, no SO_OOBINLINE) reads the rest of the stream around it. */
static void case_peer_urgent(void)
{
	char buf[16] = { 0 };
	size_t got = 0;
	ssize_t n;
	int s = connect_to(&sa_peer, P_URG);

	if (rc("connect", s) < 0)
		return;
	usleep(300000);
	while (got < sizeof(buf) - 1 && (n = read(s, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += n;
	out("data=%s", buf);
	out("end=%s", n < 0 ? ename(errno) : "eof");
	close(s);
}

/* Urgent data as the last byte before the peer's FIN: the answer to it
 * still reaches the peer, and the connection ends with FINs, no reset. */
static void case_urgent_then_fin(void)
{
	char buf[16];
	int l = bind_listen(&sa_self, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	c = peer_ctl_async("URGEOF %s %d\n", ntop(&sa_self), local_port(l));
	a = accept(l, NULL, NULL);
	if (rc("accept", a) >= 0) {
		while (read(a, buf, sizeof(buf)) > 0)
			;
		rc("write", (int)write(a, "reply", 5));
		close(a);
	}
	peer_reply_out(c);
	close(l);
}

static void on_sigpipe(int sig)
{
	(void)sig;
	sigpipes++;
}

static void case_sigpipe(void)
{
	struct sigaction sa = { .sa_handler = on_sigpipe }, old;
	ssize_t n;
	int s = connect_to(&sa_peer, P_RST);

	if (rc("connect", s) < 0)
		return;
	sigaction(SIGPIPE, &sa, &old);
	usleep(300000);
	sigpipes = 0;
	n = write(s, "x", 1);
	out("write1=%s sig=%d", n < 0 ? ename(errno) : "ok", (int)sigpipes);
	n = write(s, "x", 1);
	out("write2=%s sig=%d", n < 0 ? ename(errno) : "ok", (int)sigpipes);
	n = send(s, "x", 1, MSG_NOSIGNAL);
	out("nosignal=%s sig=%d", n < 0 ? ename(errno) : "ok", (int)sigpipes);
	sigaction(SIGPIPE, &old, NULL);
	close(s);
}

/* Until the peer's reset has arrived on s (any event, at most 3 s). */
static void reset_arrived(int s)
{
	struct pollfd p = { .fd = s, .events = POLLIN | POLLRDHUP };

	usleep(100000);
	poll(&p, 1, 3000);
	usleep(100000);
}

/* One byte into s: sendfile() from f, or splice() from the pipe p. */
static void one_byte_into(int s, bool by_splice, int f, off_t *off, int p, const char *name)
{
	ssize_t n = by_splice ? splice(p, NULL, s, NULL, 1, 0) : sendfile(s, f, off, 1);

	if (by_splice)
		out("%s=%s sig=%d", name, n < 0 ? ename(errno) : "ok", (int)sigpipes);
	else
		out("%s=%s sig=%d off=%lld", name, n < 0 ? ename(errno) : "ok", (int)sigpipes,
		    (long long)*off);
}

/* sendfile() and splice() into a connection the peer reset, SIGPIPE
 * caught: as for write(), Linux's first says ECONNRESET without the
 * signal, the ones after it EPIPE with it.  Twice the first call, then
 * the other one. */
static void pipe_calls_after_rst(bool splice_first)
{
	struct sigaction sa = { .sa_handler = on_sigpipe }, old;
	char path[] = "/tmp/nk-semantics-XXXXXX";
	int f = mkstemp(path), s, p[2] = { -1, -1 };
	const char *first = splice_first ? "splice" : "sendfile";
	char name[16];
	off_t off = 0;

	if (rc("mkstemp", f) < 0)
		return;
	unlink(path);
	if (write(f, "abcdef", 6) != 6 || rc("pipe", pipe(p)) < 0 || write(p[1], "xyz", 3) != 3) {
		out("setup=failed");
		goto out;
	}
	s = connect_to(&sa_peer, P_RST);
	if (rc("connect", s) < 0)
		goto out;
	sigaction(SIGPIPE, &sa, &old);
	reset_arrived(s);
	sigpipes = 0;
	snprintf(name, sizeof(name), "%s1", first);
	one_byte_into(s, splice_first, f, &off, p[0], name);
	snprintf(name, sizeof(name), "%s2", first);
	one_byte_into(s, splice_first, f, &off, p[0], name);
	one_byte_into(s, !splice_first, f, &off, p[0], splice_first ? "sendfile" : "splice");
	sigaction(SIGPIPE, &old, NULL);
	close(s);
out:
	if (p[0] >= 0) {
		close(p[0]);
		close(p[1]);
	}
	close(f);
}

static void case_sendfile_rst(void)
{
	pipe_calls_after_rst(false);
}

static void case_splice_rst(void)
{
	pipe_calls_after_rst(true);
}

/* sendfile() from a file to a connected socket (the peer counts what it
 * got), then to one that is not connected, fresh and bound. */
static void case_sendfile(void)
{
	struct sigaction sa = { .sa_handler = on_sigpipe }, old;
	char path[] = "/tmp/nk-semantics-XXXXXX", big[100000], buf[32] = { 0 };
	saddr bsa;
	int f = mkstemp(path), s, u;
	off_t off = 0;
	ssize_t n = 0;

	if (rc("mkstemp", f) < 0)
		return;
	unlink(path);
	memset(big, 'z', sizeof(big));
	if (write(f, big, sizeof(big)) != (ssize_t)sizeof(big)) {
		out("file=short");
		close(f);
		return;
	}
	s = connect_to(&sa_peer, P_COUNT);
	if (rc("connect", s) >= 0) {
		while (off < (off_t)sizeof(big) && (n = sendfile(s, f, &off, sizeof(big) - off)) > 0)
			;
		out("sendfile=%s off=%lld", n < 0 ? ename(errno) : "ok", (long long)off);
		rc("shutdown", shutdown(s, SHUT_WR));
		read_full(s, buf, sizeof(buf) - 1, 3000);
		out("count=%s", buf);
		close(s);
	}
	u = tcp();
	sigaction(SIGPIPE, &sa, &old);
	sigpipes = 0;
	off = 0;
	n = sendfile(u, f, &off, 10);
	out("unconnected=%s sig=%d off=%lld", n < 0 ? ename(errno) : "ok", (int)sigpipes,
	    (long long)off);
	bsa = at(&sa_self, 0);
	rc("bind", bind(u, SA(bsa), SL(bsa)));
	n = sendfile(u, f, &off, 10);
	out("bound=%s sig=%d off=%lld", n < 0 ? ename(errno) : "ok", (int)sigpipes,
	    (long long)off);
	sigaction(SIGPIPE, &old, NULL);
	close(u);
	close(f);
}

/* splice() from a pipe to a connected socket (the peer counts what it
 * got), from a socket whose peer sends 5 bytes and a FIN into a pipe, and
 * both ways on a bound socket that is not connected. */
static void case_splice(void)
{
	struct sigaction sa = { .sa_handler = on_sigpipe }, old;
	char big[60000], buf[32] = { 0 };
	ssize_t n = 0, total = 0;
	int p[2], s, u;
	saddr bsa;

	if (rc("pipe", pipe(p)) < 0)
		return;
	memset(big, 's', sizeof(big));
	s = connect_to(&sa_peer, P_COUNT);
	if (rc("connect", s) >= 0 && write(p[1], big, sizeof(big)) == (ssize_t)sizeof(big)) {
		while (total < (ssize_t)sizeof(big) &&
		       (n = splice(p[0], NULL, s, NULL, sizeof(big) - total, 0)) > 0)
			total += n;
		out("to_socket=%s total=%zd", n < 0 ? ename(errno) : "ok", total);
		rc("shutdown", shutdown(s, SHUT_WR));
		read_full(s, buf, sizeof(buf) - 1, 3000);
		out("count=%s", buf);
	}
	close(s);
	s = connect_to(&sa_peer, P_FIN);
	if (rc("connect_fin", s) >= 0) {
		total = 0;
		while (total < 5 && (n = splice(s, NULL, p[1], NULL, 100, 0)) > 0)
			total += n;
		out("from_socket=%zd", total);
		n = splice(s, NULL, p[1], NULL, 100, 0);
		out("then=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
		read(p[0], buf, sizeof(buf));
	}
	close(s);
	u = tcp();
	bsa = at(&sa_self, 0);
	rc("bind", bind(u, SA(bsa), SL(bsa)));
	sigaction(SIGPIPE, &sa, &old);
	sigpipes = 0;
	if (write(p[1], "abc", 3) == 3) {
		n = splice(p[0], NULL, u, NULL, 3, 0);
		out("bound_to=%s sig=%d", n < 0 ? ename(errno) : "ok", (int)sigpipes);
	}
	n = splice(u, NULL, p[1], NULL, 3, SPLICE_F_NONBLOCK);
	out("bound_from=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
	sigaction(SIGPIPE, &old, NULL);
	close(u);
	close(p[0]);
	close(p[1]);
}

static void case_data_then_rst(void)
{
	char buf[16] = { 0 };
	ssize_t n;
	int s = connect_to(&sa_peer, P_DATARST);

	if (rc("connect", s) < 0)
		return;
	usleep(500000);
	n = read(s, buf, 4);
	out("read1=%s", n == 4 ? buf : n < 0 ? ename(errno) : "short");
	n = read(s, buf, sizeof(buf));
	out("read2=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
	close(s);
}

/*
 * Resets behind more data than the reader has read: Linux's read gives
 * every byte its TCP acknowledged, then ECONNRESET (or EOF once a write
 * has reported the reset).  The guest reads nothing until the peer has
 * reset (SENDRST), so the bytes wait in whatever buffers the path has
 * (natively, the guest's receive queue).  rst_* helpers: the common part.
 */
struct rst_conn {
	int l, c, a;
	unsigned long long acked;
};

/* Listen, have the peer connect (SENDRST) and accept; false on failure. */
static bool rst_open(struct rst_conn *r)
{
	r->l = bind_listen(&sa_self, 0, 4);
	r->c = peer_ctl_async("SENDRST %s %d\n", ntop(&sa_self), local_port(r->l));
	r->a = accept(r->l, NULL, NULL);
	if (rc("accept", r->a) >= 0 && r->c >= 0)
		return true;
	if (r->c >= 0)
		close(r->c);
	if (r->a >= 0)
		close(r->a);
	close(r->l);
	return false;
}

/* Wait for the peer's reset and its count; false (printed) without one. */
static bool rst_wait(struct rst_conn *r)
{
	char rep[64] = { 0 };

	ctl_reply(r->c, rep, sizeof(rep));
	if (sscanf(rep, "ACKED %llu", &r->acked) == 1 && r->acked)
		return true;
	out("peer=\"%s\"", rep);
	return false;
}

/* Read to the end; the end and the count against what the peer saw
 * acknowledged.  Closes everything. */
static void rst_read_close(struct rst_conn *r, const char *name)
{
	static char buf[1 << 16];
	size_t got = 0;
	ssize_t n;

	while ((n = read(r->a, buf, sizeof(buf))) > 0)
		got += n;
	out("read=%s", n < 0 ? ename(errno) : "eof");
	out("got=%s", got == r->acked ? "acked" : got < r->acked ? "less" : "more");
	if (got != r->acked)
		fprintf(stderr, "%s: read %zu bytes, the peer saw %llu acknowledged\n", name, got,
			r->acked);
	close(r->a);
	close(r->l);
}

static void case_rst_behind_data(void)
{
	struct rst_conn r;

	if (!rst_open(&r))
		return;
	if (rst_wait(&r))
		rst_read_close(&r, "rst_behind_data");
	else
		close(r.a), close(r.l);
}

/* A write after the reset and before the reads: Linux's write reports the
 * reset (and clears it), then read gives the bytes and EOF. */
static void case_write_rst_behind_data(void)
{
	struct sigaction sa = { .sa_handler = on_sigpipe }, old;
	struct rst_conn r;
	ssize_t n;

	if (!rst_open(&r))
		return;
	if (!rst_wait(&r)) {
		close(r.a), close(r.l);
		return;
	}
	sigaction(SIGPIPE, &sa, &old);
	sigpipes = 0;
	n = write(r.a, "x", 1);
	out("write=%s sig=%d", n < 0 ? ename(errno) : "ok", (int)sigpipes);
	sigaction(SIGPIPE, &old, NULL);
	rst_read_close(&r, "write_rst_behind_data");
}

/* An upload held back when the reset comes (the peer reads nothing) and a
 * writer that waits for POLLOUT: Linux wakes it at the reset (the write
 * then reports it); so must NetKernel, before the guest reads anything. */
static void case_upload_rst_behind_data(void)
{
	static char big[1 << 16];
	struct pollfd p;
	struct rst_conn r;
	size_t up = 0;
	ssize_t n;
	int fl;

	if (!rst_open(&r))
		return;
	fl = fcntl(r.a, F_GETFL);
	fcntl(r.a, F_SETFL, fl | O_NONBLOCK);
	memset(big, 'u', sizeof(big));
	while (up < (256u << 20) && (n = write(r.a, big, sizeof(big))) > 0)
		up += n;
	out("filled=%s", n < 0 && errno == EAGAIN ? "EAGAIN" : "no");
	if (!rst_wait(&r)) {
		close(r.a), close(r.l);
		return;
	}
	p = (struct pollfd){ .fd = r.a, .events = POLLOUT };
	out("pollout=%s", poll(&p, 1, 5000) == 1 && (p.revents & POLLOUT) ? "yes" : "no");
	n = send(r.a, "x", 1, MSG_NOSIGNAL);
	out("write=%s", n < 0 ? ename(errno) : "ok");
	fcntl(r.a, F_SETFL, fl);
	rst_read_close(&r, "upload_rst_behind_data");
}

/* A reset after the peer's FIN (in CLOSE_WAIT): Linux's read gives the
 * data and EOF, the reset shows on the next write (EPIPE). */
static void case_fin_then_rst(void)
{
	struct sigaction sa = { .sa_handler = on_sigpipe }, old;
	char buf[16] = { 0 };
	ssize_t n;
	int s = connect_to(&sa_peer, P_FINRST);

	if (rc("connect", s) < 0)
		return;
	usleep(500000);
	n = read(s, buf, sizeof(buf) - 1);
	out("read1=%s", n == 4 ? buf : n < 0 ? ename(errno) : "short");
	n = read(s, buf, sizeof(buf));
	out("read2=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
	sigaction(SIGPIPE, &sa, &old);
	sigpipes = 0;
	n = write(s, "x", 1);
	out("write=%s sig=%d", n < 0 ? ename(errno) : "ok", (int)sigpipes);
	n = write(s, "x", 1);
	out("write2=%s sig=%d", n < 0 ? ename(errno) : "ok", (int)sigpipes);
	sigaction(SIGPIPE, &old, NULL);
	n = read(s, buf, sizeof(buf));
	out("read3=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
	close(s);
}

static void case_fionread_peek(void)
{
	char buf[16] = { 0 };
	int s = connect_to(&sa_peer, P_FIN), n = -1;
	struct pollfd p = { .fd = s, .events = POLLIN };

	if (rc("connect", s) < 0)
		return;
	poll(&p, 1, 3000);
	usleep(100000);
	rc("fionread", ioctl(s, FIONREAD, &n));
	out("n=%d", n);
	out("peek=%zd", recv(s, buf, 5, MSG_PEEK));
	out("read=%zd", recv(s, buf, 5, 0));
	out("data=%s", buf);
	close(s);
}

/*
 * TCP's MSG_TRUNC: the bytes are taken without being copied (the buffer
 * may be NULL); with MSG_PEEK only counted.  recv() and recvmsg().
 */
static void case_recv_trunc(void)
{
	char buf[32] = { 0 };
	struct iovec v = { NULL, 3 };
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };
	int s = connect_to(&sa_peer, P_ECHO), n = 0, i;

	if (rc("connect", s) < 0)
		return;
	rc("write", write(s, "0123456789abcdef", 16));
	for (i = 0; i < 30 && n < 16; i++) {	/* all 16 back */
		usleep(100000);
		ioctl(s, FIONREAD, &n);
	}
	out("trunc=%zd", recv(s, NULL, 4, MSG_TRUNC));
	out("peek_trunc=%zd", recv(s, NULL, 5, MSG_TRUNC | MSG_PEEK));
	out("msg_trunc=%zd", recvmsg(s, &m, MSG_TRUNC));
	out("read=%zd", recv(s, buf, sizeof(buf) - 1, 0));
	out("data=%s", buf);
	close(s);
}

/* getsockname()/getpeername() with no buffer: length 0 asks only for the
 * length; a length with no buffer is EFAULT. */
static void case_names_len0(void)
{
	int s = connect_to(&sa_peer, P_ECHO);
	socklen_t l;

	if (rc("connect", s) < 0)
		return;
	l = 0;
	rc("sockname0", getsockname(s, NULL, &l));
	out("len=%s", l == SL(sa_self) ? "full" : "other");
	l = 0;
	rc("peername0", getpeername(s, NULL, &l));
	out("len=%s", l == SL(sa_peer) ? "full" : "other");
	l = 16;
	rc("sockname_null", getsockname(s, NULL, &l));
	close(s);
}

static void case_siocoutq(void)
{
	int s = connect_to(&sa_peer, P_ECHO), n = -1;
	char buf[4];

	if (rc("connect", s) < 0)
		return;
	write(s, "abc", 3);
	read_full(s, buf, 3, 3000);
	rc("outq", ioctl(s, SIOCOUTQ, &n));
	out("n=%d", n);
	close(s);
}

static void case_unconnected_ops(void)
{
	saddr sa;
	socklen_t l = sizeof(sa);
	char c;
	int s = tcp();

	rc("getpeername", getpeername(s, SA(sa), &l));
	rc("send", send(s, "x", 1, MSG_NOSIGNAL));
	rc("recv", recv(s, &c, 1, MSG_DONTWAIT));
	rc("shutdown", shutdown(s, SHUT_WR));
	sa = at(&sa_self, 0);
	bind(s, SA(sa), SL(sa));
	rc("send_bound", send(s, "x", 1, MSG_NOSIGNAL));
	rc("recv_bound", recv(s, &c, 1, MSG_DONTWAIT));
	rc("shutdown_bound", shutdown(s, SHUT_WR));
	l = sizeof(sa);
	rc("getpeername_bound", getpeername(s, SA(sa), &l));
	close(s);
}

static void case_listen_then_connect(void)
{
	saddr sa = at(&sa_peer, P_ECHO);
	int l = bind_listen(&sa_self, 0, 4);

	rc("connect", connect(l, SA(sa), SL(sa)));
	close(l);
}

static void case_loopback(void)
{
	saddr lo = special(fam, false), sa;
	char buf[4] = { 0 };
	int l = bind_listen(&lo, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	sa = at(&lo, local_port(l));
	c = tcp();
	rc("connect", connect(c, SA(sa), SL(sa)));
	a = accept(l, NULL, NULL);
	write(c, "lo!", 3);
	out("read=%s", read_full(a, buf, 3, 2000) == 3 ? "ok" : "bad");
	out("peer=%s", name_of(a, true));
	close(a);
	close(c);
	close(l);
}

static void case_unix_untouched(void)
{
	char buf[4] = { 0 };
	int sv[2];

	rc("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	write(sv[0], "ux", 2);
	out("read=%s", read(sv[1], buf, 2) == 2 && !strcmp(buf, "ux") ? "ok" : "bad");
	close(sv[0]);
	close(sv[1]);
}

static void case_fork(void)
{
	char buf[8] = { 0 };
	int s = connect_to(&sa_peer, P_ECHO), st;
	pid_t p;

	if (rc("connect", s) < 0)
		return;
	p = fork();
	if (p == 0) {
		saddr sa;
		socklen_t l = sizeof(sa);
		int ok = write(s, "fork", 4) == 4 && !getpeername(s, SA(sa), &l) &&
			 same_ip(&sa, &sa_peer);

		_exit(ok ? 0 : 1);
	}
	waitpid(p, &st, 0);
	out("child=%d", WEXITSTATUS(st));
	out("echo=%s", read_full(s, buf, 4, 3000) == 4 && !strcmp(buf, "fork") ? "ok" : "bad");
	close(s);
}

static void case_fork_connect_in_child(void)
{
	int st;
	pid_t p = fork();

	if (p == 0) {
		char buf[4] = { 0 };
		int s = connect_to(&sa_peer, P_ECHO);

		_exit(s >= 0 && write(s, "kid", 3) == 3 && read_full(s, buf, 3, 3000) == 3 ? 0 : 1);
	}
	waitpid(p, &st, 0);
	out("child=%d", WEXITSTATUS(st));
}

/*
 * The program closes a descriptor that is not its own (through NetKernel
 * the library's control channel to the NSM, an AF_UNIX socket the program
 * never opened; natively there is none) and a socketpair takes the number:
 * a posted option, a read-back and the data of a connection stay right,
 * and nothing of the library's reaches the socketpair.
 */
static void case_ctl_reuse(void)
{
	int s = connect_to(&sa_peer, P_ECHO), v = 0, fd, sv[16][2], dom, stray = 0, i, k;
	int closed[16], nclosed = 0, npairs = 0, landed = 0;
	socklen_t l = sizeof(v), dl;
	char buf[8] = { 0 };

	if (rc("connect", s) < 0)
		return;
	getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &l);	/* the channel is open */
	for (fd = 3; fd < 1024; fd++) {
		dl = sizeof(dom);
		if (fd != s && !getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) &&
		    dom == AF_UNIX && nclosed < 16) {
			close(fd);
			closed[nclosed++] = fd;
		}
	}
	/* socketpairs until one takes a closed number (natively: one) */
	do {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv[npairs]))
			break;
		for (i = 0; i < nclosed; i++)
			for (k = 0; k < 2; k++)
				landed |= sv[npairs][k] == closed[i];
		npairs++;
	} while (nclosed && !landed && npairs < 16);
	out("socketpair=%s", npairs ? "ok" : "fail");
	setint("nodelay", s, IPPROTO_TCP, TCP_NODELAY, 1);
	getint("nodelay", s, IPPROTO_TCP, TCP_NODELAY);
	rc("write", write(s, "reuse", 5));
	out("echo=%s", read_full(s, buf, 5, 3000) == 5 && !strcmp(buf, "reuse") ? "ok" : "bad");
	for (i = 0; i < npairs; i++)
		for (k = 0; k < 2; k++)
			if (recv(sv[i][k], buf, sizeof(buf), MSG_DONTWAIT) > 0)
				stray++;
	out("stray=%d", stray);
	for (i = 0; i < npairs; i++) {
		close(sv[i][0]);
		close(sv[i][1]);
	}
	close(s);
}

/*
 * A child made by a raw clone() (no fork handlers run in it) and its
 * parent read an option of a connection each, at the same time, many
 * times: each gets its own connection's value, never the other's (through
 * NetKernel each process asks the NSM on a channel of its own).
 */
static void case_clone_ctl(void)
{
	int a = connect_to(&sa_peer, P_ECHO), b = connect_to(&sa_peer, P_ECHO), st = 0, bad = 0;
	int va = 0, vb = 0, v, i;
	socklen_t l;
	pid_t p;

	if (rc("connect", a) < 0 || rc("connect2", b) < 0)
		return;
	v = 50000;
	setsockopt(a, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	v = 90000;
	setsockopt(b, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	l = sizeof(va);
	getsockopt(a, SOL_SOCKET, SO_RCVBUF, &va, &l);
	l = sizeof(vb);
	getsockopt(b, SOL_SOCKET, SO_RCVBUF, &vb, &l);
	p = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
	if (p == 0) {
		for (i = 0; i < 2000; i++) {
			l = sizeof(v);
			if (getsockopt(b, SOL_SOCKET, SO_RCVBUF, &v, &l) || v != vb)
				bad++;
		}
		_exit(bad ? 1 : 0);
	}
	if (rc("clone", p) < 0)
		return;
	for (i = 0; i < 2000; i++) {
		l = sizeof(v);
		if (getsockopt(a, SOL_SOCKET, SO_RCVBUF, &v, &l) || v != va)
			bad++;
	}
	waitpid(p, &st, 0);
	out("differ=%d child=%d parent_bad=%d", va != vb, WIFEXITED(st) ? WEXITSTATUS(st) : -1, bad);
	close(a);
	close(b);
}

static void case_dup2_over(void)
{
	char buf[8] = { 0 };
	int s = connect_to(&sa_peer, P_ECHO), t = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0 || t < 0)
		return;
	rc("dup2", dup2(s, t));
	rc("write", write(t, "dup", 3));
	out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !strcmp(buf, "dup") ? "ok" : "bad");
	close(s);
	rc("write_after_close", write(t, "two", 3));
	memset(buf, 0, sizeof(buf));
	out("echo2=%s", read_full(t, buf, 3, 3000) == 3 && !strcmp(buf, "two") ? "ok" : "bad");
	close(t);
}

/*
 * exec with a connected socket (TCP to the echo service, or UDP to the
 * UDP echo service): the child, a fresh image of this program, writes,
 * reads and names its peer, and prints one line.
 */
static void exec_case(int type, bool cloexec, bool use_vfork)
{
	char fdarg[16], famarg[4], buf[96] = { 0 };
	int s = socket(fam, type | (cloexec ? SOCK_CLOEXEC : 0), 0), pfd[2], st;
	saddr sa = at(&sa_peer, type == SOCK_DGRAM ? P_UECHO : P_ECHO);
	const char *peer = ntop(&sa_peer);
	pid_t p;

	if (rc("connect", connect(s, SA(sa), SL(sa))) < 0)
		return;
	if (pipe(pfd) < 0)
		return;
	snprintf(fdarg, sizeof(fdarg), "%d", s);
	snprintf(famarg, sizeof(famarg), "%d", fam == AF_INET ? 4 : 6);
	if (use_vfork) {
		/* The vfork child shares our memory: nothing but the raw
		 * dup3 system call and exec. */
		p = vfork();
		if (p == 0) {
			syscall(SYS_dup3, pfd[1], 1, 0);
			execl(self_exe, self_exe, "exec-child", fdarg, famarg, peer, (char *)NULL);
			_exit(127);
		}
	} else {
		p = fork();
		if (p == 0) {
			dup2(pfd[1], 1);
			execl(self_exe, self_exe, "exec-child", fdarg, famarg, peer, (char *)NULL);
			_exit(127);
		}
	}
	close(pfd[1]);
	read_full(pfd[0], buf, sizeof(buf) - 1, 5000);
	close(pfd[0]);
	waitpid(p, &st, 0);
	buf[strcspn(buf, "\n")] = '\0';
	out("child=\"%s\"", buf);
	close(s);
}

static void case_exec_inherit(void)
{
	exec_case(SOCK_STREAM, false, false);
}

static void case_exec_cloexec(void)
{
	exec_case(SOCK_STREAM, true, false);
}

static void case_exec_vfork(void)
{
	exec_case(SOCK_STREAM, false, true);
}

/* The program popen_listener starts: accept one connection on fd. */
static int exec_accept(int fd)
{
	char buf[8] = { 0 };
	int a, acc = -1;
	socklen_t l = sizeof(acc);
	struct pollfd pf = { .fd = fd, .events = POLLIN };

	getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l);
	printf("acceptconn=%d name=%s ", acc, name_of(fd, false));
	fflush(stdout);
	if (poll(&pf, 1, 5000) <= 0) {
		printf("poll=timeout\n");
		return 0;
	}
	set_nonblock(fd);
	a = accept(fd, NULL, NULL);
	if (a < 0) {
		printf("accept=%s\n", ename(errno));
		return 0;
	}
	read_full(a, buf, 4, 2000);
	if (write(a, "pong", 4) != 4)
		printf("write=%s ", ename(errno));
	printf("accept=ok peer=%s read=%s\n", name_of(a, true), buf);
	close(a);
	return 0;
}

static int exec_child(int fd)
{
	saddr sa;
	socklen_t l = sizeof(sa);
	char buf[8] = { 0 };
	int type = 0;

	if (fcntl(fd, F_GETFD) < 0) {
		printf("closed\n");
		return 0;
	}
	l = sizeof(type);
	getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l);
	if (write(fd, "exe", 3) != 3 || read_full(fd, buf, 3, 3000) != 3) {
		printf("io-failed\n");
		return 0;
	}
	l = sizeof(sa);
	if (getpeername(fd, SA(sa), &l) < 0) {
		printf("open io=ok peername=%s\n", ename(errno));
		return 0;
	}
	printf("open type=%s io=ok peername=%s\n", type == SOCK_DGRAM ? "dgram" : "stream",
	       aname(&sa, l));
	return 0;
}

static void case_select_high_fd(void)
{
	struct rlimit rl;
	struct timeval tv = { 3, 0 };
	long *set;
	int s = connect_to(&sa_peer, P_ECHO), hi = 1500, r;
	char buf[4];

	if (rc("connect", s) < 0)
		return;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < 2048) {
		rl.rlim_cur = rl.rlim_max < 2048 ? rl.rlim_max : 2048;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rc("dup2", dup2(s, hi)) < 0) {
		close(s);
		return;
	}
	close(s);
	set = calloc(2048 / (8 * sizeof(long)), sizeof(long));
	write(hi, "hi", 2);
	set[hi / (8 * sizeof(long))] |= 1L << (hi % (8 * sizeof(long)));
	r = select(hi + 1, (fd_set *)set, NULL, NULL, &tv);
	out("select=%d set=%d", r, !!(set[hi / (8 * sizeof(long))] & (1L << (hi % (8 * sizeof(long))))));
	out("read=%zd", read(hi, buf, 2));
	free(set);
	close(hi);
}

static void case_bulk(void)
{
	static char big[65536];
	size_t total = 8u << 20, sent = 0;
	char buf[32] = { 0 };
	int s = connect_to(&sa_peer, P_COUNT);
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	memset(big, 'b', sizeof(big));
	while (sent < total) {
		n = write(s, big, sizeof(big));
		if (n <= 0)
			break;
		sent += n;
	}
	shutdown(s, SHUT_WR);
	read_full(s, buf, sizeof(buf) - 1, 10000);
	out("count=%s", buf);
	close(s);
}

static void case_shutdown_rd(void)
{
	char buf[8];
	int s = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("shutdown", shutdown(s, SHUT_RD));
	out("read=%zd", read(s, buf, sizeof(buf)));
	rc("write", send(s, "x", 1, MSG_NOSIGNAL));
	close(s);
}

static void case_shutdown_bad(void)
{
	int s = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("shutdown", shutdown(s, 7));
	close(s);
}

static void case_accept_not_listening(void)
{
	saddr sa = at(&sa_self, 0);
	int s = tcp();

	bind(s, SA(sa), SL(sa));
	rc("accept", accept(s, NULL, NULL));
	close(s);
}

static void case_recv_dontwait(void)
{
	char c;
	int s = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("recv", recv(s, &c, 1, MSG_DONTWAIT));
	close(s);
}

static void case_readv_writev(void)
{
	char a[3] = "rea", b[3] = "dvv", r1[3], r2[3];
	struct iovec w[2] = { { a, 3 }, { b, 3 } }, r[2] = { { r1, 3 }, { r2, 3 } };
	int s = connect_to(&sa_peer, P_ECHO);
	struct pollfd p = { .fd = s, .events = POLLIN };

	if (rc("connect", s) < 0)
		return;
	out("writev=%zd", writev(s, w, 2));
	poll(&p, 1, 3000);
	usleep(50000);
	out("readv=%zd", readv(s, r, 2));
	out("data=%s", !memcmp(r1, "rea", 3) && !memcmp(r2, "dvv", 3) ? "ok" : "bad");
	close(s);
}

static void case_sendmsg_recvmsg(void)
{
	char d[4] = "msg!", buf[8] = { 0 };
	struct iovec iv = { d, 4 }, riv = { buf, 4 };
	struct msghdr m = { .msg_iov = &iv, .msg_iovlen = 1 };
	struct msghdr rm = { .msg_iov = &riv, .msg_iovlen = 1 };
	saddr from;
	socklen_t fl = sizeof(from);
	int s = connect_to(&sa_peer, P_ECHO);
	struct pollfd p = { .fd = s, .events = POLLIN };
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	out("sendmsg=%zd", sendmsg(s, &m, 0));
	poll(&p, 1, 3000);
	rm.msg_name = &from;
	rm.msg_namelen = sizeof(from);
	n = recvmsg(s, &rm, MSG_WAITALL);
	out("recvmsg=%zd namelen=%u", n, rm.msg_namelen);
	out("data=%s", buf);
	write(s, "rf", 2);
	poll(&p, 1, 3000);
	usleep(50000);
	n = recvfrom(s, buf, 2, 0, SA(from), &fl);
	out("recvfrom=%zd addrlen=%u", n, fl);
	close(s);
}

static void case_hold_many(void)
{
	char buf[64] = { 0 };
	int l = bind_listen(&sa_self, 0, 64), c, i, got = 0, a[16];

	c = peer_ctl_async("HOLD %s %d 16\n", ntop(&sa_self), local_port(l));
	for (i = 0; i < 16; i++) {
		a[i] = accept(l, NULL, NULL);
		if (a[i] >= 0)
			got++;
	}
	out("accepted=%d", got);
	if (c >= 0) {
		read_full(c, buf, 5, 5000);
		buf[strcspn(buf, "\n")] = '\0';
		out("peer=\"%s\"", buf);
		close(c);
	}
	for (i = 0; i < 16; i++)
		if (a[i] >= 0)
			close(a[i]);
	close(l);
}

/* ======================================================================
 * UDP cases (both families unless the table says otherwise)
 * ====================================================================== */

/* Wait up to ms for POLLIN (1) or not (0). */
static int wait_in(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) > 0;
}

/* "TAG=N from=NAME:PORT" for one received datagram, or "TAG=ERRNO". */
static void udp_got(const char *tag, ssize_t n, const saddr *from, socklen_t fl)
{
	if (n < 0)
		out("%s=%s", tag, ename(errno));
	else
		out("%s=%zd from=%s:%s", tag, n, aname(from, fl), pname(port_of(from)));
}

/* Receive one datagram (waiting up to tmo ms) and record it as udp_got. */
static ssize_t got_from(const char *tag, int s, void *buf, size_t len, int tmo)
{
	saddr from;
	socklen_t fl = sizeof(from);
	ssize_t n;

	memset(&from, 0, sizeof(from));
	n = recv_wait(s, buf, len, 0, &from, &fl, tmo);
	udp_got(tag, n, &from, fl);
	return n;
}

static void case_udp_sendto_echo(void)
{
	saddr dst = at(&sa_peer, P_UECHO), from;
	socklen_t fl = sizeof(from);
	char buf[64] = { 0 };
	int s = udp();
	ssize_t n;

	out("before=%s", name_of(s, false));
	rn("sendto", sendto(s, "abc", 3, 0, SA(dst), SL(dst)));
	out("after=%s", name_of(s, false));
	n = recv_wait(s, buf, sizeof(buf), 0, &from, &fl, 3000);
	udp_got("recv", n, &from, fl);
	out("data=%s", n == 3 && !memcmp(buf, "abc", 3) ? "ok" : "bad");
	out("peer=%s", name_of(s, true));
	close(s);
}

static void case_udp_connected_echo(void)
{
	saddr from;
	socklen_t fl = sizeof(from);
	char buf[64] = { 0 };
	int s = udp_to(&sa_peer, P_UECHO);
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	out("local=%s peer=%s port=%s", name_of(s, false), name_of(s, true), pname(remote_port(s)));
	rn("send", send(s, "hello", 5, 0));
	n = recv_wait(s, buf, sizeof(buf), 0, &from, &fl, 3000);
	udp_got("recv", n, &from, fl);
	out("data=%s", n == 5 && !memcmp(buf, "hello", 5) ? "ok" : "bad");
	rn("write", write(s, "wr", 2));
	wait_in(s, 3000);
	rn("read", read(s, buf, sizeof(buf)));
	close(s);
}

static void case_udp_boundaries(void)
{
	static char buf[65536];
	static const ssize_t want[] = { 1, 1000, 60000 };
	int s = udp_to(&sa_peer, P_UGEN), k;
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	rn("send", send(s, "1,1000,60000", 12, 0));
	for (k = 0; k < 3; k++) {
		n = recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000);
		if (n < 0)
			out("d%d=%s", k, ename(errno));
		else
			out("d%d=%zd%s", k, n, gen_ok(buf, n, want[k], k) ? "" : "(bad)");
	}
	rn("more", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	close(s);
}

static void case_udp_peek(void)
{
	char buf[64] = { 0 };
	int s = udp_to(&sa_peer, P_UGEN);
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	send(s, "5,7", 3, 0);
	n = recv_wait(s, buf, sizeof(buf), MSG_PEEK, NULL, NULL, 3000);
	out("peek=%zd%s", n, gen_ok(buf, n, 5, 0) ? "" : "(bad)");
	n = recv(s, buf, 2, MSG_PEEK);
	out("peek_short=%zd", n);
	n = recv(s, buf, sizeof(buf), 0);
	out("read1=%zd%s", n, gen_ok(buf, n, 5, 0) ? "" : "(bad)");
	n = recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000);
	out("read2=%zd%s", n, gen_ok(buf, n, 7, 1) ? "" : "(bad)");
	close(s);
}

static void case_udp_trunc(void)
{
	char buf[256];
	struct iovec iv = { buf, 10 };
	struct msghdr m = { .msg_iov = &iv, .msg_iovlen = 1 };
	int s = udp_to(&sa_peer, P_UGEN);
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	send(s, "100,100,100,100", 15, 0);
	wait_in(s, 3000);
	n = recvmsg(s, &m, 0);
	out("plain=%zd flags=%s", n, m.msg_flags & MSG_TRUNC ? "trunc" : "0");
	wait_in(s, 3000);
	m.msg_flags = 0;
	n = recvmsg(s, &m, MSG_TRUNC);
	out("with_trunc=%zd flags=%s", n, m.msg_flags & MSG_TRUNC ? "trunc" : "0");
	wait_in(s, 3000);
	out("peek_trunc=%zd", recv(s, buf, 10, MSG_PEEK | MSG_TRUNC));
	iv.iov_len = sizeof(buf);
	m.msg_flags = 0;
	n = recvmsg(s, &m, 0);
	out("full=%zd flags=%s", n, m.msg_flags & MSG_TRUNC ? "trunc" : "0");
	wait_in(s, 3000);
	out("recv_trunc=%zd", recv(s, buf, 10, MSG_TRUNC));
	rn("more", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	close(s);
}

static void case_udp_dontwait(void)
{
	saddr sa = at(&sa_self, 0);
	char c;
	int s = udp();

	rn("fresh", recv(s, &c, 1, MSG_DONTWAIT));
	bind(s, SA(sa), SL(sa));
	rn("bound", recv(s, &c, 1, MSG_DONTWAIT));
	close(s);
	s = udp_to(&sa_peer, P_UECHO);
	rn("connected", recvfrom(s, &c, 1, MSG_DONTWAIT, NULL, NULL));
	set_nonblock(s);
	rn("nonblock_read", read(s, &c, 1));
	rn("nonblock_recvmsg", recvmsg(s, &(struct msghdr){ .msg_iov = &(struct iovec){ &c, 1 },
							  .msg_iovlen = 1 }, 0));
	close(s);
}

static void case_udp_fionread(void)
{
	char buf[2048];
	int s = udp(), n = -1;

	rc("fresh", ioctl(s, FIONREAD, &n));
	out("n=%d", n);
	close(s);
	s = udp_to(&sa_peer, P_UGEN);
	send(s, "1,1000", 6, 0);
	wait_in(s, 3000);
	usleep(100000);
	n = -1;
	ioctl(s, FIONREAD, &n);
	out("first=%d", n);
	recv(s, buf, sizeof(buf), 0);
	n = -1;
	ioctl(s, FIONREAD, &n);
	out("second=%d", n);
	recv(s, buf, sizeof(buf), 0);
	n = -1;
	ioctl(s, FIONREAD, &n);
	out("empty=%d", n);
	close(s);
}

static void case_udp_msg_names(void)
{
	saddr dst = at(&sa_peer, P_UECHO), from;
	struct iovec iv[2] = { { "ab", 2 }, { "cd", 2 } };
	struct msghdr m = { .msg_name = &dst, .msg_namelen = SL(dst), .msg_iov = iv, .msg_iovlen = 2 };
	char buf[16] = { 0 }, tiny[4];
	struct iovec riv = { buf, sizeof(buf) };
	struct msghdr rm = { .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &riv,
			     .msg_iovlen = 1 };
	socklen_t tl = sizeof(tiny);
	int s = udp();
	ssize_t n;

	rn("sendmsg", sendmsg(s, &m, 0));
	wait_in(s, 3000);
	memset(&from, 0, sizeof(from));
	n = recvmsg(s, &rm, 0);
	out("recvmsg=%zd name=%s:%s flags=%d data=%s", n, aname(&from, rm.msg_namelen),
	    pname(port_of(&from)), rm.msg_flags, buf);
	sendto(s, "ef", 2, 0, SA(dst), SL(dst));
	wait_in(s, 3000);
	rm.msg_name = NULL;
	rm.msg_namelen = 77;
	n = recvmsg(s, &rm, 0);
	out("noname=%zd namelen=%u", n, rm.msg_namelen);
	sendto(s, "gh", 2, 0, SA(dst), SL(dst));
	wait_in(s, 3000);
	n = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)tiny, &tl);
	out("short=%zd addrlen=%s", n, tl == SL(sa_peer) ? "full" : "other");
	close(s);
}

/* Receive up to want datagrams with recvmmsg within 3 s; sizes and names. */
static void mmsg_collect(int s, int want, int flags)
{
	struct mmsghdr mm[8];
	struct iovec iv[8];
	char bufs[8][32], sizes[64] = "", names[128] = "";
	saddr from[8];
	int got = 0, r, i, calls = 0;
	int64_t t0 = now_ms();

	while (got < want && now_ms() - t0 < 3000) {
		memset(mm, 0, sizeof(mm));
		for (i = 0; i < 8; i++) {
			// cppcheck-suppress legacyUninitvar
			iv[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
			mm[i].msg_hdr.msg_iov = &iv[i];
			mm[i].msg_hdr.msg_iovlen = 1;
			mm[i].msg_hdr.msg_name = &from[i];
			mm[i].msg_hdr.msg_namelen = sizeof(from[i]);
		}
		if (!wait_in(s, 3000))
			break;
		r = recvmmsg(s, mm, want - got, flags, NULL);
		calls++;
		if (r < 0) {
			out("recvmmsg=%s", ename(errno));
			return;
		}
		for (i = 0; i < r; i++) {
			snprintf(sizes + strlen(sizes), sizeof(sizes) - strlen(sizes), "%s%u",
				 got + i ? "," : "", mm[i].msg_len);
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
				 got + i ? "," : "", aname(&from[i], mm[i].msg_hdr.msg_namelen));
		}
		got += r;
	}
	out("received=%d sizes=%s names=%s", got, sizes, names);
}

static void case_udp_sendmmsg(void)
{
	saddr dst = at(&sa_peer, P_UECHO);
	static const char *d[3] = { "m1", "m22", "m333" };
	struct mmsghdr mm[3];
	struct iovec iv[3];
	int s = udp(), i, n;

	memset(mm, 0, sizeof(mm));
	for (i = 0; i < 3; i++) {
		iv[i] = (struct iovec){ (void *)d[i], strlen(d[i]) };
		mm[i].msg_hdr.msg_name = &dst;
		mm[i].msg_hdr.msg_namelen = SL(dst);
		mm[i].msg_hdr.msg_iov = &iv[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	n = sendmmsg(s, mm, 3, 0);
	if (n < 0)
		out("sendmmsg=%s", ename(errno));
	else
		out("sendmmsg=%d lens=%u,%u,%u", n, mm[0].msg_len, mm[1].msg_len, mm[2].msg_len);
	mmsg_collect(s, 3, MSG_DONTWAIT);
	close(s);
}

/* As glibc's resolver: two queries with one sendmmsg on a connected socket. */
static void case_udp_mmsg_connected(void)
{
	struct mmsghdr mm[2], rm[4];
	struct iovec iv[2] = { { "query-a", 7 }, { "query-aaaa", 10 } }, riv[4];
	struct timespec to = { 2, 0 };
	char bufs[4][32], c;
	saddr from[4];
	int s = udp_to(&sa_peer, P_UECHO), n, i;

	if (rc("connect", s) < 0)
		return;
	memset(mm, 0, sizeof(mm));
	for (i = 0; i < 2; i++) {
		mm[i].msg_hdr.msg_iov = &iv[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	n = sendmmsg(s, mm, 2, MSG_NOSIGNAL);
	if (n < 0)
		out("sendmmsg=%s", ename(errno));
	else
		out("sendmmsg=%d lens=%u,%u", n, mm[0].msg_len, mm[1].msg_len);
	wait_in(s, 3000);
	usleep(200000);
	memset(rm, 0, sizeof(rm));
	for (i = 0; i < 4; i++) {
		riv[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
		rm[i].msg_hdr.msg_iov = &riv[i];
		rm[i].msg_hdr.msg_iovlen = 1;
		rm[i].msg_hdr.msg_name = &from[i];
		rm[i].msg_hdr.msg_namelen = sizeof(from[i]);
	}
	n = recvmmsg(s, rm, 4, MSG_WAITFORONE, &to);
	if (n < 0)
		out("recvmmsg=%s", ename(errno));
	else
		out("recvmmsg=%d sizes=%u,%u from=%s", n, n > 0 ? rm[0].msg_len : 0,
		    n > 1 ? rm[1].msg_len : 0, n > 0 ? aname(&from[0], rm[0].msg_hdr.msg_namelen) : "-");
	rn("more", recv(s, &c, 1, MSG_DONTWAIT));
	close(s);
}

static void case_udp_refused(void)
{
	char buf[16];
	int s = udp_to(&sa_peer, P_UCLOSED);

	if (rc("connect", s) < 0)
		return;
	rn("send", send(s, "x", 1, 0));
	set_rcvtimeo(s, 2000);
	rn("recv", recv(s, buf, sizeof(buf), 0));
	rn("recv2", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	rn("send2", send(s, "y", 1, 0));
	close(s);
}

static void case_udp_refused_poll(void)
{
	char buf[16];
	struct pollfd p;
	int s = udp_to(&sa_peer, P_UCLOSED), r;

	if (rc("connect", s) < 0)
		return;
	send(s, "x", 1, 0);
	p = (struct pollfd){ .fd = s, .events = POLLIN };
	r = poll(&p, 1, 2000);
	out("poll=%d in=%d err=%d", r, !!(p.revents & POLLIN), !!(p.revents & POLLERR));
	out("so_error=%s", ename(sock_error(s)));
	out("so_error2=%s", ename(sock_error(s)));
	rn("recv", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	close(s);
}

static void case_udp_refused_send(void)
{
	char buf[16];
	int s = udp_to(&sa_peer, P_UCLOSED);

	if (rc("connect", s) < 0)
		return;
	rn("send1", send(s, "x", 1, 0));
	usleep(300000);
	/* Linux reports the pending error on the next send, and clears it. */
	rn("send2", send(s, "x", 1, 0));
	rn("send3", send(s, "x", 1, 0));
	usleep(300000);
	rn("recv", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	close(s);
}

static void case_udp_unconnected_closed(void)
{
	saddr cl = at(&sa_peer, P_UCLOSED), dst = at(&sa_peer, P_UECHO);
	char buf[16];
	int s = udp();

	rn("sendto", sendto(s, "x", 1, 0, SA(cl), SL(cl)));
	usleep(200000);
	rn("sendto2", sendto(s, "x", 1, 0, SA(cl), SL(cl)));
	rn("recv", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	rn("echo", sendto(s, "e", 1, 0, SA(dst), SL(dst)));
	got_from("recv2", s, buf, sizeof(buf), 3000);
	out("so_error=%s", ename(sock_error(s)));
	close(s);
}

static void case_udp_disconnect(void)
{
	saddr un, dst = at(&sa_peer, P_UECHO);
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO);

	if (rc("connect", s) < 0)
		return;
	out("peer=%s", name_of(s, true));
	memset(&un, 0, sizeof(un));
	un.ss_family = AF_UNSPEC;
	rc("unspec", connect(s, SA(un), sizeof(un)));
	out("peer2=%s local2=%s", name_of(s, true), name_of(s, false));
	rn("send", send(s, "x", 1, 0));
	rn("sendto", sendto(s, "y", 1, 0, SA(dst), SL(dst)));
	got_from("recv", s, buf, sizeof(buf), 3000);
	rc("unspec_again", connect(s, SA(un), sizeof(un)));
	close(s);
}

static void case_udp_implicit_bind(void)
{
	saddr dst = at(&sa_peer, P_UECHO);
	char buf[16];
	int s = udp(), p1;

	out("fresh=%s", name_of(s, false));
	sendto(s, "i", 1, 0, SA(dst), SL(dst));
	out("sent=%s", name_of(s, false));
	p1 = local_port(s);
	got_from("recv", s, buf, sizeof(buf), 3000);
	rc("connect", connect(s, SA(dst), SL(dst)));
	out("connected=%s port=%s", name_of(s, false), local_port(s) == p1 ? "same" : "diff");
	close(s);
}

static void case_udp_bind_port0(void)
{
	saddr sa = at(&sa_self, 0), dst = at(&sa_peer, P_UECHO);
	char buf[16];
	int s = udp();

	rc("bind", bind(s, SA(sa), SL(sa)));
	out("name=%s", name_of(s, false));
	sendto(s, "b", 1, 0, SA(dst), SL(dst));
	got_from("recv", s, buf, sizeof(buf), 3000);
	close(s);
}

static void case_udp_bind_any(void)
{
	saddr sa = wild(0), dst = at(&sa_peer, P_UECHO);
	char buf[16];
	int s = udp();

	rc("bind", bind(s, SA(sa), SL(sa)));
	out("name=%s", name_of(s, false));
	sendto(s, "b", 1, 0, SA(dst), SL(dst));
	got_from("recv", s, buf, sizeof(buf), 3000);
	out("name2=%s", name_of(s, false));
	close(s);
}

static void case_udp_bind_inuse(void)
{
	saddr sa = at(&sa_self, 0);
	int s1 = udp(), s2 = udp(), s3 = udp(), s4 = udp(), s5 = udp(), one = 1, port;

	rc("bind1", bind(s1, SA(sa), SL(sa)));
	port = local_port(s1);
	sa = at(&sa_self, port);
	rc("same", bind(s2, SA(sa), SL(sa)));
	sa = wild(port);
	rc("any", bind(s3, SA(sa), SL(sa)));
	setsockopt(s4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(s5, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa = at(&sa_self, 0);
	rc("reuse1", bind(s4, SA(sa), SL(sa)));
	sa = at(&sa_self, local_port(s4));
	rc("reuse2", bind(s5, SA(sa), SL(sa)));
	close(s1);
	close(s2);
	close(s3);
	close(s4);
	close(s5);
	s1 = udp();
	s2 = udp();
	setsockopt(s1, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(s2, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	sa = at(&sa_self, 0);
	rc("reuseport1", bind(s1, SA(sa), SL(sa)));
	sa = at(&sa_self, local_port(s1));
	rc("reuseport2", bind(s2, SA(sa), SL(sa)));
	close(s1);
	close(s2);
}

static void case_udp_bind_notavail(void)
{
	saddr sa = at(&sa_other, 0);
	int s = udp();

	rc("other", bind(s, SA(sa), SL(sa)));
	sa = at(&sa_bh, 0);
	rc("blackhole", bind(s, SA(sa), SL(sa)));
	sa = at(&sa_peer, 0);
	rc("peer", bind(s, SA(sa), SL(sa)));
	close(s);
}

static void case_udp_bind_twice(void)
{
	saddr sa = at(&sa_self, 0);
	int s = udp();

	rc("bind1", bind(s, SA(sa), SL(sa)));
	rc("bind2", bind(s, SA(sa), SL(sa)));
	close(s);
}

/* A bound socket receives datagrams the peer sends on its own. */
static void udp_server(const saddr *bind_to, const saddr *target, int n, int size, int timeout)
{
	char reply[64], buf[2048], sizes[64] = "";
	saddr from;
	socklen_t fl;
	int s = udp(), i, got = 0;
	ssize_t r;
	const char *fromname = "-";

	rc("bind", bind(s, (const struct sockaddr *)bind_to, slen_of(bind_to)));
	peer_ctl(reply, sizeof(reply), "UDPSEND %s %d %d %d\n", ntop(target), local_port(s), n,
		 size);
	out("peer=\"%s\"", reply);
	for (i = 0; i < n; i++) {
		fl = sizeof(from);
		r = recv_wait(s, buf, sizeof(buf), 0, &from, &fl, timeout);
		if (r < 0)
			break;
		got++;
		snprintf(sizes + strlen(sizes), sizeof(sizes) - strlen(sizes), "%s%zd",
			 i ? "," : "", r);
		fromname = aname(&from, fl);
		if (port_of(&from) != P_UECHO)
			fromname = "bad-port";
	}
	out("got=%d sizes=%s from=%s", got, sizes, fromname);
	out("name=%s", name_of(s, false));
	close(s);
}

static void case_udp_server(void)
{
	saddr sa = at(&sa_self, 0);

	udp_server(&sa, &sa_self, 3, 100, 2000);
}

static void case_udp_server_any(void)
{
	saddr sa = wild(0);

	udp_server(&sa, &sa_self, 2, 1200, 2000);
}

/*
 * Without SO_BROADCAST, a datagram to the limited broadcast address or to
 * the subnet's broadcast address (the tests use /24 subnets) is refused
 * with EACCES (both have a route: the test gives the guest a default route).
 */
static void case_udp_broadcast(void)
{
	uint32_t all = htonl(INADDR_BROADCAST);
	unsigned char ip[16];
	saddr lim = make_sa(AF_INET, &all), net;
	int s = udp();

	lim = at(&lim, P_UECHO);
	ip_of(&sa_self, ip);
	ip[3] = 255;
	net = make_sa(AF_INET, ip);
	net = at(&net, P_UECHO);
	getint("broadcast", s, SOL_SOCKET, SO_BROADCAST);
	rn("limited", sendto(s, "b", 1, 0, SA(lim), SL(lim)));
	rn("directed", sendto(s, "b", 1, 0, SA(net), SL(net)));
	setint("broadcast", s, SOL_SOCKET, SO_BROADCAST, 1);
	getint("broadcast2", s, SOL_SOCKET, SO_BROADCAST);
	rn("directed2", sendto(s, "b", 1, 0, SA(net), SL(net)));
	close(s);
}

static void case_udp_zero_len(void)
{
	saddr dst = at(&sa_peer, P_UECHO);
	char buf[16];
	int s = udp();

	rn("sendto0", sendto(s, "", 0, 0, SA(dst), SL(dst)));
	got_from("recv0", s, buf, sizeof(buf), 3000);
	close(s);
	s = udp_to(&sa_peer, P_UECHO);
	rn("send0", send(s, "", 0, 0));
	rn("recv0c", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000));
	rn("send1", send(s, "z", 1, 0));
	rn("recv1", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000));
	close(s);
}

static void case_udp_poll(void)
{
	struct pollfd p;
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO), r;

	if (rc("connect", s) < 0)
		return;
	p = (struct pollfd){ .fd = s, .events = POLLIN | POLLOUT };
	r = poll(&p, 1, 100);
	out("idle=%d in=%d out=%d", r, !!(p.revents & POLLIN), !!(p.revents & POLLOUT));
	send(s, "p", 1, 0);
	p = (struct pollfd){ .fd = s, .events = POLLIN };
	r = poll(&p, 1, 3000);
	out("ready=%d in=%d", r, !!(p.revents & POLLIN));
	r = poll(&p, 1, 0);
	out("still=%d", r);
	recv(s, buf, sizeof(buf), 0);
	r = poll(&p, 1, 100);
	out("after=%d", r);
	close(s);
}

static void case_udp_epoll(void)
{
	struct epoll_event ev = { .events = EPOLLIN }, evs[2];
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO), ep = epoll_create1(0), ep2 = epoll_create1(0);

	if (rc("connect", s) < 0)
		return;
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	out("idle=%d", epoll_wait(ep, evs, 2, 100));
	send(s, "1", 1, 0);
	send(s, "2", 1, 0);
	out("ready=%d", epoll_wait(ep, evs, 2, 3000));
	usleep(100000);
	rn("recv1", recv(s, buf, sizeof(buf), 0));
	out("still=%d", epoll_wait(ep, evs, 2, 100));
	rn("recv2", recv(s, buf, sizeof(buf), 0));
	out("after=%d", epoll_wait(ep, evs, 2, 100));
	/* edge-triggered: one edge per arrival */
	set_nonblock(s);
	ev.events = EPOLLIN | EPOLLET;
	epoll_ctl(ep2, EPOLL_CTL_ADD, s, &ev);
	send(s, "3", 1, 0);
	out("et=%d", epoll_wait(ep2, evs, 2, 3000));
	out("et_again=%d", epoll_wait(ep2, evs, 2, 100));
	rn("recv3", recv(s, buf, sizeof(buf), 0));
	rn("recv4", recv(s, buf, sizeof(buf), 0));
	close(ep2);
	close(ep);
	close(s);
}

static void case_udp_select(void)
{
	struct timeval tv = { 0, 100000 };
	char buf[16];
	fd_set r;
	int s = udp_to(&sa_peer, P_UECHO), n;

	if (rc("connect", s) < 0)
		return;
	FD_ZERO(&r);
	FD_SET(s, &r);
	out("idle=%d", select(s + 1, &r, NULL, NULL, &tv));
	send(s, "s", 1, 0);
	FD_ZERO(&r);
	FD_SET(s, &r);
	tv = (struct timeval){ 3, 0 };
	n = select(s + 1, &r, NULL, NULL, &tv);
	out("ready=%d set=%d", n, FD_ISSET(s, &r));
	rn("recv", recv(s, buf, sizeof(buf), 0));
	close(s);
}

static void case_udp_rcvtimeo(void)
{
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO);
	int64_t t0, dt;

	if (rc("connect", s) < 0)
		return;
	set_rcvtimeo(s, 200);
	t0 = now_ms();
	rn("recv", recv(s, buf, sizeof(buf), 0));
	dt = now_ms() - t0;
	out("timed=%s", dt >= 150 && dt < 1500 ? "yes" : "no");
	close(s);
}

static void case_udp_send_noaddr(void)
{
	saddr sa = at(&sa_self, 0);
	int s = udp();

	rn("send", send(s, "x", 1, 0));
	rn("write", write(s, "x", 1));
	bind(s, SA(sa), SL(sa));
	rn("send_bound", send(s, "x", 1, 0));
	rn("write_bound", write(s, "x", 1));
	close(s);
}

static void case_udp_reconnect(void)
{
	saddr g = at(&sa_peer, P_UGEN);
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO), p1;

	if (rc("connect", s) < 0)
		return;
	p1 = local_port(s);
	rc("reconnect", connect(s, SA(g), SL(g)));
	out("peer=%s:%s port=%s", name_of(s, true), pname(remote_port(s)),
	    local_port(s) == p1 ? "same" : "diff");
	send(s, "2", 1, 0);
	got_from("recv", s, buf, sizeof(buf), 3000);
	close(s);
}

static void case_udp_connected_filter(void)
{
	saddr g = at(&sa_peer, P_UGEN);
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO);

	if (rc("connect", s) < 0)
		return;
	/* An explicit destination on a connected socket is allowed; the
	 * answer comes from another port and is filtered out. */
	rn("sendto_other", sendto(s, "3", 1, 0, SA(g), SL(g)));
	got_from("recv_other", s, buf, sizeof(buf), 500);
	send(s, "e", 1, 0);
	got_from("recv", s, buf, sizeof(buf), 3000);
	close(s);
}

static void case_udp_opts(void)
{
	int s = udp_to(&sa_peer, P_UECHO);

	if (rc("connect", s) < 0)
		return;
	getint("type", s, SOL_SOCKET, SO_TYPE);
	getint("protocol", s, SOL_SOCKET, SO_PROTOCOL);
	getint("domain", s, SOL_SOCKET, SO_DOMAIN);
	setint("rcvbuf", s, SOL_SOCKET, SO_RCVBUF, 65536);
	getint("rcvbuf", s, SOL_SOCKET, SO_RCVBUF);
	setint("sndbuf", s, SOL_SOCKET, SO_SNDBUF, 65536);
	getint("sndbuf", s, SOL_SOCKET, SO_SNDBUF);
	setint("reuseaddr", s, SOL_SOCKET, SO_REUSEADDR, 1);
	getint("reuseaddr", s, SOL_SOCKET, SO_REUSEADDR);
	getint("broadcast", s, SOL_SOCKET, SO_BROADCAST);
	setint("priority", s, SOL_SOCKET, SO_PRIORITY, 3);
	getint("priority", s, SOL_SOCKET, SO_PRIORITY);
	tos_opt(s, 0x20);
	if (fam == AF_INET) {
		setint("ttl", s, IPPROTO_IP, IP_TTL, 33);
		getint("ttl", s, IPPROTO_IP, IP_TTL);
		setint("pmtudisc", s, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO);
		getint("pmtudisc", s, IPPROTO_IP, IP_MTU_DISCOVER);
		setint("mcast_ttl", s, IPPROTO_IP, IP_MULTICAST_TTL, 5);
		getint("mcast_ttl", s, IPPROTO_IP, IP_MULTICAST_TTL);
		setint("mcast_loop", s, IPPROTO_IP, IP_MULTICAST_LOOP, 0);
		getint("mcast_loop", s, IPPROTO_IP, IP_MULTICAST_LOOP);
	} else {
		setint("hops", s, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 33);
		getint("hops", s, IPPROTO_IPV6, IPV6_UNICAST_HOPS);
		setint("pmtudisc", s, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO);
		getint("pmtudisc", s, IPPROTO_IPV6, IPV6_MTU_DISCOVER);
		setint("mcast_hops", s, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 5);
		getint("mcast_hops", s, IPPROTO_IPV6, IPV6_MULTICAST_HOPS);
		setint("mcast_loop", s, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 0);
		getint("mcast_loop", s, IPPROTO_IPV6, IPV6_MULTICAST_LOOP);
		getint("v6only", s, IPPROTO_IPV6, IPV6_V6ONLY);
	}
	getint("error", s, SOL_SOCKET, SO_ERROR);
	close(s);
}

static void case_udp_opts_before(void)
{
	saddr sa = at(&sa_self, 0);
	int s = udp();

	setint("rcvbuf", s, SOL_SOCKET, SO_RCVBUF, 100000);
	setint("reuseaddr", s, SOL_SOCKET, SO_REUSEADDR, 1);
	if (fam == AF_INET)
		setint("ttl", s, IPPROTO_IP, IP_TTL, 44);
	else
		setint("hops", s, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 44);
	rc("bind", bind(s, SA(sa), SL(sa)));
	getint("rcvbuf", s, SOL_SOCKET, SO_RCVBUF);
	getint("reuseaddr", s, SOL_SOCKET, SO_REUSEADDR);
	if (fam == AF_INET)
		getint("ttl", s, IPPROTO_IP, IP_TTL);
	else
		getint("hops", s, IPPROTO_IPV6, IPV6_UNICAST_HOPS);
	close(s);
}

/* IP_PKTINFO / IPV6_RECVPKTINFO: the destination address of a datagram. */
static void case_udp_pktinfo(void)
{
	saddr sa = wild(0), dst = at(&sa_peer, P_UECHO), from;
	char buf[16], cbuf[256];
	struct iovec iv = { buf, sizeof(buf) };
	struct msghdr m = { .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iv,
			    .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	const char *dname = "none";
	int s = udp(), one = 1;
	ssize_t n;

	bind(s, SA(sa), SL(sa));
	if (fam == AF_INET)
		rc("set", setsockopt(s, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)));
	else
		rc("set", setsockopt(s, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)));
	sendto(s, "k", 1, 0, SA(dst), SL(dst));
	wait_in(s, 3000);
	n = recvmsg(s, &m, 0);
	rn("recvmsg", n);
	for (cm = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL; cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;
			struct sockaddr_in d = { .sin_family = AF_INET };

			memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
			d.sin_addr = pi.ipi_addr;
			dname = aname(&d, sizeof(d));
		} else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;
			struct sockaddr_in6 d = { .sin6_family = AF_INET6 };

			memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
			d.sin6_addr = pi.ipi6_addr;
			dname = aname(&d, sizeof(d));
		}
	}
	out("pktinfo_dst=%s", dname);
	close(s);
}

static void case_udp_large(void)
{
	static char big[65536], back[65536];
	int s = udp_to(&sa_peer, P_UECHO), max = fam == AF_INET ? 65507 : 65527;
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	memset(big, 'L', sizeof(big));
	rn("over", send(s, big, max + 1, 0));
	rn("send", send(s, big, 60000, 0));
	n = recv_wait(s, back, sizeof(back), 0, NULL, NULL, 3000);
	rn("recv", n);
	out("data=%s", n == 60000 && !memcmp(big, back, n) ? "ok" : "bad");
	close(s);
}

static void case_udp_readv_writev(void)
{
	char a[3] = "rea", b[3] = "dvv", r1[3], r2[3];
	struct iovec w[2] = { { a, 3 }, { b, 3 } }, r[2] = { { r1, 3 }, { r2, 3 } };
	int s = udp_to(&sa_peer, P_UECHO);
	char c;

	if (rc("connect", s) < 0)
		return;
	rn("writev", writev(s, w, 2));
	wait_in(s, 3000);
	rn("readv", readv(s, r, 2));
	out("data=%s", !memcmp(r1, "rea", 3) && !memcmp(r2, "dvv", 3) ? "ok" : "bad");
	writev(s, w, 2);
	wait_in(s, 3000);
	r[1].iov_len = 1;
	rn("readv_short", readv(s, r, 2));
	rn("rest", recv(s, &c, 1, MSG_DONTWAIT));
	close(s);
}

static void case_udp_shutdown(void)
{
	saddr sa = at(&sa_self, 0);
	char c;
	int s = udp();

	rc("fresh", shutdown(s, SHUT_RDWR));
	close(s);
	s = udp();
	bind(s, SA(sa), SL(sa));
	rc("bound", shutdown(s, SHUT_WR));
	close(s);
	s = udp_to(&sa_peer, P_UECHO);
	rc("wr", shutdown(s, SHUT_WR));
	rn("send", send(s, "x", 1, MSG_NOSIGNAL));
	close(s);
	s = udp_to(&sa_peer, P_UECHO);
	rc("rd", shutdown(s, SHUT_RD));
	rn("recv", recv(s, &c, 1, MSG_DONTWAIT));
	close(s);
}

static void case_udp_listen_accept(void)
{
	saddr sa = at(&sa_self, 0);
	int s = udp();

	rc("listen_fresh", listen(s, 4));
	bind(s, SA(sa), SL(sa));
	rc("listen", listen(s, 4));
	rc("accept", accept(s, NULL, NULL));
	close(s);
}

static void case_udp_getpeername(void)
{
	saddr sa = at(&sa_self, 0);
	int s = udp();

	out("fresh=%s", name_of(s, true));
	bind(s, SA(sa), SL(sa));
	out("bound=%s", name_of(s, true));
	close(s);
}

static void case_udp_loopback(void)
{
	saddr lo = special(fam, false), sa, from;
	socklen_t fl = sizeof(from);
	char buf[16];
	int r = udp(), s = udp();
	ssize_t n;

	sa = at(&lo, 0);
	rc("bind", bind(r, SA(sa), SL(sa)));
	sa = at(&lo, local_port(r));
	rn("sendto", sendto(s, "lo", 2, 0, SA(sa), SL(sa)));
	memset(&from, 0, sizeof(from));
	n = recv_wait(r, buf, sizeof(buf), 0, &from, &fl, 2000);
	udp_got("recv", n, &from, fl);
	out("sender=%s", port_of(&from) == local_port(s) ? "same" : "diff");
	rn("reply", sendto(r, "ol", 2, 0, SA(from), fl));
	rn("recv2", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 2000));
	close(r);
	close(s);
}

static void case_udp_fork(void)
{
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO), st;
	pid_t p;

	if (rc("connect", s) < 0)
		return;
	p = fork();
	if (p == 0)
		_exit(send(s, "kid", 3, 0) == 3 ? 0 : 1);
	waitpid(p, &st, 0);
	out("child=%d", WEXITSTATUS(st));
	rn("recv", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000));
	close(s);
}

static void case_udp_exec_inherit(void)
{
	exec_case(SOCK_DGRAM, false, false);
}

static void case_udp_dup(void)
{
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO), d;

	if (rc("connect", s) < 0)
		return;
	d = dup(s);
	rn("send_dup", send(d, "d1", 2, 0));
	rn("recv_orig", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000));
	close(s);
	rn("send_after_close", send(d, "d22", 3, 0));
	rn("recv_dup", recv_wait(d, buf, sizeof(buf), 0, NULL, NULL, 3000));
	close(d);
}

static void case_udp_burst(void)
{
	char buf[128];
	int s = udp_to(&sa_peer, P_UECHO), i, got = 0, order = 1;
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	for (i = 0; i < 20; i++) {
		memset(buf, 'A' + i, 100);
		if (send(s, buf, 100, 0) != 100)
			break;
	}
	out("sent=%d", i);
	while (got < 20) {
		n = recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 2000);
		if (n < 0)
			break;
		if (n != 100 || buf[0] != 'A' + got)
			order = 0;
		got++;
	}
	out("received=%d inorder=%d", got, order);
	close(s);
}

static void case_udp_nonblock_send(void)
{
	char buf[16];
	int s = socket(fam, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	saddr dst = at(&sa_peer, P_UECHO);

	rn("sendto", sendto(s, "nb", 2, 0, SA(dst), SL(dst)));
	rn("recv", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000));
	rn("recv2", recv(s, buf, sizeof(buf), 0));
	close(s);
}

/* ======================================================================
 * IPv6 specifics (family 6): v6only, v4-mapped addresses
 * ====================================================================== */

static void case_v6only_opt(void)
{
	int t = tcp(), u = udp();

	getint("tcp", t, IPPROTO_IPV6, IPV6_V6ONLY);
	setint("tcp", t, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	getint("tcp2", t, IPPROTO_IPV6, IPV6_V6ONLY);
	getint("udp", u, IPPROTO_IPV6, IPV6_V6ONLY);
	setint("udp", u, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	getint("udp2", u, IPPROTO_IPV6, IPV6_V6ONLY);
	close(t);
	close(u);
}

static int v6_listener(int v6only)
{
	saddr w = wild(0);
	int l = tcp();

	setint("v6only", l, IPPROTO_IPV6, IPV6_V6ONLY, v6only);
	if (bind(l, SA(w), SL(w)) < 0 || listen(l, 4) < 0) {
		out("listen=%s", ename(errno));
		close(l);
		return -1;
	}
	return l;
}

static void case_tcp_dual_listen(void)
{
	char buf[64];
	int l = v6_listener(0), c, a;

	if (l < 0)
		return;
	a = accept_from_peer(l, &A4.self, &c, 0);
	if (rc("accept4", a) >= 0) {
		out("local=%s peer=%s", name_of(a, false), name_of(a, true));
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0) {
		ctl_reply(c, buf, sizeof(buf));
		out("peer4=\"%s\"", buf);
	}
	a = accept_from_peer(l, &A6.self, &c, 0);
	if (rc("accept6", a) >= 0) {
		out("local=%s peer=%s", name_of(a, false), name_of(a, true));
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0) {
		ctl_reply(c, buf, sizeof(buf));
		out("peer6=\"%s\"", buf);
	}
	close(l);
}

static void case_tcp_v6only_listen(void)
{
	char buf[64];
	int l = v6_listener(1), c, a;

	if (l < 0)
		return;
	peer_ctl(buf, sizeof(buf), "CONNECT %s %d\n", ntop(&A4.self), local_port(l));
	out("peer4=\"%s\"", buf);
	a = accept_from_peer(l, &A6.self, &c, 0);
	if (rc("accept6", a) >= 0) {
		out("local=%s peer=%s", name_of(a, false), name_of(a, true));
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0) {
		ctl_reply(c, buf, sizeof(buf));
		out("peer6=\"%s\"", buf);
	}
	close(l);
}

static void case_tcp_connect_mapped(void)
{
	saddr m = mapped(&A4.peer, P_ECHO);
	char buf[4] = { 0 };
	int s = connect_sa(SOCK_STREAM, &m);

	if (rc("connect", s) < 0)
		return;
	out("local=%s peer=%s", name_of(s, false), name_of(s, true));
	write(s, "map", 3);
	out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "map", 3) ? "ok" : "bad");
	close(s);
}

static void case_tcp_v6only_mapped(void)
{
	saddr m = mapped(&A4.peer, P_ECHO);
	int s = tcp();

	setint("v6only", s, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	rc("connect", connect(s, SA(m), SL(m)));
	close(s);
}

static void case_bind_mapped(void)
{
	saddr m = mapped(&A4.self, 0), o = mapped(&A4.other, 0);
	int s = tcp();

	setint("v6only", s, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	rc("v6only", bind(s, SA(m), SL(m)));
	close(s);
	s = tcp();
	rc("dual", bind(s, SA(m), SL(m)));
	out("name=%s", name_of(s, false));
	close(s);
	s = tcp();
	rc("other", bind(s, SA(o), SL(o)));
	close(s);
	s = udp();
	rc("udp", bind(s, SA(m), SL(m)));
	out("udp_name=%s", name_of(s, false));
	close(s);
}

/* IPv6 accepts the 24-byte sockaddr_in6 of RFC 2133 (no scope id). */
static void case_bind_len_rfc2133(void)
{
	saddr sa = at(&sa_self, 0);
	int s = tcp();

	rc("bind", bind(s, SA(sa), 24));
	out("name=%s", name_of(s, false));
	close(s);
}

static void case_udp_mapped_sendto(void)
{
	saddr m = mapped(&A4.peer, P_UECHO);
	char buf[16];
	int s = udp();

	rn("sendto", sendto(s, "m4", 2, 0, SA(m), SL(m)));
	got_from("recv", s, buf, sizeof(buf), 3000);
	out("name=%s", name_of(s, false));
	close(s);
}

static void case_udp_connect_mapped(void)
{
	saddr m = mapped(&A4.peer, P_UECHO);
	char buf[16];
	int s = connect_sa(SOCK_DGRAM, &m);

	if (rc("connect", s) < 0)
		return;
	out("local=%s peer=%s", name_of(s, false), name_of(s, true));
	send(s, "cm", 2, 0);
	got_from("recv", s, buf, sizeof(buf), 3000);
	close(s);
}

/* An AF_INET6 UDP socket may connect to a plain sockaddr_in. */
static void case_udp_connect_sin(void)
{
	saddr p4 = at(&A4.peer, P_UECHO);
	char buf[16];
	int s = udp();

	rc("connect", connect(s, SA(p4), SL(p4)));
	out("local=%s peer=%s", name_of(s, false), name_of(s, true));
	rn("send", send(s, "s4", 2, 0));
	got_from("recv", s, buf, sizeof(buf), 3000);
	close(s);
}

static void case_udp_v6only_mapped(void)
{
	saddr m = mapped(&A4.peer, P_UECHO);
	int s = udp();

	setint("v6only", s, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	rn("sendto", sendto(s, "x", 1, 0, SA(m), SL(m)));
	rc("connect", connect(s, SA(m), SL(m)));
	close(s);
}

static void udp_dual_server(int v6only)
{
	saddr w = wild(0);
	char reply[64], buf[64];
	int s = udp();

	setint("v6only", s, IPPROTO_IPV6, IPV6_V6ONLY, v6only);
	rc("bind", bind(s, SA(w), SL(w)));
	peer_ctl(reply, sizeof(reply), "UDPSEND %s %d 1 4\n", ntop(&A4.self), local_port(s));
	out("peer4=\"%s\"", reply);
	got_from("recv4", s, buf, sizeof(buf), v6only ? 500 : 2000);
	peer_ctl(reply, sizeof(reply), "UDPSEND %s %d 1 6\n", ntop(&A6.self), local_port(s));
	out("peer6=\"%s\"", reply);
	got_from("recv6", s, buf, sizeof(buf), 2000);
	close(s);
}

static void case_udp_dual_server(void)
{
	udp_dual_server(0);
}

static void case_udp_v6only_server(void)
{
	udp_dual_server(1);
}

/* ======================================================================
 * Sockets passed between processes over AF_UNIX (SCM_RIGHTS)
 * ====================================================================== */

static int send_fd(int sock, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iv = { "F", 1 };
	struct msghdr m = { .msg_iov = &iv, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &m, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int))], c;
	struct iovec iv = { &c, 1 };
	struct msghdr m = { .msg_iov = &iv, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	int fd = -1;

	if (recvmsg(sock, &m, 0) != 1)
		return -1;
	cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS) {
		errno = EPROTO;
		return -1;
	}
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/*
 * The receiving process is forked before the socket exists, so it has
 * never seen it: the fd arrives as a stranger, as it would in an
 * unrelated process.  It writes, reads the echo, and names both ends; a
 * listener (type 0) accepts one connection instead.
 */
static void scm_receiver(int us, int type)
{
	char res[200], buf[16] = { 0 };
	int fd = recv_fd(us), t = -1, d = -1, io, a = -1;
	socklen_t l = sizeof(t);
	ssize_t n;

	if (fd < 0) {
		snprintf(res, sizeof(res), "recvfd=%s", ename(errno));
		goto out;
	}
	getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l);
	l = sizeof(d);
	getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &d, &l);
	if (type == 0) {
		/* the sender has the peer connect once we said "ready" */
		if (write(us, "R", 1) != 1 || !wait_in(fd, 3000))
			io = 0;
		else if ((a = accept(fd, NULL, NULL)) < 0)
			io = -errno;
		else
			io = read_full(a, buf, 4, 2000) == 4 && write(a, "pong", 4) == 4;
		snprintf(res, sizeof(res), "recvfd=ok domain=%s accept=%s local=%s peer=%s",
			 d == AF_INET ? "inet" : d == AF_INET6 ? "inet6" : d == AF_UNIX ? "unix" : "?",
			 io < 0 ? ename(-io) : io ? "ok" : "bad", a >= 0 ? name_of(a, false) : "-",
			 a >= 0 ? name_of(a, true) : "-");
		if (a >= 0)
			close(a);
		close(fd);
		goto out;
	}
	n = write(fd, "scm", 3);
	if (n != 3)
		io = n < 0 ? -errno : 0;
	else if (type == SOCK_DGRAM)
		io = recv_wait(fd, buf, sizeof(buf), 0, NULL, NULL, 2000) == 3 &&
		     !memcmp(buf, "scm", 3);
	else
		io = read_full(fd, buf, 3, 2000) == 3 && !memcmp(buf, "scm", 3);
	snprintf(res, sizeof(res), "recvfd=ok domain=%s type=%s io=%s peer=%s local=%s",
		 d == AF_INET ? "inet" : d == AF_INET6 ? "inet6" : d == AF_UNIX ? "unix" : "?",
		 t == SOCK_STREAM ? "stream" : t == SOCK_DGRAM ? "dgram" : "?",
		 io < 0 ? ename(-io) : io ? "ok" : "bad", name_of(fd, true), name_of(fd, false));
	close(fd);
out:
	if (write(us, res, strlen(res)) < 0)
		_exit(1);
	_exit(0);
}

/* Fork a receiver for a socket that does not exist yet; its end in *us. */
static pid_t scm_fork(int type, int *us)
{
	int sv[2];
	pid_t p;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return -1;
	p = fork();
	if (p == 0) {
		close(sv[0]);
		scm_receiver(sv[1], type);
	}
	close(sv[1]);
	*us = sv[0];
	return p;
}

/* The receiver's one-line report, after it exits. */
static void scm_report(const char *tag, int us, pid_t p)
{
	char buf[256] = { 0 };
	ssize_t n, got = 0;
	int st;

	while (got < (ssize_t)sizeof(buf) - 1 &&
	       (n = read_full(us, buf + got, sizeof(buf) - 1 - got, 5000)) > 0)
		got += n;
	close(us);
	waitpid(p, &st, 0);
	out("%s=\"%s\"", tag, buf);
}

static void scm_case(int type)
{
	int us, s;
	pid_t p = scm_fork(type, &us);

	if (rc("fork", p) < 0)
		return;
	s = type == SOCK_STREAM ? connect_to(&sa_peer, P_ECHO) : udp_to(&sa_peer, P_UECHO);
	if (rc("connect", s) >= 0) {
		rc("sendfd", send_fd(us, s));
		close(s);	/* the receiver's copy is the only one now */
	}
	scm_report("receiver", us, p);
}

static void case_scm_rights_tcp(void)
{
	scm_case(SOCK_STREAM);
}

static void case_scm_rights_udp(void)
{
	scm_case(SOCK_DGRAM);
}

/* A listening socket handed to a worker, as servers do on reload. */
static void case_scm_rights_listener(void)
{
	char r;
	int us, l, c = -1;
	pid_t p = scm_fork(0, &us);

	if (rc("fork", p) < 0)
		return;
	l = bind_listen(&sa_self, 0, 4);
	if (rc("listen", l) >= 0) {
		rc("sendfd", send_fd(us, l));
		if (read_full(us, &r, 1, 5000) == 1)
			c = peer_ctl_async("CONNECT %s %d\n", ntop(&sa_self), local_port(l));
		close(l);
	}
	peer_reply_out(c);
	scm_report("receiver", us, p);
}

/* The same connected socket passed to two processes in turn. */
static void case_scm_rights_twice(void)
{
	int us1, us2, s;
	pid_t p1 = scm_fork(SOCK_STREAM, &us1), p2 = scm_fork(SOCK_STREAM, &us2);

	if (rc("fork", p1 < 0 || p2 < 0 ? -1 : 0) < 0)
		return;
	s = connect_to(&sa_peer, P_ECHO);
	if (rc("connect", s) < 0) {
		close(us1);
		close(us2);
		waitpid(p1, NULL, 0);
		waitpid(p2, NULL, 0);
		return;
	}
	rc("sendfd1", send_fd(us1, s));
	scm_report("first", us1, p1);
	rc("sendfd2", send_fd(us2, s));
	scm_report("second", us2, p2);
	close(s);
}

#define F4	1	/* run in family 4 */
#define F6	2	/* run in family 6 */
#define FB	3	/* both */

/* select() and pselect() timeouts while a connect is pending: a
 * sub-millisecond wait, the time left written back into *tv, invalid
 * timeouts. */
static void case_select_timeouts(void)
{
	saddr sa = at(&sa_bh, P_ECHO);
	struct timeval tv = { 0, 500 };
	struct timespec ts = { 0, -1 };
	int64_t t0;
	fd_set w;
	int s = tcp(), r;

	set_nonblock(s);
	r = connect(s, SA(sa), SL(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	FD_ZERO(&w);
	FD_SET(s, &w);
	r = select(s + 1, NULL, &w, NULL, &tv);
	out("select_500us=%d left=%ld.%06ld", r, (long)tv.tv_sec, (long)tv.tv_usec);
	tv = (struct timeval){ 0, 30000 };
	FD_SET(s, &w);
	t0 = now_ms();
	r = select(s + 1, NULL, &w, NULL, &tv);
	out("select_30ms=%d waited=%s left=%ld.%06ld", r, now_ms() - t0 >= 29 ? "yes" : "no",
	    (long)tv.tv_sec, (long)tv.tv_usec);
	tv = (struct timeval){ -1, 0 };
	FD_SET(s, &w);
	r = select(s + 1, NULL, &w, NULL, &tv);
	out("select_negative=%s", r < 0 ? ename(errno) : "ok");
	FD_SET(s, &w);
	r = pselect(s + 1, NULL, &w, NULL, &ts, NULL);
	out("pselect_bad_nsec=%s", r < 0 ? ename(errno) : "ok");
	close(s);
}

/* sendto() with an AF_UNSPEC address: IPv4 UDP takes its address and port
 * (port 0: EINVAL, also on a connected socket); IPv6 UDP ignores it. */
static void case_udp_sendto_unspec(void)
{
	saddr un = at(&sa_peer, P_UECHO), self = at(&sa_self, 0), z;
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO);

	if (rc("connect", s) < 0)
		return;
	memset(&z, 0, sizeof(z));
	rn("connected_zero", sendto(s, "z", 1, 0, SA(z), SL(sa_peer)));
	rn("recv1", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 1000));
	close(s);
	s = udp();
	bind(s, SA(self), SL(self));
	un.ss_family = AF_UNSPEC;
	rn("bound_unspec", sendto(s, "u", 1, 0, SA(un), SL(sa_peer)));
	rn("recv2", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 1000));
	close(s);
}

/* An AF_INET6 UDP socket sending to a sockaddr_in, and to a foreign family. */
static void case_udp_v6_sendto_sin(void)
{
	saddr d4 = at(&A4.peer, P_UECHO), bad = at(&sa_peer, P_UECHO), from;
	socklen_t fl = sizeof(from);
	char buf[16];
	int s = udp();
	ssize_t n;

	rn("sendto_sin", sendto(s, "4", 1, 0, SA(d4), sizeof(struct sockaddr_in)));
	memset(&from, 0, sizeof(from));
	n = recv_wait(s, buf, sizeof(buf), 0, &from, &fl, 2000);
	udp_got("recv", n, &from, fl);
	bad.ss_family = AF_UNIX;
	rn("sendto_unix", sendto(s, "x", 1, 0, SA(bad), sizeof(struct sockaddr_in6)));
	close(s);
}

/* EMSGSIZE of an AF_INET6 socket sending to a v4-mapped address: 65507. */
static void case_udp_mapped_emsgsize(void)
{
	static char big[65520];
	saddr m = mapped(&A4.peer, P_UECHO);
	int s = udp();

	rn("sendto_65508", sendto(s, big, 65508, 0, SA(m), SL(m)));
	rn("sendto_65507", sendto(s, big, 65507, 0, SA(m), SL(m)));
	close(s);
}

static void on_usr1(int sig)
{
	(void)sig;
}

static void *kick_main(void *p)
{
	usleep(2000000);
	pthread_kill(*(pthread_t *)p, SIGUSR1);
	return NULL;
}

/* An accepted socket inherits the listener's SO_RCVTIMEO; a guard thread
 * interrupts a recv() that waits longer than 2 s. */
static void case_accept_timeo_inherit(void)
{
	struct sigaction sa = { .sa_handler = on_usr1 }, old;
	struct timeval tv = { 0, 0 };
	socklen_t tl = sizeof(tv);
	pthread_t self = pthread_self(), t;
	char buf[8];
	int l = bind_listen(&sa_self, 0, 4), c, a;
	int64_t t0;
	ssize_t n;

	set_rcvtimeo(l, 300);
	tv.tv_usec = 400000;
	rc("sndtimeo", setsockopt(l, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
	tv.tv_usec = 0;
	t0 = now_ms();
	rc("accept_empty", accept(l, NULL, NULL));
	out("accept_timed=%s", now_ms() - t0 >= 250 && now_ms() - t0 < 1500 ? "yes" : "no");
	c = peer_ctl_async("HOLD %s %d 1\n", ntop(&sa_self), local_port(l));
	a = accept(l, NULL, NULL);
	if (rc("accept", a) < 0) {
		close(c);
		close(l);
		return;
	}
	getsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl);
	out("rcvtimeo_ms=%ld", (long)(tv.tv_sec * 1000 + tv.tv_usec / 1000));
	tv.tv_sec = tv.tv_usec = 0;
	tl = sizeof(tv);
	getsockopt(a, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl);
	out("sndtimeo_ms=%ld", (long)(tv.tv_sec * 1000 + tv.tv_usec / 1000));
	sigaction(SIGUSR1, &sa, &old);
	pthread_create(&t, NULL, kick_main, &self);
	t0 = now_ms();
	n = recv(a, buf, sizeof(buf), 0);
	out("recv=%s after=%s", n < 0 ? ename(errno) : "data",
	    now_ms() - t0 < 1500 ? "timeo" : "guard");
	pthread_join(t, NULL);
	sigaction(SIGUSR1, &old, NULL);
	close(a);
	close(c);
	close(l);
}

static const char *ev_names(int n, const struct epoll_event *e)
{
	static char b[32];

	snprintf(b, sizeof(b), "%s%s%s%s", n > 0 && (e->events & EPOLLIN) ? "IN" : "",
		 n > 0 && (e->events & EPOLLOUT) ? "OUT" : "", n > 0 && (e->events & EPOLLERR) ? "ERR" : "",
		 n > 0 && (e->events & EPOLLHUP) ? "HUP" : "");
	return b;
}

/* epoll_pwait2() (glibc 2.35) while a socket connects: as epoll_wait(). */
static void case_epoll_pwait2_connect(void)
{
	struct epoll_event ev = { .events = EPOLLOUT }, evs[2];
	struct timespec ts = { 3, 0 };
	saddr sa = at(&sa_peer, P_ECHO), cl = at(&sa_peer, P_CLOSED);
	int s = tcp(), ep = epoll_create1(0), n;

	set_nonblock(s);
	rc("connect", connect(s, SA(sa), SL(sa)));
	ev.data.fd = s;
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	n = epoll_pwait2(ep, evs, 2, &ts, NULL);
	out("ok=%d ev=%s", n, ev_names(n, evs));
	out("so_error=%s", ename(sock_error(s)));
	close(s);
	s = tcp();
	set_nonblock(s);
	connect(s, SA(cl), SL(cl));
	ev.data.fd = s;
	ev.events = EPOLLOUT;
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	n = epoll_pwait2(ep, evs, 2, &ts, NULL);
	out("refused=%d ev=%s", n, ev_names(n, evs));
	out("so_error=%s", ename(sock_error(s)));
	close(s);
	close(ep);
}

/* ppoll() in a program built with _FORTIFY_SOURCE is __ppoll_chk(). */
extern int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
		       const sigset_t *ss, size_t fdslen);

static void case_ppoll_chk_connect(void)
{
	struct timespec ts = { 0, 500000000 };
	saddr bh = at(&sa_bh, P_ECHO);
	struct pollfd p[1];
	int s = tcp(), r;

	set_nonblock(s);
	rc("connect", connect(s, SA(bh), SL(bh)));
	p[0] = (struct pollfd){ .fd = s, .events = POLLOUT };
	r = __ppoll_chk(p, 1, &ts, NULL, sizeof(p));
	out("ppoll=%d out=%d", r, !!(p[0].revents & POLLOUT));
	out("so_error=%s", ename(sock_error(s)));
	close(s);
}

/* shutdown() of a listener stops it (SO_ACCEPTCONN 0, accept EINVAL);
 * listen() again listens on the same port (HAProxy pauses this way). */
static void case_listener_shutdown_relisten(void)
{
	int l = bind_listen(&sa_self, 0, 4), port = local_port(l), c, a;

	/* a port left to the stack is let go: listen() takes another */
	rc("shutdown0", shutdown(l, SHUT_RDWR));
	rc("listen0", listen(l, 4));
	out("auto_port_kept=%s", local_port(l) == port ? "yes" : "no");
	close(l);
	/* a port bind() named is kept */
	l = bind_listen(&sa_self, port, 4);
	rc("shutdown", shutdown(l, SHUT_RDWR));
	getint("acceptconn", l, SOL_SOCKET, SO_ACCEPTCONN);
	set_nonblock(l);
	rc("accept_shut", accept(l, NULL, NULL));
	rc("listen", listen(l, 4));
	getint("acceptconn2", l, SOL_SOCKET, SO_ACCEPTCONN);
	out("same_port=%s", local_port(l) == port ? "yes" : "no");
	c = peer_ctl_async("HOLD %s %d 1\n", ntop(&sa_self), port);
	wait_in(l, 3000);
	a = accept(l, NULL, NULL);
	rc("accept", a);
	if (a >= 0)
		close(a);
	if (c >= 0)
		close(c);
	close(l);
}

/* MSG_MORE on UDP: the sends up to one without it are one datagram. */
static void case_udp_msg_more(void)
{
	char buf[64] = { 0 };
	int s = udp_to(&sa_peer, P_UECHO);
	ssize_t n;

	if (rc("connect", s) < 0)
		return;
	rn("more1", send(s, "ab", 2, MSG_MORE));
	rn("more2", send(s, "cd", 2, MSG_MORE));
	rn("last", send(s, "ef", 2, 0));
	n = recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000);
	out("recv=%zd data=%.*s", n, n > 0 ? (int)n : 0, buf);
	usleep(200000);
	rn("next", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	close(s);
}

/* MSG_EOR is nothing to UDP; MSG_ERRQUEUE finds the error queue empty. */
static void case_udp_flags_misc(void)
{
	char buf[64];
	int s = udp_to(&sa_peer, P_UECHO);

	if (rc("connect", s) < 0)
		return;
	rn("eor", send(s, "e", 1, MSG_EOR));
	rn("recv", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 3000));
	rn("errqueue", recv(s, buf, sizeof(buf), MSG_ERRQUEUE | MSG_DONTWAIT));
	close(s);
}

/* A blocking recvmmsg() without MSG_WAITFORONE waits for vlen datagrams
 * (here: until SO_RCVTIMEO ends the second wait); with a timeout, it
 * returns once the timeout has passed between two datagrams. */
static void case_udp_recvmmsg_block(void)
{
	struct mmsghdr mm[4];
	struct iovec iv[4];
	char bufs[4][32] = { { 0 } };
	int s = udp_to(&sa_peer, P_UECHO), i, n;
	int64_t t0;

	if (rc("connect", s) < 0)
		return;
	memset(mm, 0, sizeof(mm));
	for (i = 0; i < 4; i++) {
		iv[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
		mm[i].msg_hdr.msg_iov = &iv[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	set_rcvtimeo(s, 1000);
	send(s, "one", 3, 0);
	wait_in(s, 3000);
	t0 = now_ms();
	n = recvmmsg(s, mm, 4, 0, NULL);
	out("recvmmsg=%d waited=%s", n < 0 ? -errno : n, now_ms() - t0 >= 700 ? "yes" : "no");
	send(s, "two", 3, 0);
	wait_in(s, 3000);
	t0 = now_ms();
	n = recvmmsg(s, mm, 4, MSG_WAITFORONE, NULL);
	out("waitforone=%d waited=%s", n < 0 ? -errno : n, now_ms() - t0 >= 700 ? "yes" : "no");
	close(s);
}

/* FIONREAD and SIOCOUTQ on a listener: EINVAL. */
static void case_listener_ioctls(void)
{
	int l = bind_listen(&sa_self, 0, 4), n = -1;

	rc("fionread", ioctl(l, FIONREAD, &n));
	rc("outq", ioctl(l, SIOCOUTQ, &n));
	rc("outqnsd", ioctl(l, SIOCOUTQNSD, &n));
	/* shut down: Linux's socket is closed, with nothing either way */
	shutdown(l, SHUT_RDWR);
	n = -1;
	rc("fionread_shut", ioctl(l, FIONREAD, &n));
	out("n=%d", n);
	close(l);
}

/* Two descriptors registered with the same data (0): a connecting socket
 * (blackhole) and a readable pipe; the pipe's event is reported. */
static void case_epoll_same_data(void)
{
	struct epoll_event ev = { .events = EPOLLOUT }, evs[4];
	saddr bh = at(&sa_bh, P_ECHO);
	int s = tcp(), ep = epoll_create1(0), p[2], n;

	set_nonblock(s);
	rc("connect", connect(s, SA(bh), SL(bh)));
	ev.data.u64 = 0;
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	if (pipe(p) < 0) {
		out("pipe=%s", ename(errno));
		close(s);
		close(ep);
		return;
	}
	ev.events = EPOLLIN;
	ev.data.u64 = 0;
	epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
	rn("write", write(p[1], "x", 1));
	n = epoll_wait(ep, evs, 4, 1000);
	out("epoll=%d ev=%s", n, n > 0 ? (evs[0].events & EPOLLIN ? "IN" : "other") : "-");
	close(p[0]);
	close(p[1]);
	close(s);
	close(ep);
}

/* MSG_MORE on a connected socket: the datagram's limit is its peer's
 * family's (IPv4: 65507, EMSGSIZE when the held bytes and the last send
 * pass it; the held bytes go). */
static void case_udp_more_emsgsize(void)
{
	static char big[40000];
	char buf[16];
	int s = udp_to(&sa_peer, P_UECHO);

	if (rc("connect", s) < 0)
		return;
	rn("more", send(s, big, 40000, MSG_MORE));
	rn("last", send(s, big, 25520, 0));
	rn("after", send(s, "z", 1, 0));
	rn("recv", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 2000));
	close(s);
}

/* A socket error that recvmmsg() meets after a datagram is not lost: a
 * later receive reports it (Linux keeps it in sk_err; it reports it
 * before the datagram, NetKernel after: only what is seen is compared). */
static void case_udp_recvmmsg_error(void)
{
	struct mmsghdr mm[4];
	struct iovec iv[4];
	char bufs[4][32] = { { 0 } };
	saddr cl = at(&sa_peer, P_UCLOSED);
	int s = udp_to(&sa_peer, P_UECHO), i, n, got = 0, refused = 0, k;

	if (rc("connect", s) < 0)
		return;
	send(s, "one", 3, 0);
	wait_in(s, 3000);
	/* the echo waits; the next peer's port is closed */
	rc("reconnect", connect(s, SA(cl), SL(cl)));
	send(s, "x", 1, 0);
	usleep(300000);
	for (k = 0; k < 4; k++) {
		memset(mm, 0, sizeof(mm));
		for (i = 0; i < 4; i++) {
			iv[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
			mm[i].msg_hdr.msg_iov = &iv[i];
			mm[i].msg_hdr.msg_iovlen = 1;
		}
		n = recvmmsg(s, mm, 4, MSG_DONTWAIT, NULL);
		if (n > 0)
			got += n;
		else if (n < 0 && errno == ECONNREFUSED)
			refused++;
	}
	out("datagrams=%d refused=%d", got, refused);
	close(s);
}

struct late_write {
	int fd;
	int ms;
	const char *data;
};

static void *late_write_fn(void *p)
{
	struct late_write *lw = p;

	usleep(lw->ms * 1000);
	if (write(lw->fd, lw->data, strlen(lw->data)) < 0)
		perror("late write");
	return NULL;
}

static void wait_echo(int s)
{
	struct pollfd p = { .fd = s, .events = POLLIN };

	poll(&p, 1, 3000);
	usleep(100000);
}

/* MSG_ERRQUEUE on TCP: the (empty) error queue, never the payload. */
static void case_tcp_errqueue(void)
{
	char buf[16] = { 0 }, cbuf[256];
	struct iovec v = { buf, sizeof(buf) };
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	int s = connect_to(&sa_peer, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rn("write", write(s, "abc", 3));
	wait_echo(s);
	rn("errqueue", recvmsg(s, &m, MSG_ERRQUEUE | MSG_DONTWAIT));
	rn("recv_eq", recv(s, buf, sizeof(buf), MSG_ERRQUEUE | MSG_DONTWAIT));
	memset(buf, 0, sizeof(buf));
	rn("data", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	out("got=%s", buf);
	close(s);
}

/* recv(MSG_PEEK | MSG_WAITALL) waits for the whole length. */
static void case_peek_waitall(void)
{
	char buf[8] = { 0 };
	int s = connect_to(&sa_peer, P_ECHO);
	struct late_write lw = { s, 300, "cd" };
	pthread_t t;

	if (rc("connect", s) < 0)
		return;
	set_rcvtimeo(s, 2000);
	rn("write", write(s, "ab", 2));
	wait_echo(s);
	pthread_create(&t, NULL, late_write_fn, &lw);
	rn("peek", recv(s, buf, 4, MSG_PEEK | MSG_WAITALL));
	pthread_join(t, NULL);
	usleep(100000);
	rn("read", recv(s, buf, 4, MSG_WAITALL));
	out("data=%.4s", buf);
	/* non-blocking, nothing there: EAGAIN at once */
	rn("peek_dontwait", recv(s, buf, 4, MSG_PEEK | MSG_WAITALL | MSG_DONTWAIT));
	/* nothing there yet: it waits for the first byte too */
	lw.data = "wxyz";
	pthread_create(&t, NULL, late_write_fn, &lw);
	rn("peek_empty", recv(s, buf, 4, MSG_PEEK | MSG_WAITALL));
	pthread_join(t, NULL);
	rn("read2", recv(s, buf, 4, MSG_WAITALL));
	/* the receive timeout ends a peek that cannot be whole: what is there */
	lw.data = "q";
	pthread_create(&t, NULL, late_write_fn, &lw);
	set_rcvtimeo(s, 800);
	rn("peek_timeo", recv(s, buf, 4, MSG_PEEK | MSG_WAITALL));
	pthread_join(t, NULL);
	close(s);
}

static void *kick_soon(void *p)
{
	usleep(200000);
	pthread_kill(*(pthread_t *)p, SIGUSR1);
	return NULL;
}

/* A signal with SA_RESTART while a peek waits for its first byte: the
 * call goes on, as Linux restarts it. */
static void case_peek_restart(void)
{
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_RESTART }, old;
	char buf[8] = { 0 };
	int s = connect_to(&sa_peer, P_ECHO);
	struct late_write lw = { s, 500, "abcd" };
	pthread_t self = pthread_self(), t, k;

	if (rc("connect", s) < 0)
		return;
	sigaction(SIGUSR1, &sa, &old);
	pthread_create(&t, NULL, late_write_fn, &lw);
	pthread_create(&k, NULL, kick_soon, &self);
	rn("peek", recv(s, buf, 4, MSG_PEEK | MSG_WAITALL));
	pthread_join(k, NULL);
	pthread_join(t, NULL);
	sigaction(SIGUSR1, &old, NULL);
	close(s);
}

/* sendto(MSG_FASTOPEN) on a fresh socket connects and sends. */
static void case_tcp_fastopen_sendto(void)
{
	char buf[8] = { 0 };
	saddr sa = at(&sa_peer, P_ECHO);
	int s = tcp();

	rn("sendto", sendto(s, "tfo", 3, MSG_FASTOPEN, SA(sa), SL(sa)));
	out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "tfo", 3) ? "ok" : "bad");
	out("peer=%s", name_of(s, true));
	/* connected already: EISCONN, as Linux's __inet_stream_connect() */
	rn("again", send(s, "x", 1, MSG_FASTOPEN | MSG_NOSIGNAL));
	close(s);
	/* a bound socket connects too */
	s = tcp();
	{
		saddr self = at(&sa_self, 0);

		rc("bind", bind(s, SA(self), SL(self)));
	}
	rn("bound_sendto", sendto(s, "tfo", 3, MSG_FASTOPEN | MSG_NOSIGNAL, SA(sa), SL(sa)));
	memset(buf, 0, sizeof(buf));
	out("bound_echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "tfo", 3) ? "ok" : "bad");
	close(s);
}

/* TCP_CONGESTION on a UDP socket: ENOPROTOOPT, whatever the name. */
static void case_udp_tcp_congestion(void)
{
	int s = udp_to(&sa_peer, P_UECHO);

	if (rc("connect", s) < 0)
		return;
	rc("nosuch", setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "nosuchcc", 8));
	rc("reno", setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "reno", 4));
	close(s);
}

/* writev() with more than IOV_MAX vectors: EINVAL. */
static void case_iov_max(void)
{
	static char b[1025];
	struct iovec w[1025];
	int s = connect_to(&sa_peer, P_ECHO), i;

	if (rc("connect", s) < 0)
		return;
	for (i = 0; i < 1025; i++)
		w[i] = (struct iovec){ b + i, 1 };
	rn("writev", writev(s, w, 1025));
	rn("readv", readv(s, w, 1025));
	close(s);
}

/* connect(AF_UNSPEC) on a TCP socket disconnects it (a reset to the
 * peer, ECONNRESET once); it connects again; a listener stops. */
static void case_tcp_connect_unspec(void)
{
	saddr un, sa = at(&sa_peer, P_ECHO);
	char buf[8] = { 0 };
	int s = connect_to(&sa_peer, P_ECHO), l;

	if (rc("connect", s) < 0)
		return;
	memset(&un, 0, sizeof(un));
	un.ss_family = AF_UNSPEC;
	rc("unspec", connect(s, SA(un), sizeof(un)));
	out("peer=%s", name_of(s, true));
	rn("write", send(s, "x", 1, MSG_NOSIGNAL));
	rn("write2", send(s, "x", 1, MSG_NOSIGNAL));
	getint("error", s, SOL_SOCKET, SO_ERROR);
	if (rc("reconnect", connect(s, SA(sa), SL(sa))) == 0) {
		rn("send", write(s, "abc", 3));
		out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "abc", 3) ? "ok" : "bad");
	}
	close(s);
	l = bind_listen(&sa_self, 0, 4);
	/* the peer of a disconnected connection sees a reset */
	s = peer_ctl_async("PINGEOF %s %d\n", ntop(&sa_self), local_port(l));
	{
		int a = accept(l, NULL, NULL);

		if (rc("accept", a) >= 0) {
			out("read=%zd", read_full(a, buf, 4, 3000));
			rc("accepted_unspec", connect(a, SA(un), sizeof(un)));
			peer_reply_out(s);
			close(a);
		} else {
			close(s);
		}
	}
	rc("listener_unspec", connect(l, SA(un), sizeof(un)));
	getint("acceptconn", l, SOL_SOCKET, SO_ACCEPTCONN);
	close(l);
}

struct blocked_connect {
	int fd;
	saddr sa;
	volatile int done;
	int ret;
	int err;
};

static void *blocked_connect_fn(void *p)
{
	struct blocked_connect *b = p;

	b->ret = connect(b->fd, SA(b->sa), SL(b->sa));
	b->err = errno;
	b->done = 1;
	return NULL;
}

/* close() by another thread while connect() waits (a blackhole, 1 s
 * SO_SNDTIMEO): the connect goes on and times out, as on Linux. */
static void case_thread_close_connect(void)
{
	struct blocked_connect b = { .fd = tcp() };
	struct timeval tv = { 1, 0 };
	pthread_t t;
	int i;

	b.sa = at(&sa_bh, 80);
	setsockopt(b.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	pthread_create(&t, NULL, blocked_connect_fn, &b);
	usleep(300000);
	close(b.fd);
	usleep(100000);
	out("after_close=%s", b.done ? "returned" : "blocked");
	for (i = 0; i < 300 && !b.done; i++)
		usleep(10000);
	out("connect=%s", !b.done ? "blocked" : b.ret < 0 ? ename(b.err) : "ok");
	if (b.done)
		pthread_join(t, NULL);
}

/* The peer closes at once: EOF; a write draws its reset; the next write
 * takes the reset's error (EPIPE in CLOSE_WAIT) with SIGPIPE, and
 * SO_ERROR then says 0: the write took it. */
static void case_peer_close_write(void)
{
	struct sigaction sa = { .sa_handler = on_sigpipe }, old;
	char buf[8];
	int s = connect_to(&sa_peer, P_CLOSE);

	if (rc("connect", s) < 0)
		return;
	sigaction(SIGPIPE, &sa, &old);
	sigpipes = 0;
	usleep(300000);
	rn("read", read(s, buf, sizeof(buf)));
	rn("write1", write(s, "x", 1));
	usleep(300000);
	rn("read2", read(s, buf, sizeof(buf)));
	rn("write2", write(s, "x", 1));
	out("sig=%d", (int)sigpipes);
	rn("write3", write(s, "x", 1));
	out("sig=%d", (int)sigpipes);
	getint("error", s, SOL_SOCKET, SO_ERROR);
	close(s);
	sigaction(SIGPIPE, &old, NULL);
}

static volatile sig_atomic_t sigios;

static void on_sigio(int sig)
{
	(void)sig;
	sigios++;
}

static const char *sigio_within(int ms)
{
	int i;

	for (i = 0; i < ms / 10 && !sigios; i++)
		usleep(10000);
	return sigios ? "yes" : "no";
}

static const char *flstr(int fd)
{
	static char b[4][64];
	static int i;
	char *p = b[i++ & 3];
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return ename(errno);
	snprintf(p, 64, "%s%s%s", (fl & O_ACCMODE) == O_RDWR ? "rdwr" : "other",
		 fl & O_NONBLOCK ? "|nonblock" : "", fl & O_ASYNC ? "|async" : "");
	return p;
}

/* O_ASYNC, F_SETOWN and F_SETSIG set before connect() stay: SIGIO when the
 * connect completes and when data arrives. */
static void case_async_before_connect(void)
{
	struct sigaction sa = { .sa_handler = on_sigio, .sa_flags = SA_RESTART }, old;
	saddr p = at(&sa_peer, P_ECHO);
	char buf[8];
	int s = tcp();

	sigaction(SIGIO, &sa, &old);
	rc("setown", fcntl(s, F_SETOWN, getpid()));
	rc("setsig", fcntl(s, F_SETSIG, SIGIO));
	rc("setfl", fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_ASYNC | O_NONBLOCK));
	sigios = 0;
	rc("connect", connect(s, SA(p), SL(p)));
	out("sigio_connect=%s", sigio_within(2000));
	out("after=%s own=%s sig=%d", flstr(s), fcntl(s, F_GETOWN) == getpid() ? "self" : "none",
	    fcntl(s, F_GETSIG));
	usleep(100000);
	sigios = 0;
	rn("write", write(s, "ping", 4));
	out("sigio_data=%s", sigio_within(2000));
	out("read=%zd", read_full(s, buf, 4, 2000));
	fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_ASYNC);
	sigaction(SIGIO, &old, NULL);
	close(s);
}

/* The same on a listener, set before bind(): SIGIO for a connection. */
static void case_async_listen_early(void)
{
	struct sigaction sa = { .sa_handler = on_sigio }, old;
	saddr b = at(&sa_self, 0);
	char buf[64];
	int l = tcp(), one = 1, c, a;

	sigaction(SIGIO, &sa, &old);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	fcntl(l, F_SETOWN, getpid());
	fcntl(l, F_SETFL, fcntl(l, F_GETFL) | O_ASYNC);
	if (rc("bind", bind(l, SA(b), SL(b))) < 0 || rc("listen", listen(l, 4)) < 0)
		goto done;
	out("fl=%s own=%s", flstr(l), fcntl(l, F_GETOWN) == getpid() ? "self" : "none");
	usleep(100000);
	sigios = 0;
	c = peer_ctl_async("CONNECT %s %d\n", ntop(&sa_self), local_port(l));
	out("sigio=%s", sigio_within(3000));
	a = accept(l, NULL, NULL);
	if (rc("accept", a) >= 0) {
		read_full(a, buf, 4, 2000);
		rn("pong", write(a, "pong", 4));
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
done:
	fcntl(l, F_SETFL, fcntl(l, F_GETFL) & ~O_ASYNC);
	sigaction(SIGIO, &old, NULL);
	close(l);
}

/* A UDP socket given O_ASYNC before bind(): SIGIO for a datagram. */
static void case_udp_async_before_bind(void)
{
	struct sigaction sa = { .sa_handler = on_sigio, .sa_flags = SA_RESTART }, old;
	saddr b = at(&sa_self, 0);
	char reply[64], buf[16];
	int s = udp();

	sigaction(SIGIO, &sa, &old);
	fcntl(s, F_SETOWN, getpid());
	fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_ASYNC);
	if (rc("bind", bind(s, SA(b), SL(b))) < 0)
		goto done;
	out("fl=%s own=%s", flstr(s), fcntl(s, F_GETOWN) == getpid() ? "self" : "none");
	sigios = 0;
	peer_ctl(reply, sizeof(reply), "UDPSEND %s %d 1 4\n", ntop(&sa_self), local_port(s));
	out("sigio=%s", sigio_within(2000));
	rn("recv", recv_wait(s, buf, sizeof(buf), 0, NULL, NULL, 2000));
done:
	fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_ASYNC);
	sigaction(SIGIO, &old, NULL);
	close(s);
}

/* A listener inherited by a program popen() starts through the shell. */
static void case_popen_listener(void)
{
	char buf[160] = { 0 }, cmd[512], exe[256] = { 0 };
	int l = bind_listen(&sa_self, 0, 4), c;
	FILE *f;

	if (rc("listen", l) < 0)
		return;
	/* the shell's /proc/self/exe is the shell's */
	if (readlink(self_exe, exe, sizeof(exe) - 1) < 0) {
		out("readlink=%s", ename(errno));
		close(l);
		return;
	}
	snprintf(cmd, sizeof(cmd), "%s exec-accept %d %d %s", exe, l,
		 fam == AF_INET ? 4 : 6, ntop(&sa_peer));
	f = popen(cmd, "r");
	usleep(300000);
	c = peer_ctl_async("CONNECT %s %d\n", ntop(&sa_self), local_port(l));
	if (!f || !fgets(buf, sizeof(buf), f))
		snprintf(buf, sizeof(buf), "none");
	buf[strcspn(buf, "\n")] = '\0';
	out("child=\"%s\"", buf);
	close(l);
	if (c >= 0)
		peer_reply_out(c);
	if (f)
		pclose(f);
}

/* A link-local destination without a scope id: EINVAL. */
static void case_v6_linklocal_noscope(void)
{
	struct sockaddr_in6 ll = { .sin6_family = AF_INET6, .sin6_port = htons(P_ECHO) };
	int fd = tcp();

	set_nonblock(fd);
	inet_pton(AF_INET6, "fe80::1", &ll.sin6_addr);
	rc("connect_ll", connect(fd, (struct sockaddr *)&ll, sizeof(ll)));
	close(fd);
}

static const struct {
	const char *name;
	void (*fn)(void);
	int fams;
} cases[] = {
#define C(n) { #n, case_##n, FB }
#define C4(n) { #n, case_##n, F4 }
#define C6(n) { #n, case_##n, F6 }
	/* TCP */
	C(connect_ok), C(cork_rounds), C(cork_hold), C(notsent_lowat), C(connect_refused), C(connect_twice), C(nb_connect),
	C(nb_connect_refused), C(nb_connect_again), C(nb_connect_blackhole), C(sndtimeo_connect), C(connect_other_thread),
	C(epoll_et_connect), C(epoll_fd_reused), C(select_connect), C(select_timeouts), C(bind_inuse), C(bind_notavail),
	C(bind_port0), C(bind_any_port0), C(bind_twice), C(bind_badlen),
	C(reuseaddr_listen), C(reuseaddr_bound), C(reuseport), C(accept_basic), C(accept_then_requests), C(accept_close_listener), C(accept_addr),
	C(accept_wildcard_name), C(accept4_flags), C(accept_nonblock_empty),
	C(accept_not_listening), C(listen_epoll_lt), C(listen_epoll_et), C(listen_poll),
	C(opt_basic), C(opt_linger_cc), C(opt_before_connect), C(fresh_opt_unsupported), C(opt_listener),
	C(linger0_rst), C(close_fin), C(close_unread_rst), C(half_close), C(peer_fin), C(peer_rst_read),
	C(peer_rst_write), C(options_after_rst), C(names_after_fin), C(peer_urgent), C(urgent_then_fin), C(sigpipe), C(sendfile), C(splice), C(sendfile_rst), C(splice_rst), C(data_then_rst), C(rst_behind_data), C(write_rst_behind_data), C(upload_rst_behind_data), C(fin_then_rst), C(fionread_peek), C(recv_trunc), C(names_len0), C(siocoutq),
	C(unconnected_ops), C(listen_then_connect), C(loopback), C(unix_untouched),
	C(fork), C(fork_connect_in_child), C(dup2_over), C(ctl_reuse), C(clone_ctl), C(exec_inherit), C(exec_cloexec), C(exec_vfork),
	C(select_high_fd), C(bulk), C(shutdown_rd), C(shutdown_bad), C(recv_dontwait),
	C(readv_writev), C(sendmsg_recvmsg), C(hold_many),
	/* UDP */
	C(udp_sendto_echo), C(udp_connected_echo), C(udp_boundaries), C(udp_peek),
	C(udp_trunc), C(udp_dontwait), C(udp_fionread), C(udp_msg_names), C(udp_sendmmsg),
	C(udp_mmsg_connected), C(udp_refused), C(udp_refused_poll), C(udp_refused_send),
	C(udp_unconnected_closed), C(udp_disconnect), C(udp_implicit_bind),
	C(udp_bind_port0), C(udp_bind_any), C(udp_bind_inuse), C(udp_bind_notavail),
	C(udp_bind_twice), C(udp_server), C(udp_server_any), C4(udp_broadcast),
	C(udp_zero_len), C(udp_poll), C(udp_epoll), C(udp_select), C(udp_rcvtimeo),
	C(udp_send_noaddr), C(udp_reconnect), C(udp_connected_filter), C(udp_opts),
	C(udp_opts_before), C(udp_pktinfo), C(udp_large), C(udp_readv_writev),
	C(udp_shutdown), C(udp_listen_accept), C(udp_getpeername), C(udp_loopback),
	C(udp_fork), C(udp_exec_inherit), C(udp_dup), C(udp_burst), C(udp_nonblock_send),
	/* IPv6: v6only and v4-mapped addresses */
	C6(v6only_opt), C6(tcp_dual_listen), C6(tcp_v6only_listen), C6(tcp_connect_mapped),
	C6(tcp_v6only_mapped), C6(bind_mapped), C6(bind_len_rfc2133), C6(udp_mapped_sendto),
	C6(udp_connect_mapped), C6(udp_connect_sin), C6(udp_v6only_mapped),
	C6(udp_dual_server), C6(udp_v6only_server),
	/* SCM_RIGHTS between processes */
	C(scm_rights_tcp), C(scm_rights_udp), C(scm_rights_listener), C(scm_rights_twice),
	/* found by a differential review */
	C(udp_sendto_unspec), C6(udp_v6_sendto_sin), C6(udp_mapped_emsgsize), C(accept_timeo_inherit),
	C(epoll_pwait2_connect), C(ppoll_chk_connect), C(listener_shutdown_relisten),
	C(udp_msg_more), C(udp_flags_misc), C(udp_recvmmsg_block), C(listener_ioctls),
	C(epoll_same_data), C(udp_more_emsgsize), C(udp_recvmmsg_error),
	C(tcp_errqueue), C(peek_waitall), C(tcp_fastopen_sendto), C(iov_max), C(peek_restart),
	C(udp_tcp_congestion), C(tcp_connect_unspec), C(thread_close_connect),
	C(peer_close_write), C(async_before_connect), C(async_listen_early),
	C(udp_async_before_bind), C(popen_listener), C6(v6_linklocal_noscope),
#undef C
#undef C4
#undef C6
};

/* ======================================================================
 * Peer
 * ====================================================================== */

struct conn_arg {
	int fd;
	int port;
};

static int uecho_fd = -1;	/* the UDP echo socket, also used by UDPSEND */

static void linger0_close(int fd)
{
	struct linger lg = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* A numeric address of either family, port set. */
static int parse_sa(saddr *sa, const char *ip, int port)
{
	unsigned char b[16];

	if (inet_pton(AF_INET, ip, b) == 1)
		*sa = make_sa(AF_INET, b);
	else if (inet_pton(AF_INET6, ip, b) == 1)
		*sa = make_sa(AF_INET6, b);
	else
		return -1;
	*sa = at(sa, port);
	return 0;
}

static int ctl_connect(const char *ip, int port)
{
	saddr sa;

	if (parse_sa(&sa, ip, port)) {
		errno = EINVAL;
		return -1;
	}
	return connect_sa(SOCK_STREAM, &sa);
}

static void serve_udpsend(int fd, const char *ip, int port, int n, int size)
{
	static char buf[65536];
	char reply[64];
	saddr sa;
	int i, ok = 0;

	if (parse_sa(&sa, ip, port) || size < 0 || size > (int)sizeof(buf) || n < 0 || n > 64) {
		snprintf(reply, sizeof(reply), "ERR EINVAL\n");
		goto out;
	}
	/* the echo socket is dual-stack: IPv4 destinations are v4-mapped */
	if (sa.ss_family == AF_INET)
		sa = mapped(&sa, port);
	memset(buf, 'u', size);
	for (i = 0; i < n; i++)
		ok += sendto(uecho_fd, buf, size, 0, SA(sa), SL(sa)) == size;
	snprintf(reply, sizeof(reply), "OK %d\n", ok);
out:
	write(fd, reply, strlen(reply));
}

/* READEOF and URGEOF (which first sends "x", "u" as urgent data and a
 * FIN): connect to IP:PORT, read until EOF or error; the answer in reply. */
enum readeof_mode { RE_PLAIN, RE_URGENT, RE_PING };

static void serve_readeof(const char *ip, int port, enum readeof_mode mode, char *reply,
			  size_t len)
{
	char buf[64];
	size_t total = 0;
	ssize_t r;
	int s = ctl_connect(ip, port);

	if (s < 0) {
		snprintf(reply, len, "ERR %s\n", ename(errno));
		return;
	}
	if (mode == RE_URGENT) {
		write(s, "x", 1);
		send(s, "u", 1, MSG_OOB);
		shutdown(s, SHUT_WR);
	} else if (mode == RE_PING) {
		write(s, "ping", 4);
	}
	while ((r = read(s, buf, sizeof(buf))) > 0)
		total += r;
	if (r < 0)
		snprintf(reply, len, "ERR %s\n", ename(errno));
	else
		snprintf(reply, len, "EOF %zu\n", total);
	close(s);
}

/* SENDRST: fill the path to IP:PORT, then reset; answer what the
 * receiver acknowledged (the bytes written less those SIOCOUTQ still
 * counts, once nothing has moved for 300 ms). */
static void serve_sendrst(int fd, const char *ip, int port)
{
	static char data[1 << 16];
	struct timeval tv = { .tv_usec = 300000 };
	char reply[64];
	size_t sent = 0;
	ssize_t n;
	int s = ctl_connect(ip, port), outq = 0;

	if (s < 0) {
		snprintf(reply, sizeof(reply), "ERR %s\n", ename(errno));
		write(fd, reply, strlen(reply));
		return;
	}
	memset(data, 'r', sizeof(data));
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (sent < (64u << 20) && (n = write(s, data, sizeof(data))) > 0)
		sent += n;
	usleep(300000);
	if (ioctl(s, SIOCOUTQ, &outq))
		snprintf(reply, sizeof(reply), "ERR %s\n", ename(errno));
	else if (outq < 0 || (size_t)outq > sent)
		snprintf(reply, sizeof(reply), "ERR outq %d of %zu\n", outq, sent);
	else
		snprintf(reply, sizeof(reply), "ACKED %zu\n", sent - (size_t)outq);
	linger0_close(s);
	write(fd, reply, strlen(reply));
}

static void serve_ctl(int fd)
{
	char line[160] = { 0 }, ip[64], reply[128], buf[64];
	int port, n = 0, i, s, size;
	ssize_t r;

	for (i = 0; i < (int)sizeof(line) - 1; i++) {
		if (read(fd, line + i, 1) != 1 || line[i] == '\n')
			break;
	}
	if (sscanf(line, "CONNECT %63s %d", ip, &port) == 2) {
		s = ctl_connect(ip, port);
		if (s < 0) {
			snprintf(reply, sizeof(reply), "ERR %s\n", ename(errno));
		} else {
			write(s, "ping", 4);
			memset(buf, 0, sizeof(buf));
			r = read_full(s, buf, 4, 5000);
			snprintf(reply, sizeof(reply), "OK %s\n", r > 0 ? buf : "-");
			close(s);
		}
	} else if (sscanf(line, "READEOF %63s %d", ip, &port) == 2) {
		serve_readeof(ip, port, RE_PLAIN, reply, sizeof(reply));
	} else if (sscanf(line, "URGEOF %63s %d", ip, &port) == 2) {
		serve_readeof(ip, port, RE_URGENT, reply, sizeof(reply));
	} else if (sscanf(line, "PINGEOF %63s %d", ip, &port) == 2) {
		serve_readeof(ip, port, RE_PING, reply, sizeof(reply));
	} else if (sscanf(line, "SENDRST %63s %d", ip, &port) == 2) {
		serve_sendrst(fd, ip, port);
		return;
	} else if (sscanf(line, "HOLD %63s %d %d", ip, &port, &n) == 3 && n > 0 && n <= 64) {
		int fds[64], ok = 0;

		for (i = 0; i < n; i++) {
			fds[i] = ctl_connect(ip, port);
			ok += fds[i] >= 0;
		}
		snprintf(reply, sizeof(reply), "OK %d\n", ok);
		write(fd, reply, strlen(reply));
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		for (i = 0; i < n; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		return;
	} else if (sscanf(line, "UDPSEND %63s %d %d %d", ip, &port, &n, &size) == 4) {
		serve_udpsend(fd, ip, port, n, size);
		return;
	} else {
		snprintf(reply, sizeof(reply), "ERR EINVAL\n");
	}
	write(fd, reply, strlen(reply));
}

static void *peer_conn(void *p)
{
	struct conn_arg *a = p;
	char buf[65536];
	ssize_t n;
	size_t total = 0;
	int fd = a->fd;

	switch (a->port) {
	case P_ECHO:
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (write(fd, buf, n) != n)
				break;
		close(fd);
		break;
	case P_FIN:
		write(fd, "hello", 5);
		shutdown(fd, SHUT_WR);
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		close(fd);
		break;
	case P_CLOSE:
		close(fd);
		break;
	case P_RST:
		linger0_close(fd);
		break;
	case P_DATARST:
		write(fd, "data", 4);
		usleep(200000);
		linger0_close(fd);
		break;
	case P_URG:
		write(fd, "12", 2);
		send(fd, "3", 1, MSG_OOB);
		write(fd, "45", 2);
		shutdown(fd, SHUT_WR);
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		close(fd);
		break;
	case P_FINRST:
		write(fd, "data", 4);
		shutdown(fd, SHUT_WR);
		usleep(200000);
		linger0_close(fd);
		break;
	case P_COUNT:
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			total += n;
		n = snprintf(buf, sizeof(buf), "%zu", total);
		write(fd, buf, n);
		close(fd);
		break;
	case P_HOLD:
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		close(fd);
		break;
	case P_CTL:
		serve_ctl(fd);
		close(fd);
		break;
	}
	free(a);
	return NULL;
}

/* UDP echo (7101) and generator (7102): one thread each. */
static void *peer_udp(void *p)
{
	static char buf[65536], gen[65536];
	struct conn_arg *a = p;
	saddr from;
	socklen_t fl;
	ssize_t n;

	for (;;) {
		fl = sizeof(from);
		n = recvfrom(a->fd, a->port == P_UECHO ? buf : gen, 65535, 0, SA(from), &fl);
		if (n < 0)
			continue;
		if (a->port == P_UECHO) {
			sendto(a->fd, buf, n, 0, SA(from), fl);
		} else {
			char req[128], *tok, *save = NULL;
			static char data[65536];
			int k = 0;

			snprintf(req, sizeof(req), "%.*s", (int)(n < 127 ? n : 127), gen);
			for (tok = strtok_r(req, ",", &save); tok && k < 16;
			     tok = strtok_r(NULL, ",", &save), k++) {
				int size = atoi(tok);

				if (size < 0 || size > 65000)
					break;
				memset(data, 'a' + k, size);
				sendto(a->fd, data, size, 0, SA(from), fl);
			}
		}
	}
	return NULL;
}

/* One socket for a service: dual-stack on "::" unless bound to one address. */
static int peer_socket(const char *bind_ip, int type, int port)
{
	saddr sa;
	int s, one = 1, zero = 0;

	if (parse_sa(&sa, bind_ip, port)) {
		fprintf(stderr, "peer: bad address %s\n", bind_ip);
		return -1;
	}
	s = socket(sa.ss_family, type, 0);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa.ss_family == AF_INET6)
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(s, SA(sa), SL(sa)) < 0 || (type == SOCK_STREAM && listen(s, 128) < 0)) {
		fprintf(stderr, "peer: cannot bind %s port %d: %s\n", bind_ip, port, strerror(errno));
		close(s);
		return -1;
	}
	return s;
}

static int run_peer(const char *bind_ip)
{
	static const int ports[] = { P_ECHO, P_FIN, P_RST, P_DATARST, P_COUNT, P_HOLD, P_FINRST, P_URG, P_CTL,
				     P_CLOSE };
	static const int uports[] = { P_UECHO, P_UGEN };
	struct pollfd pfds[sizeof(ports) / sizeof(ports[0])];
	int i;

	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < 2; i++) {
		struct conn_arg *a = malloc(sizeof(*a));
		pthread_t t;

		a->fd = peer_socket(bind_ip, SOCK_DGRAM, uports[i]);
		a->port = uports[i];
		if (a->fd < 0)
			return 1;
		if (uports[i] == P_UECHO)
			uecho_fd = a->fd;
		if (pthread_create(&t, NULL, peer_udp, a))
			return 1;
		pthread_detach(t);
	}
	for (i = 0; i < (int)(sizeof(ports) / sizeof(ports[0])); i++) {
		int s = peer_socket(bind_ip, SOCK_STREAM, ports[i]);

		if (s < 0)
			return 1;
		pfds[i] = (struct pollfd){ .fd = s, .events = POLLIN };
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		if (poll(pfds, sizeof(ports) / sizeof(ports[0]), -1) < 0)
			continue;
		for (i = 0; i < (int)(sizeof(ports) / sizeof(ports[0])); i++) {
			struct conn_arg *a;
			pthread_t t;
			int c;

			if (!(pfds[i].revents & POLLIN))
				continue;
			c = accept(pfds[i].fd, NULL, NULL);
			if (c < 0)
				continue;
			a = malloc(sizeof(*a));
			a->fd = c;
			a->port = ports[i];
			if (pthread_create(&t, NULL, peer_conn, a)) {
				close(c);
				free(a);
				continue;
			}
			pthread_detach(t);
		}
	}
}

/* ======================================================================
 * main
 * ====================================================================== */

static void usage(void)
{
	fprintf(stderr,
		"usage: nk_semantics peer [--bind ADDR]   (default ::, dual-stack)\n"
		"       nk_semantics client [--family 4|6] --peer ADDR --self ADDR --other ADDR\n"
		"                           --blackhole ADDR [--case NAME[,NAME...]] [--list]\n"
		"       (each address option once per family: an IPv4 and an IPv6 address)\n");
	exit(2);
}

/* An address option: stored in the slot of its family. */
static void parse_addr(const char *opt, const char *v)
{
	struct fam_addrs *fa;
	saddr sa;
	saddr *slot;

	if (parse_sa(&sa, v, 0)) {
		fprintf(stderr, "bad address %s\n", v);
		exit(2);
	}
	fa = sa.ss_family == AF_INET ? &A4 : &A6;
	if (!strcmp(opt, "--peer"))
		slot = &fa->peer;
	else if (!strcmp(opt, "--self"))
		slot = &fa->self;
	else if (!strcmp(opt, "--other"))
		slot = &fa->other;
	else
		slot = &fa->bh;
	*slot = sa;
	fa->have = true;
}

static bool complete(const struct fam_addrs *fa)
{
	return fa->have && fa->peer.ss_family && fa->self.ss_family && fa->other.ss_family &&
	       fa->bh.ss_family;
}

/*
 * A case that blocks for CASE_TIMEOUT seconds is abandoned (its sockets
 * leak) and reported as "TIMEOUT", so one hang does not hide the cases
 * after it.
 */
#define CASE_TIMEOUT	15
static sigjmp_buf case_jmp;

static void on_alarm(int sig)
{
	(void)sig;
	siglongjmp(case_jmp, 1);
}

static void run_case(size_t i)
{
	result[0] = '\0';
	if (sigsetjmp(case_jmp, 1)) {
		out("TIMEOUT");
	} else {
		alarm(CASE_TIMEOUT);
		cases[i].fn();
	}
	alarm(0);
	printf("%s: %s\n", cases[i].name, result);
}

static bool selected(const char *only, const char *name)
{
	const char *p = only;
	size_t n = strlen(name);

	while ((p = strstr(p, name))) {
		if ((p == only || p[-1] == ',') && (!p[n] || p[n] == ','))
			return true;
		p += n;
	}
	return false;
}

int main(int argc, char **argv)
{
	const char *only = NULL, *bindip = "::";
	const struct fam_addrs *fa;
	bool list = false;
	size_t i;
	int a, famno = 4;

	setvbuf(stdout, NULL, _IOLBF, 0);
	self_exe = "/proc/self/exe";
	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "exec-accept") && argc == 5) {
		fam = atoi(argv[3]) == 6 ? AF_INET6 : AF_INET;
		parse_addr("--peer", argv[4]);
		return exec_accept(atoi(argv[2]));
	}
	if (!strcmp(argv[1], "exec-child") && argc == 5) {
		fam = atoi(argv[3]) == 6 ? AF_INET6 : AF_INET;
		parse_addr("--peer", argv[4]);
		return exec_child(atoi(argv[2]));
	}
	for (a = 2; a < argc; a++) {
		const char *v = a + 1 < argc ? argv[a + 1] : NULL;

		if (!strcmp(argv[a], "--list")) {
			list = true;
			continue;
		}
		if (!v)
			usage();
		if (!strcmp(argv[a], "--peer") || !strcmp(argv[a], "--self") ||
		    !strcmp(argv[a], "--other") || !strcmp(argv[a], "--blackhole"))
			parse_addr(argv[a], v);
		else if (!strcmp(argv[a], "--family"))
			famno = atoi(v);
		else if (!strcmp(argv[a], "--case"))
			only = v;
		else if (!strcmp(argv[a], "--bind"))
			bindip = v;
		else
			usage();
		a++;
	}
	if (!strcmp(argv[1], "peer"))
		return run_peer(bindip);
	if (strcmp(argv[1], "client") || (famno != 4 && famno != 6))
		usage();
	fam = famno == 4 ? AF_INET : AF_INET6;
	fa = fam == AF_INET ? &A4 : &A6;
	if (!list && (!complete(fa) || (fam == AF_INET6 && !complete(&A4)))) {
		fprintf(stderr, "family %d needs --peer, --self, --other and --blackhole of that family%s\n",
			famno, fam == AF_INET6 ? " and of IPv4 (v4-mapped cases)" : "");
		return 2;
	}
	signal(SIGALRM, on_alarm);
	sa_peer = fa->peer;
	sa_self = fa->self;
	sa_other = fa->other;
	sa_bh = fa->bh;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!(cases[i].fams & (famno == 4 ? F4 : F6)))
			continue;
		if (list) {
			printf("%s\n", cases[i].name);
			continue;
		}
		if (only && !selected(only, cases[i].name))
			continue;
		run_case(i);
	}
	return 0;
}
