-- counter_set: set a counter and return the value set.
-- KEYS[1] counter key; ARGV[1] value (decimal bigint).
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
