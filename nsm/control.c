// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The NSM's side of nsmctl.h: the --control SOCK_SEQPACKET socket nkd
 * connects to, its requests (VM_ADD, VM_DEL, ATTACH_LISTENER,
 * ATTACH_STREAM, CONN_LIST, VM_DRAIN, ATTACH_CLAIM) and the VM table they
 * maintain, and the one message it sends unasked besides HELLO: a claim
 * passed to nkd (CLAIM_FWD).
 *
 * CONN_LIST is the one request answered by more than a REPLY: one
 * CONN_BATCH packet (same seq) per NSM_CONN_BATCH guest sockets first.
 * Those packets may outrun nkd's reading, so they are sent waiting for
 * room (at most NSM_CTL_SEND_WAIT_MS each) rather than dropped.
 * VM_DRAIN prepares a move: the VM's guest listener fd is closed and the
 * guest streams of its listening sockets are closed (the guest library
 * listens again, through nkd, on the VM's new NSM); its connections stay.
 *
 * Every request is validated in full before anything is changed and is
 * answered by one REPLY carrying 0 or a positive errno.  Requests are
 * idempotent: a restarted nkd re-sends its whole configuration.  nkd going
 * away changes nothing here; a newer connection replaces an older one.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "log.h"
#include "nkaddr.h"
#include "nkfd.h"
#include "nsm.h"

#define NSM_CTL_SEND_WAIT_MS	1000	/* a CONN_BATCH waits for room at most this */

static ino_t ctl_ino;

int ctl_listen(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *path = nsm.cfg.control;
	struct stat st;
	mode_t old;
	int fd, ret;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	if (!lstat(path, &st)) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;	/* not ours to remove */
		if (unlink(path))
			return -errno;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	old = umask(0177);
	ret = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (ret || chmod(path, 0600) || listen(fd, 8)) {
		ret = -errno;
		goto out_close;
	}
	if (!stat(path, &st))
		ctl_ino = st.st_ino;
	ret = ep_add(fd, EP_CTL_LISTEN, NULL, EPOLLIN);
	if (ret)
		goto out_close;
	nsm.ctl_lfd = fd;
	return 0;

out_close:
	close(fd);
	return ret;
}

/* Remove the socket path on exit, unless another process has replaced it. */
void ctl_unlink(void)
{
	struct stat st;

	if (!stat(nsm.cfg.control, &st) && st.st_ino == ctl_ino)
		unlink(nsm.cfg.control);
}

static void ctl_send_wait(uint8_t type, uint32_t seq, int32_t err, const void *body, size_t len,
			  int wait_ms)
{
	uint8_t buf[NSM_CTL_MSG_MAX];
	struct nsm_hdr *h = (struct nsm_hdr *)buf;

	if (nsm.ctl_fd < 0 || sizeof(*h) + len > sizeof(buf))
		return;
	*h = (struct nsm_hdr){
		.magic = NSM_CTL_MAGIC,
		.version = NSM_CTL_VERSION,
		.type = type,
		.len = sizeof(*h) + len,
		.seq = seq,
		.err = err,
	};
	if (len)
		memcpy(buf + sizeof(*h), body, len);
	for (;;) {
		struct pollfd pfd = { .fd = nsm.ctl_fd, .events = POLLOUT };

		if (send(nsm.ctl_fd, buf, h->len, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
			return;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || wait_ms <= 0 || poll(&pfd, 1, wait_ms) <= 0)
			break;
		wait_ms = 0;	/* one wait per packet */
	}
	warn_perror("reply to nkd (type %u seq %u) lost", type, seq);
}

static void ctl_send(uint8_t type, uint32_t seq, int32_t err, const void *body, size_t len)
{
	ctl_send_wait(type, seq, err, body, len, 0);
}

static void ctl_drop(void)
{
	close_later(nsm.ctl_fd);
	nsm.ctl_fd = -1;
}

void ctl_accept(void)
{
	struct {
		struct nsm_hello hello;
		struct nsm_hello_run run;
		struct nsm_hello_run2 run2;
	} msg = { .hello.pid = getpid() };
	struct nsm_hello_run *run = &msg.run;
	struct list_head *p, *t;
	struct stat st;
	int fd;

	fd = accept4(nsm.ctl_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			warn_perror("accept on control socket");
		return;
	}
	if (nsm.ctl_fd >= 0) {
		info("nkd connected again; the older connection is dropped");
		ctl_drop();
	} else {
		info("nkd connected");
	}
	if (ep_add(fd, EP_CTL_CONN, NULL, EPOLLIN)) {
		err_perror("registering nkd's connection");
		close(fd);
		return;
	}
	nsm.ctl_fd = fd;
	snprintf(msg.hello.name, sizeof(msg.hello.name), "%s", nsm.cfg.name);
	snprintf(msg.hello.type, sizeof(msg.hello.type), "%s", nsm.cfg.type);
	list_for_each_safe(p, t, &nsm.vms)
		msg.hello.nvms++;
	/* what runs: the in-kernel relay only if it could be set up */
	run->flags = (krelay_enabled() ? NSM_RUN_KERNEL_RELAY : 0) |
		     (nsm.cfg.no_splice ? NSM_RUN_NO_SPLICE : 0) |
		     (nsm.cfg.bulk_poll_auto ? NSM_RUN_BULK_POLL_AUTO : 0);
	run->busy_poll_us = nsm.cfg.busy_poll_us;
	run->bulk_poll_us = nsm.cfg.bulk_poll_us;
	run->wake_ns = nsm.cfg.wake_ns;
	run->kernel_relay_sndbuf = nsm.cfg.krelay_sndbuf;
	msg.run2.notsent_lowat = nsm.cfg.notsent_lowat;
	if (stat("/proc/self/ns/net", &st) == 0) {
		run->netns_dev = st.st_dev;
		run->netns_ino = st.st_ino;
	}
	snprintf(run->dev, sizeof(run->dev), "%s", nsm.cfg.dev);
	ctl_send(NSM_MSG_HELLO, 0, 0, &msg, sizeof(msg));
}

struct vm *vm_find(uint32_t id)
{
	struct list_head *p, *t;

	list_for_each_safe(p, t, &nsm.vms) {
		struct vm *vm = list_entry(p, struct vm, node);

		if (vm->id == id)
			return vm;
	}
	return NULL;
}

static bool zero(const void *p, size_t len)
{
	const uint8_t *b = p;

	while (len--)
		if (*b++)
			return false;
	return true;
}

static bool name_ok(const char *name)
{
	size_t i, len = strnlen(name, NK_NAME_MAX);

	if (!len || len == NK_NAME_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (!isgraph((unsigned char)name[i]))
			return false;
	/* Nothing may hide after the NUL either. */
	return zero(name + len, NK_NAME_MAX - len);
}

static bool gw_ok(const struct nk_addr *gw, int family)
{
	if (gw->family == NK_AF_UNSPEC)
		return zero(gw, sizeof(*gw));
	return gw->family == family && nk_addr_valid(gw) && !gw->port &&
	       !nk_addr_is_any(gw) && !nk_addr_is_loopback(gw);
}

static bool is_multicast(const struct nk_addr *a)
{
	return a->family == NK_AF_INET ? (a->addr[0] & 0xf0) == 0xe0 : a->addr[0] == 0xff;
}

static int vm_add_check(const struct nsm_vm_add *m)
{
	struct list_head *p, *t;
	uint32_t i, j;

	if (m->vm_id < 1 || m->vm_id > 65535) {
		warn("VM_ADD: vm id %u out of range", m->vm_id);
		return -EINVAL;
	}
	if (!name_ok(m->name)) {
		warn("VM_ADD: vm id %u: bad name", m->vm_id);
		return -EINVAL;
	}
	if (m->naddrs < 1 || m->naddrs > NK_VM_ADDRS_MAX) {
		warn("VM_ADD: vm %s: %u addresses", m->name, m->naddrs);
		return -EINVAL;
	}
	for (i = 0; i < m->naddrs; i++) {
		const struct nsm_vm_addr *a = &m->addrs[i];
		int max = a->addr.family == NK_AF_INET ? 32 : 128;

		if (!nk_addr_valid(&a->addr) || a->addr.port || !zero(a->pad, sizeof(a->pad)) ||
		    a->prefix > max || nk_addr_is_any(&a->addr) ||
		    nk_addr_is_loopback(&a->addr) || is_multicast(&a->addr)) {
			warn("VM_ADD: vm %s: address %u is not a usable unicast address/prefix",
			     m->name, i);
			return -EINVAL;
		}
		for (j = 0; j < i; j++) {
			if (nk_addr_same_ip(&a->addr, &m->addrs[j].addr)) {
				warn("VM_ADD: vm %s: address %u given twice", m->name, i);
				return -EINVAL;
			}
		}
	}
	for (; i < NK_VM_ADDRS_MAX; i++) {
		if (!zero(&m->addrs[i], sizeof(m->addrs[i]))) {
			warn("VM_ADD: vm %s: unused address slot %u not zero", m->name, i);
			return -EINVAL;
		}
	}
	if (!gw_ok(&m->gw4, NK_AF_INET) || !gw_ok(&m->gw6, NK_AF_INET6)) {
		warn("VM_ADD: vm %s: bad gateway", m->name);
		return -EINVAL;
	}
	/* Another VM may own neither the name nor any of the addresses. */
	list_for_each_safe(p, t, &nsm.vms) {
		struct vm *o = list_entry(p, struct vm, node);

		if (o->id == m->vm_id)
			continue;
		if (!strcmp(o->name, m->name)) {
			warn("VM_ADD: vm %s: name already used by vm id %u", m->name, o->id);
			return -EEXIST;
		}
		for (i = 0; i < m->naddrs; i++) {
			for (j = 0; j < o->naddrs; j++) {
				char buf[INET6_ADDRSTRLEN];

				if (!nk_addr_same_ip(&m->addrs[i].addr, &o->addrs[j].addr))
					continue;
				warn("VM_ADD: vm %s: address %s belongs to vm %s", m->name,
				     nk_addr_ntop(&m->addrs[i].addr, buf, sizeof(buf)), o->name);
				return -EADDRINUSE;
			}
		}
	}
	return 0;
}

static const struct nsm_vm_addr *addr_in(const struct nsm_vm_addr *a, const struct nsm_vm_addr *set,
					 uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		if (nk_addr_same_ip(&a->addr, &set[i].addr))
			return &set[i];
	return NULL;
}

static const struct nk_addr *vm_gw(const struct nk_addr *gw4, const struct nk_addr *gw6, int family)
{
	const struct nk_addr *gw = family == NK_AF_INET ? gw4 : gw6;

	return gw->family == NK_AF_UNSPEC ? NULL : gw;
}

static struct nk_addr prefix_net(const struct nk_addr *a, int prefix)
{
	struct nk_addr net = { .family = a->family };
	int i;

	for (i = 0; i < 16; i++) {
		int bits = prefix - i * 8;

		if (bits >= 8)
			net.addr[i] = a->addr[i];
		else if (bits > 0)
			net.addr[i] = a->addr[i] & (uint8_t)(0xff00 >> bits);
	}
	return net;
}

/*
 * Routing state of a VM as a list of (kind, address, prefix) so that the
 * difference between an old and a new configuration can be applied.
 */
struct route_item {
	int kind;		/* 0: connected prefix, 1: default via gw, 2: rule */
	struct nk_addr a;	/* network, gateway or source */
	int prefix;
};

static int routing_items(const struct nsm_vm_addr *addrs, uint32_t n, const struct nk_addr *gw4,
			 const struct nk_addr *gw6, struct route_item *out)
{
	int cnt = 0;
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (!vm_gw(gw4, gw6, addrs[i].addr.family))
			continue;
		out[cnt++] = (struct route_item){ 0, prefix_net(&addrs[i].addr, addrs[i].prefix),
						  addrs[i].prefix };
		out[cnt++] = (struct route_item){ 2, addrs[i].addr,
						  addrs[i].addr.family == NK_AF_INET ? 32 : 128 };
	}
	if (vm_gw(gw4, gw6, NK_AF_INET))
		out[cnt++] = (struct route_item){ 1, *gw4, 0 };
	if (vm_gw(gw4, gw6, NK_AF_INET6))
		out[cnt++] = (struct route_item){ 1, *gw6, 0 };
	return cnt;
}

static bool item_same(const struct route_item *x, const struct route_item *y)
{
	return x->kind == y->kind && x->prefix == y->prefix && nk_addr_same_ip(&x->a, &y->a);
}

static int item_apply(bool add, uint32_t vm_id, const struct route_item *it)
{
	uint32_t table = 1000 + vm_id;
	struct nk_addr any = { .family = it->a.family };

	switch (it->kind) {
	case 0:
		return nl_route(add, table, &it->a, it->prefix, NULL);
	case 1:
		return nl_route(add, table, &any, 0, &it->a);
	default:
		return nl_rule(add, table, table, &it->a);
	}
}

/* Apply the difference between the old routing items and the new ones. */
static int routing_update(uint32_t vm_id, const struct route_item *old, int nold,
			  const struct route_item *new, int nnew)
{
	int i, j, ret, first = 0;

	for (i = 0; i < nold; i++) {
		for (j = 0; j < nnew; j++)
			if (item_same(&old[i], &new[j]))
				break;
		if (j < nnew)
			continue;
		ret = item_apply(false, vm_id, &old[i]);
		if (ret && ret != -ENOENT && ret != -ESRCH && ret != -EADDRNOTAVAIL && !first)
			first = ret;
	}
	/* Connected routes before the default routes that need them. */
	for (i = 0; i < nnew; i++) {
		if (new[i].kind == 1)
			continue;
		ret = item_apply(true, vm_id, &new[i]);
		if (ret && !first)
			first = ret;
	}
	for (i = 0; i < nnew; i++) {
		if (new[i].kind != 1)
			continue;
		ret = item_apply(true, vm_id, &new[i]);
		if (ret && !first)
			first = ret;
	}
	return first;
}

static void promote_secondaries(void)
{
	char path[128];

	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/promote_secondaries",
		 nsm.cfg.dev);
	if (sysctl_write(path, "1"))
		warn_perror("%s", path);
	if (sysctl_write("/proc/sys/net/ipv4/conf/all/promote_secondaries", "1"))
		warn_perror("all/promote_secondaries");
}

static int vm_del(uint32_t id);

/* VM address a as this process added it (on), or removed it (off). */
static void addr_mark(struct vm *vm, const struct nk_addr *a, bool on)
{
	uint32_t i;

	for (i = 0; i < vm->nadded && !nk_addr_same_ip(&vm->added[i], a); i++)
		;
	if (on && i == vm->nadded && vm->nadded < NK_VM_ADDRS_MAX)
		vm->added[vm->nadded++] = *a;
	else if (!on && i < vm->nadded)
		vm->added[i] = vm->added[--vm->nadded];
}

/*
 * An address this NSM may remove: one it added (this process, or an
 * earlier NSM: NSM_IFA_PROTO; vm->added holds those it knows of).  One
 * that was on --dev before (an operator's "ip addr add") stays when the
 * VM goes; kernels before 5.18 keep no IFA_PROTO, so there only this
 * process's own count.
 */
static bool addr_ours(struct vm *vm, const struct nsm_vm_addr *a)
{
	uint32_t i;

	for (i = 0; i < vm->nadded; i++)
		if (nk_addr_same_ip(&vm->added[i], &a->addr))
			return true;
	return nl_addr_proto(a) == NSM_IFA_PROTO;
}

/* Remove VM address a from --dev if it is an NSM's (addr_ours()). */
static void addr_remove(struct vm *vm, const struct nsm_vm_addr *a)
{
	char buf[INET6_ADDRSTRLEN];
	int ret;

	if (!addr_ours(vm, a)) {
		info("vm %s: %s stays on %s: it was there before the vm, not added by an NSM",
		     vm->name, nk_addr_ntop(&a->addr, buf, sizeof(buf)), nsm.cfg.dev);
		return;
	}
	ret = nl_addr(false, a);
	if (ret && ret != -EADDRNOTAVAIL && ret != -ENOENT)
		warn("vm %s: removing %s: %s", vm->name,
		     nk_addr_ntop(&a->addr, buf, sizeof(buf)), strerror(-ret));
	addr_mark(vm, &a->addr, false);
}

static int vm_add(const struct nsm_vm_add *m)
{
	struct route_item old_items[3 * NK_VM_ADDRS_MAX], new_items[3 * NK_VM_ADDRS_MAX];
	struct nsm_vm_addr old_addrs[NK_VM_ADDRS_MAX];
	int ret, first = 0, nold = 0, nnew;
	uint32_t i, old_n = 0;
	struct vm *vm;
	char buf[INET6_ADDRSTRLEN];
	bool created = false;

	ret = vm_add_check(m);
	if (ret)
		return ret;
	if (!nsm.ifindex) {
		nsm.ifindex = if_nametoindex(nsm.cfg.dev);
		if (!nsm.ifindex) {
			warn("vm %s: interface %s does not exist", m->name, nsm.cfg.dev);
			return -ENODEV;
		}
	}

	vm = vm_find(m->vm_id);
	if (vm && strncmp(vm->name, m->name, NK_NAME_MAX)) {
		/* nkd gave the id to another VM (the one that had it is gone
		 * from its configuration): nothing of the old one is the new
		 * one's, neither its sockets nor its guest streams */
		warn("vm %s (id %u): the id is vm %s's now; %s's sockets and streams are closed",
		     vm->name, vm->id, m->name, vm->name);
		vm_del(m->vm_id);
		vm = NULL;
	}
	if (!vm) {
		vm = calloc(1, sizeof(*vm));
		if (!vm)
			return -ENOMEM;
		vm->id = m->vm_id;
		vm->lfd = -1;
		list_init(&vm->chans);
		list_init(&vm->socks);
		list_init(&vm->orphans);
		list_add_tail(&vm->node, &nsm.vms);
		created = true;
	} else {
		old_n = vm->naddrs;
		memcpy(old_addrs, vm->addrs, sizeof(old_addrs));
		nold = routing_items(vm->addrs, vm->naddrs, &vm->gw4, &vm->gw6, old_items);
	}
	if (created || vm->drained) {
		/* It may have come here by a move (or come back to this NSM
		 * that was draining it): claims for offers of the NSM it left
		 * go to nkd for a while (nsmctl.h). */
		vm->fwd_until = now_mono() + NSM_CLAIM_FWD_S;
		vm->nfwd = 0;
	}
	/* The VM is this NSM's again (a move back, or the rollback of a
	 * failed move, which sends VM_DRAIN again if it must); a VM without
	 * a guest listener (vsock only) gets no ATTACH_LISTENER to say so. */
	vm->drained = false;
	memcpy(vm->name, m->name, NK_NAME_MAX);
	/* The new configuration is recorded even if applying it fails in part,
	 * so that nkd re-sending it retries the rest. */
	vm->naddrs = m->naddrs;
	memcpy(vm->addrs, m->addrs, sizeof(vm->addrs));
	vm->gw4 = m->gw4;
	vm->gw6 = m->gw6;

	promote_secondaries();
	ret = nl_link_up();
	if (ret) {
		warn("vm %s: setting %s up: %s", vm->name, nsm.cfg.dev, strerror(-ret));
		first = ret;
	}
	/* Addresses no longer wanted, or whose prefix changed. */
	for (i = 0; i < old_n; i++) {
		const struct nsm_vm_addr *n = addr_in(&old_addrs[i], m->addrs, m->naddrs);

		if (n && n->prefix == old_addrs[i].prefix)
			continue;
		addr_remove(vm, &old_addrs[i]);
	}
	for (i = 0; i < m->naddrs; i++) {
		ret = nl_addr(true, &m->addrs[i]);
		/* marked: nkd sends every VM again and again (SIGHUP, its
		 * restarts), and an address known as ours is not looked up */
		if (!ret || (ret == -EEXIST && addr_ours(vm, &m->addrs[i])))
			addr_mark(vm, &m->addrs[i].addr, true);
		else if (ret == -EEXIST)
			warn("vm %s: %s is on %s already, not added by an NSM (an operator's?): the vm uses it, and it stays there when the vm goes",
			     vm->name, nk_addr_ntop(&m->addrs[i].addr, buf, sizeof(buf)),
			     nsm.cfg.dev);
		if (ret && ret != -EEXIST) {
			warn("vm %s: adding %s/%u on %s: %s", vm->name,
			     nk_addr_ntop(&m->addrs[i].addr, buf, sizeof(buf)), m->addrs[i].prefix,
			     nsm.cfg.dev, strerror(-ret));
			if (!first)
				first = ret;
		}
	}
	nnew = routing_items(m->addrs, m->naddrs, &m->gw4, &m->gw6, new_items);
	ret = routing_update(vm->id, old_items, nold, new_items, nnew);
	if (ret) {
		warn("vm %s: routing table %u: %s", vm->name, 1000 + vm->id, strerror(-ret));
		if (!first)
			first = ret;
	}
	if (created)
		info("vm %s: added (id %u, %u address%s%s)", vm->name, vm->id, vm->naddrs,
		     vm->naddrs == 1 ? "" : "es", nnew ? ", own routing table" : "");
	else
		debug("vm %s: updated", vm->name);
	return first;
}

static int vm_del(uint32_t id)
{
	struct route_item items[3 * NK_VM_ADDRS_MAX];
	struct vm *vm = vm_find(id);
	uint32_t i;
	int n;

	if (!vm)
		return 0;	/* idempotent */
	vm_kill_sockets(vm);
	if (vm->lfd >= 0)
		close_later(vm->lfd);
	vm->lfd = -1;
	n = routing_items(vm->addrs, vm->naddrs, &vm->gw4, &vm->gw6, items);
	routing_update(vm->id, items, n, NULL, 0);
	for (i = 0; i < vm->naddrs; i++)
		addr_remove(vm, &vm->addrs[i]);
	info("vm %s: deleted (%" PRIu64 " connections, %" PRIu64 " bytes up, %" PRIu64
	     " bytes down, %" PRIu64 "/%" PRIu64 " datagrams up/down, %" PRIu64 "/%" PRIu64
	     " dropped, %" PRIu64 " bad channels)", vm->name, vm->conns, vm->bytes_up,
	     vm->bytes_down, vm->dgrams_up, vm->dgrams_down, vm->dgram_drops_up,
	     vm->dgram_drops_down, vm->bad_chans);
	list_del(&vm->node);
	vm->dead = true;
	free_later(vm);
	return 0;
}

static int check_stream_fd(int fd, bool listening)
{
	int type = 0, acc = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len))
		return -ENOTSOCK;
	len = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len))
		return -ENOTSOCK;
	if (type != SOCK_STREAM || !!acc != listening)
		return -EINVAL;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK))
		return -errno;
	return 0;
}

