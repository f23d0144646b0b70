// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * guest-vsock-test: the guest half of the virtio-vsock tests, built static
 * (gcc -static) into the QEMU guest's initramfs.  It opens AF_VSOCK
 * sockets, so it runs only inside the guest, never on the host.  Every
 * command prints one result line on stdout (the serial console):
 *
 *   NKT PASS <name> <details>      NKT FAIL <name> <reason>
 *
 * and exits 0 on PASS.  Transfers report their byte count and CRC-32
 * (zlib's polynomial), which the host side compares with its own.
 *
 *   echo PORT BYTES            connect to host PORT, send BYTES, half-close,
 *                              read them back, compare
 *   send PORT BYTES SEED       connect to host PORT, send BYTES of a
 *                              pseudo-random stream, report its CRC
 *   recv PORT                  listen on guest PORT, take one connection,
 *                              read to EOF, report bytes and CRC
 *   listen-echo PORT N         listen on guest PORT, echo N connections
 *   many PORT N BYTES          N connections to host PORT at once, each
 *                              sends BYTES (own seed), half-closes and
 *                              checks its echo
 *   refused PORT               connect to a host port nobody serves: must
 *                              fail with ECONNRESET or ECONNREFUSED
 *
 * Listening commands print "NKT LISTEN <port>" once they listen.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define HOST_CID	2
#define CHUNK		(64 << 10)
#define MANY_MAX	256

static uint32_t crc_table[256];

static void crc_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* xorshift64*: a cheap stream the host never needs to regenerate */
static void fill(uint8_t *buf, size_t n, uint64_t *state)
{
	size_t i;

	for (i = 0; i + 8 <= n; i += 8) {
		uint64_t x = *state;

		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		*state = x;
		x *= 0x2545f4914f6cdd1dull;
		memcpy(buf + i, &x, 8);
	}
	for (; i < n; i++)
		buf[i] = (uint8_t)(i * 131);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int result(int ok, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int result(int ok, const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("NKT %s %s ", ok ? "PASS" : "FAIL", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return ok ? 0 : 1;
}

static int vsock_connect(unsigned int port, int *err)
{
	struct sockaddr_vm sa = {
		.svm_family = AF_VSOCK, .svm_cid = HOST_CID, .svm_port = port,
	};
	struct timeval tv = { .tv_sec = 20 };
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);

	*err = 0;
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	/* connect() of a vsock stream honours SO_VM_SOCKETS_CONNECT_TIMEOUT */
	setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		*err = errno;
		close(fd);
		return -1;
	}
	return fd;
}

static int vsock_listen(unsigned int port)
{
	struct sockaddr_vm sa = {
		.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port,
	};
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 64) < 0)
		return -1;
	printf("NKT LISTEN %u\n", port);
	fflush(stdout);
	return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int cmd_echo(unsigned int port, size_t bytes)
{
	static uint8_t buf[CHUNK];
	uint64_t seed = 0x1234567 + port;
	uint32_t crc_out = 0, crc_in = 0;
	size_t sent = 0, got = 0;
	pid_t writer;
	int fd, e, status;

	fd = vsock_connect(port, &e);
	if (fd < 0)
		return result(0, "echo", "connect to 2:%u: %s", port, strerror(e));
	/* a child writes while we read: the echo may exceed every buffer */
	writer = fork();
	if (writer < 0)
		return result(0, "echo", "fork: %s", strerror(errno));
	if (!writer) {
		while (sent < bytes) {
			size_t n = bytes - sent < CHUNK ? bytes - sent : CHUNK;

			fill(buf, n, &seed);
			if (write_all(fd, buf, n) < 0)
				_exit(1);
			sent += n;
		}
		shutdown(fd, SHUT_WR);
		_exit(0);
	}
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));

		if (r < 0)
			return result(0, "echo", "read after %zu bytes: %s", got, strerror(errno));
		if (!r)
			break;
		crc_in = crc32_update(crc_in, buf, (size_t)r);
		got += (size_t)r;
	}
	close(fd);
	if (waitpid(writer, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		return result(0, "echo", "the writer failed after sending part of %zu bytes", bytes);
	/* what the writer sent, regenerated */
	while (sent < bytes) {
		size_t n = bytes - sent < CHUNK ? bytes - sent : CHUNK;

		fill(buf, n, &seed);
		crc_out = crc32_update(crc_out, buf, n);
		sent += n;
	}
	return result(got == bytes && crc_in == crc_out, "echo",
		      "port %u sent %zu got %zu crc %08x/%08x", port, bytes, got,
		      crc_out, crc_in);
}

static int cmd_send(unsigned int port, size_t bytes, uint64_t seed)
{
	static uint8_t buf[CHUNK];
	uint32_t crc = 0;
	size_t sent = 0;
	double t0 = now_s(), dt;
	int fd, e;

	fd = vsock_connect(port, &e);
	if (fd < 0)
		return result(0, "send", "connect to 2:%u: %s", port, strerror(e));
	seed |= 1;
	while (sent < bytes) {
		size_t n = bytes - sent < CHUNK ? bytes - sent : CHUNK;

		fill(buf, n, &seed);
		crc = crc32_update(crc, buf, n);
		if (write_all(fd, buf, n) < 0)
			return result(0, "send", "write after %zu bytes: %s", sent, strerror(errno));
		sent += n;
	}
	close(fd);
	dt = now_s() - t0;
	return result(1, "send", "port %u bytes %zu crc %08x secs %.2f mbit %.0f", port,
		      sent, crc, dt, sent * 8 / 1e6 / (dt > 0 ? dt : 1));
}

static int cmd_recv(unsigned int port)
{
	static uint8_t buf[CHUNK];
	uint32_t crc = 0;
	size_t got = 0;
	double t0, dt;
	int lfd, fd;

	lfd = vsock_listen(port);
	if (lfd < 0)
		return result(0, "recv", "listen on %u: %s", port, strerror(errno));
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		return result(0, "recv", "accept: %s", strerror(errno));
	t0 = now_s();
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));

		if (r < 0)
			return result(0, "recv", "read after %zu bytes: %s", got, strerror(errno));
		if (!r)
			break;
		crc = crc32_update(crc, buf, (size_t)r);
		got += (size_t)r;
	}
	dt = now_s() - t0;
	close(fd);
	close(lfd);
	return result(1, "recv", "port %u bytes %zu crc %08x secs %.2f mbit %.0f", port,
		      got, crc, dt, got * 8 / 1e6 / (dt > 0 ? dt : 1));
}

