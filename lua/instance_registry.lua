-- instance_registry: the instances of a fleet and their heartbeats.
-- KEYS[1] the registry: a sorted set, member = instance id, score = Redis
-- time (ms) of its last heartbeat.
-- ARGV[1] op: beat | leave | list
-- ARGV[2] this instance's id
-- ARGV[3] dead threshold in ms
-- beat:  record a heartbeat now; forget instances silent for 7 days;
--        returns {now_ms, live ids...} (live = heartbeat within threshold)
-- leave: remove this instance (clean shutdown: its slices stop counting
--        as soon as other servers refresh their live list); returns {now_ms}
-- list:  returns {now_ms, id1, score1, id2, score2, ...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'beat' then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 7 * 24 * 3600 * 1000)
  local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[3]), '+inf')
  table.insert(live, 1, tostring(now))
  return live
elseif op == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return {tostring(now)}
elseif op == 'list' then
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  table.insert(all, 1, tostring(now))
  return all
end
return redis.error_reply('DKBADOP unknown operation')
