-- Transactional counting (distkit.transactional): increments follow COMMIT
-- and ROLLBACK, savepoints and exception blocks, in strict and lax mode.
SELECT distkit_clear() >= 0 AS cleared;
SELECT distkit_flush() >= 0 AS flushed;
SHOW distkit.transactional;

-- strict: nothing reaches Redis before COMMIT; the transaction sees its
-- own increments (returned values, distkit_get, distkit_get_many)
SELECT distkit_set('t:s', 10);
BEGIN;
SET LOCAL distkit.transactional = on;
SELECT distkit_inc('t:s'), distkit_inc('t:s', 5), distkit_dec('t:s', 2);
SELECT distkit_get('t:s');
SELECT * FROM distkit_get_many(ARRAY['t:s', 't:none', 't:s']);
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{t:s}'`
SELECT :'raw' AS in_redis_before_commit;
ROLLBACK;
SELECT distkit_get('t:s') AS after_rollback;
SHOW distkit.transactional;
BEGIN;
SET LOCAL distkit.transactional = on;
SELECT distkit_inc('t:s'), distkit_inc('t:s', 5), distkit_dec('t:s', 2);
COMMIT;
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{t:s}'`
SELECT :'raw' AS in_redis_after_commit;

-- an AFTER INSERT trigger counting rows per tenant; the trigger function
-- carries the setting (ALTER FUNCTION ... SET), the session does not
CREATE TABLE t_events (id serial, tenant text NOT NULL, mode distkit_mode NOT NULL,
                       amount int NOT NULL);
CREATE FUNCTION t_count_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM distkit_inc('rows:' || NEW.tenant, 1, NEW.mode);
	IF NEW.amount < 0 THEN
		RAISE EXCEPTION 'negative amount %', NEW.amount;
	END IF;
	RETURN NULL;
END $$;
ALTER FUNCTION t_count_event() SET distkit.transactional = on;
CREATE TRIGGER t_events_count AFTER INSERT ON t_events
FOR EACH ROW EXECUTE FUNCTION t_count_event();
CREATE FUNCTION t_counts() RETURNS TABLE(strict_acme bigint, strict_bolt bigint, lax_acme bigint, lax_bolt bigint)
LANGUAGE sql AS $$
	SELECT distkit_get('rows:s-acme'), distkit_get('rows:s-bolt'),
	       distkit_get('rows:l-acme'), distkit_get('rows:l-bolt')
$$;
SHOW distkit.transactional;

-- 100 rows per mode inserted and rolled back: nothing counted
BEGIN;
INSERT INTO t_events (tenant, mode, amount) SELECT 's-acme', 'strict', g FROM generate_series(1, 100) g;
INSERT INTO t_events (tenant, mode, amount) SELECT 'l-acme', 'lax', g FROM generate_series(1, 100) g;
SELECT * FROM t_counts();
ROLLBACK;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM t_counts();
-- committed: +100 each
BEGIN;
INSERT INTO t_events (tenant, mode, amount) SELECT 's-acme', 'strict', g FROM generate_series(1, 100) g;
INSERT INTO t_events (tenant, mode, amount) SELECT 'l-acme', 'lax', g FROM generate_series(1, 100) g;
COMMIT;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM t_counts();
\set raw_strict `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{rows:s-acme}'`
\set raw_lax `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{rows:l-acme}'`
SELECT :'raw_strict' AS strict_in_redis, :'raw_lax' AS lax_in_redis;
-- one statement without BEGIN whose trigger fails on the 100th row: the
-- increments of the 99 rows before are discarded with the statement
INSERT INTO t_events (tenant, mode, amount)
SELECT 's-acme', 'strict', CASE WHEN g = 100 THEN -1 ELSE g END FROM generate_series(1, 100) g;
INSERT INTO t_events (tenant, mode, amount)
SELECT 'l-acme', 'lax', CASE WHEN g = 100 THEN -1 ELSE g END FROM generate_series(1, 100) g;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM t_counts();

