/*-------------------------------------------------------------------------
 *
 * redis.c
 *		The only place in distkit that talks to Redis.
 *
 * Each process (backend or the flusher worker) keeps at most one hiredis
 * context, opened lazily on first use and reused across calls.  The socket
 * is non-blocking: every wait goes through a WaitEventSet holding our latch,
 * the socket and postmaster death, so a call blocked on Redis honours
 * Ctrl-C, statement_timeout and pg_terminate_backend, and is bounded by
 * distkit.connect_timeout / distkit.command_timeout.
 *
 * Commands are pipelined: DkRedisRun writes all of them, then reads one
 * reply per command.  Replies are copied into palloc memory at once and the
 * hiredis reply freed, so no hiredis memory outlives this file and callers
 * may ereport freely.  Before any ereport from here the context is freed
 * (after a failure its state is unknown) and the next call reconnects.
 *
 * Scripts run with EVALSHA; a NOSCRIPT reply means the command did not run,
 * so the script is loaded and that command retried once.
 *
 * A reused connection is probed (poll with zero timeout) before a request
 * is written: a Redis restart leaves the old socket readable with EOF, and
 * then we reconnect before sending anything, so the outcome stays known.
 * A failure after a request was sent is reported as SQLSTATE 08007
 * (outcome unknown), except for idempotent commands, which are retried once
 * on a fresh connection.
 *
 * distkit.redis_url is parsed by its check hook into a DkRedisTarget; a
 * malformed URL is accepted there and reported at use time, because the GUC
 * machinery would echo the raw value (and its password) in its own error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>
#include <sys/socket.h>
#include <hiredis/hiredis.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "redis.h"

/* Parsed form of distkit.redis_url (GUC "extra", malloc'd). */
typedef struct DkRedisTarget
{
	bool		valid;
	char		error[200];		/* why not valid; never contains secrets */
	bool		is_unix;
	char		host[256];
	int			port;
	char		path[512];
	int			db;
	bool		has_auth;
	char		user[128];
	char		password[256];
	char		endpoint[600];	/* host:port or unix:path, for messages */
} DkRedisTarget;

/* GUC variables */
static char *redis_url = NULL;
static int	connect_timeout_ms = 1000;
static int	command_timeout_ms = 1000;

/* Active target and a generation that changes whenever it is assigned. */
static DkRedisTarget *target = NULL;
static uint64 target_generation = 0;

/* Connection state of this process. */
static redisContext *conn = NULL;
static WaitEventSet *conn_wes = NULL;
static int	conn_sock_pos = -1;
static uint64 conn_generation = 0;
static bool conn_busy = false;	/* a request is in flight */
static char conn_endpoint[600];

static void ConnectRedis(void);

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

