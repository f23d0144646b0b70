// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libnkguest: UDP sockets.
 *
 * A datagram socket is a stream too, in data mode as soon as it is
 * promoted, carrying one frame (struct nk_dgram_hdr + payload, proto.h) per
 * datagram.  Sending writes a whole frame with one sendmsg(); receiving
 * reads one frame under the socket's receive lock, so boundaries, source
 * addresses, MSG_PEEK and MSG_TRUNC behave as on a UDP socket.  Loopback
 * destinations keep the socket local, as for TCP.
 *
 * What cannot be exact: errors the NSM's sendto() meets (a route missing
 * on the host side) are not returned by the guest's send, which has already
 * succeeded; they are counted and logged by the NSM.  Errors Linux reports
 * asynchronously (ICMP port unreachable on a connected socket) arrive as
 * error frames and are returned by the next receive, as on Linux.
 */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>


#include "nkaddr.h"
#include "nkguest.h"

#define FRAME_HDR	sizeof(struct nk_dgram_hdr)

size_t nk_iov_total(const struct iovec *iov, int cnt)
{
	size_t t = 0;
	int i;

	for (i = 0; i < cnt; i++)
		t += iov[i].iov_len;
	return t;
}

static bool fd_nonblock(int fd)
{
	int fl = nk_real.fcntl(fd, F_GETFL);

	return fl >= 0 && (fl & O_NONBLOCK);
}

/* Wait until the stream holds at least want bytes (MSG_PEEK), or EOF.  A
 * blocking wait honours the socket's SO_RCVTIMEO (-EAGAIN on expiry). */
static ssize_t peek_wait(int fd, void *buf, size_t want, bool nonblock)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t n;

	for (;;) {
		n = nk_real.recv(fd, buf, want, MSG_PEEK | (nonblock ? MSG_DONTWAIT : 0));
		if (n == (ssize_t)want || n == 0)
			return n;
		if (n < 0 && errno == EINTR)
			return -EINTR;
		if (n < 0)
			return -errno;
		/* A partial frame only lasts until the rest of its single
		 * write lands. */
		nk_real.poll(&pfd, 1, 10);
		n = nk_real.recv(fd, buf, want, MSG_PEEK | MSG_DONTWAIT);
		if (n == (ssize_t)want || n == 0)
			return n;
	}
}

/*
 * The stream's own errors: its NSM end closed with frames unread there
 * (ECONNRESET) is the NSM going away, as EOF is.
 */
static ssize_t stream_err(ssize_t e)
{
	return e == -ECONNRESET || e == -EPIPE ? -ENETDOWN : e;
}

static int frame_check(const struct nk_dgram_hdr *h)
{
	if (h->len > NK_DGRAM_MAX || (h->flags & ~NK_DGRAM_F_ERROR) ||
	    ((h->flags & NK_DGRAM_F_ERROR) && (h->len || !h->err)))
		return -EPROTO;
	return 0;
}

/*
 * Take the error frame at the head of the stream and the error frames
 * right behind it: Linux keeps one pending error per socket (the latest
 * ICMP's), which a receive reports once, however many arrived since the
 * last one.  Returns the latest error (positive) or -errno.
 */
static int take_errors(int fd)
{
	struct nk_dgram_hdr h;
	int ret = stream_err(nk_recv_all(fd, &h, FRAME_HDR)), e;

	if (ret)
		return ret;
	e = h.err;
	while (nk_real.recv(fd, &h, FRAME_HDR, MSG_PEEK | MSG_DONTWAIT) == (ssize_t)FRAME_HDR &&
	       !frame_check(&h) && (h.flags & NK_DGRAM_F_ERROR) && !nk_recv_all(fd, &h, FRAME_HDR))
		e = h.err;
	return e;
}

/*
 * Receive one datagram into iov.  Returns the byte count (the datagram's
 * full length with MSG_TRUNC), or -errno.
 */
