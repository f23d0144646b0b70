// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libnkguest: the interposed BSD socket API.
 *
 * Each function looks the fd up first; fds that are not NetKernel sockets
 * (files, pipes, AF_UNIX, loopback sockets...) go straight to libc.  For
 * NetKernel sockets the state machine of nkguest.h decides: set-up
 * operations become requests on the control channel, data operations go to
 * the stream itself, and the few places where a byte stream and a TCP
 * socket differ (EOF after a reset, EPIPE, addresses) are translated so the
 * application sees exactly what Linux would have told it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "nkaddr.h"
#include "nkguest.h"

struct nk_real nk_real;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool nk_on;
static int nk_ready;	/* set when do_init() has finished */
#define STATUS_TIMEOUT_MS	300
static int log_fd = -1;

void nk_logf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	if (log_fd < 0)
		return;
	n = snprintf(buf, sizeof(buf), "libnkguest[%d]: ", (int)getpid());
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (nk_real.write(log_fd, buf, n) < 0)
		return;
}

#define RESOLVE(name) (*(void **)&nk_real.name = dlsym(RTLD_NEXT, #name))

static void do_init(void)
{
	const char *s;

	RESOLVE(socket);
	RESOLVE(close);
	RESOLVE(bind);
	RESOLVE(connect);
	RESOLVE(listen);
	RESOLVE(accept);
	RESOLVE(accept4);
	RESOLVE(getsockname);
	RESOLVE(getpeername);
	RESOLVE(setsockopt);
	RESOLVE(getsockopt);
	RESOLVE(shutdown);
	RESOLVE(socketpair);
	RESOLVE(read);
	RESOLVE(readv);
	RESOLVE(recv);
	RESOLVE(recvfrom);
	RESOLVE(recvmsg);
	RESOLVE(write);
	RESOLVE(writev);
	RESOLVE(sendfile);
	RESOLVE(sendfile64);
	RESOLVE(splice);
	RESOLVE(send);
	RESOLVE(sendto);
	RESOLVE(sendmsg);
	RESOLVE(dup);
	RESOLVE(dup2);
	RESOLVE(dup3);
	RESOLVE(fcntl);
	RESOLVE(ioctl);
	RESOLVE(epoll_ctl);
	RESOLVE(epoll_wait);
	RESOLVE(epoll_pwait);
	RESOLVE(epoll_pwait2);
	RESOLVE(poll);
	RESOLVE(ppoll);
	RESOLVE(select);
	RESOLVE(pselect);

	s = getenv("NK_DISABLE");
	nk_on = !(s && *s && strcmp(s, "0"));
	s = getenv("NK_LOG");
	if (s && *s && strcmp(s, "0")) {
		const char *path = getenv("NK_LOG_FILE");

		log_fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)
			      : nk_real.fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	}
	if (nk_on)
		nk_exec_restore();
	pthread_atfork(nks_atfork_prepare, nks_atfork_parent, nks_atfork_child);
	pthread_atfork(nk_ctl_atfork_prepare, nk_ctl_atfork_parent, nk_ctl_atfork_child);
	__atomic_store_n(&nk_ready, 1, __ATOMIC_RELEASE);
}

void nk_init(void)
{
	pthread_once(&init_once, do_init);
}

bool nk_enabled(void)
{
	return nk_on;
}

__attribute__((constructor)) static void nk_ctor(void)
{
	nk_init();
}

#define INIT() do { if (__builtin_expect(!__atomic_load_n(&nk_ready, __ATOMIC_ACQUIRE), 0)) nk_init(); } while (0)

/* Look up a NetKernel socket; NULL for everything else (and when off). */
static struct nk_sock *lookup(int fd)
{
	if (!nk_on || !nks_fd_tracked(fd))
		return NULL;
	return nks_get(fd);
}

static int fail(int e)
{
	errno = e;
	return -1;
}

/* accept(), recvfrom(): nothing at all without an address buffer, as on
 * Linux; getsockname() and getpeername() always write the length
 * (name_out()). */
static void copy_addr_out(struct sockaddr *addr, socklen_t *alen,
			  const struct sockaddr_storage *ss, socklen_t len)
{
	if (!addr || !alen)
		return;
	memcpy(addr, ss, *alen < len ? *alen : len);
	*alen = len;
}

static void name_out(struct sockaddr *addr, socklen_t *alen, const struct sockaddr_storage *ss,
		     socklen_t len)
{
	if (*alen)
		memcpy(addr, ss, *alen < len ? *alen : len);
	*alen = len;
}

void nk_set_addr(struct sockaddr_storage *ss, socklen_t *len, const struct nk_addr *na,
		 int domain)
{
	struct nk_addr a = *na;
	int n;

	/* An AF_INET6 socket reports IPv4 peers as v4-mapped, like Linux. */
	if (domain == AF_INET6 && a.family == NK_AF_INET) {
		uint8_t v4[4];

		memcpy(v4, a.addr, 4);
		memset(a.addr, 0, 16);
		a.addr[10] = a.addr[11] = 0xff;
		memcpy(a.addr + 12, v4, 4);
		a.family = NK_AF_INET6;
	}
	n = nk_addr_to_sockaddr(&a, ss);
	*len = n > 0 ? (socklen_t)n : 0;
}

static bool is_nonblock(int fd)
{
	int fl = nk_real.fcntl(fd, F_GETFL);

	return fl >= 0 && (fl & O_NONBLOCK);
}

/* Options that belong to the guest end of the stream, not the NSM socket. */
static bool opt_is_local(int level, int name)
{
	return level == SOL_SOCKET &&
	       (name == SO_RCVTIMEO_OLD || name == SO_SNDTIMEO_OLD ||
		name == SO_RCVTIMEO_NEW || name == SO_SNDTIMEO_NEW);
}

/*
 * Options whose outcome on a connected TCP socket is known without asking
 * are posted, not waited for (proto.h, NK_HELLO_F_POST): Linux takes
 * TCP_CORK, TCP_NODELAY and SO_KEEPALIVE with any int in every state, and
 * TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT within their ranges (the
 * values outside them wait for the NSM's EINVAL). nginx's tcp_nopush
 * turns TCP_CORK on and off around every response; redis sets the other
 * four on every connection it accepts. The NSM puts an option behind the
 * bytes in the socket's stream, except one that holds data back
 * (TCP_CORK on, TCP_NODELAY off): that one is posted only when the NSM
 * has read every byte written before it (the stream's SIOCOUTQ is 0),
 * else those bytes could be held with the ones after it; a vsock
 * stream's SIOCOUTQ says only what left the guest, so there it waits.
 */
static bool opt_postable(const struct nk_sock *sk, int fd, int level, int name,
			 const void *val, socklen_t len)
{
	int v, unread;

	if (sk->state != NKS_CONNECTED || sk->type != SOCK_STREAM || !val || len < sizeof(v))
		return false;
	memcpy(&v, val, sizeof(v));
	if (level == SOL_SOCKET)
		return name == SO_KEEPALIVE;
	if (level != IPPROTO_TCP)
		return false;
	switch (name) {
	case TCP_KEEPIDLE:
	case TCP_KEEPINTVL:
		return v >= 1 && v <= 32767;	/* MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL */
	case TCP_KEEPCNT:
		return v >= 1 && v <= 127;	/* MAX_TCP_KEEPCNT */
	case TCP_CORK:
	case TCP_NODELAY:
		if (name == TCP_CORK ? !v : v)
			return true;
		return fd >= 0 && nk_transport_is_unix() &&
		       !nk_real.ioctl(fd, SIOCOUTQ, &unread) && !unread;
	default:
		return false;
	}
}

static int sock_ctl_call(struct nk_sock *sk, int fd, uint8_t op, void *req, size_t reqlen,
			void *rep, size_t replen);

/* fd: the socket's stream, or -1 (nothing is posted then) */
static int remote_setsockopt(struct nk_sock *sk, int fd, int level, int name, const void *val,
			     socklen_t len)
{
	struct nk_opt_req req = {
		.token = sk->token,
		.level = level,
		.name = name,
		.optlen = len,
	};

	if (len > NK_OPT_MAX) {
		nk_logf("setsockopt level %d name %d: value of %u bytes is too large", level,
			name, len);
		return -EINVAL;
	}
	if (len && !val)
		return -EFAULT;
	memcpy(req.val, val, len);
	if (opt_postable(sk, fd, level, name, val, len) && !nk_ctl_post_opt(sk->nsm, &req))
		return 0;
	if (fd < 0)
		return nk_ctl_call(sk->nsm, NK_OP_SETSOCKOPT, &req, sizeof(req), NULL, 0);
	return sock_ctl_call(sk, fd, NK_OP_SETSOCKOPT, &req, sizeof(req), NULL, 0);
}

/*
 * An option of a connected socket the NSM no longer knows (ENOTSOCK: the
 * connection ended and the NSM closed its socket; Linux keeps a socket
 * until close and takes options on it): a fresh local socket of the same
 * kind takes the call instead, so that it is checked as Linux checks it
 * and reads back as a closed socket's.  Returns 0 or -errno.
 */
static int ended_sockopt(const struct nk_sock *sk, bool set, int level, int name, void *val,
			 socklen_t *len)
{
	int s = nk_real.socket(sk->domain, sk->type | SOCK_CLOEXEC, 0), ret;

	if (s < 0)
		return -errno;
	ret = set ? nk_real.setsockopt(s, level, name, val, *len) :
		    nk_real.getsockopt(s, level, name, val, len);
	ret = ret ? -errno : 0;
	nk_real.close(s);
	return ret;
}

static void save_opt(struct nk_sock *sk, int level, int name, const void *val, socklen_t len)
{
	int i;

	if (len > NKS_SAVED_OPT_MAX) {
		nk_logf("option level %d name %d: %u bytes is too large to keep", level, name, len);
		return;
	}
	for (i = 0; i < sk->nopts; i++)
		if (sk->opts[i].level == level && sk->opts[i].name == name)
			break;
	if (i == sk->nopts) {
		if (sk->nopts == NKS_SAVED_OPTS) {
			nk_logf("too many options on one socket; level %d name %d not kept",
				level, name);
			return;
		}
		sk->nopts++;
	}
	sk->opts[i].level = level;
	sk->opts[i].name = name;
	sk->opts[i].len = len;
	memcpy(sk->opts[i].val, val, len);
}

/*
 * An option set before the socket existed on the NSM (Linux's own check
 * took it) that the NSM does not take (ENOPROTOOPT: not in its list, or
 * not in its kernel): on Linux the setsockopt() succeeded, so the socket
 * goes on without it rather than failing the connect, bind or send that
 * made it (docs/compat.md).  True if err is that; option i goes in *drop.
 */
static bool opt_unsupported(const struct nk_sock *sk, int i, int err, uint32_t *drop)
{
	if (err != ENOPROTOOPT)
		return false;
	nk_logf("option level %d name %d, set before the socket existed on the host, is not "
		"supported by the host's NSM: the socket goes on without it",
		sk->opts[i].level, sk->opts[i].name);
	*drop |= 1u << i;
	return true;
}

/* Forget the options opt_unsupported() put in drop, so that no later
 * socket made for the fd asks again. */
static void opts_drop(struct nk_sock *sk, uint32_t drop)
{
	int i, n = 0;

	for (i = 0; i < sk->nopts; i++)
		if (!(drop & (1u << i)))
			sk->opts[n++] = sk->opts[i];
	sk->nopts = n;
}

/* Append one request to a batch of pipelined messages. */
static size_t batch_add(uint8_t *buf, size_t off, uint8_t op, const void *body, size_t len)
{
	struct nk_hdr h = {
		.magic = NK_PROTO_MAGIC,
		.version = NK_PROTO_VERSION,
		.op = op,
		.len = sizeof(h) + len,
	};

	memcpy(buf + off, &h, sizeof(h));
	memcpy(buf + off + sizeof(h), body, len);
	return off + sizeof(h) + len;
}

/*
 * Send HELLO, the options set before promotion and CONNECT to dst in one
 * write (NK_HELLO_F_SETUP), then read their replies: one round trip to the
 * NSM instead of one per request.  *cerr: the CONNECT's own outcome.
 */
#define NK_CONNECT_NOT_SENT	(-1)

static int hello_connect(struct nk_sock *sk, int s, struct nk_hello_req *req,
			 struct nk_hello_rep *rep, const struct nk_addr *dst, int *cerr)
{
	uint8_t buf[sizeof(struct nk_hdr) * (NKS_SAVED_OPTS + 2) + sizeof(*req) +
		    NKS_SAVED_OPTS * sizeof(struct nk_opt_req) + sizeof(struct nk_addr_req)];
	struct nk_addr_req creq = { .addr = *dst };
	int i, ret, nopt = 0, operr = 0, sent[NKS_SAVED_OPTS];
	uint32_t drop = 0;
	size_t off;

	req->flags = NK_HELLO_F_SETUP;
	off = batch_add(buf, 0, NK_OP_HELLO, req, sizeof(*req));
	for (i = 0; i < sk->nopts; i++) {
		struct nks_opt *o = &sk->opts[i];
		struct nk_opt_req oreq = { .level = o->level, .name = o->name, .optlen = o->len };

		if (opt_is_local(o->level, o->name))
			continue;
		memcpy(oreq.val, o->val, o->len);
		off = batch_add(buf, off, NK_OP_SETSOCKOPT, &oreq, sizeof(oreq));
		sent[nopt++] = i;
	}
	off = batch_add(buf, off, NK_OP_CONNECT, &creq, sizeof(creq));
	ret = nk_send_all(s, buf, off);
	if (!ret)
		ret = nk_msg_recv(s, NK_OP_HELLO, rep, sizeof(*rep));
	if (ret == -ECONNRESET)
		return -EPROTONOSUPPORT;	/* closed unanswered: an NSM without the flag */
	for (i = 0; i < nopt && !ret; i++) {
		ret = nk_msg_recv(s, NK_OP_SETSOCKOPT, NULL, 0);
		if (ret > 0 && opt_unsupported(sk, sent[i], ret, &drop))
			ret = 0;	/* the NSM connects all the same */
		if (ret > 0) {
			if (!operr)
				nk_logf("an option set before %s could not be applied by the host: %s",
					"connect", strerror(ret));
			operr = operr ? operr : ret;
			ret = 0;
		}
	}
	opts_drop(sk, drop);
	if (!ret) {
		ret = nk_msg_recv(s, NK_OP_CONNECT, NULL, 0);
		if (ret >= 0) {
			*cerr = ret;
			ret = 0;
		}
	}
	if (!ret && operr)
		ret = operr;	/* the stream is closed: its connection goes */
	return ret > 0 ? -ret : ret;
}

