-- title: SELECT 1
-- measures: the floor: one prepared statement round trip client -> PostgreSQL, no Redis.
SELECT 1;
