/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The "distkit worker" background worker: one per server, for every
 *		database.  Flushing the lax buffer is its main task; the heartbeat
 *		(instance.c) and leader renewal (leader.c) are periodic tasks.
 *
 * The flush sends the lax buffer's deltas to Redis (see lax.c for the buffer):
 * each cycle first resends the batch still in flight, if any, with its
 * original sequence number, then takes a new batch from the dirty entries
 * and sends it (flush.c: one EVALSHA of lua/lax_flush.lua per group of
 * keys, pipelined).  No LWLock is held during network I/O: the batch is
 * copied out first.
 *
 * Timing: after a cycle that did work the worker sleeps
 * distkit.flush_interval while increments accumulate (they do not wake
 * it); when nothing is dirty it announces that it is idle and sleeps on its
 * latch until the first increment wakes it (zero CPU when idle).  Flush
 * requests (distkit_flush, strict writes) always wake it.
 *
 * Other subsystems register periodic tasks (DkWorkerAddTask), e.g.
 * heartbeats; the worker runs them between flush cycles, each in its own
 * error boundary.
 *
 * Interrupts are served as core's background processes serve them, between
 * cycles (WorkerHandleInterrupts) and, through redis.c, while a cycle waits
 * on Redis: procsignal barriers (DROP DATABASE, DROP TABLESPACE and ALTER
 * DATABASE ... SET TABLESPACE wait for every process, replicas' startup
 * process too), pg_log_backend_memory_contexts, reloads.  A cancel
 * (pg_cancel_backend) abandons the current Redis wait; it never kills the
 * worker.
 *
 * Errors never kill it: a failed cycle is logged once per outage, counted,
 * and retried with capped exponential back-off and full jitter, while the
 * deltas stay in shared memory.  On SIGTERM (shutdown, or
 * pg_terminate_backend) it makes a final flush and runs the tasks'
 * shutdown actions, all of it bounded by distkit.exit_timeout (redis.c's
 * exit work), and exits with status 1, so that the postmaster restarts it
 * when the server is not shutting down.
 *
 * Its Redis connection is the server's most important one: it is never
 * closed for idleness (DkRedisKeepConnection) nor after an error reply
 * (redis.c drops a connection itself whenever its state is unknown).
 * When Redis refuses it a connection because it is at maxclients (full of
 * sessions' connections), the worker asks again every FULL_RETRY_MIN_MS
 * to FULL_RETRY_MAX_MS instead of backing off for seconds, so that it takes
 * a freed slot before sessions, which only ask when called; the refusal is
 * logged and shown in distkit_stats.last_error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "flush.h"
#include "lax.h"
#include "metrics.h"
#include "redis.h"

#define BACKOFF_CAP_MS 5000		/* longest sleep between failed attempts */
#define FULL_RETRY_MIN_MS 10	/* Redis at maxclients: first retry */
#define FULL_RETRY_MAX_MS 100	/* ... and the longest wait between retries */

PGDLLEXPORT void DkWorkerMain(Datum main_arg);

/* Periodic tasks other subsystems run in the worker (DkWorkerAddTask). */
#define MAX_TASKS 16
typedef struct DkWorkerTask
{
	const char *name;
	DkWorkerTaskFn run;
	int			(*interval_ms) (void);
	DkWorkerTaskFn at_shutdown;
	TimestampTz next_run;
	int			failures;
} DkWorkerTask;

static DkWorkerTask tasks[MAX_TASKS];
static int	ntasks = 0;

/*
 * Register a task the worker runs every interval_ms() milliseconds (and
 * at_shutdown, if not NULL, during a clean stop, after the final flush).
 * Call from _PG_init.  Tasks talk to Redis through redis.c like the flush;
 * their errors are caught, logged once per outage and retried next time.
 * interval_ms is asked again whenever the worker wakes up, and a task runs
 * sooner than planned when its answer shrinks: a task whose work arrives
 * from backends (e.g. a new leadership to renew) makes interval_ms reflect
 * it and sets the worker's latch (MyLatch of the worker, which the task can
 * record when it runs).
 */
void
DkWorkerAddTask(const char *name, DkWorkerTaskFn run, int (*interval_ms) (void),
				 DkWorkerTaskFn at_shutdown)
{
	if (ntasks >= MAX_TASKS)
		elog(ERROR, "too many distkit worker tasks");
	tasks[ntasks].name = name;
	tasks[ntasks].run = run;
	tasks[ntasks].interval_ms = interval_ms;
	tasks[ntasks].at_shutdown = at_shutdown;
	tasks[ntasks].next_run = 0;
	tasks[ntasks].failures = 0;
	ntasks++;
}

/* Set when the last failed cycle or task was refused by Redis at maxclients. */
static bool refused_full = false;

/* Set once the final flush has begun: shutdown no longer abandons Redis waits. */
static bool stopping = false;

/*
 * Run fn, catching errors; true if it succeeded.  The connection is kept:
 * redis.c has already dropped it if its state is unknown.
 */
static bool
RunCaught(DkWorkerTaskFn fn, MemoryContext ctx, char **error)
{
	volatile bool ok = true;
	MemoryContext old = MemoryContextSwitchTo(ctx);

	PG_TRY();
	{
		fn();
		refused_full = false;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(ctx);
		edata = CopyErrorData();
		FlushErrorState();
		LWLockReleaseAll();
		refused_full = DkRedisRefusedFull(edata);
		*error = edata->message;
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return ok;
}

/*
 * Wait before asking Redis again after it refused a connection at
 * maxclients: short (FULL_RETRY_MIN_MS doubling to FULL_RETRY_MAX_MS, half
 * of it jittered), to take a freed slot before sessions do.
 */
static long
FullRetryMs(int failures)
{
	long		cap = FULL_RETRY_MIN_MS;

	for (int i = 1; i < failures && cap < FULL_RETRY_MAX_MS; i++)
		cap *= 2;
	cap = Min(cap, FULL_RETRY_MAX_MS);
	return cap / 2 + (long) (pg_prng_double(&pg_global_prng_state) * (cap / 2)) + 1;
}

/* Run the tasks that are due; returns milliseconds until the next one (-1: none). */
static long
RunDueTasks(MemoryContext ctx)
{
	TimestampTz now = GetCurrentTimestamp();
	long		next = -1;

	for (int i = 0; i < ntasks; i++)
	{
		DkWorkerTask *t = &tasks[i];
		long		wait;

		if (t->next_run > now)
		{
			/* the task may want to run sooner than planned (new work) */
			TimestampTz soon = TimestampTzPlusMilliseconds(now, Max(1, t->interval_ms()));

			if (soon < t->next_run)
				t->next_run = soon;
		}
		if (t->next_run <= now)
		{
			char	   *error = NULL;

			if (RunCaught(t->run, ctx, &error))
			{
				if (t->failures > 0)
					ereport(LOG,
							(errmsg("distkit worker task \"%s\" succeeded again after %d failures",
									t->name, t->failures)));
				t->failures = 0;
			}
			else
			{
				if (t->failures == 0)
					ereport(LOG,
							(errmsg("distkit worker task \"%s\" failed: %s", t->name, error),
							 errdetail("It is retried at its next interval; this is logged once per outage.")));
				t->failures++;
			}
			MemoryContextReset(ctx);
			now = GetCurrentTimestamp();
			if (t->failures > 0 && refused_full)
				t->next_run = TimestampTzPlusMilliseconds(now, Min(FullRetryMs(t->failures),
																   Max(1, t->interval_ms())));
			else
				t->next_run = TimestampTzPlusMilliseconds(now, Max(1, t->interval_ms()));
		}
		wait = TimestampDifferenceMilliseconds(now, t->next_run);
		if (next < 0 || wait < next)
			next = wait;
	}
	return next;
}

/* Run every task's shutdown action (clean stop). */
static void
RunShutdownTasks(MemoryContext ctx)
{
	for (int i = 0; i < ntasks; i++)
	{
		char	   *error = NULL;

		if (tasks[i].at_shutdown && !RunCaught(tasks[i].at_shutdown, ctx, &error))
			ereport(LOG,
					(errmsg("distkit worker task \"%s\" could not finish at shutdown: %s",
							tasks[i].name, error)));
		MemoryContextReset(ctx);
	}
}

/* Registers the distkit worker (from _PG_init, when preloaded). */
void
DkWorkerRegister(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "distkit", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "DkWorkerMain", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "distkit worker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "distkit worker", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* One flush cycle: resend what is in flight, then send a new batch. */
static int
FlushCycle(void)
{
	uint64		target = DkLaxBeginCycle();
	DkLaxBatchItem *items;
	uint64		seq;
	int			n1;
	int			n2;

	n1 = DkLaxTakeInflight(&items, &seq);
	if (n1 > 0)
		DkFlushSend(items, n1, seq);
	n2 = DkLaxTakeBatch(&items, &seq);
	if (n2 > 0)
		DkFlushSend(items, n2, seq);
	DkLaxEndCycle(target, n1 + n2, true, NULL);
	return n1 + n2;
}

/* Run a cycle, catching errors; returns -1 on failure, else keys flushed. */
static int
TryFlushCycle(MemoryContext cycle_ctx, int *failures)
{
	volatile int result = -1;
	MemoryContext old = MemoryContextSwitchTo(cycle_ctx);
	DkMetricsCall batch;		/* flush/batch in distkit_stat_calls */

	DkMetricsFlushBegin(&batch);
	PG_TRY();
	{
		result = FlushCycle();
		refused_full = false;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cycle_ctx);
		edata = CopyErrorData();
		FlushErrorState();
		DkMetricsEnd(&batch, edata->sqlerrcode);
		LWLockReleaseAll();
		refused_full = DkRedisRefusedFull(edata);
		DkLaxEndCycle(0, 0, false, edata->message);
		/* a wait abandoned for the stop: the final flush follows and reports */
		if (*failures == 0 && !(ShutdownRequestPending && !stopping))
			ereport(LOG,
					(errmsg("distkit worker cannot flush to Redis: %s", edata->message),
					 errdetail("Lax increments stay buffered in shared memory and are retried with back-off; this is logged once per outage.")));
		(*failures)++;
		result = -1;
	}
	PG_END_TRY();
	if (result > 0)
		DkMetricsEnd(&batch, 0);	/* a cycle with nothing to send is no batch */
	MemoryContextSwitchTo(old);
	MemoryContextReset(cycle_ctx);
	if (result >= 0 && *failures > 0)
	{
		ereport(LOG,
				(errmsg("distkit worker reached Redis again after %d failed attempts", *failures)));
		*failures = 0;
	}
	return result;
}

/*
 * Sleep up to ms (-1: no limit) on the latch (woken by increments, flush
 * requests and signals), but no longer than until the next task is due.
 */
static void
SleepOnLatch(long ms, long task_ms)
{
	int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;

	if (task_ms >= 0 && (ms < 0 || task_ms < ms))
		ms = task_ms;
	if (ms >= 0)
		events |= WL_TIMEOUT;
	(void) WaitLatch(MyLatch, events, ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/* Capped exponential back-off with full jitter. */
static long
BackoffMs(int failures)
{
	double		cap = DkFlushIntervalMs();

	for (int i = 0; i < failures && cap < BACKOFF_CAP_MS; i++)
		cap *= 2;
	cap = Min(cap, BACKOFF_CAP_MS);
	return (long) (pg_prng_double(&pg_global_prng_state) * cap) + 1;
}

static bool WorkerHandleInterrupts(void);

/* A short sleep of the final flush that still serves interrupts (barriers). */
static void
ShutdownSleep(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms,
					 PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	(void) WorkerHandleInterrupts();
}

/* Final flush at shutdown, within the exit work's time (distkit.exit_timeout). */
static void
FinalFlush(MemoryContext cycle_ctx)
{
	int			failures = 0;
	int			quiet = 0;

	while (DkRedisExitWorkLeftMs() > 0)
	{
		int			n = TryFlushCycle(cycle_ctx, &failures);

		if (n == 0 && !DkLaxAnythingPending())
		{
			/* let backends that are finishing an increment land it */
			if (++quiet >= 2)
				return;
			ShutdownSleep(20);
			continue;
		}
		quiet = 0;
		if (n < 0)
			ShutdownSleep(Max(1, Min(Min(BackoffMs(failures), 200), DkRedisExitWorkLeftMs())));
	}
	if (DkLaxAnythingPending())
		ereport(WARNING,
				(errmsg("distkit worker stopped with lax increments not yet in Redis"),
				 errdetail("Redis could not be reached within distkit.exit_timeout (%d ms) of the shutdown request.",
						   DkRedisExitTimeoutMs())));
}

/*
 * After a final flush that left nothing in flight: this instance's flush
 * records guard nothing any more (flush.c); delete them rather than leave
 * them to expire in 7 days (up to 16,384 per server start in a Cluster).
 */
static void
DeleteFlushRecords(void)
{
	int64		n = DkFlushDeleteRecords();

	if (n > 0)
		ereport(LOG,
				(errmsg("distkit worker deleted its " INT64_FORMAT " lax flush record%s", n, n == 1 ? "" : "s")));
}

/*
 * A shutdown request abandons a Redis wait before the final flush, so that
 * a wait bounded by the worker's distkit.command_timeout does not delay the
 * stop (the final flush resends what was in flight); during the final flush
 * it does not.
 */
static bool
ShutdownAbandonsWait(void)
{
	return !stopping;
}

/*
 * Serve interrupts between cycles, as core's background processes do
 * (HandleMainLoopInterrupts, which we cannot use: it exits with status 0
 * on SIGTERM, and the postmaster would not restart us):
 *	- procsignal barriers: DROP DATABASE, DROP TABLESPACE and ALTER
 *	  DATABASE ... SET TABLESPACE wait until every process has absorbed
 *	  theirs (redis.c absorbs them during Redis waits too);
 *	- pg_log_backend_memory_contexts;
 *	- configuration reload;
 *	- a cancel while not waiting for Redis: nothing to abandon.
 * Returns true when a shutdown was requested.
 */
static bool
WorkerHandleInterrupts(void)
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

/* on_shmem_exit callback: unregister the latch. */
static void
FlusherExit(int code, Datum arg)
{
	DkLaxWorkerDetach();
}

/* Entry point of the worker. */
void
DkWorkerMain(Datum main_arg)
{
	MemoryContext cycle_ctx;
	int			failures = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	DkRedisUseOwnCancel("distkit worker", ShutdownAbandonsWait);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("distkit worker");

	DkLaxWorkerAttach();
	on_shmem_exit(FlusherExit, (Datum) 0);
	DkRedisKeepConnection();
	cycle_ctx = AllocSetContextCreate(TopMemoryContext, "distkit flush cycle",
									  ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("distkit worker started (instance %s)", DkLaxInstanceId())));

	for (;;)
	{
		int			n;
		long		task_ms;

		if (WorkerHandleInterrupts())
			break;

		pgstat_report_activity(STATE_RUNNING, NULL);
		n = TryFlushCycle(cycle_ctx, &failures);
		if (ShutdownRequestPending)
			break;
		task_ms = RunDueTasks(cycle_ctx);
		pgstat_report_activity(STATE_IDLE, NULL);

		if (n < 0)
			SleepOnLatch(refused_full ? FullRetryMs(failures) : BackoffMs(failures), task_ms);
		else if (n > 0 && !DkLaxFlushPending())
			SleepOnLatch(DkFlushIntervalMs(), task_ms);	/* a request whose wake-up a Redis wait consumed runs now */
		else if (DkLaxGoIdle())
			SleepOnLatch(-1, task_ms);	/* idle: the next increment sets our latch */
	}

	stopping = true;
	DkRedisBeginExitWork();
	FinalFlush(cycle_ctx);
	RunShutdownTasks(cycle_ctx);
	/* last: mere clean-up, it must not take the shutdown tasks' time */
	if (!DkLaxAnythingPending())
	{
		char	   *error = NULL;

		if (!RunCaught(DeleteFlushRecords, cycle_ctx, &error))
			ereport(LOG,
					(errmsg("distkit worker could not delete its lax flush records at shutdown: %s", error),
					 errdetail("They expire 7 days after their last flush.")));
		MemoryContextReset(cycle_ctx);
	}
	DkRedisEndExitWork();
	proc_exit(1);
}
