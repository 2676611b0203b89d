/*-------------------------------------------------------------------------
 *
 * redis_conn.c
 *		One node's connection: connect, handshake, waits, reads and writes.
 *		The only file that touches a socket.
 *
 * Each process (backend or the distkit worker) keeps a table of nodes
 * (dk_nodes) with at most one connection each, opened lazily on first use
 * and reused across calls.  Sockets are non-blocking: every wait goes
 * through the node's WaitEventSet holding our latch, the socket and
 * postmaster death, so a call blocked on Redis honours Ctrl-C,
 * statement_timeout and pg_terminate_backend (HandleInterrupt), and is
 * bounded by distkit.connect_timeout / distkit.command_timeout.
 *
 * Replies are copied into palloc memory at once and the hiredis reply
 * freed, so no hiredis memory outlives this file and callers may ereport
 * freely.  Before any ereport about a connection, that connection is freed
 * (its state is unknown) and the next call reconnects; a connection left
 * with a request in flight by an error elsewhere is marked busy and
 * dropped before reuse.
 *
 * A reused connection is probed (poll with zero timeout) before a request
 * is written: a Redis restart leaves the old socket readable with EOF, and
 * then we reconnect before sending anything, so the outcome stays known.
 *
 * Connections a session no longer uses are given back: each call (re)arms
 * a PostgreSQL timeout of distkit.idle_connection_timeout, whose handler
 * shuts the sockets down when it fires between calls, so that Redis frees
 * the client at once; the next call opens a new connection.  The distkit
 * worker keeps its connection (DkRedisKeepConnection).  Redis at maxclients
 * refuses new connections with "max number of clients reached": SQLSTATE
 * 08004 (FullRefusal), which the worker answers by asking again quickly.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>
#include <sys/socket.h>
#include <hiredis/hiredis.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/procsignal.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "metrics.h"
#include "redis_int.h"

/*
 * Idle connections (distkit.idle_connection_timeout): call_depth counts
 * the calls of the connection module in progress (and is raised while
 * connections are opened or freed); the idle timer's handler only acts
 * when it is zero.  See IdleTimeoutHandler.
 */
static volatile sig_atomic_t call_depth = 0;
static volatile sig_atomic_t idle_closed = false;
static bool keep_connections = false;	/* the worker: never idle-closed */
static bool idle_timer_registered = false;
static TimeoutId idle_timer_id;
static bool xact_callback_registered = false;

/*
 * Nodes of this process (TopMemoryContext; referred to by index, since the
 * array grows).  Single: node 0.  Sentinel: node 0 is the master (address
 * found by discovery), then the sentinels.  Cluster: the seeds, then every
 * node the slot map or a redirection named.  Built by EnsureTopology.
 */
DkNode	   *dk_nodes = NULL;
int			dk_nnodes = 0;
static int	maxnodes = 0;

/* Endpoint of the node that gave the last reply, for messages. */
char		dk_last_endpoint[600] = "";

/*
 * The worker's reason to abandon a Redis wait (a cancel, its shutdown), or
 * NULL; a cancel is reported once (DkRedisUseOwnCancel).
 */
static const char *(*cancel_check) (void) = NULL;

/*
 * Transports (DkTransport, redis_int.h): the plain one is here; the TLS one
 * (DkTlsTransport) is in redis_tls.c, the only file that knows OpenSSL.
 * Timeouts, interrupts and messages stay with the callers below, so every
 * transport gets them for free.
 *
 * The RESP layer (AppendCmd, ReadReply) is hiredis's: redisAppendCommandArgv
 * formats into the context's output buffer and redisGetReplyFromReader
 * parses its reader.  The plain transport lets hiredis 0.14 do the socket
 * I/O of that same context (redisConnectNonBlock, redisBufferWrite,
 * redisBufferRead), which reads and writes the fd directly; the TLS
 * transport moves the bytes itself: it writes the context's obuf through
 * OpenSSL and feeds what it decrypts to the context's reader.
 */

/* Record what failed on node n's connection; returns DK_IO_ERROR. */
DkIo
IoError(DkNode *n, const char *what)
{
	strlcpy(n->io_error, what, sizeof(n->io_error));
	return DK_IO_ERROR;
}

