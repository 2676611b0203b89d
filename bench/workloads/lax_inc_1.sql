-- title: lax distkit_inc, 1 key
-- measures: buffered increment (shared memory, flushed by the worker), every call on the same key.
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
-- flush-figures: yes
SELECT distkit_inc('bench.lax1', 1, 'lax');
