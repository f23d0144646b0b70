// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libnkguest: readiness while a non-blocking connect is in flight.
 *
 * A guest stream is writable as soon as it exists, but a TCP socket only
 * reports POLLOUT once its handshake is done (and POLLERR|POLLHUP when it
 * failed).  While a NetKernel socket is connecting, poll/ppoll/select/
 * pselect/epoll wait for POLLIN instead (the NSM's CONNECTED record), read
 * the record, and report what Linux would have: POLLOUT, or POLLERR and
 * POLLHUP.  A blackholed destination therefore shows no POLLOUT, exactly
 * as on Linux.
 *
 * When no socket is connecting (the normal case) every function here is a
 * straight call to libc after one atomic load.  epoll_ctl also remembers
 * the registrations of NetKernel sockets so a socket that is promoted after
 * being added to an epoll set (nginx does that for upstreams) is added to
 * it again.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include "nkguest.h"

#define MAX_CONNECTING	256

static bool any_connecting(void)
{
	return nk_enabled() && __atomic_load_n(&nk_connecting, __ATOMIC_RELAXED) > 0;
}

static bool any_udp_connected(void)
{
	return nk_enabled() && __atomic_load_n(&nk_udp_connected, __ATOMIC_RELAXED) > 0;
}

/*
 * A connected UDP socket whose next frame is an error frame (an ICMP error
 * the NSM's socket reported) is readable as a stream, but Linux reports a
 * pending socket error as POLLERR, not POLLIN.
 */
static void udp_poll_fixup(struct pollfd *fds, nfds_t n)
{
	nfds_t i;

	for (i = 0; i < n; i++) {
		struct nk_sock *sk;

		if (!(fds[i].revents & POLLIN) || !nks_fd_tracked(fds[i].fd))
			continue;
		sk = nks_get(fds[i].fd);
		if (sk && sk->type == SOCK_DGRAM && sk->state == NKS_CONNECTED &&
		    nk_dgram_error_pending(fds[i].fd))
			fds[i].revents = (fds[i].revents & ~(POLLIN | POLLRDNORM)) | POLLERR;
		nks_put(sk);
	}
}

static void udp_epoll_fixup(int epfd, struct epoll_event *evs, int n)
{
	struct nk_sock *sks[MAX_CONNECTING];
	int fds[MAX_CONNECTING];
	int ns, i, j, k;

	ns = nks_udp_snapshot(sks, fds, MAX_CONNECTING);
	for (i = 0; i < n; i++) {
		if (!(evs[i].events & EPOLLIN))
			continue;
		for (j = 0; j < ns; j++) {
			for (k = 0; k < sks[j]->nregs; k++) {
				struct nks_epreg *r = &sks[j]->regs[k];

				if (r->epfd != epfd || r->ev.data.u64 != evs[i].data.u64)
					continue;
				if (nk_dgram_error_pending(r->fd))
					evs[i].events = (evs[i].events & ~(EPOLLIN | EPOLLRDNORM)) |
							EPOLLERR;
				goto next;
			}
		}
next:;
	}
	for (j = 0; j < ns; j++)
		nks_put(sks[j]);
}

static int remaining(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - nk_mono_ms();
	return left > 0 ? (int)left : 0;
}

static bool has_data(int fd)
{
	char c;

	return nk_real.recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
}

/*
 * Translate readiness of a connecting socket.  want: the events the
 * application asked for.  Returns the events to report (0: none yet).
 */
static unsigned int connecting_events(struct nk_sock *sk, int fd, unsigned int want,
				      bool is_epoll)
{
	unsigned int out = 0;
	unsigned int in_ev = is_epoll ? EPOLLIN : POLLIN;
	unsigned int out_ev = is_epoll ? EPOLLOUT : POLLOUT;
	unsigned int err_ev = is_epoll ? (EPOLLERR | EPOLLHUP) : (POLLERR | POLLHUP);
	unsigned int rdhup = is_epoll ? EPOLLRDHUP : POLLRDHUP;
	int r;

	pthread_mutex_lock(&sk->lock);
	r = nks_finish_connect(sk, fd, 0);
	if (r == 1 && sk->state == NKS_CONNECTED) {
		out = want & out_ev;
		if ((want & in_ev) && has_data(fd))
			out |= in_ev;
	} else if (r == 1 || r < 0) {
		/* Failed: Linux reports everything on a closed socket. */
		out = err_ev | (want & (in_ev | out_ev | rdhup));
	}
	pthread_mutex_unlock(&sk->lock);
	return out;
}

/* ---- poll --------------------------------------------------------------- */

static int poll_common(struct pollfd *fds, nfds_t n, int timeout, const sigset_t *sigmask,
		       bool is_ppoll, const struct timespec *ts)
{
	struct nk_sock *sks_local[64], **sks = sks_local;
	short want_local[64], *want = want_local;
	int idx_local[64], *idx = idx_local, nc = 0, r, t;
	int64_t deadline;
	nfds_t i;

	if (n > 64) {
		/* Every connecting socket must be translated, however many. */
		sks = malloc(n * sizeof(*sks));
		want = malloc(n * sizeof(*want));
		idx = malloc(n * sizeof(*idx));
		if (!sks || !want || !idx) {
			free(sks);
			free(want);
			free(idx);
			errno = ENOMEM;
			return -1;
		}
	}
	for (i = 0; i < n; i++) {
		struct nk_sock *sk = nks_fd_tracked(fds[i].fd) ? nks_get(fds[i].fd) : NULL;

		if (sk && sk->state == NKS_CONNECTING) {
			sks[nc] = sk;
			idx[nc] = i;
			want[nc] = fds[i].events;
			nc++;
		} else {
			nks_put(sk);
		}
	}
	if (!nc) {
		r = is_ppoll ? nk_real.ppoll(fds, n, ts, sigmask) : nk_real.poll(fds, n, timeout);
		goto out;
	}
	deadline = timeout < 0 ? -1 : nk_mono_ms() + timeout;
	for (;;) {
		for (t = 0; t < nc; t++)
			fds[idx[t]].events = (want[t] & ~POLLOUT) | POLLIN;
		t = remaining(deadline);
		if (is_ppoll) {
			struct timespec tts = { t / 1000, (t % 1000) * 1000000L };

			r = nk_real.ppoll(fds, n, t < 0 ? NULL : &tts, sigmask);
		} else {
			r = nk_real.poll(fds, n, t);
		}
		for (t = 0; t < nc; t++)
			fds[idx[t]].events = want[t];
		if (r <= 0)
			break;
		for (t = 0; t < nc; t++) {
			struct pollfd *p = &fds[idx[t]];
			short rev = p->revents;

			if (!rev || (rev & POLLNVAL))
				continue;
			p->revents = connecting_events(sks[t], p->fd, want[t], false);
			if (!p->revents)
				r--;
		}
		if (r > 0 || remaining(deadline) == 0)
			break;
	}
	for (t = 0; t < nc; t++)
		nks_put(sks[t]);
out:
	if (sks != sks_local) {
		int e = errno;

		free(sks);
		free(want);
		free(idx);
		errno = e;
	}
	return r;
}

NK_API int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	int r;

	nk_init();
	if (!any_connecting() && !any_udp_connected())
		return nk_real.poll(fds, n, timeout);
	r = poll_common(fds, n, timeout, NULL, false, NULL);
	if (r > 0 && any_udp_connected())
		udp_poll_fixup(fds, n);
	return r;
}

