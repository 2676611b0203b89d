/*-------------------------------------------------------------------------
 *
 * redis.c
 *		The only place in distkit that talks to Redis.
 *
 * Three kinds of targets (distkit.redis_url):
 *  - one Redis server (redis://, unix://);
 *  - a Redis Cluster (redis-cluster://seed,seed...): commands are routed by
 *    the CRC16 hash slot of their first key (hash tags honoured), using a
 *    slot map read with CLUSTER SLOTS from any reachable node;
 *  - a master found through Redis Sentinel (redis-sentinel://...#name).
 *
 * Each process (backend or the distkit worker) keeps a table of nodes with
 * at most one hiredis context each, opened lazily on first use and reused
 * across calls.  Sockets are non-blocking: every wait goes through the
 * node's WaitEventSet holding our latch, the socket and postmaster death,
 * so a call blocked on Redis honours Ctrl-C, statement_timeout and
 * pg_terminate_backend, and is bounded by distkit.connect_timeout /
 * distkit.command_timeout.
 *
 * DkRedisRun pipelines: the commands are grouped per node, written to every
 * node, then each node's replies are read, and the replies are put back in
 * input order.  Replies are copied into palloc memory at once and the
 * hiredis reply freed, so no hiredis memory outlives this file and callers
 * may ereport freely.  Before any ereport about a connection, that
 * connection is freed (its state is unknown) and the next call reconnects;
 * a connection left with a request in flight by an error elsewhere is
 * marked busy and dropped before reuse.
 *
 * Replies meaning "not executed, ask elsewhere" never reach callers: MOVED
 * updates the slot (and schedules a full slot map refresh) and the command
 * is resent to the new owner; ASK resends it once to the importing node
 * after ASKING; TRYAGAIN and CLUSTERDOWN are retried with back-off until
 * distkit.command_timeout has passed, then raised (57P03); READONLY from a
 * cluster node or a sentinel-managed master triggers a refresh or a
 * rediscovery and a retry.  All of these are safe to retry even for
 * non-idempotent commands, since the command did not run.  At most
 * MAX_ROUNDS round trips per call.
 *
 * Scripts run with EVALSHA; a NOSCRIPT reply means the command did not run,
 * so the script is loaded on that node and the command retried (scripts
 * are thus loaded per node, lazily).
 *
 * A reused connection is probed (poll with zero timeout) before a request
 * is written: a Redis restart leaves the old socket readable with EOF, and
 * then we reconnect before sending anything, so the outcome stays known.
 * A failure after a request was sent is reported as SQLSTATE 08007
 * (outcome unknown), except for idempotent commands, which are retried on
 * a fresh connection (in a cluster after refreshing the slot map).
 *
 * Sentinel: every new connection to the master first asks the sentinels
 * (in the order of the URL) for the master's address and for its replicas,
 * then verifies with ROLE that the server is a master; a connection error
 * or a READONLY reply leads to a new discovery.  Redis replicates
 * asynchronously and a sentinel failover leaves the old master writable
 * for seconds, so commands run as DK_IDEMPOTENT_DURABLE (the lax flushes)
 * are followed by WAIT for one replica when the sentinels list a healthy
 * one: a flush counts as done only once a replica has it, and the batch is
 * otherwise resent, with its sequence number, to the new master.
 *
 * Connections a session no longer uses are given back: each call (re)arms
 * a PostgreSQL timeout of distkit.idle_connection_timeout, whose handler
 * shuts the sockets down when it fires between calls, so that Redis frees
 * the client at once; the next call opens a new connection.  The distkit
 * worker keeps its connection (DkRedisKeepConnection).  Redis at maxclients
 * refuses new connections with "max number of clients reached": SQLSTATE
 * 08004 (FullRefusal), which the worker answers by asking again quickly.
 *
 * Exit work (DkRedisBeginExitWork: a session's release of its leases at
 * exit, the worker's final flush and shutdown tasks) is bounded by
 * distkit.exit_timeout, a superuser setting, instead of the connect and
 * command timeouts a user may raise to an hour: a user cannot delay
 * pg_terminate_backend or a server stop.
 *
 * distkit.redis_url is parsed by its check hook into a DkRedisTarget; a
 * malformed URL is accepted there and reported at use time, because the GUC
 * machinery would echo the raw value (and its password) in its own error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <hiredis/hiredis.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/procsignal.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "metrics.h"
#include "redis.h"

#define DK_SLOTS 16384
#define DK_MAX_ADDRS 16			/* seed nodes or sentinels in a URL */
#define MAX_ROUNDS 16			/* round trips per DkRedisRun */
#define MAX_NOSCRIPT_RETRIES 2
#define BACKOFF_FIRST_MS 5
#define BACKOFF_MAX_MS 100

typedef enum DkMode
{
	DK_MODE_SINGLE,
	DK_MODE_CLUSTER,
	DK_MODE_SENTINEL
} DkMode;

typedef struct DkAddr
{
	char		host[256];
	int			port;
} DkAddr;

/* Parsed form of distkit.redis_url (GUC "extra", malloc'd). */
typedef struct DkRedisTarget
{
	bool		valid;
	char		error[200];		/* why not valid; never contains secrets */
	DkMode		mode;
	bool		is_unix;
	char		host[256];
	int			port;
	char		path[512];
	int			db;
	bool		has_auth;
	char		user[128];
	char		password[256];
	int			naddrs;			/* cluster seeds or sentinels */
	DkAddr		addrs[DK_MAX_ADDRS];
	char		master_name[256];	/* sentinel */
	char		endpoint[600];	/* for messages: host:port, unix:path, ... */
} DkRedisTarget;

/* One server this process talks to. */
typedef struct DkNode
{
	bool		is_unix;
	bool		is_sentinel;
	char		host[256];
	int			port;
	char		path[512];
	char		endpoint[600];	/* host:port or unix:path, for messages */
	redisContext *ctx;
	WaitEventSet *wes;
	int			sock_pos;
	bool		busy;			/* a request is in flight */
	int			wait_replicas;	/* sentinel master: WAIT for this many replicas */
} DkNode;

/* A connection-class error, raised by RaiseErr. */
typedef struct DkErr
{
	int			sqlstate;
	char	   *msg;
	char	   *detail;
	char	   *hint;
} DkErr;

/* GUC variables */
static char *redis_url = NULL;
static int	connect_timeout_guc = 1000;
static int	command_timeout_guc = 1000;
static int	exit_timeout_ms = 1000;
static int	idle_timeout_ms = 60000;

/*
 * Exit work (DkRedisBeginExitWork): while exit_deadline is set, every
 * connect and command timeout is capped by the time left until it.
 */
static TimestampTz exit_deadline = 0;

/*
 * Idle connections (distkit.idle_connection_timeout): call_depth counts
 * the calls of this file in progress (and is raised while connections are
 * opened or freed); the idle timer's handler only acts when it is zero.
 * See IdleTimeoutHandler.
 */
static volatile sig_atomic_t call_depth = 0;
static volatile sig_atomic_t idle_closed = false;
static bool keep_connections = false;	/* the worker: never idle-closed */
static bool idle_timer_registered = false;
static TimeoutId idle_timer_id;
static bool xact_callback_registered = false;

static int	ConnectMs(void);
static int	CommandMs(void);

/* Active target and a generation that changes whenever it is assigned. */
static DkRedisTarget *target = NULL;
static uint64 target_generation = 0;

/*
 * Nodes of this process (TopMemoryContext; referred to by index, since the
 * array grows).  Single: node 0.  Sentinel: node 0 is the master (address
 * found by discovery), then the sentinels.  Cluster: the seeds, then every
 * node the slot map or a redirection named.
 */
static DkNode *nodes = NULL;
static int	nnodes = 0;
static int	maxnodes = 0;
static uint64 nodes_generation = 0;
static bool nodes_built = false;

/* Cluster slot map: owning node of each slot, -1 if unknown. */
static int16 *slot_node = NULL;
static bool slots_known = false;
static bool slots_stale = true;

/* Endpoint of the node that gave the last reply, for messages. */
static char last_endpoint[600] = "";

static bool EnsureNode(int ni, DkErr *err);

/*
 * The worker's reason to abandon a Redis wait (a cancel, its shutdown), or
 * NULL; a cancel is reported once (DkRedisSetCancelCheck).
 */
static const char *(*cancel_check) (void) = NULL;

