// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Host plumbing for the NSMs nkd creates itself on the uplink: a named
 * network namespace and a veth pair per NSM, made with rtnetlink (libmnl)
 * and the ethtool ioctl, never by running ip(8).
 *
 * A namespace is made the way `ip netns add` makes it, so that iproute2
 * and nkd see the same ones: /run/netns is a shared mount point (bound onto
 * itself first if it is not a mount point), an empty file /run/netns/NAME
 * is created and a short-lived child unshares its network namespace and
 * bind-mounts /proc/self/ns/net onto that file.
 *
 * The veth pair is created from the root namespace with the peer born
 * directly in the NSM's namespace (IFLA_NET_NS_FD), so the peer's name
 * (eth0) never meets the root namespace's interfaces.  Both ends get
 * addr_gen_mode none before they come up: no IPv6 link-local address, so
 * the NSM interface carries VM addresses only.  On the NSM side GRO is
 * turned on once it is up (a veth delivers frames that native XDP
 * redirects into its peer only with NAPI, which turning GRO on enables,
 * but not when that happens while the veth is down) and transmit checksum
 * offload is
 * turned off (a frame the NSM's stack leaves with a partial checksum would
 * leave through XDP_REDIRECT with that checksum never completed).  Work
 * inside the namespace is done with setns() there and back: nkd is
 * single-threaded.  Every step is idempotent, so a restarted nkd or a
 * SIGHUP simply runs it again.
 *
 * When a VM moves to another NSM, the new NSM's interface has another MAC
 * than the one the remote side has cached for the VM's addresses.  The
 * ingress program writes the NSM's own MAC into the frames it steers
 * (nsm_macs), but the remote side should learn the new one, and a plain
 * (unsteered) NSM has no such program.  link_announce() therefore sends, from inside the new NSM's
 * namespace and out of its interface (so through the egress program and
 * the uplink), a gratuitous ARP per IPv4 address and an unsolicited
 * neighbour advertisement (override flag) per IPv6 address.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <linux/ethtool.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <linux/veth.h>
#include <libmnl/libmnl.h>

#include "log.h"
#include "nkd.h"
#include "nknetns.h"
#include "steer_maps.h"

#define NETNS_RUN_DIR	"/run/netns"

/* ---- rtnetlink ---- */

/* Send one request on a fresh socket (of the current netns), wait for the ACK. */
static int nl_talk(struct nlmsghdr *nlh)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct mnl_socket *nl;
	uint32_t seq = time(NULL), portid;
	ssize_t n;
	int ret;

	nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nl)
		return -errno;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		goto out_close;
	}
	portid = mnl_socket_get_portid(nl);
	nlh->nlmsg_seq = seq;
	nlh->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
		ret = -errno;
		goto out_close;
	}
	for (;;) {
		n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (n < 0) {
			ret = -errno;
			break;
		}
		ret = mnl_cb_run(buf, n, seq, portid, NULL, NULL);
		if (ret < 0) {
			ret = errno ? -errno : -EIO;
			break;
		}
		if (ret == MNL_CB_STOP) {
			ret = 0;
			break;
		}
	}
out_close:
	mnl_socket_close(nl);
	return ret;
}

static struct ifinfomsg *link_msg(char *buf, uint16_t type, uint16_t flags, int ifindex)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct ifinfomsg *ifi;

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	return ifi;
}

/* addr_gen_mode none (no IPv6 link-local address), then up. */
static int link_prepare_up(int ifindex)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
	struct nlattr *spec, *in6;
	struct ifinfomsg *ifi;
	int ret;

	link_msg(buf, RTM_NEWLINK, 0, ifindex);
	spec = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
	in6 = mnl_attr_nest_start(nlh, AF_INET6);
	mnl_attr_put_u8(nlh, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
	mnl_attr_nest_end(nlh, in6);
	mnl_attr_nest_end(nlh, spec);
	ret = nl_talk(nlh);
	if (ret && ret != -EAFNOSUPPORT)	/* no IPv6 at all: nothing to stop */
		return ret;
	ifi = link_msg(buf, RTM_NEWLINK, 0, ifindex);
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	return nl_talk(nlh);
}

