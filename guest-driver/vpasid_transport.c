// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid request transport: the request slots, posting a request on
 * the single virtqueue, reaping answers, the bounded busy-poll a caller in
 * atomic context waits with, and the answers that come after their caller
 * gave up. The IOASID framework calls us with its spinlock held, so
 * nothing here sleeps or allocates with GFP_KERNEL on that path.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/scatterlist.h>
#include <linux/virtio.h>

#include "vpasid.h"

/* Response status until the device writes one. */
#define VPASID_S_UNSET		0xffff

static unsigned int timeout_ms = 2000;
module_param(timeout_ms, uint, 0644);
MODULE_PARM_DESC(timeout_ms,
		 "Longest wait for the device to answer one request, in ms (default 2000)");

static ktime_t vpasid_deadline(ktime_t start)
{
	return ktime_add_ms(start, max(READ_ONCE(timeout_ms), 1U));
}

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

/* A fresh virtqueue holds nothing: every slot is free. */
void vpasid_init_slots(struct virtio_pasid *vp)
{
	unsigned int i;

	for (i = 0; i < VPASID_SLOTS; i++) {
		vp->slots[i].buf = &vp->bufs[i];
		vp->slots[i].state = VPASID_SLOT_FREE;
	}
	vp->waiters = 0;
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

	if (!vp->vq || virtqueue_is_broken(vp->vq))
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
		atomic64_inc(&vp->stats.protocol_errors);
		dev_warn_ratelimited(&vp->vdev->dev,
				     "bad answer to %s: %u bytes, tag %#llx, expected %#llx\n",
				     vpasid_op_name(le16_to_cpu(buf->req.opcode)),
				     slot->len, le64_to_cpu(buf->resp.tag),
				     le64_to_cpu(buf->req.tag));
		return -EPROTO;
	}
	if (status >= VPASID_NR_STATUS) {
		atomic64_inc(&vp->stats.failures[VPASID_NR_STATUS]);
		return -EPROTO;
	}
	if (status != VIRTIO_PASID_S_OK)
		atomic64_inc(&vp->stats.failures[status]);
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

	atomic64_inc(&vp->stats.late_completions);
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

	if (!vp->vq)
		return;
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

void vpasid_vq_done(struct virtqueue *vq)
{
	struct virtio_pasid *vp = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vp->lock, flags);
	vpasid_reap(vp);
	spin_unlock_irqrestore(&vp->lock, flags);
}

static void vpasid_note_rtt(struct virtio_pasid *vp, ktime_t start)
{
	s64 rtt = ktime_to_ns(ktime_sub(ktime_get(), start));

	atomic64_set(&vp->stats.last_rtt_ns, rtt);
	if (rtt > atomic64_read(&vp->stats.max_rtt_ns))
		atomic64_set(&vp->stats.max_rtt_ns, rtt);
}

/*
 * Send one request and busy-poll for its answer for at most timeout_ms.
 * Safe in atomic context. Return the device's status (>= 0, with the
 * answer's pasid field in *value) or a negative errno.
 */
int vpasid_request(struct virtio_pasid *vp, u16 opcode, u32 pasid,
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
		atomic64_inc(&vp->stats.no_slot);
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
	deadline = vpasid_deadline(start);
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
		vpasid_note_rtt(vp, start);
		ret = vpasid_status(vp, slot);
		*value = le32_to_cpu(slot->buf->resp.pasid);
		slot->state = VPASID_SLOT_FREE;
	} else if (virtqueue_is_broken(vp->vq)) {
		ret = -EIO;
	} else {
		atomic64_inc(&vp->stats.timeouts);
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
void vpasid_give_back(struct virtio_pasid *vp, u32 pasid)
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

/* Called with vp->lock held. */
static unsigned int vpasid_busy_slots(struct virtio_pasid *vp)
{
	unsigned int i, busy = 0;

	for (i = 0; i < vp->nslots; i++)
		busy += vp->slots[i].state != VPASID_SLOT_FREE;
	return busy;
}

/*
 * Wait, for at most timeout_ms, until the device has answered every
 * request it holds (late answers and FREEs nobody waits for), so that a
 * device reset loses none of them. No new request may be posted meanwhile.
 * Process context. Return how many requests the device still holds.
 */
unsigned int vpasid_quiesce(struct virtio_pasid *vp)
{
	ktime_t deadline = vpasid_deadline(ktime_get());
	unsigned long flags;
	unsigned int busy;

	for (;;) {
		spin_lock_irqsave(&vp->lock, flags);
		vpasid_reap(vp);
		busy = vpasid_busy_slots(vp);
		spin_unlock_irqrestore(&vp->lock, flags);
		if (!busy || ktime_after(ktime_get(), deadline))
			return busy;
		usleep_range(100, 200);
	}
}
