/*-------------------------------------------------------------------------
 *
 * leader.c
 *		Leader election for the fleet: distkit_leader_acquire,
 *		distkit_is_leader, distkit_leader_release, distkit_leader_holder and
 *		the distkit_leaders view.
 *
 * A leadership of "name" is a lease (lua/lease_*.lua) under its own key
 * kinds, <prefix>:ld:{name} with its term counter <prefix>:ldt:{name},
 * owned by this PostgreSQL instance (its instance id) rather than by a
 * session.  A backend acquires it; then the background worker renews it
 * (a DkWorkerAddTask task) every ttl / 3 while the server lives, and
 * releases it when the server stops cleanly.  A crashed server stops
 * renewing, and its leadership expires after ttl.
 *
 * distkit_is_leader never talks to Redis: it reads a small shared-memory
 * table of the names this instance leads, with for each the time until
 * which this server may believe it leads.  That time is measured on the
 * local monotonic clock (CLOCK_BOOTTIME, which also runs during a suspend)
 * from the moment the renewal request was SENT, never from Redis's clock:
 * Redis set the expiry at ttl after it ran the request, which is later, so
 * the local belief ends first.  A drift margin of ttl / 100 + 2 ms (as in
 * Redlock) is taken off for clocks running at slightly different rates.  So
 * when Redis cannot be reached, distkit_is_leader turns false before the
 * leadership could have expired in Redis and been taken by another server.
 *
 * Backends that change leaderships serialise on a heavyweight lock of this
 * instance (so that two acquisitions with different ttls cannot interleave);
 * the worker does not take it but checks each entry's generation, and a
 * backend that changes the ttl of a leadership believes in the shorter of
 * the old and new ttls until the next renewal, so that any interleaving
 * with a renewal in flight stays on the safe side.
 *
 * A renewal that finds the leadership gone (it expired during an outage,
 * or another server holds it) drops the entry and logs it: this server no
 * longer leads until a new distkit_leader_acquire.
 *
 * A server in recovery (a standby) is refused a leadership unless
 * distkit.allow_standby_leader is on: a leader is usually elected to run a
 * job that writes, and a standby cannot write.  Leaderships a standby took
 * with the setting on stay its own after a promotion (same instance id).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "access/xlog.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "shmem.h"
#include "keys.h"
#include "lax.h"
#include "lease.h"
#include "redis.h"
#include "version.h"

PG_FUNCTION_INFO_V1(distkit_leader_acquire);
PG_FUNCTION_INFO_V1(distkit_is_leader);
PG_FUNCTION_INFO_V1(distkit_leader_release);
PG_FUNCTION_INFO_V1(distkit_leader_holder);
PG_FUNCTION_INFO_V1(distkit_leaders);

#define MAX_LEADERSHIPS 64		/* names one instance can lead at once */
#define MIN_LEADER_TTL_MS 100
#define DEFAULT_LEADER_TTL_MS 10000	/* a new leadership acquired without a ttl */
#define RETRY_MAX_US 500000		/* a failed renewal is retried within 0.5 s */
#define IDLE_INTERVAL_MS 60000	/* the task's interval when nothing is led */
#define LEADER_LOCK_KEY 0x44534b4c	/* advisory-lock field of the lock below */

typedef struct DkLeaderEntry
{
	bool		in_use;
	uint64		gen;			/* changes whenever a backend changes the entry */
	char		prefix[DK_MAX_PREFIX_BYTES + 1];
	int			namelen;
	char		name[DK_MAX_KEY_BYTES];
	int64		ttl_ms;
	int64		term;			/* the leadership's token */
	int64		valid_until;	/* monotonic us: believe we lead until then */
	int64		next_renew;		/* monotonic us: the worker renews from then */
	TimestampTz last_renewed;	/* wall clock, for distkit_leaders */
} DkLeaderEntry;

typedef struct DkLeaderShared
{
	LWLock	   *lock;
	Latch	   *worker_latch;	/* set by the renewal task when it runs */
	DkLeaderEntry entries[MAX_LEADERSHIPS];
} DkLeaderShared;

static DkLeaderShared *leaders = NULL;
static bool allow_standby_leader = false;

static void LeaderRenewTask(void);
static int	LeaderRenewIntervalMs(void);
static void LeaderReleaseAll(void);

