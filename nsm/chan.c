// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Guest streams: accepting them, reading their messages, writing replies
 * and records, and the HELLO that decides what each stream is.
 *
 * A stream is read one message at a time and never beyond it: the header
 * (16 bytes) first, then exactly the body its op calls for.  That matters
 * for a socket stream, whose next byte after HELLO may already be payload.
 * Partial reads are kept in the stream's small input buffer.  Anything
 * malformed closes that stream only, counts it on its VM and logs the
 * reason; nothing a guest sends can reach another stream.
 *
 * Replies and records are written whole when the stream has room, else the
 * rest waits in a per-stream output queue that is written before anything
 * else (in data mode: before any payload), so records never interleave.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>

#include "log.h"
#include "nsm.h"

/* domain: the stream's socket domain, or -1 to ask the socket. */
struct chan *chan_new(struct vm *vm, int fd, int domain)
{
	struct chan *ch = calloc(1, sizeof(*ch));
	socklen_t len = sizeof(int);

	if (!ch)
		return NULL;
	ch->vm = vm;
	ch->fd = fd;
	ch->mode = CH_HELLO;
	ch->deadline = now_mono() + NSM_HELLO_TIMEOUT;
	if (domain < 0 && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len))
		domain = 0;
	ch->splice_ok = domain == AF_UNIX && !nsm.cfg.no_splice;
	if (ep_add(fd, EP_CHAN, ch, EPOLLIN)) {
		free(ch);
		return NULL;
	}
	list_add_tail(&ch->vm_node, &vm->chans);
	list_add_tail(&ch->wait_node, &nsm.hello_wait);
	vm->streams++;
	return ch;
}

void chan_kill(struct chan *ch)
{
	struct nsock *ns;

	if (ch->dead)
		return;
	ch->dead = true;
	list_del(&ch->vm_node);
	list_del(&ch->wait_node);
	ns = ch->ns;
	if (ns) {
		ch->ns = NULL;
		ns->chan = NULL;
		nsock_kill(ns, ns->end_err);
	}
	close_later(ch->fd);
	free_later(ch->out.buf);
	free_later(ch->ahead);
	free_later(ch);
}

