-- queue_read: take up to count messages for a consumer of a group.
-- KEYS[1] the stream, KEYS[2] its dead-letter stream.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count, ARGV[4] visibility (ms),
-- ARGV[5] maximum deliveries.
-- The group is created on first use (reading the stream from its start).
-- First, messages other consumers took more than visibility ago without
-- acknowledging them are claimed (XCLAIM with that minimum idle time, so
-- two readers never claim one message); a message already delivered the
-- maximum number of times goes to the dead-letter stream instead (with
-- its fields plus queue_id, group and deliveries) and is acknowledged.
-- Then new messages (XREADGROUP >).
-- Returns a flat array: id, payload, deliveries, id, payload, ...
local grp, consumer = ARGV[1], ARGV[2]
local count, vis, maxd = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], grp, '0', 'MKSTREAM')
if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP', 1, true) then
  return created
end
local function payload_of(fields)
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'payload' then return fields[i + 1] end
  end
  return 'null'
end
local out, n = {}, 0
local stale = redis.call('XPENDING', KEYS[1], grp, 'IDLE', vis, '-', '+', count)
for _, p in ipairs(stale) do
  local id, deliveries = p[1], tonumber(p[4])
  if deliveries >= maxd then
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if e[1] then
      local args = {'XADD', KEYS[2], '*'}
      for _, f in ipairs(e[1][2]) do args[#args + 1] = f end
      for _, f in ipairs({'queue_id', id, 'group', grp, 'deliveries', tostring(deliveries)}) do
        args[#args + 1] = f
      end
      redis.call(unpack(args))
    end
    redis.call('XACK', KEYS[1], grp, id)
  else
    local c = redis.call('XCLAIM', KEYS[1], grp, consumer, vis, id)
    if c[1] and c[1][2] then
      out[#out + 1] = c[1][1]
      out[#out + 1] = payload_of(c[1][2])
      out[#out + 1] = deliveries + 1
      n = n + 1
    elseif c[1] then
      redis.call('XACK', KEYS[1], grp, id)	-- trimmed away meanwhile
    end
  end
end
if n < count then
  local r = redis.call('XREADGROUP', 'GROUP', grp, consumer, 'COUNT', count - n,
                       'STREAMS', KEYS[1], '>')
  if r and r[1] then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = e[1]
      out[#out + 1] = payload_of(e[2])
      out[#out + 1] = 1
    end
  end
end
return out