static int attach_listener(uint32_t id, int fd)
{
	struct vm *vm = vm_find(id);
	socklen_t len;
	int ret;

	if (!vm)
		return -ENOENT;
	ret = check_stream_fd(fd, true);
	if (ret) {
		vm_warn(vm, "ATTACH_LISTENER: not a listening stream socket");
		return ret;
	}
	ret = ep_add(fd, EP_VM_LISTEN, vm, EPOLLIN);
	if (ret)
		return ret;
	ep_twin(fd);
	if (vm->lfd >= 0) {
		vm_debug(vm, "guest listener replaced");
		close_later(vm->lfd);
	}
	vm->drained = false;
	vm->lfd = fd;
	len = sizeof(vm->ldomain);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &vm->ldomain, &len))
		vm->ldomain = -1;
	vm_debug(vm, "guest listener attached");
	return 0;
}

static int attach_stream(uint32_t id, int fd, bool refuse)
{
	struct vm *vm = vm_find(id);
	struct chan *ch;
	int ret;

	if (!vm)
		return -ENOENT;
	ret = check_stream_fd(fd, false);
	if (ret) {
		vm_warn(vm, "ATTACH_STREAM: not a connected stream socket");
		return ret;
	}
	ch = chan_new(vm, fd, -1);
	if (!ch)
		return -ENOMEM;
	/* in the reserve's place (nsm_fd_room()), as vm_accept()'s */
	ch->refuse = refuse;
	ep_twin(fd);
	return 0;
}

