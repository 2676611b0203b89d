-- instance: instance-aware counters (per-server slices), one counter per call.
--
-- KEYS[1] the counter: a hash with
--     E          the counter's epoch (absent = 0)
--     v:<n>      slice of instance number <n>
--     s:<n>      serial of the instance that wrote it (numbers are recycled:
--                a slice counts only for the serial that wrote it)
--     e:<n>      epoch the slice belongs to (a slice of an older epoch is stale)
--     t:<n>      Redis time (ms) of the slice's last write
--     L          live-set version the cached sum S was computed at
--     S          cached sum of the current-epoch slices live at version L
-- ARGV[1] op: inc | add | get | set | set_here | del | del_here
-- ARGV[2] this instance's number, ARGV[3] its serial
-- ARGV[4] delta or value (decimal bigint; "0" when unused)
-- ARGV[5] the live-set version the caller knows
-- ARGV[6] "1" if this instance is live in that version, else "0"
-- ARGV[7] (optional) the live set of that version: 4 bytes (big-endian
--     serial, 0 = not live) per instance number
-- (Lax flushes go through lua/instance_flush.lua, many counters per call.)
--
-- Per call the work is O(1): the total is S, plus this instance's slice
-- when it is not live (a server always counts its own slice).  When the
-- caller knows a newer live set than L, the script answers DKSTALE unless
-- ARGV[7] is given, and then recomputes S over the slices (once per
-- counter and live-set change); when the counter has seen a newer live set
-- than the caller, it answers DKNEWER (the caller refreshes and retries).
-- Both answers change nothing.  Nothing is subtracted when an instance
-- dies: its slice simply stops counting at the next recompute, so it is
-- never subtracted twice and comes back exactly once if the instance does
-- (unless a set or del made it stale).  Slices not live and not written
-- for 7 days are deleted at a recompute.
--
-- Returns {total, this instance's slice} as decimal strings (values before
-- the change for del and del_here).  Results outside bigint give
-- DKOVERFLOW and change nothing.

-- @include lib/instance.lua

local key, op, me, serial = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local known, melive, cells = tonumber(ARGV[5]), ARGV[6] == '1', ARGV[7]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local st, err = read_state(key, me, serial)
if st == nil then return err end

-- add (a deferred increment at commit): applied whatever the versions; a
-- mismatch only drops the cached sum (the next call recomputes it)
if op == 'add' then
  if st.L == known or redis.call('EXISTS', key) == 0 then
    op = 'inc'
  else
    local nm = add_dec(st.mine, ARGV[4])
    if nm == nil then
      return redis.error_reply('DKOVERFLOW the result is outside bigint')
    end
    redis.call('HSET', key, 'v:' .. me, nm, 's:' .. me, serial, 'e:' .. me, st.epoch, 't:' .. me, now)
    redis.call('HDEL', key, 'L', 'S')
    return {nm, nm}
  end
end

err = sync_state(key, st, me, known, cells, now)
if err then return err end

local S, mine, epoch = st.S, st.mine, st.epoch
local total = total_of(S, mine, melive)
if total == nil then
  return redis.error_reply('DKOVERFLOW the total is outside bigint')
end

if op == 'get' then
  return {total, mine}
elseif op == 'del' then
  redis.call('DEL', key)
  return {total, mine}
elseif op == 'del_here' then
  if melive and mine ~= '0' then
    local shi, slo = split(S)
    local mhi, mlo = split(mine)
    redis.call('HSET', key, 'S', join(shi - mhi, slo - mlo))
  end
  redis.call('HDEL', key, 'v:' .. me, 's:' .. me, 'e:' .. me, 't:' .. me)
  -- no slice left and no epoch to keep: the counter is gone
  local rest = redis.call('HMGET', key, 'L', 'S')
  local n = (rest[1] and 1 or 0) + (rest[2] and 1 or 0)
  if redis.call('HLEN', key) == n then redis.call('DEL', key) end
  return {total, mine}
elseif op == 'inc' then
  local newmine, newS, newtotal = slice_after(st, ARGV[4], melive)
  if newmine == nil then
    return redis.error_reply('DKOVERFLOW the result is outside bigint')
  end
  redis.call('HSET', key, slice_fields(me, serial, epoch, newmine, newS, known, now))
  return {newtotal, newmine}
end

local newmine, newS
if op == 'set_here' then
  local shi, slo = split(S)
  local mhi, mlo = split(mine)
  local vhi, vlo = split(ARGV[4])
  newmine = ARGV[4]
  newS = S
  if melive then newS = join(shi - mhi + vhi, slo - mlo + vlo) end
elseif op == 'set' then
  epoch = tostring(redis.call('HINCRBY', key, 'E', 1))
  newmine = ARGV[4]
  newS = melive and ARGV[4] or '0'
else
  return redis.error_reply('DKBADOP unknown operation')
end
local newtotal = nil
if newS ~= nil then newtotal = total_of(newS, newmine, melive) end
if newtotal == nil then
  return redis.error_reply('DKOVERFLOW the result is outside bigint')
end

redis.call('HSET', key, slice_fields(me, serial, epoch, newmine, newS, known, now))
return {newtotal, newmine}
