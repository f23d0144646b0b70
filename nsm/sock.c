// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Guest sockets: the real kernel sockets behind them and the control
 * requests that drive them (BIND, LISTEN, CONNECT, SETSOCKOPT, GETSOCKOPT,
 * GETNAME, SHUTDOWN, STATUS), plus HELLO SOCKET / HELLO ACCEPT, the token
 * table and the tombstones of ended streams.
 *
 * Theory of operation
 * -------------------
 * A guest socket lives in this NSM's network namespace, and the VM's
 * addresses are the only ones it may use.  BIND checks the address against
 * the VM's list; a wildcard bind is remembered as such while the real
 * socket is bound to the VM's first address of the family.  LISTEN on a
 * wildcard-bound socket adds one listening socket per other VM address
 * (same port, same options), so a VM's wildcard listener sees connections
 * to every one of its addresses and none to another VM's.  CONNECT binds an
 * unbound socket to the VM's first address of the destination's family
 * (IP_BIND_ADDRESS_NO_PORT) so the source is always the VM's.
 *
 * Options the guest sets are checked against a whitelist, applied to the
 * real socket(s) and remembered, so that sockets created later (extra
 * listeners, the socket re-created after a failed connect) get them too.
 *
 * A listening socket that becomes readable is accepted while the guest
 * listener has fewer than backlog + 1 connections announced and unclaimed;
 * each gets a conn_id and one ACCEPT_READY record on the listener's stream.
 * The guest claims it with a new stream saying HELLO ACCEPT.
 *
 * A UDP guest socket has the same address rules with one real UDP socket
 * per VM address it receives on.  A wildcard BIND binds the primary socket
 * to the VM's first address of the family and one extra socket per other
 * VM address (same port), so datagrams to any of the VM's addresses
 * arrive.  An unbound socket is bound on its first datagram or CONNECT to
 * the VM's first address of the destination's family, port 0 (Linux's
 * implicit bind); GETNAME reports the wildcard and the port for both, as
 * Linux does until the socket is connected.  A datagram leaves from the
 * socket bound to an address of its destination's family (an IPv6 socket
 * reaches IPv4 peers from a v4-mapped VM address).  CONNECT is synchronous:
 * connect() on that socket, the others are closed (a connected Linux
 * socket receives on its one local address only), and CONNECT to
 * NK_AF_UNSPEC dissolves it (a wildcard bind to a port gets its extra
 * sockets back).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/resource.h>

#include "log.h"
#include "nkaddr.h"
#include "nsm.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef SO_BINDTOIFINDEX
#define SO_BINDTOIFINDEX 62
#endif

/* ---- token table -------------------------------------------------------- */

static uint32_t hslot(uint64_t token, uint32_t size)
{
	token ^= token >> 29;
	token *= 0xbf58476d1ce4e5b9ULL;
	token ^= token >> 32;
	return (uint32_t)token & (size - 1);
}

static struct nsock *hash_find(uint64_t token)
{
	struct nsock *ns;

	if (!nsm.hsize)
		return NULL;
	for (ns = nsm.htab[hslot(token, nsm.hsize)]; ns; ns = ns->hnext)
		if (ns->token == token)
			return ns;
	return NULL;
}

static int hash_insert(struct nsock *ns)
{
	uint32_t i, s;

	if (nsm.hcount + 1 > nsm.hsize) {
		uint32_t size = nsm.hsize ? nsm.hsize * 2 : 1024;
		struct nsock **t = calloc(size, sizeof(*t));

		if (!t)
			return -ENOMEM;
		for (i = 0; i < nsm.hsize; i++) {
			struct nsock *n = nsm.htab[i], *next;

			for (; n; n = next) {
				next = n->hnext;
				s = hslot(n->token, size);
				n->hnext = t[s];
				t[s] = n;
			}
		}
		free(nsm.htab);
		nsm.htab = t;
		nsm.hsize = size;
	}
	s = hslot(ns->token, nsm.hsize);
	ns->hnext = nsm.htab[s];
	nsm.htab[s] = ns;
	nsm.hcount++;
	return 0;
}

static void hash_remove(struct nsock *ns)
{
	struct nsock **pp;

	if (!nsm.hsize)
		return;
	for (pp = &nsm.htab[hslot(ns->token, nsm.hsize)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == ns) {
			*pp = ns->hnext;
			nsm.hcount--;
			return;
		}
	}
}

/* Tokens come from a pool filled 64 at a time: one getrandom() per 64
 * sockets instead of one per socket. */
static int new_token(uint64_t *token)
{
	static uint64_t pool[64];
	static unsigned int left;
	uint64_t t;

	do {
		if (!left) {
			if (getrandom(pool, sizeof(pool), 0) != sizeof(pool))
				return -errno;
			left = 64;
		}
		t = pool[--left];
	} while (!t || hash_find(t));
	*token = t;
	return 0;
}

struct nsock *nsock_lookup(struct vm *vm, uint64_t token)
{
	struct nsock *ns = hash_find(token);

	return ns && ns->vm == vm && !ns->dead ? ns : NULL;
}

/* ---- tombstones --------------------------------------------------------- */

void tomb_add(uint64_t token, uint32_t vm_id, int err)
{
	nsm.tombs[nsm.tomb_next] = (struct tomb){
		.token = token, .when = now_mono(), .vm_id = vm_id, .err = err,
	};
	nsm.tomb_next = (nsm.tomb_next + 1) % NSM_TOMB_MAX;
}

static const struct tomb *tomb_find(uint64_t token, uint32_t vm_id)
{
	uint64_t now = now_mono();
	uint32_t i;

	for (i = 0; i < NSM_TOMB_MAX; i++) {
		const struct tomb *t = &nsm.tombs[(nsm.tomb_next + NSM_TOMB_MAX - 1 - i) % NSM_TOMB_MAX];

		if (!t->token || now - t->when > NSM_TOMB_AGE)
			break;	/* newest first: the rest is older */
		if (t->token == token && t->vm_id == vm_id)
			return t;
	}
	return NULL;
}

/* ---- life cycle --------------------------------------------------------- */

/* A socket with its token, not yet on a stream nor in vm->socks. */
static struct nsock *nsock_alloc(struct vm *vm, int family, int fd)
{
	struct nsock *ns = calloc(1, sizeof(*ns));

	if (!ns)
		return NULL;
	if (new_token(&ns->token) || hash_insert(ns)) {
		free(ns);
		return NULL;
	}
	ns->vm = vm;
	ns->family = family;
	ns->type = SOCK_STREAM;
	ns->fd = fd;
	ns->next_conn_id = 1;
	list_init(&ns->pending);
	list_init(&ns->vm_node);
	return ns;
}

/* ns gets ch as its stream and joins its VM's sockets. */
static void nsock_attach(struct nsock *ns, struct chan *ch)
{
	ns->chan = ch;
	list_add_tail(&ns->vm_node, &ns->vm->socks);
	ns->vm->nsocks++;
	nsm.nsocks++;
	ns->counted = true;
	ch->ns = ns;
	ch->mode = CH_SOCK;
}

struct nsock *nsock_new(struct vm *vm, struct chan *ch, int family, int fd)
{
	struct nsock *ns = nsock_alloc(vm, family, fd);

	if (!ns)
		return NULL;
	ns->state = NK_STATE_SETUP;
	nsock_attach(ns, ch);
	return ns;
}

/*
 * The socket of a connection lns accepted.  Offered (NK_HELLO_F_OFFER), it
 * exists from the offer on: it has its token, so the guest's requests on
 * it work before its claim (HELLO ACCEPT) has been read, but no stream and
 * no place in vm->socks until then (nsock_attach()); the pending entry
 * owns it.
 */
static struct nsock *nsock_accepted(struct nsock *lns, int fd)
{
	struct nsock *ns = nsock_alloc(lns->vm, lns->family, fd);

	if (!ns)
		return NULL;
	ns->state = NK_STATE_CONNECTED;
	ns->bound = true;
	/* IPV6_V6ONLY as the guest's listener had it (see op_getsockopt). */
	ns->wildcard = lns->wildcard;
	ns->v6only = lns->v6only;
	ns->sndbuf_set = lns->sndbuf_set;	/* as the kernel's child has it */
	ns->lowat_set = lns->lowat_set;
	ns->cork_on = lns->cork_on;		/* the child inherits TCP_CORK too */
	return ns;
}

static void pending_free(struct nsock *ns, struct pending *p)
{
	list_del(&p->node);
	ns->npending--;
	if (p->ns)
		nsock_kill(p->ns, ECONNABORTED);	/* closes p->fd */
	else
		close_later(p->fd);
	free_later(p);
}

static void orphan_drop_oldest(struct vm *vm);

