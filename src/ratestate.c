/*-------------------------------------------------------------------------
 *
 * ratestate.c
 *		Lax rate limiting: decisions in this server's shared memory from
 *		units reserved in blocks from the strict GCRA limiter, with a hard
 *		fleet-wide upper bound; and distkit_rate_stats.
 *
 * A strict decision (rate.c, lua/rate_gcra.lua) moves the limiter's TAT by
 * T = per / rate per unit.  A reservation (lua/rate_reserve.lua) takes g
 * units of the same key at once: exactly what g strict calls of cost 1 made
 * at that moment would take, so strict and lax callers share one limit.
 * Unit k of a reservation owns the slot [q_k, q_k + T) of the TAT chain,
 * q_k = max(TAT, now) + (k - 1) T.
 *
 * The rule that keeps the bound: a unit may be spent at Redis time s only
 * if s <= q_k.  Then every admission, strict or lax, at time s owns a slot
 * ending in [s + T, s + tau], and slots are disjoint; so in any window
 * [a, b] at most (b - a + tau) / T = burst + rate (b - a) / per admissions
 * happen, which is the strict limiter's own bound.  A unit whose slot has
 * passed is dropped (under-admission only).  Without this rule a server
 * could hold units while the limiter refills and spend them together with
 * a fresh burst taken by others.
 *
 * Local time: Redis time is estimated as CLOCK_MONOTONIC plus an offset
 * measured at each reservation, "Redis TIME - local time when the request
 * was sent", which is never below the true offset: the estimate is late by
 * at most one round trip (under-admission), never early.  Drift between
 * the two clocks over a block's life (at most tau) is ignored.
 *
 * Block size adapts: g = max(observed demand x 100 ms, rate x 20 ms),
 * at most burst / (2 N) for N live servers (but at least the largest cost
 * seen), and g * rate < 2^53 (exact Lua arithmetic).  The worker refills a
 * limiter in use when it holds fewer than max(g / 2, largest cost) units,
 * one pipelined round trip for all limiters; a backend that finds nothing
 * to spend reserves itself (one round trip) unless a reservation is under
 * way or Redis said nothing is free before a known time: then it denies,
 * locally.  A limiter not used for distkit.rate_return_after gives its
 * unspent units back (lua/rate_return.lua), which only works while its
 * reservation is still the last one on the chain; otherwise they expire
 * with their slots.
 *
 * distkit_rate_reset deletes the key and bumps an epoch (lua/rate_reset.lua,
 * key <prefix>:re:{key}); a server drops the units it holds when a
 * reservation returns another epoch, so it may keep spending old units until
 * its next reservation -- at most until their slots pass (tau).  The
 * resetting server drops its own at once.
 *
 * The table holds RATE_SLOTS limiters (user key up to RATE_UKEY_MAX bytes);
 * when it is full, or the key is longer, lax calls decide strictly and
 * the session gets one NOTICE.  An entry is reused for another key once it
 * has been idle for distkit.rate_return_after and holds nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <time.h>

#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "distkit.h"
#include "instance.h"
#include "keys.h"
#include "ratestate.h"
#include "shmem.h"
#include "redis.h"

PG_FUNCTION_INFO_V1(distkit_rate_stats);

#define RATE_SLOTS 512
#define RATE_UKEY_MAX 200
#define RATE_RKEY_MAX 720
#define RATE_BLOCKS 4
#define RATE_HORIZON_US 100000	/* a block lasts this long at observed demand */
#define RATE_MIN_SPAN_US 20000	/* and spans at least this much slot time */
#define RATE_ACTIVE_REFILL_MS 10
#define RATE_IDLE_TASK_MS 60000	/* no limiter in use: backends wake the worker (WantRefill) */
#define RATE_WAIT_US 100000		/* wait for another's reservation at most */
#define RATE_EXACT_LIMIT ((int64) 1 << 53)

/* A reserved block: left units, the next one's slot start q (us + f / rate). */
typedef struct RateBlock
{
	int64		q_us;
	int64		q_f;
	int64		left;
} RateBlock;

typedef struct DkRateEntry
{
	slock_t		mutex;
	bool		used;
	uint32		hash;
	int			klen;
	int			elen;
	int			ulen;
	char		rkey[RATE_RKEY_MAX];
	char		ekey[RATE_RKEY_MAX];
	char		ukey[RATE_UKEY_MAX + 1];
	/* parameters of the last lax call */
	int64		rate;
	int64		per_us;
	int64		burst;
	int64		max_cost;
	/* reservations */
	bool		have_offset;
	int64		offset_us;		/* Redis us - monotonic us, an upper bound */
	int			nblocks;
	RateBlock	blocks[RATE_BLOCKS];
	bool		end_valid;		/* end_* = the TAT our last reservation wrote */
	int64		tail;			/* units before end_* never spent (held or expired) */
	int64		end_us;
	int64		end_f;
	int64		epoch;
	bool		reserving;
	int64		empty_until;	/* Redis us: nothing free before */
	int64		full_at;		/* Redis us: the limiter is full again */
	bool		near;			/* last reservation saw > 80 % of burst used */
	int64		last_used;		/* monotonic us */
	int64		demand;			/* units asked by lax calls */
	int64		demand_seen;
	int64		obs_at;
	double		rate_obs;		/* units per second */
	double		local_tat;		/* on_error = 'local': monotonic us */
	/* counters */
	int64		reserved;
	int64		spent;
	int64		returned;
	int64		refills;
	int64		counters[DK_RC_COUNT];
} DkRateEntry;

