// SPDX-License-Identifier: GPL-2.0
/*
 * IOASID allocator backed by the vpasid virtio device.
 *
 * The guest's IOASID framework calls a custom allocator with its spinlock
 * held, so every request is posted on the device's single virtqueue and its
 * answer is polled for with a bounded timeout; nothing here sleeps on that
 * path. One allocator ops is registered for the whole driver and only one
 * vpasid device per guest is supported: the first device to probe backs the
 * allocator and any further device is refused. See README.md.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bits.h>
#include <linux/ioasid.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/random.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/workqueue.h>

#include "virtio_pasid.h"

/* Request slots; a timed-out request keeps its slot until the device answers. */
#define VPASID_SLOTS		16
#define VPASID_RETRY_MIN_MS	100
#define VPASID_RETRY_MAX_MS	10000
/* Response status until the device writes one. */
#define VPASID_S_UNSET		0xffff
/* Failure counters: one per status code, plus one for unknown codes. */
#define VPASID_NR_STATUS	(VIRTIO_PASID_S_RATE_LIMITED + 1)

static unsigned int device_id = VIRTIO_PASID_DEFAULT_DEVICE_ID;
module_param(device_id, uint, 0444);
MODULE_PARM_DESC(device_id, "virtio device ID to bind to (default 37)");

static unsigned int timeout_ms = 2000;
module_param(timeout_ms, uint, 0644);
MODULE_PARM_DESC(timeout_ms,
		 "Longest wait for the device to answer one request, in ms (default 2000)");

enum vpasid_slot_state {
	VPASID_SLOT_FREE,
	VPASID_SLOT_WAITING,	/* posted, a caller polls for it */
	VPASID_SLOT_DONE,	/* answered, the caller has not looked yet */
	VPASID_SLOT_ABANDONED,	/* the caller timed out; the device owns it */
	VPASID_SLOT_ASYNC,	/* a FREE nobody waits for */
};

/* What the device reads and writes: kmalloc'd, never on the stack. */
struct vpasid_buf {
	struct virtio_pasid_req req;
	struct virtio_pasid_resp resp;
};

struct vpasid_slot {
	struct vpasid_buf *buf;
	enum vpasid_slot_state state;
	unsigned int len;	/* bytes the device wrote */
};

struct virtio_pasid {
	struct virtio_device *vdev;
	struct virtqueue *vq;
	/* Protects vq, slots, waiters and seq; taken in the vq callback. */
	spinlock_t lock;
	struct vpasid_buf *bufs;
	struct vpasid_slot slots[VPASID_SLOTS];
	unsigned int nslots;
	unsigned int waiters;	/* callers polling; callbacks off while > 0 */
	u32 instance;		/* high half of every tag */
	u32 seq;		/* low half of every tag */
	/* Configuration space, read once at probe. */
	u32 version;
	u32 pasid_bits;
	u32 pasid_min;
	u32 pasid_max;
	u32 quota;
	u64 space_id;
};

enum vpasid_state {
	VPASID_UNREGISTERED,
	VPASID_WAITING,		/* ioasid_register_allocator() said -EAGAIN */
	VPASID_ACTIVE,
	VPASID_DRAINING,	/* device gone, PASIDs still outstanding */
};

static const char * const vpasid_state_names[] = {
	[VPASID_UNREGISTERED]	= "unregistered",
	[VPASID_WAITING]	= "waiting-for-default-ids",
	[VPASID_ACTIVE]		= "active",
	[VPASID_DRAINING]	= "draining",
};

struct vpasid_stats {
	atomic64_t allocs;
	atomic64_t frees;
	atomic64_t timeouts;
	atomic64_t late_completions;
	atomic64_t no_slot;
	atomic64_t out_of_range;
	atomic64_t protocol_errors;
	atomic64_t rejected;
	atomic64_t last_rtt_ns;
	atomic64_t max_rtt_ns;
	/* Indexed by VIRTIO_PASID_S_*; the last entry counts unknown codes. */
	atomic64_t failures[VPASID_NR_STATUS + 1];
};

