// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nk-vhost-vsock: a vhost-user-vsock device backend that speaks the
 * hybrid-vsock convention on the host, so a QEMU guest with
 * "-device vhost-user-vsock-pci" is a NetKernel guest on a host without
 * vhost_vsock, with nkd unchanged: nkd serves a VM registered with
 * "uds PATH" on PATH_7531, and a guest connection to CID 2 port 7531
 * arrives there.  One backend process serves one VM.
 *
 * Theory of operation
 * -------------------
 * One epoll loop; every fd is registered with a typed reference (enum
 * vv_ep_type, a slot and a generation; see vhost_vsock.h) and the loop is
 * a switch on the type.  Signals come through a signalfd; SIGUSR1 logs the
 * counters.  The vhost-user listener takes one front-end at a time; when
 * it goes away every connection is released and the next one (a restarted
 * or reconnecting QEMU) gets a clean device.  After each batch of events
 * the loop sends what is owed to the guest and signals the call eventfds
 * once (vv_flush); a tx queue with more chains than one turn's budget
 * keeps the loop from sleeping (vv_has_work).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "vhost_vsock.h"

#define VU_RCV_TIMEOUT_MS	2000

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: nk-vhost-vsock --socket PATH --uds PATH [OPTIONS]\n"
		"\n"
		"A vhost-user-vsock device backend for QEMU's vhost-user-vsock-pci that\n"
		"bridges the guest's vsock streams to Unix sockets (hybrid vsock):\n"
		"guest -> host port P connects to PATH_P; a host client of PATH that\n"
		"writes \"CONNECT <port>\\n\" reaches guest port <port> and reads\n"
		"\"OK <hostport>\\n\".\n"
		"\n"
		"  -s, --socket PATH        vhost-user socket to listen on (QEMU's chardev path)\n"
		"  -u, --uds PATH           hybrid-vsock base path (nkd's \"vm add ... uds PATH\")\n"
		"  -c, --guest-cid N        the guest's CID, given to it in the config space (default %d)\n"
		"  -n, --name NAME          VM name in logs (default: the uds file name)\n"
		"  -m, --max-conns N        connections at once (default %d)\n"
		"  -b, --buf-size BYTES     receive buffer per connection (default %u)\n"
		"  -t, --connect-timeout MS host CONNECT line and guest answer (default %d)\n"
		"  -v, --verbose            debug logging\n"
		"  -h, --help               this text\n"
		"\n"
		"QEMU: -object memory-backend-memfd,id=mem,size=SIZE,share=on -numa node,memdev=mem\n"
		"      -chardev socket,id=vu,path=SOCKET -device vhost-user-vsock-pci,chardev=vu\n",
		VV_DEFAULT_CID, VV_DEFAULT_MAX_CONNS, VV_DEFAULT_BUF_ALLOC,
		VV_DEFAULT_CONNECT_MS);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

