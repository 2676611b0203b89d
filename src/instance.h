/*-------------------------------------------------------------------------
 *
 * instance.h
 *		Instance-aware counters (instance.c): what the worker needs to
 *		flush their lax slices, and the module's init.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DISTKIT_INSTANCE_H
#define DISTKIT_INSTANCE_H

#include "lax.h"
#include "redis.h"

extern void DkInstanceInit(void);
extern int	DkInstanceLiveCount(void);
extern DkCmd *DkInstanceFlushCommand(const DkLaxBatchItem *item, const char *seq);
extern bool DkInstanceFlushReply(DkReply *r, DkLaxView *view);
extern DkReply *DkInstanceFlushResend(const DkLaxBatchItem *item, const char *seq, DkReply *r);

#endif							/* DISTKIT_INSTANCE_H */
