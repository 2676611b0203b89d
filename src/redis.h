/*
 * redis.h — the one module that talks to Redis (through hiredis): the
 * files src/redis*.c, whose parts redis.c's top comment lists.
 *
 * Callers build commands with DkCmd*, run them with DkRedisRun (one
 * pipelined round trip for any number of commands) and get back DkReply
 * trees copied into palloc memory, so no hiredis memory ever escapes this
 * module and every error path can simply ereport.
 *
 * The target may be one server, a Redis Cluster (commands are routed by
 * the hash slot of their first key; every command must touch keys of one
 * slot) or a Sentinel-managed master; callers do not need to know which.
 * Commands without keys that must reach every master (SCAN) go through
 * DkRedisScan; DkRedisUnlinkKeys removes what it found.
 */
#ifndef DISTKIT_REDIS_H
#define DISTKIT_REDIS_H

#include "lua_scripts.h"

typedef enum DkReplyType
{
	DK_REPLY_NIL,
	DK_REPLY_STRING,			/* bulk or status string */
	DK_REPLY_INTEGER,
	DK_REPLY_ARRAY,
	DK_REPLY_ERROR
} DkReplyType;

typedef struct DkReply
{
	DkReplyType type;
	long long	integer;
	char	   *str;			/* NUL-terminated copy (STRING, ERROR) */
	size_t		len;
	int			nelem;
	struct DkReply **elem;
} DkReply;

/* One command: argv with lengths, and the script it runs (or -1). */
typedef struct DkCmd
{
	int			argc;
	int			cap;
	const char **argv;
	size_t	   *argvlen;
	int			script;			/* DkLuaScriptId for EVALSHA, else -1 */
} DkCmd;

/* How a failure after the request was sent must be reported. */
typedef enum DkSafety
{
	DK_IDEMPOTENT,				/* may be retried once on a new connection */
	DK_NOT_IDEMPOTENT,			/* outcome unknown: SQLSTATE 08007 */
	DK_IDEMPOTENT_DURABLE		/* idempotent, and with Sentinel acknowledged
								 * only once a replica has it (WAIT) */
} DkSafety;

/* Called by DkRedisScan with each batch of matching keys (one node's). */
typedef void (*DkScanVisitFn) (DkReply *keys, void *arg);

extern void DkRedisInit(void);

extern DkCmd *DkCmdNew(const char *name);
extern DkCmd *DkCmdScript(DkLuaScriptId script, int nkeys);
extern void DkCmdArg(DkCmd *cmd, const char *arg, size_t len);
extern void DkCmdArgStr(DkCmd *cmd, const char *arg);
extern void DkCmdArgInt(DkCmd *cmd, int64 value);

extern DkReply **DkRedisRunInto(DkCmd **cmds, int ncmds, DkSafety safety, DkReply **replies);
extern DkReply **DkRedisRun(DkCmd **cmds, int ncmds, DkSafety safety);
extern DkReply *DkRedisRunOne(DkCmd *cmd, DkSafety safety);
extern bool DkRedisRunIfReachable(DkCmd **cmds, int ncmds, DkSafety safety, DkReply ***replies);
extern void DkRedisScan(const char *pattern, DkScanVisitFn visit, void *arg, const char *what);
extern int64 DkRedisUnlinkKeys(const DkReply *keys, const char *what);

extern void DkReplyRaiseError(const DkReply *reply, const char *what) pg_attribute_noreturn();
extern int64 DkReplyInt64(const DkReply *reply, const char *what);
extern void DkRedisDisconnect(void);
extern void DkRedisUseOwnCancel(const char *who, bool (*shutdown_abandons) (void));
extern bool DkRedisTakeOwnCancel(void);
extern int	DkRedisCommandTimeoutMs(void);
extern void DkRedisBeginExitWork(void);
extern void DkRedisEndExitWork(void);
extern long DkRedisExitWorkLeftMs(void);
extern int	DkRedisExitTimeoutMs(void);
extern void DkRedisKeepConnection(void);
extern bool DkRedisIsCluster(void);
extern bool DkRedisRefusedFull(const ErrorData *edata);

#endif
