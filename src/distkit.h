/*
 * distkit.h — declarations shared by distkit's modules: the init function
 * of each subsystem and the argument helpers of SQL-callable functions.
 */
#ifndef DISTKIT_H
#define DISTKIT_H

#include "fmgr.h"

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
extern void DkSecretsInit(void);
extern void DkFlusherRegister(void);
extern void DkTxnInit(void);	/* txn.c: distkit.transactional */

/* periodic work run by the background worker (flusher.c) */
typedef void (*DkWorkerTaskFn) (void);
extern void DkFlusherAddTask(const char *name, DkWorkerTaskFn run, int (*interval_ms) (void),
							 DkWorkerTaskFn at_shutdown);

/* argument helpers (args.c) */
extern text *DkArgText(FunctionCallInfo fcinfo, int argno, const char *argname);
extern int64 DkArgInt64(FunctionCallInfo fcinfo, int argno, const char *argname);
extern DkMode DkArgMode(FunctionCallInfo fcinfo, int argno, int default_mode);
extern void DkRequirePreload(const char *what);

#endif