NK_API int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return poll(fds, n, timeout);
}

/*
 * A select/ppoll timeout as poll() milliseconds: rounded up (a 500 us wait
 * must not turn into a busy poll), capped at INT_MAX ms (about 24 days;
 * the emulated calls re-check their deadline), -1 for none, -2 for an
 * invalid one (EINVAL, as Linux says).
 */
static int timeout_ms(bool given, long long sec, long long frac, long long per_ms, long long max_frac)
{
	long long ms;

	if (!given)
		return -1;
	if (sec < 0 || frac < 0 || frac >= max_frac)
		return -2;
	if (sec > (long long)INT_MAX / 1000)
		return INT_MAX;
	ms = sec * 1000 + (frac + per_ms - 1) / per_ms;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

NK_API int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts,
		 const sigset_t *sigmask)
{
	int timeout, r;

	nk_init();
	if (!any_connecting() && !any_udp_connected())
		return nk_real.ppoll(fds, n, ts, sigmask);
	timeout = timeout_ms(ts, ts ? ts->tv_sec : 0, ts ? ts->tv_nsec : 0, 1000000, 1000000000);
	if (timeout == -2) {
		errno = EINVAL;
		return -1;
	}
	r = poll_common(fds, n, timeout, sigmask, true, ts);
	if (r > 0 && any_udp_connected())
		udp_poll_fixup(fds, n);
	return r;
}