/* Is ifname a veth?  1 yes, 0 another kind, -errno (-ENODEV: absent). */
static int link_is_veth(const char *ifname)
{
	char buf[MNL_SOCKET_BUFFER_SIZE], kind[16];
	struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
	struct mnl_socket *nl;
	uint32_t seq = time(NULL), portid;
	struct nlattr *a, *b;
	ssize_t n;
	int ret;

	link_msg(buf, RTM_GETLINK, 0, 0);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);
	nlh->nlmsg_seq = seq;
	nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nl)
		return -errno;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0 ||
	    mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
		ret = -errno;
		goto out_close;
	}
	portid = mnl_socket_get_portid(nl);
	n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
	if (n < 0) {
		ret = -errno;
		goto out_close;
	}
	nlh = (struct nlmsghdr *)buf;
	if (!mnl_nlmsg_ok(nlh, n) || nlh->nlmsg_seq != seq || nlh->nlmsg_pid != portid) {
		ret = -EIO;
		goto out_close;
	}
	if (nlh->nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);

		ret = e->error ? e->error : -EIO;
		goto out_close;
	}
	kind[0] = '\0';
	mnl_attr_for_each(a, nlh, sizeof(struct ifinfomsg)) {
		if (mnl_attr_get_type(a) != IFLA_LINKINFO)
			continue;
		mnl_attr_for_each_nested(b, a)
			if (mnl_attr_get_type(b) == IFLA_INFO_KIND)
				nkd_strscpy(kind, mnl_attr_get_str(b), sizeof(kind));
	}
	ret = !strcmp(kind, "veth");
out_close:
	mnl_socket_close(nl);
	return ret;
}

static int veth_create(const char *host, int nsfd, const char *peer)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
	struct nlattr *info, *data, *pnest;
	struct ifinfomsg *pifi;

	link_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, host);
	info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	pnest = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	pifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*pifi));
	pifi->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, peer);
	mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, nsfd);
	mnl_attr_nest_end(nlh, pnest);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, info);
	return nl_talk(nlh);
}

int link_delete(const char *ifname)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
	int ret;

	link_msg(buf, RTM_DELLINK, 0, 0);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);
	ret = nl_talk(nlh);
	return ret == -ENODEV ? 0 : ret;
}

/* ---- ethtool ---- */

static int ethtool_set(const char *ifname, __u32 cmd, __u32 value)
{
	struct ethtool_value ev = { .cmd = cmd, .data = value };
	struct ifreq ifr = {};
	int fd, ret = 0;

	if (strlen(ifname) >= sizeof(ifr.ifr_name))
		return -ENAMETOOLONG;
	strcpy(ifr.ifr_name, ifname);
	ifr.ifr_data = (void *)&ev;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, SIOCETHTOOL, &ifr))
		ret = -errno;
	close(fd);
	return ret;
}

/* ---- namespaces ---- */

static void netns_path(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, NETNS_RUN_DIR "/%s", name);
}

int netns_open(const char *name)
{
	char path[PATH_MAX];
	int fd;

	netns_path(name, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* The id (nsid) nkd's netns gives /run/netns/NAME: 0 and *id, or -errno. */
int netns_id(const char *name, int *id)
{
	int fd = netns_open(name), ret;

	if (fd < 0)
		return fd;
	ret = nk_netns_id(fd, id);
	close(fd);
	return ret;
}

/* As `ip netns add`: /run/netns a shared mount point, so mounts propagate. */
static int netns_run_dir(void)
{
	if (mkdir(NETNS_RUN_DIR, 0755) < 0 && errno != EEXIST)
		return -errno;
	if (!mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, NULL))
		return 0;
	if (errno != EINVAL)
		return -errno;
	/* not a mount point yet: bind it onto itself, then share it */
	if (mount(NETNS_RUN_DIR, NETNS_RUN_DIR, "none", MS_BIND | MS_REC, NULL) ||
	    mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, NULL))
		return -errno;
	return 0;
}

