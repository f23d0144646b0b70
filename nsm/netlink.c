// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * rtnetlink through libmnl: the few changes the NSM makes to its network
 * namespace for the VMs it serves.  VM addresses on --dev (RTM_NEWADDR,
 * IFA_F_NODAD for IPv6), the device up, and, for a VM with a gateway, its
 * routing table 1000 + vm_id (connected prefixes and a default route) with
 * one "from ADDR lookup TABLE" rule per address.  Requests are synchronous
 * and acknowledged; each returns 0 or -errno from the kernel.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/fib_rules.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <libmnl/libmnl.h>

#include "log.h"
#include "nsm.h"

int nl_open(void)
{
	nsm.nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nsm.nl)
		return -errno;
	if (mnl_socket_bind(nsm.nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		int ret = -errno;

		mnl_socket_close(nsm.nl);
		nsm.nl = NULL;
		return ret;
	}
	nsm.nl_portid = mnl_socket_get_portid(nsm.nl);
	nsm.nl_seq = time(NULL);
	return 0;
}

void nl_close(void)
{
	if (nsm.nl)
		mnl_socket_close(nsm.nl);
	nsm.nl = NULL;
}

/* Send one request and wait for its acknowledgement. */
static int nl_talk(struct nlmsghdr *nlh)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	uint32_t seq = ++nsm.nl_seq;
	ssize_t n;
	int ret;

	nlh->nlmsg_seq = seq;
	nlh->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(nsm.nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		n = mnl_socket_recvfrom(nsm.nl, buf, sizeof(buf));
		if (n < 0)
			return -errno;
		ret = mnl_cb_run(buf, n, seq, nsm.nl_portid, NULL, NULL);
		if (ret < 0)
			return errno ? -errno : -EIO;
		if (ret == MNL_CB_STOP)
			return 0;
	}
}

static int family_af(uint8_t nk_family)
{
	return nk_family == NK_AF_INET ? AF_INET : AF_INET6;
}

static int family_len(uint8_t nk_family)
{
	return nk_family == NK_AF_INET ? 4 : 16;
}

int nl_link_up(void)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct ifinfomsg *ifi;

	nlh->nlmsg_type = RTM_NEWLINK;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = nsm.ifindex;
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	return nl_talk(nlh);
}

int nl_addr(bool add, const struct nsm_vm_addr *a)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	int len = family_len(a->addr.family);
	struct ifaddrmsg *ifa;

	nlh->nlmsg_type = add ? RTM_NEWADDR : RTM_DELADDR;
	nlh->nlmsg_flags = NLM_F_REQUEST | (add ? NLM_F_CREATE | NLM_F_EXCL : 0);
	ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = family_af(a->addr.family);
	ifa->ifa_prefixlen = a->prefix;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = nsm.ifindex;
	if (a->addr.family == NK_AF_INET6) {
		ifa->ifa_flags = IFA_F_NODAD;
		mnl_attr_put_u32(nlh, IFA_FLAGS, IFA_F_NODAD);
	}
	mnl_attr_put(nlh, IFA_LOCAL, len, a->addr.addr);
	mnl_attr_put(nlh, IFA_ADDRESS, len, a->addr.addr);
	if (add)
		mnl_attr_put_u8(nlh, IFA_PROTO, NSM_IFA_PROTO);
	return nl_talk(nlh);
}

struct addr_find {
	const struct nsm_vm_addr *a;
	int proto;			/* -ENOENT: not on --dev */
};

static int addr_find_cb(const struct nlmsghdr *nlh, void *data)
{
	struct addr_find *f = data;
	const struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *attr;
	const void *local = NULL, *address = NULL;
	int len = family_len(f->a->addr.family), proto = 0;

	if (nlh->nlmsg_type != RTM_NEWADDR || (int)ifa->ifa_index != nsm.ifindex ||
	    ifa->ifa_family != family_af(f->a->addr.family))
		return MNL_CB_OK;
	mnl_attr_for_each(attr, nlh, sizeof(*ifa)) {
		switch (mnl_attr_get_type(attr)) {
		case IFA_LOCAL:
			if (mnl_attr_get_payload_len(attr) == (uint16_t)len)
				local = mnl_attr_get_payload(attr);
			break;
		case IFA_ADDRESS:
			if (mnl_attr_get_payload_len(attr) == (uint16_t)len)
				address = mnl_attr_get_payload(attr);
			break;
		case IFA_PROTO:
			proto = mnl_attr_get_u8(attr);
			break;
		}
	}
	/* IPv4 names the address in IFA_LOCAL, IPv6 in IFA_ADDRESS only */
	if (!local)
		local = address;
	if (local && !memcmp(local, f->a->addr.addr, len))
		f->proto = proto;
	return MNL_CB_OK;
}

