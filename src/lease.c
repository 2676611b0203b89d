/*-------------------------------------------------------------------------
 *
 * lease.c
 *		Leases with fencing tokens: distkit_lease_acquire, distkit_lease_renew,
 *		distkit_lease_release and distkit_lease_holder; and what leases and
 *		semaphores share: the session's identity, the list of what it holds
 *		(released when it ends) and waiting between attempts.
 *
 * A lease "name" is the Redis hash <prefix>:l:{name} = {owner, token,
 * holder}, expiring after its ttl on Redis's clock, and its fencing-token
 * counter <prefix>:lt:{name} (same hash slot), which never expires: every
 * acquisition by a new holder takes the next token, so tokens of one name
 * strictly increase and are never reused, also after expiry or release
 * (and, with Redis persistence on, after a Redis restart).  Every change is
 * one Lua script (lua/lease_*.lua).
 *
 * A lease belongs to the session that acquired it.  The session's owner id
 * is instance id (a UUID per postmaster start) : database OID : backend pid :
 * a random nonce (pids are reused); only that session renews or releases
 * it, and only with its token.  The holder text people see is
 * "<instance id>/<database>/<pid>".
 *
 * What the session holds (leases and semaphore permits) is remembered in
 * backend-local memory, added before the request is sent (so that a lost
 * reply still leaves it remembered) and dropped when it is released or
 * found lost.  At session end a before_shmem_exit callback releases all of
 * it in one pipelined round trip bounded by distkit.exit_timeout (a
 * superuser setting: a user's own distkit.command_timeout must not delay
 * pg_terminate_backend or a server stop), ignoring errors: it never keeps
 * a backend from exiting.  After a crash (or a lost Redis) they expire by
 * their ttl.
 *
 * Waiting (wait > 0) polls: one attempt, then a latch sleep of jittered,
 * doubling length (2 ms up to 100 ms, never past the holder's remaining ttl
 * or the deadline), cancellable between and during attempts.  There is no
 * queue: waiters are not served in order.
 *
 * Leases are not transactional: a lease acquired in a transaction that
 * rolls back stays acquired.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "keys.h"
#include "lax.h"
#include "lease.h"
#include "redis.h"

PG_FUNCTION_INFO_V1(distkit_lease_acquire);
PG_FUNCTION_INFO_V1(distkit_lease_renew);
PG_FUNCTION_INFO_V1(distkit_lease_release);
PG_FUNCTION_INFO_V1(distkit_lease_holder);

#define POLL_MIN_MS 2			/* first sleep between attempts */
#define POLL_MAX_MS 100			/* longest sleep between attempts */
#define EXIT_CHUNK 500			/* releases per round trip at session end */

/* A lease (permit NULL) or semaphore permit this session holds. */
typedef struct DkHeld
{
	uint32		hash;
	char	   *key;			/* Redis key, in TopMemoryContext */
	size_t		klen;
	char	   *permit;			/* semaphore permit id, or NULL for a lease */
} DkHeld;

static DkHeld *held = NULL;
static int	nheld = 0;
static int	held_cap = 0;
static bool exit_callback_registered = false;

static char *session_owner = NULL;
static char *session_holder = NULL;

/* Description of a lease for messages: lease "name". */
static char *
LeaseWhat(text *name)
{
	return psprintf("lease %s", DkKeyQuote(name));
}

/* Sets session_owner and session_holder once per backend. */
static void
InitSessionIdentity(void)
{
	uint8		nonce[8];
	char		hex[17];
	char	   *db;

	if (session_owner != NULL)
		return;
	if (!pg_strong_random(nonce, sizeof(nonce)))
		elog(ERROR, "could not generate a random session nonce");
	for (int i = 0; i < 8; i++)
		snprintf(hex + 2 * i, 3, "%02x", nonce[i]);
	db = get_database_name(MyDatabaseId);
	session_holder = MemoryContextStrdup(TopMemoryContext,
										 psprintf("%s/%s/%d", DkLaxInstanceId(),
												  db ? db : "?", MyProcPid));
	session_owner = MemoryContextStrdup(TopMemoryContext,
										psprintf("%s:%u:%d:%s", DkLaxInstanceId(),
												 MyDatabaseId, MyProcPid, hex));
}

/* This session's owner id (see the file header). */
static const char *
SessionOwner(void)
{
	InitSessionIdentity();
	return session_owner;
}

/* Hash of (key, permit). */
static uint32
HeldHash(const char *key, size_t klen, const char *permit)
{
	uint32		h = hash_bytes((const unsigned char *) key, (int) klen);

	if (permit)
		h = hash_combine(h, hash_bytes((const unsigned char *) permit, (int) strlen(permit)));
	return h;
}

