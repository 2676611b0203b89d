/*-------------------------------------------------------------------------
 *
 * flush.c
 *		Sends one lax flush batch to Redis and settles every key of it.
 *
 * The worker (worker.c) takes a batch out of the lax buffer (lax.c): a
 * sequence number and, per key, the delta this server counted since the
 * last batch.  This module turns it into script calls, runs them and tells
 * the buffer what Redis answered (DkLaxApplyFlushedMany for a group's
 * acknowledged keys, DkLaxApplyFlushed / DkLaxDropFlushed key by key).
 * It knows each kind of buffered key through a small table of hooks
 * (FlushKinds): how to build and parse one key's call for kinds flushed
 * key by key, or that the kind is flushed in groups.
 *
 * Simple counters are flushed in groups.  A group is a hash slot in a Redis
 * Cluster (every key of a script must be in one slot); on one Redis or a
 * Sentinel-managed one there is a single group (DK_FLUSH_GROUPS_SINGLE):
 * a batch's keys go in as few script calls as possible (a flush cycle
 * holds a few thousand keys, most of them with one increment, so per-slot
 * groups there would still mean about one call per key), and an instance
 * has one record.  One EVALSHA of lua/lax_flush.lua
 * applies a whole group: KEYS = the group's exactly-once record and its
 * counters, ARGV = sequence, part, record lifetime and one delta per key.
 * The record, "<prefix>:cf:{<slot tag>}:<instance id>", is a string
 * "<seq>:<part>" (the last part of a batch applied); the slot tag (keys.c,
 * DkKeySlotTag) puts it in the group's slot.  One record per (instance,
 * group), refreshed to a 7-day lifetime whenever written: the records of
 * an instance that stopped (every server start is a new instance id)
 * expire 7 days after its last flush, so they never pile up, and at most
 * groups x instances-of-the-last-7-days records exist (one per instance on
 * one Redis; at most 16,384 per instance in a Cluster).
 *
 * Exactly once: the script checks the record first (this part already
 * applied: it changes nothing and answers the current totals), writes it
 * BEFORE any increment (if Redis refuses the record, nothing is applied
 * and the call is an error), then applies each key with redis.pcall, so
 * that one key refused for good (wrong type, overflow) is answered as an
 * error for that key alone while the others apply (the record notes the
 * refused keys, so that a resend after a lost reply, which finds the part
 * applied, reports them again: DKREFUSED).  A group of more than
 * FLUSH_PART_KEYS keys is sent as parts 0, 1, ... of at most that many
 * keys, in order; a part applies only on top of the part before it of the
 * same batch (else the script answers DKGAP, a transient error), so a part
 * is never skipped because a later one got in first.  The keys of a group
 * are settled only once every part of it answered, so a resend of the
 * batch (DkLaxTakeInflight: the entries with an unsettled delta, in entry
 * order) rebuilds exactly the same groups and parts with the same sequence.
 *
 * Transient errors (NOSCRIPT, LOADING, BUSY, OOM, READONLY, NOAUTH,
 * NOPERM, MASTERDOWN, MISCONF, NOREPLICAS (writes refused until a save
 * succeeds or replicas are back), DKGAP, a lost reply; TRYAGAIN, MOVED and ASK are
 * handled by redis_cluster.c) raise an ERROR: the groups not yet settled
 * stay in flight and the worker resends them with back-off.
 *
 * Every kind is flushed in groups, through a table of kinds (FlushKinds):
 * the kind's counter keys, its script, the arguments it adds after the
 * record's, and how one counter's answer is read.  Simple counters go
 * through lua/lax_flush.lua (INCRBY); instance-aware slices
 * (DK_LAX_INSTANCE) through lua/instance_flush.lua, which adds this
 * instance's number, serial and live-set version (instance.c).  A group's
 * keys of both kinds share its record: sorted by kind, they make
 * consecutive parts of one sequence.  An instance-aware part may be
 * answered, as a whole and with nothing changed, DKSTALE, DKNEWER or
 * DKREAPED (the live set changed, or this server was reaped):
 * DkInstanceFlushRetry acts on it and the part is resent at once with the
 * live set, and so are the later parts of its group that found it missing
 * (DKGAP).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "flush.h"
#include "instance.h"
#include "keys.h"
#include "lua_scripts.h"
#include "redis.h"

#define FLUSH_CHUNK_KEYS 5000	/* keys per pipelined round trip (about) */
#define FLUSH_PART_KEYS 1000	/* simple counters per script call */
/*
 * instance-aware counters per script call: after a live-set change a part
 * recomputes the cached sum of each of its counters (every slice of it), so
 * a part stays small enough not to hold Redis (one script) for long
 */
