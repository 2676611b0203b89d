/*-------------------------------------------------------------------------
 *
 * semaphore.c
 *		Fleet semaphores: distkit_semaphore_acquire, distkit_semaphore_renew,
 *		distkit_semaphore_release and distkit_semaphore_count.
 *
 * A semaphore "name" is the Redis sorted set <prefix>:s:{name} of permit
 * ids scored by their expiry (milliseconds on Redis's clock).  Acquiring is
 * one script (lua/semaphore_acquire.lua) that drops expired permits, counts
 * the others and adds the new one if fewer than permits are held; so a
 * crashed holder's permit stops counting when its ttl passes, and capacity
 * never leaks.  The key expires with its last permit.
 *
 * A permit id is 32 random hexadecimal digits, made here before the first
 * attempt, so a retry after a lost reply finds and renews the same permit.
 * Permits are remembered by the session (lease.c) and released when it
 * ends; renew and release need the permit id, which works from any session.
 *
 * The limit is the caller's: a call with permits = 5 succeeds while fewer
 * than 5 permits are held, whatever limit other callers used.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/memutils.h"

#include "distkit.h"
#include "keys.h"
#include "lease.h"
#include "redis.h"

PG_FUNCTION_INFO_V1(distkit_semaphore_acquire);
PG_FUNCTION_INFO_V1(distkit_semaphore_renew);
PG_FUNCTION_INFO_V1(distkit_semaphore_release);
PG_FUNCTION_INFO_V1(distkit_semaphore_count);

#define PERMIT_BYTES 16
#define PERMIT_LEN (2 * PERMIT_BYTES)

/* Description of a semaphore for messages: semaphore "name". */
static char *
SemWhat(text *name)
{
	return psprintf("semaphore %s", DkKeyQuote(name));
}

/* A new random permit id. */
static char *
NewPermit(void)
{
	uint8		b[PERMIT_BYTES];
	char	   *s = palloc(PERMIT_LEN + 1);

	if (!pg_strong_random(b, sizeof(b)))
		elog(ERROR, "could not generate a random permit id");
	for (int i = 0; i < PERMIT_BYTES; i++)
		snprintf(s + 2 * i, 3, "%02x", b[i]);
	return s;
}

/*
 * A permit argument: not NULL (22004), 32 hexadecimal digits in either case
 * (22023); returned in lower case, the form NewPermit makes.
 */
static char *
PermitArg(FunctionCallInfo fcinfo, int argno)
{
	char	   *p = text_to_cstring(DkArgText(fcinfo, argno, "permit"));
	size_t		len = strlen(p);
	bool		ok = len == PERMIT_LEN;

	for (size_t i = 0; ok && i < len; i++)
		ok = (p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f') ||
			(p[i] >= 'A' && p[i] <= 'F');
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid permit \"%s\"", len > 64 ? "(too long)" : p),
				 errhint("A permit is the value distkit_semaphore_acquire returned: %d hexadecimal digits.",
						 PERMIT_LEN)));
	for (size_t i = 0; i < len; i++)
		if (p[i] >= 'A' && p[i] <= 'F')
			p[i] += 'a' - 'A';
	return p;
}

