// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid ascending PASID arrays: the lease cache (vpasid_lease.c) and
 * the cache a removed device left (the orphans, vpasid_held.c). Sorted so
 * that an allocation takes the lowest PASID of a range with one binary
 * search. Pure helpers: the caller holds whatever lock guards the array.
 */
#include <linux/string.h>

#include "vpasid.h"

/* Index of the first of the @n ascending @ids that is >= @pasid. */
unsigned int vpasid_ids_search(const u32 *ids, unsigned int n, u32 pasid)
{
	unsigned int lo = 0, hi = n;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (ids[mid] < pasid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Insert @pasid into the *@n ascending @ids, which have room for one more.
 * False, and nothing changed, when it is there already.
 */
bool vpasid_ids_insert(u32 *ids, unsigned int *n, u32 pasid)
{
	unsigned int at = vpasid_ids_search(ids, *n, pasid);

	if (at < *n && ids[at] == pasid)
		return false;
	memmove(&ids[at + 1], &ids[at], (*n - at) * sizeof(*ids));
	ids[at] = pasid;
	(*n)++;
	return true;
}

/* Remove the entry at @at of the *@n ascending @ids. */
void vpasid_ids_remove(u32 *ids, unsigned int *n, unsigned int at)
{
	(*n)--;
	memmove(&ids[at], &ids[at + 1], (*n - at) * sizeof(*ids));
}

/*
 * Take the lowest of the *@n ascending @ids in [@lo, @hi] into *@pasid.
 * False, and nothing changed, when none lies there.
 */
bool vpasid_ids_take(u32 *ids, unsigned int *n, u32 lo, u32 hi, u32 *pasid)
{
	unsigned int at = vpasid_ids_search(ids, *n, lo);

	if (at >= *n || ids[at] > hi)
		return false;
	*pasid = ids[at];
	vpasid_ids_remove(ids, n, at);
	return true;
}