static int cmd_listen_echo(unsigned int port, unsigned int n)
{
	static uint8_t buf[CHUNK];
	size_t total = 0;
	unsigned int i;
	int lfd;

	lfd = vsock_listen(port);
	if (lfd < 0)
		return result(0, "listen-echo", "listen on %u: %s", port, strerror(errno));
	for (i = 0; i < n; i++) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			return result(0, "listen-echo", "accept: %s", strerror(errno));
		for (;;) {
			ssize_t r = read(fd, buf, sizeof(buf));

			if (r < 0)
				return result(0, "listen-echo", "read: %s", strerror(errno));
			if (!r)
				break;
			if (write_all(fd, buf, (size_t)r) < 0)
				return result(0, "listen-echo", "write: %s", strerror(errno));
			total += (size_t)r;
		}
		close(fd);
	}
	close(lfd);
	return result(1, "listen-echo", "port %u connections %u bytes %zu", port, n, total);
}

struct conn {
	int fd;
	uint64_t seed_out, seed_in;
	size_t sent, got;
	uint8_t blk[4096];	/* the block being sent, blk_off bytes of it gone */
	size_t blk_len, blk_off;
	uint8_t want[4096];	/* the block being received, as it must be */
	int done;
};

/* N connections at once through poll(): each writes its stream and
 * checks the echo byte for byte against the same generator. */
