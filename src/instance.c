/*-------------------------------------------------------------------------
 *
 * instance.c
 *		Instance-aware counters: per-server slices, heartbeats, liveness.
 *
 * Every PostgreSQL server running distkit is an instance with a UUID
 * chosen at each postmaster start (see lax.c).  In the registry (one hash
 * slot, lua/instance_registry.lua) each instance also gets a small number,
 * recycled 7 days after its last heartbeat, and a serial that is never
 * reused; the live set is a string of 4 bytes per number (the serial of
 * the live instance holding it, 0 when none) with a version that changes
 * whenever the live set does.  The worker records this instance's
 * heartbeat every distkit.heartbeat_interval; instances whose heartbeat is
 * older than distkit.dead_instance_threshold leave the live set at the
 * next heartbeat of any server.  Each server keeps its number, serial and
 * a copy of the live set with its version in shared memory.
 *
 * An instance-aware counter is a Redis hash holding, per instance number,
 * its slice, the serial that wrote it, the counter epoch the slice belongs
 * to and when it was last written, plus a cached sum S of the live
 * current-epoch slices and the live-set version L it was computed at
 * (lua/instance.lua).  A call passes only this instance's number, serial,
 * the live-set version it knows and whether it is live there: O(1) bytes
 * and O(1) Redis work whatever the fleet size.  When the versions differ
 * the script changes nothing and answers DKSTALE (the caller resends with
 * its copy of the live set, and the script recomputes S once) or DKNEWER
 * (the caller refreshes its copy from the registry first).  Nothing is
 * subtracted when an instance dies — its slice stops counting — so a dead
 * instance is never subtracted twice, a paused instance that comes back
 * counts again exactly once, and a set/del (which bumps or removes the
 * epoch) makes old slices stale for good.  A server always counts its own
 * slice in what it is answered.
 *
 * Adding, reading (with the lax fallback), deferring and dec are
 * counterkind.c's, shared with simple counters; this file gives them the
 * kind's table (instance_kind: the instance.lua command of an op and its
 * resend after a live-set change, the {total, slice} reply).
 *
 * There is one hard limit, distkit.max_instances numbers: an instance that
 * finds none free is refused with an ERROR (54000), shown in
 * distkit_instances with no number.  The registry records the Redis
 * representation's version (<prefix>:reg:{instances}:meta); a server that
 * finds another one refuses instance-aware calls (55000).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "common/int.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "counterkind.h"
#include "distkit.h"
#include "instance.h"
#include "shmem.h"
#include "keys.h"
#include "lax.h"
#include "redis.h"
#include "txn.h"
#include "version.h"

/*
 * The Redis representation of everything under the prefix (instance-aware
 * counters, the registry, lax flush records): 3 since lax flushes keep one
 * exactly-once record per (instance, group) instead of one per counter.
 */
#define DK_REPRESENTATION "3"
#define SERIAL_LEN 16
#define MAX_RESENDS 4

PG_FUNCTION_INFO_V1(distkit_instance_inc);
PG_FUNCTION_INFO_V1(distkit_instance_dec);
PG_FUNCTION_INFO_V1(distkit_instance_get);
PG_FUNCTION_INFO_V1(distkit_instance_set);
PG_FUNCTION_INFO_V1(distkit_instance_set_here);
PG_FUNCTION_INFO_V1(distkit_instance_del);
PG_FUNCTION_INFO_V1(distkit_instance_del_here);
PG_FUNCTION_INFO_V1(distkit_instance_clear);
PG_FUNCTION_INFO_V1(distkit_instance_clear_here);
PG_FUNCTION_INFO_V1(distkit_instances);

typedef enum DkLiveProblem
{
	DK_LIVE_OK,
	DK_LIVE_FULL,				/* no instance number left */
	DK_LIVE_FORMAT				/* another representation under the prefix */
} DkLiveProblem;

/* This instance's registration and its copy of the live set. */
typedef struct DkLiveShared
{
	LWLock	   *lock;
	int			number;			/* -1: not registered yet */
	char		serial[SERIAL_LEN];
	int64		version;		/* of the live set below; 0: none */
	pg_atomic_uint32 live_count;	/* read without the lock (DkInstanceLiveCount) */
	DkLiveProblem problem;
	char		found[64];		/* DK_LIVE_FULL: numbers in use; FORMAT: the version found */
	TimestampTz updated_at;
	char		prefix[256];	/* the registry's prefix (the worker's distkit.prefix) */
	int			cells_len;		/* bytes of cells in use */
	char		cells[FLEXIBLE_ARRAY_MEMBER];	/* 4 bytes per number */
} DkLiveShared;

