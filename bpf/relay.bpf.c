// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The kernel NSM's in-kernel relay, guest -> network direction.
 *
 * Theory of operation.  A guest socket is a stream from the guest (here
 * the AF_UNIX stand-in for vsock) whose far end the NSM holds; the NSM
 * relays it to a TCP socket.  Instead of waking the NSM for every write of
 * the guest and splicing the bytes through a pipe, the NSM puts its end of
 * the stream into relay_guest (this program is its verdict program) and the
 * TCP socket into relay_tcp (no programs: a redirect target only), and
 * relay_conns[cookie of its stream end] = { slot of the TCP socket }.
 * Every skb the guest writes then runs this program in the guest's own
 * write and is handed to the TCP socket inside the kernel.
 *
 * The verdict program of an AF_UNIX stream sees the skb owned by the
 * *sending* socket (the guest's end), so bpf_get_socket_cookie(skb) is the
 * guest end's cookie, which the NSM cannot know.  The program follows the
 * sender's peer pointer instead: the peer of the guest's end is the NSM's
 * end, whose cookie the NSM read with SO_COOKIE.  (CO-RE types below, the
 * few fields needed; bpf_skc_to_unix_sock needs CAP_PERFMON.)
 *
 * An skb of a stream without an entry is passed to its socket (counted in
 * misses; the NSM never lets that happen), an empty skb is dropped: an
 * empty redirect would stop the target's transmit path.  Bytes moved are
 * counted per connection so that the NSM knows when the TCP socket has
 * taken all of them (before it passes on the guest's EOF) and so that
 * `nkctl conn list` and the VM's byte counters stay right.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "netkernel/steer.h"

#define AF_UNIX	1

/* CO-RE views of the kernel's socket structs: only what is read. */
struct sock_common {
	struct {
		long long counter;
	} skc_cookie;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct unix_sock {
	struct sock *peer;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, NK_RELAY_MAX);
	__type(key, __u32);
	__type(value, __u64);
} relay_guest SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, NK_RELAY_MAX);
	__type(key, __u32);
	__type(value, __u64);
} relay_tcp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NK_RELAY_MAX);
	__type(key, __u64);
	__type(value, struct nk_relay_conn);
} relay_conns SEC(".maps");

__u64 relay_misses;

SEC("sk_skb")
int relay_verdict(struct __sk_buff *skb)
{
	struct bpf_sock *bsk = skb->sk;
	struct nk_relay_conn *c;
	struct unix_sock *us;
	struct sock *peer;
	__u64 cookie;

	if (!bsk || bsk->family != AF_UNIX)
		return SK_PASS;
	us = bpf_skc_to_unix_sock(bsk);
	if (!us)
		return SK_PASS;
	peer = us->peer;
	if (!peer)
		return SK_PASS;
	cookie = peer->__sk_common.skc_cookie.counter;
	c = bpf_map_lookup_elem(&relay_conns, &cookie);
	if (!c) {
		__sync_fetch_and_add(&relay_misses, 1);
		return SK_PASS;
	}
	if (!skb->len)
		return SK_DROP;
	__sync_fetch_and_add(&c->bytes, skb->len);
	__sync_fetch_and_add(&c->skbs, 1);
	return bpf_sk_redirect_map(skb, &relay_tcp, c->slot, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