ssize_t nk_dgram_recv(struct nk_sock *sk, int fd, const struct iovec *iov, int cnt, int flags,
		      struct sockaddr *src, socklen_t *slen, int *mflags)
{
	bool nonblock = (flags & MSG_DONTWAIT) || fd_nonblock(fd);
	size_t room = nk_iov_total(iov, cnt), copy, off, i;
	struct sockaddr_storage ss;
	struct nk_dgram_hdr h;
	socklen_t sl = 0;
	char *frame = NULL;
	ssize_t n, ret;

	if (cnt < 0 || cnt > IOV_MAX)
		return -EMSGSIZE;
	/* the error queue: empty, as IP_RECVERR is not carried (docs/compat.md) */
	if (flags & MSG_ERRQUEUE)
		return -EAGAIN;
	if (flags & ~(MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT | MSG_WAITALL | MSG_CMSG_CLOEXEC)) {
		nk_logf("fd %d: recv flags %#x are not supported on UDP", fd, flags);
		return -EOPNOTSUPP;
	}
	if (sk->dead)
		return -ENETDOWN;	/* lost with its NSM (shim.c, udp_revive()) */
	pthread_mutex_lock(&sk->rlock);
	if (sk->held_err) {
		ret = -sk->held_err;
		sk->held_err = 0;
		goto out;
	}
	n = peek_wait(fd, &h, FRAME_HDR, nonblock);
	if (n == 0) {
		ret = -ENETDOWN;	/* the NSM went away */
		goto out;
	}
	if (n < 0) {
		ret = stream_err(n);
		goto out;
	}
	if (frame_check(&h)) {
		nk_logf("fd %d: bad datagram frame from the host", fd);
		ret = -EPROTO;
		goto out;
	}
	if (h.flags & NK_DGRAM_F_ERROR) {
		/* A pending socket error: reported once, then gone. */
		ret = take_errors(fd);
		if (ret > 0)
			ret = -ret;
		goto out;
	}
	if (flags & MSG_PEEK) {
		frame = malloc(FRAME_HDR + h.len);
		if (!frame) {
			ret = -ENOMEM;
			goto out;
		}
		n = peek_wait(fd, frame, FRAME_HDR + h.len, false);
		if (n != (ssize_t)(FRAME_HDR + h.len)) {
			ret = n < 0 ? stream_err(n) : -ENETDOWN;
			goto out;
		}
		copy = h.len < room ? h.len : room;
		for (i = 0, off = 0; i < (size_t)cnt && off < copy; i++) {
			size_t c = iov[i].iov_len < copy - off ? iov[i].iov_len : copy - off;

			memcpy(iov[i].iov_base, frame + FRAME_HDR + off, c);
			off += c;
		}
	} else {
		struct iovec riov[cnt > 0 ? cnt : 1];
		struct msghdr m = { 0 };
		char discard[512];

		ret = stream_err(nk_recv_all(fd, &h, FRAME_HDR));
		if (ret)
			goto out;
		copy = h.len < room ? h.len : room;
		for (i = 0, off = 0; i < (size_t)cnt && off < copy; i++) {
			riov[i] = iov[i];
			if (riov[i].iov_len > copy - off)
				riov[i].iov_len = copy - off;
			off += riov[i].iov_len;
		}
		m.msg_iov = riov;
		m.msg_iovlen = i;
		while (copy) {
			n = nk_real.recvmsg(fd, &m, MSG_WAITALL);
			if (n <= 0) {
				ret = n == 0 ? -ENETDOWN : stream_err(-errno);
				if (ret == -EINTR || ret == -EAGAIN) {
					struct pollfd pfd = { .fd = fd, .events = POLLIN };

					nk_real.poll(&pfd, 1, -1);
					continue;
				}
				goto out;
			}
			/* advance the iovec past what arrived */
			copy -= n;
			while (n && m.msg_iovlen) {
				size_t c = (size_t)n < m.msg_iov->iov_len ? (size_t)n
									  : m.msg_iov->iov_len;

				m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + c;
				m.msg_iov->iov_len -= c;
				n -= c;
				if (!m.msg_iov->iov_len) {
					m.msg_iov++;
					m.msg_iovlen--;
				}
			}
		}
		/* The part that did not fit is dropped, as UDP does. */
		for (off = h.len < room ? h.len : room; off < h.len;) {
			size_t c = h.len - off < sizeof(discard) ? h.len - off : sizeof(discard);

			ret = stream_err(nk_recv_all(fd, discard, c));
			if (ret)
				goto out;
			off += c;
		}
	}
	nk_set_addr(&ss, &sl, &h.addr, sk->domain);
	if (src && slen) {
		memcpy(src, &ss, *slen < sl ? *slen : sl);
		*slen = sl;
	}
	if (mflags)
		*mflags = h.len > room ? MSG_TRUNC : 0;
	ret = (flags & MSG_TRUNC) ? (ssize_t)h.len : (ssize_t)(h.len < room ? h.len : room);
out:
	pthread_mutex_unlock(&sk->rlock);
	free(frame);
	return ret;
}

