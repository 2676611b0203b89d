-- distkit 0.1.0 -> 0.2.0.  Every SQL change after 0.1.0 goes here (and into
-- sql/distkit.sql); test/t/022_upgrade.pl checks that 0.1.0 + this script
-- gives exactly the objects of a fresh CREATE EXTENSION.

\echo Use "ALTER EXTENSION distkit UPDATE TO '0.2.0'" to load this file. \quit

-- distkit_stats gains seed_reads and evictions (lax views, issue 20): the
-- view depends on the function, so both are made again.
DROP VIEW distkit_stats;
DROP FUNCTION distkit_stats();
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

-- distkit_breaker_configure: "window" (a reserved word, which had to be
-- quoted in named-argument calls) is now sliding_window.  A parameter
-- cannot be renamed in place.
DROP FUNCTION distkit_breaker_configure(text, float8, int, interval, interval, int, interval);
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

-- distkit_leader_acquire without a ttl keeps the ttl this server leads the
-- name with (it used to shorten a 30 s leadership to the 10 s default).
CREATE OR REPLACE FUNCTION distkit_leader_acquire(name text, ttl interval DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'distkit_leader_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION distkit_leader_acquire(text, interval) IS
'Make this server the leader of name if nobody else is; the worker renews it while the server lives. A NULL ttl keeps the ttl this server leads with (10 seconds for a new leadership)';
