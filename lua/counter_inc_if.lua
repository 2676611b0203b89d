-- counter_inc_if: add a delta only if "current <op> operand" holds.
-- KEYS[1] counter key; ARGV[1] delta; ARGV[2] op (= <> < <= > >=);
-- ARGV[3] operand (decimal bigint).
-- Returns {value, 1 if applied else 0}, value as a string.
-- The comparison is exact on decimal strings: Lua numbers are doubles and
-- would round 64-bit values.
local function canonical(s)
  return (s == '0' or string.match(s, '^%-?[1-9]%d*$') ~= nil) and #s <= 20
end

-- sign of a - b for canonical decimal integers
local function compare(a, b)
  local aneg, bneg = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if aneg ~= bneg then
    return aneg and -1 or 1
  end
  local r
  if #a ~= #b then
    r = (#a < #b) and -1 or 1
  elseif a == b then
    r = 0
  else
    r = (a < b) and -1 or 1
  end
  if aneg then
    r = -r
  end
  return r
end

local current = redis.call('GET', KEYS[1])
if current == false then
  current = '0'
end
if not canonical(current) then
  return redis.error_reply('DKNOTINT the key does not hold an integer')
end

local c = compare(current, ARGV[3])
local op = ARGV[2]
local holds
if op == '=' then holds = c == 0
elseif op == '<>' then holds = c ~= 0
elseif op == '<' then holds = c < 0
elseif op == '<=' then holds = c <= 0
elseif op == '>' then holds = c > 0
elseif op == '>=' then holds = c >= 0
else
  return redis.error_reply('DKBADOP unknown operator')
end

if not holds then
  return {current, 0}
end
redis.call('INCRBY', KEYS[1], ARGV[1])
return {redis.call('GET', KEYS[1]), 1}
