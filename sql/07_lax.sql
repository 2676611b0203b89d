-- Lax counters: shared-memory buffer, flusher worker, strict writes ordered
-- after buffered increments.
SELECT distkit_clear() >= 0 AS cleared;
SELECT distkit_flush() >= 0 AS flushed;

-- the worker runs, with its own backend_type
SELECT backend_type, application_name FROM pg_stat_activity WHERE backend_type = 'distkit worker';

-- 100000 lax increments: this server's view is exact at once; after
-- distkit_flush Redis holds exactly the same total
SELECT count(distkit_inc('lax:k', 1, 'lax')) FROM generate_series(1, 100000);
SELECT distkit_get('lax:k', 'lax');
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT distkit_get('lax:k', 'strict');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{lax:k}'`
SELECT :'raw' AS in_redis;
-- no exactly-once record per counter: one per (instance, group of keys)
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:cf:{lax:k}'`
SELECT :'raw' AS per_key_record;
SELECT flush_calls >= 1 AS script_called, flush_records >= 1 AS has_records,
       flush_calls <= keys_flushed AS keys_per_call FROM distkit_stats;
SELECT instance_id::text = (SELECT instance_id::text FROM distkit_stats) AS same_id
FROM distkit_stats;

-- returns are this server's view: known total + pending
SELECT distkit_inc('lax:k', 5, 'lax'), distkit_dec('lax:k', 2, 'lax'), distkit_inc('lax:k', -3, 'lax');
SELECT distkit_get('lax:k', 'lax');
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT distkit_get('lax:k', 'strict');
-- nothing buffered: distkit_flush returns 0 at once
SELECT distkit_flush();

-- default_mode = lax applies to calls without a mode; each of the three
-- keys is flushed exactly once (by the worker, or by distkit_flush)
SELECT keys_flushed AS flushed_before, strict_fallbacks AS fallbacks_before FROM distkit_stats \gset
SET distkit.default_mode = 'lax';
SELECT distkit_inc('lax:default'), distkit_inc('lax:b1'), distkit_dec('lax:b2');
RESET distkit.default_mode;
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT keys_flushed - :flushed_before AS keys_flushed, strict_fallbacks - :fallbacks_before AS fallbacks
FROM distkit_stats;
SELECT * FROM distkit_get_many(ARRAY['lax:default', 'lax:b1', 'lax:b2'], 'strict');

-- a lax read of a key never counted here reads Redis once and caches it
SELECT distkit_set('lax:read', 41);
SELECT distkit_get('lax:read', 'lax');
SELECT * FROM distkit_get_many(ARRAY['lax:read', 'lax:k', 'lax:nothing'], 'lax');
-- another program changes the value: a lax read sees it once the cached
-- total is older than distkit.flush_interval
\set raw `"$DISTKIT_REDIS_CTL" cli INCRBY 'distkit:c:{lax:read}' 100`
\! sleep 0.1
SELECT distkit_get('lax:read', 'lax');

-- strict writes are ordered after this server's buffered increments:
-- del returns a total that includes them, and nothing resurrects the key
SELECT distkit_inc('lax:del', 7, 'lax');
SELECT distkit_del('lax:del');
SELECT distkit_flush();
SELECT distkit_get('lax:del', 'strict'), distkit_get('lax:del', 'lax');
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:c:{lax:del}'`
SELECT :'raw' AS del_exists;
-- set overrides what was buffered before it
SELECT distkit_inc('lax:set', 7, 'lax');
SELECT distkit_set('lax:set', 100);
SELECT distkit_inc('lax:set', 1, 'lax');
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT distkit_get('lax:set', 'strict');
-- inc_if sees buffered increments
SELECT distkit_inc('lax:stock', 3, 'lax');
SELECT * FROM distkit_inc_if('lax:stock', -1, '>=', 3);
SELECT * FROM distkit_inc_if('lax:stock', -1, '>=', 3);
SELECT distkit_get('lax:stock', 'lax'), distkit_get('lax:stock', 'strict');
-- clear flushes first, then removes everything, buffered keys included
SELECT distkit_inc('lax:clear', 1, 'lax');
SELECT distkit_clear() > 0 AS cleared_some;
SELECT distkit_flush();
SELECT distkit_get('lax:clear', 'strict'), distkit_get('lax:clear', 'lax'), distkit_get('lax:k', 'lax');

-- keys too long for the buffer are counted strictly, and the fallback is counted
SELECT strict_fallbacks AS fallbacks_before FROM distkit_stats \gset
SELECT distkit_inc(repeat('x', 200), 1, 'lax');
SELECT distkit_inc(repeat('x', 200), 1, 'lax');
SELECT strict_fallbacks - :fallbacks_before AS new_fallbacks FROM distkit_stats;
SELECT distkit_get(repeat('x', 200), 'lax');

