// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * BPF_PROG_TEST_RUN tests of the XDP steering programs (bpf/steer.bpf.c)
 * through their userspace side (lib/steer_maps.c), in the manner of the
 * kernel's selftests/bpf/prog_tests: a fixture table of hand-written frames,
 * each with its expected XDP verdict, redirect target and counter deltas.
 *
 * The test runs in a network namespace of its own (unshare; it vanishes
 * with the process) holding veth pairs for the uplink and three NSMs, and
 * pins its maps in a temporary directory under /sys/fs/bpf, removed at the
 * end.  Each row runs twice:
 *   1. plain BPF_PROG_TEST_RUN: the verdict, and the global, per-VM and
 *      per-NSM counters (all of them: exactly the expected ones move);
 *   2. for XDP_REDIRECT rows, BPF_F_TEST_XDP_LIVE_FRAMES: the frame is
 *      really redirected, and exactly the expected veth's peer receives it.
 * Then checks of the API (address conflicts, vm/nsm removal, reopening the
 * pinned maps as a restarted nkd would) and of BTF: `bpftool -j map dump
 * pinned` of every populated map shows field names.
 *
 * Prints PASS/FAIL per check and "N passed, N failed"; exits 1 on failure,
 * 4 (skip) with the reason on stderr when BPF or namespaces are unavailable.
 * NK_KEEP=1 leaves the maps pinned (for bpftool); NK_DEBUG=1 shows libbpf's
 * messages.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "nkaddr.h"
#include "nknetns.h"
#include "steer_maps.h"

#define KSFT_SKIP	4
#define PKT_MAX		256

static int passed, failed;

/* ---- the topology: veth pairs in the test's own netns ---- */

enum dev { DEV_NONE, DEV_UPLINK, DEV_NSMA, DEV_NSMB, DEV_NSMX, DEV_NSMC, DEV_LO, DEV_MAX };

static const char *const dev_name[DEV_MAX] = {
	[DEV_UPLINK] = "nkup0", [DEV_NSMA] = "nknsma", [DEV_NSMB] = "nknsmb",
	[DEV_NSMX] = "nknsmx", [DEV_NSMC] = "nknsmc", [DEV_LO] = "lo",
};
static const char *const peer_name[DEV_MAX] = {
	[DEV_UPLINK] = "nkup0p", [DEV_NSMA] = "nknsmap", [DEV_NSMB] = "nknsmbp",
	[DEV_NSMX] = "nknsmxp", [DEV_NSMC] = "nknsmcp",
};
static int ifindex[DEV_MAX];

/* NSM ids and VM ids of the fixture's multiplexing table. */
enum {
	NSM_A = 1,	/* kernel, nknsma: VM1, VM2, VM4 */
	NSM_B = 2,	/* kernel, nknsmb: VM3 */
	NSM_X = 3,	/* AF_XDP (not steered yet): VM6 */
	NSM_C = 4,	/* kernel, devmap slot emptied behind its back: VM7 */
	NSM_GONE = 7,	/* never configured: VM5 */
	NSM_SNAP = 8,	/* NSM ids 0..7 are compared */
};
enum { VM1 = 1, VM2, VM3, VM4, VM5, VM6, VM7, VM9 = 9, VM_SNAP = 10 };

struct vm_setup {
	__u32 id;
	__u32 nsm;
	const char *addrs[3];
};

static const struct vm_setup vm_setup[] = {
	{ VM1, NSM_A, { "10.0.0.1", "fd00::1" } },
	{ VM2, NSM_A, { "10.0.0.2" } },
	{ VM3, NSM_B, { "10.0.0.3", "fd00::3" } },
	{ VM4, NSM_A, { "10.0.0.4" } },		/* policy drop_all */
	{ VM5, NSM_GONE, { "10.0.0.5" } },
	{ VM6, NSM_X, { "10.0.0.6" } },
	{ VM7, NSM_C, { "10.0.0.7" } },
};

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd) == 0 ? 0 : -1;
}

static int write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	int ret = 0;

	if (!f)
		return -errno;
	if (fputs(s, f) < 0)
		ret = -EIO;
	if (fclose(f))
		ret = -errno;
	return ret;
}

/* A netns of our own with the veths; IPv6 off so nothing sends on its own. */
static int topology_up(void)
{
	int d;

	if (unshare(CLONE_NEWNET)) {
		fprintf(stderr, "steer_test: cannot create a network namespace: %s\n",
			strerror(errno));
		return -1;
	}
	write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
	write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
	if (run("ip link set lo up"))
		return -1;
	for (d = DEV_UPLINK; d <= DEV_NSMC; d++) {
		if (run("ip link add %s type veth peer name %s && ip link set %s up && ip link set %s up",
			dev_name[d], peer_name[d], dev_name[d], peer_name[d]))
			return -1;
		/* the peer receives native XDP redirects only with NAPI (GRO) */
		if (nk_veth_enable_gro(peer_name[d])) {
			fprintf(stderr, "steer_test: cannot enable GRO on %s\n", peer_name[d]);
			return -1;
		}
	}
	for (d = DEV_UPLINK; d < DEV_MAX; d++) {
		ifindex[d] = if_nametoindex(dev_name[d]);
		if (!ifindex[d])
			return -1;
	}
	return 0;
}

/* rx_packets of every peer (the receiving end of a redirect) */
static void peer_rx(__u64 rx[DEV_MAX])
{
	struct ifaddrs *ifa, *i;
	int d;

	memset(rx, 0, sizeof(__u64) * DEV_MAX);
	if (getifaddrs(&ifa))
		return;
	for (i = ifa; i; i = i->ifa_next) {
		const struct rtnl_link_stats *s = i->ifa_data;

		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_PACKET || !s)
			continue;
		for (d = DEV_UPLINK; d < DEV_MAX; d++)
			if (peer_name[d] && !strcmp(i->ifa_name, peer_name[d]))
				rx[d] = s->rx_packets;
	}
	freeifaddrs(ifa);
}

/* ---- frames ---- */

struct pkt {
	__u8 b[PKT_MAX];
	size_t len;
};

static const __u8 mac_bcast[ETH_ALEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const __u8 mac_host[ETH_ALEN] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x01 };
static const __u8 mac_peer[ETH_ALEN] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x02 };

static void *put(struct pkt *p, size_t n)
{
	void *q = p->b + p->len;

	if (p->len + n > PKT_MAX)
		die("steer_test: fixture frame too long");
	p->len += n;
	return q;
}

static void put16(struct pkt *p, __u16 v)
{
	v = htons(v);
	memcpy(put(p, 2), &v, 2);
}

static void put_addr(struct pkt *p, int af, const char *s)
{
	if (inet_pton(af, s, put(p, af == AF_INET ? 4 : 16)) != 1)
		die("steer_test: bad fixture address %s", s);
}

static void put_eth(struct pkt *p, const __u8 *dst, __u16 proto)
{
	memcpy(put(p, ETH_ALEN), dst, ETH_ALEN);
	memcpy(put(p, ETH_ALEN), mac_peer, ETH_ALEN);
	put16(p, proto);
}

/* One VLAN tag: TCI (vid), then the next ethertype. */
static void put_tag(struct pkt *p, __u16 vid, __u16 next)
{
	put16(p, vid);
	put16(p, next);
}

/* IPv4 header (ihl 5) and 8 bytes of UDP-like payload. */
static void put_ipv4(struct pkt *p, const char *src, const char *dst)
{
	__u8 *h = put(p, 12);

	h[0] = 0x45;
	h[3] = 28;		/* tot_len */
	h[8] = 64;		/* ttl */
	h[9] = 17;		/* udp */
	put_addr(p, AF_INET, src);
	put_addr(p, AF_INET, dst);
	put(p, 8);
}

/* IPv6 header; payload_len bytes follow, written by the caller. */
static void put_ipv6(struct pkt *p, const char *src, const char *dst, __u8 nexthdr,
		     __u16 payload_len)
{
	__u8 *h = put(p, 8);

	h[0] = 0x60;
	h[4] = payload_len >> 8;
	h[5] = payload_len & 0xff;
	h[6] = nexthdr;
	h[7] = 255;
	put_addr(p, AF_INET6, src);
	put_addr(p, AF_INET6, dst);
}

static void put_arp(struct pkt *p, __u16 op, const char *spa, const char *tpa)
{
	put16(p, 1);		/* Ethernet */
	put16(p, ETH_P_IP);
	*(__u8 *)put(p, 1) = ETH_ALEN;
	*(__u8 *)put(p, 1) = 4;
	put16(p, op);
	memcpy(put(p, ETH_ALEN), mac_peer, ETH_ALEN);
	put_addr(p, AF_INET, spa);
	put(p, ETH_ALEN);
	put_addr(p, AF_INET, tpa);
}

/* Neighbour solicitation for target, to its solicited-node address. */
static void put_ns(struct pkt *p, const char *src, const char *snm, const char *target)
{
	__u8 *h;

	put_ipv6(p, src, snm, 58, 24);
	h = put(p, 8);
	h[0] = 135;
	put_addr(p, AF_INET6, target);
}

/* The fixture frames, one builder each. */
/* IPv4 + TCP 192.0.2.1:40000 -> DST:80 with these flags (0x10 ACK, 0x02 SYN). */
static void put_ipv4_tcp(struct pkt *p, const char *dst, __u8 flags)
{
	__u8 *h = put(p, 12), *t;

	h[0] = 0x45;
	h[3] = 40;		/* tot_len */
	h[8] = 64;		/* ttl */
	h[9] = 6;		/* tcp */
	put_addr(p, AF_INET, "192.0.2.1");
	put_addr(p, AF_INET, dst);
	t = put(p, 20);
	t[0] = 40000 >> 8;
	t[1] = 40000 & 0xff;
	t[3] = 80;
	t[12] = 5 << 4;		/* data offset */
	t[13] = flags;
}

