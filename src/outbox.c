/*-------------------------------------------------------------------------
 *
 * outbox.c
 *		The transactional outbox: distkit_outbox_send stores a message in the
 *		table distkit_outbox in the caller's transaction, and a shipper
 *		background worker per database moves committed rows to their
 *		queue's stream (queue.c), exactly once, and deletes them.
 *
 * Sending.  distkit_outbox_send is an INSERT through a saved plan (so the
 * row commits or rolls back with the caller's transaction, savepoints
 * included, and is WAL-durable once committed) plus a flag: at commit the
 * backend sets the latch of its database's shipper, or starts one
 * (RegisterDynamicBackgroundWorker) when none runs.
 *
 * Shipping (shipper.c).  A cycle of the shipper (1) reads up to BATCH_ROWS committed
 * rows in id order (the primary key's index) in a short transaction, (2)
 * ends it, (3) sends them with pipelined EVALSHAs of lua/queue_ship.lua,
 * one per queue and chunk of CHUNK_ROWS rows, (4) deletes the rows Redis
 * took in a second short transaction.  No transaction or snapshot is open
 * during network I/O.
 *
 * Exactly once.  queue_ship.lua adds the stream entry and the member
 * "<origin>:<id>" of the queue's record (sorted set <prefix>:qo:{queue})
 * together, and skips a row whose member exists: a row resent after a lost
 * reply, a shipper crash or a server crash before its DELETE committed is
 * not added twice.  The members of deleted rows (never sent again) are
 * removed with a later script call for that queue, once the DELETE's commit
 * record is flushed (it commits asynchronously: a DELETE lost in a crash
 * brings its rows back, and only their members refuse them); members older than
 * RECORD_TTL_MS go anyway (a row shipped but not deleted for that long
 * could be doubled).  Rows are found by scanning the table, not by a
 * high-water mark, so a transaction that commits after one with a larger
 * id has shipped is still found (the classic outbox ordering trap).  The
 * stream's order is the shipping order, which follows commit order closely
 * but not the ids.
 *
 * Which databases.  One shipper per database, started on demand by the
 * first commit that sent a message, and kept until shutdown; the setting
 * distkit.outbox_databases lists databases whose shipper the distkit
 * worker starts at server start (and re-starts every few seconds if it is
 * gone), for rows left from before a restart.  A shipper exits when its
 * database has no distkit extension, and before DROP DATABASE, ALTER
 * DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE of its database,
 * which refuse to run while another process is connected to it: a
 * ProcessUtility hook signals it first.  On a standby a shipper waits
 * without shipping until promotion.
 *
 * Shared memory: one slot per database with a shipper (its pid and latch).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "cache.h"
#include "distkit.h"
#include "keys.h"
#include "queue.h"
#include "shmem.h"
#include "redis.h"

#define MAX_SHIPPERS 64			/* databases with a shipper at once */
#define START_RETRY_MS 10000	/* between two starts of one database's shipper */

PG_FUNCTION_INFO_V1(distkit_outbox_send);

typedef struct OutboxSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		pid;			/* its shipper, 0: none */
	Latch	   *latch;
	bool		stop;			/* asked to exit (DROP DATABASE etc.) */
	TimestampTz started_at;		/* last start requested */
	TimestampTz stopped_at;
	char		dbname[NAMEDATALEN];
} OutboxSlot;

typedef struct OutboxShared
{
	slock_t		mutex;
	OutboxSlot	slots[MAX_SHIPPERS];
} OutboxShared;

static OutboxShared *outbox = NULL;
static char *outbox_databases = NULL;

static ProcessUtility_hook_type prev_process_utility = NULL;

/* this backend sent a message in the current transaction */
static bool sent_in_xact = false;

/* ---------- shared memory ---------- */

/* Bytes of the shippers' slots (a region of shmem.c's map). */
Size
DkOutboxShmemSize(void)
{
	return sizeof(OutboxShared);
}

/* Create or attach to the slots (shmem.c, under AddinShmemInitLock). */
void
DkOutboxShmemInit(void *base, bool found, LWLock *lock)
{
	(void) lock;				/* the slots have a spinlock of their own */
	outbox = (OutboxShared *) base;
	if (!found)
	{
		memset(outbox, 0, sizeof(OutboxShared));
		SpinLockInit(&outbox->mutex);
	}
}

/* The slot of dboid, or (create) a free one taken for it; NULL if none.  Mutex held. */
static OutboxSlot *
SlotFor(Oid dboid, bool create)
{
	OutboxSlot *free_slot = NULL;

	for (int i = 0; i < MAX_SHIPPERS; i++)
	{
		OutboxSlot *s = &outbox->slots[i];

		if (s->dboid == dboid)
			return s;
		if (free_slot == NULL && (s->dboid == InvalidOid || (s->pid == 0 && s->stop)))
			free_slot = s;
	}
	if (!create || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(OutboxSlot));
	free_slot->dboid = dboid;
	return free_slot;
}