/* Plain: start a non-blocking TCP or unix-socket connect (hiredis). */
DkIo
PlainOpen(DkNode *n)
{
	redisContext *c;

	if (n->is_unix)
		c = redisConnectUnixNonBlock(n->path);
	else
		c = redisConnectNonBlock(n->host, n->port);
	if (c == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	n->ctx = c;
	if (c->err)
		return IoError(n, c->errstr);
	return DK_IO_WANT_WRITE;	/* the connect is done when the socket is writable */
}

/* Plain: the outcome of the connect, once the socket is writable. */
DkIo
PlainHandshake(DkNode *n)
{
	int			soerr = 0;
	socklen_t	slen = sizeof(soerr);

	if (getsockopt(n->ctx->fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0)
		soerr = errno;
	if (soerr != 0)
		return IoError(n, strerror(soerr));
	return DK_IO_OK;
}

/* Plain: write what is buffered; DK_IO_OK once all of it is written. */
static DkIo
PlainWrite(DkNode *n)
{
	int			done = 0;

	if (redisBufferWrite(n->ctx, &done) != REDIS_OK)
		return IoError(n, n->ctx->errstr);
	return done ? DK_IO_OK : DK_IO_WANT_WRITE;
}

/* Plain: read what has arrived into the reply parser. */
static DkIo
PlainRead(DkNode *n)
{
	if (redisBufferRead(n->ctx) != REDIS_OK)
		return IoError(n, n->ctx->errstr);
	return DK_IO_OK;
}

/* Plain: an idle connection is broken if it failed or shows EOF or data (e.g. Redis restarted). */
bool
PlainIdleBroken(DkNode *n)
{
	struct pollfd pfd;

	if (n->ctx == NULL || n->ctx->err)
		return true;			/* e.g. PlainOpen ran out of memory */
	pfd.fd = n->ctx->fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) != 0;
}

/* Plain: unread bytes, left in the socket. */
static ssize_t
PlainPeek(DkNode *n, char *buf, size_t len)
{
	if (n->ctx->fd < 0)
		return -1;
	return recv(n->ctx->fd, buf, len, MSG_DONTWAIT | MSG_PEEK);
}

/* Plain: free the context (closes the socket). */
static void
PlainClose(DkNode *n)
{
	if (n->ctx)
	{
		redisFree(n->ctx);
		n->ctx = NULL;
	}
}

/* Plain: the socket (async-signal-safe: read by the idle timer's handler). */
static pgsocket
PlainSocket(const DkNode *n)
{
	return n->ctx ? n->ctx->fd : PGINVALID_SOCKET;
}

static const DkTransport PlainTransport = {
	"plain", PlainOpen, PlainHandshake, PlainWrite, PlainRead,
	PlainIdleBroken, PlainPeek, PlainClose, PlainSocket
};

/* Close one node's connection. */
void
DisconnectNode(int ni)
{
	DkNode	   *n = &dk_nodes[ni];

	if (n->wes)
	{
		FreeWaitEventSet(n->wes);
		n->wes = NULL;
	}
	if (n->transport)
	{
		n->transport->close(n);
		n->transport = NULL;
	}
	n->busy = false;
}

/* Closes this process's connections, if any. */
void
DkRedisDisconnect(void)
{
	call_depth++;				/* keeps the idle timer's handler away */
	pg_compiler_barrier();
	for (int i = 0; i < dk_nnodes; i++)
		DisconnectNode(i);
	dk_slots_stale = true;
	pg_compiler_barrier();
	call_depth--;
}

/* The node for host:port (or a unix socket path), added if new. */
int
FindOrAddNode(bool is_unix, const char *host, int port, const char *path, bool is_sentinel)
{
	DkNode	   *n;

	for (int i = 0; i < dk_nnodes; i++)
		if (dk_nodes[i].is_unix == is_unix && dk_nodes[i].is_sentinel == is_sentinel &&
			(is_unix ? strcmp(dk_nodes[i].path, path) == 0 :
			 (dk_nodes[i].port == port && strcmp(dk_nodes[i].host, host) == 0)))
			return i;
	if (dk_nnodes == maxnodes)
	{
		int			newmax = maxnodes == 0 ? 8 : maxnodes * 2;

		if (dk_nodes == NULL)
			dk_nodes = MemoryContextAllocZero(TopMemoryContext, sizeof(DkNode) * newmax);
		else
		{
			dk_nodes = repalloc(dk_nodes, sizeof(DkNode) * newmax);
			memset(&dk_nodes[maxnodes], 0, sizeof(DkNode) * (newmax - maxnodes));
		}
		maxnodes = newmax;
	}
	n = &dk_nodes[dk_nnodes];
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
	return dk_nnodes++;
}

/* Raise a connection-class error. */
void
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
bool
ConnectFailed(int ni, DkErr *err, const char *why)
{
	err->sqlstate = ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
	err->msg = psprintf("could not connect to %s at %s: %s",
						dk_nodes[ni].is_sentinel ? "Redis Sentinel" : "Redis", dk_nodes[ni].endpoint, why);
	err->detail = NULL;
	err->hint = pstrdup(dk_nodes[ni].is_sentinel ?
						"Check the sentinels in distkit.redis_url and that they are running and reachable." :
						"Check distkit.redis_url and that redis-server is running and reachable.");
	DisconnectNode(ni);
	return false;
}

/*
 * SIGINT (pg_cancel_backend) in distkit's background processes (the worker,
 * the outbox shipper): a flag of our own instead of core's
 * QueryCancelPending, which CHECK_FOR_INTERRUPTS -- also run by every log
 * message -- would turn into an ERROR outside any handler, killing the
 * process.  A cancel abandons the Redis request the process waits for, and
 * is otherwise ignored; so does a shutdown request while shutdown_abandons
 * (NULL: always) says so.
 */
static volatile sig_atomic_t own_cancel_requested = false;
static bool connecting = false;	/* in ConnectNode: opening a connection */
static char own_cancel_why[NAMEDATALEN + 32];
static char own_shutdown_why[NAMEDATALEN + 32];
static bool (*own_shutdown_abandons) (void) = NULL;

static void
OwnCancelHandler(SIGNAL_ARGS)
{
	int			save_errno = errno;

	own_cancel_requested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * The cancel check of such a process (a cancel is reported once).  A
 * configuration reload abandons a connection attempt (not a request
 * already sent): these processes read their settings between cycles, so
 * a worker stuck in a handshake with a wrong distkit.redis_url would
 * otherwise keep at it for connect_timeout (up to an hour) after the URL
 * was corrected.  Not while stopping: the final flush would lose its
 * connection attempts to a reload it no longer reads.
 */
static const char *
OwnCancelCheck(void)
{
	if (ShutdownRequestPending && (own_shutdown_abandons == NULL || own_shutdown_abandons()))
		return own_shutdown_why;
	if (connecting && ConfigReloadPending && !ShutdownRequestPending)
		return "a configuration reload";
	if (!DkRedisTakeOwnCancel())
		return NULL;
	return own_cancel_why;
}

/*
 * Install it in a background process named who ("distkit worker"); call
 * before BackgroundWorkerUnblockSignals.
 */
void
DkRedisUseOwnCancel(const char *who, bool (*shutdown_abandons) (void))
{
	snprintf(own_cancel_why, sizeof(own_cancel_why), "a cancel request to the %s", who);
	snprintf(own_shutdown_why, sizeof(own_shutdown_why), "the shutdown of the %s", who);
	own_shutdown_abandons = shutdown_abandons;
	pqsignal(SIGINT, OwnCancelHandler);
	cancel_check = OwnCancelCheck;
}

/* Take (clear) a pending cancel of such a process: true if there was one. */
bool
DkRedisTakeOwnCancel(void)
{
	if (!own_cancel_requested)
		return false;
	own_cancel_requested = false;
	return true;
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
	for (int i = 0; i < dk_nnodes; i++)
		if (dk_nodes[i].transport != NULL && dk_nodes[i].transport->socket(&dk_nodes[i]) >= 0)
			(void) shutdown(dk_nodes[i].transport->socket(&dk_nodes[i]), SHUT_RDWR);
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
	if (keep_connections || !IsUnderPostmaster || dk_exit_deadline != 0)
		return;
	if (dk_idle_timeout_ms <= 0)
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
	enable_timeout_after(idle_timer_id, dk_idle_timeout_ms);
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
void
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
void
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

/* Is distkit.redis_url a Redis Cluster? (the lax flush groups keys by slot then) */
bool
DkRedisIsCluster(void)
{
	return dk_target != NULL && dk_target->valid && dk_target->topology == DK_TOPOLOGY_CLUSTER;
}

/*
 * Interrupts that arrive while we wait for Redis.
 *
 * A cancel or termination: drop every connection (their state is
 * unknown), then throw.  The distkit worker has its own cancel flag
 * (DkRedisUseOwnCancel): for it a cancel means "abandon this Redis
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
	WaitEventSet *wes = dk_nodes[ni].wes;

	ModifyWaitEvent(wes, dk_nodes[ni].sock_pos,
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
void
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

/* Write everything buffered for node ni: DK_IO_OK, DK_IO_TIMEOUT or DK_IO_ERROR. */
DkIo
FlushOutput(int ni, TimestampTz deadline)
{
	DkNode	   *n = &dk_nodes[ni];

	DkRoundTrips++;				/* one request to one node (metrics.c) */
	for (;;)
	{
		DkIo		io = n->transport->write(n);

		if (io == DK_IO_OK || io == DK_IO_ERROR)
			return io;
		if (!WaitSocket(ni, io == DK_IO_WANT_WRITE, deadline))
			return DK_IO_TIMEOUT;
	}
}

/*
 * The message of a failed exchange with node ni: "no reply within" the
 * connect or command bound, or what the transport said.
 */
char *
IoFailureText(int ni, DkIo io, bool connecting)
{
	if (io == DK_IO_TIMEOUT)
		return psprintf("no reply within %s", connecting ? ConnectBoundText() : CommandBoundText());
	return pstrdup(dk_nodes[ni].io_error);
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
 * Read one reply from node ni; NULL with *io (DK_IO_TIMEOUT or
 * DK_IO_ERROR) on failure.  The hiredis reply is freed before returning.
 */
DkReply *
ReadReply(int ni, TimestampTz deadline, DkIo *io)
{
	DkNode	   *n = &dk_nodes[ni];
	DkIo		want = DK_IO_WANT_READ;

	for (;;)
	{
		void	   *raw = NULL;

		if (redisGetReplyFromReader(n->ctx, &raw) != REDIS_OK)
		{
			*io = IoError(n, n->ctx->errstr);
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
			strlcpy(dk_last_endpoint, n->endpoint, sizeof(dk_last_endpoint));
			return d;
		}
		if (!WaitSocket(ni, want == DK_IO_WANT_WRITE, deadline))
		{
			*io = DK_IO_TIMEOUT;
			return NULL;
		}
		want = n->transport->read(n);
		if (want == DK_IO_ERROR)
		{
			*io = DK_IO_ERROR;
			return NULL;
		}
	}
}

/* Append one command to node ni's output buffer. */
void
AppendCmd(int ni, const DkCmd *cmd)
{
	if (redisAppendCommandArgv(dk_nodes[ni].ctx, cmd->argc, cmd->argv, cmd->argvlen) != REDIS_OK)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
}

/*
 * Write cmds to node ni and read their replies within deadline.  Returns
 * NULL and sets *io (and *sent) on failure, leaving the caller to decide
 * what to report.
 */
DkReply **
NodeExchange(int ni, DkCmd **cmds, int ncmds, TimestampTz deadline, DkIo *io, bool *sent)
{
	DkReply   **replies = palloc0(sizeof(DkReply *) * ncmds);

	*sent = false;
	dk_nodes[ni].busy = true;	/* from the first byte buffered: dropped if we fail */
	for (int i = 0; i < ncmds; i++)
		AppendCmd(ni, cmds[i]);
	*sent = true;
	if ((*io = FlushOutput(ni, deadline)) != DK_IO_OK)
		return NULL;
	for (int i = 0; i < ncmds; i++)
		if ((replies[i] = ReadReply(ni, deadline, io)) == NULL)
			return NULL;
	dk_nodes[ni].busy = false;
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
						dk_nodes[ni].endpoint);
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
	DkNode	   *n = &dk_nodes[ni];
	char		buf[sizeof(full)];
	ssize_t		len;

	if (n->transport == NULL)
		return false;
	len = n->transport->peek(n, buf, sizeof(full) - 1);
	return len == (ssize_t) sizeof(full) - 1 && memcmp(buf, full, len) == 0;
}

/* A Redis error reply to the handshake as an error of node ni. */
static bool
HandshakeFailed(int ni, const DkReply *r, DkErr *err)
{
	const char *endpoint = dk_nodes[ni].endpoint;
	char	   *msg = pstrdup(r->str);

	err->detail = psprintf("Redis replied: %s", msg);
	err->hint = NULL;
	if (strncmp(msg, "WRONGPASS", 9) == 0 || strncmp(msg, "ERR invalid password", 20) == 0 ||
		strncmp(msg, "ERR AUTH", 8) == 0)
	{
		err->sqlstate = ERRCODE_INVALID_PASSWORD;
		err->msg = psprintf("authentication to %s at %s failed",
							dk_nodes[ni].is_sentinel ? "Redis Sentinel" : "Redis", endpoint);
		err->hint = dk_nodes[ni].is_sentinel ?
			"Check sentinel_user and sentinel_password in distkit.redis_url." :
			PasswordFileActive() ?
			"Check the user name in distkit.redis_url and the password in distkit.redis_password_file." :
			"Check the user name and password in distkit.redis_url.";
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

/*
 * Open node ni's socket through its transport (TCP or unix socket, and
 * the transport's own handshake), within deadline.  False with *err
 * filled on failure (the node is then disconnected).
 */
static bool
OpenConnection(int ni, TimestampTz deadline, DkErr *err)
{
	DkNode	   *n = &dk_nodes[ni];
	DkIo		io;

	n->transport = dk_target->tls && !n->is_unix ? &DkTlsTransport : &PlainTransport;
	io = n->transport->open(n);
	if (io == DK_IO_ERROR)
		return ConnectFailed(ni, err, pstrdup(n->io_error));

	n->wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(n->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(n->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	n->sock_pos = AddWaitEventToSet(n->wes, WL_SOCKET_WRITEABLE, n->transport->socket(n), NULL, NULL);

	while (io == DK_IO_WANT_READ || io == DK_IO_WANT_WRITE)
	{
		if (!WaitSocket(ni, io == DK_IO_WANT_WRITE, deadline))
		{
			/* connected, and the transport's handshake waits for an answer? */
			const char *name = n->transport->name;	/* ConnectFailed disconnects */

			if (io == DK_IO_WANT_WRITE)
				return ConnectFailed(ni, err, psprintf("timed out after %s", ConnectBoundText()));
			ConnectFailed(ni, err, psprintf("no answer to the %s handshake within %s",
											 name, ConnectBoundText()));
			err->hint = psprintf("A server without %s never answers it: check that the port in "
								 "distkit.redis_url is its %s port, and that the server is not stopped.",
								 name, name);
			return false;
		}
		io = n->transport->handshake(n);
	}
	if (io == DK_IO_ERROR)
		return ConnectFailed(ni, err, pstrdup(n->io_error));
	return true;
}

/*
 * Set up the Redis session on node ni's new connection: AUTH, SELECT of
 * the db, and for a sentinel-managed master ROLE, to check it is one.
 * False with *err filled on failure (the node is then disconnected).
 */
static bool
SetUpSession(int ni, TimestampTz deadline, bool check_role, DkErr *err)
{
	DkCmd	   *hs[3];
	int			nhs = 0;
	DkIo		io = DK_IO_OK;
	bool		sent;
	DkReply   **r;
	bool		sentinel = dk_nodes[ni].is_sentinel;
	bool		from_file = !sentinel && PasswordFileActive();
	bool		has_auth = sentinel ? dk_target->has_sentinel_auth : (dk_target->has_auth || from_file);

	if (has_auth)
	{
		const char *user = sentinel ? dk_target->sentinel_user : dk_target->user;
		char		filepw[1024];
		char		why[400];

		if (from_file &&
			!PasswordFileRead(filepw, sizeof(filepw), &dk_nodes[ni].auth_version, why, sizeof(why)))
		{
			ConnectFailed(ni, err, why);
			err->hint = pstrdup("Check distkit.redis_password_file and the process that writes it.");
			return false;
		}
		hs[nhs] = DkCmdNew("AUTH");
		if (user[0])
			DkCmdArgStr(hs[nhs], user);
		/* a copy: the command's copy is wiped below, dk_target's must stay */
		DkCmdArgStr(hs[nhs], pstrdup(from_file ? filepw :
									 sentinel ? dk_target->sentinel_password : dk_target->password));
		if (from_file)
			explicit_bzero(filepw, sizeof(filepw));
		nhs++;
	}
	/* also makes Redis answer within connect_timeout (a paused server accepts TCP) */
	if (!sentinel)
	{
		hs[nhs] = DkCmdNew("SELECT");
		DkCmdArgInt(hs[nhs], dk_target->db);
		nhs++;
	}
	if (check_role)
		hs[nhs++] = DkCmdNew("ROLE");

	r = NodeExchange(ni, hs, nhs, deadline, &io, &sent);
	/* the AUTH command holds the password: wipe it */
	if (has_auth)
		explicit_bzero((void *) hs[0]->argv[hs[0]->argc - 1], hs[0]->argvlen[hs[0]->argc - 1]);
	if (r == NULL && io != DK_IO_TIMEOUT && PeekFullRefusal(ni))
	{
		FullRefusal(ni, err, "ERR max number of clients reached");
		DisconnectNode(ni);
		return false;
	}
	if (r == NULL && io == DK_IO_ERROR && !dk_target->tls && !dk_nodes[ni].is_unix)
	{
		/* a TLS-only port closes a plaintext connection at its first bytes */
		ConnectFailed(ni, err, IoFailureText(ni, io, true));
		err->hint = pstrdup("Check distkit.redis_url and that redis-server is running and reachable; "
							"if its port only speaks TLS (tls-port), use a rediss:// URL.");
		return false;
	}
	if (r == NULL)
		return ConnectFailed(ni, err, IoFailureText(ni, io, true));
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

/*
 * An AUTH to put in front of the next request to node ni, or NULL: when
 * distkit.redis_password_file changed since the connection authenticated
 * (redis_password.c).  If the file cannot be read now, the connection keeps
 * its authentication and the next check tries again.
 */
DkCmd *
ReauthCmd(int ni)
{
	DkNode	   *n = &dk_nodes[ni];
	char		pw[1024];
	char		why[400];
	uint64		version;
	DkCmd	   *auth;

	if (n->is_sentinel || !PasswordFileActive() || PasswordFileVersion() == n->auth_version)
		return NULL;
	if (!PasswordFileRead(pw, sizeof(pw), &version, why, sizeof(why)))
		return NULL;
	n->auth_version = version;
	auth = DkCmdNew("AUTH");
	if (dk_target->user[0])
		DkCmdArgStr(auth, dk_target->user);
	DkCmdArgStr(auth, pw);		/* copied */
	explicit_bzero(pw, sizeof(pw));
	return auth;
}

/*
 * Open node ni's connection (TCP or unix socket), authenticate and select
 * the db (data nodes), and for a sentinel-managed master verify its role.
 * False with *err filled on failure (the node is then disconnected).
 */
static bool
ConnectNodeSteps(int ni, DkErr *err)
{
	TimestampTz deadline;
	bool		check_role = dk_target->topology == DK_TOPOLOGY_SENTINEL && !dk_nodes[ni].is_sentinel;

	DisconnectNode(ni);
	if (check_role && !DiscoverMaster(err))
		return false;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ConnectMs());
	if (!OpenConnection(ni, deadline, err))
		return false;
	if (dk_nodes[ni].is_sentinel && !dk_target->has_sentinel_auth)
		return true;			/* sentinels without a password: nothing to set up */
	return SetUpSession(ni, deadline, check_role, err);
}

/* ConnectNodeSteps, flagged as a connection attempt (OwnCancelCheck). */
static bool
ConnectNode(int ni, DkErr *err)
{
	volatile bool ok = false;
	bool		outer = connecting;	/* a sentinel's connection inside a master's */

	connecting = true;
	PG_TRY();
	{
		ok = ConnectNodeSteps(ni, err);
	}
	PG_FINALLY();
	{
		connecting = outer;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Make sure node ni has a usable connection; false with *err if it cannot
 * be opened.  A sentinel-managed master is rediscovered a few times while
 * a failover is in progress (bounded by connect_timeout).
 */
bool
EnsureNode(int ni, DkErr *err)
{
	DkNode	   *n = &dk_nodes[ni];
	TimestampTz deadline;

	if (n->transport != NULL && (n->busy || n->transport->idle_broken(n)))
		DisconnectNode(ni);
	if (n->transport != NULL)
		return true;
	if (dk_target->topology != DK_TOPOLOGY_SENTINEL || n->is_sentinel)
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
