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
-- @include lib/gcra.lua
local den = tonumber(ARGV[1])
local t_us, t_f = tonumber(ARGV[2]), tonumber(ARGV[3])
local tau_us, tau_f = tonumber(ARGV[4]), tonumber(ARGV[5])
local want, min = tonumber(ARGV[6]), tonumber(ARGV[7])
local now, err = gcra_now(tau_us)
if not now then
  return err
end
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0') or 0

local tb_us, tb_f = gcra_tat(KEYS[1], now, den)
if not tb_us then
  return tb_f
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
  gcra_store(KEYS[1], na_us, na_f, den, now)
end
return {g, now, tb_us, tb_f, na_us, na_f, epoch}
