/*-------------------------------------------------------------------------
 *
 * breaker.c
 *		Circuit breakers shared by the fleet: distkit_breaker_configure,
 *		distkit_breaker_allow, distkit_breaker_record, distkit_breaker_state,
 *		distkit_breaker_reset and distkit_breaker_trip.
 *
 * The semantics are resilience4j's time-based sliding window, with the
 * state in Redis so that every PostgreSQL server sees one breaker (which
 * resilience4j explicitly does not do):
 *  - closed: calls are allowed; each recorded call lands in the bucket of
 *    the current Redis second; once the window (the last `window` seconds)
 *    holds at least minimum_calls calls and the failure rate or the
 *    slow-call rate (percent of those calls) reaches failure_rate_threshold,
 *    the breaker opens;
 *  - open: calls are rejected until open_for has passed, then half-open;
 *  - half-open: half_open_calls trial calls are admitted (slots counted
 *    atomically across the fleet); the breaker closes when that many
 *    trials succeeded, and opens again at the first failed or slow one.
 *    Once every slot is taken and open_for has passed since the last one
 *    was, the slots not recorded by then are given to new callers, so a
 *    caller that dies cannot keep the breaker half-open;
 *  - forced_open (distkit_breaker_trip, a kill switch): rejects every call
 *    until distkit_breaker_reset.
 * The window's counts are cleared at every transition.
 *
 * Every step (allow, record, state, trip) is one Lua script,
 * lua/breaker_step.lua, that reads the clock with Redis's TIME and makes
 * the transitions atomically.  A breaker N has two Redis hashes in one hash
 * slot: <prefix>:b:{N'} (state, window totals and per-second buckets) and
 * <prefix>:bc:{N'} (configuration, written by distkit_breaker_configure;
 * without it the defaults of distkit_breaker_configure apply, and this file
 * sends them along).  Configuration never expires; the state hash expires
 * window + 1 s after its last write while closed (the window is empty by
 * then), and never in the other states.
 *
 * Breakers are not transactional.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "keys.h"
#include "redis.h"

PG_FUNCTION_INFO_V1(distkit_breaker_configure);
PG_FUNCTION_INFO_V1(distkit_breaker_allow);
PG_FUNCTION_INFO_V1(distkit_breaker_record);
PG_FUNCTION_INFO_V1(distkit_breaker_state);
PG_FUNCTION_INFO_V1(distkit_breaker_reset);
PG_FUNCTION_INFO_V1(distkit_breaker_trip);

/* The defaults of distkit_breaker_configure (sql/distkit.sql): keep equal. */
#define BREAKER_DEFAULT_THRESHOLD "50"
#define BREAKER_DEFAULT_MIN_CALLS 20
#define BREAKER_DEFAULT_WINDOW_S 60
#define BREAKER_DEFAULT_OPEN_MS 30000
#define BREAKER_DEFAULT_HALF_OPEN 3

/* One bucket per second: at most an hour of them. */
#define BREAKER_MAX_WINDOW_S 3600
/* open_for and slow_call_threshold: at most 365 days (exact in Lua). */
#define BREAKER_MAX_DURATION_US (365 * USECS_PER_DAY)

/* What breaker_step.lua returns. */
typedef struct BreakerStep
{
	bool		allowed;
	char	   *state;
	int64		calls;
	int64		failures;
	int64		slow;
	int64		retry_ms;		/* -1: none */
} BreakerStep;

/* Description of a breaker for messages: circuit breaker "name". */
static char *
BreakerWhat(text *name)
{
	return psprintf("circuit breaker %s", DkKeyQuote(name));
}

/* Append the breaker's two Redis keys (state, configuration) to cmd. */
static void
BreakerKeys(DkCmd *cmd, text *name)
{
	size_t		len;
	char	   *k = DkKeyFromText(DK_KIND_BREAKER, name, "name", &len);

	DkCmdArg(cmd, k, len);
	k = DkKeyFromText(DK_KIND_BREAKER_CONFIG, name, "name", &len);
	DkCmdArg(cmd, k, len);
}

/* Raise an error reply of a breaker script. */
static void
pg_attribute_noreturn()
BreakerError(const DkReply *r, const char *what)
{
	if (strncmp(r->str, "DKBADSTATE", 10) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("Redis keys of %s do not hold a circuit breaker", what),
				 errhint("Another program wrote to distkit's key space; delete the keys or change distkit.prefix.")));
	DkReplyRaiseError(r, what);
}