/* Run a script returning an integer for (key, permit[, ttl]). */
static int64
RunPermitScript(DkLuaScriptId script, const char *key, size_t klen, const char *permit,
				int64 ttl_ms, DkSafety safety, const char *what)
{
	DkCmd	   *cmd = DkCmdScript(script, 1);
	DkReply    *r;

	DkCmdArg(cmd, key, klen);
	DkCmdArgStr(cmd, permit);
	if (ttl_ms > 0)
		DkCmdArgInt(cmd, ttl_ms);
	r = DkRedisRunOne(cmd, safety);
	if (r->type != DK_REPLY_INTEGER && r->type != DK_REPLY_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for %s", what)));
	return DkReplyInt64(r, what);
}

/*
 * distkit_semaphore_acquire(name, permits, ttl, wait): a permit id if fewer
 * than permits are held across the fleet (now or within wait), else NULL.
 */
Datum
distkit_semaphore_acquire(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	int32		permits;
	int64		ttl_ms;
	int64		wait_ms;
	size_t		klen;
	char	   *key;
	char	   *what;
	char	   *permit;
	TimestampTz deadline;
	MemoryContext attempt_ctx;

	DkArgNotNull(fcinfo, 1, "permits");
	permits = PG_GETARG_INT32(1);
	if (permits <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("permits must be positive, not %d", permits),
				 errhint("permits is how many holders the semaphore admits at once.")));
	ttl_ms = DkArgDurationMs(fcinfo, 2, "ttl", &DK_DURATION_TTL);
	wait_ms = DkArgDurationMs(fcinfo, 3, "wait", &DK_DURATION_WAIT);
	key = DkKeyFromText(DK_KIND_SEMAPHORE, name, "name", &klen);
	what = SemWhat(name);
	permit = NewPermit();
	deadline = DkDeadlineAfter(wait_ms);

	/* remembered before sending: a lost reply may still have taken it */
	DkHeldAdd(key, klen, permit);
	attempt_ctx = AllocSetContextCreate(CurrentMemoryContext, "distkit semaphore attempt",
										ALLOCSET_SMALL_SIZES);
	for (int attempt = 0;; attempt++)
	{
		MemoryContext old = MemoryContextSwitchTo(attempt_ctx);
		DkCmd	   *cmd = DkCmdScript(DK_LUA_SEMAPHORE_ACQUIRE, 1);
		DkReply    *r;
		bool		taken;
		int64		hint_ms;

		DkCmdArg(cmd, key, klen);
		DkCmdArgInt(cmd, permits);
		DkCmdArgInt(cmd, ttl_ms);
		DkCmdArgStr(cmd, permit);
		/* the same permit id again renews it: a retry is harmless */
		r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
		if (r->type == DK_REPLY_ERROR)
			DkReplyRaiseError(r, what);
		if (r->type != DK_REPLY_ARRAY || r->nelem != 3)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("unexpected reply from Redis for %s", what)));
		taken = DkReplyInt64(r->elem[0], what) == 1;
		hint_ms = DkReplyInt64(r->elem[2], what);
		MemoryContextSwitchTo(old);
		MemoryContextReset(attempt_ctx);	/* a long wait must not accumulate replies */
		if (taken)
			PG_RETURN_TEXT_P(cstring_to_text(permit));
		if (!DkRetrySleep(deadline, attempt, hint_ms))
			break;
	}
	DkHeldRemove(key, klen, permit);
	PG_RETURN_NULL();
}

/*
 * distkit_semaphore_renew(name, permit, ttl): extend a permit to ttl from
 * now; false if it had expired or was released.
 */
Datum
distkit_semaphore_renew(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	char	   *permit = PermitArg(fcinfo, 1);
	int64		ttl_ms = DkArgDurationMs(fcinfo, 2, "ttl", &DK_DURATION_TTL);
	size_t		klen;
	char	   *key = DkKeyFromText(DK_KIND_SEMAPHORE, name, "name", &klen);
	int64		r = RunPermitScript(DK_LUA_SEMAPHORE_RENEW, key, klen, permit, ttl_ms,
									DK_IDEMPOTENT, SemWhat(name));

	if (r != 1)
		DkHeldRemove(key, klen, permit);
	PG_RETURN_BOOL(r == 1);
}

/*
 * distkit_semaphore_release(name, permit): give a permit back; false if it
 * had expired or was not held.
 */
Datum
distkit_semaphore_release(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	char	   *permit = PermitArg(fcinfo, 1);
	size_t		klen;
	char	   *key = DkKeyFromText(DK_KIND_SEMAPHORE, name, "name", &klen);
	int64		r = RunPermitScript(DK_LUA_SEMAPHORE_RELEASE, key, klen, permit, 0,
									DK_NOT_IDEMPOTENT, SemWhat(name));

	DkHeldRemove(key, klen, permit);
	PG_RETURN_BOOL(r == 1);
}

/* distkit_semaphore_count(name): permits held now (unexpired). */
Datum
distkit_semaphore_count(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	size_t		klen;
	char	   *key = DkKeyFromText(DK_KIND_SEMAPHORE, name, "name", &klen);
	DkCmd	   *cmd = DkCmdScript(DK_LUA_SEMAPHORE_COUNT, 1);
	char	   *what = SemWhat(name);
	DkReply    *r;

	DkCmdArg(cmd, key, klen);
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type != DK_REPLY_INTEGER && r->type != DK_REPLY_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for %s", what)));
	PG_RETURN_INT32((int32) DkReplyInt64(r, what));
}