/* ppoll() in a program built with _FORTIFY_SOURCE (Debian's default) */
NK_API int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
		       const sigset_t *sigmask, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return ppoll(fds, n, ts, sigmask);
}

/* ---- select ------------------------------------------------------------- */

/* select() and pselect() with a connecting socket in a set go through
 * poll_common; fd_sets are addressed as bit arrays, so descriptors above
 * FD_SETSIZE work when the application sized its sets for them. */
#define BITS_PER_LONG	(8 * sizeof(long))
#define SET_ISSET(set, fd) ((((long *)(set))[(fd) / BITS_PER_LONG] >> ((fd) % BITS_PER_LONG)) & 1)
#define SET_SET(set, fd) (((long *)(set))[(fd) / BITS_PER_LONG] |= 1L << ((fd) % BITS_PER_LONG))

static bool sets_have_connecting(int nfds, fd_set *r, fd_set *w, fd_set *e)
{
	int fd;

	for (fd = 0; fd < nfds; fd++) {
		struct nk_sock *sk;
		bool c;

		if (!((r && SET_ISSET(r, fd)) || (w && SET_ISSET(w, fd)) ||
		      (e && SET_ISSET(e, fd))) || !nks_fd_tracked(fd))
			continue;
		sk = nks_get(fd);
		c = sk && sk->state == NKS_CONNECTING;
		nks_put(sk);
		if (c)
			return true;
	}
	return false;
}

static int select_via_poll(int nfds, fd_set *r, fd_set *w, fd_set *e, int timeout,
			   const sigset_t *sigmask, bool is_p)
{
	struct pollfd *pfds;
	size_t setbytes = ((nfds + BITS_PER_LONG - 1) / BITS_PER_LONG) * sizeof(long);
	int fd, n = 0, ret, i;

	pfds = calloc(nfds ? nfds : 1, sizeof(*pfds));
	if (!pfds) {
		errno = ENOMEM;
		return -1;
	}
	for (fd = 0; fd < nfds; fd++) {
		short ev = 0;

		if (r && SET_ISSET(r, fd))
			ev |= POLLIN;
		if (w && SET_ISSET(w, fd))
			ev |= POLLOUT;
		if (e && SET_ISSET(e, fd))
			ev |= POLLPRI;
		if (ev) {
			pfds[n].fd = fd;
			pfds[n].events = ev;
			n++;
		}
	}
	if (is_p) {
		struct timespec ts = { timeout / 1000, (timeout % 1000) * 1000000L };

		ret = poll_common(pfds, n, timeout, sigmask, true, timeout < 0 ? NULL : &ts);
	} else {
		ret = poll_common(pfds, n, timeout, NULL, false, NULL);
	}
	if (ret < 0)
		goto out;
	for (i = 0; i < n; i++) {
		if (pfds[i].revents & POLLNVAL) {
			errno = EBADF;
			ret = -1;
			goto out;
		}
	}
	if (r)
		memset(r, 0, setbytes);
	if (w)
		memset(w, 0, setbytes);
	if (e)
		memset(e, 0, setbytes);
	ret = 0;
	for (i = 0; i < n; i++) {
		short rev = pfds[i].revents;

		fd = pfds[i].fd;
		if (r && (pfds[i].events & POLLIN) && (rev & (POLLIN | POLLHUP | POLLERR))) {
			SET_SET(r, fd);
			ret++;
		}
		if (w && (pfds[i].events & POLLOUT) && (rev & (POLLOUT | POLLERR))) {
			SET_SET(w, fd);
			ret++;
		}
		if (e && (pfds[i].events & POLLPRI) && (rev & POLLPRI)) {
			SET_SET(e, fd);
			ret++;
		}
	}
out:
	free(pfds);
	return ret;
}

