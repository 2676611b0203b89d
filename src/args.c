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
#include "utils/syscache.h"

#include "distkit.h"

/* A text argument that must not be NULL. */
text *
DkArgText(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", argname)));
	return PG_GETARG_TEXT_PP(argno);
}

/* A bigint argument that must not be NULL. */
int64
DkArgInt64(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", argname)));
	return PG_GETARG_INT64(argno);
}

/*
 * A distkit_mode argument; NULL means default_mode.  The enum value's OID is
 * mapped to its label once per OID and remembered.
 */
DkMode
DkArgMode(FunctionCallInfo fcinfo, int argno, int default_mode)
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
