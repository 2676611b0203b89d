/*
 * keys.h — the one place that builds Redis key names.
 */
#ifndef DISTKIT_KEYS_H
#define DISTKIT_KEYS_H

#define DK_MAX_KEY_BYTES 1024

/* Kinds of Redis keys; each primitive has its own letters. */
#define DK_KIND_COUNTER "c"
#define DK_KIND_COUNTER_FLUSHED "cf"	/* per-instance last applied lax batch */
#define DK_MAX_PREFIX_BYTES 64
#define DK_KIND_RATE "r"
/* fleet state (cache.c, idempotency.c, breaker.c) */
#define DK_KIND_CACHE "kv"				/* a cached value (string) */
#define DK_KIND_IDEMPOTENCY "ik"		/* an idempotency claim (hash) */
#define DK_KIND_BREAKER "b"				/* a breaker's state and window (hash) */
#define DK_KIND_BREAKER_CONFIG "bc"		/* a breaker's configuration (hash) */

extern void DkKeysInit(void);
extern size_t DkKeyCheck(text *key, const char *argname);
extern char *DkKeyFromText(const char *kind, text *key, const char *argname, size_t *len);
extern char *DkKeyBuild(const char *kind, const char *key, size_t keylen, size_t *len);
extern char *DkKeyBuildWithPrefix(const char *prefix, const char *kind, const char *key,
								  size_t keylen, size_t *len);
extern char *DkKeyPattern(const char *kind);
extern const char *DkKeyPrefix(void);
extern char *DkKeyQuote(text *key);

#endif