/* Start a breaker_step command for op, with the default configuration. */
static DkCmd *
StepCommand(text *name, const char *op)
{
	DkCmd	   *cmd = DkCmdScript(DK_LUA_BREAKER_STEP, 2);

	BreakerKeys(cmd, name);
	DkCmdArgStr(cmd, op);
	DkCmdArgStr(cmd, BREAKER_DEFAULT_THRESHOLD);
	DkCmdArgInt(cmd, BREAKER_DEFAULT_MIN_CALLS);
	DkCmdArgInt(cmd, BREAKER_DEFAULT_WINDOW_S);
	DkCmdArgInt(cmd, BREAKER_DEFAULT_OPEN_MS);
	DkCmdArgInt(cmd, BREAKER_DEFAULT_HALF_OPEN);
	DkCmdArgInt(cmd, -1);
	return cmd;
}

/* Run a breaker_step command and decode its reply. */
static BreakerStep
RunStep(DkCmd *cmd, text *name, DkSafety safety)
{
	char	   *what = BreakerWhat(name);
	DkReply    *r = DkRedisRunOne(cmd, safety);
	BreakerStep s;

	if (r->type == DK_REPLY_ERROR)
		BreakerError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem != 6 || r->elem[1]->type != DK_REPLY_STRING)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for %s", what)));
	s.allowed = DkReplyInt64(r->elem[0], what) == 1;
	s.state = r->elem[1]->str;
	s.calls = DkReplyInt64(r->elem[2], what);
	s.failures = DkReplyInt64(r->elem[3], what);
	s.slow = DkReplyInt64(r->elem[4], what);
	s.retry_ms = DkReplyInt64(r->elem[5], what);
	return s;
}

/* What the durations of a breaker may be. */
static const DkDurationRule WINDOW_RULE = {
	1, "positive", (int64) BREAKER_MAX_WINDOW_S * USECS_PER_SEC, "1 hour",
	"sliding_window is a whole number of seconds from 1 second to 1 hour."
};
static const DkDurationRule OPEN_FOR_RULE = {
	1, "positive", BREAKER_MAX_DURATION_US, "365 days",
	"open_for is how long an open breaker rejects calls before admitting trials."
};
static const DkDurationRule SLOW_RULE = {
	1, "positive", BREAKER_MAX_DURATION_US, "365 days",
	"Calls longer than slow_call_threshold count as slow; NULL counts none."
};
static const DkDurationRule CALL_DURATION_RULE = {
	0, "zero or positive", DK_MAX_DURATION_US, DK_MAX_DURATION_TEXT,
	"duration is how long the call took; NULL if unknown."
};

/* An int argument that must be at least 1. */
static int32
PositiveInt(FunctionCallInfo fcinfo, int argno, const char *argname, const char *hint)
{
	int32		v;

	DkArgNotNull(fcinfo, argno, argname);
	v = PG_GETARG_INT32(argno);
	if (v < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at least 1, not %d", argname, v),
				 errhint("%s", hint)));
	return v;
}

/*
 * distkit_breaker_configure(name, failure_rate_threshold, minimum_calls,
 * window, open_for, half_open_calls, slow_call_threshold): store the
 * breaker's configuration, used by every server from its next call.
 */
Datum
distkit_breaker_configure(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	float8		thr;
	int32		min_calls;
	int64		window_us;
	int64		open_us;
	int32		half;
	int64		slow_us = -1;
	DkCmd	   *cmd;
	DkReply    *r;

	(void) DkKeyCheck(name, "name");
	DkArgNotNull(fcinfo, 1, "failure_rate_threshold");
	thr = PG_GETARG_FLOAT8(1);
	if (!(thr > 0 && thr <= 100))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("failure_rate_threshold must be above 0 and at most 100, not %g", thr),
				 errhint("It is a percentage of the calls in the window, e.g. 50.")));
	min_calls = PositiveInt(fcinfo, 2, "minimum_calls",
							"The breaker opens only once the window holds at least minimum_calls calls.");
	window_us = DkArgDurationUs(fcinfo, 3, "sliding_window", &WINDOW_RULE);
	if (window_us % USECS_PER_SEC != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sliding_window must be a whole number of seconds, not \"%s\"",
						DkIntervalText(PG_GETARG_INTERVAL_P(3))),
				 errhint("The sliding window is kept as one bucket per Redis second.")));
	open_us = DkArgDurationUs(fcinfo, 4, "open_for", &OPEN_FOR_RULE);
	half = PositiveInt(fcinfo, 5, "half_open_calls",
					   "half_open_calls trial calls must succeed to close a half-open breaker.");
	if (!PG_ARGISNULL(6))
		slow_us = DkArgDurationUs(fcinfo, 6, "slow_call_threshold", &SLOW_RULE);

	cmd = DkCmdScript(DK_LUA_BREAKER_CONFIGURE, 2);
	BreakerKeys(cmd, name);
	DkCmdArgStr(cmd, psprintf("%.17g", thr));
	DkCmdArgInt(cmd, min_calls);
	DkCmdArgInt(cmd, window_us / USECS_PER_SEC);
	DkCmdArgInt(cmd, open_us / 1000 + (open_us % 1000 != 0 ? 1 : 0));
	DkCmdArgInt(cmd, half);
	DkCmdArgInt(cmd, slow_us);
	DkCmdArgInt(cmd, BREAKER_DEFAULT_WINDOW_S);
	r = DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		BreakerError(r, BreakerWhat(name));
	PG_RETURN_VOID();
}

