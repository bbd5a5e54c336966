// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid device: probe, remove, freeze and restore of the vpasid
 * virtio device, its configuration space (read at probe, shown in sysfs),
 * the device table and the module's init and exit. The set-up and
 * tear-down that probe and restore, remove and freeze share are
 * vpasid_probe_common() and vpasid_remove_common(). See README.md.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bits.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/random.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vpasid.h"

/*
 * The virtio device ID to bind is fixed at build time, so that the device
 * table and the module alias state it: make VPASID_DEVICE_ID=N (Kbuild).
 */
#ifndef VPASID_DEVICE_ID
#define VPASID_DEVICE_ID	VIRTIO_PASID_DEFAULT_DEVICE_ID
#endif

#ifndef VPASID_HAVE_VIRTIO_RESET_DEVICE
/* Before Linux 5.16; Kbuild looks for the real one in the kernel headers. */
static inline void virtio_reset_device(struct virtio_device *vdev)
{
	vdev->config->reset(vdev);
}
#endif

static int vpasid_read_config(struct virtio_pasid *vp)
{
	struct virtio_device *vdev = vp->vdev;

	virtio_cread_le(vdev, struct virtio_pasid_config, version, &vp->version);
	if (vp->version != VIRTIO_PASID_VERSION) {
		dev_err(&vdev->dev, "unsupported protocol version %u (driver speaks %u)\n",
			vp->version, VIRTIO_PASID_VERSION);
		return -EINVAL;
	}
	virtio_cread_le(vdev, struct virtio_pasid_config, pasid_bits,
			&vp->pasid_bits);
	virtio_cread_le(vdev, struct virtio_pasid_config, pasid_min,
			&vp->pasid_min);
	virtio_cread_le(vdev, struct virtio_pasid_config, pasid_max,
			&vp->pasid_max);
	virtio_cread_le(vdev, struct virtio_pasid_config, quota, &vp->quota);
	virtio_cread_le(vdev, struct virtio_pasid_config, space_id,
			&vp->space_id);
	/* Offset 20 is reserved unless the feature was negotiated (5.x.4.1). */
	if (virtio_has_feature(vdev, VIRTIO_PASID_F_LEASE)) {
		virtio_cread_le(vdev, struct virtio_pasid_config, lease_max,
				&vp->lease_max);
		if (!vp->lease_max || vp->lease_max > VIRTIO_PASID_LEASE_MAX) {
			dev_err(&vdev->dev, "invalid lease_max %u with VIRTIO_PASID_F_LEASE (1 to %u)\n",
				vp->lease_max, VIRTIO_PASID_LEASE_MAX);
			return -EINVAL;
		}
	}

	if (!vp->pasid_bits || vp->pasid_bits > VIRTIO_PASID_MAX_BITS ||
	    !vp->pasid_min || vp->pasid_min > vp->pasid_max ||
	    vp->pasid_max >= BIT(vp->pasid_bits)) {
		dev_err(&vdev->dev, "invalid PASID range [%u, %u] of %u bits\n",
			vp->pasid_min, vp->pasid_max, vp->pasid_bits);
		return -EINVAL;
	}
	return 0;
}

/* Set up the virtqueue and make the device live: probe and restore. */
static int vpasid_probe_common(struct virtio_pasid *vp)
{
	struct virtqueue *vq;

	vq = virtio_find_single_vq(vp->vdev, vpasid_vq_done, "request");
	if (IS_ERR(vq))
		return PTR_ERR(vq);
	vp->nslots = min_t(unsigned int, VPASID_SLOTS,
			   virtqueue_get_vring_size(vq) / 2);
	if (!vp->nslots) {
		dev_err(&vp->vdev->dev, "virtqueue too small\n");
		vp->vdev->config->del_vqs(vp->vdev);
		return -EINVAL;
	}
	vpasid_init_slots(vp);
	vp->vq = vq;

	virtio_device_ready(vp->vdev);
	return 0;
}

/* Stop the device and drop the virtqueue: remove and freeze. */
static void vpasid_remove_common(struct virtio_pasid *vp)
{
	unsigned long flags;

	virtio_reset_device(vp->vdev);
	spin_lock_irqsave(&vp->lock, flags);
	vp->vq = NULL;
	spin_unlock_irqrestore(&vp->lock, flags);
	vp->vdev->config->del_vqs(vp->vdev);
}

/*
 * Send RESET: drop every reference this VM holds on the host. Probe and
 * remove may sleep: the wait sleeps, bounded by timeout_ms.
 */
static int vpasid_reset(struct virtio_pasid *vp, u32 *released)
{
	int err;

	err = vpasid_request(vp, VIRTIO_PASID_OP_RESET, 0, 0, 0, NULL, true,
			     released);
	if (err) {
		dev_err(&vp->vdev->dev, "RESET failed (%d)\n", err);
		return -EIO;
	}
	return 0;
}

