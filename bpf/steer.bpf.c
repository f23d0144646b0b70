// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * XDP steering: one uplink NIC shared by every NSM.
 *
 * Theory of operation.  nkd attaches xdp_steer_ingress to the uplink and
 * xdp_steer_egress to the host side of each kernel NSM's veth pair, and is
 * the only userspace writer of the maps (bpf/lib/maps.h, docs/maps.md).
 *
 * Ingress, for each frame on the uplink:
 *   1. parse Ethernet (+ up to two VLAN tags) down to one address: the IPv4
 *      or IPv6 destination, the target of an ARP packet, the target of an
 *      ICMPv6 neighbour solicitation (whose destination is a solicited-node
 *      multicast address).  A broadcast ARP request for a VM's address thus
 *      reaches that VM's NSM and no other.
 *   2. a TCP/UDP frame of a flow in steer_flows (a VM that moved keeps its
 *      established flows on the old NSM) goes to that flow's NSM, with the
 *      destination MAC rewritten to that NSM's (the remote host may
 *      already address the new NSM's MAC, which the old NSM's stack would
 *      not take).  The VM is still named by addr_vm for the counters and
 *      its policy.  A TCP SYN without ACK is looked at twice: the remote
 *      host may open a new connection from the ports of a flow that ended
 *      before nkd prunes its entry (every second), and the old NSM, no
 *      longer listening for the VM, would reset it.  So the old NSM's own
 *      TCP socket table decides (bpf_sk_lookup_tcp in its namespace,
 *      nsm_netns): a connection still open there keeps the SYN (its TCP
 *      answers with a challenge ACK, RFC 5961: a forged SYN ends
 *      nothing); otherwise the entry is deleted and the SYN goes on as a
 *      new connection (3.); nkd's next prune does not pin it again (the
 *      old NSM lists no connection without a socket).  This cannot help
 *      a SYN that arrives in the same receive batch as the reset ending
 *      the old connection: the old NSM has not seen the reset yet, and
 *      resets the SYN after it.  An NSM whose namespace id is not known
 *      keeps every SYN of its flows.
 *   3. addr_vm[address] -> vm id; no entry: the frame is for no VM and goes
 *      to the host stack, or is dropped (steer_cfg miss_action).
 *      A new TCP connection (SYN) to a VM in the middle of a move
 *      (vms flags HOLD_SYN) is dropped (MOVING): the remote retries it a
 *      second later, on the new NSM, instead of meeting a reset.
 *   4. vm_policy[vm] -> drop_all: drop (reason POLICY).
 *   5. vms[vm] -> nsm id; nsms[nsm] -> kind and slot; a kernel NSM gets the
 *      frame by bpf_redirect_map(nsm_devs, slot) onto its veth, unchanged
 *      (VLAN tags included) but for the destination MAC of a unicast
 *      frame, which becomes the NSM's own (nsm_macs): a remote host that
 *      still addresses the VM at another NSM's MAC (it missed or has not
 *      yet processed the gratuitous ARP of a move) is served.  AF_XDP
 *      NSMs (nsm_xsks) are not steered yet.
 *   6. a neighbour reply (ARP reply, ICMPv6 neighbour advertisement) for
 *      a VM's address, unicast to the MAC of an NSM (nsm_by_mac), goes to
 *      that NSM instead of the VM's (3.-5. otherwise): the NSM that asked.
 *      During a move the new NSM resolves its neighbours while the VM's
 *      frames still go to the old one.
 *
 * Egress, for each frame the NSM's stack sends out of its veth: the
 * ingress ifindex names the NSM (nsm_ifindex), the source address names the
 * VM when it is one of that NSM's VMs (for the counters); the policy of the
 * VM that owns the source address applies whichever NSM sends it (an old
 * NSM draining a moved VM's connections included), and the frame leaves
 * through the uplink (uplink_dev slot 0).  A TCP SYN (without ACK) from
 * the address of a VM that has moved away from that NSM, or is moving
 * (HOLD_SYN), and whose drain from it nkd has registered (vm_drains), pins
 * its flow to the NSM in steer_flows: the guest connected a socket it had
 * there before the move, and the SYN-ACK must come back to it, not to the
 * VM's new NSM, which would reset it.  nkd lists such a connection at its
 * next prune and keeps the entry while it lasts.  There is no bridge and
 * no forwarding by the host stack.
 *
 * Every outcome is counted per CPU: globally, and per VM and per NSM once
 * the frame is attributed (bpf/lib/counters.h); drops by the reasons of
 * include/netkernel/steer.h.  A malformed frame is never read past its end
 * and is dropped (reason MALFORMED).  A redirect whose map slot is empty is
 * dropped (REDIRECT_FAILED); a failure later in the driver is not seen here
 * (the xdp:xdp_redirect_err tracepoint shows those).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <netkernel/steer.h>

#include "lib/parse.h"
#include "lib/maps.h"
#include "lib/counters.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Is the TCP connection of flow key still open on the NSM that holds it
 * (a socket of it in the NSM's namespace, not a listener)?  1 yes, 0 no;
 * not known: 1, the flow keeps its frames.
 */
static __always_inline int flow_open(struct xdp_md *ctx, const struct nk_steer_flow *key,
				      __u32 nsm_id)
{
	struct nk_steer_nsm_netns *ns = bpf_map_lookup_elem(&nsm_netns, &nsm_id);
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 len;
	int open;

	if (!ns || !(ns->flags & NK_STEER_NETNS_F_KNOWN))
		return 1;
	if (key->family == NK_STEER_AF_INET) {
		__builtin_memcpy(&t.ipv4.saddr, key->remote_addr, 4);
		__builtin_memcpy(&t.ipv4.daddr, key->vm_addr, 4);
		t.ipv4.sport = key->remote_port;
		t.ipv4.dport = key->vm_port;
		len = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, key->remote_addr, 16);
		__builtin_memcpy(t.ipv6.daddr, key->vm_addr, 16);
		t.ipv6.sport = key->remote_port;
		t.ipv6.dport = key->vm_port;
		len = sizeof(t.ipv6);
	}
	/* netns_id -1 (the uplink's own namespace) is the helper's "current" */
	sk = bpf_sk_lookup_tcp(ctx, &t, len, (__u64)(__s64)ns->netns_id, 0);
	if (!sk)
		return 0;
	open = sk->state != BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return open;
}

/*
 * Egress: a TCP SYN that an NSM the VM drains from sends from the VM's
 * address (a connect the guest started there, on a socket it had before
 * the move) pins its flow to that NSM, as nkd would at its next prune:
 * the SYN-ACK must reach it, not the VM's new NSM.
 */
static __always_inline void pin_connect(void *data, void *data_end, __u32 vm_id, __u32 nsm_id)
{
	struct nk_steer_drain dkey = { .vm_id = vm_id, .nsm_id = nsm_id };
	struct nk_steer_flow_nsm *val;
	struct nk_steer_flow fkey = {};
	int syn = 0;

	if (parse_flow(data, data_end, PARSE_SRC, &fkey, &syn) != PARSE_OK || !syn)
		return;
	val = bpf_map_lookup_elem(&vm_drains, &dkey);
	if (val)
		bpf_map_update_elem(&steer_flows, &fkey, val, BPF_ANY);
}

/*
 * A neighbour reply (ARP reply, ICMPv6 neighbour advertisement) to the MAC
 * of an NSM goes to that NSM: it asked.  During a move both NSMs have the
 * VM's address, and the reply to the new NSM's request would otherwise
 * follow the address to the old one, and the new NSM would ask again a
 * second later.  Returns 1 with *nsm_id set, else 0.
 */
static __always_inline int reply_nsm(void *data, void *data_end, __u32 *nsm_id)
{
	struct nk_steer_nsm_ref *ref;
	struct nk_steer_mac key = {};
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end || (eth->h_dest[0] & 1))
		return 0;
	__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	ref = bpf_map_lookup_elem(&nsm_by_mac, &key);
	if (!ref)
		return 0;
	*nsm_id = ref->nsm_id;
	return 1;
}