/* A backend's snapshot of it, for one call. */
typedef struct LiveSnap
{
	int			number;
	char		serial[SERIAL_LEN];
	int64		version;
	bool		me_live;
	char	   *cells;			/* NULL unless asked for */
	int			cells_len;
} LiveSnap;

static int	heartbeat_interval_ms = 1000;
static int	dead_threshold_ms = 30000;
static int	max_instances = 16384;
static DkLiveShared *live = NULL;
/* Size of the region "distkit live instances": the live set of max_instances numbers. */
Size
DkLiveShmemSize(void)
{
	return add_size(offsetof(DkLiveShared, cells), mul_size(4, max_instances));
}

/* Region init (shmem.c): create or attach to the live set. */
void
DkLiveShmemInit(void *base, bool found, LWLock *lock)
{
	live = base;
	if (!found)
	{
		memset(live, 0, offsetof(DkLiveShared, cells));
		live->number = -1;
		live->lock = lock;
		pg_atomic_init_u32(&live->live_count, 0);
	}
}

/* The heartbeat interval (for the worker task). */
static int
HeartbeatIntervalMs(void)
{
	return heartbeat_interval_ms;
}

/*
 * The registry command: op beat | live | leave | list.  list reads the
 * registry of the session's prefix; the others the one this server's
 * worker beats in (its distkit.prefix, kept in shared memory).
 */
static DkCmd *
RegistryCommand(const char *op)
{
	static const char *const suffixes[] = {"", ":meta", ":num", ":alive", ":free", ":live"};
	size_t		len;
	const char *prefix = DkKeyPrefix();
	char	   *reg;
	DkCmd	   *cmd = DkCmdScript(DK_LUA_INSTANCE_REGISTRY, lengthof(suffixes));
	int64		version = 0;

	if (live && strcmp(op, "list") != 0 && !IsBackgroundWorker)
	{
		LWLockAcquire(live->lock, LW_SHARED);
		if (live->prefix[0])
			prefix = pstrdup(live->prefix);
		LWLockRelease(live->lock);
	}
	reg = DkKeyBuildWithPrefix(prefix, DK_KIND_REGISTRY, "instances", 9, &len);
	for (int i = 0; i < lengthof(suffixes); i++)
		DkCmdArgStr(cmd, psprintf("%.*s%s", (int) len, reg, suffixes[i]));
	DkCmdArgStr(cmd, op);
	DkCmdArgStr(cmd, DkLaxInstanceId());
	DkCmdArgInt(cmd, dead_threshold_ms);
	DkCmdArgStr(cmd, DK_REPRESENTATION);
	DkCmdArgInt(cmd, max_instances);
	if (live)
	{
		LWLockAcquire(live->lock, LW_SHARED);
		version = live->version;
		LWLockRelease(live->lock);
	}
	DkCmdArgInt(cmd, version);
	return cmd;
}

/* Raise the error for a registry problem (see DkLiveProblem). */
static void
RaiseProblem(DkLiveProblem problem, const char *found)
{
	if (problem == DK_LIVE_FORMAT)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the Redis data under distkit.prefix \"%s\" is in representation %s; this server uses representation %s",
						DkKeyPrefix(), found, DK_REPRESENTATION),
				 errdetail("Servers running different distkit versions must not share a prefix: one would miscount the other's data."),
				 errhint("Give this server its own distkit.prefix, or upgrade every server of the fleet to the same distkit version (and remove the prefix's old keys).")));
	if (problem == DK_LIVE_FULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the instance registry of distkit.prefix \"%s\" is full: %s instances hold the %d instance numbers",
						DkKeyPrefix(), found, max_instances),
				 errdetail("This server has no instance number, so it cannot count in instance-aware counters."),
				 errhint("Raise distkit.max_instances (on every server, needs a restart); numbers of instances silent for 7 days are recycled.")));
}

