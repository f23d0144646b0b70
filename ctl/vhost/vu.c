// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The vhost-user side of nk-vhost-vsock: messages from the front-end
 * (QEMU's vhost-user-vsock-pci) on the Unix socket it connected to.
 *
 * Theory of operation
 * -------------------
 * A message is a 12-byte header (request, flags, payload size; little
 * endian, version 1 in the flags) and a payload of at most VU_MSG_MAX
 * bytes; file descriptors ride along as SCM_RIGHTS with the header.  The
 * front-end is the VMM, but its messages are still checked: sizes against
 * the request, queue indices, ring sizes, region counts against the fds.
 * The socket stays blocking with a receive timeout: a message is read
 * whole when epoll says the socket is readable, and a front-end that stalls
 * mid-message is dropped.
 *
 * Features offered: VIRTIO_F_VERSION_1 and VHOST_USER_F_PROTOCOL_FEATURES;
 * protocol features CONFIG (the guest CID is the device's config space,
 * read with GET_CONFIG: QEMU's vhost-user-vsock has no guest-cid property
 * of its own) and REPLY_ACK.  Split rings only; no indirect descriptors,
 * no event index, no multiqueue, no dirty logging (so no migration).
 *
 * Ring life cycle: SET_VRING_NUM/ADDR/BASE describe a ring, SET_VRING_KICK
 * starts it (addresses are translated then), GET_VRING_BASE stops it and
 * answers the next avail index.  Rings start enabled; SET_VRING_ENABLE
 * turns them off and on.  Stopping a ring, RESET_OWNER and a front-end
 * disconnect release every connection: the guest's end of them is gone.
 * The next front-end (QEMU restarted, or reconnecting with "reconnect=N")
 * starts from a clean device.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "vhost_vsock.h"

enum vu_request {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
};

#define VU_VERSION		1
#define VU_FLAG_VERSION_MASK	0x3
#define VU_FLAG_REPLY		(1u << 2)
#define VU_FLAG_NEED_REPLY	(1u << 3)

#define VHOST_USER_F_PROTOCOL_FEATURES	30
#define VU_PROTOCOL_F_REPLY_ACK		3
#define VU_PROTOCOL_F_CONFIG		9

#define VU_VRING_IDX_MASK	0xff
#define VU_VRING_NOFD		(1u << 8)

#define VU_MSG_MAX		4096
#define VU_MAX_FDS		VV_MAX_REGIONS
#define VU_CONFIG_MAX		256

#define VV_FEATURES	(1ull << VIRTIO_F_VERSION_1 | 1ull << VHOST_USER_F_PROTOCOL_FEATURES)
#define VV_PROTOCOL_FEATURES (1ull << VU_PROTOCOL_F_REPLY_ACK | 1ull << VU_PROTOCOL_F_CONFIG)

/*
 *   0         4         8         12
 *  +---------+---------+---------+------------------------------+
 *  | request |  flags  |  size   | payload (size bytes)         |
 *  +---------+---------+---------+------------------------------+
 */
struct vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
} __attribute__((packed));
static_assert(sizeof(struct vu_hdr) == 12, "vhost-user header");

struct vu_vring_state {
	uint32_t index;
	uint32_t num;
};

struct vu_vring_addr {
	uint32_t index;
	uint32_t flags;
	uint64_t desc;
	uint64_t used;
	uint64_t avail;
	uint64_t log;
};
static_assert(sizeof(struct vu_vring_addr) == 40, "vhost_vring_addr");

struct vu_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t uva;
	uint64_t mmap_offset;
};

struct vu_mem_table {
	uint32_t nregions;
	uint32_t padding;
	struct vu_mem_region r[VV_MAX_REGIONS];
};

struct vu_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
	uint8_t region[VU_CONFIG_MAX];
};

struct vu_msg {
	struct vu_hdr hdr;
	union {
		uint64_t u64;
		struct vu_vring_state state;
		struct vu_vring_addr addr;
		struct vu_mem_table mem;
		struct vu_config config;
		uint8_t raw[VU_MSG_MAX];
	};	/* read separately from hdr: the padding between is unused */
};

