-- title: instance-aware inc, lax
-- measures: distkit_instance_inc(key, 1, 'lax'): buffered in shared memory, flushed by the worker.
-- requires: SELECT * FROM distkit_instance_inc('bench.probe', 1, 'lax')
-- flush-figures: yes
SELECT * FROM distkit_instance_inc('bench.inst.lax', 1, 'lax');
