/*-------------------------------------------------------------------------
 *
 * shipper.c
 *		The "distkit outbox shipper" background worker: one per database,
 *		moves committed rows of distkit_outbox to their queues' streams
 *		exactly once and deletes them (the design is in outbox.c's comment;
 *		outbox.c starts and stops shippers).
 *
 * A cycle: read a batch in a short transaction, ship it with no
 * transaction open, delete what Redis took in another short transaction.
 * The members of the deleted rows in each queue's record are forgotten by
 * a later script call for that queue (or a call of their own when the
 * shipper is idle), once the DELETE is flushed to disk here and on every
 * physical standby (ForgetHorizon).
 *
 * Errors never kill it: a failed cycle aborts its transaction, is logged
 * once per outage and retried with capped exponential back-off and full
 * jitter; the rows stay in the table.  It serves interrupts like the
 * distkit worker (procsignal barriers, reloads; redis.c absorbs them during
 * Redis waits too).  On SIGTERM it abandons the Redis wait at once and
 * exits with status 1 (restarted unless the server stops); asked to stop
 * by outbox.c (its database is about to be dropped), without its
 * extension, or when another shipper serves the database, with status 0.
 * On a standby it waits, shipping nothing, until promotion.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/slot.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "keys.h"
#include "queue.h"
#include "redis.h"

#define BATCH_ROWS 2000			/* rows read per cycle */
#define CHUNK_ROWS 250			/* rows per script call */
#define IDLE_POLL_MS 1000		/* an idle shipper looks at the table anyway */
#define GATHER_MS 5				/* after a partial batch: let more rows commit */
#define GATHER_SMALL_MS 20		/* ... after a batch of fewer than SMALL_BATCH_ROWS */
#define SMALL_BATCH_ROWS 200
#define STANDBY_POLL_MS 1000
#define BACKOFF_MIN_MS 50
#define BACKOFF_CAP_MS 5000
#define RECORD_TTL_MS "604800000"	/* 7 days */
#define FORGET_PER_CALL 1000		/* members forgotten per script call, at most */
#define FORGET_MAX 1000000			/* ids a queue's forget list holds (16 MB) ... */
#define FORGET_SHED 100000			/* ... beyond which its oldest ones are left to expire */

PGDLLEXPORT void DkOutboxShipperMain(Datum main_arg);

typedef struct OutboxRow
{
	int64		id;
	char	   *queue;
	char	   *payload;
	size_t		plen;
} OutboxRow;

/*
 * Ids of deleted rows whose record members are still to be forgotten, per
 * queue, in the order of their DELETEs, each with the end of its DELETE's
 * commit record: a member is forgotten only once that is flushed here and
 * on the standbys (ForgetHorizon), since a DELETE lost in a crash or a
 * failover makes its rows ship again, and only their members stop them.
 */
typedef struct ForgetList
{
	char	   *queue;
	int64	   *ids;
	XLogRecPtr *lsns;
	int			n;
	int			cap;
} ForgetList;

static ForgetList *forget = NULL;
static int	nforget = 0;
static MemoryContext forget_ctx = NULL;

static bool no_extension = false;
static MemoryContext txn_caller_ctx = NULL;	/* where BeginTxn was called */

/*
 * Saved plans of the batch SELECT and the DELETE (parsed and planned once,
 * not per cycle); dropped when the extension's schema changes and after a
 * failed cycle (the table may have been dropped and re-created).
 */
static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr delete_plan = NULL;
static bool checked_extension = false;	/* pg_extension read since the last failure */

static void
FreePlans(void)
{
	if (read_plan != NULL)
		SPI_freeplan(read_plan);
	if (delete_plan != NULL)
		SPI_freeplan(delete_plan);
	read_plan = NULL;
	delete_plan = NULL;
}

/* A saved plan of sql (with nargs arguments of types). */
static SPIPlanPtr
SavedPlan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

	if (p == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return p;
}

