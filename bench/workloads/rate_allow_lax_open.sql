-- title: lax distkit_rate_allow, open
-- measures: lax rate limiting (issue 17) far below the limit: rate 1,000,000 per second, every call allowed from reserved units (each block spans at least 20 ms of the limit).
-- requires: SELECT distkit_rate_allow('bench.probe', 1000000, '1 second', mode => 'lax')
-- rate-figures: yes
SELECT distkit_rate_allow('bench.ratelaxopen', 1000000, '1 second', mode => 'lax');
