-- Circuit breakers: defaults, configuration, every transition (closed ->
-- open -> half-open -> closed or open again, forced open, reset), slow
-- calls, the sliding window, the Redis representation, every error, and
-- the README's wrapper pattern.  Most tests open for 1000 s so that nothing
-- moves while they run; the others use short windows and open_for with
-- sleeps longer than them, and check times against bounds computed from
-- the parameters.  (test/t/006_fleet_state.pl drives the transitions from
-- two servers.)

--
-- an unconfigured breaker: closed, with the defaults (50 %, 20 calls,
-- 60 s window, open for 30 s, 3 half-open calls)
--
SELECT * FROM distkit_breaker_state('b:new');
SELECT distkit_breaker_allow('b:new');
-- allowing a call on a closed breaker writes nothing
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:b:{b:new}' 'distkit:bc:{b:new}'`
SELECT :'raw' AS keys_after_allow;
SELECT array_agg(distkit_breaker_record('b:new', false) ORDER BY i) FROM generate_series(1, 19) i;
SELECT * FROM distkit_breaker_state('b:new');
SELECT distkit_breaker_record('b:new', false);
SELECT state, failure_rate, calls, retry_after BETWEEN '29 s' AND '30 s' AS retry_after_ok
FROM distkit_breaker_state('b:new');
SELECT distkit_breaker_allow('b:new');
SELECT distkit_breaker_reset('b:new');
SELECT * FROM distkit_breaker_state('b:new');

--
-- closed -> open: the failure rate reaches the threshold once the window
-- holds minimum_calls calls
--
SELECT distkit_breaker_configure('b:1', failure_rate_threshold => 50, minimum_calls => 4,
                                 sliding_window => '60 s', open_for => '1000 s', half_open_calls => 2);
\set raw `"$DISTKIT_REDIS_CTL" cli --raw HGETALL 'distkit:bc:{b:1}' | tr '\n' ' '`
SELECT :'raw' AS config;
SELECT distkit_breaker_record('b:1', true), distkit_breaker_record('b:1', true),
       distkit_breaker_record('b:1', false);
-- 3 calls, 1 failure: below minimum_calls, closed whatever the rate
SELECT state, round(failure_rate::numeric, 4) AS failure_rate, calls, retry_after, slow_call_rate
FROM distkit_breaker_state('b:1');
SELECT distkit_breaker_allow('b:1');
-- the 4th call, a failure: 2 of 4 = 50 %: open
SELECT distkit_breaker_record('b:1', false);
SELECT state, failure_rate, calls, retry_after BETWEEN '999 s' AND '1000 s' AS retry_after_ok
FROM distkit_breaker_state('b:1');
SELECT distkit_breaker_allow('b:1'), distkit_breaker_allow('b:1');
-- open: outcomes of calls admitted earlier are ignored
SELECT distkit_breaker_record('b:1', false), distkit_breaker_record('b:1', true);
SELECT state, calls FROM distkit_breaker_state('b:1');
-- in Redis: the state, its end on Redis's clock (ms), no expiry
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:b:{b:1}' st`
SELECT :'raw' AS st;
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:b:{b:1}' untl`
\set now `"$DISTKIT_REDIS_CTL" cli --raw TIME | head -1`
SELECT :'raw'::bigint - :'now'::bigint * 1000 BETWEEN 998000 AND 1001000 AS open_until_ok;
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:b:{b:1}'`
SELECT :pttl AS open_pttl;

--
-- the kill switch: forced open until reset
--
SELECT distkit_breaker_trip('b:1');
SELECT * FROM distkit_breaker_state('b:1');
SELECT distkit_breaker_allow('b:1'), distkit_breaker_record('b:1', true);
-- reset: closed, empty window, configuration kept
SELECT distkit_breaker_reset('b:1');
SELECT distkit_breaker_reset('b:1');
SELECT * FROM distkit_breaker_state('b:1');
SELECT distkit_breaker_allow('b:1');
\set raw `"$DISTKIT_REDIS_CTL" cli --raw HGETALL 'distkit:bc:{b:1}' | tr '\n' ' '`
SELECT :'raw' AS config_kept;
-- trip a closed breaker with calls in its window; it never expires
SELECT distkit_breaker_record('b:1', true);
SELECT distkit_breaker_trip('b:1');
SELECT * FROM distkit_breaker_state('b:1');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:b:{b:1}'`
SELECT :pttl AS forced_open_pttl;
SELECT distkit_breaker_trip('b:1');
SELECT distkit_breaker_reset('b:1');

