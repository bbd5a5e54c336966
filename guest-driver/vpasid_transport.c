// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid request transport: the request slots, posting a request on
 * the single virtqueue, reaping answers (GRANT, RETURN and RECONCILE
 * answers are applied there), the bounded busy-poll a caller in
 * atomic context waits with, the bounded sleeping wait of a work item, the
 * answers that come after their caller gave up, and the unresponsive mark.
 * The IOASID framework calls us with its spinlock held, so nothing on that
 * path sleeps or allocates with GFP_KERNEL.
 *
 * Unresponsive: when a request times out the device is marked unresponsive,
 * and every later request that would wait for the host fails at once
 * (fast_fails) instead of spinning timeout_ms again with the framework's
 * spinlock held. Any answer, a late one included, clears the mark.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
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
	case VIRTIO_PASID_OP_GRANT:
		return "GRANT";
	case VIRTIO_PASID_OP_RETURN:
		return "RETURN";
	case VIRTIO_PASID_OP_RECONCILE:
		return "RECONCILE";
	}
	return "?";
}

static bool vpasid_is_lease_op(u16 opcode)
{
	return opcode == VIRTIO_PASID_OP_GRANT ||
	       opcode == VIRTIO_PASID_OP_RETURN;
}

/*
 * A fresh virtqueue holds nothing: every slot is free, and nothing the
 * device could still answer may clear an unresponsive mark. PASIDs of a
 * RETURN dropped unanswered (at freeze) are known gone: the driver never
 * hands them out again, and the host releases them at the latest on RESET.
 */