/* Decode %XX escapes of src[0..len) into dst; false if malformed. */
static bool
PercentDecode(const char *src, size_t len, char *dst, size_t dstsize)
{
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = src[i];

		if (c == '%')
		{
			char		hex[3];
			char	   *end;

			if (i + 2 >= len)
				return false;
			hex[0] = src[i + 1];
			hex[1] = src[i + 2];
			hex[2] = '\0';
			c = (char) strtol(hex, &end, 16);
			if (*end != '\0' || c == '\0')
				return false;
			i += 2;
		}
		if (o + 1 >= dstsize)
			return false;
		dst[o++] = c;
	}
	dst[o] = '\0';
	return true;
}

/* Parse a non-negative decimal integer of src[0..len) within [lo, hi]. */
static bool
ParseBoundedInt(const char *src, size_t len, int lo, int hi, int *out)
{
	long		v = 0;

	if (len == 0 || len > 9)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (src[i] < '0' || src[i] > '9')
			return false;
		v = v * 10 + (src[i] - '0');
	}
	if (v < lo || v > hi)
		return false;
	*out = (int) v;
	return true;
}

/* host:port (IPv6 in brackets) into buf. */
static void
FormatEndpoint(char *buf, size_t size, const char *host, int port)
{
	if (strchr(host, ':'))
		snprintf(buf, size, "[%s]:%d", host, port);
	else
		snprintf(buf, size, "%s:%d", host, port);
}

/*
 * Parse "host[:port]" or "[v6]:port" of s[0..len) into host and port
 * (defport when absent); returns NULL or what is wrong.
 */
static const char *
ParseHostPort(const char *s, size_t len, char *host, size_t hostsize, int *port, int defport)
{
	const char *end = s + len;
	const char *port_start = NULL;

	*port = defport;
	if (len > 0 && s[0] == '[')
	{
		const char *close = memchr(s, ']', len);

		if (close == NULL || close == s + 1)
			return "an IPv6 address must be written as [address]";
		if ((size_t) (close - s - 1) >= hostsize)
			return "the host name is too long";
		memcpy(host, s + 1, close - s - 1);
		host[close - s - 1] = '\0';
		if (close + 1 < end)
		{
			if (close[1] != ':')
				return "unexpected characters after the IPv6 address";
			port_start = close + 2;
		}
	}
	else
	{
		const char *colon = memchr(s, ':', len);
		const char *host_end = colon ? colon : end;

		if (host_end == s)
			return "the host name is missing";
		if ((size_t) (host_end - s) >= hostsize)
			return "the host name is too long";
		memcpy(host, s, host_end - s);
		host[host_end - s] = '\0';
		if (colon)
			port_start = colon + 1;
	}
	if (port_start && !ParseBoundedInt(port_start, end - port_start, 1, 65535, port))
		return "the port must be a number from 1 to 65535";
	if (strchr(host, '[') || strchr(host, ']'))
		return "an IPv6 address must be written as [address]";
	return NULL;
}

/* Fill t from a URL; on failure t->valid is false and t->error says why. */
static void
ParseRedisUrl(const char *url, DkRedisTarget *t)
{
	const char *rest;
	const char *at;
	const char *query = NULL;
	const char *fragment = NULL;
	const char *end;
	const char *problem;

	memset(t, 0, sizeof(*t));
	t->port = 6379;

#define URL_FAIL(...) do { snprintf(t->error, sizeof(t->error), __VA_ARGS__); return; } while (0)

	if (strncmp(url, "redis://", 8) == 0)
		rest = url + 8;
	else if (strncmp(url, "redis-cluster://", 16) == 0)
	{
		rest = url + 16;
		t->mode = DK_MODE_CLUSTER;
	}
	else if (strncmp(url, "redis-sentinel://", 17) == 0)
	{
		rest = url + 17;
		t->mode = DK_MODE_SENTINEL;
	}
	else if (strncmp(url, "unix://", 7) == 0)
	{
		rest = url + 7;
		t->is_unix = true;
	}
	else if (strncmp(url, "rediss://", 9) == 0)
		URL_FAIL("TLS (rediss://) is not supported by this build (hiredis 0.14)");
	else
		URL_FAIL("it must start with redis://, redis-cluster://, redis-sentinel:// or unix://");

	end = rest + strlen(rest);
	if (t->is_unix)
	{
		query = strchr(rest, '?');
		if (query)
			end = query;
	}
	if (t->mode == DK_MODE_SENTINEL)
	{
		fragment = strchr(rest, '#');
		if (fragment == NULL || fragment[1] == '\0')
			URL_FAIL("a redis-sentinel:// URL must end with #master-name");
		if (!PercentDecode(fragment + 1, strlen(fragment + 1), t->master_name, sizeof(t->master_name)))
			URL_FAIL("the master name is too long or has a bad %%-escape");
		end = fragment;
	}

	/* user:password@ — the last '@' before the path/query ends it */
	at = NULL;
	for (const char *p = rest; p < end; p++)
		if (*p == '@')
			at = p;
	if (at)
	{
		const char *colon = memchr(rest, ':', at - rest);

		if (colon == NULL)
			URL_FAIL("the user information must be user:password@ or :password@");
		if (!PercentDecode(rest, colon - rest, t->user, sizeof(t->user)))
			URL_FAIL("the user name is too long or has a bad %%-escape");
		if (!PercentDecode(colon + 1, at - colon - 1, t->password, sizeof(t->password)))
			URL_FAIL("the password is too long or has a bad %%-escape");
		if (t->password[0] == '\0')
			URL_FAIL("the password is empty");
		t->has_auth = true;
		rest = at + 1;
	}

	if (t->is_unix)
	{
		if (rest[0] != '/')
			URL_FAIL("a unix:// URL needs an absolute socket path, as in unix:///run/redis.sock");
		if ((size_t) (end - rest) >= sizeof(t->path))
			URL_FAIL("the socket path is too long");
		memcpy(t->path, rest, end - rest);
		t->path[end - rest] = '\0';
		if (query)
		{
			if (strncmp(query, "?db=", 4) != 0 ||
				!ParseBoundedInt(query + 4, strlen(query + 4), 0, 1000000, &t->db))
				URL_FAIL("the only query parameter is db=N, a database number");
		}
		snprintf(t->endpoint, sizeof(t->endpoint), "unix:%s", t->path);
	}
	else if (t->mode == DK_MODE_SINGLE)
	{
		const char *slash = memchr(rest, '/', end - rest);
		const char *hp_end = slash ? slash : end;

		problem = ParseHostPort(rest, hp_end - rest, t->host, sizeof(t->host), &t->port, 6379);
		if (problem)
			URL_FAIL("%s", problem);
		if (slash && slash + 1 < end &&
			!ParseBoundedInt(slash + 1, end - slash - 1, 0, 1000000, &t->db))
			URL_FAIL("the path must be a database number, as in /0");
		FormatEndpoint(t->endpoint, sizeof(t->endpoint), t->host, t->port);
	}
	else
	{
		/* a comma-separated list of seed nodes or sentinels */
		const char *slash = memchr(rest, '/', end - rest);
		const char *list_end = slash ? slash : end;
		const char *p = rest;
		const char *what = t->mode == DK_MODE_CLUSTER ? "seed node" : "sentinel";
		size_t		elen;

		if (p == list_end)
			URL_FAIL("at least one %s host:port is needed", what);
		while (p <= list_end)
		{
			const char *comma = memchr(p, ',', list_end - p);
			const char *item_end = comma ? comma : list_end;

			if (t->naddrs == DK_MAX_ADDRS)
				URL_FAIL("at most %d %ss may be listed", DK_MAX_ADDRS, what);
			if (item_end == p)
				URL_FAIL("an empty %s address in the list", what);
			problem = ParseHostPort(p, item_end - p, t->addrs[t->naddrs].host,
									sizeof(t->addrs[0].host), &t->addrs[t->naddrs].port,
									t->mode == DK_MODE_CLUSTER ? 6379 : 26379);
			if (problem)
				URL_FAIL("%s", problem);
			t->naddrs++;
			if (comma == NULL)
				break;
			p = comma + 1;
		}
		if (slash && slash + 1 < end &&
			!ParseBoundedInt(slash + 1, end - slash - 1, 0, 1000000, &t->db))
			URL_FAIL("the path must be a database number, as in /0");
		if (t->mode == DK_MODE_CLUSTER && t->db != 0)
			URL_FAIL("a Redis Cluster has database 0 only");
		if (t->mode == DK_MODE_CLUSTER)
			snprintf(t->endpoint, sizeof(t->endpoint), "Redis Cluster");
		else
			snprintf(t->endpoint, sizeof(t->endpoint), "master \"%.200s\" (via Sentinel)",
					 t->master_name);
		/* the seeds, for the endpoint message */
		elen = strlen(t->endpoint);
		for (int i = 0; i < t->naddrs && elen + 80 < sizeof(t->endpoint); i++)
		{
			char		ep[300];

			FormatEndpoint(ep, sizeof(ep), t->addrs[i].host, t->addrs[i].port);
			snprintf(t->endpoint + elen, sizeof(t->endpoint) - elen, "%s%s",
					 i == 0 ? " " : ",", ep);
			elen = strlen(t->endpoint);
		}
	}
	t->valid = true;
#undef URL_FAIL
}

