-- instance_flush: apply one group's share of a lax flush batch to
-- instance-aware counters (this instance's slices), exactly once.
-- KEYS[1] the group's exactly-once record for this instance (lib/flushrec,
-- the same record lua/lax_flush.lua keeps: a group's parts of either kind
-- are numbered in one sequence); KEYS[2..] the counters (hashes, as in
-- lua/instance.lua), all in the record's hash slot.
-- ARGV[1] batch sequence, ARGV[2] part, ARGV[3] record lifetime (ms);
-- ARGV[4] this instance's number, ARGV[5] its serial, ARGV[6] the live-set
-- version it knows, ARGV[7] "1" if it is live there; ARGV[8] the live set
-- (as in lua/instance.lua) or "" when not sent; ARGV[9..] one delta per
-- counter.
-- First every counter is read: an answer that the caller must act on is
-- the whole call's and changes nothing but cached sums: DKREAPED (register
-- again), DKNEWER (refresh the live set), DKSTALE (resend with the live
-- set), DKGAP (lib/flushrec), an ACL refusal; a counter that cannot be
-- read (a key of another type) is refused alone.  Then, unless the part was applied already
-- (a resend after a lost reply: nothing changes), the record is written
-- and each slice is added to.
-- Returns {applied, r1, r2, ...}: ri is counter i's {total, slice} or the
-- error that refused its delta (DKOVERFLOW: nothing changed for it; on a
-- resend DKREFUSED).  An ACL refusal of a write undoes the call and is its
-- error (the batch stays in flight until the permission is given back).
-- Redis work per counter is O(1) whatever the fleet size, except the
-- recompute of a counter's cached sum once per live-set change.

-- @include lib/flushrec.lua
-- @include lib/instance.lua

local me, serial = ARGV[4], ARGV[5]
local known, melive = tonumber(ARGV[6]), ARGV[7] == '1'
local cells = nil
if ARGV[8] ~= '' then cells = ARGV[8] end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local applied = fr_applied()
if not applied then
  local gap = fr_gap()
  if gap then return gap end
end
-- one counter's state, or an error reply (raised ones caught: a key of
-- another type, fields that are no numbers)
local function state_of(key)
  local st, err = read_state(key, me, serial)
  if st == nil then return err end
  err = sync_state(key, st, me, known, cells, now)
  return err or st
end
local states = {}
for i = 2, #KEYS do
  local ok, st = pcall(state_of, KEYS[i])
  if not ok then
    if type(st) == 'table' and st.err then st = st.err end
    st = redis.error_reply(tostring(st))
  end
  if st.err then
    -- DKREAPED, DKNEWER, DKSTALE and an ACL refusal are the whole call's
    -- (nothing changed but cached sums); the rest refuse this counter only
    local e = st.err
    if fr_acl(st) or string.sub(e, 1, 8) == 'DKREAPED' or string.sub(e, 1, 7) == 'DKNEWER' or
       string.sub(e, 1, 7) == 'DKSTALE' then
      return st
    end
  end
  states[i] = st
end

local out = {}
if applied then
  out[1] = 0
  for i = 2, #KEYS do
    local st = states[i]
    if fr_was_refused(i - 1) then
      out[i] = redis.error_reply(FR_REFUSED)
    elseif st.err then
      out[i] = st
    else
      local total = total_of(st.S, st.mine, melive)
      if total == nil then
        out[i] = redis.error_reply('DKOVERFLOW the total is outside bigint')
      else
        out[i] = {total, st.mine}
      end
    end
  end
  return out
end

fr_write()
out[1] = 1
local refused = false
local written = {}                    -- the counters written, in order
for i = 2, #KEYS do
  local st = states[i]
  local newmine, newS, newtotal
  if not st.err then newmine, newS, newtotal = slice_after(st, ARGV[i + 7], melive) end
  if st.err or newmine == nil then
    out[i] = st.err and st or redis.error_reply('DKOVERFLOW the result is outside bigint')
    fr_refuse(i - 1)
    refused = true
  else
    local v = redis.pcall('HSET', KEYS[i], unpack(slice_changes(st, me, serial, newmine, newS, known, now)))
    if fr_acl(v) then
      -- not the counter's fault: undo this call (the slices written, the
      -- record) and fail it, so the batch stays in flight and is resent
      local names = slice_names(me)
      for _, j in ipairs(written) do
        for k, f in ipairs(names) do
          local was = states[j].was[k]
          if was then redis.call('HSET', KEYS[j], f, was) else redis.call('HDEL', KEYS[j], f) end
        end
      end
      fr_restore()
      return v
    end
    written[#written + 1] = i
    out[i] = {newtotal, newmine}
  end
end
-- a resend after a lost reply must report the refusals again
if refused then fr_write() end
return out