/* The host's NSM closed a pipelined set-up unanswered (an NSM older than
 * NK_HELLO_F_SETUP): this process connects the sequential way from then on.
 * no_offer_flag: the same for NK_HELLO_F_OFFER (accept() then waits for
 * the NSM's reply). */
static bool no_setup_flag, no_offer_flag;

/* O_ASYNC on fd: if it is readable already, the signal its owner would
 * have had (F_SETSIG's, else SIGIO). */
static void async_kick(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct f_owner_ex own;
	int sig;

	if (nk_real.poll(&p, 1, 0) != 1 || nk_real.fcntl(fd, F_GETOWN_EX, &own) || !own.pid)
		return;
	sig = nk_real.fcntl(fd, F_GETSIG);
	if (sig <= 0)
		sig = SIGIO;
	if (own.type == F_OWNER_TID)
		syscall(SYS_tgkill, getpid(), own.pid, sig);
	else
		kill(own.type == F_OWNER_PGRP ? -own.pid : own.pid, sig);
}

/*
 * Turn a fresh local socket into a NetKernel socket: open a stream, HELLO,
 * replay the options, then put the stream in the application's fd.  With
 * dst (a TCP connect), the set-up is pipelined: hello_connect(); *cerr is
 * then the CONNECT's outcome, or NK_CONNECT_NOT_SENT when the NSM did not
 * take pipelined requests and the caller has to send the CONNECT itself.
 * setup, if not NULL: requests for the new socket (its token is known)
 * before the stream takes the fd; if it fails, the fd is left as it was.
 */
static int promote_stream(struct nk_sock *sk, int fd, bool again, const struct nk_addr *dst,
			  int *cerr, int (*setup)(struct nk_sock *))
{
	struct nk_hello_req req = { .kind = NK_HELLO_SOCKET, .type = NK_SOCK_STREAM };
	struct timeval notimeo = { 0 };
	struct nk_hello_rep rep = { 0 };
	bool setup_refused = false;
	uint64_t old_token = sk->token;
	uint32_t old_nsm = sk->nsm;
	uint8_t old_accept_op = sk->accept_op;
	struct stat old_st;
	int fl, fdfl, s, ret, i, dom = 0, fds[16], nfds, j, k;
	uint32_t drop = 0;
	socklen_t dl = sizeof(dom);

	/* The fd must still be the socket we recorded. */
	if (!again &&
	    (nk_real.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) < 0 || dom != sk->domain))
		return -EBADF;
	fl = nk_real.fcntl(fd, F_GETFL);
	fdfl = nk_real.fcntl(fd, F_GETFD);
	if (fl < 0 || fdfl < 0)
		return -errno;

	req.family = sk->domain == AF_INET ? NK_AF_INET : NK_AF_INET6;
	req.type = sk->type == SOCK_DGRAM ? NK_SOCK_DGRAM : NK_SOCK_STREAM;
	req.pid = nk_pid();
	s = nk_transport_open();
	if (s < 0)
		return s;
	if (dst && !__atomic_load_n(&no_setup_flag, __ATOMIC_RELAXED)) {
		ret = hello_connect(sk, s, &req, &rep, dst, cerr);
		if (ret == -EPROTONOSUPPORT) {
			setup_refused = true;	/* remembered once the plain way works */
			nk_real.close(s);
			req.flags = 0;
			s = nk_transport_open();
			if (s < 0)
				return s;
			dst = NULL;
			*cerr = NK_CONNECT_NOT_SENT;
		} else if (ret) {
			goto out_close;
		} else {
			sk->token = rep.token;
			sk->nsm = rep.nsm_id;
			sk->accept_op = NK_OP_ACCEPT_READY;
			goto remote_opts_done;
		}
	} else if (dst) {
		*cerr = NK_CONNECT_NOT_SENT;
	}
	/* A TCP socket that may listen asks for ACCEPT_OFFER records. */
	if (!dst && sk->type == SOCK_STREAM && !__atomic_load_n(&no_offer_flag, __ATOMIC_RELAXED))
		req.flags = NK_HELLO_F_OFFER;
	ret = nk_hello(s, &req, &rep);
	for (i = 0; ret == -ECONNRESET && req.flags && i < 2; i++) {
		/* Closed unanswered: an NSM without the flag, if the same
		 * HELLO is answered without it but not with it once more
		 * (the first close may have been a restart or a move), and
		 * the answer does not say it takes the flag. */
		nk_real.close(s);
		if (i)
			req.flags = 0;
		s = nk_transport_open();
		if (s < 0)
			return s;
		ret = nk_hello(s, &req, &rep);
		if (!ret && !req.flags && !(rep.flags & NK_HELLO_F_OFFER) &&
		    !__atomic_exchange_n(&no_offer_flag, true, __ATOMIC_RELAXED))
			nk_logf("the host's NSM does not offer accepted connections; accept() waits for its reply");
	}
	if (ret > 0)
		ret = -ret;
	if (ret)
		goto out_close;
	if (setup_refused && !(rep.flags & NK_HELLO_F_SETUP) &&
	    !__atomic_exchange_n(&no_setup_flag, true, __ATOMIC_RELAXED))
		nk_logf("the host's NSM does not take pipelined set-up requests; connecting with one request at a time");
	sk->token = rep.token;
	sk->nsm = rep.nsm_id;
	if (sk->type == SOCK_STREAM)
		sk->accept_op = req.flags & NK_HELLO_F_OFFER ? NK_OP_ACCEPT_OFFER
							     : NK_OP_ACCEPT_READY;

	for (i = 0; i < sk->nopts; i++) {
		struct nks_opt *o = &sk->opts[i];

		if (opt_is_local(o->level, o->name))
			continue;
		ret = remote_setsockopt(sk, -1, o->level, o->name, o->val, o->len);
		if (ret && opt_unsupported(sk, i, -ret, &drop)) {
			ret = 0;
			continue;
		}
		if (ret) {
			nk_logf("option level %d name %d set before %s could not be applied by the host: %s",
				o->level, o->name, "promotion", strerror(-ret));
			opts_drop(sk, drop);
			goto out_close;
		}
	}
	opts_drop(sk, drop);
remote_opts_done:
	/* Handshake timeout off; the application's own timeouts on. */
	nk_real.setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &notimeo, sizeof(notimeo));
	for (i = 0; i < sk->nopts; i++) {
		struct nks_opt *o = &sk->opts[i];

		if (opt_is_local(o->level, o->name))
			nk_real.setsockopt(s, o->level, o->name, o->val, o->len);
	}
	if (fl & O_ASYNC) {
		/* signal-driven I/O: the owner and signal, then the flag (as
		 * the old file had them; the new one would have none) */
		struct f_owner_ex own;
		int sig = nk_real.fcntl(fd, F_GETSIG);

		if (!nk_real.fcntl(fd, F_GETOWN_EX, &own))
			nk_real.fcntl(s, F_SETOWN_EX, &own);
		if (sig > 0)
			nk_real.fcntl(s, F_SETSIG, sig);
	}
	if ((fl & (O_NONBLOCK | O_ASYNC)) &&
	    nk_real.fcntl(s, F_SETFL, fl & (O_NONBLOCK | O_ASYNC)) < 0) {
		ret = -errno;
		goto out_close;
	}
	/* a record that came before O_ASYNC was on (a pipelined connect's
	 * outcome): its signal, as Linux signals the connect's completion */
	if ((fl & O_ASYNC) && dst)
		async_kick(s);
	if (setup && (ret = setup(sk)))
		goto out_close;
	/* The fds of this process that hold the old file (the local socket,
	 * or the stream that ended): this one and its dup()s, which get the
	 * stream too, each with its own close-on-exec.  (Copies in other
	 * processes cannot be reached: docs/compat.md.) */
	if (fstat(fd, &old_st) < 0)
		memset(&old_st, 0, sizeof(old_st));
	nfds = nks_fds_of(sk, fds + 1, 15);
	fds[0] = fd;
	for (k = j = 1; k <= nfds; k++) {
		struct stat ost;

		if (fds[k] != fd && !fstat(fds[k], &ost) && ost.st_dev == old_st.st_dev &&
		    ost.st_ino == old_st.st_ino)
			fds[j++] = fds[k];
	}
	nfds = j;
	/* The old file leaves the epoll sets under those fds (a copy of it
	 * in another process would keep it there: for an ended stream,
	 * readable for ever); the new one joins them below. */
	for (i = 0; i < sk->nregs; i++)
		for (k = 0; k < nfds; k++)
			if (sk->regs[i].fd == fds[k])
				nk_real.epoll_ctl(sk->regs[i].epfd, EPOLL_CTL_DEL, fds[k], NULL);
	if (nk_real.dup3(s, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
		ret = -errno;
		goto out_epoll;	/* the fds hold the old file still: back in their sets */
	}
	nk_real.close(s);
	s = -1;
	for (k = 0; k < nfds; k++) {
		int ofl;

		if (fds[k] == fd)
			continue;
		ofl = nk_real.fcntl(fds[k], F_GETFD);
		nk_real.dup3(fd, fds[k], ofl >= 0 && (ofl & FD_CLOEXEC) ? O_CLOEXEC : 0);
	}
out_epoll:
	for (i = 0; i < sk->nregs; i++) {
		struct nks_epreg *r = &sk->regs[i];

		for (k = 0; k < nfds; k++) {
			if (r->fd != fds[k])
				continue;
			if (nk_real.epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->fd, &r->ev) < 0 &&
			    errno == EEXIST)
				nk_real.epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->fd, &r->ev);
		}
	}
	if (s >= 0)
		goto out_close;	/* dup3 failed */
	nks_set_state(sk, NKS_SETUP);
	__atomic_add_fetch(&sk->gen, 1, __ATOMIC_RELEASE);
	return 0;

out_close:
	nk_real.close(s);
	/* still the socket it was (the new one ends with its stream) */
	sk->token = old_token;
	sk->nsm = old_nsm;
	sk->accept_op = old_accept_op;
	return ret;
}

static int promote(struct nk_sock *sk, int fd)
{
	return promote_stream(sk, fd, false, NULL, NULL, NULL);
}

/*
 * A listener's stream ended: its NSM died (nkd restarts it) or dropped the
 * VM (a move).  Listen again with the same address, backlog and options,
 * in the same fd, so a server keeps serving across an NSM restart or a
 * move.  An attempt that lands on an NSM in the middle of a move (it takes
 * the new stream or channel, then drops the VM) is tried again after a
 * short pause (reattach()).  When listening again is
 * not possible (another process sharing the listener got the port first),
 * the fd becomes a quiet stream that is never readable, so an event loop
 * does not spin on a dead listener; the log says what happened.
 */
/* BIND the socket's new token to addr (a set-up step of promote_stream()). */
static int bind_again(struct nk_sock *sk, const struct sockaddr_storage *addr, socklen_t len)
{
	struct nk_addr_req req = { .token = sk->token };
	struct nk_addr_rep rep;
	int ret = nk_addr_from_sockaddr(&req.addr, (const struct sockaddr *)addr, len);

	return ret ? ret : nk_ctl_call(sk->nsm, NK_OP_BIND, &req, sizeof(req), &rep, sizeof(rep));
}

/* A listener shut down and listening again: bound as Linux keeps it (the
 * port only if bind() named it; the address, as bound). */
static int relisten_shut_setup(struct nk_sock *sk)
{
	struct nk_sock_req lreq = { .token = sk->token, .arg = sk->backlog };
	struct sockaddr_storage a = sk->local;
	int ret = 0;

	if (!sk->port_given)
		((struct sockaddr_in *)&a)->sin_port = 0;	/* sin6_port too */
	if (sk->local_len)
		ret = bind_again(sk, &a, sk->local_len);
	return ret ? ret : nk_ctl_call(sk->nsm, NK_OP_LISTEN, &lreq, sizeof(lreq), NULL, 0);
}

/* The fd (and the socket's token) change only once the new socket listens. */
static int relisten_setup(struct nk_sock *sk)
{
	struct nk_sock_req lreq = { .token = sk->token, .arg = sk->backlog };
	int ret = 0;

	if (sk->local_len)	/* unbound: the NSM binds it at the listen */
		ret = bind_again(sk, &sk->local, sk->local_len);
	return ret ? ret : nk_ctl_call(sk->nsm, NK_OP_LISTEN, &lreq, sizeof(lreq), NULL, 0);
}

/*
 * The host went away under an attempt at making a socket again (not: the
 * port is taken, a timeout).  ENOTSOCK: the NSM dropped the VM, with the
 * new socket, and took it back.
 */
static bool reattach_transient(int err)
{
	switch (err) {
	case ENOTSOCK:
	case ECONNRESET:
	case ECONNABORTED:
	case ECONNREFUSED:
	case ENOTCONN:
	case EPIPE:
	case ENOENT:
		return true;
	default:
		return false;
	}
}

/*
 * A socket lost for good: its fd becomes a stream that is never readable,
 * so that an event loop does not spin on it; the library answers its
 * calls (sk->dead).
 */
