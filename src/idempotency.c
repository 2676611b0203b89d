/*-------------------------------------------------------------------------
 *
 * idempotency.c
 *		Idempotency keys (as Stripe's): distkit_idempotency_begin,
 *		distkit_idempotency_complete and distkit_idempotency_abandon, and
 *		the GUC distkit.idempotency_lease.
 *
 * An idempotency key K is one Redis hash <prefix>:ik:{K'} with fields st
 * ('in_progress' or 'completed'), tok (the holder's token), ttl (how long
 * to keep the result) and res (the result, a jsonb's text form).  begin is
 * one Lua script: it claims an absent key for the caller (state
 * 'started'), says 'in_progress' while another caller holds it, and returns
 * the stored result once 'completed'.
 *
 * "The caller" is a random token: begin draws one per key the first time
 * this session claims it and keeps it in a backend-local hash table, so
 * complete and abandon from the same session prove they hold the claim,
 * and a session that claims a key it already holds (e.g. it retries after
 * its transaction rolled back, or after a lost reply) gets 'started' again.
 * The token is remembered before the script is sent, which also makes
 * begin safe to retry on a new connection.
 *
 * An in-progress claim expires after distkit.idempotency_lease (default
 * 1 minute, renewed by each begin of the holder), so a holder that dies
 * never blocks the key for longer; a completed result is kept for ttl
 * after completion (NULL: for ever).
 *
 * Not transactional: a claim or a result stays in Redis when the calling
 * transaction rolls back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "cache.h"
#include "distkit.h"
#include "keys.h"
#include "redis.h"

PG_FUNCTION_INFO_V1(distkit_idempotency_begin);
PG_FUNCTION_INFO_V1(distkit_idempotency_complete);
PG_FUNCTION_INFO_V1(distkit_idempotency_abandon);

/* Longest Redis key of a claim: prefix, kind, braces, every byte escaped. */
#define IDEM_RKEY_MAX (DK_MAX_PREFIX_BYTES + 16 + 3 * DK_MAX_KEY_BYTES)
#define IDEM_TOKEN_BYTES 16

/* A claim this session made: its Redis key, token and ttl. */
typedef struct HeldClaim
{
	char		rkey[IDEM_RKEY_MAX];	/* hash key (a string) */
	char		token[2 * IDEM_TOKEN_BYTES + 1];
	int64		ttl_ms;			/* 0: keep the result for ever */
} HeldClaim;

static HTAB *held_claims = NULL;
static int	lease_ms = 60000;

