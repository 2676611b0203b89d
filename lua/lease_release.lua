-- lease_release: give a lease up, if this owner holds it with this token.
-- KEYS[1] the lease hash (see lease_acquire.lua).
-- ARGV[1] owner id; ARGV[2] token ('0': whatever token this owner holds).
-- Returns 1 when released, 0 when this owner does not hold it, -1 when this
-- owner holds it under another token.  The token counter is kept: the next
-- holder gets a higher token.
local cur = redis.call('HMGET', KEYS[1], 'owner', 'token')
if cur[1] ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '0' and cur[2] ~= ARGV[2] then
  return -1
end
redis.call('DEL', KEYS[1])
return 1
