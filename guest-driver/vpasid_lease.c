// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid leases (VIRTIO_PASID_F_LEASE): a per-device cache of PASIDs
 * the VM holds on the host but has not handed out, so that alloc() and
 * free() need no round trip. GRANT fills the cache and RETURN trims it,
 * posted by alloc() and free() and never waited for (a work item in
 * process context when they cannot post); the allocator takes from and
 * puts into the cache under vp->lock, which never sleeps.
 *
 * Policy (docs/guest.md, "Leases"). The cache has a size C, between the
 * resting size lease_cap (min(lease, lease_max)) and the host's cap
 * lease_max (lease_room). Its array is descending, so that the lowest
 * PASIDs, which alloc() takes and free() gives back most, sit at its end
 * and cost no move, and it slides within a buffer four times its room, so
 * that a GRANT's batch goes in front of it and a RETURN takes from its
 * front with no move either (vpasid_ids.c, vpasid_cache_recentre()).
 *   - Supply runs ahead of demand: once fewer than C/2 are cached
 *     (counting what unanswered GRANTs bring), GRANTs of a whole batch
 *     each are posted together up to C with one notification, never
 *     waited for (vpasid_lease_refill()), so that up to C PASIDs are on
 *     their way while a burst takes the rest; the reap applies the
 *     answers, from the interrupt, or from alloc() itself while the cache
 *     is short (vpasid_lease_look()).
 *   - Growth: a refill needed again before the last one was answered, or
 *     a cache that ran short (below C/4, vpasid_lease_look()) before it
 *     was, means the burst takes more than C/2 per round trip: C grows
 *     fourfold (up to lease_max), once per refill. A miss (nothing
 *     cached in the range asked for) of a cache that was filled before is
 *     demand the refills did not foresee: C goes to lease_max at once.
 *     A miss is served by the spill, or by the first answer that brings
 *     a PASID in the range: a GRANT's already on its way, or the miss's
 *     own, posted with the refill behind it up to C in one notification
 *     and busy-polled (vpasid_lease_fetch()).
 *     Only what a GRANT cannot serve (nothing granted: a VM at its quota,
 *     or no free PASID in the range) costs a single ALLOC.
 *   - Frees never wait: a free goes into the cache while it holds fewer
 *     than C, at its end or within VPASID_INSERT_MOVES of it; else into
 *     the spill (as long as the quota, so it never fills up). Once the
 *     spill holds twelve batches (vpasid_spill_flush_at()), its whole
 *     batches go back one RETURN each, posted together with one
 *     notification and never waited for (at most vpasid_lease_ahead()
 *     PASIDs unanswered; what is beyond waits in the spill), with no sort
 *     on the free's path; once no free has spilled for
 *     VPASID_SPILL_IDLE_MS (spill_work), what the cache has room for
 *     moves back into it in one sorted merge and the rest goes back the
 *     same way. A refill or a miss takes from the spill (sorted, merged)
 *     before it asks the host.
 *   - Demand falls: once a second (VPASID_SHRINK_MS) with no refill (the
 *     cache below its low mark), miss nor growth, C halves (down to
 *     lease_cap) and what lies above it moves to the spill, so an idle
 *     guest does not sit on a large cache, while bursts a second or less
 *     apart keep theirs. A steady alloc+free loop stays within the band,
 *     so C does not grow for it.
 *   - Cached PASIDs (the spill's too) count against the VM's quota: the
 *     host grants at most its cap less what the driver says it holds, the
 *     driver never asks beyond its cap (unanswered GRANTs included), and
 *     an allocation at the quota with only out-of-range PASIDs held
 *     returns one first.
 *
 * Accounting rule, so that nothing is handed out twice and nothing is
 * lost: every PASID the VM holds on the host is, in the driver, either
 * handed out (the framework's), in the cache, in the spill, in the stash
 * (vpasid_stash_put(): under vpasid_reg.lock), or listed in a RETURN not
 * answered yet (vp->returning). The effect of a GRANT or
 * RETURN answer is applied when the answer arrives
 * (vpasid_lease_answered(), from the reap), whoever waits for it and
 * however late it comes:
 *   - GRANT OK: the PASIDs granted go into the cache in one merge (those
 *     beyond the array's room into the spill; those outside the range
 *     asked for go back with a FREE);
 *   - RETURN OK: the PASIDs listed are gone;
 *   - RETURN answered RATE_LIMITED or INTERNAL: the host released nothing,
 *     so the PASIDs listed go back into the cache or the spill;
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
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "vpasid.h"

static unsigned int lease = 32;
module_param(lease, uint, 0644);
MODULE_PARM_DESC(lease,
		 "Most PASIDs to keep cached per device, capped by the device's lease_max; 0 turns leases off (default 32; read at probe)");

/* Request slots that unanswered GRANTs and RETURNs never take. */
#define VPASID_SLOTS_KEPT	8
/* The spill's length: the quota, within these bounds. */
#define VPASID_SPILL_MIN	(2 * VIRTIO_PASID_LEASE_BATCH_MAX)
#define VPASID_SPILL_MAX	65536
/* How long without a refill or miss before the cache's size halves. */
#define VPASID_SHRINK_MS	1000
/* How long without a free into the spill before its last batch goes. */
#define VPASID_SPILL_IDLE_MS	10
/* cache_buf's length, in lease_rooms: see vpasid_cache_recentre(). */
#define VPASID_CACHE_SPAN	4
/*
 * Most cached PASIDs a free moves to put its PASID in place: one that
 * lies further in goes into the spill instead. Frees in ascending order
 * (a job's processes ending in the order they started) would otherwise
 * move the cache's whole lower part each.
 */
#define VPASID_INSERT_MOVES	16

/* How a lease request's answer is waited for. */
enum vpasid_lease_wait {
	VPASID_LEASE_SLEEP,	/* process context: sleep, bounded */
	VPASID_LEASE_POLL,	/* atomic context: busy-poll, bounded */
	VPASID_LEASE_NOWAIT,	/* posted; the reap applies the answer */
	/* As NOWAIT, but the device is notified later, once for them all. */
	VPASID_LEASE_QUEUED,
};

unsigned int vpasid_lease_wanted(void)
{
	return READ_ONCE(lease);
}

/* A refill's batch: a whole one, or what a small cache's band holds. */
static unsigned int vpasid_lease_batch(const struct virtio_pasid *vp)
{
	return clamp_t(unsigned int, vp->lease_size - vpasid_lease_low(vp), 1,
		       VIRTIO_PASID_LEASE_BATCH_MAX);
}

/*
 * PASIDs in unanswered GRANTs, and in unanswered RETURNs, at most: half
 * of the request slots beyond VPASID_SLOTS_KEPT (which stay for the
 * waited-for requests and FREEs) in whole batches each, so that a refill
 * or a flush goes out as one group (12 batches with the ring's 32 slots).
 */
static unsigned int vpasid_lease_ahead(const struct virtio_pasid *vp)
{
	unsigned int slots = vp->nslots > VPASID_SLOTS_KEPT + 2 ?
			     (vp->nslots - VPASID_SLOTS_KEPT) / 2 : 1;

	return slots * VIRTIO_PASID_LEASE_BATCH_MAX;
}

/*
 * What the host still grants: its cap less what the driver holds and has
 * not handed out, unanswered GRANTs included. vp->lock held.
 */
static unsigned int vpasid_lease_host_room(const struct virtio_pasid *vp)
{
	unsigned int held = vpasid_lease_unused(vp) + vp->granting;

	return vp->lease_max > held ? vp->lease_max - held : 0;
}

static struct vpasid_slot *vpasid_lease_post(struct virtio_pasid *vp,
					     u16 opcode, unsigned int count,
					     enum vpasid_lease_wait wait,
					     struct completion *done);

/*
 * Demand outran the cache: its size becomes @size, and no shrink period
 * counts this one as quiet; vp->lock held.
 */
static void vpasid_lease_grow(struct virtio_pasid *vp, unsigned int size)
{
	vp->lease_demand = true;
	vp->lease_size = max(vp->lease_size, size);
	if (vp->lease_size > vp->lease_cap && !vp->lease_stopped)
		schedule_delayed_work(&vp->shrink_work,
				      msecs_to_jiffies(VPASID_SHRINK_MS));
}

/*
 * A burst takes more than C/2 per round trip (see vpasid_lease_refill()
 * and vpasid_lease_ran_short()): C grows fourfold, up to the host's cap;
 * vp->lock held.
 */
static void vpasid_lease_outrun(struct virtio_pasid *vp)
{
	vpasid_lease_grow(vp, min(vp->lease_size * 4, vp->lease_room));
}

/*
 * The cache slides within cache_buf: a GRANT's batch, higher than what is
 * cached, goes in front of it, and a RETURN or a shrink takes the highest
 * from its front, by moving vp->cache, not the entries (under emulation a
 * move of the whole cache per GRANT cost more than the allocations the
 * batch served). Once a side has no room left, the cache moves back to
 * where both have plenty: room for lease_room entries behind it, which
 * it never outgrows between two moves unless it loses its front, and at
 * least twice that in front. vp->lock held.
 */
static void vpasid_cache_recentre(struct virtio_pasid *vp)
{
	u32 *at = vp->cache_buf + (VPASID_CACHE_SPAN - 1) * vp->lease_room -
		  vp->ncached;

	memmove(at, vp->cache, vp->ncached * sizeof(*vp->cache));
	vp->cache = at;
}

/*
 * Insert @pasid into the cache, which has room, moving at most
 * VPASID_INSERT_MOVES entries: 0, -EEXIST (cached already) or -E2BIG (too
 * far in), as vpasid_desc_insert().
 */
static inline int vpasid_cache_insert(struct virtio_pasid *vp, u32 pasid)
{
	if (vp->cache + vp->ncached ==
	    vp->cache_buf + VPASID_CACHE_SPAN * vp->lease_room)
		vpasid_cache_recentre(vp);
	return vpasid_desc_insert(vp->cache, &vp->ncached, pasid,
				  VPASID_INSERT_MOVES);
}

/*
 * Merge the @m descending @add into the cache, which has room for them,
 * in one pass (vpasid_desc_merge()); vp->lock held. Return how many were
 * cached already.
 */
static unsigned int vpasid_cache_merge(struct virtio_pasid *vp,
				       const u32 *add, unsigned int m)
{
	if (vp->cache - vp->cache_buf < m)
		vpasid_cache_recentre(vp);
	return vpasid_desc_merge(&vp->cache, &vp->ncached, add, m);
}

/* Take the @k highest cached PASIDs off the cache's front. */
static void vpasid_cache_drop_front(struct virtio_pasid *vp, unsigned int k)
{
	vp->cache += k;
	vp->ncached -= k;
}

/*
 * PASIDs waiting in the spill serve before the host is asked: move them
 * back into the cache, up to its size, sorted and merged in one pass.
 * vp->lock held.
 */
static void vpasid_spill_unspill(struct virtio_pasid *vp)
{
	unsigned int level = vpasid_cache_level(vp);
	unsigned int k, n, dup;
	u32 *back;

	if (!vp->nspill || level >= vp->lease_size)
		return;
	k = min(vp->nspill, vp->lease_size - level);
	vp->nspill -= k;
	back = &vp->spill[vp->nspill];
	/* Never twice in the cache: a repeat would be handed out twice. */
	n = vpasid_desc_sort(back, k);
	dup = vpasid_cache_merge(vp, back, n) + k - n;
	if (dup)
		dev_warn_ratelimited(&vp->vdev->dev,
				     "%u spilled PASID(s) already cached: ignored\n",
				     dup);
}

/*
 * Notify the device once of all the lease requests queued
 * (VPASID_LEASE_QUEUED) since the last time; vp->lock held.
 */
static void vpasid_lease_notify(struct virtio_pasid *vp)
{
	if (vp->lease_queued) {
		vp->lease_queued = false;
		virtqueue_kick(vp->vq);
	}
}

/*
 * Refill ahead of need without waiting: from the spill first, then GRANTs
 * of a batch each, posted at once, up to the cache's size (counting what
 * unanswered GRANTs bring), as far as the host's cap and
 * vpasid_lease_ahead() allow; vp->lock held. The reap applies the answers
 * while allocations go on from the cache. False when a GRANT could not
 * be posted (the work item then refills).
 */
static bool vpasid_lease_refill(struct virtio_pasid *vp)
{
	unsigned int count;

	vpasid_spill_unspill(vp);
	/*
	 * Below the mark again before the last refill was answered: the
	 * burst takes more than C/2 per round trip, and refills this small
	 * would run behind it, in small GRANTs. C grows fourfold (up to the
	 * cap), as a miss raises it, before it would miss: from the resting
	 * 32, a burst reaches the default cap in three steps.
	 */
	if (vp->granting && vp->lease_warm &&
	    vpasid_cache_due(vp) < vpasid_lease_low(vp))
		vpasid_lease_outrun(vp);
	/*
	 * Allocations took the cache below its low mark: the size is in
	 * use, and this shrink period is not quiet (bursts a second or less
	 * apart keep it).
	 */
	if (vp->lease_warm)
		vp->lease_demand = true;
	while (!vp->grant_blocked &&
	       vpasid_cache_room(vp) >= vpasid_lease_batch(vp) &&
	       vp->granting < vpasid_lease_ahead(vp)) {
		count = min3(vpasid_cache_room(vp),
			     vpasid_lease_host_room(vp),
			     (unsigned int)VIRTIO_PASID_LEASE_BATCH_MAX);
		if (count < vpasid_lease_batch(vp))
			break;
		if (IS_ERR(vpasid_lease_post(vp, VIRTIO_PASID_OP_GRANT, count,
					     VPASID_LEASE_QUEUED, NULL)))
			return false;
		vp->lease_short = false;
	}
	return true;
}

/*
 * The cache ran short (vpasid_lease_look()) before the GRANTs of the last
 * refill came: the burst takes more than C/2 per round trip, and only
 * looking at the virtqueue kept it from missing, at a small refill per
 * C/2 allocations. C grows fourfold, once per refill, as the mark's rule
 * above and a miss grow it; vp->lock held.
 */
static void vpasid_lease_ran_short(struct virtio_pasid *vp)
{
	if (vp->lease_short || !vp->lease_warm)
		return;
	vp->lease_short = true;
	vpasid_lease_outrun(vp);
}

/*
 * Give the spill back in whole batches, one RETURN each, posted and not
 * waited for, as far as vpasid_lease_ahead() allows; vp->lock held. What
 * is left (less than a batch, or more while the host is behind) waits for
 * the next free, answer or spill_work.
 */
static void vpasid_spill_flush(struct virtio_pasid *vp)
{
	while (vp->nspill >= VIRTIO_PASID_LEASE_BATCH_MAX &&
	       vp->returning < vpasid_lease_ahead(vp))
		if (IS_ERR(vpasid_lease_post(vp, VIRTIO_PASID_OP_RETURN,
					     VIRTIO_PASID_LEASE_BATCH_MAX,
					     VPASID_LEASE_QUEUED, NULL)))
			break;
}

/*
 * The cache moved and left its band (vpasid_cache_moved()), or may have;
 * vp->lock held. Below the low mark it is refilled at once
 * (vpasid_lease_refill()); a spill of a batch or more goes back
 * (vpasid_spill_flush()). The answers come with the interrupt; only when
 * the cache is about to run dry with GRANTs on their way (fewer than C/4
 * cached), or the spill cannot go back for RETURNs still unanswered, is
 * the virtqueue looked at here, so that an answer waiting there is
 * applied without waiting for the interrupt. Not re-entered from the reap
 * that its posting runs (vp->lease_posting).
 */
void vpasid_lease_kick(struct virtio_pasid *vp)
{
	bool low;

	if (!vp->lease_cap || vp->lease_stopped || vp->unresponsive ||
	    vp->lease_posting)
		return;
	vp->lease_posting = true;
	if (vpasid_lease_look(vp)) {
		vpasid_lease_ran_short(vp);
		vpasid_reap(vp);
	} else if (vp->returning >= vpasid_lease_ahead(vp) &&
		   vp->nspill >= VIRTIO_PASID_LEASE_BATCH_MAX) {
		vpasid_reap(vp);
	}
	low = vpasid_cache_due(vp) < vpasid_lease_low(vp);
	if (low && !vpasid_lease_refill(vp))
		schedule_work(&vp->lease_work);
	/*
	 * No unspill first: frees come in any order, and sorting a flush's
	 * worth here cost the free that crossed the mark 300-500 us under
	 * emulation. The spill's whole batches go back; a refill or a miss
	 * (and the work item, in process context) fills the cache's room
	 * from what is left.
	 */
	if (vp->nspill >= vpasid_spill_flush_at(vp))
		vpasid_spill_flush(vp);
	vpasid_lease_notify(vp);
	vp->lease_posting = false;
}

/*
 * Keep a PASID the VM holds and has not handed out; vp->lock held. Into
 * the cache while it is below @size and the PASID's place there is within
 * VPASID_INSERT_MOVES of its end, else into the spill, to go back in a
 * batch. False when both are full.
 */
static inline bool vpasid_lease_hold(struct virtio_pasid *vp, u32 pasid,
				     unsigned int size)
{
	int err;

	if (vp->ncached < size) {
		err = vpasid_cache_insert(vp, pasid);
		if (err == -EEXIST)
			/* Already cached: keep one copy, never hand it out twice. */
			dev_warn_ratelimited(&vp->vdev->dev,
					     "PASID %u is already cached: ignored\n",
					     pasid);
		if (err != -E2BIG)
			return true;
	}
	if (vp->nspill >= vp->spill_room)
		return false;
	vp->spill[vp->nspill++] = pasid;
	/* Set: spill_work is queued, or running and will look again. */
	if (!vp->spilled && !vp->lease_stopped) {
		vp->spilled = true;
		schedule_delayed_work(&vp->spill_work,
				      msecs_to_jiffies(VPASID_SPILL_IDLE_MS));
	}
	return true;
}

/* Put @pasid into the cache, or give it back to the host; vp->lock held. */
void vpasid_cache_keep(struct virtio_pasid *vp, u32 pasid)
{
	if (vpasid_lease_hold(vp, pasid, vp->lease_size))
		vpasid_lease_kick(vp);
	else
		vpasid_free_async(vp, pasid);
}

/*
 * A GRANT answered OK with @answered PASIDs (vp->lock held): those in the
 * range asked for go into the cache in one merge, as far as its array
 * holds them, the rest into the spill; one outside the range goes back
 * with a FREE.
 */
static void vpasid_lease_granted(struct virtio_pasid *vp,
				 const struct vpasid_buf *buf,
				 unsigned int answered)
{
	u32 fresh[VIRTIO_PASID_LEASE_BATCH_MAX];
	u32 min = le32_to_cpu(buf->lease.min), max = le32_to_cpu(buf->lease.max);
	unsigned int i, n = 0, fit, dup;

	for (i = 0; i < answered; i++) {
		u32 pasid = le32_to_cpu(buf->granted[i]);

		if (pasid < min || pasid > max) {
			atomic64_inc(&vp->stats.out_of_range);
			dev_warn_ratelimited(&vp->vdev->dev,
					     "device granted PASID %u outside [%u, %u]\n",
					     pasid, min, max);
			vpasid_free_async(vp, pasid);
			continue;
		}
		fresh[n++] = pasid;
	}
	n = vpasid_desc_sort(fresh, n);
	/* The lowest go into the cache; the array's room bounds them. */
	fit = min(n, vp->lease_room - vp->ncached);
	dup = vpasid_cache_merge(vp, &fresh[n - fit], fit);
	if (dup)
		dev_warn_ratelimited(&vp->vdev->dev,
				     "%u granted PASID(s) already cached: ignored\n",
				     dup);
	for (i = 0; i < n - fit; i++)
		if (!vpasid_lease_hold(vp, fresh[i], 0))
			vpasid_free_async(vp, fresh[i]);
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
			 * the cache or the spill, without a kick (a retry
			 * now would be refused the same way; the next
			 * alloc, free or spill_work tries again).
			 */
			for (i = 0; i < count; i++) {
				u32 pasid = le32_to_cpu(buf->returned[i]);

				if (!vpasid_lease_hold(vp, pasid,
						       vp->lease_size))
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
	vpasid_lease_granted(vp, buf, answered);
	/* Once the whole batch is in: no refill for a half-applied one. */
	vpasid_lease_kick(vp);
}

/*
 * Take up to @count PASIDs into a RETURN's @list: the spill's first, then
 * the cache's highest, as the lowest serve the usual [1, N] ranges best.
 * vp->lock held. Return how many.
 */
static unsigned int vpasid_cache_pick(struct virtio_pasid *vp,
				      unsigned int count, __le32 *list)
{
	unsigned int n = 0, k, i;

	while (n < count && vp->nspill)
		list[n++] = cpu_to_le32(vp->spill[--vp->nspill]);
	k = min(count - n, vp->ncached);
	/* Descending: the highest are the first k. */
	for (i = 0; i < k; i++)
		list[n++] = cpu_to_le32(vp->cache[i]);
	vpasid_cache_drop_front(vp, k);
	return n;
}

/*
 * Post a GRANT of @count in the wanted range, or a RETURN of up to @count
 * held PASIDs (vpasid_cache_pick()); vp->lock held. With @wait
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
	/* Held and not handed out, before this request: the listed too. */
	req->cached = cpu_to_le16(min_t(unsigned int, U16_MAX,
					vpasid_lease_unused(vp)));
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
	else if (wait != VPASID_LEASE_POLL)
		slot->state = VPASID_SLOT_ASYNC;
	slot->answered = vpasid_lease_answered;
	req->opcode = cpu_to_le16(opcode);
	req->flags = 0;
	req->count = cpu_to_le16(count);
	req->min = cpu_to_le32(vp->want_min);
	req->max = cpu_to_le32(vp->want_max);

	if (wait == VPASID_LEASE_QUEUED) {
		err = vpasid_queue(vp, slot, out_len, in_len);
		vp->lease_queued |= !err;
	} else {
		err = vpasid_post(vp, slot, out_len, in_len);
	}
	if (!err && opcode == VIRTIO_PASID_OP_GRANT)
		vp->granting += count;
	if (err) {
		if (opcode == VIRTIO_PASID_OP_RETURN) {
			/* They just left the cache or the spill: they fit back. */
			vp->returning -= count;
			for (i = 0; i < count; i++) {
				u32 pasid = le32_to_cpu(slot->buf->returned[i]);

				if (!vpasid_lease_hold(vp, pasid, vp->lease_room))
					vpasid_free_async(vp, pasid);
			}
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

/*
 * One step of the work item; process context. False when done. Below the
 * low mark: a GRANT of a whole batch (the refill that could not be posted
 * from the kick); else the spill goes back, in whole batches, or all of
 * it once no free has spilled for VPASID_SPILL_IDLE_MS (@all).
 */
static bool vpasid_lease_step(struct virtio_pasid *vp, bool all)
{
	unsigned long flags;
	unsigned int count = 0;
	u16 opcode = 0;

	spin_lock_irqsave(&vp->lock, flags);
	if (!vp->lease_stopped && !vp->unresponsive) {
		/* What the cache has room for does not go back. */
		vpasid_spill_unspill(vp);
		if (vpasid_cache_due(vp) < vpasid_lease_low(vp) &&
		    !vp->grant_blocked) {
			opcode = VIRTIO_PASID_OP_GRANT;
			count = min(vpasid_cache_room(vp),
				    vpasid_lease_host_room(vp));
			/* Whole batches only, as the kick's refill. */
			if (count < vpasid_lease_batch(vp))
				count = 0;
		} else if (vp->nspill >= VIRTIO_PASID_LEASE_BATCH_MAX ||
			   (all && vp->nspill && !vp->spilled)) {
			/*
			 * The last partial batch only while no free spills:
			 * frees that resumed meanwhile (they queued spill_work
			 * again) would otherwise be sent a few at a time.
			 */
			opcode = VIRTIO_PASID_OP_RETURN;
			count = vp->nspill;
		}
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	if (!opcode || !count)
		return false;
	return vpasid_lease_send(vp, opcode, count, VPASID_LEASE_SLEEP) ==
	       VIRTIO_PASID_S_OK;
}

/* Most steps of one run: enough to move a whole cache and spill. */
static unsigned int vpasid_lease_rounds(const struct virtio_pasid *vp)
{
	return (vp->lease_room + vp->spill_room) /
	       VIRTIO_PASID_LEASE_BATCH_MAX + 1;
}

static void vpasid_lease_work(struct work_struct *work)
{
	struct virtio_pasid *vp = container_of(work, struct virtio_pasid,
					       lease_work);
	unsigned int round;

	for (round = 0; round < vpasid_lease_rounds(vp); round++)
		if (!vpasid_lease_step(vp, false))
			break;
}

/*
 * A work item (process context): what the stash keeps goes into the cache
 * too, so that the shrink and the spill's return see it.
 */
static void vpasid_stash_idle(struct virtio_pasid *vp)
{
	spin_lock(&vpasid_reg.lock);
	if (vpasid_reg.vp == vp && vpasid_reg.state == VPASID_ACTIVE)
		vpasid_stash_flush(vp);
	spin_unlock(&vpasid_reg.lock);
}

/*
 * The stash (vpasid_stash_put()) moves into the cache, or the spill, as
 * free() would have put them there one by one; vpasid_reg.lock held. What
 * neither has room for goes back with a FREE.
 */
void vpasid_stash_flush(struct virtio_pasid *vp)
{
	unsigned long flags;
	unsigned int i;

	vp->stash_due = false;
	if (!vp->nstash)
		return;
	spin_lock_irqsave(&vp->lock, flags);
	for (i = 0; i < vp->nstash; i++)
		if (!vpasid_lease_hold(vp, vp->stash[i], vp->lease_size))
			vpasid_free_async(vp, vp->stash[i]);
	vp->nstash = 0;
	vp->grant_blocked = false;
	vpasid_cache_moved(vp);
	spin_unlock_irqrestore(&vp->lock, flags);
}

/*
 * The stash goes beyond the cache's size (vpasid_stash_put()): spill_work
 * moves it on, unless the lease work is stopped, which it cannot have
 * been since this free took vpasid_reg.lock (vpasid_lease_stop()).
 */
void vpasid_stash_due(struct virtio_pasid *vp)
{
	if (vp->lease_stopped)
		return;
	vp->stash_due = true;
	schedule_delayed_work(&vp->spill_work,
			      msecs_to_jiffies(VPASID_SPILL_IDLE_MS));
}

/*
 * No free has spilled for VPASID_SPILL_IDLE_MS: the spill's last,
 * partial batch goes back too. Frees still spilling: look again later.
 */
static void vpasid_spill_idle(struct work_struct *work)
{
	struct virtio_pasid *vp = container_of(to_delayed_work(work),
					       struct virtio_pasid,
					       spill_work);
	unsigned long flags;
	unsigned int round;
	bool busy;

	vpasid_stash_idle(vp);
	spin_lock_irqsave(&vp->lock, flags);
	busy = vp->spilled;
	vp->spilled = false;
	if (busy && !vp->lease_stopped)
		schedule_delayed_work(&vp->spill_work,
				      msecs_to_jiffies(VPASID_SPILL_IDLE_MS));
	spin_unlock_irqrestore(&vp->lock, flags);
	if (busy)
		return;
	for (round = 0; round < vpasid_lease_rounds(vp); round++)
		if (!vpasid_lease_step(vp, true))
			break;
}

/*
 * A miss of a cache that was filled before: demand outran the refills, so
 * the cache's size goes to the host's cap at once (not step by step: each
 * step would cost another miss), and the shrink timer runs; vp->lock held.
 */
void vpasid_lease_missed(struct virtio_pasid *vp)
{
	/* The first fill of a cold cache is not demand outpacing it. */
	if (!vp->lease_cap || !vp->lease_warm)
		return;
	vpasid_lease_grow(vp, vp->lease_room);
}

/*
 * Demand fell: a whole period without a refill, miss or growth halves
 * the cache's size, down to lease_cap; what lies above it moves to the
 * spill, which goes back to the host in batches.
 */
static void vpasid_lease_shrink(struct work_struct *work)
{
	struct virtio_pasid *vp = container_of(to_delayed_work(work),
					       struct virtio_pasid,
					       shrink_work);
	unsigned long flags;
	bool again;
	u32 pasid;

	vpasid_stash_idle(vp);
	spin_lock_irqsave(&vp->lock, flags);
	if (!vp->lease_demand)
		vp->lease_size = max(vp->lease_size / 2, vp->lease_cap);
	vp->lease_demand = false;
	/* The highest first: they are the cache's first entries. */
	while (vp->ncached > vp->lease_size && vp->nspill < vp->spill_room) {
		pasid = vp->cache[0];
		vpasid_cache_drop_front(vp, 1);
		vpasid_lease_hold(vp, pasid, 0);
	}
	vpasid_lease_kick(vp);
	again = vp->lease_size > vp->lease_cap && !vp->lease_stopped;
	spin_unlock_irqrestore(&vp->lock, flags);
	if (again)
		schedule_delayed_work(&vp->shrink_work,
				      msecs_to_jiffies(VPASID_SHRINK_MS));
}

/* What a miss waits for: a PASID in [lo, hi], or nothing more to come. */
struct vpasid_miss {
	u32 lo, hi, pasid;
	bool hit;
};

static bool vpasid_miss_served(struct virtio_pasid *vp, void *arg)
{
	struct vpasid_miss *miss = arg;

	miss->hit = vpasid_cache_take(vp, miss->lo, miss->hi, &miss->pasid);
	return miss->hit || !vp->granting;
}

/*
 * A miss of [lo, hi] (the wanted range, which the caller set): first what
 * waits in the spill, with no request, even while the device is
 * unresponsive; else, unless GRANTs are on their
 * way already, one GRANT of the largest batch the host allows, as far as
 * the cache's size and @room (what the quota leaves) allow. Then it
 * busy-polls (atomic context, bounded by timeout_ms) until the first
 * answer that brings a PASID in the range, its own or an earlier one.
 * Return the status (VIRTIO_PASID_S_OK: *@pasid is the caller's) or a
 * negative errno (-ENOSPC: nothing came).
 */
int vpasid_lease_fetch(struct virtio_pasid *vp, unsigned int room, u32 lo,
		       u32 hi, u32 *pasid)
{
	struct vpasid_miss miss = { .lo = lo, .hi = hi };
	struct vpasid_slot *slot = NULL;
	unsigned long flags;
	unsigned int count = 0;
	int err;

	spin_lock_irqsave(&vp->lock, flags);
	/* The spill needs no device: it serves even an unresponsive one. */
	vpasid_spill_unspill(vp);
	if (vpasid_cache_take(vp, lo, hi, pasid)) {
		spin_unlock_irqrestore(&vp->lock, flags);
		return VIRTIO_PASID_S_OK;
	}
	if (vp->unresponsive) {
		spin_unlock_irqrestore(&vp->lock, flags);
		atomic64_inc(&vp->stats.fast_fails);
		return -ETIMEDOUT;
	}
	if (!vp->grant_blocked)
		count = min3(vpasid_cache_room(vp),
			     vpasid_lease_host_room(vp), room);
	/*
	 * The miss's batch and the refill behind it, up to the cache's size,
	 * in one notification: one round trip brings what the burst that
	 * missed takes next.
	 */
	while (count) {
		slot = vpasid_lease_post(vp, VIRTIO_PASID_OP_GRANT, count,
					 VPASID_LEASE_QUEUED, NULL);
		if (IS_ERR(slot) ||
		    vp->granting + VIRTIO_PASID_LEASE_BATCH_MAX >
		    vpasid_lease_ahead(vp))
			break;
		count -= min_t(unsigned int, count,
			       VIRTIO_PASID_LEASE_BATCH_MAX);
		if (count < VIRTIO_PASID_LEASE_BATCH_MAX)
			break;
	}
	vpasid_lease_notify(vp);
	spin_unlock_irqrestore(&vp->lock, flags);
	if (IS_ERR(slot) && !vp->granting)
		return PTR_ERR(slot);
	err = vpasid_poll_for(vp, vpasid_miss_served, &miss);
	if (err)
		return err;
	if (!miss.hit)
		return -ENOSPC;
	*pasid = miss.pasid;
	return VIRTIO_PASID_S_OK;
}

/*
 * free(): keep @pasid if leases are on: in the cache while it is below its
 * size, else in the spill, which goes back to the host one RETURN per
 * batch, posted and never waited for (vpasid_lease_kick()). A free waits
 * only when the spill, as long as the quota, is full: it then sends a
 * RETURN of a batch of it and busy-polls for the answer (atomic context,
 * bounded). False when the caller must tell the host.
 */
bool vpasid_lease_put(struct virtio_pasid *vp, u32 pasid)
{
	unsigned long flags;
	bool kept, wait;
	ktime_t start;

	if (!vp->lease_cap)
		return false;
	spin_lock_irqsave(&vp->lock, flags);
	kept = vpasid_lease_hold(vp, pasid, vp->lease_size);
	if (kept) {
		vp->grant_blocked = false;
		vpasid_cache_moved(vp);
	}
	wait = !kept && !vp->lease_stopped && !vp->unresponsive;
	spin_unlock_irqrestore(&vp->lock, flags);
	if (!wait)
		return kept;

	start = ktime_get();
	vpasid_lease_send(vp, VIRTIO_PASID_OP_RETURN,
			  VIRTIO_PASID_LEASE_BATCH_MAX, VPASID_LEASE_POLL);
	atomic64_inc(&vp->stats.free_waits);
	atomic64_add(ktime_to_ns(ktime_sub(ktime_get(), start)),
		     &vp->stats.free_wait_ns);
	spin_lock_irqsave(&vp->lock, flags);
	kept = vpasid_lease_hold(vp, pasid, vp->lease_size);
	if (kept) {
		vp->grant_blocked = false;
		vpasid_lease_kick(vp);
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	return kept;
}

/*
 * At the quota, make room for an ALLOC: one synchronous RETURN of a held
 * PASID (the spill's first), busy-polled (atomic context). Return as
 * vpasid_lease_send().
 */
int vpasid_lease_return_one(struct virtio_pasid *vp)
{
	return vpasid_lease_send(vp, VIRTIO_PASID_OP_RETURN, 1,
				 VPASID_LEASE_POLL);
}

/*
 * PASIDs the VM holds and has not handed out: the cache, the spill and
 * the stash.
 */
unsigned int vpasid_lease_held(const struct virtio_pasid *vp)
{
	return READ_ONCE(vp->ncached) + READ_ONCE(vp->nspill) +
	       READ_ONCE(vp->nstash);
}

/*
 * Probe: the cache's resting size is the module parameter capped by the
 * device's lease_max (0 when the feature was not negotiated); under demand
 * it grows up to lease_max, the array's length. The spill is as long as
 * the quota (within VPASID_SPILL_MIN and VPASID_SPILL_MAX): the VM never
 * holds more, so below VPASID_SPILL_MAX no free ever waits for room.
 */
int vpasid_lease_init(struct virtio_pasid *vp)
{
	INIT_WORK(&vp->lease_work, vpasid_lease_work);
	INIT_DELAYED_WORK(&vp->shrink_work, vpasid_lease_shrink);
	INIT_DELAYED_WORK(&vp->spill_work, vpasid_spill_idle);
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
	vp->cache_buf = kvcalloc(VPASID_CACHE_SPAN * vp->lease_room,
				 sizeof(*vp->cache_buf), GFP_KERNEL);
	vp->cache = vp->cache_buf;
	if (vp->cache_buf)
		vpasid_cache_recentre(vp);
	vp->spill_room = clamp_t(u32, vp->quota, VPASID_SPILL_MIN,
				 VPASID_SPILL_MAX);
	vp->spill = kvcalloc(vp->spill_room, sizeof(*vp->spill), GFP_KERNEL);
	return vp->cache && vp->spill ? 0 : -ENOMEM;
}

/*
 * The device is live: let the work items run. An empty cache waits for
 * the first allocation, which says which range to fill it from; a cache
 * kept across suspend is brought back into its band.
 */
void vpasid_lease_start(struct virtio_pasid *vp)
{
	unsigned long flags;

	spin_lock_irqsave(&vp->lock, flags);
	vp->lease_stopped = false;
	if (vp->ncached || vp->nspill)
		vpasid_lease_kick(vp);
	if (vp->nspill)
		schedule_delayed_work(&vp->spill_work,
				      msecs_to_jiffies(VPASID_SPILL_IDLE_MS));
	if (vp->lease_size > vp->lease_cap)
		schedule_delayed_work(&vp->shrink_work,
				      msecs_to_jiffies(VPASID_SHRINK_MS));
	spin_unlock_irqrestore(&vp->lock, flags);
}

/*
 * Remove and freeze: on return no work item (refill/return, shrink,
 * spill) is queued or running.
 */
void vpasid_lease_stop(struct virtio_pasid *vp)
{
	unsigned long flags;

	/* Under vpasid_reg.lock too: free() queues spill_work under it. */
	spin_lock(&vpasid_reg.lock);
	spin_lock_irqsave(&vp->lock, flags);
	vp->lease_stopped = true;
	spin_unlock_irqrestore(&vp->lock, flags);
	spin_unlock(&vpasid_reg.lock);
	cancel_delayed_work_sync(&vp->shrink_work);
	cancel_delayed_work_sync(&vp->spill_work);
	cancel_work_sync(&vp->lease_work);
}

/*
 * Remove with PASIDs still handed out (so no RESET): give the spill and
 * the whole cache back in RETURN batches, each wait bounded. Process
 * context, after vpasid_lease_stop() and vpasid_detach().
 */
void vpasid_lease_drain(struct virtio_pasid *vp)
{
	unsigned int round;
	unsigned long flags;
	unsigned int left;

	for (round = 0; round < vpasid_lease_rounds(vp); round++)
		if (vpasid_lease_send(vp, VIRTIO_PASID_OP_RETURN,
				      VIRTIO_PASID_LEASE_BATCH_MAX,
				      VPASID_LEASE_SLEEP) !=
		    VIRTIO_PASID_S_OK)
			break;
	spin_lock_irqsave(&vp->lock, flags);
	left = vp->ncached + vp->nspill;
	spin_unlock_irqrestore(&vp->lock, flags);
	if (left)
		dev_warn(&vp->vdev->dev,
			 "%u cached PASID(s) not returned: the host keeps them until the next RESET\n",
			 left);
}