/* A frame that belongs to no VM: pass or drop per steer_cfg. */
static __always_inline int steer_miss(struct steer_stats *s, enum nk_drop_reason reason)
{
	__u32 zero = 0;
	struct nk_steer_config *cfg = bpf_map_lookup_elem(&steer_cfg, &zero);

	if (cfg && cfg->miss_action == NK_MISS_DROP)
		return count_drop(s, reason);
	return count_pass(s);
}

SEC("xdp")
int xdp_steer_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct nk_steer_flow_nsm *flow = NULL;
	struct nk_steer_flow fkey = {};
	struct nk_steer_addr key = {};
	struct nk_steer_addr_vm *av;
	struct nk_steer_policy *pol;
	struct nk_steer_vm *vm;
	struct nk_steer_nsm *nsm;
	struct steer_stats s;
	__u32 vm_id, nsm_id;
	int syn = 0, reply;
	long ret;

	stats_init(&s, ctx);
	switch (parse_frame(data, data_end, PARSE_DST, &key, &reply)) {
	case PARSE_OK:
		break;
	case PARSE_UNKNOWN:
		return steer_miss(&s, NK_DROP_UNKNOWN_PROTO);
	default:
		return count_drop(&s, NK_DROP_MALFORMED);
	}

	/* A known flow first: it stays on the NSM that holds it. */
	if (parse_flow(data, data_end, PARSE_DST, &fkey, &syn) == PARSE_OK) {
		flow = bpf_map_lookup_elem(&steer_flows, &fkey);
		if (flow && syn && !flow_open(ctx, &fkey, flow->nsm_id)) {
			/* a new connection on an ended flow's ports (2.) */
			bpf_map_delete_elem(&steer_flows, &fkey);
			flow = NULL;
		}
	}

	av = bpf_map_lookup_elem(&addr_vm, &key);
	if (!av && !flow)
		return steer_miss(&s, NK_DROP_NO_VM);
	vm_id = av ? av->vm_id : 0;
	if (av)
		stats_set_vm(&s, vm_id);

	if (flow) {
		nsm_id = flow->nsm_id;
	} else if (reply && av && reply_nsm(data, data_end, &nsm_id)) {
		/* to the NSM that asked (6.) */
	} else {
		vm = bpf_map_lookup_elem(&vms, &vm_id);
		if (!vm)
			return count_drop(&s, NK_DROP_NO_NSM);
		nsm_id = vm->nsm_id;
		if (syn && (vm->flags & NK_STEER_VM_F_HOLD_SYN)) {
			stats_set_nsm(&s, nsm_id);
			return count_drop(&s, NK_DROP_MOVING);
		}
	}
	stats_set_nsm(&s, nsm_id);

	pol = bpf_map_lookup_elem(&vm_policy, &vm_id);
	if (pol && pol->drop_all)
		return count_drop(&s, NK_DROP_POLICY);

	nsm = bpf_map_lookup_elem(&nsms, &nsm_id);
	if (!nsm || nsm->kind == NK_NSM_NONE)
		return count_drop(&s, NK_DROP_NO_NSM);
	if (nsm->kind != NK_NSM_KERNEL)
		return count_drop(&s, NK_DROP_NSM_KIND);

	/*
	 * A unicast frame leaves with the MAC of the NSM it goes to, whichever
	 * the sender used: a flow's own, else the NSM's from nsm_macs.
	 */
	{
		const __u8 *mac = NULL;
		struct ethhdr *eth = data;

		if (flow && (flow->dmac[0] | flow->dmac[1] | flow->dmac[2] | flow->dmac[3] |
			     flow->dmac[4] | flow->dmac[5])) {
			mac = flow->dmac;
		} else {
			struct nk_steer_nsm_mac *nm = bpf_map_lookup_elem(&nsm_macs, &nsm_id);

			if (nm && nm->known)
				mac = nm->mac;
		}
		if ((void *)(eth + 1) > data_end)
			return count_drop(&s, NK_DROP_MALFORMED);
		if (mac && !(eth->h_dest[0] & 1))
			__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	}

	/* an empty slot makes the helper return its fallback, XDP_DROP */
	ret = bpf_redirect_map(&nsm_devs, nsm->dev_slot, XDP_DROP);
	if (ret != XDP_REDIRECT)
		return count_drop(&s, NK_DROP_REDIRECT_FAILED);
	return count_rx(&s);
}

