-- Hands every pending entry of one consumer to another, then deletes the
-- first consumer — in one script, so no pending entry is ever dropped.
--
-- KEYS[1]  the stream
-- ARGV[1]  group
-- ARGV[2]  consumer to remove
-- ARGV[3]  consumer that takes its pending entries
--
-- Returns the number of entries handed over.
local moved = 0
local start = '-'
while true do
  local rows = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', 1000, ARGV[2])
  if #rows == 0 then break end
  local args = {KEYS[1], ARGV[1], ARGV[3], 0}
  for _, row in ipairs(rows) do args[#args + 1] = row[1] end
  -- JUSTID: the delivery count stays as it is (this is not a delivery).
  args[#args + 1] = 'JUSTID'
  redis.call('XCLAIM', unpack(args))
  moved = moved + #rows
  start = '(' .. rows[#rows][1]
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return moved
