// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Data mode: moving payload between a guest stream and its TCP socket.
 *
 * Theory of operation
 * -------------------
 * A connection has two directions, up (guest stream -> TCP) and down
 * (TCP -> guest stream).  Each has a pipe and moves bytes with splice(),
 * source -> pipe -> destination, never through user space; a guest stream
 * that cannot splice (anything but AF_UNIX, e.g. vsock) uses a 64 KiB
 * buffer and read/send instead.  Backpressure is the pipe: a source is
 * read only while its pipe has room, and a destination is watched for
 * EPOLLOUT only while its pipe holds data.  The epoll masks are level-
 * triggered and recomputed after every pass (relay_update).
 *
 * Ends of a connection, as proto.h defines them:
 *   - guest EOF (its shutdown(SHUT_WR) or close), once the up pipe is
 *     empty: shutdown(tcp, SHUT_WR), i.e. a FIN;
 *   - TCP EOF (the peer's FIN), once the down pipe is empty:
 *     shutdown(stream, SHUT_WR): the guest reads EOF and may still write;
 *   - a TCP error (reset, timeout, EPIPE): nothing more goes up, and our
 *     end of the stream stops reading (guest writes fail); what the TCP
 *     socket received before still goes down to the guest at its pace
 *     (tcp_failed), then the errno goes into the socket's tombstone and
 *     stream and TCP socket are closed.  A local failure (a pipe splice
 *     cannot empty, a failed shutdown) closes both at once;
 *   - the guest stream fully closed (EPOLLHUP, EPIPE): what it had sent is
 *     relayed, then the TCP socket is closed (orderly, tombstone 0);
 *   - both directions finished: everything is closed, tombstone 0.
 * A descriptor that reported EPOLLHUP is taken out of epoll (it would
 * report it forever); reading it never blocks any more, so the other
 * side's events drive what is left.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "log.h"
#include "nsm.h"

#define SPLICE_FLAGS	(SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

/*
 * Empty pipes of finished connections are kept for the next ones: making
 * and sizing a pipe is three system calls and two closes per direction,
 * a visible share of a short connection's cost.
 */
#define PIPE_POOL_MAX	256

static struct {
	int fd[2];
	size_t cap;
} pipe_pool[PIPE_POOL_MAX];
static int pipe_pool_n;

/*
 * At the descriptor limit (EMFILE, ENFILE) the pooled pipes are worth more
 * as free slots: close them all.  Returns true if any were closed, so that
 * the caller may try again.
 */
bool relay_pool_drain(void)
{
	bool any = pipe_pool_n > 0;

	while (pipe_pool_n) {
		pipe_pool_n--;
		close(pipe_pool[pipe_pool_n].fd[0]);
		close(pipe_pool[pipe_pool_n].fd[1]);
	}
	return any;
}

static int dir_init(struct rdir *d, bool use_splice)
{
	int sz;

	d->pipe[0] = d->pipe[1] = -1;
	if (use_splice) {
		if (pipe_pool_n) {
			pipe_pool_n--;
			d->pipe[0] = pipe_pool[pipe_pool_n].fd[0];
			d->pipe[1] = pipe_pool[pipe_pool_n].fd[1];
			d->cap = pipe_pool[pipe_pool_n].cap;
			d->len = 0;
			return 0;
		}
		if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC)) {
			if (!out_of_fds(errno))
				return -errno;
			/* Out of descriptors: a buffer needs none (the
			 * connection still works, with recv and send). */
			d->pipe[0] = d->pipe[1] = -1;
			d->no_pipe = true;
			goto buffer;
		}
		sz = fcntl(d->pipe[1], F_SETPIPE_SZ, NSM_PIPE_SIZE);	/* the size it got */
		if (sz <= 0)
			sz = fcntl(d->pipe[1], F_GETPIPE_SZ);
		d->cap = sz > 0 ? (size_t)sz : 65536;
		return 0;
	}
buffer:
	d->buf = malloc(NSM_RELAY_BUF);
	if (!d->buf)
		return -ENOMEM;
	d->cap = NSM_RELAY_BUF;
	return 0;
}

