-- distkit: distributed counters and rate limiters shared through Redis.
-- This file is built into distkit--<version>.sql.

\echo Use "CREATE EXTENSION distkit" to load this file. \quit

-- How a counter call reaches Redis: 'strict' runs one atomic script per
-- call; 'lax' buffers in shared memory and a background worker flushes.
CREATE TYPE distkit_mode AS ENUM ('strict', 'lax');

-- Counters.  By default not transactional: an increment stays applied in
-- Redis when the calling transaction rolls back.  With the setting
-- distkit.transactional = on, distkit_inc and distkit_dec are applied at
-- commit and discarded on rollback (docs/transactions.md); set, del, clear
-- and inc_if stay immediate.  NULL arguments raise errors (SQLSTATE 22004);
-- a NULL mode means distkit.default_mode.

CREATE FUNCTION distkit_inc(key text, delta bigint DEFAULT 1, mode distkit_mode DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_inc'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_inc(text, bigint, distkit_mode) IS
'Add delta to a counter shared through Redis; returns the new value';

CREATE FUNCTION distkit_dec(key text, delta bigint DEFAULT 1, mode distkit_mode DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_dec'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_dec(text, bigint, distkit_mode) IS
'Subtract delta from a counter; returns the new value';

CREATE FUNCTION distkit_get(key text, mode distkit_mode DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_get'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_get(text, distkit_mode) IS
'Current value of a counter (0 when missing)';

CREATE FUNCTION distkit_get_many(keys text[], mode distkit_mode DEFAULT NULL)
RETURNS TABLE(key text, value bigint)
AS 'MODULE_PATHNAME', 'distkit_get_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_get_many(text[], distkit_mode) IS
'Values of several counters in one round trip, one row per key in input order';

CREATE FUNCTION distkit_set(key text, value bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_set'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_set(text, bigint) IS
'Set a counter; returns the value set';

CREATE FUNCTION distkit_del(key text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_del'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_del(text) IS
'Delete a counter; returns the value it had (0 if none)';

CREATE FUNCTION distkit_clear()
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_clear'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_clear() IS
'Delete every counter under distkit.prefix; returns how many';
-- Wipes every server's counters: not for everyone.
REVOKE ALL ON FUNCTION distkit_clear() FROM PUBLIC;

CREATE FUNCTION distkit_inc_if(key text, delta bigint, op text, operand bigint,
                               OUT value bigint, OUT applied boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_inc_if'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_inc_if(text, bigint, text, bigint) IS
'Add delta only if "current op operand" holds (op: = <> < <= > >=), atomically';

-- Lax mode: the buffer and its flusher.

CREATE FUNCTION distkit_flush(timeout interval DEFAULT '5 seconds')
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_flush'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_flush(interval) IS
'Wait until every lax increment buffered on this server before the call is in Redis; returns the number of keys flushed meanwhile';

CREATE FUNCTION distkit_stats(
    OUT instance_id uuid,
    OUT redis_connected boolean,
    OUT pending_keys bigint,
    OUT pending_delta bigint,
    OUT buffer_capacity bigint,
    OUT buffer_used bigint,
    OUT flushes bigint,
    OUT keys_flushed bigint,
    OUT flush_calls bigint,
    OUT flush_records bigint,
    OUT flush_errors bigint,
    OUT strict_fallbacks bigint,
    OUT dropped_deltas bigint,
    OUT seed_reads bigint,
    OUT evictions bigint,
    OUT last_flush timestamptz,
    OUT last_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_stats'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION distkit_stats() IS
'State of this server''s lax buffer and flusher worker';

CREATE VIEW distkit_stats AS SELECT * FROM distkit_stats();
COMMENT ON VIEW distkit_stats IS
'State of this server''s lax buffer and flusher worker (one row)';

-- Rate limiters: GCRA (as in redis-cell), one atomic Lua script per call on
-- Redis's clock, so every server sharing the Redis enforces one limit.
-- rate units may pass per period per; burst (NULL: rate) may pass at once
-- from idle; a call consumes cost units (0: only check).  A denied call
-- consumes nothing.  Not transactional: a unit consumed stays consumed when
-- the calling transaction rolls back.  Errors: 22023 for invalid
-- parameters, 22004 for NULL key, rate, per or cost.

CREATE FUNCTION distkit_rate_allow(key text, rate bigint, per interval DEFAULT '1 second',
                                   burst bigint DEFAULT NULL, cost bigint DEFAULT 1,
                                   on_error text DEFAULT NULL, shadow boolean DEFAULT NULL,
                                   mode distkit_mode DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_rate_allow'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_rate_allow(text, bigint, interval, bigint, bigint, text, boolean, distkit_mode) IS
'True if cost units may pass now under rate per period (burst at once), and then consumes them; on_error (error, deny, allow, local), shadow and mode (strict, lax) default to the distkit.rate_* settings';

CREATE FUNCTION distkit_rate_check(key text, rate bigint, per interval DEFAULT '1 second',
                                   burst bigint DEFAULT NULL, cost bigint DEFAULT 1,
                                   on_error text DEFAULT NULL, shadow boolean DEFAULT NULL,
                                   mode distkit_mode DEFAULT NULL,
                                   OUT allowed boolean, OUT remaining bigint,
                                   OUT retry_after interval, OUT reset_after interval,
                                   OUT would_allow boolean, OUT decided_by text)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_rate_check'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_rate_check(text, bigint, interval, bigint, bigint, text, boolean, distkit_mode) IS
'Like distkit_rate_allow, with remaining units, retry_after (NULL when allowed), reset_after (time until full), the decision before shadow mode and how it was taken';

CREATE FUNCTION distkit_rate_peek(key text, rate bigint, per interval DEFAULT '1 second',
                                  burst bigint DEFAULT NULL,
                                  OUT remaining bigint, OUT reset_after interval)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_rate_peek'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_rate_peek(text, bigint, interval, bigint) IS
'Remaining units and time until full of a rate limiter, consuming nothing';

CREATE FUNCTION distkit_rate_reset(key text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_rate_reset'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_rate_reset(text) IS
'Forget a rate limiter''s state (it is full again); true if it had any';

-- Lax rate limiting (issue 17): per limiter on this server, the units
-- reserved from Redis, spent, given back, and the decisions taken.
CREATE FUNCTION distkit_rate_stats(
    OUT key text,
    OUT held bigint,
    OUT reserved bigint,
    OUT spent bigint,
    OUT returned bigint,
    OUT refills bigint,
    OUT allowed bigint,
    OUT denied bigint,
    OUT near_limit bigint,
    OUT shadow_denied bigint,
    OUT on_error_raised bigint,
    OUT on_error_denied bigint,
    OUT on_error_allowed bigint,
    OUT on_error_local bigint,
    OUT demand_per_second float8)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'distkit_rate_stats'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION distkit_rate_stats() IS
'Rate limiters this server has decided on: units held, reserved, spent and returned, refills, and the decisions taken';

CREATE VIEW distkit_rate_stats AS SELECT * FROM distkit_rate_stats();
COMMENT ON VIEW distkit_rate_stats IS
'Rate limiters this server has decided on (one row each): lax reservations and decision counts';

-- Instance-aware counters: each PostgreSQL server (instance) keeps its own
-- slice; the total is the sum of the slices of live instances.

CREATE FUNCTION distkit_instance_inc(key text, delta bigint DEFAULT 1, mode distkit_mode DEFAULT NULL,
                                     OUT total bigint, OUT this_instance bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_instance_inc'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_inc(text, bigint, distkit_mode) IS
'Add delta to this server''s slice of an instance-aware counter; returns the total of live slices and this slice';

CREATE FUNCTION distkit_instance_dec(key text, delta bigint DEFAULT 1, mode distkit_mode DEFAULT NULL,
                                     OUT total bigint, OUT this_instance bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_instance_dec'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_dec(text, bigint, distkit_mode) IS
'Subtract delta from this server''s slice; returns the total and this slice';

CREATE FUNCTION distkit_instance_get(key text, mode distkit_mode DEFAULT NULL,
                                     OUT total bigint, OUT this_instance bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_instance_get'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_get(text, distkit_mode) IS
'Total of the live slices of an instance-aware counter and this server''s slice';

CREATE FUNCTION distkit_instance_set(key text, value bigint,
                                     OUT total bigint, OUT this_instance bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_instance_set'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_set(text, bigint) IS
'Set the total: this slice becomes value and every other server''s slice becomes stale (new epoch)';

CREATE FUNCTION distkit_instance_set_here(key text, value bigint,
                                          OUT total bigint, OUT this_instance bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_instance_set_here'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_set_here(text, bigint) IS
'Set only this server''s slice';

CREATE FUNCTION distkit_instance_del(key text, OUT total bigint, OUT this_instance bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_instance_del'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_del(text) IS
'Remove an instance-aware counter for every server; returns the values it had';

CREATE FUNCTION distkit_instance_del_here(key text, OUT total bigint, OUT this_instance bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_instance_del_here'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_del_here(text) IS
'Remove this server''s slice of an instance-aware counter; returns the values before';

CREATE FUNCTION distkit_instance_clear()
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_instance_clear'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_clear() IS
'Remove every instance-aware counter under distkit.prefix, for every server; returns how many';
REVOKE ALL ON FUNCTION distkit_instance_clear() FROM PUBLIC;

CREATE FUNCTION distkit_instance_clear_here()
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_instance_clear_here'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instance_clear_here() IS
'Remove this server''s slices from every instance-aware counter; returns how many counters had one';
REVOKE ALL ON FUNCTION distkit_instance_clear_here() FROM PUBLIC;

CREATE FUNCTION distkit_instances(OUT instance_id uuid, OUT last_heartbeat timestamptz,
                                  OUT alive boolean, OUT is_this_server boolean,
                                  OUT instance_number int)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'distkit_instances'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_instances() IS
'The instances (PostgreSQL servers) registered in Redis, with their last heartbeat';

CREATE VIEW distkit_instances AS SELECT * FROM distkit_instances();
COMMENT ON VIEW distkit_instances IS
'The instances (PostgreSQL servers) registered in Redis, with their last heartbeat';

-- Coordination: leases with fencing tokens, leader election, semaphores.
-- Every change is one atomic Lua script on Redis's clock.  Not
-- transactional: what is acquired stays acquired when the calling
-- transaction rolls back.  Errors: 22023 for invalid parameters (ttl <= 0
-- or in months, permits <= 0, token <= 0, a malformed permit), 22004 for
-- NULL arguments.  See docs/coordination.md.

CREATE FUNCTION distkit_lease_acquire(name text, ttl interval, wait interval DEFAULT '0')
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_lease_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_lease_acquire(text, interval, interval) IS
'Acquire a lease for this session for ttl; returns its fencing token (strictly increasing per name), or NULL if another holder keeps it longer than wait';

CREATE FUNCTION distkit_lease_renew(name text, token bigint, ttl interval)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_lease_renew'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_lease_renew(text, bigint, interval) IS
'Extend this session''s lease to ttl from now; false if it was lost';

CREATE FUNCTION distkit_lease_release(name text, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_lease_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_lease_release(text, bigint) IS
'Release this session''s lease held with token; false if it does not hold it so';

CREATE FUNCTION distkit_lease_holder(name text)
RETURNS TABLE(holder text, token bigint, expires_in interval)
AS 'MODULE_PATHNAME', 'distkit_lease_holder'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;
COMMENT ON FUNCTION distkit_lease_holder(text) IS
'Who holds a lease ("<instance id>/<database>/<pid>"), its token and remaining time; no row when free';

CREATE FUNCTION distkit_leader_acquire(name text, ttl interval DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_leader_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_leader_acquire(text, interval) IS
'Make this server the leader of name if nobody else is; the worker renews it while the server lives. A NULL ttl keeps the ttl this server leads with (10 seconds for a new leadership)';

CREATE FUNCTION distkit_is_leader(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_is_leader'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION distkit_is_leader(text) IS
'Whether this server leads name (shared memory only, no Redis round trip)';

CREATE FUNCTION distkit_leader_release(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_leader_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_leader_release(text) IS
'Stop leading name at once; true if this server held the leadership';

CREATE FUNCTION distkit_leader_holder(name text)
RETURNS TABLE(holder text, term bigint, expires_in interval)
AS 'MODULE_PATHNAME', 'distkit_leader_holder'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;
COMMENT ON FUNCTION distkit_leader_holder(text) IS
'Which server (instance id) leads name, its term and remaining time; no row when nobody does';

CREATE FUNCTION distkit_leaders(
    OUT name text,
    OUT term bigint,
    OUT ttl interval,
    OUT is_leader boolean,
    OUT valid_for interval,
    OUT last_renewed timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'distkit_leaders'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION distkit_leaders() IS
'The leaderships this server holds and renews';

CREATE VIEW distkit_leaders AS SELECT * FROM distkit_leaders();
COMMENT ON VIEW distkit_leaders IS
'The leaderships this server holds and renews, and for how long it may believe it leads';

CREATE FUNCTION distkit_semaphore_acquire(name text, permits int, ttl interval,
                                          wait interval DEFAULT '0')
RETURNS text
AS 'MODULE_PATHNAME', 'distkit_semaphore_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_semaphore_acquire(text, int, interval, interval) IS
'A permit id if fewer than permits are held across the fleet (now or within wait), else NULL; it expires after ttl';

CREATE FUNCTION distkit_semaphore_renew(name text, permit text, ttl interval)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_semaphore_renew'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_semaphore_renew(text, text, interval) IS
'Extend a permit to ttl from now; false if it had expired or was released';

CREATE FUNCTION distkit_semaphore_release(name text, permit text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_semaphore_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_semaphore_release(text, text) IS
'Give a permit back; false if it had expired or was not held';

CREATE FUNCTION distkit_semaphore_count(name text)
RETURNS int
AS 'MODULE_PATHNAME', 'distkit_semaphore_count'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_semaphore_count(text) IS
'How many permits of a semaphore are held now (unexpired)';

-- Fleet state for stored procedures (docs/fleet-state.md): a cache with
-- TTL, idempotency keys and circuit breakers, shared by every server
-- through Redis.  Not transactional: what a call writes stays written when
-- the calling transaction rolls back.  NULL arguments raise 22004 unless
-- documented otherwise (a NULL ttl means no expiry).

-- Cache.  A value is one Redis string: jsonb as its text form, text as its
-- bytes, bytea as is; at most 512 kB (54000 beyond).  ttl: a positive fixed
-- duration, rounded up to a millisecond; NULL: no expiry.

CREATE FUNCTION distkit_cache_set(key text, value jsonb, ttl interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'distkit_cache_set'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_set(text, jsonb, interval) IS
'Cache a jsonb value for ttl (NULL: no expiry), replacing any value and expiry';

CREATE FUNCTION distkit_cache_set_text(key text, value text, ttl interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'distkit_cache_set_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_set_text(text, text, interval) IS
'Cache a text value for ttl (NULL: no expiry), replacing any value and expiry';

CREATE FUNCTION distkit_cache_set_bytea(key text, value bytea, ttl interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'distkit_cache_set_bytea'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_set_bytea(text, bytea, interval) IS
'Cache a bytea value for ttl (NULL: no expiry), replacing any value and expiry';

CREATE FUNCTION distkit_cache_add(key text, value jsonb, ttl interval DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_cache_add'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_add(text, jsonb, interval) IS
'Cache a jsonb value only if none is cached; true if stored';

CREATE FUNCTION distkit_cache_add_text(key text, value text, ttl interval DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_cache_add_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_add_text(text, text, interval) IS
'Cache a text value only if none is cached; true if stored';

CREATE FUNCTION distkit_cache_add_bytea(key text, value bytea, ttl interval DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_cache_add_bytea'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_add_bytea(text, bytea, interval) IS
'Cache a bytea value only if none is cached; true if stored';

CREATE FUNCTION distkit_cache_get(key text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'distkit_cache_get'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_get(text) IS
'The cached value as jsonb; NULL when absent or expired';

CREATE FUNCTION distkit_cache_get_text(key text)
RETURNS text
AS 'MODULE_PATHNAME', 'distkit_cache_get_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_get_text(text) IS
'The cached value as text; NULL when absent or expired';

CREATE FUNCTION distkit_cache_get_bytea(key text)
RETURNS bytea
AS 'MODULE_PATHNAME', 'distkit_cache_get_bytea'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_get_bytea(text) IS
'The cached value''s bytes; NULL when absent or expired';

CREATE FUNCTION distkit_cache_delete(key text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_cache_delete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_delete(text) IS
'Remove a cached value; true if there was one';

CREATE FUNCTION distkit_cache_exists(key text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_cache_exists'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_exists(text) IS
'True if a value is cached (and not expired)';

CREATE FUNCTION distkit_cache_ttl(key text)
RETURNS interval
AS 'MODULE_PATHNAME', 'distkit_cache_ttl'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_ttl(text) IS
'Time left before the cached value expires (ms); NULL when absent or without expiry';

CREATE FUNCTION distkit_cache_clear()
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_cache_clear'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_cache_clear() IS
'Delete every cached value under distkit.prefix; returns how many';
-- Wipes every server's cache: not for everyone.
REVOKE ALL ON FUNCTION distkit_cache_clear() FROM PUBLIC;

-- Idempotency keys.  A claim in progress lasts distkit.idempotency_lease
-- unless its holder completes or abandons it; a result is kept for ttl
-- after completion (NULL: for ever).

CREATE FUNCTION distkit_idempotency_begin(key text, ttl interval DEFAULT '24 hours',
                                          OUT state text, OUT result jsonb)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_idempotency_begin'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_idempotency_begin(text, interval) IS
'Claim an idempotency key: started (this caller holds it), in_progress (another caller does) or completed (with its result)';

CREATE FUNCTION distkit_idempotency_complete(key text, result jsonb)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_idempotency_complete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_idempotency_complete(text, jsonb) IS
'Store the result of this session''s claim and mark it completed; true if stored';

CREATE FUNCTION distkit_idempotency_abandon(key text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_idempotency_abandon'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_idempotency_abandon(text) IS
'Give up this session''s claim so that a retry can start again; true if it held it';

-- Circuit breakers (resilience4j's time-based window, shared by the fleet):
-- closed, open, half_open or forced_open; transitions in one Lua script on
-- Redis's clock.

CREATE FUNCTION distkit_breaker_configure(name text,
                                          failure_rate_threshold float8 DEFAULT 50,
                                          minimum_calls int DEFAULT 20,
                                          sliding_window interval DEFAULT '60 seconds',
                                          open_for interval DEFAULT '30 seconds',
                                          half_open_calls int DEFAULT 3,
                                          slow_call_threshold interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'distkit_breaker_configure'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_breaker_configure(text, float8, int, interval, interval, int, interval) IS
'Configure a circuit breaker for every server (unconfigured breakers use these defaults)';

CREATE FUNCTION distkit_breaker_allow(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_breaker_allow'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_breaker_allow(text) IS
'True if a call may go ahead: closed, or a free half-open trial slot';

CREATE FUNCTION distkit_breaker_record(name text, success boolean, duration interval DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'distkit_breaker_record'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_breaker_record(text, boolean, interval) IS
'Record the outcome (and duration) of a call; returns the state after recording';

CREATE FUNCTION distkit_breaker_state(name text,
                                      OUT state text, OUT failure_rate float8, OUT calls bigint,
                                      OUT retry_after interval, OUT slow_call_rate float8)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_breaker_state'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_breaker_state(text) IS
'State of a circuit breaker, failure and slow-call rates (percent) and calls in its window, and when calls may be tried again';

CREATE FUNCTION distkit_breaker_reset(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_breaker_reset'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_breaker_reset(text) IS
'Close a circuit breaker and empty its window (its configuration is kept); true if it had any state';

CREATE FUNCTION distkit_breaker_trip(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'distkit_breaker_trip'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_breaker_trip(text) IS
'Force a circuit breaker open until distkit_breaker_reset (a kill switch)';

-- Call metrics (RED: rate, errors, duration), per operation and mode, of
-- this server since its start or the last distkit_stat_calls_reset();
-- collected in shared memory (needs shared_preload_libraries), switched
-- off with distkit.track_calls = off.  See docs/monitoring.md.

CREATE FUNCTION distkit_stat_calls(
    OUT operation text,
    OUT mode text,
    OUT calls bigint,
    OUT errors_connection bigint,
    OUT errors_data bigint,
    OUT errors_privilege bigint,
    OUT errors_resources bigint,
    OUT errors_operator bigint,
    OUT errors_other bigint,
    OUT round_trips bigint,
    OUT total_time double precision,
    OUT mean_time double precision,
    OUT histogram bigint[],
    OUT p50 double precision,
    OUT p95 double precision,
    OUT p99 double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'distkit_stat_calls'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION distkit_stat_calls() IS
'Calls, errors by SQLSTATE class, Redis round trips and latencies (ms) of distkit''s operations on this server';

CREATE VIEW distkit_stat_calls AS SELECT * FROM distkit_stat_calls();
COMMENT ON VIEW distkit_stat_calls IS
'Calls, errors by SQLSTATE class, Redis round trips and latencies (ms) of distkit''s operations on this server, one row per operation and mode';

CREATE FUNCTION distkit_stat_calls_buckets(OUT bucket int, OUT le double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'distkit_stat_calls_buckets'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION distkit_stat_calls_buckets() IS
'Buckets of distkit_stat_calls.histogram: position in the array and upper bound in ms (inclusive)';

CREATE VIEW distkit_stat_calls_buckets AS SELECT * FROM distkit_stat_calls_buckets();
COMMENT ON VIEW distkit_stat_calls_buckets IS
'Buckets of distkit_stat_calls.histogram: position in the array and upper bound in ms (inclusive; the last is unbounded)';

CREATE FUNCTION distkit_stat_calls_reset()
RETURNS void
AS 'MODULE_PATHNAME', 'distkit_stat_calls_reset'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_stat_calls_reset() IS
'Start distkit_stat_calls from zero again (for every backend of this server)';
REVOKE ALL ON FUNCTION distkit_stat_calls_reset() FROM PUBLIC;
-- monitoring roles (e.g. the Prometheus exporter's) read the views
GRANT SELECT ON distkit_stat_calls, distkit_stat_calls_buckets TO pg_monitor;

-- Queues on Redis Streams (docs/queues.md).  A queue is one stream; its
-- entries have the fields payload (JSON text), origin and, when shipped
-- from the outbox, outbox_id.  distkit_queue_send is immediate and not
-- transactional; distkit_outbox_send is transactional and durable.

CREATE FUNCTION distkit_queue_send(queue text, payload jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'distkit_queue_send'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_queue_send(text, jsonb) IS
'Append a message to a queue now (not transactional); returns its stream entry id';

CREATE FUNCTION distkit_queue_read(queue text, grp text, consumer text, count int DEFAULT 1,
                                   visibility interval DEFAULT '30 seconds')
RETURNS TABLE(id text, payload jsonb, deliveries int)
AS 'MODULE_PATHNAME', 'distkit_queue_read'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_queue_read(text, text, text, int, interval) IS
'Take up to count messages for a consumer of a group: unacknowledged ones older than visibility first, then new ones';

CREATE FUNCTION distkit_queue_ack(queue text, grp text, id text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_queue_ack'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_queue_ack(text, text, text) IS
'Acknowledge a message read by a group; true if it was pending';

CREATE FUNCTION distkit_queue_pending(queue text, grp text)
RETURNS TABLE(consumer text, pending bigint, oldest interval)
AS 'MODULE_PATHNAME', 'distkit_queue_pending'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_queue_pending(text, text) IS
'Messages delivered to a group and not acknowledged, per consumer, and how long ago its oldest one was delivered';

CREATE FUNCTION distkit_queue_length(queue text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_queue_length'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_queue_length(text) IS
'Entries in a queue''s stream (acknowledged or not, until trimmed)';

CREATE FUNCTION distkit_queue_purge(queue text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_queue_purge'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_queue_purge(text) IS
'Delete a queue''s stream, its groups and its dead letters for every server; returns the Redis keys deleted';
REVOKE ALL ON FUNCTION distkit_queue_purge(text) FROM PUBLIC;

-- The transactional outbox: rows written in the caller's transaction,
-- shipped to their queue by this database's shipper and deleted.
CREATE TABLE distkit_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    payload jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE distkit_outbox IS
'Messages sent with distkit_outbox_send and not yet shipped to Redis';
SELECT pg_catalog.pg_extension_config_dump('distkit_outbox', '');
SELECT pg_catalog.pg_extension_config_dump('distkit_outbox_id_seq', '');
REVOKE ALL ON distkit_outbox FROM PUBLIC;
-- distkit_outbox_send runs with the caller's rights: it inserts and reads the id
GRANT INSERT (queue, payload), SELECT (id) ON distkit_outbox TO PUBLIC;

CREATE FUNCTION distkit_outbox_send(queue text, payload jsonb)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distkit_outbox_send'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_outbox_send(text, jsonb) IS
'Send a message to a queue if and when the calling transaction commits, exactly once; returns its outbox id';

CREATE VIEW distkit_outbox_backlog AS
    SELECT queue, count(*) AS messages, min(created) AS oldest,
           now() - min(created) AS oldest_age
      FROM distkit_outbox GROUP BY queue;
COMMENT ON VIEW distkit_outbox_backlog IS
'Messages of this database waiting to be shipped to Redis, per queue';
GRANT SELECT ON distkit_outbox_backlog TO pg_monitor;
