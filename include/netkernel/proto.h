/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The NetKernel guest protocol: what the guest library (libnkguest) and a
 * Network Stack Module say to each other over a guest stream.
 *
 * Theory of operation
 * -------------------
 * Every guest socket is one stream from the guest to the host (AF_VSOCK to
 * CID 2 port 7531, or a Unix socket standing in for it).  The fd the
 * application holds *is* that stream, so after set-up it carries raw payload
 * and nothing else: epoll, sendfile, readv and fork work on it unchanged.
 *
 * A stream opens with one HELLO request from the guest and one HELLO reply
 * from the NSM.  The kind in the HELLO says what the stream is:
 *
 *   NK_HELLO_SOCKET  a new socket.  The reply carries the socket's token.
 *                    The stream then waits in "set-up" mode: the host sends
 *                    nothing until the guest connects or listens.
 *   NK_HELLO_CTL     the per-process control channel.  Synchronous requests
 *                    naming a socket by token (BIND, LISTEN, CONNECT,
 *                    SETSOCKOPT, ...) and one reply each.  Tokens are only
 *                    looked up among the sockets of the VM the channel
 *                    belongs to; a token of another VM is ENOTSOCK.
 *   NK_HELLO_ACCEPT  claims a connection a listener announced; the reply
 *                    carries the addresses and the stream is in data mode
 *                    (with NK_HELLO_F_QUIET there is no reply: below).
 *
 * Every HELLO reply names the NSM instance that answered (nsm_id, random
 * per NSM process).  Tokens belong to that instance, so the guest keeps one
 * control channel per instance: after its VM moved to another NSM (or the
 * NSM restarted), requests for sockets of the old instance still go to the
 * old one, and new sockets use a channel to the new one.
 *
 * After CONNECT (sent on the control channel) the NSM writes exactly one
 * NK_OP_CONNECTED record on the socket's own stream when the handshake has
 * finished: err = 0 and the stream is in data mode from the next byte on,
 * or err = ECONNREFUSED/ETIMEDOUT/... and the stream stays in set-up mode.
 * The record arriving is what makes a non-blocking connect "complete".
 *
 * After LISTEN the NSM writes one NK_OP_ACCEPT_READY record on the
 * listener's stream per connection waiting to be accepted, so the
 * listener's fd is readable exactly when accept() would succeed.  A socket
 * whose HELLO had NK_HELLO_F_OFFER gets NK_OP_ACCEPT_OFFER records
 * instead, which carry the connection's token and addresses: the guest
 * then claims it with HELLO ACCEPT + NK_HELLO_F_QUIET and does not wait.
 *
 * In data mode:
 *   - the guest's shutdown(SHUT_WR) is a write-shutdown of the stream; the
 *     NSM sees EOF and shuts the TCP socket's write side (FIN);
 *   - a FIN from the peer becomes a write-shutdown of the stream by the NSM
 *     (the guest reads EOF while the stream stays open);
 *   - a reset or error from the peer closes the stream entirely after the
 *     NSM has recorded the error for the token; a guest that reads EOF on a
 *     stream that is fully closed asks NK_OP_STATUS which it was;
 *   - the guest closing the stream (last fd) closes the TCP socket.
 *
 * Wire format rules: every message is a 16-byte header followed by the
 * fixed-size body of its op; len is the total size and must equal
 * sizeof(hdr) + sizeof(body) for that op, or the channel is closed.  All
 * integers are little-endian (NetKernel supports little-endian hosts and
 * guests only, checked at build time).  Errno values, socket levels and
 * option names are Linux's: both ends of the protocol are Linux.
 */
#ifndef NETKERNEL_PROTO_H
#define NETKERNEL_PROTO_H

#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the NetKernel guest protocol is little-endian; big-endian hosts are not supported"
#endif

#define NK_PROTO_MAGIC		0x4b4e	/* "NK" on the wire */
#define NK_PROTO_VERSION	1
#define NK_DEFAULT_VSOCK_PORT	7531
#define NK_HOST_CID		2
#define NK_OPT_MAX		256	/* largest option value carried (struct tcp_info fits) */

