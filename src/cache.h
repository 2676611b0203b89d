/*-------------------------------------------------------------------------
 *
 * cache.h
 *		Helpers of cache.c that the other fleet-state files use: the ttl
 *		argument, jsonb values as text and back, the value size limit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DISTKIT_CACHE_H
#define DISTKIT_CACHE_H

#include "fmgr.h"

#define DK_MAX_VALUE_BYTES (512 * 1024)	/* cached values, idempotency results */

extern int64 DkArgTtlMs(FunctionCallInfo fcinfo, int argno, const char *argname);
extern char *DkArgJsonbText(FunctionCallInfo fcinfo, int argno, const char *argname,
							const char *what, size_t *len);
extern Datum DkJsonbFromText(const char *s, size_t len, const char *what, const char *hint);

#endif							/* DISTKIT_CACHE_H */
