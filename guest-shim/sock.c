// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libnkguest: the table of NetKernel sockets, indexed by fd.
 *
 * Two levels (1024 chunks of 1024 slots) so that a lookup never races with
 * a resize: chunks are allocated on first use and never freed.  A slot
 * holds a reference to a struct nk_sock; dup() shares it, close() drops it.
 * Lookups that find an empty slot take no lock at all, so programs pay
 * nothing for fds that are not NetKernel sockets.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nkguest.h"

#define CHUNK_SHIFT	10
#define CHUNK_SIZE	(1 << CHUNK_SHIFT)
#define NCHUNKS		1024

static struct nk_sock **chunks[NCHUNKS];
static pthread_mutex_t tab_lock = PTHREAD_MUTEX_INITIALIZER;
int nk_connecting;
int nk_udp_connected;

static struct nk_sock **slot(int fd, bool create)
{
	unsigned int c = (unsigned int)fd >> CHUNK_SHIFT;
	struct nk_sock **chunk;

	if (fd < 0 || c >= NCHUNKS)
		return NULL;
	chunk = __atomic_load_n(&chunks[c], __ATOMIC_ACQUIRE);
	if (!chunk && create) {
		chunk = calloc(CHUNK_SIZE, sizeof(*chunk));
		if (!chunk)
			return NULL;
		__atomic_store_n(&chunks[c], chunk, __ATOMIC_RELEASE);
	}
	return chunk ? &chunk[fd & (CHUNK_SIZE - 1)] : NULL;
}

bool nks_fd_tracked(int fd)
{
	struct nk_sock **s = slot(fd, false);

	return s && __atomic_load_n(s, __ATOMIC_RELAXED);
}

/* Does fd still name sk (not closed, not replaced by another socket)? */
bool nks_fd_is(int fd, const struct nk_sock *sk)
{
	struct nk_sock **s;
	bool same;

	pthread_mutex_lock(&tab_lock);
	s = slot(fd, false);
	same = s && *s == sk;
	pthread_mutex_unlock(&tab_lock);
	return same;
}

struct nk_sock *nks_get(int fd)
{
	struct nk_sock **s, *sk = NULL;

	if (!nks_fd_tracked(fd))
		return NULL;
	pthread_mutex_lock(&tab_lock);
	s = slot(fd, false);
	if (s && *s) {
		sk = *s;
		sk->refs++;
	}
	pthread_mutex_unlock(&tab_lock);
	return sk;
}

static void sock_free(struct nk_sock *sk)
{
	if (sk->connect_counted)
		__atomic_sub_fetch(&nk_connecting, 1, __ATOMIC_RELAXED);
	if (sk->type == SOCK_DGRAM && sk->state == NKS_CONNECTED)
		__atomic_sub_fetch(&nk_udp_connected, 1, __ATOMIC_RELAXED);
	if (sk->quiet_peer > 0)
		nk_real.close(sk->quiet_peer);
	pthread_mutex_destroy(&sk->lock);
	pthread_mutex_destroy(&sk->rlock);
	pthread_mutex_destroy(&sk->wlock);
	free(sk->more);
	free(sk);
}

void nks_put(struct nk_sock *sk)
{
	bool last;

	if (!sk)
		return;
	pthread_mutex_lock(&tab_lock);
	last = --sk->refs == 0;
	pthread_mutex_unlock(&tab_lock);
	if (last)
		sock_free(sk);
}

struct nk_sock *nks_new(int domain, int type)
{
	struct nk_sock *sk = calloc(1, sizeof(*sk));

	if (!sk)
		return NULL;
	pthread_mutex_init(&sk->lock, NULL);
	pthread_mutex_init(&sk->rlock, NULL);
	pthread_mutex_init(&sk->wlock, NULL);
	sk->type = type;
	sk->refs = 1;	/* the caller's */
	sk->state = NKS_FRESH;
	sk->domain = domain;
	sk->eof_err = -1;
	return sk;
}

