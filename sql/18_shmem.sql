-- distkit's shared memory (src/shmem.c): one region per module under its own
-- name in pg_shmem_allocations, of exactly the size docs/hacking.md
-- ("Shared memory") gives by formula from the settings (64-bit Linux).  A new
-- region shows up here with matches_formula NULL until its formula is added.
WITH s AS (
	SELECT current_setting('distkit.lax_capacity')::bigint AS cap,
	       current_setting('max_connections')::bigint
	       + current_setting('autovacuum_max_workers')::bigint + 1
	       + current_setting('max_worker_processes')::bigint
	       + current_setting('max_wal_senders')::bigint AS max_backends,
	       (SELECT count(*) FROM distkit_stat_calls) AS metric_rows
), f(name, size) AS (
	SELECT 'distkit lax buffer',
	       2536 + 8 * ((cap + 63) / 64)
	       + 4 * (SELECT min(1::bigint << i) FROM generate_series(0, 40) i
	              WHERE (1::bigint << i) >= 2 * cap)
	       + 344 * cap FROM s
	UNION ALL SELECT 'distkit live instances', 380 + 4 * current_setting('distkit.max_instances')::bigint
	UNION ALL SELECT 'distkit leaders', 73744
	UNION ALL SELECT 'distkit call metrics', 16 + 256 * metric_rows * (max_backends + 1) FROM s
	UNION ALL SELECT 'distkit rate reservations', 1040408
	UNION ALL SELECT 'distkit outbox shippers', 6664
)
SELECT name, a.size = f.size AS matches_formula,
       a.allocated_size = (a.size + 127) / 128 * 128 AS cache_line_aligned
FROM (SELECT * FROM pg_shmem_allocations WHERE name LIKE 'distkit%') a
     FULL JOIN f USING (name)
ORDER BY name;

-- with the default settings of the test server
SELECT size AS lax_buffer_bytes FROM pg_shmem_allocations WHERE name = 'distkit lax buffer';
