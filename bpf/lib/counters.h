/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Counting: a frame's counters are looked up once into a struct
 * steer_stats (global always; the VM's and the NSM's once the frame is
 * attributed to them) and every verdict goes through one of the helpers
 * below, so each frame is counted exactly once per entity that knows it.
 * Per-CPU values, so plain increments; userspace sums the CPUs.
 */
#ifndef NK_BPF_COUNTERS_H
#define NK_BPF_COUNTERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <netkernel/steer.h>
#include "maps.h"

struct steer_stats {
	struct nk_steer_counters *global;
	struct nk_steer_counters *vm;	/* NULL until the VM is known */
	struct nk_steer_counters *nsm;	/* NULL until the NSM is known */
	__u64 len;			/* frame length in bytes */
};

static __always_inline void stats_init(struct steer_stats *s, struct xdp_md *ctx)
{
	__u32 zero = 0;

	s->global = bpf_map_lookup_elem(&global_stats, &zero);
	s->vm = NULL;
	s->nsm = NULL;
	s->len = ctx->data_end - ctx->data;
}

static __always_inline void stats_set_vm(struct steer_stats *s, __u32 vm_id)
{
	s->vm = bpf_map_lookup_elem(&vm_stats, &vm_id);
}

static __always_inline void stats_set_nsm(struct steer_stats *s, __u32 nsm_id)
{
	s->nsm = bpf_map_lookup_elem(&nsm_stats, &nsm_id);
}

static __always_inline void count_one_drop(struct nk_steer_counters *c, __u32 reason)
{
	if (c)
		c->drops[reason & (NK_DROP_SLOTS - 1)]++;
}

/* Count a drop for reason and return XDP_DROP. */
static __always_inline int count_drop(struct steer_stats *s, enum nk_drop_reason reason)
{
	count_one_drop(s->global, reason);
	count_one_drop(s->vm, reason);
	count_one_drop(s->nsm, reason);
	return XDP_DROP;
}

/* Count a frame handed to the host stack and return XDP_PASS. */
static __always_inline int count_pass(struct steer_stats *s)
{
	if (s->global) {
		s->global->pass_packets++;
		s->global->pass_bytes += s->len;
	}
	return XDP_PASS;
}

static __always_inline void count_rx_one(struct nk_steer_counters *c, __u64 len)
{
	if (c) {
		c->rx_packets++;
		c->rx_bytes += len;
	}
}

static __always_inline void count_tx_one(struct nk_steer_counters *c, __u64 len)
{
	if (c) {
		c->tx_packets++;
		c->tx_bytes += len;
	}
}

/* Count an ingress frame redirected towards an NSM; returns XDP_REDIRECT. */
static __always_inline int count_rx(struct steer_stats *s)
{
	count_rx_one(s->global, s->len);
	count_rx_one(s->vm, s->len);
	count_rx_one(s->nsm, s->len);
	return XDP_REDIRECT;
}

/* Count an egress frame redirected to the uplink; returns XDP_REDIRECT. */
static __always_inline int count_tx(struct steer_stats *s)
{
	count_tx_one(s->global, s->len);
	count_tx_one(s->vm, s->len);
	count_tx_one(s->nsm, s->len);
	return XDP_REDIRECT;
}

#endif /* NK_BPF_COUNTERS_H */
