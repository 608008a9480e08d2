-- Parks a pending entry of a group until its delayed retry is due, in one
-- step. The entry stays pending in the group, so no other group of the
-- stream sees it again, the trim point holds it and `stat` counts it; it
-- moves to the group's reserved consumer `sk-retry` (no consumer re-reads
-- it on start, and the reclaim script leaves it alone) and enters the
-- group's retry set. `lua/retry_take.lua` hands it out again when due,
-- under its own ID.
--
-- KEYS[1]  the stream S
-- KEYS[2]  the group's retry set {S}:retry:<group> (zset of IDs, score = due ms)
-- KEYS[3]  the attempt marks {S}:attempts
-- KEYS[4]  the group's last errors {S}:retry-why:<group> (hash: ID -> error)
-- ARGV[1]  consumer group
-- ARGV[2]  entry ID
-- ARGV[3]  due time, in ms
-- ARGV[4]  failed attempts so far, this one included
-- ARGV[5]  the reserved consumer that holds parked entries (sk-retry)
-- ARGV[6]  why the attempt failed ('' when the handler did not say)
--
-- The entry's attempt mark becomes ARGV[4]: the next run's mark counts on
-- from it (`lua/attempt_start.lua`), so failed runs and runs cut off by a
-- crash add up to the attempts `max_deliveries` limits.
-- Returns 1 when parked, 0 when the entry is no longer pending, -1 when it
-- was pending but deleted from the stream (it is acked: nothing to retry).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then
  return 0
end
local mark = ARGV[1] .. '\0' .. ARGV[2]
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then
  redis.call('HDEL', KEYS[3], mark)
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return -1
end
redis.call('HSET', KEYS[3], mark, ARGV[4])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[6])
else
  redis.call('HDEL', KEYS[4], ARGV[2])
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[5], 0, ARGV[2], 'JUSTID')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
