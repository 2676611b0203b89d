-- rate_return: give back the last n units of a lax reservation that were
-- never spent, by moving the limiter's TAT back by n * T -- only when the
-- TAT is still exactly where that reservation left it (nobody took units
-- after it, no reset), so the units handed back are the chain's last ones
-- and no one else's.  Otherwise nothing happens: the units simply expire
-- when their slots pass.
-- KEYS[1] limiter key.
-- ARGV[1] the state the reservation wrote ("<us>+<frac>/<rate>").
-- ARGV[2] rate, ARGV[3], ARGV[4] n * T as whole us and numerator.
-- Returns 1 if the units were given back, 0 if not.
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] then
  return 0
end
local den = tonumber(ARGV[2])
local r_us, r_f = tonumber(ARGV[3]), tonumber(ARGV[4])
local s_us, s_f = string.match(v, '^(%d+)%+(%d+)/')
s_us, s_f = tonumber(s_us), tonumber(s_f)
local n_us, n_f = s_us - r_us, s_f - r_f
if n_f < 0 then
  n_us, n_f = n_us - 1, n_f + den
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if n_us < now or (n_us == now and n_f == 0) then
  redis.call('DEL', KEYS[1])
  return 1
end
local d = n_us - now
if n_f > 0 then d = d + 1 end
local ms = math.floor(d / 1000)
while ms * 1000 < d do ms = ms + 1 end
redis.call('SET', KEYS[1], string.format('%.0f+%.0f/%.0f', n_us, n_f, den),
  'PX', string.format('%.0f', ms))
return 1