/*
 * ATTACH_CLAIM: a claim another NSM read from this stream, for a connection
 * offered here before the VM moved away (nsmctl.h, "Claims across a
 * move").  -ENOENT when it is not one of ours: nkd then asks the next NSM.
 */
static int attach_claim(const struct nsm_claim *c, int fd)
{
	struct vm *vm = vm_find(c->vm_id);
	struct chan *ch;
	int ret;

	if (!vm)
		return -ENOENT;
	if (nk_hdr_check(&c->hdr, 0) != (int)sizeof(c->req) || c->hdr.op != NK_OP_HELLO ||
	    c->hdr.err || c->req.kind != NK_HELLO_ACCEPT) {
		vm_warn(vm, "ATTACH_CLAIM: not a HELLO ACCEPT");
		return -EINVAL;
	}
	if (!nsock_claim_known(vm, &c->req))
		return -ENOENT;
	ret = check_stream_fd(fd, false);
	if (ret) {
		vm_warn(vm, "ATTACH_CLAIM: not a connected stream socket");
		return ret;
	}
	ch = chan_new(vm, fd, -1);
	if (!ch)
		return -ENOMEM;
	ep_twin(fd);
	vm_debug(vm, "connection %llu on %#llx claimed after the VM moved away (nkd passed the claim on)",
		(unsigned long long)c->req.conn_id, (unsigned long long)c->req.listener);
	chan_claim(ch, &c->hdr, &c->req);
	return 0;
}