static void f_tcp_vm1(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4_tcp(p, "10.0.0.1", 0x10);
}

static void f_tcp_syn_vm1(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4_tcp(p, "10.0.0.1", 0x02);
}

static void f_tcp_synack_vm1(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4_tcp(p, "10.0.0.1", 0x12);
}

static void f_tcp6_syn_vm1(struct pkt *p)
{
	__u8 *t;

	put_eth(p, mac_host, ETH_P_IPV6);
	put_ipv6(p, "2001:db8::1", "fd00::1", 6, 20);
	t = put(p, 20);
	t[0] = 40000 >> 8;
	t[1] = 40000 & 0xff;
	t[3] = 80;
	t[12] = 5 << 4;		/* data offset */
	t[13] = 0x02;		/* SYN */
}

static void f_ipv4_vm1(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.1");
}

static void f_ipv4_vm2(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.2");
}

static void f_ipv4_vm3(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.3");
}

static void f_ipv4_vm4(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.4");
}

static void f_ipv4_vm5(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.5");
}

static void f_ipv4_vm6(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.6");
}

static void f_ipv4_vm7(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.7");
}

static void f_ipv4_vm9(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.9");
}

static void f_ipv4_unknown(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.99");
}

static void f_ipv6_vm3(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_IPV6);
	put_ipv6(p, "2001:db8::1", "fd00::3", 17, 8);
	put(p, 8);
}

static void f_ipv6_mcast(struct pkt *p)
{
	put_eth(p, mac_bcast, ETH_P_IPV6);
	put_ipv6(p, "fe80::1", "ff02::1", 17, 8);
	put(p, 8);
}

static void f_icmpv6_echo_vm1(struct pkt *p)
{
	__u8 *h;

	put_eth(p, mac_host, ETH_P_IPV6);
	put_ipv6(p, "2001:db8::1", "fd00::1", 58, 8);
	h = put(p, 8);
	h[0] = 128;
}

static void f_arp_req_vm1(struct pkt *p)
{
	put_eth(p, mac_bcast, ETH_P_ARP);
	put_arp(p, 1, "10.0.0.254", "10.0.0.1");
}

static void f_arp_reply_vm3(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_ARP);
	put_arp(p, 2, "10.0.0.254", "10.0.0.3");
}

/* a unicast ARP request (a neighbour's reachability probe) */
static void f_arp_ucast_req_vm3(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_ARP);
	put_arp(p, 1, "10.0.0.254", "10.0.0.3");
}

/* a solicited neighbour advertisement, to vm3's address */
static void f_na_vm3(struct pkt *p)
{
	__u8 *h;

	put_eth(p, mac_host, ETH_P_IPV6);
	put_ipv6(p, "2001:db8::1", "fd00::3", 58, 24);
	h = put(p, 8);
	h[0] = 136;
	h[4] = 0x60;	/* solicited, override */
	put_addr(p, AF_INET6, "2001:db8::1");
}

static void f_arp_reply_unknown(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_ARP);
	put_arp(p, 2, "10.0.0.254", "10.0.0.99");
}

static void f_arp_unknown(struct pkt *p)
{
	put_eth(p, mac_bcast, ETH_P_ARP);
	put_arp(p, 1, "10.0.0.254", "10.0.0.99");
}

static void f_ns_vm1(struct pkt *p)
{
	put_eth(p, mac_bcast, ETH_P_IPV6);
	put_ns(p, "fe80::1", "ff02::1:ff00:1", "fd00::1");
}

static void f_ns_unknown(struct pkt *p)
{
	put_eth(p, mac_bcast, ETH_P_IPV6);
	put_ns(p, "fe80::1", "ff02::1:ff00:99", "fd00::99");
}

static void f_vlan_ipv4_vm3(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_8021Q);
	put_tag(p, 100, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.3");
}

static void f_qinq_ipv4_vm1(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_8021AD);
	put_tag(p, 100, ETH_P_8021Q);
	put_tag(p, 200, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.1");
}

static void f_vlan_ns_vm1(struct pkt *p)
{
	put_eth(p, mac_bcast, ETH_P_8021Q);
	put_tag(p, 100, ETH_P_IPV6);
	put_ns(p, "fe80::1", "ff02::1:ff00:1", "fd00::1");
}

static void f_three_tags(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_8021AD);
	put_tag(p, 100, ETH_P_8021Q);
	put_tag(p, 200, ETH_P_8021Q);
	put_tag(p, 300, ETH_P_IP);
	put_ipv4(p, "192.0.2.1", "10.0.0.1");
}

static void f_lldp(struct pkt *p)
{
	put_eth(p, mac_bcast, 0x88cc);
	put(p, 32);
}

static void f_trunc_vlan(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_8021Q);
	put(p, 2);		/* half a tag */
}

static void f_trunc_qinq(struct pkt *p)
{
	put_eth(p, mac_host, ETH_P_8021AD);
	put_tag(p, 100, ETH_P_8021Q);
	put(p, 3);		/* most of the inner tag */
}

static void f_trunc_ipv4(struct pkt *p)
{
	f_ipv4_vm1(p);
	p->len = ETH_HLEN + 10;	/* ihl says 20 */
}

static void f_ipv4_ihl6_short(struct pkt *p)
{
	f_ipv4_vm1(p);
	p->b[ETH_HLEN] = 0x46;	/* 24-byte header ... */
	p->len = ETH_HLEN + 20;	/* ... in a 20-byte frame */
}

static void f_ipv4_ihl4(struct pkt *p)
{
	f_ipv4_vm1(p);
	p->b[ETH_HLEN] = 0x44;
}

static void f_ipv4_version6(struct pkt *p)
{
	f_ipv4_vm1(p);
	p->b[ETH_HLEN] = 0x65;
}

static void f_ipv4_totlen_short(struct pkt *p)
{
	f_ipv4_vm1(p);
	p->b[ETH_HLEN + 3] = 16;	/* tot_len < header */
}

static void f_trunc_ipv6(struct pkt *p)
{
	f_ipv6_vm3(p);
	p->len = ETH_HLEN + 30;
}

static void f_trunc_arp(struct pkt *p)
{
	f_arp_req_vm1(p);
	p->len = ETH_HLEN + 20;
}

static void f_arp_pln16(struct pkt *p)
{
	f_arp_req_vm1(p);
	p->b[ETH_HLEN + 5] = 16;
}

static void f_trunc_ns(struct pkt *p)
{
	f_ns_vm1(p);
	p->len = ETH_HLEN + 40 + 12;	/* target cut */
}

static void f_trunc_icmpv6(struct pkt *p)
{
	f_ns_vm1(p);
	p->len = ETH_HLEN + 40 + 2;	/* not even type/code/checksum */
}

/* egress: frames from an NSM's stack */
static void f_out_ipv4_vm1(struct pkt *p)
{
	put_eth(p, mac_peer, ETH_P_IP);
	put_ipv4(p, "10.0.0.1", "192.0.2.1");
}

/* TCP VM:SPORT -> REMOTE:443 with these flags, IPv4 or IPv6 (egress) */
static void put_tcp_out(struct pkt *p, int af, const char *vm, const char *remote, int sport,
			__u8 flags)
{
	__u8 *h, *t;

	put_eth(p, mac_host, af == AF_INET ? ETH_P_IP : ETH_P_IPV6);
	if (af == AF_INET) {
		h = put(p, 12);
		h[0] = 0x45;
		h[3] = 40;	/* tot_len */
		h[8] = 64;	/* ttl */
		h[9] = 6;	/* tcp */
		put_addr(p, AF_INET, vm);
		put_addr(p, AF_INET, remote);
	} else {
		put_ipv6(p, vm, remote, 6, 20);
	}
	t = put(p, 20);
	t[0] = sport >> 8;
	t[1] = sport & 0xff;
	t[2] = 443 >> 8;
	t[3] = 443 & 0xff;
	t[12] = 5 << 4;		/* data offset */
	t[13] = flags;
}

static void f_out_tcp_syn_vm1(struct pkt *p)
{
	put_tcp_out(p, AF_INET, "10.0.0.1", "192.0.2.1", 40001, 0x02);
}

static void f_out_tcp_ack_vm1(struct pkt *p)
{
	put_tcp_out(p, AF_INET, "10.0.0.1", "192.0.2.1", 40002, 0x10);
}

static void f_out_tcp_synack_vm1(struct pkt *p)
{
	put_tcp_out(p, AF_INET, "10.0.0.1", "192.0.2.1", 40003, 0x12);
}

static void f_out_tcp6_syn_vm1(struct pkt *p)
{
	put_tcp_out(p, AF_INET6, "fd00::1", "2001:db8::1", 40001, 0x02);
}

/* the remote's answer to f_out_tcp_syn_vm1's SYN (ingress) */
static void f_tcp_synack_to_40001(struct pkt *p)
{
	__u8 *t;

	put_eth(p, mac_host, ETH_P_IP);
	put_ipv4_tcp(p, "10.0.0.1", 0x12);
	t = p->b + p->len - 20;
	t[0] = 443 >> 8;
	t[1] = 443 & 0xff;
	t[2] = 40001 >> 8;
	t[3] = 40001 & 0xff;
}

static void f_out_ipv4_vm3(struct pkt *p)
{
	put_eth(p, mac_peer, ETH_P_IP);
	put_ipv4(p, "10.0.0.3", "192.0.2.1");
}

static void f_out_ipv4_vm4(struct pkt *p)
{
	put_eth(p, mac_peer, ETH_P_IP);
	put_ipv4(p, "10.0.0.4", "192.0.2.1");
}