/*
 * The allocator outlives the device it forwards to: after a removal with
 * PASIDs outstanding it stays registered ("draining") until the last one
 * is freed, so its state and counters are driver-wide.
 */
struct vpasid_allocator {
	/* Serializes probe, remove and the work items (process context). */
	struct mutex reg_lock;
	/* Protects state, vp and outstanding; held across a request. */
	spinlock_t lock;
	enum vpasid_state state;
	struct virtio_pasid *vp;	/* backing device, NULL if none */
	unsigned long outstanding;	/* PASIDs handed to the framework */
	unsigned int retry_ms;
	unsigned int attempts;
	struct delayed_work register_work;
	struct work_struct unregister_work;
	struct vpasid_stats stats;
};

static struct vpasid_allocator vpasid;

static ioasid_t vpasid_alloc(ioasid_t min, ioasid_t max, void *data);
static void vpasid_free(ioasid_t id, void *data);

/* One ops for the whole driver: the framework keys IOASID spaces on it. */
static struct ioasid_allocator_ops vpasid_ops = {
	.alloc = vpasid_alloc,
	.free = vpasid_free,
	.pdata = &vpasid,
};

#ifndef VPASID_HAVE_VIRTIO_RESET_DEVICE
/* Before Linux 5.16; Kbuild looks for the real one in the kernel headers. */
static inline void virtio_reset_device(struct virtio_device *vdev)
{
	vdev->config->reset(vdev);
}
#endif

static const char *vpasid_op_name(u16 opcode)
{
	switch (opcode) {
	case VIRTIO_PASID_OP_ALLOC:
		return "ALLOC";
	case VIRTIO_PASID_OP_FREE:
		return "FREE";
	case VIRTIO_PASID_OP_RESET:
		return "RESET";
	}
	return "?";
}

/* Called with vp->lock held. */
static struct vpasid_slot *vpasid_get_slot(struct virtio_pasid *vp)
{
	unsigned int i;

	for (i = 0; i < vp->nslots; i++)
		if (vp->slots[i].state == VPASID_SLOT_FREE)
			return &vp->slots[i];
	return NULL;
}

/* Fill in and post a request; called with vp->lock held. */
static int vpasid_post(struct virtio_pasid *vp, struct vpasid_slot *slot,
		       u16 opcode, u32 pasid, u32 min, u32 max)
{
	struct virtio_pasid_req *req = &slot->buf->req;
	struct virtio_pasid_resp *resp = &slot->buf->resp;
	struct scatterlist out, in, *sgs[] = { &out, &in };
	int err;

	if (virtqueue_is_broken(vp->vq))
		return -EIO;

	req->opcode = cpu_to_le16(opcode);
	req->flags = 0;
	req->pasid = cpu_to_le32(pasid);
	req->tag = cpu_to_le64((u64)vp->instance << 32 | vp->seq++);
	req->min = cpu_to_le32(min);
	req->max = cpu_to_le32(max);
	memset(resp, 0, sizeof(*resp));
	resp->status = cpu_to_le16(VPASID_S_UNSET);
	slot->len = 0;

	sg_init_one(&out, req, sizeof(*req));
	sg_init_one(&in, resp, sizeof(*resp));
	/* At most half the ring is in use (two descriptors per slot). */
	err = virtqueue_add_sgs(vp->vq, sgs, 1, 1, slot, GFP_ATOMIC);
	if (WARN_ON_ONCE(err))
		return err;
	virtqueue_kick(vp->vq);
	return 0;
}

/*
 * Check an answered request and count a failure status. Return the status,
 * or -EPROTO when the device did not answer this request in full.
 */
