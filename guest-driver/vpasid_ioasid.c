// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid IOASID glue: the one ioasid_allocator_ops of the driver,
 * its registration state machine (register, retry after -EAGAIN, suspend,
 * drain, resume on a new device, unregister), the PASIDs handed out
 * ("held") and those the host does not hold for the VM ("lost", found by a
 * RECONCILE), and the sysfs files an admin needs (state, backend).
 * This is the only file tied to the IOASID framework of Linux 5.5 to 6.3.
 *
 * The ops and their registration are global because the framework keys
 * IOASID spaces on the ops and keeps calling the first-registered ops'
 * pdata even after those ops are unregistered: one long-lived ops for the
 * whole driver avoids that stale pointer. Everything else is per device.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitmap.h>
#include <linux/device.h>
#include <linux/ioasid.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/virtio_config.h>

#include "vpasid.h"

#define VPASID_RETRY_MIN_MS	100
#define VPASID_RETRY_MAX_MS	10000
/* Every PASID a device can hand out: the held and lost bitmaps' size. */
#define VPASID_PASID_SPACE	BIT(VIRTIO_PASID_MAX_BITS)

enum vpasid_state {
	VPASID_UNREGISTERED,
	VPASID_WAITING,		/* ioasid_register_allocator() said -EAGAIN */
	VPASID_ACTIVE,
	VPASID_SUSPENDED,	/* registered, device frozen: PASIDs kept */
	VPASID_DRAINING,	/* device gone, PASIDs still outstanding */
	VPASID_RESUMING,	/* registered, a new device reconciles */
};

static const char * const vpasid_state_names[] = {
	[VPASID_UNREGISTERED]	= "unregistered",
	[VPASID_WAITING]	= "waiting-for-default-ids",
	[VPASID_ACTIVE]		= "active",
	[VPASID_SUSPENDED]	= "suspended",
	[VPASID_DRAINING]	= "draining",
	[VPASID_RESUMING]	= "resuming",
};

/*
 * The registration outlives the device it forwards to: after a removal
 * with PASIDs outstanding it stays registered ("draining") until the last
 * one is freed, or until a new device that offers VIRTIO_PASID_F_RECONCILE
 * binds: that one resumes ("resuming", then "active") with the PASIDs kept.
 * For that RECONCILE the registration knows which PASIDs it handed out.
 */
struct vpasid_registration {
	/* Serializes probe, remove, freeze, restore and the work items. */
	struct mutex mutex;
	/* Protects state, vp and outstanding; held across a request. */
	spinlock_t lock;
	enum vpasid_state state;
	struct virtio_pasid *vp;	/* backing device, NULL if none */
	unsigned long outstanding;	/* PASIDs handed to the framework */
	unsigned long *held;		/* those PASIDs, one bit each */
	/*
	 * Handed out, but a RECONCILE found that the host does not hold
	 * them for this VM (CONFLICT, REFUSED): free() tells nobody and
	 * never caches them. A subset of held.
	 */
	unsigned long *lost;
	/*
	 * The lease cache of a removed device that offered RECONCILE: held
	 * on the host, not handed out. Draining, alloc() takes from it and
	 * free() puts into it; a resume lists it and hands it to the new
	 * device's cache. Ascending, norphan of orphan_cap used.
	 */
	u32 *orphan;
	unsigned int norphan;
	unsigned int orphan_cap;
	u64 space_id;			/* of the last device registered */
	struct work_struct unregister_work;
};

static struct vpasid_registration vpasid_reg;

/* Take the lowest orphan in [lo, hi]; reg->lock held. */
static bool vpasid_orphan_take(struct vpasid_registration *reg, u32 lo, u32 hi,
			       u32 *pasid)
{
	unsigned int at = vpasid_ids_search(reg->orphan, reg->norphan, lo);

	if (at >= reg->norphan || reg->orphan[at] > hi)
		return false;
	*pasid = reg->orphan[at];
	vpasid_ids_remove(reg->orphan, &reg->norphan, at);
	return true;
}

/*
 * Draining with no device: serve alloc() from the orphaned cache, which
 * needs no request. reg->lock held. Return the PASID or INVALID_IOASID.
 */
static ioasid_t vpasid_alloc_orphan(struct vpasid_registration *reg,
				    ioasid_t min, ioasid_t max)
{
	u32 pasid;

	if (reg->state != VPASID_DRAINING || !reg->norphan)
		return INVALID_IOASID;
	if (!reg->outstanding && !try_module_get(THIS_MODULE))
		return INVALID_IOASID;
	if (!vpasid_orphan_take(reg, min, max, &pasid)) {
		if (!reg->outstanding)
			module_put(THIS_MODULE);
		return INVALID_IOASID;
	}
	reg->outstanding++;
	__set_bit(pasid, reg->held);
	return pasid;
}

