/*-------------------------------------------------------------------------
 *
 * txn.c
 *		Transactional counting: increments that follow COMMIT and ROLLBACK
 *		(distkit.transactional).
 *
 * With distkit.transactional on, distkit_inc/distkit_dec do not touch Redis
 * or the lax buffer: the delta is kept in this backend's memory, summed per
 * (kind, mode, prefix, key), one running delta per subtransaction nesting
 * level that touched the key.  Then:
 *	- a subtransaction that rolls back (ROLLBACK TO SAVEPOINT, a PL/pgSQL
 *	  exception block) discards the deltas of its level; one that commits
 *	  adds them to its parent's level;
 *	- XACT_EVENT_PRE_COMMIT: strict deltas (and lax deltas the buffer could
 *	  not hold) go to Redis in one pipelined round trip, one command per key
 *	  (chunks of TXN_CHUNK keys).  An error aborts the transaction; deltas
 *	  of other keys Redis had already applied are reverted first;
 *	- XACT_EVENT_COMMIT (after the commit record, where errors are not
 *	  allowed): lax deltas are added to the shared-memory buffer, no I/O;
 *	- XACT_EVENT_ABORT: everything is dropped;
 *	- XACT_EVENT_PRE_PREPARE: PREPARE TRANSACTION with pending deltas is an
 *	  error (they could not follow COMMIT PREPARED from another session).
 * Reads add this transaction's pending deltas of the key (DkTxnSeen), and
 * an increment returns the value the transaction then sees: the current
 * value (strict: one Redis read; lax: this server's buffer view, no I/O)
 * plus its pending deltas.  distkit_set/del/clear drop the transaction's
 * pending deltas of the keys they overwrite, so that a transaction sees
 * its own statements in order.
 *
 * Counter kinds (simple and instance-aware) plug in their table of
 * operations (counterkind.h) with DkTxnRegisterKind.  The memory lives in
 * txn_cxt, a child of TopMemoryContext reset at the end of every
 * transaction that used it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "counterkind.h"
#include "distkit.h"
#include "keys.h"
#include "lax.h"
#include "redis.h"
#include "txn.h"

/* Keys per pipelined round trip at commit: each trip stays well within distkit.command_timeout. */
#define TXN_CHUNK 1000

/* Identity of a pending delta: kind, mode and "<prefix>\0<key>". */
typedef struct TxnKey
{
	const char *name;
	uint32		namelen;
	uint32		hash;
	uint16		prefixlen;
	uint8		kind;
	uint8		mode;
} TxnKey;

/* The delta made at one subtransaction nesting level. */
typedef struct TxnFrame
{
	int			level;
	int64		delta;
} TxnFrame;

typedef struct TxnItem
{
	TxnKey		key;
	int64		total;			/* sum of frames[] */
	int			nframes;		/* levels, innermost last */
	int			maxframes;
	TxnFrame   *frames;
	bool		lax_fallback;	/* lax, but the buffer could not hold the key */
	bool		sent;			/* applied in Redis at pre-commit */
} TxnItem;

typedef struct TxnSlot
{
	TxnKey		key;
	char		status;
	TxnItem    *item;
} TxnSlot;

#define SH_PREFIX txnhash
#define SH_ELEMENT_TYPE TxnSlot
#define SH_KEY_TYPE TxnKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) ((k).hash)
#define SH_EQUAL(tb, a, b) ((a).hash == (b).hash && (a).kind == (b).kind && \
							(a).mode == (b).mode && (a).namelen == (b).namelen && \
							memcmp((a).name, (b).name, (a).namelen) == 0)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static bool txn_enabled = false;
static const DkCounterKind *kind_ops[DK_TXN_NKINDS];

