// SPDX-License-Identifier: GPL-2.0
/*
 * TEST ONLY: drive the IOASID framework from userspace.
 *
 * Never load this outside a test guest. It lets root allocate, look up and
 * free IOASIDs the way in-kernel IOMMU users do, through one debugfs file,
 * /sys/kernel/debug/ioasid_exerciser/ctl: write one command line, then read
 * the result line. The command language is described in README.md. Every
 * IOASID this module allocated is tracked and freed on unload.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/bits.h>
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/ioasid.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#define EXERCISER_CMD_MAX	128
#define EXERCISER_ARGS_MAX	4
#define EXERCISER_N_MAX		BIT(20)
#define EXERCISER_BENCH_MAX	10000000UL
#define EXERCISER_THREADS_MAX	16
/* IDs each stress thread keeps allocated while it allocates more. */
#define EXERCISER_STRESS_HOLD	16

/* Our IOASIDs, and a second set so that "find" can be shown -EACCES. */
static DECLARE_IOASID_SET(exerciser_set);
static DECLARE_IOASID_SET(exerciser_other_set);

/* IOASIDs this module holds, so that free_all and unload release them. */
static DEFINE_XARRAY(exerciser_ids);

/* Serializes commands and guards the result line. */
static DEFINE_MUTEX(exerciser_lock);
static char exerciser_result[64];
static struct dentry *exerciser_dir;

static const char *exerciser_errname(int err)
{
	switch (err) {
	case -ENOENT:
		return "ENOENT";
	case -EACCES:
		return "EACCES";
	case -EINVAL:
		return "EINVAL";
	case -ENOMEM:
		return "ENOMEM";
	case -ENOTSUPP:
		return "ENOTSUPP";
	}
	return NULL;
}

static void exerciser_set_err(int err)
{
	const char *name = exerciser_errname(err);

	if (name)
		snprintf(exerciser_result, sizeof(exerciser_result), "err %s\n",
			 name);
	else
		snprintf(exerciser_result, sizeof(exerciser_result), "err %d\n",
			 err);
}

/* Decimal, or hexadecimal with a 0x prefix. */
static int exerciser_num(const char *s, unsigned long *val)
{
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		return kstrtoul(s + 2, 16, val);
	return kstrtoul(s, 10, val);
}

static int exerciser_track(ioasid_t id)
{
	int err = xa_err(xa_store(&exerciser_ids, id, xa_mk_value(1),
				  GFP_KERNEL));

	if (err)
		ioasid_free(id);
	return err;
}

/* Refuse to touch IOASIDs of other users: report why we do not own @id. */
static int exerciser_owned(ioasid_t id)
{
	void *priv;

	if (xa_load(&exerciser_ids, id))
		return 0;
	priv = ioasid_find(&exerciser_set, id, NULL);
	return IS_ERR(priv) ? PTR_ERR(priv) : -ENOENT;
}

static int exerciser_alloc(struct ioasid_set *set, unsigned long *arg)
{
	ioasid_t id = ioasid_alloc(set, arg[0], arg[1], (void *)arg[2]);
	int err;

	if (id == INVALID_IOASID) {
		strscpy(exerciser_result, "err INVALID\n",
			sizeof(exerciser_result));
		return 0;
	}
	err = exerciser_track(id);
	if (err)
		return err;
	snprintf(exerciser_result, sizeof(exerciser_result), "ok %u\n", id);
	return 0;
}

static int exerciser_cmd_alloc(unsigned long *arg)
{
	return exerciser_alloc(&exerciser_set, arg);
}

static int exerciser_cmd_alloc_other(unsigned long *arg)
{
	return exerciser_alloc(&exerciser_other_set, arg);
}

/* One allocation, timed inside the kernel: how long a failure took. */
static int exerciser_cmd_alloc_timed(unsigned long *arg)
{
	ktime_t start = ktime_get();
	ioasid_t id = ioasid_alloc(&exerciser_set, arg[0], arg[1], NULL);
	u64 ns = ktime_to_ns(ktime_sub(ktime_get(), start));
	int err;

	if (id == INVALID_IOASID) {
		snprintf(exerciser_result, sizeof(exerciser_result),
			 "err INVALID %llu\n", ns);
		return 0;
	}
	err = exerciser_track(id);
	if (err)
		return err;
	snprintf(exerciser_result, sizeof(exerciser_result), "ok %u %llu\n",
		 id, ns);
	return 0;
}

