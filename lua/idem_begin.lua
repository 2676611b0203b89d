-- idem_begin: claim an idempotency key, or say who has it.
-- KEYS[1] the key's hash: st ('in_progress' or 'completed'), tok (the
--   holder's token, while in progress), ttl (ms to keep the result once
--   completed, 0: for ever), res (the result, once completed).
-- ARGV[1] the caller's token, ARGV[2] the holder's lease (ms),
-- ARGV[3] ttl (ms, 0: for ever).
-- Returns {'started'} when the caller now holds the claim (a new claim, or
-- one its token already held: the lease is renewed), {'in_progress'} while
-- another caller holds it, {'completed', result} once completed.
-- An in-progress claim expires with its lease: a holder that dies frees it.
local v = redis.call('HMGET', KEYS[1], 'st', 'tok', 'res')
local st, tok, res = v[1], v[2], v[3]
if st == false and redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('DKBADSTATE the key does not hold a distkit idempotency claim')
end
if st == false or (st == 'in_progress' and tok == ARGV[1]) then
  redis.call('HSET', KEYS[1], 'st', 'in_progress', 'tok', ARGV[1], 'ttl', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'started'}
end
if st == 'in_progress' then
  return {'in_progress'}
end
if st == 'completed' and res then
  return {'completed', res}
end
return redis.error_reply('DKBADSTATE the key does not hold a distkit idempotency claim')