/* State of the current transaction; txn_hash == NULL: nothing deferred. */
static MemoryContext txn_cxt = NULL;
static txnhash_hash *txn_hash = NULL;
static TxnItem **txn_items = NULL;	/* in order of first use */
static int	txn_nitems = 0;
static int	txn_maxitems = 0;
static List **txn_touched = NULL;	/* per level: items with a frame there */
static int	txn_maxlevel = 0;
static bool txn_committing = false;

static void TxnXactCallback(XactEvent event, void *arg);
static void TxnSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
							   SubTransactionId parentSubid, void *arg);

/* Defines distkit.transactional and installs the transaction callbacks. */
void
DkTxnInit(void)
{
	DefineCustomBoolVariable("distkit.transactional",
							 "Makes distkit_inc and distkit_dec follow the outcome of the transaction.",
							 "on: increments are applied when the transaction commits and discarded "
							 "when it, or the subtransaction that made them, rolls back.",
							 &txn_enabled,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	RegisterXactCallback(TxnXactCallback, NULL);
	RegisterSubXactCallback(TxnSubXactCallback, NULL);
}

/* Plug in a counter kind whose increments can be deferred. */
void
DkTxnRegisterKind(const DkCounterKind *kind)
{
	Assert(kind->txn_kind >= 0 && kind->txn_kind < DK_TXN_NKINDS);
	kind_ops[kind->txn_kind] = kind;
}

/* True when increments must be deferred (distkit.transactional). */
bool
DkTxnActive(void)
{
	return txn_enabled;
}

static const DkCounterKind *
KindOps(DkTxnKind kind)
{
	if (kind < 0 || kind >= DK_TXN_NKINDS || kind_ops[kind] == NULL)
		elog(ERROR, "distkit: transactional kind %d is not registered", (int) kind);
	return kind_ops[kind];
}

/* ---------------------------------------------------------------- memory */

/* Forget everything deferred (end of transaction). */
static void
TxnReset(void)
{
	txn_committing = false;
	if (txn_hash == NULL)
		return;
	MemoryContextReset(txn_cxt);
	txn_hash = NULL;
	txn_items = NULL;
	txn_nitems = txn_maxitems = 0;
	txn_touched = NULL;
	txn_maxlevel = 0;
}

/* Make the structures of the current transaction exist. */
static void
TxnEnsure(void)
{
	if (txn_hash != NULL)
		return;
	if (txn_cxt == NULL)
		txn_cxt = AllocSetContextCreate(TopMemoryContext, "distkit transactional increments",
										ALLOCSET_DEFAULT_SIZES);
	txn_hash = txnhash_create(txn_cxt, 16, NULL);
	txn_maxitems = 16;
	txn_items = MemoryContextAlloc(txn_cxt, sizeof(TxnItem *) * txn_maxitems);
	txn_maxlevel = 8;
	txn_touched = MemoryContextAllocZero(txn_cxt, sizeof(List *) * txn_maxlevel);
}

/* Fill *k for (kind, mode, prefix, key); name points to buf, or palloc'd memory. */
static void
MakeKey(TxnKey *k, DkTxnKind kind, DkMode mode, const char *prefix,
		const char *key, size_t keylen, char *buf, size_t bufsize)
{
	size_t		plen = strlen(prefix);
	size_t		len = plen + 1 + keylen;
	char	   *name = len <= bufsize ? buf : palloc(len);

	memcpy(name, prefix, plen + 1);
	memcpy(name + plen + 1, key, keylen);
	k->name = name;
	k->namelen = (uint32) len;
	k->prefixlen = (uint16) plen;
	k->kind = (uint8) kind;
	k->mode = (uint8) mode;
	k->hash = hash_combine(hash_bytes((const unsigned char *) name, (int) len),
						   (uint32) kind * 2 + (uint32) mode);
}

/* The pending item of (kind, mode, current prefix, key); created if asked. */
static TxnItem *
FindItem(DkTxnKind kind, DkMode mode, const char *key, size_t keylen, bool create)
{
	char		buf[256];
	TxnKey		k;
	TxnSlot    *slot;
	bool		found;
	TxnItem    *item;
	char	   *name;

	if (txn_hash == NULL)
	{
		if (!create)
			return NULL;
		TxnEnsure();
	}
	MakeKey(&k, kind, mode, DkKeyPrefix(), key, keylen, buf, sizeof(buf));
	if (!create)
	{
		slot = txnhash_lookup(txn_hash, k);
		return slot ? slot->item : NULL;
	}
	slot = txnhash_lookup(txn_hash, k);
	if (slot != NULL)
		return slot->item;

	/*
	 * Allocate everything before inserting: an out-of-memory error (caught,
	 * say, by an exception block) must not leave an entry without its item,
	 * or an item the commit would not visit.
	 */
	if (txn_nitems == txn_maxitems)
	{
		txn_items = repalloc(txn_items, sizeof(TxnItem *) * txn_maxitems * 2);
		txn_maxitems *= 2;
	}
	item = MemoryContextAllocZero(txn_cxt, sizeof(TxnItem));
	name = MemoryContextAlloc(txn_cxt, k.namelen);
	memcpy(name, k.name, k.namelen);
	item->key = k;
	item->key.name = name;
	item->maxframes = 2;
	item->frames = MemoryContextAlloc(txn_cxt, sizeof(TxnFrame) * item->maxframes);
	slot = txnhash_insert(txn_hash, item->key, &found);	/* keyed by the copied name */
	slot->item = item;
	txn_items[txn_nitems++] = item;
	return item;
}

/* The user key of an item, and a description for messages. */
static const char *
ItemKey(const TxnItem *item, size_t *keylen)
{
	*keylen = item->key.namelen - item->key.prefixlen - 1;
	return item->key.name + item->key.prefixlen + 1;
}

static char *
ItemWhat(const TxnItem *item)
{
	size_t		keylen;
	const char *key = ItemKey(item, &keylen);

	return psprintf("%s %s", KindOps(item->key.kind)->noun,
					DkKeyQuote(cstring_to_text_with_len(key, (int) keylen)));
}

/* Remember that item has a frame at level (for the end of that subtransaction). */
static void
Touch(TxnItem *item, int level)
{
	MemoryContext old;

	if (level >= txn_maxlevel)
	{
		int			newmax = Max(txn_maxlevel * 2, level + 1);

		txn_touched = repalloc(txn_touched, sizeof(List *) * newmax);
		memset(txn_touched + txn_maxlevel, 0, sizeof(List *) * (newmax - txn_maxlevel));
		txn_maxlevel = newmax;
	}
	old = MemoryContextSwitchTo(txn_cxt);
	txn_touched[level] = lappend(txn_touched[level], item);
	MemoryContextSwitchTo(old);
}

/*
 * Add delta at nesting level.  Every sum of the innermost frames (what a
 * chain of subtransaction commits will add up) must stay a bigint, so that
 * merging at subtransaction commit, where errors are not allowed, cannot
 * overflow.
 */
static void
PushDelta(TxnItem *item, int level, int64 delta)
{
	int64		suffix = 0;
	int64		sum;

	for (int i = item->nframes - 1; i >= 0; i--)
	{
		suffix += item->frames[i].delta;	/* fits: checked when added */
		if (pg_add_s64_overflow(suffix, delta, &sum))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("pending increments of %s would overflow bigint", ItemWhat(item)),
					 errdetail("This transaction has " INT64_FORMAT " pending; the delta is " INT64_FORMAT ".",
							   item->total, delta),
					 errhint("Counters hold values from -9223372036854775808 to 9223372036854775807.")));
	}
	if (item->nframes > 0 && item->frames[item->nframes - 1].level == level)
		item->frames[item->nframes - 1].delta += delta;
	else
	{
		if (item->nframes == item->maxframes)
		{
			item->maxframes *= 2;
			item->frames = repalloc(item->frames, sizeof(TxnFrame) * item->maxframes);
		}
		item->frames[item->nframes].level = level;
		item->frames[item->nframes].delta = delta;
		item->nframes++;
		Touch(item, level);
	}
	item->total += delta;
}

