// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Data mode of UDP guest sockets: frames (struct nk_dgram_hdr + payload,
 * proto.h) on the guest stream <-> datagrams on the real UDP socket(s).
 *
 * Theory of operation
 * -------------------
 * up (guest -> network).  The stream is read in large chunks into one
 * shared work buffer and split into frames.  A frame is checked as soon as
 * its header is in (a malformed one closes the stream, with its socket);
 * a complete frame is sent with one sendto() from the real socket bound to
 * a VM address of the destination's family (nsock_udp_fd: an unbound
 * socket is bound on first use, as Linux binds implicitly).  EAGAIN keeps
 * that frame and everything behind it (udp.pend) and stops reading the
 * stream until the socket is writable: backpressure, nothing dropped.  Any
 * other error (no route, EACCES for a broadcast without SO_BROADCAST,
 * EMSGSIZE) drops the datagram, since the guest's send returned long ago;
 * it is counted per VM and logged, rate-limited.  Destinations the guest
 * may not reach (loopback, unspecified) are dropped the same way.
 *
 * down (network -> guest).  Every real socket of the guest socket (the
 * primary and, for a wildcard bind, one per other VM address) is read
 * with recvmmsg(); each datagram becomes one frame, and a batch of frames
 * is written with one sendmsg() (the stream keeps them in order and
 * whole).  A guest that does not read fills its stream: what the stream
 * does not take is queued, whole frames, about NSM_DGRAM_QUEUE bytes (and
 * always the rest of a frame written in part: never half a frame), the
 * other frames of the batch are dropped and counted (a full UDP receive
 * queue drops too), and the real sockets are not read until the stream
 * has drained, so their own receive queues hold (and drop) what follows.
 * An error the socket reports (ECONNREFUSED after an ICMP port unreachable
 * on a connected socket) becomes an error frame, which is never dropped.
 *
 * The end.  The guest closing its stream (EOF and hang-up) ends the socket
 * once the frames it wrote before are sent; tombstone 0.  EOF alone (the
 * guest's shutdown(SHUT_WR)) only ends the up direction.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "log.h"
#include "nkaddr.h"
#include "nsm.h"

#define HDR	sizeof(struct nk_dgram_hdr)

/* One loop thread: the work buffers are shared by every socket. */
static uint8_t up_buf[NSM_DGRAM_BUF];

int udp_start(struct nsock *ns)
{
	struct udp *u = calloc(1, sizeof(*u));

	if (!u)
		return -ENOMEM;
	u->blocked_fd = -1;
	ns->udp = u;
	return ep_add(ns->fd, EP_UDP, ns, 0);
}

void udp_free(struct nsock *ns)
{
	struct udp *u = ns->udp;

	if (!u)
		return;
	vm_debug(ns->vm, "socket %#llx (UDP): %llu datagrams / %llu bytes up, %llu / %llu down, "
		 "%llu / %llu dropped", (unsigned long long)ns->token,
		 (unsigned long long)u->dgrams_up, (unsigned long long)u->bytes_up,
		 (unsigned long long)u->dgrams_down, (unsigned long long)u->bytes_down,
		 (unsigned long long)u->drops_up, (unsigned long long)u->drops_down);
	free_later(u->pend);
	free_later(u);
	ns->udp = NULL;
}

/* A real socket of ns is going away. */
void udp_fd_closed(struct nsock *ns, int fd)
{
	if (ns->udp && ns->udp->blocked_fd == fd)
		ns->udp->blocked_fd = -1;
}

void udp_update(struct nsock *ns)
{
	struct udp *u = ns->udp;
	struct chan *ch = ns->chan;
	uint32_t g = 0, in = 0;
	int i;

	if (!u || ns->dead || !ch)
		return;
	if (!u->up_eof && u->blocked_fd < 0)
		g |= EPOLLIN;
	if (outq_bytes(&ch->out) || (u->down_paused && !u->down_closed))
		g |= EPOLLOUT;
	if (!u->g_unreg)
		ep_set(ch->fd, g);
	if (!u->down_paused && !u->down_closed && !outq_bytes(&ch->out))
		in = EPOLLIN;
	ep_set(ns->fd, in | (u->blocked_fd == ns->fd ? EPOLLOUT : 0));
	for (i = 0; i < ns->nlfds; i++)
		ep_set(ns->lfds[i], in | (u->blocked_fd == ns->lfds[i] ? EPOLLOUT : 0));
}

/* Done when the guest has closed and everything it wrote is sent. */
static bool udp_done(struct nsock *ns)
{
	struct udp *u = ns->udp;

	if (ns->dead)
		return true;
	if (!u->up_eof || u->blocked_fd >= 0 || !(u->g_hup || u->down_closed))
		return false;
	nsock_kill(ns, 0);
	return true;
}

/* ---- down: network -> guest --------------------------------------------- */

/*
 * An error frame: written whole or queued whole, never dropped (the guest
 * must learn about the error, as Linux keeps it pending).  While the
 * stream is full, the errors met meanwhile are one pending error, as
 * Linux keeps one per socket (sk_err: the latest): held, and sent once
 * the stream drains (udp_event_guest()), never queued one per ICMP
 * message, which a guest that does not read would let grow without bound.
 */
static void down_error(struct nsock *ns, int err)
{
	struct nk_dgram_hdr h = { .flags = NK_DGRAM_F_ERROR, .err = (uint16_t)err };
	struct udp *u = ns->udp;
	struct chan *ch = ns->chan;
	ssize_t n = 0;

	vm_debug(ns->vm, "socket %#llx (UDP): error frame %s", (unsigned long long)ns->token,
		 strerror(err));
	if (u->down_closed)
		return;
	if (outq_bytes(&ch->out)) {
		u->err_held = err;
		u->down_paused = true;
		return;
	}
	do
		n = send(ch->fd, &h, sizeof(h), MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n == sizeof(h))
		return;
	if (n < 0 && errno != EAGAIN) {
		u->down_closed = true;	/* the guest reads no more */
		return;
	}
	if (n < 0)
		n = 0;
	u->down_paused = true;
	if (chan_queue(ch, (uint8_t *)&h + n, sizeof(h) - n)) {
		vm_warn(ns->vm, "socket %#llx: out of memory for an error frame",
			(unsigned long long)ns->token);
		nsock_kill(ns, ENOMEM);
	}
}

/* One batch: recvmmsg() from a real socket, one sendmsg() of its frames. */
static struct {
	struct mmsghdr mm[NSM_DGRAM_RBATCH];
	struct iovec riov[NSM_DGRAM_RBATCH];
	struct iovec wiov[2 * NSM_DGRAM_RBATCH];
	struct sockaddr_storage src[NSM_DGRAM_RBATCH];
	struct nk_dgram_hdr hdr[NSM_DGRAM_RBATCH];
	uint8_t data[NSM_DGRAM_RBATCH][NK_DGRAM_MAX + 1];
} db;

/*
 * Write frames 0..cnt of the batch with one sendmsg().  What the stream
 * does not take is queued: the rest of a frame written in part (never half
 * a frame), the first frame not written at all, and whole frames after it
 * up to NSM_DGRAM_QUEUE bytes; frames beyond that are dropped and counted,
 * as a full receive queue drops.  Either way the real sockets are not read
 * until the stream drains.
 */
static void down_frames(struct nsock *ns, int cnt)
{
	struct msghdr m = { .msg_iov = db.wiov, .msg_iovlen = 2 * cnt };
	struct udp *u = ns->udp;
	struct chan *ch = ns->chan;
	size_t off = 0, queued = 0, fl;
	ssize_t sent;
	int i;

	do
		sent = sendmsg(ch->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	if (sent < 0 && errno != EAGAIN) {
		u->down_closed = true;	/* the guest reads no more */
		return;
	}
	if (sent < 0)
		sent = 0;
	for (i = 0; i < cnt; i++, off += fl) {
		const uint8_t *hp = (const uint8_t *)&db.hdr[i];
		size_t from = 0;
		int ret = 0;

		fl = HDR + db.hdr[i].len;
		if ((size_t)sent < off + fl) {
			u->down_paused = true;
			from = (size_t)sent > off ? (size_t)sent - off : 0;
			if (!from && queued && queued + fl > NSM_DGRAM_QUEUE) {
				u->drops_down++;
				ns->vm->dgram_drops_down++;
				continue;
			}
			if (from < HDR)
				ret = chan_queue(ch, hp + from, HDR - from);
			if (!ret)
				ret = chan_queue(ch, db.data[i] + (from > HDR ? from - HDR : 0),
						 fl - (from > HDR ? from : HDR));
			if (ret) {
				vm_warn(ns->vm, "socket %#llx: out of memory for datagram frames",
					(unsigned long long)ns->token);
				nsock_kill(ns, ENOMEM);
				return;
			}
			queued += fl - from;
		}
		u->dgrams_down++;
		u->bytes_down += db.hdr[i].len;
		ns->vm->dgrams_down++;
		ns->vm->bytes_down += db.hdr[i].len;
	}
}

static void pump_down(struct nsock *ns, int fd)
{
	struct udp *u = ns->udp;
	int i, n, round;

	for (round = 0; round < NSM_DGRAM_BATCH / NSM_DGRAM_RBATCH; round++) {
		if (ns->dead || u->down_paused || u->down_closed || outq_bytes(&ns->chan->out))
			return;
		for (i = 0; i < NSM_DGRAM_RBATCH; i++) {
			db.riov[i] = (struct iovec){ db.data[i], sizeof(db.data[i]) };
			db.mm[i].msg_hdr = (struct msghdr){
				.msg_name = &db.src[i],
				.msg_namelen = sizeof(db.src[i]),
				.msg_iov = &db.riov[i],
				.msg_iovlen = 1,
			};
		}
		n = recvmmsg(fd, db.mm, NSM_DGRAM_RBATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == EBADF || errno == ENOTSOCK || errno == EFAULT || errno == EINVAL) {
				vm_warn(ns->vm, "socket %#llx: recvmmsg: %s",
					(unsigned long long)ns->token, strerror(errno));
				return;
			}
			/* A pending error (ICMP), reported once as Linux does. */
			down_error(ns, errno);
			continue;
		}
		for (i = 0; i < n; i++) {
			struct nk_dgram_hdr *h = &db.hdr[i];

			memset(h, 0, sizeof(*h));
			h->len = db.mm[i].msg_len > NK_DGRAM_MAX ? NK_DGRAM_MAX : db.mm[i].msg_len;
			if (nk_addr_from_sockaddr(&h->addr, (struct sockaddr *)&db.src[i],
						  db.mm[i].msg_hdr.msg_namelen))
				memset(&h->addr, 0, sizeof(h->addr));
			h->addr.flowinfo = 0;
			h->addr.scope_id = 0;
			db.wiov[2 * i] = (struct iovec){ h, HDR };
			db.wiov[2 * i + 1] = (struct iovec){ db.data[i], h->len };
		}
		if (n > 0)
			down_frames(ns, n);
		if (n < NSM_DGRAM_RBATCH)
			return;
	}
}

/* ---- up: guest -> network ----------------------------------------------- */

static void drop_up(struct nsock *ns, const struct nk_addr *dst, const char *why)
{
	char buf[NK_ADDRSTRLEN];

	ns->udp->drops_up++;
	ns->vm->dgram_drops_up++;
	vm_glog(ns->vm, NK_LOG_INFO, "socket %#llx: datagram to %s dropped: %s",
		(unsigned long long)ns->token,
		dst ? nk_addr_ntop_port(dst, buf, sizeof(buf)) : "the connected peer", why);
}

/* A frame header from the guest: NULL if well formed, else why not. */
static const char *frame_bad(const struct nsock *ns, const struct nk_dgram_hdr *h)
{
	static const struct nk_addr zero;
	static char why[96];

	if (h->len > NK_DGRAM_MAX) {
		snprintf(why, sizeof(why), "datagram frame of %u bytes (at most %d)", h->len,
			 NK_DGRAM_MAX);
		return why;
	}
	if (h->flags || h->err) {
		snprintf(why, sizeof(why), "datagram frame with flags %#x err %u", h->flags, h->err);
		return why;
	}
	if (h->addr.family == NK_AF_UNSPEC)
		return memcmp(&h->addr, &zero, sizeof(zero)) ? "datagram frame: bad address" : NULL;
	if (!nk_addr_valid(&h->addr) ||
	    h->addr.family != (ns->family == AF_INET ? NK_AF_INET : NK_AF_INET6))
		return "datagram frame: bad address or family";
	return NULL;
}

/* Send one datagram.  0: sent or dropped; -EAGAIN: keep it (blocked_fd). */
static int up_one(struct nsock *ns, const struct nk_dgram_hdr *h, const uint8_t *payload)
{
	const struct nk_addr *dst = h->addr.family == NK_AF_UNSPEC ? NULL : &h->addr;
	struct sockaddr_storage ss;
	int fd, len = 0, ret;
	ssize_t n;

	if (dst && nsock_dst_refused(dst)) {
		drop_up(ns, dst, "loopback or unspecified destination");
		return 0;
	}
	ret = nsock_udp_fd(ns, dst, &fd);
	if (ret) {
		drop_up(ns, dst, strerror(-ret));
		return 0;
	}
	if (dst) {
		len = nsock_sockaddr(dst, &ss);
		if (len < 0) {
			drop_up(ns, dst, strerror(-len));
			return 0;
		}
	}
	do
		n = sendto(fd, payload, h->len, MSG_DONTWAIT | MSG_NOSIGNAL,
			   dst ? (struct sockaddr *)&ss : NULL, len);
	while (n < 0 && errno == EINTR);
	if (n >= 0) {
		ns->udp->dgrams_up++;
		ns->udp->bytes_up += h->len;
		ns->vm->dgrams_up++;
		ns->vm->bytes_up += h->len;
		return 0;
	}
	if (errno == EAGAIN) {
		ns->udp->blocked_fd = fd;
		return -EAGAIN;
	}
	ret = errno;
	drop_up(ns, dst, strerror(ret));
	/* Only an ICMP error pending on a connected socket says this; the
	 * guest's send has returned, so its next receive reports it. */
	if (ret == ECONNREFUSED && ns->state == NK_STATE_CONNECTED)
		down_error(ns, ret);
	return 0;
}

/* Keep bytes not sent yet for the next wake-up.  -ENOMEM kills ns. */
static int keep_pending(struct nsock *ns, const uint8_t *p, size_t len)
{
	struct udp *u = ns->udp;

	u->pend = malloc(len);
	if (!u->pend) {
		vm_warn(ns->vm, "socket %#llx: out of memory for datagrams", (unsigned long long)ns->token);
		nsock_kill(ns, ENOMEM);
		return -ENOMEM;
	}
	memcpy(u->pend, p, len);
	u->plen = len;
	return 0;
}

/*
 * Read frames from the guest stream and send them.  After a hang-up the
 * stream is out of epoll and read here until EOF (or EAGAIN on a socket).
 */
static void pump_up(struct nsock *ns)
{
	struct udp *u = ns->udp;
	struct chan *ch = ns->chan;
	struct nk_dgram_hdr h;
	const char *why;
	size_t len, off;
	ssize_t n;
	int round;
	bool more = true;

	for (round = 0; more && (u->g_unreg || round < 4); round++) {
		more = false;
		len = u->plen;
		if (len) {
			memcpy(up_buf, u->pend, len);
			free(u->pend);
			u->pend = NULL;
			u->plen = 0;
		}
		if (u->blocked_fd < 0 && !u->up_eof && len < sizeof(up_buf)) {
			do
				n = recv(ch->fd, up_buf + len, sizeof(up_buf) - len, MSG_DONTWAIT);
			while (n < 0 && errno == EINTR);
			if (n > 0) {
				more = u->g_unreg || (size_t)n == sizeof(up_buf) - len;
				len += n;
			} else if (n == 0 || errno != EAGAIN) {
				/* EOF, or a reset stream: the guest is gone. */
				u->up_eof = true;
				if (n)
					u->g_hup = u->down_closed = true;
			}
		}
		for (off = 0; u->blocked_fd < 0 && len - off >= HDR;) {
			memcpy(&h, up_buf + off, HDR);
			why = frame_bad(ns, &h);
			if (why) {
				chan_bad(ch, "%s", why);
				return;
			}
			if (len - off < HDR + h.len)
				break;
			if (up_one(ns, &h, up_buf + off + HDR) == -EAGAIN || ns->dead)
				break;
			off += HDR + h.len;
		}
		if (ns->dead)
			return;
		if (u->up_eof && u->blocked_fd < 0 && off < len) {
			vm_debug(ns->vm, "socket %#llx: stream ended inside a datagram frame",
				 (unsigned long long)ns->token);
			off = len;
		}
		if (off < len && keep_pending(ns, up_buf + off, len - off))
			return;
		if (u->blocked_fd >= 0)
			return;
	}
}

/* ---- events ------------------------------------------------------------- */

void udp_event_guest(struct nsock *ns, uint32_t events)
{
	struct udp *u = ns->udp;
	struct chan *ch = ns->chan;
	int ret;

	if (ns->dead || !u)
		return;
	if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && outq_bytes(&ch->out)) {
		ret = chan_flush(ch);
		if (ret && ret != -EAGAIN)
			u->down_closed = true;
	}
	if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && !outq_bytes(&ch->out) && u->err_held &&
	    !u->down_closed) {
		int err = u->err_held;

		u->err_held = 0;
		down_error(ns, err);
		if (ns->dead)
			return;
	}
	if ((events & EPOLLOUT) && !outq_bytes(&ch->out))
		u->down_paused = false;
	if ((events & (EPOLLHUP | EPOLLERR)) && !u->g_unreg) {
		/* The guest closed the socket.  Its stream would report the
		 * hang-up forever: it leaves epoll and is read to EOF here,
		 * or when a socket that said EAGAIN becomes writable. */
		u->g_hup = u->down_closed = true;
		ep_del(ch->fd);
		u->g_unreg = true;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		pump_up(ns);
	if (udp_done(ns))
		return;
	udp_update(ns);
}

