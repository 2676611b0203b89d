-- title: lax distkit_inc, 1 key, track_calls off
-- measures: lax_inc_1 without call metrics (distkit.track_calls = off): lax_inc_1 / this is the cost of distkit_stat_calls.
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
-- requires: SHOW distkit.track_calls
-- pgoptions: -c distkit.track_calls=off
SELECT distkit_inc('bench.lax1', 1, 'lax');
