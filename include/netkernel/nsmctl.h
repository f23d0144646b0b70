/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * nkd <-> NSM control messages.
 *
 * Each NSM listens on a Unix SOCK_SEQPACKET socket (its --control path,
 * e.g. /run/netkernel/nsm-NAME.sock).  nkd connects to it; one packet is
 * one message.  A newer nkd connection replaces an older one, so a
 * restarted nkd simply connects again and re-sends its configuration:
 * every request is idempotent.  When nkd goes away the NSM keeps running,
 * with its VMs, listeners and connections: restart is not teardown.
 *
 * On accept the NSM sends NSM_MSG_HELLO unsolicited.  Every request from
 * nkd is answered by one NSM_MSG_REPLY with the same seq, carrying 0 or a
 * positive errno in err.
 *
 * File descriptors travel with SCM_RIGHTS on the request that names them:
 *   NSM_MSG_ATTACH_LISTENER  one listening stream socket; every guest
 *                            stream accepted on it belongs to vm_id.  A
 *                            second one for the same vm_id replaces the
 *                            first.
 *   NSM_MSG_ATTACH_STREAM    one already-accepted guest stream of vm_id
 *                            (nkd dispatches AF_VSOCK by peer CID).
 *   NSM_MSG_CLAIM_FWD        nsm -> nkd, unsolicited (seq 0, no REPLY):
 *                            a guest stream whose claim (HELLO ACCEPT)
 *                            is for another NSM (below).
 *   NSM_MSG_ATTACH_CLAIM     nkd -> nsm: that stream and claim.
 *
 * nkd identifies the VM from the transport (which listener, which CID);
 * the NSM never trusts a VM identity sent by a guest.
 */
#ifndef NETKERNEL_NSMCTL_H
#define NETKERNEL_NSMCTL_H

#include <stdint.h>
#include <netkernel/proto.h>

#define NSM_CTL_MAGIC		0x4d4e	/* "NM" */
#define NSM_CTL_VERSION		1
#define NK_NAME_MAX		32	/* VM and NSM names, NUL included */
#define NK_VM_ADDRS_MAX		8
#define NSM_CTL_MSG_MAX		1024

/* nk-nsm's --busy-poll and --bulk-poll, in microseconds: their limit and
 * the window of bulk polling.  --bulk-poll's default is "auto": the window
 * where switching between two processes on one CPU costs at least
 * NSM_BULK_POLL_AUTO_NS per round trip (measured at start), none where it
 * is cheaper (docs/architecture.md, "Bulk polling").  NSM_BULK_POLL_AUTO
 * is "auto" in nkd's configuration; nkd passes --bulk-poll only for a
 * number. */
#define NSM_POLL_MAX_US		1000
#define NSM_BULK_POLL_US	50
#define NSM_BULK_POLL_AUTO	0xffffffffu
#define NSM_BULK_POLL_AUTO_NS	8000
/* nk-nsm --kernel-relay-sndbuf (nkctl nsm add ... kernel-relay-sndbuf BYTES): the
 * send buffer of TCP sockets the in-kernel relay feeds; 0: autotuning */
#define NSM_KRELAY_SNDBUF	(16 << 20)
#define NSM_KRELAY_SNDBUF_MIN	(64 << 10)
#define NSM_KRELAY_SNDBUF_MAX	(256 << 20)
/* nk-nsm --notsent-lowat (nkctl nsm add ... lowat BYTES):
 * TCP_NOTSENT_LOWAT of the TCP sockets the relay writes to (not the
 * in-kernel relay's; unless the guest set its own); 0: none set, the
 * namespace's net.ipv4.tcp_notsent_lowat applies (no limit by default).
 * docs/architecture.md, "Unsent bytes stay with the relay". */
#define NSM_NOTSENT_LOWAT	(128 << 10)
#define NSM_NOTSENT_LOWAT_MAX	(1 << 30)

/* Same layout as struct nk_hdr (see proto.h), other magic. */
struct nsm_hdr {
	uint16_t magic;
	uint8_t version;
	uint8_t type;		/* enum nsm_msg */
	uint32_t len;		/* header + body */
	uint32_t seq;
	int32_t err;
};
_Static_assert(sizeof(struct nsm_hdr) == 16, "nsm_hdr is 16 bytes");

