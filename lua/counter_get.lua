-- counter_get: the value of a counter (nil when missing).
-- KEYS[1] counter key.
return redis.call('GET', KEYS[1])