/* The IFA_PROTO of VM address a on --dev (0: none), or -ENOENT, -errno. */
int nl_addr_proto(const struct nsm_vm_addr *a)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct addr_find f = { .a = a, .proto = -ENOENT };
	uint32_t seq = ++nsm.nl_seq;
	struct ifaddrmsg *ifa;
	ssize_t n;
	int ret;

	nlh->nlmsg_type = RTM_GETADDR;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = seq;
	ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = family_af(a->addr.family);
	if (mnl_socket_sendto(nsm.nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	do {
		n = mnl_socket_recvfrom(nsm.nl, buf, sizeof(buf));
		if (n < 0)
			return -errno;
		ret = mnl_cb_run(buf, n, seq, nsm.nl_portid, addr_find_cb, &f);
	} while (ret > MNL_CB_STOP);
	if (ret < 0)
		return errno ? -errno : -EIO;
	return f.proto;
}

/*
 * A route in table: dst/prefix on the device (gw NULL: connected, scope
 * link) or via gw.  Adding replaces an equal route, so it is idempotent.
 */
int nl_route(bool add, uint32_t table, const struct nk_addr *dst, int prefix,
	     const struct nk_addr *gw)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	int len = family_len(dst->family);
	struct rtmsg *rtm;

	nlh->nlmsg_type = add ? RTM_NEWROUTE : RTM_DELROUTE;
	nlh->nlmsg_flags = NLM_F_REQUEST | (add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = family_af(dst->family);
	rtm->rtm_dst_len = prefix;
	rtm->rtm_table = RT_TABLE_UNSPEC;
	rtm->rtm_protocol = RTPROT_STATIC;
	rtm->rtm_scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
	rtm->rtm_type = RTN_UNICAST;
	mnl_attr_put_u32(nlh, RTA_TABLE, table);
	if (prefix)
		mnl_attr_put(nlh, RTA_DST, len, dst->addr);
	if (gw)
		mnl_attr_put(nlh, RTA_GATEWAY, len, gw->addr);
	mnl_attr_put_u32(nlh, RTA_OIF, nsm.ifindex);
	return nl_talk(nlh);
}

/* "from src lookup table priority prio".  Adding an existing rule is 0. */
int nl_rule(bool add, uint32_t table, uint32_t prio, const struct nk_addr *src)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	int len = family_len(src->family);
	struct fib_rule_hdr *frh;
	int ret;

	nlh->nlmsg_type = add ? RTM_NEWRULE : RTM_DELRULE;
	nlh->nlmsg_flags = NLM_F_REQUEST | (add ? NLM_F_CREATE | NLM_F_EXCL : 0);
	frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));
	frh->family = family_af(src->family);
	frh->src_len = len * 8;
	frh->table = RT_TABLE_UNSPEC;
	frh->action = FR_ACT_TO_TBL;
	mnl_attr_put(nlh, FRA_SRC, len, src->addr);
	mnl_attr_put_u32(nlh, FRA_TABLE, table);
	mnl_attr_put_u32(nlh, FRA_PRIORITY, prio);
	ret = nl_talk(nlh);
	if (add && ret == -EEXIST)
		ret = 0;
	return ret;
}

/* Write a value to a /proc/sys file of this network namespace. */
int sysctl_write(const char *path, const char *val)
{
	size_t len = strlen(val);
	int fd, ret = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, len) != (ssize_t)len)
		ret = -errno;
	close(fd);
	if (ret)
		errno = -ret;
	return ret;
}
