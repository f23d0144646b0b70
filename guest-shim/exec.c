// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libnkguest: NetKernel sockets across exec.
 *
 * A socket without close-on-exec survives exec as a plain stream, and its
 * payload keeps flowing; what the new program would lose is the library's
 * knowledge of it (its token, state and addresses).  The exec family is
 * interposed to pass that knowledge in the environment variable NK_FDS:
 *
 *   NK_FDS=FD,STATE,DOMAIN|TYPE<<8,TOKEN:NSM,LOCAL,PEER;...
 *
 * with TOKEN and NSM (the NSM instance) in hex and LOCAL/PEER as hex-encoded sockaddrs (empty when
 * unknown).  At start-up the library reads NK_FDS, keeps the entries whose
 * fd is still an open stream socket, and removes the variable.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nkguest.h"

#define NK_FDS_VAR	"NK_FDS="
#define NK_FDS_MAX	64

extern char **environ;

static void hex_out(char *dst, const void *src, size_t len)
{
	static const char hx[] = "0123456789abcdef";
	const unsigned char *s = src;
	size_t i;

	for (i = 0; i < len; i++) {
		dst[2 * i] = hx[s[i] >> 4];
		dst[2 * i + 1] = hx[s[i] & 15];
	}
	dst[2 * len] = '\0';
}

static int hex_in(void *dst, size_t max, const char *src, size_t srclen)
{
	unsigned char *d = dst;
	size_t i;

	if (srclen % 2 || srclen / 2 > max)
		return -1;
	for (i = 0; i < srclen / 2; i++) {
		unsigned int v;

		if (sscanf(src + 2 * i, "%2x", &v) != 1)
			return -1;
		d[i] = (unsigned char)v;
	}
	return (int)(srclen / 2);
}

#define ENTRY_MAX	(4 * sizeof(struct sockaddr_storage) + 96)

/* One socket as "FD,STATE,DOMAIN|TYPE<<8,TOKEN:NSM,LOCAL,PEER". */
static void encode_entry(const struct nk_sock *sk, int fd, char *buf, size_t len)
{
	char lh[2 * sizeof(struct sockaddr_storage) + 1];
	char ph[2 * sizeof(struct sockaddr_storage) + 1];

	hex_out(lh, &sk->local, sk->local_len);
	hex_out(ph, &sk->peer, sk->peer_len);
	snprintf(buf, len, "%d,%d,%d,%llx:%x,%s,%s", fd, sk->state,
		 sk->domain | (sk->type << 8), (unsigned long long)sk->token, sk->nsm, lh, ph);
}

/* Install the socket an entry describes at fd (the entry's own fd when
 * fd < 0), if that fd is still an open socket. */
static void decode_install(char *e, int fd)
{
	char *f[6] = { 0 }, *q = e, *end;
	struct nk_sock *sk;
	struct stat st;
	int i, state, domain, type, l;

	for (i = 0; i < 6; i++) {
		f[i] = q;
		q = strchr(q, ',');
		if (!q) {
			i++;
			break;
		}
		*q++ = '\0';
	}
	if (i != 6)
		return;
	if (fd < 0)
		fd = atoi(f[0]);
	state = atoi(f[1]);
	domain = atoi(f[2]) & 0xff;
	type = atoi(f[2]) >> 8;
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
	    (domain != AF_INET && domain != AF_INET6) ||
	    (type != SOCK_STREAM && type != SOCK_DGRAM) || state < NKS_SETUP ||
	    state > NKS_LISTENING)
		return;
	sk = nks_new(domain, type);
	if (!sk)
		return;
	sk->token = strtoull(f[3], &end, 16);
	if (*end == ':')
		sk->nsm = strtoul(end + 1, NULL, 16);
	l = hex_in(&sk->local, sizeof(sk->local), f[4], strlen(f[4]));
	sk->local_len = l > 0 ? l : 0;
	l = hex_in(&sk->peer, sizeof(sk->peer), f[5], strlen(f[5]));
	sk->peer_len = l > 0 ? l : 0;
	if (type == SOCK_DGRAM && sk->local_len) {
		/* what a UDP socket binds again if its NSM goes away: its
		 * address, as far as this side knows it (not kept across
		 * exec once connect() made it unknown) */
		sk->bound = sk->local;
		sk->bound_len = sk->local_len;
	}
	nks_set_state(sk, state);
	nks_install(fd, sk);
	nks_put(sk);
}

