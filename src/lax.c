/*-------------------------------------------------------------------------
 *
 * lax.c
 *		The shared-memory buffer behind lax counters.
 *
 * A fixed table of distkit.lax_capacity entries, one per (kind, prefix,
 * key) counted in lax mode on this server (kind 's': a simple counter,
 * 'i': this instance's slice of an instance-aware counter), plus an
 * open-addressing hash index (linear probing, backward-shift deletion) and
 * a dirty bitmap.  One LWLock
 * guards the index: lookups of existing keys take it shared, only adding or
 * evicting a key takes it exclusively.
 *
 * Per entry:
 *	pending		delta added by backends and not yet taken by the flusher;
 *				an atomic, so an increment is one fetch-add (no lock of its
 *				own, no syscall);
 *	inflight	delta the flusher took into the current batch and has not
 *				seen acknowledged yet (kept across worker restarts);
 *	known		the Redis total from the last flush reply or read, and when.
 * This server's view of a counter is known + inflight + pending, and what a
 * lax call returns.  So that it rests on the real total, an entry gets
 * known from Redis before its first increment (DkLaxAddSeeded: one read,
 * skipped while Redis is unreachable); the totals of evicted entries are
 * remembered in a small hash-addressed table, so a key that comes back
 * needs no read; this server's strict writes update or forget them.  The
 * flusher is (with the rare strict writes) the only writer of inflight and
 * known; writers serialise on the entry's spinlock and publish through a
 * seqlock (version), so readers never lock.
 *
 * An increment that makes an entry dirty sets its bit in the dirty bitmap
 * and, at most once per flush cycle, the flusher's latch; the flusher scans
 * only the bitmap (capacity/64 words) and sleeps when nothing is dirty.
 *
 * Exactly-once: each batch has a sequence number (per instance, kept in
 * shared memory).  An entry's inflight delta is resent with the same
 * sequence number until acknowledged, and Redis skips a (instance,
 * sequence) it has already applied: flush.c sends simple counters in
 * groups with one exactly-once record per (instance, group).
 *
 * distkit_flush and the strict writes (set, del, clear, inc_if) wait for a
 * flush cycle through flush_requested/flush_completed and a condition
 * variable, so they are ordered after this server's earlier lax writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "common/int.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "port/pg_bitutils.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "distkit.h"
#include "shmem.h"
#include "keys.h"
#include "lax.h"
#include "redis.h"
#include "version.h"

typedef struct DkLaxEntry
{
	pg_atomic_uint64 pending;	/* int64 bits */
	pg_atomic_uint64 inflight;	/* int64 bits */
	pg_atomic_uint64 known;		/* int64 bits: Redis total */
	pg_atomic_uint64 known_slice;	/* int64 bits: this instance's slice (instance kind) */
	pg_atomic_uint32 version;	/* seqlock: odd while a writer changes fields */
	pg_atomic_uint32 dirty;		/* set while marked in the dirty bitmap */
	slock_t		mutex;			/* serialises writers */
	bool		in_use;
	bool		used;			/* clock bit for eviction */
	TimestampTz known_at;		/* 0: never read or stale */
	bool		known_valid;	/* known was read from Redis at least once */
	uint64		flush_gen;		/* bumped when the flusher takes or settles */
	uint32		strict_gen;		/* bumped by strict writes */
	uint32		hash;
	int32		next_free;
	uint16		namelen;		/* kind prefix NUL key */
	uint16		keyoff;			/* where the key starts in name */
	char		name[DK_LAX_NAME_MAX];
} DkLaxEntry;

/*
 * The Redis total of an evicted key, remembered so that the key's next
 * touch needs no seeding read (see DkLaxAddSeeded).  A direct-mapped table
 * of LAX_REMEMBER_FACTOR x capacity slots, found by a 64-bit hash of the
 * entry's name (0: empty); the next eviction mapping to a slot overwrites
 * it.  Written at eviction and taken at insertion, both under the
 * exclusive lock; this server's strict writes and clears forget the totals
 * they make wrong (hash set to 0, atomically, under the shared lock).  A
 * remembered total is only ever a view: it never reaches Redis.
 */
typedef struct DkLaxRemembered
{
	pg_atomic_uint64 hash;
	int64		total;
	int64		slice;
} DkLaxRemembered;

#define LAX_REMEMBER_FACTOR 4

typedef struct DkLaxShared
{
	LWLock	   *lock;			/* guards the index and free list */
	int32		capacity;
	int32		nbuckets;		/* power of two */
	int32		free_head;
	int32		used;
	int32		clock_hand;
	char		instance_id[40];

	/* flusher state, in shared memory so that a restarted worker resumes */
	uint64		next_seq;
	uint64		inflight_seq;	/* 0: no batch in flight */
	Latch	   *worker_latch;
	int			worker_pid;
	pg_atomic_uint32 worker_idle;	/* 1 while the flusher sleeps with nothing to do */
	pg_atomic_uint64 flush_requested;
	pg_atomic_uint64 flush_completed;
	ConditionVariable flush_cv;
	pg_atomic_uint64 seed_paused_until;	/* TimestampTz: no seeding reads before */

	/* statistics */
	pg_atomic_uint64 flushes;
	pg_atomic_uint64 keys_flushed;
	pg_atomic_uint64 flush_errors;
	pg_atomic_uint64 strict_fallbacks;
	pg_atomic_uint64 dropped;
	pg_atomic_uint64 seed_reads;	/* first-touch reads of a total (DkLaxAddSeeded) */
	pg_atomic_uint64 evictions;
	pg_atomic_uint64 flush_calls;	/* script calls of grouped flushes (flush.c) */
	pg_atomic_uint64 flush_groups[DK_KEY_SLOTS / 64];	/* groups this instance flushed */
	slock_t		stats_mutex;
	TimestampTz last_flush;
	bool		redis_ok;
	char		last_error[256];
} DkLaxShared;

#define SEED_PAUSE_MS 1000		/* no seeding reads this long after Redis failed */

/* GUCs */
static int	lax_capacity = 65536;
static int	flush_interval_ms = 20;

/* Pointers into shared memory (same address in every process). */
static DkLaxShared *lax = NULL;
static pg_atomic_uint64 *dirty_bits = NULL;
static int32 *buckets = NULL;
static DkLaxEntry *entries = NULL;
static DkLaxRemembered *remembered = NULL;

#define I64(u) ((int64) (u))
#define U64(i) ((uint64) (i))

