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
extern void DkInstanceFlushArgs(DkCmd *cmd, bool with_cells);
extern bool DkInstanceFlushRetry(const DkReply *r);
extern bool DkInstanceFlushParse(const DkReply *r, DkLaxView *view, const char **error);

#endif							/* DISTKIT_INSTANCE_H */