/* Sum of the pending deltas of (kind, key) in every mode; false on overflow. */
static bool
PendingSum(DkTxnKind kind, const char *key, size_t keylen, int64 *sum)
{
	TxnItem    *strict;
	TxnItem    *lax;

	*sum = 0;
	if (txn_hash == NULL)
		return true;
	strict = FindItem(kind, DK_MODE_STRICT, key, keylen, false);
	lax = FindItem(kind, DK_MODE_LAX, key, keylen, false);
	return !pg_add_s64_overflow(strict ? strict->total : 0, lax ? lax->total : 0, sum);
}

/* ---------------------------------------------------------------- API */

/*
 * Defer an increment of (kind, key) by delta in mode.  values[0..nvalues-1]
 * are what the caller sees now without this transaction's pending deltas
 * (a counter's value; an instance-aware counter's total and slice); on
 * return each has the pending deltas, this one included, added.  Raises
 * 22003 and defers nothing if any of them would leave bigint.  buffered is
 * false when a lax key has no room in the shared buffer: its deltas then go
 * to Redis before commit, like strict ones.
 */
void
DkTxnAdd(DkTxnKind kind, text *key, int64 delta, DkMode mode, bool buffered,
		 int64 *values, int nvalues)
{
	const DkCounterKind *ops = KindOps(kind);
	size_t		keylen = DkKeyCheck(key, "key");
	int64		pending;
	int64		after;
	TxnItem    *item;

	if (IsParallelWorker())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("transactional distkit increments cannot be made in a parallel worker"),
				 errhint("Keep the functions calling distkit_inc PARALLEL UNSAFE.")));
	if (txn_committing)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot defer an increment of %s while the transaction commits",
						psprintf("%s %s", ops->noun, DkKeyQuote(key))),
				 errhint("Make the increment before COMMIT, or with distkit.transactional off.")));

	if (!PendingSum(kind, VARDATA_ANY(key), keylen, &pending) ||
		pg_add_s64_overflow(pending, delta, &after))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("pending increments of %s would overflow bigint",
						psprintf("%s %s", ops->noun, DkKeyQuote(key))),
				 errdetail("This transaction has " INT64_FORMAT " pending; the delta is " INT64_FORMAT ".",
						   pending, delta),
				 errhint("Counters hold values from -9223372036854775808 to 9223372036854775807.")));
	for (int i = 0; i < nvalues; i++)
	{
		int64		seen;

		if (pg_add_s64_overflow(values[i], after, &seen))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("%s would overflow bigint", psprintf("%s %s", ops->noun, DkKeyQuote(key))),
					 errdetail("The value is " INT64_FORMAT ", this transaction's pending increments add "
							   INT64_FORMAT " and the delta is " INT64_FORMAT ".",
							   values[i], pending, delta),
					 errhint("Counters hold values from -9223372036854775808 to 9223372036854775807.")));
	}
	if (delta != 0)
	{
		item = FindItem(kind, mode, VARDATA_ANY(key), keylen, true);
		PushDelta(item, GetCurrentTransactionNestLevel(), delta);
		if (!buffered)
			item->lax_fallback = true;
	}
	for (int i = 0; i < nvalues; i++)
		values[i] += after;		/* checked above */
}

