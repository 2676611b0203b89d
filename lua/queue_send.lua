-- queue_send: append one message to a queue's stream.
-- KEYS[1] the stream; ARGV[1] maximum length (MAXLEN ~, 0: unbounded),
-- ARGV[2] the payload (JSON text), ARGV[3] the origin (server:database).
-- Returns the new entry's id.
local maxlen = tonumber(ARGV[1])
if maxlen > 0 then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
                    'payload', ARGV[2], 'origin', ARGV[3])
end
return redis.call('XADD', KEYS[1], '*', 'payload', ARGV[2], 'origin', ARGV[3])