/* An error reply of the registry script: DKFORMAT/DKFULL or a Redis error. */
static void
RegistryError(DkReply *r, const char *what)
{
	DkLiveProblem problem = DK_LIVE_OK;
	const char *found = "";

	if (strncmp(r->str, "DKFORMAT ", 9) == 0)
		problem = DK_LIVE_FORMAT, found = r->str + 9;
	else if (strncmp(r->str, "DKFULL ", 7) == 0)
		problem = DK_LIVE_FULL, found = r->str + 7;
	if (problem == DK_LIVE_OK)
		DkReplyRaiseError(r, what);
	if (live)
	{
		LWLockAcquire(live->lock, LW_EXCLUSIVE);
		live->problem = problem;
		strlcpy(live->found, found, sizeof(live->found));
		LWLockRelease(live->lock);
	}
	RaiseProblem(problem, found);
}

/*
 * Run the registry's beat or live op and keep what it answers in shared
 * memory: {now, number, serial, version, live count, live set or ""}.
 */
static void
RefreshLive(const char *op)
{
	const char *what = strcmp(op, "beat") == 0 ? "the instance heartbeat" : "the instance registry";
	DkReply    *r = DkRedisRunOne(RegistryCommand(op), DK_IDEMPOTENT);
	int64		version;
	DkReply    *cells;

	if (r->type == DK_REPLY_ERROR)
		RegistryError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem != 6 || r->elem[5]->type != DK_REPLY_STRING ||
		r->elem[2]->type != DK_REPLY_STRING || r->elem[2]->len >= SERIAL_LEN)
		elog(ERROR, "unexpected reply to %s", what);
	version = DkReplyInt64(r->elem[3], what);
	cells = r->elem[5];
	LWLockAcquire(live->lock, LW_EXCLUSIVE);
	if (version >= live->version)
	{
		live->number = (int) DkReplyInt64(r->elem[1], what);
		strlcpy(live->serial, r->elem[2]->str, SERIAL_LEN);
		pg_atomic_write_u32(&live->live_count, (uint32) DkReplyInt64(r->elem[4], what));
		if (version != live->version)
		{
			live->cells_len = Min(cells->len, 4 * max_instances);
			memcpy(live->cells, cells->str, live->cells_len);
			live->version = version;
		}
		live->problem = DK_LIVE_OK;
		if (IsBackgroundWorker)
			strlcpy(live->prefix, DkKeyPrefix(), sizeof(live->prefix));
		live->updated_at = GetCurrentTimestamp();
	}
	LWLockRelease(live->lock);
}

/* Worker task: heartbeat, and refresh the live set. */
static void
Heartbeat(void)
{
	RefreshLive("beat");
}

/* Worker shutdown: leave the live set, so our slices stop counting at once. */
static void
LeaveRegistry(void)
{
	DkReply    *r = DkRedisRunOne(RegistryCommand("leave"), DK_IDEMPOTENT);

	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, "leaving the instance registry");
}

static DkCmd *KindCommand(const DkCounterCall *call);
static DkReply *KindSettle(const DkCounterCall *call, DkReply *r, DkSafety safety);
static DkLaxView ParseView(DkReply *r, const char *what);

/*
 * The table of instance-aware counters (counterkind.h).  Their lax flush
 * (DkInstanceFlush*, called by the worker) joins it when the flush is
 * redesigned into batches.
 */
static const DkCounterKind instance_kind = {
	.noun = "instance-aware counter",
	.inc_function = "distkit_instance_inc",
	.lax_kind = DK_LAX_INSTANCE,
	.txn_kind = DK_TXN_INSTANCE_COUNTER,
	.has_slice = true,
	.command = KindCommand,
	.settle = KindSettle,
	.parse = ParseView,
};