typedef struct DkRateShared
{
	LWLock	   *lock;			/* the key table; entry state: its mutex */
	Latch	   *worker_latch;
	pg_atomic_uint32 wanted;	/* a backend asks for a refill */
	DkRateEntry entries[RATE_SLOTS];
} DkRateShared;

static DkRateShared *rs = NULL;

static int	rate_default_mode = DK_MODE_STRICT;
static int	rate_on_error = DK_ON_ERROR_ERROR;
static bool rate_shadow = false;
static int	rate_return_after_ms = 1000;
static bool noticed_full = false;

static const struct config_enum_entry mode_options[] = {
	{"strict", DK_MODE_STRICT, false},
	{"lax", DK_MODE_LAX, false},
	{NULL, 0, false}
};

static const struct config_enum_entry on_error_options[] = {
	{"error", DK_ON_ERROR_ERROR, false},
	{"deny", DK_ON_ERROR_DENY, false},
	{"allow", DK_ON_ERROR_ALLOW, false},
	{"local", DK_ON_ERROR_LOCAL, false},
	{NULL, 0, false}
};

static void RefillTask(void);
static int	RefillIntervalMs(void);

/* Bytes of shared memory of the table (a region of shmem.c's map). */
Size
DkRateShmemSize(void)
{
	return sizeof(DkRateShared);
}

/* Create or attach to the table (shmem.c, under AddinShmemInitLock). */
void
DkRateShmemInit(void *base, bool found, LWLock *lock)
{
	rs = (DkRateShared *) base;
	if (!found)
	{
		memset(rs, 0, sizeof(DkRateShared));
		rs->lock = lock;
		pg_atomic_init_u32(&rs->wanted, 0);
		for (int i = 0; i < RATE_SLOTS; i++)
			SpinLockInit(&rs->entries[i].mutex);
	}
}

/* Settings of rate limiter calls; shared memory and the refill task when preloaded. */
void
DkRateInit(void)
{
	DefineCustomEnumVariable("distkit.rate_default_mode",
							 "Mode of rate limiter calls that pass no mode.",
							 "strict: one Redis round trip per decision; lax: decided from units this server reserved.",
							 &rate_default_mode, DK_MODE_STRICT, mode_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("distkit.rate_on_error",
							 "What a rate limiter call does when Redis cannot be reached.",
							 "error: raise (08xxx); deny: false; allow: true; local: this server's share of the limit.",
							 &rate_on_error, DK_ON_ERROR_ERROR, on_error_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("distkit.rate_shadow",
							 "Rate limiters decide and count, but allow every call.",
							 NULL,
							 &rate_shadow, false,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("distkit.rate_return_after",
							"Idle time after which a lax rate limiter gives back its unspent reservation.",
							NULL,
							&rate_return_after_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	if (!DkPreloaded)
		return;
	DkWorkerAddTask("rate refill", RefillTask, RefillIntervalMs, NULL);
}

int
DkRateDefaultMode(void)
{
	return rate_default_mode;
}

DkRateOnError
DkRateOnErrorSetting(void)
{
	return (DkRateOnError) rate_on_error;
}

bool
DkRateShadowSetting(void)
{
	return rate_shadow;
}

/* Parse an on_error argument; false if it names no policy. */
bool
DkRateParseOnError(const char *s, DkRateOnError *out)
{
	for (int i = 0; on_error_options[i].name; i++)
		if (strcmp(s, on_error_options[i].name) == 0)
		{
			*out = (DkRateOnError) on_error_options[i].val;
			return true;
		}
	return false;
}

/* The Redis key holds something else: 22P02, as strict calls say. */
void
DkRateRaiseBadState(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("Redis key of %s does not hold a rate limiter state", what),
			 errhint("Another program wrote to distkit's key space; delete the key or change distkit.prefix.")));
}

/* Monotonic clock in microseconds (one clock for every process of the host). */
static int64
MonoUs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint32
KeyHash(const char *s, size_t len)
{
	uint32		h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8) s[i]) * 16777619u;
	return h;
}

static int
FindSlot(uint32 h, const char *rkey, size_t klen)
{
	for (int i = 0; i < RATE_SLOTS; i++)
	{
		DkRateEntry *e = &rs->entries[i];

		if (e->used && e->hash == h && e->klen == klen && memcmp(e->rkey, rkey, klen) == 0)
			return i;
	}
	return -1;
}

