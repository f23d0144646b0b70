/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * libnkguest internals: the per-fd socket table, the transport to the host
 * and the real libc functions the interposers fall through to.
 *
 * Theory of operation
 * -------------------
 * socket(AF_INET/AF_INET6, SOCK_STREAM) returns a real local kernel socket
 * ("fresh") and records it.  Options set on it are applied locally (so the
 * application gets Linux's own validation) and remembered.  The socket is
 * *promoted* the first time it is bound to, connected to or listening on a
 * non-loopback address: the library opens a stream to the host, says HELLO,
 * replays the remembered options on the NSM's socket, and dup3()s the
 * stream over the application's fd, keeping its number, O_NONBLOCK and
 * FD_CLOEXEC (and re-adding it to any epoll set it was registered in).  A
 * socket bound or connected to loopback stays local for good: loopback
 * traffic never leaves the guest.
 *
 * From then on the fd *is* the guest end of the stream.  Control operations
 * (bind, listen, connect, setsockopt, ...) go over the per-process control
 * channel, naming the socket by its token; payload goes over the stream
 * itself, so read and epoll hit the kernel directly; writes, sendfile and
 * splice pass through the library only for its checks (connected, EPIPE)
 * and the stream's buffer size (shim.c, stream_grow).
 *
 * The only time readiness is emulated is while a non-blocking connect is in
 * flight: the stream is writable at once but Linux only reports POLLOUT when
 * the handshake has completed, so poll/select/epoll wait for the CONNECTED
 * record (POLLIN) instead and report it as POLLOUT (see poll.c).
 */
#ifndef NK_GUEST_H
#define NK_GUEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <netkernel/proto.h>

#define NK_API __attribute__((visibility("default")))

enum nks_state {
	NKS_FRESH,	/* local placeholder socket, not yet promoted */
	NKS_LOCAL,	/* loopback: a plain guest socket for good */
	NKS_SETUP,	/* promoted, not connected or listening */
	NKS_CONNECTING,	/* CONNECT sent, CONNECTED record not yet read */
	NKS_CONNECTED,	/* data mode */
	NKS_LISTENING,
};

#define NKS_SAVED_OPTS	16
#define NKS_SAVED_OPT_MAX 64	/* options set before promotion; larger ones fail */
#define NKS_EPREGS	8

struct nks_opt {
	int level, name;
	socklen_t len;
	uint8_t val[NKS_SAVED_OPT_MAX];
};

/* One epoll registration of the socket's fd, kept to re-register it after
 * promotion and to swap EPOLLOUT for EPOLLIN while connecting. */
struct nks_epreg {
	int epfd;
	int fd;
	struct epoll_event ev;	/* as the application asked */
};

struct nk_sock {
	int refs;		/* fd table slots pointing here; under tab lock */
	pthread_mutex_t lock;	/* state transitions */
	enum nks_state state;
	int domain;		/* AF_INET or AF_INET6 */
	int type;		/* SOCK_STREAM or SOCK_DGRAM */
	bool broadcast;		/* SO_BROADCAST set (UDP) */
	bool v6only;		/* IPV6_V6ONLY set */
	bool shut_wr;		/* UDP: shutdown(SHUT_WR) done */
	pthread_mutex_t rlock;	/* UDP: one frame read at a time */
	pthread_mutex_t wlock;	/* UDP: one frame written at a time */
	char *more;		/* UDP: sends with MSG_MORE held for one datagram */
	size_t more_len;	/* (under wlock; more_len 0: none held) */
	struct nk_addr more_addr;	/* its destination: the first send's */
	int held_err;		/* UDP: an error recvmmsg() met after its first
				 * datagram, for the next receive (Linux's sk_err) */
	uint64_t token;
	uint32_t nsm;		/* the NSM instance that holds it */
	int pending_err;	/* failed connect, reported once by SO_ERROR */
	bool connect_unreported; /* a non-blocking connect whose outcome connect()
				  * has not returned yet (Linux's SS_CONNECTING) */
	int eof_err;		/* -1 unknown; else the reason the stream ended */
	bool eof_reported;
	bool conn_ended;	/* STATUS said the connection ended (stream_conn_ended) */
	bool connect_counted;	/* counted in nk_connecting */
	bool sndbuf_fixed;	/* grown (stream_grow) or set by the application */
	bool dead;		/* listener lost with its NSM */
	bool shut;		/* listener shut down by the application */
	bool port_given;	/* TCP: bind() named the port (a shut-down
				 * listener keeps it, as on Linux) */
	unsigned int gen;	/* bumped by every promotion (re-listening) */
	int quiet_peer;		/* keeps a dead listener's fd quiet, or 0 */
	int backlog;
	uint8_t accept_op;	/* listener's records: NK_OP_ACCEPT_*; 0 unknown */
	struct sockaddr_storage local, peer;
	socklen_t local_len, peer_len;	/* 0: not known */
	struct sockaddr_storage bound;	/* UDP: what bind() bound, to bind again */
	socklen_t bound_len;		/* 0: not bound by bind() */
	int nopts;
	struct nks_opt opts[NKS_SAVED_OPTS];
	int nregs;
	struct nks_epreg regs[NKS_EPREGS];
};

/* Real libc functions. */
struct nk_real {
	int (*socket)(int, int, int);
	int (*close)(int);
	int (*bind)(int, const struct sockaddr *, socklen_t);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	int (*listen)(int, int);
	int (*accept)(int, struct sockaddr *, socklen_t *);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*getsockname)(int, struct sockaddr *, socklen_t *);
	int (*getpeername)(int, struct sockaddr *, socklen_t *);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*getsockopt)(int, int, int, void *, socklen_t *);
	int (*shutdown)(int, int);
	int (*socketpair)(int, int, int, int *);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*readv)(int, const struct iovec *, int);
	ssize_t (*recv)(int, void *, size_t, int);
	ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*writev)(int, const struct iovec *, int);
	ssize_t (*sendfile)(int, int, off_t *, size_t);
	ssize_t (*sendfile64)(int, int, int64_t *, size_t);
	ssize_t (*splice)(int, loff_t *, int, loff_t *, size_t, unsigned int);
	ssize_t (*send)(int, const void *, size_t, int);
	ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	int (*ioctl)(int, unsigned long, ...);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*epoll_wait)(int, struct epoll_event *, int, int);
	int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
	int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *,
			    const sigset_t *);	/* NULL before glibc 2.35 */
	int (*poll)(void *, unsigned long, int);
	int (*ppoll)(void *, unsigned long, const void *, const sigset_t *);
	int (*select)(int, void *, void *, void *, void *);
	int (*pselect)(int, void *, void *, void *, const void *, const sigset_t *);
};