int nks_install(int fd, struct nk_sock *sk)
{
	struct nk_sock **s, *old;

	pthread_mutex_lock(&tab_lock);
	s = slot(fd, true);
	if (!s) {
		pthread_mutex_unlock(&tab_lock);
		return -EMFILE;
	}
	old = *s;
	sk->refs++;
	__atomic_store_n(s, sk, __ATOMIC_RELEASE);
	if (old && --old->refs == 0) {
		pthread_mutex_unlock(&tab_lock);
		sock_free(old);
		return 0;
	}
	pthread_mutex_unlock(&tab_lock);
	return 0;
}

/*
 * Epoll fds that hold a registration of one of our sockets (a bitmap by fd
 * number; fds past its end are always checked).  When one is closed its
 * registrations are dropped: a later promotion must not re-add a socket to
 * whatever epoll set gets that number next.
 */
#define EPFD_BITS	65536
static uint8_t epfd_bits[EPFD_BITS / 8];

void nks_epfd_used(int epfd)
{
	if (epfd >= 0 && epfd < EPFD_BITS)
		__atomic_fetch_or(&epfd_bits[epfd / 8], (uint8_t)(1u << (epfd % 8)),
				  __ATOMIC_RELAXED);
}

void nks_epfd_closed(int epfd)
{
	struct nk_sock *found[64];
	int c, i, n, k, j;

	if (epfd < 0)
		return;
	if (epfd < EPFD_BITS) {
		uint8_t bit = (uint8_t)(1u << (epfd % 8));

		if (!(__atomic_fetch_and(&epfd_bits[epfd / 8], (uint8_t)~bit, __ATOMIC_RELAXED) &
		      bit))
			return;
	}
	/* Sockets are locked one at a time, not under tab_lock (the order
	 * elsewhere is sk->lock, then tab_lock); batches of 64. */
	for (c = 0; c < NCHUNKS; c++) {
		for (i = 0; i < CHUNK_SIZE;) {
			n = 0;
			pthread_mutex_lock(&tab_lock);
			if (!chunks[c]) {
				pthread_mutex_unlock(&tab_lock);
				break;
			}
			for (; i < CHUNK_SIZE && n < 64; i++) {
				struct nk_sock *sk = chunks[c][i];

				if (!sk || !sk->nregs)
					continue;
				for (k = 0; k < n && found[k] != sk; k++)
					;
				if (k < n)
					continue;
				sk->refs++;
				found[n++] = sk;
			}
			pthread_mutex_unlock(&tab_lock);
			for (k = 0; k < n; k++) {
				struct nk_sock *sk = found[k];

				pthread_mutex_lock(&sk->lock);
				for (j = 0; j < sk->nregs;) {
					if (sk->regs[j].epfd == epfd)
						sk->regs[j] = sk->regs[--sk->nregs];
					else
						j++;
				}
				pthread_mutex_unlock(&sk->lock);
				nks_put(sk);
			}
		}
	}
}

/* Drop the registrations a closed fd had in epoll sets. */
static void forget_regs(struct nk_sock *sk, int fd)
{
	int i;

	for (i = 0; i < sk->nregs;) {
		if (sk->regs[i].fd == fd)
			sk->regs[i] = sk->regs[--sk->nregs];
		else
			i++;
	}
}

void nks_forget(int fd)
{
	struct nk_sock **s, *old;

	if (!nks_fd_tracked(fd))
		return;
	pthread_mutex_lock(&tab_lock);
	s = slot(fd, false);
	old = s ? *s : NULL;
	if (s)
		__atomic_store_n(s, NULL, __ATOMIC_RELEASE);
	if (old) {
		forget_regs(old, fd);
		if (--old->refs == 0) {
			pthread_mutex_unlock(&tab_lock);
			sock_free(old);
			return;
		}
	}
	pthread_mutex_unlock(&tab_lock);
}

void nks_dup(int oldfd, int newfd)
{
	struct nk_sock *sk;

	if (oldfd == newfd)
		return;
	sk = nks_get(oldfd);
	if (!sk) {
		nks_forget(newfd);
		return;
	}
	nks_install(newfd, sk);
	nks_put(sk);
}

