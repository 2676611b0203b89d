-- Cache with TTL: every function and variant, the Redis representation,
-- expiry, the size limit, every error, clear, and the README's cache-aside
-- pattern.  Times are checked against bounds computed from the TTLs.
SELECT distkit_cache_clear() >= 0 AS cleared;

--
-- jsonb values: stored as their text form, read back as jsonb
--
SELECT distkit_cache_set('c:user:1', '{"name": "Ada", "tags": ["x", "y"], "n": 1.50}');
SELECT distkit_cache_get('c:user:1');
SELECT distkit_cache_get('c:user:1') -> 'tags' ->> 1 AS second_tag;
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:kv:{c:user:1}'`
SELECT :'raw' AS stored_text;
-- scalars, null, nesting, unicode
SELECT distkit_cache_set('c:j:' || i, v)
FROM (VALUES (1, '42'::jsonb), (2, '"é ☃ 😀"'), (3, 'null'), (4, 'true'),
             (5, '[1, [2, {"a": {}}]]'), (6, '-0.000001')) AS t(i, v);
SELECT i, distkit_cache_get('c:j:' || i) FROM generate_series(1, 6) i;
-- an absent key reads as NULL
SELECT distkit_cache_get('c:absent') IS NULL AS absent_is_null;
SELECT distkit_cache_get_text('c:absent') IS NULL AS absent_text_is_null;
SELECT distkit_cache_get_bytea('c:absent') IS NULL AS absent_bytea_is_null;
-- set replaces
SELECT distkit_cache_set('c:user:1', '[1]');
SELECT distkit_cache_get('c:user:1');

--
-- text and bytea variants share the key space and the representation
--
SELECT distkit_cache_set_text('c:t', 'plain text, é');
SELECT distkit_cache_get_text('c:t');
SELECT distkit_cache_get_bytea('c:t');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:kv:{c:t}'`
SELECT :'raw' AS stored_text;
-- a jsonb value read as text is its text form; JSON text reads as jsonb
SELECT distkit_cache_get_text('c:user:1');
SELECT distkit_cache_set_text('c:jt', ' {"b": 2,  "a": 1} ');
SELECT distkit_cache_get('c:jt');
SELECT distkit_cache_get_text('c:jt');
-- bytes are kept exactly, NUL bytes included
SELECT distkit_cache_set_bytea('c:b', '\x00ff10fe00'::bytea);
SELECT distkit_cache_get_bytea('c:b');
\set raw `"$DISTKIT_REDIS_CTL" cli STRLEN 'distkit:kv:{c:b}'`
SELECT :'raw' AS stored_bytes;
SELECT distkit_cache_set_bytea('c:empty', '');
SELECT distkit_cache_get_bytea('c:empty'), distkit_cache_get_text('c:empty') = '' AS empty_text;
-- reading as the wrong type: clear errors, nothing changed
SELECT dk_error($$SELECT distkit_cache_get('c:t')$$);
SELECT dk_error($$SELECT distkit_cache_get('c:empty')$$);
SELECT dk_error($$SELECT distkit_cache_get_text('c:b')$$);
SELECT dk_error($$SELECT distkit_cache_get('c:b')$$);
SELECT distkit_cache_set_bytea('c:latin1', '\xe9'::bytea);
SELECT dk_error($$SELECT distkit_cache_get_text('c:latin1')$$);
SELECT distkit_cache_get_bytea('c:b');

--
-- add: only if absent
--
SELECT distkit_cache_add('c:add', '{"v": 1}');
SELECT distkit_cache_add('c:add', '{"v": 2}');
SELECT distkit_cache_get('c:add');
SELECT distkit_cache_add_text('c:add', 'other');
SELECT distkit_cache_add_bytea('c:add', '\x01');
SELECT distkit_cache_get('c:add');
SELECT distkit_cache_add_text('c:add-t', 'first'), distkit_cache_add_text('c:add-t', 'second');
SELECT distkit_cache_get_text('c:add-t');
SELECT distkit_cache_add_bytea('c:add-b', '\x01'), distkit_cache_add_bytea('c:add-b', '\x02');
SELECT distkit_cache_get_bytea('c:add-b');
-- add does not touch the expiry of the value it finds
SELECT distkit_cache_set('c:add-ttl', '1', '1000 s');
SELECT distkit_cache_add('c:add-ttl', '2');
SELECT distkit_cache_ttl('c:add-ttl') BETWEEN '999 s' AND '1000 s' AS ttl_kept;

--
-- delete and exists
--
SELECT distkit_cache_exists('c:add'), distkit_cache_exists('c:absent');
SELECT distkit_cache_delete('c:add');
SELECT distkit_cache_delete('c:add');
SELECT distkit_cache_exists('c:add'), distkit_cache_get('c:add') IS NULL AS gone;
SELECT distkit_cache_add('c:add', '{"v": 3}');

