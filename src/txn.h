/*
 * txn.h — transactional counting (distkit.transactional): increments kept
 * in backend memory and applied when the transaction commits, discarded
 * when it (or the subtransaction that made them) rolls back.
 *
 * A counter kind (counterkind.h) whose increments can be deferred registers
 * its table (DkTxnRegisterKind, from its init function).  Then counterkind.c
 * (increments, reads) and the kind's own strict writes:
 *
 *	in its increment function, when DkTxnActive():
 *		read the current value(s) without I/O if possible (lax: the
 *		buffer's view), then DkTxnAdd(DK_TXN_xxx, key, delta, mode,
 *		buffered, values, n), which defers the delta and adds this
 *		transaction's pending deltas to the values to return;
 *	in its read functions, on the value about to be returned:
 *		value = DkTxnSeen(DK_TXN_xxx, key, value);
 *	in functions that overwrite a key immediately (set, del):
 *		DkTxnForget(DK_TXN_xxx, key);		(DkTxnForgetAll for clear)
 */
#ifndef DISTKIT_TXN_H
#define DISTKIT_TXN_H

#include "distkit.h"
#include "lax.h"
#include "redis.h"

typedef enum DkTxnKind
{
	DK_TXN_COUNTER,				/* distkit_inc / distkit_dec (counter.c) */
	DK_TXN_INSTANCE_COUNTER,	/* instance-aware counters */
	DK_TXN_NKINDS
} DkTxnKind;

/*
 * A kind's table of operations (counterkind.h): txn.c uses its noun for
 * messages, DkCounterTxnCommand before commit (strict mode, and lax deltas
 * the buffer cannot take; called with -delta to revert after a failure of
 * another key; any reply but an error reply means it was applied) and,
 * after the commit record (lax mode), adds the delta to the shared buffer
 * under its lax_kind, no I/O.
 */
typedef struct DkCounterKind DkCounterKind;

extern void DkTxnInit(void);
extern void DkTxnRegisterKind(const DkCounterKind *kind);

/* distkit.transactional is on: increments must go through DkTxnAdd. */
extern bool DkTxnActive(void);

/*
 * Defer an increment.  values[0..n-1] (what the caller sees now without
 * this transaction's deltas) get the pending deltas added, this one
 * included; 22003 and nothing deferred if one would leave bigint.
 * buffered = false: a lax key the shared buffer cannot hold (sent to Redis
 * before commit instead).
 */
extern void DkTxnAdd(DkTxnKind kind, text *key, int64 delta, DkMode mode, bool buffered,
					 int64 *values, int nvalues);

/* value plus this transaction's pending delta for (kind, key). */
extern int64 DkTxnSeen(DkTxnKind kind, text *key, int64 value);

/* value + pending; 22003 naming key if out of range. */
extern int64 DkTxnAddPending(DkTxnKind kind, text *key, int64 value, int64 pending);

/* Drop this transaction's pending deltas of key (it was just overwritten); returns their sum. */
extern int64 DkTxnForget(DkTxnKind kind, text *key);

/* Drop every pending delta of kind under the current prefix (after a clear). */
extern void DkTxnForgetAll(DkTxnKind kind);

#endif