/* A pending error frame at the head of the stream, consumed: Linux reports
 * a connected UDP socket's pending error (ICMP unreachable) on the next
 * send, recv or SO_ERROR, once.  Returns the errno or 0. */
int nk_dgram_pending_error(struct nk_sock *sk, int fd)
{
	struct nk_dgram_hdr h;
	ssize_t n;
	int e = 0;

	/* A thread blocked in recv() holds rlock and will report the error
	 * itself: never wait for it (a send must not hang on a receive). */
	if (pthread_mutex_trylock(&sk->rlock))
		return 0;
	if (sk->held_err) {
		e = sk->held_err;
		sk->held_err = 0;
		pthread_mutex_unlock(&sk->rlock);
		return e;
	}
	n = nk_real.recv(fd, &h, FRAME_HDR, MSG_PEEK | MSG_DONTWAIT);
	if (n == (ssize_t)FRAME_HDR && !frame_check(&h) && (h.flags & NK_DGRAM_F_ERROR)) {
		e = take_errors(fd);
		if (e < 0)
			e = 0;
	}
	pthread_mutex_unlock(&sk->rlock);
	return e;
}

/* Is the next frame an error frame?  (poll reports POLLERR for it.) */
bool nk_dgram_error_pending(int fd)
{
	struct nk_dgram_hdr h;

	return nk_real.recv(fd, &h, FRAME_HDR, MSG_PEEK | MSG_DONTWAIT) == (ssize_t)FRAME_HDR &&
	       (h.flags & NK_DGRAM_F_ERROR);
}

/* An IPv4 destination, or IPv4 as v4-mapped (an AF_INET6 socket's)? */
static bool dgram_to_v4(const struct nk_addr *a)
{
	return a->family == NK_AF_INET || nk_addr_is_v4mapped(a);
}

/*
 * The largest datagram to a (NULL or family 0: the connected peer):
 * IPv4's for IPv4 destinations, v4-mapped ones too, as Linux's
 * udp_sendmsg() and udpv6_sendmsg() say.
 */
static size_t dgram_max(const struct nk_sock *sk, const struct nk_addr *a)
{
	const struct sockaddr_in6 *p = (const void *)&sk->peer;
	bool v4;

	if (a && a->family != NK_AF_UNSPEC)
		v4 = dgram_to_v4(a);
	else
		v4 = sk->domain == AF_INET || sk->peer.ss_family == AF_INET ||
		     (sk->peer.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&p->sin6_addr));
	return v4 ? 65507 : 65527;
}

/*
 * A sendto() destination as Linux takes it: an AF_INET socket takes the
 * address and port of an AF_UNSPEC sockaddr_in too (udp_sendmsg()); an
 * AF_INET6 socket sends to a sockaddr_in as to its v4-mapped address,
 * ignores an AF_UNSPEC one and refuses other families with EINVAL
 * (udpv6_sendmsg()).  Returns 0 (*a set), 1 (ignored) or -errno.
 */
static int dgram_dst(const struct nk_sock *sk, const struct sockaddr *dst, socklen_t dlen,
		     struct nk_addr *a)
{
	struct sockaddr_in sin;
	int ret;

