/*-------------------------------------------------------------------------
 *
 * redis_sentinel.c
 *		Finding the master of a Redis Sentinel set-up
 *		(redis-sentinel://...#name).
 *
 * Every new connection to the master (node 0) first asks the sentinels
 * (in the order of the URL) for the master's address and for its replicas
 * (DiscoverMaster); ConnectNode then verifies with ROLE that the server is
 * a master.  A connection error or a READONLY reply leads to a new
 * discovery.  Sentinel connections are closed after each discovery (it is
 * rare); they authenticate with the URL's sentinel_user/sentinel_password
 * query parameters when it has them (the data nodes' password is not
 * theirs: see docs/cluster.md), over TLS with rediss-sentinel://.
 *
 * Redis replicates asynchronously and a sentinel failover leaves the old
 * master writable for seconds, so commands run as DK_IDEMPOTENT_DURABLE
 * (the lax flushes) are followed by WAIT for one replica when the
 * sentinels list a healthy one (DkNode.wait_replicas): a flush counts as
 * done only once a replica has it, and the batch is otherwise resent, with
 * its sequence number, to the new master.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "redis_int.h"

/* Ask the sentinels for the master's address and healthy replicas (node 0). */
bool
DiscoverMaster(DkErr *err)
{
	DkErr		first = {0};
	bool		have_first = false;

	for (int ni = 1; ni < dk_nnodes; ni++)
	{
		DkCmd	   *q[2];
		DkReply   **r;
		DkIo		io = DK_IO_OK;
		bool		sent;
		int			healthy = 0;
		int			port;
		DkErr		e = {0};

		if (!dk_nodes[ni].is_sentinel)
			continue;
		if (!EnsureNode(ni, &e))
		{
			if (!have_first)
				first = e;
			have_first = true;
			continue;
		}
		q[0] = DkCmdNew("SENTINEL");
		DkCmdArgStr(q[0], "get-master-addr-by-name");
		DkCmdArgStr(q[0], dk_target->master_name);
		q[1] = DkCmdNew("SENTINEL");
		DkCmdArgStr(q[1], "replicas");
		DkCmdArgStr(q[1], dk_target->master_name);
		r = NodeExchange(ni, q, 2,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ConnectMs()),
						 &io, &sent);
		DisconnectNode(ni);		/* discovery is rare: do not keep sentinel connections */
		if (r == NULL)
		{
			if (!have_first)
			{
				ConnectFailed(ni, &first, IoFailureText(ni, io, true));
				have_first = true;
			}
			continue;
		}
		if (r[0]->type == DK_REPLY_ERROR && strncmp(r[0]->str, "NOAUTH", 6) == 0)
		{
			if (!have_first)
			{
				first.sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
				first.msg = psprintf("Redis Sentinel at %s requires authentication", dk_nodes[ni].endpoint);
				first.detail = NULL;
				first.hint = "Add ?sentinel_password=...[&sentinel_user=...] before the #master-name of distkit.redis_url.";
				have_first = true;
			}
			continue;
		}
		if (r[0]->type != DK_REPLY_ARRAY || r[0]->nelem != 2 ||
			r[0]->elem[0]->type != DK_REPLY_STRING || r[0]->elem[1]->type != DK_REPLY_STRING ||
			!ParseBoundedInt(r[0]->elem[1]->str, r[0]->elem[1]->len, 1, 65535, &port))
		{
			if (!have_first)
			{
				first.sqlstate = ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
				first.msg = psprintf("the sentinel at %s does not know the master named in distkit.redis_url",
									 dk_nodes[ni].endpoint);
				first.detail = r[0]->type == DK_REPLY_ERROR ?
					psprintf("The sentinel replied: %s", r[0]->str) : NULL;
				first.hint = "Check the #master-name of distkit.redis_url.";
				have_first = true;
			}
			continue;
		}
		if (r[1]->type == DK_REPLY_ARRAY)
			for (int i = 0; i < r[1]->nelem; i++)
			{
				DkReply    *rep = r[1]->elem[i];

				if (rep->type != DK_REPLY_ARRAY)
					continue;
				for (int j = 0; j + 1 < rep->nelem; j += 2)
					if (rep->elem[j]->type == DK_REPLY_STRING && strcmp(rep->elem[j]->str, "flags") == 0 &&
						rep->elem[j + 1]->type == DK_REPLY_STRING &&
						strstr(rep->elem[j + 1]->str, "s_down") == NULL &&
						strstr(rep->elem[j + 1]->str, "o_down") == NULL &&
						strstr(rep->elem[j + 1]->str, "disconnected") == NULL)
						healthy++;
			}
		DisconnectNode(0);
		strlcpy(dk_nodes[0].host, r[0]->elem[0]->str, sizeof(dk_nodes[0].host));
		dk_nodes[0].port = port;
		FormatEndpoint(dk_nodes[0].endpoint, sizeof(dk_nodes[0].endpoint), dk_nodes[0].host, port);
		dk_nodes[0].wait_replicas = healthy > 0 ? 1 : 0;
		return true;
	}
	if (have_first)
		*err = first;
	else
	{
		err->sqlstate = ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
		err->msg = pstrdup("no sentinel could be asked for the Redis master");
		err->detail = NULL;
		err->hint = NULL;
	}
	return false;
}