/*
 *  0       1       2       3       4       5       6       7
 * +-------+-------+-------+-------+-------+-------+-------+-------+
 * |    magic      |version|  op   |           len                 |
 * +-------+-------+-------+-------+-------+-------+-------+-------+
 * |           seq                 |           err                 |
 * +-------+-------+-------+-------+-------+-------+-------+-------+
 *
 * seq: chosen by the requester, echoed in the reply.
 * err: 0 in requests; 0 or a positive Linux errno in replies and records.
 */
struct nk_hdr {
	uint16_t magic;
	uint8_t version;
	uint8_t op;
	uint32_t len;
	uint32_t seq;
	int32_t err;
};
_Static_assert(sizeof(struct nk_hdr) == 16, "nk_hdr is 16 bytes");

enum nk_op {
	NK_OP_HELLO = 1,	/* first message on every stream, both ways */
	NK_OP_BIND,		/* ctl: bind a socket */
	NK_OP_LISTEN,		/* ctl: listen */
	NK_OP_CONNECT,		/* ctl: start a connect; outcome is CONNECTED */
	NK_OP_SETSOCKOPT,	/* ctl: set an option on the NSM's socket */
	NK_OP_GETSOCKOPT,	/* ctl: read an option back from it */
	NK_OP_GETNAME,		/* ctl: local or peer address */
	NK_OP_SHUTDOWN,		/* ctl: shutdown(SHUT_RD) bookkeeping */
	NK_OP_STATUS,		/* ctl: why did this stream end? */
	NK_OP_CONNECTED,	/* record on a socket stream, host -> guest */
	NK_OP_ACCEPT_READY,	/* record on a listener stream, host -> guest */
	NK_OP_ACCEPT_OFFER,	/* the same, for NK_HELLO_F_OFFER sockets */
	NK_OP_MAX
};

/* Address families on the wire (not the OS's AF_ numbers). */
enum nk_family {
	NK_AF_UNSPEC = 0,
	NK_AF_INET = 4,
	NK_AF_INET6 = 6,
};

/*
 * An IPv4 or IPv6 socket address.  port is in host (little-endian) order;
 * addr holds the address bytes in network order (4 used for IPv4).
 */
struct nk_addr {
	uint8_t family;		/* enum nk_family */
	uint8_t pad0;
	uint16_t port;
	uint32_t flowinfo;	/* IPv6 only */
	uint32_t scope_id;	/* IPv6 only */
	uint8_t addr[16];
};
_Static_assert(sizeof(struct nk_addr) == 28, "nk_addr is 28 bytes");

enum nk_hello_kind {
	NK_HELLO_SOCKET = 1,
	NK_HELLO_CTL = 2,
	NK_HELLO_ACCEPT = 3,
};

enum nk_sock_type {
	NK_SOCK_STREAM = 1,
	NK_SOCK_DGRAM = 2,	/* UDP: framed datagrams, see nk_dgram_hdr */
};

/*
 * HELLO flags (SOCKET, type STREAM only).  NK_HELLO_F_SETUP: set-up
 * requests follow on this stream, pipelined behind the HELLO without
 * waiting for its reply: any number of SETSOCKOPT, then one CONNECT, each
 * naming token 0 (this stream's socket).  Each is answered on the stream,
 * in order after the HELLO reply, with the reply it would get on the
 * control channel; after the CONNECT reply comes the CONNECTED record as
 * usual.  A fresh client socket so connects in one round trip instead of
 * three (HELLO, CONNECT, CONNECTED).  Any other op, a non-zero token, or
 * more than 64 set-up requests close the stream.  Bytes written after the
 * CONNECT, before the CONNECTED record, are payload, sent once connected
 * (libnkguest never does that).  NSMs of version 0.1.0 refuse the flag
 * (non-zero padding) by closing the stream unanswered; libnkguest then
 * connects one request at a time for the rest of the process.
 */
