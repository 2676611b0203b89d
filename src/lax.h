/*
 * lax.h — the shared-memory buffer of lax counters, used by the SQL
 * functions (counter.c) and by the flusher worker (flusher.c).
 */
#ifndef DISTKIT_LAX_H
#define DISTKIT_LAX_H

#include "datatype/timestamp.h"

/* Bytes of "<prefix>\0<key>" an entry stores inline; longer keys are counted strictly. */
#define DK_LAX_NAME_MAX 160

/* One key of a flush batch, copied out of shared memory by the flusher. */
typedef struct DkLaxBatchItem
{
	int32		idx;			/* entry index */
	int64		delta;			/* the entry's in-flight delta */
	uint32		strict_gen;		/* entry's strict_gen when taken */
	char		prefix[DK_LAX_NAME_MAX];
	char	   *key;			/* points into prefix[] after the NUL */
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

/* used by SQL functions */
extern bool DkLaxAdd(const char *key, size_t keylen, int64 delta, int64 *view);
extern DkLaxReadState DkLaxLookupForRead(const char *key, size_t keylen, int64 *view,
										 DkLaxReadTicket *ticket);
extern int64 DkLaxStoreRead(const char *key, size_t keylen, const DkLaxReadTicket *ticket,
							int64 redis_value);
extern void DkLaxSettle(const char *key, size_t keylen);
extern void DkLaxAfterStrictWrite(const char *key, size_t keylen, int64 value);
extern void DkLaxAfterClear(void);
extern void DkLaxCountStrictFallback(void);
extern int64 DkLaxFlushWait(int timeout_ms);

/* used by the flusher */
extern void DkLaxWorkerAttach(void);
extern void DkLaxWorkerDetach(void);
extern uint64 DkLaxBeginCycle(void);
extern bool DkLaxGoIdle(void);
extern int	DkLaxTakeInflight(DkLaxBatchItem **items, uint64 *seq);
extern int	DkLaxTakeBatch(DkLaxBatchItem **items, uint64 *seq);
extern void DkLaxApplyFlushed(const DkLaxBatchItem *item, int64 total);
extern void DkLaxDropFlushed(const DkLaxBatchItem *item, const char *why);
extern void DkLaxEndCycle(uint64 target, int nkeys, bool ok, const char *error);
extern bool DkLaxAnythingPending(void);
extern const char *DkLaxInstanceId(void);

#endif
