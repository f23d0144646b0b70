// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The in-kernel relay of the guest -> network direction (bpf/relay.bpf.c).
 *
 * When a TCP guest socket enters data mode over an AF_UNIX guest stream,
 * krelay_start() puts the TCP socket into relay_tcp (a redirect target),
 * records relay_conns[cookie of our stream end] = { its slot }, and puts our
 * stream end into relay_guest, whose verdict program then hands every skb
 * the guest writes to the TCP socket inside the kernel: the NSM is not
 * woken and no byte crosses user space.  The other direction stays with
 * relay.c (splice), which also handles every end of the connection.
 *
 * Order matters.  krelay_start() runs before the CONNECTED record (or the
 * HELLO ACCEPT reply) is written, so the guest cannot have written payload
 * yet: nothing sits in our end's receive queue that the verdict program
 * would never see.  The TCP socket is in relay_tcp and the relay_conns
 * entry exists before our end joins relay_guest, so no skb is redirected
 * to an empty slot (which would drop it).
 *
 * The guest's EOF (its shutdown(SHUT_WR) or close) may only become a FIN
 * once the TCP socket has taken every byte the verdict redirected: the
 * kernel moves them from a work queue, after the guest's write returned.
 * The TCP socket has taken W bytes when tcpi_bytes_acked + SIOCOUTQ grew by
 * W since krelay_start() (read in that order: the sum can only come out
 * low, never high).  Until the count matches, relay.c asks again after 1,
 * 2, 4 ... up to 128 ms (the event loop's timeout says when), so a peer
 * that stops reading costs next to nothing.  krelay_stop() then takes the sockets out of the
 * maps; closing a socket also removes it.
 *
 * Off by default (nk-nsm --kernel-relay, or per NSM `relay kernel`): it
 * shortens the round trip (docs/benchmarks.md) but bulk transfers from the
 * guest run slower than with splice: the redirected skbs are sent one at a
 * time by the psock's per-CPU work item, and the transfer waits more than
 * it works (neither CPU is busy; krelay_sndbuf() wins part of it back).
 * Passing bulk skbs to the NSM instead (SK_PASS) is no way out: passed
 * skbs leave the guest's send buffer for a psock queue that nothing
 * bounds.  Nor is taking a busy stream out of relay_guest to splice it
 * (from the kernel's source, not tried): a guest write in flight may still
 * call the psock's data_ready after the psock is gone, which reads the skb
 * off our end and drops it.  Without the program (no CAP_BPF and
 * CAP_PERFMON, an older kernel) every connection uses the splice relay;
 * the NSM says so once at start.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "netkernel/steer.h"
#include "nsm.h"
#include "relay.skel.h"

static struct {
	struct relay_bpf *skel;
	int guest_fd, tcp_fd, conns_fd;
	uint32_t *free_slots;		/* ring of unused slots, oldest first */
	uint32_t nfree, head;		/* head: the next slot to hand out */
	struct list_head draining;	/* relays whose guest EOF waits for TCP */
	int sndbuf;			/* SO_SNDBUFFORCE for relayed sockets, 0: none */
} kr = { .guest_fd = -1, .tcp_fd = -1, .conns_fd = -1,
	 .draining = { &kr.draining, &kr.draining } };

static int quiet_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG || !nk_log_enabled(NK_LOG_DEBUG))
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/* The namespace's autotuning ceiling for TCP send buffers, 0 if unknown. */
static long read_tcp_wmem_max(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_wmem", "re");
	long lo, def, max;

	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld %ld", &lo, &def, &max) != 3)
		max = 0;
	fclose(f);
	return max;
}

int krelay_init(void)
{
	uint32_t i;
	int ret;

	libbpf_set_print(quiet_libbpf);
	kr.skel = relay_bpf__open_and_load();
	if (!kr.skel) {
		ret = -errno;
		goto fail;
	}
	kr.guest_fd = bpf_map__fd(kr.skel->maps.relay_guest);
	kr.tcp_fd = bpf_map__fd(kr.skel->maps.relay_tcp);
	kr.conns_fd = bpf_map__fd(kr.skel->maps.relay_conns);
	if (bpf_prog_attach(bpf_program__fd(kr.skel->progs.relay_verdict), kr.guest_fd,
			    BPF_SK_SKB_VERDICT, 0)) {
		ret = -errno;
		goto fail;
	}
	kr.free_slots = malloc(NK_RELAY_MAX * sizeof(*kr.free_slots));
	if (!kr.free_slots) {
		ret = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < NK_RELAY_MAX; i++)
		kr.free_slots[i] = i;
	kr.nfree = NK_RELAY_MAX;
	kr.head = 0;
	/* the default yields to an autotuning ceiling as high; a size the
	 * operator chose is applied as given; 0: autotuning */
	if (nsm.cfg.krelay_sndbuf != NSM_KRELAY_SNDBUF || read_tcp_wmem_max() < NSM_KRELAY_SNDBUF)
		kr.sndbuf = (int)(nsm.cfg.krelay_sndbuf / 2);	/* the kernel doubles it */
	info("in-kernel relay of guest -> network data: on (program relay_verdict, maps relay_guest, relay_tcp, relay_conns)");
	return 0;

fail:
	relay_bpf__destroy(kr.skel);
	kr.skel = NULL;
	warn("in-kernel relay unavailable (%s): every connection is relayed with splice",
	     strerror(-ret));
	return ret;
}

bool krelay_enabled(void)
{
	return kr.skel;
}

static int tcp_written(int fd, uint64_t *w)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int outq;

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len))
		return -errno;
	if (ioctl(fd, SIOCOUTQ, &outq))
		return -errno;
	*w = ti.tcpi_bytes_acked + (uint64_t)outq;
	return 0;
}