static void dir_free(struct rdir *d)
{
	if (d->pipe[0] >= 0 && !d->len && pipe_pool_n < PIPE_POOL_MAX) {
		/* back to the small size: most connections are short */
		int sz = d->cap > NSM_PIPE_SIZE ? fcntl(d->pipe[1], F_SETPIPE_SZ, NSM_PIPE_SIZE) : 0;

		if (sz > 0)
			d->cap = sz;
		pipe_pool[pipe_pool_n].fd[0] = d->pipe[0];
		pipe_pool[pipe_pool_n].fd[1] = d->pipe[1];
		pipe_pool[pipe_pool_n].cap = d->cap;
		pipe_pool_n++;
		d->pipe[0] = d->pipe[1] = -1;
	}
	close_later(d->pipe[0]);
	close_later(d->pipe[1]);
	d->pipe[0] = d->pipe[1] = -1;
	free_later(d->buf);
	d->buf = NULL;
}

/* splice() said EINVAL on an empty pipe: carry on with a buffer. */
static int dir_to_buffer(struct rdir *d)
{
	if (d->len)
		return -EINVAL;
	dir_free(d);
	d->buf = malloc(NSM_RELAY_BUF);
	if (!d->buf)
		return -ENOMEM;
	d->cap = NSM_RELAY_BUF;
	d->off = 0;
	return 0;
}

/*
 * A pipe that one splice filled carries a bulk transfer: give it room for
 * 1 MiB, so each splice moves four times as much (bulk throughput up by a
 * tenth or more, CPU per byte down, in docs/benchmarks.md).  Short
 * exchanges keep the smaller pipe, whose slot array is what an idle
 * connection costs.
 */
static void dir_grow(struct rdir *d)
{
	int sz;

	if (d->cap >= NSM_PIPE_SIZE_BULK || d->grow_tried)
		return;
	d->grow_tried = true;	/* once: a refusal (pipe limits) stays one */
	sz = fcntl(d->pipe[1], F_SETPIPE_SZ, NSM_PIPE_SIZE_BULK);	/* the size it got */
	if (sz > 0 && (size_t)sz > d->cap)
		d->cap = sz;
}

/* Source -> pipe/buffer.  >0 bytes, 0 EOF, -EAGAIN, or -errno. */
static ssize_t dir_in(struct rdir *d, int src)
{
	ssize_t n;

	if (d->pipe[1] >= 0) {
		n = splice(src, NULL, d->pipe[1], NULL, d->cap - d->len, SPLICE_FLAGS);
		if (n < 0 && errno == EINVAL && !dir_to_buffer(d))
			return dir_in(d, src);
		if (n > 0 && d->len + n == d->cap)
			dir_grow(d);
	} else {
		if (!d->len)
			d->off = 0;
		if (d->off + d->len == d->cap) {
			memmove(d->buf, d->buf + d->off, d->len);
			d->off = 0;
		}
		n = recv(src, d->buf + d->off + d->len, d->cap - d->off - d->len, MSG_DONTWAIT);
	}
	if (n < 0)
		return errno == EINTR ? -EAGAIN : -errno;
	d->len += n;
	return n;
}

/*
 * TCP urgent data.  splice() stops at the urgent mark (tcp_read_sock) and
 * never passes it, while epoll keeps saying readable: the connection
 * stalled with the NSM spinning.  At the mark, the urgent byte is taken
 * out of band and dropped (the guest's stream has no urgent data; a
 * program that never asks for MSG_OOB never sees it on Linux either,
 * docs/compat.md; with SO_OOBINLINE there is none out of band, and the
 * byte goes on inline), and one byte past it goes into the pipe by hand
 * (recv() skips the mark); splice carries on from there.  >0, 0 EOF,
 * -EAGAIN or -errno, as dir_in().
 */
static bool tcp_at_urgent_mark(int fd)
{
	int at = 0;

	return !ioctl(fd, SIOCATMARK, &at) && at;
}

static ssize_t dir_in_past_urgent(struct rdir *d, int src)
{
	char oob, c;
	ssize_t n;

	recv(src, &oob, 1, MSG_OOB | MSG_DONTWAIT);	/* dropped; may be gone already */
	n = recv(src, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0) {
		/* the urgent byte was the last before the FIN: a real read
		 * takes both, or the close would find the byte unread and
		 * reset the connection */
		recv(src, &c, 1, MSG_DONTWAIT);
		return 0;
	}
	if (n < 0)
		return -errno;
	if (write(d->pipe[1], &c, 1) != 1)
		return -EAGAIN;			/* the pipe is full: later */
	if (recv(src, &c, 1, MSG_DONTWAIT) != 1)
		return -EIO;			/* the peeked byte is gone: cannot happen */
	d->len++;
	return 1;
}