/* ioasid_allocator_ops.alloc: called with the framework's spinlock held. */
static ioasid_t vpasid_alloc(ioasid_t min, ioasid_t max, void *data)
{
	struct vpasid_registration *reg = data;
	struct virtio_pasid *vp;
	u32 lo, hi, pasid;
	int status;

	spin_lock(&reg->lock);
	vp = reg->vp;
	if (!vp) {
		pasid = vpasid_alloc_orphan(reg, min, max);
		spin_unlock(&reg->lock);
		return pasid;
	}
	if (reg->state != VPASID_ACTIVE)
		goto reject;
	lo = max_t(u32, min, vp->pasid_min);
	hi = min_t(u32, max, vp->pasid_max);
	if (lo > hi)
		goto reject;
	/* Outstanding PASIDs pin the module; see vpasid_free(). */
	if (!reg->outstanding && !try_module_get(THIS_MODULE))
		goto reject;

	status = vpasid_alloc_pasid(vp, lo, hi, reg->outstanding, &pasid);
	if (status == VIRTIO_PASID_S_OK && test_bit(pasid, reg->held)) {
		/*
		 * A lost PASID (only those can be) that the host freed and
		 * now gave the VM: it is held for the VM again, and still in
		 * use here, so this allocation fails.
		 */
		__clear_bit(pasid, reg->lost);
		dev_warn_ratelimited(&vp->vdev->dev,
				     "device handed out PASID %u, which is in use here: held on the host again, allocation refused\n",
				     pasid);
		status = -EEXIST;
	}
	if (status != VIRTIO_PASID_S_OK) {
		if (!reg->outstanding)
			module_put(THIS_MODULE);
		goto out;
	}
	reg->outstanding++;
	/* In [pasid_min, pasid_max], which the config check bounds. */
	__set_bit(pasid, reg->held);
	atomic64_inc(&vp->stats.allocs);
	spin_unlock(&reg->lock);
	return pasid;

reject:
	atomic64_inc(&vp->stats.rejected);
out:
	spin_unlock(&reg->lock);
	return INVALID_IOASID;
}

/*
 * ioasid_allocator_ops.free: called with the framework's spinlock held, so
 * a drained allocator is unregistered from a work item, never from here.
 */
static void vpasid_free(ioasid_t id, void *data)
{
	struct vpasid_registration *reg = data;
	struct virtio_pasid *vp;

	bool lost = false;

	spin_lock(&reg->lock);
	vp = reg->vp;
	if (id < VPASID_PASID_SPACE) {
		__clear_bit(id, reg->held);
		lost = __test_and_clear_bit(id, reg->lost);
	}
	/*
	 * A lost PASID is not the VM's on the host: nobody is told. Suspended,
	 * a PASID can still go into the cache, which needs no request;
	 * otherwise the host keeps its reference until the next RESET or
	 * RECONCILE. Resuming, a FREE is posted after any RECONCILE that
	 * listed the PASID and the held bit is clear for those after it, so
	 * it is released either way (vpasid_held_next()); never the cache,
	 * which no RECONCILE lists.
	 */
	if (!vp && !lost && reg->state == VPASID_DRAINING) {
		/* The orphaned cache, if it has room: served again at once. */
		if (reg->norphan < reg->orphan_cap)
			vpasid_ids_insert(reg->orphan, &reg->norphan, id);
	} else if (vp && lost) {
		atomic64_inc(&vp->stats.lost_frees);
	} else if (vp && reg->state == VPASID_RESUMING) {
		vpasid_give_back(vp, id);
	} else if (vp && reg->state == VPASID_ACTIVE) {
		vpasid_free_pasid(vp, id);
	} else if (vp && !(reg->state == VPASID_SUSPENDED &&
			     vpasid_lease_put(vp, id))) {
		atomic64_inc(&vp->stats.unsent_frees);
		dev_warn_ratelimited(&vp->vdev->dev,
				     "PASID %u freed while %s: the host keeps it until the next RESET\n",
				     id, vpasid_state_names[reg->state]);
	}
	if (vp)
		atomic64_inc(&vp->stats.frees);
	if (!WARN_ON_ONCE(!reg->outstanding) && !--reg->outstanding) {
		if (reg->state == VPASID_DRAINING)
			schedule_work(&reg->unregister_work);
		/*
		 * Module exit unregisters the allocator, which takes the
		 * framework's spinlock our caller holds: we return first.
		 */
		module_put(THIS_MODULE);
	}
	spin_unlock(&reg->lock);
}

