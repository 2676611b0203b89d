/*
 * lax.h — the shared-memory buffer of lax counters, used by the SQL
 * functions (counter.c) and by the flusher worker (worker.c).
 */
#ifndef DISTKIT_LAX_H
#define DISTKIT_LAX_H

#include "datatype/timestamp.h"

/* Bytes of "<kind><prefix>\0<key>" an entry stores inline; longer keys are counted strictly. */
#define DK_LAX_NAME_MAX 160

/* What a buffered key counts: a simple counter or this instance's slice of an instance-aware one. */
typedef enum DkLaxKind
{
	DK_LAX_SIMPLE = 's',
	DK_LAX_INSTANCE = 'i'
} DkLaxKind;

/* This server's view of a counter: total and (instance-aware) this instance's slice. */
typedef struct DkLaxView
{
	int64		total;
	int64		slice;
} DkLaxView;

/* One key of a flush batch, copied out of shared memory by the flusher. */
typedef struct DkLaxBatchItem
{
	int32		idx;			/* entry index */
	DkLaxKind	kind;
	int64		delta;			/* the entry's in-flight delta */
	uint32		strict_gen;		/* entry's strict_gen when taken */
	char		name[DK_LAX_NAME_MAX];
	char	   *prefix;			/* points into name[], NUL-terminated */
	char	   *key;			/* points into name[] after the prefix */
	int			keylen;
} DkLaxBatchItem;

/* Result of DkLaxLookupForRead. */
typedef enum DkLaxReadState
{
	DK_LAX_FRESH,				/* *view is this server's view */
	DK_LAX_STALE,				/* read Redis, then DkLaxStoreRead */
	DK_LAX_NO_ENTRY				/* no room or key too long: read Redis only */
} DkLaxReadState;

typedef struct DkLaxReadTicket
{
	int32		idx;
	uint64		flush_gen;
	bool		known_valid;	/* the view rests on a total once read from Redis */
} DkLaxReadTicket;

/* set-up (lax.c) */
extern void DkLaxInit(void);
extern int	DkFlushIntervalMs(void);

/*
 * Reads key's Redis value for the buffer's view (DkLaxAddSeeded), raising
 * the read's error if it fails.  arg is the caller's.
 */
typedef void (*DkLaxSeedFn) (const char *key, size_t keylen, void *arg, DkLaxView *value);

/* used by SQL functions */
extern bool DkLaxAdd(DkLaxKind kind, const char *key, size_t keylen, int64 delta, DkLaxView *view);
extern bool DkLaxAddSeeded(DkLaxKind kind, const char *key, size_t keylen, int64 delta,
						   DkLaxSeedFn seed, void *arg, DkLaxView *view);
extern bool DkLaxViewSeeded(DkLaxKind kind, const char *key, size_t keylen, DkLaxSeedFn seed,
							void *arg, DkLaxView *view);
extern DkLaxReadState DkLaxLookupForRead(DkLaxKind kind, const char *key, size_t keylen,
										 DkLaxView *view, DkLaxReadTicket *ticket);
extern DkLaxView DkLaxStoreRead(DkLaxKind kind, const char *key, size_t keylen,
								const DkLaxReadTicket *ticket, DkLaxView redis_value);
extern void DkLaxSettle(DkLaxKind kind, const char *key, size_t keylen);
extern void DkLaxAfterStrictWrite(DkLaxKind kind, const char *key, size_t keylen, DkLaxView value);
extern bool DkLaxStrictAddTicket(DkLaxKind kind, const char *key, size_t keylen,
								 DkLaxReadTicket *ticket);
extern void DkLaxAfterStrictAdd(DkLaxKind kind, const char *key, size_t keylen,
								const DkLaxReadTicket *ticket, DkLaxView value);
extern void DkLaxAfterClear(DkLaxKind kind, bool only_slice);
extern void DkLaxCountStrictFallback(void);
extern int64 DkLaxFlushWait(int timeout_ms);

/* used by the flusher */
extern void DkLaxWorkerAttach(void);
extern void DkLaxWorkerDetach(void);
extern uint64 DkLaxBeginCycle(void);
extern bool DkLaxGoIdle(void);
extern bool DkLaxFlushPending(void);
extern int	DkLaxTakeInflight(DkLaxBatchItem **items, uint64 *seq);
extern int	DkLaxTakeBatch(DkLaxBatchItem **items, uint64 *seq);
extern void DkLaxApplyFlushed(const DkLaxBatchItem *item, DkLaxView total);
extern void DkLaxApplyFlushedMany(const DkLaxBatchItem *const *items, const DkLaxView *totals,
								  int n);
extern void DkLaxDropFlushed(const DkLaxBatchItem *item, const char *why);
extern void DkLaxEndCycle(uint64 target, int nkeys, bool ok, const char *error);
extern void DkLaxCountFlushCalls(int calls);
extern void DkLaxNoteFlushGroup(int group);
extern bool DkLaxFlushedGroup(int group);
extern void DkLaxForgetFlushGroups(void);
extern bool DkLaxAnythingPending(void);
extern const char *DkLaxInstanceId(void);

#endif
