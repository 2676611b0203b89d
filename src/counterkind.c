/*-------------------------------------------------------------------------
 *
 * counterkind.c
 *		Counting written once for every counter kind (counterkind.h): add,
 *		defer to commit, get with the lax fallback, negate for dec.
 *
 * A kind (counter.c, instance.c) supplies a DkCounterKind: how to build
 * the Redis command of a get, an increment or a deferred increment, how
 * to settle its reply and how to parse it into a view {total, slice}.
 * The rules below then hold for every kind alike:
 *
 * - Strict: one command (plus the kind's settling), whose answer also
 *   becomes this server's lax view of the key (DkLaxAfterStrictAdd).
 * - Lax increment: the shared buffer; the first touch of a key this server
 *   holds no Redis total for reads it once (seeding), and a key the buffer
 *   cannot hold is counted strictly (distkit_stats.strict_fallbacks).
 * - distkit.transactional: the increment is deferred to commit (txn.c),
 *   which applies it through DkCounterTxnCommand or the buffer.
 * - Lax read: this server's view while fresh (distkit.flush_interval);
 *   else Redis is read and the view refreshed; if Redis cannot be reached
 *   (SQLSTATE class 08) a key whose total was read before answers with
 *   the stale view, a key never read raises the connection error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "utils/builtins.h"

#include "counterkind.h"
#include "keys.h"
#include "txn.h"

/* What seeding the buffer's view needs (DkLaxSeedFn's arg). */
typedef struct SeedArg
{
	const DkCounterKind *kind;
	text	   *key;
} SeedArg;

/* "<noun> "key"", for messages. */
char *
DkCounterWhat(const DkCounterKind *kind, text *key)
{
	return psprintf("%s %s", kind->noun, DkKeyQuote(key));
}

/* -delta, or 22003 with a hint naming the kind's increment function. */
int64
DkCounterNegate(const DkCounterKind *kind, int64 delta)
{
	int64		negated;

	if (pg_sub_s64_overflow(0, delta, &negated))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("delta " INT64_FORMAT " cannot be negated", delta),
				 errhint("Use %s with a positive delta instead.", kind->inc_function)));
	return negated;
}

/* The call of op on key under the current prefix (key already checked). */
static DkCounterCall
MakeCall(text *key, DkCounterOp op, int64 value)
{
	DkCounterCall call;

	call.prefix = DkKeyPrefix();
	call.key = VARDATA_ANY(key);
	call.keylen = VARSIZE_ANY_EXHDR(key);
	call.op = op;
	call.value = value;
	return call;
}

/* The kind's final reply to call, given the first one. */
static DkReply *
Settle(const DkCounterKind *kind, const DkCounterCall *call, DkReply *r, DkSafety safety)
{
	return kind->settle ? kind->settle(call, r, safety) : r;
}

/* Run op on key strictly: one round trip, then the kind's settling. */
DkLaxView
DkCounterRun(const DkCounterKind *kind, text *key, DkCounterOp op, int64 value, DkSafety safety)
{
	DkCounterCall call;
	DkReply    *r;

	(void) DkKeyCheck(key, "key");
	call = MakeCall(key, op, value);
	r = DkRedisRunOne(kind->command(&call), safety);
	return kind->parse(Settle(kind, &call, r, safety), DkCounterWhat(kind, key));
}

/* A lax read's Redis view of key; false (nothing raised) if Redis cannot be reached. */
static bool
TryRead(const DkCounterKind *kind, text *key, DkLaxView *value)
{
	DkCounterCall call = MakeCall(key, DK_COUNTER_GET, 0);
	DkCmd	   *cmd = kind->command(&call);
	DkReply   **replies;

	if (!DkRedisRunIfReachable(&cmd, 1, DK_IDEMPOTENT, &replies))
		return false;
	*value = kind->parse(Settle(kind, &call, replies[0], DK_IDEMPOTENT), DkCounterWhat(kind, key));
	return true;
}

/* DkLaxSeedFn: the key's view in Redis (arg: a SeedArg). */
static void
Seed(const char *key, size_t keylen, void *arg, DkLaxView *value)
{
	SeedArg    *sa = (SeedArg *) arg;

	*value = DkCounterRun(sa->kind, sa->key, DK_COUNTER_GET, 0, DK_IDEMPOTENT);
}

/* view plus this transaction's pending increments of key. */
DkLaxView
DkCounterTxnSeen(const DkCounterKind *kind, text *key, DkLaxView view)
{
	view.total = DkTxnSeen(kind->txn_kind, key, view.total);
	if (kind->has_slice)
		view.slice = DkTxnSeen(kind->txn_kind, key, view.slice);
	return view;
}

/*
 * distkit.transactional: defer the increment to commit (txn.c); returns
 * what the transaction then sees.  Lax: the buffer's view (Redis is read
 * once for a key this server holds no total for, and when the buffer
 * cannot hold the key); strict: Redis's.
 */
