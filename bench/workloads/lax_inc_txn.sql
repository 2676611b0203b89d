-- title: lax distkit_inc, 1 key, transactional
-- measures: lax increment with distkit.transactional on: kept in backend memory, added to the buffer at commit (the setting is made in the same statement with set_config, which the figure includes).
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
-- requires: SHOW distkit.transactional
SELECT distkit_inc('bench.laxtxn', 1, 'lax') FROM (SELECT set_config('distkit.transactional', 'on', false)) s;