/*
 * A claim for a listener this NSM does not know, read from ch: when the VM
 * came here less than NSM_CLAIM_FWD_S ago (a move), pass the stream and
 * the claim to nkd, which finds the NSM that offered the connection
 * (nsmctl.h).  True when sent: nkd holds the stream, the caller forgets it.
 */
bool ctl_claim_forward(struct chan *ch, const struct nk_hdr *h, const struct nk_hello_req *req)
{
	struct vm *vm = ch->vm;
	struct {
		struct nsm_hdr h;
		struct nsm_claim c;
	} m;

	if (nsm.ctl_fd < 0 || now_mono() >= vm->fwd_until || vm->nfwd >= NSM_CLAIM_FWD_MAX)
		return false;
	memset(&m, 0, sizeof(m));
	m.h = (struct nsm_hdr){
		.magic = NSM_CTL_MAGIC,
		.version = NSM_CTL_VERSION,
		.type = NSM_MSG_CLAIM_FWD,
		.len = sizeof(m),
	};
	m.c.vm_id = vm->id;
	m.c.hdr = *h;
	m.c.req = *req;
	if (nk_send_fd(nsm.ctl_fd, &m, sizeof(m), ch->fd, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		vm_debug(vm, "claim of connection %llu on %#llx not passed to nkd: %s",
			 (unsigned long long)req->conn_id, (unsigned long long)req->listener,
			 strerror(errno));
		return false;
	}
	vm->nfwd++;
	vm_debug(vm, "claim of connection %llu on %#llx (no such listener here) passed to nkd",
		 (unsigned long long)req->conn_id, (unsigned long long)req->listener);
	return true;
}

/* One guest socket as a CONN_BATCH entry; false when it has no kernel socket. */
static bool conn_entry(const struct nsock *ns, struct nsm_conn *c)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (ns->dead || ns->fd < 0)
		return false;
	*c = (struct nsm_conn){
		.token = ns->token,
		.vm_id = ns->vm->id,
		.proto = ns->type == SOCK_DGRAM ? NSM_CONN_UDP : NSM_CONN_TCP,
		.state = ns->state,
	};
	if (!getsockname(ns->fd, (struct sockaddr *)&ss, &len))
		nk_addr_from_sockaddr(&c->local, (struct sockaddr *)&ss, len);
	len = sizeof(ss);
	if (ns->state != NK_STATE_LISTENING &&
	    !getpeername(ns->fd, (struct sockaddr *)&ss, &len))
		nk_addr_from_sockaddr(&c->peer, (struct sockaddr *)&ss, len);
	else if (ns->state == NK_STATE_CONNECTING)
		c->peer = ns->connect_to;	/* no name before the handshake */
	if (ns->relay) {
		c->bytes_in = ns->relay->down.bytes;
		c->bytes_out = ns->relay->up.bytes + ns->relay->kbytes_done + krelay_bytes(ns);
	} else if (ns->udp) {
		c->bytes_in = ns->udp->bytes_down;
		c->bytes_out = ns->udp->bytes_up;
	}
	return true;
}

