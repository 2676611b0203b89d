-- title: lax distkit_inc, 1000 keys
-- measures: buffered increment on a random key out of 1000 (in a Redis Cluster the flusher's batches go to every master).
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
-- flush-figures: yes
\set k random(1, 1000)
SELECT distkit_inc('bench.lax1000.' || :k, 1, 'lax');
