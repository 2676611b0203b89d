/*-------------------------------------------------------------------------
 *
 * redis_cluster.c
 *		The node table of the target, and Redis Cluster routing: hash slots,
 *		the slot map, MOVED and ASK.
 *
 * EnsureTopology builds the node table for distkit.redis_url: one server
 * is node 0; a Sentinel-managed master is node 0 (its address found by
 * discovery, redis_sentinel.c), then the sentinels; a Redis Cluster starts
 * with its seeds, and every node the slot map or a redirection names is
 * added.
 *
 * In a Redis Cluster (redis-cluster://seed,seed...), commands are routed
 * by the CRC16 hash slot of their first key (hash tags honoured; keys.c
 * owns the hash), using a
 * slot map read with CLUSTER SLOTS from any reachable node (RefreshSlots).
 * Replies meaning "not executed, ask elsewhere" never reach callers (the
 * retry loop is RunCommands in redis.c): MOVED updates the slot (and
 * schedules a full slot map refresh) and the command is resent to the new
 * owner; ASK resends it once to the importing node after ASKING; TRYAGAIN
 * and CLUSTERDOWN are retried with back-off until distkit.command_timeout
 * has passed, then raised (57P03); READONLY from a cluster node triggers a
 * refresh and a retry.  All of these are safe to retry even for
 * non-idempotent commands, since the command did not run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "keys.h"
#include "redis_int.h"

static uint64 nodes_generation = 0;
static bool nodes_built = false;

/* Cluster slot map: owning node of each slot, -1 if unknown. */
int16	   *dk_slot_node = NULL;
static bool dk_slots_known = false;
bool		dk_slots_stale = true;

/* Build the node table for the current target (after it changed). */
void
EnsureTopology(void)
{
	if (dk_target == NULL || !dk_target->valid ||
		(dk_target->password_empty && !PasswordFileActive()))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("distkit.redis_url is invalid: %s",
						dk_target ? dk_target->error : "not set"),
				 errhint("Use redis://[user:password@]host[:port][/db], unix:///path/to/socket[?db=N], "
						 "redis-cluster://host:port[,host:port...] or "
						 "redis-sentinel://host:port[,host:port...][/db]#master-name, "
						 "or rediss://, rediss-cluster://, rediss-sentinel:// for TLS.")));
	if (nodes_built && nodes_generation == dk_target_generation)
		return;
	for (int i = 0; i < dk_nnodes; i++)
		DisconnectNode(i);
	dk_nnodes = 0;
	if (dk_slot_node == NULL)
		dk_slot_node = MemoryContextAlloc(TopMemoryContext, sizeof(int16) * DK_SLOTS);
	for (int s = 0; s < DK_SLOTS; s++)
		dk_slot_node[s] = -1;
	dk_slots_known = false;
	dk_slots_stale = true;
	switch (dk_target->topology)
	{
		case DK_TOPOLOGY_SINGLE:
			(void) FindOrAddNode(dk_target->is_unix, dk_target->host, dk_target->port, dk_target->path, false);
			break;
		case DK_TOPOLOGY_SENTINEL:
			/* node 0: the master, its address filled in by discovery */
			(void) FindOrAddNode(false, "", 0, NULL, false);
			for (int i = 0; i < dk_target->naddrs; i++)
				(void) FindOrAddNode(false, dk_target->addrs[i].host, dk_target->addrs[i].port, NULL, true);
			break;
		case DK_TOPOLOGY_CLUSTER:
			for (int i = 0; i < dk_target->naddrs; i++)
				(void) FindOrAddNode(false, dk_target->addrs[i].host, dk_target->addrs[i].port, NULL, false);
			break;
	}
	nodes_generation = dk_target_generation;
	nodes_built = true;
}

/* The key a command is routed by: argv[3] of an EVALSHA with keys, else argv[1]; -1 if none. */
static int
CmdKeyArg(const DkCmd *cmd)
{
	static const char *const keyless[] = {
		"SCAN", "PING", "SCRIPT", "AUTH", "SELECT", "CLUSTER", "INFO", "ROLE", "TIME",
		"ASKING", "WAIT", "SENTINEL", "READWRITE", "DBSIZE", NULL
	};

	if (cmd->script >= 0)
		return (cmd->argc > 3 && !(cmd->argvlen[2] == 1 && cmd->argv[2][0] == '0')) ? 3 : -1;
	for (int i = 0; keyless[i]; i++)
		if (cmd->argvlen[0] == strlen(keyless[i]) &&
			pg_strncasecmp(cmd->argv[0], keyless[i], cmd->argvlen[0]) == 0)
			return -1;
	return cmd->argc > 1 ? 1 : -1;
}

/* Any node believed to be a master (cluster), for keyless commands and unknown slots. */
static int
AnyMaster(void)
{
	for (int s = 0; s < DK_SLOTS; s++)
		if (dk_slot_node[s] >= 0)
			return dk_slot_node[s];
	return 0;
}

/* The node a command goes to. */
int
RouteCmd(const DkCmd *cmd)
{
	int			k;
	int			n;

	if (dk_target->topology != DK_TOPOLOGY_CLUSTER)
		return 0;
	k = CmdKeyArg(cmd);
	if (k < 0)
		return AnyMaster();
	n = dk_slot_node[DkKeySlot(cmd->argv[k], cmd->argvlen[k])];
	return n >= 0 ? n : AnyMaster();
}