/* Fill t from a URL; on failure t->valid is false and t->error says why. */
static void
ParseRedisUrl(const char *url, DkRedisTarget *t)
{
	const char *rest;
	const char *at;
	const char *query = NULL;
	const char *end;

	memset(t, 0, sizeof(*t));
	t->port = 6379;

#define URL_FAIL(...) do { snprintf(t->error, sizeof(t->error), __VA_ARGS__); return; } while (0)

	if (strncmp(url, "redis://", 8) == 0)
		rest = url + 8;
	else if (strncmp(url, "unix://", 7) == 0)
	{
		rest = url + 7;
		t->is_unix = true;
	}
	else if (strncmp(url, "rediss://", 9) == 0)
		URL_FAIL("TLS (rediss://) is not supported by this build (hiredis 0.14)");
	else
		URL_FAIL("it must start with redis:// or unix://");

	end = rest + strlen(rest);
	if (t->is_unix)
	{
		query = strchr(rest, '?');
		if (query)
			end = query;
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
	else
	{
		const char *slash = strchr(rest, '/');
		const char *hp_end = slash ? slash : end;
		const char *port_start = NULL;

		if (rest[0] == '[')
		{
			const char *close = memchr(rest, ']', hp_end - rest);

			if (close == NULL || close == rest + 1)
				URL_FAIL("an IPv6 address must be written as [address]");
			if ((size_t) (close - rest - 1) >= sizeof(t->host))
				URL_FAIL("the host name is too long");
			memcpy(t->host, rest + 1, close - rest - 1);
			if (close + 1 < hp_end)
			{
				if (close[1] != ':')
					URL_FAIL("unexpected characters after the IPv6 address");
				port_start = close + 2;
			}
		}
		else
		{
			const char *colon = memchr(rest, ':', hp_end - rest);
			const char *host_end = colon ? colon : hp_end;

			if (host_end == rest)
				URL_FAIL("the host name is missing");
			if ((size_t) (host_end - rest) >= sizeof(t->host))
				URL_FAIL("the host name is too long");
			memcpy(t->host, rest, host_end - rest);
			if (colon)
				port_start = colon + 1;
		}
		if (port_start &&
			!ParseBoundedInt(port_start, hp_end - port_start, 1, 65535, &t->port))
			URL_FAIL("the port must be a number from 1 to 65535");
		if (slash && slash + 1 < end &&
			!ParseBoundedInt(slash + 1, end - slash - 1, 0, 1000000, &t->db))
			URL_FAIL("the path must be a database number, as in /0");
		if (strchr(t->host, '[') || strchr(t->host, ']'))
			URL_FAIL("an IPv6 address must be written as [address]");
		if (strchr(t->host, ':'))
			snprintf(t->endpoint, sizeof(t->endpoint), "[%s]:%d", t->host, t->port);
		else
			snprintf(t->endpoint, sizeof(t->endpoint), "%s:%d", t->host, t->port);
	}
	t->valid = true;
#undef URL_FAIL
}

/*
 * GUC check hook: parse into *extra; never rejects a malformed URL (see
 * file header).  It does reject credentials in a value that is about to be
 * stored in a catalog every user can read: ALTER DATABASE/ROLE ... SET and
 * a function's SET clause are validated with source PGC_S_TEST.
 */
static bool
CheckRedisUrl(char **newval, void **extra, GucSource source)
{
	DkRedisTarget *t;

	if (source == PGC_S_TEST && *newval && strchr(*newval, '@'))
	{
		GUC_check_errdetail("A distkit.redis_url with a user name or password cannot be stored as a database, role or function setting: every user can read those.");
		GUC_check_errhint("Set it in postgresql.conf or with ALTER SYSTEM, which only superusers can read.");
		return false;
	}
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
							   "redis://[user:password@]host[:port][/db] or unix:///path/to/socket[?db=N]. "
							   "Readable by superusers only.",
							   &redis_url,
							   "redis://127.0.0.1:6379/0",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY,
							   CheckRedisUrl, AssignRedisUrl, NULL);
	DefineCustomIntVariable("distkit.connect_timeout",
							"Time allowed to connect and authenticate to Redis.",
							NULL,
							&connect_timeout_ms,
							1000, 1, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("distkit.command_timeout",
							"Time allowed for one round trip to Redis.",
							NULL,
							&command_timeout_ms,
							1000, 1, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* distkit.command_timeout in milliseconds. */
int
DkRedisCommandTimeoutMs(void)
{
	return command_timeout_ms;
}

/* Host:port (or unix:path) of the configured Redis, without credentials. */
char *
DkRedisEndpoint(void)
{
	if (target == NULL || !target->valid)
		return pstrdup("(invalid distkit.redis_url)");
	return pstrdup(target->endpoint);
}

/* True if this process holds an open connection. */
bool
DkRedisConnected(void)
{
	return conn != NULL;
}

/* Closes this process's connection, if any. */
void
DkRedisDisconnect(void)
{
	if (conn_wes)
	{
		FreeWaitEventSet(conn_wes);
		conn_wes = NULL;
	}
	if (conn)
	{
		redisFree(conn);
		conn = NULL;
	}
	conn_busy = false;
}

/* Raise a connection-class error after dropping the connection. */
static void
pg_attribute_noreturn()
ConnectionError(int sqlstate, const char *fmt_what, const char *why)
{
	char		endpoint[600];

	strlcpy(endpoint, conn_endpoint, sizeof(endpoint));
	DkRedisDisconnect();
	if (sqlstate == ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("could not connect to Redis at %s: %s", endpoint, why),
				 errhint("Check distkit.redis_url and that redis-server is running and reachable.")));
	else
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s Redis at %s: %s", fmt_what, endpoint, why)));
	pg_unreachable();
}

/* Milliseconds left until deadline (0 if passed). */
static long
MsLeft(TimestampTz deadline)
{
	long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

	return ms;
}

/*
 * Wait until the socket is readable/writable or the deadline passes.
 * Returns false on timeout.  Handles interrupts: a pending cancel or
 * termination drops the connection first (its state is unknown) and then
 * lets CHECK_FOR_INTERRUPTS throw.
 */
static bool
WaitSocket(bool for_write, TimestampTz deadline)
{
	ModifyWaitEvent(conn_wes, conn_sock_pos,
					for_write ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE, NULL);
	for (;;)
	{
		WaitEvent	ev;
		long		timeout = MsLeft(deadline);
		int			n;

		if (timeout <= 0)
			return false;
		n = WaitEventSetWait(conn_wes, timeout, &ev, 1, PG_WAIT_EXTENSION);
		if (n == 0)
			return false;
		if (ev.events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			if (InterruptPending && (QueryCancelPending || ProcDiePending))
			{
				DkRedisDisconnect();
				CHECK_FOR_INTERRUPTS();
				ereport(ERROR,
						(errcode(ERRCODE_QUERY_CANCELED),
						 errmsg("Redis request canceled")));
			}
			continue;
		}
		if (ev.events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
			return true;
	}
}

/* Write everything buffered in the context; false on timeout, error raised on I/O failure. */
static bool
FlushOutput(TimestampTz deadline, const char **why)
{
	int			done = 0;

	for (;;)
	{
		if (redisBufferWrite(conn, &done) != REDIS_OK)
		{
			*why = conn->errstr;
			return false;
		}
		if (done)
			return true;
		if (!WaitSocket(true, deadline))
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
 * Read one reply; NULL with *why set on timeout or I/O error.
 * The hiredis reply is freed before returning.
 */
static DkReply *
ReadReply(TimestampTz deadline, const char **why)
{
	for (;;)
	{
		void	   *raw = NULL;

		if (redisGetReplyFromReader(conn, &raw) != REDIS_OK)
		{
			*why = conn->errstr;
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
			return d;
		}
		if (!WaitSocket(false, deadline))
		{
			*why = "timeout";
			return NULL;
		}
		if (redisBufferRead(conn) != REDIS_OK)
		{
			*why = conn->errstr;
			return NULL;
		}
	}
}

/*
 * Write cmds and read their replies within deadline.  Returns NULL and sets
 * *why (and *sent) on failure, leaving the caller to decide what to report.
 */
static DkReply **
Exchange(DkCmd **cmds, int ncmds, TimestampTz deadline, const char **why, bool *sent)
{
	DkReply   **replies = palloc0(sizeof(DkReply *) * ncmds);

	*sent = false;
	for (int i = 0; i < ncmds; i++)
		if (redisAppendCommandArgv(conn, cmds[i]->argc, cmds[i]->argv,
								   cmds[i]->argvlen) != REDIS_OK)
		{
			*why = "out of memory";
			return NULL;
		}
	conn_busy = true;
	*sent = true;
	if (!FlushOutput(deadline, why))
		return NULL;
	for (int i = 0; i < ncmds; i++)
		if ((replies[i] = ReadReply(deadline, why)) == NULL)
			return NULL;
	conn_busy = false;
	return replies;
}

/* A Redis error reply as an SQL error of the handshake. */
static void
pg_attribute_noreturn()
HandshakeError(const DkReply *r)
{
	char		endpoint[600];
	char	   *msg = pstrdup(r->str);

	strlcpy(endpoint, conn_endpoint, sizeof(endpoint));
	DkRedisDisconnect();
	if (strncmp(msg, "WRONGPASS", 9) == 0 || strncmp(msg, "ERR invalid password", 20) == 0 ||
		strncmp(msg, "ERR AUTH", 8) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PASSWORD),
				 errmsg("authentication to Redis at %s failed", endpoint),
				 errdetail("Redis replied: %s", msg),
				 errhint("Check the user name and password in distkit.redis_url.")));
	if (strncmp(msg, "NOAUTH", 6) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("Redis at %s requires authentication", endpoint),
				 errhint("Put user:password@ (or :password@) in distkit.redis_url.")));
	if (strstr(msg, "DB index") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("Redis at %s rejected the database number in distkit.redis_url", endpoint),
				 errdetail("Redis replied: %s", msg)));
	DkReplyRaiseError(r, "connection set-up");
}

/* Open the connection (TCP or unix socket), authenticate and select the db. */
static void
ConnectRedis(void)
{
	TimestampTz deadline;
	int			soerr = 0;
	socklen_t	slen = sizeof(soerr);
	DkCmd	   *hs[2];
	int			nhs = 0;
	const char *why = NULL;
	bool		sent;
	DkReply   **r;

	DkRedisDisconnect();
	if (target == NULL || !target->valid)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("distkit.redis_url is invalid: %s",
						target ? target->error : "not set"),
				 errhint("Use redis://[user:password@]host[:port][/db] or unix:///path/to/socket[?db=N].")));

	strlcpy(conn_endpoint, target->endpoint, sizeof(conn_endpoint));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), connect_timeout_ms);

	if (target->is_unix)
		conn = redisConnectUnixNonBlock(target->path);
	else
		conn = redisConnectNonBlock(target->host, target->port);
	if (conn == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (conn->err)
		ConnectionError(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, NULL,
						pstrdup(conn->errstr));

	conn_wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(conn_wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(conn_wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	conn_sock_pos = AddWaitEventToSet(conn_wes, WL_SOCKET_WRITEABLE, conn->fd, NULL, NULL);
	conn_generation = target_generation;

	if (!WaitSocket(true, deadline))
		ConnectionError(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, NULL,
						psprintf("timed out after %d ms", connect_timeout_ms));
	if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0)
		soerr = errno;
	if (soerr != 0)
		ConnectionError(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, NULL,
						pstrdup(strerror(soerr)));

	if (target->has_auth)
	{
		hs[nhs] = DkCmdNew("AUTH");
		if (target->user[0])
			DkCmdArgStr(hs[nhs], target->user);
		/* a copy: the command's copy is wiped below, target's must stay */
		DkCmdArgStr(hs[nhs], pstrdup(target->password));
		nhs++;
	}
	hs[nhs] = DkCmdNew("SELECT");
	DkCmdArgInt(hs[nhs], target->db);
	nhs++;

	r = Exchange(hs, nhs, deadline, &why, &sent);
	/* the AUTH command holds the password: wipe it */
	if (target->has_auth)
		explicit_bzero((void *) hs[0]->argv[hs[0]->argc - 1], hs[0]->argvlen[hs[0]->argc - 1]);
	if (r == NULL)
		ConnectionError(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, NULL,
						strcmp(why, "timeout") == 0 ?
						psprintf("no reply within %d ms", connect_timeout_ms) : pstrdup(why));
	for (int i = 0; i < nhs; i++)
		if (r[i]->type == DK_REPLY_ERROR)
			HandshakeError(r[i]);
}

/* True if an idle connection shows EOF or unexpected data (e.g. Redis restarted). */
static bool
IdleConnectionBroken(void)
{
	struct pollfd pfd;

	pfd.fd = conn->fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) != 0;
}

