/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Conversions between the wire's struct nk_addr and the OS's sockaddrs,
 * and the text forms operators type ("10.0.0.2/24", "fd00::2/64").
 * Used by the guest library, the NSM and nkd alike; no allocation, no
 * logging, safe to call from the LD_PRELOAD library.
 */
#ifndef NK_NKADDR_H
#define NK_NKADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netkernel/proto.h>

#define NK_ADDRSTRLEN	(INET6_ADDRSTRLEN + 8)	/* "[addr]:port" */
#define NK_SIN6_LEN_RFC2133	24	/* sockaddr_in6 without sin6_scope_id */

/* sockaddr -> nk_addr.  Returns 0, or -EAFNOSUPPORT / -EINVAL (short len). */
int nk_addr_from_sockaddr(struct nk_addr *na, const struct sockaddr *sa, socklen_t len);

/* nk_addr -> sockaddr_storage; returns the sockaddr length or -EAFNOSUPPORT. */
int nk_addr_to_sockaddr(const struct nk_addr *na, struct sockaddr_storage *ss);

/* Validate a wire address: family known, padding zero. */
bool nk_addr_valid(const struct nk_addr *na);

bool nk_addr_is_any(const struct nk_addr *na);
bool nk_addr_is_loopback(const struct nk_addr *na);
/* An IPv6 ::ffff:a.b.c.d address; fe80::/10. */
bool nk_addr_is_v4mapped(const struct nk_addr *na);
bool nk_addr_is_linklocal(const struct nk_addr *na);
/* An IPv4 address as v4-mapped IPv6 and back (ports kept). */
struct nk_addr nk_addr_v4map(const struct nk_addr *v4);
struct nk_addr nk_addr_v4unmap(const struct nk_addr *a);
/* Same family and address bytes (ports ignored). */
bool nk_addr_same_ip(const struct nk_addr *a, const struct nk_addr *b);
/* Is a inside b/prefix? */
bool nk_addr_in_prefix(const struct nk_addr *a, const struct nk_addr *b, int prefix);

/* True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
bool nk_sockaddr_is_loopback(const struct sockaddr *sa, socklen_t len);

/* "10.0.0.2" or "fd00::2" -> nk_addr (port 0).  0 or -EINVAL. */
int nk_addr_parse(struct nk_addr *na, const char *s);
/* "10.0.0.2/24" -> nk_addr + prefix; prefix required when need_prefix. */
int nk_addr_parse_prefix(struct nk_addr *na, int *prefix, const char *s, bool need_prefix);

/* Address only ("10.0.0.2") or with port ("10.0.0.2:80", "[fd00::2]:80"). */
const char *nk_addr_ntop(const struct nk_addr *na, char *buf, size_t len);
const char *nk_addr_ntop_port(const struct nk_addr *na, char *buf, size_t len);

#endif /* NK_NKADDR_H */
