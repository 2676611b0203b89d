-- title: strict distkit_inc, 1000 keys
-- measures: one EVALSHA round trip per call on a random key out of 1000 (in a Redis Cluster the keys, hence the load, spread over every master).
-- requires: SELECT distkit_inc('bench.probe', 0, 'strict')
\set k random(1, 1000)
SELECT distkit_inc('bench.strict1000.' || :k, 1, 'strict');
