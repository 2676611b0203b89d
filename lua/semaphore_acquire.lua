-- semaphore_acquire: take one permit of a counting semaphore, if fewer than
-- ARGV[1] unexpired permits are held.
-- KEYS[1] the semaphore: a sorted set of permit ids scored by their expiry
--   (ms on Redis's clock); the key itself expires with its last permit.
-- ARGV[1] permits (the limit); ARGV[2] ttl in ms; ARGV[3] the new permit id.
-- Taking a permit id that is held renews it, so a retry is harmless.
-- Returns {1, held after the call, 0} when taken, or
-- {0, held, ms until the first permit expires} when all are taken.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local held = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  -- this permit is already held (a retry after a lost reply): renew it
  redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + tonumber(ARGV[2])), ARGV[3])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', tonumber(last[2]) - now))
  return {1, held, 0}
end
if held >= tonumber(ARGV[1]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, held, tonumber(first[2]) - now}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', tonumber(last[2]) - now))
return {1, held + 1, 0}