void nsock_kill(struct nsock *ns, int err)
{
	struct list_head *p, *t;
	struct chan *ch;
	int i;

	if (ns->dead)
		return;
	ns->dead = true;
	tomb_add(ns->token, ns->vm->id, err);
	hash_remove(ns);
	if (ns->counted) {	/* attached: in the VM's sockets (ns->chan may
				 * be gone already: chan_kill()) */
		ns->counted = false;
		ns->vm->nsocks--;
		nsm.nsocks--;
	}
	list_del(&ns->vm_node);
	vm_debug(ns->vm, "socket %#llx closed%s%s", (unsigned long long)ns->token,
		 err ? ": " : "", err ? strerror(err) : "");
	if (ns->relay)
		relay_free(ns);
	if (ns->udp)
		udp_free(ns);
	close_later(ns->fd);
	ns->fd = -1;
	for (i = 0; i < ns->nlfds; i++)
		close_later(ns->lfds[i]);
	free_later(ns->lfds);
	free_later(ns->laddrs);
	list_for_each_safe(p, t, &ns->pending) {
		struct pending *pc = list_entry(p, struct pending, node);

		if (!pc->ns) {
			pending_free(ns, pc);
			continue;
		}
		/* Offered: the guest's accept() may have returned already,
		 * its claim in flight.  Linux keeps an accepted connection
		 * when its listener closes; keep this one for the claim.  A
		 * drain closed the listener, not the guest: the offer waits
		 * as long as with its listener open (the claim comes through
		 * the VM's new NSM, nsmctl.h). */
		list_del(&pc->node);
		ns->npending--;
		pc->listener = ns->token;
		pc->expires = now_mono() + NSM_ORPHAN_GRACE;
		if (ns->vm->drained && pc->since + NSM_PENDING_TIMEOUT > pc->expires)
			pc->expires = pc->since + NSM_PENDING_TIMEOUT;
		list_add_tail(&pc->node, &ns->vm->orphans);
		if (++ns->vm->norphans > NSM_ORPHANS_MAX)
			orphan_drop_oldest(ns->vm);
	}
	free_later(ns->opts);
	ch = ns->chan;
	if (ch) {
		ns->chan = NULL;
		ch->ns = NULL;
		chan_kill(ch);
	}
	free_later(ns);
}

static void orphan_free(struct vm *vm, struct pending *pc)
{
	vm_debug(vm, "socket %#llx: offered, never claimed after its listener closed",
		 (unsigned long long)pc->ns->token);
	list_del(&pc->node);
	vm->norphans--;
	nsock_kill(pc->ns, ECONNABORTED);
	free_later(pc);
}

/* Close the orphaned offers of vm whose time is up (all: every one).  Whole
 * seconds: an offer gets at least its time. */
static void orphans_expire(struct vm *vm, bool all)
{
	struct list_head *p, *t;
	uint64_t now = now_mono();

	list_for_each_safe(p, t, &vm->orphans) {
		struct pending *pc = list_entry(p, struct pending, node);

		if (all || now > pc->expires)
			orphan_free(vm, pc);
	}
}

/* Over NSM_ORPHANS_MAX (a guest listening and closing in a loop): the
 * oldest goes first. */
static void orphan_drop_oldest(struct vm *vm)
{
	if (!list_empty(&vm->orphans))
		orphan_free(vm, list_entry(vm->orphans.next, struct pending, node));
}

void vm_kill_sockets(struct vm *vm)
{
	struct list_head *p, *t;

	/* What a guest asking STATUS afterwards learns. */
	list_for_each_safe(p, t, &vm->socks)
		list_entry(p, struct nsock, vm_node)->end_err = ECONNABORTED;
	list_for_each_safe(p, t, &vm->chans)
		chan_kill(list_entry(p, struct chan, vm_node));
	list_for_each_safe(p, t, &vm->socks)
		nsock_kill(list_entry(p, struct nsock, vm_node), ECONNABORTED);
	orphans_expire(vm, true);
}

/* ---- addresses ---------------------------------------------------------- */

static int nk_family(int af)
{
	return af == AF_INET ? NK_AF_INET : NK_AF_INET6;
}

static bool vm_has_ip(const struct vm *vm, const struct nk_addr *a)
{
	uint32_t i;

	for (i = 0; i < vm->naddrs; i++)
		if (nk_addr_same_ip(&vm->addrs[i].addr, a))
			return true;
	return false;
}

static const struct nk_addr *vm_first(const struct vm *vm, int nkfam)
{
	uint32_t i;

	for (i = 0; i < vm->naddrs; i++)
		if (vm->addrs[i].addr.family == nkfam)
			return &vm->addrs[i].addr;
	return NULL;
}

/* The guest's loopback stays in the guest; "any" would be ours. */
bool nsock_dst_refused(const struct nk_addr *a)
{
	struct nk_addr ip = nk_addr_is_v4mapped(a) ? nk_addr_v4unmap(a) : *a;

	return nk_addr_is_loopback(&ip) || nk_addr_is_any(&ip);
}

int nsock_sockaddr(const struct nk_addr *a, struct sockaddr_storage *ss)
{
	int len = nk_addr_to_sockaddr(a, ss);

	/* A link-local address only means something on our device. */
	if (nk_addr_is_linklocal(a))
		((struct sockaddr_in6 *)ss)->sin6_scope_id = nsm.ifindex;
	return len;
}

static int sock_name(int fd, bool peer, struct nk_addr *out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int ret;

	memset(out, 0, sizeof(*out));
	ret = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
		   : getsockname(fd, (struct sockaddr *)&ss, &len);
	if (ret)
		return -errno;
	ret = nk_addr_from_sockaddr(out, (struct sockaddr *)&ss, len);
	out->flowinfo = 0;
	out->scope_id = 0;
	return ret;
}

static int ipv6_only(const struct nsock *ns)
{
	int v = 0;
	socklen_t len = sizeof(v);

	if (ns->family != AF_INET6 || ns->fd < 0)
		return 0;
	if (getsockopt(ns->fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len))
		return 0;
	return v;
}

/*
 * The local address as the guest sees it: a wildcard bind (and a UDP
 * socket's implicit bind) stays the wildcard until the socket is connected.
 */
static int local_name(struct nsock *ns, struct nk_addr *out)
{
	bool wild = ns->state != NK_STATE_CONNECTED &&
		    (ns->wildcard || (ns->type == SOCK_DGRAM && ns->autobound));
	int ret;

	if (ns->fd < 0) {
		memset(out, 0, sizeof(*out));
		out->family = nk_family(ns->family);
		if (ns->bound && !wild)
			*out = ns->bind_addr;
		else if (ns->bound)
			out->port = ns->bind_addr.port;
		return 0;
	}
	ret = sock_name(ns->fd, false, out);
	if (!ret && wild) {
		uint16_t port = out->port;

		memset(out, 0, sizeof(*out));
		out->family = nk_family(ns->family);
		out->port = port;
	}
	return ret;
}

/* ---- options ------------------------------------------------------------ */

enum { OPT_SET = 1, OPT_GET = 2, OPT_BOTH = 3 };

static const struct opt_rule {
	int level, name, how;
} opt_rules[] = {
	{ SOL_SOCKET, SO_REUSEADDR, OPT_BOTH },
	{ SOL_SOCKET, SO_REUSEPORT, OPT_BOTH },
	{ SOL_SOCKET, SO_KEEPALIVE, OPT_BOTH },
	{ SOL_SOCKET, SO_RCVBUF, OPT_BOTH },
	{ SOL_SOCKET, SO_SNDBUF, OPT_BOTH },
	{ SOL_SOCKET, SO_LINGER, OPT_BOTH },
	{ SOL_SOCKET, SO_PRIORITY, OPT_BOTH },
	{ SOL_SOCKET, SO_RCVLOWAT, OPT_BOTH },
	{ SOL_SOCKET, SO_OOBINLINE, OPT_BOTH },
	{ SOL_SOCKET, SO_BROADCAST, OPT_BOTH },
	{ SOL_SOCKET, SO_ERROR, OPT_GET },
	{ SOL_SOCKET, SO_TYPE, OPT_GET },
	{ SOL_SOCKET, SO_ACCEPTCONN, OPT_GET },
	{ SOL_SOCKET, SO_DOMAIN, OPT_GET },
	{ SOL_SOCKET, SO_PROTOCOL, OPT_GET },
	{ IPPROTO_TCP, TCP_NODELAY, OPT_BOTH },
	{ IPPROTO_TCP, TCP_KEEPIDLE, OPT_BOTH },
	{ IPPROTO_TCP, TCP_KEEPINTVL, OPT_BOTH },
	{ IPPROTO_TCP, TCP_KEEPCNT, OPT_BOTH },
	{ IPPROTO_TCP, TCP_CORK, OPT_BOTH },
	{ IPPROTO_TCP, TCP_CONGESTION, OPT_BOTH },
	{ IPPROTO_TCP, TCP_USER_TIMEOUT, OPT_BOTH },
	{ IPPROTO_TCP, TCP_DEFER_ACCEPT, OPT_BOTH },
	{ IPPROTO_TCP, TCP_QUICKACK, OPT_BOTH },
	{ IPPROTO_TCP, TCP_MAXSEG, OPT_BOTH },
	{ IPPROTO_TCP, TCP_NOTSENT_LOWAT, OPT_BOTH },
	{ IPPROTO_TCP, TCP_SYNCNT, OPT_BOTH },
	{ IPPROTO_TCP, TCP_LINGER2, OPT_BOTH },
	{ IPPROTO_TCP, TCP_WINDOW_CLAMP, OPT_BOTH },
	{ IPPROTO_TCP, TCP_FASTOPEN, OPT_BOTH },
	{ IPPROTO_TCP, TCP_INFO, OPT_GET },
	{ IPPROTO_IP, IP_TOS, OPT_BOTH },
	{ IPPROTO_IP, IP_TTL, OPT_BOTH },
	{ IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, OPT_BOTH },
	{ IPPROTO_IP, IP_MULTICAST_TTL, OPT_BOTH },
	{ IPPROTO_IP, IP_MULTICAST_LOOP, OPT_BOTH },
	{ IPPROTO_IP, IP_MTU_DISCOVER, OPT_BOTH },
	{ IPPROTO_IP, IP_MTU, OPT_GET },
	{ IPPROTO_IPV6, IPV6_V6ONLY, OPT_BOTH },
	{ IPPROTO_IPV6, IPV6_TCLASS, OPT_BOTH },
	{ IPPROTO_IPV6, IPV6_UNICAST_HOPS, OPT_BOTH },
	{ IPPROTO_IPV6, IPV6_MULTICAST_HOPS, OPT_BOTH },
	{ IPPROTO_IPV6, IPV6_MULTICAST_LOOP, OPT_BOTH },
	{ IPPROTO_IPV6, IPV6_MTU_DISCOVER, OPT_BOTH },
	{ IPPROTO_IPV6, IPV6_MTU, OPT_GET },
};