enum nsm_msg {
	NSM_MSG_HELLO = 1,	/* nsm -> nkd, on accept */
	NSM_MSG_REPLY,		/* nsm -> nkd, one per request */
	NSM_MSG_VM_ADD,		/* nkd -> nsm: add or update a VM */
	NSM_MSG_VM_DEL,		/* nkd -> nsm: remove a VM and its sockets */
	NSM_MSG_ATTACH_LISTENER,/* nkd -> nsm: + 1 fd */
	NSM_MSG_ATTACH_STREAM,	/* nkd -> nsm: + 1 fd */
	NSM_MSG_CONN_LIST,	/* nkd -> nsm: CONN_BATCH packets, then REPLY */
	NSM_MSG_CONN_BATCH,	/* nsm -> nkd: up to NSM_CONN_BATCH entries */
	NSM_MSG_VM_DRAIN,	/* nkd -> nsm: a VM moves away (see below) */
	NSM_MSG_CLAIM_FWD,	/* nsm -> nkd: + 1 fd, a claim for the NSM a VM left */
	NSM_MSG_ATTACH_CLAIM,	/* nkd -> nsm: + 1 fd, that claim */
	NSM_MSG_VM_LIST,	/* nkd -> nsm: VM_BATCH packets, then REPLY */
	NSM_MSG_VM_BATCH,	/* nsm -> nkd: up to NSM_VM_BATCH vm ids */
	NSM_MSG_MAX
};

struct nsm_hello {
	char name[NK_NAME_MAX];
	char type[16];		/* "kernel" */
	uint32_t pid;
	uint32_t nvms;		/* VMs it currently serves */
};

/*
 * Appended to nsm_hello by nk-nsm (one built before sends nsm_hello alone,
 * and an older nkd reads only that far): the settings the process
 * runs with, whatever its command line said (defaults built into it,
 * nkd's --nsm-arg), so that nkd can tell an NSM that does not run as its
 * entry in nkd.json says (an adopted one, started by an earlier nkd).
 */
#define NSM_RUN_KERNEL_RELAY	0x01	/* --kernel-relay, and it could be set up */
#define NSM_RUN_NO_SPLICE	0x02	/* --no-splice */
#define NSM_RUN_BULK_POLL_AUTO	0x04	/* --bulk-poll=auto: bulk_poll_us is its choice */

struct nsm_hello_run {
	uint32_t flags;		/* NSM_RUN_* */
	uint32_t busy_poll_us;
	uint32_t bulk_poll_us;
	uint32_t wake_ns;	/* --bulk-poll=auto: the round trip it measured; else 0 */
	int64_t kernel_relay_sndbuf;	/* the option's value, not tcp_wmem's */
	uint64_t netns_dev;	/* stat() of its /proc/self/ns/net */
	uint64_t netns_ino;
	char dev[16];		/* --dev, NUL-terminated */
};
_Static_assert(sizeof(struct nsm_hello) == 56, "nsm_hello is 56 bytes");
_Static_assert(sizeof(struct nsm_hello_run) == 56, "nsm_hello_run is 56 bytes");

/* Appended after nsm_hello_run by an nk-nsm that has --notsent-lowat; an
 * older one stops before it, and nkd then does not check that setting. */
struct nsm_hello_run2 {
	int64_t notsent_lowat;	/* --notsent-lowat */
};
_Static_assert(sizeof(struct nsm_hello_run2) == 8, "nsm_hello_run2 is 8 bytes");

struct nsm_vm_addr {
	struct nk_addr addr;	/* port unused */
	uint8_t prefix;		/* 0..32 or 0..128 */
	uint8_t pad[3];
};
_Static_assert(sizeof(struct nsm_vm_addr) == 32, "nsm_vm_addr is 32 bytes");

/*
 * VM_ADD: the NSM puts every address on its device (IFA_F_NODAD for IPv6;
 * the prefix gives the connected route) and, when gw4/gw6 has a family,
 * routes that VM's traffic (source = one of its addresses) through it in
 * a per-VM routing table.  Re-sending the same VM is a no-op; a changed
 * address list is applied as a difference.
 */
struct nsm_vm_add {
	uint32_t vm_id;		/* nkd's id, 1..65535 */
	uint32_t naddrs;	/* 1..NK_VM_ADDRS_MAX */
	char name[NK_NAME_MAX];
	struct nsm_vm_addr addrs[NK_VM_ADDRS_MAX];
	struct nk_addr gw4;	/* family NK_AF_UNSPEC: none */
	struct nk_addr gw6;
};
_Static_assert(sizeof(struct nsm_vm_add) == 40 + 32 * 8 + 56, "nsm_vm_add layout");

/* VM_DEL, ATTACH_LISTENER, ATTACH_STREAM. */
struct nsm_vm_ref {
	uint32_t vm_id;
	uint32_t pad0;
};

/*
 * CONN_LIST {vm_id or 0 for all}: the NSM answers with zero or more
 * CONN_BATCH packets (same seq) and then one REPLY.  One entry per guest
 * socket that has a kernel socket: connected, connecting and listening TCP
 * sockets and UDP sockets.
 */