/* Defines the GUCs; when preloaded, the live set and the heartbeat task. */
void
DkInstanceInit(void)
{
	DkTxnRegisterKind(&instance_kind);
	DefineCustomIntVariable("distkit.heartbeat_interval",
							"How often this server records its heartbeat in Redis.",
							NULL,
							&heartbeat_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("distkit.dead_instance_threshold",
							"Age of the last heartbeat after which an instance's slices stop counting.",
							NULL,
							&dead_threshold_ms,
							30000, 100, 7 * 24 * 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	/* PGC_POSTMASTER variables can only be defined while preloading */
	if (DkPreloaded)
		DefineCustomIntVariable("distkit.max_instances",
								"How many instance numbers the registry hands out (servers registered within 7 days).",
								"A server that finds no free number is refused with an error; set the same value on every server.",
								&max_instances,
								16384, 2, 1 << 22,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
	if (!DkPreloaded)
		return;
	DkWorkerAddTask("heartbeat", Heartbeat, HeartbeatIntervalMs, LeaveRegistry);
}

/*
 * Number of live servers in the last heartbeat's live set (at least 1: this
 * one), for the lax rate limiter's block size and its on_error = 'local'
 * share.  1 without shared memory or before the first heartbeat.  An atomic
 * read without the lock: the rate limiter calls it holding an entry's
 * spinlock, under which no LWLock may be taken.
 */
int
DkInstanceLiveCount(void)
{
	int			n;

	if (live == NULL)
		return 1;
	n = (int) pg_atomic_read_u32(&live->live_count);
	return Max(n, 1);
}

/* Is serial the one of number in cells? */
static bool
CellHolds(const char *cells, int cells_len, int number, const char *serial)
{
	const unsigned char *c = (const unsigned char *) cells + 4 * number;
	uint32		v;

	if (number < 0 || 4 * number + 4 > cells_len)
		return false;
	v = ((uint32) c[0] << 24) | ((uint32) c[1] << 16) | ((uint32) c[2] << 8) | c[3];
	return v != 0 && strtoul(serial, NULL, 10) == v;
}

/*
 * This instance's registration for one call (a backend registers itself
 * if the worker has not yet); with_cells: a copy of the live set too.
 */
static void
TakeSnap(LiveSnap *snap, bool with_cells)
{
	DkLiveProblem problem;
	char		found[64];

	for (int attempt = 0;; attempt++)
	{
		LWLockAcquire(live->lock, LW_SHARED);
		problem = live->problem;
		strlcpy(found, live->found, sizeof(found));
		snap->number = live->number;
		strlcpy(snap->serial, live->serial, SERIAL_LEN);
		snap->version = live->version;
		snap->me_live = CellHolds(live->cells, live->cells_len, live->number, live->serial);
		snap->cells = NULL;
		snap->cells_len = 0;
		if (with_cells && snap->number >= 0)
		{
			snap->cells_len = live->cells_len;
			snap->cells = palloc(snap->cells_len + 1);
			memcpy(snap->cells, live->cells, snap->cells_len);
		}
		LWLockRelease(live->lock);
		if (problem != DK_LIVE_OK)
			RaiseProblem(problem, found);
		if (snap->number >= 0)
			return;
		if (attempt > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this server has no instance number in the registry")));
		RefreshLive("beat");
	}
}

/* EVALSHA instance.lua on the Redis key rkey, as seen from snap. */
static DkCmd *
InstanceCommandRaw(const char *rkey, size_t klen, const char *op, int64 value, const LiveSnap *snap)
{
	DkCmd	   *cmd = DkCmdScript(DK_LUA_INSTANCE, 1);

	DkCmdArg(cmd, rkey, klen);
	DkCmdArgStr(cmd, op);
	DkCmdArgInt(cmd, snap->number);
	DkCmdArgStr(cmd, pstrdup(snap->serial));	/* the command keeps pointers; snap may go */
	DkCmdArgInt(cmd, value);
	DkCmdArgInt(cmd, snap->version);
	DkCmdArgStr(cmd, snap->me_live ? "1" : "0");
	/* the live set only when snap has it (a resend after DKSTALE/DKNEWER) */
	if (snap->cells)
		DkCmdArg(cmd, snap->cells, snap->cells_len);
	return cmd;
}

/* The same for (prefix, key) with op and value. */
static DkCmd *
InstanceCommand(const char *prefix, const char *key, size_t keylen, const char *op,
				int64 value, const LiveSnap *snap)
{
	size_t		klen;
	char	   *rkey = DkKeyBuildWithPrefix(prefix, DK_KIND_INSTANCE, key, keylen, &klen);

	return InstanceCommandRaw(rkey, klen, op, value, snap);
}

/* Is r the script's DKSTALE or DKNEWER answer (nothing changed)? */
static bool
IsVersionMismatch(const DkReply *r)
{
	return r->type == DK_REPLY_ERROR &&
		(strncmp(r->str, "DKSTALE", 7) == 0 || strncmp(r->str, "DKNEWER", 7) == 0);
}

/*
 * The instance number a DKREAPED answer names ("DKREAPED number N belongs
 * to a newer instance"), -1 if r is not one.
 */
static int
ReapedNumber(const DkReply *r)
{
	if (r->type != DK_REPLY_ERROR || strncmp(r->str, "DKREAPED number ", 16) != 0)
		return -1;
	return (int) strtol(r->str + 16, NULL, 10);
}

/*
 * DKREAPED: this server was silent longer than the reap time (7 days, e.g.
 * a paused VM) and a newer instance holds its old number (reaped); the
 * script changed nothing.  Register again (a new number, empty slices: a
 * server back after 7 days starts afresh), unless that was done already
 * (a reply naming a number this server no longer holds: a command of the
 * same pipeline, sent before another reply made it register again).  Then
 * the caller resends.
 */
static void
RegisterAgain(int reaped, const char *op)
{
	LiveSnap	snap;

	TakeSnap(&snap, false);
	if (snap.number != reaped)
		return;
	RefreshLive("beat");
	TakeSnap(&snap, false);
	if (snap.number != reaped)	/* once, not per item of a batch */
		ereport(LOG,
				(errmsg("distkit: this server's instance number %d went to a newer instance while this server was silent; registered again as number %d (op \"%s\")",
						reaped, snap.number, op),
				 errdetail("Slices written under the old number no longer count; this server counts on from empty slices.")));
}

/*
 * Act on an answer of lua/instance.lua or lua/instance_flush.lua to op
 * that changed nothing and asks for a resend: DKREAPED (register again),
 * DKNEWER (refresh the live set first), DKSTALE (nothing to do: the resend
 * carries the live set).  False for any other reply.
 */
static bool
ActOnAnswer(const DkReply *r, const char *op)
{
	int			reaped = ReapedNumber(r);

	if (reaped >= 0)
	{
		RegisterAgain(reaped, op);
		return true;
	}
	if (!IsVersionMismatch(r))
		return false;
	if (strncmp(r->str, "DKNEWER", 7) == 0)
		RefreshLive("live");
	return true;
}

/*
 * Settle a DKSTALE/DKNEWER answer r: refresh the live set if the counter
 * knows a newer one, then resend with the live set until the versions
 * agree.  Returns the final reply (r itself if it was no mismatch).
 */
static DkReply *
ResendOnMismatchRaw(DkReply *r, const char *rkey, size_t klen, const char *op, int64 value,
					DkSafety safety)
{
	for (int attempt = 0; attempt < MAX_RESENDS && IsVersionMismatch(r); attempt++)
	{
		LiveSnap	snap;

		(void) ActOnAnswer(r, op);
		TakeSnap(&snap, true);
		r = DkRedisRunOne(InstanceCommandRaw(rkey, klen, op, value, &snap), safety);
	}
	return r;
}

/*
 * Settle the reply r to op on the Redis key rkey, for every caller of
 * lua/instance.lua: SQL calls, deferred increments at commit (txn.c,
 * through the kind's table) and distkit_instance_clear_here.  DKREAPED:
 * register again and resend once; then DKSTALE/DKNEWER as
 * ResendOnMismatchRaw.  (The worker's flush: DkInstanceFlushRetry.)
 */
static DkReply *
SettleCallRaw(DkReply *r, const char *rkey, size_t klen, const char *op, int64 value,
			  DkSafety safety)
{
	int			reaped = ReapedNumber(r);

	if (reaped >= 0)
	{
		LiveSnap	snap;

		RegisterAgain(reaped, op);
		TakeSnap(&snap, false);
		r = DkRedisRunOne(InstanceCommandRaw(rkey, klen, op, value, &snap), safety);
	}
	return ResendOnMismatchRaw(r, rkey, klen, op, value, safety);
}

/* The same for (prefix, key). */
static DkReply *
SettleCall(DkReply *r, const char *prefix, const char *key, size_t keylen, const char *op,
		   int64 value, DkSafety safety)
{
	size_t		klen;
	char	   *rkey;

	if (r->type != DK_REPLY_ERROR)
		return r;
	rkey = DkKeyBuildWithPrefix(prefix, DK_KIND_INSTANCE, key, keylen, &klen);
	return SettleCallRaw(r, rkey, klen, op, value, safety);
}

/* Run op on (prefix, key): one round trip, unless the live set changed. */
static DkReply *
RunInstance(const char *prefix, const char *key, size_t keylen, const char *op,
			int64 value, DkSafety safety)
{
	LiveSnap	snap;
	DkReply    *r;

	TakeSnap(&snap, false);
	r = DkRedisRunOne(InstanceCommand(prefix, key, keylen, op, value, &snap), safety);
	return SettleCall(r, prefix, key, keylen, op, value, safety);
}

/* Parse a {total, slice} reply. */
static DkLaxView
ParseView(DkReply *r, const char *what)
{
	DkLaxView	v;

	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem != 2)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for %s", what)));
	v.total = DkReplyInt64(r->elem[0], what);
	v.slice = DkReplyInt64(r->elem[1], what);
	return v;
}

/*
 * The worker's flush (flush.c, lua/instance_flush.lua): the arguments after
 * the record's of a part's call: this instance's number, serial, the
 * live-set version it knows, whether it is live there, and the live set
 * itself when with_cells (a resend after DKSTALE/DKNEWER), else "".
 */
void
DkInstanceFlushArgs(DkCmd *cmd, bool with_cells)
{
	LiveSnap	snap;

	TakeSnap(&snap, with_cells);
	DkCmdArgInt(cmd, snap.number);
	DkCmdArgStr(cmd, pstrdup(snap.serial));
	DkCmdArgInt(cmd, snap.version);
	DkCmdArgStr(cmd, snap.me_live ? "1" : "0");
	if (snap.cells)
		DkCmdArg(cmd, snap.cells, snap.cells_len);
	else
		DkCmdArgStr(cmd, "");
}

/*
 * A part's error reply r that the flusher acts on and then resends the
 * part with the live set (the script changed nothing): DKREAPED (register
 * again: the deltas go to the new number's slices, still once), DKNEWER
 * (refresh the live set first), DKSTALE.  False for any other reply.
 */
bool
DkInstanceFlushRetry(const DkReply *r)
{
	return ActOnAnswer(r, "flush");
}

/* One counter's answer in a part's reply: its {total, slice}, or false and *error. */
bool
DkInstanceFlushParse(const DkReply *r, DkLaxView *view, const char **error)
{
	*error = NULL;
	if (r->type == DK_REPLY_ARRAY && r->nelem == 2)
	{
		view->total = DkReplyInt64(r->elem[0], "an instance-aware flush");
		view->slice = DkReplyInt64(r->elem[1], "an instance-aware flush");
		return true;
	}
	*error = r->type == DK_REPLY_ERROR ? r->str : "unexpected reply";
	return false;
}

/* Description for messages. */
static char *
InstanceWhat(text *key)
{
	return DkCounterWhat(&instance_kind, key);
}

/* Run op on key strictly (one round trip). */
static DkLaxView
StrictOp(text *key, const char *op, int64 value, DkSafety safety)
{
	size_t		keylen = DkKeyCheck(key, "key");

	return ParseView(RunInstance(DkKeyPrefix(), VARDATA_ANY(key), keylen, op, value, safety),
					 InstanceWhat(key));
}

/* Return (total, this_instance) as a row. */
static Datum
ViewRow(FunctionCallInfo fcinfo, DkLaxView v)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum(v.total);
	values[1] = Int64GetDatum(v.slice);
	return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls));
}

