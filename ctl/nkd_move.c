// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Graceful VM moves: "nkctl vm set NAME nsm OTHER" while the VM has live
 * connections.  Established connections finish on the NSM that holds
 * them; listeners and new sockets move to the new NSM; nothing is reset.
 *
 * Theory of operation.  Both NSMs must be steered by nkd's XDP program on
 * the uplink (otherwise vm_move() moves the hard way: the old NSM forgets
 * the VM and its connections end).  The move, all from nkd's loop:
 *
 *   1. vms[vm] gets HOLD_SYN: a new TCP connection from the network (a
 *      SYN of no known flow) is dropped from now on, and its sender
 *      retries a second later, when the move is done (no reset while no
 *      NSM has the VM's listeners).
 *   2. vm_drains gets (VM, new NSM) until step 6: the egress program pins
 *      a connect through the new NSM to it (its SYN-ACK would reach the
 *      old one); the new NSM reserves the local ports of the VM's
 *      connections on the old one (ephemeral ports, below).  The new NSM
 *      gets the VM (VM_ADD: the same addresses) and the VM's
 *      guest listener (ATTACH_LISTENER): both NSMs now accept new guest
 *      streams; NKD_MOVE_SETTLE_MS lets handshakes under way finish.
 *   3. VM_DRAIN to the old NSM: it drops the guest listener (new guest
 *      sockets now all reach the new NSM) and closes the guest streams of
 *      the VM's listening sockets: the guest library listens again,
 *      through nkd, on the new NSM.  Connected sockets stay.
 *   4. vm_drains gets (VM, old NSM): from now on the egress program pins
 *      the flow of every TCP SYN the old NSM sends for the VM (a socket
 *      the guest had there connects).  Then the old NSM's CONN_LIST of the
 *      VM: every connected or connecting
 *      TCP socket and every UDP socket with a peer becomes a steer_flows
 *      entry (a connect under way gets its SYN-ACK there): 5-tuple ->
 *      old NSM, with the old NSM's MAC to write into the frame (the remote
 *      host learns the new NSM's MAC in step 6 and would address frames of
 *      old flows to it; the old NSM's kernel drops frames for another MAC).
 *   5. nkd waits (at most NKD_MOVE_LISTEN_MS) until the new NSM has as many
 *      listening sockets of the VM as the old one had.
 *   6. vms[vm] -> new NSM, HOLD_SYN cleared, the new NSM announces the
 *      addresses (gratuitous ARP, unsolicited NA).  If the VM was draining
 *      from the new NSM (an earlier move away from it), that drain ends
 *      only now: until vms points there, its connections need their
 *      entries.  The old NSM is asked once more: a connection made during
 *      step 5 keeps the drain.
 *
 * A move that fails before step 4 puts the VM back; a new NSM that was
 * draining the VM goes back to draining it (VM_DRAIN), any other forgets
 * it (VM_DEL).
 *
 * Then the VM is "draining" on the old NSM.  Every NKD_MOVE_POLL_MS nkd
 * asks the old NSM for the VM's connections (CONN_LIST), adds flows that
 * appeared (a socket the guest connected after the snapshot), deletes the
 * steer_flows entries of flows that ended (only entries that were there
 * before it asked: one the egress program added meanwhile waits for the
 * next answer), and once no connection is
 * left removes the vm_drains entry and sends VM_DEL: the old NSM drops the
 * addresses.  The ingress program
 * deletes an entry itself when a new connection reuses the ports of a flow
 * whose connection the old NSM's kernel no longer has (bpf/steer.bpf.c,
 * step 2); CONN_LIST does not list such a connection either (a socket
 * closed by a reset has no peer), so nkd does not pin it again.  The drains are
 * stored in nkd.json ("draining"), so a restarted nkd keeps pruning.
 * "conn list" lists a draining NSM's connections of the VM with that NSM.
 *
 * Blocking: steps 2-5 run inside one nkctl request (about 0.1-2 s) and
 * nkd serves nothing else meanwhile.  For a uds VM that is harmless (the
 * NSMs accept the guest streams themselves); a cid VM's guests wait for
 * nkd's AF_VSOCK accept until the move is done.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <netinet/in.h>
#include <unistd.h>

#include "log.h"
#include "nkaddr.h"
#include "nkd.h"

#define NKD_MOVE_SETTLE_MS	100	/* step 2: handshakes under way finish */
#define NKD_MOVE_LISTEN_MS	2000	/* step 5: at most this for the listeners */
#define NKD_MOVE_POLL_MS	1000	/* prune period of a draining VM */

struct nkd_drain {
	struct nkd_drain *next;
	uint32_t vm_id;
	char vm[NK_NAME_MAX];
	struct nkd_nsm *from;
	uint8_t mac[6];
	uint64_t since;		/* nkd_now_ms() */
	uint16_t *ports;	/* local ports of its live connections (last prune) */
	size_t nports;
	bool synced;		/* ports known (a prune has run) */
};

static struct nkd_drain *drains;
static int drain_tfd = -1;
static bool sweep_due;	/* a drain ended: move_steer_sync() at the next tick */

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