/* This transaction's pending delta of (kind, key), summed over modes. */
static int64
TxnPending(DkTxnKind kind, text *key)
{
	int64		sum;

	if (txn_hash == NULL)
		return 0;
	if (!PendingSum(kind, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), &sum))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("pending increments of %s overflow bigint",
						psprintf("%s %s", KindOps(kind)->noun, DkKeyQuote(key))),
				 errhint("Counters hold values from -9223372036854775808 to 9223372036854775807.")));
	return sum;
}

/* value (read from Redis or the buffer) plus this transaction's pending delta. */
int64
DkTxnSeen(DkTxnKind kind, text *key, int64 value)
{
	if (txn_hash == NULL)
		return value;
	return DkTxnAddPending(kind, key, value, TxnPending(kind, key));
}

/* value + pending (a sum DkTxnForget returned); 22003 naming key if out of range. */
int64
DkTxnAddPending(DkTxnKind kind, text *key, int64 value, int64 pending)
{
	int64		seen;

	if (pg_add_s64_overflow(value, pending, &seen))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s with this transaction's pending increments is out of bigint range",
						psprintf("%s %s", KindOps(kind)->noun, DkKeyQuote(key))),
				 errdetail("The value is " INT64_FORMAT "; this transaction's pending increments add "
						   INT64_FORMAT ".", value, pending),
				 errhint("Counters hold values from -9223372036854775808 to 9223372036854775807.")));
	return seen;
}

