/*-------------------------------------------------------------------------
 *
 * redis_url.c
 *		The settings of distkit's Redis connection: distkit.redis_url and
 *		the timeouts.
 *
 * distkit.redis_url names one of three kinds of targets:
 *  - one Redis server (redis://, unix://);
 *  - a Redis Cluster (redis-cluster://seed,seed...), see redis_cluster.c;
 *  - a master found through Redis Sentinel (redis-sentinel://...#name),
 *    see redis_sentinel.c.
 * Each TCP scheme has a TLS twin (rediss://, rediss-cluster://,
 * rediss-sentinel://): the same target, every node reached through the
 * TLS transport (redis_tls.c, settings distkit.tls_*).
 *
 * The URL is parsed by its check hook into a DkRedisTarget; a malformed
 * URL is accepted there and reported at use time (EnsureTopology),
 * because the GUC machinery would echo the raw value (and its password) in
 * its own error.  The assign hook bumps dk_target_generation, and the next
 * call rebuilds the node table and reconnects.
 *
 * Timeouts: every connect is bounded by distkit.connect_timeout and every
 * round trip by distkit.command_timeout (ConnectMs, CommandMs).  Exit work
 * (DkRedisBeginExitWork: a session's release of its leases at exit, the
 * worker's final flush and shutdown tasks) is bounded by
 * distkit.exit_timeout, a superuser setting, instead of the connect and
 * command timeouts a user may raise to an hour: a user cannot delay
 * pg_terminate_backend or a server stop.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"
#include "utils/timestamp.h"

#include "redis_int.h"

/* GUC variables */
static char *redis_url = NULL;
static int	connect_timeout_guc = 1000;
static int	command_timeout_guc = 1000;
static int	exit_timeout_ms = 1000;
int			dk_idle_timeout_ms = 60000;

/*
 * Exit work (DkRedisBeginExitWork): while dk_exit_deadline is set, every
 * connect and command timeout is capped by the time left until it.
 */
TimestampTz dk_exit_deadline = 0;

/* Active target and a generation that changes whenever it is assigned. */
DkRedisTarget *dk_target = NULL;
uint64		dk_target_generation = 0;

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
bool
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
void
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

/*
 * The comma-separated list of seed nodes or sentinels of a
 * redis-cluster:// or redis-sentinel:// URL, rest[0..end) after the user
 * information, with its /db, into t; false with t->error on failure.
 */
