/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Header parsing for the steering programs: Ethernet with up to two VLAN
 * tags (802.1Q, 802.1ad QinQ), then ARP, IPv4 or IPv6 (with the target of
 * an ICMPv6 neighbour solicitation), reduced to the one address that picks
 * the VM.  Every read is preceded by a bounds check against data_end; a
 * header that does not fit, or that contradicts itself (IPv4 ihl < 5, a
 * wrong IP version, ARP that is not Ethernet/IPv4), is PARSE_MALFORMED.
 * parse_frame() also says whether the frame is a neighbour reply (an ARP
 * reply; on ingress, an ICMPv6 neighbour advertisement): the ingress
 * program sends one to the NSM that asked, named by its destination MAC,
 * not by its address.
 * A frame is never modified.  (The cursor style of xdp-tutorial's
 * parsing_helpers.h.)
 */
#ifndef NK_BPF_PARSE_H
#define NK_BPF_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <netkernel/steer.h>

/* Not in the uapi headers reachable without <sys/socket.h>. */
#define NK_ARPHRD_ETHER		1
#define NK_ICMPV6_NS		135	/* neighbour solicitation */
#define NK_ICMPV6_NA		136	/* neighbour advertisement */
#define NK_ARPOP_REPLY		2

struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

/* ARP for IPv4 over Ethernet (RFC 826): 28 bytes. */
struct arp_eth_ipv4 {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	__u8 ar_sha[ETH_ALEN];
	__u8 ar_spa[4];
	__u8 ar_tha[ETH_ALEN];
	__u8 ar_tpa[4];
};

/* ICMPv6 neighbour solicitation (RFC 4861 4.3), options not needed. */
struct icmp6_ns {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 reserved;
	__u8 target[16];
};

enum parse_result {
	PARSE_OK = 0,		/* key filled */
	PARSE_MALFORMED = -1,	/* truncated or self-contradicting header */
	PARSE_UNKNOWN = -2,	/* an ethertype we do not steer */
};

/* Which address of the frame picks the VM. */
enum parse_which {
	PARSE_DST,	/* ingress: destination (ARP/NS: the target) */
	PARSE_SRC,	/* egress: source (ARP: the sender) */
};

struct hdr_cursor {
	void *pos;
};

static __always_inline int proto_is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* Ethernet + up to NK_STEER_VLAN_MAX tags; *proto is in network order. */
static __always_inline int parse_eth(struct hdr_cursor *c, void *data_end, __be16 *proto)
{
	struct ethhdr *eth = c->pos;
	__be16 p;
	int i;

	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	p = eth->h_proto;
	c->pos = eth + 1;

#pragma unroll
	for (i = 0; i < NK_STEER_VLAN_MAX; i++) {
		struct vlan_hdr *vh = c->pos;

		if (!proto_is_vlan(p))
			break;
		if ((void *)(vh + 1) > data_end)
			return PARSE_MALFORMED;
		p = vh->h_vlan_encapsulated_proto;
		c->pos = vh + 1;
	}
	*proto = p;
	return PARSE_OK;
}

static __always_inline void key_ipv4(struct nk_steer_addr *key, const void *addr)
{
	key->family = NK_STEER_AF_INET;
	__builtin_memcpy(key->addr, addr, 4);
}

static __always_inline void key_ipv6(struct nk_steer_addr *key, const void *addr)
{
	key->family = NK_STEER_AF_INET6;
	__builtin_memcpy(key->addr, addr, 16);
}

static __always_inline int parse_arp(struct hdr_cursor *c, void *data_end,
				     enum parse_which which, struct nk_steer_addr *key, int *reply)
{
	struct arp_eth_ipv4 *arp = c->pos;

	if ((void *)(arp + 1) > data_end)
		return PARSE_MALFORMED;
	if (arp->ar_hrd != bpf_htons(NK_ARPHRD_ETHER) ||
	    arp->ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->ar_hln != ETH_ALEN || arp->ar_pln != 4)
		return PARSE_MALFORMED;
	key_ipv4(key, which == PARSE_DST ? arp->ar_tpa : arp->ar_spa);
	*reply = arp->ar_op == bpf_htons(NK_ARPOP_REPLY);
	return PARSE_OK;
}

static __always_inline int parse_ipv4(struct hdr_cursor *c, void *data_end,
				      enum parse_which which, struct nk_steer_addr *key)
{
	struct iphdr *iph = c->pos;
	__u32 hlen;

	if ((void *)(iph + 1) > data_end)
		return PARSE_MALFORMED;
	if (iph->version != 4 || iph->ihl < 5)
		return PARSE_MALFORMED;
	hlen = iph->ihl * 4;
	if (c->pos + hlen > data_end || bpf_ntohs(iph->tot_len) < hlen)
		return PARSE_MALFORMED;
	key_ipv4(key, which == PARSE_DST ? (void *)&iph->daddr : (void *)&iph->saddr);
	return PARSE_OK;
}

/*
 * IPv6: the destination, except for a neighbour solicitation on ingress,
 * which goes to a solicited-node multicast address: there the target
 * address in the body names the VM.  Only an ICMPv6 header that directly
 * follows the fixed header is looked at (NDP carries no extension headers).
 */