/* Index of (key, permit) in held[], or -1. */
static int
HeldFind(const char *key, size_t klen, const char *permit, uint32 hash)
{
	for (int i = 0; i < nheld; i++)
	{
		DkHeld	   *h = &held[i];

		if (h->hash == hash && h->klen == klen && memcmp(h->key, key, klen) == 0 &&
			((h->permit == NULL && permit == NULL) ||
			 (h->permit && permit && strcmp(h->permit, permit) == 0)))
			return i;
	}
	return -1;
}

static void ReleaseHeldAtExit(int code, Datum arg);

/* Remember that this session (may) hold a lease (permit NULL) or permit. */
void
DkHeldAdd(const char *key, size_t klen, const char *permit)
{
	uint32		hash = HeldHash(key, klen, permit);
	DkHeld	   *h;

	if (HeldFind(key, klen, permit, hash) >= 0)
		return;
	if (!exit_callback_registered)
	{
		before_shmem_exit(ReleaseHeldAtExit, (Datum) 0);
		exit_callback_registered = true;
	}
	if (nheld == held_cap)
	{
		int			cap = held_cap ? held_cap * 2 : 16;

		held = held ? repalloc(held, sizeof(DkHeld) * cap) :
			MemoryContextAlloc(TopMemoryContext, sizeof(DkHeld) * cap);
		held_cap = cap;
	}
	h = &held[nheld];
	h->hash = hash;
	h->key = MemoryContextAlloc(TopMemoryContext, klen);
	memcpy(h->key, key, klen);
	h->klen = klen;
	h->permit = permit ? MemoryContextStrdup(TopMemoryContext, permit) : NULL;
	nheld++;
}

/* Forget a lease (permit NULL) or permit this session no longer holds. */
void
DkHeldRemove(const char *key, size_t klen, const char *permit)
{
	int			i = HeldFind(key, klen, permit, HeldHash(key, klen, permit));

	if (i < 0)
		return;
	pfree(held[i].key);
	if (held[i].permit)
		pfree(held[i].permit);
	held[i] = held[--nheld];
}

/*
 * before_shmem_exit callback: release every lease and permit this session
 * holds, in pipelined round trips bounded as a whole by distkit.exit_timeout
 * (redis.c's exit work).
 *
 * During proc_exit an ERROR would be promoted to FATAL (and could not be
 * caught); proc_exit_inprogress is cleared for the duration so that any
 * error here is caught and ignored, and restored after, with the interrupt
 * holdoff count that an ERROR resets.  Interrupts stay held off (proc_exit
 * does that), so a cancel cannot cut this short, and a second SIGTERM only
 * makes the Redis call fail, which is ignored too.
 */
static void
ReleaseHeldAtExit(int code, Datum arg)
{
	MemoryContext ctx;
	MemoryContext old;
	bool		saved_exiting = proc_exit_inprogress;
	uint32		saved_holdoff = InterruptHoldoffCount;
	volatile int released = 0;

	if (nheld == 0)
		return;
	ctx = AllocSetContextCreate(TopMemoryContext, "distkit session end",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(ctx);
	proc_exit_inprogress = false;
	DkRedisBeginExitWork();
	PG_TRY();
	{
		for (int start = 0; start < nheld; start += EXIT_CHUNK)
		{
			int			n = Min(EXIT_CHUNK, nheld - start);
			DkCmd	  **cmds = palloc(sizeof(DkCmd *) * n);

			for (int i = 0; i < n; i++)
			{
				DkHeld	   *h = &held[start + i];

				if (h->permit)
				{
					cmds[i] = DkCmdScript(DK_LUA_SEMAPHORE_RELEASE, 1);
					DkCmdArg(cmds[i], h->key, h->klen);
					DkCmdArgStr(cmds[i], h->permit);
				}
				else
				{
					/* leases are only added after InitSessionIdentity */
					cmds[i] = DkCmdScript(DK_LUA_LEASE_RELEASE, 1);
					DkCmdArg(cmds[i], h->key, h->klen);
					DkCmdArgStr(cmds[i], session_owner);
					DkCmdArgStr(cmds[i], "0");
				}
			}
			/* releasing twice is harmless: a retry on a new connection is fine */
			(void) DkRedisRun(cmds, n, DK_IDEMPOTENT);
			released += n;
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ctx);
		FlushErrorState();
		DkRedisDisconnect();
	}
	PG_END_TRY();
	DkRedisEndExitWork();
	/* an ERROR resets the holdoff count: hold interrupts off again */
	InterruptHoldoffCount = saved_holdoff;
	proc_exit_inprogress = saved_exiting;
	MemoryContextSwitchTo(old);
	elog(DEBUG1, "distkit released %d of %d leases and permits at session end",
		 released, nheld);
	nheld = 0;
	MemoryContextDelete(ctx);
}

/* Now + ms. */
TimestampTz
DkDeadlineAfter(int64 ms)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
}