/* Instance-aware counters need the instance id and the live list. */
static void
RequireInstance(void)
{
	DkRequirePreload("instance-aware counters");
}

/* The mode argument of an instance-aware call (NULL: distkit.default_mode). */
static DkMode
InstanceMode(FunctionCallInfo fcinfo, int argno)
{
	return DkArgMode(fcinfo, argno, DkCounterDefaultMode());
}

/* The instance.lua op of a counter op: get; inc; add (at commit: applied whatever the live-set versions). */
static const char *
KindOp(DkCounterOp op)
{
	switch (op)
	{
		case DK_COUNTER_GET:
			return "get";
		case DK_COUNTER_INC:
			return "inc";
		case DK_COUNTER_TXN_ADD:
			return "add";
	}
	pg_unreachable();
}

/* The command of call, as seen from this instance's registration. */
static DkCmd *
KindCommand(const DkCounterCall *call)
{
	LiveSnap	snap;

	TakeSnap(&snap, false);
	return InstanceCommand(call->prefix, call->key, call->keylen, KindOp(call->op), call->value,
						   &snap);
}

/* Settle call's reply: register again after DKREAPED, resend after DKSTALE/DKNEWER. */
static DkReply *
KindSettle(const DkCounterCall *call, DkReply *r, DkSafety safety)
{
	return SettleCall(r, call->prefix, call->key, call->keylen, KindOp(call->op),
					  call->value, safety);
}

