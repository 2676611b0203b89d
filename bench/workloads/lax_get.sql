-- title: lax distkit_get
-- measures: read of a lax counter (Redis value plus the local unflushed delta).
-- requires: SELECT distkit_get('bench.probe', 'lax')
SELECT distkit_get('bench.lax1', 'lax');