/* Add ns to the batch; send the batch when it is full. */
static void conn_add(struct nsm_conn_batch *b, const struct nsock *ns, uint32_t seq)
{
	if (!ns || !conn_entry(ns, &b->conns[b->n]) || ++b->n < NSM_CONN_BATCH)
		return;
	ctl_send_wait(NSM_MSG_CONN_BATCH, seq, 0, b, sizeof(*b), NSM_CTL_SEND_WAIT_MS);
	b->n = 0;
}

/*
 * CONN_LIST: CONN_BATCH packets with the request's seq; REPLY follows.
 * Connections offered to the guest but not yet accepted by it are
 * established TCP connections too (ss lists those in an accept queue):
 * they come from their listener's queue, or from the VM's orphans once
 * the listener closed.
 */
static int conn_list(const struct nsm_conn_list *m, uint32_t seq)
{
	struct nsm_conn_batch b = { 0 };
	struct list_head *p, *pt, *q, *qt, *o, *ot;
	size_t hdr = offsetof(struct nsm_conn_batch, conns);

	if (m->pad0)
		return -EINVAL;
	if (m->vm_id && !vm_find(m->vm_id))
		return -ENOENT;
	list_for_each_safe(p, pt, &nsm.vms) {
		struct vm *vm = list_entry(p, struct vm, node);

		if (m->vm_id && vm->id != m->vm_id)
			continue;
		list_for_each_safe(q, qt, &vm->socks) {
			struct nsock *ns = list_entry(q, struct nsock, vm_node);

			conn_add(&b, ns, seq);
			if (ns->state == NK_STATE_LISTENING)
				list_for_each_safe(o, ot, &ns->pending)
					conn_add(&b, list_entry(o, struct pending, node)->ns, seq);
		}
		list_for_each_safe(o, ot, &vm->orphans)
			conn_add(&b, list_entry(o, struct pending, node)->ns, seq);
	}
	if (b.n)
		ctl_send_wait(NSM_MSG_CONN_BATCH, seq, 0, &b,
			      hdr + b.n * sizeof(b.conns[0]), NSM_CTL_SEND_WAIT_MS);
	return 0;
}