-- savepoints: ROLLBACK TO discards exactly the increments made after the
-- savepoint (nested ones included); RELEASE keeps them
BEGIN;
INSERT INTO t_events (tenant, mode, amount) SELECT 's-bolt', 'strict', 1 FROM generate_series(1, 10);
INSERT INTO t_events (tenant, mode, amount) SELECT 'l-bolt', 'lax', 1 FROM generate_series(1, 10);
SAVEPOINT a;
INSERT INTO t_events (tenant, mode, amount) SELECT 's-bolt', 'strict', 1 FROM generate_series(1, 5);
INSERT INTO t_events (tenant, mode, amount) SELECT 'l-bolt', 'lax', 1 FROM generate_series(1, 5);
SAVEPOINT b;
INSERT INTO t_events (tenant, mode, amount) SELECT 's-bolt', 'strict', 1 FROM generate_series(1, 1000);
INSERT INTO t_events (tenant, mode, amount) SELECT 'l-bolt', 'lax', 1 FROM generate_series(1, 1000);
SELECT * FROM t_counts();
ROLLBACK TO a;
SELECT * FROM t_counts();
INSERT INTO t_events (tenant, mode, amount) SELECT 's-bolt', 'strict', 1 FROM generate_series(1, 3);
INSERT INTO t_events (tenant, mode, amount) SELECT 'l-bolt', 'lax', 1 FROM generate_series(1, 3);
SAVEPOINT c;
INSERT INTO t_events (tenant, mode, amount) SELECT 's-bolt', 'strict', 1 FROM generate_series(1, 7);
INSERT INTO t_events (tenant, mode, amount) SELECT 'l-bolt', 'lax', 1 FROM generate_series(1, 7);
SAVEPOINT d;
INSERT INTO t_events (tenant, mode, amount) SELECT 's-bolt', 'strict', 1 FROM generate_series(1, 2);
INSERT INTO t_events (tenant, mode, amount) SELECT 'l-bolt', 'lax', 1 FROM generate_series(1, 2);
RELEASE c;
SELECT * FROM t_counts();
SAVEPOINT e;
INSERT INTO t_events (tenant, mode, amount) SELECT 's-bolt', 'strict', 1 FROM generate_series(1, 40);
ROLLBACK TO e;
RELEASE e;
COMMIT;
SELECT distkit_flush() >= 0 AS flushed;
-- 10 + 3 + 7 + 2 = 22 each
SELECT * FROM t_counts();
\set raw_strict `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{rows:s-bolt}'`
\set raw_lax `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{rows:l-bolt}'`
SELECT :'raw_strict' AS strict_in_redis, :'raw_lax' AS lax_in_redis;

-- a PL/pgSQL exception block is a subtransaction: the increments of each
-- failed iteration are discarded, those of the others kept
DO $$
BEGIN
	FOR i IN 1..10 LOOP
		BEGIN
			INSERT INTO t_events (tenant, mode, amount) VALUES ('s-bolt', 'strict', i), ('l-bolt', 'lax', i);
			IF i % 2 = 0 THEN
				RAISE EXCEPTION 'even';
			END IF;
		EXCEPTION WHEN raise_exception THEN
			NULL;
		END;
	END LOOP;
END $$;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM t_counts();
-- nested exception blocks: the inner failure keeps the outer block's increments
DO $$
BEGIN
	BEGIN
		INSERT INTO t_events (tenant, mode, amount) VALUES ('s-bolt', 'strict', 1), ('l-bolt', 'lax', 1);
		BEGIN
			INSERT INTO t_events (tenant, mode, amount) VALUES ('s-bolt', 'strict', 1), ('l-bolt', 'lax', 1);
			PERFORM 1 / 0;
		EXCEPTION WHEN division_by_zero THEN
			NULL;
		END;
		INSERT INTO t_events (tenant, mode, amount) VALUES ('s-bolt', 'strict', 1), ('l-bolt', 'lax', 1);
	EXCEPTION WHEN others THEN
		RAISE NOTICE 'not reached';
	END;