static int parse_args(struct vv_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "uds", required_argument, NULL, 'u' },
		{ "guest-cid", required_argument, NULL, 'c' },
		{ "name", required_argument, NULL, 'n' },
		{ "max-conns", required_argument, NULL, 'm' },
		{ "buf-size", required_argument, NULL, 'b' },
		{ "connect-timeout", required_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct sockaddr_un sa;
	uint64_t v;
	int o;

	while ((o = getopt_long(argc, argv, "s:u:c:n:m:b:t:vh", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			cfg->vu_socket = optarg;
			break;
		case 'u':
			cfg->uds = optarg;
			break;
		case 'n':
			cfg->name = optarg;
			break;
		case 'c':
			/* 0-2 are reserved, -1 is VMADDR_CID_ANY */
			if (parse_u64(optarg, 3, UINT32_MAX - 1, &v))
				die("--guest-cid %s: expected a number from 3 to %u", optarg,
				    UINT32_MAX - 1);
			cfg->guest_cid = v;
			break;
		case 'm':
			if (parse_u64(optarg, 1, 1u << 20, &v))
				die("--max-conns %s: expected a number from 1 to %u", optarg, 1u << 20);
			cfg->max_conns = (unsigned int)v;
			break;
		case 'b':
			if (parse_u64(optarg, 4096, 64u << 20, &v))
				die("--buf-size %s: expected bytes from 4096 to %u", optarg, 64u << 20);
			cfg->buf_alloc = (uint32_t)v;
			break;
		case 't':
			if (parse_u64(optarg, 10, 600000, &v))
				die("--connect-timeout %s: expected milliseconds from 10 to 600000",
				    optarg);
			cfg->connect_ms = (unsigned int)v;
			break;
		case 'v':
			nk_log_set_level(NK_LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc)
		die("unexpected argument '%s' (see --help)", argv[optind]);
	if (!cfg->vu_socket || !cfg->uds)
		die("--socket PATH and --uds PATH are required (see --help)");
	if (strlen(cfg->vu_socket) >= sizeof(sa.sun_path))
		die("--socket %s: too long for a Unix socket address", cfg->vu_socket);
	if (strlen(cfg->uds) + 12 > sizeof(sa.sun_path))
		die("--uds %s: too long (PATH_<port> must fit a Unix socket address, %zu bytes)",
		    cfg->uds, sizeof(sa.sun_path) - 12);
	if (!cfg->name) {
		const char *slash = strrchr(cfg->uds, '/');

		cfg->name = slash ? slash + 1 : cfg->uds;
	}
	return 0;
}

/* Listen on path: replace a stale socket file, never another file. */
static int unix_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			err("%s exists and is not a socket; remove it or choose another path", path);
			return -EEXIST;
		}
		unlink(path);
	}
	strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
		r = -errno;
		err_perror("listen on %s", path);
		close(fd);
		return r;
	}
	return fd;
}

