// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * XDP steering in nkd: one uplink shared by the NSMs nkd creates, with the
 * VM-to-NSM table in pinned eBPF maps (bpf/steer.bpf.c, docs/maps.md).
 *
 * Theory of operation
 * -------------------
 * With --uplink IFNAME (or "uplink" in the state file) nkd opens the
 * steering maps pinned under --pin-dir (reusing them if a previous nkd
 * pinned them: tables and counters survive restarts), attaches the ingress
 * program to the uplink (native XDP where the driver has it, generic
 * otherwise, replacing the program a previous nkd left there: never a
 * second one) and writes the uplink's devmap slot and the miss action.
 *
 * An NSM added without a netns is "managed": nkd creates netns nk-NAME and
 * a veth pair nkh-NAME <-> eth0 (nkd_link.c), attaches the egress program
 * to nkh-NAME and records the NSM (id = its slot, 0..255) with that
 * ifindex in the maps; then the NSM starts on eth0.  Each VM of a managed
 * NSM gets its vms entry and its addresses in addr_vm (in that order, so a
 * frame never finds a half-made entry).  nkd is the only userspace writer.
 * Every write is idempotent: at start and on SIGHUP nkd re-attaches the
 * programs and rewrites the whole table from its configuration, removing
 * entries of VMs and NSMs it no longer has.
 *
 * Restart is not teardown: nkd exits with the programs attached and the
 * maps pinned.  Only "nsm del" (its veth, netns and entries), "vm del" (its
 * entries) and "nkctl teardown" (everything) remove them.
 */
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/if_link.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "nkaddr.h"
#include "nkd.h"

static const char *const miss_names[] = {
	[NK_MISS_PASS] = "pass",
	[NK_MISS_DROP] = "drop",
};

const char *steer_miss_name(int miss)
{
	return miss == NK_MISS_DROP ? miss_names[NK_MISS_DROP] : miss_names[NK_MISS_PASS];
}

bool steer_nsm_steered(const struct nkd_nsm *nsm)
{
	return nkd.steer && nsm->managed;
}

/* The name of the XDP program with this id ("" if unknown). */
static void prog_name(__u32 id, char *buf, size_t len)
{
	struct bpf_prog_info pi = {};
	__u32 plen = sizeof(pi);
	int fd;

	buf[0] = '\0';
	fd = bpf_prog_get_fd_by_id(id);
	if (fd < 0)
		return;
	if (!bpf_obj_get_info_by_fd(fd, &pi, &plen))
		nkd_strscpy(buf, pi.name, len);
	close(fd);
}

static __u32 prog_id(enum nk_steer_prog prog)
{
	struct bpf_prog_info pi = {};
	__u32 plen = sizeof(pi);

	if (bpf_obj_get_info_by_fd(nk_steer_prog_fd(nkd.steer, prog), &pi, &plen))
		return 0;
	return pi.id;
}

/* Sorted map ids and tag of a program (by fd); 0 or -errno. */
static int prog_ident(int fd, __u8 tag[BPF_TAG_SIZE], __u32 *ids, __u32 *nids)
{
	struct bpf_prog_info pi = {};
	__u32 plen = sizeof(pi), i, j;

	pi.nr_map_ids = *nids;
	pi.map_ids = (__u64)(unsigned long)ids;
	if (bpf_obj_get_info_by_fd(fd, &pi, &plen))
		return -errno;
	if (pi.nr_map_ids > *nids)
		return -E2BIG;
	memcpy(tag, pi.tag, BPF_TAG_SIZE);
	*nids = pi.nr_map_ids;
	for (i = 1; i < *nids; i++)	/* insertion sort: a handful of ids */
		for (j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
			__u32 t = ids[j];

			ids[j] = ids[j - 1];
			ids[j - 1] = t;
		}
	return 0;
}

/*
 * Is the attached program old the same as ours: same code (tag) on the
 * same maps (ids)?  A restarted nkd of the same build then keeps it, so
 * program ids survive restarts as map ids do.
 */
static bool prog_same(__u32 old, enum nk_steer_prog prog)
{
	__u32 a_ids[32], b_ids[32], na = 32, nb = 32;
	__u8 a_tag[BPF_TAG_SIZE], b_tag[BPF_TAG_SIZE];
	bool same = false;
	int fd;

	fd = bpf_prog_get_fd_by_id(old);
	if (fd < 0)
		return false;
	if (!prog_ident(fd, a_tag, a_ids, &na) &&
	    !prog_ident(nk_steer_prog_fd(nkd.steer, prog), b_tag, b_ids, &nb))
		same = na == nb && !memcmp(a_tag, b_tag, BPF_TAG_SIZE) &&
		       !memcmp(a_ids, b_ids, na * sizeof(a_ids[0]));
	close(fd);
	return same;
}