END $$;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM t_counts();
-- the table agrees with the counters
SELECT tenant, count(*) FROM t_events GROUP BY tenant ORDER BY tenant;

-- a deferred constraint trigger fires at COMMIT: its increments count
CREATE FUNCTION t_count_deferred() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM distkit_inc('rows:deferred');
	RETURN NULL;
END $$;
ALTER FUNCTION t_count_deferred() SET distkit.transactional = on;
CREATE CONSTRAINT TRIGGER t_events_deferred AFTER INSERT ON t_events
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION t_count_deferred();
BEGIN;
INSERT INTO t_events (tenant, mode, amount) SELECT 'other', 'strict', 1 FROM generate_series(1, 4);
SELECT distkit_get('rows:deferred') AS before_commit;
COMMIT;
SELECT distkit_get('rows:deferred') AS after_commit;
DROP TRIGGER t_events_deferred ON t_events;

-- a procedure that commits and rolls back inside
CREATE PROCEDURE t_proc() LANGUAGE plpgsql AS $$
BEGIN
	PERFORM distkit_inc('t:proc', 1);
	COMMIT;
	PERFORM distkit_inc('t:proc', 10);
	ROLLBACK;
	PERFORM distkit_inc('t:proc', 100);
END $$;
-- (a procedure with a SET clause may not COMMIT: set it for the session)
SET distkit.transactional = on;
CALL t_proc();
SELECT distkit_get('t:proc');

-- the setting is per session too; off again gives immediate increments
SET distkit.transactional = on;
BEGIN;
SELECT distkit_inc('t:session', 2);
ROLLBACK;
SELECT distkit_get('t:session');
SET distkit.transactional = off;
BEGIN;
SELECT distkit_inc('t:session', 2);
ROLLBACK;
SELECT distkit_get('t:session');

-- lax: increments reach the buffer only at COMMIT; the transaction sees
-- this server's view plus its own increments; strict and lax increments of
-- one key add up
SET distkit.transactional = on;
SELECT distkit_set('t:mix', 1000);
SELECT distkit_get('t:mix', 'lax') AS lax_view_before;
BEGIN;
SELECT distkit_inc('t:mix', 1, 'lax') AS lax_view, distkit_inc('t:mix', 10, 'strict') AS strict_view;
SELECT distkit_get('t:mix', 'lax') AS lax, distkit_get('t:mix', 'strict') AS strict;
SELECT pending_keys FROM distkit_stats;
COMMIT;
SELECT distkit_flush() >= 0 AS flushed;
SELECT distkit_get('t:mix', 'lax') AS lax, distkit_get('t:mix', 'strict') AS strict;
-- many increments of one key make one delta; many keys go in pipelined
-- chunks of 1000 at commit
BEGIN;
SELECT count(distkit_inc('t:loop', 1, 'lax')) FROM generate_series(1, 10000);
SELECT count(distkit_inc('t:many:' || g, g)) FROM generate_series(1, 2500) g;
SELECT distkit_get('t:loop', 'lax') AS loop,
       (SELECT sum(value) FROM distkit_get_many(ARRAY(SELECT 't:many:' || g FROM generate_series(1, 2500) g))) AS many;
COMMIT;
SELECT distkit_flush() >= 0 AS flushed;
SELECT distkit_get('t:loop') AS loop,
       (SELECT sum(value) FROM distkit_get_many(ARRAY(SELECT 't:many:' || g FROM generate_series(1, 2500) g))) AS many,
       (SELECT count(*) FROM distkit_get_many(ARRAY(SELECT 't:many:' || g FROM generate_series(1, 2500) g)) m
        WHERE m.value = substr(m.key, 8)::bigint) AS exact_keys;
