/*-------------------------------------------------------------------------
 *
 * queue.c
 *		Work queues on Redis Streams: distkit_queue_send, _read, _ack,
 *		_pending, _length and _purge.  The transactional way in is the
 *		outbox (outbox.c); this file owns the stream side.
 *
 * A queue Q is one stream <prefix>:q:{Q'}; its dead letters are the stream
 * <prefix>:qd:{Q'} and the record of the outbox rows it holds is the sorted
 * set <prefix>:qo:{Q'} (keys.c: one hash slot per queue, so every script
 * touches one slot and queues spread over a cluster's masters).
 *
 * An entry has the fields payload (the jsonb as JSON text), origin
 * ("<system identifier>:<database oid>" of the server that sent it) and,
 * for a message shipped from the outbox, outbox_id (its row's id): any
 * Redis client reads them with XREADGROUP.  Consumers share a consumer
 * group; distkit_queue_read creates it on first use (reading the stream
 * from its start), reclaims messages another consumer did not acknowledge
 * within the visibility timeout, moves a message delivered
 * distkit.queue_max_deliveries times to the dead-letter stream, and then
 * reads new messages, all in one script (lua/queue_read.lua).
 *
 * distkit_queue_send is immediate and not transactional, like a strict
 * counter: one XADD, never resent after a lost reply (SQLSTATE 08007).
 * distkit.queue_max_length bounds every stream with MAXLEN ~ (0: no bound).
 * Payloads are at most DK_MAX_VALUE_BYTES (512 kB) of JSON text (54000).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "cache.h"
#include "distkit.h"
#include "keys.h"
#include "queue.h"
#include "redis.h"

#define MAX_GROUP_BYTES 255
#define MAX_READ_COUNT 1000

PG_FUNCTION_INFO_V1(distkit_queue_send);
PG_FUNCTION_INFO_V1(distkit_queue_read);
PG_FUNCTION_INFO_V1(distkit_queue_ack);
PG_FUNCTION_INFO_V1(distkit_queue_pending);
PG_FUNCTION_INFO_V1(distkit_queue_length);
PG_FUNCTION_INFO_V1(distkit_queue_purge);

static int	queue_max_deliveries = 5;
static int	queue_max_length = 0;

/* Defines distkit.queue_max_deliveries and distkit.queue_max_length. */
void
DkQueueInit(void)
{
	DefineCustomIntVariable("distkit.queue_max_deliveries",
							"Deliveries after which a queue message goes to the dead-letter stream.",
							NULL,
							&queue_max_deliveries,
							5, 1, 1000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("distkit.queue_max_length",
							"Approximate bound on a queue's stream length (MAXLEN ~); 0: none.",
							"Older entries are trimmed, consumed or not.",
							&queue_max_length,
							0, 0, INT_MAX,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
}

/* The stream bound of distkit.queue_max_length (0: none). */
int
DkQueueMaxLength(void)
{
	return queue_max_length;
}

/* Validate a queue name (1 to 1024 bytes); returns its length. */
size_t
DkQueueCheckName(text *queue)
{
	return DkKeyCheck(queue, "queue");
}

/* Error 54000 unless a payload of len bytes (JSON text) fits. */
void
DkQueueCheckPayloadLen(size_t len)
{
	if (len > DK_MAX_VALUE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload is %zu bytes long as JSON text, more than the limit of %d bytes",
						len, DK_MAX_VALUE_BYTES),
				 errhint("Queue messages may be up to 512 kB; store large documents elsewhere and send a reference.")));
}

/* This server and database, as written in the origin field of entries. */
char *
DkQueueOrigin(void)
{
	static char origin[64];

	if (origin[0] == '\0')
		snprintf(origin, sizeof(origin), UINT64_FORMAT ":%u", GetSystemIdentifier(), MyDatabaseId);
	return origin;
}

/* A group or consumer name argument: 1 to 255 bytes. */
static char *
ArgName(FunctionCallInfo fcinfo, int argno, const char *argname, size_t *len)
{
	text	   *t = DkArgText(fcinfo, argno, argname);

	*len = VARSIZE_ANY_EXHDR(t);
	if (*len == 0 || *len > MAX_GROUP_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be 1 to %d bytes long, not %zu", argname, MAX_GROUP_BYTES, *len),
				 errhint("Name consumer groups and consumers with short non-empty text.")));
	return text_to_cstring(t);
}

/* Description of a queue for messages: queue "name". */
static char *
QueueWhat(text *queue)
{
	return psprintf("queue %s", DkKeyQuote(queue));
}

