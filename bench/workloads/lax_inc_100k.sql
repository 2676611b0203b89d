-- title: lax distkit_inc, 100k keys
-- measures: buffered increment on a random key out of 100000 (spread over the shared-memory buffer).
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
\set k random(1, 100000)
SELECT distkit_inc('bench.lax100k.' || :k, 1, 'lax');
