/*-------------------------------------------------------------------------
 *
 * cache.c
 *		A cache with TTL shared by the fleet: distkit_cache_set, _add, _get
 *		(each for jsonb, text and bytea), _delete, _exists, _ttl and
 *		distkit_cache_clear; and the helpers the other fleet-state
 *		primitives (idempotency.c, breaker.c) share: durations, TTLs, value
 *		sizes and jsonb values.
 *
 * A cached value K is one Redis string <prefix>:kv:{K'} holding the value's
 * bytes: a jsonb as its text form (jsonb_out, read back with jsonb_in), a
 * text as its bytes in the database encoding, a bytea as is.  The three
 * variants share one key space, so a value stored as jsonb can be read as
 * text and the other way round when it is valid JSON.  Every call is one
 * plain Redis command (SET [NX] [PX], GET, DEL, EXISTS, PTTL), atomic by
 * itself; expiry is Redis's own (PX, milliseconds).
 *
 * Values are at most DK_MAX_VALUE_BYTES (512 kB) long: a larger one is
 * rejected with SQLSTATE 54000 before anything is sent.
 *
 * The cache is not transactional: a value set stays set if the calling
 * transaction rolls back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "cache.h"
#include "distkit.h"
#include "keys.h"
#include "redis.h"
#include "version.h"

PG_FUNCTION_INFO_V1(distkit_cache_set);
PG_FUNCTION_INFO_V1(distkit_cache_set_text);
PG_FUNCTION_INFO_V1(distkit_cache_set_bytea);
PG_FUNCTION_INFO_V1(distkit_cache_add);
PG_FUNCTION_INFO_V1(distkit_cache_add_text);
PG_FUNCTION_INFO_V1(distkit_cache_add_bytea);
PG_FUNCTION_INFO_V1(distkit_cache_get);
PG_FUNCTION_INFO_V1(distkit_cache_get_text);
PG_FUNCTION_INFO_V1(distkit_cache_get_bytea);
PG_FUNCTION_INFO_V1(distkit_cache_delete);
PG_FUNCTION_INFO_V1(distkit_cache_exists);
PG_FUNCTION_INFO_V1(distkit_cache_ttl);
PG_FUNCTION_INFO_V1(distkit_cache_clear);

/* The three representations of a cached value. */
typedef enum CacheType
{
	CACHE_JSONB,
	CACHE_TEXT,
	CACHE_BYTEA
} CacheType;

/* What a cache or idempotency ttl may be: positive; NULL is no expiry. */
static const DkDurationRule TTL_RULE = {
	1, "positive", DK_MAX_DURATION_US, DK_MAX_DURATION_TEXT, "Pass NULL for no expiry."
};

/* A ttl argument in whole milliseconds, rounded up; -1 for NULL (no expiry). */
int64
DkArgTtlMs(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		return -1;
	return DkArgDurationMs(fcinfo, argno, argname, &TTL_RULE);
}

/* Error 54000 unless a value of len bytes fits the size limit. */
static void
CheckValueSize(size_t len, const char *what)
{
	if (len > DK_MAX_VALUE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value of %s is %zu bytes long, more than the limit of %d bytes",
						what, len, DK_MAX_VALUE_BYTES),
				 errhint("Values may be up to 512 kB (their text form for jsonb); store large objects elsewhere and cache a reference.")));
}

/* A jsonb argument as its text form (jsonb_out), within the size limit. */
char *
DkArgJsonbText(FunctionCallInfo fcinfo, int argno, const char *argname,
			   const char *what, size_t *len)
{
	char	   *s;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", argname),
				 errhint("Store the JSON value 'null'::jsonb if you mean a JSON null.")));
	s = DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(argno)));
	*len = strlen(s);
	CheckValueSize(*len, what);
	return s;
}

/* Error 22021 unless s[0..len) is valid text in the database encoding. */
static void
CheckEncoding(const char *s, size_t len, const char *what, const char *hint)
{
	if (!pg_verify_mbstr(GetDatabaseEncoding(), s, (int) len, true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("value of %s is not valid text in encoding \"%s\"",
						what, GetDatabaseEncodingName()),
				 errhint("%s", hint)));
}

/*
 * Bytes read from Redis as a jsonb Datum: they must be valid text and JSON
 * (error 22021 / 22P02 naming what, with hint).
 */