/*
 * The exec family also runs in vfork()ed children (posix_spawn, Python's
 * subprocess, system()): nothing on that path may allocate or take a lock
 * another thread of the parent could hold.  NK_FDS and the new environment
 * are therefore built on the caller's stack.
 */
#define NK_FDS_BUF	(sizeof(NK_FDS_VAR) + NK_FDS_MAX * (ENTRY_MAX + 1))
#define NK_ENV_MAX	4096	/* environments beyond this pass no sockets */

/* "NK_FDS=..." into var (NK_FDS_BUF bytes) for the sockets that survive
 * exec; returns how many. */
static int build_var(char *var)
{
	struct nk_sock *sk;
	size_t len;
	int fd, n = 0, maxfd = 4096;

	strcpy(var, NK_FDS_VAR);
	len = strlen(var);
	for (fd = 0; fd < maxfd && n < NK_FDS_MAX; fd++) {
		char entry[ENTRY_MAX + 1];
		int fdfl;

		if (!nks_fd_tracked(fd))
			continue;
		sk = nks_get(fd);
		if (!sk)
			continue;
		fdfl = nk_real.fcntl(fd, F_GETFD);
		if (fdfl < 0 || (fdfl & FD_CLOEXEC) || sk->state == NKS_FRESH ||
		    sk->state == NKS_LOCAL) {
			nks_put(sk);
			continue;
		}
		if (n)
			entry[0] = ';';
		encode_entry(sk, fd, entry + !!n, sizeof(entry) - 1);
		nks_put(sk);
		if (len + strlen(entry) + 1 > NK_FDS_BUF)
			break;
		strcpy(var + len, entry);
		len += strlen(entry);
		n++;
	}
	return n;
}

/* envp with NK_FDS replaced, in out (NK_ENV_MAX + 2 slots), using var
 * (NK_FDS_BUF bytes); envp itself when there is nothing to change. */
static char *const *env_with_fds(char *const envp[], char *var, char **out)
{
	size_t n = 0, i, j = 0;
	bool have;

	if (!nk_enabled())
		return envp;
	have = build_var(var) > 0;
	if (!have && (!envp || !getenv("NK_FDS")))
		return envp;
	while (envp && envp[n])
		n++;
	if (n > NK_ENV_MAX)
		return envp;
	for (i = 0; i < n; i++)
		if (strncmp(envp[i], NK_FDS_VAR, strlen(NK_FDS_VAR)))
			out[j++] = envp[i];
	if (have)
		out[j++] = var;
	out[j] = NULL;
	return out;
}

/* The stack space env_with_fds() needs, in the calling function. */
#define ENV_BUFS	char nkvar_[NK_FDS_BUF], *nkenv_[NK_ENV_MAX + 2]
#define ENV(envp)	env_with_fds(envp, nkvar_, nkenv_)

void nk_exec_restore(void)
{
	const char *v = getenv("NK_FDS");
	char *copy, *save = NULL, *e;

	if (!v)
		return;
	copy = strdup(v);
	unsetenv("NK_FDS");
	if (!copy)
		return;
	for (e = strtok_r(copy, ";", &save); e; e = strtok_r(NULL, ";", &save))
		decode_install(e, -1);
	free(copy);
}

typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			const posix_spawnattr_t *, char *const[], char *const[]);

/* Looked up once at load: dlsym() in a vfork child could wait for the
 * loader's lock. */
