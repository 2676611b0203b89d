/*-------------------------------------------------------------------------
 *
 * metrics.c
 *		Call metrics per operation and mode: distkit_stat_calls.
 *
 * What is measured: every call of one of distkit's SQL functions (except
 * the monitoring views' own functions), and every flush batch of the
 * worker.  Per operation ("counter/inc", ...) and, where the function takes
 * a distkit_mode, per mode: calls, failed calls by SQLSTATE class, Redis
 * round trips, total time and a latency histogram in fixed buckets.
 *
 * How the SQL functions are measured — centrally, not in each function:
 * needs_fmgr_hook answers true for distkit's own C functions (resolved
 * once per function and backend from pg_proc: language C, probin naming
 * the distkit library, prosrc one of the symbols of OPS below; the answers
 * are cached and dropped on any pg_proc invalidation), so the function
 * manager calls them through fmgr_security_definer, which calls fmgr_hook
 * with FHET_START before the function and FHET_END or FHET_ABORT (with
 * the error being thrown, read with geterrcode()) after it.  The mode is
 * the one the function resolves from its mode argument (DkArgMode calls
 * DkMetricsSetMode); before that, distkit.default_mode.  Round trips are
 * the difference of DkRoundTrips, which redis.c increments for every
 * request written to a node, across the call.  Other modules' fmgr hooks
 * are chained.
 *
 * Where: shared memory, one block of counters per backend (indexed by
 * MyBackendId), each written only by its own backend with plain 64-bit
 * stores (pg_atomic_read/write_u64, no lock, no read-modify-write
 * instruction); a new backend with the same id keeps adding to them.  The
 * view sums the blocks.  Every counter only grows, so a reset does not
 * touch the blocks (a backend could be writing its own at that moment):
 * it copies the current sums into a baseline under an LWLock, and the view
 * subtracts the baseline.  The LWLock is taken only by the view and the
 * reset, never by a measured call.
 *
 * distkit.track_calls = off makes needs_fmgr_hook answer false (the
 * functions are then called directly, at no cost) and the hooks do
 * nothing for calls already set up through them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "distkit.h"
#include "shmem.h"
#include "metrics.h"
#include "version.h"

PG_FUNCTION_INFO_V1(distkit_stat_calls);
PG_FUNCTION_INFO_V1(distkit_stat_calls_buckets);
PG_FUNCTION_INFO_V1(distkit_stat_calls_reset);

/* One measured operation: the C symbol of its SQL function, its name. */
typedef struct DkOpDef
{
	const char *symbol;			/* NULL: not an SQL function */
	const char *name;
	bool		has_mode;		/* split into strict and lax */
} DkOpDef;

