-- rate_gcra: one GCRA decision (generic cell rate algorithm, as in
-- redis-cell) for one rate limiter, on Redis's clock (TIME), never a client's.
-- KEYS[1] limiter key.
-- ARGV[1] rate: the denominator of every fraction below.
-- ARGV[2], ARGV[3] increment = per * cost / rate, as whole us and a fraction
--   (numerator over rate, below rate).
-- ARGV[4], ARGV[5] tau = per * burst / rate, the same way.
-- A time is "us since the epoch + frac/rate us": exact in Lua's doubles
-- (every number here stays below 2^53) even when per / rate is not a whole
-- number of microseconds.
-- The key holds the theoretical arrival time (TAT) as "<us>+<frac>/<rate>"
-- and expires when that time passes, i.e. when the limiter is full again.
-- A denied call, and a call of cost 0, writes nothing.
-- Returns {allowed 1/0, tat - now (us, frac), new_tat - now (us, frac)}
-- where tat is the state after the call and new_tat = max(TAT, now) + increment.
local den = tonumber(ARGV[1])
local inc_us, inc_f = tonumber(ARGV[2]), tonumber(ARGV[3])
local tau_us, tau_f = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now + tau_us + 1 >= 9007199254740992 then
  return redis.error_reply('DKRANGE time beyond 2^53 microseconds')
end

-- tat = max(stored TAT, now)
local tat_us, tat_f = now, 0
local v = redis.call('GET', KEYS[1])
if v then
  local s_us, s_f, s_den = string.match(v, '^(%d+)%+(%d+)/(%d+)$')
  local valid = s_us ~= nil and #s_us <= 16 and #s_den <= 16
  if valid then
    s_us, s_f, s_den = tonumber(s_us), tonumber(s_f), tonumber(s_den)
    valid = s_f < s_den
  end
  if not valid then
    return redis.error_reply('DKBADSTATE the key does not hold a distkit rate limiter state')
  end
  if s_den ~= den and s_f > 0 then
    -- written with another rate: round up to the next whole microsecond
    s_us, s_f = s_us + 1, 0
  end
  if s_us > now or (s_us == now and s_f > 0) then
    tat_us, tat_f = s_us, s_f
  end
end

-- new_tat = tat + increment
local new_us, new_f = tat_us + inc_us, tat_f + inc_f
if new_f >= den then
  new_us, new_f = new_us + 1, new_f - den
end

-- allowed iff new_tat - tau <= now, i.e. new_tat <= now + tau
local lim_us = now + tau_us
local allowed = new_us < lim_us or (new_us == lim_us and new_f <= tau_f)
if allowed and (inc_us > 0 or inc_f > 0) then
  -- expire when new_tat has passed: ceil((new_tat - now) / 1 ms), exactly
  local d = new_us - now
  if new_f > 0 then
    d = d + 1
  end
  local ms = math.floor(d / 1000)
  while ms * 1000 < d do ms = ms + 1 end
  while ms > 1 and (ms - 1) * 1000 >= d do ms = ms - 1 end
  redis.call('SET', KEYS[1],
    string.format('%.0f+%.0f/%.0f', new_us, new_f, den),
    'PX', string.format('%.0f', ms))
  tat_us, tat_f = new_us, new_f
end
return {allowed and 1 or 0, tat_us - now, tat_f, new_us - now, new_f}
