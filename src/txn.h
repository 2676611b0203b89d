/*
 * txn.h — transactional counting (distkit.transactional): increments kept
 * in backend memory and applied when the transaction commits, discarded
 * when it (or the subtransaction that made them) rolls back.
 *
 * A primitive whose increments can be deferred is a "kind".  It registers
 * how to read its current value and how to apply a delta, then:
 *
 *	in its increment function:
 *		if (DkTxnActive())
 *			return DkTxnAdd(DK_TXN_xxx, key, delta, mode);
 *	in its read functions, on the value about to be returned:
 *		value = DkTxnSeen(DK_TXN_xxx, key, value);
 *	in functions that overwrite a key immediately (set, del):
 *		DkTxnForget(DK_TXN_xxx, key);		(DkTxnForgetAll for clear)
 */
#ifndef DISTKIT_TXN_H
#define DISTKIT_TXN_H

#include "distkit.h"
#include "redis.h"

typedef enum DkTxnKind
{
	DK_TXN_COUNTER,				/* distkit_inc / distkit_dec (counter.c) */
	DK_TXN_INSTANCE_COUNTER,	/* instance-aware counters */
	DK_TXN_NKINDS
} DkTxnKind;

/*
 * What txn.c needs to know about a kind.  key/keylen is the user key (not
 * NUL-terminated); prefix is distkit.prefix as it was when the increment
 * was made.
 */
typedef struct DkTxnKindOps
{
	/* noun for messages, e.g. "counter": messages say counter "key" */
	const char *what;

	/*
	 * At the call: the value the caller would see now without this
	 * transaction's pending deltas.  Strict: read Redis.  Lax: this server's
	 * view, without I/O if possible; set *buffered = false when the lax
	 * buffer cannot hold the key (its deltas then go to Redis strictly,
	 * before commit).
	 */
	int64		(*current) (text *key, DkMode mode, bool *buffered);

	/*
	 * Before commit (strict mode, and lax deltas the buffer cannot take): a
	 * command adding delta in Redis.  Its reply must be an integer or a
	 * decimal string (anything DkReplyInt64 accepts), or an error reply.
	 * Called with -delta to revert after a failure of another key.
	 */
	DkCmd	   *(*strict_add) (const char *prefix, const char *key, size_t keylen, int64 delta);

	/*
	 * After the commit record (lax mode): add delta to the shared buffer, no
	 * I/O.  Returns false if it cannot (buffer full); may raise an error
	 * (caught).  Either way the delta is then sent with strict_add.
	 */
	bool		(*lax_add) (const char *key, size_t keylen, int64 delta);
} DkTxnKindOps;

extern void DkTxnInit(void);
extern void DkTxnRegisterKind(DkTxnKind kind, const DkTxnKindOps *ops);

/* distkit.transactional is on: increments must go through DkTxnAdd. */
extern bool DkTxnActive(void);

/* Defer an increment; returns the value this transaction now sees. */
extern int64 DkTxnAdd(DkTxnKind kind, text *key, int64 delta, DkMode mode);

/* This transaction's pending delta for (kind, key), all modes. */
extern int64 DkTxnPending(DkTxnKind kind, text *key);

/* value plus this transaction's pending delta for (kind, key). */
extern int64 DkTxnSeen(DkTxnKind kind, text *key, int64 value);

/* Drop this transaction's pending deltas of key (it was just overwritten). */
extern void DkTxnForget(DkTxnKind kind, text *key);

/* Drop every pending delta of kind under the current prefix (after a clear). */
extern void DkTxnForgetAll(DkTxnKind kind);

#endif
