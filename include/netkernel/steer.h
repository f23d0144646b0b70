/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the XDP steering programs (bpf/steer.bpf.c) and their one
 * userspace writer, nkd (through lib/steer_maps.c): the keys and values of
 * every map, the NSM kinds, the action for frames that belong to no VM, and
 * the drop reasons with their names.  Also the one value type of the kernel
 * NSM's in-kernel relay (bpf/relay.bpf.c, nsm/krelay.c).  Both sides compile this header: BPF
 * with clang -target bpf, userspace with cc; it uses only <linux/types.h>.
 * docs/maps.md describes every map built from these types.
 *
 * Layout rules: every struct has explicit padding and a fixed size (checked
 * below), so a map pinned by one build can be reused by the next.  New
 * fields go at the end of a value (which changes its size, and so needs a
 * new pin dir or an explicit unpin); new drop reasons take a free slot of
 * drops[] and change nothing.
 */
#ifndef NETKERNEL_STEER_H
#define NETKERNEL_STEER_H

#include <linux/types.h>

#define NK_STEER_PIN_DIR	"/sys/fs/bpf/netkernel"	/* default pin root */

#define NK_STEER_VM_MAX		4096	/* VMs with steering entries (ids 1..65535) */
#define NK_STEER_ADDR_MAX	(NK_STEER_VM_MAX * 8)	/* addresses, all VMs */
#define NK_STEER_NSM_MAX	256	/* NSM ids 0..255, as nkd's NKD_NSM_MAX */
#define NK_STEER_VLAN_MAX	2	/* 802.1Q tags parsed: one, or QinQ */

/* Address families in struct nk_steer_addr: the wire's NK_AF_INET/INET6. */
#define NK_STEER_AF_INET	4
#define NK_STEER_AF_INET6	6

/*
 * Why a frame was dropped.  A value indexes drops[] of struct
 * nk_steer_counters; a drop is counted in the global counters and in the
 * VM's and NSM's counters whenever the frame could be attributed to them.
 */
enum nk_drop_reason {
	NK_DROP_MALFORMED = 0,	/* truncated or malformed Ethernet/VLAN/L3 header */
	NK_DROP_NO_VM,		/* no VM owns the address (miss action: drop) */
	NK_DROP_UNKNOWN_PROTO,	/* ethertype not steered (miss action: drop) */
	NK_DROP_NO_NSM,		/* VM has no usable NSM, or egress from an unknown ifindex */
	NK_DROP_NSM_KIND,	/* the NSM's kind has no data path yet (AF_XDP) */
	NK_DROP_POLICY,		/* the VM's policy forbids the frame */
	NK_DROP_REDIRECT_FAILED,/* the redirect map has no entry at the slot */
	NK_DROP_MOVING,		/* a new TCP connection (SYN) to a VM that is moving */
	NK_DROP_MAX
};

#define NK_DROP_SLOTS		16	/* size of drops[]: room for new reasons */

/* What ingress does with a frame that no VM owns. */
enum nk_miss_action {
	NK_MISS_PASS = 0,	/* hand it to the host stack (default) */
	NK_MISS_DROP = 1,	/* drop it, reason NO_VM or UNKNOWN_PROTO */
};

/* How an NSM receives its frames. */
enum nk_nsm_kind {
	NK_NSM_NONE = 0,	/* slot unused */
	NK_NSM_KERNEL = 1,	/* kernel NSM: devmap nsm_devs -> its veth */
	NK_NSM_XSK = 2,		/* AF_XDP NSM: xskmap nsm_xsks (reserved, not steered yet) */
};

/* steer_cfg[0]: global configuration. */
struct nk_steer_config {
	__u32 miss_action;	/* enum nk_miss_action */
	__u32 flags;		/* reserved, 0 */
};

/* addr_vm key: one VM address.  IPv4 uses addr[0..3]; the rest is zero. */
struct nk_steer_addr {
	__u8 family;		/* NK_STEER_AF_INET or NK_STEER_AF_INET6 */
	__u8 pad[3];		/* zero */
	__u8 addr[16];		/* network order */
};

/* addr_vm value. */
struct nk_steer_addr_vm {
	__u32 vm_id;
};

