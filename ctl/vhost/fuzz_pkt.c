// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libFuzzer harness: the vsock device (vsock.c over vring.c) as a hostile
 * guest drives it.  The harness is the guest driver and the host side at
 * once: it builds tx chains from the input (well-formed packets with
 * fuzzed headers and payloads, or raw descriptors), keeps the rx queue
 * stocked like a driver, plays the Unix peers (real listeners on
 * <uds>_1 and <uds>_2 in a temporary directory, nothing on other ports;
 * host clients writing CONNECT lines to <uds>), and runs the daemon's
 * event dispatch and timer between steps.  It checks what the device
 * hands the guest: every used rx entry fits its buffer and carries a
 * well-formed header from CID 2 to the guest CID.  Each input ends with a
 * device reset, so no state leaks into the next one.  Built by `make fuzz`.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "vhost_vsock.h"

#define MEM_SIZE	(256u << 10)
#define UVA		0x7f0000000000ull
#define GUEST_CID	3

#define RXQ_NUM		8
#define RX_DESC		0x0000
#define RX_AVAIL	0x1000
#define RX_USED		0x2000
#define RX_BUFS		0x4000
#define RX_BUFSZ	(44 + 512)

#define TXQ_NUM		64
#define TX_DESC		0x8000
#define TX_AVAIL	0x9000
#define TX_USED		0xa000
#define TX_BUFS		0x10000		/* up to MEM_SIZE */

#define MAX_PEERS	32

static uint8_t guest[MEM_SIZE] __attribute__((aligned(4096)));
static struct vv vv;
static char dir[64], uds[96];
static int listeners[3] = { -1, -1, -1 };	/* <uds>_1, <uds>_2 */
static int peers[MAX_PEERS];
static unsigned int npeers;
static uint16_t rx_avail_idx, rx_used_seen, tx_avail_idx, tx_slot;

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

static uint32_t take32(struct input *in)
{
	uint32_t v = take8(in);

	v |= (uint32_t)take8(in) << 8;
	v |= (uint32_t)take8(in) << 16;
	return v | (uint32_t)take8(in) << 24;
}

static int listen_at(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 64))
		abort();
	return fd;
}

/* The listeners' directory goes when the run ends (libFuzzer exits with
 * exit(); a crash keeps it for the post-mortem). */
static void cleanup_dir(void)
{
	char path[160];
	int i;

	for (i = 1; i <= 2; i++) {
		snprintf(path, sizeof(path), "%s_%d", uds, i);
		unlink(path);
	}
	unlink(uds);
	rmdir(dir);
}