-- a lax key too long for the buffer is sent strictly before commit
SELECT strict_fallbacks AS fallbacks_before FROM distkit_stats \gset
BEGIN;
SELECT distkit_inc(repeat('x', 300), 3, 'lax');
COMMIT;
SELECT distkit_get(repeat('x', 300), 'strict') AS long_key;
SELECT strict_fallbacks - :fallbacks_before AS fallbacks FROM distkit_stats;

-- set, del and clear are immediate; they supersede the transaction's
-- pending increments of the keys they overwrite, so the transaction sees
-- its statements in order (and so does Redis after COMMIT)
BEGIN;
SELECT distkit_inc('t:set', 5);
SELECT distkit_set('t:set', 100);
SELECT distkit_get('t:set');
SELECT distkit_inc('t:set', 1);
COMMIT;
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{t:set}'`
SELECT :'raw' AS in_redis;
BEGIN;
SELECT distkit_inc('t:set', 4);
SELECT distkit_del('t:set') AS had;
SELECT distkit_get('t:set');
COMMIT;
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:c:{t:set}'`
SELECT :'raw' AS exists_after_del;
-- set inside a savepoint that rolls back: set stays (it is immediate), and
-- the increments made before it stay superseded
BEGIN;
SELECT distkit_inc('t:set', 7);
SAVEPOINT s;
SELECT distkit_set('t:set', 50);
ROLLBACK TO s;
SELECT distkit_get('t:set');
COMMIT;
SELECT distkit_get('t:set');
-- inc_if compares Redis's value (the pending increment is not there yet)
BEGIN;
SELECT distkit_inc('t:set', 1);
SELECT * FROM distkit_inc_if('t:set', 10, '=', 50);
SELECT distkit_get('t:set');
COMMIT;
SELECT distkit_get('t:set');

-- overflow is detected at the call, counting the pending increments
SELECT distkit_set('t:big', 9223372036854775806);
SELECT distkit_get('t:big', 'lax') AS lax_view;
BEGIN;
SELECT distkit_inc('t:big');
SELECT dk_error($$SELECT distkit_inc('t:big')$$);
SELECT dk_error($$SELECT distkit_dec('t:big', -1, 'lax')$$);
COMMIT;
SELECT distkit_get('t:big');

-- PREPARE TRANSACTION with pending increments: refused, nothing counted
BEGIN;
SELECT distkit_inc('t:prep', 1);
PREPARE TRANSACTION 't_prep';
SELECT distkit_get('t:prep');
-- without pending increments (rolled back to a savepoint, superseded by a
-- set) PREPARE works
BEGIN;
SELECT distkit_inc('t:prep', 1);
SAVEPOINT s;
SELECT distkit_inc('t:prep', 1);
ROLLBACK TO s;
SELECT distkit_set('t:prep', 0);
PREPARE TRANSACTION 't_prep';
COMMIT PREPARED 't_prep';
SELECT distkit_get('t:prep');
-- increments that cancel out leave nothing to apply: PREPARE works too
BEGIN;
SELECT distkit_inc('t:prep', 1), distkit_dec('t:prep', 1);
PREPARE TRANSACTION 't_prep0';
COMMIT PREPARED 't_prep0';
SELECT distkit_get('t:prep');

-- Redis down at COMMIT: the transaction fails with the connection error and
-- nothing is counted, neither strict nor lax
SELECT distkit_set('t:down', 1), distkit_set('t:down-lax', 1);
SELECT distkit_get('t:down-lax', 'lax') AS lax_view;
BEGIN;
SELECT distkit_inc('t:down', 1), distkit_inc('t:down-lax', 1, 'lax');
\! "$DISTKIT_REDIS_CTL" stop
\set VERBOSITY sqlstate
COMMIT;
\set VERBOSITY default
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate,
       (SELECT string_agg(replace(:'LAST_ERROR_MESSAGE', p, 'PORT'), '') FROM unnest(dk_ports()) p
        WHERE strpos(:'LAST_ERROR_MESSAGE', p) > 0) AS message;