static __always_inline int parse_ipv6(struct hdr_cursor *c, void *data_end,
				      enum parse_which which, struct nk_steer_addr *key,
				      int *reply)
{
	struct ipv6hdr *ip6h = c->pos;
	struct icmp6_ns *ns;
	__u8 *type;

	if ((void *)(ip6h + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip6h->version != 6)
		return PARSE_MALFORMED;
	if (which == PARSE_SRC) {
		key_ipv6(key, &ip6h->saddr);
		return PARSE_OK;
	}
	c->pos = ip6h + 1;
	if (ip6h->nexthdr != IPPROTO_ICMPV6) {
		key_ipv6(key, &ip6h->daddr);
		return PARSE_OK;
	}
	/* type, code and checksum start every ICMPv6 message */
	type = c->pos;
	if (c->pos + 4 > data_end)
		return PARSE_MALFORMED;
	if (*type != NK_ICMPV6_NS) {
		key_ipv6(key, &ip6h->daddr);
		*reply = *type == NK_ICMPV6_NA;
		return PARSE_OK;
	}
	ns = c->pos;
	if ((void *)(ns + 1) > data_end)
		return PARSE_MALFORMED;
	key_ipv6(key, ns->target);
	return PARSE_OK;
}

/* The whole frame down to the address that picks the VM; *reply: 1 for
 * a neighbour reply (ARP reply; ICMPv6 neighbour advertisement on
 * ingress), else 0. */
static __always_inline int parse_frame(void *data, void *data_end, enum parse_which which,
				       struct nk_steer_addr *key, int *reply)
{
	struct hdr_cursor c = { .pos = data };
	__be16 proto;
	int ret;

	*reply = 0;
	ret = parse_eth(&c, data_end, &proto);
	if (ret)
		return ret;
	switch (proto) {
	case bpf_htons(ETH_P_ARP):
		return parse_arp(&c, data_end, which, key, reply);
	case bpf_htons(ETH_P_IP):
		return parse_ipv4(&c, data_end, which, key);
	case bpf_htons(ETH_P_IPV6):
		return parse_ipv6(&c, data_end, which, key, reply);
	default:
		return PARSE_UNKNOWN;
	}
}

/*
 * The frame's TCP or UDP flow as seen from the VM (which: PARSE_DST on
 * ingress, the destination is the VM; PARSE_SRC on egress, the source
 * is): PARSE_OK with f filled, PARSE_UNKNOWN for
 * anything else (ARP, ICMP, a non-first IPv4 fragment, IPv6 extension
 * headers) and PARSE_MALFORMED for a header that does not fit.
 */
struct l4_ports {
	__be16 source;
	__be16 dest;
};

#define NK_TCP_FLAGS_OFF	13	/* byte of CWR..FIN in the TCP header */
#define NK_TCP_SYN		0x02
#define NK_TCP_ACK		0x10

/* *syn is 1 for a TCP segment with SYN and without ACK. */
static __always_inline int parse_flow(void *data, void *data_end, enum parse_which which,
				      struct nk_steer_flow *f, int *syn)
{
	struct hdr_cursor c = { .pos = data };
	struct l4_ports *l4;
	__be16 proto;
	__u8 l4proto;
	int ret;

	ret = parse_eth(&c, data_end, &proto);
	if (ret)
		return ret;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = c.pos;

		if ((void *)(iph + 1) > data_end || iph->ihl < 5)
			return PARSE_MALFORMED;
		if (iph->frag_off & bpf_htons(0x1fff))
			return PARSE_UNKNOWN;	/* no ports in a later fragment */
		l4proto = iph->protocol;
		f->family = NK_STEER_AF_INET;
		__builtin_memcpy(f->vm_addr, which == PARSE_DST ? &iph->daddr : &iph->saddr, 4);
		__builtin_memcpy(f->remote_addr, which == PARSE_DST ? &iph->saddr : &iph->daddr, 4);
		c.pos += iph->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = c.pos;

		if ((void *)(ip6h + 1) > data_end)
			return PARSE_MALFORMED;
		l4proto = ip6h->nexthdr;
		f->family = NK_STEER_AF_INET6;
		__builtin_memcpy(f->vm_addr, which == PARSE_DST ? &ip6h->daddr : &ip6h->saddr, 16);
		__builtin_memcpy(f->remote_addr, which == PARSE_DST ? &ip6h->saddr : &ip6h->daddr, 16);
		c.pos = ip6h + 1;
	} else {
		return PARSE_UNKNOWN;
	}
	if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
		return PARSE_UNKNOWN;
	l4 = c.pos;
	if ((void *)(l4 + 1) > data_end)
		return PARSE_MALFORMED;
	f->proto = l4proto;
	f->vm_port = which == PARSE_DST ? l4->dest : l4->source;
	f->remote_port = which == PARSE_DST ? l4->source : l4->dest;
	*syn = 0;
	if (l4proto == IPPROTO_TCP) {
		__u8 *fl = c.pos + NK_TCP_FLAGS_OFF;

		if ((void *)(fl + 1) > data_end)
			return PARSE_MALFORMED;
		*syn = (*fl & (NK_TCP_SYN | NK_TCP_ACK)) == NK_TCP_SYN;
	}
	return PARSE_OK;
}

#endif /* NK_BPF_PARSE_H */
