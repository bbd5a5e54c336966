/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Internal interfaces of virtio_pasid.ko, shared by its files. The files
 * form layers: each calls only into the files listed below it (build.sh
 * checks this with check-layers.sh); a lower file hands results up through
 * a callback the caller gave it, never by calling the caller by name.
 *   vpasid_device.c	probe, remove, freeze, restore, config space, module
 *   vpasid_debugfs.c	the counters, one seq_file per device
 *   vpasid_reconcile.c	resuming on a new device: RECONCILE instead of RESET
 *   vpasid_register.c	the allocator's registration state machine, sysfs
 *   vpasid_ioasid.c	the IOASID allocator ops: alloc() and free()
 *   vpasid_held.c	the registration's state: the PASIDs handed out
 *			(held, lost) and the orphaned cache
 *   vpasid_alloc.c	one allocation or free for a device: cache or request
 *   vpasid_lease.c	the lease cache (GRANT, RETURN) and its work item
 *   vpasid_wait.c	bounded waits: busy-poll, sleep; one v1 request
 *   vpasid_transport.c	request slots, post, reap, FREEs nobody waits for
 *   vpasid_ids.c	sorted PASID arrays
 * The wire format is the protocol header virtio_pasid.h.
 */
#ifndef _VPASID_H
#define _VPASID_H

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/completion.h>
#include <linux/ktime.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/virtio.h>
#include <linux/workqueue.h>

#include "virtio_pasid.h"

/*
 * Without the IOASID framework (Linux 5.5 to 6.3, selected by x86_64's
 * INTEL_IOMMU_SVM or arm64's ARM_SMMU_V3_SVA) ioasid.h has only stubs: a
 * direct build stops here with the reason; DKMS skips such kernels.
 */
#if !IS_ENABLED(CONFIG_IOASID)
#error "virtio_pasid needs CONFIG_IOASID=y (INTEL_IOMMU_SVM or ARM_SMMU_V3_SVA): docs/guest.md"
#endif

/* Request slots; a timed-out request keeps its slot until the device answers. */
#define VPASID_SLOTS		32
/* PASIDs free() keeps before they go into the cache: see vpasid_stash_put(). */
#define VPASID_STASH		32
/* Cached PASIDs an alloc() moves into the stash: see vpasid_stash_fill(). */
#define VPASID_STASH_FILL	16
/* FREEs that found every slot busy wait here for one; see vpasid_free_async(). */
#define VPASID_PENDING_FREES	64
/* Failure counters: one per status code, plus one for unknown codes. */
#define VPASID_NR_STATUS	(VIRTIO_PASID_S_RATE_LIMITED + 1)

struct dentry;
struct seq_file;
struct virtio_pasid;
struct vpasid_slot;

/*
 * An answer arrived for @slot (the reap, vp->lock held): the poster's
 * completion, called whether the poster still waits (@late false) or gave
 * up on it (@late true), before the slot is handed back or reused.
 */
typedef void (*vpasid_answered_t)(struct virtio_pasid *vp,
				  struct vpasid_slot *slot, bool late);

enum vpasid_slot_state {
	VPASID_SLOT_FREE,
	VPASID_SLOT_WAITING,	/* posted, a caller polls for it */
	VPASID_SLOT_DONE,	/* answered, the caller has not looked yet */
	VPASID_SLOT_ABANDONED,	/* the caller timed out; the device owns it */
	VPASID_SLOT_ASYNC,	/* a FREE nobody waits for */
};

/*
 * What the device reads and writes: kmalloc'd, never on the stack. The
 * readable part is the request and, for RETURN and RECONCILE, its list; the
 * writable part is the response and, for GRANT, room for the PASIDs
 * granted, for RECONCILE the results. Each part is contiguous, so one
 * scatterlist entry covers it.
 */
struct vpasid_buf {
	union {
		struct virtio_pasid_req req;
		struct virtio_pasid_lease_req lease;
	};
	__le32 returned[VIRTIO_PASID_LEASE_BATCH_MAX];
	struct virtio_pasid_resp resp;
	__le32 granted[VIRTIO_PASID_LEASE_BATCH_MAX];
};