extern struct nk_real nk_real;
extern int nk_connecting;	/* sockets in NKS_CONNECTING (atomic) */
extern int nk_udp_connected;	/* promoted UDP sockets that are connected (atomic) */

void nk_init(void);
bool nk_enabled(void);
void nk_logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* fd table (sock.c) */
bool nks_fd_tracked(int fd);		/* fast, lock-free hint */
struct nk_sock *nks_get(int fd);	/* referenced, or NULL */
bool nks_fd_is(int fd, const struct nk_sock *sk);
void nks_put(struct nk_sock *sk);
struct nk_sock *nks_new(int domain, int type);
int nks_install(int fd, struct nk_sock *sk);	/* takes a reference */
void nks_forget(int fd);
void nks_dup(int oldfd, int newfd);
/* The fds whose slot points at sk (dup()s of one socket). */
int nks_fds_of(const struct nk_sock *sk, int *out, int max);
void nks_set_state(struct nk_sock *sk, enum nks_state st);
void nks_atfork_prepare(void);
void nks_atfork_parent(void);
void nks_atfork_child(void);
/* Visit every connecting socket (for poll/epoll translation). */
int nks_connecting_snapshot(struct nk_sock **out, int *fds, int max);
/* Visit every connected UDP socket (error frames read as POLLERR). */
int nks_udp_snapshot(struct nk_sock **out, int *fds, int max);

