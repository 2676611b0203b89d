-- title: strict distkit_inc, no idle timer
-- measures: strict_inc with distkit.idle_connection_timeout = 0 (no timer re-armed per call); compare with strict_inc (60 s, the default) in the same run.
-- requires: SELECT distkit_inc('bench.probe', 0, 'strict')
-- pgoptions: -c distkit.idle_connection_timeout=0
SELECT distkit_inc('bench.strict', 1, 'strict');