static const char *req_name(uint32_t r)
{
	static const char *const names[] = {
		[VU_GET_FEATURES] = "GET_FEATURES",
		[VU_SET_FEATURES] = "SET_FEATURES",
		[VU_SET_OWNER] = "SET_OWNER",
		[VU_RESET_OWNER] = "RESET_OWNER",
		[VU_SET_MEM_TABLE] = "SET_MEM_TABLE",
		[VU_SET_LOG_BASE] = "SET_LOG_BASE",
		[VU_SET_LOG_FD] = "SET_LOG_FD",
		[VU_SET_VRING_NUM] = "SET_VRING_NUM",
		[VU_SET_VRING_ADDR] = "SET_VRING_ADDR",
		[VU_SET_VRING_BASE] = "SET_VRING_BASE",
		[VU_GET_VRING_BASE] = "GET_VRING_BASE",
		[VU_SET_VRING_KICK] = "SET_VRING_KICK",
		[VU_SET_VRING_CALL] = "SET_VRING_CALL",
		[VU_SET_VRING_ERR] = "SET_VRING_ERR",
		[VU_GET_PROTOCOL_FEATURES] = "GET_PROTOCOL_FEATURES",
		[VU_SET_PROTOCOL_FEATURES] = "SET_PROTOCOL_FEATURES",
		[VU_GET_QUEUE_NUM] = "GET_QUEUE_NUM",
		[VU_SET_VRING_ENABLE] = "SET_VRING_ENABLE",
		[VU_GET_CONFIG] = "GET_CONFIG",
		[VU_SET_CONFIG] = "SET_CONFIG",
	};

	return r < sizeof(names) / sizeof(names[0]) && names[r] ? names[r] : "unknown";
}

void vv_vu_init(struct vv *vv)
{
	unsigned int q;

	vv->vu_fd = -1;
	for (q = 0; q < VV_NUM_QUEUES; q++)
		vv_vq_init(&vv->vq[q]);
}

/* ------------------------------------------------------------ transport */