/* Size of the region "distkit lax buffer" for lax_capacity entries. */
Size
DkLaxShmemSize(void)
{
	int			nbuckets = 1;
	Size		size;

	while (nbuckets < 2 * lax_capacity)
		nbuckets <<= 1;
	size = MAXALIGN(sizeof(DkLaxShared));
	size = add_size(size, MAXALIGN(sizeof(pg_atomic_uint64) * ((lax_capacity + 63) / 64)));
	size = add_size(size, MAXALIGN(sizeof(int32) * nbuckets));
	size = add_size(size, MAXALIGN(mul_size(sizeof(DkLaxEntry), lax_capacity)));
	size = add_size(size, mul_size(sizeof(DkLaxRemembered),
								   mul_size(LAX_REMEMBER_FACTOR, lax_capacity)));
	return size;
}

/* Make a random (version 4) UUID for this instance. */
static void
MakeInstanceId(char *out)
{
	uint8		b[16];

	if (!pg_strong_random(b, sizeof(b)))
		elog(ERROR, "could not generate a random instance id");
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, 40,
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
			 b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* Region init (shmem.c): create or attach to the buffer. */
void
DkLaxShmemInit(void *region, bool found, LWLock *lock)
{
	char	   *base = region;
	int			nwords = (lax_capacity + 63) / 64;

	lax = (DkLaxShared *) base;
	base += MAXALIGN(sizeof(DkLaxShared));
	dirty_bits = (pg_atomic_uint64 *) base;
	base += MAXALIGN(sizeof(pg_atomic_uint64) * nwords);
	if (!found)
	{
		int			nbuckets = 1;

		while (nbuckets < 2 * lax_capacity)
			nbuckets <<= 1;
		memset(lax, 0, sizeof(DkLaxShared));
		lax->lock = lock;
		lax->capacity = lax_capacity;
		lax->nbuckets = nbuckets;
		lax->next_seq = 1;
		MakeInstanceId(lax->instance_id);
		pg_atomic_init_u32(&lax->worker_idle, 0);
		pg_atomic_init_u64(&lax->flush_requested, 0);
		pg_atomic_init_u64(&lax->flush_completed, 0);
		ConditionVariableInit(&lax->flush_cv);
		pg_atomic_init_u64(&lax->seed_paused_until, 0);
		pg_atomic_init_u64(&lax->flushes, 0);
		pg_atomic_init_u64(&lax->keys_flushed, 0);
		pg_atomic_init_u64(&lax->flush_errors, 0);
		pg_atomic_init_u64(&lax->strict_fallbacks, 0);
		pg_atomic_init_u64(&lax->dropped, 0);
		pg_atomic_init_u64(&lax->seed_reads, 0);
		pg_atomic_init_u64(&lax->evictions, 0);
		pg_atomic_init_u64(&lax->flush_calls, 0);
		for (int i = 0; i < lengthof(lax->flush_groups); i++)
			pg_atomic_init_u64(&lax->flush_groups[i], 0);
		SpinLockInit(&lax->stats_mutex);
		for (int i = 0; i < nwords; i++)
			pg_atomic_init_u64(&dirty_bits[i], 0);
	}
	buckets = (int32 *) base;
	base += MAXALIGN(sizeof(int32) * lax->nbuckets);
	entries = (DkLaxEntry *) base;
	base += MAXALIGN(sizeof(DkLaxEntry) * lax->capacity);
	remembered = (DkLaxRemembered *) base;
	if (!found)
	{
		for (int i = 0; i < LAX_REMEMBER_FACTOR * lax->capacity; i++)
		{
			pg_atomic_init_u64(&remembered[i].hash, 0);
			remembered[i].total = 0;
			remembered[i].slice = 0;
		}
		for (int i = 0; i < lax->nbuckets; i++)
			buckets[i] = -1;
		for (int i = 0; i < lax->capacity; i++)
		{
			DkLaxEntry *e = &entries[i];

			memset(e, 0, sizeof(*e));
			pg_atomic_init_u64(&e->pending, 0);
			pg_atomic_init_u64(&e->inflight, 0);
			pg_atomic_init_u64(&e->known, 0);
			pg_atomic_init_u64(&e->known_slice, 0);
			pg_atomic_init_u32(&e->version, 0);
			pg_atomic_init_u32(&e->dirty, 0);
			SpinLockInit(&e->mutex);
			e->next_free = (i + 1 < lax->capacity) ? i + 1 : -1;
		}
		lax->free_head = 0;
	}
}

/* Defines the lax GUCs (the buffer is a region of shmem.c). */
void
DkLaxInit(void)
{
	/* PGC_POSTMASTER variables can only be defined while preloading */
	if (DkPreloaded)
		DefineCustomIntVariable("distkit.lax_capacity",
								"Number of keys the lax buffer of this server can hold.",
								"Each entry takes about 352 bytes of shared memory (the entry and the remembered totals of evicted keys).",
								&lax_capacity,
								65536, 64, 16 * 1024 * 1024,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
	DefineCustomIntVariable("distkit.flush_interval",
							"How often the flusher sends buffered lax increments to Redis.",
							NULL,
							&flush_interval_ms,
							20, 1, 60000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* distkit.flush_interval in milliseconds. */
int
DkFlushIntervalMs(void)
{
	return flush_interval_ms;
}

/* The instance id of this server ("" without shared memory). */
const char *
DkLaxInstanceId(void)
{
	return lax ? lax->instance_id : "";
}

/* Error unless the buffer exists (distkit preloaded). */
static void
RequireBuffer(void)
{
	DkRequirePreload("lax mode");
	if (lax == NULL)
		elog(ERROR, "distkit lax buffer is not attached");
}

/* Build "<kind><prefix>\0<key>"; false if it does not fit an entry. */
static bool
BuildName(DkLaxKind kind, const char *key, size_t keylen, char *name, int *namelen, int *keyoff)
{
	const char *prefix = DkKeyPrefix();
	size_t		plen = strlen(prefix);

	if (2 + plen + keylen > DK_LAX_NAME_MAX)
		return false;
	name[0] = (char) kind;
	memcpy(name + 1, prefix, plen);
	name[1 + plen] = '\0';
	memcpy(name + 2 + plen, key, keylen);
	*namelen = (int) (2 + plen + keylen);
	*keyoff = (int) (2 + plen);
	return true;
}

/* Index of the entry named name, or -1.  Caller holds the lock. */
static int32
FindEntry(const char *name, int namelen, uint32 hash)
{
	uint32		mask = lax->nbuckets - 1;

	for (uint32 b = hash & mask;; b = (b + 1) & mask)
	{
		int32		idx = buckets[b];
		DkLaxEntry *e;

		if (idx < 0)
			return -1;
		e = &entries[idx];
		if (e->hash == hash && e->namelen == namelen && memcmp(e->name, name, namelen) == 0)
			return idx;
	}
}

/* The remembered-table hash of a name (never 0). */
static uint64
NameHash64(const char *name, int namelen)
{
	return hash_bytes_extended((const unsigned char *) name, namelen, 0) | 1;
}

/* The remembered-table slot of a name hash. */
static DkLaxRemembered *
RememberedSlot(uint64 h)
{
	return &remembered[h % (uint64) (LAX_REMEMBER_FACTOR * lax->capacity)];
}

/* Keep an evicted entry's Redis total; exclusive lock held. */
static void
Remember(DkLaxEntry *e)
{
	uint64		h;
	DkLaxRemembered *r;

	if (!e->known_valid)
		return;
	h = NameHash64(e->name, e->namelen);
	r = RememberedSlot(h);
	r->total = I64(pg_atomic_read_u64(&e->known));
	r->slice = I64(pg_atomic_read_u64(&e->known_slice));
	pg_atomic_write_u64(&r->hash, h);
}

/*
 * Take the total remembered for a name out of the table (so that the
 * eviction that makes room for it cannot overwrite it first); false if
 * none.  Exclusive lock held.
 */
static bool
TakeRemembered(const char *name, int namelen, uint64 *hash, DkLaxView *view)
{
	uint64		h = NameHash64(name, namelen);
	DkLaxRemembered *r = RememberedSlot(h);

	if (pg_atomic_read_u64(&r->hash) != h)
		return false;
	*hash = h;
	view->total = r->total;
	view->slice = r->slice;
	pg_atomic_write_u64(&r->hash, 0);
	return true;
}

/* Put back a total TakeRemembered took (no room for the key after all). */
static void
PutBackRemembered(uint64 hash, DkLaxView view)
{
	DkLaxRemembered *r = RememberedSlot(hash);

	r->total = view.total;
	r->slice = view.slice;
	pg_atomic_write_u64(&r->hash, hash);
}

/* Forget the total remembered for a name (it changed here); lock held, any mode. */
static void
Forget(const char *name, int namelen)
{
	uint64		h = NameHash64(name, namelen);
	DkLaxRemembered *r = RememberedSlot(h);

	if (pg_atomic_read_u64(&r->hash) == h)
		pg_atomic_write_u64(&r->hash, 0);
}

/* Remove entry idx from the index (backward-shift deletion); exclusive lock held. */
static void
RemoveEntry(int32 idx)
{
	uint32		mask = lax->nbuckets - 1;
	uint32		i = entries[idx].hash & mask;

	while (buckets[i] != idx)
		i = (i + 1) & mask;
	buckets[i] = -1;
	for (uint32 j = (i + 1) & mask; buckets[j] >= 0; j = (j + 1) & mask)
	{
		uint32		k = entries[buckets[j]].hash & mask;

		/* move j back to i unless its home k lies cyclically in (i, j] */
		if ((i <= j) ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		buckets[i] = buckets[j];
		buckets[j] = -1;
		i = j;
	}
	entries[idx].in_use = false;
	entries[idx].next_free = lax->free_head;
	lax->free_head = idx;
	lax->used--;
}

/* Evict idle, fully flushed entries (clock sweep); exclusive lock held. */
static void
EvictSome(void)
{
	int			want = Max(1, lax->capacity / 64);
	int			freed = 0;

	for (int step = 0; step < 2 * lax->capacity && freed < want; step++)
	{
		int32		idx = lax->clock_hand;
		DkLaxEntry *e = &entries[idx];

		lax->clock_hand = (idx + 1) % lax->capacity;
		if (!e->in_use)
			continue;
		if (e->used)
		{
			e->used = false;
			continue;
		}
		if (pg_atomic_read_u32(&e->dirty) == 0 &&
			pg_atomic_read_u64(&e->pending) == 0 &&
			pg_atomic_read_u64(&e->inflight) == 0)
		{
			Remember(e);
			RemoveEntry(idx);
			pg_atomic_fetch_add_u64(&lax->evictions, 1);
			freed++;
		}
	}
}

/* Add an entry for name; -1 if the buffer is full.  Exclusive lock held. */
static int32
InsertEntry(const char *name, int namelen, int keyoff, uint32 hash)
{
	uint32		mask = lax->nbuckets - 1;
	int32		idx;
	DkLaxEntry *e;
	uint32		b;
	uint64		taken_hash = 0;
	DkLaxView	taken = {0, 0};
	bool		recalled = TakeRemembered(name, namelen, &taken_hash, &taken);

	if (lax->free_head < 0)
		EvictSome();
	if (lax->free_head < 0)
	{
		if (recalled)
			PutBackRemembered(taken_hash, taken);
		return -1;
	}
	idx = lax->free_head;
	e = &entries[idx];
	lax->free_head = e->next_free;
	lax->used++;

	e->in_use = true;
	e->used = true;
	e->hash = hash;
	e->namelen = namelen;
	e->keyoff = keyoff;
	memcpy(e->name, name, namelen);
	e->known_at = 0;
	e->known_valid = false;
	e->flush_gen = 0;
	e->strict_gen = 0;
	pg_atomic_write_u64(&e->pending, 0);
	pg_atomic_write_u64(&e->inflight, 0);
	pg_atomic_write_u64(&e->known, 0);
	pg_atomic_write_u64(&e->known_slice, 0);
	pg_atomic_write_u32(&e->dirty, 0);
	if (recalled)
	{
		/* the view rests on the total the key had when it was evicted */
		pg_atomic_write_u64(&e->known, U64(taken.total));
		pg_atomic_write_u64(&e->known_slice, U64(taken.slice));
		e->known_valid = true;
	}

	for (b = hash & mask; buckets[b] >= 0; b = (b + 1) & mask)
		;
	buckets[b] = idx;
	return idx;
}

/*
 * Find the entry for key, creating it when create is set.  Returns with the
 * lock held (shared, or exclusive if it had to create); -1 if absent/full.
 */
static int32
LookupLocked(DkLaxKind kind, const char *key, size_t keylen, bool create)
{
	char		name[DK_LAX_NAME_MAX];
	int			namelen;
	int			keyoff;
	uint32		hash;
	int32		idx;

	if (!BuildName(kind, key, keylen, name, &namelen, &keyoff))
	{
		LWLockAcquire(lax->lock, LW_SHARED);
		return -1;
	}
	hash = hash_bytes((const unsigned char *) name, namelen);
	LWLockAcquire(lax->lock, LW_SHARED);
	idx = FindEntry(name, namelen, hash);
	if (idx >= 0 || !create)
		return idx;
	LWLockRelease(lax->lock);
	LWLockAcquire(lax->lock, LW_EXCLUSIVE);
	idx = FindEntry(name, namelen, hash);
	if (idx < 0)
		idx = InsertEntry(name, namelen, keyoff, hash);
	return idx;
}

/* known + inflight + pending (and the slice likewise), consistently (seqlock read). */
static DkLaxView
ReadView(DkLaxEntry *e)
{
	for (;;)
	{
		uint32		v1 = pg_atomic_read_u32(&e->version);
		int64		buffered;
		DkLaxView	view;

		if (v1 & 1)
		{
			SPIN_DELAY();
			continue;
		}
		pg_read_barrier();
		buffered = I64(pg_atomic_read_u64(&e->inflight)) + I64(pg_atomic_read_u64(&e->pending));
		view.total = I64(pg_atomic_read_u64(&e->known)) + buffered;
		view.slice = I64(pg_atomic_read_u64(&e->known_slice)) + buffered;
		pg_read_barrier();
		if (pg_atomic_read_u32(&e->version) == v1)
			return view;
	}
}

/* Store a Redis total (and slice) as known; caller is inside WriteBegin/WriteEnd. */
static void
SetKnown(DkLaxEntry *e, DkLaxView v, TimestampTz at)
{
	pg_atomic_write_u64(&e->known, U64(v.total));
	pg_atomic_write_u64(&e->known_slice, U64(v.slice));
	e->known_at = at;
	e->known_valid = true;
}

/* Begin/end a write of an entry's inflight/known fields. */
static void
WriteBegin(DkLaxEntry *e)
{
	SpinLockAcquire(&e->mutex);
	pg_atomic_fetch_add_u32(&e->version, 1);
	pg_write_barrier();
}

static void
WriteEnd(DkLaxEntry *e)
{
	pg_write_barrier();
	pg_atomic_fetch_add_u32(&e->version, 1);
	SpinLockRelease(&e->mutex);
}

/*
 * Wake the flusher.  Unless forced, only when it sleeps idle: while it
 * sleeps between cycles (distkit.flush_interval) increments accumulate.
 */
static void
WakeFlusher(bool force)
{
	Latch	   *latch;

	if (!force &&
		(pg_atomic_read_u32(&lax->worker_idle) == 0 ||
		 pg_atomic_exchange_u32(&lax->worker_idle, 0) == 0))
		return;
	latch = lax->worker_latch;
	if (latch)
		SetLatch(latch);
}

/* Mark entry idx dirty (once until the flusher takes it). */
static void
MarkDirty(DkLaxEntry *e, int32 idx)
{
	if (pg_atomic_read_u32(&e->dirty) != 0)
		return;
	if (pg_atomic_exchange_u32(&e->dirty, 1) != 0)
		return;
	pg_atomic_fetch_or_u64(&dirty_bits[idx / 64], UINT64CONST(1) << (idx % 64));
	WakeFlusher(false);
}

/* What AddToEntry did. */
typedef enum LaxAddResult
{
	LAX_ADDED,
	LAX_FULL,					/* no room, or key too long: count it strictly */
	LAX_UNKNOWN					/* require_known, and no Redis total is known yet */
} LaxAddResult;

/*
 * Add delta to key in the buffer and set *view to this server's view.  With
 * require_known, nothing is added to an entry that has never had a total
 * from Redis (LAX_UNKNOWN).  No Redis I/O.
 */
static LaxAddResult
AddToEntry(DkLaxKind kind, const char *key, size_t keylen, int64 delta, bool require_known,
		   DkLaxView *view)
{
	int32		idx;
	DkLaxEntry *e;
	DkLaxView	before;
	int64		sum;

	RequireBuffer();
	idx = LookupLocked(kind, key, keylen, true);
	if (idx < 0)
	{
		LWLockRelease(lax->lock);
		return LAX_FULL;
	}
	e = &entries[idx];
	if (require_known && !e->known_valid)
	{
		LWLockRelease(lax->lock);
		return LAX_UNKNOWN;
	}
	before = ReadView(e);
	if (pg_add_s64_overflow(before.total, delta, &sum) ||
		(kind == DK_LAX_INSTANCE && pg_add_s64_overflow(before.slice, delta, &sum)) ||
		pg_add_s64_overflow(I64(pg_atomic_read_u64(&e->pending)), delta, &sum))
	{
		LWLockRelease(lax->lock);
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("lax counter would overflow bigint"),
				 errdetail("This server's view is " INT64_FORMAT "; the delta is " INT64_FORMAT ".",
						   before.total, delta),
				 errhint("Counters hold values from -9223372036854775808 to 9223372036854775807.")));
	}
	pg_atomic_fetch_add_u64(&e->pending, U64(delta));
	if (!e->used)
		e->used = true;
	MarkDirty(e, idx);
	*view = ReadView(e);
	LWLockRelease(lax->lock);
	return LAX_ADDED;
}

/*
 * Add delta to key in the buffer as it is (no Redis I/O at all: used at
 * commit, after the transaction already read the key).  Returns false
 * (nothing done) if the key cannot be buffered: the caller then counts it
 * strictly.
 */
bool
DkLaxAdd(DkLaxKind kind, const char *key, size_t keylen, int64 delta, DkLaxView *view)
{
	return AddToEntry(kind, key, keylen, delta, false, view) == LAX_ADDED;
}

/*
 * Seeding reads stop for SEED_PAUSE_MS after one failed or a flush cycle
 * did (Redis unreachable): lax calls must stay fast during an outage, not
 * each wait for a connect or command timeout.
 */
static void
PauseSeeding(void)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SEED_PAUSE_MS);

	pg_atomic_write_u64(&lax->seed_paused_until, (uint64) until);
}

/*
 * Run seed; false if it failed for a reason that is not the key's content:
 * Redis unreachable, an ACL refusal, Redis loading or out of memory.  The
 * increment is then buffered without a total, as lax increments always
 * could be, and the flusher reports the problem.  A key that holds another
 * type or a non-integer raises its error here, at the call, instead of
 * being acknowledged and then dropped at flush.
 */
static bool
TrySeed(DkLaxSeedFn seed, const char *key, size_t keylen, void *arg, DkLaxView *value)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		seed(key, keylen, arg, value);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_WRONG_OBJECT_TYPE ||
			edata->sqlerrcode == ERRCODE_INVALID_TEXT_REPRESENTATION ||
			edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			ProcDiePending)
			PG_RE_THROW();
		FlushErrorState();
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Give key's entry a Redis total if it has none yet: read it through seed
 * (one round trip, no lock held) and store it, unless a flush of the key
 * raced with the read (then the flush's reply is the total).  Nothing
 * happens if Redis cannot be reached (seed returns false) or was not
 * reachable a moment ago (PauseSeeding).
 */
static void
SeedEntry(DkLaxKind kind, const char *key, size_t keylen, DkLaxSeedFn seed, void *arg)
{
	DkLaxReadTicket ticket;
	DkLaxView	view;
	DkLaxView	value;

	if ((TimestampTz) pg_atomic_read_u64(&lax->seed_paused_until) > GetCurrentTimestamp())
		return;
	if (DkLaxLookupForRead(kind, key, keylen, &view, &ticket) == DK_LAX_NO_ENTRY ||
		ticket.known_valid)
		return;
	pg_atomic_fetch_add_u64(&lax->seed_reads, 1);
	if (TrySeed(seed, key, keylen, arg, &value))
		(void) DkLaxStoreRead(kind, key, keylen, &ticket, value);
	else
		PauseSeeding();
}

/*
 * A lax call's increment.  The first touch of a key that this server holds
 * no Redis total for (new to it, evicted, or read only while Redis was
 * down) reads the total once (SeedEntry), so that the value returned and
 * the overflow check rest on the real total: after distkit_set('k', 100),
 * a lax increment of 1 returns 101, and one that would overflow is refused
 * here instead of being dropped at flush.  Every later increment of the
 * key is shared-memory work only.  When Redis cannot be reached the
 * increment is buffered anyway (lax counting works without Redis) and the
 * view rests on this server's increments until a flush or a read succeeds.
 * Returns false (nothing done) if the key cannot be buffered.
 */
bool
DkLaxAddSeeded(DkLaxKind kind, const char *key, size_t keylen, int64 delta,
			   DkLaxSeedFn seed, void *arg, DkLaxView *view)
{
	LaxAddResult r = AddToEntry(kind, key, keylen, delta, true, view);

	if (r != LAX_UNKNOWN)
		return r == LAX_ADDED;
	SeedEntry(kind, key, keylen, seed, arg);
	return AddToEntry(kind, key, keylen, delta, false, view) == LAX_ADDED;
}

/*
 * This server's view of key for a transactional lax increment (the
 * increment itself is added at commit), seeded like DkLaxAddSeeded.
 * Returns false if the key cannot be buffered.
 */
bool
DkLaxViewSeeded(DkLaxKind kind, const char *key, size_t keylen, DkLaxSeedFn seed, void *arg,
				DkLaxView *view)
{
	DkLaxReadTicket ticket;

	if (DkLaxLookupForRead(kind, key, keylen, view, &ticket) == DK_LAX_NO_ENTRY)
		return false;
	if (!ticket.known_valid)
	{
		SeedEntry(kind, key, keylen, seed, arg);
		(void) DkLaxLookupForRead(kind, key, keylen, view, &ticket);
	}
	return true;
}

/*
 * Look key up for a lax read.  DK_LAX_FRESH: *view is set.  DK_LAX_STALE:
 * *view is the (stale) view; read Redis and pass the value to
 * DkLaxStoreRead with *ticket.
 */
DkLaxReadState
DkLaxLookupForRead(DkLaxKind kind, const char *key, size_t keylen, DkLaxView *view,
				   DkLaxReadTicket *ticket)
{
	int32		idx;
	DkLaxEntry *e;
	DkLaxReadState state;
	TimestampTz now = GetCurrentTimestamp();

	RequireBuffer();
	idx = LookupLocked(kind, key, keylen, true);
	if (idx < 0)
	{
		LWLockRelease(lax->lock);
		return DK_LAX_NO_ENTRY;
	}
	e = &entries[idx];
	if (!e->used)
		e->used = true;
	SpinLockAcquire(&e->mutex);
	if (e->known_at != 0 &&
		!TimestampDifferenceExceeds(e->known_at, now, flush_interval_ms))
		state = DK_LAX_FRESH;
	else
		state = DK_LAX_STALE;
	ticket->idx = idx;
	ticket->flush_gen = e->flush_gen;
	ticket->known_valid = e->known_valid;
	SpinLockRelease(&e->mutex);
	*view = ReadView(e);
	LWLockRelease(lax->lock);
	return state;
}

/*
 * Store a value read from Redis as the entry's known total, unless the
 * flusher took or settled a batch for it meanwhile (then the read may or
 * may not include that batch and the flusher's own reply is used instead).
 * Returns this server's view.
 */
DkLaxView
DkLaxStoreRead(DkLaxKind kind, const char *key, size_t keylen, const DkLaxReadTicket *ticket,
			   DkLaxView redis_value)
{
	int32		idx;
	DkLaxEntry *e;
	DkLaxView	view;

	idx = LookupLocked(kind, key, keylen, false);
	if (idx < 0)
	{
		LWLockRelease(lax->lock);
		return redis_value;
	}
	e = &entries[idx];
	WriteBegin(e);
	if (idx == ticket->idx && e->flush_gen == ticket->flush_gen &&
		pg_atomic_read_u64(&e->inflight) == 0)
		SetKnown(e, redis_value, GetCurrentTimestamp());
	WriteEnd(e);
	view = ReadView(e);
	LWLockRelease(lax->lock);
	return view;
}

/*
 * Before a strict write of key: if this server has lax increments of it not
 * yet in Redis, wait until they are, so that the strict write is ordered
 * after them (distkit_del then returns a total that includes them).
 */
void
DkLaxSettle(DkLaxKind kind, const char *key, size_t keylen)
{
	int32		idx;
	bool		busy = false;

	if (lax == NULL)
		return;
	idx = LookupLocked(kind, key, keylen, false);
	if (idx >= 0)
	{
		DkLaxEntry *e = &entries[idx];

		busy = pg_atomic_read_u64(&e->pending) != 0 ||
			pg_atomic_read_u64(&e->inflight) != 0;
	}
	LWLockRelease(lax->lock);
	if (busy)
		(void) DkLaxFlushWait(2 * DkRedisCommandTimeoutMs() + DkFlushIntervalMs());
}

/* Forget the total remembered for an evicted key; lock held, any mode. */
static void
ForgetKey(DkLaxKind kind, const char *key, size_t keylen)
{
	char		name[DK_LAX_NAME_MAX];
	int			namelen;
	int			keyoff;

	if (BuildName(kind, key, keylen, name, &namelen, &keyoff))
		Forget(name, namelen);
}

/* After a strict write of key: remember its new Redis value. */
void
DkLaxAfterStrictWrite(DkLaxKind kind, const char *key, size_t keylen, DkLaxView value)
{
	int32		idx;

	if (lax == NULL)
		return;
	idx = LookupLocked(kind, key, keylen, false);
	if (idx >= 0)
	{
		DkLaxEntry *e = &entries[idx];

		WriteBegin(e);
		SetKnown(e, value, GetCurrentTimestamp());
		e->strict_gen++;
		WriteEnd(e);
	}
	else
		ForgetKey(kind, key, keylen);
	LWLockRelease(lax->lock);
}

/*
 * Before a strict increment of key: a ticket for DkLaxAfterStrictAdd.
 * Returns false when this server does not buffer the key (no entry is
 * created: strict calls do not fill the buffer).
 */
bool
DkLaxStrictAddTicket(DkLaxKind kind, const char *key, size_t keylen, DkLaxReadTicket *ticket)
{
	int32		idx;

	if (lax == NULL)
		return false;
	idx = LookupLocked(kind, key, keylen, false);
	if (idx >= 0)
	{
		DkLaxEntry *e = &entries[idx];

		SpinLockAcquire(&e->mutex);
		ticket->idx = idx;
		ticket->flush_gen = e->flush_gen;
		ticket->known_valid = e->known_valid;
		SpinLockRelease(&e->mutex);
	}
	LWLockRelease(lax->lock);
	return idx >= 0;
}

/*
 * After a strict increment of key (ticket: from DkLaxStrictAddTicket, or
 * NULL when it returned false): the total Redis returned becomes this
 * server's view of the key, unless a flush of the key raced with the call
 * (then the flush's reply will); a remembered total is forgotten.  So a
 * lax call after a strict one on this server sees it.
 */
void
DkLaxAfterStrictAdd(DkLaxKind kind, const char *key, size_t keylen,
					const DkLaxReadTicket *ticket, DkLaxView value)
{
	if (lax == NULL)
		return;
	if (ticket != NULL)
	{
		(void) DkLaxStoreRead(kind, key, keylen, ticket, value);
		return;
	}
	LWLockAcquire(lax->lock, LW_SHARED);
	ForgetKey(kind, key, keylen);
	LWLockRelease(lax->lock);
}

/*
 * After a clear: every buffered key of this kind and the current prefix is
 * now 0 in Redis — or, with only_slice, only this instance's slice is 0
 * (the total is then unknown: marked stale).
 */
void
DkLaxAfterClear(DkLaxKind kind, bool only_slice)
{
	const char *prefix = DkKeyPrefix();
	size_t		plen = strlen(prefix);
	TimestampTz now = GetCurrentTimestamp();

	if (lax == NULL)
		return;
	LWLockAcquire(lax->lock, LW_SHARED);
	for (int i = 0; i < lax->capacity; i++)
	{
		DkLaxEntry *e = &entries[i];

		if (!e->in_use || e->name[0] != (char) kind || e->keyoff != plen + 2 ||
			memcmp(e->name + 1, prefix, plen) != 0)
			continue;
		WriteBegin(e);
		pg_atomic_write_u64(&e->known_slice, 0);
		if (only_slice)
			e->known_at = 0;
		else
		{
			pg_atomic_write_u64(&e->known, 0);
			e->known_at = now;
			e->known_valid = true;
		}
		e->strict_gen++;
		WriteEnd(e);
	}
	/* every remembered total may now be wrong */
	for (int i = 0; i < LAX_REMEMBER_FACTOR * lax->capacity; i++)
		pg_atomic_write_u64(&remembered[i].hash, 0);
	LWLockRelease(lax->lock);
}

/* True if any key has a delta not yet acknowledged by Redis. */
bool
DkLaxAnythingPending(void)
{
	bool		found = false;

	if (lax == NULL)
		return false;
	LWLockAcquire(lax->lock, LW_SHARED);
	for (int i = 0; i < lax->capacity && !found; i++)
		found = entries[i].in_use &&
			(pg_atomic_read_u64(&entries[i].pending) != 0 ||
			 pg_atomic_read_u64(&entries[i].inflight) != 0);
	LWLockRelease(lax->lock);
	return found;
}

/* Count a lax call that had to be served strictly. */
void
DkLaxCountStrictFallback(void)
{
	if (lax)
		pg_atomic_fetch_add_u64(&lax->strict_fallbacks, 1);
}

/*
 * Wait until everything buffered before this call is in Redis.  Returns the
 * number of keys the flusher flushed meanwhile; raises an error on timeout.
 */
int64
DkLaxFlushWait(int timeout_ms)
{
	uint64		keys_before;
	uint64		target;
	TimestampTz deadline;

	RequireBuffer();
	keys_before = pg_atomic_read_u64(&lax->keys_flushed);
	target = pg_atomic_add_fetch_u64(&lax->flush_requested, 1);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	WakeFlusher(true);

	ConditionVariablePrepareToSleep(&lax->flush_cv);
	while (pg_atomic_read_u64(&lax->flush_completed) < target)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		char		error[256];
		bool		running;

		if (left <= 0)
		{
			ConditionVariableCancelSleep();
			SpinLockAcquire(&lax->stats_mutex);
			strlcpy(error, lax->last_error, sizeof(error));
			SpinLockRelease(&lax->stats_mutex);
			running = lax->worker_latch != NULL;
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("buffered lax increments were not flushed to Redis within %d ms", timeout_ms),
					 running ?
					 errdetail("The flusher's last error: %s", error[0] ? error : "(none)") :
					 errdetail("The distkit worker worker is not running."),
					 errhint("The increments stay buffered and are sent as soon as Redis is reachable.")));
		}
		/* wake the flusher again in case it is in a back-off sleep */
		WakeFlusher(true);
		ConditionVariableTimedSleep(&lax->flush_cv, Min(left, 100), PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return (int64) (pg_atomic_read_u64(&lax->keys_flushed) - keys_before);
}