static void f_out_ipv6_vm1(struct pkt *p)
{
	put_eth(p, mac_peer, ETH_P_IPV6);
	put_ipv6(p, "fd00::1", "2001:db8::1", 17, 8);
	put(p, 8);
}

static void f_out_arp_vm3(struct pkt *p)
{
	put_eth(p, mac_bcast, ETH_P_ARP);
	put_arp(p, 1, "10.0.0.3", "10.0.0.254");
}

static void f_out_ns_linklocal(struct pkt *p)
{
	put_eth(p, mac_bcast, ETH_P_IPV6);
	put_ns(p, "fe80::2", "ff02::1:ff00:fe", "fd00::fe");
}

static void f_out_lldp(struct pkt *p)
{
	put_eth(p, mac_bcast, 0x88cc);
	put(p, 32);
}

/* ---- the fixture table ---- */

enum count { C_RX, C_TX, C_PASS, C_DROP };

#define F_MISS_DROP	0x1	/* steer_cfg miss_action = DROP for this row */
#define F_NO_UPLINK	0x2	/* uplink_dev slot empty for this row */
#define NO_NSM		(-1)

struct fixture {
	const char *name;
	void (*build)(struct pkt *p);
	enum nk_steer_prog prog;
	enum dev from;		/* ingress ifindex (egress: the NSM veth) */
	unsigned int flags;
	__u32 verdict;
	enum dev target;	/* XDP_REDIRECT: whose peer must receive it */
	enum count count;	/* which counter moves ... */
	int reason;		/* ... (C_DROP: enum nk_drop_reason) */
	__u32 vm;		/* ... for this VM too (0: none) */
	int nsm;		/* ... and this NSM (NO_NSM: none) */
	const __u8 *dmac;	/* the frame leaves with this destination MAC */
};

#define IN(n, b)	.name = n, .build = b, .prog = NK_STEER_INGRESS, .from = DEV_UPLINK
#define OUT(n, b, d)	.name = n, .build = b, .prog = NK_STEER_EGRESS, .from = d
#define REDIR(t)	.verdict = XDP_REDIRECT, .target = t
#define PASS_		.verdict = XDP_PASS, .count = C_PASS, .nsm = NO_NSM
#define DROP(r)		.verdict = XDP_DROP, .count = C_DROP, .reason = r

