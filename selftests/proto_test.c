// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Unit tests of the guest protocol's framing rules (proto.h) and of the
 * address helpers (nkaddr.c): every op's size in each direction, header
 * validation of bad magic/version/op/len, address parsing and conversion.
 * Prints one line per failed check and "N passed, N failed" at the end.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "nkaddr.h"

static int passed, failed;

#define CHECK(cond) do {						\
	if (cond) passed++;						\
	else { failed++; printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

static struct nk_hdr hdr(uint8_t op, uint32_t len)
{
	return (struct nk_hdr){ .magic = NK_PROTO_MAGIC, .version = NK_PROTO_VERSION,
				.op = op, .len = len };
}

static void test_framing(void)
{
	struct nk_hdr h;
	int op;

	for (op = NK_OP_HELLO; op < NK_OP_MAX; op++) {
		int req = nk_body_size(op, 0), rep = nk_body_size(op, 1);

		if (req >= 0) {
			h = hdr(op, sizeof(h) + req);
			CHECK(nk_hdr_check(&h, 0) == req);
			h.len++;
			CHECK(nk_hdr_check(&h, 0) < 0);
			h.len = sizeof(h) + req - 1;
			CHECK(nk_hdr_check(&h, 0) < 0);
		}
		if (rep >= 0) {
			h = hdr(op, sizeof(h) + rep);
			CHECK(nk_hdr_check(&h, 1) == rep);
		}
		CHECK(req >= 0 || rep >= 0);
	}
	/* Records only flow host -> guest. */
	CHECK(nk_body_size(NK_OP_CONNECTED, 0) < 0);
	CHECK(nk_body_size(NK_OP_ACCEPT_READY, 0) < 0);
	h = hdr(0, sizeof(h));
	CHECK(nk_hdr_check(&h, 0) < 0);
	h = hdr(NK_OP_MAX, sizeof(h));
	CHECK(nk_hdr_check(&h, 0) < 0);
	h = hdr(NK_OP_HELLO, sizeof(h) + sizeof(struct nk_hello_req));
	h.magic ^= 1;
	CHECK(nk_hdr_check(&h, 0) < 0);
	h = hdr(NK_OP_HELLO, sizeof(h) + sizeof(struct nk_hello_req));
	h.version = NK_PROTO_VERSION + 1;
	CHECK(nk_hdr_check(&h, 0) < 0);
	h = hdr(NK_OP_HELLO, 0xffffffffu);
	CHECK(nk_hdr_check(&h, 0) < 0);
	CHECK(NK_MSG_MAX >= sizeof(struct nk_hdr) + sizeof(struct nk_hello_rep));
}

static void test_addr(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(80) };
	struct nk_addr a, b;
	char buf[NK_ADDRSTRLEN];
	int prefix;

	CHECK(nk_addr_parse(&a, "10.77.0.2") == 0 && a.family == NK_AF_INET);
	CHECK(nk_addr_parse(&a, "fd77::2") == 0 && a.family == NK_AF_INET6);
	CHECK(nk_addr_parse(&a, "10.77.0.256") == -EINVAL);
	CHECK(nk_addr_parse(&a, "") == -EINVAL);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "10.77.0.2/24", true) == 0 && prefix == 24);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "10.77.0.2", true) == -EINVAL);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "10.77.0.2", false) == 0 && prefix == 32);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "10.77.0.2/33", true) == -EINVAL);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "10.77.0.2/-1", true) == -EINVAL);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "10.77.0.2/24x", true) == -EINVAL);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "10.77.0.2/", true) == -EINVAL);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "fd77::2/129", true) == -EINVAL);
	CHECK(nk_addr_parse_prefix(&a, &prefix, "fd77::2/64", true) == 0 && prefix == 64);

	nk_addr_parse(&a, "10.77.0.2");
	nk_addr_parse(&b, "10.77.0.200");
	CHECK(nk_addr_in_prefix(&a, &b, 24));
	CHECK(!nk_addr_in_prefix(&a, &b, 25));
	CHECK(nk_addr_in_prefix(&a, &b, 0));
	CHECK(!nk_addr_same_ip(&a, &b));

	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	CHECK(nk_sockaddr_is_loopback((struct sockaddr *)&sin, sizeof(sin)));
	CHECK(!nk_sockaddr_is_loopback((struct sockaddr *)&sin, sizeof(sin) - 1));
	nk_addr_parse(&a, "::1");
	CHECK(nk_addr_is_loopback(&a));
	nk_addr_parse(&a, "::ffff:127.0.0.9");
	CHECK(nk_addr_is_loopback(&a));
	nk_addr_parse(&a, "::");
	CHECK(nk_addr_is_any(&a) && !nk_addr_is_loopback(&a));

	inet_pton(AF_INET, "10.77.0.3", &sin.sin_addr);
	CHECK(nk_addr_from_sockaddr(&a, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	CHECK(a.port == 80 && nk_addr_valid(&a));
	CHECK(!strcmp(nk_addr_ntop_port(&a, buf, sizeof(buf)), "10.77.0.3:80"));
	CHECK(nk_addr_to_sockaddr(&a, &ss) == sizeof(sin));
	CHECK(!memcmp(&ss, &sin, sizeof(sin)));
	a.pad0 = 1;
	CHECK(!nk_addr_valid(&a));
	a.pad0 = 0;
	a.addr[5] = 1;	/* IPv4 with junk past 4 bytes */
	CHECK(!nk_addr_valid(&a));
	a.family = 5;
	CHECK(!nk_addr_valid(&a));
	CHECK(nk_addr_to_sockaddr(&a, &ss) == -EAFNOSUPPORT);
	sin.sin_family = AF_UNIX;
	CHECK(nk_addr_from_sockaddr(&a, (struct sockaddr *)&sin, sizeof(sin)) == -EAFNOSUPPORT);
	nk_addr_parse(&a, "fd77::2");
	a.port = 8080;
	CHECK(!strcmp(nk_addr_ntop_port(&a, buf, sizeof(buf)), "[fd77::2]:8080"));
}

int main(void)
{
	test_framing();
	test_addr();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
