-- breaker_configure: store a circuit breaker's configuration.
-- KEYS[1] the breaker's state hash, KEYS[2] its configuration hash (one
-- hash slot; see breaker_step.lua).
-- ARGV[1..6] threshold (percent), minimum calls, window (s), open_for (ms),
--   half-open calls, slow-call threshold (us, -1: none);
-- ARGV[7] the default window (s), in force while there was no configuration.
-- When the window changes, the counts of the old window are cleared (the
-- state - closed, open, half-open - is kept), so that every bucket lies
-- within one window of the oldest (breaker_step.lua's invariant).
-- Returns 1 if the window's counts were cleared, else 0.
local old = redis.call('HGET', KEYS[2], 'win') or ARGV[7]
redis.call('HSET', KEYS[2], 'thr', ARGV[1], 'min', ARGV[2], 'win', ARGV[3],
  'open', ARGV[4], 'half', ARGV[5], 'slow', ARGV[6])
if old == ARGV[3] then
  return 0
end
local fields = redis.call('HKEYS', KEYS[1])
redis.call('HDEL', KEYS[1], 'n', 'f', 'w', 'o')
-- in chunks: unpack() of thousands of values would overflow Lua's stack
local del = {}
for _, k in ipairs(fields) do
  if string.match(k, '^[nfw]:') then
    del[#del + 1] = k
    if #del == 1000 then
      redis.call('HDEL', KEYS[1], unpack(del))
      del = {}
    end
  end
end
if #del > 0 then
  redis.call('HDEL', KEYS[1], unpack(del))
end
return 1