#define NK_HELLO_F_SETUP	0x01

/*
 * NK_HELLO_F_OFFER (SOCKET, type STREAM): if this socket listens, announce
 * each waiting connection with an NK_OP_ACCEPT_OFFER record (conn_id, the
 * token the accepted socket will have, its addresses) instead of
 * ACCEPT_READY.  All records on one listener stream are of one kind.
 *
 * NK_HELLO_F_QUIET (ACCEPT only): claim an offered connection without a
 * reply.  On success the stream is in data mode right after the HELLO: the
 * first byte the guest reads is payload, and it may write at once.  If the
 * claim fails (the connection was reset or expired, or conn_id is not
 * waiting) the NSM closes the stream unanswered, and the guest's socket
 * reads EOF, as an accepted connection that was reset at once would.
 *
 * Both flags together save the guest's wait on the NSM in accept().  NSMs
 * that do not know a flag refuse it as 0.1.0 refuses NK_HELLO_F_SETUP
 * (closed unanswered); libnkguest then asks for ACCEPT_READY records.
 */
#define NK_HELLO_F_OFFER	0x02
#define NK_HELLO_F_QUIET	0x04

/*
 * NK_HELLO_F_POST (CTL only): this control channel may carry posted
 * requests: a SETSOCKOPT with NK_OPT_F_POSTED in its flags gets no reply,
 * so the guest does not wait for it (libnkguest: TCP_CORK, which nginx's
 * tcp_nopush turns on and off around every response, TCP_NODELAY and the
 * keepalive options, which redis sets on every connection: options whose
 * outcome on Linux it knows). The NSM logs a posted request that fails.
 * Requests are carried out in the order they come on the channel, so a
 * later request on it (a GETSOCKOPT of the same option) sees the posted
 * one. A posted request that lets data go (TCP_CORK off, TCP_NODELAY on,
 * or any other option) takes effect behind the bytes already in the
 * socket's stream, as every SETSOCKOPT does. One that holds data back
 * (TCP_CORK on, TCP_NODELAY off) takes effect when the NSM reads it: bytes
 * in the stream then, written before it or after it, are held too, so
 * libnkguest posts a hold only when the NSM has read everything written
 * before it; bytes written after it may still have left uncorked, which
 * only sends them sooner. NSMs that do not know the flag close the
 * channel unanswered, as for NK_HELLO_F_SETUP; libnkguest then waits for
 * every reply.
 */
#define NK_HELLO_F_POST		0x08

/* HELLO request, guest -> host. */
struct nk_hello_req {
	uint8_t kind;		/* enum nk_hello_kind */
	uint8_t family;		/* SOCKET: enum nk_family */
	uint8_t type;		/* SOCKET: enum nk_sock_type */
	uint8_t flags;		/* SOCKET, ACCEPT: NK_HELLO_F_*; CTL: 0 */
	uint32_t pid;		/* informational: the guest process */
	uint64_t listener;	/* ACCEPT: the listener's token */
	uint64_t conn_id;	/* ACCEPT: from its ACCEPT_READY record */
};
_Static_assert(sizeof(struct nk_hello_req) == 24, "nk_hello_req is 24 bytes");

/* HELLO reply, host -> guest; err in the header. */
struct nk_hello_rep {
	uint64_t token;		/* SOCKET/ACCEPT: the socket's token */
	struct nk_addr local;	/* ACCEPT: the VM address connected to */
	struct nk_addr peer;	/* ACCEPT: the remote peer */
	uint32_t nsm_id;	/* the answering NSM instance (never 0) */
	uint32_t flags;		/* the NK_HELLO_F_* it takes; 0 from NSMs
				 * before this field (it was padding) */
};
_Static_assert(sizeof(struct nk_hello_rep) == 72, "nk_hello_rep is 72 bytes");

/* BIND, CONNECT request; BIND reply (bound address), CONNECT reply empty. */
struct nk_addr_req {
	uint64_t token;
	struct nk_addr addr;
	uint32_t pad0;
};
_Static_assert(sizeof(struct nk_addr_req) == 40, "nk_addr_req is 40 bytes");