/* Create /run/netns/NAME unless it exists.  1 created, 0 existed, -errno. */
int netns_create(const char *name)
{
	char path[PATH_MAX];
	int fd, st, ret;
	pid_t pid;

	fd = netns_open(name);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	ret = netns_run_dir();
	if (ret)
		return ret;
	netns_path(name, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	close(fd);
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto out_unlink;
	}
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) < 0 ||
		    mount("/proc/self/ns/net", path, "none", MS_BIND, NULL) < 0)
			_exit(errno & 0xff ? errno & 0xff : 1);
		_exit(0);
	}
	if (waitpid(pid, &st, 0) < 0) {
		ret = -errno;
		goto out_unlink;
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		ret = WIFEXITED(st) ? -WEXITSTATUS(st) : -EIO;
		goto out_unlink;
	}
	return 1;

out_unlink:
	unlink(path);
	return ret;
}

int netns_delete(const char *name)
{
	char path[PATH_MAX];

	netns_path(name, path, sizeof(path));
	if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		return -errno;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/*
 * Run fn inside the namespace nsfd and come back.  Failing to come back
 * would leave nkd in the wrong namespace: that is fatal.
 */
static int netns_run(int nsfd, int (*fn)(void *), void *arg)
{
	int self, ret;

	self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0)
		return -errno;
	if (setns(nsfd, CLONE_NEWNET) < 0) {
		ret = -errno;
		close(self);
		return ret;
	}
	ret = fn(arg);
	if (setns(self, CLONE_NEWNET) < 0)
		die("cannot return to nkd's network namespace: %s", strerror(errno));
	close(self);
	return ret;
}

/* netns_run() in the NSM's namespace; -errno if it cannot be opened. */
static int nsm_run(const struct nkd_nsm *nsm, int (*fn)(void *), void *arg)
{
	int nsfd = netns_open(nsm->netns), ret;

	if (nsfd < 0)
		return nsfd;
	ret = netns_run(nsfd, fn, arg);
	close(nsfd);
	return ret;
}

/* ---- one NSM's veth ---- */

struct nsm_side {
	const char *dev;
	const char *step;	/* what failed, for the message */
};

static int nsm_side_exists(void *arg)
{
	struct nsm_side *s = arg;

	return if_nametoindex(s->dev) ? 1 : 0;
}

/* Inside the NSM's namespace: lo up; dev: up, then GRO on, tx checksum off. */
static int nsm_side_setup(void *arg)
{
	struct nsm_side *s = arg;
	int ifindex, ret;

	ifindex = if_nametoindex("lo");
	if (ifindex) {
		char buf[MNL_SOCKET_BUFFER_SIZE];
		struct ifinfomsg *ifi = link_msg(buf, RTM_NEWLINK, 0, ifindex);

		ifi->ifi_flags = IFF_UP;
		ifi->ifi_change = IFF_UP;
		nl_talk((struct nlmsghdr *)buf);	/* best effort */
	}
	ifindex = if_nametoindex(s->dev);
	if (!ifindex) {
		s->step = "find";
		return -ENODEV;
	}
	s->step = "bring up";
	ret = link_prepare_up(ifindex);
	if (ret)
		return ret;
	/* after up: GRO turned on while the veth is down leaves NAPI off */
	s->step = "enable GRO on";
	ret = nk_veth_enable_gro(s->dev);
	if (ret)
		return ret;
	s->step = "turn transmit checksum offload off on";
	return ethtool_set(s->dev, ETHTOOL_STXCSUM, 0);
}

/*
 * Make sure the NSM's veth pair exists and is configured: host side
 * nsm->hostdev in the root namespace, NSM side nsm->dev in nsm->netns.  A
 * stale host side whose peer is gone is replaced; an interface of that
 * name that is no veth is refused.  Sets nsm->host_ifindex.
 */