static void fd_make_quiet(struct nk_sock *sk, int fd)
{
	int sv[2], fl, fdfl;

	if (sk->quiet_peer > 0 || nk_real.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return;
	fl = nk_real.fcntl(fd, F_GETFL);
	fdfl = nk_real.fcntl(fd, F_GETFD);
	if (fl >= 0 && (fl & O_NONBLOCK))
		nk_real.fcntl(sv[0], F_SETFL, O_NONBLOCK);
	nk_real.dup3(sv[0], fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
	nk_real.close(sv[0]);
	sk->quiet_peer = sv[1];	/* kept open: the fd is never readable */
}

/*
 * Make the socket again on the VM's NSM, in the same fd
 * (promote_stream(), with setup), until that succeeds or fails for good,
 * with pauses of about a second in all between attempts that met a move
 * (reattach_transient()), and no new attempt 3 s after the first began
 * (an attempt may wait for an NSM that does not answer); sk->lock held.
 * The socket is in state st after each attempt (promote_stream() leaves a
 * new one in SETUP).  what: for the log.  -EBADF: the program closed the
 * fd meanwhile; -ESHUTDOWN: it shut the listener down.
 */
static int reattach(struct nk_sock *sk, int fd, int (*setup)(struct nk_sock *),
		    enum nks_state st, const char *what)
{
	static const unsigned int pause_ms[] = { 10, 20, 50, 100, 200, 300, 400 };
	int64_t t0 = nk_mono_ms();
	unsigned int i;
	int ret;

	for (i = 0;; i++) {
		ret = promote_stream(sk, fd, true, NULL, NULL, setup);
		nks_set_state(sk, st);
		if (!ret || !reattach_transient(-ret) || i == sizeof(pause_ms) / sizeof(pause_ms[0]) ||
		    nk_mono_ms() - t0 + pause_ms[i] > 3000)
			return ret;
		nk_logf("fd %d: %s failed (%s); trying again in %u ms", fd, what, strerror(-ret),
			pause_ms[i]);
		nanosleep(&(struct timespec){ 0, pause_ms[i] * 1000000L }, NULL);
		/* close() and shutdown() do not wait for sk->lock: the
		 * program may have closed the fd (and reused the number) or
		 * shut the socket down meanwhile */
		if (!nks_fd_is(fd, sk))
			return -EBADF;
		if (sk->shut)
			return -ESHUTDOWN;
	}
}

static int relisten(struct nk_sock *sk, int fd)
{
	int ret;

	ret = reattach(sk, fd, relisten_setup, NKS_LISTENING, "listening again");
	if (ret == -ESHUTDOWN)
		return -EINVAL;	/* as accept() on a shut listener */
	if (ret == -EBADF)
		return ret;
	if (!ret) {
		nk_logf("fd %d: listener re-established after its NSM restarted or the VM moved", fd);
		return 0;
	}
	nk_logf("fd %d: listener lost with its NSM and not re-established (%s); re-create it",
		fd, strerror(-ret));
	fd_make_quiet(sk, fd);
	sk->dead = true;
	return ret;
}

/* errno for a failed promotion, as the operation would have seen it. */
static int promote_errno(int ret, int op_default)
{
	switch (-ret) {
	case ENOENT:
	case ECONNREFUSED:
	case ENOTCONN:
	case ECONNRESET:
	case ETIMEDOUT:
	case EPROTO:
	case ENOTSOCK:
		return op_default;	/* the host is not there (or lost the socket) */
	default:
		return -ret;
	}
}

/* ---- connect completion ------------------------------------------------- */

/* While connecting, epoll sets wait for the CONNECTED record (EPOLLIN)
 * rather than for EPOLLOUT, which the stream would report at once. */
static void epoll_swap_out(struct nk_sock *sk)
{
	int i;

	for (i = 0; i < sk->nregs; i++) {
		struct nks_epreg *r = &sk->regs[i];
		struct epoll_event ev = r->ev;

		if (!(ev.events & EPOLLOUT))
			continue;
		ev.events = (ev.events & ~EPOLLOUT) | EPOLLIN;
		nk_real.epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->fd, &ev);
	}
}

void nks_epoll_restore(struct nk_sock *sk)
{
	int i;

	for (i = 0; i < sk->nregs; i++) {
		struct nks_epreg *r = &sk->regs[i];

		nk_real.epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->fd, &r->ev);
	}
}

int nks_finish_connect(struct nk_sock *sk, int fd, int timeout_ms)
{
	char buf[sizeof(struct nk_hdr) + sizeof(struct nk_connected_rec)];
	struct nk_hdr *h = (struct nk_hdr *)buf;
	struct nk_connected_rec *rec = (void *)(buf + sizeof(*h));
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (sk->state != NKS_CONNECTING)
		return 1;
	for (;;) {
		/* The NSM writes the record whole; a part of it (never seen
		 * on a Unix stream) is completed below. */
		n = nk_real.recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0)
			break;
		if (n == 0) {
			/* The host went away mid-connect. */
			sk->pending_err = ECONNREFUSED;
			nks_set_state(sk, NKS_SETUP);
			nks_epoll_restore(sk);
			return 1;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (!timeout_ms)
			return 0;
		n = nk_real.poll(&pfd, 1, timeout_ms);
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
	}
	if (n < (ssize_t)sizeof(buf) && nk_recv_all(fd, buf + n, sizeof(buf) - (size_t)n) == 0)
		n = sizeof(buf);
	if (n != (ssize_t)sizeof(buf) || nk_hdr_check(h, 1) < 0 || h->op != NK_OP_CONNECTED ||
	    h->err < 0) {
		nk_logf("fd %d: bad CONNECTED record from the host", fd);
		sk->pending_err = EPROTO;
		nks_set_state(sk, NKS_SETUP);
		nks_epoll_restore(sk);
		return 1;
	}
	if (h->err) {
		sk->pending_err = h->err;
		nks_set_state(sk, NKS_SETUP);
	} else {
		nk_set_addr(&sk->local, &sk->local_len, &rec->local, sk->domain);
		nk_set_addr(&sk->peer, &sk->peer_len, &rec->peer, sk->domain);
		nks_set_state(sk, NKS_CONNECTED);
	}
	nks_epoll_restore(sk);
	return 1;
}

/* Settle a connecting socket before a data operation.  Returns 0 when the
 * socket is connected, else -errno (EAGAIN: still connecting). */
static int settle_connect(struct nk_sock *sk, int fd)
{
	int ret;

	pthread_mutex_lock(&sk->lock);
	ret = nks_finish_connect(sk, fd, is_nonblock(fd) ? 0 : -1);
	if (ret == 0)
		ret = -EAGAIN;
	else if (ret == 1 && sk->state == NKS_CONNECTED)
		ret = 0;
	else if (ret == 1) {
		ret = -(sk->pending_err ? sk->pending_err : ENOTCONN);
		sk->pending_err = 0;
	}
	pthread_mutex_unlock(&sk->lock);
	return ret;
}

/* ---- end of stream ------------------------------------------------------ */

/*
 * After EOF: is the host's receiving direction still open (a FIN: the NSM
 * shut only its sending side) or closed too (a reset, an error, or a dead
 * NSM)?  The protocol signals it with the stream's shutdown directions;
 * each transport shows them its own way: an AF_UNIX stream raises POLLHUP
 * when the peer closed both ways, an AF_VSOCK stream refuses even an empty
 * send (EPIPE) once the peer shut its receiving side.  Both are checked.
 */
static bool host_still_receives(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLRDHUP };

	if (nk_real.poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP))
		return false;
	if (nk_real.send(fd, "", 0, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE)
		return false;
	return true;
}

/* STATUS of sk's socket, waiting briefly: a dead NSM never answers. */
static int sock_status(const struct nk_sock *sk, struct nk_status_rep *rep)
{
	struct nk_sock_req req = { .token = sk->token };

	return nk_ctl_call_timeout(sk->nsm, NK_OP_STATUS, &req, sizeof(req), rep, sizeof(*rep),
				   STATUS_TIMEOUT_MS);
}

/*
 * The stream ended (read gave 0, or write gave EPIPE).  A FIN from the
 * peer leaves the stream open (the NSM only shut its write side); a reset
 * closes it, and then the NSM tells us why.  Returns the errno to report
 * once (ECONNRESET...), or 0 for an orderly end.
 */
static int stream_end_reason(struct nk_sock *sk, int fd, bool for_write)
{
	struct nk_status_rep rep;
	int e;

	pthread_mutex_lock(&sk->lock);
	/* a write that found the stream closed after an orderly end was
	 * seen: a reset came since (the NSM closes the stream for it), whose
	 * error this write takes, as Linux's write takes sk_err */
	if (for_write && sk->eof_err == 0 && !sk->eof_reported)
		sk->eof_err = -1;
	if (sk->eof_err < 0) {
		if (!for_write && host_still_receives(fd)) {
			e = 0;	/* FIN: the stream stays open */
		} else {
			/* A live NSM answers at once; a dead one (all its
			 * streams closed together) does not, and then the
			 * connection is gone for good: ECONNRESET. */
			e = sock_status(sk, &rep) ? ECONNRESET : rep.sock_err;
		}
		sk->eof_err = e;
	}
	e = sk->eof_err;
	/* EPIPE is a reset after the peer's FIN (in CLOSE_WAIT): Linux's
	 * read gives EOF and leaves the error to the next write. */
	if (!for_write && e == EPIPE)
		e = 0;
	if (e && sk->eof_reported)
		e = 0;
	if (e)
		sk->eof_reported = true;
	pthread_mutex_unlock(&sk->lock);
	return e;
}

/*
 * SO_ERROR of a connected stream: the relay takes the TCP socket's error
 * as it happens, and STATUS says it (while the NSM still passes on what
 * TCP received, and after).  Reported once, as Linux's sk_err is consumed;
 * reads then end in EOF and writes say EPIPE, as on Linux.  Called with
 * sk->lock held; 0 when the NSM cannot tell.
 */
static int stream_so_error(struct nk_sock *sk, int fd)
{
	struct nk_status_rep rep;

	/* unknown, or an orderly end that a later reset may follow (EPIPE);
	 * a stream the NSM has not closed had no reset or error (those close
	 * it), so the answer is 0 without asking (nginx asks after every
	 * connect to an upstream) */
	if (sk->eof_err <= 0) {
		if (host_still_receives(fd) || sock_status(sk, &rep) || !rep.sock_err)
			return 0;
		sk->eof_err = rep.sock_err;
	}
	if (!sk->eof_err || sk->eof_reported)
		return 0;
	sk->eof_reported = true;
	return sk->eof_err;
}

/*
 * Has a connected stream's connection ended both ways (a reset, or FINs
 * both ways: Linux's socket is then in state CLOSE, and getpeername and
 * shutdown say ENOTCONN)?  The stream tells when it may have (the host
 * no longer receives: a closed stream, or the NSM's end shut after a
 * reset, or our own write side shut), and then STATUS decides.  Called
 * with sk->lock held.
 */
static bool stream_conn_ended(struct nk_sock *sk, int fd)
{
	struct nk_status_rep rep;
	int ret;

	if (sk->type != SOCK_STREAM || sk->state != NKS_CONNECTED)
		return false;
	if (sk->eof_err > 0 || sk->conn_ended)
		return true;	/* a reset (seen by a read, a write or SO_ERROR) */
	if (host_still_receives(fd))
		return false;
	ret = sock_status(sk, &rep);
	if (ret == -ETIMEDOUT)
		return false;	/* a busy NSM cannot tell: not ended */
	/* ENOTSOCK: ended and forgotten; ECONNRESET: the NSM is gone */
	sk->conn_ended = ret || rep.state == NK_STATE_CLOSED || rep.sock_err;
	return sk->conn_ended;
}

/* After a read of 0 bytes on a connected stream. */
static ssize_t read_eof(struct nk_sock *sk, int fd)
{
	int e = stream_end_reason(sk, fd, false);

	return e ? fail(e) : 0;
}

/* After EPIPE writing to a connected stream.  The stream was written with
 * MSG_NOSIGNAL; raise SIGPIPE as the TCP socket would have. */
static ssize_t write_epipe(struct nk_sock *sk, int fd, int flags)
{
	int e = stream_end_reason(sk, fd, true);

	if (e && e != EPIPE)
		return fail(e);
	if (!(flags & MSG_NOSIGNAL))
		pthread_kill(pthread_self(), SIGPIPE);
	return fail(EPIPE);
}

/*
 * A connected stream's send buffer starts at the system default
 * (wmem_default, about 208 KiB), where a TCP socket's autotunes up to
 * tcp_wmem's maximum (4 MiB by default): a bulk sender found it full every
 * couple of hundred KiB, and each time made two more system calls and
 * waited for a wakeup.  At the first write of 64 KiB or more, or the first
 * that finds the stream full, raise it to NK_STREAM_SNDBUF (the kernel
 * caps it at twice net.core.wmem_max), unless the application chose its
 * own SO_SNDBUF.  Short exchanges never pay the call.
 */
#define NK_STREAM_SNDBUF	(4 << 20)
#define NK_STREAM_BULK		65536

static void stream_grow(struct nk_sock *sk, int fd)
{
	int v = NK_STREAM_SNDBUF / 2;	/* the kernel doubles it */
	int e = errno;

	sk->sndbuf_fixed = true;
	nk_real.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	errno = e;
}

/* Before a write of len bytes on a connected stream. */
static inline void stream_pre_send(struct nk_sock *sk, int fd, size_t len)
{
	if (!sk->sndbuf_fixed && len >= NK_STREAM_BULK)
		stream_grow(sk, fd);
}

/*
 * After it: n bytes went, or errno says why none did.  Returns the write's
 * result, with EPIPE turned into the reason the stream ended (SIGPIPE as
 * flags and the reason say, write_epipe()).
 */
static ssize_t stream_sent(struct nk_sock *sk, int fd, size_t len, ssize_t n, int flags)
{
	if (!sk->sndbuf_fixed && (n < 0 ? errno == EAGAIN : (size_t)n < len))
		stream_grow(sk, fd);
	if (n < 0 && errno == EPIPE)
		return write_epipe(sk, fd, flags);
	return n;
}

/* TCP urgent data is not carried (docs/compat.md): a MSG_OOB byte goes
 * inline, said in the log, never lost. */
static int stream_send_flags(int fd, int flags)
{
	if (flags & MSG_OOB) {
		nk_logf("send(fd %d): MSG_OOB (TCP urgent data) is not carried: sent inline", fd);
		flags &= ~MSG_OOB;
	}
	return flags | MSG_NOSIGNAL;
}

/* Common gate for data operations.  Returns 1 to go ahead on the stream,
 * or 0 with *res set to the result to return. */
static int data_gate(struct nk_sock *sk, int fd, bool is_write, int flags, ssize_t *res)
{
	int ret;

	switch (sk->state) {
	case NKS_CONNECTED:
		return 1;
	case NKS_CONNECTING:
		ret = settle_connect(sk, fd);
		if (!ret)
			return 1;
		*res = fail(-ret);
		return 0;
	case NKS_SETUP:
	case NKS_LISTENING:
		/* disconnected (connect AF_UNSPEC) after a connection: the
		 * reset, once, as Linux's sk_err */
		if (sk->state == NKS_SETUP && sk->pending_err == ECONNRESET) {
			sk->pending_err = 0;
			*res = fail(ECONNRESET);
			return 0;
		}
		if (is_write) {
			if (!(flags & MSG_NOSIGNAL))
				pthread_kill(pthread_self(), SIGPIPE);
			*res = fail(EPIPE);
		} else {
			*res = fail(ENOTCONN);
		}
		return 0;
	default:
		return -1;	/* local socket: plain libc */
	}
}

/* ---- UDP ---------------------------------------------------------------- */

static int check_inet_addr(struct nk_sock *sk, const struct sockaddr *addr, socklen_t len,
			   struct nk_addr *na);

