// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid waits: every wait for the device is bounded by timeout_ms.
 * A caller that may not sleep (the IOASID framework's alloc() and free(),
 * with its spinlock held) busy-polls the virtqueue; one that may sleep
 * (probe, remove, the lease work item, RECONCILE) sleeps on a completion
 * the vq callback fires. A request not answered in time is abandoned to
 * the device (its slot stays taken until the answer comes) and marks the
 * device unresponsive. Also one v1 request and its wait, and quiescing
 * the device before a reset.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/virtio.h>

#include "vpasid.h"

static unsigned int timeout_ms = 2000;
module_param(timeout_ms, uint, 0644);
MODULE_PARM_DESC(timeout_ms,
		 "Longest wait for the device to answer one request, in ms (default 2000)");

static ktime_t vpasid_deadline(ktime_t start)
{
	return ktime_add_ms(start, max(READ_ONCE(timeout_ms), 1U));
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

/*
 * A wait timed out: count it and mark the device unresponsive, so that
 * requests fail at once until it answers; vp->lock held.
 */
static void vpasid_mark_unresponsive(struct virtio_pasid *vp)
{
	atomic64_inc(&vp->stats.timeouts);
	if (!vp->unresponsive)
		dev_warn(&vp->vdev->dev,
			 "no answer within %u ms: device marked unresponsive, requests fail at once until it answers\n",
			 max(READ_ONCE(timeout_ms), 1U));
	vp->unresponsive = true;
}

/* The caller gives up on @slot; called with vp->lock held. */
static int vpasid_abandon(struct virtio_pasid *vp, struct vpasid_slot *slot)
{
	/* The device still owns the buffers: keep the slot. */
	slot->state = VPASID_SLOT_ABANDONED;
	slot->done = NULL;
	if (virtqueue_is_broken(vp->vq))
		return -EIO;
	vpasid_mark_unresponsive(vp);
	return -ETIMEDOUT;
}

/*
 * Reap until @ready (vp->lock held) says the caller has what it waits
 * for: true; or until @deadline passes or the queue breaks: false. Called
 * with vp->lock held (taken with *@flags), dropped between two looks. The
 * caller has turned the queue's interrupts off (vp->waiters): it polls.
 */
static bool vpasid_spin(struct virtio_pasid *vp, ktime_t deadline,
			bool (*ready)(struct virtio_pasid *vp, void *arg),
			void *arg, unsigned long *flags)
{
	for (;;) {
		vpasid_reap(vp);
		if (ready(vp, arg))
			return true;
		if (ktime_after(ktime_get(), deadline) ||
		    virtqueue_is_broken(vp->vq))
			return false;
		spin_unlock_irqrestore(&vp->lock, *flags);
		cpu_relax();
		spin_lock_irqsave(&vp->lock, *flags);
	}
}

/* A poll starts (vp->lock held): spare the device interrupts meanwhile. */
static void vpasid_poll_start(struct virtio_pasid *vp)
{
	if (!vp->waiters++)
		virtqueue_disable_cb(vp->vq);
}

/* A poll ends (vp->lock held): the last one turns interrupts back on. */
static void vpasid_poll_end(struct virtio_pasid *vp)
{
	if (!--vp->waiters) {
		while (!virtqueue_enable_cb(vp->vq))
			vpasid_reap(vp);
	}
}

static bool vpasid_slot_done(struct virtio_pasid *vp, void *slot)
{
	return ((struct vpasid_slot *)slot)->state == VPASID_SLOT_DONE;
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
	vpasid_poll_start(vp);
	if (vpasid_spin(vp, deadline, vpasid_slot_done, slot, &flags))
		ret = vpasid_finish(vp, slot, value);
	else
		ret = vpasid_abandon(vp, slot);
	vpasid_poll_end(vp);
	vpasid_report(vp, slot, ret);
	spin_unlock_irqrestore(&vp->lock, flags);
	return ret;
}

/*
 * Busy-poll, for at most timeout_ms, until @ready (called with vp->lock
 * held after each reap) says the caller has what it waits for, e.g. the
 * answer to any of several requests nobody waits for by slot. Safe in
 * atomic context. Return 0, or -ETIMEDOUT (the device is then marked
 * unresponsive: none of those answers came in time).
 */
int vpasid_poll_for(struct virtio_pasid *vp,
		    bool (*ready)(struct virtio_pasid *vp, void *arg),
		    void *arg)
{
	ktime_t deadline = vpasid_deadline(ktime_get());
	unsigned long flags;
	int ret = 0;

	spin_lock_irqsave(&vp->lock, flags);
	vpasid_poll_start(vp);
	if (!vpasid_spin(vp, deadline, ready, arg, &flags)) {
		ret = -ETIMEDOUT;
		if (!virtqueue_is_broken(vp->vq) && !vp->unresponsive)
			vpasid_mark_unresponsive(vp);
	}
	vpasid_poll_end(vp);
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
 * Send one v1 request (ALLOC, FREE, RESET) and wait for its answer for at
 * most timeout_ms: sleeping if @may_sleep, else busy-polling (safe in
 * atomic context). @answered, if any, is the request's completion (see
 * vpasid_answered_t). Return the device's status (>= 0, with the answer's
 * pasid field in *value) or a negative errno.
 */
int vpasid_request(struct virtio_pasid *vp, u16 opcode, u32 pasid,
		   u32 min, u32 max, vpasid_answered_t answered,
		   bool may_sleep, u32 *value)
{
	DECLARE_COMPLETION_ONSTACK(done);
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
	slot->answered = answered;
	if (may_sleep)
		slot->done = &done;
	ret = vpasid_post(vp, slot, sizeof(slot->buf->req),
			  sizeof(slot->buf->resp));
	if (ret) {
		vpasid_unclaim(slot);
		spin_unlock_irqrestore(&vp->lock, flags);
		return ret;
	}
	spin_unlock_irqrestore(&vp->lock, flags);
	if (may_sleep)
		return vpasid_wait(vp, slot, value);
	return vpasid_poll(vp, slot, value);
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
