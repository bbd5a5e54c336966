// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid leases (VIRTIO_PASID_F_LEASE): a per-device cache of PASIDs
 * the VM holds on the host but has not handed out, so that alloc() and
 * free() need no round trip. GRANT fills the cache and RETURN trims it,
 * mostly from a work item in process context; the allocator takes from
 * and puts into the cache under vp->lock, which never sleeps.
 *
 * Policy (docs/guest.md, "Leases"). The cache has a size S, between the
 * resting size lease_cap (min(lease, lease_max)) and the host's cap
 * lease_max (lease_room, the array's length), and the work item keeps it
 * between the watermarks of S (below).
 *   - A miss (nothing cached in the range asked for) of a cache that was
 *     filled before is demand the cache did not foresee: S doubles (up to
 *     lease_max). Any miss fetches a batch with one GRANT, busy-polled
 *     (vpasid_lease_fetch(): one to hand out plus the target S/2, as far
 *     as the quota and VIRTIO_PASID_LEASE_BATCH_MAX allow) and hands out
 *     the lowest; below the low mark a GRANT is posted ahead of need.
 *     Only what a GRANT cannot serve (nothing granted: a VM at its quota,
 *     or no free PASID in the range) costs a single ALLOC.
 *   - A free into a full cache posts one RETURN of the highest cached
 *     PASIDs (down to the target), never waited for, so that a burst of
 *     frees costs one request per batch, not one FREE each; with four
 *     batches unanswered, the next full cache waits (busy-polled) for a
 *     RETURN of its own, so that frees never run ahead of the host by more
 *     than that (nor out of request slots).
 *   - Demand falls: once a second (VPASID_SHRINK_MS) with no miss, S
 *     halves (down to lease_cap) and the work item returns what lies above
 *     the new high watermark, so an idle guest does not sit on a large
 *     cache. A steady alloc+free loop never misses, so S stays.
 *   - Cached PASIDs count against the VM's quota: the host grants at most
 *     its cap less what the driver says it caches, and an allocation at
 *     the quota with only out-of-range PASIDs cached returns one first.
 *
 * Accounting rule, so that nothing is handed out twice and nothing is
 * lost: every PASID the VM holds on the host is, in the driver, either
 * handed out (the framework's), in the cache, or listed in a RETURN not
 * answered yet (vp->returning). The effect of a GRANT or RETURN answer is
 * applied when the answer arrives (vpasid_lease_answered(), from the reap),
 * whoever waits for it and however late it comes:
 *   - GRANT OK: the PASIDs granted go into the cache (those outside the
 *     range asked for, or beyond the cache's room, go back with a FREE);
 *   - RETURN OK: the PASIDs listed are gone;
 *   - RETURN answered RATE_LIMITED or INTERNAL: the host released nothing,
 *     so the PASIDs listed go back into the cache;
 *   - RETURN answered NOT_FOUND, NOT_OWNER or INVALID: the host says the
 *     VM does not hold (all of) them, e.g. after an operator release, so
 *     none of them is handed out again; those the VM did hold stay held
 *     until RESET;
 *   - RETURN with a malformed answer, or never answered (the device died,
 *     or its answer was dropped at freeze): the driver cannot know whether
 *     the host released them, so it counts them as gone and never hands
 *     them out again; the host releases them at the latest on RESET or at
 *     the end of the VM's connection. Handing one out could give the guest
 *     a PASID the host already gave to another VM; forgetting one only
 *     leaves it held until RESET.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/completion.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "vpasid.h"

static unsigned int lease = 32;
module_param(lease, uint, 0644);
MODULE_PARM_DESC(lease,
		 "Most PASIDs to keep cached per device, capped by the device's lease_max; 0 turns leases off (default 32; read at probe)");

/* Work item rounds per run: enough to move a whole cache in batches. */
#define VPASID_LEASE_ROUNDS \
	(VIRTIO_PASID_LEASE_MAX / VIRTIO_PASID_LEASE_BATCH_MAX + 1)
/*
 * Most PASIDs in unanswered RETURNs before a free into a full cache waits
 * for a RETURN of its own: a few batches (request slots) ahead of the host.
 */
#define VPASID_RETURN_AHEAD	(4 * VIRTIO_PASID_LEASE_BATCH_MAX)
/* How long without a miss before the cache's size halves. */
#define VPASID_SHRINK_MS	1000

/* How a lease request's answer is waited for. */
enum vpasid_lease_wait {
	VPASID_LEASE_SLEEP,	/* process context: sleep, bounded */
	VPASID_LEASE_POLL,	/* atomic context: busy-poll, bounded */
	VPASID_LEASE_NOWAIT,	/* posted; the reap applies the answer */
};

unsigned int vpasid_lease_wanted(void)
{
	return READ_ONCE(lease);
}

/*
 * Watermarks, for a cache of size C (lease_size): refill when at most C/4 are
 * cached, return when more than C - C/4 are, and either way move the cache
 * to its target C/2 (at least 1). A steady loop of one alloc() and one
 * free() moves the cache between target - 1 and target, so it never
 * crosses a watermark: it hits the cache every time and sends nothing.
 * Bursts of up to C/4 allocs (or frees) also stay within the band; larger
 * ones cost one GRANT (or RETURN) per 64 PASIDs, not one request each, and
 * a burst that empties the cache grows C (the policy above).
 *
 * The cache fills lazily: the first allocation finds it empty, fetches a
 * batch itself, and kicks the work item. GRANT asks for the range of the
 * last allocation the cache could not serve, so that the cache holds what
 * callers ask for. Cached PASIDs outside that range stay (they serve other
 * callers) until the high watermark, or the quota (see
 * vpasid_alloc_pasid()), sends them back.
 */
static unsigned int vpasid_lease_low(const struct virtio_pasid *vp)
{
	return vp->lease_size / 4;
}

static unsigned int vpasid_lease_target(const struct virtio_pasid *vp)
{
	return max(vp->lease_size / 2, 1U);
}

static unsigned int vpasid_lease_high(const struct virtio_pasid *vp)
{
	return vp->lease_size - vp->lease_size / 4;
}

static struct vpasid_slot *vpasid_lease_post(struct virtio_pasid *vp,
					     u16 opcode, unsigned int count,
					     enum vpasid_lease_wait wait,
					     struct completion *done);

/*
 * Refill ahead of need without waiting: post one GRANT up to the target,
 * counting what unanswered GRANTs will bring; vp->lock held. The reap
 * applies the answer while allocations go on from the cache. False when
 * it could not be posted (the work item then refills). Not re-entered
 * from the reap its slot claim runs.
 */
static bool vpasid_lease_prefetch(struct virtio_pasid *vp)
{
	unsigned int have = vp->ncached + vp->granting;
	struct vpasid_slot *slot;

	if (vp->prefetching)
		return true;
	if (have >= vpasid_lease_target(vp))
		return true;
	vp->prefetching = true;
	slot = vpasid_lease_post(vp, VIRTIO_PASID_OP_GRANT,
				 vpasid_lease_target(vp) - have,
				 VPASID_LEASE_NOWAIT, NULL);
	vp->prefetching = false;
	return !IS_ERR(slot);
}

/*
 * The cache left its band; vp->lock held. Below it, a GRANT is posted at
 * once (vpasid_lease_prefetch()); above it, or when that could not be
 * posted, the work item runs.
 */
void vpasid_lease_kick(struct virtio_pasid *vp)
{
	if (!vp->lease_cap || vp->lease_stopped || vp->unresponsive)
		return;
	if (vp->ncached > vpasid_lease_high(vp))
		schedule_work(&vp->lease_work);
	else if (vp->ncached + vp->granting <= vpasid_lease_low(vp) &&
		 !vp->grant_blocked && !vpasid_lease_prefetch(vp))
		schedule_work(&vp->lease_work);
}

/*
 * Put a PASID the VM holds into the cache; vp->lock held. False when the
 * cache is full: the caller gives it back to the host.
 */
static bool vpasid_cache_put(struct virtio_pasid *vp, u32 pasid)
{
	if (vp->ncached >= vp->lease_size)
		return false;
	if (!vpasid_ids_insert(vp->cache, &vp->ncached, pasid))
		/* Already cached: keep one copy, never hand it out twice. */
		dev_warn_ratelimited(&vp->vdev->dev,
				     "PASID %u is already cached: ignored\n",
				     pasid);
	return true;
}

/* Put @pasid into the cache, or give it back to the host; vp->lock held. */
void vpasid_cache_keep(struct virtio_pasid *vp, u32 pasid)
{
	if (vpasid_cache_put(vp, pasid))
		vpasid_lease_kick(vp);
	else
		vpasid_free_async(vp, pasid);
}

/*
 * The completion of a GRANT or RETURN (the reap, vp->lock held): apply the
 * answer to the cache, as the rule at the top of this file says, whoever
 * waits for it and however @late it comes.
 */
static void vpasid_lease_answered(struct virtio_pasid *vp,
				  struct vpasid_slot *slot, bool late)
{
	const struct vpasid_buf *buf = slot->buf;
	unsigned int count = min_t(unsigned int, le16_to_cpu(buf->lease.count),
				   VIRTIO_PASID_LEASE_BATCH_MAX);
	u32 answered = le32_to_cpu(buf->resp.pasid);
	unsigned int i;

	if (le16_to_cpu(buf->lease.opcode) == VIRTIO_PASID_OP_RETURN) {
		vp->returning -= min(vp->returning, count);
		if (slot->status == VIRTIO_PASID_S_OK) {
			atomic64_inc(&vp->stats.returns);
			vp->grant_blocked = false;
		} else if (slot->status == VIRTIO_PASID_S_RATE_LIMITED ||
			   slot->status == VIRTIO_PASID_S_INTERNAL) {
			/*
			 * Released nothing, and may work later: back into
			 * the cache, without a kick (a retry now would be
			 * refused the same way; the next alloc or free
			 * kicks).
			 */
			for (i = 0; i < count; i++) {
				u32 pasid = le32_to_cpu(buf->returned[i]);

				if (!vpasid_cache_put(vp, pasid))
					vpasid_free_async(vp, pasid);
			}
		} else {
			dev_warn_ratelimited(&vp->vdev->dev,
					     "RETURN of %u PASID(s) failed (%d): not used again\n",
					     count, slot->status);
		}
		return;
	}

	vp->granting -= min(vp->granting, count);
	if (slot->status != VIRTIO_PASID_S_OK) {
		if (slot->status == VIRTIO_PASID_S_QUOTA_EXCEEDED ||
		    slot->status == VIRTIO_PASID_S_NO_SPACE)
			vp->grant_blocked = true;
		return;
	}
	if (!answered || answered > count ||
	    slot->len < sizeof(buf->resp) + answered * sizeof(__le32)) {
		atomic64_inc(&vp->stats.protocol_errors);
		dev_warn_ratelimited(&vp->vdev->dev,
				     "bad GRANT answer: %u of %u PASIDs in %u bytes\n",
				     answered, count, slot->len);
		return;
	}
	atomic64_inc(&vp->stats.refills);
	vp->lease_warm = true;
	for (i = 0; i < answered; i++) {
		u32 pasid = le32_to_cpu(buf->granted[i]);

		if (pasid < le32_to_cpu(buf->lease.min) ||
		    pasid > le32_to_cpu(buf->lease.max)) {
			atomic64_inc(&vp->stats.out_of_range);
			dev_warn_ratelimited(&vp->vdev->dev,
					     "device granted PASID %u outside [%u, %u]\n",
					     pasid, le32_to_cpu(buf->lease.min),
					     le32_to_cpu(buf->lease.max));
			vpasid_free_async(vp, pasid);
			continue;
		}
		if (!vpasid_cache_put(vp, pasid))
			vpasid_free_async(vp, pasid);
	}
	/* Once the whole batch is in: no refill for a half-applied one. */
	vpasid_lease_kick(vp);
}

/*
 * Take up to @count PASIDs out of the cache into a RETURN's @list: the
 * highest, as the lowest serve the usual [1, N] ranges best. vp->lock
 * held. Return how many.
 */
static unsigned int vpasid_cache_pick(struct virtio_pasid *vp,
				      unsigned int count, __le32 *list)
{
	unsigned int n = 0;

	while (n < count && vp->ncached)
		list[n++] = cpu_to_le32(vp->cache[--vp->ncached]);
	return n;
}

/*
 * Post a GRANT of @count in the wanted range, or a RETURN of up to @count
 * cached PASIDs (vpasid_cache_pick()); vp->lock held. With @wait
 * VPASID_LEASE_NOWAIT nobody waits: the slot is VPASID_SLOT_ASYNC and the
 * reap applies the answer. Return the slot or an ERR_PTR (-ENOENT:
 * nothing to return).
 */
static struct vpasid_slot *vpasid_lease_post(struct virtio_pasid *vp,
					     u16 opcode, unsigned int count,
					     enum vpasid_lease_wait wait,
					     struct completion *done)
{
	struct virtio_pasid_lease_req *req;
	struct vpasid_slot *slot;
	unsigned int i, out_len, in_len;
	int err;

	count = min_t(unsigned int, count, VIRTIO_PASID_LEASE_BATCH_MAX);
	slot = vpasid_claim(vp);
	if (IS_ERR(slot))
		return slot;
	req = &slot->buf->lease;
	out_len = sizeof(*req);
	in_len = sizeof(slot->buf->resp);
	if (opcode == VIRTIO_PASID_OP_RETURN) {
		count = vpasid_cache_pick(vp, count, slot->buf->returned);
		vp->returning += count;
		out_len += count * sizeof(__le32);
	} else {
		in_len += count * sizeof(__le32);
	}
	if (!count) {
		vpasid_unclaim(slot);
		return ERR_PTR(-ENOENT);
	}
	if (wait == VPASID_LEASE_SLEEP)
		slot->done = done;
	else if (wait == VPASID_LEASE_NOWAIT)
		slot->state = VPASID_SLOT_ASYNC;
	slot->answered = vpasid_lease_answered;
	req->opcode = cpu_to_le16(opcode);
	req->flags = 0;
	req->count = cpu_to_le16(count);
	req->min = cpu_to_le32(vp->want_min);
	req->max = cpu_to_le32(vp->want_max);
	/* Held and not handed out, before this request: the listed too. */
	req->cached = cpu_to_le16(vp->ncached + vp->returning);

	err = vpasid_post(vp, slot, out_len, in_len);
	if (!err && opcode == VIRTIO_PASID_OP_GRANT)
		vp->granting += count;
	if (err) {
		if (opcode == VIRTIO_PASID_OP_RETURN) {
			/* They just left the cache: they fit back in. */
			vp->returning -= count;
			for (i = 0; i < count; i++)
				vpasid_cache_put(vp, le32_to_cpu(slot->buf->returned[i]));
		}
		vpasid_unclaim(slot);
		return ERR_PTR(err);
	}
	return slot;
}

/*
 * Send a GRANT or RETURN (vpasid_lease_post()) and wait for the answer,
 * bounded: sleeping or busy-polling as @wait says. Return the status or a
 * negative errno; the effect on the cache is vpasid_lease_answered()'s,
 * the request's completion.
 */
static int vpasid_lease_send(struct virtio_pasid *vp, u16 opcode,
			     unsigned int count, enum vpasid_lease_wait wait)
{
	DECLARE_COMPLETION_ONSTACK(done);
	struct vpasid_slot *slot;
	unsigned long flags;
	u32 unused;

	spin_lock_irqsave(&vp->lock, flags);
	slot = vpasid_lease_post(vp, opcode, count, wait, &done);
	spin_unlock_irqrestore(&vp->lock, flags);
	if (IS_ERR(slot))
		return PTR_ERR(slot);
	if (wait == VPASID_LEASE_SLEEP)
		return vpasid_wait(vp, slot, &unused);
	return vpasid_poll(vp, slot, &unused);
}

/* One step towards the band; process context. False when done. */
static bool vpasid_lease_step(struct virtio_pasid *vp)
{
	unsigned long flags;
	unsigned int count = 0;
	u16 opcode = 0;

	spin_lock_irqsave(&vp->lock, flags);
	if (!vp->lease_stopped && !vp->unresponsive) {
		if (vp->ncached > vpasid_lease_high(vp)) {
			opcode = VIRTIO_PASID_OP_RETURN;
			count = vp->ncached - vpasid_lease_target(vp);
		} else if (vp->ncached + vp->granting <=
			   vpasid_lease_low(vp) && !vp->grant_blocked) {
			opcode = VIRTIO_PASID_OP_GRANT;
			count = vpasid_lease_target(vp) - vp->ncached -
				vp->granting;
		}
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	if (!opcode)
		return false;
	return vpasid_lease_send(vp, opcode, count, VPASID_LEASE_SLEEP) ==
	       VIRTIO_PASID_S_OK;
}

static void vpasid_lease_work(struct work_struct *work)
{
	struct virtio_pasid *vp = container_of(work, struct virtio_pasid,
					       lease_work);
	unsigned int round;

	for (round = 0; round < VPASID_LEASE_ROUNDS; round++)
		if (!vpasid_lease_step(vp))
			break;
}

/*
 * Take the lowest cached PASID in [lo, hi]; vp->lock held. False when none
 * is cached there.
 */
bool vpasid_cache_take(struct virtio_pasid *vp, u32 lo, u32 hi, u32 *pasid)
{
	if (!vpasid_ids_take(vp->cache, &vp->ncached, lo, hi, pasid))
		return false;
	vpasid_lease_kick(vp);
	return true;
}

/*
 * A miss of a cache that was filled before: demand outpaces the cache, so
 * its size doubles, up to the host's cap, and the shrink timer runs;
 * vp->lock held.
 */
void vpasid_lease_missed(struct virtio_pasid *vp)
{
	/* The first fill of a cold cache is not demand outpacing it. */
	if (!vp->lease_cap || !vp->lease_warm)
		return;
	vp->lease_missed = true;
	vp->lease_size = min(vp->lease_size * 2, vp->lease_room);
	if (vp->lease_size > vp->lease_cap && !vp->lease_stopped)
		schedule_delayed_work(&vp->shrink_work,
				      msecs_to_jiffies(VPASID_SHRINK_MS));
}

/*
 * Demand fell: a whole period without a miss halves the cache's size,
 * down to lease_cap; the work item returns what lies above the new band.
 */
static void vpasid_lease_shrink(struct work_struct *work)
{
	struct virtio_pasid *vp = container_of(to_delayed_work(work),
					       struct virtio_pasid,
					       shrink_work);
	unsigned long flags;
	bool again;

	spin_lock_irqsave(&vp->lock, flags);
	if (!vp->lease_missed)
		vp->lease_size = max(vp->lease_size / 2, vp->lease_cap);
	vp->lease_missed = false;
	vpasid_lease_kick(vp);
	again = vp->lease_size > vp->lease_cap && !vp->lease_stopped;
	spin_unlock_irqrestore(&vp->lock, flags);
	if (again)
		schedule_delayed_work(&vp->shrink_work,
				      msecs_to_jiffies(VPASID_SHRINK_MS));
}

/*
 * A miss fetches a batch: one GRANT in the wanted range (the caller set
 * it) for the one to hand out and the target behind it, as far as the
 * cache's size, @room (what the quota leaves) and a batch allow,
 * busy-polled (atomic context). The cache then sits at its target, inside
 * its band: nothing to return. Return the status or a negative errno
 * (-ENOSPC: nothing to ask for); the PASIDs granted are in the cache.
 */
int vpasid_lease_fetch(struct virtio_pasid *vp, unsigned int room)
{
	unsigned long flags;
	unsigned int count = 0, held;

	spin_lock_irqsave(&vp->lock, flags);
	held = vp->ncached + vp->returning + vp->granting;
	if (!vp->grant_blocked && vp->lease_size > held)
		count = min3(vp->lease_size - held,
			     vpasid_lease_target(vp) + 1, room);
	spin_unlock_irqrestore(&vp->lock, flags);
	if (!count)
		return -ENOSPC;
	return vpasid_lease_send(vp, VIRTIO_PASID_OP_GRANT, count,
				 VPASID_LEASE_POLL);
}

/*
 * free(): keep @pasid in the cache if leases are on. A full cache first
 * posts a RETURN of its highest PASIDs down to the target, never waited
 * for; with VPASID_RETURN_AHEAD PASIDs in RETURNs still unanswered, the
 * host is behind the frees: rather than pile up requests (and run out of
 * slots), this free sends its RETURN and busy-polls for the answer
 * (atomic context, bounded), as a miss does for its GRANT. False when the
 * caller must tell the host.
 */
bool vpasid_lease_put(struct virtio_pasid *vp, u32 pasid)
{
	struct vpasid_slot *slot;
	unsigned long flags;
	bool kept, wait = false;

	if (!vp->lease_cap)
		return false;
	spin_lock_irqsave(&vp->lock, flags);
	kept = vpasid_cache_put(vp, pasid);
	if (!kept && !vp->lease_stopped && !vp->unresponsive) {
		if (vp->returning >= VPASID_RETURN_AHEAD) {
			wait = true;
		} else {
			slot = vpasid_lease_post(vp, VIRTIO_PASID_OP_RETURN,
						 vp->ncached -
						 vpasid_lease_target(vp),
						 VPASID_LEASE_NOWAIT, NULL);
			if (!IS_ERR(slot))
				kept = vpasid_cache_put(vp, pasid);
		}
	}
	if (kept) {
		vp->grant_blocked = false;
		vpasid_lease_kick(vp);
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	if (!wait)
		return kept;

	vpasid_lease_send(vp, VIRTIO_PASID_OP_RETURN, vpasid_lease_target(vp),
			  VPASID_LEASE_POLL);
	spin_lock_irqsave(&vp->lock, flags);
	kept = vpasid_cache_put(vp, pasid);
	if (kept) {
		vp->grant_blocked = false;
		vpasid_lease_kick(vp);
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	return kept;
}

/*
 * At the quota, make room for an ALLOC: one synchronous RETURN of a cached
 * PASID, busy-polled (atomic context). Return as vpasid_lease_send().
 */
int vpasid_lease_return_one(struct virtio_pasid *vp)
{
	return vpasid_lease_send(vp, VIRTIO_PASID_OP_RETURN, 1,
				 VPASID_LEASE_POLL);
}

/*
 * Probe: the cache's resting size is the module parameter capped by the
 * device's lease_max (0 when the feature was not negotiated); under demand
 * it grows up to lease_max, the array's length.
 */
int vpasid_lease_init(struct virtio_pasid *vp)
{
	INIT_WORK(&vp->lease_work, vpasid_lease_work);
	INIT_DELAYED_WORK(&vp->shrink_work, vpasid_lease_shrink);
	/* A device that answers again may find the cache out of its band. */
	vp->responsive = vpasid_lease_kick;
	vp->lease_stopped = true;
	vp->want_min = vp->pasid_min;
	vp->want_max = vp->pasid_max;
	vp->lease_cap = min(vpasid_lease_wanted(), vp->lease_max);
	vp->lease_size = vp->lease_cap;
	if (!vp->lease_cap)
		return 0;
	vp->lease_room = vp->lease_max;
	vp->cache = kcalloc(vp->lease_room, sizeof(*vp->cache), GFP_KERNEL);
	return vp->cache ? 0 : -ENOMEM;
}

/*
 * The device is live: let the work item run. An empty cache waits for the
 * first allocation, which says which range to fill it from; a cache kept
 * across suspend is brought back into its band.
 */
void vpasid_lease_start(struct virtio_pasid *vp)
{
	unsigned long flags;

	spin_lock_irqsave(&vp->lock, flags);
	vp->lease_stopped = false;
	if (vp->ncached)
		vpasid_lease_kick(vp);
	if (vp->lease_size > vp->lease_cap)
		schedule_delayed_work(&vp->shrink_work,
				      msecs_to_jiffies(VPASID_SHRINK_MS));
	spin_unlock_irqrestore(&vp->lock, flags);
}

/*
 * Remove and freeze: on return neither work item (refill/trim, shrink) is
 * queued or running.
 */
void vpasid_lease_stop(struct virtio_pasid *vp)
{
	unsigned long flags;

	spin_lock_irqsave(&vp->lock, flags);
	vp->lease_stopped = true;
	spin_unlock_irqrestore(&vp->lock, flags);
	cancel_delayed_work_sync(&vp->shrink_work);
	cancel_work_sync(&vp->lease_work);
}

/*
 * Remove with PASIDs still handed out (so no RESET): give the whole cache
 * back in RETURN batches, each wait bounded. Process context, after
 * vpasid_lease_stop() and vpasid_detach().
 */
void vpasid_lease_drain(struct virtio_pasid *vp)
{
	unsigned int round;
	unsigned long flags;
	unsigned int left;

	for (round = 0; round < VPASID_LEASE_ROUNDS; round++)
		if (vpasid_lease_send(vp, VIRTIO_PASID_OP_RETURN,
				      VIRTIO_PASID_LEASE_BATCH_MAX,
				      VPASID_LEASE_SLEEP) !=
		    VIRTIO_PASID_S_OK)
			break;
	spin_lock_irqsave(&vp->lock, flags);
	left = vp->ncached;
	spin_unlock_irqrestore(&vp->lock, flags);
	if (left)
		dev_warn(&vp->vdev->dev,
			 "%u cached PASID(s) not returned: the host keeps them until the next RESET\n",
			 left);
}
