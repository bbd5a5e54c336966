// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid request transport: the request slots, posting a request on
 * the single virtqueue, reaping answers, FREEs nobody waits for, and the
 * unresponsive mark (the waits are vpasid_wait.c's). It knows what a
 * request looks like, never what one means: whoever posts a request gives
 * the completion the reap calls with its answer (slot->answered), as
 * virtio_balloon and virtio-rng hand their buffers to the virtqueue and
 * take them back. The IOASID framework calls us with its spinlock held,
 * so nothing here sleeps or allocates with GFP_KERNEL.
 *
 * Unresponsive: when a request times out the device is marked unresponsive,
 * and every later request that would wait for the host fails at once
 * (fast_fails) instead of spinning timeout_ms again with the framework's
 * spinlock held. Any answer, a late one included, clears the mark, and
 * vp->responsive (the lease cache's kick) is told.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/completion.h>
#include <linux/ktime.h>
#include <linux/scatterlist.h>
#include <linux/virtio.h>

#include "vpasid.h"

/* Response status until the device writes one. */
#define VPASID_S_UNSET		0xffff

/* The request's name, for logs. */
const char *vpasid_op_name(u16 opcode)
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
		vp->slots[i].answered = NULL;
	}
	vp->waiters = 0;
	vp->unresponsive = false;
	vp->reaping = false;
	vp->returning = 0;
	vp->granting = 0;
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
void vpasid_fill(struct vpasid_slot *slot, u16 opcode, u32 pasid,
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
 * Tag and queue a filled-in request without notifying the device: @out_len
 * readable bytes from the request on, @in_len writable bytes from the
 * response on. The caller notifies it (virtqueue_kick()) once it has
 * queued all it has, so that several requests cost one notification and
 * the device answers them in one go, with one interrupt. Called with
 * vp->lock held.
 */
int vpasid_queue(struct virtio_pasid *vp, struct vpasid_slot *slot,
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
	return 0;
}

/* Queue a request (vpasid_queue()) and notify the device; vp->lock held. */
int vpasid_post(struct virtio_pasid *vp, struct vpasid_slot *slot,
		unsigned int out_len, unsigned int in_len)
{
	int err = vpasid_queue(vp, slot, out_len, in_len);

	if (!err)
		virtqueue_kick(vp->vq);
	return err;
}

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
	slot->answered = NULL;
	vpasid_fill(slot, VIRTIO_PASID_OP_FREE, pasid, 0, 0);
	if (!vpasid_post(vp, slot, sizeof(slot->buf->req),
			 sizeof(slot->buf->resp))) {
		atomic64_inc(&vp->stats.single_frees);
		return true;
	}
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
 * Collect every answered request and hand each answer to its poster's
 * completion, whether the poster still waits or gave up (a late answer),
 * so that no answer is lost; called with vp->lock held.
 */
void vpasid_reap(struct virtio_pasid *vp)
{
	struct vpasid_slot *slot;
	unsigned int len;
	bool answered = false, late;
	ktime_t now = 0;

	/*
	 * A completion that posts a request claims a slot, which reaps: the
	 * outer loop collects whatever that nested call would have.
	 */
	if (!vp->vq || vp->reaping)
		return;
	vp->reaping = true;
	while ((slot = virtqueue_get_buf(vp->vq, &len))) {
		if (slot->state == VPASID_SLOT_FREE ||
		    slot->state == VPASID_SLOT_DONE) {
			dev_warn_ratelimited(&vp->vdev->dev,
					     "device returned an idle request\n");
			continue;
		}
		if (!answered)
			now = ktime_get();
		answered = true;
		atomic64_inc(&vp->stats.answers);
		atomic64_add(ktime_to_ns(ktime_sub(now, slot->posted)),
			     &vp->stats.answer_rtt_ns);
		slot->len = len;
		slot->status = vpasid_status(vp, slot);
		late = slot->state == VPASID_SLOT_ABANDONED;
		if (late)
			atomic64_inc(&vp->stats.late_completions);
		if (slot->answered)
			slot->answered(vp, slot, late);
		if (slot->state == VPASID_SLOT_WAITING) {
			slot->state = VPASID_SLOT_DONE;
			if (slot->done)
				complete(slot->done);
		} else {	/* abandoned, or a FREE nobody waits for */
			slot->state = VPASID_SLOT_FREE;
		}
	}
	vp->reaping = false;
	vpasid_post_pending(vp);
	if (answered && vp->unresponsive) {
		vp->unresponsive = false;
		dev_info_ratelimited(&vp->vdev->dev,
				     "device answers again: no longer unresponsive\n");
		if (vp->responsive)
			vp->responsive(vp);
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
	slot->answered = NULL;
	return slot;
}

/* Give back a claimed slot whose request was not posted; vp->lock held. */
void vpasid_unclaim(struct vpasid_slot *slot)
{
	slot->done = NULL;
	slot->answered = NULL;
	slot->state = VPASID_SLOT_FREE;
}

/* Return a PASID the caller cannot use to the host, without waiting. */
void vpasid_give_back(struct virtio_pasid *vp, u32 pasid)
{
	unsigned long flags;

	spin_lock_irqsave(&vp->lock, flags);
	vpasid_free_async(vp, pasid);
	spin_unlock_irqrestore(&vp->lock, flags);
}
