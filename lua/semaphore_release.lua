-- semaphore_release: give a permit back.
-- KEYS[1] the semaphore (see semaphore_acquire.lua); ARGV[1] permit id.
-- Returns 1 when the permit was held (unexpired) and is now free, 0 when it
-- had expired or was not held.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(score) <= now then
  return 0
end
return 1