/* Options that would let a guest escape its addresses: refused loudly. */
static bool opt_forbidden(int level, int name)
{
	return (level == SOL_SOCKET && (name == SO_BINDTODEVICE || name == SO_BINDTOIFINDEX)) ||
	       (level == IPPROTO_IP && (name == IP_FREEBIND || name == IP_TRANSPARENT)) ||
	       (level == IPPROTO_IPV6 && (name == IPV6_FREEBIND || name == IPV6_TRANSPARENT));
}

static bool opt_allowed(int level, int name, int how)
{
	size_t i;

	for (i = 0; i < sizeof(opt_rules) / sizeof(opt_rules[0]); i++)
		if (opt_rules[i].level == level && opt_rules[i].name == name)
			return opt_rules[i].how & how;
	return false;
}

static int opt_save(struct nsock *ns, int level, int name, const void *val, uint32_t len)
{
	struct saved_opt *o = NULL;
	int i;

	if (len > NSM_SAVED_OPT_LEN)
		return -E2BIG;
	for (i = 0; i < ns->nopts; i++)
		if (ns->opts[i].level == level && ns->opts[i].name == name)
			o = &ns->opts[i];
	if (!o) {
		if (!ns->opts) {
			ns->opts = calloc(NSM_SAVED_OPTS, sizeof(*ns->opts));
			if (!ns->opts)
				return -ENOMEM;
		}
		if (ns->nopts == NSM_SAVED_OPTS)
			return -ENOMEM;
		o = &ns->opts[ns->nopts++];
	}
	o->level = level;
	o->name = name;
	o->len = len;
	memcpy(o->val, val, len);
	return 0;
}

/*
 * setsockopt() on a real socket of the guest's.  SO_LINGER on with a time
 * marks the fd first, so that the NSM never waits in its close()
 * (close_now()); unmarked, it is not applied (ENOMEM).
 */
/*
 * TCP_CONGESTION names an algorithm; one that is not loaded makes the
 * kernel load module tcp_NAME for a caller with CAP_NET_ADMIN, which the
 * NSM has and the guest must not borrow.  Only the algorithms the host
 * has (tcp_available_congestion_control) are taken; another is ENOENT,
 * Linux's answer for an unknown one.
 */
#define NSM_CC_NAME_MAX	16	/* the kernel's TCP_CA_NAME_MAX */

static bool cc_available(const void *val, socklen_t len)
{
	char want[NSM_CC_NAME_MAX] = "", have[1024], *tok, *save;
	size_t n = len < sizeof(want) - 1 ? len : sizeof(want) - 1;
	FILE *f;

	memcpy(want, val, n);
	want[n] = '\0';
	f = fopen("/proc/sys/net/ipv4/tcp_available_congestion_control", "re");
	if (!f)
		return false;	/* cannot tell: no name is safe */
	if (!fgets(have, sizeof(have), f))
		have[0] = '\0';
	fclose(f);
	for (tok = strtok_r(have, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
		if (!strcmp(tok, want))
			return true;
	return false;
}

static int guest_setsockopt(const struct nsock *ns, int fd, int level, int name, const void *val,
			    socklen_t len)
{
	struct linger lg;

	/* (a UDP socket answers IPPROTO_TCP options itself: ENOPROTOOPT) */
	if (level == IPPROTO_TCP && name == TCP_CONGESTION && ns->type == SOCK_STREAM && val &&
	    len && !cc_available(val, len)) {
		errno = ENOENT;
		return -1;
	}

	if (level == SOL_SOCKET && name == SO_LINGER && val && len >= sizeof(lg)) {
		memcpy(&lg, val, sizeof(lg));
		if (lg.l_onoff && lg.l_linger && fd_may_linger(fd)) {
			errno = ENOMEM;
			return -1;
		}
	}
	return setsockopt(fd, level, name, val, len);
}

static void opts_apply(struct nsock *ns, int fd)
{
	int i;

	for (i = 0; i < ns->nopts; i++) {
		const struct saved_opt *o = &ns->opts[i];

		if (guest_setsockopt(ns, fd, o->level, o->name, o->val, o->len))
			vm_debug(ns->vm, "replaying option %d/%d: %s", o->level, o->name,
				 strerror(errno));
	}
}

/*
 * One VM must not take the descriptors the other VMs of the NSM need.
 * Once the table is more than half full (the number of the descriptor
 * just made says how full: the kernel gives the lowest free one), a VM
 * that holds more than its share of the NSM's guest sockets (all of them
 * over the VMs the NSM serves) gets no more, ENOBUFS as at the limit
 * (logged), while the others still do; a listener of such a VM leaves new
 * connections in its backlog (as at the limit), taken once it is under
 * its share again.  An NSM that serves one VM lets it use the whole table.
 */
static bool vm_over_share(struct vm *vm, int fd)
{
	static uint64_t nofile, nofile_at;
	struct list_head *p;
	struct rlimit rl;
	unsigned int nvms = 0;
	int probe = -1;

	list_for_each(p, &nsm.vms)
		nvms++;
	if (nvms < 2 || (uint64_t)vm->nsocks * nvms <= nsm.nsocks)
		return false;
	/* the limit, read again at most once a second (prlimit may change
	 * it); far from half of it (six descriptors a socket at most), no
	 * need to look */
	if (now_mono() != nofile_at) {
		nofile_at = now_mono();
		nofile = getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY ?
			 0 : rl.rlim_cur;
	}
	if (!nofile || ((uint64_t)nsm.nsocks * 6 + 64 < nofile / 2 && fd < 0))
		return false;
	if (fd < 0) {	/* how full: the lowest free descriptor */
		probe = fcntl(nsm.epfd, F_DUPFD_CLOEXEC, 0);
		if (probe < 0)
			return out_of_fds(errno);
		fd = probe;
		close(probe);
	}
	if ((uint64_t)fd < nofile / 2)
		return false;
	vm_glog(vm, NK_LOG_WARN, "vm holds %u of the NSM's %u guest sockets, more than its "
		"share, with %d of %llu descriptors in use: %s", vm->nsocks, nsm.nsocks, fd,
		(unsigned long long)nofile,
		probe >= 0 ? "its listener's connections wait in the backlog"
			   : "no socket for the guest (ENOBUFS)");
	return true;
}

/*
 * A socket for the guest, or -errno.  At the descriptor limit the pooled
 * pipes are given up first; still none is ENOBUFS for the guest: the
 * NSM's descriptor table (EMFILE, ENFILE) is not the guest's, whose
 * program could only close its own.
 */
static int guest_socket(struct vm *vm, int af, int type)
{
	int fd = socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 && out_of_fds(errno) && relay_pool_drain())
		fd = socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0 && vm_over_share(vm, fd)) {
		close(fd);
		return -ENOBUFS;
	}
	if (fd >= 0)
		return fd;
	if (!out_of_fds(errno))
		return -errno;
	vm_glog(vm, NK_LOG_WARN, "no socket for the guest: %s (ENOBUFS to the guest)",
		strerror(errno));
	return -ENOBUFS;
}

static int sock_create(struct nsock *ns)
{
	int fd = guest_socket(ns->vm, ns->family, ns->type);

	if (fd < 0)
		return fd;
	opts_apply(ns, fd);
	return fd;
}

static int sock_bind(int fd, const struct nk_addr *a)
{
	struct sockaddr_storage ss;
	int len = nsock_sockaddr(a, &ss);

	if (len < 0)
		return len;
	return bind(fd, (struct sockaddr *)&ss, len) ? -errno : 0;
}

/*
 * The real socket, re-created (and re-bound) after a failed connect (TCP)
 * or a failed wildcard bind (UDP, whose sockets are always in epoll).
 */
static int ensure_fd(struct nsock *ns)
{
	int fd, ret;

	if (ns->fd >= 0)
		return 0;
	fd = sock_create(ns);
	if (fd < 0)
		return fd;
	if (ns->bound) {
		ret = sock_bind(fd, &ns->bind_addr);
		if (ret) {
			close(fd);
			return ret;
		}
	}
	if (ns->type == SOCK_DGRAM) {
		ret = ep_add(fd, EP_UDP, ns, 0);
		if (ret) {
			close(fd);
			return ret;
		}
	}
	ns->fd = fd;
	return 0;
}

/* ---- HELLO -------------------------------------------------------------- */

int nsock_hello_socket(struct chan *ch, const struct nk_hello_req *req, uint64_t *token)
{
	struct nsock *ns;
	int af, fd, type, ret;

	if (req->family == NK_AF_INET)
		af = AF_INET;
	else if (req->family == NK_AF_INET6)
		af = AF_INET6;
	else
		return -EAFNOSUPPORT;
	if (req->type == NK_SOCK_STREAM)
		type = SOCK_STREAM;
	else if (req->type == NK_SOCK_DGRAM)
		type = SOCK_DGRAM;
	else
		return -ESOCKTNOSUPPORT;
	fd = guest_socket(ch->vm, af, type);
	if (fd < 0)
		return fd;
	ns = nsock_new(ch->vm, ch, af, fd);
	if (!ns) {
		close(fd);
		return -ENOMEM;
	}
	ns->type = type;
	if (type == SOCK_DGRAM) {
		ret = udp_start(ns);
		if (ret) {
			nsock_kill(ns, -ret);	/* and the stream: no reply */
			return ret;
		}
	}
	*token = ns->token;
	vm_debug(ch->vm, "socket %#llx (IPv%u %s) for pid %u", (unsigned long long)ns->token,
		 req->family, type == SOCK_DGRAM ? "UDP" : "TCP", req->pid);
	return 0;
}

