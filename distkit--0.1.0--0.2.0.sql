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

-- distkit_instances gains instance_number (fleet scale, issue 15): the view
-- depends on the function, so both are made again.
DROP VIEW distkit_instances;
DROP FUNCTION distkit_instances();
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