--
-- below the threshold the breaker stays closed; the rate is over all the
-- calls in the window
--
SELECT distkit_breaker_configure('b:2', 50, 4, '60 s', '1000 s');
WITH calls AS MATERIALIZED (
	SELECT i, distkit_breaker_record('b:2', ok) AS state
	FROM unnest(ARRAY[true, true, true, false, false, false]) WITH ORDINALITY AS t(ok, i)
)
SELECT array_agg(state ORDER BY i) FROM calls;
-- threshold 33.3: 1 failure in 3 calls (33.33 %) opens
SELECT distkit_breaker_configure('b:3', 33.3, 3, '60 s', '1000 s');
SELECT distkit_breaker_record('b:3', true), distkit_breaker_record('b:3', false),
       distkit_breaker_record('b:3', true);
-- threshold 100: only when every call in the window failed
SELECT distkit_breaker_configure('b:4', 100, 2, '60 s', '1000 s');
SELECT distkit_breaker_record('b:4', false), distkit_breaker_record('b:4', true),
       distkit_breaker_record('b:4', false), distkit_breaker_record('b:4', false);
SELECT distkit_breaker_reset('b:4');
SELECT distkit_breaker_record('b:4', false), distkit_breaker_record('b:4', false);

--
-- open -> half-open after open_for; half_open_calls trials; closed when
-- they all succeed
--
SELECT distkit_breaker_configure('b:h', 50, 2, '60 s', open_for => '1 s', half_open_calls => 2);
SELECT distkit_breaker_record('b:h', false), distkit_breaker_record('b:h', false);
SELECT state, retry_after BETWEEN '1 ms' AND '1 s' AS retry_after_ok FROM distkit_breaker_state('b:h');
SELECT distkit_breaker_allow('b:h');
\! sleep 1.1
-- open_for has passed: half-open, every trial slot free (no retry_after)
SELECT * FROM distkit_breaker_state('b:h');
SELECT distkit_breaker_allow('b:h'), distkit_breaker_allow('b:h'), distkit_breaker_allow('b:h');
-- both slots taken: retry_after says when slots not recorded by then are
-- given to new callers
SELECT state, retry_after BETWEEN '1 ms' AND '1 s' AS retry_after_ok FROM distkit_breaker_state('b:h');
\set raw `"$DISTKIT_REDIS_CTL" cli HMGET 'distkit:b:{b:h}' st ht hs | tr '\n' ' '`
SELECT :'raw' AS trial_slots;
SELECT distkit_breaker_record('b:h', true);
SELECT state, failure_rate, calls FROM distkit_breaker_state('b:h');
SELECT distkit_breaker_record('b:h', true);
SELECT * FROM distkit_breaker_state('b:h');
SELECT distkit_breaker_allow('b:h');
-- closed again: the breaker's state key is gone (nothing left to remember)
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:b:{b:h}'`
SELECT :'raw' AS state_key_after_close;

--
-- half-open -> open at the first failed trial
--
SELECT distkit_breaker_record('b:h', false), distkit_breaker_record('b:h', false);
\! sleep 1.1
SELECT distkit_breaker_allow('b:h');
SELECT distkit_breaker_record('b:h', true);
SELECT distkit_breaker_allow('b:h');
SELECT distkit_breaker_record('b:h', false);
SELECT state, calls, retry_after BETWEEN '1 ms' AND '1 s' AS retry_after_ok
FROM distkit_breaker_state('b:h');
SELECT distkit_breaker_allow('b:h');

