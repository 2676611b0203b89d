-- title: instance-aware inc, strict
-- measures: distkit_instance_inc(key, 1, 'strict'): this server's slice and the total in one round trip.
-- requires: SELECT * FROM distkit_instance_inc('bench.probe', 1, 'strict')
SELECT * FROM distkit_instance_inc('bench.inst.strict', 1, 'strict');
