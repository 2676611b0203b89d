/*-------------------------------------------------------------------------
 *
 * version.c
 *		Which versions of distkit's SQL objects this library works with.
 *
 * The library and the SQL objects are installed separately: a package
 * upgrade replaces distkit.so (used after the next restart, since it is
 * preloaded) while every database keeps the SQL objects of the version it
 * was created or last updated with, until someone runs ALTER EXTENSION
 * distkit UPDATE there.  So the library must work with the SQL objects of
 * every version it can be updated from, and refuse clearly — never crash
 * or misread arguments — when the objects are of a version it does not
 * know (older than it supports, or newer than it: a downgraded library).
 *
 * The rule, as pg_stat_statements keeps it:
 *  - DK_SQL_VERSIONS lists the versions of the SQL objects this library
 *    works with.  A function whose SQL shape differs between them (a
 *    result with more columns, say) decides by the shape it is called
 *    with (the result's tuple descriptor), not by the version, so a
 *    backend that ran ALTER EXTENSION UPDATE a moment ago is right too.
 *  - Every function that takes a key passes DkKeyCheck, which calls
 *    DkCheckSqlVersion(); the keyless ones that act (clears, flush, stats,
 *    the instance and leader views, and the call-metrics functions of
 *    metrics.c) call it themselves.  The first
 *    call in a backend reads pg_extension.extversion once; a supported
 *    version is remembered for the life of the backend (one test of a
 *    static flag per call afterwards), an unsupported one is refused with
 *    the ALTER EXTENSION to run, and read again at the next call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "version.h"

/* Versions of the SQL objects this library works with, oldest first. */
static const char *const DK_SQL_VERSIONS[] = {"0.1.0", "0.2.0"};
#define DK_SQL_VERSION_COUNT lengthof(DK_SQL_VERSIONS)

bool		DkSqlVersionOk = false;

/* extversion of the distkit extension in this database; NULL if none. */
static char *
InstalledVersion(void)
{
	Oid			extoid = get_extension_oid("distkit", true);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	if (!OidIsValid(extoid))
		return NULL;
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * The slow path of DkCheckSqlVersion: read the installed version and
 * refuse to go on if this library does not know it.  No extension row
 * (a function called while CREATE EXTENSION runs, or by a background
 * process without a database) is let through: there is nothing to
 * mismatch.
 */
void
DkCheckSqlVersionSlow(void)
{
	char	   *version;

	if (!IsTransactionState() || !OidIsValid(MyDatabaseId))
		return;
	version = InstalledVersion();
	if (version == NULL)
		return;
	for (size_t i = 0; i < DK_SQL_VERSION_COUNT; i++)
		if (strcmp(version, DK_SQL_VERSIONS[i]) == 0)
		{
			DkSqlVersionOk = true;
			pfree(version);
			return;
		}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("distkit's SQL objects in this database are version %s, which the loaded distkit library (%s) does not support",
					version, DK_SQL_VERSIONS[DK_SQL_VERSION_COUNT - 1]),
			 errdetail("This library works with the SQL objects of versions %s to %s.",
					   DK_SQL_VERSIONS[0], DK_SQL_VERSIONS[DK_SQL_VERSION_COUNT - 1]),
			 errhint("Run ALTER EXTENSION distkit UPDATE in this database, or install the distkit library of version %s and restart the server.",
					 version)));
}

/* The newest SQL version this library knows (the one it installs). */
const char *
DkSqlVersionNewest(void)
{
	return DK_SQL_VERSIONS[DK_SQL_VERSION_COUNT - 1];
}
