// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_pasid sorted PASID arrays. Ascending: the cache a removed device
 * left (the orphans, vpasid_held.c), listed in order by a resume.
 * Descending: the lease cache (vpasid_lease.c), so that what alloc() and
 * free() touch most, the lowest PASIDs, sits at the array's end, where a
 * take or an insert moves next to nothing (an ascending array moved the
 * whole cache on every one), and a GRANT's batch, higher than what is
 * cached, goes in front of it with one merge that moves nothing. Both
 * are sorted so that an allocation takes the lowest PASID of a range with
 * one binary search. Pure helpers: the caller holds whatever lock guards
 * the array.
 */
#include <linux/errno.h>
#include <linux/minmax.h>
#include <linux/sort.h>
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

/* How many of the @n descending @ids are >= @pasid (a prefix of them). */
static unsigned int vpasid_desc_count_ge(const u32 *ids, unsigned int n,
					 u32 pasid)
{
	unsigned int lo = 0, hi = n;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (ids[mid] >= pasid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * vpasid_desc_take() when the lowest entry is below @lo: the lowest of the
 * *@n descending @ids in [@lo, @hi], found by a binary search, into
 * *@pasid. False, and nothing changed, when none lies there.
 */
bool __vpasid_desc_take(u32 *ids, unsigned int *n, u32 lo, u32 hi,
			u32 *pasid)
{
	unsigned int at = vpasid_desc_count_ge(ids, *n, lo);

	if (!at || ids[at - 1] > hi)
		return false;
	*pasid = ids[at - 1];
	(*n)--;
	memmove(&ids[at - 1], &ids[at], (*n - (at - 1)) * sizeof(*ids));
	return true;
}

/*
 * vpasid_desc_insert() when @pasid is not below every entry: into its
 * place in the *@n descending @ids, which have room for one more, unless
 * that moves more than @moves of them. Return 0 when inserted, -EEXIST
 * when it is there already, -E2BIG when it lies too far in; nothing
 * changed but on 0.
 */
int __vpasid_desc_insert(u32 *ids, unsigned int *n, u32 pasid,
			 unsigned int moves)
{
	unsigned int at = vpasid_desc_count_ge(ids, *n, pasid);

	if (at && ids[at - 1] == pasid)
		return -EEXIST;
	if (*n - at > moves)
		return -E2BIG;
	memmove(&ids[at + 1], &ids[at], (*n - at) * sizeof(*ids));
	ids[at] = pasid;
	(*n)++;
	return 0;
}

static int vpasid_cmp_desc(const void *a, const void *b)
{
	u32 x = *(const u32 *)a, y = *(const u32 *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Sort the @n @ids into descending order, dropping repeats; return how
 * many are left. What comes ascending (a GRANT's batch, frees in the order
 * of their allocations) is reversed and then sorted already, in one pass:
 * only other orders pay for sort(), whose calls through pointers cost more
 * than the reversal.
 */
unsigned int vpasid_desc_sort(u32 *ids, unsigned int n)
{
	unsigned int i, out = 0;

	for (i = 0; i < n / 2; i++)
		swap(ids[i], ids[n - 1 - i]);
	for (i = 1; i < n && ids[i - 1] >= ids[i]; i++)
		;
	if (i < n)
		sort(ids, n, sizeof(*ids), vpasid_cmp_desc, NULL);
	for (i = 0; i < n; i++)
		if (!out || ids[out - 1] != ids[i])
			ids[out++] = ids[i];
	return out;
}

/*
 * Merge the @m descending @add into the *@n descending entries from *@ids,
 * which have room for @m more in front of them, in one pass from the top:
 * the merged run is written from *@ids - @m upwards, where it never
 * overtakes the old entries still to read, so that nothing moves when
 * every new one is higher, as a GRANT's batch mostly is. *@ids becomes
 * the merged run's first entry. A PASID in both is kept once. Return how
 * many of @add were there already.
 */
unsigned int vpasid_desc_merge(u32 **ids, unsigned int *n, const u32 *add,
			       unsigned int m)
{
	const u32 *old = *ids;
	u32 *out = *ids - m;
	unsigned int i = 0, j = 0, k = 0, dup = 0, run;

	/* out[k] is old[k - m]: read already while k < i + m. */
	while (j < m) {
		/* The old ones above add[j] move down as one run. */
		if (i < *n && old[i] > add[j]) {
			run = vpasid_desc_count_ge(&old[i], *n - i, add[j] + 1);
			memmove(&out[k], &old[i], run * sizeof(*out));
			k += run;
			i += run;
		}
		if (i < *n && old[i] == add[j]) {
			dup++;
			i++;
		}
		out[k++] = add[j++];
	}
	/* Without repeats k == i + m: the old ones left are in place. */
	if (dup)
		memmove(&out[k], &old[i], (*n - i) * sizeof(*out));
	*ids = out;
	*n += m - dup;
	return dup;
}