static const DkOpDef OPS[] = {
	{"distkit_inc", "counter/inc", true},
	{"distkit_dec", "counter/dec", true},
	{"distkit_get", "counter/get", true},
	{"distkit_get_many", "counter/get_many", true},
	{"distkit_set", "counter/set", false},
	{"distkit_del", "counter/del", false},
	{"distkit_clear", "counter/clear", false},
	{"distkit_inc_if", "counter/inc_if", false},
	{"distkit_flush", "counter/flush", false},
	{"distkit_rate_allow", "rate/allow", true},
	{"distkit_rate_check", "rate/check", true},
	{"distkit_rate_peek", "rate/peek", false},
	{"distkit_rate_reset", "rate/reset", false},
	{"distkit_instance_inc", "instance/inc", true},
	{"distkit_instance_dec", "instance/dec", true},
	{"distkit_instance_get", "instance/get", true},
	{"distkit_instance_set", "instance/set", false},
	{"distkit_instance_set_here", "instance/set_here", false},
	{"distkit_instance_del", "instance/del", false},
	{"distkit_instance_del_here", "instance/del_here", false},
	{"distkit_instance_clear", "instance/clear", false},
	{"distkit_instance_clear_here", "instance/clear_here", false},
	{"distkit_lease_acquire", "lease/acquire", false},
	{"distkit_lease_renew", "lease/renew", false},
	{"distkit_lease_release", "lease/release", false},
	{"distkit_lease_holder", "lease/holder", false},
	{"distkit_leader_acquire", "leader/acquire", false},
	{"distkit_is_leader", "leader/is_leader", false},
	{"distkit_leader_release", "leader/release", false},
	{"distkit_leader_holder", "leader/holder", false},
	{"distkit_semaphore_acquire", "semaphore/acquire", false},
	{"distkit_semaphore_renew", "semaphore/renew", false},
	{"distkit_semaphore_release", "semaphore/release", false},
	{"distkit_semaphore_count", "semaphore/count", false},
	{"distkit_cache_set", "cache/set", false},
	{"distkit_cache_set_text", "cache/set_text", false},
	{"distkit_cache_set_bytea", "cache/set_bytea", false},
	{"distkit_cache_add", "cache/add", false},
	{"distkit_cache_add_text", "cache/add_text", false},
	{"distkit_cache_add_bytea", "cache/add_bytea", false},
	{"distkit_cache_get", "cache/get", false},
	{"distkit_cache_get_text", "cache/get_text", false},
	{"distkit_cache_get_bytea", "cache/get_bytea", false},
	{"distkit_cache_delete", "cache/delete", false},
	{"distkit_cache_exists", "cache/exists", false},
	{"distkit_cache_ttl", "cache/ttl", false},
	{"distkit_cache_clear", "cache/clear", false},
	{"distkit_idempotency_begin", "idempotency/begin", false},
	{"distkit_idempotency_complete", "idempotency/complete", false},
	{"distkit_idempotency_abandon", "idempotency/abandon", false},
	{"distkit_breaker_configure", "breaker/configure", false},
	{"distkit_breaker_allow", "breaker/allow", false},
	{"distkit_breaker_record", "breaker/record", false},
	{"distkit_breaker_state", "breaker/state", false},
	{"distkit_breaker_reset", "breaker/reset", false},
	{"distkit_breaker_trip", "breaker/trip", false},
	{"distkit_queue_send", "queue/send", false},
	{"distkit_queue_read", "queue/read", false},
	{"distkit_queue_ack", "queue/ack", false},
	{"distkit_queue_pending", "queue/pending", false},
	{"distkit_queue_length", "queue/length", false},
	{"distkit_queue_purge", "queue/purge", false},
	{"distkit_outbox_send", "outbox/send", false},
	{NULL, "flush/batch", false},
};
#define DK_NOPS lengthof(OPS)
#define DK_OP_FLUSH_BATCH (DK_NOPS - 1)

/* Counted entries: one per operation, two (strict, lax) with a mode. */
#define DK_NENTRIES (DK_NOPS + 9)

/* Error classes, in the view's column order. */
#define DK_ERR_CONNECTION 0		/* 08 */
#define DK_ERR_DATA 1			/* 22 */
#define DK_ERR_PRIVILEGE 2		/* 42 */
#define DK_ERR_RESOURCES 3		/* 53 */
#define DK_ERR_OPERATOR 4		/* 57 */
#define DK_ERR_OTHER 5
#define DK_NERR 6

/*
 * Latency buckets: upper bounds in microseconds (a call of exactly a bound
 * falls into that bucket); the last bucket is unbounded.
 */
static const double BUCKET_US[] = {
	1, 2.5, 5, 10, 25, 50, 100, 250, 500,
	1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000
};
#define DK_NBUCKETS (lengthof(BUCKET_US) + 1)

/* The counters of one entry (256 bytes). */
typedef struct DkCallCounters
{
	pg_atomic_uint64 calls;
	pg_atomic_uint64 errors[DK_NERR];
	pg_atomic_uint64 round_trips;
	pg_atomic_uint64 time_ns;
	pg_atomic_uint64 hist[DK_NBUCKETS];
} DkCallCounters;

#define DK_NWORDS (sizeof(DkCallCounters) / sizeof(pg_atomic_uint64))

/* The same counters summed over backends, in private memory. */
typedef struct DkCallSums
{
	uint64		calls;
	uint64		errors[DK_NERR];
	uint64		round_trips;
	uint64		time_ns;
	uint64		hist[DK_NBUCKETS];
} DkCallSums;

StaticAssertDecl(sizeof(DkCallSums) == DK_NWORDS * sizeof(uint64),
				 "DkCallSums must mirror DkCallCounters");

typedef struct DkMetricsShared
{
	LWLock	   *lock;			/* guards baseline (view and reset only) */
	int			nslots;			/* backends: MaxBackends */
	DkCallCounters baseline[DK_NENTRIES];
	DkCallCounters slots[FLEXIBLE_ARRAY_MEMBER];	/* nslots * DK_NENTRIES */
} DkMetricsShared;

