/*
 * metrics.h — per-operation call metrics (distkit_stat_calls): how many
 * calls, which failed (by SQLSTATE class), how long they took, how many
 * Redis round trips they made.  See metrics.c.
 */
#ifndef DISTKIT_METRICS_H
#define DISTKIT_METRICS_H

#include "portability/instr_time.h"

/* Requests written to a Redis node by this process (redis.c counts them). */
extern uint64 DkRoundTrips;

/* A call measured by hand (the worker's flush batches). */
typedef struct DkMetricsCall
{
	int			entry;			/* -1: not measured */
	instr_time	start;
	uint64		round_trips;
} DkMetricsCall;

extern void DkMetricsInit(void);
extern void DkMetricsSetMode(int mode);	/* a DkMode of distkit.h */
extern void DkMetricsFlushBegin(DkMetricsCall *call);
extern void DkMetricsEnd(DkMetricsCall *call, int sqlerrcode);

#endif