--
-- TTL: PX in milliseconds (rounded up), NULL = no expiry
--
SELECT distkit_cache_set('c:ttl', '1', '1000 s');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:kv:{c:ttl}'`
SELECT :pttl BETWEEN 999000 AND 1000000 AS pttl_ok;
SELECT distkit_cache_ttl('c:ttl') BETWEEN '999 s' AND '1000 s' AS ttl_ok;
-- ttl is whole milliseconds
SELECT extract(microseconds FROM distkit_cache_ttl('c:ttl'))::bigint % 1000 AS sub_ms;
-- no expiry, and absent: NULL (tell them apart with distkit_cache_exists)
SELECT distkit_cache_set('c:forever', '1');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:kv:{c:forever}'`
SELECT :pttl AS pttl_forever;
SELECT distkit_cache_ttl('c:forever') IS NULL AS no_expiry_null,
       distkit_cache_ttl('c:absent') IS NULL AS absent_null;
-- set replaces the expiry too: without a ttl the value no longer expires
SELECT distkit_cache_set('c:ttl', '2');
SELECT distkit_cache_ttl('c:ttl') IS NULL AS expiry_removed;
-- a day counts as 24 hours; fractions of a millisecond round up
SELECT distkit_cache_set('c:day', '1', '1 day');
SELECT distkit_cache_ttl('c:day') BETWEEN '23:59:59' AND '24:00:00' AS day_ok;
SELECT distkit_cache_set_text('c:frac', 'x', '1000.0001 s');
\set pttl `"$DISTKIT_REDIS_CTL" cli PTTL 'distkit:kv:{c:frac}'`
SELECT :pttl BETWEEN 999001 AND 1000001 AS pttl_rounded_up;
-- expiry is enforced by Redis: gone after the ttl
SELECT distkit_cache_set('c:short', '"soon gone"', '1 s'),
       distkit_cache_add_text('c:short-t', 'x', '1 s'),
       distkit_cache_set_bytea('c:short-b', '\x01', '1 s');
SELECT distkit_cache_get('c:short'), distkit_cache_ttl('c:short') <= '1 s' AS ttl_le_1s;
\! sleep 1.1
SELECT distkit_cache_get('c:short') IS NULL AS expired,
       distkit_cache_exists('c:short') AS exists_after,
       distkit_cache_get_text('c:short-t') IS NULL AS expired_t,
       distkit_cache_get_bytea('c:short-b') IS NULL AS expired_b,
       distkit_cache_ttl('c:short') IS NULL AS ttl_after;
-- add succeeds again once the value expired
SELECT distkit_cache_add('c:short', '"again"', '1 microsecond');
\! sleep 0.05
SELECT distkit_cache_exists('c:short') AS exists_after_1us;

