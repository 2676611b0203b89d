-- lib/gcra: the GCRA state of a rate limiter, shared by lua/rate_gcra.lua
-- and lua/rate_reserve.lua (src/embed-lua.sh writes this file in place of
-- their "-- @include lib/gcra.lua" line, so each script stays one atomic
-- chunk with its own SHA1).
-- A time is "us since the epoch + frac/den us" (den = the limiter's rate):
-- exact in Lua's doubles, every number staying below 2^53.  The key holds
-- the theoretical arrival time (TAT) as "<us>+<frac>/<den>" and expires
-- when it passes.

-- Redis's clock in us, or nil and an error reply if now + tau would reach 2^53.
local function gcra_now(tau_us)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if now + tau_us + 1 >= 9007199254740992 then
    return nil, redis.error_reply('DKRANGE time beyond 2^53 microseconds')
  end
  return now
end

-- max(stored TAT, now) as us, frac; or nil and an error reply if the key
-- holds something else.  A TAT written with another rate (denominator) is
-- rounded up to the next whole microsecond.
local function gcra_tat(key, now, den)
  local v = redis.call('GET', key)
  if not v then
    return now, 0
  end
  local s_us, s_f, s_den = string.match(v, '^(%d+)%+(%d+)/(%d+)$')
  local valid = s_us ~= nil and #s_us <= 16 and #s_den <= 16
  if valid then
    s_us, s_f, s_den = tonumber(s_us), tonumber(s_f), tonumber(s_den)
    valid = s_f < s_den
  end
  if not valid then
    return nil, redis.error_reply('DKBADSTATE the key does not hold a distkit rate limiter state')
  end
  if s_den ~= den and s_f > 0 then
    s_us, s_f = s_us + 1, 0
  end
  if s_us > now or (s_us == now and s_f > 0) then
    return s_us, s_f
  end
  return now, 0
end

-- Store TAT us + f/den (after now) with the key expiring when it passes:
-- ceil((TAT - now) / 1 ms), exactly, at least 1 ms.
local function gcra_store(key, us, f, den, now)
  local d = us - now
  if f > 0 then
    d = d + 1
  end
  local ms = math.floor(d / 1000)
  while ms * 1000 < d do ms = ms + 1 end
  while ms > 1 and (ms - 1) * 1000 >= d do ms = ms - 1 end
  if ms < 1 then ms = 1 end
  redis.call('SET', key, string.format('%.0f+%.0f/%.0f', us, f, den), 'PX', string.format('%.0f', ms))
end
