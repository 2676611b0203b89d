/*
 * flush.h — sending a lax flush batch to Redis (flush.c), for the worker.
 */
#ifndef DISTKIT_FLUSH_H
#define DISTKIT_FLUSH_H

#include "lax.h"

/* Groups of simple counters on one Redis or Sentinel (a Cluster: one per slot). */
#define DK_FLUSH_GROUPS_SINGLE 1

extern void DkFlushSend(DkLaxBatchItem *items, int n, uint64 seq);
extern int	DkFlushGroups(void);
extern int64 DkFlushDeleteRecords(void);

#endif
