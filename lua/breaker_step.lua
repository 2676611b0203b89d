-- breaker_step: one step of a circuit breaker shared by the fleet, on
-- Redis's clock (TIME).  Every transition happens here, atomically.
-- KEYS[1] the breaker's state hash, KEYS[2] its configuration hash (one
-- hash slot: the same user key, kinds b and bc).
-- ARGV[1] the operation: allow, record, state or trip.
-- ARGV[2..7] the defaults used while the breaker has no configuration:
--   threshold (percent), minimum calls, window (s), open_for (ms),
--   half-open calls, slow-call threshold (us, -1: none).
-- ARGV[8], ARGV[9] (record) 1 for a success, 0 for a failure; the call's
--   duration in us (-1: unknown).
--
-- State hash fields (absent means the value in brackets):
--   st     closed, open, half_open or forced_open [closed]
--   untl   open: when it may go half-open; half_open: when trial slots
--          taken but not recorded are given to new callers (ms) [0]
--   ht, hs half-open trial slots taken, successes recorded [0]
--   n, f, w  calls, failures and slow calls in the window [0]
--   o      the oldest second that may still have a bucket [none]
--   n:<s>, f:<s>, w:<s>  the same counts for Redis second s (the buckets)
-- Invariant: every bucket lies in [o, o + window - 1] (buckets are only
-- written at the current second, after trimming those out of the window;
-- breaker_configure.lua clears them when the window changes).
-- In the closed state the hash expires window + 1 s after its last write:
-- by then every bucket is out of the window.  Other states never expire.
--
-- Returns {allowed 1/0 (allow; else 0), state, calls, failures, slow calls,
--   retry after in ms (-1: none)}.
local op = ARGV[1]

local c = redis.call('HMGET', KEYS[2], 'thr', 'min', 'win', 'open', 'half', 'slow')
if not c[1] then
  c = {ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]}
end
local thr, minc, win, open_ms = tonumber(c[1]), tonumber(c[2]), tonumber(c[3]), tonumber(c[4])
local half, slow_us = tonumber(c[5]), tonumber(c[6])
if not (thr and minc and win and open_ms and half and slow_us) or win < 1 then
  return redis.error_reply('DKBADSTATE the configuration is not a distkit circuit breaker configuration')
end

local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'st', 'untl', 'ht', 'hs', 'n', 'f', 'w', 'o')
local st = h[1] or 'closed'
local untl, ht, hs = tonumber(h[2] or '0'), tonumber(h[3] or '0'), tonumber(h[4] or '0')
local n, fl, sl = tonumber(h[5] or '0'), tonumber(h[6] or '0'), tonumber(h[7] or '0')
local o = nil
if h[8] then
  o = tonumber(h[8])
end
if not (untl and ht and hs and n and fl and sl and (o or not h[8])) or
   (st ~= 'closed' and st ~= 'open' and st ~= 'half_open' and st ~= 'forced_open') then
  return redis.error_reply('DKBADSTATE the key does not hold a distkit circuit breaker state')
end
local dirty = false

local function drop_buckets(from, to)
  for s = from, to do
    redis.call('HDEL', KEYS[1], 'n:' .. s, 'f:' .. s, 'w:' .. s)
  end
end

-- forget the buckets that left the window (those of seconds <= now - win)
local function trim()
  if o == nil or o > now_s - win then
    return
  end
  local last = math.min(now_s - win, o + win - 1)
  for s = o, last do
    local b = redis.call('HMGET', KEYS[1], 'n:' .. s, 'f:' .. s, 'w:' .. s)
    n = n - (tonumber(b[1]) or 0)
    fl = fl - (tonumber(b[2]) or 0)
    sl = sl - (tonumber(b[3]) or 0)
  end
  drop_buckets(o, last)
  if last == o + win - 1 or n <= 0 then
    n, fl, sl, o = 0, 0, 0, nil
  else
    o = last + 1
  end
  dirty = true
end

local function clear_window()
  if o ~= nil then
    drop_buckets(o, o + win - 1)
  end
  n, fl, sl, o = 0, 0, 0, nil
end

local function to_open()
  st, untl, ht, hs = 'open', now_ms + open_ms, 0, 0
  clear_window()
  dirty = true
end

local function to_closed()
  st, untl, ht, hs = 'closed', 0, 0, 0
  clear_window()
  dirty = true
end

-- open becomes half-open once open_for has passed
if st == 'open' and now_ms >= untl then
  st, untl, ht, hs = 'half_open', now_ms + open_ms, 0, 0
  dirty = true
end

local allowed = 0
if op == 'allow' then
  if st == 'closed' then
    allowed = 1
  elseif st == 'half_open' then
    if ht >= half and now_ms >= untl then
      -- trials taken but never recorded within open_for: free their slots
      ht = hs
    end
    if ht < half then
      ht, untl, allowed, dirty = ht + 1, now_ms + open_ms, 1, true
    end
  end
elseif op == 'record' then
  if st == 'closed' or st == 'half_open' then
    local failed = ARGV[8] ~= '1'
    local d = tonumber(ARGV[9]) or -1
    local slow = slow_us >= 0 and d > slow_us
    trim()
    local s = now_s
    redis.call('HINCRBY', KEYS[1], 'n:' .. s, 1)
    n = n + 1
    if failed then
      redis.call('HINCRBY', KEYS[1], 'f:' .. s, 1)
      fl = fl + 1
    end
    if slow then
      redis.call('HINCRBY', KEYS[1], 'w:' .. s, 1)
      sl = sl + 1
    end
    if o == nil then
      o = s
    end
    dirty = true
    if st == 'half_open' then
      if failed or slow then
        to_open()
      else
        hs = hs + 1
        if hs >= half then
          to_closed()
        end
      end
    elseif n >= minc and (fl * 100 >= thr * n or sl * 100 >= thr * n) then
      to_open()
    end
  end
  -- open or forced_open: a call admitted before the breaker opened; ignored
elseif op == 'trip' then
  st, untl, ht, hs = 'forced_open', 0, 0, 0
  clear_window()
  dirty = true
elseif op == 'state' then
  if st == 'closed' or st == 'half_open' then
    trim()
  end
else
  return redis.error_reply('DKBADOP unknown breaker operation')
end

if dirty then
  local set, del = {}, {}
  local function put(k, v, absent)
    if v == absent then
      del[#del + 1] = k
    else
      set[#set + 1] = k
      set[#set + 1] = string.format('%.0f', v)
    end
  end
  if st == 'closed' then
    del[#del + 1] = 'st'
  else
    set[#set + 1] = 'st'
    set[#set + 1] = st
  end
  put('untl', untl, 0)
  put('ht', ht, 0)
  put('hs', hs, 0)
  put('n', n, 0)
  put('f', fl, 0)
  put('w', sl, 0)
  put('o', o, nil)
  if #del > 0 then
    redis.call('HDEL', KEYS[1], unpack(del))
  end
  if #set > 0 then
    redis.call('HSET', KEYS[1], unpack(set))
  end
  if st == 'closed' then
    redis.call('PEXPIRE', KEYS[1], (win + 1) * 1000)
  else
    redis.call('PERSIST', KEYS[1])
  end
end

local retry = -1
if st == 'open' then
  retry = untl - now_ms
elseif st == 'half_open' and ht >= half then
  retry = math.max(untl - now_ms, 0)
end
return {allowed, st, n, fl, sl, retry}