/*
 * A UDP socket's stream ended (dgram.c says ENETDOWN), or its NSM no
 * longer knows it (a control request said ENOTSOCK, or ECONNRESET: another
 * NSM instance): its NSM died, or dropped the VM.  A move does that to a
 * socket without a peer when the VM starts to drain from its old NSM
 * (VM_DRAIN), so that a server's socket moves with the VM's address; to a
 * connected one when the drain is over.  Make the socket again on the VM's
 * NSM, in the same fd: the same options, bound again to the address
 * bind() gave it (a socket bound only implicitly gets a new port),
 * connected again to its peer; the fd changes only once all that worked.
 * Datagrams in flight are lost, as a network may lose them.  sk->lock
 * held.
 */
static int udp_revive_setup(struct nk_sock *sk)
{
	struct nk_addr_req req = { .token = sk->token };
	int ret = sk->bound_len ? bind_again(sk, &sk->bound, sk->bound_len) : 0;

	if (ret || sk->state != NKS_CONNECTED)
		return ret;
	ret = nk_addr_from_sockaddr(&req.addr, (struct sockaddr *)&sk->peer, sk->peer_len);
	return ret ? ret : nk_ctl_call(sk->nsm, NK_OP_CONNECT, &req, sizeof(req), NULL, 0);
}

/* As udp_revive(), sk->lock held; the caller checked gen. */
static int udp_revive_locked(struct nk_sock *sk, int fd)
{
	enum nks_state st = sk->state;
	int ret;

	if (!nks_fd_is(fd, sk))
		return -EBADF;	/* closed meanwhile (the number reused?) */
	if (sk->dead || (st != NKS_SETUP && st != NKS_CONNECTED))
		return -ENETDOWN;
	ret = reattach(sk, fd, udp_revive_setup, st, "making the UDP socket again");
	if (!ret) {
		nk_logf("fd %d: UDP socket made again after its NSM restarted or the VM moved", fd);
		return 0;
	}
	if (ret == -EBADF)
		return ret;
	nk_logf("fd %d: UDP socket lost with its NSM (%s); its calls fail with ENETDOWN",
		fd, strerror(-ret));
	sk->dead = true;
	fd_make_quiet(sk, fd);
	return -ENETDOWN;
}

/*
 * After ENETDOWN: 0 if the socket was made again (by this call or by
 * another thread since gen), or -ENETDOWN if that failed (for good: later
 * calls fail at once, and the fd is never readable), or -EBADF.
 */
static int udp_revive(struct nk_sock *sk, int fd, unsigned int gen)
{
	int ret = 0;

	pthread_mutex_lock(&sk->lock);
	if (sk->gen == gen)
		ret = udp_revive_locked(sk, fd);
	pthread_mutex_unlock(&sk->lock);
	return ret;
}

/*
 * A control request on a socket (its token first in req): for a UDP
 * socket whose NSM no longer knows it (ENOTSOCK: a move ended it; or
 * ECONNRESET: its NSM instance is gone), the socket is made again and the
 * request sent once more with the new token.  sk->lock held.
 */
static int sock_ctl_call(struct nk_sock *sk, int fd, uint8_t op, void *req, size_t reqlen,
			void *rep, size_t replen)
{
	int ret;

	if (sk->type == SOCK_DGRAM && sk->dead)
		return -ENETDOWN;	/* lost with its NSM */
	ret = nk_ctl_call(sk->nsm, op, req, reqlen, rep, replen);
	if (sk->type != SOCK_DGRAM || (ret != -ENOTSOCK && ret != -ECONNRESET))
		return ret;
	ret = udp_revive_locked(sk, fd);
	if (ret)
		return ret;
	memcpy(req, &sk->token, sizeof(sk->token));
	return nk_ctl_call(sk->nsm, op, req, reqlen, rep, replen);
}

/*
 * A send on a UDP socket.  A fresh socket sending to a non-loopback
 * destination is promoted first.  *local: the caller goes to libc instead.
 */
static ssize_t udp_send(struct nk_sock *sk, int fd, const struct iovec *iov, int cnt, int flags,
			const struct sockaddr *dst, socklen_t dlen, bool *local)
{
	unsigned int gen;
	ssize_t n;
	int ret;

	*local = false;
	pthread_mutex_lock(&sk->lock);
	if (sk->state == NKS_FRESH) {
		if (!dst || dlen < sizeof(sa_family_t) || dst->sa_family == AF_UNSPEC ||
		    nk_sockaddr_is_loopback(dst, dlen)) {
			if (dst && nk_sockaddr_is_loopback(dst, dlen))
				nks_set_state(sk, NKS_LOCAL);
			*local = true;
			pthread_mutex_unlock(&sk->lock);
			return 0;
		}
		ret = promote(sk, fd);
		if (ret) {
			pthread_mutex_unlock(&sk->lock);
			return fail(promote_errno(ret, ENETUNREACH));
		}
	}
	if (sk->state == NKS_LOCAL) {
		*local = true;
		pthread_mutex_unlock(&sk->lock);
		return 0;
	}
	gen = __atomic_load_n(&sk->gen, __ATOMIC_ACQUIRE);
	pthread_mutex_unlock(&sk->lock);
	n = nk_dgram_send(sk, fd, iov, cnt, flags, dst, dlen);
	/* the NSM went away: once more on the socket made again */
	if (n == -ENETDOWN && !(n = udp_revive(sk, fd, gen)))
		n = nk_dgram_send(sk, fd, iov, cnt, flags, dst, dlen);
	return n < 0 ? fail(-n) : n;
}

static ssize_t udp_recv(struct nk_sock *sk, int fd, const struct iovec *iov, int cnt, int flags,
			struct sockaddr *src, socklen_t *slen, int *mflags, bool *local)
{
	unsigned int gen;
	ssize_t n;

	*local = sk->state == NKS_FRESH || sk->state == NKS_LOCAL;
	if (*local)
		return 0;
	for (;;) {
		gen = __atomic_load_n(&sk->gen, __ATOMIC_ACQUIRE);
		n = nk_dgram_recv(sk, fd, iov, cnt, flags, src, slen, mflags);
		if (n != -ENETDOWN || (n = udp_revive(sk, fd, gen)))
			break;
		/* made again: a non-blocking receive finds it empty, a
		 * blocking one waits on it */
		if ((flags & MSG_DONTWAIT) || is_nonblock(fd)) {
			n = -EAGAIN;
			break;
		}
	}
	return n < 0 ? fail(-n) : n;
}

/* connect() on a promoted (or promotable) UDP socket; sk->lock held. */
static int udp_connect(struct nk_sock *sk, int fd, const struct sockaddr *addr, socklen_t len)
{
	struct nk_addr_req req = { 0 };
	int ret;

	if (!addr)
		return -EFAULT;
	if (addr->sa_family != AF_UNSPEC) {
		if (sk->domain == AF_INET6 && addr->sa_family == AF_INET &&
		    len >= sizeof(struct sockaddr_in)) {
			/* A v6 UDP socket may connect to an IPv4 address. */
			ret = nk_addr_from_sockaddr(&req.addr, addr, len);
			if (!ret) {
				uint8_t v4[4];

				memcpy(v4, req.addr.addr, 4);
				memset(req.addr.addr, 0, 16);
				req.addr.addr[10] = req.addr.addr[11] = 0xff;
				memcpy(req.addr.addr + 12, v4, 4);
				req.addr.family = NK_AF_INET6;
			}
		} else {
			ret = check_inet_addr(sk, addr, len, &req.addr);
		}
		if (ret)
			return ret;
		if (nk_addr_is_loopback(&req.addr)) {
			nk_logf("fd %d: a UDP socket of the VM cannot reach the guest's loopback once it uses NetKernel",
				fd);
			return -ENETUNREACH;
		}
	}
	if (sk->state == NKS_FRESH) {
		ret = promote(sk, fd);
		if (ret)
			return -promote_errno(ret, ENETUNREACH);
	}
	req.token = sk->token;
	ret = sock_ctl_call(sk, fd, NK_OP_CONNECT, &req, sizeof(req), NULL, 0);
	if (ret)
		return ret;
	sk->local_len = 0;	/* the NSM may have bound it now */
	if (addr->sa_family == AF_UNSPEC) {
		sk->peer_len = 0;
		nks_set_state(sk, NKS_SETUP);
	} else {
		nk_set_addr(&sk->peer, &sk->peer_len, &req.addr, sk->domain);
		nks_set_state(sk, NKS_CONNECTED);
	}
	return 0;
}

/* ---- socket API --------------------------------------------------------- */

NK_API int socket(int domain, int type, int protocol)
{
	struct nk_sock *sk;
	int fd, base;

	INIT();
	fd = nk_real.socket(domain, type, protocol);
	if (fd < 0 || !nk_on)
		return fd;
	base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	if ((domain != AF_INET && domain != AF_INET6) ||
	    !((base == SOCK_STREAM && (!protocol || protocol == IPPROTO_TCP)) ||
	      (base == SOCK_DGRAM && (!protocol || protocol == IPPROTO_UDP)))) {
		nks_forget(fd);
		return fd;
	}
	sk = nks_new(domain, base);
	if (!sk || nks_install(fd, sk)) {
		nks_put(sk);
		nk_real.close(fd);
		return fail(ENOMEM);
	}
	nks_put(sk);
	return fd;
}

static int check_inet_addr(struct nk_sock *sk, const struct sockaddr *addr, socklen_t len,
			   struct nk_addr *na)
{
	if (!addr)
		return -EFAULT;
	if (sk->domain == AF_INET) {
		if (len < sizeof(struct sockaddr_in))
			return -EINVAL;
		if (addr->sa_family != AF_INET)
			return -EAFNOSUPPORT;
	} else {
		if (len < NK_SIN6_LEN_RFC2133)
			return -EINVAL;
		if (addr->sa_family != AF_INET6)
			return -EAFNOSUPPORT;
	}
	return nk_addr_from_sockaddr(na, addr, len);
}

NK_API int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct nk_addr_req req;
	struct nk_addr_rep rep;
	struct nk_sock *sk;
	int ret;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.bind(fd, addr, len);
	pthread_mutex_lock(&sk->lock);
	if (sk->state == NKS_FRESH && addr && nk_sockaddr_is_loopback(addr, len))
		nks_set_state(sk, NKS_LOCAL);
	if (sk->state == NKS_LOCAL) {
		pthread_mutex_unlock(&sk->lock);
		nks_put(sk);
		return nk_real.bind(fd, addr, len);
	}
	ret = check_inet_addr(sk, addr, len, &req.addr);
	if (ret)
		goto out;
	if (sk->state == NKS_FRESH) {
		ret = promote(sk, fd);
		if (ret) {
			ret = -promote_errno(ret, EADDRNOTAVAIL);
			goto out;
		}
	}
	if (sk->state != NKS_SETUP || sk->local_len) {
		ret = -EINVAL;
		goto out;
	}
	req.token = sk->token;
	req.pad0 = 0;
	ret = sock_ctl_call(sk, fd, NK_OP_BIND, &req, sizeof(req), &rep, sizeof(rep));
	if (!ret) {
		nk_set_addr(&sk->local, &sk->local_len, &rep.addr, sk->domain);
		sk->port_given = req.addr.port != 0;
		if (sk->type == SOCK_DGRAM) {
			sk->bound = sk->local;
			sk->bound_len = sk->local_len;
		}
	}
out:
	pthread_mutex_unlock(&sk->lock);
	nks_put(sk);
	return ret ? fail(-ret) : 0;
}

NK_API int listen(int fd, int backlog)
{
	struct nk_sock_req req;
	struct nk_addr_rep rep;
	struct nk_sock *sk;
	int ret = 0;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.listen(fd, backlog);
	pthread_mutex_lock(&sk->lock);
	if (sk->state == NKS_LOCAL || (sk->type == SOCK_DGRAM && sk->state == NKS_FRESH)) {
		pthread_mutex_unlock(&sk->lock);
		nks_put(sk);
		return nk_real.listen(fd, backlog);
	}
	if (sk->type == SOCK_DGRAM) {
		ret = -EOPNOTSUPP;
		goto out;
	}
	if (sk->state == NKS_LISTENING && sk->shut) {
		/* Shut down: Linux's socket stopped listening, stays bound,
		 * and listens again.  Its stream is shut: a new one, bound
		 * the same, on the VM's NSM. */
		int old_backlog = sk->backlog;

		sk->shut = false;
		sk->backlog = backlog;
		ret = reattach(sk, fd, relisten_shut_setup, NKS_LISTENING,
			       "listening again after shutdown");
		if (ret) {
			sk->shut = true;
			sk->backlog = old_backlog;
			ret = ret == -EBADF ? ret : -promote_errno(ret, EADDRNOTAVAIL);
			goto out;
		}
		/* a shutdown() of another thread meanwhile (it does not wait
		 * for sk->lock) shut the old stream: it holds for the new one */
		if (__atomic_load_n(&sk->shut, __ATOMIC_ACQUIRE))
			nk_real.shutdown(fd, SHUT_RDWR);
		goto listening;
	}
	if (sk->state == NKS_FRESH) {
		ret = promote(sk, fd);
		if (ret) {
			ret = -promote_errno(ret, EADDRNOTAVAIL);
			goto out;
		}
	}
	if (sk->state != NKS_SETUP && sk->state != NKS_LISTENING) {
		ret = -EINVAL;
		goto out;
	}
	req = (struct nk_sock_req){ .token = sk->token, .arg = backlog };
	ret = nk_ctl_call(sk->nsm, NK_OP_LISTEN, &req, sizeof(req), NULL, 0);
	if ((ret == -ENOTSOCK || ret == -ECONNRESET) && sk->state == NKS_SETUP) {
		/* Made before its VM moved (or its NSM restarted): the NSM
		 * that has it no longer gets its connections.  Make it again
		 * on the VM's NSM, bound the same, and listen there; if that
		 * fails, the socket stays as it was. */
		int old_backlog = sk->backlog;

		sk->backlog = backlog;
		ret = reattach(sk, fd, relisten_setup, NKS_SETUP, "listening on the VM's NSM");
		if (!ret)
			nk_logf("fd %d: made before its NSM went away: listening on the VM's NSM", fd);
		else
			sk->backlog = old_backlog;
		ret = ret ? -promote_errno(ret, EADDRNOTAVAIL) : 0;
	}
	if (ret)
		goto out;
listening:
	sk->backlog = backlog;
	nks_set_state(sk, NKS_LISTENING);
	req = (struct nk_sock_req){ .token = sk->token };	/* made again: a new one */
	if (!nk_ctl_call(sk->nsm, NK_OP_GETNAME, &req, sizeof(req), &rep, sizeof(rep)))
		nk_set_addr(&sk->local, &sk->local_len, &rep.addr, sk->domain);
out:
	pthread_mutex_unlock(&sk->lock);
	nks_put(sk);
	return ret ? fail(-ret) : 0;
}