/* The flusher registers its latch, so backends can wake it. */
void
DkLaxWorkerAttach(void)
{
	RequireBuffer();
	lax->worker_pid = MyProcPid;
	lax->worker_latch = MyLatch;
}

/* The flusher is leaving. */
void
DkLaxWorkerDetach(void)
{
	if (lax == NULL)
		return;
	lax->worker_latch = NULL;
	lax->worker_pid = 0;
	SpinLockAcquire(&lax->stats_mutex);
	lax->redis_ok = false;
	SpinLockRelease(&lax->stats_mutex);
}

/* Start a flush cycle; returns the flush request it will satisfy. */
uint64
DkLaxBeginCycle(void)
{
	pg_atomic_write_u32(&lax->worker_idle, 0);
	pg_memory_barrier();
	return pg_atomic_read_u64(&lax->flush_requested);
}

/* A flush request (distkit_flush, a strict write) waits for a cycle. */
bool
DkLaxFlushPending(void)
{
	return pg_atomic_read_u64(&lax->flush_requested) > pg_atomic_read_u64(&lax->flush_completed);
}

/*
 * The flusher is about to sleep with nothing to do: announce it, then look
 * once more (an increment that marked a key dirty before seeing the
 * announcement would not wake us).  Returns false if it must not sleep.
 */