void vm_glog(struct vm *vm, enum nk_log_level level, const char *fmt, ...)
{
	uint64_t now = now_mono();
	char line[512];
	va_list ap;

	if (!nk_log_enabled(level))
		return;
	if (vm->log_sec != now) {
		vm->log_sec = now;
		vm->log_count = 0;
	}
	if (++vm->log_count > NSM_GUEST_LOG_RATE) {
		if (vm->log_count == NSM_GUEST_LOG_RATE + 1)
			nk_log(NK_LOG_WARN, "vm %s: more than %d messages this second; the rest "
			       "is not logged", vm->name, NSM_GUEST_LOG_RATE);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	nk_log(level, "vm %s: %s", vm->name, line);
}

void chan_bad(struct chan *ch, const char *fmt, ...)
{
	char reason[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	ch->vm->bad_chans++;
	vm_glog(ch->vm, NK_LOG_WARN, "closing channel: %s", reason);
	chan_kill(ch);
}

static int outq_push(struct outq *q, const uint8_t *p, size_t len)
{
	if (q->off && q->off == q->len)
		q->off = q->len = 0;
	if (q->len + len > q->cap) {
		size_t cap = q->cap ? q->cap : 256;
		uint8_t *b;

		if (q->off) {
			memmove(q->buf, q->buf + q->off, q->len - q->off);
			q->len -= q->off;
			q->off = 0;
		}
		while (cap < q->len + len)
			cap *= 2;
		if (cap > q->cap) {
			b = realloc(q->buf, cap);
			if (!b)
				return -ENOMEM;
			q->buf = b;
			q->cap = cap;
		}
	}
	memcpy(q->buf + q->len, p, len);
	q->len += len;
	return 0;
}

/* Queue bytes behind what the stream has not taken yet. */
int chan_queue(struct chan *ch, const void *p, size_t len)
{
	int ret = outq_push(&ch->out, p, len);

	if (ret)
		return ret;
	chan_update_events(ch);
	return 0;
}

/* Write the queue out.  0: empty, -EAGAIN: some left, else -errno. */
int chan_flush(struct chan *ch)
{
	struct outq *q = &ch->out;

	while (outq_bytes(q)) {
		ssize_t n = send(ch->fd, q->buf + q->off, outq_bytes(q),
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -EAGAIN : -errno;
		}
		q->off += n;
	}
	q->off = q->len = 0;
	return 0;
}

void chan_update_events(struct chan *ch)
{
	uint32_t ev = 0;

	if (ch->dead || ch->corked)
		return;	/* corked: chan_read() updates once it is done */
	switch (ch->mode) {
	case CH_HELLO:
		ev = EPOLLIN;
		break;
	case CH_CTL:
		if (outq_bytes(&ch->out) < NSM_CHAN_OUTQ_MAX)
			ev = EPOLLIN;
		break;
	case CH_DRAIN:
		break;
	case CH_SOCK:
		if (ch->ns && ch->ns->relay) {
			relay_update(ch->ns);
			return;
		}
		if (ch->ns && ch->ns->udp) {
			udp_update(ch->ns);
			return;
		}
		/* Set-up or listening: only a hang-up matters, and the
		 * set-up requests a fresh TCP socket may send. */
		ev = EPOLLRDHUP;
		if (ch->setup_reqs && outq_bytes(&ch->out) < NSM_CHAN_OUTQ_MAX)
			ev |= EPOLLIN;
		break;
	}
	if (outq_bytes(&ch->out))
		ev |= EPOLLOUT;
	ep_set(ch->fd, ev);
}

/*
 * Send one message on the stream (whole, or queued whole).  On a write
 * error the stream is killed (with its socket) and -errno returned.
 */
int chan_send(struct chan *ch, uint8_t op, uint32_t seq, int32_t err, const void *body,
	      size_t len)
{
	uint8_t msg[NK_MSG_MAX];
	struct nk_hdr *h = (struct nk_hdr *)msg;
	size_t total = sizeof(*h) + len, done = 0;
	int ret;

	if (ch->dead)
		return -EPIPE;
	if (total > sizeof(msg))
		return -EINVAL;
	*h = (struct nk_hdr){
		.magic = NK_PROTO_MAGIC,
		.version = NK_PROTO_VERSION,
		.op = op,
		.len = total,
		.seq = seq,
		.err = err,
	};
	memcpy(msg + sizeof(*h), body, len);
	if (!outq_bytes(&ch->out) && !ch->corked) {
		ssize_t n = send(ch->fd, msg, total, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			ret = -errno;
			vm_debug(ch->vm, "stream gone while writing op %u: %s", op, strerror(-ret));
			chan_kill(ch);
			return ret;
		}
		done = n > 0 ? (size_t)n : 0;
	}
	if (done < total) {
		ret = outq_push(&ch->out, msg + done, total - done);
		if (ret) {
			vm_warn(ch->vm, "closing channel: out of memory for its output");
			chan_kill(ch);
			return ret;
		}
		if (!ch->corked)
			chan_update_events(ch);
	}
	return 0;
}

/* Reply and close the stream once the reply is written. */
static void chan_reply_close(struct chan *ch, uint8_t op, uint32_t seq, int32_t err,
			     const void *body, size_t len)
{
	if (chan_send(ch, op, seq, err, body, len))
		return;
	ch->mode = CH_DRAIN;
	list_del(&ch->wait_node);
	if (!outq_bytes(&ch->out))
		chan_kill(ch);
	else
		chan_update_events(ch);
}

static void chan_hello(struct chan *ch, const struct nk_hdr *h, const struct nk_hello_req *req)
{
	struct nk_hello_rep rep;
	int ret;

	memset(&rep, 0, sizeof(rep));	/* padding included: it goes on the wire */
	rep.nsm_id = nsm.instance;
	rep.flags = NSM_HELLO_FLAGS;
	if ((req->kind == NK_HELLO_SOCKET && req->type == NK_SOCK_STREAM ?
	     req->flags & ~(NK_HELLO_F_SETUP | NK_HELLO_F_OFFER) :
	     req->kind == NK_HELLO_ACCEPT ? req->flags & ~NK_HELLO_F_QUIET :
	     req->kind == NK_HELLO_CTL ? req->flags & ~NK_HELLO_F_POST : req->flags)) {
		chan_bad(ch, "HELLO kind %u type %u with flags %#x", req->kind, req->type,
			 req->flags);
		return;
	}
	ch->pid = req->pid;
	/* Accepted in the reserve's place (vm_accept()): a new socket or a
	 * control channel is refused, so that the stream's close gives the
	 * slot back.  A claim is served: its connection is already accepted
	 * and needs no more descriptors (the relay falls back to buffers), and
	 * refusing it would lose it.  The reserve is taken again at the next
	 * close. */
	if (ch->refuse && req->kind != NK_HELLO_ACCEPT) {
		vm_glog(ch->vm, NK_LOG_WARN, "stream of pid %u refused: out of descriptors "
			"(ENOBUFS to the guest)", req->pid);
		chan_reply_close(ch, NK_OP_HELLO, h->seq, ENOBUFS, &rep, sizeof(rep));
		return;
	}
	switch (req->kind) {
	case NK_HELLO_SOCKET:
		if (req->listener || req->conn_id) {
			chan_bad(ch, "HELLO SOCKET with listener/conn_id set");
			return;
		}
		ret = nsock_hello_socket(ch, req, &rep.token);
		if (ret) {
			vm_debug(ch->vm, "HELLO SOCKET family %u type %u refused: %s", req->family,
				 req->type, strerror(-ret));
			chan_reply_close(ch, NK_OP_HELLO, h->seq, -ret, &rep, sizeof(rep));
			return;
		}
		list_del(&ch->wait_node);
		/* A TCP socket's set-up requests may follow on the stream
		 * itself (pipelined behind the HELLO): proto.h. */
		ch->setup_reqs = req->flags & NK_HELLO_F_SETUP;
		ch->ns->offer = req->flags & NK_HELLO_F_OFFER;
		chan_send(ch, NK_OP_HELLO, h->seq, 0, &rep, sizeof(rep));
		if (!ch->dead)
			chan_update_events(ch);
		return;
	case NK_HELLO_CTL:
		if (req->family || req->type || req->listener || req->conn_id) {
			chan_bad(ch, "HELLO CTL with socket fields set");
			return;
		}
		ch->ahead = malloc(NSM_CTL_AHEAD);
		if (!ch->ahead) {
			vm_glog(ch->vm, NK_LOG_WARN, "control channel of pid %u refused: out of "
				"memory", req->pid);
			chan_reply_close(ch, NK_OP_HELLO, h->seq, ENOMEM, &rep, sizeof(rep));
			return;
		}
		ch->mode = CH_CTL;
		ch->posts = req->flags & NK_HELLO_F_POST;
		list_del(&ch->wait_node);
		vm_debug(ch->vm, "control channel of pid %u%s", req->pid,
			 ch->posts ? " (posts options)" : "");
		chan_send(ch, NK_OP_HELLO, h->seq, 0, &rep, sizeof(rep));
		return;
	case NK_HELLO_ACCEPT:
		if (req->family || req->type) {
			chan_bad(ch, "HELLO ACCEPT with family/type set");
			return;
		}
		list_del(&ch->wait_node);
		ret = nsock_hello_accept(ch, req, h->seq);
		/* A quiet claim for another NSM's listener may be for a
		 * connection offered before a move (nsmctl.h).  (ACCEPT_READY
		 * connections end with their listener: nothing to pass on.) */
		if (ret == -ENOTSOCK && !ch->dead && (req->flags & NK_HELLO_F_QUIET) &&
		    ctl_claim_forward(ch, h, req)) {
			ep_twin(ch->fd);	/* nkd holds the stream now */
			chan_kill(ch);
			return;
		}
		if (ret && !ch->dead) {
			vm_debug(ch->vm, "HELLO ACCEPT%s of connection %llu on %#llx refused: %s",
				 req->flags & NK_HELLO_F_QUIET ? " (quiet)" : "",
				 (unsigned long long)req->conn_id,
				 (unsigned long long)req->listener, strerror(-ret));
			if (req->flags & NK_HELLO_F_QUIET)
				chan_kill(ch);	/* the guest reads EOF: proto.h */
			else
				chan_reply_close(ch, NK_OP_HELLO, h->seq, ECONNABORTED, &rep,
						 sizeof(rep));
		}
		return;
	default:
		chan_bad(ch, "unknown HELLO kind %u", req->kind);
		return;
	}
}

/* A claim read by another NSM, passed on by nkd (ATTACH_CLAIM). */
void chan_claim(struct chan *ch, const struct nk_hdr *h, const struct nk_hello_req *req)
{
	chan_hello(ch, h, req);
	if (!ch->dead)
		chan_update_events(ch);
}

static void chan_message(struct chan *ch, const struct nk_hdr *h, const void *body)
{
	if (ch->mode == CH_HELLO) {
		if (h->op != NK_OP_HELLO) {
			chan_bad(ch, "first message is op %u, not HELLO", h->op);
			return;
		}
		chan_hello(ch, h, body);
		return;
	}
	if (h->op == NK_OP_HELLO) {
		chan_bad(ch, "HELLO on a %s", ch->mode == CH_SOCK ? "socket stream" : "control channel");
		return;
	}
	if (ch->mode == CH_SOCK)
		nsock_setup_request(ch, h, body);
	else
		ctl_request(ch, h, body);
}

/*
 * The smallest body a message allowed in ch's mode can have: a header
 * and this much are read at once without reading past the message.
 */
static size_t chan_min_body(const struct chan *ch)
{
	switch (ch->mode) {
	case CH_HELLO:
		return sizeof(struct nk_hello_req);
	case CH_CTL:
		return sizeof(struct nk_sock_req);	/* LISTEN, GETNAME, ... */
	case CH_SOCK:
		return sizeof(struct nk_addr_req);	/* CONNECT; SETSOCKOPT is larger */
	default:
		return 0;
	}
}

/*
 * One read of a stream's messages into buf (ch->inlen bytes of a message
 * already in): > 0 bytes read, 0 when there is nothing now, -1 when the
 * stream ended or failed (the channel is killed then).
 */
static ssize_t chan_read_some(struct chan *ch, void *buf, size_t len)
{
	ssize_t n = read(ch->fd, buf, len);

	if (n > 0)
		return n;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n == 0 && ch->inlen)
		vm_debug(ch->vm, "stream closed in the middle of a message");
	else if (n < 0)
		vm_debug(ch->vm, "stream read: %s", strerror(errno));
	chan_kill(ch);
	return -1;
}

/* Read and handle messages one at a time: a HELLO, or the set-up requests
 * on a socket's own stream (payload may follow them; a control channel
 * goes on in chan_read_ctl()).  Called corked (chan_read()). */
static void chan_read_msgs(struct chan *ch)
{
	struct nk_hdr *h = (struct nk_hdr *)ch->in;
	int i;

	for (i = 0; i < 64 && !ch->dead; i++) {
		size_t need = sizeof(*h);
		ssize_t n;
		int body;

		/* (a control channel is read by chan_read_ctl() from its HELLO on) */
		if (ch->mode != CH_HELLO && !(ch->mode == CH_SOCK && ch->setup_reqs))
			return;
		if (ch->mode != CH_HELLO && outq_bytes(&ch->out) >= NSM_CHAN_OUTQ_MAX)
			break;	/* the guest does not read its replies */
		if (ch->inlen >= sizeof(*h))
			need += nk_body_size(h->op, 0);
		else
			need += chan_min_body(ch);	/* header and body in one read */
		n = chan_read_some(ch, ch->in + ch->inlen, need - ch->inlen);
		if (n <= 0)
			return;
		ch->inlen += n;
		if (ch->inlen < sizeof(*h))
			continue;
		if (ch->inlen - (size_t)n < sizeof(*h)) {	/* the header is complete now */
			body = nk_hdr_check(h, 0);
			if (body < 0) {
				chan_bad(ch, "bad header (magic %#x version %u op %u len %u)", h->magic,
					 h->version, h->op, h->len);
				return;
			}
			if (h->err) {
				chan_bad(ch, "request op %u with err %d", h->op, h->err);
				return;
			}
			if (ch->inlen > h->len) {	/* shorter than any allowed here */
				chan_bad(ch, "op %u is not allowed on this stream", h->op);
				return;
			}
		}
		if (ch->inlen < h->len)
			continue;
		ch->inlen = 0;
		chan_message(ch, h, ch->in + sizeof(*h));
	}
}

/* One chan_read_ctl() call takes in at most 17 * NSM_CTL_AHEAD bytes (what
 * was left, then 16 reads), and no reply is more than 1.5 times its
 * request (GETNAME: 32 -> 48 bytes): chan_read() relies on this. */
_Static_assert(17 * NSM_CTL_AHEAD * 3 / 2 < NSM_CHAN_OUTQ_MAX,
	       "one chan_read_ctl() call could fill the reply queue");

/*
 * A control channel carries requests only, never payload: read as much as
 * there is room for, handle every whole message, keep the rest. A read
 * that returns less than the room was the last one for now (the channel
 * is level-triggered in epoll). Called corked (chan_read()).
 */
static void chan_read_ctl(struct chan *ch)
{
	struct nk_hdr h;
	size_t off = 0, room;
	bool more = true;
	ssize_t n;
	int reads = 0;

	for (;;) {
		/* the whole messages read so far (every message is a
		 * multiple of 8 bytes long: bodies stay aligned) */
		while (ch->inlen - off >= sizeof(h)) {
			memcpy(&h, ch->ahead + off, sizeof(h));
			if (nk_hdr_check(&h, 0) < 0) {
				chan_bad(ch, "bad header (magic %#x version %u op %u len %u)",
					 h.magic, h.version, h.op, h.len);
				return;
			}
			if (h.err) {
				chan_bad(ch, "request op %u with err %d", h.op, h.err);
				return;
			}
			if (h.len < sizeof(h) + chan_min_body(ch)) {
				chan_bad(ch, "op %u is not allowed on this stream", h.op);
				return;
			}
			if (ch->inlen - off < h.len || outq_bytes(&ch->out) >= NSM_CHAN_OUTQ_MAX)
				break;	/* incomplete, or the guest does not read its replies */
			off += h.len;
			chan_message(ch, &h, ch->ahead + off - h.len + sizeof(h));
			if (ch->dead || ch->mode != CH_CTL)
				return;
		}
		memmove(ch->ahead, ch->ahead + off, ch->inlen - off);
		ch->inlen -= off;
		off = 0;
		if (!more || ++reads > 16 || outq_bytes(&ch->out) >= NSM_CHAN_OUTQ_MAX)
			return;
		room = NSM_CTL_AHEAD - ch->inlen;
		n = chan_read_some(ch, ch->ahead + ch->inlen, room);
		if (n <= 0)
			return;
		ch->inlen += n;
		more = (size_t)n == room;	/* a short read emptied the socket */
	}
}

/* A whole request waits in a control channel's read-ahead. */
static bool ctl_msg_whole(const struct chan *ch)
{
	struct nk_hdr h;

	if (ch->mode != CH_CTL || ch->inlen < sizeof(h))
		return false;
	memcpy(&h, ch->ahead, sizeof(h));
	return h.len <= ch->inlen;
}

/*
 * chan_read_msgs() or chan_read_ctl() with the replies corked: the replies
 * to what one read brought in (HELLO, the set-up requests behind it, a
 * control channel's requests) leave in one write, so the guest wakes once
 * for them.
 */
static void chan_read(struct chan *ch)
{
	int ret;

	do {
		ch->corked = true;
		if (ch->mode != CH_CTL)
			chan_read_msgs(ch);
		if (!ch->dead && ch->mode == CH_CTL)
			chan_read_ctl(ch);	/* also right behind its HELLO */
		ch->corked = false;
		if (ch->dead)
			return;
		ret = outq_bytes(&ch->out) ? chan_flush(ch) : 0;
		if (ret && ret != -EAGAIN) {
			chan_kill(ch);
			return;
		}
		if (ch->mode == CH_DRAIN && !ret) {
			chan_kill(ch);	/* its last reply is out */
			return;
		}
		/* Requests read ahead were left while the replies were
		 * backed up; if those are all gone now, no event would come
		 * for them (they are out of the socket): handle them. One
		 * more pass ends it: starting from an empty queue, one call
		 * of chan_read_ctl() cannot queue NSM_CHAN_OUTQ_MAX (below). */
	} while (!outq_bytes(&ch->out) && ctl_msg_whole(ch));
	chan_update_events(ch);
}

void chan_event(struct chan *ch, uint32_t events)
{
	int ret;

	if (ch->mode == CH_SOCK && !ch->setup_reqs) {
		nsock_chan_event(ch->ns, events);
		return;
	}
	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
		ret = chan_flush(ch);
		if (ret && ret != -EAGAIN) {
			chan_kill(ch);
			return;
		}
		if (ch->mode == CH_DRAIN) {
			if (!ret || (events & (EPOLLERR | EPOLLHUP)))
				chan_kill(ch);
			return;
		}
	}
	/* (a control channel may hold whole requests read ahead, left
	 * while its replies were backed up) */
	if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) ||
	    (ch->mode == CH_CTL && ch->inlen))
		chan_read(ch);
	else
		chan_update_events(ch);
}

