-- Re-appends retries that are due to their stream, atomically: each one is
-- either still in the retry set or already back in the stream, never both
-- and never neither, whoever runs this and whenever a client dies.
--
-- KEYS[1]  the stream S
-- KEYS[2]  the retry set {S}:retry
-- ARGV[1]  now, in ms
-- ARGV[2]  most entries to move
--
-- The new entry carries the original fields plus sk-origin-id (the ID it
-- first had), sk-retry-group (only that group processes it; other groups
-- skip it) and sk-attempt (failed attempts before this one).
-- Returns the number of entries moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local m = cmsgpack.unpack(member)
  local args = {KEYS[1], '*'}
  for _, v in ipairs(m[4]) do
    args[#args + 1] = v
  end
  args[#args + 1] = 'sk-origin-id'
  args[#args + 1] = m[2]
  args[#args + 1] = 'sk-retry-group'
  args[#args + 1] = m[1]
  args[#args + 1] = 'sk-attempt'
  args[#args + 1] = tostring(m[3])
  redis.call('XADD', unpack(args))
  redis.call('ZREM', KEYS[2], member)
end
return #due
