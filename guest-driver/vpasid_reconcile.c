// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid resume: a new device bound while PASIDs are still handed out
 * (the old device was unplugged after the host's backend restarted) gets a
 * RECONCILE listing every PASID the VM holds instead of RESET, which would
 * release them (docs/protocol.md 5.x.6.13). The host keeps or re-grants
 * each one, or reports a conflict; the driver marks those lost
 * (vpasid_held_result()), and the host drops every reference no list named.
 *
 * The list is what vpasid_held.c knows the VM holds: the PASIDs handed
 * out, then the lease cache the old device left (the orphans), in batches
 * of up to VIRTIO_PASID_LEASE_BATCH_MAX, one in flight at a time. What the
 * host keeps of the orphans becomes the new device's cache when the
 * allocator turns active again (vpasid_register()).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/completion.h>
#include <linux/err.h>
#include <linux/virtio.h>

#include "vpasid.h"

/*
 * The completion of a RECONCILE (the reap, vp->lock held): copy what
 * vpasid_reconcile() needs, as the slot may be reused once answered. A
 * malformed answer is -EPROTO.
 */
static void vpasid_reconcile_answered(struct virtio_pasid *vp,
				      struct vpasid_slot *slot, bool late)
{
	const struct vpasid_buf *buf = slot->buf;
	unsigned int count = min_t(unsigned int, le16_to_cpu(buf->lease.count),
				   VIRTIO_PASID_LEASE_BATCH_MAX);

	vp->reconciled.status = slot->status;
	vp->reconciled.count = count;
	vp->reconciled.dropped = le32_to_cpu(buf->resp.pasid);
	if (slot->status != VIRTIO_PASID_S_OK)
		return;
	if (slot->len < sizeof(buf->resp) + count * sizeof(__le32)) {
		atomic64_inc(&vp->stats.protocol_errors);
		dev_warn_ratelimited(&vp->vdev->dev,
				     "bad RECONCILE answer: %u bytes for %u PASIDs\n",
				     slot->len, count);
		vp->reconciled.status = -EPROTO;
		return;
	}
	memcpy(vp->reconciled.listed, buf->returned, count * sizeof(__le32));
	memcpy(vp->reconciled.results, buf->granted, count * sizeof(__le32));
}

/*
 * Post one RECONCILE of the held PASIDs from *@cursor on, with @flags, and
 * wait (bounded, sleeping) for its answer. *@last is set when this batch
 * lists the last held PASID. Return the device's status or a negative
 * errno; the answer is in vp->reconciled.
 */
static int vpasid_reconcile_batch(struct virtio_pasid *vp, u32 *cursor,
				  bool first, bool *last)
{
	DECLARE_COMPLETION_ONSTACK(done);
	struct virtio_pasid_lease_req *req;
	struct vpasid_slot *slot;
	unsigned int count;
	unsigned long flags;
	u32 unused, peek;
	u16 req_flags;
	__le32 next;
	int err;

	vpasid_held_lock();
	spin_lock_irqsave(&vp->lock, flags);
	slot = vpasid_claim(vp);
	if (IS_ERR(slot)) {
		spin_unlock_irqrestore(&vp->lock, flags);
		vpasid_held_unlock();
		return PTR_ERR(slot);
	}
	req = &slot->buf->lease;
	count = vpasid_held_next(cursor, slot->buf->returned,
				 VIRTIO_PASID_LEASE_BATCH_MAX);
	/* Last when nothing is held beyond this batch. */
	peek = *cursor;
	*last = !vpasid_held_next(&peek, &next, 1);
	req_flags = (first ? VIRTIO_PASID_RECONCILE_F_FIRST : 0) |
		    (*last ? VIRTIO_PASID_RECONCILE_F_LAST : 0);
	req->opcode = cpu_to_le16(VIRTIO_PASID_OP_RECONCILE);
	req->flags = cpu_to_le16(req_flags);
	req->count = cpu_to_le16(count);
	req->cached = cpu_to_le16(vpasid_held_cached());
	req->min = 0;
	req->max = 0;
	vp->reconciled.status = -EINPROGRESS;
	slot->done = &done;
	slot->answered = vpasid_reconcile_answered;
	err = vpasid_post(vp, slot, sizeof(*req) + count * sizeof(__le32),
			  sizeof(slot->buf->resp) + count * sizeof(__le32));
	if (err)
		vpasid_unclaim(slot);
	else
		vpasid_held_listed(*cursor, *last);
	spin_unlock_irqrestore(&vp->lock, flags);
	vpasid_held_unlock();
	if (err)
		return err;

	err = vpasid_wait(vp, slot, &unused);
	if (err == VIRTIO_PASID_S_OK)
		err = vp->reconciled.status;
	return err;
}

/* Apply the results of the answered batch; count each kind. */
static void vpasid_reconcile_apply(struct virtio_pasid *vp)
{
	unsigned int i;

	for (i = 0; i < vp->reconciled.count; i++) {
		u32 pasid = le32_to_cpu(vp->reconciled.listed[i]);
		u32 result = le32_to_cpu(vp->reconciled.results[i]);

		switch (result) {
		case VIRTIO_PASID_RECONCILE_KEPT:
			atomic64_inc(&vp->stats.reconcile_kept);
			break;
		case VIRTIO_PASID_RECONCILE_GRANTED:
			atomic64_inc(&vp->stats.reconcile_granted);
			break;
		case VIRTIO_PASID_RECONCILE_CONFLICT:
			atomic64_inc(&vp->stats.reconcile_conflicts);
			break;
		case VIRTIO_PASID_RECONCILE_REFUSED:
			atomic64_inc(&vp->stats.reconcile_refused);
			break;
		default:
			/* Unknown: the VM may not hold it, as for REFUSED. */
			atomic64_inc(&vp->stats.protocol_errors);
			dev_warn_ratelimited(&vp->vdev->dev,
					     "unknown RECONCILE result %u for PASID %u: taken as refused\n",
					     result, pasid);
			atomic64_inc(&vp->stats.reconcile_refused);
			result = VIRTIO_PASID_RECONCILE_REFUSED;
			break;
		}
		vpasid_held_result(vp, pasid, result);
	}
}

/*
 * Resume on @vp: reconcile every held PASID with the host, in batches, the
 * first with F_FIRST and the last with F_LAST (one batch of none when
 * nothing is held any more). Process context, after the device is live and
 * before allocations are taken again. Return 0 or a negative errno.
 */
int vpasid_reconcile(struct virtio_pasid *vp)
{
	u64 kept = atomic64_read(&vp->stats.reconcile_kept);
	u64 granted = atomic64_read(&vp->stats.reconcile_granted);
	u64 conflicts = atomic64_read(&vp->stats.reconcile_conflicts);
	u64 refused = atomic64_read(&vp->stats.reconcile_refused);
	bool first = true, last = false;
	u32 cursor = 0;
	int err;

	while (!last) {
		err = vpasid_reconcile_batch(vp, &cursor, first, &last);
		if (err) {
			dev_err(&vp->vdev->dev, "RECONCILE failed (%d): cannot resume, draining\n",
				err);
			return err < 0 ? err : -EIO;
		}
		vpasid_reconcile_apply(vp);
		first = false;
	}
	atomic64_add(vp->reconciled.dropped, &vp->stats.reconcile_dropped);
	dev_info(&vp->vdev->dev, "RECONCILE: %llu kept, %llu re-granted, %llu conflict(s), %llu refused; the host dropped %u unlisted reference(s)\n",
		 atomic64_read(&vp->stats.reconcile_kept) - kept,
		 atomic64_read(&vp->stats.reconcile_granted) - granted,
		 atomic64_read(&vp->stats.reconcile_conflicts) - conflicts,
		 atomic64_read(&vp->stats.reconcile_refused) - refused,
		 vp->reconciled.dropped);
	return 0;
}