bool
DkLaxGoIdle(void)
{
	int			nwords = (lax->capacity + 63) / 64;

	pg_atomic_write_u32(&lax->worker_idle, 1);
	pg_memory_barrier();
	for (int w = 0; w < nwords; w++)
		if (pg_atomic_read_u64(&dirty_bits[w]) != 0)
		{
			pg_atomic_write_u32(&lax->worker_idle, 0);
			return false;
		}
	if (DkLaxFlushPending())
	{
		pg_atomic_write_u32(&lax->worker_idle, 0);
		return false;
	}
	return true;
}

/* Room for one more batch item: the array grows by doubling. */
static DkLaxBatchItem *
NextItem(DkLaxBatchItem **items, int n, int *cap)
{
	if (n == *cap)
	{
		*cap = *cap ? *cap * 2 : 64;
		*items = *items ? repalloc(*items, sizeof(DkLaxBatchItem) * *cap)
			: palloc(sizeof(DkLaxBatchItem) * *cap);
		/*
		 * prefix and key point into each item's own name[]: after the array
		 * moved they pointed into freed memory (keys of a batch of more than
		 * 64 were garbage by the time they were sent, and their deltas went
		 * to other keys); point them into the moved items again.  name[] is
		 * kind, prefix, NUL, key.
		 */
		for (int i = 0; i < n; i++)
		{
			DkLaxBatchItem *it = &(*items)[i];

			it->prefix = it->name + 1;
			it->key = it->name + 2 + strlen(it->prefix);
		}
	}
	return &(*items)[n];
}

