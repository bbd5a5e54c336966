// SPDX-License-Identifier: GPL-2.0
/*
 * TEST ONLY: drive the IOASID framework from userspace.
 *
 * Never load this outside a test guest. It lets root allocate, look up and
 * free IOASIDs the way in-kernel IOMMU users do, through one debugfs file,
 * /sys/kernel/debug/ioasid_exerciser/ctl: write one command line, then read
 * the result line. The command language is described in README.md. Every
 * IOASID this module allocated is tracked and freed on unload. This file
 * holds the commands and the debugfs file; "stress" runs its threads in
 * ioasid_exerciser_stress.c.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bits.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/ioasid.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#include "ioasid_exerciser.h"

#define EXERCISER_CMD_MAX	128
#define EXERCISER_ARGS_MAX	4
#define EXERCISER_N_MAX		BIT(20)
#define EXERCISER_BENCH_MAX	10000000UL

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

/* stress THREADS PAIRS MIN MAX: see ioasid_exerciser_stress.c. */
static int exerciser_cmd_stress(unsigned long *arg)
{
	struct exerciser_stress_result r;
	int err;

	if (arg[1] > EXERCISER_BENCH_MAX)
		return -EINVAL;
	err = exerciser_stress(&exerciser_set, arg[0], arg[1], arg[2], arg[3],
			       &r);
	if (err)
		return err;
	snprintf(exerciser_result, sizeof(exerciser_result),
		 "ok %ld %ld %ld %ld %ld\n", r.done, r.failed, r.duplicate,
		 r.out_of_range, r.lookup);
	return 0;
}

/* held N MIN MAX: see ioasid_exerciser_stress.c. */
static int exerciser_cmd_held(unsigned long *arg)
{
	struct exerciser_held_result r;
	unsigned long n;
	int err;

	if (!arg[0] || arg[0] > EXERCISER_N_MAX)
		return -EINVAL;
	err = exerciser_held(&exerciser_set, arg[0], arg[1], arg[2], &r);
	if (err)
		return err;
	n = max(r.done, 1UL);
	snprintf(exerciser_result, sizeof(exerciser_result),
		 "ok %lu %llu %llu %ld %ld %ld\n", r.done,
		 div64_u64(r.alloc_ns, n), div64_u64(r.free_ns, n), r.duplicate,
		 r.out_of_range, r.lookup);
	return 0;
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
	{ "held",	 3, 0,	    exerciser_cmd_held },
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
