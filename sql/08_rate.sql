-- Rate limiters (GCRA): exact figures, Redis state and expiry, precision,
-- every error, and the README's examples.
-- Most tests use a long period so that nothing refills while they run and
-- every figure is exact; time-dependent figures are checked against bounds
-- computed from the parameters and from the elapsed time.
SELECT distkit_clear() >= 0 AS cleared;

--
-- Exact figures: rate 10 per 1000 s, burst 10 (T = 100 s)
--
-- remaining counts down 9..0, the 11th and 12th calls are denied and say
-- when one unit will be back (T - elapsed); reset_after is the time until
-- the limiter is full again (calls × T - elapsed)
-- (a MATERIALIZED CTE calls the function once per row, in order; a LATERAL
-- call that does not depend on the row would be called only once)
WITH calls AS MATERIALIZED (
	SELECT i, distkit_rate_check('r1', 10, '1000 s') AS c FROM generate_series(1, 12) i
)
SELECT i, (c).allowed, (c).remaining,
       CASE WHEN (c).allowed THEN (c).retry_after IS NULL
            ELSE (c).retry_after BETWEEN '99 s' AND '100 s' END AS retry_after_ok,
       (c).reset_after BETWEEN least(i, 10) * interval '100 s' - interval '1 s'
                           AND least(i, 10) * interval '100 s' AS reset_after_ok
FROM calls
ORDER BY i;
SELECT distkit_rate_allow('r1', 10, '1000 s');
-- the state is one Redis string "<TAT us>+<fraction>/<rate>" under
-- prefix:r:{key}, expiring when the limiter is full again (in 1000 s)
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{r1}'`
SELECT :'raw' ~ '^\d{16}\+0/10$' AS state_format;
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:r:{r1}'`
SELECT :pttl BETWEEN 999000 AND 1000000 AS pttl_ok;
-- a denied call stores nothing (same value, expiry not moved)
SELECT allowed, remaining FROM distkit_rate_check('r1', 10, '1000 s', cost => 0);
SELECT allowed, remaining, retry_after BETWEEN '99 s' AND '100 s' AS retry_after_ok,
       reset_after BETWEEN '999 s' AND '1000 s' AS reset_after_ok
FROM distkit_rate_check('r1', 10, '1000 s');
\set raw2 `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{r1}'`
SELECT :'raw' = :'raw2' AS unchanged_after_denied;
\set pttl2 `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:r:{r1}'`
SELECT :pttl2 <= :pttl AS expiry_not_moved;
-- peek consumes nothing
SELECT remaining, reset_after BETWEEN '999 s' AND '1000 s' AS reset_after_ok
FROM distkit_rate_peek('r1', 10, '1000 s');
\set raw2 `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{r1}'`
SELECT :'raw' = :'raw2' AS unchanged_after_peek;
-- reset forgets the state: the limiter is full again
SELECT distkit_rate_reset('r1');
SELECT distkit_rate_reset('r1');
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:r:{r1}'`
SELECT :'raw' AS exists_after_reset;
SELECT * FROM distkit_rate_peek('r1', 10, '1000 s');
SELECT distkit_rate_allow('r1', 10, '1000 s');

--
-- cost, burst, and the figures of a first call (always exact:
-- remaining = burst - cost, reset_after = per / rate × cost)
--
SELECT * FROM distkit_rate_check('r2', 10, '1000 s', 20, 15);
SELECT allowed, remaining, retry_after BETWEEN '99 s' AND '100 s' AS retry_after_ok
FROM distkit_rate_check('r2', 10, '1000 s', 20, 6);
SELECT allowed, remaining, retry_after FROM distkit_rate_check('r2', 10, '1000 s', 20, 5);
-- cost 0 checks without consuming: allowed even when nothing remains
SELECT allowed, remaining, retry_after FROM distkit_rate_check('r2', 10, '1000 s', 20, 0);
SELECT distkit_rate_allow('r2', 10, '1000 s', 20, 0);
SELECT distkit_rate_allow('r2', 10, '1000 s', 20, 1);
-- a cost-0 check on an idle limiter creates no state
SELECT distkit_rate_allow('r0', 10, '1000 s', cost => 0);
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:r:{r0}'`
SELECT :'raw' AS exists_after_cost_0;
-- burst defaults to rate; burst may be below rate
SELECT * FROM distkit_rate_peek('r3', 5, '1000 s');
SELECT * FROM distkit_rate_check('r3', 5, '1000 s');
SELECT array_agg(distkit_rate_allow('r4', 100, '1000 s', 3) ORDER BY i)
FROM generate_series(1, 5) i;
SELECT remaining, retry_after BETWEEN '9 s' AND '10 s' AS retry_after_ok
FROM distkit_rate_check('r4', 100, '1000 s', 3);
-- per defaults to 1 second
SELECT * FROM distkit_rate_check('r5', 4);
-- a day counts as 24 hours
SELECT * FROM distkit_rate_check('r6', 2, '1 day');

