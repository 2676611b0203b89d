-- semaphore_count: how many permits of a semaphore are held (unexpired).
-- KEYS[1] the semaphore (see semaphore_acquire.lua).  Writes nothing.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now), '+inf')
