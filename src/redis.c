/*-------------------------------------------------------------------------
 *
 * redis.c
 *		The command/reply API the rest of distkit uses to talk to Redis
 *		(see redis.h), and its retry loop.
 *
 * The connection module is split in five files sharing redis_int.h:
 *	redis.c			commands (DkCmd*), DkRedisRun* and its retry loop
 *					(RunCommands), DkRedisScan/DkRedisUnlinkKeys, error replies
 *	redis_url.c		distkit.redis_url and the timeout settings
 *	redis_conn.c	one node's connection: connect, handshake, waits,
 *					reads and writes, idle timeout, interrupts
 *	redis_cluster.c	node table, Redis Cluster slot map and routing
 *	redis_sentinel.c	finding a Sentinel-managed master
 *
 * DkRedisRun pipelines: the commands are grouped per node, written to every
 * node, then each node's replies are read, and the replies are put back in
 * input order.  At most MAX_ROUNDS round trips per call: a round is
 * repeated for the commands whose reply said "not executed, ask elsewhere"
 * (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY of a managed master; see
 * redis_cluster.c) or NOSCRIPT.
 *
 * Scripts run with EVALSHA; a NOSCRIPT reply means the command did not run,
 * so the script is loaded on that node and the command retried (scripts
 * are thus loaded per node, lazily).
 *
 * A failure after a request was sent is reported as SQLSTATE 08007
 * (outcome unknown), except for idempotent commands, which are retried on
 * a fresh connection (in a cluster after refreshing the slot map).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "redis_int.h"

#define MAX_ROUNDS 16			/* round trips per DkRedisRun */
#define MAX_NOSCRIPT_RETRIES 2
#define BACKOFF_FIRST_MS 5
#define BACKOFF_MAX_MS 100

/*
 * Report a failed exchange with node ni.  A request that may have reached
 * Redis gives 08007 unless it is idempotent; otherwise the connection is
 * lost (08006).
 */
static void
pg_attribute_noreturn()
ExchangeFailed(int ni, DkSafety safety, bool sent, DkIo io)
{
	char		endpoint[600];
	char	   *whycopy = IoFailureText(ni, io, false);

	strlcpy(endpoint, dk_nodes[ni].endpoint, sizeof(endpoint));
	DisconnectNode(ni);
	if (safety == DK_NOT_IDEMPOTENT && sent)
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN),
				 errmsg("lost the reply from Redis at %s: %s", endpoint, whycopy),
				 errdetail("The command may or may not have been applied in Redis."),
				 errhint("Read the value again before retrying a non-idempotent change.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("lost connection to Redis at %s: %s", endpoint, whycopy)));
	pg_unreachable();
}

/* What one reply means for the retry loop. */
typedef enum DkVerdict
{
	V_DONE,						/* a final reply (maybe an error for the caller) */
	V_MOVED,
	V_ASK,
	V_BACKOFF,					/* TRYAGAIN, CLUSTERDOWN, READONLY of a managed master */
	V_NOSCRIPT
} DkVerdict;

static DkVerdict
Classify(const DkReply *r, const DkCmd *cmd, int noscript_retries)
{
	if (r->type != DK_REPLY_ERROR)
		return V_DONE;
	if (strncmp(r->str, "NOSCRIPT", 8) == 0 && cmd->script >= 0 &&
		noscript_retries < MAX_NOSCRIPT_RETRIES)
		return V_NOSCRIPT;
	if (dk_target->topology == DK_TOPOLOGY_SINGLE)
	{
		/* never let a caller take a redirection for a final refusal (the flusher would drop it) */
		if (strncmp(r->str, "MOVED ", 6) == 0 || strncmp(r->str, "ASK ", 4) == 0 ||
			strncmp(r->str, "CLUSTERDOWN", 11) == 0 || strncmp(r->str, "TRYAGAIN", 8) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("Redis at %s is a Redis Cluster node, but distkit.redis_url names one server",
							dk_last_endpoint),
					 errdetail("Redis replied: %s (the command was not applied).", r->str),
					 errhint("Use a redis-cluster://host:port[,host:port...] URL in distkit.redis_url.")));
		return V_DONE;
	}
	if (strncmp(r->str, "MOVED ", 6) == 0)
		return V_MOVED;
	if (strncmp(r->str, "ASK ", 4) == 0)
		return V_ASK;
	if (strncmp(r->str, "TRYAGAIN", 8) == 0 || strncmp(r->str, "CLUSTERDOWN", 11) == 0 ||
		strncmp(r->str, "READONLY", 8) == 0)
		return V_BACKOFF;
	return V_DONE;
}