/* A call in progress of this backend (fmgr_hook). */
typedef struct DkFrame
{
	FmgrInfo   *flinfo;
	int			op;
	int			mode;			/* DkMode, or -1 without a mode */
	instr_time	start;
	uint64		round_trips;
} DkFrame;

#define DK_MAX_DEPTH 8

static DkMetricsShared *shared = NULL;
static DkCallCounters *my_slot = NULL;	/* this backend's block */
static bool track_calls = true;
uint64		DkRoundTrips = 0;

static DkFrame frames[DK_MAX_DEPTH];
static int	depth = 0;

/* first entry of each operation; entry_op/entry_mode: the reverse */
static int	op_entry[DK_NOPS];
static int	entry_op[DK_NENTRIES];
static int	entry_mode[DK_NENTRIES];

/* function OID -> operation (-1: not ours), for this backend */
typedef struct DkOidOp
{
	Oid			oid;
	int			op;
} DkOidOp;
static HTAB *oid_ops = NULL;
static bool oid_ops_stale = false;
static bool callback_registered = false;

static needs_fmgr_hook_type prev_needs_fmgr_hook = NULL;
static fmgr_hook_type prev_fmgr_hook = NULL;

/* Size of the region "distkit call metrics": a block per backend (MaxBackends). */
Size
DkMetricsShmemSize(void)
{
	return add_size(offsetof(DkMetricsShared, slots),
					mul_size(sizeof(DkCallCounters), mul_size(MaxBackends, DK_NENTRIES)));
}

/* Region init (shmem.c): create or attach to the counters. */
void
DkMetricsShmemInit(void *base, bool found, LWLock *lock)
{
	shared = base;
	if (!found)
	{
		pg_atomic_uint64 *w = (pg_atomic_uint64 *) shared->baseline;
		Size		nwords = (Size) DK_NWORDS * DK_NENTRIES * (MaxBackends + 1);

		shared->lock = lock;
		shared->nslots = MaxBackends;
		/* baseline and slots are contiguous */
		for (Size i = 0; i < nwords; i++)
			pg_atomic_init_u64(&w[i], 0);
	}
}

/* Operation of a C symbol; -1 if none. */
static int
OpOfSymbol(const char *symbol)
{
	for (int i = 0; i < (int) DK_NOPS; i++)
		if (OPS[i].symbol && strcmp(OPS[i].symbol, symbol) == 0)
			return i;
	return -1;
}

/* Whether probin ("$libdir/distkit", ".../distkit.so") names this library. */
static bool
IsDistkitLibrary(const char *probin)
{
	const char *base = strrchr(probin, '/');
	size_t		len;

	base = base ? base + 1 : probin;
	len = strlen(base);
	if (len > strlen(DLSUFFIX) && strcmp(base + len - strlen(DLSUFFIX), DLSUFFIX) == 0)
		len -= strlen(DLSUFFIX);
	return len == strlen("distkit") && strncmp(base, "distkit", len) == 0;
}

/* Read pg_proc: the operation of a function, -1 if not one of ours. */
static int
ResolveOp(Oid fn_oid)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	Form_pg_proc form;
	Datum		d;
	bool		isnull;
	int			op = -1;

	if (!HeapTupleIsValid(tup))
		return -1;
	form = (Form_pg_proc) GETSTRUCT(tup);
	if (form->prolang == ClanguageId)
	{
		d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin, &isnull);
		if (!isnull)
		{
			char	   *probin = TextDatumGetCString(d);

			if (IsDistkitLibrary(probin))
			{
				char	   *prosrc;

				d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull);
				if (!isnull)
				{
					prosrc = TextDatumGetCString(d);
					op = OpOfSymbol(prosrc);
					pfree(prosrc);
				}
			}
			pfree(probin);
		}
	}
	ReleaseSysCache(tup);
	return op;
}

/* pg_proc changed (CREATE/ALTER/DROP EXTENSION, ...): forget the answers. */
static void
ProcChanged(Datum arg, int cacheid, uint32 hashvalue)
{
	oid_ops_stale = true;
}