/* on_shmem_exit of a shipper: free its slot's pid. */
static void
ShipperDetach(int code, Datum arg)
{
	OutboxSlot *s = (OutboxSlot *) DatumGetPointer(arg);

	SpinLockAcquire(&outbox->mutex);
	if (s->pid == MyProcPid)
	{
		s->pid = 0;
		s->latch = NULL;
	}
	SpinLockRelease(&outbox->mutex);
}

/*
 * A shipper connected to its database takes the database's slot; false if
 * another shipper has it (or no slot is free): this one should exit.
 */
bool
DkOutboxAttach(const char *dbname)
{
	OutboxSlot *s;
	bool		ok = false;

	SpinLockAcquire(&outbox->mutex);
	s = SlotFor(MyDatabaseId, true);
	if (s != NULL && (s->pid == 0 || s->pid == MyProcPid))
	{
		s->pid = MyProcPid;
		s->latch = MyLatch;
		s->stop = false;
		strlcpy(s->dbname, dbname, NAMEDATALEN);
		ok = true;
	}
	SpinLockRelease(&outbox->mutex);
	if (ok)
		on_shmem_exit(ShipperDetach, PointerGetDatum(s));
	return ok;
}

/* Has this database's shipper been asked to exit for good? */
bool
DkOutboxStopRequested(void)
{
	bool		stop = false;
	OutboxSlot *s;

	SpinLockAcquire(&outbox->mutex);
	s = SlotFor(MyDatabaseId, false);
	if (s == NULL || s->pid != MyProcPid || s->stop)
		stop = true;
	SpinLockRelease(&outbox->mutex);
	return stop;
}

/* ---------- starting and stopping shippers ---------- */

/* Register a shipper for dboid (or, if invalid, the database dbname). */
static bool
RegisterShipper(Oid dboid, const char *dbname)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	/* by oid (on demand): restarted after a failure; by name: the worker's task does it */
	worker.bgw_restart_time = OidIsValid(dboid) ? 1 : BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "distkit", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "DkOutboxShipperMain", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "distkit outbox shipper", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "distkit outbox shipper", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	if (dbname)
		strlcpy(worker.bgw_extra, dbname, BGW_EXTRALEN);
	worker.bgw_notify_pid = 0;
	return RegisterDynamicBackgroundWorker(&worker, &handle);
}

/*
 * At commit of a transaction that sent messages: wake this database's
 * shipper, or start one.  Runs after the commit record: no error may be
 * raised (a failed start is a WARNING; the next commit tries again).
 */
static void
WakeOrStartShipper(void)
{
	Latch	   *latch = NULL;
	bool		start = false;
	TimestampTz now = GetCurrentTimestamp();
	OutboxSlot *s;

	if (outbox == NULL)
		return;
	SpinLockAcquire(&outbox->mutex);
	s = SlotFor(MyDatabaseId, true);
	if (s != NULL)
	{
		if (s->pid != 0 && !s->stop)
			latch = s->latch;
		else if (s->pid == 0 &&
				 (s->stop || s->started_at == 0 ||
				  TimestampDifferenceExceeds(s->started_at, now, START_RETRY_MS)))
		{
			/* a commit here proves the database is not being dropped */
			s->stop = false;
			s->started_at = now;
			start = true;
		}
	}
	SpinLockRelease(&outbox->mutex);
	if (latch)
		SetLatch(latch);
	else if (s == NULL)
		ereport(WARNING,
				(errmsg("distkit cannot start an outbox shipper for the database of OID %u: %d databases have one already",
						MyDatabaseId, MAX_SHIPPERS),
				 errhint("The messages wait in distkit_outbox.")));
	else if (start && !RegisterShipper(MyDatabaseId, NULL))
		ereport(WARNING,
				(errmsg("distkit cannot start an outbox shipper: no free background worker slot"),
				 errhint("Raise max_worker_processes; the messages wait in distkit_outbox.")));
}

static void
OutboxXactCallback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		if (sent_in_xact)
		{
			sent_in_xact = false;
			WakeOrStartShipper();
		}
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		sent_in_xact = false;
}

/* Ask the shipper of dboid to exit (its database is about to be dropped etc.). */
static void
StopShipper(Oid dboid)
{
	pid_t		pid = 0;
	OutboxSlot *s;

	if (outbox == NULL || !OidIsValid(dboid))
		return;
	SpinLockAcquire(&outbox->mutex);
	s = SlotFor(dboid, false);
	if (s != NULL)
	{
		s->stop = true;
		s->stopped_at = GetCurrentTimestamp();
		pid = s->pid;
	}
	SpinLockRelease(&outbox->mutex);
	if (pid != 0)
		(void) kill(pid, SIGTERM);
}

/* The database a utility statement needs to itself, or InvalidOid. */
static Oid
DatabaseNeededAlone(Node *stmt)
{
	const char *name = NULL;

	if (IsA(stmt, DropdbStmt))
		name = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		name = ((RenameStmt *) stmt)->subname;
	else if (IsA(stmt, AlterDatabaseStmt))
	{
		ListCell   *lc;

		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			if (strcmp(lfirst_node(DefElem, lc)->defname, "tablespace") == 0)
				name = ((AlterDatabaseStmt *) stmt)->dbname;
	}
	else if (IsA(stmt, CreatedbStmt))
	{
		ListCell   *lc;

		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *d = lfirst_node(DefElem, lc);

			if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
				name = defGetString(d);
		}
	}
	return name ? get_database_oid(name, true) : InvalidOid;
}