void nks_set_state(struct nk_sock *sk, enum nks_state st)
{
	if (sk->type == SOCK_DGRAM && (st == NKS_CONNECTED) != (sk->state == NKS_CONNECTED))
		__atomic_add_fetch(&nk_udp_connected, st == NKS_CONNECTED ? 1 : -1,
				   __ATOMIC_RELAXED);
	if (st == NKS_CONNECTING && !sk->connect_counted) {
		sk->connect_counted = true;
		__atomic_add_fetch(&nk_connecting, 1, __ATOMIC_RELAXED);
	} else if (st != NKS_CONNECTING && sk->connect_counted) {
		sk->connect_counted = false;
		__atomic_sub_fetch(&nk_connecting, 1, __ATOMIC_RELAXED);
	}
	sk->state = st;
}

int nks_snapshot(bool (*pred)(const struct nk_sock *), struct nk_sock **out, int *fds, int max);

static bool is_connecting(const struct nk_sock *sk)
{
	return sk->state == NKS_CONNECTING;
}

static bool is_udp_connected(const struct nk_sock *sk)
{
	return sk->type == SOCK_DGRAM && sk->state == NKS_CONNECTED;
}

int nks_connecting_snapshot(struct nk_sock **out, int *fds, int max)
{
	return nks_snapshot(is_connecting, out, fds, max);
}

int nks_udp_snapshot(struct nk_sock **out, int *fds, int max)
{
	return nks_snapshot(is_udp_connected, out, fds, max);
}

int nks_snapshot(bool (*pred)(const struct nk_sock *), struct nk_sock **out, int *fds, int max)
{
	int c, i, n = 0;

	pthread_mutex_lock(&tab_lock);
	for (c = 0; c < NCHUNKS && n < max; c++) {
		struct nk_sock **chunk = chunks[c];

		if (!chunk)
			continue;
		for (i = 0; i < CHUNK_SIZE && n < max; i++) {
			struct nk_sock *sk = chunk[i];

			if (sk && pred(sk)) {
				sk->refs++;
				out[n] = sk;
				fds[n] = (c << CHUNK_SHIFT) | i;
				n++;
			}
		}
	}
	pthread_mutex_unlock(&tab_lock);
	return n;
}

void nks_atfork_prepare(void)
{
	pthread_mutex_lock(&tab_lock);
}

void nks_atfork_parent(void)
{
	pthread_mutex_unlock(&tab_lock);
}

/* This process's pid for HELLO's informational field, without a system
 * call each time; forgotten in a fork child. */
static pid_t cached_pid;

pid_t nk_pid(void)
{
	pid_t p = __atomic_load_n(&cached_pid, __ATOMIC_RELAXED);

	if (!p) {
		p = getpid();
		__atomic_store_n(&cached_pid, p, __ATOMIC_RELAXED);
	}
	return p;
}

void nks_atfork_child(void)
{
	int c, i;

	cached_pid = 0;

	/* Another thread of the parent may have held a socket's locks (a
	 * blocking connect or receive): the child has only this thread. */
	for (c = 0; c < NCHUNKS; c++) {
		struct nk_sock **chunk = chunks[c];

		if (!chunk)
			continue;
		for (i = 0; i < CHUNK_SIZE; i++) {
			struct nk_sock *sk = chunk[i];

			if (!sk)
				continue;
			pthread_mutex_init(&sk->lock, NULL);
			pthread_mutex_init(&sk->rlock, NULL);
			pthread_mutex_init(&sk->wlock, NULL);
		}
	}
	pthread_mutex_unlock(&tab_lock);
}

int nks_fds_of(const struct nk_sock *sk, int *out, int max)
{
	int c, i, n = 0;

	pthread_mutex_lock(&tab_lock);
	for (c = 0; c < NCHUNKS && n < max; c++) {
		struct nk_sock **chunk = chunks[c];

		if (!chunk)
			continue;
		for (i = 0; i < CHUNK_SIZE && n < max; i++)
			if (chunk[i] == sk)
				out[n++] = (c << CHUNK_SHIFT) | i;
	}
	pthread_mutex_unlock(&tab_lock);
	return n;
}
