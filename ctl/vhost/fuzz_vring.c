// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libFuzzer harness: descriptor-chain walking (vring.c).  The input is a
 * guest: a ring size, where the rings sit, and the bytes of guest memory
 * (descriptor table, avail ring, buffers).  Guest memory is two regions
 * with a hole between them, so descriptors can point into the hole, across
 * the boundary and past the end.  Every chain vv_vq_pop() hands out is
 * read and written in full (AddressSanitizer checks every byte is inside
 * guest memory) and returned on the used ring; the loop must end within
 * a bounded number of steps.  Built by `make fuzz`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vhost_vsock.h"

#define REGION	(32u << 10)
#define UVA0	0x7f0000000000ull
#define UVA1	0x7f0000100000ull
#define GPA1	0x100000ull		/* [REGION, GPA1) is a hole */

static uint8_t guest[2 * REGION] __attribute__((aligned(4096)));

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint64_t stats[VV_STAT_MAX];
	struct vv_mem mem = { .nregions = 2 };
	struct vv_vq vq;
	struct vv_chain ch;
	unsigned int i, popped = 0;
	uint8_t sink = 0;

	if (size < 8)
		return 0;
	nk_log_init("fuzz_vring", NK_LOG_ERR);
	memset(guest, 0, sizeof(guest));
	memcpy(guest, data + 8, size - 8 < sizeof(guest) ? size - 8 : sizeof(guest));

	mem.r[0] = (struct vv_region){ .gpa = 0, .size = REGION, .uva = UVA0, .host = guest };
	mem.r[1] = (struct vv_region){ .gpa = GPA1, .size = REGION, .uva = UVA1,
				       .host = guest + REGION };
	vv_vq_init(&vq);
	vq.num = 1u << (data[0] % 10);		/* 1 .. 512 */
	if (data[1] & 0x80)
		vq.num = data[1];		/* also sizes that are not powers of two */
	/* ring offsets: mostly sane, sometimes anywhere (misaligned, outside) */
	vq.desc_uva = UVA0 + (data[1] & 1 ? get16(data + 2) : 0);
	vq.avail_uva = UVA0 + (data[1] & 2 ? get16(data + 4) : 16 * 512);
	vq.used_uva = (data[1] & 4 ? UVA0 : UVA1) + (data[1] & 8 ? get16(data + 6) : 0);
	vq.last_avail = data[1] & 0x10 ? get16(data + 2) : 0;
	if (vv_vq_start(&vq, &mem, stats) < 0)
		return 0;

	while (vv_vq_pop(&vq, &mem, &ch, stats)) {
		/*
		 * Writes into the chain's buffers may land on the rings (the
		 * guest may lay them out so), which moves the avail index as
		 * a racing guest would: the daemon's per-turn budget bounds
		 * that, here a cap.
		 */
		if (++popped > 4 * vq.num + 64)
			break;
		if (ch.n_out + ch.n_in > VV_CHAIN_MAX_DESC || ch.head >= vq.num)
			abort();
		for (i = 0; i < ch.n_out; i++) {
			const uint8_t *p = ch.iov[i].iov_base;
			size_t k;

			for (k = 0; k < ch.iov[i].iov_len; k++)
				sink ^= p[k];
		}
		for (i = ch.n_out; i < ch.n_out + ch.n_in; i++)
			memset(ch.iov[i].iov_base, sink, ch.iov[i].iov_len);
		/* the copy helpers at an offset that may be past the end */
		{
			uint8_t hdr[64];
			struct iovec sl[VV_CHAIN_MAX_DESC];

			vv_iov_to_buf(ch.iov, ch.n_out, data[2] % 50, hdr, sizeof(hdr));
			vv_iov_from_buf(ch.iov + ch.n_out, ch.n_in, data[3] % 50, hdr, sizeof(hdr));
			vv_iov_slice(ch.iov, ch.n_out + ch.n_in, data[4], ch.out_len + ch.in_len,
				     sl, data[5] % VV_CHAIN_MAX_DESC + 1);
		}
		if (popped & 1)
			vv_vq_push(&vq, ch.head, (uint32_t)ch.in_len);
		else {
			/* put back and take again (a dry Unix socket does this) */
			vv_vq_unpop(&vq);
			if (!vv_vq_pop(&vq, &mem, &ch, stats))
				break;
			vv_vq_push(&vq, ch.head, 0);
		}
	}
	vv_vq_notify(&vq);
	return sink == 0x5a && size == 12345;	/* keep sink alive */
}