-- other prefixes are buffered separately and flushed under their own prefix
SET distkit.prefix = 'laxother';
SELECT distkit_inc('lax:k', 2, 'lax');
SELECT distkit_flush() IS NOT NULL AS flushed;
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'laxother:c:{lax:k}'`
SELECT :'raw' AS other_prefix;
SELECT distkit_clear();
RESET distkit.prefix;

-- errors
SELECT dk_error($$SELECT distkit_inc('', 1, 'lax')$$);
SELECT dk_error($$SELECT distkit_inc(NULL, 1, 'lax')$$);
SELECT dk_error($$SELECT distkit_inc('lax:k', NULL, 'lax')$$);
SELECT dk_error($$SELECT distkit_flush(NULL)$$);
SELECT dk_error($$SELECT distkit_flush('0')$$);
SELECT dk_error($$SELECT distkit_flush('-1 s')$$);
SELECT dk_error($$SELECT distkit_flush('1 month')$$);
-- positive but below the 1 ms the timeout is counted in, and above INT_MAX ms:
-- the hint says the real bounds
SELECT dk_error($$SELECT distkit_flush('1 microsecond')$$);
SELECT dk_error($$SELECT distkit_flush('25 days')$$);
-- a timeout beyond 2^63 microseconds is refused, not wrapped around to a
-- valid one ('213503983 days' used to become a wait of 16 hours)
SET statement_timeout = '5s';
SELECT dk_error($$SELECT distkit_flush('213503983 days')$$);
SELECT dk_error($$SELECT distkit_flush('106751991 days 14454775807 microseconds')$$);
RESET statement_timeout;
SELECT distkit_set('lax:max', 9223372036854775806);
SELECT distkit_get('lax:max', 'lax');
SELECT distkit_inc('lax:max', 1, 'lax');
SELECT dk_error($$SELECT distkit_inc('lax:max', 1, 'lax')$$);
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT distkit_get('lax:max', 'strict');

-- the first lax touch of a key this server holds no total for reads the
-- total from Redis once, so the value returned and the overflow check rest
-- on it (whoever wrote it: this server strictly, or another program)
SELECT distkit_set('lax:seed', 100);
SELECT distkit_inc('lax:seed', 1, 'lax') AS seeded;
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:c:{lax:seed2}' 41`
SELECT distkit_inc('lax:seed2', 1, 'lax') AS seeded;
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT distkit_get('lax:seed', 'strict') AS seed, distkit_get('lax:seed2', 'strict') AS seed2;
-- an increment that would overflow the real total is refused at the call,
-- never acknowledged and then dropped by the flush
SELECT dropped_deltas AS dropped_before FROM distkit_stats \gset
SELECT distkit_set('lax:ov', 9223372036854775806);
SELECT dk_error($$SELECT distkit_inc('lax:ov', 2, 'lax')$$);
SELECT distkit_inc('lax:ov', 1, 'lax') AS at_max;
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT distkit_get('lax:ov', 'strict') AS in_redis,
       (SELECT dropped_deltas FROM distkit_stats) - :dropped_before AS dropped;
-- a key that holds no integer is refused at the call too
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:c:{lax:notint}' 'abc'`
SELECT dk_error($$SELECT distkit_inc('lax:notint', 1, 'lax')$$);
\set raw `"$DISTKIT_REDIS_CTL" cli DEL 'distkit:c:{lax:notint}'`
SELECT distkit_inc('lax:notint', 1, 'lax') AS after_del;

-- Redis down: lax increments keep succeeding; flush times out with a
-- clear error; once Redis is back everything arrives exactly once
SELECT distkit_set('lax:outage', 0);
SELECT distkit_get('lax:outage', 'lax');
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:c:{lax:outage-new}' 10`
\! "$DISTKIT_REDIS_CTL" stop
SELECT count(distkit_inc('lax:outage', 1, 'lax')) FROM generate_series(1, 1000);
-- a key this server holds no total for is counted too (lax counting needs
-- no Redis), but its total cannot be read: the view is this server's
-- increments only, until Redis is back
SELECT distkit_inc('lax:outage-new', 3, 'lax') AS without_total;
-- a lax read answers with this server's view while Redis is unreachable
-- (the key's total was read before); a strict read fails
\! sleep 0.05
SELECT distkit_get('lax:outage', 'lax');
SELECT * FROM distkit_get_many(ARRAY['lax:outage', 'lax:outage'], 'lax');
SELECT dk_error($$SELECT distkit_get('lax:outage', 'strict')$$);
-- a key this server never read has no view to offer
SELECT dk_error($$SELECT distkit_get('lax:never-read', 'lax')$$);
SELECT dk_error($$SELECT distkit_flush('300 ms')$$);
SELECT redis_connected, pending_keys, pending_delta, last_error LIKE 'could not connect to Redis%' AS error_says_why
FROM distkit_stats;
\! "$DISTKIT_REDIS_CTL" start
-- (the flusher may already have caught up on its own: a Redis Cluster takes
-- about 2 s to start; the totals below are what matters)
SELECT distkit_flush('10 s') IS NOT NULL AS flushed;
SELECT distkit_get('lax:outage', 'strict');
SELECT distkit_get('lax:outage-new', 'strict') AS strict, distkit_get('lax:outage-new', 'lax') AS lax;
SELECT redis_connected, pending_keys, pending_delta FROM distkit_stats;

-- a flush batch of many keys (the batch array grows while the flusher takes
-- it): every increment reaches its own key
SELECT count(distkit_inc('lax:many:' || g, 1, 'lax')) FROM generate_series(1, 5000) g;
SELECT distkit_flush('10 s') IS NOT NULL AS flushed;
SELECT sum(distkit_get('lax:many:' || g, 'strict')) AS total, count(*) FILTER (WHERE distkit_get('lax:many:' || g, 'strict') <> 1) AS wrong
FROM generate_series(1, 5000) g;

-- the stats view
SELECT buffer_capacity, buffer_used > 0 AS used, flushes > 0 AS flushed, keys_flushed > 0 AS keys,
       flush_errors > 0 AS had_errors, dropped_deltas, last_flush IS NOT NULL AS has_last_flush
FROM distkit_stats;
SELECT distkit_clear() > 0 AS cleaned;