static enum nk_xdp_mode attached_mode(int ifindex)
{
	struct bpf_xdp_query_opts q = { .sz = sizeof(q) };

	if (bpf_xdp_query(ifindex, 0, &q))
		return NK_XDP_AUTO;
	return q.attach_mode == XDP_ATTACHED_SKB ? NK_XDP_GENERIC : NK_XDP_NATIVE;
}

/*
 * Attach one of the programs to ifname, in place of whatever is attached
 * there (a previous nkd's program: logged as replaced; anything else: a
 * warning).  Logs the mode.  Nothing to do when ours is there already;
 * *mode is then left as it was.
 */
static int attach(enum nk_steer_prog prog, int ifindex, const char *ifname,
		  enum nk_xdp_mode *mode)
{
	const char *what = prog == NK_STEER_INGRESS ? "ingress" : "egress";
	char name[BPF_OBJ_NAME_LEN], replaced[96] = "";
	__u32 old = 0;
	int ret;

	if (!bpf_xdp_query_id(ifindex, 0, &old) && old && old == prog_id(prog)) {
		debug("%s: our XDP %s program (id %u) is attached already", ifname, what, old);
		return 0;
	}
	if (old && prog_same(old, prog)) {
		*mode = attached_mode(ifindex);
		info("%s (ifindex %d): XDP %s program id %u kept (same code on the same maps), %s mode",
		     ifname, ifindex, what, old, nk_xdp_mode_name(*mode));
		return 0;
	}
	if (old) {
		prog_name(old, name, sizeof(name));
		if (strncmp(name, "xdp_steer_", 10))
			warn("%s: replacing XDP program id %u (%s), which is not nkd's",
			     ifname, old, name[0] ? name : "?");
		snprintf(replaced, sizeof(replaced), ", replacing program id %u", old);
	}
	ret = nk_steer_attach(nkd.steer, prog, ifindex, NK_XDP_AUTO, mode);
	if (ret) {
		err("%s (ifindex %d): cannot attach the XDP %s program: %s", ifname, ifindex,
		    what, strerror(-ret));
		return ret;
	}
	info("%s (ifindex %d): XDP %s program attached in %s mode%s", ifname, ifindex, what,
	     nk_xdp_mode_name(*mode), replaced);
	return 0;
}

static int uplink_attach(void)
{
	int ifindex, ret;

	ifindex = if_nametoindex(nkd.cfg.uplink);
	if (!ifindex) {
		err("uplink %s: no such interface in nkd's network namespace (%s)",
		    nkd.cfg.uplink, strerror(errno));
		return -ENODEV;
	}
	ret = attach(NK_STEER_INGRESS, ifindex, nkd.cfg.uplink, &nkd.uplink_mode);
	if (ret)
		return ret;
	ret = nk_steer_uplink_set(nkd.steer, ifindex);
	if (ret) {
		err("uplink %s: cannot write its devmap slot: %s", nkd.cfg.uplink, strerror(-ret));
		return ret;
	}
	nkd.uplink_ifindex = ifindex;
	return 0;
}

int steer_start(void)
{
	struct nk_steer_config cfg = {
		.miss_action = nkd.cfg.miss == NK_MISS_DROP ? NK_MISS_DROP : NK_MISS_PASS,
	};
	char path[PATH_MAX];
	bool reuse;
	int ret;

	if (!nkd.cfg.uplink)
		return 0;
	/* before anything is pinned: a wrong name must leave nothing behind */
	if (!if_nametoindex(nkd.cfg.uplink)) {
		err("uplink %s: %s", nkd.cfg.uplink,
		    errno == ENODEV ? "no such interface in nkd's network namespace" : strerror(errno));
		return -ENODEV;
	}
	if (!nkd.cfg.pin_dir)
		nkd.cfg.pin_dir = NK_STEER_PIN_DIR;
	nk_steer_libbpf_log();
	snprintf(path, sizeof(path), "%s/vms", nkd.cfg.pin_dir);
	reuse = access(path, F_OK) == 0;
	ret = nk_steer_open(nkd.cfg.pin_dir, &nkd.steer);	/* logs why */
	if (ret)
		return ret;
	info("steering maps %s %s", reuse ? "reused from" : "pinned in", nkd.cfg.pin_dir);
	ret = nk_steer_config_set(nkd.steer, &cfg);
	if (ret) {
		err("steering: cannot write the configuration map: %s", strerror(-ret));
		goto out_close;
	}
	ret = uplink_attach();
	if (ret)
		goto out_close;
	info("uplink %s: frames for no VM are %s", nkd.cfg.uplink,
	     cfg.miss_action == NK_MISS_DROP ? "dropped" : "passed to the host stack");
	return 0;

out_close:
	nk_steer_close(nkd.steer);
	nkd.steer = NULL;
	return ret;
}