#define FLUSH_PART_SLICES 100
#define FLUSH_RECORD_TTL_MS "604800000" /* 7 days */
#define FLUSH_RESENDS 4			/* of a part answered DKSTALE/DKNEWER/DKREAPED */

/* the key prefixes this process wrote records under (DkFlushDeleteRecords) */
static List *record_prefixes = NIL;

static bool ParseTotal(const DkReply *r, DkLaxView *view, const char **error);

/* How one kind of buffered key is flushed. */
typedef struct DkFlushKind
{
	DkLaxKind	kind;
	const char *redis_kind;		/* its counters' keys (keys.h) */
	DkLuaScriptId script;		/* KEYS: record, counters; ARGV: lib/flushrec's, args, deltas */
	int			part_keys;		/* counters per script call */
	/* the arguments after the record's (resend: after a retry answer); NULL: none */
	void		(*args) (DkCmd *cmd, bool resend);
	/* an error reply to act on, then resend the part; NULL: none */
	bool		(*retry) (const DkReply *r);
	/* one counter's answer: its view, or false and *error */
	bool		(*parse) (const DkReply *r, DkLaxView *view, const char **error);
} DkFlushKind;

static const DkFlushKind FlushKinds[] = {
	{DK_LAX_SIMPLE, DK_KIND_COUNTER, DK_LUA_LAX_FLUSH, FLUSH_PART_KEYS, NULL, NULL, ParseTotal},
	{DK_LAX_INSTANCE, DK_KIND_INSTANCE, DK_LUA_INSTANCE_FLUSH, FLUSH_PART_SLICES, DkInstanceFlushArgs,
	DkInstanceFlushRetry, DkInstanceFlushParse},
};

static const DkFlushKind *
KindOf(DkLaxKind kind)
{
	for (int i = 0; i < lengthof(FlushKinds); i++)
		if (FlushKinds[i].kind == kind)
			return &FlushKinds[i];
	elog(ERROR, "no flush for lax kind %c", (char) kind);
}

/* Number of groups of a flush on the current target. */
int
DkFlushGroups(void)
{
	return DkRedisIsCluster() ? DK_KEY_SLOTS : DK_FLUSH_GROUPS_SINGLE;
}

/* An error reply that may go away by itself: keep the batch in flight. */
static bool
TransientError(const char *s)
{
	static const char *const transient[] = {
		"NOSCRIPT", "LOADING", "BUSY", "OOM", "READONLY", "NOAUTH", "NOPERM",
		"MASTERDOWN", "MISCONF", "NOREPLICAS", "DKGAP", "TRYAGAIN", "MOVED", "ASK", "CLUSTERDOWN",
		"DKSTALE", "DKNEWER", "DKREAPED"	/* still, after FLUSH_RESENDS resends */
	};

	for (int i = 0; i < lengthof(transient); i++)
		if (strncmp(s, transient[i], strlen(transient[i])) == 0)
			return true;
	return false;
}