/*
 * Sleep before attempt number attempt + 1, unless deadline has passed
 * (then return false).  The sleep is jittered (half to all of a length that
 * doubles from POLL_MIN_MS to POLL_MAX_MS), no longer than hint_ms + 1 when
 * hint_ms > 0 (when the holder's lease ends) and never past the deadline.
 * Cancellable: the latch wakes it and CHECK_FOR_INTERRUPTS runs after.
 */
bool
DkRetrySleep(TimestampTz deadline, int attempt, int64 hint_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		left;
	int64		len;
	int64		ms;

	if (now >= deadline)
		return false;
	left = TimestampDifferenceMilliseconds(now, deadline);
	len = Min((int64) POLL_MAX_MS, (int64) POLL_MIN_MS << Min(attempt, 10));
	if (hint_ms > 0)
		len = Min(len, hint_ms + 1);
	ms = len / 2 + (int64) pg_prng_uint64_range(&pg_global_prng_state, 0, len - len / 2);
	ms = Max(1, Min(ms, left));
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 (long) ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return true;
}

/* An interval of ms milliseconds. */
Interval *
DkMsInterval(int64 ms)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = ms * 1000;
	return iv;
}

/* An unexpected reply: error. */
static void
pg_attribute_noreturn()
UnexpectedReply(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_SYSTEM_ERROR),
			 errmsg("unexpected reply from Redis for %s", what)));
	pg_unreachable();
}

/*
 * Run lua/lease_acquire.lua once.  Acquiring again with the same owner
 * renews and returns the same token, so a retry after a lost reply is
 * harmless (DK_IDEMPOTENT).
 */
DkLeaseResult
DkLeaseRunAcquire(const char *key, size_t klen, const char *tkey, size_t tklen,
				  const char *owner, const char *holder, int64 ttl_ms, const char *what)
{
	DkCmd	   *cmd = DkCmdScript(DK_LUA_LEASE_ACQUIRE, 2);
	DkReply    *r;
	DkLeaseResult res;

	DkCmdArg(cmd, key, klen);
	DkCmdArg(cmd, tkey, tklen);
	DkCmdArgStr(cmd, owner);
	DkCmdArgStr(cmd, holder);
	DkCmdArgInt(cmd, ttl_ms);
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem != 3)
		UnexpectedReply(what);
	res.held = DkReplyInt64(r->elem[0], what) == 1;
	res.token = DkReplyInt64(r->elem[1], what);
	res.ms = DkReplyInt64(r->elem[2], what);
	return res;
}

/*
 * Run lua/lease_renew.lua (ttl_ms > 0) or lua/lease_release.lua (ttl_ms 0)
 * for owner and token (0: any); returns the script's 1, 0 or -1.
 */
int64
DkLeaseRunCheck(int script, const char *key, size_t klen, const char *owner,
				int64 token, int64 ttl_ms, const char *what)
{
	DkCmd	   *cmd = DkCmdScript((DkLuaScriptId) script, 1);
	DkReply    *r;

	DkCmdArg(cmd, key, klen);
	DkCmdArgStr(cmd, owner);
	DkCmdArgInt(cmd, token);
	if (script == DK_LUA_LEASE_RENEW)
		DkCmdArgInt(cmd, ttl_ms);
	/* a renewal may run twice; a release run twice would answer 0 */
	r = DkRedisRunOne(cmd, script == DK_LUA_LEASE_RENEW ? DK_IDEMPOTENT : DK_NOT_IDEMPOTENT);
	if (r->type != DK_REPLY_INTEGER && r->type != DK_REPLY_ERROR)
		UnexpectedReply(what);
	return DkReplyInt64(r, what);
}

/*
 * The rows of distkit_lease_holder / distkit_leader_holder: none when
 * nobody holds the lease of this kind, else (holder, token, expires_in).
 */
Datum
DkLeaseHolderRows(FunctionCallInfo fcinfo, const char *kind, const char *what_kind)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *name = DkArgText(fcinfo, 0, "name");
	size_t		klen;
	char	   *key = DkKeyFromText(kind, name, "name", &klen);
	char	   *what = psprintf("%s %s", what_kind, DkKeyQuote(name));
	DkCmd	   *cmd = DkCmdScript(DK_LUA_LEASE_HOLDER, 1);
	DkReply    *r;

	InitMaterializedSRF(fcinfo, 0);
	DkCmdArg(cmd, key, klen);
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, what);
	if (r->type != DK_REPLY_ARRAY || (r->nelem != 0 && r->nelem != 3))
		UnexpectedReply(what);
	if (r->nelem == 3)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		int64		pttl = DkReplyInt64(r->elem[2], what);

		if (r->elem[0]->type != DK_REPLY_STRING)
			UnexpectedReply(what);
		values[0] = PointerGetDatum(cstring_to_text_with_len(r->elem[0]->str, r->elem[0]->len));
		values[1] = Int64GetDatum(DkReplyInt64(r->elem[1], what));
		if (pttl < 0)
			nulls[2] = true;	/* no expiry: written by someone else */
		else
			values[2] = IntervalPGetDatum(DkMsInterval(pttl));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* A token argument: not NULL (22004), positive (22023). */