/*
 * A relayed TCP socket's send buffer: --kernel-relay-sndbuf (16 MiB by
 * default) unless the guest chose one.  The kernel hands the redirected
 * skbs to TCP from the psock's work item; when TCP's send buffer is full it
 * stops and tries again one jiffy later (sk_psock_backlog(): the socket has
 * no verdict program, so no write-space callback starts it sooner).  TCP
 * only sends during that jiffy if the buffer holds a jiffy's worth of data
 * (4 ms at HZ=250: 5 MB at 10 Gbit/s), more than autotuning's ceiling
 * (tcp_wmem's maximum, 4 MiB by default), which is left in charge when it
 * is at least as large as the default; 0 always leaves it in charge, and
 * any other size is applied as given (kr.sndbuf, set at krelay_init()).
 * The price: a connection whose peer stops reading keeps up to that much
 * unsent in the NSM's namespace, also after the guest closed it, until
 * TCP gives up.
 */
static void krelay_sndbuf(struct nsock *ns)
{
	static bool warned;

	if (!kr.sndbuf || ns->sndbuf_set)
		return;
	if (setsockopt(ns->fd, SOL_SOCKET, SO_SNDBUFFORCE, &kr.sndbuf, sizeof(kr.sndbuf)) &&
	    !warned) {
		warned = true;
		warn("in-kernel relay: SO_SNDBUFFORCE refused (%s): relayed TCP sockets keep "
		     "autotuned send buffers, and bulk sends are slower", strerror(errno));
	}
}

/* Take the guest -> TCP direction of ns into the kernel.  0, or -errno and
 * nothing changed (the caller relays that direction itself). */
