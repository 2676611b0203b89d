/*
 * keys.h — the one place that builds Redis key names.
 */
#ifndef DISTKIT_KEYS_H
#define DISTKIT_KEYS_H

#define DK_MAX_KEY_BYTES 1024

/* Kinds of Redis keys; each primitive has its own letters. */
#define DK_KIND_COUNTER "c"
#define DK_KIND_COUNTER_FLUSHED "cf"	/* per-(group, instance) last applied lax batch part */
#define DK_MAX_PREFIX_BYTES 64
#define DK_KIND_RATE "r"
#define DK_KIND_RATE_EPOCH "re"		/* a rate limiter's reset epoch (lax reservations) */
#define DK_KIND_INSTANCE "i"			/* instance-aware counter (hash of slices) */
#define DK_KIND_REGISTRY "reg"			/* the instance registry (one key) */
#define DK_KIND_LEASE "l"			/* a lease: hash {owner, token, holder}, expiring */
#define DK_KIND_LEASE_TOKEN "lt"	/* its fencing-token counter, never expires */
#define DK_KIND_LEADER "ld"			/* a leadership: like a lease, owned by an instance */
#define DK_KIND_LEADER_TOKEN "ldt"	/* its term counter, never expires */
#define DK_KIND_SEMAPHORE "s"		/* a semaphore: sorted set of permits by expiry */
/* fleet state (cache.c, idempotency.c, breaker.c) */
#define DK_KIND_CACHE "kv"				/* a cached value (string) */
#define DK_KIND_IDEMPOTENCY "ik"		/* an idempotency claim (hash) */
#define DK_KIND_BREAKER "b"				/* a breaker's state and window (hash) */
#define DK_KIND_BREAKER_CONFIG "bc"		/* a breaker's configuration (hash) */
/* queues (queue.c, outbox.c) */
#define DK_KIND_QUEUE "q"				/* a queue: a stream */
#define DK_KIND_QUEUE_DEAD "qd"			/* its dead letters: a stream */
#define DK_KIND_QUEUE_SHIPPED "qo"		/* outbox rows it holds (sorted set) */

extern void DkKeysInit(void);
extern size_t DkKeyCheck(text *key, const char *argname);
extern char *DkKeyFromText(const char *kind, text *key, const char *argname, size_t *len);
extern char *DkKeyBuild(const char *kind, const char *key, size_t keylen, size_t *len);
extern char *DkKeyBuildWithPrefix(const char *prefix, const char *kind, const char *key,
								  size_t keylen, size_t *len);
extern char *DkKeyPattern(const char *kind);

/* Redis Cluster hash slots (keys.c owns the hash: CRC16 of the hash tag) */
#define DK_KEY_SLOTS 16384
extern int	DkKeySlot(const char *rkey, size_t len);
extern const char *DkKeySlotTag(int slot);
extern const char *DkKeyPrefix(void);
extern char *DkKeyQuote(text *key);

#endif
