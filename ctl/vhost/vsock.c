// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The virtio-vsock device of nk-vhost-vsock: packets on the guest's tx and
 * rx queues become Unix stream connections following the hybrid-vsock
 * convention of Firecracker and cloud-hypervisor, so nkd (which listens on
 * <uds>_7531 for a VM registered with "uds <uds>") serves a QEMU guest
 * without knowing it is one.
 *
 * Theory of operation
 * -------------------
 * A connection is keyed by (guest port, host port) and lives in a slot of a
 * fixed table; its Unix fd is in the epoll set under (VV_EP_CONN, slot,
 * generation), so an event for a released slot is recognised and dropped.
 *
 *   guest -> host   REQUEST to port P: connect(<uds>_P) without blocking;
 *                   RESPONSE on success, RST when nothing listens (a full
 *                   backlog is retried every tick until connect_ms).
 *   host -> guest   a client of the <uds> listener writes "CONNECT <port>\n";
 *                   we pick a host port (from 2^30 up), send REQUEST; the
 *                   guest's RESPONSE makes us answer "OK <hostport>\n".
 *
 * Data.  Guest RW payload is written straight from guest memory to the Unix
 * socket; what the socket does not take goes to a per-connection ring of
 * buf_alloc bytes, the receive buffer we advertise, so a guest that
 * respects its credit never finds it full (one that does not is reset and
 * counted).  fwd_cnt counts the bytes handed to the Unix side; a
 * CREDIT_UPDATE goes out when it moved by a quarter of the buffer since
 * the guest last heard of it (every packet to the guest carries it too).
 * Towards the guest, the Unix socket is read straight into an rx buffer
 * chain, at most the guest's credit (buf_alloc - (tx_cnt - fwd_cnt) from
 * its last header) and one packet's worth.  A connection without credit
 * or without rx buffers leaves the epoll set for reading until a guest
 * header or an rx kick changes that.
 *
 * Control packets owed to the guest (REQUEST, RESPONSE, CREDIT_UPDATE,
 * SHUTDOWN, RST) are bits in the connection, which then sits on ctl_list
 * until an rx buffer takes them; resets for packets that match no
 * connection go to a bounded queue.  We never answer a RST with a RST.
 *
 * Shutdown.  Guest SHUTDOWN(SEND) -> shutdown(SHUT_WR) once the buffer is
 * flushed; SHUTDOWN(RCV) -> shutdown(SHUT_RD).  EOF on the Unix side ->
 * SHUTDOWN(SEND) to the guest; EPIPE writing to it (its peer shut its
 * reading side: the NSM after a reset, while it still passes on what it
 * received) -> SHUTDOWN(RCV), and the guest's payload is dropped; the
 * Unix side closing both ways (at EOF, or later: POLLHUP) ->
 * SHUTDOWN(RCV|SEND).  When both directions are finished we end
 * it as a Linux peer does: RST if the guest closed its socket (SHUTDOWN
 * with both flags); otherwise SHUTDOWN(RCV|SEND) and the slot waits (no
 * fd) for the guest's RST, at most linger_ms.  Errors on the Unix side
 * reset the connection.  A packet for no connection (the guest's credit
 * update racing our RST, say) is answered with RST, as Linux does.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "vhost_vsock.h"

#define VV_HDR		sizeof(struct vsock_hdr)
#define VV_LINE_MAX	40	/* "CONNECT 4294967295\n" and then some */

uint64_t vv_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Count an event; refusals (the counters before VV_FIRST_EVENT_STAT) are
 * logged, the first ten of each kind and then every thousandth, so a guest
 * that floods garbage cannot flood the log.
 */
void vv_count(struct vv *vv, enum vv_stat s, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	uint64_t n;

	n = ++vv->stats[s];
	if (s >= VV_FIRST_EVENT_STAT || (n > 10 && n % 1000))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	warn("vm %s: %s: %s (%s, %llu so far)", vv->cfg.name, vv_stat_name(s),
	     msg, vv_stat_desc(s), (unsigned long long)n);
}

void vv_stats_log(struct vv *vv, bool all)
{
	int s;

	for (s = 0; s < VV_STAT_MAX; s++) {
		if (!vv->stats[s] || (!all && vv->stats[s] == vv->stats_logged[s]))
			continue;
		info("vm %s: stat %s=%llu (%s)", vv->cfg.name, vv_stat_name(s),
		     (unsigned long long)vv->stats[s], vv_stat_desc(s));
		vv->stats_logged[s] = vv->stats[s];
	}
}

int vv_ep_set(struct vv *vv, int fd, uint64_t ref, uint32_t events, uint32_t *cur)
{
	struct epoll_event ev = { .events = events, .data.u64 = ref };
	int op;

	if (events == *cur)
		return 0;
	if (!events)
		op = EPOLL_CTL_DEL;
	else if (!*cur)
		op = EPOLL_CTL_ADD;
	else
		op = EPOLL_CTL_MOD;
	if (epoll_ctl(vv->epfd, op, fd, &ev) < 0)
		return -errno;
	*cur = events;
	return 0;
}

/* ------------------------------------------------------------ lists */

static void list_init(struct vv_list *l)
{
	l->prev = l->next = l;
}

static bool list_empty(const struct vv_list *l)
{
	return l->next == l;
}