int link_nsm_veth(struct nkd_nsm *nsm, struct nkd_err *e)
{
	struct nsm_side side = { .dev = nsm->dev, .step = "" };
	int nsfd, ret, ifindex;

	nsfd = netns_open(nsm->netns);
	if (nsfd < 0)
		return nkd_fail(e, -nsfd, "nsm %s: cannot open netns %s: %s", nsm->name,
				nsm->netns, strerror(-nsfd));
	ret = link_is_veth(nsm->hostdev);
	if (ret == 0) {
		ret = nkd_fail(e, EEXIST, "nsm %s: interface %s exists and is not a veth; remove it or choose another nsm name",
			       nsm->name, nsm->hostdev);
		goto out_close;
	}
	if (ret == 1 && netns_run(nsfd, nsm_side_exists, &side) != 1) {
		warn("nsm %s: %s has no peer %s in netns %s; re-creating the pair",
		     nsm->name, nsm->hostdev, nsm->dev, nsm->netns);
		link_delete(nsm->hostdev);
		ret = -ENODEV;
	}
	if (ret == -ENODEV) {
		ret = veth_create(nsm->hostdev, nsfd, nsm->dev);
		if (ret) {
			ret = nkd_fail(e, -ret, "nsm %s: cannot create the veth pair %s / %s (netns %s): %s",
				       nsm->name, nsm->hostdev, nsm->dev, nsm->netns, strerror(-ret));
			goto out_close;
		}
		info("nsm %s: created veth %s <-> %s in netns %s", nsm->name, nsm->hostdev,
		     nsm->dev, nsm->netns);
	} else if (ret < 0) {
		ret = nkd_fail(e, -ret, "nsm %s: cannot look up interface %s: %s", nsm->name,
			       nsm->hostdev, strerror(-ret));
		goto out_close;
	}
	ifindex = if_nametoindex(nsm->hostdev);
	ret = ifindex ? link_prepare_up(ifindex) : -ENODEV;
	if (ret) {
		ret = nkd_fail(e, -ret, "nsm %s: cannot bring up %s: %s", nsm->name, nsm->hostdev,
			       strerror(-ret));
		goto out_close;
	}
	ret = netns_run(nsfd, nsm_side_setup, &side);
	if (ret) {
		ret = nkd_fail(e, -ret, "nsm %s: cannot %s %s in netns %s: %s", nsm->name, side.step,
			       nsm->dev, nsm->netns, strerror(-ret));
		goto out_close;
	}
	nsm->host_ifindex = ifindex;
out_close:
	close(nsfd);
	return ret;
}

/* ---- announcements after a move ---- */

struct announce {
	const struct nkd_nsm *nsm;
	const struct nkd_vm *vm;
	unsigned int sent;
};

