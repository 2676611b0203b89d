-- title: UPDATE hot row
-- measures: a counter table with one row, UPDATE ... RETURNING; row lock + WAL flush at commit (synchronous_commit as shipped).
-- setup: CREATE TABLE IF NOT EXISTS bench_hot (id int PRIMARY KEY, n bigint NOT NULL)
-- setup: INSERT INTO bench_hot VALUES (1, 0) ON CONFLICT DO NOTHING
UPDATE bench_hot SET n = n + 1 WHERE id = 1 RETURNING n;
