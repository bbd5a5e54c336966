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

/* What a held burst measured and counted (README.md, "held"). */
struct exerciser_held_result {
	unsigned long done;	/* allocations before the first failure */
	u64 alloc_ns;		/* all of them, in a row */
	u64 free_ns;		/* freeing them all, in a row */
	long duplicate;		/* an ID handed out twice */
	long out_of_range;	/* an ID outside [min, max] */
	long lookup;		/* ioasid_find() did not give the private data */
};

int exerciser_held(struct ioasid_set *set, unsigned long n,
		   unsigned long min, unsigned long max,
		   struct exerciser_held_result *res);

#endif /* _IOASID_EXERCISER_H */
