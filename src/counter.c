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
 * Counters are not transactional: an increment is applied in Redis at once
 * and stays applied if the calling transaction rolls back.
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

#include "distkit.h"
#include "keys.h"
#include "redis.h"

PG_FUNCTION_INFO_V1(distkit_inc);
PG_FUNCTION_INFO_V1(distkit_dec);
PG_FUNCTION_INFO_V1(distkit_get);
PG_FUNCTION_INFO_V1(distkit_get_many);
PG_FUNCTION_INFO_V1(distkit_set);
PG_FUNCTION_INFO_V1(distkit_del);
PG_FUNCTION_INFO_V1(distkit_clear);
PG_FUNCTION_INFO_V1(distkit_inc_if);

static int	default_mode = DK_MODE_STRICT;

static const struct config_enum_entry mode_options[] = {
	{"strict", DK_MODE_STRICT, false},
	{"lax", DK_MODE_LAX, false},
	{NULL, 0, false}
};

/* Defines distkit.default_mode. */
void
DkCounterInit(void)
{
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

/* The mode argument, or an error for a mode this build cannot serve. */
static DkMode
CounterMode(FunctionCallInfo fcinfo, int argno)
{
	DkMode		mode = DkArgMode(fcinfo, argno, default_mode);

	if (mode == DK_MODE_LAX)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("lax mode is not available in this version of distkit"),
				 errhint("Use mode 'strict' or set distkit.default_mode to strict.")));
	return mode;
}

/* Description of a counter for messages: counter "key". */
static char *
CounterWhat(text *key)
{
	return psprintf("counter %s", DkKeyQuote(key));
}

/* Add delta to a counter in Redis; returns the new value. */
static int64
StrictAdd(text *key, int64 delta)
{
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_COUNTER, key, "key", &klen);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_COUNTER_INC, 1);

	DkCmdArg(cmd, rkey, klen);
	DkCmdArgInt(cmd, delta);
	return DkReplyInt64(DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT), CounterWhat(key));
}

/* distkit_inc(key, delta, mode): add delta, return the new value. */
Datum
distkit_inc(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");

	(void) CounterMode(fcinfo, 2);
	PG_RETURN_INT64(StrictAdd(key, delta));
}

/* distkit_dec(key, delta, mode): subtract delta, return the new value. */
Datum
distkit_dec(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	int64		delta = DkArgInt64(fcinfo, 1, "delta");
	int64		negated;

	(void) CounterMode(fcinfo, 2);
	if (pg_sub_s64_overflow(0, delta, &negated))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("delta " INT64_FORMAT " cannot be negated", delta),
				 errhint("Use distkit_inc with a positive delta instead.")));
	PG_RETURN_INT64(StrictAdd(key, negated));
}

/* distkit_get(key, mode): the current value, 0 for a missing key. */
Datum
distkit_get(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	size_t		klen;
	char	   *rkey;
	DkCmd	   *cmd;

	(void) CounterMode(fcinfo, 1);
	rkey = DkKeyFromText(DK_KIND_COUNTER, key, "key", &klen);
	cmd = DkCmdScript(DK_LUA_COUNTER_GET, 1);
	DkCmdArg(cmd, rkey, klen);
	PG_RETURN_INT64(DkReplyInt64(DkRedisRunOne(cmd, DK_IDEMPOTENT), CounterWhat(key)));
}

/* distkit_get_many(keys, mode): one row per key, in input order, in one round trip. */
Datum
distkit_get_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	DkCmd	  **cmds;
	DkReply   **replies;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("keys must not be NULL")));
	(void) CounterMode(fcinfo, 1);
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
	for (int i = 0; i < n; i++)
	{
		size_t		klen;
		char	   *rkey;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("keys[%d] must not be NULL", i + 1)));
		rkey = DkKeyFromText(DK_KIND_COUNTER, DatumGetTextPP(elems[i]),
							 psprintf("keys[%d]", i + 1), &klen);
		cmds[i] = DkCmdScript(DK_LUA_COUNTER_GET, 1);
		DkCmdArg(cmds[i], rkey, klen);
	}
	replies = DkRedisRun(cmds, n, DK_IDEMPOTENT);
	for (int i = 0; i < n; i++)
	{
		Datum		values[2];
		bool		isnull[2] = {false, false};
		text	   *key = DatumGetTextPP(elems[i]);

		values[0] = PointerGetDatum(key);
		values[1] = Int64GetDatum(DkReplyInt64(replies[i], CounterWhat(key)));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
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

	DkCmdArg(cmd, rkey, klen);
	DkCmdArgInt(cmd, value);
	PG_RETURN_INT64(DkReplyInt64(DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT), CounterWhat(key)));
}

/* distkit_del(key): delete the counter, return the value it had (0 if none). */
Datum
distkit_del(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_COUNTER, key, "key", &klen);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_COUNTER_DEL, 1);

	DkCmdArg(cmd, rkey, klen);
	PG_RETURN_INT64(DkReplyInt64(DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT), CounterWhat(key)));
}

/*
 * distkit_clear(): delete every counter under the current prefix, return
 * how many.  SCAN + UNLINK in batches: never one long blocking command.
 */
Datum
distkit_clear(PG_FUNCTION_ARGS)
{
	char	   *pattern = DkKeyPattern(DK_KIND_COUNTER);
	char	   *cursor = pstrdup("0");
	int64		removed = 0;

	do
	{
		DkCmd	   *scan = DkCmdNew("SCAN");
		DkReply    *r;
		DkReply    *keys;

		DkCmdArgStr(scan, cursor);
		DkCmdArgStr(scan, "MATCH");
		DkCmdArgStr(scan, pattern);
		DkCmdArgStr(scan, "COUNT");
		DkCmdArgStr(scan, "1000");
		r = DkRedisRunOne(scan, DK_IDEMPOTENT);
		if (r->type == DK_REPLY_ERROR)
			DkReplyRaiseError(r, "distkit_clear");
		if (r->type != DK_REPLY_ARRAY || r->nelem != 2 ||
			r->elem[0]->type != DK_REPLY_STRING || r->elem[1]->type != DK_REPLY_ARRAY)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("unexpected reply from Redis to SCAN")));
		cursor = r->elem[0]->str;
		keys = r->elem[1];
		if (keys->nelem > 0)
		{
			DkCmd	   *unlink = DkCmdNew("UNLINK");

			for (int i = 0; i < keys->nelem; i++)
				DkCmdArg(unlink, keys->elem[i]->str, keys->elem[i]->len);
			removed += DkReplyInt64(DkRedisRunOne(unlink, DK_NOT_IDEMPOTENT), "distkit_clear");
		}
		CHECK_FOR_INTERRUPTS();
	} while (strcmp(cursor, "0") != 0);

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
			 errhint("Use one of =, <>, <, <=, >, >=.")));
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
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
