// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid registration state (struct vpasid_registration, one for the
 * driver): what the allocator has handed out ("held", a bitmap), which of
 * those a RECONCILE found the host does not hold for the VM ("lost"), and
 * the cache a removed device left ("orphans"). The ops (vpasid_ioasid.c)
 * update it under its lock; a resume (vpasid_reconcile.c) lists it. The
 * state machine that moves vpasid_reg.state is vpasid_register.c's.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitmap.h>
#include <linux/device.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/virtio_config.h>

#include "vpasid.h"

struct vpasid_registration vpasid_reg;

static const char * const vpasid_state_names[] = {
	[VPASID_UNREGISTERED]	= "unregistered",
	[VPASID_WAITING]	= "waiting-for-default-ids",
	[VPASID_ACTIVE]		= "active",
	[VPASID_SUSPENDED]	= "suspended",
	[VPASID_DRAINING]	= "draining",
	[VPASID_RESUMING]	= "resuming",
};

const char *vpasid_state_name(enum vpasid_state state)
{
	return vpasid_state_names[state];
}

unsigned long vpasid_outstanding(void)
{
	return READ_ONCE(vpasid_reg.outstanding);
}

/* Take the lowest orphan in [lo, hi]; vpasid_reg.lock held. */
bool vpasid_orphan_take(u32 lo, u32 hi, u32 *pasid)
{
	return vpasid_ids_take(vpasid_reg.orphan, &vpasid_reg.norphan, lo, hi,
			       pasid);
}

/*
 * Resuming: narrow [*lo, *hi] to the PASIDs that the RECONCILE in progress
 * names exactly once whether they are handed out or cached: while the
 * handed-out PASIDs are listed, those at or past the cursor (not listed
 * yet: the held bitmap or the orphans will name them); once the orphans
 * are, those the cursor has passed (listed already); after the last
 * batch, all. False when none is. vpasid_reg.lock held.
 */
static bool vpasid_listed_once(u32 *lo, u32 *hi)
{
	u32 at = vpasid_reg.reconcile_at;

	if (!vpasid_reg.reconcile_listed_all) {
		if (at < VPASID_PASID_SPACE)
			*lo = max_t(u32, *lo, at);
		else if (at > VPASID_PASID_SPACE)
			*hi = min_t(u32, *hi, at - VPASID_PASID_SPACE - 1);
		else
			return false;	/* no orphan listed yet */
	}
	return *lo <= *hi;
}

/*
 * Resuming: take the lowest orphan in [lo, hi] that the RECONCILE names
 * exactly once all the same (vpasid_listed_once()): handed out, its held
 * bit makes the scan list it, or it was listed as an orphan already.
 * vpasid_reg.lock held.
 */
bool vpasid_orphan_take_listed(u32 lo, u32 hi, u32 *pasid)
{
	return vpasid_listed_once(&lo, &hi) &&
	       vpasid_orphan_take(lo, hi, pasid);
}

/*
 * Resuming: put the freed @pasid back into the orphans if the RECONCILE
 * in progress names it exactly once all the same (vpasid_listed_once()).
 * Else, or with no room, false: the caller sends a FREE. vpasid_reg.lock
 * held.
 */
bool vpasid_orphan_put_listed(u32 pasid)
{
	u32 lo = pasid, hi = pasid;

	if (!vpasid_listed_once(&lo, &hi) ||
	    vpasid_reg.norphan >= vpasid_reg.orphan_cap)
		return false;
	vpasid_ids_insert(vpasid_reg.orphan, &vpasid_reg.norphan, pasid);
	return true;
}

/* Draining: a freed PASID goes into the orphans if they have room. */
void vpasid_orphan_put(u32 pasid)
{
	if (vpasid_reg.norphan < vpasid_reg.orphan_cap)
		vpasid_ids_insert(vpasid_reg.orphan, &vpasid_reg.norphan, pasid);
}

/*
 * Take the orphans away (the caller frees the array); vpasid_reg.lock
 * held. Their number in *@n.
 */
u32 *vpasid_orphans_detach(unsigned int *n)
{
	u32 *orphan = vpasid_reg.orphan;

	*n = vpasid_reg.norphan;
	vpasid_reg.orphan = NULL;
	vpasid_reg.norphan = 0;
	vpasid_reg.orphan_cap = 0;
	vpasid_reg.reconcile_at = 0;
	vpasid_reg.reconcile_listed_all = false;
	return orphan;
}

