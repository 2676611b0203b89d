-- title: lax distkit_inc, 100 keys
-- measures: buffered increment on a random key out of 100 (spread over the shared-memory buffer).
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
-- flush-figures: yes
\set k random(1, 100)
SELECT distkit_inc('bench.lax100.' || :k, 1, 'lax');