/* One ops for the whole driver: the framework keys IOASID spaces on it. */
static struct ioasid_allocator_ops vpasid_ops = {
	.alloc = vpasid_alloc,
	.free = vpasid_free,
	.pdata = &vpasid_reg,
};

static void vpasid_set_state(enum vpasid_state state)
{
	spin_lock(&vpasid_reg.lock);
	vpasid_reg.state = state;
	spin_unlock(&vpasid_reg.lock);
}

/* Try to become the IOASID allocator; called with the mutex held. */
static void vpasid_try_register(struct virtio_pasid *vp)
{
	struct device *dev = &vp->vdev->dev;
	bool was_waiting = vpasid_reg.state == VPASID_WAITING;
	int err;

	/* Active first: the framework may call us as soon as we register. */
	vpasid_set_state(VPASID_ACTIVE);
	vp->attempts++;
	err = ioasid_register_allocator(&vpasid_ops);
	if (!err) {
		dev_info(dev, "IOASID allocator registered after %u attempt(s): active\n",
			 vp->attempts);
		return;
	}
	if (err != -EAGAIN) {
		vpasid_set_state(VPASID_UNREGISTERED);
		dev_err(dev, "cannot register the IOASID allocator: %d\n", err);
		return;
	}
	vpasid_set_state(VPASID_WAITING);
	if (!was_waiting)
		dev_info(dev, "default IOASID allocator still holds IDs (-EAGAIN): waiting, retrying with back-off up to %u ms\n",
			 VPASID_RETRY_MAX_MS);
	schedule_delayed_work(&vp->register_work,
			      msecs_to_jiffies(vp->retry_ms));
	vp->retry_ms = min(vp->retry_ms * 2, VPASID_RETRY_MAX_MS);
}

static void vpasid_register_work(struct work_struct *work)
{
	struct virtio_pasid *vp = container_of(to_delayed_work(work),
					       struct virtio_pasid,
					       register_work);

	mutex_lock(&vpasid_reg.mutex);
	if (vpasid_reg.vp == vp && vpasid_reg.state == VPASID_WAITING)
		vpasid_try_register(vp);
	mutex_unlock(&vpasid_reg.mutex);
}

/* Unregister a drained allocator; called with the mutex held. */
static void vpasid_unregister_drained(void)
{
	unsigned int norphan = 0;
	u32 *orphan = NULL;
	bool drained;

	spin_lock(&vpasid_reg.lock);
	drained = vpasid_reg.state == VPASID_DRAINING &&
		  !vpasid_reg.outstanding;
	if (drained) {
		vpasid_reg.state = VPASID_UNREGISTERED;
		orphan = vpasid_reg.orphan;
		norphan = vpasid_reg.norphan;
		vpasid_reg.orphan = NULL;
		vpasid_reg.norphan = 0;
		vpasid_reg.orphan_cap = 0;
	}
	spin_unlock(&vpasid_reg.lock);

	if (drained) {
		ioasid_unregister_allocator(&vpasid_ops);
		kfree(orphan);
		pr_info("last PASID freed: IOASID allocator unregistered%s\n",
			norphan ? "; the host keeps the cached PASIDs until the next RESET" : "");
	}
}

static void vpasid_unregister_work(struct work_struct *work)
{
	mutex_lock(&vpasid_reg.mutex);
	vpasid_unregister_drained();
	mutex_unlock(&vpasid_reg.mutex);
}

/*
 * Claim the allocator for @vp, before its device is live: -EBUSY when
 * another device backs it (one vpasid device per guest). While draining, a
 * device that offers VIRTIO_PASID_F_RECONCILE takes over: *@resume says
 * so, and the caller reconciles instead of sending RESET; without the
 * feature it is -EBUSY too, as RESET would release PASIDs still in use.
 * Nothing is registered yet; see vpasid_register().
 */