/* Pipe/buffer -> destination.  >0 bytes, -EAGAIN, or -errno. */
static ssize_t dir_out(struct rdir *d, int dst)
{
	ssize_t n;

	if (d->pipe[0] >= 0) {
		n = splice(d->pipe[0], NULL, dst, NULL, d->len, SPLICE_FLAGS);
		if (n < 0 && errno == EINVAL) {
			/* The pipe holds data only splice can move on. */
			return -EIO;
		}
	} else {
		n = send(dst, d->buf + d->off, d->len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			d->off += n;
	}
	if (n < 0)
		return errno == EINTR ? -EAGAIN : -errno;
	d->len -= n;
	d->bytes += n;
	return n;
}

static void relay_pump(struct nsock *ns);

/* An int socket option of fd at SOL_SOCKET, or -1. */
static int sol_int(int fd, int name)
{
	socklen_t len = sizeof(int);
	int v;

	return getsockopt(fd, SOL_SOCKET, name, &v, &len) ? -1 : v;
}

/*
 * The guest stream is full (network -> guest).  Its send buffer starts at
 * the system default (wmem_default, about 208 KiB), which caps a download
 * at what fits in it per wake-up of the guest: let it hold as much as the
 * TCP socket's receive buffer does (autotuned, or what the application set
 * with SO_RCVBUF), up to NSM_STREAM_SNDBUF_MAX, so a guest that does not
 * read pins a bounded amount of host memory.  Tried again at each full
 * stream, as autotuning grows the socket's buffer.  Returns true if the
 * stream can take more now.
 */
static bool stream_grow(struct nsock *ns)
{
	struct relay *r = ns->relay;
	int fd = ns->chan->fd, want, v;

	if (!r->g_sndbuf)
		r->g_sndbuf = sol_int(fd, SO_SNDBUF);
	/* Look again only once a stream's worth has moved since the last
	 * look: autotuning grows the socket's buffer with what it receives. */
	if (r->g_sndbuf < 0 || r->g_sndbuf >= NSM_STREAM_SNDBUF_MAX ||
	    r->down.bytes < r->g_next_look)
		return false;
	r->g_next_look = r->down.bytes + r->g_sndbuf;
	want = sol_int(ns->fd, SO_RCVBUF);
	if (want > NSM_STREAM_SNDBUF_MAX)
		want = NSM_STREAM_SNDBUF_MAX;
	want &= ~1;	/* it is set as want / 2, and read back doubled */
	if (want <= r->g_sndbuf)
		return false;
	v = want / 2;	/* the kernel doubles what it is given */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)))
		v = -1;
	else
		v = sol_int(fd, SO_SNDBUF);
	/* refused, or capped below what it had: stop trying */
	r->g_sndbuf = v > r->g_sndbuf ? v : -1;
	return r->g_sndbuf > 0;
}

/*
 * Unsent bytes stay with the relay.  Spliced into a TCP socket faster than
 * its window lets them leave, bytes wait in its write queue and are sent
 * when the peer's ACK opens the window, by the softirq that processes the
 * ACK: on a veth, in the context of whatever process sent that ACK.  When
 * the peer is a local process (a host service, a colocated VM, the bench's
 * remote host) it then does the NSM's transmit work as well as its own
 * receive, falls further behind, and keeps the window closed: the transfer
 * runs at the speed of one busy peer while the NSM sleeps.  With
 * TCP_NOTSENT_LOWAT the socket takes new bytes only while less than that is
 * unsent, so most of the data is pushed by nk-nsm's own splice, in its own
 * context (docs/architecture.md, "Unsent bytes stay with the relay").  A
 * guest that sets TCP_NOTSENT_LOWAT itself gets its value instead, and
 * reads back what it set (0 until then, as on Linux: op_getsockopt).
 */
static void relay_lowat(struct nsock *ns)
{
	int v = nsm.cfg.notsent_lowat;

	if (!v || ns->lowat_set || ns->relay->kup)
		return;
	if (!setsockopt(ns->fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v)))
		ns->relay->own_lowat = true;
}

/*
 * Set up the relay of a connection that enters data mode, before the guest
 * may write (before the CONNECTED record or the HELLO ACCEPT reply): the
 * guest -> TCP direction goes into the kernel when it can (krelay.c).
 * Nothing moves until relay_start().
 */
