-- Leases with fencing tokens and leader election (single server; the
-- multi-server tests are test/t/004_lease.pl and test/t/005_leader.pl).
-- Redis starts empty for the test run, so tokens start at 1.

-- polls a condition (an SQL expression) every 20 ms for up to secs seconds
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

-- this session as distkit_lease_holder shows it
CREATE OR REPLACE FUNCTION dk_me() RETURNS text LANGUAGE sql AS $$
	SELECT instance_id || '/' || current_database() || '/' || pg_backend_pid() FROM distkit_stats
$$;

-- acquire: token 1; acquiring again renews and keeps the token
SELECT distkit_lease_acquire('job', '10 s');
SELECT distkit_lease_acquire('job', '20 s');
SELECT holder = dk_me() AS mine, token, expires_in > '19 s' AND expires_in <= '20 s' AS renewed
FROM distkit_lease_holder('job');
-- the Redis keys: the lease (a hash, expiring) and its token counter (no expiry)
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:l:{job}' token`
SELECT :'raw' AS token_in_redis;
\set raw `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:lt:{job}'`
SELECT :'raw' AS counter_pttl;

-- renew: with the right token only
SELECT distkit_lease_renew('job', 1, '30 s') AS renewed, distkit_lease_renew('job', 2, '1 s') AS wrong_token;
SELECT token, expires_in > '29 s' AS renewed_to_30s FROM distkit_lease_holder('job');

-- release: the wrong token releases nothing; the right one does, once
SELECT distkit_lease_release('job', 7) AS wrong_token;
SELECT token FROM distkit_lease_holder('job');
SELECT distkit_lease_release('job', 1) AS released, distkit_lease_release('job', 1) AS again;
SELECT count(*) AS holders FROM distkit_lease_holder('job');
SELECT distkit_lease_renew('job', 1, '1 s') AS renew_after_release;

-- tokens strictly increase, never reused after release
SELECT distkit_lease_acquire('job', '10 s') AS second;
SELECT distkit_lease_release('job', 2);
SELECT distkit_lease_acquire('job', '10 s') AS third;
SELECT distkit_lease_release('job', 3);

-- expiry: the lease is gone after its ttl; renewing it then says false and
-- the next acquisition gets a new token
SELECT distkit_lease_acquire('short', '200 ms');
\! sleep 0.4
SELECT count(*) AS holders FROM distkit_lease_holder('short');
SELECT distkit_lease_renew('short', 1, '10 s') AS renewed_after_expiry;
SELECT distkit_lease_acquire('short', '10 s') AS new_token;
SELECT distkit_lease_release('short', 2);

-- the token counter survives a Redis restart (AOF persistence is on)
\! "$DISTKIT_REDIS_CTL" stop
\! "$DISTKIT_REDIS_CTL" start
SELECT distkit_lease_acquire('short', '10 s') AS after_restart;
SELECT distkit_lease_release('short', 3);

-- another holder (written straight into Redis, as another server would):
-- no wait gives NULL at once; a wait gives NULL after the wait; the lease
-- cannot be renewed or released by this session
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:l:{other}' owner someone token 41 holder 'elsewhere/db/1'`
\set raw `"$DISTKIT_REDIS_CTL" cli PEXPIRE 'distkit:l:{other}' 60000`
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:lt:{other}' 41`
SELECT holder, token, expires_in > '59 s' AS expires_later FROM distkit_lease_holder('other');
SELECT distkit_lease_acquire('other', '10 s') IS NULL AS not_acquired;
SELECT clock_timestamp() AS t0 \gset
SELECT distkit_lease_acquire('other', '10 s', '300 ms') IS NULL AS not_acquired_after_wait;
SELECT clock_timestamp() - :'t0' >= '300 ms' AS waited, clock_timestamp() - :'t0' < '2 s' AS not_longer;
SELECT distkit_lease_renew('other', 41, '1 s') AS renew_foreign, distkit_lease_release('other', 41) AS release_foreign;
SELECT token FROM distkit_lease_holder('other');

-- waiting polls with jittered sleeps, not a busy loop: a 1 s wait makes
-- a few dozen Redis calls at most (summed over the masters of a cluster)
\set c0 `"$DISTKIT_REDIS_CTL" cli INFO commandstats | grep -o 'cmdstat_evalsha:calls=[0-9]*' | awk -F= '{ n += $2 } END { print n + 0 }'`
SELECT distkit_lease_acquire('other', '10 s', '1 s') IS NULL AS not_acquired;
\set c1 `"$DISTKIT_REDIS_CTL" cli INFO commandstats | grep -o 'cmdstat_evalsha:calls=[0-9]*' | awk -F= '{ n += $2 } END { print n + 0 }'`
SELECT :c1 - :c0 BETWEEN 10 AND 60 AS polled_10_to_60_times;