int vpasid_attach(struct virtio_pasid *vp, bool *resume)
{
	struct device *dev = &vp->vdev->dev;
	int err = 0;

	INIT_DELAYED_WORK(&vp->register_work, vpasid_register_work);
	vp->retry_ms = VPASID_RETRY_MIN_MS;
	vp->attempts = 0;
	*resume = false;

	mutex_lock(&vpasid_reg.mutex);
	/* Drained meanwhile: its work may not have run yet. */
	vpasid_unregister_drained();
	if (!vpasid_reg.vp && vpasid_reg.state == VPASID_DRAINING &&
	    virtio_has_feature(vp->vdev, VIRTIO_PASID_F_RECONCILE)) {
		*resume = true;
		if (vp->space_id != vpasid_reg.space_id)
			dev_warn(dev, "space %#llx replaces space %#llx: reconciling all the same, conflicts are reported\n",
				 vp->space_id, vpasid_reg.space_id);
	} else if (vpasid_reg.vp || vpasid_reg.state != VPASID_UNREGISTERED) {
		dev_err(dev, "only one vpasid device per guest is supported (allocator %s%s)\n",
			vpasid_state_names[vpasid_reg.state],
			vpasid_reg.vp ? "" :
			"; this device cannot resume: no VIRTIO_PASID_F_RECONCILE");
		err = -EBUSY;
	}
	if (!err) {
		spin_lock(&vpasid_reg.lock);
		vpasid_reg.vp = vp;
		if (*resume)
			vpasid_reg.state = VPASID_RESUMING;
		spin_unlock(&vpasid_reg.lock);
	}
	mutex_unlock(&vpasid_reg.mutex);
	return err;
}

/*
 * @vp's device is live and was RESET, or reconciled: register (or start
 * waiting), or, resuming, take allocations again.
 */
