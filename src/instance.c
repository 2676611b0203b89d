/*-------------------------------------------------------------------------
 *
 * instance.c
 *		Instance-aware counters: per-server slices, heartbeats, liveness.
 *
 * Every PostgreSQL server running distkit is an instance with a UUID
 * chosen at each postmaster start (see lax.c).  An instance-aware counter
 * is a Redis hash holding, per instance, its slice, the counter epoch the
 * slice belongs to and when it was last written (lua/instance.lua).  Its
 * total is the sum of the slices of the current epoch whose instance is
 * live.
 *
 * Liveness: the worker records this instance's heartbeat (Redis time) in
 * the registry <prefix>:reg:{instances} every distkit.heartbeat_interval
 * and gets back the instances whose heartbeat is younger than
 * distkit.dead_instance_threshold; that live list is kept in shared memory
 * and passed to every counter script.  Nothing is subtracted when an
 * instance dies — its slice stops counting — so a dead instance is never
 * subtracted twice, a paused instance that comes back counts again exactly
 * once, and a set/del (which bumps or removes the epoch) makes old slices
 * stale for good.  The cost of a call is bounded by the number of
 * instances that wrote the counter, never by the number of keys.  A clean
 * shutdown removes the instance from the registry, so its slices stop
 * counting at the other servers' next heartbeat.
 *
 * Passing the live list keeps each script on one hash slot (the registry
 * is never read by counter scripts), ready for Redis Cluster.
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
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "instance.h"
#include "shmem.h"
#include "keys.h"
#include "lax.h"
#include "redis.h"
#include "txn.h"
#include "version.h"

#define MAX_LIVE 1024			/* instances kept in the live list */
#define ID_LEN 37

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

typedef struct DkLiveShared
{
	slock_t		mutex;
	int			count;
	TimestampTz updated_at;		/* 0: never */
	char		ids[MAX_LIVE][ID_LEN];
} DkLiveShared;

static int	heartbeat_interval_ms = 1000;
static int	dead_threshold_ms = 30000;
static DkLiveShared *live = NULL;
/* Size of the region "distkit live instances". */
Size
DkLiveShmemSize(void)
{
	return sizeof(DkLiveShared);
}

/* Region init (shmem.c): create or attach to the live list. */
void
DkLiveShmemInit(void *base, bool found, LWLock *lock)
{
	live = base;
	if (!found)
	{
		memset(live, 0, sizeof(DkLiveShared));
		SpinLockInit(&live->mutex);
	}
}

/* The heartbeat interval (for the worker task). */
static int
HeartbeatIntervalMs(void)
{
	return heartbeat_interval_ms;
}

/* The registry command: op beat | leave | list. */
static DkCmd *
RegistryCommand(const char *op)
{
	size_t		len;
	char	   *reg = DkKeyBuild(DK_KIND_REGISTRY, "instances", 9, &len);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_INSTANCE_REGISTRY, 1);

	DkCmdArg(cmd, reg, len);
	DkCmdArgStr(cmd, op);
	DkCmdArgStr(cmd, DkLaxInstanceId());
	DkCmdArgInt(cmd, dead_threshold_ms);
	return cmd;
}

/* Worker task: heartbeat, and refresh the live list. */
static void
Heartbeat(void)
{
	DkReply    *r = DkRedisRunOne(RegistryCommand("beat"), DK_IDEMPOTENT);
	int			n;

	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, "the instance heartbeat");
	if (r->type != DK_REPLY_ARRAY || r->nelem < 1)
		elog(ERROR, "unexpected reply to the instance heartbeat");
	n = Min(r->nelem - 1, MAX_LIVE);
	SpinLockAcquire(&live->mutex);
	live->count = 0;
	for (int i = 0; i < n; i++)
	{
		DkReply    *id = r->elem[i + 1];

		if (id->type == DK_REPLY_STRING && id->len < ID_LEN)
			strlcpy(live->ids[live->count++], id->str, ID_LEN);
	}
	live->updated_at = GetCurrentTimestamp();
	SpinLockRelease(&live->mutex);
}

