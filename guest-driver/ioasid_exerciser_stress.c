// SPDX-License-Identifier: GPL-2.0
/*
 * TEST ONLY: the exerciser's "stress" command (ioasid_exerciser_main.c
 * parses it): kernel threads that allocate and free IOASIDs at once and
 * check every ID they are given; and its "held" command: a burst of
 * allocations kept, then freed, timed and checked.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/err.h>
#include <linux/ioasid.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/string.h>
#include <linux/xarray.h>

#include "ioasid_exerciser.h"

#define EXERCISER_THREADS_MAX	16
/* IDs each stress thread keeps allocated while it allocates more. */
#define EXERCISER_STRESS_HOLD	16

/*
 * stress: THREADS kernel threads each run PAIRS allocations and frees at
 * once, keeping up to EXERCISER_STRESS_HOLD IDs each, so that allocations
 * and frees of different threads overlap on every CPU. Every ID handed out
 * is checked: within [min, max], held by no other thread at that moment
 * (the shared xarray), and found by ioasid_find() with the private data
 * its thread stored.
 */
struct exerciser_stress {
	struct ioasid_set *set;
	unsigned long pairs, min, max;
	struct xarray live;	/* ID -> thread number, while held */
	atomic_long_t done;	/* pairs completed */
	atomic_long_t failed;	/* ioasid_alloc() returned INVALID_IOASID */
	atomic_long_t duplicate; /* an ID another thread held */
	atomic_long_t out_of_range;
	atomic_long_t lookup;	/* ioasid_find() did not give the private data */
};

struct exerciser_stress_thread {
	struct exerciser_stress *st;
	unsigned long nr;
	struct completion done;
};

static void *exerciser_stress_private(unsigned long nr, unsigned long i)
{
	/* Nonzero, and different for every thread and pair. */
	return (void *)((nr << 24 | (i & 0xffffff)) + 1);
}

static void exerciser_stress_free(struct exerciser_stress *st, ioasid_t id,
				  void *private)
{
	if (ioasid_find(st->set, id, NULL) != private)
		atomic_long_inc(&st->lookup);
	/* Erase before the free: the ID may be handed out again at once. */
	xa_erase(&st->live, id);
	ioasid_free(id);
}

static int exerciser_stress_fn(void *data)
{
	struct exerciser_stress_thread *t = data;
	struct exerciser_stress *st = t->st;
	ioasid_t held[EXERCISER_STRESS_HOLD];
	void *held_private[EXERCISER_STRESS_HOLD];
	unsigned long i, slot;
	void *private;
	ioasid_t id;
	int err;

	for (slot = 0; slot < EXERCISER_STRESS_HOLD; slot++)
		held[slot] = INVALID_IOASID;
	for (i = 0; i < st->pairs; i++) {
		slot = i % EXERCISER_STRESS_HOLD;
		if (held[slot] != INVALID_IOASID)
			exerciser_stress_free(st, held[slot], held_private[slot]);
		held[slot] = INVALID_IOASID;
		private = exerciser_stress_private(t->nr, i);
		id = ioasid_alloc(st->set, st->min, st->max, private);
		if (id == INVALID_IOASID) {
			atomic_long_inc(&st->failed);
			cond_resched();
			continue;
		}
		if (id < st->min || id > st->max)
			atomic_long_inc(&st->out_of_range);
		err = xa_insert(&st->live, id, xa_mk_value(t->nr), GFP_KERNEL);
		if (err == -EBUSY)
			atomic_long_inc(&st->duplicate);
		else if (err)
			atomic_long_inc(&st->failed);
		if (ioasid_find(st->set, id, NULL) != private)
			atomic_long_inc(&st->lookup);
		held[slot] = id;
		held_private[slot] = private;
		atomic_long_inc(&st->done);
		cond_resched();
	}
	for (slot = 0; slot < EXERCISER_STRESS_HOLD; slot++)
		if (held[slot] != INVALID_IOASID)
			exerciser_stress_free(st, held[slot], held_private[slot]);
	complete(&t->done);
	return 0;
}

