-- queue_pending: messages delivered to a group's consumers and not yet
-- acknowledged, per consumer.
-- KEYS[1] the stream; ARGV[1] group.
-- Returns a flat array: consumer, pending count, idle ms of its oldest
-- pending message, ...; empty when the group does not exist.
local s = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if s.err then
  if string.find(s.err, 'NOGROUP', 1, true) then return {} end
  return s
end
local out = {}
if s[4] then
  for _, c in ipairs(s[4]) do
    local first = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, c[1])
    out[#out + 1] = c[1]
    out[#out + 1] = tonumber(c[2])
    out[#out + 1] = first[1] and tonumber(first[1][3]) or 0
  end
end
return out
