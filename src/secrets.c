/*-------------------------------------------------------------------------
 *
 * secrets.c
 *		Keeps the Redis password out of every log line and message.
 *
 * distkit's own messages never contain it (they name host:port only), but
 * PostgreSQL itself prints setting values and statement texts: the
 * postmaster logs `parameter "distkit.redis_url" changed to "..."` on
 * reload, log_statement logs SET/ALTER SYSTEM statements, and a failing
 * statement is logged as STATEMENT.  An emit_log_hook (installed in the
 * postmaster too, through shared_preload_libraries) rewrites the password
 * of any redis:// or unix:// URL in a message to "***" (the user:password@
 * part, and the sentinel_password= parameter of a Sentinel URL) and hides
 * the statement text of a query that contains one.
 *
 * The same hook adds a hint to PostgreSQL's own refusal to change a
 * server-wide distkit setting (distkit.redis_url, the worker's intervals)
 * in a session, a database, a role or a function: core's "cannot be
 * changed now" says no more.  It only reaches messages that are emitted
 * (to the client or the log); an error caught by an exception block keeps
 * core's text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"

#include "distkit.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

/* True if p (just before "://") ends a scheme distkit parses. */
static bool
IsRedisScheme(const char *start, const char *p)
{
	while (p > start && (isalnum((unsigned char) p[-1]) || p[-1] == '-' || p[-1] == '+'))
		p--;
	return strncmp(p, "redis", 5) == 0 || strncmp(p, "unix", 4) == 0;
}

/* End of a URL starting at p: white space, a quote or the end of text. */
static const char *
UrlEnd(const char *p)
{
	while (*p && !isspace((unsigned char) *p) && *p != '\'' && *p != '"')
		p++;
	return p;
}

/*
 * Where the value of a sentinel_password= query parameter lies in the URL
 * [auth, end): *from and *to, or false.
 */
static bool
FindSentinelPassword(const char *auth, const char *end, const char **from, const char **to)
{
	static const char key[] = "sentinel_password=";

	for (const char *q = auth; q + sizeof(key) - 1 <= end; q++)
		if ((q[-1] == '?' || q[-1] == '&') && strncmp(q, key, sizeof(key) - 1) == 0)
		{
			*from = q + sizeof(key) - 1;
			*to = *from;
			while (*to < end && **to != '&' && **to != '#')
				(*to)++;
			return true;
		}
	return false;
}

/*
 * s with the password of each redis/unix URL (user:password@, and a
 * Sentinel URL's sentinel_password= parameter) replaced by "***" (user
 * names are kept); s itself when there is nothing to hide.
 */
static char *
RedactUrls(char *s)
{
	StringInfoData out;
	const char *p;
	const char *copied = s;
	bool		changed = false;

	if (s == NULL || strstr(s, "://") == NULL)
		return s;
	initStringInfo(&out);
	copied = s;
	for (p = strstr(s, "://"); p != NULL; p = strstr(p, "://"))
	{
		const char *auth = p + 3;
		const char *end = UrlEnd(auth);
		const char *at = NULL;
		const char *sp_from = NULL;
		const char *sp_to = NULL;
		bool		has_sp;

		if (!IsRedisScheme(s, p))
		{
			p = auth;
			continue;
		}
		for (const char *q = auth; q < end; q++)
			if (*q == '@')
				at = q;
		has_sp = FindSentinelPassword(auth, end, &sp_from, &sp_to);
		if (at == NULL && !has_sp)
		{
			p = auth;
			continue;
		}
		if (at)
		{
			const char *colon = memchr(auth, ':', at - auth);

			appendBinaryStringInfo(&out, copied, (colon ? colon + 1 : auth) - copied);
			appendStringInfoString(&out, "***");
			copied = at;
		}
		if (has_sp && sp_from >= copied)
		{
			appendBinaryStringInfo(&out, copied, sp_from - copied);
			appendStringInfoString(&out, "***");
			copied = sp_to;
		}
		changed = true;
		p = end;
	}
	if (!changed)
	{
		pfree(out.data);
		return s;
	}
	appendStringInfoString(&out, copied);
	return out.data;
}

/* True if text holds a redis/unix URL with credentials. */
static bool
HasSecret(const char *text)
{
	char	   *copy;
	bool		found;

	if (text == NULL || strstr(text, "://") == NULL)
		return false;
	copy = pstrdup(text);
	found = RedactUrls(copy) != copy;
	pfree(copy);
	return found;
}

/*
 * A hint for core's refusal to change a server-wide distkit setting, or
 * NULL if edata is something else.  Matched on the untranslated message
 * and the SQLSTATE, so it works in any lc_messages.
 */
static char *
SettingScopeHint(const ErrorData *edata)
{
	const char *name;
	int			len = 0;
	bool		reload;

	if (edata->sqlerrcode != ERRCODE_CANT_CHANGE_RUNTIME_PARAM || edata->hint != NULL ||
		edata->message_id == NULL || edata->message == NULL)
		return NULL;
	if (strcmp(edata->message_id, "parameter \"%s\" cannot be changed now") == 0)
		reload = true;
	else if (strcmp(edata->message_id,
					"parameter \"%s\" cannot be changed without restarting the server") == 0)
		reload = false;
	else
		return NULL;
	name = strstr(edata->message, "distkit.");
	if (name == NULL)
		return NULL;
	while (isalnum((unsigned char) name[len]) || name[len] == '_' || name[len] == '.')
		len++;
	if (reload)
		return psprintf("%.*s is a server-wide setting: set it in postgresql.conf or with ALTER SYSTEM, "
						"then reload with SELECT pg_reload_conf().", len, name);
	return psprintf("%.*s is a server-wide setting: set it in postgresql.conf or with ALTER SYSTEM, "
					"then restart the server.", len, name);
}

/*
 * emit_log_hook: redact before the message reaches the log or the client;
 * explain a refused server-wide setting.
 */
static void
RedactLogMessage(ErrorData *edata)
{
	char	   *scope_hint = SettingScopeHint(edata);

	if (scope_hint)
		edata->hint = scope_hint;
	edata->message = RedactUrls(edata->message);
	edata->detail = RedactUrls(edata->detail);
	edata->detail_log = RedactUrls(edata->detail_log);
	edata->hint = RedactUrls(edata->hint);
	edata->context = RedactUrls(edata->context);
	edata->internalquery = RedactUrls(edata->internalquery);
	if (!edata->hide_stmt && HasSecret(debug_query_string))
		edata->hide_stmt = true;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Installs the log redaction hook. */
void
DkSecretsInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = RedactLogMessage;
}