/* Operation of a function, cached per backend. */
static int
LookupOp(Oid fn_oid)
{
	DkOidOp    *e;
	bool		found;

	if (oid_ops == NULL || oid_ops_stale)
	{
		HASHCTL		ctl;

		if (oid_ops)
			hash_destroy(oid_ops);
		if (!callback_registered)
		{
			CacheRegisterSyscacheCallback(PROCOID, ProcChanged, (Datum) 0);
			callback_registered = true;
		}
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(DkOidOp);
		ctl.hcxt = TopMemoryContext;
		oid_ops = hash_create("distkit function operations", 128, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		oid_ops_stale = false;
	}
	e = hash_search(oid_ops, &fn_oid, HASH_FIND, NULL);
	if (e)
		return e->op;
	{
		int			op = ResolveOp(fn_oid);

		/* a pg_proc invalidation during the lookup: do not cache */
		if (oid_ops_stale)
			return op;
		e = hash_search(oid_ops, &fn_oid, HASH_ENTER, &found);
		e->op = op;
		return op;
	}
}

/* This backend's block of counters; NULL without shared memory or backend id. */
static DkCallCounters *
MySlot(void)
{
	if (my_slot == NULL && shared != NULL &&
		MyBackendId != InvalidBackendId && MyBackendId >= 1 && MyBackendId <= shared->nslots)
		my_slot = &shared->slots[(Size) (MyBackendId - 1) * DK_NENTRIES];
	return my_slot;
}

/* needs_fmgr_hook: true for distkit's measured functions. */
static bool
DkNeedsFmgrHook(Oid fn_oid)
{
	bool		prev = prev_needs_fmgr_hook ? prev_needs_fmgr_hook(fn_oid) : false;

	if (track_calls && MySlot() != NULL && LookupOp(fn_oid) >= 0)
		return true;
	return prev;
}

/* Add v to a counter that only this backend writes. */
static inline void
Bump(pg_atomic_uint64 *c, uint64 v)
{
	pg_atomic_write_u64(c, pg_atomic_read_u64(c) + v);
}

/* Error class column of a SQLSTATE. */
static int
ErrorClass(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	if (category == ERRCODE_CONNECTION_EXCEPTION)
		return DK_ERR_CONNECTION;
	if (category == ERRCODE_DATA_EXCEPTION)
		return DK_ERR_DATA;
	if (category == ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION)
		return DK_ERR_PRIVILEGE;
	if (category == ERRCODE_INSUFFICIENT_RESOURCES)
		return DK_ERR_RESOURCES;
	if (category == ERRCODE_OPERATOR_INTERVENTION)
		return DK_ERR_OPERATOR;
	return DK_ERR_OTHER;
}

/* Counter row of an operation in a mode (mode -1: the operation has none). */
static inline int
EntryOf(int op, int mode)
{
	return op_entry[op] + (OPS[op].has_mode && mode == DK_MODE_LAX ? 1 : 0);
}

/* Count one finished call of entry (sqlerrcode 0: it succeeded). */
static void
Record(int entry, instr_time start, uint64 round_trips, int sqlerrcode)
{
	DkCallCounters *c = MySlot();
	instr_time	now;
	double		us;
	int			b;

	if (c == NULL)
		return;
	c += entry;
	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, start);
	us = INSTR_TIME_GET_DOUBLE(now) * 1000000.0;
	for (b = 0; b < (int) DK_NBUCKETS - 1; b++)
		if (us <= BUCKET_US[b])
			break;
	Bump(&c->calls, 1);
	if (sqlerrcode != 0)
		Bump(&c->errors[ErrorClass(sqlerrcode)], 1);
	Bump(&c->round_trips, round_trips);
	Bump(&c->time_ns, (uint64) (us * 1000.0));
	Bump(&c->hist[b], 1);
}

/* A measured function starts. */
static void
CallStart(FmgrInfo *flinfo)
{
	DkFrame    *f;
	int			op;

	if (!track_calls || depth >= DK_MAX_DEPTH || MySlot() == NULL)
		return;
	op = LookupOp(flinfo->fn_oid);
	if (op < 0)
		return;
	f = &frames[depth++];
	f->flinfo = flinfo;
	f->op = op;
	f->mode = OPS[op].has_mode ? DkCounterDefaultMode() : -1;
	f->round_trips = DkRoundTrips;
	INSTR_TIME_SET_CURRENT(f->start);
}