static void listen_pause(struct nsock *ns, bool pause)
{
	int i;

	if (ns->accept_paused == pause)
		return;
	ns->accept_paused = pause;
	ep_set(ns->fd, pause ? 0 : EPOLLIN);
	for (i = 0; i < ns->nlfds; i++)
		ep_set(ns->lfds[i], pause ? 0 : EPOLLIN);
}

/* Whether req claims a connection this NSM offered on vm (waiting or orphaned). */
bool nsock_claim_known(struct vm *vm, const struct nk_hello_req *req)
{
	struct nsock *lns = nsock_lookup(vm, req->listener);
	struct list_head *p;

	if (lns && lns->state == NK_STATE_LISTENING) {
		list_for_each(p, &lns->pending) {
			if (list_entry(p, struct pending, node)->conn_id == req->conn_id)
				return true;
		}
	}
	list_for_each(p, &vm->orphans) {
		const struct pending *c = list_entry(p, struct pending, node);

		if (c->listener == req->listener && c->conn_id == req->conn_id)
			return true;
	}
	return false;
}

int nsock_hello_accept(struct chan *ch, const struct nk_hello_req *req, uint32_t seq)
{
	bool quiet = req->flags & NK_HELLO_F_QUIET;
	struct nk_hello_rep rep;
	struct nsock *lns, *ns;
	struct pending *pc = NULL;
	struct list_head *p, *t;
	int fd, ret;

	memset(&rep, 0, sizeof(rep));
	rep.nsm_id = nsm.instance;
	rep.flags = NSM_HELLO_FLAGS;
	lns = nsock_lookup(ch->vm, req->listener);
	if (lns && lns->state == NK_STATE_LISTENING) {
		list_for_each_safe(p, t, &lns->pending) {
			struct pending *c = list_entry(p, struct pending, node);

			if (c->conn_id == req->conn_id)
				pc = c;
		}
	}
	if (!pc) {
		/* An offer that outlived its listener (orphans_expire()). */
		list_for_each_safe(p, t, &ch->vm->orphans) {
			struct pending *c = list_entry(p, struct pending, node);

			if (c->listener == req->listener && c->conn_id == req->conn_id)
				pc = c;
		}
		if (!pc)
			return lns && lns->state == NK_STATE_LISTENING ? -ENOENT : -ENOTSOCK;
		ch->vm->norphans--;	/* it leaves the orphans below */
		lns = NULL;
	}
	if (quiet && !pc->ns)
		return -EINVAL;	/* announced without an offer: nothing to go by */
	fd = pc->fd;
	ns = pc->ns;
	rep.local = pc->local;
	rep.peer = pc->peer;
	list_del(&pc->node);
	free_later(pc);
	if (lns) {
		lns->npending--;
		if (lns->npending < lns->pending_max)
			listen_pause(lns, false);
	}

	if (!ns && lns)	/* announced with ACCEPT_READY (orphans were all offered) */
		ns = nsock_accepted(lns, fd);
	if (!ns) {
		close_later(fd);
		return -ENOMEM;
	}
	nsock_attach(ns, ch);
	/* EPOLLIN: what the relay will want (no change when it starts). */
	ret = ep_add(fd, EP_TCP, ns, EPOLLIN);
	if (ret) {
		nsock_kill(ns, -ret);	/* also closes the stream */
		return ret;
	}
	rep.token = ns->token;
	/* Quiet: the guest may have written already, so the in-kernel relay
	 * (which must be in place before the first byte) is not used. */
	ns->guest_early = quiet;
	ret = relay_prepare(ns);
	if (ret) {
		nsock_kill(ns, -ret);	/* also closes the stream */
		return ret;
	}
	if (!quiet && chan_send(ch, NK_OP_HELLO, seq, 0, &rep, sizeof(rep)))
		return 0;	/* the stream is gone and took the socket */
	ch->vm->conns++;
	if (nk_log_enabled(NK_LOG_DEBUG)) {
		char a[NK_ADDRSTRLEN], b[NK_ADDRSTRLEN];

		vm_debug(ch->vm, "socket %#llx accepted %s -> %s", (unsigned long long)ns->token,
			 nk_addr_ntop_port(&rep.peer, a, sizeof(a)),
			 nk_addr_ntop_port(&rep.local, b, sizeof(b)));
	}
	relay_start(ns);
	return 0;
}

/* ---- requests ----------------------------------------------------------- */

/*
 * Which real address a bind to a designates: a VM address, or for the
 * wildcard the VM's first address of the family (an IPv6 socket without
 * IPV6_V6ONLY falls back to the first IPv4 address, v4-mapped).
 */
static int bind_target(struct nsock *ns, const struct nk_addr *a, struct nk_addr *real,
		       bool *wild)
{
	const struct nk_addr *first;
	struct nk_addr ip = *a;
	bool mapped = false;

	if (a->family != nk_family(ns->family))
		return -EAFNOSUPPORT;
	if (nk_addr_is_v4mapped(a)) {
		ip = nk_addr_v4unmap(a);
		mapped = true;
	}
	*wild = nk_addr_is_any(&ip);
	if (*wild) {
		first = vm_first(ns->vm, mapped ? NK_AF_INET : ip.family);
		if (first) {
			*real = *first;
			if (mapped)
				*real = nk_addr_v4map(first);
		} else if (ns->family == AF_INET6 && !mapped && !ipv6_only(ns) &&
			   (first = vm_first(ns->vm, NK_AF_INET))) {
			*real = nk_addr_v4map(first);
		} else {
			vm_glog(ns->vm, NK_LOG_INFO, "bind to the wildcard refused: no IPv%d address",
				mapped ? 4 : ip.family);
			return -EADDRNOTAVAIL;
		}
	} else {
		if (!vm_has_ip(ns->vm, &ip)) {
			char buf[INET6_ADDRSTRLEN];

			vm_glog(ns->vm, NK_LOG_INFO, "bind to %s refused: not this VM's address",
				nk_addr_ntop(a, buf, sizeof(buf)));
			return -EADDRNOTAVAIL;
		}
		*real = *a;
		real->flowinfo = 0;
		real->scope_id = 0;
	}
	real->port = a->port;
	return 0;
}

/* The other addresses a wildcard bind covers: one more socket each. */
static int open_extra(struct nsock *ns, uint16_t port)
{
	struct nk_addr bound, *addrs;
	int *fds, n = 0, ret = 0, i;
	uint32_t k;
	bool v6only = ns->v6only;

	bound = ns->bind_addr;
	fds = calloc(ns->vm->naddrs, sizeof(int));
	addrs = calloc(ns->vm->naddrs, sizeof(*addrs));
	if (!fds || !addrs) {
		free(fds);
		free(addrs);
		return -ENOMEM;
	}
	for (k = 0; k < ns->vm->naddrs; k++) {
		struct nk_addr a = ns->vm->addrs[k].addr;
		int fd;

		if (ns->family == AF_INET && a.family != NK_AF_INET)
			continue;
		if (ns->family == AF_INET6 && a.family == NK_AF_INET) {
			if (v6only)
				continue;
			a = nk_addr_v4map(&a);
		}
		if (nk_addr_same_ip(&a, &bound))
			continue;
		a.port = port;
		fd = sock_create(ns);
		if (fd < 0) {
			ret = fd;
			break;
		}
		fds[n] = fd;
		addrs[n++] = a;
		ret = sock_bind(fd, &a);
		if (ret) {
			char buf[NK_ADDRSTRLEN];

			vm_glog(ns->vm, NK_LOG_INFO, "wildcard bind: extra socket on %s: %s",
				nk_addr_ntop_port(&a, buf, sizeof(buf)), strerror(-ret));
			break;
		}
		if (ns->type == SOCK_DGRAM) {
			ret = ep_add(fd, EP_UDP, ns, 0);
			if (ret) {
				close(fd);
				n--;
				break;
			}
		}
	}
	if (ret) {
		for (i = 0; i < n; i++) {
			ep_del(fds[i]);
			close(fds[i]);
		}
		free(fds);
		free(addrs);
		return ret;
	}
	ns->lfds = fds;
	ns->laddrs = addrs;
	ns->nlfds = n;
	return 0;
}

/* Close the extra sockets, except keep (moved out of the array first). */
static void close_extra(struct nsock *ns)
{
	int i;

	for (i = 0; i < ns->nlfds; i++) {
		if (ns->udp)
			udp_fd_closed(ns, ns->lfds[i]);
		close_later(ns->lfds[i]);
	}
	free(ns->lfds);
	free(ns->laddrs);
	ns->lfds = NULL;
	ns->laddrs = NULL;
	ns->nlfds = 0;
}

/* Back to a fresh, unbound real socket (UDP: a failed wildcard bind). */
static void sock_reset(struct nsock *ns)
{
	close_extra(ns);
	if (ns->udp)
		udp_fd_closed(ns, ns->fd);
	close_later(ns->fd);
	ns->fd = -1;
	ns->bound = false;
	ns->wildcard = false;
}