int steer_nsm_up(struct nkd_nsm *nsm, struct nkd_err *e)
{
	uint8_t mac[6];
	int ret, id;

	if (!nsm->managed)
		return 0;
	if (!nkd.steer)
		return nkd_fail(e, ENODEV, "nsm %s: nkd creates its namespace on the uplink, but nkd has no uplink (start nkd with --uplink IFNAME)",
				nsm->name);
	ret = netns_create(nsm->netns);
	if (ret < 0)
		return nkd_fail(e, -ret, "nsm %s: cannot create netns %s: %s", nsm->name,
				nsm->netns, strerror(-ret));
	if (ret == 1)
		info("nsm %s: created netns %s", nsm->name, nsm->netns);
	ret = link_nsm_veth(nsm, e);
	if (ret)
		return ret;
	ret = attach(NK_STEER_EGRESS, nsm->host_ifindex, nsm->hostdev, &nsm->egress_mode);
	if (ret)
		return nkd_fail(e, -ret, "nsm %s: cannot attach the XDP egress program to %s: %s",
				nsm->name, nsm->hostdev, strerror(-ret));
	/* VM-to-VM traffic of the NSM stays in its namespace, on its
	 * loopback: the quarantine is enforced there too */
	ret = link_nsm_local(nsm);
	if (ret)
		warn("nsm %s: cannot attach the local program to lo in netns %s: %s; a quarantine of its VMs does not stop their traffic with each other",
		     nsm->name, nsm->netns, strerror(-ret));
	/* frames to the VM's address reach its stack whatever MAC they name;
	 * before nsms makes the slot live (a re-created veth has a new MAC) */
	ret = link_nsm_mac(nsm, mac);
	if (ret)
		warn("nsm %s: MAC of %s: %s; a frame to another NSM's MAC is not rewritten",
		     nsm->name, nsm->dev, strerror(-ret));
	ret = nk_steer_nsm_mac_set(nkd.steer, nsm->slot, ret ? NULL : mac);
	if (ret)
		return nkd_fail(e, -ret, "nsm %s: cannot write its steering entries: %s", nsm->name,
				strerror(-ret));
	ret = nk_steer_nsm_set(nkd.steer, nsm->slot, NK_NSM_KERNEL, nsm->host_ifindex);
	if (ret)
		return nkd_fail(e, -ret, "nsm %s: cannot write its steering entries: %s", nsm->name,
				strerror(-ret));
	/* for the ingress program's socket lookups (SYNs of moved flows) */
	ret = netns_id(nsm->netns, &id);
	if (ret)
		warn("nsm %s: no id for netns %s: %s; a connection from the ports of one that ended there after a move may be reset until nkd prunes its entry",
		     nsm->name, nsm->netns, strerror(-ret));
	nsm->netns_id = ret ? -1 : id;
	ret = nk_steer_nsm_netns_set(nkd.steer, nsm->slot, ret ? NK_STEER_NETNS_NONE : id);
	if (ret)
		return nkd_fail(e, -ret, "nsm %s: cannot write its steering entries: %s", nsm->name,
				strerror(-ret));
	return 0;
}