struct nk_addr_rep {
	struct nk_addr addr;
	uint32_t pad0;
};
_Static_assert(sizeof(struct nk_addr_rep) == 32, "nk_addr_rep is 32 bytes");

/* LISTEN (arg = backlog), SHUTDOWN (arg = SHUT_*), GETNAME (arg: 0 local,
 * 1 peer), STATUS (arg unused).  Replies: empty except GETNAME
 * (nk_addr_rep) and STATUS (nk_status_rep). */
struct nk_sock_req {
	uint64_t token;
	int32_t arg;
	uint32_t pad0;
};
_Static_assert(sizeof(struct nk_sock_req) == 16, "nk_sock_req is 16 bytes");

enum nk_sock_state {
	NK_STATE_SETUP = 1,	/* not connected or listening */
	NK_STATE_CONNECTING,
	NK_STATE_CONNECTED,
	NK_STATE_LISTENING,
	NK_STATE_CLOSED,	/* stream ended; sock_err says why */
};

struct nk_status_rep {
	int32_t sock_err;	/* 0: orderly end (FIN), else ECONNRESET... */
	uint32_t state;		/* enum nk_sock_state */
};
_Static_assert(sizeof(struct nk_status_rep) == 8, "nk_status_rep is 8 bytes");

/* SETSOCKOPT request (val[0..optlen) used), GETSOCKOPT request (optlen is
 * the guest's buffer size, val unused) and GETSOCKOPT reply. */
struct nk_opt_req {
	uint64_t token;
	int32_t level;
	int32_t name;
	uint32_t optlen;	/* <= NK_OPT_MAX */
	uint32_t flags;		/* NK_OPT_F_*, only on a NK_HELLO_F_POST channel */
	uint8_t val[NK_OPT_MAX];
};
_Static_assert(sizeof(struct nk_opt_req) == 280, "nk_opt_req is 280 bytes");

#define NK_OPT_F_POSTED		0x1	/* SETSOCKOPT: no reply (NK_HELLO_F_POST) */

struct nk_opt_rep {
	uint32_t optlen;
	uint32_t pad0;
	uint8_t val[NK_OPT_MAX];
};
_Static_assert(sizeof(struct nk_opt_rep) == 264, "nk_opt_rep is 264 bytes");

/* CONNECTED record: err in the header; addresses valid when err == 0. */
struct nk_connected_rec {
	struct nk_addr local;
	struct nk_addr peer;
};
_Static_assert(sizeof(struct nk_connected_rec) == 56, "nk_connected_rec is 56 bytes");

/* ACCEPT_READY record: one per connection waiting on a listener. */
struct nk_accept_rec {
	uint64_t conn_id;
};
_Static_assert(sizeof(struct nk_accept_rec) == 8, "nk_accept_rec is 8 bytes");

/* ACCEPT_OFFER record (NK_HELLO_F_OFFER): what the HELLO reply would say. */
struct nk_accept_offer {
	uint64_t conn_id;
	uint64_t token;		/* the accepted socket's token once claimed */
	struct nk_addr local;	/* the VM address connected to */
	struct nk_addr peer;	/* the remote peer */
};
_Static_assert(sizeof(struct nk_accept_offer) == 72, "nk_accept_offer is 72 bytes");