/* The local monotonic clock in microseconds (also running during a suspend). */
static int64
MonoUs(void)
{
	struct timespec ts;

#ifdef CLOCK_BOOTTIME
	clock_gettime(CLOCK_BOOTTIME, &ts);
#else
	clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* How long after sending a successful request with ttl we may believe we lead. */
static int64
ValidityUs(int64 ttl_ms)
{
	int64		ttl_us = ttl_ms * 1000;
	int64		v = ttl_us - ttl_us / 100 - 2000;

	return Max(v, 0);
}

/* When the worker should renew after a request sent at sent with ttl. */
static int64
RenewAt(int64 sent, int64 ttl_ms)
{
	return sent + ttl_ms * 1000 / 3;
}

/* Size of the region "distkit leaders". */
Size
DkLeaderShmemSize(void)
{
	return sizeof(DkLeaderShared);
}

/* Region init (shmem.c): create or attach to the leadership table. */
void
DkLeaderShmemInit(void *base, bool found, LWLock *lock)
{
	leaders = base;
	if (!found)
	{
		memset(leaders, 0, sizeof(DkLeaderShared));
		leaders->lock = lock;
	}
}

/* distkit.allow_standby_leader; when preloaded: shared memory and the worker's renewal task. */
void
DkLeaderInit(void)
{
	DefineCustomBoolVariable("distkit.allow_standby_leader",
							 "Lets a server in recovery (a standby) acquire leaderships.",
							 "off: distkit_leader_acquire on a standby raises an error, since a leader "
							 "elected there cannot write to its database.",
							 &allow_standby_leader,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	if (!DkPreloaded)
		return;
	DkWorkerAddTask("leader renewal", LeaderRenewTask, LeaderRenewIntervalMs,
					 LeaderReleaseAll);
}

/* Error unless the table exists. */
static void
RequireTable(void)
{
	DkRequirePreload("leader election");
	if (leaders == NULL)
		elog(ERROR, "distkit leader table is not attached");
}

/* Index of the entry for (prefix, name), or -1; lock held. */
static int
FindEntry(const char *prefix, const char *name, int namelen)
{
	for (int i = 0; i < MAX_LEADERSHIPS; i++)
	{
		DkLeaderEntry *e = &leaders->entries[i];

		if (e->in_use && e->namelen == namelen && strcmp(e->prefix, prefix) == 0 &&
			memcmp(e->name, name, namelen) == 0)
			return i;
	}
	return -1;
}

/* Index of a free entry, or -1; lock held. */
static int
FreeEntry(void)
{
	for (int i = 0; i < MAX_LEADERSHIPS; i++)
		if (!leaders->entries[i].in_use)
			return i;
	return -1;
}

/* Description of a leadership for messages: leadership "name". */
static char *
LeaderWhat(text *name)
{
	return psprintf("leadership %s", DkKeyQuote(name));
}

/* Serialise backends that change leaderships of this instance (until commit). */
static void
LockLeaderships(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, InvalidOid, 0, LEADER_LOCK_KEY, 3);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

static void
UnlockLeaderships(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, InvalidOid, 0, LEADER_LOCK_KEY, 3);
	(void) LockRelease(&tag, ExclusiveLock, false);
}

/* Error: the table is full. */
static void
pg_attribute_noreturn()
TooMany(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("this server already leads %d names", MAX_LEADERSHIPS),
			 errhint("Release leaderships this server no longer needs with distkit_leader_release.")));
	pg_unreachable();
}

/*
 * distkit_leader_acquire(name, ttl): make this server the leader of name if
 * nobody else is (renewing it if this server already is); the worker then
 * keeps renewing it.  Returns whether this server leads it now.  A NULL ttl
 * keeps the ttl this server leads name with, or is DEFAULT_LEADER_TTL_MS for
 * a new leadership, so that a periodic call without a ttl never shortens a
 * leadership acquired with a longer one.
 */