/* VM_LIST: the id and name of every VM, in VM_BATCH packets; REPLY follows. */
static int vm_list(uint32_t seq)
{
	struct nsm_vm_batch b = { 0 };
	size_t hdr = offsetof(struct nsm_vm_batch, vms);
	struct list_head *p;

	list_for_each(p, &nsm.vms) {
		const struct vm *vm = list_entry(p, struct vm, node);

		b.vms[b.n].vm_id = vm->id;
		memcpy(b.vms[b.n].name, vm->name, NK_NAME_MAX);
		if (++b.n == NSM_VM_BATCH) {
			ctl_send_wait(NSM_MSG_VM_BATCH, seq, 0, &b, sizeof(b), NSM_CTL_SEND_WAIT_MS);
			memset(&b, 0, sizeof(b));
		}
	}
	if (b.n)
		ctl_send_wait(NSM_MSG_VM_BATCH, seq, 0, &b, hdr + b.n * sizeof(b.vms[0]),
			      NSM_CTL_SEND_WAIT_MS);
	return 0;
}

/*
 * VM_DRAIN: no new guest streams of the VM here (its listener fd goes), and
 * its listening guest sockets end, and its UDP sockets without a peer (a
 * server's, steered by the VM's address alone): their guests make them
 * again through nkd, on the new NSM (the library listens again, or binds
 * the same address again).  Connected sockets, control channels and the
 * addresses stay until VM_DEL.  Idempotent.
 */
