/*
 * distkit.h — declarations shared by distkit's modules: the init function
 * of each subsystem and the argument helpers of SQL-callable functions.
 */
#ifndef DISTKIT_H
#define DISTKIT_H

#include "fmgr.h"
#include "datatype/timestamp.h"

/* Counting modes (the SQL enum distkit_mode). */
typedef enum DkMode
{
	DK_MODE_STRICT,
	DK_MODE_LAX
} DkMode;

/* true when loaded through shared_preload_libraries */
extern bool DkPreloaded;

/* subsystem init functions, called from _PG_init */
extern void DkCounterInit(void);
extern int	DkCounterDefaultMode(void);
extern void DkRateInit(void);	/* ratestate.c: lax rate limiting */
extern void DkSecretsInit(void);
extern void DkWorkerRegister(void);
extern void DkLeaderInit(void);
extern void DkTxnInit(void);	/* txn.c: distkit.transactional */

/* periodic work run by the background worker (worker.c) */
typedef void (*DkWorkerTaskFn) (void);
extern void DkWorkerAddTask(const char *name, DkWorkerTaskFn run, int (*interval_ms) (void),
							 DkWorkerTaskFn at_shutdown);

/* argument helpers (args.c) */
extern void DkArgNotNull(FunctionCallInfo fcinfo, int argno, const char *argname);
extern text *DkArgText(FunctionCallInfo fcinfo, int argno, const char *argname);
extern int64 DkArgInt64(FunctionCallInfo fcinfo, int argno, const char *argname);
extern DkMode DkArgMode(FunctionCallInfo fcinfo, int argno, int default_mode);
extern void DkRequirePreload(const char *what);

/*
 * What a duration argument may be (DkArgDurationUs, the one parser of
 * interval arguments): at least min_us (0: zero allowed, 1: positive), at
 * most max_us; min_text and max_text say the bounds in messages
 * ("positive", "36500 days"), hint says what the argument is.
 */
typedef struct DkDurationRule
{
	int64		min_us;
	const char *min_text;
	int64		max_us;
	const char *max_text;
	const char *hint;
} DkDurationRule;

/* longest ttl or wait of leases, semaphores and leaders: 36500 days */
#define DK_MAX_INTERVAL_US ((int64) 36500 * USECS_PER_DAY)
/* no bound but 64 bits of microseconds */
#define DK_MAX_DURATION_US PG_INT64_MAX
#define DK_MAX_DURATION_TEXT "106751991 days (2^63 microseconds)"

extern const DkDurationRule DK_DURATION_TTL;
extern const DkDurationRule DK_DURATION_WAIT;
extern char *DkIntervalText(Interval *iv);
extern int64 DkArgDurationUs(FunctionCallInfo fcinfo, int argno, const char *argname,
							 const DkDurationRule *rule);
extern int64 DkArgDurationMs(FunctionCallInfo fcinfo, int argno, const char *argname,
							 const DkDurationRule *rule);

/* fleet state: idempotency keys (cache.c's helpers: cache.h) */
extern void DkIdempotencyInit(void);

#endif
