// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * nk-run: run one program under NetKernel.
 *
 *   nk-run [--transport unix:PATH | vsock[:CID:PORT]] [--log] -- PROGRAM [ARGS...]
 *
 * equals NK_TRANSPORT=... LD_PRELOAD=.../libnkguest.so PROGRAM ARGS.  The
 * library is found next to nk-run (build tree), in ../lib/netkernel/
 * (installed tree), or at NK_LIBRARY.  Without --transport the library
 * takes NK_TRANSPORT, then /etc/netkernel/guest.conf, then vsock:2:7531.
 */
#include <errno.h>
#include <limits.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: nk-run [--transport unix:PATH | vsock[:CID:PORT]] [--log] -- PROGRAM [ARGS...]\n");
}

static int find_library(char *out, size_t len)
{
	static const char *const rel[] = { "libnkguest.so", "../lib/netkernel/libnkguest.so" };
	char self[PATH_MAX], *dir;
	const char *env = getenv("NK_LIBRARY");
	ssize_t n;
	size_t i;

	if (env && *env) {
		if (access(env, R_OK))
			return -errno;
		snprintf(out, len, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return -errno;
	self[n] = '\0';
	dir = dirname(self);
	for (i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		char cand[PATH_MAX];

		if (snprintf(cand, sizeof(cand), "%s/%s", dir, rel[i]) >= (int)sizeof(cand))
			continue;
		if (!access(cand, R_OK) && realpath(cand, out))
			return 0;
	}
	(void)len;
	return -ENOENT;
}

int main(int argc, char **argv)
{
	char lib[PATH_MAX], *preload;
	const char *old;
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else if (!strcmp(argv[i], "--transport") && i + 1 < argc) {
			const char *t = argv[++i];

			if (strncmp(t, "unix:", 5) && strncmp(t, "vsock", 5)) {
				fprintf(stderr, "nk-run: bad transport \"%s\"\n", t);
				usage(stderr);
				return 2;
			}
			setenv("NK_TRANSPORT", t, 1);
		} else if (!strncmp(argv[i], "--transport=", 12)) {
			setenv("NK_TRANSPORT", argv[i] + 12, 1);
		} else if (!strcmp(argv[i], "--log")) {
			setenv("NK_LOG", "1", 1);
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "nk-run: unknown option \"%s\"\n", argv[i]);
			usage(stderr);
			return 2;
		} else {
			break;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	if (find_library(lib, sizeof(lib))) {
		fprintf(stderr, "nk-run: cannot find libnkguest.so (set NK_LIBRARY)\n");
		return 1;
	}
	old = getenv("LD_PRELOAD");
	if (old && *old) {
		if (asprintf(&preload, "%s:%s", lib, old) < 0)
			return 1;
	} else {
		preload = lib;
	}
	setenv("LD_PRELOAD", preload, 1);
	execvp(argv[i], argv + i);
	fprintf(stderr, "nk-run: cannot run %s: %s\n", argv[i], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