/* Worker shutdown: leave the registry, so our slices stop counting at once. */
static void
LeaveRegistry(void)
{
	DkReply    *r = DkRedisRunOne(RegistryCommand("leave"), DK_IDEMPOTENT);

	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, "leaving the instance registry");
}

static DkCmd *TxnStrictAdd(const char *prefix, const char *key, size_t keylen, int64 delta);

/* How txn.c applies deferred increments of instance-aware counters. */
static const DkTxnKindOps instance_txn_ops = {
	.what = "instance-aware counter",
	.strict_add = TxnStrictAdd,
	.lax_kind = DK_LAX_INSTANCE,
};

/* Defines the GUCs; when preloaded, the live list and the heartbeat task. */
void
DkInstanceInit(void)
{
	DkTxnRegisterKind(DK_TXN_INSTANCE_COUNTER, &instance_txn_ops);
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
	if (!DkPreloaded)
		return;
	DkWorkerAddTask("heartbeat", Heartbeat, HeartbeatIntervalMs, LeaveRegistry);
}

/*
 * Number of live servers in the last heartbeat's list (at least 1: this
 * one), for the lax rate limiter's block size and its on_error = 'local'
 * share.  1 without shared memory or before the first heartbeat.
 */
int
DkInstanceLiveCount(void)
{
	int			n;

	if (live == NULL)
		return 1;
	SpinLockAcquire(&live->mutex);
	n = live->count;
	SpinLockRelease(&live->mutex);
	return Max(n, 1);
}

/* Append the live list (count, then ids) to a counter command. */
static void
AppendLive(DkCmd *cmd)
{
	int			n;
	char	   *ids;

	SpinLockAcquire(&live->mutex);
	n = live->count;
	ids = palloc(n * ID_LEN + 1);
	memcpy(ids, live->ids, n * ID_LEN);
	SpinLockRelease(&live->mutex);
	DkCmdArgInt(cmd, n);
	for (int i = 0; i < n; i++)
		DkCmdArgStr(cmd, ids + i * ID_LEN);
}

/* EVALSHA instance.lua for (prefix, key) with op, value and batch sequence. */
static DkCmd *
InstanceCommand(const char *prefix, const char *key, size_t keylen, const char *op,
				int64 value, const char *seq)
{
	size_t		klen;
	size_t		flen;
	char	   *rkey = DkKeyBuildWithPrefix(prefix, DK_KIND_INSTANCE, key, keylen, &klen);
	char	   *fkey = DkKeyBuildWithPrefix(prefix, DK_KIND_INSTANCE_FLUSHED, key, keylen, &flen);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_INSTANCE, 2);

	DkCmdArg(cmd, rkey, klen);
	DkCmdArg(cmd, fkey, flen);
	DkCmdArgStr(cmd, op);
	DkCmdArgStr(cmd, DkLaxInstanceId());
	DkCmdArgInt(cmd, value);
	DkCmdArgStr(cmd, seq);
	AppendLive(cmd);
	return cmd;
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

/* The flusher's command for an instance-aware batch item. */
DkCmd *
DkInstanceFlushCommand(const DkLaxBatchItem *item, const char *seq)
{
	return InstanceCommand(item->prefix, item->key, item->keylen, "flush", item->delta, seq);
}

/* Parse the flusher's reply: false if Redis refused the item. */
bool
DkInstanceFlushReply(DkReply *r, DkLaxView *view)
{
	if (r->type != DK_REPLY_ARRAY || r->nelem != 2)
		return false;
	view->total = DkReplyInt64(r->elem[0], "an instance-aware flush");
	view->slice = DkReplyInt64(r->elem[1], "an instance-aware flush");
	return true;
}

/* Description for messages. */
static char *
InstanceWhat(text *key)
{
	return psprintf("instance-aware counter %s", DkKeyQuote(key));
}

/* Run op on key strictly (one round trip). */
static DkLaxView
StrictOp(text *key, const char *op, int64 value, DkSafety safety)
{
	size_t		keylen = DkKeyCheck(key, "key");
	DkCmd	   *cmd = InstanceCommand(DkKeyPrefix(), VARDATA_ANY(key), keylen, op, value, "0");

	return ParseView(DkRedisRunOne(cmd, safety), InstanceWhat(key));
}

