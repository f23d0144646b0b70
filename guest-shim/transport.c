// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libnkguest: the transport to the host and the control channel.
 *
 * The transport is named by NK_TRANSPORT, else by "transport = ..." in
 * /etc/netkernel/guest.conf (NK_CONFIG overrides the path), else it is
 * vsock:2:7531:
 *   vsock[:CID:PORT]  AF_VSOCK, the production path inside a VM;
 *   unix:PATH         a Unix stream socket (hybrid-vsock path of a VM, or a
 *                     network-namespace guest in tests).
 * Both give a plain byte stream; nothing here relies on what only one of
 * them can do.
 *
 * The control channel is one stream per process (re-opened after fork),
 * guarded by a mutex: one request, one reply.  It is CLOEXEC and checked by
 * inode before each use, so an application that closes or dup2()s over it
 * only costs a reconnect.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "nkguest.h"

#define HANDSHAKE_TIMEOUT_MS	10000

static struct {
	bool parsed;
	bool is_unix;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	unsigned int cid, port;
} tp;

static pthread_mutex_t tp_lock = PTHREAD_MUTEX_INITIALIZER;

static int parse_transport(const char *s)
{
	char *end;

	if (!strncmp(s, "unix:", 5)) {
		if (!s[5] || strlen(s + 5) >= sizeof(tp.path))
			return -EINVAL;
		tp.is_unix = true;
		strcpy(tp.path, s + 5);
		return 0;
	}
	if (!strcmp(s, "vsock")) {
		tp.is_unix = false;
		tp.cid = NK_HOST_CID;
		tp.port = NK_DEFAULT_VSOCK_PORT;
		return 0;
	}
	if (!strncmp(s, "vsock:", 6)) {
		tp.is_unix = false;
		tp.cid = strtoul(s + 6, &end, 10);
		if (end == s + 6 || *end != ':')
			return -EINVAL;
		s = end + 1;
		tp.port = strtoul(s, &end, 10);
		if (end == s || *end || !tp.port)
			return -EINVAL;
		return 0;
	}
	return -EINVAL;
}

/* "transport = X" from the guest config file, if any. */
static const char *config_transport(char *buf, size_t len)
{
	const char *path = getenv("NK_CONFIG");
	char line[512], *p, *v;
	const char *found = NULL;
	FILE *f;

	if (!path)
		path = "/etc/netkernel/guest.conf";
	f = fopen(path, "re");
	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		p = line + strspn(line, " \t");
		if (*p == '#' || strncmp(p, "transport", 9))
			continue;
		p += 9;
		p += strspn(p, " \t");
		if (*p != '=')
			continue;
		v = p + 1 + strspn(p + 1, " \t");
		v[strcspn(v, " \t\r\n#")] = '\0';
		if (*v && strlen(v) < len) {
			strcpy(buf, v);
			found = buf;
		}
	}
	fclose(f);
	return found;
}

static int transport_setup(void)
{
	char buf[256];
	const char *s;
	int ret = 0;

	pthread_mutex_lock(&tp_lock);
	if (!tp.parsed) {
		s = getenv("NK_TRANSPORT");
		if (!s || !*s)
			s = config_transport(buf, sizeof(buf));
		if (!s)
			s = "vsock";
		ret = parse_transport(s);
		if (ret)
			nk_logf("bad transport \"%s\" (want unix:PATH or vsock[:CID:PORT])", s);
		else
			tp.parsed = true;
	}
	pthread_mutex_unlock(&tp_lock);
	return ret;
}

/*
 * A new stream to the host; with timeo, reads on it time out after
 * HANDSHAKE_TIMEOUT_MS (the caller waits for a reply).  sflags: SOCK_CLOEXEC
 * and SOCK_NONBLOCK as the stream should have them once connected.
 */