static int vpasid_status(struct virtio_pasid *vp, struct vpasid_slot *slot)
{
	const struct vpasid_buf *buf = slot->buf;
	u16 status = le16_to_cpu(buf->resp.status);

	if (slot->len < sizeof(buf->resp) || buf->resp.tag != buf->req.tag) {
		atomic64_inc(&vpasid.stats.protocol_errors);
		dev_warn_ratelimited(&vp->vdev->dev,
				     "bad answer to %s: %u bytes, tag %#llx, expected %#llx\n",
				     vpasid_op_name(le16_to_cpu(buf->req.opcode)),
				     slot->len, le64_to_cpu(buf->resp.tag),
				     le64_to_cpu(buf->req.tag));
		return -EPROTO;
	}
	if (status >= VPASID_NR_STATUS) {
		atomic64_inc(&vpasid.stats.failures[VPASID_NR_STATUS]);
		return -EPROTO;
	}
	if (status != VIRTIO_PASID_S_OK)
		atomic64_inc(&vpasid.stats.failures[status]);
	return status;
}

/* Give a PASID back to the host without waiting; called with vp->lock held. */
static void vpasid_free_async(struct virtio_pasid *vp, struct vpasid_slot *slot,
			      u32 pasid)
{
	slot->state = VPASID_SLOT_ASYNC;
	if (vpasid_post(vp, slot, VIRTIO_PASID_OP_FREE, pasid, 0, 0)) {
		slot->state = VPASID_SLOT_FREE;
		dev_warn_ratelimited(&vp->vdev->dev,
				     "cannot return PASID %u to the host\n",
				     pasid);
	}
}

/* A request whose caller gave up came back; called with vp->lock held. */
static void vpasid_late(struct virtio_pasid *vp, struct vpasid_slot *slot)
{
	const struct vpasid_buf *buf = slot->buf;

	atomic64_inc(&vpasid.stats.late_completions);
	slot->state = VPASID_SLOT_FREE;
	if (le16_to_cpu(buf->req.opcode) == VIRTIO_PASID_OP_ALLOC &&
	    vpasid_status(vp, slot) == VIRTIO_PASID_S_OK)
		vpasid_free_async(vp, slot, le32_to_cpu(buf->resp.pasid));
}

/* Collect every answered request; called with vp->lock held. */
static void vpasid_reap(struct virtio_pasid *vp)
{
	struct vpasid_slot *slot;
	unsigned int len;

	while ((slot = virtqueue_get_buf(vp->vq, &len))) {
		slot->len = len;
		switch (slot->state) {
		case VPASID_SLOT_WAITING:
			slot->state = VPASID_SLOT_DONE;
			break;
		case VPASID_SLOT_ABANDONED:
			vpasid_late(vp, slot);
			break;
		case VPASID_SLOT_ASYNC:
			vpasid_status(vp, slot);
			slot->state = VPASID_SLOT_FREE;
			break;
		default:
			dev_warn_ratelimited(&vp->vdev->dev,
					     "device returned an idle request\n");
			break;
		}
	}
}

static void vpasid_vq_done(struct virtqueue *vq)
{
	struct virtio_pasid *vp = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vp->lock, flags);
	vpasid_reap(vp);
	spin_unlock_irqrestore(&vp->lock, flags);
}

static void vpasid_note_rtt(ktime_t start)
{
	s64 rtt = ktime_to_ns(ktime_sub(ktime_get(), start));

	atomic64_set(&vpasid.stats.last_rtt_ns, rtt);
	if (rtt > atomic64_read(&vpasid.stats.max_rtt_ns))
		atomic64_set(&vpasid.stats.max_rtt_ns, rtt);
}

/*
 * Send one request and busy-poll for its answer for at most timeout_ms.
 * Safe in atomic context. Return the device's status (>= 0, with the
 * answer's pasid field in *value) or a negative errno.
 */
