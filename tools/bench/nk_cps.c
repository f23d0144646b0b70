// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nk_cps: the connection workloads of the benchmark (tools/bench.sh).
 *
 *   nk_cps serve [-H] PORT               accept on PORT (v4 and v6); close each
 *                                        connection at once, or with -H hold
 *                                        it until the peer closes
 *   nk_cps connect [-t N] ADDR PORT SECS N threads (default 1) each open a
 *                                        connection, wait for the server's
 *                                        close, close, and again, for SECS
 *   nk_cps hold ADDR PORT N SECS         open N connections, keep them idle
 *                                        for SECS, close them
 *
 * The client modes are plain blocking socket calls so that the same
 * dynamically linked binary runs on the guest's own stack and under nk-run.
 * The server closes first, so TIME_WAIT stays on the server side and a
 * client can open connections for many seconds without running out of
 * ephemeral ports.  Results go to stdout as one "key=value ..." line.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

struct client {
	struct addrinfo *ai;
	double deadline;
	unsigned long conns;
	unsigned long errors;
	int first_err;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: nk_cps serve [-H] PORT\n"
		"       nk_cps connect [-t THREADS] ADDR PORT SECS\n"
		"       nk_cps hold ADDR PORT N SECS\n");
	exit(2);
}

static int resolve(const char *host, const char *port, struct addrinfo **ai)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	int ret;

	ret = getaddrinfo(host, port, &hints, ai);
	if (ret) {
		fprintf(stderr, "nk_cps: %s:%s: %s\n", host, port, gai_strerror(ret));
		return -EINVAL;
	}
	return 0;
}

/* One connection: connect, wait for the server's FIN, close. */
static int one_conn(const struct addrinfo *ai)
{
	char buf[64];
	ssize_t n;
	int fd, ret = 0;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		ret = -errno;
		goto out_close;
	}
	do {
		n = read(fd, buf, sizeof(buf));
	} while (n > 0 || (n < 0 && errno == EINTR));
	if (n < 0)
		ret = -errno;
out_close:
	close(fd);
	return ret;
}

static void *client_thread(void *arg)
{
	struct client *c = arg;
	int ret;

	while (now() < c->deadline) {
		ret = one_conn(c->ai);
		if (!ret) {
			c->conns++;
			continue;
		}
		if (!c->errors++)
			c->first_err = -ret;
		usleep(1000);	/* do not spin on a refusing server */
	}
	return NULL;
}

static int do_connect(int threads, const char *host, const char *port, double secs)
{
	struct client c[MAX_THREADS] = {};
	pthread_t tid[MAX_THREADS];
	unsigned long conns = 0, errors = 0;
	struct addrinfo *ai;
	double t0, t1;
	int i, first_err = 0, ret;

	ret = resolve(host, port, &ai);
	if (ret)
		return ret;
	t0 = now();
	for (i = 0; i < threads; i++) {
		c[i].ai = ai;
		c[i].deadline = t0 + secs;
		ret = pthread_create(&tid[i], NULL, client_thread, &c[i]);
		if (ret) {
			threads = i;
			ret = -ret;
			break;
		}
	}
	for (i = 0; i < threads; i++) {
		pthread_join(tid[i], NULL);
		conns += c[i].conns;
		errors += c[i].errors;
		if (!first_err)
			first_err = c[i].first_err;
	}
	t1 = now();
	printf("cps=%.1f conns=%lu errors=%lu secs=%.3f threads=%d first_error=%s\n",
	       conns / (t1 - t0), conns, errors, t1 - t0, threads,
	       first_err ? strerror(first_err) : "none");
	freeaddrinfo(ai);
	return ret ? ret : (conns ? 0 : -EIO);
}

static int do_hold(const char *host, const char *port, int n, double secs)
{
	struct addrinfo *ai;
	int *fds, i, open_n = 0, ret;

	ret = resolve(host, port, &ai);
	if (ret)
		return ret;
	fds = calloc(n, sizeof(*fds));
	if (!fds) {
		ret = -ENOMEM;
		goto out_free_ai;
	}
	for (i = 0; i < n; i++) {
		fds[i] = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[i] < 0 || connect(fds[i], ai->ai_addr, ai->ai_addrlen)) {
			ret = -errno;
			fprintf(stderr, "nk_cps: connection %d: %s\n", i, strerror(errno));
			if (fds[i] >= 0)
				close(fds[i]);
			break;
		}
		open_n++;
	}
	printf("held=%d\n", open_n);
	fflush(stdout);
	if (!ret) {
		struct timespec ts = { .tv_sec = (time_t)secs,
				       .tv_nsec = (long)((secs - (time_t)secs) * 1e9) };

		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	for (i = 0; i < open_n; i++)
		close(fds[i]);
	free(fds);
out_free_ai:
	freeaddrinfo(ai);
	return ret;
}

static int do_serve(const char *port, int hold)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT };
	struct epoll_event ev = { .events = EPOLLIN }, evs[64];
	int lfd, efd, one = 1, zero = 0, i, n, fd, ret = 0;
	char buf[256];

	sa.sin6_port = htons(atoi(port));
	lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 4096)) {
		ret = -errno;
		goto out_close_lfd;
	}
	efd = epoll_create1(EPOLL_CLOEXEC);
	if (efd < 0) {
		ret = -errno;
		goto out_close_lfd;
	}
	ev.data.fd = lfd;
	if (epoll_ctl(efd, EPOLL_CTL_ADD, lfd, &ev)) {
		ret = -errno;
		goto out_close_efd;
	}
	for (;;) {
		n = epoll_wait(efd, evs, 64, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.fd != lfd) {
				/* a held connection: gone when the peer closes */
				fd = evs[i].data.fd;
				if (read(fd, buf, sizeof(buf)) <= 0) {
					epoll_ctl(efd, EPOLL_CTL_DEL, fd, NULL);
					close(fd);
				}
				continue;
			}
			/* level-triggered: one accept per wakeup */
			fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			ev.data.fd = fd;
			if (!hold || epoll_ctl(efd, EPOLL_CTL_ADD, fd, &ev))
				close(fd);
		}
	}
out_close_efd:
	close(efd);
out_close_lfd:
	close(lfd);
	return ret;
}

int main(int argc, char **argv)
{
	int threads = 1, hold = 0, ret;

	if (argc < 3)
		usage();
	if (!strcmp(argv[1], "serve")) {
		if (argc == 4 && !strcmp(argv[2], "-H"))
			hold = 1;
		else if (argc != 3)
			usage();
		ret = do_serve(argv[argc - 1], hold);
	} else if (!strcmp(argv[1], "connect")) {
		argv++;
		argc--;
		if (argc > 2 && !strcmp(argv[1], "-t")) {
			threads = atoi(argv[2]);
			argv += 2;
			argc -= 2;
		}
		if (argc != 4 || threads < 1 || threads > MAX_THREADS)
			usage();
		ret = do_connect(threads, argv[1], argv[2], atof(argv[3]));
	} else if (!strcmp(argv[1], "hold")) {
		if (argc != 6)
			usage();
		ret = do_hold(argv[2], argv[3], atoi(argv[4]), atof(argv[5]));
	} else {
		usage();
	}
	if (ret)
		fprintf(stderr, "nk_cps: %s\n", strerror(-ret));
	return ret ? 1 : 0;
}
