/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * One logging vocabulary for the host daemons (nkd, nk-nsm) and nkctl:
 * err/warn/info/debug, *_perror adding strerror(errno), die().  Lines go to
 * stderr with a timestamp and the program name; the level threshold is set
 * once at start-up.  libbpf's messages can be routed here one level down.
 */
#ifndef NK_LOG_H
#define NK_LOG_H

#include <errno.h>
#include <stdarg.h>

/* NK_LOG_OFF as the threshold: nothing is logged (a fuzz harness's refusals) */
enum nk_log_level { NK_LOG_OFF = -1, NK_LOG_ERR, NK_LOG_WARN, NK_LOG_INFO, NK_LOG_DEBUG };

void nk_log_init(const char *prog, enum nk_log_level level);
void nk_log_set_level(enum nk_log_level level);
int nk_log_enabled(enum nk_log_level level);
void nk_vlog(enum nk_log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
void nk_log(enum nk_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void nk_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define err(...)	nk_log(NK_LOG_ERR, __VA_ARGS__)
#define warn(...)	nk_log(NK_LOG_WARN, __VA_ARGS__)
#define info(...)	nk_log(NK_LOG_INFO, __VA_ARGS__)
#define debug(...)	do { if (nk_log_enabled(NK_LOG_DEBUG)) nk_log(NK_LOG_DEBUG, __VA_ARGS__); } while (0)
#define die(...)	nk_die(__VA_ARGS__)

/* As err()/warn(), with ": strerror(errno)" appended; errno is preserved. */
#define err_perror(fmt, ...)						\
	do { int e_ = errno; nk_log(NK_LOG_ERR, fmt ": %s", ##__VA_ARGS__, strerror(e_)); errno = e_; } while (0)
#define warn_perror(fmt, ...)						\
	do { int e_ = errno; nk_log(NK_LOG_WARN, fmt ": %s", ##__VA_ARGS__, strerror(e_)); errno = e_; } while (0)

#endif /* NK_LOG_H */