/* Held units (after Expire). */
static int64
Held(DkRateEntry *e)
{
	int64		n = 0;

	for (int i = 0; i < e->nblocks; i++)
		n += e->blocks[i].left;
	return n;
}

/* The session's last limiter and its entry (a hint, checked at use). */
static char cache_key[RATE_RKEY_MAX];
static size_t cache_len = 0;
static int	cache_slot = -1;

static void
RememberSlot(const char *rkey, size_t klen, int slot)
{
	memcpy(cache_key, rkey, klen);
	cache_len = klen;
	cache_slot = slot;
}

/*
 * Find or create the entry of a limiter (for its counters and lax state);
 * -1 without shared memory, when the key is too long or the table full
 * (then a lax call's session gets one NOTICE).
 */
int
DkRateSlot(text *key, const char *rkey, size_t klen, bool lax)
{
	uint32		h = KeyHash(rkey, klen);
	int			slot;
	int			free_slot = -1;
	int64		now = MonoUs();
	size_t		ulen = VARSIZE_ANY_EXHDR(key);
	char	   *ekey;
	size_t		elen;

	if (rs == NULL || ulen > RATE_UKEY_MAX || klen >= RATE_RKEY_MAX)
		return -1;
	/* the session's last limiter: no table lock (the entry is checked under its mutex) */
	if (cache_slot >= 0 && cache_len == klen && memcmp(cache_key, rkey, klen) == 0)
		return cache_slot;
	LWLockAcquire(rs->lock, LW_SHARED);
	slot = FindSlot(h, rkey, klen);
	LWLockRelease(rs->lock);
	if (slot >= 0)
	{
		RememberSlot(rkey, klen, slot);
		return slot;
	}

	ekey = DkKeyBuild(DK_KIND_RATE_EPOCH, VARDATA_ANY(key), ulen, &elen);
	if (elen >= RATE_RKEY_MAX)
		return -1;
	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	slot = FindSlot(h, rkey, klen);
	if (slot < 0)
	{
		for (int i = 0; i < RATE_SLOTS && free_slot < 0; i++)
			if (!rs->entries[i].used)
				free_slot = i;
		/* else an idle entry that holds nothing */
		for (int i = 0; i < RATE_SLOTS && free_slot < 0; i++)
		{
			DkRateEntry *e = &rs->entries[i];
			bool		idle;

			SpinLockAcquire(&e->mutex);
			idle = !e->reserving && e->nblocks == 0 &&
				now - e->last_used > (int64) rate_return_after_ms * 1000;
			SpinLockRelease(&e->mutex);
			if (idle)
				free_slot = i;
		}
		if (free_slot >= 0)
		{
			DkRateEntry *e = &rs->entries[free_slot];

			SpinLockAcquire(&e->mutex);
			memset(((char *) e) + offsetof(DkRateEntry, used), 0,
				   sizeof(DkRateEntry) - offsetof(DkRateEntry, used));
			e->used = true;
			e->hash = h;
			e->klen = klen;
			memcpy(e->rkey, rkey, klen);
			e->elen = elen;
			memcpy(e->ekey, ekey, elen);
			e->ulen = ulen;
			memcpy(e->ukey, VARDATA_ANY(key), ulen);
			e->ukey[ulen] = '\0';
			e->last_used = now;
			e->obs_at = now;
			SpinLockRelease(&e->mutex);
		}
		slot = free_slot;
	}
	LWLockRelease(rs->lock);
	if (slot >= 0)
		RememberSlot(rkey, klen, slot);
	if (slot < 0 && lax && !noticed_full)
	{
		noticed_full = true;
		ereport(NOTICE,
				(errmsg("lax rate limiting is not available for %s: %s", DkKeyQuote(key),
						ulen > RATE_UKEY_MAX ? "the key is too long" : "the table of limiters is full"),
				 errdetail("Lax calls on such limiters decide strictly (one Redis round trip); this notice is shown once per session."),
				 errhint("A server holds %d limiters with keys of up to %d bytes; idle ones are reused after distkit.rate_return_after.",
						 RATE_SLOTS, RATE_UKEY_MAX)));
	}
	return slot;
}

/* Count one event of a limiter. */
void
DkRateCount(int slot, DkRateCounter which)
{
	DkRateEntry *e;

	if (slot < 0 || rs == NULL)
		return;
	e = &rs->entries[slot];
	SpinLockAcquire(&e->mutex);
	e->counters[which]++;
	SpinLockRelease(&e->mutex);
}

/* Slot q of a block in 1/rate us. */
static inline int128
BlockQ(const DkRateEntry *e, const RateBlock *b)
{
	return (int128) b->q_us * e->rate + b->q_f;
}

static inline void
SetBlockQ(const DkRateEntry *e, RateBlock *b, int128 q)
{
	b->q_us = (int64) (q / e->rate);
	b->q_f = (int64) (q % e->rate);
}