static int vpasid_request(struct virtio_pasid *vp, u16 opcode, u32 pasid,
			  u32 min, u32 max, u32 *value)
{
	struct vpasid_slot *slot;
	unsigned long flags;
	ktime_t start, deadline;
	int ret;

	spin_lock_irqsave(&vp->lock, flags);
	vpasid_reap(vp);
	slot = vpasid_get_slot(vp);
	if (!slot) {
		spin_unlock_irqrestore(&vp->lock, flags);
		atomic64_inc(&vpasid.stats.no_slot);
		return -EBUSY;
	}
	slot->state = VPASID_SLOT_WAITING;
	ret = vpasid_post(vp, slot, opcode, pasid, min, max);
	if (ret) {
		slot->state = VPASID_SLOT_FREE;
		spin_unlock_irqrestore(&vp->lock, flags);
		return ret;
	}
	/* We poll: spare the device interrupts nobody needs meanwhile. */
	if (!vp->waiters++)
		virtqueue_disable_cb(vp->vq);
	start = ktime_get();
	deadline = ktime_add_ms(start, max(READ_ONCE(timeout_ms), 1U));
	spin_unlock_irqrestore(&vp->lock, flags);

	for (;;) {
		spin_lock_irqsave(&vp->lock, flags);
		vpasid_reap(vp);
		if (slot->state == VPASID_SLOT_DONE)
			break;
		if (ktime_after(ktime_get(), deadline) ||
		    virtqueue_is_broken(vp->vq)) {
			/* The device still owns the buffers: keep the slot. */
			slot->state = VPASID_SLOT_ABANDONED;
			break;
		}
		spin_unlock_irqrestore(&vp->lock, flags);
		cpu_relax();
	}

	if (slot->state == VPASID_SLOT_DONE) {
		vpasid_note_rtt(start);
		ret = vpasid_status(vp, slot);
		*value = le32_to_cpu(slot->buf->resp.pasid);
		slot->state = VPASID_SLOT_FREE;
	} else if (virtqueue_is_broken(vp->vq)) {
		ret = -EIO;
	} else {
		atomic64_inc(&vpasid.stats.timeouts);
		ret = -ETIMEDOUT;
	}
	if (!--vp->waiters) {
		while (!virtqueue_enable_cb(vp->vq))
			vpasid_reap(vp);
	}
	spin_unlock_irqrestore(&vp->lock, flags);

	if (ret < 0)
		dev_warn_ratelimited(&vp->vdev->dev, "%s request failed: %d\n",
				     vpasid_op_name(opcode), ret);
	return ret;
}

/* Return a PASID the caller cannot use to the host, without waiting. */
static void vpasid_give_back(struct virtio_pasid *vp, u32 pasid)
{
	struct vpasid_slot *slot;
	unsigned long flags;

	spin_lock_irqsave(&vp->lock, flags);
	slot = vpasid_get_slot(vp);
	if (slot)
		vpasid_free_async(vp, slot, pasid);
	else
		dev_warn_ratelimited(&vp->vdev->dev,
				     "no slot to return PASID %u to the host\n",
				     pasid);
	spin_unlock_irqrestore(&vp->lock, flags);
}

/* ioasid_allocator_ops.alloc: called with the framework's spinlock held. */
static ioasid_t vpasid_alloc(ioasid_t min, ioasid_t max, void *data)
{
	struct vpasid_allocator *va = data;
	struct virtio_pasid *vp;
	u32 lo, hi, pasid;
	int status;

	spin_lock(&va->lock);
	vp = va->vp;
	if (va->state != VPASID_ACTIVE || !vp)
		goto reject;
	lo = max_t(u32, min, vp->pasid_min);
	hi = min_t(u32, max, vp->pasid_max);
	if (lo > hi)
		goto reject;
	/* Outstanding PASIDs pin the module; see vpasid_free(). */
	if (!va->outstanding && !try_module_get(THIS_MODULE))
		goto reject;

	status = vpasid_request(vp, VIRTIO_PASID_OP_ALLOC, 0, lo, hi, &pasid);
	if (status == VIRTIO_PASID_S_OK && (pasid < lo || pasid > hi)) {
		atomic64_inc(&vpasid.stats.out_of_range);
		dev_warn_ratelimited(&vp->vdev->dev,
				     "device returned PASID %u outside [%u, %u]\n",
				     pasid, lo, hi);
		vpasid_give_back(vp, pasid);
		status = -ERANGE;
	}
	if (status != VIRTIO_PASID_S_OK) {
		if (!va->outstanding)
			module_put(THIS_MODULE);
		spin_unlock(&va->lock);
		return INVALID_IOASID;
	}
	va->outstanding++;
	atomic64_inc(&va->stats.allocs);
	spin_unlock(&va->lock);
	return pasid;

reject:
	atomic64_inc(&va->stats.rejected);
	spin_unlock(&va->lock);
	return INVALID_IOASID;
}

