-- The Redis connection: outages, pauses, cancellation, reconnection,
-- and URL validation.  Unix sockets and database numbers, which a Redis
-- Cluster does not have, are tested in 05_connection_single.
SELECT distkit_set('conn', 1);

-- Redis restarted between two calls: the next call reconnects transparently
-- and its increment is applied exactly once.
\! "$DISTKIT_REDIS_CTL" stop
\! "$DISTKIT_REDIS_CTL" start
SELECT distkit_inc('conn');
SELECT distkit_get('conn');

-- Redis down: a clear connection error (08001) with host:port, for every call
\! "$DISTKIT_REDIS_CTL" stop
SELECT dk_error($$SELECT distkit_inc('conn')$$);
SELECT dk_error($$SELECT distkit_get('conn')$$);
SELECT dk_error($$SELECT * FROM distkit_get_many(ARRAY['conn'])$$);
-- ... and recovery once it is back, with nothing applied meanwhile
\! "$DISTKIT_REDIS_CTL" start
SELECT distkit_get('conn');
SELECT distkit_inc('conn');

-- Redis paused (SIGSTOP) with an open connection: statement_timeout
-- cancels a blocked call even though distkit.command_timeout is a minute away
SELECT distkit_get('conn');
SET distkit.command_timeout = '60s';
SET statement_timeout = '300ms';
\! "$DISTKIT_REDIS_CTL" pause
SELECT distkit_inc('conn');
RESET statement_timeout;
RESET distkit.command_timeout;
\! "$DISTKIT_REDIS_CTL" resume
-- the cancelled increment had reached Redis's socket: Redis applied it when
-- it resumed (3 + 1).  The next call reconnects on its own.
\! sleep 0.2
SELECT distkit_get('conn');

-- command_timeout bounds a call on an open connection: a write whose reply
-- is lost is reported as of unknown outcome (08007) ...
SET distkit.command_timeout = '200ms';
\! "$DISTKIT_REDIS_CTL" pause
SELECT dk_error($$SELECT distkit_inc('conn')$$);
\! "$DISTKIT_REDIS_CTL" resume
\! sleep 0.2
SELECT distkit_get('conn');
-- ... a read as a lost connection (08006)
\! "$DISTKIT_REDIS_CTL" pause
SELECT dk_error($$SELECT distkit_get('conn')$$);
-- and a new connection to a paused Redis times out in the handshake (the
-- kernel accepts the TCP connection, Redis never answers): 08001
SET distkit.connect_timeout = '200ms';
SELECT dk_error($$SELECT distkit_get('conn')$$);
\! "$DISTKIT_REDIS_CTL" resume
RESET distkit.connect_timeout;
RESET distkit.command_timeout;
SELECT distkit_get('conn');

-- distkit.redis_url is server-wide: a session cannot change it
SELECT dk_error($$SET distkit.redis_url = 'redis://127.0.0.1:1/0'$$);
SELECT dk_error($$SELECT set_config('distkit.redis_url', 'redis://127.0.0.1:1/0', false)$$);

-- invalid URLs: reported at use, without echoing the URL (it may hold a
-- password).  Each is set with ALTER SYSTEM + pg_reload_conf(); a new
-- connection (\c) starts after the postmaster has reloaded, so it sees it.
ALTER SYSTEM SET distkit.redis_url = 'http://127.0.0.1';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'rediss-sentinel://127.0.0.1:26379';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis://user:secretpw@127.0.0.1:99999/0';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis://secretpw@127.0.0.1/0';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis://127.0.0.1:6379/x';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis://:6379/0';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'unix://relative.sock';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'unix:///tmp/none.sock?database=1';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'unix:///nonexistent/redis.sock';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis://[::1:6379/0';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
-- Redis Cluster and Sentinel URLs
ALTER SYSTEM SET distkit.redis_url = 'redis-cluster://';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis-cluster://u:secretpw@127.0.0.1:1,,127.0.0.1:2';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis-cluster://127.0.0.1:1,127.0.0.1:x';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis-cluster://127.0.0.1:7000/1';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis-sentinel://:secretpw@127.0.0.1:26379';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis-sentinel://127.0.0.1:26379/x#main';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis-sentinel://127.0.0.1:26379,[::1:1#main';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
-- well-formed, but nothing listens there: 08001 naming the seed / sentinel
ALTER SYSTEM SET distkit.redis_url = 'redis-cluster://u:secretpw@127.0.0.1:1,127.0.0.1:2';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM SET distkit.redis_url = 'redis-sentinel://:secretpw@127.0.0.1:1,127.0.0.1:2/3#main';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('conn')$$);
ALTER SYSTEM RESET distkit.redis_url;
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_get('conn');

-- timeouts are validated GUCs
SELECT dk_error($$SET distkit.command_timeout = 0$$);
SELECT dk_error($$SET distkit.connect_timeout = -1$$);
SHOW distkit.command_timeout;
SHOW distkit.connect_timeout;
SHOW distkit.default_mode;
SELECT dk_error($$SET distkit.default_mode = 'fast'$$);
SELECT dk_error($$SET distkit.no_such_setting = 1$$);
-- leave no counter behind (05_connection_single runs against one server only)
SELECT distkit_del('conn');
