// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid IOASID glue: the one ioasid_allocator_ops of the driver,
 * its registration state machine (register, retry after -EAGAIN, suspend,
 * drain, unregister) and the sysfs files an admin needs (state, backend).
 * This is the only file tied to the IOASID framework of Linux 5.5 to 6.3.
 *
 * The ops and their registration are global because the framework keys
 * IOASID spaces on the ops and keeps calling the first-registered ops'
 * pdata even after those ops are unregistered: one long-lived ops for the
 * whole driver avoids that stale pointer. Everything else is per device.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/ioasid.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sysfs.h>

#include "vpasid.h"

#define VPASID_RETRY_MIN_MS	100
#define VPASID_RETRY_MAX_MS	10000

enum vpasid_state {
	VPASID_UNREGISTERED,
	VPASID_WAITING,		/* ioasid_register_allocator() said -EAGAIN */
	VPASID_ACTIVE,
	VPASID_SUSPENDED,	/* registered, device frozen: PASIDs kept */
	VPASID_DRAINING,	/* device gone, PASIDs still outstanding */
};

static const char * const vpasid_state_names[] = {
	[VPASID_UNREGISTERED]	= "unregistered",
	[VPASID_WAITING]	= "waiting-for-default-ids",
	[VPASID_ACTIVE]		= "active",
	[VPASID_SUSPENDED]	= "suspended",
	[VPASID_DRAINING]	= "draining",
};

/*
 * The registration outlives the device it forwards to: after a removal
 * with PASIDs outstanding it stays registered ("draining") until the last
 * one is freed.
 */
struct vpasid_registration {
	/* Serializes probe, remove, freeze, restore and the work items. */
	struct mutex mutex;
	/* Protects state, vp and outstanding; held across a request. */
	spinlock_t lock;
	enum vpasid_state state;
	struct virtio_pasid *vp;	/* backing device, NULL if none */
	unsigned long outstanding;	/* PASIDs handed to the framework */
	struct work_struct unregister_work;
};

static struct vpasid_registration vpasid_reg;

/* ioasid_allocator_ops.alloc: called with the framework's spinlock held. */
static ioasid_t vpasid_alloc(ioasid_t min, ioasid_t max, void *data)
{
	struct vpasid_registration *reg = data;
	struct virtio_pasid *vp;
	u32 lo, hi, pasid;
	int status;

	spin_lock(&reg->lock);
	vp = reg->vp;
	if (!vp)
		goto out;
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
 * ioasid_allocator_ops.free: called with the framework's spinlock held, so
 * a drained allocator is unregistered from a work item, never from here.
 */
static void vpasid_free(ioasid_t id, void *data)
{
	struct vpasid_registration *reg = data;
	struct virtio_pasid *vp;

	spin_lock(&reg->lock);
	vp = reg->vp;
	/*
	 * Suspended, a PASID can still go into the cache, which needs no
	 * request; otherwise the host keeps its reference until the next
	 * RESET.
	 */
	if (vp && reg->state == VPASID_ACTIVE) {
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
	bool drained;

	spin_lock(&vpasid_reg.lock);
	drained = vpasid_reg.state == VPASID_DRAINING &&
		  !vpasid_reg.outstanding;
	if (drained)
		vpasid_reg.state = VPASID_UNREGISTERED;
	spin_unlock(&vpasid_reg.lock);

	if (drained) {
		ioasid_unregister_allocator(&vpasid_ops);
		pr_info("last PASID freed: IOASID allocator unregistered\n");
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
 * another device backs it or it is still draining (one vpasid device per
 * guest). Nothing is registered yet; see vpasid_register().
 */
int vpasid_attach(struct virtio_pasid *vp)
{
	int err = 0;

	INIT_DELAYED_WORK(&vp->register_work, vpasid_register_work);
	vp->retry_ms = VPASID_RETRY_MIN_MS;
	vp->attempts = 0;

	mutex_lock(&vpasid_reg.mutex);
	if (vpasid_reg.vp || vpasid_reg.state != VPASID_UNREGISTERED) {
		dev_err(&vp->vdev->dev, "only one vpasid device per guest is supported (allocator %s)\n",
			vpasid_state_names[vpasid_reg.state]);
		err = -EBUSY;
	} else {
		spin_lock(&vpasid_reg.lock);
		vpasid_reg.vp = vp;
		spin_unlock(&vpasid_reg.lock);
	}
	mutex_unlock(&vpasid_reg.mutex);
	return err;
}

/* @vp's device is live and was RESET: register (or start waiting). */
void vpasid_register(struct virtio_pasid *vp)
{
	mutex_lock(&vpasid_reg.mutex);
	if (vpasid_reg.vp == vp)
		vpasid_try_register(vp);
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
	bool registered;

	mutex_lock(&vpasid_reg.mutex);
	spin_lock(&vpasid_reg.lock);
	vpasid_reg.vp = NULL;
	outstanding = vpasid_reg.outstanding;
	registered = vpasid_reg.state == VPASID_ACTIVE ||
		     vpasid_reg.state == VPASID_SUSPENDED;
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

void vpasid_ioasid_init(void)
{
	mutex_init(&vpasid_reg.mutex);
	spin_lock_init(&vpasid_reg.lock);
	INIT_WORK(&vpasid_reg.unregister_work, vpasid_unregister_work);
}

/* After the driver is unregistered: no device is left. */
void vpasid_ioasid_exit(void)
{
	cancel_work_sync(&vpasid_reg.unregister_work);
	/* Outstanding PASIDs pin the module: what is left is drained. */
	mutex_lock(&vpasid_reg.mutex);
	vpasid_unregister_drained();
	mutex_unlock(&vpasid_reg.mutex);
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
