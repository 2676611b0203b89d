/*-------------------------------------------------------------------------
 *
 * counter.c
 *		Counters: distkit_inc, distkit_dec, distkit_get, distkit_get_many,
 *		distkit_set, distkit_del, distkit_clear and distkit_inc_if.
 *
 * In strict mode every call is one atomic Lua script on Redis (one
 * pipelined round trip for distkit_get_many), so the value returned is
 * Redis's value at that moment, shared by every server.  Values travel as
 * decimal strings both ways: Lua numbers are doubles and would round
 * values beyond 2^53.
 *
 * In lax mode increments only touch this server's shared-memory buffer
 * (lax.c) and the distkit worker sends them; reads return this server's
 * view (last known Redis total + what is buffered), refreshed from Redis
 * when older than distkit.flush_interval.  A key the buffer cannot hold
 * (full, or "<kind><prefix>\0<key>" longer than DK_LAX_NAME_MAX bytes) is
 * counted strictly and the fallback counted in distkit_stats.
 *
 * set, del, clear and inc_if are always strict; they first wait for this
 * server's buffered increments of the key to reach Redis, so they are
 * ordered after them, and then update the buffer's view.
 *
 * The counting shared with instance-aware counters (add, defer, lax read
 * with its fallback, dec) is counterkind.c's; this file gives it the
 * table of simple counters (counter_kind: Redis commands and reply
 * parsing) and holds the SQL functions.
 *
 * By default counters are not transactional: an increment is applied at
 * once and stays applied if the calling transaction rolls back.  With
 * distkit.transactional on, CounterAdd hands increments to txn.c, which
 * applies them at commit; reads add the transaction's pending increments
 * (DkTxnSeen) and set/del/clear drop those they overwrite (DkTxnForget).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "counterkind.h"
#include "distkit.h"
#include "keys.h"
#include "lax.h"
#include "redis.h"
#include "txn.h"
#include "version.h"

PG_FUNCTION_INFO_V1(distkit_inc);
PG_FUNCTION_INFO_V1(distkit_dec);
PG_FUNCTION_INFO_V1(distkit_get);
PG_FUNCTION_INFO_V1(distkit_get_many);
PG_FUNCTION_INFO_V1(distkit_set);
PG_FUNCTION_INFO_V1(distkit_del);
PG_FUNCTION_INFO_V1(distkit_clear);
PG_FUNCTION_INFO_V1(distkit_inc_if);
PG_FUNCTION_INFO_V1(distkit_flush);

static int	default_mode = DK_MODE_STRICT;

static const struct config_enum_entry mode_options[] = {
	{"strict", DK_MODE_STRICT, false},
	{"lax", DK_MODE_LAX, false},
	{NULL, 0, false}
};

static DkCmd *CounterCommand(const DkCounterCall *call);
static DkLaxView CounterParse(DkReply *r, const char *what);

/* The table of simple counters (counterkind.h). */
static const DkCounterKind counter_kind = {
	.noun = "counter",
	.inc_function = "distkit_inc",
	.lax_kind = DK_LAX_SIMPLE,
	.txn_kind = DK_TXN_COUNTER,
	.has_slice = false,
	.command = CounterCommand,
	.settle = NULL,
	.parse = CounterParse,
};