--
-- a trial slot taken but not recorded within open_for goes to the next
-- caller: a caller that dies cannot keep the breaker half-open
--
\! sleep 1.1
SELECT distkit_breaker_allow('b:h'), distkit_breaker_allow('b:h'), distkit_breaker_allow('b:h');
\! sleep 1.1
-- open_for has passed since the last slot was taken: retry now
SELECT state, retry_after FROM distkit_breaker_state('b:h');
SELECT distkit_breaker_allow('b:h'), distkit_breaker_allow('b:h'), distkit_breaker_allow('b:h');
SELECT distkit_breaker_record('b:h', true), distkit_breaker_record('b:h', true);
-- a recorded trial keeps its success: only the unrecorded slots are given
-- to new callers
SELECT distkit_breaker_record('b:h', false), distkit_breaker_record('b:h', false);
\! sleep 1.1
SELECT distkit_breaker_allow('b:h'), distkit_breaker_allow('b:h');
SELECT distkit_breaker_record('b:h', true);
SELECT distkit_breaker_allow('b:h');
\! sleep 1.1
SELECT distkit_breaker_allow('b:h'), distkit_breaker_allow('b:h');
SELECT distkit_breaker_record('b:h', true);
SELECT * FROM distkit_breaker_state('b:h');

--
-- slow calls: longer than slow_call_threshold; the slow-call rate opens
-- the breaker like the failure rate, and a slow trial reopens it
--
SELECT distkit_breaker_configure('b:slow', 50, 2, '60 s', '1 s', 1,
                                 slow_call_threshold => '100 ms');
SELECT distkit_breaker_record('b:slow', true, '50 ms'), distkit_breaker_record('b:slow', true, '100 ms'),
       distkit_breaker_record('b:slow', true), distkit_breaker_record('b:slow', true, '100.001 ms');
SELECT state, failure_rate, calls, slow_call_rate FROM distkit_breaker_state('b:slow');
SELECT distkit_breaker_record('b:slow', false, '1 day');
SELECT state, failure_rate, calls, round(slow_call_rate::numeric, 4) AS slow_call_rate
FROM distkit_breaker_state('b:slow');
SELECT distkit_breaker_record('b:slow', true, '1000 days');
\! sleep 1.1
SELECT distkit_breaker_allow('b:slow');
SELECT distkit_breaker_record('b:slow', true, '101 ms');
\! sleep 1.1
SELECT distkit_breaker_allow('b:slow');
SELECT distkit_breaker_record('b:slow', true, '99 ms');
-- without a slow_call_threshold no call is slow
SELECT distkit_breaker_configure('b:slow', 50, 2, '60 s', '1 s', 1);
SELECT distkit_breaker_record('b:slow', true, '1 day'), distkit_breaker_record('b:slow', true, '1 day');
SELECT state, slow_call_rate FROM distkit_breaker_state('b:slow');

