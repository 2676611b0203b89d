/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		The one map of distkit's shared memory.
 *
 * As core's ipci.c does for the server, this file is the only place that
 * asks PostgreSQL for shared memory and LWLocks on distkit's behalf: one
 * shmem_request_hook sums the sizes of the regions listed in REGIONS and
 * requests every named LWLock tranche, one shmem_startup_hook creates (or,
 * under EXEC_BACKEND, attaches to) each region with ShmemInitStruct under
 * the region's own name and hands it to the module's init function.  So
 * pg_shmem_allocations shows distkit's footprint per module, and the
 * formula of each region's size is in docs/hacking.md ("Shared memory"),
 * checked by the regression test sql/18_shmem.sql.
 *
 * A module owns its region's layout: its size function (called in the
 * request hook, after every PGC_POSTMASTER setting is known, MaxBackends
 * included) and its init function (base, found, lock).  Adding a region is
 * one row in REGIONS plus the two prototypes in shmem.h.
 *
 * Only a preloaded library has shared memory: DkShmemInit installs the
 * hooks only while shared_preload_libraries is processed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "distkit.h"
#include "shmem.h"

/* One region of shared memory, owned by one module. */
typedef struct DkShmemRegion
{
	const char *name;			/* its name in pg_shmem_allocations */
	Size		(*size) (void);
	DkShmemInitFn init;
	const char *tranche;		/* a named LWLock tranche of one lock, or NULL */
} DkShmemRegion;

/* Every region, in creation order. */
static const DkShmemRegion REGIONS[] = {
	{"distkit lax buffer", DkLaxShmemSize, DkLaxShmemInit, "distkit"},
	{"distkit live instances", DkLiveShmemSize, DkLiveShmemInit, "distkit instances"},
	{"distkit leaders", DkLeaderShmemSize, DkLeaderShmemInit, "distkit leader"},
	{"distkit call metrics", DkMetricsShmemSize, DkMetricsShmemInit, "distkit metrics"},
	{"distkit rate reservations", DkRateShmemSize, DkRateShmemInit, "distkit rate"},
	{"distkit outbox shippers", DkOutboxShmemSize, DkOutboxShmemInit, NULL},
};

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* shmem_request_hook: the sum of the regions, and their LWLocks. */
static void
ShmemRequest(void)
{
	Size		total = 0;

	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	for (int i = 0; i < lengthof(REGIONS); i++)
	{
		/* ShmemInitStruct rounds each allocation up to a cache line */
		total = add_size(total, CACHELINEALIGN(REGIONS[i].size()));
		if (REGIONS[i].tranche)
			RequestNamedLWLockTranche(REGIONS[i].tranche, 1);
	}
	RequestAddinShmemSpace(total);
}

/* shmem_startup_hook: create or attach to every region. */
static void
ShmemStartup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (int i = 0; i < lengthof(REGIONS); i++)
	{
		const DkShmemRegion *r = &REGIONS[i];
		bool		found;
		void	   *base = ShmemInitStruct(r->name, r->size(), &found);
		LWLock	   *lock = NULL;

		if (r->tranche)
			lock = &(GetNamedLWLockTranche(r->tranche))->lock;
		r->init(base, found, lock);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Installs the two hooks (when preloaded). */
void
DkShmemInit(void)
{
	if (!DkPreloaded)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ShmemStartup;
}
