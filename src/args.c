/*-------------------------------------------------------------------------
 *
 * args.c
 *		Argument helpers for distkit's SQL-callable functions.
 *
 * Functions are declared non-STRICT so that a NULL argument gives a clear
 * error (SQLSTATE 22004) naming the argument, instead of a silent NULL
 * result that a trigger would store or ignore.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_enum.h"
#include "common/int.h"
#include "datatype/timestamp.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "metrics.h"

/* Raise 22004 naming argname if argument argno is NULL. */
void
DkArgNotNull(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", argname)));
}

/* A text argument that must not be NULL. */
text *
DkArgText(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	DkArgNotNull(fcinfo, argno, argname);
	return PG_GETARG_TEXT_PP(argno);
}

/* A bigint argument that must not be NULL. */
int64
DkArgInt64(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	DkArgNotNull(fcinfo, argno, argname);
	return PG_GETARG_INT64(argno);
}

/*
 * A distkit_mode argument; NULL means default_mode.  The enum value's OID is
 * mapped to its label once per OID and remembered.
 */
static DkMode
ArgMode(FunctionCallInfo fcinfo, int argno, int default_mode)
{
	static Oid	strict_oid = InvalidOid;
	static Oid	lax_oid = InvalidOid;
	Oid			value;
	HeapTuple	tup;
	DkMode		mode;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return (DkMode) default_mode;
	value = PG_GETARG_OID(argno);
	if (value == strict_oid)
		return DK_MODE_STRICT;
	if (value == lax_oid)
		return DK_MODE_LAX;

	tup = SearchSysCache1(ENUMOID, ObjectIdGetDatum(value));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for enum value %u", value);
	if (strcmp(NameStr(((Form_pg_enum) GETSTRUCT(tup))->enumlabel), "lax") == 0)
	{
		lax_oid = value;
		mode = DK_MODE_LAX;
	}
	else
	{
		strict_oid = value;
		mode = DK_MODE_STRICT;
	}
	ReleaseSysCache(tup);
	return mode;
}

/* A distkit_mode argument (ArgMode), told to the call metrics. */
DkMode
DkArgMode(FunctionCallInfo fcinfo, int argno, int default_mode)
{
	DkMode		mode = ArgMode(fcinfo, argno, default_mode);

	DkMetricsSetMode(mode);
	return mode;
}

/* Error unless distkit was loaded through shared_preload_libraries. */
void
DkRequirePreload(const char *what)
{
	if (!DkPreloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs distkit to be loaded at server start", what),
				 errhint("Add distkit to shared_preload_libraries in postgresql.conf and restart PostgreSQL.")));
}

/* An interval as text, for messages. */
char *
DkIntervalText(Interval *iv)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)));
}

/* The rules of the common duration arguments. */
const DkDurationRule DK_DURATION_TTL = {
	1, "positive", DK_MAX_INTERVAL_US, "36500 days",
	"Use a positive duration such as '30 seconds'."
};
const DkDurationRule DK_DURATION_WAIT = {
	0, "zero or positive", DK_MAX_INTERVAL_US, "36500 days",
	"Use '0' not to wait, or a positive duration such as '5 seconds'."
};

/*
 * The one parser of duration (interval) arguments, in microseconds.  The
 * argument must not be NULL (22004: a caller for which NULL means something
 * tests PG_ARGISNULL first), must be a fixed duration (months and years vary
 * in length) and lie within the rule's bounds (22023, the value quoted, the
 * bound in the message or detail, the rule's hint).
 */
int64
DkArgDurationUs(FunctionCallInfo fcinfo, int argno, const char *argname,
				const DkDurationRule *rule)
{
	Interval   *iv;
	int64		days_us;
	int64		us;
	bool		overflow;

	DkArgNotNull(fcinfo, argno, argname);
	iv = PG_GETARG_INTERVAL_P(argno);
	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a fixed duration, not \"%s\"", argname, DkIntervalText(iv)),
				 errhint("Months and years vary in length: write days instead, e.g. '30 days' or '365 days'.")));
	/* beyond 2^63 microseconds: too long (or too short), never wrapped around */
	overflow = pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &days_us) ||
		pg_add_s64_overflow(days_us, iv->time, &us);
	if (overflow)
		us = iv->day < 0 ? PG_INT64_MIN : PG_INT64_MAX;
	if (us < rule->min_us)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s, not \"%s\"", argname, rule->min_text, DkIntervalText(iv)),
				 errhint("%s", rule->hint)));
	if (us > rule->max_us || overflow)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is too long", argname, DkIntervalText(iv)),
				 errdetail("%s may be at most %s.", argname, rule->max_text),
				 errhint("%s", rule->hint)));
	return us;
}

/* DkArgDurationUs in whole milliseconds, rounded up. */
int64
DkArgDurationMs(FunctionCallInfo fcinfo, int argno, const char *argname,
				const DkDurationRule *rule)
{
	int64		us = DkArgDurationUs(fcinfo, argno, argname, rule);

	return us / 1000 + (us % 1000 > 0 ? 1 : 0);
}
