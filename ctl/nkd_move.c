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
 *   2. The new NSM gets the VM (VM_ADD: the same addresses) and the VM's
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
 *      addresses (gratuitous ARP, unsolicited NA).
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
};

static struct nkd_drain *drains;
static int drain_tfd = -1;

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

struct prune {
	const struct nkd_vm *vm;
	const struct nkd_drain *d;
	const struct nk_steer_flow *live;	/* sorted */
	size_t nlive;
	bool only_old;		/* delete only entries in old */
	const struct nk_steer_flow *old;	/* sorted */
	size_t nold;
	unsigned int deleted;
	unsigned int fresh;	/* kept: pinned since the NSM was asked */
};

static bool prune_mine(const struct prune *p, const struct nk_steer_flow *key,
		       const struct nk_steer_flow_nsm *val)
{
	return val->nsm_id == (uint32_t)p->d->from->slot && flow_of_vm(key, p->vm);
}

static int prune_one(const struct nk_steer_flow *key, const struct nk_steer_flow_nsm *val,
		     void *arg)
{
	struct prune *p = arg;

	if (!prune_mine(p, key, val))
		return 0;
	if (flow_in(key, p->live, p->nlive))
		return 0;
	if (p->only_old && !flow_in(key, p->old, p->nold)) {
		p->fresh++;	/* pinned since the NSM was asked: next time */
		return 0;
	}
	if (!nk_steer_flow_del(nkd.steer, key))
		p->deleted++;
	return 0;
}

struct snap {
	const struct prune *p;
	struct nk_steer_flow *v;
	size_t n, cap;
	int err;
};

static int snap_one(const struct nk_steer_flow *key, const struct nk_steer_flow_nsm *val,
		    void *arg)
{
	struct snap *sn = arg;

	if (!prune_mine(sn->p, key, val))
		return 0;
	if (sn->n == sn->cap) {
		size_t cap = sn->cap ? 2 * sn->cap : 64;
		struct nk_steer_flow *v = realloc(sn->v, cap * sizeof(*v));

		if (!v) {
			sn->err = -ENOMEM;
			return 1;
		}
		sn->v = v;
		sn->cap = cap;
	}
	sn->v[sn->n++] = *key;
	return 0;
}

/*
 * Make steer_flows hold exactly the VM's live connections on d->from.
 * 0 and *nlive, or -errno (the NSM could not be asked).  Only entries
 * that were there before the NSM was asked can go: the egress program
 * pins a connect the NSM starts meanwhile, which its answer cannot list;
 * such an entry counts as live until the next answer.
 */
static int drain_sync(const struct nkd_drain *d, const struct nkd_vm *vm, size_t *nlive)
{
	struct nk_steer_flow_nsm val = { .nsm_id = d->from->slot };
	struct prune p = { .vm = vm, .d = d };
	struct nk_steer_flow *live = NULL;
	struct snap sn = { .p = &p };
	struct nsm_conn *v;
	size_t n, k;
	int ret;

	*nlive = 0;
	nk_steer_flow_foreach(nkd.steer, snap_one, &sn);
	if (sn.err) {
		free(sn.v);
		return sn.err;
	}
	if (sn.n)
		qsort(sn.v, sn.n, sizeof(*sn.v), flow_cmp);
	ret = conn_collect(d->from, vm->id, &v, &n);
	if (ret) {
		free(sn.v);
		return ret;
	}
	memcpy(val.dmac, d->mac, sizeof(val.dmac));
	if (n) {
		live = calloc(n, sizeof(*live));
		if (!live) {
			free(sn.v);
			free(v);
			return -ENOMEM;
		}
	}
	for (k = 0; k < n; k++) {
		if (!conn_live(&v[k]))
			continue;
		if (nk_steer_flow_key(&live[p.nlive], v[k].proto, &v[k].local, &v[k].peer))
			continue;
		ret = nk_steer_flow_set(nkd.steer, &live[p.nlive], &val);
		if (ret)
			warn("vm %s: steering a flow to nsm %s: %s", vm->name, d->from->name,
			     strerror(-ret));
		p.nlive++;
	}
	if (live && p.nlive)
		qsort(live, p.nlive, sizeof(*live), flow_cmp);
	p.live = live;
	p.only_old = true;
	p.old = sn.v;
	p.nold = sn.n;
	nk_steer_flow_foreach(nkd.steer, prune_one, &p);
	if (p.deleted)
		debug("vm %s: %u ended flows unpinned from nsm %s", vm->name, p.deleted,
		      d->from->name);
	*nlive = p.nlive + p.fresh;	/* a connect just started keeps the drain */
	free(sn.v);
	free(live);
	free(v);
	return 0;
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
	free(d);
	if (!drains && drain_tfd >= 0) {
		struct itimerspec off = { 0 };

		timerfd_settime(drain_tfd, 0, &off, NULL);
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
	if (vm && nkd.steer) {
		struct prune p = { .vm = vm, .d = d };

		nk_steer_flow_foreach(nkd.steer, prune_one, &p);
	}
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
		if (d->from->state != NSM_RUNNING)
			continue;	/* restarting: its connections are gone anyway */
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
	vm->nsm = to;
	ret = vm_push(vm, e);
	if (ret)
		goto out_back;
	drain_cancel(vm, to);
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
	info("vm %s: moved from nsm %s to nsm %s: %u listener%s moved, %zu connection%s finish on nsm %s",
	     vm->name, from->name, to->name, got, got == 1 ? "" : "s", nlive,
	     nlive == 1 ? "" : "s", from->name);
	if (d && !nlive)
		drain_end(d, vm, true);
	return 0;

out_unpush:
	nsm_request(to, NSM_MSG_VM_DEL, &ref, sizeof(ref), -1, &nerr);
out_back:
	vm->nsm = from;
	nk_steer_vm_set(nkd.steer, vm->id, from->slot);
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

static int stale_drain(const struct nk_steer_drain *key, const struct nk_steer_flow_nsm *val,
		       void *arg)
{
	unsigned int *n = arg;

	(void)val;
	if (!drain_known(key->vm_id, key->nsm_id) &&
	    !nk_steer_drain_del(nkd.steer, key->vm_id, key->nsm_id))
		(*n)++;
	return 0;
}

static int stale_flow(const struct nk_steer_flow *key, const struct nk_steer_flow_nsm *val,
		      void *arg)
{
	const struct nkd_vm *vm;
	unsigned int *n = arg;

	for (vm = nkd.vms; vm; vm = vm->next)
		if (flow_of_vm(key, vm) && drain_known(vm->id, val->nsm_id))
			return 0;
	if (!nk_steer_flow_del(nkd.steer, key))
		(*n)++;
	return 0;
}

/*
 * Start and SIGHUP, once the drains are known: vm_drains and steer_flows
 * hold entries of those drains only (a drain nkd.json no longer names, a
 * pin dir from another nkd).
 */
void move_steer_sync(void)
{
	unsigned int nd = 0, nf = 0;

	if (!nkd.steer)
		return;
	nk_steer_drain_foreach(nkd.steer, stale_drain, &nd);
	nk_steer_flow_foreach(nkd.steer, stale_flow, &nf);
	if (nd || nf)
		info("steering: removed %u drain%s and %u flow%s of no drain", nd, nd == 1 ? "" : "s",
		     nf, nf == 1 ? "" : "s");
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