Datum
DkJsonbFromText(const char *s, size_t len, const char *what, const char *hint)
{
	JsonLexContext *lex;
	JsonParseErrorType err;

	CheckEncoding(s, len, what, hint);
	lex = makeJsonLexContextCstringLen(pnstrdup(s, len), (int) len, GetDatabaseEncoding(), false);
	err = pg_parse_json(lex, &nullSemAction);
	if (err != JSON_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("value of %s is not valid JSON", what),
				 errdetail("%s", json_errdetail(err, lex)),
				 errhint("%s", hint)));
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(s, len)));
}

/* Description of a cache key for messages: cache key "key". */
static char *
CacheWhat(text *key)
{
	return psprintf("cache key %s", DkKeyQuote(key));
}

/* Raise an unexpected reply. */
static void
pg_attribute_noreturn()
Unexpected(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_SYSTEM_ERROR),
			 errmsg("unexpected reply from Redis for %s", what)));
}

/*
 * SET the value argument (argno 1, of type t) under key with the TTL of
 * argno 2; only if absent when nx.  Returns true if it was stored.
 */
static bool
CacheStore(FunctionCallInfo fcinfo, CacheType t, bool nx)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	char	   *what = CacheWhat(key);
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_CACHE, key, "key", &klen);
	int64		ttl_ms;
	const char *val;
	size_t		vlen;
	DkCmd	   *cmd;
	DkReply    *r;

	if (t == CACHE_JSONB)
		val = DkArgJsonbText(fcinfo, 1, "value", what, &vlen);
	else
	{
		struct varlena *v;

		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("value must not be NULL"),
					 errhint("Use distkit_cache_delete to remove a value.")));
		v = PG_GETARG_VARLENA_PP(1);	/* a text or a bytea */
		val = VARDATA_ANY(v);
		vlen = VARSIZE_ANY_EXHDR(v);
		CheckValueSize(vlen, what);
	}
	ttl_ms = DkArgTtlMs(fcinfo, 2, "ttl");

	cmd = DkCmdNew("SET");
	DkCmdArg(cmd, rkey, klen);
	DkCmdArg(cmd, val, vlen);
	if (nx)
		DkCmdArgStr(cmd, "NX");
	if (ttl_ms > 0)
	{
		DkCmdArgStr(cmd, "PX");
		DkCmdArgInt(cmd, ttl_ms);
	}
	r = DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, what);
	if (r->type == DK_REPLY_NIL && nx)
		return false;
	if (r->type != DK_REPLY_STRING || strcmp(r->str, "OK") != 0)
		Unexpected(what);
	return true;
}

/* distkit_cache_set(key, value jsonb, ttl): store a value. */
Datum
distkit_cache_set(PG_FUNCTION_ARGS)
{
	(void) CacheStore(fcinfo, CACHE_JSONB, false);
	PG_RETURN_VOID();
}

/* distkit_cache_set_text(key, value text, ttl): store a text value. */
Datum
distkit_cache_set_text(PG_FUNCTION_ARGS)
{
	(void) CacheStore(fcinfo, CACHE_TEXT, false);
	PG_RETURN_VOID();
}

/* distkit_cache_set_bytea(key, value bytea, ttl): store a bytea value. */
Datum
distkit_cache_set_bytea(PG_FUNCTION_ARGS)
{
	(void) CacheStore(fcinfo, CACHE_BYTEA, false);
	PG_RETURN_VOID();
}

/* distkit_cache_add(key, value jsonb, ttl): store only if absent; true if stored. */
Datum
distkit_cache_add(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CacheStore(fcinfo, CACHE_JSONB, true));
}

/* distkit_cache_add_text(key, value text, ttl): store only if absent. */
Datum
distkit_cache_add_text(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CacheStore(fcinfo, CACHE_TEXT, true));
}

/* distkit_cache_add_bytea(key, value bytea, ttl): store only if absent. */
Datum
distkit_cache_add_bytea(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CacheStore(fcinfo, CACHE_BYTEA, true));
}

/* GET a cached value; NULL reply when absent or expired. */
static DkReply *
CacheFetch(FunctionCallInfo fcinfo, text **key)
{
	size_t		klen;
	char	   *rkey;
	DkCmd	   *cmd = DkCmdNew("GET");
	DkReply    *r;

	*key = DkArgText(fcinfo, 0, "key");
	rkey = DkKeyFromText(DK_KIND_CACHE, *key, "key", &klen);
	DkCmdArg(cmd, rkey, klen);
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		DkReplyRaiseError(r, CacheWhat(*key));
	if (r->type != DK_REPLY_NIL && r->type != DK_REPLY_STRING)
		Unexpected(CacheWhat(*key));
	return r;
}