/* Drop the units whose slots start before now (Redis us). */
static void
Expire(DkRateEntry *e, int64 now)
{
	int128		n = (int128) now * e->rate;
	int			keep = 0;

	for (int i = 0; i < e->nblocks; i++)
	{
		RateBlock  *b = &e->blocks[i];
		int128		q = BlockQ(e, b);

		if (q < n)
		{
			int128		gone = (n - q + e->per_us - 1) / e->per_us;

			if (gone >= b->left)
				b->left = 0;
			else
			{
				b->left -= (int64) gone;
				SetBlockQ(e, b, q + gone * e->per_us);
			}
		}
		if (b->left > 0)
			e->blocks[keep++] = *b;
	}
	e->nblocks = keep;
}

/* Take n units (Held >= n, after Expire). */
static void
Take(DkRateEntry *e, int64 n)
{
	int			keep = 0;

	for (int i = 0; i < e->nblocks; i++)
	{
		RateBlock  *b = &e->blocks[i];
		int64		k = Min(n, b->left);

		b->left -= k;
		n -= k;
		SetBlockQ(e, b, BlockQ(e, b) + (int128) k * e->per_us);
		if (b->left > 0)
			e->blocks[keep++] = *b;
	}
	e->nblocks = keep;
	e->tail = Min(e->tail, Held(e));
}

static void
DropBlocks(DkRateEntry *e)
{
	e->nblocks = 0;
	e->end_valid = false;
	e->tail = 0;
}

/* Units to ask for: see the design comment. */
static int64
TargetUnits(DkRateEntry *e)
{
	int			n = DkInstanceLiveCount();
	double		g = e->rate_obs * RATE_HORIZON_US / 1e6;
	double		span = (double) e->rate * RATE_MIN_SPAN_US / e->per_us;
	int64		cap = Max(e->max_cost, e->burst / (2 * n));
	int64		exact = (RATE_EXACT_LIMIT - 1) / e->rate;
	int64		units;

	g = Max(g, span);
	units = g >= (double) cap ? cap : (int64) ceil(g);
	units = Max(units, e->max_cost);
	units = Min(units, exact);
	units = Min(units, e->burst);
	return Max(units, 1);
}

static int64
Watermark(DkRateEntry *e)
{
	return Max(TargetUnits(e) / 2, e->max_cost);
}

/* The reservation command for an entry (copied under its mutex). */
static DkCmd *
ReserveCommand(const char *rkey, int klen, const char *ekey, int elen,
			   int64 rate, int64 per_us, int64 burst, int64 want, int64 min)
{
	DkCmd	   *cmd = DkCmdScript(DK_LUA_RATE_RESERVE, 2);
	int128		tau = (int128) per_us * burst;

	DkCmdArg(cmd, rkey, klen);
	DkCmdArg(cmd, ekey, elen);
	DkCmdArgInt(cmd, rate);
	DkCmdArgInt(cmd, per_us / rate);
	DkCmdArgInt(cmd, per_us % rate);
	DkCmdArgInt(cmd, (int64) (tau / rate));
	DkCmdArgInt(cmd, (int64) (tau % rate));
	DkCmdArgInt(cmd, want);
	DkCmdArgInt(cmd, min);
	return cmd;
}

/* A reservation's reply, checked. */
typedef struct Reservation
{
	int64		granted;
	int64		now;
	int64		tb_us,
				tb_f,
				ta_us,
				ta_f,
				epoch;
} Reservation;

static bool
ParseReservation(DkReply *r, Reservation *res)
{
	int64		v[7];

	if (r->type != DK_REPLY_ARRAY || r->nelem != 7)
		return false;
	for (int i = 0; i < 7; i++)
	{
		if (r->elem[i]->type != DK_REPLY_INTEGER)
			return false;
		v[i] = r->elem[i]->integer;
	}
	res->granted = v[0];
	res->now = v[1];
	res->tb_us = v[2];
	res->tb_f = v[3];
	res->ta_us = v[4];
	res->ta_f = v[5];
	res->epoch = v[6];
	return true;
}

/*
 * Install a reservation made with the entry's current parameters (mutex
 * held).  When it got less than wanted, the limiter is drained: nobody here
 * asks Redis again before batch more units are free (empty_until), so that
 * a saturated limiter costs one reservation per batch, not two per unit.
 */