struct vpasid_slot {
	struct vpasid_buf *buf;
	enum vpasid_slot_state state;
	unsigned int len;	/* bytes the device wrote */
	int status;		/* vpasid_status() of the answer, once answered */
	ktime_t posted;
	/* A sleeping waiter (vpasid_wait()), or NULL; cleared when it gives up. */
	struct completion *done;
	/* The poster's completion, or NULL: see vpasid_answered_t. */
	vpasid_answered_t answered;
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
	atomic64_t lease_hits;		/* allocs served from the cache */
	atomic64_t lease_misses;	/* allocs that sent a synchronous ALLOC */
	atomic64_t refills;		/* GRANTs answered OK */
	atomic64_t returns;		/* RETURNs answered OK */
	atomic64_t fast_fails;		/* failed at once: device unresponsive */
	/* Where time goes: waits for the host inside alloc() and free(). */
	atomic64_t alloc_waits;		/* allocations that waited for the host */
	atomic64_t alloc_wait_ns;	/* their time, from miss to PASID */
	atomic64_t free_waits;		/* frees that waited for the host */
	atomic64_t free_wait_ns;
	atomic64_t answers;		/* answers reaped (any request) */
	atomic64_t answer_rtt_ns;	/* their time from posting to reap */
	atomic64_t single_frees;	/* FREE requests posted */
	/* RECONCILE results (vpasid_reconcile.c), per listed PASID. */
	atomic64_t reconcile_kept;
	atomic64_t reconcile_granted;
	atomic64_t reconcile_conflicts;
	atomic64_t reconcile_refused;
	atomic64_t reconcile_dropped;	/* host references no list named */
	atomic64_t lost_frees;		/* lost PASIDs freed: host not told */
	/* Indexed by VIRTIO_PASID_S_*; the last entry counts unknown codes. */
	atomic64_t failures[VPASID_NR_STATUS + 1];
};

/* One vpasid device, in vdev->priv. */
struct virtio_pasid {
	struct virtio_device *vdev;
	struct virtqueue *vq;	/* NULL while frozen */
	/*
	 * Protects vq, slots, waiters, seq, unresponsive, reaping,
	 * pending_frees, npending and the lease cache (cache, ncached, spill,
	 * nspill, spilled, returning, granting, lease_posting, lease_queued,
	 * lease_size, lease_demand, lease_short, lease_warm, lease_stopped,
	 * grant_blocked,
	 * want_min, want_max); taken in the vq callback.
	 */
	spinlock_t lock;
	struct vpasid_buf *bufs;
	struct vpasid_slot slots[VPASID_SLOTS];
	unsigned int nslots;
	unsigned int waiters;	/* callers polling; callbacks off while > 0 */
	u32 instance;		/* high half of every tag */
	u32 seq;		/* low half of every tag */
	/* A request timed out and no answer came since: fail at once. */
	bool unresponsive;
	/* Inside vpasid_reap(): a completion's nested reap returns at once. */
	bool reaping;
	/* Called (vp->lock held) when an answer clears the mark, or NULL. */
	void (*responsive)(struct virtio_pasid *vp);
	/* FREEs to post as soon as a slot comes back (the reap posts them). */
	u32 pending_frees[VPASID_PENDING_FREES];
	unsigned int npending;
	/* Configuration space, read once at probe. */
	u32 version;
	u32 pasid_bits;
	u32 pasid_min;
	u32 pasid_max;
	u32 quota;
	u32 lease_max;		/* 0 unless VIRTIO_PASID_F_LEASE was negotiated */
	u64 space_id;
	/*
	 * The lease cache (vpasid_lease.c); lease_cap 0: leases off. Its
	 * size adapts to demand between lease_cap (resting) and lease_room
	 * (the host's lease_max, the array's length).
	 */
	unsigned int lease_cap;
	unsigned int lease_room;
	unsigned int lease_size;	/* current size: watermarks, room */
	/* A refill, miss or growth since the last shrink period. */
	bool lease_demand;
	/* Ran short (vpasid_lease_look()) since the last refill GRANT. */
	bool lease_short;
	bool lease_warm;	/* a GRANT filled the cache: misses now grow it */
	/*
	 * ncached used, descending, from cache on: the cache slides within
	 * cache_buf (VPASID_CACHE_SPAN times lease_room entries), so that
	 * PASIDs come and go at both of its ends with no move.
	 */
	u32 *cache;
	u32 *cache_buf;
	unsigned int ncached;
	/*
	 * Held, not handed out, beyond the cache's size: freed PASIDs (and
	 * granted ones the cache had no room for) waiting to go back in a
	 * RETURN of a whole batch. spill_room (the quota, bounded) entries,
	 * nspill used, in no order.
	 */
	u32 *spill;
	unsigned int nspill;
	unsigned int spill_room;
	/*
	 * The last PASIDs free() gave back, not in the cache yet, and the
	 * lowest cached ones an alloc() moved on for the next allocations:
	 * under vpasid_reg.lock, which alloc() and free() hold anyway, and
	 * not vp->lock (see vpasid_stash_put(), vpasid_stash_fill()). nstash
	 * used; the last is taken first.
	 */
	u32 stash[VPASID_STASH];
	unsigned int nstash;
	bool stash_due;		/* beyond C: spill_work is queued for it */
	bool spilled;		/* a PASID spilled since spill_work last ran */
	unsigned int returning;	/* listed in RETURNs not answered yet */
	unsigned int granting;	/* asked for in GRANTs not answered yet */
	bool lease_posting;	/* the kick is posting: no re-entry */
	bool lease_queued;	/* the kick posted: notify the device */
	bool lease_stopped;	/* no work item may run or be queued */
	bool grant_blocked;	/* the last GRANT found no room; until a free */
	u32 want_min;		/* the range GRANT asks for */
	u32 want_max;
	struct work_struct lease_work;
	struct delayed_work shrink_work;	/* halves lease_size when idle */
	struct delayed_work spill_work;	/* returns the spill's last batch */
	/* Registration retries after -EAGAIN; under the registration mutex. */
	struct delayed_work register_work;
	unsigned int retry_ms;
	unsigned int attempts;
	/*
	 * The answer to the last RECONCILE, copied by the reap (vp->lock),
	 * since its slot may be reused once answered: vpasid_reconcile.c.
	 */
	struct {
		int status;
		unsigned int count;
		u32 dropped;
		__le32 listed[VIRTIO_PASID_LEASE_BATCH_MAX];
		__le32 results[VIRTIO_PASID_LEASE_BATCH_MAX];
	} reconciled;
	struct vpasid_stats stats;
	struct dentry *debugfs;
};

