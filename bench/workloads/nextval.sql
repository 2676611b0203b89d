-- title: nextval (sequence)
-- measures: PostgreSQL's own non-transactional counter (WAL-logged every 32 values), no Redis.
-- setup: CREATE SEQUENCE IF NOT EXISTS bench_seq
SELECT nextval('bench_seq');