/* A reply slot of one node's share of a round. */
typedef enum DkSlotKind
{
	SK_CMD,
	SK_LOAD,
	SK_ASKING,
	SK_WAIT,
	SK_AUTH						/* a new password (redis_password.c) */
} DkSlotKind;

/* One node's share of a round. */
typedef struct DkGroup
{
	int			node;
	int			ncmds;
	int		   *cmds;			/* indices into the caller's cmds */
	int			nslots;
	DkSlotKind *kind;
	int		   *which;			/* command index or script id */
	bool		skip;			/* could not connect: retried next round */
	bool		failed;
	bool		sent;
	DkIo		io;				/* why it failed */
	int			waited;			/* WAIT reply, -1 if none */
	bool		wants_wait;		/* ends with WAIT (durable writes on a Sentinel master) */
} DkGroup;

/*
 * The state of one RunCommands call, shared by its phases: each round
 * groups the pending commands per node, connects to those nodes, writes
 * every node's share, reads every node's replies, settles what came back
 * (I/O failures, replicas, redirections, NOSCRIPT) and decides whether to
 * stop, give up or go round again.
 */
typedef struct DkRun
{
	/* the call */
	DkCmd	  **cmds;
	int			ncmds;
	DkSafety	safety;			/* DK_IDEMPOTENT_DURABLE made DK_IDEMPOTENT */
	bool		durable;		/* WAIT for a replica (Sentinel master) */
	const int  *forced;			/* forced[i] >= 0: command i goes to that node */
	DkReply   **replies;

	/* per command */
	int		   *ask;			/* node of an ASK redirection, or -1 */
	int		   *noscript;		/* NOSCRIPT replies so far */
	bool	   *need_load;		/* load its script before resending it */
	bool	   *done;			/* has its final reply */
	int			npending;

	/* across rounds */
	int			round;
	int			io_retries;
	long		backoff;
	TimestampTz retry_deadline;

	/* this round */
	DkGroup    *groups;
	int			ngroups;
	TimestampTz deadline;		/* of this round trip */
	bool		wait_more;		/* back off before the next round */
	const char *transient;		/* the last "not now, ask elsewhere" reply */
} DkRun;

/* Start a run of cmds. */
static void
RunInit(DkRun *run, DkCmd **cmds, int ncmds, DkSafety safety, const int *forced, DkReply **out)
{
	memset(run, 0, sizeof(*run));
	run->cmds = cmds;
	run->ncmds = ncmds;
	run->forced = forced;
	run->replies = out ? out : palloc0(sizeof(DkReply *) * ncmds);
	run->ask = palloc(sizeof(int) * ncmds);
	run->noscript = palloc0(sizeof(int) * ncmds);
	run->need_load = palloc0(sizeof(bool) * ncmds);
	run->done = palloc0(sizeof(bool) * ncmds);
	run->groups = palloc0(sizeof(DkGroup) * ncmds);
	run->npending = ncmds;
	run->backoff = BACKOFF_FIRST_MS;
	run->retry_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CommandMs());
	run->durable = safety == DK_IDEMPOTENT_DURABLE && dk_target->topology == DK_TOPOLOGY_SENTINEL;
	for (int i = 0; i < ncmds; i++)
		run->ask[i] = -1;
	run->safety = safety == DK_IDEMPOTENT_DURABLE ? DK_IDEMPOTENT : safety;
}