	if (sk->domain == AF_INET || dst->sa_family == AF_INET) {
		if (sk->domain == AF_INET6 && sk->v6only)
			return -ENETUNREACH;
		if (dlen < sizeof(sin))
			return -EINVAL;
		memcpy(&sin, dst, sizeof(sin));
		if (sin.sin_family != AF_INET && sin.sin_family != AF_UNSPEC)
			return -EAFNOSUPPORT;
		sin.sin_family = AF_INET;
		ret = nk_addr_from_sockaddr(a, (struct sockaddr *)&sin, sizeof(sin));
		if (!ret && sk->domain == AF_INET6)
			*a = nk_addr_v4map(a);	/* the AF_INET6 socket's own kind */
		return ret;
	}
	if (dlen < offsetof(struct sockaddr, sa_data))
		return -EINVAL;
	if (dst->sa_family == AF_UNSPEC)
		return 1;
	if (dst->sa_family != AF_INET6 || dlen < NK_SIN6_LEN_RFC2133)
		return -EINVAL;
	return nk_addr_from_sockaddr(a, dst, dlen);
}

/*
 * Hold the bytes of a send with MSG_MORE (or of the send that ends them)
 * after those already held; dst: this send's destination, NULL for the
 * connected peer's.  Over a datagram's size the held bytes go (EMSGSIZE).
 * Under wlock.  0 or -errno.
 */