/* vpasid_ids.c */
unsigned int vpasid_ids_search(const u32 *ids, unsigned int n, u32 pasid);
bool vpasid_ids_insert(u32 *ids, unsigned int *n, u32 pasid);
void vpasid_ids_remove(u32 *ids, unsigned int *n, unsigned int at);
bool vpasid_ids_take(u32 *ids, unsigned int *n, u32 lo, u32 hi, u32 *pasid);
bool __vpasid_desc_take(u32 *ids, unsigned int *n, u32 lo, u32 hi,
			u32 *pasid);
int __vpasid_desc_insert(u32 *ids, unsigned int *n, u32 pasid,
			 unsigned int moves);
unsigned int vpasid_desc_sort(u32 *ids, unsigned int n);
unsigned int vpasid_desc_merge(u32 **ids, unsigned int *n, const u32 *add,
			       unsigned int m);

/*
 * Take the lowest of the *@n descending @ids in [@lo, @hi] into *@pasid.
 * False, and nothing changed, when none lies there. Inline for what
 * alloc() finds nearly always, the last (lowest) entry in range: under
 * emulation each call and return of the hot path costs as much as the
 * work it does.
 */
static inline bool vpasid_desc_take(u32 *ids, unsigned int *n, u32 lo,
				    u32 hi, u32 *pasid)
{
	u32 lowest;

	if (!*n)
		return false;
	lowest = ids[*n - 1];
	if (lowest > hi)
		return false;
	if (lowest < lo)
		return __vpasid_desc_take(ids, n, lo, hi, pasid);
	*pasid = lowest;
	(*n)--;
	return true;
}

/*
 * Insert @pasid into the *@n descending @ids, which have room for one
 * more, unless that moves more than @moves of them (see
 * __vpasid_desc_insert() for the return value). Inline for what free()
 * brings nearly always, a PASID below every cached one, which goes at the
 * end.
 */
static inline int vpasid_desc_insert(u32 *ids, unsigned int *n, u32 pasid,
				     unsigned int moves)
{
	/*
	 * Above the entry @moves from the end: too far in, known without the
	 * search (frees in the order of their allocations, a held burst's,
	 * are nearly all there).
	 */
	if (*n > moves && ids[*n - 1 - moves] < pasid)
		return -E2BIG;
	if (*n && ids[*n - 1] <= pasid)
		return __vpasid_desc_insert(ids, n, pasid, moves);
	ids[(*n)++] = pasid;
	return 0;
}