SEC("xdp")
int xdp_steer_egress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct nk_steer_addr key = {};
	struct nk_steer_nsm_ref *ref;
	struct nk_steer_addr_vm *av;
	struct nk_steer_policy *pol;
	struct nk_steer_vm *vm;
	struct steer_stats s;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 nsm_id, vm_id, zero = 0;
	int reply;
	long ret;

	stats_init(&s, ctx);
	ref = bpf_map_lookup_elem(&nsm_ifindex, &ifindex);
	if (!ref)
		return count_drop(&s, NK_DROP_NO_NSM);
	nsm_id = ref->nsm_id;
	stats_set_nsm(&s, nsm_id);

	switch (parse_frame(data, data_end, PARSE_SRC, &key, &reply)) {
	case PARSE_OK:
		break;
	case PARSE_UNKNOWN:
		goto out;	/* not attributable to a VM; still the NSM's */
	default:
		return count_drop(&s, NK_DROP_MALFORMED);
	}

	av = bpf_map_lookup_elem(&addr_vm, &key);
	if (!av)
		goto out;
	vm_id = av->vm_id;
	/* count for a VM only if it is one of this NSM's ... */
	vm = bpf_map_lookup_elem(&vms, &vm_id);
	if (vm && vm->nsm_id == nsm_id)
		stats_set_vm(&s, vm_id);
	/* a connect from an NSM the VM drains from (not on the hot path) */
	if (vm && (vm->nsm_id != nsm_id || (vm->flags & NK_STEER_VM_F_HOLD_SYN)))
		pin_connect(data, data_end, vm_id, nsm_id);
	/* ... but the address's VM's policy holds from any NSM */
	pol = bpf_map_lookup_elem(&vm_policy, &vm_id);
	if (pol && pol->drop_all)
		return count_drop(&s, NK_DROP_POLICY);

