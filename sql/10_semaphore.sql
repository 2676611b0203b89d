-- Fleet semaphores (single server; two servers and 50 sessions:
-- test/t/004_lease.pl).

CREATE OR REPLACE FUNCTION dk_wait_until(cond text, secs float8 DEFAULT 10) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	ok boolean;
BEGIN
	LOOP
		-- pg_stat_activity is read once per transaction unless cleared: a
		-- backend that exits during the wait would never seem to go
		PERFORM pg_stat_clear_snapshot();
		EXECUTE 'SELECT ' || cond INTO ok;
		IF ok THEN RETURN true; END IF;
		IF clock_timestamp() - t0 > secs * interval '1 s' THEN RETURN false; END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END $$;

-- three permits: the fourth acquisition gets NULL
SELECT distkit_semaphore_acquire('exports', 3, '10 s') AS p1 \gset
SELECT distkit_semaphore_acquire('exports', 3, '10 s') AS p2 \gset
SELECT distkit_semaphore_acquire('exports', 3, '10 s') AS p3 \gset
SELECT :'p1' ~ '^[0-9a-f]{32}$' AS permit_format, :'p1' <> :'p2' AND :'p2' <> :'p3' AS distinct_permits;
SELECT distkit_semaphore_acquire('exports', 3, '10 s') IS NULL AS fourth_refused;
SELECT distkit_semaphore_count('exports');
-- the limit is the caller's: with 4 permits a fourth is admitted
SELECT distkit_semaphore_acquire('exports', 4, '10 s') AS p4 \gset
SELECT distkit_semaphore_count('exports');
-- the Redis key: a sorted set of permits by expiry, expiring with its last permit
\set raw `"$DISTKIT_REDIS_CTL" cli ZCARD 'distkit:s:{exports}'`
SELECT :'raw' AS members;
\set raw `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:s:{exports}'`
SELECT :raw BETWEEN 9000 AND 10000 AS key_expires_with_last_permit;

-- release: once; a released permit frees its place
SELECT distkit_semaphore_release('exports', :'p4') AS released, distkit_semaphore_release('exports', :'p4') AS again;
SELECT distkit_semaphore_release('exports', :'p1') AS released;
SELECT distkit_semaphore_count('exports');
SELECT distkit_semaphore_acquire('exports', 3, '10 s') IS NOT NULL AS admitted_again;
SELECT distkit_semaphore_count('exports');
-- a permit is accepted in upper case too (hexadecimal digits in either case)
SELECT distkit_semaphore_renew('exports', upper(:'p3'), '10 s') AS renewed_upper;
SELECT distkit_semaphore_release('exports', upper(:'p3')) AS released_upper;
SELECT distkit_semaphore_release('exports', :'p3') AS again;
SELECT distkit_semaphore_acquire('exports', 3, '10 s') IS NOT NULL AS admitted_again;

-- renew: extends an unexpired permit; not a released one
SELECT distkit_semaphore_renew('exports', :'p2', '1 min') AS renewed;
\set raw `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:s:{exports}'`
SELECT :raw > 50000 AS key_follows_the_latest_expiry;
SELECT distkit_semaphore_renew('exports', :'p1', '1 min') AS renew_released;
-- a permit of another semaphore is not a permit of this one
SELECT distkit_semaphore_release('imports', :'p2') AS other_semaphore;

-- expiry reclaims a permit that is never released (a crashed holder)
SELECT distkit_semaphore_acquire('crash', 1, '300 ms') AS c1 \gset
SELECT distkit_semaphore_acquire('crash', 1, '10 s') IS NULL AS full;
SELECT dk_wait_until($$distkit_semaphore_count('crash') = 0$$, 5) AS reclaimed;
SELECT distkit_semaphore_renew('crash', :'c1', '10 s') AS renew_expired,
	   distkit_semaphore_release('crash', :'c1') AS release_expired;
-- waiting: acquired as soon as the expired permit is reclaimed
SELECT distkit_semaphore_acquire('crash', 1, '300 ms') AS c2 \gset
SELECT clock_timestamp() AS t0 \gset
SELECT distkit_semaphore_acquire('crash', 1, '10 s', '5 s') IS NOT NULL AS acquired_after_expiry;
SELECT clock_timestamp() - :'t0' BETWEEN '100 ms' AND '2 s' AS waited_for_expiry;
-- a wait that runs out gives NULL
SELECT clock_timestamp() AS t0 \gset
SELECT distkit_semaphore_acquire('crash', 1, '10 s', '300 ms') IS NULL AS not_acquired;
SELECT clock_timestamp() - :'t0' BETWEEN '300 ms' AND '2 s' AS waited;
-- cancellable
SET statement_timeout = '300ms';
SELECT distkit_semaphore_acquire('crash', 1, '10 s', '1 min');
RESET statement_timeout;

-- not transactional
BEGIN;
SELECT distkit_semaphore_acquire('tx', 1, '1 min') IS NOT NULL AS acquired;
ROLLBACK;
SELECT distkit_semaphore_count('tx');

-- the session's permits are released when it ends
SELECT distkit_semaphore_count('exports') AS exports, distkit_semaphore_count('crash') AS crash;
\c
SELECT dk_wait_until($$distkit_semaphore_count('exports') = 0 AND distkit_semaphore_count('crash') = 0
	AND distkit_semaphore_count('tx') = 0$$) AS released_at_session_end;
SELECT distkit_semaphore_count('never used');

-- Redis down when the session ends: the release fails, the backend exits
-- all the same, and the permit expires by its ttl
SELECT distkit_semaphore_acquire('down', 1, '1 min') IS NOT NULL AS acquired;
SELECT pg_backend_pid() AS old_pid \gset
\! "$DISTKIT_REDIS_CTL" stop
\c
SELECT dk_wait_until(format('NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)', :old_pid)) AS old_backend_exited;
\! "$DISTKIT_REDIS_CTL" start
SELECT distkit_semaphore_count('down') AS not_released;

-- errors
SELECT dk_error($$SELECT distkit_semaphore_acquire(NULL, 1, '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('', 1, '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('s', NULL, '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('s', 0, '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('s', -3, '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('s', 1, NULL)$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('s', 1, '0')$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('s', 1, '2 mons')$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('s', 1, '1 s', '-1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_acquire('s', 1, '1 s', NULL)$$);
SELECT dk_error($$SELECT distkit_semaphore_renew('s', NULL, '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_renew('s', 'not-a-permit', '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_renew('s', repeat('G', 32), '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_renew('s', repeat('a', 32), '-1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_release('s', '')$$);
SELECT dk_error($$SELECT distkit_semaphore_release('s', repeat('x', 100))$$);
SELECT dk_error($$SELECT distkit_semaphore_count(NULL)$$);
-- another program's value under a semaphore key
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:s:{str}' x`
SELECT dk_error($$SELECT distkit_semaphore_acquire('str', 1, '1 s')$$);
SELECT dk_error($$SELECT distkit_semaphore_count('str')$$);
