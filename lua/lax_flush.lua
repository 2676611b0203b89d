-- lax_flush: apply one group's share of a lax flush batch, exactly once.
-- KEYS[1] the group's exactly-once record for this instance (lib/flushrec);
-- KEYS[2..] the group's counter keys, all in the record's hash slot.
-- ARGV[1] batch sequence; ARGV[2] part; ARGV[3] record lifetime in
-- milliseconds (lib/flushrec); ARGV[4..] one delta per counter key.
-- Returns {applied, r1, r2, ...}: applied 1, or 0 when this part was
-- already applied (a resend after a lost reply: nothing changes); ri is
-- counter i's total (integer, or a string beyond 2^53, exact) or the error
-- that refused its delta (wrong type, overflow: INCRBY changes nothing then;
-- on a resend DKREFUSED, read from the record).
-- An ACL refusal of an INCRBY undoes the call and is its error (the batch
-- stays in flight until the permission is given back).
-- Error DKGAP: an earlier part of this batch is not in Redis (nothing changes;
-- the caller resends the whole group in order).

-- @include lib/flushrec.lua

local out = {}
if fr_applied() then
  out[1] = 0
  for i = 2, #KEYS do
    local v
    if fr_was_refused(i - 1) then
      v = redis.error_reply(FR_REFUSED)
    else
      v = redis.pcall('GET', KEYS[i])
      if v == false then v = '0' end
    end
    out[i] = v
  end
  return out
end
local gap = fr_gap()
if gap then return gap end
fr_write()
-- subtract a delta again (an exact string; -2^63 has no positive twin)
local function undo(key, delta)
  if delta == '-9223372036854775808' then
    redis.call('INCRBY', key, '9223372036854775807')
    redis.call('INCRBY', key, '1')
  elseif string.sub(delta, 1, 1) == '-' then
    redis.call('INCRBY', key, string.sub(delta, 2))
  elseif delta ~= '0' then
    redis.call('INCRBY', key, '-' .. delta)
  end
end
out[1] = 1
local refused = false
local applied = {}
for i = 2, #KEYS do
  local v = redis.pcall('INCRBY', KEYS[i], ARGV[i + 2])
  if fr_acl(v) then
    -- an ACL refusal is not the key's fault and may be lifted: undo this
    -- call (the increments before it, the record) and fail the whole call,
    -- so the batch stays in flight and is resent
    for n = #applied, 1, -1 do undo(KEYS[applied[n]], ARGV[applied[n] + 2]) end
    fr_restore()
    return v
  end
  if type(v) == 'table' and v.err then
    fr_refuse(i - 1)
    refused = true
  else
    applied[#applied + 1] = i
    if v >= 9007199254740992 or v <= -9007199254740992 then
      v = redis.call('GET', KEYS[i])	-- a Lua number rounds beyond 2^53
    end
  end
  out[i] = v
end
-- a resend after a lost reply must report the refusals again
if refused then fr_write() end
return out
