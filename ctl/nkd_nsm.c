// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * NSM objects in nkd: validation, start (adopt or spawn), the nsmctl
 * request/reply exchange, and supervision.
 *
 * Theory of operation
 * -------------------
 * Starting an NSM first tries to adopt one: if RUNDIR/nsm-NAME.sock
 * answers with a HELLO carrying the same name, that process is ours again
 * (nkd restarted).  Otherwise nkd forks; the child enters the network
 * namespace (setns CLONE_NEWNET only: it stays in the root mount namespace),
 * calls setsid(), points stdout/stderr at STATE-DIR/nsm-NAME.log and execs
 * nk-nsm.  A timerfd then retries connect() every NKD_NSM_RETRY_MS until
 * the NSM's HELLO arrives or NKD_NSM_START_MS passes.
 *
 *   STARTING --HELLO--> RUNNING --exit/hang-up--> RESTARTING --timer--> STARTING
 *      |                                               |
 *      +--timeout: kill---------------------------------+--10 in 60 s--> FAILED
 *
 * An NSM added without a netns (only when nkd has an uplink) is managed:
 * before it starts, nkd creates netns nk-NAME and the veth pair
 * nkh-NAME <-> eth0 and steers it with XDP (nkd_steer.c); nsm del removes
 * them again.  Its id (the registry slot, 0..255, also its index in the
 * steering maps) is kept in nkd.json so that it survives restarts.  No two
 * NSMs share those names (a long NAME's nkh-ID included), and a new one
 * never takes a namespace nkd did not create (nsm_create).
 *
 * On every HELLO nkd pushes the configuration of all the NSM's VMs
 * (VM_ADD + ATTACH_LISTENER, idempotent on the NSM side).  A child's death
 * arrives as SIGCHLD; an adopted NSM is not our child, so its death shows
 * as a hang-up of the control connection followed by a liveness check.  A
 * hang-up from a live NSM (another nkd connected to it) leads to
 * reconnecting, not restarting.  Restart delays start at NKD_BACKOFF_MIN_MS
 * and double per restart within the last minute, up to NKD_BACKOFF_MAX_MS.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "nkd.h"
#include "nkfd.h"

static const char *const state_names[] = {
	[NSM_STARTING] = "starting",
	[NSM_RUNNING] = "running",
	[NSM_RESTARTING] = "restarting",
	[NSM_FAILED] = "failed",
};

static const char *const msg_names[] = {
	[NSM_MSG_HELLO] = "HELLO",
	[NSM_MSG_REPLY] = "REPLY",
	[NSM_MSG_VM_ADD] = "VM_ADD",
	[NSM_MSG_VM_DEL] = "VM_DEL",
	[NSM_MSG_ATTACH_LISTENER] = "ATTACH_LISTENER",
	[NSM_MSG_ATTACH_STREAM] = "ATTACH_STREAM",
	[NSM_MSG_CONN_LIST] = "CONN_LIST",
	[NSM_MSG_CONN_BATCH] = "CONN_BATCH",
	[NSM_MSG_VM_DRAIN] = "VM_DRAIN",
	[NSM_MSG_CLAIM_FWD] = "CLAIM_FWD",
	[NSM_MSG_ATTACH_CLAIM] = "ATTACH_CLAIM",
	[NSM_MSG_VM_LIST] = "VM_LIST",
	[NSM_MSG_VM_BATCH] = "VM_BATCH",
};

static void nsm_conn_lost(struct nkd_nsm *nsm, const char *why);

const char *nsm_state_name(enum nsm_state s)
{
	return s <= NSM_FAILED ? state_names[s] : "?";
}

static const char *msg_name(unsigned int type)
{
	return type && type < NSM_MSG_MAX ? msg_names[type] : "?";
}

struct nkd_nsm *nsm_find(const char *name)
{
	int i;

	for (i = 0; i < NKD_NSM_MAX; i++)
		if (nkd.nsms[i] && !nkd.nsms[i]->dead && !strcmp(nkd.nsms[i]->name, name))
			return nkd.nsms[i];
	return NULL;
}

unsigned int nsm_vm_count(const struct nkd_nsm *nsm)
{
	struct nkd_vm *vm;
	unsigned int n = 0;

	for (vm = nkd.vms; vm; vm = vm->next)
		n += vm->nsm == nsm;
	return n;
}

static void ctl_path(const struct nkd_nsm *nsm, char *buf, size_t len)
{
	snprintf(buf, len, "%s/nsm-%s.sock", nkd.cfg.run_dir, nsm->name);
}

static void log_path(const struct nkd_nsm *nsm, char *buf, size_t len)
{
	snprintf(buf, len, "%s/nsm-%s.log", nkd.cfg.state_dir, nsm->name);
}

/* The last non-empty line of the NSM's log, for error messages. */
static void log_tail(const struct nkd_nsm *nsm, char *out, size_t len)
{
	char path[PATH_MAX], buf[512], *p, *end;
	ssize_t n = -1;
	off_t size;
	int fd;

	out[0] = '\0';
	log_path(nsm, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	if (size >= 0)
		n = pread(fd, buf, sizeof(buf) - 1, size > (off_t)sizeof(buf) - 1 ?
			  size - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	end = buf + n;
	while (end > buf && (end[-1] == '\n' || end[-1] == ' '))
		*--end = '\0';
	p = strrchr(buf, '\n');
	p = p ? p + 1 : buf;
	nkd_strscpy(out, p, len);
	for (p = out; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
}

static void timer_set(struct nkd_nsm *nsm, unsigned int first_ms, unsigned int every_ms)
{
	struct itimerspec its = {
		.it_value = { first_ms / 1000, (first_ms % 1000) * 1000000L },
		.it_interval = { every_ms / 1000, (every_ms % 1000) * 1000000L },
	};

	if (timerfd_settime(nsm->timer_fd, 0, &its, NULL) < 0)
		err_perror("nsm %s: timerfd_settime", nsm->name);
}

static void ctl_close(struct nkd_nsm *nsm)
{
	if (nsm->ctl_fd < 0)
		return;
	nkd_ep_del(nsm->ctl_fd);
	close(nsm->ctl_fd);
	nsm->ctl_fd = -1;
}

/* ---- configuration ---- */

/* Does /run/netns/NETNS exist, is it a netns, and does it have dev? */
static int netns_check(const struct nkd_nsm *n, struct nkd_err *e)
{
	char path[PATH_MAX];
	int fd, st, ret = 0;
	pid_t pid;

	snprintf(path, sizeof(path), "/run/netns/%s", n->netns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return nkd_fail(e, ENOENT, "nsm %s: netns %s does not exist (create it with 'ip netns add %s')",
					n->name, n->netns, n->netns);
		return nkd_fail(e, errno, "nsm %s: cannot open %s: %s", n->name, path, strerror(errno));
	}
	if (ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
		ret = nkd_fail(e, EINVAL, "nsm %s: %s is not a network namespace", n->name, path);
		goto out_close;
	}
	/* Look for the device from inside, in a short-lived child. */
	pid = fork();
	if (pid < 0) {
		ret = nkd_fail(e, errno, "nsm %s: fork: %s", n->name, strerror(errno));
		goto out_close;
	}
	if (pid == 0) {
		if (setns(fd, CLONE_NEWNET) < 0)
			_exit(2);
		_exit(if_nametoindex(n->dev) ? 0 : 1);
	}
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) == 2)
		ret = nkd_fail(e, EPERM, "nsm %s: cannot enter netns %s to look for dev %s",
			       n->name, n->netns, n->dev);
	else if (WEXITSTATUS(st) == 1)
		ret = nkd_fail(e, ENODEV, "nsm %s: dev %s does not exist in netns %s (see 'ip -n %s link')",
			       n->name, n->dev, n->netns, n->netns);
out_close:
	close(fd);
	return ret;
}

/* KEY of OBJ: a whole number (nkd.json) or its decimal string (nkctl), into
 * *V.  1 if there, 0 if left out, -EINVAL when it is something else. */
static int num_value(json_t *obj, const char *key, long long *v)
{
	json_t *val = json_object_get(obj, key);
	const char *sv = json_string_value(val);
	char *end;

	if (!val)
		return 0;
	if (json_is_integer(val)) {
		*v = json_integer_value(val);
		return 1;
	}
	if (!sv || !*sv)
		return -EINVAL;
	*v = strtoll(sv, &end, 10);
	return *end ? -EINVAL : 1;
}

/* KEY of OBJ, if there: microseconds 0-NSM_POLL_MAX_US, into *OUT. */
static int usec_value(json_t *obj, const char *key, unsigned int *out)
{
	long long v;
	int ret = num_value(obj, key, &v);

	if (ret <= 0)
		return ret;
	if (v < 0 || v > NSM_POLL_MAX_US)
		return -EINVAL;
	*out = (unsigned int)v;
	return 0;
}

/* bulk_poll, if there: "auto" (NSM_BULK_POLL_AUTO) or as usec_value(). */
static int bulk_value(json_t *obj, unsigned int *out)
{
	const char *sv = json_string_value(json_object_get(obj, "bulk_poll"));

	if (sv && !strcmp(sv, "auto")) {
		*out = NSM_BULK_POLL_AUTO;
		return 0;
	}
	return usec_value(obj, "bulk_poll", out);
}

/* KEY of OBJ, if there: bytes, 0 or NSM_KRELAY_SNDBUF_MIN-_MAX, into *OUT. */
static int sndbuf_value(json_t *obj, const char *key, long *out)
{
	long long v;
	int ret = num_value(obj, key, &v);

	if (ret <= 0)
		return ret;
	if (v && (v < NSM_KRELAY_SNDBUF_MIN || v > NSM_KRELAY_SNDBUF_MAX))
		return -EINVAL;
	*out = (long)v;
	return 0;
}

/* notsent_lowat, if there: bytes, 0-NSM_NOTSENT_LOWAT_MAX, into *OUT. */
static int lowat_value(json_t *obj, long *out)
{
	long long v;
	int ret = num_value(obj, "notsent_lowat", &v);

	if (ret <= 0)
		return ret;
	if (v < 0 || v > NSM_NOTSENT_LOWAT_MAX)
		return -EINVAL;
	*out = (long)v;
	return 0;
}

/* What `nsm add` leaves out means: splice relay, no busy polling, bulk
 * polling ("auto"), the in-kernel relay's send buffer and the relay's
 * TCP_NOTSENT_LOWAT at nk-nsm's defaults. */
void nsm_defaults(struct nkd_nsm *out)
{
	memset(out, 0, sizeof(*out));
	out->slot = -1;
	out->bulk_poll_us = NSM_BULK_POLL_AUTO;
	out->kernel_relay_sndbuf = NSM_KRELAY_SNDBUF;
	out->notsent_lowat = NSM_NOTSENT_LOWAT;
}

/* The NSM nsm_config_check() validates a reloaded entry for: its own name
 * and id are not conflicts. */
static const struct nkd_nsm *parse_self;

int nsm_config_parse(json_t *obj, struct nkd_nsm *out, bool check_env, struct nkd_err *e)
{
	struct sockaddr_un sun;
	const char *key, *name, *type, *netns, *dev, *relay;
	const struct nkd_nsm *nsm;
	char path[PATH_MAX];
	json_t *val, *jid;

	nsm_defaults(out);
	if (!json_is_object(obj))
		return nkd_fail(e, EINVAL, "nsm: expected an object");
	json_object_foreach(obj, key, val) {
		if (strcmp(key, "name") && strcmp(key, "type") && strcmp(key, "netns") &&
		    strcmp(key, "dev") && strcmp(key, "id") && strcmp(key, "relay") &&
		    strcmp(key, "busy_poll") && strcmp(key, "bulk_poll") &&
		    strcmp(key, "kernel_relay_sndbuf") && strcmp(key, "notsent_lowat"))
			return nkd_fail(e, EINVAL, "nsm: unknown key '%s' (expected name, id, type, netns, dev, relay, busy_poll, bulk_poll, kernel_relay_sndbuf, notsent_lowat)", key);
		if (strcmp(key, "id") && strcmp(key, "busy_poll") && strcmp(key, "bulk_poll") &&
		    strcmp(key, "kernel_relay_sndbuf") && strcmp(key, "notsent_lowat") &&
		    !json_is_string(val))
			return nkd_fail(e, EINVAL, "nsm: '%s' must be a string", key);
	}
	name = json_string_value(json_object_get(obj, "name"));
	type = json_string_value(json_object_get(obj, "type"));
	netns = json_string_value(json_object_get(obj, "netns"));
	dev = json_string_value(json_object_get(obj, "dev"));
	relay = json_string_value(json_object_get(obj, "relay"));
	if (!name)
		return nkd_fail(e, EINVAL, "nsm: missing NAME");
	if (!nkd_name_valid(name, NK_NAME_MAX))
		return nkd_fail(e, EINVAL, "nsm name '%s' is invalid: use 1-%d characters from A-Z a-z 0-9 _ . -",
				name, NK_NAME_MAX - 1);
	nsm = nsm_find(name);
	if (nsm && nsm != parse_self)
		return nkd_fail(e, EEXIST, "nsm %s already exists (see 'nkctl nsm show %s')", name, name);
	if (!type)
		return nkd_fail(e, EINVAL, "nsm %s: missing 'type kernel'", name);
	if (strcmp(type, "kernel"))
		return nkd_fail(e, EOPNOTSUPP, "nsm %s: type %s not supported yet (supported: kernel)",
				name, type);
	jid = json_object_get(obj, "id");
	if (jid) {
		json_int_t id = json_integer_value(jid);

		if (!json_is_integer(jid) || id < 0 || id >= NKD_NSM_MAX)
			return nkd_fail(e, EINVAL, "nsm %s: id must be a number from 0 to %d", name,
					NKD_NSM_MAX - 1);
		if (nkd.nsms[id] && nkd.nsms[id] != parse_self)
			return nkd_fail(e, EEXIST, "nsm %s: id %d is already used by nsm %s", name,
					(int)id, nkd.nsms[id]->name);
		out->slot = id;
	}
	if (relay && strcmp(relay, "splice") && strcmp(relay, "kernel"))
		return nkd_fail(e, EINVAL, "nsm %s: relay '%s' is not splice or kernel", name, relay);
	out->kernel_relay = relay && !strcmp(relay, "kernel");
	if (usec_value(obj, "busy_poll", &out->busy_poll_us))
		return nkd_fail(e, EINVAL, "nsm %s: busy-poll must be a number of microseconds from 0 to %d",
				name, NSM_POLL_MAX_US);
	if (bulk_value(obj, &out->bulk_poll_us))
		return nkd_fail(e, EINVAL, "nsm %s: bulk-poll must be auto or a number of microseconds from 0 to %d",
				name, NSM_POLL_MAX_US);
	if (sndbuf_value(obj, "kernel_relay_sndbuf", &out->kernel_relay_sndbuf))
		return nkd_fail(e, EINVAL, "nsm %s: kernel-relay-sndbuf must be 0 (autotuning) or a number of bytes from %d to %d",
				name, NSM_KRELAY_SNDBUF_MIN, NSM_KRELAY_SNDBUF_MAX);
	if (lowat_value(obj, &out->notsent_lowat))
		return nkd_fail(e, EINVAL, "nsm %s: lowat must be 0 (none: the namespace's sysctl applies) or a number of bytes up to %d",
				name, NSM_NOTSENT_LOWAT_MAX);
	if (!netns && !dev) {
		/* nkd creates the namespace and the veth on its uplink */
		if (!nkd.cfg.uplink)
			return nkd_fail(e, EINVAL, "nsm %s: missing 'netns NETNS dev IFNAME' (nkd creates the namespace itself only when it runs with --uplink IFNAME)",
					name);
		out->managed = true;
		nkd_strscpy(out->name, name, sizeof(out->name));
		nkd_strscpy(out->type, type, sizeof(out->type));
		snprintf(out->netns, sizeof(out->netns), NKD_NETNS_PREFIX "%s", name);
		nkd_strscpy(out->dev, NKD_NSM_DEV, sizeof(out->dev));
		ctl_path(out, path, sizeof(path));
		if (strlen(path) >= sizeof(sun.sun_path))
			return nkd_fail(e, ENAMETOOLONG, "nsm %s: control socket path %s is too long; use a shorter name or --run-dir",
					name, path);
		return 0;
	}
	if (!netns)
		return nkd_fail(e, EINVAL, "nsm %s: 'dev IFNAME' needs 'netns NETNS'", name);
	if (!nkd_name_valid(netns, NKD_NETNS_MAX))
		return nkd_fail(e, EINVAL, "nsm %s: netns name '%s' is invalid (1-%d characters from A-Z a-z 0-9 _ . -)",
				name, netns, NKD_NETNS_MAX - 1);
	if (!dev)
		return nkd_fail(e, EINVAL, "nsm %s: 'netns NETNS' needs 'dev IFNAME'", name);
	if (!*dev || strlen(dev) >= IFNAMSIZ || strpbrk(dev, "/: \t\n") ||
	    !strcmp(dev, ".") || !strcmp(dev, ".."))
		return nkd_fail(e, EINVAL, "nsm %s: dev '%s' is not a valid interface name (1-%d characters, no '/', ':' or spaces)",
				name, dev, IFNAMSIZ - 1);
	nkd_strscpy(out->name, name, sizeof(out->name));
	nkd_strscpy(out->type, type, sizeof(out->type));
	nkd_strscpy(out->netns, netns, sizeof(out->netns));
	nkd_strscpy(out->dev, dev, sizeof(out->dev));
	ctl_path(out, path, sizeof(path));
	if (strlen(path) >= sizeof(sun.sun_path))
		return nkd_fail(e, ENAMETOOLONG, "nsm %s: control socket path %s is too long; use a shorter name or --run-dir",
				name, path);
	if (check_env)
		return netns_check(out, e);
	return 0;
}

/*
 * SIGHUP: is the entry obj, for the running NSM self, one nkd would take
 * at start?  As nsm_config_parse() without looking at the machine, self's
 * own name and id not counted as conflicts.
 */
int nsm_config_check(json_t *obj, const struct nkd_nsm *self, struct nkd_err *e)
{
	struct nkd_nsm tmpl;
	int ret;

	parse_self = self;
	ret = nsm_config_parse(obj, &tmpl, false, e);
	parse_self = NULL;
	return ret;
}

/* ---- process handling ---- */

/* Is PID (not our child) alive and the nk-nsm of this name? */
static bool pid_is_nsm(const struct nkd_nsm *nsm)
{
	char path[64], buf[4096], *p;
	ssize_t n;
	size_t nl = strlen(nsm->name);
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)nsm->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return false;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)nsm->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (p = buf; p + 7 + nl < buf + n; p += strlen(p) + 1)
		if (!strcmp(p, "--name") && !strcmp(p + 7, nsm->name))
			return true;
	return false;
}

