-- title: distkit_rate_allow
-- measures: one GCRA decision per call (one EVALSHA of lua/rate_gcra.lua, Redis TIME inside), a limit so high that every call is allowed.
-- requires: SELECT distkit_rate_allow('bench.probe', 1000000, '1 second')
SELECT distkit_rate_allow('bench.rate', 1000000, '1 second');