static int wait_connected(struct nk_sock *sk, int fd)
{
	struct timeval tv = { 0 };
	socklen_t tl = sizeof(tv);
	int timeout = -1, ret, hold;
	int64_t t0;

	/* A blocking connect honours SO_SNDTIMEO, as Linux does. */
	if (!nk_real.getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) &&
	    (tv.tv_sec || tv.tv_usec))
		timeout = tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
	t0 = nk_mono_ms();
	/* The wait holds the stream, as Linux's connect() holds its file: a
	 * close() of the fd by another thread meanwhile does not end the
	 * connect (the connection ends once the connect returns). */
	hold = nk_real.fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (hold < 0)
		hold = fd;
	/* Wait for the record without holding sk->lock: other threads'
	 * calls on this socket (getsockname, shutdown, close...) must not
	 * wait for the handshake, as on Linux. */
	for (;;) {
		struct pollfd pfd = { .fd = hold, .events = POLLIN };
		int left = -1;

		/* Another thread may have read the record meanwhile. */
		if (sk->state != NKS_CONNECTING) {
			ret = nks_finish_connect(sk, hold, 0);
			break;
		}
		/* Wait first: the record is rarely there yet. */
		if (timeout >= 0) {
			left = timeout - (int)(nk_mono_ms() - t0);
			if (left <= 0) {
				ret = -EINPROGRESS;	/* timed out; still connecting */
				goto out;
			}
		}
		pthread_mutex_unlock(&sk->lock);
		nk_real.poll(&pfd, 1, left);
		pthread_mutex_lock(&sk->lock);
		/* closed by the program meanwhile: the number may be another
		 * file's now; the held stream is still this socket's */
		if (hold == fd && !nks_fd_is(fd, sk)) {
			ret = -EBADF;
			goto out;
		}
		ret = nks_finish_connect(sk, hold, 0);
		if (ret)
			break;
	}
	if (ret < 0)
		goto out;
	if (sk->state == NKS_CONNECTED) {
		ret = 0;
		goto out;
	}
	ret = -sk->pending_err;
	sk->pending_err = 0;
	ret = ret ? ret : -ECONNREFUSED;
out:
	if (hold != fd)
		nk_real.close(hold);
	return ret;
}

/* A disconnected socket made again: unbound, or bound as bind() named it. */
static int disconnect_setup(struct nk_sock *sk)
{
	return sk->port_given && sk->local_len ? bind_again(sk, &sk->local, sk->local_len) : 0;
}

/*
 * connect(AF_UNSPEC) on a TCP socket: Linux's tcp_disconnect().  A
 * listener stops listening (as shutdown() does here); a connected or
 * connecting socket is reset (SO_LINGER 0 on the NSM's socket, whose
 * stream then ends) and made again on the VM's NSM, unconnected, with
 * its options, bound again only to a port bind() named; its next call
 * reports ECONNRESET once (sk_err).  sk->lock held.
 */
static int tcp_disconnect(struct nk_sock *sk, int fd)
{
	struct linger lg = { 1, 0 };
	bool was_conn = sk->state == NKS_CONNECTED || sk->state == NKS_CONNECTING;
	int ret;

	if (sk->state == NKS_LISTENING) {
		sk->shut = true;
		return nk_real.shutdown(fd, SHUT_RDWR) < 0 ? -errno : 0;
	}
	if (!was_conn)
		return 0;	/* closed already: nothing to do, as on Linux */
	if (sk->state == NKS_CONNECTED && !stream_conn_ended(sk, fd))
		remote_setsockopt(sk, -1, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (!sk->port_given)
		sk->local_len = 0;
	sk->peer_len = 0;
	ret = reattach(sk, fd, disconnect_setup, NKS_SETUP, "disconnecting (connect AF_UNSPEC)");
	if (ret)
		return ret == -EBADF ? ret : -promote_errno(ret, ENETUNREACH);
	sk->connect_unreported = false;
	sk->conn_ended = false;
	sk->eof_err = -1;
	sk->eof_reported = false;
	sk->pending_err = ECONNRESET;
	return 0;
}

NK_API int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct nk_addr_req req;
	struct nk_sock *sk;
	int ret, cerr;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.connect(fd, addr, len);
	pthread_mutex_lock(&sk->lock);
	if (sk->state == NKS_FRESH && addr && len >= sizeof(sa_family_t) &&
	    nk_sockaddr_is_loopback(addr, len))
		nks_set_state(sk, NKS_LOCAL);
	if (sk->state == NKS_LOCAL || (sk->state == NKS_FRESH && addr &&
				       len >= sizeof(sa_family_t) && addr->sa_family == AF_UNSPEC)) {
		pthread_mutex_unlock(&sk->lock);
		nks_put(sk);
		return nk_real.connect(fd, addr, len);
	}
	if (sk->type == SOCK_DGRAM) {
		ret = udp_connect(sk, fd, addr, len);
		goto out;
	}
	/* Linux's TCP looks at the length before the socket's state */
	if (!addr || len < sizeof(sa_family_t)) {
		ret = addr || !len ? -EINVAL : -EFAULT;
		goto out;
	}
	if (addr->sa_family == AF_UNSPEC) {
		ret = tcp_disconnect(sk, fd);
		goto out;
	}
	/* A non-blocking connect settled meanwhile (poll, SO_ERROR, a read):
	 * as on Linux, the next connect() returns its outcome once, 0 or
	 * the error (ECONNABORTED if SO_ERROR or a data call took it), and
	 * only the one after that says EISCONN or connects again. */
	if (sk->connect_unreported && sk->state != NKS_CONNECTING) {
		sk->connect_unreported = false;
		if (sk->state == NKS_CONNECTED) {
			/* ended by a reset meanwhile: Linux's CLOSE state, where
			 * connect() reports the error once (as SO_ERROR would),
			 * ECONNABORTED once it was taken */
			ret = 0;
			if (stream_conn_ended(sk, fd)) {
				int e = stream_so_error(sk, fd);

				ret = e ? -e : sk->eof_err > 0 ? -ECONNABORTED : 0;
			}
			goto out;
		}
		if (sk->state == NKS_SETUP) {
			ret = -(sk->pending_err ? sk->pending_err : ECONNABORTED);
			sk->pending_err = 0;
			goto out;
		}
	}
	switch (sk->state) {
	case NKS_CONNECTED:
	case NKS_LISTENING:
		ret = -EISCONN;
		goto out;
	case NKS_CONNECTING:
		if (is_nonblock(fd)) {
			ret = nks_finish_connect(sk, fd, 0);
			if (ret == 0) {
				ret = -EALREADY;
			} else if (ret == 1 && sk->state == NKS_CONNECTED) {
				ret = 0;
				sk->connect_unreported = false;
			} else if (ret == 1) {
				ret = -(sk->pending_err ? sk->pending_err : ECONNREFUSED);
				sk->pending_err = 0;
				sk->connect_unreported = false;
			}
		} else {
			ret = wait_connected(sk, fd);
			/* SO_SNDTIMEO ran out: still connecting */
			sk->connect_unreported = ret == -EINPROGRESS;
		}
		goto out;
	default:
		break;
	}
	ret = check_inet_addr(sk, addr, len, &req.addr);
	if (ret)
		goto out;
	/* a link-local destination needs its interface, as Linux's
	 * tcp_v6_connect() says (the NSM would pick its own) */
	if (nk_addr_is_linklocal(&req.addr) && !req.addr.scope_id) {
		ret = -EINVAL;
		goto out;
	}
	if (nk_addr_is_any(&req.addr)) {
		/* Linux connects to the local host; a VM's own address is
		 * not reachable that way through an NSM. */
		ret = -ECONNREFUSED;
		goto out;
	}
	cerr = NK_CONNECT_NOT_SENT;
	if (sk->state == NKS_FRESH) {
		/* HELLO, options and CONNECT in one round trip. */
		ret = promote_stream(sk, fd, false, &req.addr, &cerr, NULL);
		if (ret) {
			ret = -promote_errno(ret, ENETUNREACH);
			goto out;
		}
	}
	if (cerr == NK_CONNECT_NOT_SENT) {
		req.token = sk->token;
		req.pad0 = 0;
		ret = nk_ctl_call(sk->nsm, NK_OP_CONNECT, &req, sizeof(req), NULL, 0);
	} else {
		ret = -cerr;
	}
	if (ret)
		goto out;
	sk->pending_err = 0;
	nks_set_state(sk, NKS_CONNECTING);
	epoll_swap_out(sk);
	if (is_nonblock(fd)) {
		/* Done already?  Then behave like a fast local connect. */
		sk->connect_unreported = true;
		ret = -EINPROGRESS;
		goto out;
	}
	ret = wait_connected(sk, fd);
	sk->connect_unreported = ret == -EINPROGRESS;
out:
	pthread_mutex_unlock(&sk->lock);
	nks_put(sk);
	return ret ? fail(-ret) : 0;
}

/*
 * Read one announcement record from a listener's stream.  Records are
 * whole-read, so concurrent acceptors (nginx workers) each take whole
 * records; all records on one stream are of one kind (sk->accept_op; a
 * listener inherited across exec learns it by peeking at the header).
 * Returns the record's size, 0 at EOF, or -errno.
 */
static ssize_t accept_record(struct nk_sock *sk, int fd, void *buf)
{
	uint8_t op = __atomic_load_n(&sk->accept_op, __ATOMIC_RELAXED);
	struct nk_hdr h;
	ssize_t n;
	int body;

	if (!op) {
		n = nk_real.recv(fd, &h, sizeof(h), MSG_PEEK | MSG_WAITALL);
		if (n <= 0)
			return n < 0 ? -errno : 0;
		if (n != sizeof(h) || nk_hdr_check(&h, 1) < 0 ||
		    (h.op != NK_OP_ACCEPT_READY && h.op != NK_OP_ACCEPT_OFFER))
			return -EPROTO;
		op = h.op;
		__atomic_store_n(&sk->accept_op, op, __ATOMIC_RELAXED);
	}
	body = nk_body_size(op, 1);
	n = nk_real.recv(fd, buf, sizeof(h) + body, MSG_WAITALL);
	if (n <= 0)
		return n < 0 ? -errno : 0;
	/* The NSM writes a record whole, but a non-blocking listener (or a
	 * vsock stream short of credit) can see part of it: finish it. */
	if (n < (ssize_t)sizeof(h) + body &&
	    nk_recv_all(fd, (char *)buf + n, sizeof(h) + body - (size_t)n) == 0)
		n = sizeof(h) + body;
	memcpy(&h, buf, sizeof(h));
	if (n != (ssize_t)sizeof(h) + body || nk_hdr_check(&h, 1) < 0 || h.op != op)
		return -EPROTO;
	return n;
}

static int do_accept(int fd, struct sockaddr *addr, socklen_t *alen, int flags, bool is4)
{
	union {
		uint8_t b[sizeof(struct nk_hdr) + sizeof(struct nk_accept_offer)];
		struct nk_hdr h;
	} buf = { { 0 } };	/* for the static analyzer: read only after a whole record */
	struct nk_accept_offer *rec = (void *)(buf.b + sizeof(buf.h));
	struct nk_hello_req req = { .kind = NK_HELLO_ACCEPT };
	struct nk_hello_rep rep = { 0 };
	struct nk_sock *sk, *nsk;
	unsigned int gen;
	int s, ret, i;
	ssize_t n;

	sk = lookup(fd);
	if (!sk || sk->state == NKS_LOCAL || sk->state == NKS_FRESH) {
		nks_put(sk);
		s = is4 ? nk_real.accept4(fd, addr, alen, flags) : nk_real.accept(fd, addr, alen);
		if (s >= 0)
			nks_forget(s);
		return s;
	}
	if (sk->type == SOCK_DGRAM) {
		nks_put(sk);
		return fail(EOPNOTSUPP);
	}
	if (sk->state != NKS_LISTENING) {
		nks_put(sk);
		return fail(EINVAL);
	}
	if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) {
		nks_put(sk);
		return fail(EINVAL);
	}
	for (;;) {
		/* One record per waiting connection; the listener's
		 * O_NONBLOCK applies. */
		gen = __atomic_load_n(&sk->gen, __ATOMIC_ACQUIRE);
		n = accept_record(sk, fd, &buf);
		if (n < 0 && n != -EPROTO) {
			ret = (int)n;
			goto out;
		}
		if (n == 0) {
			pthread_mutex_lock(&sk->lock);
			if (sk->shut || sk->state != NKS_LISTENING)
				ret = -EINVAL;
			else if (sk->gen != gen)
				ret = 0;	/* another thread listened again */
			else
				ret = sk->dead ? -ECONNABORTED : relisten(sk, fd);
			pthread_mutex_unlock(&sk->lock);
			if (ret == -EINVAL || ret == -EBADF)
				goto out;
			if (ret == 0 && sk->gen != gen) {
				/* Listening again (NSM restarted, or the VM moved
				 * to another NSM).  The wake-up that brought the
				 * program here announced no connection: say so
				 * the way Linux says a queued connection went
				 * away, so an event loop goes back to waiting
				 * instead of blocking here. */
				ret = -ECONNABORTED;
				goto out;
			}
			if (ret) {
				ret = -ECONNABORTED;
				goto out;
			}
			continue;
		}
		if (n < 0) {
			nk_logf("fd %d: bad accept record from the host", fd);
			ret = -EPROTO;
			goto out;
		}
		req.listener = sk->token;
		req.conn_id = rec->conn_id;
		req.pid = nk_pid();
		if (buf.h.op == NK_OP_ACCEPT_OFFER) {
			/* The record says what the reply would: claim the
			 * connection without waiting (NK_HELLO_F_QUIET). */
			req.flags = NK_HELLO_F_QUIET;
			s = nk_transport_open_data(flags);
			if (s < 0) {
				ret = -ECONNABORTED;
				goto out;
			}
			ret = nk_msg_send(s, NK_OP_HELLO, 0, &req, sizeof(req));
			if (ret) {
				nk_real.close(s);
				ret = -ECONNABORTED;
				goto out;
			}
			rep.token = rec->token;
			rep.local = rec->local;
			rep.peer = rec->peer;
			rep.nsm_id = sk->nsm;
			goto claimed;	/* the stream has the flags asked */
		}
		s = nk_transport_open();
		if (s < 0) {
			ret = -ECONNABORTED;
			goto out;
		}
		ret = nk_hello(s, &req, &rep);
		if (ret == 0) {
			struct timeval notimeo = { 0 };

			nk_real.setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &notimeo, sizeof(notimeo));
			break;
		}
		nk_real.close(s);
		/* The connection went away before we claimed it: Linux would
		 * not have shown it; wait for the next one. */
		if (ret > 0 && !is_nonblock(fd))
			continue;
		ret = ret > 0 ? -ECONNABORTED : ret;
		goto out;
	}
	if (!(flags & SOCK_CLOEXEC))
		nk_real.fcntl(s, F_SETFD, 0);
	if (flags & SOCK_NONBLOCK)
		nk_real.fcntl(s, F_SETFL, O_NONBLOCK);