/* Drop the pending deltas of an item (its key was overwritten). */
static void
ClearItem(TxnItem *item)
{
	item->nframes = 0;
	item->total = 0;
}

/*
 * key was just set or deleted: its earlier pending deltas are superseded.
 * Returns their sum (what the transaction saw on top of the old value);
 * they are dropped before any error, so a failure after the overwrite
 * cannot leave them to be applied to the new value.
 */
int64
DkTxnForget(DkTxnKind kind, text *key)
{
	size_t		keylen = VARSIZE_ANY_EXHDR(key);
	TxnItem    *item;
	int64		sum;
	bool		ok;

	if (txn_hash == NULL)
		return 0;
	ok = PendingSum(kind, VARDATA_ANY(key), keylen, &sum);
	if ((item = FindItem(kind, DK_MODE_STRICT, VARDATA_ANY(key), keylen, false)) != NULL)
		ClearItem(item);
	if ((item = FindItem(kind, DK_MODE_LAX, VARDATA_ANY(key), keylen, false)) != NULL)
		ClearItem(item);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("pending increments of %s overflow bigint",
						psprintf("%s %s", KindOps(kind)->noun, DkKeyQuote(key))),
				 errdetail("They were dropped: the key was just overwritten."),
				 errhint("Counters hold values from -9223372036854775808 to 9223372036854775807.")));
	return sum;
}

/* Every key of kind under the current prefix was just deleted. */
void
DkTxnForgetAll(DkTxnKind kind)
{
	const char *prefix = DkKeyPrefix();
	size_t		plen = strlen(prefix);

	for (int i = 0; i < txn_nitems; i++)
	{
		TxnItem    *item = txn_items[i];

		if (item->key.kind == kind && item->key.prefixlen == plen &&
			memcmp(item->key.name, prefix, plen) == 0)
			ClearItem(item);
	}
}

/* ---------------------------------------------------------------- subtransactions */

/*
 * End of the subtransaction at level: on commit its deltas join the parent
 * level, on abort they are dropped.  Only items with a frame at level are
 * visited.  No errors here but out of memory (Touch).
 */
static void
EndSubXact(int level, bool commit)
{
	ListCell   *lc;
	List	   *items;

	if (level >= txn_maxlevel || txn_touched[level] == NIL)
		return;
	items = txn_touched[level];
	txn_touched[level] = NIL;
	foreach(lc, items)
	{
		TxnItem    *item = lfirst(lc);
		TxnFrame   *top;

		/* skip items cleared since (DkTxnForget) or already handled */
		if (item->nframes == 0 || item->frames[item->nframes - 1].level != level)
			continue;
		top = &item->frames[item->nframes - 1];
		if (!commit)
		{
			item->total -= top->delta;
			item->nframes--;
		}
		else if (item->nframes >= 2 && item->frames[item->nframes - 2].level == level - 1)
		{
			item->frames[item->nframes - 2].delta += top->delta;
			item->nframes--;
		}
		else
		{
			top->level = level - 1;
			Touch(item, level - 1);
		}
	}
	list_free(items);
}

