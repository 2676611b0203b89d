/*-------------------------------------------------------------------------
 *
 * counterkind.h
 *		One table of operations per counter kind, and the counting written
 *		once over it (counterkind.c).
 *
 * distkit has two kinds of counters: simple counters (counter.c, one Redis
 * integer per key) and instance-aware counters (instance.c, one slice per
 * server).  What differs between them is how a Redis command is built and
 * how its reply is parsed; everything else — lax or strict, seeding the
 * buffer's view, deferring to commit (distkit.transactional), a lax read
 * falling back to this server's view while Redis is unreachable, negating
 * a dec — is the same and lives once in counterkind.c, driven by a
 * DkCounterKind.  txn.c applies deferred increments through the same table
 * (txn_add), and the lax buffer counts each kind under its lax_kind.
 *
 * The lax flush has its own small table of per-kind hooks (flush.c,
 * FlushKinds: simple counters grouped in lax_flush.lua calls, instance-aware
 * slices key by key through instance.c's DkInstanceFlush*); folding it into
 * this table is left for later.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DISTKIT_COUNTERKIND_H
#define DISTKIT_COUNTERKIND_H

#include "distkit.h"
#include "lax.h"
#include "redis.h"
#include "txn.h"

/* What a counter command does (each kind maps it to its Redis script and op). */
typedef enum DkCounterOp
{
	DK_COUNTER_GET,				/* read the value(s) */
	DK_COUNTER_INC,				/* add value now, answer the new value(s) */
	DK_COUNTER_TXN_ADD			/* add value at commit: any non-error reply means applied */
} DkCounterOp;

/* One counter command: op with value on key (not NUL-terminated) under prefix. */
typedef struct DkCounterCall
{
	const char *prefix;
	const char *key;
	size_t		keylen;
	DkCounterOp op;
	int64		value;
} DkCounterCall;

/* The table of one counter kind. */
struct DkCounterKind
{
	/* noun for messages, e.g. "counter": messages say counter "key" */
	const char *noun;
	/* the increment function, named in the hint of a dec whose delta cannot be negated */
	const char *inc_function;
	/* the kind's entries in the lax buffer and in transactional counting */
	DkLaxKind	lax_kind;
	DkTxnKind	txn_kind;
	/* the view has this instance's slice too (instance-aware) */
	bool		has_slice;

	/* the Redis command for call */
	DkCmd	   *(*command) (const DkCounterCall *call);

	/*
	 * Settle reply r to call's command (e.g. resend after the live set
	 * changed, register again after DKREAPED); returns the final reply.
	 * Used for every op, DK_COUNTER_TXN_ADD at commit included.  NULL: the
	 * first reply is final.
	 */
	DkReply    *(*settle) (const DkCounterCall *call, DkReply *r, DkSafety safety);

	/* parse a reply to GET or INC into a view; raises the reply's error, naming what */
	DkLaxView	(*parse) (DkReply *r, const char *what);
};

/* "<noun> "key"", for messages. */
extern char *DkCounterWhat(const DkCounterKind *kind, text *key);

/* -delta, or 22003 with a hint naming kind->inc_function. */
extern int64 DkCounterNegate(const DkCounterKind *kind, int64 delta);

/* Run op on key under the current prefix strictly (one round trip, then settle). */
extern DkLaxView DkCounterRun(const DkCounterKind *kind, text *key, DkCounterOp op,
							  int64 value, DkSafety safety);

/*
 * Add delta in mode; returns the new view with this transaction's pending
 * increments (lax: this server's view; distkit.transactional: deferred).
 */
extern DkLaxView DkCounterAdd(const DkCounterKind *kind, text *key, int64 delta, DkMode mode);

/*
 * The current view of key in mode, without this transaction's pending
 * increments.  Lax: this server's view when fresh; else Redis is read,
 * and if Redis cannot be reached a key read before answers with this
 * server's (stale) view.
 */
extern DkLaxView DkCounterGet(const DkCounterKind *kind, text *key, DkMode mode);

/* view plus this transaction's pending increments of key. */
extern DkLaxView DkCounterTxnSeen(const DkCounterKind *kind, text *key, DkLaxView view);

/* Before a strict write of key: this server's buffered increments of it land first. */
extern void DkCounterSettleLax(const DkCounterKind *kind, text *key);

/* After a strict write of key: the buffer's view of it is now view. */
extern void DkCounterNoteWrite(const DkCounterKind *kind, text *key, DkLaxView view);

/* For txn.c: the command applying a deferred delta of key under prefix. */
extern DkCmd *DkCounterTxnCommand(const DkCounterKind *kind, const char *prefix,
								  const char *key, size_t keylen, int64 delta);

/*
 * For txn.c: the final reply to that command, given its first reply r (the
 * kind's settling, e.g. an instance-aware counter registers again and
 * resends after DKREAPED, like any call).
 */
extern DkReply *DkCounterTxnSettle(const DkCounterKind *kind, const char *prefix,
								   const char *key, size_t keylen, int64 delta,
								   DkReply *r, DkSafety safety);

#endif							/* DISTKIT_COUNTERKIND_H */