/* The view with this transaction's pending increments of key (distkit.transactional). */
static DkLaxView
TxnSeen(text *key, DkLaxView v)
{
	return DkCounterTxnSeen(&instance_kind, key, v);
}

/* distkit_instance_inc(key, delta, mode): add to this instance's slice. */
Datum
distkit_instance_inc(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");

	RequireInstance();
	PG_RETURN_DATUM(ViewRow(fcinfo, DkCounterAdd(&instance_kind, key, delta, InstanceMode(fcinfo, 2))));
}

/* distkit_instance_dec(key, delta, mode): subtract from this instance's slice. */
Datum
distkit_instance_dec(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");
	int64		negated;

	RequireInstance();
	negated = DkCounterNegate(&instance_kind, delta);
	PG_RETURN_DATUM(ViewRow(fcinfo, DkCounterAdd(&instance_kind, key, negated, InstanceMode(fcinfo, 2))));
}

/* distkit_instance_get(key, mode): (total, this_instance). */
Datum
distkit_instance_get(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	DkMode		mode;
	DkLaxView	view;

	RequireInstance();
	mode = InstanceMode(fcinfo, 1);
	view = DkCounterGet(&instance_kind, key, mode);
	PG_RETURN_DATUM(ViewRow(fcinfo, TxnSeen(key, view)));
}

