-- Acknowledges entries and keeps the attempt marks of the group in step,
-- in one script, so a mark never outlives its entry and a mark is never
-- written for an entry that was settled a moment before.
--
-- KEYS[1]  the stream S
-- KEYS[2]  the attempt marks {S}:attempts (hash: group NUL id -> handler
--          runs started and not settled)
-- ARGV[1]  consumer group
-- ARGV[2]  number of IDs to acknowledge (a)
-- ARGV[3]  number of those whose mark is to be removed (c)
-- ARGV[4 .. 3+a]          IDs to XACK
-- ARGV[4+a .. 3+a+c]      IDs whose marks are removed
-- ARGV[4+a+c ..]          IDs of new entries whose first handler run is
--                         still going: their mark is set to 1 (idempotent,
--                         so a resend after a lost reply counts nothing
--                         twice), but only while the entry is still
--                         pending (a retry or dead-letter script may have
--                         settled it a moment before)
--
-- Returns the number of entries XACK removed from the pending list.
local a = tonumber(ARGV[2])
local c = tonumber(ARGV[3])
local group = ARGV[1]
local acked = 0
local i = 4
while i < 4 + a do
  local last = math.min(i + 499, 3 + a)
  acked = acked + redis.call('XACK', KEYS[1], group, unpack(ARGV, i, last))
  i = last + 1
end
for j = 4 + a, 3 + a + c do
  redis.call('HDEL', KEYS[2], group .. '\0' .. ARGV[j])
end
for j = 4 + a + c, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], group, ARGV[j], ARGV[j], 1)
  if #p == 1 then
    redis.call('HSET', KEYS[2], group .. '\0' .. ARGV[j], 1)
  end
end
return acked
