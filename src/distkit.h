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
extern void DkInstanceInit(void);
extern int	DkInstanceLiveCount(void);
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
extern int64 DkArgIntervalMs(FunctionCallInfo fcinfo, int argno, const char *argname,
							 bool allow_zero);

/* longest ttl or wait accepted (DkArgIntervalMs): 36500 days */
#define DK_MAX_INTERVAL_MS ((int64) 36500 * 86400 * 1000)

/* fleet state: cache, idempotency keys, circuit breakers */
extern void DkIdempotencyInit(void);
#define DK_MAX_VALUE_BYTES (512 * 1024)	/* cached values, idempotency results */
extern char *DkIntervalText(Interval *iv);
extern int64 DkIntervalUs(Interval *iv, const char *argname);
extern int64 DkArgTtlMs(FunctionCallInfo fcinfo, int argno, const char *argname);
extern void DkCheckValueSize(size_t len, const char *what);
extern char *DkArgJsonbText(FunctionCallInfo fcinfo, int argno, const char *argname,
							const char *what, size_t *len);
extern Datum DkJsonbFromText(const char *s, size_t len, const char *what, const char *hint);

#endif
