// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Network namespace ids (nsid) over rtnetlink: RTM_GETNSID, and
 * RTM_NEWNSID with NETNSA_NSID -1 (the kernel picks one) when the
 * namespace has none in ours.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <linux/net_namespace.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <libmnl/libmnl.h>

#include "nknetns.h"

struct nsid_reply {
	int id;
	int found;
};

static int nsid_attr(const struct nlattr *a, void *data)
{
	struct nsid_reply *r = data;

	if (mnl_attr_get_type(a) == NETNSA_NSID) {
		if (mnl_attr_validate(a, MNL_TYPE_U32) < 0)
			return MNL_CB_ERROR;
		r->id = (int32_t)mnl_attr_get_u32(a);
		r->found = 1;
	}
	return MNL_CB_OK;
}

static int nsid_msg(const struct nlmsghdr *nlh, void *data)
{
	if (nlh->nlmsg_type != RTM_NEWNSID)
		return MNL_CB_OK;
	return mnl_attr_parse(nlh, sizeof(struct rtgenmsg), nsid_attr, data);
}

/* One request, its answer (GET: the id into *r) or its ACK.  0 or -errno. */
static int nsid_talk(struct mnl_socket *nl, uint16_t type, int netns_fd, int want,
		     struct nsid_reply *r)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	uint32_t portid = mnl_socket_get_portid(nl);
	static uint32_t seq_next;
	struct rtgenmsg *g;
	uint32_t seq;
	ssize_t n;
	int ret;

	seq = (uint32_t)time(NULL) + ++seq_next;
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = seq;
	g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->rtgen_family = AF_UNSPEC;
	mnl_attr_put_u32(nlh, NETNSA_FD, (uint32_t)netns_fd);
	if (type == RTM_NEWNSID)
		mnl_attr_put_u32(nlh, NETNSA_NSID, (uint32_t)want);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (n < 0)
			return -errno;
		errno = 0;
		ret = mnl_cb_run(buf, n, seq, portid, nsid_msg, r);
		if (ret < 0)
			return errno ? -errno : -EIO;
		if (ret == MNL_CB_STOP)
			return 0;
	}
}

int nk_netns_id(int netns_fd, int *id)
{
	struct nsid_reply r = { .id = -1 };
	struct mnl_socket *nl;
	int ret;

	if (netns_fd < 0)
		return -EBADF;
	nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nl)
		return -errno;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		goto out;
	}
	ret = nsid_talk(nl, RTM_GETNSID, netns_fd, 0, &r);
	if (!ret && (!r.found || r.id < 0)) {
		/* none yet: the kernel picks one (EEXIST: someone else did) */
		ret = nsid_talk(nl, RTM_NEWNSID, netns_fd, -1, &r);
		if (!ret || ret == -EEXIST) {
			r.found = 0;
			ret = nsid_talk(nl, RTM_GETNSID, netns_fd, 0, &r);
		}
	}
	if (!ret && (!r.found || r.id < 0))
		ret = -ENOENT;
	if (!ret)
		*id = r.id;
out:
	mnl_socket_close(nl);
	return ret;
}