/* dgram.c */
ssize_t nk_dgram_recv(struct nk_sock *sk, int fd, const struct iovec *iov, int cnt, int flags,
		      struct sockaddr *src, socklen_t *slen, int *mflags);
ssize_t nk_dgram_send(struct nk_sock *sk, int fd, const struct iovec *iov, int cnt, int flags,
		      const struct sockaddr *dst, socklen_t dlen);
int nk_dgram_fionread(struct nk_sock *sk, int fd, int *val);
int nk_dgram_pending_error(struct nk_sock *sk, int fd);
bool nk_dgram_error_pending(int fd);
size_t nk_iov_total(const struct iovec *iov, int cnt);

/* shim.c */
void nk_set_addr(struct sockaddr_storage *ss, socklen_t *len, const struct nk_addr *na,
		 int domain);

/* exec.c */
void nk_exec_restore(void);
void nk_scm_export(const struct msghdr *msg);	/* before sending SCM_RIGHTS */
void nk_scm_import(struct msghdr *msg);		/* after receiving them */

/* transport.c */
int nk_transport_open(void);
pid_t nk_pid(void);
void nks_epfd_used(int epfd);	/* it holds a registration of one of ours */
void nks_epfd_closed(int epfd);	/* drop the registrations it held */	/* getpid(), cached (informational uses only) */
int nk_transport_open_data(int sflags);	/* SOCK_CLOEXEC, SOCK_NONBLOCK */
/* blocking stream to the host, CLOEXEC */
int nk_send_all(int fd, const void *buf, size_t len);
int nk_recv_all(int fd, void *buf, size_t len);
int nk_msg_send(int fd, uint8_t op, uint32_t seq, const void *body, size_t len);
/* Read one host->guest message of op into body (exactly its size).
 * Returns the header err (>= 0) or -errno for a transport/protocol error. */
int nk_msg_recv(int fd, uint8_t op, void *body, size_t len);
int nk_hello(int fd, const struct nk_hello_req *req, struct nk_hello_rep *rep);
/* One request/reply on the control channel; returns 0 or -errno. */
/* One request/reply on the control channel to NSM instance nsm (a socket's
 * sk->nsm); returns 0 or -errno (-ECONNRESET: that instance is gone). */
int nk_ctl_call(uint32_t nsm, uint8_t op, const void *req, size_t reqlen, void *rep,
		size_t replen);
/* The same, giving up after timeout_ms (-ETIMEDOUT), reconnect included. */
int nk_ctl_call_timeout(uint32_t nsm, uint8_t op, const void *req, size_t reqlen, void *rep,
			size_t replen, int timeout_ms);
int nk_ctl_post_opt(uint32_t nsm, const struct nk_opt_req *req);
bool nk_transport_is_unix(void);
void nk_ctl_atfork_prepare(void);
void nk_ctl_atfork_parent(void);
void nk_ctl_atfork_child(void);
/* CLOCK_MONOTONIC in ms. */
int64_t nk_mono_ms(void);
int64_t nk_mono_ns(void);
/* Descriptor numbers in [first, last] were closed or replaced. */
void nk_ctl_fd_gone(int first, int last);

/* sock.c operations used by poll.c */
/* Try to read the CONNECTED record.  Returns 1 done (connected or failed:
 * see state/pending_err), 0 still pending, or -errno. */
int nks_finish_connect(struct nk_sock *sk, int fd, int timeout_ms);
void nks_epoll_restore(struct nk_sock *sk);

#endif /* NK_GUEST_H */
