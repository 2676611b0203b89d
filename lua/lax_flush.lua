-- lax_flush: apply one group's share of a lax flush batch, exactly once.
-- KEYS[1] the group's exactly-once record for this instance (a string
-- "<seq>:<part>[:<refused>]": the last part of a batch applied, and the
-- keys of that batch Redis refused, as "<part>.<index>,..."); KEYS[2..] the
-- group's counter keys, all in the record's hash slot.
-- ARGV[1] batch sequence; ARGV[2] part of the group in this batch (0, 1, ...
-- when the group is larger than one script call takes); ARGV[3] record
-- lifetime in milliseconds; ARGV[4..] one delta per counter key.
-- Returns {applied, r1, r2, ...}: applied 1, or 0 when this part was
-- already applied (a resend after a lost reply: nothing changes); ri is
-- counter i's total (integer, or a string beyond 2^53, exact) or the error
-- that refused its delta (wrong type, overflow: INCRBY changes nothing then;
-- on a resend DKREFUSED, read from the record).
-- An ACL refusal of an INCRBY undoes the call and is its error (the batch
-- stays in flight until the permission is given back).
-- Error DKGAP: an earlier part of this batch is not in Redis (nothing changes;
-- the caller resends the whole group in order).
local seq = tonumber(ARGV[1])
local part = tonumber(ARGV[2])
local out = {}
-- read first: a record of another type or one we may not read refuses the
-- whole call before anything changes
local rec = redis.call('GET', KEYS[1])
local rseq, rpart, rbad = -1, -1, ''
if rec then
  local s, p, b = string.match(rec, '^(%d+):(%d+):?(.*)$')
  if s then rseq, rpart, rbad = tonumber(s), tonumber(p), b end
end
if rseq > seq or (rseq == seq and rpart >= part) then
  local refused = {}
  if rseq == seq then
    for pi in string.gmatch(rbad, '[^,]+') do refused[pi] = true end
  end
  out[1] = 0
  for i = 2, #KEYS do
    local v
    if refused[ARGV[2] .. '.' .. (i - 1)] then
      v = redis.error_reply('DKREFUSED Redis refused this delta when the batch was first applied (its reply was lost)')
    else
      v = redis.pcall('GET', KEYS[i])
      if v == false then v = '0' end
    end
    out[i] = v
  end
  return out
end
if part > 0 and not (rseq == seq and rpart == part - 1) then
  return redis.error_reply('DKGAP part ' .. ARGV[2] .. ' of batch ' .. ARGV[1] .. ' before the earlier parts')
end
-- the record before any increment: if Redis refuses it (ACL, wrong type),
-- nothing is applied and the call is an error
local bad = ''
if rseq == seq then bad = rbad end
local function record()
  local v = ARGV[1] .. ':' .. ARGV[2]
  if bad ~= '' then v = v .. ':' .. bad end
  redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
end
record()
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
  if type(v) == 'table' and v.err and
     (string.find(v.err, 'NOPERM', 1, true) or string.find(v.err, 'user executing the script', 1, true)) then
    -- an ACL refusal is not the key's fault and may be lifted: undo this
    -- call (the increments before it, the record) and fail the whole call,
    -- so the batch stays in flight and is resent
    for n = #applied, 1, -1 do undo(KEYS[applied[n]], ARGV[applied[n] + 2]) end
    -- (SET only, which just worked: "none" reads as no record)
    redis.call('SET', KEYS[1], rec or 'none', 'KEEPTTL')
    return v
  end
  if type(v) == 'table' and v.err then
    if bad ~= '' then bad = bad .. ',' end
    bad = bad .. ARGV[2] .. '.' .. (i - 1)
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
if refused then record() end
return out