/* Copy entry e (index idx) into a batch item with the given delta. */
static void
FillItem(DkLaxBatchItem *item, DkLaxEntry *e, int32 idx, int64 delta)
{
	item->idx = idx;
	item->kind = (DkLaxKind) e->name[0];
	item->delta = delta;
	item->strict_gen = e->strict_gen;
	memcpy(item->name, e->name, e->namelen);
	item->prefix = item->name + 1;
	item->key = item->name + e->keyoff;
	item->keylen = e->namelen - e->keyoff;
}

/*
 * The batch still in flight from an earlier cycle (or an earlier flusher
 * process): every entry with an unacknowledged delta.  Returns how many,
 * and its sequence number.
 */
int
DkLaxTakeInflight(DkLaxBatchItem **items, uint64 *seq)
{
	int			n = 0;
	int			cap = 0;
	DkLaxBatchItem *out = NULL;

	*seq = lax->inflight_seq;
	if (*seq == 0)
		return 0;
	LWLockAcquire(lax->lock, LW_SHARED);
	for (int i = 0; i < lax->capacity; i++)
	{
		DkLaxEntry *e = &entries[i];
		int64		delta;

		if (!e->in_use || (delta = I64(pg_atomic_read_u64(&e->inflight))) == 0)
			continue;
		FillItem(NextItem(&out, n, &cap), e, i, delta);
		n++;
	}
	LWLockRelease(lax->lock);
	if (n == 0)
		lax->inflight_seq = 0;
	*items = out;
	return n;
}

