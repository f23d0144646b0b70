// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Guest memory and split virtqueues for nk-vhost-vsock: translate guest
 * physical and front-end virtual addresses through the memory table QEMU
 * sent, walk descriptor chains, return them on the used ring, signal the
 * call eventfd.  No sockets and no epoll here, so the fuzz harness drives
 * this file as the daemon does.
 *
 * Theory of operation
 * -------------------
 * The guest owns the avail ring and the descriptor table and may change
 * them at any moment, so every value is read once into a local copy and
 * checked there: a head or next index must be below the ring size, a chain
 * has at most VV_CHAIN_MAX_DESC descriptors (which also ends loops), at
 * most VV_CHAIN_MAX_BYTES bytes, no indirect descriptors (never offered),
 * readable descriptors before writable ones, and every buffer lies inside
 * one region of the memory table.  A chain that breaks a rule is returned
 * on the used ring with length 0 and counted under its reason; the next
 * chain is tried.  An avail index that moves by more than the ring size,
 * or an out-of-range head, means the ring itself is corrupt: the queue is
 * marked broken and left alone until the front-end restarts it.  Only the
 * guest that did it loses its device.
 *
 * Memory ordering: the avail index is loaded with acquire semantics before
 * its entries are read; used entries are written before the used index is
 * stored with release semantics; a full fence separates that store from
 * reading the driver's "no interrupt" flag.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vhost_vsock.h"

static const char *const stat_names[] = {
#define VV_STAT_NAME(name, desc) [VV_##name] = #name,
	VV_STATS(VV_STAT_NAME)
#undef VV_STAT_NAME
};

static const char *const stat_descs[] = {
#define VV_STAT_DESC(name, desc) [VV_##name] = desc,
	VV_STATS(VV_STAT_DESC)
#undef VV_STAT_DESC
};

const char *vv_stat_name(enum vv_stat s)
{
	return s < VV_STAT_MAX ? stat_names[s] : "?";
}

const char *vv_stat_desc(enum vv_stat s)
{
	return s < VV_STAT_MAX ? stat_descs[s] : "?";
}

/* ------------------------------------------------------------ memory */

/* [a, a + len) inside [base, base + size)?  Overflow-safe. */
static bool range_in(uint64_t a, uint64_t len, uint64_t base, uint64_t size)
{
	return a >= base && a - base < size && len <= size - (a - base);
}

