-- idem_abandon: give up a claim so that a retry can start again.
-- KEYS[1] the key's hash (see idem_begin.lua); ARGV[1] the caller's token.
-- Deletes the claim only if the caller holds it.  Returns 1 if so, else 0.
local v = redis.call('HMGET', KEYS[1], 'st', 'tok')
if v[1] == 'in_progress' and v[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
