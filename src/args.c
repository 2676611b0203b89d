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

/*
 * An interval argument (ttl, wait) as whole milliseconds, rounded up: not
 * NULL (22004), a fixed duration (months and years vary in length), positive
 * (or zero when allow_zero) and at most DK_MAX_INTERVAL_MS (22023).
 */
int64
DkArgIntervalMs(FunctionCallInfo fcinfo, int argno, const char *argname, bool allow_zero)
{
	Interval   *iv;
	int64		days_us;
	int64		us;

	DkArgNotNull(fcinfo, argno, argname);
	iv = PG_GETARG_INTERVAL_P(argno);
	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a fixed duration, not \"%s\"", argname,
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errhint("Months and years vary in length: write days instead, e.g. '30 days'.")));
	if (pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &days_us) ||
		pg_add_s64_overflow(days_us, iv->time, &us) ||
		us > DK_MAX_INTERVAL_MS * 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is too long", argname,
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errhint("At most 36500 days.")));
	if (us < 0 || (us == 0 && !allow_zero))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s, not \"%s\"", argname,
						allow_zero ? "zero or positive" : "positive",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 allow_zero ? errhint("Use '0' not to wait, or a positive duration such as '5 seconds'.") :
				 errhint("Use a positive duration such as '30 seconds'.")));
	return (us + 999) / 1000;
}
