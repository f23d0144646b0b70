// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nkd: the NetKernel control daemon.  It owns the configuration (NSMs and
 * VMs), starts and supervises the NSM processes, creates each VM's
 * hybrid-vsock listener and hands it to the VM's NSM, dispatches AF_VSOCK
 * guest connections by peer CID, persists everything to STATE-DIR/nkd.json
 * and serves nkctl on a root-only Unix socket.
 *
 * Theory of operation
 * -------------------
 * One epoll loop; every fd is registered with a typed reference (enum
 * nkd_ep_type + slot, see nkd.h) and the loop is a switch on the type.
 * Signals arrive through a signalfd.  nkd is on the set-up path only: it
 * never reads a byte of a guest stream.  Listeners are passed to the NSM
 * with SCM_RIGHTS and nkd keeps its own copy, so a listener (and the
 * connections queued on it) survive an NSM restart.
 *
 * Restart is not teardown: SIGTERM/SIGINT make nkd exit without stopping
 * NSMs or removing listeners; the next nkd restores nkd.json, re-creates
 * the listeners, adopts the NSMs that still answer on their control socket
 * and pushes the configuration to them again (idempotent on their side).
 * With an uplink, the XDP programs stay attached and the maps pinned too;
 * the next nkd reuses the maps and replaces the programs (nkd_steer.c).
 * Only "nkctl teardown" removes everything nkd created, then nkd exits.
 *
 * NSM start-up is asynchronous (spawn, connect retries on a timer, HELLO),
 * so an "nsm add" reply is deferred until the HELLO.  Requests to a running
 * NSM are synchronous with a bounded wait (NKD_NSM_REPLY_MS): they are
 * operator actions and the NSM answers them without blocking.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "nkd.h"

struct nkd nkd = {
	.epfd = -1,
	.sig_fd = -1,
	.ctl_fd = -1,
	.vsock_fd = -1,
};

