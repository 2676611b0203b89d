-- One-server-only connection features, not run against a Redis Cluster
-- (which has neither database numbers nor, here, unix sockets): database
-- selection and unix socket URLs.
SELECT distkit_set('conn', 5);
\getenv redis_port DISTKIT_REDIS_PORT

-- database selection: db 1 is another key space (the URLs of this test
-- are made from the suite's, a rediss:// one in the TLS pass)
\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" '' | sed 's#/0$#/1#'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_get('conn');
SELECT distkit_inc('conn', 100);
ALTER SYSTEM RESET distkit.redis_url;
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_get('conn');

-- unix socket URLs, with a database number
\getenv redis_sock DISTKIT_REDIS_SOCK
\set url 'unix://' :redis_sock '?db=1'
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_get('conn');
SELECT distkit_inc('conn');
ALTER SYSTEM RESET distkit.redis_url;
SELECT pg_reload_conf() AS reloaded \gset
\c
\set raw `"$DISTKIT_REDIS_CTL" cli -n 1 GET 'distkit:c:{conn}'`
SELECT :'raw' AS db1_value;
\set raw `"$DISTKIT_REDIS_CTL" cli -n 1 FLUSHDB`

\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" '' | sed 's#/0$#/99999#'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
-- a redis-cluster:// URL naming a server that is not in cluster mode
\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" '' | sed 's#^\(rediss*\)://\(.*\)/0$#\1-cluster://\2#'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM RESET distkit.redis_url;
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_get('conn');
SELECT distkit_del('conn');
