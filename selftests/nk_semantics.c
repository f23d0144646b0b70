// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nk_semantics: one case per TCP socket behaviour, for differential tests.
 *
 *   nk_semantics peer --bind ADDR
 *       Runs on the remote host: the services the cases talk to.
 *   nk_semantics client --peer ADDR --self ADDR --other ADDR --blackhole ADDR
 *                       [--case NAME[,NAME...]] [--list]
 *       Runs in the guest (natively, or under nk-run) and prints one line per
 *       case: "NAME: RESULT".  Results are symbolic (errno names, flags,
 *       "ok"), never addresses or timings, so a native run and a NetKernel
 *       run can be compared line by line.
 *
 * Peer services (TCP ports on the peer address):
 *   7001 echo                      7004 send "data", then reset
 *   7002 send "hello", then FIN    7005 count bytes until EOF, send the count
 *   7003 reset at once             7006 accept and hold until EOF
 *   7010 control: one line per connection,
 *        "CONNECT IP PORT"   connect to IP:PORT, send "ping", read the
 *                            reply, answer "OK <reply>" or "ERR <errno>"
 *        "READEOF IP PORT"   connect, read until EOF or error, answer
 *                            "EOF <bytes>" or "ERR <errno name>"
 *        "HOLD IP PORT N"    open N connections and keep them until the
 *                            control connection closes; answer "OK N"
 *   7099 is never served (ECONNREFUSED).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
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
#define P_CTL		7010
#define P_CLOSED	7099

static struct in_addr peer_ip, self_ip, other_ip, bh_ip;
static char result[256];
static volatile sig_atomic_t sigpipes;

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
	{ EPROTO, "EPROTO" }, { EDESTADDRREQ, "EDESTADDRREQ" },
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

static struct sockaddr_in sin_of(struct in_addr ip, int port)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = ip };

	return s;
}

static int tcp(void)
{
	return socket(AF_INET, SOCK_STREAM, 0);
}

static int connect_to(struct in_addr ip, int port)
{
	struct sockaddr_in sa = sin_of(ip, port);
	int s = tcp();

	if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(s);
		errno = e;
		return -1;
	}
	return s;
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

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int bind_listen(struct in_addr ip, int port, int backlog)
{
	struct sockaddr_in sa = sin_of(ip, port);
	int s = tcp(), one = 1;

	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, backlog) < 0) {
		close(s);
		return -1;
	}
	return s;
}

static int local_port(int fd)
{
	struct sockaddr_in sa;
	socklen_t l = sizeof(sa);

	if (getsockname(fd, (struct sockaddr *)&sa, &l) < 0)
		return -1;
	return ntohs(sa.sin_port);
}