static void
Install(DkRateEntry *e, const Reservation *res, int64 sent_at, int64 want, int64 batch)
{
	int128		tau = (int128) e->per_us * e->burst;
	int128		used;

	e->have_offset = true;
	e->offset_us = res->now - sent_at;
	if (res->epoch != e->epoch)
	{
		DropBlocks(e);
		e->epoch = res->epoch;
	}
	e->refills++;
	if (res->granted > 0)
	{
		if (e->end_valid && e->end_us == res->tb_us && e->end_f == res->tb_f)
			e->tail += res->granted;
		else
			e->tail = res->granted;
	}
	used = ((int128) res->ta_us - res->now) * e->rate + res->ta_f;
	e->near = used * 5 > tau * 4;
	e->full_at = res->ta_us;
	if (res->granted > 0 && e->nblocks > 0 &&
		BlockQ(e, &e->blocks[e->nblocks - 1]) +
		(int128) e->blocks[e->nblocks - 1].left * e->per_us ==
		(int128) res->tb_us * e->rate + res->tb_f)
	{
		/* right after our last block on the chain: one block */
		e->blocks[e->nblocks - 1].left += res->granted;
		e->reserved += res->granted;
		e->end_valid = true;
		e->end_us = res->ta_us;
		e->end_f = res->ta_f;
		e->empty_until = 0;
	}
	else if (res->granted > 0)
	{
		if (e->nblocks == RATE_BLOCKS)
		{
			/* the oldest block goes (its units are lost: under-admission) */
			memmove(&e->blocks[0], &e->blocks[1], sizeof(RateBlock) * (RATE_BLOCKS - 1));
			e->nblocks--;
		}
		e->blocks[e->nblocks].q_us = res->tb_us;
		e->blocks[e->nblocks].q_f = res->tb_f;
		e->blocks[e->nblocks].left = res->granted;
		e->nblocks++;
		e->reserved += res->granted;
		e->end_valid = true;
		e->end_us = res->ta_us;
		e->end_f = res->ta_f;
		e->empty_until = 0;
	}
	if (res->granted < want)
	{
		/* batch units are free when tat + batch T - tau <= now */
		int128		t = (int128) res->ta_us * e->rate + res->ta_f +
		(int128) batch * e->per_us - tau;

		e->empty_until = (int64) (t / e->rate);
	}
}

/* Wake the worker for a refill. */
static void
WantRefill(void)
{
	Latch	   *latch = rs->worker_latch;

	pg_atomic_write_u32(&rs->wanted, 1);
	if (latch)
		SetLatch(latch);
}

/* Fill info from the entry (mutex held). */
static void
FillInfo(DkRateEntry *e, int64 now, DkRateLaxInfo *info)
{
	info->held = Held(e);
	info->retry_after_us = e->empty_until > now ? e->empty_until - now : -1;
	info->reset_after_us = e->full_at > now ? e->full_at - now : 0;
}

/*
 * A lax decision for p.cost units of the limiter in slot.  Reaches Redis
 * only when this server holds too few units (one reservation).  When Redis
 * cannot be reached: raise if rethrow, else DK_RATE_LAX_UNREACHABLE.
 */
