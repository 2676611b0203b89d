-- bench/instance_flush_per_key.lua: lua/instance.lua as it was before instance-aware
-- lax flushes were grouped (kept for bench/lax-flush.sh's old-vs-new comparison only;
-- distkit does not load it): op "flush" applies one counter's delta, exactly once
-- through the per-counter record KEYS[2] (<prefix>:if:{key}).
-- instance: instance-aware counters (per-server slices).
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
-- KEYS[2] the counter's lax flush record (hash: "<n>:<serial>" -> last
--     batch sequence applied), same hash slot; used by op "flush" only.
-- ARGV[1] op: inc | add | flush | get | set | set_here | del | del_here
-- ARGV[2] this instance's number, ARGV[3] its serial
-- ARGV[4] delta or value (decimal bigint; "0" when unused)
-- ARGV[5] batch sequence (flush) or "0"
-- ARGV[6] the live-set version the caller knows
-- ARGV[7] "1" if this instance is live in that version, else "0"
-- ARGV[8] (optional) the live set of that version: 4 bytes (big-endian
--     serial, 0 = not live) per instance number
--
-- Per call the work is O(1): the total is S, plus this instance's slice
-- when it is not live (a server always counts its own slice).  When the
-- caller knows a newer live set than L, the script answers DKSTALE unless
-- ARGV[8] is given, and then recomputes S over the slices (once per
-- counter and live-set change); when the counter has seen a newer live set
-- than the caller, it answers DKNEWER (the caller refreshes and retries).
-- Both answers change nothing.  Nothing is subtracted when an instance
-- dies: its slice simply stops counting at the next recompute, so it is
-- never subtracted twice and comes back exactly once if the instance does
-- (unless a set or del made it stale).  Slices not live and not written
-- for GC_MS are deleted at a recompute.
--
-- Returns {total, this instance's slice} as decimal strings (values before
-- the change for del and del_here).  Arithmetic is exact over 64 bits:
-- numbers are split into a high part and 9 low digits, so no double ever
-- exceeds 2^53; results outside bigint give DKOVERFLOW and change nothing.

local GC_MS = 7 * 24 * 3600 * 1000
local B = 1000000000
local MAXHI, MAXLO = 9223372036, 854775807

-- decimal string -> hi, lo (value = hi * B + lo, same sign)
local function split(s)
  local neg = string.sub(s, 1, 1) == '-'
  local digits = neg and string.sub(s, 2) or s
  local n = #digits
  local lo = tonumber(string.sub(digits, math.max(1, n - 8))) or 0
  local hi = n > 9 and tonumber(string.sub(digits, 1, n - 9)) or 0
  if neg then return -hi, -lo end
  return hi, lo
end

-- hi, lo sums -> decimal string, or nil if outside bigint
local function join(hi, lo)
  local l = lo % B                    -- 0 <= l < B
  local h = hi + (lo - l) / B
  if h >= 0 then
    if h > MAXHI or (h == MAXHI and l > MAXLO) then return nil end
    if h == 0 then return string.format('%d', l) end
    return string.format('%.0f%09d', h, l)
  end
  -- negative: magnitude (-h) * B - l
  h = -h
  if l > 0 then h = h - 1; l = B - l end
  if h > MAXHI or (h == MAXHI and l > MAXLO + 1) then return nil end
  if h == 0 then return string.format('-%d', l) end
  return string.format('-%.0f%09d', h, l)
end

local key, op, me, serial = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local known, melive, cells = tonumber(ARGV[6]), ARGV[7] == '1', ARGV[8]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if op == 'flush' then
  local last = redis.call('HGET', KEYS[2], me .. ':' .. serial)
  if last and tonumber(last) >= tonumber(ARGV[5]) then
    op = 'get'                        -- already applied: report only
  else
    op = 'inc'
  end
end

local f = redis.call('HMGET', key, 'E', 'L', 'S', 'v:' .. me, 's:' .. me, 'e:' .. me)
local epoch = f[1] or '0'
local L = tonumber(f[2] or '-1')
local S = f[3] or '0'
if f[5] and tonumber(f[5]) > tonumber(serial) then
  return redis.error_reply('DKREAPED number ' .. me .. ' belongs to a newer instance')
end
local mine = (f[5] == serial and f[6] == epoch and f[4]) or '0'