/*
 * Take a new batch: move the pending delta of every dirty entry to its
 * inflight delta, under a new sequence number.  Returns how many keys.
 */
int
DkLaxTakeBatch(DkLaxBatchItem **items, uint64 *seq)
{
	int			nwords = (lax->capacity + 63) / 64;
	int			n = 0;
	int			cap = 0;
	DkLaxBatchItem *out = NULL;

	LWLockAcquire(lax->lock, LW_SHARED);
	for (int w = 0; w < nwords; w++)
	{
		uint64		bits;

		if (pg_atomic_read_u64(&dirty_bits[w]) == 0)
			continue;
		bits = pg_atomic_exchange_u64(&dirty_bits[w], 0);
		while (bits)
		{
			int			bit = pg_rightmost_one_pos64(bits);
			int32		idx = w * 64 + bit;
			DkLaxEntry *e = &entries[idx];
			int64		taken;

			bits &= bits - 1;
			if (pg_atomic_read_u64(&e->inflight) != 0)
			{
				/* never mix sequence numbers: keep it for the next batch */
				pg_atomic_fetch_or_u64(&dirty_bits[w], UINT64CONST(1) << bit);
				continue;
			}
			pg_atomic_write_u32(&e->dirty, 0);
			pg_memory_barrier();
			WriteBegin(e);
			taken = I64(pg_atomic_exchange_u64(&e->pending, 0));
			pg_atomic_write_u64(&e->inflight, U64(taken));
			e->flush_gen++;
			WriteEnd(e);
			if (taken == 0)
				continue;
			FillItem(NextItem(&out, n, &cap), e, idx, taken);
			n++;
		}
	}
	LWLockRelease(lax->lock);
	if (n > 0)
	{
		*seq = lax->next_seq++;
		lax->inflight_seq = *seq;
	}
	*items = out;
	return n;
}