static void list_add_tail(struct vv_list *l, struct vv_list *n)
{
	n->prev = l->prev;
	n->next = l;
	l->prev->next = n;
	l->prev = n;
}

static void list_del(struct vv_list *n)
{
	if (!n->next)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
}

#define conn_of_ctl(l) ((struct vconn *)((char *)(l) - offsetof(struct vconn, ctl)))

/* ------------------------------------------------------------ table */

static uint32_t conn_slot(const struct vv *vv, const struct vconn *c)
{
	return (uint32_t)(c - vv->conns);
}

static unsigned int key_hash(const struct vv *vv, uint32_t gport, uint32_t hport)
{
	return ((gport * 2654435761u) ^ (hport * 40503u + (hport >> 16))) & vv->hash_mask;
}

static struct vconn *conn_lookup(struct vv *vv, uint32_t gport, uint32_t hport)
{
	struct vconn *c;

	for (c = vv->hash[key_hash(vv, gport, hport)]; c; c = c->hnext) {
		if (c->gport == gport && c->hport == hport)
			return c;
	}
	return NULL;
}

static void hash_add(struct vv *vv, struct vconn *c)
{
	unsigned int b = key_hash(vv, c->gport, c->hport);

	c->hnext = vv->hash[b];
	vv->hash[b] = c;
	c->in_hash = true;
}

static void hash_del(struct vv *vv, struct vconn *c)
{
	struct vconn **pp;

	if (!c->in_hash)
		return;
	for (pp = &vv->hash[key_hash(vv, c->gport, c->hport)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == c) {
			*pp = c->hnext;
			break;
		}
	}
	c->hnext = NULL;
	c->in_hash = false;
}

static struct vconn *conn_alloc(struct vv *vv)
{
	struct vconn *c;
	uint32_t gen;

	if (!vv->nfree)
		return NULL;
	c = &vv->conns[vv->free_slots[--vv->nfree]];
	gen = c->gen;
	memset(c, 0, sizeof(*c));
	c->gen = gen;
	c->fd = -1;
	vv->nconns++;
	return c;
}

/* ------------------------------------------------------------ timer */

static void timer_update(struct vv *vv)
{
	struct itimerspec its = { 0 };
	bool want = false;
	unsigned int i;

	for (i = 0; i < vv->cfg.max_conns && !want; i++)
		want = vv->conns[i].state != VC_FREE && vv->conns[i].deadline_ms;
	if (want == vv->timer_armed || vv->timer_fd < 0)
		return;
	if (want) {
		its.it_interval.tv_nsec = VV_TICK_MS * 1000000L;
		its.it_value.tv_nsec = VV_TICK_MS * 1000000L;
	}
	if (timerfd_settime(vv->timer_fd, 0, &its, NULL) == 0)
		vv->timer_armed = want;
}

static void conn_set_deadline(struct vv *vv, struct vconn *c, unsigned int ms)
{
	c->deadline_ms = vv_now_ms() + ms;
	if (!vv->timer_armed)
		timer_update(vv);
}

/* ------------------------------------------------------------ state */

