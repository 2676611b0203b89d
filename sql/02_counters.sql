-- Strict counters: every function, exact values, NULL handling.
SELECT distkit_inc('c1');
SELECT distkit_inc('c1', 41);
SELECT distkit_dec('c1');
SELECT distkit_dec('c1', 10);
SELECT distkit_get('c1');
SELECT distkit_get('c1', 'strict');
SELECT distkit_inc('c1', -31, 'strict');
SELECT distkit_get('missing');
SELECT distkit_set('c2', 100);
SELECT distkit_get('c2');
SELECT distkit_set('c2', -5);
SELECT distkit_inc('c2', 0);
SELECT distkit_del('c2');
SELECT distkit_get('c2');
SELECT distkit_del('c2');
SELECT distkit_del('never-existed');

-- the value in Redis is a plain integer under prefix:c:{key}
SELECT distkit_set('user:42', 7);
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{user:42}'`
SELECT :'raw' AS raw_value;

-- get_many: one row per key in input order, duplicates kept, missing = 0
SELECT distkit_set('m1', 1), distkit_set('m2', 2);
SELECT * FROM distkit_get_many(ARRAY['m2', 'nope', 'm1', 'm2']);
SELECT * FROM distkit_get_many(ARRAY[]::text[]);
SELECT * FROM distkit_get_many(ARRAY['m1'], 'strict');

-- inc_if: each operator, applied and not applied
SELECT distkit_set('stock:42', 2);
SELECT * FROM distkit_inc_if('stock:42', -1, '>=', 1);
SELECT * FROM distkit_inc_if('stock:42', -1, '>=', 1);
SELECT * FROM distkit_inc_if('stock:42', -1, '>=', 1);
SELECT distkit_get('stock:42');
SELECT * FROM distkit_inc_if('ops', 5, '=', 0);
SELECT * FROM distkit_inc_if('ops', 5, '=', 0);
SELECT * FROM distkit_inc_if('ops', 1, '<>', 5);
SELECT * FROM distkit_inc_if('ops', 1, '<>', 0);
SELECT * FROM distkit_inc_if('ops', 1, '!=', 6);
SELECT * FROM distkit_inc_if('ops', 1, '<', 6);
SELECT * FROM distkit_inc_if('ops', 1, '<', 8);
SELECT * FROM distkit_inc_if('ops', 1, '<=', 7);
SELECT * FROM distkit_inc_if('ops', 1, '<=', 8);
SELECT * FROM distkit_inc_if('ops', 1, '>', 9);
SELECT * FROM distkit_inc_if('ops', 1, '>', -100);
SELECT * FROM distkit_inc_if('ops', 1, '>=', 11);
SELECT * FROM distkit_inc_if('ops', 1, '>=', 10);
-- a missing key compares as 0 and is not created when not applied
SELECT * FROM distkit_inc_if('absent', 1, '>', 0);
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:c:{absent}'`
SELECT :'raw' AS absent_exists;

-- exact 64-bit comparison: these differ by 1 beyond 2^53
SELECT distkit_set('big', 9007199254740993);
SELECT * FROM distkit_inc_if('big', 1, '=', 9007199254740992);
SELECT * FROM distkit_inc_if('big', 1, '=', 9007199254740993);
SELECT * FROM distkit_inc_if('big', 0, '>', 9007199254740993);
SELECT * FROM distkit_inc_if('big', 0, '<', 9007199254740995);
SELECT distkit_set('neg', -9007199254740993);
SELECT * FROM distkit_inc_if('neg', 1, '<', -9007199254740992);
SELECT * FROM distkit_inc_if('neg', 1, '<', -9007199254740992);
SELECT * FROM distkit_inc_if('neg', 0, '>', -9223372036854775808);
SELECT * FROM distkit_inc_if('neg', 0, '<', 0);
SELECT * FROM distkit_inc_if('neg', 0, '>', 0);

-- exact values at the limits
SELECT distkit_set('max', 9223372036854775806);
SELECT distkit_inc('max');
SELECT distkit_get('max');
SELECT distkit_set('min', -9223372036854775807);
SELECT distkit_dec('min');

-- clear removes counters only, and says how many
SELECT distkit_clear();
SELECT distkit_get('c1'), distkit_get('max');
SELECT distkit_clear();

-- counters are not transactional (documented): a rollback keeps the increment
BEGIN;
SELECT distkit_inc('tx');
ROLLBACK;
SELECT distkit_get('tx');

-- usable from a trigger
CREATE TABLE orders (id serial, tenant text);
CREATE FUNCTION count_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM distkit_inc('orders:' || NEW.tenant);
	RETURN NEW;
END $$;
CREATE TRIGGER orders_count AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION count_order();
INSERT INTO orders (tenant) SELECT CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 30) g;
SELECT * FROM distkit_get_many(ARRAY['orders:a', 'orders:b']);
DROP TABLE orders;
DROP FUNCTION count_order();