/* Defines distkit.default_mode; plugs counters into transactional counting. */
void
DkCounterInit(void)
{
	DkTxnRegisterKind(&counter_kind);
	DefineCustomEnumVariable("distkit.default_mode",
							 "Counting mode used when a call passes no mode.",
							 "strict: one Redis round trip per call; lax: buffered in shared memory.",
							 &default_mode,
							 DK_MODE_STRICT,
							 mode_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
}

/* distkit.default_mode, for other kinds of counters. */
int
DkCounterDefaultMode(void)
{
	return default_mode;
}

/* The mode argument; lax needs the shared buffer (preload). */
static DkMode
CounterMode(FunctionCallInfo fcinfo, int argno)
{
	DkMode		mode = DkArgMode(fcinfo, argno, default_mode);

	if (mode == DK_MODE_LAX)
		DkRequirePreload("lax mode");
	return mode;
}

/* Before a strict write: let this server's buffered increments of key land first. */
static void
SettleLax(text *key)
{
	DkCounterSettleLax(&counter_kind, key);
}

/* After a strict write: the buffer's view of key is now value. */
static void
NoteStrictWrite(text *key, int64 value)
{
	DkLaxView	v = {value, 0};

	DkCounterNoteWrite(&counter_kind, key, v);
}

/* Description of a counter for messages: counter "key". */
static char *
CounterWhat(text *key)
{
	return DkCounterWhat(&counter_kind, key);
}

/*
 * The Redis command of call: counter_get, or counter_inc (now and at
 * commit alike: it answers the new value).
 */
static DkCmd *
CounterCommand(const DkCounterCall *call)
{
	size_t		rlen;
	char	   *rkey = DkKeyBuildWithPrefix(call->prefix, DK_KIND_COUNTER, call->key, call->keylen, &rlen);
	DkCmd	   *cmd;

	if (call->op == DK_COUNTER_GET)
	{
		cmd = DkCmdScript(DK_LUA_COUNTER_GET, 1);
		DkCmdArg(cmd, rkey, rlen);
		return cmd;
	}
	cmd = DkCmdScript(DK_LUA_COUNTER_INC, 1);
	DkCmdArg(cmd, rkey, rlen);
	DkCmdArgInt(cmd, call->value);
	return cmd;
}

/* A counter's reply: its value (a counter has no slices). */
static DkLaxView
CounterParse(DkReply *r, const char *what)
{
	DkLaxView	v = {DkReplyInt64(r, what), 0};

	return v;
}

/* The command reading a counter's value from Redis (get_many). */
static DkCmd *
GetCommand(text *key, const char *argname)
{
	DkCounterCall call = {DkKeyPrefix(), VARDATA_ANY(key), DkKeyCheck(key, argname),
	DK_COUNTER_GET, 0};

	return CounterCommand(&call);
}

/* Add delta in the given mode; returns the new value (lax: this server's view). */
static int64
CounterAdd(text *key, int64 delta, DkMode mode)
{
	return DkCounterAdd(&counter_kind, key, delta, mode).total;
}

/* distkit_inc(key, delta, mode): add delta, return the new value. */
Datum
distkit_inc(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");

	PG_RETURN_INT64(CounterAdd(key, delta, CounterMode(fcinfo, 2)));
}

/* distkit_dec(key, delta, mode): subtract delta, return the new value. */
Datum
distkit_dec(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");
	DkMode		mode = CounterMode(fcinfo, 2);

	PG_RETURN_INT64(CounterAdd(key, DkCounterNegate(&counter_kind, delta), mode));
}


/* The current value of a counter, 0 for a missing key (lax: this server's view). */
static int64
CounterGet(text *key, DkMode mode)
{
	return DkCounterGet(&counter_kind, key, mode).total;
}

/* distkit_get(key, mode): the current value, with this transaction's pending increments. */
Datum
distkit_get(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	DkMode		mode = CounterMode(fcinfo, 1);

	PG_RETURN_INT64(DkTxnSeen(DK_TXN_COUNTER, key, CounterGet(key, mode)));
}

/*
 * distkit_get_many(keys, mode): one row per key, in input order.  Every
 * Redis read needed goes in one pipelined round trip; in lax mode keys with
 * a fresh view need none.
 */
Datum
distkit_get_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DkMode		mode;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			nread = 0;
	DkCmd	  **cmds;
	int		   *readidx;
	DkLaxView  *values;
	DkLaxReadState *states;
	DkLaxReadTicket *tickets;

	DkArgNotNull(fcinfo, 0, "keys");
	mode = CounterMode(fcinfo, 1);
	arr = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("keys must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);

	InitMaterializedSRF(fcinfo, 0);
	if (n == 0)
		return (Datum) 0;

	cmds = palloc(sizeof(DkCmd *) * n);
	readidx = palloc(sizeof(int) * n);
	values = palloc0(sizeof(DkLaxView) * n);
	states = palloc(sizeof(DkLaxReadState) * n);
	tickets = palloc(sizeof(DkLaxReadTicket) * n);
	for (int i = 0; i < n; i++)
	{
		text	   *key;
		char	   *argname = psprintf("keys[%d]", i + 1);

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be NULL", argname)));
		key = DatumGetTextPP(elems[i]);
		states[i] = DK_LAX_NO_ENTRY;
		if (mode == DK_MODE_LAX)
		{
			states[i] = DkLaxLookupForRead(DK_LAX_SIMPLE, VARDATA_ANY(key), DkKeyCheck(key, argname),
										   &values[i], &tickets[i]);
			if (states[i] == DK_LAX_FRESH)
				continue;
		}
		readidx[nread] = i;
		cmds[nread++] = GetCommand(key, argname);
	}
	if (nread > 0)
	{
		DkReply   **replies;
		bool		all_have_views = true;

		for (int j = 0; j < nread; j++)
			all_have_views &= states[readidx[j]] == DK_LAX_STALE &&
				tickets[readidx[j]].known_valid;
		if (!all_have_views)
			replies = DkRedisRun(cmds, nread, DK_IDEMPOTENT);
		else if (!DkRedisRunIfReachable(cmds, nread, DK_IDEMPOTENT, &replies))
			nread = 0;			/* Redis unreachable: every key has a view */
		for (int j = 0; j < nread; j++)
		{
			int			i = readidx[j];
			text	   *key = DatumGetTextPP(elems[i]);

			values[i].total = DkReplyInt64(replies[j], CounterWhat(key));
			if (states[i] == DK_LAX_STALE)
				values[i] = DkLaxStoreRead(DK_LAX_SIMPLE, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
										   &tickets[i], values[i]);
		}
	}
	for (int i = 0; i < n; i++)
	{
		Datum		row[2];
		bool		isnull[2] = {false, false};

		row[0] = elems[i];
		row[1] = Int64GetDatum(DkTxnSeen(DK_TXN_COUNTER, DatumGetTextPP(elems[i]), values[i].total));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
	}
	return (Datum) 0;
}

/* distkit_set(key, value): set the counter, return the value set. */
Datum
distkit_set(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		value = DkArgInt64(fcinfo, 1, "value");
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_COUNTER, key, "key", &klen);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_COUNTER_SET, 1);

	SettleLax(key);
	DkCmdArg(cmd, rkey, klen);
	DkCmdArgInt(cmd, value);
	value = DkReplyInt64(DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT), CounterWhat(key));
	NoteStrictWrite(key, value);
	(void) DkTxnForget(DK_TXN_COUNTER, key);
	PG_RETURN_INT64(value);
}