-- waiting is cancellable (statement_timeout; Ctrl-C is the same interrupt)
SET statement_timeout = '300ms';
SELECT distkit_lease_acquire('other', '10 s', '1 min');
RESET statement_timeout;

-- a wait longer than the holder's ttl acquires when it expires, with the
-- next token of the counter
\set raw `"$DISTKIT_REDIS_CTL" cli PEXPIRE 'distkit:l:{other}' 300`
SELECT clock_timestamp() AS t0 \gset
SELECT distkit_lease_acquire('other', '10 s', '5 s') AS acquired_after_expiry;
SELECT clock_timestamp() - :'t0' < '2 s' AS soon_after_expiry;
SELECT holder = dk_me() AS mine FROM distkit_lease_holder('other');
SELECT distkit_lease_release('other', 42);

-- Fencing: a row stores the last token that wrote it; a write carrying an
-- older token is rejected.  (fence <= token lets the holder write several
-- times; fence < token would make each token usable once.)
CREATE TABLE fenced_account (id int PRIMARY KEY, balance int NOT NULL, fence bigint NOT NULL DEFAULT 0);
INSERT INTO fenced_account VALUES (1, 100);
CREATE FUNCTION fenced_add(tok bigint, delta int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	UPDATE fenced_account SET balance = balance + delta, fence = tok
	WHERE id = 1 AND fence <= tok;
	RETURN FOUND;
END $$;
-- holder A gets a token, writes, then stalls past its ttl
SELECT distkit_lease_acquire('account:1', '200 ms') AS token_a \gset
SELECT fenced_add(:token_a, 10) AS a_writes;
\! sleep 0.4
-- B (here the same session, acquiring anew after the expiry) gets a higher token and writes
SELECT distkit_lease_acquire('account:1', '10 s') AS token_b \gset
SELECT :token_b > :token_a AS higher;
SELECT fenced_add(:token_b, 5) AS b_writes, fenced_add(:token_b, 1) AS b_writes_again;
-- A wakes up and writes with its stale token: rejected
SELECT fenced_add(:token_a, 1000) AS stale_a_writes;
SELECT balance, fence = :token_b AS fence_is_b FROM fenced_account;
SELECT distkit_lease_release('account:1', :token_b);

-- leases are not transactional: a rollback keeps the lease
BEGIN;
SELECT distkit_lease_acquire('tx', '10 s');
ROLLBACK;
SELECT token FROM distkit_lease_holder('tx');

-- the session's leases are released when it ends (also 'tx', never released)
SELECT distkit_lease_acquire('bye', '1 min');
\c
SELECT dk_wait_until($$NOT EXISTS (SELECT FROM distkit_lease_holder('bye'))
	AND NOT EXISTS (SELECT FROM distkit_lease_holder('tx'))$$) AS released_at_session_end;
SELECT distkit_lease_acquire('bye', '1 min') AS next_token;

-- keys are any text; different names are different leases, and a lease
-- and a counter of the same name do not collide
SELECT distkit_lease_acquire('{weird}:%7D é', '10 s'), distkit_lease_acquire('{weird}:}', '10 s');
SELECT distkit_inc('bye') AS counter_bye;

-- errors
SELECT dk_error($$SELECT distkit_lease_acquire(NULL, '1 s')$$);
SELECT dk_error($$SELECT distkit_lease_acquire('', '1 s')$$);
SELECT dk_error($$SELECT distkit_lease_acquire(repeat('x', 1025), '1 s')$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', NULL)$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', '0')$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', '-1 s')$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', '1 mon')$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', '1 year 1 day')$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', '36501 days')$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', '1 s', NULL)$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', '1 s', '-1 ms')$$);
SELECT dk_error($$SELECT distkit_lease_acquire('e', '1 s', '1 mon')$$);
SELECT dk_error($$SELECT distkit_lease_renew('e', NULL, '1 s')$$);
SELECT dk_error($$SELECT distkit_lease_renew('e', 0, '1 s')$$);
SELECT dk_error($$SELECT distkit_lease_renew('e', -5, '1 s')$$);
SELECT dk_error($$SELECT distkit_lease_renew('e', 1, '0 s')$$);
SELECT dk_error($$SELECT distkit_lease_release('e', 0)$$);
SELECT dk_error($$SELECT distkit_lease_release(NULL, 1)$$);
SELECT dk_error($$SELECT * FROM distkit_lease_holder(NULL)$$);
-- a ttl below a millisecond is rounded up to one
SELECT distkit_lease_acquire('tiny', '1 microsecond') > 0 AS acquired_for_1ms;
-- another program's value under a lease key
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:l:{str}' x`
SELECT dk_error($$SELECT distkit_lease_acquire('str', '1 s')$$);
-- Redis down: a connection error, like every call
\! "$DISTKIT_REDIS_CTL" stop
SELECT dk_error($$SELECT distkit_lease_acquire('down', '1 s')$$);
\! "$DISTKIT_REDIS_CTL" start