int relay_prepare(struct nsock *ns)
{
	struct relay *r = calloc(1, sizeof(*r));
	bool sp = ns->chan->splice_ok;
	int ret = 0;

	if (!r)
		return -ENOMEM;
	r->ns = ns;
	list_init(&r->knode);
	r->up.pipe[0] = r->up.pipe[1] = r->down.pipe[0] = r->down.pipe[1] = -1;
	/* The guest writes only once it has the record or reply sent after
	 * this (except after a quiet claim: ns->guest_early, no krelay then):
	 * its stream is known empty (epoll says when it is not). */
	r->up.dst_ready = true;
	r->down.src_ready = r->down.dst_ready = true;
	ns->relay = r;
	if (!sp || ns->guest_early || krelay_start(ns))
		ret = dir_init(&r->up, sp);
	if (!ret)
		ret = dir_init(&r->down, sp);
	if (!ret)
		relay_lowat(ns);
	if (!ret && (r->up.no_pipe || r->down.no_pipe))
		vm_glog(ns->vm, NK_LOG_WARN, "socket %#llx: no descriptors for a pipe: relayed "
			"through a buffer", (unsigned long long)ns->token);
	return ret;	/* on error the caller kills ns, which frees r */
}

void relay_start(struct nsock *ns)
{
	relay_event_guest(ns, 0);
}

/* krelay: a draining connection may be done. */
void relay_kick(struct nsock *ns)
{
	if (!ns->dead && ns->relay)
		relay_pump(ns);
}

/*
 * An option takes effect behind the bytes the application wrote before
 * it, as on Linux (TCP_CORK off sends what was corked, TCP_NODELAY on
 * pushes what Nagle held). The guest's stream and its control requests
 * are two channels, so what the stream holds goes to the TCP socket
 * first. The pump may finish the connection: callers check ns->dead.
 */
void relay_sync_up(struct nsock *ns)
{
	struct relay *r = ns->relay;

	if (ns->dead || !r || r->up.done || r->kup)
		return;
	r->up.src_ready = true;
	relay_pump(ns);
}

/*
 * The guest's TCP_CORK on, posted (NK_HELLO_F_POST), waits here until the
 * first byte written behind it is about to reach the TCP socket, and is
 * applied then (relay_cork_apply()).  A posted TCP_CORK off that comes
 * before that takes it back: the bytes written in between are all in the
 * guest's stream already (the guest posts the off after writing them), so
 * they leave together now, as Linux sends what was corked at the uncork,
 * without the two setsockopt() calls (sock.c, uncork_push(): a push only
 * if bytes are left unsent).  nginx's tcp_nopush turns TCP_CORK on and
 * off around every response, and nk-nsm, woken once for all of it, often
 * reads both before the response's bytes.  The in-kernel relay moves the
 * bytes itself: there the option is applied at once, as it is on a socket
 * already corked.  Returns true if the option was taken here; the caller
 * checks ns->dead.
 */
bool relay_cork_post(struct nsock *ns, bool on)
{
	struct relay *r = ns->relay;

	if (on) {
		if (ns->cork_on || ns->fd < 0 || !r || r->kup || r->up.done)
			return false;
		ns->cork_wait = true;
		return true;
	}
	if (!ns->cork_wait)
		return false;
	ns->cork_wait = false;
	relay_sync_up(ns);
	return true;
}

static void relay_cork_apply(struct nsock *ns)
{
	int on = 1;

	ns->cork_wait = false;
	if (setsockopt(ns->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)))
		vm_glog(ns->vm, NK_LOG_WARN, "socket %#llx: TCP_CORK not applied: %s",
			(unsigned long long)ns->token, strerror(errno));
	else
		ns->cork_on = true;
}

void relay_free(struct nsock *ns)
{
	struct relay *r = ns->relay;

	if (!r)
		return;
	krelay_stop(ns);
	dir_free(&r->up);
	dir_free(&r->down);
	free_later(r);
	ns->relay = NULL;
}