static int op_bind(struct nsock *ns, const struct nk_addr *a, struct nk_addr_rep *rep)
{
	struct nk_addr real, local;
	int ret, tries = 0;
	bool wild;

	if (ns->state != NK_STATE_SETUP || ns->bound || ns->autobound)
		return -EINVAL;
again:
	ret = ensure_fd(ns);
	if (ret)
		return ret;
	ret = bind_target(ns, a, &real, &wild);
	if (ret)
		return ret;
	/* Binding to a plain IPv6 address turns IPV6_V6ONLY on: read it first. */
	ns->v6only = ipv6_only(ns);
	ret = sock_bind(ns->fd, &real);
	if (ret)
		return ret;
	ns->bound = true;
	ns->wildcard = wild;
	ns->bind_addr = real;
	if (ns->type == SOCK_DGRAM && wild) {
		ret = sock_name(ns->fd, false, &local);
		if (!ret)
			ret = open_extra(ns, local.port);
		if (ret) {
			sock_reset(ns);
			/* Port 0: the port we got is taken on another of the
			 * VM's addresses; another one may not be. */
			if (ret == -EADDRINUSE && !a->port && ++tries < 16)
				goto again;
			return ret;
		}
	}
	if (rep)
		return local_name(ns, &rep->addr);
	return 0;
}

static int pending_limit(int backlog)
{
	if (backlog < 0 || backlog > NSM_BACKLOG_MAX)
		backlog = NSM_BACKLOG_MAX;
	if (backlog < 1)
		backlog = 1;
	return backlog + 1;
}

static int op_listen(struct nsock *ns, int backlog)
{
	struct nk_addr any = { .family = nk_family(ns->family) };
	struct nk_addr local;
	int i, ret;

	if (ns->type == SOCK_DGRAM)
		return -EOPNOTSUPP;
	if (ns->state == NK_STATE_SETUP && ns->vm->drained) {
		/* Bound here before the VM moved away: a listener here would
		 * get none of its connections (the steering sends them to the
		 * VM's new NSM).  The socket ends; the library makes it again
		 * there and listens (ENOTSOCK, as after VM_DRAIN). */
		vm_info(ns->vm, "socket %#llx: listen while the VM drains from here: closed, "
			"to listen on its new NSM", (unsigned long long)ns->token);
		nsock_kill(ns, 0);
		return -ENOTSOCK;
	}
	if (ns->state == NK_STATE_LISTENING) {
		if (listen(ns->fd, backlog))
			return -errno;
		for (i = 0; i < ns->nlfds; i++)
			listen(ns->lfds[i], backlog);
		ns->pending_max = pending_limit(backlog);
		listen_pause(ns, ns->npending >= ns->pending_max);
		return 0;
	}
	if (ns->state != NK_STATE_SETUP || ns->autobound)
		return -EINVAL;
	if (!ns->bound) {
		ret = op_bind(ns, &any, NULL);
		if (ret)
			return ret;
	}
	ret = ensure_fd(ns);
	if (ret)
		return ret;
	ret = sock_name(ns->fd, false, &local);
	if (ret)
		return ret;
	ns->listen_local = local;
	if (ns->wildcard) {
		ret = open_extra(ns, local.port);
		if (ret)
			return ret;
	}
	if (listen(ns->fd, backlog)) {
		ret = -errno;
		goto out_extra;
	}
	for (i = 0; i < ns->nlfds; i++) {
		if (listen(ns->lfds[i], backlog)) {
			ret = -errno;
			goto out_extra;
		}
	}
	ret = ep_add(ns->fd, EP_TCP_LISTEN, ns, EPOLLIN);
	for (i = 0; !ret && i < ns->nlfds; i++)
		ret = ep_add(ns->lfds[i], EP_TCP_LISTEN, ns, EPOLLIN);
	if (ret)
		goto out_extra;
	ns->state = NK_STATE_LISTENING;
	ns->pending_max = pending_limit(backlog);
	if (nk_log_enabled(NK_LOG_DEBUG)) {
		char buf[NK_ADDRSTRLEN];

		local_name(ns, &local);
		vm_debug(ns->vm, "socket %#llx listening on %s (%d socket%s)",
			 (unsigned long long)ns->token, nk_addr_ntop_port(&local, buf, sizeof(buf)),
			 1 + ns->nlfds, ns->nlfds ? "s" : "");
	}
	return 0;

out_extra:
	/* Back to bound-not-listening: a real socket cannot un-listen, so
	 * the next attempt starts from a fresh one. */
	close_later(ns->fd);
	ns->fd = -1;
	for (i = 0; i < ns->nlfds; i++) {
		ep_del(ns->lfds[i]);
		close(ns->lfds[i]);
	}
	free(ns->lfds);
	free(ns->laddrs);
	ns->lfds = NULL;
	ns->laddrs = NULL;
	ns->nlfds = 0;
	return ret;
}

/* peer: the peer's address if the caller has it, or NULL. */
static void send_connected(struct nsock *ns, int err, const struct nk_addr *peer)
{
	struct nk_connected_rec rec;

	memset(&rec, 0, sizeof(rec));
	if (!err) {
		sock_name(ns->fd, false, &rec.local);
		if (peer)
			rec.peer = *peer;
		else
			sock_name(ns->fd, true, &rec.peer);
	}
	chan_send(ns->chan, NK_OP_CONNECTED, 0, err, &rec, sizeof(rec));
}

static void connect_done(struct nsock *ns, int err, const struct nk_addr *peer)
{
	char buf[NK_ADDRSTRLEN];

	/* The relay is set up before the guest may write; without one the
	 * connect fails (ENOBUFS) and the TCP connection is closed. */
	if (!err && relay_prepare(ns)) {
		relay_free(ns);
		vm_glog(ns->vm, NK_LOG_WARN, "socket %#llx: out of memory or descriptors for its relay",
			(unsigned long long)ns->token);
		err = ENOBUFS;
	}
	if (err) {
		vm_debug(ns->vm, "socket %#llx: connect failed: %s", (unsigned long long)ns->token,
			 strerror(err));
		/* A retry needs a fresh socket: close this one now. */
		close_later(ns->fd);
		ns->fd = -1;
		ns->autobound = false;
		ns->state = NK_STATE_SETUP;
		send_connected(ns, err, NULL);
		if (!ns->dead && ns->chan)
			chan_update_events(ns->chan);
		return;
	}
	ns->state = NK_STATE_CONNECTED;
	ns->vm->conns++;
	vm_debug(ns->vm, "socket %#llx connected to %s", (unsigned long long)ns->token,
		 nk_addr_ntop_port(peer, buf, sizeof(buf)));
	send_connected(ns, 0, peer);
	if (ns->dead)
		return;
	relay_start(ns);
}

