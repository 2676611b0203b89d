-- distkit 0.1.0 -> 0.2.0.  Every SQL change after 0.1.0 goes here (and into
-- sql/distkit.sql); test/t/022_upgrade.pl checks that 0.1.0 + this script
-- gives exactly the objects of a fresh CREATE EXTENSION.

\echo Use "ALTER EXTENSION distkit UPDATE TO '0.2.0'" to load this file. \quit

-- distkit_stats gains flush_calls and flush_records (grouped lax flushes,
-- issue 15), seed_reads and evictions (lax views, issue 20): the
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

-- Rate limiters gain on_error, shadow and mode (lax rate limiting, issue
-- 17), and distkit_rate_check two columns: new signatures, so the old
-- functions go.
DROP FUNCTION distkit_rate_allow(text, bigint, interval, bigint, bigint);
DROP FUNCTION distkit_rate_check(text, bigint, interval, bigint, bigint);
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

-- Queues and the transactional outbox (issue 18), new in 0.2.0.
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