static int transport_open(bool timeo, int sflags)
{
	struct timeval tv = { .tv_sec = HANDSHAKE_TIMEOUT_MS / 1000 };
	int fd, ret;

	ret = transport_setup();
	if (ret)
		return ret;
	if (tp.is_unix) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		strcpy(sun.sun_path, tp.path);
		fd = nk_real.socket(AF_UNIX, SOCK_STREAM | sflags, 0);
		if (fd < 0)
			return -errno;
		if (timeo)
			nk_real.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ret = nk_real.connect(fd, (struct sockaddr *)&sun, sizeof(sun));
		if (ret < 0 && errno == EAGAIN && (sflags & SOCK_NONBLOCK)) {
			/* The host's backlog is full: wait for room, as a
			 * blocking connect does. */
			nk_real.fcntl(fd, F_SETFL, nk_real.fcntl(fd, F_GETFL) & ~O_NONBLOCK);
			ret = nk_real.connect(fd, (struct sockaddr *)&sun, sizeof(sun));
			nk_real.fcntl(fd, F_SETFL, nk_real.fcntl(fd, F_GETFL) | O_NONBLOCK);
		}
		if (ret < 0) {
			ret = -errno;
			nk_logf("cannot reach the host at unix:%s: %s", tp.path, strerror(-ret));
			nk_real.close(fd);
			return ret;
		}
	} else {
		struct sockaddr_vm svm = {
			.svm_family = AF_VSOCK,
			.svm_cid = tp.cid,
			.svm_port = tp.port,
		};

		/* Blocking connect: a non-blocking one would be in progress. */
		fd = nk_real.socket(AF_VSOCK, SOCK_STREAM | (sflags & SOCK_CLOEXEC), 0);
		if (fd < 0)
			return -errno;
		if (timeo)
			nk_real.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (nk_real.connect(fd, (struct sockaddr *)&svm, sizeof(svm)) < 0) {
			ret = -errno;
			nk_logf("cannot reach the host at vsock:%u:%u: %s", tp.cid, tp.port,
				strerror(-ret));
			nk_real.close(fd);
			return ret;
		}
		if ((sflags & SOCK_NONBLOCK) && nk_real.fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
			ret = -errno;
			nk_real.close(fd);
			return ret;
		}
	}
	return fd;
}

/* The transport is a Unix socket (not AF_VSOCK). */
bool nk_transport_is_unix(void)
{
	return tp.parsed && tp.is_unix;
}

int nk_transport_open(void)
{
	return transport_open(true, SOCK_CLOEXEC);
}

int nk_transport_open_data(int sflags)
{
	return transport_open(false, sflags & (SOCK_CLOEXEC | SOCK_NONBLOCK));
}

int nk_send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len) {
		n = nk_real.send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };

				nk_real.poll(&pfd, 1, -1);
				continue;
			}
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

/* A deadline for the replies this thread waits for (CLOCK_MONOTONIC ms),
 * or -1; see nk_ctl_call_timeout(). */
static __thread int64_t recv_deadline = -1;

int64_t nk_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t nk_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int nk_recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	ssize_t n;

	while (len) {
		if (recv_deadline >= 0) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			int64_t left = recv_deadline - nk_mono_ms();

			if (left <= 0 || nk_real.poll(&pfd, 1, (int)left) == 0)
				return -ETIMEDOUT;
		}
		n = nk_real.recv(fd, p, len, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLIN };

				/* SO_RCVTIMEO expiry on a blocking stream. */
				if (!(nk_real.fcntl(fd, F_GETFL) & O_NONBLOCK))
					return -ETIMEDOUT;
				nk_real.poll(&pfd, 1, -1);
				continue;
			}
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

int nk_msg_send(int fd, uint8_t op, uint32_t seq, const void *body, size_t len)
{
	char buf[NK_MSG_MAX];
	struct nk_hdr *h = (struct nk_hdr *)buf;

	if (sizeof(*h) + len > sizeof(buf))
		return -EINVAL;
	*h = (struct nk_hdr){
		.magic = NK_PROTO_MAGIC,
		.version = NK_PROTO_VERSION,
		.op = op,
		.len = sizeof(*h) + len,
		.seq = seq,
	};
	memcpy(buf + sizeof(*h), body, len);
	return nk_send_all(fd, buf, sizeof(*h) + len);
}