/* Defines distkit.idempotency_lease. */
void
DkIdempotencyInit(void)
{
	DefineCustomIntVariable("distkit.idempotency_lease",
							"How long an in-progress idempotency claim lasts if its holder neither completes nor abandons it.",
							"A claim whose holder dies is free again after this time.",
							&lease_ms,
							60000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* Description of an idempotency key for messages. */
static char *
IdemWhat(text *key)
{
	return psprintf("idempotency key %s", DkKeyQuote(key));
}

/* This session's claim of rkey, or NULL; with create, a new one if none. */
static HeldClaim *
HeldClaimFor(const char *rkey, bool create)
{
	bool		found;
	HeldClaim  *c;

	if (held_claims == NULL)
	{
		HASHCTL		ctl;

		if (!create)
			return NULL;
		ctl.keysize = IDEM_RKEY_MAX;
		ctl.entrysize = sizeof(HeldClaim);
		ctl.hcxt = TopMemoryContext;
		held_claims = hash_create("distkit idempotency claims", 16, &ctl,
								  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	c = hash_search(held_claims, rkey, create ? HASH_ENTER : HASH_FIND, &found);
	if (create && !found)
	{
		uint8		raw[IDEM_TOKEN_BYTES];

		if (!pg_strong_random(raw, sizeof(raw)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random idempotency token")));
		for (int i = 0; i < IDEM_TOKEN_BYTES; i++)
			snprintf(c->token + 2 * i, 3, "%02x", raw[i]);
		c->ttl_ms = 0;
	}
	return c;
}

/* Forget this session's claim of rkey. */
static void
HeldClaimForget(const char *rkey)
{
	if (held_claims != NULL)
		(void) hash_search(held_claims, rkey, HASH_REMOVE, NULL);
}

/* Raise a script's error reply. */
static void
pg_attribute_noreturn()
IdemError(const DkReply *r, const char *what)
{
	if (strncmp(r->str, "DKBADSTATE", 10) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("Redis key of %s does not hold an idempotency claim", what),
				 errhint("Another program wrote to distkit's key space; delete the key or change distkit.prefix.")));
	DkReplyRaiseError(r, what);
}

/*
 * distkit_idempotency_begin(key, ttl): claim the key.  Returns (state,
 * result): ('started', NULL) when this caller now holds it, ('in_progress',
 * NULL) while another caller does, ('completed', result) afterwards.
 */
Datum
distkit_idempotency_begin(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	char	   *what = IdemWhat(key);
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_IDEMPOTENCY, key, "key", &klen);
	int64		ttl_ms = DkArgTtlMs(fcinfo, 1, "ttl");
	HeldClaim  *claim;
	DkCmd	   *cmd;
	DkReply    *r;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, true};
	const char *state;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/* remembered before sending: a retry after a lost reply is recognised */
	claim = HeldClaimFor(rkey, true);
	claim->ttl_ms = ttl_ms > 0 ? ttl_ms : 0;

	cmd = DkCmdScript(DK_LUA_IDEM_BEGIN, 1);
	DkCmdArg(cmd, rkey, klen);
	DkCmdArgStr(cmd, claim->token);
	DkCmdArgInt(cmd, lease_ms);
	DkCmdArgInt(cmd, claim->ttl_ms);
	/* the same token gives the same answer: safe to retry */
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		IdemError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem < 1 || r->elem[0]->type != DK_REPLY_STRING)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for %s", what)));
	state = r->elem[0]->str;
	if (strcmp(state, "started") != 0)
		HeldClaimForget(rkey);
	if (strcmp(state, "completed") == 0)
	{
		if (r->nelem != 2 || r->elem[1]->type != DK_REPLY_STRING)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("unexpected reply from Redis for %s", what)));
		values[1] = DkJsonbFromText(r->elem[1]->str, r->elem[1]->len, what,
									"Another program wrote to distkit's key space; delete the key or change distkit.prefix.");
		nulls[1] = false;
	}
	else if (strcmp(state, "started") != 0 && strcmp(state, "in_progress") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis for %s", what)));
	values[0] = CStringGetTextDatum(state);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * distkit_idempotency_complete(key, result): store the result of this
 * session's claim; true if stored.  False when this session holds no claim
 * of the key (never began it, completed or abandoned it already, or its
 * lease expired and another caller claimed the key).
 */
Datum
distkit_idempotency_complete(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	char	   *what = IdemWhat(key);
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_IDEMPOTENCY, key, "key", &klen);
	size_t		rlen;
	char	   *result = DkArgJsonbText(fcinfo, 1, "result", what, &rlen);
	HeldClaim  *claim = HeldClaimFor(rkey, false);
	DkCmd	   *cmd;
	DkReply    *r;

	if (claim == NULL)
		PG_RETURN_BOOL(false);
	cmd = DkCmdScript(DK_LUA_IDEM_COMPLETE, 1);
	DkCmdArg(cmd, rkey, klen);
	DkCmdArgStr(cmd, claim->token);
	DkCmdArg(cmd, result, rlen);
	DkCmdArgInt(cmd, claim->ttl_ms);
	r = DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		IdemError(r, what);
	HeldClaimForget(rkey);
	PG_RETURN_BOOL(DkReplyInt64(r, what) == 1);
}

/*
 * distkit_idempotency_abandon(key): give up this session's claim so that a
 * retry can start again; true if this session held it.
 */
Datum
distkit_idempotency_abandon(PG_FUNCTION_ARGS)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	char	   *what = IdemWhat(key);
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_IDEMPOTENCY, key, "key", &klen);
	HeldClaim  *claim = HeldClaimFor(rkey, false);
	DkCmd	   *cmd;
	DkReply    *r;

	if (claim == NULL)
		PG_RETURN_BOOL(false);
	cmd = DkCmdScript(DK_LUA_IDEM_ABANDON, 1);
	DkCmdArg(cmd, rkey, klen);
	DkCmdArgStr(cmd, claim->token);
	r = DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		IdemError(r, what);
	HeldClaimForget(rkey);
	PG_RETURN_BOOL(DkReplyInt64(r, what) == 1);
}