/*
 * Keys settled per hold of the buffer's lock (shared) in
 * DkLaxApplyFlushedMany: one acquisition and one clock read per slice
 * instead of per key, while an insertion (which needs the lock
 * exclusively) waits at most one slice.
 */
#define LAX_APPLY_SLICE 256

/*
 * Redis acknowledged items[0..n-1]: the delta of items[i] is in totals[i].
 * The lock is held (shared) so that no entry is evicted in the middle of
 * its update (an entry whose inflight is 0 may be evicted).
 */
void
DkLaxApplyFlushedMany(const DkLaxBatchItem *const *items, const DkLaxView *totals, int n)
{
	for (int start = 0; start < n; start += LAX_APPLY_SLICE)
	{
		int			end = Min(n, start + LAX_APPLY_SLICE);
		TimestampTz now = GetCurrentTimestamp();

		LWLockAcquire(lax->lock, LW_SHARED);
		for (int i = start; i < end; i++)
		{
			DkLaxEntry *e = &entries[items[i]->idx];

			WriteBegin(e);
			pg_atomic_write_u64(&e->inflight, 0);
			if (e->strict_gen == items[i]->strict_gen)
				SetKnown(e, totals[i], now);
			else
				e->known_at = 0;
			e->flush_gen++;
			WriteEnd(e);
		}
		LWLockRelease(lax->lock);
	}
}

/* Redis acknowledged item: its delta is in total. */
void
DkLaxApplyFlushed(const DkLaxBatchItem *item, DkLaxView total)
{
	DkLaxApplyFlushedMany(&item, &total, 1);
}

