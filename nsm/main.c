// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nk-nsm: the kernel Network Stack Module.  nkd starts it inside the NSM's
 * network namespace; it serves the guest protocol (proto.h) for every VM nkd
 * assigns to it, running each guest socket on the Linux stack of that
 * namespace, and takes its orders from nkd over --control (nsmctl.h).
 *
 * This file holds the start-up, the one epoll loop, the fd -> object table
 * and the reaper that closes and frees what handlers killed (see nsm.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <net/if.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#include "log.h"
#include "nsm.h"

struct nsm nsm;

uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t now_mono(void)
{
	return mono_ns() / 1000000000ull;
}

static int fdtab_grow(int fd)
{
	struct fdent *t;
	int len;

	if (fd < nsm.fdtab_len)
		return 0;
	len = nsm.fdtab_len ? nsm.fdtab_len : 256;
	while (len <= fd)
		len *= 2;
	t = realloc(nsm.fdtab, len * sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t + nsm.fdtab_len, 0, (len - nsm.fdtab_len) * sizeof(*t));
	nsm.fdtab = t;
	nsm.fdtab_len = len;
	return 0;
}

int ep_add(int fd, enum ep_type type, void *obj, uint32_t events)
{
	union nsm_ref ref = { .type = type, .fd = fd };
	struct epoll_event ev = { .events = events, .data.u64 = ref.u64 };
	int ret;

	ret = fdtab_grow(fd);
	if (ret)
		return ret;
	if (epoll_ctl(nsm.epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	nsm.fdtab[fd] = (struct fdent){ .obj = obj, .events = events, .type = type };
	return 0;
}

int ep_set(int fd, uint32_t events)
{
	struct fdent *e;
	struct epoll_event ev;
	union nsm_ref ref;

	if (fd < 0 || fd >= nsm.fdtab_len || nsm.fdtab[fd].type == EP_NONE)
		return -ENOENT;
	e = &nsm.fdtab[fd];
	if (e->events == events)
		return 0;
	ref.type = e->type;
	ref.fd = fd;
	ev.events = events;
	ev.data.u64 = ref.u64;
	if (epoll_ctl(nsm.epfd, EPOLL_CTL_MOD, fd, &ev))
		return -errno;
	e->events = events;
	return 0;
}

void ep_del(int fd)
{
	if (fd < 0 || fd >= nsm.fdtab_len || nsm.fdtab[fd].type == EP_NONE)
		return;
	epoll_ctl(nsm.epfd, EPOLL_CTL_DEL, fd, NULL);
	nsm.fdtab[fd] = (struct fdent){ 0 };
}

void ep_twin(int fd)
{
	if (fd >= 0 && fd < nsm.fdtab_len && nsm.fdtab[fd].type != EP_NONE)
		nsm.fdtab[fd].twin = true;
}

static int grow(void *arrp, size_t *cap, size_t need, size_t elem)
{
	void **arr = arrp;
	size_t n = *cap ? *cap : 64;
	void *p;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*arr, n * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = n;
	return 0;
}

/*
 * Sockets whose close() could wait: the guest may turn SO_LINGER on with a
 * time (accepted sockets inherit it from their listener), and Linux's
 * close() then waits for the unsent bytes and the FIN's ACK for up to that
 * time, even on a non-blocking socket: nk-nsm's one thread, and every VM
 * it serves, would wait with it.  The guest's own close() returned at once
 * (its stream's); the NSM turns lingering off before it closes such a
 * socket, which changes nothing on the wire (the FIN goes as it would; a
 * reset, SO_LINGER 0, stays a reset).  By fd; set by fd_may_linger().
 */
static uint8_t *lingering;
static int lingering_len;

int fd_may_linger(int fd)
{
	uint8_t *t;
	int len;

	if (fd < 0)
		return -EBADF;
	if (fd >= lingering_len) {
		len = lingering_len ? lingering_len : 256;
		while (len <= fd)
			len *= 2;
		t = realloc(lingering, len);
		if (!t)
			return -ENOMEM;
		memset(t + lingering_len, 0, len - lingering_len);
		lingering = t;
		lingering_len = len;
	}
	lingering[fd] = 1;
	return 0;
}

bool fd_lingers(int fd)
{
	return fd >= 0 && fd < lingering_len && lingering[fd];
}

void linger_off(int fd)
{
	struct linger lg;
	socklen_t len = sizeof(lg);

	if (!getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) && lg.l_onoff && lg.l_linger) {
		lg.l_onoff = 0;
		lg.l_linger = 0;
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
}

/* close(), never waiting for a lingering socket (above). */
void close_now(int fd)
{
	if (fd_lingers(fd)) {
		lingering[fd] = 0;
		linger_off(fd);
	}
	close(fd);
}

/*
 * Close fd after the current batch of events.  Its slot is cleared now, so
 * events for it later in the batch are dropped.  The close removes it from
 * the epoll set, except for a descriptor received from nkd (ep_twin): nkd
 * holds the same file, so that one is unregistered explicitly.
 */
void close_later(int fd)
{
	if (fd < 0)
		return;
	if (fd < nsm.fdtab_len && nsm.fdtab[fd].type != EP_NONE) {
		if (nsm.fdtab[fd].twin)
			epoll_ctl(nsm.epfd, EPOLL_CTL_DEL, fd, NULL);
		nsm.fdtab[fd] = (struct fdent){ 0 };
	}
	if (grow(&nsm.grave_fds, &nsm.grave_fds_cap, nsm.ngrave_fds + 1, sizeof(int))) {
		/* Out of memory: closing now is the lesser evil. */
		close_now(fd);
		return;
	}
	nsm.grave_fds[nsm.ngrave_fds++] = fd;
}

void free_later(void *p)
{
	if (!p)
		return;
	if (grow(&nsm.grave_mem, &nsm.grave_mem_cap, nsm.ngrave_mem + 1, sizeof(void *))) {
		/* Leak rather than risk a use after free. */
		return;
	}
	nsm.grave_mem[nsm.ngrave_mem++] = p;
}

static void reap(void)
{
	size_t i;

	for (i = 0; i < nsm.ngrave_fds; i++)
		close_now(nsm.grave_fds[i]);
	if (nsm.ngrave_fds)
		nsm_reserve_fd();	/* the first free slot, if it was used */
	nsm.ngrave_fds = 0;
	for (i = 0; i < nsm.ngrave_mem; i++)
		free(nsm.grave_mem[i]);
	nsm.ngrave_mem = 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur == rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		warn_perror("raising RLIMIT_NOFILE");
}

static int setup_signals(void)
{
	sigset_t mask;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL))
		return -errno;
	nsm.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (nsm.sigfd < 0)
		return -errno;
	return ep_add(nsm.sigfd, EP_SIGNAL, NULL, EPOLLIN);
}

static int setup_timer(void)
{
	struct itimerspec its = {
		.it_interval = { .tv_sec = 1 },
		.it_value = { .tv_sec = 1 },
	};

	nsm.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (nsm.timerfd < 0)
		return -errno;
	if (timerfd_settime(nsm.timerfd, 0, &its, NULL))
		return -errno;
	return ep_add(nsm.timerfd, EP_TIMER, NULL, EPOLLIN);
}

static void on_signal(void)
{
	struct signalfd_siginfo si;

	while (read(nsm.sigfd, &si, sizeof(si)) == sizeof(si)) {
		info("signal %u: exiting", si.ssi_signo);
		nsm.stop = true;
	}
}

static void on_timer(void)
{
	uint64_t ticks, now = now_mono();
	struct list_head *p, *t;

	if (read(nsm.timerfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		warn_perror("timerfd");
	chan_timeouts(now);
	nsock_timeouts(now);
	/* Re-arm guest listeners paused by EMFILE. */
	nsm_reserve_fd();
	list_for_each_safe(p, t, &nsm.vms) {
		struct vm *vm = list_entry(p, struct vm, node);

		if (vm->lfd >= 0)
			ep_set(vm->lfd, EPOLLIN);
	}
}

static void dispatch(const struct epoll_event *ev)
{
	union nsm_ref ref = { .u64 = ev->data.u64 };
	struct fdent *e;

	if (ref.fd < 0 || ref.fd >= nsm.fdtab_len)
		return;
	e = &nsm.fdtab[ref.fd];
	/* Killed earlier in this batch: the slot was cleared. */
	if (e->type != ref.type)
		return;

	switch (ref.type) {
	case EP_SIGNAL:
		on_signal();
		break;
	case EP_TIMER:
		on_timer();
		break;
	case EP_CTL_LISTEN:
		ctl_accept();
		break;
	case EP_CTL_CONN:
		ctl_event(ev->events);
		break;
	case EP_VM_LISTEN:
		vm_accept(e->obj);
		break;
	case EP_CHAN:
		chan_event(e->obj, ev->events);
		break;
	case EP_TCP:
		nsock_event(e->obj, ev->events);
		break;
	case EP_TCP_LISTEN:
		nsock_listen_event(e->obj, ref.fd);
		break;
	case EP_UDP:
		udp_event_sock(e->obj, ref.fd, ev->events);
		break;
	default:
		warn("event of unknown type %u on fd %d", ref.type, ref.fd);
		break;
	}
}

/* The VM of a guest control channel's event (chan_read_ctl()), else NULL. */
static struct vm *ctl_event_vm(const struct epoll_event *ev)
{
	union nsm_ref ref = { .u64 = ev->data.u64 };
	const struct fdent *e;
	const struct chan *ch;

	if (ref.type != EP_CHAN || ref.fd < 0 || ref.fd >= nsm.fdtab_len)
		return NULL;
	e = &nsm.fdtab[ref.fd];
	if (e->type != EP_CHAN)
		return NULL;
	ch = e->obj;
	return ch->mode == CH_CTL ? ch->vm : NULL;
}

/* The VM whose bytes an event may relay (a guest stream, a TCP socket). */
static struct vm *data_event_vm(const struct epoll_event *ev)
{
	union nsm_ref ref = { .u64 = ev->data.u64 };
	const struct fdent *e;

	if (ref.fd < 0 || ref.fd >= nsm.fdtab_len)
		return NULL;
	e = &nsm.fdtab[ref.fd];
	if (e->type != ref.type)
		return NULL;
	if (ref.type == EP_CHAN && ((const struct chan *)e->obj)->mode == CH_SOCK)
		return ((const struct chan *)e->obj)->vm;
	if (ref.type == EP_TCP)
		return ((const struct nsock *)e->obj)->vm;
	return NULL;
}

/*
 * One batch of events, in epoll's order, except that a guest's control
 * channel goes before the first event that may relay that VM's bytes.  A
 * guest posts an option (NK_HELLO_F_POST) on its control channel and then
 * writes on the socket's stream; when both are ready, epoll reports them
 * in the order of its ready list, which is not the guest's (an entry
 * already on the list keeps its place).  Handling the posts first keeps
 * the guest's order: a posted TCP_CORK on is taken before the bytes
 * written behind it, and the handlers of the other posted options relay
 * the stream's earlier bytes first themselves (relay_sync_up(); a hold is
 * posted only once the stream is read up, guest-shim/shim.c
 * opt_postable()).  Nothing else moves: nkd's messages, other VMs' events
 * and a channel with no data event of its VM ahead of it keep their place.
 * n <= NSM_EVENT_BATCH.
 */
static void dispatch_batch(struct epoll_event *evs, int n)
{
	static const union nsm_ref done = { .type = EP_NONE, .fd = -1 };
	struct vm *ctl_vm[NSM_EVENT_BATCH], *vm;
	int i, j, nctl = 0;

	for (i = 0; i < n; i++) {
		ctl_vm[i] = ctl_event_vm(&evs[i]);
		nctl += ctl_vm[i] != NULL;
	}
	for (i = 0; i < n; i++) {
		if (nctl && (vm = data_event_vm(&evs[i])))
			for (j = i + 1; j < n; j++)
				if (ctl_vm[j] == vm) {
					dispatch(&evs[j]);
					evs[j].data.u64 = done.u64;
					ctl_vm[j] = NULL;
					nctl--;
				}
		dispatch(&evs[i]);
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: nk-nsm --name NAME --type kernel --dev IFNAME --control PATH [-v]\n"
		"  --name NAME      the NSM's name (as nkd knows it)\n"
		"  --type kernel    the backend: the Linux stack of this network namespace\n"
		"  --dev IFNAME     the interface VM addresses are put on\n"
		"  --control PATH   SOCK_SEQPACKET socket nkd connects to\n"
		"  -v, --verbose    debug logging\n"
		"  --no-splice      relay with read/write buffers for every stream (the\n"
		"                   path vsock streams take; for tests)\n"
		"  --kernel-relay   relay guest -> network data inside the kernel (sockmap,\n"
		"                   bpf/relay.bpf.c) instead of with splice: shorter round\n"
		"                   trips, slower bulk sends (nsm/krelay.c)\n"
		"  --busy-poll=USEC after events, poll for more for up to USEC microseconds\n"
		"                   (0-1000, default 0) before sleeping: shorter round trips\n"
		"                   for CPU time while traffic flows; none when idle\n"
		"  --bulk-poll=USEC|auto\n"
		"                   after a batch of events in which one connection relayed\n"
		"                   16 KiB or more at once, poll for more for up to USEC\n"
		"                   microseconds (0-1000; 0: never): bulk transfers without\n"
		"                   a wakeup per burst.  auto (the default): 50 where\n"
		"                   switching between two processes on one CPU costs 8 us\n"
		"                   or more per round trip (measured at start), else 0\n"
		"  --kernel-relay-sndbuf=BYTES\n"
		"                   send buffer of the TCP sockets the in-kernel relay\n"
		"                   feeds (default 16777216, unless tcp_wmem's maximum is\n"
		"                   as large; 65536-268435456, or 0: the kernel's\n"
		"                   autotuning); a peer that stops reading can leave\n"
		"                   that much unsent per connection\n"
		"  --notsent-lowat=BYTES\n"
		"                   TCP_NOTSENT_LOWAT of the TCP sockets the relay writes\n"
		"                   to, unless the guest sets its own (default 131072; 0:\n"
		"                   none, the namespace's sysctl applies): unsent bytes wait\n"
		"                   in the relay, and nk-nsm rather than the peer's ACKs\n"
		"                   pushes them out\n");
}

/* A whole decimal number, nothing else: 0, or -1. */
static int dec_arg(const char *s, long *v)
{
	char *end;

	*v = strtol(s, &end, 10);
	return *s && !*end ? 0 : -1;
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "type", required_argument, NULL, 't' },
		{ "dev", required_argument, NULL, 'd' },
		{ "control", required_argument, NULL, 'c' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "no-splice", no_argument, NULL, 'S' },
		{ "kernel-relay", no_argument, NULL, 'K' },
		{ "busy-poll", required_argument, NULL, 'B' },
		{ "bulk-poll", required_argument, NULL, 'U' },
		{ "kernel-relay-sndbuf", required_argument, NULL, 'W' },
		{ "notsent-lowat", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;

	while ((c = getopt_long(argc, argv, "n:t:d:c:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			nsm.cfg.name = optarg;
			break;
		case 't':
			nsm.cfg.type = optarg;
			break;
		case 'd':
			nsm.cfg.dev = optarg;
			break;
		case 'c':
			nsm.cfg.control = optarg;
			break;
		case 'v':
			nsm.cfg.verbose = true;
			break;
		case 'S':
			nsm.cfg.no_splice = true;
			break;
		case 'K':
			nsm.cfg.kernel_relay = true;
			break;
		case 'B':
		case 'U': {
			long v;

			if (c == 'U' && !strcmp(optarg, "auto")) {
				nsm.cfg.bulk_poll_auto = true;
				break;
			}
			if (dec_arg(optarg, &v) || v < 0 || v > NSM_POLL_MAX_US) {
				fprintf(stderr, "nk-nsm: --%s: '%s' is not 0-%d (microseconds)\n",
					c == 'B' ? "busy-poll" : "bulk-poll", optarg, NSM_POLL_MAX_US);
				if (c == 'U')
					fprintf(stderr, "nk-nsm: --bulk-poll also takes 'auto'\n");
				return -1;
			}
			if (c == 'B') {
				nsm.cfg.busy_poll_us = (unsigned int)v;
			} else {
				nsm.cfg.bulk_poll_us = (unsigned int)v;
				nsm.cfg.bulk_poll_auto = false;
			}
			break;
		}
		case 'W': {
			long v;

			if (dec_arg(optarg, &v) ||
			    (v && (v < NSM_KRELAY_SNDBUF_MIN || v > NSM_KRELAY_SNDBUF_MAX))) {
				fprintf(stderr, "nk-nsm: --kernel-relay-sndbuf: '%s' is not 0 or "
					"%d-%d (bytes)\n", optarg, NSM_KRELAY_SNDBUF_MIN,
					NSM_KRELAY_SNDBUF_MAX);
				return -1;
			}
			nsm.cfg.krelay_sndbuf = v;
			break;
		}
		case 'L': {
			long v;

			if (dec_arg(optarg, &v) || v < 0 || v > NSM_NOTSENT_LOWAT_MAX) {
				fprintf(stderr, "nk-nsm: --notsent-lowat: '%s' is not 0-%d (bytes)\n",
					optarg, NSM_NOTSENT_LOWAT_MAX);
				return -1;
			}
			nsm.cfg.notsent_lowat = (int)v;
			break;
		}
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc || !nsm.cfg.name || !nsm.cfg.type || !nsm.cfg.dev ||
	    !nsm.cfg.control) {
		usage(stderr);
		return -EINVAL;
	}
	if (strcmp(nsm.cfg.type, "kernel")) {
		err("type %s is not served by this binary (only \"kernel\")", nsm.cfg.type);
		return -EINVAL;
	}
	if (strlen(nsm.cfg.name) >= NK_NAME_MAX || !*nsm.cfg.name) {
		err("name must be 1..%d characters", NK_NAME_MAX - 1);
		return -EINVAL;
	}
	if (strlen(nsm.cfg.dev) >= IFNAMSIZ || !*nsm.cfg.dev || strchr(nsm.cfg.dev, '/')) {
		err("bad interface name %s", nsm.cfg.dev);
		return -EINVAL;
	}
	return 0;
}

/* Keep looking without sleeping until at least NOW + USEC. */
static void spin_from(uint64_t now, unsigned int usec, uint64_t *until)
{
	if (now + usec * 1000ull > *until)
		*until = now + usec * 1000ull;
}

/*
 * --bulk-poll=auto.  Bulk polling saves the NSM a sleep and a wakeup per
 * burst of a transfer, and costs the CPU time of looking.  Which is dearer
 * depends on the machine, and was measured both ways (docs/benchmarks.md):
 * where switching between two processes on one CPU costs 14-16 us per
 * round trip (a VM whose kernel entries and address-space switches are
 * the hypervisor's work), looking made one-stream downloads about a third
 * faster and 12% cheaper per byte; where it costs 2.8 us, downloads ran
 * 17-24% faster and a fifth cheaper per byte without it.  So measure
 * that: a child process and this one, both pinned to the CPU this one
 * runs on, pass a byte back and forth over two pipes (5 batches of 200
 * round trips, the fastest batch, since anything else running there only
 * adds), and poll where a round trip costs NSM_BULK_POLL_AUTO_NS or
 * more.  3 ms at 3 us per round trip, 15 ms at 15 us; once, before
 * anything else is set up.  Should the measurement fail, poll (the
 * behaviour before "auto").
 */
#define WAKE_BATCHES	5
#define WAKE_ROUNDS	200

static int wake_pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

/* One byte out through WFD and one back through RFD (or, for the child,
 * the other way round).  0, or -errno; -EPIPE when the other side is gone
 * (its ends close with it). */
static int wake_pass(int rfd, int wfd, bool first)
{
	char c = 0;
	ssize_t n;

	if (first && write(wfd, &c, 1) != 1)
		return -errno;
	n = read(rfd, &c, 1);
	if (n != 1)
		return n ? -errno : -EPIPE;
	if (!first && write(wfd, &c, 1) != 1)
		return -errno;
	return 0;
}

static void wake_alarm(int sig)
{
	(void)sig;	/* interrupts a read that waits too long (EINTR) */
}

/* The round trip in ns (the fastest batch: interference only adds), or
 * -errno.  Two pipes, each side closing the ends it does not use, so that
 * a side that dies ends the other's reads (EOF); SIGPIPE ignored and an
 * alarm of 2 s meanwhile, so that nothing can kill or hang nk-nsm here. */
static int64_t wake_round_trip_ns(void)
{
	struct sigaction ign = { .sa_handler = SIG_IGN }, alrm = { .sa_handler = wake_alarm },
			 old_pipe, old_alrm;
	int ab[2] = { -1, -1 }, ba[2] = { -1, -1 }, cpu, b, i, status = 0, ret;
	uint64_t best = UINT64_MAX, t0, t;
	cpu_set_t saved;
	pid_t child, w;

	cpu = sched_getcpu();
	if (cpu < 0 || sched_getaffinity(0, sizeof(saved), &saved))
		return -errno;
	if (pipe2(ab, O_CLOEXEC))
		return -errno;
	if (pipe2(ba, O_CLOEXEC)) {
		ret = -errno;
		goto out;
	}
	child = fork();
	if (child < 0) {
		ret = -errno;
		goto out;
	}
	if (!child) {
		/* gone with its parent, should that be killed meanwhile */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ab[1]);
		close(ba[0]);
		if (wake_pin(cpu))
			_exit(1);
		for (i = 0; i < WAKE_BATCHES * WAKE_ROUNDS; i++)
			if (wake_pass(ab[0], ba[1], false))
				_exit(1);
		_exit(0);
	}
	close(ab[0]);
	close(ba[1]);
	ab[0] = ba[1] = -1;
	sigaction(SIGPIPE, &ign, &old_pipe);
	sigaction(SIGALRM, &alrm, &old_alrm);	/* no SA_RESTART */
	alarm(2);
	ret = wake_pin(cpu) ? -errno : 0;
	for (b = 0; !ret && b < WAKE_BATCHES; b++) {
		t0 = mono_ns();
		for (i = 0; !ret && i < WAKE_ROUNDS; i++)
			ret = wake_pass(ba[0], ab[1], true);
		t = (mono_ns() - t0) / WAKE_ROUNDS;
		if (t < best)
			best = t;
	}
	alarm(0);
	if (ret == -EINTR)
		ret = -ETIMEDOUT;
	sched_setaffinity(0, sizeof(saved), &saved);
	if (ret)
		kill(child, SIGKILL);
	do
		w = waitpid(child, &status, 0);
	while (w < 0 && errno == EINTR);
	sigaction(SIGALRM, &old_alrm, NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	/* w < 0 (ECHILD): started with SIGCHLD ignored; the child's answers
	 * were its status */
	if (!ret && w == child && !(WIFEXITED(status) && !WEXITSTATUS(status)))
		ret = -ECHILD;
out:
	for (i = 0; i < 2; i++) {
		if (ab[i] >= 0)
			close(ab[i]);
		if (ba[i] >= 0)
			close(ba[i]);
	}
	return ret ? ret : (int64_t)best;
}

static void bulk_poll_auto(void)
{
	int64_t ns = wake_round_trip_ns();
	uint64_t tenths;

	if (ns <= 0) {
		/* wake_ns 0: nkd shows no round trip */
		nsm.cfg.wake_ns = 0;
		nsm.cfg.bulk_poll_us = NSM_BULK_POLL_US;
		warn("bulk polling (auto): the wakeup round trip could not be measured (%s); "
		     "polling %u us after bursts", strerror(ns ? (int)-ns : EINVAL),
		     nsm.cfg.bulk_poll_us);
		return;
	}
	nsm.cfg.wake_ns = ns > UINT32_MAX ? UINT32_MAX : (unsigned int)ns;
	/* in tenths of a microsecond, rounded as nkd shows them (wakeup_us) */
	tenths = (ns + 50) / 100;
	nsm.cfg.bulk_poll_us = tenths >= NSM_BULK_POLL_AUTO_NS / 100 ? NSM_BULK_POLL_US : 0;
	if (nsm.cfg.bulk_poll_us)
		info("bulk polling (auto): %u us after bursts: a wakeup round trip between two "
		     "processes on one CPU costs %llu.%llu us here (%d or more: looking is cheaper "
		     "than sleeping)", nsm.cfg.bulk_poll_us, (unsigned long long)tenths / 10,
		     (unsigned long long)tenths % 10, NSM_BULK_POLL_AUTO_NS / 1000);
	else
		info("bulk polling (auto): off: a wakeup round trip between two processes on one "
		     "CPU costs %llu.%llu us here (under %d: sleeping is cheaper than looking)",
		     (unsigned long long)tenths / 10, (unsigned long long)tenths % 10,
		     NSM_BULK_POLL_AUTO_NS / 1000);
}

int main(int argc, char **argv)
{
	struct epoll_event evs[NSM_EVENT_BATCH];
	uint64_t spin_until = 0, last_burst = 0, moved0;
	int ret, n;

	nk_log_init(argv[0], NK_LOG_INFO);
	nsm.epfd = nsm.sigfd = nsm.timerfd = nsm.ctl_lfd = nsm.ctl_fd = -1;
	while (!nsm.instance)
		if (getrandom(&nsm.instance, sizeof(nsm.instance), 0) != sizeof(nsm.instance))
			nsm.instance = (uint32_t)getpid() ^ (uint32_t)time(NULL);
	list_init(&nsm.vms);
	list_init(&nsm.hello_wait);
	nsm.cfg.bulk_poll_auto = true;
	nsm.cfg.krelay_sndbuf = NSM_KRELAY_SNDBUF;
	nsm.cfg.notsent_lowat = NSM_NOTSENT_LOWAT;

	ret = parse_args(argc, argv);
	if (ret)
		return 2;
	if (nsm.cfg.verbose)
		nk_log_set_level(NK_LOG_DEBUG);
	if (nsm.cfg.bulk_poll_auto)
		bulk_poll_auto();
	raise_nofile();
	nsm_reserve_fd();

	nsm.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (nsm.epfd < 0) {
		err_perror("epoll_create1");
		return 1;
	}
	ret = setup_signals();
	if (!ret)
		ret = setup_timer();
	if (ret) {
		err("signals/timer: %s", strerror(-ret));
		return 1;
	}
	ret = nl_open();
	if (ret) {
		err("rtnetlink: %s", strerror(-ret));
		return 1;
	}
	nsm.ifindex = if_nametoindex(nsm.cfg.dev);
	if (!nsm.ifindex)
		warn("interface %s not found yet; VM addresses wait for it", nsm.cfg.dev);
	ret = ctl_listen();
	if (ret) {
		err("control socket %s: %s", nsm.cfg.control, strerror(-ret));
		return 1;
	}
	if (nsm.cfg.kernel_relay && !nsm.cfg.no_splice)
		krelay_init();
	info("nsm %s (kernel, dev %s) listening on %s", nsm.cfg.name, nsm.cfg.dev,
	     nsm.cfg.control);

	while (!nsm.stop) {
		/* --busy-poll, --bulk-poll: for a while after events, look
		 * without sleeping (the next event of a round trip or of a
		 * bulk transfer is usually microseconds away, and a wakeup
		 * costs more than that here, to the waker too); then sleep. */
		if (spin_until && mono_ns() < spin_until) {
			n = epoll_wait(nsm.epfd, evs, sizeof(evs) / sizeof(evs[0]), 0);
		} else {
			spin_until = 0;
			n = epoll_wait(nsm.epfd, evs, sizeof(evs) / sizeof(evs[0]),
				       krelay_wait_ms());
		}

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err_perror("epoll_wait");
			break;
		}
		moved0 = nsm.moved;
		nsm.burst = false;
		dispatch_batch(evs, n);
		krelay_poll();
		reap();
		/* the window runs from the end of the batch's handling */
		if (n > 0 && nsm.cfg.busy_poll_us)
			spin_from(mono_ns(), nsm.cfg.busy_poll_us, &spin_until);
		/* --bulk-poll: a connection's burst opens the window; any
		 * payload keeps it open for as long as bursts keep coming
		 * (small messages alone do not hold the NSM awake) */
		if (nsm.cfg.bulk_poll_us && (nsm.burst || nsm.moved != moved0)) {
			uint64_t now = mono_ns();

			if (nsm.burst)
				last_burst = now;
			if (now - last_burst < NSM_BULK_HOLD_NS)
				spin_from(now, nsm.cfg.bulk_poll_us, &spin_until);
		}
	}

	/* Exiting closes every socket; the kernel sends FINs or RSTs. */
	ctl_unlink();
	nl_close();
	info("nsm %s stopped", nsm.cfg.name);
	return 0;
}