int nk_msg_recv(int fd, uint8_t op, void *body, size_t len)
{
	uint8_t buf[NK_MSG_MAX];
	struct nk_hdr h;
	int ret, bodylen;

	/* Header and body in one read: a reply always has its op's full
	 * body (zeroed with an error), so the size to expect is known. */
	if (len > sizeof(buf) - sizeof(h))
		return -EINVAL;
	ret = nk_recv_all(fd, buf, sizeof(h) + len);
	if (ret)
		return ret;
	memcpy(&h, buf, sizeof(h));
	bodylen = nk_hdr_check(&h, 1);
	if (bodylen < 0 || h.op != op || (size_t)bodylen != len || h.err < 0) {
		nk_logf("protocol error from the host (op %u, len %u)", h.op, h.len);
		return -EPROTO;
	}
	if (len)
		memcpy(body, buf + sizeof(h), len);
	return h.err;
}

/* HELLO and its reply: 0, a positive errno from the NSM, or -errno. */
int nk_hello(int fd, const struct nk_hello_req *req, struct nk_hello_rep *rep)
{
	int ret = nk_msg_send(fd, NK_OP_HELLO, 0, req, sizeof(*req));

	return ret ? ret : nk_msg_recv(fd, NK_OP_HELLO, rep, sizeof(*rep));
}

/* ---- control channels --------------------------------------------------- */

/*
 * One control channel per NSM instance this process has sockets on (a VM
 * that moved, or an NSM that restarted, leaves sockets on an older
 * instance).  A new channel goes wherever nkd routes the VM today; its
 * HELLO reply says which instance that is.
 */
#define NCTL	4

struct ctl_chan {
	int fd;
	uint32_t nsm;
	pid_t pid;
	dev_t dev;
	ino_t ino;
	unsigned int epoch;	/* fd_epoch at its last check */
	uint64_t used;		/* LRU stamp */
	bool posts;		/* opened with NK_HELLO_F_POST */
};

/*
 * Is a channel still this process's, on the same file?  Checked before
 * every request, so without a system call while nothing changed: a
 * getpid() and an fstat() before each of the two posts of a tcp_nopush
 * response cost nginx about 4% of its requests/s (docs/benchmarks.md).
 *   - A fork gives the child copies of the parent's channels, which it
 *     must not use (the replies would mix).  fork_mark is a page the
 *     kernel zeroes in a child (MADV_WIPEONFORK), holding the pid that
 *     last looked: a child, however it was made (fork(), a raw clone()
 *     without CLONE_VM), finds 0 there and asks getpid().
 *   - The program may close a channel's number and open something else
 *     there.  fd_epoch advances when the library's close(), dup2(),
 *     dup3(), close_range(), closefrom() or fclose() has closed or
 *     replaced a channel's number (nk_ctl_fd_gone(); after, so that a
 *     check racing the close cannot take the old file for current); a
 *     channel whose epoch is older is checked with fstat() again.  A
 *     close by a raw system call is not seen: the next request then goes
 *     to whatever the number is (docs/compat.md).  Before the library
 *     closes a channel's number itself it always checks (chan_drop()).
 */
static unsigned int fd_epoch;
static struct {
	pid_t pid;
} *fork_mark;
static bool fork_mark_tried;

/* under ctl.lock */
static void fork_mark_init(void)
{
	void *p;

	if (fork_mark_tried)
		return;
	fork_mark_tried = true;
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	if (madvise(p, 4096, MADV_WIPEONFORK)) {	/* before Linux 4.14 */
		munmap(p, 4096);
		return;
	}
	fork_mark = p;
}

static struct {
	pthread_mutex_t lock;
	uint32_t seq;
	uint64_t clock;
	bool no_post;		/* the NSM closed a HELLO with NK_HELLO_F_POST */
	struct ctl_chan ch[NCTL];
} ctl = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.ch = { { .fd = -1 }, { .fd = -1 }, { .fd = -1 }, { .fd = -1 } },
};