/* A measured function returned (sqlerrcode 0) or threw. */
static void
CallEnd(FmgrInfo *flinfo, int sqlerrcode)
{
	DkFrame    *f;

	if (depth == 0 || frames[depth - 1].flinfo != flinfo)
		return;
	f = &frames[--depth];
	Record(EntryOf(f->op, f->mode), f->start, DkRoundTrips - f->round_trips, sqlerrcode);
}

/* fmgr_hook: measure distkit's calls, then pass the event on. */
static void
DkFmgrHook(FmgrHookEventType event, FmgrInfo *flinfo, Datum *arg)
{
	switch (event)
	{
		case FHET_START:
			/* the previous hook first: if it throws, no frame is left behind */
			if (prev_fmgr_hook)
				prev_fmgr_hook(event, flinfo, arg);
			CallStart(flinfo);
			return;
		case FHET_END:
			CallEnd(flinfo, 0);
			break;
		case FHET_ABORT:
			CallEnd(flinfo, geterrcode());
			break;
	}
	if (prev_fmgr_hook)
		prev_fmgr_hook(event, flinfo, arg);
}

/* A transaction ended: no call can be in progress any more. */
static void
MetricsXactCallback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		depth = 0;
}

/* The call in progress resolved its mode argument (DkArgMode). */
void
DkMetricsSetMode(int mode)
{
	if (depth > 0 && frames[depth - 1].mode >= 0)
		frames[depth - 1].mode = mode;
}

/* The worker starts a flush batch. */
void
DkMetricsFlushBegin(DkMetricsCall *call)
{
	call->entry = -1;
	if (!track_calls || MySlot() == NULL)
		return;
	call->entry = EntryOf(DK_OP_FLUSH_BATCH, -1);
	call->round_trips = DkRoundTrips;
	INSTR_TIME_SET_CURRENT(call->start);
}

/* A call begun with DkMetricsFlushBegin ended (sqlerrcode 0: success). */
void
DkMetricsEnd(DkMetricsCall *call, int sqlerrcode)
{
	if (call->entry >= 0)
		Record(call->entry, call->start, DkRoundTrips - call->round_trips, sqlerrcode);
	call->entry = -1;
}