/* Make sure a usable connection is open. */
static void
EnsureConnection(void)
{
	if (conn != NULL &&
		(conn_busy || conn_generation != target_generation || conn->err ||
		 IdleConnectionBroken()))
		DkRedisDisconnect();
	if (conn == NULL)
		ConnectRedis();
}

/*
 * Report a failed exchange.  A request that may have reached Redis gives
 * 08007 unless it is idempotent; otherwise the connection is lost (08006).
 */
static void
pg_attribute_noreturn()
ExchangeFailed(DkSafety safety, bool sent, const char *why)
{
	char	   *whycopy = strcmp(why, "timeout") == 0 ?
		psprintf("no reply within %d ms (distkit.command_timeout)", command_timeout_ms) :
		pstrdup(why);

	if (safety == DK_NOT_IDEMPOTENT && sent)
	{
		char		endpoint[600];

		strlcpy(endpoint, conn_endpoint, sizeof(endpoint));
		DkRedisDisconnect();
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN),
				 errmsg("lost the reply from Redis at %s: %s", endpoint, whycopy),
				 errdetail("The command may or may not have been applied in Redis."),
				 errhint("Read the value again before retrying a non-idempotent change.")));
	}
	ConnectionError(ERRCODE_CONNECTION_FAILURE, "lost connection to", whycopy);
}

