-- title: strict distkit_get
-- measures: one EVALSHA round trip per call (lua/counter_get.lua), read only.
-- requires: SELECT distkit_get('bench.probe', 'strict')
SELECT distkit_get('bench.strict', 'strict');