/*
 * distkit_breaker_allow(name): may a call go ahead?  True while closed, and
 * for the trial calls of a half-open breaker; false while open, forced
 * open, or half-open with every trial slot taken.
 */
Datum
distkit_breaker_allow(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");

	PG_RETURN_BOOL(RunStep(StepCommand(name, "allow"), name, DK_NOT_IDEMPOTENT).allowed);
}

/*
 * distkit_breaker_record(name, success, duration): record the outcome of a
 * call; returns the state after recording.
 */
Datum
distkit_breaker_record(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	bool		success;
	int64		duration_us = -1;
	DkCmd	   *cmd;

	DkArgNotNull(fcinfo, 1, "success");
	success = PG_GETARG_BOOL(1);
	if (!PG_ARGISNULL(2))
	{
		duration_us = DkArgDurationUs(fcinfo, 2, "duration", &CALL_DURATION_RULE);
		/* beyond any threshold: keeps the script's numbers exact */
		duration_us = Min(duration_us, BREAKER_MAX_DURATION_US + 1);
	}
	cmd = StepCommand(name, "record");
	DkCmdArgStr(cmd, success ? "1" : "0");
	DkCmdArgInt(cmd, duration_us);
	PG_RETURN_TEXT_P(cstring_to_text(RunStep(cmd, name, DK_NOT_IDEMPOTENT).state));
}

/* A rate in percent, or NULL when there were no calls. */
static void
RateDatum(int64 part, int64 calls, Datum *value, bool *isnull)
{
	*isnull = calls <= 0;
	if (!*isnull)
		*value = Float8GetDatum((double) part * 100.0 / (double) calls);
}

/*
 * distkit_breaker_state(name): (state, failure_rate, calls, retry_after,
 * slow_call_rate) over the current window.
 */
Datum
distkit_breaker_state(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	BreakerStep s;
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	/* may apply a due transition or trim the window: harmless to repeat */
	s = RunStep(StepCommand(name, "state"), name, DK_IDEMPOTENT);
	values[0] = CStringGetTextDatum(s.state);
	RateDatum(s.failures, s.calls, &values[1], &nulls[1]);
	values[2] = Int64GetDatum(s.calls);
	if (s.retry_ms < 0)
		nulls[3] = true;
	else
	{
		Interval   *iv = palloc0(sizeof(Interval));

		iv->time = s.retry_ms * 1000;
		values[3] = IntervalPGetDatum(iv);
	}
	RateDatum(s.slow, s.calls, &values[4], &nulls[4]);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * distkit_breaker_reset(name): back to closed with an empty window (the
 * configuration is kept); true if there was any state to forget.
 */
Datum
distkit_breaker_reset(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");
	size_t		len;
	char	   *k = DkKeyFromText(DK_KIND_BREAKER, name, "name", &len);
	DkCmd	   *cmd = DkCmdNew("DEL");

	DkCmdArg(cmd, k, len);
	PG_RETURN_BOOL(DkReplyInt64(DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT), BreakerWhat(name)) > 0);
}

/* distkit_breaker_trip(name): force the breaker open until reset (a kill switch). */
Datum
distkit_breaker_trip(PG_FUNCTION_ARGS)
{
	text	   *name = DkArgText(fcinfo, 0, "name");

	(void) RunStep(StepCommand(name, "trip"), name, DK_NOT_IDEMPOTENT);
	PG_RETURN_VOID();
}