/*
 * GUC check hook: parse into *extra; never rejects a malformed URL (see
 * file header).  The URL is PGC_SIGHUP: PostgreSQL itself refuses it as a
 * session, database, role or function setting (where every user could
 * read a password), so it only ever comes from postgresql.conf or ALTER
 * SYSTEM, both readable by superusers only.
 */
static bool
CheckRedisUrl(char **newval, void **extra, GucSource source)
{
	DkRedisTarget *t;

	t = malloc(sizeof(DkRedisTarget));	/* GUC extra: malloc, not palloc */
	if (t == NULL)
		return false;
	ParseRedisUrl(*newval ? *newval : "", t);
	*extra = t;
	return true;
}

/* GUC assign hook: switch target; the next call reconnects. */
static void
AssignRedisUrl(const char *newval, void *extra)
{
	target = (DkRedisTarget *) extra;
	target_generation++;
}

/* Defines the GUCs this module owns. */
void
DkRedisInit(void)
{
	DefineCustomStringVariable("distkit.redis_url",
							   "Redis server used by distkit.",
							   "redis://[user:password@]host[:port][/db], unix:///path/to/socket[?db=N], "
							   "redis-cluster://[user:password@]host:port[,host:port...] or "
							   "redis-sentinel://[user:password@]host:port[,host:port...][/db]#master-name. "
							   "Readable by superusers only.  Server-wide: set it in postgresql.conf or with "
							   "ALTER SYSTEM, then reload.",
							   &redis_url,
							   "redis://127.0.0.1:6379/0",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   CheckRedisUrl, AssignRedisUrl, NULL);
	DefineCustomIntVariable("distkit.connect_timeout",
							"Time allowed to connect and authenticate to Redis.",
							NULL,
							&connect_timeout_guc,
							1000, 1, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("distkit.command_timeout",
							"Time allowed for one round trip to Redis.",
							NULL,
							&command_timeout_guc,
							1000, 1, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("distkit.exit_timeout",
							"Time allowed for the Redis work of a session that ends and of the worker's stop.",
							"Bounds the release of a session's leases and permits when it ends "
							"(also by pg_terminate_backend) and the distkit worker's final flush "
							"and shutdown tasks, whatever distkit.connect_timeout and "
							"distkit.command_timeout say.",
							&exit_timeout_ms,
							1000, 1, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("distkit.idle_connection_timeout",
							"Closes a session's Redis connection after this much time without a distkit call.",
							"0 keeps it open for the whole session.  The distkit worker keeps its "
							"connection regardless.",
							&idle_timeout_ms,
							60000, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* distkit.command_timeout in milliseconds (in exit work, capped by what is left of it). */
int
DkRedisCommandTimeoutMs(void)
{
	return CommandMs();
}

/* What distkit.redis_url names, without credentials. */
char *
DkRedisEndpoint(void)
{
	if (target == NULL || !target->valid)
		return pstrdup("(invalid distkit.redis_url)");
	return pstrdup(target->endpoint);
}

/* True if this process holds an open connection to a data node. */
bool
DkRedisConnected(void)
{
	for (int i = 0; i < nnodes; i++)
		if (nodes[i].ctx != NULL && !nodes[i].is_sentinel)
			return true;
	return false;
}

/* Close one node's connection. */
static void
DisconnectNode(int ni)
{
	DkNode	   *n = &nodes[ni];

	if (n->wes)
	{
		FreeWaitEventSet(n->wes);
		n->wes = NULL;
	}
	if (n->ctx)
	{
		redisFree(n->ctx);
		n->ctx = NULL;
	}
	n->busy = false;
}

/* Closes this process's connections, if any. */
void
DkRedisDisconnect(void)
{
	call_depth++;				/* keeps the idle timer's handler away */
	pg_compiler_barrier();
	for (int i = 0; i < nnodes; i++)
		DisconnectNode(i);
	slots_stale = true;
	pg_compiler_barrier();
	call_depth--;
}

/* The node for host:port (or a unix socket path), added if new. */
static int
FindOrAddNode(bool is_unix, const char *host, int port, const char *path, bool is_sentinel)
{
	DkNode	   *n;

	for (int i = 0; i < nnodes; i++)
		if (nodes[i].is_unix == is_unix && nodes[i].is_sentinel == is_sentinel &&
			(is_unix ? strcmp(nodes[i].path, path) == 0 :
			 (nodes[i].port == port && strcmp(nodes[i].host, host) == 0)))
			return i;
	if (nnodes == maxnodes)
	{
		int			newmax = maxnodes == 0 ? 8 : maxnodes * 2;

		if (nodes == NULL)
			nodes = MemoryContextAllocZero(TopMemoryContext, sizeof(DkNode) * newmax);
		else
		{
			nodes = repalloc(nodes, sizeof(DkNode) * newmax);
			memset(&nodes[maxnodes], 0, sizeof(DkNode) * (newmax - maxnodes));
		}
		maxnodes = newmax;
	}
	n = &nodes[nnodes];
	memset(n, 0, sizeof(*n));
	n->is_unix = is_unix;
	n->is_sentinel = is_sentinel;
	if (is_unix)
	{
		strlcpy(n->path, path, sizeof(n->path));
		snprintf(n->endpoint, sizeof(n->endpoint), "unix:%s", path);
	}
	else
	{
		strlcpy(n->host, host, sizeof(n->host));
		n->port = port;
		FormatEndpoint(n->endpoint, sizeof(n->endpoint), host, port);
	}
	return nnodes++;
}

/* Build the node table for the current target (after it changed). */
static void
EnsureTopology(void)
{
	if (target == NULL || !target->valid)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("distkit.redis_url is invalid: %s",
						target ? target->error : "not set"),
				 errhint("Use redis://[user:password@]host[:port][/db], unix:///path/to/socket[?db=N], "
						 "redis-cluster://host:port[,host:port...] or "
						 "redis-sentinel://host:port[,host:port...][/db]#master-name.")));
	if (nodes_built && nodes_generation == target_generation)
		return;
	for (int i = 0; i < nnodes; i++)
		DisconnectNode(i);
	nnodes = 0;
	if (slot_node == NULL)
		slot_node = MemoryContextAlloc(TopMemoryContext, sizeof(int16) * DK_SLOTS);
	for (int s = 0; s < DK_SLOTS; s++)
		slot_node[s] = -1;
	slots_known = false;
	slots_stale = true;
	switch (target->mode)
	{
		case DK_MODE_SINGLE:
			(void) FindOrAddNode(target->is_unix, target->host, target->port, target->path, false);
			break;
		case DK_MODE_SENTINEL:
			/* node 0: the master, its address filled in by discovery */
			(void) FindOrAddNode(false, "", 0, NULL, false);
			for (int i = 0; i < target->naddrs; i++)
				(void) FindOrAddNode(false, target->addrs[i].host, target->addrs[i].port, NULL, true);
			break;
		case DK_MODE_CLUSTER:
			for (int i = 0; i < target->naddrs; i++)
				(void) FindOrAddNode(false, target->addrs[i].host, target->addrs[i].port, NULL, false);
			break;
	}
	nodes_generation = target_generation;
	nodes_built = true;
}

/* Raise a connection-class error. */
static void
pg_attribute_noreturn()
RaiseErr(const DkErr *e)
{
	ereport(ERROR,
			(errcode(e->sqlstate),
			 errmsg_internal("%s", e->msg),
			 e->detail ? errdetail_internal("%s", e->detail) : 0,
			 e->hint ? errhint("%s", e->hint) : 0));
	pg_unreachable();
}

/* Fill err with a "could not connect" error about node ni and drop the node. */
static bool
ConnectFailed(int ni, DkErr *err, const char *why)
{
	err->sqlstate = ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
	err->msg = psprintf("could not connect to %s at %s: %s",
						nodes[ni].is_sentinel ? "Redis Sentinel" : "Redis", nodes[ni].endpoint, why);
	err->detail = NULL;
	err->hint = pstrdup(nodes[ni].is_sentinel ?
						"Check the sentinels in distkit.redis_url and that they are running and reachable." :
						"Check distkit.redis_url and that redis-server is running and reachable.");
	DisconnectNode(ni);
	return false;
}

/*
 * Let a process with its own cancel flag (the distkit worker, which must
 * not die of a cancel) make a cancel, or its shutdown, abandon the Redis
 * request it waits for: check returns why (e.g. "a cancel request to the
 * distkit worker"), and clears a cancel flag, or NULL.
 */
void
DkRedisSetCancelCheck(const char *(*check) (void))
{
	cancel_check = check;
}

/* Milliseconds left until deadline (0 if passed). */
static long
MsLeft(TimestampTz deadline)
{
	long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

	return ms;
}

/* A timeout setting's value, capped in exit work by the time left of it. */
static int
CapToExit(int ms)
{
	if (exit_deadline == 0)
		return ms;
	return (int) Min((long) ms, MsLeft(exit_deadline));
}

/* The connect timeout in force (distkit.connect_timeout, or less in exit work). */
static int
ConnectMs(void)
{
	return CapToExit(connect_timeout_guc);
}

/* The command timeout in force (distkit.command_timeout, or less in exit work). */
static int
CommandMs(void)
{
	return CapToExit(command_timeout_guc);
}

/* "N ms (setting)" of the bound a timeout message names. */
static char *
BoundText(int guc_ms, const char *guc_label)
{
	if (exit_deadline != 0 && exit_timeout_ms < guc_ms)
		return psprintf("%d ms (distkit.exit_timeout)", exit_timeout_ms);
	return psprintf("%d ms%s", guc_ms, guc_label);
}

/* The connect bound, as a timeout message names it. */
static char *
ConnectBoundText(void)
{
	return BoundText(connect_timeout_guc, "");
}

/* The command bound, as a timeout message names it. */
static char *
CommandBoundText(void)
{
	return BoundText(command_timeout_guc, " (distkit.command_timeout)");
}

/*
 * Begin the Redis work of a process that is ending (a session's exit
 * callback, the worker's stop): until DkRedisEndExitWork, every connect,
 * command and retry is bounded by what is left of distkit.exit_timeout,
 * which only a superuser sets, whatever the session's own
 * distkit.connect_timeout and distkit.command_timeout say.  Once it has
 * passed, calls fail at once (SQLSTATE 08006).
 */
void
DkRedisBeginExitWork(void)
{
	exit_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), exit_timeout_ms);
}

/* End the exit work begun by DkRedisBeginExitWork. */
void
DkRedisEndExitWork(void)
{
	exit_deadline = 0;
}

/* Milliseconds left of the exit work (0 when it is over or not begun). */
long
DkRedisExitWorkLeftMs(void)
{
	return exit_deadline == 0 ? 0 : MsLeft(exit_deadline);
}

/* distkit.exit_timeout in milliseconds. */
int
DkRedisExitTimeoutMs(void)
{
	return exit_timeout_ms;
}

/* Refuse a call in exit work whose time is up. */
static void
CheckExitWorkLeft(void)
{
	if (exit_deadline != 0 && MsLeft(exit_deadline) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("no time left to reach Redis at %s: distkit.exit_timeout (%d ms) has passed",
						target->endpoint, exit_timeout_ms)));
}