static int exerciser_cmd_free(unsigned long *arg)
{
	int err = exerciser_owned(arg[0]);

	if (err)
		return err;
	ioasid_free(arg[0]);
	xa_erase(&exerciser_ids, arg[0]);
	strscpy(exerciser_result, "ok\n", sizeof(exerciser_result));
	return 0;
}

static int exerciser_cmd_find(unsigned long *arg)
{
	void *priv = ioasid_find(&exerciser_set, arg[0], NULL);

	if (IS_ERR(priv))
		return PTR_ERR(priv);
	snprintf(exerciser_result, sizeof(exerciser_result), "ok %lu\n",
		 (unsigned long)priv);
	return 0;
}

static int exerciser_cmd_set_data(unsigned long *arg)
{
	int err = exerciser_owned(arg[0]);

	if (!err)
		err = ioasid_set_data(arg[0], (void *)arg[1]);
	if (err)
		return err;
	strscpy(exerciser_result, "ok\n", sizeof(exerciser_result));
	return 0;
}

static int exerciser_cmd_alloc_n(unsigned long *arg)
{
	ioasid_t id, first = INVALID_IOASID, last = INVALID_IOASID;
	unsigned long n, count = 0;

	n = min(arg[0], EXERCISER_N_MAX);
	while (count < n) {
		id = ioasid_alloc(&exerciser_set, arg[1], arg[2], NULL);
		if (id == INVALID_IOASID || exerciser_track(id))
			break;
		if (!count)
			first = id;
		last = id;
		count++;
		cond_resched();
	}
	if (count)
		snprintf(exerciser_result, sizeof(exerciser_result),
			 "ok %lu %u %u\n", count, first, last);
	else
		strscpy(exerciser_result, "ok 0 - -\n",
			sizeof(exerciser_result));
	return 0;
}

static unsigned long exerciser_free_all(void)
{
	unsigned long index, count = 0;
	void *entry;

	xa_for_each(&exerciser_ids, index, entry) {
		ioasid_free(index);
		xa_erase(&exerciser_ids, index);
		count++;
		cond_resched();
	}
	return count;
}

static int exerciser_cmd_free_all(unsigned long *arg)
{
	snprintf(exerciser_result, sizeof(exerciser_result), "ok %lu\n",
		 exerciser_free_all());
	return 0;
}

static int exerciser_cmd_bench(unsigned long *arg)
{
	unsigned long i, n = arg[0];
	ktime_t start;
	u64 ns;
	ioasid_t id;

	if (!n || n > EXERCISER_BENCH_MAX)
		return -EINVAL;
	start = ktime_get();
	for (i = 0; i < n; i++) {
		id = ioasid_alloc(&exerciser_set, arg[1], arg[2], NULL);
		if (id == INVALID_IOASID) {
			strscpy(exerciser_result, "err INVALID\n",
				sizeof(exerciser_result));
			return 0;
		}
		ioasid_free(id);
		cond_resched();
	}
	ns = ktime_to_ns(ktime_sub(ktime_get(), start));
	snprintf(exerciser_result, sizeof(exerciser_result), "ok %lu %llu\n",
		 n, div64_u64(ns, n));
	return 0;
}

/*
 * stress: THREADS kernel threads each run PAIRS allocations and frees at
 * once, keeping up to EXERCISER_STRESS_HOLD IDs each, so that allocations
 * and frees of different threads overlap on every CPU. Every ID handed out
 * is checked: within [min, max], held by no other thread at that moment
 * (the shared xarray), and found by ioasid_find() with the private data
 * its thread stored.
 */