static const struct fixture fixtures[] = {
	/* ingress: steered */
	{ IN("ipv4 to vm1 -> nsm A", f_ipv4_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("ipv4 to vm2 -> nsm A", f_ipv4_vm2), REDIR(DEV_NSMA), .count = C_RX, .vm = VM2, .nsm = NSM_A },
	{ IN("ipv4 to vm3 -> nsm B", f_ipv4_vm3), REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B },
	{ IN("ipv6 to vm3 -> nsm B", f_ipv6_vm3), REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B },
	{ IN("icmpv6 echo to vm1 -> nsm A", f_icmpv6_echo_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("arp request (broadcast) for vm1 -> nsm A", f_arp_req_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("arp reply to vm3 -> nsm B", f_arp_reply_vm3), REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B },
	{ IN("unicast arp request for vm3 -> nsm B", f_arp_ucast_req_vm3), REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B },
	{ IN("ipv6 na to vm3 -> nsm B", f_na_vm3), REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B },
	{ IN("ipv6 ns for vm1 target -> nsm A", f_ns_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("802.1Q ipv4 to vm3 -> nsm B", f_vlan_ipv4_vm3), REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B },
	{ IN("QinQ ipv4 to vm1 -> nsm A", f_qinq_ipv4_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("802.1Q ipv6 ns for vm1 -> nsm A", f_vlan_ns_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("tcp to vm1 -> nsm A", f_tcp_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("tcp syn to vm1 -> nsm A", f_tcp_syn_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("tcp syn-ack to vm1 -> nsm A", f_tcp_synack_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ IN("tcp6 syn to vm1 -> nsm A", f_tcp6_syn_vm1), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	/* ingress: for no VM */
	{ IN("ipv4 unknown address: pass", f_ipv4_unknown), PASS_ },
	{ IN("ipv4 unknown address, miss drop", f_ipv4_unknown), .flags = F_MISS_DROP, DROP(NK_DROP_NO_VM), .nsm = NO_NSM },
	{ IN("arp for unknown address: pass", f_arp_unknown), PASS_ },
	{ IN("arp reply to unknown address", f_arp_reply_unknown), PASS_ },
	{ IN("arp for unknown address, miss drop", f_arp_unknown), .flags = F_MISS_DROP, DROP(NK_DROP_NO_VM), .nsm = NO_NSM },
	{ IN("ipv6 ns for unknown target: pass", f_ns_unknown), PASS_ },
	{ IN("ipv6 to ff02::1: pass", f_ipv6_mcast), PASS_ },
	{ IN("lldp: pass", f_lldp), PASS_ },
	{ IN("lldp, miss drop", f_lldp), .flags = F_MISS_DROP, DROP(NK_DROP_UNKNOWN_PROTO), .nsm = NO_NSM },
	{ IN("three vlan tags: not parsed, pass", f_three_tags), PASS_ },
	/* ingress: truncated and malformed */
	{ IN("truncated ethernet (half a vlan tag)", f_trunc_vlan), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("truncated QinQ inner tag", f_trunc_qinq), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("truncated ipv4 (10 of 20 bytes)", f_trunc_ipv4), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("ipv4 ihl 6 in a 20-byte frame", f_ipv4_ihl6_short), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("ipv4 ihl 4", f_ipv4_ihl4), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("ipv4 header with version 6", f_ipv4_version6), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("ipv4 tot_len below header", f_ipv4_totlen_short), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("truncated ipv6 (30 of 40 bytes)", f_trunc_ipv6), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("truncated arp (20 of 28 bytes)", f_trunc_arp), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("arp with plen 16", f_arp_pln16), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("truncated ns (target cut)", f_trunc_ns), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	{ IN("truncated icmpv6 header", f_trunc_icmpv6), DROP(NK_DROP_MALFORMED), .nsm = NO_NSM },
	/* ingress: VM found, but ... */
	{ IN("policy drop_all for vm4", f_ipv4_vm4), DROP(NK_DROP_POLICY), .vm = VM4, .nsm = NSM_A },
	{ IN("vm5 on an unconfigured nsm", f_ipv4_vm5), DROP(NK_DROP_NO_NSM), .vm = VM5, .nsm = NSM_GONE },
	{ IN("vm6 on an AF_XDP nsm", f_ipv4_vm6), DROP(NK_DROP_NSM_KIND), .vm = VM6, .nsm = NSM_X },
	{ IN("vm7 whose devmap slot is empty", f_ipv4_vm7), DROP(NK_DROP_REDIRECT_FAILED), .vm = VM7, .nsm = NSM_C },
	{ IN("address of a vm not in vms", f_ipv4_vm9), DROP(NK_DROP_NO_NSM), .nsm = NO_NSM },
	/* egress */
	{ OUT("egress ipv4 from vm1 via nsm A", f_out_ipv4_vm1, DEV_NSMA), REDIR(DEV_UPLINK), .count = C_TX, .vm = VM1, .nsm = NSM_A },
	{ OUT("egress ipv6 from vm1 via nsm A", f_out_ipv6_vm1, DEV_NSMA), REDIR(DEV_UPLINK), .count = C_TX, .vm = VM1, .nsm = NSM_A },
	{ OUT("egress arp from vm3 via nsm B", f_out_arp_vm3, DEV_NSMB), REDIR(DEV_UPLINK), .count = C_TX, .vm = VM3, .nsm = NSM_B },
	{ OUT("egress ns from a link-local address", f_out_ns_linklocal, DEV_NSMB), REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_B },
	{ OUT("egress lldp: nsm counts it", f_out_lldp, DEV_NSMA), REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A },
	{ OUT("egress with vm3's address from nsm A: not vm3's", f_out_ipv4_vm3, DEV_NSMA), REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A },
	{ OUT("egress tcp syn from vm1 via nsm A", f_out_tcp_syn_vm1, DEV_NSMA), REDIR(DEV_UPLINK), .count = C_TX, .vm = VM1, .nsm = NSM_A },
	{ OUT("egress tcp ack from vm1 via nsm A", f_out_tcp_ack_vm1, DEV_NSMA), REDIR(DEV_UPLINK), .count = C_TX, .vm = VM1, .nsm = NSM_A },
	{ OUT("egress tcp syn-ack from vm1 via nsm A", f_out_tcp_synack_vm1, DEV_NSMA), REDIR(DEV_UPLINK), .count = C_TX, .vm = VM1, .nsm = NSM_A },
	{ OUT("egress tcp6 syn from vm1 via nsm A", f_out_tcp6_syn_vm1, DEV_NSMA), REDIR(DEV_UPLINK), .count = C_TX, .vm = VM1, .nsm = NSM_A },
	{ IN("tcp syn-ack to vm1:40001 -> nsm A", f_tcp_synack_to_40001), REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A },
	{ OUT("egress policy drop_all for vm4", f_out_ipv4_vm4, DEV_NSMA), DROP(NK_DROP_POLICY), .vm = VM4, .nsm = NSM_A },
	/* an NSM vm4 left (draining its connections after a move) */
	{ OUT("egress policy drop_all for vm4 from nsm B too", f_out_ipv4_vm4, DEV_NSMB), DROP(NK_DROP_POLICY), .nsm = NSM_B },
	{ OUT("egress truncated ipv4", f_trunc_ipv4, DEV_NSMA), DROP(NK_DROP_MALFORMED), .nsm = NSM_A },
	{ OUT("egress from a non-nsm interface", f_out_ipv4_vm1, DEV_LO), DROP(NK_DROP_NO_NSM), .nsm = NO_NSM },
	{ OUT("egress without an uplink", f_out_ipv4_vm1, DEV_NSMA), .flags = F_NO_UPLINK, DROP(NK_DROP_REDIRECT_FAILED), .vm = VM1, .nsm = NSM_A },
};

/* ---- running a row ---- */

struct snapshot {
	struct nk_steer_counters global;
	struct nk_steer_counters vm[VM_SNAP];
	bool vm_exists[VM_SNAP];
	struct nk_steer_counters nsm[NSM_SNAP];
};

static int snapshot(struct nk_steer *st, struct snapshot *s)
{
	__u32 i;
	int ret;

	memset(s, 0, sizeof(*s));
	ret = nk_steer_global_stats(st, &s->global);
	for (i = 1; i < VM_SNAP && !ret; i++) {
		ret = nk_steer_vm_stats(st, i, &s->vm[i]);
		s->vm_exists[i] = ret == 0;
		if (ret == -ENOENT)
			ret = 0;
	}
	for (i = 0; i < NSM_SNAP && !ret; i++)
		ret = nk_steer_nsm_stats(st, i, &s->nsm[i]);
	return ret;
}

static void expect(struct nk_steer_counters *c, const struct fixture *f, __u64 len)
{
	switch (f->count) {
	case C_RX:
		c->rx_packets++;
		c->rx_bytes += len;
		break;
	case C_TX:
		c->tx_packets++;
		c->tx_bytes += len;
		break;
	case C_PASS:
		c->pass_packets++;
		c->pass_bytes += len;
		break;
	case C_DROP:
		c->drops[f->reason]++;
		break;
	}
}

/* Print what differs; returns the number of differing fields. */
static int diff(const char *who, const struct nk_steer_counters *want,
		const struct nk_steer_counters *got)
{
	static const char *const names[] = { "rx_packets", "rx_bytes", "tx_packets",
					     "tx_bytes", "pass_packets", "pass_bytes" };
	const __u64 *w = &want->rx_packets, *g = &got->rx_packets;
	int i, n = 0;

	for (i = 0; i < 6; i++)
		if (w[i] != g[i]) {
			printf("    %s %s: want %llu, got %llu\n", who, names[i],
			       (unsigned long long)w[i], (unsigned long long)g[i]);
			n++;
		}
	for (i = 0; i < NK_DROP_SLOTS; i++)
		if (want->drops[i] != got->drops[i]) {
			printf("    %s drops[%s]: want %llu, got %llu\n", who,
			       nk_drop_reason_name(i), (unsigned long long)want->drops[i],
			       (unsigned long long)got->drops[i]);
			n++;
		}
	return n;
}

static int check_counters(const struct fixture *f, const struct snapshot *before,
			  const struct snapshot *after, __u64 len)
{
	struct snapshot want = *before;
	char who[32];
	int i, n = 0;

	expect(&want.global, f, len);
	if (f->vm)
		expect(&want.vm[f->vm], f, len);
	if (f->nsm != NO_NSM)
		expect(&want.nsm[f->nsm], f, len);
	n += diff("global", &want.global, &after->global);
	for (i = 1; i < VM_SNAP; i++) {
		snprintf(who, sizeof(who), "vm%d", i);
		if (want.vm_exists[i] != after->vm_exists[i]) {
			printf("    %s counters appeared or vanished\n", who);
			n++;
		}
		n += diff(who, &want.vm[i], &after->vm[i]);
	}
	for (i = 0; i < NSM_SNAP; i++) {
		snprintf(who, sizeof(who), "nsm%d", i);
		n += diff(who, &want.nsm[i], &after->nsm[i]);
	}
	return n;
}

static const char *verdict_name(__u32 v)
{
	switch (v) {
	case XDP_ABORTED:	return "XDP_ABORTED";
	case XDP_DROP:		return "XDP_DROP";
	case XDP_PASS:		return "XDP_PASS";
	case XDP_TX:		return "XDP_TX";
	case XDP_REDIRECT:	return "XDP_REDIRECT";
	}
	return "?";
}

static __u64 now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

static int check_delivery(const __u64 rx0[DEV_MAX], enum dev target);

/* Run the frame for real (live frames) and see which peer receives it. */
static int check_live(struct nk_steer *st, const struct fixture *f, struct pkt *p,
		      struct xdp_md *ctx)
{
	struct bpf_test_run_opts opts = {
		.sz = sizeof(opts),
		.data_in = p->b, .data_size_in = p->len,
		.ctx_in = ctx, .ctx_size_in = sizeof(*ctx),
		.flags = BPF_F_TEST_XDP_LIVE_FRAMES, .repeat = 1,
	};
	__u64 rx0[DEV_MAX];
	int ret;

	peer_rx(rx0);
	ret = bpf_prog_test_run_opts(nk_steer_prog_fd(st, f->prog), &opts);
	if (ret) {
		printf("    live run: %s\n", strerror(-ret));
		return 1;
	}
	return check_delivery(rx0, f->target);
}

/* Exactly target's peer received one frame since rx0; others none. */
static int check_delivery(const __u64 rx0[DEV_MAX], enum dev target)
{
	__u64 rx[DEV_MAX], deadline;
	int d, n = 0;

	/* the peer's NAPI delivers asynchronously */
	deadline = now_ms() + (target == DEV_NONE ? 200 : 2000);
	do {
		usleep(2000);
		peer_rx(rx);
	} while ((target == DEV_NONE || rx[target] == rx0[target]) && now_ms() < deadline);
	usleep(20000);
	peer_rx(rx);
	for (d = DEV_UPLINK; d < DEV_MAX; d++) {
		__u64 want = rx0[d] + (d == (int)target);

		if (!peer_name[d] || rx[d] == want)
			continue;
		printf("    live: %s received %llu frame(s), want %llu\n", peer_name[d],
		       (unsigned long long)(rx[d] - rx0[d]), (unsigned long long)(want - rx0[d]));
		n++;
	}
	return n;
}

static void report(const char *name, int nfail)
{
	if (nfail) {
		failed++;
		printf("FAIL %s\n", name);
	} else {
		passed++;
		printf("PASS %s\n", name);
	}
	fflush(stdout);
}

static int run_fixture(struct nk_steer *st, const struct fixture *f)
{
	struct nk_steer_config cfg = { .miss_action = NK_MISS_PASS };
	struct xdp_md ctx = { .ingress_ifindex = ifindex[f->from] };
	struct snapshot before, after;
	struct pkt p = {}, out = {};
	int n = 0, ret;
	struct bpf_test_run_opts opts = {
		.sz = sizeof(opts), .ctx_in = &ctx, .ctx_size_in = sizeof(ctx),
	};

	f->build(&p);
	ctx.data_end = p.len;	/* the kernel wants the frame length here */
	opts.data_in = p.b;
	opts.data_size_in = p.len;
	opts.data_out = out.b;
	opts.data_size_out = sizeof(out.b);
	if (f->flags & F_MISS_DROP)
		cfg.miss_action = NK_MISS_DROP;
	if (nk_steer_config_set(st, &cfg) ||
	    nk_steer_uplink_set(st, f->flags & F_NO_UPLINK ? 0 : ifindex[DEV_UPLINK]))
		die("steer_test: cannot configure the row");

	if (snapshot(st, &before))
		die("steer_test: cannot read counters");
	ret = bpf_prog_test_run_opts(nk_steer_prog_fd(st, f->prog), &opts);
	if (ret) {
		printf("    test run: %s\n", strerror(-ret));
		n++;
		goto out;
	}
	if (opts.retval != f->verdict) {
		printf("    verdict %s, want %s\n", verdict_name(opts.retval),
		       verdict_name(f->verdict));
		n++;
	}
	if (f->dmac && memcmp(out.b, f->dmac, ETH_ALEN)) {
		printf("    destination MAC %02x:%02x:%02x:%02x:%02x:%02x, want %02x:%02x:%02x:%02x:%02x:%02x\n",
		       out.b[0], out.b[1], out.b[2], out.b[3], out.b[4], out.b[5], f->dmac[0],
		       f->dmac[1], f->dmac[2], f->dmac[3], f->dmac[4], f->dmac[5]);
		n++;
	}
	if (snapshot(st, &after))
		die("steer_test: cannot read counters");
	n += check_counters(f, &before, &after, p.len);
	if (!n && f->verdict == XDP_REDIRECT)
		n += check_live(st, f, &p, &ctx);
out:
	report(f->name, n);
	return n;
}

/* Run the row of the table named name (for the API checks); change: its
 * outcome, and another ingress device if change->from is set. */
static int run_named(struct nk_steer *st, const char *name, const struct fixture *change)
{
	size_t i;

	for (i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
		struct fixture f;

		if (strcmp(fixtures[i].name, name))
			continue;
		f = fixtures[i];
		if (change) {
			f.name = change->name;
			f.verdict = change->verdict;
			f.target = change->target;
			f.count = change->count;
			f.reason = change->reason;
			f.vm = change->vm;
			f.nsm = change->nsm;
			f.dmac = change->dmac;
			if (change->from != DEV_NONE)
				f.from = change->from;
		}
		return run_fixture(st, &f);
	}
	die("steer_test: no fixture named %s", name);
}

/* ---- set-up and API checks ---- */

static int setup_tables(struct nk_steer *st, const char *pin_dir)
{
	struct nk_steer_policy drop = { .drop_all = 1 };
	char path[PATH_MAX];
	struct nk_addr a;
	__u32 slot = NSM_C;
	size_t i, j;
	int fd, ret;

	ret = nk_steer_nsm_set(st, NSM_A, NK_NSM_KERNEL, ifindex[DEV_NSMA]) ?:
	      nk_steer_nsm_set(st, NSM_B, NK_NSM_KERNEL, ifindex[DEV_NSMB]) ?:
	      nk_steer_nsm_set(st, NSM_X, NK_NSM_XSK, ifindex[DEV_NSMX]) ?:
	      nk_steer_nsm_set(st, NSM_C, NK_NSM_KERNEL, ifindex[DEV_NSMC]);
	if (ret)
		return ret;
	for (i = 0; i < sizeof(vm_setup) / sizeof(vm_setup[0]); i++) {
		ret = nk_steer_vm_set(st, vm_setup[i].id, vm_setup[i].nsm);
		for (j = 0; !ret && j < 3 && vm_setup[i].addrs[j]; j++) {
			if (nk_addr_parse(&a, vm_setup[i].addrs[j]))
				return -EINVAL;
			ret = nk_steer_addr_add(st, vm_setup[i].id, &a);
		}
		if (ret)
			return ret;
	}
	/* VM9: an address whose VM is not in vms */
	if (nk_addr_parse(&a, "10.0.0.9"))
		return -EINVAL;
	ret = nk_steer_addr_add(st, VM9, &a) ?:
	      nk_steer_policy_set(st, VM4, &drop);
	if (ret)
		return ret;
	/* NSM C's devmap slot disappears behind nkd's back */
	snprintf(path, sizeof(path), "%s/nsm_devs", pin_dir);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return -errno;
	ret = bpf_map_delete_elem(fd, &slot) ? -errno : 0;
	close(fd);
	return ret;
}

struct flow_count {
	const struct nk_steer_flow *key;
	struct nk_steer_flow_nsm val;
	int n;
};

static int flow_count_one(const struct nk_steer_flow *key, const struct nk_steer_flow_nsm *val,
			  void *arg)
{
	struct flow_count *c = arg;

	if (!memcmp(key, c->key, sizeof(*key))) {
		c->val = *val;
		c->n++;
	}
	return 0;
}

/* How many steer_flows entries have this key (0 or 1; -1: no dump). */
static int flow_count(struct nk_steer *st, const struct nk_steer_flow *key)
{
	struct flow_count c = { .key = key };

	if (nk_steer_flow_foreach(st, flow_count_one, &c))
		return -1;
	return c.n;
}

/* Does steer_flows hold exactly val for key? */
static bool flow_is(struct nk_steer *st, const struct nk_steer_flow *key,
		    const struct nk_steer_flow_nsm *val)
{
	struct flow_count c = { .key = key };

	return !nk_steer_flow_foreach(st, flow_count_one, &c) && c.n == 1 &&
	       !memcmp(&c.val, val, sizeof(*val));
}

static int flow_total_one(const struct nk_steer_flow *key, const struct nk_steer_flow_nsm *val,
			  void *arg)
{
	(void)key;
	(void)val;
	(*(int *)arg)++;
	return 0;
}

/* How many steer_flows entries there are (-1: no dump). */
static int flow_total(struct nk_steer *st)
{
	int n = 0;

	return nk_steer_flow_foreach(st, flow_total_one, &n) ? -1 : n;
}

static int drain_count_one(const struct nk_steer_drain *key, const struct nk_steer_flow_nsm *val,
			   void *arg)
{
	(void)key;
	(void)val;
	(*(int *)arg)++;
	return 0;
}

/* VM:vport <- REMOTE:443 as a steer_flows key (the egress fixtures' flows) */
static int out_key(struct nk_steer_flow *key, const char *vm, int vport, const char *remote)
{
	struct nk_addr a, r;

	if (nk_addr_parse(&a, vm) || nk_addr_parse(&r, remote))
		return -1;
	a.port = vport;
	r.port = 443;
	return nk_steer_flow_key(key, IPPROTO_TCP, &a, &r);
}

/*
 * vm1 moved from nsm A to nsm B and drains from A: a TCP SYN that A sends
 * from vm1's address pins its flow to A (with the drain's MAC) while
 * vm_drains registers that drain, and the remote's SYN-ACK follows it.
 * Nothing else pins: no drain registered, a segment that is not a pure
 * SYN, a SYN from the VM's own NSM.  Also while vm1 is still on A, moving
 * (HOLD_SYN).
 */
static void check_egress_pin(struct nk_steer *st, const __u8 *mac_a)
{
	struct nk_steer_flow_nsm val = { .nsm_id = NSM_A };
	struct nk_steer_flow k4, kack, ksynack, k6;
	int n, nd = 0;

	memcpy(val.dmac, mac_a, ETH_ALEN);
	n = out_key(&k4, "10.0.0.1", 40001, "192.0.2.1") != 0;
	n += out_key(&kack, "10.0.0.1", 40002, "192.0.2.1") != 0;
	n += out_key(&ksynack, "10.0.0.1", 40003, "192.0.2.1") != 0;
	n += out_key(&k6, "fd00::1", 40001, "2001:db8::1") != 0;
	report("egress pin: flow keys", n);
	n = flow_count(st, &k4) != 0 || flow_count(st, &kack) != 0 ||
	    flow_count(st, &ksynack) != 0 || flow_count(st, &k6) != 0;
	report("egress pin: the table's rows (vm1 on nsm A, no drain) pinned nothing", n);

	run_named(st, "egress tcp syn from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: tcp syn from vm1 via nsm A it left, no drain registered",
		REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A });
	report("egress pin: ... pins nothing", flow_count(st, &k4) != 0);

	report("egress pin: vm1's drain from nsm A registered (vm_drains)",
	       nk_steer_drain_set(st, VM1, &val) != 0);
	run_named(st, "egress tcp syn from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: tcp syn from vm1 via nsm A it drains from -> uplink",
		REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A });
	report("egress pin: ... pins 10.0.0.1:40001 <- 192.0.2.1:443 to nsm A with the drain's MAC",
	       !flow_is(st, &k4, &val));
	run_named(st, "tcp syn-ack to vm1:40001 -> nsm A", &(struct fixture){
		.name = "egress pin: the remote's syn-ack -> nsm A, dst MAC rewritten",
		REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A, .dmac = mac_a });
	run_named(st, "egress tcp6 syn from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: tcp6 syn from vm1 via nsm A it drains from -> uplink",
		REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A });
	report("egress pin: ... pins [fd00::1]:40001 <- [2001:db8::1]:443 to nsm A",
	       !flow_is(st, &k6, &val));
	run_named(st, "egress tcp ack from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: tcp ack from vm1 via nsm A it drains from -> uplink",
		REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A });
	run_named(st, "egress tcp syn-ack from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: tcp syn-ack from vm1 via nsm A it drains from -> uplink",
		REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A });
	report("egress pin: ... neither an ack nor a syn-ack pins",
	       flow_count(st, &kack) != 0 || flow_count(st, &ksynack) != 0);

	/* a UDP datagram from A pins nothing (only TCP SYNs) */
	nd = flow_total(st);
	run_named(st, "egress ipv4 from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: udp from vm1 via nsm A it drains from -> uplink",
		REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A });
	report("egress pin: ... pins nothing", flow_total(st) != nd);
	nd = 0;

	/* vm1's own NSM (B) sends a SYN with its address: nothing to pin,
	 * even with a (stale) drain of vm1 from B registered */
	n = nk_steer_flow_del(st, &k4) != 0;
	n += nk_steer_drain_set(st, VM1, &(struct nk_steer_flow_nsm){ .nsm_id = NSM_B }) != 0;
	report("egress pin: flow unpinned, a drain of vm1 from nsm B registered too", n);
	run_named(st, "egress tcp syn from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: tcp syn from vm1 via its own nsm B -> uplink",
		.from = DEV_NSMB, REDIR(DEV_UPLINK), .count = C_TX, .vm = VM1, .nsm = NSM_B });
	report("egress pin: ... pins nothing", flow_count(st, &k4) != 0);
	report("egress pin: drain of vm1 from nsm B unregistered",
	       nk_steer_drain_del(st, VM1, NSM_B) != 0);

	/* the drain ends: A's SYNs pin nothing */
	n = nk_steer_drain_del(st, VM1, NSM_A) != 0;
	n += nk_steer_drain_foreach(st, drain_count_one, &nd) != 0 || nd != 0;
	report("egress pin: drain unregistered, vm_drains empty", n);
	run_named(st, "egress tcp syn from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: tcp syn from vm1 via nsm A after the drain",
		REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_A });
	report("egress pin: ... pins nothing", flow_count(st, &k4) != 0);

	/* moving: vm1 still on A with HOLD_SYN, its drain from A registered */
	n = nk_steer_vm_set_flags(st, VM1, NSM_A, NK_STEER_VM_F_HOLD_SYN) != 0;
	n += nk_steer_drain_set(st, VM1, &val) != 0;
	report("egress pin: vm1 on nsm A, moving (HOLD_SYN), drain from A registered", n);
	run_named(st, "egress tcp syn from vm1 via nsm A", &(struct fixture){
		.name = "egress pin: tcp syn from vm1 via nsm A during the move -> uplink",
		REDIR(DEV_UPLINK), .count = C_TX, .vm = VM1, .nsm = NSM_A });
	report("egress pin: ... pins its flow to nsm A", !flow_is(st, &k4, &val));
	/* ... and the move's target, B, registered too: its SYN pins to B */
	{
		struct nk_steer_flow_nsm val_b = { .nsm_id = NSM_B, .dmac = { 2, 0, 0, 0, 0, 0xbb } };

		n = nk_steer_flow_del(st, &k4) != 0;
		n += nk_steer_drain_set(st, VM1, &val_b) != 0;
		report("egress pin: the move's target nsm B registered as well", n);
		run_named(st, "egress tcp syn from vm1 via nsm A", &(struct fixture){
			.name = "egress pin: tcp syn from vm1 via nsm B, the move's target -> uplink",
			.from = DEV_NSMB, REDIR(DEV_UPLINK), .count = C_TX, .nsm = NSM_B });
		report("egress pin: ... pins its flow to nsm B", !flow_is(st, &k4, &val_b));
		report("egress pin: nsm B unregistered", nk_steer_drain_del(st, VM1, NSM_B) != 0);
	}

	n = nk_steer_vm_set(st, VM1, NSM_B) != 0;
	n += nk_steer_drain_del(st, VM1, NSM_A) != 0;
	n += nk_steer_flow_del(st, &k4) != 0 || nk_steer_flow_del(st, &k6) != 0;
	report("egress pin: vm1 back on nsm B, no drain, flows unpinned", n);
}

/* addr:port (IPv4 or IPv6) into ss; its length, or 0. */
static socklen_t sockaddr_of(const char *addr, int port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		return sizeof(*s4);
	}
	if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		return sizeof(*s6);
	}
	return 0;
}

/* A TCP socket bound to addr:port (SO_LINGER 0: no TIME_WAIT), or -1. */
static int tcp_bound(const char *addr, int port)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(addr, port, &ss);
	int fd, one = 1;

	if (!len)
		return -1;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) ||
	    bind(fd, (struct sockaddr *)&ss, len)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A connection from caddr:cport to saddr:sport, its server side open. */
