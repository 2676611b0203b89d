/*
 * redis_int.h — what the files of the connection module share
 * (redis.c, redis_url.c, redis_conn.c, redis_tls.c, redis_password.c,
 * redis_cluster.c, redis_sentinel.c).
 * Nothing outside them includes it; the rest of distkit uses redis.h.
 * See each file's top comment for its part.
 */
#ifndef DISTKIT_REDIS_INT_H
#define DISTKIT_REDIS_INT_H

#include "datatype/timestamp.h"
#include "storage/latch.h"

#include "redis.h"

/*
 * The symbols declared below are the module's own: hidden, so that none of
 * them is exported from distkit.so or clashes with another library's.
 */
#pragma GCC visibility push(hidden)

#define DK_SLOTS 16384
#define DK_MAX_ADDRS 16			/* seed nodes or sentinels in a URL */

/* What distkit.redis_url names (not DkMode: that is strict/lax, distkit.h). */
typedef enum DkTopology
{
	DK_TOPOLOGY_SINGLE,
	DK_TOPOLOGY_CLUSTER,
	DK_TOPOLOGY_SENTINEL
} DkTopology;

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
	DkTopology	topology;
	bool		tls;			/* rediss*:// : TLS to every TCP node (redis_tls.c) */
	bool		is_unix;
	char		host[256];
	int			port;
	char		path[512];
	int			db;
	bool		has_auth;
	bool		password_empty; /* "user:@": the password must come from a file */
	char		user[128];
	char		password[256];
	int			naddrs;			/* cluster seeds or sentinels */
	DkAddr		addrs[DK_MAX_ADDRS];
	char		master_name[256];	/* sentinel */
	bool		has_sentinel_auth;	/* ?sentinel_password=...[&sentinel_user=...] */
	char		sentinel_user[128];
	char		sentinel_password[256];
	char		endpoint[600];	/* for messages: host:port, unix:path, ... */
} DkRedisTarget;

/*
 * The outcome of an I/O step on a node's connection.  The transports of
 * redis_conn.c return OK, WANT_READ/WANT_WRITE (wait for the socket, then
 * call again) or ERROR; the functions that wait (FlushOutput, ReadReply,
 * NodeExchange) return OK, TIMEOUT or ERROR.  The text of an ERROR is in
 * the node's io_error; IoFailureText makes the message of either failure.
 */
typedef enum DkIo
{
	DK_IO_OK,
	DK_IO_WANT_READ,
	DK_IO_WANT_WRITE,
	DK_IO_TIMEOUT,				/* the deadline passed while waiting */
	DK_IO_ERROR					/* the connection failed (DkNode.io_error) */
} DkIo;

/*
 * A node's connection is driven through a DkTransport (redis_conn.c says
 * how; PlainTransport there, DkTlsTransport in redis_tls.c): open starts a
 * non-blocking connect, handshake is called each time the socket is ready
 * until it returns DK_IO_OK, write sends what the RESP layer buffered, read
 * takes in what has arrived and must consume everything the transport
 * itself buffered (the caller then waits on the socket), idle_broken
 * probes an idle connection, peek looks at unread bytes without consuming
 * them, close frees everything, and socket is what WaitSocket and the idle
 * timer's shutdown(2) use.  Each returns DK_IO_OK, DK_IO_WANT_READ or
 * DK_IO_WANT_WRITE (wait, then call again) or DK_IO_ERROR with the node's
 * io_error set.
 */
struct DkNode;
typedef struct DkTransport
{
	const char *name;
	DkIo		(*open) (struct DkNode *n);
	DkIo		(*handshake) (struct DkNode *n);
	DkIo		(*write) (struct DkNode *n);
	DkIo		(*read) (struct DkNode *n);
	bool		(*idle_broken) (struct DkNode *n);
	ssize_t		(*peek) (struct DkNode *n, char *buf, size_t len);
	void		(*close) (struct DkNode *n);
	pgsocket	(*socket) (const struct DkNode *n);
} DkTransport;