/*
 * The held bitmap for RECONCILE: vpasid_held_lock() keeps alloc() and
 * free() out while a batch is listed and posted, so that a FREE is posted
 * after every RECONCILE that listed its PASID, or its PASID is not listed.
 * The lock is a spinlock: nothing in between may sleep.
 */
void vpasid_held_lock(void)
	__acquires(vpasid_reg.lock)
{
	spin_lock(&vpasid_reg.lock);
}

void vpasid_held_unlock(void)
	__releases(vpasid_reg.lock)
{
	spin_unlock(&vpasid_reg.lock);
}

/*
 * List up to @max PASIDs the VM holds from *@cursor on into @list, and
 * move *@cursor past them: first those handed out (the held bitmap; the
 * cursor is the next bit), then the orphaned cache (the cursor is
 * VPASID_PASID_SPACE plus the next PASID). Handed out first, so that a
 * PASID is listed as one or the other: resuming, free() never puts into
 * the orphans, and alloc() takes only orphans this listing names once
 * (vpasid_orphan_take_listed()).
 * Called with vpasid_held_lock(). Return how many.
 */
unsigned int vpasid_held_next(u32 *cursor, __le32 *list, unsigned int max)
{
	unsigned long bit = *cursor;
	unsigned int n = 0, at;

	while (n < max && bit < VPASID_PASID_SPACE) {
		bit = find_next_bit(vpasid_reg.held, VPASID_PASID_SPACE, bit);
		if (bit >= VPASID_PASID_SPACE)
			bit = VPASID_PASID_SPACE;
		else
			list[n++] = cpu_to_le32(bit++);
	}
	if (n == max) {
		*cursor = bit;
		return n;
	}
	at = vpasid_ids_search(vpasid_reg.orphan, vpasid_reg.norphan,
			       bit - VPASID_PASID_SPACE);
	while (n < max && at < vpasid_reg.norphan) {
		list[n++] = cpu_to_le32(vpasid_reg.orphan[at]);
		bit = VPASID_PASID_SPACE + vpasid_reg.orphan[at++] + 1;
	}
	*cursor = bit;
	return n;
}

/*
 * A RECONCILE listing up to @cursor (vpasid_held_next()) was posted;
 * @last when it listed everything. From now on alloc() may hand out the
 * orphans it listed: the host keeps (or reports) them as the VM's, and a
 * FREE of one goes after the list. Called with vpasid_held_lock().
 */
void vpasid_held_listed(u32 cursor, bool last)
{
	vpasid_reg.reconcile_at = cursor;
	vpasid_reg.reconcile_listed_all = last;
}

/* The orphaned cache's size; called with vpasid_held_lock(). */
unsigned int vpasid_held_cached(void)
{
	return vpasid_reg.norphan;
}

/*
 * Apply the host's RECONCILE result for a PASID the driver listed as held.
 * A PASID freed since was released by its FREE or dropped by LAST: nothing
 * to do. A lost one is logged once, when it becomes lost.
 */
void vpasid_held_result(struct virtio_pasid *vp, u32 pasid, u32 result)
{
	struct device *dev = &vp->vdev->dev;
	bool held_here, was_lost = false;

	spin_lock(&vpasid_reg.lock);
	held_here = pasid < VPASID_PASID_SPACE &&
		    test_bit(pasid, vpasid_reg.held);
	/* A cached one the VM does not hold: out of the cache. */
	if (!held_here && (result == VIRTIO_PASID_RECONCILE_CONFLICT ||
			   result == VIRTIO_PASID_RECONCILE_REFUSED)) {
		unsigned int at = vpasid_ids_search(vpasid_reg.orphan,
						    vpasid_reg.norphan, pasid);

		if (at < vpasid_reg.norphan && vpasid_reg.orphan[at] == pasid) {
			vpasid_ids_remove(vpasid_reg.orphan, &vpasid_reg.norphan,
					  at);
			was_lost = true;
		}
	}
	if (held_here && (result == VIRTIO_PASID_RECONCILE_CONFLICT ||
			  result == VIRTIO_PASID_RECONCILE_REFUSED))
		was_lost = __test_and_set_bit(pasid, vpasid_reg.lost);
	else if (held_here)
		was_lost = __test_and_clear_bit(pasid, vpasid_reg.lost);
	spin_unlock(&vpasid_reg.lock);

	if (!held_here) {
		if (was_lost)
			dev_info(dev, "cached PASID %u is not the VM's on the host (result %u): dropped from the cache\n",
				 pasid, result);
		return;
	}
	switch (result) {
	case VIRTIO_PASID_RECONCILE_CONFLICT:
		if (!was_lost)
			dev_warn(dev, "PASID %u is in use here but another VM holds it on the host (conflict): never freed to the host nor reused\n",
				 pasid);
		break;
	case VIRTIO_PASID_RECONCILE_REFUSED:
		if (!was_lost)
			dev_warn(dev, "PASID %u is in use here but the host refused it: never freed to the host nor reused\n",
				 pasid);
		break;
	default:
		if (was_lost)
			dev_info(dev, "PASID %u is held on the host again\n",
				 pasid);
		break;
	}
}