/* Phase "group": the pending commands per node. */
static void
RunGroup(DkRun *run)
{
	run->ngroups = 0;
	run->wait_more = false;
	run->transient = NULL;
	for (int i = 0; i < run->ncmds; i++)
	{
		int			node;
		int			g;

		if (run->done[i])
			continue;
		node = run->ask[i] >= 0 ? run->ask[i] :
			(run->forced && run->forced[i] >= 0) ? run->forced[i] : RouteCmd(run->cmds[i]);
		for (g = 0; g < run->ngroups; g++)
			if (run->groups[g].node == node)
				break;
		if (g == run->ngroups)
		{
			memset(&run->groups[g], 0, sizeof(DkGroup));
			run->groups[g].node = node;
			run->groups[g].cmds = palloc(sizeof(int) * run->npending);
			run->groups[g].waited = -1;
			run->ngroups++;
		}
		run->groups[g].cmds[run->groups[g].ncmds++] = i;
	}
}

/*
 * A cluster node could not be reached (conn_err): if the refreshed slot
 * map moved some of its commands elsewhere, go round again; else raise.
 */
static void
RunRerouteUnreachable(DkRun *run, const DkErr *conn_err)
{
	DkErr		refresh_err = {0};
	bool		moved = false;

	if (!RefreshSlots(&refresh_err))
		RaiseErr(conn_err);
	for (int g = 0; g < run->ngroups; g++)
		if (run->groups[g].skip)
			for (int j = 0; j < run->groups[g].ncmds; j++)
			{
				int			i = run->groups[g].cmds[j];

				/* a command for a given node (SCAN of one master) cannot move */
				if (run->forced && run->forced[i] >= 0)
					continue;
				if (run->ask[i] >= 0)
					run->ask[i] = -1;	/* the importing node is gone: ask the map */
				if (RouteCmd(run->cmds[i]) != run->groups[g].node)
					moved = true;
			}
	if (!moved || run->round + 1 >= MAX_ROUNDS)
		RaiseErr(conn_err);
}

/*
 * Phase "connect": every group's node ready before anything is sent.
 * False if a cluster node was unreachable but its commands moved: nothing
 * was sent, and the next round regroups (the refresh may have dropped a
 * connection of another group) and reconnects.
 */
static bool
RunConnect(DkRun *run)
{
	DkErr		conn_err = {0};
	bool		conn_failed = false;

	for (int g = 0; g < run->ngroups; g++)
	{
		DkErr		e = {0};

		if (EnsureNode(run->groups[g].node, &e))
			continue;
		if (dk_target->topology != DK_TOPOLOGY_CLUSTER ||
			e.sqlstate != ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION)
			RaiseErr(&e);
		/* a cluster node is unreachable: has its slot moved? */
		if (!conn_failed)
			conn_err = e;
		conn_failed = true;
		run->groups[g].skip = true;
	}
	if (!conn_failed)
		return true;
	RunRerouteUnreachable(run, &conn_err);
	return false;
}

/* Buffer one command for group gr's node, noting what its reply will be. */
static void
GroupAppend(DkGroup *gr, const DkCmd *cmd, DkSlotKind kind, int which)
{
	AppendCmd(gr->node, cmd);
	gr->kind[gr->nslots] = kind;
	gr->which[gr->nslots++] = which;
}

/*
 * Buffer group gr's share: AUTH if distkit.redis_password_file changed,
 * SCRIPT LOAD of the scripts a NOSCRIPT asked
 * for, each command (after ASKING if redirected so), then WAIT for a
 * replica on a Sentinel master if the writes must be durable.
 */