static int vpasid_probe(struct virtio_device *vdev)
{
	struct virtio_pasid *vp;
	u32 released = 0;
	bool resume;
	int err;

	vp = kzalloc(sizeof(*vp), GFP_KERNEL);
	if (!vp)
		return -ENOMEM;
	vp->vdev = vdev;
	vdev->priv = vp;
	spin_lock_init(&vp->lock);
	vp->instance = get_random_u32();

	err = vpasid_read_config(vp);
	if (err)
		goto err_free;

	vp->bufs = kcalloc(VPASID_SLOTS, sizeof(*vp->bufs), GFP_KERNEL);
	if (!vp->bufs) {
		err = -ENOMEM;
		goto err_free;
	}

	err = vpasid_lease_init(vp);
	if (err)
		goto err_free_bufs;

	err = vpasid_attach(vp, &resume);
	if (err)
		goto err_free_bufs;

	err = vpasid_probe_common(vp);
	if (err)
		goto err_detach;

	/*
	 * Resuming, PASIDs are still in use: tell the host which, and let it
	 * drop the rest. Else drop whatever a previous driver instance left
	 * on the host.
	 */
	if (resume)
		err = vpasid_reconcile(vp);
	else
		err = vpasid_reset(vp, &released);
	if (err)
		goto err_remove_common;
	dev_info(&vdev->dev, "protocol v%u, PASIDs [%u, %u] of %u bits, quota %u, space %#llx, %u slots, lease cache %u (device cap %u); %s %u reference(s)\n",
		 vp->version, vp->pasid_min, vp->pasid_max, vp->pasid_bits,
		 vp->quota, vp->space_id, vp->nslots, vp->lease_cap,
		 vp->lease_max, resume ? "RECONCILE dropped" : "RESET released",
		 resume ? vp->reconciled.dropped : released);

	vpasid_debugfs_add(vp);
	vpasid_register(vp);
	vpasid_lease_start(vp);
	return 0;

err_remove_common:
	vpasid_remove_common(vp);
err_detach:
	vpasid_detach(vp);
err_free_bufs:
	kvfree(vp->cache_buf);
	kvfree(vp->spill);
	kfree(vp->bufs);
err_free:
	kfree(vp);
	return err;
}

static void vpasid_remove(struct virtio_device *vdev)
{
	struct virtio_pasid *vp = vdev->priv;
	unsigned long outstanding, flags;
	unsigned int dropped;
	u32 released;
	bool reset;

	/*
	 * Stop new requests: from here on vp is ours alone. With nothing
	 * handed out RESET releases everything, the cache included; else
	 * the cache goes back with RETURN and the PASIDs handed out stay
	 * held on the host until the next RESET.
	 */
	vpasid_lease_stop(vp);
	outstanding = vpasid_detach(vp);
	reset = vp->vq && !outstanding && !vpasid_reset(vp, &released);
	if (reset) {
		dev_info(&vdev->dev, "RESET released %u reference(s)\n",
			 released);
	} else if (outstanding &&
		   virtio_has_feature(vdev, VIRTIO_PASID_F_RECONCILE)) {
		/* vpasid_detach() kept the cache for a resume. */
		if (vp->vq)
			vpasid_quiesce(vp);
	} else if (vp->vq && outstanding) {
		vpasid_lease_drain(vp);
		/* FREEs that waited for a slot go out before the reset. */
		vpasid_quiesce(vp);
	}
	vpasid_remove_common(vp);
	spin_lock_irqsave(&vp->lock, flags);
	/* After RESET, FREEs still waiting had nothing left to release. */
	dropped = reset ? 0 : vpasid_drop_pending(vp);
	vp->npending = 0;
	spin_unlock_irqrestore(&vp->lock, flags);
	if (dropped)
		dev_warn(&vdev->dev, "%u FREE(s) not sent: the host keeps those PASIDs until the next RESET\n",
			 dropped);
	vpasid_debugfs_remove(vp);
	kvfree(vp->cache_buf);
	kvfree(vp->spill);
	kfree(vp->bufs);
	kfree(vp);
	dev_info(&vdev->dev, "removed\n");
}

/*
 * Suspend (to RAM, idle or disk): the guest keeps its PASIDs, so no RESET
 * here or in restore; the host keeps them across the device reset.
 */
static int vpasid_freeze(struct virtio_device *vdev)
{
	struct virtio_pasid *vp = vdev->priv;
	unsigned int unanswered;

	vpasid_suspend(vp);
	vpasid_lease_stop(vp);
	unanswered = vpasid_quiesce(vp);
	if (unanswered)
		dev_warn(&vdev->dev, "%u request(s) unanswered at freeze: dropped\n",
			 unanswered);
	vpasid_remove_common(vp);
	dev_info(&vdev->dev, "frozen with %lu PASID(s) outstanding\n",
		 vpasid_outstanding());
	return 0;
}

static int vpasid_restore(struct virtio_device *vdev)
{
	struct virtio_pasid *vp = vdev->priv;
	int err;

	err = vpasid_probe_common(vp);
	if (err) {
		dev_err(&vdev->dev, "cannot restore the virtqueue (%d): allocations stay refused\n",
			err);
		return err;
	}
	vpasid_resume(vp);
	vpasid_lease_start(vp);
	dev_info(&vdev->dev, "restored with %lu PASID(s) outstanding\n",
		 vpasid_outstanding());
	return 0;
}