static int cmd_many(unsigned int port, unsigned int n, size_t bytes)
{
	static struct conn c[MANY_MAX];
	static struct pollfd pfd[MANY_MAX];
	static uint8_t buf[4096];
	unsigned int i, left;
	double t0 = now_s();
	int e;

	if (n > MANY_MAX)
		n = MANY_MAX;
	left = n;
	for (i = 0; i < n; i++) {
		c[i].fd = vsock_connect(port, &e);
		if (c[i].fd < 0)
			return result(0, "many", "connection %u of %u: %s", i, n, strerror(e));
		c[i].seed_out = c[i].seed_in = 0x9e3779b97f4a7c15ull * (i + 1);
		c[i].sent = c[i].got = 0;
		c[i].blk_len = c[i].blk_off = 0;
		c[i].done = 0;
	}
	while (left) {
		if (now_s() - t0 > 120)
			return result(0, "many", "%u of %u connections unfinished after 120 s", left, n);
		for (i = 0; i < n; i++) {
			pfd[i].fd = c[i].done ? -1 : c[i].fd;
			pfd[i].events = POLLIN | (c[i].sent < bytes ? POLLOUT : 0);
		}
		if (poll(pfd, n, 5000) < 0)
			return result(0, "many", "poll: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			if (c[i].done)
				continue;
			if ((pfd[i].revents & POLLOUT) && c[i].sent < bytes) {
				ssize_t w;

				if (c[i].blk_off == c[i].blk_len) {
					c[i].blk_len = bytes - c[i].sent < 4096 ? bytes - c[i].sent : 4096;
					c[i].blk_off = 0;
					fill(c[i].blk, c[i].blk_len, &c[i].seed_out);
				}
				w = send(c[i].fd, c[i].blk + c[i].blk_off, c[i].blk_len - c[i].blk_off,
					 MSG_DONTWAIT);
				if (w > 0) {
					c[i].blk_off += (size_t)w;
					c[i].sent += (size_t)w;
					if (c[i].sent == bytes)
						shutdown(c[i].fd, SHUT_WR);
				} else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
					return result(0, "many", "send on %u: %s", i, strerror(errno));
				}
			}
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t r = recv(c[i].fd, buf, 4096 - (c[i].got % 4096), MSG_DONTWAIT);

				if (r < 0 && errno != EAGAIN)
					return result(0, "many", "recv on %u: %s", i, strerror(errno));
				if (r == 0) {
					if (c[i].got != bytes)
						return result(0, "many", "connection %u: EOF after %zu of %zu",
							      i, c[i].got, bytes);
					c[i].done = 1;
					close(c[i].fd);
					left--;
				} else if (r > 0) {
					size_t off = c[i].got % 4096;

					if (off == 0) {
						size_t k = bytes - c[i].got < 4096 ? bytes - c[i].got : 4096;

						fill(c[i].want, k, &c[i].seed_in);
					}
					if (memcmp(buf, c[i].want + off, (size_t)r))
						return result(0, "many", "connection %u: wrong bytes at %zu",
							      i, c[i].got);
					c[i].got += (size_t)r;
				}
			}
		}
	}
	return result(1, "many", "port %u connections %u bytes %zu each secs %.2f", port, n,
		      bytes, now_s() - t0);
}

static int cmd_refused(unsigned int port)
{
	double t0 = now_s();
	int fd, e;

	fd = vsock_connect(port, &e);
	if (fd >= 0) {
		close(fd);
		return result(0, "refused", "connect to 2:%u succeeded", port);
	}
	return result(e == ECONNRESET || e == ECONNREFUSED, "refused",
		      "port %u: %s (errno %d) after %.2f s", port, strerror(e), e, now_s() - t0);
}

static unsigned long arg(char **argv, int i, int argc)
{
	if (i >= argc) {
		fprintf(stderr, "guest-vsock-test: missing argument (see the source's header)\n");
		exit(2);
	}
	return strtoul(argv[i], NULL, 0);
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	crc_init();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(cmd, "echo"))
		return cmd_echo(arg(argv, 2, argc), arg(argv, 3, argc));
	if (!strcmp(cmd, "send"))
		return cmd_send(arg(argv, 2, argc), arg(argv, 3, argc), arg(argv, 4, argc));
	if (!strcmp(cmd, "recv"))
		return cmd_recv(arg(argv, 2, argc));
	if (!strcmp(cmd, "listen-echo"))
		return cmd_listen_echo(arg(argv, 2, argc), arg(argv, 3, argc));
	if (!strcmp(cmd, "many"))
		return cmd_many(arg(argv, 2, argc), arg(argv, 3, argc), arg(argv, 4, argc));
	if (!strcmp(cmd, "refused"))
		return cmd_refused(arg(argv, 2, argc));
	fprintf(stderr, "usage: guest-vsock-test echo|send|recv|listen-echo|many|refused ARGS\n");
	return 2;
}
