// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid IOASID allocator ops: the driver's one
 * ioasid_allocator_ops, whose alloc() and free() the framework calls with
 * its spinlock held. They forward to the backing device by the state of
 * the registration (vpasid_held.c; moved by vpasid_register.c), and keep
 * count of the PASIDs handed out. With vpasid_register.c, the only code
 * tied to the IOASID framework of Linux 5.5 to 6.3.
 *
 * The ops are global because the framework keys IOASID spaces on the ops
 * and keeps calling the first-registered ops' pdata even after those ops
 * are unregistered: one long-lived ops for the whole driver avoids that
 * stale pointer. Everything else is per device.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ioasid.h>
#include <linux/module.h>
#include <linux/virtio.h>

#include "vpasid.h"

/*
 * Lost PASIDs one alloc() may find the host has given back (each costs a
 * round trip under the framework's spinlock) before it gives up.
 */
#define VPASID_REGAIN_MAX	8

/*
 * Serve alloc() from the orphaned cache, which needs no request: draining
 * with no device, any orphan; resuming, one the RECONCILE in progress
 * names once all the same, so that a migrated or re-plugged guest goes on
 * allocating while it reconciles. reg->lock held. Return the PASID or
 * INVALID_IOASID.
 */
static ioasid_t vpasid_alloc_orphan(struct vpasid_registration *reg,
				    ioasid_t min, ioasid_t max)
{
	bool resuming = reg->state == VPASID_RESUMING;
	bool taken;
	u32 pasid;

	if ((!resuming && reg->state != VPASID_DRAINING) || !reg->norphan)
		return INVALID_IOASID;
	if (!reg->outstanding && !try_module_get(THIS_MODULE))
		return INVALID_IOASID;
	taken = resuming ? vpasid_orphan_take_listed(min, max, &pasid) :
			   vpasid_orphan_take(min, max, &pasid);
	if (!taken) {
		if (!reg->outstanding)
			module_put(THIS_MODULE);
		return INVALID_IOASID;
	}
	reg->outstanding++;
	vpasid_held_add(pasid);
	return pasid;
}

/*
 * A PASID for alloc() from @vp, marked handed out; reg->lock held. One
 * the host hands out that is in use here already can only be one a
 * RECONCILE found lost (another VM held it) that the host has since freed
 * and given this VM: the VM holds it again, so it is kept as the VM's own
 * (no longer lost; its user's free tells the host) and the device is asked
 * again for the caller, at most VPASID_REGAIN_MAX times in one call. Any
 * other such PASID fails the allocation (-EEXIST) and is left alone: it
 * is in use here. Return the device's status or a negative errno.
 */
static int vpasid_alloc_held(struct virtio_pasid *vp, u32 lo, u32 hi,
			     unsigned long in_use, u32 *pasid)
{
	unsigned int regained;
	int status, held;

	for (regained = 0; regained <= VPASID_REGAIN_MAX; regained++) {
		status = vpasid_alloc_pasid(vp, lo, hi, in_use, pasid);
		if (status != VIRTIO_PASID_S_OK)
			return status;
		/* In [pasid_min, pasid_max], which the config check bounds. */
		held = vpasid_held_add(*pasid);
		if (held != VPASID_REGAINED)
			break;
		dev_info_ratelimited(&vp->vdev->dev,
				     "PASID %u, lost to a conflict, is the VM's on the host again: kept as in use here, asking again\n",
				     *pasid);
	}
	if (!held)
		return VIRTIO_PASID_S_OK;
	dev_warn_ratelimited(&vp->vdev->dev,
			     "device handed out PASID %u, which is in use here: allocation refused\n",
			     *pasid);
	return -EEXIST;
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
	lo = max_t(u32, min, vp->pasid_min);
	hi = min_t(u32, max, vp->pasid_max);
	if (lo > hi)
		goto reject;
	if (reg->state == VPASID_RESUMING) {
		pasid = vpasid_alloc_orphan(reg, lo, hi);
		if (pasid == INVALID_IOASID)
			goto reject;
		atomic64_inc(&vp->stats.allocs);
		spin_unlock(&reg->lock);
		return pasid;
	}
	if (reg->state != VPASID_ACTIVE)
		goto reject;
	/* Outstanding PASIDs pin the module; see vpasid_free(). */
	if (!reg->outstanding && !try_module_get(THIS_MODULE))
		goto reject;

	status = vpasid_alloc_held(vp, lo, hi, reg->outstanding, &pasid);
	if (status != VIRTIO_PASID_S_OK) {
		if (!reg->outstanding)
			module_put(THIS_MODULE);
		goto out;
	}
	reg->outstanding++;
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
 * Tell whom it concerns that @id, handed out, is free again: reg->lock
 * held, @vp the backing device or NULL. A lost PASID is not the VM's on
 * the host: nobody is told. With no device (draining), it goes into the
 * orphaned cache if that has room, to be served again at once. Otherwise
 * by the state: active, the device's cache or a FREE; resuming, the
 * orphans when the RECONCILE in progress names it once all the same
 * (vpasid_orphan_put_listed()), else a FREE, posted after any RECONCILE
 * that listed the PASID, and the held bit is clear for those after it, so
 * it is released either way (vpasid_held_next()), never the device's
 * cache, which no RECONCILE lists;
 * suspended, the cache, which needs no request. Else the host keeps its
 * reference until the next RESET or RECONCILE.
 */
static void vpasid_release(struct vpasid_registration *reg,
			   struct virtio_pasid *vp, ioasid_t id, bool lost)
{
	if (lost) {
		if (vp)
			atomic64_inc(&vp->stats.lost_frees);
		return;
	}
	if (!vp) {
		if (reg->state == VPASID_DRAINING)
			vpasid_orphan_put(id);
		return;
	}
	switch (reg->state) {
	case VPASID_ACTIVE:
		if (!vpasid_stash_put(vp, id) && !vpasid_lease_put(vp, id))
			vpasid_free_pasid(vp, id);
		return;
	case VPASID_RESUMING:
		if (!vpasid_orphan_put_listed(id))
			vpasid_give_back(vp, id);
		return;
	case VPASID_SUSPENDED:
		if (vpasid_lease_put(vp, id))
			return;
		break;
	case VPASID_UNREGISTERED:
	case VPASID_WAITING:
	case VPASID_DRAINING:
		break;
	}
	atomic64_inc(&vp->stats.unsent_frees);
	dev_warn_ratelimited(&vp->vdev->dev,
			     "PASID %u freed while %s: the host keeps it until the next RESET\n",
			     id, vpasid_state_name(reg->state));
}

/*
 * ioasid_allocator_ops.free: called with the framework's spinlock held, so
 * a drained allocator is unregistered from a work item, never from here.
 */
static void vpasid_free(ioasid_t id, void *data)
{
	struct vpasid_registration *reg = data;
	struct virtio_pasid *vp;

	spin_lock(&reg->lock);
	vp = reg->vp;
	vpasid_release(reg, vp, id, vpasid_held_release(id));
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

/* The framework may call the ops as soon as this returns 0. */
int vpasid_ops_register(void)
{
	return ioasid_register_allocator(&vpasid_ops);
}

void vpasid_ops_unregister(void)
{
	ioasid_unregister_allocator(&vpasid_ops);
}