/* A strict write: settle buffered increments first, remember the result after. */
static Datum
StrictWrite(FunctionCallInfo fcinfo, text *key, const char *op, int64 value, bool returns_old)
{
	DkLaxView	v;
	DkLaxView	after;
	int64		pending;

	RequireInstance();
	DkKeyCheck(key, "key");
	DkLaxSettle(DK_LAX_INSTANCE, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	v = StrictOp(key, op, value, DK_NOT_IDEMPOTENT);
	after = v;
	if (returns_old)
	{
		/* del: all gone; del_here: the total without our slice */
		after.total = strcmp(op, "del") == 0 ? 0 : v.total - v.slice;
		after.slice = 0;
	}
	DkLaxAfterStrictWrite(DK_LAX_INSTANCE, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), after);
	/* del returns what this transaction saw; its pending increments of key are superseded */
	pending = DkTxnForget(DK_TXN_INSTANCE_COUNTER, key);
	if (returns_old)
	{
		v.total = DkTxnAddPending(DK_TXN_INSTANCE_COUNTER, key, v.total, pending);
		v.slice = DkTxnAddPending(DK_TXN_INSTANCE_COUNTER, key, v.slice, pending);
	}
	return ViewRow(fcinfo, v);
}

/* distkit_instance_set(key, value): the total becomes value; other slices go stale. */
Datum
distkit_instance_set(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");

	PG_RETURN_DATUM(StrictWrite(fcinfo, key, "set", DkArgInt64(fcinfo, 1, "value"), false));
}

/* distkit_instance_set_here(key, value): this instance's slice becomes value. */
Datum
distkit_instance_set_here(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");

	PG_RETURN_DATUM(StrictWrite(fcinfo, key, "set_here", DkArgInt64(fcinfo, 1, "value"), false));
}

/* distkit_instance_del(key): remove the counter for everybody; returns the old values. */
Datum
distkit_instance_del(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(StrictWrite(fcinfo, DkArgText(fcinfo, 0, "key"), "del", 0, true));
}

/* distkit_instance_del_here(key): remove this instance's slice; returns the old values. */
Datum
distkit_instance_del_here(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(StrictWrite(fcinfo, DkArgText(fcinfo, 0, "key"), "del_here", 0, true));
}

/* A ScanCounters visitor and its running sum. */
typedef struct ScanVisit
{
	int64		(*visit) (DkReply *keys);
	int64		sum;
} ScanVisit;

static void
ScanCountersBatch(DkReply *keys, void *arg)
{
	ScanVisit  *sv = (ScanVisit *) arg;

	sv->sum += sv->visit(keys);
}

/*
 * Visit every instance-aware counter of the current prefix (SCAN, on every
 * master of a cluster), calling visit with a batch of Redis keys; returns
 * the sum of what visit returns.
 */
