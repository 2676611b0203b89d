-- instance_registry: the instances of a fleet, their numbers and liveness.
--
-- Keys (one hash slot, {instances}):
-- KEYS[1] <p>:reg:{instances}        sorted set: instance id -> Redis time
--         (ms) of its last heartbeat (every registered instance)
-- KEYS[2] <p>:reg:{instances}:meta   hash: format (representation version),
--         version (live-set version), next (next never-used number),
--         serial (last serial handed out)
-- KEYS[3] <p>:reg:{instances}:num    hash: instance id -> "<number>:<serial>"
-- KEYS[4] <p>:reg:{instances}:alive  sorted set: the live instances only
-- KEYS[5] <p>:reg:{instances}:free   list: numbers to recycle
-- KEYS[6] <p>:reg:{instances}:live   string: 4 bytes (big-endian serial) per
--         number; 0 = not live.  This is the live set the counter scripts
--         are given when their cached sum is older than the live set.
-- ARGV[1] op: beat | live | leave | list
-- ARGV[2] this instance's id
-- ARGV[3] dead threshold in ms
-- ARGV[4] the representation version this server writes
-- ARGV[5] distkit.max_instances (numbers are 0 .. max-1)
-- ARGV[6] the live-set version the caller knows ("0": none; "-": never send it)
--
-- beat:  heartbeat now; instances whose heartbeat is older than the
--        threshold leave the live set (each exactly once); this instance
--        gets a number (a recycled one if any) on its first beat and joins
--        the live set (again, after a pause); instances silent for 7 days
--        are forgotten and their numbers recycled (at most 100 per beat).
--        Any change of the live set makes a new version, never smaller
--        than Redis time in ms (so it grows even if the registry was lost).
-- live:  no heartbeat, only the state.
-- Both return {now_ms, number, serial, version, live count, live string
-- (or "" when the caller's version is current)}; number -1 = not registered.
-- leave: this instance leaves the live set at once (clean shutdown); it
--        keeps its number, so a restarted worker counts its slices again.
-- list:  {now_ms, id, heartbeat, number, alive(0/1), ...}
-- Errors: DKFORMAT (another representation under this prefix),
--         DKFULL (no number left below max).
local GONE_MS = 7 * 24 * 3600 * 1000
local reg, meta, num, alive, free, livekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local op, me, threshold, format = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local found = redis.call('HGET', meta, 'format')
if found and found ~= format then
  return redis.error_reply('DKFORMAT ' .. found)
end
if not found then redis.call('HSET', meta, 'format', format) end

local function cell(serial)
  local s = tonumber(serial)
  return string.char(math.floor(s / 16777216) % 256, math.floor(s / 65536) % 256,
                     math.floor(s / 256) % 256, s % 256)
end

local function parse(v)
  local n, s = string.match(v, '^(%d+):(%d+)$')
  return tonumber(n), s
end

local changed = false
local function mark_dead(id)
  redis.call('ZREM', alive, id)
  local v = redis.call('HGET', num, id)
  if v then
    local n = parse(v)
    redis.call('SETRANGE', livekey, 4 * n, '\0\0\0\0')
  end
  changed = true
end

local function bump()
  local v = tonumber(redis.call('HGET', meta, 'version') or '0')
  v = math.max(v + 1, now)
  redis.call('HSET', meta, 'version', string.format('%d', v))
end

if op == 'beat' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', '(' .. (now - threshold))) do
    if id ~= me then mark_dead(id) end
  end
  redis.call('ZADD', reg, now, me)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', reg, '-inf', '(' .. (now - GONE_MS), 'LIMIT', 0, 100)) do
    redis.call('ZREM', reg, id)
    redis.call('ZREM', alive, id)
    local v = redis.call('HGET', num, id)
    if v then
      local n = parse(v)
      redis.call('HDEL', num, id)
      redis.call('SETRANGE', livekey, 4 * n, '\0\0\0\0')
      redis.call('RPUSH', free, n)
    end
  end
  local v = redis.call('HGET', num, me)
  if not v then
    local max = tonumber(ARGV[5])
    local n = nil
    local popped = redis.call('LPOP', free)
    if popped then
      n = tonumber(popped)
      if n >= max then
        redis.call('LPUSH', free, n)
        n = nil
      end
    else
      local nxt = tonumber(redis.call('HGET', meta, 'next') or '0')
      if nxt < max then
        n = nxt
        redis.call('HSET', meta, 'next', nxt + 1)
      end
    end
    if n == nil then
      if changed then bump() end
      return redis.error_reply('DKFULL ' .. redis.call('HLEN', num))
    end
    local serial = redis.call('HINCRBY', meta, 'serial', 1)
    v = string.format('%d:%d', n, serial)
    redis.call('HSET', num, me, v)
  end
  local n, serial = parse(v)
  if redis.call('ZADD', alive, now, me) == 1 then
    redis.call('SETRANGE', livekey, 4 * n, cell(serial))
    changed = true
  end
  if changed then bump() end
elseif op == 'leave' then
  if redis.call('ZSCORE', alive, me) then
    mark_dead(me)
    bump()
  end
  return {tostring(now)}
elseif op == 'list' then
  local all = redis.call('ZRANGE', reg, 0, -1, 'WITHSCORES')
  local out = {tostring(now)}
  for i = 1, #all, 2 do
    local v = redis.call('HGET', num, all[i])
    local n = v and parse(v) or -1
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
    out[#out + 1] = tostring(n)
    out[#out + 1] = redis.call('ZSCORE', alive, all[i]) and '1' or '0'
  end
  return out
elseif op ~= 'live' then
  return redis.error_reply('DKBADOP unknown operation')
end

-- beat or live: this instance's state and the live set
local v = redis.call('HGET', num, me)
local n, serial = -1, '0'
if v then n, serial = parse(v) end
local version = redis.call('HGET', meta, 'version') or '0'
local cells = ''
if version ~= ARGV[6] and ARGV[6] ~= '-' then cells = redis.call('GET', livekey) or '' end
return {tostring(now), tostring(n), serial, version, redis.call('ZCARD', alive), cells}