/*
 * ioasid_allocator_ops.free: called with the framework's spinlock held, so
 * a drained allocator is unregistered from a work item, never from here.
 */
static void vpasid_free(ioasid_t id, void *data)
{
	struct vpasid_allocator *va = data;
	u32 unused;

	spin_lock(&va->lock);
	/* Without a device the host keeps its reference until RESET. */
	if (va->state == VPASID_ACTIVE && va->vp)
		vpasid_request(va->vp, VIRTIO_PASID_OP_FREE, id, 0, 0, &unused);
	atomic64_inc(&va->stats.frees);
	if (!WARN_ON_ONCE(!va->outstanding) && !--va->outstanding) {
		if (va->state == VPASID_DRAINING)
			schedule_work(&va->unregister_work);
		/*
		 * Module exit unregisters the allocator, which takes the
		 * framework's spinlock our caller holds: we return first.
		 */
		module_put(THIS_MODULE);
	}
	spin_unlock(&va->lock);
}

static void vpasid_set_state(struct vpasid_allocator *va,
			     enum vpasid_state state)
{
	spin_lock(&va->lock);
	va->state = state;
	spin_unlock(&va->lock);
}

/* Try to become the IOASID allocator; called with reg_lock held. */
static void vpasid_try_register(struct vpasid_allocator *va)
{
	struct device *dev = &va->vp->vdev->dev;
	bool was_waiting = va->state == VPASID_WAITING;
	int err;

	/* Active first: the framework may call us as soon as we register. */
	vpasid_set_state(va, VPASID_ACTIVE);
	va->attempts++;
	err = ioasid_register_allocator(&vpasid_ops);
	if (!err) {
		dev_info(dev, "IOASID allocator registered after %u attempt(s): active\n",
			 va->attempts);
		return;
	}
	if (err != -EAGAIN) {
		vpasid_set_state(va, VPASID_UNREGISTERED);
		dev_err(dev, "cannot register the IOASID allocator: %d\n", err);
		return;
	}
	vpasid_set_state(va, VPASID_WAITING);
	if (!was_waiting)
		dev_info(dev, "default IOASID allocator still holds IDs (-EAGAIN): waiting, retrying with back-off up to %u ms\n",
			 VPASID_RETRY_MAX_MS);
	schedule_delayed_work(&va->register_work,
			      msecs_to_jiffies(va->retry_ms));
	va->retry_ms = min(va->retry_ms * 2, VPASID_RETRY_MAX_MS);
}

static void vpasid_register_work(struct work_struct *work)
{
	struct vpasid_allocator *va = container_of(to_delayed_work(work),
						   struct vpasid_allocator,
						   register_work);

	mutex_lock(&va->reg_lock);
	if (va->state == VPASID_WAITING && va->vp)
		vpasid_try_register(va);
	mutex_unlock(&va->reg_lock);
}

/* Unregister a drained allocator; called with reg_lock held. */
static void vpasid_unregister_drained(struct vpasid_allocator *va)
{
	bool drained;

	spin_lock(&va->lock);
	drained = va->state == VPASID_DRAINING && !va->outstanding;
	if (drained)
		va->state = VPASID_UNREGISTERED;
	spin_unlock(&va->lock);

	if (drained) {
		ioasid_unregister_allocator(&vpasid_ops);
		pr_info("last PASID freed: IOASID allocator unregistered\n");
	}
}