static int64
ScanCounters(int64 (*visit) (DkReply *keys))
{
	ScanVisit	sv = {visit, 0};

	if (DkLaxAnythingPending())
		(void) DkLaxFlushWait(2 * DkRedisCommandTimeoutMs() + DkFlushIntervalMs());
	DkRedisScan(DkKeyPattern(DK_KIND_INSTANCE), ScanCountersBatch, &sv,
				"a scan of instance-aware counters");
	return sv.sum;
}

/* UNLINK a batch of counters. */
static int64
UnlinkKeys(DkReply *keys)
{
	return DkRedisUnlinkKeys(keys, "distkit_instance_clear");
}

/* Drop this instance's slice from a batch of counters (op del_here); counts slices removed. */
static int64
DropOurSlices(DkReply *keys)
{
	LiveSnap	snap;
	DkCmd	  **cmds = palloc(sizeof(DkCmd *) * keys->nelem);
	DkReply   **replies;
	int64		n = 0;

	TakeSnap(&snap, false);
	for (int i = 0; i < keys->nelem; i++)
		cmds[i] = InstanceCommandRaw(keys->elem[i]->str, keys->elem[i]->len, "del_here", 0, &snap);
	replies = DkRedisRun(cmds, keys->nelem, DK_IDEMPOTENT);
	for (int i = 0; i < keys->nelem; i++)
	{
		/* after DKREAPED: registered again, the resend acts on the new number */
		DkReply    *r = SettleCallRaw(replies[i], keys->elem[i]->str, keys->elem[i]->len,
									  "del_here", 0, DK_IDEMPOTENT);

		if (r->type == DK_REPLY_ERROR)
			DkReplyRaiseError(r, "distkit_instance_clear_here");
		if (r->type == DK_REPLY_ARRAY && r->nelem == 2 && r->elem[1]->type == DK_REPLY_STRING &&
			strcmp(r->elem[1]->str, "0") != 0)
			n++;
	}
	return n;
}

/* distkit_instance_clear(): remove every instance-aware counter of the prefix; returns how many. */
Datum
distkit_instance_clear(PG_FUNCTION_ARGS)
{
	int64		n;

	DkCheckSqlVersion();
	RequireInstance();
	n = ScanCounters(UnlinkKeys);
	DkLaxAfterClear(DK_LAX_INSTANCE, false);
	DkTxnForgetAll(DK_TXN_INSTANCE_COUNTER);
	PG_RETURN_INT64(n);
}

/* distkit_instance_clear_here(): remove this instance's slices; returns how many. */
Datum
distkit_instance_clear_here(PG_FUNCTION_ARGS)
{
	int64		n;

	DkCheckSqlVersion();
	RequireInstance();
	n = ScanCounters(DropOurSlices);
	DkLaxAfterClear(DK_LAX_INSTANCE, true);
	DkTxnForgetAll(DK_TXN_INSTANCE_COUNTER);
	PG_RETURN_INT64(n);
}

/*
 * distkit_instances(): the registry — id, last heartbeat, alive (in the
 * live set), this server, instance number (NULL: none; the SQL objects of
 * 0.1.0 have no such column).
 */
Datum
distkit_instances(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DkReply    *r;

	DkCheckSqlVersion();
	RequireInstance();
	InitMaterializedSRF(fcinfo, 0);
	r = DkRedisRunOne(RegistryCommand("list"), DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		RegistryError(r, "the instance registry");
	if (r->type != DK_REPLY_ARRAY || r->nelem < 1 || r->nelem % 4 != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for the instance registry")));
	for (int i = 1; i + 3 < r->nelem; i += 4)
	{
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		double		beat_ms = strtod(r->elem[i + 1]->str, NULL);
		int64		number = DkReplyInt64(r->elem[i + 2], "the instance registry");

		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(r->elem[i]->str));
		/* Unix ms -> PostgreSQL timestamp */
		values[1] = TimestampTzGetDatum((TimestampTz) (beat_ms * 1000.0) -
										((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY));
		values[2] = BoolGetDatum(strcmp(r->elem[i + 3]->str, "1") == 0);
		values[3] = BoolGetDatum(strcmp(r->elem[i]->str, DkLaxInstanceId()) == 0);
		values[4] = Int32GetDatum((int32) number);
		nulls[4] = number < 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
