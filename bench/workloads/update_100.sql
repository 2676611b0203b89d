-- title: UPDATE 100 rows
-- measures: a counter table with 100 rows, each call updates a random one (less lock contention than one hot row).
-- setup: CREATE TABLE IF NOT EXISTS bench_rows (id int PRIMARY KEY, n bigint NOT NULL)
-- setup: INSERT INTO bench_rows SELECT g, 0 FROM generate_series(1, 100) g ON CONFLICT DO NOTHING
\set k random(1, 100)
UPDATE bench_rows SET n = n + 1 WHERE id = :k RETURNING n;