NK_API int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
	int64_t t0, left;
	int timeout, ret;

	nk_init();
	if (!any_connecting() || !sets_have_connecting(nfds, r, w, e))
		return nk_real.select(nfds, r, w, e, tv);
	timeout = timeout_ms(tv, tv ? tv->tv_sec : 0, tv ? tv->tv_usec : 0, 1000, 1000000);
	if (timeout == -2) {
		errno = EINVAL;
		return -1;
	}
	t0 = nk_mono_ms();
	ret = select_via_poll(nfds, r, w, e, timeout, NULL, false);
	if (tv && timeout >= 0) {
		/* Linux leaves the time not slept in *tv. */
		left = timeout - (nk_mono_ms() - t0);
		if (left < 0 || ret == 0)
			left = 0;
		tv->tv_sec = left / 1000;
		tv->tv_usec = (left % 1000) * 1000;
	}
	return ret;
}

NK_API int pselect(int nfds, fd_set *r, fd_set *w, fd_set *e, const struct timespec *ts,
		   const sigset_t *sigmask)
{
	int timeout;

	nk_init();
	if (!any_connecting() || !sets_have_connecting(nfds, r, w, e))
		return nk_real.pselect(nfds, r, w, e, ts, sigmask);
	timeout = timeout_ms(ts, ts ? ts->tv_sec : 0, ts ? ts->tv_nsec : 0, 1000000, 1000000000);
	if (timeout == -2) {
		errno = EINVAL;
		return -1;
	}
	return select_via_poll(nfds, r, w, e, timeout, sigmask, true);
}

/* ---- epoll -------------------------------------------------------------- */

NK_API int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct epoll_event kev;
	struct nk_sock *sk;
	int ret, i;

	nk_init();
	sk = nk_enabled() && nks_fd_tracked(fd) ? nks_get(fd) : NULL;
	if (!sk || sk->state == NKS_LOCAL) {
		nks_put(sk);
		return nk_real.epoll_ctl(epfd, op, fd, ev);
	}
	pthread_mutex_lock(&sk->lock);
	if (op != EPOLL_CTL_DEL && ev) {
		kev = *ev;
		if (sk->state == NKS_CONNECTING && (kev.events & EPOLLOUT))
			kev.events = (kev.events & ~EPOLLOUT) | EPOLLIN;
		ret = nk_real.epoll_ctl(epfd, op, fd, &kev);
	} else {
		ret = nk_real.epoll_ctl(epfd, op, fd, ev);
	}
	if (ret == 0) {
		for (i = 0; i < sk->nregs; i++)
			if (sk->regs[i].epfd == epfd && sk->regs[i].fd == fd)
				break;
		if (op == EPOLL_CTL_DEL || !ev) {
			if (op == EPOLL_CTL_DEL && i < sk->nregs)
				sk->regs[i] = sk->regs[--sk->nregs];
		} else if (i < sk->nregs) {
			sk->regs[i].ev = *ev;
		} else if (sk->nregs < NKS_EPREGS) {
			sk->regs[sk->nregs++] = (struct nks_epreg){ epfd, fd, *ev };
			nks_epfd_used(epfd);
		} else {
			nk_logf("fd %d is in more than %d epoll sets; not tracked in %d", fd,
				NKS_EPREGS, epfd);
		}
	}
	pthread_mutex_unlock(&sk->lock);
	nks_put(sk);
	return ret;
}

/*
 * A connecting socket's registration fired (the CONNECTED record arrived).
 * On success the record is consumed and the registration restored to what
 * the application asked for; the kernel then reports the socket's real
 * readiness on the next wait (EPOLLOUT once, even edge-triggered, and
 * EPOLLIN when data follows), so nothing is reported from here.  A failed
 * connect is reported as Linux does: EPOLLERR|EPOLLHUP and the rest.
 */