/* A "host:port" address of a redirection or of CLUSTER SLOTS (empty host: same as node from). */
static int
NodeFromAddress(const char *host, size_t hostlen, int port, int from)
{
	char		h[256];

	if (hostlen == 0 || (hostlen == 1 && host[0] == '?'))
		strlcpy(h, dk_nodes[from].host, sizeof(h));
	else
	{
		if (hostlen >= sizeof(h))
			hostlen = sizeof(h) - 1;
		memcpy(h, host, hostlen);
		h[hostlen] = '\0';
	}
	return FindOrAddNode(false, h, port, NULL, false);
}

/*
 * Parse "MOVED <slot> <host>:<port>" or "ASK ..." (error text after the
 * word); returns the target node or -1.
 */
int
ParseRedirect(const char *msg, int from, int *slot)
{
	const char *sp1 = strchr(msg, ' ');
	const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	const char *colon;
	int			port;

	if (sp2 == NULL || !ParseBoundedInt(sp1 + 1, sp2 - sp1 - 1, 0, DK_SLOTS - 1, slot))
		return -1;
	colon = strrchr(sp2 + 1, ':');
	if (colon == NULL || !ParseBoundedInt(colon + 1, strlen(colon + 1), 1, 65535, &port))
		return -1;
	return NodeFromAddress(sp2 + 1, colon - sp2 - 1, port, from);
}

/*
 * The owner of each slot (-1 if none) from a CLUSTER SLOTS reply of node
 * from; the masters it names are added to the node table.
 */
static int16 *
SlotMapFromReply(const DkReply *map, int from)
{
	int16	   *fresh;

	fresh = palloc(sizeof(int16) * DK_SLOTS);
	for (int s = 0; s < DK_SLOTS; s++)
		fresh[s] = -1;
	for (int i = 0; i < map->nelem; i++)
	{
		DkReply    *range = map->elem[i];
		DkReply    *master;
		int			owner;

		if (range->type != DK_REPLY_ARRAY || range->nelem < 3 ||
			range->elem[0]->type != DK_REPLY_INTEGER || range->elem[1]->type != DK_REPLY_INTEGER ||
			range->elem[2]->type != DK_REPLY_ARRAY)
			continue;
		master = range->elem[2];
		if (master->nelem < 2 || master->elem[0]->type != DK_REPLY_STRING ||
			master->elem[1]->type != DK_REPLY_INTEGER)
			continue;
		owner = NodeFromAddress(master->elem[0]->str, master->elem[0]->len,
								(int) master->elem[1]->integer, from);
		for (long long s = range->elem[0]->integer; s <= range->elem[1]->integer && s < DK_SLOTS; s++)
			if (s >= 0)
				fresh[s] = (int16) owner;
	}
	return fresh;
}

/*
 * Read the slot map with CLUSTER SLOTS from the first node that answers
 * (connected nodes first).  False with *err if none does.
 */
bool
RefreshSlots(DkErr *err)
{
	bool		have_err = false;
	int			ncand = dk_nnodes;
	int		   *order = palloc(sizeof(int) * ncand);
	int			no = 0;
	/* bounded even when every node is paused: stop asking after this */
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  ConnectMs() + CommandMs());

	for (int i = 0; i < ncand; i++)
		if (NodeConnected(i) && !dk_nodes[i].busy)
			order[no++] = i;
	for (int i = 0; i < ncand; i++)
		if (!(NodeConnected(i) && !dk_nodes[i].busy))
			order[no++] = i;

	for (int k = 0; k < no; k++)
	{
		int			ni = order[k];
		DkErr		e = {0};
		DkCmd	   *cmd = DkCmdNew("CLUSTER");
		DkReply   **r;
		DkReply    *map;
		DkIo		io = DK_IO_OK;
		bool		sent;
		int16	   *fresh;

		DkCmdArgStr(cmd, "SLOTS");
		if (k > 0 && have_err && MsLeft(give_up) <= 0)
			break;
		if (!EnsureNode(ni, &e))
		{
			if (!have_err)
				*err = e;
			have_err = true;
			continue;
		}
		r = NodeExchange(ni, &cmd, 1,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CommandMs()),
						 &io, &sent);
		if (r == NULL)
		{
			if (!have_err)
			{
				err->sqlstate = ERRCODE_CONNECTION_FAILURE;
				err->msg = psprintf("lost connection to Redis at %s: %s", dk_nodes[ni].endpoint,
									IoFailureText(ni, io, false));
				err->detail = NULL;
				err->hint = NULL;
				have_err = true;
			}
			DisconnectNode(ni);
			continue;
		}
		map = r[0];
		if (map->type != DK_REPLY_ARRAY)
		{
			if (!have_err)
			{
				err->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
				err->msg = psprintf("Redis at %s does not serve a Redis Cluster slot map", dk_nodes[ni].endpoint);
				err->detail = map->type == DK_REPLY_ERROR ? psprintf("Redis replied: %s", map->str) : NULL;
				err->hint = "distkit.redis_url names a Redis Cluster (redis-cluster://): check that the servers run with cluster-enabled yes.";
				have_err = true;
			}
			continue;
		}
		fresh = SlotMapFromReply(map, ni);
		memcpy(dk_slot_node, fresh, sizeof(int16) * DK_SLOTS);
		dk_slots_known = true;
		dk_slots_stale = false;
		return true;
	}
	if (!have_err)
	{
		err->sqlstate = ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
		err->msg = pstrdup("no Redis Cluster node to ask for the slot map");
		err->detail = NULL;
		err->hint = NULL;
	}
	return false;
}

/* Refresh a stale slot map; an error only if no map is known at all. */
void
EnsureSlots(void)
{
	DkErr		err = {0};

	if (dk_target->topology != DK_TOPOLOGY_CLUSTER || !dk_slots_stale)
		return;
	if (!RefreshSlots(&err) && !dk_slots_known)
		RaiseErr(&err);
}