static int vpasid_validate(struct virtio_device *vdev)
{
	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1)) {
		dev_err(&vdev->dev, "legacy (pre-1.0) devices are not supported\n");
		return -ENODEV;
	}
	if (!vdev->config->get) {
		dev_err(&vdev->dev, "device has no configuration space\n");
		return -EINVAL;
	}
	/* lease=0: do not accept leases; ALLOC and FREE as in protocol v1. */
	if (!vpasid_lease_wanted())
		__virtio_clear_bit(vdev, VIRTIO_PASID_F_LEASE);
	return 0;
}

/*
 * Config space values of the bound device: /sys/bus/virtio/devices/virtioN/
 * checkpatch --strict asks for (field) in parentheses (MACRO_ARG_PRECEDENCE);
 * field is a function name prefix and a member name, where they cannot be.
 */
#define VPASID_CONFIG_ATTR(field, fmt)					\
static ssize_t field##_show(struct device *dev,				\
			    struct device_attribute *attr, char *buf)	\
{									\
	struct virtio_pasid *vp = dev_to_virtio(dev)->priv;		\
									\
	return sysfs_emit(buf, fmt "\n", vp->field);			\
}									\
static DEVICE_ATTR_RO(field)

VPASID_CONFIG_ATTR(version, "%u");
VPASID_CONFIG_ATTR(pasid_bits, "%u");
VPASID_CONFIG_ATTR(pasid_min, "%u");
VPASID_CONFIG_ATTR(pasid_max, "%u");
VPASID_CONFIG_ATTR(quota, "%u");
VPASID_CONFIG_ATTR(lease_max, "%u");
VPASID_CONFIG_ATTR(space_id, "%#llx");

static struct attribute *vpasid_dev_attrs[] = {
	&dev_attr_version.attr,
	&dev_attr_pasid_bits.attr,
	&dev_attr_pasid_min.attr,
	&dev_attr_pasid_max.attr,
	&dev_attr_quota.attr,
	&dev_attr_lease_max.attr,
	&dev_attr_space_id.attr,
	NULL
};
ATTRIBUTE_GROUPS(vpasid_dev);

static const struct virtio_device_id id_table[] = {
	{ VPASID_DEVICE_ID, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

/*
 * VIRTIO_F_VERSION_1 is a transport feature, checked in vpasid_validate(),
 * which also drops VIRTIO_PASID_F_LEASE when the lease parameter is 0.
 */
static const unsigned int features[] = {
	VIRTIO_PASID_F_LEASE,
	VIRTIO_PASID_F_RECONCILE,
	VIRTIO_F_VERSION_1,
};

static struct virtio_driver virtio_pasid_driver = {
	.feature_table = features,
	.feature_table_size = ARRAY_SIZE(features),
	.driver.name = KBUILD_MODNAME,
	.driver.groups = vpasid_drv_groups,
	.driver.dev_groups = vpasid_dev_groups,
	.id_table = id_table,
	.validate = vpasid_validate,
	.probe = vpasid_probe,
	.remove = vpasid_remove,
#ifdef CONFIG_PM_SLEEP
	.freeze = vpasid_freeze,
	.restore = vpasid_restore,
#endif
};

static int __init vpasid_init(void)
{
	int err;

	BUILD_BUG_ON(sizeof(struct virtio_pasid_req) != 24);
	BUILD_BUG_ON(sizeof(struct virtio_pasid_resp) != 16);
	BUILD_BUG_ON(sizeof(struct virtio_pasid_config) != 32);
	BUILD_BUG_ON(sizeof(struct virtio_pasid_lease_req) !=
		     sizeof(struct virtio_pasid_req));
	/* One scatterlist entry per part: the lists follow their header. */
	BUILD_BUG_ON(offsetof(struct vpasid_buf, returned) !=
		     sizeof(struct virtio_pasid_req));
	BUILD_BUG_ON(offsetof(struct vpasid_buf, granted) !=
		     offsetof(struct vpasid_buf, resp) +
		     sizeof(struct virtio_pasid_resp));
	BUILD_BUG_ON(VIRTIO_PASID_LEASE_MAX + VIRTIO_PASID_LEASE_BATCH_MAX >
		     U16_MAX);
	BUILD_BUG_ON(VPASID_DEVICE_ID == 0 ||
		     VPASID_DEVICE_ID == VIRTIO_DEV_ANY_ID);

	err = vpasid_registration_init();
	if (err)
		return err;
	vpasid_debugfs_init();
	err = register_virtio_driver(&virtio_pasid_driver);
	if (err) {
		vpasid_debugfs_exit();
		vpasid_registration_exit();
	}
	return err;
}

static void __exit vpasid_exit(void)
{
	unregister_virtio_driver(&virtio_pasid_driver);
	vpasid_registration_exit();
	vpasid_debugfs_exit();
}

module_init(vpasid_init);
module_exit(vpasid_exit);

MODULE_DEVICE_TABLE(virtio, id_table);
MODULE_DESCRIPTION("IOASID allocator backed by the vpasid virtio device");
MODULE_LICENSE("GPL");
MODULE_VERSION("0.1.0");
