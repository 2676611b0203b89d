-- lease_acquire: take a lease that nobody holds, or renew it when this owner
-- already holds it.  Used for leases (one owner per session) and for
-- leaderships (one owner per PostgreSQL instance).
-- KEYS[1] the lease: a hash {owner, token, holder} that expires after the
--   ttl (Redis's clock);
-- KEYS[2] its fencing-token counter (same hash slot), never expired, so a
--   token is never handed out twice, also after expiry or release.
-- ARGV[1] owner id; ARGV[2] holder text (for people); ARGV[3] ttl in ms.
-- Returns {1, token, ttl} when the owner holds the lease now (a renewal
-- keeps the token), {0, token, pttl} when someone else holds it.
local cur = redis.call('HMGET', KEYS[1], 'owner', 'token')
if cur[1] and cur[1] ~= ARGV[1] then
  return {0, cur[2] or '0', redis.call('PTTL', KEYS[1])}
end
local token = cur[2]
if not cur[1] or not token then
  token = string.format('%.0f', redis.call('INCR', KEYS[2]))
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'holder', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, token, tonumber(ARGV[3])}
