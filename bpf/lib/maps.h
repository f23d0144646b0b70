/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The steering maps: the multiplexing table (address -> VM -> NSM ->
 * redirect slot), the per-VM policy, the redirect maps and the per-CPU
 * counters.  Every map is BTF-typed with the structs of
 * include/netkernel/steer.h (the kernel keeps no BTF for devmaps and
 * xskmaps) and pinned by nkd under its pin dir (default
 * /sys/fs/bpf/netkernel/<map name>).  nkd is the only userspace writer;
 * the programs write the counters and steer_flows: the ingress program
 * deletes the entry of a connection that has ended, the egress program
 * adds one for a connect an NSM starts while the VM drains from it.
 * docs/maps.md has the full table.
 */
#ifndef NK_BPF_MAPS_H
#define NK_BPF_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <netkernel/steer.h>

/* Global configuration (miss action), one entry; written by nkd. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nk_steer_config);
} steer_cfg SEC(".maps");

/* VM address (IPv4/IPv6) -> vm id; written by nkd on vm add/del. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NK_STEER_ADDR_MAX);
	__type(key, struct nk_steer_addr);
	__type(value, struct nk_steer_addr_vm);
} addr_vm SEC(".maps");

/*
 * Known flow of a VM -> the NSM holding it, consulted before the VM's own
 * NSM; written by nkd when a VM moves (its old NSM's connections), pruned
 * as they end; the ingress program deletes the entry of an ended flow
 * whose ports a new connection (SYN) reuses, the egress program adds the
 * flow of a connect the old NSM starts (vm_drains).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NK_STEER_FLOW_MAX);
	__type(key, struct nk_steer_flow);
	__type(value, struct nk_steer_flow_nsm);
} steer_flows SEC(".maps");

/*
 * (VM, NSM it drains from) -> the steer_flows value of that NSM's flows;
 * written by nkd while the drain lasts.  The egress program pins the flow
 * of each TCP SYN such an NSM sends from the VM's address.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NK_STEER_DRAIN_MAX);
	__type(key, struct nk_steer_drain);
	__type(value, struct nk_steer_flow_nsm);
} vm_drains SEC(".maps");

/* vm id -> the NSM serving it; written by nkd on vm add/del/move. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NK_STEER_VM_MAX);
	__type(key, __u32);
	__type(value, struct nk_steer_vm);
} vms SEC(".maps");

/* vm id -> policy (drop_all); written by nkd on "nkctl policy set". */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NK_STEER_VM_MAX);
	__type(key, __u32);
	__type(value, struct nk_steer_policy);
} vm_policy SEC(".maps");

/* nsm id -> kind and redirect slots; written by nkd on nsm add/del. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NK_STEER_NSM_MAX);
	__type(key, __u32);
	__type(value, struct nk_steer_nsm);
} nsms SEC(".maps");

/* nsm id -> the NSM's netns id (nsid), for socket lookups; written by nkd. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NK_STEER_NSM_MAX);
	__type(key, __u32);
	__type(value, struct nk_steer_nsm_netns);
} nsm_netns SEC(".maps");

/* nsm id -> the MAC of the NSM's end of its veth (ingress); written by nkd. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NK_STEER_NSM_MAX);
	__type(key, __u32);
	__type(value, struct nk_steer_nsm_mac);
} nsm_macs SEC(".maps");

/* an NSM's MAC -> its id (ingress: neighbour replies go to the NSM that
 * asked); written by nkd with nsm_macs.  Room for two MACs per NSM: a new
 * one is mapped before the old one is unmapped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * NK_STEER_NSM_MAX);
	__type(key, struct nk_steer_mac);
	__type(value, struct nk_steer_nsm_ref);
} nsm_by_mac SEC(".maps");

/* ifindex of an NSM veth's host side -> nsm id (egress); written by nkd. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NK_STEER_NSM_MAX);
	__type(key, __u32);
	__type(value, struct nk_steer_nsm_ref);
} nsm_ifindex SEC(".maps");

/* dev slot -> host side of a kernel NSM's veth; written by nkd. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, NK_STEER_NSM_MAX);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} nsm_devs SEC(".maps");

/* xsk slot -> AF_XDP socket of an NSM (reserved, unused); written by nkd. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, NK_STEER_NSM_MAX);
	__type(key, __u32);
	__type(value, __u32);
} nsm_xsks SEC(".maps");

/* Slot 0: the uplink NIC, target of all egress; written by nkd. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} uplink_dev SEC(".maps");

/* vm id -> per-CPU counters; entry created by nkd, bumped by BPF. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NK_STEER_VM_MAX);
	__type(key, __u32);
	__type(value, struct nk_steer_counters);
} vm_stats SEC(".maps");

/* nsm id -> per-CPU counters; bumped by BPF, zeroed by nkd on nsm del. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NK_STEER_NSM_MAX);
	__type(key, __u32);
	__type(value, struct nk_steer_counters);
} nsm_stats SEC(".maps");

/* Slot 0: per-CPU counters of every frame seen; bumped by BPF. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nk_steer_counters);
} global_stats SEC(".maps");

#endif /* NK_BPF_MAPS_H */