\! "$DISTKIT_REDIS_CTL" start
SELECT distkit_flush() >= 0 AS flushed;
SELECT distkit_get('t:down') AS strict, distkit_get('t:down-lax', 'strict') AS lax;

-- a key that fails at COMMIT (another program made it overflow, or wrote a
-- non-integer): the transaction fails and the increments Redis had applied
-- to other keys in the same commit are taken back
SELECT distkit_set('t:ok1', 1), distkit_set('t:ok2', 1), distkit_set('t:bad', 1);
BEGIN;
SELECT distkit_inc('t:ok1', 5), distkit_inc('t:bad', 5), distkit_inc('t:ok2', 5);
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:c:{t:bad}' 9223372036854775807`
COMMIT;
SELECT * FROM distkit_get_many(ARRAY['t:ok1', 't:bad', 't:ok2']);
-- (a lax key this server holds no total for is read from Redis once: 1 + 5)
SELECT distkit_set('t:bad', 1);
BEGIN;
SELECT distkit_inc('t:ok1', 5), distkit_inc('t:bad', 5), distkit_inc('t:ok2', 5, 'lax');
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:c:{t:bad}' 'abc'`
COMMIT;
SELECT distkit_flush() >= 0 AS flushed;
SELECT distkit_get('t:ok1') AS ok1, distkit_get('t:ok2') AS ok2;
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{t:bad}'`
SELECT :'raw' AS bad;
\set raw `"$DISTKIT_REDIS_CTL" cli DEL 'distkit:c:{t:bad}'`

-- distkit.prefix changed inside the transaction (superuser): the increments
-- keep the prefix they were made under
BEGIN;
SELECT distkit_inc('t:pfx', 1), distkit_inc('t:pfx', 1, 'lax');
SET LOCAL distkit.prefix = 'other';
SELECT distkit_get('t:pfx');
COMMIT;
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{t:pfx}'`
\set other `"$DISTKIT_REDIS_CTL" cli EXISTS 'other:c:{t:pfx}'`
SELECT :'raw' AS in_redis, :'other' AS under_other_prefix;

-- instance-aware counters follow the transaction too: (total, this_instance)
-- both include the transaction's pending increments; strict and lax
SELECT distkit_instance_clear() >= 0 AS cleared;
CREATE TABLE t_orders (tenant text NOT NULL, mode distkit_mode NOT NULL, fail boolean NOT NULL DEFAULT false);
CREATE FUNCTION t_count_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM distkit_instance_inc('orders:' || NEW.tenant, 1, NEW.mode);
	IF NEW.fail THEN
		RAISE EXCEPTION 'failing order';
	END IF;
	RETURN NULL;
END $$;
ALTER FUNCTION t_count_order() SET distkit.transactional = on;
CREATE TRIGGER t_orders_count AFTER INSERT ON t_orders
FOR EACH ROW EXECUTE FUNCTION t_count_order();
CREATE FUNCTION t_order_counts() RETURNS TABLE(strict_total bigint, strict_here bigint, lax_total bigint, lax_here bigint)
LANGUAGE sql AS $$
	SELECT s.total, s.this_instance, l.total, l.this_instance
	FROM distkit_instance_get('orders:s', 'strict') s, distkit_instance_get('orders:l', 'lax') l