static int op_connect(struct nsock *ns, const struct nk_addr *a)
{
	struct sockaddr_storage ss;
	struct nk_addr dst = *a;
	int len, ret, one = 1;

	switch (ns->state) {
	case NK_STATE_CONNECTING:
		return -EALREADY;
	case NK_STATE_CONNECTED:
	case NK_STATE_LISTENING:
		return -EISCONN;
	default:
		break;
	}
	if (a->family != nk_family(ns->family))
		return -EAFNOSUPPORT;
	if (nk_addr_is_v4mapped(a))
		dst = nk_addr_v4unmap(a);
	if (nsock_dst_refused(a))
		return -ENETUNREACH;
	ret = ensure_fd(ns);
	if (ret)
		return ret;
	if (dst.family != a->family && ipv6_only(ns))
		return -ENETUNREACH;	/* as tcp_v6_connect() says */
	if (!ns->bound && !ns->autobound) {
		const struct nk_addr *first = vm_first(ns->vm, dst.family);
		struct nk_addr src;

		if (!first)
			return -ENETUNREACH;
		src = dst.family == a->family ? *first : nk_addr_v4map(first);
		src.port = 0;
		ns->v6only = ipv6_only(ns);
		setsockopt(ns->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		ret = sock_bind(ns->fd, &src);
		if (ret)
			return ret;
		ns->autobound = true;
	}
	len = nsock_sockaddr(a, &ss);
	if (len < 0)
		return len;
	/* Done at once or not, the outcome is reported from the event loop:
	 * the request's reply always goes out before the CONNECTED record
	 * (they share the stream when CONNECT came on it). */
	if (connect(ns->fd, (struct sockaddr *)&ss, len) && errno != EINPROGRESS)
		return -errno;
	ret = ep_add(ns->fd, EP_TCP, ns, EPOLLOUT);
	if (ret)
		return ret;
	ns->state = NK_STATE_CONNECTING;
	ns->connect_to = *a;
	return 0;
}

/* ---- UDP: which real socket, connect ------------------------------------ */

/* An IPv6 socket's address is v4-mapped (it talks to IPv4 peers). */
static bool sends_v4(const struct nsock *ns, const struct nk_addr *a)
{
	return ns->family == AF_INET || nk_addr_is_v4mapped(a);
}

/* Linux's implicit bind, on the VM's first address of the peer's family. */
static int udp_autobind(struct nsock *ns, bool v4)
{
	const struct nk_addr *first;
	struct nk_addr src;
	int ret;

	if (ns->family == AF_INET6 && v4 && ipv6_only(ns))
		return -ENETUNREACH;
	first = vm_first(ns->vm, v4 ? NK_AF_INET : NK_AF_INET6);
	if (!first)
		return -ENETUNREACH;
	src = ns->family == AF_INET6 && v4 ? nk_addr_v4map(first) : *first;
	src.port = 0;
	ns->v6only = ipv6_only(ns);
	ret = sock_bind(ns->fd, &src);
	if (ret)
		return ret;
	ns->autobound = true;
	return sock_name(ns->fd, false, &ns->bind_addr);
}

/* One more socket on the VM's first address of the other family, same port. */
static int udp_extra_for(struct nsock *ns, bool v4, int *fdp)
{
	const struct nk_addr *first = vm_first(ns->vm, v4 ? NK_AF_INET : NK_AF_INET6);
	struct nk_addr a, local, *addrs;
	int fd, *fds, ret;

	if (!first || (v4 && ns->v6only))
		return -ENETUNREACH;
	ret = sock_name(ns->fd, false, &local);
	if (ret)
		return ret;
	a = v4 ? nk_addr_v4map(first) : *first;
	a.port = local.port;
	fds = realloc(ns->lfds, (ns->nlfds + 1) * sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	ns->lfds = fds;
	addrs = realloc(ns->laddrs, (ns->nlfds + 1) * sizeof(*addrs));
	if (!addrs)
		return -ENOMEM;
	ns->laddrs = addrs;
	fd = sock_create(ns);
	if (fd < 0)
		return fd;
	ret = sock_bind(fd, &a);
	if (!ret)
		ret = ep_add(fd, EP_UDP, ns, 0);
	if (ret) {
		close(fd);
		return ret;
	}
	ns->lfds[ns->nlfds] = fd;
	ns->laddrs[ns->nlfds++] = a;
	*fdp = fd;
	return 0;
}

/*
 * The real socket a datagram to dst leaves from (dst NULL: the connected
 * peer).  An unbound socket is bound first; a wildcard-bound or implicitly
 * bound IPv6 socket gets a socket of the other family when it needs one.
 * A socket that cannot reach dst's family is returned all the same: its
 * sendto() fails as Linux's would.
 */
static int udp_fd_for(struct nsock *ns, const struct nk_addr *dst, bool connecting, int *fdp)
{
	bool v4;
	int i, ret;

	ret = ensure_fd(ns);
	if (ret)
		return ret;
	*fdp = ns->fd;
	if (!dst)
		return ns->state == NK_STATE_CONNECTED ? 0 : -EDESTADDRREQ;
	v4 = sends_v4(ns, dst);
	if (!ns->bound && !ns->autobound)
		return udp_autobind(ns, v4);
	if (ns->family == AF_INET || sends_v4(ns, &ns->bind_addr) == v4)
		return 0;
	for (i = 0; i < ns->nlfds; i++) {
		if (sends_v4(ns, &ns->laddrs[i]) == v4) {
			*fdp = ns->lfds[i];
			return 0;
		}
	}
	if ((ns->wildcard || ns->autobound) && (connecting || ns->state != NK_STATE_CONNECTED))
		return udp_extra_for(ns, v4, fdp);
	return 0;
}

int nsock_udp_fd(struct nsock *ns, const struct nk_addr *dst, int *fd)
{
	return udp_fd_for(ns, dst, false, fd);
}

/*
 * connect(AF_UNSPEC): back to unconnected.  The kernel keeps the address
 * of the real socket (bound explicitly) and, as for the guest's own socket
 * on Linux, releases a port that was not chosen by the guest (the next
 * datagram binds a new one).  A wildcard bind to a port gets its extra
 * sockets back.
 */
static int udp_disconnect(struct nsock *ns)
{
	struct sockaddr sa = { .sa_family = AF_UNSPEC };
	struct nk_addr local;
	int ret;

	if (ns->state != NK_STATE_CONNECTED)
		return 0;
	if (connect(ns->fd, &sa, sizeof(sa)))
		return -errno;
	ns->state = NK_STATE_SETUP;
	vm_debug(ns->vm, "socket %#llx disconnected", (unsigned long long)ns->token);
	if (ns->wildcard && !ns->nlfds) {
		ret = sock_name(ns->fd, false, &local);
		if (!ret && !local.port)
			return 0;
		if (!ret)
			ret = open_extra(ns, local.port);
		if (ret)
			vm_glog(ns->vm, NK_LOG_INFO, "socket %#llx: after disconnect, receiving on "
				"one address only: %s", (unsigned long long)ns->token, strerror(-ret));
	}
	return 0;
}

static int op_connect_dgram(struct nsock *ns, const struct nk_addr *a)
{
	struct sockaddr_storage ss;
	int fd, len, ret, i;

	if (a->family == NK_AF_UNSPEC)
		return udp_disconnect(ns);
	if (a->family != nk_family(ns->family))
		return -EAFNOSUPPORT;
	if (nsock_dst_refused(a))
		return -ENETUNREACH;
	ret = udp_fd_for(ns, a, true, &fd);
	if (ret)
		return ret;
	len = nsock_sockaddr(a, &ss);
	if (len < 0)
		return len;
	if (connect(fd, (struct sockaddr *)&ss, len))
		return -errno;
	/* A connected socket receives on its one local address: the others go. */
	for (i = 0; i < ns->nlfds && ns->lfds[i] != fd; i++)
		;
	if (i < ns->nlfds) {
		ns->lfds[i] = ns->fd;
		ns->fd = fd;
		ns->bind_addr = ns->laddrs[i];
	}
	close_extra(ns);
	ns->state = NK_STATE_CONNECTED;
	if (nk_log_enabled(NK_LOG_DEBUG)) {
		char buf[NK_ADDRSTRLEN];

		vm_debug(ns->vm, "socket %#llx (UDP) connected to %s", (unsigned long long)ns->token,
			 nk_addr_ntop_port(a, buf, sizeof(buf)));
	}
	return 0;
}

/*
 * The option policy, for a live socket and for one the NSM no longer
 * knows (its connection ended: the guest library then takes the allowed
 * options on a local socket, and the refused ones stay refused).
 */
static int opt_policy(struct vm *vm, int how, int level, int name)
{
	if (how == OPT_SET && opt_forbidden(level, name)) {
		vm_glog(vm, NK_LOG_INFO, "setsockopt level %d name %d refused: it would leave the VM's "
			"addresses", level, name);
		return -EPERM;
	}
	if (!opt_allowed(level, name, how)) {
		vm_glog(vm, NK_LOG_INFO, "%ssockopt level %d name %d not supported",
			how == OPT_SET ? "set" : "get", level, name);
		return -ENOPROTOOPT;
	}
	return 0;
}

/* An option that holds data back: TCP_CORK on, TCP_NODELAY off. */
static bool opt_holds(const struct nk_opt_req *r)
{
	int v;

	if (r->level != IPPROTO_TCP || (r->name != TCP_CORK && r->name != TCP_NODELAY) ||
	    r->optlen < sizeof(v))
		return false;
	memcpy(&v, r->val, sizeof(v));
	return r->name == TCP_CORK ? v != 0 : v == 0;
}

/*
 * After a posted TCP_CORK off: what was corked leaves now even under
 * Nagle. A posted TCP_CORK on may have come in after the first bytes
 * written behind it had already left on their own (proto.h); the rest,
 * corked, would then wait for the ACK of that small segment (Nagle), as
 * long as the peer delays its ACK (40 ms). On Linux all of it would have
 * left together at the uncork, so a TCP_NODELAY pulse pushes it out.
 * The same holds for bytes relayed uncorked after the first ones had left
 * (an uncork that cancelled a waiting cork, relay_cork_post()); there
 * unsent_only: no pulse when nothing waits unsent (SIOCOUTQNSD), as after
 * most such uncorks.
 */
static void uncork_push(int fd, bool unsent_only)
{
	int on = 1, off = 0, v = 0;
	socklen_t len = sizeof(v);

	if (unsent_only && !ioctl(fd, SIOCOUTQNSD, &v) && !v)
		return;
	if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) || v)
		return;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &off, sizeof(off));
}

static int op_setsockopt(struct nsock *ns, const struct nk_opt_req *r, bool posted)
{
	bool is_cork = r->level == IPPROTO_TCP && r->name == TCP_CORK && r->optlen >= sizeof(int);
	bool holds = opt_holds(r);
	int i, ret;

	if (r->optlen > NK_OPT_MAX)
		return -EINVAL;
	ret = opt_policy(ns->vm, OPT_SET, r->level, r->name);
	if (ret)
		return ret;
	if (posted && is_cork && relay_cork_post(ns, holds)) {
		if (ns->dead)
			return -ENOTSOCK;
		if (!holds)
			uncork_push(ns->fd, true);
		goto save;
	}
	/* Behind the bytes written before it, as on Linux; except a posted
	 * hold, which bytes already written after it would then pass
	 * uncorked (proto.h, NK_HELLO_F_POST). */
	if (!posted || !holds)
		relay_sync_up(ns);
	if (ns->dead)
		return -ENOTSOCK;	/* it finished: as if it had before */
	ret = ensure_fd(ns);
	if (ret)
		return ret;
	if (guest_setsockopt(ns, ns->fd, r->level, r->name, r->val, r->optlen)) {
		ret = -errno;
		if (ret == -ENOENT && r->level == IPPROTO_TCP && r->name == TCP_CONGESTION) {
			char name[NSM_CC_NAME_MAX];
			size_t k;

			/* the guest's bytes, printable only (one log line) */
			for (k = 0; k < sizeof(name) - 1 && k < r->optlen && r->val[k]; k++)
				name[k] = r->val[k] >= 0x20 && r->val[k] < 0x7f ? r->val[k] : '?';
			name[k] = '\0';
			vm_glog(ns->vm, NK_LOG_INFO, "socket %#llx: TCP_CONGESTION %s refused: not an "
				"algorithm the host has loaded (tcp_available_congestion_control)",
				(unsigned long long)ns->token, name);
		}
		return ret;
	}
	if (is_cork) {
		ns->cork_on = holds;
		ns->cork_wait = false;
	}
	if (posted && is_cork && !holds)
		uncork_push(ns->fd, false);
	for (i = 0; i < ns->nlfds; i++)
		guest_setsockopt(ns, ns->lfds[i], r->level, r->name, r->val, r->optlen);
	if (r->level == SOL_SOCKET && r->name == SO_SNDBUF)
		ns->sndbuf_set = true;
	if (r->level == IPPROTO_TCP && r->name == TCP_NOTSENT_LOWAT) {
		ns->lowat_set = true;
		if (ns->relay)
			ns->relay->own_lowat = false;
	}
save:
	ret = opt_save(ns, r->level, r->name, r->val, r->optlen);
	if (ret)
		vm_glog(ns->vm, NK_LOG_WARN, "socket %#llx: option %d/%d applied but not "
			"remembered for sockets created later", (unsigned long long)ns->token,
			r->level, r->name);
	return 0;
}