/*
 * The idle timer's handler, run in the SIGALRM handler when a session has
 * made no distkit call for distkit.idle_connection_timeout.
 *
 * It only calls shutdown(2) -- async-signal-safe -- on the sockets of this
 * process's connections, so that Redis sees the client leave at once and
 * frees it; the hiredis contexts are freed, and the connection opened
 * again, by the next call (BeginCall, or the probe of a reused connection,
 * which would see the EOF anyway).  It does nothing while a call of this
 * file is in progress or connections are being opened or freed
 * (call_depth > 0): the node table is then changing, and a request may
 * be in flight; the end of that call arms the timer again.  Outside those
 * the node table is stable, so reading it here is safe.
 */
static void
IdleTimeoutHandler(void)
{
	if (call_depth != 0)
		return;
	for (int i = 0; i < nnodes; i++)
		if (nodes[i].ctx != NULL && nodes[i].ctx->fd >= 0)
			(void) shutdown(nodes[i].ctx->fd, SHUT_RDWR);
	idle_closed = true;
}

/*
 * (Re)start the idle timer after a call; with the timeout at 0, stop it.
 * Re-arming an armed timer for a later time costs no system call (the
 * alarm already set fires early, and timeout.c then sets the next one),
 * so a busy session pays one clock read per call.
 */
static void
ArmIdleTimer(void)
{
	if (keep_connections || !IsUnderPostmaster || exit_deadline != 0)
		return;
	if (idle_timeout_ms <= 0)
	{
		if (idle_timer_registered && get_timeout_active(idle_timer_id))
			disable_timeout(idle_timer_id, false);
		return;
	}
	if (!idle_timer_registered)
	{
		idle_timer_id = RegisterTimeout(USER_TIMEOUT, IdleTimeoutHandler);
		idle_timer_registered = true;
	}
	enable_timeout_after(idle_timer_id, idle_timeout_ms);
}

/*
 * Transaction end: a call cut short by an error (caught or not) left
 * call_depth raised, which would keep the idle timer from ever closing
 * the connection; no call of this file is in progress at transaction end.
 */
static void
RedisXactCallback(XactEvent event, void *arg)
{
	if (call_depth != 0 &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		 event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		 event == XACT_EVENT_PREPARE))
	{
		call_depth = 0;
		ArmIdleTimer();
	}
}

/* Start a call of this file: connections idle-closed meanwhile are freed first. */
static inline void
BeginCall(void)
{
	call_depth++;
	pg_compiler_barrier();
	if (unlikely(idle_closed))
	{
		idle_closed = false;
		DkRedisDisconnect();
	}
	if (unlikely(!xact_callback_registered) && !keep_connections)
	{
		RegisterXactCallback(RedisXactCallback, NULL);
		xact_callback_registered = true;
	}
}

/* End a call of this file and (re)start the idle timer. */
static inline void
EndCall(void)
{
	pg_compiler_barrier();
	if (call_depth > 0)
		call_depth--;
	ArmIdleTimer();
}

/*
 * This process keeps its connection however long it stays unused (the
 * distkit worker: its connection must not be given up to backends when
 * Redis is at maxclients).
 */
void
DkRedisKeepConnection(void)
{
	keep_connections = true;
}

/*
 * Interrupts that arrive while we wait for Redis.
 *
 * A cancel or termination: drop every connection (their state is
 * unknown), then throw.  The distkit worker has its own cancel flag
 * (DkRedisSetCancelCheck): for it a cancel means "abandon this Redis
 * wait", an ERROR its cycle catches before retrying later.  (Core's
 * QueryCancelPending would make the worker's next log message throw
 * "canceling statement due to user request" outside any handler, and die.)
 *
 * Anything else (procsignal barriers of DROP DATABASE, DROP TABLESPACE
 * and ALTER DATABASE SET TABLESPACE; pg_log_backend_memory_contexts;
 * parallel messages) is absorbed here with CHECK_FOR_INTERRUPTS, so a
 * process blocked on Redis never holds up a barrier until its timeout.
 * The request stays in flight meanwhile; if that processing throws (or a
 * cancel arrives just then), every connection is dropped first.
 *
 * While interrupts are held off (e.g. in a commit callback, after the
 * commit record, or in an exit callback) only barriers are absorbed; a
 * cancel waits, and the request runs to its end or its timeout, as
 * PostgreSQL's own waits do.
 */