void chan_timeouts(uint64_t now)
{
	struct list_head *p, *t;

	list_for_each_safe(p, t, &nsm.hello_wait) {
		struct chan *ch = list_entry(p, struct chan, wait_node);

		if (ch->deadline <= now)
			chan_bad(ch, "no HELLO within %d s", NSM_HELLO_TIMEOUT);
	}
}

/*
 * One descriptor held back for a guest stream that arrives when the table
 * is full (EMFILE, ENFILE).  Without it the stream would wait in the
 * listener's backlog and the guest library would give up on it after its
 * handshake timeout.  Accepted in the reserve's place, its HELLO is refused
 * at once (ENOBUFS: the NSM's descriptor table is not the guest's), so that
 * the stream gives the slot back for the next one, unless it claims an
 * accepted connection (chan_hello()).  The reserve is taken again as soon
 * as a slot is free: after the loop's closes (reap()), at the next guest
 * stream, at the timer tick.
 */
static int reserve_fd = -1;

void nsm_reserve_fd(void)
{
	if (reserve_fd < 0)
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/*
 * Room for a descriptor nkd passes (ATTACH_STREAM, ATTACH_CLAIM,
 * ATTACH_LISTENER), made before the control message is received: the
 * kernel installs a passed descriptor at recvmsg() or, with the table full,
 * drops it (MSG_CTRUNC), and the guest's stream would be reset.  As in
 * vm_accept(): first the pool of empty pipes, then the reserve.  Returns
 * true when the reserve gave its slot: a guest stream passed now is in the
 * reserve's place, and its HELLO is refused unless it claims an accepted
 * connection.  One fcntl() and one close() per control message while there
 * is room (the pipes closed may be numbered above a lowered limit: look
 * again); control messages are set-up, never per packet.
 */
static bool fd_free(void)
{
	int t = fcntl(reserve_fd, F_DUPFD_CLOEXEC, 0);

	if (t < 0)
		return !out_of_fds(errno);
	close(t);
	return true;
}

bool nsm_fd_room(void)
{
	nsm_reserve_fd();
	if (reserve_fd < 0) {
		relay_pool_drain();
		return false;
	}
	if (fd_free() || (relay_pool_drain() && fd_free()))
		return false;
	close(reserve_fd);
	reserve_fd = -1;
	return true;
}

/*
 * One guest stream per event, as nginx accepts: under load the next
 * epoll_wait() reports the listener again, and at light load this saves
 * the accept4() that would only say EAGAIN.
 */
void vm_accept(struct vm *vm)
{
	bool refuse = false;
	struct chan *ch;
	int fd;

	nsm_reserve_fd();
	fd = accept4(vm->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0 && out_of_fds(errno) && relay_pool_drain())
		fd = accept4(vm->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0 && out_of_fds(errno) && reserve_fd >= 0) {
		/* The stream takes the reserve's slot: its HELLO gets ENOBUFS
		 * now, where the guest would wait in the backlog for a slot. */
		close(reserve_fd);
		reserve_fd = -1;
		fd = accept4(vm->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		refuse = true;
	}
	if (fd < 0) {
		if (out_of_fds(errno) || errno == ENOBUFS || errno == ENOMEM) {
			/* Pause until the next timer tick, not spin. */
			vm_warn(vm, "accepting guest streams: %s", strerror(errno));
			ep_set(vm->lfd, 0);
		}
		return;
	}
	ch = chan_new(vm, fd, vm->ldomain);
	if (!ch) {
		vm_warn(vm, "no memory for a new guest stream");
		close(fd);
		return;
	}
	ch->refuse = refuse;
}
