-- One-server-only connection features, not run against a Redis Cluster
-- (which has neither database numbers nor, here, unix sockets): database
-- selection and unix socket URLs.
SELECT distkit_set('conn', 5);

-- database selection: db 1 is another key space
SELECT set_config('distkit.redis_url', 'redis://127.0.0.1:' || dk_port() || '/1', false) IS NOT NULL AS url_set;
SELECT distkit_get('conn');
SELECT distkit_inc('conn', 100);
RESET distkit.redis_url;
SELECT distkit_get('conn');

-- unix socket URLs, with a database number
\getenv redis_sock DISTKIT_REDIS_SOCK
SELECT set_config('distkit.redis_url', 'unix://' || :'redis_sock' || '?db=1', false) IS NOT NULL AS url_set;
SELECT distkit_get('conn');
SELECT distkit_inc('conn');
RESET distkit.redis_url;
\set raw `"$DISTKIT_REDIS_CTL" cli -n 1 GET 'distkit:c:{conn}'`
SELECT :'raw' AS db1_value;
\set raw `"$DISTKIT_REDIS_CTL" cli -n 1 FLUSHDB`

SELECT set_config('distkit.redis_url', 'redis://127.0.0.1:' || dk_port() || '/99999', false) IS NOT NULL AS url_set;
SELECT dk_error($$SELECT distkit_get('conn')$$);
-- a redis-cluster:// URL naming a server that is not in cluster mode
SELECT set_config('distkit.redis_url', 'redis-cluster://127.0.0.1:' || dk_port(), false) IS NOT NULL AS url_set;
SELECT dk_error($$SELECT distkit_get('conn')$$);
RESET distkit.redis_url;
SELECT distkit_get('conn');
SELECT distkit_del('conn');
