-- queue_ship: append outbox rows to a queue's stream, each exactly once.
-- KEYS[1] the stream, KEYS[2] the queue's shipped-ids record (sorted set of
--   '<origin>:<outbox id>' scored by the time they were added, ms).
-- ARGV[1] origin (server:database), ARGV[2] MAXLEN ~ (0: unbounded),
-- ARGV[3] how long a record is kept (ms), ARGV[4] n, then n outbox ids the
-- shipper has deleted from its table (never sent again: their records are
-- forgotten), then pairs (outbox id, payload).
-- A row whose record exists was added by an earlier attempt whose reply
-- was lost: it is not added again.  The record and the entry are written
-- by this one script, so both or neither exist.
-- Returns {added, already present}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local origin = ARGV[1]
local maxlen = tonumber(ARGV[2])
local nforget = tonumber(ARGV[4])
for i = 5, 4 + nforget do
  redis.call('ZREM', KEYS[2], origin .. ':' .. ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
local added, dup = 0, 0
for i = 5 + nforget, #ARGV - 1, 2 do
  if redis.call('ZADD', KEYS[2], 'NX', now, origin .. ':' .. ARGV[i]) == 1 then
    if maxlen > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'payload', ARGV[i + 1],
                 'origin', origin, 'outbox_id', ARGV[i])
    else
      redis.call('XADD', KEYS[1], '*', 'payload', ARGV[i + 1], 'origin', origin,
                 'outbox_id', ARGV[i])
    end
    added = added + 1
  else
    dup = dup + 1
  end
end
return {added, dup}