static execve_fn real_execve_fn, real_execvpe_fn;
static spawn_fn real_spawn_fn, real_spawnp_fn;

__attribute__((constructor)) static void exec_resolve(void)
{
	*(void **)&real_execve_fn = dlsym(RTLD_NEXT, "execve");
	*(void **)&real_execvpe_fn = dlsym(RTLD_NEXT, "execvpe");
	*(void **)&real_spawn_fn = dlsym(RTLD_NEXT, "posix_spawn");
	*(void **)&real_spawnp_fn = dlsym(RTLD_NEXT, "posix_spawnp");
}

static int real_execve(const char *path, char *const argv[], char *const envp[])
{
	return real_execve_fn(path, argv, envp);
}

static int real_execvpe(const char *file, char *const argv[], char *const envp[])
{
	return real_execvpe_fn(file, argv, envp);
}

NK_API int execve(const char *path, char *const argv[], char *const envp[])
{
	ENV_BUFS;

	nk_init();
	return real_execve(path, argv, ENV(envp));
}

NK_API int execv(const char *path, char *const argv[])
{
	ENV_BUFS;

	nk_init();
	return real_execve(path, argv, ENV(environ));
}

NK_API int execvpe(const char *file, char *const argv[], char *const envp[])
{
	ENV_BUFS;

	nk_init();
	return real_execvpe(file, argv, ENV(envp));
}

NK_API int execvp(const char *file, char *const argv[])
{
	ENV_BUFS;

	nk_init();
	return real_execvpe(file, argv, ENV(environ));
}

/* execl/execlp/execle: the variadic arguments, counted, then copied into
 * an array on the stack (no allocation: see above). */
static size_t count_args(va_list ap)
{
	size_t n = 1;
	va_list c;

	va_copy(c, ap);
	while (va_arg(c, char *))
		n++;
	va_end(c);
	return n;
}

#define COPY_ARGS(argv, n, arg0, ap)					\
	do {								\
		size_t i_;						\
		argv[0] = (char *)(arg0);				\
		for (i_ = 1; i_ <= (n); i_++)				\
			argv[i_] = va_arg(ap, char *);			\
	} while (0)

NK_API int execl(const char *path, const char *arg, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, arg);
	n = count_args(ap);
	{
		char *argv[n + 1];

		COPY_ARGS(argv, n, arg, ap);
		va_end(ap);
		return execv(path, argv);
	}
}

NK_API int execlp(const char *file, const char *arg, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, arg);
	n = count_args(ap);
	{
		char *argv[n + 1];

		COPY_ARGS(argv, n, arg, ap);
		va_end(ap);
		return execvp(file, argv);
	}
}

NK_API int execle(const char *path, const char *arg, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, arg);
	n = count_args(ap);
	{
		char *argv[n + 1], **envp;

		COPY_ARGS(argv, n, arg, ap);
		envp = va_arg(ap, char **);
		va_end(ap);
		return execve(path, argv, envp);
	}
}

NK_API int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
		       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	ENV_BUFS;

	nk_init();
	return real_spawn_fn(pid, path, fa, attr, argv, ENV(envp));
}

NK_API int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	ENV_BUFS;

	nk_init();
	return real_spawnp_fn(pid, file, fa, attr, argv, ENV(envp));
}

/*
 * system() and popen() start their shell with glibc's internal spawn, past
 * posix_spawn() above: NK_FDS goes into this process's environment for
 * the call (the shell, under the library, takes it and passes it on with
 * its own exec), and comes out after.  setenv() is not thread-safe: only
 * when there is a socket to pass.
 */
static char *fds_env_push(void)
{
	char var[NK_FDS_BUF], *old;
	const char *prev;

	if (!nk_enabled() || build_var(var) <= 0)
		return NULL;
	prev = getenv("NK_FDS");
	old = prev ? strdup(prev) : strdup("");
	if (old)
		setenv("NK_FDS", var + strlen(NK_FDS_VAR), 1);
	return old;
}