/*
 * vms value flags.  HOLD_SYN: the VM is moving to nsm_id's successor; a
 * TCP SYN (without ACK) of no known flow is dropped (reason MOVING), so
 * the remote retransmits it once the move is done instead of meeting a
 * reset while no NSM has the VM's listeners.
 */
#define NK_STEER_VM_F_HOLD_SYN	(1u << 0)

/* vms value, by vm id. */
struct nk_steer_vm {
	__u32 nsm_id;		/* index into nsms */
	__u32 flags;		/* NK_STEER_VM_F_* */
};

/* vm_policy value, by vm id: written by nkctl policy set (ctl/nkd_steer.c). */
struct nk_steer_policy {
	__u8 drop_all;		/* 1: drop every frame to or from the VM (POLICY) */
	__u8 pad[7];
};

/* nsms value, by nsm id. */
struct nk_steer_nsm {
	__u32 kind;		/* enum nk_nsm_kind; NONE: slot unused */
	__u32 dev_slot;		/* KERNEL: key in nsm_devs */
	__u32 xsk_slot;		/* XSK: key in nsm_xsks (reserved) */
	__u32 ifindex;		/* host side of the NSM's veth (for nsm_ifindex) */
};

/*
 * nsm_netns value, by nsm id: the NSM's network namespace, named by the id
 * the uplink's namespace gives it (its nsid: "ip netns list-id").  The
 * ingress program looks up the old NSM's TCP sockets there (a SYN that
 * matches a steer_flows entry).  Unset (flags 0): not known.
 */
struct nk_steer_nsm_netns {
	__u32 flags;		/* NK_STEER_NETNS_F_KNOWN: netns_id is valid */
	__s32 netns_id;		/* nsid; -1: the uplink's own namespace */
};

#define NK_STEER_NETNS_F_KNOWN	0x1

/*
 * nsm_macs value, by nsm id: the MAC of the NSM's own end of its veth.
 * The ingress program writes it into the destination of a unicast frame
 * it steers to that NSM by the VM's address: a remote host whose entry
 * for the address still names another NSM's MAC (a move it has not
 * learned of: a lost gratuitous ARP, a frame sent just before it) is not
 * dropped by the NSM's stack.  Unset (known 0): the frame is unchanged.
 */
struct nk_steer_nsm_mac {
	__u8 mac[6];
	__u8 known;		/* 1: mac is valid */
	__u8 pad;
};

/* Key of nsm_by_mac: an NSM's MAC (the value is its struct nk_steer_nsm_ref). */
struct nk_steer_mac {
	__u8 mac[6];
	__u8 pad[2];		/* 0 */
};

/*
 * steer_flows key: one TCP or UDP flow of a VM, seen from the VM (issue 5:
 * a VM that moves to another NSM keeps its established flows on the old
 * one).  Ports in network order; IPv4 uses addr[0..3]; the rest is zero.
 */
struct nk_steer_flow {
	__u8 family;		/* NK_STEER_AF_INET or NK_STEER_AF_INET6 */
	__u8 proto;		/* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__be16 vm_port;
	__be16 remote_port;
	__u8 pad[2];		/* zero */
	__u8 vm_addr[16];
	__u8 remote_addr[16];
};

/* steer_flows value: the NSM that holds the flow. */
struct nk_steer_flow_nsm {
	__u32 nsm_id;
	__u8 dmac[6];		/* destination MAC written into the frame; zero: unchanged */
	__u8 pad[2];
};

#define NK_STEER_FLOW_MAX	65536	/* flows pinned to an old NSM, all VMs */

/*
 * vm_drains key: a VM and an NSM it is draining from (a graceful move
 * away from it; ctl/nkd_move.c).  The value is the steer_flows value of
 * that NSM's flows of the VM (its id and MAC): the egress program writes
 * it for each TCP SYN that NSM sends from the VM's address, so the
 * answer of a connect the guest starts there after the move reaches it.
 */
struct nk_steer_drain {
	__u32 vm_id;
	__u32 nsm_id;
};

#define NK_STEER_DRAIN_MAX	(NK_STEER_VM_MAX * 4)	/* drains, all VMs */

