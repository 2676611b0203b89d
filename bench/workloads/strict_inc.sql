-- title: strict distkit_inc
-- measures: one EVALSHA round trip PostgreSQL -> Redis per call (lua/counter_inc.lua), one hot key.
-- requires: SELECT distkit_inc('bench.probe', 0, 'strict')
SELECT distkit_inc('bench.strict', 1, 'strict');
