/*-------------------------------------------------------------------------
 *
 * rate.c
 *		Rate limiting: distkit_rate_allow, distkit_rate_check,
 *		distkit_rate_peek and distkit_rate_reset.
 *
 * The algorithm is GCRA (as in redis-cell and go-redis redis_rate): a
 * limiter of rate units per period "per", of capacity burst, has an
 * emission interval T = per / rate and a tolerance tau = T * burst, and
 * keeps one value in Redis, the theoretical arrival time (TAT).  A request
 * of cost units is allowed iff max(TAT, now) + T * cost - tau <= now; then
 * TAT moves forward by T * cost.  Every decision is one Lua script
 * (lua/rate_gcra.lua) that reads the clock with Redis's TIME, so servers
 * with skewed clocks still share one limit.  The key expires when the
 * limiter is full again, and a denied call writes nothing.
 *
 * Arithmetic is exact.  Times are microseconds, and per / rate need not be
 * a whole number of them: every quantity is sent to the script as whole
 * microseconds plus a fraction with denominator rate, which keeps Lua's
 * doubles exact (all below 2^53).  This file derives those quantities and
 * the figures returned to SQL (remaining, retry_after, reset_after) with
 * 128-bit integers.  Limits that follow: rate <= 2^52 and tau < 2^52 us
 * (about 142 years); anything beyond is rejected with SQLSTATE 22023.
 *
 * Rate limiters are not transactional: a unit consumed stays consumed if
 * the calling transaction rolls back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "keys.h"
#include "redis.h"

#ifndef HAVE_INT128
#error "distkit's rate limiter needs a compiler with 128-bit integers"
#endif

PG_FUNCTION_INFO_V1(distkit_rate_allow);
PG_FUNCTION_INFO_V1(distkit_rate_check);
PG_FUNCTION_INFO_V1(distkit_rate_peek);
PG_FUNCTION_INFO_V1(distkit_rate_reset);

/* Bound of rate and of tau in us: keeps every number of the script exact. */
#define RATE_LIMIT_BITS 52
#define RATE_LIMIT ((int64) 1 << RATE_LIMIT_BITS)

/* A limiter's parameters and the quantities the script needs. */
typedef struct RateParams
{
	int64		rate;
	int64		per_us;
	int64		burst;
	int64		cost;
	int64		inc_us;			/* per * cost / rate = inc_us + inc_f / rate */
	int64		inc_f;
	int64		tau_us;			/* per * burst / rate = tau_us + tau_f / rate */
	int64		tau_f;
} RateParams;

/* What the script saw and did; times relative to Redis's now. */
typedef struct RateResult
{
	bool		allowed;
	int128		tat;			/* TAT after the call - now, in 1/rate us */
	int128		new_tat;		/* max(TAT, now) + increment - now, same unit */
} RateResult;

/* Description of a limiter for messages: rate limiter "key". */
static char *
RateWhat(text *key)
{
	return psprintf("rate limiter %s", DkKeyQuote(key));
}

/* What per may be: a positive fixed duration. */
static const DkDurationRule PER_RULE = {
	1, "positive", DK_MAX_DURATION_US, DK_MAX_DURATION_TEXT,
	"per is the period in which rate units may pass, e.g. '1 second' (a day counts as 24 hours)."
};

/*
 * Read and check key, rate, per, burst and (when with_cost) cost, and derive
 * the script's quantities.  Returns the Redis key.
 */
static char *
RateArgs(FunctionCallInfo fcinfo, bool with_cost, RateParams *p, text **key, size_t *klen)
{
	char	   *rkey;
	int128		tau;
	int128		inc;

	*key = DkArgText(fcinfo, 0, "key");
	p->rate = DkArgInt64(fcinfo, 1, "rate");
	p->per_us = DkArgDurationUs(fcinfo, 2, "per", &PER_RULE);
	p->burst = PG_ARGISNULL(3) ? p->rate : PG_GETARG_INT64(3);
	p->cost = with_cost ? DkArgInt64(fcinfo, 4, "cost") : 0;

	if (p->rate <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rate must be positive, not " INT64_FORMAT, p->rate),
				 errhint("rate is the number of units that may pass per period (per).")));
	if (p->rate > RATE_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rate " INT64_FORMAT " is too large", p->rate),
				 errhint("rate may be at most 2^%d (" INT64_FORMAT "): express the same rate over a shorter per.",
						 RATE_LIMIT_BITS, RATE_LIMIT)));
	if (p->burst <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("burst must be positive, not " INT64_FORMAT, p->burst),
				 errhint("burst is the number of units that may pass at once; NULL means burst = rate.")));
	if (p->cost < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cost must be zero or positive, not " INT64_FORMAT, p->cost),
				 errhint("cost is the number of units the call consumes; 0 only checks.")));
	if (p->cost > p->burst)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cost " INT64_FORMAT " exceeds burst " INT64_FORMAT ": such a request can never be allowed",
						p->cost, p->burst),
				 errhint("Raise burst to at least the largest cost, or split the request into smaller costs.")));

	tau = (int128) p->per_us * p->burst;
	if (tau / p->rate >= RATE_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("burst " INT64_FORMAT " at rate " INT64_FORMAT " per \"%s\" takes too long to refill",
						p->burst, p->rate, DkIntervalText(PG_GETARG_INTERVAL_P(2))),
				 errhint("per / rate * burst must stay below 2^%d microseconds (about 142 years).",
						 RATE_LIMIT_BITS)));
	p->tau_us = (int64) (tau / p->rate);
	p->tau_f = (int64) (tau % p->rate);
	inc = (int128) p->per_us * p->cost;
	p->inc_us = (int64) (inc / p->rate);
	p->inc_f = (int64) (inc % p->rate);

	rkey = DkKeyFromText(DK_KIND_RATE, *key, "key", klen);
	return rkey;
}