/* Redis refused item for good (overflow, wrong type): drop it, say so. */
void
DkLaxDropFlushed(const DkLaxBatchItem *item, const char *why)
{
	DkLaxEntry *e = &entries[item->idx];

	LWLockAcquire(lax->lock, LW_SHARED);
	WriteBegin(e);
	pg_atomic_write_u64(&e->inflight, 0);
	e->known_at = 0;
	e->flush_gen++;
	WriteEnd(e);
	LWLockRelease(lax->lock);
	pg_atomic_fetch_add_u64(&lax->dropped, 1);
	SpinLockAcquire(&lax->stats_mutex);
	strlcpy(lax->last_error, why, sizeof(lax->last_error));
	SpinLockRelease(&lax->stats_mutex);
}

/*
 * End a flush cycle.  On success every delta taken so far is in Redis:
 * flush requests up to target are satisfied.
 */
void
DkLaxEndCycle(uint64 target, int nkeys, bool ok, const char *error)
{
	SpinLockAcquire(&lax->stats_mutex);
	lax->redis_ok = ok;
	if (ok && nkeys > 0)
		lax->last_flush = GetCurrentTimestamp();
	if (!ok && error)
		strlcpy(lax->last_error, error, sizeof(lax->last_error));
	SpinLockRelease(&lax->stats_mutex);
	if (nkeys > 0 && ok)
	{
		pg_atomic_fetch_add_u64(&lax->flushes, 1);
		pg_atomic_fetch_add_u64(&lax->keys_flushed, nkeys);
	}
	if (!ok)
	{
		pg_atomic_fetch_add_u64(&lax->flush_errors, 1);
		PauseSeeding();
		return;
	}
	lax->inflight_seq = 0;
	pg_atomic_write_u64(&lax->seed_paused_until, 0);	/* Redis is back */
	if (pg_atomic_read_u64(&lax->flush_completed) < target)
		pg_atomic_write_u64(&lax->flush_completed, target);
	ConditionVariableBroadcast(&lax->flush_cv);
}

/* Statistics of grouped flushes (flush.c): script calls sent. */
void
DkLaxCountFlushCalls(int calls)
{
	pg_atomic_fetch_add_u64(&lax->flush_calls, calls);
}

/* ... and a group this instance flushed (it has an exactly-once record there). */
void
DkLaxNoteFlushGroup(int group)
{
	uint64		bit = UINT64CONST(1) << (group % 64);

	if ((pg_atomic_read_u64(&lax->flush_groups[group / 64]) & bit) == 0)
		pg_atomic_fetch_or_u64(&lax->flush_groups[group / 64], bit);
}

/* Whether this instance flushed group (holds a record there). */
bool
DkLaxFlushedGroup(int group)
{
	return (pg_atomic_read_u64(&lax->flush_groups[group / 64]) & (UINT64CONST(1) << (group % 64))) != 0;
}

/* Forget every group: their records were deleted (flush.c, at a stop). */
void
DkLaxForgetFlushGroups(void)
{
	for (int i = 0; i < lengthof(lax->flush_groups); i++)
		pg_atomic_write_u64(&lax->flush_groups[i], 0);
}

PG_FUNCTION_INFO_V1(distkit_stats);

/* distkit_stats(): one row describing the lax buffer and the flusher. */
Datum
distkit_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[17];
	bool		nulls[17] = {0};
	int			n = 0;
	bool		v010;
	int64		pending_keys = 0;
	int64		pending_delta = 0;
	int64		records = 0;
	int32		used;
	TimestampTz last_flush;
	bool		redis_ok;
	char		last_error[256];

	DkCheckSqlVersion();
	RequireBuffer();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (tupdesc->natts != 17 && tupdesc->natts != 13)	/* 0.2.0, 0.1.0 */
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("distkit_stats() is declared with %d columns, which this distkit library does not know",
						tupdesc->natts),
				 errhint("Run ALTER EXTENSION distkit UPDATE to get the SQL objects of version %s.",
						 DkSqlVersionNewest())));
	v010 = tupdesc->natts == 13;	/* no flush_calls, flush_records, seed_reads, evictions */

	LWLockAcquire(lax->lock, LW_SHARED);
	used = lax->used;
	for (int i = 0; i < lax->capacity; i++)
	{
		DkLaxEntry *e = &entries[i];
		int64		d;

		if (!e->in_use)
			continue;
		d = I64(pg_atomic_read_u64(&e->pending)) + I64(pg_atomic_read_u64(&e->inflight));
		if (d != 0)
		{
			pending_keys++;
			pending_delta += d;
		}
	}
	LWLockRelease(lax->lock);
	for (int i = 0; i < lengthof(lax->flush_groups); i++)
		records += pg_popcount64(pg_atomic_read_u64(&lax->flush_groups[i]));
	SpinLockAcquire(&lax->stats_mutex);
	last_flush = lax->last_flush;
	redis_ok = lax->redis_ok && lax->worker_latch != NULL;
	strlcpy(last_error, lax->last_error, sizeof(last_error));
	SpinLockRelease(&lax->stats_mutex);

	values[n++] = DirectFunctionCall1(uuid_in, CStringGetDatum(lax->instance_id));
	values[n++] = BoolGetDatum(redis_ok);
	values[n++] = Int64GetDatum(pending_keys);
	values[n++] = Int64GetDatum(pending_delta);
	values[n++] = Int64GetDatum(lax->capacity);
	values[n++] = Int64GetDatum(used);
	values[n++] = Int64GetDatum(I64(pg_atomic_read_u64(&lax->flushes)));
	values[n++] = Int64GetDatum(I64(pg_atomic_read_u64(&lax->keys_flushed)));
	if (!v010)
	{
		values[n++] = Int64GetDatum(I64(pg_atomic_read_u64(&lax->flush_calls)));
		values[n++] = Int64GetDatum(records);
	}
	values[n++] = Int64GetDatum(I64(pg_atomic_read_u64(&lax->flush_errors)));
	values[n++] = Int64GetDatum(I64(pg_atomic_read_u64(&lax->strict_fallbacks)));
	values[n++] = Int64GetDatum(I64(pg_atomic_read_u64(&lax->dropped)));
	if (!v010)
	{
		values[n++] = Int64GetDatum(I64(pg_atomic_read_u64(&lax->seed_reads)));
		values[n++] = Int64GetDatum(I64(pg_atomic_read_u64(&lax->evictions)));
	}
	nulls[n] = last_flush == 0;
	values[n++] = TimestampTzGetDatum(last_flush);
	nulls[n] = last_error[0] == '\0';
	values[n] = nulls[n] ? (Datum) 0 : CStringGetTextDatum(last_error);
	n++;
	Assert(n == tupdesc->natts);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