/*
 * Commands answered NOSCRIPT did not run: load their scripts and run them
 * again, in one more round trip, replacing their replies in place.
 */
static void
RetryNoScript(DkCmd **cmds, DkReply **replies, int ncmds, DkSafety safety)
{
	DkCmd	  **batch = palloc(sizeof(DkCmd *) * (ncmds + DK_LUA_COUNT));
	int		   *idx = palloc(sizeof(int) * ncmds);
	bool		loaded[DK_LUA_COUNT] = {0};
	int			nload = 0;
	int			nretry = 0;
	const char *why = NULL;
	bool		sent;
	DkReply   **again;

	for (int i = 0; i < ncmds; i++)
	{
		int			s = cmds[i]->script;

		if (s < 0 || replies[i]->type != DK_REPLY_ERROR ||
			strncmp(replies[i]->str, "NOSCRIPT", 8) != 0)
			continue;
		if (!loaded[s])
		{
			DkCmd	   *load = DkCmdNew("SCRIPT");

			DkCmdArgStr(load, "LOAD");
			DkCmdArgStr(load, DkLuaScripts[s].source);
			batch[nload++] = load;
			loaded[s] = true;
		}
		idx[nretry++] = i;
	}
	if (nretry == 0)
		return;
	for (int j = 0; j < nretry; j++)
		batch[nload + j] = cmds[idx[j]];

	again = Exchange(batch, nload + nretry,
					 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), command_timeout_ms),
					 &why, &sent);
	if (again == NULL)
		ExchangeFailed(safety, sent, why);
	for (int j = 0; j < nload; j++)
		if (again[j]->type == DK_REPLY_ERROR)
			DkReplyRaiseError(again[j], "loading a Lua script");
	for (int j = 0; j < nretry; j++)
		replies[idx[j]] = again[nload + j];
}

