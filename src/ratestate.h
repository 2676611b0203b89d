/*
 * ratestate.h — lax rate limiting (ratestate.c): the shared-memory table of
 * reservations used by the SQL functions of rate.c, and the settings of
 * every rate limiter call (mode, on_error, shadow).
 */
#ifndef DISTKIT_RATESTATE_H
#define DISTKIT_RATESTATE_H

#include "fmgr.h"

/*
 * A limiter's parameters and the quantities the scripts need: every time is
 * whole microseconds plus a numerator over rate (see rate.c).
 */
typedef struct DkRateParams
{
	int64		rate;
	int64		per_us;
	int64		burst;
	int64		cost;
	int64		inc_us;			/* per * cost / rate = inc_us + inc_f / rate */
	int64		inc_f;
	int64		tau_us;			/* per * burst / rate */
	int64		tau_f;
	int64		t_us;			/* per / rate: one unit */
	int64		t_f;
} DkRateParams;

/* What to do when Redis cannot be reached (distkit.rate_on_error). */
typedef enum DkRateOnError
{
	DK_ON_ERROR_ERROR,
	DK_ON_ERROR_DENY,
	DK_ON_ERROR_ALLOW,
	DK_ON_ERROR_LOCAL
} DkRateOnError;

/* Outcome of a lax decision. */
typedef enum DkRateLaxResult
{
	DK_RATE_LAX_ALLOWED,
	DK_RATE_LAX_DENIED,
	DK_RATE_LAX_NO_SLOT,		/* table full, key too long: decide strictly */
	DK_RATE_LAX_UNREACHABLE		/* needed Redis and could not reach it */
} DkRateLaxResult;

/* Figures of a lax decision for distkit_rate_check (-1: unknown). */
typedef struct DkRateLaxInfo
{
	int64		held;			/* units this server still holds */
	int64		retry_after_us;
	int64		reset_after_us;
} DkRateLaxInfo;

/* Per-limiter counters of distkit_rate_stats. */
typedef enum DkRateCounter
{
	DK_RC_ALLOWED,
	DK_RC_DENIED,
	DK_RC_NEAR_LIMIT,
	DK_RC_SHADOW_DENIED,
	DK_RC_ON_ERROR_RAISED,
	DK_RC_ON_ERROR_DENIED,
	DK_RC_ON_ERROR_ALLOWED,
	DK_RC_ON_ERROR_LOCAL,
	DK_RC_COUNT
} DkRateCounter;

extern int	DkRateDefaultMode(void);
extern DkRateOnError DkRateOnErrorSetting(void);
extern bool DkRateShadowSetting(void);
extern bool DkRateParseOnError(const char *s, DkRateOnError *out);

extern int	DkRateSlot(text *key, const char *rkey, size_t klen, bool lax);
extern DkRateLaxResult DkRateLaxDecide(int slot, const char *rkey, size_t klen,
									   const DkRateParams *p, bool rethrow,
									   DkRateLaxInfo *info);
extern bool DkRateLocalDecide(int slot, const DkRateParams *p);
extern void DkRateCount(int slot, DkRateCounter which);
extern void DkRateForget(const char *rkey, size_t klen);
extern void DkRateRaiseBadState(const char *what) pg_attribute_noreturn();

#endif