static int vm_drain(uint32_t id)
{
	struct vm *vm = vm_find(id);
	struct list_head *p, *t;
	unsigned int n = 0, u = 0, left = 0;

	if (!vm)
		return -ENOENT;
	vm->drained = true;	/* before its listeners go: their offers wait longer */
	close_later(vm->lfd);
	vm->lfd = -1;
	list_for_each_safe(p, t, &vm->socks) {
		struct nsock *ns = list_entry(p, struct nsock, vm_node);

		if (ns->type == SOCK_STREAM && ns->state == NK_STATE_LISTENING) {
			nsock_kill(ns, 0);
			n++;
		} else if (ns->type == SOCK_DGRAM && ns->state != NK_STATE_CONNECTED) {
			nsock_kill(ns, 0);
			u++;
		} else {
			left++;
		}
	}
	vm_info(vm, "draining: %u listener%s and %u UDP socket%s without a peer closed (made "
		"again on the new NSM), %u socket%s stay until they end", n, n == 1 ? "" : "s",
		u, u == 1 ? "" : "s", left, left == 1 ? "" : "s");
	return 0;
}

/* Returns 0 or -errno; *used is set when the request took the fd. */
static int ctl_handle(const uint8_t *buf, ssize_t n, int msg_flags, const int *fds, int nfds,
		      bool reserve_used, bool *used)
{
	const struct nsm_hdr *h = (const void *)buf;
	const void *body = buf + sizeof(*h);
	const struct nsm_vm_ref *ref = body;
	size_t want;
	int needfds = 0;

	if ((msg_flags & MSG_CTRUNC) && nfds) {
		warn("nkd: message type %u came with more than %d fds", h->type, NK_FDS_MAX);
		return -EINVAL;
	}
	if (msg_flags & MSG_CTRUNC) {
		/* nsm_fd_room() found no slot, not even the reserve's */
		warn("nkd: message type %u: the kernel dropped its descriptor (out of descriptors)",
		     h->type);
		return -ENOBUFS;
	}
	if (msg_flags & MSG_TRUNC) {
		warn("nkd: message truncated");
		return -EMSGSIZE;
	}
	if (h->magic != NSM_CTL_MAGIC || h->version != NSM_CTL_VERSION || h->len != n || h->err) {
		warn("nkd: bad header (magic %#x version %u len %u/%zd)", h->magic, h->version,
		     h->len, n);
		return -EPROTO;
	}
	switch (h->type) {
	case NSM_MSG_VM_ADD:
		want = sizeof(struct nsm_vm_add);
		break;
	case NSM_MSG_VM_DEL:
	case NSM_MSG_VM_DRAIN:
	case NSM_MSG_VM_LIST:
		want = sizeof(struct nsm_vm_ref);
		break;
	case NSM_MSG_CONN_LIST:
		want = sizeof(struct nsm_conn_list);
		break;
	case NSM_MSG_ATTACH_LISTENER:
	case NSM_MSG_ATTACH_STREAM:
		want = sizeof(struct nsm_vm_ref);
		needfds = 1;
		break;
	case NSM_MSG_ATTACH_CLAIM:
		want = sizeof(struct nsm_claim);
		needfds = 1;
		break;
	default:
		warn("nkd: unknown message type %u", h->type);
		return -EOPNOTSUPP;
	}
	if ((size_t)n != sizeof(*h) + want) {
		warn("nkd: message type %u has %zd bytes", h->type, n);
		return -EPROTO;
	}
	if (nfds != needfds) {
		warn("nkd: message type %u came with %d fds", h->type, nfds);
		return -EINVAL;
	}
	if (h->type != NSM_MSG_VM_ADD && ref->pad0)
		return -EINVAL;

	switch (h->type) {
	case NSM_MSG_VM_ADD:
		return vm_add(body);
	case NSM_MSG_VM_DEL:
		return vm_del(ref->vm_id);
	case NSM_MSG_VM_DRAIN:
		return vm_drain(ref->vm_id);
	case NSM_MSG_CONN_LIST:
		return conn_list(body, h->seq);
	case NSM_MSG_VM_LIST:
		return ref->vm_id ? -EINVAL : vm_list(h->seq);
	case NSM_MSG_ATTACH_LISTENER:
		*used = true;
		return attach_listener(ref->vm_id, fds[0]);
	case NSM_MSG_ATTACH_CLAIM:
		*used = true;
		return attach_claim(body, fds[0]);
	default:
		*used = true;
		return attach_stream(ref->vm_id, fds[0], reserve_used);
	}
}