DkRateLaxResult
DkRateLaxDecide(int slot, const char *rkey, size_t klen, const DkRateParams *p,
				bool rethrow, DkRateLaxInfo *info)
{
	DkRateEntry *e = &rs->entries[slot];
	int64		mono = MonoUs();
	int64		now;
	int64		want;
	int64		low;
	DkCmd	   *cmd;
	DkReply    *volatile r = NULL;
	Reservation res;
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool reached = true;
	int64		sent_at;
	int64		waited;
	bool		ok;
	bool		took = false;
	volatile bool own_flag;
	char		ekey[RATE_RKEY_MAX];
	int			elen;

	if ((int128) p->cost * p->rate >= RATE_EXACT_LIMIT)
		return DK_RATE_LAX_NO_SLOT;
	SpinLockAcquire(&e->mutex);
	if (!e->used || e->klen != klen || memcmp(e->rkey, rkey, klen) != 0)
	{
		/* the entry went to another key since this session looked it up */
		SpinLockRelease(&e->mutex);
		cache_slot = -1;
		return DK_RATE_LAX_NO_SLOT;
	}
	if (e->rate != p->rate || e->per_us != p->per_us || e->burst != p->burst)
	{
		/* other parameters: units of the old T cannot be spent as new ones */
		DropBlocks(e);
		e->rate = p->rate;
		e->per_us = p->per_us;
		e->burst = p->burst;
		e->empty_until = 0;
		e->max_cost = 0;
	}
	e->demand += p->cost;
	e->last_used = mono;
	e->max_cost = Max(e->max_cost, p->cost);
	now = mono + e->offset_us;
	if (e->have_offset)
		Expire(e, now);
	else
		e->nblocks = 0;
	if (Held(e) >= p->cost)
	{
		Take(e, p->cost);
		e->spent += p->cost;
		e->counters[DK_RC_ALLOWED]++;
		if (e->near)
			e->counters[DK_RC_NEAR_LIMIT]++;
		FillInfo(e, now, info);
		low = Held(e) < Watermark(e);
		SpinLockRelease(&e->mutex);
		if (low)
			WantRefill();
		return DK_RATE_LAX_ALLOWED;
	}
	/*
	 * Another process is reserving: wait for its answer, at most
	 * RATE_WAIT_US (a reservation takes one round trip); then reserve here
	 * too, so that a worker stuck connecting to an unreachable Redis does
	 * not hold up the calls (they get their own answer and on_error).
	 */
	waited = 0;
	while (e->reserving && waited < RATE_WAIT_US)
	{
		SpinLockRelease(&e->mutex);
		CHECK_FOR_INTERRUPTS();
		pg_usleep(100);
		waited += 100;
		mono = MonoUs();
		SpinLockAcquire(&e->mutex);
		now = mono + e->offset_us;
		if (e->have_offset)
			Expire(e, now);
		if (!e->reserving && Held(e) >= p->cost)
		{
			Take(e, p->cost);
			e->spent += p->cost;
			e->counters[DK_RC_ALLOWED]++;
			if (e->near)
				e->counters[DK_RC_NEAR_LIMIT]++;
			FillInfo(e, now, info);
			SpinLockRelease(&e->mutex);
			return DK_RATE_LAX_ALLOWED;
		}
	}
	if (e->have_offset && e->empty_until > now)
	{
		e->counters[DK_RC_DENIED]++;
		e->counters[DK_RC_NEAR_LIMIT]++;
		FillInfo(e, now, info);
		SpinLockRelease(&e->mutex);
		return DK_RATE_LAX_DENIED;
	}
	own_flag = !e->reserving;
	e->reserving = true;
	want = TargetUnits(e);
	elen = e->elen;
	memcpy(ekey, e->ekey, elen);
	SpinLockRelease(&e->mutex);
	/* built without the spinlock (it allocates); rkey is the caller's, equal to e->rkey */
	cmd = ReserveCommand(rkey, klen, ekey, elen, p->rate, p->per_us, p->burst, want, p->cost);

	sent_at = MonoUs();
	PG_TRY();
	{
		if (rethrow)
			r = DkRedisRunOne(cmd, DK_NOT_IDEMPOTENT);
		else
		{
			DkReply   **replies;

			if (DkRedisRunIfReachable(&cmd, 1, DK_NOT_IDEMPOTENT, &replies))
				r = replies[0];
			else
				reached = false;
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		SpinLockAcquire(&e->mutex);
		if (own_flag)
			e->reserving = false;
		e->counters[DK_RC_ON_ERROR_RAISED]++;
		SpinLockRelease(&e->mutex);
		PG_RE_THROW();
	}
	PG_END_TRY();

	ok = reached && ParseReservation(r, &res);
	SpinLockAcquire(&e->mutex);
	if (own_flag)
		e->reserving = false;
	if (ok)
	{
		/*
		 * The units granted were admitted at the script's time, so this
		 * call spends its cost from the new block at once, as a strict call
		 * would; the rest is held under the slot rule.
		 */
		took = res.granted >= p->cost;
		if (e->rate == p->rate && e->per_us == p->per_us && e->burst == p->burst)
		{
			Install(e, &res, sent_at, want, Max(p->cost, Min(Watermark(e), want)));
			if (took)
			{
				RateBlock  *b = &e->blocks[e->nblocks - 1];

				b->left -= p->cost;
				SetBlockQ(e, b, BlockQ(e, b) + (int128) p->cost * e->per_us);
				e->tail = Min(e->tail, b->left);
				if (b->left == 0)
					e->nblocks--;
			}
		}
		now = MonoUs() + e->offset_us;
		Expire(e, now);
	}
	if (took)
	{
		e->spent += p->cost;
		e->counters[DK_RC_ALLOWED]++;
		if (e->near)
			e->counters[DK_RC_NEAR_LIMIT]++;
		FillInfo(e, now, info);
		SpinLockRelease(&e->mutex);
		return DK_RATE_LAX_ALLOWED;
	}
	if (ok)
	{
		e->counters[DK_RC_DENIED]++;
		e->counters[DK_RC_NEAR_LIMIT]++;
		FillInfo(e, now, info);
	}
	SpinLockRelease(&e->mutex);
	if (!reached)
		return DK_RATE_LAX_UNREACHABLE;
	if (!ok)
	{
		if (r->type == DK_REPLY_ERROR && strncmp(r->str, "DKBADSTATE", 10) == 0)
			DkRateRaiseBadState(psprintf("rate limiter %s", DkKeyQuote(cstring_to_text_with_len(rs->entries[slot].ukey, rs->entries[slot].ulen))));
		if (r->type == DK_REPLY_ERROR)
			DkReplyRaiseError(r, "a lax rate limiter reservation");
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("unexpected reply from Redis to a lax rate limiter reservation")));
	}
	return DK_RATE_LAX_DENIED;
}

/*
 * on_error = 'local': this server's share of the limit, rate / N and
 * burst / N (at least 1) for the N servers of the last heartbeat, in this
 * server's shared memory on its own clock.
 */
