-- Keys: any text, no aliasing, one hash slot per key.
SELECT distkit_clear() >= 0 AS cleared;
SELECT distkit_inc('user'), distkit_inc('user:42'), distkit_inc('user:42', 10);
SELECT distkit_get('user'), distkit_get('user:42');
SELECT distkit_inc('a b'), distkit_inc('{tag}'), distkit_inc('x}y'), distkit_inc('%7D'), distkit_inc('}'), distkit_inc('{');
SELECT distkit_inc('x%7Dy', 5);
SELECT distkit_get('x}y'), distkit_get('x%7Dy'), distkit_get('}'), distkit_get('%7D');
SELECT distkit_inc('日本語キー', 3), distkit_get('日本語キー');
-- the Redis names: braces and percent signs escaped inside the hash tag
\set raw `"$DISTKIT_REDIS_CTL" cli --raw KEYS 'distkit:c:*' | sort | tr '\n' ' '`
\pset format unaligned
SELECT :'raw' AS redis_keys;
\pset format aligned
-- the prefix is validated
SET distkit.prefix = 'other';
SELECT distkit_inc('user');
SELECT distkit_get('user');
\set raw `"$DISTKIT_REDIS_CTL" cli GET 'other:c:{user}'`
SELECT :'raw' AS other_prefix_value;
SELECT distkit_clear();
RESET distkit.prefix;
SELECT distkit_get('user');
SELECT dk_error($$SET distkit.prefix = 'a:b'$$);
SELECT dk_error($$SET distkit.prefix = ''$$);
SELECT dk_error($$SET distkit.prefix = 'a*'$$);
SELECT dk_error($$SET distkit.prefix = '$$ || repeat('p', 65) || $$'$$);
SHOW distkit.prefix;
SELECT distkit_clear();