/* vpasid_transport.c */
const char *vpasid_op_name(u16 opcode);
void vpasid_init_slots(struct virtio_pasid *vp);
void vpasid_fill(struct vpasid_slot *slot, u16 opcode, u32 pasid,
		 u32 min, u32 max);
int vpasid_queue(struct virtio_pasid *vp, struct vpasid_slot *slot,
		 unsigned int out_len, unsigned int in_len);
int vpasid_post(struct virtio_pasid *vp, struct vpasid_slot *slot,
		unsigned int out_len, unsigned int in_len);
void vpasid_reap(struct virtio_pasid *vp);
void vpasid_vq_done(struct virtqueue *vq);
struct vpasid_slot *vpasid_claim(struct virtio_pasid *vp);
void vpasid_unclaim(struct vpasid_slot *slot);
void vpasid_free_async(struct virtio_pasid *vp, u32 pasid);
void vpasid_give_back(struct virtio_pasid *vp, u32 pasid);
unsigned int vpasid_drop_pending(struct virtio_pasid *vp);

/* vpasid_wait.c */
int vpasid_poll(struct virtio_pasid *vp, struct vpasid_slot *slot,
		u32 *value);
int vpasid_wait(struct virtio_pasid *vp, struct vpasid_slot *slot,
		u32 *value);
int vpasid_request(struct virtio_pasid *vp, u16 opcode, u32 pasid,
		   u32 min, u32 max, vpasid_answered_t answered,
		   bool may_sleep, u32 *value);
unsigned int vpasid_quiesce(struct virtio_pasid *vp);
int vpasid_poll_for(struct virtio_pasid *vp,
		    bool (*ready)(struct virtio_pasid *vp, void *arg),
		    void *arg);

/* vpasid_lease.c */
unsigned int vpasid_lease_wanted(void);
int vpasid_lease_init(struct virtio_pasid *vp);
void vpasid_lease_start(struct virtio_pasid *vp);
void vpasid_lease_stop(struct virtio_pasid *vp);
void vpasid_lease_drain(struct virtio_pasid *vp);
void vpasid_lease_kick(struct virtio_pasid *vp);
int vpasid_lease_return_one(struct virtio_pasid *vp);
void vpasid_lease_missed(struct virtio_pasid *vp);
int vpasid_lease_fetch(struct virtio_pasid *vp, unsigned int room, u32 lo,
		       u32 hi, u32 *pasid);
bool vpasid_lease_put(struct virtio_pasid *vp, u32 pasid);
void vpasid_cache_keep(struct virtio_pasid *vp, u32 pasid);
unsigned int vpasid_lease_held(const struct virtio_pasid *vp);
void vpasid_stash_flush(struct virtio_pasid *vp);
void vpasid_stash_due(struct virtio_pasid *vp);

/*
 * The low mark of a cache of size C (lease_size): at fewer than C/2
 * cached (counting what unanswered GRANTs bring) the cache is refilled up
 * to C, in whole batches posted together (one notification, one
 * interrupt), so that a burst finds up to C PASIDs on their way while it
 * takes the rest. Half: a burst costs one such group per C/2 allocations,
 * and the C/2 left cover the round trip (at C/4, bursts missed). A steady
 * loop of one alloc() and one free() moves the cache between C - 1 and
 * C, so it never crosses the mark nor spills: it hits the cache every
 * time and sends nothing. Bursts of up to C/2 allocations then as many
 * frees send nothing either.
 */
static inline unsigned int vpasid_lease_low(const struct virtio_pasid *vp)
{
	return vp->lease_size / 2;
}

/*
 * What the cache's size is measured against: the cache and the stash,
 * whose PASIDs (frees, and the lowest cached, vpasid_stash_fill()) serve
 * the next allocations as well. vp->lock held, or without it as a hint
 * (vpasid_stash_put()): each count is read once, the stash's moving under
 * vpasid_reg.lock.
 */
static inline unsigned int vpasid_cache_level(const struct virtio_pasid *vp)
{
	return READ_ONCE(vp->ncached) + READ_ONCE(vp->nstash);
}

/*
 * What the watermarks measure: the cache's level and what unanswered
 * GRANTs bring to it. As vpasid_cache_level().
 */