void vpasid_register(struct virtio_pasid *vp)
{
	mutex_lock(&vpasid_reg.mutex);
	vpasid_reg.space_id = vp->space_id;
	if (vpasid_reg.vp == vp && vpasid_reg.state == VPASID_RESUMING) {
		vpasid_set_state(VPASID_ACTIVE);
		dev_info(&vp->vdev->dev, "resumed with %lu PASID(s) outstanding: active\n",
			 vpasid_outstanding());
	} else if (vpasid_reg.vp == vp) {
		vpasid_try_register(vp);
	}
	mutex_unlock(&vpasid_reg.mutex);
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
 * PASID freed into the orphans while it runs is listed as one or the other
 * (resuming, free() never puts into the orphans, and alloc() is refused).
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
 * Remove with PASIDs outstanding from a device that offered RECONCILE:
 * keep its lease cache (vp->cache) for the draining allocator and a later
 * resume instead of returning it. After vpasid_detach() and
 * vpasid_lease_stop(): nothing else touches the cache.
 */
void vpasid_orphan_cache(struct virtio_pasid *vp)
{
	unsigned int kept = 0;
	u32 *old = NULL;

	mutex_lock(&vpasid_reg.mutex);
	spin_lock(&vpasid_reg.lock);
	if (vpasid_reg.state == VPASID_DRAINING && vp->cache) {
		old = vpasid_reg.orphan;
		vpasid_reg.orphan = vp->cache;
		vpasid_reg.norphan = vp->ncached;
		vpasid_reg.orphan_cap = vp->lease_cap;
		kept = vp->ncached;
		vp->cache = NULL;
		vp->ncached = 0;
	}
	spin_unlock(&vpasid_reg.lock);
	mutex_unlock(&vpasid_reg.mutex);
	/* Only a resume empties the orphans, and it takes them over. */
	WARN_ON_ONCE(old);
	kfree(old);
	if (kept)
		dev_info(&vp->vdev->dev, "%u cached PASID(s) kept for the draining allocator and a resume\n",
			 kept);
}

/*
 * A resume reconciled: the orphaned cache (what the host kept or
 * re-granted of it) goes into @vp's cache, or back to the host with a FREE
 * when that has no room. Before @vp's lease work starts.
 */
void vpasid_adopt_orphans(struct virtio_pasid *vp)
{
	unsigned long flags;
	unsigned int i, n;
	u32 *orphan;

	spin_lock(&vpasid_reg.lock);
	orphan = vpasid_reg.orphan;
	n = vpasid_reg.norphan;
	vpasid_reg.orphan = NULL;
	vpasid_reg.norphan = 0;
	vpasid_reg.orphan_cap = 0;
	spin_lock_irqsave(&vp->lock, flags);
	for (i = 0; i < n; i++)
		vpasid_cache_keep(vp, orphan[i]);
	spin_unlock_irqrestore(&vp->lock, flags);
	spin_unlock(&vpasid_reg.lock);
	kfree(orphan);
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

/*
 * Stop using @vp: unregister, or drain while PASIDs are outstanding. On
 * return no request of ours is in flight on @vp and no work item of
 * @vp's is pending or running. Return the PASIDs outstanding.
 */
unsigned long vpasid_detach(struct virtio_pasid *vp)
{
	struct device *dev = &vp->vdev->dev;
	unsigned long outstanding;
	bool registered;

	mutex_lock(&vpasid_reg.mutex);
	spin_lock(&vpasid_reg.lock);
	vpasid_reg.vp = NULL;
	outstanding = vpasid_reg.outstanding;
	registered = vpasid_reg.state == VPASID_ACTIVE ||
		     vpasid_reg.state == VPASID_SUSPENDED ||
		     vpasid_reg.state == VPASID_RESUMING;
	vpasid_reg.state = registered && outstanding ? VPASID_DRAINING :
			   VPASID_UNREGISTERED;
	spin_unlock(&vpasid_reg.lock);

	if (registered && !outstanding) {
		ioasid_unregister_allocator(&vpasid_ops);
		dev_info(dev, "IOASID allocator unregistered\n");
	} else if (outstanding) {
		dev_warn(dev, "removed with %lu PASID(s) outstanding: draining, new allocations refused\n",
			 outstanding);
	}
	mutex_unlock(&vpasid_reg.mutex);

	/* The work sees vp detached and does nothing if it still runs. */
	cancel_delayed_work_sync(&vp->register_work);
	return outstanding;
}

/*
 * Freeze: keep the registration and every PASID, refuse allocations until
 * vpasid_resume(). On return no request of ours is in flight on @vp.
 */
void vpasid_suspend(struct virtio_pasid *vp)
{
	cancel_delayed_work_sync(&vp->register_work);
	mutex_lock(&vpasid_reg.mutex);
	if (vpasid_reg.vp == vp && vpasid_reg.state == VPASID_ACTIVE)
		vpasid_set_state(VPASID_SUSPENDED);
	mutex_unlock(&vpasid_reg.mutex);
}

/* Restore: the device is ready again; carry on where freeze left off. */
void vpasid_resume(struct virtio_pasid *vp)
{
	mutex_lock(&vpasid_reg.mutex);
	if (vpasid_reg.vp == vp && vpasid_reg.state == VPASID_SUSPENDED)
		vpasid_set_state(VPASID_ACTIVE);
	else if (vpasid_reg.vp == vp && vpasid_reg.state == VPASID_WAITING)
		schedule_delayed_work(&vp->register_work,
				      msecs_to_jiffies(vp->retry_ms));
	mutex_unlock(&vpasid_reg.mutex);
}

unsigned long vpasid_outstanding(void)
{
	return READ_ONCE(vpasid_reg.outstanding);
}

int vpasid_ioasid_init(void)
{
	mutex_init(&vpasid_reg.mutex);
	spin_lock_init(&vpasid_reg.lock);
	INIT_WORK(&vpasid_reg.unregister_work, vpasid_unregister_work);
	/* 128 KiB each: allocated once, as alloc() may not allocate. */
	vpasid_reg.held = kvcalloc(BITS_TO_LONGS(VPASID_PASID_SPACE),
				   sizeof(unsigned long), GFP_KERNEL);
	vpasid_reg.lost = kvcalloc(BITS_TO_LONGS(VPASID_PASID_SPACE),
				   sizeof(unsigned long), GFP_KERNEL);
	if (!vpasid_reg.held || !vpasid_reg.lost) {
		kvfree(vpasid_reg.held);
		kvfree(vpasid_reg.lost);
		return -ENOMEM;
	}
	return 0;
}

/* After the driver is unregistered: no device is left. */
void vpasid_ioasid_exit(void)
{
	cancel_work_sync(&vpasid_reg.unregister_work);
	/* Outstanding PASIDs pin the module: what is left is drained. */
	mutex_lock(&vpasid_reg.mutex);
	vpasid_unregister_drained();
	mutex_unlock(&vpasid_reg.mutex);
	kvfree(vpasid_reg.held);
	kvfree(vpasid_reg.lost);
}

/* What an admin needs: /sys/bus/virtio/drivers/virtio_pasid/{state,backend} */
static ssize_t state_show(struct device_driver *drv, char *buf)
{
	return sysfs_emit(buf, "%s\n",
			  vpasid_state_names[READ_ONCE(vpasid_reg.state)]);
}
static DRIVER_ATTR_RO(state);

static ssize_t backend_show(struct device_driver *drv, char *buf)
{
	ssize_t len;

	mutex_lock(&vpasid_reg.mutex);
	len = sysfs_emit(buf, "%s\n", vpasid_reg.vp ?
			 dev_name(&vpasid_reg.vp->vdev->dev) : "none");
	mutex_unlock(&vpasid_reg.mutex);
	return len;
}
static DRIVER_ATTR_RO(backend);

static struct attribute *vpasid_drv_attrs[] = {
	&driver_attr_state.attr,
	&driver_attr_backend.attr,
	NULL
};

static const struct attribute_group vpasid_drv_group = {
	.attrs = vpasid_drv_attrs,
};

const struct attribute_group *vpasid_drv_groups[] = {
	&vpasid_drv_group,
	NULL
};