/* The forget list of queue (created if absent). */
static ForgetList *
ForgetFor(const char *queue)
{
	MemoryContext old;

	for (int i = 0; i < nforget; i++)
		if (strcmp(forget[i].queue, queue) == 0)
			return &forget[i];
	old = MemoryContextSwitchTo(forget_ctx);
	if (forget == NULL)
		forget = palloc(sizeof(ForgetList) * 16);
	else if ((nforget & (nforget - 1)) == 0 && nforget >= 16)
		forget = repalloc(forget, sizeof(ForgetList) * nforget * 2);
	forget[nforget].queue = pstrdup(queue);
	forget[nforget].n = 0;
	forget[nforget].cap = 64;
	forget[nforget].ids = palloc(sizeof(int64) * 64);
	forget[nforget].lsns = palloc(sizeof(XLogRecPtr) * 64);
	MemoryContextSwitchTo(old);
	return &forget[nforget++];
}

/* Drop the first k ids of f (forgotten, or left to the record's expiry). */
static void
ForgetDrop(ForgetList *f, int k)
{
	memmove(f->ids, f->ids + k, sizeof(int64) * (f->n - k));
	memmove(f->lsns, f->lsns + k, sizeof(XLogRecPtr) * (f->n - k));
	f->n -= k;
}

/*
 * Add a deleted row's id to its queue's forget list.  A list that standbys
 * hold back (ForgetHorizon) for long sheds its oldest ids: their members
 * are then only removed by the record's own expiry (RECORD_TTL_MS), which
 * keeps them longer, never shorter, so nothing can ship twice for it.
 */
static void
ForgetAdd(const char *queue, int64 id, XLogRecPtr lsn)
{
	ForgetList *f = ForgetFor(queue);

	if (f->n >= FORGET_MAX)
	{
		ereport(LOG,
				(errmsg("distkit outbox shipper: leaving %d members of the record of queue \"%s\" to expire in Redis (after 7 days)",
						FORGET_SHED, queue),
				 errdetail("A physical standby or replication slot has not confirmed the DELETEs of %d shipped rows.", f->n),
				 errhint("Drop replication slots that no standby uses any more (pg_replication_slots).")));
		ForgetDrop(f, FORGET_SHED);
	}
	if (f->n == f->cap)
	{
		f->cap *= 2;
		f->ids = repalloc(f->ids, sizeof(int64) * f->cap);
		f->lsns = repalloc(f->lsns, sizeof(XLogRecPtr) * f->cap);
	}
	f->ids[f->n] = id;
	f->lsns[f->n++] = lsn;
}

/*
 * How many of f's first ids may be forgotten now: their DELETEs are flushed
 * (to flushed); at most FORGET_PER_CALL, so that a long list, released at
 * once when a standby catches up, goes in calls that stay short.
 */
static int
ForgetReady(ForgetList *f, XLogRecPtr flushed)
{
	int			k = 0;

	while (k < f->n && k < FORGET_PER_CALL && f->lsns[k] <= flushed)
		k++;
	return k;
}

/*
 * Begin a short transaction with a snapshot and SPI; returns the quoted
 * schema of distkit's objects (looked up if lookup or never found yet, else
 * the last one found), or NULL (and sets no_extension) without the
 * extension.  A new schema drops the saved plans.
 */
static const char *
BeginTxn(bool lookup)
{
	static char *nsp = NULL;	/* from the last lookup */

	txn_caller_ctx = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!lookup && nsp != NULL)
		return nsp;
	if (SPI_execute("SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n"
					" ON n.oid = e.extnamespace WHERE e.extname = 'distkit'", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "cannot read pg_extension");
	if (SPI_processed == 1)
	{
		const char *found = quote_identifier(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));

		if (nsp == NULL || strcmp(nsp, found) != 0)
		{
			FreePlans();
			if (nsp != NULL)
				pfree(nsp);
			nsp = MemoryContextStrdup(TopMemoryContext, found);
		}
	}
	else
	{
		FreePlans();
		if (nsp != NULL)
			pfree(nsp);
		nsp = NULL;
		no_extension = true;
	}
	return nsp;
}

static void
EndTxn(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(txn_caller_ctx);
}