struct exerciser_stress {
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
	if (ioasid_find(&exerciser_set, id, NULL) != private)
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
		id = ioasid_alloc(&exerciser_set, st->min, st->max, private);
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
		if (ioasid_find(&exerciser_set, id, NULL) != private)
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

static int exerciser_cmd_stress(unsigned long *arg)
{
	unsigned long i, started = 0, nthreads = arg[0];
	struct exerciser_stress_thread *threads;
	struct task_struct *task;
	struct exerciser_stress *st;
	int err = 0;

	if (!nthreads || nthreads > EXERCISER_THREADS_MAX ||
	    arg[1] > EXERCISER_BENCH_MAX)
		return -EINVAL;
	st = kzalloc(sizeof(*st), GFP_KERNEL);
	threads = kcalloc(nthreads, sizeof(*threads), GFP_KERNEL);
	if (!st || !threads) {
		err = -ENOMEM;
		goto free;
	}
	st->pairs = arg[1];
	st->min = arg[2];
	st->max = arg[3];
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
	if (!err)
		snprintf(exerciser_result, sizeof(exerciser_result),
			 "ok %ld %ld %ld %ld %ld\n",
			 atomic_long_read(&st->done),
			 atomic_long_read(&st->failed),
			 atomic_long_read(&st->duplicate),
			 atomic_long_read(&st->out_of_range),
			 atomic_long_read(&st->lookup));
free:
	kfree(threads);
	kfree(st);
	return err;
}

struct exerciser_cmd {
	const char *name;
	unsigned int nargs;
	unsigned int ptr_args;	/* bit i: argument i is a pointer value */
	int (*run)(unsigned long *arg);
};

static const struct exerciser_cmd exerciser_cmds[] = {
	{ "alloc",	 3, BIT(2), exerciser_cmd_alloc },
	{ "alloc_other", 3, BIT(2), exerciser_cmd_alloc_other },
	{ "alloc_timed", 2, 0,	    exerciser_cmd_alloc_timed },
	{ "free",	 1, 0,	    exerciser_cmd_free },
	{ "find",	 1, 0,	    exerciser_cmd_find },
	{ "set_data",	 2, BIT(1), exerciser_cmd_set_data },
	{ "alloc_n",	 3, 0,	    exerciser_cmd_alloc_n },
	{ "free_all",	 0, 0,	    exerciser_cmd_free_all },
	{ "bench",	 3, 0,	    exerciser_cmd_bench },
	{ "stress",	 4, 0,	    exerciser_cmd_stress },
};

/* Parse and run one command line; called with exerciser_lock held. */
static int exerciser_run(char *line)
{
	const struct exerciser_cmd *cmd = NULL;
	unsigned long arg[EXERCISER_ARGS_MAX];
	unsigned int i, nargs = 0;
	char *name, *tok;

	name = strsep(&line, " \t");
	for (i = 0; i < ARRAY_SIZE(exerciser_cmds); i++)
		if (!strcmp(name, exerciser_cmds[i].name))
			cmd = &exerciser_cmds[i];
	if (!cmd)
		return -EINVAL;

	while ((tok = strsep(&line, " \t"))) {
		if (!*tok)
			continue;
		if (nargs == cmd->nargs || exerciser_num(tok, &arg[nargs]))
			return -EINVAL;
		/* IOASIDs, ranges and counts are 32-bit. */
		if (!(cmd->ptr_args & BIT(nargs)) && arg[nargs] > UINT_MAX)
			return -EINVAL;
		nargs++;
	}
	if (nargs != cmd->nargs)
		return -EINVAL;
	return cmd->run(arg);
}

static ssize_t exerciser_write(struct file *file, const char __user *ubuf,
			       size_t count, loff_t *ppos)
{
	char line[EXERCISER_CMD_MAX];
	int err;

	if (count >= sizeof(line))
		return -EINVAL;
	if (copy_from_user(line, ubuf, count))
		return -EFAULT;
	line[count] = '\0';

	mutex_lock(&exerciser_lock);
	err = exerciser_run(strim(line));
	if (err)
		exerciser_set_err(err);
	mutex_unlock(&exerciser_lock);
	return count;
}

static ssize_t exerciser_read(struct file *file, char __user *ubuf,
			      size_t count, loff_t *ppos)
{
	ssize_t ret;

	mutex_lock(&exerciser_lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, exerciser_result,
				      strlen(exerciser_result));
	mutex_unlock(&exerciser_lock);
	return ret;
}

static const struct file_operations exerciser_fops = {
	.owner = THIS_MODULE,
	.read = exerciser_read,
	.write = exerciser_write,
	.llseek = default_llseek,
};

static int __init exerciser_init(void)
{
	exerciser_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("ctl", 0600, exerciser_dir, NULL, &exerciser_fops);
	pr_warn("TEST ONLY: IOASIDs can be allocated from /sys/kernel/debug/%s/ctl\n",
		KBUILD_MODNAME);
	return 0;
}

static void __exit exerciser_exit(void)
{
	unsigned long count;

	/* Waits for commands in progress; none can start afterwards. */
	debugfs_remove_recursive(exerciser_dir);
	mutex_lock(&exerciser_lock);
	count = exerciser_free_all();
	mutex_unlock(&exerciser_lock);
	xa_destroy(&exerciser_ids);
	if (count)
		pr_info("freed %lu IOASID(s) on unload\n", count);
}

module_init(exerciser_init);
module_exit(exerciser_exit);

MODULE_DESCRIPTION("TEST ONLY: userspace access to the IOASID framework");
MODULE_LICENSE("GPL");