bool
DkRateLocalDecide(int slot, const DkRateParams *p)
{
	DkRateEntry *e;
	int			n = DkInstanceLiveCount();
	double		t = (double) p->per_us / p->rate * n;
	int64		burst = Max(p->burst / n, 1);
	double		now = (double) MonoUs();
	double		tat;
	bool		allowed;

	if (slot < 0 || p->cost > burst)
		return false;
	e = &rs->entries[slot];
	SpinLockAcquire(&e->mutex);
	tat = Max(e->local_tat, now) + t * p->cost;
	allowed = tat - t * burst <= now;
	if (allowed)
		e->local_tat = tat;
	SpinLockRelease(&e->mutex);
	return allowed;
}

/* distkit_rate_reset on this server: drop the units it holds at once. */
void
DkRateForget(const char *rkey, size_t klen)
{
	int			slot;

	if (rs == NULL)
		return;
	LWLockAcquire(rs->lock, LW_SHARED);
	slot = FindSlot(KeyHash(rkey, klen), rkey, klen);
	LWLockRelease(rs->lock);
	if (slot < 0)
		return;
	SpinLockAcquire(&rs->entries[slot].mutex);
	DropBlocks(&rs->entries[slot]);
	rs->entries[slot].empty_until = 0;
	SpinLockRelease(&rs->entries[slot].mutex);
}

/* The refill task's period: short while a limiter is in use. */
static int
RefillIntervalMs(void)
{
	int64		now = MonoUs();

	if (rs == NULL)
		return RATE_IDLE_TASK_MS;
	if (pg_atomic_read_u32(&rs->wanted))
		return 1;
	for (int i = 0; i < RATE_SLOTS; i++)
	{
		DkRateEntry *e = &rs->entries[i];

		if (e->used && (e->nblocks > 0 ||
						now - e->last_used < (int64) rate_return_after_ms * 1000))
			return RATE_ACTIVE_REFILL_MS;
	}
	return RATE_IDLE_TASK_MS;
}

/* One worker action on an entry. */
typedef struct RefillItem
{
	int			slot;
	bool		is_return;
	int64		units;
	int64		rate;
	int64		per_us;
	int64		burst;
	int64		min;
	/* copied under the entry's spinlock; the command is built after it */
	int64		end_us;
	int64		end_f;
	int64		back_q;
	int64		back_r;
	int			klen;
	int			elen;
	char		rkey[RATE_RKEY_MAX];
	char		ekey[RATE_RKEY_MAX];
} RefillItem;

static RefillItem *refill_items = NULL;	/* the worker's, RATE_SLOTS of them */

/* The Redis command of a refill item (no lock held: it allocates). */
static DkCmd *
RefillCommand(const RefillItem *it)
{
	DkCmd	   *cmd;

	if (!it->is_return)
		return ReserveCommand(it->rkey, it->klen, it->ekey, it->elen, it->rate,
							  it->per_us, it->burst, it->units, it->min);
	cmd = DkCmdScript(DK_LUA_RATE_RETURN, 1);
	DkCmdArg(cmd, it->rkey, it->klen);
	DkCmdArgStr(cmd, psprintf(INT64_FORMAT "+" INT64_FORMAT "/" INT64_FORMAT,
							  it->end_us, it->end_f, it->rate));
	DkCmdArgInt(cmd, it->rate);
	DkCmdArgInt(cmd, it->back_q);
	DkCmdArgInt(cmd, it->back_r);
	return cmd;
}

/*
 * Worker task: reserve ahead for limiters in use that run low, give back
 * the units of limiters idle for distkit.rate_return_after.  One pipelined
 * round trip for all of them.
 */