/* Defines distkit.track_calls; when preloaded, requests shared memory and installs the hooks. */
void
DkMetricsInit(void)
{
	int			e = 0;

	DefineCustomBoolVariable("distkit.track_calls",
							 "Counts distkit's calls, errors and latencies in distkit_stat_calls.",
							 "Needs distkit in shared_preload_libraries.",
							 &track_calls,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	for (int op = 0; op < (int) DK_NOPS; op++)
	{
		op_entry[op] = e;
		for (int m = 0; m < (OPS[op].has_mode ? 2 : 1); m++)
		{
			entry_op[e] = op;
			entry_mode[e] = OPS[op].has_mode ? m : -1;
			e++;
		}
	}
	if (e != DK_NENTRIES)
		elog(ERROR, "distkit: DK_NENTRIES is %d, the operations need %d", (int) DK_NENTRIES, e);
	if (!DkPreloaded)
		return;
	prev_needs_fmgr_hook = needs_fmgr_hook;
	needs_fmgr_hook = DkNeedsFmgrHook;
	prev_fmgr_hook = fmgr_hook;
	fmgr_hook = DkFmgrHook;
	RegisterXactCallback(MetricsXactCallback, NULL);
}

/* Sum of every backend's block for entry e, into out (DK_NWORDS words). */
static void
SumEntry(int e, DkCallSums *sums)
{
	uint64	   *out = (uint64 *) sums;

	memset(out, 0, sizeof(uint64) * DK_NWORDS);
	for (int s = 0; s < shared->nslots; s++)
	{
		pg_atomic_uint64 *w = (pg_atomic_uint64 *) &shared->slots[(Size) s * DK_NENTRIES + e];

		for (int i = 0; i < (int) DK_NWORDS; i++)
			out[i] += pg_atomic_read_u64(&w[i]);
	}
}

/* Latency (ms) below which a fraction q of the calls fall, from the histogram. */
static double
Percentile(const uint64 *hist, uint64 calls, double q)
{
	double		rank = q * (double) calls;
	uint64		cum = 0;

	for (int b = 0; b < (int) DK_NBUCKETS; b++)
	{
		double		lo = b == 0 ? 0 : BUCKET_US[b - 1];

		if (hist[b] == 0 || (double) (cum + hist[b]) < rank)
		{
			cum += hist[b];
			continue;
		}
		if (b == DK_NBUCKETS - 1)
			return lo / 1000.0;	/* unbounded: its lower bound */
		return (lo + (BUCKET_US[b] - lo) * (rank - (double) cum) / (double) hist[b]) / 1000.0;
	}
	return BUCKET_US[DK_NBUCKETS - 2] / 1000.0;
}

#define I64(u) ((int64) (u))

/*
 * distkit_stat_calls(): one row per operation and mode, since the last
 * distkit_stat_calls_reset().
 */
Datum
distkit_stat_calls(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DkCallSums *sums;

	DkCheckSqlVersion();
	DkRequirePreload("distkit_stat_calls");
	InitMaterializedSRF(fcinfo, 0);
	sums = palloc(sizeof(DkCallSums) * DK_NENTRIES);
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int e = 0; e < (int) DK_NENTRIES; e++)
	{
		pg_atomic_uint64 *base = (pg_atomic_uint64 *) &shared->baseline[e];
		uint64	   *w = (uint64 *) &sums[e];

		SumEntry(e, &sums[e]);
		for (int i = 0; i < (int) DK_NWORDS; i++)
			w[i] -= pg_atomic_read_u64(&base[i]);
	}
	LWLockRelease(shared->lock);

	for (int e = 0; e < (int) DK_NENTRIES; e++)
	{
		const DkCallSums *c = &sums[e];
		double		total_ms = (double) c->time_ns / 1000000.0;
		Datum		values[16];
		bool		nulls[16] = {0};
		Datum		buckets[DK_NBUCKETS];
		int			n = 0;

		values[n++] = CStringGetTextDatum(OPS[entry_op[e]].name);
		if (entry_mode[e] < 0)
			nulls[n++] = true;
		else
			values[n++] = CStringGetTextDatum(entry_mode[e] == DK_MODE_LAX ? "lax" : "strict");
		values[n++] = Int64GetDatum(I64(c->calls));
		for (int i = 0; i < DK_NERR; i++)
			values[n++] = Int64GetDatum(I64(c->errors[i]));
		values[n++] = Int64GetDatum(I64(c->round_trips));
		values[n++] = Float8GetDatum(total_ms);
		if (c->calls > 0)
			values[n++] = Float8GetDatum(total_ms / (double) c->calls);
		else
			nulls[n++] = true;
		for (int b = 0; b < (int) DK_NBUCKETS; b++)
			buckets[b] = Int64GetDatum(I64(c->hist[b]));
		values[n++] = PointerGetDatum(construct_array(buckets, DK_NBUCKETS, INT8OID, 8,
													  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		if (c->calls > 0)
		{
			values[n++] = Float8GetDatum(Percentile(c->hist, c->calls, 0.50));
			values[n++] = Float8GetDatum(Percentile(c->hist, c->calls, 0.95));
			values[n++] = Float8GetDatum(Percentile(c->hist, c->calls, 0.99));
		}
		else
		{
			nulls[n++] = true;
			nulls[n++] = true;
			nulls[n++] = true;
		}
		Assert(n == 16);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* distkit_stat_calls_buckets(): bucket number (1-based) and upper bound in ms. */
Datum
distkit_stat_calls_buckets(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	DkCheckSqlVersion();
	InitMaterializedSRF(fcinfo, 0);
	for (int b = 0; b < (int) DK_NBUCKETS; b++)
	{
		Datum		values[2];
		bool		nulls[2] = {0};

		values[0] = Int32GetDatum(b + 1);
		values[1] = Float8GetDatum(b < (int) DK_NBUCKETS - 1 ? BUCKET_US[b] / 1000.0 : get_float8_infinity());
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* distkit_stat_calls_reset(): start distkit_stat_calls from zero again. */
Datum
distkit_stat_calls_reset(PG_FUNCTION_ARGS)
{
	DkCallSums	sum;

	DkCheckSqlVersion();
	DkRequirePreload("distkit_stat_calls_reset");
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int e = 0; e < (int) DK_NENTRIES; e++)
	{
		pg_atomic_uint64 *base = (pg_atomic_uint64 *) &shared->baseline[e];

		SumEntry(e, &sum);
		for (int i = 0; i < (int) DK_NWORDS; i++)
			pg_atomic_write_u64(&base[i], ((uint64 *) &sum)[i]);
	}
	LWLockRelease(shared->lock);
	PG_RETURN_VOID();
}