int krelay_start(struct nsock *ns)
{
	struct relay *r = ns->relay;
	struct nk_relay_conn c = { 0 };
	socklen_t len = sizeof(r->kcookie);
	uint64_t gfd = ns->chan->fd, tfd = ns->fd;
	int ret, inq = 0;

	if (!kr.skel)
		return -EOPNOTSUPP;
	if (!kr.nfree)
		return -ENOSPC;
	/* Bytes already queued on our end would never meet the verdict
	 * program (it runs on arrival): such a stream stays with splice. */
	if (ioctl(ns->chan->fd, SIOCINQ, &inq) || inq)
		return -EBUSY;
	if (getsockopt(ns->chan->fd, SOL_SOCKET, SO_COOKIE, &r->kcookie, &len))
		return -errno;
	ret = tcp_written(ns->fd, &r->kbase);
	if (ret)
		return ret;
	/* Slots are reused oldest first: a verdict still running for a
	 * connection that just ended cannot hit its slot's next owner. */
	c.slot = kr.free_slots[kr.head];
	if (bpf_map_update_elem(kr.tcp_fd, &c.slot, &tfd, BPF_ANY))
		return -errno;
	if (bpf_map_update_elem(kr.conns_fd, &r->kcookie, &c, BPF_NOEXIST)) {
		ret = -errno;
		bpf_map_delete_elem(kr.tcp_fd, &c.slot);
		return ret;
	}
	if (bpf_map_update_elem(kr.guest_fd, &c.slot, &gfd, BPF_ANY)) {
		ret = -errno;
		bpf_map_delete_elem(kr.conns_fd, &r->kcookie);
		bpf_map_delete_elem(kr.tcp_fd, &c.slot);
		return ret;
	}
	kr.head = (kr.head + 1) % NK_RELAY_MAX;
	kr.nfree--;
	r->kslot = c.slot;
	r->kup = true;
	krelay_sndbuf(ns);
	return 0;
}

/* Bytes the verdict program moved for this connection so far. */
uint64_t krelay_bytes(const struct nsock *ns)
{
	struct nk_relay_conn c;

	if (!ns->relay || !ns->relay->kup ||
	    bpf_map_lookup_elem(kr.conns_fd, &ns->relay->kcookie, &c))
		return 0;
	return c.bytes;
}

/*
 * Has the TCP socket taken every byte redirected to it?  1 yes, 0 not yet
 * (the caller asks again later), -errno when it cannot tell.
 */
int krelay_drained(struct nsock *ns)
{
	struct relay *r = ns->relay;
	uint64_t w = 0;
	int ret;

	ret = tcp_written(ns->fd, &w);
	if (ret)
		return ret;
	ret = w - r->kbase >= krelay_bytes(ns);
	if (!ret) {
		/* Look again soon, then less often: a peer that reads
		 * nothing must not cost a core. */
		r->kdelay_ms = r->kdraining ? (r->kdelay_ms < 128 ? r->kdelay_ms * 2 : 128) : 1;
		r->knext_ms = mono_ns() / 1000000 + r->kdelay_ms;
		if (!r->kdraining) {
			r->kdraining = true;
			list_add_tail(&r->knode, &kr.draining);
		}
	} else if (r->kdraining) {
		r->kdraining = false;
		list_del(&r->knode);
	}
	return ret;
}

/* Milliseconds the event loop may sleep: until the next draining
 * connection is due, else forever. */
int krelay_wait_ms(void)
{
	uint64_t now = mono_ns() / 1000000, next = UINT64_MAX;
	struct list_head *p;

	for (p = kr.draining.next; p != &kr.draining; p = p->next) {
		struct relay *r = list_entry(p, struct relay, knode);

		if (r->knext_ms < next)
			next = r->knext_ms;
	}
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)(next - now);
}

/* Take the connection out of the kernel relay; its byte count goes to the
 * connection's and the VM's counters. */
void krelay_stop(struct nsock *ns)
{
	struct relay *r = ns->relay;
	uint64_t n;

	if (!r || !r->kup)
		return;
	n = krelay_bytes(ns);
	r->kbytes_done += n;	/* conn list: up.bytes + kbytes_done */
	ns->vm->bytes_up += n;
	bpf_map_delete_elem(kr.guest_fd, &r->kslot);
	bpf_map_delete_elem(kr.conns_fd, &r->kcookie);
	bpf_map_delete_elem(kr.tcp_fd, &r->kslot);
	kr.free_slots[(kr.head + kr.nfree) % NK_RELAY_MAX] = r->kslot;
	kr.nfree++;
	if (r->kdraining)
		list_del(&r->knode);
	r->kdraining = false;
	r->kup = false;
}

/* Connections whose guest EOF waits for the TCP socket: ask again. */
void krelay_poll(void)
{
	struct list_head *p, *t;

	uint64_t now = mono_ns() / 1000000;

	list_for_each_safe(p, t, &kr.draining) {
		struct relay *r = list_entry(p, struct relay, knode);

		if (r->knext_ms <= now)
			relay_kick(r->ns);
	}
}