Datum
distkit_leader_acquire(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	bool		keep_ttl = PG_ARGISNULL(1);
	int64		ttl_ms = keep_ttl ? DEFAULT_LEADER_TTL_MS : DkArgDurationMs(fcinfo, 1, "ttl", &DK_DURATION_TTL);
	size_t		klen;
	size_t		tklen;
	char	   *key = DkKeyFromText(DK_KIND_LEADER, name, "name", &klen);
	char	   *tkey = DkKeyFromText(DK_KIND_LEADER_TOKEN, name, "name", &tklen);
	const char *prefix = DkKeyPrefix();
	int			namelen = VARSIZE_ANY_EXHDR(name);
	const char *instance;
	char	   *what = LeaderWhat(name);
	int			idx;
	int64		sent;
	TimestampTz sent_wall;
	DkLeaseResult res;
	Latch	   *latch = NULL;

	if (ttl_ms < MIN_LEADER_TTL_MS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl of a leadership must be at least %d ms", MIN_LEADER_TTL_MS),
				 errhint("The worker renews a leadership every ttl / 3.")));
	if (!allow_standby_leader && RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot acquire %s on a server in recovery", what),
				 errdetail("This server is a standby: a leader elected here could not write to its database."),
				 errhint("Acquire it on the primary, or let standbys lead with distkit.allow_standby_leader = on (superuser).")));
	RequireTable();
	instance = DkLaxInstanceId();
	LockLeaderships();

	LWLockAcquire(leaders->lock, LW_SHARED);
	idx = FindEntry(prefix, VARDATA_ANY(name), namelen);
	if (idx < 0 && FreeEntry() < 0)
	{
		LWLockRelease(leaders->lock);
		TooMany();
	}
	/* no ttl: keep the one this server leads with (backends are serialised) */
	if (keep_ttl && idx >= 0)
		ttl_ms = leaders->entries[idx].ttl_ms;
	LWLockRelease(leaders->lock);

	sent = MonoUs();
	sent_wall = GetCurrentTimestamp();
	PG_TRY();
	{
		res = DkLeaseRunAcquire(key, klen, tkey, tklen, instance, instance, ttl_ms, what);
	}
	PG_CATCH();
	{
		/*
		 * Outcome unknown: Redis may have set the new ttl.  Believe in no
		 * more than that, and make a renewal in flight stale.
		 */
		LWLockAcquire(leaders->lock, LW_EXCLUSIVE);
		idx = FindEntry(prefix, VARDATA_ANY(name), namelen);
		if (idx >= 0)
		{
			DkLeaderEntry *e = &leaders->entries[idx];

			e->gen++;
			e->valid_until = Min(e->valid_until, sent + ValidityUs(ttl_ms));
			e->next_renew = Min(e->next_renew, RenewAt(sent, Min(ttl_ms, e->ttl_ms)));
			e->ttl_ms = ttl_ms;
		}
		LWLockRelease(leaders->lock);
		PG_RE_THROW();
	}
	PG_END_TRY();

	LWLockAcquire(leaders->lock, LW_EXCLUSIVE);
	idx = FindEntry(prefix, VARDATA_ANY(name), namelen);
	if (res.held)
	{
		DkLeaderEntry *e;
		int64		believed_ttl = ttl_ms;

		if (idx >= 0)
			believed_ttl = Min(ttl_ms, leaders->entries[idx].ttl_ms);
		else
			idx = FreeEntry();
		if (idx < 0)
		{
			LWLockRelease(leaders->lock);
			(void) DkLeaseRunCheck(DK_LUA_LEASE_RELEASE, key, klen, instance, res.token, 0, what);
			TooMany();
		}
		e = &leaders->entries[idx];
		e->in_use = true;
		e->gen++;
		strlcpy(e->prefix, prefix, sizeof(e->prefix));
		e->namelen = namelen;
		memcpy(e->name, VARDATA_ANY(name), namelen);
		e->ttl_ms = ttl_ms;
		e->term = res.token;
		e->valid_until = sent + ValidityUs(believed_ttl);
		e->next_renew = RenewAt(sent, believed_ttl);
		e->last_renewed = sent_wall;
		latch = leaders->worker_latch;
	}
	else if (idx >= 0)
	{
		/* another server leads it now */
		leaders->entries[idx].in_use = false;
		leaders->entries[idx].gen++;
	}
	LWLockRelease(leaders->lock);
	UnlockLeaderships();
	/* let the worker plan the renewal */
	if (latch)
		SetLatch(latch);
	PG_RETURN_BOOL(res.held);
}

/*
 * distkit_is_leader(name): whether this server leads name, from shared
 * memory only: true while the last successful renewal is recent enough.
 */
Datum
distkit_is_leader(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	int			namelen = (int) DkKeyCheck(name, "name");
	bool		result = false;
	int			idx;

	RequireTable();
	LWLockAcquire(leaders->lock, LW_SHARED);
	idx = FindEntry(DkKeyPrefix(), VARDATA_ANY(name), namelen);
	if (idx >= 0)
		result = MonoUs() < leaders->entries[idx].valid_until;
	LWLockRelease(leaders->lock);
	PG_RETURN_BOOL(result);
}

