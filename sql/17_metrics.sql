-- Call metrics (distkit_stat_calls): exact counts after known calls, the
-- strict/lax split, errors per SQLSTATE class, Redis round trips, the
-- histogram and its percentiles, distkit.track_calls, reset.
SELECT distkit_flush() >= 0 AS flushed;

-- every operation and mode has a row, also before any call
SELECT operation, mode FROM distkit_stat_calls ORDER BY operation, mode;
SELECT * FROM distkit_stat_calls_buckets;

-- warm up the connection and the scripts used below, then start from zero
SELECT distkit_del('m:a') >= 0 AS warm, distkit_inc('m:a', 0) = 0 AS warm,
       distkit_inc('m:a', 0, 'lax') = 0 AS warm, distkit_get('m:a') = 0 AS warm;
SELECT distkit_stat_calls_reset();
SELECT count(*) AS rows_with_calls FROM distkit_stat_calls
WHERE calls > 0 AND operation <> 'flush/batch';

-- 3 strict and 4 lax increments (the mode argument, or distkit.default_mode
-- when it is NULL), 2 lax reads, 1 strict read
SELECT distkit_inc('m:a'), distkit_inc('m:a', 1, 'strict'), distkit_inc('m:a', 1, NULL);
SELECT distkit_inc('m:a', 1, 'lax'), distkit_inc('m:a', 1, 'lax');
SET distkit.default_mode = lax;
SELECT distkit_inc('m:a'), distkit_inc('m:a', 1, NULL);
SELECT distkit_get('m:a'), distkit_get('m:a');
RESET distkit.default_mode;
SELECT distkit_flush() >= 0 AS flushed;
SELECT distkit_get('m:a');
-- a function without a mode: one row with mode NULL
SELECT distkit_rate_allow('m:r', 10, '1 minute');

SELECT operation, mode, calls, errors_connection + errors_data + errors_privilege
       + errors_resources + errors_operator + errors_other AS errors
FROM distkit_stat_calls WHERE calls > 0 AND operation <> 'flush/batch'
ORDER BY operation, mode;
-- a strict increment is one round trip, a lax one none
SELECT operation, mode, round_trips FROM distkit_stat_calls
WHERE operation = 'counter/inc' ORDER BY mode;

-- durations: total = mean x calls, the histogram counts every call,
-- percentiles are ordered and within the buckets' range
SELECT operation, mode,
       total_time > 0 AS timed,
       abs(mean_time * calls - total_time) < 1e-6 AS mean_ok,
       (SELECT sum(h) FROM unnest(histogram) h) = calls AS histogram_ok,
       cardinality(histogram) = (SELECT count(*) FROM distkit_stat_calls_buckets) AS buckets_ok,
       p50 > 0 AND p50 <= p95 AND p95 <= p99 AS percentiles_ok
FROM distkit_stat_calls WHERE calls > 0 AND operation <> 'flush/batch'
ORDER BY operation, mode;
SELECT count(*) AS untouched_rows_are_null
FROM distkit_stat_calls
WHERE operation <> 'flush/batch' AND calls = 0 AND total_time = 0 AND mean_time IS NULL AND p50 IS NULL AND p99 IS NULL;

-- failed calls, one per SQLSTATE class: 22 (NULL key), 42 (a Redis key of
-- another type), 54 counts as other (a value over 512 kB), 57 (cancelled
-- by statement_timeout while waiting for a lease), 08 (Redis unreachable),
-- 53 (Redis out of memory)
SELECT distkit_stat_calls_reset();
SELECT dk_error($$SELECT distkit_inc(NULL)$$);
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:c:{m:alien}' f 1`
SELECT dk_error($$SELECT distkit_inc('m:alien')$$);
SELECT dk_error($$SELECT distkit_cache_set_text('m:big', repeat('x', 600000))$$);
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:l:{m:held}' owner someone token 41 holder elsewhere`
SET statement_timeout = '300ms';
SELECT distkit_lease_acquire('m:held', '10 s', '1 min');
RESET statement_timeout;
-- a connection error (08): Redis paused, a short command timeout
SET distkit.command_timeout = '200ms';
\! "$DISTKIT_REDIS_CTL" pause
SELECT left(dk_error($$SELECT distkit_get('m:a')$$), 5) AS sqlstate;
\! "$DISTKIT_REDIS_CTL" resume
RESET distkit.command_timeout;
\! sleep 0.2
SELECT distkit_get('m:a');
\! for p in $("$DISTKIT_REDIS_CTL" ports | tr , ' '); do "$DISTKIT_REDIS_CTL" node-cli "$p" CONFIG SET maxmemory 1 >/dev/null; done
SELECT dk_error($$SELECT distkit_set('m:a', 1)$$);
\! for p in $("$DISTKIT_REDIS_CTL" ports | tr , ' '); do "$DISTKIT_REDIS_CTL" node-cli "$p" CONFIG SET maxmemory 0 >/dev/null; done
SELECT distkit_set('m:a', 2);
SELECT operation, mode, calls, errors_connection, errors_data, errors_privilege,
       errors_resources, errors_operator, errors_other
FROM distkit_stat_calls WHERE calls > 0 AND operation <> 'flush/batch'
ORDER BY operation, mode;

-- distkit.track_calls = off: not counted
SELECT distkit_stat_calls_reset();
SET distkit.track_calls = off;
SELECT distkit_inc('m:a');
RESET distkit.track_calls;
SELECT distkit_inc('m:a');
SELECT operation, mode, calls FROM distkit_stat_calls
WHERE calls > 0 AND operation <> 'flush/batch';

-- the worker's flush batches
-- (the worker may flush the increment before distkit_flush is called, so
-- what shows it reached Redis is a strict read, not distkit_flush's count)
SELECT distkit_inc('m:a', 1, 'lax');
SELECT distkit_flush() >= 0 AS waited;
SELECT distkit_get('m:a', 'strict') AS in_redis;
SELECT calls >= 1 AS batches, errors_connection + errors_other = 0 AS no_errors,
       round_trips >= calls AS round_trips
FROM distkit_stat_calls WHERE operation = 'flush/batch';

-- the reset is revoked from PUBLIC; the views are readable by pg_monitor
CREATE ROLE dk_metrics_user;
SET ROLE dk_metrics_user;
SELECT dk_error($$SELECT distkit_stat_calls_reset()$$);
SELECT dk_error($$SELECT count(*) FROM distkit_stat_calls$$);
RESET ROLE;
GRANT pg_monitor TO dk_metrics_user;
SET ROLE dk_metrics_user;
SELECT count(*) AS rows FROM distkit_stat_calls;
SELECT count(*) AS buckets FROM distkit_stat_calls_buckets;
RESET ROLE;
DROP ROLE dk_metrics_user;

SELECT distkit_del('m:a') >= 0 AS cleaned;
\set raw `"$DISTKIT_REDIS_CTL" cli DEL 'distkit:c:{m:alien}'`
\set raw `"$DISTKIT_REDIS_CTL" cli DEL 'distkit:l:{m:held}'`