/* The Redis key of kind for the queue argument argno. */
static char *
QueueKey(FunctionCallInfo fcinfo, int argno, const char *kind, size_t *len)
{
	return DkKeyFromText(kind, DkArgText(fcinfo, argno, "queue"), "queue", len);
}

/* Raise a queue command's error reply; a wrong key type says so. */
static void
pg_attribute_noreturn()
QueueError(const DkReply *r, const char *what)
{
	if (strncmp(r->str, "WRONGTYPE", 9) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("Redis key of %s is not a stream", what),
				 errhint("Another program wrote to distkit's key space; delete the key or change distkit.prefix.")));
	if (strstr(r->str, "Invalid stream ID") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid message id for %s", what),
				 errhint("Pass an id as distkit_queue_read returned it, e.g. '1700000000000-0'.")));
	DkReplyRaiseError(r, what);
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

/* distkit_queue_send(queue, payload): XADD now; returns the entry id. */
Datum
distkit_queue_send(PG_FUNCTION_ARGS)
{
	char	   *what;
	size_t		klen;
	char	   *key = QueueKey(fcinfo, 0, DK_KIND_QUEUE, &klen);
	char	   *payload;
	DkCmd	   *cmd;
	DkReply    *r;

	what = QueueWhat(PG_GETARG_TEXT_PP(0));
	DkArgNotNull(fcinfo, 1, "payload");
	payload = DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(1)));
	DkQueueCheckPayloadLen(strlen(payload));
	cmd = DkCmdScript(DK_LUA_QUEUE_SEND, 1);
	DkCmdArg(cmd, key, klen);
	DkCmdArgInt(cmd, queue_max_length);
	DkCmdArgStr(cmd, payload);
	DkCmdArgStr(cmd, DkQueueOrigin());
	r = DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		QueueError(r, what);
	if (r->type != DK_REPLY_STRING)
		Unexpected(what);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(r->str, r->len));
}

/*
 * distkit_queue_read(queue, grp, consumer, count, visibility): up to count
 * messages for this consumer: reclaimed ones first, then new ones.
 */
Datum
distkit_queue_read(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	size_t		klen;
	size_t		dlen;
	char	   *key = QueueKey(fcinfo, 0, DK_KIND_QUEUE, &klen);
	char	   *dkey = QueueKey(fcinfo, 0, DK_KIND_QUEUE_DEAD, &dlen);
	char	   *what = QueueWhat(PG_GETARG_TEXT_PP(0));
	size_t		glen;
	size_t		clen;
	char	   *grp = ArgName(fcinfo, 1, "grp", &glen);
	char	   *consumer = ArgName(fcinfo, 2, "consumer", &clen);
	int64		count = DkArgInt64(fcinfo, 3, "count");
	int64		vis_ms = DkArgDurationMs(fcinfo, 4, "visibility", &DK_DURATION_TTL);
	DkCmd	   *cmd;
	DkReply    *r;

	if (count < 1 || count > MAX_READ_COUNT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("count must be between 1 and %d, not " INT64_FORMAT, MAX_READ_COUNT, count),
				 errhint("Read in batches of at most %d messages.", MAX_READ_COUNT)));
	InitMaterializedSRF(fcinfo, 0);
	cmd = DkCmdScript(DK_LUA_QUEUE_READ, 2);
	DkCmdArg(cmd, key, klen);
	DkCmdArg(cmd, dkey, dlen);
	DkCmdArg(cmd, grp, glen);
	DkCmdArg(cmd, consumer, clen);
	DkCmdArgInt(cmd, count);
	DkCmdArgInt(cmd, vis_ms);
	DkCmdArgInt(cmd, queue_max_deliveries);
	/* it claims and moves messages: never resent */
	r = DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		QueueError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem % 3 != 0)
		Unexpected(what);
	for (int i = 0; i < r->nelem; i += 3)
	{
		Datum		row[3];
		bool		isnull[3] = {false, false, false};

		if (r->elem[i]->type != DK_REPLY_STRING || r->elem[i + 1]->type != DK_REPLY_STRING ||
			r->elem[i + 2]->type != DK_REPLY_INTEGER)
			Unexpected(what);
		row[0] = PointerGetDatum(cstring_to_text_with_len(r->elem[i]->str, r->elem[i]->len));
		row[1] = DkJsonbFromText(r->elem[i + 1]->str, r->elem[i + 1]->len, what,
								 "Another program added an entry whose payload field is not JSON.");
		row[2] = Int32GetDatum((int32) r->elem[i + 2]->integer);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
	}
	return (Datum) 0;
}

