/*
 * lease.h — what leases (lease.c), leaderships (leader.c) and semaphores
 * (semaphore.c) share: the session's identity and the things it holds,
 * waiting between attempts, and the lease scripts.
 */
#ifndef DISTKIT_LEASE_H
#define DISTKIT_LEASE_H

#include "datatype/timestamp.h"
#include "fmgr.h"

/* Outcome of lua/lease_acquire.lua. */
typedef struct DkLeaseResult
{
	bool		held;			/* the owner holds it now */
	int64		token;			/* its token (the other holder's when !held) */
	int64		ms;				/* ttl when held, else the holder's remaining ms */
} DkLeaseResult;

/* this session */
extern void DkHeldAdd(const char *rkey, size_t klen, const char *permit);
extern void DkHeldRemove(const char *rkey, size_t klen, const char *permit);

/* waiting between attempts */
extern TimestampTz DkDeadlineAfter(int64 ms);
extern bool DkRetrySleep(TimestampTz deadline, int attempt, int64 hint_ms);

/* lease scripts, for leases and leaderships */
extern DkLeaseResult DkLeaseRunAcquire(const char *key, size_t klen, const char *tkey,
									   size_t tklen, const char *owner, const char *holder,
									   int64 ttl_ms, const char *what);
extern int64 DkLeaseRunCheck(int script, const char *key, size_t klen, const char *owner,
							 int64 token, int64 ttl_ms, const char *what);
extern Datum DkLeaseHolderRows(FunctionCallInfo fcinfo, const char *kind, const char *what_kind);
extern Interval *DkMsInterval(int64 ms);

#endif