static void
HandleInterrupt(void)
{
	const char *why;

	/*
	 * A barrier even while interrupts are held off (a commit or exit
	 * callback): absorbing PG 15's only barrier (SMGRRELEASE) just closes
	 * files, which is safe outside a critical section, and the commands
	 * waiting for it must not wait for our timeout.
	 */
	if (ProcSignalBarrierPending && InterruptHoldoffCount > 0 && CritSectionCount == 0)
		ProcessProcSignalBarrier();
	if (cancel_check != NULL && (why = cancel_check()) != NULL)
	{
		DkRedisDisconnect();
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("Redis request canceled by %s", why),
				 errdetail("The worker abandons the current Redis request and retries it later.")));
	}
	if (QueryCancelPending || ProcDiePending)
	{
		DkRedisDisconnect();
		CHECK_FOR_INTERRUPTS();
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("Redis request canceled")));
	}
	PG_TRY();
	{
		CHECK_FOR_INTERRUPTS();
	}
	PG_CATCH();
	{
		/* e.g. a cancel that arrived just now: the connections' state is unknown */
		DkRedisDisconnect();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Wait until node ni's socket is readable/writable or the deadline passes.
 * Returns false on timeout.  Interrupts are handled before and during the
 * wait (HandleInterrupt): one may be pending whose latch was already reset
 * by an earlier wait.
 */
static bool
WaitSocket(int ni, bool for_write, TimestampTz deadline)
{
	WaitEventSet *wes = nodes[ni].wes;

	ModifyWaitEvent(wes, nodes[ni].sock_pos,
					for_write ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE, NULL);
	HandleInterrupt();
	for (;;)
	{
		WaitEvent	ev;
		long		timeout = MsLeft(deadline);
		int			n;

		if (timeout <= 0)
			return false;
		n = WaitEventSetWait(wes, timeout, &ev, 1, PG_WAIT_EXTENSION);
		if (n == 0)
			return false;
		if (ev.events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			HandleInterrupt();
			continue;
		}
		if (ev.events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
			return true;
	}
}

/* Sleep ms milliseconds (cancellable). */
static void
SleepMs(long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	while ((ms = MsLeft(until)) > 0)
	{
		int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								   ms, PG_WAIT_EXTENSION);

		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			HandleInterrupt();
		}
	}
}

/* Write everything buffered in node ni's context; false (with *why) on timeout or I/O error. */
static bool
FlushOutput(int ni, TimestampTz deadline, const char **why)
{
	int			done = 0;

	DkRoundTrips++;				/* one request to one node (metrics.c) */
	for (;;)
	{
		if (redisBufferWrite(nodes[ni].ctx, &done) != REDIS_OK)
		{
			*why = pstrdup(nodes[ni].ctx->errstr);
			return false;
		}
		if (done)
			return true;
		if (!WaitSocket(ni, true, deadline))
		{
			*why = "timeout";
			return false;
		}
	}
}

/* Copy a hiredis reply into palloc memory. */
static DkReply *
CopyReply(redisReply *r)
{
	DkReply    *d = palloc0(sizeof(DkReply));

	switch (r->type)
	{
		case REDIS_REPLY_STRING:
		case REDIS_REPLY_STATUS:
		case REDIS_REPLY_ERROR:
			d->type = r->type == REDIS_REPLY_ERROR ? DK_REPLY_ERROR : DK_REPLY_STRING;
			d->str = palloc(r->len + 1);
			memcpy(d->str, r->str, r->len);
			d->str[r->len] = '\0';
			d->len = r->len;
			/*
			 * Redis refuses a command a script may not run (ACL) with a plain
			 * ERR; give it the NOPERM code of the same refusal outside
			 * scripts, so that it maps to one SQLSTATE and the flusher keeps
			 * the increments for a retry instead of dropping them.
			 */
			if (d->type == DK_REPLY_ERROR &&
				strncmp(d->str, "ERR The user executing the script can't", 39) == 0)
			{
				d->str = psprintf("NOPERM %s", d->str + 4);
				d->len = strlen(d->str);
			}
			break;
		case REDIS_REPLY_INTEGER:
			d->type = DK_REPLY_INTEGER;
			d->integer = r->integer;
			break;
		case REDIS_REPLY_ARRAY:
			d->type = DK_REPLY_ARRAY;
			d->nelem = (int) r->elements;
			d->elem = palloc0(sizeof(DkReply *) * (r->elements + 1));
			for (size_t i = 0; i < r->elements; i++)
				d->elem[i] = CopyReply(r->element[i]);
			break;
		default:
			d->type = DK_REPLY_NIL;
			break;
	}
	return d;
}

/*
 * Read one reply from node ni; NULL with *why set on timeout or I/O error.
 * The hiredis reply is freed before returning.
 */
static DkReply *
ReadReply(int ni, TimestampTz deadline, const char **why)
{
	for (;;)
	{
		void	   *raw = NULL;

		if (redisGetReplyFromReader(nodes[ni].ctx, &raw) != REDIS_OK)
		{
			*why = pstrdup(nodes[ni].ctx->errstr);
			return NULL;
		}
		if (raw)
		{
			DkReply    *volatile d = NULL;

			PG_TRY();
			{
				d = CopyReply((redisReply *) raw);
			}
			PG_FINALLY();
			{
				freeReplyObject(raw);
			}
			PG_END_TRY();
			strlcpy(last_endpoint, nodes[ni].endpoint, sizeof(last_endpoint));
			return d;
		}
		if (!WaitSocket(ni, false, deadline))
		{
			*why = "timeout";
			return NULL;
		}
		if (redisBufferRead(nodes[ni].ctx) != REDIS_OK)
		{
			*why = pstrdup(nodes[ni].ctx->errstr);
			return NULL;
		}
	}
}

/* Append one command to node ni's output buffer. */
static void
AppendCmd(int ni, const DkCmd *cmd)
{
	if (redisAppendCommandArgv(nodes[ni].ctx, cmd->argc, cmd->argv, cmd->argvlen) != REDIS_OK)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
}

/*
 * Write cmds to node ni and read their replies within deadline.  Returns
 * NULL and sets *why (and *sent) on failure, leaving the caller to decide
 * what to report.
 */
static DkReply **
NodeExchange(int ni, DkCmd **cmds, int ncmds, TimestampTz deadline, const char **why, bool *sent)
{
	DkReply   **replies = palloc0(sizeof(DkReply *) * ncmds);

	*sent = false;
	nodes[ni].busy = true;		/* from the first byte buffered: dropped if we fail */
	for (int i = 0; i < ncmds; i++)
		AppendCmd(ni, cmds[i]);
	*sent = true;
	if (!FlushOutput(ni, deadline, why))
		return NULL;
	for (int i = 0; i < ncmds; i++)
		if ((replies[i] = ReadReply(ni, deadline, why)) == NULL)
			return NULL;
	nodes[ni].busy = false;
	return replies;
}

/*
 * Redis at maxclients: it accepts the connection, writes this error and
 * closes it.  SQLSTATE 08004 (the server rejected the connection): class
 * 08 like every "Redis cannot be reached", so that lax reads fall back to
 * this server's view and callers' retry logic for connection errors
 * applies; not 53300, which names PostgreSQL's own max_connections and
 * would send a DBA to the wrong server.
 */
static void
FullRefusal(int ni, DkErr *err, const char *msg)
{
	err->sqlstate = ERRCODE_SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION;
	err->msg = psprintf("Redis at %s refused the connection: max number of clients reached",
						nodes[ni].endpoint);
	err->detail = psprintf("Redis replied: %s", msg);
	err->hint = pstrdup("Raise maxclients in Redis, or lower distkit.idle_connection_timeout so that idle "
						"sessions give their Redis connections back sooner: each PostgreSQL server needs one "
						"connection for its distkit worker and one per session that used distkit within "
						"distkit.idle_connection_timeout.");
}

/* SQLSTATE 08004 of FullRefusal: Redis is at maxclients. */
bool
DkRedisRefusedFull(const ErrorData *edata)
{
	return edata->sqlerrcode == ERRCODE_SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION;
}

/*
 * After a handshake that failed on I/O (a write can fail with EPIPE on a
 * socket Redis already closed): whether Redis left its maxclients
 * refusal unread in the socket.
 */
static bool
PeekFullRefusal(int ni)
{
	static const char full[] = "-ERR max number of clients reached";
	char		buf[sizeof(full)];
	ssize_t		n;

	if (nodes[ni].ctx == NULL || nodes[ni].ctx->fd < 0)
		return false;
	n = recv(nodes[ni].ctx->fd, buf, sizeof(full) - 1, MSG_DONTWAIT | MSG_PEEK);
	return n == (ssize_t) sizeof(full) - 1 && memcmp(buf, full, n) == 0;
}

