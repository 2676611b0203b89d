-- lib/instance: exact arithmetic and the live-set recompute of
-- instance-aware counters, shared by lua/instance.lua (one counter per
-- call) and lua/instance_flush.lua (a lax flush part: many counters)
-- through src/embed-lua.sh's "-- @include lib/instance.lua".
--
-- A counter is a hash (lua/instance.lua lists its fields): per instance
-- number n a slice v:n written by serial s:n in epoch e:n at time t:n, the
-- epoch E, and the cached sum S of the live current-epoch slices at
-- live-set version L.
-- Arithmetic is exact over 64 bits: numbers are split into a high part and
-- 9 low digits, so no double ever exceeds 2^53.

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

-- a + b for decimal strings, or nil if outside bigint: plain doubles when
-- both have at most 15 digits (the sum stays below 2^53, exact), else split
local function add_dec(a, b)
  if #a <= 15 and #b <= 15 then
    return string.format('%.0f', tonumber(a) + tonumber(b))
  end
  local ah, al = split(a)
  local bh, bl = split(b)
  return join(ah + bh, al + bl)
end

-- serial of number n in the live set cells (4 bytes, big-endian, per number)
local function live_serial(cells, n)
  local i = 4 * tonumber(n) + 1
  if #cells < i + 3 then return '0' end
  local a, b, c, d = string.byte(cells, i, i + 3)
  return string.format('%d', ((a * 256 + b) * 256 + c) * 256 + d)
end

-- Recompute the cached sum of key (which exists) at live-set version known
-- from the live set cells: the current-epoch slices of live serials.
-- Slices of others not live and not written for GC_MS are deleted.
-- Returns S, or nil if it is outside bigint (nothing changed then).
local function recompute(key, epoch, known, cells, me, now)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  local hi, lo = 0, 0
  local garbage = {}
  for fld, v in pairs(h) do
    if string.sub(fld, 1, 2) == 'v:' then
      local n = string.sub(fld, 3)
      if h['s:' .. n] == live_serial(cells, n) then
        if h['e:' .. n] == epoch then
          local a, b = split(v)
          hi, lo = hi + a, lo + b
        end
      elseif n ~= me and now - (tonumber(h['t:' .. n]) or 0) > GC_MS then
        garbage[#garbage + 1] = n
      end
    end
  end
  local S = join(hi, lo)
  if S == nil then return nil end
  for _, n in ipairs(garbage) do
    redis.call('HDEL', key, 'v:' .. n, 's:' .. n, 'e:' .. n, 't:' .. n)
  end
  redis.call('HSET', key, 'L', string.format('%d', known), 'S', S)
  return S
end

-- The state of key for instance number me with serial: {epoch, L, S,
-- mine, was}; or nil and DKREAPED (a newer instance holds number me;
-- nothing changed).  was: the fields a slice write sets, as they were
-- (slice_fields order; false where absent), to undo it.
local function read_state(key, me, serial)
  local f = redis.call('HMGET', key, 'E', 'L', 'S', 'v:' .. me, 's:' .. me, 'e:' .. me, 't:' .. me)
  if f[5] and tonumber(f[5]) > tonumber(serial) then
    return nil, redis.error_reply('DKREAPED number ' .. me .. ' belongs to a newer instance')
  end
  local st = { epoch = f[1] or '0', L = tonumber(f[2] or '-1'), S = f[3] or '0',
               was = { f[4], f[5], f[6], f[7], f[2], f[3] } }
  st.mine = (f[5] == serial and f[6] == st.epoch and f[4]) or '0'
  return st
end

-- Bring st.S to live-set version known, which the caller knows (cells:
-- that live set, or nil).  Returns nil, or an error reply that changed
-- nothing but the cached sum: DKNEWER (the counter saw a newer live set:
-- the caller refreshes its copy), DKSTALE (the counter needs the live set:
-- the caller resends with cells), DKOVERFLOW.
local function sync_state(key, st, me, known, cells, now)
  if st.L > known then
    return redis.error_reply('DKNEWER ' .. string.format('%d', st.L))
  elseif st.L < known then
    if redis.call('EXISTS', key) == 1 then
      if cells == nil then return redis.error_reply('DKSTALE the counter needs the live set') end
      st.S = recompute(key, st.epoch, known, cells, me, now)
      if st.S == nil then return redis.error_reply('DKOVERFLOW the total is outside bigint') end
    else
      st.S = '0'
    end
  end
  return nil
end

-- What a caller is answered: S, plus its own slice when it is not live.
local function total_of(S, mine, melive)
  if melive then return S end
  return add_dec(S, mine)
end

-- This instance's slice of key (st: read_state, sync_state) after adding
-- delta: the new slice, S and total, or nil if one is outside bigint.  The
-- caller writes slice_fields(...).
local function slice_after(st, delta, melive)
  local newmine = add_dec(st.mine, delta)
  local newS = st.S
  if melive then newS = add_dec(st.S, delta) end
  if newmine == nil or newS == nil then return nil end
  local newtotal = total_of(newS, newmine, melive)
  if newtotal == nil then return nil end
  return newmine, newS, newtotal
end

-- The fields a slice write sets, in slice_fields order.
local function slice_names(me)
  return { 'v:' .. me, 's:' .. me, 'e:' .. me, 't:' .. me, 'L', 'S' }
end

-- The HSET arguments of a slice write (with S at version known).
local function slice_fields(me, serial, epoch, slice, S, known, now)
  return 'v:' .. me, slice, 's:' .. me, serial, 'e:' .. me, epoch, 't:' .. me, now,
         'L', string.format('%d', known), 'S', S
end

-- The same for a counter read by read_state (st): only the fields that
-- change (the slice, its time and S; serial, epoch and L when they differ).
local function slice_changes(st, me, serial, slice, S, known, now)
  local a = { 'v:' .. me, slice, 't:' .. me, now, 'S', S }
  local L = string.format('%d', known)
  if st.was[2] ~= serial then a[#a + 1] = 's:' .. me; a[#a + 1] = serial end
  if st.was[3] ~= st.epoch then a[#a + 1] = 'e:' .. me; a[#a + 1] = st.epoch end
  if st.was[5] ~= L then a[#a + 1] = 'L'; a[#a + 1] = L end
  return a
end