void vpasid_init_slots(struct virtio_pasid *vp)
{
	unsigned int i;

	for (i = 0; i < VPASID_SLOTS; i++) {
		vp->slots[i].buf = &vp->bufs[i];
		vp->slots[i].state = VPASID_SLOT_FREE;
		vp->slots[i].done = NULL;
	}
	vp->waiters = 0;
	vp->unresponsive = false;
	vp->returning = 0;
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

/* Fill in a v1 request (ALLOC, FREE, RESET); called with vp->lock held. */
static void vpasid_fill(struct vpasid_slot *slot, u16 opcode, u32 pasid,
			u32 min, u32 max)
{
	struct virtio_pasid_req *req = &slot->buf->req;

	req->opcode = cpu_to_le16(opcode);
	req->flags = 0;
	req->pasid = cpu_to_le32(pasid);
	req->min = cpu_to_le32(min);
	req->max = cpu_to_le32(max);
}

/*
 * Tag and post a filled-in request: @out_len readable bytes from the
 * request on, @in_len writable bytes from the response on. Called with
 * vp->lock held.
 */
int vpasid_post(struct virtio_pasid *vp, struct vpasid_slot *slot,
		unsigned int out_len, unsigned int in_len)
{
	struct vpasid_buf *buf = slot->buf;
	struct scatterlist out, in, *sgs[] = { &out, &in };
	int err;

	if (!vp->vq || virtqueue_is_broken(vp->vq))
		return -EIO;

	buf->req.tag = cpu_to_le64((u64)vp->instance << 32 | vp->seq++);
	memset(&buf->resp, 0, sizeof(buf->resp));
	buf->resp.status = cpu_to_le16(VPASID_S_UNSET);
	slot->len = 0;
	slot->status = -EINPROGRESS;
	slot->posted = ktime_get();

	sg_init_one(&out, &buf->req, out_len);
	sg_init_one(&in, &buf->resp, in_len);
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

/* Post a FREE nobody waits for on a free slot; vp->lock held. */
static bool vpasid_post_free(struct virtio_pasid *vp, u32 pasid)
{
	struct vpasid_slot *slot = vpasid_get_slot(vp);

	if (!slot)
		return false;
	slot->state = VPASID_SLOT_ASYNC;
	vpasid_fill(slot, VIRTIO_PASID_OP_FREE, pasid, 0, 0);
	if (!vpasid_post(vp, slot, sizeof(slot->buf->req),
			 sizeof(slot->buf->resp)))
		return true;
	slot->state = VPASID_SLOT_FREE;
	return false;
}

/* Post the FREEs that waited for a slot, while slots last; vp->lock held. */
static void vpasid_post_pending(struct virtio_pasid *vp)
{
	while (vp->npending &&
	       vpasid_post_free(vp, vp->pending_frees[vp->npending - 1]))
		vp->npending--;
}

/*
 * Give a PASID back to the host with a FREE nobody waits for; called with
 * vp->lock held. When every slot is busy (other CPUs' requests) it waits
 * in pending_frees and the next reap posts it; only when that is full too
 * does the host keep it until RESET.
 */
void vpasid_free_async(struct virtio_pasid *vp, u32 pasid)
{
	if (vpasid_post_free(vp, pasid))
		return;
	if (vp->npending < VPASID_PENDING_FREES) {
		vp->pending_frees[vp->npending++] = pasid;
		return;
	}
	atomic64_inc(&vp->stats.unsent_frees);
	dev_warn_ratelimited(&vp->vdev->dev,
			     "cannot return PASID %u to the host: it keeps it until the next RESET\n",
			     pasid);
}

/*
 * Forget the FREEs still waiting for a slot (remove, or a freeze whose
 * device never answered): the host keeps those PASIDs until RESET.
 * Called with vp->lock held; returns how many there were.
 */
unsigned int vpasid_drop_pending(struct virtio_pasid *vp)
{
	unsigned int dropped = vp->npending;

	atomic64_add(dropped, &vp->stats.unsent_frees);
	vp->npending = 0;
	return dropped;
}

/*
 * A request whose caller gave up came back; called with vp->lock held. A
 * PASID a late ALLOC carries is the VM's: it goes into the cache, or back
 * to the host when it cannot (leases off, cache full, outside the range).
 */
static void vpasid_late(struct virtio_pasid *vp, struct vpasid_slot *slot)
{
	const struct vpasid_buf *buf = slot->buf;
	u32 pasid = le32_to_cpu(buf->resp.pasid);

	atomic64_inc(&vp->stats.late_completions);
	slot->state = VPASID_SLOT_FREE;
	if (le16_to_cpu(buf->req.opcode) != VIRTIO_PASID_OP_ALLOC ||
	    slot->status != VIRTIO_PASID_S_OK)
		return;
	if (pasid >= le32_to_cpu(buf->req.min) &&
	    pasid <= le32_to_cpu(buf->req.max))
		vpasid_cache_keep(vp, pasid);
	else
		vpasid_free_async(vp, pasid);
}

/*
 * Collect every answered request; called with vp->lock held. The effect of
 * a GRANT or RETURN on the cache is applied here, whether its caller still
 * waits or gave up, so that a late answer loses nothing.
 */
static void vpasid_reap(struct virtio_pasid *vp)
{
	struct vpasid_slot *slot;
	unsigned int len;
	bool answered = false;

	if (!vp->vq)
		return;
	while ((slot = virtqueue_get_buf(vp->vq, &len))) {
		if (slot->state == VPASID_SLOT_FREE ||
		    slot->state == VPASID_SLOT_DONE) {
			dev_warn_ratelimited(&vp->vdev->dev,
					     "device returned an idle request\n");
			continue;
		}
		answered = true;
		slot->len = len;
		slot->status = vpasid_status(vp, slot);
		if (vpasid_is_lease_op(le16_to_cpu(slot->buf->req.opcode)))
			vpasid_lease_answered(vp, slot);
		else if (le16_to_cpu(slot->buf->req.opcode) ==
			 VIRTIO_PASID_OP_RECONCILE)
			vpasid_reconcile_answered(vp, slot);
		switch (slot->state) {
		case VPASID_SLOT_WAITING:
			slot->state = VPASID_SLOT_DONE;
			if (slot->done)
				complete(slot->done);
			break;
		case VPASID_SLOT_ABANDONED:
			vpasid_late(vp, slot);
			break;
		default:	/* VPASID_SLOT_ASYNC */
			slot->state = VPASID_SLOT_FREE;
			break;
		}
	}
	vpasid_post_pending(vp);
	if (answered && vp->unresponsive) {
		vp->unresponsive = false;
		dev_info_ratelimited(&vp->vdev->dev,
				     "device answers again: no longer unresponsive\n");
		vpasid_lease_kick(vp);
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

/*
 * Take a slot for a request a caller will wait for; called with vp->lock
 * held. Fails at once while the device is marked unresponsive.
 */
struct vpasid_slot *vpasid_claim(struct virtio_pasid *vp)
{
	struct vpasid_slot *slot;

	vpasid_reap(vp);
	if (vp->unresponsive) {
		atomic64_inc(&vp->stats.fast_fails);
		return ERR_PTR(-ETIMEDOUT);
	}
	slot = vpasid_get_slot(vp);
	if (!slot) {
		atomic64_inc(&vp->stats.no_slot);
		return ERR_PTR(-EBUSY);
	}
	slot->state = VPASID_SLOT_WAITING;
	slot->done = NULL;
	return slot;
}

/* An answered request: its status, and its pasid word in *value. */
static int vpasid_finish(struct virtio_pasid *vp, struct vpasid_slot *slot,
			 u32 *value)
{
	s64 rtt = ktime_to_ns(ktime_sub(ktime_get(), slot->posted));

	atomic64_set(&vp->stats.last_rtt_ns, rtt);
	if (rtt > atomic64_read(&vp->stats.max_rtt_ns))
		atomic64_set(&vp->stats.max_rtt_ns, rtt);
	*value = le32_to_cpu(slot->buf->resp.pasid);
	slot->done = NULL;
	slot->state = VPASID_SLOT_FREE;
	return slot->status;
}

/* The caller gives up on @slot; called with vp->lock held. */
static int vpasid_abandon(struct virtio_pasid *vp, struct vpasid_slot *slot)
{
	/* The device still owns the buffers: keep the slot. */
	slot->state = VPASID_SLOT_ABANDONED;
	slot->done = NULL;
	if (virtqueue_is_broken(vp->vq))
		return -EIO;
	atomic64_inc(&vp->stats.timeouts);
	if (!vp->unresponsive)
		dev_warn(&vp->vdev->dev,
			 "no answer within %u ms: device marked unresponsive, requests fail at once until it answers\n",
			 max(READ_ONCE(timeout_ms), 1U));
	vp->unresponsive = true;
	return -ETIMEDOUT;
}

static void vpasid_report(struct virtio_pasid *vp, struct vpasid_slot *slot,
			  int ret)
{
	if (ret < 0)
		dev_warn_ratelimited(&vp->vdev->dev, "%s request failed: %d\n",
				     vpasid_op_name(le16_to_cpu(slot->buf->req.opcode)),
				     ret);
}

/*
 * Busy-poll, for at most timeout_ms from its posting, for the answer to
 * @slot, posted by the caller as VPASID_SLOT_WAITING. Safe in atomic
 * context. Return the device's status (>= 0, with the answer's pasid word
 * in *value) or a negative errno.
 */
int vpasid_poll(struct virtio_pasid *vp, struct vpasid_slot *slot, u32 *value)
{
	ktime_t deadline = vpasid_deadline(slot->posted);
	unsigned long flags;
	int ret;

	spin_lock_irqsave(&vp->lock, flags);
	/* We poll: spare the device interrupts nobody needs meanwhile. */
	if (!vp->waiters++)
		virtqueue_disable_cb(vp->vq);
	for (;;) {
		vpasid_reap(vp);
		if (slot->state == VPASID_SLOT_DONE) {
			ret = vpasid_finish(vp, slot, value);
			break;
		}
		if (ktime_after(ktime_get(), deadline) ||
		    virtqueue_is_broken(vp->vq)) {
			ret = vpasid_abandon(vp, slot);
			break;
		}
		spin_unlock_irqrestore(&vp->lock, flags);
		cpu_relax();
		spin_lock_irqsave(&vp->lock, flags);
	}
	if (!--vp->waiters) {
		while (!virtqueue_enable_cb(vp->vq))
			vpasid_reap(vp);
	}
	vpasid_report(vp, slot, ret);
	spin_unlock_irqrestore(&vp->lock, flags);
	return ret;
}

/*
 * Sleep, for at most timeout_ms, until the vq callback completes @slot,
 * posted by the caller as VPASID_SLOT_WAITING with slot->done set. Process
 * context. Return as vpasid_poll().
 */
int vpasid_wait(struct virtio_pasid *vp, struct vpasid_slot *slot, u32 *value)
{
	struct completion *done = slot->done;
	unsigned long flags;
	int ret;

	wait_for_completion_timeout(done,
				    msecs_to_jiffies(max(READ_ONCE(timeout_ms), 1U)));
	spin_lock_irqsave(&vp->lock, flags);
	vpasid_reap(vp);
	if (slot->state == VPASID_SLOT_DONE)
		ret = vpasid_finish(vp, slot, value);
	else
		ret = vpasid_abandon(vp, slot);
	vpasid_report(vp, slot, ret);
	spin_unlock_irqrestore(&vp->lock, flags);
	return ret;
}

/*
 * Send one v1 request and busy-poll for its answer for at most timeout_ms.
 * Safe in atomic context. Return the device's status (>= 0, with the
 * answer's pasid field in *value) or a negative errno.
 */
int vpasid_request(struct virtio_pasid *vp, u16 opcode, u32 pasid,
		   u32 min, u32 max, u32 *value)
{
	struct vpasid_slot *slot;
	unsigned long flags;
	int ret;

	spin_lock_irqsave(&vp->lock, flags);
	slot = vpasid_claim(vp);
	if (IS_ERR(slot)) {
		spin_unlock_irqrestore(&vp->lock, flags);
		return PTR_ERR(slot);
	}
	vpasid_fill(slot, opcode, pasid, min, max);
	ret = vpasid_post(vp, slot, sizeof(slot->buf->req),
			  sizeof(slot->buf->resp));
	if (ret) {
		slot->state = VPASID_SLOT_FREE;
		spin_unlock_irqrestore(&vp->lock, flags);
		return ret;
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	return vpasid_poll(vp, slot, value);
}

/* Return a PASID the caller cannot use to the host, without waiting. */
void vpasid_give_back(struct virtio_pasid *vp, u32 pasid)
{
	unsigned long flags;

	spin_lock_irqsave(&vp->lock, flags);
	vpasid_free_async(vp, pasid);
	spin_unlock_irqrestore(&vp->lock, flags);
}

/* Requests the device holds or that wait for a slot; vp->lock held. */
static unsigned int vpasid_busy_slots(struct virtio_pasid *vp)
{
	unsigned int i, busy = vp->npending;

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
