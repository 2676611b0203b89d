-- idem_complete: store the result of a claim and mark it completed.
-- KEYS[1] the key's hash (see idem_begin.lua).
-- ARGV[1] the caller's token, ARGV[2] the result (jsonb text),
-- ARGV[3] ttl (ms, 0: for ever), used when the claim has already expired.
-- Completes when the caller holds the claim, or when its claim expired and
-- nobody has claimed the key since (the work is done: keep its result).
-- The result is kept for ttl from now.  Returns 1 if stored, else 0.
local v = redis.call('HMGET', KEYS[1], 'st', 'tok', 'ttl')
local ttl
if v[1] == false then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.error_reply('DKBADSTATE the key does not hold a distkit idempotency claim')
  end
  ttl = ARGV[3]
elseif v[1] == 'in_progress' and v[2] == ARGV[1] then
  ttl = v[3] or ARGV[3]
else
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', 'completed', 'res', ARGV[2])
if (tonumber(ttl) or 0) > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
