// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid counters in debugfs: one read-only seq_file per device,
 * /sys/kernel/debug/virtio_pasid/<device> (e.g. virtio0), one "name value"
 * line per counter. Counters are for diagnosis, not ABI: that is why they
 * live here and not in sysfs. They count from the device's probe.
 */
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include "vpasid.h"

static struct dentry *vpasid_debugfs_root;

struct vpasid_counter {
	const char *name;
	size_t offset;		/* of an atomic64_t in struct vpasid_stats */
};

#define VPASID_COUNTER(name, field) \
	{ name, offsetof(struct vpasid_stats, field) }

static const struct vpasid_counter vpasid_counters[] = {
	VPASID_COUNTER("allocs", allocs),
	VPASID_COUNTER("frees", frees),
	VPASID_COUNTER("unsent_frees", unsent_frees),
	VPASID_COUNTER("timeouts", timeouts),
	VPASID_COUNTER("late_completions", late_completions),
	VPASID_COUNTER("no_slot", no_slot),
	VPASID_COUNTER("out_of_range", out_of_range),
	VPASID_COUNTER("protocol_errors", protocol_errors),
	VPASID_COUNTER("rejected", rejected),
	VPASID_COUNTER("last_rtt_ns", last_rtt_ns),
	VPASID_COUNTER("max_rtt_ns", max_rtt_ns),
	VPASID_COUNTER("lease_hits", lease_hits),
	VPASID_COUNTER("lease_misses", lease_misses),
	VPASID_COUNTER("refills", refills),
	VPASID_COUNTER("returns", returns),
	VPASID_COUNTER("fast_fails", fast_fails),
	VPASID_COUNTER("alloc_waits", alloc_waits),
	VPASID_COUNTER("alloc_wait_ns", alloc_wait_ns),
	VPASID_COUNTER("free_waits", free_waits),
	VPASID_COUNTER("free_wait_ns", free_wait_ns),
	VPASID_COUNTER("answers", answers),
	VPASID_COUNTER("answer_rtt_ns", answer_rtt_ns),
	VPASID_COUNTER("single_frees", single_frees),
	VPASID_COUNTER("reconcile_kept", reconcile_kept),
	VPASID_COUNTER("reconcile_granted", reconcile_granted),
	VPASID_COUNTER("reconcile_conflicts", reconcile_conflicts),
	VPASID_COUNTER("reconcile_refused", reconcile_refused),
	VPASID_COUNTER("reconcile_dropped", reconcile_dropped),
	VPASID_COUNTER("lost_frees", lost_frees),
	/* Answers the device refused, by status. */
	VPASID_COUNTER("failures/no_space",
		       failures[VIRTIO_PASID_S_NO_SPACE]),
	VPASID_COUNTER("failures/quota_exceeded",
		       failures[VIRTIO_PASID_S_QUOTA_EXCEEDED]),
	VPASID_COUNTER("failures/invalid", failures[VIRTIO_PASID_S_INVALID]),
	VPASID_COUNTER("failures/not_owner",
		       failures[VIRTIO_PASID_S_NOT_OWNER]),
	VPASID_COUNTER("failures/not_found",
		       failures[VIRTIO_PASID_S_NOT_FOUND]),
	VPASID_COUNTER("failures/internal", failures[VIRTIO_PASID_S_INTERNAL]),
	VPASID_COUNTER("failures/rate_limited",
		       failures[VIRTIO_PASID_S_RATE_LIMITED]),
	VPASID_COUNTER("failures/unknown", failures[VPASID_NR_STATUS]),
};

static int vpasid_stats_show(struct seq_file *m, void *unused)
{
	struct virtio_pasid *vp = m->private;
	const u8 *stats = (const u8 *)&vp->stats;
	unsigned int i;

	seq_printf(m, "register_attempts %u\n", READ_ONCE(vp->attempts));
	seq_printf(m, "outstanding %lu\n", vpasid_outstanding());
	/*
	 * Lease state: the resting cache size (0: off), the size demand has
	 * grown it to, its fill, the mark.
	 */
	seq_printf(m, "lease_cap %u\n", vp->lease_cap);
	seq_printf(m, "lease_size %u\n", READ_ONCE(vp->lease_size));
	/* The spill too: held, not handed out, on its way back. */
	seq_printf(m, "cached %u\n", vpasid_lease_held(vp));
	seq_printf(m, "spill %u\n", READ_ONCE(vp->nspill));
	seq_printf(m, "unresponsive %u\n", READ_ONCE(vp->unresponsive) ? 1 : 0);
	for (i = 0; i < ARRAY_SIZE(vpasid_counters); i++) {
		const atomic64_t *counter = (const atomic64_t *)
			(stats + vpasid_counters[i].offset);

		seq_printf(m, "%s %llu\n", vpasid_counters[i].name,
			   (u64)atomic64_read(counter));
	}
	/* In use here, not held on the host (conflict, refused). */
	vpasid_lost_show(m);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vpasid_stats);

void vpasid_debugfs_init(void)
{
	vpasid_debugfs_root = debugfs_create_dir(KBUILD_MODNAME, NULL);
}

void vpasid_debugfs_exit(void)
{
	debugfs_remove_recursive(vpasid_debugfs_root);
}

void vpasid_debugfs_add(struct virtio_pasid *vp)
{
	vp->debugfs = debugfs_create_file(dev_name(&vp->vdev->dev), 0444,
					  vpasid_debugfs_root, vp,
					  &vpasid_stats_fops);
}

/* On return no reader is inside vpasid_stats_show() for @vp. */
void vpasid_debugfs_remove(struct virtio_pasid *vp)
{
	debugfs_remove(vp->debugfs);
}