/* Start a peer control request in the background (the case accepts). */
static int peer_ctl_async(const char *fmt, ...)
{
	char line[128];
	va_list ap;
	int c = connect_to(peer_ip, P_CTL);

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

/* ======================================================================
 * Cases
 * ====================================================================== */

static void case_connect_ok(void)
{
	char buf[8] = { 0 };
	int s = connect_to(peer_ip, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("write", write(s, "abc", 3));
	out("echo=%s", read_full(s, buf, 3, 3000) == 3 && !memcmp(buf, "abc", 3) ? "ok" : "bad");
	close(s);
}

static void case_connect_refused(void)
{
	int s = connect_to(peer_ip, P_CLOSED);

	rc("connect", s);
	if (s >= 0)
		close(s);
}

static void case_connect_twice(void)
{
	struct sockaddr_in sa = sin_of(peer_ip, P_ECHO);
	int s = connect_to(peer_ip, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("again", connect(s, (struct sockaddr *)&sa, sizeof(sa)));
	close(s);
}

static void case_nb_connect(void)
{
	struct sockaddr_in sa = sin_of(peer_ip, P_ECHO);
	struct pollfd p;
	char buf[4] = { 0 };
	int s = tcp(), r;

	set_nonblock(s);
	r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
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
	struct sockaddr_in sa = sin_of(peer_ip, P_CLOSED);
	struct pollfd p;
	int s = tcp(), r;

	set_nonblock(s);
	r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	p = (struct pollfd){ .fd = s, .events = POLLOUT };
	r = poll(&p, 1, 3000);
	out("poll=%d out=%d err=%d hup=%d", r, !!(p.revents & POLLOUT), !!(p.revents & POLLERR),
	    !!(p.revents & POLLHUP));
	out("so_error=%s", ename(sock_error(s)));
	out("so_error2=%s", ename(sock_error(s)));
	close(s);
}

static void case_nb_connect_blackhole(void)
{
	struct sockaddr_in sa = sin_of(bh_ip, P_ECHO);
	struct epoll_event ev = { .events = EPOLLOUT }, evs[2];
	struct timeval tv = { 0, 300000 };
	struct pollfd p;
	fd_set w;
	int s = tcp(), r, ep;

	set_nonblock(s);
	r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
	out("connect=%s", r == 0 ? "0" : ename(errno));
	p = (struct pollfd){ .fd = s, .events = POLLOUT };
	out("poll=%d", poll(&p, 1, 400));
	r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
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
	struct sockaddr_in sa = sin_of(bh_ip, P_ECHO);
	struct timeval tv = { 0, 300000 };
	int s = tcp(), r;
	int64_t t0, dt;

	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	t0 = now_ms();
	r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
	dt = now_ms() - t0;
	out("connect=%s", r == 0 ? "0" : ename(errno));
	out("timed=%s", dt >= 250 && dt < 2000 ? "yes" : "no");
	close(s);
}

static void case_epoll_et_connect(void)
{
	struct sockaddr_in sa = sin_of(peer_ip, P_ECHO);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = 42 }, evs[4];
	char buf[4] = { 0 };
	int s = tcp(), r, ep = epoll_create1(0);
	int64_t t0;

	set_nonblock(s);
	/* Registered before connect, as nginx does for upstreams. */
	rc("ctl", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
	r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
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

static void case_select_connect(void)
{
	struct sockaddr_in sa = sin_of(peer_ip, P_ECHO);
	struct timeval tv = { 3, 0 };
	fd_set w;
	int s = tcp(), r;

	set_nonblock(s);
	r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
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
	struct sockaddr_in sa = sin_of(self_ip, 0);
	int s1 = tcp(), s2 = tcp();

	rc("bind1", bind(s1, (struct sockaddr *)&sa, sizeof(sa)));
	rc("listen", listen(s1, 4));
	sa.sin_port = htons(local_port(s1));
	rc("bind2", bind(s2, (struct sockaddr *)&sa, sizeof(sa)));
	close(s1);
	close(s2);
}

static void case_bind_notavail(void)
{
	struct sockaddr_in sa = sin_of(other_ip, 0);
	int s = tcp();

	rc("bind", bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	close(s);
}

static void case_bind_port0(void)
{
	struct sockaddr_in sa = sin_of(self_ip, 0), got;
	socklen_t l = sizeof(got);
	int s = tcp();

	rc("bind", bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	rc("getsockname", getsockname(s, (struct sockaddr *)&got, &l));
	out("addr=%s port=%s", got.sin_addr.s_addr == self_ip.s_addr ? "self" : "other",
	    got.sin_port ? "set" : "zero");
	close(s);
}

static void case_bind_any_port0(void)
{
	struct sockaddr_in sa = sin_of((struct in_addr){ INADDR_ANY }, 0), got;
	socklen_t l = sizeof(got);
	int s = tcp();

	rc("bind", bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	rc("listen", listen(s, 4));
	rc("getsockname", getsockname(s, (struct sockaddr *)&got, &l));
	out("addr=%s port=%s", got.sin_addr.s_addr == INADDR_ANY ? "any" : "specific",
	    got.sin_port ? "set" : "zero");
	close(s);
}

static void case_bind_twice(void)
{
	struct sockaddr_in sa = sin_of(self_ip, 0);
	int s = tcp();

	rc("bind1", bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	rc("bind2", bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	close(s);
}

static void case_bind_badlen(void)
{
	struct sockaddr_in sa = sin_of(self_ip, 0);
	int s = tcp();

	rc("short", bind(s, (struct sockaddr *)&sa, sizeof(sa) - 1));
	sa.sin_family = AF_INET6;
	rc("family", bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	close(s);
}

static void case_reuseaddr_listen(void)
{
	struct sockaddr_in sa = sin_of(self_ip, 0);
	int s1 = tcp(), s2 = tcp(), one = 1;

	setsockopt(s1, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(s2, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	rc("bind1", bind(s1, (struct sockaddr *)&sa, sizeof(sa)));
	rc("listen", listen(s1, 4));
	sa.sin_port = htons(local_port(s1));
	rc("bind2", bind(s2, (struct sockaddr *)&sa, sizeof(sa)));
	close(s1);
	close(s2);
}

static void case_reuseaddr_bound(void)
{
	struct sockaddr_in sa = sin_of(self_ip, 0);
	int s1 = tcp(), s2 = tcp(), one = 1;

	setsockopt(s1, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(s2, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	rc("bind1", bind(s1, (struct sockaddr *)&sa, sizeof(sa)));
	sa.sin_port = htons(local_port(s1));
	rc("bind2", bind(s2, (struct sockaddr *)&sa, sizeof(sa)));
	close(s1);
	close(s2);
}

static void case_reuseport(void)
{
	struct sockaddr_in sa = sin_of(self_ip, 0);
	int s1 = tcp(), s2 = tcp(), one = 1;

	setsockopt(s1, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(s2, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	rc("bind1", bind(s1, (struct sockaddr *)&sa, sizeof(sa)));
	rc("listen1", listen(s1, 4));
	sa.sin_port = htons(local_port(s1));
	rc("bind2", bind(s2, (struct sockaddr *)&sa, sizeof(sa)));
	rc("listen2", listen(s2, 4));
	close(s1);
	close(s2);
}

/* Listen on ip, have the peer connect, accept; returns the accepted fd. */
static int accept_from_peer(int l, struct in_addr target, int *ctl, int flags)
{
	int port = local_port(l), a;

	*ctl = peer_ctl_async("CONNECT %s %d\n", inet_ntoa(target), port);
	if (*ctl < 0)
		return -1;
	a = accept4(l, NULL, NULL, flags);
	return a;
}

static void case_accept_basic(void)
{
	struct sockaddr_in sa, pa;
	socklen_t l1 = sizeof(sa), l2 = sizeof(pa);
	char buf[64] = { 0 };
	int l = bind_listen(self_ip, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	a = accept_from_peer(l, self_ip, &c, 0);
	if (rc("accept", a) >= 0) {
		getsockname(a, (struct sockaddr *)&sa, &l1);
		getpeername(a, (struct sockaddr *)&pa, &l2);
		out("local=%s port=%s peer=%s", sa.sin_addr.s_addr == self_ip.s_addr ? "self" : "?",
		    ntohs(sa.sin_port) == local_port(l) ? "same" : "diff",
		    pa.sin_addr.s_addr == peer_ip.s_addr ? "peer" : "?");
		out("read=%s", read_full(a, buf, 4, 3000) == 4 && !memcmp(buf, "ping", 4) ? "ping" : "bad");
		rc("write", write(a, "pong", 4));
		close(a);
	}
	if (c >= 0) {
		ctl_reply(c, buf, sizeof(buf));
		out("peer=\"%s\"", buf);
	}
	close(l);
}

static void case_accept_wildcard_name(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	char buf[64];
	int l = bind_listen((struct in_addr){ INADDR_ANY }, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	a = accept_from_peer(l, self_ip, &c, 0);
	if (rc("accept", a) >= 0) {
		getsockname(a, (struct sockaddr *)&sa, &len);
		out("local=%s", sa.sin_addr.s_addr == self_ip.s_addr ? "self" : "other");
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
	int l = bind_listen(self_ip, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	a = accept_from_peer(l, self_ip, &c, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (rc("accept4", a) >= 0) {
		out("nonblock=%d cloexec=%d", !!(fcntl(a, F_GETFL) & O_NONBLOCK),
		    !!(fcntl(a, F_GETFD) & FD_CLOEXEC));
		write(a, "pong", 4);
		close(a);
	}
	if (c >= 0)
		ctl_reply(c, buf, sizeof(buf));
	a = accept_from_peer(l, self_ip, &c, 0);
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
	int l = bind_listen(self_ip, 0, 4);

	set_nonblock(l);
	rc("accept", accept(l, NULL, NULL));
	close(l);
}

static void case_listen_epoll_lt(void)
{
	struct epoll_event ev = { .events = EPOLLIN }, evs[2];
	char buf[64];
	int l = bind_listen(self_ip, 0, 4), ep = epoll_create1(0), c, a;

	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	out("idle=%d", epoll_wait(ep, evs, 2, 100));
	c = peer_ctl_async("CONNECT %s %d\n", inet_ntoa(self_ip), local_port(l));
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
	int l = bind_listen(self_ip, 0, 4), ep = epoll_create1(0), c, a;

	set_nonblock(l);
	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	c = peer_ctl_async("CONNECT %s %d\n", inet_ntoa(self_ip), local_port(l));
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
	int l = bind_listen(self_ip, 0, 4), c, a, i;

	p = (struct pollfd){ .fd = l, .events = POLLIN };
	out("idle=%d", poll(&p, 1, 100));
	c = peer_ctl_async("CONNECT %s %d\n", inet_ntoa(self_ip), local_port(l));
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

static void getint(const char *name, int fd, int level, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &l) < 0)
		out("%s=%s", name, ename(errno));
	else
		out("%s=%d", name, v);
}

static void setint(const char *name, int fd, int level, int opt, int v)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v)) < 0)
		out("set_%s=%s", name, ename(errno));
}

static void case_opt_basic(void)
{
	int s = connect_to(peer_ip, P_ECHO);

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
	setint("tos", s, IPPROTO_IP, IP_TOS, 0x10);
	getint("tos", s, IPPROTO_IP, IP_TOS);
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
	int s = connect_to(peer_ip, P_ECHO);

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
	struct sockaddr_in sa = sin_of(peer_ip, P_ECHO);
	int s = tcp();

	setint("nodelay", s, IPPROTO_TCP, TCP_NODELAY, 1);
	setint("keepalive", s, SOL_SOCKET, SO_KEEPALIVE, 1);
	rc("connect", connect(s, (struct sockaddr *)&sa, sizeof(sa)));
	getint("nodelay", s, IPPROTO_TCP, TCP_NODELAY);
	getint("keepalive", s, SOL_SOCKET, SO_KEEPALIVE);
	close(s);
}

static void case_opt_listener(void)
{
	int l = bind_listen(self_ip, 0, 4);

	getint("acceptconn", l, SOL_SOCKET, SO_ACCEPTCONN);
	getint("reuseaddr", l, SOL_SOCKET, SO_REUSEADDR);
	close(l);
}

static void case_linger0_rst(void)
{
	struct linger lg = { 1, 0 };
	char buf[64] = { 0 };
	int l = bind_listen(self_ip, 0, 4), c, a;

	c = peer_ctl_async("READEOF %s %d\n", inet_ntoa(self_ip), local_port(l));
	a = accept(l, NULL, NULL);
	if (rc("accept", a) >= 0) {
		rc("linger", setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
		close(a);
	}
	if (c >= 0) {
		ctl_reply(c, buf, sizeof(buf));
		out("peer=\"%s\"", buf);
	}
	close(l);
}

static void case_close_fin(void)
{
	char buf[64] = { 0 };
	int l = bind_listen(self_ip, 0, 4), c, a;

	c = peer_ctl_async("READEOF %s %d\n", inet_ntoa(self_ip), local_port(l));
	a = accept(l, NULL, NULL);
	if (rc("accept", a) >= 0) {
		write(a, "bye", 3);
		close(a);
	}
	if (c >= 0) {
		ctl_reply(c, buf, sizeof(buf));
		out("peer=\"%s\"", buf);
	}
	close(l);
}

static void case_half_close(void)
{
	char big[1000], buf[32] = { 0 };
	int s = connect_to(peer_ip, P_COUNT);

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
	int s = connect_to(peer_ip, P_FIN);

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
	int s = connect_to(peer_ip, P_RST);

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
	int s = connect_to(peer_ip, P_RST);

	if (rc("connect", s) < 0)
		return;
	usleep(300000);
	n = send(s, "x", 1, MSG_NOSIGNAL);
	out("write1=%s", n < 0 ? ename(errno) : "ok");
	n = send(s, "x", 1, MSG_NOSIGNAL);
	out("write2=%s", n < 0 ? ename(errno) : "ok");
	close(s);
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
	int s = connect_to(peer_ip, P_RST);

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

static void case_data_then_rst(void)
{
	char buf[16] = { 0 };
	ssize_t n;
	int s = connect_to(peer_ip, P_DATARST);

	if (rc("connect", s) < 0)
		return;
	usleep(500000);
	n = read(s, buf, 4);
	out("read1=%s", n == 4 ? buf : n < 0 ? ename(errno) : "short");
	n = read(s, buf, sizeof(buf));
	out("read2=%s", n < 0 ? ename(errno) : n ? "data" : "eof");
	close(s);
}

static void case_fionread_peek(void)
{
	char buf[16] = { 0 };
	int s = connect_to(peer_ip, P_FIN), n = -1;

	if (rc("connect", s) < 0)
		return;
	usleep(300000);
	rc("fionread", ioctl(s, FIONREAD, &n));
	out("n=%d", n);
	out("peek=%zd", recv(s, buf, 5, MSG_PEEK));
	out("read=%zd", recv(s, buf, 5, 0));
	out("data=%s", buf);
	close(s);
}

static void case_siocoutq(void)
{
	int s = connect_to(peer_ip, P_ECHO), n = -1;
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
	struct sockaddr_in sa;
	socklen_t l = sizeof(sa);
	char c;
	int s = tcp();

	rc("getpeername", getpeername(s, (struct sockaddr *)&sa, &l));
	rc("send", send(s, "x", 1, MSG_NOSIGNAL));
	rc("recv", recv(s, &c, 1, MSG_DONTWAIT));
	rc("shutdown", shutdown(s, SHUT_WR));
	sa = sin_of(self_ip, 0);
	bind(s, (struct sockaddr *)&sa, sizeof(sa));
	rc("send_bound", send(s, "x", 1, MSG_NOSIGNAL));
	rc("recv_bound", recv(s, &c, 1, MSG_DONTWAIT));
	rc("shutdown_bound", shutdown(s, SHUT_WR));
	l = sizeof(sa);
	rc("getpeername_bound", getpeername(s, (struct sockaddr *)&sa, &l));
	close(s);
}

static void case_listen_then_connect(void)
{
	struct sockaddr_in sa = sin_of(peer_ip, P_ECHO);
	int l = bind_listen(self_ip, 0, 4);

	rc("connect", connect(l, (struct sockaddr *)&sa, sizeof(sa)));
	close(l);
}

static void case_loopback(void)
{
	struct sockaddr_in sa = sin_of((struct in_addr){ htonl(INADDR_LOOPBACK) }, 0);
	char buf[4] = { 0 };
	int l = bind_listen(sa.sin_addr, 0, 4), c, a;

	if (rc("listen", l) < 0)
		return;
	sa.sin_port = htons(local_port(l));
	c = tcp();
	rc("connect", connect(c, (struct sockaddr *)&sa, sizeof(sa)));
	a = accept(l, NULL, NULL);
	write(c, "lo!", 3);
	out("read=%s", read_full(a, buf, 3, 2000) == 3 ? "ok" : "bad");
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
	int s = connect_to(peer_ip, P_ECHO), st;
	pid_t p;

	if (rc("connect", s) < 0)
		return;
	p = fork();
	if (p == 0) {
		struct sockaddr_in sa;
		socklen_t l = sizeof(sa);
		int ok = write(s, "fork", 4) == 4 &&
			 !getpeername(s, (struct sockaddr *)&sa, &l) &&
			 sa.sin_addr.s_addr == peer_ip.s_addr;

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
		int s = connect_to(peer_ip, P_ECHO);

		_exit(s >= 0 && write(s, "kid", 3) == 3 && read_full(s, buf, 3, 3000) == 3 ? 0 : 1);
	}
	waitpid(p, &st, 0);
	out("child=%d", WEXITSTATUS(st));
}

static void case_dup2_over(void)
{
	char buf[8] = { 0 };
	int s = connect_to(peer_ip, P_ECHO), t = connect_to(peer_ip, P_ECHO);

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

static char *self_exe;

static void exec_case(bool cloexec)
{
	char fdarg[16], buf[64] = { 0 };
	int s = socket(AF_INET, SOCK_STREAM | (cloexec ? SOCK_CLOEXEC : 0), 0), pfd[2], st;
	struct sockaddr_in sa = sin_of(peer_ip, P_ECHO);
	pid_t p;

	if (rc("connect", connect(s, (struct sockaddr *)&sa, sizeof(sa))) < 0)
		return;
	if (pipe(pfd) < 0)
		return;
	p = fork();
	if (p == 0) {
		dup2(pfd[1], 1);
		snprintf(fdarg, sizeof(fdarg), "%d", s);
		execl(self_exe, self_exe, "exec-child", fdarg, inet_ntoa(peer_ip), (char *)NULL);
		_exit(127);
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
	exec_case(false);
}

static void case_exec_cloexec(void)
{
	exec_case(true);
}

static int exec_child(int fd)
{
	struct sockaddr_in sa;
	socklen_t l = sizeof(sa);
	char buf[8] = { 0 };

	if (fcntl(fd, F_GETFD) < 0) {
		printf("closed\n");
		return 0;
	}
	if (write(fd, "exe", 3) != 3 || read_full(fd, buf, 3, 3000) != 3) {
		printf("io-failed\n");
		return 0;
	}
	if (getpeername(fd, (struct sockaddr *)&sa, &l) < 0 || sa.sin_family != AF_INET) {
		printf("open io=ok peername=bad\n");
		return 0;
	}
	printf("open io=ok peername=%s\n", sa.sin_addr.s_addr == peer_ip.s_addr ? "peer" : "?");
	return 0;
}

static void case_select_high_fd(void)
{
	struct rlimit rl;
	struct timeval tv = { 3, 0 };
	long *set;
	int s = connect_to(peer_ip, P_ECHO), hi = 1500, r;
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
	int s = connect_to(peer_ip, P_COUNT);
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
	int s = connect_to(peer_ip, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("shutdown", shutdown(s, SHUT_RD));
	out("read=%zd", read(s, buf, sizeof(buf)));
	rc("write", send(s, "x", 1, MSG_NOSIGNAL));
	close(s);
}

static void case_shutdown_bad(void)
{
	int s = connect_to(peer_ip, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("shutdown", shutdown(s, 7));
	close(s);
}

static void case_accept_not_listening(void)
{
	int s = tcp();
	struct sockaddr_in sa = sin_of(self_ip, 0);

	bind(s, (struct sockaddr *)&sa, sizeof(sa));
	rc("accept", accept(s, NULL, NULL));
	close(s);
}

static void case_recv_dontwait(void)
{
	char c;
	int s = connect_to(peer_ip, P_ECHO);

	if (rc("connect", s) < 0)
		return;
	rc("recv", recv(s, &c, 1, MSG_DONTWAIT));
	close(s);
}

static void case_readv_writev(void)
{
	char a[3] = "rea", b[3] = "dvv", r1[3], r2[3];
	struct iovec w[2] = { { a, 3 }, { b, 3 } }, r[2] = { { r1, 3 }, { r2, 3 } };
	int s = connect_to(peer_ip, P_ECHO);
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
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	int s = connect_to(peer_ip, P_ECHO);
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
	n = recvfrom(s, buf, 2, 0, (struct sockaddr *)&from, &fl);
	out("recvfrom=%zd addrlen=%u", n, fl);
	close(s);
}

static void case_hold_many(void)
{
	char buf[64] = { 0 };
	int l = bind_listen(self_ip, 0, 64), c, i, got = 0, a[16];

	c = peer_ctl_async("HOLD %s %d 16\n", inet_ntoa(self_ip), local_port(l));
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

static const struct {
	const char *name;
	void (*fn)(void);
} cases[] = {
#define C(n) { #n, case_##n }
	C(connect_ok), C(connect_refused), C(connect_twice), C(nb_connect),
	C(nb_connect_refused), C(nb_connect_blackhole), C(sndtimeo_connect),
	C(epoll_et_connect), C(select_connect), C(bind_inuse), C(bind_notavail),
	C(bind_port0), C(bind_any_port0), C(bind_twice), C(bind_badlen),
	C(reuseaddr_listen), C(reuseaddr_bound), C(reuseport), C(accept_basic),
	C(accept_wildcard_name), C(accept4_flags), C(accept_nonblock_empty),
	C(accept_not_listening), C(listen_epoll_lt), C(listen_epoll_et), C(listen_poll),
	C(opt_basic), C(opt_linger_cc), C(opt_before_connect), C(opt_listener),
	C(linger0_rst), C(close_fin), C(half_close), C(peer_fin), C(peer_rst_read),
	C(peer_rst_write), C(sigpipe), C(data_then_rst), C(fionread_peek), C(siocoutq),
	C(unconnected_ops), C(listen_then_connect), C(loopback), C(unix_untouched),
	C(fork), C(fork_connect_in_child), C(dup2_over), C(exec_inherit), C(exec_cloexec),
	C(select_high_fd), C(bulk), C(shutdown_rd), C(shutdown_bad), C(recv_dontwait),
	C(readv_writev), C(sendmsg_recvmsg), C(hold_many),
#undef C
};

/* ======================================================================
 * Peer
 * ====================================================================== */

struct conn_arg {
	int fd;
	int port;
};

static void linger0_close(int fd)
{
	struct linger lg = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static int ctl_connect(const char *ip, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int s = socket(AF_INET, SOCK_STREAM, 0);

	inet_pton(AF_INET, ip, &sa.sin_addr);
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(s);
		errno = e;
		return -1;
	}
	return s;
}

static void serve_ctl(int fd)
{
	char line[128] = { 0 }, ip[64], reply[128], buf[64];
	int port, n = 0, i, s;
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
		size_t total = 0;

		s = ctl_connect(ip, port);
		if (s < 0) {
			snprintf(reply, sizeof(reply), "ERR %s\n", ename(errno));
		} else {
			for (;;) {
				r = read(s, buf, sizeof(buf));
				if (r <= 0)
					break;
				total += r;
			}
			if (r < 0)
				snprintf(reply, sizeof(reply), "ERR %s\n", ename(errno));
			else
				snprintf(reply, sizeof(reply), "EOF %zu\n", total);
			close(s);
		}
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
	case P_RST:
		linger0_close(fd);
		break;
	case P_DATARST:
		write(fd, "data", 4);
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

static int run_peer(const char *bind_ip)
{
	static const int ports[] = { P_ECHO, P_FIN, P_RST, P_DATARST, P_COUNT, P_HOLD, P_CTL };
	struct pollfd pfds[7];
	int i, one = 1;

	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < 7; i++) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(ports[i]) };
		int s = socket(AF_INET, SOCK_STREAM, 0);

		inet_pton(AF_INET, bind_ip, &sa.sin_addr);
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 128) < 0) {
			fprintf(stderr, "peer: cannot listen on %s:%d: %s\n", bind_ip, ports[i],
				strerror(errno));
			return 1;
		}
		pfds[i] = (struct pollfd){ .fd = s, .events = POLLIN };
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		if (poll(pfds, 7, -1) < 0)
			continue;
		for (i = 0; i < 7; i++) {
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
		"usage: nk_semantics peer --bind ADDR\n"
		"       nk_semantics client --peer ADDR --self ADDR --other ADDR --blackhole ADDR\n"
		"                           [--case NAME[,NAME...]] [--list]\n");
	exit(2);
}

static void parse_ip(struct in_addr *a, const char *s)
{
	if (inet_pton(AF_INET, s, a) != 1) {
		fprintf(stderr, "bad address %s\n", s);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	const char *only = NULL, *bindip = NULL;
	bool list = false;
	size_t i;
	int a;

	setvbuf(stdout, NULL, _IOLBF, 0);
	self_exe = "/proc/self/exe";
	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "exec-child") && argc == 4) {
		parse_ip(&peer_ip, argv[3]);
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
		if (!strcmp(argv[a], "--peer"))
			parse_ip(&peer_ip, v);
		else if (!strcmp(argv[a], "--self"))
			parse_ip(&self_ip, v);
		else if (!strcmp(argv[a], "--other"))
			parse_ip(&other_ip, v);
		else if (!strcmp(argv[a], "--blackhole"))
			parse_ip(&bh_ip, v);
		else if (!strcmp(argv[a], "--case"))
			only = v;
		else if (!strcmp(argv[a], "--bind"))
			bindip = v;
		else
			usage();
		a++;
	}
	if (!strcmp(argv[1], "peer"))
		return bindip ? run_peer(bindip) : (usage(), 2);
	if (strcmp(argv[1], "client"))
		usage();
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (list) {
			printf("%s\n", cases[i].name);
			continue;
		}
		if (only) {
			const char *p = strstr(only, cases[i].name);
			size_t n = strlen(cases[i].name);

			if (!p || (p != only && p[-1] != ',') || (p[n] && p[n] != ','))
				continue;
		}
		result[0] = '\0';
		cases[i].fn();
		printf("%s: %s\n", cases[i].name, result);
	}
	return 0;
}
