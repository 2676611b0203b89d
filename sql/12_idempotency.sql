-- Idempotency keys: begin / complete / abandon, the holder's identity (a
-- session), the lease, the result's TTL, the Redis representation, every
-- error, and the README's webhook example.  Another session is a new
-- connection (\c).  Times are checked against bounds computed from the
-- lease and the TTLs.

--
-- started, in_progress, completed
--
SELECT * FROM distkit_idempotency_begin('i:order:1');
-- the holder's session claims it again (e.g. after a rollback): started,
-- with its lease renewed
SELECT * FROM distkit_idempotency_begin('i:order:1');
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:ik:{i:order:1}' st`
SELECT :'raw' AS st;
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:ik:{i:order:1}' tok`
SELECT :'raw' ~ '^[0-9a-f]{32}$' AS token_format;
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:ik:{i:order:1}' ttl`
SELECT :'raw' AS ttl_ms;
-- an in-progress claim expires after distkit.idempotency_lease (1 minute)
SHOW distkit.idempotency_lease;
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ik:{i:order:1}'`
SELECT :pttl BETWEEN 59000 AND 60000 AS lease_pttl_ok;
-- another session: in_progress
\c
SELECT * FROM distkit_idempotency_begin('i:order:1');
-- ... which can neither complete nor abandon it
SELECT distkit_idempotency_complete('i:order:1', '{"not": "mine"}');
SELECT distkit_idempotency_abandon('i:order:1');
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:ik:{i:order:1}' st`
SELECT :'raw' AS still_in_progress;
-- this session claims its own key and completes it
SELECT * FROM distkit_idempotency_begin('i:order:2');
SELECT distkit_idempotency_complete('i:order:2', '{"charge": "ch_1", "amount": 500}');
SELECT * FROM distkit_idempotency_begin('i:order:2');
-- completed keeps the result for the ttl (24 hours by default) from completion
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ik:{i:order:2}'`
SELECT :pttl BETWEEN 86399000 AND 86400000 AS result_pttl_ok;
\set raw `"$DISTKIT_REDIS_CTL" cli --raw HGETALL 'distkit:ik:{i:order:2}' | tr '\n' ' '`
SELECT :'raw' AS stored;
-- a second complete or abandon does nothing
SELECT distkit_idempotency_complete('i:order:2', '{"charge": "ch_2"}');
SELECT distkit_idempotency_abandon('i:order:2');
-- other sessions see the same result
\c
SELECT * FROM distkit_idempotency_begin('i:order:2');
-- completing or abandoning a key this session never claimed: false
SELECT distkit_idempotency_complete('i:never', '1'), distkit_idempotency_abandon('i:never');
SELECT * FROM distkit_idempotency_begin('i:never');
SELECT distkit_idempotency_abandon('i:never');

--
-- abandon lets a retry start again
--
SELECT * FROM distkit_idempotency_begin('i:retry');
SELECT distkit_idempotency_abandon('i:retry');
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:ik:{i:retry}'`
SELECT :'raw' AS exists_after_abandon;
SELECT distkit_idempotency_abandon('i:retry');
SELECT distkit_idempotency_complete('i:retry', '1');
\c
SELECT * FROM distkit_idempotency_begin('i:retry');
SELECT distkit_idempotency_complete('i:retry', '"second try"');
SELECT * FROM distkit_idempotency_begin('i:retry');

--
-- the lease: a claim whose holder goes away is free again after it
--
SET distkit.idempotency_lease = '1s';
SELECT * FROM distkit_idempotency_begin('i:lease');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ik:{i:lease}'`
SELECT :pttl BETWEEN 1 AND 1000 AS lease_pttl_ok;
\c
SET distkit.idempotency_lease = '1s';
SELECT * FROM distkit_idempotency_begin('i:lease');
\! sleep 1.1
SELECT * FROM distkit_idempotency_begin('i:lease');
SELECT distkit_idempotency_complete('i:lease', '"taken over"');
SELECT * FROM distkit_idempotency_begin('i:lease');
-- a holder whose lease expired completes anyway if nobody claimed the key
-- since (the work is done: its result is kept) ...
SELECT * FROM distkit_idempotency_begin('i:late', '1000 s');
\! sleep 1.1
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:ik:{i:late}'`
SELECT :'raw' AS exists_after_lease;
SELECT distkit_idempotency_complete('i:late', '"late but done"');
SELECT * FROM distkit_idempotency_begin('i:late');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ik:{i:late}'`
SELECT :pttl BETWEEN 999000 AND 1000000 AS late_result_pttl_ok;
-- ... but not if another caller claimed it meanwhile
SELECT * FROM distkit_idempotency_begin('i:late2');
\set tok `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:ik:{i:late2}' tok`
\! sleep 1.1
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:ik:{i:late2}' st in_progress tok othertoken ttl 0`
SELECT distkit_idempotency_complete('i:late2', '"too late"');
SELECT distkit_idempotency_abandon('i:late2');
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:ik:{i:late2}' tok`
SELECT :'raw' AS other_holder_kept;
RESET distkit.idempotency_lease;

--
-- ttl of the result: from completion; NULL keeps it for ever
--
SELECT * FROM distkit_idempotency_begin('i:ttl', '1 s');
SELECT distkit_idempotency_complete('i:ttl', '{"short": true}');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ik:{i:ttl}'`
SELECT :pttl BETWEEN 1 AND 1000 AS result_pttl_ok;
SELECT * FROM distkit_idempotency_begin('i:ttl');
\! sleep 1.1
SELECT * FROM distkit_idempotency_begin('i:ttl');
SELECT distkit_idempotency_abandon('i:ttl');
SELECT * FROM distkit_idempotency_begin('i:forever', NULL);
SELECT distkit_idempotency_complete('i:forever', '[]');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ik:{i:forever}'`
SELECT :pttl AS forever_pttl;
SELECT * FROM distkit_idempotency_begin('i:forever');
-- the holder's begin again replaces the ttl
SELECT * FROM distkit_idempotency_begin('i:ttl2', '1 hour');
SELECT * FROM distkit_idempotency_begin('i:ttl2', '2 hours');
SELECT distkit_idempotency_complete('i:ttl2', '2');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:ik:{i:ttl2}'`
SELECT :pttl BETWEEN 7199000 AND 7200000 AS replaced_ttl_ok;