/* DkLaxSeedFn: an instance-aware counter's view in Redis (arg: the key as text). */
static void
InstanceSeed(const char *key, size_t keylen, void *arg, DkLaxView *value)
{
	DkCmd	   *cmd = InstanceCommand(DkKeyPrefix(), key, keylen, "get", 0, "0");

	*value = ParseView(DkRedisRunOne(cmd, DK_IDEMPOTENT), InstanceWhat((text *) arg));
}

/* A lax read's Redis view of key; false if Redis cannot be reached. */
static bool
TryInstanceRead(text *key, DkLaxView *value)
{
	DkCmd	   *cmd = InstanceCommand(DkKeyPrefix(), VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
									  "get", 0, "0");
	DkReply   **replies;

	if (!DkRedisRunIfReachable(&cmd, 1, DK_IDEMPOTENT, &replies))
		return false;
	*value = ParseView(replies[0], InstanceWhat(key));
	return true;
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

/* Deferred increment at pre-commit: op inc under prefix. */
static DkCmd *
TxnStrictAdd(const char *prefix, const char *key, size_t keylen, int64 delta)
{
	return InstanceCommand(prefix, key, keylen, "inc", delta, "0");
}

/* The view with this transaction's pending increments of key (distkit.transactional). */
static DkLaxView
TxnSeen(text *key, DkLaxView v)
{
	v.total = DkTxnSeen(DK_TXN_INSTANCE_COUNTER, key, v.total);
	v.slice = DkTxnSeen(DK_TXN_INSTANCE_COUNTER, key, v.slice);
	return v;
}

/*
 * distkit.transactional: defer the increment to commit (txn.c); returns
 * what the transaction then sees.  Lax: the buffer's view (Redis is read
 * once for a key this server holds no total for, and when the buffer
 * cannot hold the key); strict: Redis's.
 */
static DkLaxView
InstanceDefer(text *key, int64 delta, DkMode mode)
{
	bool		buffered = true;
	int64		values[2];
	DkLaxView	view;

	if (mode == DK_MODE_LAX)
		buffered = DkLaxViewSeeded(DK_LAX_INSTANCE, VARDATA_ANY(key), DkKeyCheck(key, "key"),
								   InstanceSeed, key, &view);
	if (mode != DK_MODE_LAX || !buffered)
		view = StrictOp(key, "get", 0, DK_IDEMPOTENT);
	values[0] = view.total;
	values[1] = view.slice;
	DkTxnAdd(DK_TXN_INSTANCE_COUNTER, key, delta, mode, buffered, values, 2);
	view.total = values[0];
	view.slice = values[1];
	return view;
}

/* A strict increment; its result also becomes this server's lax view (DkLaxAfterStrictAdd). */
static DkLaxView
StrictInc(text *key, int64 delta)
{
	size_t		keylen = DkKeyCheck(key, "key");
	DkLaxReadTicket ticket;
	bool		buffered = DkLaxStrictAddTicket(DK_LAX_INSTANCE, VARDATA_ANY(key), keylen, &ticket);
	DkLaxView	v = StrictOp(key, "inc", delta, DK_NOT_IDEMPOTENT);

	DkLaxAfterStrictAdd(DK_LAX_INSTANCE, VARDATA_ANY(key), keylen, buffered ? &ticket : NULL, v);
	return v;
}

/* Add delta to this instance's slice. */
static DkLaxView
InstanceAdd(text *key, int64 delta, DkMode mode)
{
	if (DkTxnActive())
		return InstanceDefer(key, delta, mode);
	if (mode == DK_MODE_LAX)
	{
		size_t		keylen = DkKeyCheck(key, "key");
		DkLaxView	view;

		if (DkLaxAddSeeded(DK_LAX_INSTANCE, VARDATA_ANY(key), keylen, delta, InstanceSeed, key, &view))
			return TxnSeen(key, view);
		DkLaxCountStrictFallback();
	}
	return TxnSeen(key, StrictInc(key, delta));
}

/* distkit_instance_inc(key, delta, mode): add to this instance's slice. */
Datum
distkit_instance_inc(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");

	RequireInstance();
	PG_RETURN_DATUM(ViewRow(fcinfo, InstanceAdd(key, delta, InstanceMode(fcinfo, 2))));
}

/* distkit_instance_dec(key, delta, mode): subtract from this instance's slice. */
Datum
distkit_instance_dec(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");
	int64		negated;

	RequireInstance();
	if (pg_sub_s64_overflow(0, delta, &negated))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("delta " INT64_FORMAT " cannot be negated", delta),
				 errhint("Use distkit_instance_inc with a positive delta instead.")));
	PG_RETURN_DATUM(ViewRow(fcinfo, InstanceAdd(key, negated, InstanceMode(fcinfo, 2))));
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
	if (mode == DK_MODE_LAX)
	{
		DkLaxReadTicket ticket;
		DkLaxReadState state = DkLaxLookupForRead(DK_LAX_INSTANCE, VARDATA_ANY(key),
												  DkKeyCheck(key, "key"), &view, &ticket);

		if (state == DK_LAX_FRESH)
			PG_RETURN_DATUM(ViewRow(fcinfo, TxnSeen(key, view)));
		if (state == DK_LAX_STALE)
		{
			DkLaxView	redis_view;

			/* Redis unreachable: a lax read answers with this server's view, if it has one */
			if (ticket.known_valid)
			{
				if (!TryInstanceRead(key, &redis_view))
					PG_RETURN_DATUM(ViewRow(fcinfo, TxnSeen(key, view)));
			}
			else
				redis_view = StrictOp(key, "get", 0, DK_IDEMPOTENT);
			view = DkLaxStoreRead(DK_LAX_INSTANCE, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
								  &ticket, redis_view);
			PG_RETURN_DATUM(ViewRow(fcinfo, TxnSeen(key, view)));
		}
	}
	PG_RETURN_DATUM(ViewRow(fcinfo, TxnSeen(key, StrictOp(key, "get", 0, DK_IDEMPOTENT))));
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