bool move_draining_on(const struct nkd_vm *vm, const struct nkd_nsm *nsm)
{
	const struct nkd_drain *d;

	for (d = drains; d; d = d->next)
		if (d->vm_id == vm->id && d->from == nsm)
			return true;
	return false;
}

/* A connection that keeps the VM on its old NSM (and gets a flow entry). */
static bool conn_live(const struct nsm_conn *c)
{
	if (c->peer.family != NK_AF_INET && c->peer.family != NK_AF_INET6)
		return false;
	if (c->proto == NSM_CONN_UDP)
		return true;
	return c->state == NK_STATE_CONNECTED || c->state == NK_STATE_CONNECTING;
}

static int timer_arm(void)
{
	struct itimerspec its = {
		.it_value = { .tv_sec = NKD_MOVE_POLL_MS / 1000,
			      .tv_nsec = (NKD_MOVE_POLL_MS % 1000) * 1000000L },
		.it_interval = { .tv_sec = NKD_MOVE_POLL_MS / 1000,
				 .tv_nsec = (NKD_MOVE_POLL_MS % 1000) * 1000000L },
	};

	if (drain_tfd < 0) {
		drain_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (drain_tfd < 0)
			return -errno;
		if (nkd_ep_add(drain_tfd, EP_MOVE_TIMER, 0, EPOLLIN)) {
			int ret = -errno;

			close(drain_tfd);
			drain_tfd = -1;
			return ret;
		}
	}
	if (timerfd_settime(drain_tfd, 0, &its, NULL))
		return -errno;
	return 0;
}

/* move_steer_sync() at the next tick: a pin that raced an unregister. */
static void sweep_soon(void)
{
	sweep_due = true;
	if (timer_arm())
		sweep_due = false;	/* then at the next drain's tick, start or SIGHUP */
}

/* Is key one of the VM's flows (its address among the VM's)? */
static bool flow_of_vm(const struct nk_steer_flow *key, const struct nkd_vm *vm)
{
	uint32_t i;

	for (i = 0; i < vm->naddrs; i++) {
		const struct nk_addr *a = &vm->addrs[i].addr;

		if (a->family == NK_AF_INET && key->family == NK_STEER_AF_INET &&
		    !memcmp(a->addr, key->vm_addr, 4))
			return true;
		if (a->family == NK_AF_INET6 && key->family == NK_STEER_AF_INET6 &&
		    !memcmp(a->addr, key->vm_addr, 16))
			return true;
	}
	return false;
}

static int flow_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct nk_steer_flow));
}

static bool flow_in(const struct nk_steer_flow *key, const struct nk_steer_flow *v, size_t n)
{
	return n && bsearch(key, v, n, sizeof(*v), flow_cmp);
}

static const struct nkd_vm *vm_by_id(uint32_t id)
{
	const struct nkd_vm *vm;

	for (vm = nkd.vms; vm; vm = vm->next)
		if (vm->id == id)
			return vm;
	return NULL;
}

/*
 * Room for need items of size bytes in the growing array v of *cap items:
 * the array (perhaps moved), or NULL with v untouched.  Map walks collect
 * keys first, then delete; the reserved-port lists gather several drains'
 * ports.
 */
static void *vec_room(void *v, size_t *cap, size_t need, size_t size)
{
	size_t c = *cap ? *cap : 16;

	if (need <= *cap)
		return v;
	while (c < need)
		c *= 2;
	v = realloc(v, c * size);
	if (v)
		*cap = c;
	return v;
}

/* A growing array of flow keys. */
struct flowvec {
	struct nk_steer_flow *v;
	size_t n, cap;
};