static void
RunBufferGroup(DkRun *run, DkGroup *gr)
{
	int			ni = gr->node;
	int			cap = 2 * gr->ncmds + DK_LUA_COUNT + 2;
	bool		loaded[DK_LUA_COUNT] = {0};
	DkCmd	   *auth = ReauthCmd(ni);

	gr->kind = palloc(sizeof(DkSlotKind) * cap);
	gr->which = palloc(sizeof(int) * cap);
	dk_nodes[ni].busy = true;	/* from the first byte buffered: dropped if we fail */
	/* first: a new password from distkit.redis_password_file */
	if (auth)
		GroupAppend(gr, auth, SK_AUTH, -1);
	for (int j = 0; j < gr->ncmds; j++)
	{
		int			i = gr->cmds[j];
		int			s = run->cmds[i]->script;

		if (run->need_load[i] && !loaded[s])
		{
			DkCmd	   *load = DkCmdNew("SCRIPT");

			DkCmdArgStr(load, "LOAD");
			DkCmdArgStr(load, DkLuaScripts[s].source);
			GroupAppend(gr, load, SK_LOAD, s);
			loaded[s] = true;
		}
		run->need_load[i] = false;
	}
	for (int j = 0; j < gr->ncmds; j++)
	{
		int			i = gr->cmds[j];

		if (run->ask[i] >= 0)
			GroupAppend(gr, DkCmdNew("ASKING"), SK_ASKING, i);
		GroupAppend(gr, run->cmds[i], SK_CMD, i);
	}
	if (run->durable && dk_nodes[ni].wait_replicas > 0)
	{
		DkCmd	   *wait = DkCmdNew("WAIT");

		gr->wants_wait = true;
		DkCmdArgInt(wait, dk_nodes[ni].wait_replicas);
		DkCmdArgInt(wait, Max(1, CommandMs() / 2));
		GroupAppend(gr, wait, SK_WAIT, -1);
	}
}

/* Phase "write": buffer and send every node's share. */
static void
RunWrite(DkRun *run)
{
	run->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CommandMs());
	for (int g = 0; g < run->ngroups; g++)
	{
		DkGroup    *gr = &run->groups[g];

		if (gr->skip)
			continue;
		RunBufferGroup(run, gr);
		dk_nodes[gr->node].busy = true;
		gr->sent = true;
		if ((gr->io = FlushOutput(gr->node, run->deadline)) != DK_IO_OK)
			gr->failed = true;
	}
}

/* Phase "read": every node's replies, each put where it belongs. */
static void
RunRead(DkRun *run)
{
	for (int g = 0; g < run->ngroups; g++)
	{
		DkGroup    *gr = &run->groups[g];

		if (gr->skip || gr->failed)
			continue;
		for (int k = 0; k < gr->nslots; k++)
		{
			DkReply    *r = ReadReply(gr->node, run->deadline, &gr->io);

			if (r == NULL)
			{
				gr->failed = true;
				break;
			}
			switch (gr->kind[k])
			{
				case SK_CMD:
					run->replies[gr->which[k]] = r;
					break;
				case SK_LOAD:
					if (r->type == DK_REPLY_ERROR)
					{
						dk_nodes[gr->node].busy = true; /* replies left unread */
						DkReplyRaiseError(r, "loading a Lua script");
					}
					break;
				case SK_ASKING:
					break;
				case SK_AUTH:
					/* refused: the connection keeps its user (redis_password.c) */
					if (r->type == DK_REPLY_ERROR)
						elog(DEBUG1, "Redis at %s refused the new password of distkit.redis_password_file",
							 dk_nodes[gr->node].endpoint);
					break;
				case SK_WAIT:
					gr->waited = r->type == DK_REPLY_INTEGER ? (int) r->integer : 0;
					break;
			}
		}
		if (!gr->failed)
			dk_nodes[gr->node].busy = false;
	}
}

/*
 * Group gr's exchange failed: raise, or (an idempotent request, not a
 * timeout, at most twice per call) drop the connection and resend the
 * commands without a reply next round.
 */
static void
SettleFailedGroup(DkRun *run, DkGroup *gr)
{
	DisconnectNode(gr->node);
	dk_slots_stale = true;
	if (run->safety != DK_IDEMPOTENT || gr->io == DK_IO_TIMEOUT || run->io_retries >= 2)
		ExchangeFailed(gr->node, run->safety, gr->sent, gr->io);
	run->io_retries++;

	/*
	 * Replies read before the failure stand and the rest is resent --
	 * except on a Sentinel master whose replica had not confirmed them (no
	 * WAIT reply): then every command of the group is resent (durable
	 * writes are idempotent).
	 */
	for (int j = 0; j < gr->ncmds; j++)
	{
		if (gr->wants_wait)
			run->replies[gr->cmds[j]] = NULL;
		if (run->replies[gr->cmds[j]] == NULL)
			run->ask[gr->cmds[j]] = -1;
	}
}