/*
 * Run @nthreads threads of @pairs allocations each over [@min, @max] in
 * @set, and wait for them; the counts in *@res. Return 0 or a negative
 * errno (-EINVAL: no or too many threads).
 */
int exerciser_stress(struct ioasid_set *set, unsigned long nthreads,
		     unsigned long pairs, unsigned long min, unsigned long max,
		     struct exerciser_stress_result *res)
{
	unsigned long i, started = 0;
	struct exerciser_stress_thread *threads;
	struct task_struct *task;
	struct exerciser_stress *st;
	int err = 0;

	if (!nthreads || nthreads > EXERCISER_THREADS_MAX)
		return -EINVAL;
	st = kzalloc(sizeof(*st), GFP_KERNEL);
	threads = kcalloc(nthreads, sizeof(*threads), GFP_KERNEL);
	if (!st || !threads) {
		err = -ENOMEM;
		goto free;
	}
	st->set = set;
	st->pairs = pairs;
	st->min = min;
	st->max = max;
	xa_init(&st->live);
	for (i = 0; i < nthreads; i++) {
		threads[i].st = st;
		threads[i].nr = i;
		init_completion(&threads[i].done);
		task = kthread_run(exerciser_stress_fn, &threads[i],
				   "ioasid_stress/%lu", i);
		if (IS_ERR(task)) {
			err = PTR_ERR(task);
			break;
		}
		started++;
	}
	for (i = 0; i < started; i++)
		/*
		 * Wake up every second: a long run under TCG must not look
		 * like a hung task.
		 */
		while (!wait_for_completion_timeout(&threads[i].done, HZ))
			;
	xa_destroy(&st->live);
	res->done = atomic_long_read(&st->done);
	res->failed = atomic_long_read(&st->failed);
	res->duplicate = atomic_long_read(&st->duplicate);
	res->out_of_range = atomic_long_read(&st->out_of_range);
	res->lookup = atomic_long_read(&st->lookup);
free:
	kfree(threads);
	kfree(st);
	return err;
}

static int exerciser_cmp_ids(const void *a, const void *b)
{
	ioasid_t x = *(const ioasid_t *)a, y = *(const ioasid_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * held: N allocations in a row, each kept, as SVA users keep their PASIDs
 * (private data: the ID's index + 1), timed; then every ID is checked
 * (within [min, max], once only, found by ioasid_find() with its private
 * data) and all are freed in a row, timed. Stops allocating at the first
 * failure; whatever was allocated is freed all the same.
 */
int exerciser_held(struct ioasid_set *set, unsigned long n,
		   unsigned long min, unsigned long max,
		   struct exerciser_held_result *res)
{
	ioasid_t *ids;
	unsigned long i;
	ktime_t start;
	void *priv;

	memset(res, 0, sizeof(*res));
	ids = kvmalloc_array(n, sizeof(*ids), GFP_KERNEL);
	if (!ids)
		return -ENOMEM;
	start = ktime_get();
	for (i = 0; i < n; i++) {
		ids[i] = ioasid_alloc(set, min, max, (void *)(i + 1));
		if (ids[i] == INVALID_IOASID)
			break;
		cond_resched();
	}
	res->alloc_ns = ktime_to_ns(ktime_sub(ktime_get(), start));
	res->done = i;
	for (i = 0; i < res->done; i++) {
		if (ids[i] < min || ids[i] > max)
			res->out_of_range++;
		priv = ioasid_find(set, ids[i], NULL);
		if (IS_ERR_OR_NULL(priv) || priv != (void *)(i + 1))
			res->lookup++;
	}
	start = ktime_get();
	for (i = 0; i < res->done; i++) {
		ioasid_free(ids[i]);
		cond_resched();
	}
	res->free_ns = ktime_to_ns(ktime_sub(ktime_get(), start));
	sort(ids, res->done, sizeof(*ids), exerciser_cmp_ids, NULL);
	for (i = 1; i < res->done; i++)
		res->duplicate += ids[i] == ids[i - 1];
	kvfree(ids);
	return 0;
}
