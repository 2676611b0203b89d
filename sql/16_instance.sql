-- Instance-aware counters on one server (multi-server behaviour: test/t/011_instance.pl).
SELECT distkit_instance_clear() >= 0 AS cleared;
-- this server is registered and alive (the worker's first heartbeat)
SELECT count(*) AS registered, bool_and(alive) AS alive FROM distkit_instances WHERE is_this_server;
SELECT (SELECT instance_id FROM distkit_instances WHERE is_this_server) = instance_id AS same_id
FROM distkit_stats;

SELECT * FROM distkit_instance_inc('inst:a');
SELECT * FROM distkit_instance_inc('inst:a', 41);
SELECT * FROM distkit_instance_dec('inst:a', 2);
SELECT * FROM distkit_instance_get('inst:a');
SELECT * FROM distkit_instance_get('inst:missing');
-- the hash in Redis: epoch-tagged slices of this instance
\set raw `"$DISTKIT_REDIS_CTL" cli HLEN 'distkit:i:{inst:a}'`
SELECT :'raw' AS fields;
-- instance-aware counters and simple counters of the same name never collide
SELECT distkit_inc('inst:a', 5), (distkit_instance_get('inst:a')).total;

-- set: the total becomes the value (a new epoch); set_here: only our slice
SELECT * FROM distkit_instance_set('inst:a', 100);
SELECT * FROM distkit_instance_inc('inst:a', 1);
SELECT * FROM distkit_instance_set_here('inst:a', 7);
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:i:{inst:a}' E`
SELECT :'raw' AS epoch;

-- another instance (registered by test/fake-instance.sh as its worker
-- would, then stopped cleanly) and its slice, written directly in Redis
-- (L dropped, so the cached sum is recomputed): it counts only while that
-- instance is live and its slice belongs to the current epoch
\set fake `echo 00000000-0000-4000-8000-000000000001 | "$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit beat 60000`
\set fake `echo 00000000-0000-4000-8000-000000000001 | "$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit leave 60000`
\set fake `"$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit slice 00000000-0000-4000-8000-000000000001 inst:a 50`
\! sleep 1.3
SELECT * FROM distkit_instance_get('inst:a');
\set fake `echo 00000000-0000-4000-8000-000000000001 | "$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit beat 60000`
\set raw `"$DISTKIT_REDIS_CTL" cli ZADD 'distkit:reg:{instances}:alive' 99999999999999 00000000-0000-4000-8000-000000000001`
\! sleep 1.3
SELECT * FROM distkit_instance_get('inst:a');
-- (this server and the fake one; servers of earlier tests may be listed too)
SELECT count(*) AS instances, count(*) FILTER (WHERE alive) AS alive,
       count(DISTINCT instance_number) AS numbers FROM distkit_instances
WHERE is_this_server OR instance_id = '00000000-0000-4000-8000-000000000001';
SELECT count(DISTINCT instance_number) = count(*) AS numbers_distinct FROM distkit_instances;
-- del_here removes only our slice; the other slice stays
SELECT * FROM distkit_instance_del_here('inst:a');
SELECT * FROM distkit_instance_get('inst:a');
-- set makes the other slice stale: it stops counting, and does not come back
SELECT * FROM distkit_instance_set('inst:a', 10);
SELECT * FROM distkit_instance_get('inst:a');
-- the other instance leaves: nothing changes (its slice was stale)
\set fake `echo 00000000-0000-4000-8000-000000000001 | "$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit leave 60000`
\! sleep 1.3
SELECT * FROM distkit_instance_get('inst:a');
-- del removes the counter for everybody and returns what it had
SELECT * FROM distkit_instance_del('inst:a');
SELECT * FROM distkit_instance_get('inst:a');
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:i:{inst:a}'`
SELECT :'raw' AS exists_after_del;

-- lax mode: buffered, flushed exactly once into this instance's slice
SELECT count((distkit_instance_inc('inst:lax', 1, 'lax')).total) FROM generate_series(1, 5000);
SELECT * FROM distkit_instance_get('inst:lax', 'lax');
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT * FROM distkit_instance_get('inst:lax', 'strict');
-- strict and lax mixed: a strict increment on this server becomes its lax view at once
SELECT (distkit_instance_inc('inst:lax', 10, 'strict')).total;
SELECT (distkit_instance_inc('inst:lax', 1, 'lax')).this_instance;
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT * FROM distkit_instance_get('inst:lax');
-- strict writes settle buffered increments first
SELECT (distkit_instance_inc('inst:lax', 4, 'lax')).total;
SELECT * FROM distkit_instance_del('inst:lax');

-- the first lax touch of a key this server holds no total for reads it
-- once: strict 5, then lax 2 is (7, 7), not (2, 2)
SELECT * FROM distkit_instance_inc('inst:seed', 5, 'strict');
SELECT * FROM distkit_instance_inc('inst:seed', 2, 'lax');
-- Redis unreachable: a lax read answers with this server's view (as for
-- simple counters), a strict read fails
\! "$DISTKIT_REDIS_CTL" stop
SELECT * FROM distkit_instance_inc('inst:seed', 1, 'lax');
\! sleep 0.05
SELECT * FROM distkit_instance_get('inst:seed', 'lax');
SELECT dk_error($$SELECT * FROM distkit_instance_get('inst:seed', 'strict')$$);
\! "$DISTKIT_REDIS_CTL" start
SELECT distkit_flush('10 s') IS NOT NULL AS flushed;
SELECT * FROM distkit_instance_get('inst:seed', 'strict');
SELECT * FROM distkit_instance_del('inst:seed');

-- exact 64-bit arithmetic at the limits, overflow refused without change
SELECT * FROM distkit_instance_set('inst:big', 9223372036854775806);
SELECT * FROM distkit_instance_inc('inst:big');
SELECT dk_error($$SELECT * FROM distkit_instance_inc('inst:big')$$);
SELECT * FROM distkit_instance_get('inst:big');
SELECT * FROM distkit_instance_set('inst:big', -9223372036854775807);
SELECT * FROM distkit_instance_dec('inst:big');
SELECT dk_error($$SELECT * FROM distkit_instance_dec('inst:big')$$);
SELECT * FROM distkit_instance_inc('inst:big', 9223372036854775807);
SELECT * FROM distkit_instance_set('inst:big', 1000000000);
SELECT * FROM distkit_instance_inc('inst:big', 999999999);
SELECT * FROM distkit_instance_dec('inst:big', 3000000000);

-- errors
SELECT dk_error($$SELECT * FROM distkit_instance_inc(NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_instance_inc('')$$);
SELECT dk_error($$SELECT * FROM distkit_instance_inc('k', NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_instance_set('k', NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_instance_dec('k', -9223372036854775808)$$);
SELECT dk_error($$SELECT * FROM distkit_instance_get(repeat('k', 1025))$$);

-- clear_here removes our slices only; clear removes the counters
SELECT (distkit_instance_inc('inst:c1', 3)).total, (distkit_instance_inc('inst:c2', 4)).total;
SELECT distkit_instance_clear_here();
SELECT * FROM distkit_instance_get('inst:c1');
SELECT distkit_instance_clear();
CREATE ROLE dk_inst;
SET ROLE dk_inst;
SELECT dk_error($$SELECT distkit_instance_clear()$$);
SELECT dk_error($$SELECT distkit_instance_clear_here()$$);
SELECT (distkit_instance_inc('inst:plain')).total;
RESET ROLE;
DROP ROLE dk_inst;
SELECT distkit_instance_clear();