/* No replica confirmed group gr's durable writes in time: raise. */
static void
pg_attribute_noreturn()
ReplicaMissed(DkGroup *gr)
{
	char		endpoint[600];

	/* the master may be an old one after a failover: rediscover next time */
	strlcpy(endpoint, dk_nodes[gr->node].endpoint, sizeof(endpoint));
	DisconnectNode(gr->node);
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("no replica of Redis at %s confirmed the write within %d ms",
					endpoint, Max(1, CommandMs() / 2)),
			 errdetail("The write is retried later with the same identity, so it is applied exactly once.")));
}

/* Command i is finished: its reply is final. */
static inline void
RunFinish(DkRun *run, int i)
{
	run->done[i] = true;
	run->npending--;
}

/* What command i's reply r from node ni means: finished, or resent next round. */
static void
SettleReply(DkRun *run, int i, DkReply *r, int ni)
{
	int			slot;
	int			to;

	switch (Classify(r, run->cmds[i], run->noscript[i]))
	{
		case V_DONE:
			RunFinish(run, i);
			break;
		case V_NOSCRIPT:
			run->noscript[i]++;
			run->need_load[i] = true;
			run->replies[i] = NULL;
			break;
		case V_MOVED:
			to = ParseRedirect(r->str, ni, &slot);
			if (to < 0)
			{
				RunFinish(run, i);
				break;
			}
			dk_slot_node[slot] = (int16) to;
			dk_slots_stale = true;
			run->ask[i] = -1;
			run->transient = r->str;
			run->replies[i] = NULL;
			break;
		case V_ASK:
			to = ParseRedirect(r->str, ni, &slot);
			if (to < 0)
			{
				RunFinish(run, i);
				break;
			}
			run->ask[i] = to;
			run->transient = r->str;
			run->replies[i] = NULL;
			break;
		case V_BACKOFF:
			run->ask[i] = -1;
			run->transient = r->str;
			run->wait_more = true;
			if (strncmp(r->str, "READONLY", 8) == 0)
			{
				/* a master turned replica: rediscover / re-read the map */
				DisconnectNode(ni);
				dk_slots_stale = true;
			}
			run->replies[i] = NULL;
			break;
	}
}

/* Phase "settle": I/O failures, missing replicas, then each reply's meaning. */
static void
RunSettle(DkRun *run)
{
	for (int g = 0; g < run->ngroups; g++)
	{
		DkGroup    *gr = &run->groups[g];

		if (gr->skip)
			continue;
		if (gr->failed)
			SettleFailedGroup(run, gr);
		else if (gr->waited >= 0 && gr->waited < dk_nodes[gr->node].wait_replicas)
			ReplicaMissed(gr);
		for (int j = 0; j < gr->ncmds; j++)
		{
			int			i = gr->cmds[j];

			if (run->replies[i] != NULL)
				SettleReply(run, i, run->replies[i], gr->node);
		}
	}
}

/*
 * Phase "decide": true when every command has its final reply; raises when
 * out of rounds or of time to wait; otherwise backs off if asked to and
 * returns false for another round.
 */
static bool
RunDecide(DkRun *run)
{
	const char *transient = run->transient;

	if (run->npending == 0)
		return true;
	if (run->round + 1 >= MAX_ROUNDS || (run->wait_more && MsLeft(run->retry_deadline) <= 0))
	{
		if (transient == NULL)
			transient = "too many retries";
		ereport(ERROR,
				(errcode(strncmp(transient, "MOVED", 5) == 0 || strncmp(transient, "ASK", 3) == 0 ?
						 ERRCODE_CONNECTION_FAILURE : ERRCODE_CANNOT_CONNECT_NOW),
				 errmsg("%s cannot serve the request right now", dk_target->endpoint),
				 errdetail("Redis replied: %s (the command was not applied).", transient),
				 errhint("Retry shortly; a failover or a resharding may be in progress.")));
	}
	if (run->wait_more)
	{
		SleepMs(Min(run->backoff, Max(1, MsLeft(run->retry_deadline))));
		run->backoff = Min(run->backoff * 2, BACKOFF_MAX_MS);
	}
	return false;
}

