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
    OUT flush_errors bigint,
    OUT strict_fallbacks bigint,
    OUT dropped_deltas bigint,
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
                                   burst bigint DEFAULT NULL, cost bigint DEFAULT 1)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_rate_allow'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_rate_allow(text, bigint, interval, bigint, bigint) IS
'True if cost units may pass now under rate per period (burst at once), and then consumes them';

CREATE FUNCTION distkit_rate_check(key text, rate bigint, per interval DEFAULT '1 second',
                                   burst bigint DEFAULT NULL, cost bigint DEFAULT 1,
                                   OUT allowed boolean, OUT remaining bigint,
                                   OUT retry_after interval, OUT reset_after interval)
RETURNS record
AS 'MODULE_PATHNAME', 'distkit_rate_check'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_rate_check(text, bigint, interval, bigint, bigint) IS
'Like distkit_rate_allow, with remaining units, retry_after (NULL when allowed) and reset_after (time until full)';

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