static int op_getsockopt(struct nsock *ns, const struct nk_opt_req *r, struct nk_opt_rep *rep)
{
	socklen_t len = r->optlen < NK_OPT_MAX ? r->optlen : NK_OPT_MAX;
	int ret;

	ret = opt_policy(ns->vm, OPT_GET, r->level, r->name);
	if (ret)
		return ret;
	/* TCP_INFO, SIOCOUTQ-like reads count it, as far as the socket takes
	 * it (its send buffer, and the relay's TCP_NOTSENT_LOWAT) */
	relay_sync_up(ns);
	if (ns->dead)
		return -ENOTSOCK;
	ret = ensure_fd(ns);
	if (ret)
		return ret;
	/*
	 * Ints the guest's socket has other than the real one:
	 * IPV6_V6ONLY, which binding a real socket to one IPv6 address turns
	 * on (the guest's socket, bound to the wildcard or implicitly, has it
	 * as it was before), and the relay's own TCP_NOTSENT_LOWAT
	 * (relay_lowat()), which the guest never set: it reads 0, as on
	 * Linux; and TCP_CORK while the guest's posted on waits in the relay
	 * (relay_cork_post()): 1.  They cut a longer optlen to an int.
	 */
	if ((r->level == IPPROTO_IPV6 && r->name == IPV6_V6ONLY && ns->family == AF_INET6 &&
	     (ns->wildcard || ns->autobound)) ||
	    (r->level == IPPROTO_TCP && r->name == TCP_NOTSENT_LOWAT && ns->relay &&
	     ns->relay->own_lowat) ||
	    (r->level == IPPROTO_TCP && r->name == TCP_CORK && ns->cork_wait)) {
		int v = r->level == IPPROTO_IPV6 ? ns->v6only : r->name == TCP_CORK;

		len = len < sizeof(v) ? len : sizeof(v);
		memcpy(rep->val, &v, len);
		rep->optlen = len;
		return 0;
	}
	if (getsockopt(ns->fd, r->level, r->name, rep->val, &len))
		return -errno;
	rep->optlen = len;
	return 0;
}

static int op_status(struct vm *vm, uint64_t token, struct nk_status_rep *rep)
{
	struct nsock *ns = nsock_lookup(vm, token);
	const struct tomb *t;

	if (ns) {
		rep->sock_err = ns->end_err;	/* set once TCP failed (relay.c) */
		rep->state = ns->state;
		return 0;
	}
	t = tomb_find(token, vm->id);
	if (!t)
		return -ENOTSOCK;
	rep->sock_err = t->err;
	rep->state = NK_STATE_CLOSED;
	return 0;
}

/*
 * SHUTDOWN of a connected UDP socket.  The write part is the guest's own
 * (its stream's EOF) and is applied here too; the read part is not: a
 * Linux UDP socket still delivers datagrams after SHUT_RD, and a shut read
 * side would keep the real socket readable for epoll forever.
 */
static int udp_shutdown(struct nsock *ns, int how)
{
	if (how != SHUT_RD && shutdown(ns->fd, SHUT_WR))
		return -errno;
	return 0;
}

static bool addr_zero(const struct nk_addr *a)
{
	static const struct nk_addr zero;

	return !memcmp(a, &zero, sizeof(zero));
}

/*
 * A set-up request on a fresh TCP socket's own stream, pipelined behind its
 * HELLO: SETSOCKOPT, then at most one CONNECT, each naming token 0 (this
 * stream's socket).  They are answered on the stream, in order, exactly as
 * on the control channel.  After the CONNECT the stream is read no more as
 * messages: its next bytes are payload, after the CONNECTED record.
 */
void nsock_setup_request(struct chan *ch, const struct nk_hdr *h, const void *body)
{
	union {
		struct nk_addr_req addr;
		struct nk_opt_req opt;
	} req;
	struct nsock *ns = ch->ns;
	uint64_t *token;
	int ret;

	if (++ch->nsetup > NSM_SETUP_REQS_MAX) {
		chan_bad(ch, "more than %d set-up requests on a socket stream", NSM_SETUP_REQS_MAX);
		return;
	}
	if (h->op != NK_OP_SETSOCKOPT && h->op != NK_OP_CONNECT) {
		chan_bad(ch, "op %u on a socket stream in set-up (only SETSOCKOPT and CONNECT)",
			 h->op);
		return;
	}
	memcpy(&req, body, nk_body_size(h->op, 0));
	token = h->op == NK_OP_CONNECT ? &req.addr.token : &req.opt.token;
	if (*token) {
		chan_bad(ch, "op %u on a socket stream names token %#llx, not 0", h->op,
			 (unsigned long long)*token);
		return;
	}
	*token = ns->token;
	if (h->op == NK_OP_CONNECT) {
		ch->setup_reqs = false;
		if (ch->setup_err) {
			/* An option before it failed: the guest gives up on
			 * this connect; do not open a connection for it. */
			chan_send(ch, NK_OP_CONNECT, h->seq, ch->setup_err, &req, 0);
			return;
		}
	}
	ret = ctl_request(ch, h, &req);
	/* An option this NSM does not take (ENOPROTOOPT) does not stop the
	 * connect: the guest, whose own kernel took it, goes on without it
	 * (docs/protocol.md). */
	if (h->op == NK_OP_SETSOCKOPT && !ch->setup_err && ret != -ENOPROTOOPT)
		ch->setup_err = -ret;
}

/* Handle one control request and reply to it.  Returns its outcome (0 or
 * -errno; 0 also when the request was malformed and the channel closed). */