static uint32_t conn_credit(const struct vconn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

bool vv_dev_running(const struct vv *vv)
{
	return vv->vu_fd >= 0 && vv_vq_ready(&vv->vq[VV_RXQ]) &&
	       vv_vq_ready(&vv->vq[VV_TXQ]);
}

static bool conn_want_read(const struct vv *vv, const struct vconn *c)
{
	return c->state == VC_OPEN && !(c->pending & (VC_P_RESPONSE | VC_P_RST)) &&
	       !c->unix_eof && !c->guest_shut_rcv && !vv->rx_wait &&
	       conn_credit(c) > 0 && vv_dev_running(vv);
}

static void conn_update_events(struct vv *vv, struct vconn *c)
{
	uint32_t ev = 0;

	if (c->fd < 0)
		return;
	if (c->state == VC_HOST_LINE)
		ev = EPOLLIN;
	else if (c->state == VC_OPEN) {
		if (conn_want_read(vv, c))
			ev |= EPOLLIN;
		if (c->buf_len)
			ev |= EPOLLOUT;
		/* after its EOF: the Unix side closing both ways (the NSM
		 * after a reset that followed the peer's FIN) */
		if (c->unix_eof && !c->unix_hup)
			ev |= EPOLLHUP;
	}
	if (vv_ep_set(vv, c->fd, vv_ep_ref(VV_EP_CONN, c->gen, conn_slot(vv, c)),
		      ev, &c->ep_events) < 0)
		err_perror("vm %s: epoll for connection %u:%u", vv->cfg.name,
			   c->gport, c->hport);
}

static void conn_pend(struct vv *vv, struct vconn *c, unsigned int bits)
{
	c->pending |= bits;
	if (!c->ctl.next)
		list_add_tail(&vv->ctl_list, &c->ctl);
}

static void conn_close_fd(struct vv *vv, struct vconn *c)
{
	uint32_t none = 0;

	if (c->fd < 0)
		return;
	vv_ep_set(vv, c->fd, 0, none, &c->ep_events);
	close(c->fd);
	c->fd = -1;
	c->ep_events = 0;
}

/* Forget the connection: no packet to the guest. */
static void conn_release(struct vv *vv, struct vconn *c)
{
	if (c->state == VC_FREE)
		return;
	conn_close_fd(vv, c);
	hash_del(vv, c);
	list_del(&c->ctl);
	free(c->buf);
	c->buf = NULL;
	c->state = VC_FREE;
	c->pending = 0;
	c->deadline_ms = 0;
	c->gen++;
	vv->free_slots[vv->nfree++] = conn_slot(vv, c);
	vv->nconns--;
	vv->stats[VV_CONN_CLOSED]++;
}

/* Close the Unix side now and owe the guest a RST; released once sent. */
static void conn_reset(struct vv *vv, struct vconn *c)
{
	conn_close_fd(vv, c);
	free(c->buf);
	c->buf = NULL;
	c->buf_len = 0;
	c->deadline_ms = 0;
	if (!c->in_hash) {
		/* never announced to the guest (host CONNECT line) */
		conn_release(vv, c);
		return;
	}
	c->state = VC_DEAD;
	c->pending = 0;
	conn_pend(vv, c, VC_P_RST);
}

/*
 * Both directions finished?  End it the way a Linux peer does: if the guest
 * closed its socket (SHUTDOWN with both flags), answer RST; if the guest
 * only stopped sending and the Unix side reached EOF, close the Unix side,
 * send SHUTDOWN(RCV|SEND) and wait for the guest's RST (it comes when the
 * guest application closes; linger_ms at most).
 */
static void conn_check_done(struct vv *vv, struct vconn *c)
{
	if (c->state != VC_OPEN || !c->guest_shut_send || c->buf_len)
		return;
	if (c->guest_shut_rcv) {
		conn_reset(vv, c);
	} else if (c->unix_eof) {
		conn_close_fd(vv, c);
		free(c->buf);
		c->buf = NULL;
		c->state = VC_CLOSING;
		c->pending &= ~VC_P_CREDIT;
		conn_pend(vv, c, VC_P_SHUTDOWN);
		conn_set_deadline(vv, c, vv->cfg.linger_ms);
	}
}

static void rst_queue(struct vv *vv, uint32_t gport, uint32_t hport)
{
	struct vv_rst *r;

	if (vv->rst_len >= VV_RST_QUEUE) {
		vv_count(vv, VV_RST_DROPPED, "reset to guest port %u from %u", gport, hport);
		return;
	}
	r = &vv->rst_q[(vv->rst_head + vv->rst_len++) % VV_RST_QUEUE];
	r->gport = gport;
	r->hport = hport;
}

/* ------------------------------------------------------------ rx queue */

/* The next rx chain that can hold at least a header; false when dry. */
static bool rx_pop(struct vv *vv, struct vv_chain *ch)
{
	struct vv_vq *vq = &vv->vq[VV_RXQ];

	while (vv_vq_pop(vq, &vv->mem, ch, vv->stats)) {
		if (!ch->n_out && ch->in_len >= VV_HDR)
			return true;
		vv_count(vv, VV_RX_BAD_CHAIN, "rx chain %u: %zu readable, %zu writable bytes",
			 ch->head, ch->out_len, ch->in_len);
		vv_vq_push(vq, ch->head, 0);
	}
	if (vq->broken && !vq->broken_logged) {
		vq->broken_logged = true;
		warn("vm %s: rx queue is broken; waiting for the driver to reset the device",
		     vv->cfg.name);
	}
	vv->rx_wait = true;
	return false;
}

static void fill_hdr(const struct vv *vv, struct vsock_hdr *h, uint32_t gport,
		     uint32_t hport, uint16_t op, uint32_t flags, uint32_t len,
		     const struct vconn *c)
{
	h->src_cid = htole64(VMADDR_CID_HOST);
	h->dst_cid = htole64(vv->cfg.guest_cid);
	h->src_port = htole32(hport);
	h->dst_port = htole32(gport);
	h->len = htole32(len);
	h->type = htole16(VSOCK_TYPE_STREAM);
	h->op = htole16(op);
	h->flags = htole32(flags);
	h->buf_alloc = htole32(c ? vv->cfg.buf_alloc : 0);
	h->fwd_cnt = htole32(c ? c->fwd_cnt : 0);
}

/* One header-only packet to the guest; false when the rx ring is dry. */
static bool send_ctl(struct vv *vv, uint32_t gport, uint32_t hport, uint16_t op,
		     uint32_t flags, struct vconn *c)
{
	struct vv_chain ch;
	struct vsock_hdr h;

	if (!rx_pop(vv, &ch))
		return false;
	fill_hdr(vv, &h, gport, hport, op, flags, 0, c);
	vv_iov_from_buf(ch.iov, ch.n_in, 0, &h, sizeof(h));
	vv_vq_push(&vv->vq[VV_RXQ], ch.head, sizeof(h));
	vv->stats[VV_PKT_RX]++;
	if (c)
		c->fwd_cnt_sent = c->fwd_cnt;
	return true;
}

/* Send what is owed, oldest connection first, until the rx ring is dry. */
static void flush_ctl(struct vv *vv)
{
	static const uint16_t ops[] = {
		[0] = VSOCK_OP_REQUEST, [1] = VSOCK_OP_RESPONSE,
		[2] = VSOCK_OP_CREDIT_UPDATE, [3] = VSOCK_OP_SHUTDOWN, [4] = VSOCK_OP_RST,
	};

	if (!vv_dev_running(vv) || vv->rx_wait)
		return;
	while (vv->rst_len) {
		struct vv_rst *r = &vv->rst_q[vv->rst_head];

		if (!send_ctl(vv, r->gport, r->hport, VSOCK_OP_RST, 0, NULL))
			return;
		vv->rst_head = (vv->rst_head + 1) % VV_RST_QUEUE;
		vv->rst_len--;
	}
	while (!list_empty(&vv->ctl_list)) {
		struct vconn *c = conn_of_ctl(vv->ctl_list.next);

		while (c->pending) {
			unsigned int bit = __builtin_ctz(c->pending);
			uint32_t flags = 0;

			/* SHUTDOWN before CREDIT_UPDATE: it carries the credit
			 * too, and a guest writer woken by credit must find
			 * the shutdown already there (unix_takes_no_more) */
			if (bit == 2 && (c->pending & VC_P_SHUTDOWN))
				bit = 3;

			if (bit == 2 && c->state != VC_OPEN) {
				c->pending &= ~VC_P_CREDIT;
				continue;
			}
			if (bit == 3) {
				bool both = c->state == VC_CLOSING || c->unix_hup;

				flags = (both || c->unix_rd_shut ? VSOCK_SHUTDOWN_RCV : 0) |
					(both || c->unix_eof ? VSOCK_SHUTDOWN_SEND : 0);
			}
			if (!send_ctl(vv, c->gport, c->hport, ops[bit], flags, c))
				return;
			c->pending &= ~(1u << bit);
			if (bit == 4) {
				conn_release(vv, c);
				break;
			}
		}
		if (c->state == VC_FREE)
			continue;
		list_del(&c->ctl);
		conn_update_events(vv, c);
	}
}

/* Unix -> guest: RW packets while there is data, credit and rx buffers. */
static void conn_pump(struct vv *vv, struct vconn *c)
{
	struct vv_vq *rxq = &vv->vq[VV_RXQ];
	unsigned int budget = VV_RX_BUDGET;

	while (budget-- && conn_want_read(vv, c)) {
		struct iovec iov[VV_CHAIN_MAX_DESC];
		struct vsock_hdr h;
		struct vv_chain ch;
		size_t max;
		unsigned int n;
		ssize_t r;

		if (!rx_pop(vv, &ch))
			break;
		if (ch.in_len == VV_HDR) {
			/* fine for control packets, useless for data */
			vv_count(vv, VV_RX_BAD_CHAIN, "rx chain %u: no room for data",
				 ch.head);
			vv_vq_push(rxq, ch.head, 0);
			continue;
		}
		max = ch.in_len - VV_HDR;
		if (max > conn_credit(c))
			max = conn_credit(c);
		if (max > VV_PKT_MAX_PAYLOAD)
			max = VV_PKT_MAX_PAYLOAD;
		n = vv_iov_slice(ch.iov, ch.n_in, VV_HDR, max, iov, VV_CHAIN_MAX_DESC);
		r = readv(c->fd, iov, n);
		if (r <= 0) {
			vv_vq_unpop(rxq);
			if (!r) {
				struct pollfd p = { .fd = c->fd, .events = POLLIN };

				/* A peer that closed its socket (not only its
				 * sending side) shuts both directions towards
				 * the guest, so the guest's writes fail: the
				 * NetKernel protocol tells a reset from a FIN
				 * this way (docs/protocol.md 1.8). */
				c->unix_eof = true;
				c->unix_hup = poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
				conn_pend(vv, c, VC_P_SHUTDOWN);
				conn_check_done(vv, c);
			} else if (errno != EAGAIN && errno != EINTR) {
				vv_count(vv, VV_UNIX_ERROR, "read from %s_%u side (guest port %u): %s",
					 vv->cfg.uds, c->hport, c->gport, strerror(errno));
				conn_reset(vv, c);
			}
			break;
		}
		fill_hdr(vv, &h, c->gport, c->hport, VSOCK_OP_RW, 0, (uint32_t)r, c);
		vv_iov_from_buf(ch.iov, ch.n_in, 0, &h, sizeof(h));
		vv_vq_push(rxq, ch.head, sizeof(h) + (uint32_t)r);
		c->tx_cnt += (uint32_t)r;
		c->fwd_cnt_sent = c->fwd_cnt;
		vv->stats[VV_PKT_RX]++;
		vv->stats[VV_BYTES_RX] += (uint64_t)r;
	}
	if (c->state != VC_FREE)
		conn_update_events(vv, c);
}

/* ------------------------------------------------------------ Unix side */

static void maybe_credit(struct vv *vv, struct vconn *c)
{
	if (c->fwd_cnt - c->fwd_cnt_sent >= vv->cfg.buf_alloc / 4)
		conn_pend(vv, c, VC_P_CREDIT);
}

/*
 * Writing to the Unix side said EPIPE: its peer reads no more (the NSM
 * shuts its reading side after a reset, while it still passes on what it
 * received before).  Tell the guest with SHUTDOWN(RCV), so that its writes
 * fail, and drop its payload, buffered and to come, as taken: the other
 * direction goes on.
 */
static void unix_takes_no_more(struct vv *vv, struct vconn *c, uint32_t dropped)
{
	if (!c->unix_rd_shut) {
		c->unix_rd_shut = true;
		conn_pend(vv, c, VC_P_SHUTDOWN);
	}
	c->fwd_cnt += c->buf_len + dropped;
	c->buf_len = 0;
	maybe_credit(vv, c);
	conn_check_done(vv, c);
}

/* Buffered guest data -> Unix socket. */
static void conn_flush(struct vv *vv, struct vconn *c)
{
	uint32_t cap = vv->cfg.buf_alloc;

	while (c->buf_len) {
		struct iovec iov[2];
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 1 };
		uint32_t first = cap - c->buf_head;
		ssize_t w;

		if (first > c->buf_len)
			first = c->buf_len;
		iov[0].iov_base = c->buf + c->buf_head;
		iov[0].iov_len = first;
		if (first < c->buf_len) {
			iov[1].iov_base = c->buf;
			iov[1].iov_len = c->buf_len - first;
			mh.msg_iovlen = 2;
		}
		w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (errno == EPIPE) {
				unix_takes_no_more(vv, c, 0);
				return;
			}
			vv_count(vv, VV_UNIX_ERROR, "write to %s_%u side (guest port %u): %s",
				 vv->cfg.uds, c->hport, c->gport, strerror(errno));
			conn_reset(vv, c);
			return;
		}
		c->buf_head = (c->buf_head + (uint32_t)w) % cap;
		c->buf_len -= (uint32_t)w;
		c->fwd_cnt += (uint32_t)w;
	}
	maybe_credit(vv, c);
	if (!c->buf_len && c->guest_shut_send && !c->unix_wr_shut) {
		shutdown(c->fd, SHUT_WR);
		c->unix_wr_shut = true;
	}
	conn_check_done(vv, c);
}

