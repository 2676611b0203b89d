-- distkit must never hold up PostgreSQL's own operations.  DROP DATABASE,
-- ALTER DATABASE ... SET TABLESPACE and DROP TABLESPACE wait until every
-- process -- the distkit worker included -- has absorbed a procsignal
-- barrier; a worker that did not absorb it made them hang forever.
-- statement_timeout turns a regression into a failure instead of a hang.
-- (test/t/017_host_ops.pl does the same under load, with Redis stopped,
-- during a lease wait and on a streaming standby.)
SET statement_timeout = '20s';
SELECT distkit_inc('db:lax', 5, 'lax') AS lax_inc;
CREATE DATABASE distkit_dropme;
DROP DATABASE distkit_dropme;

-- an in-place tablespace (a developer option) keeps the test self-contained
SET allow_in_place_tablespaces = on;
CREATE TABLESPACE distkit_ts LOCATION '';
CREATE DATABASE distkit_moveme;
ALTER DATABASE distkit_moveme SET TABLESPACE distkit_ts;
DROP DATABASE distkit_moveme;
-- a dropped table leaves a file until the next checkpoint: DROP TABLESPACE
-- then needs the barrier too
CREATE TABLE distkit_ts_t (a int) TABLESPACE distkit_ts;
DROP TABLE distkit_ts_t;
DROP TABLESPACE distkit_ts;
SELECT count(*) AS left_over FROM pg_database WHERE datname IN ('distkit_dropme', 'distkit_moveme');
SELECT count(*) AS left_over FROM pg_tablespace WHERE spcname = 'distkit_ts';

-- the worker did its work meanwhile
SELECT distkit_flush() >= 0 AS flushed;
SELECT distkit_get('db:lax') AS in_redis;
SELECT distkit_del('db:lax') AS deleted;
RESET statement_timeout;