static void vpasid_unregister_work(struct work_struct *work)
{
	struct vpasid_allocator *va = container_of(work, struct vpasid_allocator,
						   unregister_work);

	mutex_lock(&va->reg_lock);
	vpasid_unregister_drained(va);
	mutex_unlock(&va->reg_lock);
}

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

	if (!vp->pasid_bits || vp->pasid_bits > VIRTIO_PASID_MAX_BITS ||
	    !vp->pasid_min || vp->pasid_min > vp->pasid_max ||
	    vp->pasid_max >= BIT(vp->pasid_bits)) {
		dev_err(&vdev->dev, "invalid PASID range [%u, %u] of %u bits\n",
			vp->pasid_min, vp->pasid_max, vp->pasid_bits);
		return -EINVAL;
	}
	return 0;
}

static int vpasid_probe(struct virtio_device *vdev)
{
	struct virtio_pasid *vp;
	unsigned int i;
	u32 released;
	int err;

	mutex_lock(&vpasid.reg_lock);
	if (vpasid.vp || vpasid.state != VPASID_UNREGISTERED) {
		dev_err(&vdev->dev, "only one vpasid device per guest is supported (allocator %s)\n",
			vpasid_state_names[vpasid.state]);
		err = -EBUSY;
		goto out_unlock;
	}

	vp = kzalloc(sizeof(*vp), GFP_KERNEL);
	if (!vp) {
		err = -ENOMEM;
		goto out_unlock;
	}
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

	vp->vq = virtio_find_single_vq(vdev, vpasid_vq_done, "request");
	if (IS_ERR(vp->vq)) {
		err = PTR_ERR(vp->vq);
		goto err_free_bufs;
	}
	vp->nslots = min_t(unsigned int, VPASID_SLOTS,
			   virtqueue_get_vring_size(vp->vq) / 2);
	if (!vp->nslots) {
		dev_err(&vdev->dev, "virtqueue too small\n");
		err = -EINVAL;
		goto err_del_vqs;
	}
	for (i = 0; i < vp->nslots; i++)
		vp->slots[i].buf = &vp->bufs[i];

	virtio_device_ready(vdev);

	/* Drop whatever a previous driver instance left on the host. */
	err = vpasid_request(vp, VIRTIO_PASID_OP_RESET, 0, 0, 0, &released);
	if (err) {
		dev_err(&vdev->dev, "RESET failed (%d)\n", err);
		err = -EIO;
		goto err_reset;
	}
	dev_info(&vdev->dev, "protocol v%u, PASIDs [%u, %u] of %u bits, quota %u, space %#llx, %u slots; RESET released %u reference(s)\n",
		 vp->version, vp->pasid_min, vp->pasid_max, vp->pasid_bits,
		 vp->quota, vp->space_id, vp->nslots, released);

	spin_lock(&vpasid.lock);
	vpasid.vp = vp;
	spin_unlock(&vpasid.lock);
	vpasid.retry_ms = VPASID_RETRY_MIN_MS;
	vpasid.attempts = 0;
	vpasid_try_register(&vpasid);
	mutex_unlock(&vpasid.reg_lock);
	return 0;

err_reset:
	virtio_reset_device(vdev);
err_del_vqs:
	vdev->config->del_vqs(vdev);
err_free_bufs:
	kfree(vp->bufs);
err_free:
	kfree(vp);
out_unlock:
	mutex_unlock(&vpasid.reg_lock);
	return err;
}