/* Guest RW payload -> Unix socket, the rest into the buffer. */
static void guest_data(struct vv *vv, struct vconn *c, const struct vv_chain *ch,
		       uint32_t len)
{
	uint32_t cap = vv->cfg.buf_alloc, done = 0;

	if (len > cap - c->buf_len) {
		vv_count(vv, VV_PKT_CREDIT, "%u bytes to port %u with %u of credit",
			 len, c->hport, cap - c->buf_len);
		conn_reset(vv, c);
		return;
	}
	if (!len)
		return;
	vv->stats[VV_BYTES_TX] += len;
	if (c->unix_rd_shut) {
		unix_takes_no_more(vv, c, len);
		return;
	}
	if (!c->buf_len) {
		struct iovec iov[VV_CHAIN_MAX_DESC];
		struct msghdr mh = { .msg_iov = iov };
		ssize_t w;

		mh.msg_iovlen = vv_iov_slice(ch->iov, ch->n_out, VV_HDR, len, iov,
					     VV_CHAIN_MAX_DESC);
		w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EPIPE) {
			unix_takes_no_more(vv, c, len);
			return;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR) {
			vv_count(vv, VV_UNIX_ERROR, "write to %s_%u side (guest port %u): %s",
				 vv->cfg.uds, c->hport, c->gport, strerror(errno));
			conn_reset(vv, c);
			return;
		}
		done = w > 0 ? (uint32_t)w : 0;
		c->fwd_cnt += done;
	}
	if (done < len) {
		uint32_t rest = len - done, tail, first;

		if (!c->buf) {
			c->buf = malloc(cap);
			if (!c->buf) {
				err("vm %s: no memory for a connection buffer", vv->cfg.name);
				conn_reset(vv, c);
				return;
			}
			c->buf_head = 0;
		}
		tail = (c->buf_head + c->buf_len) % cap;
		first = cap - tail < rest ? cap - tail : rest;
		vv_iov_to_buf(ch->iov, ch->n_out, VV_HDR + done, c->buf + tail, first);
		vv_iov_to_buf(ch->iov, ch->n_out, VV_HDR + done + first, c->buf, rest - first);
		c->buf_len += rest;
	}
	maybe_credit(vv, c);
}