--
-- the window: per-second buckets on Redis's clock; calls older than the
-- window no longer count
--
SELECT distkit_breaker_configure('b:w', 50, 3, '2 s', '1000 s');
SELECT distkit_breaker_record('b:w', false), distkit_breaker_record('b:w', false);
SELECT state, calls FROM distkit_breaker_state('b:w');
\set raw `"$DISTKIT_REDIS_CTL" cli --raw HKEYS 'distkit:b:{b:w}' | LC_ALL=C sort | tr '\n' ' '`
SELECT :'raw' ~ '^f (f:\d{10} ){1,2}n (n:\d{10} ){1,2}o $' AS bucket_fields;
-- closed: the key expires window + 1 s after its last write
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:b:{b:w}'`
SELECT :pttl BETWEEN 1 AND 3000 AS pttl_ok;
\! sleep 2.1
SELECT * FROM distkit_breaker_state('b:w');
SELECT distkit_breaker_record('b:w', false);
SELECT state, calls FROM distkit_breaker_state('b:w');
-- a 5 s window keeps calls 1.1 s apart: the third failure opens
SELECT distkit_breaker_configure('b:w5', 50, 3, '5 s', '1000 s');
SELECT distkit_breaker_record('b:w5', false);
\! sleep 1.1
SELECT distkit_breaker_record('b:w5', false);
SELECT state, calls FROM distkit_breaker_state('b:w5');
\! sleep 1.1
SELECT distkit_breaker_record('b:w5', false);
-- changing the window clears the window's counts (other settings do not)
SELECT distkit_breaker_configure('b:cw', 50, 10, '60 s', '1000 s');
SELECT distkit_breaker_record('b:cw', false), distkit_breaker_record('b:cw', true);
SELECT distkit_breaker_configure('b:cw', 90, 10, '60 s', '1000 s');
SELECT state, failure_rate, calls FROM distkit_breaker_state('b:cw');
SELECT distkit_breaker_configure('b:cw', 90, 10, '30 s', '1000 s');
SELECT state, failure_rate, calls FROM distkit_breaker_state('b:cw');
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:b:{b:cw}'`
SELECT :'raw' AS state_key_after_clear;
-- the configuration applies from the next call: a lower threshold opens
SELECT distkit_breaker_record('b:cw', false), distkit_breaker_record('b:cw', true);
SELECT distkit_breaker_configure('b:cw', 50, 2, '30 s', '1000 s');
SELECT distkit_breaker_record('b:cw', true);
SELECT distkit_breaker_configure('b:cw', 20, 2, '30 s', '1000 s');
SELECT distkit_breaker_record('b:cw', true);

--
-- errors: every parameter, NULLs, and keys written by another program
--
SELECT dk_error($$SELECT distkit_breaker_allow(NULL)$$);
SELECT dk_error($$SELECT distkit_breaker_allow('')$$);
SELECT dk_error($$SELECT distkit_breaker_state(repeat('n', 1025))$$);
SELECT dk_error($$SELECT distkit_breaker_record(NULL, true)$$);
SELECT dk_error($$SELECT distkit_breaker_record('b:e', NULL)$$);
SELECT dk_error($$SELECT distkit_breaker_record('b:e', true, '-1 ms')$$);
SELECT dk_error($$SELECT distkit_breaker_record('b:e', false, '1 month')$$);
SELECT dk_error($$SELECT distkit_breaker_reset(NULL)$$);
SELECT dk_error($$SELECT distkit_breaker_trip(NULL)$$);
SELECT dk_error($$SELECT distkit_breaker_configure(NULL)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', NULL)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', 0)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', -5)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', 100.5)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', 'NaN')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', minimum_calls => 0)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', minimum_calls => NULL)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', sliding_window => '0 s')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', sliding_window => '1.5 s')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', sliding_window => '3601 s')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', sliding_window => '1 month')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', sliding_window => NULL)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', open_for => '0 s')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', open_for => '366 days')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', open_for => '1 year')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', half_open_calls => 0)$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', slow_call_threshold => '0 s')$$);
SELECT dk_error($$SELECT distkit_breaker_configure('b:e', slow_call_threshold => '-1 s')$$);
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:b:{b:e}' 'distkit:bc:{b:e}'`
SELECT :'raw' AS nothing_stored;
-- the longest settings
SELECT distkit_breaker_configure('b:e', 100, 2147483647, '3600 s', '365 days', 2147483647, '365 days');
SELECT * FROM distkit_breaker_state('b:e');
SELECT distkit_breaker_record('b:e', false, '400 days');
SELECT * FROM distkit_breaker_state('b:e');
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:b:{b:alien}' x`
SELECT dk_error($$SELECT distkit_breaker_allow('b:alien')$$);
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:b:{b:alien2}' st ajar`
SELECT dk_error($$SELECT distkit_breaker_record('b:alien2', true)$$);
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:bc:{b:alien3}' thr x`
SELECT dk_error($$SELECT * FROM distkit_breaker_state('b:alien3')$$);
SELECT distkit_breaker_reset('b:alien'), distkit_breaker_reset('b:alien2');
\set raw `"$DISTKIT_REDIS_CTL" cli DEL 'distkit:bc:{b:alien3}'`

