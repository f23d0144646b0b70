/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef NK_NETNS_H
#define NK_NETNS_H

/*
 * The id (nsid) that the caller's network namespace gives the network
 * namespace of netns_fd, as "ip netns list-id" shows it; the kernel
 * allocates one if it has none yet.  BPF socket lookups name another
 * namespace by it.  0 and *id, or -errno.
 */
int nk_netns_id(int netns_fd, int *id);

#endif
