-- title: lax distkit_rate_allow, saturated
-- measures: lax rate limiting (issue 17) at saturation: rate 5000 per second, burst 500, more demand than that; decisions from units the server reserved (distkit_rate_stats.refills = Redis calls), most of them local denials.
-- requires: SELECT distkit_rate_allow('bench.probe', 1000000, '1 second', mode => 'lax')
-- rate-figures: yes
SELECT distkit_rate_allow('bench.ratelax', 5000, '1 second', 500, mode => 'lax');
