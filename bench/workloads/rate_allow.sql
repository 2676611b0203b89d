-- title: distkit_rate_allow
-- measures: one rate-limiter decision per call, with a limit so high that every call is allowed.
-- requires: SELECT distkit_rate_allow('bench.probe', 1000000000, '1 second')
SELECT distkit_rate_allow('bench.rate', 1000000000, '1 second');