/* nsm_ifindex value, by the ifindex of the NSM veth's host side. */
struct nk_steer_nsm_ref {
	__u32 nsm_id;
};

/*
 * Counters: per CPU, summed by userspace.  rx = ingress frames redirected
 * towards the VM or NSM; tx = egress frames from the NSM sent to the
 * uplink; pass = ingress frames handed to the host stack (global only).
 */
struct nk_steer_counters {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 pass_packets;
	__u64 pass_bytes;
	__u64 drops[NK_DROP_SLOTS];	/* by enum nk_drop_reason */
};

#ifndef __bpf__
_Static_assert(NK_DROP_MAX <= NK_DROP_SLOTS, "drops[] has a slot per reason");
_Static_assert((NK_DROP_SLOTS & (NK_DROP_SLOTS - 1)) == 0, "NK_DROP_SLOTS is a power of 2");
_Static_assert(sizeof(struct nk_steer_config) == 8, "nk_steer_config layout");
_Static_assert(sizeof(struct nk_steer_addr) == 20, "nk_steer_addr layout");
_Static_assert(sizeof(struct nk_steer_vm) == 8, "nk_steer_vm layout");
_Static_assert(sizeof(struct nk_steer_policy) == 8, "nk_steer_policy layout");
_Static_assert(sizeof(struct nk_steer_nsm) == 16, "nk_steer_nsm layout");
_Static_assert(sizeof(struct nk_steer_nsm_netns) == 8, "nk_steer_nsm_netns layout");
_Static_assert(sizeof(struct nk_steer_nsm_mac) == 8, "nk_steer_nsm_mac layout");
_Static_assert(sizeof(struct nk_steer_mac) == 8, "nk_steer_mac layout");
_Static_assert(sizeof(struct nk_steer_flow) == 40, "nk_steer_flow layout");
_Static_assert(sizeof(struct nk_steer_flow_nsm) == 12, "nk_steer_flow_nsm layout");
_Static_assert(sizeof(struct nk_steer_drain) == 8, "nk_steer_drain layout");
_Static_assert(sizeof(struct nk_steer_counters) == 48 + 8 * NK_DROP_SLOTS,
	       "nk_steer_counters layout");

/* "malformed", "no_vm", ...: the names logs, nkctl and JSON use. */
static inline const char *nk_drop_reason_name(unsigned int reason)
{
	static const char *const names[NK_DROP_MAX] = {
		[NK_DROP_MALFORMED]		= "malformed",
		[NK_DROP_NO_VM]			= "no_vm",
		[NK_DROP_UNKNOWN_PROTO]		= "unknown_proto",
		[NK_DROP_NO_NSM]		= "no_nsm",
		[NK_DROP_NSM_KIND]		= "nsm_kind",
		[NK_DROP_POLICY]		= "policy",
		[NK_DROP_REDIRECT_FAILED]	= "redirect_failed",
		[NK_DROP_MOVING]		= "moving",
	};

	return reason < NK_DROP_MAX && names[reason] ? names[reason] : "unknown";
}

static inline const char *nk_nsm_kind_name(unsigned int kind)
{
	switch (kind) {
	case NK_NSM_NONE:	return "none";
	case NK_NSM_KERNEL:	return "kernel";
	case NK_NSM_XSK:	return "xsk";
	default:		return "unknown";
	}
}
#endif /* !__bpf__ */

/*
 * The kernel NSM's in-kernel relay (bpf/relay.bpf.c): relay_conns maps the
 * socket cookie of the NSM's end of a guest stream to the slot of its TCP
 * socket in relay_tcp, and counts what the verdict program moved.
 */
#define NK_RELAY_MAX		65536	/* connections relayed in the kernel at once */

struct nk_relay_conn {
	__u32 slot;		/* relay_tcp index of the TCP socket */
	__u32 pad0;
	__u64 bytes;		/* guest -> TCP, redirected by the verdict */
	__u64 skbs;
};
_Static_assert(sizeof(struct nk_relay_conn) == 24, "nk_relay_conn layout");

#endif /* NETKERNEL_STEER_H */