struct tcp_conn {
	int lfd, cfd, afd;
};

static int tcp_conn_open(struct tcp_conn *c, const char *saddr, int sport, const char *caddr,
			 int cport)
{
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(saddr, sport, &ss);

	c->afd = -1;
	c->lfd = tcp_bound(saddr, sport);
	c->cfd = tcp_bound(caddr, cport);
	if (!len || c->lfd < 0 || c->cfd < 0 || listen(c->lfd, 4) ||
	    connect(c->cfd, (struct sockaddr *)&ss, len))
		return -1;
	c->afd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
	return c->afd < 0 ? -1 : 0;
}

/* Close the connection's two ends (with resets), the listener if all. */
static void tcp_conn_close(struct tcp_conn *c, bool all)
{
	if (c->afd >= 0)
		close(c->afd);
	if (c->cfd >= 0)
		close(c->cfd);
	c->afd = c->cfd = -1;
	if (all && c->lfd >= 0) {
		close(c->lfd);
		c->lfd = -1;
	}
}

/*
 * The pinned flow 10.0.0.1:80 <- 192.0.2.1:40000 on nsm A, whose namespace
 * is the test's own (nk_netns_id() of it): a SYN of the flow stays on nsm
 * A while a connection with those ports is open there; with none, or only
 * a listener, its entry is deleted and it goes to the VM's NSM (B).  Then
 * the same for [fd00::1]:80 <- [2001:db8::1]:40000.
 */
