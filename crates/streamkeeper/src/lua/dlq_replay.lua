-- Moves one dead letter back to its stream, atomically (XADD + XDEL).
--
-- KEYS[1]  the dead-letter stream {S}:dlq
-- KEYS[2]  the stream S
-- ARGV[1]  the dead letter's ID
--
-- The dead-letter metadata is dropped; sk-origin-id is kept and
-- sk-retry-group names the group that gave up, so only that group
-- processes it again (other groups of S skip it). Its delivery count
-- starts afresh.
-- Returns the new ID in S, or false when there is no such dead letter.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local f = found[1][2]
local args = {KEYS[2], '*'}
local group = nil
local origin = nil
for i = 1, #f, 2 do
  local k = f[i]
  if k == 'sk-group' then
    group = f[i + 1]
  elseif k == 'sk-origin-id' then
    origin = f[i + 1]
  elseif k ~= 'sk-origin' and k ~= 'sk-deliveries' and k ~= 'sk-reason' and k ~= 'sk-dead-at'
      and k ~= 'sk-retry-group' and k ~= 'sk-attempt' then
    args[#args + 1] = k
    args[#args + 1] = f[i + 1]
  end
end
if origin then
  args[#args + 1] = 'sk-origin-id'
  args[#args + 1] = origin
end
if group then
  args[#args + 1] = 'sk-retry-group'
  args[#args + 1] = group
end
local id = redis.call('XADD', unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