static inline unsigned int vpasid_cache_due(const struct virtio_pasid *vp)
{
	return vpasid_cache_level(vp) + READ_ONCE(vp->granting);
}

/*
 * What GRANTs may still bring below the cache's size: none once the cache
 * is due to reach it. Read once: without vpasid_reg.lock (the work items)
 * a free may stash a PASID between two readings of the level.
 */
static inline unsigned int vpasid_cache_room(const struct virtio_pasid *vp)
{
	unsigned int due = vpasid_cache_due(vp);

	return vp->lease_size > due ? vp->lease_size - due : 0;
}

/*
 * PASIDs the VM holds and has not handed out, as the host counts them:
 * the cache, the spill, the stash, and those listed in RETURNs the host
 * has not answered yet. vp->lock held; the stash moves under
 * vpasid_reg.lock instead, and its count is read once.
 */
static inline unsigned int vpasid_lease_unused(const struct virtio_pasid *vp)
{
	return vp->ncached + vp->nspill + vp->returning +
	       READ_ONCE(vp->nstash);
}

/*
 * A short cache (fewer than C/4 cached) with GRANTs on their way looks at
 * the virtqueue itself for their answers rather than wait for the
 * interrupt: once per VPASID_SHORT_POLL allocations (a look costs about as
 * much as an allocation), and at each of the last VPASID_SHORT_POLL.
 */
#define VPASID_SHORT_POLL	8

/* Short: fewer than C/4 cached, with GRANTs on their way; vp->lock held. */
static inline bool vpasid_cache_short(const struct virtio_pasid *vp)
{
	return vp->granting && vp->ncached < vp->lease_size / 4;
}

static inline bool vpasid_lease_look(const struct virtio_pasid *vp)
{
	return vpasid_cache_short(vp) &&
	       (vp->ncached < VPASID_SHORT_POLL ||
		!(vp->ncached % VPASID_SHORT_POLL));
}

/*
 * How many PASIDs the spill gathers before they go back: twelve batches,
 * whose RETURNs cost the device one notification and the driver one
 * interrupt, or half the spill's room if that is less, so that frees
 * never fill it while the host keeps up.
 */
static inline unsigned int vpasid_spill_flush_at(const struct virtio_pasid *vp)
{
	return clamp_t(unsigned int, vp->spill_room / 2,
		       VIRTIO_PASID_LEASE_BATCH_MAX,
		       12 * VIRTIO_PASID_LEASE_BATCH_MAX);
}

/*
 * The cache moved (vp->lock held): kick it (vpasid_lease_kick()) only when
 * it left its band: below the low mark, short with answers to look for
 * (vpasid_lease_look()), or a spill to give back
 * (vpasid_spill_flush_at()). Inline, so that the take or put of
 * nearly every alloc() and free() costs no call: under emulation each
 * call and return of the hot path costs as much as the work it does.
 */
static inline void vpasid_cache_moved(struct virtio_pasid *vp)
{
	if (vpasid_cache_due(vp) < vpasid_lease_low(vp) ||
	    vpasid_lease_look(vp) || vp->nspill >= vpasid_spill_flush_at(vp))
		vpasid_lease_kick(vp);
}

/*
 * Take the lowest cached PASID in [lo, hi]; vp->lock held. False when none
 * is cached there.
 */
static inline bool vpasid_cache_take(struct virtio_pasid *vp, u32 lo, u32 hi,
				     u32 *pasid)
{
	if (!vpasid_desc_take(vp->cache, &vp->ncached, lo, hi, pasid))
		return false;
	vpasid_cache_moved(vp);
	return true;
}

/*
 * free() of an active device with leases on: keep @pasid in the stash,
 * under vpasid_reg.lock only; a full stash first moves into the cache (or
 * the spill) under vp->lock, once per VPASID_STASH frees
 * (vpasid_stash_flush()). Under emulation vp->lock, taken with interrupts
 * off, cost a free about as much as the rest of the driver's work. Once
 * the cache, what GRANTs bring and the stash reach the cache's size (read
 * without vp->lock: the reap only brings what granting counts), the
 * spill's work item is due (vpasid_stash_due()): it moves the stash on
 * within VPASID_SPILL_IDLE_MS, so that an idle VM keeps at most C. False
 * when leases are off. The stash is emptied whenever the allocator stops
 * being active (vpasid_register.c) and by the work items
 * (vpasid_lease.c), so that only alloc() and free() of an active
 * allocator see it.
 */