/*
 * The engine of DkRedisRun: runs cmds (forced[i] >= 0 sends command i to
 * that node instead of routing it) and returns their final replies, in
 * rounds of named phases (see DkRun).
 */
static DkReply **
RunCommands(DkCmd **cmds, int ncmds, DkSafety safety, const int *forced, DkReply **out)
{
	DkRun		run;

	RunInit(&run, cmds, ncmds, safety, forced, out);
	CheckExitWorkLeft();
	for (run.round = 0; run.npending > 0; run.round++)
	{
		EnsureSlots();
		RunGroup(&run);
		if (!RunConnect(&run))
			continue;
		RunWrite(&run);
		RunRead(&run);
		RunSettle(&run);
		if (RunDecide(&run))
			break;
	}
	return run.replies;
}

/*
 * Run ncmds commands in one pipelined round trip per node and return their
 * replies in input order (error replies included; see DkReplyRaiseError).
 * Connection failures, timeouts and cancellation raise errors.  An
 * idempotent request that fails with an I/O error (not a timeout) is
 * retried on a new connection.
 */
DkReply **
DkRedisRun(DkCmd **cmds, int ncmds, DkSafety safety)
{
	DkReply   **replies;

	BeginCall();
	EnsureTopology();
	replies = RunCommands(cmds, ncmds, safety, NULL, NULL);
	EndCall();
	return replies;
}

/*
 * DkRedisRun with the caller's zeroed array of ncmds replies, filled as
 * replies arrive.  If the call raises an error, a command whose slot holds
 * a non-error reply was executed by Redis (the others were not, or their
 * outcome is unknown): against a cluster, one node may have applied its
 * share while another failed.
 */
DkReply **
DkRedisRunInto(DkCmd **cmds, int ncmds, DkSafety safety, DkReply **replies)
{
	BeginCall();
	EnsureTopology();
	replies = RunCommands(cmds, ncmds, safety, NULL, replies);
	EndCall();
	return replies;
}

/* Run one command; see DkRedisRun. */
DkReply *
DkRedisRunOne(DkCmd *cmd, DkSafety safety)
{
	return DkRedisRun(&cmd, 1, safety)[0];
}

/*
 * DkRedisRun, but false (the error discarded) when Redis cannot be reached
 * (SQLSTATE class 08), so that a lax call can answer from this server's
 * buffer instead.  Other errors propagate.
 */
bool
DkRedisRunIfReachable(DkCmd **cmds, int ncmds, DkSafety safety, DkReply ***replies)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		*replies = DkRedisRun(cmds, ncmds, safety);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		EndCall();				/* DkRedisRun's, cut short by the error */
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_CONNECTION_EXCEPTION)
			PG_RE_THROW();
		FlushErrorState();
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * SCAN every master for keys matching pattern, calling visit with each
 * non-empty batch of keys (all of them on one node, in any slots).  what
 * names the operation in errors.
 */