/* A Redis error reply to the handshake as an error of node ni. */
static bool
HandshakeFailed(int ni, const DkReply *r, DkErr *err)
{
	const char *endpoint = nodes[ni].endpoint;
	char	   *msg = pstrdup(r->str);

	err->detail = psprintf("Redis replied: %s", msg);
	err->hint = NULL;
	if (strncmp(msg, "WRONGPASS", 9) == 0 || strncmp(msg, "ERR invalid password", 20) == 0 ||
		strncmp(msg, "ERR AUTH", 8) == 0)
	{
		err->sqlstate = ERRCODE_INVALID_PASSWORD;
		err->msg = psprintf("authentication to Redis at %s failed", endpoint);
		err->hint = "Check the user name and password in distkit.redis_url.";
	}
	else if (strncmp(msg, "ERR max number of clients reached", 33) == 0)
		FullRefusal(ni, err, msg);
	else if (strncmp(msg, "NOAUTH", 6) == 0)
	{
		err->sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		err->msg = psprintf("Redis at %s requires authentication", endpoint);
		err->detail = NULL;
		err->hint = "Put user:password@ (or :password@) in distkit.redis_url.";
	}
	else if (strstr(msg, "DB index") != NULL || strstr(msg, "SELECT is not allowed") != NULL)
	{
		err->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
		err->msg = psprintf("Redis at %s rejected the database number in distkit.redis_url", endpoint);
	}
	else if (strncmp(msg, "NOPERM", 6) == 0)
	{
		err->sqlstate = ERRCODE_INSUFFICIENT_PRIVILEGE;
		err->msg = psprintf("Redis refused connection set-up at %s: permission denied", endpoint);
		err->hint = "Grant the Redis user of distkit.redis_url the commands and keys distkit uses.";
	}
	else
	{
		err->sqlstate = ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
		err->msg = psprintf("could not set up the connection to Redis at %s", endpoint);
	}
	DisconnectNode(ni);
	return false;
}

/* Ask the sentinels for the master's address and healthy replicas (node 0). */
static bool
DiscoverMaster(DkErr *err)
{
	DkErr		first = {0};
	bool		have_first = false;

	for (int ni = 1; ni < nnodes; ni++)
	{
		DkCmd	   *q[2];
		DkReply   **r;
		const char *why = NULL;
		bool		sent;
		int			healthy = 0;
		int			port;
		DkErr		e = {0};

		if (!nodes[ni].is_sentinel)
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
		DkCmdArgStr(q[0], target->master_name);
		q[1] = DkCmdNew("SENTINEL");
		DkCmdArgStr(q[1], "replicas");
		DkCmdArgStr(q[1], target->master_name);
		r = NodeExchange(ni, q, 2,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ConnectMs()),
						 &why, &sent);
		DisconnectNode(ni);		/* discovery is rare: do not keep sentinel connections */
		if (r == NULL)
		{
			if (!have_first)
			{
				ConnectFailed(ni, &first, strcmp(why, "timeout") == 0 ?
							  psprintf("no reply within %s", ConnectBoundText()) : why);
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
									 nodes[ni].endpoint);
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
		strlcpy(nodes[0].host, r[0]->elem[0]->str, sizeof(nodes[0].host));
		nodes[0].port = port;
		FormatEndpoint(nodes[0].endpoint, sizeof(nodes[0].endpoint), nodes[0].host, port);
		nodes[0].wait_replicas = healthy > 0 ? 1 : 0;
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

/*
 * Open node ni's connection (TCP or unix socket), authenticate and select
 * the db (data nodes), and for a sentinel-managed master verify its role.
 * False with *err filled on failure (the node is then disconnected).
 */
static bool
ConnectNode(int ni, DkErr *err)
{
	TimestampTz deadline;
	int			soerr = 0;
	socklen_t	slen = sizeof(soerr);
	DkCmd	   *hs[3];
	int			nhs = 0;
	const char *why = NULL;
	bool		sent;
	DkReply   **r;
	bool		check_role = target->mode == DK_MODE_SENTINEL && !nodes[ni].is_sentinel;
	redisContext *c;

	DisconnectNode(ni);
	if (check_role && !DiscoverMaster(err))
		return false;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ConnectMs());
	if (nodes[ni].is_unix)
		c = redisConnectUnixNonBlock(nodes[ni].path);
	else
		c = redisConnectNonBlock(nodes[ni].host, nodes[ni].port);
	if (c == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	nodes[ni].ctx = c;
	if (c->err)
		return ConnectFailed(ni, err, pstrdup(c->errstr));

	nodes[ni].wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(nodes[ni].wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(nodes[ni].wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	nodes[ni].sock_pos = AddWaitEventToSet(nodes[ni].wes, WL_SOCKET_WRITEABLE, c->fd, NULL, NULL);

	if (!WaitSocket(ni, true, deadline))
		return ConnectFailed(ni, err, psprintf("timed out after %s", ConnectBoundText()));
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0)
		soerr = errno;
	if (soerr != 0)
		return ConnectFailed(ni, err, pstrdup(strerror(soerr)));

	if (nodes[ni].is_sentinel)
		return true;			/* sentinels: no AUTH (see docs/cluster.md) */

	if (target->has_auth)
	{
		hs[nhs] = DkCmdNew("AUTH");
		if (target->user[0])
			DkCmdArgStr(hs[nhs], target->user);
		/* a copy: the command's copy is wiped below, target's must stay */
		DkCmdArgStr(hs[nhs], pstrdup(target->password));
		nhs++;
	}
	/* also makes Redis answer within connect_timeout (a paused server accepts TCP) */
	hs[nhs] = DkCmdNew("SELECT");
	DkCmdArgInt(hs[nhs], target->db);
	nhs++;
	if (check_role)
		hs[nhs++] = DkCmdNew("ROLE");

	r = NodeExchange(ni, hs, nhs, deadline, &why, &sent);
	/* the AUTH command holds the password: wipe it */
	if (target->has_auth)
		explicit_bzero((void *) hs[0]->argv[hs[0]->argc - 1], hs[0]->argvlen[hs[0]->argc - 1]);
	if (r == NULL && strcmp(why, "timeout") != 0 && PeekFullRefusal(ni))
	{
		FullRefusal(ni, err, "ERR max number of clients reached");
		DisconnectNode(ni);
		return false;
	}
	if (r == NULL)
		return ConnectFailed(ni, err, strcmp(why, "timeout") == 0 ?
							 psprintf("no reply within %s", ConnectBoundText()) : why);
	for (int i = 0; i < nhs; i++)
		if (r[i]->type == DK_REPLY_ERROR)
			return HandshakeFailed(ni, r[i], err);
	if (check_role &&
		(r[nhs - 1]->type != DK_REPLY_ARRAY || r[nhs - 1]->nelem < 1 ||
		 r[nhs - 1]->elem[0]->type != DK_REPLY_STRING ||
		 strcmp(r[nhs - 1]->elem[0]->str, "master") != 0))
		return ConnectFailed(ni, err, "the server the sentinels named is not a master (a failover is in progress)");
	return true;
}

/* True if an idle connection shows EOF or unexpected data (e.g. Redis restarted). */
static bool
IdleConnectionBroken(int ni)
{
	struct pollfd pfd;

	pfd.fd = nodes[ni].ctx->fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) != 0;
}

/*
 * Make sure node ni has a usable connection; false with *err if it cannot
 * be opened.  A sentinel-managed master is rediscovered a few times while
 * a failover is in progress (bounded by connect_timeout).
 */
static bool
EnsureNode(int ni, DkErr *err)
{
	DkNode	   *n = &nodes[ni];
	TimestampTz deadline;

	if (n->ctx != NULL && (n->busy || n->ctx->err || IdleConnectionBroken(ni)))
		DisconnectNode(ni);
	if (n->ctx != NULL)
		return true;
	if (target->mode != DK_MODE_SENTINEL || n->is_sentinel)
		return ConnectNode(ni, err);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ConnectMs());
	for (;;)
	{
		if (ConnectNode(ni, err))
			return true;
		if (MsLeft(deadline) <= 100 || err->sqlstate != ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION)
			return false;
		SleepMs(100);
	}
}

/* CRC16-CCITT (XMODEM), the hash of Redis Cluster. */
static uint16
Crc16(const char *buf, size_t len)
{
	uint16		crc = 0;

	for (size_t i = 0; i < len; i++)
	{
		crc ^= (uint16) ((unsigned char) buf[i]) << 8;
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16) ((crc << 1) ^ 0x1021) : (uint16) (crc << 1);
	}
	return crc;
}

