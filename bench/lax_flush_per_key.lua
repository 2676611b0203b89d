-- The per-key flush script of distkit before issue 15 (one EVALSHA and one
-- "<prefix>:cf:{key}" hash record per counter), kept only for
-- bench/lax-flush.sh to compare against lua/lax_flush.lua in the same run.
-- lax_flush: apply one key's share of a lax flush batch, exactly once.
-- KEYS[1] counter key; KEYS[2] the counter's flush record (a hash: instance
-- id -> last batch sequence applied to this key), same hash slot.
-- ARGV[1] instance id; ARGV[2] batch sequence; ARGV[3] delta;
-- ARGV[4] flush record lifetime in milliseconds.
-- Returns {total, 1} when applied, {total, 0} when this batch was already
-- applied (a retry after a lost reply).  The total is a string (exact).
local last = redis.call('HGET', KEYS[2], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then
  return {redis.call('GET', KEYS[1]) or '0', 0}
end
redis.call('INCRBY', KEYS[1], ARGV[3])
-- The increment must never stay without its record, or a retry would apply
-- it again: if Redis refuses the record (ACL, a key of another type), undo
-- the increment and fail.
local rec = redis.pcall('HSET', KEYS[2], ARGV[1], ARGV[2])
if type(rec) == 'table' and rec.err then
  if ARGV[3] == '-9223372036854775808' then
    redis.call('INCRBY', KEYS[1], '9223372036854775807')
    redis.call('INCRBY', KEYS[1], '1')
  elseif string.sub(ARGV[3], 1, 1) == '-' then
    redis.call('INCRBY', KEYS[1], string.sub(ARGV[3], 2))
  else
    redis.call('INCRBY', KEYS[1], '-' .. ARGV[3])
  end
  return rec
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {redis.call('GET', KEYS[1]), 1}