void relay_update(struct nsock *ns)
{
	struct relay *r = ns->relay;
	struct chan *ch = ns->chan;
	uint32_t g = 0, t = 0;

	if (!r || ns->dead || !ch)
		return;
	if (r->kup) {
		/* The kernel moves the payload; only the guest's EOF matters. */
		if (!r->up.src_eof)
			g |= EPOLLRDHUP;
	} else if (!r->up.done && !r->up.src_eof && r->up.len < r->up.cap && !r->up.blocked) {
		g |= EPOLLIN;
	}
	if (outq_bytes(&ch->out) || (!r->g_closed && !r->down.done && r->down.len))
		g |= EPOLLOUT;
	if (!r->down.done && !r->g_closed && !r->down.src_eof && r->down.len < r->down.cap &&
	    !r->down.blocked)
		t |= EPOLLIN;
	if (!r->up.done && r->up.len)
		t |= EPOLLOUT;
	/* A side out of epoll after its hang-up never blocks: let the other
	 * side's writability wake us to finish reading it. */
	if (r->g_unreg && !r->up.done && !r->kup)
		t |= EPOLLOUT;
	if (r->t_unreg && !r->down.done && !r->g_closed)
		g |= EPOLLOUT;
	/* A hung-up side leaves epoll here rather than when its hang-up was
	 * seen: a connection that finishes in that pass is closed instead,
	 * and close() takes it out for free. */
	if (!r->g_unreg)
		ep_set(ch->fd, g);
	else
		ep_del(ch->fd);	/* once: a no-op when already out */
	if (!r->t_unreg)
		ep_set(ns->fd, t);
	else
		ep_del(ns->fd);
}

/* The TCP side failed: remember why, pass on what we hold, close. */
static void tcp_error(struct nsock *ns, int err)
{
	struct relay *r = ns->relay;
	uint64_t down0 = r->down.bytes;

	if (r->down.len && !r->g_closed && !outq_bytes(&ns->chan->out))
		dir_out(&r->down, ns->chan->fd);
	ns->vm->bytes_down += r->down.bytes - down0;
	vm_debug(ns->vm, "socket %#llx: connection ended: %s", (unsigned long long)ns->token,
		 strerror(err));
	ns->end_err = err;
	nsock_kill(ns, err);
}

/*
 * Move source -> pipe -> destination for one direction.  A source is read
 * only while epoll says it may have data (src_ready) and a destination
 * written only while it may take some (dst_ready); a short read or write
 * clears the flag, and level-triggered epoll sets it again, so no call is
 * spent on a descriptor that is known to be empty or full.
 * Returns DIR_MOVED, DIR_IDLE, DIR_GUEST_GONE or -errno of the TCP socket.
 */
enum { DIR_IDLE, DIR_MOVED, DIR_GUEST_GONE };

/* cork: the connection whose guest -> TCP direction this is, else NULL */
static int dir_move(struct rdir *d, int src, int dst, bool src_is_tcp, bool may_out,
		    struct nsock *cork)
{
	bool progress = false;
	ssize_t n;

	if (d->src_ready && !d->src_eof && d->len < d->cap) {
		size_t want = d->cap - d->len;

		n = dir_in(d, src);
		/* at the mark splice says EAGAIN (with an empty pipe: a full
		 * one blocks the direction anyway), or 0 once a FIN came */
		if ((n == 0 || (n == -EAGAIN && !d->len)) && src_is_tcp && d->pipe[1] >= 0 &&
		    tcp_at_urgent_mark(src))
			n = dir_in_past_urgent(d, src);
		if (n > 0) {
			progress = true;
			if ((size_t)n < want)
				d->src_ready = false;
		} else if (n == 0) {
			d->src_eof = true;
			progress = true;
		} else if (n == -EAGAIN) {
			d->src_ready = false;
			d->blocked = d->len > 0;
		} else if (src_is_tcp) {
			return (int)n;
		} else {
			d->src_err = (int)-n;
			return DIR_GUEST_GONE;
		}
	}
	if (d->len && d->dst_ready && may_out) {
		size_t have = d->len;

		if (cork && cork->cork_wait)
			relay_cork_apply(cork);
		n = dir_out(d, dst);
		if (n > 0) {
			progress = true;
			d->blocked = false;
			if ((size_t)n < have)
				d->dst_ready = false;
		} else if (n == -EAGAIN) {
			d->dst_ready = false;
		} else if (!src_is_tcp) {
			return (int)n;
		} else {
			return DIR_GUEST_GONE;
		}
	}
	return progress ? DIR_MOVED : DIR_IDLE;
}

/* Read and drop what a stream holds. */
static void stream_discard(int fd)
{
	static char scratch[65536];

	while (recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT) > 0)
		;
}