/* Hash slot of a key: CRC16 of its hash tag ({...}, if non-empty) or of the whole key. */
int
DkRedisKeySlot(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len);

	if (open)
	{
		const char *close = memchr(open + 1, '}', len - (open + 1 - key));

		if (close && close > open + 1)
			return Crc16(open + 1, close - open - 1) & (DK_SLOTS - 1);
	}
	return Crc16(key, len) & (DK_SLOTS - 1);
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
		if (slot_node[s] >= 0)
			return slot_node[s];
	return 0;
}

/* The node a command goes to. */
static int
RouteCmd(const DkCmd *cmd)
{
	int			k;
	int			n;

	if (target->mode != DK_MODE_CLUSTER)
		return 0;
	k = CmdKeyArg(cmd);
	if (k < 0)
		return AnyMaster();
	n = slot_node[DkRedisKeySlot(cmd->argv[k], cmd->argvlen[k])];
	return n >= 0 ? n : AnyMaster();
}

/* A "host:port" address of a redirection or of CLUSTER SLOTS (empty host: same as node from). */
static int
NodeFromAddress(const char *host, size_t hostlen, int port, int from)
{
	char		h[256];

	if (hostlen == 0 || (hostlen == 1 && host[0] == '?'))
		strlcpy(h, nodes[from].host, sizeof(h));
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
static int
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
 * Read the slot map with CLUSTER SLOTS from the first node that answers
 * (connected nodes first).  False with *err if none does.
 */
static bool
RefreshSlots(DkErr *err)
{
	bool		have_err = false;
	int			ncand = nnodes;
	int		   *order = palloc(sizeof(int) * ncand);
	int			no = 0;
	/* bounded even when every node is paused: stop asking after this */
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  ConnectMs() + CommandMs());

	for (int i = 0; i < ncand; i++)
		if (nodes[i].ctx != NULL && !nodes[i].busy)
			order[no++] = i;
	for (int i = 0; i < ncand; i++)
		if (!(nodes[i].ctx != NULL && !nodes[i].busy))
			order[no++] = i;

	for (int k = 0; k < no; k++)
	{
		int			ni = order[k];
		DkErr		e = {0};
		DkCmd	   *cmd = DkCmdNew("CLUSTER");
		DkReply   **r;
		DkReply    *map;
		const char *why = NULL;
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
						 &why, &sent);
		if (r == NULL)
		{
			if (!have_err)
			{
				err->sqlstate = ERRCODE_CONNECTION_FAILURE;
				err->msg = psprintf("lost connection to Redis at %s: %s", nodes[ni].endpoint,
									strcmp(why, "timeout") == 0 ?
									psprintf("no reply within %s", CommandBoundText()) :
									why);
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
				err->msg = psprintf("Redis at %s does not serve a Redis Cluster slot map", nodes[ni].endpoint);
				err->detail = map->type == DK_REPLY_ERROR ? psprintf("Redis replied: %s", map->str) : NULL;
				err->hint = "distkit.redis_url names a Redis Cluster (redis-cluster://): check that the servers run with cluster-enabled yes.";
				have_err = true;
			}
			continue;
		}
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
									(int) master->elem[1]->integer, ni);
			for (long long s = range->elem[0]->integer; s <= range->elem[1]->integer && s < DK_SLOTS; s++)
				if (s >= 0)
					fresh[s] = (int16) owner;
		}
		memcpy(slot_node, fresh, sizeof(int16) * DK_SLOTS);
		slots_known = true;
		slots_stale = false;
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
static void
EnsureSlots(void)
{
	DkErr		err = {0};

	if (target->mode != DK_MODE_CLUSTER || !slots_stale)
		return;
	if (!RefreshSlots(&err) && !slots_known)
		RaiseErr(&err);
}

/*
 * Report a failed exchange with node ni.  A request that may have reached
 * Redis gives 08007 unless it is idempotent; otherwise the connection is
 * lost (08006).
 */