/* Drop an item Redis refused for good, with the WARNING. */
static void
Drop(const DkLaxBatchItem *it, const char *error)
{
	char	   *why = psprintf("dropped a delta of " INT64_FORMAT " for %scounter \"%.*s\": %s",
							   it->delta, it->kind == DK_LAX_INSTANCE ? "instance-aware " : "",
							   it->keylen, it->key, error);

	ereport(WARNING,
			(errmsg("distkit worker %s", why),
			 errhint("Lax increments are checked against this server's view only; Redis refused this one.")));
	DkLaxDropFlushed(it, why);
}

static void
RaiseTransient(const DkReply *r)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("Redis refused a flush: %s", r->type == DK_REPLY_ERROR ? r->str : "unexpected reply")));
}

/* A grouped item and where it goes. */
typedef struct GroupedItem
{
	DkLaxBatchItem *item;
	int			group;
	char	   *rkey;			/* its counter's Redis key */
	size_t		rkeylen;
} GroupedItem;

/* Order: prefix, group, kind, then entry order (the batch's own order). */
static int
CompareGrouped(const void *a, const void *b)
{
	const GroupedItem *x = a;
	const GroupedItem *y = b;
	int			c = strcmp(x->item->prefix, y->item->prefix);

	if (c != 0)
		return c;
	if (x->group != y->group)
		return x->group < y->group ? -1 : 1;
	if (x->item->kind != y->item->kind)
		return x->item->kind < y->item->kind ? -1 : 1;
	return x->item->idx < y->item->idx ? -1 : (x->item->idx > y->item->idx ? 1 : 0);
}

/* One script call: a part of a group, keys of one kind. */
typedef struct FlushPart
{
	int			first;			/* index into the sorted GroupedItems */
	int			count;
	int			number;			/* its number in the group's sequence of parts */
	bool		last;			/* the group's last part */
	int			group_first;	/* the group's first item */
} FlushPart;

/* This instance's record of group under prefix: <prefix>:cf:{<slot tag>}:<id>. */
static char *
RecordKey(const char *prefix, int group)
{
	const char *tag = DkKeySlotTag(group);	/* a tag of the group's slot */
	size_t		len;
	char	   *rec = DkKeyBuildWithPrefix(prefix, DK_KIND_COUNTER_FLUSHED, tag, strlen(tag), &len);

	return psprintf("%s:%s", rec, DkLaxInstanceId());
}

/* Remember that a record exists under prefix (a few prefixes per server). */
static void
NotePrefix(const char *prefix)
{
	ListCell   *lc;
	MemoryContext old;

	foreach(lc, record_prefixes)
		if (strcmp((const char *) lfirst(lc), prefix) == 0)
			return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	record_prefixes = lappend(record_prefixes, pstrdup(prefix));
	MemoryContextSwitchTo(old);
}

/* The script call of part p (resend: after its kind's retry answer). */
static DkCmd *
PartCommand(const GroupedItem *g, const FlushPart *p, const char *seqstr, bool resend)
{
	const GroupedItem *first = &g[p->first];
	const DkFlushKind *k = KindOf(first->item->kind);
	DkCmd	   *cmd = DkCmdScript(k->script, 1 + p->count);

	DkCmdArgStr(cmd, RecordKey(first->item->prefix, first->group));
	for (int i = 0; i < p->count; i++)
		DkCmdArg(cmd, g[p->first + i].rkey, g[p->first + i].rkeylen);
	DkCmdArgStr(cmd, seqstr);
	DkCmdArgInt(cmd, p->number);
	DkCmdArgStr(cmd, FLUSH_RECORD_TTL_MS);
	if (k->args)
		k->args(cmd, resend);
	for (int i = 0; i < p->count; i++)
		DkCmdArgInt(cmd, g[p->first + i].item->delta);
	return cmd;
}

/* A simple counter's answer: its total, or false with *error set. */
static bool
ParseTotal(const DkReply *r, DkLaxView *view, const char **error)
{
	char	   *end;

	*error = NULL;
	view->slice = 0;
	if (r->type == DK_REPLY_INTEGER)
	{
		view->total = (int64) r->integer;
		return true;
	}
	if (r->type == DK_REPLY_STRING)
	{
		errno = 0;
		view->total = strtoll(r->str, &end, 10);
		if (errno == 0 && end != r->str && *end == '\0')
			return true;
		*error = "the counter does not hold an integer";
		return false;
	}
	*error = r->type == DK_REPLY_ERROR ? r->str : "unexpected reply";
	return false;
}

