/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * One packet with descriptors (SCM_RIGHTS) on a Unix socket: the nkd <->
 * NSM control socket carries guest listeners and streams this way in both
 * directions.  Plain wrappers around sendmsg/recvmsg; no logging.
 */
#ifndef NK_NKFD_H
#define NK_NKFD_H

#include <stddef.h>
#include <sys/types.h>

#define NK_FDS_MAX	4	/* descriptors one packet may carry here */

/* sendmsg() of buf with fd attached (fd < 0: none). */
ssize_t nk_send_fd(int sock, const void *buf, size_t len, int fd, int flags);

/*
 * recvmsg() of one packet into buf, close-on-exec; the first max of the
 * descriptors it carried in fds[] (*nfds of them), the others closed.
 * *msg_flags (may be NULL): recvmsg's msg_flags (MSG_TRUNC, MSG_CTRUNC).
 * Returns recvmsg()'s result; on failure no descriptor was taken.
 */
ssize_t nk_recv_fds(int sock, void *buf, size_t len, int flags, int *fds, int max, int *nfds,
		    int *msg_flags);

#endif /* NK_NKFD_H */