/* distkit_cache_get(key): the value as jsonb, NULL when absent or expired. */
Datum
distkit_cache_get(PG_FUNCTION_ARGS)
{
	text	   *key;
	DkReply    *r = CacheFetch(fcinfo, &key);

	if (r->type == DK_REPLY_NIL)
		PG_RETURN_NULL();
	return DkJsonbFromText(r->str, r->len, CacheWhat(key),
						   "It was not stored as jsonb: read it with distkit_cache_get_text or distkit_cache_get_bytea.");
}

/* distkit_cache_get_text(key): the value as text, NULL when absent or expired. */
Datum
distkit_cache_get_text(PG_FUNCTION_ARGS)
{
	text	   *key;
	DkReply    *r = CacheFetch(fcinfo, &key);

	if (r->type == DK_REPLY_NIL)
		PG_RETURN_NULL();
	CheckEncoding(r->str, r->len, CacheWhat(key),
				  "It was stored as bytea (or by another program): read it with distkit_cache_get_bytea.");
	PG_RETURN_TEXT_P(cstring_to_text_with_len(r->str, (int) r->len));
}

/* distkit_cache_get_bytea(key): the value's bytes, NULL when absent or expired. */
Datum
distkit_cache_get_bytea(PG_FUNCTION_ARGS)
{
	text	   *key;
	DkReply    *r = CacheFetch(fcinfo, &key);
	bytea	   *b;

	if (r->type == DK_REPLY_NIL)
		PG_RETURN_NULL();
	b = palloc(VARHDRSZ + r->len);
	SET_VARSIZE(b, VARHDRSZ + r->len);
	memcpy(VARDATA(b), r->str, r->len);
	PG_RETURN_BYTEA_P(b);
}

/* Run one command on the key (argument 0) of a cached value; its integer reply. */
static int64
CacheKeyCommand(FunctionCallInfo fcinfo, const char *command, DkSafety safety)
{
	text	   *key = DkArgText(fcinfo, 0, "key");
	size_t		klen;
	char	   *rkey = DkKeyFromText(DK_KIND_CACHE, key, "key", &klen);
	DkCmd	   *cmd = DkCmdNew(command);
	DkReply    *r;

	DkCmdArg(cmd, rkey, klen);
	r = DkRedisRunOne(cmd, safety);
	if (r->type != DK_REPLY_INTEGER && r->type != DK_REPLY_ERROR)
		Unexpected(CacheWhat(key));
	return DkReplyInt64(r, CacheWhat(key));
}

/* distkit_cache_delete(key): remove a value; true if there was one. */
Datum
distkit_cache_delete(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CacheKeyCommand(fcinfo, "DEL", DK_NOT_IDEMPOTENT) > 0);
}

/* distkit_cache_exists(key): true if a value is cached (and not expired). */
Datum
distkit_cache_exists(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CacheKeyCommand(fcinfo, "EXISTS", DK_IDEMPOTENT) > 0);
}

/*
 * distkit_cache_ttl(key): time left before the value expires, to the
 * millisecond; NULL when there is no value or it never expires.
 */
Datum
distkit_cache_ttl(PG_FUNCTION_ARGS)
{
	int64		ms = CacheKeyCommand(fcinfo, "PTTL", DK_IDEMPOTENT);
	Interval   *iv;

	if (ms < 0)					/* -2: no such key, -1: no expiry */
		PG_RETURN_NULL();
	iv = palloc0(sizeof(Interval));
	iv->time = ms * 1000;
	PG_RETURN_INTERVAL_P(iv);
}

/* DkRedisScan visitor: UNLINK one batch, counting what was removed. */
static void
ClearBatch(DkReply *keys, void *arg)
{
	*(int64 *) arg += DkRedisUnlinkKeys(keys, "distkit_cache_clear");
}

/*
 * distkit_cache_clear(): delete every cached value under the current
 * prefix, return how many.  SCAN (every master of a cluster) + UNLINK in
 * batches: never one long blocking command.
 */
Datum
distkit_cache_clear(PG_FUNCTION_ARGS)
{
	int64		removed = 0;

	DkCheckSqlVersion();
	DkRedisScan(DkKeyPattern(DK_KIND_CACHE), ClearBatch, &removed, "distkit_cache_clear");
	PG_RETURN_INT64(removed);
}