claimed:
	/* SO_RCVTIMEO and SO_SNDTIMEO are inherited, as on Linux: the
	 * listener's, as the program set them (kept in its options), go on
	 * the new stream; none set, no call */
	for (i = 0; i < sk->nopts; i++)
		if (opt_is_local(sk->opts[i].level, sk->opts[i].name))
			nk_real.setsockopt(s, sk->opts[i].level, sk->opts[i].name,
					   sk->opts[i].val, sk->opts[i].len);
	nsk = nks_new(sk->domain, SOCK_STREAM);
	if (!nsk) {
		nk_real.close(s);
		ret = -ENOMEM;
		goto out;
	}
	nsk->token = rep.token;
	nsk->nsm = rep.nsm_id;
	nsk->sndbuf_fixed = sk->sndbuf_fixed;	/* SO_SNDBUF is inherited, as on Linux */
	nk_set_addr(&nsk->local, &nsk->local_len, &rep.local, sk->domain);
	nk_set_addr(&nsk->peer, &nsk->peer_len, &rep.peer, sk->domain);
	nks_set_state(nsk, NKS_CONNECTED);
	nks_install(s, nsk);
	copy_addr_out(addr, alen, &nsk->peer, nsk->peer_len);
	nks_put(nsk);
	ret = s;
out:
	nks_put(sk);
	return ret < 0 ? fail(-ret) : ret;
}

NK_API int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
	INIT();
	return do_accept(fd, addr, alen, 0, false);
}

NK_API int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	INIT();
	return do_accept(fd, addr, alen, flags, true);
}

static int getname(int fd, struct sockaddr *addr, socklen_t *alen, bool peer)
{
	struct nk_sock_req req;
	struct nk_addr_rep rep;
	struct nk_sock *sk;
	int ret = 0;

	sk = lookup(fd);
	if (!sk || sk->state == NKS_FRESH || sk->state == NKS_LOCAL) {
		nks_put(sk);
		return peer ? nk_real.getpeername(fd, addr, alen)
			    : nk_real.getsockname(fd, addr, alen);
	}
	/* as Linux's move_addr_to_user(): a NULL address with length 0 is
	 * fine, the length is still written */
	if (!alen || (!addr && *alen)) {
		nks_put(sk);
		return fail(EFAULT);
	}
	if ((int)*alen < 0) {
		nks_put(sk);
		return fail(EINVAL);
	}
	pthread_mutex_lock(&sk->lock);
	if (sk->state == NKS_CONNECTING)
		nks_finish_connect(sk, fd, 0);
	if (peer && (sk->state != NKS_CONNECTED || stream_conn_ended(sk, fd))) {
		ret = -ENOTCONN;
	} else if (peer ? sk->peer_len : sk->local_len) {
		name_out(addr, alen, peer ? &sk->peer : &sk->local,
			 peer ? sk->peer_len : sk->local_len);
	} else {
		req = (struct nk_sock_req){ .token = sk->token, .arg = peer };
		ret = sock_ctl_call(sk, fd, NK_OP_GETNAME, &req, sizeof(req), &rep, sizeof(rep));
		if (!ret) {
			struct sockaddr_storage ss;
			socklen_t len;

			nk_set_addr(&ss, &len, &rep.addr, sk->domain);
			name_out(addr, alen, &ss, len);
		}
	}
	pthread_mutex_unlock(&sk->lock);
	nks_put(sk);
	return ret ? fail(-ret) : 0;
}

NK_API int getsockname(int fd, struct sockaddr *addr, socklen_t *alen)
{
	INIT();
	return getname(fd, addr, alen, false);
}

NK_API int getpeername(int fd, struct sockaddr *addr, socklen_t *alen)
{
	INIT();
	return getname(fd, addr, alen, true);
}

NK_API int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	struct nk_sock *sk;
	int ret;

	INIT();
	sk = lookup(fd);
	if (!sk || sk->state == NKS_LOCAL) {
		nks_put(sk);
		return nk_real.setsockopt(fd, level, name, val, len);
	}
	pthread_mutex_lock(&sk->lock);
	if (sk->state == NKS_FRESH) {
		/* Linux validates it on the local socket; we remember it. */
		ret = nk_real.setsockopt(fd, level, name, val, len);
		if (!ret)
			save_opt(sk, level, name, val, len);
		ret = ret ? -errno : 0;
	} else if (opt_is_local(level, name)) {
		/* kept for the fd's next stream (re-listening, a UDP socket
		 * made again) */
		ret = nk_real.setsockopt(fd, level, name, val, len) ? -errno : 0;
		if (!ret)
			save_opt(sk, level, name, val, len);
	} else {
		ret = remote_setsockopt(sk, fd, level, name, val, len);
		if (ret == -ENOTSOCK && sk->state == NKS_CONNECTED)
			ret = ended_sockopt(sk, true, level, name, (void *)val, &len);
		if (ret)
			nk_logf("setsockopt(fd %d, level %d, name %d): %s", fd, level, name,
				strerror(-ret));
		else if (sk->state == NKS_SETUP || sk->state == NKS_LISTENING ||
			 sk->type == SOCK_DGRAM)
			save_opt(sk, level, name, val, len);
	}
	if (!ret && level == SOL_SOCKET && name == SO_SNDBUF)
		sk->sndbuf_fixed = true;	/* the application's choice stays */
	if (!ret && level == SOL_SOCKET && name == SO_BROADCAST && val && len >= sizeof(int))
		sk->broadcast = *(const int *)val != 0;
	if (!ret && level == IPPROTO_IPV6 && name == IPV6_V6ONLY && val && len >= sizeof(int))
		sk->v6only = *(const int *)val != 0;
	pthread_mutex_unlock(&sk->lock);
	nks_put(sk);
	return ret ? fail(-ret) : 0;
}

static int put_int_opt(void *val, socklen_t *len, int v)
{
	if (!val || !len)
		return -EFAULT;
	if (*len >= sizeof(int)) {
		memcpy(val, &v, sizeof(int));
		*len = sizeof(int);
	} else if (*len) {
		/* Linux copies a truncated value for small buffers. */
		memcpy(val, &v, *len);
	}
	return 0;
}

NK_API int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct nk_opt_req req;
	struct nk_opt_rep rep;
	struct nk_sock *sk;
	int ret = 0;

	INIT();
	sk = lookup(fd);
	if (!sk || sk->state == NKS_LOCAL || sk->state == NKS_FRESH) {
		nks_put(sk);
		return nk_real.getsockopt(fd, level, name, val, len);
	}
	pthread_mutex_lock(&sk->lock);
	if (level == SOL_SOCKET && name == SO_ERROR) {
		int e = 0;

		if (sk->type == SOCK_DGRAM) {
			e = nk_dgram_pending_error(sk, fd);
			if (e) {
				ret = put_int_opt(val, len, e);
				goto out;
			}
		}
		if (sk->state == NKS_CONNECTING)
			nks_finish_connect(sk, fd, 0);
		if (sk->pending_err) {
			e = sk->pending_err;
			sk->pending_err = 0;
			ret = put_int_opt(val, len, e);
			goto out;
		}
		if (sk->state != NKS_CONNECTED) {
			ret = put_int_opt(val, len, 0);
			goto out;
		}
		if (sk->type == SOCK_STREAM) {
			/* not the NSM's socket: its error is the relay's */
			ret = put_int_opt(val, len, stream_so_error(sk, fd));
			goto out;
		}
		/* connected UDP: ask the NSM's socket below */
	} else if (level == SOL_SOCKET && name == SO_TYPE) {
		ret = put_int_opt(val, len, sk->type);
		goto out;
	} else if (level == SOL_SOCKET && name == SO_DOMAIN) {
		ret = put_int_opt(val, len, sk->domain);
		goto out;
	} else if (level == SOL_SOCKET && name == SO_PROTOCOL) {
		ret = put_int_opt(val, len, sk->type == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP);
		goto out;
	} else if (level == SOL_SOCKET && name == SO_ACCEPTCONN) {
		ret = put_int_opt(val, len, sk->state == NKS_LISTENING && !sk->shut);
		goto out;
	} else if (opt_is_local(level, name)) {
		ret = nk_real.getsockopt(fd, level, name, val, len) ? -errno : 0;
		goto out;
	}
	if (!val || !len) {
		ret = -EFAULT;
		goto out;
	}
	req = (struct nk_opt_req){
		.token = sk->token,
		.level = level,
		.name = name,
		.optlen = *len > NK_OPT_MAX ? NK_OPT_MAX : *len,
	};
	ret = sock_ctl_call(sk, fd, NK_OP_GETSOCKOPT, &req, sizeof(req), &rep, sizeof(rep));
	if (ret == -ENOTSOCK && sk->state == NKS_CONNECTED) {
		ret = ended_sockopt(sk, false, level, name, val, len);
	} else if (!ret) {
		if (rep.optlen > NK_OPT_MAX)
			ret = -EPROTO;
		else {
			memcpy(val, rep.val, rep.optlen < *len ? rep.optlen : *len);
			*len = rep.optlen;
		}
	} else {
		nk_logf("getsockopt(fd %d, level %d, name %d): %s", fd, level, name,
			strerror(-ret));
	}
out:
	pthread_mutex_unlock(&sk->lock);
	nks_put(sk);
	return ret ? fail(-ret) : 0;
}

NK_API int shutdown(int fd, int how)
{
	struct nk_sock_req req;
	struct nk_sock *sk;
	bool ended;
	int ret = 0;

	INIT();
	sk = lookup(fd);
	if (!sk || sk->state == NKS_LOCAL || sk->state == NKS_FRESH) {
		nks_put(sk);
		return nk_real.shutdown(fd, how);
	}
	/* Not for a socket whose lock this thread may hold (shutdown() is
	 * async-signal-safe) or that another thread holds across a wait (a
	 * blocking connect): then it is taken as not ended. */
	ended = false;
	if (sk->type == SOCK_STREAM && sk->state == NKS_CONNECTED &&
	    !pthread_mutex_trylock(&sk->lock)) {
		ended = stream_conn_ended(sk, fd);
		pthread_mutex_unlock(&sk->lock);
	}
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
		ret = -EINVAL;
	} else if (sk->type == SOCK_DGRAM) {
		/* UDP: the write side refuses sends (EPIPE); shutting the
		 * read side changes nothing visible, as on Linux. */
		if (sk->state != NKS_CONNECTED)
			ret = -ENOTCONN;
		else if (how != SHUT_RD)
			sk->shut_wr = true;
	} else if (sk->state == NKS_LISTENING) {
		/* Linux stops listening when the read side is shut, and a
		 * blocked accept() returns EINVAL (not a dead NSM: no
		 * re-listening). */
		if (how != SHUT_WR) {
			sk->shut = true;
			if (nk_real.shutdown(fd, SHUT_RDWR) < 0)
				ret = -errno;
		}
	} else if (sk->state != NKS_CONNECTED) {
		ret = -ENOTCONN;
	} else if (ended) {
		ret = -ENOTCONN;	/* Linux's CLOSE state */
		sk->connect_unreported = false;	/* SS_DISCONNECTING */
	} else {
		if (how != SHUT_WR) {
			req = (struct nk_sock_req){ .token = sk->token, .arg = how };
			ret = nk_ctl_call(sk->nsm, NK_OP_SHUTDOWN, &req, sizeof(req), NULL, 0);
		}
		/* The write side is the stream's own: the NSM sees EOF. */
		if (!ret && nk_real.shutdown(fd, how) < 0)
			ret = -errno;
		if (!ret)
			sk->connect_unreported = false;	/* Linux: SS_CONNECTED */
	}
	nks_put(sk);
	return ret ? fail(-ret) : 0;
}

NK_API int close(int fd)
{
	int ret, e;

	INIT();
	if (nks_fd_tracked(fd))
		nks_forget(fd);
	else
		nks_epfd_closed(fd);
	ret = nk_real.close(fd);
	e = errno;
	nk_ctl_fd_gone(fd, fd);
	errno = e;
	return ret;
}

/* ---- data --------------------------------------------------------------- */

NK_API ssize_t read(int fd, void *buf, size_t len)
{
	struct nk_sock *sk;
	ssize_t n;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.read(fd, buf, len);
	if (sk->type == SOCK_DGRAM) {
		struct iovec v = { buf, len };
		bool local;

		n = udp_recv(sk, fd, &v, 1, 0, NULL, NULL, NULL, &local);
		if (local)
			n = nk_real.read(fd, buf, len);
		nks_put(sk);
		return n;
	}
	switch (data_gate(sk, fd, false, 0, &n)) {
	case 0:
		break;
	case 1:
		n = nk_real.read(fd, buf, len);
		if (n == 0 && len)
			n = read_eof(sk, fd);
		break;
	default:
		n = nk_real.read(fd, buf, len);
	}
	nks_put(sk);
	return n;
}

NK_API ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (len > buflen)
		abort();
	return read(fd, buf, len);
}

NK_API ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	struct nk_sock *sk;
	ssize_t n;
	int i;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.readv(fd, iov, cnt);
	if (sk->type == SOCK_DGRAM) {
		bool local;

		n = udp_recv(sk, fd, iov, cnt, 0, NULL, NULL, NULL, &local);
		if (local)
			n = nk_real.readv(fd, iov, cnt);
		nks_put(sk);
		return n;
	}
	switch (data_gate(sk, fd, false, 0, &n)) {
	case 0:
		break;
	case 1:
		n = nk_real.readv(fd, iov, cnt);
		if (n == 0) {
			for (i = 0; i < cnt; i++)
				if (iov[i].iov_len)
					break;
			if (i < cnt)
				n = read_eof(sk, fd);
		}
		break;
	default:
		n = nk_real.readv(fd, iov, cnt);
	}
	nks_put(sk);
	return n;
}

