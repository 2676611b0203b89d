/*-------------------------------------------------------------------------
 *
 * redis_password.c
 *		distkit.redis_password_file: a Redis password that changes while
 *		connections stay open (short-lived tokens).
 *
 * AWS ElastiCache/MemoryDB IAM tokens last 15 minutes, Azure Entra ID
 * tokens about an hour; a sidecar rewrites a file with the current one.
 * When distkit.redis_password_file is set, its content (without a final
 * newline) is the password of the data nodes, instead of the URL's (whose
 * user name, if any, is kept; the URL may then say "user:@" with an empty
 * password).  It is read at every connect (PasswordFileRead), and every
 * open connection sends AUTH again once the file has changed: before a
 * request, PasswordFileVersion looks at the file's inode, size, mtime and
 * ctime, at most once a second, and a change bumps a version; redis.c puts
 * an AUTH with the new content in front of the next request to each data
 * node whose connection authenticated with an older version (ReauthCmd in
 * redis_conn.c).  AUTH rides in the same pipeline as the commands, so
 * nothing in flight is lost or sent twice; a refused AUTH leaves the
 * connection authenticated as before (Redis keeps the user of a failed
 * AUTH), so it keeps working until Redis drops it, and the reconnect reads
 * the file again.
 *
 * The content is a secret like the URL's password: never in a message,
 * and the setting is superuser-only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utils/guc.h"
#include "utils/timestamp.h"

#include "redis_int.h"

static char *password_file = NULL;

/* What the file looked like when last seen, and its version. */
static struct
{
	bool		known;
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	struct timespec mtime;
	struct timespec ctime;
} seen;
static uint64 file_version = 1;
static TimestampTz last_check = 0;

/* Assign hook: another file is another password. */
static void
AssignPasswordFile(const char *newval, void *extra)
{
	seen.known = false;
	file_version++;
	last_check = 0;
}

/* Defines distkit.redis_password_file. */
void
DkPasswordFileInit(void)
{
	DefineCustomStringVariable("distkit.redis_password_file",
							   "File holding the Redis password (short-lived tokens), read at every connect.",
							   "Overrides the password of distkit.redis_url for the data nodes; open "
							   "connections send AUTH again when the file changes (checked at most once a second).",
							   &password_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, AssignPasswordFile, NULL);
}

/* Whether distkit.redis_password_file is set. */
bool
PasswordFileActive(void)
{
	return password_file != NULL && password_file[0] != '\0';
}

/* Remember st; bump the version if it differs from what was seen. */
static void
NoteStat(const struct stat *st)
{
	if (seen.known && seen.dev == st->st_dev && seen.ino == st->st_ino && seen.size == st->st_size &&
		seen.mtime.tv_sec == st->st_mtim.tv_sec && seen.mtime.tv_nsec == st->st_mtim.tv_nsec &&
		seen.ctime.tv_sec == st->st_ctim.tv_sec && seen.ctime.tv_nsec == st->st_ctim.tv_nsec)
		return;
	if (seen.known)
		file_version++;
	seen.known = true;
	seen.dev = st->st_dev;
	seen.ino = st->st_ino;
	seen.size = st->st_size;
	seen.mtime = st->st_mtim;
	seen.ctime = st->st_ctim;
}

/*
 * The version of the file's content: changes when the file does.  Looks at
 * the file at most once a second (a file briefly missing while a sidecar
 * replaces it keeps the version).
 */
uint64
PasswordFileVersion(void)
{
	TimestampTz now;
	struct stat st;

	if (!PasswordFileActive())
		return 0;
	now = GetCurrentTimestamp();
	if (seen.known && now - last_check < USECS_PER_SEC)
		return file_version;
	last_check = now;
	if (stat(password_file, &st) == 0)
		NoteStat(&st);
	return file_version;
}

/*
 * Read the password into buf (without a final newline) and the version it
 * belongs to into *version; false with why (never the content) on failure.
 */
bool
PasswordFileRead(char *buf, size_t size, uint64 *version, char *why, size_t whysize)
{
	int			fd = open(password_file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t		len;

	if (fd < 0)
	{
		snprintf(why, whysize, "could not open distkit.redis_password_file \"%s\": %m", password_file);
		return false;
	}
	if (fstat(fd, &st) != 0 || (len = read(fd, buf, size)) < 0)
	{
		snprintf(why, whysize, "could not read distkit.redis_password_file \"%s\": %m", password_file);
		close(fd);
		return false;
	}
	close(fd);
	if ((size_t) len == size)
	{
		explicit_bzero(buf, size);
		snprintf(why, whysize, "distkit.redis_password_file \"%s\" is longer than %zu bytes",
				 password_file, size - 1);
		return false;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	if (len == 0)
	{
		snprintf(why, whysize, "distkit.redis_password_file \"%s\" is empty", password_file);
		return false;
	}
	NoteStat(&st);
	last_check = GetCurrentTimestamp();
	*version = file_version;
	return true;
}
