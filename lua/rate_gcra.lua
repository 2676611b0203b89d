-- rate_gcra: one GCRA decision (generic cell rate algorithm, as in
-- redis-cell) for one rate limiter, on Redis's clock (TIME), never a client's.
-- KEYS[1] limiter key.
-- ARGV[1] rate: the denominator of every fraction below.
-- ARGV[2], ARGV[3] increment = per * cost / rate, as whole us and a fraction
--   (numerator over rate, below rate).
-- ARGV[4], ARGV[5] tau = per * burst / rate, the same way.
-- Times and the stored TAT as in lua/lib/gcra.lua (exact even when
-- per / rate is not a whole number of microseconds); the key expires when
-- the TAT passes, i.e. when the limiter is full again.
-- A denied call, and a call of cost 0, writes nothing.
-- Returns {allowed 1/0, tat - now (us, frac), new_tat - now (us, frac)}
-- where tat is the state after the call and new_tat = max(TAT, now) + increment.
-- @include lib/gcra.lua
local den = tonumber(ARGV[1])
local inc_us, inc_f = tonumber(ARGV[2]), tonumber(ARGV[3])
local tau_us, tau_f = tonumber(ARGV[4]), tonumber(ARGV[5])
local now, err = gcra_now(tau_us)
if not now then
  return err
end

-- tat = max(stored TAT, now)
local tat_us, tat_f = gcra_tat(KEYS[1], now, den)
if not tat_us then
  return tat_f
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
  gcra_store(KEYS[1], new_us, new_f, den, now)
  tat_us, tat_f = new_us, new_f
end
return {allowed and 1 or 0, tat_us - now, tat_f, new_us - now, new_f}