static void
pg_attribute_noreturn()
ExchangeFailed(int ni, DkSafety safety, bool sent, const char *why)
{
	char		endpoint[600];
	char	   *whycopy = strcmp(why, "timeout") == 0 ?
		psprintf("no reply within %s", CommandBoundText()) :
		pstrdup(why);

	strlcpy(endpoint, nodes[ni].endpoint, sizeof(endpoint));
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
	if (target->mode == DK_MODE_SINGLE)
	{
		/* never let a caller take a redirection for a final refusal (the flusher would drop it) */
		if (strncmp(r->str, "MOVED ", 6) == 0 || strncmp(r->str, "ASK ", 4) == 0 ||
			strncmp(r->str, "CLUSTERDOWN", 11) == 0 || strncmp(r->str, "TRYAGAIN", 8) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("Redis at %s is a Redis Cluster node, but distkit.redis_url names one server",
							last_endpoint),
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
	SK_WAIT
} DkSlotKind;

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
	const char *why;
	int			waited;			/* WAIT reply, -1 if none */
	bool		wants_wait;		/* ends with WAIT (durable writes on a Sentinel master) */
} DkGroup;

/*
 * The engine of DkRedisRun: runs cmds (forced[i] >= 0 sends command i to
 * that node instead of routing it) and returns their final replies.
 */
static DkReply **
RunCommands(DkCmd **cmds, int ncmds, DkSafety safety, const int *forced, DkReply **out)
{
	DkReply   **replies = out ? out : palloc0(sizeof(DkReply *) * ncmds);
	int		   *ask = palloc(sizeof(int) * ncmds);
	int		   *noscript = palloc0(sizeof(int) * ncmds);
	bool	   *need_load = palloc0(sizeof(bool) * ncmds);
	bool	   *done = palloc0(sizeof(bool) * ncmds);
	DkGroup    *groups = palloc0(sizeof(DkGroup) * ncmds);
	int			npending = ncmds;
	int			io_retries = 0;
	long		backoff = BACKOFF_FIRST_MS;
	TimestampTz retry_deadline =
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CommandMs());
	bool		durable = safety == DK_IDEMPOTENT_DURABLE && target->mode == DK_MODE_SENTINEL;

	CheckExitWorkLeft();
	for (int i = 0; i < ncmds; i++)
		ask[i] = -1;
	if (safety == DK_IDEMPOTENT_DURABLE)
		safety = DK_IDEMPOTENT;

	for (int round = 0; npending > 0; round++)
	{
		int			ngroups = 0;
		TimestampTz deadline;
		bool		wait_more = false;
		const char *transient = NULL;
		DkErr		conn_err = {0};
		bool		conn_failed = false;

		EnsureSlots();

		/* group the pending commands per node */
		for (int i = 0; i < ncmds; i++)
		{
			int			node;
			int			g;

			if (done[i])
				continue;
			node = ask[i] >= 0 ? ask[i] : (forced && forced[i] >= 0) ? forced[i] : RouteCmd(cmds[i]);
			for (g = 0; g < ngroups; g++)
				if (groups[g].node == node)
					break;
			if (g == ngroups)
			{
				memset(&groups[g], 0, sizeof(DkGroup));
				groups[g].node = node;
				groups[g].cmds = palloc(sizeof(int) * npending);
				groups[g].waited = -1;
				ngroups++;
			}
			groups[g].cmds[groups[g].ncmds++] = i;
		}

		/* connect (nothing is sent before every node is ready) */
		for (int g = 0; g < ngroups; g++)
		{
			DkErr		e = {0};

			if (EnsureNode(groups[g].node, &e))
				continue;
			if (target->mode != DK_MODE_CLUSTER ||
				e.sqlstate != ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION)
				RaiseErr(&e);
			/* a cluster node is unreachable: has its slot moved? */
			if (!conn_failed)
				conn_err = e;
			conn_failed = true;
			groups[g].skip = true;
		}
		if (conn_failed)
		{
			DkErr		refresh_err = {0};
			bool		moved = false;

			if (!RefreshSlots(&refresh_err))
				RaiseErr(&conn_err);
			for (int g = 0; g < ngroups; g++)
				if (groups[g].skip)
					for (int j = 0; j < groups[g].ncmds; j++)
					{
						int			i = groups[g].cmds[j];

						/* a command for a given node (SCAN of one master) cannot move */
						if (forced && forced[i] >= 0)
							continue;
						if (ask[i] >= 0)
							ask[i] = -1;	/* the importing node is gone: ask the map */
						if (RouteCmd(cmds[i]) != groups[g].node)
							moved = true;
					}
			if (!moved || round + 1 >= MAX_ROUNDS)
				RaiseErr(&conn_err);
			/*
			 * Nothing was sent this round.  The refresh may have dropped a
			 * connection of another group: regroup and reconnect first.
			 */
			continue;
		}

		/* write every node's share */
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CommandMs());
		for (int g = 0; g < ngroups; g++)
		{
			DkGroup    *gr = &groups[g];
			int			ni = gr->node;
			int			cap = 2 * gr->ncmds + DK_LUA_COUNT + 1;
			bool		loaded[DK_LUA_COUNT] = {0};

			if (gr->skip)
				continue;
			gr->kind = palloc(sizeof(DkSlotKind) * cap);
			gr->which = palloc(sizeof(int) * cap);
			nodes[ni].busy = true;	/* from the first byte buffered: dropped if we fail */
			for (int j = 0; j < gr->ncmds; j++)
			{
				int			i = gr->cmds[j];
				int			s = cmds[i]->script;

				if (need_load[i] && !loaded[s])
				{
					DkCmd	   *load = DkCmdNew("SCRIPT");

					DkCmdArgStr(load, "LOAD");
					DkCmdArgStr(load, DkLuaScripts[s].source);
					AppendCmd(ni, load);
					gr->kind[gr->nslots] = SK_LOAD;
					gr->which[gr->nslots++] = s;
					loaded[s] = true;
				}
				need_load[i] = false;
			}
			for (int j = 0; j < gr->ncmds; j++)
			{
				int			i = gr->cmds[j];

				if (ask[i] >= 0)
				{
					AppendCmd(ni, DkCmdNew("ASKING"));
					gr->kind[gr->nslots] = SK_ASKING;
					gr->which[gr->nslots++] = i;
				}
				AppendCmd(ni, cmds[i]);
				gr->kind[gr->nslots] = SK_CMD;
				gr->which[gr->nslots++] = i;
			}
			if (durable && nodes[ni].wait_replicas > 0)
			{
				DkCmd	   *wait = DkCmdNew("WAIT");

				gr->wants_wait = true;

				DkCmdArgInt(wait, nodes[ni].wait_replicas);
				DkCmdArgInt(wait, Max(1, CommandMs() / 2));
				AppendCmd(ni, wait);
				gr->kind[gr->nslots] = SK_WAIT;
				gr->which[gr->nslots++] = -1;
			}
			nodes[ni].busy = true;
			gr->sent = true;
			if (!FlushOutput(ni, deadline, &gr->why))
				gr->failed = true;
		}

		/* read every node's replies */
		for (int g = 0; g < ngroups; g++)
		{
			DkGroup    *gr = &groups[g];

			if (gr->skip || gr->failed)
				continue;
			for (int k = 0; k < gr->nslots; k++)
			{
				DkReply    *r = ReadReply(gr->node, deadline, &gr->why);

				if (r == NULL)
				{
					gr->failed = true;
					break;
				}
				switch (gr->kind[k])
				{
					case SK_CMD:
						replies[gr->which[k]] = r;
						break;
					case SK_LOAD:
						if (r->type == DK_REPLY_ERROR)
						{
							nodes[gr->node].busy = true;	/* replies left unread */
							DkReplyRaiseError(r, "loading a Lua script");
						}
						break;
					case SK_ASKING:
						break;
					case SK_WAIT:
						gr->waited = r->type == DK_REPLY_INTEGER ? (int) r->integer : 0;
						break;
				}
			}
			if (!gr->failed)
				nodes[gr->node].busy = false;
		}

		/* settle */
		for (int g = 0; g < ngroups; g++)
		{
			DkGroup    *gr = &groups[g];
			int			ni = gr->node;

			if (gr->skip)
				continue;
			if (gr->failed)
			{
				bool		timeout = strcmp(gr->why, "timeout") == 0;

				DisconnectNode(ni);
				slots_stale = true;
				if (safety != DK_IDEMPOTENT || timeout || io_retries >= 2)
					ExchangeFailed(ni, safety, gr->sent, gr->why);
				io_retries++;

				/*
				 * Replies read before the failure stand and the rest is
				 * resent -- except on a Sentinel master whose replica had not
				 * confirmed them (no WAIT reply): then every command of the
				 * group is resent (durable writes are idempotent).
				 */
				for (int j = 0; j < gr->ncmds; j++)
				{
					if (gr->wants_wait)
						replies[gr->cmds[j]] = NULL;
					if (replies[gr->cmds[j]] == NULL)
						ask[gr->cmds[j]] = -1;
				}
			}
			else if (gr->waited >= 0 && gr->waited < nodes[ni].wait_replicas)
			{
				char		endpoint[600];

				/* the master may be an old one after a failover: rediscover next time */
				strlcpy(endpoint, nodes[ni].endpoint, sizeof(endpoint));
				DisconnectNode(ni);
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("no replica of Redis at %s confirmed the write within %d ms",
								endpoint, Max(1, CommandMs() / 2)),
						 errdetail("The write is retried later with the same identity, so it is applied exactly once.")));
			}
			for (int j = 0; j < gr->ncmds; j++)
			{
				int			i = gr->cmds[j];
				DkReply    *r = replies[i];
				int			slot;
				int			to;

				if (r == NULL)
					continue;
				switch (Classify(r, cmds[i], noscript[i]))
				{
					case V_DONE:
						done[i] = true;
						npending--;
						break;
					case V_NOSCRIPT:
						noscript[i]++;
						need_load[i] = true;
						replies[i] = NULL;
						break;
					case V_MOVED:
						to = ParseRedirect(r->str, ni, &slot);
						if (to < 0)
						{
							done[i] = true;
							npending--;
							break;
						}
						slot_node[slot] = (int16) to;
						slots_stale = true;
						ask[i] = -1;
						transient = r->str;
						replies[i] = NULL;
						break;
					case V_ASK:
						to = ParseRedirect(r->str, ni, &slot);
						if (to < 0)
						{
							done[i] = true;
							npending--;
							break;
						}
						ask[i] = to;
						transient = r->str;
						replies[i] = NULL;
						break;
					case V_BACKOFF:
						ask[i] = -1;
						transient = r->str;
						wait_more = true;
						if (strncmp(r->str, "READONLY", 8) == 0)
						{
							/* a master turned replica: rediscover / re-read the map */
							DisconnectNode(ni);
							slots_stale = true;
						}
						replies[i] = NULL;
						break;
				}
			}
		}

		if (npending == 0)
			break;
		if (round + 1 >= MAX_ROUNDS || (wait_more && MsLeft(retry_deadline) <= 0))
		{
			if (transient == NULL)
				transient = "too many retries";
			ereport(ERROR,
					(errcode(strncmp(transient, "MOVED", 5) == 0 || strncmp(transient, "ASK", 3) == 0 ?
							 ERRCODE_CONNECTION_FAILURE : ERRCODE_CANNOT_CONNECT_NOW),
					 errmsg("%s cannot serve the request right now", target->endpoint),
					 errdetail("Redis replied: %s (the command was not applied).", transient),
					 errhint("Retry shortly; a failover or a resharding may be in progress.")));
		}
		if (wait_more)
		{
			SleepMs(Min(backoff, Max(1, MsLeft(retry_deadline))));
			backoff = Min(backoff * 2, BACKOFF_MAX_MS);
		}
	}
	return replies;
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
	if (target->mode == DK_MODE_CLUSTER)
	{
		DkErr		err = {0};

		if (!RefreshSlots(&err))
			RaiseErr(&err);
		masters = palloc(sizeof(int) * nnodes);
		for (int s = 0; s < DK_SLOTS; s++)
		{
			int			m = slot_node[s];
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
				 errmsg("Redis at %s is a read-only replica", last_endpoint),
				 errhint("Point distkit.redis_url at the primary.")));
	if (strncmp(msg, "LOADING", 7) == 0 || strncmp(msg, "BUSY", 4) == 0 ||
		strncmp(msg, "MASTERDOWN", 10) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CANNOT_CONNECT_NOW),
				 errmsg("Redis at %s cannot serve %s right now", last_endpoint, what),
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