$$;
-- another instance's live slice (simulated) is part of the totals throughout:
-- registered by test/fake-instance.sh as its worker would, its heartbeat
-- then dated far in the future (so it stays live), its slices written
-- directly (L dropped: the cached sum is recomputed)
SELECT instance_number AS my_num FROM distkit_instances WHERE is_this_server \gset
\set fake `echo ffffffff-0000-4000-8000-000000000001 | "$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit beat 60000`
\set raw `"$DISTKIT_REDIS_CTL" cli ZADD 'distkit:reg:{instances}:alive' 99999999999999 ffffffff-0000-4000-8000-000000000001`
\set fake `"$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit slice ffffffff-0000-4000-8000-000000000001 orders:s 1000`
\set fake `"$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit slice ffffffff-0000-4000-8000-000000000001 orders:l 1000`
\! sleep 1.3
SELECT * FROM t_order_counts();
BEGIN;
INSERT INTO t_orders SELECT 's', 'strict' FROM generate_series(1, 100);
INSERT INTO t_orders SELECT 'l', 'lax' FROM generate_series(1, 100);
SELECT * FROM t_order_counts();
ROLLBACK;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM t_order_counts();
BEGIN;
INSERT INTO t_orders SELECT 's', 'strict' FROM generate_series(1, 100);
INSERT INTO t_orders SELECT 'l', 'lax' FROM generate_series(1, 100);
SAVEPOINT a;
INSERT INTO t_orders SELECT 's', 'strict' FROM generate_series(1, 50);
INSERT INTO t_orders SELECT 'l', 'lax' FROM generate_series(1, 50);
ROLLBACK TO a;
COMMIT;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM t_order_counts();
-- an exception block per row: only the rows that did not fail count
DO $$
BEGIN
	FOR i IN 1..10 LOOP
		BEGIN
			INSERT INTO t_orders VALUES ('s', 'strict', i % 2 = 0), ('l', 'lax', i % 2 = 0);
		EXCEPTION WHEN raise_exception THEN
			NULL;
		END;
	END LOOP;
END $$;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM t_order_counts();
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:i:{orders:s}' 'v:':my_num`
SELECT :'raw' AS strict_slice_in_redis;
\set raw `"$DISTKIT_REDIS_CTL" cli HGET 'distkit:i:{orders:l}' 'v:':my_num`
SELECT :'raw' AS lax_slice_in_redis;
-- del returns what the transaction saw, set_here supersedes the pending
-- increments, and the deltas made after them count from there
SET distkit.transactional = on;
BEGIN;
SELECT * FROM distkit_instance_inc('orders:s', 7);
SELECT * FROM distkit_instance_set_here('orders:s', 20);
SELECT * FROM distkit_instance_inc('orders:s', 2);
COMMIT;
SELECT * FROM distkit_instance_get('orders:s');
BEGIN;
SELECT * FROM distkit_instance_inc('orders:l', 3, 'lax');
SELECT * FROM distkit_instance_del('orders:l') AS had;
SELECT * FROM distkit_instance_inc('orders:l', 4, 'lax');
COMMIT;
SELECT distkit_flush() >= 0 AS flushed;
SELECT * FROM distkit_instance_get('orders:l', 'strict');
-- Redis down at COMMIT: the transaction fails, nothing is counted
BEGIN;
SELECT total, this_instance FROM distkit_instance_inc('orders:s', 1);
\! "$DISTKIT_REDIS_CTL" stop
\set VERBOSITY sqlstate
COMMIT;
\set VERBOSITY default
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
\! "$DISTKIT_REDIS_CTL" start
SELECT * FROM distkit_instance_get('orders:s');
-- PREPARE TRANSACTION with a pending instance-aware increment is refused
BEGIN;
SELECT total FROM distkit_instance_inc('orders:s', 1);
PREPARE TRANSACTION 't_prep2';
SELECT * FROM distkit_instance_get('orders:s');
-- clear_here drops the pending increments of this instance's slices
BEGIN;
SELECT total FROM distkit_instance_inc('orders:s', 5);
SELECT distkit_instance_clear_here() AS slices_removed;
SELECT * FROM distkit_instance_get('orders:s');
COMMIT;
SELECT * FROM distkit_instance_get('orders:s');
RESET distkit.transactional;
\set fake `echo ffffffff-0000-4000-8000-000000000001 | "$(dirname "$DISTKIT_REDIS_CTL")/fake-instance.sh" distkit leave 60000`
SELECT distkit_instance_clear() AS removed;
DROP TABLE t_orders;

RESET distkit.transactional;
DROP TABLE t_events;