/*
 * The TCP side failed: a reset, a timeout, an error writing to it.  What
 * its socket received before is still the guest's, as it is a local
 * reader's (Linux's read gives the queued bytes, then the error): the down
 * direction goes on until it has passed that on, and only then does the
 * guest's stream end with the error (tcp_error).  Nothing more goes up:
 * the connection can take no more, and our end of the stream stops
 * reading, so that a guest write fails at once (EPIPE, and STATUS tells
 * the library why: a write after a reset reports it, as on Linux).  The
 * first error is the one reported.
 */
static void tcp_failed(struct nsock *ns, int err)
{
	struct relay *r = ns->relay;

	if (!r->t_err) {
		r->t_err = err;
		ns->end_err = err;
		vm_debug(ns->vm, "socket %#llx: %s; passing on what was received first",
			 (unsigned long long)ns->token, strerror(err));
		krelay_stop(ns);
		if (!r->g_closed) {
			/* Unread bytes would keep the guest's send buffer full
			 * (no EPOLLOUT, no EPIPE for a writer that polls) and,
			 * at our close, set ECONNRESET on its end: drop them,
			 * before SHUT_RD (after it an AF_VSOCK stream reads
			 * EOF at once) and after (what an AF_UNIX stream took
			 * meanwhile; nothing more arrives then). */
			stream_discard(ns->chan->fd);
			shutdown(ns->chan->fd, SHUT_RD);
			stream_discard(ns->chan->fd);
		}
	}
	r->up.done = true;
	r->down.src_ready = true;
}

/*
 * The guest closed its socket with received bytes unread: those it had in
 * its stream (closing an AF_UNIX stream with unread bytes sets ECONNRESET
 * on our end; read as the up direction's error, or still pending when
 * that direction had ended) or those still on their way to it.  Linux's
 * tcp_close() resets the connection then; bytes still in the TCP socket
 * make the kernel reset it at our close anyway.  An AF_VSOCK stream
 * closed so sets no error: there only bytes the relay still holds count.
 */
static bool guest_left_unread(struct nsock *ns)
{
	struct relay *r = ns->relay;
	socklen_t len = sizeof(int);
	int err = 0;

	if (r->down.len)
		return true;
	/* Nothing relayed to the guest: what it left unread can only be our
	 * CONNECTED record (a non-blocking connect closed before it looked),
	 * no byte of the connection's; Linux closes that with a FIN. */
	if (!r->down.bytes)
		return false;
	if (r->up.src_err == ECONNRESET)
		return true;
	return !getsockopt(ns->chan->fd, SOL_SOCKET, SO_ERROR, &err, &len) && err == ECONNRESET;
}

/* Close with a reset, not a FIN (SO_LINGER 0), as Linux does above. */
static void tcp_abort(struct nsock *ns)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	vm_debug(ns->vm, "socket %#llx: the guest closed it with bytes unread: reset",
		 (unsigned long long)ns->token);
	if (setsockopt(ns->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)))
		vm_debug(ns->vm, "socket %#llx: SO_LINGER: %s", (unsigned long long)ns->token,
			 strerror(errno));
}