void
DkRedisScan(const char *pattern, DkScanVisitFn visit, void *arg, const char *what)
{
	int		   *masters;
	int			nmasters = 0;

	BeginCall();
	EnsureTopology();
	if (dk_target->topology == DK_TOPOLOGY_CLUSTER)
	{
		DkErr		err = {0};

		if (!RefreshSlots(&err))
			RaiseErr(&err);
		masters = palloc(sizeof(int) * dk_nnodes);
		for (int s = 0; s < DK_SLOTS; s++)
		{
			int			m = dk_slot_node[s];
			bool		seen = false;

			if (m < 0)
				continue;
			for (int k = 0; k < nmasters; k++)
				if (masters[k] == m)
					seen = true;
			if (!seen)
				masters[nmasters++] = m;
		}
	}
	else
	{
		masters = palloc(sizeof(int));
		masters[nmasters++] = 0;
	}

	for (int k = 0; k < nmasters; k++)
	{
		char		cursor[32] = "0";
		MemoryContext batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "distkit scan batch",
														ALLOCSET_DEFAULT_SIZES);
		MemoryContext oldcxt = MemoryContextSwitchTo(batch_cxt);

		do
		{
			DkCmd	   *scan;
			DkReply    *r;

			/* one batch's commands, replies and the visit's work are freed after it */
			MemoryContextReset(batch_cxt);
			scan = DkCmdNew("SCAN");

			DkCmdArgStr(scan, cursor);
			DkCmdArgStr(scan, "MATCH");
			DkCmdArgStr(scan, pattern);
			DkCmdArgStr(scan, "COUNT");
			DkCmdArgStr(scan, "1000");
			r = RunCommands(&scan, 1, DK_IDEMPOTENT, &masters[k], NULL)[0];
			if (r->type == DK_REPLY_ERROR)
				DkReplyRaiseError(r, what);
			if (r->type != DK_REPLY_ARRAY || r->nelem != 2 ||
				r->elem[0]->type != DK_REPLY_STRING || r->elem[1]->type != DK_REPLY_ARRAY)
				ereport(ERROR,
						(errcode(ERRCODE_SYSTEM_ERROR),
						 errmsg("unexpected reply from Redis to SCAN")));
			if (r->elem[0]->len >= sizeof(cursor))
				ereport(ERROR,
						(errcode(ERRCODE_SYSTEM_ERROR),
						 errmsg("unexpected SCAN cursor from Redis")));
			strlcpy(cursor, r->elem[0]->str, sizeof(cursor));
			if (r->elem[1]->nelem > 0)
				visit(r->elem[1], arg);
			CHECK_FOR_INTERRUPTS();
		} while (strcmp(cursor, "0") != 0);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(batch_cxt);
	}
	EndCall();
}

/*
 * UNLINK a batch of keys (a DkRedisScan batch), one key per command in one
 * pipeline: the keys of a batch may lie in different cluster slots, and a
 * multi-key UNLINK must not cross slots.  Returns how many were removed.
 */
int64
DkRedisUnlinkKeys(const DkReply *keys, const char *what)
{
	DkCmd	  **cmds;
	DkReply   **replies;
	int64		n = 0;

	if (keys->nelem == 0)
		return 0;
	cmds = palloc(sizeof(DkCmd *) * keys->nelem);
	for (int i = 0; i < keys->nelem; i++)
	{
		cmds[i] = DkCmdNew("UNLINK");
		DkCmdArg(cmds[i], keys->elem[i]->str, keys->elem[i]->len);
	}
	replies = DkRedisRun(cmds, keys->nelem, DK_NOT_IDEMPOTENT);
	for (int i = 0; i < keys->nelem; i++)
		n += DkReplyInt64(replies[i], what);
	return n;
}

/* Start a command named name. */
DkCmd *
DkCmdNew(const char *name)
{
	DkCmd	   *cmd = palloc0(sizeof(DkCmd));

	cmd->cap = 8;
	cmd->argv = palloc(sizeof(char *) * cmd->cap);
	cmd->argvlen = palloc(sizeof(size_t) * cmd->cap);
	cmd->script = -1;
	DkCmdArgStr(cmd, name);
	return cmd;
}

/* Start an EVALSHA of an embedded script; the caller adds nkeys keys, then args. */
DkCmd *
DkCmdScript(DkLuaScriptId script, int nkeys)
{
	DkCmd	   *cmd = DkCmdNew("EVALSHA");

	DkCmdArgStr(cmd, DkLuaScripts[script].sha1);
	DkCmdArgInt(cmd, nkeys);
	cmd->script = script;
	return cmd;
}

/* Append a binary-safe argument (not copied: it must outlive the call). */
void
DkCmdArg(DkCmd *cmd, const char *arg, size_t len)
{
	if (cmd->argc == cmd->cap)
	{
		cmd->cap *= 2;
		cmd->argv = repalloc(cmd->argv, sizeof(char *) * cmd->cap);
		cmd->argvlen = repalloc(cmd->argvlen, sizeof(size_t) * cmd->cap);
	}
	cmd->argv[cmd->argc] = arg;
	cmd->argvlen[cmd->argc] = len;
	cmd->argc++;
}

/* Append a NUL-terminated argument. */
void
DkCmdArgStr(DkCmd *cmd, const char *arg)
{
	DkCmdArg(cmd, arg, strlen(arg));
}