/* Gratuitous ARP request: sender = target = addr, to the broadcast MAC. */
static int garp(int ifindex, const uint8_t *mac, const uint8_t *ip)
{
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_ARP),
		.sll_ifindex = ifindex,
		.sll_halen = ETH_ALEN,
		.sll_addr = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff },
	};
	struct __attribute__((packed)) {
		struct arphdr h;
		uint8_t sha[ETH_ALEN], spa[4], tha[ETH_ALEN], tpa[4];
	} arp = {
		.h = {
			.ar_hrd = htons(ARPHRD_ETHER),
			.ar_pro = htons(ETH_P_IP),
			.ar_hln = ETH_ALEN,
			.ar_pln = 4,
			.ar_op = htons(ARPOP_REQUEST),
		},
	};
	int fd, ret = 0;

	memcpy(arp.sha, mac, ETH_ALEN);
	memcpy(arp.spa, ip, 4);
	memcpy(arp.tpa, ip, 4);
	fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
	if (fd < 0)
		return -errno;
	if (sendto(fd, &arp, sizeof(arp), 0, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* Unsolicited NA (override) for addr to all-nodes, from addr. */
static int unsolicited_na(int ifindex, const uint8_t *mac, const uint8_t *ip)
{
	struct sockaddr_in6 src = { .sin6_family = AF_INET6 };
	struct sockaddr_in6 dst = { .sin6_family = AF_INET6 };
	struct __attribute__((packed)) {
		struct nd_neighbor_advert na;
		struct nd_opt_hdr opt;
		uint8_t lla[ETH_ALEN];
	} msg = {
		.na.nd_na_type = ND_NEIGHBOR_ADVERT,
		.na.nd_na_flags_reserved = ND_NA_FLAG_OVERRIDE,
		.opt = { .nd_opt_type = ND_OPT_TARGET_LINKADDR, .nd_opt_len = 1 },
	};
	int fd, hops = 255, ret = 0;

	memcpy(&msg.na.nd_na_target, ip, 16);
	memcpy(msg.lla, mac, ETH_ALEN);
	memcpy(&src.sin6_addr, ip, 16);
	inet_pton(AF_INET6, "ff02::1", &dst.sin6_addr);
	dst.sin6_scope_id = ifindex;
	fd = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6);	/* kernel sums */
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
	    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops)) < 0 ||
	    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof(ifindex)) < 0 ||
	    sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&dst, sizeof(dst)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static int announce_in_ns(void *arg)
{
	struct announce *a = arg;
	struct ifreq ifr = {};
	uint8_t mac[ETH_ALEN];
	int ifindex, fd, ret;
	uint32_t i;

	ifindex = if_nametoindex(a->nsm->dev);
	if (!ifindex)
		return -ENODEV;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	nkd_strscpy(ifr.ifr_name, a->nsm->dev, sizeof(ifr.ifr_name));
	ret = ioctl(fd, SIOCGIFHWADDR, &ifr) < 0 ? -errno : 0;
	close(fd);
	if (ret)
		return ret;
	memcpy(mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
	for (i = 0; i < a->vm->naddrs; i++) {
		const struct nk_addr *ad = &a->vm->addrs[i].addr;

		if (ad->family == NK_AF_INET)
			ret = garp(ifindex, mac, ad->addr);
		else
			ret = unsolicited_na(ifindex, mac, ad->addr);
		if (ret)
			warn("vm %s: cannot announce an address from nsm %s: %s", a->vm->name,
			     a->nsm->name, strerror(-ret));
		else
			a->sent++;
	}
	return 0;
}

void link_announce(const struct nkd_nsm *nsm, const struct nkd_vm *vm)
{
	struct announce a = { .nsm = nsm, .vm = vm };
	int ret;

	ret = nsm_run(nsm, announce_in_ns, &a);
	if (ret)
		warn("vm %s: cannot announce its addresses from nsm %s: %s", vm->name, nsm->name,
		     strerror(-ret));
	else
		debug("vm %s: %u addresses announced from nsm %s", vm->name, a.sent, nsm->name);
}

struct mac_query {
	const char *dev;
	uint8_t *mac;
};

static int mac_in_ns(void *arg)
{
	struct mac_query *q = arg;
	struct ifreq ifr = {};
	int fd, ret;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	nkd_strscpy(ifr.ifr_name, q->dev, sizeof(ifr.ifr_name));
	ret = ioctl(fd, SIOCGIFHWADDR, &ifr) < 0 ? -errno : 0;
	close(fd);
	if (!ret)
		memcpy(q->mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
	return ret;
}

#define NKD_SYSCTL_CHUNK	2048	/* the kernel parses a bitmap a page at a time */

static int reserved_in_ns(void *arg)
{
	const char *list = arg;
	size_t len = strlen(list), off = 0;
	int fd, ret = 0;

	fd = open("/proc/sys/net/ipv4/ip_local_reserved_ports", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* the empty list clears: write a newline */
	if (!len && write(fd, "\n", 1) < 0)
		ret = -errno;
	/* a long list in chunks that end at a comma: a later write of the
	 * same open file adds to what the first one set */
	while (!ret && off < len) {
		size_t n = len - off;
		ssize_t w;

		if (n > NKD_SYSCTL_CHUNK) {
			n = NKD_SYSCTL_CHUNK;
			while (n && list[off + n - 1] != ',')
				n--;
			if (!n) {
				ret = -EINVAL;
				break;
			}
		}
		w = write(fd, list + off, n);
		if (w < 0)
			ret = -errno;
		else if (!w)
			ret = -EIO;
		else
			off += (size_t)w;
	}
	close(fd);
	return ret;
}

/*
 * Set the NSM namespace's net.ipv4.ip_local_reserved_ports (a list such
 * as "40000,40002-40005", "" for none): its stack picks no ephemeral
 * port among them.
 */
int link_nsm_reserved_ports(const struct nkd_nsm *nsm, const char *list)
{
	return nsm_run(nsm, reserved_in_ns, (void *)list);
}

int link_nsm_mac(const struct nkd_nsm *nsm, uint8_t mac[6])
{
	struct mac_query q = { .dev = nsm->dev, .mac = mac };

	return nsm_run(nsm, mac_in_ns, &q);
}

static int local_in_ns(void *arg)
{
	return nk_steer_local_attach(arg);
}

/* The quarantine on the NSM's loopback: VM-to-VM traffic of the NSM. */
int link_nsm_local(const struct nkd_nsm *nsm)
{
	return nsm_run(nsm, local_in_ns, nkd.steer);
}