/* ProcessUtility hook: stop a shipper that would block a database command. */
static void
OutboxProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Oid			dboid = DatabaseNeededAlone(pstmt->utilityStmt);

	if (OidIsValid(dboid))
		StopShipper(dboid);
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

/*
 * The distkit worker's task: start the shippers of distkit.outbox_databases
 * that do not run.
 */
static void
StartListedShippers(void)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();

	if (outbox == NULL || outbox_databases == NULL || outbox_databases[0] == '\0' ||
		RecoveryInProgress())
		return;
	raw = pstrdup(outbox_databases);
	if (!SplitIdentifierString(raw, ',', &names))
		return;					/* refused by the check hook */
	foreach(lc, names)
	{
		const char *name = lfirst(lc);
		bool		running = false;

		SpinLockAcquire(&outbox->mutex);
		for (int i = 0; i < MAX_SHIPPERS; i++)
		{
			OutboxSlot *s = &outbox->slots[i];

			if (s->dboid != InvalidOid && strcmp(s->dbname, name) == 0 &&
				(s->pid != 0 || (s->stop && !TimestampDifferenceExceeds(s->stopped_at, now, START_RETRY_MS))))
				running = true;
		}
		SpinLockRelease(&outbox->mutex);
		if (!running && !RegisterShipper(InvalidOid, name))
			ereport(LOG,
					(errmsg("distkit cannot start the outbox shipper of database \"%s\": no free background worker slot", name)));
	}
}

static int
ListedShippersIntervalMs(void)
{
	/*
	 * Every wake-up of the worker also flushes the lax buffer, so no list, no
	 * wake-up (a reload that sets one wakes the worker, which asks again).
	 */
	if (outbox_databases == NULL || outbox_databases[0] == '\0')
		return 3600 * 1000;
	return START_RETRY_MS;
}

static bool
CheckOutboxDatabases(char **newval, void **extra, GucSource source)
{
	char	   *raw = pstrdup(*newval);
	List	   *names;

	if (!SplitIdentifierString(raw, ',', &names))
	{
		GUC_check_errdetail("distkit.outbox_databases must be a comma-separated list of database names.");
		return false;
	}
	return true;
}

/* Settings, shared memory, hooks and the distkit worker's task. */
void
DkOutboxInit(void)
{
	DefineCustomStringVariable("distkit.outbox_databases",
							   "Databases whose outbox shipper starts with the server.",
							   "Other databases get one when they first send a message.",
							   &outbox_databases,
							   "",
							   PGC_SIGHUP, GUC_LIST_INPUT,
							   CheckOutboxDatabases, NULL, NULL);
	RegisterXactCallback(OutboxXactCallback, NULL);
	if (!DkPreloaded)
		return;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = OutboxProcessUtility;
	DkWorkerAddTask("outbox shippers", StartListedShippers, ListedShippersIntervalMs, NULL);
}

/* ---------- sending ---------- */

/*
 * distkit_outbox_send(queue, payload): insert the message into
 * distkit_outbox (in the caller's transaction); returns its id.
 */
Datum
distkit_outbox_send(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static Oid	plan_nsp = InvalidOid;
	static Oid	fn_oid = InvalidOid;
	static Oid	fn_nsp = InvalidOid;
	text	   *queue = DkArgText(fcinfo, 0, "queue");
	Jsonb	   *payload;
	Oid			nsp;
	Datum		values[2];
	int64		id;
	bool		isnull;

	DkRequirePreload("distkit_outbox_send");
	/* the table is in the function's schema (the extension's) */
	if (fcinfo->flinfo->fn_oid != fn_oid)
	{
		fn_nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
		fn_oid = fcinfo->flinfo->fn_oid;
	}
	nsp = fn_nsp;
	(void) DkQueueCheckName(queue);
	DkArgNotNull(fcinfo, 1, "payload");
	payload = PG_GETARG_JSONB_P(1);
	/* the limit is on the JSON text; only a large jsonb may exceed it */
	if (VARSIZE(payload) > DK_MAX_VALUE_BYTES / 4)
		DkQueueCheckPayloadLen(strlen(DatumGetCString(DirectFunctionCall1(jsonb_out,
																		  PG_GETARG_DATUM(1)))));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan == NULL || plan_nsp != nsp)
	{
		Oid			types[2] = {TEXTOID, JSONBOID};
		char	   *sql = psprintf("INSERT INTO %s.distkit_outbox (queue, payload) VALUES ($1, $2) RETURNING id",
								   quote_identifier(get_namespace_name(nsp)));
		SPIPlanPtr	p = SPI_prepare(sql, 2, types);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		if (plan != NULL)
			SPI_freeplan(plan);
		plan = p;
		plan_nsp = nsp;
	}
	values[0] = PointerGetDatum(queue);
	values[1] = PG_GETARG_DATUM(1);
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "distkit_outbox_send: the INSERT failed");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	sent_in_xact = true;
	PG_RETURN_INT64(id);
}
