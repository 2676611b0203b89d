-- counter_inc: add a delta to a counter and return the new value.
-- KEYS[1] counter key; ARGV[1] delta (decimal bigint).
-- INCRBY refuses overflow and non-integer values without changing the key.
-- The value is returned as a string: a Lua number would round values
-- beyond 2^53.  It is read once before the write too, so that a Redis user
-- not allowed to read it (ACL) is refused before anything is written.
redis.call('GET', KEYS[1])
redis.call('INCRBY', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