static inline bool vpasid_stash_put(struct virtio_pasid *vp, u32 pasid)
{
	if (!vp->lease_cap)
		return false;
	if (vp->nstash == VPASID_STASH)
		vpasid_stash_flush(vp);
	if (!vp->stash_due && vpasid_cache_due(vp) >= READ_ONCE(vp->lease_size))
		vpasid_stash_due(vp);
	vp->stash[vp->nstash++] = pasid;
	return true;
}

/*
 * alloc() took the lowest cached PASID in range from the cache, the stash
 * being empty: up to VPASID_STASH_FILL more of the lowest cached, those
 * up to @hi, move into the stash, lowest last, so that the next
 * allocations of a burst take them under vpasid_reg.lock alone
 * (vpasid_stash_take()), as frees put theirs, and vp->lock is taken once
 * per VPASID_STASH_FILL + 1 allocations. They stay the VM's unused
 * PASIDs, counted as before (vpasid_lease_unused()); the work items and
 * every change of state put them back as they do frees. vp->lock and
 * vpasid_reg.lock held. Not while the cache is short with GRANTs on
 * their way: then every allocation takes from the cache, which looks.
 */
static inline void vpasid_stash_fill(struct virtio_pasid *vp, u32 hi)
{
	unsigned int k = min_t(unsigned int, vp->ncached, VPASID_STASH_FILL);

	/* Short: each allocation looks for answers (vpasid_lease_look()). */
	if (vpasid_cache_short(vp))
		return;
	/* Descending: the first of the k is the highest. */
	while (k && vp->cache[vp->ncached - k] > hi)
		k--;
	if (!k)
		return;
	memcpy(vp->stash, &vp->cache[vp->ncached - k], k * sizeof(*vp->stash));
	vp->ncached -= k;
	vp->nstash = k;
	vpasid_cache_moved(vp);
}

/*
 * alloc(): the last PASID the stash holds, if it lies in [lo, hi]: an
 * alloc() after a free() takes it back, and one after
 * vpasid_stash_fill() the lowest cached, with no lock but
 * vpasid_reg.lock. False otherwise (the cache serves).
 */
static inline bool vpasid_stash_take(struct virtio_pasid *vp, u32 lo, u32 hi,
				     u32 *pasid)
{
	u32 last;

	if (!vp->nstash)
		return false;
	last = vp->stash[vp->nstash - 1];
	if (last < lo || last > hi)
		return false;
	vp->nstash--;
	*pasid = last;
	return true;
}

/* vpasid_alloc.c */
int vpasid_alloc_pasid(struct virtio_pasid *vp, u32 lo, u32 hi,
		       unsigned long in_use, u32 *pasid);
void vpasid_free_pasid(struct virtio_pasid *vp, u32 pasid);

/* vpasid_held.c: the registration (vpasid_register.c) and what it holds */
enum vpasid_state {
	VPASID_UNREGISTERED,
	VPASID_WAITING,		/* ioasid_register_allocator() said -EAGAIN */
	VPASID_ACTIVE,
	VPASID_SUSPENDED,	/* registered, device frozen: PASIDs kept */
	VPASID_DRAINING,	/* device gone, PASIDs still outstanding */
	VPASID_RESUMING,	/* registered, a new device reconciles */
};

/*
 * The registration outlives the device it forwards to: after a removal
 * with PASIDs outstanding it stays registered ("draining") until the last
 * one is freed, or until a new device that offers VIRTIO_PASID_F_RECONCILE
 * binds: that one resumes ("resuming", then "active") with the PASIDs kept.
 * For that RECONCILE the registration knows which PASIDs it handed out.
 * One for the driver: vpasid_reg.
 */