/*
 * distkit_leader_release(name): stop leading name (at once: this server
 * stops believing it leads before telling Redis); true if this server held
 * the leadership in Redis.
 */
Datum
distkit_leader_release(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	size_t		klen;
	char	   *key = DkKeyFromText(DK_KIND_LEADER, name, "name", &klen);
	int			idx;
	int64		r;

	RequireTable();
	LockLeaderships();
	LWLockAcquire(leaders->lock, LW_EXCLUSIVE);
	idx = FindEntry(DkKeyPrefix(), VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
	if (idx >= 0)
	{
		leaders->entries[idx].in_use = false;
		leaders->entries[idx].gen++;
	}
	LWLockRelease(leaders->lock);
	r = DkLeaseRunCheck(DK_LUA_LEASE_RELEASE, key, klen, DkLaxInstanceId(), 0, 0,
						LeaderWhat(name));
	UnlockLeaderships();
	PG_RETURN_BOOL(r == 1);
}

/* distkit_leader_holder(name): (holder instance, term, expires_in), or no row. */
Datum
distkit_leader_holder(PG_FUNCTION_ARGS)
{
	return DkLeaseHolderRows(fcinfo, DK_KIND_LEADER, "leadership");
}

/*
 * distkit_leaders(): the names this server leads or is renewing under the
 * current prefix: (name, term, ttl, is_leader, valid_for, last_renewed).
 */
Datum
distkit_leaders(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const char *prefix = DkKeyPrefix();
	DkLeaderEntry *copy = palloc(sizeof(DkLeaderEntry) * MAX_LEADERSHIPS);
	int			n = 0;
	int64		now;

	DkCheckSqlVersion();
	RequireTable();
	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(leaders->lock, LW_SHARED);
	now = MonoUs();
	for (int i = 0; i < MAX_LEADERSHIPS; i++)
		if (leaders->entries[i].in_use && strcmp(leaders->entries[i].prefix, prefix) == 0)
			copy[n++] = leaders->entries[i];
	LWLockRelease(leaders->lock);

	for (int i = 0; i < n; i++)
	{
		DkLeaderEntry *e = &copy[i];
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		int64		left_us = Max(e->valid_until - now, 0);
		Interval   *valid_for = palloc0(sizeof(Interval));

		valid_for->time = left_us;
		values[0] = PointerGetDatum(cstring_to_text_with_len(e->name, e->namelen));
		values[1] = Int64GetDatum(e->term);
		values[2] = IntervalPGetDatum(DkMsInterval(e->ttl_ms));
		values[3] = BoolGetDatum(left_us > 0);
		values[4] = IntervalPGetDatum(valid_for);
		values[5] = TimestampTzGetDatum(e->last_renewed);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* The worker's task interval: until the next renewal is due. */
static int
LeaderRenewIntervalMs(void)
{
	int64		now = MonoUs();
	int64		next = -1;

	if (leaders == NULL)
		return IDLE_INTERVAL_MS;
	LWLockAcquire(leaders->lock, LW_SHARED);
	for (int i = 0; i < MAX_LEADERSHIPS; i++)
	{
		DkLeaderEntry *e = &leaders->entries[i];

		if (e->in_use && (next < 0 || e->next_renew < next))
			next = e->next_renew;
	}
	LWLockRelease(leaders->lock);
	if (next < 0)
		return IDLE_INTERVAL_MS;
	if (next <= now)
		return 1;
	return (int) Min((next - now + 999) / 1000, (int64) IDLE_INTERVAL_MS);
}

/* One leadership due for renewal, copied out of shared memory. */
typedef struct DkDue
{
	int			idx;
	uint64		gen;
	char	   *key;
	size_t		klen;
	int64		term;
	int64		ttl_ms;
	char	   *name;
} DkDue;

/*
 * The worker's task: renew every leadership that is due, in one pipelined
 * round trip.  Errors propagate (the worker logs them once per outage); a
 * failed renewal is retried within RETRY_MAX_US.
 */
static void
LeaderRenewTask(void)
{
	DkDue	   *due;
	int			ndue = 0;
	int64		now = MonoUs();
	int64		sent;
	TimestampTz sent_wall;
	DkCmd	  **cmds;
	DkReply   **replies;
	const char *instance = DkLaxInstanceId();
	char	   *error = NULL;
	char	  **lost;
	int			nlost = 0;

	if (leaders == NULL)
		return;
	due = palloc(sizeof(DkDue) * MAX_LEADERSHIPS);
	LWLockAcquire(leaders->lock, LW_EXCLUSIVE);
	leaders->worker_latch = MyLatch;
	for (int i = 0; i < MAX_LEADERSHIPS; i++)
	{
		DkLeaderEntry *e = &leaders->entries[i];
		DkDue	   *d;

		if (!e->in_use || e->next_renew > now)
			continue;
		d = &due[ndue++];
		d->idx = i;
		d->gen = e->gen;
		d->key = DkKeyBuildWithPrefix(e->prefix, DK_KIND_LEADER, e->name, e->namelen, &d->klen);
		d->name = pnstrdup(e->name, e->namelen);
		d->term = e->term;
		d->ttl_ms = e->ttl_ms;
		/* if this attempt fails, try again soon */
		e->next_renew = now + Min(e->ttl_ms * 1000 / 3, RETRY_MAX_US);
	}
	LWLockRelease(leaders->lock);
	if (ndue == 0)
		return;

	cmds = palloc(sizeof(DkCmd *) * ndue);
	for (int i = 0; i < ndue; i++)
	{
		cmds[i] = DkCmdScript(DK_LUA_LEASE_RENEW, 1);
		DkCmdArg(cmds[i], due[i].key, due[i].klen);
		DkCmdArgStr(cmds[i], instance);
		DkCmdArgInt(cmds[i], due[i].term);
		DkCmdArgInt(cmds[i], due[i].ttl_ms);
	}
	sent = MonoUs();
	sent_wall = GetCurrentTimestamp();
	/* a renewal may run twice */
	replies = DkRedisRun(cmds, ndue, DK_IDEMPOTENT);

	lost = palloc(sizeof(char *) * ndue);
	LWLockAcquire(leaders->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ndue; i++)
	{
		DkLeaderEntry *e = &leaders->entries[due[i].idx];
		DkReply    *r = replies[i];

		if (!e->in_use || e->gen != due[i].gen)
			continue;			/* a backend changed it meanwhile */
		if (r->type == DK_REPLY_INTEGER && r->integer == 1)
		{
			e->valid_until = sent + ValidityUs(due[i].ttl_ms);
			e->next_renew = RenewAt(sent, due[i].ttl_ms);
			e->last_renewed = sent_wall;
		}
		else if (r->type == DK_REPLY_INTEGER)
		{
			e->in_use = false;
			e->gen++;
			lost[nlost++] = due[i].name;
		}
		else if (error == NULL)
			error = r->type == DK_REPLY_ERROR ? r->str : "unexpected reply";
	}
	LWLockRelease(leaders->lock);

	for (int i = 0; i < nlost; i++)
		ereport(LOG,
				(errmsg("distkit: this server no longer leads \"%s\"", lost[i]),
				 errdetail("The leadership had expired in Redis, or another server holds it, when the worker came to renew it.")));
	if (error)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("Redis refused a leadership renewal: %s", error)));
}

/*
 * The worker's shutdown action: release every leadership at once, so that
 * another server can take over without waiting for the ttl.  This server
 * stops believing it leads first.
 */
static void
LeaderReleaseAll(void)
{
	DkCmd	  **cmds;
	int			n = 0;
	const char *instance = DkLaxInstanceId();

	if (leaders == NULL)
		return;
	cmds = palloc(sizeof(DkCmd *) * MAX_LEADERSHIPS);
	LWLockAcquire(leaders->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_LEADERSHIPS; i++)
	{
		DkLeaderEntry *e = &leaders->entries[i];
		size_t		klen;
		char	   *key;

		if (!e->in_use)
			continue;
		key = DkKeyBuildWithPrefix(e->prefix, DK_KIND_LEADER, e->name, e->namelen, &klen);
		cmds[n] = DkCmdScript(DK_LUA_LEASE_RELEASE, 1);
		DkCmdArg(cmds[n], key, klen);
		DkCmdArgStr(cmds[n], instance);
		DkCmdArgStr(cmds[n], "0");
		n++;
		e->in_use = false;
		e->gen++;
	}
	LWLockRelease(leaders->lock);
	if (n > 0)
	{
		(void) DkRedisRun(cmds, n, DK_IDEMPOTENT);
		ereport(LOG, (errmsg("distkit released %d leaderships at shutdown", n)));
	}
}