/* HDEL this instance's slice fields from a batch of counters; counts slices removed. */
static int64
DropOurSlices(DkReply *keys)
{
	const char *id = DkLaxInstanceId();
	char	   *fv = psprintf("v:%s", id);
	char	   *fe = psprintf("e:%s", id);
	char	   *ft = psprintf("t:%s", id);
	DkCmd	  **cmds = palloc(sizeof(DkCmd *) * keys->nelem);
	DkReply   **replies;
	int64		n = 0;

	for (int i = 0; i < keys->nelem; i++)
	{
		cmds[i] = DkCmdNew("HDEL");
		DkCmdArg(cmds[i], keys->elem[i]->str, keys->elem[i]->len);
		DkCmdArgStr(cmds[i], fv);
		DkCmdArgStr(cmds[i], fe);
		DkCmdArgStr(cmds[i], ft);
	}
	replies = DkRedisRun(cmds, keys->nelem, DK_IDEMPOTENT);
	for (int i = 0; i < keys->nelem; i++)
		n += DkReplyInt64(replies[i], "distkit_instance_clear_here") > 0 ? 1 : 0;
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

/* distkit_instances(): the registry — id, last heartbeat, alive, this server. */
Datum
distkit_instances(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DkReply    *r;
	double		now_ms;

	DkCheckSqlVersion();
	RequireInstance();
	InitMaterializedSRF(fcinfo, 0);
	r = DkRedisRunOne(RegistryCommand("list"), DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, "the instance registry");
	if (r->type != DK_REPLY_ARRAY || r->nelem < 1 || r->nelem % 2 != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for the instance registry")));
	now_ms = strtod(r->elem[0]->str, NULL);
	for (int i = 1; i + 1 < r->nelem; i += 2)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};
		double		beat_ms = strtod(r->elem[i + 1]->str, NULL);

		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(r->elem[i]->str));
		/* Unix ms -> PostgreSQL timestamp */
		values[1] = TimestampTzGetDatum((TimestampTz) (beat_ms * 1000.0) -
										((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY));
		values[2] = BoolGetDatum(now_ms - beat_ms <= dead_threshold_ms);
		values[3] = BoolGetDatum(strcmp(r->elem[i]->str, DkLaxInstanceId()) == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
