/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Internal interfaces of virtio_pasid.ko, shared by its four files:
 *   vpasid_device.c	probe, remove, freeze, restore, config space, module
 *   vpasid_transport.c	request slots, post, reap, bounded poll, late answers
 *   vpasid_ioasid.c	the IOASID allocator ops and their registration
 *   vpasid_debugfs.c	the counters, one seq_file per device
 * The wire format is the protocol header virtio_pasid.h.
 */
#ifndef _VPASID_H
#define _VPASID_H

#include <linux/atomic.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/virtio.h>
#include <linux/workqueue.h>

#include "virtio_pasid.h"

/* Request slots; a timed-out request keeps its slot until the device answers. */
#define VPASID_SLOTS		16
/* Failure counters: one per status code, plus one for unknown codes. */
#define VPASID_NR_STATUS	(VIRTIO_PASID_S_RATE_LIMITED + 1)

struct dentry;

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

/* The device's counters, shown in debugfs (vpasid_debugfs.c). */
struct vpasid_stats {
	atomic64_t allocs;
	atomic64_t frees;
	atomic64_t unsent_frees;	/* frees the host was not told of */
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

/* One vpasid device, in vdev->priv. */
struct virtio_pasid {
	struct virtio_device *vdev;
	struct virtqueue *vq;	/* NULL while frozen */
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
	/* Registration retries after -EAGAIN; under the registration mutex. */
	struct delayed_work register_work;
	unsigned int retry_ms;
	unsigned int attempts;
	struct vpasid_stats stats;
	struct dentry *debugfs;
};

/* vpasid_transport.c */
int vpasid_request(struct virtio_pasid *vp, u16 opcode, u32 pasid,
		   u32 min, u32 max, u32 *value);
void vpasid_give_back(struct virtio_pasid *vp, u32 pasid);
void vpasid_vq_done(struct virtqueue *vq);
void vpasid_init_slots(struct virtio_pasid *vp);
unsigned int vpasid_quiesce(struct virtio_pasid *vp);

/* vpasid_ioasid.c */
extern const struct attribute_group *vpasid_drv_groups[];
int vpasid_attach(struct virtio_pasid *vp);
void vpasid_register(struct virtio_pasid *vp);
unsigned long vpasid_detach(struct virtio_pasid *vp);
void vpasid_suspend(struct virtio_pasid *vp);
void vpasid_resume(struct virtio_pasid *vp);
unsigned long vpasid_outstanding(void);
void vpasid_ioasid_init(void);
void vpasid_ioasid_exit(void);

/* vpasid_debugfs.c */
void vpasid_debugfs_init(void);
void vpasid_debugfs_exit(void);
void vpasid_debugfs_add(struct virtio_pasid *vp);
void vpasid_debugfs_remove(struct virtio_pasid *vp);

#endif /* _VPASID_H */