void nk_ctl_fd_gone(int first, int last)
{
	int i, fd;

	for (i = 0; i < NCTL; i++) {
		fd = __atomic_load_n(&ctl.ch[i].fd, __ATOMIC_RELAXED);
		if (fd >= 0 && fd >= first && fd <= last) {
			__atomic_add_fetch(&fd_epoch, 1, __ATOMIC_SEQ_CST);
			return;
		}
	}
}

/* full: always ask getpid() and fstat() (before closing the number) */
static bool chan_check(struct ctl_chan *c, bool full)
{
	unsigned int epoch = __atomic_load_n(&fd_epoch, __ATOMIC_SEQ_CST);
	struct stat st;
	pid_t pid;

	if (c->fd < 0)
		return false;
	if (!full && fork_mark && fork_mark->pid == c->pid && c->epoch == epoch)
		return true;
	pid = getpid();
	if (fork_mark)
		fork_mark->pid = pid;
	if (c->pid != pid || fstat(c->fd, &st) || st.st_dev != c->dev || st.st_ino != c->ino)
		return false;
	c->epoch = epoch;
	return true;
}

static bool chan_valid(struct ctl_chan *c)
{
	return chan_check(c, false);
}

static void chan_drop(struct ctl_chan *c)
{
	/* Close it only if the fd is still ours (same process, same file). */
	if (chan_check(c, true))
		nk_real.close(c->fd);
	c->fd = -1;
	c->nsm = 0;
}

/* Open a channel to the VM's current NSM; returns its slot or -errno. */
static int chan_open(void)
{
	struct nk_hello_req req = { .kind = NK_HELLO_CTL, .pid = getpid() };
	struct nk_hello_rep rep = { 0 };
	struct ctl_chan *c;
	unsigned int epoch;
	struct stat st;
	int fd, ret, i, slot = 0;

	fork_mark_init();
	epoch = __atomic_load_n(&fd_epoch, __ATOMIC_SEQ_CST);
	fd = nk_transport_open();
	if (fd < 0)
		return fd;
	if (!ctl.no_post)
		req.flags = NK_HELLO_F_POST;
	ret = nk_hello(fd, &req, &rep);
	for (i = 0; ret == -ECONNRESET && req.flags && i < 2; i++) {
		/* Closed unanswered: an NSM without the flag if it happens
		 * again (once could be a restart or a move) and the same
		 * HELLO without it is answered. */
		nk_real.close(fd);
		if (i)
			req.flags = 0;
		fd = nk_transport_open();
		if (fd < 0)
			return fd;
		ret = nk_hello(fd, &req, &rep);
		/* ... unless that answer says it takes the flag: then the
		 * closes were moves (the flag is tried on the next channel) */
		if (!ret && !req.flags && !(rep.flags & NK_HELLO_F_POST)) {
			ctl.no_post = true;
			nk_logf("the host's NSM does not take posted options; every setsockopt() waits for its reply");
		}
	}
	if (ret > 0)
		ret = -ret;
	if (ret < 0 || fstat(fd, &st) < 0) {
		nk_logf("control channel: %s", strerror(ret < 0 ? -ret : errno));
		nk_real.close(fd);
		return ret < 0 ? ret : -errno;
	}
	/* The slot of that instance, a free one, or the least recently used. */
	for (i = 0; i < NCTL; i++) {
		if (ctl.ch[i].fd >= 0 && ctl.ch[i].nsm == rep.nsm_id) {
			slot = i;
			break;
		}
		if (ctl.ch[i].fd < 0 || ctl.ch[i].used < ctl.ch[slot].used)
			slot = i;
	}
	c = &ctl.ch[slot];
	chan_drop(c);
	*c = (struct ctl_chan){
		.fd = fd,
		.nsm = rep.nsm_id,
		.pid = getpid(),
		.dev = st.st_dev,
		.ino = st.st_ino,
		.epoch = epoch,
		.used = ++ctl.clock,
		.posts = req.flags & NK_HELLO_F_POST,
	};
	return slot;
}