--
-- size limit: 512 kB (524288 bytes) of stored bytes
--
SELECT distkit_cache_set_text('c:big', repeat('x', 524288));
SELECT length(distkit_cache_get_text('c:big'));
SELECT distkit_cache_set_bytea('c:big-b', convert_to(repeat('y', 524288), 'UTF8'));
SELECT length(distkit_cache_get_bytea('c:big-b'));
SELECT dk_error($$SELECT distkit_cache_set_text('c:big', repeat('z', 524289))$$);
SELECT dk_error($$SELECT distkit_cache_add_bytea('c:big-new', convert_to(repeat('y', 524289), 'UTF8'))$$);
-- multibyte: the limit counts bytes
SELECT dk_error($$SELECT distkit_cache_set_text('c:big', repeat('é', 262145))$$);
-- jsonb: its text form counts ('"' + 524286 x + '"' = 524288 bytes)
SELECT distkit_cache_set('c:big-j', to_jsonb(repeat('x', 524286)));
SELECT length(distkit_cache_get('c:big-j') #>> '{}');
SELECT dk_error($$SELECT distkit_cache_set('c:big-j', to_jsonb(repeat('x', 524287)))$$);
-- the value too large was not stored
SELECT left(distkit_cache_get_text('c:big'), 3), length(distkit_cache_get_text('c:big'));
SELECT distkit_cache_exists('c:big-new');

--
-- errors: NULL arguments, keys, TTLs
--
SELECT dk_error($$SELECT distkit_cache_set(NULL, '1')$$);
SELECT dk_error($$SELECT distkit_cache_set('c:e', NULL)$$);
SELECT dk_error($$SELECT distkit_cache_set_text('c:e', NULL)$$);
SELECT dk_error($$SELECT distkit_cache_set_bytea('c:e', NULL)$$);
SELECT dk_error($$SELECT distkit_cache_add('c:e', NULL)$$);
SELECT dk_error($$SELECT distkit_cache_add_text(NULL, 'x')$$);
SELECT dk_error($$SELECT distkit_cache_get(NULL)$$);
SELECT dk_error($$SELECT distkit_cache_get_text(NULL)$$);
SELECT dk_error($$SELECT distkit_cache_get_bytea(NULL)$$);
SELECT dk_error($$SELECT distkit_cache_delete(NULL)$$);
SELECT dk_error($$SELECT distkit_cache_exists(NULL)$$);
SELECT dk_error($$SELECT distkit_cache_ttl(NULL)$$);
SELECT dk_error($$SELECT distkit_cache_set('', '1')$$);
SELECT dk_error($$SELECT distkit_cache_get(repeat('k', 1025))$$);
SELECT distkit_cache_set(repeat('k', 1024), '"longest key"');
SELECT distkit_cache_get(repeat('k', 1024));
SELECT dk_error($$SELECT distkit_cache_set('c:e', '1', '0 s')$$);
SELECT dk_error($$SELECT distkit_cache_set('c:e', '1', '-1 s')$$);
SELECT dk_error($$SELECT distkit_cache_add('c:e', '1', '1 month')$$);
SELECT dk_error($$SELECT distkit_cache_set_text('c:e', 'x', '1 year')$$);
SELECT dk_error($$SELECT distkit_cache_set_bytea('c:e', '\x01', '1 mon -30 days')$$);
SELECT dk_error($$SELECT distkit_cache_set('c:e', '1', '2147483647 days')$$);
SELECT distkit_cache_exists('c:e') AS nothing_stored;
-- a key written by another program with another type
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:kv:{c:alien}' f 1`
SELECT dk_error($$SELECT distkit_cache_get('c:alien')$$);
SELECT dk_error($$SELECT distkit_cache_get_text('c:alien')$$);
SELECT distkit_cache_exists('c:alien'), distkit_cache_ttl('c:alien') IS NULL AS ttl_null;
-- set overwrites whatever was there (like SET)
SELECT distkit_cache_set('c:alien', '"mine"');
SELECT distkit_cache_get('c:alien');

--
-- Redis keys: prefix:kv:{key}, escaped; never collide with counters
--
SELECT distkit_cache_set('a}b%', '1');
\set raw `"$DISTKIT_REDIS_CTL" cli EXISTS 'distkit:kv:{a%7Db%25}'`
SELECT :'raw' AS escaped_key_exists;
SELECT distkit_inc('c:same', 5);
SELECT distkit_cache_set('c:same', '"cached"');
SELECT distkit_get('c:same'), distkit_cache_get('c:same');

--
-- not transactional: a value set in a rolled-back transaction stays
--
BEGIN;
SELECT distkit_cache_set('c:tx', '"kept"');
ROLLBACK;
SELECT distkit_cache_get('c:tx');

--
-- clear: every cached value under the prefix, nothing else; superusers only
--
CREATE ROLE dk_cache_user;
SET ROLE dk_cache_user;
SELECT distkit_cache_set('c:by-user', '1');
SELECT dk_error($$SELECT distkit_cache_clear()$$);
RESET ROLE;
SELECT distkit_cache_clear() AS cleared;
SELECT distkit_cache_clear();
\set raw `"$DISTKIT_REDIS_CTL" cli --raw KEYS 'distkit:kv:*'`
SELECT :'raw' = '' AS no_cache_keys;
SELECT distkit_get('c:same') AS counter_kept;
DROP ROLE dk_cache_user;

--
-- README: the cache-aside pattern (get, else compute and add)
--
CREATE TABLE report_computations (tenant text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION compute_report(tenant text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO report_computations (tenant) VALUES (tenant);
	RETURN jsonb_build_object('tenant', tenant, 'orders', 42);
END $$;

CREATE FUNCTION tenant_report(tenant text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	k text := 'report:' || tenant;
	v jsonb;
BEGIN
	v := distkit_cache_get(k);
	IF v IS NOT NULL THEN
		RETURN v;                                   -- hit
	END IF;
	v := compute_report(tenant);                    -- miss: compute ...
	IF NOT distkit_cache_add(k, v, '5 minutes') THEN
		-- ... another session stored a value first: use it, so that every
		-- caller sees the same value until it expires
		v := coalesce(distkit_cache_get(k), v);
	END IF;
	RETURN v;
END $$;

SELECT tenant_report('acme');
SELECT tenant_report('acme');
SELECT tenant_report('acme');
SELECT count(*) AS computations FROM report_computations;
SELECT distkit_cache_ttl('report:acme') BETWEEN '299 s' AND '300 s' AS ttl_ok;
-- another session stored a value between our get and our add: we return
-- the value in the cache, not ours
SELECT distkit_cache_delete('report:acme');
CREATE OR REPLACE FUNCTION compute_report(tenant text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO report_computations (tenant) VALUES (tenant);
	PERFORM distkit_cache_set('report:' || tenant, '{"from": "another session"}');
	RETURN jsonb_build_object('tenant', tenant, 'orders', 43);
END $$;
SELECT tenant_report('acme');
SELECT count(*) AS computations FROM report_computations;
DROP FUNCTION tenant_report(text);
DROP FUNCTION compute_report(text);
DROP TABLE report_computations;
SELECT distkit_cache_clear();