static int ep_add(struct vv *vv, int fd, uint64_t ref)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ref };

	return epoll_ctl(vv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void vu_accept(struct vv *vv)
{
	struct timeval tv = {
		.tv_sec = VU_RCV_TIMEOUT_MS / 1000,
		.tv_usec = (VU_RCV_TIMEOUT_MS % 1000) * 1000,
	};
	int fd;

	fd = accept4(vv->vu_listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			err_perror("vm %s: accept on %s", vv->cfg.name, vv->cfg.vu_socket);
		return;
	}
	if (vv->vu_fd >= 0) {
		warn("vm %s: a second vhost-user front-end on %s refused: one is connected",
		     vv->cfg.name, vv->cfg.vu_socket);
		close(fd);
		return;
	}
	/* blocking, whole messages, bounded by a timeout (see vu.c) */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (ep_add(vv, fd, vv_ep_ref(VV_EP_VU_CONN, 0, 0)) < 0) {
		err_perror("vm %s: epoll", vv->cfg.name);
		close(fd);
		return;
	}
	vv->vu_fd = fd;
	vv->stats[VV_FRONTEND]++;
	info("vm %s: vhost-user front-end connected on %s", vv->cfg.name, vv->cfg.vu_socket);
}

static void handle_signal(struct vv *vv)
{
	struct signalfd_siginfo si;

	while (read(vv->sig_fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGUSR1:
			vv_stats_log(vv, true);
			break;
		default:
			info("vm %s: signal %u, exiting", vv->cfg.name, si.ssi_signo);
			vv->stop = true;
			break;
		}
	}
}

static void dispatch(struct vv *vv, const struct epoll_event *ev)
{
	uint64_t ref = ev->data.u64, ticks;
	int r;

	switch (vv_ep_type_of(ref)) {
	case VV_EP_SIGNAL:
		handle_signal(vv);
		break;
	case VV_EP_TIMER:
		if (read(vv->timer_fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
			err_perror("vm %s: timerfd", vv->cfg.name);
		vv_tick(vv);
		break;
	case VV_EP_VU_LISTEN:
		vu_accept(vv);
		break;
	case VV_EP_VU_CONN:
		if (vv->vu_fd < 0)
			break;
		if (ev->events & EPOLLIN) {
			r = vv_vu_handle(vv);
			if (r)
				vv_vu_disconnect(vv, r == -ECONNRESET ? "connection closed" : strerror(-r));
		} else if (ev->events & (EPOLLHUP | EPOLLERR)) {
			vv_vu_disconnect(vv, "connection closed");
		}
		break;
	case VV_EP_KICK: {
		uint32_t q = vv_ep_slot(ref);
		eventfd_t v;

		if (q >= VV_NUM_QUEUES || vv->vq[q].kick_fd < 0)
			break;
		if (eventfd_read(vv->vq[q].kick_fd, &v) < 0 && errno != EAGAIN)
			err_perror("vm %s: kick of queue %u", vv->cfg.name, q);
		vv_vu_kick(vv, q);
		break;
	}
	case VV_EP_HOST_LISTEN:
		vv_host_accept(vv);
		break;
	case VV_EP_CONN:
		vv_conn_event(vv, vv_ep_slot(ref), vv_ep_gen(ref), ev->events);
		break;
	default:
		break;
	}
}

static int setup(struct vv *vv)
{
	sigset_t mask;
	int r;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);

	vv->epfd = epoll_create1(EPOLL_CLOEXEC);
	vv->sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	vv->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (vv->epfd < 0 || vv->sig_fd < 0 || vv->timer_fd < 0)
		return -errno;
	r = vv_dev_init(vv);
	if (r)
		return r;
	vv->vu_listen_fd = unix_listen(vv->cfg.vu_socket);
	if (vv->vu_listen_fd < 0)
		return vv->vu_listen_fd;
	vv->host_listen_fd = unix_listen(vv->cfg.uds);
	if (vv->host_listen_fd < 0)
		return vv->host_listen_fd;
	if ((r = ep_add(vv, vv->sig_fd, vv_ep_ref(VV_EP_SIGNAL, 0, 0))) ||
	    (r = ep_add(vv, vv->timer_fd, vv_ep_ref(VV_EP_TIMER, 0, 0))) ||
	    (r = ep_add(vv, vv->vu_listen_fd, vv_ep_ref(VV_EP_VU_LISTEN, 0, 0))) ||
	    (r = ep_add(vv, vv->host_listen_fd, vv_ep_ref(VV_EP_HOST_LISTEN, 0, 0))))
		return r;
	return 0;
}

static void teardown(struct vv *vv)
{
	vv_vu_disconnect(vv, "backend exiting");
	vv_dev_free(vv);
	if (vv->vu_listen_fd >= 0) {
		close(vv->vu_listen_fd);
		unlink(vv->cfg.vu_socket);
	}
	if (vv->host_listen_fd >= 0) {
		close(vv->host_listen_fd);
		unlink(vv->cfg.uds);
	}
	if (vv->timer_fd >= 0)
		close(vv->timer_fd);
	if (vv->sig_fd >= 0)
		close(vv->sig_fd);
	if (vv->epfd >= 0)
		close(vv->epfd);
	vv_stats_log(vv, true);
}

int main(int argc, char **argv)
{
	static struct vv vv = {
		.cfg = {
			.guest_cid = VV_DEFAULT_CID,
			.max_conns = VV_DEFAULT_MAX_CONNS,
			.buf_alloc = VV_DEFAULT_BUF_ALLOC,
			.connect_ms = VV_DEFAULT_CONNECT_MS,
			.linger_ms = VV_DEFAULT_LINGER_MS,
		},
		.epfd = -1, .sig_fd = -1, .timer_fd = -1,
		.vu_listen_fd = -1, .host_listen_fd = -1,
	};
	struct epoll_event evs[64];
	int r, n, i;

	nk_log_init(argv[0], NK_LOG_INFO);
	vv_vu_init(&vv);
	parse_args(&vv.cfg, argc, argv);
	r = setup(&vv);
	if (r) {
		err("vm %s: start-up failed: %s", vv.cfg.name, strerror(-r));
		goto out;
	}
	info("vm %s: guest cid %llu, vhost-user on %s, hybrid vsock on %s (guest -> %s_<port>)",
	     vv.cfg.name, (unsigned long long)vv.cfg.guest_cid, vv.cfg.vu_socket,
	     vv.cfg.uds, vv.cfg.uds);

	while (!vv.stop) {
		n = epoll_wait(vv.epfd, evs, 64, vv_has_work(&vv) ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			err_perror("vm %s: epoll_wait", vv.cfg.name);
			break;
		}
		for (i = 0; i < n; i++)
			dispatch(&vv, &evs[i]);
		vv_flush(&vv);
	}
out:
	teardown(&vv);
	return r ? EXIT_FAILURE : EXIT_SUCCESS;
}
