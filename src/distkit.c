/*-------------------------------------------------------------------------
 *
 * distkit.c
 *		Entry point of the distkit extension.
 *
 * distkit gives SQL the distributed primitives that usually live in
 * application libraries — counters and rate limiters first — shared by every PostgreSQL
 * server that points at the same Redis.
 *
 * The code is split by subsystem:
 *	redis.c		the connection module's API (redis.h): commands, pipelined
 *				runs with retries (MOVED/ASK/NOSCRIPT), SCAN, error mapping;
 *				with redis_url.c (distkit.redis_url, timeouts), redis_conn.c
 *				(one node's connection: the only code that touches a socket),
 *				redis_cluster.c (slot map, routing) and redis_sentinel.c
 *				(master discovery), sharing redis_int.h
 *	keys.c		the only file that builds Redis key names (distkit.prefix)
 *	args.c		argument helpers shared by the SQL-callable functions
 *	secrets.c	keeps the Redis password out of logs (emit_log_hook)
 *	counter.c	counters (distkit_inc, distkit_get, ...), strict and lax
 *	lax.c		the shared-memory buffer of lax counters, distkit_stats
 *	worker.c	the background worker: flushes the lax buffer, runs the periodic tasks
 *	instance.c	instance-aware counters, heartbeats and the live list
 *	counterkind.c	the counting both kinds of counters share (one table per kind)
 *	rate.c		GCRA rate limiters (distkit_rate_allow, distkit_rate_check, ...)
 *	ratestate.c	lax rate limiting: the shared-memory table of reservations,
 *				refilled and returned by the worker; distkit_rate_stats
 *	lease.c		leases with fencing tokens; what a session holds, released at its end
 *	leader.c	leader election: the shared-memory table the worker renews
 *	semaphore.c	fleet semaphores (permits that expire)
 *	cache.c		a cache with TTL (distkit_cache_*); helpers of the fleet state
 *	idempotency.c	idempotency keys (distkit_idempotency_*)
 *	breaker.c	circuit breakers shared by the fleet (distkit_breaker_*)
 *	txn.c		transactional counting (distkit.transactional): increments
 *				applied at commit, discarded on rollback
 *	metrics.c	call metrics per operation (distkit_stat_calls), through
 *				the function manager's hooks
 *	shmem.c		the one map of shared memory: every module's region and
 *				LWLock, requested and created in one place
 *	queue.c		work queues on Redis Streams (distkit_queue_*)
 *	outbox.c	the transactional outbox (distkit_outbox_send) and the
 *				shippers' shared memory, start and stop
 *	shipper.c	the outbox shipper: a background worker per database
 * Lua scripts live in lua/ and are embedded at build time (the generated
 * lua_scripts.c holds them, lua_scripts.h their DK_LUA_* ids).
 *
 * _PG_init only calls each subsystem's init and reserves the GUC prefix.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "distkit.h"
#include "instance.h"
#include "keys.h"
#include "lax.h"
#include "metrics.h"
#include "queue.h"
#include "redis.h"
#include "shmem.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

bool		DkPreloaded = false;

/* Module load: define GUCs and set up each subsystem. */
void
_PG_init(void)
{
	DkPreloaded = process_shared_preload_libraries_in_progress;

	DkSecretsInit();
	DkRedisInit();
	DkKeysInit();
	DkCounterInit();
	DkLaxInit();
	DkInstanceInit();
	DkLeaderInit();
	DkRateInit();
	DkIdempotencyInit();
	DkTxnInit();
	DkMetricsInit();
	DkShmemInit();
	DkQueueInit();
	DkOutboxInit();
	if (DkPreloaded)
		DkWorkerRegister();

	MarkGUCPrefixReserved("distkit");
}
