// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libFuzzer harness: vhost-user message handling (vu.c).  The input is a
 * sequence of front-end messages (request, flags, size, payload) sent over
 * a socketpair as QEMU would, with real file descriptors attached where a
 * request takes them: a 1 MiB memfd per memory region for SET_MEM_TABLE
 * (so mappings with fuzzed sizes and offsets are really made) and an
 * eventfd for SET_VRING_KICK/CALL/ERR.  Rings that start then point into
 * that memory, and kicks run the vsock device over it.  The harness reads
 * the replies and checks they are well formed.  Built by `make fuzz`.
 */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "vhost_vsock.h"

#define MEMFD_SIZE	(1u << 20)

static struct vv vv;
static int memfd = -1;

struct input {
	const uint8_t *p;
	size_t left;
};

static uint8_t take8(struct input *in)
{
	if (!in->left)
		return 0;
	in->left--;
	return *in->p++;
}

static void setup_once(void)
{
	nk_log_init("fuzz_vu", getenv("NK_FUZZ_VERBOSE") ? NK_LOG_DEBUG : NK_LOG_ERR);
	vv.cfg = (struct vv_config){
		.name = "fuzz", .vu_socket = "-", .uds = "/nonexistent/nk-fuzz-vu",
		.guest_cid = 3, .max_conns = 8, .buf_alloc = 4096,
		.connect_ms = 10, .linger_ms = 10,
	};
	vv.epfd = epoll_create1(EPOLL_CLOEXEC);
	vv.sig_fd = vv.timer_fd = vv.vu_listen_fd = vv.host_listen_fd = -1;
	vv_vu_init(&vv);
	memfd = memfd_create("nk-fuzz-guest", MFD_CLOEXEC);
	if (vv.epfd < 0 || memfd < 0 || ftruncate(memfd, MEMFD_SIZE) || vv_dev_init(&vv))
		abort();
}

/* Replies: a 12-byte header with the reply flag and the size it says. */
static void drain(int fd)
{
	uint8_t buf[4096];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
		uint32_t flags, size;

		if (n < 12)
			abort();
		memcpy(&flags, buf + 4, 4);
		memcpy(&size, buf + 8, 4);
		if ((le32toh(flags) & 0x7) != 0x5 || 12 + le32toh(size) != (size_t)n)
			abort();
	}
}

static int send_msg(int fd, struct input *in)
{
	uint8_t msg[12 + 512] = { 0 };
	char control[CMSG_SPACE(8 * sizeof(int))];
	struct iovec iov = { .iov_base = msg };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	uint32_t req = take8(in) % 27, flags = take8(in), size = take8(in) * 2;
	unsigned int nfds = 0, i;
	int fds[8];

	if (!(flags & 0x80))
		flags = 1 | (flags & 0x8);	/* mostly version 1, maybe NEED_REPLY */
	memcpy(msg, &req, 4);
	memcpy(msg + 4, &flags, 4);
	memcpy(msg + 8, &size, 4);
	for (i = 0; i < size && in->left; i++)
		msg[12 + i] = take8(in);
	if (req == 5) {			/* SET_MEM_TABLE: point its regions at memfd */
		nfds = take8(in) % 9;
		for (i = 0; i < nfds; i++)
			fds[i] = memfd;
	} else if (req >= 12 && req <= 14 && !(take8(in) & 0x80)) {
		nfds = 1;
		fds[0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	}
	iov.iov_len = 12 + size;
	if (nfds) {
		struct cmsghdr *cm;

		mh.msg_control = control;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	i = sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)iov.iov_len;
	if (req >= 12 && req <= 14 && nfds)
		close(fds[0]);		/* the backend holds its own copy */
	return i ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { .p = data, .left = size };
	unsigned int steps = 0;
	int sv[2];

	if (!vv.conns)
		setup_once();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
	vv.vu_fd = sv[0];
	while (in.left && steps++ < 32 && vv.vu_fd >= 0) {
		if (send_msg(sv[1], &in))
			break;
		if (vv_vu_handle(&vv)) {
			vv_vu_disconnect(&vv, "fuzz: refused");
			break;
		}
		vv_flush(&vv);
		drain(sv[1]);
	}
	vv_vu_disconnect(&vv, "fuzz input done");
	drain(sv[1]);
	close(sv[1]);
	if (vv.vu_fd != -1 || vv.mem.nregions || vv.nconns)
		abort();
	return 0;
}
