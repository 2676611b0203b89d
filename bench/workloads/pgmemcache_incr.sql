-- title: pgmemcache memcache_incr
-- measures: the peer extension: pgmemcache's memcache_incr against the bench's own memcached (one round trip per call, libmemcached defaults).
-- requires: CREATE EXTENSION IF NOT EXISTS pgmemcache
-- requires: DO $$ BEGIN IF NOT coalesce(memcache_set('bench.probe', '0'), false) THEN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'memcached not reachable (memcache_set failed)'; END IF; END $$
-- setup: SELECT memcache_set('bench.mc', '0')
SELECT memcache_incr('bench.mc');