/*
 * Run ncmds commands in one pipelined round trip and return their replies
 * (error replies included; see DkReplyRaiseError).  Connection failures,
 * timeouts and cancellation raise errors.  An idempotent request that fails
 * with an I/O error (not a timeout) is retried once on a new connection.
 */
DkReply **
DkRedisRun(DkCmd **cmds, int ncmds, DkSafety safety)
{
	const char *why = NULL;
	bool		sent;
	DkReply   **replies;

	EnsureConnection();
	replies = Exchange(cmds, ncmds,
					   TimestampTzPlusMilliseconds(GetCurrentTimestamp(), command_timeout_ms),
					   &why, &sent);
	if (replies == NULL && safety == DK_IDEMPOTENT && strcmp(why, "timeout") != 0)
	{
		ConnectRedis();
		replies = Exchange(cmds, ncmds,
						   TimestampTzPlusMilliseconds(GetCurrentTimestamp(), command_timeout_ms),
						   &why, &sent);
	}
	if (replies == NULL)
		ExchangeFailed(safety, sent, why);
	RetryNoScript(cmds, replies, ncmds, safety);
	return replies;
}

/* Run one command; see DkRedisRun. */
DkReply *
DkRedisRunOne(DkCmd *cmd, DkSafety safety)
{
	return DkRedisRun(&cmd, 1, safety)[0];
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
				 errmsg("Redis at %s is a read-only replica", conn_endpoint),
				 errhint("Point distkit.redis_url at the primary.")));
	if (strncmp(msg, "LOADING", 7) == 0 || strncmp(msg, "BUSY", 4) == 0 ||
		strncmp(msg, "MASTERDOWN", 10) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CANNOT_CONNECT_NOW),
				 errmsg("Redis at %s cannot serve %s right now", conn_endpoint, what),
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