/*
 * TCP's MSG_TRUNC: the bytes are taken (with MSG_PEEK, only counted)
 * without being copied, and the buffer may be NULL (Linux's
 * tcp_recvmsg(); HAProxy drains sockets so).  The guest's stream would
 * copy them, into NULL: EFAULT.  Through a scratch buffer here: the first
 * read waits as a recv() would, the rest take what is there (up to len;
 * all of len with MSG_WAITALL); a peek counts what is queued.
 */
static int stream_fionread(int fd, int *val);

static ssize_t stream_recv_trunc(int fd, size_t len, int flags)
{
	char scratch[4096];	/* on the stack: no TLS block in every thread */
	size_t total = 0, want;
	ssize_t n;
	int avail;

	flags &= ~MSG_TRUNC;
	if (flags & MSG_PEEK) {
		n = nk_real.recv(fd, scratch, len ? 1 : 0, flags & ~MSG_WAITALL);
		if (n <= 0)
			return n;
		if (stream_fionread(fd, &avail) < 0)
			return n;
		return (size_t)avail < len ? avail : (ssize_t)len;
	}
	do {
		want = len - total < sizeof(scratch) ? len - total : sizeof(scratch);
		n = nk_real.recv(fd, scratch, want,
				 total && !(flags & MSG_WAITALL) ? flags | MSG_DONTWAIT : flags);
		if (n <= 0)
			break;
		total += n;
	} while (total < len && (size_t)n == want);
	return total ? (ssize_t)total : n;
}

/*
 * MSG_ERRQUEUE on a TCP socket: the error queue (timestamps, zero-copy
 * completions) is not carried (IP_RECVERR, SO_TIMESTAMPING and SO_ZEROCOPY
 * are refused), so it is empty: EAGAIN, as Linux says for an empty queue
 * in every state.  The stream must not be read: an AF_UNIX stream ignores
 * the flag and would hand out the payload.  1 and *n set, or 0.
 */
static int stream_errqueue(struct nk_sock *sk, int flags, ssize_t *n)
{
	if (!(flags & MSG_ERRQUEUE) || sk->state == NKS_FRESH || sk->state == NKS_LOCAL)
		return 0;
	*n = fail(EAGAIN);
	return 1;
}

/*
 * recv(MSG_PEEK | MSG_WAITALL) on a blocking TCP socket waits, as Linux's
 * TCP does, until the whole length is there, the stream ends, its receive
 * timeout passes or a signal comes; an AF_UNIX stream peeks what it has.
 * Its readability says nothing of more bytes, so the wait looks again at
 * growing intervals (50 us to 5 ms).  Returns what the last peek did.
 */
static ssize_t stream_peek_all(int fd, struct msghdr *m, size_t want, int flags)
{
	bool nonblock = (flags & MSG_DONTWAIT) || is_nonblock(fd);
	struct timeval tv = { 0 };
	socklen_t tl = sizeof(tv);
	int64_t deadline = -1;
	unsigned int pause = 50;
	ssize_t n;

	if (!nk_real.getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) &&
	    (tv.tv_sec || tv.tv_usec))
		deadline = nk_mono_ms() + tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
		char c;

		n = nk_real.recvmsg(fd, m, (flags & ~MSG_WAITALL) | MSG_DONTWAIT);
		if ((n < 0 && errno != EAGAIN) || (n > 0 && (size_t)n >= want) || n == 0 || nonblock)
			return n;
		if (n < 0) {
			/* nothing yet: wait in the kernel for the first byte (the
			 * stream has the socket's SO_RCVTIMEO; SA_RESTART
			 * restarts it, as Linux restarts the recv) */
			n = nk_real.recv(fd, &c, 1, MSG_PEEK);
			if (n <= 0)
				return n;
			continue;
		}
		/* the stream ended behind what is there: no more comes */
		if (n > 0 && nk_real.poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP)))
			return n;
		if (deadline >= 0 && nk_mono_ms() >= deadline)
			return n;
		if (usleep(pause) < 0 && errno == EINTR)
			return n;	/* what is there, as Linux's copied count */
		if (pause < 5000)
			pause *= 2;
	}
}

NK_API ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
			socklen_t *alen)
{
	struct nk_sock *sk;
	ssize_t n;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.recvfrom(fd, buf, len, flags, addr, alen);
	if (sk->type == SOCK_DGRAM) {
		struct iovec v = { buf, len };
		bool local;

		n = udp_recv(sk, fd, &v, 1, flags, addr, alen, NULL, &local);
		if (local)
			n = nk_real.recvfrom(fd, buf, len, flags, addr, alen);
		nks_put(sk);
		return n;
	}
	if (stream_errqueue(sk, flags, &n)) {
		nks_put(sk);
		return n;
	}
	switch (data_gate(sk, fd, false, flags, &n)) {
	case 0:
		break;
	case 1:
		/* TCP reports no source address; the stream must not
		 * report its own. */
		if (flags & MSG_TRUNC) {
			n = stream_recv_trunc(fd, len, flags);
		} else if ((flags & (MSG_PEEK | MSG_WAITALL)) == (MSG_PEEK | MSG_WAITALL)) {
			struct iovec v = { buf, len };
			struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };

			n = stream_peek_all(fd, &m, len, flags);
		} else {
			n = nk_real.recvfrom(fd, buf, len, flags, NULL, NULL);
		}
		if (n >= 0 && addr && alen)
			*alen = 0;
		if (n == 0 && len)
			n = read_eof(sk, fd);
		break;
	default:
		n = nk_real.recvfrom(fd, buf, len, flags, addr, alen);
	}
	nks_put(sk);
	return n;
}

NK_API ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	INIT();
	if (!nks_fd_tracked(fd))
		return nk_real.recv(fd, buf, len, flags);
	return recvfrom(fd, buf, len, flags, NULL, NULL);
}

NK_API ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		abort();
	return recv(fd, buf, len, flags);
}

NK_API ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
			      struct sockaddr *addr, socklen_t *alen)
{
	if (len > buflen)
		abort();
	return recvfrom(fd, buf, len, flags, addr, alen);
}

NK_API ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct nk_sock *sk;
	struct msghdr m;
	ssize_t n;
	size_t i, total = 0;

	INIT();
	sk = lookup(fd);
	if (!sk) {
		n = nk_real.recvmsg(fd, msg, flags);
		if (n >= 0 && nk_on && msg && msg->msg_controllen)
			nk_scm_import(msg);
		return n;
	}
	if (sk->type == SOCK_DGRAM) {
		bool local;
		int mf = 0;

		n = udp_recv(sk, fd, msg->msg_iov, msg->msg_iovlen, flags, msg->msg_name,
			     msg->msg_name ? &msg->msg_namelen : NULL, &mf, &local);
		if (local) {
			n = nk_real.recvmsg(fd, msg, flags);
		} else if (n >= 0) {
			msg->msg_flags = mf;
			msg->msg_controllen = 0;
		}
		nks_put(sk);
		return n;
	}
	if (stream_errqueue(sk, flags, &n)) {
		nks_put(sk);
		return n;
	}
	switch (data_gate(sk, fd, false, flags, &n)) {
	case 0:
		break;
	case 1:
		m = *msg;
		m.msg_name = NULL;
		m.msg_namelen = 0;
		m.msg_control = NULL;	/* no ancillary data over TCP here */
		m.msg_controllen = 0;
		for (i = 0; i < (size_t)msg->msg_iovlen; i++)
			total += msg->msg_iov[i].iov_len;
		if (flags & MSG_TRUNC) {
			n = stream_recv_trunc(fd, total, flags);
			m.msg_flags = 0;
		} else if ((flags & (MSG_PEEK | MSG_WAITALL)) == (MSG_PEEK | MSG_WAITALL)) {
			n = stream_peek_all(fd, &m, total, flags);
		} else {
			n = nk_real.recvmsg(fd, &m, flags);
		}
		if (n >= 0) {
			msg->msg_namelen = 0;
			msg->msg_controllen = 0;
			msg->msg_flags = m.msg_flags;
		}
		if (n == 0 && total)
			n = read_eof(sk, fd);
		break;
	default:
		n = nk_real.recvmsg(fd, msg, flags);
	}
	nks_put(sk);
	return n;
}

/*
 * send with MSG_FASTOPEN on a TCP socket (sk's reference is put here): as
 * Linux's tcp_sendmsg_fastopen(), a connect first (no SYN data: the
 * connect goes through the NSM), then the bytes.  Returns 1 to send them
 * now, or -1 with errno: connect()'s (EINPROGRESS when non-blocking), or
 * EISCONN on a connected or listening socket, as __inet_stream_connect().
 */
static int fastopen_connect(struct nk_sock *sk, int fd, const struct sockaddr *addr,
			    socklen_t alen)
{
	enum nks_state st = sk->state;

	nks_put(sk);
	if (st == NKS_CONNECTED || st == NKS_LISTENING)
		return fail(EISCONN);
	if (st == NKS_CONNECTING)
		return fail(EALREADY);
	if (!addr)
		return fail(EDESTADDRREQ);
	return connect(fd, addr, alen) < 0 ? -1 : 1;
}

NK_API ssize_t sendto(int fd, const void *buf, size_t len, int flags,
		      const struct sockaddr *addr, socklen_t alen)
{
	struct nk_sock *sk;
	ssize_t n;
	int ret;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.sendto(fd, buf, len, flags, addr, alen);
	if (sk->type == SOCK_DGRAM) {
		struct iovec v = { (void *)buf, len };
		bool local;

		n = udp_send(sk, fd, &v, 1, flags, addr, alen, &local);
		if (local)
			n = nk_real.sendto(fd, buf, len, flags, addr, alen);
		nks_put(sk);
		return n;
	}
	if (flags & MSG_FASTOPEN) {
		ret = fastopen_connect(sk, fd, addr, alen);
		if (ret <= 0)
			return ret;	/* -1: connect's error; EISCONN */
		return sendto(fd, buf, len, flags & ~MSG_FASTOPEN, NULL, 0);
	}
	switch (data_gate(sk, fd, true, flags, &n)) {
	case 0:
		break;
	case 1:
		/* TCP ignores a destination on a connected socket. */
		stream_pre_send(sk, fd, len);
		n = stream_sent(sk, fd, len, nk_real.send(fd, buf, len, stream_send_flags(fd, flags)),
				flags);
		break;
	default:
		n = nk_real.sendto(fd, buf, len, flags, addr, alen);
	}
	nks_put(sk);
	return n;
}

NK_API ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	INIT();
	if (!nks_fd_tracked(fd))
		return nk_real.send(fd, buf, len, flags);
	return sendto(fd, buf, len, flags, NULL, 0);
}

NK_API ssize_t write(int fd, const void *buf, size_t len)
{
	struct nk_sock *sk;
	ssize_t n;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.write(fd, buf, len);
	if (sk->type == SOCK_DGRAM) {
		struct iovec v = { (void *)buf, len };
		bool local;

		n = udp_send(sk, fd, &v, 1, 0, NULL, 0, &local);
		if (local)
			n = nk_real.write(fd, buf, len);
		nks_put(sk);
		return n;
	}
	switch (data_gate(sk, fd, true, 0, &n)) {
	case 0:
		break;
	case 1:
		stream_pre_send(sk, fd, len);
		n = stream_sent(sk, fd, len, nk_real.send(fd, buf, len, MSG_NOSIGNAL), 0);
		break;
	default:
		n = nk_real.write(fd, buf, len);
	}
	nks_put(sk);
	return n;
}

NK_API ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct nk_sock *sk;
	struct msghdr m;
	size_t len;
	ssize_t n;

	INIT();
	sk = lookup(fd);
	if (!sk) {
		if (nk_on && msg && msg->msg_controllen)
			nk_scm_export(msg);
		return nk_real.sendmsg(fd, msg, flags);
	}
	if (sk->type == SOCK_DGRAM) {
		bool local;

		if (msg->msg_controllen) {
			nk_logf("sendmsg(fd %d): ancillary data is not supported on UDP", fd);
			nks_put(sk);
			return fail(EOPNOTSUPP);
		}
		n = udp_send(sk, fd, msg->msg_iov, msg->msg_iovlen, flags, msg->msg_name,
			     msg->msg_namelen, &local);
		if (local)
			n = nk_real.sendmsg(fd, msg, flags);
		nks_put(sk);
		return n;
	}
	if (flags & MSG_FASTOPEN) {
		struct msghdr m2 = *msg;
		int ret = fastopen_connect(sk, fd, msg->msg_name, msg->msg_namelen);

		if (ret <= 0)
			return ret;
		m2.msg_name = NULL;
		m2.msg_namelen = 0;
		return sendmsg(fd, &m2, flags & ~MSG_FASTOPEN);
	}
	switch (data_gate(sk, fd, true, flags, &n)) {
	case 0:
		break;
	case 1:
		m = *msg;
		m.msg_name = NULL;
		m.msg_namelen = 0;
		if (m.msg_controllen) {
			/* No ancillary data is carried for TCP. */
			nk_logf("sendmsg(fd %d): ancillary data is not supported", fd);
			n = fail(EOPNOTSUPP);
			break;
		}
		len = nk_iov_total(m.msg_iov, m.msg_iovlen);
		stream_pre_send(sk, fd, len);
		n = stream_sent(sk, fd, len, nk_real.sendmsg(fd, &m, stream_send_flags(fd, flags)),
				flags);
		break;
	default:
		n = nk_real.sendmsg(fd, msg, flags);
	}
	nks_put(sk);
	return n;
}

NK_API ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = cnt };
	struct nk_sock *sk;
	size_t len;
	ssize_t n;

	INIT();
	sk = lookup(fd);
	if (!sk)
		return nk_real.writev(fd, iov, cnt);
	if (cnt < 0 || cnt > IOV_MAX) {	/* as Linux's writev(), before the socket */
		nks_put(sk);
		return fail(EINVAL);
	}
	if (sk->type == SOCK_DGRAM) {
		bool local;

		n = udp_send(sk, fd, iov, cnt, 0, NULL, 0, &local);
		if (local)
			n = nk_real.writev(fd, iov, cnt);
		nks_put(sk);
		return n;
	}
	switch (data_gate(sk, fd, true, 0, &n)) {
	case 0:
		break;
	case 1:
		len = nk_iov_total(iov, cnt);
		stream_pre_send(sk, fd, len);
		n = stream_sent(sk, fd, len, nk_real.sendmsg(fd, &m, MSG_NOSIGNAL), 0);
		break;
	default:
		n = nk_real.writev(fd, iov, cnt);
	}
	nks_put(sk);
	return n;
}

