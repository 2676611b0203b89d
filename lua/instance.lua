-- instance: instance-aware counters (per-server slices).
--
-- KEYS[1] the counter: a hash with
--     E          the counter's epoch (absent = 0)
--     v:<id>     slice of instance <id>
--     e:<id>     epoch the slice belongs to (a slice of an older epoch is stale)
--     t:<id>     Redis time (ms) of the slice's last write by its instance
-- KEYS[2] the counter's lax flush record (hash: instance id -> last batch
--     sequence applied), same hash slot; used by op "flush" only.
-- ARGV[1] op: inc | flush | get | set | set_here | del | del_here
-- ARGV[2] this instance's id
-- ARGV[3] delta or value (decimal bigint; "0" when unused)
-- ARGV[4] batch sequence (flush) or "0"
-- ARGV[5] number of live instances n, then ARGV[6 .. 5+n] their ids (this
--     instance counts as live in any case)
--
-- The total is the sum of the slices of the current epoch whose instance
-- is live.  Nothing is subtracted when an instance dies: its slice simply
-- stops counting, so it is never subtracted twice and comes back exactly
-- once if the instance does (unless a set or del made it stale).  Slices of
-- instances that are not live and were not written for GC_MS are deleted.
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

local key, op, me = KEYS[1], ARGV[1], ARGV[2]
local live = {[me] = true}
for i = 1, tonumber(ARGV[5]) do live[ARGV[5 + i]] = true end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if op == 'flush' then
  local last = redis.call('HGET', KEYS[2], me)
  if last and tonumber(last) >= tonumber(ARGV[4]) then
    op = 'get'                        -- already applied: report only
  else
    op = 'inc'
  end
end

-- read the counter: epoch, this slice, sum of other live current slices
local flat = redis.call('HGETALL', key)
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
local epoch = h['E'] or '0'
local mine = (h['e:' .. me] == epoch and h['v:' .. me]) or '0'
local ohi, olo = 0, 0
local garbage = {}
for f, v in pairs(h) do
  if string.sub(f, 1, 2) == 'v:' then
    local id = string.sub(f, 3)
    if id ~= me then
      if live[id] then
        if h['e:' .. id] == epoch then
          local a, b = split(v)
          ohi, olo = ohi + a, olo + b
        end
      elseif now - (tonumber(h['t:' .. id]) or 0) > GC_MS then
        garbage[#garbage + 1] = id
      end
    end
  end
end

local mhi, mlo = split(mine)
local total = join(ohi + mhi, olo + mlo)
if total == nil then
  return redis.error_reply('DKOVERFLOW the total is outside bigint')
end

if op == 'get' then
  return {total, mine}
elseif op == 'del' then
  redis.call('DEL', key)
  return {total, mine}
elseif op == 'del_here' then
  redis.call('HDEL', key, 'v:' .. me, 'e:' .. me, 't:' .. me)
  return {total, mine}
end

local newmine, newtotal
if op == 'inc' then
  local dhi, dlo = split(ARGV[3])
  newmine = join(mhi + dhi, mlo + dlo)
  newtotal = join(ohi + mhi + dhi, olo + mlo + dlo)
elseif op == 'set_here' then
  local vhi, vlo = split(ARGV[3])
  newmine = ARGV[3]
  newtotal = join(ohi + vhi, olo + vlo)
elseif op == 'set' then
  epoch = tostring(redis.call('HINCRBY', key, 'E', 1))
  newmine = ARGV[3]
  newtotal = ARGV[3]
else
  return redis.error_reply('DKBADOP unknown operation')
end
if newmine == nil or newtotal == nil then
  return redis.error_reply('DKOVERFLOW the result is outside bigint')
end

redis.call('HSET', key, 'v:' .. me, newmine, 'e:' .. me, epoch, 't:' .. me, now)
for _, id in ipairs(garbage) do
  redis.call('HDEL', key, 'v:' .. id, 'e:' .. id, 't:' .. id)
end
if ARGV[1] == 'flush' then
  redis.call('HSET', KEYS[2], me, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], 604800000)
end
return {newtotal, newmine}