static int unix_connect(struct vv *vv, struct vconn *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	r = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", vv->cfg.uds, c->hport);
	if (r < 0 || (size_t)r >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	c->fd = fd;
	return 0;
}

/* ------------------------------------------------------------ guest packets */

static void guest_request(struct vv *vv, uint32_t gport, uint32_t hport,
			  const struct vsock_hdr *h)
{
	struct vconn *c = conn_alloc(vv);
	int r;

	if (!c) {
		vv_count(vv, VV_CONN_LIMIT, "guest port %u to %u: %u connections open",
			 gport, hport, vv->nconns);
		rst_queue(vv, gport, hport);
		return;
	}
	c->gport = gport;
	c->hport = hport;
	c->peer_buf_alloc = le32toh(h->buf_alloc);
	c->peer_fwd_cnt = le32toh(h->fwd_cnt);
	hash_add(vv, c);
	r = unix_connect(vv, c);
	if (r == -EAGAIN) {
		c->state = VC_GUEST_CONNECT;
		conn_set_deadline(vv, c, vv->cfg.connect_ms);
		return;
	}
	if (r < 0) {
		vv_count(vv, VV_CONNECT_FAIL, "guest port %u to %s_%u: %s", gport,
			 vv->cfg.uds, hport, strerror(-r));
		c->state = VC_OPEN;
		conn_reset(vv, c);
		return;
	}
	c->state = VC_OPEN;
	vv->stats[VV_CONN_GUEST]++;
	debug("vm %s: guest port %u connected to %s_%u", vv->cfg.name, gport,
	      vv->cfg.uds, hport);
	conn_pend(vv, c, VC_P_RESPONSE);
}

static void host_established(struct vv *vv, struct vconn *c)
{
	char ok[24];
	int n = snprintf(ok, sizeof(ok), "OK %u\n", c->hport);

	c->deadline_ms = 0;
	if (send(c->fd, ok, n, MSG_NOSIGNAL | MSG_DONTWAIT) != n) {
		vv_count(vv, VV_UNIX_ERROR, "host client of guest port %u left before OK",
			 c->gport);
		conn_reset(vv, c);
		return;
	}
	c->state = VC_OPEN;
	vv->stats[VV_CONN_HOST]++;
	debug("vm %s: host port %u connected to guest port %u", vv->cfg.name,
	      c->hport, c->gport);
}

static void guest_shutdown(struct vv *vv, struct vconn *c, uint32_t flags)
{
	if ((flags & VSOCK_SHUTDOWN_RCV) && !c->guest_shut_rcv) {
		c->guest_shut_rcv = true;
		shutdown(c->fd, SHUT_RD);
	}
	if (flags & VSOCK_SHUTDOWN_SEND) {
		c->guest_shut_send = true;
		if (!c->buf_len && !c->unix_wr_shut) {
			shutdown(c->fd, SHUT_WR);
			c->unix_wr_shut = true;
		}
	}
	if (c->guest_shut_send && c->guest_shut_rcv && c->buf_len && !c->deadline_ms)
		conn_set_deadline(vv, c, vv->cfg.linger_ms);
	conn_check_done(vv, c);
}

/* One packet from the tx queue (the chain goes back to the guest after). */
static void guest_packet(struct vv *vv, const struct vv_chain *ch)
{
	struct vsock_hdr h;
	struct vconn *c;
	uint32_t gport, hport, len, gen = 0;
	uint16_t op;

	vv->stats[VV_PKT_TX]++;
	if (ch->out_len < VV_HDR) {
		vv_count(vv, VV_PKT_SHORT, "chain %u: %zu readable bytes", ch->head, ch->out_len);
		return;
	}
	vv_iov_to_buf(ch->iov, ch->n_out, 0, &h, sizeof(h));
	gport = le32toh(h.src_port);
	hport = le32toh(h.dst_port);
	op = le16toh(h.op);
	len = le32toh(h.len);
	if (le64toh(h.src_cid) != vv->cfg.guest_cid || le64toh(h.dst_cid) != VMADDR_CID_HOST) {
		vv_count(vv, VV_PKT_CID, "cid %llu -> %llu (expected %llu -> %u)",
			 (unsigned long long)le64toh(h.src_cid),
			 (unsigned long long)le64toh(h.dst_cid),
			 (unsigned long long)vv->cfg.guest_cid, VMADDR_CID_HOST);
		return;
	}
	if (le16toh(h.type) != VSOCK_TYPE_STREAM) {
		vv_count(vv, VV_PKT_TYPE, "type %u, port %u -> %u", le16toh(h.type), gport, hport);
		if (op != VSOCK_OP_RST)
			rst_queue(vv, gport, hport);
		return;
	}
	c = conn_lookup(vv, gport, hport);
	if (c) {
		gen = c->gen;
		c->peer_buf_alloc = le32toh(h.buf_alloc);
		c->peer_fwd_cnt = le32toh(h.fwd_cnt);
	}
	if (op == VSOCK_OP_RW && len > ch->out_len - VV_HDR) {
		vv_count(vv, VV_PKT_LEN, "len %u with %zu bytes after the header, port %u -> %u",
			 len, ch->out_len - VV_HDR, gport, hport);
		if (c)
			conn_reset(vv, c);
		return;
	}
	if (!c && op != VSOCK_OP_REQUEST && op != VSOCK_OP_RST) {
		if (op < VSOCK_OP_REQUEST || op > VSOCK_OP_CREDIT_REQUEST) {
			vv_count(vv, VV_PKT_OP, "op %u, port %u -> %u", op, gport, hport);
			return;
		}
		vv->stats[VV_PKT_NO_CONN]++;
		rst_queue(vv, gport, hport);
		return;
	}

	switch (op) {
	case VSOCK_OP_REQUEST:
		if (c) {
			vv_count(vv, VV_PKT_STATE, "REQUEST for open connection %u -> %u",
				 gport, hport);
			conn_reset(vv, c);
			return;
		}
		guest_request(vv, gport, hport, &h);
		return;
	case VSOCK_OP_RST:
		if (c)
			conn_release(vv, c);
		return;
	case VSOCK_OP_RESPONSE:
		if (c->state != VC_HOST_REQ) {
			vv_count(vv, VV_PKT_STATE, "RESPONSE in state %d, port %u -> %u",
				 c->state, gport, hport);
			conn_reset(vv, c);
			return;
		}
		host_established(vv, c);
		break;
	case VSOCK_OP_SHUTDOWN:
	case VSOCK_OP_RW:
		if (c->state == VC_DEAD || c->state == VC_CLOSING)
			return;		/* our RST or SHUTDOWN is on its way */
		if (c->state != VC_OPEN || (op == VSOCK_OP_RW && c->guest_shut_send)) {
			vv_count(vv, VV_PKT_STATE, "op %u in state %d, port %u -> %u",
				 op, c->state, gport, hport);
			conn_reset(vv, c);
			return;
		}
		if (op == VSOCK_OP_RW)
			guest_data(vv, c, ch, len);
		else
			guest_shutdown(vv, c, le32toh(h.flags));
		break;
	case VSOCK_OP_CREDIT_REQUEST:
		if (c->state == VC_OPEN)
			conn_pend(vv, c, VC_P_CREDIT);
		break;
	case VSOCK_OP_CREDIT_UPDATE:
		break;
	default:
		vv_count(vv, VV_PKT_OP, "op %u, port %u -> %u", op, gport, hport);
		return;
	}
	if (c->state == VC_OPEN && c->gen == gen)
		conn_update_events(vv, c);
}

void vv_process_tx(struct vv *vv)
{
	struct vv_vq *vq = &vv->vq[VV_TXQ];
	unsigned int budget = VV_TX_BUDGET;
	struct vv_chain ch;

	vv->tx_more = false;
	while (vv_vq_pop(vq, &vv->mem, &ch, vv->stats)) {
		guest_packet(vv, &ch);
		vv_vq_push(vq, ch.head, 0);
		if (!--budget) {
			vv->tx_more = true;
			break;
		}
	}
	if (vq->broken && !vq->broken_logged) {
		vq->broken_logged = true;
		warn("vm %s: tx queue is broken; waiting for the driver to reset the device",
		     vv->cfg.name);
	}
}

/* The guest added rx buffers: owed packets first, then readers resume. */
void vv_rx_kick(struct vv *vv)
{
	bool was_waiting = vv->rx_wait;
	unsigned int i;

	vv->rx_wait = false;
	flush_ctl(vv);
	if (!was_waiting || vv->rx_wait)
		return;
	for (i = 0; i < vv->cfg.max_conns; i++) {
		if (vv->conns[i].state == VC_OPEN)
			conn_update_events(vv, &vv->conns[i]);
	}
}

void vv_flush(struct vv *vv)
{
	if (vv->tx_more && vv_dev_running(vv))
		vv_process_tx(vv);
	flush_ctl(vv);
	vv_vq_notify(&vv->vq[VV_RXQ]);
	vv_vq_notify(&vv->vq[VV_TXQ]);
}

bool vv_has_work(const struct vv *vv)
{
	return vv->tx_more && vv_dev_running(vv);
}

/* ------------------------------------------------------------ host side */

/* "CONNECT <port>\n", at most VV_LINE_MAX bytes; the rest stays queued. */
static void host_line(struct vv *vv, struct vconn *c)
{
	char line[VV_LINE_MAX + 1], *nl, *end;
	unsigned long port;
	ssize_t n;
	unsigned int tries;

	n = recv(c->fd, line, VV_LINE_MAX, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		vv_count(vv, VV_HOST_BAD_LINE, "host client left before CONNECT");
		conn_release(vv, c);
		return;
	}
	line[n] = '\0';
	nl = memchr(line, '\n', n);
	if (!nl) {
		if (n >= VV_LINE_MAX) {
			vv_count(vv, VV_HOST_BAD_LINE, "no newline in %zd bytes", n);
			conn_release(vv, c);
		}
		return;
	}
	if (recv(c->fd, line, nl - line + 1, MSG_DONTWAIT) != nl - line + 1) {
		conn_release(vv, c);
		return;
	}
	*nl = '\0';
	errno = 0;
	if (strncmp(line, "CONNECT ", 8) || line[8] < '0' || line[8] > '9' ||
	    (port = strtoul(line + 8, &end, 10), *end) || errno || port > UINT32_MAX) {
		vv_count(vv, VV_HOST_BAD_LINE, "bad line '%.*s'", VV_LINE_MAX, line);
		conn_release(vv, c);
		return;
	}
	if (!vv_dev_running(vv)) {
		vv_count(vv, VV_HOST_NO_GUEST, "CONNECT %lu", port);
		conn_release(vv, c);
		return;
	}
	c->gport = (uint32_t)port;
	for (tries = 0; tries <= vv->cfg.max_conns; tries++) {
		c->hport = vv->next_hport++;
		if (vv->next_hport == UINT32_MAX)
			vv->next_hport = 1u << 30;
		if (!conn_lookup(vv, c->gport, c->hport))
			break;
	}
	hash_add(vv, c);
	c->state = VC_HOST_REQ;
	c->peer_buf_alloc = 0;
	conn_set_deadline(vv, c, vv->cfg.connect_ms);
	conn_update_events(vv, c);	/* quiet until the guest answers */
	conn_pend(vv, c, VC_P_REQUEST);
}

void vv_host_accept(struct vv *vv)
{
	unsigned int i;

	for (i = 0; i < 16; i++) {
		struct vconn *c;
		int fd;

		fd = accept4(vv->host_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				err_perror("vm %s: accept on %s", vv->cfg.name, vv->cfg.uds);
			return;
		}
		if (!vv_dev_running(vv)) {
			vv_count(vv, VV_HOST_NO_GUEST, "host connection on %s", vv->cfg.uds);
			close(fd);
			continue;
		}
		c = conn_alloc(vv);
		if (!c) {
			vv_count(vv, VV_CONN_LIMIT, "host connection: %u connections open",
				 vv->nconns);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->state = VC_HOST_LINE;
		conn_set_deadline(vv, c, vv->cfg.connect_ms);
		conn_update_events(vv, c);
	}
}

void vv_conn_event(struct vv *vv, uint32_t slot, uint32_t gen, uint32_t events)
{
	struct vconn *c;

	if (slot >= vv->cfg.max_conns)
		return;
	c = &vv->conns[slot];
	if (c->gen != gen || c->state == VC_FREE || c->fd < 0)
		return;		/* released earlier in this batch */
	switch (c->state) {
	case VC_HOST_LINE:
		host_line(vv, c);
		return;
	case VC_OPEN:
		if (c->buf_len && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			conn_flush(vv, c);
		if (c->state == VC_OPEN && c->gen == gen && (events & EPOLLHUP) &&
		    c->unix_eof && !c->unix_hup) {
			/* closed after its EOF: the guest's writes must fail
			 * too, SHUTDOWN(RCV|SEND) (as at EOF with POLLHUP) */
			c->unix_hup = true;
			conn_pend(vv, c, VC_P_SHUTDOWN);
		}
		if (c->state == VC_OPEN && c->gen == gen &&
		    (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
			conn_pump(vv, c);
		if (c->state == VC_OPEN && c->gen == gen)
			conn_update_events(vv, c);
		return;
	default:
		conn_update_events(vv, c);
		return;
	}
}

void vv_tick(struct vv *vv)
{
	uint64_t now = vv_now_ms();
	unsigned int i;

	for (i = 0; i < vv->cfg.max_conns; i++) {
		struct vconn *c = &vv->conns[i];
		int r;

		if (c->state == VC_FREE || !c->deadline_ms)
			continue;
		if (c->state == VC_GUEST_CONNECT) {
			r = unix_connect(vv, c);
			if (!r) {
				c->state = VC_OPEN;
				c->deadline_ms = 0;
				vv->stats[VV_CONN_GUEST]++;
				conn_pend(vv, c, VC_P_RESPONSE);
			} else if (r != -EAGAIN || now >= c->deadline_ms) {
				vv_count(vv, VV_CONNECT_FAIL, "guest port %u to %s_%u: %s",
					 c->gport, vv->cfg.uds, c->hport, strerror(-r));
				conn_reset(vv, c);
			}
			continue;
		}
		if (now < c->deadline_ms)
			continue;
		switch (c->state) {
		case VC_HOST_LINE:
			vv_count(vv, VV_HOST_BAD_LINE, "no CONNECT line within %u ms",
				 vv->cfg.connect_ms);
			conn_release(vv, c);
			break;
		case VC_HOST_REQ:
			vv_count(vv, VV_HOST_TIMEOUT, "guest port %u did not answer within %u ms",
				 c->gport, vv->cfg.connect_ms);
			conn_reset(vv, c);
			break;
		case VC_OPEN:
			vv_count(vv, VV_UNIX_ERROR, "%u bytes for %s_%u not taken within %u ms of the guest's close",
				 c->buf_len, vv->cfg.uds, c->hport, vv->cfg.linger_ms);
			conn_reset(vv, c);
			break;
		case VC_CLOSING:
			/* the guest application never closed: as Linux, RST */
			conn_reset(vv, c);
			break;
		default:
			c->deadline_ms = 0;
			break;
		}
	}
	timer_update(vv);
}

/* ------------------------------------------------------------ life cycle */

int vv_dev_init(struct vv *vv)
{
	unsigned int i, buckets = 1;

	while (buckets < 2 * vv->cfg.max_conns)
		buckets <<= 1;
	vv->conns = calloc(vv->cfg.max_conns, sizeof(*vv->conns));
	vv->free_slots = calloc(vv->cfg.max_conns, sizeof(*vv->free_slots));
	vv->hash = calloc(buckets, sizeof(*vv->hash));
	if (!vv->conns || !vv->free_slots || !vv->hash) {
		vv_dev_free(vv);
		return -ENOMEM;
	}
	vv->hash_mask = buckets - 1;
	for (i = 0; i < vv->cfg.max_conns; i++) {
		vv->conns[i].fd = -1;
		vv->free_slots[i] = vv->cfg.max_conns - 1 - i;
	}
	vv->nfree = vv->cfg.max_conns;
	vv->nconns = 0;
	list_init(&vv->ctl_list);
	vv->next_hport = 1u << 30;
	return 0;
}

/* Release every connection (the guest's transport is gone). */
void vv_dev_reset(struct vv *vv, const char *why)
{
	unsigned int i, n = vv->nconns;

	for (i = 0; vv->conns && i < vv->cfg.max_conns; i++)
		conn_release(vv, &vv->conns[i]);
	vv->rst_len = 0;
	vv->rx_wait = false;
	vv->tx_more = false;
	if (n)
		info("vm %s: released %u connections: %s", vv->cfg.name, n, why);
	timer_update(vv);
}

void vv_dev_free(struct vv *vv)
{
	if (vv->conns)
		vv_dev_reset(vv, "exiting");
	free(vv->conns);
	free(vv->free_slots);
	free(vv->hash);
	vv->conns = NULL;
	vv->free_slots = NULL;
	vv->hash = NULL;
}