/* distkit_queue_ack(queue, grp, id): true if the message was pending. */
Datum
distkit_queue_ack(PG_FUNCTION_ARGS)
{
	size_t		klen;
	char	   *key = QueueKey(fcinfo, 0, DK_KIND_QUEUE, &klen);
	char	   *what = QueueWhat(PG_GETARG_TEXT_PP(0));
	size_t		glen;
	size_t		ilen;
	char	   *grp = ArgName(fcinfo, 1, "grp", &glen);
	char	   *id = text_to_cstring(DkArgText(fcinfo, 2, "id"));
	DkCmd	   *cmd;
	DkReply    *r;

	ilen = strlen(id);
	cmd = DkCmdNew("XACK");
	DkCmdArg(cmd, key, klen);
	DkCmdArg(cmd, grp, glen);
	DkCmdArg(cmd, id, ilen);
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		QueueError(r, what);
	PG_RETURN_BOOL(DkReplyInt64(r, what) > 0);
}

/*
 * distkit_queue_pending(queue, grp): per consumer, the messages delivered
 * and not acknowledged, and how long ago its oldest one was delivered.
 */
Datum
distkit_queue_pending(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	size_t		klen;
	char	   *key = QueueKey(fcinfo, 0, DK_KIND_QUEUE, &klen);
	char	   *what = QueueWhat(PG_GETARG_TEXT_PP(0));
	size_t		glen;
	char	   *grp = ArgName(fcinfo, 1, "grp", &glen);
	DkCmd	   *cmd;
	DkReply    *r;

	InitMaterializedSRF(fcinfo, 0);
	cmd = DkCmdScript(DK_LUA_QUEUE_PENDING, 1);
	DkCmdArg(cmd, key, klen);
	DkCmdArg(cmd, grp, glen);
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		QueueError(r, what);
	if (r->type != DK_REPLY_ARRAY || r->nelem % 3 != 0)
		Unexpected(what);
	for (int i = 0; i < r->nelem; i += 3)
	{
		Datum		row[3];
		bool		isnull[3] = {false, false, false};
		Interval   *iv = palloc0(sizeof(Interval));

		if (r->elem[i]->type != DK_REPLY_STRING || r->elem[i + 1]->type != DK_REPLY_INTEGER ||
			r->elem[i + 2]->type != DK_REPLY_INTEGER)
			Unexpected(what);
		iv->time = r->elem[i + 2]->integer * 1000;
		row[0] = PointerGetDatum(cstring_to_text_with_len(r->elem[i]->str, r->elem[i]->len));
		row[1] = Int64GetDatum(r->elem[i + 1]->integer);
		row[2] = IntervalPGetDatum(iv);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
	}
	return (Datum) 0;
}

/* distkit_queue_length(queue): entries in the stream (XLEN). */
Datum
distkit_queue_length(PG_FUNCTION_ARGS)
{
	size_t		klen;
	char	   *key = QueueKey(fcinfo, 0, DK_KIND_QUEUE, &klen);
	char	   *what = QueueWhat(PG_GETARG_TEXT_PP(0));
	DkCmd	   *cmd = DkCmdNew("XLEN");
	DkReply    *r;

	DkCmdArg(cmd, key, klen);
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		QueueError(r, what);
	PG_RETURN_INT64(DkReplyInt64(r, what));
}

/*
 * distkit_queue_purge(queue): delete the stream and its dead letters (its
 * groups go with it); returns the number of Redis keys deleted.  The
 * record of shipped outbox rows stays, so rows in flight are not doubled.
 */
Datum
distkit_queue_purge(PG_FUNCTION_ARGS)
{
	size_t		klen;
	size_t		dlen;
	char	   *key = QueueKey(fcinfo, 0, DK_KIND_QUEUE, &klen);
	char	   *dkey = QueueKey(fcinfo, 0, DK_KIND_QUEUE_DEAD, &dlen);
	char	   *what = QueueWhat(PG_GETARG_TEXT_PP(0));
	DkCmd	   *cmd = DkCmdNew("DEL");
	DkReply    *r;

	DkCmdArg(cmd, key, klen);
	DkCmdArg(cmd, dkey, dlen);
	r = DkRedisRunOne(cmd, DK_IDEMPOTENT);
	if (r->type == DK_REPLY_ERROR)
		QueueError(r, what);
	PG_RETURN_INT64(DkReplyInt64(r, what));
}