static void
TxnSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
				   SubTransactionId parentSubid, void *arg)
{
	if (txn_hash == NULL)
		return;
	if (event == SUBXACT_EVENT_COMMIT_SUB)
		EndSubXact(GetCurrentTransactionNestLevel(), true);
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		EndSubXact(GetCurrentTransactionNestLevel(), false);
}

/* ---------------------------------------------------------------- commit */

/* The command adding delta to item's key in Redis, under the item's prefix. */
static DkCmd *
StrictCommand(const TxnItem *item, int64 delta)
{
	size_t		keylen;
	const char *key = ItemKey(item, &keylen);

	/* item->key.name is "<prefix>\0<key>": it starts with the prefix as a C string */
	return DkCounterTxnCommand(KindOps(item->key.kind), item->key.name, key, keylen, delta);
}

/*
 * The final reply to StrictCommand(item, delta), given its first reply r:
 * the kind settles it as it settles any call (an instance-aware counter
 * whose server was reaped registers again and resends once, the script
 * having changed nothing).
 */
static DkReply *
StrictSettle(const TxnItem *item, int64 delta, DkReply *r, DkSafety safety)
{
	size_t		keylen;
	const char *key = ItemKey(item, &keylen);

	if (r->type != DK_REPLY_ERROR)
		return r;
	return DkCounterTxnSettle(KindOps(item->key.kind), item->key.name, key, keylen, delta,
							  r, safety);
}

/*
 * Revert the deltas of items[i] with applied[i] set; returns NULL when done,
 * else why it failed.  Errors are not raised: the caller is already failing.
 */