-- Leader election on one server (two servers: test/t/005_leader.pl)
SELECT distkit_leader_acquire('nightly', '1 s') AS leads, distkit_is_leader('nightly') AS is_leader;
SELECT distkit_leader_acquire('nightly', '1 s') AS again;
SELECT name, term, ttl, is_leader, valid_for > '0' AND valid_for < '1 s' AS valid_for_ok FROM distkit_leaders;
-- the holder is this instance, the same that distkit_stats shows
SELECT holder = (SELECT instance_id::text FROM distkit_stats) AS this_instance, term
FROM distkit_leader_holder('nightly');
-- the worker renews it: after 3 ttls it is still led, renewed recently
SELECT last_renewed AS r0 FROM distkit_leaders \gset
\! sleep 3
SELECT distkit_is_leader('nightly') AS still_leader,
	   last_renewed > :'r0' AS renewed, clock_timestamp() - last_renewed < '1 s' AS recently
FROM distkit_leaders;
\set raw `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ld:{nightly}'`
SELECT :raw BETWEEN 1 AND 1000 AS pttl_in_redis;
-- a name led by another server
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:ld:{weekly}' owner other-instance token 9 holder other-instance`
\set raw `"$DISTKIT_REDIS_CTL" cli PEXPIRE 'distkit:ld:{weekly}' 60000`
SELECT distkit_leader_acquire('weekly') AS leads, distkit_is_leader('weekly') AS is_leader;
SELECT holder, term FROM distkit_leader_holder('weekly');
SELECT distkit_leader_release('weekly') AS released_foreign;
-- leaderships and leases are separate name spaces
SELECT count(*) AS lease_holders FROM distkit_lease_holder('nightly');
-- release: at once, and only once
SELECT distkit_leader_release('nightly') AS released, distkit_is_leader('nightly') AS is_leader;
SELECT distkit_leader_release('nightly') AS again;
SELECT count(*) AS leaderships FROM distkit_leaders;
SELECT count(*) AS holders FROM distkit_leader_holder('nightly');
-- a new leadership gets the next term
SELECT distkit_leader_acquire('nightly', '10 s');
SELECT term FROM distkit_leaders;
-- a leadership belongs to the server, not the session
\c
SELECT distkit_is_leader('nightly') AS still_leader_after_reconnect;
SELECT distkit_leader_release('nightly');
-- without a ttl: a renewal keeps the ttl the server leads with (a periodic
-- call must not shorten a 30 s leadership to 10 s); a new leadership gets
-- 10 s; an explicit ttl still changes it
SELECT distkit_leader_acquire('keep', '30 s') AS leads;
SELECT distkit_leader_acquire('keep') AS again;
SELECT distkit_leader_acquire('keep', NULL) AS again_null;
SELECT ttl FROM distkit_leaders WHERE name = 'keep';
\set raw `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ld:{keep}'`
SELECT :raw BETWEEN 20000 AND 30000 AS pttl_kept;
SELECT distkit_leader_acquire('keep', '5 s') AS shortened;
SELECT ttl FROM distkit_leaders WHERE name = 'keep';
SELECT distkit_leader_acquire('keep') AS again;
SELECT ttl FROM distkit_leaders WHERE name = 'keep';
SELECT distkit_leader_release('keep');
SELECT distkit_leader_acquire('fresh') AS leads;
SELECT ttl FROM distkit_leaders WHERE name = 'fresh';
\set raw `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ld:{fresh}'`
SELECT :raw BETWEEN 5000 AND 10000 AS pttl_default;
SELECT distkit_leader_release('fresh');
-- errors
SELECT dk_error($$SELECT distkit_leader_acquire(NULL)$$);
SELECT dk_error($$SELECT distkit_leader_acquire('x', '99 ms')$$);
SELECT dk_error($$SELECT distkit_leader_acquire('x', '1 mon')$$);
SELECT dk_error($$SELECT distkit_leader_acquire('', '1 s')$$);
SELECT dk_error($$SELECT distkit_is_leader(NULL)$$);
SELECT dk_error($$SELECT distkit_is_leader('')$$);
SELECT dk_error($$SELECT distkit_leader_release(NULL)$$);
SELECT distkit_is_leader('never acquired');
-- at most 64 names per server
SELECT count(*) FILTER (WHERE distkit_leader_acquire('many:' || g)) FROM generate_series(1, 64) g;
SELECT dk_error($$SELECT distkit_leader_acquire('one too many')$$);
SELECT count(*) FILTER (WHERE distkit_leader_release('many:' || g)) FROM generate_series(1, 64) g;
SELECT count(*) AS leaderships FROM distkit_leaders;