/*
 * The allocator turns draining as @vp goes (vpasid_detach(), with
 * vpasid_reg.lock held, so that no alloc() in between finds neither a
 * device nor a cache): if @vp offered RECONCILE, keep its lease cache for
 * the draining allocator and a later resume instead of returning it.
 * After vpasid_lease_stop(): no work item touches the cache. Orphans
 * still there (a resume that failed) stay, and @vp's cache goes with @vp.
 * The spill (on its way back) is not kept: the host keeps those PASIDs
 * until the resume's RECONCILE, which does not list them, or the next
 * RESET. Return how many were kept.
 */
unsigned int vpasid_orphan_cache(struct virtio_pasid *vp)
{
	unsigned int kept, i;
	unsigned long flags;

	if (vpasid_reg.orphan ||
	    !virtio_has_feature(vp->vdev, VIRTIO_PASID_F_RECONCILE))
		return 0;
	spin_lock_irqsave(&vp->lock, flags);
	kept = vp->cache_buf ? vp->ncached : 0;
	if (vp->cache_buf) {
		/* The cache is descending, the orphans ascending, from the start. */
		memmove(vp->cache_buf, vp->cache,
			vp->ncached * sizeof(*vp->cache));
		for (i = 0; i < vp->ncached / 2; i++)
			swap(vp->cache_buf[i],
			     vp->cache_buf[vp->ncached - 1 - i]);
		vpasid_reg.orphan = vp->cache_buf;
		vpasid_reg.norphan = vp->ncached;
		vpasid_reg.orphan_cap = vp->lease_cap;
		vp->cache_buf = NULL;
		vp->cache = NULL;
		vp->ncached = 0;
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	return kept;
}

/*
 * A resume reconciled: the orphaned cache (what the host kept or
 * re-granted of it) goes into @vp's cache, or back to the host with a FREE
 * when that has no room. Called with vpasid_reg.lock held, as the
 * allocator turns active (vpasid_register()), so that no alloc() in
 * between finds neither the orphans nor the cache; before @vp's lease
 * work starts.
 */
void vpasid_adopt_orphans(struct virtio_pasid *vp)
{
	unsigned long flags;
	unsigned int i, n;
	u32 *orphan;

	orphan = vpasid_orphans_detach(&n);
	spin_lock_irqsave(&vp->lock, flags);
	/* Highest first: each goes at the descending cache's end. */
	for (i = n; i--; )
		vpasid_cache_keep(vp, orphan[i]);
	spin_unlock_irqrestore(&vp->lock, flags);
	kvfree(orphan);
}

/* debugfs: the lost PASIDs, on one line. */
void vpasid_lost_show(struct seq_file *m)
{
	unsigned long bit;

	seq_puts(m, "lost_pasids");
	spin_lock(&vpasid_reg.lock);
	for_each_set_bit(bit, vpasid_reg.lost, VPASID_PASID_SPACE)
		seq_printf(m, " %lu", bit);
	spin_unlock(&vpasid_reg.lock);
	seq_putc(m, '\n');
}

int vpasid_held_init(void)
{
	/* 128 KiB each: allocated once, as alloc() may not allocate. */
	vpasid_reg.held = kvcalloc(BITS_TO_LONGS(VPASID_PASID_SPACE),
				   sizeof(unsigned long), GFP_KERNEL);
	vpasid_reg.lost = kvcalloc(BITS_TO_LONGS(VPASID_PASID_SPACE),
				   sizeof(unsigned long), GFP_KERNEL);
	if (!vpasid_reg.held || !vpasid_reg.lost) {
		vpasid_held_exit();
		return -ENOMEM;
	}
	return 0;
}

void vpasid_held_exit(void)
{
	kvfree(vpasid_reg.held);
	kvfree(vpasid_reg.lost);
}
