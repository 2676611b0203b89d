-- lib/flushrec: the exactly-once record of a lax flush part, shared by
-- lua/lax_flush.lua (simple counters) and lua/instance_flush.lua
-- (instance-aware slices) through "-- @include lib/flushrec.lua".
-- Both scripts take KEYS[1] the record of (instance, group) and ARGV[1]
-- batch sequence, ARGV[2] part of the group in this batch (0, 1, ... when
-- the group takes several script calls), ARGV[3] record lifetime (ms).
-- The record is a string "<seq>:<part>[:<refused>]": the last part of a
-- batch applied, and the keys of that batch Redis refused, as
-- "<part>.<index>,...".  Included at the top of a script: it reads the
-- record first, so that a record of another type or one the user may not
-- read refuses the whole call before anything changes.

local fr_seq = tonumber(ARGV[1])
local fr_part = tonumber(ARGV[2])
local fr_rec = redis.call('GET', KEYS[1])
local fr_rseq, fr_rpart, fr_rbad = -1, -1, ''
if fr_rec then
  local s, p, b = string.match(fr_rec, '^(%d+):(%d+):?(.*)$')
  if s then fr_rseq, fr_rpart, fr_rbad = tonumber(s), tonumber(p), b end
end
-- the refusals noted so far for this batch
local fr_bad = (fr_rseq == fr_seq) and fr_rbad or ''

-- Was this part applied already (a resend after a lost reply)?
local function fr_applied()
  return fr_rseq > fr_seq or (fr_rseq == fr_seq and fr_rpart >= fr_part)
end

-- In an applied part: was key index i (1-based, KEYS[i + 1]) refused?
local function fr_was_refused(i)
  if fr_rseq ~= fr_seq then return false end
  local want = ARGV[2] .. '.' .. i
  for pi in string.gmatch(fr_rbad, '[^,]+') do
    if pi == want then return true end
  end
  return false
end

-- The answer for a refused key of an applied part.
local FR_REFUSED = 'DKREFUSED Redis refused this delta when the batch was first applied (its reply was lost)'

-- DKGAP if an earlier part of this batch is not in Redis (nothing changes;
-- the caller resends the whole group in order), else nil.
local function fr_gap()
  if fr_part > 0 and not (fr_rseq == fr_seq and fr_rpart == fr_part - 1) then
    return redis.error_reply('DKGAP part ' .. ARGV[2] .. ' of batch ' .. ARGV[1] .. ' before the earlier parts')
  end
  return nil
end

-- Write the record (before any increment: if Redis refuses it, nothing is
-- applied and the call is an error; again after refusals, so that a resend
-- reports them).
local function fr_write()
  local v = ARGV[1] .. ':' .. ARGV[2]
  if fr_bad ~= '' then v = v .. ':' .. fr_bad end
  redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
end

-- Note that key index i of this part was refused.
local function fr_refuse(i)
  if fr_bad ~= '' then fr_bad = fr_bad .. ',' end
  fr_bad = fr_bad .. ARGV[2] .. '.' .. i
end

-- Put the record back as it was (a call undone; "none" reads as no record).
local function fr_restore()
  redis.call('SET', KEYS[1], fr_rec or 'none', 'KEEPTTL')
end

-- Is the error reply v an ACL refusal (not the key's fault; may be lifted)?
local function fr_acl(v)
  return type(v) == 'table' and v.err ~= nil and
    (string.find(v.err, 'NOPERM', 1, true) ~= nil or string.find(v.err, 'user executing the script', 1, true) ~= nil)
end