/*
 * The reply r to part p, or, if its kind acts on r (DKSTALE, DKNEWER,
 * DKREAPED), the reply to resending it at once; also resent: a part
 * answered DKGAP whose group had a part resent (*resent_group) in this
 * round.
 */
static DkReply *
SettlePart(const GroupedItem *g, const FlushPart *p, const char *seqstr, DkReply *r,
		   int *resent_group)
{
	const DkFlushKind *k = KindOf(g[p->first].item->kind);

	if (r->type == DK_REPLY_ERROR && *resent_group == p->group_first &&
		strncmp(r->str, "DKGAP", 5) == 0)
		r = DkRedisRunOne(PartCommand(g, p, seqstr, true), DK_IDEMPOTENT_DURABLE);
	for (int attempt = 0; attempt < FLUSH_RESENDS && r->type == DK_REPLY_ERROR &&
		 k->retry != NULL && k->retry(r); attempt++)
	{
		*resent_group = p->group_first;
		r = DkRedisRunOne(PartCommand(g, p, seqstr, true), DK_IDEMPOTENT_DURABLE);
	}
	return r;
}

/*
 * Send one batch (sequence seq) to Redis and settle each key: one script
 * call per part of a group, pipelined in rounds of about FLUSH_CHUNK_KEYS
 * keys.
 */
void
DkFlushSend(DkLaxBatchItem *items, int n, uint64 seq)
{
	char	   *seqstr = psprintf(UINT64_FORMAT, seq);
	GroupedItem *g = palloc(sizeof(GroupedItem) * Max(n, 1));
	FlushPart  *parts = palloc(sizeof(FlushPart) * Max(n, 1));
	int			nparts = 0;
	int			ngroups = DkFlushGroups();
	DkLaxView  *views = palloc(sizeof(DkLaxView) * Max(n, 1));
	const char **errors = palloc(sizeof(char *) * Max(n, 1));
	const DkLaxBatchItem **settled = palloc(sizeof(DkLaxBatchItem *) * Max(n, 1));
	DkLaxView  *settled_views = palloc(sizeof(DkLaxView) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		g[i].item = &items[i];
		g[i].rkey = DkKeyBuildWithPrefix(items[i].prefix, KindOf(items[i].kind)->redis_kind,
										 items[i].key, items[i].keylen, &g[i].rkeylen);
		/* one group on one Redis: no slot to compute (a CRC16 per key) */
		g[i].group = ngroups == 1 ? 0 : DkKeySlot(g[i].rkey, g[i].rkeylen) % ngroups;
	}
	qsort(g, n, sizeof(GroupedItem), CompareGrouped);
	for (int i = 0; i < n;)
	{
		int			end = i + 1;
		int			number = 0;

		while (end < n && g[end].group == g[i].group && strcmp(g[end].item->prefix, g[i].item->prefix) == 0)
			end++;
		/* the group [i, end): runs of one kind, each in parts of its kind's size */
		for (int s = i; s < end;)
		{
			int			run_end = s + 1;
			int			size = KindOf(g[s].item->kind)->part_keys;

			while (run_end < end && g[run_end].item->kind == g[s].item->kind)
				run_end++;
			for (int t = s; t < run_end; t += size)
			{
				parts[nparts].first = t;
				parts[nparts].count = Min(size, run_end - t);
				parts[nparts].number = number++;
				parts[nparts].last = run_end == end && t + size >= run_end;
				parts[nparts].group_first = i;
				nparts++;
			}
			s = run_end;
		}
		i = end;
	}

	for (int start = 0; start < nparts;)
	{
		int			count = 0;
		int			keys = 0;
		int			resent_group = -1;
		DkCmd	  **cmds;
		DkReply   **replies;

		while (start + count < nparts && (count == 0 || keys + parts[start + count].count <= FLUSH_CHUNK_KEYS))
			keys += parts[start + count++].count;
		cmds = palloc(sizeof(DkCmd *) * count);
		for (int i = 0; i < count; i++)
			cmds[i] = PartCommand(g, &parts[start + i], seqstr, false);
		/* idempotent thanks to the record; durable: with Sentinel, once a replica has it */
		replies = DkRedisRun(cmds, count, DK_IDEMPOTENT_DURABLE);
		DkLaxCountFlushCalls(count);
		for (int i = 0; i < count; i++)
		{
			FlushPart  *p = &parts[start + i];
			const DkFlushKind *k = KindOf(g[p->first].item->kind);
			DkReply    *r = SettlePart(g, p, seqstr, replies[i], &resent_group);
			int			nsettled = 0;

			if (r->type == DK_REPLY_ERROR)
			{
				if (TransientError(r->str))
					RaiseTransient(r);
				/* the record refused for good (wrong type, ACL): nothing applied */
				for (int j = 0; j < p->count; j++)
					errors[p->first + j] = r->str;
			}
			else if (r->type != DK_REPLY_ARRAY || r->nelem != (size_t) p->count + 1)
				RaiseTransient(r);
			else
				for (int j = 0; j < p->count; j++)
					(void) k->parse(r->elem[j + 1], &views[p->first + j], &errors[p->first + j]);
			if (!p->last)
				continue;
			/* every part of the group answered: settle its keys */
			DkLaxNoteFlushGroup(g[p->group_first].group);
			NotePrefix(g[p->group_first].item->prefix);
			for (int j = p->group_first; j < p->first + p->count; j++)
			{
				if (errors[j] == NULL)
				{
					settled[nsettled] = g[j].item;
					settled_views[nsettled] = views[j];
					nsettled++;
				}
				else
					Drop(g[j].item, errors[j]);
			}
			DkLaxApplyFlushedMany(settled, settled_views, nsettled);
		}
		start += count;
	}
}