/* Run the GCRA script for one limiter. */
static RateResult
RunGcra(text *key, const char *rkey, size_t klen, const RateParams *p, DkSafety safety)
{
	DkCmd	   *cmd = DkCmdScript(DK_LUA_RATE_GCRA, 1);
	DkReply    *r;
	RateResult	res;
	char	   *what = RateWhat(key);
	int64		v[5];

	DkCmdArg(cmd, rkey, klen);
	DkCmdArgInt(cmd, p->rate);
	DkCmdArgInt(cmd, p->inc_us);
	DkCmdArgInt(cmd, p->inc_f);
	DkCmdArgInt(cmd, p->tau_us);
	DkCmdArgInt(cmd, p->tau_f);
	r = DkRedisRunOne(cmd, safety);
	if (r->type == DK_REPLY_ERROR && strncmp(r->str, "DKBADSTATE", 10) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("Redis key of %s does not hold a rate limiter state", what),
				 errhint("Another program wrote to distkit's key space; delete the key or change distkit.prefix.")));
	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem != 5)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for %s", what)));
	for (int i = 0; i < 5; i++)
		v[i] = DkReplyInt64(r->elem[i], what);
	res.allowed = v[0] == 1;
	res.tat = (int128) v[1] * p->rate + v[2];
	res.new_tat = (int128) v[3] * p->rate + v[4];
	return res;
}

/* ceil(a / b) for a >= 0, b > 0. */
static int128
CeilDiv(int128 a, int128 b)
{
	return (a + b - 1) / b;
}

/* Units that may pass now: floor((tau - (TAT - now)) / T), at least 0. */
static int64
Remaining(const RateParams *p, const RateResult *res)
{
	int128		room = (int128) p->per_us * p->burst - res->tat;

	if (room <= 0)
		return 0;
	return (int64) (room / p->per_us);
}

/* An interval of d / rate microseconds, rounded up to a whole microsecond. */
static Interval *
RateInterval(const RateParams *p, int128 d)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = d <= 0 ? 0 : (int64) CeilDiv(d, p->rate);
	return iv;
}

/* distkit_rate_allow(key, rate, per, burst, cost): may cost units pass now? */
Datum
distkit_rate_allow(PG_FUNCTION_ARGS)
{
	RateParams	p;
	text	   *key;
	size_t		klen;
	char	   *rkey = RateArgs(fcinfo, true, &p, &key, &klen);
	RateResult	res = RunGcra(key, rkey, klen, &p, DK_NOT_IDEMPOTENT);

	PG_RETURN_BOOL(res.allowed);
}

/*
 * distkit_rate_check(key, rate, per, burst, cost): the same decision, with
 * remaining, retry_after (NULL when allowed) and reset_after.
 */
Datum
distkit_rate_check(PG_FUNCTION_ARGS)
{
	RateParams	p;
	text	   *key;
	size_t		klen;
	char	   *rkey = RateArgs(fcinfo, true, &p, &key, &klen);
	RateResult	res;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	res = RunGcra(key, rkey, klen, &p, DK_NOT_IDEMPOTENT);
	values[0] = BoolGetDatum(res.allowed);
	values[1] = Int64GetDatum(Remaining(&p, &res));
	if (res.allowed)
		nulls[2] = true;
	else
		values[2] = IntervalPGetDatum(RateInterval(&p, res.new_tat -
												   (int128) p.per_us * p.burst));
	values[3] = IntervalPGetDatum(RateInterval(&p, res.tat));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* distkit_rate_peek(key, rate, per, burst): remaining and reset_after, consuming nothing. */
Datum
distkit_rate_peek(PG_FUNCTION_ARGS)
{
	RateParams	p;
	text	   *key;
	size_t		klen;
	char	   *rkey = RateArgs(fcinfo, false, &p, &key, &klen);
	RateResult	res;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	/* cost 0: the script writes nothing, so a retry is harmless */
	res = RunGcra(key, rkey, klen, &p, DK_IDEMPOTENT);
	values[0] = Int64GetDatum(Remaining(&p, &res));
	values[1] = IntervalPGetDatum(RateInterval(&p, res.tat));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* distkit_rate_reset(key): forget the limiter's state; true if it had any. */
Datum
distkit_rate_reset(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_RATE, key, "key", &klen);
	DkCmd	   *cmd = DkCmdNew("DEL");

	DkCmdArg(cmd, rkey, klen);
	PG_RETURN_BOOL(DkReplyInt64(DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT), RateWhat(key)) > 0);
}