static void check_syn_lookup(struct nk_steer *st, const struct nk_steer_flow *key,
			     const struct nk_steer_flow_nsm *val, const __u8 *mac_a)
{
	struct nk_addr local6 = { .family = NK_AF_INET6, .port = 80 };
	struct nk_addr remote6 = { .family = NK_AF_INET6, .port = 40000 };
	struct nk_steer_flow key6;
	struct tcp_conn c;
	int nsfd, id = -1, n;

	nsfd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	n = nsfd < 0 || nk_netns_id(nsfd, &id) || id < 0;
	if (nsfd >= 0)
		close(nsfd);
	report("api: nk_netns_id of the test's netns", n);
	n = nk_steer_nsm_netns_set(st, NSM_A, id) != 0;
	n += run("ip addr add 10.0.0.1/32 dev lo && ip addr add 192.0.2.1/32 dev lo") != 0;
	report("api: nsm A's netns is the test's, with the flow's addresses on lo", n);
	if (n)
		return;

	/* a connection with the flow's ports, open in nsm A's netns */
	report("api: a connection 192.0.2.1:40000 -> 10.0.0.1:80 in nsm A's netns",
	       tcp_conn_open(&c, "10.0.0.1", 80, "192.0.2.1", 40000) != 0);
	run_named(st, "tcp syn to vm1 -> nsm A", &(struct fixture){
		.name = "api: tcp syn of the pinned flow, its connection open on nsm A -> nsm A",
		REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A, .dmac = mac_a });
	report("api: ... and its entry stays", flow_count(st, key) != 1);

	/* only the listener left (SO_LINGER 0: no TIME_WAIT either) */
	tcp_conn_close(&c, false);
	run_named(st, "tcp syn to vm1 -> nsm A", &(struct fixture){
		.name = "api: tcp syn of the pinned flow, only a listener on nsm A -> nsm B, MAC unchanged",
		REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B, .dmac = mac_host });
	report("api: ... and the program deleted the flow's entry", flow_count(st, key) != 0);

	/* nothing at all; a syn-ack, never a new connection, still follows */
	report("api: flow pinned once more", nk_steer_flow_set(st, key, val) != 0);
	tcp_conn_close(&c, true);
	run_named(st, "tcp syn-ack to vm1 -> nsm A", &(struct fixture){
		.name = "api: tcp syn-ack of the pinned flow, no socket on nsm A -> nsm A",
		REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A, .dmac = mac_a });
	report("api: ... and its entry stays", flow_count(st, key) != 1);
	run_named(st, "tcp syn to vm1 -> nsm A", &(struct fixture){
		.name = "api: tcp syn of the pinned flow, no socket on nsm A -> nsm B, MAC unchanged",
		REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B, .dmac = mac_host });
	report("api: ... and the program deleted the flow's entry", flow_count(st, key) != 0);

	/* IPv6, on lo only (the test keeps IPv6 off elsewhere) */
	inet_pton(AF_INET6, "fd00::1", local6.addr);
	inet_pton(AF_INET6, "2001:db8::1", remote6.addr);
	n = nk_steer_flow_key(&key6, IPPROTO_TCP, &local6, &remote6) != 0;
	n += nk_steer_flow_set(st, &key6, val) != 0;
	n += write_file("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "0") != 0;
	n += run("ip -6 addr add fd00::1/128 dev lo nodad && "
		 "ip -6 addr add 2001:db8::1/128 dev lo nodad") != 0;
	report("api: flow [fd00::1]:80 <- [2001:db8::1]:40000 pinned to nsm A, IPv6 on lo", n);
	if (!n) {
		report("api: an IPv6 connection with its ports in nsm A's netns",
		       tcp_conn_open(&c, "fd00::1", 80, "2001:db8::1", 40000) != 0);
		run_named(st, "tcp6 syn to vm1 -> nsm A", &(struct fixture){
			.name = "api: tcp6 syn of the pinned flow, its connection open on nsm A -> nsm A",
			REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A, .dmac = mac_a });
		report("api: ... and its entry stays", flow_count(st, &key6) != 1);
		tcp_conn_close(&c, true);
		run_named(st, "tcp6 syn to vm1 -> nsm A", &(struct fixture){
			.name = "api: tcp6 syn of the pinned flow, no socket on nsm A -> nsm B, MAC unchanged",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B, .dmac = mac_host });
		report("api: ... and the program deleted the flow's entry", flow_count(st, &key6) != 0);
	}

	n = nk_steer_nsm_netns_set(st, NSM_A, NK_STEER_NETNS_NONE) != 0;
	n += run("ip addr del 10.0.0.1/32 dev lo && ip addr del 192.0.2.1/32 dev lo") != 0;
	n += write_file("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "1") != 0;
	report("api: nsm A's netns forgotten, addresses removed, IPv6 off again", n);
}

static void check_api(struct nk_steer *st, const char *pin_dir)
{
	struct nk_steer_counters c1, c2;
	struct nk_steer *st2 = NULL;
	struct nk_addr a;
	int n;

	/* an address belongs to one VM */
	nk_addr_parse(&a, "10.0.0.1");
	report("api: address of vm1 refused to vm3 (EADDRINUSE)",
	       nk_steer_addr_add(st, VM3, &a) != -EADDRINUSE);
	report("api: re-adding vm1's own address is a no-op",
	       nk_steer_addr_add(st, VM1, &a) != 0);
	report("api: vm stats of an unknown vm: ENOENT",
	       nk_steer_vm_stats(st, 4000, &c1) != -ENOENT);

	/* restart: a second instance reuses the pinned maps */
	n = nk_steer_open(pin_dir, &st2) != 0;
	if (!n) {
		nk_steer_vm_stats(st, VM1, &c1);
		n = run_named(st2, "ipv4 to vm1 -> nsm A", &(struct fixture){
			.name = "api: reopened pin dir steers with the same tables",
			REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A });
		nk_steer_vm_stats(st, VM1, &c2);
		/* test run + live run, unless the row failed early */
		report("api: reopened instance counts into the same maps",
		       n || c2.rx_packets != c1.rx_packets + 2);
	} else {
		report("api: reopen the pin dir", n);
	}
	nk_steer_close(st2);

	/* vm del removes the addresses and counters */
	n = nk_steer_vm_del(st, VM2) != 0;
	n += nk_steer_vm_stats(st, VM2, &c1) != -ENOENT;
	report("api: vm del removes vm2 and its counters", n);
	run_named(st, "ipv4 to vm2 -> nsm A", &(struct fixture){
		.name = "api: after vm del, ipv4 to vm2: pass", PASS_ });

	/* a VM moves to another NSM */
	report("api: move vm1 to nsm B", nk_steer_vm_set(st, VM1, NSM_B) != 0);
	run_named(st, "ipv4 to vm1 -> nsm A", &(struct fixture){
		.name = "api: after the move, ipv4 to vm1 -> nsm B",
		REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B });

	/* graceful move: a known flow stays on the old NSM, MAC rewritten */
	{
		static const __u8 mac_a[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0xaa };
		struct nk_addr local = { .family = NK_AF_INET, .port = 80, .addr = { 10, 0, 0, 1 } };
		struct nk_addr remote = { .family = NK_AF_INET, .port = 40000,
					  .addr = { 192, 0, 2, 1 } };
		struct nk_steer_flow_nsm val = { .nsm_id = NSM_A };
		struct nk_steer_flow key;

		memcpy(val.dmac, mac_a, ETH_ALEN);
		n = nk_steer_flow_key(&key, IPPROTO_TCP, &local, &remote) != 0;
		n += nk_steer_flow_set(st, &key, &val) != 0;
		report("api: flow vm1 10.0.0.1:80 <- 192.0.2.1:40000 pinned to nsm A", n);
		run_named(st, "tcp to vm1 -> nsm A", &(struct fixture){
			.name = "api: after the move, tcp of the pinned flow -> nsm A, dst MAC rewritten",
			REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A, .dmac = mac_a });
		run_named(st, "ipv4 to vm1 -> nsm A", &(struct fixture){
			.name = "api: after the move, udp of no flow -> nsm B, MAC unchanged",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B, .dmac = mac_host });
		report("api: flow unpinned", nk_steer_flow_del(st, &key) != 0);
		run_named(st, "tcp to vm1 -> nsm A", &(struct fixture){
			.name = "api: after the unpin, tcp of that flow -> nsm B",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B, .dmac = mac_host });
		/*
		 * A SYN (no ACK) from the ports of a pinned flow: the old NSM's
		 * socket table decides, looked up in its namespace (here the
		 * test's own, by the id it gives itself); a syn-ack, never a
		 * new connection, always follows the flow.
		 */
		report("api: flow pinned again", nk_steer_flow_set(st, &key, &val) != 0);
		run_named(st, "tcp syn-ack to vm1 -> nsm A", &(struct fixture){
			.name = "api: tcp syn-ack of the pinned flow -> nsm A, dst MAC rewritten",
			REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A, .dmac = mac_a });
		run_named(st, "tcp syn to vm1 -> nsm A", &(struct fixture){
			.name = "api: tcp syn of the pinned flow, nsm A's netns not known -> nsm A",
			REDIR(DEV_NSMA), .count = C_RX, .vm = VM1, .nsm = NSM_A, .dmac = mac_a });
		report("api: ... and its entry stays", flow_count(st, &key) != 1);
		check_syn_lookup(st, &key, &val, mac_a);
		run_named(st, "tcp to vm1 -> nsm A", &(struct fixture){
			.name = "api: after that syn, tcp of those ports -> nsm B",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B, .dmac = mac_host });
		report("api: vm1 holds new connections (HOLD_SYN)",
		       nk_steer_vm_set_flags(st, VM1, NSM_B, NK_STEER_VM_F_HOLD_SYN) != 0);
		run_named(st, "tcp syn to vm1 -> nsm A", &(struct fixture){
			.name = "api: HOLD_SYN: a tcp syn to vm1: drop moving",
			DROP(NK_DROP_MOVING), .vm = VM1, .nsm = NSM_B });
		run_named(st, "tcp to vm1 -> nsm A", &(struct fixture){
			.name = "api: HOLD_SYN: a tcp ack to vm1 still -> nsm B",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B });
		report("api: HOLD_SYN cleared", nk_steer_vm_set(st, VM1, NSM_B) != 0);
		check_egress_pin(st, mac_a);
	}

	/*
	 * nsm_macs: a unicast frame steered by address leaves with the NSM's
	 * own MAC (the sender may still use another NSM's); a broadcast keeps
	 * its destination; no MAC known: unchanged.
	 */
	{
		static const __u8 mac_b[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0xbb };

		report("api: nsm B's MAC known (nsm_macs)", nk_steer_nsm_mac_set(st, NSM_B, mac_b) != 0);
		run_named(st, "ipv4 to vm3 -> nsm B", &(struct fixture){
			.name = "api: ipv4 to vm3 -> nsm B, dst MAC rewritten to nsm B's",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B, .dmac = mac_b });
		run_named(st, "802.1Q ipv4 to vm3 -> nsm B", &(struct fixture){
			.name = "api: 802.1Q ipv4 to vm3 -> nsm B, dst MAC rewritten",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B, .dmac = mac_b });
		run_named(st, "arp request (broadcast) for vm1 -> nsm A", &(struct fixture){
			.name = "api: broadcast arp for vm1 (moved) -> nsm B, dst MAC unchanged",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM1, .nsm = NSM_B, .dmac = mac_bcast });
		report("api: nsm B's MAC forgotten", nk_steer_nsm_mac_set(st, NSM_B, NULL) != 0);
		run_named(st, "ipv4 to vm3 -> nsm B", &(struct fixture){
			.name = "api: ipv4 to vm3 -> nsm B, MAC not known: unchanged",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B, .dmac = mac_host });
	}

	/*
	 * nsm_by_mac: a neighbour reply (ARP reply, neighbour advertisement)
	 * to an NSM's MAC goes to that NSM, which asked, whichever NSM has the
	 * VM (during a move the new NSM resolves its neighbours while the
	 * VM's address still leads to the old one); any other frame to that
	 * MAC follows the address.  Every fixture frame is unicast to
	 * mac_host, here nsm A's MAC.
	 */
	{
		static const __u8 mac_a2[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0xa2 };
		static const __u8 mac_b[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0xbb };
		struct nk_steer_nsm_ref r = { .nsm_id = NSM_A };
		struct nk_steer_mac k = {};
		char path[PATH_MAX];
		int fd;

		report("api: nsm A's MAC is the frames' destination, nsm B's known",
		       nk_steer_nsm_mac_set(st, NSM_A, mac_host) != 0 ||
		       nk_steer_nsm_mac_set(st, NSM_B, mac_b) != 0);
		run_named(st, "arp reply to vm3 -> nsm B", &(struct fixture){
			.name = "api: arp reply for vm3 (on nsm B) to nsm A's MAC -> nsm A",
			REDIR(DEV_NSMA), .count = C_RX, .vm = VM3, .nsm = NSM_A, .dmac = mac_host });
		run_named(st, "ipv6 na to vm3 -> nsm B", &(struct fixture){
			.name = "api: neighbour advertisement to vm3 at nsm A's MAC -> nsm A",
			REDIR(DEV_NSMA), .count = C_RX, .vm = VM3, .nsm = NSM_A, .dmac = mac_host });
		run_named(st, "unicast arp request for vm3 -> nsm B", &(struct fixture){
			.name = "api: unicast arp request for vm3 at nsm A's MAC -> nsm B, MAC rewritten",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B, .dmac = mac_b });
		run_named(st, "ipv4 to vm3 -> nsm B", &(struct fixture){
			.name = "api: ipv4 to vm3 at nsm A's MAC -> nsm B, MAC rewritten",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B, .dmac = mac_b });
		run_named(st, "arp reply to unknown address", &(struct fixture){
			.name = "api: arp reply for no VM's address to nsm A's MAC: pass",
			PASS_ });

		report("api: nsm A's MAC changes", nk_steer_nsm_mac_set(st, NSM_A, mac_a2) != 0);
		run_named(st, "arp reply to vm3 -> nsm B", &(struct fixture){
			.name = "api: arp reply for vm3 to nsm A's old MAC -> nsm B",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B, .dmac = mac_b });

		/* a stale entry (a pinned map kept across a restart) is swept */
		snprintf(path, sizeof(path), "%s/nsm_by_mac", pin_dir);
		fd = bpf_obj_get(path);
		memcpy(k.mac, mac_host, ETH_ALEN);
		report("api: a stale nsm_by_mac entry planted",
		       fd < 0 || bpf_map_update_elem(fd, &k, &r, BPF_ANY) != 0);
		run_named(st, "arp reply to vm3 -> nsm B", &(struct fixture){
			.name = "api: ... it steers an arp reply -> nsm A, with nsm A's MAC",
			REDIR(DEV_NSMA), .count = C_RX, .vm = VM3, .nsm = NSM_A, .dmac = mac_a2 });
		report("api: nk_steer_mac_sync", nk_steer_mac_sync(st) != 0);
		report("api: ... removes the stale entry", fd < 0 || !bpf_map_lookup_elem(fd, &k, &r));
		memcpy(k.mac, mac_a2, ETH_ALEN);
		report("api: ... keeps nsm A's own",
		       fd < 0 || bpf_map_lookup_elem(fd, &k, &r) != 0 || r.nsm_id != NSM_A);
		report("api: nsm A's entry deleted behind the library's back",
		       fd < 0 || bpf_map_delete_elem(fd, &k) != 0);
		report("api: nk_steer_mac_sync again", nk_steer_mac_sync(st) != 0);
		report("api: ... adds it back (nsm_macs names it)",
		       fd < 0 || bpf_map_lookup_elem(fd, &k, &r) != 0 || r.nsm_id != NSM_A);
		run_named(st, "arp reply to vm3 -> nsm B", &(struct fixture){
			.name = "api: after the sweep, arp reply for vm3 to mac_host -> nsm B",
			REDIR(DEV_NSMB), .count = C_RX, .vm = VM3, .nsm = NSM_B, .dmac = mac_b });
		report("api: nsm A's and B's MACs forgotten",
		       nk_steer_nsm_mac_set(st, NSM_A, NULL) != 0 ||
		       nk_steer_nsm_mac_set(st, NSM_B, NULL) != 0);
		report("api: ... nsm A's nsm_by_mac entry is gone",
		       fd < 0 || !bpf_map_lookup_elem(fd, &k, &r));
		if (fd >= 0)
			close(fd);
	}

	/* nsm del: its VMs drop with NO_NSM, its counters are zeroed */
	n = nk_steer_nsm_del(st, NSM_B) != 0;
	n += nk_steer_nsm_stats(st, NSM_B, &c1) != 0 || c1.rx_packets != 0;
	report("api: nsm del zeroes nsm B's counters", n);
	run_named(st, "ipv4 to vm3 -> nsm B", &(struct fixture){
		.name = "api: after nsm del, ipv4 to vm3: drop no_nsm",
		DROP(NK_DROP_NO_NSM), .vm = VM3, .nsm = NSM_B });
	run_named(st, "egress arp from vm3 via nsm B", &(struct fixture){
		.name = "api: after nsm del, egress from its veth: drop no_nsm",
		DROP(NK_DROP_NO_NSM), .nsm = NO_NSM });

	/* policy removed: vm4 flows again */
	report("api: policy removed from vm4", nk_steer_policy_set(st, VM4, NULL) != 0);
	run_named(st, "policy drop_all for vm4", &(struct fixture){
		.name = "api: without policy, ipv4 to vm4 -> nsm A",
		REDIR(DEV_NSMA), .count = C_RX, .vm = VM4, .nsm = NSM_A });
}

/* ---- attached for real: frames sent into the veths ---- */

/* Send frame p out of dev's peer, i.e. into dev (AF_PACKET). */
static int send_from_peer(enum dev d, const struct pkt *p)
{
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_ifindex = if_nametoindex(peer_name[d]),
		.sll_halen = ETH_ALEN,
	};
	int fd, ret = 0;

	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, p->b, p->len, 0, (struct sockaddr *)&sll, sizeof(sll)) != (ssize_t)p->len)
		ret = -errno;
	close(fd);
	return ret;
}