void *vv_gpa_to_va(const struct vv_mem *m, uint64_t gpa, uint64_t len)
{
	unsigned int i;

	for (i = 0; i < m->nregions && i < VV_MAX_REGIONS; i++) {
		const struct vv_region *r = &m->r[i];

		if (range_in(gpa, len, r->gpa, r->size))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

void *vv_uva_to_va(const struct vv_mem *m, uint64_t uva, uint64_t len)
{
	unsigned int i;

	for (i = 0; i < m->nregions && i < VV_MAX_REGIONS; i++) {
		const struct vv_region *r = &m->r[i];

		if (range_in(uva, len, r->uva, r->size))
			return r->host + (uva - r->uva);
	}
	return NULL;
}

void vv_mem_release(struct vv_mem *m)
{
	unsigned int i;

	for (i = 0; i < m->nregions && i < VV_MAX_REGIONS; i++) {
		if (m->r[i].map)
			munmap(m->r[i].map, m->r[i].map_len);
	}
	memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------ queues */

void vv_vq_init(struct vv_vq *vq)
{
	memset(vq, 0, sizeof(*vq));
	vq->kick_fd = -1;
	vq->call_fd = -1;
	vq->err_fd = -1;
	vq->enabled = true;
}

/*
 * Translate the ring addresses (front-end virtual addresses) and check
 * their alignment; the queue is then started.  -EFAULT (and the queue is
 * broken) when a ring is not wholly inside guest memory.
 */
int vv_vq_start(struct vv_vq *vq, const struct vv_mem *mem, uint64_t *stats)
{
	uint64_t num = vq->num;

	vq->started = true;
	vq->broken = true;
	vq->broken_logged = false;
	vq->need_call = false;
	if (!num || num > VV_QUEUE_MAX_SIZE || (num & (num - 1)))
		goto bad;
	vq->desc = vv_uva_to_va(mem, vq->desc_uva, 16 * num);
	vq->avail = vv_uva_to_va(mem, vq->avail_uva, 4 + 2 * num);
	vq->used = vv_uva_to_va(mem, vq->used_uva, 4 + 8 * num);
	if (!vq->desc || !vq->avail || !vq->used)
		goto bad;
	if (((uintptr_t)vq->desc & 15) || ((uintptr_t)vq->avail & 1) ||
	    ((uintptr_t)vq->used & 3))
		goto bad;
	/*
	 * Every chain is completed before the loop waits again, so the used
	 * index always catches up with the base; trust the used ring.
	 */
	vq->used_idx = le16toh(__atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE));
	vq->last_avail = vq->used_idx;
	vq->broken = false;
	return 0;
bad:
	if (stats)
		stats[VV_RING_BAD_ADDR]++;
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
	return -EFAULT;
}

bool vv_vq_ready(const struct vv_vq *vq)
{
	return vq->started && !vq->broken && vq->enabled;
}

/* Walk the chain at head into c; 0 or the reason it is refused. */
static int walk_chain(const struct vv_vq *vq, const struct vv_mem *mem,
		      uint16_t head, struct vv_chain *c)
{
	unsigned int idx = head, count = 0;
	bool writable = false;

	c->head = head;
	c->n_out = c->n_in = 0;
	c->out_len = c->in_len = 0;
	for (;;) {
		struct vring_desc d;
		uint64_t addr;
		uint32_t len;
		uint16_t flags;
		void *p;

		if (count >= vq->num || count >= VV_CHAIN_MAX_DESC)
			return VV_DESC_LOOP;
		count++;
		/* one copy of what the guest may be rewriting */
		memcpy(&d, (const void *)&vq->desc[idx], sizeof(d));
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		addr = le64toh(d.addr);
		len = le32toh(d.len);
		flags = le16toh(d.flags);
		if (flags & VRING_DESC_F_INDIRECT)
			return VV_DESC_INDIRECT;
		if (flags & VRING_DESC_F_WRITE)
			writable = true;
		else if (writable)
			return VV_DESC_ORDER;
		if (len) {
			size_t *total = writable ? &c->in_len : &c->out_len;

			if (len > VV_CHAIN_MAX_BYTES - c->out_len - c->in_len)
				return VV_DESC_TOO_BIG;
			p = vv_gpa_to_va(mem, addr, len);
			if (!p)
				return VV_DESC_BAD_ADDR;
			c->iov[c->n_out + c->n_in].iov_base = p;
			c->iov[c->n_out + c->n_in].iov_len = len;
			if (writable)
				c->n_in++;
			else
				c->n_out++;
			*total += len;
		}
		if (!(flags & VRING_DESC_F_NEXT))
			return 0;
		idx = le16toh(d.next);
		if (idx >= vq->num)
			return VV_DESC_BAD_INDEX;
	}
}

/*
 * Take the next valid chain: 1 with c filled in, 0 when the ring is empty
 * (or broken, or not running).  Invalid chains are returned unused and
 * counted on the way.
 */
int vv_vq_pop(struct vv_vq *vq, const struct vv_mem *mem, struct vv_chain *c,
	      uint64_t *stats)
{
	for (;;) {
		uint16_t avail_idx, pending, head;
		int reason;

		if (!vv_vq_ready(vq))
			return 0;
		avail_idx = le16toh(__atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE));
		pending = (uint16_t)(avail_idx - vq->last_avail);
		if (!pending)
			return 0;
		if (pending > vq->num) {
			stats[VV_RING_BAD_AVAIL]++;
			vq->broken = true;
			return 0;
		}
		head = le16toh(__atomic_load_n(&vq->avail->ring[vq->last_avail & (vq->num - 1)],
					       __ATOMIC_RELAXED));
		if (head >= vq->num) {
			stats[VV_RING_BAD_HEAD]++;
			vq->broken = true;
			return 0;
		}
		vq->last_avail++;
		reason = walk_chain(vq, mem, head, c);
		if (!reason)
			return 1;
		stats[reason]++;
		vv_vq_push(vq, head, 0);
	}
}

/* Put back the chain just popped (nothing was pushed since). */
void vv_vq_unpop(struct vv_vq *vq)
{
	vq->last_avail--;
}

void vv_vq_push(struct vv_vq *vq, uint16_t head, uint32_t len)
{
	struct vring_used_elem *e;

	if (!vq->used)
		return;
	e = &vq->used->ring[vq->used_idx & (vq->num - 1)];
	__atomic_store_n(&e->id, htole32(head), __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, htole32(len), __ATOMIC_RELAXED);
	vq->used_idx++;
	__atomic_store_n(&vq->used->idx, htole16(vq->used_idx), __ATOMIC_RELEASE);
	vq->need_call = true;
}

/* Signal the driver if we used buffers and it has not asked for quiet. */
void vv_vq_notify(struct vv_vq *vq)
{
	uint16_t flags;

	if (!vq->need_call || !vq->avail)
		return;
	vq->need_call = false;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	flags = le16toh(__atomic_load_n(&vq->avail->flags, __ATOMIC_RELAXED));
	if (flags & VRING_AVAIL_F_NO_INTERRUPT)
		return;
	if (vq->call_fd >= 0)
		eventfd_write(vq->call_fd, 1);
}

/* ------------------------------------------------------------ iovecs */

size_t vv_iov_to_buf(const struct iovec *iov, unsigned int n, size_t off,
		     void *buf, size_t len)
{
	size_t done = 0;
	unsigned int i;

	for (i = 0; i < n && done < len; i++) {
		size_t chunk;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		chunk = iov[i].iov_len - off;
		if (chunk > len - done)
			chunk = len - done;
		memcpy((uint8_t *)buf + done, (uint8_t *)iov[i].iov_base + off, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

size_t vv_iov_from_buf(const struct iovec *iov, unsigned int n, size_t off,
		       const void *buf, size_t len)
{
	size_t done = 0;
	unsigned int i;

	for (i = 0; i < n && done < len; i++) {
		size_t chunk;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		chunk = iov[i].iov_len - off;
		if (chunk > len - done)
			chunk = len - done;
		memcpy((uint8_t *)iov[i].iov_base + off, (const uint8_t *)buf + done, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

/* dst = the bytes [off, off + len) of iov; returns the number of entries. */
unsigned int vv_iov_slice(const struct iovec *iov, unsigned int n, size_t off,
			  size_t len, struct iovec *dst, unsigned int dst_max)
{
	unsigned int i, k = 0;

	for (i = 0; i < n && len && k < dst_max; i++) {
		size_t chunk;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		chunk = iov[i].iov_len - off;
		if (chunk > len)
			chunk = len;
		dst[k].iov_base = (uint8_t *)iov[i].iov_base + off;
		dst[k].iov_len = chunk;
		k++;
		len -= chunk;
		off = 0;
	}
	return k;
}
