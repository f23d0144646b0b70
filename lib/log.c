// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Logging for the host daemons: see log.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_prog = "netkernel";
static enum nk_log_level log_level = NK_LOG_INFO;

static const char *const level_names[] = {
	[NK_LOG_ERR] = "error",
	[NK_LOG_WARN] = "warning",
	[NK_LOG_INFO] = "info",
	[NK_LOG_DEBUG] = "debug",
};

void nk_log_init(const char *prog, enum nk_log_level level)
{
	const char *slash = strrchr(prog, '/');

	log_prog = slash ? slash + 1 : prog;
	log_level = level;
}

void nk_log_set_level(enum nk_log_level level)
{
	log_level = level;
}

int nk_log_enabled(enum nk_log_level level)
{
	return level <= log_level;
}

void nk_vlog(enum nk_log_level level, const char *fmt, va_list ap)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	int n;

	if (!nk_log_enabled(level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %s[%d]: %s: ",
		     tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		     log_prog, (int)getpid(), level_names[level]);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	n = strlen(line);
	line[n++] = '\n';
	/* One write per line so concurrent writers do not interleave. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

void nk_log(enum nk_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	nk_vlog(level, fmt, ap);
	va_end(ap);
}

void nk_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	nk_vlog(NK_LOG_ERR, fmt, ap);
	va_end(ap);
	exit(EXIT_FAILURE);
}
