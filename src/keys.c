/*-------------------------------------------------------------------------
 *
 * keys.c
 *		Builds every Redis key distkit uses, and owns distkit.prefix.
 *
 * A user key K of kind T becomes "<prefix>:<T>:{<K'>}" where K' is K with
 * '%' written as "%25" and '}' as "%7D".  So:
 *  - distinct (kind, key) pairs never map to the same Redis key (the
 *    encoding is injective and the kind sits before the brace);
 *  - the hash tag is exactly {K'}: every Redis key belonging to one user
 *    key (whatever its kind) hashes to one Redis Cluster slot, while
 *    different user keys spread over all slots;
 *  - keys stay readable in redis-cli: distkit:c:{user:42}.
 * The prefix is limited to [A-Za-z0-9_.-] so that SCAN patterns built from
 * it need no escaping and it cannot contain a brace.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "keys.h"
#include "version.h"

static char *key_prefix = NULL;

/* GUC check hook: a prefix of 1-64 characters from [A-Za-z0-9_.-]. */
static bool
CheckPrefix(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;
	size_t		len = p ? strlen(p) : 0;

	if (len == 0 || len > DK_MAX_PREFIX_BYTES)
	{
		GUC_check_errdetail("distkit.prefix must have 1 to 64 characters.");
		return false;
	}
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char) p[i]) && p[i] != '_' && p[i] != '.' && p[i] != '-')
		{
			GUC_check_errdetail("distkit.prefix may contain only letters, digits, '_', '.' and '-'.");
			return false;
		}
	return true;
}

/* Defines distkit.prefix. */
void
DkKeysInit(void)
{
	DefineCustomStringVariable("distkit.prefix",
							   "Namespace of every Redis key distkit writes.",
							   "1 to 64 characters from [A-Za-z0-9_.-].",
							   &key_prefix,
							   "distkit",
							   PGC_SUSET,
							   0,
							   CheckPrefix, NULL, NULL);
}

/* The current prefix. */
const char *
DkKeyPrefix(void)
{
	return key_prefix;
}

/* Redis key for (kind, key) under the current prefix. */
char *
DkKeyBuild(const char *kind, const char *key, size_t keylen, size_t *len)
{
	return DkKeyBuildWithPrefix(key_prefix, kind, key, keylen, len);
}

/*
 * Redis key for (kind, key) under an explicit prefix (the lax buffer
 * remembers the prefix each key was counted under); key need not be
 * NUL-terminated.
 */
char *
DkKeyBuildWithPrefix(const char *prefix, const char *kind, const char *key,
					 size_t keylen, size_t *len)
{
	size_t		plen = strlen(prefix);
	size_t		klen = strlen(kind);
	size_t		total = plen + 1 + klen + 2 + keylen + 1;
	char	   *out;
	char	   *p;

	/*
	 * Exact size (not a StringInfo's 1 kB): the flusher keeps one key per
	 * buffered counter for a whole cycle, up to hundreds of thousands.
	 */
	for (size_t i = 0; i < keylen; i++)
		if (key[i] == '%' || key[i] == '}')
			total += 2;
	out = palloc(total + 1);
	p = out;
	memcpy(p, prefix, plen);
	p += plen;
	*p++ = ':';
	memcpy(p, kind, klen);
	p += klen;
	*p++ = ':';
	*p++ = '{';
	for (size_t i = 0; i < keylen; i++)
	{
		if (key[i] == '%')
		{
			memcpy(p, "%25", 3);
			p += 3;
		}
		else if (key[i] == '}')
		{
			memcpy(p, "%7D", 3);
			p += 3;
		}
		else
			*p++ = key[i];
	}
	*p++ = '}';
	*p = '\0';
	Assert((size_t) (p - out) == total);
	if (len)
		*len = total;
	return out;
}

/* Validate a user key (1 to 1024 bytes); returns its length. */
size_t
DkKeyCheck(text *key, const char *argname)
{
	size_t		keylen = VARSIZE_ANY_EXHDR(key);

	DkCheckSqlVersion();		/* every function that takes a key comes here */
	if (keylen == 0 || keylen > DK_MAX_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be 1 to %d bytes long, not %zu",
						argname, DK_MAX_KEY_BYTES, keylen),
				 errhint("Any non-empty text up to %d bytes is a valid key.", DK_MAX_KEY_BYTES)));
	return keylen;
}

/* Validate a user key and build its Redis key. */
char *
DkKeyFromText(const char *kind, text *key, const char *argname, size_t *len)
{
	size_t		keylen = DkKeyCheck(key, argname);

	return DkKeyBuild(kind, VARDATA_ANY(key), keylen, len);
}

/* SCAN MATCH pattern for every key of a kind under the current prefix. */
char *
DkKeyPattern(const char *kind)
{
	return psprintf("%s:%s:{*", key_prefix, kind);
}

/* The user key, quoted for messages, cut to 64 bytes. */
char *
DkKeyQuote(text *key)
{
	char	   *s = text_to_cstring(key);

	if (strlen(s) > 64)
	{
		s[pg_mbcliplen(s, strlen(s), 64)] = '\0';
		return psprintf("\"%s...\"", s);
	}
	return psprintf("\"%s\"", s);
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

/*
 * Redis Cluster hash slot of a Redis key: CRC16 of its hash tag ({...}, if
 * non-empty) or of the whole key.
 */
int
DkKeySlot(const char *rkey, size_t len)
{
	const char *open = memchr(rkey, '{', len);

	if (open)
	{
		const char *close = memchr(open + 1, '}', len - (open + 1 - rkey));

		if (close && close > open + 1)
			return Crc16(open + 1, close - open - 1) & (DK_KEY_SLOTS - 1);
	}
	return Crc16(rkey, len) & (DK_KEY_SLOTS - 1);
}

/*
 * A short hash tag that maps to slot (0 .. DK_KEY_SLOTS - 1): "g<n>" for the
 * smallest n whose CRC16 lands there.  The table is computed once per
 * process (about 170,000 CRC16s of 3-7 bytes, a few milliseconds) and is
 * the same on every server, so keys named with it (the lax flush's
 * exactly-once records) are stable across servers and restarts.
 */
#define SLOT_TAG_LEN 12
const char *
DkKeySlotTag(int slot)
{
	static char (*tags)[SLOT_TAG_LEN] = NULL;

	Assert(slot >= 0 && slot < DK_KEY_SLOTS);
	if (tags == NULL)
	{
		char		(*t)[SLOT_TAG_LEN] = MemoryContextAllocZero(TopMemoryContext,
																SLOT_TAG_LEN * DK_KEY_SLOTS);
		int			left = DK_KEY_SLOTS;

		for (uint32 n = 0; left > 0; n++)
		{
			char		buf[SLOT_TAG_LEN];
			int			len = snprintf(buf, sizeof(buf), "g%u", n);
			int			s = Crc16(buf, len) & (DK_KEY_SLOTS - 1);

			if (t[s][0] == '\0')
			{
				memcpy(t[s], buf, len + 1);
				left--;
			}
		}
		tags = t;
	}
	return tags[slot];
}