static void vpasid_remove(struct virtio_device *vdev)
{
	struct virtio_pasid *vp = vdev->priv;
	unsigned long outstanding;
	bool unregister;
	u32 released;
	int err;

	/* Stop new requests: from here on vp is ours alone. */
	mutex_lock(&vpasid.reg_lock);
	spin_lock(&vpasid.lock);
	vpasid.vp = NULL;
	outstanding = vpasid.outstanding;
	unregister = vpasid.state == VPASID_ACTIVE && !outstanding;
	if (vpasid.state == VPASID_ACTIVE && outstanding)
		vpasid.state = VPASID_DRAINING;
	else
		vpasid.state = VPASID_UNREGISTERED;
	spin_unlock(&vpasid.lock);

	if (unregister) {
		ioasid_unregister_allocator(&vpasid_ops);
		dev_info(&vdev->dev, "IOASID allocator unregistered\n");
	} else if (outstanding) {
		dev_warn(&vdev->dev, "removed with %lu PASID(s) outstanding: draining, new allocations refused\n",
			 outstanding);
	}
	mutex_unlock(&vpasid.reg_lock);

	/* Outstanding PASIDs stay held on the host until the next RESET. */
	if (!outstanding) {
		err = vpasid_request(vp, VIRTIO_PASID_OP_RESET, 0, 0, 0,
				     &released);
		if (err)
			dev_warn(&vdev->dev, "RESET failed (%d)\n", err);
		else
			dev_info(&vdev->dev, "RESET released %u reference(s)\n",
				 released);
	}

	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
	kfree(vp->bufs);
	kfree(vp);
	dev_info(&vdev->dev, "removed\n");
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
	return 0;
}

/* Config space values of the bound device: /sys/bus/virtio/devices/virtioN/ */
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
VPASID_CONFIG_ATTR(space_id, "%#llx");

static struct attribute *vpasid_dev_attrs[] = {
	&dev_attr_version.attr,
	&dev_attr_pasid_bits.attr,
	&dev_attr_pasid_min.attr,
	&dev_attr_pasid_max.attr,
	&dev_attr_quota.attr,
	&dev_attr_space_id.attr,
	NULL
};
ATTRIBUTE_GROUPS(vpasid_dev);

/* Driver-wide state: /sys/bus/virtio/drivers/virtio_pasid/ */
#define VPASID_STAT_ATTR(name, counter)					\
static ssize_t name##_show(struct device_driver *drv, char *buf)	\
{									\
	return sysfs_emit(buf, "%llu\n",				\
			  (u64)atomic64_read(&vpasid.stats.counter));	\
}									\
static DRIVER_ATTR_RO(name)

VPASID_STAT_ATTR(allocs, allocs);
VPASID_STAT_ATTR(frees, frees);
VPASID_STAT_ATTR(timeouts, timeouts);
VPASID_STAT_ATTR(late_completions, late_completions);
VPASID_STAT_ATTR(no_slot, no_slot);
VPASID_STAT_ATTR(out_of_range, out_of_range);
VPASID_STAT_ATTR(protocol_errors, protocol_errors);
VPASID_STAT_ATTR(rejected, rejected);
VPASID_STAT_ATTR(last_rtt_ns, last_rtt_ns);
VPASID_STAT_ATTR(max_rtt_ns, max_rtt_ns);
VPASID_STAT_ATTR(no_space, failures[VIRTIO_PASID_S_NO_SPACE]);
VPASID_STAT_ATTR(quota_exceeded, failures[VIRTIO_PASID_S_QUOTA_EXCEEDED]);
VPASID_STAT_ATTR(invalid, failures[VIRTIO_PASID_S_INVALID]);
VPASID_STAT_ATTR(not_owner, failures[VIRTIO_PASID_S_NOT_OWNER]);
VPASID_STAT_ATTR(not_found, failures[VIRTIO_PASID_S_NOT_FOUND]);
VPASID_STAT_ATTR(internal, failures[VIRTIO_PASID_S_INTERNAL]);
VPASID_STAT_ATTR(rate_limited, failures[VIRTIO_PASID_S_RATE_LIMITED]);
VPASID_STAT_ATTR(unknown, failures[VPASID_NR_STATUS]);

static ssize_t state_show(struct device_driver *drv, char *buf)
{
	return sysfs_emit(buf, "%s\n",
			  vpasid_state_names[READ_ONCE(vpasid.state)]);
}
static DRIVER_ATTR_RO(state);

static ssize_t outstanding_show(struct device_driver *drv, char *buf)
{
	return sysfs_emit(buf, "%lu\n", READ_ONCE(vpasid.outstanding));
}
static DRIVER_ATTR_RO(outstanding);

static ssize_t register_attempts_show(struct device_driver *drv, char *buf)
{
	return sysfs_emit(buf, "%u\n", READ_ONCE(vpasid.attempts));
}
static DRIVER_ATTR_RO(register_attempts);