void udp_event_sock(struct nsock *ns, int fd, uint32_t events)
{
	struct udp *u = ns->udp;
	socklen_t len = sizeof(int);
	int err = 0;

	if (ns->dead || !u)
		return;
	if ((events & (EPOLLOUT | EPOLLERR)) && fd == u->blocked_fd) {
		u->blocked_fd = -1;
		pump_up(ns);
		if (ns->dead)
			return;
	}
	if (events & EPOLLERR) {
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len))
			err = errno;
		if (err)
			down_error(ns, err);
		if (ns->dead)
			return;
	}
	if (events & EPOLLIN)
		pump_down(ns, fd);
	if (udp_done(ns))
		return;
	udp_update(ns);
}

/*
 * Before a control request of the guest: the datagrams it wrote before
 * the request (its socket's stream; the request came on another channel)
 * are sent first, so that the request sees their effect as on Linux (the
 * first one binds the socket implicitly: getsockname() then names the
 * port, bind() fails).  Not while a datagram waits for room in a real
 * socket (blocked_fd): nothing behind it can go before it, and the socket
 * is bound already.  The caller checks ns->dead.
 */
void udp_sync_up(struct nsock *ns)
{
	if (ns->udp && ns->udp->blocked_fd < 0)
		udp_event_guest(ns, EPOLLIN);
}

/* After a control request: sockets may have changed; retry what waits. */
void udp_kick(struct nsock *ns)
{
	struct udp *u = ns->udp;

	if (ns->dead || !u)
		return;
	if (u->plen && u->blocked_fd < 0)
		pump_up(ns);
	if (udp_done(ns))
		return;
	udp_update(ns);
}