void steer_nsm_down(struct nkd_nsm *nsm)
{
	int ifindex, ret;

	if (!nsm->managed)
		return;
	if (nkd.steer) {
		ret = nk_steer_nsm_del(nkd.steer, nsm->slot);
		if (ret)
			err("nsm %s: cannot remove its steering entries: %s", nsm->name, strerror(-ret));
	}
	ifindex = if_nametoindex(nsm->hostdev);
	if (ifindex)
		nk_steer_detach(ifindex);
	ret = link_delete(nsm->hostdev);
	if (ret)
		err("nsm %s: cannot delete veth %s: %s", nsm->name, nsm->hostdev, strerror(-ret));
	ret = netns_delete(nsm->netns);
	if (ret)
		err("nsm %s: cannot delete netns %s: %s", nsm->name, nsm->netns, strerror(-ret));
	nsm->host_ifindex = 0;
	nsm->netns_id = -1;
	info("nsm %s: removed its steering entries, veth %s and netns %s", nsm->name,
	     nsm->hostdev, nsm->netns);
}

/*
 * The VM's policy into vm_policy: an entry with drop_all, or none.  Only
 * the uplink's programs enforce it, so a VM whose NSM is not steered has
 * nothing written (it is kept in the configuration and written when the VM
 * moves to a steered NSM, in steer_vm_add()).
 */
static int steer_vm_policy(struct nkd_vm *vm, struct nkd_err *e)
{
	struct nk_steer_policy pol = { .drop_all = 1 };
	int ret;

	if (!steer_nsm_steered(vm->nsm))
		return 0;
	ret = nk_steer_policy_set(nkd.steer, vm->id, vm->drop_all ? &pol : NULL);
	if (ret)
		return nkd_fail(e, -ret, "vm %s: cannot write its policy: %s", vm->name,
				strerror(-ret));
	return 0;
}

int steer_vm_add(struct nkd_vm *vm, struct nkd_err *e)
{
	char txt[NK_ADDRSTRLEN];
	uint32_t i;
	int ret;

	if (!steer_nsm_steered(vm->nsm))
		return 0;
	/* the policy first: no frame of a quarantined VM passes meanwhile */
	ret = steer_vm_policy(vm, e);
	if (ret)
		return ret;
	ret = nk_steer_vm_set(nkd.steer, vm->id, vm->nsm->slot);
	for (i = 0; !ret && i < vm->naddrs; i++) {
		ret = nk_steer_addr_add(nkd.steer, vm->id, &vm->addrs[i].addr);
		if (ret == -EADDRINUSE) {
			/* nkd checked that no VM of its has it: a stale entry */
			warn("vm %s: replacing a stale steering entry of %s", vm->name,
			     nk_addr_ntop(&vm->addrs[i].addr, txt, sizeof(txt)));
			nk_steer_addr_del(nkd.steer, &vm->addrs[i].addr);
			ret = nk_steer_addr_add(nkd.steer, vm->id, &vm->addrs[i].addr);
		}
	}
	if (ret) {
		nk_steer_vm_del(nkd.steer, vm->id);
		return nkd_fail(e, -ret, "vm %s: cannot write its steering entries: %s", vm->name,
				ret == -E2BIG ? "a steering map is full" : strerror(-ret));
	}
	debug("vm %s: steered to nsm %s (id %d)", vm->name, vm->nsm->name, vm->nsm->slot);
	return 0;
}

/*
 * Change a VM's policy (nkctl policy set, SIGHUP): 1 if it changed, 0 if it
 * was so already, or -errno with the old one kept, in the map too.  A
 * quarantine lifted announces the VM's addresses again (gratuitous ARP,
 * unsolicited NA): the policy dropped any announcement meanwhile (a move's
 * included), and the remote hosts may still have another NSM's MAC.
 */
int steer_vm_policy_change(struct nkd_vm *vm, bool drop_all, struct nkd_err *e)
{
	int ret;

	if (vm->drop_all == drop_all)
		return 0;
	vm->drop_all = drop_all;
	ret = steer_vm_policy(vm, e);
	if (ret) {
		vm->drop_all = !drop_all;
		steer_vm_policy(vm, &(struct nkd_err){ "" });
		return ret;
	}
	if (!drop_all && steer_nsm_steered(vm->nsm) && vm->nsm->state == NSM_RUNNING)
		link_announce(vm->nsm, vm);
	return 1;
}

void steer_vm_del(struct nkd_vm *vm)
{
	int ret;

	if (!nkd.steer)
		return;
	ret = nk_steer_vm_del(nkd.steer, vm->id);
	if (ret && ret != -ENOENT)
		err("vm %s: cannot remove its steering entries: %s", vm->name, strerror(-ret));
}

struct stale_vms {
	__u32 ids[NK_STEER_VM_MAX];
	unsigned int n;
};