--
-- results: any jsonb up to 512 kB of text form
--
SELECT * FROM distkit_idempotency_begin('i:json');
SELECT distkit_idempotency_complete('i:json', '{"a": [1, 2.50, "é ☃"], "b": null}');
SELECT * FROM distkit_idempotency_begin('i:json');
SELECT * FROM distkit_idempotency_begin('i:null');
SELECT distkit_idempotency_complete('i:null', 'null');
SELECT state, result, result IS NULL AS sql_null FROM distkit_idempotency_begin('i:null');
SELECT * FROM distkit_idempotency_begin('i:big');
SELECT dk_error($$SELECT distkit_idempotency_complete('i:big', to_jsonb(repeat('x', 524287)))$$);
SELECT * FROM distkit_idempotency_begin('i:big');
SELECT distkit_idempotency_complete('i:big', to_jsonb(repeat('x', 524286)));
SELECT state, length(result #>> '{}') FROM distkit_idempotency_begin('i:big');

--
-- errors
--
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin(NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin('')$$);
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin(repeat('k', 1025))$$);
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin('i:e', '0 s')$$);
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin('i:e', '-1 hour')$$);
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin('i:e', '1 month')$$);
SELECT dk_error($$SELECT distkit_idempotency_complete(NULL, '1')$$);
SELECT dk_error($$SELECT distkit_idempotency_complete('i:e', NULL)$$);
SELECT dk_error($$SELECT distkit_idempotency_abandon(NULL)$$);
SELECT dk_error($$SET distkit.idempotency_lease = 0$$);
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:ik:{i:e}'`
SELECT :'raw' AS nothing_stored;
-- keys written by another program
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:ik:{i:alien}' x`
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin('i:alien')$$);
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:ik:{i:alien2}' f 1`
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin('i:alien2')$$);
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:ik:{i:alien3}' st completed res notjson`
SELECT dk_error($$SELECT * FROM distkit_idempotency_begin('i:alien3')$$);
\set raw `"$DISTKIT_REDIS_CTL" cli --raw HGETALL 'distkit:ik:{i:alien2}' | tr '\n' ' '`
SELECT :'raw' AS alien_unchanged;
\set raw `"$DISTKIT_REDIS_CTL" cli DEL 'distkit:ik:{i:alien}' 'distkit:ik:{i:alien2}' 'distkit:ik:{i:alien3}'`

--
-- not transactional: a claim made in a rolled-back transaction stays
-- (its session can claim it again; see the example below)
--
BEGIN;
SELECT * FROM distkit_idempotency_begin('i:tx');
ROLLBACK;
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:ik:{i:tx}' st`
SELECT :'raw' AS st_after_rollback;
SELECT * FROM distkit_idempotency_begin('i:tx');

--
-- README: a webhook handler that performs its side effect once and returns
-- the same result every time, however often it is called
--
CREATE TABLE payments (event_id text PRIMARY KEY, amount int, id serial);

CREATE FUNCTION handle_payment_webhook(event_id text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	k text := 'webhook:' || event_id;
	claim record;
	res jsonb;
BEGIN
	-- wait up to 10 s for another caller that is handling the same event
	FOR attempt IN 1 .. 200 LOOP
		SELECT * INTO claim FROM distkit_idempotency_begin(k, '7 days');
		EXIT WHEN claim.state <> 'in_progress';
		PERFORM pg_sleep(0.05);
	END LOOP;
	IF claim.state = 'completed' THEN
		RETURN claim.result;                        -- done before: same answer
	ELSIF claim.state = 'in_progress' THEN
		RAISE EXCEPTION 'webhook event % is still being handled', event_id
			USING ERRCODE = 'lock_not_available', HINT = 'Retry later.';
	END IF;
	BEGIN                                           -- started: we do the work
		INSERT INTO payments (event_id, amount)
		VALUES (event_id, (payload ->> 'amount')::int)
		RETURNING jsonb_build_object('payment', id, 'amount', amount) INTO res;
	EXCEPTION WHEN OTHERS THEN
		PERFORM distkit_idempotency_abandon(k);     -- let a retry start again
		RAISE;
	END;
	PERFORM distkit_idempotency_complete(k, res);
	RETURN res;
END $$;

SELECT handle_payment_webhook('evt_1', '{"amount": 500}');
SELECT handle_payment_webhook('evt_1', '{"amount": 500}');
\c
SELECT handle_payment_webhook('evt_1', '{"amount": 500}');
SELECT count(*) AS payments FROM payments;
-- a failing handler abandons its claim: the retry performs the work
SELECT dk_error($$SELECT handle_payment_webhook('evt_2', '{"amount": "oops"}')$$);
SELECT handle_payment_webhook('evt_2', '{"amount": 7}');
SELECT handle_payment_webhook('evt_2', '{"amount": 7}');
SELECT event_id, amount FROM payments ORDER BY event_id;
DROP FUNCTION handle_payment_webhook(text, jsonb);
DROP TABLE payments;
\set raw `"$DISTKIT_REDIS_CTL" delkeys 'distkit:ik:*'`
SELECT :'raw'::int > 0 AS cleaned_up;
