/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		distkit's shared memory: one map of regions (shmem.c).
 *
 * Each module that keeps state in shared memory exposes a size function
 * and an init function; shmem.c lists them in its table of regions, sums
 * the sizes, requests the LWLock tranches and creates or attaches to each
 * region under its own name (see pg_shmem_allocations).  How to add a
 * region: docs/hacking.md, "Shared memory".
 *
 *-------------------------------------------------------------------------
 */
#ifndef DISTKIT_SHMEM_H
#define DISTKIT_SHMEM_H

#include "storage/lwlock.h"

/*
 * A region's init: base is its memory (size bytes, MAXALIGNed), found is
 * true when it already existed (attach only: set the module's pointers),
 * lock is its LWLock (NULL if the region asks for none).  Called in the
 * postmaster at startup (and in every backend under EXEC_BACKEND), with
 * AddinShmemInitLock held.
 */
typedef void (*DkShmemInitFn) (void *base, bool found, LWLock *lock);

extern void DkShmemInit(void);

/* The regions, one pair per module (defined in the module). */
extern Size DkLaxShmemSize(void);	/* lax.c */
extern void DkLaxShmemInit(void *base, bool found, LWLock *lock);
extern Size DkLiveShmemSize(void);	/* instance.c */
extern void DkLiveShmemInit(void *base, bool found, LWLock *lock);
extern Size DkLeaderShmemSize(void);	/* leader.c */
extern void DkLeaderShmemInit(void *base, bool found, LWLock *lock);
extern Size DkMetricsShmemSize(void);	/* metrics.c */
extern void DkMetricsShmemInit(void *base, bool found, LWLock *lock);
extern Size DkRateShmemSize(void);	/* ratestate.c */
extern void DkRateShmemInit(void *base, bool found, LWLock *lock);
extern Size DkOutboxShmemSize(void);	/* outbox.c */
extern void DkOutboxShmemInit(void *base, bool found, LWLock *lock);

#endif