static int collect_stale(__u32 vm_id, const struct nk_steer_vm *v, void *arg)
{
	struct stale_vms *s = arg;
	struct nkd_vm *vm;

	(void)v;
	for (vm = nkd.vms; vm; vm = vm->next)
		if (vm->id == vm_id && steer_nsm_steered(vm->nsm))
			return 0;
	if (s->n < NK_STEER_VM_MAX)
		s->ids[s->n++] = vm_id;
	return 0;
}

/* Rewrite the whole table from the configuration; drop what is not in it. */
void steer_sync(void)
{
	struct stale_vms *stale;
	struct nkd_err e;
	struct nkd_vm *vm;
	unsigned int i;

	if (!nkd.steer)
		return;
	for (i = 0; i < NK_STEER_NSM_MAX; i++) {
		struct nkd_nsm *nsm = i < NKD_NSM_MAX ? nkd.nsms[i] : NULL;

		if (!nsm || nsm->dead || !nsm->managed || !nsm->host_ifindex)
			nk_steer_nsm_del(nkd.steer, i);
	}
	if (nk_steer_mac_sync(nkd.steer))
		warn("steering: cannot bring nsm_by_mac in line with nsm_macs");
	stale = calloc(1, sizeof(*stale));
	if (stale) {
		nk_steer_vm_foreach(nkd.steer, collect_stale, stale);
		for (i = 0; i < stale->n; i++) {
			info("steering: removing the entries of vm id %u, which nkd no longer steers",
			     stale->ids[i]);
			nk_steer_vm_del(nkd.steer, stale->ids[i]);
		}
		free(stale);
	}
	for (vm = nkd.vms; vm; vm = vm->next)
		if (steer_vm_add(vm, &e))
			err("%s", e.msg);
}

/* SIGHUP: attach the programs again (after "ip link set dev X xdp off"). */
void steer_resync(void)
{
	struct nkd_err e;
	int i;

	if (!nkd.steer)
		return;
	uplink_attach();
	for (i = 0; i < NKD_NSM_MAX; i++) {
		struct nkd_nsm *nsm = nkd.nsms[i];

		if (!nsm || nsm->dead || !nsm->managed)
			continue;
		if (steer_nsm_up(nsm, &e)) {
			err("%s", e.msg);
			nkd_strscpy(nsm->reason, e.msg, sizeof(nsm->reason));
		}
	}
	steer_sync();
	move_steer_sync();
}

/* ---- stats ---- */

static json_t *counters_json(json_t *o, const struct nk_steer_counters *c)
{
	json_t *drops = json_object();
	unsigned int r;

	json_object_set_new(o, "rx_packets", json_integer(c->rx_packets));
	json_object_set_new(o, "rx_bytes", json_integer(c->rx_bytes));
	json_object_set_new(o, "tx_packets", json_integer(c->tx_packets));
	json_object_set_new(o, "tx_bytes", json_integer(c->tx_bytes));
	json_object_set_new(o, "pass_packets", json_integer(c->pass_packets));
	json_object_set_new(o, "pass_bytes", json_integer(c->pass_bytes));
	for (r = 0; r < NK_DROP_MAX; r++)
		json_object_set_new(drops, nk_drop_reason_name(r), json_integer(c->drops[r]));
	json_object_set_new(o, "drops", drops);
	return o;
}

static json_t *vm_stats(const struct nkd_vm *vm, struct nkd_err *e)
{
	struct nk_steer_counters c;
	int ret;

	ret = nk_steer_vm_stats(nkd.steer, vm->id, &c);
	if (ret) {
		nkd_fail(e, -ret, "vm %s: cannot read its counters: %s", vm->name, strerror(-ret));
		return NULL;
	}
	return counters_json(json_pack("{s:s, s:s, s:i, s:s}", "object", "vm", "name", vm->name,
				       "id", (json_int_t)vm->id, "nsm", vm->nsm->name), &c);
}

static json_t *nsm_stats(const struct nkd_nsm *nsm, struct nkd_err *e)
{
	struct nk_steer_counters c;
	int ret;

	ret = nk_steer_nsm_stats(nkd.steer, nsm->slot, &c);
	if (ret) {
		nkd_fail(e, -ret, "nsm %s: cannot read its counters: %s", nsm->name, strerror(-ret));
		return NULL;
	}
	return counters_json(json_pack("{s:s, s:s, s:i, s:s, s:s}", "object", "nsm",
				       "name", nsm->name, "id", (json_int_t)nsm->slot,
				       "hostdev", nsm->hostdev,
				       "xdp_mode", nk_xdp_mode_name(nsm->egress_mode)), &c);
}