/* distkit_del(key): delete the counter, return the value it had (0 if none). */
Datum
distkit_del(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_COUNTER, key, "key", &klen);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_COUNTER_DEL, 1);
	int64		had;
	int64		pending;

	SettleLax(key);
	DkCmdArg(cmd, rkey, klen);
	had = DkReplyInt64(DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT), CounterWhat(key));
	NoteStrictWrite(key, 0);
	/* the value this transaction saw; its pending increments die with the key */
	pending = DkTxnForget(DK_TXN_COUNTER, key);
	PG_RETURN_INT64(DkTxnAddPending(DK_TXN_COUNTER, key, had, pending));
}

/* DkRedisScan visitor: UNLINK one batch, counting what was removed. */
static void
ClearBatch(DkReply *keys, void *arg)
{
	*(int64 *) arg += DkRedisUnlinkKeys(keys, "distkit_clear");
}

/*
 * distkit_clear(): delete every counter under the current prefix, return
 * how many.  SCAN (every master of a cluster) + UNLINK in batches: never
 * one long blocking command.
 */
Datum
distkit_clear(PG_FUNCTION_ARGS)
{
	int64		removed = 0;

	DkCheckSqlVersion();
	if (DkPreloaded && DkLaxAnythingPending())
		(void) DkLaxFlushWait(2 * DkRedisCommandTimeoutMs() + DkFlushIntervalMs());
	DkRedisScan(DkKeyPattern(DK_KIND_COUNTER), ClearBatch, &removed, "distkit_clear");
	if (DkPreloaded)
		DkLaxAfterClear(DK_LAX_SIMPLE, false);
	DkTxnForgetAll(DK_TXN_COUNTER);
	PG_RETURN_INT64(removed);
}

/* Parse and validate the comparison operator of distkit_inc_if. */
static const char *
CheckOperator(text *op)
{
	static const char *const ops[] = {"=", "<>", "<", "<=", ">", ">="};
	char	   *s = text_to_cstring(op);

	if (strcmp(s, "!=") == 0)
		return "<>";
	for (int i = 0; i < lengthof(ops); i++)
		if (strcmp(s, ops[i]) == 0)
			return ops[i];
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid comparison operator \"%s\"", s),
			 errhint("Use one of =, <>, !=, <, <=, >, >=.")));
	pg_unreachable();
}

/*
 * distkit_inc_if(key, delta, op, operand): add delta only if
 * "current op operand" holds, atomically in Redis.
 */
Datum
distkit_inc_if(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");
	const char *op = CheckOperator(DkArgText(fcinfo, 2, "op"));
	int64		operand = DkArgInt64(fcinfo, 3, "operand");
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_COUNTER, key, "key", &klen);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_COUNTER_INC_IF, 1);
	DkReply    *r;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	char	   *what = CounterWhat(key);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	SettleLax(key);
	DkCmdArg(cmd, rkey, klen);
	DkCmdArgInt(cmd, delta);
	DkCmdArgStr(cmd, op);
	DkCmdArgInt(cmd, operand);
	r = DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem != 2)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for %s", what)));
	values[0] = Int64GetDatum(DkReplyInt64(r->elem[0], what));
	values[1] = BoolGetDatum(DkReplyInt64(r->elem[1], what) == 1);
	NoteStrictWrite(key, DatumGetInt64(values[0]));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* What the timeout of distkit_flush may be: whole milliseconds, an int. */
static const DkDurationRule FLUSH_TIMEOUT_RULE = {
	1000, "at least 1 millisecond", (int64) INT_MAX * 1000,
	"2147483647 milliseconds (24 days 20:31:23.647)",
	"distkit_flush waits at most this long for the flush, e.g. '5 seconds'."
};

/*
 * distkit_flush(timeout): wait until every lax increment buffered on this
 * server before the call is in Redis; returns the number of keys flushed
 * meanwhile.  An error if that takes longer than timeout.
 */
Datum
distkit_flush(PG_FUNCTION_ARGS)
{
	int64		ms;

	DkCheckSqlVersion();
	DkRequirePreload("distkit_flush");
	ms = DkArgDurationMs(fcinfo, 0, "timeout", &FLUSH_TIMEOUT_RULE);
	PG_RETURN_INT64(DkLaxFlushWait((int) ms));
}
