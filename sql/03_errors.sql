-- Every user error: SQLSTATE, message naming the bad value, hint; and bad
-- input never changes a stored value.
SELECT distkit_set('e', 10);

-- NULL arguments
SELECT dk_error($$SELECT distkit_inc(NULL)$$);
SELECT dk_error($$SELECT distkit_inc('e', NULL)$$);
SELECT dk_error($$SELECT distkit_dec('e', NULL)$$);
SELECT dk_error($$SELECT distkit_get(NULL)$$);
SELECT dk_error($$SELECT distkit_set('e', NULL)$$);
SELECT dk_error($$SELECT distkit_set(NULL, 1)$$);
SELECT dk_error($$SELECT distkit_del(NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_inc_if('e', 1, NULL, 0)$$);
SELECT dk_error($$SELECT * FROM distkit_inc_if('e', 1, '=', NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_inc_if('e', NULL, '=', 0)$$);
SELECT dk_error($$SELECT * FROM distkit_get_many(NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_get_many(ARRAY['a', NULL])$$);
-- NULL mode means distkit.default_mode
SELECT distkit_get('e', NULL);

-- keys: 1 to 1024 bytes
SELECT dk_error($$SELECT distkit_inc('')$$);
SELECT dk_error($$SELECT distkit_inc(repeat('k', 1025))$$);
SELECT dk_error($$SELECT * FROM distkit_get_many(ARRAY['ok', ''])$$);
SELECT distkit_inc(repeat('k', 1024), 3);
SELECT distkit_get(repeat('k', 1024));
SELECT dk_error($$SELECT distkit_get(repeat('é', 513))$$);
SELECT distkit_inc(repeat('é', 512));

-- operators
SELECT dk_error($$SELECT * FROM distkit_inc_if('e', 1, '==', 0)$$);
SELECT dk_error($$SELECT * FROM distkit_inc_if('e', 1, '', 0)$$);

-- overflow: 22003 and the stored value is unchanged
SELECT distkit_set('o', 9223372036854775807);
SELECT dk_error($$SELECT distkit_inc('o')$$);
SELECT distkit_get('o');
SELECT dk_error($$SELECT * FROM distkit_inc_if('o', 1, '>', 0)$$);
SELECT distkit_get('o');
SELECT distkit_set('o', -9223372036854775808);
SELECT dk_error($$SELECT distkit_dec('o')$$);
SELECT dk_error($$SELECT distkit_dec('o', -9223372036854775808)$$);
SELECT distkit_get('o');

-- an unknown mode
SELECT dk_error($$SELECT distkit_inc('e', 1, 'fast')$$);

-- a key written by another program with a wrong type or non-integer value
\set raw `"$DISTKIT_REDIS_CTL" cli HSET 'distkit:c:{alien}' f 1`
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:c:{text}' hello`
SELECT dk_error($$SELECT distkit_inc('alien')$$);
SELECT dk_error($$SELECT distkit_get('alien')$$);
SELECT dk_error($$SELECT distkit_del('alien')$$);
SELECT dk_error($$SELECT distkit_inc('text')$$);
SELECT dk_error($$SELECT distkit_get('text')$$);
SELECT dk_error($$SELECT distkit_del('text')$$);
SELECT dk_error($$SELECT * FROM distkit_inc_if('text', 1, '=', 0)$$);
SELECT dk_error($$SELECT * FROM distkit_get_many(ARRAY['e', 'text'])$$);
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'distkit:c:{text}'`
SELECT :'raw' AS text_unchanged;
SELECT distkit_set('text', 1);

-- after all of that, e is still 10
SELECT distkit_get('e');

-- distkit_clear is for privileged roles only
CREATE ROLE dk_plain;
SET ROLE dk_plain;
SELECT dk_error($$SELECT distkit_clear()$$);
SELECT distkit_inc('plain');
RESET ROLE;
DROP ROLE dk_plain;