static json_t *global_stats(struct nkd_err *e)
{
	struct nk_steer_counters c;
	int ret;

	ret = nk_steer_global_stats(nkd.steer, &c);
	if (ret) {
		nkd_fail(e, -ret, "cannot read the global counters: %s", strerror(-ret));
		return NULL;
	}
	return counters_json(json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}", "object", "global",
				       "name", nkd.cfg.uplink, "ifindex", (json_int_t)nkd.uplink_ifindex,
				       "xdp_mode", nk_xdp_mode_name(nkd.uplink_mode),
				       "miss", steer_miss_name(nkd.cfg.miss),
				       "pin_dir", nkd.cfg.pin_dir), &c);
}

int steer_stats(json_t *args, json_t **res, struct nkd_err *e)
{
	const char *vname = json_string_value(json_object_get(args, "vm"));
	const char *nname = json_string_value(json_object_get(args, "nsm"));
	json_t *all, *arr, *o;
	struct nkd_nsm *nsm;
	struct nkd_vm *vm;
	int i;

	if (!nkd.steer)
		return nkd_fail(e, ENODEV, "stats: nkd steers no uplink, so nothing is counted (start nkd with --uplink IFNAME)");
	if (vname && nname)
		return nkd_fail(e, EINVAL, "stats: give vm NAME or nsm NAME, not both");
	if (vname) {
		vm = vm_find(vname);
		if (!vm)
			return nkd_fail(e, ENOENT, "vm %s does not exist (see 'nkctl vm list')", vname);
		if (!steer_nsm_steered(vm->nsm))
			return nkd_fail(e, ENOENT, "vm %s is not steered: its nsm %s has a netns of its own, not one nkd created on the uplink",
					vname, vm->nsm->name);
		*res = vm_stats(vm, e);
		return *res ? 0 : -EIO;
	}
	if (nname) {
		nsm = nsm_find(nname);
		if (!nsm)
			return nkd_fail(e, ENOENT, "nsm %s does not exist (see 'nkctl nsm list')", nname);
		if (!steer_nsm_steered(nsm))
			return nkd_fail(e, ENOENT, "nsm %s is not steered: it has a netns of its own, not one nkd created on the uplink",
					nname);
		*res = nsm_stats(nsm, e);
		return *res ? 0 : -EIO;
	}
	o = global_stats(e);
	if (!o)
		return -EIO;
	all = json_pack("{s:o}", "global", o);
	arr = json_array();
	json_object_set_new(all, "nsms", arr);
	for (i = 0; i < NKD_NSM_MAX; i++) {
		nsm = nkd.nsms[i];
		if (nsm && !nsm->dead && steer_nsm_steered(nsm) && (o = nsm_stats(nsm, e)))
			json_array_append_new(arr, o);
	}
	arr = json_array();
	json_object_set_new(all, "vms", arr);
	for (vm = nkd.vms; vm; vm = vm->next)
		if (steer_nsm_steered(vm->nsm) && (o = vm_stats(vm, e)))
			json_array_append_new(arr, o);
	*res = all;
	return 0;
}

/*
 * Teardown (after every VM and NSM is gone): detach the ingress program
 * from the uplink and unpin the maps.  Returns what was removed.
 */
json_t *steer_teardown(void)
{
	json_t *o;
	int ret;

	if (!nkd.steer)
		return json_null();
	o = json_pack("{s:s, s:s}", "uplink", nkd.cfg.uplink, "pin_dir", nkd.cfg.pin_dir);
	if (nkd.uplink_ifindex) {
		ret = nk_steer_detach(nkd.uplink_ifindex);
		if (ret)
			err("uplink %s: cannot detach the XDP program: %s", nkd.cfg.uplink, strerror(-ret));
		else
			info("uplink %s: XDP program detached", nkd.cfg.uplink);
	}
	ret = nk_steer_unpin(nkd.steer);
	if (ret)
		err("steering: cannot unpin the maps in %s: %s", nkd.cfg.pin_dir, strerror(-ret));
	else
		info("steering: maps unpinned from %s", nkd.cfg.pin_dir);
	nk_steer_close(nkd.steer);
	nkd.steer = NULL;
	nkd.uplink_ifindex = 0;
	nkd.cfg.uplink = NULL;
	return o;
}
