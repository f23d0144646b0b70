/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * nk-vhost-vsock internals shared by its source files: guest memory and
 * split virtqueues (vring.c), the vsock device and its connections
 * (vsock.c), the vhost-user front-end connection (vu.c) and the daemon
 * (nk-vhost-vsock.c).  The fuzz harnesses (fuzz_*.c) link all but the
 * daemon's main file.
 *
 *   vring.c           memory table, address translation, descriptor chains,
 *                     used ring, notifications; no sockets, no epoll
 *   vsock.c           virtio-vsock packets <-> Unix streams (hybrid vsock),
 *                     credit flow control, the connection table
 *   vu.c              vhost-user messages from QEMU
 *   nk-vhost-vsock.c  options, the epoll loop, signals, listeners
 *
 * Error convention: int functions return 0 or -errno unless they say
 * otherwise.  Everything the guest writes (rings, descriptors, packets) is
 * untrusted: it is copied once, checked, and a violation is counted in
 * vv->stats under a named reason (VV_STATS below), never fatal.
 */
#ifndef NK_VHOST_VSOCK_H
#define NK_VHOST_VSOCK_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* ------------------------------------------------------------ virtio */

#define VIRTIO_F_VERSION_1		32
#define VIRTIO_RING_F_INDIRECT_DESC	28
#define VIRTIO_RING_F_EVENT_IDX		29

#define VRING_DESC_F_NEXT	1
#define VRING_DESC_F_WRITE	2
#define VRING_DESC_F_INDIRECT	4
#define VRING_AVAIL_F_NO_INTERRUPT 1

/*
 * Split virtqueue layout (virtio 1.x, little endian), all in guest memory:
 *
 *   desc[num]    16 bytes each: addr(le64) len(le32) flags(le16) next(le16)
 *   avail        flags(le16) idx(le16) ring[num](le16)
 *   used         flags(le16) idx(le16) ring[num]{ id(le32) len(le32) }
 */
struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
static_assert(sizeof(struct vring_desc) == 16, "vring_desc layout");

struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};

struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[];
};

#define VV_QUEUE_MAX_SIZE	32768
#define VV_CHAIN_MAX_DESC	64		/* descriptors in one chain */
#define VV_CHAIN_MAX_BYTES	(4u << 20)	/* bytes in one chain */

/* ------------------------------------------------------------ virtio-vsock */

#define VIRTIO_VSOCK_F_SEQPACKET	1

#define VMADDR_CID_HOST		2

enum vsock_type { VSOCK_TYPE_STREAM = 1, VSOCK_TYPE_SEQPACKET = 2 };

enum vsock_op {
	VSOCK_OP_INVALID = 0,
	VSOCK_OP_REQUEST = 1,
	VSOCK_OP_RESPONSE = 2,
	VSOCK_OP_RST = 3,
	VSOCK_OP_SHUTDOWN = 4,
	VSOCK_OP_RW = 5,
	VSOCK_OP_CREDIT_UPDATE = 6,
	VSOCK_OP_CREDIT_REQUEST = 7,
};

#define VSOCK_SHUTDOWN_RCV	1	/* the sender will receive no more */
#define VSOCK_SHUTDOWN_SEND	2	/* the sender will send no more */

/*
 * The packet header at the start of every tx and rx buffer chain (44
 * bytes, packed, little endian); RW packets carry len bytes of payload
 * after it.  buf_alloc and fwd_cnt carry the sender's receive credit: the
 * size of its receive buffer and the bytes it has consumed so far.
 *
 *    0          8          16     20     24    28   30   32     36        40      44
 *   +----------+----------+------+------+-----+----+----+------+---------+-------+
 *   | src_cid  | dst_cid  | src  | dst  | len |type| op |flags |buf_alloc|fwd_cnt|
 *   |          |          | port | port |     |    |    |      |         |       |
 *   +----------+----------+------+------+-----+----+----+------+---------+-------+
 */
struct vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));
static_assert(sizeof(struct vsock_hdr) == 44, "virtio_vsock_hdr is 44 bytes");

#define VV_PKT_MAX_PAYLOAD	(64u << 10)	/* as Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE */

/* The device's queues: rx (device -> driver) 0, tx 1.  The event queue (2)
 * is QEMU's own in vhost-user-vsock; the backend never sees it. */
enum { VV_RXQ = 0, VV_TXQ = 1, VV_NUM_QUEUES = 2 };