--
-- Precision: per / rate need not be a whole number of microseconds
--
-- T = 333333.33... us: reset_after is rounded up to the microsecond, and
-- the fraction is kept exactly in Redis (1/3, 2/3, then a whole 1 s)
SELECT * FROM distkit_rate_check('third', 3, '1 s');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{third}'`
SELECT substring(:'raw' FROM '\+.*$') AS fraction;
SELECT distkit_rate_allow('third', 3, '1 s');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{third}'`
SELECT substring(:'raw' FROM '\+.*$') AS fraction;
SELECT distkit_rate_allow('third', 3, '1 s');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{third}'`
SELECT substring(:'raw' FROM '\+.*$') AS fraction;
-- 1,000,000 per second (T = 1 us): a whole second of burst at once ...
SELECT * FROM distkit_rate_check('mega', 1000000, '1 s', 1000000, 1000000);
-- ... then one unit per microsecond comes back
SELECT allowed, remaining BETWEEN 1 AND 999999 AS remaining_ok,
       retry_after BETWEEN '0.5 s' AND '1 s' AS retry_after_ok
FROM distkit_rate_check('mega', 1000000, '1 s', 1000000, 1000000);
SELECT pg_sleep(0.2);
SELECT remaining BETWEEN 200000 AND 999999 AS remaining_ok FROM distkit_rate_peek('mega', 1000000, '1 s');
SELECT count(*) FILTER (WHERE distkit_rate_allow('mega', 1000000, '1 s')) AS allowed
FROM generate_series(1, 1000);
-- 10,000,000 per second (T = 0.1 us)
SELECT * FROM distkit_rate_check('ten-mega', 10000000, '1 s', 10000000, 7);
SELECT * FROM distkit_rate_check('ten-mega2', 10000000, '1 s', 10000000, 10000000);
-- the largest rate
SELECT * FROM distkit_rate_check('huge', 4503599627370496, '1 s', 4503599627370496, 3);
-- a period of 1 ms: the state is gone 1 ms later
SELECT * FROM distkit_rate_check('milli', 1, '1 ms');
\! sleep 0.05
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:r:{milli}'`
SELECT :'raw' AS milli_exists_later;
SELECT * FROM distkit_rate_check('milli', 1, '1 ms');
-- a period of one year (365 days): 1000 units at once, then one per 31536 s
SELECT * FROM distkit_rate_check('year', 1000, '365 days', cost => 1000);
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:r:{year}'`
SELECT :pttl BETWEEN 31535990000 AND 31536000000 AS pttl_ok;
SELECT allowed, remaining, retry_after BETWEEN '31535 s' AND '31536 s' AS retry_after_ok,
       reset_after BETWEEN '8759:59:59' AND '8760:00:00' AS reset_after_ok
FROM distkit_rate_check('year', 1000, '365 days');
-- the longest span: tau = 52124 days, just below 2^52 us (about 142 years)
SELECT * FROM distkit_rate_check('long', 1, '52124 days');
-- a key written with another rate: a fraction is rounded up to the next us
SELECT distkit_rate_allow('mixed', 3, '1000 s');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{mixed}'`
SELECT :'raw' ~ '^\d{16}\+1/3$' AS state_format;
SELECT allowed, remaining, reset_after BETWEEN '582 s' AND '583.333335 s' AS reset_after_ok
FROM distkit_rate_check('mixed', 4, '1000 s');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{mixed}'`
SELECT :'raw' ~ '^\d{16}\+0/4$' AS state_format;

--
-- Expiry: once the limiter is full again its key is gone (no garbage)
--
SELECT * FROM distkit_rate_check('short', 5, '200 ms', cost => 5);
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:r:{short}'`
SELECT :pttl BETWEEN 1 AND 200 AS pttl_ok;
\! sleep 0.3
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:r:{short}'`
SELECT :'raw' AS short_exists_later;
SELECT * FROM distkit_rate_peek('short', 5, '200 ms');