#define NSM_CONN_BATCH	10

enum nsm_conn_proto { NSM_CONN_TCP = 6, NSM_CONN_UDP = 17 };

struct nsm_conn {
	uint64_t token;
	uint32_t vm_id;
	uint8_t proto;		/* enum nsm_conn_proto */
	uint8_t state;		/* enum nk_sock_state (proto.h) */
	uint16_t pad0;
	struct nk_addr local;
	struct nk_addr peer;	/* family NK_AF_UNSPEC when none */
	uint64_t bytes_in;	/* from the network to the guest */
	uint64_t bytes_out;	/* from the guest to the network */
};
_Static_assert(sizeof(struct nsm_conn) == 88, "nsm_conn is 88 bytes");

struct nsm_conn_list {
	uint32_t vm_id;		/* 0: every VM */
	uint32_t pad0;
};

struct nsm_conn_batch {
	uint32_t n;		/* 1..NSM_CONN_BATCH */
	uint32_t pad0;
	struct nsm_conn conns[NSM_CONN_BATCH];
};
_Static_assert(sizeof(struct nsm_hdr) + sizeof(struct nsm_conn_batch) <= NSM_CTL_MSG_MAX,
	       "a CONN_BATCH fits in one packet");

/*
 * VM_LIST {vm_id 0}: the NSM answers with zero or more VM_BATCH packets
 * (same seq), the id and name of every VM it has, and then one REPLY.  nkd
 * asks an NSM it adopts, before it sends the VMs again, and deletes those
 * it no longer has there, or has under another name (deleted from its
 * configuration while it was not running).  NSMs from before it answer
 * EOPNOTSUPP.
 */
#define NSM_VM_BATCH	24

struct nsm_vm_entry {
	uint32_t vm_id;
	char name[NK_NAME_MAX];
};

struct nsm_vm_batch {
	uint32_t n;		/* 1..NSM_VM_BATCH */
	uint32_t pad0;
	struct nsm_vm_entry vms[NSM_VM_BATCH];
};
_Static_assert(sizeof(struct nsm_hdr) + sizeof(struct nsm_vm_batch) <= NSM_CTL_MSG_MAX,
	       "a VM_BATCH fits in one packet");

/*
 * VM_DRAIN {vm_id}: the VM is moving to another NSM.  The NSM stops taking
 * new guest streams of that VM (drops its listener fd), closes the VM's
 * listening sockets' guest streams and those of its UDP sockets without a
 * peer (the guest library then listens, or binds, again, through nkd, on
 * the VM's new NSM) and keeps every established connection (and connected
 * UDP socket) until it ends; the VM's addresses stay until VM_DEL.
 */

/*
 * Claims across a move.  A connection offered to the guest (an
 * NK_OP_ACCEPT_OFFER record on a listener's stream) before its VM moved
 * away is held by the old NSM, while the guest's claim for it (a new
 * stream, HELLO ACCEPT naming the old NSM's listener token) reaches the
 * VM's new NSM.  An NSM that reads a quiet claim (NK_HELLO_F_QUIET: an
 * offered connection) for a listener it does not know, on a VM it was
 * given less than NSM_CLAIM_FWD_S seconds ago (VM_ADD creating it, or
 * re-adding one it was draining), sends CLAIM_FWD to nkd: the stream and the claim it read from it (the
 * stream's next byte is the first one after the claim; with
 * NK_HELLO_F_QUIET the guest may have written payload already).  nkd
 * sends ATTACH_CLAIM with the same body and stream to each NSM the VM is
 * draining from, newest drain first, until one answers 0; ENOENT: not
 * one of its connections.  Whoever holds the stream last closes it
 * unanswered when nobody takes it: the guest reads EOF, as it would
 * without a move when the claim fails (proto.h).  An nkd that does not
 * know CLAIM_FWD drops it, which closes the stream the same way.  The
 * NSM's REPLYs wait for room behind unread CLAIM_FWDs.
 */
#define NSM_CLAIM_FWD_S		40	/* s after VM_ADD (the old NSM keeps an offer
					 * 30 s from its announcement, and the
					 * move itself takes up to 2 s) */
#define NSM_CLAIM_FWD_MAX	256	/* claims passed on per VM in that time */

struct nsm_claim {
	uint32_t vm_id;		/* nkd's id of the VM (CLAIM_FWD: the sender's VM) */
	uint32_t pad0;
	struct nk_hdr hdr;	/* the claim as read: op NK_OP_HELLO */
	struct nk_hello_req req;	/* kind NK_HELLO_ACCEPT */
};
_Static_assert(sizeof(struct nsm_claim) == 48, "nsm_claim is 48 bytes");

#endif /* NETKERNEL_NSMCTL_H */