-- serial of number n in the live set given
local function live_serial(n)
  local i = 4 * tonumber(n) + 1
  if #cells < i + 3 then return '0' end
  local a, b, c, d = string.byte(cells, i, i + 3)
  return string.format('%d', ((a * 256 + b) * 256 + c) * 256 + d)
end

-- add (a deferred increment at commit): applied whatever the versions; a
-- mismatch only drops the cached sum (the next call recomputes it)
if op == 'add' then
  if L == known or redis.call('EXISTS', key) == 0 then
    op = 'inc'
  else
    local a, b = split(mine)
    local c, d = split(ARGV[4])
    local nm = join(a + c, b + d)
    if nm == nil then
      return redis.error_reply('DKOVERFLOW the result is outside bigint')
    end
    redis.call('HSET', key, 'v:' .. me, nm, 's:' .. me, serial, 'e:' .. me, epoch, 't:' .. me, now)
    redis.call('HDEL', key, 'L', 'S')
    return {nm, nm}
  end
end

if L > known then
  return redis.error_reply('DKNEWER ' .. string.format('%d', L))
elseif L < known then
  if redis.call('EXISTS', key) == 1 then
    if cells == nil then return redis.error_reply('DKSTALE the counter needs the live set') end
    local flat = redis.call('HGETALL', key)
    local h = {}
    for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
    local hi, lo = 0, 0
    local garbage = {}
    for fld, v in pairs(h) do
      if string.sub(fld, 1, 2) == 'v:' then
        local n = string.sub(fld, 3)
        if h['s:' .. n] == live_serial(n) then
          if h['e:' .. n] == epoch then
            local a, b = split(v)
            hi, lo = hi + a, lo + b
          end
        elseif n ~= me and now - (tonumber(h['t:' .. n]) or 0) > GC_MS then
          garbage[#garbage + 1] = n
        end
      end
    end
    S = join(hi, lo)
    if S == nil then
      return redis.error_reply('DKOVERFLOW the total is outside bigint')
    end
    for _, n in ipairs(garbage) do
      redis.call('HDEL', key, 'v:' .. n, 's:' .. n, 'e:' .. n, 't:' .. n)
    end
    redis.call('HSET', key, 'L', string.format('%d', known), 'S', S)
  else
    S = '0'
  end
end

local shi, slo = split(S)
local mhi, mlo = split(mine)
local total
if melive then total = S else total = join(shi + mhi, slo + mlo) end
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
    redis.call('HSET', key, 'S', join(shi - mhi, slo - mlo))
  end
  redis.call('HDEL', key, 'v:' .. me, 's:' .. me, 'e:' .. me, 't:' .. me)
  -- no slice left and no epoch to keep: the counter is gone
  local rest = redis.call('HMGET', key, 'L', 'S')
  local n = (rest[1] and 1 or 0) + (rest[2] and 1 or 0)
  if redis.call('HLEN', key) == n then redis.call('DEL', key) end
  return {total, mine}
end

local newmine, newS
if op == 'inc' then
  local dhi, dlo = split(ARGV[4])
  newmine = join(mhi + dhi, mlo + dlo)
  newS = melive and join(shi + dhi, slo + dlo) or S
elseif op == 'set_here' then
  local vhi, vlo = split(ARGV[4])
  newmine = ARGV[4]
  newS = melive and join(shi - mhi + vhi, slo - mlo + vlo) or S
elseif op == 'set' then
  epoch = tostring(redis.call('HINCRBY', key, 'E', 1))
  newmine = ARGV[4]
  newS = melive and ARGV[4] or '0'
else
  return redis.error_reply('DKBADOP unknown operation')
end
local newtotal = newS
if newS ~= nil and newmine ~= nil and not melive then
  local a, b = split(newS)
  local c, d = split(newmine)
  newtotal = join(a + c, b + d)
end
if newmine == nil or newS == nil or newtotal == nil then
  return redis.error_reply('DKOVERFLOW the result is outside bigint')
end

redis.call('HSET', key, 'v:' .. me, newmine, 's:' .. me, serial, 'e:' .. me, epoch, 't:' .. me, now,
           'L', string.format('%d', known), 'S', newS)
if ARGV[1] == 'flush' then
  redis.call('HSET', KEYS[2], me .. ':' .. serial, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], 604800000)
end
return {newtotal, newmine}