/*
 * Read up to BATCH_ROWS committed rows in id order into ctx.  pg_extension
 * is read at the first cycle and after a failed one (not per cycle: a
 * dropped extension makes the saved plan fail, and the next cycle looks).
 */
static int
ReadBatch(MemoryContext ctx, OutboxRow **rows)
{
	const char *nsp = BeginTxn(!checked_extension);
	int			n = 0;

	checked_extension = true;
	if (nsp != NULL)
	{
		if (read_plan == NULL)
			read_plan = SavedPlan(psprintf("SELECT id, queue, payload::text FROM %s.distkit_outbox ORDER BY id LIMIT %d",
										   nsp, BATCH_ROWS), 0, NULL);
		if (SPI_execute_plan(read_plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "cannot read distkit_outbox");
		n = (int) SPI_processed;
		*rows = MemoryContextAlloc(ctx, sizeof(OutboxRow) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			MemoryContext old = MemoryContextSwitchTo(ctx);

			(*rows)[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			(*rows)[i].queue = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
			(*rows)[i].payload = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
			(*rows)[i].plen = strlen((*rows)[i].payload);
			MemoryContextSwitchTo(old);
		}
	}
	EndTxn();
	return n;
}

/*
 * Delete the rows of ids (n of them) in a short transaction; returns the
 * end of its commit record (not waited for: synchronous_commit is off).
 */
static XLogRecPtr
DeleteRows(int64 *ids, int n)
{
	const char *nsp = BeginTxn(false);
	Datum	   *elems = palloc(sizeof(Datum) * n);
	Datum		arg;
	Oid			type = INT8ARRAYOID;
	uint64		deleted = 0;

	if (nsp != NULL)
	{
		for (int i = 0; i < n; i++)
			elems[i] = Int64GetDatum(ids[i]);
		arg = PointerGetDatum(construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		if (delete_plan == NULL)
			delete_plan = SavedPlan(psprintf("DELETE FROM %s.distkit_outbox WHERE id = ANY($1)", nsp),
									1, &type);
		if (SPI_execute_plan(delete_plan, &arg, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "cannot delete from distkit_outbox");
		deleted = SPI_processed;
	}
	EndTxn();

	/*
	 * The end of this DELETE's commit record, when it deleted every row; else
	 * (rows deleted by another transaction, whose commit may not be flushed
	 * either) the end of all WAL inserted so far, an upper bound.
	 */
	if (deleted == (uint64) n && XactLastCommitEnd != InvalidXLogRecPtr)
		return XactLastCommitEnd;
	return GetXLogInsertRecPtr();
}

static int
CompareRows(const void *a, const void *b)
{
	const OutboxRow *x = a;
	const OutboxRow *y = b;
	int			c = strcmp(x->queue, y->queue);

	if (c != 0)
		return c;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* One script call for queue: forget the first nf ids of f, add rows[0..n). */
static DkCmd *
ShipCommand(const char *queue, OutboxRow *rows, int n, ForgetList *f, int nf, int *forgot)
{
	size_t		klen;
	size_t		rlen;
	char	   *key = DkKeyBuild(DK_KIND_QUEUE, queue, strlen(queue), &klen);
	char	   *rkey = DkKeyBuild(DK_KIND_QUEUE_SHIPPED, queue, strlen(queue), &rlen);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_QUEUE_SHIP, 2);

	*forgot = f ? nf : 0;
	DkCmdArg(cmd, key, klen);
	DkCmdArg(cmd, rkey, rlen);
	DkCmdArgStr(cmd, DkQueueOrigin());
	DkCmdArgInt(cmd, DkQueueMaxLength());
	DkCmdArgStr(cmd, RECORD_TTL_MS);
	DkCmdArgInt(cmd, *forgot);
	for (int i = 0; i < *forgot; i++)
		DkCmdArgInt(cmd, f->ids[i]);
	for (int i = 0; i < n; i++)
	{
		DkCmdArgInt(cmd, rows[i].id);
		DkCmdArg(cmd, rows[i].payload, rows[i].plen);
	}
	return cmd;
}

/*
 * How far WAL is durable everywhere this database may come back from: the
 * WAL flushed on this server, on every standby streaming from it, and on
 * every standby holding a physical replication slot here.
 *
 * A connected standby counts through its walsender's flush position.
 * Walsenders of logical decoding (connected to a database: their consumers
 * never become a primary) and clients that report no flush position
 * (pg_receivewal without a slot or --synchronous, a streaming base backup)
 * are skipped.  A physical slot counts through its restart_lsn, which its
 * standby's flushes advance, so a standby that is disconnected for a while
 * or has not reported yet is waited for too; an invalidated slot
 * (max_slot_wal_keep_size) holds nothing.  A standby promoted after a
 * failover has every DELETE up to here, so the rows it could ship again
 * still have their members.  Only shared memory is read (spinlocks,
 * ProcArrayLock, the slot control lock), with no network I/O.
 */
static XLogRecPtr
ForgetHorizon(void)
{
	XLogRecPtr	horizon = GetFlushRecPtr(NULL);

	for (int i = 0; WalSndCtl != NULL && i < max_wal_senders; i++)
	{
		WalSnd	   *w = &WalSndCtl->walsnds[i];
		pid_t		pid;
		WalSndState state;
		XLogRecPtr	flush;
		PGPROC	   *proc;

		SpinLockAcquire(&w->mutex);
		pid = w->pid;
		state = w->state;
		flush = w->flush;
		SpinLockRelease(&w->mutex);
		if (pid == 0 || (state != WALSNDSTATE_CATCHUP && state != WALSNDSTATE_STREAMING) ||
			XLogRecPtrIsInvalid(flush))
			continue;
		/* read without the lock: a reused PGPROC only skips a walsender that has exited */
		proc = BackendPidGetProc(pid);
		if (proc == NULL || OidIsValid(proc->databaseId))
			continue;			/* gone, or logical decoding */
		horizon = Min(horizon, flush);
	}
	if (ReplicationSlotCtl != NULL)
	{
		LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
		for (int i = 0; i < max_replication_slots; i++)
		{
			ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
			XLogRecPtr	restart;

			if (!s->in_use || !SlotIsPhysical(s))
				continue;
			SpinLockAcquire(&s->mutex);
			restart = s->data.restart_lsn;
			SpinLockRelease(&s->mutex);
			if (!XLogRecPtrIsInvalid(restart))
				horizon = Min(horizon, restart);
		}
		LWLockRelease(ReplicationSlotControlLock);
	}
	return horizon;
}

/*
 * One cycle; returns the rows shipped and deleted, or (idle) the number of
 * queues whose members were forgotten: > 0 if any work.
 */
static int
ShipCycle(MemoryContext ctx)
{
	OutboxRow  *rows = NULL;
	int			n = ReadBatch(ctx, &rows);
	XLogRecPtr	flushed = ForgetHorizon();
	DkCmd	  **cmds;
	int		   *first;
	int		   *count;
	ForgetList **lists;
	int		   *forgot;
	int			ncmds = 0;
	int64	   *done;
	int			ndone = 0;
	DkReply   **replies;
	int			work = 0;
	XLogRecPtr	deleted;

	if (no_extension)
		return 0;
	if (n == 0)
	{
		/* idle: forget the members of rows whose DELETE is flushed everywhere */
		for (int i = 0; i < nforget; i++)
			if (ForgetReady(&forget[i], flushed) > 0)
				work++;
		if (work == 0)
			return 0;
	}
	qsort(rows, n, sizeof(OutboxRow), CompareRows);
	/* every queue's list first: creating one may move the array lists[] points into */
	for (int i = 0; i < n; i++)
		if (i == 0 || strcmp(rows[i - 1].queue, rows[i].queue) != 0)
			(void) ForgetFor(rows[i].queue);
	cmds = palloc(sizeof(DkCmd *) * (n + nforget + 1));
	first = palloc(sizeof(int) * (n + nforget + 1));
	count = palloc(sizeof(int) * (n + nforget + 1));
	lists = palloc(sizeof(ForgetList *) * (n + nforget + 1));
	forgot = palloc(sizeof(int) * (n + nforget + 1));
	for (int i = 0; i < n;)
	{
		int			j = i;
		ForgetList *f = ForgetFor(rows[i].queue);
		int			nf = ForgetReady(f, flushed);

		while (j < n && j - i < CHUNK_ROWS && strcmp(rows[j].queue, rows[i].queue) == 0)
			j++;
		/* the first chunk of a queue forgets its list */
		lists[ncmds] = (nf > 0 && (i == 0 || strcmp(rows[i - 1].queue, rows[i].queue) != 0)) ? f : NULL;
		first[ncmds] = i;
		count[ncmds] = j - i;
		cmds[ncmds] = ShipCommand(rows[i].queue, &rows[i], j - i, lists[ncmds], nf, &forgot[ncmds]);
		ncmds++;
		i = j;
	}
	if (n == 0)
		for (int i = 0; i < nforget; i++)
		{
			int			nf = ForgetReady(&forget[i], flushed);

			if (nf > 0)
			{
				lists[ncmds] = &forget[i];
				first[ncmds] = 0;
				count[ncmds] = 0;
				cmds[ncmds] = ShipCommand(forget[i].queue, NULL, 0, &forget[i], nf, &forgot[ncmds]);
				ncmds++;
			}
		}

	/* every call is idempotent (the record); durable: with Sentinel, once a replica has it */
	pgstat_report_activity(STATE_RUNNING, "shipping outbox rows to Redis");
	replies = DkRedisRun(cmds, ncmds, DK_IDEMPOTENT_DURABLE);
	done = palloc(sizeof(int64) * Max(n, 1));
	for (int c = 0; c < ncmds; c++)
	{
		DkReply    *r = replies[c];

		if (r->type != DK_REPLY_ARRAY || r->nelem != 2)
		{
			ereport(LOG,
					(errmsg("distkit outbox shipper: Redis refused %d rows for queue \"%s\": %s",
							count[c], count[c] > 0 ? rows[first[c]].queue : lists[c]->queue, r->type == DK_REPLY_ERROR ? r->str : "unexpected reply"),
					 errdetail("The rows stay in distkit_outbox and are sent again.")));
			continue;
		}
		/* forgotten: drop the first ids (those added since, by no one in this cycle, stay) */
		if (lists[c] != NULL)
			ForgetDrop(lists[c], forgot[c]);
		for (int i = first[c]; i < first[c] + count[c]; i++)
			done[ndone++] = rows[i].id;
	}
	if (ndone > 0)
	{
		pgstat_report_activity(STATE_RUNNING, "deleting shipped outbox rows");
		deleted = DeleteRows(done, ndone);
		/* deleted: their members may go once the DELETE is flushed (done is in rows' order) */
		for (int i = 0, d = 0; i < n && d < ndone; i++)
			if (rows[i].id == done[d])
			{
				ForgetAdd(rows[i].queue, rows[i].id, deleted);
				d++;
			}
	}
	return ndone + (n == 0 ? work : 0);
}

/* Run a cycle, catching errors; -1 on failure. */
static int
TryShipCycle(MemoryContext ctx, int *failures)
{
	volatile int result = -1;

	MemoryContextSwitchTo(ctx);
	PG_TRY();
	{
		result = ShipCycle(ctx);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(ctx);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		LWLockReleaseAll();
		FreePlans();
		checked_extension = false;
		if (*failures == 0 && !ShutdownRequestPending)
			ereport(LOG,
					(errmsg("distkit outbox shipper cannot ship: %s", edata->message),
					 errdetail("The messages stay in distkit_outbox and are retried with back-off; this is logged once per outage.")));
		(*failures)++;
		result = -1;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextReset(ctx);
	if (result >= 0 && *failures > 0)
	{
		ereport(LOG,
				(errmsg("distkit outbox shipper reached Redis again after %d failed attempts", *failures)));
		*failures = 0;
	}
	return result;
}

static long
BackoffMs(int failures)
{
	double		cap = BACKOFF_MIN_MS;

	for (int i = 0; i < failures && cap < BACKOFF_CAP_MS; i++)
		cap *= 2;
	cap = Min(cap, BACKOFF_CAP_MS);
	return (long) (pg_prng_double(&pg_global_prng_state) * cap) + 1;
}

/* Serve interrupts between cycles; true when the shipper should exit. */
static bool
HandleInterrupts(void)
{
	(void) DkRedisTakeOwnCancel();	/* not waiting for Redis: nothing to abandon */
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	return ShutdownRequestPending;
}

static void
Sleep(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/*
 * After a partial batch of n rows, wait before the next cycle even if
 * commits set the latch: under load, cycles carry many rows instead of a
 * few (a cycle costs two transactions, the DELETE's WAL, which the
 * producers' next WAL flushes write too, and a round trip), at the price
 * of lag: GATHER_MS, or GATHER_SMALL_MS after a batch of fewer than
 * SMALL_BATCH_ROWS rows (a few producers committing one message each: the
 * shipper's cycles would otherwise slow their commits most).  A shutdown
 * request is served after it.
 */
static void
GatherRows(int n)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													n < SMALL_BATCH_ROWS ? GATHER_SMALL_MS : GATHER_MS);
	long		left;

	/* not woken by the latch: commits meanwhile cost their backends no wake-up */
	while (!ShutdownRequestPending &&
		   (left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until)) > 0)
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, left, PG_WAIT_EXTENSION);
}

/* Entry point: main_arg is the database's OID, or InvalidOid and bgw_extra its name. */
void
DkOutboxShipperMain(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	MemoryContext ctx;
	int			failures = 0;
	char	   *dbname;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	DkRedisUseOwnCancel("outbox shipper", NULL);
	BackgroundWorkerUnblockSignals();
	if (OidIsValid(dboid))
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	else
		BackgroundWorkerInitializeConnection(MyBgworkerEntry->bgw_extra, NULL, 0);
	pgstat_report_appname("distkit outbox shipper");
	/*
	 * Its DELETEs need not wait for the WAL flush: a DELETE lost in a crash
	 * only makes the rows ship again, which the record refuses.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * Its saved plans must walk the primary key whatever the table's size
	 * when they were planned (a plan made while the table was nearly empty,
	 * a sequential scan and a sort, would be kept while a backlog of
	 * millions of rows builds up).
	 */
	SetConfigOption("enable_seqscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_bitmapscan", "off", PGC_SUSET, PGC_S_OVERRIDE);

	StartTransactionCommand();
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();
	if (!DkOutboxAttach(dbname))
		proc_exit(0);			/* another shipper serves this database */
	DkRedisKeepConnection();
	forget_ctx = AllocSetContextCreate(TopMemoryContext, "distkit outbox forget lists",
									   ALLOCSET_DEFAULT_SIZES);
	ctx = AllocSetContextCreate(TopMemoryContext, "distkit outbox cycle", ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("distkit outbox shipper started for database \"%s\"", dbname)));

	for (;;)
	{
		int			n;

		if (HandleInterrupts())
			break;
		if (DkOutboxStopRequested())
			proc_exit(0);
		if (RecoveryInProgress())
		{
			pgstat_report_activity(STATE_IDLE, NULL);
			Sleep(STANDBY_POLL_MS);
			continue;
		}
		n = TryShipCycle(ctx, &failures);
		pgstat_report_activity(STATE_IDLE, NULL);
		if (no_extension)
		{
			ereport(LOG,
					(errmsg("distkit outbox shipper exits: database \"%s\" has no distkit extension", dbname)));
			proc_exit(0);
		}
		if (ShutdownRequestPending)
			break;
		if (n < 0)
			Sleep(BackoffMs(failures));
		else if (n == 0)
			Sleep(IDLE_POLL_MS);
		else if (n < BATCH_ROWS)
			GatherRows(n);
	}
	proc_exit(DkOutboxStopRequested() ? 0 : 1);
}
