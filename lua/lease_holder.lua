-- lease_holder: who holds a lease, with which token, for how long.
-- KEYS[1] the lease hash (see lease_acquire.lua).
-- Returns {} when nobody holds it, else {holder, token, pttl in ms}.
local cur = redis.call('HMGET', KEYS[1], 'holder', 'token')
if not cur[2] then
  return {}
end
return {cur[1] or '', cur[2], redis.call('PTTL', KEYS[1])}