static void setup_once(void)
{
	char path[128];
	int i;

	nk_log_init("fuzz_pkt", getenv("NK_FUZZ_VERBOSE") ? NK_LOG_DEBUG : NK_LOG_ERR);
	snprintf(dir, sizeof(dir), "/tmp/nk-fuzz-pkt.XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(uds, sizeof(uds), "%s/vm", dir);
	atexit(cleanup_dir);
	for (i = 1; i <= 2; i++) {
		snprintf(path, sizeof(path), "%s_%d", uds, i);
		listeners[i] = listen_at(path);
	}
	vv.cfg = (struct vv_config){
		.name = "fuzz", .vu_socket = "-", .uds = uds, .guest_cid = GUEST_CID,
		.max_conns = 16, .buf_alloc = 4096, .connect_ms = 10, .linger_ms = 10,
	};
	vv.epfd = epoll_create1(EPOLL_CLOEXEC);
	vv.sig_fd = -1;
	vv.timer_fd = -1;
	vv.vu_listen_fd = -1;
	vv.host_listen_fd = listen_at(uds);
	vv_vu_init(&vv);
	if (vv.epfd < 0 || vv_dev_init(&vv))
		abort();
	vv.vu_fd = eventfd(0, EFD_CLOEXEC);	/* "a front-end is connected" */
	vv.mem.nregions = 1;
	vv.mem.r[0] = (struct vv_region){ .gpa = 0, .size = MEM_SIZE, .uva = UVA, .host = guest };
}

static void rx_post(uint16_t id)
{
	struct vring_avail *av = (void *)(guest + RX_AVAIL);

	av->ring[rx_avail_idx % RXQ_NUM] = htole16(id);
	rx_avail_idx++;
	__atomic_store_n(&av->idx, htole16(rx_avail_idx), __ATOMIC_RELEASE);
}

static void start_rings(void)
{
	struct vring_desc *d = (void *)(guest + RX_DESC);
	struct vv_vq *rx = &vv.vq[VV_RXQ], *tx = &vv.vq[VV_TXQ];
	uint16_t i;

	memset(guest, 0, TX_BUFS);
	rx_avail_idx = rx_used_seen = tx_avail_idx = tx_slot = 0;
	for (i = 0; i < RXQ_NUM; i++) {
		d[i].addr = htole64(RX_BUFS + i * RX_BUFSZ);
		d[i].len = htole32(RX_BUFSZ);
		d[i].flags = htole16(VRING_DESC_F_WRITE);
		rx_post(i);
	}
	vv_vq_init(rx);
	rx->num = RXQ_NUM;
	rx->desc_uva = UVA + RX_DESC;
	rx->avail_uva = UVA + RX_AVAIL;
	rx->used_uva = UVA + RX_USED;
	vv_vq_init(tx);
	tx->num = TXQ_NUM;
	tx->desc_uva = UVA + TX_DESC;
	tx->avail_uva = UVA + TX_AVAIL;
	tx->used_uva = UVA + TX_USED;
	if (vv_vq_start(rx, &vv.mem, vv.stats) || vv_vq_start(tx, &vv.mem, vv.stats))
		abort();
}

/* The driver side of rx: check what the device used, give buffers back. */
static void rx_reap(void)
{
	const struct vring_used *u = (void *)(guest + RX_USED);
	uint16_t idx = le16toh(__atomic_load_n(&u->idx, __ATOMIC_ACQUIRE));

	while (rx_used_seen != idx) {
		const struct vring_used_elem *e = &u->ring[rx_used_seen % RXQ_NUM];
		uint32_t id = le32toh(e->id), len = le32toh(e->len);
		struct vsock_hdr h;

		if (id >= RXQ_NUM || len > RX_BUFSZ)
			abort();
		if (len) {
			uint16_t op;

			if (len < sizeof(h))
				abort();
			memcpy(&h, guest + RX_BUFS + id * RX_BUFSZ, sizeof(h));
			op = le16toh(h.op);
			if (le64toh(h.src_cid) != VMADDR_CID_HOST ||
			    le64toh(h.dst_cid) != GUEST_CID ||
			    le16toh(h.type) != VSOCK_TYPE_STREAM ||
			    op < VSOCK_OP_REQUEST || op > VSOCK_OP_CREDIT_REQUEST ||
			    le32toh(h.len) != len - sizeof(h) ||
			    (op != VSOCK_OP_RW && le32toh(h.len)))
				abort();
		}
		rx_used_seen++;
		rx_post((uint16_t)id);
	}
	vv_rx_kick(&vv);
}

/* A tx chain: the header and payload spread over 1-4 descriptors. */
static void tx_packet(struct input *in)
{
	struct vring_desc *d = (void *)(guest + TX_DESC);
	struct vring_avail *av = (void *)(guest + TX_AVAIL);
	static const uint32_t gports[] = { 1000, 1001, 1002, 0xffffffff };
	static const uint32_t hports[] = { 1, 2, 3, 1u << 30 };	/* 2^30: first host CONNECT */
	struct vsock_hdr h = { 0 };
	uint8_t sel, ndesc;
	uint32_t plen, total, off = 0, i;
	uint16_t head = tx_slot;

	/* one field after another: the input's byte order is the format */
	sel = take8(in);
	ndesc = take8(in) % 4 + 1;
	h.src_cid = htole64(sel & 0x80 ? take32(in) : GUEST_CID);
	h.dst_cid = htole64(sel & 0x40 ? take32(in) : VMADDR_CID_HOST);
	h.src_port = htole32(gports[sel & 3]);
	h.dst_port = htole32(hports[(sel >> 2) & 3]);
	h.type = htole16(sel & 0x20 ? take8(in) : VSOCK_TYPE_STREAM);
	h.op = htole16(take8(in) % 9);
	h.flags = htole32(take8(in) & 3);
	h.buf_alloc = htole32(sel & 0x10 ? take32(in) : 65536);
	h.fwd_cnt = htole32(take32(in) & 0xffff);
	plen = take8(in) * 17;
	h.len = htole32(take8(in) & 1 ? take32(in) : plen);
	if (plen > in->left)
		plen = (uint32_t)in->left;
	memcpy(guest + TX_BUFS, &h, sizeof(h));
	memcpy(guest + TX_BUFS + sizeof(h), in->p, plen);
	in->p += plen;
	in->left -= plen;
	total = sizeof(h) + plen;
	for (i = 0; i < ndesc; i++) {
		uint16_t slot = (uint16_t)((head + i) % TXQ_NUM);
		uint32_t len = i + 1 == ndesc ? total - off : (total - off) / 2;

		d[slot].addr = htole64(TX_BUFS + off);
		d[slot].len = htole32(len);
		d[slot].flags = htole16(i + 1 < ndesc ? VRING_DESC_F_NEXT : 0);
		d[slot].next = htole16((slot + 1) % TXQ_NUM);
		off += len;
	}
	tx_slot = (uint16_t)((head + ndesc) % TXQ_NUM);
	av->ring[tx_avail_idx % TXQ_NUM] = htole16(head);
	tx_avail_idx++;
	__atomic_store_n(&av->idx, htole16(tx_avail_idx), __ATOMIC_RELEASE);
	vv_process_tx(&vv);
}

/* Raw descriptors straight from the input. */
static void tx_raw(struct input *in)
{
	struct vring_desc *d = (void *)(guest + TX_DESC);
	struct vring_avail *av = (void *)(guest + TX_AVAIL);
	uint8_t n = take8(in) % 5, i;

	for (i = 0; i < n; i++) {
		uint16_t slot = take8(in) % TXQ_NUM;
		uint64_t addr = take32(in);

		addr <<= take8(in) % 24;
		d[slot].addr = htole64(addr);
		d[slot].len = htole32(take32(in));
		d[slot].flags = htole16(take8(in));
		d[slot].next = htole16(take8(in));
	}
	av->ring[tx_avail_idx % TXQ_NUM] = htole16(take8(in) % (TXQ_NUM + 2));
	tx_avail_idx += take8(in) & 0x80 ? 2 : 1;
	__atomic_store_n(&av->idx, htole16(tx_avail_idx), __ATOMIC_RELEASE);
	vv_process_tx(&vv);
}

static void peer_accept(void)
{
	unsigned int k;
	int i, fd;

	for (i = 1; i <= 2; i++) {
		while ((fd = accept4(listeners[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
			if (npeers < MAX_PEERS)
				peers[npeers++] = fd;
			else
				close(fd);
		}
	}
	/* small socket buffers, so the backend's own buffering is reached soon */
	for (k = 0; k < vv.cfg.max_conns; k++) {
		int small = 4096;

		if (vv.conns[k].fd >= 0)
			setsockopt(vv.conns[k].fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	}
}

/* The daemon's loop, once, without sleeping. */
static void run_loop(void)
{
	struct epoll_event evs[32];
	int n, i;

	peer_accept();
	n = epoll_wait(vv.epfd, evs, 32, 0);
	for (i = 0; i < n; i++) {
		uint64_t ref = evs[i].data.u64;

		if (vv_ep_type_of(ref) == VV_EP_CONN)
			vv_conn_event(&vv, vv_ep_slot(ref), vv_ep_gen(ref), evs[i].events);
	}
	vv_host_accept(&vv);
	vv_flush(&vv);
}

static void peer_op(struct input *in)
{
	uint8_t sel = take8(in);
	char buf[8192];
	unsigned int k;
	int fd;

	peer_accept();
	if (!npeers)
		return;
	k = (sel >> 3) % npeers;
	fd = peers[k];
	switch (sel & 7) {
	case 0:
	case 1:
		memset(buf, sel, sizeof(buf));
		if (send(fd, buf, (size_t)take8(in) * 32, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			break;
		break;
	case 2:
	case 3:
		while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
			;
		break;
	case 4:
		shutdown(fd, SHUT_WR);
		break;
	case 5:
		shutdown(fd, SHUT_RD);
		break;
	default:
		close(fd);
		npeers--;
		peers[k] = peers[npeers];
		break;
	}
}

static void host_connect(struct input *in)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char line[48];
	int fd, n;

	if (npeers >= MAX_PEERS)
		return;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", uds);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return;
	}
	if (take8(in) & 1) {
		n = snprintf(line, sizeof(line), "CONNECT %u\n", take8(in) & 1 ? 1000 : take32(in));
	} else {
		n = take8(in) % sizeof(line);
		if ((size_t)n > in->left)
			n = (int)in->left;
		memcpy(line, in->p, n);
		in->p += n;
		in->left -= n;
	}
	if (send(fd, line, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		close(fd);
		return;
	}
	peers[npeers++] = fd;
}

static void expire_deadlines(void)
{
	unsigned int i;

	for (i = 0; i < vv.cfg.max_conns; i++) {
		if (vv.conns[i].deadline_ms)
			vv.conns[i].deadline_ms = 1;
	}
	vv_tick(&vv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { .p = data, .left = size };
	unsigned int steps = 0;

	if (!vv.conns)
		setup_once();
	start_rings();
	vv.next_hport = 1u << 30;	/* the same input, the same ports */
	while (in.left && steps++ < 64) {
		switch (take8(&in) % 8) {
		case 0:
		case 1:
		case 2:
			tx_packet(&in);
			break;
		case 3:
			tx_raw(&in);
			break;
		case 4:
			rx_reap();
			break;
		case 5:
			peer_op(&in);
			break;
		case 6:
			host_connect(&in);
			break;
		default:
			expire_deadlines();
			break;
		}
		run_loop();
	}
	rx_reap();
	run_loop();
	rx_reap();

	/* a clean slate for the next input */
	vv_dev_reset(&vv, "fuzz input done");
	if (vv.nconns || vv.nfree != vv.cfg.max_conns)
		abort();
	peer_accept();
	while (npeers)
		close(peers[--npeers]);
	return 0;
}