/* ------------------------------------------------------------ counters */

/*
 * Everything counted, by name: the guest's violations first (each a
 * reason a chain or packet was refused), then normal events.  Logs and the
 * SIGUSR1 dump print the name.
 */
#define VV_STATS(X)							\
	X(RING_BAD_AVAIL, "avail index moved past the ring size")	\
	X(RING_BAD_HEAD, "avail ring entry out of range")		\
	X(RING_BAD_ADDR, "ring outside guest memory or misaligned")	\
	X(DESC_BAD_INDEX, "descriptor next index out of range")	\
	X(DESC_LOOP, "descriptor chain loops or is too long")		\
	X(DESC_INDIRECT, "indirect descriptor (not negotiated)")	\
	X(DESC_BAD_ADDR, "descriptor outside guest memory")		\
	X(DESC_ORDER, "readable descriptor after a writable one")	\
	X(DESC_TOO_BIG, "chain larger than the byte limit")		\
	X(RX_BAD_CHAIN, "rx chain too small or not writable")		\
	X(PKT_SHORT, "tx chain shorter than a packet header")		\
	X(PKT_LEN, "header len beyond the chain or the packet limit")	\
	X(PKT_CID, "wrong source or destination CID")			\
	X(PKT_TYPE, "socket type other than stream")			\
	X(PKT_OP, "unknown op")					\
	X(PKT_STATE, "op not valid in the connection's state")		\
	X(PKT_CREDIT, "data beyond the credit the backend gave")	\
	X(RST_DROPPED, "reset not sent: reset queue full")		\
	X(CONN_LIMIT, "connection refused: table full")		\
	X(CONNECT_FAIL, "guest connect: nothing listens on <uds>_<port>") \
	X(HOST_BAD_LINE, "host connection without a valid CONNECT line") \
	X(HOST_TIMEOUT, "guest did not answer a host CONNECT in time")	\
	X(HOST_NO_GUEST, "host CONNECT while no guest driver runs")	\
	X(UNIX_ERROR, "Unix socket error, connection reset")		\
	X(PKT_TX, "packets from the guest")				\
	X(PKT_NO_CONN, "packets for no connection (a race with a close; answered RST)") \
	X(PKT_RX, "packets to the guest")				\
	X(BYTES_TX, "payload bytes from the guest")			\
	X(BYTES_RX, "payload bytes to the guest")			\
	X(CONN_GUEST, "connections opened by the guest")		\
	X(CONN_HOST, "connections opened by the host")			\
	X(CONN_CLOSED, "connections released")				\
	X(FRONTEND, "vhost-user front-end connections")

enum vv_stat {
#define VV_STAT_ENUM(name, desc) VV_##name,
	VV_STATS(VV_STAT_ENUM)
#undef VV_STAT_ENUM
	VV_STAT_MAX
};

/* The first normal-event counter: those before it are guest violations. */
#define VV_FIRST_EVENT_STAT	VV_PKT_TX

const char *vv_stat_name(enum vv_stat s);
const char *vv_stat_desc(enum vv_stat s);

/* ------------------------------------------------------------ memory, rings */

#define VV_MAX_REGIONS	8	/* VHOST_MEMORY_BASELINE_NREGIONS */

struct vv_region {
	uint64_t gpa;		/* guest physical address */
	uint64_t size;
	uint64_t uva;		/* front-end (QEMU) virtual address */
	uint8_t *host;		/* our mapping of gpa */
	void *map;		/* munmap(map, map_len) releases it; NULL when not ours */
	size_t map_len;
};

struct vv_mem {
	unsigned int nregions;
	struct vv_region r[VV_MAX_REGIONS];
};

void *vv_gpa_to_va(const struct vv_mem *m, uint64_t gpa, uint64_t len);
void *vv_uva_to_va(const struct vv_mem *m, uint64_t uva, uint64_t len);
void vv_mem_release(struct vv_mem *m);

struct vv_vq {
	/* set by the front-end */
	unsigned int num;		/* ring size, a power of two */
	uint64_t desc_uva, avail_uva, used_uva;
	uint16_t last_avail;		/* next avail entry to take */
	int kick_fd, call_fd, err_fd;
	bool enabled;
	/* set when started (kick fd given, addresses translated) */
	bool started, broken;
	bool broken_logged;		/* said so once since the start */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t used_idx;		/* shadow of used->idx */
	bool need_call;			/* used entries not yet signalled */
};