out:
	ret = bpf_redirect_map(&uplink_dev, zero, XDP_DROP);
	if (ret != XDP_REDIRECT)
		return count_drop(&s, NK_DROP_REDIRECT_FAILED);
	return count_tx(&s);
}

/*
 * Local traffic of a steered NSM: two VMs of one kernel NSM talk through
 * that NSM's own stack, over the loopback of its namespace, and never
 * cross the uplink, whose programs enforce a VM's quarantine.  nkd
 * attaches this program to tc ingress of that loopback (every local
 * packet passes it once): a packet from or to a VM whose policy is
 * drop_all is dropped, counted as POLICY for that VM and its NSM (and in
 * the global counters); everything else passes, uncounted.
 */
static __always_inline int local_addr(struct __sk_buff *skb, __u32 off, __u8 family,
				      __u32 len, struct nk_steer_addr *a)
{
	a->family = family;
	return bpf_skb_load_bytes(skb, off, a->addr, len);
}

/* The VM that owns address a, or 0. */
static __always_inline __u32 local_vm(const struct nk_steer_addr *a)
{
	struct nk_steer_addr_vm *av = bpf_map_lookup_elem(&addr_vm, a);

	return av ? av->vm_id : 0;
}

/* Is vm_id quarantined?  If so the drop is counted for it and its NSM. */
static __always_inline int local_drop(struct __sk_buff *skb, __u32 vm_id)
{
	struct nk_steer_policy *pol;
	struct nk_steer_vm *vm;
	struct steer_stats s;
	__u32 zero = 0;

	if (!vm_id)
		return 0;
	pol = bpf_map_lookup_elem(&vm_policy, &vm_id);
	if (!pol || !pol->drop_all)
		return 0;
	s = (struct steer_stats){ .global = bpf_map_lookup_elem(&global_stats, &zero),
				  .len = skb->len };
	stats_set_vm(&s, vm_id);
	vm = bpf_map_lookup_elem(&vms, &vm_id);
	if (vm)
		stats_set_nsm(&s, vm->nsm_id);
	count_drop(&s, NK_DROP_POLICY);
	return 1;
}

SEC("tc")
int tc_steer_local(struct __sk_buff *skb)
{
	struct nk_steer_addr src = {}, dst = {};
	__u32 svm, dvm;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (local_addr(skb, ETH_HLEN + 12, NK_STEER_AF_INET, 4, &src) ||
		    local_addr(skb, ETH_HLEN + 16, NK_STEER_AF_INET, 4, &dst))
			return TC_ACT_OK;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (local_addr(skb, ETH_HLEN + 8, NK_STEER_AF_INET6, 16, &src) ||
		    local_addr(skb, ETH_HLEN + 24, NK_STEER_AF_INET6, 16, &dst))
			return TC_ACT_OK;
	} else {
		return TC_ACT_OK;
	}
	svm = local_vm(&src);
	dvm = local_vm(&dst);
	/* a VM talking to itself: its own business, as in its own stack */
	if (svm == dvm)
		return TC_ACT_OK;
	if (local_drop(skb, svm) || local_drop(skb, dvm))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