static char *
RevertApplied(TxnItem **items, const bool *applied, int n, int *nreverted)
{
	DkCmd	  **cmds = palloc(sizeof(DkCmd *) * 2 * n);
	TxnItem   **owners = palloc(sizeof(TxnItem *) * 2 * n);
	int64	   *deltas = palloc(sizeof(int64) * 2 * n);
	int			ncmds = 0;
	MemoryContext oldcxt = CurrentMemoryContext;
	char	   *volatile why = NULL;

	*nreverted = 0;
	for (int i = 0; i < n; i++)
	{
		int64		total = items[i]->total;

		if (!applied[i])
			continue;
		(*nreverted)++;
		if (total == PG_INT64_MIN)
		{
			/* -total is not a bigint: take it back in two steps */
			owners[ncmds] = items[i];
			deltas[ncmds++] = PG_INT64_MAX;
			owners[ncmds] = items[i];
			deltas[ncmds++] = 1;
		}
		else
		{
			owners[ncmds] = items[i];
			deltas[ncmds++] = -total;
		}
	}
	for (int i = 0; i < ncmds; i++)
		cmds[i] = StrictCommand(owners[i], deltas[i]);
	if (ncmds == 0)
		return NULL;
	PG_TRY();
	{
		for (int start = 0; start < ncmds && why == NULL; start += TXN_CHUNK)
		{
			int			m = Min(TXN_CHUNK, ncmds - start);
			DkReply   **r = DkRedisRun(cmds + start, m, DK_NOT_IDEMPOTENT);

			for (int j = 0; j < m && why == NULL; j++)
			{
				DkReply    *final = StrictSettle(owners[start + j], deltas[start + j], r[j],
												 DK_NOT_IDEMPOTENT);

				if (final->type == DK_REPLY_ERROR)
					why = pstrdup(final->str ? final->str : "error");
			}
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		why = edata->message;
	}
	PG_END_TRY();
	return why;
}

/*
 * Pre-commit: send the strict deltas (and lax ones the buffer cannot take)
 * to Redis.  On any failure revert what Redis applied, then raise the
 * error, which aborts the transaction.
 */
static void
TxnPreCommit(void)
{
	const char *prefix = DkKeyPrefix();
	size_t		plen = strlen(prefix);
	TxnItem   **items = palloc(sizeof(TxnItem *) * Max(txn_nitems, 1));
	DkCmd	  **cmds = palloc(sizeof(DkCmd *) * Max(txn_nitems, 1));
	DkReply   **volatile replies;
	bool	   *applied;
	int			n = 0;
	ErrorData  *edata = NULL;
	MemoryContext oldcxt;
	int			nreverted;
	char	   *why;
	char	   *context;

	txn_committing = true;
	for (int i = 0; i < txn_nitems; i++)
	{
		TxnItem    *item = txn_items[i];

		if (item->total == 0)
			continue;
		/* lax deltas go to the buffer at commit, if it can hold them under their prefix */
		if (item->key.mode == DK_MODE_LAX && !item->lax_fallback &&
			item->key.prefixlen == plen && memcmp(item->key.name, prefix, plen) == 0)
			continue;
		items[n] = item;
		cmds[n++] = StrictCommand(item, item->total);
	}
	if (n == 0)
		return;

	applied = palloc0(sizeof(bool) * n);
	replies = palloc0(sizeof(DkReply *) * n);
	oldcxt = CurrentMemoryContext;
	PG_TRY();
	{
		for (int start = 0; start < n; start += TXN_CHUNK)
		{
			int			m = Min(TXN_CHUNK, n - start);
			DkReply   **r = DkRedisRunInto(cmds + start, m, DK_NOT_IDEMPOTENT, replies + start);
			int			failed = -1;

			for (int j = 0; j < m; j++)
			{
				/* e.g. DKREAPED: registered again and resent, counted once */
				r[j] = StrictSettle(items[start + j], items[start + j]->total, r[j],
									DK_NOT_IDEMPOTENT);
				if (r[j]->type == DK_REPLY_ERROR)
				{
					failed = j;
					break;
				}
			}
			if (failed >= 0)
				DkReplyRaiseError(r[failed], ItemWhat(items[start + failed]));
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();

	/*
	 * What Redis executed: every non-error reply, also of a chunk whose call
	 * failed part-way (against a cluster one master may have applied its
	 * share while another failed).
	 */
	for (int i = 0; i < n; i++)
		applied[i] = replies[i] != NULL && replies[i]->type != DK_REPLY_ERROR;

	if (edata == NULL)
	{
		for (int i = 0; i < n; i++)
		{
			items[i]->sent = true;
			if (items[i]->key.mode == DK_MODE_LAX && DkPreloaded)
				DkLaxCountStrictFallback();
		}
		return;
	}

	/* the transaction fails: take back what Redis applied, then say so */
	why = RevertApplied(items, applied, n, &nreverted);
	context = psprintf("while applying %d deferred distkit increment%s before commit; "
					   "the transaction is rolled back", n, n == 1 ? "" : "s");
	if (nreverted == 1 && why == NULL)
		context = psprintf("%s and the one already applied in Redis was reverted", context);
	else if (nreverted > 1 && why == NULL)
		context = psprintf("%s and the %d already applied in Redis were reverted", context, nreverted);
	else if (nreverted > 0)
		context = psprintf("%s, but reverting the %d already applied in Redis failed (%s): "
						   "they stay counted", context, nreverted, why);
	edata->context = edata->context ? psprintf("%s\n%s", edata->context, context) : context;
	ReThrowError(edata);
}

/* Add an item's delta to the lax buffer, any error swallowed (we are past the commit record). */
static bool
TryLaxAdd(const TxnItem *item)
{
	const DkCounterKind *ops = KindOps(item->key.kind);
	size_t		keylen;
	const char *key = ItemKey(item, &keylen);
	MemoryContext oldcxt = CurrentMemoryContext;
	uint32		saved_holdoff = InterruptHoldoffCount;
	volatile bool ok = false;

	PG_TRY();
	{
		DkLaxView	view;

		ok = DkLaxAdd(ops->lax_kind, key, keylen, item->total, &view);
	}
	PG_CATCH();
	{
		/* an ERROR zeroed the holdoff count CommitTransaction relies on */
		InterruptHoldoffCount = saved_holdoff;
		MemoryContextSwitchTo(oldcxt);
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Send to Redis the lax deltas the buffer refused at commit; WARNING on failure. */
static void
SendLate(TxnItem **late, int nlate)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	uint32		saved_holdoff = InterruptHoldoffCount;

	PG_TRY();
	{
		DkCmd	  **cmds = palloc(sizeof(DkCmd *) * nlate);
		DkReply   **r;

		for (int i = 0; i < nlate; i++)
			cmds[i] = StrictCommand(late[i], late[i]->total);
		r = DkRedisRun(cmds, nlate, DK_NOT_IDEMPOTENT);
		for (int i = 0; i < nlate; i++)
		{
			r[i] = StrictSettle(late[i], late[i]->total, r[i], DK_NOT_IDEMPOTENT);
			if (r[i]->type == DK_REPLY_ERROR)
				ereport(WARNING,
						(errcode(ERRCODE_WARNING),
						 errmsg("distkit lost a committed increment of %s by " INT64_FORMAT,
								ItemWhat(late[i]), late[i]->total),
						 errdetail("The lax buffer could not take it at commit and Redis replied: %s",
								   r[i]->str ? r[i]->str : "error")));
			else
				DkLaxCountStrictFallback();
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* an ERROR zeroed the holdoff count CommitTransaction relies on */
		InterruptHoldoffCount = saved_holdoff;
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("distkit may have lost %d committed lax increment%s, such as %s by " INT64_FORMAT,
						nlate, nlate == 1 ? "" : "s", ItemWhat(late[0]), late[0]->total),
				 errdetail("The lax buffer could not take them at commit and sending them to Redis failed: %s",
						   edata->message)));
	}
	PG_END_TRY();
}

/*
 * Commit (the commit record is written; errors are not allowed): add the
 * lax deltas to the buffer.  A delta the buffer cannot take any more (it
 * filled up since the call) is sent to Redis; if that fails too it is lost,
 * with a WARNING naming it.
 */
static void
TxnCommit(void)
{
	TxnItem   **late = NULL;
	int			nlate = 0;

	for (int i = 0; i < txn_nitems; i++)
	{
		TxnItem    *item = txn_items[i];

		if (item->total == 0 || item->sent || item->key.mode != DK_MODE_LAX)
			continue;
		if (TryLaxAdd(item))
			continue;
		if (late == NULL)
			late = palloc(sizeof(TxnItem *) * txn_nitems);
		late[nlate++] = item;
	}
	if (nlate > 0)
		SendLate(late, nlate);
}

/* PREPARE TRANSACTION: pending deltas could not follow COMMIT PREPARED. */
static void
TxnPrePrepare(void)
{
	int			npending = 0;
	TxnItem    *first = NULL;

	for (int i = 0; i < txn_nitems; i++)
		if (txn_items[i]->total != 0)
		{
			if (first == NULL)
				first = txn_items[i];
			npending++;
		}
	if (first == NULL)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot prepare a transaction with pending transactional distkit increments"),
			 npending == 1 ?
			 errdetail("This transaction has a pending increment of %s by " INT64_FORMAT ".",
					   ItemWhat(first), first->total) :
			 errdetail("This transaction has pending increments of %d keys, such as %s.",
					   npending, ItemWhat(first)),
			 errhint("Use COMMIT instead, or make the increments with distkit.transactional off.")));
}

static void
TxnXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			txn_committing = true;
			if (txn_hash != NULL)
				TxnPreCommit();
			break;
		case XACT_EVENT_COMMIT:
			if (txn_hash != NULL)
				TxnCommit();
			TxnReset();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (txn_hash != NULL)
				TxnPrePrepare();
			break;
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			TxnReset();
			break;
	}
}