--
-- README: wrapping a call (here a stand-in for an HTTP call made by another
-- extension) with allow and record
--
CREATE FUNCTION fake_http_post(url text, body jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF body ? 'fail' THEN
		RAISE EXCEPTION 'HTTP 503 from %', url;
	END IF;
	RETURN jsonb_build_object('status', 200);
END $$;

CREATE FUNCTION charge(body jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	res jsonb;
BEGIN
	IF NOT distkit_breaker_allow('payments-api') THEN
		RAISE EXCEPTION 'the payments API is unavailable (circuit open)'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Retry in %s seconds.',
								(SELECT ceil(extract(epoch FROM coalesce(retry_after, '1 s')))
								 FROM distkit_breaker_state('payments-api')));
	END IF;
	t0 := clock_timestamp();
	BEGIN
		res := fake_http_post('https://payments.example/charge', body);
	EXCEPTION WHEN OTHERS THEN
		PERFORM distkit_breaker_record('payments-api', false, clock_timestamp() - t0);
		RAISE;
	END;
	PERFORM distkit_breaker_record('payments-api', true, clock_timestamp() - t0);
	RETURN res;
END $$;

SELECT distkit_breaker_configure('payments-api', failure_rate_threshold => 50, minimum_calls => 4,
                                 open_for => '1000 s', slow_call_threshold => '2 s');
SELECT charge('{"amount": 1}');
SELECT charge('{"amount": 2}');
SELECT dk_error($$SELECT charge('{"fail": true}')$$);
SELECT state, round(failure_rate::numeric, 2) AS failure_rate, calls, retry_after, slow_call_rate
FROM distkit_breaker_state('payments-api');
SELECT dk_error($$SELECT charge('{"fail": true}')$$) AS fourth_call;
SELECT state, calls FROM distkit_breaker_state('payments-api');
SELECT dk_error($$SELECT charge('{"amount": 3}')$$) AS fifth_call;
SELECT distkit_breaker_reset('payments-api');
SELECT charge('{"amount": 3}');
DROP FUNCTION charge(jsonb);
DROP FUNCTION fake_http_post(text, jsonb);

--
-- Redis unreachable: every fleet-state call raises an error (never a
-- guess), which a wrapper may turn into "fail open"
--
CREATE FUNCTION allow_or_open(name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	RETURN distkit_breaker_allow(name);
EXCEPTION WHEN sqlstate '08001' OR sqlstate '08006' OR sqlstate '08007' THEN
	RETURN true;	-- Redis unavailable: let the call through
END $$;
SELECT distkit_breaker_trip('b:down');
SELECT allow_or_open('b:down');
\! "$DISTKIT_REDIS_CTL" stop
SELECT dk_error($$SELECT distkit_breaker_allow('b:down')$$);
SELECT dk_error($$SELECT distkit_breaker_record('b:down', true)$$);
SELECT dk_error($$SELECT * FROM distkit_breaker_state('b:down')$$);
SELECT dk_error($$SELECT distkit_cache_get('c:down')$$);
SELECT dk_error($$SELECT distkit_cache_set('c:down', '1')$$);
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin('i:down')$$);
SELECT allow_or_open('b:down');
\! "$DISTKIT_REDIS_CTL" start
-- the tripped state survived the restart (AOF)
SELECT allow_or_open('b:down'), state FROM distkit_breaker_state('b:down');
DROP FUNCTION allow_or_open(text);

-- clean up
SELECT count(distkit_breaker_reset(n)) FROM unnest(ARRAY['b:new', 'b:1', 'b:2', 'b:3', 'b:4', 'b:h',
	'b:slow', 'b:w', 'b:w5', 'b:cw', 'b:e', 'payments-api', 'b:down']) AS n;
\set raw `"$DISTKIT_REDIS_CTL" delkeys 'distkit:bc:*'`
SELECT :'raw' AS configurations_deleted;