static int64
TokenArg(FunctionCallInfo fcinfo, int argno)
{
	int64		token = DkArgInt64(fcinfo, argno, "token");

	if (token <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token must be positive, not " INT64_FORMAT, token),
				 errhint("A token is the value distkit_lease_acquire returned (1 and up).")));
	return token;
}

/*
 * distkit_lease_acquire(name, ttl, wait): acquire the lease for this
 * session; returns its fencing token, or NULL if another holder keeps it
 * for longer than wait.  Acquiring a lease this session holds renews it
 * (new ttl) and returns the same token.
 */
Datum
distkit_lease_acquire(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	int64		ttl_ms = DkArgDurationMs(fcinfo, 1, "ttl", &DK_DURATION_TTL);
	int64		wait_ms = DkArgDurationMs(fcinfo, 2, "wait", &DK_DURATION_WAIT);
	size_t		klen;
	size_t		tklen;
	char	   *key = DkKeyFromText(DK_KIND_LEASE, name, "name", &klen);
	char	   *tkey = DkKeyFromText(DK_KIND_LEASE_TOKEN, name, "name", &tklen);
	char	   *what = LeaseWhat(name);
	TimestampTz deadline;
	MemoryContext attempt_ctx;

	DkRequirePreload("a lease");
	InitSessionIdentity();
	deadline = DkDeadlineAfter(wait_ms);
	/* remembered before sending: a lost reply may still have acquired it */
	DkHeldAdd(key, klen, NULL);
	attempt_ctx = AllocSetContextCreate(CurrentMemoryContext, "distkit lease attempt",
										ALLOCSET_SMALL_SIZES);
	for (int attempt = 0;; attempt++)
	{
		MemoryContext old = MemoryContextSwitchTo(attempt_ctx);
		DkLeaseResult res = DkLeaseRunAcquire(key, klen, tkey, tklen, session_owner,
											  session_holder, ttl_ms, what);

		MemoryContextSwitchTo(old);
		MemoryContextReset(attempt_ctx);	/* a long wait must not accumulate replies */
		if (res.held)
			PG_RETURN_INT64(res.token);
		if (!DkRetrySleep(deadline, attempt, res.ms))
			break;
	}
	DkHeldRemove(key, klen, NULL);
	PG_RETURN_NULL();
}

/*
 * distkit_lease_renew(name, token, ttl): extend this session's lease to
 * ttl from now; false if it was lost (expired, released, taken, or held
 * under another token).
 */
Datum
distkit_lease_renew(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	int64		token = TokenArg(fcinfo, 1);
	int64		ttl_ms = DkArgDurationMs(fcinfo, 2, "ttl", &DK_DURATION_TTL);
	size_t		klen;
	char	   *key = DkKeyFromText(DK_KIND_LEASE, name, "name", &klen);
	int64		r;

	DkRequirePreload("a lease");
	r = DkLeaseRunCheck(DK_LUA_LEASE_RENEW, key, klen, SessionOwner(), token, ttl_ms,
						LeaseWhat(name));
	if (r == 0)
		DkHeldRemove(key, klen, NULL);
	PG_RETURN_BOOL(r == 1);
}

/*
 * distkit_lease_release(name, token): release this session's lease; false
 * if this session does not hold it with that token.
 */
Datum
distkit_lease_release(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	int64		token = TokenArg(fcinfo, 1);
	size_t		klen;
	char	   *key = DkKeyFromText(DK_KIND_LEASE, name, "name", &klen);
	int64		r;

	DkRequirePreload("a lease");
	r = DkLeaseRunCheck(DK_LUA_LEASE_RELEASE, key, klen, SessionOwner(), token, 0,
						LeaseWhat(name));
	if (r >= 0)
		DkHeldRemove(key, klen, NULL);
	PG_RETURN_BOOL(r == 1);
}

/* distkit_lease_holder(name): (holder, token, expires_in), or no row when free. */
Datum
distkit_lease_holder(PG_FUNCTION_ARGS)
{
	return DkLeaseHolderRows(fcinfo, DK_KIND_LEASE, "lease");
}