static void relay_pump(struct nsock *ns)
{
	struct relay *r = ns->relay;
	struct chan *ch = ns->chan;
	int g = ch->fd, t = ns->fd, i, ret;
	uint64_t up0 = r->up.bytes, down0 = r->down.bytes, moved;
	bool progress = true;
	int err = 0;		/* a local failure: close at once */

	for (i = 0; i < 16 && progress; i++) {
		progress = false;

		/* up in the kernel: pass on the guest's EOF once the TCP
		 * socket has taken everything (krelay.c) */
		if (!r->up.done && r->kup) {
			ret = r->up.src_eof ? krelay_drained(ns) : 0;
			if (ret < 0) {
				err = -ret;
				goto count;
			}
			if (ret > 0) {
				krelay_stop(ns);
				r->up.done = true;
				progress = true;
				if (!r->g_closed && shutdown(t, SHUT_WR) && errno != ENOTCONN) {
					err = errno;
					goto count;
				}
			}
		}

		/* up: guest stream -> TCP */
		if (!r->up.done && !r->kup) {
			ret = dir_move(&r->up, g, t, false, true, ns);
			if (ret == DIR_GUEST_GONE) {
				/* A reset stream: the guest is gone. */
				r->g_closed = true;
				r->up.src_eof = true;
			} else if (ret == -EIO) {
				err = EIO;	/* the pipe cannot be emptied */
				goto count;
			} else if (ret < 0) {
				tcp_failed(ns, -ret);
				progress = true;
			}
			progress |= ret == DIR_MOVED;
			if (!r->up.done && r->up.src_eof && !r->up.len) {
				r->up.done = true;
				progress = true;
				if (!r->g_closed && shutdown(t, SHUT_WR) && errno != ENOTCONN) {
					err = errno;
					goto count;
				}
			}
		}

		/* down: TCP -> guest stream, after any queued record */
		if (!r->down.done && !r->g_closed) {
			if (outq_bytes(&ch->out)) {
				ret = chan_flush(ch);
				if (ret && ret != -EAGAIN)
					r->g_closed = true;
			}
			ret = dir_move(&r->down, t, g, true, !outq_bytes(&ch->out), NULL);
			if (ret == DIR_GUEST_GONE) {
				r->g_closed = true;
			} else if (ret < 0) {
				/* TCP reports its error once the queue is read */
				tcp_failed(ns, -ret);
				r->down.src_eof = true;
				progress = true;
			}
			progress |= ret == DIR_MOVED;
			if (!r->down.dst_ready && r->down.len && !r->g_closed && stream_grow(ns)) {
				r->down.dst_ready = true;
				progress = true;
			}
			if (r->down.src_eof && !r->down.len && !r->g_closed) {
				r->down.done = true;
				progress = true;
				if (!r->t_err)
					shutdown(g, SHUT_WR);	/* a FIN */
			}
		}
		/* A hung-up side never blocks: keep reading it. */
		if (r->g_unreg)
			r->up.src_ready = true;
		if (r->t_unreg)
			r->down.src_ready = true;
	}
count:
	/* counted before any exit: bytes moved before a failure are the VM's */
	ns->vm->bytes_up += r->up.bytes - up0;
	ns->vm->bytes_down += r->down.bytes - down0;
	moved = (r->up.bytes - up0) + (r->down.bytes - down0);
	nsm.moved += moved;
	if (moved >= NSM_BULK_BATCH)
		nsm.burst = true;

	if (err || (r->t_err && (r->down.done || r->g_closed))) {
		tcp_error(ns, r->t_err ? r->t_err : err);
		return;
	}
	if ((r->g_closed && r->up.done) || (r->up.done && r->down.done)) {
		vm_debug(ns->vm, "socket %#llx: connection finished (%llu bytes up, %llu down)",
			 (unsigned long long)ns->token,
			 (unsigned long long)(r->up.bytes + r->kbytes_done),
			 (unsigned long long)r->down.bytes);
		if (r->g_closed && guest_left_unread(ns))
			tcp_abort(ns);
		nsock_kill(ns, 0);
		return;
	}
	relay_update(ns);
}

void relay_event_guest(struct nsock *ns, uint32_t events)
{
	struct relay *r = ns->relay;

	if (ns->dead || !r)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		r->up.src_ready = true;
	if (r->kup && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
		r->up.src_eof = true;	/* the guest's EOF, behind its payload */
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		r->down.dst_ready = true;
	if (events & (EPOLLHUP | EPOLLERR)) {
		r->g_closed = true;
		r->g_unreg = true;	/* leaves epoll in relay_update */
	}
	relay_pump(ns);
}

void relay_event_tcp(struct nsock *ns, uint32_t events)
{
	struct relay *r = ns->relay;
	int err = 0;
	socklen_t len = sizeof(err);

	if (ns->dead || !r)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		r->down.src_ready = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		r->up.dst_ready = true;
	if (events & EPOLLERR) {
		if (getsockopt(ns->fd, SOL_SOCKET, SO_ERROR, &err, &len))
			err = errno;
		if (err)
			tcp_failed(ns, err);
	}
	if (events & EPOLLHUP)
		r->t_unreg = true;	/* leaves epoll in relay_update */
	relay_pump(ns);
}

void relay_shut_rd(struct nsock *ns)
{
	if (shutdown(ns->fd, SHUT_RD))
		vm_debug(ns->vm, "socket %#llx: shutdown(SHUT_RD): %s",
			 (unsigned long long)ns->token, strerror(errno));
	ns->relay->down.src_ready = true;
	relay_pump(ns);
}