static int attached_mode(int ifidx, __u8 *mode)
{
	struct bpf_xdp_query_opts q = { .sz = sizeof(q) };
	int ret;

	ret = bpf_xdp_query(ifidx, 0, &q);
	*mode = q.attach_mode;
	return ret;
}

/* One frame through an attached program: from's peer -> ... -> target's peer. */
static void check_attached_path(const char *name, enum dev from, void (*build)(struct pkt *),
				enum dev target)
{
	__u64 rx0[DEV_MAX];
	struct pkt p = {};
	int n;

	build(&p);
	peer_rx(rx0);
	n = send_from_peer(from, &p) != 0;
	if (!n)
		n = check_delivery(rx0, target);
	report(name, n);
}

static void check_attach(struct nk_steer *st)
{
	enum nk_xdp_mode got = NK_XDP_AUTO;
	struct nk_steer_config cfg = { .miss_action = NK_MISS_PASS };
	__u8 mode;
	int ret;

	if (nk_steer_config_set(st, &cfg) || nk_steer_uplink_set(st, ifindex[DEV_UPLINK]))
		die("steer_test: cannot configure the attach checks");
	ret = nk_steer_attach(st, NK_STEER_INGRESS, ifindex[DEV_UPLINK], NK_XDP_AUTO, &got);
	report("attach: ingress on a veth uplink picks native XDP",
	       ret || got != NK_XDP_NATIVE ||
	       attached_mode(ifindex[DEV_UPLINK], &mode) || mode != XDP_ATTACHED_DRV);
	ret = nk_steer_attach(st, NK_STEER_EGRESS, ifindex[DEV_NSMA], NK_XDP_GENERIC, &got);
	report("attach: egress on nsm A's veth in generic mode",
	       ret || got != NK_XDP_GENERIC ||
	       attached_mode(ifindex[DEV_NSMA], &mode) || mode != XDP_ATTACHED_SKB);
	ret = nk_steer_attach(st, NK_STEER_EGRESS, ifindex[DEV_NSMB], NK_XDP_NATIVE, &got);
	report("attach: egress on nsm B's veth in native mode", ret || got != NK_XDP_NATIVE);

	check_attached_path("attached: ipv4 to vm1 from the wire reaches nsm A's peer",
			    DEV_UPLINK, f_ipv4_vm1, DEV_NSMA);
	check_attached_path("attached: arp for vm3 from the wire reaches nsm B's peer",
			    DEV_UPLINK, f_arp_reply_vm3, DEV_NSMB);
	check_attached_path("attached: vm1's frame from nsm A (generic) leaves by the uplink",
			    DEV_NSMA, f_out_ipv4_vm1, DEV_UPLINK);
	check_attached_path("attached: vm3's frame from nsm B (native) leaves by the uplink",
			    DEV_NSMB, f_out_ipv4_vm3, DEV_UPLINK);

	ret = nk_steer_detach(ifindex[DEV_UPLINK]) ?: nk_steer_detach(ifindex[DEV_NSMA]) ?:
	      nk_steer_detach(ifindex[DEV_NSMB]);
	report("attach: detach all",
	       ret || attached_mode(ifindex[DEV_UPLINK], &mode) || mode != XDP_ATTACHED_NONE ||
	       attached_mode(ifindex[DEV_NSMA], &mode) || mode != XDP_ATTACHED_NONE);
	/* negative control: without the program the frame stays on the uplink */
	check_attached_path("detached: ipv4 to vm1 from the wire stays on the uplink",
			    DEV_UPLINK, f_ipv4_vm1, DEV_NONE);
}