static void
RefillTask(void)
{
	int64		mono = MonoUs();
	int64		idle_us = (int64) rate_return_after_ms * 1000;
	RefillItem *items;
	DkCmd	  **cmds = palloc(sizeof(DkCmd *) * RATE_SLOTS);
	int			n = 0;
	DkReply   **replies;
	int64		sent_at;

	rs->worker_latch = MyLatch;
	if (refill_items == NULL)
		refill_items = MemoryContextAlloc(TopMemoryContext, sizeof(RefillItem) * RATE_SLOTS);
	items = refill_items;
	pg_atomic_write_u32(&rs->wanted, 0);
	for (int i = 0; i < RATE_SLOTS; i++)
	{
		DkRateEntry *e = &rs->entries[i];
		int64		now;
		int			built = n;

		if (!e->used)
			continue;
		SpinLockAcquire(&e->mutex);
		if (!e->used || e->reserving || e->rate == 0)
		{
			SpinLockRelease(&e->mutex);
			continue;
		}
		/* observed demand, smoothed */
		if (mono - e->obs_at >= 50000)
		{
			double		r = (double) (e->demand - e->demand_seen) * 1e6 / (mono - e->obs_at);

			e->rate_obs = e->rate_obs * 0.5 + r * 0.5;
			e->demand_seen = e->demand;
			e->obs_at = mono;
		}
		now = mono + e->offset_us;
		if (e->have_offset)
			Expire(e, now);
		if (mono - e->last_used > idle_us)
		{
			if (e->tail > 0 && e->end_valid)
			{
				int128		back = (int128) e->tail * e->per_us;

				items[n].slot = i;
				items[n].is_return = true;
				items[n].units = e->tail;
				items[n].rate = e->rate;
				items[n].end_us = e->end_us;
				items[n].end_f = e->end_f;
				items[n].back_q = (int64) (back / e->rate);
				items[n].back_r = (int64) (back % e->rate);
				items[n].klen = e->klen;
				memcpy(items[n].rkey, e->rkey, e->klen);
				n++;
			}
			DropBlocks(e);
			e->rate_obs = 0;
		}
		else if (e->have_offset && e->empty_until > now)
			;					/* nothing free yet */
		else if (Held(e) < Watermark(e) && e->nblocks < RATE_BLOCKS)
		{
			int64		want = TargetUnits(e);

			e->reserving = true;
			items[n].slot = i;
			items[n].is_return = false;
			items[n].units = want;
			items[n].rate = e->rate;
			items[n].per_us = e->per_us;
			items[n].burst = e->burst;
			/*
			 * At least the watermark, or nothing: at saturation the worker
			 * then waits until that many units are free (empty_until)
			 * instead of asking every cycle for the one or two that freed
			 * meanwhile; units not taken stay in Redis for whoever asks.
			 */
			items[n].min = Min(Watermark(e), want);
			items[n].klen = e->klen;
			memcpy(items[n].rkey, e->rkey, e->klen);
			items[n].elen = e->elen;
			memcpy(items[n].ekey, e->ekey, e->elen);
			n++;
		}
		SpinLockRelease(&e->mutex);
		if (n > built)
			cmds[built] = RefillCommand(&items[built]);
	}
	if (n == 0)
		return;

	sent_at = MonoUs();
	PG_TRY();
	{
		replies = DkRedisRun(cmds, n, DK_NOT_IDEMPOTENT);
	}
	PG_CATCH();
	{
		for (int k = 0; k < n; k++)
			if (!items[k].is_return)
			{
				DkRateEntry *e = &rs->entries[items[k].slot];

				SpinLockAcquire(&e->mutex);
				e->reserving = false;
				SpinLockRelease(&e->mutex);
			}
		PG_RE_THROW();
	}
	PG_END_TRY();

	for (int k = 0; k < n; k++)
	{
		DkRateEntry *e = &rs->entries[items[k].slot];
		Reservation res;

		SpinLockAcquire(&e->mutex);
		if (items[k].is_return)
		{
			if (replies[k]->type == DK_REPLY_INTEGER && replies[k]->integer == 1)
				e->returned += items[k].units;
		}
		else
		{
			e->reserving = false;
			if (ParseReservation(replies[k], &res) &&
				e->rate == items[k].rate && e->per_us == items[k].per_us &&
				e->burst == items[k].burst)
				Install(e, &res, sent_at, items[k].units, items[k].min);
		}
		SpinLockRelease(&e->mutex);
	}
}

/* distkit_rate_stats(): one row per limiter this server has seen. */
Datum
distkit_rate_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (rs == NULL)
		return (Datum) 0;
	for (int i = 0; i < RATE_SLOTS; i++)
	{
		DkRateEntry *e = &rs->entries[i];
		DkRateEntry copy;
		Datum		values[15];
		bool		nulls[15] = {0};
		int64		now;
		int			c = 0;

		if (!e->used)
			continue;
		SpinLockAcquire(&e->mutex);
		now = MonoUs() + e->offset_us;
		if (e->have_offset && e->rate > 0)
			Expire(e, now);
		copy = *e;
		SpinLockRelease(&e->mutex);
		if (!copy.used)
			continue;
		values[c++] = PointerGetDatum(cstring_to_text_with_len(copy.ukey, copy.ulen));
		values[c++] = Int64GetDatum(Held(&copy));
		values[c++] = Int64GetDatum(copy.reserved);
		values[c++] = Int64GetDatum(copy.spent);
		values[c++] = Int64GetDatum(copy.returned);
		values[c++] = Int64GetDatum(copy.refills);
		values[c++] = Int64GetDatum(copy.counters[DK_RC_ALLOWED]);
		values[c++] = Int64GetDatum(copy.counters[DK_RC_DENIED]);
		values[c++] = Int64GetDatum(copy.counters[DK_RC_NEAR_LIMIT]);
		values[c++] = Int64GetDatum(copy.counters[DK_RC_SHADOW_DENIED]);
		values[c++] = Int64GetDatum(copy.counters[DK_RC_ON_ERROR_RAISED]);
		values[c++] = Int64GetDatum(copy.counters[DK_RC_ON_ERROR_DENIED]);
		values[c++] = Int64GetDatum(copy.counters[DK_RC_ON_ERROR_ALLOWED]);
		values[c++] = Int64GetDatum(copy.counters[DK_RC_ON_ERROR_LOCAL]);
		values[c++] = Float8GetDatum(copy.rate_obs);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