/*
 * One descriptor chain: the readable (driver -> device) buffers first,
 * n_out of them with out_len bytes, then the writable ones.
 */
struct vv_chain {
	uint16_t head;
	unsigned int n_out, n_in;
	size_t out_len, in_len;
	struct iovec iov[VV_CHAIN_MAX_DESC];
};

void vv_vq_init(struct vv_vq *vq);
int vv_vq_start(struct vv_vq *vq, const struct vv_mem *mem, uint64_t *stats);
bool vv_vq_ready(const struct vv_vq *vq);
int vv_vq_pop(struct vv_vq *vq, const struct vv_mem *mem, struct vv_chain *c,
	      uint64_t *stats);
void vv_vq_unpop(struct vv_vq *vq);
void vv_vq_push(struct vv_vq *vq, uint16_t head, uint32_t len);
void vv_vq_notify(struct vv_vq *vq);

size_t vv_iov_to_buf(const struct iovec *iov, unsigned int n, size_t off,
		     void *buf, size_t len);
size_t vv_iov_from_buf(const struct iovec *iov, unsigned int n, size_t off,
		       const void *buf, size_t len);
unsigned int vv_iov_slice(const struct iovec *iov, unsigned int n, size_t off,
			  size_t len, struct iovec *dst, unsigned int dst_max);

/* ------------------------------------------------------------ connections */

enum vc_state {
	VC_FREE = 0,
	VC_HOST_LINE,		/* host client accepted, reading "CONNECT <port>\n" */
	VC_HOST_REQ,		/* REQUEST sent to the guest, waiting for RESPONSE */
	VC_GUEST_CONNECT,	/* guest REQUEST, <uds>_<port> backlog full: retrying */
	VC_OPEN,		/* established both ways */
	VC_CLOSING,		/* both directions done, Unix side closed: we sent
				 * SHUTDOWN(RCV|SEND) and wait for the guest's RST */
	VC_DEAD,		/* Unix side closed; a RST to the guest is owed */
};

/* Control packets owed to the guest (vconn.pending). */
#define VC_P_REQUEST	0x01
#define VC_P_RESPONSE	0x02
#define VC_P_CREDIT	0x04
#define VC_P_SHUTDOWN	0x08	/* SHUTDOWN: SEND at Unix EOF, RCV at EPIPE,
				 * RCV|SEND when it closed or we close */
#define VC_P_RST	0x10	/* terminal: the slot is released once sent */

struct vv_list {
	struct vv_list *prev, *next;
};

struct vconn {
	enum vc_state state;
	uint32_t gen;			/* bumped at release: stale epoll refs */
	uint32_t gport, hport;		/* the key: guest port, host port */
	int fd;				/* the Unix stream */
	uint32_t ep_events;		/* what fd is registered for */
	bool in_hash;
	struct vconn *hnext;
	struct vv_list ctl;		/* on vv->ctl_list while pending != 0 */
	unsigned int pending;
	uint64_t deadline_ms;		/* VC_HOST_LINE, VC_HOST_REQ, VC_GUEST_CONNECT,
					 * VC_CLOSING, flush linger */

	/* guest -> host: what the guest sent that the Unix side has not taken */
	uint8_t *buf;			/* ring of vv->cfg.buf_alloc bytes, lazily */
	uint32_t buf_head, buf_len;
	uint32_t fwd_cnt;		/* bytes written to the Unix side */
	uint32_t fwd_cnt_sent;		/* fwd_cnt last told to the guest */

	/* host -> guest: the guest's credit */
	uint32_t tx_cnt;		/* payload bytes sent to the guest */
	uint32_t peer_buf_alloc, peer_fwd_cnt;

	bool guest_shut_send;		/* guest sends no more: SHUT_WR once flushed */
	bool guest_shut_rcv;		/* guest takes no more: stop reading */
	bool unix_eof;			/* read 0 from the Unix side */
	bool unix_hup;			/* ... and it closed both ways */
	bool unix_wr_shut;
	bool unix_rd_shut;		/* writing to it said EPIPE: the guest's
					 * payload is dropped (unix_takes_no_more) */
};

/* ------------------------------------------------------------ the daemon */

