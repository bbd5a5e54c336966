/* SPDX-License-Identifier: GPL-2.0 */
/* TEST ONLY: what ioasid_exerciser's two files share. */
#ifndef _IOASID_EXERCISER_H
#define _IOASID_EXERCISER_H

#include <linux/ioasid.h>

/* What a stress run counted (README.md, "stress"). */
struct exerciser_stress_result {
	long done;		/* allocations that succeeded */
	long failed;		/* ioasid_alloc() returned INVALID_IOASID */
	long duplicate;		/* an ID another thread held */
	long out_of_range;	/* an ID outside [min, max] */
	long lookup;		/* ioasid_find() did not give the private data */
};

int exerciser_stress(struct ioasid_set *set, unsigned long nthreads,
		     unsigned long pairs, unsigned long min, unsigned long max,
		     struct exerciser_stress_result *res);

#endif /* _IOASID_EXERCISER_H */
