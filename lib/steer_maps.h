/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Userspace side of the XDP steering programs (bpf/steer.bpf.c), for nkd,
 * their only userspace writer, and for the BPF selftest.  It hides the
 * skeleton: open -> pin/reuse the maps under a pin dir -> load, attach the
 * programs to interfaces, write the multiplexing table (uplink, NSMs, VMs,
 * addresses, policy, configuration) and read the per-CPU counters summed
 * over the CPUs.
 *
 * Restart is not teardown: nk_steer_open() reuses the maps already pinned
 * in the pin dir (tables and counters survive), nk_steer_close() leaves the
 * maps pinned and the programs attached; only nk_steer_unpin() and
 * nk_steer_detach() remove anything.  Every table write is idempotent, so
 * a restarted nkd simply writes its configuration again.
 *
 * Functions return 0 or -errno (libbpf's convention) and do not log, except
 * nk_steer_open() and nk_steer_attach(), which say what failed.  Ids are
 * nkd's: vm ids 1..65535 (at most NK_STEER_VM_MAX VMs), nsm ids
 * 0..NK_STEER_NSM_MAX-1.  Not thread-safe; nkd calls it from its loop.
 */
#ifndef NK_STEER_MAPS_H
#define NK_STEER_MAPS_H

#include <stdbool.h>
#include <netkernel/proto.h>
#include <netkernel/steer.h>

struct nk_steer;

enum nk_steer_prog {
	NK_STEER_INGRESS,	/* xdp_steer_ingress: on the uplink */
	NK_STEER_EGRESS,	/* xdp_steer_egress: on each NSM veth's host side */
};

enum nk_xdp_mode {
	NK_XDP_AUTO = 0,	/* native if the driver has it, else generic */
	NK_XDP_NATIVE,
	NK_XDP_GENERIC,
};

/* Route libbpf's messages to the nk log, one level down (warn -> info). */
void nk_steer_libbpf_log(void);

/*
 * mkdir -p dir (0700) and make sure it is on a bpf filesystem; if it is
 * not and /sys/fs/bpf is not bpffs either, mount bpffs on /sys/fs/bpf
 * first.  -ENOTSUP if dir still is not on bpffs.
 */
int nk_bpffs_ensure(const char *dir);

/*
 * Load the programs with their maps pinned under pin_dir (NULL:
 * NK_STEER_PIN_DIR), reusing maps already pinned there.  -EINVAL (logged)
 * if a pinned map has another layout: unpin it (nk_steer_unpin() of an old
 * build, or rm) to start afresh.
 */
int nk_steer_open(const char *pin_dir, struct nk_steer **out);
/* Close the fds; maps stay pinned and attached programs stay attached. */
void nk_steer_close(struct nk_steer *st);
/* Explicit teardown: unpin every map and remove pin_dir if it is empty. */
int nk_steer_unpin(struct nk_steer *st);

const char *nk_steer_pin_dir(const struct nk_steer *st);
int nk_steer_prog_fd(const struct nk_steer *st, enum nk_steer_prog prog);

/* tc_steer_local on tc ingress of the caller's namespace's loopback (a
 * steered NSM's: VM-to-VM traffic there never crosses the uplink). */
int nk_steer_local_attach(struct nk_steer *st);

/*
 * Attach prog to ifindex in mode want, replacing what is attached there
 * (a restarted nkd replaces its predecessor's program).  *got (may be
 * NULL) says which mode was used.  Netlink attachment: it outlives nkd.
 */
int nk_steer_attach(struct nk_steer *st, enum nk_steer_prog prog, int ifindex,
		    enum nk_xdp_mode want, enum nk_xdp_mode *got);
/* Detach whatever XDP program is attached to ifindex (any mode). */
int nk_steer_detach(int ifindex);
const char *nk_xdp_mode_name(enum nk_xdp_mode mode);

/*
 * Let a veth receive frames redirected into its peer by native XDP: the
 * receiving end needs NAPI, which veth enables with GRO (or an XDP program
 * of its own).  Call it in the namespace of ifname, for the NSM side of an
 * NSM's veth pair and, when the uplink is a veth, for its far side.
 */
int nk_veth_enable_gro(const char *ifname);

/* The tables.  Order for a new VM: nsm_set, vm_set, addr_add. */
int nk_steer_config_set(struct nk_steer *st, const struct nk_steer_config *cfg);
int nk_steer_config_get(struct nk_steer *st, struct nk_steer_config *cfg);
/* The uplink: egress target.  ifindex 0 clears it. */
int nk_steer_uplink_set(struct nk_steer *st, int ifindex);
/*
 * An NSM and the host side of its veth (kind KERNEL: its ingress target and
 * where its egress comes from).  Re-setting with another ifindex moves it.
 */
int nk_steer_nsm_set(struct nk_steer *st, __u32 nsm_id, enum nk_nsm_kind kind, int ifindex);
/*
 * The NSM's network namespace, by its id in the uplink's namespace (nsid;
 * NK_STEER_NETNS_UPLINK: the uplink's own), where the ingress program looks
 * up the NSM's sockets for a SYN of a flow pinned to it (bpf/steer.bpf.c).
 * NK_STEER_NETNS_NONE: not known; every such SYN then goes to the NSM.
 */
#define NK_STEER_NETNS_UPLINK	(-1)
#define NK_STEER_NETNS_NONE	(-2)
int nk_steer_nsm_netns_set(struct nk_steer *st, __u32 nsm_id, int netns_id);
/* The MAC of the NSM's end of its veth (nsm_macs, and nsm_by_mac the
 * other way); NULL: not known. */
int nk_steer_nsm_mac_set(struct nk_steer *st, __u32 nsm_id, const __u8 *mac);
/* Make nsm_by_mac what nsm_macs says: remove the entries it does not name
 * (a crash between the two writes, a pinned map kept across a restart),
 * add those missing (two NSMs that had one MAC, one deleted since). */
int nk_steer_mac_sync(struct nk_steer *st);
/* Remove the NSM's entries and zero its counters.  Its VMs then drop (NO_NSM). */
int nk_steer_nsm_del(struct nk_steer *st, __u32 nsm_id);
/* Add a VM or move it to another NSM; creates its counters if absent. */
int nk_steer_vm_set(struct nk_steer *st, __u32 vm_id, __u32 nsm_id);
/* The same with flags (NK_STEER_VM_F_*); nk_steer_vm_set() clears them. */
int nk_steer_vm_set_flags(struct nk_steer *st, __u32 vm_id, __u32 nsm_id, __u32 flags);
/* Remove the VM, its addresses, policy and counters. */
int nk_steer_vm_del(struct nk_steer *st, __u32 vm_id);
/* Map addr (port ignored) to vm_id; -EADDRINUSE if another VM has it. */
int nk_steer_addr_add(struct nk_steer *st, __u32 vm_id, const struct nk_addr *addr);
int nk_steer_addr_del(struct nk_steer *st, const struct nk_addr *addr);
/* pol NULL: remove the VM's policy (everything allowed). */
int nk_steer_policy_set(struct nk_steer *st, __u32 vm_id, const struct nk_steer_policy *pol);

/*
 * Known flows (steer_flows): a flow of a VM that stays on the NSM holding
 * it while the VM's new flows go to its new NSM.  nk_steer_flow_key()
 * builds the key from the VM's local and the remote address (IPv4-mapped
 * IPv6 addresses become IPv4); -EAFNOSUPPORT for other families.
 */
int nk_steer_flow_key(struct nk_steer_flow *key, int proto, const struct nk_addr *vm_addr,
		      const struct nk_addr *remote);
int nk_steer_flow_set(struct nk_steer *st, const struct nk_steer_flow *key,
		      const struct nk_steer_flow_nsm *val);
/* 0 also when there was no such entry. */
int nk_steer_flow_del(struct nk_steer *st, const struct nk_steer_flow *key);
int nk_steer_flow_foreach(struct nk_steer *st,
			  int (*fn)(const struct nk_steer_flow *key,
				    const struct nk_steer_flow_nsm *val, void *arg),
			  void *arg);

/*
 * A VM draining from an NSM (vm_drains): val is what steer_flows holds for
 * that NSM's flows of the VM; the egress program pins the flow of each
 * connect the NSM starts for the VM with it.  nk_steer_drain_del() returns
 * 0 also when there was no such entry; nk_steer_drain_foreach() as
 * nk_steer_flow_foreach().
 */
int nk_steer_drain_set(struct nk_steer *st, __u32 vm_id, const struct nk_steer_flow_nsm *val);
int nk_steer_drain_del(struct nk_steer *st, __u32 vm_id, __u32 nsm_id);
int nk_steer_drain_foreach(struct nk_steer *st,
			   int (*fn)(const struct nk_steer_drain *key,
				     const struct nk_steer_flow_nsm *val, void *arg),
			   void *arg);

/*
 * Call fn for each VM in the table (e.g. to prune VMs a restarted nkd no
 * longer knows).  fn returning non-zero stops the walk with that value.
 */
int nk_steer_vm_foreach(struct nk_steer *st,
			int (*fn)(__u32 vm_id, const struct nk_steer_vm *vm, void *arg),
			void *arg);

/* Counters summed over all CPUs.  -ENOENT for an unknown VM. */
int nk_steer_vm_stats(struct nk_steer *st, __u32 vm_id, struct nk_steer_counters *sum);
int nk_steer_nsm_stats(struct nk_steer *st, __u32 nsm_id, struct nk_steer_counters *sum);
int nk_steer_global_stats(struct nk_steer *st, struct nk_steer_counters *sum);

#endif /* NK_STEER_MAPS_H */