/* Typed epoll references: type in bits 56..63, generation 24..55, slot 0..23. */
enum vv_ep_type {
	VV_EP_NONE = 0,
	VV_EP_SIGNAL,		/* signalfd */
	VV_EP_TIMER,		/* timerfd: deadlines of connections */
	VV_EP_VU_LISTEN,	/* vhost-user listener (QEMU connects here) */
	VV_EP_VU_CONN,		/* the vhost-user front-end connection */
	VV_EP_KICK,		/* a queue's kick eventfd; slot = queue */
	VV_EP_HOST_LISTEN,	/* <uds>: host-initiated connections */
	VV_EP_CONN,		/* a connection's Unix stream; slot = conn */
};

static inline uint64_t vv_ep_ref(enum vv_ep_type t, uint32_t gen, uint32_t slot)
{
	return (uint64_t)t << 56 | (uint64_t)gen << 24 | (slot & 0xffffff);
}

static inline enum vv_ep_type vv_ep_type_of(uint64_t ref)
{
	return (enum vv_ep_type)(ref >> 56);
}

static inline uint32_t vv_ep_gen(uint64_t ref)
{
	return (uint32_t)(ref >> 24);
}

static inline uint32_t vv_ep_slot(uint64_t ref)
{
	return ref & 0xffffff;
}

/* Parameters: from the command line, never changed afterwards. */
struct vv_config {
	const char *name;		/* VM name in logs */
	const char *vu_socket;		/* vhost-user listener */
	const char *uds;		/* hybrid-vsock base path */
	uint64_t guest_cid;
	unsigned int max_conns;
	uint32_t buf_alloc;		/* receive buffer advertised per connection */
	unsigned int connect_ms;	/* host CONNECT line and guest answer */
	unsigned int linger_ms;		/* flush of a closed connection */
};

#define VV_DEFAULT_CID		3
#define VV_DEFAULT_MAX_CONNS	1024
#define VV_DEFAULT_BUF_ALLOC	(256u << 10)
#define VV_DEFAULT_CONNECT_MS	5000
#define VV_DEFAULT_LINGER_MS	30000
#define VV_TICK_MS		50
#define VV_RST_QUEUE		256
#define VV_TX_BUDGET		256	/* tx chains per turn of the loop */
#define VV_RX_BUDGET		32	/* rx packets per connection per turn */

struct vv_rst {
	uint32_t gport, hport;
};

/* Runtime state. */
struct vv {
	struct vv_config cfg;
	int epfd, sig_fd, timer_fd, vu_listen_fd, host_listen_fd;
	bool timer_armed;
	bool stop;

	/* vhost-user front-end */
	int vu_fd;
	uint64_t features, protocol_features;
	bool owner;
	struct vv_mem mem;
	struct vv_vq vq[VV_NUM_QUEUES];

	/* vsock device */
	struct vconn *conns;		/* cfg.max_conns slots */
	uint32_t *free_slots;
	unsigned int nfree, nconns;
	struct vconn **hash;
	unsigned int hash_mask;
	struct vv_list ctl_list;	/* connections with pending control packets */
	struct vv_rst rst_q[VV_RST_QUEUE];
	unsigned int rst_head, rst_len;
	uint32_t next_hport;
	bool rx_wait;			/* rx ring ran dry: waiting for a kick */
	bool tx_more;			/* tx budget ran out: more to do */

	uint64_t stats[VV_STAT_MAX];
	uint64_t stats_logged[VV_STAT_MAX];
};

/* vsock.c */
int vv_dev_init(struct vv *vv);
void vv_dev_free(struct vv *vv);
void vv_dev_reset(struct vv *vv, const char *why);
bool vv_dev_running(const struct vv *vv);
void vv_process_tx(struct vv *vv);
void vv_rx_kick(struct vv *vv);
void vv_flush(struct vv *vv);
bool vv_has_work(const struct vv *vv);
void vv_conn_event(struct vv *vv, uint32_t slot, uint32_t gen, uint32_t events);
void vv_host_accept(struct vv *vv);
void vv_tick(struct vv *vv);
void vv_count(struct vv *vv, enum vv_stat s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void vv_stats_log(struct vv *vv, bool all);
uint64_t vv_now_ms(void);
int vv_ep_set(struct vv *vv, int fd, uint64_t ref, uint32_t events, uint32_t *cur);

/* vu.c */
void vv_vu_init(struct vv *vv);
int vv_vu_handle(struct vv *vv);
void vv_vu_disconnect(struct vv *vv, const char *why);
void vv_vu_kick(struct vv *vv, unsigned int q);

#endif /* NK_VHOST_VSOCK_H */