static bool pid_alive(const struct nkd_nsm *nsm)
{
	siginfo_t si = { 0 };

	if (!nsm->pid)
		return false;
	if (!nsm->child)
		return pid_is_nsm(nsm);
	/* A zombie still answers kill(pid, 0): peek without reaping. */
	if (waitid(P_PID, nsm->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
		return false;
	return si.si_pid != nsm->pid;
}

/*
 * Send sig, wait up to grace_ms, then SIGKILL and wait again.  Returns the
 * wait status of a child, or -1 (not our child, or gone already).  Never
 * signals a pid that is not this NSM.
 */
static int nsm_kill(struct nkd_nsm *nsm, int sig, unsigned int grace_ms)
{
	uint64_t end;
	int st, round;

	if (!nsm->pid || (!nsm->child && !pid_is_nsm(nsm)))
		return -1;
	for (round = 0; round < 2; round++) {
		kill(nsm->pid, sig);
		end = nkd_now_ms() + grace_ms;
		do {
			if (nsm->child) {
				pid_t r = waitpid(nsm->pid, &st, WNOHANG);

				if (r == nsm->pid)
					return st;
				if (r < 0)
					return -1;
			} else if (!pid_is_nsm(nsm)) {
				return -1;
			}
			usleep(20000);
		} while (nkd_now_ms() < end);
		if (sig == SIGKILL)
			break;
		warn("nsm %s (pid %d): still alive %u ms after %s; sending SIGKILL",
		     nsm->name, (int)nsm->pid, grace_ms, strsignal(sig));
		sig = SIGKILL;
		grace_ms = 2000;
	}
	err("nsm %s (pid %d): does not die", nsm->name, (int)nsm->pid);
	return -1;
}

static void status_str(int st, char *buf, size_t len)
{
	if (st == -1)
		snprintf(buf, len, "status unknown (not our child)");
	else if (WIFEXITED(st))
		snprintf(buf, len, "exit code %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal SIG%s", sigabbrev_np(WTERMSIG(st)) ?: "?");
	else
		snprintf(buf, len, "status 0x%x", st);
}

static void nsm_spawn_child(const struct nkd_nsm *nsm, int nsfd)
{
	char ctl[PATH_MAX], logp[PATH_MAX];
	/* 9 fixed, --kernel-relay, --busy-poll, --bulk-poll,
	 * --kernel-relay-sndbuf, --notsent-lowat, the --nsm-args, NULL */
	char *argv[9 + 5 + NKD_NSM_ARGS_MAX + 1] = { "nk-nsm", "--name", (char *)nsm->name,
						  "--type", (char *)nsm->type, "--dev",
						  (char *)nsm->dev, "--control", ctl };
	/* --busy-poll=, --bulk-poll=, --kernel-relay-sndbuf=, --notsent-lowat= */
	char bp[32], ulp[32], sb[48], lw[48];
	sigset_t none;
	int logfd, nullfd, i, n = 9;

	if (nsm->kernel_relay)
		argv[n++] = "--kernel-relay";
	if (nsm->busy_poll_us) {
		snprintf(bp, sizeof(bp), "--busy-poll=%u", nsm->busy_poll_us);
		argv[n++] = bp;
	}
	/* only a number, "auto" being nk-nsm's own default: an older nk-nsm
	 * without the option still starts (nkd upgraded first, test_compat),
	 * and one from before "auto" polls as it did */
	if (nsm->bulk_poll_us != NSM_BULK_POLL_AUTO) {
		snprintf(ulp, sizeof(ulp), "--bulk-poll=%u", nsm->bulk_poll_us);
		argv[n++] = ulp;
	}
	if (nsm->kernel_relay_sndbuf != NSM_KRELAY_SNDBUF) {
		snprintf(sb, sizeof(sb), "--kernel-relay-sndbuf=%ld", nsm->kernel_relay_sndbuf);
		argv[n++] = sb;
	}
	if (nsm->notsent_lowat != NSM_NOTSENT_LOWAT) {
		snprintf(lw, sizeof(lw), "--notsent-lowat=%ld", nsm->notsent_lowat);
		argv[n++] = lw;
	}
	for (i = 0; i < nkd.cfg.n_nsm_args; i++)
		argv[n++] = (char *)nkd.cfg.nsm_args[i];

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	ctl_path(nsm, ctl, sizeof(ctl));
	log_path(nsm, logp, sizeof(logp));
	logfd = open(logp, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (logfd < 0)
		_exit(126);
	if (setns(nsfd, CLONE_NEWNET) < 0) {
		dprintf(logfd, "nkd: nsm %s: cannot enter netns %s: %s\n", nsm->name, nsm->netns,
			strerror(errno));
		_exit(126);
	}
	setsid();
	nullfd = open("/dev/null", O_RDONLY);
	if (nullfd < 0 || dup2(nullfd, STDIN_FILENO) < 0 ||
	    dup2(logfd, STDOUT_FILENO) < 0 || dup2(logfd, STDERR_FILENO) < 0)
		_exit(126);
	dprintf(STDERR_FILENO, "nkd: starting %s for nsm %s (netns %s, dev %s)\n",
		nkd.cfg.nsm_bin, nsm->name, nsm->netns, nsm->dev);
	execv(nkd.cfg.nsm_bin, argv);
	dprintf(STDERR_FILENO, "nkd: cannot execute %s: %s\n", nkd.cfg.nsm_bin, strerror(errno));
	_exit(127);
}

static int nsm_spawn(struct nkd_nsm *nsm, struct nkd_err *e)
{
	char ctl[PATH_MAX], path[PATH_MAX];
	struct stat st;
	int nsfd;
	pid_t pid;

	snprintf(path, sizeof(path), "/run/netns/%s", nsm->netns);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		return nkd_fail(e, errno, "netns %s: %s", nsm->netns,
				errno == ENOENT ? "does not exist" : strerror(errno));
	/* A stale socket of a dead NSM must not answer our connect(). */
	ctl_path(nsm, ctl, sizeof(ctl));
	if (lstat(ctl, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(ctl);
	pid = fork();
	if (pid < 0) {
		close(nsfd);
		return nkd_fail(e, errno, "fork: %s", strerror(errno));
	}
	if (pid == 0)
		nsm_spawn_child(nsm, nsfd);
	close(nsfd);
	nsm->pid = pid;
	nsm->child = true;
	nsm->adopted = false;
	nsm->config_differs = false;
	nsm->run_known = false;
	nsm->state = NSM_STARTING;
	nsm->deadline = nkd_now_ms() + NKD_NSM_START_MS;
	timer_set(nsm, NKD_NSM_RETRY_MS, NKD_NSM_RETRY_MS);
	log_path(nsm, path, sizeof(path));
	info("nsm %s: started pid %d in netns %s (dev %s); log %s", nsm->name, (int)pid,
	     nsm->netns, nsm->dev, path);
	return 0;
}

/* ---- control connection ---- */

static int ctl_connect(const struct nkd_nsm *nsm)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	ctl_path(nsm, sun.sun_path, sizeof(sun.sun_path));
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static bool hdr_ok(const struct nsm_hdr *h, ssize_t n)
{
	return n >= (ssize_t)sizeof(*h) && h->magic == NSM_CTL_MAGIC &&
	       h->version == NSM_CTL_VERSION && h->len == (uint32_t)n;
}

/* HELLO into *HELLO, and into *RUN the settings a newer nk-nsm appends:
 * 1 with them, 0 without (an older nk-nsm), -EPROTO.  *RUN2 has what an
 * nk-nsm newer still appends after them (notsent_lowat -1: not said). */
static int hello_parse(const char *buf, ssize_t n, struct nsm_hello *hello,
		       struct nsm_hello_run *run, struct nsm_hello_run2 *run2)
{
	const struct nsm_hdr *h = (const void *)buf;
	size_t at = sizeof(*h) + sizeof(*hello) + sizeof(*run);

	run2->notsent_lowat = -1;

	if (!hdr_ok(h, n) || h->type != NSM_MSG_HELLO ||
	    (size_t)n < sizeof(*h) + sizeof(*hello))
		return -EPROTO;
	memcpy(hello, buf + sizeof(*h), sizeof(*hello));
	hello->name[sizeof(hello->name) - 1] = '\0';
	hello->type[sizeof(hello->type) - 1] = '\0';
	if ((size_t)n < sizeof(*h) + sizeof(*hello) + sizeof(*run))
		return 0;
	memcpy(run, buf + sizeof(*h) + sizeof(*hello), sizeof(*run));
	run->dev[sizeof(run->dev) - 1] = '\0';
	if ((size_t)n >= at + sizeof(*run2))
		memcpy(run2, buf + at, sizeof(*run2));
	return 1;
}

/* Append to D (LEN, *OFF so far) one "; "-separated item, cut at LEN. */
static void diff_add(char *d, size_t len, size_t *off, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (*off >= len - 1)
		return;
	if (*off)
		*off += snprintf(d + *off, len - *off, "; ");
	if (*off >= len - 1)
		return;
	va_start(ap, fmt);
	r = vsnprintf(d + *off, len - *off, fmt, ap);
	va_end(ap);
	if (r > 0)
		*off += (size_t)r;
}

/*
 * The settings an NSM reports in its HELLO (RUN; NULL from an nk-nsm too
 * old to report them) against its entry in nkd.json.  An adopted NSM runs
 * with what an earlier nkd gave it (a hand edit of nkd.json while nkd was
 * stopped, an upgrade); nkd's --nsm-arg, or defaults built into another
 * nk-nsm binary, can make a started one differ too.  Nothing is restarted
 * (adoption exists so that an nkd restart ends no connection): nkd says
 * what differs, and "nsm show" has config_differs and what runs.
 */
static void nsm_run_check(struct nkd_nsm *nsm, const struct nsm_hello_run *run,
			  const struct nsm_hello_run2 *run2)
{
	bool krelay;
	char d[320], path[PATH_MAX];
	struct stat st;
	size_t off = 0;

	nsm->config_differs = false;
	nsm->run_known = run != NULL;
	if (!run) {
		info("nsm %s (pid %d): an older nk-nsm that does not report its settings; not checked against its configuration",
		     nsm->name, (int)nsm->pid);
		return;
	}
	nsm->run = *run;
	nsm->run2 = *run2;
	d[0] = '\0';
	krelay = run->flags & NSM_RUN_KERNEL_RELAY;
	if (krelay != nsm->kernel_relay)
		diff_add(d, sizeof(d), &off, "relay %s (configured: %s)",
			 krelay ? "kernel" : "splice", nsm->kernel_relay ? "kernel" : "splice");
	if (run->busy_poll_us != nsm->busy_poll_us)
		diff_add(d, sizeof(d), &off, "busy_poll %u (configured: %u)", run->busy_poll_us,
			 nsm->busy_poll_us);
	if (nsm->bulk_poll_us == NSM_BULK_POLL_AUTO ? !(run->flags & NSM_RUN_BULK_POLL_AUTO) :
	    (run->flags & NSM_RUN_BULK_POLL_AUTO) || run->bulk_poll_us != nsm->bulk_poll_us) {
		char conf[16];

		if (nsm->bulk_poll_us == NSM_BULK_POLL_AUTO)
			snprintf(conf, sizeof(conf), "auto");
		else
			snprintf(conf, sizeof(conf), "%u", nsm->bulk_poll_us);
		diff_add(d, sizeof(d), &off, "bulk_poll %s%u (configured: %s)",
			 run->flags & NSM_RUN_BULK_POLL_AUTO ? "auto: " : "", run->bulk_poll_us, conf);
	}
	if (run->kernel_relay_sndbuf != nsm->kernel_relay_sndbuf)
		diff_add(d, sizeof(d), &off, "kernel_relay_sndbuf %lld (configured: %ld)",
			 (long long)run->kernel_relay_sndbuf, nsm->kernel_relay_sndbuf);
	if (run2->notsent_lowat >= 0 && run2->notsent_lowat != nsm->notsent_lowat)
		diff_add(d, sizeof(d), &off, "notsent_lowat %lld (configured: %ld)",
			 (long long)run2->notsent_lowat, nsm->notsent_lowat);
	if (strcmp(run->dev, nsm->dev))
		diff_add(d, sizeof(d), &off, "dev %s (configured: %s)", run->dev, nsm->dev);
	snprintf(path, sizeof(path), "/run/netns/%s", nsm->netns);
	if (stat(path, &st) < 0)
		diff_add(d, sizeof(d), &off, "netns: %s: %s", path, strerror(errno));
	else if (run->netns_ino && (st.st_dev != run->netns_dev || st.st_ino != run->netns_ino))
		diff_add(d, sizeof(d), &off, "another netns than %s", nsm->netns);
	if (!off)
		return;
	nsm->config_differs = true;
	warn("nsm %s (pid %d) does not run as configured: %s; %s", nsm->name, (int)nsm->pid, d,
	     nsm->adopted ? "it was adopted, and the configuration applies when it next starts (stop it and nkd starts it again)"
			  : "nkd started it so: its --nsm-arg, defaults built into this nk-nsm, a relay it could not set up (see its log) or a namespace replaced since make the difference");
}

/*
 * Adopt a running NSM: its control socket answers with our name.
 * Returns 1 adopted, 0 nobody there (spawn one), -errno refused.
 */
/* The HELLO an NSM sends on a connection to its control socket (within a
 * second): as hello_parse(), -1 without one. */
static int ctl_hello(int fd, struct nsm_hello *hello, struct nsm_hello_run *run,
		     struct nsm_hello_run2 *run2)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[NSM_CTL_MSG_MAX];
	ssize_t n = -1;

	if (poll(&pfd, 1, 1000) == 1)
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	return n > 0 ? hello_parse(buf, n, hello, run, run2) : -1;
}

static int nsm_try_adopt(struct nkd_nsm *nsm, struct nkd_err *e)
{
	char path[PATH_MAX];
	struct nsm_hello hello;
	struct nsm_hello_run run;
	struct nsm_hello_run2 run2;
	struct stat st;
	int fd, ret, has_run;

	ctl_path(nsm, path, sizeof(path));
	if (lstat(path, &st) < 0)
		return 0;
	if (!S_ISSOCK(st.st_mode))
		return nkd_fail(e, EEXIST, "nsm %s: %s exists and is not a socket; remove it",
				nsm->name, path);
	fd = ctl_connect(nsm);
	if (fd < 0) {
		debug("nsm %s: %s: %s; starting a new NSM", nsm->name, path, strerror(-fd));
		return 0;
	}
	has_run = ctl_hello(fd, &hello, &run, &run2);
	if (has_run < 0) {
		warn("nsm %s: %s accepted but sent no HELLO; starting a new NSM", nsm->name, path);
		close(fd);
		return 0;
	}
	if (strcmp(hello.name, nsm->name)) {
		close(fd);
		return nkd_fail(e, EADDRINUSE, "nsm %s: %s is served by nsm '%s'; stop that process first",
				nsm->name, path, hello.name);
	}
	ret = nkd_ep_add(fd, EP_NSM_CTL, nsm->slot, EPOLLIN);
	if (ret) {
		close(fd);
		return nkd_fail(e, -ret, "epoll_ctl: %s", strerror(-ret));
	}
	nsm->ctl_fd = fd;
	nsm->pid = hello.pid;
	nsm->child = false;
	nsm->adopted = true;
	nsm->state = NSM_RUNNING;
	nsm->reason[0] = '\0';
	timer_set(nsm, 0, 0);
	info("nsm %s: adopted running pid %u (it serves %u vms)", nsm->name, hello.pid, hello.nvms);
	nsm_run_check(nsm, has_run ? &run : NULL, &run2);
	return 1;
}

/*
 * One packet from the NSM's control socket, with the descriptor it may
 * carry (only CLAIM_FWD has one: anything else's is closed).  Returns
 * recv()'s result.
 */
static ssize_t ctl_recv(struct nkd_nsm *nsm, char *buf, size_t len, int *fd)
{
	int nfds;

	*fd = -1;
	return nk_recv_fds(nsm->ctl_fd, buf, len, MSG_DONTWAIT, fd, 1, &nfds, NULL);
}

/* A message the NSM sends unasked (CLAIM_FWD): true when it was one. */
static bool ctl_unsolicited(struct nkd_nsm *nsm, const char *buf, ssize_t n, int fd)
{
	const struct nsm_hdr *h = (const void *)buf;

	if (!hdr_ok(h, n) || h->type != NSM_MSG_CLAIM_FWD)
		return false;
	move_claim_queue(nsm, buf + sizeof(*h), n - sizeof(*h), fd);
	return true;
}

/* cb sees every other message carrying the request's seq before the
 * REPLY (a listing's batches). */
typedef void (*nsm_msg_cb)(struct nkd_nsm *nsm, const struct nsm_hdr *h, const void *body,
			   size_t len, void *arg);

static int nsm_request_cb(struct nkd_nsm *nsm, uint8_t type, const void *body, size_t len,
			  int fd, int *nsm_err, nsm_msg_cb cb, void *arg);

int nsm_request(struct nkd_nsm *nsm, uint8_t type, const void *body, size_t len, int fd,
		int *nsm_err)
{
	return nsm_request_cb(nsm, type, body, len, fd, nsm_err, NULL, NULL);
}

static int nsm_request_cb(struct nkd_nsm *nsm, uint8_t type, const void *body, size_t len,
			  int fd, int *nsm_err, nsm_msg_cb cb, void *arg)
{
	char buf[NSM_CTL_MSG_MAX] __attribute__((aligned(8)));
	struct nsm_hdr *h = (void *)buf;
	struct pollfd pfd = { .events = POLLIN };
	uint64_t end, limit;
	uint32_t seq;
	ssize_t n;
	int rfd;

	if (nsm->state != NSM_RUNNING || nsm->ctl_fd < 0)
		return -ENOTCONN;
	if (sizeof(*h) + len > sizeof(buf))
		return -EMSGSIZE;
	if (!++nsm->seq)
		++nsm->seq;
	seq = nsm->seq;
	*h = (struct nsm_hdr){
		.magic = NSM_CTL_MAGIC,
		.version = NSM_CTL_VERSION,
		.type = type,
		.len = sizeof(*h) + len,
		.seq = seq,
	};
	memcpy(buf + sizeof(*h), body, len);
	end = nkd_now_ms() + NKD_NSM_REPLY_MS;
	/* batches reset the wait for the next message, not this bound: an
	 * NSM that streams them for ever does not hold nkd */
	limit = nkd_now_ms() + NKD_NSM_STREAM_MS;
	pfd.fd = nsm->ctl_fd;
	while (nk_send_fd(nsm->ctl_fd, buf, sizeof(*h) + len, fd, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		int ret = -errno;

		if (ret == -EINTR)
			continue;
		if (ret == -EAGAIN && nkd_now_ms() < end) {
			pfd.events = POLLOUT;
			poll(&pfd, 1, 50);
			continue;
		}
		nsm_conn_lost(nsm, strerror(-ret));
		return ret;
	}
	if (!nsm_err)
		return 0;	/* no wait: a late REPLY is dropped as unexpected */
	pfd.events = POLLIN;
	for (;;) {
		uint64_t now = nkd_now_ms();

		if (now >= end) {
			if (now >= limit)
				warn("nsm %s: %s not answered after %d ms of batches; given up",
				     nsm->name, msg_name(type), NKD_NSM_STREAM_MS);
			else
				warn("nsm %s: no reply to %s within %d ms", nsm->name,
				     msg_name(type), NKD_NSM_REPLY_MS);
			return -ETIMEDOUT;
		}
		if (poll(&pfd, 1, end - now) <= 0)
			continue;
		n = ctl_recv(nsm, buf, sizeof(buf), &rfd);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			int ret = n ? -errno : -ECONNRESET;

			if (rfd >= 0)
				close(rfd);
			nsm_conn_lost(nsm, n ? strerror(errno) : "closed by the NSM");
			return ret;
		}
		if (ctl_unsolicited(nsm, buf, n, rfd))
			continue;
		if (rfd >= 0)
			close(rfd);
		if (cb && hdr_ok(h, n) && h->type != NSM_MSG_REPLY && h->seq == seq) {
			cb(nsm, h, buf + sizeof(*h), n - sizeof(*h), arg);
			end = nkd_now_ms() + NKD_NSM_REPLY_MS;	/* progress */
			if (end > limit)
				end = limit;
			continue;
		}
		if (!hdr_ok(h, n) || h->type != NSM_MSG_REPLY || h->seq != seq) {
			debug("nsm %s: ignoring message type %u seq %u while waiting for seq %u",
			      nsm->name, h->type, h->seq, seq);
			continue;
		}
		*nsm_err = h->err;
		if (h->err < 0 || h->err > 4095)
			*nsm_err = EPROTO;
		debug("nsm %s: %s seq %u -> %s", nsm->name, msg_name(type), seq,
		      *nsm_err ? strerror(*nsm_err) : "ok");
		return 0;
	}
}

int nsm_push_vms(struct nkd_nsm *nsm)
{
	struct nkd_err e;
	struct nkd_vm *vm;
	int ret = 0;

	for (vm = nkd.vms; vm && nsm->state == NSM_RUNNING; vm = vm->next) {
		if (vm->nsm != nsm)
			continue;
		ret = vm_push(vm, &e);
		if (ret) {
			nkd_strscpy(vm->error, e.msg, sizeof(vm->error));
			err("%s", e.msg);
		} else {
			vm->error[0] = '\0';
		}
	}
	return ret;
}

/* A batch packet's head: {u32 n; u32 pad0}, the entries after it. */
#define NSM_BATCH_HEAD	offsetof(struct nsm_conn_batch, conns)
_Static_assert(offsetof(struct nsm_vm_batch, vms) == NSM_BATCH_HEAD, "one batch head");

struct listing {
	const struct nsm_listing *ls;
	uint8_t *v;
	size_t n, cap;
	int err;
};

static void listing_batch(struct nkd_nsm *nsm, const struct nsm_hdr *h, const void *body,
			  size_t len, void *arg)
{
	struct listing *l = arg;
	const struct nsm_listing *ls = l->ls;
	uint32_t n = 0;
	uint8_t *v;
	size_t cap;

	if (len >= NSM_BATCH_HEAD)
		memcpy(&n, body, sizeof(n));
	if (h->type != ls->batch || len < NSM_BATCH_HEAD || !n || n > ls->per ||
	    len != NSM_BATCH_HEAD + n * ls->esize) {
		warn("nsm %s: malformed %s (%zu bytes); ignored", nsm->name, msg_name(ls->batch),
		     len);
		return;
	}
	if (l->err)
		return;
	if (l->n + n > ls->max) {
		warn("nsm %s: %s lists more than %zu entries; not believed", nsm->name,
		     msg_name(ls->batch), ls->max);
		l->err = -EOVERFLOW;
		return;
	}
	if (l->n + n > l->cap) {
		for (cap = l->cap ? l->cap * 2 : 64; cap < l->n + n; cap *= 2)
			;
		v = realloc(l->v, cap * ls->esize);
		if (!v) {
			l->err = -ENOMEM;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	memcpy(l->v + l->n * ls->esize, (const uint8_t *)body + NSM_BATCH_HEAD, n * ls->esize);
	l->n += n;
}

int nsm_collect(struct nkd_nsm *nsm, const struct nsm_listing *ls, const void *body, size_t len,
		void **out, size_t *n)
{
	struct listing l = { .ls = ls };
	int ret, nerr = 0;

	*out = NULL;
	*n = 0;
	ret = nsm_request_cb(nsm, ls->req, body, len, -1, &nerr, listing_batch, &l);
	if (!ret && nerr)
		ret = -nerr;
	if (!ret)
		ret = l.err;
	if (ret) {
		free(l.v);
		return ret;
	}
	*out = l.v;
	*n = l.n;
	return 0;
}

/* The NSM's VMs (VM_LIST) into *v (free() it) and *n; 0, or -1 when it
 * cannot say (logged). */
static int vm_list_get(struct nkd_nsm *nsm, struct nsm_vm_entry **v, size_t *n)
{
	static const struct nsm_listing ls = {
		NSM_MSG_VM_LIST, NSM_MSG_VM_BATCH, sizeof(struct nsm_vm_entry), NSM_VM_BATCH,
		NKD_VM_ID_MAX,
	};
	struct nsm_vm_ref ref = { 0 };
	int ret = nsm_collect(nsm, &ls, &ref, sizeof(ref), (void **)v, n);

	if (!ret)
		return 0;
	if (ret == -EOPNOTSUPP)
		info("nsm %s: this nk-nsm cannot list its vms; vms deleted while nkd was down stay on it until it restarts",
		     nsm->name);
	else
		warn("nsm %s: VM_LIST: %s", nsm->name, strerror(-ret));
	return -1;
}

/* The VMs the NSM has, {name: id} (NULL: it cannot say): a reload that
 * adopts it gives the VMs of its file those ids. */
json_t *nsm_vm_ids(struct nkd_nsm *nsm)
{
	struct nsm_vm_entry *v;
	char name[NK_NAME_MAX];
	json_t *ids;
	size_t i, n;

	if (vm_list_get(nsm, &v, &n))
		return NULL;
	ids = json_object();
	for (i = 0; i < n; i++) {
		nkd_strscpy(name, v[i].name, sizeof(name));
		json_object_set_new(ids, name, json_integer(v[i].vm_id));
	}
	free(v);
	return ids;
}

/*
 * An adopted NSM may serve VMs nkd no longer has: deleted from --config
 * FILE or nkd.json while nkd was not running.  Their guests would keep
 * their addresses and listener there, unseen by nkctl, and the VMs nkd
 * sends it next could not take their names, addresses or ids.  Before nkd
 * sends its VMs (nsm_start()), each VM the NSM has that is neither one of
 * its VMs there, under the same name, nor one draining from it (or about
 * to be: state_drain_pending()) is deleted there (VM_DEL).  An NSM
 * without VM_LIST is left as it is.
 */
void nsm_prune_strays(struct nkd_nsm *nsm)
{
	struct nsm_vm_ref ref = { 0 };
	struct nsm_vm_entry *v;
	struct nkd_vm *vm;
	int ret, nerr = 0;
	char name[NK_NAME_MAX];
	size_t i, n;

	if (nsm->state != NSM_RUNNING || vm_list_get(nsm, &v, &n))
		return;
	for (i = 0; i < n; i++) {
		nkd_strscpy(name, v[i].name, sizeof(name));
		for (vm = nkd.vms; vm && vm->id != v[i].vm_id; vm = vm->next)
			;
		if (vm && !strcmp(vm->name, name) &&
		    (vm->nsm == nsm || move_draining_on(vm, nsm) ||
		     state_drain_pending(vm->name, nsm->name)))
			continue;
		ref.vm_id = v[i].vm_id;
		ret = nsm_request(nsm, NSM_MSG_VM_DEL, &ref, sizeof(ref), -1, &nerr);
		if (ret || nerr)
			warn("nsm %s: vm %s (id %u) is no vm of nkd's there; removing it failed: %s",
			     nsm->name, name, ref.vm_id, strerror(ret ? -ret : nerr));
		else if (vm && strcmp(vm->name, name))
			info("nsm %s: removed vm %s (id %u): nkd has that id for vm %s now",
			     nsm->name, name, ref.vm_id, vm->name);
		else if (vm)
			info("nsm %s: removed vm %s (id %u), which is on nsm %s now", nsm->name,
			     name, ref.vm_id, vm->nsm->name);
		else
			info("nsm %s: removed vm %s (id %u), which it served but nkd no longer has",
			     nsm->name, name, ref.vm_id);
	}
	free(v);
}

/* ---- supervision ---- */

static void nsm_fail_waiter(struct nkd_nsm *nsm, const char *why)
{
	struct nkd_err e;
	char tail[200], logp[PATH_MAX];

	if (!nsm->waiter)
		return;
	log_tail(nsm, tail, sizeof(tail));
	log_path(nsm, logp, sizeof(logp));
	if (tail[0])
		nkd_fail(&e, EIO, "nsm %s: nk-nsm failed to start: %s; %s says: %s",
			 nsm->name, why, logp, tail);
	else
		nkd_fail(&e, EIO, "nsm %s: nk-nsm failed to start: %s; see %s", nsm->name, why, logp);
	nkd_client_reply(nsm->waiter, NULL, &e);
	nsm->waiter = NULL;
}

/* Remove an NSM from the registry; the loop frees it (nsm_sweep). */
void nsm_abandon(struct nkd_nsm *nsm, const char *why)
{
	nsm_fail_waiter(nsm, why);
	ctl_close(nsm);
	steer_nsm_down(nsm);	/* a managed NSM's entries, veth and netns */
	if (nsm->timer_fd >= 0) {
		nkd_ep_del(nsm->timer_fd);
		close(nsm->timer_fd);
		nsm->timer_fd = -1;
	}
	nsm->dead = true;
}

void nsm_sweep(void)
{
	int i;

	for (i = 0; i < NKD_NSM_MAX; i++) {
		if (nkd.nsms[i] && nkd.nsms[i]->dead) {
			free(nkd.nsms[i]);
			nkd.nsms[i] = NULL;
		}
	}
}

/*
 * The NSM process is gone (or was killed by us): an "nsm add" in progress
 * fails and is undone; otherwise schedule a restart with backoff.
 */
static void nsm_down(struct nkd_nsm *nsm, const char *why)
{
	char ctl[PATH_MAX], logp[PATH_MAX], who[NK_NAME_MAX + 32];
	uint64_t now = nkd_now_ms();
	unsigned int i, recent = 0, delay;
	pid_t pid = nsm->pid;

	ctl_close(nsm);
	nsm->pid = 0;
	nsm->child = false;
	nsm->adopted = false;
	nsm->config_differs = false;
	nsm->run_known = false;
	if (pid)
		snprintf(who, sizeof(who), "nsm %s (pid %d)", nsm->name, (int)pid);
	else
		snprintf(who, sizeof(who), "nsm %s: not started:", nsm->name);
	if (nsm->waiter) {
		err("%s %s; nsm add undone", who, why);
		nsm_abandon(nsm, why);
		ctl_path(nsm, ctl, sizeof(ctl));
		unlink(ctl);
		return;
	}
	if (pid)
		snprintf(nsm->reason, sizeof(nsm->reason), "pid %d %s", (int)pid, why);
	else
		nkd_strscpy(nsm->reason, why, sizeof(nsm->reason));
	for (i = 0; i < NKD_RESTART_BURST; i++)
		recent += nsm->restart_at[i] && now - nsm->restart_at[i] < NKD_RESTART_WINDOW_MS;
	log_path(nsm, logp, sizeof(logp));
	if (recent >= NKD_RESTART_BURST) {
		nsm->state = NSM_FAILED;
		timer_set(nsm, 0, 0);
		err("%s %s; giving up after %d restarts within %d s: state failed (see %s; fix the cause, then send SIGHUP to nkd)",
		    who, why, NKD_RESTART_BURST, NKD_RESTART_WINDOW_MS / 1000, logp);
		return;
	}
	delay = NKD_BACKOFF_MIN_MS << recent;
	if (delay > NKD_BACKOFF_MAX_MS)
		delay = NKD_BACKOFF_MAX_MS;
	nsm->state = NSM_RESTARTING;
	timer_set(nsm, delay, 0);
	warn("%s %s; restarting in %u.%u s", who, why, delay / 1000, delay % 1000 / 100);
}

static void nsm_exited(struct nkd_nsm *nsm, int status)
{
	char st[64], why[96];

	status_str(status, st, sizeof(st));
	snprintf(why, sizeof(why), "exited: %s", st);
	nsm_down(nsm, why);
}

/* Start-up went wrong (no HELLO, bad HELLO): kill what we started. */
static void nsm_start_failed(struct nkd_nsm *nsm, const char *why)
{
	char st[64], both[160];
	int status;

	status = nsm_kill(nsm, SIGKILL, 2000);
	if (status != -1) {
		status_str(status, st, sizeof(st));
		snprintf(both, sizeof(both), "%s (then %s)", why, st);
		why = both;
	}
	nsm_down(nsm, why);
}

static void nsm_conn_lost(struct nkd_nsm *nsm, const char *why)
{
	int st;

	ctl_close(nsm);
	if (pid_alive(nsm)) {
		warn("nsm %s (pid %d): control connection lost (%s); reconnecting",
		     nsm->name, (int)nsm->pid, why);
		nsm->state = NSM_STARTING;
		nsm->deadline = nkd_now_ms() + NKD_NSM_START_MS;
		timer_set(nsm, NKD_NSM_RETRY_MS, NKD_NSM_RETRY_MS);
		return;
	}
	if (nsm->child && waitpid(nsm->pid, &st, WNOHANG) == nsm->pid)
		nsm_exited(nsm, st);
	else
		nsm_exited(nsm, -1);
}

void nsm_sigchld(void)
{
	pid_t pid;
	int st, i;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (i = 0; i < NKD_NSM_MAX; i++) {
			struct nkd_nsm *nsm = nkd.nsms[i];

			if (nsm && !nsm->dead && nsm->child && nsm->pid == pid) {
				nsm_exited(nsm, st);
				break;
			}
		}
		if (i == NKD_NSM_MAX)
			debug("reaped pid %d", (int)pid);
	}
}

static void nsm_hello(struct nkd_nsm *nsm, const char *buf, ssize_t n)
{
	struct nsm_hello hello;
	struct nsm_hello_run run;
	struct nsm_hello_run2 run2;
	int has_run = hello_parse(buf, n, &hello, &run, &run2);
	char why[96];

	if (has_run < 0) {
		nsm_start_failed(nsm, "malformed HELLO");
		return;
	}
	if (strcmp(hello.name, nsm->name)) {
		snprintf(why, sizeof(why), "its control socket answered as nsm '%.*s'",
			 NK_NAME_MAX, hello.name);
		nsm_start_failed(nsm, why);
		return;
	}
	if (!nsm->child)
		nsm->pid = hello.pid;
	else if (hello.pid != (uint32_t)nsm->pid)
		debug("nsm %s: HELLO says pid %u, we started %d", nsm->name, hello.pid, (int)nsm->pid);
	nsm->state = NSM_RUNNING;
	nsm->reason[0] = '\0';
	timer_set(nsm, 0, 0);
	info("nsm %s (pid %d): up, type %s", nsm->name, (int)nsm->pid, hello.type);
	nsm_run_check(nsm, has_run ? &run : NULL, &run2);
	if (nsm->waiter) {
		struct nkd_client *c = nsm->waiter;

		nsm->waiter = NULL;
		nkd_client_reply_saved(c, nsm_to_json(nsm, true));
	}
	nsm_push_vms(nsm);
}

void nsm_ctl_event(uint32_t idx, uint32_t events)
{
	struct nkd_nsm *nsm = idx < NKD_NSM_MAX ? nkd.nsms[idx] : NULL;
	char buf[NSM_CTL_MSG_MAX] __attribute__((aligned(8)));
	const struct nsm_hdr *h = (const void *)buf;
	int budget = NKD_NSM_EVENT_MSGS;
	ssize_t n;
	int fd;

	(void)events;
	if (!nsm || nsm->dead)
		return;
	/* a bounded number per wakeup: an NSM that sends without end does
	 * not keep nkd from the rest (the socket stays readable: epoll
	 * brings it back) */
	while (nsm->ctl_fd >= 0 && budget-- > 0) {
		n = ctl_recv(nsm, buf, sizeof(buf), &fd);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			if (fd >= 0)
				close(fd);
			nsm_conn_lost(nsm, n ? strerror(errno) : "closed by the NSM");
			return;
		}
		if (nsm->state == NSM_RUNNING && ctl_unsolicited(nsm, buf, n, fd))
			continue;
		if (fd >= 0)
			close(fd);
		if (nsm->state == NSM_STARTING && n >= (ssize_t)sizeof(*h) &&
		    h->type == NSM_MSG_HELLO) {
			nsm_hello(nsm, buf, n);
			continue;
		}
		if (!hdr_ok(h, n))
			warn("nsm %s: malformed control message (%zd bytes); dropped", nsm->name, n);
		else
			debug("nsm %s: unexpected %s seq %u; dropped", nsm->name, msg_name(h->type), h->seq);
	}
}

void nsm_timer_event(uint32_t idx)
{
	struct nkd_nsm *nsm = idx < NKD_NSM_MAX ? nkd.nsms[idx] : NULL;
	struct nkd_err e;
	uint64_t ticks;
	int fd, ret;

	if (!nsm || nsm->dead)
		return;
	if (read(nsm->timer_fd, &ticks, sizeof(ticks)) != sizeof(ticks))
		return;
	switch (nsm->state) {
	case NSM_STARTING:
		if (nsm->pid && !pid_alive(nsm)) {
			if (!nsm->child)
				nsm_exited(nsm, -1);
			return;	/* a child: SIGCHLD reports it */
		}
		if (nsm->ctl_fd < 0) {
			fd = ctl_connect(nsm);
			if (fd >= 0) {
				ret = nkd_ep_add(fd, EP_NSM_CTL, nsm->slot, EPOLLIN);
				if (ret) {
					err("nsm %s: epoll_ctl: %s", nsm->name, strerror(-ret));
					close(fd);
				} else {
					nsm->ctl_fd = fd;
					debug("nsm %s: connected; waiting for HELLO", nsm->name);
				}
			}
		}
		if (nkd_now_ms() >= nsm->deadline) {
			snprintf(e.msg, sizeof(e.msg), "no HELLO within %d s", NKD_NSM_START_MS / 1000);
			nsm_start_failed(nsm, e.msg);
		}
		break;
	case NSM_RESTARTING:
		nsm->restart_at[nsm->restart_head++ % NKD_RESTART_BURST] = nkd_now_ms();
		nsm->restarts++;
		ret = nsm_spawn(nsm, &e);
		if (ret)
			nsm_down(nsm, e.msg);
		break;
	default:
		break;
	}
}

/* ---- objects ---- */

int nsm_start(struct nkd_nsm *nsm, struct nkd_err *e)
{
	int ret;

	ret = steer_nsm_up(nsm, e);	/* a managed NSM's netns, veth, XDP */
	if (ret) {
		nsm->state = NSM_FAILED;
		nkd_strscpy(nsm->reason, e->msg, sizeof(nsm->reason));
		err("%s", e->msg);
		return ret;
	}
	ret = nsm_try_adopt(nsm, e);
	if (ret == 1) {
		/* first: the VMs sent next take their places; a reload
		 * (nkd.reloading) prunes once it has added its VMs */
		if (!nkd.reloading)
			nsm_prune_strays(nsm);
		nsm_push_vms(nsm);
		return 0;
	}
	if (ret == 0) {
		ret = nsm_spawn(nsm, e);
		if (ret) {
			char why[sizeof(e->msg)];

			nkd_strscpy(why, e->msg, sizeof(why));
			nkd_fail(e, -ret, "nsm %s: cannot start nk-nsm: %s", nsm->name, why);
		}
	}
	if (ret) {
		nsm->state = NSM_FAILED;
		nkd_strscpy(nsm->reason, e->msg, sizeof(nsm->reason));
		err("%s", e->msg);
	}
	return ret;
}

/* Does nkh-NAME fit IFNAMSIZ?  Else a managed NSM's host side is nkh-ID. */
static bool hostdev_fits(const char *name)
{
	return strlen(NKD_HOSTDEV_PREFIX) + strlen(name) < IFNAMSIZ;
}

static void nsm_hostdev(const char *name, int slot, char *buf, size_t len)
{
	if (hostdev_fits(name))
		snprintf(buf, len, NKD_HOSTDEV_PREFIX "%s", name);
	else
		snprintf(buf, len, NKD_HOSTDEV_PREFIX "%d", slot);
}

/* The live NSM (not self) whose host-side veth is hostdev, if any. */
static const struct nkd_nsm *hostdev_owner(const char *hostdev, const struct nkd_nsm *self)
{
	int i;

	for (i = 0; i < NKD_NSM_MAX; i++) {
		const struct nkd_nsm *o = nkd.nsms[i];

		if (o && o != self && !o->dead && o->managed && !strcmp(o->hostdev, hostdev))
			return o;
	}
	return NULL;
}

/*
 * The names nkd gives a managed NSM's plumbing must be no other NSM's:
 * the second would take over the first one's veth (nkd re-creates a pair
 * whose peer it does not find in its own netns) or namespace, and delete
 * them with itself.  nkh-ID of a long name can be another NSM's nkh-NAME
 * (nsm "3"), and an NSM given netns nk-NAME shares a managed NSM's.
 * Whichever comes second is refused, whether added or restored.
 */
static int nsm_names_check(const struct nkd_nsm *nsm, struct nkd_err *e)
{
	const struct nkd_nsm *o;
	int i;

	if (nsm->managed && (o = hostdev_owner(nsm->hostdev, nsm))) {
		if (hostdev_fits(nsm->name))
			return nkd_fail(e, EEXIST, "nsm %s: its host-side veth %s is already nsm %s's (id %d, whose name is too long for %sNAME); choose another name",
					nsm->name, nsm->hostdev, o->name, o->slot,
					NKD_HOSTDEV_PREFIX);
		return nkd_fail(e, EEXIST, "nsm %s: the name is too long for a host-side veth %sNAME, and %s (%sID, id %d) is already nsm %s's; choose a name of at most %zu characters or another id",
				nsm->name, NKD_HOSTDEV_PREFIX, nsm->hostdev, NKD_HOSTDEV_PREFIX,
				nsm->slot, o->name, IFNAMSIZ - 1 - strlen(NKD_HOSTDEV_PREFIX));
	}
	for (i = 0; i < NKD_NSM_MAX; i++) {
		o = nkd.nsms[i];
		if (!o || o == nsm || o->dead || !(o->managed || nsm->managed) ||
		    strcmp(o->netns, nsm->netns))
			continue;
		return nkd_fail(e, EEXIST, "nsm %s: netns %s is already nsm %s's, which nkd %s; %s",
				nsm->name, nsm->netns, o->name,
				o->managed ? "created and deletes with it" : "was given",
				nsm->managed ? "choose another name" : "choose another netns");
	}
	return 0;
}

/* An NSM of this name answers on its control socket (an earlier nkd's,
 * still running): nkd adopts it, and its netns with it. */
static bool nsm_answers(const struct nkd_nsm *nsm)
{
	struct nsm_hello hello;
	struct nsm_hello_run run;
	struct nsm_hello_run2 run2;
	int fd = ctl_connect(nsm);
	bool ours;

	if (fd < 0)
		return false;
	ours = ctl_hello(fd, &hello, &run, &run2) >= 0 && !strcmp(hello.name, nsm->name);
	close(fd);
	return ours;
}

/*
 * A new managed NSM (added, not restored from nkd's state) gets a netns
 * nkd creates, and deletes again with the NSM.  One that exists already
 * is not nkd's (an operator's "ip netns add nk-NAME", or a leftover nkd
 * lost track of): nkd would adopt it and delete it later.  Refused, unless
 * an NSM of the name answers in it (nsm_answers()).  A restored NSM's
 * existing netns is nkd's own from before its restart.
 */
static int nsm_netns_new(const struct nkd_nsm *nsm, struct nkd_err *e)
{
	int fd = netns_open(nsm->netns);

	if (fd < 0)
		return 0;	/* ENOENT; any other error is reported when creating it */
	close(fd);
	if (nsm_answers(nsm))
		return 0;
	return nkd_fail(e, EEXIST, "nsm %s: netns %s exists already and is not nkd's (nkd creates it for the nsm and deletes it with it); choose another name, or remove it with 'ip netns del %s' if nothing uses it",
			nsm->name, nsm->netns, nsm->netns);
}

/* The first free id; for a long name, one whose nkh-ID is no other NSM's
 * nkh-NAME.  NKD_NSM_MAX: none. */
static int nsm_free_slot(const struct nkd_nsm *tmpl)
{
	char dev[IFNAMSIZ];
	int slot;

	for (slot = 0; slot < NKD_NSM_MAX; slot++) {
		if (nkd.nsms[slot])
			continue;
		if (!tmpl->managed || hostdev_fits(tmpl->name))
			break;
		nsm_hostdev(tmpl->name, slot, dev, sizeof(dev));
		if (!hostdev_owner(dev, NULL))
			break;
	}
	return slot;
}

int nsm_create(const struct nkd_nsm *tmpl, bool start, struct nkd_nsm **out,
	       struct nkd_err *e)
{
	struct nkd_nsm *nsm;
	int slot, ret;

	slot = tmpl->slot < 0 ? nsm_free_slot(tmpl) : tmpl->slot;
	if (slot == NKD_NSM_MAX)
		return nkd_fail(e, ENOSPC, "nsm %s: too many NSMs (max %d)", tmpl->name, NKD_NSM_MAX);
	if (nkd.nsms[slot])
		return nkd_fail(e, EEXIST, "nsm %s: id %d is already used by nsm %s", tmpl->name,
				slot, nkd.nsms[slot]->name);
	nsm = calloc(1, sizeof(*nsm));
	if (!nsm)
		return nkd_fail(e, ENOMEM, "nsm %s: out of memory", tmpl->name);
	memcpy(nsm->name, tmpl->name, sizeof(nsm->name));
	memcpy(nsm->type, tmpl->type, sizeof(nsm->type));
	memcpy(nsm->netns, tmpl->netns, sizeof(nsm->netns));
	memcpy(nsm->dev, tmpl->dev, sizeof(nsm->dev));
	nsm->kernel_relay = tmpl->kernel_relay;
	nsm->busy_poll_us = tmpl->busy_poll_us;
	nsm->bulk_poll_us = tmpl->bulk_poll_us;
	nsm->kernel_relay_sndbuf = tmpl->kernel_relay_sndbuf;
	nsm->notsent_lowat = tmpl->notsent_lowat;
	nsm->managed = tmpl->managed;
	nsm_hostdev(nsm->name, slot, nsm->hostdev, sizeof(nsm->hostdev));
	nsm->slot = slot;
	ret = nsm_names_check(nsm, e);
	if (ret && nkd.restoring) {	/* an older nkd's nkd.json: kept, said */
		warn("%s; restored as nkd.json has it (a new nsm would be refused)", e->msg);
		ret = 0;
	}
	if (!ret && start && nsm->managed)
		ret = nsm_netns_new(nsm, e);
	if (ret) {
		free(nsm);
		return ret;
	}
	nsm->netns_id = -1;
	nsm->ctl_fd = -1;
	nsm->state = NSM_STARTING;
	nsm->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (nsm->timer_fd < 0) {
		ret = nkd_fail(e, errno, "nsm %s: timerfd: %s", nsm->name, strerror(errno));
		free(nsm);
		return ret;
	}
	ret = nkd_ep_add(nsm->timer_fd, EP_NSM_TIMER, slot, EPOLLIN);
	if (ret) {
		close(nsm->timer_fd);
		free(nsm);
		return nkd_fail(e, -ret, "nsm %s: epoll_ctl: %s", tmpl->name, strerror(-ret));
	}
	nkd.nsms[slot] = nsm;
	if (start) {
		ret = nsm_start(nsm, e);
		if (ret) {
			nsm_abandon(nsm, e->msg);
			return ret;
		}
	}
	*out = nsm;
	return 0;
}

int nsm_delete(struct nkd_nsm *nsm, struct nkd_err *e)
{
	char ctl[PATH_MAX], names[200] = "", st[64] = "not running";
	struct nkd_vm *vm;
	unsigned int n = 0;
	pid_t pid = nsm->pid;
	int status;

	for (vm = nkd.vms; vm; vm = vm->next) {
		if (vm->nsm != nsm)
			continue;
		if (n++ < 4)
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
				 n > 1 ? ", " : "", vm->name);
	}
	if (n)
		return nkd_fail(e, EBUSY, "nsm %s is used by %u vm(s) (%s%s); delete them first with 'nkctl vm del NAME'",
				nsm->name, n, names, n > 4 ? ", ..." : "");
	move_forget_nsm(nsm);
	ctl_close(nsm);
	if (pid) {
		status = nsm_kill(nsm, SIGTERM, NKD_NSM_TERM_MS);
		status_str(status, st, sizeof(st));
	}
	ctl_path(nsm, ctl, sizeof(ctl));
	unlink(ctl);
	info("nsm %s: deleted (pid %d: %s)", nsm->name, (int)pid, st);
	nsm_abandon(nsm, "the nsm was deleted");
	return 0;
}

void nsm_resync_all(void)
{
	int i;

	for (i = 0; i < NKD_NSM_MAX; i++) {
		struct nkd_nsm *nsm = nkd.nsms[i];

		if (!nsm || nsm->dead)
			continue;
		if (nsm->state == NSM_RUNNING) {
			nsm_push_vms(nsm);
		} else if (nsm->state == NSM_FAILED) {
			info("nsm %s: retrying (was: %s)", nsm->name, nsm->reason);
			memset(nsm->restart_at, 0, sizeof(nsm->restart_at));
			nsm->state = NSM_RESTARTING;
			timer_set(nsm, 1, 0);
		}
	}
}

/* What an NSM reports it runs with, as nsm_to_json() gives the settings. */
json_t *run_to_json(const struct nkd_nsm *nsm)
{
	const struct nsm_hello_run *run = &nsm->run;
	json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:s}",
			      "relay", run->flags & NSM_RUN_KERNEL_RELAY ? "kernel" : "splice",
			      "busy_poll", (json_int_t)run->busy_poll_us,
			      "bulk_poll", (json_int_t)run->bulk_poll_us,
			      "kernel_relay_sndbuf", (json_int_t)run->kernel_relay_sndbuf,
			      "dev", run->dev);

	/* an nk-nsm from before --notsent-lowat does not say */
	if (o && nsm->run2.notsent_lowat >= 0)
		json_object_set_new(o, "notsent_lowat", json_integer(nsm->run2.notsent_lowat));
	if (o && (run->flags & NSM_RUN_NO_SPLICE))
		json_object_set_new(o, "no_splice", json_true());
	/* bulk_poll is what "auto" chose, from this round trip (us) */
	if (o && (run->flags & NSM_RUN_BULK_POLL_AUTO)) {
		json_object_set_new(o, "bulk_poll_auto", json_true());
		/* 0: nk-nsm could not measure it (and polls) */
		if (run->wake_ns)
			json_object_set_new(o, "wakeup_us",
					    json_real(((uint64_t)run->wake_ns + 50) / 100 / 10.0));
	}
	return o;
}

json_t *nsm_to_json(const struct nkd_nsm *nsm, bool full)
{
	char path[PATH_MAX];
	json_t *o, *vms;
	struct nkd_vm *vm;

	o = json_pack("{s:s, s:I, s:s, s:s, s:I, s:o, s:I, s:I}", "name", nsm->name,
		      "id", (json_int_t)nsm->slot,
		      "type", nsm->type, "relay", nsm->kernel_relay ? "kernel" : "splice",
		      "busy_poll", (json_int_t)nsm->busy_poll_us,
		      "bulk_poll", nsm->bulk_poll_us == NSM_BULK_POLL_AUTO ? json_string("auto") :
		      json_integer(nsm->bulk_poll_us),
		      "kernel_relay_sndbuf", (json_int_t)nsm->kernel_relay_sndbuf,
		      "notsent_lowat", (json_int_t)nsm->notsent_lowat);
	/* a managed NSM is stored without netns/dev: nkd derives them */
	if (!nsm->managed || full) {
		json_object_set_new(o, "netns", json_string(nsm->netns));
		json_object_set_new(o, "dev", json_string(nsm->dev));
	}
	if (!full)
		return o;
	json_object_set_new(o, "managed", json_boolean(nsm->managed));
	if (nsm->managed) {
		json_object_set_new(o, "hostdev", json_string(nsm->hostdev));
		json_object_set_new(o, "xdp_mode", steer_nsm_steered(nsm) && nsm->host_ifindex ?
				    json_string(nk_xdp_mode_name(nsm->egress_mode)) : json_null());
		/* the ingress program's socket lookups (moved flows) use it */
		json_object_set_new(o, "netns_id", steer_nsm_steered(nsm) && nsm->netns_id >= 0 ?
				    json_integer(nsm->netns_id) : json_null());
	}
	json_object_set_new(o, "state", json_string(nsm_state_name(nsm->state)));
	json_object_set_new(o, "pid", nsm->pid ? json_integer(nsm->pid) : json_null());
	json_object_set_new(o, "restarts", json_integer(nsm->restarts));
	vms = json_array();
	for (vm = nkd.vms; vm; vm = vm->next)
		if (vm->nsm == nsm)
			json_array_append_new(vms, json_string(vm->name));
	json_object_set_new(o, "vms", vms);
	json_object_set_new(o, "adopted", json_boolean(nsm->adopted));
	json_object_set_new(o, "config_differs", json_boolean(nsm->config_differs));
	json_object_set_new(o, "running", nsm->run_known ? run_to_json(nsm) : json_null());
	ctl_path(nsm, path, sizeof(path));
	json_object_set_new(o, "control", json_string(path));
	log_path(nsm, path, sizeof(path));
	json_object_set_new(o, "log", json_string(path));
	if (nsm->reason[0])
		json_object_set_new(o, "reason", json_string(nsm->reason));
	return o;
}