int ctl_request(struct chan *ch, const struct nk_hdr *h, const void *body)
{
	union {
		struct nk_addr_rep addr;
		struct nk_status_rep status;
		struct nk_opt_rep opt;
	} rep;
	const struct nk_addr_req *ar = body;
	const struct nk_sock_req *sr = body;
	const struct nk_opt_req *orq = body;
	struct nsock *ns = NULL;
	bool posted = false;
	uint64_t token;
	int ret;

	memset(&rep, 0, sizeof(rep));
	/* Shape first: anything malformed closes the channel. */
	switch (h->op) {
	case NK_OP_BIND:
	case NK_OP_CONNECT:
		/* CONNECT to an all-zero NK_AF_UNSPEC address: disconnect. */
		if (ar->pad0 || (!nk_addr_valid(&ar->addr) &&
				 !(h->op == NK_OP_CONNECT && addr_zero(&ar->addr)))) {
			chan_bad(ch, "op %u: bad address or padding", h->op);
			return 0;
		}
		token = ar->token;
		break;
	case NK_OP_LISTEN:
	case NK_OP_SHUTDOWN:
	case NK_OP_GETNAME:
	case NK_OP_STATUS:
		if (sr->pad0) {
			chan_bad(ch, "op %u: non-zero padding", h->op);
			return 0;
		}
		if (h->op == NK_OP_SHUTDOWN && (sr->arg < SHUT_RD || sr->arg > SHUT_RDWR)) {
			chan_bad(ch, "SHUTDOWN how %d", sr->arg);
			return 0;
		}
		if (h->op == NK_OP_GETNAME && sr->arg != 0 && sr->arg != 1) {
			chan_bad(ch, "GETNAME which %d", sr->arg);
			return 0;
		}
		token = sr->token;
		break;
	case NK_OP_SETSOCKOPT:
	case NK_OP_GETSOCKOPT:
		/* Posted: only a SETSOCKOPT on a channel that said it posts */
		if (orq->flags & ~(h->op == NK_OP_SETSOCKOPT && ch->mode == CH_CTL && ch->posts ?
				   NK_OPT_F_POSTED : 0)) {
			chan_bad(ch, "op %u with flags %#x", h->op, orq->flags);
			return 0;
		}
		posted = orq->flags & NK_OPT_F_POSTED;
		token = orq->token;
		break;
	default:
		chan_bad(ch, "op %u is not a control request", h->op);
		return 0;
	}

	if (h->op == NK_OP_STATUS) {
		ret = op_status(ch->vm, token, &rep.status);
		goto out_reply;
	}
	ns = nsock_lookup(ch->vm, token);
	if (!ns) {
		ret = -ENOTSOCK;
		if (h->op == NK_OP_SETSOCKOPT || h->op == NK_OP_GETSOCKOPT)
			ret = opt_policy(ch->vm, h->op == NK_OP_SETSOCKOPT ? OPT_SET : OPT_GET,
					 orq->level, orq->name) ?: -ENOTSOCK;
		goto out_reply;
	}
	if (ns->udp) {
		udp_sync_up(ns);	/* behind the datagrams written before it */
		if (ns->dead) {
			ret = -ENOTSOCK;
			goto out_reply;
		}
	}
	switch (h->op) {
	case NK_OP_BIND:
		ret = op_bind(ns, &ar->addr, &rep.addr);
		break;
	case NK_OP_LISTEN:
		ret = op_listen(ns, sr->arg);
		break;
	case NK_OP_CONNECT:
		if (ns->type == SOCK_DGRAM)
			ret = op_connect_dgram(ns, &ar->addr);
		else
			ret = op_connect(ns, &ar->addr);
		break;
	case NK_OP_SETSOCKOPT:
		ret = op_setsockopt(ns, orq, posted);
		break;
	case NK_OP_GETSOCKOPT:
		ret = op_getsockopt(ns, orq, &rep.opt);
		break;
	case NK_OP_GETNAME:
		if (sr->arg == 0)
			ret = local_name(ns, &rep.addr.addr);
		else
			ret = ns->fd < 0 ? -ENOTCONN : sock_name(ns->fd, true, &rep.addr.addr);
		break;
	default: /* NK_OP_SHUTDOWN */
		ret = 0;
		if (ns->state == NK_STATE_CONNECTED && !ns->chan && sr->arg != SHUT_WR) {
			/* Offered, its claim not read yet: the relay finds EOF. */
			if (shutdown(ns->fd, SHUT_RD))
				ret = -errno;
		} else if (ns->state != NK_STATE_CONNECTED || (!ns->relay && !ns->udp))
			ret = -ENOTCONN;
		else if (ns->udp)
			ret = udp_shutdown(ns, sr->arg);
		else if (sr->arg != SHUT_WR)
			relay_shut_rd(ns);
		break;
	}
	/* Out of set-up (connecting, listening): its stream carries no more
	 * set-up requests, whichever channel the request came on. */
	if (!ns->dead && ns->chan && ns->state != NK_STATE_SETUP)
		ns->chan->setup_reqs = false;

out_reply:
	if (posted) {
		/* no reply: the guest did not wait (NK_HELLO_F_POST) */
		if (ret && ret != -ENOTSOCK)
			vm_glog(ch->vm, NK_LOG_WARN, "socket %#llx: posted option %d/%d of pid %u "
				"failed: %s", (unsigned long long)token, orq->level, orq->name,
				ch->pid, strerror(-ret));
		return ret;
	}
	if (ret)
		memset(&rep, 0, sizeof(rep));
	if (!ch->dead)
		chan_send(ch, h->op, h->seq, -ret, &rep, nk_body_size(h->op, 1));
	/* A handshake the kernel finished within connect() (a peer on this
	 * host or behind a veth: the SYN-ACK is processed before connect()
	 * returns): the CONNECTED record goes now, behind the reply (on the
	 * socket's own stream both are corked into one write), instead of
	 * one event loop turn later. */
	if (!ret && h->op == NK_OP_CONNECT && !ns->dead && ns->type == SOCK_STREAM &&
	    ns->state == NK_STATE_CONNECTING) {
		struct nk_addr peer;

		if (!sock_name(ns->fd, true, &peer))
			connect_done(ns, 0, &peer);
	}
	/* Sockets may have come or gone, a blocked datagram may go now. */
	if (ns && ns->udp && !ns->dead)
		udp_kick(ns);
	return ret;
}

/* ---- events ------------------------------------------------------------- */

/* The real socket of a connecting or connected guest socket. */
void nsock_event(struct nsock *ns, uint32_t events)
{
	int err = 0;
	socklen_t len = sizeof(err);
	struct nk_addr peer;

	if (ns->dead)
		return;
	if (ns->state == NK_STATE_CONNECTED && ns->relay) {
		relay_event_tcp(ns, events);
		return;
	}
	if (ns->state != NK_STATE_CONNECTING)
		return;
	/* Connected: the peer has a name (one call where it succeeded). */
	if (!sock_name(ns->fd, true, &peer)) {
		connect_done(ns, 0, &peer);
		return;
	}
	if (getsockopt(ns->fd, SOL_SOCKET, SO_ERROR, &err, &len))
		err = errno;
	if (err == ECONNRESET || err == EPIPE) {
		/* The handshake completed and the peer reset the connection
		 * before we looked: Linux's connect() succeeded and the reset
		 * shows on the next read or write.  Say the same. */
		ns->state = NK_STATE_CONNECTED;
		ns->vm->conns++;
		send_connected(ns, 0, NULL);
		nsock_kill(ns, ECONNRESET);
		return;
	}
	if (!err) {
		if (!(events & (EPOLLHUP | EPOLLERR)))
			return;		/* not finished yet */
		err = ECONNABORTED;
	}
	connect_done(ns, err, NULL);
}

/* The guest stream of a socket not in data mode: hang-ups and output. */
void nsock_chan_event(struct nsock *ns, uint32_t events)
{
	struct chan *ch = ns->chan;
	int ret;

	if (ns->relay) {
		relay_event_guest(ns, events);
		return;
	}
	if (ns->udp) {
		udp_event_guest(ns, events);
		return;
	}
	if (events & EPOLLOUT) {
		ret = chan_flush(ch);
		if (ret && ret != -EAGAIN) {
			nsock_kill(ns, 0);
			return;
		}
	}
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		/* The guest closed the socket. */
		nsock_kill(ns, 0);
		return;
	}
	chan_update_events(ch);
}

/* The local address of a connection accepted on lfd. */
static void listen_local(const struct nsock *ns, int lfd, int fd, struct nk_addr *out)
{
	int i;

	if (lfd == ns->fd) {
		*out = ns->listen_local;
		return;
	}
	for (i = 0; i < ns->nlfds; i++) {
		if (ns->lfds[i] == lfd) {
			*out = ns->laddrs[i];
			out->flowinfo = out->scope_id = 0;
			return;
		}
	}
	sock_name(fd, false, out);
}

void nsock_listen_event(struct nsock *ns, int lfd)
{
	struct nk_accept_offer rec;
	struct sockaddr_storage ss;
	struct pending *pc;
	socklen_t sl;
	int fd, i;

	if (ns->dead || ns->state != NK_STATE_LISTENING)
		return;
	/* over its share of the descriptors: the backlog holds them */
	if (vm_over_share(ns->vm, -1)) {
		listen_pause(ns, true);	/* resumed by the timer */
		return;
	}
	/* One connection per event, as vm_accept() takes guest streams; a
	 * few more tries only for connections that died in the queue. */
	for (i = 0; i < 8 && ns->npending < ns->pending_max; i++) {
		sl = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && out_of_fds(errno) && relay_pool_drain())
			continue;	/* the pooled pipes' slots are free now */
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == ECONNABORTED || errno == EPROTO)
				continue;
			vm_glog(ns->vm, NK_LOG_WARN, "accept: %s", strerror(errno));
			listen_pause(ns, true);	/* resumed by the timer */
			return;
		}
		/* a listener's SO_LINGER is the accepted socket's too */
		if (fd_lingers(lfd) && fd_may_linger(fd))
			linger_off(fd);
		pc = calloc(1, sizeof(*pc));
		if (!pc) {
			close_now(fd);
			return;
		}
		pc->conn_id = ns->next_conn_id++;
		pc->fd = fd;
		pc->since = now_mono();
		/* The peer from accept4(); the local address is the listening
		 * socket's, always bound to one of the VM's addresses. */
		if (nk_addr_from_sockaddr(&pc->peer, (struct sockaddr *)&ss, sl) == 0)
			pc->peer.flowinfo = pc->peer.scope_id = 0;
		else
			sock_name(fd, true, &pc->peer);
		listen_local(ns, lfd, fd, &pc->local);
		if (ns->offer) {
			pc->ns = nsock_accepted(ns, fd);
			if (!pc->ns) {
				close_now(fd);
				free(pc);
				return;
			}
		}
		list_add_tail(&pc->node, &ns->pending);
		ns->npending++;
		memset(&rec, 0, sizeof(rec));
		rec.conn_id = pc->conn_id;
		rec.token = pc->ns ? pc->ns->token : 0;
		rec.local = pc->local;
		rec.peer = pc->peer;
		if (ns->offer ? chan_send(ns->chan, NK_OP_ACCEPT_OFFER, 0, 0, &rec, sizeof(rec))
			      : chan_send(ns->chan, NK_OP_ACCEPT_READY, 0, 0, &rec,
					  sizeof(struct nk_accept_rec)))
			return;	/* the listener's stream is gone, and the listener */
		break;
	}
	if (ns->npending >= ns->pending_max)
		listen_pause(ns, true);
}

void nsock_timeouts(uint64_t now)
{
	struct list_head *v, *vt, *s, *st, *p, *pt;

	list_for_each_safe(v, vt, &nsm.vms) {
		struct vm *vm = list_entry(v, struct vm, node);

		orphans_expire(vm, false);
		list_for_each_safe(s, st, &vm->socks) {
			struct nsock *ns = list_entry(s, struct nsock, vm_node);

			if (ns->state != NK_STATE_LISTENING)
				continue;
			list_for_each_safe(p, pt, &ns->pending) {
				struct pending *pc = list_entry(p, struct pending, node);

				if (now - pc->since < NSM_PENDING_TIMEOUT)
					break;
				vm_debug(vm, "socket %#llx: connection %llu not claimed in %d s",
					 (unsigned long long)ns->token,
					 (unsigned long long)pc->conn_id, NSM_PENDING_TIMEOUT);
				pending_free(ns, pc);
			}
			if (ns->npending < ns->pending_max)
				listen_pause(ns, false);
		}
	}
}