int nk_ctl_call(uint32_t nsm, uint8_t op, const void *req, size_t reqlen, void *rep,
		size_t replen)
{
	struct ctl_chan *c;
	int ret = -ECONNRESET, tries, i, slot;

	pthread_mutex_lock(&ctl.lock);
	for (tries = 0; tries < 2; tries++) {
		slot = -1;
		for (i = 0; i < NCTL; i++) {
			if (ctl.ch[i].fd >= 0 && ctl.ch[i].nsm == nsm) {
				if (chan_valid(&ctl.ch[i]))
					slot = i;
				else
					chan_drop(&ctl.ch[i]);
				break;
			}
		}
		if (slot < 0) {
			slot = chan_open();
			if (slot < 0) {
				ret = slot;
				break;
			}
			if (ctl.ch[slot].nsm != nsm) {
				/* The socket's NSM instance is gone (it
				 * restarted): its connections went with it. */
				ret = -ECONNRESET;
				break;
			}
		}
		c = &ctl.ch[slot];
		c->used = ++ctl.clock;
		ret = nk_msg_send(c->fd, op, ++ctl.seq, req, reqlen);
		if (ret) {
			/* The channel broke before the NSM saw the request:
			 * drop it, try once more on a new one. */
			chan_drop(c);
			continue;
		}
		ret = nk_msg_recv(c->fd, op, rep, replen);
		if (ret < 0) {
			/* The NSM may have carried the request out: never
			 * send it twice (BIND, CONNECT...). */
			chan_drop(c);
			if (ret == -ETIMEDOUT || ret == -EPROTO)
				break;
			ret = -ECONNRESET;
		}
		break;
	}
	pthread_mutex_unlock(&ctl.lock);
	if (ret > 0)
		return -ret;
	return ret;
}

/*
 * Post a SETSOCKOPT without waiting for the NSM (NK_HELLO_F_POST): on the
 * channel of its instance if that one is open and posts. Returns 0, or
 * -EAGAIN when the caller has to nk_ctl_call() instead (nothing was sent).
 */
int nk_ctl_post_opt(uint32_t nsm, const struct nk_opt_req *req)
{
	struct nk_opt_req r = *req;
	struct ctl_chan *c = NULL;
	int ret = -EAGAIN, i;

	r.flags |= NK_OPT_F_POSTED;
	pthread_mutex_lock(&ctl.lock);
	for (i = 0; i < NCTL; i++)
		if (ctl.ch[i].fd >= 0 && ctl.ch[i].nsm == nsm) {
			c = &ctl.ch[i];
			break;
		}
	if (c && c->posts && chan_valid(c)) {
		c->used = ++ctl.clock;
		ret = nk_msg_send(c->fd, NK_OP_SETSOCKOPT, ++ctl.seq, &r, sizeof(r));
		if (ret) {
			chan_drop(c);	/* not seen by the NSM: the call sends it again */
			ret = -EAGAIN;
		}
	}
	pthread_mutex_unlock(&ctl.lock);
	return ret;
}

int nk_ctl_call_timeout(uint32_t nsm, uint8_t op, const void *req, size_t reqlen, void *rep,
			size_t replen, int timeout_ms)
{
	int ret;

	recv_deadline = nk_mono_ms() + timeout_ms;
	ret = nk_ctl_call(nsm, op, req, reqlen, rep, replen);
	recv_deadline = -1;
	return ret;
}

void nk_ctl_atfork_prepare(void)
{
	pthread_mutex_lock(&ctl.lock);
}

void nk_ctl_atfork_parent(void)
{
	pthread_mutex_unlock(&ctl.lock);
}

void nk_ctl_atfork_child(void)
{
	int i;

	/* The child opens its own channels; sharing the parent's would mix
	 * up replies.  Its copies of the fds are closed. */
	for (i = 0; i < NCTL; i++) {
		struct stat st;

		/* Only if the number still is our channel: the program may
		 * have closed it and opened something else there. */
		if (ctl.ch[i].fd >= 0 && !fstat(ctl.ch[i].fd, &st) &&
		    st.st_dev == ctl.ch[i].dev && st.st_ino == ctl.ch[i].ino)
			nk_real.close(ctl.ch[i].fd);
		ctl.ch[i].fd = -1;
		ctl.ch[i].nsm = 0;
	}
	pthread_mutex_init(&ctl.lock, NULL);
}
