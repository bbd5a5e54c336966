// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid allocation for one device: what alloc() and free() of an
 * active device do. An allocation takes the lowest cached PASID in range
 * (vpasid_lease.c), with no round trip, or else fetches a batch with one
 * synchronous GRANT and takes the lowest of it, or, when a GRANT cannot
 * serve, sends one synchronous ALLOC; a free the cache does not keep
 * (vpasid_lease_put(), called by free() itself) goes to the host as a
 * FREE. Both run with the IOASID framework's spinlock held: every wait
 * here busy-polls, bounded by timeout_ms. An ALLOC answered after its caller gave up
 * carries a PASID that is the VM's: its completion keeps it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ktime.h>
#include <linux/virtio.h>

#include "vpasid.h"

/*
 * The completion of an ALLOC (the reap, vp->lock held). A PASID a late
 * ALLOC carries is the VM's: it goes into the cache, or back to the host
 * when it cannot (leases off, cache full, outside the range).
 */
static void vpasid_alloc_answered(struct virtio_pasid *vp,
				  struct vpasid_slot *slot, bool late)
{
	const struct vpasid_buf *buf = slot->buf;
	u32 pasid = le32_to_cpu(buf->resp.pasid);

	if (!late || slot->status != VIRTIO_PASID_S_OK)
		return;
	if (pasid >= le32_to_cpu(buf->req.min) &&
	    pasid <= le32_to_cpu(buf->req.max))
		vpasid_cache_keep(vp, pasid);
	else
		vpasid_free_async(vp, pasid);
}

/* One synchronous ALLOC in [lo, hi]; atomic context. */
static int vpasid_alloc_one(struct virtio_pasid *vp, u32 lo, u32 hi,
			    u32 *pasid)
{
	int status;

	status = vpasid_request(vp, VIRTIO_PASID_OP_ALLOC, 0, lo, hi,
				vpasid_alloc_answered, false, pasid);
	if (status == VIRTIO_PASID_S_OK && (*pasid < lo || *pasid > hi)) {
		atomic64_inc(&vp->stats.out_of_range);
		dev_warn_ratelimited(&vp->vdev->dev,
				     "device returned PASID %u outside [%u, %u]\n",
				     *pasid, lo, hi);
		vpasid_give_back(vp, *pasid);
		status = -ERANGE;
	}
	return status;
}

/*
 * The cache could not serve [lo, hi]: the spill, or the first GRANT answer
 * that brings a PASID in the range (vpasid_lease_fetch(): a batch, as far
 * as the quota leaves room), serves it. What a GRANT cannot serve
 * (nothing granted, or another CPU took the batch) is one synchronous
 * ALLOC; at the quota with only
 * PASIDs outside the range cached, one of them goes back first (a
 * synchronous RETURN), or the ALLOC could not succeed. Atomic context.
 */
static int vpasid_alloc_miss(struct virtio_pasid *vp, u32 lo, u32 hi,
			     unsigned long in_use, unsigned int cached,
			     u32 *pasid)
{
	/* The quota read at probe; the host's answers cover a change. */
	unsigned int room = in_use + cached < vp->quota ?
			    vp->quota - in_use - cached : 0;
	int status;

	/* At the quota too: the spill may hold one in the range. */
	if (vpasid_lease_fetch(vp, room, lo, hi, pasid) == VIRTIO_PASID_S_OK)
		return VIRTIO_PASID_S_OK;
	if (cached && in_use + cached >= vp->quota)
		vpasid_lease_return_one(vp);
	status = vpasid_alloc_one(vp, lo, hi, pasid);
	if (status == VIRTIO_PASID_S_QUOTA_EXCEEDED &&
	    vpasid_lease_return_one(vp) == VIRTIO_PASID_S_OK)
		status = vpasid_alloc_one(vp, lo, hi, pasid);
	return status;
}

/*
 * Get a PASID in [lo, hi] for alloc(), with @in_use PASIDs handed out
 * already; atomic context. The lowest cached one in range if any, with no
 * round trip; else a miss (vpasid_alloc_miss()), which also grows the
 * cache, and whose wait for the host is counted (alloc_wait_ns). Return
 * the device's status or a negative errno.
 */
int vpasid_alloc_pasid(struct virtio_pasid *vp, u32 lo, u32 hi,
		       unsigned long in_use, u32 *pasid)
{
	unsigned long flags;
	unsigned int cached;
	ktime_t start;
	bool hit;
	int status;

	if (!vp->lease_cap) {
		atomic64_inc(&vp->stats.lease_misses);
		return vpasid_alloc_one(vp, lo, hi, pasid);
	}
	if (vpasid_stash_take(vp, lo, hi, pasid)) {
		atomic64_inc(&vp->stats.lease_hits);
		return VIRTIO_PASID_S_OK;
	}
	/* The cache finds the lowest in range among the stash's too. */
	if (vp->nstash)
		vpasid_stash_flush(vp);

	spin_lock_irqsave(&vp->lock, flags);
	hit = vpasid_cache_take(vp, lo, hi, pasid);
	if (hit)
		vpasid_stash_fill(vp, hi);
	cached = vpasid_lease_unused(vp);
	if (!hit) {
		/* The cache follows demand: see the watermarks. */
		if (lo != vp->want_min || hi != vp->want_max)
			vp->grant_blocked = false;
		vp->want_min = lo;
		vp->want_max = hi;
		vpasid_lease_missed(vp);
		vpasid_lease_kick(vp);
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	if (hit) {
		atomic64_inc(&vp->stats.lease_hits);
		return VIRTIO_PASID_S_OK;
	}

	atomic64_inc(&vp->stats.lease_misses);
	start = ktime_get();
	status = vpasid_alloc_miss(vp, lo, hi, in_use, cached, pasid);
	atomic64_inc(&vp->stats.alloc_waits);
	atomic64_add(ktime_to_ns(ktime_sub(ktime_get(), start)),
		     &vp->stats.alloc_wait_ns);
	return status;
}

/*
 * free() of an active device whose cache did not keep @pasid
 * (vpasid_lease_put()): a FREE to the host, posted and never waited for
 * with leases on or while the device is unresponsive (the host still
 * learns of it if it comes back), waited for (bounded) as in protocol v1
 * otherwise.
 */
void vpasid_free_pasid(struct virtio_pasid *vp, u32 pasid)
{
	u32 unused;

	if (vp->lease_cap || READ_ONCE(vp->unresponsive))
		vpasid_give_back(vp, pasid);
	else
		vpasid_request(vp, VIRTIO_PASID_OP_FREE, pasid, 0, 0, NULL,
			       false, &unused);
}