static DkLaxView
Defer(const DkCounterKind *kind, text *key, int64 delta, DkMode mode)
{
	bool		buffered = true;
	int64		values[2];
	DkLaxView	view;

	if (mode == DK_MODE_LAX)
	{
		SeedArg		sa = {kind, key};

		buffered = DkLaxViewSeeded(kind->lax_kind, VARDATA_ANY(key), DkKeyCheck(key, "key"),
								   Seed, &sa, &view);
	}
	if (mode != DK_MODE_LAX || !buffered)
		view = DkCounterRun(kind, key, DK_COUNTER_GET, 0, DK_IDEMPOTENT);
	values[0] = view.total;
	values[1] = view.slice;
	DkTxnAdd(kind->txn_kind, key, delta, mode, buffered, values, kind->has_slice ? 2 : 1);
	view.total = values[0];
	view.slice = values[1];
	return view;
}

/* A strict increment; its answer also becomes this server's lax view (DkLaxAfterStrictAdd). */
static DkLaxView
StrictAdd(const DkCounterKind *kind, text *key, int64 delta)
{
	size_t		keylen = DkKeyCheck(key, "key");
	DkLaxReadTicket ticket;
	bool		buffered = DkLaxStrictAddTicket(kind->lax_kind, VARDATA_ANY(key), keylen, &ticket);
	DkLaxView	v = DkCounterRun(kind, key, DK_COUNTER_INC, delta, DK_NOT_IDEMPOTENT);

	DkLaxAfterStrictAdd(kind->lax_kind, VARDATA_ANY(key), keylen, buffered ? &ticket : NULL, v);
	return v;
}

/* Add delta in mode; returns the new view (lax: this server's), with pending increments. */
DkLaxView
DkCounterAdd(const DkCounterKind *kind, text *key, int64 delta, DkMode mode)
{
	if (DkTxnActive())
		return Defer(kind, key, delta, mode);
	if (mode == DK_MODE_LAX)
	{
		size_t		keylen = DkKeyCheck(key, "key");
		SeedArg		sa = {kind, key};
		DkLaxView	view;

		if (DkLaxAddSeeded(kind->lax_kind, VARDATA_ANY(key), keylen, delta, Seed, &sa, &view))
			return DkCounterTxnSeen(kind, key, view);
		DkLaxCountStrictFallback();
	}
	return DkCounterTxnSeen(kind, key, StrictAdd(kind, key, delta));
}

/* The current view of key in mode (see counterkind.h), without pending increments. */
DkLaxView
DkCounterGet(const DkCounterKind *kind, text *key, DkMode mode)
{
	DkLaxReadTicket ticket;
	DkLaxReadState state = DK_LAX_NO_ENTRY;
	DkLaxView	view = {0, 0};
	DkLaxView	redis_view;

	if (mode == DK_MODE_LAX)
	{
		state = DkLaxLookupForRead(kind->lax_kind, VARDATA_ANY(key), DkKeyCheck(key, "key"),
								   &view, &ticket);
		if (state == DK_LAX_FRESH)
			return view;
		if (state == DK_LAX_STALE && ticket.known_valid)
		{
			/* Redis unreachable: a lax read answers with this server's view */
			if (!TryRead(kind, key, &redis_view))
				return view;
			return DkLaxStoreRead(kind->lax_kind, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
								  &ticket, redis_view);
		}
	}
	redis_view = DkCounterRun(kind, key, DK_COUNTER_GET, 0, DK_IDEMPOTENT);
	if (state == DK_LAX_STALE)
		redis_view = DkLaxStoreRead(kind->lax_kind, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
									&ticket, redis_view);
	return redis_view;
}

/* Before a strict write of key: this server's buffered increments of it land first. */
void
DkCounterSettleLax(const DkCounterKind *kind, text *key)
{
	if (DkPreloaded)
		DkLaxSettle(kind->lax_kind, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
}

/* After a strict write of key: the buffer's view of it is now view. */
void
DkCounterNoteWrite(const DkCounterKind *kind, text *key, DkLaxView view)
{
	if (DkPreloaded)
		DkLaxAfterStrictWrite(kind->lax_kind, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), view);
}

/* For txn.c: the command applying a deferred delta of key under prefix. */
DkCmd *
DkCounterTxnCommand(const DkCounterKind *kind, const char *prefix, const char *key,
					size_t keylen, int64 delta)
{
	DkCounterCall call = {prefix, key, keylen, DK_COUNTER_TXN_ADD, delta};

	return kind->command(&call);
}

/* For txn.c: the final reply to DkCounterTxnCommand's command, given its first reply r. */
DkReply *
DkCounterTxnSettle(const DkCounterKind *kind, const char *prefix, const char *key,
				   size_t keylen, int64 delta, DkReply *r, DkSafety safety)
{
	DkCounterCall call = {prefix, key, keylen, DK_COUNTER_TXN_ADD, delta};

	return Settle(kind, &call, r, safety);
}