static void close_fds(int *fds, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

static int recv_all(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = recv(fd, (uint8_t *)buf + done, len - done, 0);

		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

/* One whole message; its fds (if any) in fds[0..*nfds). */
static int vu_recv(int sock, struct vu_msg *msg, int *fds, unsigned int *nfds)
{
	char control[CMSG_SPACE(VU_MAX_FDS * sizeof(int))];
	struct iovec iov = { .iov_base = &msg->hdr, .iov_len = sizeof(msg->hdr) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = control, .msg_controllen = sizeof(control),
	};
	struct cmsghdr *cm;
	ssize_t n;
	int r;

	*nfds = 0;
	do {
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n == 0)
		return -ECONNRESET;
	if (n < 0)
		return errno == EAGAIN ? -ETIMEDOUT : -errno;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		unsigned int i, k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (*nfds < VU_MAX_FDS)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
	if (mh.msg_flags & MSG_CTRUNC)
		return -EMSGSIZE;
	if ((size_t)n < sizeof(msg->hdr)) {
		r = recv_all(sock, (uint8_t *)&msg->hdr + n, sizeof(msg->hdr) - n);
		if (r)
			return r;
	}
	msg->hdr.request = le32toh(msg->hdr.request);
	msg->hdr.flags = le32toh(msg->hdr.flags);
	msg->hdr.size = le32toh(msg->hdr.size);
	if ((msg->hdr.flags & VU_FLAG_VERSION_MASK) != VU_VERSION)
		return -EPROTO;
	if (msg->hdr.size > VU_MSG_MAX)
		return -EMSGSIZE;
	return recv_all(sock, msg->raw, msg->hdr.size);
}

static int vu_send(int sock, uint32_t request, const void *payload, uint32_t size)
{
	struct vu_hdr h = {
		.request = htole32(request),
		.flags = htole32(VU_VERSION | VU_FLAG_REPLY),
		.size = htole32(size),
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)payload, .iov_len = size },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n;

	n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	return (size_t)n == sizeof(h) + size ? 0 : -EIO;
}

static int vu_reply_u64(struct vv *vv, uint32_t request, uint64_t v)
{
	uint64_t le = htole64(v);

	return vu_send(vv->vu_fd, request, &le, sizeof(le));
}

/* ------------------------------------------------------------ rings */

static struct vv_vq *msg_vq(struct vv *vv, uint32_t index)
{
	return index < VV_NUM_QUEUES ? &vv->vq[index] : NULL;
}

static void vq_close_kick(struct vv *vv, struct vv_vq *vq)
{
	if (vq->kick_fd < 0)
		return;
	epoll_ctl(vv->epfd, EPOLL_CTL_DEL, vq->kick_fd, NULL);
	close(vq->kick_fd);
	vq->kick_fd = -1;
}

static void vq_stop(struct vv *vv, unsigned int q)
{
	struct vv_vq *vq = &vv->vq[q];

	if (vq->started && vv->nconns)
		vv_dev_reset(vv, q == VV_RXQ ? "rx queue stopped" : "tx queue stopped");
	vq_close_kick(vv, vq);
	vq->started = false;
	vq->broken = false;
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
}

/* (Re)translate a started ring; a failure leaves it broken. */
static void vq_start(struct vv *vv, unsigned int q)
{
	struct vv_vq *vq = &vv->vq[q];

	if (vv_vq_start(vq, &vv->mem, vv->stats) < 0) {
		warn("vm %s: queue %u: ring addresses outside guest memory or misaligned (size %u)",
		     vv->cfg.name, q, vq->num);
		return;
	}
	debug("vm %s: queue %u started: %u entries, next avail %u", vv->cfg.name, q,
	      vq->num, vq->last_avail);
	if (vv_dev_running(vv))
		info("vm %s: guest driver is up (cid %llu)", vv->cfg.name,
		     (unsigned long long)vv->cfg.guest_cid);
}

static int set_mem_table(struct vv *vv, const struct vu_msg *msg, int *fds,
			 unsigned int nfds)
{
	const struct vu_mem_table *t = &msg->mem;
	struct vv_mem m = { 0 };
	unsigned int i, q;
	int r = 0;

	if (msg->hdr.size < 8)
		return -EINVAL;
	if (!t->nregions || t->nregions > VV_MAX_REGIONS ||
	    msg->hdr.size < 8 + t->nregions * sizeof(struct vu_mem_region) ||
	    nfds != t->nregions)
		return -EINVAL;
	for (i = 0; i < t->nregions; i++) {
		uint64_t size = le64toh(t->r[i].size);
		uint64_t off = le64toh(t->r[i].mmap_offset);
		struct stat st;
		void *p;

		if (!size || off > UINT64_MAX - size || off + size > SIZE_MAX) {
			r = -EINVAL;
			goto out_release;
		}
		/* a mapping past the end of a file faults (SIGBUS) on access */
		if (fstat(fds[i], &st) == 0 && S_ISREG(st.st_mode) &&
		    (uint64_t)st.st_size < off + size) {
			err("vm %s: guest memory region %u: %llu bytes at offset %llu, but the file has %lld",
			    vv->cfg.name, i, (unsigned long long)size,
			    (unsigned long long)off, (long long)st.st_size);
			r = -EINVAL;
			goto out_release;
		}
		p = mmap(NULL, off + size, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_NORESERVE, fds[i], 0);
		if (p == MAP_FAILED) {
			r = -errno;
			err_perror("vm %s: mmap of guest memory region %u (%llu bytes)",
				   vv->cfg.name, i, (unsigned long long)size);
			goto out_release;
		}
		m.r[i].gpa = le64toh(t->r[i].gpa);
		m.r[i].uva = le64toh(t->r[i].uva);
		m.r[i].size = size;
		m.r[i].map = p;
		m.r[i].map_len = off + size;
		m.r[i].host = (uint8_t *)p + off;
		m.nregions = i + 1;
		debug("vm %s: region %u: gpa 0x%llx size 0x%llx uva 0x%llx", vv->cfg.name, i,
		      (unsigned long long)m.r[i].gpa, (unsigned long long)size,
		      (unsigned long long)m.r[i].uva);
	}
	vv_mem_release(&vv->mem);
	vv->mem = m;
	for (q = 0; q < VV_NUM_QUEUES; q++) {
		if (vv->vq[q].started)
			vq_start(vv, q);
	}
	return 0;
out_release:
	vv_mem_release(&m);
	return r;
}

/* SET_VRING_KICK/CALL/ERR: the queue index and maybe an fd. */
static int take_vring_fd(struct vv *vv, const struct vu_msg *msg, int *fds,
			 unsigned int nfds, unsigned int *q, int *fd)
{
	uint64_t v;

	if (msg->hdr.size < 8)
		return -EINVAL;
	v = le64toh(msg->u64);
	*q = v & VU_VRING_IDX_MASK;
	if (!msg_vq(vv, *q))
		return -EINVAL;
	if (v & VU_VRING_NOFD) {
		*fd = -1;
		return nfds ? -EINVAL : 0;
	}
	if (nfds != 1)
		return -EINVAL;
	*fd = fds[0];
	fds[0] = -1;
	return 0;
}

static int set_vring_kick(struct vv *vv, const struct vu_msg *msg, int *fds,
			  unsigned int nfds)
{
	struct epoll_event ev = { .events = EPOLLIN };
	unsigned int q;
	int fd, r;

	r = take_vring_fd(vv, msg, fds, nfds, &q, &fd);
	if (r)
		return r;
	if (fd < 0) {
		warn("vm %s: queue %u: polling mode (no kick fd) is not supported",
		     vv->cfg.name, q);
		return -ENOTSUP;
	}
	vq_close_kick(vv, &vv->vq[q]);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	ev.data.u64 = vv_ep_ref(VV_EP_KICK, 0, q);
	if (epoll_ctl(vv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	vv->vq[q].kick_fd = fd;
	vq_start(vv, q);
	/* buffers may be waiting already */
	vv_vu_kick(vv, q);
	return 0;
}

static int set_vring_callfd(struct vv *vv, const struct vu_msg *msg, int *fds,
			    unsigned int nfds, bool err_fd)
{
	unsigned int q;
	int fd, r, *slot;

	r = take_vring_fd(vv, msg, fds, nfds, &q, &fd);
	if (r)
		return r;
	slot = err_fd ? &vv->vq[q].err_fd : &vv->vq[q].call_fd;
	if (*slot >= 0)
		close(*slot);
	*slot = fd;
	return 0;
}

static int get_config(struct vv *vv, const struct vu_msg *msg)
{
	struct vu_config reply = { 0 };
	uint64_t cid = htole64(vv->cfg.guest_cid);
	uint32_t off, size, i;

	if (msg->hdr.size < 12)
		return -EINVAL;
	off = le32toh(msg->config.offset);
	size = le32toh(msg->config.size);
	if (size > VU_CONFIG_MAX || msg->hdr.size < 12 + size)
		return -EINVAL;
	reply.offset = msg->config.offset;
	reply.size = msg->config.size;
	reply.flags = msg->config.flags;
	/* struct virtio_vsock_config { le64 guest_cid; } */
	for (i = 0; i < size; i++) {
		if (off < sizeof(cid) && i < sizeof(cid) - off)
			reply.region[i] = ((uint8_t *)&cid)[off + i];
	}
	return vu_send(vv->vu_fd, VU_GET_CONFIG, &reply, 12 + size);
}

/* ------------------------------------------------------------ dispatch */

/*
 * Handle one message.  Returns 0, or -errno for a transport failure (the
 * caller then drops the front-end).  A request we refuse is answered with
 * a failed REPLY_ACK when the front-end asked for one, and logged.
 */
int vv_vu_handle(struct vv *vv)
{
	static struct vu_msg msg;
	int fds[VU_MAX_FDS];
	unsigned int nfds = 0, q;
	uint32_t num;
	bool ack = false;
	int r, res = 0;
	struct vv_vq *vq;

	r = vu_recv(vv->vu_fd, &msg, fds, &nfds);
	if (r)
		goto out_close;
	debug("vm %s: vhost-user %s (%u), %u bytes, %u fds", vv->cfg.name,
	      req_name(msg.hdr.request), msg.hdr.request, msg.hdr.size, nfds);
	ack = (msg.hdr.flags & VU_FLAG_NEED_REPLY) &&
	      (vv->protocol_features & (1ull << VU_PROTOCOL_F_REPLY_ACK));

	switch (msg.hdr.request) {
	case VU_GET_FEATURES:
		r = vu_reply_u64(vv, msg.hdr.request, VV_FEATURES);
		ack = false;
		break;
	case VU_SET_FEATURES:
		if (msg.hdr.size < 8 || (le64toh(msg.u64) & ~VV_FEATURES)) {
			res = -EINVAL;
			break;
		}
		vv->features = le64toh(msg.u64);
		break;
	case VU_GET_PROTOCOL_FEATURES:
		r = vu_reply_u64(vv, msg.hdr.request, VV_PROTOCOL_FEATURES);
		ack = false;
		break;
	case VU_SET_PROTOCOL_FEATURES:
		if (msg.hdr.size < 8) {
			res = -EINVAL;
			break;
		}
		vv->protocol_features = le64toh(msg.u64) & VV_PROTOCOL_FEATURES;
		/* REPLY_ACK applies from the next message on */
		ack = false;
		break;
	case VU_SET_OWNER:
		vv->owner = true;
		break;
	case VU_RESET_OWNER:
		for (q = 0; q < VV_NUM_QUEUES; q++)
			vq_stop(vv, q);
		vv->owner = false;
		vv->features = 0;
		break;
	case VU_SET_MEM_TABLE:
		res = set_mem_table(vv, &msg, fds, nfds);
		break;
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
		vq = msg.hdr.size >= 8 ? msg_vq(vv, le32toh(msg.state.index)) : NULL;
		if (!vq) {
			res = -EINVAL;
			break;
		}
		q = le32toh(msg.state.index);
		num = le32toh(msg.state.num);
		if (msg.hdr.request == VU_SET_VRING_NUM) {
			if (!num || num > VV_QUEUE_MAX_SIZE || (num & (num - 1)) || vq->started)
				res = -EINVAL;
			else
				vq->num = num;
		} else if (msg.hdr.request == VU_SET_VRING_BASE) {
			if (num > 0xffff || vq->started)
				res = -EINVAL;
			else
				vq->last_avail = (uint16_t)num;
		} else {
			vq->enabled = num != 0;
			if (vq->enabled)
				vv_vu_kick(vv, q);
		}
		break;
	case VU_SET_VRING_ADDR:
		vq = msg.hdr.size >= sizeof(msg.addr) ? msg_vq(vv, le32toh(msg.addr.index)) : NULL;
		if (!vq) {
			res = -EINVAL;
			break;
		}
		vq->desc_uva = le64toh(msg.addr.desc);
		vq->used_uva = le64toh(msg.addr.used);
		vq->avail_uva = le64toh(msg.addr.avail);
		if (vq->started)
			vq_start(vv, le32toh(msg.addr.index));
		break;
	case VU_GET_VRING_BASE: {
		struct vu_vring_state st;

		vq = msg.hdr.size >= 8 ? msg_vq(vv, le32toh(msg.state.index)) : NULL;
		if (!vq) {
			/* a reply is owed whatever happens */
			st.index = msg.state.index;
			st.num = 0;
			r = vu_send(vv->vu_fd, msg.hdr.request, &st, sizeof(st));
			res = -EINVAL;
			ack = false;
			break;
		}
		q = le32toh(msg.state.index);
		vq_stop(vv, q);
		st.index = htole32(q);
		st.num = htole32(vq->last_avail);
		r = vu_send(vv->vu_fd, msg.hdr.request, &st, sizeof(st));
		ack = false;
		break;
	}
	case VU_SET_VRING_KICK:
		res = set_vring_kick(vv, &msg, fds, nfds);
		break;
	case VU_SET_VRING_CALL:
		res = set_vring_callfd(vv, &msg, fds, nfds, false);
		break;
	case VU_SET_VRING_ERR:
		res = set_vring_callfd(vv, &msg, fds, nfds, true);
		break;
	case VU_GET_QUEUE_NUM:
		r = vu_reply_u64(vv, msg.hdr.request, VV_NUM_QUEUES);
		ack = false;
		break;
	case VU_GET_CONFIG:
		r = get_config(vv, &msg);
		if (r == -EINVAL) {
			/* answer an empty config rather than leave QEMU waiting */
			struct vu_config empty = { 0 };

			r = vu_send(vv->vu_fd, msg.hdr.request, &empty, 12);
			res = -EINVAL;
		}
		ack = false;
		break;
	case VU_SET_CONFIG:
		/* the CID is ours to give, not the driver's to change */
		res = -EPERM;
		break;
	default:
		res = -ENOTSUP;
		break;
	}
	if (res)
		warn("vm %s: vhost-user %s (%u) refused: %s", vv->cfg.name,
		     req_name(msg.hdr.request), msg.hdr.request, strerror(-res));
	if (!r && ack)
		r = vu_reply_u64(vv, msg.hdr.request, res ? 1 : 0);
out_close:
	close_fds(fds, nfds);
	return r;
}

void vv_vu_kick(struct vv *vv, unsigned int q)
{
	if (q == VV_TXQ) {
		if (vv_dev_running(vv))
			vv_process_tx(vv);
	} else if (q == VV_RXQ) {
		vv_rx_kick(vv);
	}
}

/* The front-end went away (or misbehaved): back to a clean device. */
void vv_vu_disconnect(struct vv *vv, const char *why)
{
	unsigned int q;

	if (vv->vu_fd < 0)
		return;
	info("vm %s: vhost-user front-end disconnected: %s", vv->cfg.name, why);
	vv_dev_reset(vv, "front-end disconnected");
	for (q = 0; q < VV_NUM_QUEUES; q++) {
		struct vv_vq *vq = &vv->vq[q];

		vq_close_kick(vv, vq);
		if (vq->call_fd >= 0)
			close(vq->call_fd);
		if (vq->err_fd >= 0)
			close(vq->err_fd);
		vv_vq_init(vq);
	}
	vv_mem_release(&vv->mem);
	vv->features = 0;
	vv->protocol_features = 0;
	vv->owner = false;
	epoll_ctl(vv->epfd, EPOLL_CTL_DEL, vv->vu_fd, NULL);
	close(vv->vu_fd);
	vv->vu_fd = -1;
	vv_stats_log(vv, false);
}