--
-- The issue's scenario: rate 10 per second, burst 10, 100 immediate calls.
-- One unit comes back every 100 ms, so exactly 10 pass when the calls take
-- less than 100 ms; each 100 ms they take may let one more through.
--
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE ten AS
WITH calls AS MATERIALIZED (
	SELECT i, distkit_rate_check('ten', 10) AS c, clock_timestamp() AS at
	FROM generate_series(1, 100) i
)
SELECT i, (c).*, at FROM calls;
SELECT min(at) AS t0_first, max(at) AS t0_last FROM ten \gset
SELECT count(*) FILTER (WHERE allowed)
         BETWEEN 10 AND 10 + floor(extract(epoch FROM :'t0_last'::timestamptz - :'t0') / 0.1) AS ten_allowed,
       array_agg(remaining ORDER BY i) FILTER (WHERE i <= 10) = '{9,8,7,6,5,4,3,2,1,0}'
         OR :'t0_last'::timestamptz - :'t0' >= '100 ms' AS countdown,
       bool_and(retry_after > '0' AND retry_after <= '100 ms') FILTER (WHERE NOT allowed)
         AS retry_after_le_100ms,
       min(retry_after) >= '100 ms' - (:'t0_last'::timestamptz - :'t0') AS retry_after_ge_100ms_minus_elapsed,
       bool_and(retry_after IS NULL) FILTER (WHERE allowed) AS no_retry_when_allowed
FROM ten;
-- after 0.5 s, 5 more pass: in all, 10 + one per 100 ms since the first call
SELECT pg_sleep(0.5);
SELECT clock_timestamp() AS t1 \gset
CREATE TEMP TABLE ten2 AS
WITH calls AS MATERIALIZED (
	SELECT i, distkit_rate_check('ten', 10) AS c, clock_timestamp() AS at
	FROM generate_series(1, 100) i
)
SELECT i, (c).*, at FROM calls;
SELECT (SELECT count(*) FROM ten WHERE allowed) + count(*) FILTER (WHERE allowed)
         BETWEEN 10 + floor(extract(epoch FROM :'t1'::timestamptz - :'t0_first') / 0.1)
             AND 10 + floor(extract(epoch FROM max(at) - :'t0') / 0.1) AS five_more
FROM ten2;

--
-- Sustained load: calls for 3 s at 100 per second, burst 50: allowed =
-- burst + rate × (Redis time of the last call - of the first) (± 1).  The
-- Redis times are bracketed by this session's clock: at least from the end
-- of the first call to the start of the last, at most from the start of the
-- first to the end of the last (a loaded machine makes calls slow, so the
-- two differ; the bound must hold for both)
--
CREATE FUNCTION pg_temp.sustain(k text, rate bigint, burst bigint, seconds float8,
                                OUT allowed bigint, OUT calls bigint,
                                OUT inner_s float8, OUT outer_s float8)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	first_start timestamptz;
	first_end timestamptz;
	call_start timestamptz;
	call_end timestamptz;
BEGIN
	allowed := 0;
	calls := 0;
	LOOP
		calls := calls + 1;
		call_start := clock_timestamp();
		IF distkit_rate_allow(k, rate, '1 s', burst) THEN
			allowed := allowed + 1;
		END IF;
		call_end := clock_timestamp();
		IF calls = 1 THEN
			first_start := call_start;
			first_end := call_end;
		END IF;
		EXIT WHEN extract(epoch FROM call_end - t0) >= seconds;
	END LOOP;
	inner_s := extract(epoch FROM call_start - first_end);
	outer_s := extract(epoch FROM call_end - first_start);
END $$;
SELECT allowed BETWEEN 50 + floor(100 * inner_s) - 1 AND 50 + floor(100 * outer_s) + 1 AS allowed_ok,
       calls > allowed AS some_denied
FROM pg_temp.sustain('sustained', 100, 50, 3);

--
-- Rate limiters and counters of the same name never collide
--
SELECT distkit_inc('same', 5);
SELECT * FROM distkit_rate_check('same', 10, '1000 s', cost => 3);
SELECT distkit_get('same');
SELECT distkit_rate_allow('a}b%', 10, '1000 s');
\set raw `"$DISTKIT_REDIS_CTL" cli --raw KEYS '*same*' | sort | tr '\n' ' '`
SELECT :'raw' AS same_keys;
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:r:{a%7Db%25}'`
SELECT :'raw' AS escaped_key_exists;
-- distkit_clear deletes counters only
SELECT distkit_clear() >= 1 AS cleared;
SELECT distkit_get('same');
SELECT remaining FROM distkit_rate_peek('same', 10, '1000 s');
SELECT distkit_rate_reset('same');

