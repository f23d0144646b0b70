// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Address conversions between the wire and the OS: see nkaddr.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nkaddr.h"

int nk_addr_from_sockaddr(struct nk_addr *na, const struct sockaddr *sa, socklen_t len)
{
	memset(na, 0, sizeof(*na));
	if (!sa || len < sizeof(sa_family_t))
		return -EINVAL;
	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const void *)sa;

		if (len < sizeof(*sin))
			return -EINVAL;
		na->family = NK_AF_INET;
		na->port = ntohs(sin->sin_port);
		memcpy(na->addr, &sin->sin_addr, 4);
		return 0;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const void *)sa;

		/* RFC 2133's shorter sockaddr_in6 (no scope id) is accepted,
		 * as Linux does (SIN6_LEN_RFC2133). */
		if (len < NK_SIN6_LEN_RFC2133)
			return -EINVAL;
		na->family = NK_AF_INET6;
		na->port = ntohs(sin6->sin6_port);
		na->flowinfo = sin6->sin6_flowinfo;
		na->scope_id = len >= sizeof(*sin6) ? sin6->sin6_scope_id : 0;
		memcpy(na->addr, &sin6->sin6_addr, 16);
		return 0;
	}
	default:
		return -EAFNOSUPPORT;
	}
}

int nk_addr_to_sockaddr(const struct nk_addr *na, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	switch (na->family) {
	case NK_AF_INET: {
		struct sockaddr_in *sin = (void *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(na->port);
		memcpy(&sin->sin_addr, na->addr, 4);
		return sizeof(*sin);
	}
	case NK_AF_INET6: {
		struct sockaddr_in6 *sin6 = (void *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(na->port);
		sin6->sin6_flowinfo = na->flowinfo;
		sin6->sin6_scope_id = na->scope_id;
		memcpy(&sin6->sin6_addr, na->addr, 16);
		return sizeof(*sin6);
	}
	default:
		return -EAFNOSUPPORT;
	}
}

bool nk_addr_valid(const struct nk_addr *na)
{
	static const uint8_t zero[12];

	if (na->pad0)
		return false;
	switch (na->family) {
	case NK_AF_INET:
		return !na->flowinfo && !na->scope_id &&
		       !memcmp(na->addr + 4, zero, 12);
	case NK_AF_INET6:
		return true;
	default:
		return false;
	}
}

static int addr_bytes(const struct nk_addr *na)
{
	return na->family == NK_AF_INET ? 4 : na->family == NK_AF_INET6 ? 16 : 0;
}

bool nk_addr_is_any(const struct nk_addr *na)
{
	static const uint8_t zero[16];
	int n = addr_bytes(na);

	return n && !memcmp(na->addr, zero, n);
}

static const uint8_t v4mapped[12] = { [10] = 0xff, [11] = 0xff };

bool nk_addr_is_loopback(const struct nk_addr *na)
{
	static const uint8_t lo6[16] = { [15] = 1 };

	if (na->family == NK_AF_INET)
		return na->addr[0] == 127;
	if (na->family == NK_AF_INET6)
		return !memcmp(na->addr, lo6, 16) ||
		       (nk_addr_is_v4mapped(na) && na->addr[12] == 127);
	return false;
}

bool nk_addr_is_v4mapped(const struct nk_addr *na)
{
	return na->family == NK_AF_INET6 && !memcmp(na->addr, v4mapped, 12);
}

bool nk_addr_is_linklocal(const struct nk_addr *na)
{
	return na->family == NK_AF_INET6 && na->addr[0] == 0xfe && (na->addr[1] & 0xc0) == 0x80;
}

struct nk_addr nk_addr_v4map(const struct nk_addr *v4)
{
	struct nk_addr a = { .family = NK_AF_INET6, .port = v4->port };

	memcpy(a.addr, v4mapped, 12);
	memcpy(a.addr + 12, v4->addr, 4);
	return a;
}

struct nk_addr nk_addr_v4unmap(const struct nk_addr *a)
{
	struct nk_addr v4 = { .family = NK_AF_INET, .port = a->port };

	memcpy(v4.addr, a->addr + 12, 4);
	return v4;
}

bool nk_addr_same_ip(const struct nk_addr *a, const struct nk_addr *b)
{
	int n = addr_bytes(a);

	return n && a->family == b->family && !memcmp(a->addr, b->addr, n);
}

bool nk_addr_in_prefix(const struct nk_addr *a, const struct nk_addr *b, int prefix)
{
	int n = addr_bytes(a), full, rest;

	if (!n || a->family != b->family || prefix < 0 || prefix > n * 8)
		return false;
	full = prefix / 8;
	rest = prefix % 8;
	if (memcmp(a->addr, b->addr, full))
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff00 >> rest);

		return (a->addr[full] & mask) == (b->addr[full] & mask);
	}
	return true;
}

bool nk_sockaddr_is_loopback(const struct sockaddr *sa, socklen_t len)
{
	struct nk_addr na;

	if (nk_addr_from_sockaddr(&na, sa, len))
		return false;
	return nk_addr_is_loopback(&na);
}

int nk_addr_parse(struct nk_addr *na, const char *s)
{
	memset(na, 0, sizeof(*na));
	if (inet_pton(AF_INET, s, na->addr) == 1) {
		na->family = NK_AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, na->addr) == 1) {
		na->family = NK_AF_INET6;
		return 0;
	}
	return -EINVAL;
}

int nk_addr_parse_prefix(struct nk_addr *na, int *prefix, const char *s, bool need_prefix)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	long p;
	int max;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (nk_addr_parse(na, buf))
		return -EINVAL;
	max = na->family == NK_AF_INET ? 32 : 128;
	if (!slash) {
		if (need_prefix)
			return -EINVAL;
		*prefix = max;
		return 0;
	}
	errno = 0;
	p = strtol(slash + 1, &end, 10);
	if (errno || end == slash + 1 || *end || p < 0 || p > max)
		return -EINVAL;
	*prefix = (int)p;
	return 0;
}

const char *nk_addr_ntop(const struct nk_addr *na, char *buf, size_t len)
{
	int af = na->family == NK_AF_INET ? AF_INET :
		 na->family == NK_AF_INET6 ? AF_INET6 : 0;

	if (!af || !inet_ntop(af, na->addr, buf, len))
		snprintf(buf, len, "?");
	return buf;
}

const char *nk_addr_ntop_port(const struct nk_addr *na, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	nk_addr_ntop(na, a, sizeof(a));
	if (na->family == NK_AF_INET6)
		snprintf(buf, len, "[%s]:%u", a, na->port);
	else
		snprintf(buf, len, "%s:%u", a, na->port);
	return buf;
}