static int more_add(struct nk_sock *sk, const struct iovec *iov, int cnt, size_t total,
		    const struct nk_addr *dst)
{
	size_t max = dgram_max(sk, sk->more_len ? &sk->more_addr : dst), off;
	char *p;
	int i;

	if (!sk->more_len) {
		if (dst)
			sk->more_addr = *dst;
		else
			memset(&sk->more_addr, 0, sizeof(sk->more_addr));
	}
	if (sk->more_len + total > max) {
		sk->more_len = 0;
		return -EMSGSIZE;
	}
	if (!sk->more) {
		sk->more = malloc(65527);
		if (!sk->more)
			return -ENOMEM;
	}
	for (i = 0, off = sk->more_len, p = sk->more; i < cnt; i++) {
		memcpy(p + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	sk->more_len = off;
	return 0;
}

/* Send one datagram.  Returns its length or -errno. */
ssize_t nk_dgram_send(struct nk_sock *sk, int fd, const struct iovec *iov, int cnt, int flags,
		      const struct sockaddr *dst, socklen_t dlen)
{
	size_t total = nk_iov_total(iov, cnt), sent, want, ret_len = total;
	struct nk_dgram_hdr h = { 0 };
	struct iovec v[(cnt > 0 && cnt <= IOV_MAX ? cnt : 1) + 1], held;
	struct msghdr m = { 0 };
	ssize_t n;
	int ret;

	if (cnt < 0 || cnt > IOV_MAX)
		return -EMSGSIZE;
	/* MSG_EOR: nothing to UDP, as on Linux */
	flags &= ~MSG_EOR;
	if (flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL | MSG_CONFIRM | MSG_MORE)) {
		nk_logf("fd %d: send flags %#x are not supported on UDP", fd, flags);
		return -EOPNOTSUPP;
	}
	if (sk->shut_wr)
		return -EPIPE;
	if (sk->dead)
		return -ENETDOWN;	/* lost with its NSM (shim.c, udp_revive()) */
	/* bytes held (MSG_MORE): Linux appends before it looks at the
	 * destination, which the first send's stays */
	if (dst && __atomic_load_n(&sk->more_len, __ATOMIC_RELAXED))
		dst = NULL;
	if (dst) {
		ret = dgram_dst(sk, dst, dlen, &h.addr);
		if (ret < 0)
			return ret;
		if (ret)
			dst = NULL;	/* AF_UNSPEC to an AF_INET6 socket: ignored */
		else {
			if (nk_addr_is_loopback(&h.addr)) {
				nk_logf("fd %d: a UDP socket of the VM cannot reach the guest's loopback once it uses NetKernel",
					fd);
				return -ENETUNREACH;
			}
			if (dgram_to_v4(&h.addr) &&
			    !memcmp(h.addr.addr + (h.addr.family == NK_AF_INET ? 0 : 12),
				    "\xff\xff\xff\xff", 4) && !sk->broadcast)
				return -EACCES;	/* 255.255.255.255, plain or v4-mapped */
			if (!h.addr.port)
				return -EINVAL;
			if (sk->v6only && nk_addr_is_v4mapped(&h.addr))
				return -ENETUNREACH;	/* v4-mapped on a v6-only socket */
		}
	}
	if (!dst && sk->state != NKS_CONNECTED && !sk->more_len)
		return -EDESTADDRREQ;	/* (held bytes have the first send's) */
	if (total > dgram_max(sk, dst ? &h.addr : NULL))
		return -EMSGSIZE;
	if (sk->state == NKS_CONNECTED) {
		ret = nk_dgram_pending_error(sk, fd);
		if (ret)
			return -ret;
	}
	pthread_mutex_lock(&sk->wlock);
	if (sk->more_len || (flags & MSG_MORE)) {
		/* MSG_MORE: held, and sent with the next send without it as
		 * one datagram, to the first one's destination (Linux's
		 * corked UDP; too large: EMSGSIZE, and what was held goes) */
		ret = more_add(sk, iov, cnt, total, dst ? &h.addr : NULL);
		if (ret || (flags & MSG_MORE)) {
			pthread_mutex_unlock(&sk->wlock);
			return ret ? ret : (ssize_t)total;
		}
		h.addr = sk->more_addr;
		held = (struct iovec){ sk->more, sk->more_len };
		iov = &held;
		cnt = 1;
		total = sk->more_len;
		sk->more_len = 0;	/* sent, or lost with the stream */
	}
	h.len = total;

	v[0].iov_base = &h;
	v[0].iov_len = FRAME_HDR;
	memcpy(v + 1, iov, cnt * sizeof(*v));
	m.msg_iov = v;
	m.msg_iovlen = cnt + 1;
	want = FRAME_HDR + total;
	n = nk_real.sendmsg(fd, &m, MSG_NOSIGNAL | (flags & MSG_DONTWAIT));
	if (n < 0) {
		ret = errno == EPIPE || errno == ECONNRESET ? -ENETDOWN : -errno;
		pthread_mutex_unlock(&sk->wlock);
		return ret;
	}
	/* Never leave half a frame: finish it even on a non-blocking fd. */
	if ((size_t)n < want) {
		char *rest = malloc(want - n), *p;
		size_t skip = n, off = 0;
		int i;

		if (!rest) {
			pthread_mutex_unlock(&sk->wlock);
			return -ENOMEM;	/* the stream is now unusable */
		}
		for (i = 0; i <= cnt; i++) {
			size_t l = v[i].iov_len;

			if (skip >= l) {
				skip -= l;
				continue;
			}
			memcpy(rest + off, (char *)v[i].iov_base + skip, l - skip);
			off += l - skip;
			skip = 0;
		}
		for (p = rest, sent = 0; sent < off;) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			n = nk_real.send(fd, p + sent, off - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				sent += n;
				continue;
			}
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				break;
			nk_real.poll(&pfd, 1, -1);
		}
		free(rest);
		if (sent < off) {
			pthread_mutex_unlock(&sk->wlock);
			return -ENETDOWN;
		}
	}
	pthread_mutex_unlock(&sk->wlock);
	return ret_len;
}

/* FIONREAD on a UDP socket: the size of the next datagram, as Linux. */
int nk_dgram_fionread(struct nk_sock *sk, int fd, int *val)
{
	struct nk_dgram_hdr h;
	ssize_t n;

	if (pthread_mutex_trylock(&sk->rlock)) {
		*val = 0;	/* a receive is under way; nothing to promise */
		return 0;
	}
	n = nk_real.recv(fd, &h, FRAME_HDR, MSG_PEEK | MSG_DONTWAIT);
	pthread_mutex_unlock(&sk->rlock);
	*val = n == (ssize_t)FRAME_HDR && !(h.flags & NK_DGRAM_F_ERROR) ? (int)h.len : 0;
	return 0;
}
