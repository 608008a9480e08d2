-- Hands out a group's parked retries that are due, to one consumer: each
-- leaves the retry set and becomes that consumer's pending entry in the
-- same step, so two consumers never take the same one, and a consumer
-- that crashes after taking it leaves it pending for the reclaim.
--
-- KEYS[1]  the stream S
-- KEYS[2]  the group's retry set {S}:retry:<group>
-- KEYS[3]  the attempt marks {S}:attempts
-- ARGV[1]  consumer group
-- ARGV[2]  the consumer taking them
-- ARGV[3]  now, in ms
-- ARGV[4]  most entries to take
--
-- Returns the entries taken, as XCLAIM replies them ({id, {field, value,
-- ...}} each, in due order). An ID no longer pending (acked by hand, group
-- destroyed) or deleted from the stream leaves the set and its mark goes.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
if #due == 0 then
  return {}
end
redis.call('ZREM', KEYS[2], unpack(due))
local taken = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(due))
local got = {}
for _, e in ipairs(taken) do
  got[e[1]] = true
end
for _, id in ipairs(due) do
  if not got[id] then
    redis.call('HDEL', KEYS[3], ARGV[1] .. '\0' .. id)
  end
end
return taken