/* Append a 64-bit integer argument in decimal. */
void
DkCmdArgInt(DkCmd *cmd, int64 value)
{
	char	   *buf = psprintf(INT64_FORMAT, value);

	DkCmdArgStr(cmd, buf);
}

/* Strip Redis 7's " script: <sha>, on @user_script:N." suffix from an error text. */
static char *
CleanErrorText(const char *msg)
{
	char	   *s = pstrdup(msg);
	char	   *p = strstr(s, " script: ");

	if (p)
		*p = '\0';
	return s;
}

/*
 * Raise an error reply from Redis as an SQL error with a specific SQLSTATE.
 * what names the object concerned, e.g. counter "k".
 */
void
DkReplyRaiseError(const DkReply *reply, const char *what)
{
	char	   *msg = CleanErrorText(reply->str ? reply->str : "");

	if (strncmp(msg, "WRONGTYPE", 9) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("Redis key of %s holds a value of another type", what),
				 errdetail("Redis replied: %s", msg),
				 errhint("Another program wrote to distkit's key space; delete the key or change distkit.prefix.")));
	if (strstr(msg, "would overflow") != NULL || strncmp(msg, "DKOVERFLOW", 10) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s would overflow bigint", what),
				 errdetail("The stored value is unchanged."),
				 errhint("Counters hold values from -9223372036854775808 to 9223372036854775807.")));
	if (strncmp(msg, "ERR value is not an integer", 27) == 0 || strncmp(msg, "DKNOTINT", 8) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("Redis key of %s does not hold an integer", what),
				 errhint("Another program wrote to distkit's key space; delete the key or change distkit.prefix.")));
	if (strncmp(msg, "NOAUTH", 6) == 0 || strncmp(msg, "NOPERM", 6) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("Redis refused %s: permission denied", what),
				 errdetail("Redis replied: %s", msg),
				 errhint("Grant the Redis user of distkit.redis_url the commands and keys distkit uses.")));
	if (strncmp(msg, "OOM", 3) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("Redis is out of memory: %s was not changed", what),
				 errdetail("Redis replied: %s", msg),
				 errhint("Raise maxmemory or free memory in Redis.")));
	if (strncmp(msg, "READONLY", 8) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("Redis at %s is a read-only replica", dk_last_endpoint),
				 errhint("Point distkit.redis_url at the primary.")));
	if (strncmp(msg, "LOADING", 7) == 0 || strncmp(msg, "BUSY", 4) == 0 ||
		strncmp(msg, "MASTERDOWN", 10) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CANNOT_CONNECT_NOW),
				 errmsg("Redis at %s cannot serve %s right now", dk_last_endpoint, what),
				 errdetail("Redis replied: %s", msg),
				 errhint("Retry shortly.")));
	ereport(ERROR,
			(errcode(ERRCODE_SYSTEM_ERROR),
			 errmsg("Redis returned an error for %s", what),
			 errdetail("Redis replied: %s", msg)));
}

/*
 * The reply as a bigint: an integer reply, a decimal string, or nil (0).
 * Error replies are raised.
 */
int64
DkReplyInt64(const DkReply *reply, const char *what)
{
	switch (reply->type)
	{
		case DK_REPLY_INTEGER:
			return (int64) reply->integer;
		case DK_REPLY_NIL:
			return 0;
		case DK_REPLY_STRING:
			{
				char	   *end;
				long long	v;

				errno = 0;
				v = strtoll(reply->str, &end, 10);
				if (errno != 0 || end == reply->str || *end != '\0' || reply->len == 0 ||
					isspace((unsigned char) reply->str[0]))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
							 errmsg("Redis key of %s does not hold an integer", what),
							 errhint("Another program wrote to distkit's key space; delete the key or change distkit.prefix.")));
				return (int64) v;
			}
		case DK_REPLY_ERROR:
			DkReplyRaiseError(reply, what);
			break;
		case DK_REPLY_ARRAY:
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_SYSTEM_ERROR),
			 errmsg("unexpected reply from Redis for %s", what)));
	pg_unreachable();
}