/*
 * Datagram sockets (HELLO type NK_SOCK_DGRAM, UDP).  A datagram socket's
 * stream is in data mode right after HELLO and carries one frame per
 * datagram, both ways; control operations (BIND, CONNECT, options, names)
 * go over the control channel as for TCP.  CONNECT on a datagram socket is
 * complete when its control reply arrives (no CONNECTED record);
 * CONNECT to family NK_AF_UNSPEC dissolves the association, as
 * connect(AF_UNSPEC) does.
 *
 *  0       1       2       3       4       5       6       7
 * +-------+-------+-------+-------+-------+-------+-------+-------+
 * |        len (payload)          |    flags      |     err       |
 * +-------+-------+-------+-------+-------+-------+-------+-------+
 * |       addr (struct nk_addr, 28 bytes) ...                     |
 * +-------+-------+-------+-------+-------+-------+-------+-------+
 * |       payload (len bytes)                                     |
 *
 * guest -> host: addr is the destination, or family NK_AF_UNSPEC for the
 *   connected peer; flags and err are zero.
 * host -> guest: addr is the source.  With NK_DGRAM_F_ERROR the frame has
 *   no payload and err is an error the NSM's socket reported (an ICMP port
 *   unreachable on a connected socket gives ECONNREFUSED): the guest's next
 *   receive returns it, as Linux reports a pending socket error.
 * Each frame is written with one write so that it arrives whole; len is
 * at most NK_DGRAM_MAX (checked by both ends: a larger one closes the
 * channel).  The NSM drops datagrams for a guest that does not read (its
 * stream is full), as a full UDP receive queue would.
 */
#define NK_DGRAM_MAX		65535
#define NK_DGRAM_F_ERROR	0x1

struct nk_dgram_hdr {
	uint32_t len;
	uint16_t flags;
	uint16_t err;
	struct nk_addr addr;
};
_Static_assert(sizeof(struct nk_dgram_hdr) == 36, "nk_dgram_hdr is 36 bytes");

/* Largest message of the protocol; readers size their buffers with it. */
#define NK_MSG_MAX	(sizeof(struct nk_hdr) + sizeof(struct nk_opt_req))

/*
 * Body size of a message, by op and direction (request: guest -> host;
 * reply/record: host -> guest).  Returns -1 for an unknown op.
 */
static inline int nk_body_size(uint8_t op, int is_reply)
{
	switch (op) {
	case NK_OP_HELLO:
		return is_reply ? (int)sizeof(struct nk_hello_rep)
				: (int)sizeof(struct nk_hello_req);
	case NK_OP_BIND:
		return is_reply ? (int)sizeof(struct nk_addr_rep)
				: (int)sizeof(struct nk_addr_req);
	case NK_OP_CONNECT:
		return is_reply ? 0 : (int)sizeof(struct nk_addr_req);
	case NK_OP_LISTEN:
	case NK_OP_SHUTDOWN:
		return is_reply ? 0 : (int)sizeof(struct nk_sock_req);
	case NK_OP_GETNAME:
		return is_reply ? (int)sizeof(struct nk_addr_rep)
				: (int)sizeof(struct nk_sock_req);
	case NK_OP_STATUS:
		return is_reply ? (int)sizeof(struct nk_status_rep)
				: (int)sizeof(struct nk_sock_req);
	case NK_OP_SETSOCKOPT:
		return is_reply ? 0 : (int)sizeof(struct nk_opt_req);
	case NK_OP_GETSOCKOPT:
		return is_reply ? (int)sizeof(struct nk_opt_rep)
				: (int)sizeof(struct nk_opt_req);
	case NK_OP_CONNECTED:
		return is_reply ? (int)sizeof(struct nk_connected_rec) : -1;
	case NK_OP_ACCEPT_READY:
		return is_reply ? (int)sizeof(struct nk_accept_rec) : -1;
	case NK_OP_ACCEPT_OFFER:
		return is_reply ? (int)sizeof(struct nk_accept_offer) : -1;
	default:
		return -1;
	}
}

/*
 * Validate a received header.  Returns the body size to read next, or
 * -EPROTO (bad magic/version/op/len).  Direction as for nk_body_size().
 */
static inline int nk_hdr_check(const struct nk_hdr *h, int is_reply)
{
	int body;

	if (h->magic != NK_PROTO_MAGIC || h->version != NK_PROTO_VERSION)
		return -71; /* EPROTO */
	body = nk_body_size(h->op, is_reply);
	if (body < 0 || h->len != sizeof(*h) + (uint32_t)body)
		return -71;
	return body;
}

#endif /* NETKERNEL_PROTO_H */