struct vpasid_registration {
	/* Serializes probe, remove, freeze, restore and the work items. */
	struct mutex mutex;
	/* Protects state, vp and outstanding; held across a request. */
	spinlock_t lock;
	enum vpasid_state state;
	struct virtio_pasid *vp;	/* backing device, NULL if none */
	unsigned long outstanding;	/* PASIDs handed to the framework */
	unsigned long *held;		/* those PASIDs, one bit each */
	/*
	 * Handed out, but a RECONCILE found that the host does not hold
	 * them for this VM (CONFLICT, REFUSED): free() tells nobody and
	 * never caches them. A subset of held.
	 */
	unsigned long *lost;
	/*
	 * The lease cache of a removed device that offered RECONCILE: held
	 * on the host, not handed out. Draining, alloc() takes from it and
	 * free() puts into it; a resume lists it and hands it to the new
	 * device's cache. Ascending, norphan of orphan_cap used.
	 */
	u32 *orphan;
	unsigned int norphan;
	unsigned int orphan_cap;
	/*
	 * Resuming: the RECONCILE cursor (vpasid_held_next()) after the
	 * last batch posted, and whether that batch was the last. alloc()
	 * may hand out an orphan the list will name as handed out, or has
	 * named as cached (vpasid_orphan_take_listed()).
	 */
	u32 reconcile_at;
	bool reconcile_listed_all;
	u64 space_id;			/* of the last device registered */
	struct work_struct unregister_work;
};

extern struct vpasid_registration vpasid_reg;

/* Every PASID a device can hand out: the held and lost bitmaps' size. */
#define VPASID_PASID_SPACE	BIT(VIRTIO_PASID_MAX_BITS)

/* vpasid_held_add(): a lost PASID is the VM's again. */
#define VPASID_REGAINED	1

/*
 * Mark @pasid handed out; vpasid_reg.lock held, @pasid below 2^20 (the
 * config check bounds it). Return 0, or, when it is handed out already:
 * VPASID_REGAINED for a lost one, which the host has freed and now gave
 * the VM again, so it is the VM's on the host again (no longer lost: its
 * free will tell the host) while still in use here; -EEXIST for any other,
 * which the host should not have handed out. Inline, as
 * vpasid_held_release(): every alloc() and free() runs them.
 */
static inline int vpasid_held_add(u32 pasid)
{
	if (!test_bit(pasid, vpasid_reg.held)) {
		__set_bit(pasid, vpasid_reg.held);
		return 0;
	}
	return __test_and_clear_bit(pasid, vpasid_reg.lost) ? VPASID_REGAINED :
							       -EEXIST;
}

/* @pasid is freed; vpasid_reg.lock held. True when it was lost. */
static inline bool vpasid_held_release(u32 pasid)
{
	if (pasid >= VPASID_PASID_SPACE)
		return false;
	__clear_bit(pasid, vpasid_reg.held);
	return __test_and_clear_bit(pasid, vpasid_reg.lost);
}

const char *vpasid_state_name(enum vpasid_state state);
int vpasid_held_init(void);
void vpasid_held_exit(void);
bool vpasid_orphan_take(u32 lo, u32 hi, u32 *pasid);
bool vpasid_orphan_take_listed(u32 lo, u32 hi, u32 *pasid);
bool vpasid_orphan_put_listed(u32 pasid);
void vpasid_orphan_put(u32 pasid);
u32 *vpasid_orphans_detach(unsigned int *n);
void vpasid_held_lock(void);
void vpasid_held_unlock(void);
unsigned int vpasid_held_next(u32 *cursor, __le32 *list, unsigned int max);
void vpasid_held_listed(u32 cursor, bool last);
void vpasid_held_result(struct virtio_pasid *vp, u32 pasid, u32 result);
unsigned int vpasid_held_cached(void);
unsigned int vpasid_orphan_cache(struct virtio_pasid *vp);
void vpasid_adopt_orphans(struct virtio_pasid *vp);
void vpasid_lost_show(struct seq_file *m);
unsigned long vpasid_outstanding(void);

/* vpasid_ioasid.c */
int vpasid_ops_register(void);
void vpasid_ops_unregister(void);

/* vpasid_register.c */
extern const struct attribute_group *vpasid_drv_groups[];
int vpasid_attach(struct virtio_pasid *vp, bool *resume);
void vpasid_register(struct virtio_pasid *vp);
unsigned long vpasid_detach(struct virtio_pasid *vp);
void vpasid_suspend(struct virtio_pasid *vp);
void vpasid_resume(struct virtio_pasid *vp);
int vpasid_registration_init(void);
void vpasid_registration_exit(void);

/* vpasid_reconcile.c */
int vpasid_reconcile(struct virtio_pasid *vp);

/* vpasid_debugfs.c */
void vpasid_debugfs_init(void);
void vpasid_debugfs_exit(void);
void vpasid_debugfs_add(struct virtio_pasid *vp);
void vpasid_debugfs_remove(struct virtio_pasid *vp);

#endif /* _VPASID_H */