static unsigned int epoll_connecting_events(struct nk_sock *sk, int fd, unsigned int want,
					    bool *mine)
{
	unsigned int out = 0;
	int r;

	pthread_mutex_lock(&sk->lock);
	/* settled by an earlier event of this batch (epoll reports a
	 * descriptor once per wait): this one is another's */
	if (sk->state != NKS_CONNECTING) {
		*mine = false;
		pthread_mutex_unlock(&sk->lock);
		return 0;
	}
	r = nks_finish_connect(sk, fd, 0);
	/* nothing settled: the event was another descriptor's that the
	 * program registered with the same data (the kernel does not say
	 * whose), not this socket's */
	*mine = r != 0;
	if ((r == 1 && sk->state != NKS_CONNECTED) || r < 0)
		out = EPOLLERR | EPOLLHUP | (want & (EPOLLIN | EPOLLOUT | EPOLLRDHUP));
	pthread_mutex_unlock(&sk->lock);
	return out;
}

/* Rewrite the events of connecting sockets; returns the new count. */
static int epoll_fixup(int epfd, struct epoll_event *evs, int n)
{
	int max = __atomic_load_n(&nk_connecting, __ATOMIC_RELAXED) + 16;
	struct nk_sock **sks = malloc(max * sizeof(*sks));
	int *fds = malloc(max * sizeof(*fds));
	int ns, i, j, k, out = 0;

	if (!sks || !fds) {
		free(sks);
		free(fds);
		return n;	/* no memory: report what the kernel said */
	}
	ns = nks_connecting_snapshot(sks, fds, max);
	for (i = 0; i < n; i++) {
		bool keep = true;

		for (j = 0; j < ns; j++) {
			struct nk_sock *sk = sks[j];

			for (k = 0; k < sk->nregs; k++) {
				struct nks_epreg *r = &sk->regs[k];
				unsigned int e;
				bool mine;

				if (r->epfd != epfd || r->ev.data.u64 != evs[i].data.u64)
					continue;
				e = epoll_connecting_events(sk, r->fd, r->ev.events, &mine);
				if (!mine)
					continue;	/* perhaps another socket's */
				evs[i].events = e;
				keep = e != 0;
				goto next;
			}
		}
next:
		if (keep)
			evs[out++] = evs[i];
	}
	for (j = 0; j < ns; j++)
		nks_put(sks[j]);
	free(sks);
	free(fds);
	return out;
}

static int epoll_common(int epfd, struct epoll_event *evs, int max, int timeout,
			const sigset_t *sigmask, bool is_p)
{
	int64_t deadline = timeout < 0 ? -1 : nk_mono_ms() + timeout;
	int n, t = timeout;

	for (;;) {
		n = is_p ? nk_real.epoll_pwait(epfd, evs, max, t, sigmask)
			 : nk_real.epoll_wait(epfd, evs, max, t);
		if (n > 0 && any_udp_connected())
			udp_epoll_fixup(epfd, evs, n);
		if (n <= 0 || !any_connecting())
			return n;
		n = epoll_fixup(epfd, evs, n);
		t = remaining(deadline);
		if (n > 0 || t == 0)
			return n;
	}
}

NK_API int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
	nk_init();
	if (!any_connecting() && !any_udp_connected())
		return nk_real.epoll_wait(epfd, evs, max, timeout);
	return epoll_common(epfd, evs, max, timeout, NULL, false);
}

NK_API int epoll_pwait(int epfd, struct epoll_event *evs, int max, int timeout,
		       const sigset_t *sigmask)
{
	nk_init();
	if (!any_connecting() && !any_udp_connected())
		return nk_real.epoll_pwait(epfd, evs, max, timeout, sigmask);
	return epoll_common(epfd, evs, max, timeout, sigmask, true);
}

/* epoll_pwait2(): a timespec timeout; while a socket connects, the same
 * as epoll_pwait() with it rounded up to milliseconds. */
NK_API int epoll_pwait2(int epfd, struct epoll_event *evs, int max, const struct timespec *ts,
			const sigset_t *sigmask)
{
	int timeout;

	nk_init();
	if (!any_connecting() && !any_udp_connected()) {
		if (nk_real.epoll_pwait2)
			return nk_real.epoll_pwait2(epfd, evs, max, ts, sigmask);
		errno = ENOSYS;
		return -1;
	}
	timeout = timeout_ms(ts, ts ? ts->tv_sec : 0, ts ? ts->tv_nsec : 0, 1000000, 1000000000);
	if (timeout == -2) {
		errno = EINVAL;
		return -1;
	}
	return epoll_common(epfd, evs, max, timeout, sigmask, true);
}