/*
 * Delete this instance's records, at a stop with nothing in flight (the
 * worker, after its final flush).  A record only guards resends of this
 * instance's batches, and no batch is in flight; a worker that is started
 * again (same instance) writes a new record with its next batch, which is
 * applied on top of no record.  Best effort: records under prefixes this
 * process did not flush (before a restart of the worker) and records not
 * deleted in time expire after 7 days.  Returns how many were deleted.
 */
int64
DkFlushDeleteRecords(void)
{
	int			ngroups = DkFlushGroups();
	int			cap = 1024;
	int			n = 0;
	int64		deleted = 0;
	DkCmd	  **cmds = palloc(sizeof(DkCmd *) * cap);
	ListCell   *lc;

	foreach(lc, record_prefixes)
	{
		for (int group = 0; group < ngroups; group++)
		{
			DkCmd	   *cmd;

			if (!DkLaxFlushedGroup(group))
				continue;
			cmd = DkCmdNew("UNLINK");
			DkCmdArgStr(cmd, RecordKey((const char *) lfirst(lc), group));
			if (n == cap)
			{
				cap *= 2;
				cmds = repalloc(cmds, sizeof(DkCmd *) * cap);
			}
			cmds[n++] = cmd;
		}
	}
	for (int start = 0; start < n; start += FLUSH_CHUNK_KEYS)
	{
		int			count = Min(FLUSH_CHUNK_KEYS, n - start);
		DkReply   **replies = DkRedisRun(cmds + start, count, DK_IDEMPOTENT);

		for (int i = 0; i < count; i++)
			if (replies[i]->type == DK_REPLY_INTEGER)
				deleted += replies[i]->integer;
	}
	if (record_prefixes != NIL)
		DkLaxForgetFlushGroups();
	return deleted;
}