static void ctl_recv_one(void)
{
	uint8_t buf[NSM_CTL_MSG_MAX + 1];
	int fds[NK_FDS_MAX], nfds, msg_flags = 0, i, ret;
	bool used = false, reserve_used;
	ssize_t n;
	uint32_t seq;

	reserve_used = nsm_fd_room();
	n = nk_recv_fds(nsm.ctl_fd, buf, sizeof(buf), MSG_DONTWAIT, fds, NK_FDS_MAX, &nfds,
			&msg_flags);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR) {
			warn_perror("nkd connection");
			ctl_drop();
		}
		goto out_close_fds;
	}
	if (n == 0) {
		info("nkd disconnected; VMs and connections stay");
		ctl_drop();
		goto out_close_fds;
	}
	if ((size_t)n < sizeof(struct nsm_hdr)) {
		warn("nkd: short message (%zd bytes) ignored", n);
		goto out_close_fds;
	}
	memcpy(&seq, buf + offsetof(struct nsm_hdr, seq), sizeof(seq));
	ret = ctl_handle(buf, n, msg_flags, fds, nfds, reserve_used, &used);
	/* waits for room: claims passed to nkd (CLAIM_FWD) share the socket */
	ctl_send_wait(NSM_MSG_REPLY, seq, -ret, NULL, 0, NSM_CTL_SEND_WAIT_MS);
	if (used && ret)
		close(fds[0]);
	if (used)
		fds[0] = -1;

out_close_fds:
	for (i = 0; i < nfds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (reserve_used)
		nsm_reserve_fd();	/* the slot, if the message did not keep it */
}

void ctl_event(uint32_t events)
{
	/* One message per wake-up; level-triggered epoll calls again. */
	(void)events;
	ctl_recv_one();
}
