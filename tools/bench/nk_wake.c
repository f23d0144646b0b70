// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nk_wake: what a wakeup round trip costs between two processes pinned to
 * two given CPUs (tools/bench.sh records it with the machine's facts).
 *
 *   nk_wake CPU-A CPU-B ROUNDS
 *
 * Two processes pass one byte back and forth over two pipes, ROUNDS times,
 * the parent on CPU-A and the child on CPU-B, each blocking in read()
 * between its turns: every half round trip wakes a process that sleeps.
 * `perf bench sched pipe` does the same but lets the scheduler place both
 * sides, which on a machine with idle CPUs often puts them on one CPU.
 * With CPU-A != CPU-B each wakeup is an inter-processor wakeup of a CPU
 * that may have gone idle: what a relay on another CPU pays.  Prints
 * "usecs_per_round_trip=N" (the median of 5 batches of ROUNDS/5).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCHES 5

static int pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

static int xfer(int rfd, int wfd, bool first)
{
	char c = 'x';

	if (first && write(wfd, &c, 1) != 1)
		return -1;
	if (read(rfd, &c, 1) != 1)
		return -1;
	if (!first && write(wfd, &c, 1) != 1)
		return -1;
	return 0;
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int ab[2], ba[2], cpu_a, cpu_b, status;
	long rounds, per, i, b;
	double t[BATCHES];
	pid_t child;

	if (argc != 4) {
		fprintf(stderr, "usage: nk_wake CPU-A CPU-B ROUNDS\n");
		return 2;
	}
	cpu_a = atoi(argv[1]);
	cpu_b = atoi(argv[2]);
	rounds = atol(argv[3]);
	per = rounds / BATCHES;
	if (per < 1 || pipe(ab) || pipe(ba)) {
		fprintf(stderr, "nk_wake: %s\n", per < 1 ? "ROUNDS must be at least 5" : strerror(errno));
		return 2;
	}
	child = fork();
	if (child < 0) {
		perror("nk_wake: fork");
		return 1;
	}
	if (!child) {
		if (pin(cpu_b)) {
			perror("nk_wake: CPU-B");
			_exit(1);
		}
		for (i = 0; i < per * BATCHES; i++)
			if (xfer(ab[0], ba[1], false))
				_exit(1);
		_exit(0);
	}
	if (pin(cpu_a)) {
		perror("nk_wake: CPU-A");
		kill(child, SIGKILL);
		return 1;
	}
	for (b = 0; b < BATCHES; b++) {
		double t0 = now_us();

		for (i = 0; i < per; i++)
			if (xfer(ba[0], ab[1], true)) {
				fprintf(stderr, "nk_wake: the other process failed\n");
				kill(child, SIGKILL);
				return 1;
			}
		t[b] = (now_us() - t0) / (double)per;
	}
	if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "nk_wake: CPU-B process failed (is CPU %d online?)\n", cpu_b);
		return 1;
	}
	qsort(t, BATCHES, sizeof(t[0]), cmp_double);
	printf("usecs_per_round_trip=%.2f\n", t[BATCHES / 2]);
	return 0;
}
