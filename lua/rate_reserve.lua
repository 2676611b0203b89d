-- rate_reserve: take up to `want` units (at least `min`) of a GCRA rate
-- limiter at once, for a server that spends them locally (lax mode).  The
-- limiter key is the one lua/rate_gcra.lua uses, so strict and lax callers
-- share one limit: the units are admitted exactly as `granted` strict calls
-- of cost 1 made now would be, each moving the TAT by one emission interval.
-- KEYS[1] limiter key, KEYS[2] its reset epoch (same hash tag).
-- ARGV[1] rate: the denominator of every fraction.
-- ARGV[2], ARGV[3] T = per / rate (one unit) as whole us and numerator.
-- ARGV[4], ARGV[5] tau = per * burst / rate the same way.
-- ARGV[6] want, ARGV[7] min (want * rate < 2^53, want <= burst: checked by
--   the caller, so every product below is exact in Lua's doubles).
-- Returns {granted, now, tat_before (us, frac), tat_after (us, frac), epoch}:
-- the units' slots are tat_before + (k - 1) * T for k = 1..granted; unit k
-- may be spent at any time up to its slot (see src/ratestate.c).
local den = tonumber(ARGV[1])
local t_us, t_f = tonumber(ARGV[2]), tonumber(ARGV[3])
local tau_us, tau_f = tonumber(ARGV[4]), tonumber(ARGV[5])
local want, min = tonumber(ARGV[6]), tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now + tau_us + 1 >= 9007199254740992 then
  return redis.error_reply('DKRANGE time beyond 2^53 microseconds')
end
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0') or 0

local tb_us, tb_f = now, 0
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
    s_us, s_f = s_us + 1, 0
  end
  if s_us > now or (s_us == now and s_f > 0) then
    tb_us, tb_f = s_us, s_f
  end
end

-- tat_before + g * T, exactly
local function after(g)
  local f = tb_f + g * t_f
  local carry = math.floor(f / den)
  return tb_us + g * t_us + carry, f - carry * den
end
local lim_us = now + tau_us
local function fits(g)
  local us, f = after(g)
  return us < lim_us or (us == lim_us and f <= tau_f)
end

-- estimate in doubles, then settle exactly
local room = (lim_us - tb_us) + (tau_f - tb_f) / den
local g = math.floor(room / (t_us + t_f / den))
if g > want then g = want end
if g < 0 then g = 0 end
while g > 0 and not fits(g) do g = g - 1 end
while g < want and fits(g + 1) do g = g + 1 end
if g < min then g = 0 end

local na_us, na_f = tb_us, tb_f
if g > 0 then
  na_us, na_f = after(g)
  local d = na_us - now
  if na_f > 0 then d = d + 1 end
  local ms = math.floor(d / 1000)
  while ms * 1000 < d do ms = ms + 1 end
  if ms < 1 then ms = 1 end
  redis.call('SET', KEYS[1], string.format('%.0f+%.0f/%.0f', na_us, na_f, den),
    'PX', string.format('%.0f', ms))
end
return {g, now, tb_us, tb_f, na_us, na_f, epoch}