static void fds_env_pop(char *old)
{
	if (!old)
		return;
	if (*old)
		setenv("NK_FDS", old, 1);
	else
		unsetenv("NK_FDS");
	free(old);
}

NK_API int system(const char *cmd)
{
	static int (*real)(const char *);
	char *old;
	int ret;

	nk_init();
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "system");
	old = cmd ? fds_env_push() : NULL;
	ret = real(cmd);
	fds_env_pop(old);
	return ret;
}

NK_API FILE *popen(const char *cmd, const char *mode)
{
	static FILE *(*real)(const char *, const char *);
	char *old;
	FILE *f;
	int e;

	nk_init();
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "popen");
	old = fds_env_push();
	f = real(cmd, mode);
	e = errno;
	fds_env_pop(old);
	errno = e;
	return f;
}

/*
 * Sockets passed to another process over AF_UNIX (SCM_RIGHTS).  The fd
 * arrives as a plain stream; what the library knows of it travels beside:
 * the sender writes the socket's entry to a file named after the socket's
 * inode (the same open file on both sides), the receiver reads and removes
 * it.  /dev/shm, else /tmp; files are 0600 (same user on both sides).
 */
static void handoff_path(char *buf, size_t len, const struct stat *st, const char *dir)
{
	snprintf(buf, len, "%s/netkernel-fd-%llx-%llx", dir, (unsigned long long)st->st_dev,
		 (unsigned long long)st->st_ino);
}

static const char *handoff_dir(void)
{
	struct stat st;

	return !stat("/dev/shm", &st) && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
}

void nk_scm_export(const struct msghdr *msg)
{
	struct cmsghdr *c;

	for (c = CMSG_FIRSTHDR((struct msghdr *)msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		int *fds = (int *)CMSG_DATA(c);
		size_t i, n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			char path[128], entry[ENTRY_MAX + 1];
			struct nk_sock *sk;
			struct stat st;
			int f;

			if (!nks_fd_tracked(fds[i]))
				continue;
			sk = nks_get(fds[i]);
			if (!sk || sk->state == NKS_FRESH || sk->state == NKS_LOCAL ||
			    fstat(fds[i], &st) < 0) {
				nks_put(sk);
				continue;
			}
			encode_entry(sk, fds[i], entry, sizeof(entry));
			nks_put(sk);
			handoff_path(path, sizeof(path), &st, handoff_dir());
			/* A fresh file of ours: a stale one (never received)
			 * is replaced, nobody else's is trusted. */
			unlink(path);
			f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
			if (f < 0) {
				nk_logf("cannot record fd %d for its receiver: %s", fds[i], strerror(errno));
				continue;
			}
			if (nk_real.write(f, entry, strlen(entry)) < 0)
				nk_logf("cannot record fd %d for its receiver: %s", fds[i], strerror(errno));
			nk_real.close(f);
		}
	}
}

void nk_scm_import(struct msghdr *msg)
{
	struct cmsghdr *c;

	if (!msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr))
		return;
	for (c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		int *fds = (int *)CMSG_DATA(c);
		size_t i, n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			char path[128], entry[ENTRY_MAX + 1];
			struct stat st, fst;
			ssize_t r;
			int f;

			if (fstat(fds[i], &st) < 0 || !S_ISSOCK(st.st_mode))
				continue;
			handoff_path(path, sizeof(path), &st, handoff_dir());
			f = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (f < 0)
				continue;	/* not a NetKernel socket */
			/* Only a file written by this user (or root) counts. */
			if (fstat(f, &fst) < 0 || !S_ISREG(fst.st_mode) ||
			    (fst.st_uid != geteuid() && fst.st_uid != 0)) {
				nk_real.close(f);
				continue;
			}
			r = nk_real.read(f, entry, sizeof(entry) - 1);
			nk_real.close(f);
			unlink(path);
			if (r <= 0)
				continue;
			entry[r] = '\0';
			decode_install(entry, fds[i]);
		}
	}
}
