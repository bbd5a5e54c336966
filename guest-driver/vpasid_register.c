// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid registration: the state machine of the driver's one IOASID
 * allocator (vpasid_ioasid.c's ops): register, retry after -EAGAIN,
 * suspend, drain, resume on a new device, unregister; and the sysfs files
 * an admin needs (state, backend). The state lives in vpasid_reg
 * (vpasid_held.c), under its mutex and spinlock.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/jiffies.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/virtio_config.h>

#include "vpasid.h"

#define VPASID_RETRY_MIN_MS	100U
#define VPASID_RETRY_MAX_MS	10000U

static void vpasid_set_state(enum vpasid_state state)
{
	spin_lock(&vpasid_reg.lock);
	/* Only an active allocator's alloc() and free() see the stash. */
	if (vpasid_reg.vp && state != VPASID_ACTIVE)
		vpasid_stash_flush(vpasid_reg.vp);
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
	err = vpasid_ops_register();
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
	vp->retry_ms = min_t(unsigned int, vp->retry_ms * 2,
			     VPASID_RETRY_MAX_MS);
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
		orphan = vpasid_orphans_detach(&norphan);
	}
	spin_unlock(&vpasid_reg.lock);

	if (drained) {
		vpasid_ops_unregister();
		kvfree(orphan);
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
			vpasid_state_name(vpasid_reg.state),
			vpasid_reg.vp ? "" :
			"; this device cannot resume: no VIRTIO_PASID_F_RECONCILE");
		err = -EBUSY;
	}
	if (!err) {
		spin_lock(&vpasid_reg.lock);
		vpasid_reg.vp = vp;
		if (*resume) {
			vpasid_reg.state = VPASID_RESUMING;
			vpasid_reg.reconcile_at = 0;
			vpasid_reg.reconcile_listed_all = false;
		}
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
		/* One step: alloc() finds the orphans or the cache. */
		spin_lock(&vpasid_reg.lock);
		vpasid_adopt_orphans(vp);
		vpasid_reg.state = VPASID_ACTIVE;
		spin_unlock(&vpasid_reg.lock);
		dev_info(&vp->vdev->dev, "resumed with %lu PASID(s) outstanding: active\n",
			 vpasid_outstanding());
	} else if (vpasid_reg.vp == vp) {
		vpasid_try_register(vp);
	}
	mutex_unlock(&vpasid_reg.mutex);
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
	unsigned int kept = 0;
	bool registered;

	mutex_lock(&vpasid_reg.mutex);
	spin_lock(&vpasid_reg.lock);
	/* Into the cache: kept for a resume or given back with it. */
	if (vpasid_reg.vp == vp)
		vpasid_stash_flush(vp);
	vpasid_reg.vp = NULL;
	outstanding = vpasid_reg.outstanding;
	registered = vpasid_reg.state == VPASID_ACTIVE ||
		     vpasid_reg.state == VPASID_SUSPENDED ||
		     vpasid_reg.state == VPASID_RESUMING;
	vpasid_reg.state = registered && outstanding ? VPASID_DRAINING :
			   VPASID_UNREGISTERED;
	/* A resume lists the cache: keep it, serve from it meanwhile. */
	if (vpasid_reg.state == VPASID_DRAINING)
		kept = vpasid_orphan_cache(vp);
	spin_unlock(&vpasid_reg.lock);

	if (registered && !outstanding) {
		vpasid_ops_unregister();
		dev_info(dev, "IOASID allocator unregistered\n");
	} else if (outstanding) {
		dev_warn(dev, "removed with %lu PASID(s) outstanding: draining, new allocations refused\n",
			 outstanding);
	}
	if (kept)
		dev_info(dev, "%u cached PASID(s) kept for the draining allocator and a resume\n",
			 kept);
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

int vpasid_registration_init(void)
{
	mutex_init(&vpasid_reg.mutex);
	spin_lock_init(&vpasid_reg.lock);
	INIT_WORK(&vpasid_reg.unregister_work, vpasid_unregister_work);
	return vpasid_held_init();
}

/* After the driver is unregistered: no device is left. */
void vpasid_registration_exit(void)
{
	cancel_work_sync(&vpasid_reg.unregister_work);
	/* Outstanding PASIDs pin the module: what is left is drained. */
	mutex_lock(&vpasid_reg.mutex);
	vpasid_unregister_drained();
	mutex_unlock(&vpasid_reg.mutex);
	vpasid_held_exit();
}

/* What an admin needs: /sys/bus/virtio/drivers/virtio_pasid/{state,backend} */
static ssize_t state_show(struct device_driver *drv, char *buf)
{
	return sysfs_emit(buf, "%s\n",
			  vpasid_state_name(READ_ONCE(vpasid_reg.state)));
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
