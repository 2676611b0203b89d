-- title: distkit_inc_if
-- measures: conditional increment (always applied here), one EVALSHA round trip (lua/counter_inc_if.lua).
-- requires: SELECT * FROM distkit_inc_if('bench.probe', 0, '>=', 0)
SELECT * FROM distkit_inc_if('bench.inc_if', 1, '>=', 0);