/*
 * sendfile() and splice() into a guest stream have no MSG_NOSIGNAL, and
 * after a reset the stream's kernel raises SIGPIPE at once, where Linux's
 * TCP says ECONNRESET without it on the first write.  Around such a call
 * SIGPIPE is held back (unless it is ignored: then it never arrives), and
 * one the call raised is taken back, so that write_epipe() decides as for
 * send(): ECONNRESET without a signal after a reset, EPIPE with SIGPIPE
 * otherwise.  A short transfer takes one back too: the kernel raised it
 * on an inner send that met the reset, and Linux's TCP returns the count
 * without a signal (the next call says ECONNRESET).  A SIGPIPE that was
 * pending before the call is left alone; one pending for the whole
 * process while the thread blocked SIGPIPE cannot be told from the
 * thread's own, so then none is taken back (docs/compat.md).
 */
struct pipe_hold {
	sigset_t old;
	bool held;
	bool pending;
};

static void sigpipe_hold(struct pipe_hold *h)
{
	struct sigaction sa;
	sigset_t set, pend;

	h->held = false;
	if (!sigaction(SIGPIPE, NULL, &sa) && sa.sa_handler == SIG_IGN)
		return;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	if (pthread_sigmask(SIG_BLOCK, &set, &h->old))
		return;
	h->held = true;
	/* unblocked until now, none can be pending for this thread */
	h->pending = sigismember(&h->old, SIGPIPE) && !sigpending(&pend) &&
		     sigismember(&pend, SIGPIPE);
}

/* After a call asked to move len bytes: n and errno are its result, kept. */
static void sigpipe_release(struct pipe_hold *h, ssize_t n, size_t len)
{
	struct timespec zero = { 0, 0 };
	int e = errno;
	sigset_t set;

	if (!h->held)
		return;
	if ((n < 0 ? e == EPIPE : (size_t)n < len) && !h->pending) {
		sigemptyset(&set);
		sigaddset(&set, SIGPIPE);
		while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &h->old, NULL);
	errno = e;
}

/*
 * data_gate() for sendfile() and splice(), which would bypass the
 * datagram framing of a UDP socket's stream: that one gets EINVAL.
 */
static int pipe_gate(struct nk_sock *sk, int fd, bool is_write, const char *call, ssize_t *res)
{
	if (sk->type != SOCK_DGRAM)
		return data_gate(sk, fd, is_write, 0, res);
	if (sk->state == NKS_FRESH || sk->state == NKS_LOCAL)
		return -1;	/* a plain local socket */
	nk_logf("%s(fd %d): not supported on a UDP socket", call, fd);
	*res = fail(EINVAL);
	return 0;
}

/*
 * sendfile() to a socket: on a connected stream, the same checks and buffer
 * as write(); a socket that is not connected fails as on Linux instead of
 * having bytes written into its set-up stream; SIGPIPE as for send()
 * (sigpipe_hold()).  <sys/sendfile.h> is not included: with
 * 64-bit file offsets it renames sendfile to sendfile64, and both are
 * exported here.
 */
ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count);
ssize_t sendfile64(int out_fd, int in_fd, int64_t *offset, size_t count);

static ssize_t do_sendfile(int out_fd, int in_fd, void *offset, size_t count, bool is64)
{
	struct nk_sock *sk;
	ssize_t n;

#define REAL_SENDFILE() (is64 ? nk_real.sendfile64(out_fd, in_fd, offset, count) \
			      : nk_real.sendfile(out_fd, in_fd, offset, count))
	INIT();
	if (!nks_fd_tracked(out_fd) || !(sk = lookup(out_fd)))
		return REAL_SENDFILE();
	switch (pipe_gate(sk, out_fd, true, "sendfile", &n)) {
	case 0:
		break;
	case 1: {
		struct pipe_hold h;

		stream_pre_send(sk, out_fd, count);
		sigpipe_hold(&h);
		n = REAL_SENDFILE();
		sigpipe_release(&h, n, count);
		n = stream_sent(sk, out_fd, count, n, 0);
		break;
	}
	default:
		n = REAL_SENDFILE();
	}
	nks_put(sk);
	return n;
#undef REAL_SENDFILE
}

NK_API ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
	return do_sendfile(out_fd, in_fd, offset, count, false);
}

NK_API ssize_t sendfile64(int out_fd, int in_fd, int64_t *offset, size_t count)
{
	return do_sendfile(out_fd, in_fd, offset, count, true);
}

/*
 * splice() between a pipe and a guest socket: the same checks as write()
 * (socket as destination; SIGPIPE as for send(): sigpipe_hold()) or read() (socket as
 * source), so a socket that is not connected fails as on Linux instead of
 * exposing its set-up stream, and the end of a reset connection reads as
 * ECONNRESET.
 */
NK_API ssize_t splice(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len,
		      unsigned int flags)
{
	struct nk_sock *sk = NULL;
	bool out = false;
	int fd = -1;
	ssize_t n;

#define REAL_SPLICE() nk_real.splice(fd_in, off_in, fd_out, off_out, len, flags)
	INIT();
	if (nks_fd_tracked(fd_out) && (sk = lookup(fd_out))) {
		fd = fd_out;
		out = true;
	} else if (nks_fd_tracked(fd_in) && (sk = lookup(fd_in))) {
		fd = fd_in;
	}
	if (!sk)
		return REAL_SPLICE();
	switch (pipe_gate(sk, fd, out, "splice", &n)) {
	case 0:
		break;
	case 1:
		if (out) {
			struct pipe_hold h;

			stream_pre_send(sk, fd, len);
			sigpipe_hold(&h);
			n = REAL_SPLICE();
			sigpipe_release(&h, n, len);
			n = stream_sent(sk, fd, len, n, 0);
		} else {
			n = REAL_SPLICE();
			if (n == 0 && len)
				n = read_eof(sk, fd);
		}
		break;
	default:
		n = REAL_SPLICE();
	}
	nks_put(sk);
	return n;
#undef REAL_SPLICE
}

/* ---- descriptors -------------------------------------------------------- */

NK_API int dup(int fd)
{
	int nfd;

	INIT();
	nfd = nk_real.dup(fd);
	if (nfd >= 0 && nk_on)
		nks_dup(fd, nfd);
	return nfd;
}

NK_API int dup2(int fd, int nfd)
{
	int ret;

	INIT();
	ret = nk_real.dup2(fd, nfd);
	if (ret >= 0 && fd != nfd)
		nk_ctl_fd_gone(nfd, nfd);
	if (ret >= 0 && nk_on && fd != nfd) {
		nks_epfd_closed(nfd);	/* if it was an epoll fd, it is gone */
		nks_dup(fd, nfd);
	}
	return ret;
}

NK_API int dup3(int fd, int nfd, int flags)
{
	int ret;

	INIT();
	ret = nk_real.dup3(fd, nfd, flags);
	if (ret >= 0)
		nk_ctl_fd_gone(nfd, nfd);
	if (ret >= 0 && nk_on) {
		nks_epfd_closed(nfd);
		nks_dup(fd, nfd);
	}
	return ret;
}

static int do_fcntl(int fd, int cmd, va_list ap)
{
	void *arg = va_arg(ap, void *);
	int ret;

	ret = nk_real.fcntl(fd, cmd, arg);
	if (ret >= 0 && nk_on && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		nks_dup(fd, ret);
	return ret;
}

NK_API int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	int ret;

	INIT();
	va_start(ap, cmd);
	ret = do_fcntl(fd, cmd, ap);
	va_end(ap);
	return ret;
}

/* glibc's large-file name for the same call. */
NK_API int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

NK_API int close_range(unsigned int first, unsigned int last, int flags)
{
	unsigned int fd;
	int ret;

	INIT();
	ret = (int)syscall(SYS_close_range, first, last, flags);
	if (ret == 0 && !(flags & CLOSE_RANGE_CLOEXEC))
		nk_ctl_fd_gone(first > INT_MAX ? INT_MAX : (int)first,
			       last > INT_MAX ? INT_MAX : (int)last);
	if (ret == 0 && nk_on && !(flags & CLOSE_RANGE_CLOEXEC)) {
		struct rlimit rl = { 0 };

		getrlimit(RLIMIT_NOFILE, &rl);
		if (last > rl.rlim_cur)
			last = rl.rlim_cur;
		for (fd = first; fd <= last && fd < INT_MAX; fd++)
			nks_forget((int)fd);
	}
	return ret;
}

NK_API void closefrom(int first)
{
	INIT();
	close_range(first, ~0U, 0);
}

/* ---- batched datagrams and ioctl ---------------------------------------- */

NK_API int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
	static int (*real)(int, struct mmsghdr *, unsigned int, int);
	unsigned int i;
	ssize_t n;

	INIT();
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "sendmmsg");
	if (!nks_fd_tracked(fd) || !nk_on)
		return real(fd, vec, vlen, flags);
	/* One datagram at a time through sendmsg(): stop at the first
	 * error, returning it only if nothing was sent (as Linux). */
	for (i = 0; i < vlen; i++) {
		n = sendmsg(fd, &vec[i].msg_hdr, flags);
		if (n < 0)
			return i ? (int)i : -1;
		vec[i].msg_len = n;
	}
	return (int)i;
}

NK_API int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags,
		    struct timespec *timeout)
{
	static int (*real)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
	int64_t end = 0;
	unsigned int i;
	ssize_t n;

	INIT();
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "recvmmsg");
	if (!nks_fd_tracked(fd) || !nk_on)
		return real(fd, vec, vlen, flags, timeout);
	/* As Linux's do_recvmmsg(): each datagram as the flags say
	 * (MSG_WAITFORONE: only the first waits); the timeout is checked
	 * between datagrams only, and what is left of it written back. */
	if (timeout) {
		if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000) {
			errno = EINVAL;
			return -1;
		}
		/* saturated, as Linux's timespec64_add_safe() */
		end = timeout->tv_sec >= (INT64_MAX - nk_mono_ns()) / 1000000000 - 1 ? INT64_MAX :
		      nk_mono_ns() + timeout->tv_sec * 1000000000LL + timeout->tv_nsec;
	}
	if (vlen > UIO_MAXIOV)
		vlen = UIO_MAXIOV;
	for (i = 0; i < vlen;) {
		int f = flags & ~MSG_WAITFORONE;

		if (i && (flags & MSG_WAITFORONE))
			f |= MSG_DONTWAIT;
		n = recvmsg(fd, &vec[i].msg_hdr, f);
		if (n < 0 && i && errno != EAGAIN) {
			/* Linux keeps the error for the next call (sk_err) */
			struct nk_sock *sk = lookup(fd);

			if (sk && sk->type == SOCK_DGRAM && sk->state != NKS_FRESH &&
			    sk->state != NKS_LOCAL) {
				pthread_mutex_lock(&sk->rlock);
				sk->held_err = errno;
				pthread_mutex_unlock(&sk->rlock);
			}
			nks_put(sk);
		}
		if (n < 0)
			return i ? (int)i : -1;
		vec[i++].msg_len = n;
		if (timeout) {
			int64_t left = end - nk_mono_ns();

			if (left < 0)
				left = 0;
			timeout->tv_sec = left / 1000000000;
			timeout->tv_nsec = left % 1000000000;
			if (!left)
				break;
		}
	}
	return (int)i;
}

/* FIONREAD by MSG_PEEK, for transports without it (up to 1 MiB). */
static int stream_inq(int fd, int *val)
{
	static __thread char *buf;
	const size_t max = 1 << 20;
	ssize_t n;

	if (!buf)
		buf = malloc(max);
	if (!buf) {
		errno = ENOMEM;
		return -1;
	}
	n = nk_real.recv(fd, buf, max, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && errno != EAGAIN)
		return -1;
	*val = n > 0 ? (int)n : 0;
	return 0;
}

/* FIONREAD of a stream: the transport's, or, where it has no SIOCINQ
 * (AF_VSOCK in older guest kernels), counted by peeking. */
static int stream_fionread(int fd, int *val)
{
	int ret = nk_real.ioctl(fd, FIONREAD, val);

	if (ret < 0 && (errno == EOPNOTSUPP || errno == ENOTTY))
		ret = stream_inq(fd, val);
	return ret;
}

NK_API int ioctl(int fd, unsigned long req, ...)
{
	struct nk_sock *sk;
	va_list ap;
	void *arg;
	int ret;

	INIT();
	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	sk = lookup(fd);
	/* a listener has no bytes either way: Linux's TCP says EINVAL (not
	 * the count of the stream's accept records) */
	if (sk && sk->type == SOCK_STREAM && sk->state == NKS_LISTENING &&
	    (req == FIONREAD || req == SIOCOUTQ || req == SIOCOUTQNSD)) {
		bool shut = sk->shut;	/* then Linux's is closed: 0 */

		nks_put(sk);
		if (!shut)
			return fail(EINVAL);
		if (!arg)
			return fail(EFAULT);
		*(int *)arg = 0;
		return 0;
	}
	if (sk && req == FIONREAD && sk->type == SOCK_STREAM &&
	    (sk->state == NKS_CONNECTED || sk->state == NKS_CONNECTING)) {
		ret = arg ? stream_fionread(fd, arg) : nk_real.ioctl(fd, req, arg);
		nks_put(sk);
		return ret;
	}
	if (!sk || req != FIONREAD || sk->type != SOCK_DGRAM || sk->state == NKS_FRESH ||
	    sk->state == NKS_LOCAL) {
		nks_put(sk);
		return nk_real.ioctl(fd, req, arg);
	}
	if (!arg) {
		nks_put(sk);
		return fail(EFAULT);
	}
	ret = nk_dgram_fionread(sk, fd, arg);
	nks_put(sk);
	return ret ? fail(-ret) : 0;
}

/* fclose() closes its fd inside libc, past close(): forget the socket. */
NK_API int fclose(FILE *fp)
{
	static int (*real)(FILE *);
	int fd, ret, e;

	INIT();
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "fclose");
	fd = fp ? fileno(fp) : -1;
	if (fd >= 0 && nks_fd_tracked(fd))
		nks_forget(fd);
	ret = real(fp);
	if (fd >= 0) {
		e = errno;
		nk_ctl_fd_gone(fd, fd);
		errno = e;
	}
	return ret;
}