/* ---- BTF: bpftool prints field names of every populated map ---- */

struct btf_check {
	const char *map;
	const char *field;	/* NULL: no BTF in the kernel for this type */
};

static const struct btf_check btf_checks[] = {
	{ "steer_cfg", "\"miss_action\"" },
	{ "addr_vm", "\"vm_id\"" },
	{ "vms", "\"nsm_id\"" },
	{ "vm_policy", "\"drop_all\"" },
	{ "nsms", "\"dev_slot\"" },
	{ "nsm_ifindex", "\"nsm_id\"" },
	{ "vm_stats", "\"rx_packets\"" },
	{ "nsm_stats", "\"rx_packets\"" },
	{ "global_stats", "\"drops\"" },
	{ "nsm_devs", NULL },
	{ "uplink_dev", NULL },
	{ "nsm_xsks", NULL },
};

static void check_btf(const char *pin_dir)
{
	char cmd[PATH_MAX + 64], name[128], buf[4096];
	size_t i;

	for (i = 0; i < sizeof(btf_checks) / sizeof(btf_checks[0]); i++) {
		const struct btf_check *b = &btf_checks[i];
		bool found = false, any = false;
		FILE *f;
		int n = 0;

		snprintf(cmd, sizeof(cmd), "bpftool -j map dump pinned %s/%s 2>&1", pin_dir, b->map);
		f = popen(cmd, "r");
		if (!f) {
			n++;
		} else {
			while (fgets(buf, sizeof(buf), f)) {
				any = true;
				if (b->field && strstr(buf, b->field))
					found = true;
			}
			if (pclose(f) != 0)
				n++;
		}
		if (b->field && !found)
			n++;
		if (n)
			printf("    %s%s\n", cmd, any ? "" : ": no output");
		snprintf(name, sizeof(name), "btf: bpftool map dump %s %s", b->map,
			 b->field ? "shows field names" : "works (no BTF for this map type)");
		report(name, n);
	}
}

int main(void)
{
	char pin_dir[] = "/sys/fs/bpf/nk-steer-test-XXXXXX";
	struct nk_steer *st = NULL;
	size_t i;
	int ret;

	nk_log_init("steer_test", getenv("NK_DEBUG") ? NK_LOG_DEBUG : NK_LOG_WARN);
	nk_steer_libbpf_log();
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (geteuid() != 0) {
		fprintf(stderr, "steer_test: needs root (BPF and a network namespace)\n");
		return KSFT_SKIP;
	}
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_XDP, NULL) <= 0) {
		fprintf(stderr, "steer_test: this kernel cannot load XDP programs\n");
		return KSFT_SKIP;
	}
	if (topology_up()) {
		fprintf(stderr, "steer_test: cannot build the veth topology\n");
		return KSFT_SKIP;
	}
	ret = nk_bpffs_ensure("/sys/fs/bpf");
	if (ret || !mkdtemp(pin_dir)) {
		fprintf(stderr, "steer_test: no bpffs on /sys/fs/bpf: %s\n",
			strerror(ret ? -ret : errno));
		return KSFT_SKIP;
	}

	ret = nk_steer_open(pin_dir, &st);
	if (ret) {
		printf("FAIL load the steering programs: %s\n", strerror(-ret));
		failed++;
		goto out_rmdir;
	}
	ret = nk_steer_uplink_set(st, ifindex[DEV_UPLINK]) ?: setup_tables(st, pin_dir);
	if (ret) {
		printf("FAIL set up the tables: %s\n", strerror(-ret));
		failed++;
		goto out_unpin;
	}

	for (i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++)
		run_fixture(st, &fixtures[i]);
	check_attach(st);
	check_btf(pin_dir);
	check_api(st, pin_dir);

out_unpin:
	if (getenv("NK_KEEP")) {
		fprintf(stderr, "steer_test: NK_KEEP: maps left pinned in %s\n", pin_dir);
		nk_steer_close(st);
		goto out;
	}
	ret = nk_steer_unpin(st);
	report("api: unpin removes the pin dir", ret || access(pin_dir, F_OK) == 0);
	nk_steer_close(st);
out_rmdir:
	rmdir(pin_dir);
out:
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
