-- lease_renew: extend a lease this owner still holds with this token.
-- KEYS[1] the lease hash (see lease_acquire.lua).
-- ARGV[1] owner id; ARGV[2] token ('0': whatever token this owner holds);
-- ARGV[3] new ttl in ms.
-- Returns 1 when renewed, 0 when this owner does not hold the lease (it
-- expired, was released or is held by someone else), -1 when this owner
-- holds it under another token.
local cur = redis.call('HMGET', KEYS[1], 'owner', 'token')
if cur[1] ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '0' and cur[2] ~= ARGV[2] then
  return -1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