static ssize_t backend_show(struct device_driver *drv, char *buf)
{
	ssize_t len;

	mutex_lock(&vpasid.reg_lock);
	len = sysfs_emit(buf, "%s\n",
			 vpasid.vp ? dev_name(&vpasid.vp->vdev->dev) : "none");
	mutex_unlock(&vpasid.reg_lock);
	return len;
}
static DRIVER_ATTR_RO(backend);

static struct attribute *vpasid_drv_attrs[] = {
	&driver_attr_state.attr,
	&driver_attr_backend.attr,
	&driver_attr_register_attempts.attr,
	&driver_attr_outstanding.attr,
	&driver_attr_allocs.attr,
	&driver_attr_frees.attr,
	&driver_attr_timeouts.attr,
	&driver_attr_late_completions.attr,
	&driver_attr_no_slot.attr,
	&driver_attr_out_of_range.attr,
	&driver_attr_protocol_errors.attr,
	&driver_attr_rejected.attr,
	&driver_attr_last_rtt_ns.attr,
	&driver_attr_max_rtt_ns.attr,
	NULL
};

static const struct attribute_group vpasid_drv_group = {
	.attrs = vpasid_drv_attrs,
};

/* Requests the device refused, by status: .../virtio_pasid/failures/ */
static struct attribute *vpasid_failure_attrs[] = {
	&driver_attr_no_space.attr,
	&driver_attr_quota_exceeded.attr,
	&driver_attr_invalid.attr,
	&driver_attr_not_owner.attr,
	&driver_attr_not_found.attr,
	&driver_attr_internal.attr,
	&driver_attr_rate_limited.attr,
	&driver_attr_unknown.attr,
	NULL
};

static const struct attribute_group vpasid_failure_group = {
	.name = "failures",
	.attrs = vpasid_failure_attrs,
};

static const struct attribute_group *vpasid_drv_groups[] = {
	&vpasid_drv_group,
	&vpasid_failure_group,
	NULL
};

/* The device ID is a module parameter: filled in by vpasid_init(). */
static struct virtio_device_id id_table[] = {
	{ VIRTIO_PASID_DEFAULT_DEVICE_ID, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

/*
 * No device-specific feature is defined (bits 0-23 are reserved);
 * VIRTIO_F_VERSION_1 is a transport feature, checked in vpasid_validate().
 */
static const unsigned int features[] = {
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
};

static int __init vpasid_init(void)
{
	BUILD_BUG_ON(sizeof(struct virtio_pasid_req) != 24);
	BUILD_BUG_ON(sizeof(struct virtio_pasid_resp) != 16);
	BUILD_BUG_ON(sizeof(struct virtio_pasid_config) != 32);

	if (!device_id || device_id == VIRTIO_DEV_ANY_ID) {
		pr_err("invalid device_id %u\n", device_id);
		return -EINVAL;
	}
	id_table[0].device = device_id;

	mutex_init(&vpasid.reg_lock);
	spin_lock_init(&vpasid.lock);
	INIT_DELAYED_WORK(&vpasid.register_work, vpasid_register_work);
	INIT_WORK(&vpasid.unregister_work, vpasid_unregister_work);
	return register_virtio_driver(&virtio_pasid_driver);
}

static void __exit vpasid_exit(void)
{
	unregister_virtio_driver(&virtio_pasid_driver);
	cancel_delayed_work_sync(&vpasid.register_work);
	cancel_work_sync(&vpasid.unregister_work);
	/* Outstanding PASIDs pin the module: what is left is drained. */
	mutex_lock(&vpasid.reg_lock);
	vpasid_unregister_drained(&vpasid);
	mutex_unlock(&vpasid.reg_lock);
}

module_init(vpasid_init);
module_exit(vpasid_exit);

MODULE_DEVICE_TABLE(virtio, id_table);
MODULE_DESCRIPTION("IOASID allocator backed by the vpasid virtio device");
MODULE_LICENSE("GPL");