--
-- Errors: 22023 with the bad value and a hint; 22004 for NULL
--
SELECT dk_error($$SELECT distkit_rate_allow('e', 0)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', -1)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 4503599627370497)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 s', 0)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 s', -5)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 s', 10, -1)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 s', NULL, 11)$$);
SELECT dk_error($$SELECT * FROM distkit_rate_check('e', 10, '1 s', 1, 2)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '0 s')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '-1 s')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 day -24 hours')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 mon')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 year')$$);
SELECT dk_error($$SELECT * FROM distkit_rate_peek('e', 10, '1 mon 1 day')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '200000000 days')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 1, '52125 days')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 1, '1 s', 10000000000)$$);
SELECT dk_error($$SELECT distkit_rate_allow('', 1)$$);
SELECT dk_error($$SELECT distkit_rate_allow(NULL, 1)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', NULL)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 1, NULL)$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 1, '1 s', 1, NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_rate_check('e', 1, '1 s', 1, NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_rate_check(NULL, 1)$$);
SELECT dk_error($$SELECT * FROM distkit_rate_peek('e', NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_rate_peek('e', 1, '1 s', 0)$$);
SELECT dk_error($$SELECT distkit_rate_reset(NULL)$$);
-- none of the rejected calls touched Redis
SELECT distkit_rate_reset('e');
-- NULL burst means burst = rate
SELECT * FROM distkit_rate_check('e', 2, '1000 s', NULL);
-- a key written by another program
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:r:{alien}' garbage`
SELECT dk_error($$SELECT distkit_rate_allow('alien', 1)$$);
SELECT dk_error($$SELECT * FROM distkit_rate_peek('alien', 1)$$);
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:r:{alien}'`
SELECT :'raw' AS alien_unchanged;
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:r:{alien}' '1700000000000000+5/3'`
SELECT dk_error($$SELECT distkit_rate_allow('alien', 1)$$);
\set raw `"$DISTKIT_REDIS_CTL" cli DEL 'distkit:r:{alien}'`
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:r:{alien}' f 1`
SELECT dk_error($$SELECT distkit_rate_allow('alien', 1)$$);
SELECT distkit_rate_reset('alien');
-- Redis down: a connection error, never a silent answer; failing open is
-- the caller's explicit choice (docs/rate-limiting.md)
CREATE FUNCTION allow_or_open(k text, rate bigint, per interval) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	RETURN distkit_rate_allow(k, rate, per);
EXCEPTION WHEN sqlstate '08001' OR sqlstate '08006' OR sqlstate '08007' THEN
	RETURN true;	-- Redis unavailable: let the request through
END $$;
\! "$DISTKIT_REDIS_CTL" stop
SELECT dk_error($$SELECT distkit_rate_allow('down', 1)$$);
SELECT dk_error($$SELECT * FROM distkit_rate_peek('down', 1)$$);
SELECT allow_or_open('down', 1, '1 s');
\! "$DISTKIT_REDIS_CTL" start
SELECT distkit_rate_allow('down', 1);
DROP FUNCTION allow_or_open(text, bigint, interval);

--
-- README examples
--
-- 1. A procedure that raises a clear exception when limited
CREATE TABLE sms_outbox (phone text, body text);
CREATE PROCEDURE send_sms(phone text, body text)
LANGUAGE plpgsql AS $$
DECLARE
	lim record;
BEGIN
	-- at most 3 messages per phone number per hour
	SELECT * INTO lim FROM distkit_rate_check('sms:' || phone, 3, '1 hour');
	IF NOT lim.allowed THEN
		RAISE EXCEPTION 'too many messages to %', phone
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('At most 3 messages per hour may be sent to %s.', phone),
				  HINT = format('Retry in %s seconds.', ceil(extract(epoch FROM lim.retry_after)));
	END IF;
	INSERT INTO sms_outbox VALUES (phone, body);
END $$;
CALL send_sms('+15550100', 'one');
CALL send_sms('+15550100', 'two');
CALL send_sms('+15550100', 'three');
SELECT dk_error($$CALL send_sms('+15550100', 'four')$$);
CALL send_sms('+15550199', 'other number');
SELECT phone, count(*) FROM sms_outbox GROUP BY phone ORDER BY phone;

-- 2. A PostgREST db-pre-request function: per JWT subject, 60 requests per
-- minute with bursts of 10, else HTTP 429 with a Retry-After header
CREATE FUNCTION api_pre_request() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	sub text := coalesce(nullif(current_setting('request.jwt.claims', true), '')::json ->> 'sub',
						 'anonymous');
	lim record;
BEGIN
	SELECT * INTO lim FROM distkit_rate_check('api:' || sub, 60, '1 minute', burst => 10);
	IF NOT lim.allowed THEN
		RAISE SQLSTATE 'PGRST' USING
			MESSAGE = json_build_object(
				'code', 'rate_limited',
				'message', 'Too many requests',
				'hint', format('Retry in %s s', ceil(extract(epoch FROM lim.retry_after))))::text,
			DETAIL = json_build_object(
				'status', 429,
				'status_text', 'Too Many Requests',
				'headers', json_build_object(
					'Retry-After', ceil(extract(epoch FROM lim.retry_after))::text))::text;
	END IF;
END $$;
SELECT set_config('request.jwt.claims', '{"sub": "alice", "role": "web"}', false);
SELECT count(api_pre_request()) FROM generate_series(1, 10);
SELECT dk_error($$SELECT api_pre_request()$$);
SELECT set_config('request.jwt.claims', '{"sub": "bob", "role": "web"}', false);
SELECT api_pre_request();
SELECT set_config('request.jwt.claims', '', false);
SELECT api_pre_request();

-- 3. A trigger that caps inserts per tenant (rate and period as trigger
-- arguments)
CREATE TABLE events (tenant text, payload text);
CREATE FUNCTION cap_inserts_per_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF NOT distkit_rate_allow('inserts:' || NEW.tenant, TG_ARGV[0]::bigint, TG_ARGV[1]::interval) THEN
		RAISE EXCEPTION 'tenant % exceeds % inserts per %', NEW.tenant, TG_ARGV[0], TG_ARGV[1]
			USING ERRCODE = 'program_limit_exceeded';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER events_cap BEFORE INSERT ON events
FOR EACH ROW EXECUTE FUNCTION cap_inserts_per_tenant(5, '1 hour');
INSERT INTO events SELECT 'acme', 'e' || g FROM generate_series(1, 4) g;
INSERT INTO events VALUES ('acme', 'e5');
SELECT dk_error($$INSERT INTO events VALUES ('acme', 'e6')$$);
INSERT INTO events VALUES ('globex', 'g1');
SELECT tenant, count(*) FROM events GROUP BY tenant ORDER BY tenant;
DROP TABLE events, sms_outbox;
DROP FUNCTION cap_inserts_per_tenant(), api_pre_request();
DROP PROCEDURE send_sms(text, text);

-- rate limiters are not transactional: a unit consumed stays consumed
BEGIN;
SELECT distkit_rate_allow('tx', 1, '1000 s');
ROLLBACK;
SELECT distkit_rate_allow('tx', 1, '1000 s');

--
-- Lax mode (docs/rate-limiting.md, "Lax mode"): decisions from units this
-- server reserved from the same GCRA key; never more than strict allows.
-- rate 10 per 1000 s (T = 100 s): nothing refills during the test, so the
-- figures are exact whatever the block sizes.
--
SELECT array_agg(distkit_rate_allow('lx', 10, '1000 s', mode => 'lax') ORDER BY i)
FROM generate_series(1, 12) i;
SELECT key, held, reserved, spent, allowed, denied, near_limit >= 2 AS near_counted
FROM distkit_rate_stats WHERE key = 'lx';
-- lax and strict share one limit: a strict call finds it empty
SELECT allowed, remaining, decided_by FROM distkit_rate_check('lx', 10, '1000 s');
SELECT allowed, would_allow, decided_by FROM distkit_rate_check('lx', 10, '1000 s', mode => 'lax');
-- strict first, then lax: lax gets only what strict left
SELECT distkit_rate_allow('lx2', 5, '1000 s', cost => 3);
SELECT count(*) FILTER (WHERE a) AS lax_allowed
FROM (SELECT distkit_rate_allow('lx2', 5, '1000 s', mode => 'lax') AS a
      FROM generate_series(1, 6)) s;
-- the default mode comes from distkit.rate_default_mode
SET distkit.rate_default_mode = lax;
SELECT decided_by FROM distkit_rate_check('lx3', 10, '1000 s');
RESET distkit.rate_default_mode;
SELECT decided_by FROM distkit_rate_check('lx3', 10, '1000 s');
-- costs: a lax call of cost 4 takes 4 units at once
SELECT array_agg(distkit_rate_allow('lx4', 10, '1000 s', cost => 4, mode => 'lax') ORDER BY i)
FROM generate_series(1, 3) i;
SELECT spent, allowed, denied FROM distkit_rate_stats WHERE key = 'lx4';
-- a reset clears the state in Redis and this server's reservation
SELECT distkit_rate_reset('lx');
SELECT held FROM distkit_rate_stats WHERE key = 'lx';
SELECT distkit_rate_allow('lx', 10, '1000 s', mode => 'lax');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:re:{lx}'`
SELECT :'raw' AS reset_epoch;
-- bad input: the same SQLSTATEs as strict calls
SELECT dk_error($$SELECT distkit_rate_allow('e', 0, mode => 'lax')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 s', 10, 11, mode => 'lax')$$);
SELECT dk_error($$SELECT distkit_rate_allow(NULL, 1, mode => 'lax')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, '1 mon', mode => 'lax')$$);
SELECT dk_error($$SELECT distkit_rate_allow('', 10, mode => 'lax')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, on_error => 'maybe')$$);
SELECT dk_error($$SELECT * FROM distkit_rate_check('e', 10, on_error => '')$$);
SELECT dk_error($$SELECT distkit_rate_allow('e', 10, mode => 'fast')$$);
SELECT dk_error($$SET distkit.rate_on_error = 'sometimes'$$);

--
-- Shadow mode: every call allowed, what would have been denied counted
--
SELECT array_agg(distkit_rate_allow('sh', 2, '1000 s', shadow => true) ORDER BY i)
FROM generate_series(1, 5) i;
SELECT allowed, would_allow, decided_by FROM distkit_rate_check('sh', 2, '1000 s', shadow => true);
SET distkit.rate_shadow = on;
SELECT array_agg(distkit_rate_allow('sh', 2, '1000 s', mode => 'lax') ORDER BY i)
FROM generate_series(1, 3) i;
RESET distkit.rate_shadow;
SELECT distkit_rate_allow('sh', 2, '1000 s');
SELECT allowed, denied, shadow_denied FROM distkit_rate_stats WHERE key = 'sh';

--
-- on_error with Redis stopped: error (the default) raises, deny and allow
-- answer, local decides from this server's share (one server here: the
-- whole limit, burst 2)
--
\! "$DISTKIT_REDIS_CTL" stop
SELECT dk_error($$SELECT distkit_rate_allow('oe', 2, '1000 s')$$);
SELECT dk_error($$SELECT distkit_rate_allow('oe', 2, '1000 s', on_error => 'error', mode => 'lax')$$);
SELECT distkit_rate_allow('oe', 2, '1000 s', on_error => 'deny');
SELECT distkit_rate_allow('oe', 2, '1000 s', on_error => 'allow');
SELECT array_agg(distkit_rate_allow('oe', 2, '1000 s', on_error => 'local') ORDER BY i)
FROM generate_series(1, 3) i;
SELECT allowed, remaining, retry_after, decided_by
FROM distkit_rate_check('oe', 2, '1000 s', on_error => 'allow');
SET distkit.rate_on_error = deny;
SELECT allowed, would_allow, decided_by FROM distkit_rate_check('oe', 2, '1000 s', mode => 'lax');
SELECT allowed, would_allow, decided_by FROM distkit_rate_check('oe', 2, '1000 s', shadow => true);
RESET distkit.rate_on_error;
\! "$DISTKIT_REDIS_CTL" start
SELECT on_error_raised, on_error_denied, on_error_allowed, on_error_local, shadow_denied
FROM distkit_rate_stats WHERE key = 'oe';
-- the limiter was used in lax mode: once Redis is back the worker reserves
-- ahead for it, and gives the units back when it has been idle for
-- distkit.rate_return_after (1 s)
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		EXIT WHEN (SELECT remaining FROM distkit_rate_peek('oe', 2, '1000 s')) = 2
			AND (SELECT held FROM distkit_rate_stats WHERE key = 'oe') = 0;
		PERFORM pg_sleep(0.05);
	END LOOP;
END $$;
SELECT held, returned = reserved AS all_returned FROM distkit_rate_stats WHERE key = 'oe';
SELECT array_agg(distkit_rate_allow('oe', 2, '1000 s') ORDER BY i) FROM generate_series(1, 3) i;
