-- title: lax distkit_inc, 10k keys
-- measures: buffered increment on a random key out of 10000 (spread over the shared-memory buffer).
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
-- flush-figures: yes
\set k random(1, 10000)
SELECT distkit_inc('bench.lax10k.' || :k, 1, 'lax');
