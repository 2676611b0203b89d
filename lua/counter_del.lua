-- counter_del: delete a counter and return the value it had (nil if none).
-- KEYS[1] counter key.
-- A value that is not a 64-bit integer is left alone and reported.
local v = redis.call('GET', KEYS[1])
if v == false then
  return false
end
if not (v == '0' or string.match(v, '^%-?[1-9]%d*$')) or #v > 20 then
  return redis.error_reply('DKNOTINT the key does not hold an integer')
end
redis.call('DEL', KEYS[1])
return v