static int flowvec_push(struct flowvec *fv, const struct nk_steer_flow *key)
{
	struct nk_steer_flow *v = vec_room(fv->v, &fv->cap, fv->n + 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	fv->v = v;
	v[fv->n++] = *key;
	return 0;
}

struct mine {
	const struct nkd_vm *vm;
	uint32_t slot;
	struct flowvec fv;
	int err;
};

static int mine_one(const struct nk_steer_flow *key, const struct nk_steer_flow_nsm *val,
		    void *arg)
{
	struct mine *m = arg;

	if (val->nsm_id != m->slot || !flow_of_vm(key, m->vm))
		return 0;
	m->err = flowvec_push(&m->fv, key);
	return m->err ? 1 : 0;
}

/* The steer_flows keys of vm's flows on NSM slot, sorted; 0 or -errno. */
static int flows_of(const struct nkd_vm *vm, int slot, struct flowvec *out)
{
	struct mine m = { .vm = vm, .slot = (uint32_t)slot };
	int ret;

	ret = nk_steer_flow_foreach(nkd.steer, mine_one, &m);
	if (m.err)
		ret = m.err;
	if (ret) {
		free(m.fv.v);
		return ret < 0 ? ret : -EIO;
	}
	if (m.fv.n)
		qsort(m.fv.v, m.fv.n, sizeof(*m.fv.v), flow_cmp);
	*out = m.fv;
	return 0;
}

/* Delete every steer_flows entry of vm's flows on nsm. */
static void flows_unpin_all(const struct nkd_vm *vm, const struct nkd_nsm *nsm)
{
	struct flowvec fv = { 0 };
	size_t i;

	if (flows_of(vm, nsm->slot, &fv)) {
		warn("vm %s: cannot list its flows on nsm %s", vm->name, nsm->name);
		return;
	}
	for (i = 0; i < fv.n; i++)
		nk_steer_flow_del(nkd.steer, &fv.v[i]);
	free(fv.v);
}

/*
 * Make steer_flows hold exactly the VM's live connections on d->from.
 * 0 and *nlive, or -errno (the NSM could not be asked).  Only entries
 * that were there before the NSM was asked can go: the egress program
 * pins a connect the NSM starts meanwhile, which its answer cannot list;
 * such an entry counts as live until the next answer.
 */
static int drain_sync(struct nkd_drain *d, const struct nkd_vm *vm, size_t *nlive)
{
	struct nk_steer_flow_nsm val = { .nsm_id = d->from->slot };
	struct flowvec old = { 0 }, now = { 0 }, live = { 0 };
	unsigned int deleted = 0, fresh = 0;
	struct nsm_conn *v = NULL;
	uint16_t *ports = NULL;
	size_t n = 0, k;
	int ret;

	*nlive = 0;
	ret = flows_of(vm, d->from->slot, &old);
	if (ret)
		return ret;
	ret = conn_collect(d->from, vm->id, &v, &n);
	if (ret)
		goto out;
	memcpy(val.dmac, d->mac, sizeof(val.dmac));
	if (n && !(ports = calloc(n, sizeof(*ports)))) {
		ret = -ENOMEM;
		goto out;
	}
	for (k = 0; k < n; k++) {
		struct nk_steer_flow key;

		if (!conn_live(&v[k]))
			continue;
		ports[live.n] = v[k].local.port;
		if (nk_steer_flow_key(&key, v[k].proto, &v[k].local, &v[k].peer))
			continue;
		ret = nk_steer_flow_set(nkd.steer, &key, &val);
		if (ret)
			warn("vm %s: steering a flow to nsm %s: %s", vm->name, d->from->name,
			     strerror(-ret));
		ret = flowvec_push(&live, &key);
		if (ret)
			goto out;
	}
	if (live.n)
		qsort(live.v, live.n, sizeof(*live.v), flow_cmp);
	/* the ended ones: there before the NSM was asked, not in its answer */
	for (k = 0; k < old.n; k++)
		if (!flow_in(&old.v[k], live.v, live.n) && !nk_steer_flow_del(nkd.steer, &old.v[k]))
			deleted++;
	/* with nothing live, an entry pinned since keeps the drain: look */
	if (!live.n) {
		ret = flows_of(vm, d->from->slot, &now);
		if (ret)
			goto out;
		fresh = now.n;
	}
	if (deleted)
		debug("vm %s: %u ended flows unpinned from nsm %s", vm->name, deleted,
		      d->from->name);
	*nlive = live.n + fresh;	/* a connect just started keeps the drain */
	free(d->ports);
	d->ports = ports;
	d->nports = live.n;
	d->synced = true;
	ports = NULL;
out:
	free(ports);
	free(old.v);
	free(now.v);
	free(live.v);
	free(v);
	return ret;
}

static void drain_unlink(struct nkd_drain *d)
{
	struct nkd_drain **pp;

	for (pp = &drains; *pp; pp = &(*pp)->next) {
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	}
	free(d->ports);
	free(d);
	if (!drains && !sweep_due && drain_tfd >= 0) {
		struct itimerspec off = { 0 };

		timerfd_settime(drain_tfd, 0, &off, NULL);
	}
}

/*
 * Ephemeral ports.  While a VM drains from an old NSM, its new NSM has the
 * same address, and its stack does not know the old one's connections:
 * a connect there could pick the local port of one of them to the same
 * remote address and port, a 4-tuple the remote host already has (its
 * answer is steered to the old NSM; the connect fails or hangs).  So the
 * NSM a VM is on gets the local ports of the VM's drained connections as
 * net.ipv4.ip_local_reserved_ports (namespace-wide: its other VMs skip
 * them too), updated at every prune.  An NSM whose drains have not been
 * pruned since nkd started keeps what it had.
 */
static struct {
	const struct nkd_nsm *nsm;
	char *list;		/* what nkd wrote there last */
	char *failed;		/* what it could not write (warned once) */
} reserved[NKD_NSM_MAX];

/* A graceful move under way: the old NSM's ports, reserved on the new one
 * from step 2, before the drain is set up (move_graceful). */
static struct {
	const struct nkd_nsm *to;
	uint16_t *ports;
	size_t nports;
} moving;

static int port_cmp(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* "a,b-c,...": the ports (sorted here) as ranges; "" for none. */
static char *ports_list(uint16_t *p, size_t n)
{
	char *s = malloc(n * 12 + 1);
	size_t i = 0, len = 0;

	if (!s)
		return NULL;
	s[0] = '\0';
	if (n)
		qsort(p, n, sizeof(*p), port_cmp);
	while (i < n) {
		size_t j = i;

		while (j + 1 < n && p[j + 1] <= p[j] + 1)
			j++;
		len += sprintf(s + len, "%s%u", len ? "," : "", p[i]);
		if (p[j] != p[i])
			len += sprintf(s + len, "-%u", p[j]);
		i = j + 1;
	}
	return s;
}

/* Append count ports to the growing array *p of *n (room for *cap). */
static int ports_append(uint16_t **p, size_t *n, size_t *cap, const uint16_t *src, size_t count)
{
	uint16_t *v;

	if (!count)
		return 0;
	v = vec_room(*p, cap, *n + count, sizeof(*v));
	if (!v)
		return -ENOMEM;
	*p = v;
	memcpy(v + *n, src, count * sizeof(*v));
	*n += count;
	return 0;
}

static void reserve_sync(void)
{
	int i;

	for (i = 0; i < NKD_NSM_MAX; i++) {
		const struct nkd_nsm *nsm = nkd.nsms[i];
		const struct nkd_drain *d;
		uint16_t *p = NULL;
		size_t n = 0, cap = 0;
		bool known = true;
		int ret = 0;
		char *list;

		if (reserved[i].nsm != nsm) {
			free(reserved[i].list);
			free(reserved[i].failed);
			reserved[i].list = reserved[i].failed = NULL;
			reserved[i].nsm = nsm;
		}
		if (!nsm || nsm->dead || !nsm->managed || nsm->state != NSM_RUNNING)
			continue;
		/* the ports of the drains of the VMs now on it, and of a move to it */
		for (d = drains; d && !ret; d = d->next) {
			const struct nkd_vm *vm = vm_by_id(d->vm_id);

			if (!vm || vm->nsm != nsm)
				continue;
			known = known && d->synced;
			ret = ports_append(&p, &n, &cap, d->ports, d->nports);
		}
		if (!ret && moving.to == nsm)
			ret = ports_append(&p, &n, &cap, moving.ports, moving.nports);
		list = !ret && known ? ports_list(p, n) : NULL;
		free(p);
		if (!list)
			continue;
		if (reserved[i].list && !strcmp(list, reserved[i].list)) {
			free(list);
			continue;
		}
		ret = link_nsm_reserved_ports(nsm, list);
		if (ret) {
			if (!reserved[i].failed || strcmp(list, reserved[i].failed))
				warn("nsm %s: ip_local_reserved_ports: %s; a connect there may pick a port of a connection another NSM drains",
				     nsm->name, strerror(-ret));
			free(reserved[i].failed);
			reserved[i].failed = list;
			continue;
		}
		free(reserved[i].failed);
		reserved[i].failed = NULL;
		debug("nsm %s: reserved ports of drained connections: %s", nsm->name,
		      *list ? list : "none");
		free(reserved[i].list);
		reserved[i].list = list;
	}
}

/*
 * vm_drains: while the drain lasts, the egress program pins each connect
 * the old NSM starts for the VM (bpf/steer.bpf.c).
 */
static void drain_register(const struct nkd_drain *d)
{
	struct nk_steer_flow_nsm val = { .nsm_id = d->from->slot };
	int ret;

	memcpy(val.dmac, d->mac, sizeof(val.dmac));
	ret = nkd.steer ? nk_steer_drain_set(nkd.steer, d->vm_id, &val) : 0;
	if (ret)
		warn("vm %s: steering map vm_drains: %s; a connect it starts on nsm %s waits for the next prune",
		     d->vm, strerror(-ret), d->from->name);
}

static void drain_unregister(const struct nkd_drain *d)
{
	int ret = nkd.steer ? nk_steer_drain_del(nkd.steer, d->vm_id, d->from->slot) : 0;

	if (ret)
		warn("vm %s: steering map vm_drains: %s", d->vm, strerror(-ret));
}

/* The drain is over: no flow entries left, the old NSM forgets the VM. */
static void drain_end(struct nkd_drain *d, const struct nkd_vm *vm, bool del)
{
	struct nsm_vm_ref ref = { .vm_id = d->vm_id };
	int ret, nerr = 0;

	drain_unregister(d);	/* first: no pin after the last prune */
	if (vm && nkd.steer)
		flows_unpin_all(vm, d->from);
	sweep_soon();		/* a pin racing the unregister */
	if (del && d->from->state == NSM_RUNNING && (!vm || vm->nsm != d->from)) {
		ret = nsm_request(d->from, NSM_MSG_VM_DEL, &ref, sizeof(ref), -1, &nerr);
		if (ret || (nerr && nerr != ENOENT))
			warn("vm %s: nsm %s did not forget it after the move: %s", d->vm,
			     d->from->name, strerror(ret ? -ret : nerr));
	}
	info("vm %s: drained from nsm %s after %llu s", d->vm, d->from->name,
	     (unsigned long long)((nkd_now_ms() - d->since) / 1000));
	drain_unlink(d);
	state_save();
}

void move_timer_event(void)
{
	struct nkd_drain *d, *next;
	uint64_t ticks;

	if (read(drain_tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		warn_perror("move timer");
	if (sweep_due) {
		sweep_due = false;
		move_steer_sync();
		if (!drains) {
			struct itimerspec off = { 0 };

			timerfd_settime(drain_tfd, 0, &off, NULL);
		}
	}
	for (d = drains; d; d = next) {
		struct nkd_vm *vm = NULL, *x;
		size_t nlive;
		int ret;

		next = d->next;
		for (x = nkd.vms; x; x = x->next)
			if (x->id == d->vm_id)
				vm = x;
		if (!vm || d->from->dead) {
			drain_end(d, vm, true);
			continue;
		}
		if (d->from->state != NSM_RUNNING) {
			/* restarting: its connections are gone anyway */
			free(d->ports);
			d->ports = NULL;
			d->nports = 0;
			d->synced = true;
			continue;
		}
		ret = drain_sync(d, vm, &nlive);
		if (ret == -ENOENT) {
			drain_end(d, vm, false);
			continue;
		}
		if (ret) {
			warn("vm %s: connections on nsm %s: %s", vm->name, d->from->name, strerror(-ret));
			continue;
		}
		if (!nlive)
			drain_end(d, vm, true);
	}
	reserve_sync();
}

static int drain_add(const struct nkd_vm *vm, struct nkd_nsm *from, const uint8_t mac[6],
		     struct nkd_drain **out)
{
	struct nkd_drain *d;
	int ret;

	for (d = drains; d; d = d->next) {
		if (d->vm_id == vm->id && d->from == from) {
			memcpy(d->mac, mac, 6);
			drain_register(d);
			*out = d;
			return 0;
		}
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->vm_id = vm->id;
	nkd_strscpy(d->vm, vm->name, sizeof(d->vm));
	d->from = from;
	memcpy(d->mac, mac, 6);
	d->since = nkd_now_ms();
	ret = timer_arm();
	if (ret) {
		free(d);
		return ret;
	}
	drain_register(d);
	d->next = drains;
	drains = d;
	*out = d;
	return 0;
}

/* A VM moving back to an NSM it drains from: its flows there need no entry. */
static void drain_cancel(const struct nkd_vm *vm, const struct nkd_nsm *nsm)
{
	struct nkd_drain *d, *next;

	for (d = drains; d; d = next) {
		next = d->next;
		if (d->vm_id == vm->id && (!nsm || d->from == nsm))
			drain_end(d, vm, false);
	}
}

/*
 * A move the hard way (vm_move()) to an NSM the VM drains from: that drain
 * is over, its connections there are the VM's own again.
 */
void move_arrived(const struct nkd_vm *vm, const struct nkd_nsm *to)
{
	drain_cancel(vm, to);
	reserve_sync();		/* its drains' ports go with it */
}

/*
 * A hard move to an NSM the VM drains from failed after that NSM got the
 * VM (VM_ADD): VM_DRAIN puts it back to draining (its guest listener and
 * listening sockets go again), so the drained connections stay, where
 * VM_DEL would end them.  0, or -errno: the caller removes the VM there.
 */
int move_redrain(const struct nkd_vm *vm, struct nkd_nsm *nsm)
{
	struct nsm_vm_ref ref = { .vm_id = vm->id };
	int ret, nerr = 0;

	ret = nsm_request(nsm, NSM_MSG_VM_DRAIN, &ref, sizeof(ref), -1, &nerr);
	if (!ret)
		ret = -nerr;
	if (ret)
		warn("vm %s: nsm %s did not go back to draining it: %s", vm->name, nsm->name,
		     strerror(-ret));
	else
		info("vm %s: still draining from nsm %s (the move to it failed)", vm->name,
		     nsm->name);
	return ret;
}

/* vm del: every drain of the VM ends, and its old NSMs forget it. */
void move_forget_vm(const struct nkd_vm *vm)
{
	struct nkd_drain *d, *next;

	for (d = drains; d; d = next) {
		next = d->next;
		if (d->vm_id == vm->id)
			drain_end(d, vm, true);
	}
}

/* nsm del / teardown: the drains from that NSM end (its flows are gone). */
void move_forget_nsm(const struct nkd_nsm *nsm)
{
	struct nkd_drain *d, *next;

	for (d = drains; d; d = next) {
		next = d->next;
		if (d->from == nsm)
			drain_end(d, NULL, false);
	}
}

/*
 * Claims across a move (nsmctl.h): a guest's claim for a connection the
 * old NSM offered before the move reaches the new NSM, which passes it
 * here (CLAIM_FWD).  They are queued, because one can arrive while nkd
 * waits for another reply, and handed on after the event batch
 * (move_claims_run()) with ATTACH_CLAIM to the NSMs the VM is draining
 * from, newest first.  Nobody taking it: its stream is closed and the
 * guest reads EOF, as for a claim that fails without a move.
 */
#define NKD_CLAIMS_MAX	4096	/* waiting at once (an NSM passes 256 per VM) */

struct claim_fwd {
	const struct nkd_nsm *from;
	struct nsm_claim c;
	int fd;
};

static struct claim_fwd *claims;
static unsigned int nclaims, claims_cap;

void move_claim_queue(const struct nkd_nsm *from, const void *body, size_t len, int fd)
{
	if (len != sizeof(struct nsm_claim) || fd < 0) {
		warn("nsm %s: malformed claim (%zu bytes, %s); dropped", from->name, len,
		     fd < 0 ? "no stream" : "a stream");
		if (fd >= 0)
			close(fd);
		return;
	}
	if (nclaims == claims_cap) {
		unsigned int cap = claims_cap ? claims_cap * 2 : 64;
		struct claim_fwd *p = cap <= NKD_CLAIMS_MAX ? realloc(claims, cap * sizeof(*p)) : NULL;

		if (!p) {
			warn("nsm %s: %u claims waiting; this one is closed (the guest reads EOF)",
			     from->name, nclaims);
			close(fd);
			return;
		}
		claims = p;
		claims_cap = cap;
	}
	claims[nclaims].from = from;
	memcpy(&claims[nclaims].c, body, sizeof(struct nsm_claim));
	claims[nclaims].fd = fd;
	nclaims++;
}

/* NSMs not asked again in this run: no answer in time, or no ATTACH_CLAIM. */
struct claim_skip {
	const struct nkd_nsm *nsm[8];
	unsigned int n;
};

static bool skipped(const struct claim_skip *sk, const struct nkd_nsm *nsm)
{
	unsigned int i;

	for (i = 0; i < sk->n; i++)
		if (sk->nsm[i] == nsm)
			return true;
	return false;
}

static void claim_pass(const struct claim_fwd *q, struct claim_skip *sk)
{
	struct nkd_nsm *to[8];
	const struct nkd_drain *d;
	struct nkd_vm *vm;
	unsigned int i, n = 0;
	int err, ret;

	for (vm = nkd.vms; vm && vm->id != q->c.vm_id; vm = vm->next)
		;
	if (!vm || vm->nsm != q->from) {
		/* deleted or moved again meanwhile (or the move failed) */
		debug("nsm %s: claim for vm id %u, which is not on it; closed", q->from->name,
		      q->c.vm_id);
		close(q->fd);
		return;
	}
	for (d = drains; d && n < sizeof(to) / sizeof(to[0]); d = d->next)
		if (d->vm_id == vm->id && d->from != q->from && !skipped(sk, d->from))
			to[n++] = d->from;
	for (i = 0; i < n; i++) {
		ret = nsm_request(to[i], NSM_MSG_ATTACH_CLAIM, &q->c, sizeof(q->c), q->fd, &err);
		if (ret || err == EOPNOTSUPP) {
			warn("vm %s: nsm %s %s; claims are not passed to it for now", vm->name,
			     to[i]->name, ret ? strerror(-ret) : "does not take claims (an older nk-nsm)");
			if (sk->n < sizeof(sk->nsm) / sizeof(sk->nsm[0]))
				sk->nsm[sk->n++] = to[i];
			continue;
		}
		if (!err) {
			info("vm %s: connection offered by nsm %s before the move, claimed through nsm %s: passed on",
			     vm->name, to[i]->name, q->from->name);
			close(q->fd);
			return;
		}
		if (err != ENOENT)
			warn("vm %s: nsm %s refused a claim passed on: %s", vm->name, to[i]->name,
			     strerror(err));
	}
	debug("vm %s: a claim nsm %s read (connection %llu) is for no connection of %s; closed",
	      vm->name, q->from->name, (unsigned long long)q->c.req.conn_id,
	      n ? "the NSMs it is draining from" : "another NSM (it is draining from none)");
	close(q->fd);
}

void move_claims_run(void)
{
	struct claim_skip sk = { .n = 0 };
	struct claim_fwd *batch;
	unsigned int i, n;

	while (nclaims) {	/* claim_pass()'s requests may queue more */
		batch = claims;
		n = nclaims;
		claims = NULL;
		nclaims = claims_cap = 0;
		for (i = 0; i < n; i++)
			claim_pass(&batch[i], &sk);
		free(batch);
	}
}

bool move_nsm_draining(const struct nkd_nsm *nsm)
{
	const struct nkd_drain *d;

	for (d = drains; d; d = d->next)
		if (d->from == nsm)
			return true;
	return false;
}

static int count_listening(struct nkd_nsm *nsm, uint32_t vm_id, unsigned int *n)
{
	struct nsm_conn *v;
	size_t k, cnt;
	int ret;

	*n = 0;
	ret = conn_collect(nsm, vm_id, &v, &cnt);
	if (ret)
		return ret;
	for (k = 0; k < cnt; k++)
		if (v[k].proto == NSM_CONN_TCP && v[k].state == NK_STATE_LISTENING)
			(*n)++;
	free(v);
	return 0;
}

bool move_graceful_possible(const struct nkd_vm *vm, const struct nkd_nsm *to)
{
	return nkd.steer && steer_nsm_steered(vm->nsm) && steer_nsm_steered(to) &&
	       vm->nsm->state == NSM_RUNNING && to->state == NSM_RUNNING;
}

/* Step 2: the old NSM's ports of the VM, reserved on the new one at once. */
static void moving_ports(const struct nkd_vm *vm, struct nkd_nsm *from,
			 const struct nkd_nsm *to)
{
	struct nsm_conn *v = NULL;
	size_t n = 0, k;

	moving.to = to;
	if (conn_collect(from, vm->id, &v, &n) || !n) {
		free(v);
		return;
	}
	moving.ports = calloc(n, sizeof(*moving.ports));
	for (k = 0; moving.ports && k < n; k++)
		if (conn_live(&v[k]))
			moving.ports[moving.nports++] = v[k].local.port;
	free(v);
}

static void moving_done(void)
{
	free(moving.ports);
	moving.ports = NULL;
	moving.nports = 0;
	moving.to = NULL;
	reserve_sync();
}

/*
 * Step 2: while vms still points at the old NSM, a connect the guest
 * makes through the new one would get its SYN-ACK at the old NSM, which
 * resets it.  The new NSM is registered in vm_drains for the move, so the
 * egress program pins those flows to it; the entries go once vms points
 * there (or the move failed).
 */
static void move_target_set(const struct nkd_vm *vm, const struct nkd_nsm *to)
{
	struct nk_steer_flow_nsm val = { .nsm_id = to->slot };
	int ret;

	ret = link_nsm_mac(to, val.dmac);
	if (!ret)
		ret = nk_steer_drain_set(nkd.steer, vm->id, &val);
	if (ret)
		warn("vm %s: steering map vm_drains: %s; a connect through nsm %s during the move may be reset",
		     vm->name, strerror(-ret), to->name);
}

static void move_target_done(const struct nkd_vm *vm, const struct nkd_nsm *to)
{
	if (move_draining_on(vm, to))
		return;		/* the drain's entry, same value (drain_cancel) */
	nk_steer_drain_del(nkd.steer, vm->id, to->slot);
	flows_unpin_all(vm, to);
	sweep_soon();
}

/* Steps 1-6 above; on failure before step 6 the VM stays where it was. */
int move_graceful(struct nkd_vm *vm, struct nkd_nsm *to, struct nkd_err *e)
{
	struct nkd_nsm *from = vm->nsm;
	struct nsm_vm_ref ref = { .vm_id = vm->id };
	unsigned int nlisten = 0, got = 0;
	struct nkd_drain *d = NULL;
	uint8_t mac[6] = { 0 };
	struct nkd_err e2;
	size_t nlive = 0;
	uint64_t end;
	int ret, nerr = 0;

	ret = link_nsm_mac(from, mac);
	if (ret)
		warn("vm %s: MAC of nsm %s: %s; old flows keep the MAC the remote uses",
		     vm->name, from->name, strerror(-ret));
	ret = count_listening(from, vm->id, &nlisten);
	if (ret && ret != -ENOENT)
		return nkd_fail(e, -ret, "vm %s: nsm %s did not list its connections: %s; nothing changed",
				vm->name, from->name, strerror(-ret));
	/* 1 */
	ret = nk_steer_vm_set_flags(nkd.steer, vm->id, from->slot, NK_STEER_VM_F_HOLD_SYN);
	if (ret)
		return nkd_fail(e, -ret, "vm %s: steering map: %s; nothing changed", vm->name,
				strerror(-ret));
	/* 2 */
	move_target_set(vm, to);
	moving_ports(vm, from, to);
	vm->nsm = to;
	reserve_sync();		/* the new NSM connects from now on */
	ret = vm_push(vm, e);
	if (ret)
		goto out_back;
	sleep_ms(NKD_MOVE_SETTLE_MS);
	/* 3 */
	ret = nsm_request(from, NSM_MSG_VM_DRAIN, &ref, sizeof(ref), -1, &nerr);
	if (ret || nerr) {
		ret = ret ? ret : -nerr;
		nkd_fail(e, -ret, "vm %s: nsm %s refused to drain it: %s; nothing changed",
			 vm->name, from->name, strerror(-ret));
		goto out_unpush;
	}
	/* 4: from here on the move goes through */
	ret = drain_add(vm, from, mac, &d);
	if (ret)
		warn("vm %s: cannot track its connections on nsm %s: %s", vm->name, from->name,
		     strerror(-ret));
	if (d) {
		ret = drain_sync(d, vm, &nlive);
		if (ret)
			warn("vm %s: connections on nsm %s: %s; they may be reset", vm->name,
			     from->name, strerror(-ret));
		reserve_sync();	/* the new NSM connects already */
	}
	/* 5 */
	end = nkd_now_ms() + NKD_MOVE_LISTEN_MS;
	while (got < nlisten && nkd_now_ms() < end) {
		sleep_ms(20);
		if (count_listening(to, vm->id, &got))
			break;
	}
	if (got < nlisten)
		warn("vm %s: %u of %u listeners are on nsm %s so far", vm->name, got, nlisten,
		     to->name);
	/* 6 */
	ret = steer_vm_add(vm, &e2);
	if (ret)
		err("%s", e2.msg);
	link_announce(to, vm);
	/* its flows on the new NSM need no entry now; nor do those of a
	 * drain from it (the VM is back on an NSM it drained from), unless
	 * vms does not point there (steer_vm_add failed) */
	if (!ret) {
		move_target_done(vm, to);
		drain_cancel(vm, to);
	}
	/* what connected during step 5 (the egress program pinned its SYNs) */
	if (d && drain_sync(d, vm, &nlive))
		nlive = 1;	/* not known: the next prune decides */
	moving_done();
	info("vm %s: moved from nsm %s to nsm %s: %u listener%s moved, %zu connection%s finish on nsm %s",
	     vm->name, from->name, to->name, got, got == 1 ? "" : "s", nlive,
	     nlive == 1 ? "" : "s", from->name);
	if (d && !nlive)
		drain_end(d, vm, true);
	return 0;

out_unpush:
	/* an NSM the VM drains from keeps those connections: drain it again */
	if (!move_draining_on(vm, to) || move_redrain(vm, to))
		nsm_request(to, NSM_MSG_VM_DEL, &ref, sizeof(ref), -1, &nerr);
	goto out_restore;
out_back:
	/* VM_ADD failed; it may have gone half-way on an NSM it drains from,
	 * and one that timed out may still be carried out (a stopped NSM):
	 * its VM_DEL goes behind it */
	if (move_draining_on(vm, to) && to->state == NSM_RUNNING)
		move_redrain(vm, to);
	else if (to->state == NSM_RUNNING)
		nsm_request(to, NSM_MSG_VM_DEL, &ref, sizeof(ref), -1,
			    ret == -ETIMEDOUT ? NULL : &nerr);
out_restore:
	vm->nsm = from;
	nk_steer_vm_set(nkd.steer, vm->id, from->slot);
	move_target_done(vm, to);
	moving_done();
	return ret;
}

static bool drain_known(uint32_t vm_id, uint32_t nsm_slot)
{
	const struct nkd_drain *d;

	for (d = drains; d; d = d->next)
		if (d->vm_id == vm_id && (uint32_t)d->from->slot == nsm_slot)
			return true;
	return false;
}

struct stale {
	struct nk_steer_drain *dv;	/* vm_drains keys of no drain */
	size_t nd, capd;
	struct flowvec fv;		/* steer_flows keys of no drain */
	int err;
};

static int stale_drain(const struct nk_steer_drain *key, const struct nk_steer_flow_nsm *val,
		       void *arg)
{
	struct stale *st = arg;
	struct nk_steer_drain *v;

	(void)val;
	if (drain_known(key->vm_id, key->nsm_id))
		return 0;
	v = vec_room(st->dv, &st->capd, st->nd + 1, sizeof(*v));
	if (!v) {
		st->err = -ENOMEM;
		return 1;
	}
	st->dv = v;
	v[st->nd++] = *key;
	return 0;
}

static int stale_flow(const struct nk_steer_flow *key, const struct nk_steer_flow_nsm *val,
		      void *arg)
{
	struct stale *st = arg;
	const struct nkd_drain *d;

	for (d = drains; d; d = d->next) {
		const struct nkd_vm *vm;

		if ((uint32_t)d->from->slot != val->nsm_id)
			continue;
		vm = vm_by_id(d->vm_id);
		if (vm && flow_of_vm(key, vm))
			return 0;
	}
	st->err = flowvec_push(&st->fv, key);
	return st->err ? 1 : 0;
}

/*
 * Start, SIGHUP, and the move timer's tick after a drain ended: vm_drains
 * and steer_flows hold entries of the known drains only (a drain nkd.json
 * no longer names, a pin dir from another nkd, a connect the egress
 * program pinned as its drain ended).
 */
void move_steer_sync(void)
{
	struct stale st = { 0 };
	unsigned int nd = 0, nf = 0;
	size_t i;

	if (!nkd.steer)
		return;
	if (nk_steer_drain_foreach(nkd.steer, stale_drain, &st) || st.err ||
	    nk_steer_flow_foreach(nkd.steer, stale_flow, &st) || st.err)
		warn("steering: cannot list vm_drains and steer_flows: %s",
		     strerror(st.err ? -st.err : EIO));
	for (i = 0; i < st.nd; i++)
		if (!nk_steer_drain_del(nkd.steer, st.dv[i].vm_id, st.dv[i].nsm_id))
			nd++;
	for (i = 0; i < st.fv.n; i++)
		if (!nk_steer_flow_del(nkd.steer, &st.fv.v[i]))
			nf++;
	if (nd || nf)
		info("steering: removed %u drain%s and %u flow%s of no drain", nd, nd == 1 ? "" : "s",
		     nf, nf == 1 ? "" : "s");
	free(st.dv);
	free(st.fv.v);
	reserve_sync();
}

/* nkd.json "draining": [{"vm": NAME, "nsm": NAME}] */
json_t *move_to_json(void)
{
	json_t *a = json_array();
	const struct nkd_drain *d;

	for (d = drains; d; d = d->next)
		json_array_append_new(a, json_pack("{s:s, s:s}", "vm", d->vm, "nsm", d->from->name));
	return a;
}

/* Restart: resume the drains nkd.json names (the MAC is read again). */
void move_restore(json_t *arr)
{
	json_t *o;
	size_t i;

	json_array_foreach(arr, i, o) {
		const char *vmn = json_string_value(json_object_get(o, "vm"));
		const char *nsmn = json_string_value(json_object_get(o, "nsm"));
		struct nkd_vm *vm = vmn ? vm_find(vmn) : NULL;
		struct nkd_nsm *nsm = nsmn ? nsm_find(nsmn) : NULL;
		uint8_t mac[6] = { 0 };
		struct nkd_drain *d;

		if (!vm || !nsm || vm->nsm == nsm) {
			warn("state: drain of vm %s from nsm %s dropped (unknown or current)",
			     vmn ? vmn : "?", nsmn ? nsmn : "?");
			continue;
		}
		link_nsm_mac(nsm, mac);
		if (drain_add(vm, nsm, mac, &d))
			warn("vm %s: cannot resume its drain from nsm %s", vm->name, nsm->name);
		else
			info("vm %s: still draining from nsm %s", vm->name, nsm->name);
	}
}