static bool
ParseAddrList(DkRedisTarget *t, const char *rest, const char *end)
{
#define LIST_FAIL(...) do { snprintf(t->error, sizeof(t->error), __VA_ARGS__); return false; } while (0)
	const char *slash = memchr(rest, '/', end - rest);
	const char *list_end = slash ? slash : end;
	const char *p = rest;
	const char *what = t->topology == DK_TOPOLOGY_CLUSTER ? "seed node" : "sentinel";
	const char *problem;
	size_t		elen;

	if (p == list_end)
		LIST_FAIL("at least one %s host:port is needed", what);
	while (p <= list_end)
	{
		const char *comma = memchr(p, ',', list_end - p);
		const char *item_end = comma ? comma : list_end;

		if (t->naddrs == DK_MAX_ADDRS)
			LIST_FAIL("at most %d %ss may be listed", DK_MAX_ADDRS, what);
		if (item_end == p)
			LIST_FAIL("an empty %s address in the list", what);
		problem = ParseHostPort(p, item_end - p, t->addrs[t->naddrs].host,
								sizeof(t->addrs[0].host), &t->addrs[t->naddrs].port,
								t->topology == DK_TOPOLOGY_CLUSTER ? 6379 : 26379);
		if (problem)
			LIST_FAIL("%s", problem);
		t->naddrs++;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	if (slash && slash + 1 < end &&
		!ParseBoundedInt(slash + 1, end - slash - 1, 0, 1000000, &t->db))
		LIST_FAIL("the path must be a database number, as in /0");
	if (t->topology == DK_TOPOLOGY_CLUSTER && t->db != 0)
		LIST_FAIL("a Redis Cluster has database 0 only");
	if (t->topology == DK_TOPOLOGY_CLUSTER)
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
	return true;
#undef LIST_FAIL
}

/*
 * The query of a redis-sentinel:// URL, q[0..end): sentinel_user=U and
 * sentinel_password=P (%-escaped), the credentials for the sentinels
 * themselves (AUTH before SENTINEL commands); false with t->error.
 */
static bool
ParseSentinelAuth(DkRedisTarget *t, const char *q, const char *end)
{
	while (q < end)
	{
		const char *amp = memchr(q, '&', end - q);
		const char *item_end = amp ? amp : end;
		const char *eq = memchr(q, '=', item_end - q);

		if (eq && eq - q == 13 && strncmp(q, "sentinel_user", 13) == 0)
		{
			if (!PercentDecode(eq + 1, item_end - eq - 1, t->sentinel_user, sizeof(t->sentinel_user)))
			{
				snprintf(t->error, sizeof(t->error), "sentinel_user is too long or has a bad %%-escape");
				return false;
			}
		}
		else if (eq && eq - q == 17 && strncmp(q, "sentinel_password", 17) == 0)
		{
			if (!PercentDecode(eq + 1, item_end - eq - 1, t->sentinel_password, sizeof(t->sentinel_password)) ||
				t->sentinel_password[0] == '\0')
			{
				snprintf(t->error, sizeof(t->error), "sentinel_password is empty, too long or has a bad %%-escape");
				return false;
			}
			t->has_sentinel_auth = true;
		}
		else
		{
			snprintf(t->error, sizeof(t->error),
					 "the query parameters of a Sentinel URL are sentinel_user and sentinel_password");
			return false;
		}
		q = item_end + 1;
	}
	if (t->sentinel_user[0] && !t->has_sentinel_auth)
	{
		snprintf(t->error, sizeof(t->error), "sentinel_user needs sentinel_password");
		return false;
	}
	return true;
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
	const char *s;

	memset(t, 0, sizeof(*t));
	t->port = 6379;

#define URL_FAIL(...) do { snprintf(t->error, sizeof(t->error), __VA_ARGS__); return; } while (0)

	/* rediss: the same with TLS (redis_tls.c); s is what follows the "redis" */
	s = url + 5;
	if (strncmp(url, "redis", 5) == 0 && s[0] == 's' && (s[1] == ':' || s[1] == '-'))
	{
		t->tls = true;
		s++;
	}
	if (strncmp(url, "redis", 5) == 0 && strncmp(s, "://", 3) == 0)
		rest = s + 3;
	else if (strncmp(url, "redis", 5) == 0 && strncmp(s, "-cluster://", 11) == 0)
	{
		rest = s + 11;
		t->topology = DK_TOPOLOGY_CLUSTER;
	}
	else if (strncmp(url, "redis", 5) == 0 && strncmp(s, "-sentinel://", 12) == 0)
	{
		rest = s + 12;
		t->topology = DK_TOPOLOGY_SENTINEL;
	}
	else if (!t->tls && strncmp(url, "unix://", 7) == 0)
	{
		rest = url + 7;
		t->is_unix = true;
	}
	else
		URL_FAIL("it must start with redis://, redis-cluster://, redis-sentinel://, unix:// "
				 "or, for TLS, rediss://, rediss-cluster://, rediss-sentinel://");

	end = rest + strlen(rest);
	if (t->is_unix)
	{
		query = strchr(rest, '?');
		if (query)
			end = query;
	}
	if (t->topology == DK_TOPOLOGY_SENTINEL)
	{
		fragment = strchr(rest, '#');
		if (fragment == NULL || fragment[1] == '\0')
			URL_FAIL("a %s-sentinel:// URL must end with #master-name", t->tls ? "rediss" : "redis");
		if (!PercentDecode(fragment + 1, strlen(fragment + 1), t->master_name, sizeof(t->master_name)))
			URL_FAIL("the master name is too long or has a bad %%-escape");
		end = fragment;
		query = memchr(rest, '?', end - rest);
		if (query)
		{
			if (!ParseSentinelAuth(t, query + 1, end))
				return;
			end = query;
		}
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
		{
			/* allowed with distkit.redis_password_file, checked at use */
			t->password_empty = true;
			strlcpy(t->error, "the password is empty", sizeof(t->error));
		}
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
	else if (t->topology == DK_TOPOLOGY_SINGLE)
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
	else if (!ParseAddrList(t, rest, end))
		return;
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
	dk_target = (DkRedisTarget *) extra;
	dk_target_generation++;
}

/* Defines the GUCs this module owns. */
void
DkRedisInit(void)
{
	DefineCustomStringVariable("distkit.redis_url",
							   "Redis server used by distkit.",
							   "redis://[user:password@]host[:port][/db], unix:///path/to/socket[?db=N], "
							   "redis-cluster://[user:password@]host:port[,host:port...] or "
							   "redis-sentinel://[user:password@]host:port[,host:port...][/db]"
							   "[?sentinel_user=U&sentinel_password=P]#master-name; "
							   "rediss://, rediss-cluster:// and rediss-sentinel:// for TLS (distkit.tls_*). "
							   "Readable by superusers only.  Server-wide: set it in postgresql.conf or with "
							   "ALTER SYSTEM, then reload.",
							   &redis_url,
							   "redis://127.0.0.1:6379/0",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   CheckRedisUrl, AssignRedisUrl, NULL);
	DkTlsInit();
	DkPasswordFileInit();
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
							&dk_idle_timeout_ms,
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

/* Milliseconds left until deadline (0 if passed). */
long
MsLeft(TimestampTz deadline)
{
	long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

	return ms;
}

/* A timeout setting's value, capped in exit work by the time left of it. */
static int
CapToExit(int ms)
{
	if (dk_exit_deadline == 0)
		return ms;
	return (int) Min((long) ms, MsLeft(dk_exit_deadline));
}

/* The connect timeout in force (distkit.connect_timeout, or less in exit work). */
int
ConnectMs(void)
{
	return CapToExit(connect_timeout_guc);
}

/* The command timeout in force (distkit.command_timeout, or less in exit work). */
int
CommandMs(void)
{
	return CapToExit(command_timeout_guc);
}

/* "N ms (setting)" of the bound a timeout message names. */
static char *
BoundText(int guc_ms, const char *guc_label)
{
	if (dk_exit_deadline != 0 && exit_timeout_ms < guc_ms)
		return psprintf("%d ms (distkit.exit_timeout)", exit_timeout_ms);
	return psprintf("%d ms%s", guc_ms, guc_label);
}

/* The connect bound, as a timeout message names it. */
char *
ConnectBoundText(void)
{
	return BoundText(connect_timeout_guc, "");
}

/* The command bound, as a timeout message names it. */
char *
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
	dk_exit_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), exit_timeout_ms);
}

/* End the exit work begun by DkRedisBeginExitWork. */
void
DkRedisEndExitWork(void)
{
	dk_exit_deadline = 0;
}

/* Milliseconds left of the exit work (0 when it is over or not begun). */
long
DkRedisExitWorkLeftMs(void)
{
	return dk_exit_deadline == 0 ? 0 : MsLeft(dk_exit_deadline);
}

/* distkit.exit_timeout in milliseconds. */
int
DkRedisExitTimeoutMs(void)
{
	return exit_timeout_ms;
}

/* Refuse a call in exit work whose time is up. */
void
CheckExitWorkLeft(void)
{
	if (dk_exit_deadline != 0 && MsLeft(dk_exit_deadline) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("no time left to reach Redis at %s: distkit.exit_timeout (%d ms) has passed",
						dk_target->endpoint, exit_timeout_ms)));
}