int nkd_fail(struct nkd_err *e, int err, const char *fmt, ...)
{
	va_list ap;

	if (e) {
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return -err;
}

int nkd_ep_add(int fd, enum nkd_ep_type type, uint32_t idx, uint32_t events)
{
	union nkd_ep_ref ref = { .type = type, .idx = idx };
	struct epoll_event ev = { .events = events, .data.u64 = ref.u64 };

	if (epoll_ctl(nkd.epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	return 0;
}

void nkd_ep_del(int fd)
{
	if (fd >= 0)
		epoll_ctl(nkd.epfd, EPOLL_CTL_DEL, fd, NULL);
}

uint64_t nkd_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void nkd_strscpy(char *dst, const char *src, size_t size)
{
	size_t n = strnlen(src, size - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Object names: 1..max-1 characters of [A-Za-z0-9_.-], not "." or "..". */
bool nkd_name_valid(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (!n || n >= max || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			 "0123456789_.-") == n;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: nkd [--config FILE] [--foreground] [--control PATH]\n"
		"           [--state-dir DIR] [--run-dir DIR] [--nsm-bin PATH]\n"
		"           [--no-vsock] [--uplink IFNAME] [--pin-dir DIR]\n"
		"           [--miss pass|drop] [--nsm-arg ARG]... [-v|--verbose]\n"
		"\n"
		"  --config FILE     apply FILE (nkd.json schema) instead of restoring\n"
		"                    STATE-DIR/" NKD_STATE_FILE "\n"
		"  --foreground      do not daemonize; log to stderr\n"
		"  --control PATH    nkctl socket (default " NKD_DEFAULT_CONTROL ")\n"
		"  --state-dir DIR   nkd.json and NSM logs (default " NKD_DEFAULT_STATE_DIR ")\n"
		"  --run-dir DIR     NSM control sockets (default " NKD_DEFAULT_RUN_DIR ")\n"
		"  --nsm-bin PATH    the nk-nsm binary (default: next to nkd)\n"
		"  --nsm-arg ARG     one more argument for every NSM nkd starts (repeat it;\n"
		"                    e.g. --nsm-arg=--kernel-relay)\n"
		"  --no-vsock        accept cid VMs but do not open the AF_VSOCK listener\n"
		"  --uplink IFNAME   steer the uplink IFNAME to the NSMs with XDP; NSMs\n"
		"                    added without netns get one created by nkd\n"
		"  --pin-dir DIR     pin the steering maps in DIR (default " NK_STEER_PIN_DIR ")\n"
		"  --miss pass|drop  frames on the uplink for no VM (default pass)\n"
		"  -v, --verbose     debug logging\n");
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* --nsm-bin, else next to nkd, else PREFIX/libexec/netkernel/nk-nsm. */
static char *find_nsm_bin(const char *opt)
{
	char self[PATH_MAX], cand[PATH_MAX + 64];
	ssize_t n;
	char *dir;

	if (opt) {
		if (access(opt, X_OK) < 0)
			die("--nsm-bin %s: %s", opt, strerror(errno));
		return realpath(opt, NULL);
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		die("cannot read /proc/self/exe: %s; use --nsm-bin PATH", strerror(errno));
	self[n] = '\0';
	dir = dirname(self);
	snprintf(cand, sizeof(cand), "%s/nk-nsm", dir);
	if (access(cand, X_OK) == 0)
		return realpath(cand, NULL);
	snprintf(cand, sizeof(cand), "%s/../libexec/netkernel/nk-nsm", dir);
	if (access(cand, X_OK) == 0)
		return realpath(cand, NULL);
	die("cannot find nk-nsm (looked in %s/ and %s/../libexec/netkernel/); use --nsm-bin PATH",
	    dir, dir);
}

static void parse_args(int argc, char **argv)
{
	enum { OPT_CONFIG = 256, OPT_CONTROL, OPT_STATE, OPT_RUN, OPT_NSM, OPT_NOVSOCK,
	       OPT_UPLINK, OPT_PIN, OPT_MISS, OPT_NSM_ARG };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, OPT_CONFIG },
		{ "foreground", no_argument, NULL, 'f' },
		{ "control", required_argument, NULL, OPT_CONTROL },
		{ "state-dir", required_argument, NULL, OPT_STATE },
		{ "run-dir", required_argument, NULL, OPT_RUN },
		{ "nsm-bin", required_argument, NULL, OPT_NSM },
		{ "nsm-arg", required_argument, NULL, OPT_NSM_ARG },
		{ "no-vsock", no_argument, NULL, OPT_NOVSOCK },
		{ "uplink", required_argument, NULL, OPT_UPLINK },
		{ "pin-dir", required_argument, NULL, OPT_PIN },
		{ "miss", required_argument, NULL, OPT_MISS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *nsm_bin = NULL;
	int c;

	nkd.cfg.control = NKD_DEFAULT_CONTROL;
	nkd.cfg.state_dir = NKD_DEFAULT_STATE_DIR;
	nkd.cfg.run_dir = NKD_DEFAULT_RUN_DIR;
	nkd.cfg.miss = -1;
	while ((c = getopt_long(argc, argv, "fvh", opts, NULL)) != -1) {
		switch (c) {
		case OPT_CONFIG:
			nkd.cfg.config_file = optarg;
			break;
		case 'f':
			nkd.cfg.foreground = true;
			break;
		case OPT_CONTROL:
			nkd.cfg.control = optarg;
			break;
		case OPT_STATE:
			nkd.cfg.state_dir = optarg;
			break;
		case OPT_RUN:
			nkd.cfg.run_dir = optarg;
			break;
		case OPT_NSM:
			nsm_bin = optarg;
			break;
		case OPT_NSM_ARG:
			if (nkd.cfg.n_nsm_args == NKD_NSM_ARGS_MAX)
				die("--nsm-arg: at most %d", NKD_NSM_ARGS_MAX);
			if (optarg[0] != '-' || optarg[1] != '-')
				die("--nsm-arg %s: not an nk-nsm option (--NAME or --NAME=VALUE)", optarg);
			nkd.cfg.nsm_args[nkd.cfg.n_nsm_args++] = optarg;
			break;
		case OPT_NOVSOCK:
			nkd.cfg.no_vsock = true;
			break;
		case OPT_UPLINK:
			if (!*optarg || strlen(optarg) >= IFNAMSIZ || strpbrk(optarg, "/: \t"))
				die("--uplink %s: not an interface name", optarg);
			nkd.cfg.uplink = optarg;
			nkd.cfg.uplink_cmdline = true;
			break;
		case OPT_PIN:
			nkd.cfg.pin_dir = optarg;
			nkd.cfg.pin_dir_cmdline = true;
			break;
		case OPT_MISS:
			if (!strcmp(optarg, "pass"))
				nkd.cfg.miss = NK_MISS_PASS;
			else if (!strcmp(optarg, "drop"))
				nkd.cfg.miss = NK_MISS_DROP;
			else
				die("--miss %s: say pass or drop", optarg);
			break;
		case 'v':
			nkd.cfg.verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "nkd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	/* Paths must not depend on the cwd: a daemon chdirs to /. */
	if (nkd.cfg.control[0] != '/' || nkd.cfg.state_dir[0] != '/' ||
	    nkd.cfg.run_dir[0] != '/') {
		char *p;

		p = realpath(".", NULL);
		if (!p)
			die("cannot resolve the current directory: %s", strerror(errno));
		if (nkd.cfg.control[0] != '/' && asprintf((char **)&nkd.cfg.control, "%s/%s", p, nkd.cfg.control) < 0)
			die("out of memory");
		if (nkd.cfg.state_dir[0] != '/' && asprintf((char **)&nkd.cfg.state_dir, "%s/%s", p, nkd.cfg.state_dir) < 0)
			die("out of memory");
		if (nkd.cfg.run_dir[0] != '/' && asprintf((char **)&nkd.cfg.run_dir, "%s/%s", p, nkd.cfg.run_dir) < 0)
			die("out of memory");
		free(p);
	}
	if (nkd.cfg.pin_dir && nkd.cfg.pin_dir[0] != '/')
		die("--pin-dir %s: give an absolute path (on a bpf filesystem)", nkd.cfg.pin_dir);
	if (nkd.cfg.config_file) {
		char *p = realpath(nkd.cfg.config_file, NULL);

		if (!p)
			die("--config %s: %s", nkd.cfg.config_file, strerror(errno));
		nkd.cfg.config_file = p;
	}
	nkd.cfg.nsm_bin = find_nsm_bin(nsm_bin);
	if (!nkd.cfg.nsm_bin)
		die("cannot resolve the nk-nsm path: %s", strerror(errno));
}

/*
 * Fork into the background.  The parent waits until the child says it is
 * serving (one byte on a pipe), so "nkd && nkctl ..." works; it exits 1 if
 * the child died first (its log says why).
 */
static int daemonize(void)
{
	int pfd[2], fd;
	char logpath[PATH_MAX];
	pid_t pid;
	char c;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid > 0) {
		close(pfd[1]);
		if (read(pfd[0], &c, 1) == 1)
			_exit(0);
		fprintf(stderr, "nkd: failed to start; see %s/nkd.log\n", nkd.cfg.state_dir);
		_exit(1);
	}
	close(pfd[0]);
	if (setsid() < 0)
		die("setsid: %s", strerror(errno));
	if (chdir("/") < 0)
		die("chdir /: %s", strerror(errno));
	snprintf(logpath, sizeof(logpath), "%s/nkd.log", nkd.cfg.state_dir);
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		close(fd);
	}
	fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd >= 0) {
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	return pfd[1];
}

static void signals_setup(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		die("sigprocmask: %s", strerror(errno));
	nkd.sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (nkd.sig_fd < 0)
		die("signalfd: %s", strerror(errno));
	/* Peers that vanish give EPIPE, not a signal; children reset it. */
	signal(SIGPIPE, SIG_IGN);
	if (nkd_ep_add(nkd.sig_fd, EP_SIGNAL, 0, EPOLLIN))
		die("epoll_ctl: %s", strerror(errno));
}

static void signal_event(void)
{
	struct signalfd_siginfo si;

	while (read(nkd.sig_fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			nsm_sigchld();
			break;
		case SIGTERM:
		case SIGINT:
			info("%s: exiting; NSMs and listeners stay in place",
			     strsignal(si.ssi_signo));
			nkd.stop = true;
			break;
		case SIGHUP:
			info("SIGHUP: retrying failed listeners and NSMs, re-sending the configuration%s",
			     nkd.steer ? ", re-attaching XDP and rewriting the steering maps" : "");
			state_reload();	/* --config FILE: its difference */
			steer_resync();
			vm_resync_all();
			nsm_resync_all();
			break;
		}
	}
}

static void loop(void)
{
	struct epoll_event evs[32];
	int i, n;

	while (!nkd.stop) {
		n = epoll_wait(nkd.epfd, evs, 32, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait: %s", strerror(errno));
		}
		for (i = 0; i < n; i++) {
			union nkd_ep_ref ref = { .u64 = evs[i].data.u64 };

			switch (ref.type) {
			case EP_SIGNAL:
				signal_event();
				break;
			case EP_CTL_LISTEN:
				nkd_ctl_accept();
				break;
			case EP_CLIENT:
				nkd_client_event(ref.idx, evs[i].events);
				break;
			case EP_NSM_CTL:
				nsm_ctl_event(ref.idx, evs[i].events);
				break;
			case EP_NSM_TIMER:
				nsm_timer_event(ref.idx);
				break;
			case EP_VSOCK:
				vsock_accept();
				break;
			case EP_MOVE_TIMER:
				move_timer_event();
				break;
			default:
				warn("epoll: unknown reference type %u", ref.type);
				break;
			}
		}
		move_claims_run();	/* claims passed on by NSMs (nkd_move.c) */
		/* Objects deleted during this batch are freed only now, so
		 * events already returned never see a reused slot. */
		nsm_sweep();
	}
}

/*
 * One nkd per state dir: two would adopt the same NSMs and take each
 * other's guest sockets.  The lock lives as long as this process (close
 * on exec: an NSM nkd starts must not keep it).
 */
static void state_dir_lock(void)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/nkd.lock", nkd.cfg.state_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		die("cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			die("another nkd uses the state dir %s (it holds %s); give each nkd its own --state-dir",
			    nkd.cfg.state_dir, path);
		die("cannot lock %s: %s", path, strerror(errno));
	}
	/* kept open: the lock goes with the process */
}

int main(int argc, char **argv)
{
	char path[PATH_MAX];
	int ready_fd = -1, ret;

	nk_log_init("nkd", NK_LOG_INFO);
	parse_args(argc, argv);
	if (nkd.cfg.verbose)
		nk_log_set_level(NK_LOG_DEBUG);

	ret = mkdir_p(nkd.cfg.state_dir, 0755);
	if (ret)
		die("cannot create state dir %s: %s", nkd.cfg.state_dir, strerror(-ret));
	ret = mkdir_p(nkd.cfg.run_dir, 0755);
	if (ret)
		die("cannot create run dir %s: %s", nkd.cfg.run_dir, strerror(-ret));
	/* before daemonizing: a second nkd says why on its own stderr, not
	 * in the first one's nkd.log (the daemon inherits the lock) */
	state_dir_lock();
	if (!nkd.cfg.foreground)
		ready_fd = daemonize();

	nkd.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (nkd.epfd < 0)
		die("epoll_create1: %s", strerror(errno));
	signals_setup();
	ret = nkd_ctl_open();
	if (ret)
		exit(1);

	snprintf(path, sizeof(path), "%s/%s", nkd.cfg.state_dir, NKD_STATE_FILE);
	if (nkd.cfg.config_file) {
		info("applying configuration %s", nkd.cfg.config_file);
		ret = state_load(nkd.cfg.config_file, true);
		if (!ret)
			state_load_drains(path);	/* nkd's own state, not FILE's */
	} else {
		ret = state_load(path, false);
	}
	if (!ret)
		ret = steer_start();
	if (ret) {
		unlink(nkd.cfg.control);
		exit(1);
	}
	state_apply(nkd.cfg.config_file ? nkd.cfg.config_file : path);
	state_save();

	info("serving nkctl on %s (state %s, run %s, nsm %s%s%s%s)", nkd.cfg.control,
	     nkd.cfg.state_dir, nkd.cfg.run_dir, nkd.cfg.nsm_bin,
	     nkd.cfg.no_vsock ? ", AF_VSOCK disabled" : "",
	     nkd.steer ? ", uplink " : "", nkd.steer ? nkd.cfg.uplink : "");
	if (ready_fd >= 0) {
		if (write(ready_fd, "1", 1) < 0)
			warn_perror("readiness pipe");
		close(ready_fd);
	}
	loop();
	unlink(nkd.cfg.control);
	nk_steer_close(nkd.steer);	/* programs stay attached, maps pinned */
	return 0;
}