/* One server this process talks to. */
typedef struct DkNode
{
	bool		is_unix;
	bool		is_sentinel;
	char		host[256];
	int			port;
	char		path[512];
	char		endpoint[600];	/* host:port or unix:path, for messages */
	/* the connection (redis_conn.c only): NULL transport = not connected */
	const struct DkTransport *transport;
	struct redisContext *ctx;	/* plain transport and RESP parser state */
	void	   *tls;			/* the TLS transport's state (redis_tls.c only) */
	char		io_error[512];	/* what the last DK_IO_ERROR was */
	WaitEventSet *wes;
	int			sock_pos;
	bool		busy;			/* a request is in flight */
	uint64		auth_version;	/* distkit.redis_password_file version it sent AUTH with */
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

/* redis_url.c: the target and the timeouts */
extern DkRedisTarget *dk_target;
extern uint64 dk_target_generation;
extern int	dk_idle_timeout_ms;
extern TimestampTz dk_exit_deadline;
extern bool ParseBoundedInt(const char *src, size_t len, int lo, int hi, int *out);
extern void FormatEndpoint(char *buf, size_t size, const char *host, int port);
extern long MsLeft(TimestampTz deadline);
extern int	ConnectMs(void);
extern int	CommandMs(void);
extern char *ConnectBoundText(void);
extern char *CommandBoundText(void);
extern void CheckExitWorkLeft(void);

/* redis_conn.c: the node table and one node's connection */
extern DkNode *dk_nodes;
extern int	dk_nnodes;

/* Whether node ni has an open connection. */
static inline bool
NodeConnected(int ni)
{
	return dk_nodes[ni].transport != NULL;
}

extern char dk_last_endpoint[600];
extern int	FindOrAddNode(bool is_unix, const char *host, int port, const char *path, bool is_sentinel);
extern void DisconnectNode(int ni);
extern bool EnsureNode(int ni, DkErr *err);
extern bool ConnectFailed(int ni, DkErr *err, const char *why);
extern void RaiseErr(const DkErr *e) pg_attribute_noreturn();
extern void BeginCall(void);
extern void EndCall(void);
extern void SleepMs(long ms);
extern void AppendCmd(int ni, const DkCmd *cmd);
extern DkIo FlushOutput(int ni, TimestampTz deadline);
extern DkReply *ReadReply(int ni, TimestampTz deadline, DkIo *io);
extern DkReply **NodeExchange(int ni, DkCmd **cmds, int ncmds, TimestampTz deadline,
							  DkIo *io, bool *sent);
extern char *IoFailureText(int ni, DkIo io, bool connecting);
extern DkIo IoError(DkNode *n, const char *what);
extern DkIo PlainOpen(DkNode *n);
extern DkIo PlainHandshake(DkNode *n);
extern bool PlainIdleBroken(DkNode *n);

extern DkCmd *ReauthCmd(int ni);

/* redis_password.c: distkit.redis_password_file */
extern void DkPasswordFileInit(void);
extern bool PasswordFileActive(void);
extern uint64 PasswordFileVersion(void);
extern bool PasswordFileRead(char *buf, size_t size, uint64 *version, char *why, size_t whysize);

/* redis_tls.c: the TLS transport and its settings */
extern const DkTransport DkTlsTransport;
extern void DkTlsInit(void);

/* redis_cluster.c: node table of the target, slot map and routing */
extern int16 *dk_slot_node;
extern bool dk_slots_stale;
extern void EnsureTopology(void);
extern int	RouteCmd(const DkCmd *cmd);
extern int	ParseRedirect(const char *msg, int from, int *slot);
extern bool RefreshSlots(DkErr *err);
extern void EnsureSlots(void);

/* redis_sentinel.c */
extern bool DiscoverMaster(DkErr *err);

#pragma GCC visibility pop

#endif
